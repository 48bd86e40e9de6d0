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
}

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
}

impl GrpcConfig {
    /// The shutdown grace period as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://...` or `postgres://...`; empty for the embedded SQLite file.
    pub url: String,
    /// Largest number of pooled connections.
    pub max_connections: u32,
    /// How long start-up retries an unreachable database.
    pub connect_timeout_secs: u64,
}

/// `[redis]`: shared user state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://...`; empty keeps user state in-process.
    pub url: String,
    /// Prefix of every key modbot writes.
    pub key_prefix: String,
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
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
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
    /// A rules file; empty for the built-in set (`config/rules.toml`).
    pub file: PathBuf,
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
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.to_owned(),
            message,
        };
        if !(1..=1024).contains(&self.grpc.max_messages_per_call) {
            return Err(invalid(
                "grpc.max_messages_per_call",
                format!("{} is outside 1..=1024", self.grpc.max_messages_per_call),
            ));
        }
        if !(1..=65_536).contains(&self.grpc.max_text_bytes) {
            return Err(invalid(
                "grpc.max_text_bytes",
                format!("{} is outside 1..=65536", self.grpc.max_text_bytes),
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
        if crate::model::parse_device(&model.device).is_none() {
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
        if self.redis.key_prefix.is_empty() {
            return Err(invalid("redis.key_prefix", "must not be empty".to_owned()));
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

/// Replaces the password of a URL (`scheme://user:password@host`) with `***`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}://{}:***{}",
            &url[..scheme_end],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
                &[],
                &[("redis.url", "rediss://cache:6380")],
                "redis.url",
            ),
            (Some("not toml ="), &[], &[], "not valid TOML"),
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
}
