//! The one mapping from domain errors to gRPC statuses.
//!
//! Clients see a message that names what they can act on; internal details (SQL errors,
//! connection strings) go to the log only.

use tonic::Status;

use crate::store::StoreError;

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
        Status::invalid_argument(error.to_string())
    }
}

impl From<StoreError> for Status {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Connect { .. } | StoreError::Query(_) => {
                tracing::error!(%error, "database unavailable");
                Status::unavailable("the database is unavailable; retry later")
            }
            error => {
                tracing::error!(%error, "database error");
                Status::internal("internal database error")
            }
        }
    }
}

impl From<crate::actions::workflow::WorkflowError> for Status {
    fn from(error: crate::actions::workflow::WorkflowError) -> Self {
        use crate::actions::workflow::WorkflowError;
        match error {
            WorkflowError::NotFound(message) => Status::not_found(message),
            WorkflowError::FailedPrecondition(message) => Status::failed_precondition(message),
            WorkflowError::AlreadyExists(message) => Status::already_exists(message),
            WorkflowError::Invalid { field, message } => FieldError::new(field, message).into(),
            WorkflowError::Store(error) => error.into(),
        }
    }
}
