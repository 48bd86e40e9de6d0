//! Nothing decided is lost: fault tests of the audit path on a real PostgreSQL, through
//! `StreamModerate` as a bridge sees it. They say SKIPPED without PostgreSQL (unless
//! `MODBOT_TEST_REQUIRE_SERVICES` is set).

mod common;

use std::time::{Duration, Instant};

use common::proxy::TcpProxy;
use common::{PgSchema, TestServer, chat_message, stream_message};
use metrics_exporter_prometheus::PrometheusHandle;
use modbot::infra::store::{AuditQuery, ConnectOptions, Store};
use modbot::proto::{
    self, DegradedComponent, Hello, StreamModerateRequest, StreamModerateResponse,
    stream_moderate_request, stream_moderate_response,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// The recorder of this process, installed by the first test that asks.
fn recorder() -> &'static PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        modbot::telemetry::prometheus_builder()
            .install_recorder()
            .expect("the only recorder in this process")
    })
}

/// The sum of the samples whose line starts with `prefix` (name and labels).
fn sample(prefix: &str) -> f64 {
    recorder()
        .render()
        .lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

const T0: i64 = 1_700_000_000_000;

async fn open(
    server: &TestServer,
) -> (
    mpsc::Sender<StreamModerateRequest>,
    Streaming<StreamModerateResponse>,
) {
    let (tx, rx) = mpsc::channel(1024);
    tx.send(StreamModerateRequest {
        kind: Some(stream_moderate_request::Kind::Hello(Hello {
            bridge_id: "durability-bridge".into(),
            channels: vec!["destinygg".into()],
            dialect: "dgg".into(),
            bot_nick: "modbot".into(),
        })),
    })
    .await
    .unwrap();
    let mut responses = server
        .moderation()
        .stream_moderate(ReceiverStream::new(rx))
        .await
        .expect("the stream opens")
        .into_inner();
    let welcome = responses.message().await.unwrap().expect("a welcome");
    assert!(matches!(
        welcome.kind,
        Some(stream_moderate_response::Kind::Welcome(_))
    ));
    (tx, responses)
}

/// The next verdict, skipping action commands, within `within`.
async fn next_verdict(
    responses: &mut Streaming<StreamModerateResponse>,
    within: Duration,
) -> proto::Verdict {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let response = tokio::time::timeout_at(deadline, responses.message())
            .await
            .expect("a verdict in time: moderation goes on")
            .expect("a healthy stream")
            .expect("a response");
        match response.kind.expect("a kind") {
            stream_moderate_response::Kind::Verdict(verdict) => return verdict,
            // 500 scams from new users are also a raid: its alert comes on the stream.
            stream_moderate_response::Kind::Command(_)
            | stream_moderate_response::Kind::RaidAlert(_) => {}
            other => panic!("expected a verdict, got {other:?}"),
        }
    }
}

fn store_degraded(verdict: &proto::Verdict) -> bool {
    verdict
        .degraded
        .contains(&(DegradedComponent::Store as i32))
}

/// A store beside the server's, connected straight to PostgreSQL, to see what was written.
async fn direct_store(url: &str) -> Store {
    Store::connect(
        url,
        &ConnectOptions {
            max_connections: 2,
            connect_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(5),
        },
    )
    .await
    .expect("connect to the test schema")
}

/// One message PostgreSQL's `text` cannot hold (a NUL byte) among 500 that act on their
/// senders, on one stream: every one is stored with its action, the offender's text
/// escaped, and no verdict is degraded. Before, the batch holding it failed three times and
/// was dropped whole, actions included, after their verdicts had named them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_among_500_loses_nothing_on_postgres() {
    let Some(schema) =
        PgSchema::create("a_poison_message_among_500_loses_nothing_on_postgres").await
    else {
        return;
    };
    let url = schema.url.clone();
    let server = TestServer::start(move |config| config.database.url = url).await;
    let (tx, mut responses) = open(&server).await;
    const COUNT: usize = 501;
    const POISON: usize = 250;
    let sender = tokio::spawn(async move {
        for i in 0..COUNT {
            let text = if i == POISON {
                "FREE NITRO\0 here".to_owned()
            } else {
                format!("FREE NITRO here {i}")
            };
            let request = stream_message(
                &format!("m{i}"),
                &format!("user{i}"),
                &text,
                Some(T0 + i as i64),
            );
            tx.send(request).await.unwrap();
        }
        tx
    });
    let mut action_ids = Vec::new();
    for i in 0..COUNT {
        let verdict = next_verdict(&mut responses, Duration::from_secs(30)).await;
        assert_eq!(verdict.message_id, format!("m{i}"));
        assert!(!store_degraded(&verdict), "m{i}: {verdict:?}");
        assert!(!verdict.action_id.is_empty(), "m{i} names its action");
        action_ids.push(verdict.action_id);
    }
    drop(sender.await.unwrap());

    let store = direct_store(&schema.url).await;
    let rows = store
        .audit_log(&AuditQuery {
            limit: 10_000,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), COUNT, "every record is stored");
    let poison = rows
        .iter()
        .find(|r| r.message.message_id == format!("m{POISON}"))
        .expect("the offender's record");
    assert_eq!(poison.message.text, "FREE NITRO\u{2400} here");
    for id in &action_ids {
        assert!(
            store.action(id).await.unwrap().is_some(),
            "action {id} is stored and will be carried out"
        );
    }
    store.close().await;
    server.stop().await.unwrap();
    schema.drop().await;
}

/// The server's PostgreSQL connections stop answering (a proxy holds their bytes, closing
/// nothing): verdicts keep coming, within a bound, marked degraded (component `store`) and
/// naming no action, and are counted; once the proxy heals, records are stored again and the
/// marks stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_postgres_degrades_moderation_and_it_recovers() {
    let Some(schema) =
        PgSchema::create("a_blackholed_postgres_degrades_moderation_and_it_recovers").await
    else {
        return;
    };
    recorder();
    let proxy = TcpProxy::start(common::postgres_addr()).await;
    let url = common::via_proxy(&schema.url, proxy.addr());
    const STATEMENT_TIMEOUT_MS: u64 = 500;
    let server = TestServer::start(move |config| {
        config.database.url = url;
        config.database.statement_timeout_ms = STATEMENT_TIMEOUT_MS;
    })
    .await;
    let (tx, mut responses) = open(&server).await;
    // A verdict waits for at most one batch already being written and its own, each bounded
    // by the call timeout (twice the statement timeout).
    let bound = Duration::from_millis(4 * STATEMENT_TIMEOUT_MS) + Duration::from_secs(2);
    let mut n = 0;
    let mut say_scam = |tx: mpsc::Sender<StreamModerateRequest>| {
        n += 1;
        let request = stream_message(
            &format!("m{n}"),
            &format!("user{n}"),
            "FREE NITRO here",
            Some(T0 + n),
        );
        async move { tx.send(request).await.unwrap() }
    };

    say_scam(tx.clone()).await;
    let healthy = next_verdict(&mut responses, bound).await;
    assert!(!store_degraded(&healthy) && !healthy.action_id.is_empty());

    let degraded_before = sample("modbot_verdicts_degraded_total{component=\"store\"}");
    let timeouts_before = sample("modbot_store_errors_total{kind=\"timeout\"}");
    proxy.blackhole();
    for _ in 0..3 {
        say_scam(tx.clone()).await;
        let started = Instant::now();
        let verdict = next_verdict(&mut responses, bound).await;
        assert!(store_degraded(&verdict), "{verdict:?}");
        assert!(
            verdict.action_id.is_empty(),
            "a verdict names no action that is not stored: {verdict:?}"
        );
        assert!(started.elapsed() < bound);
    }
    assert!(
        sample("modbot_verdicts_degraded_total{component=\"store\"}") >= degraded_before + 3.0,
        "degraded verdicts are counted"
    );
    assert!(
        sample("modbot_store_errors_total{kind=\"timeout\"}") > timeouts_before,
        "store timeouts are counted"
    );

    proxy.heal();
    // The connections stuck in the blackhole come back or are replaced; within a bound, a
    // verdict names its stored action again and the marks stop.
    let deadline = Instant::now() + Duration::from_secs(20);
    let recovered = loop {
        say_scam(tx.clone()).await;
        let verdict = next_verdict(&mut responses, bound).await;
        if !store_degraded(&verdict) {
            break verdict;
        }
        assert!(Instant::now() < deadline, "no recovery after the heal");
    };
    assert!(!recovered.action_id.is_empty());
    for _ in 0..3 {
        say_scam(tx.clone()).await;
        let verdict = next_verdict(&mut responses, bound).await;
        assert!(!store_degraded(&verdict), "the marks stop: {verdict:?}");
        assert!(!verdict.action_id.is_empty());
    }
    let store = direct_store(&schema.url).await;
    assert!(
        store.action(&recovered.action_id).await.unwrap().is_some(),
        "new records are stored after the heal"
    );
    store.close().await;
    drop(tx);
    server.stop().await.unwrap();
    schema.drop().await;
}

/// `Classify` on PostgreSQL with a NUL byte in one message of three: every verdict names its
/// stored action and none is degraded. Before, the call's one transaction failed and every
/// notable verdict of the call was marked degraded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_with_a_nul_byte_stores_every_record_on_postgres() {
    let Some(schema) =
        PgSchema::create("classify_with_a_nul_byte_stores_every_record_on_postgres").await
    else {
        return;
    };
    let url = schema.url.clone();
    let server = TestServer::start(move |config| config.database.url = url).await;
    let messages = vec![
        chat_message("c1", "alice", "FREE NITRO here"),
        chat_message("c2", "bob", "FREE NITRO \0 here"),
        chat_message("c3", "carol", "FREE NITRO here too"),
    ];
    let verdicts = server
        .moderation()
        .classify(proto::ClassifyRequest {
            messages,
            options: None,
        })
        .await
        .expect("classified")
        .into_inner()
        .verdicts;
    let store = direct_store(&schema.url).await;
    for verdict in &verdicts {
        assert!(!store_degraded(verdict), "{verdict:?}");
        assert!(!verdict.action_id.is_empty(), "{verdict:?}");
        assert!(store.action(&verdict.action_id).await.unwrap().is_some());
    }
    let rows = store
        .audit_log(&AuditQuery {
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    store.close().await;
    server.stop().await.unwrap();
    schema.drop().await;
}
