//! `modbot.v1.Actions`: record an action and carry it into the chat, look actions up.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use super::auth::principal_name;
use super::convert::{duration_field, id_field, optional_id, text_field, timestamp_field};
use super::status::FieldError;
use crate::domain;
use crate::domain::{ActionFilter, NewAction, PageAfter};
use crate::infra::store::Recorded;
use crate::proto::actions_server::Actions;
use crate::proto::*;
use crate::service::Services;

/// The longest mute the chats accept (a longer one is a protocol error there).
pub const MAX_MUTE: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The longest timed ban: a year. Longer is what a permanent ban is for, and an unbounded one
/// would overflow the chat's nanosecond durations (destiny.gg's are 64-bit) and the store's
/// expiry arithmetic.
pub const MAX_BAN: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Longest reason, in characters.
const MAX_REASON_CHARS: usize = 500;
/// Page size when none is asked for.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Largest page.
pub const MAX_PAGE_SIZE: u32 = 500;

/// Records and carries out moderation actions.
#[derive(Debug, Clone)]
pub struct ActionsService {
    services: Arc<Services>,
}

impl ActionsService {
    /// The service over the shared application state.
    pub fn new(services: Arc<Services>) -> Self {
        Self { services }
    }
}

#[tonic::async_trait]
impl Actions for ActionsService {
    async fn execute_action(
        &self,
        request: Request<ExecuteActionRequest>,
    ) -> Result<Response<ExecuteActionResponse>, Status> {
        let requested_by = principal_name(&request);
        let action = new_action(request.into_inner(), requested_by)?;
        match self.services.dispatcher.execute(action, None).await? {
            Recorded::New(action) => Ok(Response::new(ExecuteActionResponse {
                action: Some(action.into()),
                replayed: false,
            })),
            Recorded::Replayed(action) => Ok(Response::new(ExecuteActionResponse {
                action: Some(action.into()),
                replayed: true,
            })),
            Recorded::Conflict(first) => Err(Status::already_exists(format!(
                "idempotency_key: already used for a different action (`{}`); use a new key for \
                 a new action",
                first.id
            ))),
        }
    }

    async fn get_action(
        &self,
        request: Request<GetActionRequest>,
    ) -> Result<Response<Action>, Status> {
        let id = id_field(request.into_inner().id, "id")?;
        match self.services.action(&id).await? {
            Some(action) => Ok(Response::new(action.into())),
            None => Err(Status::not_found(format!("no action `{id}`"))),
        }
    }

    async fn list_actions(
        &self,
        request: Request<ListActionsRequest>,
    ) -> Result<Response<ListActionsResponse>, Status> {
        let request = request.into_inner();
        let filter = ActionFilter {
            channel: optional_id(request.channel, "channel")?,
            target_user_id: optional_id(request.target_user_id, "target_user_id")?,
            kind: optional_enum(request.kind, "kind", action_kind)?,
            status: optional_enum(request.status, "status", action_status)?,
            source: optional_enum(request.source, "source", action_source)?,
            since: timestamp_field(request.since, "since")?,
            until: timestamp_field(request.until, "until")?,
        };
        let limit = page_size(request.page_size)?;
        let fingerprint = fingerprint(&format!("{filter:?}"));
        let after = page_after(&request.page_token, &fingerprint)?;
        let page = self
            .services
            .actions(&filter, after.as_ref(), limit)
            .await?;
        Ok(Response::new(ListActionsResponse {
            actions: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page_token(page.next, &fingerprint),
        }))
    }
}

/// Validates an `ExecuteAction` request.
fn new_action(
    request: ExecuteActionRequest,
    requested_by: String,
) -> Result<NewAction, FieldError> {
    let channel = id_field(request.channel, "channel")?;
    let target_user_id = id_field(request.target_user_id, "target_user_id")?;
    let target_nick =
        optional_id(request.target_nick, "target_nick")?.unwrap_or_else(|| target_user_id.clone());
    let kind = action_kind(request.kind)
        .ok_or_else(|| FieldError::new("kind", "is required (hide, warn, timeout, ban, ...)"))?;
    let source =
        action_source(request.source).ok_or_else(|| FieldError::new("source", "is required"))?;
    // The server's own sources mark what it decided itself (verdicts, nukes, overturned
    // appeals): a caller claiming one would pass its action off as modbot's.
    if !matches!(
        source,
        domain::ActionSource::Moderator | domain::ActionSource::Api
    ) {
        return Err(FieldError::new(
            "source",
            format!(
                "`{}` is set by the server only; a caller's action is MODERATOR or API",
                source.as_str()
            ),
        ));
    }
    let duration = duration_field(request.duration, "duration")?;
    let duration = match kind {
        domain::ActionKind::Hide | domain::ActionKind::Timeout => {
            let d = duration
                .ok_or_else(|| FieldError::new("duration", "is required for hides and timeouts"))?;
            Some(mute_duration(d, "duration")?)
        }
        domain::ActionKind::Ban => match duration {
            None => None,
            Some(d) if d < Duration::from_secs(1) || d > MAX_BAN => {
                return Err(FieldError::new(
                    "duration",
                    "must be 1 second to 365 days (leave it unset for a permanent ban)",
                ));
            }
            Some(d) => Some(d),
        },
        domain::ActionKind::Warn | domain::ActionKind::Unmute | domain::ActionKind::Unban => {
            if duration.is_some() {
                return Err(FieldError::new(
                    "duration",
                    "only hides, timeouts and bans last a while",
                ));
            }
            None
        }
    };
    let reason = text_field(request.reason, "reason", MAX_REASON_CHARS)?;
    if kind == domain::ActionKind::Ban && reason.trim().is_empty() {
        return Err(FieldError::new(
            "reason",
            "is required for bans (the chat shows it)",
        ));
    }
    let moderator = optional_id(request.moderator, "moderator")?.unwrap_or_default();
    if source == domain::ActionSource::Moderator && moderator.is_empty() {
        return Err(FieldError::new(
            "moderator",
            "is required for moderator actions",
        ));
    }
    Ok(NewAction {
        channel,
        target_user_id,
        target_nick,
        kind,
        duration,
        reason,
        source,
        moderator,
        message_id: optional_id(request.message_id, "message_id")?.unwrap_or_default(),
        idempotency_key: caller_key(request.idempotency_key)?,
        requested_by,
    })
}

/// Prefixes of the idempotency keys the server gives the actions it makes itself (appeal
/// reversals, nuke mutes, aegis unmutes; `actions::workflow`).
const SERVER_KEY_PREFIXES: [&str; 4] = ["appeal:", "nuke:", "aegis:", "review:"];

/// A caller's idempotency key: an optional id, not one of the server's own, which a caller
/// could otherwise take first to keep a reversal or unmute of its credential from being made.
fn caller_key(key: String) -> Result<Option<String>, FieldError> {
    let key = optional_id(key, "idempotency_key")?;
    if let Some(key) = &key
        && let Some(prefix) = SERVER_KEY_PREFIXES.iter().find(|p| key.starts_with(*p))
    {
        return Err(FieldError::new(
            "idempotency_key",
            format!("keys starting with `{prefix}` are the server's own"),
        ));
    }
    Ok(key)
}

/// A mute's duration: at least a second, at most [`MAX_MUTE`].
pub fn mute_duration(duration: Duration, field: &str) -> Result<Duration, FieldError> {
    if duration < Duration::from_secs(1) {
        return Err(FieldError::new(field, "must be at least 1 second"));
    }
    if duration > MAX_MUTE {
        return Err(FieldError::new(
            field,
            "must be at most 7 days (the chats refuse longer mutes)",
        ));
    }
    Ok(duration)
}

pub fn action_kind(value: i32) -> Option<domain::ActionKind> {
    Some(match crate::proto::ActionKind::try_from(value).ok()? {
        crate::proto::ActionKind::Unspecified => return None,
        crate::proto::ActionKind::Hide => domain::ActionKind::Hide,
        crate::proto::ActionKind::Warn => domain::ActionKind::Warn,
        crate::proto::ActionKind::Timeout => domain::ActionKind::Timeout,
        crate::proto::ActionKind::Ban => domain::ActionKind::Ban,
        crate::proto::ActionKind::Unmute => domain::ActionKind::Unmute,
        crate::proto::ActionKind::Unban => domain::ActionKind::Unban,
    })
}

fn action_source(value: i32) -> Option<domain::ActionSource> {
    Some(match crate::proto::ActionSource::try_from(value).ok()? {
        crate::proto::ActionSource::Unspecified => return None,
        crate::proto::ActionSource::Automod => domain::ActionSource::Automod,
        crate::proto::ActionSource::Moderator => domain::ActionSource::Moderator,
        crate::proto::ActionSource::Appeal => domain::ActionSource::Appeal,
        crate::proto::ActionSource::Nuke => domain::ActionSource::Nuke,
        crate::proto::ActionSource::Api => domain::ActionSource::Api,
    })
}

fn action_status(value: i32) -> Option<domain::ActionStatus> {
    Some(match crate::proto::ActionStatus::try_from(value).ok()? {
        crate::proto::ActionStatus::Unspecified => return None,
        crate::proto::ActionStatus::Pending => domain::ActionStatus::Pending,
        crate::proto::ActionStatus::Sent => domain::ActionStatus::Sent,
        crate::proto::ActionStatus::Executed => domain::ActionStatus::Executed,
        crate::proto::ActionStatus::Failed => domain::ActionStatus::Failed,
        crate::proto::ActionStatus::Expired => domain::ActionStatus::Expired,
        crate::proto::ActionStatus::Recorded => domain::ActionStatus::Recorded,
        crate::proto::ActionStatus::Unknown => domain::ActionStatus::Unknown,
    })
}

/// A filter enum: 0 (unspecified) is no filter; an unknown number is an error.
pub fn optional_enum<T>(
    value: i32,
    field: &str,
    parse: impl Fn(i32) -> Option<T>,
) -> Result<Option<T>, FieldError> {
    if value == 0 {
        return Ok(None);
    }
    parse(value)
        .map(Some)
        .ok_or_else(|| FieldError::new(field, format!("{value} is not a known value")))
}

/// The page size asked for: the default for 0, at most [`MAX_PAGE_SIZE`].
pub fn page_size(requested: u32) -> Result<u32, FieldError> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n <= MAX_PAGE_SIZE => Ok(n),
        n => Err(FieldError::new(
            "page_size",
            format!("{n} is above the limit of {MAX_PAGE_SIZE}"),
        )),
    }
}

/// A short digest of a listing's filters: a page token only continues the listing it was
/// issued for.
pub fn fingerprint(filters: &str) -> String {
    domain::hex(&Sha256::digest(filters.as_bytes())[..6])
}

/// Reads a page token (`v1.<created_at_ms>.<fingerprint>.<id>`, hex-encoded): where the next
/// page starts.
pub fn page_after(token: &str, fingerprint: &str) -> Result<Option<PageAfter>, FieldError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || FieldError::new("page_token", "is not a token this listing issued");
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let mut parts = text.splitn(4, '.');
    let (Some("v1"), Some(ms), Some(print), Some(id)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if print != fingerprint {
        return Err(FieldError::new(
            "page_token",
            "was issued for other filters; list from the first page again",
        ));
    }
    Ok(Some(PageAfter {
        created_at_ms: ms.parse().map_err(|_| bad())?,
        id: id.to_owned(),
    }))
}

/// The token of the page starting after `next`; empty when there is no next page.
pub fn page_token(next: Option<PageAfter>, fingerprint: &str) -> String {
    next.map_or_else(String::new, |next| {
        domain::hex(format!("v1.{}.{fingerprint}.{}", next.created_at_ms, next.id).as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_are_tied_to_their_filters() {
        let next = PageAfter {
            created_at_ms: 4,
            id: "b".into(),
        };
        let token = page_token(Some(next.clone()), "abc");
        assert_eq!(page_after(&token, "abc").unwrap(), Some(next));
        assert!(page_after(&token, "xyz").is_err());
        assert!(page_after("zz", "abc").is_err());
        assert!(page_after("abc", "abc").is_err());
        assert_eq!(page_token(None, "abc"), "", "the last page has no token");
        assert_eq!(
            page_after("", "abc").unwrap(),
            None,
            "no token: the first page"
        );
    }

    #[test]
    fn execute_requests_are_validated_field_by_field() {
        let valid = ExecuteActionRequest {
            channel: "destinygg".into(),
            target_user_id: "bob".into(),
            kind: crate::proto::ActionKind::Timeout as i32,
            duration: Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            }),
            source: crate::proto::ActionSource::Moderator as i32,
            moderator: "mod".into(),
            ..ExecuteActionRequest::default()
        };
        assert_eq!(
            new_action(valid.clone(), String::new())
                .unwrap()
                .target_nick,
            "bob"
        );
        let check = |request: ExecuteActionRequest, field: &str| {
            let error = new_action(request, String::new()).unwrap_err();
            assert_eq!(error.field, field, "{error}");
        };
        check(
            ExecuteActionRequest {
                channel: String::new(),
                ..valid.clone()
            },
            "channel",
        );
        check(
            ExecuteActionRequest {
                kind: 0,
                ..valid.clone()
            },
            "kind",
        );
        check(
            ExecuteActionRequest {
                kind: 99,
                ..valid.clone()
            },
            "kind",
        );
        check(
            ExecuteActionRequest {
                duration: None,
                ..valid.clone()
            },
            "duration",
        );
        check(
            ExecuteActionRequest {
                duration: Some(prost_types::Duration {
                    seconds: 8 * 86_400,
                    nanos: 0,
                }),
                ..valid.clone()
            },
            "duration",
        );
        check(
            ExecuteActionRequest {
                kind: crate::proto::ActionKind::Ban as i32,
                ..valid.clone()
            },
            "reason",
        );
        check(
            ExecuteActionRequest {
                kind: crate::proto::ActionKind::Unmute as i32,
                ..valid.clone()
            },
            "duration",
        );
        check(
            ExecuteActionRequest {
                moderator: String::new(),
                ..valid.clone()
            },
            "moderator",
        );
        check(
            ExecuteActionRequest {
                source: 0,
                ..valid.clone()
            },
            "source",
        );
        check(
            ExecuteActionRequest {
                reason: "x".repeat(501),
                ..valid.clone()
            },
            "reason",
        );
        check(
            ExecuteActionRequest {
                reason: "spam\u{0}".into(),
                ..valid.clone()
            },
            "reason",
        );
        check(
            ExecuteActionRequest {
                kind: crate::proto::ActionKind::Ban as i32,
                duration: Some(prost_types::Duration {
                    seconds: 366 * 86_400,
                    nanos: 0,
                }),
                reason: "scam links".into(),
                ..valid
            },
            "duration",
        );
    }
}
