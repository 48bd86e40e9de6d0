//! Shutdown fits one grace budget: from the signal to `serve`'s return takes at most
//! `grpc.shutdown_grace_secs` (and a moment), whatever is stuck, so the pod's longer
//! termination grace period never ends in a SIGKILL.

use crate::common;

use std::time::{Duration, Instant};

use common::{TestServer, chat_message, stream_message};
use modbot::proto::ClassifyRequest;
use sqlx::Connection as _;

/// The database stops answering writes (another connection holds SQLite's write lock for the
/// whole test: every write waits out the 5 s busy timeout, and the audit writer retries), with
/// a record queued for the audit writer, a `Classify` call that writes its own records in
/// flight, and a stream the client never closes. Before, the server's grace and then the
/// audit writer's each took the whole grace, and delivery and the pool's close were not
/// bounded at all.
#[tokio::test]
async fn shutdown_fits_the_grace_when_the_store_does_not_answer() {
    let grace = Duration::from_secs(2);
    let server = TestServer::start(|config| {
        config.grpc.shutdown_grace_secs = grace.as_secs();
    })
    .await;
    let file = server.config.data_dir.join("modbot.db");
    let mut lock = sqlx::SqliteConnection::connect(&format!("sqlite://{}", file.display()))
        .await
        .expect("open the server's database");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut lock)
        .await
        .expect("take the write lock");

    // A message whose action the audit writer must commit (a scam phrase) before its verdict
    // may leave, then one that waits behind it in the stream's ordered outbox: neither verdict
    // can come while the write lock is held, so there is nothing to wait for here; whatever of
    // the stream the server has read when the stop begins is stuck behind the lock.
    let (requests, _responses) = common::bridge(&server, "shutdown-bridge").await;
    for request in [
        stream_message("m1", "spammer", "FREE NITRO here", None),
        stream_message("m2", "regular", "good game everyone", None),
    ] {
        requests.send(request).await.expect("the stream is open");
    }

    let mut client = server.moderation();
    let classify = tokio::spawn(async move {
        client
            .classify(ClassifyRequest {
                messages: vec![chat_message("m3", "spammer2", "FREE NITRO here")],
                options: None,
            })
            .await
    });
    // Let the call reach the server (its handler then waits on the write lock).
    tokio::task::yield_now().await;

    let started = Instant::now();
    let result = server.stop().await;
    let elapsed = started.elapsed();
    assert!(result.is_ok(), "{result:?}");
    assert!(
        elapsed < grace + Duration::from_secs(1),
        "shutdown took {elapsed:?} with a grace of {grace:?}"
    );
    drop(requests);
    classify.abort();
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
}

/// With nothing stuck, shutdown does not wait for the grace at all.
#[tokio::test]
async fn shutdown_is_prompt_when_nothing_is_stuck() {
    let server = TestServer::start(|config| config.grpc.shutdown_grace_secs = 10).await;
    let (_requests, _responses) = common::bridge(&server, "idle-bridge").await;
    let started = Instant::now();
    server.stop().await.expect("a clean stop");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
