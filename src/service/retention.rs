//! The retention task: every replica deletes, once at start and then every
//! `retention.interval_secs`, the stored records older than `retention.*_days`, batch by
//! batch ([`crate::infra::store`] writes the SQL), and gives an SQLite file's freed pages back.
//!
//! Replicas run their passes independently: two passes over the same rows delete each row
//! once (the second finds it gone), so there is nothing to coordinate.

use std::future::Future;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::RetentionConfig;
use crate::infra::store::{RetentionTable, Store, StoreError};

const DAY: Duration = Duration::from_secs(86_400);

/// How long each kind of record is kept (`None`: forever) and the batch size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Audit records.
    pub audit: Option<Duration>,
    /// Actions (with their resolved appeals) and nukes.
    pub actions: Option<Duration>,
    /// Feedback examples.
    pub feedback: Option<Duration>,
    /// The rule set's history.
    pub rule_history: Option<Duration>,
    /// Most rows (for the rule history, revisions) one statement deletes.
    pub batch_rows: u32,
}

impl RetentionPolicy {
    /// The policy `[retention]` describes.
    pub fn from_config(config: &RetentionConfig) -> Self {
        let days = |days: u32| (days > 0).then(|| DAY * days);
        Self {
            audit: days(config.audit_days),
            actions: days(config.actions_days),
            feedback: days(config.feedback_days),
            rule_history: days(config.rule_history_days),
            batch_rows: config.batch_rows.max(1),
        }
    }
}

/// Rows one pass deleted, per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deleted {
    /// Audit records.
    pub audit_log: u64,
    /// Actions.
    pub actions: u64,
    /// Resolved appeals of those actions.
    pub appeals: u64,
    /// Nukes none of whose actions was left.
    pub nukes: u64,
    /// Feedback examples.
    pub feedback: u64,
    /// Rule history rows.
    pub rule_history: u64,
    /// Settled review items.
    pub review_items: u64,
}

impl Deleted {
    /// Rows deleted in all.
    pub fn total(&self) -> u64 {
        self.audit_log
            + self.actions
            + self.appeals
            + self.nukes
            + self.feedback
            + self.rule_history
            + self.review_items
    }
}

/// One pass: for each kind of record with a retention, deletes batch after batch of those
/// older than its retention at `now`, until a batch comes back short or `stop` turns true
/// (checked between batches), reclaiming SQLite space after each batch. Counts
/// `modbot_retention_deleted_total{table}`. An error ends the pass (what was deleted stays
/// deleted; the next pass goes on from there).
pub async fn run_pass(
    store: &Store,
    policy: &RetentionPolicy,
    now: SystemTime,
    stop: &watch::Receiver<bool>,
) -> Result<Deleted, StoreError> {
    let limit = policy.batch_rows.max(1);
    let cutoff = |keep: Duration| now.checked_sub(keep).unwrap_or(SystemTime::UNIX_EPOCH);
    let mut deleted = Deleted::default();
    if let Some(keep) = policy.audit {
        let cutoff = cutoff(keep);
        [deleted.audit_log] = drain(
            store,
            limit,
            stop,
            [RetentionTable::AuditLog],
            || async move { Ok([store.delete_audit_before(cutoff, limit).await?]) },
        )
        .await?;
        // Settled review items keep the message's text as the audit log does.
        [deleted.review_items] = drain(
            store,
            limit,
            stop,
            [RetentionTable::ReviewItems],
            || async move { Ok([store.delete_reviews_before(cutoff, limit).await?]) },
        )
        .await?;
    }
    if let Some(keep) = policy.actions {
        let cutoff = cutoff(keep);
        let tables = [RetentionTable::Actions, RetentionTable::Appeals];
        [deleted.actions, deleted.appeals] = drain(store, limit, stop, tables, || async move {
            let (actions, appeals) = store.delete_actions_before(cutoff, now, limit).await?;
            Ok([actions, appeals])
        })
        .await?;
        // After the actions: a nuke goes once none of its actions is left.
        [deleted.nukes] = drain(store, limit, stop, [RetentionTable::Nukes], || async move {
            Ok([store.delete_nukes_before(cutoff, limit).await?])
        })
        .await?;
    }
    if let Some(keep) = policy.feedback {
        let cutoff = cutoff(keep);
        [deleted.feedback] = drain(
            store,
            limit,
            stop,
            [RetentionTable::Feedback],
            || async move { Ok([store.delete_feedback_before(cutoff, limit).await?]) },
        )
        .await?;
    }
    if let Some(keep) = policy.rule_history {
        let cutoff = cutoff(keep);
        let tables = [RetentionTable::RuleHistory];
        [deleted.rule_history] = drain(store, limit, stop, tables, || async move {
            Ok([store.delete_rule_history_before(cutoff, limit).await?])
        })
        .await?;
    }
    Ok(deleted)
}

/// Runs `batch` (which deletes from `tables`, reporting the rows per table in that order)
/// until its first table's count comes back below `limit` or `stop` turns true; the rows
/// deleted per table.
async fn drain<F, Fut, const N: usize>(
    store: &Store,
    limit: u32,
    stop: &watch::Receiver<bool>,
    tables: [RetentionTable; N],
    mut batch: F,
) -> Result<[u64; N], StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<[u64; N], StoreError>>,
{
    let mut totals = [0; N];
    while !*stop.borrow() {
        let counts = batch().await?;
        for ((total, table), n) in totals.iter_mut().zip(tables).zip(counts) {
            *total += n;
            metrics::counter!("modbot_retention_deleted_total", "table" => table.as_str())
                .increment(n);
        }
        if counts.iter().any(|n| *n > 0) {
            store.reclaim_space().await?;
        }
        if counts.first().is_none_or(|n| *n < u64::from(limit)) {
            break;
        }
        // Let other work on this runtime (and other writers of an SQLite file) in between.
        tokio::task::yield_now().await;
    }
    Ok(totals)
}

/// The running [`retention_task`]: stop it with [`RetentionTask::stop`].
#[derive(Debug)]
pub struct RetentionTask {
    stop_tx: watch::Sender<bool>,
    passes: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

impl RetentionTask {
    /// Starts [`retention_task`] over `store`: a pass now, then every `interval`.
    pub fn spawn(store: Store, policy: RetentionPolicy, interval: Duration) -> Self {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (passes_tx, passes) = watch::channel(0);
        let task = tokio::spawn(retention_task(store, policy, interval, stop_rx, passes_tx));
        Self {
            stop_tx,
            passes,
            task,
        }
    }

    /// The number of passes finished so far (failed ones included), changing after each.
    pub fn passes(&self) -> watch::Receiver<u64> {
        self.passes.clone()
    }

    /// Stops the task: a pass in progress stops after its current batch. A batch still
    /// running at `deadline` (a database that does not answer) is abandoned.
    pub async fn stop(mut self, deadline: tokio::time::Instant) {
        self.stop_tx.send_replace(true);
        match tokio::time::timeout_at(deadline, &mut self.task).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "the retention task failed"),
            Err(_) => {
                self.task.abort();
                tracing::warn!("retention batch still running at the shutdown deadline; abandoned");
            }
        }
    }
}

/// Runs a retention pass now and then every `interval` until `stop_rx` turns true.
async fn retention_task(
    store: Store,
    policy: RetentionPolicy,
    interval: Duration,
    mut stop_rx: watch::Receiver<bool>,
    passes_tx: watch::Sender<u64>,
) {
    let mut ticker = tokio::time::interval(interval);
    // A pass longer than the interval is followed by the next one an interval later, not at
    // once: a large backlog is worked off without the task ever running back to back.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop_rx.changed() => {}
        }
        if *stop_rx.borrow() {
            return;
        }
        let started = std::time::Instant::now();
        match run_pass(&store, &policy, SystemTime::now(), &stop_rx).await {
            Ok(deleted) if deleted.total() > 0 => {
                tracing::info!(?deleted, elapsed = ?started.elapsed(), "retention pass");
            }
            Ok(_) => {
                tracing::debug!(elapsed = ?started.elapsed(), "retention pass: nothing to delete")
            }
            Err(error) => {
                tracing::warn!(%error, "retention pass failed; the next one goes on from there");
            }
        }
        passes_tx.send_modify(|passes| *passes += 1);
    }
}
