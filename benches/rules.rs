//! The rules engine per message, on the synthetic chat corpus.
//!
//! ```text
//! cargo bench --bench rules
//! ```
//!
//! - `rules/moderate`: the whole per-message pipeline (normalise, in-process user state,
//!   every built-in rule, escalation) over the corpus in order, as a stream would run it.
//! - `rules/decide`: normalise + rules + decision with an empty history (no state).
//! - `rules/peer_regex_filter`: the peer, in the same run: what a minimal chat bot does, one
//!   case-insensitive regex of banned phrases over the lower-cased text. The ratio of the two
//!   is the cost of everything modbot checks beyond a word list.

use std::hint::black_box;
use std::time::{Instant, SystemTime};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use modbot::domain::ChatMessage;
use modbot::domain::UserHistory;
use modbot::engine::decision::{DecideOptions, Engine, Inputs};
use modbot::engine::normalize::normalize;
use modbot::engine::rules::RuleSet;
use modbot::infra::users::{SharedState, StateOptions};
use modbot::service::moderate::Moderator;

/// Larger than the profanity cache (16,384 texts), so cycling through it measures misses as a
/// live chat would have them, not a cache warmed by the benchmark itself.
const CORPUS: usize = 100_000;

fn messages() -> Vec<ChatMessage> {
    modbot::corpus::generate(7, CORPUS)
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
                + std::time::Duration::from_millis(1_700_000_000_000 + 20 * i as u64),
        })
        .collect()
}

fn bench_rules(c: &mut Criterion) {
    let messages = messages();
    let mut group = c.benchmark_group("rules");
    group.throughput(Throughput::Elements(1));

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
    let mut i = 0;
    group.bench_function("moderate", |b| {
        b.iter(|| {
            let message = &messages[i % messages.len()];
            i += 1;
            black_box(runtime.block_on(moderator.moderate(
                message,
                DecideOptions::default(),
                Instant::now(),
            )))
        })
    });

    let engine = Engine::new(RuleSet::builtin());
    let history = UserHistory::default();
    let mut j = 0;
    group.bench_function("decide", |b| {
        b.iter(|| {
            let message = &messages[j % messages.len()];
            j += 1;
            let policy = engine.rules().policy(&message.channel);
            let normalized = normalize(&message.text, &policy.emotes);
            black_box(engine.decide(
                &Inputs {
                    message,
                    normalized: &normalized,
                    history: &history,
                    channel_recent: &modbot::domain::ChannelWindow::default(),
                    now_ms: 0,
                    received: Instant::now(),
                    model: modbot::engine::decision::ModelInput::NotConsulted,
                    raid: &modbot::engine::raid::Seen::default(),
                },
                DecideOptions::default(),
            ))
        })
    });

    let peer = regex::RegexBuilder::new(
        r"\b(?:free nitro|crypto giveaway|double your bitcoin|claim your reward|buy followers|cheap viewers|fuck|shit|bitch)\b",
    )
    .case_insensitive(true)
    .build()
    .expect("peer regex");
    let mut k = 0;
    group.bench_function("peer_regex_filter", |b| {
        b.iter(|| {
            let message = &messages[k % messages.len()];
            k += 1;
            black_box(peer.is_match(&message.text.to_lowercase()))
        })
    });
    group.finish();
}

criterion_group!(benches, bench_rules);
criterion_main!(benches);
