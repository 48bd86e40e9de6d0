//! Per-RPC Prometheus metrics, as a tower layer around the whole router (outside
//! [`super::auth::AuthLayer`], so refused calls are counted too).
//!
//! - `modbot_grpc_requests_total{rpc, code}`: calls by RPC and gRPC status (`ok`,
//!   `invalid_argument`, ...), counted when the call ends.
//! - `modbot_grpc_request_duration_seconds{rpc}`: from the request to the end of the response
//!   (for a stream, its whole life).
//! - `modbot_grpc_requests_in_flight{rpc}`: calls (and streams) open now.
//!
//! A gRPC status travels in the response headers when the call fails before any message
//! ("trailers-only"), otherwise in the trailers after the last message, so the response body
//! is wrapped to read it there. A response that ends without a status (the client went away)
//! is counted as `cancelled`. `rpc` is `Service/Method` for the methods of modbot's, health's
//! and reflection's services (read from their descriptor sets) and `unknown` for any other
//! path, so a scanner cannot grow the label set.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use prost::Message as _;

/// The layer.
#[derive(Clone, Copy, Debug, Default)]
pub struct MetricsLayer;

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService { inner }
    }
}

/// The service the layer makes.
#[derive(Clone, Debug)]
pub struct MetricsService<S> {
    inner: S,
}

/// The label for a request path: `Service/Method` for a method the server serves, `unknown`
/// for any other path. The metrics layer runs before authentication, so anything else would
/// let an unauthenticated client make a new label set (never dropped) with every junk path.
pub(crate) fn rpc_label(path: &str) -> &'static str {
    KNOWN_METHODS.get(path).map_or("unknown", String::as_str)
}

/// Every method the server serves, `/package.Service/Method` → `Service/Method`, read once
/// from the descriptor sets the server is built from (modbot's, health's and reflection's), so
/// a new RPC is labelled without a second list to keep in step.
static KNOWN_METHODS: std::sync::LazyLock<HashMap<String, String>> =
    std::sync::LazyLock::new(|| {
        let mut methods = HashMap::new();
        for encoded in [
            crate::proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ] {
            let set = prost_types::FileDescriptorSet::decode(encoded)
                .expect("a compiled-in descriptor set decodes. This is a bug");
            for file in &set.file {
                for service in &file.service {
                    for method in &service.method {
                        let label = format!("{}/{}", service.name(), method.name());
                        let path = if file.package().is_empty() {
                            format!("/{label}")
                        } else {
                            format!("/{}.{label}", file.package())
                        };
                        methods.insert(path, label);
                    }
                }
            }
        }
        methods
    });

/// A gRPC status code's name in snake case.
fn code_name(code: i32) -> &'static str {
    match tonic::Code::from_i32(code) {
        tonic::Code::Ok => "ok",
        tonic::Code::Cancelled => "cancelled",
        tonic::Code::Unknown => "unknown",
        tonic::Code::InvalidArgument => "invalid_argument",
        tonic::Code::DeadlineExceeded => "deadline_exceeded",
        tonic::Code::NotFound => "not_found",
        tonic::Code::AlreadyExists => "already_exists",
        tonic::Code::PermissionDenied => "permission_denied",
        tonic::Code::ResourceExhausted => "resource_exhausted",
        tonic::Code::FailedPrecondition => "failed_precondition",
        tonic::Code::Aborted => "aborted",
        tonic::Code::OutOfRange => "out_of_range",
        tonic::Code::Unimplemented => "unimplemented",
        tonic::Code::Internal => "internal",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::DataLoss => "data_loss",
        tonic::Code::Unauthenticated => "unauthenticated",
    }
}

fn status_of(headers: &http::HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// One call being measured; records itself once, when it learns its status or is dropped.
struct Call {
    rpc: &'static str,
    started: Instant,
    code: Option<i32>,
    done: bool,
}

impl Call {
    fn new(rpc: &'static str) -> Self {
        metrics::gauge!("modbot_grpc_requests_in_flight", "rpc" => rpc).increment(1.0);
        Self {
            rpc,
            started: Instant::now(),
            code: None,
            done: false,
        }
    }

    fn finish(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let code = code_name(self.code.unwrap_or(tonic::Code::Cancelled as i32));
        metrics::counter!("modbot_grpc_requests_total", "rpc" => self.rpc, "code" => code)
            .increment(1);
        metrics::histogram!("modbot_grpc_request_duration_seconds", "rpc" => self.rpc)
            .record(self.started.elapsed().as_secs_f64());
        metrics::gauge!("modbot_grpc_requests_in_flight", "rpc" => self.rpc).decrement(1.0);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish();
    }
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for MetricsService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Body + Unpin + Send + 'static,
{
    type Response = http::Response<MetricsBody<ResBody>>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let mut call = Call::new(rpc_label(request.uri().path()));
        let response = self.inner.call(request);
        Box::pin(async move {
            // An error here is the transport's, not a gRPC status: the call is dropped and
            // counted as cancelled.
            let response = response.await?;
            let status = status_of(response.headers());
            if status.is_some() {
                call.code = status;
                call.finish();
            }
            Ok(response.map(|body| MetricsBody { inner: body, call }))
        })
    }
}

/// A response body that records its call when the trailers (or the end) arrive.
pub struct MetricsBody<B> {
    inner: B,
    call: Call,
}

impl<B: Body + Unpin> Body for MetricsBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref()
                    && this.call.code.is_none()
                {
                    this.call.code = status_of(trailers);
                    this.call.finish();
                }
            }
            Poll::Ready(Some(Err(_))) => this.call.finish(),
            Poll::Ready(None) => this.call.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Default> Default for MetricsBody<B> {
    fn default() -> Self {
        Self {
            inner: B::default(),
            call: Call {
                rpc: "",
                started: Instant::now(),
                code: None,
                done: true,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(
            rpc_label("/modbot.v1.Moderation/Classify"),
            "Moderation/Classify"
        );
        assert_eq!(rpc_label("/grpc.health.v1.Health/Check"), "Health/Check");
        assert_eq!(rpc_label("/grpc.health.v1.Health/Watch"), "Health/Watch");
        assert_eq!(
            rpc_label("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
            "ServerReflection/ServerReflectionInfo"
        );
        assert_eq!(rpc_label("/modbot.v1.Admin/SetPolicy"), "Admin/SetPolicy");
        assert_eq!(rpc_label("/evil.v1.X/Y"), "unknown");
        // Well-formed paths of modbot's package that name no method it serves.
        assert_eq!(rpc_label("/modbot.v1.Moderation/Nope"), "unknown");
        assert_eq!(rpc_label("/modbot.v1.Junk123/Classify"), "unknown");
        assert_eq!(rpc_label("/modbot.v1.Moderation/a/b"), "unknown");
        assert_eq!(rpc_label("/modbot.v1./x"), "unknown");
        assert_eq!(
            rpc_label(&format!("/modbot.v1.A/{}", "x".repeat(200))),
            "unknown"
        );
        assert_eq!(code_name(3), "invalid_argument");
        assert_eq!(code_name(999), "unknown");
    }
}
