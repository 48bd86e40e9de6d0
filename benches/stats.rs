//! The cost of counting a verdict ([`modbot::service::stats::VerdictStats::record`]), of its Prometheus
//! metrics ([`modbot::telemetry::record_verdict`]) and of its `message` span
//! ([`modbot::telemetry::message_span`], created and entered under the JSON subscriber of
//! `modbot serve --log-format json`, at `info` and at `debug`) next to normalising the same
//! message, on the synthetic chat corpus.
//!
//! ```text
//! cargo bench --bench stats
//! ```
//!
//! The verdicts are real: the corpus is decided once by the built-in rules with in-process
//! state before timing (so a share of them carry rule reasons, and the channels are the
//! corpus's), with latencies spread over 50 µs to 20 ms. `stats/record` counts them in order
//! into one recorder, as `Classify` and streams do; `stats/normalize` normalises the same
//! messages' texts. All report elements per second: their ratio is what counting costs
//! relative to the cheapest other step every message takes. `stats/metrics` records into a
//! real Prometheus recorder (installed for this process); `stats/span_*` write nothing (no
//! event is logged inside the span), which is the per-message cost in normal operation.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use modbot::domain::{ChatMessage, Verdict};
use modbot::engine::decision::{DecideOptions, Engine};
use modbot::engine::normalize::{EmoteSet, normalize};
use modbot::engine::rules::RuleSet;
use modbot::infra::users::{SharedState, StateOptions};
use modbot::service::moderate::Moderator;
use modbot::service::stats::VerdictStats;

/// Messages per iteration.
const MESSAGES: usize = 2_000;

fn corpus() -> (Vec<ChatMessage>, Vec<Verdict>) {
    let messages: Vec<ChatMessage> = modbot::corpus::generate(42, MESSAGES)
        .into_iter()
        .enumerate()
        .map(|(i, m)| ChatMessage {
            channel: m.channel,
            message_id: i.to_string(),
            user_id: m.user_id,
            nick: m.nick,
            roles: m.roles,
            text: m.text,
            sent_at: SystemTime::UNIX_EPOCH
                + Duration::from_millis(1_700_000_000_000 + 20 * i as u64),
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let moderator = Moderator::new(
        Engine::new(RuleSet::builtin()),
        SharedState::memory(StateOptions::default()),
        modbot::infra::inference::Scorer::idle(
            modbot::infra::inference::ModelStatus::Off,
            modbot::infra::inference::Description::default(),
        ),
    );
    let verdicts = messages
        .iter()
        .enumerate()
        .map(|(i, message)| {
            let mut verdict = runtime
                .block_on(moderator.moderate(message, DecideOptions::default(), Instant::now()))
                .expect("no model, never overloaded");
            // Log-spread latencies, so the histogram's bins vary as they would.
            verdict.elapsed = Duration::from_micros(50 + (i as u64 * 7919) % 20_000);
            verdict
        })
        .collect();
    (messages, verdicts)
}

fn bench_stats(c: &mut Criterion) {
    let (messages, verdicts) = corpus();
    let with_reasons = verdicts.iter().filter(|v| !v.reasons.is_empty()).count();
    eprintln!(
        "{} verdicts, {with_reasons} with reasons, {} channels",
        verdicts.len(),
        {
            let mut channels: Vec<&str> = verdicts.iter().map(|v| v.channel.as_str()).collect();
            channels.sort_unstable();
            channels.dedup();
            channels.len()
        }
    );
    let emotes = EmoteSet::new(modbot::corpus::default_emotes());
    let mut group = c.benchmark_group("stats");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    let stats = VerdictStats::new();
    group.bench_function("record", |b| {
        b.iter(|| {
            for verdict in &verdicts {
                stats.record(black_box(verdict));
            }
        })
    });
    metrics::set_global_recorder(modbot::telemetry::prometheus_builder().build_recorder())
        .expect("the only recorder in this process");
    group.bench_function("metrics", |b| {
        b.iter(|| {
            for verdict in &verdicts {
                modbot::telemetry::record_verdict(black_box(verdict));
            }
        })
    });
    // The message span under the JSON subscriber `modbot serve --log-format json` installs,
    // at `info` (the default: the span is off) and at `debug` (on).
    for (name, level) in [
        ("span_info", tracing::Level::INFO),
        ("span_debug", tracing::Level::DEBUG),
    ] {
        let dispatch = tracing::Dispatch::new(
            tracing_subscriber::fmt()
                .json()
                .with_current_span(true)
                .with_max_level(level)
                .with_writer(std::io::sink)
                .finish(),
        );
        group.bench_function(name, |b| {
            b.iter(|| {
                tracing::dispatcher::with_default(&dispatch, || {
                    for message in &messages {
                        let span = modbot::telemetry::message_span(black_box(message), false);
                        let _entered = span.enter();
                    }
                })
            })
        });
    }
    group.bench_function("normalize", |b| {
        b.iter(|| {
            for message in &messages {
                black_box(normalize(black_box(&message.text), &emotes));
            }
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Short runs: the machine has two cores and the numbers are stable well within this.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = bench_stats
}
criterion_main!(benches);
