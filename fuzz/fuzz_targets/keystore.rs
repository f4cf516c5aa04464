#![no_main]
//! Fuzz target `keystore`: see `kmsfs::fuzzing::keystore`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| kmsfs::fuzzing::run("keystore", data));
