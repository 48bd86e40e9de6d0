//! A loopback TCP proxy for fault tests: forwards connections to a target until told to
//! blackhole them (stop forwarding without closing either side, like a dead network path
//! under a live TCP connection), heal, or cut them.

use std::net::SocketAddr;

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
    task: JoinHandle<()>,
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
        let task = tokio::spawn(accept_task(listener, target, blackholed_rx, cuts_rx));
        Self {
            addr,
            blackholed_tx,
            cuts_tx,
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

    /// Forwards again, the bytes held since [`TcpProxy::blackhole`] first.
    pub fn heal(&self) {
        self.blackholed_tx.send_replace(false);
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
        connections.spawn(async move {
            let Ok(server) = TcpStream::connect(target).await else {
                return;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::select! {
                () = pump(client_read, server_write, blackholed_rx.clone()) => {}
                () = pump(server_read, client_write, blackholed_rx) => {}
                _ = cuts_rx.changed() => {}
            }
        });
        // Reap finished connections so the set does not grow with them.
        while connections.try_join_next().is_some() {}
    }
}

/// Copies bytes one way until either side closes, holding them while blackholed.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut blackholed_rx: watch::Receiver<bool>,
) {
    let mut buffer = vec![0_u8; 16 * 1024];
    loop {
        if blackholed_rx.wait_for(|b| !*b).await.is_err() {
            return;
        }
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Bytes read just as the path went dark wait too.
        if blackholed_rx.wait_for(|b| !*b).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
