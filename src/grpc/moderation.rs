//! `modbot.v1.Moderation`.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status, Streaming};

use super::convert::{self, MessageLimits};
use super::status::FieldError;
use crate::app::App;
use crate::decision::{DecideOptions, Degraded};
use crate::proto::moderation_server::Moderation;
use crate::proto::{
    ClassifyRequest, ClassifyResponse, StreamModerateRequest, StreamModerateResponse,
};
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
        let limits = MessageLimits {
            max_text_bytes: self.app.config.grpc.max_text_bytes as usize,
        };
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
        let mut verdicts: Vec<_> = messages
            .iter()
            .map(|m| self.app.engine.decide(m, decide, received))
            .collect();

        if !options.dry_run {
            let records: Vec<AuditRecord> = messages
                .iter()
                .zip(&verdicts)
                .filter(|(_, v)| v.is_notable())
                .map(|(m, v)| AuditRecord::new(m.clone(), v.clone()))
                .collect();
            if let Err(error) = self.app.store.record_verdicts(&records).await {
                // The decision stands: a caller waiting to show a message needs it more than
                // the audit log needs the row. The verdict says what was lost.
                tracing::error!(%error, count = records.len(), "audit log write failed");
                metrics::counter!("modbot_audit_write_failures_total").increment(1);
                for verdict in verdicts.iter_mut().filter(|v| v.is_notable()) {
                    verdict.degraded.push(Degraded::Store);
                }
            }
        }

        let elapsed = received.elapsed();
        for verdict in &mut verdicts {
            metrics::counter!("modbot_verdicts_total", "decision" => verdict.decision.as_str())
                .increment(1);
            verdict.elapsed = elapsed;
            if !options.include_normalized_text {
                verdict.normalized_text.clear();
            }
            if !options.include_scores {
                verdict.scores.clear();
            }
        }
        Ok(Response::new(ClassifyResponse {
            verdicts: verdicts.into_iter().map(Into::into).collect(),
        }))
    }

    type StreamModerateStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<StreamModerateResponse, Status>> + Send>,
    >;

    async fn stream_moderate(
        &self,
        _request: Request<Streaming<StreamModerateRequest>>,
    ) -> Result<Response<Self::StreamModerateStream>, Status> {
        Err(Status::unimplemented(
            "StreamModerate is not available yet: streaming moderation needs per-user state \
             (recent messages, rates, heat), which arrives with the full rule engine",
        ))
    }
}
