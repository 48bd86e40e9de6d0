//! Authentication and transport security: bearer tokens and roles on every RPC, the
//! configuration of tokens (file, inline, redaction, the loopback rule), and TLS / mutual TLS
//! with generated certificates.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Pki, TestServer, bearer, chat_message, modbot_command, open_stream};
use modbot::Config;
use modbot::proto::actions_client::ActionsClient;
use modbot::proto::moderation_client::ModerationClient;
use modbot::proto::{
    self, ClassifyRequest, StreamModerateRequest, stream_moderate_request, stream_moderate_response,
};
use prost::Message as _;
use tonic::Code;
use tonic::transport::{Channel, ClientTlsConfig, Identity};

/// One token per role, and one holding two.
const TOKENS: &[(&str, &str, &str)] = &[
    ("classifier", "backend", "classifier-secret-5f2a9c81d4e7"),
    ("bridge", "dgg-bridge", "bridge-secret-c70d2e9a41b6"),
    ("moderator", "mod-tools", "moderator-secret-0b6e13f2a8"),
    ("admin", "ops", "admin-secret-7d41c0e99b3f"),
    ("appeals", "site", "appeals-secret-a3c8e5d17f20"),
    (
        "classifier,appeals",
        "site-backend",
        "both-secret-91e4b7c2d06a",
    ),
];

/// In [`TABLE`]: a method anyone may call, with or without a token.
const ANYONE: &str = "anyone";

/// What the bridge token of [`TOKENS`] is bound to.
const BRIDGE_BINDING: &str = "bridge_ids=dgg-1,dgg-2 channels=destinygg,strims";
const BRIDGE_TOKEN: &str = "bridge-secret-c70d2e9a41b6";
const CLASSIFIER_TOKEN: &str = "classifier-secret-5f2a9c81d4e7";
const MODERATOR_TOKEN: &str = "moderator-secret-0b6e13f2a8";
const ADMIN_TOKEN: &str = "admin-secret-7d41c0e99b3f";

/// Who may call what, written out here independently of the server's table: every method of
/// `modbot.v1` with the roles that may call it (`admin` may call everything; [`ANYONE`]: no
/// token needed).
const TABLE: &[(&str, &[&str])] = &[
    ("/modbot.v1.Transparency/GetPublicLog", &[ANYONE]),
    ("/modbot.v1.Moderation/Classify", &["classifier", "admin"]),
    ("/modbot.v1.Moderation/StreamModerate", &["bridge", "admin"]),
    ("/modbot.v1.Actions/ExecuteAction", &["moderator", "admin"]),
    ("/modbot.v1.Actions/GetAction", &["moderator", "admin"]),
    ("/modbot.v1.Actions/ListActions", &["moderator", "admin"]),
    (
        "/modbot.v1.Appeals/FileAppeal",
        &["moderator", "appeals", "admin"],
    ),
    (
        "/modbot.v1.Appeals/GetAppeal",
        &["moderator", "appeals", "admin"],
    ),
    (
        "/modbot.v1.Appeals/ListAppeals",
        &["moderator", "appeals", "admin"],
    ),
    ("/modbot.v1.Appeals/ResolveAppeal", &["moderator", "admin"]),
    ("/modbot.v1.Admin/ListRules", &["moderator", "admin"]),
    ("/modbot.v1.Admin/BacktestRule", &["moderator", "admin"]),
    ("/modbot.v1.Admin/UpsertRule", &["admin"]),
    ("/modbot.v1.Admin/DeleteRule", &["admin"]),
    ("/modbot.v1.Admin/GetPolicy", &["moderator", "admin"]),
    ("/modbot.v1.Admin/SetPolicy", &["admin"]),
    ("/modbot.v1.Admin/GetStats", &["moderator", "admin"]),
    ("/modbot.v1.Admin/GetUser", &["moderator", "admin"]),
    ("/modbot.v1.Admin/Nuke", &["moderator", "admin"]),
    ("/modbot.v1.Admin/Aegis", &["moderator", "admin"]),
    ("/modbot.v1.Admin/WatchDecisions", &["moderator", "admin"]),
    (
        "/modbot.v1.Admin/GetModelInfo",
        &["classifier", "bridge", "moderator", "admin"],
    ),
    (
        "/modbot.v1.Admin/ListModelVersions",
        &["moderator", "admin"],
    ),
    ("/modbot.v1.Admin/TryModel", &["admin"]),
    ("/modbot.v1.Admin/EndModelTrial", &["admin"]),
    ("/modbot.v1.Admin/PromoteModel", &["admin"]),
    ("/modbot.v1.Admin/RollbackModel", &["admin"]),
    ("/modbot.v1.Review/ListReviews", &["moderator", "admin"]),
    ("/modbot.v1.Review/ResolveReview", &["moderator", "admin"]),
    (
        "/modbot.v1.Review/GetReview",
        &["classifier", "moderator", "admin"],
    ),
    (
        "/modbot.v1.Review/WatchReviews",
        &["classifier", "moderator", "admin"],
    ),
];

fn inline_tokens() -> String {
    TOKENS
        .iter()
        .map(|(roles, name, token)| {
            if roles.contains("bridge") {
                format!("{roles} {name} {token} {BRIDGE_BINDING}")
            } else {
                format!("{roles} {name} {token}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

async fn server_with_tokens() -> TestServer {
    TestServer::start(|config| config.auth.tokens = inline_tokens()).await
}

/// Every method of the API, from the compiled descriptor set: `/modbot.v1.Service/Method`.
fn api_methods() -> BTreeSet<String> {
    let set = prost_types::FileDescriptorSet::decode(modbot::proto::FILE_DESCRIPTOR_SET)
        .expect("the descriptor set decodes");
    let mut methods = BTreeSet::new();
    for file in set.file.iter().filter(|f| f.package() == "modbot.v1") {
        for service in &file.service {
            for method in &service.method {
                methods.insert(format!("/modbot.v1.{}/{}", service.name(), method.name()));
            }
        }
    }
    methods
}

/// Calls any method with one empty message (a valid encoding of every request type) and the
/// given `authorization` header, as a stream so unary and streaming methods alike can be
/// called, and returns how the call ended (OK for a stream still open after 2 s).
async fn call(channel: &Channel, path: &str, authorization: Option<&str>) -> tonic::Status {
    let attempt = async {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.expect("the channel is ready");
        let mut request = tonic::Request::new(tokio_stream::once(()));
        if let Some(value) = authorization {
            request
                .metadata_mut()
                .insert("authorization", value.parse().expect("ASCII header"));
        }
        let path = http::uri::PathAndQuery::try_from(path).expect("a valid path");
        let codec = tonic_prost::ProstCodec::<(), ()>::default();
        let mut responses = match grpc.streaming(request, path, codec).await {
            Ok(response) => response.into_inner(),
            Err(status) => return status,
        };
        loop {
            // A watch (WatchReviews) stays open with nothing to say: its call was admitted.
            let Ok(next) = tokio::time::timeout(Duration::from_secs(2), responses.message()).await
            else {
                return tonic::Status::ok("a stream that stays open");
            };
            match next {
                Ok(Some(())) => {}
                Ok(None) => return tonic::Status::ok(""),
                Err(status) => return status,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .unwrap_or_else(|_| panic!("{path} did not answer in 10 s"))
}

fn assert_no_token_in(status: &tonic::Status) {
    for (_, _, token) in TOKENS {
        assert!(
            !status.message().contains(token),
            "a token leaked into {status:?}"
        );
    }
}

#[tokio::test]
async fn every_rpc_answers_each_role_as_the_table_says() {
    let table: BTreeSet<String> = TABLE.iter().map(|(m, _)| m.to_string()).collect();
    assert_eq!(
        table,
        api_methods(),
        "the table must list exactly the API's methods: give a new RPC its roles here and in \
         src/edge/grpc/auth.rs"
    );

    let server = server_with_tokens().await;
    for (method, allowed) in TABLE {
        if allowed.contains(&ANYONE) {
            let status = call(&server.channel, method, None).await;
            assert!(
                !matches!(
                    status.code(),
                    Code::Unauthenticated | Code::PermissionDenied
                ),
                "anyone may call {method}, got {status:?}"
            );
        }
        for (roles, name, token) in TOKENS {
            let may =
                allowed.contains(&ANYONE) || roles.split(',').any(|role| allowed.contains(&role));
            let status = call(&server.channel, method, Some(&format!("Bearer {token}"))).await;
            assert_no_token_in(&status);
            if may {
                assert!(
                    !matches!(
                        status.code(),
                        Code::Unauthenticated | Code::PermissionDenied
                    ),
                    "{name} ({roles}) may call {method}, got {status:?}"
                );
            } else {
                assert_eq!(
                    status.code(),
                    Code::PermissionDenied,
                    "{name} ({roles}) may not call {method}: {status:?}"
                );
                // The refusal says who may.
                for role in *allowed {
                    assert!(status.message().contains(role), "{status:?}");
                }
            }
        }
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn calls_without_a_valid_token_are_unauthenticated() {
    let server = server_with_tokens().await;
    let classify = "/modbot.v1.Moderation/Classify";
    // (authorization header, the message)
    let cases: &[(Option<&str>, &str)] = &[
        (None, "missing bearer token"),
        (Some("Bearer"), "invalid bearer token"),
        (Some("Bearer "), "invalid bearer token"),
        (
            Some("Basic classifier-secret-5f2a9c81d4e7"),
            "invalid bearer token",
        ),
        (
            Some("classifier-secret-5f2a9c81d4e7"),
            "invalid bearer token",
        ),
        (
            Some("Bearer classifier-secret-5f2a9c81d4e8"),
            "invalid bearer token",
        ),
        (
            Some("Bearer classifier-secret-5f2a9c81d4e7x"),
            "invalid bearer token",
        ),
        (
            Some("Bearer nobody-knows-this-token"),
            "invalid bearer token",
        ),
    ];
    for (header, message) in cases {
        for path in [classify, "/modbot.v1.Admin/SetPolicy", "/no.Such/Method"] {
            let status = call(&server.channel, path, *header).await;
            assert_eq!(status.code(), Code::Unauthenticated, "{header:?} {path}");
            assert_eq!(status.message(), *message, "{header:?} {path}");
            assert_no_token_in(&status);
        }
    }
    // The scheme is case-insensitive.
    let status = call(
        &server.channel,
        classify,
        Some("bearer classifier-secret-5f2a9c81d4e7"),
    )
    .await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // An unknown modbot method is closed even to admin (default deny), not UNIMPLEMENTED.
    let status = call(
        &server.channel,
        "/modbot.v1.Admin/DropEverything",
        Some("Bearer admin-secret-7d41c0e99b3f"),
    )
    .await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // Health and reflection need no token.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel.clone());
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "modbot.v1.Moderation".into(),
        })
        .await
        .expect("health answers without a token")
        .into_inner();
    assert_eq!(
        answer.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    for path in [
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ] {
        let status = call(&server.channel, path, None).await;
        assert!(
            !matches!(
                status.code(),
                Code::Unauthenticated | Code::PermissionDenied
            ),
            "{path}: {status:?}"
        );
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_generated_client_with_a_token_classifies() {
    let server = server_with_tokens().await;
    let mut client =
        ModerationClient::with_interceptor(server.channel.clone(), bearer(TOKENS[0].2));
    let response = client
        .classify(ClassifyRequest {
            messages: vec![chat_message("m1", "alice", "hello chat")],
            options: None,
        })
        .await
        .expect("the classifier token may classify")
        .into_inner();
    assert_eq!(response.verdicts.len(), 1);
    let refused = server
        .moderation()
        .classify(ClassifyRequest {
            messages: vec![chat_message("m2", "alice", "hello chat")],
            options: None,
        })
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn without_tokens_a_loopback_server_trusts_every_caller() {
    let server = TestServer::start(|_| {}).await;
    for (method, _) in TABLE {
        let status = call(&server.channel, method, None).await;
        assert!(
            !matches!(
                status.code(),
                Code::Unauthenticated | Code::PermissionDenied
            ),
            "{method}: {status:?}"
        );
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn serve_refuses_a_non_loopback_socket_without_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::test_config(dir.path());
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let error = modbot::serve(config, listener, std::future::pending())
        .await
        .expect_err("no tokens on 0.0.0.0");
    assert!(error.to_string().contains("auth.tokens"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// Scoped credentials: bridges bound to their ids and channels, who is recorded as asking

/// A chat event carrying a human moderator's timeout of `target` in `destinygg`.
fn moderator_action(target: &str, at_seconds: i64) -> StreamModerateRequest {
    StreamModerateRequest {
        kind: Some(stream_moderate_request::Kind::Event(proto::ChatEvent {
            channel: "destinygg".into(),
            kind: Some(proto::chat_event::Kind::ModeratorAction(
                proto::ModeratorAction {
                    moderator: "HumanMod".into(),
                    target: target.into(),
                    kind: proto::ActionKind::Timeout as i32,
                    duration: Some(prost_types::Duration {
                        seconds: 300,
                        nanos: 0,
                    }),
                    at: Some(prost_types::Timestamp {
                        seconds: at_seconds,
                        nanos: 0,
                    }),
                },
            )),
        })),
    }
}

/// A chat event carrying `message`.
fn message_event(message: proto::ChatMessage) -> StreamModerateRequest {
    StreamModerateRequest {
        kind: Some(stream_moderate_request::Kind::Event(proto::ChatEvent {
            channel: message.channel.clone(),
            kind: Some(proto::chat_event::Kind::Message(message)),
        })),
    }
}

/// The next response that is not an action command.
async fn next_answer(
    responses: &mut tonic::Streaming<proto::StreamModerateResponse>,
) -> stream_moderate_response::Kind {
    loop {
        let response = tokio::time::timeout(Duration::from_secs(10), responses.message())
            .await
            .expect("an answer within 10 s")
            .expect("a healthy stream")
            .expect("the stream goes on");
        match response.kind.expect("a kind") {
            stream_moderate_response::Kind::Command(_) => {}
            kind => return kind,
        }
    }
}

/// The actions recorded so far, newest first, as the moderator token reads them.
async fn actions(server: &TestServer) -> Vec<proto::Action> {
    ActionsClient::with_interceptor(server.channel.clone(), bearer(MODERATOR_TOKEN))
        .list_actions(proto::ListActionsRequest::default())
        .await
        .expect("ListActions")
        .into_inner()
        .actions
}

#[tokio::test]
async fn a_bridge_credential_registers_only_as_its_bridge_ids_and_channels() {
    let server = server_with_tokens().await;
    // Within the binding: any of its bridge ids, any subset of its channels.
    for (bridge_id, channels) in [
        ("dgg-1", &["destinygg"][..]),
        ("dgg-2", &["strims", "destinygg"][..]),
    ] {
        open_stream(&server, Some(BRIDGE_TOKEN), bridge_id, channels)
            .await
            .unwrap_or_else(|status| panic!("{bridge_id} {channels:?}: {status:?}"));
    }
    // Outside it: PERMISSION_DENIED naming the field and the value refused.
    // (bridge id, channels, the message's start, what else it names)
    let cases: &[(&str, &[&str], &str, &str)] = &[
        (
            "real-bridge",
            &["destinygg"],
            "hello.bridge_id: `real-bridge` is not a bridge id the credential `dgg-bridge`",
            "dgg-1, dgg-2",
        ),
        (
            "dgg-1",
            &["destinygg", "victim-channel"],
            "hello.channels[1]: `victim-channel` is not a channel the credential `dgg-bridge`",
            "destinygg, strims",
        ),
    ];
    for (bridge_id, channels, start, names) in cases {
        let status = open_stream(&server, Some(BRIDGE_TOKEN), bridge_id, channels)
            .await
            .expect_err("outside the binding");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().starts_with(start), "{status:?}");
        assert!(status.message().contains(names), "{status:?}");
        assert_no_token_in(&status);
    }
    // A classifier may not stream at all; the role table refuses it before any hello is read.
    let status = open_stream(&server, Some(CLASSIFIER_TOKEN), "dgg-1", &["destinygg"])
        .await
        .expect_err("a classifier is no bridge");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("bridge, admin"), "{status:?}");
    // admin is bound to nothing.
    open_stream(&server, Some(ADMIN_TOKEN), "anything", &["anywhere"])
        .await
        .expect("admin may register as any bridge");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn only_a_bridge_reports_moderators_actions_and_requested_by_is_the_credential() {
    let server = server_with_tokens().await;
    // From admin (not a bridge): refused in-band, the stream goes on, nothing is recorded.
    let (tx, mut responses) = open_stream(&server, Some(ADMIN_TOKEN), "dgg-1", &["destinygg"])
        .await
        .expect("admin streams");
    tx.send(moderator_action("forged-victim", 1_700_000_000))
        .await
        .unwrap();
    let stream_moderate_response::Kind::Error(error) = next_answer(&mut responses).await else {
        panic!("expected an in-band error");
    };
    assert_eq!(error.code, Code::PermissionDenied as i32, "{error:?}");
    assert!(
        error
            .message
            .starts_with("event.moderator_action: the credential `ops` is not a bridge's"),
        "{error:?}"
    );
    tx.send(message_event(chat_message("a1", "alice", "hello chat")))
        .await
        .unwrap();
    assert!(matches!(
        next_answer(&mut responses).await,
        stream_moderate_response::Kind::Verdict(_)
    ));
    drop(tx);
    while responses.message().await.expect("a clean end").is_some() {}
    assert!(actions(&server).await.is_empty());

    // From the bridge: recorded as asked for by the credential, seen by the bound bridge id;
    // the bridge's automatic actions too.
    let (tx, mut responses) = open_stream(&server, Some(BRIDGE_TOKEN), "dgg-2", &["destinygg"])
        .await
        .expect("the bridge streams");
    tx.send(moderator_action("troll", 1_700_000_000))
        .await
        .unwrap();
    tx.send(message_event(chat_message(
        "b1",
        "scammer",
        "FREE NITRO at scam dot link",
    )))
    .await
    .unwrap();
    let stream_moderate_response::Kind::Verdict(verdict) = next_answer(&mut responses).await else {
        panic!("expected a verdict");
    };
    assert!(!verdict.action_id.is_empty(), "{verdict:?}");
    drop(tx);
    while responses.message().await.expect("a clean end").is_some() {}
    // The verdict's action is written by the audit writer, possibly after the stream ended.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let recorded = loop {
        let recorded = actions(&server).await;
        if recorded.len() >= 2 {
            break recorded;
        }
        assert!(std::time::Instant::now() < deadline, "{recorded:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(recorded.len(), 2, "{recorded:?}");
    for action in &recorded {
        assert_eq!(action.requested_by, "dgg-bridge", "{action:?}");
    }
    let human = recorded
        .iter()
        .find(|a| a.target_user_id == "troll")
        .unwrap();
    assert_eq!(human.bridge_id, "dgg-2");

    // Classify and ExecuteAction: the caller's credential, whatever the request says.
    let verdict =
        ModerationClient::with_interceptor(server.channel.clone(), bearer(CLASSIFIER_TOKEN))
            .classify(ClassifyRequest {
                messages: vec![chat_message("c1", "spammer", "FREE NITRO at scam dot link")],
                options: None,
            })
            .await
            .expect("Classify")
            .into_inner()
            .verdicts
            .remove(0);
    let executed = ActionsClient::with_interceptor(server.channel.clone(), bearer(MODERATOR_TOKEN))
        .execute_action(proto::ExecuteActionRequest {
            channel: "destinygg".into(),
            target_user_id: "bob".into(),
            kind: proto::ActionKind::Warn as i32,
            reason: "rude".into(),
            source: proto::ActionSource::Api as i32,
            ..proto::ExecuteActionRequest::default()
        })
        .await
        .expect("ExecuteAction")
        .into_inner()
        .action
        .unwrap();
    assert_eq!(executed.requested_by, "mod-tools");
    let recorded = actions(&server).await;
    let classified = recorded
        .iter()
        .find(|a| a.id == verdict.action_id)
        .expect("the verdict's action");
    assert_eq!(classified.requested_by, "backend");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_classifier_cannot_take_over_a_bridges_action_by_its_message_id() {
    let server = server_with_tokens().await;
    let (tx, mut responses) = open_stream(&server, Some(BRIDGE_TOKEN), "dgg-1", &["destinygg"])
        .await
        .expect("the bridge streams");
    // The classifier decides the message id the bridge's next message will carry, first: its
    // action is recorded (the channel's default policy) and must not stand in for the
    // bridge's.
    let text = "FREE NITRO at scam dot link";
    let classified =
        ModerationClient::with_interceptor(server.channel.clone(), bearer(CLASSIFIER_TOKEN))
            .classify(ClassifyRequest {
                messages: vec![chat_message("next-id", "victim", text)],
                options: None,
            })
            .await
            .expect("Classify")
            .into_inner()
            .verdicts
            .remove(0);
    assert!(!classified.action_id.is_empty());
    tx.send(message_event(chat_message("next-id", "victim", text)))
        .await
        .unwrap();
    let verdict = loop {
        let response = responses.message().await.unwrap().unwrap();
        if let Some(stream_moderate_response::Kind::Verdict(verdict)) = response.kind {
            break verdict;
        }
    };
    assert!(!verdict.action_id.is_empty(), "{verdict:?}");
    assert_ne!(verdict.action_id, classified.action_id);
    // A stream's verdict may arrive before the audit writer has stored its action: polled.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let recorded = loop {
        let recorded = actions(&server).await;
        if recorded.iter().any(|a| a.id == verdict.action_id) {
            break recorded;
        }
        assert!(std::time::Instant::now() < deadline, "{recorded:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let status = |id: &str| recorded.iter().find(|a| a.id == id).unwrap().status;
    assert_eq!(
        status(&classified.action_id),
        proto::ActionStatus::Recorded as i32
    );
    assert_ne!(
        status(&verdict.action_id),
        proto::ActionStatus::Recorded as i32
    );
    server.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Configuration

fn load(env: &[(&str, &str)], sets: &[(&str, &str)]) -> Result<Config, String> {
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    let sets: Vec<_> = sets
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::load(None, env, &sets)
        .map(|loaded| loaded.config)
        .map_err(|e| e.to_string())
}

#[test]
fn only_loopback_may_run_without_tokens() {
    for addr in ["127.0.0.1:50051", "127.8.9.10:1", "[::1]:50051"] {
        load(&[], &[("grpc.addr", addr)]).unwrap_or_else(|e| panic!("{addr}: {e}"));
    }
    for addr in ["0.0.0.0:50051", "[::]:50051", "10.1.2.3:50051"] {
        let error = load(&[], &[("grpc.addr", addr)]).expect_err(addr);
        assert!(
            error.contains("`auth.tokens`") && error.contains(addr),
            "{addr}: {error}"
        );
        let token = "classifier backend classifier-secret-5f2a9c81d4e7";
        load(&[("MODBOT_AUTH_TOKENS", token)], &[("grpc.addr", addr)])
            .unwrap_or_else(|e| panic!("{addr} with a token: {e}"));
    }
}

#[test]
fn token_errors_name_the_entry_and_never_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens");
    let secret = "s3cr3t-t0ken-do-not-print";
    let good = format!("# who may call\n\nclassifier backend {secret}-a\n");
    // (second part of the file, the line named, what the message says)
    let cases: &[(String, usize, &str)] = &[
        (
            format!("moderater mod-tools {secret}"),
            4,
            "unknown role `moderater`",
        ),
        ("moderator mod-tools".to_owned(), 4, "found 2 fields"),
        (
            format!("moderator mod-tools {secret} extra"),
            4,
            "field 4 is not `bridge_ids=...`",
        ),
        // A token in a binding's place is not quoted either, even around a `=`.
        (
            format!("bridge b {secret}-j {secret}=x channels=c"),
            4,
            "field 4 is not `bridge_ids=...`",
        ),
        // The old unscoped role is refused, naming the roles that replace it.
        (
            format!("service backend2 {secret}-d"),
            4,
            "the role `service` no longer exists: use `classifier`",
        ),
        (
            format!("bridge b {secret}-e"),
            4,
            "is bound to its bridge ids",
        ),
        (
            format!("moderator m {secret}-f bridge_ids=x channels=y"),
            4,
            "this entry has no bridge role",
        ),
        (
            format!("bridge b {secret}-g bridge_ids=x"),
            4,
            "needs `channels=` as well",
        ),
        (
            format!("bridge b {secret}-h channels=x"),
            4,
            "needs `bridge_ids=` as well",
        ),
        (
            format!("bridge b {secret}-i bridge_ids=x bridge_ids=y channels=c"),
            4,
            "`bridge_ids=` is given twice",
        ),
        (
            format!("bridge b {secret}-k bridge_ids=,x channels=c"),
            4,
            "`bridge_ids=` is a comma-separated list",
        ),
        (
            format!("bridge b {secret}-l bridge_ids=x channels="),
            4,
            "`channels=` is a comma-separated list",
        ),
        (secret.to_owned(), 4, "found 1 fields"),
        // A line in the wrong order: the token, in the roles' place, is not quoted.
        (
            format!("{secret} mod-tools moderator"),
            4,
            "not a list of roles",
        ),
        ("\n\nadmin ops short".to_owned(), 6, "5 bytes; at least 16"),
        (
            format!("moderator,appeals backend {secret}-b"),
            4,
            "name is already used by",
        ),
        (
            format!("admin ops {secret}-a"),
            4,
            "token is the same as that of",
        ),
        (
            format!("moderator,,appeals x {secret}-c"),
            4,
            "unknown role ``",
        ),
        (
            format!("moderator x {secret}-\u{e9}"),
            4,
            "other than printable ASCII",
        ),
    ];
    for (rest, line, expected) in cases {
        std::fs::write(&path, format!("{good}{rest}\n")).unwrap();
        let error =
            load(&[("MODBOT_AUTH_TOKENS_FILE", path.to_str().unwrap())], &[]).expect_err(rest);
        let place = format!("{} line {line}:", path.display());
        assert!(error.contains("`auth.tokens_file`"), "{error}");
        assert!(error.contains(&place), "expected `{place}` in: {error}");
        assert!(
            error.contains(expected),
            "expected `{expected}` in: {error}"
        );
        assert!(!error.contains(secret), "the token leaked: {error}");
    }

    // Inline entries are named by their position; names are unique across both sources.
    std::fs::write(&path, &good).unwrap();
    let inline = format!("admin ops {secret}-x;  ; classifier backend {secret}-y");
    let error = load(
        &[
            ("MODBOT_AUTH_TOKENS_FILE", path.to_str().unwrap()),
            ("MODBOT_AUTH_TOKENS", &inline),
        ],
        &[],
    )
    .expect_err("backend is in the file already");
    assert!(error.contains("`auth.tokens[2]`"), "{error}");
    assert!(
        error.contains(&format!("already used by {} line 3", path.display())),
        "{error}"
    );
    assert!(!error.contains(secret), "{error}");
    let error = load(&[("MODBOT_AUTH_TOKENS", "admin ops tiny")], &[]).unwrap_err();
    assert!(error.contains("`auth.tokens[0]`") && error.contains("4 bytes"));

    let error = load(
        &[("MODBOT_AUTH_TOKENS_FILE", "/nonexistent/modbot-tokens")],
        &[],
    )
    .unwrap_err();
    assert!(
        error.contains("auth.tokens_file") && error.contains("/nonexistent/modbot-tokens"),
        "{error}"
    );

    // Both sources together.
    let config = load(
        &[
            ("MODBOT_AUTH_TOKENS_FILE", path.to_str().unwrap()),
            ("MODBOT_AUTH_TOKENS", &format!("admin ops {secret}-x;")),
        ],
        &[],
    )
    .unwrap();
    let credentials = config.auth.credentials().unwrap();
    let names: Vec<&str> = credentials.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["backend", "ops"]);
}

#[test]
fn tokens_are_redacted_in_the_printed_configuration() {
    let secret = "s3cr3t-t0ken-do-not-print";
    let tokens = format!(
        "classifier backend {secret}-1; moderator,appeals mod-tools {secret}-2; \
         bridge dgg {secret}-3 bridge_ids=dgg-1 channels=destinygg,strims"
    );
    let config = load(&[("MODBOT_AUTH_TOKENS", &tokens)], &[]).unwrap();
    let shown = config.to_redacted_toml();
    assert!(!shown.contains(secret), "{shown}");
    let printed: toml::Table = shown.parse().unwrap();
    assert_eq!(
        printed["auth"]["tokens"].as_str(),
        Some(
            "classifier backend ***; moderator,appeals mod-tools ***; \
             bridge dgg *** bridge_ids=dgg-1 channels=destinygg,strims"
        )
    );
    let debug = format!("{config:?}");
    assert!(!debug.contains(secret), "{debug}");
    let credentials = format!("{:?}", config.auth.credentials().unwrap());
    assert!(!credentials.contains(secret), "{credentials}");
}

#[test]
fn the_binary_refuses_open_binds_and_redacts_tokens() {
    let secret = "s3cr3t-t0ken-do-not-print";
    let output = modbot_command(&["serve", "--grpc-addr", "0.0.0.0:0", "--metrics-addr", ""])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    // The console's address is held to the same rule.
    let output = modbot_command(&["serve", "--http-addr", "0.0.0.0:0", "--metrics-addr", ""])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("error: configuration") && stderr.contains("auth.tokens"),
        "{stderr}"
    );

    let output = modbot_command(&["config", "--grpc-addr", "0.0.0.0:50051"])
        .env("MODBOT_AUTH_TOKENS", format!("admin ops {secret}"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout.contains("tokens = \"admin ops ***\""), "{stdout}");
    assert!(!stdout.contains(secret), "{stdout}");

    let output = modbot_command(&["config"])
        .env("MODBOT_AUTH_TOKENS", format!("admin ops {secret}; bad"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("auth.tokens[1]"), "{stderr}");
    assert!(!stderr.contains(secret), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// TLS

async fn classify(channel: Channel) -> Result<usize, tonic::Status> {
    let response = ModerationClient::new(channel)
        .classify(ClassifyRequest {
            messages: vec![chat_message("m1", "alice", "hello over TLS")],
            options: None,
        })
        .await?;
    Ok(response.into_inner().verdicts.len())
}

/// Connects and classifies with `tls` (or in plaintext); any failure, at connection or call,
/// is an `Err` with its description.
async fn try_classify(
    addr: std::net::SocketAddr,
    tls: Option<ClientTlsConfig>,
) -> Result<(), String> {
    let attempt = async {
        let endpoint = match tls {
            None => Channel::from_shared(format!("http://{addr}")).unwrap(),
            Some(tls) => Channel::from_shared(format!("https://{addr}"))
                .unwrap()
                .tls_config(tls)
                .unwrap(),
        };
        let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
        classify(channel)
            .await
            .map(|_| ())
            .map_err(|s| format!("{s:?}"))
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .map_err(|_| "no answer in 10 s".to_owned())?
}

#[tokio::test]
async fn tls_serves_trusting_clients_and_refuses_plaintext() {
    let pki = Pki::generate();
    let server = TestServer::start_tls(|config| pki.serve_tls(config, false), pki.client()).await;
    assert_eq!(classify(server.channel.clone()).await.unwrap(), 1);
    try_classify(server.addr, None)
        .await
        .expect_err("a plaintext client must not be answered");
    // A client that does not trust the server's CA is refused too.
    let other = Pki::generate();
    try_classify(server.addr, Some(other.client()))
        .await
        .expect_err("an untrusted certificate");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn mutual_tls_needs_a_client_certificate_signed_by_the_ca() {
    let pki = Pki::generate();
    let server = TestServer::start_tls(
        |config| {
            pki.serve_tls(config, true);
            config.auth.tokens = inline_tokens();
        },
        pki.client_with_certificate(),
    )
    .await;
    try_classify(server.addr, Some(pki.client()))
        .await
        .expect_err("a client without a certificate");
    let stranger = Pki::generate();
    let foreign = pki.client().identity(Identity::from_pem(
        &stranger.client_cert_pem,
        &stranger.client_key_pem,
    ));
    try_classify(server.addr, Some(foreign))
        .await
        .expect_err("a client certificate signed by another CA");

    // TLS and tokens together: the certificate gets the caller through the handshake, the
    // token decides what it may call.
    let status = classify(server.channel.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut client =
        ModerationClient::with_interceptor(server.channel.clone(), bearer(TOKENS[0].2));
    let verdicts = client
        .classify(ClassifyRequest {
            messages: vec![chat_message("m1", "alice", "hello over mTLS")],
            options: None,
        })
        .await
        .expect("certificate and token")
        .into_inner()
        .verdicts;
    assert_eq!(verdicts.len(), 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn bad_tls_files_stop_start_up_naming_the_file() {
    let pki = Pki::generate();
    std::fs::write(pki.path("garbage.pem"), "not a certificate\n").unwrap();
    std::fs::write(
        pki.path("broken.pem"),
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    // (cert, key, client CA, the file the error must name)
    let cases: &[(&str, &str, &str, &str)] = &[
        ("missing.pem", "server.key", "", "missing.pem"),
        ("server.pem", "missing.key", "", "missing.key"),
        ("garbage.pem", "server.key", "", "garbage.pem"),
        ("server.pem", "garbage.pem", "", "garbage.pem"),
        ("server.pem", "server.pem", "", "server.pem"),
        ("broken.pem", "server.key", "", "broken.pem"),
        ("server.pem", "server.key", "garbage.pem", "garbage.pem"),
        (
            "server.pem",
            "server.key",
            "missing-ca.pem",
            "missing-ca.pem",
        ),
    ];
    for (cert, key, ca, named) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut config = common::test_config(dir.path());
        config.grpc.tls_cert_file = pki.path(cert);
        config.grpc.tls_key_file = pki.path(key);
        if !ca.is_empty() {
            config.grpc.tls_client_ca_file = pki.path(ca);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let error = modbot::serve(config, listener, std::future::pending())
            .await
            .expect_err("bad TLS files");
        let message = error.to_string();
        assert!(
            message.contains(&pki.path(named).display().to_string()),
            "{cert} {key} {ca}: expected {named} in: {message}"
        );
    }

    // One file of the pair alone is a configuration error naming the other.
    let cert = pki.path("server.pem");
    let error = load(&[], &[("grpc.tls_cert_file", cert.to_str().unwrap())]).unwrap_err();
    assert!(error.contains("grpc.tls_key_file"), "{error}");
    let error = load(&[], &[("grpc.tls_key_file", "key.pem")]).unwrap_err();
    assert!(error.contains("grpc.tls_cert_file"), "{error}");
    let error = load(&[], &[("grpc.tls_client_ca_file", "ca.pem")]).unwrap_err();
    assert!(error.contains("grpc.tls_client_ca_file"), "{error}");
}

/// A join as a bridge reports it, at the chat messages' time.
fn join_event(nick: &str) -> StreamModerateRequest {
    StreamModerateRequest {
        kind: Some(stream_moderate_request::Kind::Event(proto::ChatEvent {
            channel: "destinygg".into(),
            kind: Some(proto::chat_event::Kind::Join(proto::Presence {
                nick: nick.into(),
                roles: Vec::new(),
                at: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 0,
                }),
            })),
        })),
    }
}

/// Joins feed raid detection (a surge lowers the number of new users whose copies start a
/// raid), so only a bridge's count: an admin's stream reporting a surge of joins lowers
/// nothing, a bridge's does.
#[tokio::test]
async fn only_a_bridges_joins_count_toward_a_raid() {
    let server = server_with_tokens().await;
    async fn copies_after_a_surge(
        server: &TestServer,
        token: &str,
        bridge_id: &str,
        prefix: &str,
        text: &str,
    ) -> Vec<proto::Verdict> {
        let (tx, mut responses) = open_stream(server, Some(token), bridge_id, &["destinygg"])
            .await
            .expect("the stream opens");
        for i in 0..20 {
            tx.send(join_event(&format!("{prefix}-joiner{i}")))
                .await
                .unwrap();
        }
        // The shipped policy: 4 new users' copies after a surge of 20 joins, 8 without.
        for i in 0..4 {
            let user = format!("{prefix}-raider{i}");
            tx.send(message_event(chat_message(
                &format!("{prefix}{i}"),
                &user,
                text,
            )))
            .await
            .unwrap();
        }
        drop(tx);
        let mut verdicts = Vec::new();
        while let Some(response) = responses.message().await.expect("a clean end") {
            if let Some(stream_moderate_response::Kind::Verdict(verdict)) = response.kind {
                verdicts.push(verdict);
            }
        }
        assert_eq!(verdicts.len(), 4);
        verdicts
    }
    let forged = copies_after_a_surge(
        &server,
        ADMIN_TOKEN,
        "dgg-1",
        "a",
        "this chat is dead, everyone come watch the real stream tonight",
    )
    .await;
    assert!(
        forged
            .iter()
            .all(|v| v.decision == proto::Decision::Allow as i32),
        "an admin's joins made no surge: {forged:?}"
    );
    let reported = copies_after_a_surge(
        &server,
        BRIDGE_TOKEN,
        "dgg-2",
        "b",
        "giveaway of skins for everyone who follows my friend right now",
    )
    .await;
    let last = reported.last().unwrap();
    assert_eq!(last.decision, proto::Decision::Hide as i32, "{reported:?}");
    assert_eq!(last.reasons[0].label, "raid", "{last:?}");
}

/// The JSON API answers every role exactly as gRPC does: the same table, through HTTP. A
/// server stream is opened as Server-Sent Events (its refusal comes before the first event).
#[tokio::test]
async fn every_json_method_answers_each_role_as_the_table_says() {
    let server = server_with_tokens().await;
    for (method, allowed) in TABLE {
        if *method == "/modbot.v1.Moderation/StreamModerate" {
            // Both directions stream: gRPC only, refused by the HTTP edge before auth.
            let reply = server
                .http()
                .with_bearer("admin-secret-7d41c0e99b3f")
                .post(method, &serde_json::json!({}))
                .await;
            assert_eq!(reply.status, 501, "{method}: {}", reply.text);
            continue;
        }
        let streams = method.contains("/Watch");
        let anonymous = if streams {
            server.http().events(method).await.0
        } else {
            server
                .http()
                .post(method, &serde_json::json!({}))
                .await
                .status
        };
        if allowed.contains(&ANYONE) {
            assert!(
                anonymous != 401 && anonymous != 403,
                "anyone may call {method} over JSON, got {anonymous}"
            );
        } else {
            assert_eq!(anonymous, 401, "{method} without a token");
        }
        for (roles, name, token) in TOKENS {
            let may =
                allowed.contains(&ANYONE) || roles.split(',').any(|role| allowed.contains(&role));
            let client = server.http().with_bearer(token);
            let (status, body) = if streams {
                let (status, _events) = client.events(method).await;
                (status, String::new())
            } else {
                let reply = client.post(method, &serde_json::json!({})).await;
                assert!(
                    !reply.text.contains(token),
                    "a token leaked into {}",
                    reply.text
                );
                (reply.status, reply.text)
            };
            if may {
                assert!(
                    status != 401 && status != 403,
                    "{name} ({roles}) may call {method} over JSON, got {status} {body}"
                );
            } else {
                assert_eq!(
                    status, 403,
                    "{name} ({roles}) may not call {method}: {body}"
                );
            }
        }
    }
    server.stop().await.unwrap();
}
