//! What a user is told: the private message (the chats' `PRIVMSG`) that carries a warning and
//! follows a hide, timeout or ban, rendered from the channel's `[policy.notices]` templates
//! when the action is sent to the bridge, and at most one per user per `min_interval`.
//!
//! Nothing of the message acted on is echoed unless a template asks for `{text}`: the text is
//! then read back from the audit log, cut to [`ECHOED_CHARS`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Services;
use crate::domain::{Action, ActionKind};
use crate::engine::rules::Notices;
use crate::infra::store::AuditQuery;

/// Most characters of the original message a `{text}` placeholder echoes.
pub const ECHOED_CHARS: usize = 120;
/// Users remembered by the rate limit before the oldest entries are dropped.
const REMEMBERED_USERS: usize = 50_000;

/// The values a template's placeholders take.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NoticeFields<'a> {
    /// `{nick}`.
    pub nick: &'a str,
    /// `{reason}`.
    pub reason: &'a str,
    /// `{duration}`, in words.
    pub duration: String,
    /// `{action_id}`.
    pub action_id: &'a str,
    /// `{channel}`.
    pub channel: &'a str,
    /// `{text}`: the message acted on, when a template asks for it.
    pub text: &'a str,
}

/// Fills `template`'s placeholders (checked when the policy was compiled, so an unknown one
/// cannot occur; it would be left as written). `{appeal}` is `appeal` filled the same way.
pub fn render(template: &str, appeal: &str, fields: &NoticeFields<'_>) -> String {
    // The appeal text never echoes the message (its templates may not ask for it).
    let without_text = NoticeFields {
        text: "",
        ..fields.clone()
    };
    let appeal = fill(appeal, "", &without_text);
    fill(template, &appeal, fields)
}

fn fill(template: &str, appeal: &str, fields: &NoticeFields<'_>) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(at) = rest.find(['{', '}']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("{{") {
            out.push('{');
            rest = after;
            continue;
        }
        if let Some(after) = tail.strip_prefix("}}") {
            out.push('}');
            rest = after;
            continue;
        }
        let Some(end) = tail.find('}').filter(|_| tail.starts_with('{')) else {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
            continue;
        };
        let value = match &tail[1..end] {
            "nick" => fields.nick,
            "reason" => fields.reason,
            "duration" => &fields.duration,
            "action_id" => fields.action_id,
            "channel" => fields.channel,
            "appeal" => appeal,
            "text" => fields.text,
            _ => &tail[..=end],
        };
        out.push_str(value);
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    out
}

/// A duration in words: "45 seconds", "10 minutes", "2 hours", "3 days"; `None`: "permanently".
pub fn in_words(duration: Option<Duration>) -> String {
    let Some(duration) = duration else {
        return "permanently".to_owned();
    };
    let secs = duration.as_secs();
    let (n, unit) = match secs {
        0..60 => (secs, "second"),
        60..3600 => (secs.div_ceil(60), "minute"),
        3600..86_400 => (secs.div_ceil(3600), "hour"),
        _ => (secs.div_ceil(86_400), "day"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// The template for an action's kind; empty for kinds nobody is told about (unmute, unban).
fn template(notices: &Notices, kind: ActionKind) -> &str {
    match kind {
        ActionKind::Warn => &notices.warn,
        ActionKind::Hide => &notices.hide,
        ActionKind::Timeout => &notices.timeout,
        ActionKind::Ban => &notices.ban,
        ActionKind::Unmute | ActionKind::Unban => "",
    }
}

/// When each user was last told something, per channel: the rate limit.
#[derive(Debug, Default)]
pub struct NoticeLimiter {
    /// Per (channel, user): when they were last told, and about which action.
    last: Mutex<HashMap<(String, String), (Instant, String)>>,
}

impl NoticeLimiter {
    /// A limiter that has told nobody anything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `user` of `channel` may be told about `action_id` at `now`; if so, counts it.
    /// The same action again (sent once more after a bridge reconnected) is always admitted
    /// and not counted twice.
    pub fn admit(
        &self,
        channel: &str,
        user: &str,
        action_id: &str,
        every: Duration,
        now: Instant,
    ) -> bool {
        if every.is_zero() {
            return true;
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let key = (channel.to_owned(), user.to_owned());
        if let Some((at, told)) = last.get(&key) {
            if told == action_id {
                return true;
            }
            if now.duration_since(*at) < every {
                return false;
            }
        }
        if last.len() >= REMEMBERED_USERS {
            // Whoever was told more than an hour ago may be told again anyway (no channel's
            // interval is that long in practice); if that frees nothing, forget everyone.
            last.retain(|_, (at, _)| now.duration_since(*at) < Duration::from_secs(3600));
            if last.len() >= REMEMBERED_USERS {
                last.clear();
            }
        }
        last.insert(key, (now, action_id.to_owned()));
        true
    }
}

impl Services {
    /// The private message to send the target of `action` (empty: none), from its channel's
    /// policy. Counts against the user's rate limit when one is returned.
    pub async fn notice_for(&self, action: &Action) -> String {
        let engine = self.moderator.engine();
        let notices = &engine.rules().policy(&action.channel).notices;
        let template = template(notices, action.kind);
        if template.is_empty() {
            return String::new();
        }
        if !self.notices.admit(
            &action.channel,
            &action.target_user_id,
            &action.id,
            notices.min_interval,
            Instant::now(),
        ) {
            metrics::counter!("modbot_notices_suppressed_total").increment(1);
            return String::new();
        }
        let asks_for_text = template.contains("{text}");
        let text = if asks_for_text && !action.message_id.is_empty() {
            self.original_text(action).await
        } else {
            String::new()
        };
        let fields = NoticeFields {
            nick: &action.target_nick,
            reason: &action.reason,
            duration: in_words(action.duration),
            action_id: &action.id,
            channel: &action.channel,
            text: &text,
        };
        render(template, &notices.appeal, &fields)
    }

    /// The message an action was about, cut to [`ECHOED_CHARS`]; empty when it is not in the
    /// audit log (or the log cannot be read: the notice goes without it).
    async fn original_text(&self, action: &Action) -> String {
        let query = AuditQuery {
            channel: Some(action.channel.clone()),
            message_id: Some(action.message_id.clone()),
            limit: 1,
            ..AuditQuery::default()
        };
        match self.store.audit_log(&query).await {
            Ok(records) => records
                .first()
                .map(|r| {
                    let text: String = r.message.text.chars().take(ECHOED_CHARS).collect();
                    if r.message.text.chars().count() > ECHOED_CHARS {
                        format!("{text}…")
                    } else {
                        text
                    }
                })
                .unwrap_or_default(),
            Err(error) => {
                tracing::warn!(%error, action = %action.id, "cannot read the message a notice echoes");
                String::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::rules::{NOTICE_PLACEHOLDERS, check_notice_template};

    fn fields() -> NoticeFields<'static> {
        NoticeFields {
            nick: "Bob",
            reason: "Crypto and gift scams",
            duration: in_words(Some(Duration::from_secs(600))),
            action_id: "a-1",
            channel: "destinygg",
            text: "free nitro",
        }
    }

    #[test]
    fn placeholders_are_filled_and_braces_escaped() {
        let out = render(
            "{nick}: {reason} ({duration}). {{appeal}}: {appeal}",
            "file an appeal for {action_id} in {channel}",
            &fields(),
        );
        assert_eq!(
            out,
            "Bob: Crypto and gift scams (10 minutes). {appeal}: file an appeal for a-1 in \
             destinygg"
        );
        // The text appears only where asked for.
        assert!(!render("{nick}: {reason}", "", &fields()).contains("nitro"));
        assert!(render("you wrote: {text}", "", &fields()).ends_with("free nitro"));
        // An appeal text cannot smuggle the message in: its {text} is left empty.
        assert_eq!(render("{appeal}", "x{text}y", &fields()), "xy");
    }

    #[test]
    fn templates_are_checked_when_compiled() {
        let ok = |t: &str| check_notice_template(t, NOTICE_PLACEHOLDERS);
        assert!(ok("{nick}, {reason}. {{literal}}").is_ok());
        assert!(
            ok("{nik}")
                .unwrap_err()
                .contains("`{nik}` is not a placeholder")
        );
        assert!(ok("open { brace").unwrap_err().contains("without its `}`"));
        assert!(ok("close } brace").unwrap_err().contains("without its `{`"));
        assert!(ok(&"x".repeat(513)).unwrap_err().contains("512"));
    }

    #[test]
    fn durations_read_as_words() {
        assert_eq!(in_words(Some(Duration::from_secs(1))), "1 second");
        assert_eq!(in_words(Some(Duration::from_secs(10))), "10 seconds");
        assert_eq!(in_words(Some(Duration::from_secs(60))), "1 minute");
        assert_eq!(in_words(Some(Duration::from_secs(90))), "2 minutes");
        assert_eq!(in_words(Some(Duration::from_secs(7200))), "2 hours");
        assert_eq!(in_words(Some(Duration::from_secs(86_400 * 7))), "7 days");
        assert_eq!(in_words(None), "permanently");
    }

    #[test]
    fn a_user_is_told_at_most_once_per_interval_per_channel() {
        let limiter = NoticeLimiter::new();
        let t0 = Instant::now();
        let every = Duration::from_secs(60);
        assert!(limiter.admit("dgg", "bob", "a1", every, t0));
        let t59 = t0 + Duration::from_secs(59);
        assert!(!limiter.admit("dgg", "bob", "a2", every, t59));
        assert!(
            limiter.admit("dgg", "bob", "a1", every, t59),
            "the same action sent again keeps its notice"
        );
        assert!(
            limiter.admit("dgg", "carol", "a3", every, t0),
            "another user"
        );
        assert!(
            limiter.admit("strims", "bob", "a4", every, t0),
            "another channel"
        );
        assert!(limiter.admit("dgg", "bob", "a5", every, t0 + Duration::from_secs(60)));
        assert!(
            limiter.admit("dgg", "bob", "a6", Duration::ZERO, t0),
            "no limit"
        );
    }
}
