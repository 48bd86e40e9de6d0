//! `cargo fuzz run normalize`: the checks live in `modbot::tools::fuzzing::normalize` (also run by `cargo test`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| modbot::tools::fuzzing::normalize(data));
