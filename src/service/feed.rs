//! The live feed: every decision this replica makes, as it is made, for the moderators
//! watching (`Admin.WatchDecisions`, the console's feed).
//!
//! Publishing costs one atomic load while nobody watches. Watchers share one bounded
//! broadcast ring ([`FEED_CAPACITY`] decisions): a watcher that reads too slowly is never
//! waited for — moderation does not slow down for a browser — it skips what it missed and is
//! told how many ([`FeedItem::skipped`]).
//!
//! What a watcher costs is bounded whatever the chat's rate: each watcher is handed at most
//! [`MAX_EVENTS_PER_SECOND`] decisions a second (more than anyone reads; the rest are skipped
//! and counted), and a replica serves at most [`MAX_WATCHERS`] watchers at once. Measured
//! before the cap: one watcher reading everything at 40,000 rules-only decisions/s took 20–45%
//! of the replica's throughput, all of it converting decisions for the watcher.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};

use crate::domain::{ChatMessage, Verdict};

/// Decisions kept for slow watchers before they skip.
pub const FEED_CAPACITY: usize = 4096;
/// Most decisions a second one watcher is handed (a burst of up to this many at once).
pub const MAX_EVENTS_PER_SECOND: u32 = 2_500;
/// Most watchers a replica serves at once.
pub const MAX_WATCHERS: usize = 32;

/// One decision: the message and its verdict.
#[derive(Debug, Clone)]
pub struct Decided {
    /// The message as it was decided.
    pub message: ChatMessage,
    /// Its verdict.
    pub verdict: Verdict,
}

/// What a watcher receives: a decision, and how many it missed before it.
#[derive(Debug, Clone)]
pub struct FeedItem {
    /// The decision.
    pub decided: Arc<Decided>,
    /// Decisions this watcher missed (it read too slowly) since its previous item.
    pub skipped: u64,
}

/// A watcher's place in the feed ([`DecisionFeed::subscribe`]).
#[derive(Debug)]
pub struct Subscription(broadcast::Receiver<Arc<Decided>>);

/// The feed's ring.
#[derive(Debug)]
pub struct DecisionFeed {
    tx: broadcast::Sender<Arc<Decided>>,
}

impl Default for DecisionFeed {
    fn default() -> Self {
        Self::new()
    }
}

impl DecisionFeed {
    /// An empty feed.
    pub fn new() -> Self {
        Self {
            tx: broadcast::Sender::new(FEED_CAPACITY),
        }
    }

    /// Offers a decision to the watchers, if there are any.
    pub fn publish(&self, message: &ChatMessage, verdict: &Verdict) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let _ = self.tx.send(Arc::new(Decided {
            message: message.clone(),
            verdict: verdict.clone(),
        }));
    }

    /// A place among the watchers, or `None` when [`MAX_WATCHERS`] are watching already.
    pub fn subscribe(&self) -> Option<Subscription> {
        (self.tx.receiver_count() < MAX_WATCHERS).then(|| Subscription(self.tx.subscribe()))
    }

    /// Sends the decisions of `channel` (every channel when `None`) to `out`, from the moment
    /// of `subscription`, until `out` is closed or `stopping` turns true.
    pub async fn watch(
        subscription: Subscription,
        channel: Option<String>,
        out: mpsc::Sender<FeedItem>,
        mut stopping: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut rx = subscription.0;
        let mut skipped = 0u64;
        let mut allowance = Allowance::new(MAX_EVENTS_PER_SECOND, std::time::Instant::now());
        loop {
            let next = tokio::select! {
                next = rx.recv() => next,
                () = out.closed() => return,
                _ = stopping.wait_for(|s| *s) => return,
            };
            match next {
                Ok(decided) => {
                    if channel
                        .as_deref()
                        .is_some_and(|c| c != decided.message.channel)
                    {
                        continue;
                    }
                    if !allowance.take(std::time::Instant::now()) {
                        skipped += 1;
                        continue;
                    }
                    // Never wait for a slow watcher: what it cannot take now it skips.
                    match out.try_send(FeedItem { decided, skipped }) {
                        Ok(()) => skipped = 0,
                        Err(mpsc::error::TrySendError::Full(_)) => skipped += 1,
                        Err(mpsc::error::TrySendError::Closed(_)) => return,
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => skipped += missed,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

/// A token bucket: `rate` a second, bursts of up to `rate`.
#[derive(Debug)]
struct Allowance {
    rate: f64,
    tokens: f64,
    at: std::time::Instant,
}

impl Allowance {
    fn new(rate: u32, now: std::time::Instant) -> Self {
        Self {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            at: now,
        }
    }

    /// Takes one token if there is one.
    fn take(&mut self, now: std::time::Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::domain::Decision;

    fn message(channel: &str, id: &str) -> ChatMessage {
        ChatMessage {
            channel: channel.into(),
            message_id: id.into(),
            user_id: "u".into(),
            nick: "u".into(),
            roles: Vec::new(),
            text: "hello".into(),
            sent_at: SystemTime::now(),
        }
    }

    fn verdict(id: &str) -> Verdict {
        Verdict {
            message_id: id.to_owned(),
            channel: String::new(),
            user_id: "u".to_owned(),
            decision: Decision::Allow,
            duration: None,
            reasons: Vec::new(),
            enforced: true,
            shadow_decision: Decision::Allow,
            model_version: String::new(),
            elapsed: Duration::ZERO,
            degraded: Vec::new(),
            scores: Default::default(),
            normalized_text: String::new(),
            action_id: None,
            review_id: None,
            trial: None,
        }
    }

    #[tokio::test]
    async fn a_watcher_sees_its_channel_and_skips_what_it_could_not_take() {
        let feed = Arc::new(DecisionFeed::new());
        feed.publish(&message("a", "before"), &verdict("before"));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (tx, mut rx) = mpsc::channel(2);
        let subscription = feed.subscribe().expect("room");
        let watcher = tokio::spawn(DecisionFeed::watch(
            subscription,
            Some("a".into()),
            tx,
            stop_rx,
        ));
        feed.publish(&message("b", "other"), &verdict("other"));
        for i in 0..5 {
            feed.publish(&message("a", &format!("m{i}")), &verdict(&format!("m{i}")));
        }
        let first = rx.recv().await.expect("an item");
        assert_eq!(first.decided.message.message_id, "m0");
        assert_eq!(first.skipped, 0);
        let second = rx.recv().await.expect("an item");
        assert_eq!(second.decided.message.message_id, "m1");
        // m2..m4 found the buffer full; the next item says so.
        tokio::time::sleep(Duration::from_millis(20)).await;
        feed.publish(&message("a", "m5"), &verdict("m5"));
        let third = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("in time")
            .expect("an item");
        assert_eq!(third.decided.message.message_id, "m5");
        assert_eq!(third.skipped, 3);
        stop_tx.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), watcher)
            .await
            .expect("the watcher stops")
            .expect("no panic");
    }

    #[tokio::test]
    async fn a_watcher_whose_reader_is_gone_ends_without_waiting_for_a_decision() {
        let feed = Arc::new(DecisionFeed::new());
        let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (tx, rx) = mpsc::channel(2);
        let watcher = tokio::spawn(DecisionFeed::watch(
            feed.subscribe().expect("room"),
            None,
            tx,
            stop_rx,
        ));
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), watcher)
            .await
            .expect("the watcher ends once nobody reads")
            .expect("no panic");
        assert_eq!(feed.tx.receiver_count(), 0, "publishing is free again");
    }

    #[test]
    fn a_watcher_is_handed_at_most_its_allowance_a_second() {
        let start = std::time::Instant::now();
        let mut allowance = Allowance::new(100, start);
        let burst = (0..1_000).filter(|_| allowance.take(start)).count();
        assert_eq!(burst, 100, "a burst of at most a second's worth");
        // Half a second later, half a second's worth more.
        let later = start + Duration::from_millis(500);
        let refilled = (0..1_000).filter(|_| allowance.take(later)).count();
        assert_eq!(refilled, 50);
        // A long pause never saves up more than one second's worth.
        let much_later = later + Duration::from_secs(60);
        let capped = (0..1_000).filter(|_| allowance.take(much_later)).count();
        assert_eq!(capped, 100);
    }

    #[test]
    fn a_replica_serves_at_most_max_watchers() {
        let feed = DecisionFeed::new();
        let places: Vec<Subscription> = (0..MAX_WATCHERS)
            .map(|_| feed.subscribe().expect("room"))
            .collect();
        assert!(feed.subscribe().is_none(), "one too many");
        drop(places);
        assert!(feed.subscribe().is_some(), "room again once they leave");
    }
}
