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
//! The bridge answers with an `ActionResult`, which moves the action to executed or failed.
//! One claim statement per round covers every channel of every bridge on the replica.
//!
//! Whatever a bridge id was sent but never answered is sent to it again: at once when it
//! (re)connects, and every `actions.resend_interval_ms` while it stays unanswered (a command
//! lost with a dead connection still arrives; the bridge never carries out one id twice). A
//! bridge id that registers again evicts its older session, and a session that ends gives
//! back the actions claimed for it but never written to its stream. Actions never sent
//! expire; actions sent and never answered become `unknown`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::domain::{Action, ActionSource, ActionStatus, NewAction};
use crate::infra::store::{ActionAnswer, MAX_ROUTES, Recorded, Store, StoreError};

/// Commands queued per bridge before the dispatcher leaves the rest pending for a later round.
const COMMAND_BUFFER: usize = 256;

/// Least time between two delivery rounds: an action waits at most this long (plus a round)
/// for its bridge.
const MIN_ROUND_GAP: Duration = Duration::from_millis(20);

/// Most pending actions claimed by one statement; a full batch starts another round at once.
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
    last_expiry: Mutex<Option<Instant>>,
    pending_ttl: Duration,
    /// How long a sent action waits for its answer before it is sent to its bridge id again.
    resend_interval: Duration,
    /// When a round last sent unanswered actions again.
    last_resend: Mutex<Option<Instant>>,
}

#[derive(Debug, Clone)]
struct Bridge {
    session_id: String,
    bridge_id: String,
    channels: Vec<String>,
    commands_tx: mpsc::Sender<Action>,
    /// Whether the actions sent to this bridge id before it (re)connected were sent again.
    resent: Arc<AtomicBool>,
    /// Turned true when a newer session registers the same bridge id.
    evicted: Arc<watch::Sender<bool>>,
}

/// A bridge's place in the dispatcher, for as long as its stream lives: dropping it removes
/// the bridge, and its command receiver then ends.
#[derive(Debug)]
pub struct Registration {
    inner: Arc<Inner>,
    session_id: String,
    evicted: watch::Receiver<bool>,
}

impl Registration {
    /// Turns true when a newer session registered the same bridge id: this one no longer
    /// receives commands and should end.
    pub fn eviction(&self) -> watch::Receiver<bool> {
        self.evicted.clone()
    }
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
                resend_interval: Duration::from_secs(30),
                last_resend: Mutex::new(None),
            }),
        }
    }

    /// The same dispatcher, sending unanswered actions again after `interval` (30 s unless
    /// set). Only before [`Self::spawn`] and before any clone.
    #[must_use]
    pub fn with_resend_interval(mut self, interval: Duration) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("with_resend_interval is called before the dispatcher is shared")
            .resend_interval = interval;
        self
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
    /// at once. An older session of the same bridge id is evicted: it is sent nothing more and
    /// its [`Registration::eviction`] turns true.
    pub fn register(
        &self,
        session_id: &str,
        bridge_id: &str,
        channels: &[String],
    ) -> (Registration, mpsc::Receiver<Action>) {
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_BUFFER);
        let (evicted_tx, evicted_rx) = watch::channel(false);
        {
            let mut bridges = self
                .inner
                .bridges
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            bridges.retain(|older| {
                if older.bridge_id != bridge_id {
                    return true;
                }
                tracing::warn!(
                    bridge = bridge_id,
                    older = %older.session_id,
                    newer = session_id,
                    "a bridge id registered again: its older session is evicted"
                );
                metrics::counter!("modbot_bridge_sessions_evicted_total").increment(1);
                let _ = older.evicted.send(true);
                false
            });
            bridges.push(Bridge {
                session_id: session_id.to_owned(),
                bridge_id: bridge_id.to_owned(),
                channels: channels.to_vec(),
                commands_tx,
                resent: Arc::new(AtomicBool::new(false)),
                evicted: Arc::new(evicted_tx),
            });
        }
        metrics::gauge!("modbot_bridges_connected").increment(1.0);
        self.wake();
        (
            Registration {
                inner: Arc::clone(&self.inner),
                session_id: session_id.to_owned(),
                evicted: evicted_rx,
            },
            commands_rx,
        )
    }

    /// Gives back actions claimed for `bridge_id` that its stream ended before writing, so
    /// the next bridge serving their channels is sent them. Errors are logged: the actions
    /// then stay sent to `bridge_id` and go to it again when it reconnects.
    pub async fn give_back(&self, bridge_id: &str, actions: &[Action]) {
        if actions.is_empty() {
            return;
        }
        let ids: Vec<&str> = actions.iter().map(|a| a.id.as_str()).collect();
        for chunk in ids.chunks(MAX_ROUTES) {
            match self.inner.store.unclaim_actions(chunk, bridge_id).await {
                Ok(count) => {
                    metrics::counter!("modbot_actions_given_back_total").increment(count);
                }
                Err(error) => {
                    tracing::warn!(%error, bridge = bridge_id, count = chunk.len(), "cannot give back unsent actions; they go to this bridge id again when it reconnects");
                }
            }
        }
        tracing::info!(
            bridge = bridge_id,
            count = ids.len(),
            "gave back actions the ended stream never sent"
        );
        self.wake();
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
/// when recorded, then `executed`, `failed`, `expired` or `unknown`), so the rate of each and the
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
            *last = Some(Instant::now());
        }
        due
    };
    if expire_now {
        let closed = inner.store.expire_actions(now).await?;
        if closed.expired > 0 {
            count_status(ActionStatus::Expired.as_str(), closed.expired);
            tracing::info!(
                count = closed.expired,
                "actions expired before any bridge was sent them"
            );
        }
        if closed.unknown > 0 {
            count_status(ActionStatus::Unknown.as_str(), closed.unknown);
            tracing::warn!(
                count = closed.unknown,
                "actions sent to a bridge were never answered: their outcome is unknown"
            );
        }
    }
    let bridges: Vec<Bridge> = inner
        .bridges
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    if bridges.is_empty() {
        return Ok(());
    }
    resend(inner, &bridges, now).await?;
    // Each channel goes to the first bridge serving it (the list is in registration order).
    let mut routes: Vec<(&str, &str)> = Vec::new();
    let mut by_channel: HashMap<&str, &Bridge> = HashMap::new();
    for bridge in &bridges {
        for channel in &bridge.channels {
            if !by_channel.contains_key(channel.as_str()) {
                by_channel.insert(channel, bridge);
                routes.push((channel, &bridge.bridge_id));
            }
        }
    }
    for routes in routes.chunks(MAX_ROUTES) {
        let claimed = inner.store.claim_pending(routes, now, BATCH).await?;
        let full = claimed.len() >= BATCH as usize;
        let mut refused: HashMap<&str, Vec<String>> = HashMap::new();
        for action in claimed {
            let Some(bridge) = by_channel.get(action.channel.as_str()) else {
                continue;
            };
            let id = action.id.clone();
            if bridge.commands_tx.try_send(action).is_err() {
                // The bridge's queue is full (or it went): give back what it cannot take
                // now, for the next round or another bridge.
                refused.entry(&bridge.bridge_id).or_default().push(id);
            } else {
                metrics::counter!("modbot_actions_sent_total").increment(1);
            }
        }
        for (bridge_id, ids) in &refused {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            inner.store.unclaim_actions(&ids, bridge_id).await?;
        }
        if full && refused.is_empty() {
            // More may wait: the next round comes at once rather than at the next poll.
            inner.wake.notify_one();
        }
    }
    Ok(())
}

/// Sends again what bridges were sent and never answered: everything, to a bridge that just
/// registered; and, every resend interval, what waited longer than that, to every bridge.
async fn resend(inner: &Inner, bridges: &[Bridge], now: SystemTime) -> Result<(), StoreError> {
    let periodic = {
        let mut last = inner
            .last_resend
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let due = last.is_none_or(|at| at.elapsed() >= inner.resend_interval);
        if due {
            *last = Some(Instant::now());
        }
        due
    };
    let fresh: Vec<&str> = bridges
        .iter()
        .filter(|b| !b.resent.swap(true, Ordering::SeqCst))
        .map(|b| b.bridge_id.as_str())
        .collect();
    let mut due = Vec::new();
    for ids in fresh.chunks(MAX_ROUTES) {
        due.extend(inner.store.unanswered_actions(ids, now, now).await?);
    }
    if periodic {
        let cutoff = now.checked_sub(inner.resend_interval).unwrap_or(now);
        let ids: Vec<&str> = bridges
            .iter()
            .map(|b| b.bridge_id.as_str())
            .filter(|id| !fresh.contains(id))
            .collect();
        for ids in ids.chunks(MAX_ROUTES) {
            due.extend(inner.store.unanswered_actions(ids, cutoff, now).await?);
        }
    }
    for action in due {
        let Some(bridge) = bridges.iter().find(|b| b.bridge_id == action.bridge_id) else {
            continue;
        };
        if bridge.commands_tx.try_send(action).is_err() {
            // Full or gone: it stays sent to this bridge id and goes out again at the next
            // resend.
            break;
        }
        metrics::counter!("modbot_actions_resent_total").increment(1);
    }
    Ok(())
}

/// The action that carries out an enforced verdict, if it acts on the user, recorded as asked
/// for by the credential `requested_by` (empty without tokens). Its id is derived from the
/// credential, channel and message, so the same caller deciding the same message again never
/// acts twice, and one caller cannot take over another's action by guessing its message id
/// (a classifier's recorded action would otherwise stand in for the bridge's).
pub fn automatic_action(
    message: &crate::domain::ChatMessage,
    verdict: &crate::domain::Verdict,
    requested_by: &str,
    hide_duration: Duration,
    pending_ttl: Duration,
) -> Option<Action> {
    if !verdict.enforced {
        return None;
    }
    let kind = crate::domain::ActionKind::for_decision(verdict.decision)?;
    let reason = verdict
        .reasons
        .iter()
        .find(|r| !r.shadow)
        .map(|r| r.description.clone())
        .unwrap_or_default();
    let duration = match kind {
        crate::domain::ActionKind::Hide => Some(hide_duration),
        _ => verdict.duration,
    };
    let id = automatic_action_id(requested_by, &message.channel, &message.message_id);
    Some(automod_action(
        message,
        kind,
        duration,
        reason,
        requested_by,
        id,
        pending_ttl,
    ))
}

/// The id of the action that carries out the verdict on `message_id`, made for the credential
/// `requested_by`. An action with this id, and only such an action, carried out a verdict
/// (whose offence user state recorded): the pending hide of a held message, a review's
/// ruling, a nuke and the Actions API make theirs otherwise.
pub fn automatic_action_id(requested_by: &str, channel: &str, message_id: &str) -> String {
    // Without tokens the id is derived as before credentials were part of it, so a server
    // upgraded in place records a replayed message once.
    if requested_by.is_empty() {
        crate::domain::derived_id(&["automod", channel, message_id])
    } else {
        crate::domain::derived_id(&["automod", requested_by, channel, message_id])
    }
}

/// The id of a human moderator's action seen in chat: derived from what happened, so a bridge
/// that replays its chat after a reconnect records it once. Such an action, and only such a
/// moderator's action, was counted on its target's ladder.
pub fn chat_action_id(
    channel: &str,
    target: &str,
    kind: crate::domain::ActionKind,
    at: SystemTime,
) -> String {
    let at_ms = crate::domain::unix_millis(at).to_string();
    crate::domain::derived_id(&["chat", channel, target, kind.as_str(), &at_ms])
}

/// modbot's own action on a message's author, recorded as asked for by `requested_by`.
fn automod_action(
    message: &crate::domain::ChatMessage,
    kind: crate::domain::ActionKind,
    duration: Option<Duration>,
    reason: String,
    requested_by: &str,
    id: String,
    pending_ttl: Duration,
) -> Action {
    NewAction {
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
    }
    .into_action(id, SystemTime::now(), pending_ttl)
}

/// The short mute that hides a held message while it waits for review (a channel's
/// `hide_while_pending`), with an id derived like [`automatic_action`]'s.
pub fn pending_hide(
    message: &crate::domain::ChatMessage,
    verdict: &crate::domain::Verdict,
    requested_by: &str,
    hide_duration: Duration,
    pending_ttl: Duration,
) -> Action {
    let reason = verdict
        .reasons
        .iter()
        .find(|r| !r.shadow)
        .map_or_else(String::new, |r| {
            format!("held for review: {}", r.description)
        });
    let id = crate::domain::derived_id(&[
        "automod-hold",
        requested_by,
        &message.channel,
        &message.message_id,
    ]);
    automod_action(
        message,
        crate::domain::ActionKind::Hide,
        Some(hide_duration),
        reason,
        requested_by,
        id,
        pending_ttl,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ActionKind;
    use crate::infra::store::ConnectOptions;

    async fn dispatcher(dir: &tempfile::TempDir, resend: Duration) -> Dispatcher {
        let url = format!("sqlite://{}", dir.path().join("actions.db").display());
        let store = Store::connect(
            &url,
            &ConnectOptions {
                max_connections: 4,
                connect_timeout: Duration::from_secs(2),
                statement_timeout: Duration::from_secs(5),
            },
        )
        .await
        .expect("a SQLite store");
        store.migrate().await.expect("migrations");
        Dispatcher::new(store, Duration::from_secs(300), Duration::from_millis(50))
            .with_resend_interval(resend)
    }

    async fn timeout(dispatcher: &Dispatcher, channel: &str, target: &str) -> String {
        let action = NewAction {
            channel: channel.to_owned(),
            target_user_id: target.to_owned(),
            target_nick: target.to_owned(),
            kind: ActionKind::Timeout,
            duration: Some(Duration::from_secs(60)),
            reason: "test".to_owned(),
            source: ActionSource::Moderator,
            moderator: "mod".to_owned(),
            message_id: String::new(),
            idempotency_key: None,
            requested_by: "test".to_owned(),
        };
        match dispatcher.execute(action, None).await.expect("recorded") {
            Recorded::New(action) => action.id,
            other => panic!("{other:?}"),
        }
    }

    fn received(rx: &mut mpsc::Receiver<Action>) -> Vec<String> {
        let mut ids = Vec::new();
        while let Ok(action) = rx.try_recv() {
            ids.push(action.id);
        }
        ids
    }

    fn channels(names: &[&str]) -> Vec<String> {
        names.iter().map(|c| (*c).to_owned()).collect()
    }

    #[tokio::test]
    async fn one_claim_routes_every_channel_to_its_first_bridge() {
        let dir = tempfile::tempdir().unwrap();
        let d = dispatcher(&dir, Duration::from_secs(3600)).await;
        let (_r1, mut rx1) = d.register("s1", "b1", &channels(&["c1", "c2"]));
        let (_r2, mut rx2) = d.register("s2", "b2", &channels(&["c2", "c3"]));
        let a1 = timeout(&d, "c1", "u1").await;
        let a2 = timeout(&d, "c2", "u2").await;
        let a3 = timeout(&d, "c3", "u3").await;
        deliver_round(&d.inner).await.unwrap();
        assert_eq!(received(&mut rx1), [a1.clone(), a2.clone()]);
        assert_eq!(received(&mut rx2), std::slice::from_ref(&a3));
        for (id, bridge) in [(&a1, "b1"), (&a2, "b1"), (&a3, "b2")] {
            let action = d.store().action(id).await.unwrap().unwrap();
            assert_eq!(
                (action.status, action.bridge_id.as_str()),
                (ActionStatus::Sent, bridge)
            );
        }
        // Claimed once: another round sends nothing.
        deliver_round(&d.inner).await.unwrap();
        assert!(received(&mut rx1).is_empty() && received(&mut rx2).is_empty());
    }

    #[tokio::test]
    async fn unsent_claims_are_given_back_for_the_next_bridge() {
        let dir = tempfile::tempdir().unwrap();
        let d = dispatcher(&dir, Duration::from_secs(3600)).await;
        let (registration, mut rx) = d.register("s1", "b1", &channels(&["c1"]));
        let ids = [timeout(&d, "c1", "u1").await, timeout(&d, "c1", "u2").await];
        deliver_round(&d.inner).await.unwrap();
        // The session ends before writing them to its stream.
        drop(registration);
        rx.close();
        let mut unsent = Vec::new();
        while let Ok(action) = rx.try_recv() {
            unsent.push(action);
        }
        assert_eq!(unsent.len(), 2);
        d.give_back("b1", &unsent).await;
        for id in &ids {
            let action = d.store().action(id).await.unwrap().unwrap();
            assert_eq!(action.status, ActionStatus::Pending, "{action:?}");
        }
        let (_other, mut other_rx) = d.register("s2", "b2", &channels(&["c1"]));
        deliver_round(&d.inner).await.unwrap();
        assert_eq!(received(&mut other_rx), ids);
    }

    #[tokio::test]
    async fn unanswered_actions_go_again_each_resend_interval() {
        let dir = tempfile::tempdir().unwrap();
        // Every round is a resend round, and anything sent before now is due.
        let d = dispatcher(&dir, Duration::ZERO).await;
        let (_r, mut rx) = d.register("s1", "b1", &channels(&["c1"]));
        let id = timeout(&d, "c1", "u1").await;
        deliver_round(&d.inner).await.unwrap();
        assert_eq!(received(&mut rx), std::slice::from_ref(&id));
        deliver_round(&d.inner).await.unwrap();
        assert_eq!(
            received(&mut rx),
            std::slice::from_ref(&id),
            "sent again, unanswered"
        );
        d.answer(
            "b1",
            &[ActionAnswer {
                id: &id,
                ok: true,
                error: "",
                detail: "",
            }],
        )
        .await
        .unwrap();
        deliver_round(&d.inner).await.unwrap();
        assert!(received(&mut rx).is_empty(), "answered: never again");

        // With an hour's interval, only a (re)connecting bridge is sent it again at once.
        let dir = tempfile::tempdir().unwrap();
        let d = dispatcher(&dir, Duration::from_secs(3600)).await;
        let (r, mut rx) = d.register("s1", "b1", &channels(&["c1"]));
        let id = timeout(&d, "c1", "u1").await;
        deliver_round(&d.inner).await.unwrap();
        assert_eq!(received(&mut rx), std::slice::from_ref(&id));
        deliver_round(&d.inner).await.unwrap();
        assert!(received(&mut rx).is_empty());
        drop(r);
        let (_r, mut rx) = d.register("s2", "b1", &channels(&["c1"]));
        deliver_round(&d.inner).await.unwrap();
        assert_eq!(received(&mut rx), [id]);
    }

    #[tokio::test]
    async fn a_bridge_id_registering_again_evicts_the_older_session() {
        let dir = tempfile::tempdir().unwrap();
        let d = dispatcher(&dir, Duration::from_secs(3600)).await;
        let (old, mut old_rx) = d.register("s1", "b1", &channels(&["c1"]));
        let eviction = old.eviction();
        assert!(!*eviction.borrow());
        let (_new, mut new_rx) = d.register("s2", "b1", &channels(&["c1"]));
        assert!(*eviction.borrow(), "the older session is told");
        let id = timeout(&d, "c1", "u1").await;
        deliver_round(&d.inner).await.unwrap();
        assert!(
            received(&mut old_rx).is_empty(),
            "the evicted session claims nothing"
        );
        assert_eq!(received(&mut new_rx), [id]);
        // The evicted registration's end leaves the newer one in place.
        drop(old);
        let id = timeout(&d, "c1", "u2").await;
        deliver_round(&d.inner).await.unwrap();
        assert_eq!(received(&mut new_rx), [id]);
    }
}
