//! The moderation workflows over recorded actions: appeals (filing, resolving with a reversal
//! and feedback), nukes and their aegis. Validated input comes in from `grpc/`; every write is
//! one transaction, and every retry or race ends in one outcome.

use std::time::{Duration, SystemTime};

use super::dispatch::{Dispatcher, automatic_action_id, chat_action_id};
use crate::domain::{
    Action, ActionKind, ActionSource, ActionStatus, Appeal, AppealStatus, NewAction, Nuke,
};
use crate::domain::{Decision, ReasonSource};
use crate::engine::decision::escalation::charged_as;
use crate::engine::normalize::normalize;
use crate::infra::store::{
    AuditQuery, AuditRecord, Feedback, FeedbackSource, Filed, Resolved, StoreError,
};
use crate::service::moderate::{BENIGN, Moderator, PARDON_FAILURES, state_time};

/// Why a workflow step was refused. `grpc/status.rs` maps each to its gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// Something named does not exist (`NOT_FOUND`).
    #[error("{0}")]
    NotFound(String),
    /// The state forbids it (`FAILED_PRECONDITION`): an appeal already resolved, a nuke
    /// already undone, an appeal against an action that never took effect.
    #[error("{0}")]
    FailedPrecondition(String),
    /// It exists already (`ALREADY_EXISTS`): an open appeal, a reused idempotency key.
    #[error("{0}")]
    AlreadyExists(String),
    /// A request field is wrong in a way only the stored state shows (`INVALID_ARGUMENT`).
    #[error("{field}: {message}")]
    Invalid {
        /// The field's path.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &str, message: impl Into<String>) -> WorkflowError {
    WorkflowError::Invalid {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// An appeal to file, validated.
#[derive(Debug, Clone)]
pub struct FileAppeal {
    /// The action appealed against.
    pub action_id: String,
    /// The user who appeals.
    pub user_id: String,
    /// Their statement.
    pub text: String,
}

/// Files an appeal against an action: the appellant must be the action's target, the action
/// must have taken (or be taking) effect and not been reversed, and it may have one open
/// appeal at a time.
pub async fn file_appeal(
    dispatcher: &Dispatcher,
    request: FileAppeal,
) -> Result<Appeal, WorkflowError> {
    let store = dispatcher.store();
    let action = store
        .action(&request.action_id)
        .await?
        .ok_or_else(|| WorkflowError::NotFound(format!("no action `{}`", request.action_id)))?;
    if action.target_user_id != request.user_id {
        return Err(invalid(
            "user_id",
            format!("is not the target of action `{}`", action.id),
        ));
    }
    if matches!(action.kind, ActionKind::Unmute | ActionKind::Unban) {
        return Err(WorkflowError::FailedPrecondition(format!(
            "action `{}` lifts a mute or ban: there is nothing to appeal",
            action.id
        )));
    }
    if !action.reversed_by.is_empty() {
        return Err(WorkflowError::FailedPrecondition(format!(
            "action `{}` was already reversed by action `{}`",
            action.id, action.reversed_by
        )));
    }
    if matches!(action.status, ActionStatus::Failed | ActionStatus::Expired) {
        return Err(WorkflowError::FailedPrecondition(format!(
            "action `{}` never took effect (it {})",
            action.id,
            action.status.as_str()
        )));
    }
    let appeal = Appeal {
        id: uuid::Uuid::now_v7().to_string(),
        action_id: action.id.clone(),
        channel: action.channel.clone(),
        user_id: request.user_id,
        text: request.text,
        status: AppealStatus::Open,
        moderator: String::new(),
        note: String::new(),
        created_at: SystemTime::now(),
        resolved_at: None,
        reversal_action_id: String::new(),
    };
    match store.file_appeal(&appeal).await? {
        Filed::Done => {
            metrics::counter!("modbot_appeals_filed_total").increment(1);
            Ok(appeal)
        }
        Filed::AlreadyOpen(open) => Err(WorkflowError::AlreadyExists(format!(
            "action `{}` already has an open appeal: `{open}`",
            action.id
        ))),
        Filed::NoAction => Err(WorkflowError::NotFound(format!(
            "no action `{}`",
            action.id
        ))),
    }
}

/// A ruling on an appeal, validated.
#[derive(Debug, Clone)]
pub struct Ruling {
    /// The appeal.
    pub appeal_id: String,
    /// Overturn (true) or uphold.
    pub overturn: bool,
    /// The moderator who rules.
    pub moderator: String,
    /// Their note.
    pub note: String,
    /// The credential's name.
    pub requested_by: String,
}

/// Resolves an open appeal. Overturning sends the reversing action (unmute, unban) through the
/// dispatcher and records the message as a false positive for each model label that fired on
/// it (or, for an action no model label asked for, as [`BENIGN`]). One
/// transaction: of several concurrent rulings on one appeal exactly one applies; the others
/// are `FailedPrecondition`.
///
/// Once the overturn is committed, the offence the action charged its target with is taken
/// off their ladder ([`Moderator::pardon`]: heat, strikes, offence count, rung), if it charged
/// one (`charged_offence`). A pardon that does not reach the user state is logged and
/// counted ([`PARDON_FAILURES`]), never an error: the ruling stands either way.
pub async fn resolve_appeal(
    dispatcher: &Dispatcher,
    moderator: &Moderator,
    ruling: Ruling,
) -> Result<(Appeal, Option<Action>), WorkflowError> {
    let store = dispatcher.store();
    let appeal = store
        .appeal(&ruling.appeal_id)
        .await?
        .ok_or_else(|| WorkflowError::NotFound(format!("no appeal `{}`", ruling.appeal_id)))?;
    if appeal.status != AppealStatus::Open {
        return Err(already_resolved(&appeal));
    }
    let now = SystemTime::now();
    let mut resolved = Appeal {
        status: if ruling.overturn {
            AppealStatus::Overturned
        } else {
            AppealStatus::Upheld
        },
        moderator: ruling.moderator.clone(),
        note: ruling.note.clone(),
        resolved_at: Some(now),
        ..appeal.clone()
    };
    let mut reversal = None;
    let mut feedback = Vec::new();
    let mut charged = None;
    if ruling.overturn {
        let action = store
            .action(&appeal.action_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt {
                id: appeal.id.clone(),
                message: format!("its action `{}` is missing", appeal.action_id),
            })?;
        // A recorded action never reached the chat through modbot (a Classify verdict the
        // caller enforces itself): there is nothing for modbot to undo there.
        if let Some(kind) = action.kind.reversal()
            && action.reversed_by.is_empty()
            && action.status != ActionStatus::Recorded
        {
            let mut undo = NewAction {
                channel: action.channel.clone(),
                target_user_id: action.target_user_id.clone(),
                target_nick: action.target_nick.clone(),
                kind,
                duration: None,
                reason: format!("appeal {} overturned", appeal.id),
                source: ActionSource::Appeal,
                moderator: ruling.moderator.clone(),
                message_id: action.message_id.clone(),
                idempotency_key: Some(format!("appeal:{}:reversal", appeal.id)),
                requested_by: ruling.requested_by.clone(),
            }
            .into_action(
                uuid::Uuid::now_v7().to_string(),
                now,
                dispatcher.pending_ttl(),
            );
            undo.appeal_id.clone_from(&appeal.id);
            resolved.reversal_action_id.clone_from(&undo.id);
            reversal = Some(undo);
        }
        let record = audit_record(dispatcher, &action).await?;
        feedback = false_positives(moderator, &action, record.as_ref(), &ruling, now);
        charged = charged_offence(&action, record.as_ref()).map(|(d, at)| (action, d, at));
    }
    match store
        .resolve_appeal(&resolved, reversal.as_ref(), &feedback)
        .await?
    {
        Resolved::Done(appeal, reversal) => {
            metrics::counter!("modbot_appeals_resolved_total", "status" => appeal.status.as_str())
                .increment(1);
            if let Some(reversal) = &reversal {
                super::dispatch::count_recorded(reversal);
                dispatcher.wake();
            }
            if !feedback.is_empty() {
                metrics::counter!("modbot_feedback_total", "source" => FeedbackSource::AppealOverturned.as_str())
                    .increment(feedback.len() as u64);
            }
            if let Some((action, decision, at)) = &charged {
                pardon(moderator, action, *decision, *at).await;
            }
            Ok((appeal, reversal.map(|r| *r)))
        }
        Resolved::AlreadyResolved(current) => Err(already_resolved(&current)),
        Resolved::NotFound => Err(WorkflowError::NotFound(format!(
            "no appeal `{}`",
            ruling.appeal_id
        ))),
    }
}

fn already_resolved(appeal: &Appeal) -> WorkflowError {
    WorkflowError::FailedPrecondition(format!(
        "appeal `{}` was already {} by {}",
        appeal.id,
        appeal.status.as_str(),
        if appeal.moderator.is_empty() {
            "a moderator"
        } else {
            &appeal.moderator
        }
    ))
}

/// The offence an action charged its target with on the escalation ladder, if it charged one:
/// the decision it weighs as (its verdict's, as [`charged_as`] reads it, when the audit log
/// still has the verdict) and when it was recorded on the state clock.
///
/// Three kinds of action are offences of their own: one that carried out a verdict (its id is
/// [`automatic_action_id`]; the offence was recorded at the message's time, from the audit
/// log, or the action's if the message is gone), a review's rejection (its key is
/// `review:ID`) and a human moderator's action seen in chat (its id is [`chat_action_id`]);
/// the last two recorded at the action's time. The rest (the Actions API's, a nuke's, the
/// short mute that hides a held message) were never recorded as offences: pardoning one
/// would take back another offence of the user's.
fn charged_offence(
    action: &Action,
    record: Option<&AuditRecord>,
) -> Option<(Decision, SystemTime)> {
    let decision = action.kind.decision()?;
    let carried_out_a_verdict = action.source == ActionSource::Automod
        && !action.message_id.is_empty()
        && action.id
            == automatic_action_id(&action.requested_by, &action.channel, &action.message_id);
    if carried_out_a_verdict {
        // A harmful message's warning, carried out as a hide, was charged as the warning.
        return Some(record.map_or((decision, action.created_at), |r| {
            (
                charged_as(decision, &r.verdict.reasons),
                state_time(r.message.sent_at, r.decided_at),
            )
        }));
    }
    // A review's rejection (its server-made key is `review:ID`; `review:ID:lift` lifts a hide)
    // was charged when the ruling was made, at the action's time.
    let ruled_in_review = action.source == ActionSource::Moderator
        && action
            .idempotency_key
            .as_deref()
            .is_some_and(|key| key.starts_with("review:") && !key.ends_with(":lift"));
    if ruled_in_review {
        return Some((decision, action.created_at));
    }
    let seen_in_chat = action.source == ActionSource::Moderator
        && action.id
            == chat_action_id(
                &action.channel,
                &action.target_user_id,
                action.kind,
                action.created_at,
            );
    seen_in_chat.then_some((decision, action.created_at))
}

/// Takes an overturned action's offence off its target's ladder; logs and counts a pardon that
/// only reached this replica's fallback memory.
async fn pardon(moderator: &Moderator, action: &Action, decision: Decision, at: SystemTime) {
    let answer = moderator
        .pardon(&action.channel, &action.target_user_id, decision, at)
        .await;
    if answer.degraded {
        metrics::counter!(PARDON_FAILURES).increment(1);
        tracing::warn!(
            channel = %action.channel,
            user_id = %action.target_user_id,
            action_id = %action.id,
            "appeal overturned, but user state is degraded: the offence was taken back from \
             this replica's memory only, and Redis keeps it"
        );
    } else if answer.value.is_none() {
        tracing::debug!(
            channel = %action.channel,
            user_id = %action.target_user_id,
            action_id = %action.id,
            "appeal overturned; user state holds nothing of the user to take back"
        );
    }
}

/// The audit record of the message an action acted on, if it names one still in the log.
async fn audit_record(
    dispatcher: &Dispatcher,
    action: &Action,
) -> Result<Option<AuditRecord>, WorkflowError> {
    if action.message_id.is_empty() {
        return Ok(None);
    }
    let records = dispatcher
        .store()
        .audit_log(&AuditQuery {
            channel: Some(action.channel.clone()),
            message_id: Some(action.message_id.clone()),
            limit: 1,
            ..AuditQuery::default()
        })
        .await?;
    Ok(records.into_iter().next())
}

/// The negative examples an overturned action teaches: its message (`record`), normalised as
/// the model sees it, for each model label that fired on it; for an action that no model label
/// asked for (a rule's, or a human's), as [`BENIGN`]. None when the message is
/// not in the audit log (no text to learn from).
fn false_positives(
    moderator: &Moderator,
    action: &Action,
    record: Option<&AuditRecord>,
    ruling: &Ruling,
    now: SystemTime,
) -> Vec<Feedback> {
    let Some(record) = record else {
        return Vec::new();
    };
    let mut labels: Vec<String> = record
        .verdict
        .reasons
        .iter()
        .filter(|r| r.source == ReasonSource::Model)
        .map(|r| r.label.clone())
        .collect();
    labels.dedup();
    if labels.is_empty() {
        labels.push(BENIGN.to_owned());
    }
    let engine = moderator.engine();
    let policy = engine.rules().policy(&action.channel);
    let text = normalize(&record.message.text, &policy.emotes).text;
    labels
        .into_iter()
        .map(|label| Feedback {
            id: uuid::Uuid::now_v7().to_string(),
            created_at: now,
            channel: action.channel.clone(),
            user_id: record.message.user_id.clone(),
            message_id: record.message.message_id.clone(),
            text: text.clone(),
            label,
            positive: false,
            source: FeedbackSource::AppealOverturned,
            actor: ruling.moderator.clone(),
            action: "overturn".to_owned(),
        })
        .collect()
}

/// Most users one nuke may mute: a pattern that would catch more is almost certainly too broad.
pub const MAX_NUKE_TARGETS: usize = 1000;

/// A nuke to carry out, validated.
#[derive(Debug, Clone)]
pub struct NukeRequest {
    /// The channel.
    pub channel: String,
    /// The phrase or regular expression.
    pub pattern: String,
    /// Whether `pattern` is a regular expression.
    pub regex: bool,
    /// How far back to look.
    pub window: Duration,
    /// How long to mute.
    pub duration: Duration,
    /// Who nukes.
    pub moderator: String,
    /// Why.
    pub reason: String,
    /// Only report who would be muted.
    pub dry_run: bool,
    /// The credential's name.
    pub requested_by: String,
}

/// What a nuke found and did.
#[derive(Debug, Clone, PartialEq)]
pub struct NukeOutcome {
    /// The nuke's id (empty for a dry run).
    pub nuke_id: String,
    /// Users who said it, in the order they first did.
    pub targets: Vec<String>,
    /// The mutes recorded.
    pub actions: Vec<Action>,
    /// Messages searched.
    pub searched: usize,
}

/// Mutes everyone who said `pattern` (a phrase, matched on the normalised text as rules match,
/// so evasions are caught too; or a case-insensitive regular expression) in the channel's
/// recent history within the window. The nuke and its mutes are recorded in one transaction.
pub async fn nuke(
    dispatcher: &Dispatcher,
    moderator: &Moderator,
    request: NukeRequest,
) -> Result<NukeOutcome, WorkflowError> {
    let engine = moderator.engine();
    let policy = engine.rules().policy(&request.channel);
    let matches: Box<dyn Fn(&str) -> bool + Send + Sync> = if request.regex {
        let regex = regex::RegexBuilder::new(&request.pattern)
            .case_insensitive(true)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| invalid("pattern", format!("invalid regex: {e}")))?;
        if regex.is_match("") {
            return Err(invalid(
                "pattern",
                "matches the empty text, so it would match every message",
            ));
        }
        Box::new(move |text| regex.is_match(text))
    } else {
        let phrase = normalize(&request.pattern, &policy.emotes).text;
        if phrase.trim().is_empty() {
            return Err(invalid(
                "pattern",
                "has nothing left to match once normalised",
            ));
        }
        Box::new(move |text| text.contains(phrase.as_str()))
    };
    let now = SystemTime::now();
    let since_ms = crate::domain::unix_millis(now.checked_sub(request.window).unwrap_or(now));
    let history = moderator
        .state()
        .channel_history(&request.channel)
        .await
        .value;
    let recent: Vec<_> = history.iter().filter(|m| m.at_ms >= since_ms).collect();
    let mut targets: Vec<String> = Vec::new();
    for message in &recent {
        if matches(&message.text) && !targets.contains(&message.user_id) {
            targets.push(message.user_id.clone());
        }
    }
    if targets.len() > MAX_NUKE_TARGETS {
        return Err(WorkflowError::FailedPrecondition(format!(
            "the pattern matches {} users, more than the {MAX_NUKE_TARGETS} one nuke may mute; \
             narrow the pattern or the window",
            targets.len()
        )));
    }
    if request.dry_run || targets.is_empty() {
        return Ok(NukeOutcome {
            nuke_id: String::new(),
            targets,
            actions: Vec::new(),
            searched: recent.len(),
        });
    }
    let nuke = Nuke {
        id: uuid::Uuid::now_v7().to_string(),
        created_at: now,
        channel: request.channel.clone(),
        pattern: request.pattern.clone(),
        regex: request.regex,
        window: request.window,
        duration: request.duration,
        moderator: request.moderator.clone(),
        reason: request.reason.clone(),
        targets: targets.clone(),
        undone_at: None,
        undone_by: String::new(),
    };
    let reason = if request.reason.is_empty() {
        format!("nuke of `{}`", request.pattern)
    } else {
        request.reason.clone()
    };
    let mutes: Vec<Action> = targets
        .iter()
        .map(|user| {
            let mut mute = NewAction {
                channel: request.channel.clone(),
                target_user_id: user.clone(),
                target_nick: user.clone(),
                kind: ActionKind::Timeout,
                duration: Some(request.duration),
                reason: reason.clone(),
                source: ActionSource::Nuke,
                moderator: request.moderator.clone(),
                message_id: String::new(),
                idempotency_key: Some(format!("nuke:{}:{user}", nuke.id)),
                requested_by: request.requested_by.clone(),
            }
            .into_action(
                uuid::Uuid::now_v7().to_string(),
                now,
                dispatcher.pending_ttl(),
            );
            mute.nuke_id.clone_from(&nuke.id);
            mute
        })
        .collect();
    dispatcher.store().record_nuke(&nuke, &mutes).await?;
    for mute in &mutes {
        super::dispatch::count_recorded(mute);
    }
    dispatcher.wake();
    tracing::info!(nuke = %nuke.id, channel = %nuke.channel, targets = targets.len(), moderator = %nuke.moderator, "nuke");
    Ok(NukeOutcome {
        nuke_id: nuke.id,
        targets,
        actions: mutes,
        searched: recent.len(),
    })
}

/// Undoes a nuke (the channel's latest not yet undone when `nuke_id` is `None`): unmutes
/// everyone it muted whose mute was not reversed already. One transaction; a second aegis of
/// the same nuke is `FailedPrecondition`.
pub async fn aegis(
    dispatcher: &Dispatcher,
    channel: &str,
    nuke_id: Option<&str>,
    by: &str,
    requested_by: &str,
) -> Result<(String, Vec<Action>), WorkflowError> {
    let store = dispatcher.store();
    let nuke = store
        .nuke(channel, nuke_id)
        .await?
        .ok_or_else(|| match nuke_id {
            Some(id) => WorkflowError::NotFound(format!("no nuke `{id}` in channel `{channel}`")),
            None => WorkflowError::NotFound(format!("channel `{channel}` has no nuke to undo")),
        })?;
    if let Some(at) = nuke.undone_at {
        return Err(WorkflowError::FailedPrecondition(format!(
            "nuke `{}` was already undone by {} at {} (Unix ms)",
            nuke.id,
            nuke.undone_by,
            crate::domain::unix_millis(at)
        )));
    }
    let now = SystemTime::now();
    let unmutes: Vec<(String, Action)> = store
        .nuke_actions(&nuke.id)
        .await?
        .into_iter()
        .filter(|mute| mute.reversed_by.is_empty())
        .map(|mute| {
            let mut unmute = NewAction {
                channel: mute.channel.clone(),
                target_user_id: mute.target_user_id.clone(),
                target_nick: mute.target_nick.clone(),
                kind: ActionKind::Unmute,
                duration: None,
                reason: format!("aegis of nuke {}", nuke.id),
                source: ActionSource::Nuke,
                moderator: by.to_owned(),
                message_id: String::new(),
                idempotency_key: Some(format!("aegis:{}:{}", nuke.id, mute.target_user_id)),
                requested_by: requested_by.to_owned(),
            }
            .into_action(
                uuid::Uuid::now_v7().to_string(),
                now,
                dispatcher.pending_ttl(),
            );
            unmute.nuke_id.clone_from(&nuke.id);
            (mute.id, unmute)
        })
        .collect();
    if !store.undo_nuke(&nuke.id, by, now, &unmutes).await? {
        return Err(WorkflowError::FailedPrecondition(format!(
            "nuke `{}` was already undone",
            nuke.id
        )));
    }
    for (_, unmute) in &unmutes {
        super::dispatch::count_recorded(unmute);
    }
    dispatcher.wake();
    Ok((nuke.id, unmutes.into_iter().map(|(_, a)| a).collect()))
}
