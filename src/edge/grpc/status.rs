//! The one mapping from domain errors to gRPC statuses.
//!
//! Clients see a message that names what they can act on; internal details (SQL errors,
//! connection strings) go to the log only.

use tonic::Status;

use crate::infra::store::{FailureKind, StoreError};

/// The status metadata (trailer) naming the request field an `INVALID_ARGUMENT` is about, in
/// proto field names (`messages[2].text`), so a client (the JSON edge among them) need not
/// parse the message for it.
pub const FIELD_METADATA: &str = "modbot-field";

/// `INVALID_ARGUMENT` with `message`, naming `field` in its metadata.
fn invalid_field(field: &str, message: String) -> Status {
    let mut status = Status::invalid_argument(message);
    // A path that cannot be a header value (never one of ours) is left out, not fatal.
    if let Ok(value) = field.parse() {
        status.metadata_mut().insert(FIELD_METADATA, value);
    }
    status
}

/// A request field that failed validation. Becomes `INVALID_ARGUMENT` with the field's path
/// (`messages[2].text`) leading the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Path of the field in the request, in proto field names.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// A field error.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<FieldError> for Status {
    fn from(error: FieldError) -> Self {
        invalid_field(&error.field, error.to_string())
    }
}

impl From<StoreError> for Status {
    /// Only a transient failure says "retry later": a write the database refuses for good
    /// (a constraint, a value it cannot hold) would fail the same way every time, and a
    /// client retrying it would only add load.
    fn from(error: StoreError) -> Self {
        match error.kind() {
            FailureKind::Transient => {
                tracing::error!(%error, "database unavailable");
                Status::unavailable("the database is unavailable; retry later")
            }
            FailureKind::Constraint => {
                tracing::warn!(%error, "the database refused a write");
                Status::failed_precondition(
                    "the database refused the write: it conflicts with stored data; \
                     retrying will not help",
                )
            }
            FailureKind::InvalidData => {
                tracing::warn!(%error, "the database refused a value");
                invalid_field(
                    "request",
                    "request: a value cannot be stored by the database; retrying will not help"
                        .to_owned(),
                )
            }
            FailureKind::Internal => {
                tracing::error!(%error, "database error");
                Status::internal("internal database error")
            }
        }
    }
}

impl From<crate::service::actions::workflow::WorkflowError> for Status {
    fn from(error: crate::service::actions::workflow::WorkflowError) -> Self {
        use crate::service::actions::workflow::WorkflowError;
        match error {
            WorkflowError::NotFound(message) => Status::not_found(message),
            WorkflowError::FailedPrecondition(message) => Status::failed_precondition(message),
            WorkflowError::AlreadyExists(message) => Status::already_exists(message),
            WorkflowError::Invalid { field, message } => FieldError::new(field, message).into(),
            WorkflowError::Store(error) => error.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tonic::Code;

    use super::*;

    #[test]
    fn a_field_error_names_its_field_in_the_metadata() {
        let status = Status::from(FieldError::new("messages[2].text", "is required"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "messages[2].text: is required");
        assert_eq!(
            status
                .metadata()
                .get(FIELD_METADATA)
                .map(|v| v.to_str().ok()),
            Some(Some("messages[2].text"))
        );
    }

    #[test]
    fn only_transient_store_errors_say_retry_later() {
        let timeout = Status::from(StoreError::Timeout(Duration::from_secs(10)));
        assert_eq!(timeout.code(), Code::Unavailable);
        let corrupt = Status::from(StoreError::Corrupt {
            id: "a1".into(),
            message: "kind `x`".into(),
        });
        assert_eq!(corrupt.code(), Code::Internal);
        assert!(
            !corrupt.message().contains("kind"),
            "details stay in the log"
        );
    }
}
