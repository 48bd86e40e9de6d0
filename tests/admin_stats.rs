//! `Admin.GetStats` end to end: verdicts from `Classify` and `StreamModerate` counted exactly,
//! by decision, rule and channel; the database's action and appeal counts; bad input.

use crate::common;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use common::{TestServer, assert_invalid_field, chat_message};
use modbot::proto::{
    self, ClassifyRequest, Decision, GetStatsRequest, ReasonSource, StreamModerateRequest,
    chat_event, stream_moderate_request, stream_moderate_response,
};

fn in_channel(channel: &str, id: &str, user: &str, text: &str) -> proto::ChatMessage {
    proto::ChatMessage {
        channel: channel.into(),
        ..chat_message(id, user, text)
    }
}

async fn stats(server: &TestServer, request: GetStatsRequest) -> proto::Stats {
    server
        .admin()
        .get_stats(request)
        .await
        .expect("get stats")
        .into_inner()
}

fn decision_name(decision: i32) -> String {
    Decision::try_from(decision)
        .expect("a known decision")
        .as_str_name()
        .trim_start_matches("DECISION_")
        .to_lowercase()
}

/// What GetStats should say of `verdicts`: messages, decisions by name, reasons by rule id.
struct Expected {
    messages: u64,
    decisions: HashMap<String, u64>,
    rules: HashMap<String, u64>,
}

fn expected<'a>(verdicts: impl IntoIterator<Item = &'a proto::Verdict>) -> Expected {
    let mut expected = Expected {
        messages: 0,
        decisions: HashMap::new(),
        rules: HashMap::new(),
    };
    for verdict in verdicts {
        expected.messages += 1;
        *expected
            .decisions
            .entry(decision_name(verdict.decision))
            .or_default() += 1;
        for reason in &verdict.reasons {
            if reason.source == ReasonSource::Rule as i32 {
                *expected.rules.entry(reason.rule_id.clone()).or_default() += 1;
            }
        }
    }
    expected
}

fn check_counts(
    what: &str,
    window: (u64, &HashMap<String, u64>, &HashMap<String, u64>),
    expected: &Expected,
) {
    let (messages, decisions, rules) = window;
    assert_eq!(messages, expected.messages, "{what}: messages");
    assert_eq!(decisions, &expected.decisions, "{what}: decisions");
    assert_eq!(rules, &expected.rules, "{what}: rules");
}

fn check_stats(what: &str, stats: &proto::Stats, expected: &Expected) {
    check_counts(
        &format!("{what}, period"),
        (stats.messages, &stats.decisions, &stats.rules),
        expected,
    );
    assert!(stats.labels.is_empty(), "{what}: no model, no labels");
    for window in &stats.windows {
        check_counts(
            &format!("{what}, window {}", window.name),
            (window.messages, &window.decisions, &window.rules),
            expected,
        );
        let latency = |d: &Option<prost_types::Duration>| {
            Duration::try_from(d.expect("a latency")).expect("a positive latency")
        };
        let (p50, p90, p99, max) = (
            latency(&window.latency_p50),
            latency(&window.latency_p90),
            latency(&window.latency_p99),
            latency(&window.latency_max),
        );
        if expected.messages > 0 {
            assert!(
                Duration::ZERO < p50 && p50 <= p90 && p90 <= p99 && p99 <= max,
                "{what}, window {}: {p50:?} {p90:?} {p99:?} {max:?}",
                window.name
            );
        }
        assert!(window.degraded_verdicts.is_empty() && window.degraded_time.is_empty());
    }
}

#[tokio::test]
async fn classify_verdicts_are_counted_exactly_by_decision_rule_and_channel() {
    let server = TestServer::start(|_| {}).await;
    let started = SystemTime::now();
    let empty = stats(&server, GetStatsRequest::default()).await;
    assert_eq!(empty.messages, 0);
    assert!(empty.decisions.is_empty() && empty.rules.is_empty());

    let mut verdicts = server
        .classify(vec![
            chat_message("m1", "alice", "great stream today"),
            chat_message("m2", "adbot", "Buy followers, cheap viewers"),
            chat_message("m3", "spammer", "FREE nitro at scam dot link"),
            in_channel("strims", "s1", "bob", "hello strims"),
            in_channel("strims", "s2", "adbot", "Buy followers, cheap viewers"),
        ])
        .await;
    // The scam's first offence is a warning carried out as a hide (a scam is harmful); the same
    // spammer again: no second warning, the rule's timeout.
    verdicts.extend(
        server
            .classify(vec![chat_message("m4", "spammer", "free nitro again")])
            .await,
    );
    let decisions: Vec<String> = verdicts.iter().map(|v| decision_name(v.decision)).collect();
    assert_eq!(
        decisions,
        ["allow", "hide", "hide", "allow", "hide", "timeout"],
        "the messages decide as designed"
    );

    let all = stats(&server, GetStatsRequest::default()).await;
    let expected_all = expected(&verdicts);
    assert_eq!(expected_all.rules["scam-giveaway"], 2);
    assert_eq!(expected_all.rules["view-botting-ads"], 2);
    check_stats("all channels", &all, &expected_all);
    let names: Vec<_> = all.windows.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["1m", "5m", "1h"], "shortest first, no since window");
    let lengths: Vec<_> = all
        .windows
        .iter()
        .map(|w| Duration::try_from(w.length.expect("a length")).expect("positive"))
        .collect();
    assert!(lengths.windows(2).all(|l| l[0] <= l[1]), "{lengths:?}");

    let destinygg = stats(
        &server,
        GetStatsRequest {
            channel: "destinygg".into(),
            since: None,
        },
    )
    .await;
    check_stats(
        "destinygg",
        &destinygg,
        &expected(verdicts.iter().filter(|v| v.channel == "destinygg")),
    );
    let strims = stats(
        &server,
        GetStatsRequest {
            channel: "strims".into(),
            since: None,
        },
    )
    .await;
    check_stats(
        "strims",
        &strims,
        &expected(verdicts.iter().filter(|v| v.channel == "strims")),
    );
    assert_eq!(strims.messages, 2);
    let nowhere = stats(
        &server,
        GetStatsRequest {
            channel: "nowhere".into(),
            since: None,
        },
    )
    .await;
    check_stats("nowhere", &nowhere, &expected([]));

    // A recent `since` adds a "since" window, from the start of its minute.
    let since = stats(
        &server,
        GetStatsRequest {
            channel: String::new(),
            since: Some((SystemTime::now() - Duration::from_secs(30)).into()),
        },
    )
    .await;
    let names: Vec<_> = since.windows.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["1m", "5m", "1h", "since"]);
    check_stats("since 30 s ago", &since, &expected_all);
    // One from before the replica started covers everything since it started.
    let long_ago = stats(
        &server,
        GetStatsRequest {
            channel: String::new(),
            since: Some(prost_types::Timestamp {
                seconds: 946_684_800, // 2000-01-01
                nanos: 0,
            }),
        },
    )
    .await;
    check_stats("since 2000", &long_ago, &expected_all);
    assert_eq!(long_ago.since, long_ago.replica_started_at);

    // The rest of the answer.
    let started_at = SystemTime::try_from(all.replica_started_at.expect("a start")).unwrap();
    assert!(
        started_at <= started,
        "the replica started counting before the first call"
    );
    assert_eq!(
        all.since, all.replica_started_at,
        "the period is since the start"
    );
    assert!(
        all.replica.ends_with(&format!("/{}", std::process::id())),
        "replica {:?} is host/pid",
        all.replica
    );
    assert_eq!(all.queue_depth, 0, "no model");
    assert_eq!(all.cache_hit_ratio, 0.0);
    // A dry run is not traffic: it is not counted.
    server
        .moderation()
        .classify(ClassifyRequest {
            messages: vec![chat_message("dry-1", "tester", "FREE NITRO here")],
            options: Some(proto::ClassifyOptions {
                dry_run: true,
                ..proto::ClassifyOptions::default()
            }),
        })
        .await
        .expect("a dry run");
    assert_eq!(
        stats(&server, GetStatsRequest::default()).await.messages,
        all.messages
    );

    // Actions and appeals come from the database (every replica's).
    let store = server.store().await;
    let counts = |map: std::collections::BTreeMap<String, u64>| -> HashMap<String, u64> {
        map.into_iter().collect()
    };
    assert_eq!(
        all.actions,
        counts(store.action_counts(None, None).await.unwrap())
    );
    assert_eq!(
        all.appeals,
        counts(store.appeal_counts(None, None).await.unwrap())
    );
    assert_eq!(
        strims.actions,
        counts(store.action_counts(Some("strims"), None).await.unwrap())
    );
    store.close().await;

    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn stream_verdicts_are_counted_too() {
    let server = TestServer::start(|_| {}).await;
    let (tx, mut responses) = common::bridge(&server, "test-bridge").await;
    let texts = ["hello chat", "Buy followers, cheap viewers", "what a game"];
    for (i, text) in texts.iter().enumerate() {
        let mut message = chat_message(&format!("e{i}"), &format!("user{i}"), text);
        message.channel.clear();
        tx.send(StreamModerateRequest {
            kind: Some(stream_moderate_request::Kind::Event(proto::ChatEvent {
                channel: "destinygg".into(),
                kind: Some(chat_event::Kind::Message(message)),
            })),
        })
        .await
        .unwrap();
    }
    let mut verdicts = Vec::new();
    while verdicts.len() < texts.len() {
        let response = responses.message().await.unwrap().expect("a response");
        if let Some(stream_moderate_response::Kind::Verdict(verdict)) = response.kind {
            verdicts.push(verdict);
        }
    }
    // A verdict is counted before it is sent, so the counts are complete now.
    let all = stats(&server, GetStatsRequest::default()).await;
    check_stats("a stream", &all, &expected(&verdicts));
    assert_eq!(all.decisions["hide"], 1);
    drop(tx);
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn degraded_verdicts_and_time_are_counted() {
    // Nothing listens there: every verdict is decided with this replica's own user state.
    let server =
        TestServer::start(|config| config.redis.url = "redis://127.0.0.1:1/0".into()).await;
    let verdicts = server
        .classify(
            (0..5)
                .map(|i| chat_message(&format!("m{i}"), "alice", &format!("message number {i}")))
                .collect(),
        )
        .await;
    assert!(
        verdicts
            .iter()
            .all(|v| v.degraded == [proto::DegradedComponent::UserState as i32])
    );
    let all = stats(&server, GetStatsRequest::default()).await;
    for window in &all.windows {
        assert_eq!(
            window.degraded_verdicts,
            HashMap::from([("user_state".to_owned(), 5)]),
            "window {}",
            window.name
        );
        let time = Duration::try_from(window.degraded_time["user_state"]).unwrap();
        // One call, decided in well under a second: one or two distinct seconds.
        assert!(
            time == Duration::from_secs(1) || time == Duration::from_secs(2),
            "window {}: {time:?}",
            window.name
        );
    }
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn bad_channel_or_since_is_invalid_argument_naming_the_field() {
    let server = TestServer::start(|_| {}).await;
    let future = SystemTime::now() + Duration::from_secs(3600);
    let cases = [
        (
            GetStatsRequest {
                channel: "x".repeat(257),
                since: None,
            },
            "channel: 257 bytes exceed the limit of 256 bytes",
        ),
        (
            GetStatsRequest {
                channel: "dgg\n".into(),
                since: None,
            },
            "channel: must not contain control characters",
        ),
        (
            GetStatsRequest {
                channel: String::new(),
                since: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 2_000_000_000,
                }),
            },
            "since: is not a valid time",
        ),
        (
            GetStatsRequest {
                channel: String::new(),
                since: Some(prost_types::Timestamp {
                    seconds: i64::MAX,
                    nanos: 0,
                }),
            },
            "since: is not a valid time",
        ),
        (
            GetStatsRequest {
                channel: "destinygg".into(),
                since: Some(future.into()),
            },
            "since: is in the future",
        ),
    ];
    for (request, message) in cases {
        let status = server
            .admin()
            .get_stats(request.clone())
            .await
            .expect_err("refused");
        assert_invalid_field(&status, message);
    }
    server.stop().await.expect("clean stop");
}
