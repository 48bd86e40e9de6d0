//! The bridge's cost: the same chat through `modbot bridge` and straight into `StreamModerate`.
//!
//! ```text
//! cargo bench --bench bridge -- [--events N] [--rounds R]
//! ```
//!
//! One modbot server (rules only, embedded defaults) and the protocol-faithful test chat
//! (tests/chat_server) run in this process. Each round sends N corpus messages twice, in
//! alternating order: once as chat frames that the chat broadcasts to a bridge (frame parsing,
//! the outbox, the stream, the bridge's own bookkeeping), once as `ChatEvent`s on a stream of
//! their own (the peer: what a bridge costs nothing beyond). A round is timed from its first
//! message to the server having decided the last (the server's own count, `GetStats`). Each
//! round uses fresh channels so user memory starts equal; a warm-up round of both comes first.
//! It prints the time of each path and their ratio per round, and the median ratio: on a
//! shared machine only the ratio means much. The chat server shares the process (and the two
//! cores) with the bridge, so its broadcasting is counted against the bridge.

#[path = "../tests/chat_server/mod.rs"]
mod chat_server;

use std::time::{Duration, Instant};

use chat_server::{ChatServer, Dialect};
use modbot::proto::admin_client::AdminClient;
use modbot::proto::moderation_client::ModerationClient;
use modbot::proto::{
    ChatEvent, ChatMessage, GetStatsRequest, Hello, StreamModerateRequest, chat_event,
    stream_moderate_request, stream_moderate_response,
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_tungstenite::tungstenite::Message;
use tonic::transport::Channel;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Chat timestamps: ten messages a second, as a busy chat.
const T0_MS: u64 = 1_700_000_000_000;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

async fn decided(admin: &mut AdminClient<Channel>, channel: &str) -> u64 {
    let stats = admin
        .get_stats(GetStatsRequest {
            channel: channel.into(),
            since: None,
        })
        .await
        .expect("GetStats")
        .into_inner();
    stats.windows.iter().map(|w| w.messages).max().unwrap_or(0)
}

async fn wait_decided(admin: &mut AdminClient<Channel>, channel: &str, n: u64) {
    while decided(admin, channel).await < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn direct(
    server: &Channel,
    admin: &mut AdminClient<Channel>,
    channel: &str,
    messages: &[modbot::corpus::CorpusMessage],
) -> Duration {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let hello = Hello {
        bridge_id: format!("bench-{channel}"),
        channels: vec![channel.into()],
        dialect: "dgg".into(),
        bot_nick: "modbot".into(),
    };
    tx.send(StreamModerateRequest {
        kind: Some(stream_moderate_request::Kind::Hello(hello)),
    })
    .await
    .unwrap();
    let mut responses = ModerationClient::new(server.clone())
        .stream_moderate(ReceiverStream::new(rx))
        .await
        .expect("a stream")
        .into_inner();
    let reader = tokio::spawn(async move {
        while let Ok(Some(response)) = responses.message().await {
            if let Some(stream_moderate_response::Kind::Error(e)) = response.kind {
                panic!("{e:?}");
            }
        }
    });
    let started = Instant::now();
    for (i, m) in messages.iter().enumerate() {
        let ts = T0_MS + 100 * i as u64;
        let message = ChatMessage {
            channel: channel.into(),
            message_id: format!("{ts}-{}", m.nick),
            user_id: m.nick.clone(),
            nick: m.nick.clone(),
            roles: m.roles.clone(),
            text: m.text.clone(),
            sent_at: Some((std::time::UNIX_EPOCH + Duration::from_millis(ts)).into()),
            original_text_bytes: 0,
        };
        tx.send(StreamModerateRequest {
            kind: Some(stream_moderate_request::Kind::Event(ChatEvent {
                channel: channel.into(),
                kind: Some(chat_event::Kind::Message(message)),
            })),
        })
        .await
        .unwrap();
    }
    wait_decided(admin, channel, messages.len() as u64).await;
    let elapsed = started.elapsed();
    drop(tx);
    let _ = reader.await;
    elapsed
}

async fn bridged(
    server_addr: &str,
    chat: &ChatServer,
    admin: &mut AdminClient<Channel>,
    channel: &str,
    messages: &[modbot::corpus::CorpusMessage],
) -> Duration {
    let mut config = modbot::Config::default();
    config.metrics.addr = None;
    config.bridge.chat_url = chat.url.clone();
    config.bridge.bot_nick = "modbot".into();
    config.bridge.chat_token = "bot-token".into();
    config.bridge.channel = channel.into();
    config.bridge.server_url = server_addr.into();
    config.bridge.buffer_events = 1_000_000;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let before = chat.accepted_connections();
    let bridge = tokio::spawn(async move {
        modbot::bridge::run(&config, async {
            let _ = stopped.await;
        })
        .await
    });
    // The bridge is in the chat (the server broadcasts only to connections it has).
    while chat.open_connections() == 0 || chat.accepted_connections() == before {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    for (i, m) in messages.iter().enumerate() {
        let ts = T0_MS + 100 * i as u64;
        let frame = serde_json::json!({
            "nick": m.nick, "features": m.roles, "timestamp": ts, "data": m.text,
        });
        chat.inject(Message::Text(format!("MSG {frame}").into()));
        if i % 256 == 0 {
            // Let the chat's writers run: a real chat does not deliver ten thousand frames at
            // once either.
            tokio::task::yield_now().await;
        }
    }
    wait_decided(admin, channel, messages.len() as u64).await;
    let elapsed = started.elapsed();
    let _ = stop.send(());
    let report = bridge.await.expect("no panic").expect("the bridge ran");
    assert_eq!(report.events_dropped, 0);
    elapsed
}

fn main() {
    let events = arg("--events", 20_000);
    let rounds = arg("--rounds", 5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut config = modbot::Config {
            data_dir: dir.path().to_owned(),
            ..modbot::Config::default()
        };
        config.metrics.addr = None;
        config.model.dir = std::path::PathBuf::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = format!("http://{}", listener.local_addr().expect("an address"));
        tokio::spawn(modbot::serve(config, listener, std::future::pending()));
        let server = Channel::from_shared(addr.clone())
            .expect("a URI")
            .connect_lazy();
        let mut admin = AdminClient::new(server.clone());
        while admin
            .get_stats(GetStatsRequest::default())
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let chat = ChatServer::start(Dialect::Dgg).await;
        chat.add_user("bot-token", "modbot", &["bot", "moderator"]);
        let messages = modbot::corpus::generate(7, events);
        println!("{events} messages per path per round, {rounds} rounds (rules only)");
        // A warm-up of both paths, not reported: the first stream of a process pays for
        // connection set-up, SQLite's first pages and the allocator's first arenas.
        direct(&server, &mut admin, "warm-direct", &messages).await;
        bridged(&addr, &chat, &mut admin, "warm-bridged", &messages).await;
        let mut ratios = Vec::new();
        for round in 0..rounds {
            let (d, b) = if round % 2 == 0 {
                let d = direct(&server, &mut admin, &format!("direct-{round}"), &messages).await;
                let b = bridged(&addr, &chat, &mut admin, &format!("bridged-{round}"), &messages).await;
                (d, b)
            } else {
                let b = bridged(&addr, &chat, &mut admin, &format!("bridged-{round}"), &messages).await;
                let d = direct(&server, &mut admin, &format!("direct-{round}"), &messages).await;
                (d, b)
            };
            let ratio = b.as_secs_f64() / d.as_secs_f64();
            println!(
                "round {round}: direct {:.0} msg/s ({d:.2?}), bridged {:.0} msg/s ({b:.2?}), bridged/direct time {ratio:.2}",
                events as f64 / d.as_secs_f64(),
                events as f64 / b.as_secs_f64(),
            );
            ratios.push(ratio);
        }
        ratios.sort_by(f64::total_cmp);
        println!("median bridged/direct time: {:.2}", ratios[ratios.len() / 2]);
    });
}
