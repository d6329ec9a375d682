//! Controller/responder pairing across the nodes of a cluster (issue 16 for issue 12's
//! relay): a controller on one node and a responder on another pair and exchange events as
//! on one node.
//!
//! **One relay for the cluster.** The core's relay keeps one client-id namespace for every
//! app (an id live in one app is `clientIdInUse` in another), so the cluster runs exactly one
//! [`PairingRelay`](loudsync_core::pairing::PairingRelay), on the node holding the lease
//! `ls:pairing:owner` (`NODE|EPOCH|NONCE`, `SET NX PX` in [`CLAIM`], renewed every third of a lease
//! by [`RENEW`]). Every node serving pairing apps tries to claim it whenever it is free.
//!
//! **Every connection is a proxy** in cluster mode, also on the owner's node: the node's
//! [`PairingHub`] hands each input here ([`ClusterPairing::open`], `identify`, `event`, ...),
//! one writer task appends them in order to the stream `ls:pairing:in` and publishes
//! `ls:pairing:in!`. The owner reads that stream (woken, and every `--cluster-poll`) and feeds
//! each entry to a second hub, the *relay hub*, whose connections are all remote
//! ([`PairingHub::open_remote`]); so the core's rules see every input of the cluster in one
//! order. What the relay hub would push onto a connection's outbox (already encoded for its
//! transport) is batched per node and written with one fenced script ([`SHIP`]: nothing is
//! written unless the lease is still the writer's) to `ls:pairing:out:NODE`, publishing
//! `ls:pairing:out:NODE!`. Each node reads its own stream into its local outboxes. Answers a
//! node awaits (an identify's result and stream id, a `clientid/`) come back in the same
//! stream, after the frames that went before them (the welcome first).
//!
//! **When the owner changes** (it died, lost its lease, or shut down and released it), the
//! new owner starts an empty relay that reads only what is appended after its claim: pairing
//! state is not carried over (pairing promises no replay). Every node notices the new epoch
//! within a third of a lease and closes its pairing connections: a WebSocket with 1012
//! ([`RELAY_MOVED`](crate::pairing::ws::RELAY_MOVED)), an SSE stream simply ends (so
//! `EventSource` reconnects). An identify or `clientid/` that gets no answer within two
//! leases and [`COMMAND_TIMEOUT`] ends the same way (or answers 503). An input written while
//! no node owned the relay is lost.
//!
//! **The admin view** (`GET /v1/pairing`) of every node shows the relay's clients as its owner
//! last wrote them to `ls:pairing:view` (on every change, and every third of a lease, with a
//! lease's TTL), read by each node every third of a lease: up to about a third of a lease
//! old, and empty while no node runs the relay.
//!
//! Ids: connections and requests are numbered from the node's id base (its number in the
//! high bits), so they are unique in the cluster.
//!
//! **Files.** This one holds what every node does: [`start`], the per-connection proxy API
//! its hub calls, the writer task appending to `ls:pairing:in`, and the reading of its own
//! `ls:pairing:out:NODE` into its connections. `relay` is the owner side (the lease, the relay
//! hub, the fenced writes), `wire` the JSON that crosses Redis, `scripts` the Lua scripts.

mod relay;
mod scripts;
mod wire;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use loudsync_core::ids::IdSource;
use loudsync_core::pairing::{ClientInfo, ConnId, IdentifyError, RelayConfig, Transport};
use loudsync_protocol::pairing::sse::{SendEvent, SendEventBody};
use loudsync_protocol::pairing::{ClaimedId, Event};
use redis::Script;
use tokio::sync::{mpsc, oneshot, Notify};

pub use scripts::{CLAIM, RELEASE, RENEW, SHIP};

use super::keys;
use super::store::{Store, COMMAND_TIMEOUT};
use super::Cluster;
use crate::outbox::{OutFrame, Outbox};
use crate::pairing::hub::{IdentifyAnswer, PairingHub, Shipped};
use crate::state::ServerState;
use scripts::Scripts;
use wire::{Body, Claimed, IdResult, In, Out, ViewClient};

/// Streams are trimmed to about this many entries.
const MAX_STREAM_LEN: u64 = 10_000;

/// A node's outbound stream lives this long after the last write to it (a node that is gone
/// leaves nothing for ever).
const OUT_TTL: Duration = Duration::from_secs(3600);

/// How many entries one read takes.
const READ_COUNT: usize = 500;

/// Inputs a node holds for Redis at most; more are dropped (with a warning) while Redis lags.
const MAX_QUEUED_INPUTS: usize = 10_000;

/// An answer a node awaits.
enum Reply {
    Identify(IdentifyAnswer),
    Assign(Option<String>),
}

/// The relay this node owns.
struct Owning {
    epoch: u64,
    /// The lease's value, `NODE|EPOCH|NONCE`.
    value: String,
    task: tokio::task::JoinHandle<()>,
}

/// This node's part of cluster pairing: see the module comment.
pub struct ClusterPairing {
    node: String,
    store: Store,
    lease: Duration,
    poll: Duration,
    id_base: u64,
    next: AtomicU64,
    /// The pairing connections this node holds.
    conns: Mutex<HashMap<ConnId, Arc<Outbox>>>,
    /// Answers awaited, by request id.
    replies: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    /// Inputs for the writer task (JSON of [`In`]), in order; at most [`MAX_QUEUED_INPUTS`].
    tx: mpsc::Sender<String>,
    out_wake: Notify,
    in_wake: Arc<Notify>,
    /// The relay lease (its value) this node's connections belong to.
    known_epoch: Mutex<Option<String>>,
    owning: Mutex<Option<Owning>>,
    /// Set on shutdown: claim nothing more.
    stopping: AtomicBool,
    relay_config: RelayConfig,
    ids: Arc<dyn IdSource>,
    scripts: Scripts,
    /// The relay's clients as last read from `ls:pairing:view`.
    view: Mutex<Vec<ClientInfo>>,
}

/// Starts cluster pairing on this node: attaches `hub` to it, subscribes to its channels,
/// and takes the relay's lease if it is free before the node serves anything (so the first
/// node of a cluster owns the relay at once).
pub async fn start(cluster: &Arc<Cluster>, hub: &Arc<PairingHub>, state: &Arc<ServerState>) {
    let (tx, rx) = mpsc::channel(MAX_QUEUED_INPUTS);
    let relay_config = state.config.relay().unwrap_or_default();
    let pairing = Arc::new(ClusterPairing {
        node: cluster.node_id.clone(),
        store: cluster.store.clone(),
        lease: cluster.lease,
        poll: cluster.poll,
        id_base: cluster.id_base(),
        next: AtomicU64::new(1),
        conns: Mutex::new(HashMap::new()),
        replies: Mutex::new(HashMap::new()),
        tx,
        out_wake: Notify::new(),
        in_wake: Arc::new(Notify::new()),
        known_epoch: Mutex::new(None),
        owning: Mutex::new(None),
        stopping: AtomicBool::new(false),
        relay_config,
        ids: state.ids.clone(),
        scripts: Scripts {
            claim: Script::new(CLAIM),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
            ship: Script::new(SHIP),
        },
        view: Mutex::new(Vec::new()),
    });
    let _ = cluster.pairing.set(pairing.clone());
    hub.attach(pairing.clone());
    for channel in [
        keys::PAIRING_IN_CHANNEL.to_string(),
        format!("{}!", keys::pairing_out(&pairing.node)),
    ] {
        let mut conn = pairing.store.conn();
        if let Err(e) = pairing
            .store
            .run(
                "SUBSCRIBE pairing",
                async move { conn.subscribe(channel).await },
            )
            .await
        {
            tracing::warn!(error = %e, "cluster pairing: subscribing failed; polling only");
        }
    }
    let cursor = pairing
        .store
        .edge_id(keys::pairing_out(&pairing.node), "XREVRANGE", "+", "-")
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| "0-0".to_string());
    pairing.clone().lease_tick(state).await;
    tokio::spawn(writer(pairing.clone(), rx));
    tokio::spawn(pairing.clone().read_loop(cursor));
    tokio::spawn(pairing.lease_loop(state.clone()));
}

impl ClusterPairing {
    fn next_id(&self) -> u64 {
        self.id_base | self.next.fetch_add(1, Ordering::Relaxed)
    }

    fn send(&self, input: &In) {
        let json = serde_json::to_string(input).expect("a pairing input serializes");
        if self.tx.try_send(json).is_err() {
            // Redis has been slow or away for a while: memory stays bounded, and the input
            // is lost as if Redis had refused it (pairing promises no replay).
            tracing::warn!(
                "cluster pairing: input dropped, {MAX_QUEUED_INPUTS} already queued for Redis"
            );
        }
    }

    fn holds(&self, conn: ConnId) -> bool {
        self.conns.lock().expect("conns").contains_key(&conn)
    }

    /// Opens a connection of this node whose frames go to `outbox`.
    pub fn open(&self, transport: Transport, outbox: Arc<Outbox>) -> ConnId {
        let conn = ConnId(self.next_id());
        self.conns.lock().expect("conns").insert(conn, outbox);
        self.send(&In::Open {
            node: self.node.clone(),
            conn: conn.0,
            sse: transport == Transport::Sse,
        });
        conn
    }

    /// Identifies `conn` at the cluster's relay; the answer comes back later.
    pub fn identify(
        &self,
        conn: ConnId,
        app: &str,
        role: Option<&str>,
        client_id: ClaimedId<'_>,
        token: Option<&str>,
    ) -> Pin<Box<dyn Future<Output = Option<IdentifyAnswer>> + Send>> {
        let id = match client_id {
            ClaimedId::Assign => Claimed::Assign,
            ClaimedId::Given(id) => Claimed::Given(id.to_string()),
            ClaimedId::Invalid => Claimed::Invalid,
        };
        let (req, rx) = self.await_reply();
        self.send(&In::Identify {
            node: self.node.clone(),
            conn: conn.0,
            req,
            app: app.to_string(),
            role: role.map(str::to_string),
            id,
            token: token.map(str::to_string),
        });
        let wait = self.answer_timeout();
        Box::pin(async move {
            match tokio::time::timeout(wait, rx).await {
                Ok(Ok(Reply::Identify(answer))) => Some(answer),
                _ => None,
            }
        })
    }

    /// A fresh client id from the cluster's relay (`clientid/`).
    pub fn assign_client_id(&self) -> Pin<Box<dyn Future<Output = Option<Option<String>>> + Send>> {
        let (req, rx) = self.await_reply();
        self.send(&In::Assign {
            node: self.node.clone(),
            req,
        });
        let wait = self.answer_timeout();
        Box::pin(async move {
            match tokio::time::timeout(wait, rx).await {
                Ok(Ok(Reply::Assign(id))) => Some(id),
                _ => None,
            }
        })
    }

    /// A connection's event.
    pub fn event(&self, conn: ConnId, recipient: &str, event: &Event) {
        if self.holds(conn) {
            self.send(&In::Event {
                conn: conn.0,
                to: recipient.to_string(),
                data: event.to_data(""),
            });
        }
    }

    /// A connection's `cr_alive`.
    pub fn alive(&self, conn: ConnId) {
        if self.holds(conn) {
            self.send(&In::Alive { conn: conn.0 });
        }
    }

    /// A valid `sendevent/` request of app `app` with access token `token`.
    pub fn request(&self, app: &str, request: &SendEvent, token: &str) {
        let body = match &request.body {
            SendEventBody::CrEvent(event) => Body::Event(event.to_data("")),
            SendEventBody::Alive(sid) => Body::Alive(sid.clone()),
            SendEventBody::Close(sid) => Body::Close(sid.clone()),
        };
        self.send(&In::Request {
            app: app.to_string(),
            role: request.role.as_str().to_string(),
            client: request.client_id.clone(),
            token: token.to_string(),
            to: request.recipient.clone(),
            body,
        });
    }

    /// A connection of this node ended by itself.
    pub fn gone(&self, conn: ConnId) {
        if self.conns.lock().expect("conns").remove(&conn).is_some() {
            self.send(&In::Gone { conn: conn.0 });
        }
    }

    /// The relay's identified clients, as its owner last wrote them (see the module comment).
    pub fn clients(&self) -> Vec<ClientInfo> {
        self.view.lock().expect("view").clone()
    }

    /// Reads the relay's admin view into the cache.
    async fn read_view(&self) {
        let mut conn = self.store.conn();
        let value: Result<Option<String>, _> = self
            .store
            .run("GET pairing view", async move {
                redis::cmd("GET")
                    .arg(keys::PAIRING_VIEW)
                    .query_async(&mut conn)
                    .await
            })
            .await;
        if let Ok(value) = value {
            let clients = value
                .and_then(|json| serde_json::from_str::<Vec<ViewClient>>(&json).ok())
                .unwrap_or_default();
            *self.view.lock().expect("view") = clients.into_iter().map(ViewClient::info).collect();
        }
    }

    /// A pub/sub message on `channel`.
    pub fn wake(&self, channel: &str) {
        if channel == keys::PAIRING_IN_CHANNEL {
            self.in_wake.notify_one();
        } else {
            self.out_wake.notify_one();
        }
    }

    /// Reads both streams again (a wake-up may have been lost).
    pub fn wake_all(&self) {
        self.in_wake.notify_one();
        self.out_wake.notify_one();
    }

    /// Shutdown: stops owning the relay and gives its lease up, so another node takes it at
    /// its next tick; claims nothing more.
    pub async fn release(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        let owning = self.owning.lock().expect("owning").take();
        if let Some(owning) = owning {
            owning.task.abort();
            let owner = owning.value;
            let script = self.scripts.release.clone();
            let mut conn = self.store.conn();
            let _ = self
                .store
                .run("release pairing", async move {
                    script
                        .key(keys::PAIRING_OWNER)
                        .arg(owner)
                        .invoke_async::<i64>(&mut conn)
                        .await
                })
                .await;
            tracing::info!(node = self.node, "cluster pairing: relay released");
        }
    }

    fn await_reply(&self) -> (u64, oneshot::Receiver<Reply>) {
        let req = self.next_id();
        let (tx, rx) = oneshot::channel();
        self.replies.lock().expect("replies").insert(req, tx);
        (req, rx)
    }

    fn answer_timeout(&self) -> Duration {
        self.lease * 2 + COMMAND_TIMEOUT
    }

    fn reply(&self, req: u64, reply: Reply) {
        if let Some(tx) = self.replies.lock().expect("replies").remove(&req) {
            let _ = tx.send(reply);
        }
    }

    /// Carries out one batch of the relay's output for this node.
    fn apply(&self, batch: Vec<Out>) {
        for item in batch {
            match item {
                Out::Frame { conn, s } => {
                    let conn = ConnId(conn);
                    match s {
                        Shipped::Text(text) => {
                            if let Some(outbox) = self.conns.lock().expect("conns").get(&conn) {
                                outbox.push(OutFrame::Text(Bytes::from(text)), Instant::now());
                            }
                        }
                        Shipped::Close(code, reason) => {
                            let outbox = self.conns.lock().expect("conns").remove(&conn);
                            if let Some(outbox) = outbox {
                                outbox.force_close(code, reason);
                            }
                        }
                    }
                }
                Out::Identified {
                    req,
                    stream,
                    result,
                } => {
                    let result = match result {
                        IdResult::Ok(id) => Ok(id),
                        IdResult::Aborted(reason) => Err(IdentifyError::Aborted(reason)),
                        IdResult::NotAwaiting => Err(IdentifyError::NotAwaitingIdentify),
                    };
                    self.reply(
                        req,
                        Reply::Identify(IdentifyAnswer {
                            stream_id: stream,
                            result,
                        }),
                    );
                }
                Out::Assigned { req, id } => self.reply(req, Reply::Assign(id)),
            }
        }
    }

    /// Reads this node's outbound stream into its connections: when woken, and every poll.
    async fn read_loop(self: Arc<Self>, mut cursor: String) {
        let key = keys::pairing_out(&self.node);
        loop {
            let _ = tokio::time::timeout(self.poll, self.out_wake.notified()).await;
            loop {
                let entries = match self
                    .store
                    .read_stream(key.clone(), "b", &cursor, READ_COUNT)
                    .await
                {
                    Ok(entries) => entries,
                    Err(e) => {
                        tracing::debug!(error = %e, "cluster pairing: reading the outbound stream failed");
                        break;
                    }
                };
                let full = entries.len() == READ_COUNT;
                for (id, json) in entries {
                    cursor = id;
                    match serde_json::from_str::<Vec<Out>>(&json) {
                        Ok(batch) => self.apply(batch),
                        Err(e) => tracing::warn!(error = %e, "cluster pairing: undecodable batch"),
                    }
                }
                if !full {
                    break;
                }
            }
        }
    }
}

/// Appends this node's inputs to `ls:pairing:in` in order, a burst in one pipeline, and wakes
/// the relay's owner.
async fn writer(pairing: Arc<ClusterPairing>, mut rx: mpsc::Receiver<String>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < READ_COUNT {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let mut pipe = redis::pipe();
        for entry in &batch {
            pipe.cmd("XADD")
                .arg(keys::PAIRING_IN)
                .arg("MAXLEN")
                .arg("~")
                .arg(MAX_STREAM_LEN)
                .arg("*")
                .arg("e")
                .arg(entry)
                .ignore();
        }
        pipe.cmd("PUBLISH")
            .arg(keys::PAIRING_IN_CHANNEL)
            .arg("1")
            .ignore();
        let mut conn = pairing.store.conn();
        if let Err(e) = pairing
            .store
            .run("XADD pairing", async move {
                pipe.query_async::<()>(&mut conn).await
            })
            .await
        {
            tracing::warn!(error = %e, inputs = batch.len(), "cluster pairing: inputs lost");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairing_channels_wake_cluster_pairing() {
        use redis::{PushInfo, PushKind, Value};
        let message = |channel: &str| PushInfo {
            kind: PushKind::Message,
            data: vec![
                Value::BulkString(channel.as_bytes().to_vec()),
                Value::BulkString(b"1".to_vec()),
            ],
        };
        let out = format!("{}!", keys::pairing_out("node-1"));
        assert_eq!(
            super::super::store::wake_of(&message(keys::PAIRING_IN_CHANNEL)),
            Some(super::super::store::Wake::Pairing(
                keys::PAIRING_IN_CHANNEL.into()
            ))
        );
        assert_eq!(
            super::super::store::wake_of(&message(&out)),
            Some(super::super::store::Wake::Pairing(out.clone()))
        );
    }
}
