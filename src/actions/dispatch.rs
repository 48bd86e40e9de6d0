//! Carrying actions into the chat: the bridges connected to this replica, and the task that
//! sends them what waits for their channels.
//!
//! An action is recorded as pending first; delivery is a separate step so that it works the
//! same whoever recorded it and wherever its bridge is connected. Each replica's
//! [`dispatch_task`] looks, for every channel a bridge on this replica serves, for pending
//! actions (at once when this replica recorded one, else every `actions.poll_interval_ms`),
//! *claims* each with a conditional update (`pending` → `sent`, naming the bridge), and only
//! then hands it to that bridge's stream. The claim is what makes delivery exactly-once across
//! replicas and bridges: two dispatchers racing for one action both try the update, one wins.
//! The bridge answers with an `ActionResult`, which moves the action to executed or failed. A
//! bridge that reconnects under the same `bridge_id` is sent again whatever it was sent but
//! never answered (it never carries out one id twice). Actions nobody carried out expire.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use super::{Action, ActionSource, ActionStatus, NewAction};
use crate::store::{ActionAnswer, Recorded, Store, StoreError};

/// Commands queued per bridge before the dispatcher leaves the rest pending for a later round.
const COMMAND_BUFFER: usize = 256;

/// Least time between two delivery rounds: an action waits at most this long (plus a round)
/// for its bridge.
const MIN_ROUND_GAP: Duration = Duration::from_millis(20);

/// Most pending actions of one channel sent in one round.
const BATCH: u32 = 256;

/// Records actions and sends them to the bridges connected to this replica. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    /// `std::sync::Mutex`: held only to add, remove or copy a few handles, never across
    /// `.await`.
    bridges: Mutex<Vec<Bridge>>,
    wake: Notify,
    closed: AtomicBool,
    poll_interval: Duration,
    /// When a round last expired old actions: once per poll interval is enough, however often
    /// recording wakes the task.
    last_expiry: Mutex<Option<std::time::Instant>>,
    pending_ttl: Duration,
}

#[derive(Debug, Clone)]
struct Bridge {
    session_id: String,
    bridge_id: String,
    channels: Vec<String>,
    commands_tx: mpsc::Sender<Action>,
    /// Whether the actions sent to this bridge id before it (re)connected were sent again.
    resent: Arc<AtomicBool>,
}

/// A bridge's place in the dispatcher, for as long as its stream lives: dropping it removes
/// the bridge, and its command receiver then ends.
#[derive(Debug)]
pub struct Registration {
    inner: Arc<Inner>,
    session_id: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.inner
            .bridges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|b| b.session_id != self.session_id);
        metrics::gauge!("modbot_bridges_connected").decrement(1.0);
    }
}

impl Dispatcher {
    /// A dispatcher over `store`: actions wait `pending_ttl` for a bridge; bridges are looked
    /// after every `poll_interval`.
    pub fn new(store: Store, pending_ttl: Duration, poll_interval: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                bridges: Mutex::new(Vec::new()),
                wake: Notify::new(),
                closed: AtomicBool::new(false),
                poll_interval,
                last_expiry: Mutex::new(None),
                pending_ttl,
            }),
        }
    }

    /// The database actions are recorded in.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// How long an action waits for a bridge.
    pub fn pending_ttl(&self) -> Duration {
        self.inner.pending_ttl
    }

    /// Starts the task that delivers and expires actions; it ends after [`Self::close`].
    pub fn spawn(&self) -> JoinHandle<()> {
        tokio::spawn(dispatch_task(Arc::clone(&self.inner)))
    }

    /// Stops the delivery task.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.wake.notify_one();
    }

    /// Looks for actions to deliver now rather than at the next poll.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Records a new action (`id` given, or a new time-ordered one) and wakes delivery. A
    /// repeated idempotency key (or derived id) returns the first action instead.
    pub async fn execute(
        &self,
        action: NewAction,
        id: Option<String>,
    ) -> Result<Recorded, StoreError> {
        let id = id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let action = action.into_action(id, SystemTime::now(), self.inner.pending_ttl);
        let recorded = self.inner.store.record_action(&action).await?;
        if let Recorded::New(action) = &recorded {
            count_recorded(action);
            self.wake();
        }
        Ok(recorded)
    }

    /// Adds a bridge serving `channels`; its commands arrive on the receiver. Whatever waits
    /// for those channels, and whatever this bridge id was sent but never answered, is sent
    /// at once.
    pub fn register(
        &self,
        session_id: &str,
        bridge_id: &str,
        channels: &[String],
    ) -> (Registration, mpsc::Receiver<Action>) {
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_BUFFER);
        self.inner
            .bridges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Bridge {
                session_id: session_id.to_owned(),
                bridge_id: bridge_id.to_owned(),
                channels: channels.to_vec(),
                commands_tx,
                resent: Arc::new(AtomicBool::new(false)),
            });
        metrics::gauge!("modbot_bridges_connected").increment(1.0);
        self.wake();
        (
            Registration {
                inner: Arc::clone(&self.inner),
                session_id: session_id.to_owned(),
            },
            commands_rx,
        )
    }

    /// Records a bridge's answers to the commands it was sent, in one database transaction;
    /// what became of each, in order.
    pub async fn answer(
        &self,
        bridge_id: &str,
        answers: &[ActionAnswer<'_>],
    ) -> Result<Vec<Answered>, StoreError> {
        let outcomes = self
            .inner
            .store
            .answer_actions(bridge_id, answers, SystemTime::now())
            .await?;
        Ok(outcomes
            .into_iter()
            .map(|outcome| match outcome {
                None => Answered::Unknown,
                Some((action, true)) => {
                    count_status(action.status.as_str(), 1);
                    Answered::Recorded(action)
                }
                // A bridge may repeat its answer (after a reconnect, say): the first one
                // stands.
                Some((action, false)) if action.bridge_id == bridge_id => {
                    Answered::Recorded(action)
                }
                Some((action, false)) => Answered::NotSent(action),
            })
            .collect())
    }
}

/// What became of a bridge's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Answered {
    /// Recorded (or already recorded): the action as it is now.
    Recorded(Action),
    /// No action has that id.
    Unknown,
    /// The action was never sent to this bridge: the answer is ignored.
    NotSent(Action),
}

/// Counts a newly recorded action: `modbot_actions_recorded_total{kind, source}`, and its
/// first status in `modbot_actions_total`.
pub fn count_recorded(action: &Action) {
    metrics::counter!(
        "modbot_actions_recorded_total",
        "kind" => action.kind.as_str(),
        "source" => action.source.as_str()
    )
    .increment(1);
    count_status(action.status.as_str(), 1);
}

/// `modbot_actions_total{status}`: actions that reached `status` (`pending` and `recorded`
/// when recorded, then `executed`, `failed` or `expired`), so the rate of each and the
/// backlog (pending minus the rest) can be read from one metric.
fn count_status(status: &'static str, count: u64) {
    metrics::counter!("modbot_actions_total", "status" => status).increment(count);
}

/// Delivers pending actions to this replica's bridges and expires old ones, until closed.
async fn dispatch_task(inner: Arc<Inner>) {
    while !inner.closed.load(Ordering::SeqCst) {
        if let Err(error) = deliver_round(&inner).await {
            tracing::warn!(%error, "delivering actions failed; retrying at the next poll");
        }
        // Recording wakes the task after every audit commit, which on a busy stream is
        // hundreds of times a second; a round is a few database statements on other pool
        // connections (whose writes make SQLite's other connections drop their page caches),
        // so rounds are at least this far apart and the wakes in between coalesce into one.
        tokio::time::sleep(MIN_ROUND_GAP).await;
        tokio::select! {
            () = inner.wake.notified() => {}
            () = tokio::time::sleep(inner.poll_interval) => {}
        }
    }
}

async fn deliver_round(inner: &Inner) -> Result<(), StoreError> {
    let now = SystemTime::now();
    let expire_now = {
        let mut last = inner
            .last_expiry
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let due = last.is_none_or(|at| at.elapsed() >= inner.poll_interval);
        if due {
            *last = Some(std::time::Instant::now());
        }
        due
    };
    if expire_now {
        let expired = inner.store.expire_actions(now).await?;
        if expired > 0 {
            count_status(ActionStatus::Expired.as_str(), expired);
            tracing::info!(
                count = expired,
                "actions expired before a bridge carried them out"
            );
        }
    }
    let bridges: Vec<Bridge> = inner
        .bridges
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    for bridge in bridges {
        let resend = !bridge.resent.swap(true, Ordering::SeqCst);
        for channel in &bridge.channels {
            if resend {
                for action in inner
                    .store
                    .unanswered_actions(&bridge.bridge_id, channel, now)
                    .await?
                {
                    if bridge.commands_tx.try_send(action).is_err() {
                        // Full or gone: it stays sent to this bridge id and goes out again
                        // when the bridge next connects.
                        break;
                    }
                }
            }
            let claimed = inner
                .store
                .claim_pending(channel, &bridge.bridge_id, now, BATCH)
                .await?;
            let mut claimed = claimed.into_iter();
            while let Some(action) = claimed.next() {
                let id = action.id.clone();
                if bridge.commands_tx.try_send(action).is_err() {
                    // The bridge's queue is full (or it went): give back what it cannot take
                    // now, for the next round or another bridge.
                    inner.store.unclaim_action(&id, &bridge.bridge_id).await?;
                    for rest in claimed {
                        inner
                            .store
                            .unclaim_action(&rest.id, &bridge.bridge_id)
                            .await?;
                    }
                    break;
                }
                metrics::counter!("modbot_actions_sent_total").increment(1);
            }
        }
    }
    Ok(())
}

/// The action that carries out an enforced verdict, if it acts on the user, recorded as asked
/// for by the credential `requested_by` (empty without tokens). Its id is derived from the
/// credential, channel and message, so the same caller deciding the same message again never
/// acts twice, and one caller cannot take over another's action by guessing its message id
/// (a classifier's recorded action would otherwise stand in for the bridge's).
pub fn automatic_action(
    message: &crate::decision::ChatMessage,
    verdict: &crate::decision::Verdict,
    requested_by: &str,
    hide_duration: Duration,
    pending_ttl: Duration,
) -> Option<Action> {
    if !verdict.enforced {
        return None;
    }
    let kind = super::ActionKind::for_decision(verdict.decision)?;
    let reason = verdict
        .reasons
        .iter()
        .find(|r| !r.shadow)
        .map(|r| r.description.clone())
        .unwrap_or_default();
    let duration = match kind {
        super::ActionKind::Hide => Some(hide_duration),
        _ => verdict.duration,
    };
    let new = NewAction {
        channel: message.channel.clone(),
        target_user_id: message.user_id.clone(),
        target_nick: message.nick.clone(),
        kind,
        duration,
        reason,
        source: ActionSource::Automod,
        moderator: String::new(),
        message_id: message.message_id.clone(),
        idempotency_key: None,
        requested_by: requested_by.to_owned(),
    };
    // Without tokens the id is derived as before credentials were part of it, so a server
    // upgraded in place records a replayed message once.
    let id = if requested_by.is_empty() {
        super::derived_id(&["automod", &message.channel, &message.message_id])
    } else {
        super::derived_id(&[
            "automod",
            requested_by,
            &message.channel,
            &message.message_id,
        ])
    };
    Some(new.into_action(id, SystemTime::now(), pending_ttl))
}
