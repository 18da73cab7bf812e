//! A fault-injecting TCP proxy. Every peer link (node A dialling node B)
//! and every client link (clients dialling node B) goes through a listener
//! of its own here, so the harness can hold, delay or reset each direction
//! of traffic separately.
//!
//! Holding ("stall") is how a partition is modelled: bytes are neither
//! delivered nor lost, as with a network that drops packets while TCP keeps
//! retransmitting, so a link resumes intact when the partition heals.
//! Resetting closes every connection of a link, as a middlebox or a
//! restarted peer would; the transport must reconnect.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Who dials through a link: a node (its peer link) or the clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dialer {
    Node(usize),
    Clients,
}

/// One link: traffic from `.0` to node `.1`.
pub type LinkId = (Dialer, usize);

/// What a link does to its traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkState {
    /// Hold every byte (in both directions of its connections).
    pub stalled: bool,
    /// Extra latency for every chunk.
    pub delay: Duration,
    /// Bumped to close every open connection of the link.
    pub resets: u64,
}

struct Link {
    state: watch::Sender<LinkState>,
    listen: SocketAddr,
    task: JoinHandle<()>,
}

/// The proxy: one listener per link, all in this process.
pub struct Proxy {
    links: BTreeMap<LinkId, Link>,
}

impl Proxy {
    /// Listeners for every ordered pair of `nodes.len()` nodes and for the
    /// clients of each node.
    pub async fn start(nodes: &[SocketAddr]) -> Proxy {
        let mut links = BTreeMap::new();
        for to in 0..nodes.len() {
            let mut froms: Vec<Dialer> = (0..nodes.len())
                .filter(|f| *f != to)
                .map(Dialer::Node)
                .collect();
            froms.push(Dialer::Clients);
            for from in froms {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
                let listen = listener.local_addr().expect("proxy addr");
                let (state, rx) = watch::channel(LinkState::default());
                let task = tokio::spawn(accept_loop(listener, nodes[to], rx));
                links.insert(
                    (from, to),
                    Link {
                        state,
                        listen,
                        task,
                    },
                );
            }
        }
        Proxy { links }
    }

    /// The address node `from` must use to reach node `to`.
    pub fn addr(&self, link: LinkId) -> SocketAddr {
        self.links[&link].listen
    }

    /// Changes one link.
    pub fn set(&self, link: LinkId, change: impl FnOnce(&mut LinkState)) {
        self.links[&link].state.send_modify(change);
    }

    /// Every link touching node `n` (both directions, clients optional).
    pub fn links_of(&self, n: usize, with_clients: bool) -> Vec<LinkId> {
        self.links
            .keys()
            .copied()
            .filter(|(from, to)| match from {
                Dialer::Node(f) => *f == n || *to == n,
                Dialer::Clients => with_clients && *to == n,
            })
            .collect()
    }

    /// Every link back to normal: no hold, no delay (open connections stay).
    pub fn heal_all(&self) {
        for link in self.links.values() {
            link.state.send_modify(|s| {
                s.stalled = false;
                s.delay = Duration::ZERO;
            });
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for link in self.links.values() {
            link.task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, state: watch::Receiver<LinkState>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let Ok((down, _)) = listener.accept().await else {
            continue;
        };
        conns.spawn(connection(down, target, state.clone()));
        // Reap finished connections so the set stays small on long runs.
        while conns.try_join_next().is_some() {}
    }
}

/// Serves one proxied connection until either side closes or the link is
/// reset. While the link is stalled the connection to the target is not
/// even opened, as a SYN lost in a partition would not be answered.
async fn connection(down: TcpStream, target: SocketAddr, mut state: watch::Receiver<LinkState>) {
    let resets = state.borrow().resets;
    if !wait_unstalled(&mut state, resets).await {
        return;
    }
    let Ok(Ok(up)) = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(target)).await
    else {
        return;
    };
    let _ = down.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let (down_r, down_w) = down.into_split();
    let (up_r, up_w) = up.into_split();
    // Each direction is a reader and a delayed writer; the first to end
    // (EOF, error or reset) ends the connection, closing both sockets.
    tokio::select! {
        _ = pump(down_r, up_w, state.clone(), resets) => {}
        _ = pump(up_r, down_w, state.clone(), resets) => {}
    }
}

/// Waits while the link is stalled. False if it was reset meanwhile.
async fn wait_unstalled(state: &mut watch::Receiver<LinkState>, resets: u64) -> bool {
    loop {
        let s = *state.borrow_and_update();
        if s.resets != resets {
            return false;
        }
        if !s.stalled {
            return true;
        }
        if state.changed().await.is_err() {
            return false;
        }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: watch::Receiver<LinkState>,
    resets: u64,
) {
    // A bounded queue between reading and writing: while the link holds,
    // the queue fills and the reader stops, so TCP pushes back on the
    // sender instead of the proxy buffering without bound.
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(64);
    let mut reset_watch = state.clone();
    let mut writer_state = state.clone();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let due = Instant::now() + state.borrow().delay;
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if !wait_unstalled(&mut writer_state, resets).await {
                return;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        // The reader saw EOF: pass the close on once the queue drained.
        let _ = to.shutdown().await;
    };
    let reset = async move {
        loop {
            if reset_watch.borrow_and_update().resets != resets {
                return;
            }
            if reset_watch.changed().await.is_err() {
                // The proxy is gone: end the connection.
                return;
            }
        }
    };
    tokio::select! {
        _ = async { tokio::join!(reader, writer) } => {}
        _ = reset => {}
    }
}
