//! `modbot.v1.Appeals`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::app::App;
use crate::proto::appeals_server::Appeals;
use crate::proto::*;

/// Files and resolves appeals.
#[derive(Debug, Clone)]
pub struct AppealsService {
    app: Arc<App>,
}

impl AppealsService {
    /// The service over the shared application state.
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl Appeals for AppealsService {
    async fn file_appeal(&self, _: Request<FileAppealRequest>) -> Result<Response<Appeal>, Status> {
        let _ = &self.app;
        Err(Status::unimplemented("FileAppeal: being built"))
    }
    async fn get_appeal(&self, _: Request<GetAppealRequest>) -> Result<Response<Appeal>, Status> {
        Err(Status::unimplemented("GetAppeal: being built"))
    }
    async fn list_appeals(
        &self,
        _: Request<ListAppealsRequest>,
    ) -> Result<Response<ListAppealsResponse>, Status> {
        Err(Status::unimplemented("ListAppeals: being built"))
    }
    async fn resolve_appeal(
        &self,
        _: Request<ResolveAppealRequest>,
    ) -> Result<Response<ResolveAppealResponse>, Status> {
        Err(Status::unimplemented("ResolveAppeal: being built"))
    }
}
