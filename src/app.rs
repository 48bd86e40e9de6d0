//! Wiring: the shared application state and [`serve`], the whole server in one call.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::actions::dispatch::Dispatcher;
use crate::audit::AuditWriter;
use crate::config::Config;
use crate::config::{ModelConfig, ModelPrecision};
use crate::decision::{Degraded, Engine};
use crate::grpc;
use crate::inference::{Description, Limits, ModelBackend, Scorer, Status};
use crate::model::heads::Heads;
use crate::model::{Backend, Encoder, fetch, parse_device};
use crate::moderate::Moderator;
use crate::retention::{RetentionPolicy, RetentionTask};
use crate::rules::RulesError;
use crate::ruleset::{ReloadTask, RuleSource};
use crate::store::{ConnectOptions, Store, StoreError};
use crate::users::{SharedState, StateConfig, StateError};

/// Records queued for the audit writer before streams wait.
const AUDIT_QUEUE: usize = 8192;

/// HTTP/2 flow-control window per stream (see `serve`).
const STREAM_WINDOW: u32 = 64 * 1024;
/// HTTP/2 flow-control window per connection.
const CONNECTION_WINDOW: u32 = 2 * 1024 * 1024;

/// What every request handler shares.
#[derive(Debug)]
pub struct App {
    /// The configuration the server started with.
    pub config: Config,
    /// Decides messages, with memory of each user.
    pub moderator: Moderator,
    /// The database.
    pub store: Store,
    /// Batches streams' audit records into the database.
    pub audit: AuditWriter,
    /// This replica's decision statistics (`Admin.GetStats`).
    pub stats: crate::stats::Stats,
    /// Records actions and carries them to the bridges connected to this replica.
    pub dispatcher: Dispatcher,
    /// The stored rule set and the revision in force (`Admin` rules and policies).
    pub rules: crate::ruleset::RuleSource,
    /// Turns true when the server starts shutting down: long-lived streams finish what they
    /// read and end, so their bridges reconnect (to another replica) instead of being cut at
    /// the end of the grace period.
    pub stopping: tokio::sync::watch::Sender<bool>,
}

impl App {
    /// Largest encoded request the server accepts: a full Classify call of maximal messages,
    /// with room for ids and roles. Anything larger is refused before it is decoded.
    pub fn max_request_bytes(&self) -> usize {
        let grpc = &self.config.grpc;
        let per_message = grpc.max_text_bytes as usize + 16 * 1024;
        (grpc.max_messages_per_call as usize * per_message).max(4 * 1024 * 1024)
    }

    /// Counts a verdict returned to a caller, once `elapsed` is set: in this replica's
    /// statistics (`Admin.GetStats`) and in the Prometheus metrics
    /// ([`crate::telemetry::record_verdict`]). Dry runs are an operator trying the rules, not
    /// chat traffic, and are not counted.
    pub fn count_verdict(&self, verdict: &crate::decision::Verdict) {
        crate::telemetry::record_verdict(verdict);
        self.stats.record(verdict);
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The database could not be reached or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The gRPC transport failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The rules file, or the rule set stored in the database, was refused.
    #[error(transparent)]
    Rules(#[from] RulesError),
    /// User state could not be set up (an invalid Redis URL).
    #[error("user state: {0}")]
    State(#[from] StateError),
    /// The tokens could not be read, or none are configured on a non-loopback address.
    #[error("configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// A TLS file is unreadable or invalid.
    #[error(transparent)]
    Tls(#[from] grpc::auth::TlsError),
}

/// Sets up user state: in-process, or Redis (starting degraded if Redis is down).
pub async fn open_state(config: &Config) -> Result<SharedState, StateError> {
    let state = &config.state;
    let state_config = StateConfig {
        recent_per_user: state.recent_per_user as usize,
        times_per_user: state.times_per_user as usize,
        recent_per_channel: state.recent_per_channel as usize,
        history_per_channel: state.history_per_channel as usize,
        idle_ttl: std::time::Duration::from_secs(state.idle_ttl_secs),
        max_users: state.max_users as usize,
        max_user_bytes: usize::try_from(state.max_user_bytes).unwrap_or(usize::MAX),
        max_channel_bytes: usize::try_from(state.max_channel_bytes).unwrap_or(usize::MAX),
        cooled_down_heat: crate::decision::escalation::COOLED_HEAT,
        ..StateConfig::default()
    };
    if config.redis.url.is_empty() {
        Ok(SharedState::memory(state_config))
    } else {
        SharedState::redis(&config.redis.url, state_config, &config.redis.key_prefix).await
    }
}

/// The name of the model in gRPC health: `SERVING` while the model scores (or runs without
/// heads), `NOT_SERVING` when it is off or failed (decisions are then rules-only; the
/// Moderation service itself stays `SERVING`).
pub const MODEL_HEALTH_NAME: &str = "modbot.model";

/// Loads the configured model (fetching the default one first if it is missing and
/// `model.fetch_if_missing` says so) and starts its scorer. Never fails: a model that cannot
/// be loaded gives a scorer that says why, and decisions go on by the rules alone, marked
/// degraded.
pub async fn open_model(config: &ModelConfig) -> Scorer {
    if !config.enabled() {
        tracing::info!("no model configured (model.dir is empty): deciding by the rules alone");
        return Scorer::idle(Status::Off, Description::default());
    }
    let config = config.clone();
    tokio::task::spawn_blocking(move || load_model(&config))
        .await
        .unwrap_or_else(|error| {
            model_failed(
                format!("loading the model panicked: {error}"),
                Description::default(),
            )
        })
}

fn model_failed(reason: String, description: Description) -> Scorer {
    tracing::error!(
        %reason,
        "the model is unavailable: deciding by the rules alone, verdicts marked degraded"
    );
    metrics::gauge!("modbot_model_up").set(0.0);
    Scorer::idle(Status::Failed(reason), description)
}

fn load_model(config: &ModelConfig) -> Scorer {
    let spec = parse_device(&config.device).unwrap_or(crate::model::DeviceSpec::Cpu);
    let mut description = Description {
        device: spec.name(),
        encoder: config
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        ..Description::default()
    };
    let dir = &config.dir;
    if !fetch::is_present(dir) {
        if !config.fetch_if_missing {
            return model_failed(
                format!(
                    "no model in {} (run `modbot fetch-model`, or set model.dir = \"\" to \
                     decide by the rules alone)",
                    dir.display()
                ),
                description,
            );
        }
        tracing::info!(dir = %dir.display(), "the model is missing: fetching the default model");
        if let Err(error) = fetch::fetch(dir, "python3") {
            return model_failed(
                format!(
                    "no model in {} and fetching it failed: {error}",
                    dir.display()
                ),
                description,
            );
        }
    }
    let started = std::time::Instant::now();
    let device = match spec.open() {
        Ok(device) => device,
        Err(error) => {
            return model_failed(format!("device {}: {error}", spec.name()), description);
        }
    };
    let backend = match config.precision {
        ModelPrecision::F32 => Backend::Auto,
        ModelPrecision::Int8 => Backend::Int8,
    };
    let encoder = match Encoder::load_with(dir, &device, backend) {
        Ok(encoder) => encoder,
        Err(error) => {
            return model_failed(
                format!("loading the encoder from {}: {error}", dir.display()),
                description,
            );
        }
    };
    // One full-size batch before the first message: pages the weights in, starts the thread
    // pools and grows the forward pass's scratch buffers to the batch budget, so no caller
    // pays for it.
    let warm_text = "warming up the encoder before the first chat message arrives";
    let warm_batch =
        (config.max_batch_tokens as usize / 16).clamp(1, config.max_batch_messages as usize);
    if let Err(error) = encoder.embed(&vec![warm_text; warm_batch]) {
        return model_failed(
            format!("the encoder failed its first pass: {error}"),
            description,
        );
    }
    description.embedding_dim = encoder.dim();
    description.max_tokens = encoder.max_tokens();
    let hash = match fetch::sha256_file(&dir.join("model.safetensors")) {
        Ok(hash) => hash,
        Err(error) => return model_failed(error.to_string(), description),
    };
    // Int8 scores differ from f32 ones a little: the version says which produced a verdict.
    let precision = if encoder.is_int8() { "/int8" } else { "" };
    description.version = format!("{}@{}{precision}", description.encoder, &hash[..12]);
    let heads = match Heads::load(&config.heads_dir, encoder.dim()) {
        Ok(heads) => heads,
        Err(error) => {
            return model_failed(format!("loading the heads: {error}"), description);
        }
    };
    if heads.is_empty() {
        tracing::warn!(
            heads_dir = %config.heads_dir.display(),
            "the encoder is loaded but there are no classification heads: deciding by the rules \
             alone (`modbot train` makes heads)"
        );
        return Scorer::idle(Status::NoHeads, description);
    }
    if !heads.encoder.is_empty() && heads.encoder != description.encoder {
        tracing::warn!(
            heads_encoder = %heads.encoder,
            encoder = %description.encoder,
            "the heads were trained on another encoder's embeddings"
        );
    }
    description.version = format!("{}+heads@{}", description.version, heads.version);
    description.heads = heads.clone();
    tracing::info!(
        version = %description.version,
        device = %description.device,
        forward = %encoder.backend(),
        labels = ?heads.label_names(),
        elapsed = ?started.elapsed(),
        "model loaded"
    );
    // The heads' lexical inputs build their tables on first use (VADER's lexicons): here,
    // not on the first chat message.
    heads.lexical(warm_text);
    let backend = ModelBackend::new(encoder, heads);
    Scorer::start(Arc::new(backend), description, Limits::from_config(config))
}

/// Keeps the model's health entry in step with its status.
async fn report_model_health(
    health: HealthReporter,
    mut status: tokio::sync::watch::Receiver<Status>,
) {
    loop {
        let (serving, failed) = match &*status.borrow_and_update() {
            Status::Ready | Status::NoHeads => (true, false),
            Status::Off => (false, false),
            Status::Failed(_) => (false, true),
        };
        crate::telemetry::set_degraded(Degraded::Model, failed);
        health
            .set_service_status(
                MODEL_HEALTH_NAME,
                if serving {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                },
            )
            .await;
        if status.changed().await.is_err() {
            return;
        }
    }
}

/// Connects to the database named by the configuration and applies migrations.
pub async fn open_store(config: &Config) -> Result<Store, StoreError> {
    let store = Store::connect(
        &config.database_url(),
        &ConnectOptions {
            max_connections: config.database.max_connections,
            connect_timeout: std::time::Duration::from_secs(config.database.connect_timeout_secs),
            statement_timeout: config.database.statement_timeout(),
        },
    )
    .await?;
    store.migrate().await?;
    Ok(store)
}

/// Runs modbot's gRPC server on `listener` until `shutdown` completes.
///
/// Start-up connects to the database (retrying up to `database.connect_timeout_secs`, then
/// failing with [`ServeError::Store`]) and applies migrations, then seeds an empty database
/// with the rules file and compiles the stored rule set ([`crate::ruleset`]); health reports
/// `SERVING` only after that. On shutdown, health turns `NOT_SERVING`, no new connections are
/// accepted, streams stop reading, answer what they read and end with `UNAVAILABLE`. The
/// whole shutdown fits in `grpc.shutdown_grace_secs`: in-flight calls get all of it but a
/// reserve (a quarter, at most 5 s), and the audit writer, the background tasks and the database
/// pool share what is left until the same deadline.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let credentials = config.auth.credentials()?;
    let tls = grpc::auth::tls_config(&config.grpc)?;
    if credentials.is_empty() {
        // Checked on the socket itself as well as on grpc.addr: a caller of `serve` may bind
        // anything. An address that cannot be known counts as open.
        let bound = listener
            .local_addr()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        crate::config::refuse_open_bind(bound)?;
        tracing::warn!(%bound, "no auth tokens: every caller is trusted; only loopback");
    } else {
        let names: Vec<&str> = credentials.iter().map(|c| c.name.as_str()).collect();
        tracing::info!(?names, "bearer tokens required");
    }
    let rules_file = crate::ruleset::read_rules_file(&config)?;
    let state = open_state(&config).await?;
    crate::telemetry::set_degraded(Degraded::UserState, state.is_degraded());
    let store = open_store(&config).await?;
    crate::telemetry::set_degraded(Degraded::Store, false);
    let (rule_source, rules) = RuleSource::open(store.clone(), &rules_file).await?;
    let grace = config.grpc.shutdown_grace();
    let scorer = open_model(&config.model).await;
    let dispatcher = Dispatcher::new(
        store.clone(),
        config.actions.pending_ttl(),
        config.actions.poll_interval(),
    )
    .with_resend_interval(config.actions.resend_interval());
    let dispatch_task = dispatcher.spawn();
    let (audit, audit_task) = AuditWriter::spawn(store.clone(), AUDIT_QUEUE, dispatcher.clone());
    tracing::info!(
        rules = rules.rules().len(),
        state = state.backend_name(),
        "rules loaded"
    );
    let model_status = scorer.status();
    let engine = Engine::new(rules);
    engine.warm_up();
    let app = Arc::new(App {
        moderator: Moderator::new(engine, state, scorer),
        config,
        store: store.clone(),
        audit,
        stats: crate::stats::Stats::new(),
        dispatcher: dispatcher.clone(),
        rules: rule_source,
        stopping: tokio::sync::watch::Sender::new(false),
    });
    let reload = ReloadTask::spawn(Arc::clone(&app));
    let retention = RetentionTask::spawn(
        store.clone(),
        RetentionPolicy::from_config(&app.config.retention),
        app.config.retention.interval(),
    );

    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::Serving).await;
    let model_health = tokio::spawn(report_model_health(health.clone(), model_status));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("modbot's own descriptor set is valid. This is a bug");
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("modbot's own descriptor set is valid. This is a bug");

    let local_addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let incoming = TcpListenerStream::new(listener).map(|stream| {
        if let Ok(stream) = &stream {
            // Verdicts are small and latency-bound: never wait to coalesce them.
            let _ = stream.set_nodelay(true);
        }
        stream
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let server = builder
        // HTTP/2 windows sized for backpressure: when a stream's session falls behind, its
        // client may have at most STREAM_WINDOW bytes in flight. h2 closes a connection whose
        // unread small DATA frames exceed half the connection window (a flood defence), so the
        // stream window must stay well below that even for ~100-byte chat events.
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        // A connection whose peer vanished without closing it (a killed bridge host, a cut
        // network) is closed after a PING goes unanswered, so its streams end, their bridges'
        // registrations go and the actions they held are given back, instead of waiting for
        // TCP to give up (~15 min). TCP keepalive covers connections between calls.
        .http2_keepalive_interval(Some(app.config.grpc.keepalive_interval()))
        .http2_keepalive_timeout(Some(app.config.grpc.keepalive_timeout()))
        .tcp_keepalive(Some(app.config.grpc.keepalive_interval()))
        .max_concurrent_streams(Some(app.config.grpc.max_concurrent_streams))
        // Outermost, so calls the auth layer refuses are counted too.
        .layer(grpc::metrics::MetricsLayer)
        .layer(grpc::trace::TraceLayer)
        .layer(grpc::auth::AuthLayer::new(credentials))
        .add_routes(grpc::routes(Arc::clone(&app)))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stop_rx.await;
        });
    // Boxed rather than pinned on the stack so it can be dropped (with the routes' share of
    // the app) before the audit writer is drained.
    let mut server = Box::pin(server);
    tracing::info!(addr = %local_addr, database = ?store.backend(), "modbot serving");

    // One budget for the whole shutdown, from the signal to the return: every step below
    // waits until the same deadline at most, so the process exits within
    // `grpc.shutdown_grace_secs` (plus the moment it takes to drop what is left) and the pod's
    // termination grace period, which is longer, never ends in a SIGKILL.
    let mut deadline = None;
    let result = tokio::select! {
        result = &mut server => result,
        () = shutdown => {
            let signalled = tokio::time::Instant::now();
            deadline = Some(signalled + grace);
            tracing::info!(?grace, "shutting down: finishing in-flight calls");
            set_health(&health, ServingStatus::NotServing).await;
            model_health.abort();
            health
                .set_service_status(MODEL_HEALTH_NAME, ServingStatus::NotServing)
                .await;
            app.stopping.send_replace(true);
            let _ = stop_tx.send(());
            match tokio::time::timeout_at(signalled + calls_share(grace), &mut server).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!("shutdown: in-flight calls out of time; dropping those still running");
                    Ok(())
                }
            }
        }
    };
    // The server failed by itself: the same budget for the rest, from now.
    let deadline = deadline.unwrap_or_else(|| tokio::time::Instant::now() + grace);
    // Streams still running past their share of the grace hold the last writers: let go of
    // ours and give the writer the rest of the budget to drain what was queued.
    drop(server);
    retention.stop(deadline).await;
    if tokio::time::timeout_at(deadline, reload.stop())
        .await
        .is_err()
    {
        tracing::warn!("shutdown: the rules reload task is still busy at the deadline");
    }
    drop(app);
    let mut audit_task = audit_task;
    if tokio::time::timeout_at(deadline, &mut audit_task)
        .await
        .is_err()
    {
        audit_task.abort();
        tracing::warn!(
            "shutdown: the audit writer is still busy at the deadline; queued records are lost"
        );
    }
    dispatcher.close();
    let mut dispatch_task = dispatch_task;
    if tokio::time::timeout_at(deadline, &mut dispatch_task)
        .await
        .is_err()
    {
        dispatch_task.abort();
        tracing::warn!("shutdown: action delivery is still busy at the deadline");
    }
    if tokio::time::timeout_at(deadline, store.close())
        .await
        .is_err()
    {
        tracing::warn!("shutdown: database connections still in use at the deadline; dropped");
    }
    tracing::info!("modbot stopped");
    Ok(result?)
}

/// The part of the shutdown grace that in-flight calls get: all but a reserve for writing
/// what they decided (a quarter of the grace, at most 5 s), so a call that runs to the end of
/// its share still has its audit records written within the grace.
fn calls_share(grace: std::time::Duration) -> std::time::Duration {
    grace - (grace / 4).min(std::time::Duration::from_secs(5))
}

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    for name in grpc::SERVICE_NAMES {
        health.set_service_status(*name, status).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::calls_share;

    #[test]
    fn calls_leave_a_quarter_of_the_grace_at_most_5_s_for_the_writers() {
        for (grace, share) in [(1_000, 750), (2_000, 1_500), (30_000, 25_000), (0, 0)] {
            assert_eq!(
                calls_share(Duration::from_millis(grace)),
                Duration::from_millis(share),
                "{grace} ms"
            );
        }
    }
}
