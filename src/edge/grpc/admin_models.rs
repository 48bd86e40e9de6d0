//! `modbot.v1.Admin`'s model calls: what is loaded and on trial (`GetModelInfo`), what could
//! be (`ListModelVersions`), and the changes (`TryModel`, `EndModelTrial`, `PromoteModel`,
//! `RollbackModel`), converted to and from `service::models`.

use tonic::Status;

use super::convert::{id_field, text_field};
use super::status::FieldError;
use crate::infra::inference::{HeadSet, ModelStatus, SplitUnit as Unit};
use crate::infra::model::heads::Head;
use crate::infra::model::registry::{HeadSummary, RegistryEntry};
use crate::proto::*;
use crate::service::Services;
use crate::service::models::{ModelAdminError, RolloutView, TrialRequest};

/// Longest reason, in characters.
const MAX_REASON_CHARS: usize = 500;

impl From<ModelAdminError> for Status {
    fn from(error: ModelAdminError) -> Self {
        match error {
            ModelAdminError::Invalid { field, message } => FieldError::new(field, message).into(),
            ModelAdminError::UnknownVersion(_) => Status::not_found(error.to_string()),
            ModelAdminError::FailedPrecondition(message) => Status::failed_precondition(message),
            ModelAdminError::Conflict(_) => Status::aborted(error.to_string()),
            ModelAdminError::Store(error) => error.into(),
        }
    }
}

fn head(h: &Head) -> ModelHead {
    summary_head(&HeadSummary::of(h))
}

fn summary_head(h: &HeadSummary) -> ModelHead {
    ModelHead {
        name: h.name.clone(),
        labels: h.labels.clone(),
        multi_label: h.multi_label,
        thresholds: h.thresholds.clone().into_iter().collect(),
        version: h.version.clone(),
        metrics: h.metrics.clone().into_iter().collect(),
    }
}

fn data_sha256(heads: &[HeadSummary]) -> std::collections::HashMap<String, String> {
    heads
        .iter()
        .flat_map(|h| {
            h.data_sha256.iter().map(move |(label, sha)| {
                let key = if *label == h.name {
                    h.name.clone()
                } else {
                    format!("{}/{label}", h.name)
                };
                (key, sha.clone())
            })
        })
        .collect()
}

fn mode(name: &str) -> TrialMode {
    match name {
        "shadow" => TrialMode::Shadow,
        "split" => TrialMode::Split,
        _ => TrialMode::Unspecified,
    }
}

fn unit(name: &str) -> SplitUnit {
    match Unit::from_name(name) {
        Some(Unit::User) => SplitUnit::User,
        Some(Unit::Channel) => SplitUnit::Channel,
        None => SplitUnit::Unspecified,
    }
}

fn rollout(view: RolloutView) -> ModelRollout {
    let r = view.rollout;
    let trial = r.mode != "none" && !r.candidate.is_empty();
    ModelRollout {
        revision: r.revision,
        active: r.active,
        previous: r.previous,
        candidate: r.candidate,
        mode: mode(&r.mode).into(),
        share: if r.mode == "split" { r.share } else { 0.0 },
        unit: if r.mode == "split" && trial {
            unit(&r.unit).into()
        } else {
            SplitUnit::Unspecified.into()
        },
        change: r.change,
        reason: r.reason,
        changed_by: r.changed_by,
        changed_at: (r.revision > 0).then(|| r.changed_at.into()),
        problem: view.problem,
    }
}

/// `GetModelInfo`.
pub async fn get_model_info(services: &Services) -> ModelInfo {
    let scorer = services.moderator.scorer();
    let status = scorer.status().borrow().clone();
    let d = scorer.description();
    let lineup = scorer.lineup();
    let view = services.models.view().await;
    let (candidate, trial) = match &lineup.trial {
        Some(trial) => {
            let set: &HeadSet = &trial.candidate;
            let counts = services.moderator.trials().counts(&set.version);
            // A database that does not answer costs the rulings' part, never the call.
            let rulings = services
                .ruling_agreement(&set.version, &lineup.active.version)
                .await
                .unwrap_or_else(|error| {
                    tracing::warn!(%error, "cannot compare the trial with the rulings");
                    Default::default()
                });
            let by_decision = |counts: &[u64; 6]| {
                crate::domain::Decision::ALL
                    .iter()
                    .zip(counts)
                    .filter(|(_, n)| **n > 0)
                    .map(|(d, n)| (d.as_str().to_owned(), *n))
                    .collect()
            };
            (
                Some(ModelVersion {
                    version: set.heads.version.clone(),
                    encoder: set.heads.encoder.clone(),
                    heads: set.heads.heads().iter().map(head).collect(),
                    candidate: true,
                    ..ModelVersion::default()
                }),
                Some(ModelTrial {
                    version: set.heads.version.clone(),
                    compared: counts.compared,
                    agreed: counts.agreed,
                    candidate_stricter: counts.candidate_stricter,
                    candidate_laxer: counts.candidate_laxer,
                    decided_by_candidate: counts.decided_by_candidate,
                    candidate_decisions: by_decision(&counts.candidate_decisions),
                    active_decisions: by_decision(&counts.active_decisions),
                    ruled: rulings.ruled,
                    candidate_agreed_with_rulings: rulings.first_agreed,
                    active_agreed_with_rulings: rulings.second_agreed,
                }),
            )
        }
        None => (None, None),
    };
    ModelInfo {
        loaded: matches!(status, ModelStatus::Ready | ModelStatus::NoHeads),
        encoder: d.encoder.clone(),
        version: lineup.active.version.clone(),
        device: d.device.clone(),
        embedding_dim: u32::try_from(d.embedding_dim).unwrap_or(u32::MAX),
        max_sequence_length: u32::try_from(d.max_tokens).unwrap_or(u32::MAX),
        heads: lineup.active.heads.heads().iter().map(head).collect(),
        status_detail: status.detail(),
        rollout: Some(rollout(view)),
        candidate,
        trial,
    }
}

/// `ListModelVersions`.
pub async fn list_model_versions(services: &Services) -> ListModelVersionsResponse {
    let lineup = services.moderator.scorer().lineup();
    let active = &lineup.active.heads.version;
    let candidate = lineup.trial.as_ref().map(|t| &t.candidate.heads.version);
    let entries: Vec<RegistryEntry> = services.models.list().await;
    ListModelVersionsResponse {
        versions: entries
            .into_iter()
            .map(|e| ModelVersion {
                active: !e.version.is_empty() && e.version == *active,
                candidate: !e.version.is_empty() && Some(&e.version) == candidate,
                data_sha256: data_sha256(&e.heads),
                heads: e.heads.iter().map(summary_head).collect(),
                version: e.version,
                dir: e.dir.display().to_string(),
                shipped: e.shipped,
                encoder: e.encoder,
                problem: e.problem,
            })
            .collect(),
    }
}

fn reason(value: String) -> Result<String, FieldError> {
    text_field(value, "reason", MAX_REASON_CHARS)
}

/// `TryModel`.
pub async fn try_model(
    services: &Services,
    request: TryModelRequest,
    by: &str,
) -> Result<ModelRollout, Status> {
    let version = id_field(request.version, "version")?;
    let trial = match TrialMode::try_from(request.mode) {
        Ok(TrialMode::Shadow) => TrialRequest::Shadow,
        Ok(TrialMode::Split) => TrialRequest::Split {
            share: request.share,
            unit: match SplitUnit::try_from(request.unit) {
                Ok(SplitUnit::Unspecified | SplitUnit::Channel) => Unit::Channel,
                Ok(SplitUnit::User) => Unit::User,
                Err(_) => {
                    return Err(FieldError::new("unit", "is not a known split unit").into());
                }
            },
        },
        _ => {
            return Err(
                FieldError::new("mode", "must be TRIAL_MODE_SHADOW or TRIAL_MODE_SPLIT").into(),
            );
        }
    };
    if !matches!(trial, TrialRequest::Split { .. }) && request.share != 0.0 {
        return Err(FieldError::new("share", "is only for TRIAL_MODE_SPLIT").into());
    }
    let reason = reason(request.reason)?;
    Ok(rollout(
        services.try_model(&version, trial, by, &reason).await?,
    ))
}

/// `EndModelTrial`.
pub async fn end_model_trial(
    services: &Services,
    request: EndModelTrialRequest,
    by: &str,
) -> Result<ModelRollout, Status> {
    let reason = reason(request.reason)?;
    Ok(rollout(services.end_model_trial(by, &reason).await?))
}

/// `PromoteModel`.
pub async fn promote_model(
    services: &Services,
    request: PromoteModelRequest,
    by: &str,
) -> Result<ModelRollout, Status> {
    let version = id_field(request.version, "version")?;
    let reason = reason(request.reason)?;
    Ok(rollout(
        services.promote_model(&version, by, &reason).await?,
    ))
}

/// `RollbackModel`.
pub async fn rollback_model(
    services: &Services,
    request: RollbackModelRequest,
    by: &str,
) -> Result<ModelRollout, Status> {
    let reason = reason(request.reason)?;
    Ok(rollout(services.rollback_model(by, &reason).await?))
}
