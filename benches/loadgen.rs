//! Load generator: chat events through `StreamModerate` over loopback.
//!
//! ```text
//! cargo bench --bench loadgen -- [--events N] [--streams S] [--window W] [--rate R]
//!                                [--classify] [--model] [--addr HOST:PORT | --rules FILE]
//! ```
//!
//! Without `--addr` it starts modbot in this process on 127.0.0.1:0 with the embedded defaults
//! (built-in rules, in-process user state, SQLite in a temporary directory), on its own tokio
//! runtime, so the server and the generator share the machine as they would on one host.
//! The in-process server runs rules-only unless `--model` is given: then it loads the default
//! encoder (`modbot fetch-model` first) with the committed heads in `models/heads` (toxicity,
//! spam and sentiment; a nearest-centroid `toxicity/insult` head made from a few example lines
//! when there are none), so every message the rules do not settle is really scored.
//! `--classify` sends each event as its own unary `Classify` call instead of streaming (at
//! most W calls in flight), for the latency a backend service sees.
//! Each stream serves one channel and keeps at most W events in flight (sent, verdict not yet
//! received). `--rate` paces the whole run to R events/s (0, the default, is as fast as the
//! server answers). It reports events/s and verdict latency (send to verdict) p50/p99/max.
//! `--rules FILE` starts the in-process server with that rules file instead of the built-in set.
//! Messages are stamped ten a second per stream (a busy chat), so the rate rules see real pacing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use modbot::proto::moderation_client::ModerationClient;
use modbot::proto::{
    ChatEvent, Hello, StreamModerateRequest, chat_event, stream_moderate_request,
    stream_moderate_response,
};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;

#[path = "common/load.rs"]
mod load;
use load::percentile;

/// The same allocator as the `modbot` binary, so the numbers are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    events: usize,
    streams: usize,
    window: usize,
    rate: f64,
    addr: Option<String>,
    rules: Option<String>,
    model: bool,
    classify: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        events: 400_000,
        streams: 2,
        window: 4096,
        rate: 0.0,
        addr: None,
        rules: None,
        model: false,
        classify: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--events" => args.events = value().parse().expect("--events N"),
            "--streams" => args.streams = value().parse().expect("--streams S"),
            "--window" => args.window = value().parse().expect("--window W"),
            "--rate" => args.rate = value().parse().expect("--rate R"),
            "--addr" => args.addr = Some(value()),
            "--rules" => args.rules = Some(value()),
            "--model" => args.model = true,
            "--classify" => args.classify = true,
            // `cargo bench` passes --bench to every bench binary.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(
        args.streams >= 1 && args.window >= 1,
        "--streams and --window must be at least 1"
    );
    args
}

/// Insults and friendly lines for the benchmark's centroid head.
const INSULTS: [&str; 4] = [
    "you are a worthless pathetic clown",
    "shut up you braindead idiot",
    "nobody likes you, you absolute moron",
    "what a disgusting loser you are",
];
const FRIENDLY: [&str; 4] = [
    "great stream today, thanks",
    "what time does the debate start?",
    "good morning chat",
    "that was an interesting point",
];

/// Starts modbot on its own runtime and returns its address.
fn start_server(rules: Option<&str>, model: bool) -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut config = modbot::Config {
        data_dir: dir.path().to_owned(),
        ..modbot::Config::default()
    };
    config.metrics.addr = None;
    if let Some(rules) = rules {
        config.rules.file = rules.into();
    }
    if model {
        let model_dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
        let encoder = modbot::infra::model::Encoder::load(&model_dir, &candle_core::Device::Cpu)
            .unwrap_or_else(|e| panic!("{e} (run `cargo run --release -- fetch-model` first)"));
        // The committed, trained heads (what `modbot serve` runs with); a centroid head when
        // a checkout has none.
        let committed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/heads");
        let heads = if committed.join("heads.json").is_file() {
            committed
        } else {
            let heads = dir.path().join("heads");
            modbot::infra::model::heads::write_centroid_heads(
                &encoder, &heads, &INSULTS, &FRIENDLY,
            )
            .expect("write the benchmark head");
            heads
        };
        config.model.dir = model_dir;
        config.model.heads_dir = heads;
        config.model.fetch_if_missing = false;
    } else {
        config.model.dir = std::path::PathBuf::new();
    }
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("modbot-server")
            .enable_all()
            .build()
            .expect("server runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            addr_tx
                .send(listener.local_addr().expect("address"))
                .expect("report the address");
            modbot::serve(config, listener, std::future::pending())
                .await
                .expect("serve");
        });
    });
    let addr = addr_rx.recv().expect("the server starts");
    (format!("http://{addr}"), dir)
}

struct StreamResult {
    latencies_us: Vec<u32>,
    decisions: BTreeMap<i32, u64>,
    errors: u64,
    degraded: u64,
    scored: u64,
}

impl StreamResult {
    fn new(capacity: usize) -> Self {
        Self {
            latencies_us: Vec::with_capacity(capacity),
            decisions: BTreeMap::new(),
            errors: 0,
            degraded: 0,
            scored: 0,
        }
    }

    fn verdict(&mut self, verdict: &modbot::proto::Verdict, latency: Duration) {
        self.latencies_us.push(load::micros(latency));
        *self.decisions.entry(verdict.decision).or_default() += 1;
        self.degraded += u64::from(!verdict.degraded.is_empty());
        self.scored += u64::from(!verdict.model_version.is_empty());
    }
}

/// Every event as its own unary `Classify` call, streams' events interleaved in order, paced
/// to `rate` calls/s (0: as fast as answered), at most `window` in flight.
async fn run_classify(
    addr: String,
    per_stream: Vec<Vec<StreamModerateRequest>>,
    window: usize,
    rate: f64,
    start: Instant,
) -> StreamResult {
    let client = ModerationClient::connect(addr).await.expect("connect");
    let longest = per_stream.iter().map(Vec::len).max().unwrap_or(0);
    let mut messages = Vec::new();
    for i in 0..longest {
        for stream in &per_stream {
            if let Some(StreamModerateRequest {
                kind:
                    Some(stream_moderate_request::Kind::Event(ChatEvent {
                        kind: Some(chat_event::Kind::Message(m)),
                        ..
                    })),
            }) = stream.get(i)
            {
                messages.push(m.clone());
            }
        }
    }
    let in_flight = Arc::new(Semaphore::new(window));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let count = messages.len();
    for (i, message) in messages.into_iter().enumerate() {
        if rate > 0.0 {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let permit = Arc::clone(&in_flight).acquire_owned().await.expect("open");
        let mut client = client.clone();
        let done = done_tx.clone();
        tokio::spawn(async move {
            let sent = Instant::now();
            let answer = client
                .classify(modbot::proto::ClassifyRequest {
                    messages: vec![message],
                    options: None,
                })
                .await;
            let latency = sent.elapsed();
            drop(permit);
            let _ = done.send((latency, answer));
        });
    }
    drop(done_tx);
    let mut result = StreamResult::new(count);
    while let Some((latency, answer)) = done_rx.recv().await {
        match answer {
            Ok(response) => {
                for verdict in &response.into_inner().verdicts {
                    result.verdict(verdict, latency);
                }
            }
            Err(_) => result.errors += 1,
        }
    }
    result
}

async fn run_stream(
    addr: String,
    channel: String,
    requests: Vec<StreamModerateRequest>,
    window: usize,
    pace: Option<Duration>,
    start: Instant,
) -> StreamResult {
    let mut client = ModerationClient::connect(addr).await.expect("connect");
    let (outbound_tx, outbound_rx) = mpsc::channel(window.min(4096));
    outbound_tx
        .send(StreamModerateRequest {
            kind: Some(stream_moderate_request::Kind::Hello(Hello {
                bridge_id: format!("loadgen-{channel}"),
                channels: vec![channel.clone()],
                dialect: "dgg".into(),
                bot_nick: "loadgen".into(),
            })),
        })
        .await
        .expect("send the hello");
    let mut inbound = client
        .stream_moderate(ReceiverStream::new(outbound_rx))
        .await
        .expect("open the stream")
        .into_inner();

    let count = requests.len();
    let in_flight = Arc::new(Semaphore::new(window));
    let sent_at: Arc<Vec<std::sync::OnceLock<Instant>>> =
        Arc::new((0..count).map(|_| Default::default()).collect());
    let sender = {
        let in_flight = Arc::clone(&in_flight);
        let sent_at = Arc::clone(&sent_at);
        tokio::spawn(async move {
            for (i, request) in requests.into_iter().enumerate() {
                if let Some(pace) = pace {
                    let due = start + pace * i as u32;
                    tokio::time::sleep_until(due.into()).await;
                }
                in_flight.acquire().await.expect("semaphore open").forget();
                let _ = sent_at[i].set(Instant::now());
                if outbound_tx.send(request).await.is_err() {
                    break;
                }
            }
        })
    };

    let mut result = StreamResult::new(count);
    let mut answered = 0;
    while answered < count {
        let Some(response) = inbound.message().await.expect("the stream stays healthy") else {
            break;
        };
        match response.kind {
            Some(stream_moderate_response::Kind::Verdict(verdict)) => {
                let index: usize = verdict.message_id.parse().expect("message ids are indices");
                let sent = sent_at[index].get().expect("answered after sending");
                result.verdict(&verdict, sent.elapsed());
            }
            Some(stream_moderate_response::Kind::Error(_)) => result.errors += 1,
            _ => continue,
        }
        answered += 1;
        in_flight.add_permits(1);
    }
    sender.abort();
    result
}

fn main() {
    let args = parse_args();
    let (addr, _dir) = match &args.addr {
        Some(addr) => (format!("http://{addr}"), None),
        None => {
            let (addr, dir) = start_server(args.rules.as_deref(), args.model);
            (addr, Some(dir))
        }
    };

    // Build every request before the clock starts.
    let corpus = modbot::corpus::generate(42, args.events);
    let mut per_stream: Vec<Vec<StreamModerateRequest>> = vec![Vec::new(); args.streams];
    let base_ms = 1_700_000_000_000u64;
    for (i, message) in corpus.into_iter().enumerate() {
        let stream = i % args.streams;
        let channel = format!("channel-{stream}");
        // Each stream is one busy chat: ten messages a second.
        let at_ms = base_ms + (i / args.streams) as u64 * 100;
        per_stream[stream].push(StreamModerateRequest {
            kind: Some(stream_moderate_request::Kind::Event(ChatEvent {
                channel: channel.clone(),
                kind: Some(chat_event::Kind::Message(load::chat_message(
                    &message,
                    &channel,
                    String::new(),
                    std::time::UNIX_EPOCH + Duration::from_millis(at_ms),
                ))),
            })),
        });
    }
    // Message ids are per-stream indices, so verdicts can be matched to send times.
    for requests in &mut per_stream {
        for (i, request) in requests.iter_mut().enumerate() {
            if let Some(stream_moderate_request::Kind::Event(ChatEvent {
                kind: Some(chat_event::Kind::Message(m)),
                ..
            })) = &mut request.kind
            {
                m.message_id = i.to_string();
            }
        }
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("loadgen")
        .enable_all()
        .build()
        .expect("client runtime");
    // The in-process server binds before it has loaded its rules, store and model: start the
    // clock only once its health says SERVING, or the first calls measure its start-up.
    runtime
        .block_on(load::wait_until_serving(&addr, Duration::from_secs(30)))
        .unwrap_or_else(|error| panic!("{error}"));
    let pace = (args.rate > 0.0).then(|| Duration::from_secs_f64(args.streams as f64 / args.rate));
    let (elapsed, results) = runtime.block_on(async {
        let start = Instant::now();
        if args.classify {
            let result =
                run_classify(addr.clone(), per_stream, args.window, args.rate, start).await;
            return (start.elapsed(), vec![result]);
        }
        let tasks: Vec<_> = per_stream
            .into_iter()
            .enumerate()
            .map(|(i, requests)| {
                tokio::spawn(run_stream(
                    addr.clone(),
                    format!("channel-{i}"),
                    requests,
                    args.window,
                    pace,
                    start,
                ))
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.expect("stream task"));
        }
        (start.elapsed(), results)
    });

    let mut latencies: Vec<u32> = results
        .iter()
        .flat_map(|r| r.latencies_us.iter().copied())
        .collect();
    latencies.sort_unstable();
    let answered = latencies.len();
    let mut decisions: BTreeMap<String, u64> = BTreeMap::new();
    for r in &results {
        for (decision, n) in &r.decisions {
            let name = modbot::proto::Decision::try_from(*decision)
                .map_or("?".to_owned(), |d| d.as_str_name().to_owned());
            *decisions.entry(name).or_default() += n;
        }
    }
    let errors: u64 = results.iter().map(|r| r.errors).sum();
    let degraded: u64 = results.iter().map(|r| r.degraded).sum();
    let scored: u64 = results.iter().map(|r| r.scored).sum();
    println!(
        "loadgen: {} events over {} {}, window {}, rate {}",
        args.events,
        args.streams,
        if args.classify {
            "channel(s) as unary Classify calls"
        } else {
            "stream(s)"
        },
        args.window,
        if args.rate > 0.0 {
            format!("{}/s", args.rate)
        } else {
            "unlimited".into()
        }
    );
    println!(
        "answered {answered} in {:.2}s: {:.0} events/s",
        elapsed.as_secs_f64(),
        answered as f64 / elapsed.as_secs_f64()
    );
    println!(
        "verdict latency ms: p50 {:.2}  p99 {:.2}  max {:.2}",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0)
    );
    println!(
        "decisions: {decisions:?}; errors: {errors}; degraded verdicts: {degraded}; \
         scored by the model: {scored}"
    );
    assert_eq!(
        answered + errors as usize,
        args.events,
        "every event answered exactly once"
    );
}
