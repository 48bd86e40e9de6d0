//! Proof under load and faults: the release `modbot serve` as a child process, driven over
//! loopback with the generated client, with its RSS sampled and its Redis, PostgreSQL and
//! model broken on purpose.
//!
//! ```text
//! cargo bench --bench soak -- SCENARIO [--rate R] [--secs S] [--streams N] [--spread N]
//!                                       [--set KEY=VALUE ...]
//!   load         R msgs/s (833) through N (4) StreamModerate streams for S s (600), model on;
//!                `--set` passes server settings (e.g. model.precision=int8); the server's
//!                users in memory and score cache entries are sampled beside its RSS
//!   overload     unary Classify beyond capacity: RESOURCE_EXHAUSTED fast, then recovery
//!   redis-fault  a private Redis killed at S/3 and restarted at 2S/3 (S: 30)
//!   pg-restart   a private PostgreSQL cluster restarted at S/2 (S: 30), with ExecuteAction
//!                and FileAppeal calls beside the streams
//!   model-fault  a model directory with garbage weights, against a healthy reference run
//!   bridge-cut   `modbot bridge` between the test chat and the server through a TCP proxy
//!                that drops its connections at S/3 and 2S/3 (S: 30)
//!   feed         the console's live feed in Chromium while Classify decides `--feed-rate` (1000)
//!                msgs/s for S s (10), rules only (benches/common/feed.rs)
//!   smoke        all of the above, short (what scripts/test runs)
//! ```
//!
//! The streams carry `modbot::corpus::generate(42, ..)` lines, each corpus user split into
//! `--spread` (10) users so that ten times the seed's traffic comes from ten times its
//! ~2,000 users rather than from the same users talking ten times as fast.
//!
//! Every message gets a unique id; the harness checks that each gets exactly one verdict
//! (lost: sent and never answered; duplicated: answered twice) and reports latency from the
//! message's *scheduled* send time to its verdict (so a sender held back by the server counts
//! against the server), decisions/s achieved against offered, degraded verdicts by component
//! and the server's RSS. The streams act as their channels' bridges: they answer every action
//! command `ok` and count a command repeated on one connection. A scenario whose assertions
//! fail prints `FAIL:` lines and exits 1. Redis and PostgreSQL scenarios print `SKIPPED` when
//! `redis-server` / `initdb` are not installed, unless `MODBOT_TEST_REQUIRE_SERVICES` is set.

#[path = "common/bridge_cut.rs"]
mod bridge_cut;
#[path = "../tests/common/browser.rs"]
mod browser;
#[path = "../tests/chat_server/mod.rs"]
mod chat_server;
#[path = "common/feed.rs"]
mod feed;
#[path = "common/load.rs"]
mod load;
#[path = "common/services.rs"]
mod services;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use modbot::corpus::CorpusMessage;
use modbot::proto::actions_client::ActionsClient;
use modbot::proto::appeals_client::AppealsClient;
use modbot::proto::moderation_client::ModerationClient;
use modbot::proto::{
    ActionKind, ActionResult, ActionSource, ChatEvent, ClassifyRequest, DegradedComponent,
    ExecuteActionRequest, FileAppealRequest, Hello, ListActionsRequest, ListAppealsRequest,
    ReasonSource, StreamModerateRequest, chat_event, stream_moderate_request,
    stream_moderate_response,
};
use services::{Modbot, Postgres, Redis, ServerOptions};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic_health::pb::health_check_response::ServingStatus;

/// The same allocator as the `modbot` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long the streams may take to answer what was sent once sending has stopped.
const DRAIN: Duration = Duration::from_secs(20);

/// A rejection must come back this fast (p99) to count as "quick".
const FAST_REJECTION_MS: f64 = 100.0;

// What a verdict said, one bit each.
const F_MODEL: u16 = 1;
const F_STATE: u16 = 2;
const F_STORE: u16 = 4;
const F_SCORED: u16 = 8;
const F_RULE: u16 = 16;
const F_ACTION: u16 = 32;
const F_MUTE: u16 = 64;

struct Args {
    scenario: String,
    rate: f64,
    /// The `feed` scenario's rate.
    feed_rate: f64,
    secs: Option<f64>,
    streams: usize,
    spread: usize,
    /// `--set KEY=VALUE` for the `load` scenario's server.
    sets: Vec<(String, String)>,
}

fn parse_args() -> Args {
    let mut args = Args {
        scenario: String::new(),
        rate: 833.0,
        feed_rate: 1000.0,
        secs: None,
        streams: 4,
        spread: 10,
        sets: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--rate" => args.rate = value().parse().unwrap_or_else(|_| usage("--rate R")),
            "--feed-rate" => {
                args.feed_rate = value().parse().unwrap_or_else(|_| usage("--feed-rate R"));
            }
            "--secs" => args.secs = Some(value().parse().unwrap_or_else(|_| usage("--secs S"))),
            "--streams" => {
                args.streams = value().parse().unwrap_or_else(|_| usage("--streams N"));
            }
            "--spread" => {
                args.spread = value().parse().unwrap_or_else(|_| usage("--spread N"));
            }
            "--set" => {
                let pair = value();
                let (key, value) = pair
                    .split_once('=')
                    .unwrap_or_else(|| usage("--set KEY=VALUE"));
                args.sets.push((key.to_owned(), value.to_owned()));
            }
            // `cargo bench` passes --bench to every bench binary.
            "--bench" => {}
            other if args.scenario.is_empty() && !other.starts_with('-') => {
                args.scenario = other.to_owned();
            }
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if args.scenario.is_empty() || args.rate <= 0.0 || args.streams == 0 {
        usage("a scenario, a positive --rate and at least one stream are required");
    }
    args
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "soak: {problem}\nusage: cargo bench --bench soak -- \
         load|overload|redis-fault|pg-restart|model-fault|bridge-cut|feed|smoke [--rate R] [--feed-rate R] [--secs S] [--streams N] [--spread N] \
         [--set KEY=VALUE ...]"
    );
    std::process::exit(2)
}

/// Failed assertions of one scenario.
#[derive(Default)]
struct Checks {
    failures: Vec<String>,
}

impl Checks {
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        let what = what.into();
        if ok {
            println!("  ok: {what}");
        } else {
            println!("  FAIL: {what}");
            self.failures.push(what);
        }
    }
}

fn main() {
    let args = parse_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("soak")
        .enable_all()
        .build()
        .expect("a runtime");
    let Some(model_dir) = services::default_model_dir() else {
        eprintln!(
            "soak: no model in models/all-MiniLM-L6-v2 (run `cargo run --release -- fetch-model`)"
        );
        std::process::exit(2);
    };
    let corpus = Arc::new(modbot::corpus::generate(42, 200_000));
    let mut failed = Vec::new();
    let mut run = |name: &str, scenario: &dyn Fn() -> Result<Checks, String>| {
        println!("\n== {name} ({}; load average {})", now_utc(), loadavg());
        match scenario() {
            Ok(checks) if checks.failures.is_empty() => println!("{name}: PASSED"),
            Ok(checks) => {
                println!("{name}: FAILED ({} assertions)", checks.failures.len());
                failed.push(name.to_owned());
            }
            Err(skipped) if skipped.starts_with("SKIPPED") => println!("{name}: {skipped}"),
            Err(error) => {
                println!("{name}: FAILED: {error}");
                failed.push(name.to_owned());
            }
        }
        println!("   (load average after: {})", loadavg());
    };
    let secs = |default: f64| args.secs.unwrap_or(default);
    let rt = &runtime;
    let plan = |prefix: &str, secs: f64| Plan {
        rate: args.rate,
        secs,
        streams: args.streams,
        prefix: prefix.to_owned(),
        unique_texts: false,
        spread: args.spread,
    };
    match args.scenario.as_str() {
        "load" => run("load", &|| {
            rt.block_on(load_scenario(
                &model_dir,
                &args.sets,
                &corpus,
                plan("load", secs(600.0)),
            ))
        }),
        "overload" => run("overload", &|| {
            rt.block_on(overload_scenario(&model_dir, &corpus, secs(10.0)))
        }),
        "redis-fault" => run("redis-fault", &|| {
            rt.block_on(redis_scenario(
                &model_dir,
                &corpus,
                plan("redis", secs(30.0)),
            ))
        }),
        "pg-restart" => run("pg-restart", &|| {
            rt.block_on(pg_scenario(&model_dir, &corpus, plan("pg", secs(30.0))))
        }),
        "bridge-cut" => run("bridge-cut", &|| {
            rt.block_on(bridge_cut::scenario(secs(30.0)))
        }),
        "feed" => run("feed", &|| {
            rt.block_on(feed::scenario(&corpus, args.feed_rate, secs(10.0)))
        }),
        "model-fault" => run("model-fault", &|| {
            rt.block_on(model_fault_scenario(
                &model_dir,
                &corpus,
                plan("model", secs(8.0)),
            ))
        }),
        "smoke" => {
            run("load (smoke)", &|| {
                rt.block_on(load_scenario(
                    &model_dir,
                    &[],
                    &corpus,
                    plan("load", secs(45.0)),
                ))
            });
            run("overload (smoke)", &|| {
                rt.block_on(overload_scenario(&model_dir, &corpus, 6.0))
            });
            run("model-fault (smoke)", &|| {
                rt.block_on(model_fault_scenario(
                    &model_dir,
                    &corpus,
                    plan("model", 6.0),
                ))
            });
            run("redis-fault (smoke)", &|| {
                // Below capacity (the load scenario is the capacity check): at 833/s the two
                // cores are saturated, one Redis reply can pass its 250 ms bound before the
                // fault, and the check of clean verdicts before the fault measures the
                // machine, not the failover (seen once in CI: 49 of 5,266 at p50 646 ms).
                let plan = Plan {
                    rate: args.rate.min(600.0),
                    ..plan("redis", 21.0)
                };
                rt.block_on(redis_scenario(&model_dir, &corpus, plan))
            });
            run("pg-restart (smoke)", &|| {
                rt.block_on(pg_scenario(&model_dir, &corpus, plan("pg", 20.0)))
            });
            run("bridge-cut (smoke)", &|| {
                rt.block_on(bridge_cut::scenario(15.0))
            });
            run("feed (smoke)", &|| {
                rt.block_on(feed::scenario(&corpus, args.feed_rate, 8.0))
            });
        }
        other => usage(&format!("unknown scenario {other}")),
    }
    if !failed.is_empty() {
        eprintln!("soak: FAILED: {}", failed.join(", "));
        std::process::exit(1);
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn now_utc() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

fn model_on(model_dir: &std::path::Path) -> ServerOptions {
    ServerOptions {
        model_dir: Some(model_dir.to_owned()),
        ..ServerOptions::default()
    }
}

async fn start_server(options: &ServerOptions) -> Result<Modbot, String> {
    let mut server = Modbot::start(options);
    server.wait_serving(Duration::from_secs(60)).await?;
    Ok(server)
}

// ---------------------------------------------------------------------------------------------
// Streams with per-message accounting

/// What the streams send: `rate` messages/s in all for `secs`, spread round-robin over
/// `streams` streams, one channel each (`PREFIX-N`).
#[derive(Clone)]
struct Plan {
    rate: f64,
    secs: f64,
    streams: usize,
    prefix: String,
    /// Append a unique word to every text, so the model's cache cannot answer.
    unique_texts: bool,
    /// Each corpus user becomes this many users (`u0042~3`), each talking 1/N as often: the
    /// corpus has ~2,000 users, and at ten times the seed's traffic the same 2,000 would each
    /// talk ten times as much (the rate rule would time out a third of all messages).
    spread: usize,
}

impl Plan {
    fn total(&self) -> usize {
        (self.rate * self.secs).round() as usize
    }

    fn count_for(&self, stream: usize) -> usize {
        (self.total() + self.streams - 1 - stream) / self.streams
    }
}

/// One verdict as it arrived.
#[derive(Clone, Copy)]
struct Seen {
    /// Arrival, ms after the run's start.
    at_ms: u32,
    /// Scheduled send to arrival.
    latency_us: u32,
    flags: u16,
}

/// What one stream saw.
struct StreamOutcome {
    /// Verdicts per message index.
    counts: Vec<u8>,
    /// The first verdict's flags per message index.
    flags: Vec<u16>,
    sent: usize,
    seen: Vec<Seen>,
    action_ids: Vec<String>,
    commands: usize,
    repeated_commands: usize,
    stream_errors: Vec<String>,
    /// In-band errors refusing an action result because the database was unavailable.
    results_refused: usize,
    broken: Option<String>,
    unknown: usize,
    max_lag: Duration,
}

fn flags_of(verdict: &modbot::proto::Verdict) -> u16 {
    let mut flags = 0;
    for component in &verdict.degraded {
        flags |= match DegradedComponent::try_from(*component) {
            Ok(DegradedComponent::Model) => F_MODEL,
            Ok(DegradedComponent::UserState) => F_STATE,
            Ok(DegradedComponent::Store) => F_STORE,
            _ => 0,
        };
    }
    if !verdict.model_version.is_empty() {
        flags |= F_SCORED;
    }
    if verdict
        .reasons
        .iter()
        .any(|r| r.source == ReasonSource::Rule as i32 && !r.shadow)
    {
        flags |= F_RULE;
    }
    if !verdict.action_id.is_empty() {
        flags |= F_ACTION;
    }
    if verdict.decision >= modbot::proto::Decision::Timeout as i32 {
        flags |= F_MUTE;
    }
    flags
}

/// A unique lower-case word for message `n` (letters only, so normalisation keeps it).
fn unique_word(n: usize) -> String {
    let mut word = String::from("qz");
    let mut n = n;
    for _ in 0..5 {
        word.push((b'a' + (n % 26) as u8) as char);
        n /= 26;
    }
    word
}

async fn drive_stream(
    addr: String,
    stream: usize,
    plan: Plan,
    corpus: Arc<Vec<CorpusMessage>>,
    start: Instant,
    wall_start: SystemTime,
) -> StreamOutcome {
    let channel = format!("{}-{stream}", plan.prefix);
    let count = plan.count_for(stream);
    let mut outcome = StreamOutcome {
        counts: vec![0; count],
        flags: vec![0; count],
        sent: 0,
        seen: Vec::with_capacity(count),
        action_ids: Vec::new(),
        commands: 0,
        repeated_commands: 0,
        stream_errors: Vec::new(),
        results_refused: 0,
        broken: None,
        unknown: 0,
        max_lag: Duration::ZERO,
    };
    let mut client = match ModerationClient::connect(addr).await {
        Ok(client) => client,
        Err(error) => {
            outcome.broken = Some(format!("connect: {error}"));
            return outcome;
        }
    };
    let (tx, rx) = mpsc::channel(1024);
    let hello = StreamModerateRequest {
        kind: Some(stream_moderate_request::Kind::Hello(Hello {
            bridge_id: format!("soak-{channel}"),
            channels: vec![channel.clone()],
            dialect: "dgg".into(),
            bot_nick: "soakbot".into(),
        })),
    };
    tx.send(hello).await.expect("the channel is open");
    let mut inbound = match client.stream_moderate(ReceiverStream::new(rx)).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            outcome.broken = Some(format!("open: {status}"));
            return outcome;
        }
    };

    // Action results go out through their own task, so the reader never blocks on sending.
    let (results_tx, mut results_rx) = mpsc::unbounded_channel::<StreamModerateRequest>();
    let mut results_tx = Some(results_tx);
    let forward_tx = tx.clone();
    tokio::spawn(async move {
        while let Some(result) = results_rx.recv().await {
            if forward_tx.send(result).await.is_err() {
                break;
            }
        }
    });

    let scheduled: Arc<Vec<OnceLock<Instant>>> =
        Arc::new((0..count).map(|_| OnceLock::new()).collect());
    let mut sender = tokio::spawn({
        let scheduled = Arc::clone(&scheduled);
        let channel = channel.clone();
        let plan = plan.clone();
        async move {
            let mut max_lag = Duration::ZERO;
            let mut sent = 0;
            for i in 0..count {
                let k = i * plan.streams + stream;
                let offset = Duration::from_secs_f64(k as f64 / plan.rate);
                let due = start + offset;
                tokio::time::sleep_until(due.into()).await;
                max_lag = max_lag.max(due.elapsed());
                let _ = scheduled[i].set(due);
                let source = &corpus[k % corpus.len()];
                // Stamped on the schedule, so two runs of a plan see the same rhythm.
                let mut message =
                    load::chat_message(source, &channel, i.to_string(), wall_start + offset);
                if plan.unique_texts {
                    message.text = format!("{} {}", message.text, unique_word(k));
                }
                if plan.spread > 1 {
                    message.user_id = format!("{}~{}", message.user_id, k % plan.spread);
                    message.nick = format!("{}~{}", message.nick, k % plan.spread);
                }
                let request = StreamModerateRequest {
                    kind: Some(stream_moderate_request::Kind::Event(ChatEvent {
                        channel: channel.clone(),
                        kind: Some(chat_event::Kind::Message(message)),
                    })),
                };
                if tx.send(request).await.is_err() {
                    break;
                }
                sent += 1;
            }
            (sent, max_lag)
        }
    });

    let mut commanded = HashSet::new();
    let mut sent_total: Option<usize> = None;
    let mut answered = 0;
    let mut drain_deadline = None;
    let mut closed_at: Option<Instant> = None;
    loop {
        if let (Some(total), Some(deadline)) = (sent_total, drain_deadline)
            && results_tx.is_some()
            && (answered >= total || Instant::now() >= deadline)
        {
            // Everything is answered (or never will be): close our side; the server ends
            // the stream once it has answered what it read, and late duplicates still show.
            results_tx = None;
            closed_at = Some(Instant::now());
        }
        if closed_at.is_some_and(|at| at.elapsed() > Duration::from_secs(30)) {
            outcome.broken = Some("the stream did not end 30 s after the client closed".into());
            break;
        }
        let next = tokio::select! {
            done = &mut sender, if sent_total.is_none() => {
                let (sent, lag) = done.unwrap_or((0, Duration::ZERO));
                sent_total = Some(sent);
                outcome.sent = sent;
                outcome.max_lag = lag;
                drain_deadline = Some(Instant::now() + DRAIN);
                continue;
            }
            next = tokio::time::timeout(Duration::from_millis(250), inbound.message()) => next,
        };
        let response = match next {
            Err(_) => continue,
            Ok(Ok(Some(response))) => response,
            Ok(Ok(None)) => break,
            Ok(Err(status)) => {
                outcome.broken = Some(format!("{status}"));
                break;
            }
        };
        match response.kind {
            Some(stream_moderate_response::Kind::Verdict(verdict)) => {
                let now = Instant::now();
                let Some(index) = verdict
                    .message_id
                    .parse::<usize>()
                    .ok()
                    .filter(|&i| i < count)
                else {
                    outcome.unknown += 1;
                    continue;
                };
                let flags = flags_of(&verdict);
                outcome.counts[index] = outcome.counts[index].saturating_add(1);
                if outcome.counts[index] == 1 {
                    answered += 1;
                    outcome.flags[index] = flags;
                }
                let due = scheduled[index].get().copied().unwrap_or(now);
                outcome.seen.push(Seen {
                    at_ms: now.duration_since(start).as_millis() as u32,
                    latency_us: load::micros(now.duration_since(due)),
                    flags,
                });
                if !verdict.action_id.is_empty() {
                    outcome.action_ids.push(verdict.action_id);
                }
            }
            Some(stream_moderate_response::Kind::Command(command)) => {
                outcome.commands += 1;
                if !commanded.insert(command.action_id.clone()) {
                    outcome.repeated_commands += 1;
                }
                if let Some(results) = &results_tx {
                    let _ = results.send(StreamModerateRequest {
                        kind: Some(stream_moderate_request::Kind::ActionResult(ActionResult {
                            action_id: command.action_id,
                            ok: true,
                            ..ActionResult::default()
                        })),
                    });
                }
            }
            // The server could not record an action result (its database was down) and says
            // so in-band, naming the action with UNAVAILABLE: the harness counts it and does
            // not resend; the dispatcher sends such an action again on the next connection.
            // Matched by code and id, as `modbot bridge` does, never by the message's words.
            Some(stream_moderate_response::Kind::Error(error))
                if error.code == tonic::Code::Unavailable as i32 && !error.action_id.is_empty() =>
            {
                outcome.results_refused += 1;
            }
            Some(stream_moderate_response::Kind::Error(error)) => outcome
                .stream_errors
                .push(format!("{}: {}", error.message_id, error.message)),
            _ => {}
        }
    }
    if sent_total.is_none() {
        sender.abort();
        if let Ok((sent, lag)) = sender.await {
            outcome.sent = sent;
            outcome.max_lag = lag;
        }
    }
    outcome
}

async fn drive_streams(
    addr: &str,
    plan: &Plan,
    corpus: &Arc<Vec<CorpusMessage>>,
    start: Instant,
) -> Vec<StreamOutcome> {
    let wall_start = SystemTime::now();
    let tasks: Vec<_> = (0..plan.streams)
        .map(|s| {
            tokio::spawn(drive_stream(
                addr.to_owned(),
                s,
                plan.clone(),
                Arc::clone(corpus),
                start,
                wall_start,
            ))
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("a stream task"));
    }
    outcomes
}

/// The streams' outcomes, added up.
struct Summary {
    sent: usize,
    answered: usize,
    lost: usize,
    duplicated: usize,
    unknown: usize,
    not_sent: usize,
    elapsed: Duration,
    latencies: Vec<u32>,
    degraded: [usize; 3],
    scored: usize,
    actions: usize,
    commands: usize,
    repeated_commands: usize,
    stream_errors: Vec<String>,
    results_refused: usize,
    broken: Vec<String>,
    max_lag: Duration,
}

fn summarize(plan: &Plan, outcomes: &[StreamOutcome]) -> Summary {
    let mut s = Summary {
        sent: 0,
        answered: 0,
        lost: 0,
        duplicated: 0,
        unknown: 0,
        not_sent: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        degraded: [0; 3],
        scored: 0,
        actions: 0,
        commands: 0,
        repeated_commands: 0,
        stream_errors: Vec::new(),
        results_refused: 0,
        broken: Vec::new(),
        max_lag: Duration::ZERO,
    };
    for o in outcomes {
        s.sent += o.sent;
        s.not_sent += o.counts.len() - o.sent;
        s.answered += o.counts[..o.sent].iter().filter(|&&c| c >= 1).count();
        s.lost += o.counts[..o.sent].iter().filter(|&&c| c == 0).count();
        s.duplicated += o.counts.iter().filter(|&&c| c > 1).count();
        s.unknown += o.unknown;
        for seen in &o.seen {
            s.latencies.push(seen.latency_us);
            s.elapsed = s.elapsed.max(Duration::from_millis(u64::from(seen.at_ms)));
        }
        for f in &o.flags {
            s.degraded[0] += usize::from(f & F_MODEL != 0);
            s.degraded[1] += usize::from(f & F_STATE != 0);
            s.degraded[2] += usize::from(f & F_STORE != 0);
            s.scored += usize::from(f & F_SCORED != 0);
        }
        s.actions += o.action_ids.len();
        s.commands += o.commands;
        s.repeated_commands += o.repeated_commands;
        s.stream_errors
            .extend(o.stream_errors.iter().take(5).cloned());
        s.results_refused += o.results_refused;
        s.broken.extend(o.broken.clone());
        s.max_lag = s.max_lag.max(o.max_lag);
    }
    s.latencies.sort_unstable();
    println!(
        "  offered {:.0} msgs/s for {:.0} s over {} streams: sent {}, verdicts {}, lost {}, \
         duplicated {}, unknown ids {}, not sent {}",
        plan.rate,
        plan.secs,
        plan.streams,
        s.sent,
        s.answered,
        s.lost,
        s.duplicated,
        s.unknown,
        s.not_sent
    );
    println!(
        "  achieved {:.1} decisions/s (last verdict at {:.1} s); latency ms (scheduled send -> \
         verdict): p50 {:.2}  p99 {:.2}  max {:.2}; sender lag max {:.1} ms",
        s.answered as f64 / s.elapsed.as_secs_f64().max(1e-9),
        s.elapsed.as_secs_f64(),
        load::percentile(&s.latencies, 0.5),
        load::percentile(&s.latencies, 0.99),
        load::percentile(&s.latencies, 1.0),
        s.max_lag.as_secs_f64() * 1000.0
    );
    println!(
        "  degraded verdicts: model {}, user_state {}, store {}; scored by the model {}; \
         verdicts with an action {}; commands {} (repeated on a connection {})",
        s.degraded[0],
        s.degraded[1],
        s.degraded[2],
        s.scored,
        s.actions,
        s.commands,
        s.repeated_commands
    );
    if s.results_refused > 0 {
        println!(
            "  action results refused in-band (database unavailable): {}",
            s.results_refused
        );
    }
    if !s.stream_errors.is_empty() {
        println!("  stream errors (first): {:?}", s.stream_errors);
    }
    if !s.broken.is_empty() {
        println!("  streams broken: {:?}", s.broken);
    }
    s
}

/// The assertions every stream run must pass.
fn check_exactly_once(checks: &mut Checks, s: &Summary) {
    checks.check(
        s.lost == 0 && s.duplicated == 0 && s.unknown == 0,
        format!(
            "every message sent got exactly one verdict (lost {}, duplicated {}, unknown {})",
            s.lost, s.duplicated, s.unknown
        ),
    );
    checks.check(
        s.not_sent == 0 && s.broken.is_empty(),
        format!(
            "every message was sent and no stream broke ({} not sent, {} broken)",
            s.not_sent,
            s.broken.len()
        ),
    );
    checks.check(
        s.stream_errors.is_empty(),
        format!("no in-band stream errors ({})", s.stream_errors.len()),
    );
    checks.check(
        s.repeated_commands == 0,
        format!(
            "no action command sent twice on a connection ({})",
            s.repeated_commands
        ),
    );
}

/// The verdicts that arrived in `[from, to)` ms: (count, with all of `flags`, p99 ms).
fn window(outcomes: &[StreamOutcome], from_ms: u32, to_ms: u32, flags: u16) -> (usize, usize, f64) {
    let mut latencies = Vec::new();
    let mut flagged = 0;
    for seen in outcomes.iter().flat_map(|o| &o.seen) {
        if seen.at_ms >= from_ms && seen.at_ms < to_ms {
            latencies.push(seen.latency_us);
            flagged += usize::from(seen.flags & flags == flags);
        }
    }
    latencies.sort_unstable();
    (latencies.len(), flagged, load::percentile(&latencies, 0.99))
}

// ---------------------------------------------------------------------------------------------
// RSS

/// Samples a process's RSS once a second on a thread of its own (and, if asked, what it holds
/// in its bounded memory, every 10 s).
struct RssSampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<services::Rss>>,
    working_set: Option<WorkingSet>,
}

/// `modbot_users_in_memory` and `modbot_model_cache_entries` scraped every 10 s.
struct WorkingSet {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(f64, f64)>>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || {
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rss) = services::rss(pid) {
                        samples.push(rss);
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
                samples
            }
        });
        Self {
            stop,
            thread,
            working_set: None,
        }
    }

    /// Also scrapes the server's users in memory and score cache entries every 10 s.
    fn with_working_set(mut self, metrics: std::net::SocketAddr) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || {
                let mut samples = Vec::new();
                'run: while !stop.load(Ordering::Relaxed) {
                    samples.push((
                        services::scrape_metric(metrics, "modbot_users_in_memory"),
                        services::scrape_metric(metrics, "modbot_model_cache_entries"),
                    ));
                    for _ in 0..10 {
                        if stop.load(Ordering::Relaxed) {
                            break 'run;
                        }
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
                samples
            }
        });
        self.working_set = Some(WorkingSet { stop, thread });
        self
    }

    /// Stops and reports (first 20% mean, last 20% mean, max, the thirds' means) in MiB,
    /// printing them.
    fn finish(self) -> (f64, f64, f64, [f64; 3]) {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.thread.join().unwrap_or_default();
        if let Some(working_set) = self.working_set {
            working_set.stop.store(true, Ordering::Relaxed);
            let held = working_set.thread.join().unwrap_or_default();
            let every = (held.len() / 10).max(1);
            let trace = |pick: fn(&(f64, f64)) -> f64| {
                held.iter()
                    .step_by(every)
                    .map(|s| format!("{:.0}", pick(s)))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            println!(
                "  held in memory ({} samples, every 10 s; every {every}th): users {}; score \
                 cache entries {}",
                held.len(),
                trace(|s| s.0),
                trace(|s| s.1)
            );
        }
        let mib = |kib: u64| kib as f64 / 1024.0;
        let totals: Vec<u64> = samples.iter().map(|r| r.total).collect();
        let fifth = (totals.len() / 5).max(1);
        let mean = |s: &[u64]| s.iter().map(|&k| mib(k)).sum::<f64>() / s.len().max(1) as f64;
        let first = mean(&totals[..fifth.min(totals.len())]);
        let last = mean(&totals[totals.len().saturating_sub(fifth)..]);
        let max = totals.iter().copied().max().map_or(0.0, mib);
        let every = (totals.len() / 10).max(1);
        let trace: Vec<String> = totals
            .iter()
            .step_by(every)
            .map(|&k| format!("{:.0}", mib(k)))
            .collect();
        println!(
            "  server RSS MiB: first 20% mean {first:.1}, last 20% mean {last:.1}, max {max:.1} \
             ({} samples, 1/s; every {every}th: {})",
            totals.len(),
            trace.join(" ")
        );
        let third = totals.len() / 3;
        let thirds_of = |pick: fn(&services::Rss) -> u64| -> [f64; 3] {
            let values: Vec<u64> = samples.iter().map(pick).collect();
            [
                mean(&values[..third]),
                mean(&values[third..2 * third]),
                mean(&values[2 * third..]),
            ]
        };
        let thirds = thirds_of(|r| r.total);
        // Which kind of memory grew: the heap (anonymous), mapped files, or shared memory
        // (SQLite's WAL index).
        for (kind, part) in [
            ("anonymous", thirds_of(|r| r.anon)),
            ("file-backed", thirds_of(|r| r.file)),
            ("shared", thirds_of(|r| r.shmem)),
        ] {
            println!(
                "    {kind} by thirds (mean MiB): {:.1}, {:.1}, {:.1}",
                part[0], part[1], part[2]
            );
        }
        (first, last, max, thirds)
    }
}

/// Prints the size of each file in the server's data directory (the SQLite database, its WAL
/// and WAL index), which the RSS it maps and caches follows.
fn print_data_files(dir: &std::path::Path) {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            Some((
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().ok()?.len(),
            ))
        })
        .collect();
    files.sort();
    let shown: Vec<String> = files
        .iter()
        .map(|(name, len)| format!("{name} {:.1} MiB", *len as f64 / 1_048_576.0))
        .collect();
    println!("  data files at the end: {}", shown.join(", "));
}

// ---------------------------------------------------------------------------------------------
// Scenarios

async fn load_scenario(
    model_dir: &std::path::Path,
    sets: &[(String, String)],
    corpus: &Arc<Vec<CorpusMessage>>,
    plan: Plan,
) -> Result<Checks, String> {
    let mut options = model_on(model_dir);
    options.sets.extend_from_slice(sets);
    if !sets.is_empty() {
        let shown: Vec<String> = sets.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("  server settings: {}", shown.join(" "));
    }
    let server = start_server(&options).await?;
    let rss = RssSampler::start(server.pid()).with_working_set(server.metrics);
    let start = Instant::now();
    let outcomes = drive_streams(&server.addr, &plan, corpus, start).await;
    let (first, last, _max, thirds) = rss.finish();
    let summary = summarize(&plan, &outcomes);
    let mut checks = Checks::default();
    check_exactly_once(&mut checks, &summary);
    // Steady state: the verdicts that arrived from the first tenth of the run to its end,
    // per second (the whole run's figure includes the start and the last verdicts' latency).
    let from = plan.secs * 0.1;
    let (steady, _, _) = window(
        &outcomes,
        (from * 1000.0) as u32,
        (plan.secs * 1000.0) as u32,
        0,
    );
    let achieved = steady as f64 / (plan.secs - from);
    checks.check(
        achieved >= plan.rate * 0.97,
        format!(
            "steady state {achieved:.1} decisions/s ({from:.0} s to {:.0} s), at least 97% of \
             the offered {}",
            plan.secs, plan.rate
        ),
    );
    checks.check(
        summary.scored > 0,
        format!("the model scored messages ({})", summary.scored),
    );
    // Memory flat: user state (bounded by state.max_users) and the score cache (by
    // model.cache_entries) fill while new users and texts keep arriving, so RSS rises early
    // and levels off; a leak proportional to traffic keeps rising. Over runs long enough to
    // tell (5 minutes or more), the last third must grow less than half as much as the second
    // did (or under 8 MiB).
    let (g2, g3) = (thirds[1] - thirds[0], thirds[2] - thirds[1]);
    println!(
        "  RSS by thirds of the run (mean MiB): {:.1}, {:.1}, {:.1}; first/last 20% {first:.1} / \
         {last:.1}",
        thirds[0], thirds[1], thirds[2]
    );
    if plan.secs >= 300.0 {
        checks.check(
            g3 <= (g2 / 2.0).max(8.0),
            format!(
                "memory flat: RSS grew {g3:.1} MiB in the last third against {g2:.1} in the \
                 second"
            ),
        );
    }
    print_data_files(&server.data_dir());
    let stopped = server.stop(Duration::from_secs(10));
    checks.check(stopped, "the server stopped cleanly on SIGTERM");
    Ok(checks)
}

/// One unary call's outcome.
#[derive(Clone, Copy, PartialEq)]
enum Outcome {
    Ok { model_degraded: bool },
    Exhausted { pushback: bool },
    Timeout,
    Other(tonic::Code),
}

#[derive(Clone, Copy)]
struct Call {
    latency_us: u32,
    outcome: Outcome,
}

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

async fn classify_once(
    client: &mut ModerationClient<tonic::transport::Channel>,
    source: &CorpusMessage,
    n: usize,
) -> Call {
    let message = load::chat_message(source, "overload", format!("c{n}"), SystemTime::now());
    let text = format!("{} {}", message.text, unique_word(n));
    let request = ClassifyRequest {
        messages: vec![modbot::proto::ChatMessage { text, ..message }],
        options: None,
    };
    let sent = Instant::now();
    let answer = tokio::time::timeout(CALL_TIMEOUT, client.classify(request)).await;
    let latency_us = load::micros(sent.elapsed());
    let outcome = match answer {
        Err(_) => Outcome::Timeout,
        Ok(Ok(response)) => Outcome::Ok {
            model_degraded: response
                .into_inner()
                .verdicts
                .iter()
                .any(|v| flags_of(v) & F_MODEL != 0),
        },
        Ok(Err(status)) if status.code() == tonic::Code::ResourceExhausted => Outcome::Exhausted {
            pushback: status
                .metadata()
                .get("grpc-retry-pushback-ms")
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .is_some(),
        },
        Ok(Err(status)) if status.code() == tonic::Code::DeadlineExceeded => Outcome::Timeout,
        Ok(Err(status)) => Outcome::Other(status.code()),
    };
    Call {
        latency_us,
        outcome,
    }
}

/// Closed loop: `workers` callers back to back for `secs`; calls whose verdict was scored
/// (not degraded) per second.
async fn probe_capacity(
    addr: &str,
    corpus: &Arc<Vec<CorpusMessage>>,
    workers: usize,
    secs: f64,
) -> (f64, Vec<Call>) {
    let client = ModerationClient::connect(addr.to_owned())
        .await
        .expect("connect");
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let mut client = client.clone();
            let next = Arc::clone(&next);
            let corpus = Arc::clone(corpus);
            tokio::spawn(async move {
                let mut calls = Vec::new();
                while Instant::now() < deadline {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    calls.push(classify_once(&mut client, &corpus[n % corpus.len()], n).await);
                }
                calls
            })
        })
        .collect();
    let mut calls = Vec::new();
    for task in tasks {
        calls.extend(task.await.expect("a probe task"));
    }
    let good = calls
        .iter()
        .filter(|c| {
            c.outcome
                == Outcome::Ok {
                    model_degraded: false,
                }
        })
        .count();
    (good as f64 / start.elapsed().as_secs_f64(), calls)
}

/// Open loop: `rate` calls/s for `secs` whatever the answers, at most `cap` in flight
/// (beyond it a call is not made and counted as shed by the client).
async fn offer_classify(
    addr: &str,
    corpus: &Arc<Vec<CorpusMessage>>,
    rate: f64,
    secs: f64,
    first: usize,
    cap: usize,
) -> (Vec<Call>, usize) {
    // Several connections, as several backend services would have.
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(
            ModerationClient::connect(addr.to_owned())
                .await
                .expect("connect"),
        );
    }
    let in_flight = Arc::new(tokio::sync::Semaphore::new(cap));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let start = Instant::now();
    let total = (rate * secs).round() as usize;
    let mut shed = 0;
    for i in 0..total {
        tokio::time::sleep_until((start + Duration::from_secs_f64(i as f64 / rate)).into()).await;
        let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
            shed += 1;
            continue;
        };
        let mut client = clients[i % clients.len()].clone();
        let corpus = Arc::clone(corpus);
        let done = done_tx.clone();
        tokio::spawn(async move {
            let n = first + i;
            let call = classify_once(&mut client, &corpus[n % corpus.len()], n).await;
            drop(permit);
            let _ = done.send(call);
        });
    }
    drop(done_tx);
    let mut calls = Vec::with_capacity(total);
    while let Some(call) = done_rx.recv().await {
        calls.push(call);
    }
    (calls, shed)
}

struct CallStats {
    ok: usize,
    ok_degraded: usize,
    exhausted: usize,
    exhausted_with_pushback: usize,
    timeouts: usize,
    other: BTreeMap<String, usize>,
    ok_p99: f64,
    exhausted_p50: f64,
    exhausted_p99: f64,
    exhausted_max: f64,
}

fn call_stats(label: &str, calls: &[Call], secs: f64) -> CallStats {
    let mut ok_lat = Vec::new();
    let mut ex_lat = Vec::new();
    let mut s = CallStats {
        ok: 0,
        ok_degraded: 0,
        exhausted: 0,
        exhausted_with_pushback: 0,
        timeouts: 0,
        other: BTreeMap::new(),
        ok_p99: 0.0,
        exhausted_p50: 0.0,
        exhausted_p99: 0.0,
        exhausted_max: 0.0,
    };
    for call in calls {
        match call.outcome {
            Outcome::Ok { model_degraded } => {
                s.ok += 1;
                s.ok_degraded += usize::from(model_degraded);
                ok_lat.push(call.latency_us);
            }
            Outcome::Exhausted { pushback } => {
                s.exhausted += 1;
                s.exhausted_with_pushback += usize::from(pushback);
                ex_lat.push(call.latency_us);
            }
            Outcome::Timeout => s.timeouts += 1,
            Outcome::Other(code) => *s.other.entry(format!("{code:?}")).or_default() += 1,
        }
    }
    ok_lat.sort_unstable();
    ex_lat.sort_unstable();
    s.ok_p99 = load::percentile(&ok_lat, 0.99);
    s.exhausted_p50 = load::percentile(&ex_lat, 0.5);
    s.exhausted_p99 = load::percentile(&ex_lat, 0.99);
    s.exhausted_max = load::percentile(&ex_lat, 1.0);
    let total = calls.len().max(1) as f64;
    println!(
        "  {label}: {} calls in {secs:.0} s; OK {} ({:.1}%; {} of them rules-only, model \
         degraded; p50 {:.1} ms, p99 {:.1} ms); RESOURCE_EXHAUSTED {} ({:.1}%, {} with \
         grpc-retry-pushback-ms; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms); timeouts {}; other {:?}",
        calls.len(),
        s.ok,
        100.0 * s.ok as f64 / total,
        s.ok_degraded,
        load::percentile(&ok_lat, 0.5),
        s.ok_p99,
        s.exhausted,
        100.0 * s.exhausted as f64 / total,
        s.exhausted_with_pushback,
        s.exhausted_p50,
        s.exhausted_p99,
        s.exhausted_max,
        s.timeouts,
        s.other
    );
    s
}

async fn overload_scenario(
    model_dir: &std::path::Path,
    corpus: &Arc<Vec<CorpusMessage>>,
    secs: f64,
) -> Result<Checks, String> {
    let server = start_server(&model_on(model_dir)).await?;
    let mut checks = Checks::default();
    // Every text is unique, so the score cache cannot answer: this is the model's capacity.
    let probe_secs = (secs * 0.6).max(4.0);
    let (capacity, probe) = probe_capacity(&server.addr, corpus, 64, probe_secs).await;
    let _ = call_stats(
        "capacity probe (64 callers back to back)",
        &probe,
        probe_secs,
    );
    println!("  capacity: {capacity:.0} scored Classify calls/s (one message each)");
    let offered = (capacity * 3.0).max(1500.0);

    // Overload, with a stream beside it: what does a bridge see meanwhile?
    let stream_plan = Plan {
        rate: 100.0,
        secs,
        streams: 1,
        prefix: "overload-stream".into(),
        unique_texts: true,
        spread: 10,
    };
    let stream_task = {
        let addr = server.addr.clone();
        let plan = stream_plan.clone();
        let corpus = Arc::clone(corpus);
        tokio::spawn(async move { drive_streams(&addr, &plan, &corpus, Instant::now()).await })
    };
    let (calls, shed) = offer_classify(&server.addr, corpus, offered, secs, 1 << 24, 8192).await;
    println!(
        "  offered {offered:.0} calls/s (3x capacity) for {secs:.0} s; shed by the client (8192 in flight): {shed}"
    );
    let over = call_stats("overload", &calls, secs);
    let stream = stream_task.await.map_err(|e| e.to_string())?;
    println!("  a stream at 100 msgs/s (unique texts) during the overload:");
    let stream_summary = summarize(&stream_plan, &stream);
    check_exactly_once(&mut checks, &stream_summary);

    checks.check(
        over.exhausted > 0,
        format!(
            "offered load beyond capacity was refused with RESOURCE_EXHAUSTED ({} of {})",
            over.exhausted,
            calls.len()
        ),
    );
    checks.check(
        over.exhausted_p99 <= FAST_REJECTION_MS,
        format!(
            "rejections are fast: p99 {:.2} ms <= {FAST_REJECTION_MS} ms",
            over.exhausted_p99
        ),
    );
    checks.check(
        over.exhausted_with_pushback == over.exhausted,
        format!(
            "every RESOURCE_EXHAUSTED carries grpc-retry-pushback-ms ({} of {})",
            over.exhausted_with_pushback, over.exhausted
        ),
    );
    checks.check(
        over.timeouts == 0 && over.other.is_empty() && shed == 0,
        format!(
            "no timeouts or other errors ({} timeouts, {:?}, {shed} shed)",
            over.timeouts, over.other
        ),
    );

    // Recovery: the queue drains within model.max_wait_ms; then half the capacity is served.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let recovery_rate = (capacity * 0.5).max(50.0);
    let (calls, shed) =
        offer_classify(&server.addr, corpus, recovery_rate, secs, 1 << 25, 8192).await;
    println!("  recovery: offered {recovery_rate:.0} calls/s (half the capacity) for {secs:.0} s");
    let rec = call_stats("recovery", &calls, secs);
    checks.check(
        rec.ok == calls.len() && shed == 0 && !calls.is_empty(),
        format!(
            "after the overload every call succeeds ({} of {})",
            rec.ok,
            calls.len()
        ),
    );
    checks.check(
        rec.ok_degraded * 100 <= rec.ok.max(1),
        format!(
            "and is scored by the model again (degraded {} of {}, at most 1%)",
            rec.ok_degraded, rec.ok
        ),
    );
    let stopped = server.stop(Duration::from_secs(10));
    checks.check(stopped, "the server stopped cleanly on SIGTERM");
    Ok(checks)
}

fn services_required() -> bool {
    std::env::var_os("MODBOT_TEST_REQUIRE_SERVICES").is_some_and(|v| !v.is_empty())
}

async fn redis_scenario(
    model_dir: &std::path::Path,
    corpus: &Arc<Vec<CorpusMessage>>,
    plan: Plan,
) -> Result<Checks, String> {
    if !Redis::available() {
        return if services_required() {
            Err("redis-server is not installed and MODBOT_TEST_REQUIRE_SERVICES is set".into())
        } else {
            Err("SKIPPED (redis-server is not installed)".into())
        };
    }
    let redis = Redis::start()?;
    println!("  private redis-server on port {}", redis.port);
    let mut options = model_on(model_dir);
    options.env.push(("MODBOT_REDIS_URL".into(), redis.url()));
    let server = start_server(&options).await?;
    let kill_at = Duration::from_secs_f64(plan.secs / 3.0);
    let restart_at = Duration::from_secs_f64(plan.secs * 2.0 / 3.0);
    let start = Instant::now();
    let controller = tokio::task::spawn_blocking(move || {
        let mut redis = redis;
        std::thread::sleep(kill_at.saturating_sub(start.elapsed()));
        redis.kill();
        let killed = start.elapsed();
        std::thread::sleep(restart_at.saturating_sub(start.elapsed()));
        let restarted = redis.restart().map(|()| start.elapsed());
        (redis, killed, restarted)
    });
    let outcomes = drive_streams(&server.addr, &plan, corpus, start).await;
    let (_redis, killed, restarted) = controller.await.map_err(|e| e.to_string())?;
    let restarted = restarted?;
    let summary = summarize(&plan, &outcomes);
    let mut checks = Checks::default();
    check_exactly_once(&mut checks, &summary);

    let ms = |d: Duration| d.as_millis() as u32;
    let (before, before_degraded, before_p99) = window(&outcomes, 0, ms(killed), F_STATE);
    let outage_from = ms(killed) + 1000;
    let (during, during_degraded, during_p99) =
        window(&outcomes, outage_from, ms(restarted), F_STATE);
    let last_degraded = outcomes
        .iter()
        .flat_map(|o| &o.seen)
        .filter(|s| s.flags & F_STATE != 0)
        .map(|s| s.at_ms)
        .max()
        .unwrap_or(0);
    let recovered_after = f64::from(last_degraded.saturating_sub(ms(restarted))) / 1000.0;
    let (after, after_degraded, after_p99) =
        window(&outcomes, last_degraded + 1, u32::MAX, F_STATE);
    println!(
        "  Redis killed at {:.1} s, back (PONG) at {:.1} s",
        killed.as_secs_f64(),
        restarted.as_secs_f64()
    );
    println!(
        "  before: {before} verdicts, {before_degraded} user_state-degraded, p99 {before_p99:.1} ms"
    );
    println!(
        "  outage ({:.1}..{:.1} s): {during} verdicts ({:.0}/s), {during_degraded} \
         user_state-degraded, p99 {during_p99:.1} ms",
        f64::from(outage_from) / 1000.0,
        restarted.as_secs_f64(),
        during as f64 / (f64::from(ms(restarted).saturating_sub(outage_from)) / 1000.0).max(1e-3),
    );
    println!(
        "  last degraded verdict {recovered_after:.2} s after Redis was back; after it: {after} \
         verdicts, {after_degraded} degraded, p99 {after_p99:.1} ms"
    );
    checks.check(
        before > 0 && before_degraded == 0,
        format!("before the fault no verdict is degraded ({before_degraded} of {before})"),
    );
    let outage_secs = f64::from(ms(restarted).saturating_sub(outage_from)) / 1000.0;
    checks.check(
        during as f64 >= plan.rate * outage_secs * 0.9,
        format!(
            "decisions continue during the outage ({during} verdicts in {outage_secs:.1} s at \
             {} offered/s)",
            plan.rate
        ),
    );
    checks.check(
        during > 0 && during_degraded == during,
        format!(
            "every verdict during the outage is marked DEGRADED_COMPONENT_USER_STATE \
             ({during_degraded} of {during})"
        ),
    );
    checks.check(
        recovered_after <= 5.0 && after > 0,
        format!(
            "verdicts stop being degraded within 5 s of Redis returning ({recovered_after:.2} s)"
        ),
    );
    let stopped = server.stop(Duration::from_secs(10));
    checks.check(stopped, "the server stopped cleanly on SIGTERM");
    Ok(checks)
}

/// Calls `call` until it answers something other than UNAVAILABLE (or a transport error),
/// for at most 30 s; how many UNAVAILABLE answers it saw.
async fn retry_unavailable<T, F, Fut>(mut call: F) -> (Result<T, tonic::Status>, usize)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut unavailable = 0;
    loop {
        match call().await {
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal
                ) && Instant::now() < deadline =>
            {
                unavailable += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return (other, unavailable),
        }
    }
}

/// What the moderator-side loop of the PostgreSQL scenario was told.
#[derive(Default)]
struct Acked {
    /// ExecuteAction answered OK: (idempotency key, action id).
    actions: Vec<(String, String)>,
    /// FileAppeal answered OK: appeal id.
    appeals: Vec<String>,
    /// FileAppeal retries that found an appeal already filed (the first attempt's answer
    /// was lost: it may or may not have been written).
    ambiguous_appeals: Vec<String>,
    unavailable: usize,
    /// The slowest acknowledged ExecuteAction, retries included.
    slowest: Duration,
    errors: Vec<String>,
}

async fn moderator_loop(addr: String, until: Instant) -> Acked {
    let channel = tonic::transport::Endpoint::from_shared(addr)
        .expect("an address")
        .connect_lazy();
    let actions = ActionsClient::new(channel.clone());
    let appeals = AppealsClient::new(channel);
    let mut acked = Acked::default();
    let mut n = 0;
    while Instant::now() < until {
        n += 1;
        let request = ExecuteActionRequest {
            channel: "pg-actions".into(),
            target_user_id: format!("target-{n}"),
            target_nick: format!("target{n}"),
            kind: ActionKind::Timeout as i32,
            duration: Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            }),
            reason: "soak".into(),
            source: ActionSource::Moderator as i32,
            moderator: "soak-mod".into(),
            idempotency_key: format!("soak-{n}"),
            ..ExecuteActionRequest::default()
        };
        let began = Instant::now();
        let (answer, unavailable) = retry_unavailable(|| {
            let mut actions = actions.clone();
            let request = request.clone();
            async move { actions.execute_action(request).await }
        })
        .await;
        acked.unavailable += unavailable;
        let action = match answer {
            Ok(response) => match response.into_inner().action {
                Some(action) => action,
                None => {
                    acked.errors.push("ExecuteAction: no action".into());
                    continue;
                }
            },
            Err(status) => {
                acked.errors.push(format!("ExecuteAction: {status}"));
                continue;
            }
        };
        acked.slowest = acked.slowest.max(began.elapsed());
        acked
            .actions
            .push((request.idempotency_key.clone(), action.id.clone()));
        if n % 2 == 0 {
            let appeal = FileAppealRequest {
                action_id: action.id.clone(),
                user_id: format!("target-{n}"),
                text: "it was a joke".into(),
            };
            let mut attempts = 0;
            let (answer, unavailable) = retry_unavailable(|| {
                attempts += 1;
                let mut appeals = appeals.clone();
                let appeal = appeal.clone();
                async move { appeals.file_appeal(appeal).await }
            })
            .await;
            acked.unavailable += unavailable;
            match answer {
                Ok(response) => acked.appeals.push(response.into_inner().id),
                Err(status)
                    if attempts > 1
                        && matches!(
                            status.code(),
                            tonic::Code::FailedPrecondition | tonic::Code::AlreadyExists
                        ) =>
                {
                    acked.ambiguous_appeals.push(action.id.clone());
                }
                Err(status) => acked.errors.push(format!("FileAppeal: {status}")),
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    acked
}

/// Every action of `channel` (paging ListActions): id → how many times listed.
async fn list_actions(addr: &str, channel: &str) -> Result<HashMap<String, usize>, String> {
    let mut client = ActionsClient::connect(addr.to_owned())
        .await
        .map_err(|e| e.to_string())?;
    let mut ids = HashMap::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_actions(ListActionsRequest {
                channel: channel.to_owned(),
                page_size: 500,
                page_token: page_token.clone(),
                ..ListActionsRequest::default()
            })
            .await
            .map_err(|s| format!("ListActions: {s}"))?
            .into_inner();
        for action in page.actions {
            *ids.entry(action.id).or_insert(0) += 1;
        }
        if page.next_page_token.is_empty() {
            return Ok(ids);
        }
        page_token = page.next_page_token;
    }
}

/// Every appeal of `channel`: id → (action id, times listed).
async fn list_appeals(
    addr: &str,
    channel: &str,
) -> Result<HashMap<String, (String, usize)>, String> {
    let mut client = AppealsClient::connect(addr.to_owned())
        .await
        .map_err(|e| e.to_string())?;
    let mut ids: HashMap<String, (String, usize)> = HashMap::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_appeals(ListAppealsRequest {
                channel: channel.to_owned(),
                page_size: 500,
                page_token: page_token.clone(),
                ..ListAppealsRequest::default()
            })
            .await
            .map_err(|s| format!("ListAppeals: {s}"))?
            .into_inner();
        for appeal in page.appeals {
            ids.entry(appeal.id).or_insert((appeal.action_id, 0)).1 += 1;
        }
        if page.next_page_token.is_empty() {
            return Ok(ids);
        }
        page_token = page.next_page_token;
    }
}

async fn pg_scenario(
    model_dir: &std::path::Path,
    corpus: &Arc<Vec<CorpusMessage>>,
    plan: Plan,
) -> Result<Checks, String> {
    if !Postgres::available() {
        return if services_required() {
            Err("initdb is not installed and MODBOT_TEST_REQUIRE_SERVICES is set".into())
        } else {
            Err("SKIPPED (PostgreSQL's initdb is not installed)".into())
        };
    }
    let postgres = tokio::task::spawn_blocking(Postgres::start)
        .await
        .map_err(|e| e.to_string())??;
    println!("  private PostgreSQL cluster on port {}", postgres.port);
    let mut options = model_on(model_dir);
    options
        .env
        .push(("MODBOT_DATABASE_URL".into(), postgres.url()));
    let server = start_server(&options).await?;
    let restart_at = Duration::from_secs_f64(plan.secs / 2.0);
    let start = Instant::now();
    let controller = tokio::task::spawn_blocking(move || {
        std::thread::sleep(restart_at.saturating_sub(start.elapsed()));
        let began = start.elapsed();
        let result = postgres.restart().map(|()| (began, start.elapsed()));
        (postgres, result)
    });
    let moderators = tokio::spawn(moderator_loop(
        server.addr.clone(),
        start + Duration::from_secs_f64(plan.secs),
    ));
    let outcomes = drive_streams(&server.addr, &plan, corpus, start).await;
    let acked = moderators.await.map_err(|e| e.to_string())?;
    let (_postgres, restarted) = controller.await.map_err(|e| e.to_string())?;
    let (began, back) = restarted?;
    println!(
        "  pg_ctl restart -m fast from {:.1} s to {:.1} s",
        began.as_secs_f64(),
        back.as_secs_f64()
    );
    let summary = summarize(&plan, &outcomes);
    let mut checks = Checks::default();
    check_exactly_once(&mut checks, &summary);

    // The audit writer retries a failed batch for about a second; give it time to finish.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let audit_failures = server.metric("modbot_audit_write_failures_total");
    let action_failures = server.metric("modbot_action_write_failures_total");
    println!(
        "  server: modbot_audit_write_failures_total {audit_failures}, \
         modbot_action_write_failures_total {action_failures}"
    );

    // Automatic actions the verdicts named.
    let mut missing_automatic = 0;
    let mut automatic = 0;
    for (stream, outcome) in outcomes.iter().enumerate() {
        let listed = list_actions(&server.addr, &format!("{}-{stream}", plan.prefix)).await?;
        for id in &outcome.action_ids {
            automatic += 1;
            if listed.get(id).copied().unwrap_or(0) != 1 {
                missing_automatic += 1;
            }
        }
    }
    println!(
        "  verdicts naming an action: {automatic}; of those actions not stored: {missing_automatic}"
    );
    // Moderators' actions and appeals.
    let listed = list_actions(&server.addr, "pg-actions").await?;
    let missing_actions = acked
        .actions
        .iter()
        .filter(|(_, id)| listed.get(id).copied().unwrap_or(0) != 1)
        .count();
    let distinct_keys: HashSet<&String> = acked.actions.iter().map(|(k, _)| k).collect();
    let appeals = list_appeals(&server.addr, "pg-actions").await?;
    let missing_appeals = acked
        .appeals
        .iter()
        .filter(|id| appeals.get(*id).map_or(0, |(_, n)| *n) != 1)
        .count();
    let mut per_action: HashMap<&String, usize> = HashMap::new();
    for (action, _) in appeals.values() {
        *per_action.entry(action).or_default() += 1;
    }
    let double_appeals = per_action.values().filter(|&&n| n > 1).count();
    let ambiguous_found = acked
        .ambiguous_appeals
        .iter()
        .filter(|a| per_action.contains_key(a))
        .count();
    println!(
        "  ExecuteAction acknowledged {} (UNAVAILABLE answers retried with the same key: {}), \
         stored {} in the channel; FileAppeal acknowledged {}, ambiguous retries {} ({} of \
         them stored); errors {:?}",
        acked.actions.len(),
        acked.unavailable,
        listed.len(),
        acked.appeals.len(),
        acked.ambiguous_appeals.len(),
        ambiguous_found,
        acked.errors.iter().take(5).collect::<Vec<_>>()
    );
    println!(
        "  slowest acknowledged ExecuteAction (retries included): {:.0} ms",
        acked.slowest.as_secs_f64() * 1000.0
    );
    checks.check(
        acked.errors.is_empty(),
        format!("no call failed for good ({:?})", acked.errors),
    );
    checks.check(
        missing_actions == 0 && distinct_keys.len() == acked.actions.len(),
        format!(
            "every acknowledged ExecuteAction is stored exactly once ({missing_actions} missing)"
        ),
    );
    checks.check(
        listed.len() == acked.actions.len(),
        format!(
            "no action twice: {} stored for {} idempotency keys",
            listed.len(),
            acked.actions.len()
        ),
    );
    checks.check(
        missing_appeals == 0 && double_appeals == 0,
        format!(
            "every acknowledged appeal is stored exactly once ({missing_appeals} missing, \
             {double_appeals} actions with two)"
        ),
    );
    checks.check(
        missing_automatic == 0,
        format!(
            "every action a verdict named exists ({missing_automatic} of {automatic} missing; \
             audit write failures reported: {audit_failures})"
        ),
    );
    let stopped = server.stop(Duration::from_secs(10));
    checks.check(stopped, "the server stopped cleanly on SIGTERM");
    Ok(checks)
}

async fn model_fault_scenario(
    model_dir: &std::path::Path,
    corpus: &Arc<Vec<CorpusMessage>>,
    plan: Plan,
) -> Result<Checks, String> {
    let mut checks = Checks::default();
    // The reference: a healthy model on the same plan.
    let server = start_server(&model_on(model_dir)).await?;
    let model_health = load::health(&server.addr, modbot::app::MODEL_HEALTH_NAME).await;
    println!("  reference run, healthy model (health modbot.model {model_health:?}):");
    let reference = drive_streams(&server.addr, &plan, corpus, Instant::now()).await;
    let ref_summary = summarize(&plan, &reference);
    check_exactly_once(&mut checks, &ref_summary);
    server.stop(Duration::from_secs(10));

    // The fault: a copy of the model directory whose weights are garbage.
    let broken = tempfile::tempdir().map_err(|e| e.to_string())?;
    for entry in walk(model_dir) {
        let target = broken
            .path()
            .join(entry.strip_prefix(model_dir).expect("inside"));
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::copy(&entry, &target).map_err(|e| e.to_string())?;
    }
    let garbage: Vec<u8> = (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(broken.path().join("model.safetensors"), garbage).map_err(|e| e.to_string())?;
    let server = start_server(&model_on(broken.path())).await?;
    let model_health = load::health(&server.addr, modbot::app::MODEL_HEALTH_NAME).await;
    let overall = load::health(&server.addr, "").await;
    println!(
        "  garbage weights: health modbot.model {model_health:?}, overall {overall:?}; same plan:"
    );
    let faulty = drive_streams(&server.addr, &plan, corpus, Instant::now()).await;
    let summary = summarize(&plan, &faulty);
    check_exactly_once(&mut checks, &summary);
    checks.check(
        model_health == Some(ServingStatus::NotServing) && overall == Some(ServingStatus::Serving),
        format!(
            "health: modbot.model NOT_SERVING ({model_health:?}), the server SERVING ({overall:?})"
        ),
    );
    let mut needed = 0;
    let mut marked = 0;
    let mut marked_not_needed = 0;
    let mut rules_ref = 0;
    let mut rules_same = 0;
    let mut muted_by_rules = 0;
    for (r, f) in reference.iter().zip(&faulty) {
        for (&rf, &ff) in r.flags.iter().zip(&f.flags) {
            let need = rf & (F_SCORED | F_MODEL) != 0;
            needed += usize::from(need);
            marked += usize::from(need && ff & F_MODEL != 0);
            marked_not_needed += usize::from(!need && ff & F_MODEL != 0);
            if rf & F_RULE != 0 {
                rules_ref += 1;
                rules_same += usize::from(ff & F_RULE != 0);
            }
            muted_by_rules += usize::from(ff & F_RULE != 0 && ff & F_MUTE != 0);
        }
    }
    println!(
        "  messages the model scored in the reference: {needed}; marked DEGRADED_COMPONENT_MODEL \
         with garbage weights: {marked} (+{marked_not_needed} not needed); rule reasons: {rules_same} of {rules_ref} \
         again; timed out or banned by a rule: {muted_by_rules}"
    );
    checks.check(
        needed > 0 && marked == needed && marked_not_needed == 0 && summary.scored == 0,
        format!(
            "exactly the verdicts that needed the model are marked DEGRADED_COMPONENT_MODEL \
             ({marked} of {needed}, {marked_not_needed} others; scored {})",
            summary.scored
        ),
    );
    checks.check(
        rules_ref > 0 && rules_same == rules_ref && muted_by_rules > 0,
        format!(
            "rules still act: every message a rule fired on fires again ({rules_same} of \
             {rules_ref}); {muted_by_rules} timeouts/bans by rules"
        ),
    );
    let stopped = server.stop(Duration::from_secs(10));
    checks.check(stopped, "the server stopped cleanly on SIGTERM");
    Ok(checks)
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
