//! `Review`: the review queue of held messages. Converts and calls [`crate::service::review`].

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::actions::{
    action_kind, fingerprint, mute_duration, optional_enum, page_after, page_size, page_token,
};
use super::auth::{Principal, principal_name};
use super::convert::{duration_field, id_field, optional_id, text_field, timestamp_field};
use super::status::FieldError;
use crate::config::Role;
use crate::domain::{self, ReviewFilter};
use crate::proto::review_server::Review;
use crate::proto::*;
use crate::service::Services;
use crate::service::review::{MAX_WATCH_BACKLOG, ReviewDecision, ReviewRuling, WatchFilter};

/// Longest note a moderator may attach.
const MAX_NOTE_CHARS: usize = 2000;
/// Longest label of a rejection.
const MAX_LABEL_CHARS: usize = 64;
/// Settled items a slow watcher may fall behind by before its stream waits.
const WATCH_BUFFER: usize = 256;

/// The `Review` service.
#[derive(Debug)]
pub struct ReviewService {
    services: Arc<Services>,
}

impl ReviewService {
    /// The service over the shared services.
    pub fn new(services: Arc<Services>) -> Self {
        Self { services }
    }
}

/// The credential a classifier-only caller is limited to: it sees only the items its own calls
/// held. `None` (everything) for moderators, admins and servers without tokens.
fn own_items_only<T>(request: &Request<T>) -> Option<String> {
    let principal = request.extensions().get::<Principal>()?;
    if principal.roles.contains(Role::Moderator) || principal.roles.contains(Role::Admin) {
        None
    } else {
        Some(principal.name.clone())
    }
}

fn review_status(value: i32) -> Option<domain::ReviewStatus> {
    Some(match ReviewStatus::try_from(value).ok()? {
        ReviewStatus::Unspecified => return None,
        ReviewStatus::Pending => domain::ReviewStatus::Pending,
        ReviewStatus::Approved => domain::ReviewStatus::Approved,
        ReviewStatus::Rejected => domain::ReviewStatus::Rejected,
        ReviewStatus::Expired => domain::ReviewStatus::Expired,
    })
}

#[tonic::async_trait]
impl Review for ReviewService {
    async fn list_reviews(
        &self,
        request: Request<ListReviewsRequest>,
    ) -> Result<Response<ListReviewsResponse>, Status> {
        let request = request.into_inner();
        let filter = ReviewFilter {
            channel: optional_id(request.channel, "channel")?,
            status: optional_enum(request.status, "status", review_status)?,
            user_id: optional_id(request.user_id, "user_id")?,
        };
        let limit = page_size(request.page_size)?;
        let fingerprint = fingerprint(&format!("review {filter:?}"));
        let after = page_after(&request.page_token, &fingerprint)?;
        let page = self
            .services
            .reviews(&filter, after.as_ref(), limit)
            .await?;
        Ok(Response::new(ListReviewsResponse {
            items: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page_token(page.next, &fingerprint),
        }))
    }

    async fn get_review(
        &self,
        request: Request<GetReviewRequest>,
    ) -> Result<Response<ReviewItem>, Status> {
        let own = own_items_only(&request);
        let id = id_field(request.into_inner().id, "id")?;
        match self.services.review(&id).await? {
            Some(item) if own.as_ref().is_none_or(|o| *o == item.requested_by) => {
                Ok(Response::new(item.into()))
            }
            // Another caller's item is as unknown as a missing one.
            _ => Err(Status::not_found(format!("no review item `{id}`"))),
        }
    }

    async fn resolve_review(
        &self,
        request: Request<ResolveReviewRequest>,
    ) -> Result<Response<ResolveReviewResponse>, Status> {
        let requested_by = principal_name(&request);
        let ruling = ruling(request.into_inner(), requested_by)?;
        let (item, action) = self.services.rule_review(ruling).await?;
        Ok(Response::new(ResolveReviewResponse {
            item: Some(item.into()),
            action: action.map(Into::into),
        }))
    }

    type WatchReviewsStream = super::WatchStream<ReviewItem>;

    async fn watch_reviews(
        &self,
        request: Request<WatchReviewsRequest>,
    ) -> Result<Response<Self::WatchReviewsStream>, Status> {
        let own = own_items_only(&request);
        let request = request.into_inner();
        let channel = optional_id(request.channel, "channel")?;
        let since = timestamp_field(request.since, "since")?;
        if let Some(since) = since {
            let now = SystemTime::now();
            if since > now {
                return Err(FieldError::new("since", "is in the future").into());
            }
            if now.duration_since(since).unwrap_or_default() > MAX_WATCH_BACKLOG {
                return Err(FieldError::new("since", "is more than 7 days ago").into());
            }
        }
        let filter = WatchFilter {
            channel,
            requested_by: own,
            since,
        };
        let (items_tx, items_rx) = mpsc::channel(WATCH_BUFFER);
        tokio::spawn(Arc::clone(&self.services).watch_reviews(filter, items_tx));
        // Converted as the client reads: when it goes, the receiver goes with the stream and
        // the watch ends at once (a converter task would hold the receiver until its next item).
        let items =
            ReceiverStream::new(items_rx).map(|item| item.map(Into::into).map_err(Status::from));
        Ok(Response::new(Box::pin(items)))
    }
}

/// Validates a `ResolveReview` request.
fn ruling(request: ResolveReviewRequest, requested_by: String) -> Result<ReviewRuling, FieldError> {
    let id = id_field(request.id, "id")?;
    let moderator = id_field(request.moderator, "moderator")?;
    let note = text_field(request.note, "note", MAX_NOTE_CHARS)?;
    let decision = match crate::proto::ReviewRuling::try_from(request.ruling) {
        Ok(crate::proto::ReviewRuling::Approve) => {
            if request.action != 0 {
                return Err(FieldError::new("action", "is only for REJECT"));
            }
            if request.duration.is_some() {
                return Err(FieldError::new("duration", "is only for REJECT"));
            }
            ReviewDecision::Approve
        }
        Ok(crate::proto::ReviewRuling::Reject) => {
            let kind = action_kind(request.action)
                .ok_or_else(|| FieldError::new("action", "is required (HIDE, TIMEOUT or BAN)"))?;
            let duration = duration_field(request.duration, "duration")?;
            let duration = match kind {
                domain::ActionKind::Hide => {
                    if duration.is_some() {
                        return Err(FieldError::new("duration", "is not for HIDE"));
                    }
                    None
                }
                domain::ActionKind::Timeout => Some(mute_duration(
                    duration
                        .ok_or_else(|| FieldError::new("duration", "is required for TIMEOUT"))?,
                    "duration",
                )?),
                domain::ActionKind::Ban => duration
                    .map(|d| {
                        if d.as_secs() == 0 {
                            Err(FieldError::new("duration", "must be at least 1 second"))
                        } else {
                            Ok(d.min(super::actions::MAX_BAN))
                        }
                    })
                    .transpose()?,
                other => {
                    return Err(FieldError::new(
                        "action",
                        format!(
                            "`{}` cannot reject a message (HIDE, TIMEOUT or BAN)",
                            other.as_str()
                        ),
                    ));
                }
            };
            let label = text_field(request.label, "label", MAX_LABEL_CHARS)?;
            if label.trim().is_empty() {
                return Err(FieldError::new(
                    "label",
                    "is required for REJECT (what the message is, e.g. `spam/spam`)",
                ));
            }
            ReviewDecision::Reject {
                kind,
                duration,
                label: label.trim().to_owned(),
            }
        }
        _ => {
            return Err(FieldError::new("ruling", "is required (APPROVE or REJECT)"));
        }
    };
    Ok(ReviewRuling {
        id,
        ruling: decision,
        moderator,
        note,
        requested_by,
    })
}
