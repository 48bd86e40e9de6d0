//! The services: what callers ask of modbot, whichever edge they come through. Moderating a
//! message (deciding and recording), actions, appeals and nukes, the rule set and its reload,
//! counts, retention. No wire format here.

pub mod actions;
pub mod audit;
pub mod chat_actions;
pub mod feed;
pub mod models;
pub mod moderate;
pub mod notices;
pub mod pipeline;
pub mod profile;
pub mod raid;
pub mod records;
pub mod retention;
pub mod review;
pub mod rule_admin;
pub mod ruleset;
pub mod stats;
pub mod transparency;
pub mod trials;

#[cfg(test)]
mod golden;

/// The services every edge calls, built once by [`crate::app::serve`] and shared by every
/// request handler.
#[derive(Debug)]
pub struct Services {
    /// The configuration the server started with.
    pub config: crate::config::Config,
    /// Decides messages, with memory of each user.
    pub moderator: moderate::Moderator,
    /// The database.
    pub store: crate::infra::store::Store,
    /// Batches streams' audit records into the database.
    pub audit: audit::AuditWriter,
    /// This replica's decision statistics (`Admin.GetStats`).
    pub stats: stats::VerdictStats,
    /// Records actions and carries them to the bridges connected to this replica.
    pub dispatcher: actions::dispatch::Dispatcher,
    /// The stored rule set and the revision in force (`Admin` rules and policies).
    pub rules: ruleset::RuleSource,
    /// Which head set decides and which is on trial (`Admin` models).
    pub models: models::ModelRollouts,
    /// What wakes the review queue's watchers.
    pub review_queue: review::ReviewQueue,
    /// Who was told what when: the notices' rate limit.
    pub notices: notices::NoticeLimiter,
    /// Every decision as it is made, for moderators watching.
    pub feed: feed::DecisionFeed,
    /// Channels' public moderation logs, as last built.
    pub public_logs: transparency::PublicLogs,
    /// Turns true when the server starts shutting down: long-lived streams finish what they
    /// read and end, so their bridges reconnect (to another replica) instead of being cut at
    /// the end of the grace period.
    pub stopping: tokio::sync::watch::Sender<bool>,
}

impl Services {
    /// Largest encoded request the server accepts: a full Classify call of maximal messages,
    /// with room for ids and roles. Anything larger is refused before it is decoded.
    pub fn max_request_bytes(&self) -> usize {
        let grpc = &self.config.grpc;
        let per_message = grpc.max_text_bytes as usize + 16 * 1024;
        (grpc.max_messages_per_call as usize * per_message).max(4 * 1024 * 1024)
    }
}
