#![no_main]
//! Fuzz target `tar_list`: see `kmsfs::fuzzing::tar_list`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| kmsfs::fuzzing::run("tar_list", data));
