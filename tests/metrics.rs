//! Metrics, read from a Prometheus recorder installed for this test binary alone (the
//! recorder is process-global): calls counted by RPC and status when they end, trailers-only
//! refusals (auth, bad input) and streams included, durations as histograms; verdicts by
//! decision and reason, degraded verdicts and the degraded gauges, actions by status.
//!
//! The tests take turns (`SERIAL`): the degraded gauges belong to the process, and each
//! server sets them at start.

mod common;

use common::{TestServer, bearer, chat_message};
use metrics_exporter_prometheus::PrometheusHandle;
use modbot::proto::moderation_client::ModerationClient;
use modbot::proto::{ClassifyRequest, StreamModerateRequest};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The recorder of this process, installed by the first test that asks.
fn recorder() -> &'static PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        modbot::telemetry::prometheus_builder()
            .install_recorder()
            .expect("the only recorder in this process")
    })
}

/// The value of the sample line that starts with `prefix` (name and labels), if any.
fn sample(rendered: &str, prefix: &str) -> Option<f64> {
    rendered
        .lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_counted_by_rpc_and_status_with_duration_histograms() {
    let _turn = SERIAL.lock().await;
    let handle = recorder();
    // The other test's calls are counted too: compare with what was there before.
    let before = handle.render();
    const TOKEN: &str = "service-token-0123456789";
    let server = TestServer::start(|config| {
        config.auth.tokens =
            format!("classifier,bridge svc {TOKEN} bridge_ids=b1 channels=destinygg");
    })
    .await;
    let mut client = ModerationClient::with_interceptor(server.channel.clone(), bearer(TOKEN));
    for _ in 0..3 {
        client
            .classify(ClassifyRequest {
                messages: vec![chat_message("m1", "alice", "hello there")],
                options: None,
            })
            .await
            .expect("Classify");
    }
    let bad = client
        .classify(ClassifyRequest::default())
        .await
        .expect_err("no messages");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let refused = server
        .moderation()
        .classify(ClassifyRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    // A stream that fails its hello, and one that ends cleanly.
    let (tx, rx) = tokio::sync::mpsc::channel::<StreamModerateRequest>(1);
    drop(tx);
    let no_hello = client
        .stream_moderate(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect_err("a stream without a hello");
    assert_eq!(no_hello.code(), tonic::Code::InvalidArgument);

    // The counts are recorded when a call ends, which for the last one may be a moment after
    // the client saw its answer.
    let expect = [
        (
            "modbot_grpc_requests_total{rpc=\"Moderation/Classify\",code=\"ok\"}",
            3.0,
        ),
        (
            "modbot_grpc_requests_total{rpc=\"Moderation/Classify\",code=\"invalid_argument\"}",
            1.0,
        ),
        (
            "modbot_grpc_requests_total{rpc=\"Moderation/Classify\",code=\"unauthenticated\"}",
            1.0,
        ),
        (
            "modbot_grpc_requests_total{rpc=\"Moderation/StreamModerate\",code=\"invalid_argument\"}",
            1.0,
        ),
        (
            "modbot_grpc_request_duration_seconds_count{rpc=\"Moderation/Classify\"}",
            5.0,
        ),
        (
            "modbot_grpc_requests_in_flight{rpc=\"Moderation/Classify\"}",
            0.0,
        ),
    ];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let rendered = handle.render();
        let missing: Vec<_> = expect
            .iter()
            .filter(|(prefix, value)| {
                sample(&rendered, prefix)
                    .is_none_or(|now| now - sample(&before, prefix).unwrap_or(0.0) != *value)
            })
            .collect();
        if missing.is_empty() {
            assert!(
                rendered.contains(
                    "modbot_grpc_request_duration_seconds_bucket{rpc=\"Moderation/Classify\",le=\"0.001\"}"
                ),
                "durations are histograms with modbot's buckets:\n{rendered}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not as expected: {missing:?}\n{rendered}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.stop().await.expect("a clean stop");
}

/// The value of the sample of `name` whose labels include every one of `labels` (0 when there
/// is none yet: a counter not yet incremented).
fn value(rendered: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    rendered
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_reasons_degraded_components_and_actions_are_counted() {
    let _turn = SERIAL.lock().await;
    let handle = recorder();
    let dir = tempfile::tempdir().unwrap();
    // Redis not listening and the model missing: both degraded from the start.
    let server = TestServer::start(|config| {
        config.redis.url = "redis://127.0.0.1:1/0".into();
        config.model.dir = dir.path().join("no-model");
        config.model.fetch_if_missing = false;
    })
    .await;
    let before = handle.render();
    let verdicts = server
        .moderation()
        .classify(ClassifyRequest {
            messages: vec![
                chat_message("m1", "spammer", "buy followers here"),
                chat_message("m2", "alice", "hello there friends"),
            ],
            options: None,
        })
        .await
        .expect("Classify")
        .into_inner()
        .verdicts;
    let hide = &verdicts[0];
    assert_eq!(hide.decision, modbot::proto::Decision::Hide as i32);
    let rule = hide.reasons[0].rule_id.clone();
    assert!(!rule.is_empty(), "{hide:?}");
    let after = handle.render();
    let delta = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    let checks = [
        (delta("modbot_verdicts_total", &[("decision", "hide")]), 1.0),
        (
            delta("modbot_verdicts_total", &[("decision", "allow")]),
            1.0,
        ),
        (
            delta(
                "modbot_verdict_reasons_total",
                &[("kind", "rule"), ("reason", &rule), ("mode", "enforce")],
            ),
            1.0,
        ),
        (
            delta(
                "modbot_verdicts_degraded_total",
                &[("component", "user_state")],
            ),
            2.0,
        ),
        (
            delta("modbot_verdicts_degraded_total", &[("component", "model")]),
            verdicts
                .iter()
                .filter(|v| {
                    v.degraded
                        .contains(&(modbot::proto::DegradedComponent::Model as i32))
                })
                .count() as f64,
        ),
        (delta("modbot_decision_seconds_count", &[]), 2.0),
        // A Classify verdict's hide is recorded, not sent (the default `classify_actions`).
        (
            delta("modbot_actions_total", &[("status", "recorded")]),
            1.0,
        ),
        (delta("modbot_actions_total", &[("status", "pending")]), 0.0),
        (
            value(&after, "modbot_degraded", &[("component", "user_state")]),
            1.0,
        ),
        (
            value(&after, "modbot_degraded", &[("component", "store")]),
            0.0,
        ),
        (
            value(&after, "modbot_degraded", &[("component", "model")]),
            1.0,
        ),
    ];
    for (i, (got, want)) in checks.iter().enumerate() {
        assert_eq!(got, want, "check {i}:\n{after}");
    }
    assert!(
        verdicts[1]
            .degraded
            .contains(&(modbot::proto::DegradedComponent::Model as i32)),
        "the harmless message needed the model: {:?}",
        verdicts[1]
    );
    assert!(
        after.contains("modbot_decision_seconds_bucket{le=\"0.001\"}"),
        "decision time is a histogram:\n{after}"
    );
    server.stop().await.expect("a clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_in_memory_follow_the_users_held() {
    use modbot::domain::Observation;
    use modbot::infra::users::{MemoryState, StateOptions};
    let _turn = SERIAL.lock().await;
    let handle = recorder();
    let users = || sample(&handle.render(), "modbot_users_in_memory ").unwrap_or(0.0);
    let before = users();
    let config = StateOptions {
        max_users: 64,
        idle_ttl: std::time::Duration::from_secs(60),
        ..StateOptions::default()
    };
    let state = MemoryState::new(config);
    let observe = |user: usize, at_ms: i64| {
        let user_id = format!("u{user}");
        let _ = state.observe(&Observation {
            channel: "destinygg",
            user_id: &user_id,
            message_id: &format!("m{user}-{at_ms}"),
            text: "hello chat",
            at_ms,
        });
    };
    let t0 = 1_700_000_000_000;
    for user in 0..10 {
        observe(user, t0);
        observe(user, t0 + 1); // a user seen again is not counted again
    }
    assert_eq!(users() - before, 10.0);
    // Past the bound, the least recently seen go: the gauge stays at what is held.
    for user in 10..500 {
        observe(user, t0 + 2 + user as i64);
    }
    assert_eq!(users() - before, state.len() as f64);
    assert!(state.len() <= 64, "{}", state.len());
    // Expired users are forgotten by a sweep, and a dropped state takes its users with it.
    let forgotten = state.sweep(t0 + 10 * 60 * 1000);
    assert!(forgotten > 0);
    assert_eq!(users() - before, state.len() as f64);
    observe(1, t0 + 10 * 60 * 1000);
    assert_eq!(users() - before, state.len() as f64);
    drop(state);
    assert_eq!(users() - before, 0.0);
}

/// The label values of `rpc` in the rendered metrics.
fn rpc_labels(rendered: &str) -> std::collections::BTreeSet<String> {
    rendered
        .lines()
        .filter(|line| line.starts_with("modbot_grpc_"))
        .filter_map(|line| line.split("rpc=\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_paths_add_no_label_sets() {
    let _turn = SERIAL.lock().await;
    let handle = recorder();
    let server = TestServer::start(|config| {
        config.auth.tokens = "admin ops admin-token-0123456789".into();
    })
    .await;
    // The label sets before the junk, after one call of a real method (so its labels exist).
    server
        .moderation()
        .classify(ClassifyRequest::default())
        .await
        .expect_err("no token");
    // (series of known methods, series of `unknown`)
    let series = |rendered: &str| {
        let lines = rendered
            .lines()
            .filter(|line| line.starts_with("modbot_grpc_"));
        let unknown = lines
            .clone()
            .filter(|line| line.contains("rpc=\"unknown\""))
            .count();
        (lines.count() - unknown, unknown)
    };
    let before = handle.render();
    // Thousands of unauthenticated calls of paths the server does not serve, in modbot's
    // package and others', each well-formed `/package.Service/Method`.
    const JUNK: usize = 3000;
    let mut grpc = tonic::client::Grpc::new(server.channel.clone());
    for i in 0..JUNK {
        let path = match i % 3 {
            0 => format!("/modbot.v1.Moderation/Junk{i}"),
            1 => format!("/modbot.v1.Junk{i}/Classify"),
            _ => format!("/grpc.health.v1.Health{i}/Check"),
        };
        grpc.ready().await.expect("the channel is ready");
        let status = grpc
            .unary(
                tonic::Request::new(()),
                http::uri::PathAndQuery::try_from(path.as_str()).unwrap(),
                tonic_prost::ProstCodec::<(), ()>::default(),
            )
            .await
            .expect_err("junk is refused");
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{path}");
    }
    // Every junk call is counted under `unknown`; none made a label set of its own.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let after = loop {
        let after = handle.render();
        let junk = value(&after, "modbot_grpc_requests_total", &[("rpc", "unknown")])
            - value(&before, "modbot_grpc_requests_total", &[("rpc", "unknown")]);
        if junk == JUNK as f64 {
            break after;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{junk} of {JUNK} junk calls counted as unknown"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let new_labels: Vec<String> = rpc_labels(&after)
        .difference(&rpc_labels(&before))
        .cloned()
        .collect();
    assert!(
        new_labels.iter().all(|label| label == "unknown"),
        "junk made labels: {new_labels:?}"
    );
    // Known methods' series are as they were; `unknown` has one counter, one gauge and one
    // histogram (its buckets, sum and count), not thousands.
    let ((known_before, _), (known_after, unknown_after)) = (series(&before), series(&after));
    assert_eq!(known_after, known_before);
    assert!(
        unknown_after <= 40,
        "{unknown_after} series of `unknown` after {JUNK} junk calls"
    );
    server.stop().await.expect("a clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletions_are_counted_by_table() {
    use std::time::{Duration, SystemTime};

    use modbot::infra::store::{ConnectOptions, Feedback, FeedbackSource, Store};
    use modbot::service::retention::{RetentionPolicy, run_pass};
    let _turn = SERIAL.lock().await;
    let handle = recorder();
    let deleted = |table: &str| {
        value(
            &handle.render(),
            "modbot_retention_deleted_total",
            &[("table", table)],
        )
    };
    let before = (deleted("feedback"), deleted("ruleset_history"));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(
        &format!("sqlite://{}/modbot.db", dir.path().display()),
        &ConnectOptions {
            max_connections: 2,
            connect_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(5),
        },
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let now = SystemTime::now() + Duration::from_secs(100 * 86_400);
    for id in ["f1", "f2"] {
        let example = Feedback {
            id: id.into(),
            created_at: SystemTime::now(),
            channel: "c".into(),
            user_id: "u".into(),
            message_id: id.into(),
            text: "text".into(),
            label: "toxicity/insult".into(),
            positive: true,
            source: FeedbackSource::ModeratorAction,
            actor: "mod".into(),
            action: "timeout".into(),
        };
        assert!(store.record_feedback(&example).await.unwrap());
    }
    let spec = |id: &str| format!("id = \"{id}\"\n");
    store
        .seed_ruleset(
            &[("r1".into(), spec("r1")), ("r2".into(), spec("r2"))],
            &[],
            "seed",
        )
        .await
        .unwrap();
    store.upsert_rule("r3", &spec("r3"), "admin").await.unwrap();
    let keep = Some(Duration::from_secs(30 * 86_400));
    let policy = RetentionPolicy {
        audit: keep,
        actions: keep,
        feedback: keep,
        rule_history: keep,
        batch_rows: 10,
    };
    let running = tokio::sync::watch::channel(false).1;
    run_pass(&store, &policy, now, &running).await.unwrap();
    assert_eq!(deleted("feedback") - before.0, 2.0);
    assert_eq!(
        deleted("ruleset_history") - before.1,
        2.0,
        "the seed's two rows; the latest revision stays"
    );
    store.close().await;
}

/// A panic while deciding is counted by stage, and its verdict as degraded by `decision`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_while_deciding_are_counted() {
    let _turn = SERIAL.lock().await;
    let handle = recorder();
    let rules = tempfile::tempdir().unwrap();
    let file = common::faulty_rules_file(rules.path());
    let server = TestServer::start(|config| config.rules.file = file).await;
    let before = handle.render();
    let verdicts = server
        .moderation()
        .classify(ClassifyRequest {
            messages: vec![
                chat_message("m1", "alice", modbot::fault::PANIC_PHRASE),
                chat_message("m2", "bob", modbot::fault::PANIC_TEXT),
                chat_message("m3", "carol", "hello there friends"),
            ],
            options: None,
        })
        .await
        .expect("Classify")
        .into_inner()
        .verdicts;
    assert_eq!(verdicts.len(), 3);
    let after = handle.render();
    let delta = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    assert_eq!(
        delta("modbot_decision_panics_total", &[("stage", "rule")]),
        1.0
    );
    assert_eq!(
        delta("modbot_decision_panics_total", &[("stage", "message")]),
        1.0
    );
    assert_eq!(
        delta(
            "modbot_verdicts_degraded_total",
            &[("component", "decision")]
        ),
        2.0
    );
    server.stop().await.expect("a clean stop");
}
