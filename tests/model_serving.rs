//! The model in the service: real encoder, a head made here from real embeddings, served
//! through `Classify`, `StreamModerate`, `GetModelInfo` and health; and the degraded modes
//! (weights that cannot be read, no heads, a full queue).
//!
//! The head is a nearest-centroid classifier on all-MiniLM-L6-v2 embeddings of a few insults
//! and a few friendly lines: enough to tell an insult from small talk, which is all these
//! tests need. Issue 5's trained heads replace it in production.

use crate::{browser, common};

use std::path::Path;

use candle_core::Device;
use common::{TestServer, chat_message, model_dir_or_skip};
use modbot::infra::model::Encoder;
use modbot::infra::model::heads;
use modbot::proto::{
    ChatEvent, ClassifyOptions, ClassifyRequest, Decision, DegradedComponent, GetModelInfoRequest,
    Hello, ReasonSource, StreamModerateRequest, Verdict, chat_event, stream_moderate_request,
    stream_moderate_response,
};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

const INSULTS: [&str; 5] = [
    "you are a worthless pathetic clown",
    "nobody likes you, you absolute moron",
    "shut up you braindead idiot",
    "you're so dumb it hurts to read your messages",
    "what a disgusting loser you are",
];
const FRIENDLY: [&str; 5] = [
    "great stream today, thanks for the content",
    "what time does the debate start?",
    "I love this song, what is it called",
    "good morning chat, hope everyone is well",
    "that was a really interesting point about the economy",
];

const RULES_WITH_A_HOLD: &str = r#"
[policy]
shadow = false
exempt_roles = []
emotes = []
[policy.escalation]
warn_first = false
first_timeout_secs = 60
max_timeout_secs = 86400
ban_after = 0
heat_half_life_secs = 3600
[policy.model.labels."toxicity/insult"]
action = "hide"

[[rule]]
id = "mixtapes"
kind = "phrase"
action = "hold"
[rule.params]
phrases = ["mixtape"]

[[rule]]
id = "nitro"
kind = "phrase"
action = "timeout"
duration_secs = 60
[rule.params]
phrases = ["free nitro"]
"#;

fn write_centroid_heads(model: &Path, heads_dir: &Path) {
    let encoder = Encoder::load(model, &Device::Cpu).expect("the default model loads");
    heads::write_centroid_heads(&encoder, heads_dir, &INSULTS, &FRIENDLY).unwrap();
}

async fn start_with_model(
    model: &Path,
    heads: &Path,
    configure: impl FnOnce(&mut modbot::config::Config),
) -> TestServer {
    let (model, heads) = (model.to_owned(), heads.to_owned());
    TestServer::start(move |config| {
        config.model.dir = model;
        config.model.heads_dir = heads;
        config.model.fetch_if_missing = false;
        // Debug builds on a busy 2-core machine: no test here is about the model's deadline.
        config.model.max_wait_ms = 60_000;
        configure(config);
    })
    .await
}

/// A server on the default model with the centroid head, or `None` (skipped) without a model.
/// The heads' directory is returned to be kept alive as long as the server.
async fn start_with_centroid_heads(
    test: &str,
    configure: impl FnOnce(&mut modbot::config::Config),
) -> Option<(TestServer, tempfile::TempDir)> {
    let model = model_dir_or_skip(test)?;
    let heads = tempfile::tempdir().unwrap();
    write_centroid_heads(&model, heads.path());
    let server = start_with_model(&model, heads.path(), configure).await;
    Some((server, heads))
}

async fn model_info(server: &TestServer) -> modbot::proto::ModelInfo {
    server
        .admin()
        .get_model_info(GetModelInfoRequest {})
        .await
        .expect("GetModelInfo answers")
        .into_inner()
}

async fn model_health(server: &TestServer) -> i32 {
    server
        .health()
        .check(HealthCheckRequest {
            service: modbot::app::MODEL_HEALTH_NAME.to_owned(),
        })
        .await
        .expect("the model has a health entry")
        .into_inner()
        .status
}

fn classify(texts: &[&str]) -> ClassifyRequest {
    ClassifyRequest {
        messages: texts
            .iter()
            .enumerate()
            .map(|(i, t)| chat_message(&format!("m{i}"), &format!("user{i}"), t))
            .collect(),
        options: Some(ClassifyOptions {
            include_scores: true,
            ..ClassifyOptions::default()
        }),
    }
}

/// Streams `texts` (message ids `m0`, `m1`, ... from users `user0`, ...) and collects the
/// verdicts.
async fn stream_messages(server: &TestServer, texts: &[String]) -> Vec<Verdict> {
    let mut requests = vec![StreamModerateRequest {
        kind: Some(stream_moderate_request::Kind::Hello(Hello {
            bridge_id: "test-bridge".into(),
            channels: vec!["destinygg".into()],
            dialect: "dgg".into(),
            bot_nick: "modbot".into(),
        })),
    }];
    requests.extend(
        texts
            .iter()
            .enumerate()
            .map(|(i, text)| StreamModerateRequest {
                kind: Some(stream_moderate_request::Kind::Event(ChatEvent {
                    channel: "destinygg".into(),
                    kind: Some(chat_event::Kind::Message(chat_message(
                        &format!("m{i}"),
                        &format!("user{i}"),
                        text,
                    ))),
                })),
            }),
    );
    let mut responses = server
        .moderation()
        .stream_moderate(tokio_stream::iter(requests))
        .await
        .expect("the stream opens")
        .into_inner();
    let mut verdicts = Vec::new();
    while let Some(response) = responses.message().await.expect("a healthy stream") {
        match response.kind {
            Some(stream_moderate_response::Kind::Verdict(v)) => verdicts.push(v),
            // Commands carry out enforced verdicts (tests/workflows.rs covers them).
            Some(
                stream_moderate_response::Kind::Welcome(_)
                | stream_moderate_response::Kind::Command(_),
            ) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    verdicts
}

#[tokio::test]
async fn the_model_scores_messages_and_its_labels_become_reasons() {
    let Some((server, _heads)) = start_with_centroid_heads(
        "the_model_scores_messages_and_its_labels_become_reasons",
        |_| {},
    )
    .await
    else {
        return;
    };
    assert_eq!(model_health(&server).await, ServingStatus::Serving as i32);

    let info = model_info(&server).await;
    assert!(info.loaded, "{info:?}");
    assert_eq!(info.encoder, "all-MiniLM-L6-v2");
    assert!(
        info.version.starts_with("all-MiniLM-L6-v2@"),
        "{}",
        info.version
    );
    assert!(
        info.version.ends_with("+heads@centroid-1"),
        "{}",
        info.version
    );
    assert_eq!(
        (
            info.device.as_str(),
            info.embedding_dim,
            info.max_sequence_length
        ),
        ("cpu", 384, 256)
    );
    assert_eq!(info.heads.len(), 1);
    assert_eq!(info.heads[0].labels, ["insult"]);
    assert_eq!(info.heads[0].thresholds["insult"], 0.5);
    assert!(info.status_detail.is_empty(), "{}", info.status_detail);

    // Unseen lines, not caught by any rule.
    let verdicts = server
        .moderation()
        .classify(classify(&[
            "you are such a pathetic moron, nobody wants you here",
            "thanks for the stream, see you all tomorrow",
        ]))
        .await
        .unwrap()
        .into_inner()
        .verdicts;
    let insult = &verdicts[0];
    assert_eq!(insult.decision, Decision::Hide as i32, "{insult:?}");
    let reason = &insult.reasons[0];
    assert_eq!(reason.source, ReasonSource::Model as i32);
    assert_eq!(reason.label, "toxicity/insult");
    // The shipped policy's threshold (not the head's 0.5), lowered by the shipped
    // [policy.reputation] for a stranger (a new user).
    let threshold = shipped_insult_threshold() - 0.05;
    assert!(
        reason.score >= threshold && (reason.threshold - threshold).abs() < 1e-9,
        "{reason:?}"
    );
    assert_eq!(insult.model_version, info.version);
    assert!(insult.degraded.is_empty());

    let friendly = &verdicts[1];
    assert_eq!(friendly.decision, Decision::Allow as i32, "{friendly:?}");
    assert!(friendly.scores["toxicity/insult"] < 0.5, "{friendly:?}");
    assert_eq!(friendly.model_version, info.version);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_committed_heads_serve_out_of_the_box_with_their_version_and_metrics() {
    let Some(model) = model_dir_or_skip("the_committed_heads_serve_out_of_the_box") else {
        return;
    };
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/heads");
    // The default configuration's heads directory, the default rules (toxicity hides, spam
    // holds): what `modbot serve` runs with.
    assert_eq!(
        modbot::config::Config::default().model.heads_dir,
        Path::new("models/heads"),
        "the default heads are the committed ones"
    );
    let server = start_with_model(&model, &committed, |_| {}).await;
    let info = model_info(&server).await;
    assert!(info.loaded && info.status_detail.is_empty(), "{info:?}");
    let names: Vec<&str> = info.heads.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["toxicity", "spam", "sentiment"]);
    let toxicity = &info.heads[0];
    assert!(
        toxicity.metrics["insults/test.roc_auc"] > 0.9,
        "{toxicity:?}"
    );
    assert!((0.0..1.0).contains(&toxicity.thresholds["insult"]));
    // The shipped policy sets the insult threshold for chat (chosen on the chat set).
    let threshold = shipped_insult_threshold();
    assert!(info.version.contains("+heads@"), "{}", info.version);

    let verdicts = server
        .moderation()
        .classify(classify(&[
            "you are a braindead moron and everyone here hates you",
            "thanks for the stream, see you all tomorrow",
        ]))
        .await
        .unwrap()
        .into_inner()
        .verdicts;
    let insult = &verdicts[0];
    assert_eq!(insult.decision, Decision::Hide as i32, "{insult:?}");
    let reason = &insult.reasons[0];
    assert_eq!(reason.label, "toxicity/insult");
    // A stranger is a new user: the shipped [policy.reputation] lowers the threshold by 0.05,
    // and the reason says so.
    assert!(
        (reason.threshold - (threshold - 0.05)).abs() < 1e-6,
        "{reason:?}"
    );
    assert!(
        reason.description.contains("lowered") && reason.description.contains("a new user"),
        "{reason:?}"
    );
    assert_eq!(insult.model_version, info.version);
    let friendly = &verdicts[1];
    assert_eq!(friendly.decision, Decision::Allow as i32, "{friendly:?}");
    // Every label of every head is scored; the sentiment head's probabilities sum to one.
    let sentiment: f64 = ["negative", "neutral", "positive"]
        .iter()
        .map(|l| friendly.scores[&format!("sentiment/{l}")])
        .sum();
    assert!((sentiment - 1.0).abs() < 1e-4, "{friendly:?}");
    assert!(friendly.scores["sentiment/positive"] > friendly.scores["sentiment/negative"]);
    assert!(friendly.scores["spam/spam"] < 0.5, "{friendly:?}");

    // The spam label holds (the shipped policy); a moderator's approval teaches the head a
    // negative example of the label that fired.
    let held = server
        .moderation()
        .classify(classify(&[
            "URGENT! You have won a 1 week FREE membership in our 100,000 prize jackpot! Txt \
             the word WIN to 80086 now",
        ]))
        .await
        .unwrap()
        .into_inner()
        .verdicts
        .remove(0);
    assert_eq!(held.decision, Decision::Hold as i32, "{held:?}");
    assert!(
        held.reasons
            .iter()
            .any(|r| r.label == "spam/spam" && !r.shadow),
        "{held:?}"
    );
    server
        .review()
        .resolve_review(modbot::proto::ResolveReviewRequest {
            id: held.review_id.clone(),
            ruling: modbot::proto::ReviewRuling::Approve as i32,
            moderator: "alice".into(),
            ..Default::default()
        })
        .await
        .expect("approve");
    let feedback = server.store().await.feedback().await.unwrap();
    let taught: Vec<_> = feedback
        .iter()
        .map(|f| (f.label.as_str(), f.positive, f.source.as_str()))
        .collect();
    // Approving a held message teaches every label that held it that it was wrong: the e-mail
    // spam label and the chat-promo one both fire on SMS-style prize spam.
    assert_eq!(
        taught,
        [
            ("spam/promo", false, "review_approved"),
            ("spam/spam", false, "review_approved")
        ]
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_stream_gets_scored_verdicts_in_order() {
    let Some((server, _heads)) =
        start_with_centroid_heads("a_stream_gets_scored_verdicts_in_order", |_| {}).await
    else {
        return;
    };
    let texts: Vec<String> = (0..120)
        .map(|i| match i % 3 {
            0 => format!("you are a worthless pathetic clown number {i}"),
            1 => "good morning chat, hope everyone is well".to_owned(),
            _ => format!("what time does the debate start, question {i}?"),
        })
        .collect();
    let verdicts = stream_messages(&server, &texts).await;
    assert_eq!(verdicts.len(), texts.len());
    for (i, verdict) in verdicts.iter().enumerate() {
        assert_eq!(verdict.message_id, format!("m{i}"), "in order");
        assert!(!verdict.model_version.is_empty(), "scored: {verdict:?}");
        // (Other rules, such as copy-paste, may fire too; the model's reason is what counts.)
        let insult = verdict
            .reasons
            .iter()
            .any(|r| r.source == ReasonSource::Model as i32 && r.label == "toxicity/insult");
        assert_eq!(insult, i % 3 == 0, "message {i}: {:?}", verdict.reasons);
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn unreadable_weights_mean_rules_only_marked_degraded() {
    let Some(model) = model_dir_or_skip("unreadable_weights_mean_rules_only_marked_degraded")
    else {
        return;
    };
    // A copy of the model directory whose weights are garbage.
    let broken = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&model).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), broken.path().join(entry.file_name())).unwrap();
        }
    }
    std::fs::write(broken.path().join("model.safetensors"), b"not safetensors").unwrap();
    let heads = tempfile::tempdir().unwrap();
    write_centroid_heads(&model, heads.path());
    // A hold rule is milder than the model's hide, so the model is consulted for its
    // messages (and found missing); a timeout rule settles its messages without the model.
    let rules = broken.path().join("rules.toml");
    std::fs::write(&rules, RULES_WITH_A_HOLD).unwrap();
    let server = start_with_model(broken.path(), heads.path(), |config| {
        config.rules.file = rules;
    })
    .await;

    assert_eq!(
        model_health(&server).await,
        ServingStatus::NotServing as i32
    );
    let info = model_info(&server).await;
    assert!(!info.loaded);
    assert!(
        info.status_detail.contains("model.safetensors") || info.status_detail.contains("encoder"),
        "{}",
        info.status_detail
    );

    let verdicts = server
        .moderation()
        .classify(classify(&[
            "please review my mixtape",
            "hello there",
            "free nitro for everyone",
        ]))
        .await
        .unwrap()
        .into_inner()
        .verdicts;
    for verdict in &verdicts[..2] {
        assert_eq!(
            verdict.degraded,
            [DegradedComponent::Model as i32],
            "{verdict:?}"
        );
        assert!(verdict.model_version.is_empty());
        assert!(verdict.scores.is_empty());
    }
    assert_eq!(
        verdicts[0].decision,
        Decision::Hold as i32,
        "the rule still acts: {:?}",
        verdicts[0]
    );
    assert_eq!(verdicts[1].decision, Decision::Allow as i32);
    assert_ne!(verdicts[2].decision, Decision::Allow as i32);
    assert!(
        verdicts[2].degraded.is_empty(),
        "settled by a rule, the model was not needed: {:?}",
        verdicts[2]
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_encoder_without_heads_runs_rules_only_and_says_so() {
    let Some(model) = model_dir_or_skip("an_encoder_without_heads_runs_rules_only_and_says_so")
    else {
        return;
    };
    let empty = tempfile::tempdir().unwrap();
    let server = start_with_model(&model, empty.path(), |_| {}).await;
    assert_eq!(model_health(&server).await, ServingStatus::Serving as i32);
    let info = model_info(&server).await;
    assert!(info.loaded);
    assert!(info.heads.is_empty());
    assert!(
        info.status_detail.contains("without classification heads"),
        "{}",
        info.status_detail
    );
    let verdicts = server
        .moderation()
        .classify(classify(&["you are a worthless pathetic clown"]))
        .await
        .unwrap()
        .into_inner()
        .verdicts;
    assert!(verdicts[0].degraded.is_empty(), "no heads is not a failure");
    assert!(verdicts[0].model_version.is_empty());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_full_model_queue_refuses_classify_with_a_retry_hint_and_remembers_nothing() {
    // One slot, and a linger long enough that the first message still holds it when the
    // second asks.
    let Some((server, _heads)) = start_with_centroid_heads(
        "a_full_model_queue_refuses_classify_with_a_retry_hint",
        |config| {
            config.model.max_queue = 1;
            config.model.linger_us = 100_000;
        },
    )
    .await
    else {
        return;
    };
    let status = server
        .moderation()
        .classify(classify(&["first distinct line", "second distinct line"]))
        .await
        .expect_err("the queue holds one message");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("retry after"),
        "{}",
        status.message()
    );
    let pushback: u64 = status
        .metadata()
        .get("grpc-retry-pushback-ms")
        .expect("a retry hint")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(pushback >= 10, "{pushback}");
    // Nothing was decided: the same message later, retried as the hint says (the refused
    // call's job holds its slot until the model thread drops it), is the user's first.
    let mut attempts = 0;
    let verdicts = loop {
        match server
            .moderation()
            .classify(classify(&["first distinct line"]))
            .await
        {
            Ok(response) => break response.into_inner().verdicts,
            Err(status) if status.code() == tonic::Code::ResourceExhausted && attempts < 50 => {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(pushback)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    };
    assert_eq!(verdicts[0].decision, Decision::Allow as i32);
    let logged = server
        .store()
        .await
        .audit_log(&modbot::infra::store::AuditQuery {
            limit: 10,
            ..modbot::infra::store::AuditQuery::default()
        })
        .await
        .unwrap();
    assert!(logged.is_empty(), "{logged:?}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn int8_precision_serves_the_committed_heads_and_says_so_in_the_version() {
    let Some(model) = model_dir_or_skip("int8_precision_serves_the_committed_heads") else {
        return;
    };
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/heads");
    let lines = [
        "you are a braindead moron and everyone here hates you",
        "thanks for the stream, see you all tomorrow",
        "BUY CHEAP FOLLOWERS NOW at followers dot shop",
    ];
    let mut scores = Vec::new();
    for precision in [
        modbot::config::ModelPrecision::F32,
        modbot::config::ModelPrecision::Int8,
    ] {
        let server = start_with_model(&model, &committed, |config| {
            config.model.precision = precision;
        })
        .await;
        let info = model_info(&server).await;
        assert!(info.loaded && info.status_detail.is_empty(), "{info:?}");
        // A CPU without AVX-512 VNNI runs f32 whatever was asked, and the version says so.
        let int8 = precision == modbot::config::ModelPrecision::Int8
            && modbot::infra::model::int8::supported();
        assert_eq!(
            info.version.contains("/int8+heads@"),
            int8,
            "{}",
            info.version
        );
        let verdicts = server
            .moderation()
            .classify(classify(&lines))
            .await
            .unwrap()
            .into_inner()
            .verdicts;
        assert_eq!(
            verdicts[0].decision,
            Decision::Hide as i32,
            "{:?}",
            verdicts[0]
        );
        assert_eq!(
            verdicts[1].decision,
            Decision::Allow as i32,
            "{:?}",
            verdicts[1]
        );
        for verdict in &verdicts {
            assert_eq!(verdict.model_version, info.version);
        }
        scores.push(verdicts.into_iter().map(|v| v.scores).collect::<Vec<_>>());
        server.stop().await.unwrap();
    }
    // The same labels, and probabilities that int8 moved only a little.
    for (f32_scores, int8_scores) in scores[0].iter().zip(&scores[1]) {
        let labels = |scores: &std::collections::HashMap<String, f64>| {
            let mut labels: Vec<String> = scores.keys().cloned().collect();
            labels.sort();
            labels
        };
        assert_eq!(labels(f32_scores), labels(int8_scores));
        for (label, p) in f32_scores {
            let q = int8_scores[label];
            assert!((p - q).abs() < 0.1, "{label}: f32 {p}, int8 {q}");
        }
    }
}

/// A tiny adapter of the default model's top layer, trained here on the centroid head's lines.
fn tiny_adapter(model: &Path, dir: &Path) -> modbot::infra::model::adapter::Adapter {
    use modbot::infra::model::adapter::{Adapter, TopLayer, TuneConfig, TuneExample, tune};
    let encoder = Encoder::load(model, &Device::Cpu).unwrap();
    let top = TopLayer::load(model).unwrap();
    let lines: Vec<(&str, bool)> = INSULTS
        .iter()
        .map(|t| (*t, true))
        .chain(FRIENDLY.iter().map(|t| (*t, false)))
        .collect();
    let tokens: Vec<Vec<u32>> = lines
        .iter()
        .map(|(t, _)| encoder.tokenize(t).unwrap())
        .collect();
    let examples: Vec<TuneExample> = encoder
        .states(&tokens, top.index())
        .unwrap()
        .into_iter()
        .zip(&lines)
        .map(|(rows, (_, positive))| TuneExample {
            rows,
            task: 0,
            positive: *positive,
            weight: 1.0,
        })
        .collect();
    let config = TuneConfig {
        rank: 2,
        probe_epochs: 1,
        max_epochs: 1,
        batch_size: 4,
        ..TuneConfig::default()
    };
    let tuned = tune(&top, 1, &examples, &examples, &config, |_| {}).unwrap();
    tuned.adapter.save(dir).unwrap();
    Adapter::load(dir).unwrap()
}

#[tokio::test]
async fn an_adapted_encoder_serves_under_its_own_version_and_a_foreign_adapter_is_refused() {
    let Some(model) = model_dir_or_skip("an_adapted_encoder_serves_under_its_own_version") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let adapter_dir = work.path().join("adapter");
    let adapter = tiny_adapter(&model, &adapter_dir);
    let heads = work.path().join("heads");
    write_centroid_heads(&model, &heads);

    let server = start_with_model(&model, &heads, |config| {
        config.model.adapter = adapter_dir.clone();
    })
    .await;
    let info = model_info(&server).await;
    assert!(info.loaded, "{info:?}");
    let suffix = format!("+adapter@{}", &adapter.sha256()[..12]);
    assert!(info.version.contains(&suffix), "{}", info.version);
    let verdicts = server
        .moderation()
        .classify(classify(&["shut up you braindead idiot", "hello there"]))
        .await
        .unwrap()
        .into_inner()
        .verdicts;
    for verdict in &verdicts {
        assert!(verdict.degraded.is_empty(), "{verdict:?}");
        assert_eq!(verdict.model_version, info.version);
    }
    server.stop().await.unwrap();

    // An adapter made for other weights: the model is not served (rules only, degraded) and
    // the status says why.
    let manifest_path = adapter_dir.join("adapter.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    manifest["base_sha256"] = serde_json::json!("a".repeat(64));
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let server = start_with_model(&model, &heads, |config| {
        config.model.adapter = adapter_dir.clone();
    })
    .await;
    let info = model_info(&server).await;
    assert!(!info.loaded);
    assert!(
        info.status_detail
            .contains("the adapter was trained on encoder weights aaaaaaaaaaaa"),
        "{}",
        info.status_detail
    );
    assert_eq!(
        model_health(&server).await,
        ServingStatus::NotServing as i32
    );
    let verdicts = server
        .moderation()
        .classify(classify(&["hello there"]))
        .await
        .unwrap()
        .into_inner()
        .verdicts;
    assert_eq!(verdicts[0].degraded, [DegradedComponent::Model as i32]);
    server.stop().await.unwrap();
}

/// The insult threshold of the shipped policy (`config/rules.toml`, `[policy.model]`).
fn shipped_insult_threshold() -> f64 {
    let rules = modbot::engine::rules::DEFAULT_RULES;
    let table = rules
        .split("[policy.model.labels.\"toxicity/insult\"]")
        .nth(1)
        .expect("the shipped policy has the insult label");
    let line = table
        .lines()
        .take_while(|l| !l.starts_with('['))
        .find_map(|l| l.strip_prefix("threshold = "))
        .expect("the shipped policy sets the insult threshold");
    line.trim().parse().unwrap()
}

/// A copy of the centroid heads in `dir` as version `version` with a trained insult threshold
/// of `threshold` (0: hides everything the policy lets the trained threshold decide).
fn registered_copy(heads: &Path, dir: &Path, version: &str, threshold: f64) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(
        heads.join("toxicity.safetensors"),
        dir.join("toxicity.safetensors"),
    )
    .unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(heads.join("heads.json")).unwrap()).unwrap();
    manifest["version"] = version.into();
    manifest["heads"][0]["thresholds"]["insult"] = threshold.into();
    std::fs::write(dir.join("heads.json"), manifest.to_string()).unwrap();
}

/// One friendly line from `user` in `channel`: the active centroid set allows it, the strict
/// candidate hides it.
async fn friendly_verdict(server: &TestServer, channel: &str, user: &str) -> Verdict {
    let mut message = chat_message("f1", user, "thanks for the stream, see you all tomorrow");
    message.channel = channel.to_owned();
    server
        .moderation()
        .classify(ClassifyRequest {
            messages: vec![message],
            ..ClassifyRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .verdicts
        .remove(0)
}

#[tokio::test]
async fn a_candidate_is_tried_in_shadow_and_split_then_promoted_and_rolled_back_on_every_replica() {
    use modbot::proto::{
        EndModelTrialRequest, ListModelVersionsRequest, PromoteModelRequest, RollbackModelRequest,
        SplitUnit, TrialMode, TryModelRequest,
    };
    use tonic::Code;
    let test = "a_candidate_is_tried_in_shadow_and_split_then_promoted_and_rolled_back";
    let Some(model) = model_dir_or_skip(test) else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let heads = root.path().join("heads");
    write_centroid_heads(&model, &heads);
    let registry = root.path().join("registry");
    registered_copy(&heads, &registry.join("strict"), "centroid-2", 0.0);
    std::fs::create_dir_all(registry.join("broken")).unwrap();
    registered_copy(&heads, &registry.join("other-encoder"), "wide-1", 0.5);
    let mut wide: serde_json::Value =
        serde_json::from_slice(&std::fs::read(registry.join("other-encoder/heads.json")).unwrap())
            .unwrap();
    wide["embedding_dim"] = 768.into();
    std::fs::write(registry.join("other-encoder/heads.json"), wide.to_string()).unwrap();
    // The trained thresholds decide: the policy names the label's action only.
    let rules = root.path().join("rules.toml");
    std::fs::write(&rules, RULES_WITH_A_HOLD).unwrap();
    let db = format!("sqlite://{}/shared.db", root.path().display());
    let configure = |config: &mut modbot::config::Config| {
        config.rules.file = rules.clone();
        config.model.registry_dir = registry.clone();
        config.database.url = db.clone();
        config.rules.reload_interval_ms = 100;
    };
    let server = start_with_model(&model, &heads, configure).await;
    let admin = || server.admin();

    let listed = admin()
        .list_model_versions(ListModelVersionsRequest {})
        .await
        .unwrap()
        .into_inner()
        .versions;
    let summary: Vec<(&str, bool, bool, bool)> = listed
        .iter()
        .map(|v| {
            (
                v.version.as_str(),
                v.shipped,
                v.active,
                v.problem.is_empty(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("centroid-1", true, true, true),
            ("", false, false, false),
            ("wide-1", false, false, true),
            ("centroid-2", false, false, true),
        ]
    );
    assert_eq!(listed[3].heads[0].thresholds["insult"], 0.0);

    // Refused, naming what is wrong; nothing is written.
    let refused = |request: TryModelRequest| {
        let mut admin = admin();
        async move { admin.try_model(request).await.unwrap_err() }
    };
    let shadow = |version: &str| TryModelRequest {
        version: version.to_owned(),
        mode: TrialMode::Shadow as i32,
        ..TryModelRequest::default()
    };
    assert_eq!(refused(shadow("nope")).await.code(), Code::NotFound);
    let wrong = refused(shadow("wide-1")).await;
    assert_eq!(wrong.code(), Code::FailedPrecondition);
    assert!(wrong.message().contains("768"), "{wrong:?}");
    assert_eq!(
        refused(shadow("centroid-1")).await.code(),
        Code::FailedPrecondition,
        "the active set is not a candidate"
    );
    common::assert_invalid_field(
        &refused(TryModelRequest {
            mode: TrialMode::Unspecified as i32,
            ..shadow("centroid-2")
        })
        .await,
        "mode",
    );
    common::assert_invalid_field(
        &refused(TryModelRequest {
            mode: TrialMode::Split as i32,
            share: 1.5,
            ..shadow("centroid-2")
        })
        .await,
        "share",
    );
    let none = admin()
        .end_model_trial(EndModelTrialRequest::default())
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::FailedPrecondition);
    assert_eq!(
        admin()
            .rollback_model(RollbackModelRequest::default())
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );
    assert_eq!(model_info(&server).await.rollout.unwrap().revision, 0);

    // Shadow: the active set decides, the candidate is scored and compared.
    let rollout = admin()
        .try_model(TryModelRequest {
            reason: "lower threshold".into(),
            ..shadow("centroid-2")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            rollout.revision,
            rollout.active.as_str(),
            rollout.candidate.as_str(),
            rollout.mode
        ),
        (1, "centroid-1", "centroid-2", TrialMode::Shadow as i32)
    );
    assert!(rollout.problem.is_empty(), "{rollout:?}");
    let verdict = friendly_verdict(&server, "destinygg", "u1").await;
    assert_eq!(verdict.decision, Decision::Allow as i32, "{verdict:?}");
    assert!(verdict.model_version.ends_with("+heads@centroid-1"));
    // The verdict says what the candidate would have decided.
    let other = verdict.trial.as_ref().expect("the trial's other side");
    assert!(
        other.model_version.ends_with("+heads@centroid-2"),
        "{other:?}"
    );
    assert_eq!(other.decision, Decision::Hide as i32);
    let info = model_info(&server).await;
    assert_eq!(info.candidate.as_ref().unwrap().version, "centroid-2");
    let trial = info.trial.unwrap();
    assert_eq!(
        (
            trial.compared,
            trial.agreed,
            trial.candidate_stricter,
            trial.decided_by_candidate
        ),
        (1, 0, 1, 0),
        "{trial:?}"
    );
    assert_eq!(trial.candidate_decisions["hide"], 1);
    assert_eq!(trial.active_decisions["allow"], 1);

    // A message the active set holds (a rule) and the candidate would hide: the moderator
    // rejects it, and both sides are counted as agreeing with the ruling.
    let mut held = chat_message("h1", "u9", "check out my mixtape, it is great");
    held.channel = "destinygg".into();
    let verdict = server
        .moderation()
        .classify(ClassifyRequest {
            messages: vec![held],
            ..ClassifyRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .verdicts
        .remove(0);
    assert_eq!(verdict.decision, Decision::Hold as i32, "{verdict:?}");
    server
        .review()
        .resolve_review(modbot::proto::ResolveReviewRequest {
            id: verdict.review_id.clone(),
            ruling: modbot::proto::ReviewRuling::Reject as i32,
            moderator: "mod1".into(),
            action: modbot::proto::ActionKind::Hide as i32,
            label: "spam/promo".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let trial = model_info(&server).await.trial.unwrap();
    assert_eq!(
        (
            trial.compared,
            trial.ruled,
            trial.candidate_agreed_with_rulings,
            trial.active_agreed_with_rulings
        ),
        (2, 1, 1, 1),
        "{trial:?}"
    );

    // A second replica on the same database follows every change without a restart.
    let replica = start_with_model(&model, &heads, configure).await;
    assert_eq!(
        model_info(&replica).await.rollout.unwrap().candidate,
        "centroid-2"
    );

    // A split of every channel: the candidate decides, the active set is its shadow.
    admin()
        .try_model(TryModelRequest {
            mode: TrialMode::Split as i32,
            share: 1.0,
            unit: SplitUnit::Channel as i32,
            ..shadow("centroid-2")
        })
        .await
        .unwrap();
    let verdict = friendly_verdict(&server, "destinygg", "u2").await;
    assert_eq!(verdict.decision, Decision::Hide as i32, "{verdict:?}");
    assert!(verdict.model_version.ends_with("+heads@centroid-2"));
    let other = verdict.trial.as_ref().expect("the active set's side");
    assert!(
        other.model_version.ends_with("+heads@centroid-1"),
        "{other:?}"
    );
    assert_eq!(other.decision, Decision::Allow as i32);
    let trial = model_info(&server).await.trial.unwrap();
    assert_eq!((trial.compared, trial.decided_by_candidate), (3, 1));

    // Only the candidate can be promoted; promotion swaps it in at once.
    let stale = admin()
        .promote_model(PromoteModelRequest {
            version: "wide-1".into(),
            ..PromoteModelRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    let promoted = admin()
        .promote_model(PromoteModelRequest {
            version: "centroid-2".into(),
            reason: "fewer misses in shadow".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            promoted.active.as_str(),
            promoted.previous.as_str(),
            promoted.candidate.as_str(),
            promoted.change.as_str(),
            promoted.reason.as_str()
        ),
        (
            "centroid-2",
            "centroid-1",
            "",
            "promote",
            "fewer misses in shadow"
        )
    );
    let info = model_info(&server).await;
    assert!(info.version.ends_with("+heads@centroid-2"), "{info:?}");
    assert_eq!(info.heads[0].thresholds["insult"], 0.0);
    assert!(info.trial.is_none() && info.candidate.is_none());
    let verdict = friendly_verdict(&server, "another", "u3").await;
    assert_eq!(verdict.decision, Decision::Hide as i32, "{verdict:?}");
    common::eventually("the replica serves the promoted heads", || async {
        let verdict = friendly_verdict(&replica, "another", "u4").await;
        verdict.decision == Decision::Hide as i32
            && verdict.model_version.ends_with("+heads@centroid-2")
    })
    .await;

    // A rollback restores the set the promotion replaced, everywhere.
    let back = admin()
        .rollback_model(RollbackModelRequest {
            reason: "too strict".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (back.active.as_str(), back.previous.as_str(), back.revision),
        ("centroid-1", "centroid-2", 4)
    );
    let verdict = friendly_verdict(&server, "another", "u5").await;
    assert_eq!(verdict.decision, Decision::Allow as i32, "{verdict:?}");
    assert!(verdict.model_version.ends_with("+heads@centroid-1"));
    common::eventually("the replica serves the restored heads", || async {
        friendly_verdict(&replica, "another", "u6").await.decision == Decision::Allow as i32
    })
    .await;

    // A set that disappears from a replica's disk cannot stop it: the heads in force stay,
    // and GetModelInfo says why.
    admin().try_model(shadow("centroid-2")).await.unwrap();
    std::fs::remove_dir_all(registry.join("strict")).unwrap();
    let restarted = start_with_model(&model, &heads, configure).await;
    let info = model_info(&restarted).await;
    assert!(info.version.ends_with("+heads@centroid-1"), "{info:?}");
    let rollout = info.rollout.unwrap();
    assert_eq!(rollout.candidate, "centroid-2");
    assert!(rollout.problem.contains("centroid-2"), "{rollout:?}");
    assert_eq!(
        friendly_verdict(&restarted, "destinygg", "u7")
            .await
            .decision,
        Decision::Allow as i32
    );
    // Once the set is back on disk the replica applies the stored change by itself, without
    // a restart or a new change.
    registered_copy(&heads, &registry.join("strict"), "centroid-2", 0.0);
    common::eventually(
        "the restarted replica applies the trial once its set is back",
        || async {
            let info = model_info(&restarted).await;
            info.rollout.is_some_and(|r| r.problem.is_empty())
                && info.candidate.is_some_and(|c| c.version == "centroid-2")
        },
    )
    .await;
    for server in [server, replica, restarted] {
        server.stop().await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// The console's Model view in a real browser (Debian's Chromium through chromedriver).

/// An admin tries a candidate, watches the trial, promotes it and rolls it back from the
/// console, with a reason and a second click for each fleet-wide change; a moderator sees the
/// same view but cannot change anything, and the server refuses the moderator's call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_tries_promotes_and_rolls_back_a_candidate() {
    use serde_json::json;
    const ADMIN: &str = "model-admin-token-3f1a";
    const MODERATOR: &str = "model-mod-token-9c2e";
    let test = "the_console_tries_promotes_and_rolls_back_a_candidate";
    let Some(model) = model_dir_or_skip(test) else {
        return;
    };
    let Some(browser) = browser::Browser::start(test).await else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let heads = root.path().join("heads");
    write_centroid_heads(&model, &heads);
    let registry = root.path().join("registry");
    registered_copy(&heads, &registry.join("strict"), "centroid-2", 0.0);
    let rules = root.path().join("rules.toml");
    std::fs::write(&rules, RULES_WITH_A_HOLD).unwrap();
    let server = start_with_model(&model, &heads, |config| {
        config.rules.file = rules.clone();
        config.model.registry_dir = registry.clone();
        config.auth.tokens = format!("admin ops {ADMIN}; moderator Mod {MODERATOR}");
    })
    .await;
    let api = server.http().with_bearer(ADMIN);
    let friendly = |user: &str| {
        let api = api.clone();
        let user = user.to_owned();
        async move {
            let reply = api
                .post(
                    "/modbot.v1.Moderation/Classify",
                    &json!({ "messages": [{ "channel": "destinygg", "messageId": format!("m-{user}"),
                        "userId": user, "text": "thanks for the stream, see you all tomorrow" }] }),
                )
                .await;
            assert_eq!(reply.status, 200, "{}", reply.text);
            let verdict: serde_json::Value = serde_json::from_str(&reply.text).unwrap();
            verdict["verdicts"][0]["decision"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let base = format!("http://{}", server.http_addr);
    let sign_in = |token: &'static str, who: &'static str| {
        let browser = &browser;
        let base = base.clone();
        async move {
            browser.client.goto(&format!("{base}/")).await.unwrap();
            browser.type_into("#token", token).await;
            browser.click("#sign-in").await;
            browser.wait_text("#who", who).await;
            browser.press("9").await;
            browser.wait_text("#model-active", "centroid-").await;
        }
    };

    // A moderator sees what decides and what could, but every change is the admins'.
    sign_in(MODERATOR, "Mod (moderator)").await;
    browser.wait_text("#model-versions", "centroid-2").await;
    let disabled = browser
        .eval(
            "return [...document.querySelectorAll('#model-body button')].map(b => [b.textContent, b.disabled]);",
        )
        .await;
    assert_eq!(disabled, json!([["Try", true]]), "{disabled}");
    let refused = browser
        .eval(
            "return fetch('/modbot.v1.Admin/TryModel', { method: 'POST', credentials: 'same-origin', \
             headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': S.session.csrfToken }, \
             body: JSON.stringify({ version: 'centroid-2', mode: 'TRIAL_MODE_SHADOW', reason: 'sneaky' }) }) \
             .then(r => r.status);",
        )
        .await;
    assert_eq!(
        refused,
        json!(403),
        "the server refuses a moderator's change"
    );
    browser.click("#logout").await;
    browser.wait_text("#login-error", "Signed out").await;

    // The admin tries the candidate in shadow: a reason is required.
    sign_in(ADMIN, "ops (admin)").await;
    assert_eq!(
        browser.unlabelled().await,
        json!([]),
        "every control has a label"
    );
    browser.wait_text("#model-candidate", "none").await;
    let try_strict = "#model-versions tr[data-version=\"centroid-2\"] button";
    browser.click(try_strict).await;
    browser.wait_text("#model-error", "Say why").await;
    browser.type_into("#model-reason", "stricter insults").await;
    browser.click(try_strict).await;
    browser.wait_text("#model-candidate", "centroid-2").await;
    browser.wait_text("#model-change", "stricter insults").await;
    browser.wait_text("#model-trial", "shadow").await;
    assert_eq!(
        friendly("u1").await,
        "DECISION_ALLOW",
        "a shadow never decides"
    );
    browser.click("#model-refresh").await;
    browser.wait_text("#trial-compared", "1").await;
    browser.wait_text("#trial-decisions", "hide").await;
    browser.shot("model-trial").await;

    // Promoting takes a second click; then the candidate decides everywhere.
    browser
        .type_into("#model-reason", "fewer misses in the trial")
        .await;
    browser.click("#model-promote").await;
    browser.wait_text("#model-promote", "Confirm").await;
    assert_eq!(
        friendly("u2").await,
        "DECISION_ALLOW",
        "one click changes nothing"
    );
    browser.click("#model-promote").await;
    browser.wait_text("#status", "Promoted centroid-2").await;
    browser.wait_text("#model-active", "centroid-2").await;
    browser.wait_text("#model-candidate", "none").await;
    assert_eq!(friendly("u3").await, "DECISION_HIDE");

    // And the rollback restores the set it replaced.
    browser
        .type_into("#model-reason", "too strict after all")
        .await;
    browser.click("#model-rollback").await;
    browser.click("#model-rollback").await;
    browser
        .wait_text("#status", "Rolled back to centroid-1")
        .await;
    browser.wait_text("#model-active", "centroid-1").await;
    assert_eq!(friendly("u4").await, "DECISION_ALLOW");
    browser.shot("model-rolled-back").await;

    browser.client.clone().close().await.unwrap();
    server.stop().await.unwrap();
}
