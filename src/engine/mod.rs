//! The engines: pure functions of what they are given. Normalisation folds a chat line into
//! what the rules and the model read; the rules check it; the decision engine turns the rules'
//! and the model's findings and the user's history into a verdict.
//!
//! Architecture Invariant: no state, no storage, no model, no network, no clock of their own:
//! everything arrives as an argument, so every behaviour is testable without a server
//! (`src/layers.rs` checks the imports).

pub mod decision;
pub mod normalize;
pub mod raid;
pub mod rules;
