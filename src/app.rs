//! Wiring: [`serve`], the whole server in one call: the infrastructure opened from the
//! configuration, the [`Services`] built on it, the gRPC edge, health and shutdown.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::config::Config;
use crate::domain::Degraded;
use crate::edge::grpc;
use crate::engine::decision::Engine;
use crate::engine::rules::RulesError;
use crate::infra::inference::{ModelStatus, open_model};
use crate::infra::store::{StoreError, open_store};
use crate::infra::users::{StateError, open_state};
use crate::service::Services;
use crate::service::actions::dispatch::Dispatcher;
use crate::service::audit::AuditWriter;
use crate::service::moderate::Moderator;
use crate::service::retention::{RetentionPolicy, RetentionTask};
use crate::service::ruleset::{ReloadError, ReloadTask, RuleSource};

/// Records queued for the audit writer before streams wait.
const AUDIT_QUEUE: usize = 8192;

/// HTTP/2 flow-control window per stream (see `serve`).
const STREAM_WINDOW: u32 = 64 * 1024;
/// HTTP/2 flow-control window per connection.
const CONNECTION_WINDOW: u32 = 2 * 1024 * 1024;

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

impl From<ReloadError> for ServeError {
    fn from(error: ReloadError) -> Self {
        match error {
            ReloadError::Store(error) => Self::Store(error),
            ReloadError::Rules(error) => Self::Rules(error),
        }
    }
}

/// The name of the model in gRPC health: `SERVING` while the model scores (or runs without
/// heads), `NOT_SERVING` when it is off or failed (decisions are then rules-only; the
/// Moderation service itself stays `SERVING`).
pub const MODEL_HEALTH_NAME: &str = grpc::MODEL_HEALTH_NAME;

/// Keeps the model's health entry in step with its status.
async fn report_model_health(
    health: HealthReporter,
    mut status: tokio::sync::watch::Receiver<ModelStatus>,
) {
    loop {
        let (serving, failed) = match &*status.borrow_and_update() {
            ModelStatus::Ready | ModelStatus::NoHeads => (true, false),
            ModelStatus::Off => (false, false),
            ModelStatus::Failed(_) => (false, true),
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

/// Runs modbot's gRPC server on `listener` until `shutdown` completes, without the HTTP edge
/// (see [`serve_with_http`]).
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve_with_http(config, listener, None, shutdown).await
}

/// Runs modbot's gRPC server on `listener`, and the HTTP edge (console, JSON API) on `http`
/// when given, until `shutdown` completes.
///
/// Start-up connects to the database (retrying up to `database.connect_timeout_secs`, then
/// failing with [`ServeError::Store`]) and applies migrations, then seeds an empty database
/// with the rules file and compiles the stored rule set ([`crate::service::ruleset`]); health reports
/// `SERVING` only after that. On shutdown, health turns `NOT_SERVING`, no new connections are
/// accepted, streams stop reading, answer what they read and end with `UNAVAILABLE`. The
/// whole shutdown fits in `grpc.shutdown_grace_secs`: in-flight calls get all of it but a
/// reserve (a quarter, at most 5 s), and the audit writer, the background tasks and the database
/// pool share what is left until the same deadline.
pub async fn serve_with_http(
    config: Config,
    listener: TcpListener,
    http: Option<TcpListener>,
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
        if let Some(http) = &http {
            crate::config::refuse_open_bind(
                http.local_addr()
                    .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
            )?;
        }
        tracing::warn!(%bound, "no auth tokens: every caller is trusted; only loopback");
    } else {
        let names: Vec<&str> = credentials.iter().map(|c| c.name.as_str()).collect();
        tracing::info!(?names, "bearer tokens required");
    }
    let rules_file = crate::service::ruleset::read_rules_file(&config)?;
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
    let moderator = Moderator::new(engine, state, scorer);
    let models =
        crate::service::models::ModelRollouts::new(store.clone(), &config.model, &moderator);
    let app = Arc::new(Services {
        moderator,
        models,
        config,
        store: store.clone(),
        audit,
        stats: crate::service::stats::VerdictStats::new(),
        dispatcher: dispatcher.clone(),
        rules: rule_source,
        review_queue: crate::service::review::ReviewQueue::new(),
        notices: crate::service::notices::NoticeLimiter::new(),
        feed: crate::service::feed::DecisionFeed::new(),
        public_logs: crate::service::transparency::PublicLogs::default(),
        stopping: tokio::sync::watch::Sender::new(false),
    });
    // A stored rollout that cannot be applied here is logged and reported; the shipped heads
    // serve meanwhile.
    let _ = app.models.refresh(&app.moderator).await;
    let reload = ReloadTask::spawn(Arc::clone(&app));
    let expiry = crate::service::review::ExpiryTask::spawn(Arc::clone(&app));
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
    let routes = grpc::routes(Arc::clone(&app))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha);
    let auth = grpc::auth::AuthLayer::new(credentials);
    let http_task = http.map(|listener| {
        let http_addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let stack = tower::ServiceBuilder::new()
            .map_response(|response: http::Response<_>| response.map(tonic::body::Body::new))
            .layer(grpc::metrics::MetricsLayer)
            .layer(grpc::trace::TraceLayer)
            .layer(auth.clone())
            .service(routes.clone());
        let state = crate::edge::http::HttpState::new(
            &app.config.http,
            tower::util::BoxCloneSyncService::new(stack),
            auth.authenticator(),
        );
        let router = crate::edge::http::router(state, app.max_request_bytes());
        let mut stopping = app.stopping.subscribe();
        tracing::info!(addr = %http_addr, "console and JSON API on http://{http_addr}/");
        tokio::spawn(async move {
            let stop = async move {
                let _ = stopping.wait_for(|stopping| *stopping).await;
            };
            if let Err(error) = crate::edge::http::serve(listener, router, stop).await {
                tracing::error!(%error, "the HTTP server failed");
            }
        })
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
        .layer(auth)
        .add_routes(routes)
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
    app.stopping.send_replace(true);
    if let Some(mut http_task) = http_task {
        // Its calls had the same share as gRPC's; what still runs (a stream a browser holds
        // open) is dropped, with the services it holds.
        let share = tokio::time::Instant::now().max(deadline - (grace - calls_share(grace)));
        if tokio::time::timeout_at(share, &mut http_task)
            .await
            .is_err()
        {
            http_task.abort();
            let _ = http_task.await;
        }
    }
    // Streams still running past their share of the grace hold the last writers: let go of
    // ours and give the writer the rest of the budget to drain what was queued.
    drop(server);
    retention.stop(deadline).await;
    expiry.stop(deadline).await;
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
