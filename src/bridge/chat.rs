//! The bridge's chat connection: one WebSocket, reconnected for as long as the bridge runs.

use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use super::Backoff;
use super::protocol::{self, Dialect, Frame};

/// How often the bridge pings the chat itself (the servers ping every 10 s).
const PING_EVERY: Duration = Duration::from_secs(15);

/// A connection that has shown no sign of life (frame, ping or pong) for this long is dead.
const SILENCE_LIMIT: Duration = Duration::from_secs(45);

/// How long connecting (TCP, TLS, upgrade) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest WebSocket message (and frame) read: the largest chat frame the bridge parses.
/// tungstenite ends the connection for a larger one.
const MAX_READ: usize = protocol::MAX_SERVER_FRAME_BYTES;

/// Where and how to connect.
#[derive(Clone)]
pub struct ChatOptions {
    /// `ws://` or `wss://` URL.
    pub url: String,
    /// The dialect (the login cookie's name).
    pub dialect: Dialect,
    /// The login token, if any.
    pub token: Option<String>,
}

/// What the connection tells the bridge.
#[derive(Debug)]
pub enum Signal {
    /// Connected: frames sent into this channel go to the chat.
    Connected(mpsc::Sender<String>),
    /// A frame from the chat.
    Frame(Frame),
    /// The connection is gone (a reconnect follows).
    Disconnected,
}

/// How a connection ended.
enum End {
    /// The server asked the client to reconnect.
    Refresh,
    /// The connection failed or closed.
    Lost(String),
    /// The bridge is stopping.
    Shutdown,
}

/// Runs the chat connection until `shutdown` turns true.
pub async fn run(
    options: ChatOptions,
    signals: mpsc::Sender<Signal>,
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
            metrics::counter!("modbot_bridge_chat_reconnects_total").increment(1);
        }
        let started = Instant::now();
        let connected = tokio::select! {
            connected = tokio::time::timeout(CONNECT_TIMEOUT, connect(&options)) => {
                connected.unwrap_or_else(|_| Err(format!("no connection within {CONNECT_TIMEOUT:?}")))
            }
            _ = shutdown.changed() => return,
        };
        let end = match connected {
            Ok(socket) => {
                tracing::info!(url = %crate::config::redact_url(&options.url), "connected to the chat");
                metrics::gauge!("modbot_bridge_chat_connected").set(1.0);
                let end = session(socket, &signals, &mut shutdown).await;
                metrics::gauge!("modbot_bridge_chat_connected").set(0.0);
                if signals.send(Signal::Disconnected).await.is_err() {
                    return;
                }
                end
            }
            Err(error) => End::Lost(format!("cannot connect: {error}")),
        };
        let delay = match end {
            End::Shutdown => return,
            End::Refresh => {
                tracing::info!("the chat sent REFRESH; reconnecting");
                backoff.reset();
                backoff.next_delay()
            }
            End::Lost(why) => {
                let delay = backoff.after_loss(started);
                tracing::warn!(
                    delay_ms = delay.as_millis() as u64,
                    "chat connection lost: {why}"
                );
                delay
            }
        };
        if !super::pause(delay, &mut shutdown).await {
            return;
        }
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(options: &ChatOptions) -> Result<Socket, String> {
    let mut request = options
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| e.to_string())?;
    if let Some(token) = &options.token {
        let cookie = HeaderValue::from_str(&options.dialect.cookie(token))
            .map_err(|_| "the chat token is not a valid cookie value".to_owned())?;
        request.headers_mut().insert("cookie", cookie);
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_READ))
        .max_frame_size(Some(MAX_READ));
    let (socket, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
        .await
        .map_err(|e| match e {
            tungstenite::Error::Http(response) => {
                format!("the chat answered HTTP {}", response.status())
            }
            other => other.to_string(),
        })?;
    Ok(socket)
}

async fn session(
    mut socket: Socket,
    signals: &mpsc::Sender<Signal>,
    shutdown: &mut watch::Receiver<bool>,
) -> End {
    let (writer, mut frames) = mpsc::channel::<String>(16);
    if signals.send(Signal::Connected(writer)).await.is_err() {
        return End::Shutdown;
    }
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut last_seen = Instant::now();
    loop {
        tokio::select! {
            message = socket.next() => {
                let message = match message {
                    Some(Ok(message)) => message,
                    Some(Err(error)) => return End::Lost(error.to_string()),
                    None => return End::Lost("the chat closed the connection".to_owned()),
                };
                last_seen = Instant::now();
                let parsed = match message {
                    Message::Text(text) => protocol::parse(text.as_str()),
                    // The chats send only text; a binary frame is malformed, whatever it holds.
                    Message::Binary(_) => Err(protocol::FrameError::Binary),
                    Message::Close(frame) => {
                        let why = frame.map_or_else(String::new, |f| format!(": {} {}", u16::from(f.code), f.reason));
                        return End::Lost(format!("the chat closed the connection{why}"));
                    }
                    // tungstenite answers pings itself.
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                };
                match parsed {
                    Ok(Frame::Refresh) => {
                        let _ = socket.close(None).await;
                        return End::Refresh;
                    }
                    Ok(frame) => {
                        if signals.send(Signal::Frame(frame)).await.is_err() {
                            return End::Shutdown;
                        }
                    }
                    Err(error) => skipped(&error),
                }
            }
            frame = frames.recv() => {
                let Some(frame) = frame else { return End::Shutdown };
                if let Err(error) = socket.send(Message::Text(frame.into())).await {
                    return End::Lost(format!("cannot send: {error}"));
                }
            }
            _ = ping.tick() => {
                if last_seen.elapsed() >= SILENCE_LIMIT {
                    return End::Lost(format!("no sign of life for {SILENCE_LIMIT:?}"));
                }
                if let Err(error) = socket.send(Message::Ping(Vec::new().into())).await {
                    return End::Lost(format!("cannot ping: {error}"));
                }
            }
            _ = shutdown.changed() => {
                let _ = socket.close(None).await;
                return End::Shutdown;
            }
        }
    }
}

/// A malformed frame: logged (at most the kind of problem, never the text) and counted.
fn skipped(error: &protocol::FrameError) {
    let reason = match error {
        protocol::FrameError::TooLong(_) => "too_long",
        protocol::FrameError::NoSpace => "no_space",
        protocol::FrameError::BadEvent => "bad_event",
        protocol::FrameError::Payload { .. } => "payload",
        protocol::FrameError::Binary => "binary",
        protocol::FrameError::NotUtf8 => "not_utf8",
    };
    metrics::counter!("modbot_bridge_frames_skipped_total", "reason" => reason).increment(1);
    tracing::warn!(%error, "skipped a malformed frame from the chat");
}
