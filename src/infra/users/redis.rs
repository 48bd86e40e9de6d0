//! The Redis backend: one Lua script per operation, so every update of a user is atomic even
//! with several replicas writing at once, and costs one round trip.

use std::sync::{Arc, LazyLock};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};

use super::{
    ChannelMessage, ChannelWindow, FORGOTTEN_HEAT, FORGOTTEN_STRIKES, Observation, Observer,
    Offence, RecentMessage, StateError, StateOptions, UserHistory, duration_ms,
};
use crate::config::redact_url;

/// Reads the user hash and lists (`KEYS[1..3]`).
const READ_SCRIPT: &str = concat!(include_str!("lua/common.lua"), include_str!("lua/read.lua"));
/// Reads the user hash and lists and the channel list (`KEYS[1..4]`).
const PEEK_SCRIPT: &str = concat!(include_str!("lua/common.lua"), include_str!("lua/peek.lua"));
/// See [`super::UserState::observe`].
const OBSERVE_SCRIPT: &str = concat!(
    include_str!("lua/common.lua"),
    include_str!("lua/observe.lua")
);
/// See [`super::UserState::record_offence`].
const RECORD_OFFENCE_SCRIPT: &str = concat!(
    include_str!("lua/common.lua"),
    include_str!("lua/record_offence.lua")
);
/// See [`super::UserState::pardon`].
const PARDON_SCRIPT: &str = concat!(
    include_str!("lua/common.lua"),
    include_str!("lua/pardon.lua")
);

/// The scripts, with their SHA1s computed once per process.
struct Scripts {
    read: Script,
    peek: Script,
    observe: Script,
    record_offence: Script,
    pardon: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    read: Script::new(READ_SCRIPT),
    peek: Script::new(PEEK_SCRIPT),
    observe: Script::new(OBSERVE_SCRIPT),
    record_offence: Script::new(RECORD_OFFENCE_SCRIPT),
    pardon: Script::new(PARDON_SCRIPT),
});

/// User state in Redis, shared by every replica.
///
/// # Keys
///
/// With `P` the key prefix, `C` the channel (with `%` and `}` percent-encoded, so the hash tag
/// ends where the channel does) and `U` the user id:
///
/// | key | type | holds |
/// | --- | --- | --- |
/// | `P{C}:u:U` | hash | `first`, `last` (ms), `n` (messages), `heat` (`%.17g`), `heat_at` (ms, also the strikes' time), `hl` (the latest offence's half-life, ms), `off`, `step`, `last_off` (ms), `strikes` (`%.17g`), `mhl` (the latest offence's memory half-life, ms); a hash without the last two (written by an older version) has no strikes |
/// | `P{C}:r:U` | list | the user's recent messages, oldest first: `at_ms:len:message_id` then the text |
/// | `P{C}:t:U` | list | the user's recent message times (ms), oldest first |
/// | `P{C}:c` | list | the channel's recent messages (the copy-paste window): `at_ms:len:user_id` `len:message_id` then the text |
/// | `P{C}:h` | list | the channel's history (for `Nuke`), entries as in `P{C}:c` |
///
/// Lists are capped with `LTRIM`. Every write renews the TTLs: a user's three keys live for
/// [`StateOptions::idle_ttl`], or longer while their heat needs longer to decay below
/// [`super::FORGOTTEN_HEAT`] or their strikes below [`super::FORGOTTEN_STRIKES`]; the
/// channel's two lists live for the idle TTL. A pardon leaves the TTLs as they are. All of a
/// channel's keys share the hash tag `{C}`, so on a Redis Cluster one script's keys share a
/// slot.
///
/// The history is a second list rather than a longer window because `observe.lua` returns
/// the whole window on every message: pushing onto (and trimming one entry off) the history is
/// O(1) per message whatever its length, and only [`Self::channel_history`] reads it.
///
/// # Scripts
///
/// `observe.lua`, `record_offence.lua`, `pardon.lua`, `read.lua` and `peek.lua` (in
/// `src/infra/users/lua/`, each
/// prefixed with `common.lua`), run with `EVALSHA` (loaded on first use). They apply the same expiry rule as
/// the in-process backend by the caller's clock, so a user idle for the TTL and cooled down
/// starts over even if the keys have not expired yet.
#[derive(Debug)]
pub struct RedisState {
    /// Reconnects by itself after a failure; cloned per call (an `Arc`).
    connection: ConnectionManager,
    config: StateOptions,
    key_prefix: String,
    /// For messages: the URL with its password redacted.
    url: String,
}

impl RedisState {
    /// Connects and checks with a `PING` that Redis answers within
    /// [`StateOptions::redis_timeout`].
    pub async fn connect(
        url: &str,
        config: StateOptions,
        key_prefix: &str,
    ) -> Result<Self, StateError> {
        let state = Self::connect_lazily(url, config, key_prefix)?;
        match state.ping().await {
            Ok(()) => Ok(state),
            Err(source) => Err(StateError::Connect {
                url: state.url.clone(),
                source: Box::new(source),
            }),
        }
    }

    /// Prepares a connection without using it: fails only for a bad URL. The first call
    /// connects. Must be called within a tokio runtime.
    ///
    /// Connecting and each call are bounded by [`StateOptions::redis_timeout`] (a call that also
    /// has to connect first may take up to twice that). A failed connection is not retried
    /// within the call: the next call reconnects, and [`super::SharedState`] paces those.
    pub fn connect_lazily(
        url: &str,
        config: StateOptions,
        key_prefix: &str,
    ) -> Result<Self, StateError> {
        let redacted = redact_url(url);
        let invalid = |source| StateError::InvalidUrl {
            url: redacted.clone(),
            source,
        };
        let client = Client::open(url).map_err(invalid)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.redis_timeout))
            .set_response_timeout(Some(config.redis_timeout))
            .set_number_of_retries(0);
        let connection =
            ConnectionManager::new_lazy_with_config(client, manager_config).map_err(invalid)?;
        Ok(Self {
            connection,
            config,
            key_prefix: key_prefix.to_owned(),
            url: redacted,
        })
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &StateOptions {
        &self.config
    }

    /// The key prefix.
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// Checks that Redis answers.
    pub async fn ping(&self) -> Result<(), StateError> {
        let mut connection = self.connection.clone();
        self.bounded(async move {
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
        })
        .await
        .map(drop)
    }

    /// See [`super::UserState::observe`].
    pub async fn observe(
        &self,
        obs: &Observation<'_>,
    ) -> Result<(UserHistory, ChannelWindow), StateError> {
        let keys = self.user_keys(obs.channel, obs.user_id);
        let recent_entry = encode_recent(obs);
        let channel_entry = encode_channel(obs);
        let mut invocation = SCRIPTS.observe.prepare_invoke();
        invocation
            .key(&keys.hash)
            .key(&keys.recent)
            .key(&keys.times)
            .key(self.channel_key(obs.channel))
            .key(self.history_key(obs.channel))
            .arg(obs.at_ms)
            .arg(recent_entry)
            .arg(channel_entry)
            .arg(self.config.recent_per_user)
            .arg(self.config.times_per_user)
            .arg(self.config.recent_per_channel)
            .arg(self.config.idle_ttl_ms())
            .arg(FORGOTTEN_HEAT)
            .arg(self.config.kept_per_channel())
            .arg(FORGOTTEN_STRIKES);
        let mut connection = self.connection.clone();
        let (fields, recent, times, channel): ObserveReply = self
            .bounded(async move { invocation.invoke_async(&mut connection).await })
            .await?;
        let history = parse_history(fields, recent, times)?;
        Ok((history, parse_window(&channel, obs.user_id)?))
    }

    /// See [`super::UserState::record_offence`].
    pub async fn record_offence(
        &self,
        channel: &str,
        user_id: &str,
        offence: &Offence,
    ) -> Result<UserHistory, StateError> {
        let keys = self.user_keys(channel, user_id);
        let mut invocation = SCRIPTS.record_offence.prepare_invoke();
        invocation
            .key(&keys.hash)
            .key(&keys.recent)
            .key(&keys.times)
            .arg(offence.at_ms)
            .arg(format!("{:e}", offence.added_heat()))
            .arg(duration_ms(offence.half_life))
            .arg(if offence.escalates { "1" } else { "0" })
            .arg(format!("{:e}", self.config.cooled_down_heat))
            .arg(self.config.idle_ttl_ms())
            .arg(FORGOTTEN_HEAT)
            .arg(format!("{:e}", offence.added_strikes()))
            .arg(duration_ms(offence.memory_half_life))
            .arg(offence.ladder_step)
            .arg(FORGOTTEN_STRIKES);
        let mut connection = self.connection.clone();
        let (fields, recent, times): UserReply = self
            .bounded(async move { invocation.invoke_async(&mut connection).await })
            .await?;
        parse_history(fields, recent, times)
    }

    /// See [`super::UserState::pardon`].
    pub async fn pardon(
        &self,
        channel: &str,
        user_id: &str,
        offence: &Offence,
    ) -> Result<Option<UserHistory>, StateError> {
        let keys = self.user_keys(channel, user_id);
        let mut invocation = SCRIPTS.pardon.prepare_invoke();
        invocation
            .key(&keys.hash)
            .key(&keys.recent)
            .key(&keys.times)
            .arg(offence.at_ms)
            .arg(format!("{:e}", offence.added_heat()))
            .arg(duration_ms(offence.half_life))
            .arg(format!("{:e}", offence.added_strikes()))
            .arg(duration_ms(offence.memory_half_life))
            .arg(if offence.escalates { "1" } else { "0" });
        let mut connection = self.connection.clone();
        let (fields, recent, times): UserReply = self
            .bounded(async move { invocation.invoke_async(&mut connection).await })
            .await?;
        let history = parse_history(fields, recent, times)?;
        Ok(history.is_known().then_some(history))
    }

    /// See [`super::UserState::peek`].
    pub async fn peek(
        &self,
        channel: &str,
        user_id: &str,
    ) -> Result<(Option<UserHistory>, ChannelWindow), StateError> {
        let keys = self.user_keys(channel, user_id);
        let mut invocation = SCRIPTS.peek.prepare_invoke();
        invocation
            .key(&keys.hash)
            .key(&keys.recent)
            .key(&keys.times)
            .key(self.channel_key(channel));
        let mut connection = self.connection.clone();
        let (fields, recent, times, messages): ObserveReply = self
            .bounded(async move { invocation.invoke_async(&mut connection).await })
            .await?;
        let history = parse_history(fields, recent, times)?;
        Ok((
            history.is_known().then_some(history),
            parse_window(&messages, user_id)?,
        ))
    }

    /// See [`super::UserState::user`].
    pub async fn user(
        &self,
        channel: &str,
        user_id: &str,
    ) -> Result<Option<UserHistory>, StateError> {
        let keys = self.user_keys(channel, user_id);
        let mut invocation = SCRIPTS.read.prepare_invoke();
        invocation
            .key(&keys.hash)
            .key(&keys.recent)
            .key(&keys.times);
        let mut connection = self.connection.clone();
        let (fields, recent, times): UserReply = self
            .bounded(async move { invocation.invoke_async(&mut connection).await })
            .await?;
        let history = parse_history(fields, recent, times)?;
        Ok(history.is_known().then_some(history))
    }

    /// See [`super::UserState::channel_history`].
    pub async fn channel_history(&self, channel: &str) -> Result<Vec<ChannelMessage>, StateError> {
        let key = self.history_key(channel);
        // The last `kept` entries, in case the list was written with a longer setting.
        let kept = i64::try_from(self.config.kept_per_channel()).unwrap_or(i64::MAX);
        let mut connection = self.connection.clone();
        let entries: Vec<String> = self
            .bounded(async move {
                redis::cmd("LRANGE")
                    .arg(key)
                    .arg(kept.saturating_neg())
                    .arg(-1)
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        entries
            .iter()
            .map(|entry| decode_channel(entry).ok_or_else(|| malformed(entry)))
            .collect()
    }

    /// Runs a Redis call with a hard deadline on top of the connection manager's own timeouts,
    /// so that no path (connecting, then sending, then reading) can hang a chat message.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StateError> {
        let limit = self.config.redis_timeout.saturating_mul(2);
        match tokio::time::timeout(limit, call).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(StateError::Timeout(limit)),
        }
    }

    fn channel_tag(&self, channel: &str) -> String {
        let mut tag = String::with_capacity(self.key_prefix.len() + channel.len() + 2);
        tag.push_str(&self.key_prefix);
        tag.push('{');
        for c in channel.chars() {
            match c {
                '%' => tag.push_str("%25"),
                '}' => tag.push_str("%7D"),
                c => tag.push(c),
            }
        }
        tag.push('}');
        tag
    }

    fn channel_key(&self, channel: &str) -> String {
        self.channel_tag(channel) + ":c"
    }

    fn history_key(&self, channel: &str) -> String {
        self.channel_tag(channel) + ":h"
    }

    fn user_keys(&self, channel: &str, user_id: &str) -> UserKeys {
        let tag = self.channel_tag(channel);
        UserKeys {
            hash: format!("{tag}:u:{user_id}"),
            recent: format!("{tag}:r:{user_id}"),
            times: format!("{tag}:t:{user_id}"),
        }
    }
}

/// What `observe.lua` and `peek.lua` return: the user hash fields (HMGET of `FIELDS`), the user's recent
/// messages and times, and the channel's messages.
type ObserveReply = (Vec<Option<String>>, Vec<String>, Vec<i64>, Vec<String>);
/// What `record_offence.lua`, `pardon.lua` and `read.lua` return.
type UserReply = (Vec<Option<String>>, Vec<String>, Vec<i64>);

/// The three keys of one user.
struct UserKeys {
    hash: String,
    recent: String,
    times: String,
}

fn malformed(what: &str) -> StateError {
    let mut shown: String = what.chars().take(80).collect();
    if shown.len() < what.len() {
        shown.push('…');
    }
    StateError::Malformed(format!("`{shown}`"))
}

fn parse_history(
    fields: Vec<Option<String>>,
    recent: Vec<String>,
    times: Vec<i64>,
) -> Result<UserHistory, StateError> {
    let [
        first,
        last,
        n,
        heat,
        heat_at,
        _half_life,
        off,
        step,
        last_off,
        strikes,
        _memory_half_life,
    ]: [Option<String>; 11] = fields.try_into().map_err(|fields: Vec<Option<String>>| {
        StateError::Malformed(format!("{} user fields, expected 11", fields.len()))
    })?;
    fn parse<T: std::str::FromStr>(field: Option<String>) -> Result<Option<T>, StateError> {
        field
            .map(|value| value.parse().map_err(|_| malformed(&value)))
            .transpose()
    }
    let recent = recent
        .iter()
        .map(|entry| {
            decode_recent(entry)
                .map(Arc::new)
                .ok_or_else(|| malformed(entry))
        })
        .collect::<Result<_, _>>()?;
    Ok(UserHistory {
        first_seen_ms: parse(first)?,
        last_seen_ms: parse(last)?,
        messages: parse(n)?.unwrap_or(0),
        recent,
        message_times_ms: times,
        heat: parse(heat)?.unwrap_or(0.0),
        heat_at_ms: parse(heat_at)?.unwrap_or(0),
        strikes: parse(strikes)?.unwrap_or(0.0),
        offences: parse(off)?.unwrap_or(0),
        escalation_step: parse(step)?.unwrap_or(0),
        last_offence_ms: parse(last_off)?,
    })
}

/// The channel list's entries as the window `user_id` sees.
fn parse_window(entries: &[String], user_id: &str) -> Result<ChannelWindow, StateError> {
    let messages = entries
        .iter()
        .map(|entry| decode_channel(entry).ok_or_else(|| malformed(entry)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ChannelWindow::from_list(
        messages,
        Observer::User(user_id.into()),
    ))
}

/// `at_ms:len:message_id` + text: lengths in bytes, so ids and texts may contain anything.
fn encode_recent(obs: &Observation<'_>) -> String {
    format!(
        "{}:{}:{}{}",
        obs.at_ms,
        obs.message_id.len(),
        obs.message_id,
        super::remembered_text(obs.text)
    )
}

/// `at_ms:len:user_id` + `len:message_id` + text.
fn encode_channel(obs: &Observation<'_>) -> String {
    format!(
        "{}:{}:{}{}:{}{}",
        obs.at_ms,
        obs.user_id.len(),
        obs.user_id,
        obs.message_id.len(),
        obs.message_id,
        super::remembered_text(obs.text)
    )
}

fn decode_recent(entry: &str) -> Option<RecentMessage> {
    let mut fields = Fields(entry);
    let at_ms = fields.number()?;
    let message_id = fields.sized()?.to_owned();
    Some(RecentMessage {
        message_id,
        text: fields.0.to_owned(),
        at_ms,
    })
}

fn decode_channel(entry: &str) -> Option<ChannelMessage> {
    let mut fields = Fields(entry);
    let at_ms = fields.number()?;
    let user_id = fields.sized()?.to_owned();
    let message_id = fields.sized()?.to_owned();
    Some(ChannelMessage {
        user_id,
        message_id,
        text: fields.0.to_owned(),
        at_ms,
    })
}

/// A cursor over an encoded entry.
struct Fields<'a>(&'a str);

impl<'a> Fields<'a> {
    /// A number followed by `:`.
    fn number<T: std::str::FromStr>(&mut self) -> Option<T> {
        let (number, rest) = self.0.split_once(':')?;
        self.0 = rest;
        number.parse().ok()
    }

    /// `len:` followed by `len` bytes.
    fn sized(&mut self) -> Option<&'a str> {
        let len: usize = self.number()?;
        let value = self.0.get(..len)?;
        self.0 = &self.0[len..];
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation<'a>(user_id: &'a str, message_id: &'a str, text: &'a str) -> Observation<'a> {
        Observation {
            channel: "c",
            user_id,
            message_id,
            text,
            at_ms: 1_700_000_000_123,
        }
    }

    #[test]
    fn entries_round_trip_whatever_they_contain() {
        for (user_id, message_id, text) in [
            ("u1", "m1", "hello chat"),
            ("", "", ""),
            ("a:b", "12:34", "5:6:7 text: with colons"),
            ("ünï", "ïd", "ẞ 🦀 multi-byte"),
        ] {
            let obs = observation(user_id, message_id, text);
            let recent = decode_recent(&encode_recent(&obs)).expect("decodes");
            assert_eq!(
                recent,
                RecentMessage {
                    message_id: message_id.into(),
                    text: text.into(),
                    at_ms: obs.at_ms
                }
            );
            let channel = decode_channel(&encode_channel(&obs)).expect("decodes");
            assert_eq!(
                channel,
                ChannelMessage {
                    user_id: user_id.into(),
                    message_id: message_id.into(),
                    text: text.into(),
                    at_ms: obs.at_ms
                }
            );
        }
    }

    #[test]
    fn malformed_entries_are_refused_not_panicked_on() {
        for entry in [
            "",
            "x",
            "12",
            "12:",
            "12:5:ab",
            "12:1:ü",
            "-:1:a",
            "12:99999999999999999999:",
        ] {
            assert_eq!(decode_recent(entry), None, "{entry:?}");
            assert_eq!(decode_channel(entry), None, "{entry:?}");
        }
    }
}
