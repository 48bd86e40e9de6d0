//! Test support shared by the integration test binaries: a real server on an ephemeral port,
//! throw-away PostgreSQL schemas and Redis key prefixes.
#![allow(dead_code)] // Each test binary uses a different part of this module.

pub mod http;
pub mod proxy;

use std::net::SocketAddr;
use std::time::Duration;

use modbot::Config;
use modbot::app::ServeError;
use modbot::infra::store::{ConnectOptions, Store};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, ClientTlsConfig};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Set (to anything) by `.ci/run`: a missing PostgreSQL or Redis is then a failure, not a skip.
pub const REQUIRE_SERVICES_ENV: &str = "MODBOT_TEST_REQUIRE_SERVICES";
/// The PostgreSQL server the Postgres suites use.
pub const POSTGRES_URL_ENV: &str = "MODBOT_TEST_POSTGRES_URL";
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// The Redis server the Redis suites use.
pub const REDIS_URL_ENV: &str = "MODBOT_TEST_REDIS_URL";
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";

fn services_required() -> bool {
    std::env::var_os(REQUIRE_SERVICES_ENV).is_some()
}

/// A PostgreSQL schema of its own for one test, so tests run in parallel without seeing each
/// other's rows. Call [`PgSchema::drop`] at the end.
pub struct PgSchema {
    /// URL that connects with this schema first on the search path.
    pub url: String,
    admin: sqlx::PgPool,
    name: String,
}

impl PgSchema {
    /// A fresh schema, or `None` (after saying the test is skipped) when no server answers and
    /// the run does not require one.
    pub async fn create(test: &str) -> Option<Self> {
        let base =
            std::env::var(POSTGRES_URL_ENV).unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
        let admin = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(2))
            .connect(&base)
            .await;
        let admin = match admin {
            Ok(admin) => admin,
            Err(error) if !services_required() => {
                eprintln!("SKIPPED {test}: PostgreSQL is not reachable at {base} ({error})");
                return None;
            }
            Err(error) => {
                panic!("{REQUIRE_SERVICES_ENV} is set but PostgreSQL is not reachable: {error}")
            }
        };
        let name = format!("modbot_test_{}", uuid::Uuid::now_v7().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&admin)
            .await
            .expect("create a test schema");
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-c%20search_path%3D{name}");
        Some(Self { url, admin, name })
    }

    /// Drops the schema and everything in it.
    pub async fn drop(self) {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA {} CASCADE",
            self.name
        )))
        .execute(&self.admin)
        .await
        .expect("drop the test schema");
        self.admin.close().await;
    }
}

/// The `host:port` of a `postgres://` URL (user and password skipped).
fn postgres_authority(url: &str) -> (usize, usize) {
    let start = url.find("://").expect("a postgres:// URL") + 3;
    let rest = &url[start..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let host_start = rest[..end].rfind('@').map_or(0, |at| at + 1);
    (start + host_start, start + end)
}

/// The address of the PostgreSQL server the Postgres suites use, for a [`proxy::TcpProxy`].
pub fn postgres_addr() -> SocketAddr {
    let base = std::env::var(POSTGRES_URL_ENV).unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
    let (start, end) = postgres_authority(&base);
    let authority = &base[start..end];
    let authority = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:5432")
    };
    authority
        .replace("localhost", "127.0.0.1")
        .parse()
        .expect("the test PostgreSQL URL names an IP address and port")
}

/// `url` with its host and port replaced by `addr` (a proxy in front of the server).
pub fn via_proxy(url: &str, addr: SocketAddr) -> String {
    let (start, end) = postgres_authority(url);
    format!("{}{addr}{}", &url[..start], &url[end..])
}

/// A Redis key prefix of its own for one test (`modbot-test:<uuid>:`), so tests run in
/// parallel on one server. Call [`RedisPrefix::delete_keys`] at the end; keys a failed test
/// leaves behind expire with their TTLs.
pub struct RedisPrefix {
    /// The server's URL.
    pub url: String,
    /// The prefix.
    pub prefix: String,
    connection: redis::aio::MultiplexedConnection,
}

impl RedisPrefix {
    /// A fresh prefix, or `None` (after saying the test is skipped) when no server answers and
    /// the run does not require one.
    pub async fn create(test: &str) -> Option<Self> {
        let url = std::env::var(REDIS_URL_ENV).unwrap_or_else(|_| DEFAULT_REDIS_URL.to_owned());
        let connect = async {
            let client = redis::Client::open(url.as_str())?;
            let mut connection = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await?;
            Ok::<_, redis::RedisError>(connection)
        };
        let connection = match tokio::time::timeout(Duration::from_secs(2), connect).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) if !services_required() => {
                eprintln!("SKIPPED {test}: Redis not reachable at {url} ({error})");
                return None;
            }
            Err(_) if !services_required() => {
                eprintln!("SKIPPED {test}: Redis not reachable at {url} (no answer in 2 s)");
                return None;
            }
            Ok(Err(error)) => {
                panic!("{REQUIRE_SERVICES_ENV} is set but Redis is not reachable: {error}")
            }
            Err(_) => panic!("{REQUIRE_SERVICES_ENV} is set but Redis does not answer in 2 s"),
        };
        let prefix = format!("modbot-test:{}:", uuid::Uuid::now_v7().simple());
        Some(Self {
            url,
            prefix,
            connection,
        })
    }

    /// A plain connection to the server, to look at what was written.
    pub fn connection(&self) -> redis::aio::MultiplexedConnection {
        self.connection.clone()
    }

    /// The keys under this prefix, sorted.
    pub async fn keys(&self) -> Vec<String> {
        let mut connection = self.connection.clone();
        let mut keys = Vec::new();
        let mut cursor = 0_u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}*", self.prefix))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut connection)
                .await
                .expect("SCAN the test keys");
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        keys
    }

    /// Deletes every key under the prefix.
    pub async fn delete_keys(self) {
        let keys = self.keys().await;
        let mut connection = self.connection.clone();
        for chunk in keys.chunks(500) {
            redis::cmd("DEL")
                .arg(chunk)
                .query_async::<i64>(&mut connection)
                .await
                .expect("DEL the test keys");
        }
    }
}

/// The configuration tests start from: the defaults with a private data directory, no
/// metrics listener, a short shutdown grace, no model, and nothing deleted by retention.
pub fn test_config(data_dir: &std::path::Path) -> Config {
    let mut config = Config {
        data_dir: data_dir.to_owned(),
        ..Config::default()
    };
    config.metrics.addr = None;
    config.grpc.shutdown_grace_secs = 2;
    config.database.connect_timeout_secs = 2;
    // Rules only unless a test asks for the model (tests/model_serving.rs).
    config.model.dir = std::path::PathBuf::new();
    // Tests write records at fixed past times (2023, older than every retention period): the
    // server's retention pass, which runs at start, would delete them under the test's feet
    // whenever a busy machine runs it late. tests/store.rs and tests/metrics.rs run retention
    // passes themselves, at times they choose.
    config.retention.audit_days = 0;
    config.retention.actions_days = 0;
    config.retention.feedback_days = 0;
    config.retention.rule_history_days = 0;
    config
}

/// A real modbot server on 127.0.0.1:0, in this process.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where its HTTP edge (console, JSON API) listens.
    pub http_addr: SocketAddr,
    /// A connected channel for generated clients.
    pub channel: Channel,
    /// The configuration it runs with.
    pub config: Config,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
    _data_dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts a server on the embedded SQLite defaults, after `configure` has adjusted them,
    /// and returns once health says SERVING.
    pub async fn start(configure: impl FnOnce(&mut Config)) -> Self {
        Self::launch(configure, None).await
    }

    /// [`TestServer::start`] for a server with TLS configured by `configure`: the channel
    /// connects to `https://127.0.0.1:PORT` with `tls` (its CA, domain name and any client
    /// identity).
    pub async fn start_tls(configure: impl FnOnce(&mut Config), tls: ClientTlsConfig) -> Self {
        Self::launch(configure, Some(tls)).await
    }

    async fn launch(configure: impl FnOnce(&mut Config), tls: Option<ClientTlsConfig>) -> Self {
        let data_dir = tempfile::tempdir().expect("a temporary directory");
        let mut config = test_config(data_dir.path());
        configure(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("bound address");
        let http = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let http_addr = http.local_addr().expect("bound address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(modbot::app::serve_with_http(
            config.clone(),
            listener,
            Some(http),
            async {
                let _ = stopped.await;
            },
        ));
        let endpoint = match tls {
            None => Channel::from_shared(format!("http://{addr}")).expect("a valid URI"),
            Some(tls) => Channel::from_shared(format!("https://{addr}"))
                .expect("a valid URI")
                .tls_config(tls)
                .expect("a valid client TLS configuration"),
        };
        let channel = endpoint
            .connect()
            .await
            .expect("connect to the test server");
        let server = Self {
            addr,
            http_addr,
            channel,
            config,
            stop: Some(stop),
            task,
            _data_dir: data_dir,
        };
        server.wait_until(ServingStatus::Serving).await;
        server
    }

    /// Waits (without polling sleeps) until the overall health status is `status`.
    pub async fn wait_until(&self, status: ServingStatus) {
        let mut health = HealthClient::new(self.channel.clone());
        let mut updates = health
            .watch(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health watch")
            .into_inner();
        while let Some(update) = updates.message().await.expect("health update") {
            if update.status == status as i32 {
                return;
            }
        }
        panic!("health stream ended before reaching {status:?}");
    }

    /// A store connected to the server's own database, to check what it wrote.
    pub async fn store(&self) -> Store {
        Store::connect(
            &self.config.database_url(),
            &ConnectOptions {
                max_connections: 1,
                connect_timeout: Duration::from_secs(2),
                statement_timeout: Duration::from_secs(5),
            },
        )
        .await
        .expect("connect to the test server's database")
    }

    /// A Moderation client.
    pub fn moderation(&self) -> modbot::proto::moderation_client::ModerationClient<Channel> {
        modbot::proto::moderation_client::ModerationClient::new(self.channel.clone())
    }

    /// An Admin client.
    pub fn admin(&self) -> modbot::proto::admin_client::AdminClient<Channel> {
        modbot::proto::admin_client::AdminClient::new(self.channel.clone())
    }

    /// An Actions client.
    pub fn actions(&self) -> modbot::proto::actions_client::ActionsClient<Channel> {
        modbot::proto::actions_client::ActionsClient::new(self.channel.clone())
    }

    /// An Appeals client.
    pub fn appeals(&self) -> modbot::proto::appeals_client::AppealsClient<Channel> {
        modbot::proto::appeals_client::AppealsClient::new(self.channel.clone())
    }

    /// A review queue client.
    pub fn review(&self) -> modbot::proto::review_client::ReviewClient<Channel> {
        modbot::proto::review_client::ReviewClient::new(self.channel.clone())
    }

    /// A health client.
    pub fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel.clone())
    }

    /// Classifies `messages` with default options and returns the verdicts (panics on an
    /// error status: for tests whose subject is what the verdicts say).
    pub async fn classify(
        &self,
        messages: Vec<modbot::proto::ChatMessage>,
    ) -> Vec<modbot::proto::Verdict> {
        self.moderation()
            .classify(modbot::proto::ClassifyRequest {
                messages,
                options: None,
            })
            .await
            .expect("classify")
            .into_inner()
            .verdicts
    }

    /// Sends the shutdown signal without waiting.
    pub fn signal_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// A JSON client of its HTTP edge.
    pub fn http(&self) -> http::Http {
        http::Http::new(self.http_addr)
    }

    /// Shuts the server down and returns how `serve` ended.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        self.signal_shutdown();
        let task = std::mem::replace(&mut self.task, tokio::spawn(async { Ok(()) }));
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the server stops within its grace period")
            .expect("the server task does not panic")
    }
}

/// An interceptor that sends `authorization: Bearer <token>` with every call, for servers
/// started with `config.auth.tokens`:
/// `ModerationClient::with_interceptor(server.channel.clone(), bearer("..."))`.
pub fn bearer(
    token: &str,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    let value: tonic::metadata::MetadataValue<tonic::metadata::Ascii> = format!("Bearer {token}")
        .parse()
        .expect("a token is printable ASCII");
    move |mut request: tonic::Request<()>| {
        request
            .metadata_mut()
            .insert("authorization", value.clone());
        Ok(request)
    }
}

/// A chat message with the required fields set.
pub fn chat_message(id: &str, user: &str, text: &str) -> modbot::proto::ChatMessage {
    modbot::proto::ChatMessage {
        channel: "destinygg".into(),
        message_id: id.into(),
        user_id: user.into(),
        nick: user.into(),
        roles: vec!["subscriber".into()],
        text: text.into(),
        sent_at: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        original_text_bytes: 0,
    }
}

/// Opens a bridge's `StreamModerate` stream serving `destinygg` (bot nick `modbot`): the
/// sender of its requests and its responses after the welcome.
pub async fn bridge(
    server: &TestServer,
    bridge_id: &str,
) -> (
    tokio::sync::mpsc::Sender<modbot::proto::StreamModerateRequest>,
    tonic::Streaming<modbot::proto::StreamModerateResponse>,
) {
    open_stream(server, None, bridge_id, &["destinygg"])
        .await
        .expect("the stream opens")
}

/// Opens a `StreamModerate` stream with `token` (none: no `authorization` header) and a hello
/// for `bridge_id` and `channels` (bot nick `modbot`): the sender of its requests and its
/// responses after the welcome, or how the call was refused.
pub async fn open_stream(
    server: &TestServer,
    token: Option<&str>,
    bridge_id: &str,
    channels: &[&str],
) -> Result<
    (
        tokio::sync::mpsc::Sender<modbot::proto::StreamModerateRequest>,
        tonic::Streaming<modbot::proto::StreamModerateResponse>,
    ),
    tonic::Status,
> {
    use modbot::proto::{
        Hello, StreamModerateRequest, stream_moderate_request, stream_moderate_response,
    };
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tx.send(StreamModerateRequest {
        kind: Some(stream_moderate_request::Kind::Hello(Hello {
            bridge_id: bridge_id.into(),
            channels: channels.iter().map(|c| c.to_string()).collect(),
            dialect: "dgg".into(),
            bot_nick: "modbot".into(),
        })),
    })
    .await
    .expect("the stream takes its hello");
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("an ASCII token"),
        );
    }
    let mut responses = server
        .moderation()
        .stream_moderate(request)
        .await?
        .into_inner();
    let welcome = responses.message().await?.expect("a welcome");
    assert!(matches!(
        welcome.kind,
        Some(stream_moderate_response::Kind::Welcome(_))
    ));
    Ok((tx, responses))
}

/// A CA, a server certificate it signed for localhost / 127.0.0.1, and a client certificate
/// it signed, written as PEM files.
pub struct Pki {
    dir: tempfile::TempDir,
    /// The CA's certificate.
    pub ca_pem: String,
    /// A client certificate the CA signed, and its key.
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

impl Pki {
    pub fn generate() -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "modbot test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, "modbot");
            params.use_authority_key_identifier_extension = true;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert_pem, client_key_pem) =
            leaf(vec!["client".into()], ExtendedKeyUsagePurpose::ClientAuth);

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), server_cert).unwrap();
        std::fs::write(dir.path().join("server.key"), server_key).unwrap();
        Self {
            dir,
            ca_pem: ca_cert.pem(),
            client_cert_pem,
            client_key_pem,
        }
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    pub fn serve_tls(&self, config: &mut Config, mutual: bool) {
        config.grpc.tls_cert_file = self.path("server.pem");
        config.grpc.tls_key_file = self.path("server.key");
        if mutual {
            config.grpc.tls_client_ca_file = self.path("ca.pem");
        }
    }

    /// A client configuration trusting the CA, for the name in the server's certificate.
    pub fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem))
            .domain_name("localhost")
    }

    pub fn client_with_certificate(&self) -> ClientTlsConfig {
        self.client().identity(tonic::transport::Identity::from_pem(
            &self.client_cert_pem,
            &self.client_key_pem,
        ))
    }
}

/// Writes a rules file into `dir` for `config.rules.file`: the built-in rules plus `fault`, a
/// phrase rule (action hide) whose phrase panics when it matches (`modbot::fault::PANIC_PHRASE`,
/// test builds only), and `groups`, a regex rule whose phrases have capture groups of their
/// own (action hold). A message containing `modbot::fault::PANIC_TEXT` panics outside any rule.
pub fn faulty_rules_file(dir: &std::path::Path) -> std::path::PathBuf {
    const {
        assert!(
            modbot::fault::ENABLED,
            "the tests build modbot with the fault-injection feature (Cargo.toml's self dev-dependency)"
        );
    }
    let text = format!(
        "{}\n[[rule]]\nid = \"fault\"\nkind = \"phrase\"\naction = \"hide\"\n\
         [rule.params]\nphrases = [\"{}\"]\n\n\
         [[rule]]\nid = \"groups\"\nkind = \"phrase\"\naction = \"hold\"\n\
         [rule.params]\nphrases = ['(free|cheap) nitro', '(?P<w>spam)word', '(?P<w>spam)mer']\n\
         syntax = \"regex\"\n",
        modbot::engine::rules::DEFAULT_RULES,
        modbot::fault::PANIC_PHRASE,
    );
    let path = dir.join("faulty-rules.toml");
    std::fs::write(&path, text).expect("write the rules file");
    path
}

/// Set (to anything) by `.ci/run`: a missing default model is then a failure, not a skip.
pub const REQUIRE_MODEL_ENV: &str = "MODBOT_TEST_REQUIRE_MODEL";

/// The default model's directory (`models/all-MiniLM-L6-v2`, or `MODBOT_TEST_MODEL_DIR`), or
/// `None` after printing that `test` is SKIPPED when it was not fetched; with
/// [`REQUIRE_MODEL_ENV`] set a missing model fails the test instead.
pub fn model_dir_or_skip(test: &str) -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("MODBOT_TEST_MODEL_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2")
        });
    if modbot::infra::model::fetch::is_present(&dir) {
        return Some(dir);
    }
    assert!(
        std::env::var_os(REQUIRE_MODEL_ENV).is_none(),
        "{REQUIRE_MODEL_ENV} is set but no model is in {} (run `modbot fetch-model`)",
        dir.display()
    );
    eprintln!("SKIPPED {test}: no model in {}", dir.display());
    None
}

/// A `StreamModerate` event carrying a chat message in channel `destinygg` (the message's own
/// channel is left empty: the event's is taken), sent at `at_ms` (Unix milliseconds) when
/// given.
pub fn stream_message(
    id: &str,
    user: &str,
    text: &str,
    at_ms: Option<i64>,
) -> modbot::proto::StreamModerateRequest {
    use modbot::proto::{ChatEvent, chat_event, stream_moderate_request};
    let mut message = chat_message(id, user, text);
    message.channel.clear();
    if let Some(at_ms) = at_ms {
        message.sent_at = Some(prost_types::Timestamp {
            seconds: at_ms.div_euclid(1000),
            nanos: (at_ms.rem_euclid(1000) * 1_000_000) as i32,
        });
    }
    modbot::proto::StreamModerateRequest {
        kind: Some(stream_moderate_request::Kind::Event(ChatEvent {
            channel: "destinygg".into(),
            kind: Some(chat_event::Kind::Message(message)),
        })),
    }
}

/// The `modbot` binary with `args`, without the caller's `MODBOT_*` variables or `RUST_LOG`.
pub fn modbot_command(args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_modbot"));
    command.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("MODBOT_") {
            command.env_remove(name);
        }
    }
    command.env_remove("RUST_LOG");
    command
}

/// Polls `done` where there is no signal to await, until it holds or ~10 s pass (then fails,
/// saying `what`).
pub async fn eventually<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done().await {
        assert!(
            std::time::Instant::now() < deadline,
            "not within 10 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts that `status` is `INVALID_ARGUMENT` and its message names `field` first (the
/// project's rule for bad input: the field path, then what is wrong with it).
pub fn assert_invalid_field(status: &tonic::Status, field: &str) {
    assert_eq!(
        status.code(),
        tonic::Code::InvalidArgument,
        "expected INVALID_ARGUMENT naming `{field}`, got {status:?}"
    );
    assert!(
        status.message().starts_with(field),
        "the message should name `{field}` first: {:?}",
        status.message()
    );
}
