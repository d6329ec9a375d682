//! The LoudSync server: a thin tokio/axum layer around the sans-IO core.
//!
//! - [`config`]: settings and their defaults.
//! - [`http`]: the router: WebSocket upgrades on `/` and `/ws`, `/healthz`, `/metrics`, and
//!   the `/v1/sessions` admin API.
//! - [`ws`]: server-side WebSocket framing that holds no buffer while a connection idles.
//! - [`socket`]: one WebSocket's task, driving a `loudsync_core::connection::Connection`.
//! - [`sessions`]: the registry and the task that owns each `loudsync_core::session::Session`.
//! - [`outbox`]: a member's bounded outbound queue.
//! - [`encoding`]: messages to frame bytes, in each connection's dialect.
//! - [`metrics`]: Prometheus metrics.
//! - [`discovery`]: LAN discovery for the LOUDSYNC app (UDP advertisements, mDNS), opt-in.
//!
//! Start one with [`Server::bind`], stop it with [`Server::shutdown`].

pub mod config;
pub mod discovery;
pub mod encoding;
pub mod http;
pub mod metrics;
pub mod outbox;
pub mod sessions;
pub mod socket;
pub mod ws;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::serve::ListenerExt;
use loudsync_core::Now;
use loudsync_protocol::close_code;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Notify};

pub use config::ServerConfig;
use outbox::Outbox;
use sessions::{Registry, SessionInput};

/// The current time for the core.
pub fn now() -> Now {
    Now {
        instant: Instant::now(),
        unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    }
}

/// State shared by every task of one server.
pub struct App {
    /// The settings.
    pub config: ServerConfig,
    /// The sessions.
    pub registry: Registry,
    /// Every open WebSocket, so shutdown can close them.
    pub connections: Connections,
    /// Metric handles.
    pub metrics: metrics::Metrics,
    shutting_down: AtomicBool,
}

impl App {
    /// Whether shutdown has begun (new upgrades are refused).
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }
}

/// The open sockets' outboxes, by connection number. Touched on connect and disconnect only.
pub struct Connections {
    open: Mutex<HashMap<u64, Arc<Outbox>>>,
    next: AtomicU64,
    outbox_limit: usize,
    all_closed: Notify,
}

impl Connections {
    fn new(outbox_limit: usize) -> Self {
        Connections {
            open: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            outbox_limit,
            all_closed: Notify::new(),
        }
    }

    /// Registers a new socket; returns its number.
    pub fn open(&self) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let outbox = Arc::new(Outbox::new(self.outbox_limit));
        self.open.lock().expect("connections").insert(id, outbox);
        id
    }

    /// The outbox of socket `id`.
    pub fn outbox(&self, id: u64) -> Arc<Outbox> {
        self.open.lock().expect("connections")[&id].clone()
    }

    /// Forgets socket `id`.
    pub fn close(&self, id: u64) {
        let mut open = self.open.lock().expect("connections");
        open.remove(&id);
        if open.is_empty() {
            self.all_closed.notify_waiters();
        }
    }

    /// How many sockets are open.
    pub fn count(&self) -> usize {
        self.open.lock().expect("connections").len()
    }

    fn close_all(&self, code: u16, reason: &str) {
        for outbox in self.open.lock().expect("connections").values() {
            outbox.force_close(code, reason.to_string());
        }
    }
}

/// A running server.
pub struct Server {
    app: Arc<App>,
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
        let app = Arc::new(App {
            connections: Connections::new(config.outbound_queue_bytes),
            config,
            registry: Registry::default(),
            metrics: metrics::Metrics::new(),
            shutting_down: AtomicBool::new(false),
        });
        let router = http::router(app.clone());
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
        let discovery = if app.config.discovery {
            Some(discovery::spawn(app.clone(), addr).await?)
        } else {
            None
        };
        Ok(Server {
            app,
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
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Graceful shutdown: stop accepting, send every member `session_closed`, close every
    /// socket with 1001, and return once all are closed or after the drain timeout.
    pub async fn shutdown(mut self) {
        let app = self.app.clone();
        app.shutting_down.store(true, Ordering::Relaxed);
        if let Some(stop) = self.stop_accepting.take() {
            let _ = stop.send(());
        }
        if let Some(discovery) = self.discovery.take() {
            discovery.abort();
        }
        let mut acks = Vec::new();
        for session in app.registry.all() {
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
        app.connections
            .close_all(close_code::GOING_AWAY, "server shutting down");
        let drained = async {
            loop {
                let notified = app.connections.all_closed.notified();
                if app.connections.count() == 0 {
                    break;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(app.config.drain_timeout, drained)
            .await
            .is_err()
        {
            tracing::warn!(
                open = app.connections.count(),
                "drain timeout: exiting with sockets still open"
            );
        }
        let _ = tokio::time::timeout(app.config.drain_timeout, &mut self.serve).await;
    }
}
