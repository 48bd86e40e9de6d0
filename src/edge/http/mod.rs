//! The HTTP edge: the moderator console, the JSON API, Server-Sent Events, `/openapi.json`,
//! `/healthz` and `/metrics`, on `http.addr` in the same process as gRPC.
//!
//! It holds no moderation logic and no role table of its own. Every API call — a JSON call
//! with a bearer token, a console page's call with its session, one of the seed's paths — is
//! turned into the gRPC call it stands for and sent through the gRPC server's own stack
//! ([`rpc`]), so it is authorised, validated, counted and traced exactly as the same call over
//! gRPC would be.
//!
//! | path | who may call |
//! | --- | --- |
//! | `POST /modbot.v1.<Service>/<Method>` (JSON), `GET` or `POST` of a server stream (SSE) | as the gRPC method: a bearer token, or a console session (with its CSRF token) |
//! | `POST /webhooks/chat-message`, `GET /admin/stats`, `POST /admin/rules`, `POST /appeals`, `GET /appeals/{id}` | as `Classify`, `GetStats`, `UpsertRule`, `FileAppeal`, `GetAppeal` |
//! | `GET /metrics` | as `Admin.GetStats` (the dedicated `metrics.addr` stays open for scrapers) |
//! | `POST /console/login` | anyone (rate-limited); only moderator and admin tokens get a session |
//! | `GET /console/session`, `POST /console/logout` | a session (logout: with its CSRF token) |
//! | `/`, `/assets/*`, `/openapi.json`, `/healthz` | anyone |
//!
//! Every response carries a strict Content-Security-Policy (no inline script or style, nothing
//! from another origin) and the usual hardening headers. Without tokens configured (a
//! loopback-only server), requests must name a loopback host, so a web page cannot reach the
//! server through DNS rebinding.

pub mod console;
pub mod error;
pub mod openapi;
mod public;
pub mod rpc;
mod seed;
pub mod session;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio_stream::StreamExt as _;
use tonic::Code;

use self::error::ApiError;
use self::rpc::{Caller, Rpc};
use self::session::{COOKIE, CSRF_HEADER, LoginError, Session, Sessions};
use crate::config::HttpConfig;
use crate::edge::grpc::auth::{Authenticator, Principal, authorize};

pub use self::rpc::GrpcService;

/// What every HTTP handler shares.
#[derive(Clone)]
pub struct HttpState {
    rpc: Rpc,
    sessions: Arc<Sessions>,
    authenticator: Arc<Authenticator>,
    secure_cookies: bool,
    openapi: Arc<String>,
}

impl HttpState {
    /// The HTTP edge over `grpc` (the gRPC server's stack), signing people in with
    /// `authenticator`'s tokens.
    pub fn new(config: &HttpConfig, grpc: GrpcService, authenticator: Arc<Authenticator>) -> Self {
        let rpc = Rpc::new(grpc);
        let openapi = Arc::new(openapi::document(rpc.pool()).to_string());
        Self {
            rpc,
            sessions: Arc::new(Sessions::new(config)),
            authenticator,
            secure_cookies: config.secure_cookies,
            openapi,
        }
    }
}

/// Every route of the HTTP edge; requests larger than `max_request_bytes` are refused.
pub fn router(state: HttpState, max_request_bytes: usize) -> Router {
    Router::new()
        .route("/", get(console::index))
        .route("/assets/{file}", get(console::asset))
        .route("/openapi.json", get(openapi_json))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/console/login", post(login))
        .route("/console/logout", post(logout))
        .route("/console/session", get(current_session))
        .route("/webhooks/chat-message", post(seed::chat_message))
        .route("/admin/stats", get(seed::stats))
        .route("/admin/rules", post(seed::upsert_rule))
        .route("/appeals", post(seed::file_appeal))
        .route("/appeals/{id}", get(seed::get_appeal))
        .route("/public/{channel}", get(public::page))
        .route("/public/{channel}/log.json", get(public::json))
        .fallback(api)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard_host,
        ))
        .layer(axum::middleware::from_fn(security_headers))
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// The Content-Security-Policy of every response: scripts, styles and connections from this
/// origin only, no inline code, no framing, no plugins.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            header::HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Without tokens every caller is trusted, which is safe only while the callers are on this
/// machine: a request naming another host (a DNS-rebinding page in a browser) is refused.
async fn guard_host(State(state): State<HttpState>, request: Request, next: Next) -> Response {
    if !state.authenticator.enabled() {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !is_loopback_host(host) {
            return ApiError::new(
                Code::PermissionDenied,
                format!(
                    "this server has no tokens and answers only requests addressed to a \
                     loopback host (localhost, 127.0.0.1, [::1]), not `{host}`"
                ),
            )
            .into_response();
        }
    }
    next.run(request).await
}

fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Who is calling, from the request's headers: a bearer token is passed on as it is; a
/// session cookie becomes its principal (a state-changing request must carry the session's
/// CSRF token); neither is an anonymous call, which the auth layer answers as gRPC would.
fn caller(state: &HttpState, method: &Method, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let request_id = headers.get("x-request-id").cloned();
    if let Some(authorization) = headers.get(header::AUTHORIZATION) {
        return Ok(Caller {
            authorization: Some(authorization.clone()),
            principal: None,
            request_id,
        });
    }
    let Some(session) = session_of(state, headers)? else {
        return Ok(Caller {
            request_id,
            ..Caller::default()
        });
    };
    if !matches!(*method, Method::GET | Method::HEAD) {
        check_csrf(&session, headers)?;
    }
    Ok(Caller {
        authorization: None,
        principal: Some(session.principal),
        request_id,
    })
}

/// The session the request's cookie names: `None` without a cookie, an error for one that
/// has ended.
fn session_of(state: &HttpState, headers: &HeaderMap) -> Result<Option<Session>, ApiError> {
    let Some(id) = cookie(headers, COOKIE) else {
        return Ok(None);
    };
    state
        .sessions
        .get(&id, Instant::now())
        .map(Some)
        .ok_or_else(|| {
            ApiError::new(
                Code::Unauthenticated,
                "the console session has ended; sign in again",
            )
        })
}

fn check_csrf(session: &Session, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if session::csrf_matches(session, presented) {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::PermissionDenied,
            "a console request that changes something must carry the session's CSRF token in \
             X-CSRF-Token",
        ))
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

/// A JSON POST must say so: a form or `text/plain` post (what a cross-site page can send
/// without a CORS preflight) is refused before anything is read.
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::field(
            "Content-Type",
            format!("must be application/json, not `{content_type}`"),
        ))
    }
}

/// Calls the unary method at `path` with the JSON `body` and answers its JSON.
async fn call_json(
    state: &HttpState,
    caller: &Caller,
    path: &str,
    body: &[u8],
) -> Result<serde_json::Value, ApiError> {
    let method = state
        .rpc
        .method(path)
        .ok_or_else(|| ApiError::new(Code::Unimplemented, format!("no method {path}")))?;
    let request = state.rpc.decode(method.input(), body)?;
    if let Some(principal) = &caller.principal {
        log_console_call(principal, path);
    }
    let response = state.rpc.unary(&method, &request, caller).await?;
    Ok(rpc::to_json(&response))
}

/// Console calls that change something are logged with the moderator's name (the records
/// they create name it too: `requested_by`, `resolved_by`).
fn log_console_call(principal: &Principal, path: &str) {
    let read_only = path.rsplit('/').next().is_some_and(|method| {
        ["Get", "List", "Watch", "Check"]
            .iter()
            .any(|prefix| method.starts_with(prefix))
    });
    if !read_only {
        tracing::info!(moderator = %principal.name, method = path, "console action");
    }
}

/// `/modbot.v1.<Service>/<Method>`: any RPC of the API (and gRPC health) as JSON.
async fn api(
    State(state): State<HttpState>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match api_call(&state, &method, &uri, &query, &headers, &body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn api_call(
    state: &HttpState,
    http_method: &Method,
    uri: &Uri,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let path = uri.path();
    let Some(method) = state.rpc.method(path) else {
        return Err(ApiError::new(
            Code::NotFound,
            format!("no page or method at {path}"),
        ));
    };
    if method.is_client_streaming() {
        return Err(ApiError::new(
            Code::Unimplemented,
            format!("{path} streams in both directions: call it over gRPC"),
        ));
    }
    let caller = caller(state, http_method, headers)?;
    if method.is_server_streaming() {
        // EventSource can only GET: the request is then the `message` query parameter.
        let request = match *http_method {
            Method::GET => {
                let json = query.get("message").map_or("", String::as_str);
                state.rpc.decode(method.input(), json.as_bytes())?
            }
            Method::POST => {
                require_json(headers)?;
                state.rpc.decode(method.input(), body)?
            }
            _ => return Err(method_not_allowed(path, "GET or POST")),
        };
        let receiver = state.rpc.open_stream(&method, &request, &caller).await?;
        let events = tokio_stream::wrappers::ReceiverStream::new(receiver).map(|item| {
            let event = match item {
                Ok(message) => Event::default().data(rpc::to_json(&message).to_string()),
                Err(error) => Event::default()
                    .event("error")
                    .data(error.body().to_string()),
            };
            Ok::<_, std::convert::Infallible>(event)
        });
        return Ok(Sse::new(events)
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    if *http_method != Method::POST {
        return Err(method_not_allowed(path, "POST"));
    }
    require_json(headers)?;
    let json = call_json(state, &caller, path, body).await?;
    Ok(axum::Json(json).into_response())
}

fn method_not_allowed(path: &str, allowed: &str) -> ApiError {
    ApiError::new(
        Code::Unimplemented,
        format!("{path} takes {allowed} with a JSON body"),
    )
}

async fn openapi_json(State(state): State<HttpState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.as_str().to_owned(),
    )
        .into_response()
}

/// `/healthz`: gRPC health's answers for the server and the model, as JSON; 503 unless the
/// server is `SERVING` (the model's status is reported, not required: without it decisions
/// are rules-only).
async fn healthz(State(state): State<HttpState>) -> Response {
    let check = |service: &'static str| {
        let state = state.clone();
        async move {
            let body = serde_json::json!({ "service": service }).to_string();
            match call_json(
                &state,
                &Caller::default(),
                "/grpc.health.v1.Health/Check",
                body.as_bytes(),
            )
            .await
            {
                Ok(json) => json["status"].as_str().unwrap_or("UNKNOWN").to_owned(),
                Err(error) => format!("UNKNOWN ({})", error.message),
            }
        }
    };
    let server = check("").await;
    let model = check(crate::edge::grpc::MODEL_HEALTH_NAME).await;
    let status = if server == "SERVING" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(serde_json::json!({ "status": server, "model": model })),
    )
        .into_response()
}

/// `/metrics`: the Prometheus text, for whoever may read `Admin.GetStats`.
async fn metrics(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    const AS: &str = "/modbot.v1.Admin/GetStats";
    let allowed = match session_of(&state, &headers) {
        Err(error) => Err(error),
        Ok(Some(session)) if !headers.contains_key(header::AUTHORIZATION) => {
            authorize(AS, session.principal)
                .map(|_| ())
                .map_err(|s| ApiError::from_status(&s))
        }
        Ok(_) => state
            .authenticator
            .check(AS, &headers)
            .map(|_| ())
            .map_err(|s| ApiError::from_status(&s)),
    };
    if let Err(error) = allowed {
        return error.into_response();
    }
    match crate::telemetry::prometheus_handle() {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => ApiError::new(
            Code::Unavailable,
            "metrics are not recorded in this process",
        )
        .into_response(),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    #[serde(default)]
    token: String,
}

/// The session as the console page sees it: who, which roles, the CSRF token.
fn session_json(session: &Session) -> serde_json::Value {
    let roles: Vec<&str> = crate::config::Role::ALL
        .iter()
        .filter(|r| session.principal.roles.contains(**r))
        .map(|r| r.name())
        .collect();
    let remaining = session.expires.saturating_duration_since(Instant::now());
    serde_json::json!({
        "name": session.principal.name,
        "roles": roles,
        "csrfToken": session.csrf,
        "expiresInSecs": remaining.as_secs(),
    })
}

async fn login(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(error) = require_json(&headers) {
        return error.into_response();
    }
    let request: LoginRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => return ApiError::field("token", error).into_response(),
    };
    match state.sessions.login(
        &state.authenticator,
        &request.token,
        peer.ip(),
        Instant::now(),
    ) {
        Ok((id, session)) => {
            tracing::info!(moderator = %session.principal.name, client = %peer.ip(), "console login");
            let secure = state.secure_cookies || forwarded_https(&headers);
            let cookie = format!(
                "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
                state.sessions.ttl().as_secs(),
                if secure { "; Secure" } else { "" }
            );
            let mut response = axum::Json(session_json(&session)).into_response();
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Err(LoginError::Invalid) => {
            tracing::info!(client = %peer.ip(), "console login refused: invalid token");
            ApiError::new(Code::Unauthenticated, "that token is not valid").into_response()
        }
        Err(LoginError::NotAModerator { name, roles }) => {
            tracing::info!(token = %name, client = %peer.ip(), "console login refused: role");
            ApiError::new(
                Code::PermissionDenied,
                format!(
                    "the console is for moderators and admins; the token `{name}` has: {roles}"
                ),
            )
            .into_response()
        }
        Err(LoginError::TooMany { retry_after }) => {
            tracing::warn!(client = %peer.ip(), "console login refused: too many attempts");
            let mut error = ApiError::new(
                Code::ResourceExhausted,
                "too many failed sign-ins from this address; wait a minute",
            );
            error.retry_after_secs = Some(retry_after.as_secs().max(1));
            error.into_response()
        }
    }
}

fn forwarded_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

async fn logout(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    let session = match session_of(&state, &headers) {
        Ok(Some(session)) => session,
        Ok(None) => {
            return ApiError::new(Code::Unauthenticated, "not signed in").into_response();
        }
        Err(error) => return error.into_response(),
    };
    if let Err(error) = check_csrf(&session, &headers) {
        return error.into_response();
    }
    if let Some(id) = cookie(&headers, COOKIE) {
        state.sessions.logout(&id);
    }
    tracing::info!(moderator = %session.principal.name, "console logout");
    let mut response = axum::Json(serde_json::json!({})).into_response();
    let expired = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(value) = HeaderValue::from_str(&expired) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn current_session(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    match session_of(&state, &headers) {
        Ok(Some(session)) => axum::Json(session_json(&session)).into_response(),
        Ok(None) => ApiError::new(Code::Unauthenticated, "not signed in").into_response(),
        Err(error) => error.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "127.1.2.3",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "",
            "evil.example",
            "evil.example:8080",
            "10.0.0.1:8080",
            "localhost.evil",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; modbot_session=xyz"),
        );
        assert_eq!(cookie(&headers, COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie(&headers, "b"), None);
    }

    #[test]
    fn only_json_posts_are_read() {
        let mut headers = HeaderMap::new();
        assert!(require_json(&headers).is_err());
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(
            require_json(&headers).expect_err("plain").field.as_deref(),
            Some("Content-Type")
        );
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(require_json(&headers).is_ok());
    }
}
