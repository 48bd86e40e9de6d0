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
//! sees a consistent history. Answers leave through an ordered outbox: a verdict that names an
//! action is held there until the batch that stores its action is committed (see `audit`), and
//! the answers after it wait behind it while the finisher decides on. The bridge's
//! `ActionResult`s go to a third task, answered in the order received but beside the
//! messages: each is a database write, and hundreds a second of them (a busy chat's timeouts)
//! must not hold up the decisions.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tonic::{Code, Status, Streaming};
use tracing::Instrument;

use super::auth::{self, Principal};
use super::convert::{self, MessageLimits};
use super::status::FieldError;
use crate::domain;
use crate::domain::{ChatMessage, Decision, Verdict};
use crate::infra::inference::{Admission, Unavailable};
use crate::infra::store::ActionAnswer;
use crate::proto::{
    ActionKind, ActionResult, ActionResultAck, ChatEvent, Hello, StreamError,
    StreamModerateRequest, StreamModerateResponse, Welcome, chat_event, stream_moderate_request,
    stream_moderate_response,
};
use crate::service::Services;
use crate::service::actions::dispatch::Answered;
use crate::service::audit::Outcome;
use crate::service::chat_actions::ChatModAction;
use crate::service::moderate::Consult;
use crate::service::pipeline::Streamed;

/// Responses buffered per stream before the session waits for the client.
pub const RESPONSE_BUFFER: usize = 1024;

/// Messages a stream reads ahead of its decisions, so their texts share model batches.
const PIPELINE: usize = 256;

/// Responses a stream holds in order behind a verdict waiting for its action's commit.
const OUTBOX: usize = 4096;

/// Most channels one stream may serve.
const MAX_CHANNELS: usize = 256;

/// Longest `ActionResult.detail` accepted, in bytes.
const MAX_DETAIL_BYTES: usize = 4096;

type Responses = mpsc::Sender<Result<StreamModerateResponse, Status>>;

/// Checks a hello: a bridge id and at least one channel, each a valid id.
pub fn validate_hello(mut hello: Hello) -> Result<Hello, FieldError> {
    // Ids as everywhere else: bounded, no control characters (they reach logs, the store and
    // the dispatcher's claims).
    hello.bridge_id = convert::id_field(std::mem::take(&mut hello.bridge_id), "hello.bridge_id")?;
    hello.bot_nick = convert::optional_id(std::mem::take(&mut hello.bot_nick), "hello.bot_nick")?
        .unwrap_or_default();
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
    for (i, channel) in hello.channels.iter_mut().enumerate() {
        *channel = convert::id_field(std::mem::take(channel), &format!("hello.channels[{i}]"))?;
    }
    Ok(dedup_channels(hello))
}

/// The hello with each channel once, in first-seen order: a channel named twice is served
/// once (and costs the dispatcher nothing more).
fn dedup_channels(mut hello: Hello) -> Hello {
    let mut seen = std::collections::HashSet::with_capacity(hello.channels.len());
    hello
        .channels
        .retain(|channel| seen.insert(channel.clone()));
    hello
}

/// A response on its way to the client through the session's outbox, in order.
enum Outgoing {
    /// Sent as it is.
    Ready(Result<StreamModerateResponse, Status>),
    /// A verdict that names an action: sent once the batch that stores the action is
    /// committed, marked by the outcome.
    AfterCommit {
        verdict: Verdict,
        committed: oneshot::Receiver<Outcome>,
        /// When its message was read, for the verdict's `elapsed`.
        received: Instant,
        /// Whether the bridge cut the message's text (the verdict says so).
        truncated: bool,
    },
}

/// A stream's state.
pub struct Session {
    services: Arc<Services>,
    hello: Hello,
    /// Who opened the stream (`None` without tokens), its hello checked against its binding.
    principal: Option<Principal>,
    /// The client's channel, for its `closed()` and for action commands (sent beside the
    /// verdicts); everything else goes through `outbox_tx`.
    responses_tx: Responses,
    /// Responses in the order they are to be sent, drained by `outbox_task`: a verdict that
    /// waits for its action's commit holds up the ones after it, but not the decisions.
    outbox_tx: mpsc::Sender<Outgoing>,
    limits: MessageLimits,
}

impl Session {
    /// A session for a validated hello, opened by `principal` (see [`auth::check_hello`]).
    pub fn new(
        services: Arc<Services>,
        hello: Hello,
        principal: Option<Principal>,
        responses_tx: Responses,
    ) -> Self {
        let limits = MessageLimits::from_config(&services.config);
        // Room for the responses decided while a verdict waits for its action's commit (a
        // batch being written, then its own): at tens of thousands of messages a second a
        // smaller outbox stalls the decisions behind the commit.
        let (outbox_tx, outbox_rx) = mpsc::channel(OUTBOX);
        tokio::spawn(
            outbox_task(Arc::clone(&services), outbox_rx, responses_tx.clone()).in_current_span(),
        );
        Self {
            services,
            hello,
            principal,
            responses_tx,
            outbox_tx,
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
            session_id: session_id.clone(),
            channels: self.hello.channels.clone(),
            max_text_bytes: self.services.config.grpc.max_text_bytes,
        });
        if self.send(welcome).await {
            // Action commands for this bridge's channels go out beside the verdicts, from
            // their own task, for as long as the registration lives.
            let (registration, commands_rx) = self.services.dispatcher.register(
                &session_id,
                &self.hello.bridge_id,
                &self.hello.channels,
            );
            let (forwarding_tx, forwarding_rx) = tokio::sync::watch::channel(true);
            let forwarder = tokio::spawn(
                forward_commands(
                    commands_rx,
                    self.responses_tx.clone(),
                    forwarding_rx.clone(),
                    Some(Arc::clone(&self.services)),
                )
                .in_current_span(),
            );
            let raids = tokio::spawn(
                forward_raid_alerts(
                    self.services.moderator.raids().subscribe(),
                    self.hello.channels.clone(),
                    self.responses_tx.clone(),
                    forwarding_rx,
                )
                .in_current_span(),
            );
            let eviction = registration.eviction();
            let (items_tx, items_rx) = mpsc::channel(PIPELINE);
            let (results_tx, results_rx) = mpsc::channel(PIPELINE);
            // The stages run as tasks, so a busy stream's reading and deciding use both of
            // the runtime's threads.
            let this = Arc::new(self);
            let finisher = tokio::spawn({
                let this = Arc::clone(&this);
                async move { this.finish_all(items_rx).await }.in_current_span()
            });
            let answerer = tokio::spawn({
                let this = Arc::clone(&this);
                async move { this.answer_all(results_rx).await }.in_current_span()
            });
            let ended = this.read(inbound, items_tx, results_tx, eviction).await;
            // The session takes no more commands; those claimed for it and never written to
            // the stream go back to pending for the next bridge (or this one, reconnected).
            drop(registration);
            let _ = forwarding_tx.send(false);
            let unsent = forwarder.await.unwrap_or_default();
            let _ = raids.await;
            this.services
                .dispatcher
                .give_back(&this.hello.bridge_id, &unsent)
                .await;
            if let Err(error) = finisher.await {
                tracing::error!(%error, "the stream's decision task failed");
            }
            if let Err(error) = answerer.await {
                tracing::error!(%error, "the stream's action result task failed");
            }
            this.end(ended).await;
        }
        metrics::gauge!("modbot_streams_open").decrement(1.0);
        tracing::info!("stream closed");
    }

    /// Stage one: reads requests, checks them and starts their model scoring, in order; action
    /// results go to their own task. Returns why it stopped.
    async fn read(
        &self,
        mut inbound: Streaming<StreamModerateRequest>,
        items: mpsc::Sender<Item>,
        results: mpsc::Sender<ActionResult>,
        mut eviction: tokio::sync::watch::Receiver<bool>,
    ) -> Ended {
        let mut stopping = self.services.stopping.subscribe();
        loop {
            let request = tokio::select! {
                request = inbound.message() => request,
                () = items.closed() => break,
                _ = stopping.wait_for(|stopping| *stopping) => return Ended::Stopping,
                _ = eviction.wait_for(|evicted| *evicted) => return Ended::Evicted,
            };
            match request {
                Ok(Some(request)) => {
                    let sent = match self.prepare(request).await {
                        Item::ActionResult(result) => results.send(result).await.is_ok(),
                        item => items.send(item).await.is_ok(),
                    };
                    if !sent {
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
        Ended::Client
    }

    /// Ends the stream with a status saying why, when the server ended it.
    async fn end(&self, ended: Ended) {
        let status = match ended {
            Ended::Client => return,
            // Everything read is answered; the bridge resends the rest to the replica it
            // reconnects to.
            Ended::Stopping => Status::unavailable(
                "modbot is shutting down; reconnect and send again what has no verdict",
            ),
            Ended::Evicted => Status::aborted(format!(
                "hello.bridge_id: a newer stream registered bridge `{}`; this older one ends",
                self.hello.bridge_id
            )),
        };
        tracing::info!(%status, "stream ended by the server");
        // After every response still in the outbox, in order. A client that stopped reading
        // would hold this send forever: its connection's keepalive ends it instead.
        let _ = self.outbox_tx.send(Outgoing::Ready(Err(status))).await;
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

    /// Answers the bridge's action results, in the order read: whatever has queued up is
    /// recorded in one database transaction.
    async fn answer_all(&self, mut results: mpsc::Receiver<ActionResult>) {
        let mut batch = Vec::with_capacity(PIPELINE);
        loop {
            let received = tokio::select! {
                received = results.recv_many(&mut batch, PIPELINE) => received,
                () = self.responses_tx.closed() => 0,
            };
            if received == 0 || !self.answer_results(&batch).await {
                break;
            }
            batch.clear();
        }
    }

    /// Checks and records action results; the refused ones are answered in-band, in order.
    /// False when the client has gone.
    async fn answer_results(&self, results: &[ActionResult]) -> bool {
        let checked: Vec<Result<ActionAnswer<'_>, String>> =
            results.iter().map(check_result).collect();
        let answers: Vec<ActionAnswer<'_>> = checked
            .iter()
            .filter_map(|c| c.as_ref().ok())
            .copied()
            .collect();
        let mut answered = if answers.is_empty() {
            Ok(Vec::new())
        } else {
            self.services
                .dispatcher
                .answer(&self.hello.bridge_id, &answers)
                .await
        };
        if let Err(error) = &answered {
            tracing::warn!(%error, count = answers.len(), "cannot record action results");
        }
        let mut outcomes = answered.as_mut().map(|o| o.drain(..));
        for (result, checked) in results.iter().zip(&checked) {
            let (code, message) = match checked {
                Err(message) => (Code::InvalidArgument, message.clone()),
                Ok(_) => match outcomes.as_mut().map(Iterator::next) {
                    Ok(Some(Answered::Recorded(_))) => {
                        // The bridge keeps a result until it is acknowledged (or refused).
                        let ack = stream_moderate_response::Kind::ResultAck(ActionResultAck {
                            action_id: result.action_id.clone(),
                        });
                        if !self.send(ack).await {
                            return false;
                        }
                        continue;
                    }
                    Ok(Some(Answered::Unknown)) => (
                        Code::NotFound,
                        format!("action_result.action_id: no action `{}`", result.action_id),
                    ),
                    Ok(Some(Answered::NotSent(_))) => (
                        Code::FailedPrecondition,
                        format!(
                            "action_result.action_id: action `{}` was not sent to this bridge",
                            result.action_id
                        ),
                    ),
                    Ok(None) | Err(_) => (
                        Code::Unavailable,
                        format!(
                            "action_result: the database is unavailable; send the result for \
                             `{}` again",
                            result.action_id
                        ),
                    ),
                },
            };
            if !self
                .reject_result(code, message, result.action_id.clone())
                .await
            {
                return false;
            }
        }
        true
    }

    /// Refuses an action result in-band, naming its action id, so the bridge knows which
    /// result to send again (UNAVAILABLE) or to drop (any other code).
    async fn reject_result(&self, code: Code, message: String, action_id: String) -> bool {
        metrics::counter!("modbot_stream_errors_total").increment(1);
        self.send(stream_moderate_response::Kind::Error(StreamError {
            code: code as i32,
            message,
            message_id: String::new(),
            action_id,
        }))
        .await
    }

    /// Sends a response; false when the client has gone.
    async fn send(&self, kind: stream_moderate_response::Kind) -> bool {
        self.outbox_tx
            .send(Outgoing::Ready(Ok(StreamModerateResponse {
                kind: Some(kind),
            })))
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
            action_id: String::new(),
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
            // Checked by the task that answers them (`answer_results`), so that its in-band
            // errors keep their order.
            Some(stream_moderate_request::Kind::ActionResult(result)) => Item::ActionResult(result),
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
                // A bridge cuts a text longer than the server accepts rather than drop it;
                // the verdict says it covers only what modbot saw.
                let truncated = message.original_text_bytes as usize > message.text.len();
                let message = match convert::chat_message(message, "event.message", self.limits) {
                    Ok(message) => message,
                    Err(error) => {
                        return Item::reject(Code::InvalidArgument, error.to_string(), message_id);
                    }
                };
                let span =
                    crate::telemetry::message_span(&message, self.services.config.log.message_text);
                // A stream waits for room in the model's queue (pushing back on its bridge)
                // rather than failing: `Wait` never errs.
                let consult = match self
                    .services
                    .moderator
                    .consult(&message, Admission::Wait)
                    .instrument(span.clone())
                    .await
                {
                    Ok(consult) => consult,
                    Err(overloaded) => Consult::unavailable(Unavailable::Overloaded(overloaded)),
                };
                Item::Message {
                    message,
                    consult,
                    received,
                    span,
                    truncated,
                }
            }
            Some(chat_event::Kind::ModeratorAction(_))
                if !auth::may_report_chat_actions(self.principal.as_ref()) =>
            {
                // They write human actions and training labels: only a bridge's word counts.
                Item::reject(
                    Code::PermissionDenied,
                    format!(
                        "event.moderator_action: the credential `{}` is not a bridge's; only a \
                         bridge reports moderators' actions",
                        self.requested_by()
                    ),
                    String::new(),
                )
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
                let checked = convert::id_field(action.target, "event.moderator_action.target")
                    .and_then(|target| {
                        let moderator = convert::optional_id(
                            action.moderator,
                            "event.moderator_action.moderator",
                        )?;
                        Ok((target, moderator.unwrap_or_default()))
                    });
                let (target, moderator) = match checked {
                    Ok(checked) => checked,
                    Err(error) => {
                        return Item::reject(
                            Code::InvalidArgument,
                            error.to_string(),
                            String::new(),
                        );
                    }
                };
                // The chat broadcasts modbot's own commands back as its bot's actions: those
                // are already recorded, and they teach nothing about what humans act on.
                if !self.hello.bot_nick.is_empty()
                    && moderator.eq_ignore_ascii_case(&self.hello.bot_nick)
                {
                    return Item::Nothing;
                }
                let kind = match ActionKind::try_from(action.kind) {
                    Ok(ActionKind::Hide) => domain::ActionKind::Hide,
                    Ok(ActionKind::Warn) => domain::ActionKind::Warn,
                    Ok(ActionKind::Timeout) => domain::ActionKind::Timeout,
                    Ok(ActionKind::Ban) => domain::ActionKind::Ban,
                    Ok(ActionKind::Unmute) => domain::ActionKind::Unmute,
                    _ => domain::ActionKind::Unban,
                };
                // What the chat reports is recorded as reported, within bounds: no longer than
                // the longest ban the API gives, and no later than a minute from now (a time far
                // ahead would move the user's heat clock, as for messages).
                let now = SystemTime::now();
                let latest = now + std::time::Duration::from_secs(60);
                Item::ModeratorAction(ChatModAction {
                    channel: event.channel,
                    moderator,
                    target,
                    decision,
                    kind,
                    duration: action
                        .duration
                        .and_then(|d| std::time::Duration::try_from(d).ok())
                        .map(|d| d.min(super::actions::MAX_BAN)),
                    at: action
                        .at
                        .and_then(|t| SystemTime::try_from(t).ok())
                        .map_or(now, |at| at.min(latest)),
                })
            }
            // A join feeds the channel's raid watch (a surge of joins); only a bridge's word
            // counts, as for moderators' actions: others' joins are dropped.
            Some(chat_event::Kind::Join(join)) => {
                if auth::may_report_chat_actions(self.principal.as_ref()) {
                    let at = join
                        .at
                        .and_then(|t| SystemTime::try_from(t).ok())
                        .unwrap_or_else(SystemTime::now);
                    self.services.moderator.joined(&event.channel, at);
                }
                Item::Nothing
            }
            Some(chat_event::Kind::Quit(_) | chat_event::Kind::Names(_)) => Item::Nothing,
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
                span,
                truncated,
            } => {
                let streamed = self
                    .services
                    .decide_streamed(message, consult, received, self.requested_by())
                    .instrument(span)
                    .await;
                match streamed {
                    Streamed::Ready(mut verdict) => {
                        verdict.normalized_text.clear();
                        let mut answer = crate::proto::Verdict::from(verdict);
                        answer.text_truncated = truncated;
                        self.send(stream_moderate_response::Kind::Verdict(answer))
                            .await
                    }
                    Streamed::AfterCommit {
                        mut verdict,
                        committed,
                    } => {
                        // The outbox waits for the commit, so the next messages are decided
                        // meanwhile.
                        verdict.normalized_text.clear();
                        self.outbox_tx
                            .send(Outgoing::AfterCommit {
                                verdict,
                                committed,
                                received,
                                truncated,
                            })
                            .await
                            .is_ok()
                    }
                }
            }
            Item::ActionResult(result) => self.answer_results(std::slice::from_ref(&result)).await,
            Item::ModeratorAction(action) => {
                self.services
                    .record_chat_action(action, &self.hello.bridge_id, self.requested_by())
                    .await;
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

impl Session {
    /// The name of the credential that opened the stream (empty without tokens): who asked
    /// for its actions.
    fn requested_by(&self) -> &str {
        self.principal.as_ref().map_or("", |p| p.name.as_str())
    }
}

/// Sends a session's responses in order, each verdict that names an action once its commit
/// is done (marked by its outcome, then counted), until the session drops its outbox or the
/// client goes away.
async fn outbox_task(
    services: Arc<Services>,
    mut outbox_rx: mpsc::Receiver<Outgoing>,
    responses_tx: Responses,
) {
    while let Some(outgoing) = outbox_rx.recv().await {
        let response = match outgoing {
            Outgoing::Ready(response) => response,
            Outgoing::AfterCommit {
                verdict,
                committed,
                received,
                truncated,
            } => {
                let verdict = services.after_commit(verdict, committed, received).await;
                let mut answer: crate::proto::Verdict = verdict.into();
                answer.text_truncated = truncated;
                Ok(StreamModerateResponse {
                    kind: Some(stream_moderate_response::Kind::Verdict(answer)),
                })
            }
        };
        if responses_tx.send(response).await.is_err() {
            break;
        }
    }
}

/// Sends the dispatcher's commands for this stream's bridge as `ActionCommand`s, each with the
/// notice its target is to get (from `services`; none without), while `forwarding` is true
/// and the client is there. Returns the commands it took but never wrote to the stream, and
/// those still queued, so they can be given back.
async fn forward_commands(
    mut commands_rx: mpsc::Receiver<domain::Action>,
    responses_tx: Responses,
    mut forwarding: tokio::sync::watch::Receiver<bool>,
    services: Option<Arc<Services>>,
) -> Vec<domain::Action> {
    let mut unsent = Vec::new();
    loop {
        let action = tokio::select! {
            action = commands_rx.recv() => action,
            _ = forwarding.wait_for(|on| !*on) => None,
        };
        let Some(action) = action else { break };
        let notice = match &services {
            Some(services) => services.notice_for(&action).await,
            None => String::new(),
        };
        let command = crate::proto::ActionCommand {
            action_id: action.id.clone(),
            channel: action.channel.clone(),
            target: action.target_nick.clone(),
            kind: crate::proto::ActionKind::from(action.kind).into(),
            duration: action.duration.map(convert::duration),
            reason: action.reason.clone(),
            expires_at: Some(action.expires_at.into()),
            notice,
        };
        let response = StreamModerateResponse {
            kind: Some(stream_moderate_response::Kind::Command(command)),
        };
        let sent = tokio::select! {
            sent = responses_tx.send(Ok(response)) => sent.is_ok(),
            _ = forwarding.wait_for(|on| !*on) => false,
        };
        if !sent {
            unsent.push(action);
            break;
        }
    }
    // Nothing more is taken: the dispatcher's sends now fail and it gives those back itself.
    commands_rx.close();
    while let Ok(action) = commands_rx.try_recv() {
        unsent.push(action);
    }
    unsent
}

/// Sends raid alerts for the stream's `channels` while `forwarding` is true and the client is
/// there. A stream too slow to take them loses the oldest (logged).
async fn forward_raid_alerts(
    mut alerts: tokio::sync::broadcast::Receiver<crate::service::raid::RaidAlert>,
    channels: Vec<String>,
    responses_tx: Responses,
    mut forwarding: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let alert = tokio::select! {
            alert = alerts.recv() => alert,
            _ = forwarding.wait_for(|on| !*on) => return,
        };
        let alert = match alert {
            Ok(alert) => alert,
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "raid alerts missed by a slow stream");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        if !channels.contains(&alert.channel) {
            continue;
        }
        let response = StreamModerateResponse {
            kind: Some(stream_moderate_response::Kind::RaidAlert(
                crate::proto::RaidAlert {
                    raid: Some(convert::raid(&alert.channel, &alert.raid)),
                    ended: alert.ended,
                    subonly: alert.subonly,
                },
            )),
        };
        if responses_tx.send(Ok(response)).await.is_err() {
            return;
        }
    }
}

/// Why a session stopped reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The client closed its side or went away.
    Client,
    /// The server is shutting down.
    Stopping,
    /// A newer session registered the same bridge id.
    Evicted,
}

/// One request, checked and (for a message) on its way through the model, waiting for its
/// turn to be decided.
/// An action result's answer, or why it is refused (a message naming the field).
fn check_result(result: &ActionResult) -> Result<ActionAnswer<'_>, String> {
    if result.action_id.trim().is_empty() {
        Err("action_result.action_id: is required".to_owned())
    } else if !result.ok && result.error_code.trim().is_empty() {
        Err("action_result.error_code: is required when ok is false".to_owned())
    } else if result.error_code.len() > crate::domain::MAX_ID_BYTES
        || result.detail.len() > MAX_DETAIL_BYTES
    {
        Err(format!(
            "action_result: error_code is at most {} bytes and detail at most {MAX_DETAIL_BYTES}",
            crate::domain::MAX_ID_BYTES
        ))
    } else {
        Ok(ActionAnswer {
            id: &result.action_id,
            ok: result.ok,
            error: &result.error_code,
            detail: &result.detail,
        })
    }
}

enum Item {
    /// A chat message to decide.
    Message {
        message: ChatMessage,
        consult: Consult,
        received: Instant,
        /// Its `message` span, entered by both stages.
        span: tracing::Span,
        /// Whether the bridge cut its text (`ChatMessage.original_text_bytes`).
        truncated: bool,
    },
    /// A human moderator's action seen in the chat.
    ModeratorAction(ChatModAction),
    /// A bridge's answer to an action command.
    ActionResult(ActionResult),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn action(id: &str) -> domain::Action {
        domain::NewAction {
            channel: "c".into(),
            target_user_id: "u".into(),
            target_nick: "u".into(),
            kind: domain::ActionKind::Timeout,
            duration: Some(Duration::from_secs(60)),
            reason: String::new(),
            source: domain::ActionSource::Moderator,
            moderator: String::new(),
            message_id: String::new(),
            idempotency_key: None,
            requested_by: String::new(),
        }
        .into_action(id.into(), SystemTime::now(), Duration::from_secs(60))
    }

    fn ids(actions: &[domain::Action]) -> Vec<&str> {
        actions.iter().map(|a| a.id.as_str()).collect()
    }

    #[test]
    fn a_hellos_ids_are_bounded_and_free_of_control_characters() {
        let hello = |bridge_id: &str, channels: &[&str], bot_nick: &str| Hello {
            bridge_id: bridge_id.to_owned(),
            channels: channels.iter().map(|&c| c.to_owned()).collect(),
            bot_nick: bot_nick.to_owned(),
            ..Hello::default()
        };
        let long = "x".repeat(crate::domain::MAX_ID_BYTES + 1);
        for (request, field) in [
            (hello("", &["dgg"], ""), "hello.bridge_id"),
            (hello("br\u{0}idge", &["dgg"], ""), "hello.bridge_id"),
            (hello(&long, &["dgg"], ""), "hello.bridge_id"),
            (
                hello("b", &["dgg", "str\u{1b}ims"], ""),
                "hello.channels[1]",
            ),
            (hello("b", &["dgg", &long], ""), "hello.channels[1]"),
            (hello("b", &["dgg"], "bot\n"), "hello.bot_nick"),
        ] {
            let error = validate_hello(request).expect_err(field);
            assert_eq!(error.field, field, "{error}");
        }
        let ok = validate_hello(hello("b", &["dgg", "dgg", "strims"], "Bot")).unwrap();
        assert_eq!(ok.channels, ["dgg", "strims"]);
    }

    #[tokio::test]
    async fn commands_a_gone_client_never_got_are_handed_back() {
        let (commands_tx, commands_rx) = mpsc::channel(8);
        let (responses_tx, responses_rx) = mpsc::channel(8);
        let (_forwarding_tx, forwarding_rx) = tokio::sync::watch::channel(true);
        drop(responses_rx);
        for id in ["a1", "a2", "a3"] {
            commands_tx.send(action(id)).await.unwrap();
        }
        let unsent = forward_commands(commands_rx, responses_tx, forwarding_rx, None).await;
        assert_eq!(ids(&unsent), ["a1", "a2", "a3"]);
        assert!(
            commands_tx.try_send(action("a4")).is_err(),
            "nothing more is taken"
        );
    }

    #[tokio::test]
    async fn a_stopped_forwarder_hands_back_what_it_holds_and_what_is_queued() {
        let (commands_tx, commands_rx) = mpsc::channel(8);
        // Room for one response: the second command waits on a full channel.
        let (responses_tx, mut responses_rx) = mpsc::channel(1);
        let (forwarding_tx, forwarding_rx) = tokio::sync::watch::channel(true);
        for id in ["a1", "a2", "a3"] {
            commands_tx.send(action(id)).await.unwrap();
        }
        let forwarder = tokio::spawn(forward_commands(
            commands_rx,
            responses_tx,
            forwarding_rx,
            None,
        ));
        let first = responses_rx.recv().await.unwrap().unwrap();
        assert!(matches!(
            first.kind,
            Some(stream_moderate_response::Kind::Command(c)) if c.action_id == "a1"
        ));
        // a2 is now written into the channel, a3 waits for room; the session ends.
        while responses_rx.is_empty() {
            tokio::task::yield_now().await;
        }
        forwarding_tx.send(false).unwrap();
        let unsent = forwarder.await.unwrap();
        assert_eq!(ids(&unsent), ["a3"]);
    }

    #[test]
    fn a_hellos_channels_are_kept_once_in_order() {
        let hello = validate_hello(Hello {
            bridge_id: "b".into(),
            channels: vec!["x".into(), "y".into(), "x".into(), "y".into(), "z".into()],
            dialect: String::new(),
            bot_nick: String::new(),
        })
        .unwrap();
        assert_eq!(hello.channels, ["x", "y", "z"]);
    }
}
