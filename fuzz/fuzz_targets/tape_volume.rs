#![no_main]
//! Fuzz target `tape_volume`: see `kmsfs::fuzzing::tape_volume`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| kmsfs::fuzzing::run("tape_volume", data));
