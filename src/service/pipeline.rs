//! One moderation pipeline for every caller: decide, then record (the automatic action, the
//! audit record, the degraded marks) and count. A `Classify` call goes through
//! [`Services::classify`] whole; a stream pipelines the same steps, consulting the model ahead
//! with [`Moderator::consult`](super::moderate::Moderator::consult) and finishing each message
//! in order with [`Services::decide_streamed`]. Either way a verdict is recorded and counted
//! exactly as the other caller's would be.

use std::time::Instant;

use tokio::sync::oneshot;
use tracing::Instrument;

use super::Services;
use super::actions::dispatch::{automatic_action, pending_hide};
use super::audit::{Outcome, write_records};
use super::moderate::Consult;
use super::review::review_item;
use crate::domain::{ActionStatus, ChatMessage, Degraded, Verdict};
use crate::engine::decision::DecideOptions;
use crate::engine::rules::ClassifyActions;
use crate::infra::inference::{Admission, Overloaded};
use crate::infra::store::AuditRecord;

/// A stream's verdict once decided and recorded.
#[derive(Debug)]
pub enum Streamed {
    /// To send now (counted already).
    Ready(Verdict),
    /// Names an action: to send once `committed` answers, then [`Services::after_commit`]
    /// marks and counts it.
    AfterCommit {
        /// The verdict, its action id set.
        verdict: Verdict,
        /// The outcome of the commit that holds its action.
        committed: oneshot::Receiver<Outcome>,
    },
}

/// Which caller a verdict is recorded for: a `Classify` caller enforces its verdicts in its
/// own system unless the channel's policy says to send them; a stream's bridge carries them
/// out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Classify,
    Stream,
}

impl Services {
    /// Decides `messages` in order and records their notable verdicts before answering.
    ///
    /// Every message is submitted to the model first, so the call's texts share batches, and
    /// a full model queue refuses the whole call ([`Overloaded`]) before anything is decided
    /// or remembered. Then each is decided in order (a later message of the same user sees
    /// the earlier). Unless it is a dry run, the notable verdicts and their actions are
    /// written (a poison record is split out, as the writer does) and each verdict marked
    /// with what was lost; the decisions stand either way. Every verdict's `elapsed` is the
    /// call's time.
    pub async fn classify(
        &self,
        messages: &[ChatMessage],
        options: DecideOptions,
        requested_by: &str,
        received: Instant,
    ) -> Result<Vec<Verdict>, Overloaded> {
        let with_text = self.config.log.message_text;
        let mut consults = Vec::with_capacity(messages.len());
        for message in messages {
            let span = crate::telemetry::message_span(message, with_text);
            let consult = self
                .moderator
                .consult(message, Admission::FailFast)
                .instrument(span.clone())
                .await?;
            consults.push((consult, span));
        }
        let mut verdicts = Vec::with_capacity(messages.len());
        for (message, (consult, span)) in messages.iter().zip(consults) {
            verdicts.push(
                self.moderator
                    .moderate_with(message, consult, options, received)
                    .instrument(span)
                    .await,
            );
        }
        if !options.dry_run {
            self.record_call(messages, &mut verdicts, requested_by)
                .await;
        }
        let elapsed = received.elapsed();
        for (message, verdict) in messages.iter().zip(&mut verdicts) {
            verdict.elapsed = elapsed;
            if !options.dry_run {
                self.count_verdict(verdict);
                self.feed.publish(message, verdict);
            }
        }
        Ok(verdicts)
    }

    /// Decides one message of a stream (its model consultation started ahead) and records
    /// it: a verdict that names an action comes back to be sent once the action is durable
    /// (the stream decides its next messages meanwhile); any other is counted and ready, its
    /// audit record queued behind it.
    pub async fn decide_streamed(
        &self,
        message: ChatMessage,
        consult: Consult,
        received: Instant,
        requested_by: &str,
    ) -> Streamed {
        let mut verdict = self
            .moderator
            .moderate_with(&message, consult, DecideOptions::default(), received)
            .await;
        if verdict.is_notable() {
            let record = self.record_of(&message, &mut verdict, requested_by, Caller::Stream);
            if verdict.action_id.is_some() || verdict.review_id.is_some() {
                // Group commit with other streams' records: a bridge told of an action that
                // is then lost could never see it carried out, nor a caller follow a review
                // item that was never written.
                let committed = self.audit.commit(record).await;
                // The feed shows the decision now, while its action is being committed.
                verdict.elapsed = received.elapsed();
                self.feed.publish(&message, &verdict);
                return Streamed::AfterCommit { verdict, committed };
            }
            // Nothing to carry out: the record is written behind the verdict, which says so
            // when the database is failing.
            if self.audit.failing() && !verdict.degraded.contains(&Degraded::Store) {
                verdict.degraded.push(Degraded::Store);
            }
            self.audit.submit(record).await;
        }
        verdict.elapsed = received.elapsed();
        self.count_verdict(&verdict);
        self.feed.publish(&message, &verdict);
        Streamed::Ready(verdict)
    }

    /// Finishes a [`Streamed::AfterCommit`] verdict once its commit answered: marked with what
    /// was stored (a writer gone before answering stored nothing), timed and counted.
    pub async fn after_commit(
        &self,
        mut verdict: Verdict,
        committed: oneshot::Receiver<Outcome>,
        received: Instant,
    ) -> Verdict {
        committed.await.unwrap_or(Outcome::Lost).mark(&mut verdict);
        verdict.elapsed = received.elapsed();
        self.count_verdict(&verdict);
        verdict
    }

    /// Counts a verdict returned to a caller, once `elapsed` is set: in this replica's
    /// statistics (`Admin.GetStats`) and in the Prometheus metrics
    /// ([`crate::telemetry::record_verdict`]). Dry runs are an operator trying the rules, not
    /// chat traffic, and are not counted.
    fn count_verdict(&self, verdict: &Verdict) {
        crate::telemetry::record_verdict(verdict);
        self.stats.record(verdict);
    }

    /// Writes a call's notable verdicts and their actions, marks each verdict with what was
    /// lost, and wakes the dispatcher when an action is to be delivered.
    async fn record_call(&self, messages: &[ChatMessage], verdicts: &mut [Verdict], by: &str) {
        let mut records = Vec::new();
        // Which verdict each record is for.
        let mut notable = Vec::new();
        for (i, (message, verdict)) in messages.iter().zip(verdicts.iter_mut()).enumerate() {
            if verdict.is_notable() {
                notable.push(i);
                records.push(self.record_of(message, verdict, by, Caller::Classify));
            }
        }
        if records.is_empty() {
            return;
        }
        let outcomes = write_records(&self.store, &records).await;
        let lost = outcomes.iter().filter(|o| **o != Outcome::Stored).count();
        if lost > 0 {
            // A caller waiting to show a message needs the decisions more than the audit log
            // needs the rows: each verdict says what was lost.
            metrics::counter!("modbot_audit_write_failures_total").increment(lost as u64);
        }
        crate::telemetry::set_degraded(Degraded::Store, lost > 0);
        for (&i, outcome) in notable.iter().zip(&outcomes) {
            outcome.mark(&mut verdicts[i]);
        }
        // Only an open action (not one that is only recorded) has anything to deliver.
        let deliver = records.iter().zip(&outcomes).any(|(r, o)| {
            r.action.as_ref().is_some_and(|a| a.status.is_open()) && *o != Outcome::Lost
        });
        if deliver {
            self.dispatcher.wake();
        }
    }

    /// The audit record of a notable verdict, with the automatic action that carries it out
    /// (whose id the verdict then names). A `Classify` caller's action is only recorded
    /// (status `recorded`: it neither reaches a chat nor expires) unless the channel's policy
    /// sends it.
    fn record_of(
        &self,
        message: &ChatMessage,
        verdict: &mut Verdict,
        requested_by: &str,
        caller: Caller,
    ) -> AuditRecord {
        let actions = &self.config.actions;
        let engine = self.moderator.engine();
        let policy = engine.rules().policy(&message.channel);
        let records_only =
            caller == Caller::Classify && policy.classify_actions == ClassifyActions::Record;
        let mut action = automatic_action(
            message,
            verdict,
            requested_by,
            actions.hide_duration(),
            actions.pending_ttl(),
        );
        let mut review = review_item(
            message,
            verdict,
            requested_by,
            &policy.review,
            records_only,
            std::time::SystemTime::now(),
        );
        if let Some(item) = &mut review
            && policy.review.hide_while_pending
        {
            let hide = pending_hide(
                message,
                verdict,
                requested_by,
                actions.hide_duration(),
                actions.pending_ttl(),
            );
            item.hide_action_id.clone_from(&hide.id);
            action = Some(hide);
        }
        if records_only && let Some(action) = &mut action {
            action.status = ActionStatus::Recorded;
        }
        verdict.action_id = action.as_ref().map(|a| a.id.clone());
        verdict.review_id = review.as_ref().map(|r| r.id.clone());
        AuditRecord::new(message.clone(), verdict.clone())
            .with_action(action)
            .with_review(review)
    }
}
