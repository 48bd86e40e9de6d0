//! `modbot bridge`: one destiny.gg or Strims chat carried into modbot's `StreamModerate`, and
//! modbot's actions carried into the chat.

pub mod client;
pub mod replay;
