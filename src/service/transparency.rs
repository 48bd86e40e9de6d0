//! A channel's public moderation log, for channels whose policy turns it on
//! (`[policy.transparency] public = true`): recent actions with their reasons, counts by reason
//! and kind over [`LOG_WINDOW`], appeal outcomes. Anyone may read it, so it is built to say
//! nothing a chat would not: a reason is a rule's description or a model label, never a rule's
//! evidence (which may quote a banned phrase or the message); users are pseudonyms unless the
//! policy shows nicks; message text only when the policy asks.
//!
//! Readers are anonymous and may be many: each channel's log is built at most once per
//! [`CACHE_TTL`] (one build at a time per replica), from bounded reads, so a crowd refreshing
//! the page costs the database a few queries a minute, and moderation nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use super::Services;
use crate::domain::{
    Action, ActionFilter, ActionKind, ActionSource, ActionStatus, ReasonSource, unix_millis,
};
use crate::engine::rules::RuleSet;
use crate::engine::rules::spec::{NickDisplay, TransparencySpec};
use crate::infra::store::{RecordedDecision, StoreError};

/// How far back the counts go.
pub const LOG_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long a built log is served before it is built again.
pub const CACHE_TTL: Duration = Duration::from_secs(15);
/// Most actions one build reads (the newest in the window); the counts say when they were cut.
const MAX_COUNTED: u32 = 2_000;
/// Characters of a message shown, when the policy shows text.
const SHOWN_TEXT_CHARS: usize = 200;
/// Channels whose logs are cached at once (only channels whose log is public are cached).
const MAX_CACHED: usize = 1_000;

/// A channel's public moderation log.
#[derive(Debug, Clone)]
pub struct PublicLog {
    /// The channel.
    pub channel: String,
    /// When it was built, Unix milliseconds.
    pub generated_at_ms: i64,
    /// How many days the counts cover.
    pub window_days: u64,
    /// The newest actions, newest first.
    pub recent: Vec<PublicAction>,
    /// Actions in the window by reason, most first.
    pub by_reason: Vec<Count>,
    /// Actions in the window by kind, most first.
    pub by_kind: Vec<Count>,
    /// Actions counted.
    pub counted: usize,
    /// Whether the window held more actions than one build reads (the counts are of the
    /// newest `counted`).
    pub truncated: bool,
    /// Appeals filed in the window, by outcome.
    pub appeals: AppealOutcomes,
}

/// One action as the public sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PublicAction {
    /// When, Unix milliseconds.
    pub at_ms: i64,
    /// The user: a pseudonym, or the nick when the policy shows nicks.
    pub user: String,
    /// What was done: `warn`, `hide`, `timeout`, `ban`, `unmute`, `unban`.
    pub kind: &'static str,
    /// For how long, in seconds (`None`: permanent, or not applicable).
    pub duration_secs: Option<u64>,
    /// Why.
    pub reason: String,
    /// Who decided: `automatic`, `moderator`, `appeal`, `nuke`, `service`.
    pub by: &'static str,
    /// Whether it was undone since (an unmute or unban, an overturned appeal, an aegis).
    pub undone: bool,
    /// The message, when the policy shows text and the action was about one.
    pub text: Option<String>,
}

/// A count of actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Count {
    /// What was counted.
    pub name: String,
    /// How many.
    pub count: u64,
}

/// Appeals filed in the window, by outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppealOutcomes {
    /// Waiting for a moderator.
    pub open: u64,
    /// The action stood.
    pub upheld: u64,
    /// The action was taken back.
    pub overturned: u64,
}

/// Built logs, per channel.
#[derive(Debug, Default)]
pub struct PublicLogs {
    built: Mutex<HashMap<String, (Instant, Arc<PublicLog>)>>,
    /// One build at a time: readers of a stale log wait for the build in progress.
    building: tokio::sync::Mutex<()>,
}

impl PublicLogs {
    fn fresh(&self, channel: &str) -> Option<Arc<PublicLog>> {
        let built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        built
            .get(channel)
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, log)| Arc::clone(log))
    }

    fn keep(&self, channel: &str, log: Arc<PublicLog>) {
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        if built.len() >= MAX_CACHED {
            built.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
        }
        if built.len() < MAX_CACHED {
            built.insert(channel.to_owned(), (Instant::now(), log));
        }
    }
}

impl Services {
    /// `channel`'s public moderation log, or `None` when its policy keeps it private.
    pub async fn public_log(&self, channel: &str) -> Result<Option<Arc<PublicLog>>, StoreError> {
        let engine = self.moderator.engine();
        let policy = engine.rules().policy(channel).transparency.clone();
        if !policy.public {
            return Ok(None);
        }
        if let Some(log) = self.public_logs.fresh(channel) {
            return Ok(Some(log));
        }
        let _building = self.public_logs.building.lock().await;
        if let Some(log) = self.public_logs.fresh(channel) {
            return Ok(Some(log));
        }
        let log = Arc::new(
            self.build_public_log(channel, &policy, engine.rules())
                .await?,
        );
        self.public_logs.keep(channel, Arc::clone(&log));
        Ok(Some(log))
    }

    async fn build_public_log(
        &self,
        channel: &str,
        policy: &TransparencySpec,
        rules: &RuleSet,
    ) -> Result<PublicLog, StoreError> {
        let now = SystemTime::now();
        let since = now
            .checked_sub(LOG_WINDOW)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let filter = ActionFilter {
            channel: Some(channel.to_owned()),
            since: Some(since),
            ..ActionFilter::default()
        };
        let read = self.store.actions(&filter, None, MAX_COUNTED).await?;
        let truncated = read.len() >= MAX_COUNTED as usize;
        let actions: Vec<Action> = read.into_iter().filter(carried_out).collect();
        let about: Vec<&str> = actions
            .iter()
            .filter(|a| a.source == ActionSource::Automod && !a.message_id.is_empty())
            .map(|a| a.message_id.as_str())
            .collect();
        let decided = self.store.decisions_of(channel, &about).await?;
        let key = pseudonym_key(&self.config.http.pseudonym_secret.0);
        let public: Vec<PublicAction> = actions
            .iter()
            .map(|action| {
                let record = decided.get(&action.message_id);
                PublicAction {
                    at_ms: unix_millis(action.created_at),
                    user: match policy.nicks {
                        NickDisplay::Shown => action.target_nick.clone(),
                        NickDisplay::Hashed => pseudonym(&key, channel, &action.target_user_id),
                    },
                    kind: action.kind.as_str(),
                    duration_secs: action.duration.map(|d| d.as_secs()),
                    reason: public_reason(action, record, rules),
                    by: by(action.source),
                    undone: !action.reversed_by.is_empty(),
                    text: record
                        .filter(|_| policy.show_text)
                        .map(|r| shown_text(&r.text)),
                }
            })
            .collect();
        let appeals = self.store.appeal_counts(Some(channel), Some(since)).await?;
        let appeal_count = |status: &str| appeals.get(status).copied().unwrap_or(0);
        Ok(PublicLog {
            channel: channel.to_owned(),
            generated_at_ms: unix_millis(now),
            window_days: LOG_WINDOW.as_secs() / 86_400,
            by_reason: counted(public.iter().map(|a| a.reason.as_str())),
            by_kind: counted(public.iter().map(|a| a.kind)),
            counted: public.len(),
            truncated,
            recent: public
                .into_iter()
                .take(policy.recent_actions as usize)
                .collect(),
            appeals: AppealOutcomes {
                open: appeal_count("open"),
                upheld: appeal_count("upheld"),
                overturned: appeal_count("overturned"),
            },
        })
    }
}

/// Whether an action stands as decided: not one the chat refused or that was never sent (a
/// pending one is on its way).
fn carried_out(action: &Action) -> bool {
    !matches!(action.status, ActionStatus::Failed | ActionStatus::Expired)
}

fn by(source: ActionSource) -> &'static str {
    match source {
        ActionSource::Automod => "automatic",
        ActionSource::Moderator => "moderator",
        ActionSource::Appeal => "appeal",
        ActionSource::Nuke => "nuke",
        ActionSource::Api => "service",
    }
}

/// Why, as the public may read it: for an automatic action, the description of the rule that
/// acted (as the channel's admins wrote it) or the model's label, never the evidence; for a
/// moderator's, the reason the moderator gave; for a nuke, an appeal or an undo, what it was.
fn public_reason(action: &Action, record: Option<&RecordedDecision>, rules: &RuleSet) -> String {
    match action.source {
        ActionSource::Automod => {
            let Some(reason) = record.and_then(|r| r.reasons.iter().find(|r| !r.shadow)) else {
                return "automatic moderation".to_owned();
            };
            match reason.source {
                ReasonSource::Rule => rules
                    .rules()
                    .iter()
                    .find(|rule| rule.id == reason.rule_id)
                    .map(|rule| rule.description.trim())
                    .filter(|d| !d.is_empty())
                    .map_or_else(|| format!("rule {}", reason.rule_id), str::to_owned),
                ReasonSource::Model => format!("model: {}", reason.label),
                other => format!("{}: {}", other.as_str(), reason.label),
            }
        }
        ActionSource::Nuke if matches!(action.kind, ActionKind::Unmute | ActionKind::Unban) => {
            "a mass mute undone".to_owned()
        }
        // A nuke's reason may quote its pattern (a phrase the channel wanted gone).
        ActionSource::Nuke => "a mass mute of everyone who said one thing".to_owned(),
        ActionSource::Appeal => "overturned on appeal".to_owned(),
        ActionSource::Moderator | ActionSource::Api => {
            let given = action.reason.trim();
            if given.is_empty() {
                "a moderator's decision".to_owned()
            } else {
                given.to_owned()
            }
        }
    }
}

fn shown_text(text: &str) -> String {
    let mut shown: String = text.chars().take(SHOWN_TEXT_CHARS).collect();
    if text.chars().count() > SHOWN_TEXT_CHARS {
        shown.push('…');
    }
    shown
}

fn counted<'a>(names: impl Iterator<Item = &'a str>) -> Vec<Count> {
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for name in names {
        *counts.entry(name).or_default() += 1;
    }
    let mut counts: Vec<Count> = counts
        .into_iter()
        .map(|(name, count)| Count {
            name: name.to_owned(),
            count,
        })
        .collect();
    counts.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    counts
}

/// The pseudonyms' key: the configured secret, or one random key for this process.
fn pseudonym_key(secret: &str) -> Vec<u8> {
    if !secret.is_empty() {
        return secret.as_bytes().to_vec();
    }
    static RANDOM: OnceLock<[u8; 32]> = OnceLock::new();
    RANDOM
        .get_or_init(|| {
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).expect("the operating system's random source works");
            tracing::warn!(
                "http.pseudonym_secret is empty: public logs' pseudonyms use a random key \
                 that changes at restart and differs between replicas"
            );
            key
        })
        .to_vec()
}

/// A user's pseudonym in a channel's public log: `user-` and 10 hex digits of
/// HMAC-SHA256(key, channel NUL user id), the same for one user in one channel, different
/// across channels, and not reversible without the key.
pub fn pseudonym(key: &[u8], channel: &str, user_id: &str) -> String {
    let mac = hmac_sha256(key, &[channel.as_bytes(), &[0], user_id.as_bytes()]);
    let hex: String = mac[..5].iter().map(|b| format!("{b:02x}")).collect();
    format!("user-{hex}")
}

/// HMAC-SHA256 (RFC 2104) of the concatenated `parts`.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    for part in parts {
        inner.update(part);
    }
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2 of RFC 4231.
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        let mac = hmac_sha256(
            &[0xaa; 131],
            &[b"Test Using Larger Than Block-Size Key - Hash Key First"],
        );
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn pseudonyms_are_stable_per_channel_and_differ_across_channels_and_keys() {
        let key = b"a key of sixteen bytes or more";
        let a = pseudonym(key, "destinygg", "Spammer");
        assert_eq!(a, pseudonym(key, "destinygg", "Spammer"));
        assert!(a.starts_with("user-") && a.len() == 15, "{a}");
        assert!(!a.contains("Spammer"));
        assert_ne!(a, pseudonym(key, "strims", "Spammer"));
        assert_ne!(a, pseudonym(key, "destinygg", "Bob"));
        assert_ne!(
            a,
            pseudonym(b"another key of sixteen bytes", "destinygg", "Spammer")
        );
        // The separator keeps (channel, user) pairs apart.
        assert_ne!(pseudonym(key, "ab", "c"), pseudonym(key, "a", "bc"));
    }

    #[test]
    fn counts_are_sorted_most_first_then_by_name() {
        let counts = counted(["b", "a", "b", "c", "a", "b"].into_iter());
        let flat: Vec<(&str, u64)> = counts.iter().map(|c| (c.name.as_str(), c.count)).collect();
        assert_eq!(flat, [("b", 3), ("a", 2), ("c", 1)]);
    }
}
