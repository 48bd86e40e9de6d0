//! The store suite, run against both backends: the embedded SQLite file and PostgreSQL.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::PgSchema;
use modbot::decision::{ChatMessage, DecideOptions, Decision, Degraded, Engine, Inputs};
use modbot::normalize::normalize;
use modbot::rules::RuleSet;
use modbot::store::{
    AuditQuery, AuditRecord, ConnectOptions, Feedback, FeedbackSource, Store, StoreError,
};
use modbot::users::UserHistory;

fn options() -> ConnectOptions {
    ConnectOptions {
        max_connections: 4,
        connect_timeout: Duration::from_secs(2),
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
        channel_recent: &modbot::users::ChannelWindow::default(),
        now_ms: 0,
        received: Instant::now(),
        model: modbot::decision::ModelInput::NotConsulted,
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
                modbot::actions::dispatch::automatic_action(
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
            &modbot::actions::ActionFilter {
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
    store.close().await;
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
    modbot::store::unix_millis(time)
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
    use modbot::actions::{ActionKind, ActionSource, Appeal, AppealStatus, NewAction};
    use modbot::store::{Filed, Recorded};
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
