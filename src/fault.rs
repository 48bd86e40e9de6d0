//! Faults a test build can inject, to prove that a panic while deciding one message is
//! contained (see [`crate::guard`]).
//!
//! Only with the cargo feature `fault-injection`, which is off by default and enabled only
//! for the crate's own tests (through its self dev-dependency in `Cargo.toml`): a release
//! build (`cargo build --release`, the Dockerfile) compiles both functions to nothing.

/// A phrase rule with this literal phrase panics when it matches.
pub const PANIC_PHRASE: &str = "modbot fault injection rule panic";

/// A message whose text contains this panics in the per-message pipeline, outside any rule
/// (where normalisation runs).
pub const PANIC_TEXT: &str = "modbot-fault-injection-pipeline-panic";

/// Whether this build injects faults.
pub const ENABLED: bool = cfg!(feature = "fault-injection");

/// Panics if faults are injected and a phrase rule matched [`PANIC_PHRASE`].
#[inline]
pub fn phrase_matched(phrase: &str) {
    if ENABLED && phrase == PANIC_PHRASE {
        panic!("fault injection: a phrase rule panics");
    }
}

/// Panics if faults are injected and `text` contains [`PANIC_TEXT`].
#[inline]
pub fn deciding(text: &str) {
    if ENABLED && text.contains(PANIC_TEXT) {
        panic!("fault injection: the pipeline panics");
    }
}
