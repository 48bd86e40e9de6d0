//! What the heads' lexical inputs cost per message, against the tokenizer every scored message
//! already pays.
//!
//! Since issue 5 the toxicity and spam heads take the logit of their own n-gram model and the
//! sentiment head VADER's scores, and since issue 21 the spam head the evidence of the links
//! (`link_signals`), computed from the normalised text on the caller's task (`Heads::lexical`)
//! before the message is queued for the encoder. `lexical_inputs` times all of it. The peer is
//! `Encoder::tokenize` on the same texts, the other per-message step of that task; the ratio of
//! the two says whether the lexical inputs matter beside it (the encoder pass itself is
//! ~1 ms per message, `cargo bench --bench encoder`). `head_scoring` times the heads' own
//! arithmetic on an embedding, and `head_scoring_batch16` the same in batches of 16, as the
//! model thread scores them.
//!
//! Run with `cargo bench --bench heads` after `modbot fetch-model`; the committed heads in
//! `models/heads` are used.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use modbot::corpus;
use modbot::engine::normalize::{EmoteSet, normalize};
use modbot::engine::rules::lookalike::link_signals;
use modbot::infra::inference::{HeadSet, Lineup, Trial, TrialMode};
use modbot::infra::model::Encoder;
use modbot::infra::model::heads::Heads;

/// Messages per iteration.
const MESSAGES: usize = 1_000;

fn benches(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("models/all-MiniLM-L6-v2");
    if !modbot::infra::model::fetch::is_present(&model) {
        eprintln!("SKIPPED heads bench: no model (run `modbot fetch-model`)");
        return;
    }
    let encoder = Encoder::load(&model, &candle_core::Device::Cpu).expect("the model loads");
    let heads = Heads::load(&root.join("models/heads"), encoder.dim()).expect("the heads load");
    let emotes = EmoteSet::new(corpus::default_emotes());
    let texts: Vec<String> = corpus::generate(7, MESSAGES)
        .into_iter()
        .map(|m| normalize(&m.text, &emotes).text)
        .collect();
    let embedding = encoder
        .embed(&[texts[0].as_str()])
        .expect("embeds")
        .remove(0);
    let lexical = heads.lexical(&texts[0], &link_signals(&texts[0]));

    let mut group = c.benchmark_group("per_message");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    group.bench_function("lexical_inputs", |b| {
        b.iter(|| {
            for text in &texts {
                black_box(heads.lexical(black_box(text), &link_signals(black_box(text))));
            }
        })
    });
    // Its share of `lexical_inputs`: the spam head's link evidence alone.
    group.bench_function("link_signals", |b| {
        b.iter(|| {
            for text in &texts {
                black_box(link_signals(black_box(text)));
            }
        })
    });
    group.bench_function("peer_tokenize", |b| {
        b.iter(|| {
            for text in &texts {
                black_box(encoder.tokenize(black_box(text)).expect("tokenizes"));
            }
        })
    });
    group.bench_function("head_scoring", |b| {
        b.iter(|| {
            for _ in 0..MESSAGES {
                black_box(heads.score(black_box(&embedding), black_box(&lexical)));
            }
        })
    });
    group.finish();

    // The model thread scores a batch at a time: each head's weights read once per batch.
    let embeddings = encoder
        .embed(
            &texts[..BATCH]
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
        .expect("embeds");
    let lexicals: Vec<Vec<f32>> = texts[..BATCH]
        .iter()
        .map(|t| heads.lexical(t, &link_signals(t)))
        .collect();
    let rows: Vec<&[f32]> = embeddings.iter().map(Vec::as_slice).collect();
    let lex: Vec<&[f32]> = lexicals.iter().map(Vec::as_slice).collect();
    let mut group = c.benchmark_group("per_message");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    group.bench_function("head_scoring_batch16", |b| {
        b.iter(|| {
            for _ in 0..MESSAGES / BATCH {
                black_box(heads.score_batch(black_box(&rows), black_box(&lex)));
            }
        })
    });
    group.finish();
    // A candidate on trial (`Admin.TryModel`) is scored beside the active set on the same
    // embeddings: what that adds per message, lexical inputs on the caller's task and head
    // arithmetic on the model thread, against the active set alone in the same run.
    let set = |heads: &Heads| Arc::new(HeadSet::new("bench", heads.clone()));
    let alone = Lineup {
        generation: 0,
        active: set(&heads),
        trial: None,
    };
    let on_trial = Lineup {
        trial: Some(Trial {
            candidate: set(&heads),
            mode: TrialMode::Shadow,
        }),
        ..alone.clone()
    };
    let mut group = c.benchmark_group("trial");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, lineup) in [("active_alone", &alone), ("with_candidate", &on_trial)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let lexicals: Vec<Vec<f32>> = texts[..BATCH]
                    .iter()
                    .map(|t| lineup.lexical(black_box(t), &link_signals(black_box(t))))
                    .collect();
                for (set, inputs) in lineup.sets() {
                    let lex: Vec<&[f32]> = lexicals.iter().map(|l| &l[inputs.clone()]).collect();
                    black_box(set.heads.score_batch(black_box(&rows), &lex));
                }
            })
        });
    }
    group.finish();
}

/// Messages per batch in `head_scoring_batch16`.
const BATCH: usize = 16;

criterion_group!(heads_benches, benches);
criterion_main!(heads_benches);
