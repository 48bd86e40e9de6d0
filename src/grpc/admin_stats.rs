//! `Admin.GetStats`.

use tonic::{Response, Status};

use crate::app::App;
use crate::proto::*;

/// `GetStats`.
pub async fn get_stats(_app: &App, _request: GetStatsRequest) -> Result<Response<Stats>, Status> {
    Err(Status::unimplemented(
        "GetStats: statistics are being built",
    ))
}
