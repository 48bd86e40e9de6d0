//! The store suite, run against both backends: the embedded SQLite file and PostgreSQL.

use crate::common;

use std::time::{Duration, Instant, SystemTime};

use common::PgSchema;
use modbot::domain::UserHistory;
use modbot::domain::{
    Action, ActionFilter, ActionKind, ActionSource, ActionStatus, Appeal, AppealFilter,
    AppealStatus, Nuke,
};
use modbot::domain::{ChatMessage, Decision, Degraded, ReviewFilter, ReviewStatus};
use modbot::engine::decision::{DecideOptions, Engine, Inputs};
use modbot::engine::normalize::normalize;
use modbot::engine::rules::RuleSet;
use modbot::infra::store::{
    AuditQuery, AuditRecord, ConnectOptions, FailureKind, Feedback, FeedbackSource, Filed,
    Recorded, ReviewRuled, Store, StoreError,
};
use modbot::service::audit::Outcome;
use modbot::service::retention::{Deleted, RetentionPolicy, RetentionTask, run_pass};
use tokio::sync::watch;

fn options() -> ConnectOptions {
    ConnectOptions {
        max_connections: 4,
        connect_timeout: Duration::from_secs(2),
        statement_timeout: Duration::from_secs(5),
    }
}

fn message(channel: &str, id: &str, user: &str, text: &str) -> ChatMessage {
    ChatMessage {
        channel: channel.into(),
        message_id: id.into(),
        user_id: user.into(),
        nick: format!("{user}Nick"),
        roles: vec!["subscriber".into(), "flair3".into()],
        text: text.into(),
        sent_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
    }
}

/// A record decided by the built-in rules (which catch scam phrases), for a user who has
/// offended before (so a timeout stays a timeout rather than a first warning).
fn record(channel: &str, id: &str, user: &str, text: &str) -> AuditRecord {
    let engine = Engine::new(RuleSet::builtin());
    let message = message(channel, id, user, text);
    let normalized = normalize(text, &engine.rules().policy(channel).emotes);
    let history = UserHistory {
        heat: 4.0,
        ..UserHistory::default()
    };
    let inputs = Inputs {
        message: &message,
        normalized: &normalized,
        history: &history,
        channel_recent: &modbot::domain::ChannelWindow::default(),
        now_ms: 0,
        received: Instant::now(),
        model: modbot::engine::decision::ModelInput::NotConsulted,
        raid: &modbot::engine::raid::Seen::default(),
    };
    let verdict = engine.decide(&inputs, DecideOptions::default()).verdict;
    assert!(verdict.is_notable(), "test records must be notable: {text}");
    AuditRecord::new(message, verdict)
}

async fn suite(url: &str) {
    let store = Store::connect(url, &options()).await.expect("connect");
    store.migrate().await.expect("migrate");
    store.migrate().await.expect("migrating twice is a no-op");
    store.ping().await.expect("ping");

    // Round trip: everything written comes back, in the same types.
    let mut first = record("destinygg", "m1", "alice", "🎁 FREE NITRO here");
    first.verdict.degraded = vec![Degraded::Model];
    first.verdict.model_version = "minilm-test".into();
    store
        .record_verdicts(std::slice::from_ref(&first))
        .await
        .expect("write");
    let read = store
        .audit_log(&AuditQuery {
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .expect("read");
    assert_eq!(read.len(), 1);
    let got = &read[0];
    // Stored times are whole milliseconds; stored verdicts drop the per-call extras.
    assert_eq!(got.id, first.id);
    assert_eq!(got.message, first.message);
    assert_eq!(
        store_millis(got.decided_at),
        store_millis(first.decided_at),
        "decided_at survives to the millisecond"
    );
    let mut expected = first.verdict.clone();
    expected.normalized_text.clear();
    expected.elapsed = Duration::from_micros(expected.elapsed.as_micros() as u64);
    assert_eq!(got.verdict, expected);
    assert_eq!(got.verdict.decision, Decision::Timeout);
    let evidence = &got.verdict.reasons[0].evidence;
    assert_eq!(evidence.matched_text, "FREE NITRO");
    assert_eq!(evidence.span.map(|s| (s.start, s.end)), Some((2, 12)));

    // Batches, filters, newest first, limits.
    store
        .record_verdicts(&[
            record("destinygg", "m2", "bob", "buy followers now"),
            record("strims", "m3", "alice", "crypto giveaway"),
            record("destinygg", "m4", "alice", "cheap viewers"),
        ])
        .await
        .expect("write a batch");
    let ids = |records: Vec<AuditRecord>| {
        records
            .into_iter()
            .map(|r| r.message.message_id)
            .collect::<Vec<_>>()
    };
    let query = |channel: Option<&str>, user: Option<&str>, limit| AuditQuery {
        channel: channel.map(Into::into),
        user_id: user.map(Into::into),
        limit,
        ..AuditQuery::default()
    };
    assert_eq!(
        ids(store.audit_log(&query(None, None, 10)).await.unwrap()),
        ["m4", "m3", "m2", "m1"]
    );
    assert_eq!(
        ids(store
            .audit_log(&query(Some("destinygg"), None, 10))
            .await
            .unwrap()),
        ["m4", "m2", "m1"]
    );
    assert_eq!(
        ids(store
            .audit_log(&query(Some("destinygg"), Some("alice"), 10))
            .await
            .unwrap()),
        ["m4", "m1"]
    );
    assert_eq!(
        ids(store
            .audit_log(&query(None, Some("alice"), 2))
            .await
            .unwrap()),
        ["m4", "m3"]
    );
    assert!(
        store
            .audit_log(&query(Some("nowhere"), None, 10))
            .await
            .unwrap()
            .is_empty()
    );

    // A batch is all or nothing: a duplicate id fails the whole batch.
    let fresh = record("destinygg", "m5", "carol", "free nitro");
    let error = store.record_verdicts(&[fresh.clone(), first.clone()]).await;
    assert!(matches!(error, Err(StoreError::Query(_))), "{error:?}");
    assert!(
        store
            .audit_log(&query(None, Some("carol"), 10))
            .await
            .unwrap()
            .is_empty(),
        "nothing of a failed batch is kept"
    );
    store
        .record_verdicts(&[])
        .await
        .expect("an empty batch is a no-op");

    // A large batch, with an action for every other record, goes
    // in whole; an action recorded before is kept as it was.
    let big: Vec<AuditRecord> = (0..600)
        .map(|i| {
            let record = record(
                "bulk",
                &format!("b{i}"),
                &format!("u{i}"),
                "FREE NITRO here",
            );
            let action = (i % 2 == 0).then(|| {
                modbot::service::actions::dispatch::automatic_action(
                    &record.message,
                    &record.verdict,
                    "bridge-creds",
                    Duration::from_secs(10),
                    Duration::from_secs(60),
                )
                .expect("an enforced timeout acts")
            });
            record.with_action(action)
        })
        .collect();
    store.record_verdicts(&big).await.expect("a big batch");
    let again: Vec<AuditRecord> = big[..2]
        .iter()
        .map(|r| {
            let mut action = r.action.clone();
            if let Some(action) = &mut action {
                action.reason = "decided again".into();
            }
            AuditRecord::new(r.message.clone(), r.verdict.clone()).with_action(action)
        })
        .collect();
    store
        .record_verdicts(&again)
        .await
        .expect("records again, their actions kept");
    let bulk = store
        .audit_log(&AuditQuery {
            channel: Some("bulk".into()),
            limit: 10_000,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(bulk.len(), 602);
    let actions = store
        .actions(
            &modbot::domain::ActionFilter {
                channel: Some("bulk".into()),
                ..Default::default()
            },
            None,
            10_000,
        )
        .await
        .unwrap();
    assert_eq!(actions.len(), 300);
    let first = big[0].action.as_ref().unwrap();
    let stored = store.action(&first.id).await.unwrap().expect("stored");
    assert_eq!(stored.reason, first.reason, "the first recording stands");
    assert_eq!(
        (stored.kind, stored.status, &stored.message_id),
        (first.kind, first.status, &first.message_id)
    );

    feedback_suite(&store).await;
    rollout_suite(&store).await;
    store.close().await;
}

/// Model rollouts: the default before any change, one writer per revision, the latest in
/// force; and the other side of a trial kept with an audit record.
async fn rollout_suite(store: &Store) {
    use modbot::infra::store::StoredRollout;
    assert_eq!(store.rollout().await.unwrap(), StoredRollout::default());
    let first = StoredRollout {
        revision: 1,
        candidate: "v2".into(),
        mode: "split".into(),
        share: 0.25,
        unit: "user".into(),
        change: "try".into(),
        reason: "fewer misses".into(),
        changed_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000),
        changed_by: "admin".into(),
        ..StoredRollout::default()
    };
    assert_eq!(
        store.write_rollout(&first).await.unwrap(),
        Some(first.clone())
    );
    // A second writer that read revision 0 too is refused, and nothing changes.
    let racing = StoredRollout {
        candidate: "v3".into(),
        ..first.clone()
    };
    assert_eq!(store.write_rollout(&racing).await.unwrap(), None);
    assert_eq!(store.rollout().await.unwrap(), first);
    let promoted = StoredRollout {
        revision: 2,
        active: "v2".into(),
        candidate: String::new(),
        mode: "none".into(),
        change: "promote".into(),
        ..first.clone()
    };
    store.write_rollout(&promoted).await.unwrap().unwrap();
    assert_eq!(store.rollout().await.unwrap(), promoted);

    let mut decided = record("trial", "t1", "u1", "you are a clown, free nitro here");
    decided.verdict.decision = Decision::Hold;
    decided.verdict.trial = Some(modbot::domain::TrialDecision {
        version: "enc@1+heads@v2".into(),
        decision: Decision::Hide,
    });
    store.record_verdicts(&[decided.clone()]).await.unwrap();
    let read = store
        .audit_log(&AuditQuery {
            channel: Some("trial".into()),
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(read[0].verdict.trial, decided.verdict.trial);

    // The rulings on messages decided during a trial: a held message rejected in review, and
    // an automatic action's appeal overturned (newest first). A moderator's own action
    // appealed is no ruling on the model, and the unruled record above is none either.
    let on_trial = |mut record: AuditRecord, decision: Decision| {
        record.verdict.decision = decision;
        record.verdict.model_version = "enc+heads@v2".into();
        record.verdict.trial = Some(modbot::domain::TrialDecision {
            version: "enc+heads@v3".into(),
            decision: Decision::Allow,
        });
        record
    };
    let held = on_trial(
        held("tr-held", "carol", NOW_MS as u64, 60_000),
        Decision::Hold,
    );
    let mut automatic = stored_action(
        "tr-auto",
        ActionKind::Timeout,
        Some(Duration::from_secs(60)),
        ActionStatus::Executed,
        0,
    );
    automatic.source = ActionSource::Automod;
    let by_hand = stored_action(
        "tr-mod",
        ActionKind::Timeout,
        Some(Duration::from_secs(60)),
        ActionStatus::Executed,
        0,
    );
    let audited = |action: &Action| {
        on_trial(
            record(
                &action.channel,
                &action.message_id,
                &action.target_user_id,
                "you are a clown, free nitro here",
            ),
            Decision::Timeout,
        )
    };
    store
        .record_verdicts(&[held.clone(), audited(&automatic), audited(&by_hand)])
        .await
        .unwrap();
    let written = store.rulings_written();
    let item = held.review.clone().unwrap();
    let rejected = modbot::domain::ReviewItem {
        status: ReviewStatus::Rejected,
        resolved_at: Some(at(NOW_MS + 1_000)),
        moderator: "mod1".into(),
        ..item
    };
    store.settle_review(&rejected, None, &[]).await.unwrap();
    for (action, status) in [
        (&automatic, AppealStatus::Overturned),
        (&by_hand, AppealStatus::Upheld),
    ] {
        store.record_action(action).await.unwrap();
        let open = appeal(&format!("appeal-{}", action.id), action, AppealStatus::Open);
        store.file_appeal(&open).await.unwrap();
        let ruled = appeal(&open.id, action, status);
        store.resolve_appeal(&ruled, None, &[]).await.unwrap();
    }
    assert_eq!(store.rulings_written(), written + 3, "each ruling is noted");
    let side = |version: &str, decision: &str| (version.to_owned(), decision.to_owned());
    assert_eq!(
        store.ruled_trials(10).await.unwrap(),
        [
            modbot::infra::store::RuledTrial {
                message: "c/m-tr-auto".into(),
                rejected: false,
                decided: side("enc+heads@v2", "timeout"),
                other: side("enc+heads@v3", "allow"),
            },
            modbot::infra::store::RuledTrial {
                message: "destinygg/tr-held".into(),
                rejected: true,
                decided: side("enc+heads@v2", "hold"),
                other: side("enc+heads@v3", "allow"),
            },
        ]
    );
    assert_eq!(store.ruled_trials(1).await.unwrap().len(), 1);
}

/// Feedback examples: round trip, oldest first, one judgement of a kind per message and label.
async fn feedback_suite(store: &Store) {
    let example = |id: &str, at_ms: i64, message_id: &str, source: FeedbackSource| Feedback {
        id: id.into(),
        created_at: SystemTime::UNIX_EPOCH + Duration::from_millis(at_ms as u64),
        channel: "destinygg".into(),
        user_id: "mallory".into(),
        message_id: message_id.into(),
        text: "you are a clown".into(),
        label: "toxicity/insult".into(),
        positive: source == FeedbackSource::ModeratorAction,
        source,
        actor: "modnick".into(),
        action: "timeout".into(),
    };
    assert!(store.feedback().await.unwrap().is_empty());
    let later = example(
        "f2",
        1_700_000_002_000,
        "m7",
        FeedbackSource::ModeratorAction,
    );
    let earlier = example(
        "f1",
        1_700_000_001_000,
        "m6",
        FeedbackSource::ModeratorAction,
    );
    let overturned = example(
        "f3",
        1_700_000_003_000,
        "m6",
        FeedbackSource::AppealOverturned,
    );
    for f in [&later, &earlier, &overturned] {
        assert!(store.record_feedback(f).await.unwrap(), "{}", f.id);
    }
    // A second moderator action on the same message and label is the same judgement.
    let again = Feedback {
        id: "f4".into(),
        action: "ban".into(),
        ..earlier.clone()
    };
    assert!(!store.record_feedback(&again).await.unwrap());
    let read = store.feedback().await.unwrap();
    assert_eq!(read, vec![earlier, later, overturned]);
}

fn store_millis(time: SystemTime) -> i64 {
    modbot::domain::unix_millis(time)
}

#[tokio::test]
async fn sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/nested/dir/modbot.db", dir.path().display());
    suite(&url).await;
    assert!(
        dir.path().join("nested/dir/modbot.db").is_file(),
        "the file and its directory are created"
    );
}

#[tokio::test]
async fn postgres_store() {
    let Some(schema) = PgSchema::create("postgres_store").await else {
        return;
    };
    suite(&schema.url).await;
    schema.drop().await;
}

/// Migration 5 scopes idempotency keys per credential: the actions and appeals of a database
/// made by the migrations before it survive it (SQLite rebuilds the table), and then one key
/// serves two credentials.
async fn idempotency_keys_per_credential_migration(url: &str) {
    use modbot::domain::{ActionKind, ActionSource, Appeal, AppealStatus, NewAction};
    use modbot::infra::store::{Filed, Recorded};
    let store = Store::connect(url, &options()).await.expect("connect");
    store.migrate_up_to(4).await.expect("migrations 1 to 4");
    let action = |id: &str, by: &str, target: &str| {
        NewAction {
            channel: "destinygg".into(),
            target_user_id: target.into(),
            target_nick: target.into(),
            kind: ActionKind::Timeout,
            duration: Some(Duration::from_secs(60)),
            reason: "rude".into(),
            source: ActionSource::Moderator,
            moderator: "mod".into(),
            message_id: String::new(),
            idempotency_key: Some("shared-key".into()),
            requested_by: by.into(),
        }
        .into_action(id.into(), SystemTime::now(), Duration::from_secs(60))
    };
    let before = action("a-before", "tool-one", "bob");
    assert!(matches!(
        store.record_action(&before).await.unwrap(),
        Recorded::New(_)
    ));
    let appeal = Appeal {
        id: "appeal-1".into(),
        action_id: before.id.clone(),
        channel: "destinygg".into(),
        user_id: "bob".into(),
        text: "sorry".into(),
        status: AppealStatus::Open,
        moderator: String::new(),
        note: String::new(),
        created_at: SystemTime::now(),
        resolved_at: None,
        reversal_action_id: String::new(),
    };
    store.file_appeal(&appeal).await.expect("an appeal");

    store.migrate().await.expect("migration 5");
    let kept = store
        .action(&before.id)
        .await
        .unwrap()
        .expect("the action is kept");
    assert_eq!(
        (
            kept.requested_by.as_str(),
            kept.idempotency_key.as_deref(),
            kept.reason.as_str()
        ),
        ("tool-one", Some("shared-key"), "rude")
    );
    assert_eq!(
        store.appeal(&appeal.id).await.unwrap().map(|a| a.action_id),
        Some(before.id.clone())
    );
    // After: one key, two credentials, two actions; each credential's retry finds its own.
    let other = action("a-two", "tool-two", "bob");
    assert!(matches!(
        store.record_action(&other).await.unwrap(),
        Recorded::New(_)
    ));
    match store
        .record_action(&action("a-retry", "tool-one", "bob"))
        .await
        .unwrap()
    {
        Recorded::Replayed(first) => assert_eq!(first.id, before.id),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store
            .record_action(&action("a-conflict", "tool-two", "carol"))
            .await
            .unwrap(),
        Recorded::Conflict(_)
    ));
    // The appeal's reference still holds: an appeal of a missing action is refused.
    let orphan = Appeal {
        id: "appeal-2".into(),
        action_id: "no-such-action".into(),
        ..appeal
    };
    assert!(matches!(
        store.file_appeal(&orphan).await.unwrap(),
        Filed::NoAction
    ));
    store.close().await;
}

#[tokio::test]
async fn idempotency_keys_per_credential_migration_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/modbot.db", dir.path().display());
    idempotency_keys_per_credential_migration(&url).await;
}

#[tokio::test]
async fn idempotency_keys_per_credential_migration_on_postgres() {
    let Some(schema) = PgSchema::create("idempotency_migration").await else {
        return;
    };
    idempotency_keys_per_credential_migration(&schema.url).await;
    schema.drop().await;
}

#[tokio::test]
async fn unreachable_database_fails_clearly_after_the_timeout() {
    let started = Instant::now();
    let options = ConnectOptions {
        max_connections: 1,
        connect_timeout: Duration::from_millis(800),
        statement_timeout: Duration::from_secs(5),
    };
    let error = Store::connect("postgres://modbot:secret@127.0.0.1:1/modbot", &options)
        .await
        .expect_err("nothing listens on port 1");
    let elapsed = started.elapsed();
    let message = error.to_string();
    assert!(matches!(error, StoreError::Connect { .. }), "{error:?}");
    assert!(
        message.contains("cannot connect to the database at postgres://modbot:***@127.0.0.1:1"),
        "{message}"
    );
    assert!(
        !message.contains("secret"),
        "the password is redacted: {message}"
    );
    assert!(
        elapsed >= Duration::from_millis(500),
        "it retried for a while: {elapsed:?}"
    );
}

#[tokio::test]
async fn unsupported_urls_are_refused() {
    let error = Store::connect("mysql://root@localhost/x", &options())
        .await
        .expect_err("mysql is not supported");
    assert!(matches!(error, StoreError::UnsupportedUrl(_)), "{error:?}");
}

// Retention: what is deleted, what must stay, on both backends.

const DAY_MS: i64 = 86_400_000;
/// The "now" of the retention tests: a fixed time, so records' ages are exact.
const NOW_MS: i64 = 1_800_000_000_000;

fn at(ms: i64) -> SystemTime {
    modbot::domain::from_unix_millis(ms)
}

/// A moderator's action in channel `c`, recorded `age_days` before [`NOW_MS`].
fn stored_action(
    id: &str,
    kind: ActionKind,
    duration: Option<Duration>,
    status: ActionStatus,
    age_days: i64,
) -> Action {
    let created_at = at(NOW_MS - age_days * DAY_MS);
    Action {
        id: id.into(),
        channel: "c".into(),
        target_user_id: format!("user-{id}"),
        target_nick: format!("nick-{id}"),
        kind,
        duration,
        reason: "test".into(),
        source: ActionSource::Moderator,
        moderator: "mod".into(),
        message_id: format!("m-{id}"),
        idempotency_key: None,
        request_hash: String::new(),
        requested_by: "test".into(),
        status,
        error: String::new(),
        detail: String::new(),
        bridge_id: String::new(),
        nuke_id: String::new(),
        appeal_id: String::new(),
        reversed_by: String::new(),
        created_at,
        updated_at: created_at,
        expires_at: created_at + Duration::from_secs(300),
    }
}

fn appeal(id: &str, action: &Action, status: AppealStatus) -> Appeal {
    Appeal {
        id: id.into(),
        action_id: action.id.clone(),
        channel: action.channel.clone(),
        user_id: action.target_user_id.clone(),
        text: "it was a joke".into(),
        status,
        moderator: String::new(),
        note: String::new(),
        created_at: action.created_at + Duration::from_secs(60),
        resolved_at: (status != AppealStatus::Open)
            .then(|| action.created_at + Duration::from_secs(120)),
        reversal_action_id: String::new(),
    }
}

fn policy(days: u64, batch_rows: u32) -> RetentionPolicy {
    let keep = Some(Duration::from_secs(days * 86_400));
    RetentionPolicy {
        audit: keep,
        actions: keep,
        feedback: keep,
        rule_history: keep,
        batch_rows,
    }
}

async fn retention_suite(url: &str) {
    let store = Store::connect(url, &options()).await.expect("connect");
    store.migrate().await.expect("migrate");
    let running = watch::channel(false).1;

    // Audit records: three past 30 days, one within, one past but about a message whose
    // action is under an open appeal.
    let audit = |id: &str, age_days: i64| {
        let mut record = record("c", id, "alice", "FREE NITRO here");
        record.decided_at = at(NOW_MS - age_days * DAY_MS);
        record
    };
    store
        .record_verdicts(&[
            audit("m-old1", 40),
            audit("m-old2", 40),
            audit("m-old3", 31),
            audit("m-new", 10),
            audit("m-open", 40),
        ])
        .await
        .unwrap();

    let mute = Some(Duration::from_secs(600));
    let mut reversed = stored_action(
        "ban-reversed",
        ActionKind::Ban,
        None,
        ActionStatus::Executed,
        40,
    );
    reversed.reversed_by = "unban-1".into();
    let actions = [
        stored_action(
            "executed",
            ActionKind::Timeout,
            mute,
            ActionStatus::Executed,
            40,
        ),
        stored_action(
            "pending",
            ActionKind::Timeout,
            mute,
            ActionStatus::Pending,
            40,
        ),
        stored_action("sent", ActionKind::Timeout, mute, ActionStatus::Sent, 40),
        stored_action(
            "open",
            ActionKind::Timeout,
            mute,
            ActionStatus::Executed,
            40,
        ),
        stored_action(
            "upheld",
            ActionKind::Timeout,
            mute,
            ActionStatus::Executed,
            40,
        ),
        stored_action("ban", ActionKind::Ban, None, ActionStatus::Executed, 40),
        reversed,
        stored_action(
            "ban-failed",
            ActionKind::Ban,
            None,
            ActionStatus::Failed,
            40,
        ),
        // A 60-day ban made 40 days ago is in force for 20 more days.
        stored_action(
            "ban-60d",
            ActionKind::Ban,
            Some(Duration::from_secs(60 * 86_400)),
            ActionStatus::Executed,
            40,
        ),
        stored_action("new", ActionKind::Timeout, mute, ActionStatus::Executed, 10),
    ];
    for action in &actions {
        assert!(matches!(
            store.record_action(action).await.unwrap(),
            Recorded::New(_)
        ));
    }
    for (id, action, status) in [
        ("appeal-open", &actions[3], AppealStatus::Open),
        ("appeal-upheld", &actions[4], AppealStatus::Upheld),
    ] {
        assert_eq!(
            store
                .file_appeal(&appeal(id, action, status))
                .await
                .unwrap(),
            Filed::Done
        );
    }
    // Nukes: one whose mute is done (both go), one whose mute still waits (both stay).
    let nuke = |id: &str| Nuke {
        id: id.into(),
        created_at: at(NOW_MS - 40 * DAY_MS),
        channel: "c".into(),
        pattern: "spam".into(),
        regex: false,
        window: Duration::from_secs(60),
        duration: Duration::from_secs(60),
        moderator: "mod".into(),
        reason: "raid".into(),
        targets: vec!["raider".into()],
        undone_at: None,
        undone_by: String::new(),
    };
    for (id, status) in [
        ("nuke-done", ActionStatus::Executed),
        ("nuke-waiting", ActionStatus::Pending),
    ] {
        let mut mute = stored_action(
            &format!("{id}-mute"),
            ActionKind::Timeout,
            Some(Duration::from_secs(60)),
            status,
            40,
        );
        mute.nuke_id = id.into();
        store.record_nuke(&nuke(id), &[mute]).await.unwrap();
    }
    let feedback = |id: &str, age_days: i64| Feedback {
        id: id.into(),
        created_at: at(NOW_MS - age_days * DAY_MS),
        channel: "c".into(),
        user_id: "mallory".into(),
        message_id: format!("m-{id}"),
        text: "you are a clown".into(),
        label: "toxicity/insult".into(),
        positive: true,
        source: FeedbackSource::ModeratorAction,
        actor: "mod".into(),
        action: "timeout".into(),
    };
    for f in [feedback("f-old", 40), feedback("f-new", 10)] {
        assert!(store.record_feedback(&f).await.unwrap());
    }

    // Nothing is deleted when every retention is 0 (forever), or when the pass is stopped.
    let forever = RetentionPolicy::from_config(&modbot::config::RetentionConfig {
        audit_days: 0,
        actions_days: 0,
        feedback_days: 0,
        rule_history_days: 0,
        interval_secs: 60,
        batch_rows: 2,
    });
    let far_future = at(NOW_MS + 100_000 * DAY_MS);
    assert_eq!(
        run_pass(&store, &forever, far_future, &running)
            .await
            .unwrap(),
        Deleted::default()
    );
    let stopped = watch::channel(true).1;
    assert_eq!(
        run_pass(&store, &policy(30, 2), at(NOW_MS), &stopped)
            .await
            .unwrap(),
        Deleted::default()
    );

    // Batches of 2: three audit records need two batches, five actions three.
    let deleted = run_pass(&store, &policy(30, 2), at(NOW_MS), &running)
        .await
        .unwrap();
    assert_eq!(
        deleted,
        Deleted {
            audit_log: 3,
            actions: 5,
            appeals: 1,
            nukes: 1,
            feedback: 1,
            rule_history: 0,
            review_items: 0,
        }
    );
    let all = AuditQuery {
        limit: 100,
        ..AuditQuery::default()
    };
    let mut left: Vec<String> = store
        .audit_log(&all)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.message.message_id)
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["m-new", "m-open"],
        "the appealed message's record stays"
    );
    let mut kept: Vec<String> = store
        .actions(&ActionFilter::default(), None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    kept.sort();
    assert_eq!(
        kept,
        [
            "ban",
            "ban-60d",
            "new",
            "nuke-waiting-mute",
            "open",
            "pending",
            "sent"
        ]
    );
    let appeals: Vec<String> = store
        .appeals(&AppealFilter::default(), None, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(appeals, ["appeal-open"]);
    assert!(store.nuke("c", Some("nuke-done")).await.unwrap().is_none());
    assert!(
        store
            .nuke("c", Some("nuke-waiting"))
            .await
            .unwrap()
            .is_some()
    );
    let ids: Vec<String> = store
        .feedback()
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.id)
        .collect();
    assert_eq!(ids, ["f-new"]);

    // A second pass at the same time finds nothing more.
    assert_eq!(
        run_pass(&store, &policy(30, 2), at(NOW_MS), &running)
            .await
            .unwrap(),
        Deleted::default()
    );

    // The rule history: written now (its times are the clock's), so aged by moving `now`.
    // The seed is revision 1 (one row per rule and policy), then two changes.
    let spec = |id: &str| format!("id = \"{id}\"\nkind = \"phrase\"\nphrases = [\"x\"]\n");
    store
        .seed_ruleset(
            &[("r1".into(), spec("r1")), ("r2".into(), spec("r2"))],
            &[("*".into(), "[policy]\n".into())],
            "seed",
        )
        .await
        .unwrap()
        .expect("seeded");
    store.upsert_rule("r3", &spec("r3"), "admin").await.unwrap();
    store.upsert_rule("r3", &spec("r3"), "admin").await.unwrap();
    let revisions = |history: Vec<modbot::infra::store::HistoryEntry>| {
        history.into_iter().map(|h| h.revision).collect::<Vec<_>>()
    };
    assert_eq!(
        revisions(store.ruleset_history().await.unwrap()),
        [1, 1, 1, 2, 3]
    );
    let soon = SystemTime::now() + Duration::from_secs(86_400);
    assert_eq!(
        run_pass(&store, &policy(30, 1), soon, &running)
            .await
            .unwrap()
            .rule_history,
        0
    );
    let later = SystemTime::now() + Duration::from_secs(40 * 86_400);
    let deleted = run_pass(&store, &policy(30, 1), later, &running)
        .await
        .unwrap();
    assert_eq!(deleted.rule_history, 4, "revisions 1 and 2, one per batch");
    assert_eq!(
        revisions(store.ruleset_history().await.unwrap()),
        [3],
        "the latest revision is kept however old"
    );
    store.close().await;
}

#[tokio::test]
async fn sqlite_retention() {
    let dir = tempfile::tempdir().unwrap();
    retention_suite(&format!("sqlite://{}/modbot.db", dir.path().display())).await;
}

#[tokio::test]
async fn postgres_retention() {
    let Some(schema) = PgSchema::create("postgres_retention").await else {
        return;
    };
    retention_suite(&schema.url).await;
    schema.drop().await;
}

/// Deleted rows' pages go back to the file system: the file shrinks, no free pages are left.
#[tokio::test]
async fn sqlite_space_is_reclaimed_after_retention() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(
        &format!("sqlite://{}/modbot.db", dir.path().display()),
        &options(),
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.sqlite_auto_vacuum().await.unwrap(), Some(2));
    // One decided record, copied: deciding 2000 messages would only slow the test down.
    let mut template = record("c", "m", "alice", &"FREE NITRO here ".repeat(64));
    template.decided_at = at(NOW_MS - 100 * DAY_MS);
    for batch in 0..10 {
        let records: Vec<AuditRecord> = (0..200)
            .map(|i| {
                let mut r = template.clone();
                r.id = format!("r{batch}-{i}");
                r.message.message_id = format!("m{batch}-{i}");
                r
            })
            .collect();
        store.record_verdicts(&records).await.unwrap();
    }
    let full = store.sqlite_pages().await.unwrap().expect("SQLite");
    let running = watch::channel(false).1;
    let deleted = run_pass(&store, &policy(30, 500), at(NOW_MS), &running)
        .await
        .unwrap();
    assert_eq!(deleted.audit_log, 2000);
    let after = store.sqlite_pages().await.unwrap().expect("SQLite");
    assert_eq!(after.freelist_count, 0, "{after:?}");
    assert!(
        after.page_count * 4 < full.page_count,
        "the file shrank: {full:?} -> {after:?}"
    );
    store.close().await;
}

/// An SQLite file as a program other than modbot (or modbot before incremental auto_vacuum)
/// leaves it, holding `bytes` of data.
async fn old_sqlite_file(path: &std::path::Path, bytes: usize) -> String {
    use sqlx::Connection as _;
    let url = format!("sqlite://{}", path.display());
    let mut conn = sqlx::SqliteConnection::connect(&format!("{url}?mode=rwc"))
        .await
        .unwrap();
    sqlx::query("CREATE TABLE old_data (x BLOB)")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO old_data VALUES (zeroblob($1))")
        .bind(bytes as i64)
        .execute(&mut conn)
        .await
        .unwrap();
    let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, 0, "SQLite's default: no auto_vacuum");
    conn.close().await.unwrap();
    url
}

/// A file made before incremental auto_vacuum is switched once, at connect; a large one is
/// left to `modbot migrate` (`use_incremental_vacuum(None)`), since its VACUUM would hold up
/// the server's start.
#[tokio::test]
async fn existing_sqlite_files_switch_to_incremental_vacuum() {
    let dir = tempfile::tempdir().unwrap();
    let url = old_sqlite_file(&dir.path().join("small.db"), 100_000).await;
    let store = Store::connect(&url, &options()).await.unwrap();
    assert_eq!(store.sqlite_auto_vacuum().await.unwrap(), Some(2));
    store.migrate().await.expect("migrates after the switch");
    store.close().await;

    let large = modbot::infra::store::VACUUM_AT_CONNECT_MAX_BYTES as usize + (1 << 20);
    let url = old_sqlite_file(&dir.path().join("large.db"), large).await;
    let store = Store::connect(&url, &options()).await.unwrap();
    assert_eq!(
        store.sqlite_auto_vacuum().await.unwrap(),
        Some(0),
        "not at connect"
    );
    store.use_incremental_vacuum(None).await.unwrap();
    assert_eq!(store.sqlite_auto_vacuum().await.unwrap(), Some(2));
    store.close().await;
}

/// The task runs a pass at once, reports it, and stops when asked.
#[tokio::test]
async fn retention_task_runs_at_start_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(
        &format!("sqlite://{}/modbot.db", dir.path().display()),
        &options(),
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let mut old = record("c", "m-old", "alice", "FREE NITRO here");
    old.decided_at = SystemTime::now() - Duration::from_secs(100 * 86_400);
    store
        .record_verdicts(&[old, record("c", "m-new", "alice", "FREE NITRO here")])
        .await
        .unwrap();
    let task = RetentionTask::spawn(store.clone(), policy(30, 100), Duration::from_secs(3600));
    let mut passes = task.passes();
    passes.changed().await.expect("a first pass");
    let left: Vec<String> = store
        .audit_log(&AuditQuery {
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.message.message_id)
        .collect();
    assert_eq!(left, ["m-new"]);
    let started = Instant::now();
    task.stop(tokio::time::Instant::now() + Duration::from_secs(5))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "stops at once between passes"
    );
    store.close().await;
}

/// A record as a stream makes it: with the automatic action that carries its verdict out.
fn record_with_action(channel: &str, id: &str, user: &str, text: &str) -> AuditRecord {
    let record = record(channel, id, user, text);
    let action = modbot::service::actions::dispatch::automatic_action(
        &record.message,
        &record.verdict,
        "test",
        Duration::from_secs(60),
        Duration::from_secs(600),
    );
    assert!(action.is_some(), "test records carry actions: {text}");
    record.with_action(action)
}

async fn audit_count(store: &Store) -> usize {
    store
        .audit_log(&AuditQuery {
            limit: 10_000,
            ..AuditQuery::default()
        })
        .await
        .expect("read the audit log")
        .len()
}

/// Chat text is whatever a user typed: NUL (which PostgreSQL's `text` cannot hold) is stored
/// as U+2400, every other control as sent, in the audit log, actions and feedback alike.
async fn control_characters_suite(store: &Store) {
    let text = "FREE NITRO here \0 \u{1}\u{1b}[31m\ttab\r\nline";
    let stored_text = "FREE NITRO here \u{2400} \u{1}\u{1b}[31m\ttab\r\nline";
    let mut record = record_with_action("destinygg", "nul1", "nul_user", text);
    let action_id = record.action.as_ref().unwrap().id.clone();
    record.action.as_mut().unwrap().reason = "reason with \0 inside".into();
    store
        .record_verdicts(std::slice::from_ref(&record))
        .await
        .expect("a text with NUL and controls is stored");
    let read = store
        .audit_log(&AuditQuery {
            message_id: Some("nul1".into()),
            limit: 1,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(read[0].message.text, stored_text);
    let action = store.action(&action_id).await.unwrap().expect("its action");
    assert_eq!(action.reason, "reason with \u{2400} inside");
    let feedback = Feedback {
        id: "nul-feedback".into(),
        created_at: SystemTime::UNIX_EPOCH,
        channel: "destinygg".into(),
        user_id: "nul_user".into(),
        message_id: "nul1".into(),
        text: text.into(),
        label: "scam".into(),
        positive: true,
        source: FeedbackSource::ModeratorAction,
        actor: "mod".into(),
        action: "ban".into(),
    };
    assert!(store.record_feedback(&feedback).await.unwrap());
    let examples = store.feedback().await.unwrap();
    let example = examples.iter().find(|f| f.id == "nul-feedback").unwrap();
    assert_eq!(example.text, stored_text);
}

/// One record the database refuses (here: an audit id written before, a unique violation)
/// among 500: the other 499 are stored with their actions, and the offender's action is
/// stored without its row. Before the split, the whole batch was lost.
async fn poison_batch_suite(store: &Store) {
    let before = audit_count(store).await;
    let first = record_with_action("destinygg", "poison0", "poison_user0", "FREE NITRO here");
    store
        .record_verdicts(std::slice::from_ref(&first))
        .await
        .unwrap();
    let mut batch: Vec<AuditRecord> = (1..=500)
        .map(|i| {
            record_with_action(
                "destinygg",
                &format!("poison{i}"),
                &format!("poison_user{i}"),
                "FREE NITRO here",
            )
        })
        .collect();
    batch[250].id.clone_from(&first.id);
    let error = store
        .record_verdicts(&batch)
        .await
        .expect_err("the batch as a whole is refused");
    assert_eq!(error.kind(), FailureKind::Constraint, "{error}");
    assert_eq!(
        tonic::Status::from(error).code(),
        tonic::Code::FailedPrecondition,
        "a constraint violation is not `retry later`"
    );

    let outcomes = modbot::service::audit::write_records(store, &batch).await;
    for (i, outcome) in outcomes.iter().enumerate() {
        let expected = if i == 250 {
            Outcome::ActionOnly
        } else {
            Outcome::Stored
        };
        assert_eq!(*outcome, expected, "record {i}");
    }
    assert_eq!(audit_count(store).await, before + 1 + 499);
    for record in &batch {
        let id = &record.action.as_ref().unwrap().id;
        assert!(
            store.action(id).await.unwrap().is_some(),
            "the action of {} is stored",
            record.message.message_id
        );
    }
}

#[tokio::test]
async fn sqlite_control_characters_and_poison_batches() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/modbot.db", dir.path().display());
    let store = Store::connect(&url, &options()).await.unwrap();
    store.migrate().await.unwrap();
    control_characters_suite(&store).await;
    poison_batch_suite(&store).await;
    store.close().await;
}

#[tokio::test]
async fn postgres_control_characters_and_poison_batches() {
    let Some(schema) = PgSchema::create("postgres_control_characters_and_poison_batches").await
    else {
        return;
    };
    let store = Store::connect(&schema.url, &options()).await.unwrap();
    store.migrate().await.unwrap();
    control_characters_suite(&store).await;
    poison_batch_suite(&store).await;
    store.close().await;
    schema.drop().await;
}

/// A PostgreSQL connection that stops answering (a proxy holds its bytes): every call fails
/// within twice the statement timeout as `Timeout`, a transient failure (`UNAVAILABLE`),
/// instead of hanging; once the path heals, calls succeed again.
#[tokio::test]
async fn a_blackholed_postgres_times_out_and_recovers() {
    let Some(schema) = PgSchema::create("a_blackholed_postgres_times_out_and_recovers").await
    else {
        return;
    };
    let proxy = common::proxy::TcpProxy::start(common::postgres_addr()).await;
    let url = common::via_proxy(&schema.url, proxy.addr());
    let statement_timeout = Duration::from_millis(300);
    let store = Store::connect(
        &url,
        &ConnectOptions {
            statement_timeout,
            ..options()
        },
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    store.ping().await.unwrap();

    proxy.blackhole();
    for _ in 0..3 {
        let started = Instant::now();
        let error = store
            .ping()
            .await
            .expect_err("no answer through a blackhole");
        let elapsed = started.elapsed();
        assert!(matches!(error, StoreError::Timeout(_)), "{error:?}");
        assert!(error.is_transient());
        assert!(
            elapsed < statement_timeout * 2 + Duration::from_millis(500),
            "bounded by the call timeout: {elapsed:?}"
        );
        assert_eq!(tonic::Status::from(error).code(), tonic::Code::Unavailable);
    }
    let record = record_with_action("destinygg", "dark1", "dark_user", "FREE NITRO here");
    assert_eq!(
        modbot::service::audit::write_records(&store, std::slice::from_ref(&record)).await,
        [Outcome::Lost],
        "a transient failure is not split and loses the record, said so"
    );

    proxy.heal();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.record_verdicts(std::slice::from_ref(&record)).await {
            Ok(_) => break,
            Err(error) if Instant::now() < deadline => {
                assert!(error.is_transient(), "{error:?}");
            }
            Err(error) => panic!("the store did not recover after the heal: {error}"),
        }
    }
    store.ping().await.expect("healed");
    store.close().await;
    schema.drop().await;
}

/// SQLite locked by another writer: a write waits the busy timeout (the statement timeout),
/// then fails as transient (`UNAVAILABLE`), instead of waiting for the lock indefinitely.
#[tokio::test]
async fn a_locked_sqlite_fails_as_transient_after_the_busy_timeout() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/modbot.db", dir.path().display());
    let store = Store::connect(
        &url,
        &ConnectOptions {
            statement_timeout: Duration::from_millis(200),
            ..options()
        },
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let mut locker = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut locker)
        .await
        .unwrap();

    let record = record("destinygg", "locked1", "alice", "FREE NITRO here");
    let started = Instant::now();
    let error = store
        .record_verdicts(std::slice::from_ref(&record))
        .await
        .expect_err("the database is locked");
    assert!(error.is_transient(), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(tonic::Status::from(error).code(), tonic::Code::Unavailable);

    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    store
        .record_verdicts(std::slice::from_ref(&record))
        .await
        .expect("written once the lock is gone");
    locker.close().await.unwrap();
    store.close().await;
}

/// Closing a store whose connection is stuck on a dead path (a call timed out on it) ends
/// within the call timeout instead of holding up shutdown until TCP gives up.
#[tokio::test]
async fn closing_a_store_with_a_blackholed_connection_is_bounded() {
    let Some(schema) =
        PgSchema::create("closing_a_store_with_a_blackholed_connection_is_bounded").await
    else {
        return;
    };
    let proxy = common::proxy::TcpProxy::start(common::postgres_addr()).await;
    let statement_timeout = Duration::from_millis(300);
    let store = Store::connect(
        &common::via_proxy(&schema.url, proxy.addr()),
        &ConnectOptions {
            statement_timeout,
            ..options()
        },
    )
    .await
    .unwrap();
    store.ping().await.unwrap();
    proxy.blackhole();
    store
        .ping()
        .await
        .expect_err("no answer through a blackhole");
    let started = Instant::now();
    store.close().await;
    assert!(
        started.elapsed() < statement_timeout * 2 + Duration::from_millis(500),
        "close is bounded: {:?}",
        started.elapsed()
    );
    proxy.heal();
    schema.drop().await;
}

/// A held message's record with its review item, held at `held_ms`, expiring `ttl_ms` later.
fn held(id: &str, user: &str, held_ms: u64, ttl_ms: u64) -> AuditRecord {
    let mut record = record("destinygg", id, user, "free nitro at scam dot link");
    record.verdict.decision = Decision::Hold;
    let created_at = SystemTime::UNIX_EPOCH + Duration::from_millis(held_ms);
    let item = modbot::domain::ReviewItem {
        id: modbot::domain::review_id("shop", "destinygg", id),
        created_at,
        expires_at: created_at + Duration::from_millis(ttl_ms),
        on_expiry: modbot::domain::OnExpiry::Allow,
        channel: "destinygg".into(),
        message_id: id.into(),
        user_id: user.into(),
        nick: user.into(),
        text: "free nitro at scam dot link\u{0}".into(),
        reasons: record.verdict.reasons.clone(),
        scores: [("spam/spam".to_owned(), 0.75)].into_iter().collect(),
        requested_by: "shop".into(),
        records_only: true,
        hide_action_id: String::new(),
        status: ReviewStatus::Pending,
        resolved_at: None,
        moderator: String::new(),
        label: String::new(),
        note: String::new(),
        action_id: String::new(),
    };
    record.with_review(Some(item))
}

async fn review_suite(url: &str) {
    let store = Store::connect(url, &options()).await.expect("connect");
    store.migrate().await.expect("migrate");
    let t0 = 1_700_000_000_000;
    let a = held("r1", "alice", t0, 1_000);
    let b = held("r2", "bob", t0 + 10, 60_000);
    store
        .record_verdicts(&[a.clone(), b.clone()])
        .await
        .expect("write the records and their items");
    // The same message held again keeps its item as it was.
    store
        .record_verdicts(&[held("r1", "alice", t0 + 500, 5)])
        .await
        .unwrap();

    let item_a = a.review.clone().unwrap();
    let stored = store.review(&item_a.id).await.unwrap().expect("stored");
    assert_eq!(
        stored.text, "free nitro at scam dot link\u{2400}",
        "NUL is escaped"
    );
    assert_eq!(stored.reasons, item_a.reasons);
    assert_eq!(stored.scores, item_a.scores);
    assert_eq!(stored.created_at, item_a.created_at);
    assert_eq!(stored.expires_at, item_a.expires_at);
    assert!(stored.records_only);

    let depth = store.review_depth().await.unwrap();
    assert_eq!(depth.pending, 2);
    assert_eq!(depth.oldest, Some(item_a.created_at));
    let listed = store
        .reviews(&ReviewFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|i| i.message_id.as_str())
            .collect::<Vec<_>>(),
        ["r2", "r1"],
        "newest first"
    );
    let bobs = store
        .reviews(
            &ReviewFilter {
                user_id: Some("bob".into()),
                ..ReviewFilter::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(bobs.len(), 1);

    // Only a's time has run out at t0 + 2 s.
    let due = store
        .due_reviews(
            SystemTime::UNIX_EPOCH + Duration::from_millis(t0 + 2_000),
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        due.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        [item_a.id.as_str()]
    );

    // Two rulings at once: one stands, the other learns whose.
    let ruled_at = SystemTime::UNIX_EPOCH + Duration::from_millis(t0 + 3_000);
    let ruling = |moderator: &str, status: ReviewStatus| modbot::domain::ReviewItem {
        status,
        resolved_at: Some(ruled_at),
        moderator: moderator.into(),
        ..stored.clone()
    };
    let example = Feedback {
        id: "fb-review".into(),
        created_at: ruled_at,
        channel: "destinygg".into(),
        user_id: "alice".into(),
        message_id: "r1".into(),
        text: "free nitro".into(),
        label: "spam/spam".into(),
        positive: true,
        source: FeedbackSource::ReviewRejected,
        actor: "mod1".into(),
        action: "timeout".into(),
    };
    let approve = ruling("mod2", ReviewStatus::Approved);
    let reject = ruling("mod1", ReviewStatus::Rejected);
    let (first, second) = tokio::join!(
        store.settle_review(&reject, None, std::slice::from_ref(&example)),
        store.settle_review(&approve, None, &[]),
    );
    let outcomes = [first.unwrap(), second.unwrap()];
    let done = outcomes
        .iter()
        .filter(|o| matches!(o, ReviewRuled::Done(..)))
        .count();
    assert_eq!(done, 1, "{outcomes:?}");
    let current = store.review(&item_a.id).await.unwrap().unwrap();
    for outcome in &outcomes {
        if let ReviewRuled::AlreadySettled(standing) = outcome {
            assert_eq!(**standing, current);
        }
    }
    assert_eq!(current.resolved_at, Some(ruled_at));
    let examples = store.feedback().await.unwrap();
    assert_eq!(
        examples.len(),
        usize::from(current.status == ReviewStatus::Rejected),
        "the example is written with its ruling only"
    );
    assert!(matches!(
        store
            .settle_review(&ruling("mod3", ReviewStatus::Approved), None, &[])
            .await
            .unwrap(),
        ReviewRuled::AlreadySettled(_)
    ));
    let mut missing = reject.clone();
    missing.id = "nope".into();
    assert_eq!(
        store.settle_review(&missing, None, &[]).await.unwrap(),
        ReviewRuled::NotFound
    );

    // A watcher catching up reads settled items only, in the order they were settled.
    let settled = store.settled_reviews_since(0, "", 10).await.unwrap();
    assert_eq!(settled.len(), 1);
    assert_eq!(settled[0].id, item_a.id);
    assert!(
        store
            .settled_reviews_since(store_millis(ruled_at), &item_a.id, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.review_depth().await.unwrap().pending, 1);

    // Retention deletes settled items only, however old the pending one is.
    let later = SystemTime::UNIX_EPOCH + Duration::from_millis(t0 + 86_400_000);
    assert_eq!(store.delete_reviews_before(later, 10).await.unwrap(), 1);
    assert!(store.review(&item_a.id).await.unwrap().is_none());
    assert_eq!(store.delete_reviews_before(later, 10).await.unwrap(), 0);
    assert_eq!(store.review_depth().await.unwrap().pending, 1);
    store.close().await;
}

#[tokio::test]
async fn sqlite_review_queue() {
    let dir = tempfile::tempdir().unwrap();
    review_suite(&format!("sqlite://{}/modbot.db", dir.path().display())).await;
}

#[tokio::test]
async fn postgres_review_queue() {
    let Some(schema) = PgSchema::create("postgres_review_queue").await else {
        return;
    };
    review_suite(&schema.url).await;
    schema.drop().await;
}
