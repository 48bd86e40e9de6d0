//! `Admin` rules and channel policies: stored in the database, validated on write, versioned.

use tonic::{Response, Status};

use crate::app::App;
use crate::proto::*;

/// `ListRules`.
pub async fn list_rules(
    _app: &App,
    _request: ListRulesRequest,
) -> Result<Response<ListRulesResponse>, Status> {
    Err(Status::unimplemented(
        "ListRules: rule storage is being built",
    ))
}

/// `UpsertRule`.
pub async fn upsert_rule(
    _app: &App,
    _request: UpsertRuleRequest,
) -> Result<Response<Rule>, Status> {
    Err(Status::unimplemented(
        "UpsertRule: rule storage is being built",
    ))
}

/// `DeleteRule`.
pub async fn delete_rule(
    _app: &App,
    _request: DeleteRuleRequest,
) -> Result<Response<DeleteRuleResponse>, Status> {
    Err(Status::unimplemented(
        "DeleteRule: rule storage is being built",
    ))
}

/// `GetPolicy`.
pub async fn get_policy(
    _app: &App,
    _request: GetPolicyRequest,
) -> Result<Response<Policy>, Status> {
    Err(Status::unimplemented(
        "GetPolicy: policy storage is being built",
    ))
}

/// `SetPolicy`.
pub async fn set_policy(
    _app: &App,
    _request: SetPolicyRequest,
) -> Result<Response<Policy>, Status> {
    Err(Status::unimplemented(
        "SetPolicy: policy storage is being built",
    ))
}
