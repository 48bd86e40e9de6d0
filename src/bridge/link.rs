//! The bridge's connection to modbot: one `StreamModerate` stream, reopened for as long as
//! the bridge runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::Backoff;
use super::client::Server;
use super::outbox::Outbox;
use crate::proto::{
    ActionCommand, ChatEvent, ChatMessage, Hello, StreamModerateRequest, chat_event,
    stream_moderate_request, stream_moderate_response,
};

/// Requests queued on a stream ahead of HTTP/2 (the outbox holds the rest).
const STREAM_QUEUE: usize = 256;

/// How long the server may take to welcome a new stream.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a result the server could not record waits before it goes again.
const RESULT_RETRY: Duration = Duration::from_secs(1);

/// Cuts a message's text to `max_bytes` (on a character boundary) when it is longer, setting
/// `original_text_bytes` to its whole length, so the server moderates its beginning and says
/// so in the verdict rather than refusing it (a long message must never go unmoderated).
/// True when it cut.
pub fn fit_text(message: &mut ChatMessage, max_bytes: usize) -> bool {
    if message.text.len() <= max_bytes {
        return false;
    }
    let mut end = max_bytes;
    while !message.text.is_char_boundary(end) {
        end -= 1;
    }
    message.original_text_bytes = u32::try_from(message.text.len()).unwrap_or(u32::MAX);
    message.text.truncate(end);
    metrics::counter!("modbot_bridge_texts_cut_total").increment(1);
    true
}

/// Cuts the text of a request's chat message to `max_bytes`.
fn fit_request(request: &mut StreamModerateRequest, max_bytes: usize) {
    if let Some(stream_moderate_request::Kind::Event(ChatEvent {
        kind: Some(chat_event::Kind::Message(message)),
        ..
    })) = &mut request.kind
    {
        fit_text(message, max_bytes);
    }
}

/// Runs the stream until `shutdown` turns true, carrying the outbox to modbot and modbot's
/// commands to `commands`.
pub async fn run(
    server: Server,
    hello: Hello,
    outbox: Arc<Outbox>,
    commands: mpsc::Sender<FromModbot>,
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
    commands: &mpsc::Sender<FromModbot>,
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
    // A connection that went dead under the call is also caught by its keepalive; the
    // timeout covers a server that takes the connection but never answers.
    let opened = tokio::time::timeout(WELCOME_TIMEOUT, opened);
    let mut responses = tokio::select! {
        opened = opened => opened
            .map_err(|_| format!("the stream did not open within {WELCOME_TIMEOUT:?}"))?
            .map_err(|status| format!("the server refused the stream: {status}"))?,
        _ = shutdown.changed() => return Ok(()),
    };
    let welcome = tokio::time::timeout(WELCOME_TIMEOUT, responses.message())
        .await
        .map_err(|_| format!("no welcome within {WELCOME_TIMEOUT:?}"))?
        .map_err(|status| format!("the server refused the stream: {status}"))?;
    let max_text_bytes = match welcome.and_then(|r| r.kind) {
        Some(stream_moderate_response::Kind::Welcome(welcome)) => {
            tracing::info!(session = %welcome.session_id, channels = ?welcome.channels, "modbot stream open");
            // A server that does not say accepts the default.
            match welcome.max_text_bytes {
                0 => crate::config::Config::default().grpc.max_text_bytes,
                n => n,
            }
        }
        Some(stream_moderate_response::Kind::Error(error)) => {
            return Err(format!("the server rejected the hello: {}", error.message));
        }
        other => return Err(format!("expected a welcome, got {other:?}")),
    } as usize;
    metrics::gauge!("modbot_bridge_server_connected").set(1.0);
    let mut retry = tokio::time::interval(RESULT_RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            permit = tx.reserve(), if outbox.has_items() => {
                let permit = permit.map_err(|_| "the stream closed".to_owned())?;
                if let Some(mut request) = outbox.pop() {
                    fit_request(&mut request, max_text_bytes);
                    permit.send(request);
                }
            }
            _ = retry.tick() => {
                outbox.retry_results();
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
                        if commands.send(FromModbot::Command(command)).await.is_err() {
                            return Ok(());
                        }
                    }
                    Some(stream_moderate_response::Kind::ResultAck(ack)) => {
                        outbox.result_confirmed(&ack.action_id);
                    }
                    Some(stream_moderate_response::Kind::Error(error)) => refused(outbox, &error),
                    Some(stream_moderate_response::Kind::RaidAlert(alert)) => {
                        raid_alert(&alert);
                        if alert.subonly
                            && commands.send(FromModbot::SubOnly(!alert.ended)).await.is_err()
                        {
                            return Ok(());
                        }
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

/// An in-band refusal: the message it answers is answered; a refused result is kept to go
/// again when the server could not record it, forgotten when the refusal is final.
fn refused(outbox: &Outbox, error: &crate::proto::StreamError) {
    if !error.message_id.is_empty() {
        outbox.answered(&error.message_id);
    }
    if !error.action_id.is_empty() {
        let retry = error.code == tonic::Code::Unavailable as i32;
        outbox.result_refused(&error.action_id, retry);
    }
    metrics::counter!("modbot_bridge_stream_errors_total").increment(1);
    tracing::warn!(code = error.code, message_id = %error.message_id, action = %error.action_id, "modbot rejected a request: {}", error.message);
}

/// What modbot asks of the chat.
#[derive(Debug, Clone, PartialEq)]
pub enum FromModbot {
    /// An action to carry out.
    Command(ActionCommand),
    /// Subscriber-only mode on or off (raid mode started or ended, and the channel's policy
    /// asks for it).
    SubOnly(bool),
}

/// Raid mode started or ended in one of the bridge's channels: logged for the chat's
/// moderators (the verdicts carry out what raid mode decides).
fn raid_alert(alert: &crate::proto::RaidAlert) {
    let Some(raid) = &alert.raid else { return };
    metrics::counter!("modbot_bridge_raid_alerts_total", "ended" => alert.ended.to_string())
        .increment(1);
    if alert.ended {
        tracing::warn!(channel = %raid.channel, raiders = raid.raiders, "raid mode ended");
    } else {
        tracing::warn!(
            channel = %raid.channel,
            trigger = %raid.trigger,
            sample = %raid.sample,
            "raid detected: raid mode on"
        );
    }
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
        outbox.retry_results();
        while let Some(result) = outbox.pop_result() {
            if tx.send(result).await.is_err() {
                return;
            }
        }
        drop(tx);
        // The server answers what it read, then ends the stream.
        while let Ok(Some(response)) = responses.message().await {
            match response.kind {
                Some(stream_moderate_response::Kind::ResultAck(ack)) => {
                    outbox.result_confirmed(&ack.action_id);
                }
                Some(stream_moderate_response::Kind::Error(error)) => refused(outbox, &error),
                _ => {}
            }
        }
    };
    if tokio::time::timeout(HAND_OVER, handed).await.is_err() {
        tracing::warn!("the server did not take the bridge's last results in time");
    }
    if outbox.results_held() > 0 {
        tracing::warn!(
            held = outbox.results_held(),
            "bridge stopping with action results the server has not confirmed"
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> ChatMessage {
        ChatMessage {
            text: text.to_owned(),
            ..ChatMessage::default()
        }
    }

    #[test]
    fn a_long_text_is_cut_on_a_character_boundary_and_says_how_long_it_was() {
        let mut short = message("hello");
        assert!(!fit_text(&mut short, 5));
        assert_eq!(
            (short.text.as_str(), short.original_text_bytes),
            ("hello", 0)
        );

        let mut ascii = message(&"x".repeat(10_000));
        assert!(fit_text(&mut ascii, 4096));
        assert_eq!(ascii.text.len(), 4096);
        assert_eq!(ascii.original_text_bytes, 10_000);

        // Two-byte characters: 4,095 bytes would split one, so 4,094 are kept.
        let mut wide = message(&"é".repeat(3000));
        assert!(fit_text(&mut wide, 4095));
        assert_eq!(wide.text.len(), 4094);
        assert!(wide.text.chars().all(|c| c == 'é'));
        assert_eq!(wide.original_text_bytes, 6000);

        // Four-byte characters (emoji) at any limit.
        for max in 1..12 {
            let mut emoji = message("😀😀😀");
            assert!(fit_text(&mut emoji, max));
            assert_eq!(emoji.text.len(), max / 4 * 4, "{max}");
        }
    }

    #[test]
    fn only_chat_messages_are_cut() {
        let mut request = StreamModerateRequest {
            kind: Some(stream_moderate_request::Kind::Event(ChatEvent {
                channel: "c".into(),
                kind: Some(chat_event::Kind::Message(message(&"y".repeat(100)))),
            })),
        };
        fit_request(&mut request, 10);
        let Some(stream_moderate_request::Kind::Event(ChatEvent {
            kind: Some(chat_event::Kind::Message(cut)),
            ..
        })) = request.kind
        else {
            panic!("still a message")
        };
        assert_eq!((cut.text.len(), cut.original_text_bytes), (10, 100));
    }
}
