//! `cargo fuzz run stream_events`: the checks live in `modbot::fuzzing::stream_events` (also run by `cargo test`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| modbot::fuzzing::stream_events(data));
