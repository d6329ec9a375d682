//! Helpers shared by the SDK's integration tests against the real server: client settings
//! with short timers, and [`Peer`], a client whose events are collected in the background
//! so a test can wait (bounded) for the one it expects; and [`Proxy`], a TCP proxy that cuts
//! connections on demand (mid-frame too), refuses new ones, or switches servers.
#![allow(dead_code)] // each test binary uses its own part

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use loudsync_client::{Client, ClientConfig, Event, ReconnectPolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(10);

/// The WebSocket URL of a server on `addr`.
pub fn url(addr: SocketAddr) -> String {
    format!("ws://{addr}/")
}

/// `c` with millisecond timers: heartbeats, silence, join, acks, three quick reconnects.
pub fn fast(mut c: ClientConfig) -> ClientConfig {
    c.heartbeat_interval = Duration::from_millis(100);
    c.silence_timeout = Duration::from_millis(600);
    c.join_timeout = Duration::from_secs(2);
    c.ack_interval = Duration::from_millis(200);
    c.reconnect = ReconnectPolicy {
        attempts: 3,
        delay: Duration::from_millis(100),
        backoff: None,
    };
    c
}

/// The host `mac` ("Mac") of session `s` ("Party").
pub fn host_config(addr: SocketAddr) -> ClientConfig {
    fast(ClientConfig::host(url(addr), "s", "Party", "mac", "Mac"))
}

/// Member `device` of session `s`.
pub fn member_config(addr: SocketAddr, device: &str) -> ClientConfig {
    fast(ClientConfig::member(url(addr), "s", device, device))
}

/// A client whose events are collected in the background.
pub struct Peer {
    pub client: Client,
    pub log: Arc<Mutex<Vec<Event>>>,
}

impl Peer {
    pub async fn connect(config: ClientConfig) -> Peer {
        let (client, mut events) = Client::connect(config).await.expect("connects");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                sink.lock().unwrap().push(e);
            }
        });
        Peer { client, log }
    }

    /// Its `clientId` (joined).
    pub fn id(&self) -> String {
        self.client.client_id().expect("joined")
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Event> {
        self.log.lock().unwrap().clone()
    }

    /// How many events so far match `pred`.
    pub fn count(&self, pred: impl Fn(&Event) -> bool) -> usize {
        self.log.lock().unwrap().iter().filter(|e| pred(e)).count()
    }

    /// Waits until `n` events match `pred`.
    pub async fn until_n(&self, what: &str, n: usize, pred: impl Fn(&Event) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.count(&pred) < n {
            if tokio::time::Instant::now() > deadline {
                let events = self.events();
                let tail = &events[events.len().saturating_sub(15)..];
                panic!("no {n} x {what} within {WAIT:?}; last events: {tail:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until an event matches `pred`.
    pub async fn until(&self, what: &str, pred: impl Fn(&Event) -> bool) {
        self.until_n(what, 1, pred).await
    }

    /// The first event `pick` finds something in, waiting for it (bounded).
    pub async fn find<T>(&self, what: &str, pick: impl Fn(&Event) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(found) = self.log.lock().unwrap().iter().find_map(&pick) {
                return found;
            }
            if tokio::time::Instant::now() > deadline {
                let events = self.events();
                let tail = &events[events.len().saturating_sub(15)..];
                panic!("no {what} within {WAIT:?}; last events: {tail:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `check` holds of the client (bounded).
    pub async fn until_client(&self, what: &str, check: impl Fn(&Client) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !check(&self.client) {
            if tokio::time::Instant::now() > deadline {
                panic!("{what}: not within {WAIT:?}; events: {:?}", self.events());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// How the proxy cuts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cut {
    /// Both sockets of every connection closed at once.
    Clean,
    /// Each connection forwards half of its next chunk (either way), then closes: the cut
    /// falls inside a WebSocket frame (after at most 200 ms without traffic it closes anyway).
    MidFrame,
}

/// A TCP proxy in front of a server.
pub struct Proxy {
    pub addr: SocketAddr,
    upstream: Arc<Mutex<SocketAddr>>,
    refuse: Arc<AtomicBool>,
    cuts: watch::Sender<(u64, Cut)>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = Arc::new(Mutex::new(upstream));
        let refuse = Arc::new(AtomicBool::new(false));
        let (cuts, _) = watch::channel((0, Cut::Clean));
        let (up, no, rx) = (upstream.clone(), refuse.clone(), cuts.subscribe());
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if no.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let target = *up.lock().unwrap();
                let mut cut = rx.clone();
                cut.mark_unchanged();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(target).await {
                        pipe(client, server, cut).await;
                    }
                });
            }
        });
        Proxy {
            addr,
            upstream,
            refuse,
            cuts,
        }
    }

    /// Cuts every connection open now.
    pub fn cut(&self, how: Cut) {
        self.cuts.send_modify(|(n, c)| {
            *n += 1;
            *c = how;
        });
    }

    /// New connections are closed at once (`true`) or forwarded again.
    pub fn refuse(&self, refuse: bool) {
        self.refuse.store(refuse, Ordering::SeqCst);
    }

    /// New connections go to `addr`.
    pub fn switch_to(&self, addr: SocketAddr) {
        *self.upstream.lock().unwrap() = addr;
    }
}

async fn pipe(client: TcpStream, server: TcpStream, mut cut: watch::Receiver<(u64, Cut)>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let mut up = vec![0u8; 16 * 1024];
    let mut down = vec![0u8; 16 * 1024];
    let mut cutting: Option<tokio::time::Instant> = None;
    loop {
        let give_up = async {
            match cutting {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = cr.read(&mut up) => {
                let n = r.unwrap_or(0);
                if n == 0 { break }
                let n = if cutting.is_some() { n / 2 } else { n };
                if sw.write_all(&up[..n]).await.is_err() || cutting.is_some() { break }
            }
            r = sr.read(&mut down) => {
                let n = r.unwrap_or(0);
                if n == 0 { break }
                let n = if cutting.is_some() { n / 2 } else { n };
                if cw.write_all(&down[..n]).await.is_err() || cutting.is_some() { break }
            }
            changed = cut.changed() => {
                if changed.is_err() { break }
                match cut.borrow().1 {
                    Cut::Clean => break,
                    Cut::MidFrame => {
                        cutting = Some(tokio::time::Instant::now() + Duration::from_millis(200))
                    }
                }
            }
            _ = give_up => break,
        }
    }
    // Dropping the four halves closes both sockets.
}
