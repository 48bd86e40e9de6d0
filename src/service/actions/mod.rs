//! Moderation actions, appeals and nukes: the domain of the `Actions` and `Appeals` services and
//! of `Admin.Nuke`/`Aegis`.
//!
//! An action is recorded first (one table holds the whole audit trail: automatic verdicts,
//! moderators' calls, appeal reversals, nukes and their aegis, and human moderators' actions
//! seen in chat), then carried out in the chat by the bridge serving its channel
//! ([`dispatch::Dispatcher`]), and its status follows what the chat answered. Everything
//! retried is idempotent: a caller's idempotency key, or an id derived from what the action is
//! about, makes a second attempt return the first action.
//!
//! The records themselves ([`Action`](crate::domain::Action), [`Appeal`](crate::domain::Appeal),
//! [`Nuke`](crate::domain::Nuke)) are domain vocabulary.
//!
//! Architecture Invariant: this module knows nothing of gRPC; it works on domain types, the
//! [`Store`](crate::infra::store::Store) and the dispatcher.

pub mod dispatch;
pub mod workflow;
