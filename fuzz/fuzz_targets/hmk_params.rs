#![no_main]
//! Fuzz target `hmk_params`: see `kmsfs::fuzzing::hmk_params`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| kmsfs::fuzzing::run("hmk_params", data));
