//! `modbot replay FILE`: an OverRustle chat log streamed through `StreamModerate`, and a
//! summary of the verdicts: offline evaluation of the rules (and the model) on real chat, and
//! load for the whole pipeline.
//!
//! A log line is `[2006-01-02 15:04:05 UTC] nick: message` ([`parse_line`]). The file is read
//! as bytes, line by line, on a blocking thread; a line that is not UTF-8, has no valid
//! timestamp, no `: ` after the nick, an empty nick or one with spaces, or no text, is counted
//! as malformed and skipped (never decoded lossily: a replaced character would change what the
//! rules see). Every other line becomes a `ChatEvent` on one stream that registers as the
//! bridge of its own channel (`--channel`, `replay` by default), so the server's automatic
//! actions for the replayed messages come to the replay, which answers each with a failure
//! (`error_code = "replay"`) and never acts. Messages keep their logged time as `sent_at`, so
//! rate and repetition rules see the chat's real rhythm.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};

use super::client::Server;
use crate::proto::{
    ActionCommand, ActionResult, ChatEvent, ChatMessage, Decision, DegradedComponent, Hello,
    ReasonSource, StreamError, StreamModerateRequest, StreamModerateResponse, Verdict, chat_event,
    stream_moderate_request, stream_moderate_response,
};

/// Longest log line read, in bytes; a longer one is malformed (and skipped without being held
/// in memory).
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Malformed lines whose numbers the summary lists.
const FIRST_MALFORMED: usize = 10;

/// Stream errors whose messages the summary lists.
const FIRST_ERRORS: usize = 5;

/// Reasons the summary lists, most frequent first.
const TOP_REASONS: usize = 10;

/// Parsed lines waiting for the sender.
const PARSED_BUFFER: usize = 1024;

/// Requests buffered between the sender and the stream. Small: the server reads ahead 256
/// messages itself, and a deep client buffer only adds queueing to the measured latency.
const REQUEST_BUFFER: usize = 64;

/// After the last verdict, how long the replay keeps answering commands once none has come.
const DRAIN_QUIET: Duration = Duration::from_secs(2);

/// After the last verdict, the longest it waits for commands at all.
const DRAIN_MAX: Duration = Duration::from_secs(30);

/// After closing its side, how long it waits for the server to end the stream.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// What `ActionResult.error_code` says to every command.
pub const REPLAY_ERROR_CODE: &str = "replay";

/// What `ActionResult.detail` says to every command.
pub const REPLAY_DETAIL: &str = "modbot replay does not act";

/// `modbot replay`'s arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct ReplayArgs {
    /// The OverRustle log (`[2006-01-02 15:04:05 UTC] nick: message` lines); `-` for stdin.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The channel the messages are sent in. Its own, so a replay never competes with a live
    /// bridge for a channel's actions.
    #[arg(long, default_value = "replay")]
    pub channel: String,
    /// The chat dialect named in the hello.
    #[arg(long, default_value = "dgg", value_parser = ["dgg", "strims"])]
    pub dialect: String,
    /// Send at most N messages.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Messages per second to send; 0: as fast as the server takes them.
    #[arg(long, value_name = "MSGS_PER_SEC", default_value_t = 0.0, value_parser = parse_rate)]
    pub rate: f64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// The server (default: bridge.server_url); token and CA come from [bridge].
    #[arg(long, value_name = "URL")]
    pub server_url: Option<String>,
    /// The hello's bridge id (default: `replay-<uuid>`, new each run). A server with tokens
    /// needs a `bridge` token bound to it and the channel, e.g.
    /// `bridge replayer TOKEN bridge_ids=replay channels=replay`.
    #[arg(long, value_name = "ID")]
    pub bridge_id: Option<String>,
}

impl ReplayArgs {
    /// Arguments for `file` with every default.
    pub fn new(file: impl Into<PathBuf>) -> Self {
        Self {
            file: file.into(),
            channel: "replay".to_owned(),
            dialect: "dgg".to_owned(),
            limit: None,
            rate: 0.0,
            json: false,
            server_url: None,
            bridge_id: None,
        }
    }
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if !rate.is_finite() || rate < 0.0 {
        return Err(format!(
            "{text} is not a rate of 0 or more messages per second"
        ));
    }
    Ok(rate)
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// One well-formed log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLine<'a> {
    /// The logged time, in seconds since the Unix epoch (UTC).
    pub time: i64,
    /// The author.
    pub nick: &'a str,
    /// The message, exactly as logged.
    pub text: &'a str,
}

/// Why a line is not a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Nothing on it.
    Empty,
    /// Longer than [`MAX_LINE_BYTES`].
    TooLong,
    /// Not valid UTF-8.
    NotUtf8,
    /// No `[YYYY-MM-DD HH:MM:SS UTC] ` at the start.
    NoTimestamp,
    /// A timestamp that names no real time (month 13, February 30th, 25 o'clock, year 0).
    BadDate,
    /// No `: ` after the nick.
    NoSeparator,
    /// An empty nick.
    EmptyNick,
    /// A nick with whitespace, control characters or a colon in it, or longer than 256 bytes.
    BadNick,
    /// Nothing but whitespace after the nick.
    EmptyText,
}

impl Malformed {
    /// A few words for the summary.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "empty line",
            Self::TooLong => "line too long",
            Self::NotUtf8 => "not UTF-8",
            Self::NoTimestamp => "no [YYYY-MM-DD HH:MM:SS UTC] timestamp",
            Self::BadDate => "invalid date or time",
            Self::NoSeparator => "no `: ` after the nick",
            Self::EmptyNick => "empty nick",
            Self::BadNick => "invalid nick",
            Self::EmptyText => "empty message",
        }
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longest nick accepted (the server's limit on ids).
const MAX_NICK_BYTES: usize = 256;

/// Parses one line (without its line break; a trailing `\r` is ignored). Any bytes are safe.
pub fn parse_line(line: &[u8]) -> Result<LogLine<'_>, Malformed> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err(Malformed::Empty);
    }
    let line = std::str::from_utf8(line).map_err(|_| Malformed::NotUtf8)?;
    // `[` + `YYYY-MM-DD HH:MM:SS` + ` UTC] `
    let bytes = line.as_bytes();
    if bytes.len() < 26 || bytes[0] != b'[' || &bytes[20..26] != b" UTC] " {
        return Err(Malformed::NoTimestamp);
    }
    let time = parse_timestamp(&bytes[1..20])?;
    // Byte 26 follows an ASCII byte, so it is a character boundary.
    let rest = &line[26..];
    let Some((nick, text)) = rest.split_once(": ") else {
        return Err(Malformed::NoSeparator);
    };
    if nick.is_empty() {
        return Err(Malformed::EmptyNick);
    }
    if nick.len() > MAX_NICK_BYTES
        || nick
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ':')
    {
        return Err(Malformed::BadNick);
    }
    if text.trim().is_empty() {
        return Err(Malformed::EmptyText);
    }
    Ok(LogLine { time, nick, text })
}

/// `YYYY-MM-DD HH:MM:SS` (exactly 19 bytes) as Unix seconds.
fn parse_timestamp(stamp: &[u8]) -> Result<i64, Malformed> {
    // Positions of the separators; every other byte must be a digit.
    const SHAPE: &[u8; 19] = b"dddd-dd-dd dd:dd:dd";
    if stamp.len() != SHAPE.len() {
        return Err(Malformed::NoTimestamp);
    }
    for (&byte, &shape) in stamp.iter().zip(SHAPE) {
        let fits = if shape == b'd' {
            byte.is_ascii_digit()
        } else {
            byte == shape
        };
        if !fits {
            return Err(Malformed::NoTimestamp);
        }
    }
    let number = |range: std::ops::Range<usize>| {
        stamp[range]
            .iter()
            .fold(0_u32, |n, &digit| n * 10 + u32::from(digit - b'0'))
    };
    let (year, month, day) = (number(0..4), number(5..7), number(8..10));
    let (hour, minute, second) = (number(11..13), number(14..16), number(17..19));
    if year == 0
        || !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(Malformed::BadDate);
    }
    let days = days_from_civil(i64::from(year), month, day);
    Ok(days * 86_400 + i64::from(hour * 3600 + minute * 60 + second))
}

fn is_leap_year(year: u32) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a date in the proleptic Gregorian calendar (`month` 1..=12, `day`
/// valid for it). Counts in 400-year eras of 146,097 days, with years starting in March so
/// that the leap day is the last day of its year.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400; // 0..=399
    let month_from_march = i64::from((month + 9) % 12); // March = 0
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1; // 0..=365
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468 // 1970-01-01 is day 719,468 of era 0
}

/// What reading the log found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ReadStats {
    lines: u64,
    messages: u64,
    malformed: u64,
    first_malformed: Vec<MalformedLine>,
}

/// A line parsed, owned, on its way to the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parsed {
    line: u64,
    time: i64,
    nick: String,
    text: String,
}

/// Reads the next line into `buf` (without its `\n`), at most `max` bytes of it; the rest of a
/// longer line is skipped. `None` at the end; `Some(true)` when the line was too long.
fn read_line_bounded(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<bool>> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if available.is_empty() {
            return Ok(any.then_some(too_long));
        }
        any = true;
        let (chunk, used, done) = match memchr_newline(available) {
            Some(at) => (&available[..at], at + 1, true),
            None => (available, available.len(), false),
        };
        if !too_long {
            if buf.len() + chunk.len() > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        reader.consume(used);
        if done {
            return Ok(Some(too_long));
        }
    }
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

/// Reads the whole log, sending each well-formed line (at most `limit`) to `out`; stops early
/// when `out` closes. Runs on a blocking thread.
fn read_log(
    mut reader: impl BufRead,
    limit: Option<u64>,
    out: &mpsc::Sender<Parsed>,
) -> std::io::Result<ReadStats> {
    let mut stats = ReadStats::default();
    let mut buf = Vec::new();
    while limit.is_none_or(|limit| stats.messages < limit) {
        let Some(too_long) = read_line_bounded(&mut reader, &mut buf, MAX_LINE_BYTES)? else {
            break;
        };
        stats.lines += 1;
        let mut line = buf.as_slice();
        if stats.lines == 1 {
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        let parsed = if too_long {
            Err(Malformed::TooLong)
        } else {
            parse_line(line)
        };
        match parsed {
            Ok(parsed) => {
                stats.messages += 1;
                let parsed = Parsed {
                    line: stats.lines,
                    time: parsed.time,
                    nick: parsed.nick.to_owned(),
                    text: parsed.text.to_owned(),
                };
                if out.blocking_send(parsed).is_err() {
                    break;
                }
            }
            Err(why) => {
                stats.malformed += 1;
                if stats.first_malformed.len() < FIRST_MALFORMED {
                    stats.first_malformed.push(MalformedLine {
                        line: stats.lines,
                        reason: why.as_str().to_owned(),
                    });
                }
            }
        }
    }
    Ok(stats)
}

// ---------------------------------------------------------------------------------------------
// The summary

/// What a replay found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The log replayed (`-` for stdin).
    pub file: String,
    /// The channel it was replayed in.
    pub channel: String,
    /// The stream's `Hello.bridge_id`.
    pub bridge_id: String,
    /// Lines read (up to the last message sent with `--limit`).
    pub lines_read: u64,
    /// Chat messages sent.
    pub messages_sent: u64,
    /// Lines skipped.
    pub malformed: MalformedLines,
    /// Verdicts received (one per message the server accepted).
    pub verdicts: u64,
    /// Messages the server refused with a `StreamError` instead of a verdict.
    pub rejected: u64,
    /// Verdicts by decision.
    pub decisions: Decisions,
    /// Verdicts by the harshest decision of their shadow-mode reasons (`allow`: none fired).
    pub shadow_decisions: Decisions,
    /// Reasons by rule id (model reasons by label), most frequent first, at most ten.
    pub top_reasons: Vec<ReasonCount>,
    /// Verdicts with at least one degraded component.
    pub degraded_verdicts: u64,
    /// Verdicts by degraded component (`model`, `user_state`, `store`, `decision`).
    pub degraded: BTreeMap<String, u64>,
    /// Action commands the server sent.
    pub commands: Commands,
    /// In-band errors.
    pub stream_errors: StreamErrors,
    /// From the first message sent to the last verdict, in seconds.
    pub wall_time_secs: f64,
    /// Messages answered per second of wall time.
    pub messages_per_sec: f64,
    /// From handing a message to the stream to its verdict, as the replay measured it.
    pub latency_ms: Latency,
    /// `Verdict.elapsed`: from the server's receipt to its verdict.
    pub server_latency_ms: Latency,
}

/// Lines skipped as malformed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MalformedLines {
    /// How many.
    pub count: u64,
    /// The first few.
    pub first: Vec<MalformedLine>,
}

/// One malformed line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MalformedLine {
    /// Its number, from 1.
    pub line: u64,
    /// What is wrong with it.
    pub reason: String,
}

/// Verdicts by decision, mildest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Decisions {
    /// `DECISION_ALLOW`.
    pub allow: u64,
    /// `DECISION_HOLD`.
    pub hold: u64,
    /// `DECISION_HIDE`.
    pub hide: u64,
    /// `DECISION_WARN`.
    pub warn: u64,
    /// `DECISION_TIMEOUT`.
    pub timeout: u64,
    /// `DECISION_BAN`.
    pub ban: u64,
    /// `DECISION_UNSPECIFIED` or an unknown value (a server bug); absent when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub unspecified: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Decisions {
    fn count(&mut self, decision: i32) {
        let slot = match Decision::try_from(decision) {
            Ok(Decision::Allow) => &mut self.allow,
            Ok(Decision::Hold) => &mut self.hold,
            Ok(Decision::Hide) => &mut self.hide,
            Ok(Decision::Warn) => &mut self.warn,
            Ok(Decision::Timeout) => &mut self.timeout,
            Ok(Decision::Ban) => &mut self.ban,
            Ok(Decision::Unspecified) | Err(_) => &mut self.unspecified,
        };
        *slot += 1;
    }

    /// `(name, count)` mildest first, `unspecified` last when not 0.
    pub fn entries(&self) -> Vec<(&'static str, u64)> {
        let mut entries = vec![
            ("allow", self.allow),
            ("hold", self.hold),
            ("hide", self.hide),
            ("warn", self.warn),
            ("timeout", self.timeout),
            ("ban", self.ban),
        ];
        if self.unspecified > 0 {
            entries.push(("unspecified", self.unspecified));
        }
        entries
    }

    /// Every verdict counted.
    pub fn total(&self) -> u64 {
        self.entries().iter().map(|(_, n)| n).sum()
    }
}

/// How often one reason fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReasonCount {
    /// The rule id (for model reasons the label; for escalation and policy reasons their
    /// source).
    pub id: String,
    /// `rule`, `model`, `escalation` or `policy`.
    pub source: String,
    /// Verdicts it fired in.
    pub count: u64,
    /// Of those, how many in shadow mode.
    pub shadow: u64,
}

/// Action commands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Commands {
    /// Sent by the server.
    pub received: u64,
    /// Answered with `ok = false`, `error_code = "replay"`.
    pub answered: u64,
    /// Received after the replay had closed its side, so never answered.
    pub unanswered: u64,
}

/// In-band `StreamError`s.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StreamErrors {
    /// How many.
    pub count: u64,
    /// The first few messages (with the message id when there was one).
    pub first: Vec<String>,
}

/// Latency percentiles in milliseconds (all 0 with no samples).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// The slowest.
    pub max: f64,
}

impl Latency {
    /// Nearest-rank percentiles of `micros` (sorted in place).
    fn of(micros: &mut [u64]) -> Self {
        if micros.is_empty() {
            return Self::default();
        }
        micros.sort_unstable();
        let rank = |p: f64| {
            // The smallest sample with at least p of all samples at or below it.
            let n = micros.len() as f64;
            let index = ((p * n).ceil() as usize).clamp(1, micros.len()) - 1;
            micros[index] as f64 / 1000.0
        };
        Self {
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: micros[micros.len() - 1] as f64 / 1000.0,
        }
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.p50, self.p90, self.p99, self.max
        )
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "replay of {} in channel `{}` (bridge {})",
            self.file, self.channel, self.bridge_id
        )?;
        write!(f, "  lines read        {}", self.lines_read)?;
        if self.malformed.count > 0 {
            let lines: Vec<String> = self
                .malformed
                .first
                .iter()
                .map(|m| format!("{} ({})", m.line, m.reason))
                .collect();
            let more = if self.malformed.count > self.malformed.first.len() as u64 {
                ", ..."
            } else {
                ""
            };
            write!(
                f,
                ", {} malformed and skipped: line {}{more}",
                self.malformed.count,
                lines.join(", ")
            )?;
        }
        writeln!(f)?;
        writeln!(f, "  messages sent     {}", self.messages_sent)?;
        write!(
            f,
            "  verdicts          {} in {:.2} s: {:.1} messages/s",
            self.verdicts, self.wall_time_secs, self.messages_per_sec
        )?;
        if self.rejected > 0 {
            write!(f, " ({} refused by the server)", self.rejected)?;
        }
        writeln!(f)?;
        writeln!(f, "  decisions         {}", decisions_line(&self.decisions))?;
        let shadow: Vec<String> = self
            .shadow_decisions
            .entries()
            .into_iter()
            .filter(|&(name, n)| name != "allow" && n > 0)
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        if !shadow.is_empty() {
            writeln!(f, "  shadow decisions  {}", shadow.join(", "))?;
        }
        if self.top_reasons.is_empty() {
            writeln!(f, "  top reasons       none")?;
        } else {
            writeln!(f, "  top reasons")?;
            for reason in &self.top_reasons {
                let shadow = if reason.shadow > 0 {
                    format!(", {} in shadow mode", reason.shadow)
                } else {
                    String::new()
                };
                writeln!(
                    f,
                    "    {:<24} {:>8}  ({}{shadow})",
                    reason.id, reason.count, reason.source
                )?;
            }
        }
        if self.degraded_verdicts == 0 {
            writeln!(f, "  degraded          none")?;
        } else {
            let by: Vec<String> = self
                .degraded
                .iter()
                .map(|(component, n)| format!("{component} {n}"))
                .collect();
            writeln!(
                f,
                "  degraded          {} verdicts: {}",
                self.degraded_verdicts,
                by.join(", ")
            )?;
        }
        write!(
            f,
            "  commands          {} received, {} answered \"{REPLAY_ERROR_CODE}\" (not carried out)",
            self.commands.received, self.commands.answered
        )?;
        if self.commands.unanswered > 0 {
            write!(f, ", {} after the replay closed", self.commands.unanswered)?;
        }
        writeln!(f)?;
        writeln!(f, "  stream errors     {}", self.stream_errors.count)?;
        for error in &self.stream_errors.first {
            writeln!(f, "    {error}")?;
        }
        writeln!(f, "  latency (client)  {}", self.latency_ms)?;
        writeln!(f, "  latency (server)  {}", self.server_latency_ms)
    }
}

fn decisions_line(decisions: &Decisions) -> String {
    decisions
        .entries()
        .into_iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The lower-case name of a proto enum value without its prefix: `DECISION_ALLOW` → `allow`.
fn short_name(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix)
        .unwrap_or(full)
        .to_ascii_lowercase()
}

/// The responses' running count.
#[derive(Default)]
struct Tally {
    verdicts: u64,
    rejected: u64,
    decisions: Decisions,
    shadow_decisions: Decisions,
    /// id → (source, count, shadow count)
    reasons: BTreeMap<String, (String, u64, u64)>,
    degraded_verdicts: u64,
    degraded: BTreeMap<String, u64>,
    commands: Commands,
    errors: StreamErrors,
    client_micros: Vec<u64>,
    server_micros: Vec<u64>,
    /// Messages handed to the stream and not yet answered, in order.
    pending: VecDeque<(String, Instant)>,
    /// Verdicts whose message id was not the next one waiting (a server bug).
    unexpected: u64,
    /// Action ids of verdicts that act in the chat, whose command has not come yet.
    awaited_commands: HashSet<String>,
    /// Action ids whose command came.
    seen_commands: HashSet<String>,
}

impl Tally {
    fn answered(&self) -> u64 {
        self.verdicts + self.rejected
    }

    /// Takes `message_id` off the pending queue; its send time when it was there.
    fn take_pending(&mut self, message_id: &str) -> Option<Instant> {
        let position = self.pending.iter().position(|(id, _)| id == message_id)?;
        // Verdicts come in order: anything before it was skipped, which the server never
        // does; drop those so the queue cannot grow without bound.
        let skipped = self.pending.drain(..position).count() as u64;
        self.unexpected += skipped;
        self.pending.pop_front().map(|(_, at)| at)
    }

    fn verdict(&mut self, verdict: &Verdict) {
        self.verdicts += 1;
        match self.take_pending(&verdict.message_id) {
            Some(sent) => self
                .client_micros
                .push(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX)),
            None => self.unexpected += 1,
        }
        if let Some(elapsed) = verdict.elapsed.and_then(|d| Duration::try_from(d).ok()) {
            self.server_micros
                .push(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
        }
        self.decisions.count(verdict.decision);
        self.shadow_decisions
            .count(if verdict.shadow_decision == 0 {
                Decision::Allow as i32
            } else {
                verdict.shadow_decision
            });
        let mut seen = HashSet::new();
        for reason in &verdict.reasons {
            let source = ReasonSource::try_from(reason.source)
                .map(|s| short_name(s.as_str_name(), "REASON_SOURCE_"))
                .unwrap_or_else(|_| "unspecified".to_owned());
            let id = if !reason.rule_id.is_empty() {
                reason.rule_id.clone()
            } else if !reason.label.is_empty() {
                reason.label.clone()
            } else {
                source.clone()
            };
            // A rule that fired twice in one verdict counts once.
            if !seen.insert((id.clone(), reason.shadow)) {
                continue;
            }
            let entry = self.reasons.entry(id).or_insert((source, 0, 0));
            entry.1 += 1;
            if reason.shadow {
                entry.2 += 1;
            }
        }
        if !verdict.degraded.is_empty() {
            self.degraded_verdicts += 1;
            let components: HashSet<i32> = verdict.degraded.iter().copied().collect();
            for component in components {
                let name = DegradedComponent::try_from(component)
                    .map(|c| short_name(c.as_str_name(), "DEGRADED_COMPONENT_"))
                    .unwrap_or_else(|_| "unspecified".to_owned());
                *self.degraded.entry(name).or_default() += 1;
            }
        }
        // Every action reaches the chat (a warning as its private message, a hold hidden
        // while it waits as a short mute): a verdict naming one is followed by its command.
        if verdict.enforced
            && !verdict.action_id.is_empty()
            && !self.seen_commands.contains(&verdict.action_id)
        {
            self.awaited_commands.insert(verdict.action_id.clone());
        }
    }

    fn error(&mut self, error: StreamError) {
        self.errors.count += 1;
        let described = if error.message_id.is_empty() {
            error.message.clone()
        } else {
            format!("{}: {}", error.message_id, error.message)
        };
        tracing::warn!(code = error.code, "stream error: {described}");
        if self.errors.first.len() < FIRST_ERRORS {
            self.errors.first.push(described);
        }
        if !error.message_id.is_empty() && self.take_pending(&error.message_id).is_some() {
            self.rejected += 1;
        }
    }

    /// Counts a command and answers it on `answers` (when the replay's side is still open).
    fn command(
        &mut self,
        command: ActionCommand,
        answers: Option<&mpsc::UnboundedSender<StreamModerateRequest>>,
    ) {
        self.commands.received += 1;
        self.awaited_commands.remove(&command.action_id);
        self.seen_commands.insert(command.action_id.clone());
        let answer = StreamModerateRequest {
            kind: Some(stream_moderate_request::Kind::ActionResult(ActionResult {
                action_id: command.action_id,
                ok: false,
                error_code: REPLAY_ERROR_CODE.to_owned(),
                detail: REPLAY_DETAIL.to_owned(),
            })),
        };
        let answered = answers.is_some_and(|answers| answers.send(answer).is_ok());
        if answered {
            self.commands.answered += 1;
        } else {
            self.commands.unanswered += 1;
        }
    }

    fn response(
        &mut self,
        response: StreamModerateResponse,
        answers: Option<&mpsc::UnboundedSender<StreamModerateRequest>>,
    ) {
        match response.kind {
            Some(stream_moderate_response::Kind::Verdict(verdict)) => self.verdict(&verdict),
            Some(stream_moderate_response::Kind::Command(command)) => {
                self.command(command, answers);
            }
            Some(stream_moderate_response::Kind::Error(error)) => self.error(error),
            // Replay answers the commands it is sent itself; their acknowledgement is noise.
            Some(stream_moderate_response::Kind::ResultAck(_)) => {}
            // Raid mode shows in the verdicts (their reasons) that replay counts.
            Some(stream_moderate_response::Kind::RaidAlert(alert)) => {
                tracing::info!(ended = alert.ended, raid = ?alert.raid, "raid alert");
            }
            Some(stream_moderate_response::Kind::Welcome(_)) | None => {
                tracing::warn!("unexpected response on the stream: {response:?}");
            }
        }
    }

    fn into_summary(mut self, header: Header, read: ReadStats, wall: Duration) -> Summary {
        let mut reasons: Vec<ReasonCount> = std::mem::take(&mut self.reasons)
            .into_iter()
            .map(|(id, (source, count, shadow))| ReasonCount {
                id,
                source,
                count,
                shadow,
            })
            .collect();
        reasons.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.id.cmp(&b.id)));
        reasons.truncate(TOP_REASONS);
        let secs = wall.as_secs_f64();
        let answered = self.answered();
        Summary {
            file: header.file,
            channel: header.channel,
            bridge_id: header.bridge_id,
            lines_read: read.lines,
            messages_sent: read.messages,
            malformed: MalformedLines {
                count: read.malformed,
                first: read.first_malformed,
            },
            verdicts: self.verdicts,
            rejected: self.rejected,
            decisions: self.decisions,
            shadow_decisions: self.shadow_decisions,
            top_reasons: reasons,
            degraded_verdicts: self.degraded_verdicts,
            degraded: self.degraded,
            commands: self.commands,
            stream_errors: self.errors,
            wall_time_secs: secs,
            messages_per_sec: if secs > 0.0 {
                answered as f64 / secs
            } else {
                0.0
            },
            latency_ms: Latency::of(&mut self.client_micros),
            server_latency_ms: Latency::of(&mut self.server_micros),
        }
    }
}

struct Header {
    file: String,
    channel: String,
    bridge_id: String,
}

// ---------------------------------------------------------------------------------------------
// Running a replay

/// Opens the log: the file, or stdin for `-`.
fn open_input(path: &Path) -> anyhow::Result<Box<dyn BufRead + Send>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(BufReader::new(std::io::stdin())));
    }
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open the log {}", path.display()))?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        bail!("cannot read the log {}: it is a directory", path.display());
    }
    Ok(Box::new(BufReader::with_capacity(256 * 1024, file)))
}

/// Replays `args.file` against the server (`args.server_url`, else `config.bridge`'s) and
/// returns the summary once every message has its verdict (and the commands that came for
/// them were answered).
pub async fn run(config: &crate::config::Config, args: &ReplayArgs) -> anyhow::Result<Summary> {
    let input = open_input(&args.file)?;
    let (server, connection) =
        Server::connect_to(&config.bridge, args.server_url.as_deref()).await?;
    let url = crate::config::redact_url(
        args.server_url
            .as_deref()
            .unwrap_or(&config.bridge.server_url),
    );

    let bridge_id = args
        .bridge_id
        .clone()
        .unwrap_or_else(|| format!("replay-{}", uuid::Uuid::now_v7()));
    let header = Header {
        file: args.file.display().to_string(),
        channel: args.channel.clone(),
        bridge_id: bridge_id.clone(),
    };
    // The requests: the hello and the chat events through a bounded channel, the answers to
    // commands through an unbounded one, so the task that reads responses never waits to
    // answer (a reader that waits on a full request channel while the server waits for it
    // to read would deadlock the stream).
    let (events_tx, events_rx) = mpsc::channel(REQUEST_BUFFER);
    let (answers_tx, answers_rx) = mpsc::unbounded_channel();
    let hello = StreamModerateRequest {
        kind: Some(stream_moderate_request::Kind::Hello(Hello {
            bridge_id: bridge_id.clone(),
            channels: vec![args.channel.clone()],
            dialect: args.dialect.clone(),
            bot_nick: String::new(),
        })),
    };
    events_tx
        .send(hello)
        .await
        .map_err(|_| anyhow::anyhow!("the request channel closed before the hello"))?;
    let requests = ReceiverStream::new(events_rx).merge(UnboundedReceiverStream::new(answers_rx));
    let mut responses = server
        .stream_moderate(connection, requests)
        .await
        .map_err(|status| stream_failed(&status, &url))?;
    match responses.next().await {
        Some(Ok(StreamModerateResponse {
            kind: Some(stream_moderate_response::Kind::Welcome(welcome)),
        })) => {
            tracing::info!(
                session = %welcome.session_id,
                bridge = %bridge_id,
                channel = %args.channel,
                file = %args.file.display(),
                "replaying"
            );
        }
        Some(Ok(other)) => bail!("the server answered the hello with {other:?}, not a welcome"),
        Some(Err(status)) => return Err(stream_failed(&status, &url)),
        None => bail!("the server closed the stream before its welcome"),
    }

    // Reading and parsing on a blocking thread, sending (paced) on a task, and reading the
    // responses here, all at once.
    let (parsed_tx, parsed_rx) = mpsc::channel(PARSED_BUFFER);
    let limit = args.limit;
    let reader = tokio::task::spawn_blocking(move || read_log(input, limit, &parsed_tx));
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel();
    let start = Instant::now();
    let mut sender = tokio::spawn(send_all(
        parsed_rx,
        events_tx,
        sent_tx,
        args.channel.clone(),
        args.rate,
        start,
    ));

    let mut tally = Tally::default();
    let mut sent_total: Option<u64> = None;
    loop {
        if sent_total.is_some_and(|total| tally.answered() >= total) {
            break;
        }
        tokio::select! {
            joined = &mut sender, if sent_total.is_none() => {
                sent_total = Some(joined.context("the replay's sending task failed")?);
            }
            response = responses.next() => {
                while let Ok(sent) = sent_rx.try_recv() {
                    tally.pending.push_back(sent);
                }
                match response {
                    Some(Ok(response)) => tally.response(response, Some(&answers_tx)),
                    Some(Err(status)) => return Err(stream_failed(&status, &url)),
                    None => bail!(
                        "the server closed the stream after {} of {} messages were answered",
                        tally.answered(),
                        sent_total.map_or_else(|| "the".to_owned(), |n| n.to_string()),
                    ),
                }
            }
        }
    }
    let wall = start.elapsed();
    let read = reader
        .await
        .context("the replay's reading task failed")?
        .with_context(|| format!("cannot read the log {}", args.file.display()))?;
    if tally.unexpected > 0 {
        tracing::warn!(
            count = tally.unexpected,
            "verdicts out of order or for unknown messages"
        );
    }

    // The commands for the last messages' actions come after their verdicts (once their
    // audit records are written): answer them before closing.
    let drain_start = Instant::now();
    while !tally.awaited_commands.is_empty() && drain_start.elapsed() < DRAIN_MAX {
        match tokio::time::timeout(DRAIN_QUIET, responses.next()).await {
            Err(_) => break,
            Ok(Some(Ok(response))) => tally.response(response, Some(&answers_tx)),
            Ok(Some(Err(status))) => return Err(stream_failed(&status, &url)),
            Ok(None) => break,
        }
    }
    if !tally.awaited_commands.is_empty() {
        // Acted on by an earlier replay of the same log (the action ids are derived from the
        // channel and message id), or still pending on the server.
        tracing::info!(
            count = tally.awaited_commands.len(),
            "actions whose command did not come"
        );
    }
    // Close our side (the sender has dropped the events' half) and read what is left.
    drop(answers_tx);
    loop {
        match tokio::time::timeout(CLOSE_TIMEOUT, responses.next()).await {
            Ok(Some(Ok(response))) => tally.response(response, None),
            Ok(Some(Err(status))) => {
                tracing::warn!(%status, "the stream ended with an error after the replay");
                break;
            }
            Ok(None) => break,
            Err(_) => {
                tracing::warn!("the server did not close the stream; leaving it");
                break;
            }
        }
    }
    Ok(tally.into_summary(header, read, wall))
}

/// Sends every parsed line as a chat message, paced at `rate` per second (0: unpaced),
/// telling `sent` each message id and when it was handed over. Returns how many were sent.
async fn send_all(
    mut parsed: mpsc::Receiver<Parsed>,
    events: mpsc::Sender<StreamModerateRequest>,
    sent: mpsc::UnboundedSender<(String, Instant)>,
    channel: String,
    rate: f64,
    start: Instant,
) -> u64 {
    let mut count: u64 = 0;
    while let Some(line) = parsed.recv().await {
        if rate > 0.0 {
            let due = start + Duration::from_secs_f64(count as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let message_id = format!("replay-{}", line.line);
        let request = StreamModerateRequest {
            kind: Some(stream_moderate_request::Kind::Event(ChatEvent {
                channel: channel.clone(),
                kind: Some(chat_event::Kind::Message(ChatMessage {
                    channel: channel.clone(),
                    message_id: message_id.clone(),
                    user_id: line.nick.clone(),
                    nick: line.nick,
                    roles: Vec::new(),
                    text: line.text,
                    sent_at: Some(prost_types::Timestamp {
                        seconds: line.time,
                        nanos: 0,
                    }),
                    original_text_bytes: 0,
                })),
            })),
        };
        // Told before the send, so the verdict can never arrive before its entry.
        if sent.send((message_id, Instant::now())).is_err() {
            break;
        }
        if events.send(request).await.is_err() {
            // The stream is gone; the response side reports why. This message was never
            // sent, but the responses never answer it either: stop counting here.
            break;
        }
        count += 1;
    }
    count
}

/// A failed `StreamModerate` call as an error naming what to check.
fn stream_failed(status: &tonic::Status, url: &str) -> anyhow::Error {
    let message = status.message();
    match status.code() {
        tonic::Code::Unauthenticated => anyhow::anyhow!(
            "the modbot server at {url} refused the token (bridge.server_token, \
             MODBOT_BRIDGE_SERVER_TOKEN or bridge.server_token_file): {message}"
        ),
        tonic::Code::PermissionDenied => anyhow::anyhow!(
            "the modbot server at {url} does not let this token stream (it needs the service \
             role): {message}"
        ),
        tonic::Code::Unavailable => anyhow::anyhow!(
            "cannot reach the modbot server at {url} (bridge.server_url): {message}"
        ),
        tonic::Code::InvalidArgument => {
            anyhow::anyhow!("the modbot server at {url} refused the stream: {message}")
        }
        code => anyhow::anyhow!("StreamModerate at {url} failed ({code:?}): {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inverse of [`days_from_civil`], written independently (by walking years and
    /// months), to check it.
    fn civil_from_days_slow(mut days: i64) -> (i64, u32, u32) {
        let mut year: i64 = 1970;
        let year_len = |y: i64| if is_leap_year(y as u32) { 366 } else { 365 };
        while days < 0 {
            year -= 1;
            days += year_len(year);
        }
        while days >= year_len(year) {
            days -= year_len(year);
            year += 1;
        }
        let mut month = 1;
        while days >= i64::from(days_in_month(year as u32, month)) {
            days -= i64::from(days_in_month(year as u32, month));
            month += 1;
        }
        (year, month, days as u32 + 1)
    }

    fn format_line(line: &LogLine<'_>) -> String {
        let days = line.time.div_euclid(86_400);
        let secs = line.time.rem_euclid(86_400);
        let (y, m, d) = civil_from_days_slow(days);
        format!(
            "[{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC] {}: {}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            line.nick,
            line.text
        )
    }

    #[test]
    fn known_timestamps() {
        for (stamp, unix) in [
            ("1970-01-01 00:00:00", 0),
            ("2006-01-02 15:04:05", 1_136_214_245),
            ("2000-02-29 00:00:00", 951_782_400),
            ("2000-03-01 00:00:00", 951_868_800),
            ("1969-12-31 23:59:59", -1),
            ("0001-01-01 00:00:00", -62_135_596_800),
            ("9999-12-31 23:59:59", 253_402_300_799),
            ("2016-12-31 23:59:59", 1_483_228_799),
            ("2024-02-29 12:00:00", 1_709_208_000),
        ] {
            assert_eq!(parse_timestamp(stamp.as_bytes()), Ok(unix), "{stamp}");
        }
    }

    #[test]
    fn days_from_civil_agrees_with_counting_days() {
        // Every day from 0001-01-01 to 9999-12-31, counted one by one.
        let mut expected = days_from_civil(1, 1, 1);
        assert_eq!(expected, -719_162);
        for year in 1..=9999 {
            for month in 1..=12 {
                for day in 1..=days_in_month(year, month) {
                    assert_eq!(
                        days_from_civil(i64::from(year), month, day),
                        expected,
                        "{year}-{month}-{day}"
                    );
                    expected += 1;
                }
            }
        }
        assert_eq!(expected - 1, days_from_civil(9999, 12, 31));
        assert_eq!(civil_from_days_slow(-1), (1969, 12, 31));
        assert_eq!(civil_from_days_slow(11_016), (2000, 2, 29));
    }

    #[test]
    fn invalid_dates_are_refused() {
        for stamp in [
            "2006-13-02 15:04:05",
            "2006-00-02 15:04:05",
            "2006-01-00 15:04:05",
            "2006-02-29 15:04:05", // not a leap year
            "1900-02-29 00:00:00", // divisible by 100
            "2006-04-31 00:00:00",
            "2006-01-02 24:00:00",
            "2006-01-02 23:60:00",
            "2006-01-02 23:59:60",
            "0000-01-01 00:00:00",
        ] {
            assert_eq!(
                parse_timestamp(stamp.as_bytes()),
                Err(Malformed::BadDate),
                "{stamp}"
            );
        }
        assert_eq!(parse_timestamp(b"2000-02-29 00:00:00"), Ok(951_782_400));
        for stamp in [
            "2006-1-02 15:04:05x",
            "2006/01/02 15:04:05",
            "2006-01-02T15:04:05",
            "２006-01-02 15:04:0",
            "+006-01-02 15:04:05",
        ] {
            assert_eq!(
                parse_timestamp(stamp.as_bytes()),
                Err(Malformed::NoTimestamp),
                "{stamp}"
            );
        }
    }

    #[test]
    fn lines_are_parsed_or_refused_with_a_reason() {
        let ok = parse_line(b"[2006-01-02 15:04:05 UTC] Destiny: hello chat: how are you").unwrap();
        assert_eq!(
            ok,
            LogLine {
                time: 1_136_214_245,
                nick: "Destiny",
                text: "hello chat: how are you"
            }
        );
        assert_eq!(
            parse_line(b"[2006-01-02 15:04:05 UTC] a_b: x\r")
                .unwrap()
                .text,
            "x"
        );
        assert_eq!(
            parse_line("[2006-01-02 15:04:05 UTC] Ünïcödé: ÿ PepeLaugh".as_bytes())
                .unwrap()
                .nick,
            "Ünïcödé"
        );
        type Case<'a> = (&'a [u8], Malformed);
        let cases: &[Case] = &[
            (b"", Malformed::Empty),
            (b"\r", Malformed::Empty),
            (b"hello", Malformed::NoTimestamp),
            (b"[2006-01-02 15:04:05 GMT] a: b", Malformed::NoTimestamp),
            (b"[2006-01-02 15:04:05 UTC]a: b", Malformed::NoTimestamp),
            (b"(2006-01-02 15:04:05 UTC) a: b", Malformed::NoTimestamp),
            (b"[2006-01-02 15:04 UTC] a: b", Malformed::NoTimestamp),
            (b"[2006-02-30 15:04:05 UTC] a: b", Malformed::BadDate),
            (b"[2006-01-02 15:04:05 UTC] ", Malformed::NoSeparator),
            (b"[2006-01-02 15:04:05 UTC] nick", Malformed::NoSeparator),
            (
                b"[2006-01-02 15:04:05 UTC] nick:no space",
                Malformed::NoSeparator,
            ),
            (b"[2006-01-02 15:04:05 UTC] : text", Malformed::EmptyNick),
            (
                b"[2006-01-02 15:04:05 UTC] two words: text",
                Malformed::BadNick,
            ),
            (
                b"[2006-01-02 15:04:05 UTC] tab\tnick: text",
                Malformed::BadNick,
            ),
            (b"[2006-01-02 15:04:05 UTC] a:b: text", Malformed::BadNick),
            (
                b"[2006-01-02 15:04:05 UTC] bell\x07: text",
                Malformed::BadNick,
            ),
            (b"[2006-01-02 15:04:05 UTC] nick: ", Malformed::EmptyText),
            (
                b"[2006-01-02 15:04:05 UTC] nick:    \t",
                Malformed::EmptyText,
            ),
            (
                b"[2006-01-02 15:04:05 UTC] nick: \xff\xfe",
                Malformed::NotUtf8,
            ),
            (b"[2006-01-02 15:04:05 UTC] \xc3: x", Malformed::NotUtf8),
        ];
        for (line, why) in cases {
            assert_eq!(
                parse_line(line),
                Err(*why),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        let long_nick = format!("[2006-01-02 15:04:05 UTC] {}: x", "n".repeat(257));
        assert_eq!(parse_line(long_nick.as_bytes()), Err(Malformed::BadNick));
    }

    /// SplitMix64: a deterministic sweep without a `rand` dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        /// A byte, biased towards the ones the format is made of.
        fn byte(&mut self) -> u8 {
            const INTERESTING: &[u8] = b"[] :-0123456789UTC\r\t\n\x00\x7f\xc3\xa9\xe2\x80\xff";
            if self.below(3) == 0 {
                self.next() as u8
            } else {
                INTERESTING[self.below(INTERESTING.len())]
            }
        }
    }

    const VALID: &[&str] = &[
        "[2017-01-01 00:00:07 UTC] Destiny: hello everyone",
        "[2016-02-29 23:59:59 UTC] xXx_Gamer_xXx: PepeLaugh PepeLaugh OMEGALUL",
        "[1999-12-31 12:34:56 UTC] ab: https://grabify.link/abc",
        "[2024-06-15 08:00:00 UTC] Ünïcödé: ẑ̷̧a̸l̵g̶o̷ and 日本語",
        "[2020-05-05 05:05:05 UTC] x: a: b: c",
    ];

    /// Whatever parses satisfies the format, and prints back as the same line.
    fn check(line: &[u8]) {
        let Ok(parsed) = parse_line(line) else {
            return;
        };
        assert!(!parsed.nick.is_empty());
        assert!(!parsed.nick.chars().any(|c| c.is_whitespace() || c == ':'));
        assert!(!parsed.text.trim().is_empty());
        assert!((-62_135_596_800..=253_402_300_799).contains(&parsed.time));
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        assert_eq!(
            format_line(&parsed).as_bytes(),
            line,
            "{}",
            String::from_utf8_lossy(line)
        );
    }

    #[test]
    fn adversarial_lines_never_panic() {
        let mut rng = Rng(0x5EED);
        for line in VALID {
            assert!(parse_line(line.as_bytes()).is_ok(), "{line}");
            check(line.as_bytes());
        }
        // Random bytes.
        for _ in 0..20_000 {
            let len = rng.below(64);
            let line: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
            check(&line);
        }
        // Valid lines, mutated one to four times.
        let mut parsed = 0;
        for _ in 0..50_000 {
            let mut line = VALID[rng.below(VALID.len())].as_bytes().to_vec();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(line.len() + 1);
                match rng.below(6) {
                    0 if at < line.len() => line[at] = rng.byte(),
                    1 if at < line.len() => {
                        line.remove(at);
                    }
                    2 => line.insert(at, rng.byte()),
                    3 => line.truncate(at),
                    4 if at < line.len() => {
                        // A digit changed into another digit: dates that do not exist.
                        if line[at].is_ascii_digit() {
                            line[at] = b'0' + rng.below(10) as u8;
                        }
                    }
                    _ => {
                        let from = rng.below(line.len() + 1);
                        let copy = line[from.min(at)..from.max(at)].to_vec();
                        line.splice(at..at, copy);
                    }
                }
            }
            if parse_line(&line).is_ok() {
                parsed += 1;
            }
            check(&line);
        }
        // The sweep reaches both sides of the parser.
        assert!(parsed > 1_000, "only {parsed} mutated lines parsed");
    }

    fn read_all(input: &[u8], limit: Option<u64>) -> (ReadStats, Vec<Parsed>) {
        let (tx, mut rx) = mpsc::channel(1_000_000);
        let stats = read_log(input, limit, &tx).unwrap();
        drop(tx);
        let mut out = Vec::new();
        while let Ok(parsed) = rx.try_recv() {
            out.push(parsed);
        }
        (stats, out)
    }

    #[test]
    fn a_log_is_read_with_its_malformed_lines_counted() {
        let mut input = Vec::new();
        input.extend_from_slice(b"\xEF\xBB\xBF[2017-01-01 00:00:01 UTC] a: one\r\n");
        input.extend_from_slice(b"garbage\n");
        input.extend_from_slice(b"\n");
        input.extend_from_slice(b"[2017-01-01 00:00:02 UTC] b: two\n");
        input.extend_from_slice(b"[2017-01-01 00:00:03 UTC] \xff: bad\n");
        input.extend_from_slice(
            format!(
                "[2017-01-01 00:00:04 UTC] c: {}\n",
                "x".repeat(MAX_LINE_BYTES)
            )
            .as_bytes(),
        );
        input.extend_from_slice(b"[2017-01-01 00:00:05 UTC] d: last, no newline");
        let (stats, parsed) = read_all(&input, None);
        assert_eq!(stats.lines, 7);
        assert_eq!(stats.messages, 3);
        assert_eq!(stats.malformed, 4);
        let lines: Vec<(u64, &str)> = stats
            .first_malformed
            .iter()
            .map(|m| (m.line, m.reason.as_str()))
            .collect();
        assert_eq!(
            lines,
            [
                (2, "no [YYYY-MM-DD HH:MM:SS UTC] timestamp"),
                (3, "empty line"),
                (5, "not UTF-8"),
                (6, "line too long")
            ]
        );
        let got: Vec<(u64, &str, &str)> = parsed
            .iter()
            .map(|p| (p.line, p.nick.as_str(), p.text.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (1, "a", "one"),
                (4, "b", "two"),
                (7, "d", "last, no newline")
            ]
        );
        assert_eq!(parsed[0].time, 1_483_228_801);

        // --limit counts messages, not lines.
        let (stats, parsed) = read_all(&input, Some(2));
        assert_eq!((stats.lines, stats.messages, parsed.len()), (4, 2, 2));
    }

    #[test]
    fn the_first_malformed_lines_are_kept_and_all_counted() {
        let input = "x\n".repeat(25);
        let (stats, parsed) = read_all(input.as_bytes(), None);
        assert!(parsed.is_empty());
        assert_eq!(stats.malformed, 25);
        let lines: Vec<u64> = stats.first_malformed.iter().map(|m| m.line).collect();
        assert_eq!(lines, (1..=10).collect::<Vec<u64>>());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut micros: Vec<u64> = (1..=1000).rev().map(|ms| ms * 1000).collect();
        let latency = Latency::of(&mut micros);
        assert_eq!(
            latency,
            Latency {
                p50: 500.0,
                p90: 900.0,
                p99: 990.0,
                max: 1000.0
            }
        );
        assert_eq!(Latency::of(&mut []), Latency::default());
        assert_eq!(Latency::of(&mut [1500]).p50, 1.5);
    }

    #[test]
    fn rates_are_checked() {
        assert_eq!(parse_rate("0"), Ok(0.0));
        assert_eq!(parse_rate("12.5"), Ok(12.5));
        assert!(parse_rate("-1").is_err());
        assert!(parse_rate("inf").is_err());
        assert!(parse_rate("NaN").is_err());
        assert!(parse_rate("fast").is_err());
    }
}
