//! The gRPC edge: tonic services over the domain.
//!
//! Handlers are thin: validate and convert the request ([`convert`]), call the domain, convert
//! the answer, map errors to a [`tonic::Status`] ([`status`]).
//!
//! Architecture Invariant: this is the only module (with the future chat bridge) that sees
//! generated proto types or tonic; the domain modules never import them.

pub mod actions;
mod admin;
mod admin_models;
mod admin_rules;
mod admin_stats;
mod appeals;
pub mod auth;
pub mod convert;
pub mod metrics;
mod moderation;
mod review;
mod rule_spec;
pub mod status;
mod stream;
pub mod trace;
mod transparency;

use std::sync::Arc;

use tonic::service::Routes;

pub use moderation::ModerationService;

use crate::proto::actions_server::ActionsServer;
use crate::proto::admin_server::AdminServer;
use crate::proto::appeals_server::AppealsServer;
use crate::proto::moderation_server::ModerationServer;
use crate::proto::review_server::ReviewServer;
use crate::proto::transparency_server::TransparencyServer;
use crate::service::Services;

/// A server stream's responses, converted as the client reads them.
pub type WatchStream<T> =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, tonic::Status>> + Send>>;

/// The model's name in gRPC health (see `app::MODEL_HEALTH_NAME`).
pub const MODEL_HEALTH_NAME: &str = "modbot.model";

/// Full names of the modbot services, as health and reflection report them.
pub const SERVICE_NAMES: &[&str] = &[
    "modbot.v1.Moderation",
    "modbot.v1.Actions",
    "modbot.v1.Appeals",
    "modbot.v1.Admin",
    "modbot.v1.Review",
    "modbot.v1.Transparency",
];

/// The modbot services, ready to be added to a server next to health and reflection.
pub fn routes(services: Arc<Services>) -> Routes {
    let max_message_bytes = services.max_request_bytes();
    let admin = AdminServer::new(admin::AdminService::new(Arc::clone(&services)));
    let actions = ActionsServer::new(actions::ActionsService::new(Arc::clone(&services)));
    let appeals = AppealsServer::new(appeals::AppealsService::new(Arc::clone(&services)));
    let review = ReviewServer::new(review::ReviewService::new(Arc::clone(&services)));
    let transparency = TransparencyServer::new(transparency::TransparencyService::new(Arc::clone(
        &services,
    )));
    let moderation = ModerationServer::new(ModerationService::new(services))
        .max_decoding_message_size(max_message_bytes);
    Routes::new(moderation)
        .add_service(actions)
        .add_service(appeals)
        .add_service(admin)
        .add_service(review)
        .add_service(transparency)
}
