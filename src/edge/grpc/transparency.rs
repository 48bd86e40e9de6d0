//! `Transparency`: a channel's public moderation log. Converts and calls
//! [`crate::service::transparency`]; open to everyone (`auth::OPEN_SERVICES`), so it answers
//! only for channels whose policy made their log public, and `NOT_FOUND` alike for the others
//! and for channels that do not exist.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::rule_spec::name;
use crate::proto::transparency_server::Transparency;
use crate::proto::*;
use crate::service::Services;

/// The `Transparency` service.
#[derive(Debug)]
pub struct TransparencyService {
    services: Arc<Services>,
}

impl TransparencyService {
    /// The service over the shared services.
    pub fn new(services: Arc<Services>) -> Self {
        Self { services }
    }
}

#[tonic::async_trait]
impl Transparency for TransparencyService {
    async fn get_public_log(
        &self,
        request: Request<GetPublicLogRequest>,
    ) -> Result<Response<PublicLog>, Status> {
        let channel = request.into_inner().channel;
        name(&channel, "channel")?;
        let Some(log) = self.services.public_log(&channel).await? else {
            return Err(Status::not_found(format!(
                "channel \"{channel}\" has no public moderation log"
            )));
        };
        let count = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        let counts = |counts: &[crate::service::transparency::Count]| {
            counts
                .iter()
                .map(|c| PublicCount {
                    name: c.name.clone(),
                    count: c.count,
                })
                .collect()
        };
        let at = |ms| {
            Some(prost_types::Timestamp::from(
                crate::domain::from_unix_millis(ms),
            ))
        };
        Ok(Response::new(PublicLog {
            channel: log.channel.clone(),
            generated_at: at(log.generated_at_ms),
            window_days: count(log.window_days),
            recent: log
                .recent
                .iter()
                .map(|a| PublicAction {
                    at: at(a.at_ms),
                    user: a.user.clone(),
                    kind: a.kind.to_owned(),
                    duration_secs: a.duration_secs.unwrap_or(0),
                    reason: a.reason.clone(),
                    by: a.by.to_owned(),
                    undone: a.undone,
                    text: a.text.clone().unwrap_or_default(),
                })
                .collect(),
            by_reason: counts(&log.by_reason),
            by_kind: counts(&log.by_kind),
            counted: count(log.counted as u64),
            truncated: log.truncated,
            appeals_open: count(log.appeals.open),
            appeals_upheld: count(log.appeals.upheld),
            appeals_overturned: count(log.appeals.overturned),
        }))
    }
}
