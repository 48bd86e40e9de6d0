//! The paths the product's first description names, each the RPC it stands for with the
//! request shaped from the path, the query or the body:
//!
//! | path | RPC | request |
//! | --- | --- | --- |
//! | `POST /webhooks/chat-message` | `Moderation.Classify` | the body is one `ChatMessage`; the answer is its `Verdict` |
//! | `GET /admin/stats?channel=&since=` | `Admin.GetStats` | the query |
//! | `POST /admin/rules` | `Admin.UpsertRule` | the body, an `UpsertRuleRequest` |
//! | `POST /appeals` | `Appeals.FileAppeal` | the body, a `FileAppealRequest` |
//! | `GET /appeals/{id}` | `Appeals.GetAppeal` | the path's id |

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use tonic::Code;

use super::error::ApiError;
use super::{HttpState, call_json, caller, require_json};

/// One chat message in, its verdict out.
pub async fn chat_message(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        require_json(&headers)?;
        let message: serde_json::Value = serde_json::from_slice(&body).map_err(|error| {
            ApiError::field(
                "request",
                super::rpc::clean_serde_message(&error.to_string()),
            )
        })?;
        let request = serde_json::json!({ "messages": [message] }).to_string();
        let caller = caller(&state, &Method::POST, &headers)?;
        let mut response = call_json(
            &state,
            &caller,
            "/modbot.v1.Moderation/Classify",
            request.as_bytes(),
        )
        .await
        .map_err(unwrap_message_path)?;
        Ok::<_, ApiError>(response["verdicts"][0].take())
    }
    .await;
    respond(result)
}

/// The caller sent one message, not a list: `messages[0].text` is `text` to them.
fn unwrap_message_path(mut error: ApiError) -> ApiError {
    const PREFIX: &str = "messages[0].";
    if let Some(field) = &error.field {
        if let Some(inner) = field.strip_prefix(PREFIX) {
            error.field = Some(inner.to_owned());
            if let Some(message) = error.message.strip_prefix(PREFIX) {
                error.message = message.to_owned();
            }
        } else if field == "messages[0]" {
            error.field = Some("request".to_owned());
        }
    }
    error
}

/// `Admin.GetStats` from the query string.
pub async fn stats(
    State(state): State<HttpState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let request = serde_json::Value::Object(
        query
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect(),
    )
    .to_string();
    respond(get(&state, &headers, "/modbot.v1.Admin/GetStats", &request).await)
}

/// `Admin.UpsertRule` with the body.
pub async fn upsert_rule(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(post(&state, &headers, "/modbot.v1.Admin/UpsertRule", &body).await)
}

/// `Appeals.FileAppeal` with the body.
pub async fn file_appeal(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(post(&state, &headers, "/modbot.v1.Appeals/FileAppeal", &body).await)
}

/// `Appeals.GetAppeal` of the path's id.
pub async fn get_appeal(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let request = serde_json::json!({ "id": id }).to_string();
    respond(get(&state, &headers, "/modbot.v1.Appeals/GetAppeal", &request).await)
}

async fn get(
    state: &HttpState,
    headers: &HeaderMap,
    path: &str,
    request: &str,
) -> Result<serde_json::Value, ApiError> {
    let caller = caller(state, &Method::GET, headers)?;
    call_json(state, &caller, path, request.as_bytes()).await
}

async fn post(
    state: &HttpState,
    headers: &HeaderMap,
    path: &str,
    body: &[u8],
) -> Result<serde_json::Value, ApiError> {
    require_json(headers)?;
    let caller = caller(state, &Method::POST, headers)?;
    call_json(state, &caller, path, body).await
}

fn respond(result: Result<serde_json::Value, ApiError>) -> Response {
    match result {
        Ok(json) if json.is_null() => {
            ApiError::new(Code::Internal, "the call answered nothing").into_response()
        }
        Ok(json) => axum::Json(json).into_response(),
        Err(error) => error.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_message_error_names_the_field_inside_it() {
        let error = unwrap_message_path(ApiError::field("messages[0].text", "is required"));
        assert_eq!(error.field.as_deref(), Some("text"));
        assert_eq!(error.message, "text: is required");
        let error = unwrap_message_path(ApiError::field("messages[0]", "is not an object"));
        assert_eq!(error.field.as_deref(), Some("request"));
    }
}
