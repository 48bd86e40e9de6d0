//! The database: SQLite embedded by default, PostgreSQL in production, one code path for both.
//!
//! modbot picks the backend at run time from the URL, so it uses sqlx's `Any` driver with
//! portable SQL (see `migrations/README.md`) instead of two copies of every query. Migrations
//! are compiled in and applied by [`Store::migrate`].
//!
//! Architecture Invariant: only this module writes SQL. It knows the domain types it stores,
//! never gRPC.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Row, SqlSafeStr};

mod actions;
mod feedback;
mod retention;
mod review;
mod rollouts;
mod rules;

pub use self::actions::{ActionAnswer, Expired, Filed, MAX_ROUTES, Recorded, Resolved};
pub use self::feedback::{Feedback, FeedbackSource};
pub use self::retention::{RetentionTable, SqlitePages, VACUUM_AT_CONNECT_MAX_BYTES};
pub use self::review::{QueueDepth, ReviewRuled};
pub use self::rollouts::{RuledTrial, StoredRollout};
pub use self::rules::{
    Change, ChangeTarget, HistoryEntry, StoredPolicy, StoredRule, StoredRuleSet,
};

use crate::config::redact_url;
use crate::domain::{ChatMessage, Decision, Degraded, Verdict, from_unix_millis, unix_millis};

/// A migration's SQL: one portable file, or one per backend where they must differ.
enum MigrationSql {
    Portable(&'static str),
    PerBackend {
        sqlite: &'static str,
        postgres: &'static str,
    },
}

impl MigrationSql {
    fn for_backend(&self, backend: Database) -> &'static str {
        match (self, backend) {
            (Self::Portable(sql), _) => sql,
            (Self::PerBackend { sqlite, .. }, Database::Sqlite) => sqlite,
            (Self::PerBackend { postgres, .. }, Database::Postgres) => postgres,
        }
    }
}

/// The migrations, in order, compiled into the binary.
const MIGRATIONS: &[(i64, &str, MigrationSql)] = &[
    (
        1,
        "audit log",
        MigrationSql::Portable(include_str!("../../../migrations/0001_audit_log.sql")),
    ),
    (
        2,
        "feedback",
        MigrationSql::Portable(include_str!("../../../migrations/0002_feedback.sql")),
    ),
    (
        3,
        "actions, appeals and nukes",
        MigrationSql::Portable(include_str!("../../../migrations/0003_actions_appeals.sql")),
    ),
    (
        4,
        "rules and channel policies",
        MigrationSql::Portable(include_str!("../../../migrations/0004_rules.sql")),
    ),
    (
        5,
        "idempotency keys per credential",
        MigrationSql::PerBackend {
            sqlite: include_str!("../../../migrations/0005_idempotency_per_credential.sqlite.sql"),
            postgres: include_str!(
                "../../../migrations/0005_idempotency_per_credential.postgres.sql"
            ),
        },
    ),
    (
        6,
        "retention",
        MigrationSql::Portable(include_str!("../../../migrations/0006_retention.sql")),
    ),
    (
        7,
        "review queue",
        MigrationSql::Portable(include_str!("../../../migrations/0007_review_queue.sql")),
    ),
    (
        8,
        "audit records by message",
        MigrationSql::Portable(include_str!(
            "../../../migrations/0008_audit_by_message.sql"
        )),
    ),
    (
        9,
        "model rollouts and trial decisions",
        MigrationSql::Portable(include_str!("../../../migrations/0009_model_rollouts.sql")),
    ),
];

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Database {
    /// An SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Database {
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
    /// A call did not finish in time (`database.statement_timeout_ms`, doubled for the whole
    /// call): the database or the way to it is stalled.
    #[error("the database did not answer within {0:?}")]
    Timeout(Duration),
}

/// What kind of failure a [`StoreError`] is: whether trying again can help, and whose fault
/// it is. The gRPC edge maps each to one status (`grpc/status.rs`); the audit writer splits a
/// batch only on a permanent failure, since a split repeats a transient one once per half.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The database is unreachable, stalled, busy or restarting: the same call may succeed
    /// later.
    Transient,
    /// The write contradicts stored data (a unique, foreign key, not-null or check
    /// constraint): repeating it fails the same way.
    Constraint,
    /// A value the database cannot hold (PostgreSQL's data exceptions, SQLite's too big or
    /// mismatched values): repeating it fails the same way.
    InvalidData,
    /// A bug or corruption on modbot's side (bad SQL, a row that does not decode, a failed
    /// migration).
    Internal,
}

impl FailureKind {
    /// The lower-case name used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Transient => "transient",
            FailureKind::Constraint => "constraint",
            FailureKind::InvalidData => "invalid_data",
            FailureKind::Internal => "internal",
        }
    }
}

impl StoreError {
    /// What kind of failure this is.
    pub fn kind(&self) -> FailureKind {
        match self {
            StoreError::Connect { .. } | StoreError::Timeout(_) => FailureKind::Transient,
            StoreError::Query(error) => query_failure_kind(error),
            StoreError::UnsupportedUrl(_)
            | StoreError::CreateDir { .. }
            | StoreError::Migrate(_)
            | StoreError::Corrupt { .. } => FailureKind::Internal,
        }
    }

    /// Whether the same call may succeed later.
    pub fn is_transient(&self) -> bool {
        self.kind() == FailureKind::Transient
    }
}

/// Classifies a driver error by what the database said (its SQLSTATE or result code) or, when
/// it said nothing, by where the driver failed.
fn query_failure_kind(error: &sqlx::Error) -> FailureKind {
    use sqlx::error::ErrorKind;
    match error {
        sqlx::Error::Database(database) => match database.kind() {
            ErrorKind::UniqueViolation
            | ErrorKind::ForeignKeyViolation
            | ErrorKind::NotNullViolation
            | ErrorKind::CheckViolation => FailureKind::Constraint,
            _ => {
                let code = database.code().unwrap_or_default();
                if database
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .is_some()
                {
                    postgres_failure_kind(&code)
                } else {
                    sqlite_failure_kind(code.parse().unwrap_or(0))
                }
            }
        },
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => FailureKind::Transient,
        _ => FailureKind::Internal,
    }
}

/// A PostgreSQL SQLSTATE's kind, by its class (the first two characters).
fn postgres_failure_kind(sqlstate: &str) -> FailureKind {
    match sqlstate.get(..2).unwrap_or("") {
        // Data exceptions: a NUL byte (22021), a value out of range, a bad encoding.
        "22" => FailureKind::InvalidData,
        "23" => FailureKind::Constraint,
        // Connection exceptions, transaction rollbacks (serialisation, deadlock), object not
        // in prerequisite state (lock not available), insufficient resources, operator
        // intervention (statement_timeout's query_canceled 57014, admin shutdown).
        "08" | "40" | "55" | "53" | "57" | "58" => FailureKind::Transient,
        _ => FailureKind::Internal,
    }
}

/// An SQLite (extended) result code's kind, by its primary code (the low byte).
fn sqlite_failure_kind(code: i64) -> FailureKind {
    match code & 0xff {
        // BUSY, LOCKED, IOERR, FULL, CANTOPEN, PROTOCOL.
        5 | 6 | 10 | 13 | 14 | 15 => FailureKind::Transient,
        // TOOBIG, MISMATCH, RANGE.
        18 | 20 | 25 => FailureKind::InvalidData,
        19 => FailureKind::Constraint,
        _ => FailureKind::Internal,
    }
}

/// Text as it is stored: U+0000 becomes U+2400 (SYMBOL FOR NULL), everything else is kept.
///
/// Chat text is whatever a user typed, and a message must get its verdict and its audit row
/// however odd it is, so text is escaped rather than refused. PostgreSQL's `text` cannot hold
/// U+0000 at all (the whole transaction fails with SQLSTATE 22021); every other C0 control is
/// valid text on both databases and is kept as sent. SQLite could hold U+0000, but both
/// backends store the same value. Ids and names never get here with controls: the gRPC edge
/// refuses them with `INVALID_ARGUMENT` naming the field.
pub(crate) fn storable_text(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{2400}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Largest number of pooled connections.
    pub max_connections: u32,
    /// How long to retry an unreachable database.
    pub connect_timeout: Duration,
    /// Longest one statement may run: PostgreSQL's `statement_timeout`, SQLite's busy
    /// timeout. A whole call (waiting for a connection, every statement of a transaction) is
    /// given twice this before it fails with [`StoreError::Timeout`].
    pub statement_timeout: Duration,
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
    pub action: Option<crate::domain::Action>,
    /// The review item of a held message, written in the same transaction.
    pub review: Option<crate::domain::ReviewItem>,
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
            review: None,
        }
    }

    /// The record with the action that carries its verdict out.
    pub fn with_action(mut self, action: Option<crate::domain::Action>) -> Self {
        self.action = action;
        self
    }

    /// The record with the review item of its held message.
    pub fn with_review(mut self, review: Option<crate::domain::ReviewItem>) -> Self {
        self.review = review;
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
    backend: Database,
    /// Longest one call may take ([`ConnectOptions::statement_timeout`] doubled).
    call_timeout: Duration,
    /// Moves whenever this process writes a moderator's ruling (a review item settled, an
    /// appeal resolved): what reads of [`Store::ruled_trials`] may be cached against.
    rulings_written: Arc<std::sync::atomic::AtomicU64>,
}

impl Store {
    /// Connects, retrying with backoff until `options.connect_timeout` has passed, and creates
    /// an SQLite file (and its directory) if missing. Does not migrate.
    pub async fn connect(url: &str, options: &ConnectOptions) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend =
            Database::from_url(url).ok_or_else(|| StoreError::UnsupportedUrl(redact_url(url)))?;
        let url = match backend {
            Database::Sqlite => prepare_sqlite_url(url)?,
            Database::Postgres => {
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

        let statement_ms = u64::try_from(options.statement_timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let call_timeout = options.statement_timeout.max(Duration::from_millis(1)) * 2;
        let deadline = Instant::now() + options.connect_timeout;
        let mut backoff = Duration::from_millis(100);
        loop {
            let attempt = AnyPoolOptions::new()
                .max_connections(options.max_connections)
                .acquire_timeout(options.connect_timeout.max(Duration::from_secs(1)))
                .after_connect(move |conn, _meta| {
                    Box::pin(async move {
                        if backend == Database::Sqlite {
                            // WAL lets readers proceed while a write is in progress; NORMAL
                            // sync is durable across application crashes, which is what an
                            // audit log on one machine needs.
                            sqlx::query("PRAGMA journal_mode = WAL")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA synchronous = NORMAL")
                                .execute(&mut *conn)
                                .await?;
                            // How long a statement waits for another connection's write
                            // lock before failing with SQLITE_BUSY (a transient error).
                            sqlx::query(sqlx::AssertSqlSafe(format!(
                                "PRAGMA busy_timeout = {statement_ms}"
                            )))
                            .execute(&mut *conn)
                            .await?;
                        } else {
                            // The server ends a statement that runs too long (the client's
                            // own call timeout is twice this, so the server's error usually
                            // comes first and the connection stays usable), and a
                            // transaction a vanished client left open, so it does not hold
                            // locks. sqlx 0.9 sets no socket options on the client, so TCP
                            // keepalive is asked of the server: it probes an idle connection
                            // after 30 s and gives a silent peer up after 3 × 10 s more; the
                            // client side is bounded by the call timeout.
                            for setting in [
                                format!("SET statement_timeout = {statement_ms}"),
                                format!(
                                    "SET idle_in_transaction_session_timeout = {}",
                                    statement_ms.saturating_mul(4)
                                ),
                                "SET tcp_keepalives_idle = 30".to_owned(),
                                "SET tcp_keepalives_interval = 10".to_owned(),
                                "SET tcp_keepalives_count = 3".to_owned(),
                            ] {
                                sqlx::query(sqlx::AssertSqlSafe(setting))
                                    .execute(&mut *conn)
                                    .await?;
                            }
                        }
                        Ok(())
                    })
                })
                .connect(&url)
                .await;
            match attempt {
                Ok(pool) => {
                    let store = Self {
                        pool,
                        backend,
                        call_timeout,
                        rulings_written: Arc::default(),
                    };
                    if backend == Database::Sqlite {
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
        // Migrations are exempt from the statement timeout: replicas starting together wait
        // for each other's migration lock, and a migration may rewrite a large table. They
        // run on a connection of their own that is closed afterwards, so the exemption does
        // not leak into the pool.
        let mut conn = self.pool.acquire().await?.detach();
        if self.backend == Database::Postgres {
            sqlx::query("SET statement_timeout = 0")
                .execute(&mut conn)
                .await?;
        }
        // `run_direct` is sqlx's own way around `run`'s "`Acquire` is not general enough"
        // on a plain connection inside a spawned future.
        let migrated = Migrator::with_migrations(migrations)
            .run_direct(None, &mut conn, false)
            .await;
        let _ = sqlx::Connection::close(conn).await;
        migrated?;
        Ok(())
    }

    /// Runs one store call within the call timeout, and counts its failure by kind
    /// (`modbot_store_errors_total{kind}`). Dropping a call mid-statement is safe: sqlx rolls
    /// an open transaction back, and tests a returned connection before reusing it.
    async fn timed<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let result = match tokio::time::timeout(self.call_timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout(self.call_timeout)),
        };
        if let Err(error) = &result {
            let kind = if matches!(error, StoreError::Timeout(_)) {
                "timeout"
            } else {
                error.kind().as_str()
            };
            metrics::counter!("modbot_store_errors_total", "kind" => kind).increment(1);
        }
        result
    }

    /// Which database this is.
    pub fn backend(&self) -> Database {
        self.backend
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.timed(async move {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
        .await
    }

    /// Closes every connection, waiting (at most the call timeout) for those in use to be
    /// returned: a connection stuck on a dead path would otherwise hold up shutdown until TCP
    /// gives up.
    pub async fn close(&self) {
        if tokio::time::timeout(self.call_timeout, self.pool.close())
            .await
            .is_err()
        {
            tracing::warn!("database connections still busy at close; abandoned");
        }
    }

    /// Writes audit records and the actions that carry them out, all or none. An action
    /// recorded before (the same message decided again) is kept as it was. Says, for each
    /// record, whether its action is new (for the caller to count).
    pub async fn record_verdicts(&self, records: &[AuditRecord]) -> Result<Vec<bool>, StoreError> {
        self.timed(async move {
        let mut inserted = vec![false; records.len()];
        if records.is_empty() {
            return Ok(inserted);
        }
        let mut tx = self.pool.begin().await?;
        for (record, inserted) in records.iter().zip(&mut inserted) {
            let (message, verdict) = (&record.message, &record.verdict);
            let degraded: Vec<&str> = verdict.degraded.iter().map(|d| d.as_str()).collect();
            sqlx::query(
                "INSERT INTO audit_log (id, decided_at, channel, message_id, user_id, nick, roles, text, \
                 sent_at, decision, duration_ms, enforced, shadow_decision, reasons, model_version, \
                 degraded, elapsed_us, trial_version, trial_decision) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
                 $18, $19)",
            )
            .bind(&record.id)
            .bind(unix_millis(record.decided_at))
            .bind(&message.channel)
            .bind(&message.message_id)
            .bind(&message.user_id)
            .bind(&message.nick)
            .bind(to_json(&message.roles))
            .bind(&*storable_text(&message.text))
            .bind(unix_millis(message.sent_at))
            .bind(verdict.decision.as_str())
            .bind(verdict.duration.map(duration_millis))
            .bind(i64::from(verdict.enforced))
            .bind(verdict.shadow_decision.as_str())
            .bind(to_json(&verdict.reasons))
            .bind(&verdict.model_version)
            .bind(to_json(&degraded))
            .bind(i64::try_from(verdict.elapsed.as_micros()).unwrap_or(i64::MAX))
            .bind(verdict.trial.as_ref().map_or("", |t| t.version.as_str()))
            .bind(verdict.trial.as_ref().map_or("", |t| t.decision.as_str()))
            .execute(&mut *tx)
            .await?;
            if let Some(action) = &record.action {
                *inserted = actions::insert_action(&mut tx, action).await?;
            }
            if let Some(item) = &record.review {
                review::insert_review(&mut tx, item).await?;
            }
        }
        tx.commit().await?;
        Ok(inserted)
        }).await
    }

    /// Reads audit records, newest first.
    pub async fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        self.timed(async move {
            let rows = sqlx::query(
                "SELECT id, decided_at, channel, message_id, user_id, nick, roles, text, sent_at, \
             decision, duration_ms, enforced, shadow_decision, reasons, model_version, degraded, \
             elapsed_us, trial_version, trial_decision FROM audit_log \
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
        })
        .await
    }

    /// What was decided about `channel`'s messages `message_ids`, by message id (the newest
    /// record of each). A message with no record was allowed (allowed messages are never
    /// stored), or is older than the retention.
    pub async fn decisions_of(
        &self,
        channel: &str,
        message_ids: &[&str],
    ) -> Result<HashMap<String, RecordedDecision>, StoreError> {
        /// Ids per query, well under both backends' limits on bound parameters.
        const CHUNK: usize = 500;
        self.timed(async move {
            let mut decided = HashMap::with_capacity(message_ids.len());
            for chunk in message_ids.chunks(CHUNK) {
                let placeholders: Vec<String> =
                    (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
                let sql = format!(
                    "SELECT id, message_id, decision, enforced, reasons, text FROM audit_log \
                     WHERE channel = $1 AND message_id IN ({}) \
                     ORDER BY decided_at DESC, id DESC",
                    placeholders.join(", ")
                );
                // Only numbered placeholders are formatted in; every value is bound.
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(channel);
                for id in chunk {
                    query = query.bind(*id);
                }
                for row in &query.fetch_all(&self.pool).await? {
                    let message_id: String = row.try_get("message_id")?;
                    if decided.contains_key(&message_id) {
                        // Newest first: the first record of a message is its latest.
                        continue;
                    }
                    let id: String = row.try_get("id")?;
                    let corrupt = |message: String| StoreError::Corrupt {
                        id: id.clone(),
                        message,
                    };
                    let name: String = row.try_get("decision")?;
                    let enforced: i64 = row.try_get("enforced")?;
                    let reasons: String = row.try_get("reasons")?;
                    let recorded = RecordedDecision {
                        decision: Decision::from_name(&name)
                            .ok_or_else(|| corrupt(format!("decision `{name}` is unknown")))?,
                        enforced: enforced != 0,
                        reasons: serde_json::from_str(&reasons)
                            .map_err(|e| corrupt(format!("reasons: {e}")))?,
                        text: row.try_get("text")?,
                    };
                    decided.insert(message_id, recorded);
                }
            }
            Ok(decided)
        })
        .await
    }
}

/// What the audit log says was decided about one message.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedDecision {
    /// The decision.
    pub decision: Decision,
    /// Whether it was enforced.
    pub enforced: bool,
    /// Its reasons.
    pub reasons: Vec<crate::domain::Reason>,
    /// The message's original text.
    pub text: String,
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
        review_id: None,
        trial: {
            let version: String = row.try_get("trial_version")?;
            if version.is_empty() {
                None
            } else {
                Some(crate::domain::TrialDecision {
                    version,
                    decision: decision_named("trial_decision")?,
                })
            }
        },
    };
    Ok(AuditRecord {
        decided_at: from_unix_millis(row.try_get("decided_at")?),
        id,
        message,
        verdict,
        action: None,
        review: None,
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

fn duration_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Connects to the database named by the configuration and applies migrations.
pub async fn open_store(config: &crate::config::Config) -> Result<Store, StoreError> {
    let store = Store::connect(
        &config.database_url(),
        &ConnectOptions {
            max_connections: config.database.max_connections,
            connect_timeout: std::time::Duration::from_secs(config.database.connect_timeout_secs),
            statement_timeout: config.database.statement_timeout(),
        },
    )
    .await?;
    store.migrate().await?;
    Ok(store)
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
    fn only_nul_is_escaped() {
        assert_eq!(storable_text("a\0b\0"), "a\u{2400}b\u{2400}");
        let controls = "tab\tnl\ncr\resc\u{1b}bell\u{7}";
        assert!(matches!(storable_text(controls), Cow::Borrowed(_)));
    }

    #[test]
    fn failures_are_classified_by_sqlstate_and_result_code() {
        for (sqlstate, kind) in [
            ("22021", FailureKind::InvalidData), // NUL in text
            ("22001", FailureKind::InvalidData), // value too long
            ("23505", FailureKind::Constraint),
            ("57014", FailureKind::Transient), // statement_timeout
            ("08006", FailureKind::Transient),
            ("40P01", FailureKind::Transient),
            ("53300", FailureKind::Transient),
            ("42601", FailureKind::Internal), // a syntax error is a bug
        ] {
            assert_eq!(postgres_failure_kind(sqlstate), kind, "{sqlstate}");
        }
        for (code, kind) in [
            (5, FailureKind::Transient),   // BUSY
            (517, FailureKind::Transient), // BUSY_SNAPSHOT
            (2067, FailureKind::Constraint),
            (18, FailureKind::InvalidData), // TOOBIG
            (1, FailureKind::Internal),
        ] {
            assert_eq!(sqlite_failure_kind(code), kind, "{code}");
        }
        assert_eq!(
            StoreError::Timeout(Duration::from_secs(1)).kind(),
            FailureKind::Transient
        );
        assert_eq!(
            StoreError::Query(sqlx::Error::PoolTimedOut).kind(),
            FailureKind::Transient
        );
        assert_eq!(
            StoreError::Query(sqlx::Error::RowNotFound).kind(),
            FailureKind::Internal
        );
    }

    #[test]
    fn unix_millis_round_trip() {
        for ms in [0, 1, 1_700_000_000_123, -5_000] {
            assert_eq!(unix_millis(from_unix_millis(ms)), ms);
        }
    }
}
