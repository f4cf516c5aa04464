#![no_main]
//! Fuzz target `container`: see `kmsfs::fuzzing::container`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| kmsfs::fuzzing::run("container", data));
