//! State and infrastructure: per-user state (in memory or Redis), the database, the model and
//! the queue in front of it. They store, fetch and compute; they never decide.

pub mod inference;
pub mod model;
pub mod store;
pub mod users;
