//! The bridge ↔ modbot TCP connection cut mid-load.
//!
//! The protocol-faithful test chat (tests/chat_server) runs in this process with chatters and
//! spammers talking at the chat's pace; `modbot bridge` (a child process) carries it into the
//! release server (another child) through a TCP proxy that this process owns, and the proxy
//! drops every connection twice mid-load. The bridge must reconnect, send again what had no
//! verdict, and never carry out an action twice: every MUTE/BAN the chat saw from the bot is
//! one executed action and vice versa.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use modbot::proto::actions_client::ActionsClient;
use modbot::proto::admin_client::AdminClient;
use modbot::proto::{ActionKind, ActionStatus, GetStatsRequest, ListActionsRequest};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::Checks;
use crate::chat_server::{ChatServer, Dialect};
use crate::services::{self, ServerOptions};

const BOT_TOKEN: &str = "soak-bot-token";

/// A TCP proxy whose connections can be cut.
struct Proxy {
    addr: SocketAddr,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("an address");
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let connections = Arc::clone(&connections);
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    connections.lock().expect("not poisoned").push(task);
                }
            }
        });
        Proxy {
            addr,
            connections,
            accept,
        }
    }

    /// Drops every open connection (both sockets close); returns how many were open.
    fn cut(&self) -> usize {
        let mut connections = self.connections.lock().expect("not poisoned");
        let open = connections.iter().filter(|t| !t.is_finished()).count();
        for task in connections.drain(..) {
            task.abort();
        }
        open
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

struct BridgeProcess {
    child: Child,
    metrics: SocketAddr,
}

impl BridgeProcess {
    fn metric(&self, name: &str) -> f64 {
        services::scrape_metric(self.metrics, name)
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn scenario(secs: f64) -> Result<Checks, String> {
    let mut checks = Checks::default();
    // Rules only: the connection is what is under test, and the chat's throttle keeps the
    // rate modest anyway.
    let server = crate::start_server(&ServerOptions::default()).await?;
    let target: SocketAddr = server
        .addr
        .trim_start_matches("http://")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let proxy = Proxy::start(target).await;
    let chat = ChatServer::start(Dialect::Dgg).await;
    chat.add_user(BOT_TOKEN, "modbot", &["bot", "moderator"]);
    // The bridge carries out at most ~3 commands a second (the chat's throttle), so the
    // talkers stay below what makes that many actions: ten lines a second in all.
    const CHATTERS: usize = 8;
    const SPAMMERS: usize = 2;
    for i in 0..CHATTERS + SPAMMERS {
        chat.add_user(&format!("chatter-token-{i}"), &format!("chatter{i}"), &[]);
    }

    let bridge_metrics: SocketAddr = format!("127.0.0.1:{}", services::free_port())
        .parse()
        .expect("an address");
    let log = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    let child = Command::new(env!("CARGO_BIN_EXE_modbot"))
        .arg("bridge")
        .args(["--chat-url", &chat.url])
        .args(["--dialect", "dgg"])
        .args(["--bot-nick", "modbot"])
        .args(["--server-url", &format!("http://{}", proxy.addr)])
        .args(["--metrics-addr", &bridge_metrics.to_string()])
        .args(["--set", "bridge.reconnect_min_ms=50"])
        .args(["--set", "bridge.reconnect_max_ms=400"])
        .args(["--set", "bridge.command_timeout_ms=3000"])
        .env("MODBOT_BRIDGE_CHAT_TOKEN", BOT_TOKEN)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.reopen().map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("modbot bridge: {e}"))?;
    let bridge = BridgeProcess {
        child,
        metrics: bridge_metrics,
    };
    // The bridge is up once it holds a stream through the proxy and sits in the chat.
    let deadline = Instant::now() + Duration::from_secs(20);
    while bridge.metric("modbot_bridge_server_connected") < 1.0
        || bridge.metric("modbot_bridge_chat_connected") < 1.0
    {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(log.path()).unwrap_or_default();
            return Err(format!("the bridge did not connect within 20 s:\n{log}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Each talker says a line a second (above the chat's 300 ms throttle); spammers paste the
    // same pitch with a changing tail, which the repetition rule warns, then times out.
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(secs);
    let corpus = modbot::corpus::generate(7, 4000);
    let corpus = Arc::new(corpus);
    let mut talkers = Vec::new();
    for i in 0..CHATTERS + SPAMMERS {
        let mut client = chat.client(Some(&format!("chatter-token-{i}"))).await;
        let corpus = Arc::clone(&corpus);
        talkers.push(tokio::spawn(async move {
            let mut n = 0usize;
            let offset = Duration::from_millis(1000 * i as u64 / (CHATTERS + SPAMMERS) as u64);
            tokio::time::sleep(offset).await;
            while Instant::now() < until {
                let text = if i >= CHATTERS {
                    format!(
                        "cheap followers and viewers at followers dot shop, best prices, code {n}"
                    )
                } else {
                    format!("{} {n}", corpus[(i * 131 + n * 7) % corpus.len()].text)
                };
                client.say(&text).await;
                n += 1;
                // Read what the chat broadcasts meanwhile (answering its pings).
                let next = Instant::now() + Duration::from_millis(1000);
                while let Some(left) = next.checked_duration_since(Instant::now()) {
                    if client.next_message(left).await.is_none() {
                        break;
                    }
                }
            }
            client.close().await;
        }));
    }
    let mut cuts = Vec::new();
    for at in [secs / 3.0, secs * 2.0 / 3.0] {
        tokio::time::sleep_until((start + Duration::from_secs_f64(at)).into()).await;
        cuts.push(proxy.cut());
    }
    for talker in talkers {
        talker.await.map_err(|e| e.to_string())?;
    }

    // What the chat accepted from the talkers (a muted talker's lines are refused by the chat
    // and never reach modbot).
    let said = chat
        .commands()
        .iter()
        .filter(|c| c.event == "MSG" && c.error.is_none() && c.nick.starts_with("chatter"))
        .count();
    let channel = tonic::transport::Endpoint::from_shared(server.addr.clone())
        .map_err(|e| e.to_string())?
        .connect_lazy();
    let mut admin = AdminClient::new(channel.clone());
    let mut actions = ActionsClient::new(channel);
    // Wait until modbot has decided every accepted line and no action is still on its way.
    let settle = Instant::now() + Duration::from_secs(45);
    let (decided, listed) = loop {
        let stats = admin
            .get_stats(GetStatsRequest::default())
            .await
            .map_err(|s| format!("GetStats: {s}"))?
            .into_inner();
        let decided = stats.windows.iter().map(|w| w.messages).max().unwrap_or(0);
        let listed = actions
            .list_actions(ListActionsRequest {
                page_size: 500,
                ..ListActionsRequest::default()
            })
            .await
            .map_err(|s| format!("ListActions: {s}"))?
            .into_inner()
            .actions;
        let in_flight = listed.iter().any(|a| {
            a.status == ActionStatus::Pending as i32 || a.status == ActionStatus::Sent as i32
        });
        if (decided as usize >= said && !in_flight) || Instant::now() > settle {
            break (decided, listed);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let carried: Vec<_> = listed
        .iter()
        .filter(|a| {
            matches!(
                ActionKind::try_from(a.kind),
                Ok(ActionKind::Hide | ActionKind::Timeout | ActionKind::Ban)
            )
        })
        .collect();
    let executed = carried
        .iter()
        .filter(|a| a.status == ActionStatus::Executed as i32)
        .count();
    let mut by_status = std::collections::BTreeMap::new();
    for action in &listed {
        let status = ActionStatus::try_from(action.status)
            .map_or("?".to_owned(), |s| s.as_str_name().to_owned());
        *by_status.entry(status).or_insert(0) += 1;
    }
    let in_chat = chat
        .moderations()
        .iter()
        .filter(|m| m.moderator == "modbot" && (m.event == "MUTE" || m.event == "BAN"))
        .count();
    let reconnects = bridge.metric("modbot_bridge_server_reconnects_total");
    let repeated = bridge.metric("modbot_bridge_commands_repeated_total");
    let dropped = bridge.metric("modbot_bridge_events_dropped_total");
    println!(
        "  {} talkers for {secs:.0} s; connections cut at {:.0} s and {:.0} s ({:?} open)",
        CHATTERS + SPAMMERS,
        secs / 3.0,
        secs * 2.0 / 3.0,
        cuts
    );
    println!(
        "  lines the chat accepted {said}; decided by modbot {decided} ({} decided twice after \
         a reconnect); bridge: server reconnects {reconnects}, commands answered from memory \
         {repeated}, events dropped {dropped}",
        decided.saturating_sub(said as u64)
    );
    println!(
        "  actions {by_status:?}; hide/timeout/ban executed {executed}; MUTE/BAN by the bot in \
         the chat {in_chat}"
    );
    checks.check(
        cuts.iter().all(|&n| n > 0) && reconnects >= cuts.len() as f64,
        format!(
            "each cut broke the bridge's connection and it reconnected ({cuts:?} open, \
             {reconnects} reconnects)"
        ),
    );
    checks.check(
        decided as usize >= said && dropped == 0.0,
        format!(
            "every line the chat accepted was decided ({decided} >= {said}; {dropped} dropped)"
        ),
    );
    checks.check(
        executed > 0 && in_chat == executed,
        format!(
            "no action twice: the chat saw {in_chat} MUTE/BAN from the bot for {executed} \
             executed actions"
        ),
    );
    checks.check(
        !by_status.contains_key("ACTION_STATUS_PENDING")
            && !by_status.contains_key("ACTION_STATUS_SENT"),
        format!("no action left pending or unanswered ({by_status:?})"),
    );
    drop(bridge);
    drop(proxy);
    let stopped = server.stop(Duration::from_secs(10));
    checks.check(stopped, "the server stopped cleanly on SIGTERM");
    Ok(checks)
}
