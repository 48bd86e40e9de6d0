//! `modbot.v1.Appeals`: a user contests an action; a moderator upholds or overturns it.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::actions::{fingerprint, optional_enum, page_after, page_size, page_token};
use super::auth::principal_name;
use super::convert::{id_field, optional_id, text_field};
use super::status::FieldError;
use crate::domain;
use crate::domain::AppealFilter;
use crate::proto::appeals_server::Appeals;
use crate::proto::*;
use crate::service::Services;
use crate::service::actions::workflow::{self, FileAppeal, Ruling};

/// Longest appeal statement, in characters.
const MAX_APPEAL_CHARS: usize = 2000;
/// Longest moderator's note, in characters.
const MAX_NOTE_CHARS: usize = 2000;

/// Files and resolves appeals.
#[derive(Debug, Clone)]
pub struct AppealsService {
    services: Arc<Services>,
}

impl AppealsService {
    /// The service over the shared application state.
    pub fn new(services: Arc<Services>) -> Self {
        Self { services }
    }
}

#[tonic::async_trait]
impl Appeals for AppealsService {
    async fn file_appeal(
        &self,
        request: Request<FileAppealRequest>,
    ) -> Result<Response<Appeal>, Status> {
        let request = request.into_inner();
        let request = FileAppeal {
            action_id: id_field(request.action_id, "action_id")?,
            user_id: id_field(request.user_id, "user_id")?,
            text: text_field(request.text, "text", MAX_APPEAL_CHARS)?,
        };
        let appeal = workflow::file_appeal(&self.services.dispatcher, request).await?;
        Ok(Response::new(appeal.into()))
    }

    async fn get_appeal(
        &self,
        request: Request<GetAppealRequest>,
    ) -> Result<Response<Appeal>, Status> {
        let id = id_field(request.into_inner().id, "id")?;
        match self.services.appeal(&id).await? {
            Some(appeal) => Ok(Response::new(appeal.into())),
            None => Err(Status::not_found(format!("no appeal `{id}`"))),
        }
    }

    async fn list_appeals(
        &self,
        request: Request<ListAppealsRequest>,
    ) -> Result<Response<ListAppealsResponse>, Status> {
        let request = request.into_inner();
        let filter = AppealFilter {
            channel: optional_id(request.channel, "channel")?,
            status: optional_enum(request.status, "status", appeal_status)?,
            user_id: optional_id(request.user_id, "user_id")?,
        };
        let limit = page_size(request.page_size)?;
        let fingerprint = fingerprint(&format!("{filter:?}"));
        let after = page_after(&request.page_token, &fingerprint)?;
        let page = self
            .services
            .appeals(&filter, after.as_ref(), limit)
            .await?;
        Ok(Response::new(ListAppealsResponse {
            appeals: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page_token(page.next, &fingerprint),
        }))
    }

    async fn resolve_appeal(
        &self,
        request: Request<ResolveAppealRequest>,
    ) -> Result<Response<ResolveAppealResponse>, Status> {
        let requested_by = principal_name(&request);
        let request = request.into_inner();
        let appeal_id = id_field(request.id, "id")?;
        let overturn = match AppealResolution::try_from(request.resolution) {
            Ok(AppealResolution::Uphold) => false,
            Ok(AppealResolution::Overturn) => true,
            _ => {
                return Err(
                    FieldError::new("resolution", "is required (uphold or overturn)").into(),
                );
            }
        };
        let ruling = Ruling {
            appeal_id,
            overturn,
            moderator: id_field(request.moderator, "moderator")?,
            note: text_field(request.note, "note", MAX_NOTE_CHARS)?,
            requested_by,
        };
        let (appeal, reversal) =
            workflow::resolve_appeal(&self.services.dispatcher, &self.services.moderator, ruling)
                .await?;
        Ok(Response::new(ResolveAppealResponse {
            appeal: Some(appeal.into()),
            reversal: reversal.map(Into::into),
        }))
    }
}

fn appeal_status(value: i32) -> Option<domain::AppealStatus> {
    Some(match AppealStatus::try_from(value).ok()? {
        AppealStatus::Unspecified => return None,
        AppealStatus::Open => domain::AppealStatus::Open,
        AppealStatus::Upheld => domain::AppealStatus::Upheld,
        AppealStatus::Overturned => domain::AppealStatus::Overturned,
    })
}
