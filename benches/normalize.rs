//! Normalisation over the synthetic chat corpus, against its floor.
//!
//! `normalize` is the chat-aware pass ([`modbot::engine::normalize::normalize`]); `peer_lowercase_nfkc`
//! is what any normaliser pays at least (`to_lowercase` and NFKC through
//! `unicode-normalization`), so the ratio of the two is the cost of the chat-aware work
//! (invisible characters, marks, confusables, leetspeak, spaced letters, emotes, links, the
//! origin map). Per-message time is the reported time divided by the element count; criterion
//! prints it as throughput (elements per second).
//!
//! Run with `cargo bench --bench normalize`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use modbot::corpus;
use modbot::engine::normalize::{EmoteSet, normalize};
use unicode_normalization::UnicodeNormalization;

/// Messages per corpus iteration.
const MESSAGES: usize = 2_000;

fn peer(text: &str) -> String {
    text.to_lowercase().nfkc().collect()
}

fn corpus_benches(c: &mut Criterion) {
    let messages: Vec<String> = corpus::generate(42, MESSAGES)
        .into_iter()
        .map(|m| m.text)
        .collect();
    let emotes = EmoteSet::new(corpus::default_emotes());
    let mut group = c.benchmark_group("corpus");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    group.bench_function("normalize", |b| {
        b.iter(|| {
            for text in &messages {
                black_box(normalize(black_box(text), &emotes));
            }
        })
    });
    group.bench_function("peer_lowercase_nfkc", |b| {
        b.iter(|| {
            for text in &messages {
                black_box(peer(black_box(text)));
            }
        })
    });
    group.finish();
}

fn single_message_benches(c: &mut Criterion) {
    let emotes = EmoteSet::new(corpus::default_emotes());
    let cases = [
        // A typical 40-character line.
        ("typical_40", "did you see that PepeLaugh this is so bad"),
        ("evasion", "you are such an 1d10t, f u c k off ѕсаm"),
        ("zalgo_nonascii", "z̷̢̛͔a̸̡͓l̴̰̈g̵͎̊o̶̱͝ ▀▄▀▄▀▄ привет чат 😂😂😂 ｗｈａｔ"),
    ];
    let mut group = c.benchmark_group("message");
    for (name, text) in cases {
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("normalize/{name}"), |b| {
            b.iter(|| normalize(black_box(text), &emotes))
        });
        group.bench_function(format!("peer_lowercase_nfkc/{name}"), |b| {
            b.iter(|| peer(black_box(text)))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Short runs: the machine has two cores and the numbers are stable well within this.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = corpus_benches, single_message_benches
}
criterion_main!(benches);
