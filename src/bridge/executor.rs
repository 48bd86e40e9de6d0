//! Carrying out modbot's action commands in the chat: one at a time, paced, each matched to
//! its outcome, none twice.
//!
//! The chat's replies carry no request id and its `ERR` is not ordered with its broadcasts,
//! so the executor keeps exactly one command in flight: the broadcast from the bot's own nick
//! naming the target (`MUTE` for a mute, ...) confirms it, an `ERR` while it is in flight
//! refuses it, and silence past `command_timeout` reports it failed (`noreply`). A `throttled`
//! refusal is not an outcome: the pacing factor doubles and the same command goes again.
//!
//! Every outcome is remembered by action id (a bounded LRU), so a command that modbot sends
//! again (after a reconnect, when its result was lost on the way) is answered from memory and
//! never carried out twice. A command in flight when the chat connection drops is reported
//! `unconfirmed` rather than sent again: whether the chat carried it out is unknowable, and
//! acting twice is the worse mistake.
//!
//! The executor is a state machine without I/O or clocks of its own (time is passed in), so
//! its tests drive it step by step.

use std::collections::{HashSet, VecDeque};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant, SystemTime};

use super::protocol::{Command, Confirmation, Frame};
use crate::proto::{ActionCommand, ActionKind, ActionResult};

/// Outcomes remembered for commands modbot may send again.
const REMEMBERED: usize = 65_536;

/// Largest pacing factor: 64 × 300 ms ≈ 19 s between commands at worst.
const MAX_FACTOR: u32 = 64;

/// Times one command is sent again after `throttled` before it is reported failed.
const MAX_THROTTLED: u32 = 6;

/// The chat forgets a throttle after this much quiet.
const THROTTLE_RESET: Duration = Duration::from_secs(300);

/// What the executor needs to know.
#[derive(Clone, Debug)]
pub struct ExecutorOptions {
    /// The channel this bridge serves; commands for another are refused.
    pub channel: String,
    /// The bot's nick: its broadcasts confirm commands.
    pub bot_nick: String,
    /// How long a command waits for its confirmation or refusal.
    pub command_timeout: Duration,
    /// The chat's throttle base (300 ms).
    pub throttle_base: Duration,
}

/// A command waiting its turn.
#[derive(Clone, Debug)]
struct Queued {
    action_id: String,
    command: Command,
    expires_at: Option<SystemTime>,
    throttled: u32,
    /// The private message telling the target why, sent once the command is confirmed.
    notice: Option<String>,
    /// This is such a message, after its action: its outcome is logged and counted, never
    /// reported (the action's result was).
    followup: bool,
}

/// What to do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Write this frame to the chat now.
    Send(String),
    /// Nothing to send before this instant (or until something happens, when `None`).
    Wait(Option<Instant>),
}

/// The pacing of the bot's own commands: never closer than `base × factor`.
#[derive(Debug)]
struct Pacing {
    base: Duration,
    factor: u32,
    last: Option<Instant>,
}

impl Pacing {
    /// The earliest the next command may go. A margin over the chat's own bound absorbs the
    /// time frames spend on the wire.
    fn next_allowed(&self) -> Option<Instant> {
        let last = self.last?;
        let gap = self.base * self.factor + self.base / 10 + Duration::from_millis(10);
        Some(last + gap)
    }

    fn sent(&mut self, now: Instant) {
        if self
            .last
            .is_some_and(|last| now.duration_since(last) >= THROTTLE_RESET)
        {
            self.factor = 1;
        }
        self.last = Some(now);
    }

    fn throttled(&mut self) {
        self.factor = (self.factor * 2).min(MAX_FACTOR);
    }
}

/// The executor.
pub struct Executor {
    options: ExecutorOptions,
    queue: VecDeque<Queued>,
    /// Ids queued or in flight: an id offered again meanwhile is ignored.
    active: HashSet<String>,
    in_flight: Option<(Queued, Instant)>,
    done: lru::LruCache<String, ActionResult>,
    pacing: Pacing,
    connected: bool,
    stopping: bool,
}

impl Executor {
    /// An executor with nothing to do, not connected.
    pub fn new(options: ExecutorOptions) -> Self {
        let pacing = Pacing {
            base: options.throttle_base,
            factor: 1,
            last: None,
        };
        Self {
            options,
            queue: VecDeque::new(),
            active: HashSet::new(),
            in_flight: None,
            done: lru::LruCache::new(NonZeroUsize::new(REMEMBERED).expect("non-zero")),
            pacing,
            connected: false,
            stopping: false,
        }
    }

    /// How long a command waits for its answer.
    pub fn command_timeout(&self) -> Duration {
        self.options.command_timeout
    }

    /// Commands queued or in flight.
    pub fn backlog(&self) -> usize {
        self.queue.len() + usize::from(self.in_flight.is_some())
    }

    /// The current pacing factor (1 until the chat throttles the bot).
    pub fn pacing_factor(&self) -> u32 {
        self.pacing.factor
    }

    /// Takes a command from modbot. Returns a result to report at once: the remembered one for
    /// an id already carried out, or a refusal for a command the chat cannot carry out.
    pub fn offer(&mut self, command: ActionCommand, now: SystemTime) -> Option<ActionResult> {
        if let Some(result) = self.done.get(&command.action_id) {
            metrics::counter!("modbot_bridge_commands_repeated_total").increment(1);
            tracing::info!(action = %command.action_id, "an action already carried out was sent again; answering from memory");
            return Some(result.clone());
        }
        if self.stopping || self.active.contains(&command.action_id) {
            return None;
        }
        let expires_at = command
            .expires_at
            .and_then(|t| SystemTime::try_from(t).ok());
        let refuse = |code: &str, detail: String| Some((code.to_owned(), detail));
        let refusal = if command.channel != self.options.channel {
            refuse(
                "wrongchannel",
                format!(
                    "this bridge serves `{}`, not `{}`",
                    self.options.channel, command.channel
                ),
            )
        } else if command.target.trim().is_empty() {
            refuse("invalidcommand", "the command names no target".to_owned())
        } else if expires_at.is_some_and(|at| at <= now) {
            refuse(
                "expired",
                "the command expired before it could be sent".to_owned(),
            )
        } else {
            None
        };
        let result = match refusal {
            Some((code, detail)) => Err((code, detail)),
            None => chat_command(&command),
        };
        let notice = Some(command.notice.trim())
            .filter(|n| !n.is_empty())
            .map(str::to_owned);
        match result {
            Ok(Some(chat)) => {
                self.active.insert(command.action_id.clone());
                // A private message that is the action itself (a warning) has no follow-up.
                let followup_notice = notice.filter(|_| !matches!(chat, Command::Privmsg { .. }));
                self.queue.push_back(Queued {
                    action_id: command.action_id,
                    command: chat,
                    expires_at,
                    throttled: 0,
                    notice: followup_notice,
                    followup: false,
                });
                None
            }
            Ok(None) => Some(
                self.finish(
                    command.action_id,
                    true,
                    "",
                    "nothing to send: a warning without a notice (the channel's policy has no \
                 warn template, or the user was told moments ago)"
                        .to_owned(),
                ),
            ),
            Err((code, detail)) => Some(self.finish(command.action_id, false, &code, detail)),
        }
    }

    /// The bridge is stopping: queued commands are forgotten (never sent, modbot sends them to
    /// the next bridge) and new ones ignored; only the command in flight still gets its answer.
    pub fn stop_taking(&mut self) {
        self.stopping = true;
        for queued in self.queue.drain(..) {
            self.active.remove(&queued.action_id);
        }
    }

    /// The chat connection is up: queued commands may go.
    pub fn connected(&mut self) {
        self.connected = true;
    }

    /// The chat connection is down. A command in flight is reported `unconfirmed`.
    pub fn disconnected(&mut self) -> Option<ActionResult> {
        self.connected = false;
        let (queued, _) = self.in_flight.take()?;
        let detail = format!(
            "the chat connection closed before it answered `{}`; not sent again",
            queued.command.event()
        );
        self.settle(queued, false, "unconfirmed", detail)
    }

    /// What to do now: a frame to send, or how long to wait. Also reports commands that
    /// expired while queued and a command whose answer is overdue, through `report`.
    pub fn poll(&mut self, now: Instant, wall: SystemTime, report: &mut Vec<ActionResult>) -> Step {
        if let Some((queued, deadline)) = &self.in_flight {
            if now < *deadline {
                return Step::Wait(Some(*deadline));
            }
            let detail = format!(
                "no confirmation or ERR for `{} {}` within {} ms",
                queued.command.event(),
                queued.command.target(),
                self.options.command_timeout.as_millis()
            );
            let (queued, _) = self.in_flight.take().expect("in flight");
            report.extend(self.settle(queued, false, "noreply", detail));
        }
        while let Some(front) = self.queue.front() {
            if front.expires_at.is_some_and(|at| at <= wall) {
                let queued = self.queue.pop_front().expect("a front");
                report.extend(self.settle(
                    queued,
                    false,
                    "expired",
                    "the command expired while waiting for the chat".to_owned(),
                ));
            } else {
                break;
            }
        }
        if !self.connected || self.queue.is_empty() {
            return Step::Wait(None);
        }
        if let Some(allowed) = self.pacing.next_allowed()
            && now < allowed
        {
            return Step::Wait(Some(allowed));
        }
        let queued = self.queue.pop_front().expect("a queued command");
        let frame = queued.command.encode();
        self.pacing.sent(now);
        self.in_flight = Some((queued, now + self.options.command_timeout));
        Step::Send(frame)
    }

    /// The frame [`Self::poll`] returned could not be written (the connection had just gone):
    /// the command goes first again once the chat is back.
    pub fn unsent(&mut self) {
        if let Some((queued, _)) = self.in_flight.take() {
            self.queue.push_front(queued);
        }
        self.connected = false;
    }

    /// A frame from the chat: the outcome of the command in flight, when it is one.
    pub fn on_frame(&mut self, frame: &Frame) -> Option<ActionResult> {
        let (queued, _) = self.in_flight.as_ref()?;
        let confirmed = match (frame, queued.command.confirmed_by()) {
            (
                Frame::Moderation {
                    kind,
                    moderator,
                    target,
                    ..
                },
                Confirmation::Broadcast(expected),
            ) => {
                *kind == expected
                    && moderator.nick.eq_ignore_ascii_case(&self.options.bot_nick)
                    && target.eq_ignore_ascii_case(queued.command.target())
            }
            // destiny.gg's confirmation names nobody: with one command in flight it is ours.
            (Frame::PrivmsgSent { target }, Confirmation::PrivmsgSent) => target
                .as_ref()
                .is_none_or(|t| t.eq_ignore_ascii_case(queued.command.target())),
            _ => false,
        };
        if confirmed {
            let (queued, _) = self.in_flight.take().expect("in flight");
            let detail = match queued.command.confirmed_by() {
                Confirmation::Broadcast(kind) => {
                    format!(
                        "the chat broadcast {} {}",
                        kind.event(),
                        queued.command.target()
                    )
                }
                Confirmation::PrivmsgSent => {
                    format!(
                        "the chat delivered a private message to {}",
                        queued.command.target()
                    )
                }
            };
            if let Some(notice) = &queued.notice {
                // Why, right after the mute or ban; first in line, as part of this action.
                self.queue.push_front(Queued {
                    action_id: format!("{}/notice", queued.action_id),
                    command: Command::Privmsg {
                        nick: queued.command.target().to_owned(),
                        text: notice.clone(),
                    },
                    expires_at: None,
                    throttled: 0,
                    notice: None,
                    followup: true,
                });
            }
            return self.settle(queued, true, "", detail);
        }
        match frame {
            Frame::Err { code } if code == "throttled" => {
                let (mut queued, _) = self.in_flight.take().expect("in flight");
                self.pacing.throttled();
                metrics::counter!("modbot_bridge_throttled_total").increment(1);
                queued.throttled += 1;
                if queued.throttled > MAX_THROTTLED {
                    let detail = format!("throttled {} times", queued.throttled);
                    return self.settle(queued, false, "throttled", detail);
                }
                tracing::info!(action = %queued.action_id, factor = self.pacing.factor, "throttled by the chat; backing off");
                self.queue.push_front(queued);
                None
            }
            Frame::Err { code } => {
                let (queued, _) = self.in_flight.take().expect("in flight");
                let detail = format!(
                    "the chat refused `{} {}`",
                    queued.command.event(),
                    queued.command.target()
                );
                self.settle(queued, false, code, detail)
            }
            _ => None,
        }
    }

    /// The outcome of a command taken off the queue: an action's result to report, or for a
    /// follow-up private message only a log line and a count.
    fn settle(
        &mut self,
        queued: Queued,
        ok: bool,
        code: &str,
        detail: String,
    ) -> Option<ActionResult> {
        if queued.followup {
            let outcome = if ok { "delivered" } else { "failed" };
            metrics::counter!("modbot_bridge_notices_total", "outcome" => outcome).increment(1);
            if ok {
                tracing::info!(action = %queued.action_id, "{detail}");
            } else {
                tracing::warn!(action = %queued.action_id, code, "the notice was not delivered: {detail}");
            }
            return None;
        }
        Some(self.finish(queued.action_id, ok, code, detail))
    }

    fn finish(&mut self, action_id: String, ok: bool, code: &str, detail: String) -> ActionResult {
        self.active.remove(&action_id);
        let outcome = if ok { "executed" } else { "failed" };
        metrics::counter!("modbot_bridge_commands_total", "outcome" => outcome).increment(1);
        if ok {
            tracing::info!(action = %action_id, "{detail}");
        } else {
            tracing::warn!(action = %action_id, code, "{detail}");
        }
        let result = ActionResult {
            action_id: action_id.clone(),
            ok,
            error_code: code.to_owned(),
            detail,
        };
        self.done.put(action_id, result.clone());
        result
    }
}

/// The chat command that carries out an action (`None`: nothing to send, done), or why there
/// is none.
fn chat_command(command: &ActionCommand) -> Result<Option<Command>, (String, String)> {
    let nick = command.target.clone();
    let duration = command.duration.and_then(|d| Duration::try_from(d).ok());
    let kind = ActionKind::try_from(command.kind).unwrap_or(ActionKind::Unspecified);
    match kind {
        ActionKind::Hide | ActionKind::Timeout => match duration {
            Some(duration) if !duration.is_zero() => Ok(Some(Command::Mute { nick, duration })),
            _ => Err((
                "invalidcommand".to_owned(),
                format!("a {} needs a duration", kind.as_str_name()),
            )),
        },
        ActionKind::Ban => Ok(Some(Command::Ban {
            nick,
            reason: command.reason.clone(),
            duration: duration.filter(|d| !d.is_zero()),
        })),
        ActionKind::Unmute => Ok(Some(Command::Unmute { nick })),
        ActionKind::Unban => Ok(Some(Command::Unban { nick })),
        // A warning is the private message that tells the user.
        ActionKind::Warn => Ok(Some(command.notice.trim())
            .filter(|n| !n.is_empty())
            .map(|text| Command::Privmsg {
                nick,
                text: text.to_owned(),
            })),
        ActionKind::Unspecified => Err((
            "unsupported".to_owned(),
            format!("the chat has no command for {}", kind.as_str_name()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::protocol::{Moderation, User};

    fn executor() -> Executor {
        let mut e = Executor::new(ExecutorOptions {
            channel: "destinygg".into(),
            bot_nick: "modbot".into(),
            command_timeout: Duration::from_secs(5),
            throttle_base: Duration::from_millis(300),
        });
        e.connected();
        e
    }

    fn command(id: &str, kind: ActionKind, target: &str, secs: Option<i64>) -> ActionCommand {
        ActionCommand {
            action_id: id.into(),
            channel: "destinygg".into(),
            target: target.into(),
            kind: kind as i32,
            duration: secs.map(|seconds| prost_types::Duration { seconds, nanos: 0 }),
            reason: "spam".into(),
            expires_at: None,
            notice: String::new(),
        }
    }

    fn broadcast(kind: Moderation, moderator: &str, target: &str) -> Frame {
        Frame::Moderation {
            kind,
            moderator: User {
                nick: moderator.into(),
                features: vec!["bot".into()],
            },
            target: target.into(),
            duration: None,
            at: SystemTime::UNIX_EPOCH,
        }
    }

    fn send(e: &mut Executor, now: Instant) -> String {
        let mut reports = Vec::new();
        match e.poll(now, SystemTime::now(), &mut reports) {
            Step::Send(frame) => frame,
            other => panic!("expected a frame, got {other:?} and {reports:?}"),
        }
    }

    #[test]
    fn a_mute_is_sent_in_nanoseconds_and_confirmed_by_its_broadcast() {
        let mut e = executor();
        let t0 = Instant::now();
        assert_eq!(
            e.offer(
                command("a1", ActionKind::Timeout, "Bob", Some(60)),
                SystemTime::now()
            ),
            None
        );
        assert_eq!(
            send(&mut e, t0),
            r#"MUTE {"data":"Bob","duration":60000000000}"#
        );
        // Someone else's mute of Bob, or the bot's mute of someone else, is not the answer.
        assert_eq!(e.on_frame(&broadcast(Moderation::Mute, "Mod", "Bob")), None);
        assert_eq!(
            e.on_frame(&broadcast(Moderation::Mute, "modbot", "Carol")),
            None
        );
        assert_eq!(
            e.on_frame(&broadcast(Moderation::Ban, "modbot", "Bob")),
            None
        );
        let result = e
            .on_frame(&broadcast(Moderation::Mute, "ModBot", "bob"))
            .unwrap();
        assert!(result.ok, "{result:?}");
        assert_eq!(result.action_id, "a1");
        // Sent again by modbot (its result was lost): answered from memory, not sent again.
        let again = e.offer(
            command("a1", ActionKind::Timeout, "Bob", Some(60)),
            SystemTime::now(),
        );
        assert_eq!(again, Some(result));
        let mut reports = Vec::new();
        assert_eq!(
            e.poll(
                t0 + Duration::from_secs(10),
                SystemTime::now(),
                &mut reports
            ),
            Step::Wait(None)
        );
    }

    #[test]
    fn an_err_fails_the_command_in_flight_with_its_code() {
        let mut e = executor();
        e.offer(
            command("a1", ActionKind::Ban, "Admin", None),
            SystemTime::now(),
        );
        let frame = send(&mut e, Instant::now());
        assert!(frame.starts_with("BAN "), "{frame}");
        assert!(frame.contains(r#""ispermanent":true"#), "{frame}");
        let result = e
            .on_frame(&Frame::Err {
                code: "nopermission".into(),
            })
            .unwrap();
        assert!(!result.ok);
        assert_eq!(result.error_code, "nopermission");
        // An ERR with nothing in flight belongs to nothing.
        assert_eq!(
            e.on_frame(&Frame::Err {
                code: "notfound".into()
            }),
            None
        );
    }

    #[test]
    fn commands_are_paced_and_throttling_doubles_the_gap() {
        let mut e = executor();
        for id in ["a1", "a2", "a3"] {
            e.offer(command(id, ActionKind::Unmute, id, None), SystemTime::now());
        }
        let t0 = Instant::now();
        send(&mut e, t0);
        e.on_frame(&broadcast(Moderation::Unmute, "modbot", "a1"))
            .unwrap();
        let mut reports = Vec::new();
        let Step::Wait(Some(next)) = e.poll(t0, SystemTime::now(), &mut reports) else {
            panic!("the next command waits for its slot")
        };
        assert!(next - t0 > Duration::from_millis(300), "{:?}", next - t0);
        let frame = send(&mut e, next);
        assert!(frame.contains("a2"));
        // Throttled: not an outcome; the same command goes again, twice as far apart.
        assert_eq!(
            e.on_frame(&Frame::Err {
                code: "throttled".into()
            }),
            None
        );
        assert_eq!(e.pacing_factor(), 2);
        let Step::Wait(Some(retry)) = e.poll(next, SystemTime::now(), &mut reports) else {
            panic!("the retry waits")
        };
        assert!(
            retry - next > Duration::from_millis(600),
            "{:?}",
            retry - next
        );
        assert!(
            send(&mut e, retry).contains("a2"),
            "the throttled command goes first"
        );
        assert!(reports.is_empty());
        // After five quiet minutes the factor resets.
        e.on_frame(&broadcast(Moderation::Unmute, "modbot", "a2"))
            .unwrap();
        let later = retry + Duration::from_secs(301);
        send(&mut e, later);
        assert_eq!(e.pacing_factor(), 1);
    }

    #[test]
    fn silence_is_noreply_and_a_drop_is_unconfirmed_never_resent() {
        let mut e = executor();
        e.offer(
            command("a1", ActionKind::Hide, "Bob", Some(10)),
            SystemTime::now(),
        );
        e.offer(
            command("a2", ActionKind::Timeout, "Carol", Some(60)),
            SystemTime::now(),
        );
        let t0 = Instant::now();
        send(&mut e, t0);
        let mut reports = Vec::new();
        assert_eq!(
            e.poll(t0 + Duration::from_secs(1), SystemTime::now(), &mut reports),
            Step::Wait(Some(t0 + Duration::from_secs(5)))
        );
        let step = e.poll(t0 + Duration::from_secs(6), SystemTime::now(), &mut reports);
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].error_code, "noreply");
        assert!(matches!(step, Step::Send(ref f) if f.contains("Carol")));
        let dropped = e.disconnected().unwrap();
        assert_eq!(
            (dropped.action_id.as_str(), dropped.error_code.as_str()),
            ("a2", "unconfirmed")
        );
        e.connected();
        // Offered again after the reconnect: the remembered outcome, not a second mute.
        assert_eq!(
            e.offer(
                command("a2", ActionKind::Timeout, "Carol", Some(60)),
                SystemTime::now()
            ),
            Some(dropped)
        );
        assert_eq!(
            e.poll(
                t0 + Duration::from_secs(20),
                SystemTime::now(),
                &mut reports
            ),
            Step::Wait(None)
        );
    }

    #[test]
    fn commands_wait_while_disconnected_and_expire() {
        let mut e = executor();
        e.disconnected();
        let now = SystemTime::now();
        let mut c = command("a1", ActionKind::Timeout, "Bob", Some(60));
        c.expires_at = Some((now + Duration::from_secs(30)).into());
        e.offer(c.clone(), now);
        // Offered twice while queued: queued once.
        assert_eq!(e.offer(c, now), None);
        assert_eq!(e.backlog(), 1);
        let mut reports = Vec::new();
        assert_eq!(e.poll(Instant::now(), now, &mut reports), Step::Wait(None));
        e.poll(Instant::now(), now + Duration::from_secs(31), &mut reports);
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].error_code, "expired");
        assert_eq!(e.backlog(), 0);
    }

    #[test]
    fn stopping_keeps_only_the_command_in_flight() {
        let mut e = executor();
        e.offer(
            command("a1", ActionKind::Timeout, "Bob", Some(60)),
            SystemTime::now(),
        );
        e.offer(
            command("a2", ActionKind::Timeout, "Carol", Some(60)),
            SystemTime::now(),
        );
        let t0 = Instant::now();
        send(&mut e, t0);
        e.stop_taking();
        assert_eq!(
            e.backlog(),
            1,
            "a2 was never sent: modbot gives it to the next bridge"
        );
        assert_eq!(
            e.offer(
                command("a3", ActionKind::Unban, "Dan", None),
                SystemTime::now()
            ),
            None
        );
        assert_eq!(e.backlog(), 1);
        assert!(
            e.on_frame(&broadcast(Moderation::Mute, "modbot", "Bob"))
                .unwrap()
                .ok
        );
        let mut reports = Vec::new();
        assert_eq!(
            e.poll(t0 + Duration::from_secs(1), SystemTime::now(), &mut reports),
            Step::Wait(None)
        );
        assert!(reports.is_empty());
    }

    #[test]
    fn what_the_chat_cannot_do_is_refused_at_once() {
        let mut e = executor();
        // A warning with nothing to say is done at once: there is nothing to send.
        let warn = e
            .offer(
                command("w", ActionKind::Warn, "Bob", None),
                SystemTime::now(),
            )
            .unwrap();
        assert!(warn.ok, "{warn:?}");
        let unknown = e
            .offer(
                command("u", ActionKind::Unspecified, "Bob", None),
                SystemTime::now(),
            )
            .unwrap();
        assert_eq!(unknown.error_code, "unsupported");
        let mut other = command("o", ActionKind::Timeout, "Bob", Some(60));
        other.channel = "strims".into();
        assert_eq!(
            e.offer(other, SystemTime::now()).unwrap().error_code,
            "wrongchannel"
        );
        let no_duration = e
            .offer(
                command("d", ActionKind::Timeout, "Bob", None),
                SystemTime::now(),
            )
            .unwrap();
        assert_eq!(no_duration.error_code, "invalidcommand");
        assert_eq!(e.backlog(), 0);
    }

    fn with_notice(mut command: ActionCommand, notice: &str) -> ActionCommand {
        command.notice = notice.into();
        command
    }

    #[test]
    fn a_warning_is_a_private_message_confirmed_by_privmsgsent() {
        let mut e = executor();
        let t0 = Instant::now();
        let warn = with_notice(command("w1", ActionKind::Warn, "Bob", None), "  be nice  ");
        assert_eq!(e.offer(warn, SystemTime::now()), None);
        assert_eq!(
            send(&mut e, t0),
            r#"PRIVMSG {"data":"be nice","nick":"Bob"}"#
        );
        // A moderation broadcast does not confirm a private message.
        assert_eq!(
            e.on_frame(&broadcast(Moderation::Mute, "modbot", "Bob")),
            None
        );
        // Strims names the recipient: another one is not the answer.
        assert_eq!(
            e.on_frame(&Frame::PrivmsgSent {
                target: Some("Carol".into())
            }),
            None
        );
        // destiny.gg names nobody.
        let result = e.on_frame(&Frame::PrivmsgSent { target: None }).unwrap();
        assert!(result.ok, "{result:?}");
        assert_eq!(result.action_id, "w1");
        assert!(result.detail.contains("private message to Bob"));
        assert_eq!(e.backlog(), 0);
    }

    #[test]
    fn a_refused_warning_fails_and_a_long_one_is_cut() {
        let mut e = executor();
        let t0 = Instant::now();
        let long = "x".repeat(700);
        e.offer(
            with_notice(command("w2", ActionKind::Warn, "Ghost", None), &long),
            SystemTime::now(),
        );
        let frame = send(&mut e, t0);
        let payload: serde_json::Value =
            serde_json::from_str(frame.strip_prefix("PRIVMSG ").unwrap()).unwrap();
        assert_eq!(payload["data"].as_str().unwrap().chars().count(), 512);
        let result = e
            .on_frame(&Frame::Err {
                code: "notfound".into(),
            })
            .unwrap();
        assert!(!result.ok);
        assert_eq!(result.error_code, "notfound");
    }

    #[test]
    fn a_mute_with_a_notice_is_followed_by_the_private_message_which_reports_nothing() {
        let mut e = executor();
        let t0 = Instant::now();
        let mute = with_notice(
            command("m1", ActionKind::Timeout, "Bob", Some(60)),
            "muted 60s: spam",
        );
        e.offer(mute, SystemTime::now());
        e.offer(
            command("m2", ActionKind::Timeout, "Carol", Some(60)),
            SystemTime::now(),
        );
        assert!(send(&mut e, t0).starts_with("MUTE "));
        let muted = e
            .on_frame(&broadcast(Moderation::Mute, "modbot", "Bob"))
            .unwrap();
        assert!(muted.ok);
        assert_eq!(muted.action_id, "m1");
        // The notice goes next, before the other action, paced like any command.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            send(&mut e, t1),
            r#"PRIVMSG {"data":"muted 60s: spam","nick":"Bob"}"#
        );
        // Its refusal is logged, never reported: the mute's result stands.
        assert_eq!(
            e.on_frame(&Frame::Err {
                code: "throttled".into()
            }),
            None,
            "throttled: sent again later"
        );
        let t2 = t1 + Duration::from_secs(2);
        assert!(send(&mut e, t2).starts_with("PRIVMSG "));
        assert_eq!(
            e.on_frame(&Frame::Err {
                code: "notfound".into()
            }),
            None
        );
        let t3 = t2 + Duration::from_secs(2);
        assert!(
            send(&mut e, t3).starts_with("MUTE "),
            "then the next action"
        );
        // A connection lost while a notice is in flight reports nothing either.
        let mut e = executor();
        e.offer(
            with_notice(command("m3", ActionKind::Ban, "Dan", None), "banned"),
            SystemTime::now(),
        );
        assert!(send(&mut e, t0).starts_with("BAN "));
        assert!(
            e.on_frame(&broadcast(Moderation::Ban, "modbot", "Dan"))
                .unwrap()
                .ok
        );
        assert!(send(&mut e, t1).starts_with("PRIVMSG "));
        assert_eq!(e.disconnected(), None);
    }
}
