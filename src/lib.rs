//! modbot: a moderation decision service for live-stream chat.
//!
//! Every chat message gets a decision (allow, hold, hide, warn, time out, ban) with the
//! reasons behind it. Callers reach it over gRPC (`proto/modbot/v1/`); the binary in
//! `src/main.rs` is a thin shell over [`cli`].
//!
//! # Layout
//!
//! The folders are layers; a module uses its own layer and those below, never one above
//! (`src/layers.rs` checks it):
//!
//! - [`domain`]: the vocabulary: messages, verdicts, reasons, users' histories, actions.
//! - [`config`], [`guard`], [`fault`], [`corpus`], [`telemetry`]: settings, panic isolation,
//!   test-only fault injection, the synthetic chat corpus, logging and shared metrics.
//! - [`engine`]: pure engines: [`engine::normalize`], [`engine::rules`], [`engine::decision`].
//! - [`infra`]: state and infrastructure: [`infra::users`] (memory or Redis), [`infra::store`]
//!   (SQLite or PostgreSQL), [`infra::model`] (the encoder and heads), [`infra::inference`]
//!   (the batching queue in front of the model).
//! - [`service`]: what callers ask for: [`service::moderate`], [`service::pipeline`],
//!   [`service::audit`], [`service::actions`], [`service::ruleset`], [`service::rule_admin`],
//!   [`service::records`], [`service::chat_actions`], [`service::profile`], [`service::stats`],
//!   [`service::retention`].
//! - [`proto`]: the generated code; [`edge`]: the gRPC services ([`edge::grpc`]), the only
//!   server code that sees proto types.
//! - [`bridge`]: `modbot bridge` and `modbot replay`, clients of the API.
//! - [`tools`]: [`tools::datasets`], [`tools::train`], [`tools::eval`], and the checks behind
//!   the fuzz targets.
//! - [`app`]: wiring: [`app::serve`] runs the whole server on a listener until shutdown;
//!   [`cli`]: the `modbot` command line.
//!
//! See `ARCHITECTURE.md` for the invariants that keep these apart.

pub mod app;
pub mod bridge;
pub mod cli;
pub mod config;
pub mod corpus;
pub mod domain;
pub mod edge;
pub mod engine;
#[doc(hidden)]
pub mod fault;
pub mod guard;
pub mod infra;
pub mod proto;
pub mod service;
pub mod telemetry;
pub mod tools;

#[cfg(test)]
mod layers;

pub use app::serve;
pub use config::Config;
