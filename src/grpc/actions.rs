//! `modbot.v1.Actions`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::app::App;
use crate::proto::actions_server::Actions;
use crate::proto::*;

/// Records and carries out moderation actions.
#[derive(Debug, Clone)]
pub struct ActionsService {
    app: Arc<App>,
}

impl ActionsService {
    /// The service over the shared application state.
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl Actions for ActionsService {
    async fn execute_action(
        &self,
        _: Request<ExecuteActionRequest>,
    ) -> Result<Response<ExecuteActionResponse>, Status> {
        let _ = &self.app;
        Err(Status::unimplemented("ExecuteAction: being built"))
    }
    async fn get_action(&self, _: Request<GetActionRequest>) -> Result<Response<Action>, Status> {
        Err(Status::unimplemented("GetAction: being built"))
    }
    async fn list_actions(
        &self,
        _: Request<ListActionsRequest>,
    ) -> Result<Response<ListActionsResponse>, Status> {
        Err(Status::unimplemented("ListActions: being built"))
    }
}
