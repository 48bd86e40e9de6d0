//! Errors of the HTTP edge as JSON: the gRPC code's name, the message, and the path of the
//! field at fault when there is one.
//!
//! The body is the Connect protocol's error shape (`code`, `message`) with `field` added, and
//! the HTTP status is the Connect protocol's mapping of the code, so Connect clients read them
//! as they would any Connect server's:
//!
//! ```json
//! {"code": "invalid_argument", "message": "messages[0].text: is required", "field": "messages[0].text"}
//! ```

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tonic::Code;

use crate::edge::grpc::status::FIELD_METADATA;

/// One error answered as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The gRPC code.
    pub code: Code,
    /// What went wrong, for a person.
    pub message: String,
    /// The request field at fault (`messages[0].text`), when one is.
    pub field: Option<String>,
    /// Seconds before a retry may succeed (`Retry-After`), when known.
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    /// An error with `code` and `message`, naming no field.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
            retry_after_secs: None,
        }
    }

    /// `INVALID_ARGUMENT` naming `field`; the message is prefixed with the field's path, as
    /// the gRPC edge's are.
    pub fn field(field: impl Into<String>, message: impl std::fmt::Display) -> Self {
        let field = field.into();
        Self {
            code: Code::InvalidArgument,
            message: format!("{field}: {message}"),
            field: Some(field),
            retry_after_secs: None,
        }
    }

    /// The error a gRPC status becomes: same code and message, the field from the status's
    /// `modbot-field` metadata.
    pub fn from_status(status: &tonic::Status) -> Self {
        let field = status
            .metadata()
            .get(FIELD_METADATA)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let retry_after_secs = status
            .metadata()
            .get("retry-after-ms")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|ms| ms.div_ceil(1000).max(1));
        Self {
            code: status.code(),
            message: status.message().to_owned(),
            field,
            retry_after_secs,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        let mut body = serde_json::json!({
            "code": code_name(self.code),
            "message": self.message,
        });
        if let Some(field) = &self.field {
            body["field"] = serde_json::Value::String(field.clone());
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (http_status(self.code), axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// The gRPC code's name as the Connect protocol writes it (`invalid_argument`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "canceled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The HTTP status for a gRPC code (the Connect protocol's table).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_error_names_its_field_in_the_body_and_is_a_400() {
        let error = ApiError::field("messages[0].text", "is required");
        assert_eq!(
            error.body(),
            serde_json::json!({
                "code": "invalid_argument",
                "message": "messages[0].text: is required",
                "field": "messages[0].text",
            })
        );
        assert_eq!(http_status(error.code), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_status_keeps_its_field_and_retry_hint() {
        let mut status = tonic::Status::resource_exhausted("overloaded");
        status
            .metadata_mut()
            .insert("retry-after-ms", "1500".parse().expect("ascii"));
        let error = ApiError::from_status(&status);
        assert_eq!(error.retry_after_secs, Some(2));
        assert_eq!(error.field, None);
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }

    #[test]
    fn every_code_has_a_distinct_name() {
        let codes = [
            Code::Ok,
            Code::Cancelled,
            Code::Unknown,
            Code::InvalidArgument,
            Code::DeadlineExceeded,
            Code::NotFound,
            Code::AlreadyExists,
            Code::PermissionDenied,
            Code::ResourceExhausted,
            Code::FailedPrecondition,
            Code::Aborted,
            Code::OutOfRange,
            Code::Unimplemented,
            Code::Internal,
            Code::Unavailable,
            Code::DataLoss,
            Code::Unauthenticated,
        ];
        let names: std::collections::HashSet<_> = codes.iter().map(|c| code_name(*c)).collect();
        assert_eq!(names.len(), codes.len());
    }
}
