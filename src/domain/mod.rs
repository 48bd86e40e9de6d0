//! The domain's vocabulary, shared by every layer: a chat message, a verdict and its reasons,
//! what is known of a user and a channel.
//!
//! Architecture Invariant: a leaf. Nothing here imports another module of the crate, does I/O
//! or knows gRPC, SQL or the network; the engines, the state, the services and the edges all
//! speak these types.

mod action;
mod history;
mod links;
mod message;
mod review;
mod time;
mod verdict;

pub use action::{
    Action, ActionFilter, ActionKind, ActionSource, ActionStatus, Appeal, AppealFilter,
    AppealStatus, NewAction, Nuke, PageAfter, derived_id, hex,
};
pub use history::{
    COOLED_HEAT, ChannelMessage, ChannelWindow, ChannelWindowIter, Observation, Offence,
    REMEMBERED_STRIKE, REMEMBERED_TEXT_BYTES, RecentMessage, UserHistory, remembered_text,
};
pub(crate) use history::{MessageBlock, Observer, decay, duration_ms, pardoned};
pub use links::LinkSignals;
pub use message::{ChatMessage, MAX_ID_BYTES};
pub use review::{OnExpiry, ReviewFilter, ReviewItem, ReviewStatus, review_id};
pub use time::{from_unix_millis, unix_millis};
pub use verdict::{
    Decision, Degraded, Evidence, Reason, ReasonSource, Span, TrialDecision, Verdict,
};
