//! `StreamModerate` end to end: a bridge's view of the stream.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{TestServer, chat_message, stream_message};
use modbot::infra::store::{AuditQuery, FeedbackSource};
use modbot::proto::{
    self, ActionKind, ChatEvent, Decision, Hello, ModeratorAction, StreamModerateRequest,
    StreamModerateResponse, chat_event, stream_moderate_request, stream_moderate_response,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

fn hello(channels: &[&str]) -> StreamModerateRequest {
    StreamModerateRequest {
        kind: Some(stream_moderate_request::Kind::Hello(Hello {
            bridge_id: "test-bridge".into(),
            channels: channels.iter().map(|c| c.to_string()).collect(),
            dialect: "dgg".into(),
            bot_nick: "modbot".into(),
        })),
    }
}

fn event(channel: &str, kind: chat_event::Kind) -> StreamModerateRequest {
    StreamModerateRequest {
        kind: Some(stream_moderate_request::Kind::Event(ChatEvent {
            channel: channel.into(),
            kind: Some(kind),
        })),
    }
}

const T0: i64 = 1_700_000_000_000;

/// A different everyday chat line for every `i`.
fn sentence(i: usize) -> String {
    const WORDS: &[&str] = &[
        "stream", "game", "chat", "clip", "debate", "music", "today", "later", "really", "maybe",
        "funny", "good", "bad", "play", "watch", "news", "topic", "point", "agree", "wrong",
        "right", "take", "think", "know", "guess", "tonight", "again", "never", "always",
        "question",
    ];
    let mut x = (i as u64)
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    (0..6)
        .map(|_| {
            x ^= x >> 29;
            x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
            WORDS[(x >> 33) as usize % WORDS.len()]
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Opens a stream fed from a channel; returns the sender and the responses after the welcome.
async fn open(
    server: &TestServer,
    buffer: usize,
) -> (
    mpsc::Sender<StreamModerateRequest>,
    Streaming<StreamModerateResponse>,
) {
    let (tx, rx) = mpsc::channel(buffer);
    tx.send(hello(&["destinygg"])).await.unwrap();
    let mut responses = server
        .moderation()
        .stream_moderate(ReceiverStream::new(rx))
        .await
        .expect("the stream opens")
        .into_inner();
    let welcome = responses.message().await.unwrap().expect("a welcome");
    let Some(stream_moderate_response::Kind::Welcome(welcome)) = welcome.kind else {
        panic!("expected a welcome, got {welcome:?}");
    };
    assert_eq!(welcome.channels, ["destinygg"]);
    assert!(!welcome.session_id.is_empty());
    (tx, responses)
}

/// The next response other than an action command (the automatic actions of enforced
/// verdicts are sent as commands beside the verdicts; tests/workflows.rs covers them).
async fn next(responses: &mut Streaming<StreamModerateResponse>) -> stream_moderate_response::Kind {
    loop {
        let kind = responses
            .message()
            .await
            .expect("a healthy stream")
            .expect("a response")
            .kind
            .expect("a kind");
        if !matches!(kind, stream_moderate_response::Kind::Command(_)) {
            return kind;
        }
    }
}

/// The stream ends cleanly, after at most some action commands.
async fn assert_ends(responses: &mut Streaming<StreamModerateResponse>) {
    while let Some(response) = responses.message().await.expect("a clean end") {
        assert!(
            matches!(
                response.kind,
                Some(stream_moderate_response::Kind::Command(_))
            ),
            "expected the end of the stream, got {response:?}"
        );
    }
}

async fn next_verdict(responses: &mut Streaming<StreamModerateResponse>) -> proto::Verdict {
    match next(responses).await {
        stream_moderate_response::Kind::Verdict(v) => v,
        other => panic!("expected a verdict, got {other:?}"),
    }
}

#[tokio::test]
async fn the_stream_must_start_with_a_valid_hello() {
    let server = TestServer::start(|_| {}).await;
    let cases: Vec<(Vec<StreamModerateRequest>, &str)> = vec![
        (vec![], "hello: the stream ended before its hello"),
        (
            vec![stream_message("m1", "u", "hi", Some(T0))],
            "kind: the first message on the stream must be a hello",
        ),
        (
            vec![hello(&[])],
            "hello.channels: must name at least one channel",
        ),
        (
            vec![StreamModerateRequest {
                kind: Some(stream_moderate_request::Kind::Hello(Hello {
                    channels: vec!["destinygg".into()],
                    ..Hello::default()
                })),
            }],
            "hello.bridge_id: is required",
        ),
    ];
    for (requests, expected) in cases {
        let status = server
            .moderation()
            .stream_moderate(tokio_stream::iter(requests))
            .await
            .expect_err(expected);
        assert_eq!(status.code(), Code::InvalidArgument, "{expected}");
        assert_eq!(status.message(), expected);
    }
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn verdicts_come_in_order_with_memory_of_each_user() {
    let server = TestServer::start(|_| {}).await;
    let (tx, mut responses) = open(&server, 64).await;
    let total = 2_000;
    let sender = tokio::spawn(async move {
        for i in 0..total {
            // 40 users talking in turn, a message every 50 ms, each message different.
            let text = sentence(i);
            tx.send(stream_message(
                &i.to_string(),
                &format!("user{}", i % 40),
                &text,
                Some(T0 + 50 * i as i64),
            ))
            .await
            .unwrap();
        }
        // One user floods: five messages within a second.
        for k in 0..5 {
            let text = format!("flood {k} something");
            tx.send(stream_message(
                &format!("f{k}"),
                "flooder",
                &text,
                Some(T0 + 200_000 + 100 * k),
            ))
            .await
            .unwrap();
        }
        tx
    });
    for i in 0..total {
        let verdict = next_verdict(&mut responses).await;
        assert_eq!(
            verdict.message_id,
            i.to_string(),
            "verdicts come in the order received"
        );
        assert_eq!(verdict.decision, Decision::Allow as i32, "{verdict:?}");
    }
    let mut flood = Vec::new();
    for _ in 0..5 {
        flood.push(next_verdict(&mut responses).await);
    }
    assert!(
        flood[..4]
            .iter()
            .all(|v| v.decision == Decision::Allow as i32)
    );
    let fifth = &flood[4];
    assert_eq!(
        fifth.decision,
        Decision::Warn as i32,
        "a first offence is a warning: {fifth:?}"
    );
    assert!(
        fifth.reasons.iter().any(|r| r.rule_id == "dgg-rate"),
        "{fifth:?}"
    );

    // Closing our side ends the stream cleanly.
    drop(sender.await.unwrap());
    assert_ends(&mut responses).await;
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn bad_events_are_answered_in_band_and_the_stream_goes_on() {
    let server = TestServer::start(|_| {}).await;
    let (tx, mut responses) = open(&server, 16).await;
    let mut no_text = chat_message("bad1", "u1", "");
    no_text.channel.clear();
    let bad: Vec<(StreamModerateRequest, &str)> = vec![
        (
            event("destinygg", chat_event::Kind::Message(no_text)),
            "event.message.text: must not be empty",
        ),
        (stream_message("bad2", "u1", "hi", Some(T0)), ""), // a good one in between
        (
            event(
                "elsewhere",
                chat_event::Kind::Join(proto::Presence::default()),
            ),
            "event.channel: `elsewhere` is not one of the channels in the hello",
        ),
        (StreamModerateRequest { kind: None }, "kind: is required"),
        (hello(&["destinygg"]), "hello: already sent"),
        (
            event(
                "destinygg",
                chat_event::Kind::ModeratorAction(ModeratorAction {
                    moderator: "mod".into(),
                    target: "u1".into(),
                    ..ModeratorAction::default()
                }),
            ),
            "event.moderator_action.kind: is required",
        ),
        (
            event(
                "destinygg",
                chat_event::Kind::ModeratorAction(ModeratorAction {
                    moderator: "mod".into(),
                    target: "u".repeat(257),
                    kind: ActionKind::Ban as i32,
                    ..ModeratorAction::default()
                }),
            ),
            "event.moderator_action.target: 257 bytes exceed the limit of 256 bytes",
        ),
        (
            event(
                "destinygg",
                chat_event::Kind::ModeratorAction(ModeratorAction {
                    moderator: "m\u{7}od".into(),
                    target: "u1".into(),
                    kind: ActionKind::Ban as i32,
                    ..ModeratorAction::default()
                }),
            ),
            "event.moderator_action.moderator: must not contain control characters",
        ),
    ];
    for (request, expected) in bad {
        tx.send(request).await.unwrap();
        match next(&mut responses).await {
            stream_moderate_response::Kind::Error(error) => {
                assert_eq!(error.code, Code::InvalidArgument as i32);
                assert_eq!(error.message, expected);
            }
            stream_moderate_response::Kind::Verdict(verdict) => {
                assert!(
                    expected.is_empty(),
                    "expected an error `{expected}`, got a verdict"
                );
                assert_eq!(verdict.message_id, "bad2");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Presence events are accepted silently; the next message still gets its verdict.
    tx.send(event(
        "destinygg",
        chat_event::Kind::Join(proto::Presence::default()),
    ))
    .await
    .unwrap();
    tx.send(stream_message("after", "u2", "still here", Some(T0)))
        .await
        .unwrap();
    assert_eq!(next_verdict(&mut responses).await.message_id, "after");
    drop(tx);
    server.stop().await.expect("clean stop");
}

/// A panic while deciding a message (in a rule, or outside every rule) costs that message a
/// degraded verdict; the stream goes on and later messages are decided as usual.
#[tokio::test]
async fn a_panic_deciding_a_message_degrades_its_verdict_and_the_stream_goes_on() {
    let rules = tempfile::tempdir().unwrap();
    let file = common::faulty_rules_file(rules.path());
    let server = TestServer::start(|config| config.rules.file = file).await;
    let (tx, mut responses) = open(&server, 16).await;
    let script = [
        ("before", "u1", "hello everyone".to_owned()),
        (
            "rule",
            "u2",
            format!("buy followers {}", modbot::fault::PANIC_PHRASE),
        ),
        ("pipeline", "u3", modbot::fault::PANIC_TEXT.to_owned()),
        ("rule-again", "u4", modbot::fault::PANIC_PHRASE.to_owned()),
        ("after", "u5", "cheap viewers here".to_owned()),
    ];
    for (i, (id, user, text)) in script.iter().enumerate() {
        tx.send(stream_message(id, user, text, Some(T0 + 1000 * i as i64)))
            .await
            .unwrap();
    }
    let degraded = [proto::DegradedComponent::Decision as i32];
    let mut verdicts = Vec::new();
    for _ in &script {
        verdicts.push(next_verdict(&mut responses).await);
    }
    let ids: Vec<_> = verdicts.iter().map(|v| v.message_id.as_str()).collect();
    assert_eq!(ids, ["before", "rule", "pipeline", "rule-again", "after"]);
    assert_eq!(verdicts[0].decision, Decision::Allow as i32);
    assert!(verdicts[0].degraded.is_empty());
    // The panicking rule is skipped; the other rule that fired still acts.
    assert_eq!(verdicts[1].decision, Decision::Hide as i32);
    assert_eq!(verdicts[1].reasons[0].rule_id, "view-botting-ads");
    assert_eq!(verdicts[1].degraded, degraded);
    // Nothing could be decided: held for review.
    assert_eq!(verdicts[2].decision, Decision::Hold as i32);
    assert_eq!(verdicts[2].degraded, degraded);
    // Only the panicking rule fired: the message is allowed, marked degraded.
    assert_eq!(verdicts[3].decision, Decision::Allow as i32);
    assert_eq!(verdicts[3].degraded, degraded);
    assert_eq!(verdicts[4].decision, Decision::Hide as i32);
    assert!(verdicts[4].degraded.is_empty());
    // Still open: one more message, one more verdict, then a clean end.
    tx.send(stream_message("last", "u6", "bye", Some(T0 + 10_000)))
        .await
        .unwrap();
    assert_eq!(next_verdict(&mut responses).await.message_id, "last");
    drop(tx);
    assert_ends(&mut responses).await;
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_moderators_timeout_counts_toward_the_ladder() {
    let server = TestServer::start(|_| {}).await;
    let (tx, mut responses) = open(&server, 16).await;
    // A human moderator mutes `troll`; afterwards a scam message is no first offence.
    tx.send(event(
        "destinygg",
        chat_event::Kind::ModeratorAction(ModeratorAction {
            moderator: "mod".into(),
            target: "troll".into(),
            kind: ActionKind::Timeout as i32,
            duration: Some(prost_types::Duration {
                seconds: 600,
                nanos: 0,
            }),
            at: Some(prost_types::Timestamp {
                seconds: T0 / 1000,
                nanos: 0,
            }),
        }),
    ))
    .await
    .unwrap();
    tx.send(stream_message("t1", "troll", "free nitro", Some(T0 + 1000)))
        .await
        .unwrap();
    tx.send(stream_message(
        "n1",
        "newbie",
        "free nitro",
        Some(T0 + 1000),
    ))
    .await
    .unwrap();
    let troll = next_verdict(&mut responses).await;
    assert_eq!(troll.decision, Decision::Timeout as i32, "{troll:?}");
    let newbie = next_verdict(&mut responses).await;
    // A first offence's warning, carried out as a hide: the scam rule is harmful.
    assert_eq!(newbie.decision, Decision::Hide as i32, "{newbie:?}");
    drop(tx);
    assert_ends(&mut responses).await;

    // Both notable verdicts reach the audit log through the batching writer, drained on stop.
    let store = server.store().await;
    server.stop().await.expect("clean stop");
    let mut logged: Vec<String> = store
        .audit_log(&AuditQuery {
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.message.message_id)
        .collect();
    logged.sort();
    assert_eq!(logged, ["n1", "t1"]);
    store.close().await;
}

/// A human moderator's action on chat, `at_ms` by the chat's clock.
fn moderator_action(
    moderator: &str,
    target: &str,
    kind: ActionKind,
    at_ms: i64,
) -> StreamModerateRequest {
    event(
        "destinygg",
        chat_event::Kind::ModeratorAction(ModeratorAction {
            moderator: moderator.into(),
            target: target.into(),
            kind: kind as i32,
            duration: None,
            at: Some(prost_types::Timestamp {
                seconds: at_ms / 1000,
                nanos: (at_ms % 1000) as i32 * 1_000_000,
            }),
        }),
    )
}

#[tokio::test]
async fn a_moderators_action_becomes_a_feedback_example_of_the_targets_last_message() {
    let server = TestServer::start(|_| {}).await;
    let (tx, mut responses) = open(&server, 16).await;
    // `rude` says something the rules let through; a moderator times them out seconds later.
    tx.send(stream_message("r1", "rude", "hello there", Some(T0)))
        .await
        .unwrap();
    tx.send(stream_message(
        "r2",
        "rude",
        "Y0U are a cl0wn, go away",
        Some(T0 + 1_000),
    ))
    .await
    .unwrap();
    tx.send(moderator_action(
        "mod1",
        "rude",
        ActionKind::Timeout,
        T0 + 4_000,
    ))
    .await
    .unwrap();
    // A ban after the timeout is the same judgement of the same message: still one example.
    tx.send(moderator_action(
        "mod2",
        "rude",
        ActionKind::Ban,
        T0 + 6_000,
    ))
    .await
    .unwrap();
    // `quiet` spoke long before being muted: too long for the action to be about that message.
    tx.send(stream_message("q1", "quiet", "good morning", Some(T0)))
        .await
        .unwrap();
    tx.send(moderator_action(
        "mod1",
        "quiet",
        ActionKind::Timeout,
        T0 + 600_000,
    ))
    .await
    .unwrap();
    // Nobody remembers `ghost`; an unmute teaches nothing.
    tx.send(moderator_action(
        "mod1",
        "ghost",
        ActionKind::Ban,
        T0 + 4_000,
    ))
    .await
    .unwrap();
    tx.send(moderator_action(
        "mod1",
        "rude",
        ActionKind::Unmute,
        T0 + 7_000,
    ))
    .await
    .unwrap();
    // Events are handled in order: once this verdict is back, every action above is done.
    tx.send(stream_message("last", "someone", "ok", Some(T0 + 8_000)))
        .await
        .unwrap();
    for expected in ["r1", "r2", "q1", "last"] {
        assert_eq!(next_verdict(&mut responses).await.message_id, expected);
    }
    drop(tx);
    let store = server.store().await;
    server.stop().await.expect("clean stop");
    let feedback = store.feedback().await.unwrap();
    assert_eq!(feedback.len(), 1, "{feedback:?}");
    let example = &feedback[0];
    assert_eq!(
        (
            example.channel.as_str(),
            example.user_id.as_str(),
            example.message_id.as_str(),
            example.label.as_str(),
            example.positive,
            example.source,
            example.actor.as_str(),
            example.action.as_str(),
        ),
        (
            "destinygg",
            "rude",
            "r2",
            "unlabeled",
            true,
            FeedbackSource::ModeratorAction,
            "mod1",
            "timeout",
        )
    );
    // The text is what the model sees: normalised (leetspeak folded, lower-cased).
    assert_eq!(
        example.text,
        modbot::engine::normalize::normalize("Y0U are a cl0wn, go away", &Default::default()).text
    );
    store.close().await;
}

#[tokio::test]
async fn a_client_that_does_not_read_slows_its_own_stream() {
    let server = TestServer::start(|_| {}).await;
    let (tx, mut responses) = open(&server, 1).await;
    let total = 20_000;
    let sent = Arc::new(AtomicUsize::new(0));
    let producer = {
        let sent = Arc::clone(&sent);
        tokio::spawn(async move {
            for i in 0..total {
                if tx
                    .send(stream_message(
                        &i.to_string(),
                        "u",
                        "a reasonably long chat message about nothing",
                        Some(T0 + i as i64 * 1000),
                    ))
                    .await
                    .is_err()
                {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Without reading, the producer soon stalls: the server stops reading once its buffer and
    // the HTTP/2 windows are full. Wait until progress stops.
    let mut last = 0;
    let mut still = 0;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = sent.load(Ordering::Relaxed);
        still = if now == last { still + 1 } else { 0 };
        last = now;
        if still >= 5 {
            break;
        }
    }
    assert!(
        still >= 5 && last < total,
        "the producer stalls while nobody reads ({last} of {total} sent)"
    );
    // Reading again lets everything through, in order.
    for i in 0..total {
        assert_eq!(next_verdict(&mut responses).await.message_id, i.to_string());
    }
    producer.await.unwrap();
    server.stop().await.expect("clean stop");
}

/// A server shutting down ends its streams: what it read is answered, then the stream ends
/// with UNAVAILABLE (so the bridge reconnects elsewhere and resends the rest), and the server
/// stops without waiting out its grace period on them.
#[tokio::test]
async fn shutdown_answers_what_was_read_and_ends_streams_with_unavailable() {
    let mut server = TestServer::start(|config| config.grpc.shutdown_grace_secs = 30).await;
    let (tx, mut responses) = open(&server, 64).await;
    tx.send(stream_message("m1", "alice", "hello there", Some(T0)))
        .await
        .unwrap();
    assert_eq!(next_verdict(&mut responses).await.message_id, "m1");
    server.signal_shutdown();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match responses.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => break status,
            }
        }
    });
    let status = ended
        .await
        .expect("the stream ends at shutdown, not after the grace");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
    assert!(status.message().contains("shutting down"), "{status}");
    // The stream no longer holds the server: it stops long before its 30 s grace.
    server.stop().await.expect("a clean stop");
    drop(tx);
}

/// A stream that opens and never says hello ends with DEADLINE_EXCEEDED after
/// `grpc.hello_timeout_ms`, instead of holding its slot for as long as its connection lives.
#[tokio::test]
async fn a_stream_without_a_hello_ends_after_the_hello_timeout() {
    let server = TestServer::start(|config| config.grpc.hello_timeout_ms = 300).await;
    let (tx, rx) = mpsc::channel::<StreamModerateRequest>(1);
    let started = std::time::Instant::now();
    let status = tokio::time::timeout(
        Duration::from_secs(10),
        server.moderation().stream_moderate(ReceiverStream::new(rx)),
    )
    .await
    .expect("the server answers within 10 s")
    .expect_err("no hello, no stream");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(
        status.message(),
        "hello: none within 300 ms of the stream opening"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    drop(tx);
    server.stop().await.expect("clean stop");
}

/// A hello naming channels more than once is served each channel once (the welcome says
/// which), and says the longest text the server takes.
#[tokio::test]
async fn a_hellos_channels_are_deduplicated() {
    let server = TestServer::start(|config| config.grpc.max_text_bytes = 1000).await;
    let (tx, rx) = mpsc::channel(4);
    let mut channels = vec!["destinygg".to_owned(); 200];
    channels.push("strims".into());
    channels.push("destinygg".into());
    tx.send(StreamModerateRequest {
        kind: Some(stream_moderate_request::Kind::Hello(Hello {
            bridge_id: "dup-bridge".into(),
            channels,
            dialect: "dgg".into(),
            bot_nick: "modbot".into(),
        })),
    })
    .await
    .unwrap();
    let mut responses = server
        .moderation()
        .stream_moderate(ReceiverStream::new(rx))
        .await
        .expect("the stream opens")
        .into_inner();
    let Some(stream_moderate_response::Kind::Welcome(welcome)) =
        responses.message().await.unwrap().unwrap().kind
    else {
        panic!("expected a welcome");
    };
    assert_eq!(welcome.channels, ["destinygg", "strims"]);
    assert_eq!(welcome.max_text_bytes, 1000);
    drop(tx);
    assert_ends(&mut responses).await;
    server.stop().await.expect("clean stop");
}

/// A text its sender cut to `grpc.max_text_bytes` (setting `original_text_bytes`) is decided
/// on what modbot saw, and its verdict says the text was cut; a whole text's verdict does not.
#[tokio::test]
async fn a_cut_texts_verdict_says_so() {
    let server = TestServer::start(|config| config.grpc.max_text_bytes = 64).await;
    let (tx, mut responses) = open(&server, 8).await;
    let StreamModerateRequest {
        kind: Some(stream_moderate_request::Kind::Event(mut cut)),
    } = stream_message(
        "m1",
        "spammer",
        "free nitro at the link below, claim it now",
        Some(T0),
    )
    else {
        unreachable!()
    };
    if let Some(chat_event::Kind::Message(message)) = &mut cut.kind {
        message.original_text_bytes = 65_000;
    }
    tx.send(StreamModerateRequest {
        kind: Some(stream_moderate_request::Kind::Event(cut)),
    })
    .await
    .unwrap();
    tx.send(stream_message(
        "m2",
        "bob",
        "a whole message",
        Some(T0 + 1000),
    ))
    .await
    .unwrap();
    let verdict = next_verdict(&mut responses).await;
    assert_eq!(verdict.message_id, "m1");
    assert!(verdict.text_truncated, "{verdict:?}");
    assert_ne!(
        verdict.decision,
        Decision::Allow as i32,
        "the beginning it saw is still moderated"
    );
    let whole = next_verdict(&mut responses).await;
    assert_eq!(whole.message_id, "m2");
    assert!(!whole.text_truncated);
    drop(tx);
    assert_ends(&mut responses).await;
    server.stop().await.expect("clean stop");
}
