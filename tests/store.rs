//! The store suite, run against both backends: the embedded SQLite file and PostgreSQL.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::PgSchema;
use modbot::audit::Outcome;
use modbot::decision::{ChatMessage, DecideOptions, Decision, Degraded, Engine, Inputs};
use modbot::normalize::normalize;
use modbot::rules::RuleSet;
use modbot::store::{
    AuditQuery, AuditRecord, ConnectOptions, FailureKind, Feedback, FeedbackSource, Store,
    StoreError,
};
use modbot::users::UserHistory;

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

/// A record as a stream makes it: with the automatic action that carries its verdict out.
fn record_with_action(channel: &str, id: &str, user: &str, text: &str) -> AuditRecord {
    let record = record(channel, id, user, text);
    let action = modbot::actions::dispatch::automatic_action(
        &record.message,
        &record.verdict,
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

    let outcomes = modbot::audit::write_records(store, &batch).await;
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
        modbot::audit::write_records(&store, std::slice::from_ref(&record)).await,
        [Outcome::Lost],
        "a transient failure is not split and loses the record, said so"
    );

    proxy.heal();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.record_verdicts(std::slice::from_ref(&record)).await {
            Ok(()) => break,
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
