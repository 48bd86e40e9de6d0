//! A loopback TCP proxy that can stop forwarding without closing anything: a blackhole, the
//! fault of a cut network or a frozen host, where neither side learns that the other is gone
//! until its own keepalive gives up.
//!
//! While the switch is on, nothing is forwarded in either direction and nothing is closed: a
//! side's bytes are read and dropped, and a side that closes its socket is not told to the
//! other. A connection that lived through a blackhole (or was accepted during one) stays
//! dead after [`Blackhole::heal`], as a real connection would (both ends have given up on
//! it); new connections after the heal are forwarded normally.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The proxy. Dropping it stops accepting; open connections end with their sides.
pub struct Blackhole {
    /// Where clients connect instead of `upstream`.
    pub addr: SocketAddr,
    state: Arc<Shared>,
    accept: JoinHandle<()>,
}

struct Shared {
    /// The switch: true drops everything.
    holed: watch::Sender<bool>,
    /// Counts blackholes: a connection accepted in an earlier epoch is dead.
    epoch: AtomicU64,
    accepted: AtomicUsize,
    /// Bytes dropped while blackholed.
    dropped: AtomicU64,
}

impl Shared {
    /// Whether a connection accepted in `epoch` may forward now.
    fn forwards(&self, epoch: u64) -> bool {
        !*self.holed.borrow() && self.epoch.load(Ordering::SeqCst) == epoch
    }
}

impl Blackhole {
    /// A proxy on 127.0.0.1 (any port) to `upstream`, forwarding.
    pub async fn start(upstream: SocketAddr) -> Self {
        assert!(upstream.ip().is_loopback(), "loopback only");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("bound address");
        let (holed, _) = watch::channel(false);
        let state = Arc::new(Shared {
            holed,
            epoch: AtomicU64::new(0),
            accepted: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
        });
        let accept = tokio::spawn({
            let state = Arc::clone(&state);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    state.accepted.fetch_add(1, Ordering::SeqCst);
                    // Accepted during a blackhole: dead from the start (its epoch ends at
                    // the heal).
                    let epoch = if *state.holed.borrow() {
                        u64::MAX
                    } else {
                        state.epoch.load(Ordering::SeqCst)
                    };
                    tokio::spawn(connection(Arc::clone(&state), client, upstream, epoch));
                }
            }
        });
        Self {
            addr,
            state,
            accept,
        }
    }

    /// Stops forwarding, closing nothing: every open connection is dead from now on.
    pub fn blackhole(&self) {
        self.state.epoch.fetch_add(1, Ordering::SeqCst);
        self.state.holed.send_replace(true);
    }

    /// Forwards new connections again (those that lived through the blackhole stay dead).
    pub fn heal(&self) {
        self.state.holed.send_replace(false);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Bytes dropped while blackholed.
    pub fn dropped_bytes(&self) -> u64 {
        self.state.dropped.load(Ordering::SeqCst)
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn connection(state: Arc<Shared>, client: TcpStream, upstream: SocketAddr, epoch: u64) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = tokio::spawn(pipe(Arc::clone(&state), client_read, server_write, epoch));
    let down = tokio::spawn(pipe(state, server_read, client_write, epoch));
    // Each direction hands back the half it wrote to when its reader ends; both halves are
    // dropped (closing the sockets) only when both sides have closed theirs, so a dead
    // connection closes nothing the other side could notice.
    let _halves = (up.await, down.await);
}

/// Copies `from` to `to` while the connection forwards. Returns `to` unclosed when the
/// connection is dead, so the caller decides when it closes.
async fn pipe(
    state: Arc<Shared>,
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    epoch: u64,
) -> Option<OwnedWriteHalf> {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => {
                if state.forwards(epoch) {
                    // A normal close, forwarded as one.
                    let _ = to.shutdown().await;
                    return None;
                }
                return Some(to);
            }
            Ok(read) => read,
        };
        if !state.forwards(epoch) {
            state.dropped.fetch_add(read as u64, Ordering::SeqCst);
            continue;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return None;
        }
    }
}
