#![no_main]
//! Fuzz target `tape_headers`: see `kmsfs::fuzzing::tape_headers`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| kmsfs::fuzzing::run("tape_headers", data));
