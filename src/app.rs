//! Wiring: the shared application state and [`serve`], the whole server in one call.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::audit::AuditWriter;
use crate::config::Config;
use crate::decision::Engine;
use crate::grpc;
use crate::moderate::Moderator;
use crate::rules::{RuleSet, RulesError};
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
}

impl App {
    /// Largest encoded request the server accepts: a full Classify call of maximal messages,
    /// with room for ids and roles. Anything larger is refused before it is decoded.
    pub fn max_request_bytes(&self) -> usize {
        let grpc = &self.config.grpc;
        let per_message = grpc.max_text_bytes as usize + 16 * 1024;
        (grpc.max_messages_per_call as usize * per_message).max(4 * 1024 * 1024)
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
    /// The rules file was refused.
    #[error(transparent)]
    Rules(#[from] RulesError),
    /// User state could not be set up (an invalid Redis URL).
    #[error("user state: {0}")]
    State(#[from] StateError),
}

/// Loads the configured rules: `rules.file`, or the built-in set.
pub fn load_rules(config: &Config) -> Result<RuleSet, RulesError> {
    if config.rules.file.as_os_str().is_empty() {
        Ok(RuleSet::builtin())
    } else {
        RuleSet::from_file(&config.rules.file)
    }
}

/// Sets up user state: in-process, or Redis (starting degraded if Redis is down).
pub async fn open_state(config: &Config) -> Result<SharedState, StateError> {
    let state = &config.state;
    let state_config = StateConfig {
        recent_per_user: state.recent_per_user as usize,
        times_per_user: state.times_per_user as usize,
        recent_per_channel: state.recent_per_channel as usize,
        idle_ttl: std::time::Duration::from_secs(state.idle_ttl_secs),
        max_users: state.max_users as usize,
        cooled_down_heat: crate::decision::escalation::COOLED_HEAT,
        ..StateConfig::default()
    };
    if config.redis.url.is_empty() {
        Ok(SharedState::memory(state_config))
    } else {
        SharedState::redis(&config.redis.url, state_config, &config.redis.key_prefix).await
    }
}

/// Connects to the database named by the configuration and applies migrations.
pub async fn open_store(config: &Config) -> Result<Store, StoreError> {
    let store = Store::connect(
        &config.database_url(),
        &ConnectOptions {
            max_connections: config.database.max_connections,
            connect_timeout: std::time::Duration::from_secs(config.database.connect_timeout_secs),
        },
    )
    .await?;
    store.migrate().await?;
    Ok(store)
}

/// Runs modbot's gRPC server on `listener` until `shutdown` completes.
///
/// Start-up connects to the database (retrying up to `database.connect_timeout_secs`, then
/// failing with [`ServeError::Store`]) and applies migrations; health reports `SERVING` only
/// after that. On shutdown, health turns `NOT_SERVING`, no new connections are accepted, and
/// in-flight calls get `grpc.shutdown_grace_secs` to finish.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let rules = load_rules(&config)?;
    let state = open_state(&config).await?;
    let store = open_store(&config).await?;
    let grace = config.grpc.shutdown_grace();
    let (audit, audit_task) = AuditWriter::spawn(store.clone(), AUDIT_QUEUE);
    tracing::info!(
        rules = rules.rules().len(),
        state = state.backend_name(),
        "rules loaded"
    );
    let app = Arc::new(App {
        moderator: Moderator::new(Engine::new(rules), state),
        config,
        store: store.clone(),
        audit,
    });

    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::Serving).await;
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
    let server = tonic::transport::Server::builder()
        // HTTP/2 windows sized for backpressure: when a stream's session falls behind, its
        // client may have at most STREAM_WINDOW bytes in flight. h2 closes a connection whose
        // unread small DATA frames exceed half the connection window (a flood defence), so the
        // stream window must stay well below that even for ~100-byte chat events.
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
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

    let result = tokio::select! {
        result = &mut server => result,
        () = shutdown => {
            tracing::info!(?grace, "shutting down: finishing in-flight calls");
            set_health(&health, ServingStatus::NotServing).await;
            let _ = stop_tx.send(());
            match tokio::time::timeout(grace, &mut server).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!("shutdown grace period over; dropping the calls still running");
                    Ok(())
                }
            }
        }
    };
    // Streams still running past the grace period hold the last writers: let go of ours and
    // give the writer the same grace to drain what was queued.
    drop(server);
    drop(app);
    if tokio::time::timeout(grace, audit_task).await.is_err() {
        tracing::warn!(
            "audit writer still busy after the grace period; queued records may be lost"
        );
    }
    store.close().await;
    tracing::info!("modbot stopped");
    Ok(result?)
}

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    for name in grpc::SERVICE_NAMES {
        health.set_service_status(*name, status).await;
    }
}
