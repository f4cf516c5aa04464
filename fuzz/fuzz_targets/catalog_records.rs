#![no_main]
//! Fuzz target `catalog_records`: see `kmsfs::fuzzing::catalog_records`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| kmsfs::fuzzing::run("catalog_records", data));
