//! A loopback TCP proxy for fault tests: forwards connections to a target until told to
//! blackhole them (stop forwarding without closing either side, like a dead network path
//! under a live TCP connection), heal, or cut them.
//!
//! Two kinds of dark path: [`TcpProxy::blackhole`] holds the bytes and delivers them at the
//! heal (a path that came back before either side gave up), [`TcpProxy::sever`] drops them
//! and the connections open then stay dead after the heal (both ends have given up on them,
//! as their keepalives do); connections made after the heal are forwarded as usual.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// A proxy on `127.0.0.1:0` in front of one target. Dropping it closes every connection.
pub struct TcpProxy {
    addr: SocketAddr,
    /// True while blackholed.
    blackholed_tx: watch::Sender<bool>,
    /// Bumped by [`TcpProxy::cut`]; a connection ends when it changes.
    cuts_tx: watch::Sender<u64>,
    /// What [`TcpProxy::sever`] changes.
    severed: Arc<Severed>,
    task: JoinHandle<()>,
}

/// The state of [`TcpProxy::sever`]: connections made in an older epoch are dead.
#[derive(Default)]
struct Severed {
    /// Bumped by each sever.
    epoch: AtomicU64,
    /// Whether new connections are dead too (from a sever until the heal).
    now: std::sync::atomic::AtomicBool,
    /// Bytes dropped on dead connections.
    dropped: AtomicU64,
}

impl Severed {
    /// The epoch a connection accepted now lives in (`u64::MAX`: dead from the start).
    fn accept(&self) -> u64 {
        if self.now.load(Ordering::SeqCst) {
            u64::MAX
        } else {
            self.epoch.load(Ordering::SeqCst)
        }
    }

    fn alive(&self, epoch: u64) -> bool {
        epoch == self.epoch.load(Ordering::SeqCst)
    }
}

impl TcpProxy {
    /// Starts forwarding every connection made to [`TcpProxy::addr`] to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let (blackholed_tx, blackholed_rx) = watch::channel(false);
        let (cuts_tx, cuts_rx) = watch::channel(0);
        let severed = Arc::new(Severed::default());
        let task = tokio::spawn(accept_task(
            listener,
            target,
            blackholed_rx,
            cuts_rx,
            Arc::clone(&severed),
        ));
        Self {
            addr,
            blackholed_tx,
            cuts_tx,
            severed,
            task,
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops forwarding bytes, both ways, on every connection (new ones included), while
    /// keeping them open: bytes sent meanwhile wait, as on a network path that dropped out
    /// under a live connection, and nobody sees an error.
    pub fn blackhole(&self) {
        self.blackholed_tx.send_replace(true);
    }

    /// Drops every byte of every connection open now, for good, closing nothing: neither side
    /// learns anything until its own keepalive gives up. Connections made before the heal are
    /// dead too.
    pub fn sever(&self) {
        self.severed.epoch.fetch_add(1, Ordering::SeqCst);
        self.severed.now.store(true, Ordering::SeqCst);
    }

    /// Forwards again: the bytes held since [`TcpProxy::blackhole`] first; after
    /// [`TcpProxy::sever`], new connections only.
    pub fn heal(&self) {
        self.severed.now.store(false, Ordering::SeqCst);
        self.blackholed_tx.send_replace(false);
    }

    /// Bytes dropped on severed connections.
    pub fn dropped_bytes(&self) -> u64 {
        self.severed.dropped.load(Ordering::SeqCst)
    }

    /// Closes every connection open now (both sides see the close); later ones are
    /// forwarded as usual.
    pub fn cut(&self) {
        self.cuts_tx.send_modify(|cuts| *cuts += 1);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_task(
    listener: TcpListener,
    target: SocketAddr,
    blackholed_rx: watch::Receiver<bool>,
    cuts_rx: watch::Receiver<u64>,
    severed: Arc<Severed>,
) {
    // Aborting this task drops the set, which aborts every connection's task.
    let mut connections = JoinSet::new();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let blackholed_rx = blackholed_rx.clone();
        let mut cuts_rx = cuts_rx.clone();
        cuts_rx.mark_unchanged();
        let severed = Arc::clone(&severed);
        let epoch = severed.accept();
        connections.spawn(async move {
            let Ok(server) = TcpStream::connect(target).await else {
                return;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let up = pump(
                client_read,
                server_write,
                blackholed_rx.clone(),
                Arc::clone(&severed),
                epoch,
            );
            let down = pump(server_read, client_write, blackholed_rx, severed, epoch);
            tokio::select! {
                () = up => {}
                () = down => {}
                _ = cuts_rx.changed() => {}
            }
        });
        // Reap finished connections so the set does not grow with them.
        while connections.try_join_next().is_some() {}
    }
}

/// Copies bytes one way until either side closes, holding them while blackholed and
/// dropping them once the connection is severed. A severed connection never closes the other
/// side: it reads and drops until its own side closes, and only then ends (with the
/// connection's task, which closes both).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut blackholed_rx: watch::Receiver<bool>,
    severed: Arc<Severed>,
    epoch: u64,
) {
    let mut buffer = vec![0_u8; 16 * 1024];
    loop {
        if severed.alive(epoch) && blackholed_rx.wait_for(|b| !*b).await.is_err() {
            return;
        }
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) if !severed.alive(epoch) => std::future::pending::<usize>().await,
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !severed.alive(epoch) {
            severed.dropped.fetch_add(n as u64, Ordering::SeqCst);
            continue;
        }
        // Bytes read just as the path went dark wait too.
        if blackholed_rx.wait_for(|b| !*b).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
