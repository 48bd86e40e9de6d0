//! Throughput of the in-process user state's `observe`, the per-message cost on the rules-only
//! path: one thread, then two threads on one channel (the worst case for the channel lock), for
//! working sets of 1,000 (hot in cache), 10,000 and 100,000 users picked at random.
//!
//! `cargo bench --bench users` (a plain timing loop, no Criterion: a few numbers are all this
//! needs). Users have 10 messages of history already, the channel a full 75-message window.
//! The returned history is dropped unread, so the cost of first touching a cold user's recent
//! messages is charged here (the repetition rule would pay it otherwise).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use modbot::domain::Observation;
use modbot::infra::users::{MemoryState, StateOptions};

const MESSAGES: usize = 2_000_000;

struct Setup {
    state: MemoryState,
    users: Vec<String>,
    ids: Vec<String>,
}

fn warmed_up(users: usize) -> Setup {
    let state = MemoryState::new(StateOptions::default());
    let users: Vec<String> = (0..users).map(|u| format!("{}", 1_000_000 + u)).collect();
    let ids: Vec<String> = (0..1024)
        .map(|i| format!("{:032x}", i * 0x9e37_79b9_u64))
        .collect();
    for round in 0..10 {
        for (u, user) in users.iter().enumerate() {
            state.observe(&observation(
                user,
                &ids[u % ids.len()],
                round * users.len() + u,
            ));
        }
    }
    Setup { state, users, ids }
}

fn observation<'a>(user: &'a str, id: &'a str, i: usize) -> Observation<'a> {
    in_channel("destinygg", user, id, i)
}

fn in_channel<'a>(channel: &'a str, user: &'a str, id: &'a str, i: usize) -> Observation<'a> {
    Observation {
        channel,
        user_id: user,
        message_id: id,
        text: "PepeLaugh yeah the stream is so good KEKW",
        at_ms: 1_700_000_000_000 + i as i64,
    }
}

fn run(setup: &Setup, channel: &str, offset: usize, count: usize) -> usize {
    let mut returned = 0;
    for i in offset..offset + count {
        let (history, others) = setup.state.observe(&in_channel(
            channel,
            &setup.users[(i * 7919) % setup.users.len()],
            &setup.ids[i % setup.ids.len()],
            2_000_000 + i,
        ));
        returned += black_box(history.recent.len() + usize::from(others.is_empty()));
    }
    returned
}

fn main() {
    for users in [1_000, 10_000, 100_000] {
        let setup = Arc::new(warmed_up(users));
        let started = Instant::now();
        black_box(run(&setup, "destinygg", 0, MESSAGES));
        let one = started.elapsed();
        let two_threads = |channels: [&'static str; 2]| {
            let started = Instant::now();
            let threads: Vec<_> = (0..2)
                .map(|t| {
                    let setup = Arc::clone(&setup);
                    let channel = channels[t];
                    std::thread::spawn(move || run(&setup, channel, t * MESSAGES, MESSAGES / 2))
                })
                .collect();
            for thread in threads {
                black_box(thread.join().expect("bench thread"));
            }
            MESSAGES as f64 / started.elapsed().as_secs_f64() / 1e6
        };
        let shared = two_threads(["destinygg", "destinygg"]);
        let apart = two_threads(["destinygg", "strims"]);
        println!(
            "{users:>7} users: 1 thread {:>4.0} ns/message ({:.2} M/s); 2 threads: one channel \
             {shared:.2} M/s, a channel each {apart:.2} M/s",
            one.as_nanos() as f64 / MESSAGES as f64,
            MESSAGES as f64 / one.as_secs_f64() / 1e6,
        );
    }
}
