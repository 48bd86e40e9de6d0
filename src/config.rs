//! modbot's one configuration: a nested [`Config`] read from layers.
//!
//! The layers, later ones winning: the built-in defaults (which *are* `config/modbot.toml`,
//! compiled in, so the documented file and the defaults cannot drift apart), the file given
//! with `--config`, `MODBOT_*` environment variables, and command-line flags. Every layer is
//! merged as TOML before one typed deserialisation, so an error always names the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use toml::{Table, Value};

/// The shipped configuration file, which is also the complete set of defaults.
const DEFAULTS: &str = include_str!("../config/modbot.toml");

/// Prefix of environment variables that override keys.
pub const ENV_PREFIX: &str = "MODBOT_";

/// Environment variables with this prefix belong to the test suites, not to the server.
const TEST_ENV_PREFIX: &str = "MODBOT_TEST_";

/// The whole configuration of a modbot process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory for modbot's own files (the embedded SQLite database).
    pub data_dir: PathBuf,
    /// The gRPC server.
    pub grpc: GrpcConfig,
    /// The HTTP server: console, JSON API.
    pub http: HttpConfig,
    /// The Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// The database.
    pub database: DatabaseConfig,
    /// Shared user state.
    pub redis: RedisConfig,
    /// The transformer model.
    pub model: ModelConfig,
    /// Logging.
    pub log: LogConfig,
    /// Rule filters.
    pub rules: RulesConfig,
    /// User state bounds.
    pub state: StateConfig,
    /// Moderation actions.
    pub actions: ActionsConfig,
    /// Who may call: bearer tokens and their roles.
    pub auth: AuthConfig,
    /// `modbot bridge`: the chat it carries and the server it carries it to.
    pub bridge: BridgeConfig,
    /// How long stored records are kept.
    pub retention: RetentionConfig,
}

/// `[retention]`: how long each kind of stored record is kept (0 days: forever), and how the
/// retention task deletes the rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Audit records (verdicts and the message text they are about).
    pub audit_days: u32,
    /// Actions, with their resolved appeals, and nukes once none of their actions is left.
    pub actions_days: u32,
    /// Feedback examples (training labels, with normalised message text).
    pub feedback_days: u32,
    /// The rule set's change history (the latest revision is always kept).
    pub rule_history_days: u32,
    /// How often the retention task runs a pass.
    pub interval_secs: u64,
    /// Most rows one delete statement removes.
    pub batch_rows: u32,
}

impl RetentionConfig {
    /// How often a pass runs.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs)
    }

    /// Whether anything is ever deleted.
    pub fn enabled(&self) -> bool {
        [
            self.audit_days,
            self.actions_days,
            self.feedback_days,
            self.rule_history_days,
        ]
        .iter()
        .any(|days| *days > 0)
    }
}

/// `[bridge]`: one chat bridged into modbot (read by `modbot bridge`; `modbot replay` reads
/// its `server_*` keys).
///
/// `Debug` and [`Config::to_redacted_toml`] show the tokens as `***`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// The chat's WebSocket URL (`ws://` or `wss://`).
    pub chat_url: String,
    /// `dgg` or `strims`.
    pub dialect: String,
    /// The channel modbot knows the chat by; empty for the dialect's name.
    pub channel: String,
    /// The bot account's nick.
    pub bot_nick: String,
    /// The bot's login token (a secret).
    pub chat_token: String,
    /// A file holding the login token.
    pub chat_token_file: PathBuf,
    /// The modbot server's URL.
    pub server_url: String,
    /// A bearer token for the server (a secret).
    pub server_token: String,
    /// A file holding the bearer token.
    pub server_token_file: PathBuf,
    /// CA certificates (PEM) for the server's TLS; empty for the system's roots.
    pub server_ca_file: PathBuf,
    /// The bridge's stable id; empty for `bridge-CHANNEL`.
    pub bridge_id: String,
    /// Chat events held while modbot is unreachable.
    pub buffer_events: usize,
    /// How long a command waits for the chat's answer.
    pub command_timeout_ms: u64,
    /// The chat's throttle base.
    pub throttle_base_ms: u64,
    /// First reconnect delay.
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay.
    pub reconnect_max_ms: u64,
    /// The server connection's HTTP/2 PING interval (and TCP keepalive time).
    pub keepalive_interval_ms: u64,
    /// How long a PING may go unanswered before the connection counts as dead.
    pub keepalive_timeout_ms: u64,
}

impl std::fmt::Debug for BridgeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut shown = self.clone();
        shown.redact();
        f.debug_struct("BridgeConfig")
            .field("chat_url", &shown.chat_url)
            .field("dialect", &shown.dialect)
            .field("channel", &shown.channel)
            .field("bot_nick", &shown.bot_nick)
            .field("chat_token", &shown.chat_token)
            .field("chat_token_file", &shown.chat_token_file)
            .field("server_url", &shown.server_url)
            .field("server_token", &shown.server_token)
            .field("server_token_file", &shown.server_token_file)
            .field("server_ca_file", &shown.server_ca_file)
            .field("bridge_id", &shown.bridge_id)
            .field("buffer_events", &shown.buffer_events)
            .field("command_timeout_ms", &shown.command_timeout_ms)
            .field("throttle_base_ms", &shown.throttle_base_ms)
            .field("reconnect_min_ms", &shown.reconnect_min_ms)
            .field("reconnect_max_ms", &shown.reconnect_max_ms)
            .field("keepalive_interval_ms", &shown.keepalive_interval_ms)
            .field("keepalive_timeout_ms", &shown.keepalive_timeout_ms)
            .finish()
    }
}

impl BridgeConfig {
    fn redact(&mut self) {
        for secret in [&mut self.chat_token, &mut self.server_token] {
            if !secret.is_empty() {
                *secret = "***".to_owned();
            }
        }
        self.chat_url = redact_url(&self.chat_url);
        self.server_url = redact_url(&self.server_url);
    }

    /// The channel: the configured one or the dialect's name.
    pub fn channel(&self) -> String {
        if !self.channel.is_empty() {
            return self.channel.clone();
        }
        match self.dialect.as_str() {
            "strims" => "strims".to_owned(),
            _ => "destinygg".to_owned(),
        }
    }

    /// The bridge id: the configured one or `bridge-CHANNEL`.
    pub fn bridge_id(&self) -> String {
        if self.bridge_id.is_empty() {
            format!("bridge-{}", self.channel())
        } else {
            self.bridge_id.clone()
        }
    }

    /// The chat login token: `chat_token`, else the contents of `chat_token_file`, else none.
    pub fn chat_token(&self) -> Result<Option<String>, ConfigError> {
        secret(
            &self.chat_token,
            &self.chat_token_file,
            "bridge.chat_token_file",
        )
    }

    /// The server's bearer token: `server_token`, else `server_token_file`, else none.
    pub fn server_token(&self) -> Result<Option<String>, ConfigError> {
        secret(
            &self.server_token,
            &self.server_token_file,
            "bridge.server_token_file",
        )
    }

    /// Checks what `modbot bridge` needs; errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.chat_url.starts_with("ws://") || self.chat_url.starts_with("wss://")) {
            return Err(invalid(
                "bridge.chat_url",
                format!(
                    "`{}` is not a ws:// or wss:// URL",
                    redact_url(&self.chat_url)
                ),
            ));
        }
        if !matches!(self.dialect.as_str(), "dgg" | "strims") {
            return Err(invalid(
                "bridge.dialect",
                format!("`{}` is neither dgg nor strims", self.dialect),
            ));
        }
        if self.bot_nick.trim().is_empty() {
            return Err(invalid("bridge.bot_nick", "is required".to_owned()));
        }
        if !(self.server_url.starts_with("http://") || self.server_url.starts_with("https://")) {
            return Err(invalid(
                "bridge.server_url",
                format!(
                    "`{}` is not an http:// or https:// URL",
                    redact_url(&self.server_url)
                ),
            ));
        }
        if !(1..=1_000_000).contains(&self.buffer_events) {
            return Err(invalid(
                "bridge.buffer_events",
                format!("{} is outside 1..=1000000", self.buffer_events),
            ));
        }
        for (key, value, range) in [
            (
                "bridge.command_timeout_ms",
                self.command_timeout_ms,
                100..=60_000,
            ),
            ("bridge.throttle_base_ms", self.throttle_base_ms, 1..=10_000),
            (
                "bridge.reconnect_min_ms",
                self.reconnect_min_ms,
                10..=60_000,
            ),
            (
                "bridge.reconnect_max_ms",
                self.reconnect_max_ms,
                10..=600_000,
            ),
            (
                "bridge.keepalive_interval_ms",
                self.keepalive_interval_ms,
                KEEPALIVE_RANGE_MS,
            ),
            (
                "bridge.keepalive_timeout_ms",
                self.keepalive_timeout_ms,
                KEEPALIVE_RANGE_MS,
            ),
        ] {
            if !range.contains(&value) {
                return Err(invalid(
                    key,
                    format!("{value} is outside {}..={}", range.start(), range.end()),
                ));
            }
        }
        if self.reconnect_max_ms < self.reconnect_min_ms {
            return Err(invalid(
                "bridge.reconnect_max_ms",
                "is less than bridge.reconnect_min_ms".to_owned(),
            ));
        }
        self.chat_token()?;
        self.server_token()?;
        Ok(())
    }
}

fn invalid(key: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message,
    }
}

/// A secret given inline (from the environment) or in a file; the inline value wins.
fn secret(inline: &str, file: &Path, file_key: &str) -> Result<Option<String>, ConfigError> {
    if !inline.trim().is_empty() {
        return Ok(Some(inline.trim().to_owned()));
    }
    if file.as_os_str().is_empty() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(file)
        .map_err(|e| invalid(file_key, format!("cannot read {}: {e}", file.display())))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(invalid(file_key, format!("{} is empty", file.display())));
    }
    Ok(Some(text.to_owned()))
}

/// `[actions]`: how actions reach the chat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionsConfig {
    /// How long an action waits for a bridge before it expires.
    pub pending_ttl_secs: u64,
    /// How often each replica looks for actions waiting for its bridges.
    pub poll_interval_ms: u64,
    /// How long the mute that carries out a hide lasts.
    pub hide_duration_secs: u64,
    /// How long an action sent to a bridge waits for its answer before it is sent again.
    pub resend_interval_ms: u64,
}

impl ActionsConfig {
    /// [`Self::pending_ttl_secs`] as a duration.
    pub fn pending_ttl(&self) -> Duration {
        Duration::from_secs(self.pending_ttl_secs)
    }

    /// [`Self::poll_interval_ms`] as a duration.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    /// [`Self::hide_duration_secs`] as a duration.
    pub fn hide_duration(&self) -> Duration {
        Duration::from_secs(self.hide_duration_secs)
    }

    /// [`Self::resend_interval_ms`] as a duration.
    pub fn resend_interval(&self) -> Duration {
        Duration::from_millis(self.resend_interval_ms)
    }
}

/// The range of every keepalive timing and of `actions.resend_interval_ms`, in milliseconds.
const KEEPALIVE_RANGE_MS: std::ops::RangeInclusive<u64> = 100..=3_600_000;

/// `[grpc]`: the gRPC server and the limits it enforces on requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// Most messages in one `Classify` call.
    pub max_messages_per_call: u32,
    /// Longest message text, in UTF-8 bytes.
    pub max_text_bytes: u32,
    /// How long in-flight calls may take to finish after a shutdown signal.
    pub shutdown_grace_secs: u64,
    /// The server's certificate chain (PEM); empty for plaintext. Needs `tls_key_file`.
    pub tls_cert_file: PathBuf,
    /// The private key of `tls_cert_file` (PEM); empty for plaintext.
    pub tls_key_file: PathBuf,
    /// CA certificates (PEM) that must have signed every client's certificate (mutual TLS);
    /// empty to accept clients without certificates.
    pub tls_client_ca_file: PathBuf,
    /// How often the server PINGs each HTTP/2 connection (and its TCP keepalive time).
    pub keepalive_interval_ms: u64,
    /// How long a PING may go unanswered before the connection is closed.
    pub keepalive_timeout_ms: u64,
    /// Most concurrent streams on one HTTP/2 connection.
    pub max_concurrent_streams: u32,
    /// How long a new `StreamModerate` stream may take to send its Hello.
    pub hello_timeout_ms: u64,
}

impl GrpcConfig {
    /// The shutdown grace period as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// [`Self::keepalive_interval_ms`] as a duration.
    pub fn keepalive_interval(&self) -> Duration {
        Duration::from_millis(self.keepalive_interval_ms)
    }

    /// [`Self::keepalive_timeout_ms`] as a duration.
    pub fn keepalive_timeout(&self) -> Duration {
        Duration::from_millis(self.keepalive_timeout_ms)
    }

    /// [`Self::hello_timeout_ms`] as a duration.
    pub fn hello_timeout(&self) -> Duration {
        Duration::from_millis(self.hello_timeout_ms)
    }

    /// Whether the server speaks TLS (`tls_cert_file` and `tls_key_file` are set).
    pub fn tls_enabled(&self) -> bool {
        !self.tls_cert_file.as_os_str().is_empty()
    }
}

/// `[http]`: the moderator console and the JSON API (`edge::http`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the HTTP server; `None` (an empty string in the file) serves none.
    #[serde(deserialize_with = "empty_as_none", serialize_with = "none_as_empty")]
    pub addr: Option<SocketAddr>,
    /// How long a console session lasts after login.
    pub session_ttl_secs: u64,
    /// Most console sessions held at once.
    pub max_sessions: u32,
    /// Failed logins allowed per client address per minute.
    pub login_attempts_per_minute: u32,
    /// Whether the session cookie is always marked `Secure`.
    pub secure_cookies: bool,
    /// The key of the public moderation log's pseudonyms (at least 16 bytes); empty: a random
    /// key per process, so pseudonyms change at restart and differ between replicas.
    #[serde(default)]
    pub pseudonym_secret: Secret,
}

/// A secret setting: `Debug` shows `***` (or nothing when unset).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

impl HttpConfig {
    /// [`Self::session_ttl_secs`] as a duration.
    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.session_ttl_secs)
    }
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of `/metrics`; `None` (an empty string in the file) serves no metrics.
    #[serde(deserialize_with = "empty_as_none", serialize_with = "none_as_empty")]
    pub addr: Option<SocketAddr>,
}

/// `[database]`: where records are kept.
///
/// `Debug` shows the URL through [`redact_url`]: a PostgreSQL URL may carry a password.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://...` or `postgres://...`; empty for the embedded SQLite file.
    pub url: String,
    /// Largest number of pooled connections.
    pub max_connections: u32,
    /// How long start-up retries an unreachable database.
    pub connect_timeout_secs: u64,
    /// Longest one statement may run (PostgreSQL `statement_timeout`, SQLite busy timeout);
    /// a whole store call gets twice this, then fails as the database being unavailable.
    pub statement_timeout_ms: u64,
}

impl DatabaseConfig {
    /// Longest one statement may run.
    pub fn statement_timeout(&self) -> Duration {
        Duration::from_millis(self.statement_timeout_ms)
    }
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .finish()
    }
}

/// `[redis]`: shared user state.
///
/// `Debug` shows the URL through [`redact_url`]: a Redis URL may carry a password.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://...`; empty keeps user state in-process.
    pub url: String,
    /// Prefix of every key modbot writes.
    pub key_prefix: String,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

/// `[model]`: the transformer model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Directory holding `config.json`, `tokenizer.json` and `model.safetensors`; empty for
    /// no model (rules only).
    pub dir: PathBuf,
    /// Place the default model in `dir` at start when it is missing.
    pub fetch_if_missing: bool,
    /// Directory of the classification heads (`heads.json` and their weights).
    pub heads_dir: PathBuf,
    /// Directory of head sets that may be tried and promoted (`Admin.TryModel`): one
    /// subdirectory per set, each as `heads_dir`; empty for none.
    pub registry_dir: PathBuf,
    /// An adapter directory (`modbot finetune`) merged into the encoder's weights at load;
    /// empty for none. Heads must have been trained with the same adapter.
    #[serde(default)]
    pub adapter: PathBuf,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// The encoder's arithmetic on the CPU.
    pub precision: ModelPrecision,
    /// Most messages in one batch.
    pub max_batch_messages: u32,
    /// Most tokens in one batch (a message longer than this runs alone).
    pub max_batch_tokens: u32,
    /// How long a batch waits for company after its first message, in microseconds.
    pub linger_us: u64,
    /// Most messages waiting for the model.
    pub max_queue: u32,
    /// Longest wait for scores before deciding by the rules alone, in milliseconds.
    pub max_wait_ms: u64,
    /// Entries of the normalised text -> scores cache (0: no cache).
    pub cache_entries: u32,
}

impl ModelConfig {
    /// Whether a model is configured at all.
    pub fn enabled(&self) -> bool {
        !self.dir.as_os_str().is_empty()
    }
}

/// `[log]`: logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// `EnvFilter` directives.
    pub level: String,
    /// Whether message text is recorded in the `message` span.
    pub message_text: bool,
}

/// The arithmetic of the encoder's linear layers (`model.precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelPrecision {
    /// f32 throughout.
    F32,
    /// Int8 linear layers on a CPU with AVX-512 VNNI (f32 elsewhere, logged).
    Int8,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[rules]`: where the rules come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// A rules file that seeds an empty database; empty for the built-in set
    /// (`config/rules.toml`).
    pub file: PathBuf,
    /// How often every replica checks the database's rule set revision, in milliseconds.
    pub reload_interval_ms: u64,
}

impl RulesConfig {
    /// How often the rule set's revision is polled.
    pub fn reload_interval(&self) -> Duration {
        Duration::from_millis(self.reload_interval_ms)
    }
}

/// `[state]`: bounds of per-user and per-channel memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// Recent messages kept per user.
    pub recent_per_user: u32,
    /// Message times kept per user.
    pub times_per_user: u32,
    /// Recent messages kept per channel.
    pub recent_per_channel: u32,
    /// A channel's messages kept for `Nuke` (at least `recent_per_channel`).
    pub history_per_channel: u32,
    /// Idle users are forgotten after this long.
    pub idle_ttl_secs: u64,
    /// Most users held in memory.
    pub max_users: u32,
    /// Most bytes the in-memory users may hold.
    pub max_user_bytes: u64,
    /// Most bytes the in-memory channel histories may hold.
    pub max_channel_bytes: u64,
}

/// Why a configuration could not be loaded. Every variant names the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The `--config` file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The `--config` file is not TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A flag or environment variable names a key that does not exist.
    #[error("{origin}: `{key}` is not a configuration key (see config/modbot.toml)")]
    UnknownKey {
        /// The key.
        key: String,
        /// Where it came from (`--set`, an environment variable).
        origin: String,
    },
    /// A key has a value of the wrong type or out of range.
    #[error("invalid value for `{key}`: {message}")]
    Invalid {
        /// The key, as a dotted path (`grpc.max_text_bytes`, `state.max_users`).
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// A configuration and the warnings met while loading it (to be logged once logging is up).
#[derive(Debug)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Things worth telling the operator that are not errors.
    pub warnings: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self::from_table(default_table())
            .expect("the built-in config/modbot.toml is valid. This is a bug")
    }
}

fn default_table() -> Table {
    DEFAULTS
        .parse::<Table>()
        .expect("the built-in config/modbot.toml parses. This is a bug")
}

impl Config {
    /// Loads the configuration: defaults, then `file`, then `MODBOT_*` variables from `env`,
    /// then `overrides` (`key`, `value` pairs from flags).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[(String, String)],
    ) -> Result<Loaded, ConfigError> {
        let defaults = default_table();
        let mut table = defaults.clone();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let layer = text.parse::<Table>().map_err(|e| ConfigError::Parse {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
            merge(&mut table, layer);
        }

        let mut warnings = Vec::new();
        let known = scalar_keys(&defaults);
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX) && !name.starts_with(TEST_ENV_PREFIX))
            .collect();
        env.sort();
        for (name, value) in env {
            match known.iter().find(|key| env_name(key) == name) {
                Some(key) => set_key(&mut table, &defaults, key, &value, &name)?,
                None => warnings.push(format!(
                    "environment variable {name} is not a configuration key and was ignored"
                )),
            }
        }
        for (key, value) in overrides {
            set_key(&mut table, &defaults, key, value, "--set")?;
        }

        let config = Self::from_table(table)?;
        Ok(Loaded { config, warnings })
    }

    fn from_table(table: Table) -> Result<Self, ConfigError> {
        let config: Config =
            serde_path_to_error::deserialize(Value::Table(table)).map_err(|e| {
                ConfigError::Invalid {
                    key: e.path().to_string(),
                    message: e.into_inner().to_string(),
                }
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and relations that the types alone do not.
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=1024).contains(&self.grpc.max_messages_per_call) {
            return Err(invalid(
                "grpc.max_messages_per_call",
                format!("{} is outside 1..=1024", self.grpc.max_messages_per_call),
            ));
        }
        for (key, value, range) in [
            (
                "grpc.keepalive_interval_ms",
                self.grpc.keepalive_interval_ms,
                KEEPALIVE_RANGE_MS,
            ),
            (
                "grpc.keepalive_timeout_ms",
                self.grpc.keepalive_timeout_ms,
                KEEPALIVE_RANGE_MS,
            ),
            (
                "grpc.max_concurrent_streams",
                u64::from(self.grpc.max_concurrent_streams),
                1..=65_536,
            ),
            (
                "grpc.hello_timeout_ms",
                self.grpc.hello_timeout_ms,
                100..=600_000,
            ),
            (
                "actions.resend_interval_ms",
                self.actions.resend_interval_ms,
                KEEPALIVE_RANGE_MS,
            ),
        ] {
            if !range.contains(&value) {
                return Err(invalid(
                    key,
                    format!("{value} is outside {}..={}", range.start(), range.end()),
                ));
            }
        }
        if !(1..=65_536).contains(&self.grpc.max_text_bytes) {
            return Err(invalid(
                "grpc.max_text_bytes",
                format!("{} is outside 1..=65536", self.grpc.max_text_bytes),
            ));
        }
        if !(10..=600_000).contains(&self.database.statement_timeout_ms) {
            return Err(invalid(
                "database.statement_timeout_ms",
                format!(
                    "{} is outside 10..=600000",
                    self.database.statement_timeout_ms
                ),
            ));
        }
        if self.database.max_connections == 0 {
            return Err(invalid(
                "database.max_connections",
                "must be at least 1".to_owned(),
            ));
        }
        let url = &self.database.url;
        if !(url.is_empty()
            || url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database.url",
                format!(
                    "`{}` is neither empty, sqlite:... nor postgres://...",
                    redact_url(url)
                ),
            ));
        }
        let model = &self.model;
        if model.max_batch_messages == 0 {
            return Err(invalid(
                "model.max_batch_messages",
                "must be at least 1".to_owned(),
            ));
        }
        if model.max_batch_tokens < 16 {
            return Err(invalid(
                "model.max_batch_tokens",
                format!("{} is below 16", model.max_batch_tokens),
            ));
        }
        if model.max_queue == 0 {
            return Err(invalid("model.max_queue", "must be at least 1".to_owned()));
        }
        if model.linger_us > 100_000 {
            return Err(invalid(
                "model.linger_us",
                format!(
                    "{} is above 100000 (100 ms): a linger that long would hold every decision",
                    model.linger_us
                ),
            ));
        }
        if parse_device(&model.device).is_none() {
            return Err(invalid(
                "model.device",
                format!("`{}` is not cpu, cuda or cuda:N", model.device),
            ));
        }
        if self.redis.url.starts_with("rediss://") {
            return Err(invalid(
                "redis.url",
                "rediss:// (TLS) is not supported by this build; use redis:// on a private network"
                    .to_owned(),
            ));
        }
        if !(self.redis.url.is_empty() || self.redis.url.starts_with("redis://")) {
            return Err(invalid(
                "redis.url",
                format!(
                    "`{}` is neither empty nor redis://...",
                    redact_url(&self.redis.url)
                ),
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(invalid("log.level", e.to_string()));
        }
        for (key, value) in [
            ("state.recent_per_user", self.state.recent_per_user),
            ("state.times_per_user", self.state.times_per_user),
            ("state.recent_per_channel", self.state.recent_per_channel),
        ] {
            if !(1..=1000).contains(&value) {
                return Err(invalid(key, format!("{value} is outside 1..=1000")));
            }
        }
        let history = self.state.history_per_channel;
        if !(1..=10_000).contains(&history) {
            return Err(invalid(
                "state.history_per_channel",
                format!("{history} is outside 1..=10000"),
            ));
        }
        if history < self.state.recent_per_channel {
            return Err(invalid(
                "state.history_per_channel",
                format!(
                    "{history} is less than state.recent_per_channel ({})",
                    self.state.recent_per_channel
                ),
            ));
        }
        if self.state.max_users == 0 {
            return Err(invalid("state.max_users", "must be at least 1".to_owned()));
        }
        // A budget below a megabyte would evict users (channels) on nearly every message.
        for (key, bytes) in [
            ("state.max_user_bytes", self.state.max_user_bytes),
            ("state.max_channel_bytes", self.state.max_channel_bytes),
        ] {
            if bytes < 1 << 20 {
                return Err(invalid(
                    key,
                    format!("{bytes} is below the smallest budget, 1048576 (1 MiB)"),
                ));
            }
        }
        let actions = &self.actions;
        if !(1..=7 * 86_400).contains(&actions.pending_ttl_secs) {
            return Err(invalid(
                "actions.pending_ttl_secs",
                format!("{} is outside 1..=604800", actions.pending_ttl_secs),
            ));
        }
        if !(10..=60_000).contains(&actions.poll_interval_ms) {
            return Err(invalid(
                "actions.poll_interval_ms",
                format!("{} is outside 10..=60000", actions.poll_interval_ms),
            ));
        }
        if !(1..=3600).contains(&actions.hide_duration_secs) {
            return Err(invalid(
                "actions.hide_duration_secs",
                format!("{} is outside 1..=3600", actions.hide_duration_secs),
            ));
        }
        if self.redis.key_prefix.is_empty() {
            return Err(invalid("redis.key_prefix", "must not be empty".to_owned()));
        }
        if !(100..=60_000).contains(&self.rules.reload_interval_ms) {
            return Err(invalid(
                "rules.reload_interval_ms",
                format!("{} is outside 100..=60000", self.rules.reload_interval_ms),
            ));
        }
        let retention = &self.retention;
        for (key, days) in [
            ("retention.audit_days", retention.audit_days),
            ("retention.actions_days", retention.actions_days),
            ("retention.feedback_days", retention.feedback_days),
            ("retention.rule_history_days", retention.rule_history_days),
        ] {
            if days > 36_500 {
                return Err(invalid(
                    key,
                    format!("{days} is above 36500 (100 years; 0 keeps records forever)"),
                ));
            }
        }
        if !(1..=86_400).contains(&retention.interval_secs) {
            return Err(invalid(
                "retention.interval_secs",
                format!("{} is outside 1..=86400", retention.interval_secs),
            ));
        }
        if !(1..=10_000).contains(&retention.batch_rows) {
            return Err(invalid(
                "retention.batch_rows",
                format!("{} is outside 1..=10000", retention.batch_rows),
            ));
        }
        for (key, value, range) in [
            (
                "http.session_ttl_secs",
                self.http.session_ttl_secs,
                60..=604_800,
            ),
            (
                "http.max_sessions",
                u64::from(self.http.max_sessions),
                1..=100_000,
            ),
            (
                "http.login_attempts_per_minute",
                u64::from(self.http.login_attempts_per_minute),
                1..=1_000,
            ),
        ] {
            if !range.contains(&value) {
                return Err(invalid(
                    key,
                    format!("{value} is outside {}..={}", range.start(), range.end()),
                ));
            }
        }
        let secret = &self.http.pseudonym_secret.0;
        if !secret.is_empty() && secret.len() < 16 {
            return Err(invalid(
                "http.pseudonym_secret",
                "must be at least 16 bytes (or empty for a random key per process)".to_owned(),
            ));
        }
        self.validate_tls()?;
        // Reads auth.tokens_file: which tokens exist decides whether grpc.addr and http.addr
        // are allowed.
        if self.auth.credentials()?.is_empty() {
            refuse_open_bind(self.grpc.addr)?;
            if let Some(addr) = self.http.addr {
                refuse_open_bind(addr)?;
            }
        }
        Ok(())
    }

    /// TLS files come in pairs: a certificate without its key (or a client CA without a
    /// server certificate) is a mistake, not a request for plaintext.
    fn validate_tls(&self) -> Result<(), ConfigError> {
        let grpc = &self.grpc;
        let set = |path: &PathBuf| !path.as_os_str().is_empty();
        let needs = |key: &str, other: &str| ConfigError::Invalid {
            key: key.to_owned(),
            message: format!("is set but {other} is not; TLS needs both"),
        };
        match (set(&grpc.tls_cert_file), set(&grpc.tls_key_file)) {
            (true, false) => return Err(needs("grpc.tls_cert_file", "grpc.tls_key_file")),
            (false, true) => return Err(needs("grpc.tls_key_file", "grpc.tls_cert_file")),
            _ => {}
        }
        if set(&grpc.tls_client_ca_file) && !grpc.tls_enabled() {
            return Err(ConfigError::Invalid {
                key: "grpc.tls_client_ca_file".to_owned(),
                message: "is set but grpc.tls_cert_file and grpc.tls_key_file are not; client \
                          certificates need a TLS server"
                    .to_owned(),
            });
        }
        Ok(())
    }

    /// The database URL to connect to: the configured one, or the embedded SQLite file.
    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!("sqlite://{}", self.data_dir.join("modbot.db").display())
        } else {
            self.database.url.clone()
        }
    }

    /// The configuration as TOML, with passwords in URLs replaced by `***`.
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.database.url = redact_url(&shown.database.url);
        shown.redis.url = redact_url(&shown.redis.url);
        shown.auth.tokens = redact_tokens(&shown.auth.tokens);
        shown.bridge.redact();
        if !shown.http.pseudonym_secret.0.is_empty() {
            shown.http.pseudonym_secret = Secret("***".to_owned());
        }
        toml::to_string(&shown).expect("a Config always serialises. This is a bug")
    }
}

/// The environment variable that overrides a dotted key.
pub fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "_").to_uppercase())
}

/// Every key that an environment variable or `--set` may override: the scalar leaves of the
/// defaults (arrays of tables, such as rules, are set in files only).
pub fn scalar_keys(table: &Table) -> Vec<String> {
    fn walk(prefix: &str, table: &Table, out: &mut Vec<String>) {
        for (name, value) in table {
            let key = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            match value {
                Value::Table(inner) => walk(&key, inner, out),
                Value::Array(items) if items.iter().any(Value::is_table) => {}
                _ => out.push(key),
            }
        }
    }
    let mut out = Vec::new();
    walk("", table, &mut out);
    out
}

/// Sets a dotted `key` to `raw`, typed like the default value at that key: strings are taken
/// as they are, anything else is parsed as a TOML value (`64`, `true`, `["a", "b"]`).
fn set_key(
    table: &mut Table,
    defaults: &Table,
    key: &str,
    raw: &str,
    origin: &str,
) -> Result<(), ConfigError> {
    let unknown = || ConfigError::UnknownKey {
        key: key.to_owned(),
        origin: origin.to_owned(),
    };
    let parts: Vec<&str> = key.split('.').collect();
    let (leaf, sections) = parts.split_last().ok_or_else(unknown)?;
    let mut default_here = defaults;
    let mut here = table;
    for section in sections {
        default_here = default_here
            .get(*section)
            .and_then(Value::as_table)
            .ok_or_else(unknown)?;
        here = here
            .entry(section.to_string())
            .or_insert_with(|| Value::Table(Table::new()))
            .as_table_mut()
            .ok_or_else(unknown)?;
    }
    let value = match default_here.get(*leaf) {
        None | Some(Value::Table(_)) => return Err(unknown()),
        Some(Value::String(_)) => Value::String(raw.to_owned()),
        Some(_) => {
            let parsed =
                format!("v = {raw}")
                    .parse::<Table>()
                    .map_err(|_| ConfigError::Invalid {
                        key: key.to_owned(),
                        message: format!("`{raw}` (from {origin}) is not a valid value"),
                    })?;
            parsed.get("v").cloned().ok_or_else(unknown)?
        }
    };
    here.insert(leaf.to_string(), value);
    Ok(())
}

/// Deep-merges `layer` into `base`: tables merge key by key, anything else is replaced.
fn merge(base: &mut Table, layer: Table) {
    for (name, value) in layer {
        match (base.get_mut(&name), value) {
            (Some(Value::Table(base_inner)), Value::Table(layer_inner)) => {
                merge(base_inner, layer_inner)
            }
            (_, value) => {
                base.insert(name, value);
            }
        }
    }
}

/// A URL as it may be shown (in `modbot config`, errors and logs): every password in it
/// replaced by `***`.
///
/// Covers the password of the user information (`postgres://user:PASS@host`,
/// `redis://:PASS@host`, `rediss://user:PASS@host`) and every query parameter that carries a
/// secret ([`is_secret_parameter`]: `?password=`, `&sslpassword=`, `?token=`, ...). A password
/// written without percent-encoding may itself contain `@` or `/`: the user information is
/// taken to end at the last `@` before the query, so such a password is hidden whole rather
/// than cut at its first `/`.
pub fn redact_url(url: &str) -> String {
    let (before_query, query) = match url.find(['?', '#']) {
        Some(at) => url.split_at(at),
        None => (url, ""),
    };
    let mut shown = match before_query.find("://") {
        Some(scheme_end) => {
            let rest = &before_query[scheme_end + 3..];
            match rest.rfind('@') {
                Some(at) => match rest[..at].find(':') {
                    Some(colon) => format!(
                        "{}://{}:***{}",
                        &before_query[..scheme_end],
                        &rest[..colon],
                        &rest[at..]
                    ),
                    None => before_query.to_owned(),
                },
                None => before_query.to_owned(),
            }
        }
        None => before_query.to_owned(),
    };
    shown.push_str(&redact_query(query));
    shown
}

/// `?a=1&password=x#frag` with each secret parameter's value replaced by `***`.
fn redact_query(query: &str) -> String {
    let Some(lead) = query.chars().next() else {
        return String::new();
    };
    let (body, fragment) = match query[1..].find('#') {
        Some(at) if lead == '?' => query[1..].split_at(at),
        _ => (&query[1..], ""),
    };
    let body = body
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if is_secret_parameter(key) => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&");
    format!("{lead}{body}{fragment}")
}

/// Whether a URL query parameter's value is a secret: its name (percent-decoded, any case)
/// says password, secret or token (`password`, `sslpassword`, `passwd`, `pwd`, `token`,
/// `auth_token`, `secret`, ...). Wider than any one driver's list on purpose: hiding a value
/// that was not secret costs nothing.
pub fn is_secret_parameter(key: &str) -> bool {
    let key = percent_decode(key).to_ascii_lowercase();
    ["pass", "pwd", "secret", "token", "auth"]
        .iter()
        .any(|word| key.contains(word))
}

/// `%XX` escapes decoded (anything else, malformed escapes too, kept as it is).
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((high * 16 + low) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn empty_as_none<'de, D: Deserializer<'de>>(de: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(de)?;
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|e| {
        serde::de::Error::custom(format!("`{text}` is not a host:port socket address ({e})"))
    })
}

fn none_as_empty<S: serde::Serializer>(
    addr: &Option<SocketAddr>,
    ser: S,
) -> Result<S::Ok, S::Error> {
    match addr {
        Some(addr) => ser.collect_str(addr),
        None => ser.serialize_str(""),
    }
}

/// `[auth]`: the bearer tokens callers present, each with a name and roles.
///
/// Both sources may be used together. `Debug` and [`Config::to_redacted_toml`] show the
/// inline entries with their tokens replaced by `***`: the secrets never reach a log.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// A file of `ROLES NAME TOKEN` lines (`#` comment lines and blank lines allowed), read at
    /// start; empty for none.
    pub tokens_file: PathBuf,
    /// The same entries inline, separated by `;` (so one environment variable,
    /// `MODBOT_AUTH_TOKENS`, can carry them from a secret).
    pub tokens: String,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("tokens_file", &self.tokens_file)
            .field("tokens", &redact_tokens(&self.tokens))
            .finish()
    }
}

/// Shortest token accepted, in bytes. A floor against typing a password, not a target: 16 hex
/// characters carry only 64 bits, so generate more (`openssl rand -hex 32`).
pub const MIN_TOKEN_BYTES: usize = 16;

/// A role a token may hold. Which RPCs each role may call is the table in `grpc::auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A backend deciding messages with `Moderation.Classify` (and `Admin.GetModelInfo`). It
    /// carries out the verdicts in its own system: no action is sent to a chat for it unless
    /// the channel's policy says so (`classify_actions = "send"`).
    Classifier,
    /// A chat bridge: `Moderation.StreamModerate` (and `Admin.GetModelInfo`), as the bridge ids
    /// and for the channels its entry is bound to ([`BridgeBinding`]).
    Bridge,
    /// Moderator tools: actions, appeals (resolving them too), nukes, stats, users, reading
    /// rules and policy.
    Moderator,
    /// Everything, including changing rules and policy.
    Admin,
    /// The site backend filing and reading appeals on its users' behalf.
    Appeals,
}

impl Role {
    /// Every role, in the order they are listed in messages.
    pub const ALL: [Role; 5] = [
        Role::Classifier,
        Role::Bridge,
        Role::Moderator,
        Role::Admin,
        Role::Appeals,
    ];

    /// The role's name in token entries and messages.
    pub fn name(self) -> &'static str {
        match self {
            Role::Classifier => "classifier",
            Role::Bridge => "bridge",
            Role::Moderator => "moderator",
            Role::Admin => "admin",
            Role::Appeals => "appeals",
        }
    }

    /// The role called `name`, if any.
    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.name() == name)
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of roles (a token's, or those that may call a method).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Roles(u8);

impl Roles {
    /// No role at all.
    pub const NONE: Roles = Roles(0);

    /// The set of `roles`.
    pub fn of(roles: &[Role]) -> Roles {
        roles.iter().fold(Roles::NONE, |set, role| set.with(*role))
    }

    /// This set and `role`.
    pub fn with(self, role: Role) -> Roles {
        Roles(self.0 | role.bit())
    }

    /// Whether `role` is in the set.
    pub fn contains(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    /// Whether the two sets share a role.
    pub fn intersects(self, other: Roles) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The roles in the set, in [`Role::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL
            .into_iter()
            .filter(move |role| self.contains(*role))
    }
}

impl std::fmt::Display for Roles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let names: Vec<&str> = self.iter().map(Role::name).collect();
        f.write_str(&names.join(", "))
    }
}

impl std::fmt::Debug for Roles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Roles({self})")
    }
}

/// One configured token: its name, its roles and the SHA-256 digest of the token. The token
/// itself is not kept: the auth layer hashes what a caller presents and compares digests.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The label logs and audit records use for whoever holds the token.
    pub name: String,
    /// What the token may do.
    pub roles: Roles,
    /// For a `bridge` credential, the bridge ids and channels it may register as.
    pub binding: Option<std::sync::Arc<BridgeBinding>>,
    digest: [u8; 32],
}

/// What a `bridge` credential may register as on `StreamModerate`: a hello must name one of
/// these bridge ids and only these channels. Written after the token in its entry:
/// `bridge NAME TOKEN bridge_ids=dgg-1 channels=destinygg,strims`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeBinding {
    /// The bridge ids (`hello.bridge_id`) the credential may use.
    pub bridge_ids: Vec<String>,
    /// The channels (`hello.channels`) it may serve.
    pub channels: Vec<String>,
}

impl BridgeBinding {
    /// Whether a hello may name `bridge_id`.
    pub fn allows_bridge_id(&self, bridge_id: &str) -> bool {
        self.bridge_ids.iter().any(|id| id == bridge_id)
    }

    /// Whether a hello may name `channel`.
    pub fn allows_channel(&self, channel: &str) -> bool {
        self.channels.iter().any(|c| c == channel)
    }
}

impl Credential {
    /// A credential for `token`, bound to nothing (see [`Credential::bound`]).
    pub fn new(name: impl Into<String>, roles: Roles, token: &[u8]) -> Self {
        Self {
            name: name.into(),
            roles,
            binding: None,
            digest: token_digest(token),
        }
    }

    /// This credential, bound to `binding`.
    pub fn bound(mut self, binding: BridgeBinding) -> Self {
        self.binding = Some(std::sync::Arc::new(binding));
        self
    }

    /// SHA-256 of the token.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .field("binding", &self.binding)
            .finish_non_exhaustive()
    }
}

/// SHA-256 of a token: what credentials keep and what presented tokens are compared by.
pub fn token_digest(token: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(token).into()
}

impl AuthConfig {
    /// Every configured token, from `tokens_file` (read now) and then `tokens`. An error names
    /// the entry (`FILE line N`, `auth.tokens[N]`) and never contains a token.
    pub fn credentials(&self) -> Result<Vec<Credential>, ConfigError> {
        // Every entry as (the key an error names, the entry's place, its text).
        let mut entries: Vec<(String, String, String)> = Vec::new();
        if !self.tokens_file.as_os_str().is_empty() {
            let path = self.tokens_file.display();
            let text =
                std::fs::read_to_string(&self.tokens_file).map_err(|e| ConfigError::Invalid {
                    key: "auth.tokens_file".to_owned(),
                    message: format!("cannot read {path}: {e}"),
                })?;
            for (index, line) in text.lines().enumerate() {
                let line = line.trim();
                if !(line.is_empty() || line.starts_with('#')) {
                    let place = format!("{path} line {}", index + 1);
                    entries.push(("auth.tokens_file".to_owned(), place, line.to_owned()));
                }
            }
        }
        for (index, entry) in self.tokens.split(';').enumerate() {
            let entry = entry.trim();
            if !entry.is_empty() {
                let key = format!("auth.tokens[{index}]");
                entries.push((key.clone(), key, entry.to_owned()));
            }
        }

        let mut credentials: Vec<(Credential, &str)> = Vec::with_capacity(entries.len());
        for (key, place, text) in &entries {
            let invalid = |message: String| ConfigError::Invalid {
                key: key.clone(),
                message: if key == place {
                    message
                } else {
                    format!("{place}: {message}")
                },
            };
            let credential = parse_token_entry(text).map_err(invalid)?;
            if let Some((_, other)) = credentials.iter().find(|(c, _)| c.name == credential.name) {
                // The name is not quoted either: in a line written in the wrong order it could
                // be the token.
                return Err(invalid(format!("the name is already used by {other}")));
            }
            if let Some((_, other)) = credentials
                .iter()
                .find(|(c, _)| c.digest == credential.digest)
            {
                return Err(invalid(format!(
                    "the token is the same as that of {other}; every name needs its own"
                )));
            }
            credentials.push((credential, place));
        }
        Ok(credentials.into_iter().map(|(c, _)| c).collect())
    }
}

/// The qualifiers a token entry may have after its token (only `bridge` entries have them).
const QUALIFIERS: [&str; 2] = ["bridge_ids", "channels"];

/// Longest bridge id or channel in a binding, in bytes (as the API's ids).
const MAX_BINDING_ID_BYTES: usize = 256;

/// Parses `ROLES NAME TOKEN [bridge_ids=ID,... channels=CHANNEL,...]`. Messages never quote the
/// token, nor any field that could be a misplaced one.
fn parse_token_entry(entry: &str) -> Result<Credential, String> {
    let fields: Vec<&str> = entry.split_whitespace().collect();
    let [roles, name, token, ref qualifiers @ ..] = fields[..] else {
        return Err(format!(
            "expected `ROLES NAME TOKEN` (roles comma-separated; a bridge's binding after the \
             token), found {} fields",
            fields.len()
        ));
    };
    let known = Roles::of(&Role::ALL);
    let mut set = Roles::NONE;
    for role in roles.split(',') {
        match Role::from_name(role) {
            Some(role) => set = set.with(role),
            // The role before the split into classifier and bridge: refused rather than kept
            // as an alias, since its power (any bridge id, any channel) is what was removed.
            None if role == "service" => {
                return Err(
                    "the role `service` no longer exists: use `classifier` for a \
                     backend that calls Classify, or `bridge` bound to its bridge ids and \
                     channels for a chat bridge (`bridge NAME TOKEN bridge_ids=ID \
                     channels=CHANNEL,...`)"
                        .to_owned(),
                );
            }
            // A field as long as a token may be one written in the wrong place: not quoted.
            None if role.len() >= MIN_TOKEN_BYTES => {
                return Err(format!(
                    "the first field is not a list of roles (roles: {known})"
                ));
            }
            None => return Err(format!("unknown role `{role}` (roles: {known})")),
        }
    }
    if token.len() < MIN_TOKEN_BYTES {
        return Err(format!(
            "the token (third field) is {} bytes; at least {MIN_TOKEN_BYTES} are needed",
            token.len()
        ));
    }
    // gRPC metadata is ASCII: a token no client can send is a mistake worth naming.
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the token (third field) has characters other than printable ASCII".to_owned());
    }
    let credential = Credential::new(name, set, token.as_bytes());
    let binding = parse_binding(qualifiers)?;
    match (set.contains(Role::Bridge), binding) {
        (true, Some(binding)) => Ok(credential.bound(binding)),
        (false, None) => Ok(credential),
        (true, None) => Err(
            "a `bridge` entry is bound to its bridge ids and channels: add \
             `bridge_ids=ID[,ID...] channels=CHANNEL[,CHANNEL...]` after the token"
                .to_owned(),
        ),
        (false, Some(_)) => Err(
            "bridge_ids= and channels= bind a `bridge` entry; this entry has no bridge role"
                .to_owned(),
        ),
    }
}

/// The binding written after a token (`None` for no qualifiers at all). Fields are named by
/// position or by their known key, never quoted: a token written in the wrong place could be
/// one of them.
fn parse_binding(qualifiers: &[&str]) -> Result<Option<BridgeBinding>, String> {
    if qualifiers.is_empty() {
        return Ok(None);
    }
    let mut bridge_ids = None;
    let mut channels = None;
    for (i, field) in qualifiers.iter().enumerate() {
        let position = i + 4;
        let Some((key, value)) = field
            .split_once('=')
            .filter(|(key, _)| QUALIFIERS.contains(key))
        else {
            return Err(format!(
                "field {position} is not `bridge_ids=...` or `channels=...` (expected `ROLES NAME \
                 TOKEN`, then for a bridge `bridge_ids=ID[,ID...] channels=CHANNEL[,CHANNEL...]`)"
            ));
        };
        let slot = if key == "bridge_ids" {
            &mut bridge_ids
        } else {
            &mut channels
        };
        if slot.is_some() {
            return Err(format!("`{key}=` is given twice"));
        }
        let mut list: Vec<String> = Vec::new();
        for item in value.split(',') {
            if item.is_empty() || item.len() > MAX_BINDING_ID_BYTES {
                return Err(format!(
                    "`{key}=` is a comma-separated list of names of 1 to \
                     {MAX_BINDING_ID_BYTES} bytes"
                ));
            }
            if !list.iter().any(|seen| seen == item) {
                list.push(item.to_owned());
            }
        }
        *slot = Some(list);
    }
    match (bridge_ids, channels) {
        (Some(bridge_ids), Some(channels)) => Ok(Some(BridgeBinding {
            bridge_ids,
            channels,
        })),
        (None, _) => Err("a bridge binding needs `bridge_ids=` as well".to_owned()),
        (_, None) => Err("a bridge binding needs `channels=` as well".to_owned()),
    }
}

/// `auth.tokens` with every token replaced by `***` (entries that do not parse are hidden
/// whole, since where their token is cannot be known).
pub fn redact_tokens(tokens: &str) -> String {
    tokens
        .split(';')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(
            |entry| match entry.split_whitespace().collect::<Vec<_>>()[..] {
                [roles, name, _, ref qualifiers @ ..]
                    if qualifiers.iter().all(|q| {
                        q.split_once('=')
                            .is_some_and(|(key, _)| QUALIFIERS.contains(&key))
                    }) =>
                {
                    let mut shown = format!("{roles} {name} ***");
                    for qualifier in qualifiers {
                        shown.push(' ');
                        shown.push_str(qualifier);
                    }
                    shown
                }
                _ => "***".to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("; ")
}

/// Refuses to serve without tokens on anything but a loopback address: every caller would be
/// trusted, and only the local machine's callers may be.
pub fn refuse_open_bind(addr: SocketAddr) -> Result<(), ConfigError> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        key: "auth.tokens".to_owned(),
        message: format!(
            "no auth tokens are configured (auth.tokens, auth.tokens_file) and {addr} (grpc.addr \
             or http.addr) is not a loopback address: every caller would be trusted. Configure tokens, or \
             bind 127.0.0.1 / [::1]"
        ),
    })
}

/// A configured device, before it is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The CPU.
    Cpu,
    /// An NVIDIA GPU by ordinal.
    Cuda(usize),
}

/// Parses `cpu`, `cuda` (GPU 0) or `cuda:N`.
pub fn parse_device(text: &str) -> Option<DeviceSpec> {
    match text.trim() {
        "cpu" => Some(DeviceSpec::Cpu),
        "cuda" => Some(DeviceSpec::Cuda(0)),
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(DeviceSpec::Cuda),
    }
}

impl DeviceSpec {
    /// `cpu` or `cuda:N`, as `GetModelInfo` reports it.
    pub fn name(self) -> String {
        match self {
            DeviceSpec::Cpu => "cpu".to_owned(),
            DeviceSpec::Cuda(ordinal) => format!("cuda:{ordinal}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse() {
        assert_eq!(parse_device("cpu"), Some(DeviceSpec::Cpu));
        assert_eq!(parse_device("cuda"), Some(DeviceSpec::Cuda(0)));
        assert_eq!(parse_device("cuda:3"), Some(DeviceSpec::Cuda(3)));
        assert_eq!(parse_device("gpu"), None);
        assert_eq!(parse_device("cuda:x"), None);
        assert_eq!(DeviceSpec::Cuda(1).name(), "cuda:1");
    }

    fn load(
        file: Option<&str>,
        env: &[(&str, &str)],
        sets: &[(&str, &str)],
    ) -> Result<Loaded, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("modbot.toml");
        if let Some(text) = file {
            std::fs::write(&path, text).unwrap();
        }
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let sets: Vec<_> = sets
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load(file.map(|_| path.as_path()), env, &sets)
    }

    fn error(file: Option<&str>, env: &[(&str, &str)], sets: &[(&str, &str)]) -> String {
        load(file, env, sets)
            .expect_err("the configuration should be rejected")
            .to_string()
    }

    #[test]
    fn defaults_are_the_shipped_file() {
        let shipped =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/modbot.toml"))
                .unwrap();
        let from_file = load(Some(&shipped), &[], &[]).unwrap().config;
        assert_eq!(from_file, Config::default());
        assert_eq!(Config::default().grpc.max_messages_per_call, 64);
        assert_eq!(Config::default().grpc.max_text_bytes, 4096);
        assert_eq!(Config::default().database_url(), "sqlite://data/modbot.db");
    }

    #[test]
    fn layers_apply_in_order() {
        let file = "[grpc]\naddr = \"127.0.0.1:7000\"\nmax_text_bytes = 100\n";
        let loaded = load(
            Some(file),
            &[
                ("MODBOT_GRPC_ADDR", "127.0.0.1:7001"),
                ("MODBOT_DATABASE_URL", "postgres://u:p@h/db"),
            ],
            &[("grpc.addr", "127.0.0.1:7002")],
        )
        .unwrap();
        let config = loaded.config;
        assert_eq!(config.grpc.addr.port(), 7002);
        assert_eq!(config.grpc.max_text_bytes, 100);
        assert_eq!(config.database.url, "postgres://u:p@h/db");
        // Keys the file left out keep their defaults.
        assert_eq!(config.grpc.max_messages_per_call, 64);
        assert_eq!(config.rules, Config::default().rules);
    }

    #[test]
    fn typed_environment_values() {
        let config = load(
            None,
            &[
                ("MODBOT_GRPC_MAX_MESSAGES_PER_CALL", "8"),
                ("MODBOT_METRICS_ADDR", ""),
            ],
            &[],
        )
        .unwrap()
        .config;
        assert_eq!(config.grpc.max_messages_per_call, 8);
        assert_eq!(config.metrics.addr, None);
    }

    #[test]
    fn errors_name_the_key() {
        // (file, environment, --set flags, what the error must name)
        type Case<'a> = (
            Option<&'a str>,
            &'a [(&'a str, &'a str)],
            &'a [(&'a str, &'a str)],
            &'a str,
        );
        let cases: &[Case] = &[
            (
                None,
                &[("MODBOT_GRPC_MAX_MESSAGES_PER_CALL", "lots")],
                &[],
                "grpc.max_messages_per_call",
            ),
            (
                None,
                &[("MODBOT_GRPC_MAX_MESSAGES_PER_CALL", "0")],
                &[],
                "grpc.max_messages_per_call",
            ),
            (None, &[("MODBOT_GRPC_ADDR", "nowhere")], &[], "grpc.addr"),
            (None, &[], &[("metrics.addr", "localhost")], "metrics.addr"),
            (None, &[], &[("grpc.nope", "1")], "grpc.nope"),
            (None, &[], &[("database.url", "mysql://x")], "database.url"),
            (None, &[], &[("log.format", "xml")], "log.format"),
            (Some("[grpc]\nadr = \"x\"\n"), &[], &[], "grpc"),
            (
                Some("[grpc]\nmax_text_bytes = -1\n"),
                &[],
                &[],
                "grpc.max_text_bytes",
            ),
            (
                None,
                &[("MODBOT_STATE_RECENT_PER_USER", "0")],
                &[],
                "state.recent_per_user",
            ),
            (
                None,
                &[],
                &[("state.history_per_channel", "10001")],
                "`state.history_per_channel`: 10001 is outside 1..=10000",
            ),
            (
                None,
                &[("MODBOT_STATE_HISTORY_PER_CHANNEL", "74")],
                &[],
                "`state.history_per_channel`: 74 is less than state.recent_per_channel (75)",
            ),
            (None, &[], &[("redis.url", "http://x")], "redis.url"),
            (
                None,
                &[("MODBOT_RULES_RELOAD_INTERVAL_MS", "50")],
                &[],
                "rules.reload_interval_ms",
            ),
            (
                None,
                &[],
                &[("redis.url", "rediss://cache:6380")],
                "redis.url",
            ),
            (Some("not toml ="), &[], &[], "not valid TOML"),
            (
                None,
                &[("MODBOT_RETENTION_AUDIT_DAYS", "36501")],
                &[],
                "`retention.audit_days`: 36501 is above 36500",
            ),
            (
                None,
                &[],
                &[("retention.interval_secs", "0")],
                "retention.interval_secs",
            ),
            (
                None,
                &[],
                &[("retention.batch_rows", "10001")],
                "retention.batch_rows",
            ),
            (
                None,
                &[],
                &[("retention.feedback_days", "-1")],
                "retention.feedback_days",
            ),
        ];
        for (file, env, sets, expected) in cases {
            let message = error(*file, env, sets);
            assert!(
                message.contains(expected),
                "expected `{expected}` in: {message}"
            );
        }
    }

    #[test]
    fn unknown_environment_variables_warn() {
        let loaded = load(
            None,
            &[("MODBOT_GRPC_ADR", "x"), ("MODBOT_TEST_DATABASE_URL", "y")],
            &[],
        )
        .unwrap();
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(loaded.warnings[0].contains("MODBOT_GRPC_ADR"));
    }

    #[test]
    fn every_key_has_an_environment_variable() {
        let keys = scalar_keys(&default_table());
        for key in [
            "grpc.addr",
            "metrics.addr",
            "database.url",
            "redis.url",
            "model.dir",
            "data_dir",
        ] {
            assert!(
                keys.contains(&key.to_owned()),
                "{key} missing from {keys:?}"
            );
        }
        assert_eq!(env_name("grpc.addr"), "MODBOT_GRPC_ADDR");
        assert_eq!(env_name("data_dir"), "MODBOT_DATA_DIR");
    }

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(
            redact_url("postgres://modbot:hunter2@db:5432/modbot"),
            "postgres://modbot:***@db:5432/modbot"
        );
        assert_eq!(
            redact_url("redis://:pw@cache:6379/0"),
            "redis://:***@cache:6379/0"
        );
        assert_eq!(
            redact_url("postgres://modbot@db/x"),
            "postgres://modbot@db/x"
        );
        assert_eq!(redact_url(""), "");
        let mut config = Config::default();
        config.database.url = "postgres://modbot:hunter2@db/modbot".into();
        let shown = config.to_redacted_toml();
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("modbot:***@db"));
    }

    #[test]
    fn every_password_form_in_a_url_is_redacted() {
        // (URL, as shown): each secret is spelled `s3cret...` so one check covers them all.
        let cases = [
            (
                "postgres://modbot:s3cret1@db:5432/modbot?sslmode=require",
                "postgres://modbot:***@db:5432/modbot?sslmode=require",
            ),
            (
                "postgres://modbot@db/modbot?password=s3cret2",
                "postgres://modbot@db/modbot?password=***",
            ),
            (
                "postgresql://db/modbot?user=modbot&password=s3cret3&sslmode=verify-full",
                "postgresql://db/modbot?user=modbot&password=***&sslmode=verify-full",
            ),
            (
                "postgres://u:s3cret4@db/x?sslkey=/k.pem&sslpassword=s3cret5",
                "postgres://u:***@db/x?sslkey=/k.pem&sslpassword=***",
            ),
            (
                "postgres://db/x?PassWord=s3cret6&pass%77ord=s3cret7",
                "postgres://db/x?PassWord=***&pass%77ord=***",
            ),
            ("redis://:s3cret8@cache:6379/0", "redis://:***@cache:6379/0"),
            (
                "rediss://default:s3cret9@cache:6380",
                "rediss://default:***@cache:6380",
            ),
            // Not percent-encoded, a password may hold `@` and `/`: hidden whole.
            (
                "postgres://modbot:s3cret/10@x@db/modbot",
                "postgres://modbot:***@db/modbot",
            ),
            (
                "wss://chat.example/ws?token=s3cret11#top",
                "wss://chat.example/ws?token=***#top",
            ),
            (
                "sqlite://data/modbot.db?mode=rwc",
                "sqlite://data/modbot.db?mode=rwc",
            ),
            ("postgres://modbot@db/x", "postgres://modbot@db/x"),
            ("", ""),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
            assert!(!redact_url(url).contains("s3cret"), "{url}");
        }
    }

    /// Every secret a configuration can hold, set at once.
    fn config_with_secrets() -> Config {
        let mut config = Config::default();
        config.database.url =
            "postgres://modbot:s3cret-db@db/modbot?sslpassword=s3cret-key&password=s3cret-q".into();
        config.redis.url = "redis://:s3cret-redis@cache:6379/0".into();
        config.auth.tokens =
            "admin ops s3cret-admin-token-0123; service bridge s3cret-svc-0123456".into();
        config.bridge.chat_token = "s3cret-chat".into();
        config.bridge.server_token = "s3cret-bearer".into();
        config.bridge.chat_url = "wss://chat.example/ws?token=s3cret-chat-url".into();
        config.bridge.server_url = "https://bridge:s3cret-basic@modbot:50051".into();
        config
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let config = config_with_secrets();
        for shown in [
            format!("{config:?}"),
            format!("{config:#?}"),
            format!("{:?}", config.database),
            format!("{:?}", config.redis),
            format!("{:?}", config.auth),
            format!("{:?}", config.bridge),
            config.to_redacted_toml(),
        ] {
            assert!(!shown.contains("s3cret"), "{shown}");
        }
        let shown = format!("{config:?}");
        // What is not secret is still there.
        assert!(shown.contains("modbot:***@db/modbot"), "{shown}");
        assert!(shown.contains("admin ops ***"), "{shown}");
        assert!(shown.contains("max_connections: 8"), "{shown}");
    }
}
