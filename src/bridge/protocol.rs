//! The destiny.gg chat protocol and its Strims dialect: frames in, commands out.
//!
//! A frame is `EVENT` + one space + a JSON payload (`MSG {"nick":"x","data":"hi"}`). Parsing
//! never panics and never allocates more than the frame: a frame that is not what the
//! protocol says is a [`FrameError`] naming what was wrong, for the caller to log and skip.
//! Both dialects are accepted at once: an `ERR` may be `{"description":"code"}` (destiny.gg)
//! or a bare string (Strims), and a `MUTE` may carry destiny.gg's `duration` in seconds.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::Value;

/// Largest frame the chat servers accept from a client; they close the connection for a
/// longer one. It bounds the bridge's commands, not what the servers send.
pub const MAX_FRAME_BYTES: usize = 6144;

/// Largest frame the bridge reads from a chat server (and the WebSocket message limit). The
/// servers send far larger frames than they accept: a busy chat's `NAMES` lists every user
/// (~50 bytes each: 16 MiB is ~300,000 users), and a Strims `MSG` carries its entities, so a
/// 512-character message can be a 64 KB frame. Only a frame past this ends the connection.
pub const MAX_SERVER_FRAME_BYTES: usize = 16 << 20;

/// Longest ban reason sent, in characters (the reason is shown in chat; the frame must fit).
pub const MAX_REASON_CHARS: usize = 500;

/// Longest private message sent, in characters after trimming (as the chats bound `MSG`).
pub const MAX_PRIVMSG_CHARS: usize = 512;

/// Longest mute the servers accept (longer is a `protocolerror`).
pub const MAX_MUTE: Duration = Duration::from_secs(7 * 86_400);

/// Which chat server a bridge talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// destiny.gg (`authtoken` cookie).
    Dgg,
    /// Strims (`jwt` cookie).
    Strims,
}

impl Dialect {
    /// `dgg` or `strims`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "dgg" => Some(Self::Dgg),
            "strims" => Some(Self::Strims),
            _ => None,
        }
    }

    /// The name used in configuration and in the stream's hello.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dgg => "dgg",
            Self::Strims => "strims",
        }
    }

    /// The `Cookie` header that logs in with `token`.
    pub fn cookie(self, token: &str) -> String {
        match self {
            Self::Dgg => format!("authtoken={token}"),
            Self::Strims => format!("jwt={token}"),
        }
    }
}

/// A user as the chat describes them.
#[derive(Clone, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct User {
    /// The nick.
    pub nick: String,
    /// Roles and flairs: `moderator`, `admin`, `protected`, `bot`, `subscriber`, `flairN`...
    pub features: Vec<String>,
}

/// The moderation events the chat broadcasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moderation {
    /// `MUTE`.
    Mute,
    /// `BAN`.
    Ban,
    /// `UNMUTE`.
    Unmute,
    /// `UNBAN` (also lifts a mute).
    Unban,
}

impl Moderation {
    /// The event (and command) name.
    pub fn event(self) -> &'static str {
        match self {
            Self::Mute => "MUTE",
            Self::Ban => "BAN",
            Self::Unmute => "UNMUTE",
            Self::Unban => "UNBAN",
        }
    }
}

/// One frame from the chat server.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// The users connected, sent on connect.
    Names {
        /// Who is there.
        users: Vec<User>,
        /// How many connections the server counts.
        connection_count: u32,
    },
    /// A user's first connection.
    Join {
        /// Who.
        user: User,
        /// When.
        at: SystemTime,
    },
    /// A user's last connection closed.
    Quit {
        /// Who.
        user: User,
        /// When.
        at: SystemTime,
    },
    /// A chat message.
    Msg {
        /// The author.
        user: User,
        /// When the server received it.
        at: SystemTime,
        /// The server's timestamp as sent (Unix milliseconds), for stable message ids.
        timestamp_ms: u64,
        /// The text.
        text: String,
    },
    /// A moderator (or bot) acted on a user.
    Moderation {
        /// What was done.
        kind: Moderation,
        /// Who did it.
        moderator: User,
        /// To whom.
        target: String,
        /// How long, when the chat said (destiny.gg's `MUTE`).
        duration: Option<Duration>,
        /// When.
        at: SystemTime,
    },
    /// The server refused the last command; `code` is `nopermission`, `throttled`...
    Err {
        /// The error code.
        code: String,
    },
    /// The server delivered the bot's private message: destiny.gg says nothing more
    /// (`PRIVMSGSENT ""`), Strims echoes the message, naming its target.
    PrivmsgSent {
        /// The recipient, when the chat names it.
        target: Option<String>,
    },
    /// The answer to a `PING`.
    Pong,
    /// The server is about to close the connection: reconnect.
    Refresh,
    /// An event the bridge has no use for (`SUBONLY`, `BROADCAST`, `PRIVMSG`,
    /// `VIEWERSTATE`, or one it does not know).
    Other(String),
}

/// Why a frame was skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Longer than [`MAX_SERVER_FRAME_BYTES`].
    TooLong(usize),
    /// No space between the event and the payload.
    NoSpace,
    /// The event name is empty or not upper-case ASCII.
    BadEvent,
    /// The payload is not the JSON this event carries.
    Payload {
        /// The event.
        event: &'static str,
        /// What was wrong.
        message: String,
    },
    /// A binary WebSocket frame (the chats only send text).
    Binary,
    /// Text that is not UTF-8.
    NotUtf8,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong(n) => {
                write!(f, "a {n}-byte frame exceeds {MAX_SERVER_FRAME_BYTES} bytes")
            }
            Self::NoSpace => f.write_str("no space between the event and its payload"),
            Self::BadEvent => f.write_str("the event name is not upper-case ASCII"),
            Self::Payload { event, message } => write!(f, "{event}: {message}"),
            Self::Binary => f.write_str("a binary frame"),
            Self::NotUtf8 => f.write_str("text that is not UTF-8"),
        }
    }
}

impl std::error::Error for FrameError {}

#[derive(Deserialize)]
struct NamesPayload {
    #[serde(default)]
    users: Vec<User>,
    #[serde(default)]
    connectioncount: u32,
}

#[derive(Deserialize)]
struct UserEvent {
    nick: String,
    #[serde(default)]
    features: Vec<String>,
    #[serde(default)]
    timestamp: u64,
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    duration: Option<u64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ErrPayload {
    Code(String),
    Object { description: String },
}

/// Parses a frame's bytes (a text or binary WebSocket message's payload).
pub fn parse_bytes(bytes: &[u8]) -> Result<Frame, FrameError> {
    if bytes.len() > MAX_SERVER_FRAME_BYTES {
        return Err(FrameError::TooLong(bytes.len()));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| FrameError::NotUtf8)?;
    parse(text)
}

/// Parses one text frame.
pub fn parse(frame: &str) -> Result<Frame, FrameError> {
    if frame.len() > MAX_SERVER_FRAME_BYTES {
        return Err(FrameError::TooLong(frame.len()));
    }
    let (event, payload) = frame.split_once(' ').ok_or(FrameError::NoSpace)?;
    if event.is_empty() || !event.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(FrameError::BadEvent);
    }
    let moderation = |kind: Moderation| {
        user_event(payload, kind.event()).and_then(|e| {
            let target = required_data(&e, kind.event())?;
            Ok(Frame::Moderation {
                kind,
                moderator: User {
                    nick: e.nick,
                    features: e.features,
                },
                target,
                duration: e.duration.map(Duration::from_secs),
                at: millis(e.timestamp),
            })
        })
    };
    match event {
        "NAMES" => {
            let names: NamesPayload = json(payload, "NAMES")?;
            Ok(Frame::Names {
                users: names.users,
                connection_count: names.connectioncount,
            })
        }
        "JOIN" | "QUIT" => {
            let name = if event == "JOIN" { "JOIN" } else { "QUIT" };
            let e = user_event(payload, name)?;
            let user = User {
                nick: e.nick,
                features: e.features,
            };
            let at = millis(e.timestamp);
            Ok(if name == "JOIN" {
                Frame::Join { user, at }
            } else {
                Frame::Quit { user, at }
            })
        }
        "MSG" => {
            let e = user_event(payload, "MSG")?;
            let text = required_data(&e, "MSG")?;
            Ok(Frame::Msg {
                at: millis(e.timestamp),
                timestamp_ms: e.timestamp,
                user: User {
                    nick: e.nick,
                    features: e.features,
                },
                text,
            })
        }
        "MUTE" => moderation(Moderation::Mute),
        "BAN" => moderation(Moderation::Ban),
        "UNMUTE" => moderation(Moderation::Unmute),
        "UNBAN" => moderation(Moderation::Unban),
        "ERR" => match json::<ErrPayload>(payload, "ERR")? {
            ErrPayload::Code(code) | ErrPayload::Object { description: code } => {
                Ok(Frame::Err { code })
            }
        },
        "PRIVMSGSENT" => {
            let value: Value = json(payload, "PRIVMSGSENT")?;
            let target = value
                .get("targetNick")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            Ok(Frame::PrivmsgSent { target })
        }
        "PONG" => Ok(Frame::Pong),
        "REFRESH" => Ok(Frame::Refresh),
        other => Ok(Frame::Other(other.to_owned())),
    }
}

fn json<'a, T: Deserialize<'a>>(payload: &'a str, event: &'static str) -> Result<T, FrameError> {
    serde_json::from_str(payload).map_err(|e| FrameError::Payload {
        event,
        message: without_quoted_values(&e.to_string()),
    })
}

/// A JSON error's message without the input it quotes: serde names a mistyped value as
/// `string "..."`, and that may be chat text, which is logged only when configured. Field
/// names (in backticks) and positions stay.
fn without_quoted_values(message: &str) -> String {
    match (message.find('"'), message.rfind('"')) {
        (Some(first), Some(last)) if first < last => {
            format!(
                "{}(value not shown){}",
                &message[..first],
                &message[last + 1..]
            )
        }
        _ => message.to_owned(),
    }
}

fn user_event(payload: &str, event: &'static str) -> Result<UserEvent, FrameError> {
    let e: UserEvent = json(payload, event)?;
    if e.nick.trim().is_empty() {
        return Err(FrameError::Payload {
            event,
            message: "`nick` is empty".to_owned(),
        });
    }
    Ok(e)
}

fn required_data(e: &UserEvent, event: &'static str) -> Result<String, FrameError> {
    match &e.data {
        Some(data) if !data.is_empty() => Ok(data.clone()),
        _ => Err(FrameError::Payload {
            event,
            message: "`data` is missing or empty".to_owned(),
        }),
    }
}

fn millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A command the bridge sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `MUTE` a nick for a duration.
    Mute {
        /// Who.
        nick: String,
        /// How long (1 s to 7 days; the wire carries nanoseconds, and 0 would mean the
        /// server's default, so it is never sent).
        duration: Duration,
    },
    /// `BAN` a nick.
    Ban {
        /// Who.
        nick: String,
        /// Why (required by the servers).
        reason: String,
        /// How long; `None` for a permanent ban.
        duration: Option<Duration>,
    },
    /// `UNMUTE` a nick.
    Unmute {
        /// Who.
        nick: String,
    },
    /// `UNBAN` a nick (and lift any mute).
    Unban {
        /// Who.
        nick: String,
    },
    /// `PRIVMSG`: a private message to one user (a warning, or why they were muted).
    Privmsg {
        /// To whom.
        nick: String,
        /// What (cut to [`MAX_PRIVMSG_CHARS`] when encoded).
        text: String,
    },
}

/// What tells the bot that a command was carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Confirmation {
    /// The chat's broadcast of the moderation, from the bot's nick, naming the target.
    Broadcast(Moderation),
    /// `PRIVMSGSENT`.
    PrivmsgSent,
}

impl Command {
    /// The nick the command acts on.
    pub fn target(&self) -> &str {
        match self {
            Self::Mute { nick, .. }
            | Self::Ban { nick, .. }
            | Self::Unmute { nick }
            | Self::Unban { nick }
            | Self::Privmsg { nick, .. } => nick,
        }
    }

    /// The command's name on the wire.
    pub fn event(&self) -> &'static str {
        match self {
            Self::Privmsg { .. } => "PRIVMSG",
            other => match other.confirmed_by() {
                Confirmation::Broadcast(kind) => kind.event(),
                Confirmation::PrivmsgSent => "PRIVMSG",
            },
        }
    }

    /// What confirms it.
    pub fn confirmed_by(&self) -> Confirmation {
        Confirmation::Broadcast(match self {
            Self::Mute { .. } => Moderation::Mute,
            Self::Ban { .. } => Moderation::Ban,
            Self::Unmute { .. } => Moderation::Unmute,
            Self::Unban { .. } => Moderation::Unban,
            Self::Privmsg { .. } => return Confirmation::PrivmsgSent,
        })
    }

    /// The frame, always within [`MAX_FRAME_BYTES`] (nicks are short; a reason is cut to
    /// [`MAX_REASON_CHARS`]).
    pub fn encode(&self) -> String {
        let payload = match self {
            Self::Mute { nick, duration } => {
                let duration = (*duration).clamp(Duration::from_secs(1), MAX_MUTE);
                serde_json::json!({"data": nick, "duration": nanos(duration)})
            }
            Self::Ban {
                nick,
                reason,
                duration,
            } => {
                let mut reason: String = reason.trim().chars().take(MAX_REASON_CHARS).collect();
                if reason.is_empty() {
                    reason = "modbot".to_owned();
                }
                let duration = duration.map_or(0, |d| nanos(d.max(Duration::from_secs(1))));
                serde_json::json!({
                    "nick": nick,
                    "reason": reason,
                    "duration": duration,
                    "ispermanent": duration == 0,
                    "banip": false,
                })
            }
            Self::Unmute { nick } | Self::Unban { nick } => serde_json::json!({"data": nick}),
            Self::Privmsg { nick, text } => {
                let text: String = text.trim().chars().take(MAX_PRIVMSG_CHARS).collect();
                serde_json::json!({"nick": nick, "data": text})
            }
        };
        format!("{} {}", self.event(), Value::to_string(&payload))
    }
}

/// A duration in whole nanoseconds, saturating (a `u64` holds 584 years).
/// The `SUBONLY` command turning subscriber-only mode on or off.
pub fn subonly_frame(on: bool) -> String {
    let payload = serde_json::json!({"data": if on { "on" } else { "off" }});
    format!("SUBONLY {payload}")
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_errors_do_not_quote_the_chat_text() {
        let secret = "my private words";
        for frame in [
            format!(r#"MSG {{"nick":"Bob","features":[],"timestamp":"{secret}","data":"hi"}}"#),
            format!(r#"MSG {{"nick":"Bob","features":"{secret}","timestamp":1,"data":"hi"}}"#),
            format!(
                r#"MUTE {{"nick":"Mod","features":[],"timestamp":1,"data":"x","duration":"{secret}"}}"#
            ),
        ] {
            let error = parse(&frame).unwrap_err();
            let shown = error.to_string();
            assert!(matches!(error, FrameError::Payload { .. }), "{shown}");
            assert!(!shown.contains("private"), "{shown}");
            assert!(shown.contains("(value not shown)"), "{shown}");
            assert!(shown.contains("line 1 column"), "{shown}");
        }
        let missing = parse(r#"MSG {"features":[],"timestamp":1,"data":"hi"}"#)
            .unwrap_err()
            .to_string();
        assert!(missing.contains("`nick`"), "{missing}");
    }

    #[test]
    fn dgg_frames() {
        let names = parse(
            r#"NAMES {"users":[{"nick":"Bob","features":["subscriber"]},{"nick":"Mod","features":["moderator"]}],"connectioncount":7}"#,
        )
        .unwrap();
        assert_eq!(
            names,
            Frame::Names {
                users: vec![
                    User {
                        nick: "Bob".into(),
                        features: vec!["subscriber".into()]
                    },
                    User {
                        nick: "Mod".into(),
                        features: vec!["moderator".into()]
                    },
                ],
                connection_count: 7
            }
        );
        let msg =
            parse(r#"MSG {"nick":"Bob","features":[],"timestamp":1700000000123,"data":"hi all"}"#)
                .unwrap();
        assert_eq!(
            msg,
            Frame::Msg {
                user: User {
                    nick: "Bob".into(),
                    features: vec![]
                },
                at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
                timestamp_ms: 1_700_000_000_123,
                text: "hi all".into()
            }
        );
        let mute = parse(
            r#"MUTE {"nick":"Mod","features":["moderator"],"timestamp":1,"data":"Bob","duration":600}"#,
        )
        .unwrap();
        let Frame::Moderation {
            kind,
            moderator,
            target,
            duration,
            ..
        } = mute
        else {
            panic!("a moderation: {mute:?}")
        };
        assert_eq!(kind, Moderation::Mute);
        assert_eq!(moderator.nick, "Mod");
        assert_eq!(target, "Bob");
        assert_eq!(duration, Some(Duration::from_secs(600)), "seconds on dgg");
        assert_eq!(
            parse(r#"ERR {"description":"nopermission"}"#).unwrap(),
            Frame::Err {
                code: "nopermission".into()
            }
        );
        assert_eq!(
            parse(r#"ERR {"description":"muted","muteTimeLeft":42}"#).unwrap(),
            Frame::Err {
                code: "muted".into()
            }
        );
        assert_eq!(parse("REFRESH {}").unwrap(), Frame::Refresh);
        assert_eq!(parse(r#"PONG {"timestamp":1}"#).unwrap(), Frame::Pong);
    }

    #[test]
    fn strims_frames() {
        assert_eq!(
            parse(r#"ERR "throttled""#).unwrap(),
            Frame::Err {
                code: "throttled".into()
            }
        );
        let msg = parse(
            r#"MSG {"nick":"a","features":[],"timestamp":5,"data":"x","entities":{"links":[]}}"#,
        )
        .unwrap();
        assert!(matches!(msg, Frame::Msg { ref text, .. } if text == "x"));
        let mute = parse(r#"MUTE {"nick":"m","features":[],"timestamp":5,"data":"a"}"#).unwrap();
        assert!(matches!(mute, Frame::Moderation { duration: None, .. }));
        assert_eq!(
            parse(r#"VIEWERSTATE {"nick":"a","online":true,"channel":{}}"#).unwrap(),
            Frame::Other("VIEWERSTATE".into())
        );
    }

    #[test]
    fn bad_frames_are_named_errors() {
        assert_eq!(parse("MSG"), Err(FrameError::NoSpace));
        assert_eq!(parse(""), Err(FrameError::NoSpace));
        assert_eq!(parse(" {}"), Err(FrameError::BadEvent));
        assert_eq!(parse("msg {}"), Err(FrameError::BadEvent));
        assert!(matches!(
            parse("MSG {not json"),
            Err(FrameError::Payload { event: "MSG", .. })
        ));
        assert!(matches!(
            parse(r#"MSG {"nick":"","data":"x"}"#),
            Err(FrameError::Payload { event: "MSG", .. })
        ));
        assert!(matches!(
            parse(r#"MUTE {"nick":"m"}"#),
            Err(FrameError::Payload { event: "MUTE", .. })
        ));
        assert!(matches!(
            parse("ERR 42"),
            Err(FrameError::Payload { event: "ERR", .. })
        ));
        // Larger than a client may send, but the servers send such frames: read.
        let large = format!("MSG {{\"nick\":\"a\",\"data\":\"{}\"}}", "x".repeat(70_000));
        assert!(matches!(parse(&large), Ok(Frame::Msg { text, .. }) if text.len() == 70_000));
        let huge = format!(
            "MSG {{\"nick\":\"a\",\"data\":\"{}\"}}",
            "x".repeat(MAX_SERVER_FRAME_BYTES)
        );
        assert_eq!(parse(&huge), Err(FrameError::TooLong(huge.len())));
        assert_eq!(
            parse_bytes(b"MSG {\"data\":\"\xff\"}"),
            Err(FrameError::NotUtf8)
        );
        assert_eq!(
            parse("SOMETHINGNEW {}").unwrap(),
            Frame::Other("SOMETHINGNEW".into())
        );
    }

    #[test]
    fn commands_carry_nanoseconds() {
        let mute = Command::Mute {
            nick: "Bob".into(),
            duration: Duration::from_secs(60),
        };
        assert_eq!(
            mute.encode(),
            r#"MUTE {"data":"Bob","duration":60000000000}"#
        );
        // Never 0 (the server's 10 minutes), never over 7 days (a protocolerror).
        let short = Command::Mute {
            nick: "b".into(),
            duration: Duration::ZERO,
        };
        assert!(short.encode().contains(r#""duration":1000000000"#));
        let long = Command::Mute {
            nick: "b".into(),
            duration: Duration::from_secs(30 * 86_400),
        };
        assert!(long.encode().contains(r#""duration":604800000000000"#));
        let ban = Command::Ban {
            nick: "Bob".into(),
            reason: "spam".into(),
            duration: None,
        };
        let (event, payload) = ban
            .encode()
            .split_once(' ')
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .unwrap();
        assert_eq!(event, "BAN");
        let payload: Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(payload["nick"], "Bob");
        assert_eq!(payload["reason"], "spam");
        assert_eq!(payload["duration"], 0);
        assert_eq!(payload["ispermanent"], true);
        let timed = Command::Ban {
            nick: "Bob".into(),
            reason: "x".repeat(10_000),
            duration: Some(Duration::from_secs(3600)),
        };
        let frame = timed.encode();
        assert!(frame.len() <= MAX_FRAME_BYTES);
        assert!(frame.contains(r#""duration":3600000000000"#));
        assert!(frame.contains(r#""ispermanent":false"#));
        assert_eq!(
            Command::Unban { nick: "Bob".into() }.encode(),
            r#"UNBAN {"data":"Bob"}"#
        );
    }

    /// Property test: any bytes, and any mutation of valid frames, parse to a frame or a
    /// named error, never a panic; every accepted frame was within the size limit.
    #[test]
    fn no_input_panics() {
        let valid = [
            r#"MSG {"nick":"Bob","features":["subscriber"],"timestamp":1700000000123,"data":"hi"}"#,
            r#"MUTE {"nick":"Mod","features":[],"timestamp":1,"data":"Bob","duration":600}"#,
            r#"NAMES {"users":[{"nick":"a","features":[]}],"connectioncount":1}"#,
            r#"ERR {"description":"throttled"}"#,
            r#"ERR "nopermission""#,
            r#"JOIN {"nick":"a","features":[],"timestamp":3}"#,
            "REFRESH {}",
        ];
        let mut seed = 0x5eed_u64;
        let mut next = move || {
            // SplitMix64.
            seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let alphabet: &[u8] = b" {}[]\":,\\0123456789-.eEtruefalsnMSGUTEBAR\xff\xc3\xa9\x00\n";
        for round in 0..20_000 {
            let mut bytes: Vec<u8> = valid[(next() % valid.len() as u64) as usize].into();
            match round % 4 {
                0 => {
                    // Random bytes.
                    let len = (next() % 64) as usize;
                    bytes = (0..len).map(|_| next() as u8).collect();
                }
                1 => {
                    // Replace some bytes with protocol-shaped ones.
                    for _ in 0..1 + next() % 4 {
                        let at = (next() % bytes.len() as u64) as usize;
                        bytes[at] = alphabet[(next() % alphabet.len() as u64) as usize];
                    }
                }
                2 => {
                    // Truncate.
                    bytes.truncate((next() % bytes.len() as u64) as usize);
                }
                _ => {
                    // Insert, sometimes a lot.
                    let at = (next() % bytes.len() as u64) as usize;
                    let n = if next() % 50 == 0 {
                        7000
                    } else {
                        1 + next() % 8
                    };
                    for _ in 0..n {
                        bytes.insert(at, alphabet[(next() % alphabet.len() as u64) as usize]);
                    }
                }
            }
            if parse_bytes(&bytes).is_ok() {
                assert!(bytes.len() <= MAX_FRAME_BYTES);
            }
        }
    }
}
