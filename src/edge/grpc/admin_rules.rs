//! `Admin` rules and channel policies: stored in the database, validated on write, versioned.
//!
//! Every write is checked whole before anything is written (a rejected request leaves the
//! revision where it was), stored as a new revision, and applied on this replica before the
//! call answers; other replicas pick it up through their reload task
//! ([`crate::service::ruleset::reload_task`]).

use tonic::{Response, Status};

use super::rule_spec::{
    name, policy_error, policy_from_proto, policy_to_proto, rule_error, rule_from_proto,
    rule_to_proto,
};
use super::status::FieldError;
use crate::engine::rules::DEFAULT_POLICY;
use crate::engine::rules::spec::{PolicySpec, RuleSpec};
use crate::infra::store::StoreError;
use crate::proto::*;
use crate::service::Services;

/// Who the stored rows say made a change when the caller's credential has no name (a server
/// running without tokens); otherwise the token's name is recorded.
const API_AUTHOR: &str = "admin-api";

fn author(by: &str) -> &str {
    if by.is_empty() { API_AUTHOR } else { by }
}

/// A stored spec that no longer reads: the database is not what modbot wrote.
fn corrupt(id: &str, error: crate::engine::rules::RulesError) -> StoreError {
    StoreError::Corrupt {
        id: id.to_owned(),
        message: error.to_string(),
    }
}

/// Applies this replica's own change before the call answers. A failure does not undo the
/// stored change: it is logged (and, for a rule set that does not compile, counted) and the
/// reload task tries again at the next revision.
async fn apply(services: &Services) {
    if let Err(error) = services.rules.refresh(&services.moderator).await {
        tracing::warn!(%error, "a rule change was stored but could not be applied here yet");
    }
}

/// `ListRules`.
pub async fn list_rules(
    services: &Services,
    request: ListRulesRequest,
) -> Result<Response<ListRulesResponse>, Status> {
    if !request.channel.is_empty() {
        name(&request.channel, "channel")?;
    }
    let stored = services.store.load_ruleset().await?;
    let mut rules = Vec::new();
    for row in &stored.rules {
        let spec = RuleSpec::from_toml(&row.spec, &format!("stored rule \"{}\"", row.id))
            .map_err(|e| corrupt(&row.id, e))?;
        let listed = if request.channel.is_empty() {
            spec.channels.is_empty()
        } else {
            spec.channels.contains(&request.channel)
                || (request.include_global && spec.channels.is_empty())
        };
        if listed {
            rules.push(
                rule_to_proto(&spec, row.revision, row.updated_at)
                    .map_err(|e| corrupt(&row.id, e))?,
            );
        }
    }
    // The store reads rules by id already; sorting here keeps the contract whatever the
    // database's collation.
    rules.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Response::new(ListRulesResponse {
        rules,
        revision: stored.revision,
    }))
}

/// `UpsertRule`.
pub async fn upsert_rule(
    services: &Services,
    request: UpsertRuleRequest,
    by: &str,
) -> Result<Response<Rule>, Status> {
    let rule = request
        .rule
        .ok_or_else(|| FieldError::new("rule", "is required"))?;
    // Every error names the rule, as the caller knows it.
    let named = if rule.id.is_empty() {
        " (new rule)".to_owned()
    } else {
        format!(" (rule \"{}\")", rule.id)
    };
    let mut spec = rule_from_proto(rule).map_err(|mut e| {
        e.message.push_str(&named);
        e
    })?;
    if spec.id.is_empty() {
        spec.id = uuid::Uuid::now_v7().to_string();
    }
    let kind = spec.kind.clone();
    let invalid = |error| {
        let mut error = rule_error(error, &kind);
        error.message.push_str(&named);
        error
    };
    spec.validate().map_err(invalid)?;
    spec.make_params_explicit().map_err(invalid)?;
    let text = spec.to_toml().map_err(invalid)?;
    let stored = services
        .store
        .upsert_rule(&spec.id, &text, author(by))
        .await?;
    apply(services).await;
    let rule = rule_to_proto(&spec, stored.revision, stored.updated_at)
        .map_err(|e| corrupt(&spec.id, e))?;
    Ok(Response::new(rule))
}

/// `DeleteRule`.
pub async fn delete_rule(
    services: &Services,
    request: DeleteRuleRequest,
    by: &str,
) -> Result<Response<DeleteRuleResponse>, Status> {
    name(&request.id, "id")?;
    match services.store.delete_rule(&request.id, author(by)).await? {
        Some(_) => {
            apply(services).await;
            Ok(Response::new(DeleteRuleResponse {}))
        }
        None => Err(Status::not_found(format!(
            "rule \"{}\" does not exist",
            request.id
        ))),
    }
}

/// `GetPolicy`.
pub async fn get_policy(
    services: &Services,
    request: GetPolicyRequest,
) -> Result<Response<Policy>, Status> {
    name(&request.channel, "channel")?;
    let (stored, is_default) = match services.store.stored_policy(&request.channel).await? {
        Some(own) => (own, request.channel == DEFAULT_POLICY),
        None => {
            let default = services
                .store
                .stored_policy(DEFAULT_POLICY)
                .await?
                .ok_or_else(|| StoreError::Corrupt {
                    id: DEFAULT_POLICY.to_owned(),
                    message: "the default policy is missing".to_owned(),
                })?;
            (default, true)
        }
    };
    let spec = PolicySpec::from_toml(
        &stored.spec,
        &format!("stored policy \"{}\"", stored.channel),
    )
    .map_err(|e| corrupt(&stored.channel, e))?;
    Ok(Response::new(policy_to_proto(
        &request.channel,
        &spec,
        stored.revision,
        stored.updated_at,
        is_default,
    )))
}

/// `SetPolicy`.
pub async fn set_policy(
    services: &Services,
    request: SetPolicyRequest,
    by: &str,
) -> Result<Response<Policy>, Status> {
    let policy = request
        .policy
        .ok_or_else(|| FieldError::new("policy", "is required"))?;
    let (channel, spec) = policy_from_proto(policy)?;
    spec.validate(&channel).map_err(policy_error)?;
    let text = spec.to_toml().map_err(policy_error)?;
    let stored = services
        .store
        .set_policy(&channel, &text, author(by))
        .await?;
    apply(services).await;
    Ok(Response::new(policy_to_proto(
        &channel,
        &spec,
        stored.revision,
        stored.updated_at,
        channel == DEFAULT_POLICY,
    )))
}
