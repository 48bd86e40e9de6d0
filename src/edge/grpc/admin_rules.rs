//! `Admin` rules and channel policies: converts and calls [`crate::service::rule_admin`], which
//! validates, stores and applies them.

use tonic::{Response, Status};

use super::rule_spec::{
    name, policy_error, policy_from_proto, policy_to_proto, rule_error, rule_from_proto,
    rule_to_proto,
};
use super::status::FieldError;
use crate::proto::*;
use crate::service::Services;
use crate::service::rule_admin::{BacktestError, RuleScope, RuleView, WriteError, corrupt};

/// A stored rule as the API shows it.
fn rule(view: &RuleView) -> Result<Rule, Status> {
    rule_to_proto(&view.spec, view.revision, view.updated_at)
        .map_err(|e| corrupt(&view.spec.id, e).into())
}

/// `ListRules`.
pub async fn list_rules(
    services: &Services,
    request: ListRulesRequest,
) -> Result<Response<ListRulesResponse>, Status> {
    let scope = if request.channel.is_empty() {
        RuleScope::Global
    } else {
        name(&request.channel, "channel")?;
        RuleScope::Channel {
            channel: &request.channel,
            include_global: request.include_global,
        }
    };
    let (views, revision) = services.list_rules(scope).await?;
    let rules = views.iter().map(rule).collect::<Result<_, _>>()?;
    Ok(Response::new(ListRulesResponse { rules, revision }))
}

/// `UpsertRule`.
pub async fn upsert_rule(
    services: &Services,
    request: UpsertRuleRequest,
    by: &str,
) -> Result<Response<Rule>, Status> {
    // Every error names the rule, as the caller knows it.
    let (spec, named) = requested_rule(request.rule)?;
    let kind = spec.kind.clone();
    match services.upsert_rule(spec, by).await {
        Ok(view) => Ok(Response::new(rule(&view)?)),
        Err(WriteError::Invalid(error)) => {
            let mut error = rule_error(error, &kind);
            error.message.push_str(&named);
            Err(error.into())
        }
        Err(WriteError::Store(error)) => Err(error.into()),
    }
}

/// The rule of an `UpsertRule` or `BacktestRule` request as a spec, every error naming the
/// rule as the caller knows it; and that name.
fn requested_rule(
    rule: Option<Rule>,
) -> Result<(crate::engine::rules::spec::RuleSpec, String), FieldError> {
    let proto = rule.ok_or_else(|| FieldError::new("rule", "is required"))?;
    let named = if proto.id.is_empty() {
        " (new rule)".to_owned()
    } else {
        format!(" (rule \"{}\")", proto.id)
    };
    let spec = rule_from_proto(proto).map_err(|mut e| {
        e.message.push_str(&named);
        e
    })?;
    Ok((spec, named))
}

/// `BacktestRule`.
pub async fn backtest_rule(
    services: &Services,
    request: BacktestRuleRequest,
) -> Result<Response<BacktestRuleResponse>, Status> {
    name(&request.channel, "channel")?;
    let (spec, named) = requested_rule(request.rule)?;
    let kind = spec.kind.clone();
    let last = usize::try_from(request.last).unwrap_or(usize::MAX);
    let backtest = match services.backtest_rule(spec, &request.channel, last).await {
        Ok(backtest) => backtest,
        Err(BacktestError::Invalid(error)) => {
            let mut error = rule_error(error, &kind);
            error.message.push_str(&named);
            return Err(error.into());
        }
        Err(error @ BacktestError::NotBacktestable(_)) => {
            return Err(Status::failed_precondition(error.to_string()));
        }
        Err(BacktestError::Store(error)) => return Err(error.into()),
        Err(error @ BacktestError::Failed(_)) => return Err(Status::internal(error.to_string())),
    };
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    Ok(Response::new(BacktestRuleResponse {
        searched: count(backtest.searched),
        matched: count(backtest.matched),
        allowed_before: count(backtest.allowed_before),
        failed: count(backtest.failed),
        since: backtest.since.map(prost_types::Timestamp::from),
        matches: backtest
            .matches
            .into_iter()
            .map(|found| {
                let allowed_before = found.allowed_before();
                let (decided, enforced) = found
                    .decided
                    .unwrap_or((crate::domain::Decision::Allow, false));
                BacktestMatch {
                    message_id: found.message.message_id,
                    user_id: found.message.user_id,
                    sent_at: Some(prost_types::Timestamp::from(
                        crate::domain::from_unix_millis(found.message.at_ms),
                    )),
                    text: found.message.text,
                    reason: Some(found.reason.into()),
                    decided: Decision::from(decided).into(),
                    enforced,
                    allowed_before,
                }
            })
            .collect(),
    }))
}

/// `DeleteRule`.
pub async fn delete_rule(
    services: &Services,
    request: DeleteRuleRequest,
    by: &str,
) -> Result<Response<DeleteRuleResponse>, Status> {
    name(&request.id, "id")?;
    if services.delete_rule(&request.id, by).await? {
        Ok(Response::new(DeleteRuleResponse {}))
    } else {
        Err(Status::not_found(format!(
            "rule \"{}\" does not exist",
            request.id
        )))
    }
}

/// `GetPolicy`.
pub async fn get_policy(
    services: &Services,
    request: GetPolicyRequest,
) -> Result<Response<Policy>, Status> {
    name(&request.channel, "channel")?;
    let view = services.policy(&request.channel).await?;
    Ok(Response::new(policy_to_proto(
        &request.channel,
        &view.spec,
        view.revision,
        view.updated_at,
        view.is_default,
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
    let view = match services.set_policy(&channel, spec, by).await {
        Ok(view) => view,
        Err(WriteError::Invalid(error)) => return Err(policy_error(error).into()),
        Err(WriteError::Store(error)) => return Err(error.into()),
    };
    Ok(Response::new(policy_to_proto(
        &channel,
        &view.spec,
        view.revision,
        view.updated_at,
        view.is_default,
    )))
}
