//! The database: SQLite embedded by default, PostgreSQL in production, one code path for both.
//!
//! modbot picks the backend at run time from the URL, so it uses sqlx's `Any` driver with
//! portable SQL (see `migrations/README.md`) instead of two copies of every query. Migrations
//! are compiled in and applied by [`Store::migrate`].
//!
//! Architecture Invariant: only this module writes SQL. It knows the domain types it stores,
//! never gRPC.

use std::borrow::Cow;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Row, SqlSafeStr};

mod actions;
mod feedback;
mod retention;
mod rules;

pub use self::actions::{ActionAnswer, Expired, Filed, MAX_ROUTES, Recorded, Resolved};
pub use self::feedback::{Feedback, FeedbackSource};
pub use self::retention::{RetentionTable, SqlitePages, VACUUM_AT_CONNECT_MAX_BYTES};
pub use self::rules::{
    Change, ChangeTarget, HistoryEntry, StoredPolicy, StoredRule, StoredRuleSet,
};

use crate::config::redact_url;
use crate::decision::{ChatMessage, Decision, Degraded, Verdict};

/// A migration's SQL: one portable file, or one per backend where they must differ.
enum MigrationSql {
    Portable(&'static str),
    PerBackend {
        sqlite: &'static str,
        postgres: &'static str,
    },
}

impl MigrationSql {
    fn for_backend(&self, backend: Backend) -> &'static str {
        match (self, backend) {
            (Self::Portable(sql), _) => sql,
            (Self::PerBackend { sqlite, .. }, Backend::Sqlite) => sqlite,
            (Self::PerBackend { postgres, .. }, Backend::Postgres) => postgres,
        }
    }
}

/// The migrations, in order, compiled into the binary.
const MIGRATIONS: &[(i64, &str, MigrationSql)] = &[
    (
        1,
        "audit log",
        MigrationSql::Portable(include_str!("../../migrations/0001_audit_log.sql")),
    ),
    (
        2,
        "feedback",
        MigrationSql::Portable(include_str!("../../migrations/0002_feedback.sql")),
    ),
    (
        3,
        "actions, appeals and nukes",
        MigrationSql::Portable(include_str!("../../migrations/0003_actions_appeals.sql")),
    ),
    (
        4,
        "rules and channel policies",
        MigrationSql::Portable(include_str!("../../migrations/0004_rules.sql")),
    ),
    (
        5,
        "idempotency keys per credential",
        MigrationSql::PerBackend {
            sqlite: include_str!("../../migrations/0005_idempotency_per_credential.sqlite.sql"),
            postgres: include_str!("../../migrations/0005_idempotency_per_credential.postgres.sql"),
        },
    ),
    (
        6,
        "retention",
        MigrationSql::Portable(include_str!("../../migrations/0006_retention.sql")),
    ),
];

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Backend {
    /// The backend a URL names, if modbot supports it.
    pub fn from_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }
}

/// Why a database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no supported database.
    #[error("database url `{0}` is neither sqlite:... nor postgres://...")]
    UnsupportedUrl(String),
    /// The SQLite file's directory could not be created.
    #[error("cannot create the database directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The database could not be reached before the connect timeout.
    #[error("cannot connect to the database at {url} within {timeout:?}: {source}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// How long connecting was retried.
        timeout: Duration,
        /// The last error.
        source: sqlx::Error,
    },
    /// Applying migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database query failed: {0}")]
    Query(#[from] sqlx::Error),
    /// A stored row could not be read back.
    #[error("stored row {id} is corrupt: {message}")]
    Corrupt {
        /// The row's id.
        id: String,
        /// What is wrong with it.
        message: String,
    },
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Largest number of pooled connections.
    pub max_connections: u32,
    /// How long to retry an unreachable database.
    pub connect_timeout: Duration,
}

/// One entry of the audit log: a notable verdict and the message it was about.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// Unique, time-ordered id.
    pub id: String,
    /// When the verdict was made.
    pub decided_at: SystemTime,
    /// The message.
    pub message: ChatMessage,
    /// The verdict (scores and normalised text are not stored).
    pub verdict: Verdict,
    /// The action that carries the verdict out, written in the same transaction.
    pub action: Option<crate::actions::Action>,
}

impl AuditRecord {
    /// A record for a verdict made now.
    pub fn new(message: ChatMessage, verdict: Verdict) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            decided_at: SystemTime::now(),
            message,
            verdict,
            action: None,
        }
    }

    /// The record with the action that carries its verdict out.
    pub fn with_action(mut self, action: Option<crate::actions::Action>) -> Self {
        self.action = action;
        self
    }
}

/// Which audit records to read, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this channel.
    pub channel: Option<String>,
    /// Only this user (within the channel, when one is given).
    pub user_id: Option<String>,
    /// Only verdicts on this message.
    pub message_id: Option<String>,
    /// At most this many.
    pub limit: u32,
}

/// A connection pool to modbot's database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Connects, retrying with backoff until `options.connect_timeout` has passed, and creates
    /// an SQLite file (and its directory) if missing. Does not migrate.
    pub async fn connect(url: &str, options: &ConnectOptions) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend =
            Backend::from_url(url).ok_or_else(|| StoreError::UnsupportedUrl(redact_url(url)))?;
        let url = match backend {
            Backend::Sqlite => prepare_sqlite_url(url)?,
            Backend::Postgres => {
                let (url, ignored) = postgres_url_for_driver(url);
                for key in ignored {
                    // The driver would log the parameter's value with its own warning (an
                    // `sslpassword` in clear): it is dropped here and only its name shown.
                    tracing::warn!(
                        %key,
                        "database.url: ignoring a connect parameter the PostgreSQL driver does \
                         not support (value not shown)"
                    );
                }
                url
            }
        };

        let deadline = Instant::now() + options.connect_timeout;
        let mut backoff = Duration::from_millis(100);
        loop {
            let attempt = AnyPoolOptions::new()
                .max_connections(options.max_connections)
                .acquire_timeout(options.connect_timeout.max(Duration::from_secs(1)))
                .after_connect(move |conn, _meta| {
                    Box::pin(async move {
                        if backend == Backend::Sqlite {
                            // WAL lets readers proceed while a write is in progress; NORMAL
                            // sync is durable across application crashes, which is what an
                            // audit log on one machine needs.
                            sqlx::query("PRAGMA journal_mode = WAL")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA synchronous = NORMAL")
                                .execute(&mut *conn)
                                .await?;
                        }
                        Ok(())
                    })
                })
                .connect(&url)
                .await;
            match attempt {
                Ok(pool) => {
                    let store = Self { pool, backend };
                    if backend == Backend::Sqlite {
                        store
                            .use_incremental_vacuum(Some(retention::VACUUM_AT_CONNECT_MAX_BYTES))
                            .await?;
                    }
                    return Ok(store);
                }
                Err(source) if Instant::now() + backoff >= deadline => {
                    return Err(StoreError::Connect {
                        url: redact_url(&url),
                        timeout: options.connect_timeout,
                        source,
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "database not reachable yet");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Applies every migration not yet applied.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.migrate_up_to(i64::MAX).await
    }

    /// Applies the migrations not yet applied up to `version`: for tests of a migration on a
    /// database made by the ones before it.
    #[doc(hidden)]
    pub async fn migrate_up_to(&self, version: i64) -> Result<(), StoreError> {
        let migrations = MIGRATIONS
            .iter()
            .filter(|(number, _, _)| *number <= version)
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*description),
                    MigrationType::Simple,
                    sql.for_backend(self.backend).into_sql_str(),
                    false,
                )
            })
            .collect();
        Migrator::with_migrations(migrations)
            .run(&self.pool)
            .await?;
        Ok(())
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes every connection, waiting for those in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Writes audit records and the actions that carry them out, all or none. An action
    /// recorded before (the same message decided again) is kept as it was.
    pub async fn record_verdicts(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for record in records {
            let (message, verdict) = (&record.message, &record.verdict);
            let degraded: Vec<&str> = verdict.degraded.iter().map(|d| d.as_str()).collect();
            sqlx::query(
                "INSERT INTO audit_log (id, decided_at, channel, message_id, user_id, nick, roles, text, \
                 sent_at, decision, duration_ms, enforced, shadow_decision, reasons, model_version, \
                 degraded, elapsed_us) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
            )
            .bind(&record.id)
            .bind(unix_millis(record.decided_at))
            .bind(&message.channel)
            .bind(&message.message_id)
            .bind(&message.user_id)
            .bind(&message.nick)
            .bind(to_json(&message.roles))
            .bind(&message.text)
            .bind(unix_millis(message.sent_at))
            .bind(verdict.decision.as_str())
            .bind(verdict.duration.map(duration_millis))
            .bind(i64::from(verdict.enforced))
            .bind(verdict.shadow_decision.as_str())
            .bind(to_json(&verdict.reasons))
            .bind(&verdict.model_version)
            .bind(to_json(&degraded))
            .bind(i64::try_from(verdict.elapsed.as_micros()).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
            if let Some(action) = &record.action
                && actions::insert_action(&mut tx, action).await?
            {
                crate::actions::dispatch::count_recorded(action);
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Reads audit records, newest first.
    pub async fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, decided_at, channel, message_id, user_id, nick, roles, text, sent_at, \
             decision, duration_ms, enforced, shadow_decision, reasons, model_version, degraded, \
             elapsed_us FROM audit_log \
             WHERE ($1 = '' OR channel = $1) AND ($2 = '' OR user_id = $2) \
             AND ($3 = '' OR message_id = $3) \
             ORDER BY decided_at DESC, id DESC LIMIT $4",
        )
        .bind(query.channel.as_deref().unwrap_or(""))
        .bind(query.user_id.as_deref().unwrap_or(""))
        .bind(query.message_id.as_deref().unwrap_or(""))
        .bind(i64::from(query.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(audit_record_from_row).collect()
    }
}

fn audit_record_from_row(row: &AnyRow) -> Result<AuditRecord, StoreError> {
    let id: String = row.try_get("id")?;
    let corrupt = |message: String| StoreError::Corrupt {
        id: id.clone(),
        message,
    };
    let decision_named = |column: &str| -> Result<Decision, StoreError> {
        let name: String = row.try_get(column)?;
        Decision::from_name(&name).ok_or_else(|| corrupt(format!("{column} `{name}` is unknown")))
    };
    let json = |column: &str| -> Result<serde_json::Value, StoreError> {
        let text: String = row.try_get(column)?;
        serde_json::from_str(&text).map_err(|e| corrupt(format!("{column}: {e}")))
    };
    let message = ChatMessage {
        channel: row.try_get("channel")?,
        message_id: row.try_get("message_id")?,
        user_id: row.try_get("user_id")?,
        nick: row.try_get("nick")?,
        roles: serde_json::from_value(json("roles")?)
            .map_err(|e| corrupt(format!("roles: {e}")))?,
        text: row.try_get("text")?,
        sent_at: from_unix_millis(row.try_get("sent_at")?),
    };
    let duration_ms: Option<i64> = row.try_get("duration_ms")?;
    let enforced: i64 = row.try_get("enforced")?;
    let elapsed_us: i64 = row.try_get("elapsed_us")?;
    let degraded: Vec<Degraded> =
        serde_json::from_value(json("degraded")?).map_err(|e| corrupt(format!("degraded: {e}")))?;
    let verdict = Verdict {
        message_id: message.message_id.clone(),
        channel: message.channel.clone(),
        user_id: message.user_id.clone(),
        decision: decision_named("decision")?,
        duration: duration_ms.map(|ms| Duration::from_millis(ms.max(0).unsigned_abs())),
        reasons: serde_json::from_value(json("reasons")?)
            .map_err(|e| corrupt(format!("reasons: {e}")))?,
        enforced: enforced != 0,
        shadow_decision: decision_named("shadow_decision")?,
        model_version: row.try_get("model_version")?,
        elapsed: Duration::from_micros(elapsed_us.max(0).unsigned_abs()),
        degraded,
        scores: Default::default(),
        normalized_text: String::new(),
        action_id: None,
    };
    Ok(AuditRecord {
        decided_at: from_unix_millis(row.try_get("decided_at")?),
        id,
        message,
        verdict,
        action: None,
    })
}

/// Connect parameters sqlx's PostgreSQL driver reads from a URL's query. It logs any other
/// parameter at WARN *with its value*, which for `sslpassword` (which it does not support) is
/// a password in the log.
const POSTGRES_URL_PARAMETERS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// A PostgreSQL URL without the query parameters the driver does not read, and the names of
/// those dropped (never their values).
fn postgres_url_for_driver(url: &str) -> (String, Vec<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), Vec::new());
    };
    let (query, fragment) = query.split_once('#').unwrap_or((query, ""));
    let mut kept = Vec::new();
    let mut ignored = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let key = crate::config::percent_decode(pair.split_once('=').map_or(pair, |(k, _)| k));
        if POSTGRES_URL_PARAMETERS.contains(&key.as_str()) || key.starts_with("options[") {
            kept.push(pair);
        } else {
            ignored.push(key);
        }
    }
    let mut url = base.to_owned();
    if !kept.is_empty() {
        url.push('?');
        url.push_str(&kept.join("&"));
    }
    if !fragment.is_empty() {
        url.push('#');
        url.push_str(fragment);
    }
    (url, ignored)
}

/// Adds `mode=rwc` (create if missing) to an SQLite URL and creates the file's directory.
fn prepare_sqlite_url(url: &str) -> Result<String, StoreError> {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let dir = Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir.filter(|_| path != ":memory:") {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.display().to_string(),
            source,
        })?;
    }
    Ok(if query.contains("mode=") {
        url.to_owned()
    } else if query.is_empty() {
        format!("{}?mode=rwc", url.trim_end_matches('?'))
    } else {
        format!("{url}&mode=rwc")
    })
}

fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("stored values always serialise to JSON. This is a bug")
}

/// Unix milliseconds of a time (negative before 1970).
pub fn unix_millis(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// The time of Unix milliseconds.
pub fn from_unix_millis(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

fn duration_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_create_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/a/b/modbot.db", dir.path().display());
        assert_eq!(prepare_sqlite_url(&url).unwrap(), format!("{url}?mode=rwc"));
        assert!(dir.path().join("a/b").is_dir());
        assert_eq!(
            prepare_sqlite_url("sqlite::memory:").unwrap(),
            "sqlite::memory:?mode=rwc"
        );
        assert_eq!(
            prepare_sqlite_url("sqlite://x.db?mode=ro").unwrap(),
            "sqlite://x.db?mode=ro"
        );
    }

    #[test]
    fn postgres_urls_lose_the_parameters_the_driver_would_log() {
        let (url, ignored) = postgres_url_for_driver(
            "postgres://u:p@h/db?sslmode=require&sslpassword=s3cret&options=-c%20x%3Dy&pass%77ord=p2&Bogus=1",
        );
        assert_eq!(
            url,
            "postgres://u:p@h/db?sslmode=require&options=-c%20x%3Dy&pass%77ord=p2"
        );
        assert_eq!(ignored, ["sslpassword", "Bogus"]);
        assert_eq!(
            postgres_url_for_driver("postgres://h/db?sslpassword=x"),
            ("postgres://h/db".to_owned(), vec!["sslpassword".to_owned()])
        );
        assert_eq!(
            postgres_url_for_driver("postgres://h/db").0,
            "postgres://h/db"
        );
    }

    #[test]
    fn unix_millis_round_trip() {
        for ms in [0, 1, 1_700_000_000_123, -5_000] {
            assert_eq!(unix_millis(from_unix_millis(ms)), ms);
        }
    }
}
