//! Cluster mode (`--redis`, issue 16): several `loudsync serve` nodes share their sessions
//! through one Redis, so any member can join or resume on any node and a session outlives the
//! node that owns it.
//!
//! How it fits together, one job per file:
//! - [`store`], [`keys`], [`scripts`]: every Redis command and Lua script, nothing else.
//! - [`wire`]: the JSON of what crosses Redis (inbound entries, outbound batches, specs).
//! - `forwarder`: the member side of a session on this node. A member's driver talks to a
//!   [`crate::sessions::SessionHandle`] as on one node; in cluster mode the handle's channel
//!   leads to the session's forwarder, which appends each input to the session's inbound
//!   stream (and creates the session cluster-wide for a host's first join).
//! - `local`: the sockets this node holds, and the reading of each session's outbound stream
//!   into them.
//! - `owner`: the node holding a session's lease runs its state machine, fed by the inbound
//!   stream, writing each step's output with a fenced script.
//! - `node`: this node's own lease, the cluster epoch, the takeover of sessions whose owner
//!   died, and the dispatch of pub/sub wake-ups.
//! - [`pairing`]: controller/responder pairing across nodes (one relay for the cluster).
//!
//! A node without `--redis` builds none of this and pays nothing for it.

mod forwarder;
pub mod keys;
mod local;
mod node;
mod owner;
pub mod pairing;
pub mod scripts;
pub mod store;
pub mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use loudsync_core::ids::session_key;
use tokio::sync::{mpsc, oneshot};

use crate::config::ServerConfig;
use crate::sessions::SessionInput;
use crate::state::ServerState;

pub(crate) use forwarder::Resolve;
use owner::OwnerSignal;
use store::{Store, Wake};

/// Bits of a cluster-unique id (sockets, requests) taken by the local counter; the node's
/// number fills the bits above.
const LOCAL_ID_BITS: u32 = 40;

/// This node's part of the cluster.
pub struct Cluster {
    /// This node's id.
    pub node_id: String,
    /// This node's number (from Redis): the high bits of its socket and request ids.
    pub node_number: u64,
    /// How clients reach this node.
    pub advertise_url: Option<String>,
    pub(crate) store: Store,
    /// The lease of nodes and owners.
    pub lease: Duration,
    /// How often streams are read without a wake-up.
    pub poll: Duration,
    next_id: AtomicU64,
    pub(crate) local: local::Local,
    /// The owner tasks of this node, by session key.
    owners: Mutex<HashMap<String, mpsc::UnboundedSender<OwnerSignal>>>,
    /// Whether this node is part of the cluster: Redis answers and its lease is renewed.
    healthy: AtomicBool,
    /// The cluster epoch this node joined under (`ls:cluster`).
    epoch: Mutex<String>,
    wakes: Mutex<Option<mpsc::UnboundedReceiver<Wake>>>,
    started_ms: u64,
    /// This node's part of cluster pairing, when it serves pairing apps.
    pub(crate) pairing: std::sync::OnceLock<Arc<pairing::ClusterPairing>>,
}

/// Why cluster mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Redis did not answer.
    #[error("cluster mode: cannot use Redis at {url}: {why}")]
    Redis {
        /// The URL, without its password.
        url: String,
        /// What failed.
        why: String,
    },
}

impl Cluster {
    /// Connects to the cluster's Redis and registers this node. Fails if Redis cannot be
    /// reached at start (a node that starts without its cluster would serve sessions nobody
    /// else sees).
    pub async fn connect(config: &ServerConfig, url: &str) -> Result<Arc<Cluster>, ClusterError> {
        let shown = redact(url);
        let fail = |why: String| ClusterError::Redis {
            url: shown.clone(),
            why,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let store = Store::connect(url, tx)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let epoch = store
            .cluster_epoch(&random_epoch())
            .await
            .map_err(|e| fail(e.to_string()))?;
        let node_number = store.node_number().await.map_err(|e| fail(e.to_string()))?;
        let node_id = config
            .node_id
            .clone()
            .unwrap_or_else(|| format!("node-{}", random_suffix()));
        let cluster = Arc::new(Cluster {
            node_id,
            node_number,
            advertise_url: config.advertise_url.clone(),
            store,
            lease: config.lease,
            poll: config.cluster_poll,
            next_id: AtomicU64::new(1),
            local: local::Local::default(),
            owners: Mutex::new(HashMap::new()),
            healthy: AtomicBool::new(false),
            epoch: Mutex::new(epoch),
            wakes: Mutex::new(Some(rx)),
            started_ms: crate::clock::now().unix_ms,
            pairing: std::sync::OnceLock::new(),
        });
        cluster
            .renew_node()
            .await
            .map_err(|e| fail(e.to_string()))?;
        cluster.healthy.store(true, Ordering::Relaxed);
        tracing::info!(
            node = cluster.node_id,
            number = cluster.node_number,
            redis = shown,
            lease_ms = cluster.lease.as_millis() as u64,
            "cluster mode: joined the cluster"
        );
        Ok(cluster)
    }

    /// The first socket id of this node (socket and request ids are cluster-unique).
    pub fn id_base(&self) -> u64 {
        self.node_number << LOCAL_ID_BITS
    }

    /// A fresh cluster-unique id (admin requests, owner serials).
    pub(crate) fn next_id(&self) -> u64 {
        self.id_base() | (self.next_id.fetch_add(1, Ordering::Relaxed) & ((1 << LOCAL_ID_BITS) - 1))
    }

    /// Whether this node is part of the cluster now (`/healthz` answers 503 while not).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && self.store.connected()
    }

    /// Starts the node's background tasks: its lease, the takeover scan, the wake-up
    /// dispatch and the reading of outbound streams.
    pub fn start(self: &Arc<Self>, state: &Arc<ServerState>) {
        node::start(self.clone(), state.clone());
    }

    /// The session handle of a cluster session on this node: inputs go to its forwarder.
    pub(crate) fn forwarder(
        self: &Arc<Self>,
        state: &Arc<ServerState>,
        session_id: String,
        resolve: Resolve,
        rx: mpsc::UnboundedReceiver<SessionInput>,
    ) {
        forwarder::spawn(state.clone(), self.clone(), session_id, resolve, rx);
    }

    /// Registers an owner task; `false` if the session is owned here already.
    fn add_owner(&self, session: &str, tx: mpsc::UnboundedSender<OwnerSignal>) -> bool {
        let key = session_key(session);
        let mut owners = self.owners.lock().expect("owners");
        if owners.contains_key(&key) {
            return false;
        }
        owners.insert(key, tx);
        true
    }

    fn remove_owner(&self, session: &str) {
        self.owners
            .lock()
            .expect("owners")
            .remove(&session_key(session));
    }

    /// Whether this node owns `session` now.
    pub(crate) fn owns(&self, session: &str) -> bool {
        self.owners
            .lock()
            .expect("owners")
            .contains_key(&session_key(session))
    }

    /// How many sessions this node owns.
    pub fn owned_count(&self) -> usize {
        self.owners.lock().expect("owners").len()
    }

    fn signal_owner(&self, session: &str, signal: OwnerSignal) {
        if let Some(tx) = self
            .owners
            .lock()
            .expect("owners")
            .get(&session_key(session))
        {
            let _ = tx.send(signal);
        }
    }

    /// Claims a session's lease and starts owning it here (a new session, or a takeover).
    pub(crate) async fn claim_and_own(
        self: &Arc<Self>,
        state: &Arc<ServerState>,
        session_id: &str,
    ) -> Result<bool, store::StoreError> {
        if self.owns(session_id) {
            return Ok(true);
        }
        let Some(spec) = self.store.session_spec(session_id).await? else {
            return Ok(false);
        };
        let spec = match wire::decode_spec(&spec) {
            Ok(spec) => spec,
            Err(e) => {
                tracing::warn!(session = session_id, error = %e, "undecodable session spec");
                return Ok(false);
            }
        };
        let claimed_at = std::time::Instant::now();
        let Some(epoch) = self
            .store
            .claim(session_id, &self.node_id, self.lease)
            .await?
        else {
            return Ok(false);
        };
        owner::spawn(
            state.clone(),
            self.clone(),
            owner::OwnerStart {
                session_id: session_id.to_string(),
                spec,
                epoch,
                claimed_at,
            },
        );
        Ok(true)
    }

    /// Rolling restart: releases every session this node owns (another node takes each at
    /// once), then closes this node's sockets with 1012 so their members resume elsewhere.
    pub async fn hand_over(&self, state: &ServerState) {
        if let Some(pairing) = self.pairing.get() {
            pairing.release().await;
        }
        let owners: Vec<(String, mpsc::UnboundedSender<OwnerSignal>)> = self
            .owners
            .lock()
            .expect("owners")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut acks = Vec::new();
        for (_, tx) in owners {
            let (done, ack) = oneshot::channel();
            if tx.send(OwnerSignal::Release(done)).is_ok() {
                acks.push(ack);
            }
        }
        for ack in acks {
            let _ = tokio::time::timeout(Duration::from_secs(2), ack).await;
        }
        let _ = self.store.announce_released().await;
        let closed = self.local.close_sockets(
            None,
            None,
            loudsync_protocol::close_code::SERVICE_RESTART,
            "service restart: resume on another node",
            state.ids.as_ref(),
        );
        let _ = self.store.remove_node(&self.node_id).await;
        tracing::info!(
            node = self.node_id,
            sockets = closed,
            "handed over: sessions released, sockets closed with 1012"
        );
    }

    async fn renew_node(&self) -> store::StoreResult<()> {
        let info = serde_json::json!({
            "advertiseUrl": self.advertise_url,
            "startedMs": self.started_ms,
            "number": self.node_number,
        })
        .to_string();
        self.store
            .renew_node(&self.node_id, &info, self.lease)
            .await
    }
}

/// A URL without its password, for logs and errors.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 6];
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_epoch() -> String {
    let mut bytes = [0u8; 12];
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_logged_without_their_password() {
        assert_eq!(
            redact("redis://:secret@127.0.0.1:6379/0"),
            "redis://***@127.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
