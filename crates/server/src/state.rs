//! What every task of one server shares: the settings, the session registry, the open
//! transports (so shutdown can close them), the metric handles, the id source and the
//! admission tables.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use loudsync_core::ids::IdSource;
use loudsync_core::outbound::OutboundLimits;
use loudsync_core::resume::Tokens;
use tokio::sync::Notify;

use crate::admission::Admission;
use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::sessions::Registry;

/// State shared by every task of one server.
pub struct ServerState {
    /// The settings.
    pub config: ServerConfig,
    /// The sessions.
    pub registry: Registry,
    /// Every open transport's outbox, so shutdown can close them.
    pub transports: OpenTransports,
    /// Metric handles.
    pub metrics: Metrics,
    /// Where member ids, session codes and message ids come from.
    pub ids: Arc<dyn IdSource>,
    /// The connection caps and the per-address tables (connections, unjoined sockets, join
    /// attempts), and who the client is behind trusted proxies.
    pub admission: Admission,
    /// The key join tokens are verified (and signed) with (`token-key`, `token-key-file`).
    pub token_key: Option<crate::access::TokenKey>,
    pub(crate) shutting_down: AtomicBool,
    /// Connection tokens of resumable members: which place each leads to, or why it ended.
    pub tokens: Mutex<Tokens<TokenPlace>>,
    /// The pairing relay and its connections (`None` when no `--app` is configured).
    pub pairing: Option<Arc<crate::pairing::PairingHub>>,
    /// The session media relay (`None` without `--media-listen`, issue 13 R1); set by
    /// [`crate::Server::bind`], which binds its socket.
    pub media: Option<Arc<crate::media::relay::MediaRelay>>,
    /// The admin event stream (`GET /v1/events`).
    pub events: Arc<crate::events::EventHub>,
    /// Cluster mode (`--redis`, issue 16); `None` on a single node. Set by
    /// [`crate::Server::bind`] after it joined the cluster.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// Where a live connection token leads: the session and the member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPlace {
    /// The session's id.
    pub session_id: String,
    /// The member's `clientId`.
    pub member_id: String,
}

impl ServerState {
    /// Shared state for a server with these settings.
    pub fn new(config: ServerConfig, ids: Arc<dyn IdSource>) -> Self {
        ServerState {
            admission: Admission::new(&config, crate::admission::open_files_limit()),
            transports: OpenTransports::new(config.outbound_limits()),
            tokens: Mutex::new(Tokens::new(config.resume_window.saturating_mul(10))),
            registry: Registry::new(ids.clone(), config.max_members),
            token_key: crate::access::TokenKey::from_config(&config),
            pairing: match config.relay() {
                Ok(relay) if !relay.apps.is_empty() => Some(Arc::new(
                    crate::pairing::PairingHub::new(relay, ids.clone()),
                )),
                _ => None,
            },
            media: None,
            cluster: None,
            events: Arc::new(crate::events::EventHub::new(&config)),
            config,
            metrics: Metrics::new(),
            ids,
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Whether shutdown has begun (new upgrades are refused).
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }
}

/// The outboxes of the open transports, by number. Touched on open and close only.
pub struct OpenTransports {
    open: Mutex<HashMap<u64, Arc<Outbox>>>,
    next: AtomicU64,
    limits: OutboundLimits,
    pub(crate) all_closed: Notify,
}

impl OpenTransports {
    fn new(limits: OutboundLimits) -> Self {
        OpenTransports {
            open: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            limits,
            all_closed: Notify::new(),
        }
    }

    /// Numbers transports from `base` on (cluster mode: the node's number in the high bits,
    /// so socket ids are unique in the cluster). Call before any transport opens.
    pub fn number_from(&self, base: u64) {
        self.next.store(base.max(1), Ordering::Relaxed);
    }

    /// Registers a new transport: its number and its outbox.
    pub fn open(&self) -> (u64, Arc<Outbox>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let outbox = Arc::new(Outbox::new(self.limits));
        self.open
            .lock()
            .expect("transports")
            .insert(id, outbox.clone());
        (id, outbox)
    }

    /// Forgets transport `id`.
    pub fn close(&self, id: u64) {
        let mut open = self.open.lock().expect("transports");
        open.remove(&id);
        if open.is_empty() {
            self.all_closed.notify_waiters();
        }
    }

    /// How many transports are open.
    pub fn count(&self) -> usize {
        self.open.lock().expect("transports").len()
    }

    /// Queues a close on every open transport.
    pub(crate) fn close_all(&self, code: u16, reason: &str) {
        for outbox in self.open.lock().expect("transports").values() {
            outbox.force_close(code, reason.to_string());
        }
    }
}
