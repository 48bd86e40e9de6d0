//! `cargo fuzz run rules`: the checks live in `modbot::tools::fuzzing::rules` (also run by `cargo test`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| modbot::tools::fuzzing::rules(data));
