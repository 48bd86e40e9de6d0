//! The `grpc{rpc, request_id}` span around every call, as a tower layer inside
//! [`super::metrics::MetricsLayer`] and outside [`super::auth::AuthLayer`], so a refused call
//! is logged in its span too.
//!
//! The request id is the caller's `x-request-id` metadata when it is 1 to 128 printable ASCII
//! characters (a backend's own id, so its logs and modbot's join), otherwise a new UUIDv7. It
//! is put on the request (handlers see the id that was used) and sent back on the response's
//! headers, also when the call is refused. Everything a call does runs inside the span: the
//! handler, a stream's session (spawned `in_current_span`), each message's `message` span, and
//! through those the model's `model_batch` spans.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::HeaderValue;
use tracing::Instrument;

/// The metadata key of the request id, on requests and responses.
pub const REQUEST_ID: &str = "x-request-id";

/// Longest request id taken from a caller.
const MAX_REQUEST_ID: usize = 128;

/// The layer.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceLayer;

impl<S> tower::Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceService { inner }
    }
}

/// The service the layer makes.
#[derive(Clone, Debug)]
pub struct TraceService<S> {
    inner: S,
}

/// The caller's request id, if it is one modbot will repeat in its logs and headers.
fn caller_request_id(value: &HeaderValue) -> Option<HeaderValue> {
    let bytes = value.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= MAX_REQUEST_ID
        && bytes.iter().all(|b| b.is_ascii_graphic());
    valid.then(|| value.clone())
}

fn new_request_id() -> HeaderValue {
    HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
        .expect("a UUID is a valid header value. This is a bug")
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for TraceService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let request_id = request
            .headers()
            .get(REQUEST_ID)
            .and_then(caller_request_id)
            .unwrap_or_else(new_request_id);
        request.headers_mut().insert(REQUEST_ID, request_id.clone());
        let span = tracing::info_span!(
            "grpc",
            rpc = super::metrics::rpc_label(request.uri().path()),
            request_id = request_id.to_str().unwrap_or_default(),
        );
        let response = span.in_scope(|| self.inner.call(request));
        Box::pin(
            async move {
                let mut response = response.await?;
                response.headers_mut().insert(REQUEST_ID, request_id);
                Ok(response)
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_request_id_is_kept_only_when_printable_and_short() {
        let check = |value: &[u8], kept: bool| {
            let header = HeaderValue::from_bytes(value).unwrap();
            assert_eq!(
                caller_request_id(&header).is_some(),
                kept,
                "{:?}",
                String::from_utf8_lossy(value)
            );
        };
        check(b"req-42", true);
        check(b"0123456789abcdef-ABC_/+=", true);
        check(&[b'x'; MAX_REQUEST_ID], true);
        check(&[b'x'; MAX_REQUEST_ID + 1], false);
        check(b"", false);
        check(b"has space", false);
        check(b"tab\there", false);
        check("caf\u{e9}".as_bytes(), false);
        let generated = new_request_id();
        assert!(caller_request_id(&generated).is_some());
        assert_ne!(generated, new_request_id());
    }
}
