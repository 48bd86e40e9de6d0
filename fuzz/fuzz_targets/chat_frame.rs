//! `cargo fuzz run chat_frame`: the checks live in `modbot::tools::fuzzing::chat_frame` (also run by `cargo test`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| modbot::tools::fuzzing::chat_frame(data));
