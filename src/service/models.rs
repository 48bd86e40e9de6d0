//! Head sets tried, compared and promoted while the service runs.
//!
//! The registry ([`crate::infra::model::registry`]) lists what can be served: the shipped
//! heads and every set under `model.registry_dir`. The database holds which set decides and
//! which is on trial (`model_rollouts`, one row per change). Every replica follows it as it
//! follows the rules: it applies its own change before the call answers, and the reload task
//! polls the latest revision every `rules.reload_interval_ms` for the others'. Applying a
//! change loads the sets it names (on the blocking pool) and swaps them into the scorer in one
//! step ([`crate::infra::inference::Scorer::set_lineup`]).
//!
//! A change is checked before it is written: its version is listed, its manifest reads, and
//! its weights load on this encoder. A stored change that cannot be applied here (a set
//! deleted from disk, a replica without the registry volume) is logged and counted
//! (`modbot_model_rollout_failures_total`, once per revision), `GetModelInfo` says why, and
//! the lineup in force is kept: no change can stop moderation. It is tried again on later
//! polls, after 1 s, 2 s, 4 s ... at most a minute apart, so a registry volume that mounts
//! late or a set copied back brings the change in without an admin re-issuing it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Mutex;

use crate::infra::inference::{HeadSet, SplitUnit, Trial, TrialMode};
use crate::infra::model::heads::Heads;
use crate::infra::model::registry::{self, RegistryEntry};
use crate::infra::store::{Store, StoreError, StoredRollout};
use crate::service::Services;
use crate::service::moderate::Moderator;

/// Why a model change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ModelAdminError {
    /// A request field is wrong.
    #[error("{field}: {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No head set of that version is listed.
    #[error("version: no head set `{0}` in the shipped heads or model.registry_dir")]
    UnknownVersion(String),
    /// The change cannot be made now; the text says why.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Another change was written first; nothing was written.
    #[error(
        "the model rollout changed while this change was made (now revision {0}); read it and retry"
    )]
    Conflict(u64),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A requested trial, as the edge parsed it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TrialRequest {
    /// Scored beside the active set, never enforced.
    Shadow,
    /// Decides for `share` of the `unit`s.
    Split {
        /// In `[0, 1]`.
        share: f64,
        /// Channels or users.
        unit: SplitUnit,
    },
}

/// The longest wait between two attempts at a rollout this replica could not apply.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// What this replica has applied.
#[derive(Debug, Default)]
struct Applied {
    /// The latest revision read, applied or not.
    seen: Option<u64>,
    /// When `seen` could not be applied: failed attempts so far and when to try again.
    retry: Option<(u32, Instant)>,
    /// The latest rollout read (in force here unless `problem` says why not).
    latest: StoredRollout,
    /// Why the latest stored rollout is not in force here ("" when it is).
    problem: String,
    /// Loaded sets by heads version.
    sets: HashMap<String, Arc<HeadSet>>,
}

/// This replica's link between the stored rollout and its scorer.
#[derive(Debug)]
pub struct ModelRollouts {
    store: Store,
    shipped_dir: PathBuf,
    registry_dir: PathBuf,
    /// The set loaded at start from `model.heads_dir` (possibly without heads).
    shipped: Arc<HeadSet>,
    /// The encoder's version and embedding size; `None` when no encoder runs.
    encoder: Option<(String, usize)>,
    /// Held across read, load and swap, so an older rollout can never replace a newer one.
    applied: Mutex<Applied>,
    /// The latest agreement with the rulings, by (candidate, active, the store's rulings
    /// written): a dashboard polling `GetModelInfo` joins the rulings with the audit log at
    /// most once per [`AGREEMENT_TTL`], or when this replica writes a ruling.
    agreement: Mutex<Option<AgreementRead>>,
}

/// An agreement with the rulings as read: when, for which versions and rulings, and what.
type AgreementRead = (Instant, (String, String, u64), RulingAgreement);

/// How long an agreement with the rulings is answered from memory.
const AGREEMENT_TTL: Duration = Duration::from_secs(5);

/// The rollout in force, as `GetModelInfo` and the changes answer it.
#[derive(Debug, Clone)]
pub struct RolloutView {
    /// As stored ("" versions resolved to the shipped set's version).
    pub rollout: StoredRollout,
    /// Why the stored rollout is not in force on this replica ("" when it is).
    pub problem: String,
}

impl ModelRollouts {
    /// The rollouts of a replica whose scorer serves `shipped` (the heads loaded at start).
    pub fn new(store: Store, config: &crate::config::ModelConfig, moderator: &Moderator) -> Self {
        let scorer = moderator.scorer();
        let running = matches!(
            *scorer.status().borrow(),
            crate::infra::inference::ModelStatus::Ready
                | crate::infra::inference::ModelStatus::NoHeads
        );
        let description = scorer.description();
        Self {
            store,
            shipped_dir: config.heads_dir.clone(),
            registry_dir: config.registry_dir.clone(),
            shipped: scorer.lineup().active.clone(),
            encoder: running.then(|| (description.version.clone(), description.embedding_dim)),
            applied: Mutex::new(Applied::default()),
            agreement: Mutex::new(None),
        }
    }

    /// The shipped set's heads version ("" without heads).
    fn shipped_version(&self) -> &str {
        &self.shipped.heads.version
    }

    /// What can be served: the shipped set and the registry.
    pub async fn list(&self) -> Vec<RegistryEntry> {
        let (shipped, registry) = (self.shipped_dir.clone(), self.registry_dir.clone());
        tokio::task::spawn_blocking(move || registry::list(&shipped, &registry))
            .await
            .unwrap_or_else(|panic| Err(crate::infra::model::ModelError::Input(panic.to_string())))
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "cannot list model.registry_dir");
                Vec::new()
            })
    }

    /// The latest stored rollout, and why it is not in force here, if it is not.
    pub async fn view(&self) -> RolloutView {
        let applied = self.applied.lock().await;
        RolloutView {
            rollout: self.resolved(&applied.latest),
            problem: applied.problem.clone(),
        }
    }

    /// `rollout` with "" (the shipped heads) spelled as the shipped version.
    fn resolved(&self, rollout: &StoredRollout) -> StoredRollout {
        let mut rollout = rollout.clone();
        for version in [&mut rollout.active, &mut rollout.previous] {
            if version.is_empty() {
                self.shipped_version().clone_into(version);
            }
        }
        rollout
    }

    /// Loads the set of `version` on the blocking pool (the shipped one is loaded already).
    async fn load(&self, version: &str) -> Result<Arc<HeadSet>, ModelAdminError> {
        if version.is_empty() || version == self.shipped_version() {
            return Ok(Arc::clone(&self.shipped));
        }
        let Some((encoder_version, dim)) = self.encoder.clone() else {
            return Err(ModelAdminError::FailedPrecondition(
                "no encoder is running on this replica (model.dir is empty or the model failed \
                 to load): there is nothing to serve heads on"
                    .to_owned(),
            ));
        };
        let entries = self.list().await;
        let entry = entries
            .into_iter()
            .find(|e| e.version == version)
            .ok_or_else(|| ModelAdminError::UnknownVersion(version.to_owned()))?;
        if !entry.problem.is_empty() {
            return Err(ModelAdminError::FailedPrecondition(format!(
                "head set {version} ({}) cannot be served: {}",
                entry.dir.display(),
                entry.problem
            )));
        }
        let dir = entry.dir.clone();
        let heads = tokio::task::spawn_blocking(move || Heads::load(&dir, dim))
            .await
            .map_err(|e| ModelAdminError::FailedPrecondition(format!("loading panicked: {e}")))?
            .map_err(|error| {
                ModelAdminError::FailedPrecondition(format!(
                    "head set {version} ({}) does not load on this encoder: {error}",
                    entry.dir.display()
                ))
            })?;
        if heads.is_empty() {
            return Err(ModelAdminError::FailedPrecondition(format!(
                "head set {version} ({}) has no heads",
                entry.dir.display()
            )));
        }
        Ok(Arc::new(HeadSet::new(&encoder_version, heads)))
    }

    /// Brings the scorer up to the stored rollout. `Ok(Some(revision))` when one was applied,
    /// `Ok(None)` when there was nothing new. A rollout that cannot be applied here is
    /// logged, counted and reported by `GetModelInfo`, and the lineup in force is kept.
    pub async fn refresh(&self, moderator: &Moderator) -> Result<Option<u64>, ModelAdminError> {
        let mut applied = self.applied.lock().await;
        let stored = self.store.rollout().await?;
        let failures = if applied.seen == Some(stored.revision) {
            match applied.retry {
                Some((failures, at)) if Instant::now() >= at => failures,
                _ => return Ok(None),
            }
        } else {
            0
        };
        applied.seen = Some(stored.revision);
        applied.retry = None;
        applied.latest = stored.clone();
        if self.encoder.is_none() {
            // Nothing to serve heads on: the rollout is recorded, not applied.
            return Ok(None);
        }
        match self.lineup_of(&stored, &mut applied.sets).await {
            Ok((active, trial)) => {
                moderator.scorer().set_lineup(active, trial);
                let keep = [&stored.active, &stored.candidate];
                applied.sets.retain(|version, _| keep.contains(&version));
                applied.problem.clear();
                tracing::info!(
                    revision = stored.revision,
                    active = %moderator.scorer().version(),
                    candidate = %stored.candidate,
                    mode = %stored.mode,
                    "model rollout applied"
                );
                metrics::gauge!("modbot_model_rollout_revision").set(stored.revision as f64);
                Ok(Some(stored.revision))
            }
            Err(error) => {
                if failures == 0 {
                    metrics::counter!("modbot_model_rollout_failures_total").increment(1);
                }
                let delay = Duration::from_secs(1u64 << failures.min(6)).min(MAX_RETRY_DELAY);
                applied.retry = Some((failures + 1, Instant::now() + delay));
                tracing::error!(
                    %error,
                    revision = stored.revision,
                    attempt = failures + 1,
                    retry_in_secs = delay.as_secs(),
                    "the stored model rollout cannot be applied here: keeping the heads in force"
                );
                applied.problem = format!("revision {} not applied: {error}", stored.revision);
                Err(error)
            }
        }
    }

    /// The set of `version`, from `sets` or loaded into it.
    async fn cached(
        &self,
        version: &str,
        sets: &mut HashMap<String, Arc<HeadSet>>,
    ) -> Result<Arc<HeadSet>, ModelAdminError> {
        if let Some(set) = sets.get(version) {
            return Ok(Arc::clone(set));
        }
        let set = self.load(version).await?;
        sets.insert(version.to_owned(), Arc::clone(&set));
        Ok(set)
    }

    /// The sets a rollout names, loaded (or taken from `sets`).
    async fn lineup_of(
        &self,
        rollout: &StoredRollout,
        sets: &mut HashMap<String, Arc<HeadSet>>,
    ) -> Result<(Arc<HeadSet>, Option<Trial>), ModelAdminError> {
        let active = self.cached(&rollout.active, sets).await?;
        let trial = match rollout.mode.as_str() {
            "shadow" | "split" if !rollout.candidate.is_empty() => {
                let candidate = self.cached(&rollout.candidate, sets).await?;
                let mode = if rollout.mode == "shadow" {
                    TrialMode::Shadow
                } else {
                    TrialMode::Split {
                        share: rollout.share.clamp(0.0, 1.0),
                        unit: SplitUnit::from_name(&rollout.unit).unwrap_or(SplitUnit::Channel),
                    }
                };
                Some(Trial { candidate, mode })
            }
            _ => None,
        };
        Ok((active, trial))
    }
}

/// `current` with no set on trial, as the change `change` leaves it.
fn without_trial(current: &StoredRollout, change: &str) -> StoredRollout {
    StoredRollout {
        candidate: String::new(),
        mode: "none".to_owned(),
        share: 0.0,
        change: change.to_owned(),
        ..current.clone()
    }
}

/// `by` as a change's author.
fn author(by: &str) -> String {
    if by.is_empty() {
        "unknown".to_owned()
    } else {
        by.to_owned()
    }
}

impl Services {
    /// Writes `next` (a change of `current`) and applies it here before answering.
    async fn write_rollout(
        &self,
        current: &StoredRollout,
        mut next: StoredRollout,
        by: &str,
        reason: &str,
    ) -> Result<RolloutView, ModelAdminError> {
        next.revision = current.revision + 1;
        next.changed_at = SystemTime::now();
        next.changed_by = author(by);
        next.reason = reason.to_owned();
        if self.store.write_rollout(&next).await?.is_none() {
            let now = self.store.rollout().await?.revision;
            return Err(ModelAdminError::Conflict(now));
        }
        tracing::info!(
            revision = next.revision,
            change = %next.change,
            active = %next.active,
            candidate = %next.candidate,
            mode = %next.mode,
            by = %next.changed_by,
            "model rollout changed"
        );
        if let Err(error) = self.models.refresh(&self.moderator).await {
            tracing::warn!(%error, "a model change was stored but could not be applied here yet");
        }
        Ok(self.models.view().await)
    }

    /// Puts the set of `version` on trial beside the active one (replacing any candidate).
    pub async fn try_model(
        &self,
        version: &str,
        request: TrialRequest,
        by: &str,
        reason: &str,
    ) -> Result<RolloutView, ModelAdminError> {
        if version.is_empty() {
            return Err(ModelAdminError::Invalid {
                field: "version",
                message: "is required".to_owned(),
            });
        }
        if let TrialRequest::Split { share, .. } = request
            && !(0.0..=1.0).contains(&share)
        {
            return Err(ModelAdminError::Invalid {
                field: "share",
                message: format!("{share} is outside [0, 1]"),
            });
        }
        let current = self.store.rollout().await?;
        let active = self.models.resolved(&current).active;
        if version == active {
            return Err(ModelAdminError::FailedPrecondition(format!(
                "head set {version} is the active one already"
            )));
        }
        // Checked before anything is written: a set that does not load is refused here.
        self.models.load(version).await?;
        let (mode, share, unit) = match request {
            TrialRequest::Shadow => ("shadow", 0.0, SplitUnit::Channel),
            TrialRequest::Split { share, unit } => ("split", share, unit),
        };
        let next = StoredRollout {
            candidate: version.to_owned(),
            mode: mode.to_owned(),
            share,
            unit: unit.as_str().to_owned(),
            change: "try".to_owned(),
            ..current.clone()
        };
        self.write_rollout(&current, next, by, reason).await
    }

    /// Ends the trial: the candidate is no longer scored.
    pub async fn end_model_trial(
        &self,
        by: &str,
        reason: &str,
    ) -> Result<RolloutView, ModelAdminError> {
        let current = self.store.rollout().await?;
        if current.candidate.is_empty() {
            return Err(ModelAdminError::FailedPrecondition(
                "no head set is on trial".to_owned(),
            ));
        }
        let next = without_trial(&current, "end");
        self.write_rollout(&current, next, by, reason).await
    }

    /// Makes the candidate, which must be `version`, the active set; the set it replaces is
    /// what a rollback restores.
    pub async fn promote_model(
        &self,
        version: &str,
        by: &str,
        reason: &str,
    ) -> Result<RolloutView, ModelAdminError> {
        if version.is_empty() {
            return Err(ModelAdminError::Invalid {
                field: "version",
                message: "is required (the candidate's version, so a stale screen cannot \
                          promote another)"
                    .to_owned(),
            });
        }
        let current = self.store.rollout().await?;
        if current.candidate != version {
            return Err(ModelAdminError::FailedPrecondition(
                if current.candidate.is_empty() {
                    format!("no head set is on trial; try {version} first (Admin.TryModel)")
                } else {
                    format!(
                        "{version} is not the candidate on trial ({}); only the candidate can be \
                     promoted",
                        current.candidate
                    )
                },
            ));
        }
        self.models.load(version).await?;
        let next = StoredRollout {
            active: version.to_owned(),
            previous: self.models.resolved(&current).active,
            ..without_trial(&current, "promote")
        };
        self.write_rollout(&current, next, by, reason).await
    }

    /// Makes the set active before the last promotion active again (and ends any trial).
    pub async fn rollback_model(
        &self,
        by: &str,
        reason: &str,
    ) -> Result<RolloutView, ModelAdminError> {
        let current = self.store.rollout().await?;
        let resolved = self.models.resolved(&current);
        if current.revision == 0 || resolved.previous == resolved.active {
            return Err(ModelAdminError::FailedPrecondition(
                "nothing to roll back to: no head set was promoted".to_owned(),
            ));
        }
        self.models.load(&resolved.previous).await?;
        let next = StoredRollout {
            active: resolved.previous.clone(),
            previous: resolved.active.clone(),
            ..without_trial(&current, "rollback")
        };
        self.write_rollout(&current, next, by, reason).await
    }
}

/// Rulings read at most to compare versions with the moderators.
pub const MAX_RULINGS_COMPARED: u32 = 10_000;

/// How two versions' decisions agreed with the moderators' rulings (review queue and appeals).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RulingAgreement {
    /// Messages both versions decided (one enforced, one compared) that a moderator ruled on.
    pub ruled: u64,
    /// Of them, how many the first version decided as the moderator ruled: it acted (held
    /// or harsher) on a message the moderator rejected, or allowed one the moderator approved.
    pub first_agreed: u64,
    /// The same for the second version.
    pub second_agreed: u64,
}

/// Whether a decision (by name) agrees with a ruling.
fn agrees(decision: &str, rejected: bool) -> bool {
    let acted = crate::domain::Decision::from_name(decision)
        .is_some_and(|d| d >= crate::domain::Decision::Hold);
    acted == rejected
}

/// [`RulingAgreement`] of `first` and `second` over `rulings`, newest first (each message
/// once: its latest ruling).
pub fn ruling_agreement(
    rulings: &[crate::infra::store::RuledTrial],
    first: &str,
    second: &str,
) -> RulingAgreement {
    let mut seen = std::collections::HashSet::new();
    let mut agreement = RulingAgreement::default();
    for ruled in rulings {
        let decision_of = |version: &str| {
            [&ruled.decided, &ruled.other]
                .into_iter()
                .find(|(v, _)| v == version)
                .map(|(_, d)| d.as_str())
        };
        let (Some(a), Some(b)) = (decision_of(first), decision_of(second)) else {
            continue;
        };
        if !seen.insert(ruled.message.as_str()) {
            continue;
        }
        agreement.ruled += 1;
        agreement.first_agreed += u64::from(agrees(a, ruled.rejected));
        agreement.second_agreed += u64::from(agrees(b, ruled.rejected));
    }
    agreement
}

impl Services {
    /// How the candidate (`candidate`) and the active set (`active`) agreed with the latest
    /// rulings on messages decided while it was on trial (fleet-wide: from the database).
    pub async fn ruling_agreement(
        &self,
        candidate: &str,
        active: &str,
    ) -> Result<RulingAgreement, StoreError> {
        // Read before the rulings, so a ruling written meanwhile makes the next call read.
        let key = (
            candidate.to_owned(),
            active.to_owned(),
            self.store.rulings_written(),
        );
        if let Some((at, cached_key, agreement)) = &*self.models.agreement.lock().await
            && *cached_key == key
            && at.elapsed() < AGREEMENT_TTL
        {
            return Ok(*agreement);
        }
        let rulings = self.store.ruled_trials(MAX_RULINGS_COMPARED).await?;
        let agreement = ruling_agreement(&rulings, candidate, active);
        *self.models.agreement.lock().await = Some((Instant::now(), key, agreement));
        Ok(agreement)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infra::store::RuledTrial;

    fn ruled(id: &str, rejected: bool, decided: (&str, &str), other: (&str, &str)) -> RuledTrial {
        RuledTrial {
            message: id.to_owned(),
            rejected,
            decided: (decided.0.to_owned(), decided.1.to_owned()),
            other: (other.0.to_owned(), other.1.to_owned()),
        }
    }

    #[test]
    fn each_side_agrees_when_it_acted_on_what_was_rejected_or_allowed_what_was_approved() {
        let rulings = [
            // Held by the active set, rejected: the candidate would have hidden it too.
            ruled("r1", true, ("a", "hold"), ("c", "hide")),
            // Held by the active set, approved: the candidate would have allowed it.
            ruled("r2", false, ("a", "hold"), ("c", "allow")),
            // Held by the candidate (a split), approved: the active set allowed it.
            ruled("r3", false, ("c", "hold"), ("a", "allow")),
            // The same message twice (reviewed, then its action appealed) counts once.
            ruled("r3", false, ("c", "hold"), ("a", "allow")),
            // Another trial's versions are not counted.
            ruled("r4", true, ("a", "hold"), ("x", "allow")),
        ];
        assert_eq!(
            ruling_agreement(&rulings, "c", "a"),
            RulingAgreement {
                ruled: 3,
                first_agreed: 2,
                second_agreed: 2,
            }
        );
    }
}
