//! Memory per active user of the in-process backend, measured with a counting allocator.
//!
//! This test binary counts every byte the process has allocated and not freed (requested
//! sizes: the allocator's own per-block overhead and rounding are not included, and are shown
//! separately by the RSS growth). It holds 100,000 users with ten typical messages each and
//! prints the bytes per user; it fails if that grows past a bound, so a change that makes the
//! state fatter is noticed. Run with `--nocapture` to see the numbers.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicIsize, Ordering};

use modbot::domain::Observation;
use modbot::infra::users::{MemoryState, StateOptions};

struct Counting;

/// Bytes allocated and not yet freed.
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded with the caller's pointer, layout and size.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Resident set size in bytes, from /proc (Linux only; 0 elsewhere).
fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// A chat line of typical length for destiny.gg (a few words, 20–80 bytes).
fn text(i: usize) -> String {
    const WORDS: [&str; 8] = [
        "PepeLaugh",
        "yeah",
        "the",
        "stream",
        "is",
        "KEKW",
        "so",
        "good",
    ];
    let words = 3 + i % 9;
    (0..words)
        .map(|w| WORDS[(i + w) % WORDS.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

/// The tests of this binary measure the whole process's heap, so they take turns.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn memory_per_active_user() {
    let _turn = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    const USERS: usize = 100_000;
    const MESSAGES_PER_USER: usize = 10;
    let config = StateOptions::default(); // rings of 10 messages and 16 times per user
    let user_ids: Vec<String> = (0..USERS).map(|u| format!("{}", 1_000_000 + u)).collect();
    let texts: Vec<String> = (0..64).map(text).collect();
    let average_text = texts.iter().map(String::len).sum::<usize>() as f64 / texts.len() as f64;

    let live_before = LIVE.load(Ordering::Relaxed);
    let rss_before = rss_bytes();
    let state = MemoryState::new(config);
    let mut message_id = String::new();
    for round in 0..MESSAGES_PER_USER {
        for (u, user_id) in user_ids.iter().enumerate() {
            // Message ids as a bridge would make them: a UUID's 32 hex digits.
            message_id.clear();
            message_id.push_str(&format!(
                "{:032x}",
                (round * USERS + u) as u128 * 0x9e37_79b9
            ));
            let obs = Observation {
                channel: "destinygg",
                user_id,
                message_id: &message_id,
                text: &texts[(u + round) % texts.len()],
                at_ms: 1_700_000_000_000 + (round * USERS + u) as i64,
            };
            let _ = state.observe(&obs);
        }
    }
    assert_eq!(state.len(), USERS);
    let live = (LIVE.load(Ordering::Relaxed) - live_before) as f64;
    let rss = rss_bytes().saturating_sub(rss_before) as f64;
    let per_user = live / USERS as f64;
    println!(
        "users: {USERS}, messages each: {MESSAGES_PER_USER}, average text {average_text:.0} bytes, \
         message id 32 bytes, user id 7 bytes"
    );
    println!(
        "heap requested per user: {per_user:.0} bytes; RSS growth per user: {:.0} bytes \
         (includes allocator overhead and the 75-message channel window, which is shared)",
        rss / USERS as f64
    );
    // The bound is the measured value (about 1.7 KB) with some room; see the module doc.
    assert!(per_user < 2_200.0, "{per_user:.0} bytes per user");
    drop(state);
}

#[test]
fn worst_case_texts_stay_within_the_byte_budgets() {
    let _turn = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    const USERS: usize = 20_000;
    const CHANNELS: usize = 400;
    const MESSAGES_PER_USER: usize = 10;
    let config = StateOptions {
        max_users: 1_000_000,
        max_channels: 100_000,
        max_user_bytes: 8 << 20,
        max_channel_bytes: 4 << 20,
        ..StateOptions::default()
    };
    // The longest text a message can normalise to (the largest `grpc.max_text_bytes` at the
    // normaliser's largest expansion) and ids of the longest length the API accepts.
    let text = "\u{00e9}".repeat(modbot::engine::normalize::MAX_EXPANSION * 65_536 / 2);
    let long_id = |prefix: &str, i: usize| format!("{prefix}{i:0>250}");
    let user_ids: Vec<String> = (0..USERS).map(|u| long_id("u", u)).collect();
    let channels: Vec<String> = (0..CHANNELS).map(|c| long_id("c", c)).collect();

    let live_before = LIVE.load(Ordering::Relaxed);
    let state = MemoryState::new(config.clone());
    for round in 0..MESSAGES_PER_USER {
        for (u, user_id) in user_ids.iter().enumerate() {
            let message_id = long_id("m", round * USERS + u);
            let obs = Observation {
                channel: &channels[u % CHANNELS],
                user_id,
                message_id: &message_id,
                text: &text,
                at_ms: 1_700_000_000_000 + (round * USERS + u) as i64,
            };
            let _ = state.observe(&obs);
        }
        let (users, channels) = state.bytes();
        assert!(users <= config.max_user_bytes, "users hold {users} bytes");
        assert!(
            channels <= config.max_channel_bytes,
            "channels hold {channels} bytes"
        );
    }
    let live = (LIVE.load(Ordering::Relaxed) - live_before) as usize;
    let (users, channels) = state.bytes();
    let budget = config.max_user_bytes + config.max_channel_bytes;
    println!(
        "worst case: {} users and {} bytes counted for users, {channels} for channels; \
         heap {live} bytes against budgets of {budget}",
        state.len(),
        users
    );
    // What the budgets count is what the heap holds, but for the hash tables' spare room
    // (they grow by doubling and do not shrink), the shards themselves and allocator rounding.
    assert!(
        live <= budget + budget / 4,
        "{live} bytes on the heap for budgets of {budget}"
    );
    assert!(
        state.len() < USERS,
        "the budget, not the count, evicted users"
    );
    drop(state);
}
