//! Panic isolation for deciding messages: a bug that one message (or one admin's rule) trips
//! must cost that message a degraded verdict, never the stream or the call it came in.
//!
//! [`catch`] runs a closure under `catch_unwind`. While any `catch` runs on a thread, the
//! process's panic hook does not print the panic: its payload may quote the message (a slice
//! out of bounds prints the text it cut), and chat text stays out of logs unless
//! `log.message_text` says otherwise. The hook keeps only the file and line, which the caller
//! logs once with the message's ids. Panics anywhere else go to the hook that was installed
//! before, unchanged.
//!
//! Architecture Invariant: no I/O; the caller logs and counts.

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// How many [`catch`]es are running on this thread (they nest: one per rule inside one
    /// per message).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// Where the last panic under a [`catch`] on this thread happened.
    static LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A panic that [`catch`] stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panicked {
    /// `file:line` of the panic (`unknown` if the runtime did not say). The payload is
    /// dropped: it may quote the message's text.
    pub location: String,
}

/// Runs `f`, turning a panic into [`Panicked`].
///
/// Unwind safety is asserted, not proven: callers only pass closures whose shared state
/// survives a panic halfway (the rule set is immutable; every `std::sync::Mutex` on the
/// decision path is locked with `unwrap_or_else(PoisonError::into_inner)`, so a poisoned one
/// is used as it was left rather than failing every later message).
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, Panicked> {
    install_hook();
    DEPTH.with(|depth| depth.set(depth.get() + 1));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    DEPTH.with(|depth| depth.set(depth.get() - 1));
    result.map_err(|_payload| Panicked {
        location: LOCATION
            .with(RefCell::take)
            .unwrap_or_else(|| "unknown".to_owned()),
    })
}

/// Puts a hook in front of the current one (once per process) that, under a [`catch`], only
/// records where the panic happened.
fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let guarded = DEPTH.try_with(Cell::get).unwrap_or(0) > 0;
            if !guarded {
                previous(info);
                return;
            }
            let location = info.location().map_or_else(
                || "unknown".to_owned(),
                |l| format!("{}:{}", l.file(), l.line()),
            );
            let _ = LOCATION.try_with(|slot| *slot.borrow_mut() = Some(location));
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_location_and_nesting_unwinds_one_level() {
        assert_eq!(catch(|| 7), Ok(7));
        let outer = catch(|| {
            let inner = catch(|| -> u32 { panic!("secret message text") });
            let inner = inner.expect_err("the inner panic is caught");
            assert!(inner.location.starts_with("src/guard.rs:"), "{inner:?}");
            assert!(!inner.location.contains("secret"));
            1
        });
        assert_eq!(
            outer,
            Ok(1),
            "the outer closure goes on after the inner panic"
        );
        assert_eq!(DEPTH.with(Cell::get), 0);
    }

    #[test]
    fn panics_outside_a_catch_still_reach_the_previous_hook() {
        install_hook();
        let outside = std::panic::catch_unwind(|| panic!("not guarded"));
        assert!(outside.is_err());
        assert_eq!(
            LOCATION.with(RefCell::take),
            None,
            "only guarded panics are kept"
        );
    }
}
