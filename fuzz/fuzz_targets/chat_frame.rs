//! `cargo fuzz run chat_frame`: the checks live in `modbot::fuzzing::chat_frame` (also run by `cargo test`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| modbot::fuzzing::chat_frame(data));
