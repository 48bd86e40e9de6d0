//! The review queue: a message a verdict held waits for a moderator, who approves it (it
//! stands) or rejects it (an action on its author); nobody ruling in time settles it by the
//! channel's `on_expiry`.
//!
//! An item is written in its verdict's transaction ([`crate::service::pipeline`]), so a
//! verdict that names a review id always has its item. A ruling is one transaction too: the
//! item's new status, its action and its feedback, conditional on the item being pending, so
//! of two moderators ruling at once the first stands and the second is told who ruled. A
//! watcher learns each settled item from the database (any replica's rulings), woken at once
//! by this replica's own.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::Services;
use super::actions::dispatch::count_recorded;
use super::actions::workflow::WorkflowError;
use super::moderate::{BENIGN, UNLABELED};
use super::records::Page;
use crate::domain::{
    Action, ActionKind, ActionSource, ActionStatus, ChatMessage, NewAction, OnExpiry, PageAfter,
    ReasonSource, ReviewFilter, ReviewItem, ReviewStatus, Verdict, review_id, unix_millis,
};
use crate::engine::normalize::normalize;
use crate::infra::store::{Feedback, FeedbackSource, ReviewRuled, StoreError};

/// How often the expiry task looks for items whose time ran out (and refreshes the gauges).
pub const EXPIRY_POLL: Duration = Duration::from_secs(1);
/// How often a watcher reads the database when nothing woke it (rulings on other replicas).
pub const WATCH_POLL: Duration = Duration::from_secs(1);
/// How far back a watcher re-reads, so that a ruling committed late (a slow transaction, a
/// replica's clock behind) is still seen; what was sent is remembered that long.
const WATCH_OVERLAP: Duration = Duration::from_secs(10);
/// How far back a watch may start.
pub const MAX_WATCH_BACKLOG: Duration = Duration::from_secs(7 * 24 * 3600);
/// Items read per query.
const BATCH: u32 = 256;

/// A moderator's ruling on a pending item.
#[derive(Debug, Clone, PartialEq)]
pub enum ReviewDecision {
    /// The message stands.
    Approve,
    /// Act on the author.
    Reject {
        /// Hide, timeout or ban.
        kind: ActionKind,
        /// For a timeout (required) or a ban (`None`: permanent).
        duration: Option<Duration>,
        /// What the message is.
        label: String,
    },
}

/// A ruling, as asked.
#[derive(Debug, Clone)]
pub struct ReviewRuling {
    /// The item.
    pub id: String,
    /// Approve or reject.
    pub ruling: ReviewDecision,
    /// Who rules.
    pub moderator: String,
    /// Their note.
    pub note: String,
    /// The credential that asked (empty without tokens).
    pub requested_by: String,
}

/// Which settled items a watcher gets.
#[derive(Debug, Clone, Default)]
pub struct WatchFilter {
    /// Only this channel.
    pub channel: Option<String>,
    /// Only items held by this credential's calls (a classifier watching its own).
    pub requested_by: Option<String>,
    /// Start at items settled since then; `None`: from now.
    pub since: Option<SystemTime>,
}

impl WatchFilter {
    fn admits(&self, item: &ReviewItem) -> bool {
        self.channel.as_ref().is_none_or(|c| *c == item.channel)
            && self
                .requested_by
                .as_ref()
                .is_none_or(|r| *r == item.requested_by)
    }
}

/// The queue's shared state: what wakes watchers.
#[derive(Debug, Default)]
pub struct ReviewQueue {
    settled: Notify,
}

impl ReviewQueue {
    /// A queue with nobody watching yet.
    pub fn new() -> Self {
        Self::default()
    }
}

/// The review item that holds `message` for the caller `requested_by`, if `verdict` holds it.
pub fn review_item(
    message: &ChatMessage,
    verdict: &Verdict,
    requested_by: &str,
    policy: &crate::engine::rules::Review,
    records_only: bool,
    now: SystemTime,
) -> Option<ReviewItem> {
    if !verdict.enforced || verdict.decision != crate::domain::Decision::Hold {
        return None;
    }
    Some(ReviewItem {
        id: review_id(requested_by, &message.channel, &message.message_id),
        created_at: now,
        expires_at: now + policy.ttl,
        on_expiry: policy.on_expiry,
        channel: message.channel.clone(),
        message_id: message.message_id.clone(),
        user_id: message.user_id.clone(),
        nick: message.nick.clone(),
        text: message.text.clone(),
        reasons: verdict.reasons.clone(),
        scores: verdict.scores.clone(),
        requested_by: requested_by.to_owned(),
        records_only,
        hide_action_id: String::new(),
        status: ReviewStatus::Pending,
        resolved_at: None,
        moderator: String::new(),
        label: String::new(),
        note: String::new(),
        action_id: String::new(),
    })
}

impl Services {
    /// The review item `id`.
    pub async fn review(&self, id: &str) -> Result<Option<ReviewItem>, StoreError> {
        self.store.review(id).await
    }

    /// A page of the items matching `filter`, newest first; `limit` is at least 1.
    pub async fn reviews(
        &self,
        filter: &ReviewFilter,
        after: Option<&PageAfter>,
        limit: u32,
    ) -> Result<Page<ReviewItem>, StoreError> {
        let rows = self.store.reviews(filter, after, limit + 1).await?;
        Ok(Page::of(rows, limit, |r| PageAfter {
            created_at_ms: unix_millis(r.created_at),
            id: r.id.clone(),
        }))
    }

    /// Rules on a pending item: the item settled, the action that carries a rejection out
    /// (or the unmute lifting an approved message's hide), and the feedback it teaches, in
    /// one transaction. `FailedPrecondition` when it was settled already.
    pub async fn rule_review(
        &self,
        ruling: ReviewRuling,
    ) -> Result<(ReviewItem, Option<Action>), WorkflowError> {
        let item =
            self.store.review(&ruling.id).await?.ok_or_else(|| {
                WorkflowError::NotFound(format!("no review item `{}`", ruling.id))
            })?;
        if item.status != ReviewStatus::Pending {
            return Err(already_settled(&item));
        }
        let now = SystemTime::now();
        let mut settled = ReviewItem {
            resolved_at: Some(now),
            moderator: ruling.moderator.clone(),
            note: ruling.note.clone(),
            ..item.clone()
        };
        let engine = self.moderator.engine();
        let policy = engine.rules().policy(&item.channel);
        let text = normalize(&item.text, &policy.emotes).text;
        let example =
            |label: &str, positive: bool, source: FeedbackSource, action: &str| Feedback {
                id: uuid::Uuid::now_v7().to_string(),
                created_at: now,
                channel: item.channel.clone(),
                user_id: item.user_id.clone(),
                message_id: item.message_id.clone(),
                text: text.clone(),
                label: label.to_owned(),
                positive,
                source,
                actor: ruling.moderator.clone(),
                action: action.to_owned(),
            };
        let (action, feedback) = match &ruling.ruling {
            ReviewDecision::Approve => {
                settled.status = ReviewStatus::Approved;
                let mut labels: Vec<&str> = item
                    .reasons
                    .iter()
                    .filter(|r| r.source == ReasonSource::Model && !r.shadow)
                    .map(|r| r.label.as_str())
                    .collect();
                labels.sort_unstable();
                labels.dedup();
                if labels.is_empty() {
                    // Held by a rule, and fine: nothing any label should fire on.
                    labels.push(BENIGN);
                }
                let feedback = labels
                    .into_iter()
                    .map(|l| example(l, false, FeedbackSource::ReviewApproved, "approve"))
                    .collect();
                (self.lift_hide(&item, &ruling, now).await?, feedback)
            }
            ReviewDecision::Reject {
                kind,
                duration,
                label,
            } => {
                settled.status = ReviewStatus::Rejected;
                settled.label.clone_from(label);
                let action = self.review_action(
                    &item,
                    *kind,
                    *duration,
                    format!("review: {label}"),
                    ActionSource::Moderator,
                    &ruling.moderator,
                    &ruling.requested_by,
                    now,
                );
                settled.action_id.clone_from(&action.id);
                let label = if label.contains('/') {
                    label.as_str()
                } else {
                    // A word of the team's names no label the heads have.
                    UNLABELED
                };
                let feedback = vec![example(
                    label,
                    true,
                    FeedbackSource::ReviewRejected,
                    kind.as_str(),
                )];
                (Some(action), feedback)
            }
        };
        let (settled, action) = self.settle(&settled, action.as_ref(), &feedback).await?;
        // A rejection is a moderator's verdict on the message: it counts on the author's
        // ladder (an overturned appeal of its action takes it back).
        if let (ReviewStatus::Rejected, Some(decision)) = (
            settled.status,
            action.as_ref().and_then(|a| a.kind.decision()),
        ) {
            self.moderator
                .charge(&settled.channel, &settled.user_id, decision, now)
                .await;
        }
        if !feedback.is_empty() {
            let source = feedback[0].source.as_str();
            metrics::counter!("modbot_feedback_total", "source" => source)
                .increment(feedback.len() as u64);
        }
        if let Ok(waited) = now.duration_since(item.created_at) {
            metrics::histogram!("modbot_review_time_to_review_seconds")
                .record(waited.as_secs_f64());
        }
        Ok((settled, action))
    }

    /// Settles every pending item whose time ran out by `now` (as its channel's `on_expiry`
    /// says) and refreshes the queue's gauges. How many were settled here.
    pub async fn expire_reviews(&self, now: SystemTime) -> Result<usize, StoreError> {
        let mut settled_here = 0;
        loop {
            let due = self.store.due_reviews(now, BATCH).await?;
            let full = due.len() == BATCH as usize;
            for item in due {
                let mut settled = ReviewItem {
                    status: ReviewStatus::Expired,
                    resolved_at: Some(now),
                    ..item.clone()
                };
                let action = match item.on_expiry {
                    OnExpiry::Hide if item.hide_action_id.is_empty() => {
                        let action = self.review_action(
                            &item,
                            ActionKind::Hide,
                            Some(self.config.actions.hide_duration()),
                            "held for review; nobody ruled in time".to_owned(),
                            ActionSource::Automod,
                            "",
                            &item.requested_by,
                            now,
                        );
                        settled.action_id.clone_from(&action.id);
                        Some(action)
                    }
                    OnExpiry::Hide => None,
                    OnExpiry::Allow => {
                        let ruling = ReviewRuling {
                            id: item.id.clone(),
                            ruling: ReviewDecision::Approve,
                            moderator: String::new(),
                            note: String::new(),
                            requested_by: item.requested_by.clone(),
                        };
                        let lift = self.lift_hide(&item, &ruling, now).await?;
                        if let Some(lift) = &lift {
                            settled.action_id.clone_from(&lift.id);
                        }
                        lift
                    }
                };
                match self.settle(&settled, action.as_ref(), &[]).await {
                    Ok(_) => settled_here += 1,
                    // Ruled on by a moderator meanwhile: their ruling stands.
                    Err(WorkflowError::FailedPrecondition(_) | WorkflowError::NotFound(_)) => {}
                    Err(WorkflowError::Store(error)) => return Err(error),
                    Err(other) => tracing::warn!(%other, "cannot expire a review item"),
                }
            }
            if !full {
                break;
            }
        }
        let depth = self.store.review_depth().await?;
        metrics::gauge!("modbot_review_pending").set(depth.pending as f64);
        let oldest = depth
            .oldest
            .and_then(|o| now.duration_since(o).ok())
            .unwrap_or_default();
        metrics::gauge!("modbot_review_oldest_age_seconds").set(oldest.as_secs_f64());
        Ok(settled_here)
    }

    /// Streams the items settled (by any replica) that `filter` admits, oldest first, into
    /// `tx` until the receiver goes away or the server stops. Each item is sent once.
    pub async fn watch_reviews(
        self: Arc<Self>,
        filter: WatchFilter,
        tx: mpsc::Sender<Result<ReviewItem, StoreError>>,
    ) {
        let start = filter.since.unwrap_or_else(SystemTime::now);
        let mut cursor = (unix_millis(start), String::new());
        // Ids sent whose settling time is within the overlap: the re-read skips them.
        let mut sent: VecDeque<(i64, String)> = VecDeque::new();
        let mut sent_ids: BTreeSet<String> = BTreeSet::new();
        let overlap = i64::try_from(WATCH_OVERLAP.as_millis()).unwrap_or(i64::MAX);
        let mut stopping = self.stopping.subscribe();
        loop {
            // Registered before the read, so a ruling committed during it still wakes us.
            let settled = self.review_queue.settled.notified();
            let from = cursor.0.saturating_sub(overlap);
            let mut read_from = (from, String::new());
            loop {
                let rows = match self
                    .store
                    .settled_reviews_since(read_from.0, &read_from.1, BATCH)
                    .await
                {
                    Ok(rows) => rows,
                    Err(error) => {
                        if tx.send(Err(error)).await.is_err() {
                            return;
                        }
                        break;
                    }
                };
                let full = rows.len() == BATCH as usize;
                for item in rows {
                    let at = item.resolved_at.map_or(0, unix_millis);
                    read_from = (at, item.id.clone());
                    if at < unix_millis(start) || sent_ids.contains(&item.id) {
                        continue;
                    }
                    if (at, item.id.as_str()) > (cursor.0, cursor.1.as_str()) {
                        cursor = (at, item.id.clone());
                    }
                    sent.push_back((at, item.id.clone()));
                    sent_ids.insert(item.id.clone());
                    if filter.admits(&item) && tx.send(Ok(item)).await.is_err() {
                        return;
                    }
                }
                if !full {
                    break;
                }
            }
            while sent
                .front()
                .is_some_and(|(at, _)| *at < cursor.0.saturating_sub(overlap))
            {
                if let Some((_, id)) = sent.pop_front() {
                    sent_ids.remove(&id);
                }
            }
            tokio::select! {
                () = settled => {}
                () = tokio::time::sleep(WATCH_POLL) => {}
                () = tx.closed() => return,
                _ = stopping.wait_for(|s| *s) => return,
            }
        }
    }

    /// Writes a settled item with its action and feedback; wakes watchers and the dispatcher.
    async fn settle(
        &self,
        settled: &ReviewItem,
        action: Option<&Action>,
        feedback: &[Feedback],
    ) -> Result<(ReviewItem, Option<Action>), WorkflowError> {
        match self.store.settle_review(settled, action, feedback).await? {
            ReviewRuled::Done(item, action) => {
                metrics::counter!("modbot_review_settled_total", "status" => item.status.as_str())
                    .increment(1);
                if let Some(action) = &action {
                    count_recorded(action);
                    if action.status.is_open() {
                        self.dispatcher.wake();
                    }
                }
                self.review_queue.settled.notify_waiters();
                Ok((*item, action.map(|a| *a)))
            }
            ReviewRuled::AlreadySettled(current) => Err(already_settled(&current)),
            ReviewRuled::NotFound => Err(WorkflowError::NotFound(format!(
                "no review item `{}`",
                settled.id
            ))),
        }
    }

    /// The unmute that lifts a pending item's hide, when the hide reached the chat and may
    /// still be in force.
    async fn lift_hide(
        &self,
        item: &ReviewItem,
        ruling: &ReviewRuling,
        now: SystemTime,
    ) -> Result<Option<Action>, StoreError> {
        if item.hide_action_id.is_empty() {
            return Ok(None);
        }
        let Some(hide) = self.store.action(&item.hide_action_id).await? else {
            return Ok(None);
        };
        let over = hide.duration.is_some_and(|d| hide.created_at + d <= now);
        if hide.status == ActionStatus::Recorded || !hide.reversed_by.is_empty() || over {
            return Ok(None);
        }
        let mut lift = self.review_action(
            item,
            ActionKind::Unmute,
            None,
            format!("held message {} approved", item.message_id),
            if ruling.moderator.is_empty() {
                ActionSource::Automod
            } else {
                ActionSource::Moderator
            },
            &ruling.moderator,
            &ruling.requested_by,
            now,
        );
        lift.idempotency_key = Some(format!("review:{}:lift", item.id));
        Ok(Some(lift))
    }

    /// An action on a review item's author, sent to the chat unless the item's caller
    /// enforces its verdicts itself (its hide was only recorded).
    #[allow(clippy::too_many_arguments)]
    fn review_action(
        &self,
        item: &ReviewItem,
        kind: ActionKind,
        duration: Option<Duration>,
        reason: String,
        source: ActionSource,
        moderator: &str,
        requested_by: &str,
        now: SystemTime,
    ) -> Action {
        let mut action = NewAction {
            channel: item.channel.clone(),
            target_user_id: item.user_id.clone(),
            target_nick: item.nick.clone(),
            kind,
            duration,
            reason,
            source,
            moderator: moderator.to_owned(),
            message_id: item.message_id.clone(),
            idempotency_key: Some(format!("review:{}", item.id)),
            requested_by: requested_by.to_owned(),
        }
        .into_action(
            uuid::Uuid::now_v7().to_string(),
            now,
            self.dispatcher.pending_ttl(),
        );
        if item.records_only && action.status == ActionStatus::Pending {
            action.status = ActionStatus::Recorded;
        }
        action
    }
}

fn already_settled(item: &ReviewItem) -> WorkflowError {
    WorkflowError::FailedPrecondition(format!(
        "review item `{}` was already {} by {}",
        item.id,
        item.status.as_str(),
        if item.moderator.is_empty() {
            "its expiry"
        } else {
            &item.moderator
        }
    ))
}

/// The running expiry task, to stop on shutdown.
#[derive(Debug)]
pub struct ExpiryTask {
    stop_tx: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl ExpiryTask {
    /// Settles expired items, and ends raid modes that ran out, every [`EXPIRY_POLL`].
    pub fn spawn(services: Arc<Services>) -> Self {
        let (stop_tx, mut stop_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(EXPIRY_POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stop_rx => return,
                    _ = tick.tick() => {}
                }
                // Raid mode ends by itself, even in a channel gone quiet.
                services.moderator.expire_raids(SystemTime::now());
                if let Err(error) = services.expire_reviews(SystemTime::now()).await {
                    tracing::warn!(%error, "cannot settle expired review items; retrying");
                }
            }
        });
        Self { stop_tx, task }
    }

    /// Stops it and waits, until `deadline`, for it to let go of the services; a pass still
    /// running then (a database that does not answer) is abandoned.
    pub async fn stop(mut self, deadline: tokio::time::Instant) {
        let _ = self.stop_tx.send(());
        match tokio::time::timeout_at(deadline, &mut self.task).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "the review expiry task failed"),
            Err(_) => {
                self.task.abort();
                tracing::warn!("shutdown: a review expiry pass is still running; abandoned");
            }
        }
    }
}
