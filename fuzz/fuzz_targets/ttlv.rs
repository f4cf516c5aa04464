#![no_main]
//! Fuzz target `ttlv`: see `kmsfs::fuzzing::ttlv`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| kmsfs::fuzzing::run("ttlv", data));
