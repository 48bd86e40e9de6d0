//! The test chat server (`tests/chat_server`) against `shared/chat-protocol.md`: each test is a
//! protocol point, in both dialects where they differ, checked from a real WebSocket client.

use crate::chat_server;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chat_server::{
    ChatClient, ChatServer, ChatServerOptions, CloseKind, Dialect, Message, Moderation,
    ReceivedCommand,
};
use serde_json::{Value, json};

/// For frames that must arrive.
const WAIT: Duration = Duration::from_secs(3);
const SEC_NS: u64 = 1_000_000_000;

/// Runs `$name(dialect)` as one test per dialect.
macro_rules! both_dialects {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn dgg() {
                super::$name(super::Dialect::Dgg).await
            }
            #[tokio::test]
            async fn strims() {
                super::$name(super::Dialect::Strims).await
            }
        }
    };
}

/// Options with no throttle, for the tests that are not about it.
fn unthrottled(dialect: Dialect) -> ChatServerOptions {
    let mut options = ChatServerOptions::new(dialect);
    options.throttle_base = Duration::ZERO;
    options
}

async fn server(dialect: Dialect) -> ChatServer {
    ChatServer::start_with(unthrottled(dialect)).await
}

/// Sends a PING with a unique payload and returns every frame that came before its PONG: the
/// server handles a connection's frames in order and queues replies and broadcasts under one
/// lock, so this shows what was queued for this client up to now.
async fn frames_before_pong(client: &mut ChatClient) -> Vec<(String, Value)> {
    static BARRIER: AtomicU64 = AtomicU64::new(0);
    let id = BARRIER.fetch_add(1, Ordering::Relaxed);
    client.send("PING", json!({ "barrier": id })).await;
    let mut before = Vec::new();
    loop {
        let frame = client.next_frame(WAIT).await.expect("PONG for the barrier");
        if frame.0 == "PONG" && frame.1 == json!({ "barrier": id }) {
            return before;
        }
        before.push(frame);
    }
}

/// Asserts nothing was queued for `client` (no frame before a PING's PONG).
async fn assert_quiet(client: &mut ChatClient, what: &str) {
    let frames = frames_before_pong(client).await;
    assert!(frames.is_empty(), "{what}: unexpected frames {frames:?}");
}

/// The ERR payload shape of each dialect for `code`.
fn err_payload(dialect: Dialect, code: &str) -> Value {
    match dialect {
        Dialect::Dgg => json!({ "description": code }),
        Dialect::Strims => json!(code),
    }
}

/// The next frame must be `ERR code`, in the dialect's shape.
async fn assert_err(client: &mut ChatClient, dialect: Dialect, code: &str) {
    let frame = client.next_frame(WAIT).await;
    assert_eq!(
        frame,
        Some(("ERR".to_owned(), err_payload(dialect, code))),
        "expected ERR {code}"
    );
}

/// The next frame must be a broadcast `event` from `nick`; returns its payload.
async fn assert_event(client: &mut ChatClient, event: &str, nick: &str) -> Value {
    let frame = client.next_frame(WAIT).await;
    let Some((name, payload)) = frame else {
        panic!("expected {event} from {nick}, got nothing");
    };
    assert_eq!(name, event, "payload {payload}");
    assert_eq!(payload["nick"], json!(nick), "{event} {payload}");
    payload
}

fn keys(payload: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = payload
        .as_object()
        .expect("an object payload")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    keys
}

fn assert_recent_ms(payload: &Value) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let ts = payload["timestamp"]
        .as_u64()
        .unwrap_or_else(|| panic!("timestamp in {payload}"));
    assert!(
        ts <= now && now - ts < 10_000,
        "timestamp {ts} is not Unix ms near {now}"
    );
}

fn moderation(
    moderator: &str,
    target: &str,
    event: &str,
    duration_ns: Option<u64>,
    reason: Option<&str>,
    permanent: bool,
) -> Moderation {
    Moderation {
        moderator: moderator.into(),
        target: target.into(),
        event: event.into(),
        duration_ns,
        reason: reason.map(Into::into),
        permanent,
    }
}

fn mute(nick: &str, duration_ns: u64) -> Value {
    json!({ "data": nick, "duration": duration_ns })
}

fn ban(nick: &str, reason: &str, duration_ns: u64, permanent: bool) -> Value {
    json!({
        "nick": nick,
        "reason": reason,
        "duration": duration_ns,
        "ispermanent": permanent,
        "banip": false,
    })
}

/// A text frame of exactly `len` bytes: a PING whose payload is padded.
fn ping_of_len(len: usize) -> String {
    let overhead = r#"PING {"pad":""}"#.len();
    let text = format!(r#"PING {{"pad":"{}"}}"#, "x".repeat(len - overhead));
    assert_eq!(text.len(), len);
    text
}

// ---------------------------------------------------------------------------------------------
// Framing

async fn framing_closes(dialect: Dialect) {
    let chat = server(dialect).await;
    chat.add_user("t-a", "alice", &[]);
    let cases: [(Message, u16); 4] = [
        (Message::text("MSG"), 1002),
        (Message::text(r#"PING{}"#), 1002),
        (Message::binary(b"MSG {\"data\":\"hi\"}".to_vec()), 1003),
        (Message::text(ping_of_len(6_145)), 1009),
    ];
    for (message, code) in cases {
        let mut client = chat.client(Some("t-a")).await;
        let shown = format!("{message:?}");
        client.send_raw(message).await;
        let frames = client.wait_closed(WAIT).await;
        assert_eq!(frames, Some(CloseKind::Clean(Some(code))), "{shown:.60}");
    }
    chat.wait_for_connections(WAIT, |open, accepted| open == 0 && accepted == 4)
        .await;

    // 6,144 bytes is the limit, not over it: answered, and the connection stays.
    let mut client = chat.client(Some("t-a")).await;
    let exact = ping_of_len(6_144);
    client.send_raw(Message::text(exact.clone())).await;
    let frames = frames_before_pong(&mut client).await;
    let pongs: Vec<_> = frames.iter().filter(|(e, _)| e == "PONG").collect();
    assert_eq!(
        pongs.len(),
        1,
        "the 6,144-byte PING is answered: {frames:?}"
    );
    assert_eq!(pongs[0].1["pad"].as_str().map(str::len), Some(6_144 - 15));
    // A 6,144-byte MSG is a valid frame but too long a message.
    let text = "y".repeat(6_144 - r#"MSG {"data":""}"#.len());
    client.say(&text).await;
    assert_err(&mut client, dialect, "invalidmsg").await;
    assert_eq!(client.close_kind(), None);
    assert_eq!(chat.open_connections(), 1);
}
both_dialects!(framing_closes);

async fn malformed_json(dialect: Dialect) {
    let chat = server(dialect).await;
    chat.add_user("t-m", "mod", &["moderator"]);
    chat.add_user("t-x", "target", &[]);
    let mut client = chat.client(Some("t-m")).await;
    client.expect("JOIN", WAIT).await.expect("own JOIN");
    for raw in [
        r#"MSG {"data":"#,
        "MSG hello",
        "MSG ",
        "PING {",
        r#"MUTE {"data":"target","duration":}"#,
        // Valid JSON of the wrong shape.
        r#"MSG {"data":5}"#,
        r#"MSG "hi""#,
        "BAN []",
        r#"MUTE {"data":"target","duration":-1}"#,
        r#"MUTE {"data":"target","duration":1.5}"#,
        r#"MUTE {"data":"target","duration":"60"}"#,
        r#"BAN {"nick":"target","reason":"r","ispermanent":"yes"}"#,
    ] {
        client.send_raw(Message::text(raw)).await;
        let frame = client.next_frame(WAIT).await;
        assert_eq!(
            frame,
            Some(("ERR".to_owned(), err_payload(dialect, "protocolerror"))),
            "{raw}"
        );
    }
    // Missing and null fields are zero values, as Go's decoder makes them.
    client.send_raw(Message::text("MSG null")).await;
    assert_err(&mut client, dialect, "invalidmsg").await;
    client.send_raw(Message::text(r#"MSG {"data":null}"#)).await;
    assert_err(&mut client, dialect, "invalidmsg").await;
    client.send("MUTE", json!({})).await;
    assert_err(&mut client, dialect, "nopermission").await;
    assert_eq!(client.close_kind(), None, "errors do not close");
    assert!(chat.moderations().is_empty());

    let commands = chat.commands();
    assert_eq!(
        commands[0],
        ReceivedCommand {
            nick: "mod".into(),
            event: "MSG".into(),
            payload: json!(r#"{"data":"#),
            error: Some("protocolerror".into()),
        }
    );
    assert_eq!(commands[5].payload, json!({ "data": 5 }));
}
both_dialects!(malformed_json);

async fn unknown_events_ignored(dialect: Dialect) {
    let chat = server(dialect).await;
    chat.add_user("t-a", "alice", &[]);
    let mut client = chat.client(Some("t-a")).await;
    client.expect("JOIN", WAIT).await.expect("own JOIN");
    for raw in [
        "FOO {}",
        r#"msg {"data":"lowercase is another event"}"#,
        "WHISPER not json at all",
        " {}",
    ] {
        client.send_raw(Message::text(raw)).await;
    }
    assert_quiet(&mut client, "unknown events").await;
    let commands = chat.commands();
    assert_eq!(commands.len(), 5, "{commands:?}");
    assert_eq!(commands[0].event, "FOO");
    assert_eq!(commands[2].payload, json!("not json at all"));
    assert_eq!(commands[3].event, "");
    assert!(commands.iter().all(|c| c.error.is_none()), "{commands:?}");
}
both_dialects!(unknown_events_ignored);

// ---------------------------------------------------------------------------------------------
// Presence

async fn names_on_connect(dialect: Dialect) {
    let chat = server(dialect).await;
    chat.add_user("t-a", "alice", &["subscriber", "flair3"]);
    chat.add_user("t-b", "bob", &["moderator"]);
    chat.add_user("t-c", "carol", &[]);
    let _guest = chat.client(None).await;
    let _alice1 = chat.client(Some("t-a")).await;
    let _alice2 = chat.client(Some("t-a")).await;
    let mut bob = chat.connect(Some("t-b")).await;
    let (event, names) = bob.next_frame(WAIT).await.expect("a first frame");
    assert_eq!(event, "NAMES");
    assert_eq!(
        names,
        json!({
            "users": [
                { "nick": "alice", "features": ["subscriber", "flair3"] },
                { "nick": "bob", "features": ["moderator"] },
            ],
            "connectioncount": 4,
        }),
        "guests and offline users are not listed; every connection is counted"
    );
    // Then the new user's JOIN, to every connection including its own.
    let join = assert_event(&mut bob, "JOIN", "bob").await;
    assert_eq!(keys(&join), ["features", "nick", "timestamp"]);
}
both_dialects!(names_on_connect);

async fn bad_token_is_guest(dialect: Dialect) {
    let chat = server(dialect).await;
    chat.add_user("t-a", "alice", &[]);
    let mut observer = chat.client(None).await;
    let mut stranger = chat.client(Some("not-a-token")).await;
    assert_eq!(stranger.names().unwrap()["users"], json!([]));
    assert_eq!(stranger.names().unwrap()["connectioncount"], json!(2));
    stranger.say("hello").await;
    assert_err(&mut stranger, dialect, "needlogin").await;
    stranger.send("MUTE", mute("alice", 0)).await;
    assert_err(&mut stranger, dialect, "needlogin").await;
    assert_quiet(&mut observer, "a guest neither joins nor talks").await;
    assert_eq!(chat.commands()[0].nick, "");

    // The other dialect's cookie name is not a login.
    let other = match dialect {
        Dialect::Dgg => "jwt=t-a",
        Dialect::Strims => "authtoken=t-a",
    };
    let mut wrong = ChatClient::connect(&chat.url, Some(other)).await.unwrap();
    let (_, names) = wrong.next_frame(WAIT).await.unwrap();
    assert_eq!(names["users"], json!([]));
    // Among other cookies, the right one logs in.
    let cookie = format!("theme=dark; {}; x=y", chat.cookie("t-a"));
    let mut right = ChatClient::connect(&chat.url, Some(&cookie)).await.unwrap();
    let (_, names) = right.next_frame(WAIT).await.unwrap();
    assert_eq!(names["users"][0]["nick"], json!("alice"));
}
both_dialects!(bad_token_is_guest);

async fn join_quit_first_and_last(dialect: Dialect) {
    let chat = server(dialect).await;
    chat.add_user("t-a", "alice", &["vip"]);
    let mut observer = chat.client(None).await;

    let mut alice1 = chat.client(Some("t-a")).await;
    let join = assert_event(&mut observer, "JOIN", "alice").await;
    assert_eq!(join["features"], json!(["vip"]));
    assert_recent_ms(&join);
    assert_event(&mut alice1, "JOIN", "alice").await;

    let alice2 = chat.client(Some("t-a")).await;
    let guest = chat.client(None).await;
    assert_quiet(&mut observer, "a second connection and a guest do not JOIN").await;
    assert_quiet(&mut alice1, "no JOIN for alice's second connection").await;

    alice2.close().await;
    guest.close().await;
    chat.wait_for_connections(WAIT, |open, _| open == 2).await;
    assert_quiet(&mut observer, "no QUIT while alice has a connection").await;

    alice1.close().await;
    let quit = assert_event(&mut observer, "QUIT", "alice").await;
    assert_eq!(keys(&quit), ["features", "nick", "timestamp"]);
    assert_eq!(quit["features"], json!(["vip"]));
    assert_recent_ms(&quit);

    // An abrupt drop is a disconnect too.
    let _again = chat.client(Some("t-a")).await;
    assert_event(&mut observer, "JOIN", "alice").await;
    chat.drop_connections();
    chat.wait_for_connections(WAIT, |open, _| open == 0).await;
}
both_dialects!(join_quit_first_and_last);

// ---------------------------------------------------------------------------------------------
// Messages

async fn broadcast_to_sender(dialect: Dialect) {
    let chat = server(dialect).await;
    chat.add_user("t-a", "alice", &["subscriber"]);
    chat.add_user("t-b", "bob", &[]);
    let mut alice = chat.client(Some("t-a")).await;
    let mut bob = chat.client(Some("t-b")).await;
    alice.expect("JOIN", WAIT).await; // alice's
    alice.expect("JOIN", WAIT).await; // bob's
    bob.expect("JOIN", WAIT).await;

    alice.say("  hello chat  ").await;
    for client in [&mut alice, &mut bob] {
        let msg = assert_event(client, "MSG", "alice").await;
        assert_eq!(msg["data"], json!("hello chat"), "the text is trimmed");
        assert_eq!(msg["features"], json!(["subscriber"]));
        assert_recent_ms(&msg);
        match dialect {
            Dialect::Dgg => assert_eq!(keys(&msg), ["data", "features", "nick", "timestamp"]),
            Dialect::Strims => {
                assert_eq!(
                    keys(&msg),
                    ["data", "entities", "features", "nick", "timestamp"]
                );
                assert_eq!(msg["entities"], json!({}));
            }
        }
    }
    let commands = chat.commands();
    assert_eq!(
        commands,
        [ReceivedCommand {
            nick: "alice".into(),
            event: "MSG".into(),
            payload: json!({ "data": "  hello chat  " }),
            error: None,
        }]
    );
}
both_dialects!(broadcast_to_sender);

async fn message_length(dialect: Dialect) {
    let chat = server(dialect).await;
    chat.add_user("t-a", "alice", &[]);
    let mut alice = chat.client(Some("t-a")).await;
    alice.expect("JOIN", WAIT).await;
    for bad in ["", "   ", "\n\t"] {
        alice.say(bad).await;
        assert_err(&mut alice, dialect, "invalidmsg").await;
    }
    let too_long = "é".repeat(513);
    alice.say(&too_long).await;
    assert_err(&mut alice, dialect, "invalidmsg").await;
    // 512 characters (1,024 bytes) after trimming is the longest.
    let longest = format!("  {}  ", "é".repeat(512));
    alice.say(&longest).await;
    let msg = assert_event(&mut alice, "MSG", "alice").await;
    assert_eq!(msg["data"].as_str().unwrap().chars().count(), 512);
    alice.say("x").await;
    assert_event(&mut alice, "MSG", "alice").await;
}
both_dialects!(message_length);

async fn duplicate(dialect: Dialect) {
    let chat = server(dialect).await;
    chat.add_user("t-a", "alice", &[]);
    let mut alice = chat.client(Some("t-a")).await;
    alice.expect("JOIN", WAIT).await;
    alice.say("same").await;
    assert_event(&mut alice, "MSG", "alice").await;
    alice.say("same").await;
    assert_err(&mut alice, dialect, "duplicate").await;
    alice.say("  same ").await;
    assert_err(&mut alice, dialect, "duplicate").await;
    alice.say("Same").await;
    assert_event(&mut alice, "MSG", "alice").await;
    alice.say("same").await;
    assert_event(&mut alice, "MSG", "alice").await;
    // Per user: another connection of alice's has the same last message.
    let mut alice2 = chat.client(Some("t-a")).await;
    alice2.say("same").await;
    assert_err(&mut alice2, dialect, "duplicate").await;
}
both_dialects!(duplicate);

// ---------------------------------------------------------------------------------------------
// Moderation

async fn mute_and_unmute(dialect: Dialect) {
    let chat = server(dialect).await;
    chat.add_user("t-m", "Mod", &["moderator"]);
    chat.add_user("t-x", "Target", &["subscriber"]);
    let mut observer = chat.client(None).await;
    let mut moderator = chat.client(Some("t-m")).await;
    let mut target = chat.client(Some("t-x")).await;
    observer.expect("JOIN", WAIT).await;
    observer.expect("JOIN", WAIT).await;
    moderator.expect("JOIN", WAIT).await;
    moderator.expect("JOIN", WAIT).await;
    target.expect("JOIN", WAIT).await;

    // Nicks match case-insensitively; events name the registered nick.
    moderator.send("MUTE", mute("target", 90 * SEC_NS)).await;
    for client in [&mut observer, &mut moderator, &mut target] {
        let event = assert_event(client, "MUTE", "Mod").await;
        assert_eq!(event["data"], json!("Target"));
        assert_eq!(event["features"], json!(["moderator"]));
        assert_recent_ms(&event);
        match dialect {
            Dialect::Dgg => {
                assert_eq!(
                    keys(&event),
                    ["data", "duration", "features", "nick", "timestamp"]
                );
                assert_eq!(event["duration"], json!(90), "seconds out");
            }
            Dialect::Strims => {
                assert_eq!(keys(&event), ["data", "features", "nick", "timestamp"])
            }
        }
    }
    assert!(chat.is_muted("target"));
    assert_eq!(
        chat.moderations(),
        [moderation(
            "Mod",
            "Target",
            "MUTE",
            Some(90 * SEC_NS),
            None,
            false
        )]
    );

    target.say("let me speak").await;
    let (event, err) = target.next_frame(WAIT).await.unwrap();
    assert_eq!(event, "ERR");
    match dialect {
        Dialect::Dgg => {
            assert_eq!(err["description"], json!("muted"));
            let left = err["muteTimeLeft"].as_u64().expect("muteTimeLeft");
            assert!((89..=90).contains(&left), "muteTimeLeft {left}");
        }
        Dialect::Strims => assert_eq!(err, json!("muted")),
    }
    assert_quiet(&mut observer, "a muted message is not broadcast").await;

    moderator.send("UNMUTE", json!({ "data": "TARGET" })).await;
    let event = assert_event(&mut observer, "UNMUTE", "Mod").await;
    assert_eq!(keys(&event), ["data", "features", "nick", "timestamp"]);
    assert_eq!(event["data"], json!("Target"));
    assert!(!chat.is_muted("Target"));
    target.expect("UNMUTE", WAIT).await.unwrap();
    target.say("thanks").await;
    assert_event(&mut target, "MSG", "Target").await;
    assert_event(&mut observer, "MSG", "Target").await;

    // 0 means 10 minutes; a sub-second remainder is cut from the seconds sent.
    moderator.send("MUTE", mute("Target", 0)).await;
    let event = assert_event(&mut observer, "MUTE", "Mod").await;
    moderator.send("MUTE", mute("Target", 1_500_000_000)).await;
    let short = assert_event(&mut observer, "MUTE", "Mod").await;
    if dialect == Dialect::Dgg {
        assert_eq!(event["duration"], json!(600));
        assert_eq!(short["duration"], json!(1));
    } else {
        assert!(event.get("duration").is_none() && short.get("duration").is_none());
    }
    // Seven days is the longest mute; a nanosecond more is a protocol error.
    let week = 7 * 24 * 3600 * SEC_NS;
    moderator.send("MUTE", mute("Target", week)).await;
    assert_event(&mut observer, "MUTE", "Mod").await;
    frames_before_pong(&mut moderator).await;
    moderator.send("MUTE", mute("Target", week + 1)).await;
    assert_err(&mut moderator, dialect, "protocolerror").await;
    assert_quiet(&mut observer, "a refused mute is not broadcast").await;

    let durations: Vec<_> = chat
        .moderations()
        .iter()
        .map(|m| (m.event.clone(), m.duration_ns))
        .collect();
    assert_eq!(
        durations,
        [
            ("MUTE".to_owned(), Some(90 * SEC_NS)),
            ("UNMUTE".to_owned(), None),
            ("MUTE".to_owned(), Some(600 * SEC_NS)),
            ("MUTE".to_owned(), Some(1_500_000_000)),
            ("MUTE".to_owned(), Some(week)),
        ]
    );
}
both_dialects!(mute_and_unmute);

async fn mute_expires(dialect: Dialect) {
    let chat = server(dialect).await;
    chat.add_user("t-m", "mod", &["moderator"]);
    chat.add_user("t-x", "target", &[]);
    let mut moderator = chat.client(Some("t-m")).await;
    let mut target = chat.client(Some("t-x")).await;
    moderator.send("MUTE", mute("target", 300_000_000)).await;
    target.expect("MUTE", WAIT).await.unwrap();
    target.say("still muted?").await;
    let err = target.expect("ERR", WAIT).await.unwrap();
    assert_eq!(chat_server::err_code(&err).as_deref(), Some("muted"));
    if dialect == Dialect::Dgg {
        assert_eq!(err["muteTimeLeft"], json!(1), "rounded up");
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    target.say("still muted?").await;
    assert_event(&mut target, "MSG", "target").await;
}
both_dialects!(mute_expires);

async fn ban_and_unban(dialect: Dialect) {
    let chat = server(dialect).await;
    chat.add_user("t-m", "mod", &["moderator"]);
    chat.add_user("t-x", "target", &[]);
    let mut observer = chat.client(None).await;
    let mut moderator = chat.client(Some("t-m")).await;
    let mut target = chat.client(Some("t-x")).await;
    observer.expect("JOIN", WAIT).await;
    observer.expect("JOIN", WAIT).await;
    moderator.expect("JOIN", WAIT).await;
    moderator.expect("JOIN", WAIT).await;
    target.expect("JOIN", WAIT).await;

    for reason in ["", "   "] {
        moderator.send("BAN", ban("target", reason, 0, false)).await;
        assert_err(&mut moderator, dialect, "needbanreason").await;
    }
    moderator
        .send("BAN", json!({ "nick": "target", "duration": 0 }))
        .await;
    assert_err(&mut moderator, dialect, "needbanreason").await;
    moderator.send("BAN", ban("nobody", "spam", 0, false)).await;
    assert_err(&mut moderator, dialect, "notfound").await;
    assert_quiet(&mut observer, "refused bans are not broadcast").await;
    assert!(chat.moderations().is_empty());

    moderator.send("BAN", ban("target", "spam", 0, false)).await;
    let event = assert_event(&mut observer, "BAN", "mod").await;
    assert_eq!(keys(&event), ["data", "features", "nick", "timestamp"]);
    assert_eq!(event["data"], json!("target"));
    assert_eq!(
        chat.moderations(),
        [moderation(
            "mod",
            "target",
            "BAN",
            Some(3600 * SEC_NS),
            Some("spam"),
            false
        )]
    );
    assert!(chat.is_banned("target"));
    target.expect("BAN", WAIT).await.unwrap();
    target.say("hello?").await;
    assert_err(&mut target, dialect, "banned").await;
    assert_eq!(target.close_kind(), None, "a ban does not disconnect");
    assert_quiet(&mut observer, "a banned user's message is not broadcast").await;

    moderator.send("UNBAN", json!({ "data": "target" })).await;
    let event = assert_event(&mut observer, "UNBAN", "mod").await;
    assert_eq!(keys(&event), ["data", "features", "nick", "timestamp"]);
    target.expect("UNBAN", WAIT).await.unwrap();
    target.say("hello again").await;
    assert_event(&mut target, "MSG", "target").await;

    // UNBAN also lifts a mute.
    moderator.send("MUTE", mute("target", 0)).await;
    target.expect("MUTE", WAIT).await.unwrap();
    moderator.send("UNBAN", json!({ "data": "target" })).await;
    target.expect("UNBAN", WAIT).await.unwrap();
    assert!(!chat.is_muted("target"));
    target.say("free").await;
    assert_event(&mut target, "MSG", "target").await;

    // A permanent ban, and a short one that expires.
    moderator
        .send("BAN", ban("target", "forever", 60 * SEC_NS, true))
        .await;
    target.expect("BAN", WAIT).await.unwrap();
    assert!(chat.is_banned("target"));
    moderator.send("UNBAN", json!({ "data": "target" })).await;
    target.expect("UNBAN", WAIT).await.unwrap();
    moderator
        .send("BAN", ban("target", "a moment", 300_000_000, false))
        .await;
    target.expect("BAN", WAIT).await.unwrap();
    target.say("now?").await;
    assert_err(&mut target, dialect, "banned").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    target.say("now?").await;
    assert_event(&mut target, "MSG", "target").await;

    let moderations = chat.moderations();
    assert_eq!(
        moderations[4],
        moderation(
            "mod",
            "target",
            "BAN",
            Some(60 * SEC_NS),
            Some("forever"),
            true
        )
    );
    assert_eq!(moderations[6].duration_ns, Some(300_000_000));
}
both_dialects!(ban_and_unban);

async fn permissions(dialect: Dialect) {
    let chat = server(dialect).await;
    chat.add_user("t-m", "mod", &["moderator"]);
    chat.add_user("t-ad", "boss", &["admin"]);
    chat.add_user("t-u", "user", &["subscriber", "vip"]);
    chat.add_user("t-p", "shield", &["protected"]);
    chat.add_user("t-o", "offline", &[]);
    let mut observer = chat.client(None).await;
    let mut moderator = chat.client(Some("t-m")).await;
    let mut admin = chat.client(Some("t-ad")).await;
    let mut user = chat.client(Some("t-u")).await;
    let mut guest = chat.client(None).await;
    observer.expect("JOIN", WAIT).await;
    observer.expect("JOIN", WAIT).await;
    observer.expect("JOIN", WAIT).await;
    for client in [&mut moderator, &mut admin, &mut user] {
        frames_before_pong(client).await;
    }

    // Not a moderator.
    for (event, payload) in [
        ("MUTE", mute("offline", 0)),
        ("BAN", ban("offline", "r", 0, false)),
        ("UNMUTE", json!({ "data": "offline" })),
        ("UNBAN", json!({ "data": "offline" })),
    ] {
        user.send(event, payload.clone()).await;
        assert_err(&mut user, dialect, "nopermission").await;
        guest.send(event, payload).await;
        assert_err(&mut guest, dialect, "needlogin").await;
    }
    // Unknown nicks: MUTE says nopermission, the others notfound.
    moderator.send("MUTE", mute("ghost", 0)).await;
    assert_err(&mut moderator, dialect, "nopermission").await;
    moderator.send("BAN", ban("ghost", "r", 0, false)).await;
    assert_err(&mut moderator, dialect, "notfound").await;
    moderator.send("UNMUTE", json!({ "data": "ghost" })).await;
    assert_err(&mut moderator, dialect, "notfound").await;
    moderator.send("UNBAN", json!({ "data": "ghost" })).await;
    assert_err(&mut moderator, dialect, "notfound").await;
    // Admin and protected users cannot be muted or banned, even by an admin.
    for nick in ["boss", "shield"] {
        moderator.send("MUTE", mute(nick, 0)).await;
        assert_err(&mut moderator, dialect, "nopermission").await;
        moderator.send("BAN", ban(nick, "r", 0, false)).await;
        assert_err(&mut moderator, dialect, "nopermission").await;
        admin.send("MUTE", mute(nick, 0)).await;
        assert_err(&mut admin, dialect, "nopermission").await;
    }
    assert_quiet(&mut observer, "nothing refused is broadcast").await;
    assert!(chat.moderations().is_empty());

    // An admin moderates; an offline registered user can be muted; UNMUTE of a user who is not
    // muted still succeeds.
    admin.send("MUTE", mute("offline", 0)).await;
    assert_event(&mut observer, "MUTE", "boss").await;
    moderator.send("UNMUTE", json!({ "data": "user" })).await;
    assert_event(&mut observer, "UNMUTE", "mod").await;
    moderator.send("MUTE", mute("mod", SEC_NS)).await;
    assert_event(&mut observer, "MUTE", "mod").await;
    assert_eq!(chat.moderations().len(), 3);

    let errors: Vec<_> = chat
        .commands()
        .iter()
        .filter(|c| c.event != "PING")
        .map(|c| (c.nick.clone(), c.error.clone()))
        .take(3)
        .collect();
    assert_eq!(
        errors,
        [
            ("user".to_owned(), Some("nopermission".to_owned())),
            (String::new(), Some("needlogin".to_owned())),
            ("user".to_owned(), Some("nopermission".to_owned())),
        ]
    );
}
both_dialects!(permissions);

/// dgg counts `bot` as a moderator; Strims does not.
async fn bot_is_moderator_on_dgg_only(dialect: Dialect) {
    let chat = server(dialect).await;
    chat.add_user("t-b", "robot", &["bot"]);
    chat.add_user("t-x", "target", &[]);
    let mut bot = chat.client(Some("t-b")).await;
    bot.expect("JOIN", WAIT).await;
    bot.send("MUTE", mute("target", 0)).await;
    match dialect {
        Dialect::Dgg => {
            let event = assert_event(&mut bot, "MUTE", "robot").await;
            assert_eq!(event["data"], json!("target"));
            assert_eq!(chat.moderations().len(), 1);
        }
        Dialect::Strims => {
            assert_err(&mut bot, dialect, "nopermission").await;
            assert!(chat.moderations().is_empty());
        }
    }
}
both_dialects!(bot_is_moderator_on_dgg_only);

// ---------------------------------------------------------------------------------------------
// Throttle

fn throttled_options(dialect: Dialect) -> ChatServerOptions {
    let mut options = ChatServerOptions::new(dialect);
    options.throttle_base = Duration::from_millis(100);
    options.throttle_reset = Duration::from_millis(600);
    options
}

/// Sends `text` and returns the ERR code, or None when it was broadcast.
async fn say_result(client: &mut ChatClient, nick: &str, text: &str) -> Option<String> {
    client.say(text).await;
    let (event, payload) = client.next_frame(WAIT).await.expect("a reply");
    match event.as_str() {
        "ERR" => chat_server::err_code(&payload),
        "MSG" => {
            assert_eq!(payload["nick"], json!(nick));
            assert_eq!(payload["data"], json!(text));
            None
        }
        other => panic!("unexpected {other} {payload}"),
    }
}

async fn throttle_and_reset(dialect: Dialect) {
    let chat = ChatServer::start_with(throttled_options(dialect)).await;
    chat.add_user("t-a", "alice", &["moderator"]);
    let mut alice = chat.client(Some("t-a")).await;
    alice.expect("JOIN", WAIT).await;
    let throttled = Some("throttled".to_owned());
    let ms = |n| tokio::time::sleep(Duration::from_millis(n));

    assert_eq!(say_result(&mut alice, "alice", "a1").await, None);
    // Within 100 ms: the factor doubles to 2, so 200 ms must pass.
    alice.say("a2").await;
    assert_err(&mut alice, dialect, "throttled").await;
    ms(250).await;
    assert_eq!(say_result(&mut alice, "alice", "a3").await, None);
    // Flooding again: the factor is 4, 400 ms.
    assert_eq!(say_result(&mut alice, "alice", "a4").await, throttled);
    ms(250).await;
    assert_eq!(
        say_result(&mut alice, "alice", "a5").await,
        throttled,
        "the factor stays up without quiet"
    );
    ms(200).await;
    assert_eq!(say_result(&mut alice, "alice", "a6").await, None);
    // 600 ms of quiet resets it: 150 ms apart passes again (with factor 4 it would not).
    ms(700).await;
    assert_eq!(say_result(&mut alice, "alice", "a7").await, None);
    ms(150).await;
    assert_eq!(say_result(&mut alice, "alice", "a8").await, None);

    let refused: Vec<_> = chat
        .commands()
        .iter()
        .filter(|c| c.error.is_some())
        .map(|c| c.payload["data"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(refused, ["a2", "a4", "a5"]);
}
both_dialects!(throttle_and_reset);

/// Moderation commands go through the same throttle as messages, never the duplicate check.
async fn throttle_covers_moderation(dialect: Dialect) {
    let chat = ChatServer::start_with(throttled_options(dialect)).await;
    chat.add_user("t-m", "mod", &["moderator"]);
    chat.add_user("t-x", "target", &[]);
    let mut moderator = chat.client(Some("t-m")).await;
    moderator.expect("JOIN", WAIT).await;

    moderator.send("MUTE", mute("target", 0)).await;
    assert_event(&mut moderator, "MUTE", "mod").await;
    moderator.send("MUTE", mute("target", 0)).await;
    assert_err(&mut moderator, dialect, "throttled").await;
    moderator.say("and a message").await;
    assert_err(&mut moderator, dialect, "throttled").await;
    tokio::time::sleep(Duration::from_millis(450)).await;
    moderator.send("MUTE", mute("target", 0)).await;
    assert_event(&mut moderator, "MUTE", "mod").await;
    tokio::time::sleep(Duration::from_millis(450)).await;
    moderator
        .send("BAN", ban("target", "spam", SEC_NS, false))
        .await;
    assert_event(&mut moderator, "BAN", "mod").await;
    moderator.send("UNBAN", json!({ "data": "target" })).await;
    assert_err(&mut moderator, dialect, "throttled").await;
    assert_eq!(chat.moderations().len(), 3);
}
both_dialects!(throttle_covers_moderation);

/// dgg's `bot` skips the throttle and the duplicate check; Strims' only the throttle.
async fn bot_skips_checks(dialect: Dialect) {
    let chat = ChatServer::start_with(throttled_options(dialect)).await;
    chat.add_user("t-b", "robot", &["bot", "moderator"]);
    chat.add_user("t-x", "target", &[]);
    let mut bot = chat.client(Some("t-b")).await;
    bot.expect("JOIN", WAIT).await;
    for text in ["one", "two", "three", "four"] {
        assert_eq!(say_result(&mut bot, "robot", text).await, None, "{text}");
    }
    let again = say_result(&mut bot, "robot", "four").await;
    match dialect {
        Dialect::Dgg => assert_eq!(again, None),
        Dialect::Strims => assert_eq!(again.as_deref(), Some("duplicate")),
    }
    for _ in 0..3 {
        bot.send("MUTE", mute("target", 0)).await;
        assert_event(&mut bot, "MUTE", "robot").await;
    }
}
both_dialects!(bot_skips_checks);

// ---------------------------------------------------------------------------------------------
// Connections

async fn too_many_connections(dialect: Dialect) {
    let chat = server(dialect).await;
    chat.add_user("t-a", "alice", &[]);
    let mut five = Vec::new();
    for _ in 0..5 {
        five.push(chat.client(Some("t-a")).await);
    }
    let mut sixth = chat.connect(Some("t-a")).await;
    let frame = sixth.next_frame(WAIT).await;
    assert_eq!(
        frame,
        Some(("ERR".to_owned(), err_payload(dialect, "toomanyconnections")))
    );
    assert_eq!(
        sixth.wait_closed(WAIT).await,
        Some(CloseKind::Clean(Some(1008)))
    );
    assert_eq!(chat.open_connections(), 5);
    assert_eq!(chat.accepted_connections(), 6);
    // The five still work, and a freed place can be taken again.
    let first = five.remove(0);
    five[0].say("still here").await;
    assert_event(&mut five[0], "MSG", "alice").await;
    first.close().await;
    chat.wait_for_connections(WAIT, |open, _| open == 4).await;
    let _again = chat.client(Some("t-a")).await;
    // Guests are not limited.
    let mut guests = Vec::new();
    for _ in 0..7 {
        guests.push(chat.client(None).await);
    }
    assert_eq!(chat.open_connections(), 12);
}
both_dialects!(too_many_connections);

async fn ping_pong(dialect: Dialect) {
    let chat = server(dialect).await;
    let mut guest = chat.client(None).await;
    for payload in [
        json!({ "timestamp": 1_700_000_000_123u64 }),
        json!("anything"),
        json!({}),
        json!([1, { "a": null }]),
    ] {
        guest.send("PING", payload.clone()).await;
        assert_eq!(guest.next_frame(WAIT).await, Some(("PONG".into(), payload)));
    }
    // Echoed verbatim, spacing included.
    guest
        .send_raw(Message::text(r#"PING {"b": 2,  "a":1}"#))
        .await;
    match guest.next_message(WAIT).await {
        Some(Message::Text(text)) => assert_eq!(text.as_str(), r#"PONG {"b": 2,  "a":1}"#),
        other => panic!("expected PONG, got {other:?}"),
    }
}
both_dialects!(ping_pong);

#[tokio::test]
async fn server_pings_and_pong_timeout() {
    let mut options = unthrottled(Dialect::Dgg);
    options.ping_interval = Duration::from_millis(100);
    options.pong_timeout = Duration::from_millis(400);
    let chat = ChatServer::start_with(options).await;
    let mut reader = chat.client(None).await;
    // Connected, but never read: its pongs are never sent.
    let mut silent = chat.client(None).await;
    let started = Instant::now();
    let reading = tokio::spawn(async move {
        let frame = reader.next_frame(Duration::from_millis(1_200)).await;
        (reader, frame)
    });
    chat.wait_for_connections(WAIT, |open, _| open == 1).await;
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "closed after {:?}, before the pong timeout",
        started.elapsed()
    );
    let (reader, frame) = reading.await.unwrap();
    assert_eq!(frame, None, "pings are not text frames");
    assert!(
        reader.pings_received() >= 8,
        "{} pings in 1.2 s at 100 ms",
        reader.pings_received()
    );
    assert_eq!(reader.close_kind(), None);
    assert_eq!(chat.open_connections(), 1, "the reader answered the pings");
    assert_eq!(silent.wait_closed(WAIT).await, Some(CloseKind::Abrupt));
}

async fn drop_connections(dialect: Dialect) {
    let chat = server(dialect).await;
    chat.add_user("t-a", "alice", &[]);
    let mut alice = chat.client(Some("t-a")).await;
    let mut guest = chat.client(None).await;
    chat.drop_connections();
    assert_eq!(alice.wait_closed(WAIT).await, Some(CloseKind::Abrupt));
    assert_eq!(guest.wait_closed(WAIT).await, Some(CloseKind::Abrupt));
    chat.wait_for_connections(WAIT, |open, accepted| open == 0 && accepted == 2)
        .await;
    // The chat is back at once: reconnecting works, and alice joins again.
    let mut alice = chat.client(Some("t-a")).await;
    assert_eq!(alice.names().unwrap()["connectioncount"], json!(1));
    assert_event(&mut alice, "JOIN", "alice").await;
    assert_eq!(chat.accepted_connections(), 3);
}
both_dialects!(drop_connections);

async fn refresh(dialect: Dialect) {
    let chat = server(dialect).await;
    chat.add_user("t-a", "alice", &[]);
    let mut alice = chat.client(Some("t-a")).await;
    alice.expect("JOIN", WAIT).await;
    chat.refresh();
    assert_eq!(
        alice.next_frame(WAIT).await,
        Some(("REFRESH".into(), json!({})))
    );
    assert_eq!(
        alice.wait_closed(WAIT).await,
        Some(CloseKind::Clean(Some(1000)))
    );
    chat.wait_for_connections(WAIT, |open, _| open == 0).await;
    let _back = chat.client(Some("t-a")).await;
    assert_eq!(chat.open_connections(), 1);
}
both_dialects!(refresh);

#[tokio::test]
async fn inject_sends_anything() {
    let chat = server(Dialect::Strims).await;
    let mut a = chat.client(None).await;
    let mut b = chat.client(None).await;
    chat.inject(Message::text(r#"BROADCAST {"data":"maintenance"}"#));
    chat.inject(Message::binary(vec![0xff, 0x00]));
    chat.inject(Message::text("garbage_without_a_space"));
    for client in [&mut a, &mut b] {
        assert_eq!(
            client.next_frame(WAIT).await,
            Some(("BROADCAST".into(), json!({ "data": "maintenance" })))
        );
        assert_eq!(
            client.next_message(WAIT).await,
            Some(Message::binary(vec![0xff, 0x00]))
        );
        assert_eq!(
            client.next_frame(WAIT).await,
            Some(("garbage_without_a_space".into(), Value::Null))
        );
    }
}

#[tokio::test]
async fn upgrade_path_and_refusing() {
    let chat = server(Dialect::Dgg).await;
    let wrong = chat.url.replace("/ws", "/chat");
    assert!(ChatClient::connect(&wrong, None).await.is_err(), "/chat");
    chat.set_refusing(true);
    assert!(
        ChatClient::connect(&chat.url, None).await.is_err(),
        "refusing"
    );
    chat.set_refusing(false);
    let _ok = chat.client(None).await;
    assert_eq!(chat.accepted_connections(), 1);
}

#[tokio::test]
async fn shutdown_closes_and_stops_accepting() {
    let chat = server(Dialect::Dgg).await;
    let mut client = chat.client(None).await;
    chat.shutdown();
    assert_eq!(
        client.wait_closed(WAIT).await,
        Some(CloseKind::Clean(Some(1001)))
    );
    assert!(ChatClient::connect(&chat.url, None).await.is_err());
}

/// Odd input never takes the server down: afterwards it still serves.
async fn hostile_input(dialect: Dialect) {
    let chat = server(dialect).await;
    chat.add_user("t-m", "mod", &["moderator"]);
    chat.add_user("t-x", "target", &[]);
    let deep = format!("PING {}{}", "[".repeat(3_000), "]".repeat(3_000));
    let frames: Vec<String> = vec![
        String::new(),
        " ".into(),
        "  ".into(),
        "MSG  {}".into(),
        "MSG\t{}".into(),
        r#"MSG {"data":"\ud800"}"#.into(),
        r#"MSG {"data":"a\u0000b"}"#.into(),
        r#"MUTE {"data":"target","duration":18446744073709551615}"#.into(),
        r#"MUTE {"data":"target","duration":99999999999999999999999}"#.into(),
        r#"BAN {"nick":"target","reason":"r","duration":9223372036854775807}"#.into(),
        r#"UNBAN {"data":"target"}"#.into(),
        r#"BAN {"nick":"target","reason":"r","duration":9223372036854775807,"ispermanent":true}"#
            .into(),
        r#"UNMUTE {"data":["target"]}"#.into(),
        r#"MSG {"data":"x","data":"y"}"#.into(),
        deep,
        "PING".into(),
    ];
    for token in [Some("t-m"), None] {
        for text in &frames {
            let mut client = chat.client(token).await;
            client.send_raw(Message::text(text.clone())).await;
            client.send("PING", json!("alive")).await;
            // Either answered (then the PONG comes) or closed: never a hang or a crash.
            let mut answered = false;
            while let Some((event, payload)) = client.next_frame(WAIT).await {
                if event == "PONG" && payload == json!("alive") {
                    answered = true;
                    break;
                }
            }
            assert!(answered || client.close_kind().is_some(), "{text:.80}");
            client.close().await;
        }
    }
    let mut client = chat.client(Some("t-m")).await;
    client.send("PING", json!(1)).await;
    assert_eq!(client.expect("PONG", WAIT).await, Some(json!(1)));
}
both_dialects!(hostile_input);

async fn private_messages(dialect: Dialect) {
    let chat = server(dialect).await;
    chat.add_user("t-m", "Mod", &["moderator"]);
    chat.add_user("t-x", "Target", &["subscriber"]);
    chat.add_user("t-o", "Other", &[]);
    let mut moderator = chat.client(Some("t-m")).await;
    let mut target = chat.client(Some("t-x")).await;
    let mut other = chat.client(Some("t-o")).await;
    frames_before_pong(&mut moderator).await;
    frames_before_pong(&mut target).await;
    frames_before_pong(&mut other).await;

    // Muted users can still be told (PRIVMSG skips the mute check).
    moderator.send("MUTE", mute("Target", 60 * SEC_NS)).await;
    frames_before_pong(&mut moderator).await;
    frames_before_pong(&mut target).await;
    frames_before_pong(&mut other).await;
    moderator
        .send(
            "PRIVMSG",
            json!({"nick": "target", "data": "  you are muted  "}),
        )
        .await;
    let (event, sent) = moderator.next_frame(WAIT).await.expect("PRIVMSGSENT");
    assert_eq!(event, "PRIVMSGSENT");
    let delivered = assert_event(&mut target, "PRIVMSG", "Mod").await;
    assert_eq!(delivered["data"], json!("you are muted"), "trimmed");
    assert_recent_ms(&delivered);
    match dialect {
        Dialect::Dgg => {
            assert_eq!(sent, json!(""));
            assert_eq!(keys(&delivered), ["data", "messageid", "nick", "timestamp"]);
        }
        Dialect::Strims => {
            assert_eq!(sent, delivered, "Strims echoes the whole message");
            assert_eq!(delivered["targetNick"], json!("Target"));
            assert_eq!(
                keys(&delivered),
                [
                    "data",
                    "entities",
                    "messageid",
                    "nick",
                    "targetNick",
                    "timestamp"
                ]
            );
        }
    }
    assert_quiet(&mut other, "a private message goes to its target only").await;
    assert_eq!(chat.private_messages().len(), 1);
    assert_eq!(chat.private_messages()[0].to, "Target");

    // Refusals, in the document's order.
    moderator
        .send("PRIVMSG", json!({"nick": "Target", "data": {"nick": "x"}}))
        .await;
    assert_err(&mut moderator, dialect, "protocolerror").await;
    moderator
        .send("PRIVMSG", json!({"nick": "Target", "data": "   "}))
        .await;
    assert_err(&mut moderator, dialect, "invalidmsg").await;
    moderator
        .send(
            "PRIVMSG",
            json!({"nick": "Target", "data": "x".repeat(513)}),
        )
        .await;
    assert_err(&mut moderator, dialect, "invalidmsg").await;
    moderator
        .send("PRIVMSG", json!({"nick": "Nobody", "data": "hello"}))
        .await;
    assert_err(&mut moderator, dialect, "notfound").await;
    let mut guest = chat.client(None).await;
    frames_before_pong(&mut guest).await;
    guest
        .send("PRIVMSG", json!({"nick": "Target", "data": "hello"}))
        .await;
    assert_err(&mut guest, dialect, "needlogin").await;
    assert_eq!(
        chat.private_messages().len(),
        1,
        "nothing refused was delivered"
    );
}
both_dialects!(private_messages);
