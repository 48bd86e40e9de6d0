//! `cargo fuzz run stream_events`: the checks live in `modbot::tools::fuzzing::stream_events` (also run by `cargo test`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| modbot::tools::fuzzing::stream_events(data));
