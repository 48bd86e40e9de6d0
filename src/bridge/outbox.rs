//! What the bridge has to tell modbot, held while modbot is unreachable.
//!
//! Results of commands come first and are never dropped (there is at most one per action,
//! and the executor remembers a bounded number of actions). A result stays held after it is
//! sent until the server acknowledges it (`ActionResultAck`) or refuses it for good: when the
//! stream breaks first, or the server could not record it (an UNAVAILABLE refusal naming its
//! action id), it goes again, so the server learns every outcome the chat gave. Chat events are bounded: past
//! `capacity` the oldest is dropped and counted, since a stale message is the least useful to
//! moderate. A chat message stays held after it is sent until its verdict arrives, so when
//! the stream breaks the messages it had not answered go again on the next one (the server
//! derives action ids from the message id, so a message decided twice acts once).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

use crate::proto::{
    ActionResult, ChatEvent, StreamModerateRequest, chat_event, stream_moderate_request,
};

/// The bridge's queue towards modbot.
pub struct Outbox {
    state: Mutex<State>,
    ready: Notify,
    dropped: AtomicU64,
}

struct State {
    results: VecDeque<ActionResult>,
    /// Results sent on the current stream that the server has neither acknowledged nor
    /// refused, in order.
    unconfirmed: VecDeque<ActionResult>,
    /// Results the server could not record, waiting for [`Outbox::retry_results`].
    refused: VecDeque<ActionResult>,
    events: VecDeque<ChatEvent>,
    /// Messages sent on the current stream that have no verdict yet, in order.
    unanswered: VecDeque<ChatEvent>,
    capacity: usize,
}

impl State {
    fn held(&self) -> usize {
        self.events.len() + self.unanswered.len()
    }
}

fn message_id(event: &ChatEvent) -> Option<&str> {
    match &event.kind {
        Some(chat_event::Kind::Message(m)) => Some(&m.message_id),
        _ => None,
    }
}

impl Outbox {
    /// An empty outbox holding at most `capacity` chat events.
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                results: VecDeque::new(),
                unconfirmed: VecDeque::new(),
                refused: VecDeque::new(),
                events: VecDeque::new(),
                unanswered: VecDeque::new(),
                capacity: capacity.max(1),
            }),
            ready: Notify::new(),
            dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every method leaves it whole.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Holds a chat event, dropping the oldest one when full.
    pub fn push_event(&self, event: ChatEvent) {
        let mut state = self.lock();
        if state.held() >= state.capacity {
            if state.events.pop_front().is_none() {
                state.unanswered.pop_front();
            }
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            metrics::counter!("modbot_bridge_events_dropped_total").increment(1);
            if dropped == 1 || dropped.is_multiple_of(1000) {
                tracing::warn!(
                    dropped,
                    capacity = state.capacity,
                    "the bridge's buffer is full (modbot unreachable or slow): dropping the oldest chat events"
                );
            }
        }
        state.events.push_back(event);
        metrics::gauge!("modbot_bridge_buffered_events").set(state.held() as f64);
        drop(state);
        self.ready.notify_one();
    }

    /// Holds a command's result.
    pub fn push_result(&self, result: ActionResult) {
        self.lock().results.push_back(result);
        self.ready.notify_one();
    }

    /// Whether anything waits to be sent.
    pub fn has_items(&self) -> bool {
        let state = self.lock();
        !state.results.is_empty() || !state.events.is_empty()
    }

    /// Completes when something may have been added since the last call.
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// The next request to send: a result first, else the oldest event.
    pub fn pop(&self) -> Option<StreamModerateRequest> {
        let mut state = self.lock();
        let kind = if let Some(result) = state.results.pop_front() {
            state.unconfirmed.push_back(result.clone());
            stream_moderate_request::Kind::ActionResult(result)
        } else {
            let event = state.events.pop_front()?;
            if message_id(&event).is_some() {
                state.unanswered.push_back(event.clone());
            }
            stream_moderate_request::Kind::Event(event)
        };
        Some(StreamModerateRequest { kind: Some(kind) })
    }

    /// The next result to send, leaving events (for a bridge that is stopping).
    pub fn pop_result(&self) -> Option<StreamModerateRequest> {
        let mut state = self.lock();
        let result = state.results.pop_front()?;
        state.unconfirmed.push_back(result.clone());
        Some(StreamModerateRequest {
            kind: Some(stream_moderate_request::Kind::ActionResult(result)),
        })
    }

    /// The server answered the message `message_id` (and, answering in order, every message
    /// sent before it).
    pub fn answered(&self, message_id: &str) {
        let mut state = self.lock();
        if let Some(at) = state
            .unanswered
            .iter()
            .position(|e| self::message_id(e) == Some(message_id))
        {
            state.unanswered.drain(..=at);
        }
        metrics::gauge!("modbot_bridge_buffered_events").set(state.held() as f64);
    }

    /// The server recorded the result for `action_id`: it is forgotten.
    pub fn result_confirmed(&self, action_id: &str) {
        let mut state = self.lock();
        if let Some(at) = state
            .unconfirmed
            .iter()
            .position(|r| r.action_id == action_id)
        {
            state.unconfirmed.remove(at);
        }
    }

    /// The server refused the result for `action_id`: kept for [`Self::retry_results`] when
    /// `retry` (the server could not record it now), forgotten otherwise (the refusal is
    /// final: an unknown action, or one sent to another bridge).
    pub fn result_refused(&self, action_id: &str, retry: bool) {
        let mut state = self.lock();
        if let Some(at) = state
            .unconfirmed
            .iter()
            .position(|r| r.action_id == action_id)
            && let Some(result) = state.unconfirmed.remove(at)
            && retry
        {
            state.refused.push_back(result);
        }
    }

    /// Sends the results the server could not record again. True when there were any.
    pub fn retry_results(&self) -> bool {
        let mut state = self.lock();
        if state.refused.is_empty() {
            return false;
        }
        while let Some(result) = state.refused.pop_back() {
            state.results.push_front(result);
        }
        drop(state);
        self.ready.notify_one();
        true
    }

    /// Results held: not yet sent, or sent and not yet acknowledged.
    pub fn results_held(&self) -> usize {
        let state = self.lock();
        state.results.len() + state.unconfirmed.len() + state.refused.len()
    }

    /// The stream broke: the messages it had not answered, and the results it had not
    /// acknowledged, go first on the next one.
    pub fn stream_lost(&self) {
        let mut state = self.lock();
        while let Some(event) = state.unanswered.pop_back() {
            state.events.push_front(event);
        }
        while let Some(result) = state.refused.pop_back() {
            state.results.push_front(result);
        }
        while let Some(result) = state.unconfirmed.pop_back() {
            state.results.push_front(result);
        }
    }

    /// Events dropped because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Events held (waiting or unanswered).
    pub fn held(&self) -> usize {
        self.lock().held()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ChatMessage;

    fn message(id: &str) -> ChatEvent {
        ChatEvent {
            channel: "c".into(),
            kind: Some(chat_event::Kind::Message(ChatMessage {
                message_id: id.into(),
                ..Default::default()
            })),
        }
    }

    fn popped_id(outbox: &Outbox) -> Option<String> {
        match outbox.pop()?.kind? {
            stream_moderate_request::Kind::Event(e) => message_id(&e).map(str::to_owned),
            stream_moderate_request::Kind::ActionResult(r) => {
                Some(format!("result:{}", r.action_id))
            }
            stream_moderate_request::Kind::Hello(_) => None,
        }
    }

    #[test]
    fn bounded_oldest_dropped_and_counted() {
        let outbox = Outbox::new(3);
        for id in ["m1", "m2", "m3", "m4", "m5"] {
            outbox.push_event(message(id));
        }
        assert_eq!(outbox.dropped(), 2);
        assert_eq!(outbox.held(), 3);
        outbox.push_result(ActionResult {
            action_id: "a".into(),
            ..Default::default()
        });
        assert_eq!(
            popped_id(&outbox).as_deref(),
            Some("result:a"),
            "results first"
        );
        assert_eq!(popped_id(&outbox).as_deref(), Some("m3"));
    }

    fn result(id: &str) -> ActionResult {
        ActionResult {
            action_id: id.into(),
            ok: true,
            ..Default::default()
        }
    }

    #[test]
    fn results_are_held_until_acknowledged_and_go_again_after_a_lost_stream() {
        let outbox = Outbox::new(10);
        for id in ["a1", "a2", "a3"] {
            outbox.push_result(result(id));
        }
        for id in ["a1", "a2", "a3"] {
            assert_eq!(popped_id(&outbox), Some(format!("result:{id}")));
        }
        assert!(!outbox.has_items());
        assert_eq!(outbox.results_held(), 3, "sent is not confirmed");
        outbox.result_confirmed("a2");
        assert_eq!(outbox.results_held(), 2);
        // The stream breaks before a1 and a3 are acknowledged: both go again, in order.
        outbox.stream_lost();
        assert_eq!(popped_id(&outbox).as_deref(), Some("result:a1"));
        assert_eq!(popped_id(&outbox).as_deref(), Some("result:a3"));
        outbox.result_confirmed("a1");
        outbox.result_confirmed("a3");
        assert_eq!(outbox.results_held(), 0);
        assert!(!outbox.has_items());
    }

    #[test]
    fn a_refused_result_goes_again_only_when_the_server_could_not_record_it() {
        let outbox = Outbox::new(10);
        outbox.push_result(result("unavailable"));
        outbox.push_result(result("unknown-id"));
        popped_id(&outbox);
        popped_id(&outbox);
        outbox.result_refused("unavailable", true);
        outbox.result_refused("unknown-id", false);
        assert!(!outbox.has_items(), "the retry waits for its tick");
        assert_eq!(outbox.results_held(), 1, "a final refusal is forgotten");
        assert!(outbox.retry_results());
        assert_eq!(popped_id(&outbox).as_deref(), Some("result:unavailable"));
        assert!(!outbox.retry_results());
        outbox.result_confirmed("unavailable");
        assert_eq!(outbox.results_held(), 0);
    }

    #[test]
    fn unanswered_messages_go_again_in_order_after_a_lost_stream() {
        let outbox = Outbox::new(10);
        for id in ["m1", "m2", "m3"] {
            outbox.push_event(message(id));
        }
        assert_eq!(popped_id(&outbox).as_deref(), Some("m1"));
        assert_eq!(popped_id(&outbox).as_deref(), Some("m2"));
        outbox.answered("m1");
        outbox.answered("unknown");
        outbox.stream_lost();
        assert_eq!(popped_id(&outbox).as_deref(), Some("m2"));
        assert_eq!(popped_id(&outbox).as_deref(), Some("m3"));
        outbox.answered("m3");
        assert_eq!(outbox.held(), 0, "answering m3 answers m2 before it");
        assert!(!outbox.has_items());
    }
}
