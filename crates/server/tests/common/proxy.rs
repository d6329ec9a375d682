//! A fault-injecting TCP proxy on loopback, in front of a server: it forwards bytes both ways
//! and cuts a connection when a test says so: at once, or after a chosen number of further
//! bytes in one direction (so mid-frame), by dropping both of its sockets with no close frame.
//!
//! Deterministic: a cut after `n` bytes forwards exactly `n` bytes of that direction (from the
//! moment it was armed) and then drops both sides; nothing else ever changes a byte. Bounded:
//! one 16 KiB buffer per direction per connection, two tasks per connection, and every task
//! ends when its connection is cut or the proxy is dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// A direction of a proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client to server.
    ToServer,
    /// Server to client.
    ToClient,
}

impl Dir {
    fn index(self) -> usize {
        match self {
            Dir::ToServer => 0,
            Dir::ToClient => 1,
        }
    }
}

/// One proxied connection, as the test controls it.
#[derive(Clone)]
pub struct Link {
    state: Arc<LinkState>,
}

struct LinkState {
    /// Bytes forwarded so far, per direction.
    forwarded: [AtomicU64; 2],
    /// Bytes a direction may still forward before the cut (`None`: no cut armed).
    budget: Mutex<[Option<u64>; 2]>,
    /// `true` once cut: both pumps drop their halves.
    cut: watch::Sender<bool>,
}

impl Link {
    fn new() -> Link {
        Link {
            state: Arc::new(LinkState {
                forwarded: [AtomicU64::new(0), AtomicU64::new(0)],
                budget: Mutex::new([None, None]),
                cut: watch::channel(false).0,
            }),
        }
    }

    /// Cuts the connection now: both sockets are dropped, whatever is in flight is lost.
    pub fn cut(&self) {
        self.state.cut.send_replace(true);
    }

    /// Cuts the connection once `n` more bytes have been forwarded in `dir` (from now; 0 cuts
    /// before the next byte of that direction). The `n` bytes are delivered, then both sides
    /// are dropped.
    pub fn cut_after(&self, dir: Dir, n: u64) {
        self.state.budget.lock().unwrap()[dir.index()] = Some(n);
    }

    /// Bytes forwarded so far in `dir`.
    pub fn forwarded(&self, dir: Dir) -> u64 {
        self.state.forwarded[dir.index()].load(Ordering::SeqCst)
    }

    /// Whether the connection has been cut.
    pub fn is_cut(&self) -> bool {
        *self.state.cut.borrow()
    }

    /// Waits until the connection is cut (by the test, or by an armed `cut_after`).
    pub async fn wait_cut(&self) {
        let mut rx = self.state.cut.subscribe();
        let _ = rx.wait_for(|cut| *cut).await;
    }
}

/// The proxy: listens on `127.0.0.1:0`, forwards every connection to `upstream`.
pub struct Proxy {
    addr: SocketAddr,
    registry: Arc<Mutex<Registry>>,
    accept: JoinHandle<()>,
}

/// The proxy's connections: every open one (for [`Proxy::cut_all`]), and the hand-off of a
/// new connection's link to [`Proxy::connect`], keyed by the client's address, whichever of
/// the two (accept or connect) gets there first.
#[derive(Default)]
struct Registry {
    open: Vec<Link>,
    handoff: HashMap<SocketAddr, Slot>,
    accept_errors: u64,
    last_accept_error: Option<String>,
    /// Connections [`Proxy::connect`] gave up waiting for.
    given_up: u64,
}

enum Slot {
    /// Accepted, not yet claimed.
    Accepted(Link),
    /// Claimed before the accept loop got to it.
    Waiting(oneshot::Sender<Link>),
}

impl Proxy {
    /// Starts a proxy in front of `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        // A deep accept queue: a thousand clients reconnect at once, and a connection the
        // kernel completes while the queue is full (SYN cookies) is lost without a word.
        let socket = TcpSocket::new_v4().expect("proxy socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("proxy bind");
        let listener = socket.listen(4096).expect("proxy listen");
        let addr = listener.local_addr().unwrap();
        let registry: Arc<Mutex<Registry>> = Arc::default();
        let shared = registry.clone();
        let accept = tokio::spawn(async move {
            loop {
                // Errors are transient (a connection reset while queued, a full descriptor
                // table for a moment): the loop goes on.
                let (client, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        {
                            let mut r = shared.lock().unwrap();
                            r.accept_errors += 1;
                            r.last_accept_error = Some(e.to_string());
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                };
                let link = Link::new();
                {
                    let mut r = shared.lock().unwrap();
                    r.open.retain(|l| !l.is_cut());
                    r.open.push(link.clone());
                    match r.handoff.remove(&peer) {
                        Some(Slot::Waiting(tx)) => {
                            let _ = tx.send(link.clone());
                        }
                        _ => {
                            r.handoff.insert(peer, Slot::Accepted(link.clone()));
                        }
                    }
                }
                tokio::spawn(serve(client, upstream, link));
            }
        });
        Proxy {
            addr,
            registry,
            accept,
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Opens a TCP connection through the proxy and returns it with its [`Link`]. The link
    /// exists (and can be armed) before any byte is forwarded: the accept loop creates it
    /// before it starts forwarding.
    pub async fn connect(&self) -> (TcpStream, Link) {
        // A connection the proxy's kernel dropped from a full accept queue is never accepted:
        // after a while, give it up and connect again.
        for _ in 0..20 {
            let tcp = TcpStream::connect(self.addr)
                .await
                .expect("connect to proxy");
            let local = tcp.local_addr().unwrap();
            let rx = {
                let mut r = self.registry.lock().unwrap();
                match r.handoff.remove(&local) {
                    Some(Slot::Accepted(link)) => return (tcp, link),
                    _ => {
                        let (tx, rx) = oneshot::channel();
                        r.handoff.insert(local, Slot::Waiting(tx));
                        rx
                    }
                }
            };
            if let Ok(Ok(link)) = tokio::time::timeout(Duration::from_secs(3), rx).await {
                return (tcp, link);
            }
            let mut r = self.registry.lock().unwrap();
            r.handoff.remove(&local);
            r.given_up += 1;
        }
        panic!(
            "the proxy accepted none of 20 connections: {}",
            self.stats()
        );
    }

    /// Cuts every connection open now, at once.
    pub fn cut_all(&self) {
        let mut r = self.registry.lock().unwrap();
        for link in r.open.drain(..) {
            link.cut();
        }
    }

    /// What the proxy holds, for a test's failure message.
    pub fn stats(&self) -> String {
        let r = self.registry.lock().unwrap();
        let waiting = r
            .handoff
            .values()
            .filter(|s| matches!(s, Slot::Waiting(_)))
            .count();
        format!(
            "{} links, {} connects waiting for their accept, {} accepted and unclaimed, \
             {} accept errors (last: {:?}), {} connections given up",
            r.open.len(),
            waiting,
            r.handoff.len() - waiting,
            r.accept_errors,
            r.last_accept_error,
            r.given_up
        )
    }

    /// Connections accepted and not yet cut.
    pub fn open_links(&self) -> usize {
        let mut r = self.registry.lock().unwrap();
        r.open.retain(|l| !l.is_cut());
        r.open.len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut_all();
    }
}

/// Connects upstream and runs the two pumps until the link is cut or either side ends.
async fn serve(client: TcpStream, upstream: SocketAddr, link: Link) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        link.cut();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = tokio::spawn(pump(client_read, server_write, Dir::ToServer, link.clone()));
    let down = tokio::spawn(pump(server_read, client_write, Dir::ToClient, link.clone()));
    let _ = tokio::join!(up, down);
}

/// Forwards one direction. Ends (dropping its halves) when the link is cut; when its side
/// ends, it cuts the link so the other direction ends too (a proxy that half-closed would
/// make a clean EOF look like a cut, and the reverse).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    dir: Dir,
    link: Link,
) {
    let mut cut = link.state.cut.subscribe();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if *cut.borrow() {
            return;
        }
        if link.state.budget.lock().unwrap()[dir.index()] == Some(0) {
            link.cut();
            return;
        }
        let n = tokio::select! {
            _ = cut.wait_for(|c| *c) => return,
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => {
                    link.cut();
                    return;
                }
                Ok(n) => n,
            },
        };
        // How much of the chunk may pass, and whether the cut comes after it.
        let (pass, then_cut) = {
            let mut budget = link.state.budget.lock().unwrap();
            match budget[dir.index()] {
                Some(left) if left <= n as u64 => {
                    budget[dir.index()] = Some(0);
                    (left as usize, true)
                }
                Some(left) => {
                    budget[dir.index()] = Some(left - n as u64);
                    (n, false)
                }
                None => (n, false),
            }
        };
        let written = tokio::select! {
            _ = cut.wait_for(|c| *c) => return,
            r = to.write_all(&buf[..pass]) => r,
        };
        if written.is_err() {
            link.cut();
            return;
        }
        link.state.forwarded[dir.index()].fetch_add(pass as u64, Ordering::SeqCst);
        if then_cut {
            link.cut();
            return;
        }
    }
}
