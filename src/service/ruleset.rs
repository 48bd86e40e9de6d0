//! Where the rule set comes from, and how every replica keeps it current.
//!
//! The rules file (`rules.file`, or the built-in `config/rules.toml`) only seeds a database
//! that never had a rule set. From then on the database is the source of truth: the Admin API
//! edits it, and each replica compiles its rows ([`crate::engine::rules::Document::from_stored`], the
//! same compile path as the file) into the engine it decides with: at start, right after each
//! change it makes itself (before answering the call), and whenever its [`reload_task`] sees
//! that another replica changed something.
//!
//! Architecture Invariant: `rules` compiles, `store` reads and writes rows; this module only
//! moves text between them and swaps the result into the [`Moderator`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, oneshot};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::engine::decision::Engine;
use crate::engine::rules::{DEFAULT_RULES, Document, RuleSet, RulesError};
use crate::infra::store::{Store, StoreError, StoredRuleSet};
use crate::service::Services;
use crate::service::moderate::Moderator;

/// Why the stored rule set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored rules do not compile (written by a newer replica, or by hand).
    #[error(transparent)]
    Rules(#[from] RulesError),
}

/// The configured rules file, parsed and checked: what seeds an empty database.
#[derive(Debug, Clone)]
pub struct RulesFile {
    /// Its tables.
    pub document: Document,
    /// Its name, for logs and as the seed's author.
    pub origin: String,
}

/// Reads and checks the configured rules file (`rules.file`, or the built-in set). A bad file
/// is refused with the rule and key named, whether or not it will seed anything: an operator
/// who edits it learns at once that it is wrong.
pub fn read_rules_file(config: &Config) -> Result<RulesFile, RulesError> {
    let path = &config.rules.file;
    let (text, origin) = if path.as_os_str().is_empty() {
        (
            DEFAULT_RULES.to_owned(),
            "config/rules.toml (built in)".to_owned(),
        )
    } else {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| RulesError {
            origin: format!("rules file {origin}"),
            place: "file".to_owned(),
            message: format!("cannot read it: {e}"),
        })?;
        (text, origin)
    };
    let document = Document::parse(&text, &origin)?;
    RuleSet::compile(&document, &format!("rules file {origin}"))?;
    Ok(RulesFile { document, origin })
}

/// Compiles a stored rule set.
pub fn compile_stored(stored: &StoredRuleSet) -> Result<RuleSet, RulesError> {
    compile_rows(stored, None)
}

/// Compiles a stored rule set with one rule (`(id, spec)`) added or replacing the stored
/// one of that id, as an upsert would leave it, without storing anything: what a backtest
/// runs.
pub fn compile_candidate(
    stored: &StoredRuleSet,
    id: &str,
    spec: &str,
) -> Result<RuleSet, RulesError> {
    compile_rows(stored, Some((id, spec)))
}

fn compile_rows(
    stored: &StoredRuleSet,
    candidate: Option<(&str, &str)>,
) -> Result<RuleSet, RulesError> {
    let origin = format!("the database (revision {})", stored.revision);
    let kept = stored
        .rules
        .iter()
        .filter(|r| candidate.is_none_or(|(id, _)| id != r.id))
        .map(|r| (r.id.as_str(), r.spec.as_str()));
    let document = Document::from_stored(
        stored
            .policies
            .iter()
            .map(|p| (p.channel.as_str(), p.spec.as_str())),
        kept.chain(candidate),
        &origin,
    )?;
    RuleSet::compile(&document, &origin)
}

/// Which revisions this replica has dealt with.
#[derive(Debug, Clone, Copy)]
struct Revisions {
    /// The revision of the rule set in force.
    applied: u64,
    /// The latest revision loaded, compiled or not: one that failed to compile is not tried
    /// again (nor logged and counted again) until the revision moves on.
    seen: u64,
}

/// This replica's link between the stored rule set and its engine.
#[derive(Debug)]
pub struct RuleSource {
    store: Store,
    /// Held across load, compile and swap, so that of two concurrent refreshes (the reload
    /// task and a change made here) an older rule set can never replace a newer one.
    revisions: Mutex<Revisions>,
}

impl RuleSource {
    /// Seeds the database from `file` if it never had a rule set, then loads and compiles
    /// what it holds. Logs where the rules came from.
    pub async fn open(store: Store, file: &RulesFile) -> Result<(Self, RuleSet), ReloadError> {
        let seeded = store
            .seed_ruleset(
                &file.document.rule_rows(),
                &file.document.policy_rows(),
                &format!("seed: {}", file.origin),
            )
            .await?;
        let stored = store.load_ruleset().await?;
        let rules = compile_stored(&stored)?;
        match seeded {
            Some(revision) => tracing::info!(
                file = %file.origin,
                revision,
                rules = rules.rules().len(),
                "rules seeded into the empty database from the rules file"
            ),
            None => tracing::info!(
                revision = stored.revision,
                rules = rules.rules().len(),
                file = %file.origin,
                "rules loaded from the database (the rules file only seeds an empty database)"
            ),
        }
        metrics::gauge!("modbot_rules_revision").set(stored.revision as f64);
        let revisions = Revisions {
            applied: stored.revision,
            seen: stored.revision,
        };
        Ok((
            Self {
                store,
                revisions: Mutex::new(revisions),
            },
            rules,
        ))
    }

    /// The revision of the rule set in force on this replica.
    pub async fn applied_revision(&self) -> u64 {
        self.revisions.lock().await.applied
    }

    /// Brings `moderator`'s engine up to the database's revision: when it moved on, loads,
    /// compiles and swaps the new rule set in. `Ok(Some(revision))` when one was applied,
    /// `Ok(None)` when there was nothing new. A rule set that does not compile is logged and
    /// counted (`modbot_rules_reload_failures_total`), and the one in force is kept.
    pub async fn refresh(&self, moderator: &Moderator) -> Result<Option<u64>, ReloadError> {
        let mut revisions = self.revisions.lock().await;
        if self.store.ruleset_revision().await? == revisions.seen {
            return Ok(None);
        }
        let stored = self.store.load_ruleset().await?;
        revisions.seen = stored.revision;
        let rules = match compile_stored(&stored) {
            Ok(rules) => rules,
            Err(error) => {
                metrics::counter!("modbot_rules_reload_failures_total").increment(1);
                tracing::error!(
                    %error,
                    revision = stored.revision,
                    kept = revisions.applied,
                    "the stored rule set does not compile: keeping the one in force"
                );
                return Err(error.into());
            }
        };
        let count = rules.rules().len();
        moderator.set_engine(Engine::new(rules));
        revisions.applied = stored.revision;
        metrics::gauge!("modbot_rules_revision").set(stored.revision as f64);
        tracing::info!(
            revision = stored.revision,
            rules = count,
            "rule set reloaded"
        );
        Ok(Some(stored.revision))
    }
}

/// Keeps this replica's rules in step with the database until `stop` fires, by polling its
/// revision every `interval`.
///
/// Why polling, and not PostgreSQL `LISTEN/NOTIFY` or Redis pub/sub: it works identically on
/// SQLite and PostgreSQL (and without Redis); it needs no extra long-lived connection; a
/// notification missed while a connection was down can never leave a replica stale, since the
/// next poll sees the revision whatever happened meanwhile; and it costs one single-row read
/// per interval (a second by default). Changes made on this replica do not wait for it: they
/// are applied before the call that made them answers.
pub async fn reload_task(
    services: Arc<Services>,
    interval: Duration,
    mut stop: oneshot::Receiver<()>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; the rule set was just loaded.
    ticker.tick().await;
    let mut failing = false;
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = ticker.tick() => {}
        }
        // The model rollout follows the database the same way; a rollout that cannot be
        // applied is logged by `refresh` once per revision.
        let _ = services.models.refresh(&services.moderator).await;
        match services.rules.refresh(&services.moderator).await {
            Ok(_) | Err(ReloadError::Rules(_)) => {
                if failing {
                    tracing::info!("the rule set's revision can be read again");
                }
                failing = false;
            }
            Err(ReloadError::Store(error)) => {
                // Once per outage, not once per poll.
                if !failing {
                    tracing::warn!(%error, "cannot read the rule set's revision; retrying");
                }
                failing = true;
            }
        }
    }
}

/// The running [`reload_task`], to stop on shutdown.
#[derive(Debug)]
pub struct ReloadTask {
    stop_tx: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl ReloadTask {
    /// Starts [`reload_task`] with `rules.reload_interval_ms`.
    pub fn spawn(services: Arc<Services>) -> Self {
        let interval = services.config.rules.reload_interval();
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(reload_task(services, interval, stop_rx));
        Self { stop_tx, task }
    }

    /// Stops it and waits until it has let go of the services.
    pub async fn stop(self) {
        let _ = self.stop_tx.send(());
        if let Err(error) = self.task.await {
            tracing::error!(%error, "the rules reload task failed");
        }
    }
}
