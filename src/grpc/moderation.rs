//! `modbot.v1.Moderation`.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::auth::{Principal, check_hello};
use super::convert::{self, MessageLimits};
use super::status::FieldError;
use super::stream;
use crate::actions::ActionStatus;
use crate::actions::dispatch::automatic_action;
use crate::app::App;
use crate::audit::Outcome;
use crate::decision::{DecideOptions, Degraded};
use crate::inference::{Admission, Overloaded};
use crate::proto::moderation_server::Moderation;
use crate::proto::{
    ClassifyRequest, ClassifyResponse, StreamModerateRequest, StreamModerateResponse,
    stream_moderate_request,
};
use crate::rules::ClassifyActions;
use crate::store::AuditRecord;

/// Decides chat messages.
#[derive(Debug, Clone)]
pub struct ModerationService {
    app: Arc<App>,
}

impl ModerationService {
    /// The service over the shared application state.
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl Moderation for ModerationService {
    async fn classify(
        &self,
        request: Request<ClassifyRequest>,
    ) -> Result<Response<ClassifyResponse>, Status> {
        let received = Instant::now();
        let requested_by = super::auth::principal_name(&request);
        let request = request.into_inner();
        let options = request.options.unwrap_or_default();
        let limit = self.app.config.grpc.max_messages_per_call as usize;
        if request.messages.is_empty() {
            return Err(FieldError::new("messages", "at least one message is required").into());
        }
        if request.messages.len() > limit {
            return Err(FieldError::new(
                "messages",
                format!(
                    "{} messages exceed the limit of {limit} per call",
                    request.messages.len()
                ),
            )
            .into());
        }
        let limits = MessageLimits::from_config(&self.app.config);
        // Texts their sender cut to fit (ChatMessage.original_text_bytes): their verdicts say so.
        let truncated: Vec<bool> = request
            .messages
            .iter()
            .map(|m| m.original_text_bytes as usize > m.text.len())
            .collect();
        // Validate everything before deciding anything: a rejected request writes nothing.
        let messages = request
            .messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| convert::chat_message(m, &format!("messages[{i}]"), limits))
            .collect::<Result<Vec<_>, _>>()?;

        let decide = DecideOptions {
            dry_run: options.dry_run,
        };
        // Every message goes to the model first, so the call's texts share batches; a full
        // model queue refuses the call before anything is decided or remembered.
        let moderator = &self.app.moderator;
        let with_text = self.app.config.log.message_text;
        let mut consults = Vec::with_capacity(messages.len());
        for message in &messages {
            let span = crate::telemetry::message_span(message, with_text);
            let consult = moderator
                .consult(message, Admission::FailFast)
                .instrument(span.clone())
                .await
                .map_err(overloaded)?;
            consults.push((consult, span));
        }
        // Then in order, one after another: a later message of the same user must see the
        // earlier.
        let mut verdicts = Vec::with_capacity(messages.len());
        for (message, (consult, span)) in messages.iter().zip(consults) {
            verdicts.push(
                moderator
                    .moderate_with(message, consult, decide, received)
                    .instrument(span)
                    .await,
            );
        }

        if !options.dry_run {
            // Enforced verdicts that act on the user become actions, recorded with the audit
            // records in one transaction. Whether the dispatcher then carries one to the bridge
            // is the channel's policy: by default the caller enforces its verdicts in its own
            // system and the action is only recorded (status `recorded`, never pending, so it
            // neither reaches a chat nor expires).
            let actions = &self.app.config.actions;
            let engine = self.app.moderator.engine();
            let mut records = Vec::new();
            // Which verdict each record is for.
            let mut notable = Vec::new();
            for (i, (message, verdict)) in messages.iter().zip(verdicts.iter_mut()).enumerate() {
                if !verdict.is_notable() {
                    continue;
                }
                notable.push(i);
                let mut action = automatic_action(
                    message,
                    verdict,
                    &requested_by,
                    actions.hide_duration(),
                    actions.pending_ttl(),
                );
                if let Some(action) = &mut action
                    && engine.rules().policy(&message.channel).classify_actions
                        == ClassifyActions::Record
                {
                    action.status = ActionStatus::Recorded;
                }
                verdict.action_id = action.as_ref().map(|a| a.id.clone());
                records
                    .push(AuditRecord::new(message.clone(), verdict.clone()).with_action(action));
            }
            // Split on a poison record like the streams' writer: one message the database
            // refuses does not cost the others their rows and actions.
            let outcomes = crate::audit::write_records(&self.app.store, &records).await;
            let lost = outcomes.iter().filter(|o| **o != Outcome::Stored).count();
            if lost > 0 {
                // The decisions stand: a caller waiting to show a message needs them more
                // than the audit log needs the rows. Each verdict says what was lost.
                metrics::counter!("modbot_audit_write_failures_total").increment(lost as u64);
            }
            if !records.is_empty() {
                crate::telemetry::set_degraded(Degraded::Store, lost > 0);
            }
            for (&i, outcome) in notable.iter().zip(outcomes.iter()) {
                outcome.mark(&mut verdicts[i]);
            }
            // Only an open action (not one that is only recorded) has anything to deliver.
            let actions_stored = records.iter().zip(&outcomes).any(|(r, o)| {
                r.action.as_ref().is_some_and(|a| a.status.is_open()) && *o != Outcome::Lost
            });
            if actions_stored {
                self.app.dispatcher.wake();
            }
        }

        let elapsed = received.elapsed();
        for verdict in &mut verdicts {
            verdict.elapsed = elapsed;
            if !options.dry_run {
                self.app.count_verdict(verdict);
            }
            if !options.include_normalized_text {
                verdict.normalized_text.clear();
            }
            if !options.include_scores {
                verdict.scores.clear();
            }
        }
        Ok(Response::new(ClassifyResponse {
            verdicts: verdicts
                .into_iter()
                .zip(truncated)
                .map(|(verdict, truncated)| crate::proto::Verdict {
                    text_truncated: truncated,
                    ..verdict.into()
                })
                .collect(),
        }))
    }

    type StreamModerateStream = ReceiverStream<Result<StreamModerateResponse, Status>>;

    async fn stream_moderate(
        &self,
        request: Request<Streaming<StreamModerateRequest>>,
    ) -> Result<Response<Self::StreamModerateStream>, Status> {
        let principal = request.extensions().get::<Principal>().cloned();
        let mut inbound = request.into_inner();
        // A stream that never says hello would hold a slot (and a task) for as long as its
        // connection lives.
        let hello_timeout = self.app.config.grpc.hello_timeout();
        let first = tokio::time::timeout(hello_timeout, inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "hello: none within {} ms of the stream opening",
                    hello_timeout.as_millis()
                ))
            })?;
        let hello = match first? {
            Some(StreamModerateRequest {
                kind: Some(stream_moderate_request::Kind::Hello(hello)),
            }) => {
                let hello = stream::validate_hello(hello)?;
                // A bridge credential registers only as the bridge ids and for the channels
                // it is bound to: another's would receive and answer that bridge's actions.
                check_hello(principal.as_ref(), &hello)?;
                hello
            }
            Some(_) => {
                return Err(FieldError::new(
                    "kind",
                    "the first message on the stream must be a hello",
                )
                .into());
            }
            None => {
                return Err(FieldError::new("hello", "the stream ended before its hello").into());
            }
        };
        let (responses_tx, responses_rx) = mpsc::channel(stream::RESPONSE_BUFFER);
        let session = stream::Session::new(Arc::clone(&self.app), hello, principal, responses_tx);
        // In the call's `grpc` span, so the session's `stream` span nests under it.
        tokio::spawn(session.run(inbound).in_current_span());
        Ok(Response::new(ReceiverStream::new(responses_rx)))
    }
}

/// `RESOURCE_EXHAUSTED` for a full model queue, with the retry hint both in the message and
/// as `grpc-retry-pushback-ms` (the gRPC retry policy's server pushback), so generated clients
/// with retries configured wait that long by themselves.
pub fn overloaded(overloaded: Overloaded) -> Status {
    let mut status = Status::resource_exhausted(format!(
        "model: {overloaded}; nothing was decided or remembered"
    ));
    let millis = overloaded.retry_after.as_millis().to_string();
    if let Ok(value) = millis.parse() {
        status
            .metadata_mut()
            .insert("grpc-retry-pushback-ms", value);
    }
    status
}
