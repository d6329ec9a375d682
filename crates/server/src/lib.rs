//! The LoudSync server: a thin tokio/axum layer around the sans-IO core. It owns sockets,
//! tasks, channels and the clock; every protocol rule is in `loudsync_core`.
//!
//! - [`config`]: settings and their defaults.
//! - [`state`]: what every task shares ([`ServerState`]: settings, registry, open transports,
//!   metrics, id source).
//! - [`listener`]: the edge: the accept loop, connection permits, the request deadline, TLS
//!   and HTTP on each connection, the drain at shutdown.
//! - [`admission`]: the client address behind trusted proxies, and the per-address tables
//!   (connections, unjoined WebSockets, join attempts) of the core's admission rules.
//! - [`tls`]: the certificate and key files, and the TLS acceptor.
//! - [`access`]: signed join tokens (JWT): the key settings, verification and minting.
//! - [`http`]: the router: WebSocket upgrades on `/` and `/ws`, `/healthz`, `/metrics`, and
//!   the `/v1/sessions` admin API.
//! - [`events`]: the admin event stream `GET /v1/events` (server-sent events).
//! - [`admin_read`]: the `GET /v1/pairing` and `GET /v1/media` views of the admin API.
//! - [`dashboard`]: the operator dashboard at `/dashboard` (embedded assets, cookie login).
//! - [`ws`]: server-side WebSocket framing that holds no buffer while a connection idles.
//! - [`ws_pump`]: one WebSocket's task, moving frames between the socket and the member driver.
//! - [`member`]: the member driver, the transport-independent glue between a transport and
//!   its session (drives a `loudsync_core::connection::Connection`).
//! - [`sessions`]: the registry (the core's directory under a lock) and a session's inputs.
//! - [`session_task`]: the task that owns each `loudsync_core::session::Session`.
//! - [`pairing`]: controller/responder pairing (CRSocket) over WebSocket and SSE + HTTP.
//! - [`outbox`]: a member's bounded outbound queue.
//! - [`encoding`]: messages to frame bytes, in each connection's dialect.
//! - [`clock`]: the one place the server reads the time.
//! - [`floor`]: the bare echo floor `loudsync bench idle --floor` compares against.
//! - [`metrics`]: Prometheus metrics.
//! - [`discovery`]: LAN discovery for the LOUDSYNC app (UDP advertisements, mDNS), opt-in.
//! - [`media`]: the UDP media stream: the session relay (`--media-listen`, opt-in) and
//!   `loudsync media serve`.
//!
//! Start one with [`Server::bind`], stop it with [`Server::shutdown`].

pub mod access;
pub mod admin_read;
pub mod admission;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod dashboard;
pub mod discovery;
pub mod encoding;
pub mod events;
pub mod floor;
pub mod http;
pub mod listener;
pub mod media;
pub mod member;
pub mod metrics;
pub mod outbox;
pub mod pairing;
pub mod session_task;
pub mod sessions;
pub mod state;
pub mod tls;
pub mod ws;
pub mod ws_pump;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use loudsync_core::ids::RandomIds;
use loudsync_protocol::close_code;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::time::{timeout_at, Instant};

pub use clock::now;
pub use config::ServerConfig;
use sessions::SessionInput;
pub use state::ServerState;

/// How long past the drain's deadline shutdown waits for the dropped connections' tasks to
/// finish being dropped (they are aborted at the deadline; this only bounds the wait).
const ABORT_GRACE: Duration = Duration::from_millis(200);

/// A running server. Dropping it without [`Server::shutdown`] stops it at once: the accept
/// loop ends and every connection is dropped.
pub struct Server {
    state: Arc<ServerState>,
    addr: SocketAddr,
    tls: bool,
    stop: watch::Sender<Option<Instant>>,
    serve: tokio::task::JoinHandle<()>,
    discovery: Option<tokio::task::JoinHandle<()>>,
    pairing_timers: Option<tokio::task::JoinHandle<()>>,
}

/// Listens on `addr` with a backlog of `backlog` connections (the kernel caps it at
/// `net.core.somaxconn`). Tokio's `TcpListener::bind` asks for 128, which a storm of
/// reconnecting clients (every member of a server resuming at once) overflows: each SYN the
/// kernel drops costs its client a retransmission 1 s, 3 s, 7 s later.
fn listen(addr: std::net::SocketAddr, backlog: usize) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted server can bind while old sockets linger.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog.clamp(128, u32::MAX as usize) as u32)
}

impl Server {
    /// Binds `config.listen` and starts serving (TLS only when `tls-cert` and `tls-key` are
    /// given), with the media relay on `media-listen` when it is set (a failure to bind it is
    /// a [`media::relay::MediaBindError`]). Connections are accepted once this returns.
    pub async fn bind(config: ServerConfig) -> std::io::Result<Server> {
        config
            .validate()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
            _ => None,
        };
        let listener = listen(config.listen, config.max_connections)?;
        let addr = listener.local_addr()?;
        let media = match config.media_listen {
            Some(media_addr) => Some(Arc::new(media::relay::MediaRelay::bind(
                media_addr,
                config.media_relay(),
            )?)),
            None => None,
        };
        let reserve = listener::reserve_file();
        let cluster = match &config.redis {
            Some(url) => Some(
                cluster::Cluster::connect(&config, url)
                    .await
                    .map_err(std::io::Error::other)?,
            ),
            None => None,
        };
        let mut state = ServerState::new(config, Arc::new(RandomIds));
        state.media = media;
        if let Some(cluster) = &cluster {
            state.transports.number_from(cluster.id_base());
        }
        state.cluster = cluster;
        let state = Arc::new(state);
        if let Some(cluster) = &state.cluster {
            cluster.start(&state);
            if let Some(hub) = &state.pairing {
                cluster::pairing::start(cluster, hub, &state).await;
            }
        }
        if let Some(media) = &state.media {
            media.start();
        }
        log_exposure(&state, addr, tls.is_some());
        let router = http::router(state.clone());
        let (stop, stopped) = watch::channel(None);
        let self_stop = stopped.clone();
        let serve = tokio::spawn(listener::run(
            state.clone(),
            listener,
            router,
            tls.clone(),
            reserve,
            stopped,
        ));
        let discovery = if state.config.discovery {
            Some(discovery::spawn(state.clone(), addr).await?)
        } else {
            None
        };
        let pairing_timers = state
            .pairing
            .clone()
            .map(|hub| tokio::spawn(hub.run_timers(self_stop)));
        Ok(Server {
            state,
            addr,
            tls: tls.is_some(),
            stop,
            serve,
            discovery,
            pairing_timers,
        })
    }

    /// The address actually bound (with the real port when `:0` was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the port speaks TLS (`https://`, `wss://`).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The shared state (for embedding and tests).
    pub fn state(&self) -> &Arc<ServerState> {
        &self.state
    }

    /// Graceful shutdown within one deadline, `drain-timeout` from now: stop accepting, close
    /// idle HTTP connections at once (a request in progress is answered first), send every
    /// member `session_closed`, close every WebSocket with 1001, and at the deadline drop
    /// whatever is still open.
    pub async fn shutdown(mut self) {
        let state = self.state.clone();
        let deadline = Instant::now() + state.config.drain_timeout;
        state.shutting_down.store(true, Ordering::Relaxed);
        let _ = self.stop.send(Some(deadline));
        state.events.close();
        if let Some(discovery) = self.discovery.take() {
            discovery.abort();
        }
        if let Some(cluster) = state.cluster.clone() {
            // Cluster mode: a rolling restart. The sessions this node owns go to other nodes
            // (their leases are released) and every socket closes with 1012, so members
            // resume elsewhere with nothing lost; no session is closed.
            cluster.hand_over(&state).await;
        }
        let mut acks = Vec::new();
        let sessions = if state.cluster.is_some() {
            Vec::new()
        } else {
            state.registry.all()
        };
        for session in sessions {
            let (done, ack) = oneshot::channel();
            if session.send(SessionInput::Close {
                reason: "Server shutting down".into(),
                code: close_code::GOING_AWAY,
                done: Some(done),
            }) {
                acks.push(ack);
            }
        }
        let _ = timeout_at(deadline, async {
            for ack in acks {
                let _ = ack.await;
            }
        })
        .await;
        state
            .transports
            .close_all(close_code::GOING_AWAY, "server shutting down");
        if let Some(timers) = self.pairing_timers.take() {
            timers.abort();
        }
        if let Some(media) = &state.media {
            media.stop();
        }
        if timeout_at(deadline + ABORT_GRACE, &mut self.serve)
            .await
            .is_err()
        {
            self.serve.abort();
            tracing::warn!("shutdown: the accept loop did not finish in time");
        }
    }
}

impl Drop for Server {
    /// The media relay's task holds its own reference to the relay: end it with the server.
    fn drop(&mut self) {
        if let Some(media) = &self.state.media {
            media.stop();
        }
    }
}

/// Logs what the server exposes, and the connection caps in force.
fn log_exposure(state: &ServerState, addr: SocketAddr, tls: bool) {
    let admission = &state.admission;
    let caps = admission.caps();
    let config = &state.config;
    tracing::info!(
        open_files_limit = ?admission.open_files_limit(),
        reserved_files = ?admission.reserve(),
        max_connections = caps.max_connections,
        max_connections_per_address = caps.max_connections_per_address,
        max_unjoined_per_address = caps.max_unjoined_per_address,
        join_rate_per_address = config.join_rate_per_address,
        join_burst_per_address = config.join_burst_per_address,
        request_timeout = ?config.request_timeout,
        "connection limits in force"
    );
    if caps.max_connections < config.max_connections
        || caps.max_connections_per_address < config.max_connections_per_address
        || caps.max_unjoined_per_address < config.max_unjoined_per_address
    {
        tracing::warn!(
            configured_max_connections = config.max_connections,
            configured_max_connections_per_address = config.max_connections_per_address,
            configured_max_unjoined_per_address = config.max_unjoined_per_address,
            max_connections = caps.max_connections,
            max_connections_per_address = caps.max_connections_per_address,
            max_unjoined_per_address = caps.max_unjoined_per_address,
            "connection caps lowered to fit the open-file limit ({:?}, {:?} kept for the \
             server) and so that one address holds at most half; raise the limit with \
             `ulimit -n` for more",
            admission.open_files_limit(),
            admission.reserve()
        );
    }
    if !addr.ip().is_loopback() {
        let admin = if config.admin_token.is_some() {
            "/v1/* needs the admin token"
        } else {
            "/v1/* answers loopback clients only (no --admin-token)"
        };
        let transport = if tls {
            "over TLS"
        } else {
            "in clear text (no --tls-cert)"
        };
        tracing::warn!(
            %addr,
            "listening on a non-loopback address: WebSocket sessions, /healthz and /metrics \
             are reachable from the network {transport}; {admin}"
        );
    }
    if !config.trusted_proxies.is_empty() {
        let proxies: Vec<String> = config
            .trusted_proxies
            .iter()
            .map(|p| p.to_string())
            .collect();
        tracing::info!(
            trusted_proxies = %proxies.join(", "),
            "X-Forwarded-For is read from these peers only"
        );
    }
}
