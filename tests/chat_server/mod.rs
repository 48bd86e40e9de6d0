//! A destiny.gg / Strims chat WebSocket server for the integration tests, written from
//! `shared/chat-protocol.md` (no real chat server can run here), and a small test client.
//!
//! Everything the protocol document states is carried out; where it is silent this server
//! decides as follows (tests in `tests/chat_server_protocol.rs` pin each point):
//!
//! - **Endpoint.** Only the path `/ws` upgrades; any other path gets HTTP 404.
//!   [`ChatServer::set_refusing`] makes every upgrade fail with HTTP 503 (a chat that is down).
//! - **Login.** The `Cookie` header of the upgrade request carries `authtoken=TOKEN` (dgg) or
//!   `jwt=TOKEN` (Strims). A missing or unknown token joins as a guest on both dialects.
//!   Guests can `PING`; every other known command gets `needlogin`.
//! - **Nicks** are looked up case-insensitively; frames and records carry the nick as it was
//!   registered with [`ChatServer::add_user`]. A registered user need not be connected to be
//!   muted or banned.
//! - **Framing.** A text frame over 6,144 bytes, a text frame with no space, or a binary frame
//!   gets a close frame (1009, 1002, 1003) and the connection is dropped. Event names are
//!   case-sensitive. An unknown event is ignored whatever its payload. For a known event the
//!   payload must be JSON (`protocolerror` otherwise); then, as Go's `encoding/json` into a
//!   struct does, a missing or `null` field is its zero value (`""`, `0`, `false`), a `null`
//!   payload is an empty object, and a field of the wrong type (a negative or fractional
//!   duration included) or a payload that is not an object is `protocolerror`. Field names
//!   must match exactly (stricter than Go, so a client that misspells one is caught).
//! - **On connect** the new connection gets `NAMES` (which counts and lists it), then a
//!   user's first connection's `JOIN` goes to every connection, the new one included. A sixth
//!   connection of one user gets `ERR toomanyconnections`, then a close frame (1008); it never
//!   gets `NAMES`. `REFRESH` is sent as `REFRESH {}`.
//! - **Order.** State changes, broadcasts and `ERR` replies are queued under one lock, so every
//!   connection sees events in one global order, and an `ERR` reply is queued as soon as the
//!   command is handled (the real servers do not promise this order: clients must not rely
//!   on it).
//! - **MSG** checks, in order: `needlogin`, payload shape (`protocolerror`), `banned`, `muted`
//!   (dgg adds `muteTimeLeft`, seconds rounded up), `invalidmsg` (1–512 Unicode scalar values
//!   after trimming whitespace), `throttled`, `duplicate` (the trimmed text equals the user's
//!   last accepted message, case-sensitively). The broadcast carries the trimmed text.
//! - **Throttle.** One state per user (shared by the user's connections), applied to `MSG`,
//!   `MUTE`, `BAN`, `UNMUTE` and `UNBAN` through the same check, as the real servers throttle
//!   every command a user sends; `PING` is not throttled. The duplicate check applies to `MSG`
//!   only. With `last` the time of the user's last command that passed the check, a command
//!   at `now`: first, if the previous attempt (passed or not) is `throttle_reset` or more in
//!   the past, the delay factor goes back to 1; then, if `now - last <= throttle_base` the
//!   factor doubles (capped at 64); then the command is `throttled` if
//!   `now < last + factor × throttle_base`, else it passes and `last = now` (even if a later
//!   check such as `duplicate` refuses it). So commands more than `throttle_base` apart never
//!   get throttled while the factor is 1, and a client that floods raises its own delay until
//!   `throttle_reset` of quiet. `throttle_base` of zero disables the throttle. The `bot`
//!   feature skips the throttle (for moderation commands too) on both dialects, and the
//!   duplicate check on dgg only.
//! - **Moderation** checks, in order: `needlogin`, payload shape, `throttled`, not a moderator
//!   (`nopermission`), `MUTE` over 7 days (`protocolerror`), unknown target (`MUTE`:
//!   `nopermission`; others: `notfound`), `BAN` with an empty (after trimming) reason
//!   (`needbanreason`), `MUTE`/`BAN` of an `admin` or `protected` user (`nopermission`).
//!   dgg's `MUTE` event gives the duration in whole seconds, rounded down (Strims none).
//!   Moderators may act on other moderators and on themselves. `UNMUTE` and `UNBAN` succeed
//!   (and broadcast) even when there is nothing to lift. A `BAN` does not disconnect: the
//!   banned user keeps reading, and its `MSG`s get `banned` until it expires or `UNBAN`.
//!   A ban whose end does not fit in the clock is permanent. [`Moderation::duration_ns`] is
//!   the effective duration (0 replaced by the default) for `MUTE` and `BAN` (a permanent ban
//!   too), `None` for `UNMUTE`/`UNBAN`; `banip` is accepted and not modelled.
//! - **Keepalive.** A WebSocket ping goes out every `ping_interval`; a connection from which no
//!   pong has arrived for `pong_timeout` (counted from connect or the last pong; other frames
//!   do not count) is dropped without a close frame. A zero interval or timeout disables it.
//! - **PRIVMSG** `{"nick":target,"data":text}` checks, in order: `needlogin`, payload shape
//!   (`protocolerror`, e.g. `data` that is not a string), `throttled` (as `MSG`; no mute,
//!   ban or sub-only check, as the document says), `invalidmsg` (1–512 characters after
//!   trimming), an unknown target (`notfound`: the document is silent; the servers look the
//!   nick up). The target's connections get `PRIVMSG {"messageid","timestamp","nick":sender,
//!   "data"}` (Strims adds `targetNick` and `entities`); the sending connection gets
//!   `PRIVMSGSENT ""` on dgg, the whole PRIVMSG object on Strims. [`ChatServer::private_messages`]
//!   lists the messages delivered.
//! - [`ChatServer::commands`] lists every text frame that had a space (unknown events too,
//!   with `error: None`); a payload that is not JSON is recorded as a JSON string of its text.
//!
//! - **SUBONLY** `{"data":"on"|"off"}` from one of the dialect's moderators sets
//!   subscriber-only mode and is broadcast back (`protocolerror` for another value,
//!   `nopermission` from anyone else); while it is on, `MSG` from a user who is neither a
//!   subscriber nor a moderator gets `submode`. [`ChatServer::subonly_changes`] lists the
//!   changes.
//!
//! Other server events (`BROADCAST`, `VIEWERSTATE`) are not generated; [`ChatServer::inject`]
//! sends any frame.
#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
pub use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The largest text frame the chat accepts, in bytes.
pub const MAX_FRAME_BYTES: usize = 6_144;
/// The longest chat message, in characters after trimming.
pub const MAX_MESSAGE_CHARS: usize = 512;
/// The most connections one user may hold at once.
pub const MAX_CONNECTIONS_PER_USER: usize = 5;
/// The longest mute a moderator may ask for.
pub const MAX_MUTE: Duration = Duration::from_secs(7 * 24 * 3600);
/// A mute of duration 0 lasts this long.
pub const DEFAULT_MUTE: Duration = Duration::from_secs(10 * 60);
/// A ban of duration 0 lasts this long.
pub const DEFAULT_BAN: Duration = Duration::from_secs(3600);
/// The throttle's delay factor stops doubling here.
pub const MAX_DELAY_FACTOR: u32 = 64;
/// Messages above this size are refused by the WebSocket layer itself (far above the chat's
/// own limit, which this server applies).
const TRANSPORT_LIMIT: usize = 1 << 20;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A write to a connection that does not finish within this is a dead connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Dgg,
    Strims,
}

impl Dialect {
    /// The login cookie's name.
    pub fn cookie_name(self) -> &'static str {
        match self {
            Dialect::Dgg => "authtoken",
            Dialect::Strims => "jwt",
        }
    }

    fn is_moderator(self, features: &[String]) -> bool {
        features.iter().any(|f| match self {
            Dialect::Dgg => f == "moderator" || f == "admin" || f == "bot",
            Dialect::Strims => f == "moderator" || f == "admin",
        })
    }
}

#[derive(Clone, Debug)]
pub struct ChatServerOptions {
    pub dialect: Dialect,
    /// Server WebSocket pings (zero: none).
    pub ping_interval: Duration,
    /// A connection that has not answered pings for this long is dropped (zero: never).
    pub pong_timeout: Duration,
    /// The throttle's unit delay (zero: no throttle).
    pub throttle_base: Duration,
    /// This long without a command resets the throttle's delay factor to 1.
    pub throttle_reset: Duration,
}

impl ChatServerOptions {
    pub fn new(dialect: Dialect) -> Self {
        Self {
            dialect,
            ping_interval: Duration::from_secs(10),
            pong_timeout: Duration::from_secs(60),
            throttle_base: Duration::from_millis(300),
            throttle_reset: Duration::from_secs(5 * 60),
        }
    }
}

/// A moderation command the server carried out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Moderation {
    pub moderator: String,
    pub target: String,
    /// `MUTE`, `BAN`, `UNMUTE` or `UNBAN`.
    pub event: String,
    /// The duration in force (0 replaced by the default) for `MUTE` and `BAN`.
    pub duration_ns: Option<u64>,
    /// The `BAN` reason.
    pub reason: Option<String>,
    /// `BAN` with `ispermanent`.
    pub permanent: bool,
}

/// A command frame a client sent, with the `ERR` code it got (`None` when accepted or ignored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedCommand {
    /// The sender's nick, `""` for a guest.
    pub nick: String,
    pub event: String,
    pub payload: Value,
    pub error: Option<String>,
}

/// How a connection ended, as the test client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseKind {
    /// A close frame arrived, with its code.
    Clean(Option<u16>),
    /// The stream ended (or failed) without a close frame.
    Abrupt,
}

// ---------------------------------------------------------------------------------------------
// Server state

enum Outgoing {
    Text(String),
    Raw(Message),
    Refresh,
    Drop,
    Shutdown,
}

#[derive(Default)]
struct Throttle {
    last_passed: Option<Instant>,
    last_attempt: Option<Instant>,
    factor: u32,
}

impl Throttle {
    /// One command at `now` through the throttle: true when it may go on.
    fn check(&mut self, now: Instant, base: Duration, reset: Duration) -> bool {
        if base.is_zero() {
            return true;
        }
        if self.factor == 0 {
            self.factor = 1;
        }
        if let Some(attempt) = self.last_attempt
            && now.saturating_duration_since(attempt) >= reset
        {
            self.factor = 1;
        }
        self.last_attempt = Some(now);
        let Some(last) = self.last_passed else {
            self.last_passed = Some(now);
            return true;
        };
        let since = now.saturating_duration_since(last);
        if since <= base {
            self.factor = (self.factor.saturating_mul(2)).min(MAX_DELAY_FACTOR);
        }
        if since < base.saturating_mul(self.factor) {
            return false;
        }
        self.last_passed = Some(now);
        true
    }
}

enum BanEnd {
    Permanent,
    At(Instant),
}

struct User {
    nick: String,
    features: Vec<String>,
    connections: usize,
    mute_until: Option<Instant>,
    ban: Option<BanEnd>,
    throttle: Throttle,
    last_message: Option<String>,
}

impl User {
    fn has(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }

    fn immune(&self) -> bool {
        self.has("admin") || self.has("protected")
    }

    fn banned(&mut self, now: Instant) -> bool {
        match self.ban {
            Some(BanEnd::Permanent) => true,
            Some(BanEnd::At(end)) if now < end => true,
            Some(BanEnd::At(_)) => {
                self.ban = None;
                false
            }
            None => false,
        }
    }

    /// The time left of a mute in force.
    fn muted(&mut self, now: Instant) -> Option<Duration> {
        match self.mute_until {
            Some(end) if now < end => Some(end - now),
            Some(_) => {
                self.mute_until = None;
                None
            }
            None => None,
        }
    }
}

struct Conn {
    /// The user's key in `State::users`; `None` for a guest.
    user: Option<String>,
    tx: mpsc::UnboundedSender<Outgoing>,
}

/// A private message the server delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrivateMessage {
    /// The sender's nick.
    pub from: String,
    /// The recipient's nick, as registered.
    pub to: String,
    /// The text, trimmed.
    pub text: String,
}

#[derive(Default)]
struct State {
    /// By lowercased nick.
    users: HashMap<String, User>,
    /// Login token → user key.
    tokens: HashMap<String, String>,
    conns: BTreeMap<u64, Conn>,
    next_conn: u64,
    /// Private messages delivered, in order.
    private_messages: Vec<PrivateMessage>,
    next_privmsg: u64,
    moderations: Vec<Moderation>,
    commands: Vec<(Instant, ReceivedCommand)>,
    shut: bool,
    /// Subscriber-only mode, and every change of it in order.
    subonly: bool,
    subonly_changes: Vec<bool>,
}

struct Inner {
    options: ChatServerOptions,
    state: Mutex<State>,
    accepted: AtomicUsize,
    refusing: AtomicBool,
    /// Set by [`ChatServer::shutdown`]: upgrades are refused from then on.
    shut: AtomicBool,
}

/// A refused command: the `ERR` code, and the mute's time left for `muted`.
struct Refusal {
    code: &'static str,
    mute_left: Option<Duration>,
}

impl Refusal {
    fn code(code: &'static str) -> Self {
        Self {
            code,
            mute_left: None,
        }
    }
}

const PROTOCOL_ERROR: &str = "protocolerror";

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn frame(event: &str, payload: &Value) -> String {
    format!("{event} {payload}")
}

fn features_json(features: &[String]) -> Value {
    Value::Array(features.iter().map(|f| Value::String(f.clone())).collect())
}

/// The payload as an object, Go-style: `null` is an empty object, anything else not an
/// object is a protocol error.
fn object(payload: &Value) -> Result<Map<String, Value>, Refusal> {
    match payload {
        Value::Object(map) => Ok(map.clone()),
        Value::Null => Ok(Map::new()),
        _ => Err(Refusal::code(PROTOCOL_ERROR)),
    }
}

fn field_str(obj: &Map<String, Value>, key: &str) -> Result<String, Refusal> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(Refusal::code(PROTOCOL_ERROR)),
    }
}

/// A duration in nanoseconds (Go's int64: negative or fractional is refused here).
fn field_ns(obj: &Map<String, Value>, key: &str) -> Result<u64, Refusal> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) if v >= 0 => Ok(v as u64),
            _ => Err(Refusal::code(PROTOCOL_ERROR)),
        },
        Some(_) => Err(Refusal::code(PROTOCOL_ERROR)),
    }
}

fn field_bool(obj: &Map<String, Value>, key: &str) -> Result<bool, Refusal> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(Refusal::code(PROTOCOL_ERROR)),
    }
}

fn token_from_cookies(request: &Request, name: &str) -> Option<String> {
    for value in request.headers().get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=')
                && k.trim() == name
            {
                return Some(v.trim().trim_matches('"').to_owned());
            }
        }
    }
    None
}

fn error_response(status: StatusCode, text: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(text.to_owned()));
    *response.status_mut() = status;
    response
}

enum Flow {
    Continue,
    Close(CloseCode, &'static str),
}

enum Registration {
    Registered(u64),
    TooMany,
    Shut,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn dialect(&self) -> Dialect {
        self.options.dialect
    }

    fn err_frame(&self, refusal: &Refusal) -> String {
        match self.dialect() {
            Dialect::Dgg => {
                let mut payload = json!({ "description": refusal.code });
                if let Some(left) = refusal.mute_left {
                    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                    payload["muteTimeLeft"] = json!(secs);
                }
                frame("ERR", &payload)
            }
            Dialect::Strims => frame("ERR", &Value::String(refusal.code.to_owned())),
        }
    }

    fn register(&self, user: Option<String>, tx: mpsc::UnboundedSender<Outgoing>) -> Registration {
        let mut st = self.lock();
        if st.shut {
            return Registration::Shut;
        }
        let mut first = false;
        if let Some(key) = &user {
            let Some(u) = st.users.get_mut(key) else {
                return Registration::Shut;
            };
            if u.connections >= MAX_CONNECTIONS_PER_USER {
                return Registration::TooMany;
            }
            u.connections += 1;
            first = u.connections == 1;
        }
        let id = st.next_conn;
        st.next_conn += 1;
        st.conns.insert(
            id,
            Conn {
                user: user.clone(),
                tx,
            },
        );
        let mut online: Vec<&User> = st.users.values().filter(|u| u.connections > 0).collect();
        online.sort_by(|a, b| a.nick.cmp(&b.nick));
        let names = json!({
            "users": online
                .iter()
                .map(|u| json!({ "nick": u.nick, "features": features_json(&u.features) }))
                .collect::<Vec<_>>(),
            "connectioncount": st.conns.len(),
        });
        let _ = st.conns[&id]
            .tx
            .send(Outgoing::Text(frame("NAMES", &names)));
        if first && let Some(u) = user.as_ref().and_then(|k| st.users.get(k)) {
            let join = frame("JOIN", &presence(u));
            broadcast(&st, &join);
        }
        Registration::Registered(id)
    }

    fn unregister(&self, id: u64) {
        let mut st = self.lock();
        let Some(conn) = st.conns.remove(&id) else {
            return;
        };
        if let Some(key) = conn.user
            && let Some(u) = st.users.get_mut(&key)
        {
            u.connections = u.connections.saturating_sub(1);
            if u.connections == 0 {
                let quit = frame("QUIT", &presence(u));
                broadcast(&st, &quit);
            }
        }
    }

    /// One text frame from connection `id`.
    fn handle_text(&self, id: u64, text: &str) -> Flow {
        if text.len() > MAX_FRAME_BYTES {
            return Flow::Close(CloseCode::Size, "message too big");
        }
        let Some((event, raw)) = text.split_once(' ') else {
            return Flow::Close(CloseCode::Protocol, "no payload");
        };
        let mut st = self.lock();
        let Some(conn) = st.conns.get(&id) else {
            return Flow::Continue;
        };
        let user = conn.user.clone();
        let tx = conn.tx.clone();
        let nick = user
            .as_ref()
            .and_then(|k| st.users.get(k))
            .map(|u| u.nick.clone())
            .unwrap_or_default();
        let known = matches!(
            event,
            "MSG" | "MUTE" | "UNMUTE" | "BAN" | "UNBAN" | "PING" | "PRIVMSG" | "SUBONLY"
        );
        let parsed = serde_json::from_str::<Value>(raw);
        let (payload, result) = match (known, parsed) {
            (false, parsed) => (
                parsed.unwrap_or_else(|_| Value::String(raw.to_owned())),
                Ok(()),
            ),
            (true, Err(_)) => (
                Value::String(raw.to_owned()),
                Err(Refusal::code(PROTOCOL_ERROR)),
            ),
            (true, Ok(payload)) => {
                let result = self.command(&mut st, user.as_deref(), &tx, event, &payload, raw);
                (payload, result)
            }
        };
        if let Err(refusal) = &result {
            let _ = tx.send(Outgoing::Text(self.err_frame(refusal)));
        }
        st.commands.push((
            Instant::now(),
            ReceivedCommand {
                nick,
                event: event.to_owned(),
                payload,
                error: result.err().map(|r| r.code.to_owned()),
            },
        ));
        Flow::Continue
    }

    fn command(
        &self,
        st: &mut State,
        user: Option<&str>,
        tx: &mpsc::UnboundedSender<Outgoing>,
        event: &str,
        payload: &Value,
        raw: &str,
    ) -> Result<(), Refusal> {
        if event == "PING" {
            let _ = tx.send(Outgoing::Text(format!("PONG {raw}")));
            return Ok(());
        }
        let key = user.ok_or(Refusal::code("needlogin"))?;
        let obj = object(payload)?;
        let now = Instant::now();
        match event {
            "MSG" => self.msg(st, key, &obj, now),
            "PRIVMSG" => self.privmsg(st, key, tx, &obj, now),
            "SUBONLY" => self.subonly(st, key, &obj),
            _ => self.moderate(st, key, event, &obj, now),
        }
    }

    fn privmsg(
        &self,
        st: &mut State,
        key: &str,
        tx: &mpsc::UnboundedSender<Outgoing>,
        obj: &Map<String, Value>,
        now: Instant,
    ) -> Result<(), Refusal> {
        let target = field_str(obj, "nick")?;
        let data = field_str(obj, "data")?;
        let Some(user) = st.users.get_mut(key) else {
            return Err(Refusal::code("needlogin"));
        };
        self.throttle(user, now)?;
        let sender = user.nick.clone();
        let text = data.trim();
        let chars = text.chars().count();
        if chars == 0 || chars > MAX_MESSAGE_CHARS {
            return Err(Refusal::code("invalidmsg"));
        }
        let target_key = target.to_lowercase();
        let Some(recipient) = st.users.get(&target_key) else {
            return Err(Refusal::code("notfound"));
        };
        let recipient_nick = recipient.nick.clone();
        st.next_privmsg += 1;
        let mut payload = json!({
            "messageid": st.next_privmsg,
            "timestamp": unix_ms(),
            "nick": sender,
            "data": text,
        });
        if self.dialect() == Dialect::Strims {
            payload["targetNick"] = json!(recipient_nick);
            payload["entities"] = json!({});
        }
        let delivered = frame("PRIVMSG", &payload);
        for conn in st.conns.values() {
            if conn.user.as_deref() == Some(target_key.as_str()) {
                let _ = conn.tx.send(Outgoing::Text(delivered.clone()));
            }
        }
        let sent = match self.dialect() {
            Dialect::Dgg => frame("PRIVMSGSENT", &json!("")),
            Dialect::Strims => frame("PRIVMSGSENT", &payload),
        };
        let _ = tx.send(Outgoing::Text(sent));
        st.private_messages.push(PrivateMessage {
            from: sender,
            to: recipient_nick,
            text: text.to_owned(),
        });
        Ok(())
    }

    fn subonly(&self, st: &mut State, key: &str, obj: &Map<String, Value>) -> Result<(), Refusal> {
        let on = match field_str(obj, "data")?.as_str() {
            "on" => true,
            "off" => false,
            _ => return Err(Refusal::code("protocolerror")),
        };
        let Some(user) = st.users.get(key) else {
            return Err(Refusal::code("needlogin"));
        };
        if !self.dialect().is_moderator(&user.features) {
            return Err(Refusal::code("nopermission"));
        }
        st.subonly = on;
        st.subonly_changes.push(on);
        broadcast(
            st,
            &frame("SUBONLY", &json!({ "data": if on { "on" } else { "off" } })),
        );
        Ok(())
    }

    fn throttle(&self, user: &mut User, now: Instant) -> Result<(), Refusal> {
        if user.has("bot") {
            return Ok(());
        }
        let o = &self.options;
        if user.throttle.check(now, o.throttle_base, o.throttle_reset) {
            Ok(())
        } else {
            Err(Refusal::code("throttled"))
        }
    }

    fn msg(
        &self,
        st: &mut State,
        key: &str,
        obj: &Map<String, Value>,
        now: Instant,
    ) -> Result<(), Refusal> {
        let data = field_str(obj, "data")?;
        let subonly = st.subonly;
        let Some(user) = st.users.get_mut(key) else {
            return Err(Refusal::code("needlogin"));
        };
        if user.banned(now) {
            return Err(Refusal::code("banned"));
        }
        if subonly && !user.has("subscriber") && !self.dialect().is_moderator(&user.features) {
            return Err(Refusal::code("submode"));
        }
        if let Some(left) = user.muted(now) {
            return Err(Refusal {
                code: "muted",
                mute_left: (self.dialect() == Dialect::Dgg).then_some(left),
            });
        }
        let text = data.trim();
        let chars = text.chars().count();
        if chars == 0 || chars > MAX_MESSAGE_CHARS {
            return Err(Refusal::code("invalidmsg"));
        }
        self.throttle(user, now)?;
        let skips_duplicate = self.dialect() == Dialect::Dgg && user.has("bot");
        if !skips_duplicate && user.last_message.as_deref() == Some(text) {
            return Err(Refusal::code("duplicate"));
        }
        user.last_message = Some(text.to_owned());
        let mut payload = json!({
            "nick": user.nick,
            "features": features_json(&user.features),
            "timestamp": unix_ms(),
            "data": text,
        });
        if self.dialect() == Dialect::Strims {
            payload["entities"] = json!({});
        }
        broadcast(st, &frame("MSG", &payload));
        Ok(())
    }

    fn moderate(
        &self,
        st: &mut State,
        key: &str,
        event: &str,
        obj: &Map<String, Value>,
        now: Instant,
    ) -> Result<(), Refusal> {
        let (target, duration, reason, permanent) = match event {
            "MUTE" => (
                field_str(obj, "data")?,
                field_ns(obj, "duration")?,
                None,
                false,
            ),
            "BAN" => {
                let _banip = field_bool(obj, "banip")?;
                (
                    field_str(obj, "nick")?,
                    field_ns(obj, "duration")?,
                    Some(field_str(obj, "reason")?),
                    field_bool(obj, "ispermanent")?,
                )
            }
            _ => (field_str(obj, "data")?, 0, None, false),
        };
        let moderator = st.users.get_mut(key).ok_or(Refusal::code("needlogin"))?;
        self.throttle(moderator, now)?;
        if !self.dialect().is_moderator(&moderator.features) {
            return Err(Refusal::code("nopermission"));
        }
        let moderator_nick = moderator.nick.clone();
        let moderator_features = moderator.features.clone();
        if event == "MUTE" && duration > MAX_MUTE.as_nanos() as u64 {
            return Err(Refusal::code(PROTOCOL_ERROR));
        }
        let unknown = if event == "MUTE" {
            "nopermission"
        } else {
            "notfound"
        };
        let target_user = st
            .users
            .get_mut(&target.to_lowercase())
            .ok_or(Refusal::code(unknown))?;
        if let Some(reason) = &reason
            && reason.trim().is_empty()
        {
            return Err(Refusal::code("needbanreason"));
        }
        if matches!(event, "MUTE" | "BAN") && target_user.immune() {
            return Err(Refusal::code("nopermission"));
        }
        let duration = match (event, duration) {
            ("MUTE", 0) => Some(DEFAULT_MUTE.as_nanos() as u64),
            ("BAN", 0) => Some(DEFAULT_BAN.as_nanos() as u64),
            ("MUTE" | "BAN", ns) => Some(ns),
            _ => None,
        };
        let length = Duration::from_nanos(duration.unwrap_or(0));
        match event {
            "MUTE" => target_user.mute_until = now.checked_add(length),
            "BAN" => {
                target_user.ban = Some(match now.checked_add(length) {
                    Some(end) if !permanent => BanEnd::At(end),
                    _ => BanEnd::Permanent,
                })
            }
            "UNMUTE" => target_user.mute_until = None,
            _ => {
                target_user.ban = None;
                target_user.mute_until = None;
            }
        }
        let target_nick = target_user.nick.clone();
        let mut payload = json!({
            "nick": moderator_nick,
            "features": features_json(&moderator_features),
            "timestamp": unix_ms(),
            "data": target_nick,
        });
        if event == "MUTE" && self.dialect() == Dialect::Dgg {
            payload["duration"] = json!(length.as_secs());
        }
        broadcast(st, &frame(event, &payload));
        st.moderations.push(Moderation {
            moderator: moderator_nick,
            target: target_nick,
            event: event.to_owned(),
            duration_ns: duration,
            reason,
            permanent,
        });
        Ok(())
    }

    fn send_all(&self, make: impl Fn() -> Outgoing) {
        let st = self.lock();
        for conn in st.conns.values() {
            let _ = conn.tx.send(make());
        }
    }
}

fn presence(user: &User) -> Value {
    json!({
        "nick": user.nick,
        "features": features_json(&user.features),
        "timestamp": unix_ms(),
    })
}

fn broadcast(st: &State, text: &str) {
    for conn in st.conns.values() {
        let _ = conn.tx.send(Outgoing::Text(text.to_owned()));
    }
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

type ServerSocket = WebSocketStream<TcpStream>;

async fn send(ws: &mut ServerSocket, message: Message) -> bool {
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, ws.send(message)).await,
        Ok(Ok(()))
    )
}

async fn close(ws: &mut ServerSocket, code: CloseCode, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(WRITE_TIMEOUT, ws.close(Some(frame))).await;
}

async fn serve_connection(inner: Arc<Inner>, tcp: TcpStream) {
    let _ = tcp.set_nodelay(true);
    let cookie_name = inner.dialect().cookie_name();
    let refusing = inner.refusing.load(Ordering::SeqCst) || inner.shut.load(Ordering::SeqCst);
    let mut token = None;
    // The error type is tungstenite's `Callback` signature.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        if request.uri().path() != "/ws" {
            return Err(error_response(StatusCode::NOT_FOUND, "not found"));
        }
        if refusing {
            return Err(error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "chat is down",
            ));
        }
        token = token_from_cookies(request, cookie_name);
        Ok(response)
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(TRANSPORT_LIMIT))
        .max_frame_size(Some(TRANSPORT_LIMIT));
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(tcp, callback, Some(config));
    let mut ws = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(ws)) => ws,
        _ => return,
    };
    inner.accepted.fetch_add(1, Ordering::SeqCst);
    let user = token.and_then(|t| inner.lock().tokens.get(&t).cloned());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let id = match inner.register(user, tx) {
        Registration::Registered(id) => id,
        Registration::TooMany => {
            let text = inner.err_frame(&Refusal::code("toomanyconnections"));
            if send(&mut ws, Message::text(text)).await {
                close(&mut ws, CloseCode::Policy, "too many connections").await;
            }
            return;
        }
        Registration::Shut => {
            close(&mut ws, CloseCode::Away, "shutting down").await;
            return;
        }
    };
    run_connection(&inner, id, &mut ws, &mut rx).await;
    inner.unregister(id);
}

async fn run_connection(
    inner: &Inner,
    id: u64,
    ws: &mut ServerSocket,
    rx: &mut mpsc::UnboundedReceiver<Outgoing>,
) {
    let options = &inner.options;
    let mut pings = (!options.ping_interval.is_zero()).then(|| {
        let start = tokio::time::Instant::now() + options.ping_interval;
        let mut interval = tokio::time::interval_at(start, options.ping_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });
    let mut last_pong = Instant::now();
    loop {
        let pong_deadline =
            (!options.pong_timeout.is_zero()).then(|| last_pong + options.pong_timeout);
        tokio::select! {
            incoming = ws.next() => match incoming {
                None | Some(Err(_)) => return,
                Some(Ok(Message::Text(text))) => {
                    if let Flow::Close(code, reason) = inner.handle_text(id, &text) {
                        close(ws, code, reason).await;
                        return;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    close(ws, CloseCode::Unsupported, "binary frame").await;
                    return;
                }
                Some(Ok(Message::Pong(_))) => last_pong = Instant::now(),
                // Pings are answered by the WebSocket layer; after a close frame the next read
                // completes the closing handshake and ends the stream.
                Some(Ok(Message::Ping(_) | Message::Close(_) | Message::Frame(_))) => {}
            },
            outgoing = rx.recv() => match outgoing {
                Some(Outgoing::Text(text)) => {
                    if !send(ws, Message::text(text)).await {
                        return;
                    }
                }
                Some(Outgoing::Raw(message)) => {
                    if !send(ws, message).await {
                        return;
                    }
                }
                Some(Outgoing::Refresh) => {
                    if send(ws, Message::text("REFRESH {}")).await {
                        close(ws, CloseCode::Normal, "refresh").await;
                    }
                    return;
                }
                Some(Outgoing::Shutdown) => {
                    close(ws, CloseCode::Away, "shutting down").await;
                    return;
                }
                Some(Outgoing::Drop) | None => return,
            },
            _ = tick(&mut pings) => {
                if !send(ws, Message::Ping(Default::default())).await {
                    return;
                }
            }
            _ = sleep_until(pong_deadline) => return,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The server handle

/// A chat server on 127.0.0.1, for one test.
pub struct ChatServer {
    /// `ws://127.0.0.1:PORT/ws`
    pub url: String,
    inner: Arc<Inner>,
    accept_task: Mutex<Option<JoinHandle<()>>>,
}

impl ChatServer {
    /// A server with the default options, on an ephemeral port.
    pub async fn start(dialect: Dialect) -> Self {
        Self::start_with(ChatServerOptions::new(dialect)).await
    }

    pub async fn start_with(options: ChatServerOptions) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the chat server");
        let addr = listener.local_addr().expect("chat server address");
        let inner = Arc::new(Inner {
            options,
            state: Mutex::new(State::default()),
            accepted: AtomicUsize::new(0),
            refusing: AtomicBool::new(false),
            shut: AtomicBool::new(false),
        });
        let task_inner = inner.clone();
        let accept_task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((tcp, _)) => {
                        tokio::spawn(serve_connection(task_inner.clone(), tcp));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
        Self {
            url: format!("ws://{addr}/ws"),
            inner,
            accept_task: Mutex::new(Some(accept_task)),
        }
    }

    pub fn dialect(&self) -> Dialect {
        self.inner.dialect()
    }

    pub fn options(&self) -> &ChatServerOptions {
        &self.inner.options
    }

    /// Registers a user who logs in with `token` (dgg cookie `authtoken=TOKEN`, Strims
    /// `jwt=TOKEN`). Registering a known nick again replaces its features and adds the token;
    /// its mutes, bans and throttle stay.
    pub fn add_user(&self, token: &str, nick: &str, features: &[&str]) {
        let key = nick.to_lowercase();
        let features: Vec<String> = features.iter().map(|f| f.to_string()).collect();
        let mut st = self.inner.lock();
        st.tokens.insert(token.to_owned(), key.clone());
        match st.users.get_mut(&key) {
            Some(user) => user.features = features,
            None => {
                st.users.insert(
                    key,
                    User {
                        nick: nick.to_owned(),
                        features,
                        connections: 0,
                        mute_until: None,
                        ban: None,
                        throttle: Throttle::default(),
                        last_message: None,
                    },
                );
            }
        }
    }

    /// The Cookie header value for `token` in this dialect.
    pub fn cookie(&self, token: &str) -> String {
        format!("{}={token}", self.dialect().cookie_name())
    }

    /// A test client logged in with `token` (`None`: a guest), already past the NAMES frame.
    /// Panics when the connection fails or NAMES does not come first.
    pub async fn client(&self, token: Option<&str>) -> ChatClient {
        let mut client = self.connect(token).await;
        match client.next_frame(Duration::from_secs(5)).await {
            Some((event, payload)) if event == "NAMES" => {
                client.names = Some(payload);
                client
            }
            other => panic!("chat client {token:?}: expected NAMES first, got {other:?}"),
        }
    }

    /// A test client logged in with `token`, NAMES not yet read. Panics when the upgrade fails.
    pub async fn connect(&self, token: Option<&str>) -> ChatClient {
        let cookie = token.map(|t| self.cookie(t));
        ChatClient::connect(&self.url, cookie.as_deref())
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.url))
    }

    /// Closes every connection abruptly (TCP drop, no close frame). New connections are
    /// accepted as before.
    pub fn drop_connections(&self) {
        self.inner.send_all(|| Outgoing::Drop);
    }

    /// Sends `REFRESH {}` to every connection, then closes them (close frame 1000).
    pub fn refresh(&self) {
        self.inner.send_all(|| Outgoing::Refresh);
    }

    /// Sends a raw WebSocket message to every connection.
    pub fn inject(&self, message: Message) {
        self.inner.send_all(|| Outgoing::Raw(message.clone()));
    }

    /// While true, every upgrade request is refused with HTTP 503 (open connections stay).
    pub fn set_refusing(&self, refusing: bool) {
        self.inner.refusing.store(refusing, Ordering::SeqCst);
    }

    /// Every moderation command carried out, in order.
    pub fn moderations(&self) -> Vec<Moderation> {
        self.inner.lock().moderations.clone()
    }

    /// Every command frame received, in order, with the ERR code it got.
    pub fn commands(&self) -> Vec<ReceivedCommand> {
        self.inner
            .lock()
            .commands
            .iter()
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// [`commands`](Self::commands) with the instant each was handled (to check pacing).
    pub fn commands_timed(&self) -> Vec<(Instant, ReceivedCommand)> {
        self.inner.lock().commands.clone()
    }

    /// Waits up to `within` until `predicate(&self.moderations())` holds; panics otherwise.
    pub async fn wait_for_moderations(
        &self,
        within: Duration,
        predicate: impl Fn(&[Moderation]) -> bool,
    ) -> Vec<Moderation> {
        let deadline = Instant::now() + within;
        loop {
            let moderations = self.moderations();
            if predicate(&moderations) {
                return moderations;
            }
            if Instant::now() >= deadline {
                panic!(
                    "chat server: moderations did not match within {within:?}; got {moderations:#?}\ncommands: {:#?}",
                    self.commands()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits up to `within` until `predicate(&self.commands())` holds; panics otherwise.
    pub async fn wait_for_commands(
        &self,
        within: Duration,
        predicate: impl Fn(&[ReceivedCommand]) -> bool,
    ) -> Vec<ReceivedCommand> {
        let deadline = Instant::now() + within;
        loop {
            let commands = self.commands();
            if predicate(&commands) {
                return commands;
            }
            if Instant::now() >= deadline {
                panic!("chat server: commands did not match within {within:?}; got {commands:#?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits up to `within` until `predicate(open, accepted)` holds; panics otherwise.
    pub async fn wait_for_connections(
        &self,
        within: Duration,
        predicate: impl Fn(usize, usize) -> bool,
    ) {
        let deadline = Instant::now() + within;
        loop {
            let (open, accepted) = (self.open_connections(), self.accepted_connections());
            if predicate(open, accepted) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "chat server: connections did not match within {within:?}: {open} open, {accepted} accepted"
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Connections currently open (past login; a refused sixth connection is not counted).
    pub fn open_connections(&self) -> usize {
        self.inner.lock().conns.len()
    }

    /// WebSocket upgrades ever completed.
    pub fn accepted_connections(&self) -> usize {
        self.inner.accepted.load(Ordering::SeqCst)
    }

    /// Whether `nick` is muted now.
    pub fn is_muted(&self, nick: &str) -> bool {
        let mut st = self.inner.lock();
        st.users
            .get_mut(&nick.to_lowercase())
            .is_some_and(|u| u.muted(Instant::now()).is_some())
    }

    /// The private messages delivered so far, in order.
    pub fn private_messages(&self) -> Vec<PrivateMessage> {
        self.inner.lock().private_messages.clone()
    }

    /// Every change of subscriber-only mode (`SUBONLY` from a moderator), in order.
    pub fn subonly_changes(&self) -> Vec<bool> {
        self.inner.lock().subonly_changes.clone()
    }

    /// Whether `nick` is banned now.
    pub fn is_banned(&self, nick: &str) -> bool {
        let mut st = self.inner.lock();
        st.users
            .get_mut(&nick.to_lowercase())
            .is_some_and(|u| u.banned(Instant::now()))
    }

    /// Stops accepting and closes every connection (close frame 1001). Also on drop.
    pub fn shutdown(&self) {
        self.inner.shut.store(true, Ordering::SeqCst);
        if let Some(task) = self
            .accept_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
        let mut st = self.inner.lock();
        st.shut = true;
        for conn in st.conns.values() {
            let _ = conn.tx.send(Outgoing::Shutdown);
        }
    }
}

impl Drop for ChatServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

// ---------------------------------------------------------------------------------------------
// The test client

/// A WebSocket chat client for tests. It answers server pings while it reads.
pub struct ChatClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    closed: Option<CloseKind>,
    pings: usize,
    names: Option<Value>,
}

impl ChatClient {
    /// Connects to `url`, with `cookie` as the Cookie header.
    pub async fn connect(url: &str, cookie: Option<&str>) -> Result<Self, tungstenite::Error> {
        let mut request = url.into_client_request()?;
        if let Some(cookie) = cookie {
            let value = HeaderValue::from_str(cookie)
                .map_err(|e| tungstenite::Error::HttpFormat(e.into()))?;
            request.headers_mut().insert(header::COOKIE, value);
        }
        let (ws, _) = tokio_tungstenite::connect_async_with_config(request, None, true).await?;
        Ok(Self {
            ws,
            closed: None,
            pings: 0,
            names: None,
        })
    }

    /// The NAMES payload [`ChatServer::client`] read.
    pub fn names(&self) -> Option<&Value> {
        self.names.as_ref()
    }

    /// WebSocket pings received so far.
    pub fn pings_received(&self) -> usize {
        self.pings
    }

    /// How the connection ended, if it has.
    pub fn close_kind(&self) -> Option<CloseKind> {
        self.closed
    }

    /// One text frame `EVENT {json}`.
    pub async fn send(&mut self, event: &str, payload: Value) {
        self.send_raw(Message::text(frame(event, &payload))).await;
    }

    /// Any WebSocket message (errors, as on a closed connection, are ignored).
    pub async fn send_raw(&mut self, message: Message) {
        let _ = self.ws.send(message).await;
    }

    /// `MSG {"data":text}`.
    pub async fn say(&mut self, text: &str) {
        self.send("MSG", json!({ "data": text })).await;
    }

    /// The next text or binary message within `within`, skipping pings and pongs; `None` on
    /// timeout or close.
    pub async fn next_message(&mut self, within: Duration) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.closed.is_some() {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(None | Some(Err(_))) => self.closed = Some(CloseKind::Abrupt),
                Ok(Some(Ok(message))) => match message {
                    Message::Text(_) | Message::Binary(_) => return Some(message),
                    Message::Close(frame) => {
                        self.closed = Some(CloseKind::Clean(frame.map(|f| u16::from(f.code))))
                    }
                    Message::Ping(_) => self.pings += 1,
                    Message::Pong(_) | Message::Frame(_) => {}
                },
            }
        }
    }

    /// The next text frame as (event, payload) within `within`; `None` on timeout or close.
    /// A payload that is not JSON is `Value::Null`. Binary messages are skipped.
    pub async fn next_frame(&mut self, within: Duration) -> Option<(String, Value)> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_message(left).await? {
                Message::Text(text) => return Some(parse_frame(&text)),
                _ => continue,
            }
        }
    }

    /// The payload of the next frame whose event is `event`, skipping others.
    pub async fn expect(&mut self, event: &str, within: Duration) -> Option<Value> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (name, payload) = self.next_frame(left).await?;
            if name == event {
                return Some(payload);
            }
        }
    }

    /// The code of the next `ERR` (either dialect's shape), skipping other frames.
    pub async fn expect_err(&mut self, within: Duration) -> Option<String> {
        let payload = self.expect("ERR", within).await?;
        err_code(&payload)
    }

    /// Waits until the connection ends (skipping frames); `None` if it is still open.
    pub async fn wait_closed(&mut self, within: Duration) -> Option<CloseKind> {
        let deadline = Instant::now() + within;
        while self.closed.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.next_message(left).await;
        }
        self.closed
    }

    /// Sends a close frame and waits briefly for the server's.
    pub async fn close(mut self) {
        if self.closed.is_none() {
            let _ = self.ws.close(None).await;
            let _ = self.wait_closed(Duration::from_secs(1)).await;
        }
    }
}

/// `EVENT payload` → (event, JSON payload or `Null`).
pub fn parse_frame(text: &str) -> (String, Value) {
    match text.split_once(' ') {
        Some((event, payload)) => (
            event.to_owned(),
            serde_json::from_str(payload).unwrap_or(Value::Null),
        ),
        None => (text.to_owned(), Value::Null),
    }
}

/// The code of an `ERR` payload: dgg `{"description":code}`, Strims `"code"`.
pub fn err_code(payload: &Value) -> Option<String> {
    match payload {
        Value::String(code) => Some(code.clone()),
        Value::Object(map) => map
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    }
}
