//! Who may call: bearer tokens mapped to roles, checked by a tower layer around every route,
//! and the server's TLS configuration.
//!
//! [`AuthLayer`] wraps tonic's router. For each request it looks the gRPC path up in
//! [`access`], the one table of which roles may call which method; reads
//! `authorization: Bearer <token>`; hashes the token with SHA-256 and compares the digest with
//! every configured one in constant time; and either answers the call itself
//! (`UNAUTHENTICATED`, `PERMISSION_DENIED`) or passes it on with a [`Principal`] in its
//! extensions, for handlers to record who asked. Health and reflection are open; a
//! `modbot.v1` method missing from the table is denied to everyone (default deny).
//!
//! A `bridge` credential is further bound to bridge ids and channels: [`check_hello`] refuses
//! a `StreamModerate` hello outside them, and only a bridge credential (or, without tokens,
//! anyone) may report moderators' actions seen in chat ([`Principal::reports_chat_actions`]).
//!
//! Tokens are never logged and never appear in a status: messages name the method, the roles
//! and the token's *name*.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use subtle::{ConditionallySelectable, ConstantTimeEq};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::{Code, Status};

use crate::config::{BridgeBinding, Credential, GrpcConfig, Role, Roles, token_digest};
use crate::proto::Hello;

/// Who made a request: the token it carried, by name, with what it may do. Handlers read it
/// from the request's extensions to record who asked for an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name (never the token itself).
    pub name: String,
    /// The token's roles.
    pub roles: Roles,
    /// For a `bridge` credential, what it may register as.
    pub binding: Option<Arc<BridgeBinding>>,
}

impl Principal {
    /// Whether this caller may report moderators' actions seen in chat (`ModeratorAction`
    /// events, which record human actions and training labels): only a bridge may.
    pub fn reports_chat_actions(&self) -> bool {
        self.roles.contains(Role::Bridge)
    }
}

/// Whether the caller may report moderators' actions seen in chat: a bridge, or anyone on a
/// server without tokens.
pub fn may_report_chat_actions(principal: Option<&Principal>) -> bool {
    principal.is_none_or(Principal::reports_chat_actions)
}

/// Checks a `StreamModerate` hello against the caller's binding: a bridge credential may name
/// only its bridge ids and channels (`PERMISSION_DENIED` naming the refused field and value).
/// Without tokens (`None`) and for unbound callers (`admin`) every hello passes.
pub fn check_hello(principal: Option<&Principal>, hello: &Hello) -> Result<(), Status> {
    let Some(principal) = principal else {
        return Ok(());
    };
    let Some(binding) = &principal.binding else {
        return Ok(());
    };
    if !binding.allows_bridge_id(&hello.bridge_id) {
        return Err(Status::permission_denied(format!(
            "hello.bridge_id: `{}` is not a bridge id the credential `{}` is bound to ({})",
            hello.bridge_id,
            principal.name,
            binding.bridge_ids.join(", ")
        )));
    }
    if let Some((i, channel)) = hello
        .channels
        .iter()
        .enumerate()
        .find(|(_, channel)| !binding.allows_channel(channel))
    {
        return Err(Status::permission_denied(format!(
            "hello.channels[{i}]: `{channel}` is not a channel the credential `{}` is bound to \
             ({})",
            principal.name,
            binding.channels.join(", ")
        )));
    }
    Ok(())
}

/// The name of the credential that made `request`, or empty when the server runs without
/// tokens.
pub fn principal_name<T>(request: &tonic::Request<T>) -> String {
    request
        .extensions()
        .get::<Principal>()
        .map(|p| p.name.clone())
        .unwrap_or_default()
}

/// What a gRPC path needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a token: health (orchestrators' probes) and reflection (grpcurl).
    Open,
    /// A valid token holding one of these roles. `Roles::NONE` (a path not in the table) is a
    /// method nobody may call.
    Roles(Roles),
}

/// Prefixes of the services that need no token.
const OPEN_SERVICES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    // Public logs, of the channels whose policy makes them public (the handler checks).
    "/modbot.v1.Transparency/",
];

/// The per-RPC table: who may call `path` (`/modbot.v1.Service/Method`).
///
/// `admin` may call every method in the table; a path that is not in it is denied even to
/// `admin`, so a new RPC stays closed until it is given its roles here (the tests check that
/// every method of the descriptor set is).
pub fn access(path: &str) -> Access {
    use Role::{Appeals, Bridge, Classifier, Moderator};
    if OPEN_SERVICES.iter().any(|prefix| path.starts_with(prefix)) {
        return Access::Open;
    }
    let roles: &[Role] = match path {
        "/modbot.v1.Moderation/Classify" => &[Classifier],
        "/modbot.v1.Moderation/StreamModerate" => &[Bridge],

        "/modbot.v1.Actions/ExecuteAction"
        | "/modbot.v1.Actions/GetAction"
        | "/modbot.v1.Actions/ListActions" => &[Moderator],

        "/modbot.v1.Appeals/FileAppeal"
        | "/modbot.v1.Appeals/GetAppeal"
        | "/modbot.v1.Appeals/ListAppeals" => &[Moderator, Appeals],
        "/modbot.v1.Appeals/ResolveAppeal" => &[Moderator],

        "/modbot.v1.Admin/ListRules"
        | "/modbot.v1.Admin/BacktestRule"
        | "/modbot.v1.Admin/GetPolicy"
        | "/modbot.v1.Admin/GetStats"
        | "/modbot.v1.Admin/GetUser"
        | "/modbot.v1.Admin/Nuke"
        | "/modbot.v1.Admin/Aegis"
        | "/modbot.v1.Admin/WatchDecisions" => &[Moderator],
        "/modbot.v1.Admin/GetModelInfo" => &[Classifier, Bridge, Moderator],
        "/modbot.v1.Review/ListReviews" | "/modbot.v1.Review/ResolveReview" => &[Moderator],
        // A classifier sees only the items its own calls held (the handlers filter).
        "/modbot.v1.Review/GetReview" | "/modbot.v1.Review/WatchReviews" => {
            &[Classifier, Moderator]
        }
        // Moderators may see what could be tried; only admins change what decides.
        "/modbot.v1.Admin/ListModelVersions" => &[Moderator],
        "/modbot.v1.Admin/UpsertRule"
        | "/modbot.v1.Admin/DeleteRule"
        | "/modbot.v1.Admin/SetPolicy"
        | "/modbot.v1.Admin/TryModel"
        | "/modbot.v1.Admin/EndModelTrial"
        | "/modbot.v1.Admin/PromoteModel"
        | "/modbot.v1.Admin/RollbackModel" => &[],

        _ => return Access::Roles(Roles::NONE),
    };
    Access::Roles(Roles::of(roles).with(Role::Admin))
}

/// The configured tokens, and the check of one request against them.
#[derive(Debug)]
pub struct Authenticator {
    credentials: Vec<Credential>,
}

impl Authenticator {
    /// Checks requests against `credentials`; with none, every request passes (a server bound
    /// to loopback only, see `config::refuse_open_bind`).
    pub fn new(credentials: Vec<Credential>) -> Self {
        Self { credentials }
    }

    /// Whether any token is configured.
    pub fn enabled(&self) -> bool {
        !self.credentials.is_empty()
    }

    /// Decides a request to `path` with `headers`: `Ok(Some(principal))` for a token allowed
    /// to call it, `Ok(None)` when no token is needed, or the status to answer with.
    pub fn check(
        &self,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Result<Option<Principal>, Status> {
        if !self.enabled() {
            return Ok(None);
        }
        if access(path) == Access::Open {
            return Ok(None);
        }
        let credential = self.authenticate(headers)?;
        authorize(path, principal_of(credential)).map(Some)
    }

    /// The principal whose token is `token`, if any (a console login). Without tokens
    /// configured, nobody is identified this way.
    pub fn identify(&self, token: &[u8]) -> Option<Principal> {
        self.find(token).map(principal_of)
    }

    /// The credential whose token `headers` carry.
    fn authenticate(&self, headers: &http::HeaderMap) -> Result<&Credential, Status> {
        let invalid = || Status::unauthenticated("invalid bearer token");
        let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
        let Some(value) = values.next() else {
            return Err(Status::unauthenticated("missing bearer token"));
        };
        // Two credentials in one request are ambiguous: refused rather than guessed between.
        if values.next().is_some() {
            return Err(invalid());
        }
        let token = bearer_token(value.as_bytes()).ok_or_else(invalid)?;
        self.find(token).ok_or_else(invalid)
    }

    /// The credential for `token`, in time independent of which one matches (or whether any
    /// does): the digest is compared with every credential's, without early exit, and the
    /// match is selected without a branch.
    fn find(&self, token: &[u8]) -> Option<&Credential> {
        let digest = token_digest(token);
        let mut index = u32::MAX;
        for (i, credential) in self.credentials.iter().enumerate() {
            let i = u32::try_from(i).expect("fewer than 2^32 tokens. This is a bug");
            index.conditional_assign(&i, credential.digest().ct_eq(&digest));
        }
        self.credentials.get(usize::try_from(index).ok()?)
    }
}

fn principal_of(credential: &Credential) -> Principal {
    Principal {
        name: credential.name.clone(),
        roles: credential.roles,
        binding: credential.binding.clone(),
    }
}

/// Whether `principal` may call `path`: the principal back, or `PERMISSION_DENIED` naming the
/// roles that may.
pub fn authorize(path: &str, principal: Principal) -> Result<Principal, Status> {
    let allowed = match access(path) {
        Access::Open => return Ok(principal),
        Access::Roles(roles) => roles,
    };
    if principal.roles.intersects(allowed) {
        return Ok(principal);
    }
    let message = if allowed.is_empty() {
        format!("{path} is not a method any role may call")
    } else {
        format!(
            "{path} may be called by the roles: {allowed}; the token `{}` has: {}",
            principal.name, principal.roles
        )
    };
    Err(Status::permission_denied(message))
}

/// A caller another edge in this process has already authenticated (a console session,
/// `edge::http`), put in a request's extensions instead of a bearer token. Only code in this
/// process can set extensions; nothing arriving from the network becomes one. [`AuthService`]
/// still checks its roles against the method, as for a token.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Principal);

/// The token of an `authorization` header value `Bearer <token>` (the scheme is
/// case-insensitive, RFC 7235), or `None` for anything else.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if value.len() <= SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let token = value[SCHEME.len()..].trim_ascii();
    (!token.is_empty() && !token.contains(&b' ')).then_some(token)
}

/// The tower layer that puts [`AuthService`] around tonic's router
/// (`Server::builder().layer(AuthLayer::new(..))`).
#[derive(Debug, Clone)]
pub struct AuthLayer {
    authenticator: Arc<Authenticator>,
}

impl AuthLayer {
    /// A layer checking requests against `credentials` (none: everything passes).
    pub fn new(credentials: Vec<Credential>) -> Self {
        Self {
            authenticator: Arc::new(Authenticator::new(credentials)),
        }
    }

    /// The tokens this layer checks, for an edge that logs people in with them.
    pub fn authenticator(&self) -> Arc<Authenticator> {
        Arc::clone(&self.authenticator)
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            authenticator: Arc::clone(&self.authenticator),
        }
    }
}

/// Checks each request's bearer token before the wrapped service sees it.
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    authenticator: Arc<Authenticator>,
}

/// The response future of [`AuthService`]: the inner service's, or an immediate refusal.
/// Boxed: one allocation per call is nothing beside a gRPC call's, and it spares an
/// either-future with pin projection.
pub type AuthFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for AuthService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = AuthFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let decision = match request.extensions_mut().remove::<Authenticated>() {
            Some(Authenticated(principal)) => authorize(request.uri().path(), principal).map(Some),
            None => self
                .authenticator
                .check(request.uri().path(), request.headers()),
        };
        match decision {
            Ok(principal) => {
                if let Some(principal) = principal {
                    request.extensions_mut().insert(principal);
                }
                Box::pin(self.inner.call(request))
            }
            Err(status) => {
                let code = match status.code() {
                    Code::Unauthenticated => "unauthenticated",
                    _ => "permission_denied",
                };
                metrics::counter!("modbot_auth_rejected_total", "code" => code).increment(1);
                let path = request.uri().path();
                tracing::info!(path, code, reason = status.message(), "call refused");
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// Why the TLS configuration could not be loaded. Each names the key and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("TLS: cannot read {key} {path}: {source}")]
    Read {
        /// The configuration key (`grpc.tls_cert_file`, ...).
        key: &'static str,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file was read but is not what the key needs.
    #[error("TLS: {key} {path}: {message}")]
    Invalid {
        /// The configuration key (or keys, for a certificate that does not match its key).
        key: &'static str,
        /// The file (or files).
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// The server's TLS configuration from `grpc.tls_*`, checked now (files read, PEM parsed, the
/// key matching the certificate), or `None` for plaintext.
pub fn tls_config(grpc: &GrpcConfig) -> Result<Option<ServerTlsConfig>, TlsError> {
    if !grpc.tls_enabled() {
        return Ok(None);
    }
    let read = |key: &'static str, path: &std::path::Path, marker: &str, what: &str| {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
            key,
            path: shown.clone(),
            source,
        })?;
        // tonic's PEM reader skips what it does not recognise, so a file with no PEM block
        // of the right kind would otherwise fail later with a message naming no file.
        if !String::from_utf8_lossy(&bytes).contains(marker) {
            return Err(TlsError::Invalid {
                key,
                path: shown,
                message: format!("no PEM {what} in it (a `{marker}` block)"),
            });
        }
        Ok(bytes)
    };
    let cert = read(
        "grpc.tls_cert_file",
        &grpc.tls_cert_file,
        "-----BEGIN CERTIFICATE-----",
        "certificate",
    )?;
    let key = read(
        "grpc.tls_key_file",
        &grpc.tls_key_file,
        "PRIVATE KEY-----",
        "private key",
    )?;
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(cert, key))
        // A client that connects and never finishes its handshake must not hold a slot.
        .timeout(std::time::Duration::from_secs(10));
    // Building the acceptor is what parses and checks the PEM: done once for the identity
    // alone, so a failure names the right files.
    if let Err(error) = tonic::transport::Server::builder().tls_config(tls.clone()) {
        return Err(TlsError::Invalid {
            key: "grpc.tls_cert_file / grpc.tls_key_file",
            path: format!(
                "{} / {}",
                grpc.tls_cert_file.display(),
                grpc.tls_key_file.display()
            ),
            message: error_chain(&error),
        });
    }
    if grpc.tls_client_ca_file.as_os_str().is_empty() {
        return Ok(Some(tls));
    }
    let ca = read(
        "grpc.tls_client_ca_file",
        &grpc.tls_client_ca_file,
        "-----BEGIN CERTIFICATE-----",
        "certificate",
    )?;
    let tls = tls.client_ca_root(Certificate::from_pem(ca));
    if let Err(error) = tonic::transport::Server::builder().tls_config(tls.clone()) {
        return Err(TlsError::Invalid {
            key: "grpc.tls_client_ca_file",
            path: grpc.tls_client_ca_file.display().to_string(),
            message: error_chain(&error),
        });
    }
    Ok(Some(tls))
}

/// An error and its sources on one line (tonic's transport error says only "transport
/// error" itself).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for value in values {
            map.append(http::header::AUTHORIZATION, value.parse().unwrap());
        }
        map
    }

    fn authenticator() -> Authenticator {
        Authenticator::new(vec![
            Credential::new(
                "backend",
                Roles::of(&[Role::Classifier]),
                b"service-token-0123456789",
            ),
            Credential::new(
                "mod-tools",
                Roles::of(&[Role::Moderator, Role::Appeals]),
                b"moderator-token-0123456789",
            ),
        ])
    }

    #[test]
    fn bearer_header_forms() {
        // (header value, the token it carries)
        let cases: &[(&[u8], Option<&[u8]>)] = &[
            (b"Bearer abc", Some(b"abc")),
            (b"bearer abc", Some(b"abc")),
            (b"BEARER  abc ", Some(b"abc")),
            (b"Bearer ", None),
            (b"Bearer", None),
            (b"Basic abc", None),
            (b"Bearerabc", None),
            (b"Bearer a b", None),
            (b"abc", None),
        ];
        for (value, expected) in cases {
            assert_eq!(
                bearer_token(value),
                *expected,
                "{}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn checks_name_the_outcome() {
        let auth = authenticator();
        let classify = "/modbot.v1.Moderation/Classify";
        // (path, authorization headers, expected code or the principal's name)
        type Case<'a> = (&'a str, &'a [&'a str], Result<Option<&'a str>, Code>);
        let cases: &[Case] = &[
            (
                classify,
                &["Bearer service-token-0123456789"],
                Ok(Some("backend")),
            ),
            (classify, &[], Err(Code::Unauthenticated)),
            (
                classify,
                &["Bearer wrong-token-0123456789"],
                Err(Code::Unauthenticated),
            ),
            (
                classify,
                &["Basic service-token-0123456789"],
                Err(Code::Unauthenticated),
            ),
            (
                classify,
                &[
                    "Bearer service-token-0123456789",
                    "Bearer service-token-0123456789",
                ],
                Err(Code::Unauthenticated),
            ),
            (
                classify,
                &["Bearer moderator-token-0123456789"],
                Err(Code::PermissionDenied),
            ),
            (
                "/modbot.v1.Appeals/FileAppeal",
                &["Bearer moderator-token-0123456789"],
                Ok(Some("mod-tools")),
            ),
            (
                "/modbot.v1.Admin/Nope",
                &["Bearer moderator-token-0123456789"],
                Err(Code::PermissionDenied),
            ),
            ("/other.Service/Method", &[], Err(Code::Unauthenticated)),
            ("/grpc.health.v1.Health/Check", &[], Ok(None)),
            (
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                &[],
                Ok(None),
            ),
        ];
        for (path, values, expected) in cases {
            let got = auth.check(path, &headers(values));
            match (got, expected) {
                (Ok(principal), Ok(name)) => {
                    assert_eq!(
                        principal.map(|p| p.name).as_deref(),
                        *name,
                        "{path} {values:?}"
                    )
                }
                (Err(status), Err(code)) => {
                    assert_eq!(status.code(), *code, "{path} {values:?}: {status:?}");
                    assert!(!status.message().contains("token-0123456789"), "{status:?}");
                }
                (got, expected) => panic!("{path} {values:?}: {got:?}, expected {expected:?}"),
            }
        }
    }

    /// Answers with the name of the principal it was handed (or `-`).
    #[derive(Clone)]
    struct Echo;

    impl tower::Service<http::Request<()>> for Echo {
        type Response = http::Response<String>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<()>) -> Self::Future {
            let name = request
                .extensions()
                .get::<Principal>()
                .map_or("-".to_owned(), |p| p.name.clone());
            std::future::ready(Ok(http::Response::new(name)))
        }
    }

    #[tokio::test]
    async fn the_layer_hands_on_the_principal_or_answers_itself() {
        use tower::{Layer as _, Service as _};
        let layer = AuthLayer {
            authenticator: Arc::new(authenticator()),
        };
        let mut service = layer.layer(Echo);
        let request = |path: &str, token: Option<&str>| {
            let mut builder = http::Request::builder().uri(path);
            if let Some(token) = token {
                builder = builder.header("authorization", format!("Bearer {token}"));
            }
            builder.body(()).unwrap()
        };
        let classify = "/modbot.v1.Moderation/Classify";
        let response = service
            .call(request(classify, Some("service-token-0123456789")))
            .await
            .unwrap();
        assert_eq!(response.body(), "backend");
        let response = service
            .call(request("/grpc.health.v1.Health/Check", None))
            .await
            .unwrap();
        assert_eq!(response.body(), "-");
        // A refusal is a gRPC status in the headers (trailers-only), never reaching the route.
        let response = service.call(request(classify, None)).await.unwrap();
        assert_eq!(response.body(), "");
        assert_eq!(response.headers()["grpc-status"], "16");
        let response = service
            .call(request(classify, Some("moderator-token-0123456789")))
            .await
            .unwrap();
        assert_eq!(response.headers()["grpc-status"], "7");
    }

    #[test]
    fn without_tokens_everything_passes() {
        let auth = Authenticator::new(Vec::new());
        let check = auth.check("/modbot.v1.Admin/SetPolicy", &headers(&[]));
        assert_eq!(check.unwrap(), None);
    }

    #[test]
    fn a_denial_names_the_roles_that_may_call() {
        let status = authenticator()
            .check(
                "/modbot.v1.Admin/SetPolicy",
                &headers(&["Bearer moderator-token-0123456789"]),
            )
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        assert!(status.message().contains("roles: admin;"), "{status:?}");
        assert!(
            status
                .message()
                .contains("`mod-tools` has: moderator, appeals")
        );
    }

    fn hello(bridge_id: &str, channels: &[&str]) -> Hello {
        Hello {
            bridge_id: bridge_id.into(),
            channels: channels.iter().map(|c| c.to_string()).collect(),
            ..Hello::default()
        }
    }

    #[test]
    fn a_hello_is_checked_against_the_binding() {
        let bridge = Principal {
            name: "dgg".into(),
            roles: Roles::of(&[Role::Bridge]),
            binding: Some(Arc::new(BridgeBinding {
                bridge_ids: vec!["b1".into(), "b2".into()],
                channels: vec!["destinygg".into(), "strims".into()],
            })),
        };
        let admin = Principal {
            name: "ops".into(),
            roles: Roles::of(&[Role::Admin]),
            binding: None,
        };
        assert!(check_hello(Some(&bridge), &hello("b2", &["strims", "destinygg"])).is_ok());
        assert!(check_hello(Some(&admin), &hello("x", &["y"])).is_ok());
        assert!(check_hello(None, &hello("x", &["y"])).is_ok());
        let refused = check_hello(Some(&bridge), &hello("b3", &["strims"])).unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied);
        assert!(
            refused.message().starts_with("hello.bridge_id: `b3`"),
            "{refused:?}"
        );
        let refused =
            check_hello(Some(&bridge), &hello("b1", &["destinygg", "elsewhere"])).unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied);
        assert!(
            refused
                .message()
                .starts_with("hello.channels[1]: `elsewhere`"),
            "{refused:?}"
        );
        assert!(may_report_chat_actions(Some(&bridge)));
        assert!(!may_report_chat_actions(Some(&admin)));
        assert!(may_report_chat_actions(None));
    }

    #[test]
    fn every_method_of_the_api_is_in_the_table() {
        use prost::Message as _;
        let set = prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set decodes");
        let mut methods = 0;
        for file in set.file.iter().filter(|f| f.package() == "modbot.v1") {
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/modbot.v1.{}/{}", service.name(), method.name());
                    // Only the public logs are open to anyone.
                    let Access::Roles(roles) = access(&path) else {
                        assert_eq!(service.name(), "Transparency", "{path} must not be open");
                        methods += 1;
                        continue;
                    };
                    assert!(roles.contains(Role::Admin), "{path} is not in the table");
                    methods += 1;
                }
            }
        }
        assert!(methods >= 19, "only {methods} methods found");
    }
}
