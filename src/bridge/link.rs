//! The bridge's connection to modbot: one `StreamModerate` stream, reopened for as long as
//! the bridge runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::Backoff;
use super::client::Server;
use super::outbox::Outbox;
use crate::proto::{
    ActionCommand, Hello, StreamModerateRequest, stream_moderate_request, stream_moderate_response,
};

/// Requests queued on a stream ahead of HTTP/2 (the outbox holds the rest).
const STREAM_QUEUE: usize = 256;

/// How long the server may take to welcome a new stream.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the stream until `shutdown` turns true, carrying the outbox to modbot and modbot's
/// commands to `commands`.
pub async fn run(
    server: Server,
    hello: Hello,
    outbox: Arc<Outbox>,
    commands: mpsc::Sender<ActionCommand>,
    mut backoff: Backoff,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut attempts = 0u64;
    loop {
        if *shutdown.borrow() {
            return;
        }
        attempts += 1;
        if attempts > 1 {
            metrics::counter!("modbot_bridge_server_reconnects_total").increment(1);
        }
        let started = Instant::now();
        let ended = stream(&server, &hello, &outbox, &commands, &mut shutdown).await;
        metrics::gauge!("modbot_bridge_server_connected").set(0.0);
        outbox.stream_lost();
        match ended {
            Ok(()) => return,
            Err(why) => {
                let delay = backoff.after_loss(started);
                tracing::warn!(
                    delay_ms = delay.as_millis() as u64,
                    held = outbox.held(),
                    "modbot stream lost: {why}"
                );
                if !super::pause(delay, &mut shutdown).await {
                    return;
                }
            }
        }
    }
}

/// One stream; `Ok` when the bridge is stopping.
async fn stream(
    server: &Server,
    hello: &Hello,
    outbox: &Outbox,
    commands: &mpsc::Sender<ActionCommand>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    let channel = tokio::select! {
        channel = server.connect() => channel.map_err(|e| format!("cannot connect: {}", causes(&e)))?,
        _ = shutdown.changed() => return Ok(()),
    };
    let (tx, rx) = mpsc::channel(STREAM_QUEUE);
    tx.send(StreamModerateRequest {
        kind: Some(stream_moderate_request::Kind::Hello(hello.clone())),
    })
    .await
    .map_err(|_| "the stream closed before its hello".to_owned())?;
    let opened = server.stream_moderate(channel, tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut responses = tokio::select! {
        opened = opened => opened.map_err(|status| format!("the server refused the stream: {status}"))?,
        _ = shutdown.changed() => return Ok(()),
    };
    let welcome = tokio::time::timeout(WELCOME_TIMEOUT, responses.message())
        .await
        .map_err(|_| format!("no welcome within {WELCOME_TIMEOUT:?}"))?
        .map_err(|status| format!("the server refused the stream: {status}"))?;
    match welcome.and_then(|r| r.kind) {
        Some(stream_moderate_response::Kind::Welcome(welcome)) => {
            tracing::info!(session = %welcome.session_id, channels = ?welcome.channels, "modbot stream open");
        }
        Some(stream_moderate_response::Kind::Error(error)) => {
            return Err(format!("the server rejected the hello: {}", error.message));
        }
        other => return Err(format!("expected a welcome, got {other:?}")),
    }
    metrics::gauge!("modbot_bridge_server_connected").set(1.0);
    loop {
        tokio::select! {
            permit = tx.reserve(), if outbox.has_items() => {
                let permit = permit.map_err(|_| "the stream closed".to_owned())?;
                if let Some(request) = outbox.pop() {
                    permit.send(request);
                }
            }
            () = outbox.ready(), if !outbox.has_items() => {}
            response = responses.message() => {
                let response = response
                    .map_err(|status| format!("the stream failed: {status}"))?
                    .ok_or_else(|| "the server ended the stream".to_owned())?;
                match response.kind {
                    Some(stream_moderate_response::Kind::Verdict(verdict)) => {
                        outbox.answered(&verdict.message_id);
                    }
                    Some(stream_moderate_response::Kind::Command(command)) => {
                        if commands.send(command).await.is_err() {
                            return Ok(());
                        }
                    }
                    Some(stream_moderate_response::Kind::Error(error)) => {
                        if !error.message_id.is_empty() {
                            outbox.answered(&error.message_id);
                        }
                        metrics::counter!("modbot_bridge_stream_errors_total").increment(1);
                        tracing::warn!(code = error.code, message_id = %error.message_id, "modbot rejected a request: {}", error.message);
                    }
                    Some(stream_moderate_response::Kind::Welcome(_)) | None => {}
                }
            }
            _ = shutdown.changed() => break,
        }
    }
    hand_over(tx, responses, outbox).await;
    Ok(())
}

/// How long a stopping bridge waits for the server to take its last results.
const HAND_OVER: Duration = Duration::from_secs(3);

/// Stopping: sends the results still held (so modbot does not send this bridge's finished
/// actions to the next one), closes the bridge's side and lets the server finish.
async fn hand_over(
    tx: mpsc::Sender<StreamModerateRequest>,
    mut responses: tonic::Streaming<crate::proto::StreamModerateResponse>,
    outbox: &Outbox,
) {
    let handed = async {
        while let Some(result) = outbox.pop_result() {
            if tx.send(result).await.is_err() {
                return;
            }
        }
        drop(tx);
        // The server answers what it read, then ends the stream.
        while let Ok(Some(_)) = responses.message().await {}
    };
    if tokio::time::timeout(HAND_OVER, handed).await.is_err() {
        tracing::warn!("the server did not take the bridge's last results in time");
    }
}

/// An error and its causes, `: `-separated (tonic's transport error alone says only
/// "transport error").
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
