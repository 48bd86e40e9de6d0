//! The gRPC API end to end: a real server on an ephemeral port, the generated Rust client.

use crate::common;

use common::{PgSchema, TestServer, assert_invalid_field, chat_message};
use modbot::infra::store::AuditQuery;
use modbot::proto::{self, ClassifyOptions, ClassifyRequest, Decision};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;

fn classify(messages: Vec<proto::ChatMessage>) -> ClassifyRequest {
    ClassifyRequest {
        messages,
        options: None,
    }
}

async fn audit_count(server: &TestServer) -> usize {
    let store = server.store().await;
    let count = store
        .audit_log(&AuditQuery {
            limit: 1000,
            ..AuditQuery::default()
        })
        .await
        .expect("read the audit log")
        .len();
    store.close().await;
    count
}

#[tokio::test]
async fn health_reports_every_service_serving() {
    let server = TestServer::start(|_| {}).await;
    let mut health = server.health();
    for service in [
        "",
        "modbot.v1.Moderation",
        "modbot.v1.Actions",
        "modbot.v1.Appeals",
        "modbot.v1.Admin",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("health of `{service}`: {e}"))
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service `{service}`");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "nope.Service".into(),
        })
        .await
        .expect_err("unknown services are NOT_FOUND");
    assert_eq!(unknown.code(), Code::NotFound);
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn reflection_lists_the_api() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let server = TestServer::start(|_| {}).await;
    let mut reflection = ServerReflectionClient::new(server.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("a response")
        .expect("one message");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("expected a service list, got {response:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "modbot.v1.Moderation",
        "modbot.v1.Actions",
        "modbot.v1.Appeals",
        "modbot.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn classify_decides_explains_and_audits() {
    let server = TestServer::start(|_| {}).await;
    let mut client = server.moderation();
    let response = client
        .classify(ClassifyRequest {
            messages: vec![
                chat_message("m1", "alice", "great stream today"),
                chat_message("m2", "spammer", "get your 🎁 FREE   Nitro at scam dot link"),
                chat_message("m3", "adbot", "Buy followers, cheap viewers"),
            ],
            options: Some(ClassifyOptions {
                include_normalized_text: true,
                ..ClassifyOptions::default()
            }),
        })
        .await
        .expect("classify")
        .into_inner();
    let verdicts = response.verdicts;
    assert_eq!(verdicts.len(), 3, "one verdict per message");
    let ids: Vec<_> = verdicts.iter().map(|v| v.message_id.as_str()).collect();
    assert_eq!(ids, ["m1", "m2", "m3"], "in request order");

    let allow = &verdicts[0];
    assert_eq!(allow.decision, Decision::Allow as i32);
    assert!(allow.reasons.is_empty() && allow.enforced);
    assert_eq!(allow.normalized_text, "great stream today");

    // A first offence: the rule asks for a timeout, escalation makes it a warning, carried out
    // as a hide because the scam rule is harmful.
    let warned = &verdicts[1];
    assert_eq!(warned.decision, Decision::Hide as i32);
    assert!(warned.duration.is_none());
    assert!(warned.enforced);
    assert_eq!(warned.channel, "destinygg");
    assert_eq!(warned.user_id, "spammer");
    assert_eq!(warned.reasons[0].label, "harm-hidden");
    assert_eq!(
        warned.reasons[1].source,
        proto::ReasonSource::Escalation as i32
    );
    let reason = &warned.reasons[2];
    assert!(reason.harmful);
    assert_eq!(reason.rule_id, "scam-giveaway");
    assert_eq!(reason.decision, Decision::Timeout as i32);
    assert_eq!(reason.duration.map(|d| d.seconds), Some(600));
    assert_eq!(reason.source, proto::ReasonSource::Rule as i32);
    let evidence = reason.evidence.as_ref().expect("evidence");
    assert_eq!(
        evidence.matched_text, "FREE   Nitro",
        "evidence shows what the user typed"
    );
    assert_eq!(evidence.pattern, "free nitro");
    let span = evidence.span.expect("a span");
    let typed: String = "get your 🎁 FREE   Nitro at scam dot link"
        .chars()
        .skip(span.start as usize)
        .take((span.end - span.start) as usize)
        .collect();
    assert_eq!(
        typed, "FREE   Nitro",
        "the span indexes code points of the original"
    );
    assert!(warned.elapsed.is_some());

    let hide = &verdicts[2];
    assert_eq!(hide.decision, Decision::Hide as i32);
    assert_eq!(hide.reasons[0].rule_id, "view-botting-ads");
    assert!(hide.duration.is_none());

    // Only the two notable verdicts are in the audit log; the allowed message is not stored.
    let store = server.store().await;
    let log = store
        .audit_log(&AuditQuery {
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    let mut logged: Vec<_> = log.iter().map(|r| r.message.message_id.as_str()).collect();
    logged.sort();
    assert_eq!(logged, ["m2", "m3"]);
    let m2 = log.iter().find(|r| r.message.message_id == "m2").unwrap();
    assert_eq!(m2.message.text, "get your 🎁 FREE   Nitro at scam dot link");
    // After the hide and the softening, the rule's reason and its evidence.
    assert_eq!(m2.verdict.reasons[2].evidence.matched_text, "FREE   Nitro");
    store.close().await;

    // The same user again, in a later call: no more warnings, the rule's own timeout.
    let again = client
        .classify(classify(vec![chat_message(
            "m4",
            "spammer",
            "free nitro again",
        )]))
        .await
        .expect("classify")
        .into_inner()
        .verdicts;
    assert_eq!(again[0].decision, Decision::Timeout as i32);
    assert_eq!(again[0].duration.map(|d| d.seconds), Some(600));
    server.stop().await.expect("clean stop");
}

/// A panic while deciding one message of a call costs that message alone: a rule that panics
/// is skipped (the others still act) and a message that cannot be decided at all is held,
/// both marked `DEGRADED_COMPONENT_DECISION`; the call's other messages are decided as usual.
#[tokio::test]
async fn a_panic_deciding_one_message_degrades_only_that_verdict() {
    let rules = tempfile::tempdir().unwrap();
    let file = common::faulty_rules_file(rules.path());
    let server = TestServer::start(|config| config.rules.file = file).await;
    let mut client = server.moderation();
    let fault = modbot::fault::PANIC_PHRASE;
    let calls = [
        // The middle one trips a rule that panics, and also a rule that fires.
        format!("free nitro here, {fault}"),
        // The middle one panics outside every rule.
        format!("hello {}", modbot::fault::PANIC_TEXT),
    ];
    for (call, middle) in calls.iter().enumerate() {
        let verdicts = client
            .classify(classify(vec![
                // Users of their own in each call, so the repetition rule stays out of it.
                chat_message(&format!("a{call}"), &format!("alice{call}"), "great stream"),
                chat_message(&format!("b{call}"), &format!("bob{call}"), middle),
                chat_message(
                    &format!("c{call}"),
                    &format!("carol{call}"),
                    "buy followers",
                ),
            ]))
            .await
            .expect("the call succeeds")
            .into_inner()
            .verdicts;
        assert_eq!(verdicts.len(), 3, "one verdict per message");
        let (first, panicked, last) = (&verdicts[0], &verdicts[1], &verdicts[2]);
        assert_eq!(first.decision, Decision::Allow as i32, "{first:?}");
        assert!(first.degraded.is_empty(), "{first:?}");
        assert_eq!(last.decision, Decision::Hide as i32);
        assert_eq!(last.reasons[0].rule_id, "view-botting-ads");
        assert!(last.degraded.is_empty(), "{last:?}");
        assert_eq!(
            panicked.degraded,
            [proto::DegradedComponent::Decision as i32],
            "{panicked:?}"
        );
        if call == 0 {
            // The rule that panicked is skipped; the scam rule still fires (a first offence's
            // warning, which hides harm): never a silent allow.
            assert_eq!(panicked.decision, Decision::Hide as i32, "{panicked:?}");
            let ids: Vec<_> = panicked
                .reasons
                .iter()
                .map(|r| r.rule_id.as_str())
                .collect();
            assert!(
                ids.contains(&"scam-giveaway") && !ids.contains(&"fault"),
                "{ids:?}"
            );
        } else {
            assert_eq!(panicked.decision, Decision::Hold as i32, "{panicked:?}");
            assert!(panicked.enforced);
            assert_eq!(panicked.reasons.len(), 1);
            assert_eq!(panicked.reasons[0].label, "undecided");
        }
    }
    // The held message is in the audit log for review, marked degraded.
    let store = server.store().await;
    let log = store
        .audit_log(&AuditQuery {
            limit: 20,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    let held = log
        .iter()
        .find(|r| r.message.message_id == "b1")
        .expect("the held message is audited");
    assert_eq!(held.verdict.degraded, [modbot::domain::Degraded::Decision]);
    store.close().await;
    server.stop().await.expect("clean stop");
}

/// A regex rule whose phrases have capture groups (and one group name twice) names the phrase
/// that matched: before, a message with the second phrase reset the call.
#[tokio::test]
async fn regex_rules_with_capture_groups_name_the_phrase_that_matched() {
    let rules = tempfile::tempdir().unwrap();
    let file = common::faulty_rules_file(rules.path());
    let server = TestServer::start(|config| config.rules.file = file).await;
    let verdicts = server
        .moderation()
        .classify(classify(vec![
            chat_message("m1", "alice", "look, SPAMWORD"),
            chat_message("m2", "bob", "a spammer"),
            chat_message("m3", "carol", "cheap nitro"),
        ]))
        .await
        .expect("the call succeeds")
        .into_inner()
        .verdicts;
    let patterns: Vec<_> = verdicts
        .iter()
        .map(|v| {
            let reason = v
                .reasons
                .iter()
                .find(|r| r.rule_id == "groups")
                .expect("fired");
            let evidence = reason.evidence.as_ref().expect("evidence");
            (evidence.pattern.as_str(), evidence.matched_text.as_str())
        })
        .collect();
    assert_eq!(
        patterns,
        [
            ("(?P<w>spam)word", "SPAMWORD"),
            ("(?P<w>spam)mer", "spammer"),
            ("(free|cheap) nitro", "cheap nitro"),
        ]
    );
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn dry_run_decides_but_writes_nothing() {
    let server = TestServer::start(|_| {}).await;
    let verdicts = server
        .moderation()
        .classify(ClassifyRequest {
            messages: vec![chat_message("m1", "spammer", "free nitro")],
            options: Some(ClassifyOptions {
                dry_run: true,
                ..ClassifyOptions::default()
            }),
        })
        .await
        .expect("classify")
        .into_inner()
        .verdicts;
    assert_eq!(verdicts[0].decision, Decision::Hide as i32);
    assert!(!verdicts[0].enforced, "dry runs are never enforced");
    assert!(verdicts[0].normalized_text.is_empty(), "not asked for");
    assert_eq!(audit_count(&server).await, 0);
    // Nor was the user's history touched: the real message is still a first offence.
    let real = server
        .moderation()
        .classify(classify(vec![chat_message("m2", "spammer", "free nitro")]))
        .await
        .expect("classify")
        .into_inner()
        .verdicts;
    assert_eq!(real[0].decision, Decision::Hide as i32);
    assert!(real[0].enforced);
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_the_field_and_writes_nothing() {
    let server = TestServer::start(|config| {
        config.grpc.max_messages_per_call = 3;
        config.grpc.max_text_bytes = 32;
    })
    .await;
    let mut client = server.moderation();
    let good = || chat_message("ok", "alice", "free nitro");
    let with = |edit: fn(&mut proto::ChatMessage)| {
        let mut message = chat_message("bad", "bob", "free nitro");
        edit(&mut message);
        // A good, notable message first: it must not be written either.
        vec![good(), message]
    };
    let cases: Vec<(Vec<proto::ChatMessage>, &str)> = vec![
        (vec![], "messages: at least one message is required"),
        (
            vec![good(), good(), good(), good()],
            "messages: 4 messages exceed the limit of 3 per call",
        ),
        (
            with(|m| m.channel.clear()),
            "messages[1].channel: is required",
        ),
        (
            with(|m| m.message_id = "  ".into()),
            "messages[1].message_id: is required",
        ),
        (
            with(|m| m.user_id.clear()),
            "messages[1].user_id: is required",
        ),
        (
            with(|m| m.text.clear()),
            "messages[1].text: must not be empty",
        ),
        (
            with(|m| m.text = " \n\t ".into()),
            "messages[1].text: must not be empty",
        ),
        (
            with(|m| m.text = "x".repeat(33)),
            "messages[1].text: 33 bytes exceed the limit of 32 bytes",
        ),
        (
            with(|m| m.channel = "c".repeat(257)),
            "messages[1].channel: 257 bytes exceed the limit of 256 bytes",
        ),
        (
            with(|m| m.nick = "a\u{0}b".into()),
            "messages[1].nick: must not contain control characters",
        ),
        (
            with(|m| m.roles = vec!["moderator".into(), String::new()]),
            "messages[1].roles[1]: must be 1 to 64 bytes",
        ),
        (
            with(|m| {
                m.sent_at = Some(prost_types::Timestamp {
                    seconds: 0,
                    nanos: -5,
                })
            }),
            "messages[1].sent_at: is not a valid time",
        ),
    ];
    for (messages, expected) in cases {
        let status = client
            .classify(classify(messages))
            .await
            .expect_err(&format!("should be rejected: {expected}"));
        assert_invalid_field(&status, expected);
    }
    assert_eq!(
        audit_count(&server).await,
        0,
        "nothing of a rejected request is written"
    );

    // The limits are exactly inclusive.
    let mut at_limit = chat_message("m", "alice", "free nitro");
    at_limit.text = format!("{:<32}", "free nitro");
    let verdicts = client
        .classify(classify(vec![at_limit.clone(), at_limit.clone(), at_limit]))
        .await
        .expect("3 messages of 32 bytes are within limits")
        .into_inner()
        .verdicts;
    assert_eq!(verdicts.len(), 3);
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn workflow_rpcs_name_the_missing_field() {
    let server = TestServer::start(|_| {}).await;
    let channel = server.channel.clone();
    let mut actions = proto::actions_client::ActionsClient::new(channel.clone());
    let mut appeals = proto::appeals_client::AppealsClient::new(channel.clone());
    let mut admin = proto::admin_client::AdminClient::new(channel.clone());
    let statuses = [
        actions
            .execute_action(proto::ExecuteActionRequest::default())
            .await
            .map(drop),
        actions
            .get_action(proto::GetActionRequest::default())
            .await
            .map(drop),
        appeals
            .file_appeal(proto::FileAppealRequest::default())
            .await
            .map(drop),
        appeals
            .resolve_appeal(proto::ResolveAppealRequest::default())
            .await
            .map(drop),
        admin.nuke(proto::NukeRequest::default()).await.map(drop),
        admin.aegis(proto::AegisRequest::default()).await.map(drop),
        admin
            .get_user(proto::GetUserRequest::default())
            .await
            .map(drop),
    ];
    for (status, field) in statuses.into_iter().zip([
        "channel",
        "id",
        "action_id",
        "id",
        "channel",
        "channel",
        "channel",
    ]) {
        let status = status.expect_err(field);
        assert_invalid_field(&status, &format!("{field}: "));
    }
    // GetModelInfo is real: this server runs without a model (the tests' default) and says so.
    let info = admin
        .get_model_info(proto::GetModelInfoRequest::default())
        .await
        .expect("GetModelInfo answers")
        .into_inner();
    assert!(!info.loaded);
    assert!(info.heads.is_empty());
    assert!(
        info.status_detail.contains("no model configured"),
        "{}",
        info.status_detail
    );

    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn shutdown_turns_health_not_serving_and_lets_open_calls_finish() {
    let mut server = TestServer::start(|config| config.grpc.shutdown_grace_secs = 1).await;
    let mut health = server.health();
    // An open streaming call, in flight when the signal comes.
    let mut updates = health
        .watch(HealthCheckRequest {
            service: "modbot.v1.Moderation".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = updates.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);

    server.signal_shutdown();
    let next = updates
        .message()
        .await
        .expect("the in-flight call keeps running")
        .expect("an update");
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    let addr = server.addr;
    server
        .stop()
        .await
        .expect("serve returns Ok after a graceful shutdown");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "nothing listens after shutdown"
    );
}

#[tokio::test]
async fn unreachable_database_at_start_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(dir.path());
    config.database.url = "postgres://modbot@127.0.0.1:1/modbot".into();
    config.database.connect_timeout_secs = 1;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = modbot::serve(config, listener, std::future::pending())
        .await
        .expect_err("no database, no server");
    assert!(
        error.to_string().contains("cannot connect to the database"),
        "{error}"
    );
}

#[tokio::test]
async fn classify_audits_to_postgres() {
    let Some(schema) = PgSchema::create("classify_audits_to_postgres").await else {
        return;
    };
    let url = schema.url.clone();
    let server = TestServer::start(move |config| config.database.url = url).await;
    let verdicts = server
        .moderation()
        .classify(classify(vec![
            chat_message("p1", "spammer", "crypto giveaway!!"),
            chat_message("p2", "alice", "hello chat"),
        ]))
        .await
        .expect("classify")
        .into_inner()
        .verdicts;
    assert_eq!(verdicts[0].decision, Decision::Hide as i32);
    assert_eq!(verdicts[1].decision, Decision::Allow as i32);
    let store = server.store().await;
    assert_eq!(store.backend(), modbot::infra::store::Database::Postgres);
    let log = store
        .audit_log(&AuditQuery {
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].message.message_id, "p1");
    assert_eq!(
        log[0].verdict.reasons[2].evidence.matched_text,
        "crypto giveaway"
    );
    store.close().await;
    server.stop().await.expect("clean stop");
    schema.drop().await;
}

#[tokio::test]
async fn a_failed_audit_write_keeps_the_decision_and_marks_it_degraded() {
    let server = TestServer::start(|_| {}).await;
    // Break the audit log under the running server.
    let url = format!("{}?mode=rw", server.config.database_url());
    let pool = sqlx::SqlitePool::connect(&url)
        .await
        .expect("open the server's SQLite file");
    sqlx::query("DROP TABLE audit_log")
        .execute(&pool)
        .await
        .expect("drop the table");
    pool.close().await;

    let verdicts = server
        .moderation()
        .classify(classify(vec![
            chat_message("m1", "spammer", "free nitro"),
            chat_message("m2", "alice", "hello"),
        ]))
        .await
        .expect("a decision is still returned")
        .into_inner()
        .verdicts;
    assert_eq!(
        verdicts[0].decision,
        Decision::Hide as i32,
        "the rule that fired still decides"
    );
    assert_eq!(
        verdicts[0].degraded,
        [proto::DegradedComponent::Store as i32]
    );
    assert!(
        verdicts[1].degraded.is_empty(),
        "allowed messages were never to be written"
    );
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn replicas_share_user_state_through_redis() {
    let Some(redis) = common::RedisPrefix::create("replicas_share_user_state_through_redis").await
    else {
        return;
    };
    let shared = |config: &mut modbot::Config| {
        config.redis.url = redis.url.clone();
        config.redis.key_prefix = redis.prefix.clone();
    };
    let first = TestServer::start(shared).await;
    let second = TestServer::start(shared).await;
    let say = |server: &TestServer, id: &str| {
        let mut client = server.moderation();
        let request = classify(vec![chat_message(id, "spammer", "free nitro")]);
        async move {
            client
                .classify(request)
                .await
                .expect("classify")
                .into_inner()
                .verdicts
                .remove(0)
        }
    };
    // The first replica warns (with a hide: a scam is harm); the second, seeing the same heat
    // through Redis, times out.
    let warned = say(&first, "r1").await;
    assert_eq!(warned.decision, Decision::Hide as i32, "{warned:?}");
    assert!(warned.degraded.is_empty(), "Redis answered: {warned:?}");
    let timed_out = say(&second, "r2").await;
    assert_eq!(
        timed_out.decision,
        Decision::Timeout as i32,
        "{timed_out:?}"
    );
    assert!(
        !redis.keys().await.is_empty(),
        "state lives under the test's prefix"
    );
    first.stop().await.expect("clean stop");
    second.stop().await.expect("clean stop");
    redis.delete_keys().await;
}

#[tokio::test]
async fn an_unreachable_redis_gives_degraded_verdicts_not_errors() {
    let server =
        TestServer::start(|config| config.redis.url = "redis://127.0.0.1:1/0".into()).await;
    let verdicts = server
        .moderation()
        .classify(classify(vec![chat_message("m1", "spammer", "free nitro")]))
        .await
        .expect("decisions go on without Redis")
        .into_inner()
        .verdicts;
    assert_eq!(
        verdicts[0].decision,
        Decision::Hide as i32,
        "the rule still fires"
    );
    assert_eq!(
        verdicts[0].degraded,
        [proto::DegradedComponent::UserState as i32]
    );
    server.stop().await.expect("clean stop");
}
