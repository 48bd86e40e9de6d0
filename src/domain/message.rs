//! A chat message as every layer sees it.

use std::time::SystemTime;

/// Longest id, nick or channel name accepted, in bytes (every edge refuses longer ones).
pub const MAX_ID_BYTES: usize = 256;

/// A chat message to decide, already validated (non-empty ids and text within limits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Channel the message was sent in.
    pub channel: String,
    /// The chat's (or caller's) id for the message.
    pub message_id: String,
    /// Stable id of the author.
    pub user_id: String,
    /// Display name of the author.
    pub nick: String,
    /// The author's roles and features, lower case.
    pub roles: Vec<String>,
    /// The text exactly as typed.
    pub text: String,
    /// When the chat received it.
    pub sent_at: SystemTime,
}
