//! modbot: a moderation decision service for live-stream chat.
//!
//! Every chat message gets a decision (allow, hold, hide, warn, time out, ban) with the
//! reasons behind it. Callers reach it over gRPC (`proto/modbot/v1/`); the binary in
//! `src/main.rs` is a thin shell over [`cli`].
//!
//! # Layout
//!
//! - [`config`]: the one nested, validated [`config::Config`] (file, `MODBOT_*` environment, flags).
//! - [`normalize`]: chat-aware text normalisation (NFKC, invisible characters, confusables,
//!   leetspeak, spaced letters, emotes, links, mentions) with a map back to the original.
//! - [`corpus`]: a deterministic synthetic destiny.gg-like chat corpus for benchmarks and load.
//! - [`decision`]: domain types of a decision ([`decision::ChatMessage`], [`decision::Verdict`])
//!   and the engine that makes one. It knows nothing of gRPC or storage.
//! - [`rules`]: the rules file, channel policies and the rule checks (pure).
//! - [`ruleset`]: the rule set's source: seeded from the rules file into the database, compiled
//!   from it, and reloaded on every replica when its revision moves.
//! - [`model`]: the transformer encoder (a packed, padding-free CPU forward; candle's `BertModel`
//!   on other devices), classification heads, and the fetch step for the default model.
//! - [`inference`]: the one dynamic batching queue in front of the model, its score cache and
//!   the model's status.
//! - [`guard`]: panic isolation: a panic while deciding one message costs that message a
//!   degraded verdict, not its stream or call; [`fault`]: the panics a test build can inject
//!   to prove it (nothing without the `fault-injection` feature).
//! - [`moderate`]: the per-message pipeline: normalise, consult the model, user history, decide,
//!   record.
//! - [`audit`]: the batching writer of audit records (group commit; a poison batch is split).
//! - [`actions`]: actions, appeals and nukes, their delivery to bridges and their workflows.
//! - [`stats`]: this replica's counts of verdicts for `Admin.GetStats`.
//! - [`retention`]: the task that deletes stored records past their time.
//! - [`users`]: per-channel, per-user state (recent messages, message times, offence heat,
//!   escalation, reputation), in-process or in Redis shared by replicas, with a degraded
//!   per-replica fallback ([`users::SharedState`]).
//! - [`store`]: the database (SQLite embedded, PostgreSQL in production) behind sqlx.
//! - [`grpc`]: the tonic services; the only module that sees generated proto types.
//! - [`proto`]: the generated code itself.
//! - [`bridge`]: `modbot bridge`, a chat client carried into `StreamModerate`.
//! - [`app`]: wiring: [`app::serve`] runs the whole server on a listener until shutdown.
//! - [`train`]: `modbot train`: the labelled datasets, embedding them with the encoder, and
//!   training, calibrating and writing classification heads.
//! - [`eval`]: `modbot eval`: metrics of the heads on held-out data next to baselines, reports,
//!   comparisons and the check that committed heads reproduce their recorded metrics.
//! - [`telemetry`]: logging set-up.
//! - [`fuzzing`]: the checks behind the cargo-fuzz targets, also run by `cargo test`.
//! - [`cli`]: the `modbot` command line.
//!
//! See `ARCHITECTURE.md` for the invariants that keep these apart.

pub mod actions;
pub mod app;
pub mod audit;
pub mod bridge;
pub mod cli;
pub mod config;
pub mod corpus;
pub mod decision;
pub mod eval;
#[doc(hidden)]
pub mod fault;
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod guard;
pub mod inference;
pub mod model;
pub mod moderate;
pub mod normalize;
pub mod proto;
pub mod retention;
pub mod rules;
pub mod ruleset;
pub mod stats;
pub mod store;
pub mod telemetry;
pub mod train;
pub mod users;

pub use app::serve;
pub use config::Config;
