//! `modbot bridge`: one destiny.gg or Strims chat carried into modbot's `StreamModerate`, and
//! modbot's actions carried into the chat.
//!
//! Three tasks joined by channels:
//!
//! ```text
//! chat WebSocket ─ chat::run ──Signal──► core (this module) ──► Outbox ──► link::run ─ StreamModerate
//!                     ▲                    │ Executor                         │
//!                     └──── frames ────────┘   ▲                              │
//!                                              └──────── ActionCommand ───────┘
//! ```
//!
//! `chat::run` and `link::run` each reconnect on their own with exponential backoff and
//! jitter; either may be down while the other runs. The core turns chat frames into chat
//! events (skipping the bot's own), feeds the executor the commands and the frames that
//! answer them, and writes the executor's frames to the chat. The outbox holds what modbot
//! has not taken yet, bounded.

pub mod chat;
pub mod classify;
pub mod client;
pub mod executor;
pub mod link;
pub mod outbox;
pub mod protocol;
pub mod replay;

use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::proto::{
    ActionKind, ChatEvent, ChatMessage, Hello, ModeratorAction, NamesList, Presence, chat_event,
};
use executor::{Executor, ExecutorOptions, Step};
use outbox::Outbox;
use protocol::{Dialect, Frame, Moderation, User};

/// Exponential backoff with jitter: each delay is drawn from the upper half of a window that
/// doubles from `min` to `max`, so many bridges that lost the same server do not return in
/// step.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    window: Duration,
}

impl Backoff {
    /// A backoff from `min` to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            window: min,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let window = self.window;
        self.window = (self.window * 2).min(self.max);
        let half = window / 2;
        let jitter = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        half + Duration::from_nanos(jitter % (half.as_nanos() as u64).max(1))
    }

    /// Starts over from `min` (after a healthy connection).
    pub fn reset(&mut self) {
        self.window = self.min;
    }

    /// The delay after losing a connection made at `started`: a connection that lasted
    /// [`HEALTHY_AFTER`] was healthy, so the backoff starts over.
    pub fn after_loss(&mut self, started: Instant) -> Duration {
        if started.elapsed() >= HEALTHY_AFTER {
            self.reset();
        }
        self.next_delay()
    }
}

/// A connection that lasted this long was healthy: the next reconnect starts the backoff over.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(10);

/// Waits `delay` before a reconnect; false when the bridge is stopping instead.
async fn pause(delay: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        _ = shutdown.changed() => false,
    }
}

/// What a bridge did, returned when it stops.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BridgeReport {
    /// Chat events handed to the outbox.
    pub events: u64,
    /// Chat events dropped because the outbox was full.
    pub events_dropped: u64,
    /// Commands written to the chat.
    pub commands_sent: u64,
}

/// Runs a bridge configured by `config.bridge` until `shutdown` completes.
pub async fn run(
    config: &Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<BridgeReport> {
    let settings = &config.bridge;
    settings.validate()?;
    let dialect = Dialect::parse(&settings.dialect).context("bridge.dialect")?;
    let channel = settings.channel();
    let server = client::Server::from_config(settings)?;
    let backoff = Backoff::new(
        Duration::from_millis(settings.reconnect_min_ms),
        Duration::from_millis(settings.reconnect_max_ms),
    );
    let hello = Hello {
        bridge_id: settings.bridge_id(),
        channels: vec![channel.clone()],
        dialect: dialect.as_str().to_owned(),
        bot_nick: settings.bot_nick.clone(),
    };
    tracing::info!(
        bridge = %hello.bridge_id,
        channel,
        dialect = dialect.as_str(),
        bot = %settings.bot_nick,
        chat = %crate::config::redact_url(&settings.chat_url),
        server = %crate::config::redact_url(&settings.server_url),
        "bridge starting"
    );
    let outbox = Arc::new(Outbox::new(settings.buffer_events));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (signals_tx, signals_rx) = mpsc::channel(1024);
    let (commands_tx, commands_rx) = mpsc::channel(1024);
    let chat_task = tokio::spawn(chat::run(
        chat::ChatOptions {
            url: settings.chat_url.clone(),
            dialect,
            token: settings.chat_token()?,
        },
        signals_tx,
        backoff.clone(),
        stop_rx.clone(),
    ));
    let link_task = tokio::spawn(link::run(
        server,
        hello,
        Arc::clone(&outbox),
        commands_tx,
        backoff,
        stop_rx,
    ));
    let mut core = Core {
        channel: channel.clone(),
        bot_nick: settings.bot_nick.clone(),
        executor: Executor::new(ExecutorOptions {
            channel,
            bot_nick: settings.bot_nick.clone(),
            command_timeout: Duration::from_millis(settings.command_timeout_ms),
            throttle_base: Duration::from_millis(settings.throttle_base_ms),
        }),
        outbox: Arc::clone(&outbox),
        writer: None,
        last_id: String::new(),
        repeats: 0,
        report: BridgeReport::default(),
    };
    core.run(signals_rx, commands_rx, shutdown).await;
    let _ = stop_tx.send(true);
    let _ = chat_task.await;
    // The stream hands over the results held (see `link::run`); a bridge stopping with events
    // still held says so.
    let _ = link_task.await;
    core.report.events_dropped = outbox.dropped();
    if outbox.held() > 0 {
        tracing::warn!(
            held = outbox.held(),
            "bridge stopped with chat events modbot had not answered"
        );
    }
    tracing::info!(report = ?core.report, "bridge stopped");
    Ok(core.report)
}

struct Core {
    channel: String,
    bot_nick: String,
    executor: Executor,
    outbox: Arc<Outbox>,
    writer: Option<mpsc::Sender<String>>,
    /// The last message id given, and how many messages in a row had the same base id.
    last_id: String,
    repeats: u32,
    report: BridgeReport,
}

impl Core {
    async fn run(
        &mut self,
        mut signals: mpsc::Receiver<chat::Signal>,
        mut commands: mpsc::Receiver<link::FromModbot>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        // Once stopping: the command in flight gets its answer (so the next bridge is not
        // sent an action this one carried out), for at most a command timeout.
        let mut stopping: Option<Instant> = None;
        loop {
            let mut wait = self.pump();
            if let Some(deadline) = stopping {
                if self.executor.backlog() == 0 || Instant::now() >= deadline {
                    return;
                }
                wait = Some(wait.map_or(deadline, |w| w.min(deadline)));
            }
            let sleep = async {
                match wait {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                signal = signals.recv() => match signal {
                    Some(chat::Signal::Connected(writer)) => {
                        self.writer = Some(writer);
                        self.executor.connected();
                    }
                    Some(chat::Signal::Frame(frame)) => self.frame(frame),
                    Some(chat::Signal::Disconnected) => {
                        self.writer = None;
                        if let Some(result) = self.executor.disconnected() {
                            self.outbox.push_result(result);
                        }
                    }
                    None => return,
                },
                command = commands.recv() => match command {
                    Some(link::FromModbot::Command(command)) => {
                        if let Some(result) = self.executor.offer(command, SystemTime::now()) {
                            self.outbox.push_result(result);
                        }
                    }
                    Some(link::FromModbot::SubOnly(on)) => self.subonly(on),
                    None => return,
                },
                () = sleep => {}
                () = &mut shutdown, if stopping.is_none() => {
                    self.executor.stop_taking();
                    stopping = Some(Instant::now() + self.executor.command_timeout());
                }
            }
        }
    }

    /// Turns the chat's subscriber-only mode on or off (raid mode). Not retried: a chat that
    /// is not connected, or refuses (the bot is not a moderator), is logged, and moderators
    /// can still set it by hand.
    fn subonly(&mut self, on: bool) {
        let sent = self
            .writer
            .as_ref()
            .is_some_and(|writer| writer.try_send(protocol::subonly_frame(on)).is_ok());
        metrics::counter!("modbot_bridge_subonly_total", "on" => on.to_string(), "sent" => sent.to_string())
            .increment(1);
        if sent {
            tracing::warn!(on, "raid mode: subscriber-only mode asked of the chat");
        } else {
            tracing::warn!(
                on,
                "raid mode: cannot ask the chat for subscriber-only mode (not connected)"
            );
        }
    }

    /// Sends what the executor may send now; returns when it next wants to be asked.
    fn pump(&mut self) -> Option<Instant> {
        let mut results = Vec::new();
        let wait = loop {
            match self
                .executor
                .poll(Instant::now(), SystemTime::now(), &mut results)
            {
                Step::Send(frame) => {
                    let sent = self
                        .writer
                        .as_ref()
                        .is_some_and(|writer| writer.try_send(frame).is_ok());
                    if sent {
                        self.report.commands_sent += 1;
                    } else {
                        // The connection went away under us: the command was never written.
                        self.executor.unsent();
                    }
                }
                Step::Wait(at) => break at,
            }
        };
        for result in results {
            self.outbox.push_result(result);
        }
        wait
    }

    fn frame(&mut self, frame: Frame) {
        if let Some(result) = self.executor.on_frame(&frame) {
            if result.error_code == "needlogin" {
                // The chats accept a bad login as a guest and say so only now.
                tracing::error!(
                    bot = %self.bot_nick,
                    "the chat says the bot is not logged in: check bridge.chat_token"
                );
            }
            self.outbox.push_result(result);
        } else if let Frame::Err { code } = &frame {
            tracing::warn!(code, "the chat sent an ERR with no command in flight");
        }
        if let Frame::Names { users, .. } = &frame
            && !users.iter().any(|u| self.is_bot(&u.nick))
        {
            tracing::warn!(
                bot = %self.bot_nick,
                "the bot's nick is not among the chat's users: the login token may be wrong \
                 (the chats let a bad login in as a guest), or bridge.bot_nick differs from \
                 the account's nick"
            );
        }
        if let Some(kind) = self.event(frame) {
            self.report.events += 1;
            self.outbox.push_event(ChatEvent {
                channel: self.channel.clone(),
                kind: Some(kind),
            });
        }
    }

    fn is_bot(&self, nick: &str) -> bool {
        nick.eq_ignore_ascii_case(&self.bot_nick)
    }

    /// The chat event a frame is, if any.
    fn event(&mut self, frame: Frame) -> Option<chat_event::Kind> {
        Some(match frame {
            Frame::Msg {
                user,
                at,
                timestamp_ms,
                text,
            } => {
                if self.is_bot(&user.nick) {
                    return None;
                }
                let message_id = self.message_id(timestamp_ms, &user.nick);
                chat_event::Kind::Message(ChatMessage {
                    channel: self.channel.clone(),
                    message_id,
                    user_id: user.nick.clone(),
                    nick: user.nick,
                    roles: user.features,
                    text,
                    sent_at: Some(at.into()),
                    // Cut, when too long for the server, on the way out (`link::fit_text`).
                    original_text_bytes: 0,
                })
            }
            Frame::Join { user, at } => chat_event::Kind::Join(presence(user, at)),
            Frame::Quit { user, at } => chat_event::Kind::Quit(presence(user, at)),
            Frame::Names {
                users,
                connection_count,
            } => chat_event::Kind::Names(NamesList {
                users: users
                    .into_iter()
                    .map(|user| Presence {
                        nick: user.nick,
                        roles: user.features,
                        at: None,
                    })
                    .collect(),
                connection_count,
            }),
            Frame::Moderation {
                kind,
                moderator,
                target,
                duration,
                at,
            } => {
                // The bot's own broadcasts answer its commands (the executor's business).
                if self.is_bot(&moderator.nick) {
                    return None;
                }
                let kind = match kind {
                    Moderation::Mute => ActionKind::Timeout,
                    Moderation::Ban => ActionKind::Ban,
                    Moderation::Unmute => ActionKind::Unmute,
                    Moderation::Unban => ActionKind::Unban,
                };
                chat_event::Kind::ModeratorAction(ModeratorAction {
                    moderator: moderator.nick,
                    target,
                    kind: kind as i32,
                    duration: duration.and_then(|d| prost_types::Duration::try_from(d).ok()),
                    at: Some(at.into()),
                })
            }
            Frame::Err { .. }
            | Frame::PrivmsgSent { .. }
            | Frame::Pong
            | Frame::Refresh
            | Frame::Other(_) => return None,
        })
    }

    /// A stable id for a message: the server's timestamp and the nick (the chats give
    /// messages no id), with a counter when one user has two messages in one millisecond.
    fn message_id(&mut self, timestamp_ms: u64, nick: &str) -> String {
        let base = format!("{timestamp_ms}-{nick}");
        if base == self.last_id {
            self.repeats += 1;
            format!("{base}-{}", self.repeats)
        } else {
            self.last_id.clone_from(&base);
            self.repeats = 0;
            base
        }
    }
}

fn presence(user: User, at: SystemTime) -> Presence {
    Presence {
        nick: user.nick,
        roles: user.features,
        at: Some(at.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let delays: Vec<Duration> = (0..6).map(|_| backoff.next_delay()).collect();
        for (delay, window) in delays.iter().zip([100u64, 200, 400, 800, 1000, 1000]) {
            let window = Duration::from_millis(window);
            assert!(
                *delay >= window / 2 && *delay <= window,
                "{delay:?} outside the upper half of {window:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
        // Jittered: twenty draws from the same window are not all equal.
        let draws: std::collections::HashSet<Duration> = (0..20)
            .map(|_| Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).next_delay())
            .collect();
        assert!(draws.len() > 1);
    }
}
