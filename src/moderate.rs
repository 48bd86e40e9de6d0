//! The per-message pipeline: normalise, consult and update the author's history, decide,
//! record the offence. Shared by `Classify` and `StreamModerate`.

use std::time::{Duration, Instant, SystemTime};

use crate::decision::{
    ChatMessage, DecideOptions, Decision, Degraded, Engine, Inputs, Verdict, escalation,
};
use crate::normalize::normalize;
use crate::store::unix_millis;
use crate::users::{Observation, SharedState};

/// How far ahead of the server's clock a message's own timestamp may be before the server's
/// clock is used instead: a skewed client must not be able to age its own offences away.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Decides messages with memory of each user.
#[derive(Debug)]
pub struct Moderator {
    engine: Engine,
    state: SharedState,
}

impl Moderator {
    /// A moderator over an engine and user state.
    pub fn new(engine: Engine, state: SharedState) -> Self {
        Self { engine, state }
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The user state.
    pub fn state(&self) -> &SharedState {
        &self.state
    }

    /// Decides one message. Unless `options.dry_run`, the message joins the author's and the
    /// channel's history and an enforced offence is recorded.
    pub async fn moderate(
        &self,
        message: &ChatMessage,
        options: DecideOptions,
        received: Instant,
    ) -> Verdict {
        let policy = self.engine.rules().policy(&message.channel);
        let normalized = normalize(&message.text, &policy.emotes);
        let now_ms = state_clock(message.sent_at);
        let (history, channel_recent, mut degraded) = if options.dry_run {
            let answer = self.state.peek(&message.channel, &message.user_id).await;
            let (history, recent) = answer.value;
            (history.unwrap_or_default(), recent, answer.degraded)
        } else {
            let answer = self
                .state
                .observe(&Observation {
                    channel: &message.channel,
                    user_id: &message.user_id,
                    message_id: &message.message_id,
                    text: &normalized.text,
                    at_ms: now_ms,
                })
                .await;
            let (history, recent) = answer.value;
            (history, recent, answer.degraded)
        };
        let decided = self.engine.decide(
            &Inputs {
                message,
                normalized: &normalized,
                history: &history,
                channel_recent: &channel_recent,
                now_ms,
                received,
            },
            options,
        );
        if let Some(offence) = &decided.offence {
            degraded |= self
                .state
                .record_offence(&message.channel, &message.user_id, offence)
                .await
                .degraded;
        }
        let mut verdict = decided.verdict;
        if degraded {
            verdict.degraded.push(Degraded::UserState);
        }
        verdict
    }

    /// Records a human moderator's action seen in the chat as an offence of its target, so the
    /// ladder knows about it.
    pub async fn moderator_action(
        &self,
        channel: &str,
        target: &str,
        decision: Decision,
        at: SystemTime,
    ) {
        let policy = self.engine.rules().policy(channel);
        if let Some(offence) = escalation::offence(decision, &policy.escalation, state_clock(at)) {
            self.state.record_offence(channel, target, &offence).await;
        }
    }
}

/// The time a message is placed at in user state: its own timestamp (so a replayed log keeps
/// its rhythm), unless that is more than [`MAX_CLOCK_SKEW`] in the future.
fn state_clock(sent_at: SystemTime) -> i64 {
    let now = SystemTime::now();
    unix_millis(sent_at.min(now + MAX_CLOCK_SKEW))
}
