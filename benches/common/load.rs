//! What the load benches share (`loadgen.rs`, `soak.rs`): waiting for a server's health,
//! percentiles, and corpus lines as request messages.

use std::time::{Duration, Instant, SystemTime};

use modbot::proto::ChatMessage;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The health status of `service` ("" for the server as a whole) at `addr`, or `None` when
/// the server does not answer.
pub async fn health(addr: &str, service: &str) -> Option<ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(addr.to_owned())
        .expect("a valid address")
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await
        .ok()?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(answer.into_inner().status).ok()
}

/// Waits until the server at `addr` says SERVING, polling its health every 50 ms; `Err` after
/// `timeout`. (Health is the server's only readiness signal; a freshly started process has no
/// other to await.)
pub async fn wait_until_serving(addr: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if health(addr, "").await == Some(ServingStatus::Serving) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the server at {addr} did not become SERVING within {timeout:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `p` quantile (0..=1) of sorted microsecond samples, in milliseconds; 0 when empty.
pub fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted[index]) / 1000.0
}

/// A duration as whole microseconds, saturating.
pub fn micros(duration: Duration) -> u32 {
    duration.as_micros().min(u32::MAX as u128) as u32
}

/// A corpus line as a request message in `channel`, stamped `at`.
pub fn chat_message(
    message: &modbot::corpus::CorpusMessage,
    channel: &str,
    message_id: String,
    at: SystemTime,
) -> ChatMessage {
    ChatMessage {
        channel: channel.to_owned(),
        message_id,
        user_id: message.user_id.clone(),
        nick: message.nick.clone(),
        roles: message.roles.clone(),
        text: message.text.clone(),
        sent_at: Some(at.into()),
        original_text_bytes: 0,
    }
}
