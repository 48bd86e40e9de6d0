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
use crate::engine::decision::DecideOptions;
use crate::infra::inference::Overloaded;
use crate::proto::moderation_server::Moderation;
use crate::proto::{
    ClassifyRequest, ClassifyResponse, StreamModerateRequest, StreamModerateResponse,
    stream_moderate_request,
};
use crate::service::Services;

/// Decides chat messages.
#[derive(Debug, Clone)]
pub struct ModerationService {
    services: Arc<Services>,
}

impl ModerationService {
    /// The service over the shared application state.
    pub fn new(services: Arc<Services>) -> Self {
        Self { services }
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
        let limit = self.services.config.grpc.max_messages_per_call as usize;
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
        let limits = MessageLimits::from_config(&self.services.config);
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
        let mut verdicts = self
            .services
            .classify(&messages, decide, &requested_by, received)
            .await
            .map_err(overloaded)?;
        for verdict in &mut verdicts {
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
        let hello_timeout = self.services.config.grpc.hello_timeout();
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
        let session =
            stream::Session::new(Arc::clone(&self.services), hello, principal, responses_tx);
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
