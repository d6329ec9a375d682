//! The LoudSync server: a thin tokio/axum layer around the sans-IO core. It owns sockets,
//! tasks, channels and the clock; every protocol rule is in `loudsync_core`.
//!
//! - [`config`]: settings and their defaults.
//! - [`state`]: what every task shares ([`ServerState`]: settings, registry, open transports,
//!   metrics, id source).
//! - [`http`]: the router: WebSocket upgrades on `/` and `/ws`, `/healthz`, `/metrics`, and
//!   the `/v1/sessions` admin API.
//! - [`ws`]: server-side WebSocket framing that holds no buffer while a connection idles.
//! - [`ws_pump`]: one WebSocket's task, moving frames between the socket and the member driver.
//! - [`member`]: the member driver, the transport-independent glue between a transport and
//!   its session (drives a `loudsync_core::connection::Connection`).
//! - [`sessions`]: the registry (the core's directory under a lock) and a session's inputs.
//! - [`session_task`]: the task that owns each `loudsync_core::session::Session`.
//! - [`outbox`]: a member's bounded outbound queue.
//! - [`encoding`]: messages to frame bytes, in each connection's dialect.
//! - [`clock`]: the one place the server reads the time.
//! - [`floor`]: the bare echo floor `loudsync bench idle --floor` compares against.
//! - [`metrics`]: Prometheus metrics.
//! - [`discovery`]: LAN discovery for the LOUDSYNC app (UDP advertisements, mDNS), opt-in.
//!
//! Start one with [`Server::bind`], stop it with [`Server::shutdown`].

pub mod clock;
pub mod config;
pub mod discovery;
pub mod encoding;
pub mod floor;
pub mod http;
pub mod member;
pub mod metrics;
pub mod outbox;
pub mod session_task;
pub mod sessions;
pub mod state;
pub mod ws;
pub mod ws_pump;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::serve::ListenerExt;
use loudsync_core::ids::RandomIds;
use loudsync_protocol::close_code;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub use clock::now;
pub use config::ServerConfig;
use sessions::SessionInput;
pub use state::ServerState;

/// A running server.
pub struct Server {
    state: Arc<ServerState>,
    addr: SocketAddr,
    stop_accepting: Option<oneshot::Sender<()>>,
    serve: tokio::task::JoinHandle<()>,
    discovery: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Binds `config.listen` and starts serving. Connections are accepted once this returns.
    pub async fn bind(config: ServerConfig) -> std::io::Result<Server> {
        config
            .validate()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(ServerState::new(config, Arc::new(RandomIds)));
        let router = http::router(state.clone());
        let (stop_accepting, stopped) = oneshot::channel::<()>();
        let serve = tokio::spawn(async move {
            let service = router.into_make_service_with_connect_info::<SocketAddr>();
            // Small frames both ways: without TCP_NODELAY, Nagle plus delayed ACKs add ~40 ms.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let result = axum::serve(listener, service)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "server stopped");
            }
        });
        let discovery = if state.config.discovery {
            Some(discovery::spawn(state.clone(), addr).await?)
        } else {
            None
        };
        Ok(Server {
            state,
            addr,
            stop_accepting: Some(stop_accepting),
            serve,
            discovery,
        })
    }

    /// The address actually bound (with the real port when `:0` was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state (for embedding and tests).
    pub fn state(&self) -> &Arc<ServerState> {
        &self.state
    }

    /// Graceful shutdown: stop accepting, send every member `session_closed`, close every
    /// socket with 1001, and return once all are closed or after the drain timeout.
    pub async fn shutdown(mut self) {
        let state = self.state.clone();
        state.shutting_down.store(true, Ordering::Relaxed);
        if let Some(stop) = self.stop_accepting.take() {
            let _ = stop.send(());
        }
        if let Some(discovery) = self.discovery.take() {
            discovery.abort();
        }
        let mut acks = Vec::new();
        for session in state.registry.all() {
            let (done, ack) = oneshot::channel();
            if session.send(SessionInput::Close {
                reason: "Server shutting down".into(),
                code: close_code::GOING_AWAY,
                done: Some(done),
            }) {
                acks.push(ack);
            }
        }
        for ack in acks {
            let _ = ack.await;
        }
        state
            .transports
            .close_all(close_code::GOING_AWAY, "server shutting down");
        let drained = async {
            loop {
                let notified = state.transports.all_closed.notified();
                if state.transports.count() == 0 {
                    break;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(state.config.drain_timeout, drained)
            .await
            .is_err()
        {
            tracing::warn!(
                open = state.transports.count(),
                "drain timeout: exiting with sockets still open"
            );
        }
        let _ = tokio::time::timeout(state.config.drain_timeout, &mut self.serve).await;
    }
}
