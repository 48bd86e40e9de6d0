//! Per-RPC metrics, read from a Prometheus recorder installed for this test binary alone (the
//! recorder is process-global): calls counted by RPC and status when they end, trailers-only
//! refusals (auth, bad input) and streams included, durations as histograms.

mod common;

use common::{TestServer, bearer, chat_message};
use modbot::proto::moderation_client::ModerationClient;
use modbot::proto::{ClassifyRequest, StreamModerateRequest};

/// The value of the sample line that starts with `prefix` (name and labels), if any.
fn sample(rendered: &str, prefix: &str) -> Option<f64> {
    rendered
        .lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_counted_by_rpc_and_status_with_duration_histograms() {
    let handle = modbot::telemetry::prometheus_builder()
        .install_recorder()
        .expect("the only recorder in this process");
    const TOKEN: &str = "service-token-0123456789";
    let server = TestServer::start(|config| {
        config.auth.tokens = format!("service svc {TOKEN}");
    })
    .await;
    let mut client = ModerationClient::with_interceptor(server.channel.clone(), bearer(TOKEN));
    for _ in 0..3 {
        client
            .classify(ClassifyRequest {
                messages: vec![chat_message("m1", "alice", "hello there")],
                options: None,
            })
            .await
            .expect("Classify");
    }
    let bad = client
        .classify(ClassifyRequest::default())
        .await
        .expect_err("no messages");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let refused = ModerationClient::new(server.channel.clone())
        .classify(ClassifyRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    // A stream that fails its hello, and one that ends cleanly.
    let (tx, rx) = tokio::sync::mpsc::channel::<StreamModerateRequest>(1);
    drop(tx);
    let no_hello = client
        .stream_moderate(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect_err("a stream without a hello");
    assert_eq!(no_hello.code(), tonic::Code::InvalidArgument);

    // The counts are recorded when a call ends, which for the last one may be a moment after
    // the client saw its answer.
    let expect = [
        (
            "modbot_grpc_requests_total{rpc=\"Moderation/Classify\",code=\"ok\"}",
            3.0,
        ),
        (
            "modbot_grpc_requests_total{rpc=\"Moderation/Classify\",code=\"invalid_argument\"}",
            1.0,
        ),
        (
            "modbot_grpc_requests_total{rpc=\"Moderation/Classify\",code=\"unauthenticated\"}",
            1.0,
        ),
        (
            "modbot_grpc_requests_total{rpc=\"Moderation/StreamModerate\",code=\"invalid_argument\"}",
            1.0,
        ),
        (
            "modbot_grpc_request_duration_seconds_count{rpc=\"Moderation/Classify\"}",
            5.0,
        ),
        (
            "modbot_grpc_requests_in_flight{rpc=\"Moderation/Classify\"}",
            0.0,
        ),
    ];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let rendered = handle.render();
        let missing: Vec<_> = expect
            .iter()
            .filter(|(prefix, value)| sample(&rendered, prefix) != Some(*value))
            .collect();
        if missing.is_empty() {
            assert!(
                rendered.contains(
                    "modbot_grpc_request_duration_seconds_bucket{rpc=\"Moderation/Classify\",le=\"0.001\"}"
                ),
                "durations are histograms with modbot's buckets:\n{rendered}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not as expected: {missing:?}\n{rendered}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.stop().await.expect("a clean stop");
}
