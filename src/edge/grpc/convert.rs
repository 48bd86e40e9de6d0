//! Conversions between generated proto types and domain types, with request validation.

use std::time::SystemTime;

use super::status::FieldError;
use crate::domain;
use crate::domain::MAX_ID_BYTES;
use crate::domain::{Decision, Degraded, ReasonSource};
use crate::proto;

/// Most roles one message may carry.
pub const MAX_ROLES: usize = 32;
/// Longest role name, in bytes.
pub const MAX_ROLE_BYTES: usize = 64;

/// Limits that depend on configuration.
#[derive(Debug, Clone, Copy)]
pub struct MessageLimits {
    /// Longest text in bytes.
    pub max_text_bytes: usize,
}

impl MessageLimits {
    /// The limits a configuration sets.
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            max_text_bytes: config.grpc.max_text_bytes as usize,
        }
    }
}

/// Validates a proto chat message and converts it. `path` prefixes field names in errors
/// (`messages[3]`).
pub fn chat_message(
    message: proto::ChatMessage,
    path: &str,
    limits: MessageLimits,
) -> Result<domain::ChatMessage, FieldError> {
    let field = |name: &str| format!("{path}.{name}");
    let channel = required_id(message.channel, &field("channel"))?;
    let message_id = required_id(message.message_id, &field("message_id"))?;
    let user_id = required_id(message.user_id, &field("user_id"))?;
    let nick = if message.nick.trim().is_empty() {
        user_id.clone()
    } else {
        bounded_id(message.nick, &field("nick"))?
    };
    if message.roles.len() > MAX_ROLES {
        return Err(FieldError::new(
            field("roles"),
            format!(
                "{} roles exceed the limit of {MAX_ROLES}",
                message.roles.len()
            ),
        ));
    }
    let roles = message
        .roles
        .into_iter()
        .enumerate()
        .map(|(i, role)| {
            let role = role.trim().to_lowercase();
            if role.is_empty() || role.len() > MAX_ROLE_BYTES {
                Err(FieldError::new(
                    format!("{path}.roles[{i}]"),
                    format!("must be 1 to {MAX_ROLE_BYTES} bytes"),
                ))
            } else {
                Ok(role)
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    if message.text.trim().is_empty() {
        return Err(FieldError::new(field("text"), "must not be empty"));
    }
    if message.text.len() > limits.max_text_bytes {
        return Err(FieldError::new(
            field("text"),
            format!(
                "{} bytes exceed the limit of {} bytes",
                message.text.len(),
                limits.max_text_bytes
            ),
        ));
    }
    let sent_at = match message.sent_at {
        None => SystemTime::now(),
        Some(ts) => timestamp(ts).ok_or_else(|| {
            FieldError::new(
                field("sent_at"),
                "is not a valid time (seconds must be within years 1..=9999, nanos within 0..1e9)",
            )
        })?,
    };
    Ok(domain::ChatMessage {
        channel,
        message_id,
        user_id,
        nick,
        roles,
        text: message.text,
        sent_at,
    })
}

/// A protobuf timestamp as a time, if it is valid by the well-known type's own rules
/// (prost would otherwise quietly normalise out-of-range nanos).
fn timestamp(ts: prost_types::Timestamp) -> Option<SystemTime> {
    const MIN_SECONDS: i64 = -62_135_596_800; // 0001-01-01T00:00:00Z
    const MAX_SECONDS: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let valid =
        (MIN_SECONDS..=MAX_SECONDS).contains(&ts.seconds) && (0..1_000_000_000).contains(&ts.nanos);
    valid.then(|| SystemTime::try_from(ts).ok()).flatten()
}

fn required_id(value: String, field: &str) -> Result<String, FieldError> {
    if value.trim().is_empty() {
        return Err(FieldError::new(field, "is required"));
    }
    bounded_id(value, field)
}

/// An id of at most [`MAX_ID_BYTES`] without control characters (it may be empty).
fn bounded_id(value: String, field: &str) -> Result<String, FieldError> {
    if value.len() > MAX_ID_BYTES {
        return Err(FieldError::new(
            field,
            format!(
                "{} bytes exceed the limit of {MAX_ID_BYTES} bytes",
                value.len()
            ),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(value)
}

impl From<Decision> for proto::Decision {
    fn from(decision: Decision) -> Self {
        match decision {
            Decision::Allow => Self::Allow,
            Decision::Hold => Self::Hold,
            Decision::Hide => Self::Hide,
            Decision::Warn => Self::Warn,
            Decision::Timeout => Self::Timeout,
            Decision::Ban => Self::Ban,
        }
    }
}

impl From<ReasonSource> for proto::ReasonSource {
    fn from(source: ReasonSource) -> Self {
        match source {
            ReasonSource::Rule => Self::Rule,
            ReasonSource::Model => Self::Model,
            ReasonSource::Escalation => Self::Escalation,
            ReasonSource::Policy => Self::Policy,
        }
    }
}

impl From<Degraded> for proto::DegradedComponent {
    fn from(component: Degraded) -> Self {
        match component {
            Degraded::Model => Self::Model,
            Degraded::UserState => Self::UserState,
            Degraded::Store => Self::Store,
            Degraded::Decision => Self::Decision,
        }
    }
}

/// A duration as protobuf's, saturated at the largest it can hold.
/// A channel's raid as the API shows it.
pub fn raid(channel: &str, raid: &crate::engine::raid::Raid) -> proto::Raid {
    let at = |ms| prost_types::Timestamp::from(crate::domain::from_unix_millis(ms));
    proto::Raid {
        channel: channel.to_owned(),
        trigger: raid.trigger.to_string(),
        sample: raid.sample.to_string(),
        raiders: raid.raiders,
        joins: raid.joins,
        started_at: Some(at(raid.started_ms)),
        until: Some(at(raid.until_ms)),
    }
}

pub fn duration(value: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(value).unwrap_or(prost_types::Duration {
        seconds: i64::MAX,
        nanos: 0,
    })
}

impl From<domain::Reason> for proto::Reason {
    fn from(reason: domain::Reason) -> Self {
        let evidence = reason.evidence;
        Self {
            source: proto::ReasonSource::from(reason.source).into(),
            rule_id: reason.rule_id,
            label: reason.label,
            decision: proto::Decision::from(reason.decision).into(),
            duration: reason.duration.map(duration),
            score: reason.score,
            threshold: reason.threshold,
            shadow: reason.shadow,
            harmful: reason.harmful,
            evidence: Some(proto::Evidence {
                span: evidence.span.map(|s| proto::Span {
                    start: s.start,
                    end: s.end,
                }),
                matched_text: evidence.matched_text,
                pattern: evidence.pattern,
                similar_message_id: evidence.similar_message_id,
                similar_text: evidence.similar_text,
                detail: evidence.detail,
            }),
            description: reason.description,
        }
    }
}

/// A decided message back on the wire (the live feed).
pub fn chat_message_out(message: &domain::ChatMessage) -> proto::ChatMessage {
    proto::ChatMessage {
        channel: message.channel.clone(),
        message_id: message.message_id.clone(),
        user_id: message.user_id.clone(),
        nick: message.nick.clone(),
        roles: message.roles.clone(),
        text: message.text.clone(),
        sent_at: Some(prost_types::Timestamp::from(message.sent_at)),
        original_text_bytes: 0,
    }
}

impl From<domain::Verdict> for proto::Verdict {
    fn from(verdict: domain::Verdict) -> Self {
        Self {
            message_id: verdict.message_id,
            channel: verdict.channel,
            user_id: verdict.user_id,
            decision: proto::Decision::from(verdict.decision).into(),
            duration: verdict.duration.map(duration),
            reasons: verdict.reasons.into_iter().map(Into::into).collect(),
            enforced: verdict.enforced,
            shadow_decision: proto::Decision::from(verdict.shadow_decision).into(),
            model_version: verdict.model_version,
            elapsed: Some(duration(verdict.elapsed)),
            degraded: verdict
                .degraded
                .into_iter()
                .map(|d| proto::DegradedComponent::from(d).into())
                .collect(),
            scores: verdict.scores.into_iter().collect(),
            normalized_text: verdict.normalized_text,
            action_id: verdict.action_id.unwrap_or_default(),
            review_id: verdict.review_id.unwrap_or_default(),
            // Known to the caller that built the message (`ChatMessage.original_text_bytes`).
            text_truncated: false,
            trial: verdict.trial.map(|t| proto::TrialSide {
                model_version: t.version,
                decision: proto::Decision::from(t.decision).into(),
            }),
        }
    }
}

impl From<domain::ActionKind> for proto::ActionKind {
    fn from(kind: domain::ActionKind) -> Self {
        match kind {
            domain::ActionKind::Hide => Self::Hide,
            domain::ActionKind::Warn => Self::Warn,
            domain::ActionKind::Timeout => Self::Timeout,
            domain::ActionKind::Ban => Self::Ban,
            domain::ActionKind::Unmute => Self::Unmute,
            domain::ActionKind::Unban => Self::Unban,
        }
    }
}

impl From<domain::ActionSource> for proto::ActionSource {
    fn from(source: domain::ActionSource) -> Self {
        match source {
            domain::ActionSource::Automod => Self::Automod,
            domain::ActionSource::Moderator => Self::Moderator,
            domain::ActionSource::Appeal => Self::Appeal,
            domain::ActionSource::Nuke => Self::Nuke,
            domain::ActionSource::Api => Self::Api,
        }
    }
}

impl From<domain::ActionStatus> for proto::ActionStatus {
    fn from(status: domain::ActionStatus) -> Self {
        match status {
            domain::ActionStatus::Pending => Self::Pending,
            domain::ActionStatus::Sent => Self::Sent,
            domain::ActionStatus::Executed => Self::Executed,
            domain::ActionStatus::Failed => Self::Failed,
            domain::ActionStatus::Expired => Self::Expired,
            domain::ActionStatus::Recorded => Self::Recorded,
            domain::ActionStatus::Unknown => Self::Unknown,
        }
    }
}

impl From<domain::AppealStatus> for proto::AppealStatus {
    fn from(status: domain::AppealStatus) -> Self {
        match status {
            domain::AppealStatus::Open => Self::Open,
            domain::AppealStatus::Upheld => Self::Upheld,
            domain::AppealStatus::Overturned => Self::Overturned,
        }
    }
}

impl From<domain::Action> for proto::Action {
    fn from(action: domain::Action) -> Self {
        Self {
            id: action.id,
            channel: action.channel,
            target_user_id: action.target_user_id,
            target_nick: action.target_nick,
            kind: proto::ActionKind::from(action.kind).into(),
            duration: action.duration.map(duration),
            reason: action.reason,
            source: proto::ActionSource::from(action.source).into(),
            moderator: action.moderator,
            message_id: action.message_id,
            idempotency_key: action.idempotency_key.unwrap_or_default(),
            status: proto::ActionStatus::from(action.status).into(),
            error: action.error,
            created_at: Some(action.created_at.into()),
            updated_at: Some(action.updated_at.into()),
            expires_at: action.status.is_open().then(|| action.expires_at.into()),
            requested_by: action.requested_by,
            nuke_id: action.nuke_id,
            appeal_id: action.appeal_id,
            bridge_id: action.bridge_id,
        }
    }
}

impl From<domain::Appeal> for proto::Appeal {
    fn from(appeal: domain::Appeal) -> Self {
        Self {
            id: appeal.id,
            action_id: appeal.action_id,
            channel: appeal.channel,
            user_id: appeal.user_id,
            text: appeal.text,
            status: proto::AppealStatus::from(appeal.status).into(),
            moderator: appeal.moderator,
            note: appeal.note,
            created_at: Some(appeal.created_at.into()),
            resolved_at: appeal.resolved_at.map(Into::into),
            reversal_action_id: appeal.reversal_action_id,
        }
    }
}

impl From<domain::ReviewItem> for proto::ReviewItem {
    fn from(item: domain::ReviewItem) -> Self {
        Self {
            id: item.id,
            channel: item.channel,
            message_id: item.message_id,
            user_id: item.user_id,
            nick: item.nick,
            text: item.text,
            reasons: item.reasons.into_iter().map(Into::into).collect(),
            scores: item.scores.into_iter().collect(),
            status: match item.status {
                domain::ReviewStatus::Pending => proto::ReviewStatus::Pending,
                domain::ReviewStatus::Approved => proto::ReviewStatus::Approved,
                domain::ReviewStatus::Rejected => proto::ReviewStatus::Rejected,
                domain::ReviewStatus::Expired => proto::ReviewStatus::Expired,
            }
            .into(),
            created_at: Some(item.created_at.into()),
            expires_at: Some(item.expires_at.into()),
            resolved_at: item.resolved_at.map(Into::into),
            moderator: item.moderator,
            label: item.label,
            note: item.note,
            action_id: item.action_id,
            hide_action_id: item.hide_action_id,
        }
    }
}

/// A required id field (channel, user, action id): non-empty, bounded, no control characters.
pub fn id_field(value: String, field: &str) -> Result<String, FieldError> {
    required_id(value, field)
}

/// An optional id field: empty stays `None`.
pub fn optional_id(value: String, field: &str) -> Result<Option<String>, FieldError> {
    if value.trim().is_empty() {
        Ok(None)
    } else {
        bounded_id(value, field).map(Some)
    }
}

/// Free text (a reason, a note, an appeal's statement) of at most `max_chars` characters, with
/// no control characters but line breaks and tabs: a NUL cannot be stored by PostgreSQL, and
/// the others would reach a chat or a moderator's screen as they are.
pub fn text_field(value: String, field: &str, max_chars: usize) -> Result<String, FieldError> {
    let chars = value.chars().count();
    if chars > max_chars {
        return Err(FieldError::new(
            field,
            format!("{chars} characters exceed the limit of {max_chars}"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(FieldError::new(
            field,
            "must not contain control characters (line breaks and tabs are allowed)",
        ));
    }
    Ok(value)
}

/// An optional protobuf duration as a duration: negative or out-of-range values are refused.
pub fn duration_field(
    value: Option<prost_types::Duration>,
    field: &str,
) -> Result<Option<std::time::Duration>, FieldError> {
    value
        .map(|d| {
            if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
                return Err(FieldError::new(
                    field,
                    "must be a non-negative duration (nanos within 0..1e9)",
                ));
            }
            std::time::Duration::try_from(d)
                .map_err(|_| FieldError::new(field, "is not a valid duration"))
        })
        .transpose()
}

/// An optional protobuf timestamp as a time.
pub fn timestamp_field(
    value: Option<prost_types::Timestamp>,
    field: &str,
) -> Result<Option<SystemTime>, FieldError> {
    value
        .map(|ts| {
            timestamp(ts).ok_or_else(|| {
                FieldError::new(
                    field,
                    "is not a valid time (seconds within years 1..=9999, nanos within 0..1e9)",
                )
            })
        })
        .transpose()
}
