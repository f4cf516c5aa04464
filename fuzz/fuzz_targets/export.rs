#![no_main]
//! Fuzz target `export`: see `kmsfs::fuzzing::export`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| kmsfs::fuzzing::run("export", data));
