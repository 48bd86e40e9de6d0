//! `cargo fuzz run rule_match`: the checks live in `modbot::tools::fuzzing::rule_match` (also run by `cargo test`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| modbot::tools::fuzzing::rule_match(data));
