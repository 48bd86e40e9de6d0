//! Every RPC as JSON, generated from the API's descriptor set rather than written per method.
//!
//! A JSON request is read into a [`DynamicMessage`] of the method's input type (the proto3 JSON
//! mapping, `prost-reflect`), encoded as protobuf and sent **through the same tower stack as a
//! gRPC call from the network** — metrics, tracing, the auth layer with its role table, then
//! tonic's router and the handler. The answer is read back the same way. So a JSON call and a
//! gRPC call cannot differ in what they may do or how they are validated: there is one
//! handler, one role table and one set of error messages, and a new RPC is on the JSON API as
//! soon as it is in `proto/`.
//!
//! The wire format is the Connect protocol's unary JSON (`POST /modbot.v1.Service/Method`,
//! `Content-Type: application/json`; errors in [`super::error`]); server streams are
//! Server-Sent Events ([`Rpc::open_stream`]).

use std::convert::Infallible;

use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use http_body_util::BodyExt;
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, MethodDescriptor,
    SerializeOptions,
};
use tokio::sync::mpsc;
use tonic::Code;
use tower::ServiceExt as _;

use super::error::ApiError;
use crate::edge::grpc::auth::{Authenticated, Principal};

/// The gRPC server's whole stack (metrics, tracing, auth, router) as one service the HTTP edge
/// calls in-process.
pub type GrpcService = tower::util::BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    Infallible,
>;

/// Largest message read back from a call (a `ListActions` page is far smaller).
const MAX_RESPONSE_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Messages of a server stream buffered for a slow HTTP client before the stream waits.
const STREAM_BUFFER: usize = 64;

/// Who is calling, as the gRPC stack will see it.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// An `authorization` header to pass on (a bearer token sent to the JSON API).
    pub authorization: Option<HeaderValue>,
    /// A console session's principal, already authenticated.
    pub principal: Option<Principal>,
    /// The request id to pass on (`x-request-id`).
    pub request_id: Option<HeaderValue>,
}

/// The descriptor set and the stack: JSON in, JSON out.
#[derive(Clone)]
pub struct Rpc {
    pool: DescriptorPool,
    grpc: GrpcService,
}

impl Rpc {
    /// Calls go to `grpc`; the methods are those of modbot's API and gRPC health.
    pub fn new(grpc: GrpcService) -> Self {
        Self {
            pool: api_descriptors(),
            grpc,
        }
    }

    /// The descriptors of every service the JSON API carries.
    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }

    /// The method at `path` (`/modbot.v1.Admin/GetStats`), if there is one.
    pub fn method(&self, path: &str) -> Option<MethodDescriptor> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        self.pool
            .get_service_by_name(service)?
            .methods()
            .find(|m| m.name() == method)
    }

    /// Reads `body` as a JSON `desc`: an empty body is the empty message; an error names the
    /// JSON path of the field at fault (`messages[0].at`), or `request` for the body as a whole.
    pub fn decode(&self, desc: MessageDescriptor, body: &[u8]) -> Result<DynamicMessage, ApiError> {
        decode_json(desc, body)
    }

    /// Calls the unary `method` with `request` and reads its one answer.
    pub async fn unary(
        &self,
        method: &MethodDescriptor,
        request: &DynamicMessage,
        caller: &Caller,
    ) -> Result<DynamicMessage, ApiError> {
        let response = self.call(method, request, caller).await?;
        let collected =
            response.into_body().collect().await.map_err(|error| {
                ApiError::new(Code::Internal, format!("the call failed: {error}"))
            })?;
        let trailers = collected.trailers().cloned();
        let mut frames = Frames::default();
        frames.extend(&collected.to_bytes());
        check_trailers(trailers.as_ref())?;
        let Some(bytes) = frames.next()? else {
            return Err(ApiError::new(
                Code::Internal,
                "the call ended without an answer",
            ));
        };
        decode_message(method.output(), bytes)
    }

    /// Starts the server-streaming `method` with `request`: its messages as they come, then,
    /// if it ends with an error, that error. The call is dropped when the receiver is.
    pub async fn open_stream(
        &self,
        method: &MethodDescriptor,
        request: &DynamicMessage,
        caller: &Caller,
    ) -> Result<mpsc::Receiver<Result<DynamicMessage, ApiError>>, ApiError> {
        let response = self.call(method, request, caller).await?;
        let output = method.output();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(async move {
            let mut body = response.into_body();
            let mut frames = Frames::default();
            loop {
                let frame = tokio::select! {
                    () = tx.closed() => return,
                    frame = body.frame() => frame,
                };
                let end = match frame {
                    None => Err(ApiError::new(
                        Code::Internal,
                        "the stream ended without a status",
                    )),
                    Some(Err(error)) => Err(ApiError::new(
                        Code::Unavailable,
                        format!("the stream failed: {error}"),
                    )),
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => {
                            frames.extend(&data);
                            loop {
                                let next = frames.next().and_then(|m| {
                                    m.map(|b| decode_message(output.clone(), b)).transpose()
                                });
                                match next {
                                    Ok(None) => break,
                                    Ok(Some(message)) => {
                                        if tx.send(Ok(message)).await.is_err() {
                                            return;
                                        }
                                    }
                                    Err(error) => {
                                        let _ = tx.send(Err(error)).await;
                                        return;
                                    }
                                }
                            }
                            continue;
                        }
                        Err(frame) => check_trailers(frame.trailers_ref()),
                    },
                };
                if let Err(error) = end {
                    let _ = tx.send(Err(error)).await;
                }
                return;
            }
        });
        Ok(rx)
    }

    /// Sends one framed request through the stack; a trailers-only refusal (auth, an unknown
    /// method) is an error here.
    async fn call(
        &self,
        method: &MethodDescriptor,
        request: &DynamicMessage,
        caller: &Caller,
    ) -> Result<http::Response<tonic::body::Body>, ApiError> {
        let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
        let payload = request.encode_to_vec();
        let length = u32::try_from(payload.len())
            .map_err(|_| ApiError::field("request", "is larger than 4 GiB"))?;
        let mut framed = Vec::with_capacity(payload.len() + 5);
        framed.push(0);
        framed.extend_from_slice(&length.to_be_bytes());
        framed.extend_from_slice(&payload);
        let body = tonic::body::Body::new(http_body_util::Full::new(Bytes::from(framed)));
        let mut http_request = http::Request::post(path)
            .header(header::CONTENT_TYPE, "application/grpc")
            .header(header::TE, "trailers")
            .body(body)
            .map_err(|error| ApiError::new(Code::Internal, error.to_string()))?;
        if let Some(authorization) = &caller.authorization {
            http_request
                .headers_mut()
                .insert(header::AUTHORIZATION, authorization.clone());
        }
        if let Some(id) = &caller.request_id {
            http_request
                .headers_mut()
                .insert("x-request-id", id.clone());
        }
        if let Some(principal) = &caller.principal {
            http_request
                .extensions_mut()
                .insert(Authenticated(principal.clone()));
        }
        let response = match self.grpc.clone().oneshot(http_request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        if let Some(status) = tonic::Status::from_header_map(response.headers())
            && status.code() != Code::Ok
        {
            return Err(ApiError::from_status(&status));
        }
        Ok(response)
    }
}

/// The descriptors of modbot's API and of gRPC health (for `/healthz`).
pub fn api_descriptors() -> DescriptorPool {
    let mut pool = DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET)
        .expect("modbot's own descriptor set is valid. This is a bug");
    pool.decode_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .expect("tonic-health's descriptor set is valid. This is a bug");
    pool
}

/// JSON as the proto3 mapping writes it, every field shown (defaults too: a person reading
/// `"enforced": false` should not have to know that an absent field means false).
pub fn to_json(message: &DynamicMessage) -> serde_json::Value {
    let options = SerializeOptions::new().skip_default_fields(false);
    message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .expect("a decoded message always has a JSON form. This is a bug")
}

/// See [`Rpc::decode`].
pub fn decode_json(desc: MessageDescriptor, body: &[u8]) -> Result<DynamicMessage, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DynamicMessage::new(desc));
    }
    let mut json = serde_json::Deserializer::from_slice(body);
    let mut track = serde_path_to_error::Track::new();
    let options = DeserializeOptions::new();
    let result = DynamicMessage::deserialize_with_options(
        desc,
        serde_path_to_error::Deserializer::new(&mut json, &mut track),
        &options,
    );
    let message = result.map_err(|error| {
        let message = clean_serde_message(&error.to_string());
        let path = track.path().to_string();
        let path = (!path.is_empty() && path != ".").then_some(path);
        // An unknown key fails before it joins the path: name it from the message.
        let unknown = message
            .strip_prefix("unrecognized field name '")
            .and_then(|rest| rest.split('\'').next());
        let field = match (path, unknown) {
            (Some(path), Some(name)) => format!("{path}.{name}"),
            (None, Some(name)) => name.to_owned(),
            (Some(path), None) => path,
            (None, None) => "request".to_owned(),
        };
        ApiError::field(field, message)
    })?;
    json.end()
        .map_err(|error| ApiError::field("request", clean_serde_message(&error.to_string())))?;
    Ok(message)
}

/// serde_json's message without its position suffix (the field path says where).
pub(super) fn clean_serde_message(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

fn decode_message(desc: MessageDescriptor, bytes: Bytes) -> Result<DynamicMessage, ApiError> {
    DynamicMessage::decode(desc, bytes).map_err(|error| {
        ApiError::new(
            Code::Internal,
            format!("the answer could not be read: {error}"),
        )
    })
}

fn check_trailers(trailers: Option<&http::HeaderMap>) -> Result<(), ApiError> {
    match trailers.and_then(tonic::Status::from_header_map) {
        Some(status) if status.code() == Code::Ok => Ok(()),
        Some(status) => Err(ApiError::from_status(&status)),
        None => Err(ApiError::new(
            Code::Internal,
            "the call ended without a status",
        )),
    }
}

/// gRPC length-prefixed messages, read from data as it arrives.
#[derive(Debug, Default)]
struct Frames {
    buffer: Vec<u8>,
}

impl Frames {
    fn extend(&mut self, data: &[u8]) {
        self.buffer.extend_from_slice(data);
    }

    /// The next whole message, if it has arrived.
    fn next(&mut self) -> Result<Option<Bytes>, ApiError> {
        if self.buffer.len() < 5 {
            return Ok(None);
        }
        if self.buffer[0] != 0 {
            return Err(ApiError::new(
                Code::Internal,
                "the answer is compressed, which the JSON edge never asks for",
            ));
        }
        let length = u32::from_be_bytes([
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
            self.buffer[4],
        ]) as usize;
        if length > MAX_RESPONSE_MESSAGE_BYTES {
            return Err(ApiError::new(
                Code::ResourceExhausted,
                format!("the answer is {length} bytes, more than the JSON edge reads"),
            ));
        }
        if self.buffer.len() < 5 + length {
            return Ok(None);
        }
        let message = Bytes::copy_from_slice(&self.buffer[5..5 + length]);
        self.buffer.drain(..5 + length);
        Ok(Some(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify_request() -> MessageDescriptor {
        api_descriptors()
            .get_message_by_name("modbot.v1.ClassifyRequest")
            .expect("in the API")
    }

    #[test]
    fn a_bad_field_is_named_by_its_json_path() {
        let error = decode_json(
            classify_request(),
            br#"{"messages": [{"channel": "c"}, {"text": 5}]}"#,
        )
        .expect_err("text is a string");
        assert_eq!(error.code, Code::InvalidArgument);
        assert_eq!(
            error.field.as_deref(),
            Some("messages[1].text"),
            "{error:?}"
        );

        let error = decode_json(classify_request(), br#"{"messages": [], "colour": 1}"#)
            .expect_err("unknown field");
        assert_eq!(error.field.as_deref(), Some("colour"), "{error:?}");

        let error = decode_json(classify_request(), b"[1, 2]").expect_err("not an object");
        assert_eq!(error.field.as_deref(), Some("request"), "{error:?}");

        let error = decode_json(classify_request(), b"{} trailing").expect_err("trailing");
        assert_eq!(error.field.as_deref(), Some("request"), "{error:?}");
    }

    #[test]
    fn json_round_trips_with_every_field_shown() {
        let message = decode_json(
            classify_request(),
            br#"{"messages": [{"channel": "c", "text": "hi", "user_id": "u1"}]}"#,
        )
        .expect("valid");
        let json = to_json(&message);
        assert_eq!(json["messages"][0]["userId"], "u1");
        assert_eq!(
            json["messages"][0]["messageId"], "",
            "defaults are shown: {json}"
        );
        assert!(decode_json(classify_request(), b"  ").is_ok(), "empty body");
    }

    #[test]
    fn frames_are_read_whole_across_chunks() {
        let mut frames = Frames::default();
        frames.extend(&[0, 0, 0, 0, 3, b'a']);
        assert_eq!(frames.next().expect("ok"), None);
        frames.extend(&[b'b', b'c', 0, 0, 0, 0, 0]);
        assert_eq!(frames.next().expect("ok").as_deref(), Some(&b"abc"[..]));
        assert_eq!(frames.next().expect("ok").as_deref(), Some(&b""[..]));
        assert_eq!(frames.next().expect("ok"), None);
        frames.extend(&[1, 0, 0, 0, 0]);
        assert!(frames.next().is_err(), "compressed");
    }
}
