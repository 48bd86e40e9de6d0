//! One `StreamModerate` session: a bridge's whole chat, decided in order.
//!
//! The session runs two stages joined by a bounded queue of [`PIPELINE`] items. The reader
//! checks each request and starts its message's model scoring at once (so a busy chat's
//! messages share model batches); the finisher takes the items strictly in the order read,
//! awaits the scores, decides, and sends the answer into a bounded channel that tonic drains
//! to the client. When the client reads slowly the channel fills, the finisher waits, the
//! pipeline fills, the reader stops reading, and HTTP/2 flow control pushes back on the
//! client: a slow client slows its own stream instead of growing the server's memory. Messages
//! are decided one after another in the order received, so a channel carried by one stream
//! sees a consistent history.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::mpsc;
use tonic::{Code, Status, Streaming};
use tracing::Instrument;

use super::convert::{self, MessageLimits};
use super::status::FieldError;
use crate::app::App;
use crate::decision::{ChatMessage, DecideOptions, Decision};
use crate::inference::{Admission, Pending, Scores};
use crate::moderate::Consult;
use crate::proto::{
    ActionKind, ChatEvent, Hello, StreamError, StreamModerateRequest, StreamModerateResponse,
    Welcome, chat_event, stream_moderate_request, stream_moderate_response,
};
use crate::store::AuditRecord;

/// Responses buffered per stream before the session waits for the client.
pub const RESPONSE_BUFFER: usize = 1024;

/// Messages a stream reads ahead of its decisions, so their texts share model batches.
const PIPELINE: usize = 256;

/// Most channels one stream may serve.
const MAX_CHANNELS: usize = 256;

type Responses = mpsc::Sender<Result<StreamModerateResponse, Status>>;

/// Checks a hello: a bridge id and at least one channel, each a valid id.
pub fn validate_hello(hello: Hello) -> Result<Hello, FieldError> {
    if hello.bridge_id.trim().is_empty() {
        return Err(FieldError::new("hello.bridge_id", "is required"));
    }
    if hello.channels.is_empty() {
        return Err(FieldError::new(
            "hello.channels",
            "must name at least one channel",
        ));
    }
    if hello.channels.len() > MAX_CHANNELS {
        return Err(FieldError::new(
            "hello.channels",
            format!(
                "{} channels exceed the limit of {MAX_CHANNELS}",
                hello.channels.len()
            ),
        ));
    }
    for (i, channel) in hello.channels.iter().enumerate() {
        if channel.trim().is_empty() || channel.len() > convert::MAX_ID_BYTES {
            return Err(FieldError::new(
                format!("hello.channels[{i}]"),
                format!("must be 1 to {} bytes", convert::MAX_ID_BYTES),
            ));
        }
    }
    Ok(hello)
}

/// A stream's state.
pub struct Session {
    app: Arc<App>,
    hello: Hello,
    responses_tx: Responses,
    limits: MessageLimits,
}

impl Session {
    /// A session for a validated hello.
    pub fn new(app: Arc<App>, hello: Hello, responses_tx: Responses) -> Self {
        let limits = MessageLimits::from_config(&app.config);
        Self {
            app,
            hello,
            responses_tx,
            limits,
        }
    }

    /// Runs until the client closes its side, the client goes away, or the server stops.
    pub async fn run(self, inbound: Streaming<StreamModerateRequest>) {
        let session_id = uuid::Uuid::now_v7().to_string();
        let span =
            tracing::info_span!("stream", session = %session_id, bridge = %self.hello.bridge_id);
        self.serve(session_id, inbound).instrument(span).await;
    }

    async fn serve(self, session_id: String, inbound: Streaming<StreamModerateRequest>) {
        tracing::info!(channels = ?self.hello.channels, "stream opened");
        metrics::gauge!("modbot_streams_open").increment(1.0);
        let welcome = stream_moderate_response::Kind::Welcome(Welcome {
            session_id,
            channels: self.hello.channels.clone(),
        });
        if self.send(welcome).await {
            let (items_tx, items_rx) = mpsc::channel(PIPELINE);
            // The stages run as two tasks, so a busy stream's reading and deciding use both
            // of the runtime's threads.
            let this = Arc::new(self);
            let finisher = tokio::spawn({
                let this = Arc::clone(&this);
                async move { this.finish_all(items_rx).await }.in_current_span()
            });
            this.read(inbound, items_tx).await;
            if let Err(error) = finisher.await {
                tracing::error!(%error, "the stream's decision task failed");
            }
        }
        metrics::gauge!("modbot_streams_open").decrement(1.0);
        tracing::info!("stream closed");
    }

    /// Stage one: reads requests, checks them and starts their model scoring, in order.
    async fn read(&self, mut inbound: Streaming<StreamModerateRequest>, items: mpsc::Sender<Item>) {
        loop {
            let request = tokio::select! {
                request = inbound.message() => request,
                () = items.closed() => break,
            };
            match request {
                Ok(Some(request)) => {
                    let item = self.prepare(request).await;
                    if items.send(item).await.is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(status) => {
                    tracing::info!(%status, "stream ended by the client");
                    break;
                }
            }
        }
    }

    /// Stage two: decides and answers, strictly in the order read.
    async fn finish_all(&self, mut items: mpsc::Receiver<Item>) {
        loop {
            let item = tokio::select! {
                item = items.recv() => item,
                () = self.responses_tx.closed() => None,
            };
            let Some(item) = item else { break };
            if !self.finish(item).await {
                break;
            }
        }
    }

    /// Sends a response; false when the client has gone.
    async fn send(&self, kind: stream_moderate_response::Kind) -> bool {
        self.responses_tx
            .send(Ok(StreamModerateResponse { kind: Some(kind) }))
            .await
            .is_ok()
    }

    /// Answers a bad request in-band; the stream goes on.
    async fn reject(&self, code: Code, message: String, message_id: String) -> bool {
        metrics::counter!("modbot_stream_errors_total").increment(1);
        self.send(stream_moderate_response::Kind::Error(StreamError {
            code: code as i32,
            message,
            message_id,
        }))
        .await
    }

    async fn prepare(&self, request: StreamModerateRequest) -> Item {
        let received = Instant::now();
        match request.kind {
            Some(stream_moderate_request::Kind::Event(event)) => self.event(event, received).await,
            Some(stream_moderate_request::Kind::Hello(_)) => Item::reject(
                Code::InvalidArgument,
                "hello: already sent".to_owned(),
                String::new(),
            ),
            Some(stream_moderate_request::Kind::ActionResult(result)) => Item::reject(
                Code::Unimplemented,
                "action_result: no action commands are sent yet, so no results are expected"
                    .to_owned(),
                result.action_id,
            ),
            None => Item::reject(
                Code::InvalidArgument,
                "kind: is required".to_owned(),
                String::new(),
            ),
        }
    }

    async fn event(&self, event: ChatEvent, received: Instant) -> Item {
        let message_id = match &event.kind {
            Some(chat_event::Kind::Message(m)) => m.message_id.clone(),
            _ => String::new(),
        };
        if !self.hello.channels.contains(&event.channel) {
            return Item::reject(
                Code::InvalidArgument,
                format!(
                    "event.channel: `{}` is not one of the channels in the hello",
                    event.channel
                ),
                message_id,
            );
        }
        match event.kind {
            Some(chat_event::Kind::Message(mut message)) => {
                if message.channel.is_empty() {
                    message.channel.clone_from(&event.channel);
                } else if message.channel != event.channel {
                    return Item::reject(
                        Code::InvalidArgument,
                        "event.message.channel: differs from event.channel".to_owned(),
                        message_id,
                    );
                }
                let message = match convert::chat_message(message, "event.message", self.limits) {
                    Ok(message) => message,
                    Err(error) => {
                        return Item::reject(Code::InvalidArgument, error.to_string(), message_id);
                    }
                };
                // A stream waits for room in the model's queue (pushing back on its bridge)
                // rather than failing: `Wait` never errs.
                let consult = match self.app.moderator.consult(&message, Admission::Wait).await {
                    Ok(consult) => consult,
                    Err(overloaded) => {
                        Consult::Model(Pending::Done(Scores::Unavailable(overloaded.to_string())))
                    }
                };
                Item::Message {
                    message,
                    consult,
                    received,
                }
            }
            Some(chat_event::Kind::ModeratorAction(action)) => {
                let decision = match ActionKind::try_from(action.kind) {
                    Ok(ActionKind::Timeout) => Some(Decision::Timeout),
                    Ok(ActionKind::Hide) => Some(Decision::Hide),
                    Ok(ActionKind::Ban) => Some(Decision::Ban),
                    Ok(ActionKind::Warn) => Some(Decision::Warn),
                    Ok(ActionKind::Unmute | ActionKind::Unban) => None,
                    Ok(ActionKind::Unspecified) | Err(_) => {
                        return Item::reject(
                            Code::InvalidArgument,
                            "event.moderator_action.kind: is required".to_owned(),
                            String::new(),
                        );
                    }
                };
                if action.target.trim().is_empty() {
                    return Item::reject(
                        Code::InvalidArgument,
                        "event.moderator_action.target: is required".to_owned(),
                        String::new(),
                    );
                }
                match decision {
                    Some(decision) => Item::ModeratorAction {
                        channel: event.channel,
                        moderator: action.moderator,
                        target: action.target,
                        decision,
                        at: action
                            .at
                            .and_then(|t| SystemTime::try_from(t).ok())
                            .unwrap_or_else(SystemTime::now),
                    },
                    None => Item::Nothing,
                }
            }
            Some(
                chat_event::Kind::Join(_) | chat_event::Kind::Quit(_) | chat_event::Kind::Names(_),
            ) => Item::Nothing,
            None => Item::reject(
                Code::InvalidArgument,
                "event.kind: is required".to_owned(),
                message_id,
            ),
        }
    }

    /// Carries out one item; false when the client has gone.
    async fn finish(&self, item: Item) -> bool {
        match item {
            Item::Message {
                message,
                consult,
                received,
            } => {
                let mut verdict = self
                    .app
                    .moderator
                    .moderate_with(&message, consult, DecideOptions::default(), received)
                    .await;
                metrics::counter!("modbot_verdicts_total", "decision" => verdict.decision.as_str())
                    .increment(1);
                if verdict.is_notable() {
                    self.app
                        .audit
                        .submit(AuditRecord::new(message, verdict.clone()))
                        .await;
                }
                verdict.normalized_text.clear();
                verdict.elapsed = received.elapsed();
                self.app.stats.record(&verdict);
                self.send(stream_moderate_response::Kind::Verdict(verdict.into()))
                    .await
            }
            Item::ModeratorAction {
                channel,
                moderator,
                target,
                decision,
                at,
            } => {
                let feedback = self
                    .app
                    .moderator
                    .moderator_action(&channel, &moderator, &target, decision, at)
                    .await;
                if let Some(feedback) = feedback {
                    // A lost example costs little and the stream must go on: log and count.
                    match self.app.store.record_feedback(&feedback).await {
                        Ok(true) => metrics::counter!("modbot_feedback_total", "source" => feedback.source.as_str()).increment(1),
                        Ok(false) => {}
                        Err(error) => {
                            metrics::counter!("modbot_feedback_write_failures_total").increment(1);
                            tracing::warn!(%error, channel, target, "cannot record feedback");
                        }
                    }
                }
                true
            }
            Item::Reject {
                code,
                message,
                message_id,
            } => self.reject(code, message, message_id).await,
            Item::Nothing => true,
        }
    }
}

/// One request, checked and (for a message) on its way through the model, waiting for its
/// turn to be decided.
enum Item {
    /// A chat message to decide.
    Message {
        message: ChatMessage,
        consult: Consult,
        received: Instant,
    },
    /// A human moderator's action seen in the chat.
    ModeratorAction {
        channel: String,
        moderator: String,
        target: String,
        decision: Decision,
        at: SystemTime,
    },
    /// A bad request, answered in-band.
    Reject {
        code: Code,
        message: String,
        message_id: String,
    },
    /// Nothing to answer (joins, quits, names, unmutes).
    Nothing,
}

impl Item {
    fn reject(code: Code, message: String, message_id: String) -> Self {
        Item::Reject {
            code,
            message,
            message_id,
        }
    }
}
