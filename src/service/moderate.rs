//! The per-message pipeline: normalise, consult the model, consult and update the author's
//! history, decide, record the offence. Shared by `Classify` and `StreamModerate`.
//!
//! It runs in two stages so that model batching and in-order decisions go together. The first,
//! [`Moderator::consult`], needs nothing but the message: it hands the normalised text to the
//! scorer (unless the rules alone settle the message) and returns at once with a [`Consult`]
//! to await. Callers start it for many messages ahead (a whole `Classify` call, a stream's
//! window of events), so their texts share model batches. The second,
//! [`Moderator::moderate_with`], runs strictly in order per caller: it awaits the scores, then
//! reads and updates the author's history and decides.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;

use crate::domain::Observation;
use crate::domain::UserHistory;
use crate::domain::unix_millis;
use crate::domain::{ChatMessage, Decision, Degraded, TrialDecision, Verdict};
use crate::engine::decision::{DecideOptions, Engine, Inputs, ModelInput, escalation};
use crate::engine::normalize::{Folded, normalize};
use crate::engine::rules::lookalike::link_signals;
use crate::infra::inference::{
    Admission, HeadSet, Overloaded, Pending, Scorer, Scores, Unavailable,
};
use crate::infra::store::{Feedback, FeedbackSource};
use crate::infra::users::{Answer, SharedState};

/// How far ahead of the server's clock a message's own timestamp may be before the server's
/// clock is used instead: a skewed client must not be able to age its own offences away.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// How long before a human moderator's action its target's message may be what the action
/// was about. Moderators act within seconds of what they saw; a message from long before is
/// more likely unrelated, and a wrong example is worse than none.
pub const FEEDBACK_WINDOW: Duration = Duration::from_secs(120);

/// The label of a message a moderator acted on without saying why: a mute or ban seen in chat
/// (the chats' actions carry no reason), or a review rejection labelled with a word of the
/// team's rather than a `head/label`. It was harmful in some way, but not in a known one: an
/// unlabeled positive, which `train --with-feedback` does not teach any one label.
pub const UNLABELED: &str = "unlabeled";

/// The label of a message a moderator judged acceptable when no model label was blamed for it
/// (an overturned action a rule or a human took, an approved hold a rule made): a negative of
/// every label, which `train --with-feedback` teaches every binary label.
pub const BENIGN: &str = "benign";

/// Decides messages with memory of each user.
#[derive(Debug)]
pub struct Moderator {
    /// Swapped whole when the rules change (an admin's edit, seen by every replica): each
    /// message takes one snapshot and decides with it throughout, without a lock.
    engine: ArcSwap<Engine>,
    state: SharedState,
    scorer: Scorer,
    /// How a candidate head set on trial compares with the active one.
    trials: crate::service::trials::Trials,
    /// This replica's raid watches.
    raids: crate::service::raid::Raids,
}

/// The model's part in one message's decision, started by [`Moderator::consult`], with the
/// message's text as consulting folded it (so deciding does not fold it again).
#[derive(Debug)]
pub struct Consult {
    /// The model's answer, to await; `None` when the model is not consulted.
    scores: Option<Pending>,
    /// The folded text and the engine whose channel policy (emotes) folded it (boxed: a
    /// stream queues many of these).
    folded: Option<Box<(Arc<Engine>, Folded)>>,
}

impl Consult {
    /// The model is not consulted, and nothing is folded yet.
    pub fn not_needed() -> Self {
        Self {
            scores: None,
            folded: None,
        }
    }

    /// The model should have been consulted but cannot be: the message is decided by the
    /// rules alone, marked degraded.
    pub fn unavailable(why: Unavailable) -> Self {
        Self {
            scores: Some(Pending::Done(Scores::Unavailable(why))),
            folded: None,
        }
    }
}

impl Moderator {
    /// A moderator over an engine, user state and the model's scorer.
    pub fn new(engine: Engine, state: SharedState, scorer: Scorer) -> Self {
        Self::with_shared_engine(Arc::new(engine), state, scorer)
    }

    /// [`Moderator::new`] over an engine shared with others (the stream fuzz target compiles
    /// the built-in rules once for all its inputs).
    pub fn with_shared_engine(engine: Arc<Engine>, state: SharedState, scorer: Scorer) -> Self {
        Self {
            engine: ArcSwap::new(engine),
            state,
            scorer,
            trials: crate::service::trials::Trials::default(),
            raids: crate::service::raid::Raids::new(),
        }
    }

    /// This replica's raid watches.
    pub fn raids(&self) -> &crate::service::raid::Raids {
        &self.raids
    }

    /// A user joined `channel` at `at` (the chat's time): a join surge may start a raid.
    pub fn joined(&self, channel: &str, at: SystemTime) {
        let engine = self.engine.load();
        let policy = &engine.rules().policy(channel).raid;
        self.raids.joined(
            channel,
            policy,
            unix_millis(state_time(at, SystemTime::now())),
        );
    }

    /// Ends raids whose time ran out (run every second by the expiry task).
    pub fn expire_raids(&self, now: SystemTime) {
        self.raids
            .expire(unix_millis(now), self.engine.load().rules());
    }

    /// The model's scorer.
    pub fn scorer(&self) -> &Scorer {
        &self.scorer
    }

    /// How candidates on trial compared with the active heads on this replica.
    pub fn trials(&self) -> &crate::service::trials::Trials {
        &self.trials
    }

    /// Stage one: sends the message's normalised text to the model unless it is not needed:
    /// no model or heads, an exempt author, no model label that acts in the channel, or a
    /// rule without history already asking for at least the harshest thing the model could.
    /// `Err` only with [`Admission::FailFast`] when the model's queue is full.
    pub async fn consult(
        &self,
        message: &ChatMessage,
        admission: Admission,
    ) -> Result<Consult, Overloaded> {
        if !self.scorer.wanted() {
            return Ok(Consult::not_needed());
        }
        let engine = self.engine.load_full();
        let rules = engine.rules();
        let policy = rules.policy(&message.channel);
        let Some(harshest_model) = policy.harshest_model_decision() else {
            return Ok(Consult::not_needed());
        };
        if policy.exempts(&message.roles) {
            return Ok(Consult::not_needed());
        }
        // A panic here is not reported: deciding the message meets the same fault and
        // reports it once, with the message's verdict.
        let Ok((normalized, links, settled)) = crate::guard::catch(|| {
            crate::fault::deciding(&message.text);
            let normalized = normalize(&message.text, &policy.emotes);
            let settled = rules
                .harshest_without_history(message, policy, &normalized)
                .is_some_and(|d| d >= harshest_model);
            // The spam head's link inputs: a function of the folded text, as the score
            // cache's key is.
            let links = link_signals(&normalized.text);
            (normalized, links, settled)
        }) else {
            return Ok(Consult::not_needed());
        };
        let scores = if settled {
            metrics::counter!("modbot_model_skipped_total", "why" => "settled_by_rules")
                .increment(1);
            None
        } else {
            Some(
                self.scorer
                    .submit(&normalized.text, links, admission)
                    .await?,
            )
        };
        Ok(Consult {
            scores,
            folded: Some(Box::new((Arc::clone(&engine), normalized.detach()))),
        })
    }

    /// Decides one message end to end: [`Moderator::consult`] (failing fast on a full model
    /// queue), then [`Moderator::moderate_with`].
    pub async fn moderate(
        &self,
        message: &ChatMessage,
        options: DecideOptions,
        received: Instant,
    ) -> Result<Verdict, Overloaded> {
        let consult = self.consult(message, Admission::FailFast).await?;
        Ok(self
            .moderate_with(message, consult, options, received)
            .await)
    }

    /// The engine deciding now (a snapshot: a rule change swaps in a new one).
    pub fn engine(&self) -> Arc<Engine> {
        self.engine.load_full()
    }

    /// Decides every message from now on with `engine` (a new rule set). Messages already
    /// being decided finish with the engine they started with.
    pub fn set_engine(&self, engine: Engine) {
        engine.warm_up();
        self.engine.store(Arc::new(engine));
    }

    /// The user state.
    pub fn state(&self) -> &SharedState {
        &self.state
    }

    /// Stage two: awaits the model's part, then decides. Unless `options.dry_run`, the
    /// message joins the author's and the channel's history and an enforced offence is
    /// recorded.
    pub async fn moderate_with(
        &self,
        message: &ChatMessage,
        consult: Consult,
        options: DecideOptions,
        received: Instant,
    ) -> Verdict {
        let scores = match consult.scores {
            None => Scores::NotScored,
            Some(pending) => pending.wait().await,
        };
        // With a candidate on trial, one set's scores decide and the other's are its shadow.
        let mut shadow: Option<(ModelInput<'_>, bool)> = None;
        let model = match &scores {
            Scores::NotScored => ModelInput::NotConsulted,
            Scores::Scored { lineup, scores } => {
                let (active, candidate) = lineup.split(scores);
                match (&lineup.trial, candidate) {
                    (Some(trial), Some(candidate)) => {
                        let by_candidate =
                            lineup.candidate_decides(&message.channel, &message.user_id);
                        let active = model_input(&lineup.active, active);
                        let candidate = model_input(&trial.candidate, candidate);
                        if by_candidate {
                            shadow = Some((active, true));
                            candidate
                        } else {
                            shadow = Some((candidate, false));
                            active
                        }
                    }
                    _ => model_input(&lineup.active, active),
                }
            }
            Scores::Unavailable(why) => {
                tracing::debug!(reason = %why, "deciding without the model");
                metrics::counter!("modbot_model_unavailable_total").increment(1);
                ModelInput::Unavailable
            }
        };
        let engine = self.engine.load_full();
        let policy = engine.rules().policy(&message.channel);
        // The two synchronous steps (normalising; deciding) each run under the guard: a panic
        // in either gives this message a held, degraded verdict (see `Engine::undecided`) and
        // leaves the caller's other messages and the stream alone. The awaits between them
        // are user state, whose locks survive a panic (see `guard::catch`).
        // Folded once: consulting's fold serves unless the rules (and with them the channel's
        // emotes) changed in between.
        let folded = consult
            .folded
            .filter(|pair| Arc::ptr_eq(&pair.0, &engine))
            .map(|pair| pair.1);
        let normalized = match crate::guard::catch(|| {
            crate::fault::deciding(&message.text);
            folded
                .and_then(|folded| folded.attach(&message.text))
                .unwrap_or_else(|| normalize(&message.text, &policy.emotes))
        }) {
            Ok(normalized) => normalized,
            Err(panicked) => return undecided(&engine, message, options, received, &panicked),
        };
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
        let raid = if policy.exempts(&message.roles) {
            crate::engine::raid::Seen::default()
        } else {
            let new_user =
                crate::engine::raid::is_new_user(history.first_seen_ms, now_ms, &policy.raid);
            // Under the guard, as deciding is: a panic here (a bug) costs this message raid
            // mode, never its verdict.
            crate::guard::catch(|| {
                self.raids.message(
                    &message.channel,
                    &policy.raid,
                    (&message.user_id, new_user),
                    &normalized.text,
                    now_ms,
                    !options.dry_run,
                )
            })
            .unwrap_or_else(|panicked| {
                tracing::error!(
                    channel = %message.channel,
                    message_id = %message.message_id,
                    at = %panicked.location,
                    "raid detection panicked on a message: decided without raid mode"
                );
                metrics::counter!(DECISION_PANICS, "stage" => "raid").increment(1);
                crate::engine::raid::Seen::default()
            })
        };
        let inputs = Inputs {
            message,
            normalized: &normalized,
            history: &history,
            channel_recent: &channel_recent,
            now_ms,
            received,
            model,
            raid: &raid,
        };
        let decided = crate::guard::catch(|| engine.decide(&inputs, options));
        let trial = match &decided {
            Ok(decided) if !options.dry_run => {
                self.compare(&engine, &inputs, options, decided.verdict.decision, shadow)
            }
            _ => None,
        };
        let decided = match decided {
            Ok(decided) => decided,
            Err(panicked) => {
                let mut verdict = undecided(&engine, message, options, received, &panicked);
                if degraded {
                    verdict.degraded.push(Degraded::UserState);
                    verdict.degraded.sort();
                }
                return verdict;
            }
        };
        for failed in &decided.failed_rules {
            tracing::error!(
                channel = %message.channel,
                message_id = %message.message_id,
                rule = %failed.rule_id,
                at = %failed.location,
                "a rule panicked on a message: skipped, the verdict is marked degraded"
            );
            metrics::counter!(DECISION_PANICS, "stage" => "rule").increment(1);
        }
        if let Some(offence) = &decided.offence {
            degraded |= self
                .state
                .record_offence(&message.channel, &message.user_id, offence)
                .await
                .degraded;
        }
        let mut verdict = decided.verdict;
        verdict.trial = trial;
        if degraded {
            verdict.degraded.push(Degraded::UserState);
            verdict.degraded.sort();
        }
        verdict
    }

    /// Counts the enforced decision against its version, and, while a candidate is on trial,
    /// against the other set's decision of the same message (the same rules, history and raid
    /// state; only the decision is kept), which it returns for the audit record.
    fn compare(
        &self,
        engine: &Engine,
        inputs: &Inputs<'_>,
        options: DecideOptions,
        enforced: Decision,
        shadow: Option<(ModelInput<'_>, bool)>,
    ) -> Option<TrialDecision> {
        let ModelInput::Scored { version, .. } = inputs.model else {
            return None;
        };
        let Some((model, shadow_is_active)) = shadow else {
            self.trials.record_alone(version, enforced);
            return None;
        };
        let ModelInput::Scored {
            version: shadow_version,
            ..
        } = model
        else {
            return None;
        };
        // A panic here is the enforced decision's too, and was reported with it; one that
        // strikes only the shadow costs the comparison, never the message.
        let other = crate::guard::catch(|| engine.decide(&Inputs { model, ..*inputs }, options))
            .ok()?
            .verdict
            .decision;
        let comparison = if shadow_is_active {
            crate::service::trials::Comparison {
                candidate: version,
                active: shadow_version,
                candidate_decision: enforced,
                active_decision: other,
                by_candidate: true,
            }
        } else {
            crate::service::trials::Comparison {
                candidate: shadow_version,
                active: version,
                candidate_decision: other,
                active_decision: enforced,
                by_candidate: false,
            }
        };
        self.trials.record(&comparison);
        Some(TrialDecision {
            version: shadow_version.to_owned(),
            decision: other,
        })
    }

    /// Takes back the offence `decision` of `user_id`, recorded at `at` on the state clock (an
    /// overturned appeal): its heat and strikes, decayed since, one offence and, for a timeout,
    /// one rung of the ladder, by the channel's policy now. The answer is the history after it
    /// (`None`: the user is not held, nothing to take back) and whether only the per-replica
    /// fallback was pardoned.
    pub async fn pardon(
        &self,
        channel: &str,
        user_id: &str,
        decision: Decision,
        at: SystemTime,
    ) -> Answer<Option<UserHistory>> {
        let engine = self.engine.load_full();
        let policy = engine.rules().policy(channel);
        match escalation::offence(decision, None, &policy.escalation, unix_millis(at)) {
            Some(offence) => self.state.pardon(channel, user_id, &offence).await,
            None => Answer {
                value: None,
                degraded: false,
            },
        }
    }

    /// Records a moderator's `decision` on `user_id` at `at` (a review's rejection) as an
    /// offence on the channel's ladder, as an automatic verdict's would be.
    pub async fn charge(&self, channel: &str, user_id: &str, decision: Decision, at: SystemTime) {
        let history = self.state.peek(channel, user_id).await.value.0;
        self.charge_with(
            channel,
            user_id,
            decision,
            history.as_ref(),
            state_clock(at),
        )
        .await;
    }

    async fn charge_with(
        &self,
        channel: &str,
        user_id: &str,
        decision: Decision,
        history: Option<&UserHistory>,
        at_ms: i64,
    ) {
        let engine = self.engine.load_full();
        let policy = engine.rules().policy(channel);
        if let Some(offence) = escalation::offence(decision, history, &policy.escalation, at_ms) {
            self.state.record_offence(channel, user_id, &offence).await;
        }
    }

    /// Records a human moderator's action seen in the chat as an offence of its target, so the
    /// ladder knows about it, and returns the feedback it teaches: the target's latest message
    /// in the channel, sent at most [`FEEDBACK_WINDOW`] before the action, as a positive
    /// example of no known label ([`UNLABELED`]). `None` when no such message is remembered.
    pub async fn moderator_action(
        &self,
        channel: &str,
        moderator: &str,
        target: &str,
        decision: Decision,
        at: SystemTime,
    ) -> Option<Feedback> {
        let at_ms = state_clock(at);
        // Read before the offence is recorded: recording does not touch messages, but a read
        // first keeps the example independent of what the ladder does.
        let history = self.state.peek(channel, target).await.value.0;
        self.charge_with(channel, target, decision, history.as_ref(), at_ms)
            .await;
        let window_ms = i64::try_from(FEEDBACK_WINDOW.as_millis()).unwrap_or(i64::MAX);
        let message = history?
            .recent
            .last()
            .filter(|m| m.at_ms <= at_ms && at_ms - m.at_ms <= window_ms)?
            .clone();
        Some(Feedback {
            id: uuid::Uuid::now_v7().to_string(),
            created_at: SystemTime::now(),
            channel: channel.to_owned(),
            user_id: target.to_owned(),
            message_id: message.message_id.clone(),
            text: message.text.clone(),
            label: UNLABELED.to_owned(),
            positive: true,
            source: FeedbackSource::ModeratorAction,
            actor: moderator.to_owned(),
            action: decision.as_str().to_owned(),
        })
    }
}

/// What the model said, as one head set scored it.
fn model_input<'a>(set: &'a HeadSet, scores: &'a [f32]) -> ModelInput<'a> {
    ModelInput::Scored {
        version: &set.version,
        labels: set.labels(),
        scores,
        trained_thresholds: &set.trained_thresholds,
    }
}

/// Counter of pardons that did not reach the configured user state: Redis failed, and only
/// this replica's fallback memory was pardoned (Redis keeps the offence).
pub const PARDON_FAILURES: &str = "modbot_pardon_failures_total";

/// Counter of panics while deciding a message, by `stage`: `rule` (one rule skipped, the
/// message decided by the others) or `message` (the message held, see `Engine::undecided`).
pub const DECISION_PANICS: &str = "modbot_decision_panics_total";

/// Logs and counts a message that could not be decided, and makes its verdict.
fn undecided(
    engine: &Engine,
    message: &ChatMessage,
    options: DecideOptions,
    received: Instant,
    panicked: &crate::guard::Panicked,
) -> Verdict {
    tracing::error!(
        channel = %message.channel,
        message_id = %message.message_id,
        at = %panicked.location,
        "deciding a message panicked: it is held for review, the verdict is marked degraded"
    );
    metrics::counter!(DECISION_PANICS, "stage" => "message").increment(1);
    engine.undecided(message, options, received)
}

/// The time a message is placed at in user state: its own timestamp (so a replayed log keeps
/// its rhythm), unless that is more than [`MAX_CLOCK_SKEW`] in the future.
fn state_clock(sent_at: SystemTime) -> i64 {
    unix_millis(state_time(sent_at, SystemTime::now()))
}

/// The time on the state clock of a message sent at `sent_at` (its own timestamp) and decided
/// at `decided_at`: the message's time, but never more than `MAX_CLOCK_SKEW` (a minute) ahead
/// of the server's. The time its offence was recorded at, and so the time to pardon it at.
pub fn state_time(sent_at: SystemTime, decided_at: SystemTime) -> SystemTime {
    sent_at.min(decided_at + MAX_CLOCK_SKEW)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::rules::{DEFAULT_RULES, RuleSet};
    use crate::infra::inference::{Description, ModelFailure, ModelStatus};
    use crate::infra::users::StateOptions;

    fn moderator() -> Moderator {
        moderator_with(Scorer::idle(ModelStatus::Off, Description::default()))
    }

    fn moderator_with(scorer: Scorer) -> Moderator {
        let rules = format!(
            "{DEFAULT_RULES}\n[[rule]]\nid = \"fault\"\nkind = \"phrase\"\naction = \"ban\"\n\
             [rule.params]\nphrases = [\"{}\"]\n",
            crate::fault::PANIC_PHRASE
        );
        Moderator::new(
            Engine::new(RuleSet::parse(&rules, "test").unwrap()),
            SharedState::memory(StateOptions::default()),
            scorer,
        )
    }

    fn message(user: &str, id: &str, text: &str) -> ChatMessage {
        ChatMessage {
            channel: "destinygg".into(),
            message_id: id.into(),
            user_id: user.into(),
            nick: user.into(),
            roles: vec![],
            text: text.into(),
            sent_at: SystemTime::now(),
        }
    }

    async fn decide(moderator: &Moderator, user: &str, id: &str, text: &str) -> Verdict {
        moderator
            .moderate(
                &message(user, id, text),
                DecideOptions::default(),
                Instant::now(),
            )
            .await
            .expect("no model, never overloaded")
    }

    /// Panics in a rule and outside every rule, again and again: each costs its own message a
    /// degraded verdict, and the user's state keeps working for the messages after (no lock is
    /// left poisoned, nothing is half-remembered).
    #[tokio::test]
    async fn panics_cost_one_verdict_each_and_the_pipeline_keeps_working() {
        let moderator = moderator();
        for round in 0..3 {
            // A user of its own each round, so the repetition rule stays out of it.
            let user = format!("u{round}");
            let phrase = crate::fault::PANIC_PHRASE;
            let rule = decide(&moderator, &user, &format!("r{round}"), phrase).await;
            assert_eq!(
                rule.decision,
                Decision::Allow,
                "only the panicking rule fired"
            );
            assert_eq!(rule.degraded, [Degraded::Decision]);
            let text = crate::fault::PANIC_TEXT;
            let held = decide(&moderator, &user, &format!("p{round}"), text).await;
            assert_eq!(held.decision, Decision::Hold);
            assert_eq!(held.degraded, [Degraded::Decision]);
            assert!(held.normalized_text.is_empty());
        }
        // The user's history has the message the pipeline could normalise, not the one it
        // could not.
        let history = moderator.state().peek("destinygg", "u0").await.value.0;
        assert_eq!(history.expect("u0 is remembered").messages, 1);
        let fine = decide(&moderator, "u0", "ok", "free nitro").await;
        assert_eq!(fine.degraded, []);
        let last = fine.reasons.last().map(|r| r.rule_id.as_str());
        assert_eq!(last, Some("scam-giveaway"));
    }

    /// The spam head reads what the links show: the moderator finds it in the folded text
    /// and sends it to the model queue with the text, where the heads that take it get it.
    #[tokio::test]
    async fn the_links_evidence_goes_to_the_model_with_the_text() {
        use crate::domain::LinkSignals;
        use crate::infra::inference::{BatchModel, HeadSet, Input, Limits, Lineup};
        /// Scores nothing; remembers each input's lexical inputs.
        #[derive(Default)]
        struct Echo(std::sync::Mutex<Vec<Vec<f32>>>);
        impl BatchModel for Echo {
            fn tokenize(&self, text: &str) -> Result<Vec<u32>, String> {
                Ok(text.bytes().map(u32::from).collect())
            }
            fn score(&self, batch: &[Input<'_>], _: &Lineup) -> Result<Vec<Vec<f32>>, String> {
                let mut seen = self.0.lock().unwrap();
                seen.extend(batch.iter().map(|input| input.lexical.to_vec()));
                Ok(batch.iter().map(|_| vec![0.0]).collect())
            }
        }
        let dir = tempfile::tempdir().unwrap();
        crate::infra::model::heads::write_head(
            &dir.path().join("spam.safetensors"),
            &[(vec![vec![0.0; 1 + LinkSignals::INPUTS]], vec![0.0])],
        )
        .unwrap();
        std::fs::write(
            dir.path().join("heads.json"),
            r#"{"version": "t", "embedding_dim": 1, "heads": [{"name": "spam",
            "file": "spam.safetensors", "multi_label": true, "labels": ["promo"],
            "links": "links-1"}]}"#,
        )
        .unwrap();
        let heads = crate::infra::model::heads::Heads::load(dir.path(), 1).unwrap();
        let echo = Arc::new(Echo::default());
        let scorer = Scorer::start(
            Arc::clone(&echo) as Arc<dyn BatchModel>,
            Description::default(),
            HeadSet::new("test@1", heads),
            Limits {
                max_batch_messages: 4,
                max_batch_tokens: 1_000,
                linger: Duration::from_millis(1),
                max_queue: 16,
                max_wait: Duration::from_secs(5),
                cache_entries: 0,
            },
        );
        let moderator = moderator_with(scorer);
        // Held by the default link rules, which leaves the model (harsher) still wanted.
        let verdict = decide(
            &moderator,
            "u",
            "m1",
            "easy money: BIT.LY/x or cashflow.xyz/join",
        )
        .await;
        assert_eq!(verdict.decision, Decision::Hold, "{verdict:?}");
        decide(&moderator, "v", "m2", "good game everyone").await;
        let seen = echo.0.lock().unwrap().clone();
        assert_eq!(
            seen,
            [
                vec![1.0, 1.0, 0.0, 1.0, 1.0],
                vec![0.0; LinkSignals::INPUTS]
            ],
            "two links, one a risky TLD and one a shortener; then none"
        );
    }

    /// Stage one (run ahead, for the model) meets the same panic first: it leaves the message
    /// to stage two, which reports it once and holds the message.
    #[tokio::test]
    async fn a_panic_in_stage_one_is_left_to_stage_two() {
        // A model that failed to load is still wanted (its verdicts say degraded), so stage
        // one normalises and runs the rules without history.
        let scorer = Scorer::idle(
            ModelStatus::Failed(ModelFailure::Missing {
                dir: "models/none".into(),
            }),
            Description::default(),
        );
        let moderator = moderator_with(scorer);
        for text in [crate::fault::PANIC_TEXT, crate::fault::PANIC_PHRASE] {
            let message = message("u", text, text);
            let consult = moderator.consult(&message, Admission::FailFast).await;
            let consult = consult.expect("no queue to be full");
            let verdict = moderator
                .moderate_with(&message, consult, DecideOptions::default(), Instant::now())
                .await;
            assert!(
                verdict.degraded.contains(&Degraded::Decision),
                "{verdict:?}"
            );
        }
    }
}
