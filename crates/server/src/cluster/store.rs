//! The Redis layer of cluster mode: every read and write a node makes, as typed async methods.
//!
//! One [`Store`] per node wraps one redis-rs [`ConnectionManager`]: a single multiplexed
//! connection, spoken in RESP3 so that pub/sub messages arrive as *push* frames on the same
//! connection as the commands (no second connection to keep in step). The manager reconnects
//! by itself with exponential backoff and jitter (50 ms doubling to 1 s, forever), and
//! re-sends every `SUBSCRIBE` on the new connection before any command uses it (automatic
//! resubscription): a Redis restart or failover does not silently end the wake-ups. Pub/sub is
//! still at most once, so callers also poll; the streams hold the data.
//!
//! Wake-ups reach the caller as [`Wake`] values on the channel given to [`Store::connect`]:
//! a message on `ls:{s:ID}:in!` is [`Wake::Inbound`], on `ls:{s:ID}:out!` [`Wake::Outbound`]
//! (both carry the session key `ID`), on `ls:released!` (every store subscribes to it when it
//! connects) [`Wake::Released`], and a lost connection is [`Wake::Disconnected`].
//!
//! Every method gives up after [`COMMAND_TIMEOUT`] with a [`StoreError::Redis`], also while the
//! manager is still reconnecting, so a dead Redis fails fast instead of hanging a session.
//! [`Store::connected`] says whether the last thing heard from Redis was good.
//!
//! Atomic steps are the Lua scripts of [`super::scripts`] (see there for why each is one
//! script); the other methods are single commands or pipelines of independent commands.
//! Methods take the session id in any spelling and name its keys with [`SessionKeys`].

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, RedisError, Value};
use tokio::sync::mpsc::UnboundedSender;

use super::keys::{self, Direction, SessionKeys};
use super::scripts::Scripts;

/// How long any one store method may take before it fails (including waiting for a
/// reconnection in progress).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The first delay between reconnection attempts (it doubles, with jitter).
pub const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);

/// The longest delay between reconnection attempts (before jitter).
pub const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(1);

/// How long the keys of an ended session stay, so member nodes can still read its last batch.
pub const ENDED_DRAIN: Duration = Duration::from_secs(60);

/// A wake-up from Redis pub/sub, or the news that the connection was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// Something was appended to the inbound stream of the session with this key.
    Inbound(String),
    /// Something was appended to the outbound stream of the session with this key.
    Outbound(String),
    /// A node released its sessions (it is stopping): look for sessions to claim now.
    Released,
    /// The connection to Redis broke; the manager is reconnecting (and will resubscribe).
    /// Wake-ups may have been missed: poll.
    Disconnected,
    /// A message on a pairing channel (`ls:pairing:...!`), named by the channel.
    Pairing(String),
}

/// Why a store method failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis did not answer (in time), or answered with an error.
    #[error("redis: {0}")]
    Redis(String),
    /// Redis answered something this store cannot read (a malformed value in a key).
    #[error("{0}")]
    Protocol(String),
    /// The session does not exist in Redis (no spec) or has ended.
    #[error("no session {0} in Redis (never created, or ended)")]
    NoSession(String),
}

/// What a store method answers.
pub type StoreResult<T> = Result<T, StoreError>;

/// One stream entry: its id (`ms-seq`) and the value of its one field (`e` in the inbound
/// stream, `b` in the outbound stream).
pub type Entry = (String, String);

/// What the owner writes after applying a batch of inbound entries (see
/// [`Store::append_outbound`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundWrite {
    /// JSON of the outbound batch (the `b` field of the new outbound entry).
    pub batch: String,
    /// Id of the last inbound entry this batch answers (the new cursor).
    pub cursor: String,
    /// JSON of the session's admin view, if it changed.
    pub view: Option<String>,
    /// Trim the outbound stream to entries with ids at or above this one (the resume window).
    /// Must not be above the new entry's id (it would delete it): use a time in the past.
    pub trim_min_id: Option<String>,
    /// The session ended with this batch: its owner key goes, its other keys expire after
    /// [`ENDED_DRAIN`], and it leaves `ls:sessions`.
    pub ended: bool,
    /// The session id as created (the member of `ls:sessions` to remove when it ended).
    pub session_id: String,
}

/// The node's handle on Redis. Cheap to clone (one shared connection).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    manager: ConnectionManager,
    scripts: Scripts,
    connected: Arc<AtomicBool>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("connected", &self.connected())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Connects to Redis at `url` (RESP3 whatever the URL says) and checks it answers a `PING`
    /// within [`COMMAND_TIMEOUT`]. Pub/sub wake-ups and disconnections go to `wakes`.
    pub async fn connect(url: &str, wakes: UnboundedSender<Wake>) -> StoreResult<Store> {
        let client = resp3_client(url)?;
        let connected = Arc::new(AtomicBool::new(false));
        let config = ConnectionManagerConfig::new()
            .set_min_delay(RECONNECT_MIN_DELAY)
            .set_max_delay(RECONNECT_MAX_DELAY)
            .set_exponent_base(2.0)
            .set_number_of_retries(usize::MAX)
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_push_sender(push_handler(wakes, connected.clone()))
            .set_automatic_resubscription();
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| StoreError::Redis(format!("setting up the connection: {e}")))?;
        let store = Store {
            inner: Arc::new(Inner {
                manager,
                scripts: Scripts::new(),
                connected,
            }),
        };
        store.ping().await?;
        let mut conn = store.conn();
        store
            .run("SUBSCRIBE released", async move {
                conn.subscribe(keys::RELEASED_CHANNEL).await
            })
            .await?;
        Ok(store)
    }

    /// Whether Redis answered the last command: false after a failed (or timed out) command
    /// or a disconnection, true again after the next success.
    pub fn connected(&self) -> bool {
        self.inner.connected.load(Ordering::Relaxed)
    }

    /// `PING`.
    pub async fn ping(&self) -> StoreResult<()> {
        let mut conn = self.conn();
        self.run("PING", async move {
            redis::cmd("PING").query_async::<String>(&mut conn).await
        })
        .await?;
        Ok(())
    }

    /// The cluster epoch: sets `ls:cluster` to `candidate` if it has none, and answers the
    /// value it holds (the candidate, or the epoch set by another node earlier).
    pub async fn cluster_epoch(&self, candidate: &str) -> StoreResult<String> {
        let mut conn = self.conn();
        let script = self.inner.scripts.cluster_epoch.clone();
        let candidate = candidate.to_owned();
        let epoch: Option<String> = self
            .run("cluster epoch", async move {
                script
                    .key(keys::CLUSTER_EPOCH)
                    .arg(candidate)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        epoch.ok_or_else(|| StoreError::Protocol("ls:cluster vanished while it was set".into()))
    }

    /// A new node number (`INCR ls:node_seq`).
    pub async fn node_number(&self) -> StoreResult<u64> {
        let mut conn = self.conn();
        self.run("INCR node_seq", async move {
            redis::cmd("INCR")
                .arg(keys::NODE_SEQ)
                .query_async(&mut conn)
                .await
        })
        .await
    }

    /// Writes (or renews) a node's liveness key with `info_json` for `lease`, and records the
    /// node in `ls:nodes`.
    pub async fn renew_node(
        &self,
        node: &str,
        info_json: &str,
        lease: Duration,
    ) -> StoreResult<()> {
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(keys::node(node))
            .arg(info_json)
            .arg("PX")
            .arg(millis(lease))
            .ignore()
            .cmd("SADD")
            .arg(keys::NODES)
            .arg(node)
            .ignore();
        let mut conn = self.conn();
        self.run("renew node", async move {
            pipe.query_async::<()>(&mut conn).await
        })
        .await
    }

    /// Removes a node (graceful stop): deletes its liveness key and its `ls:nodes` entry.
    pub async fn remove_node(&self, node: &str) -> StoreResult<()> {
        let mut pipe = redis::pipe();
        pipe.cmd("DEL")
            .arg(keys::node(node))
            .ignore()
            .cmd("SREM")
            .arg(keys::NODES)
            .arg(node)
            .ignore();
        let mut conn = self.conn();
        self.run("remove node", async move {
            pipe.query_async::<()>(&mut conn).await
        })
        .await
    }

    /// The live nodes (those in `ls:nodes` whose liveness key exists), with their info JSON,
    /// ordered by node id.
    pub async fn live_nodes(&self) -> StoreResult<Vec<(String, String)>> {
        let mut nodes = self.set_members(keys::NODES).await?;
        nodes.sort();
        let infos = self
            .get_many(
                "GET node",
                nodes.iter().map(|node| keys::node(node)).collect(),
            )
            .await?;
        Ok(nodes
            .into_iter()
            .zip(infos)
            .filter_map(|(node, info)| Some((node, info?)))
            .collect())
    }

    /// Whether the node's liveness key exists.
    pub async fn node_alive(&self, node: &str) -> StoreResult<bool> {
        self.exists(keys::node(node)).await
    }

    /// Creates a session cluster-wide: `SET spec NX`, then adds the id to `ls:sessions`.
    /// Answers false (and changes nothing) if the id is taken (also by a session that ended
    /// less than [`ENDED_DRAIN`] ago). The spec is the truth; `ls:sessions` is an index.
    pub async fn create_session(&self, session_id: &str, spec_json: &str) -> StoreResult<bool> {
        let keys = SessionKeys::new(session_id);
        let mut conn = self.conn();
        let spec_json = spec_json.to_owned();
        let reply: Value = self
            .run("SET spec NX", async move {
                redis::cmd("SET")
                    .arg(keys.spec)
                    .arg(spec_json)
                    .arg("NX")
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        if reply == Value::Nil {
            return Ok(false);
        }
        let mut conn = self.conn();
        let id = session_id.to_owned();
        self.run("SADD sessions", async move {
            redis::cmd("SADD")
                .arg(keys::SESSIONS)
                .arg(id)
                .query_async::<()>(&mut conn)
                .await
        })
        .await?;
        Ok(true)
    }

    /// The session's spec JSON, if the session exists.
    pub async fn session_spec(&self, session_id: &str) -> StoreResult<Option<String>> {
        self.get(SessionKeys::new(session_id).spec).await
    }

    /// The ids in `ls:sessions`, sorted. An id whose spec is gone is a session that ended.
    pub async fn session_ids(&self) -> StoreResult<Vec<String>> {
        let mut ids = self.set_members(keys::SESSIONS).await?;
        ids.sort();
        Ok(ids)
    }

    /// Claims the session for `node` for `lease` if it has no owner: answers the new epoch,
    /// or `None` if it has an owner, does not exist, or has ended.
    pub async fn claim(
        &self,
        session_id: &str,
        node: &str,
        lease: Duration,
    ) -> StoreResult<Option<u64>> {
        let keys = SessionKeys::new(session_id);
        let script = self.inner.scripts.claim.clone();
        let node = node.to_owned();
        let mut conn = self.conn();
        self.run("claim", async move {
            script
                .key(keys.owner)
                .key(keys.epoch)
                .key(keys.spec)
                .arg(node)
                .arg(millis(lease))
                .invoke_async(&mut conn)
                .await
        })
        .await
    }

    /// Renews the lease of `node` at `epoch` for `lease`: false if it is not the owner.
    pub async fn renew(
        &self,
        session_id: &str,
        node: &str,
        epoch: u64,
        lease: Duration,
    ) -> StoreResult<bool> {
        let keys = SessionKeys::new(session_id);
        let script = self.inner.scripts.renew.clone();
        let owner = keys::owner_value(node, epoch);
        let mut conn = self.conn();
        self.run("renew", async move {
            script
                .key(keys.owner)
                .arg(owner)
                .arg(millis(lease))
                .invoke_async(&mut conn)
                .await
        })
        .await
    }

    /// Gives up the lease of `node` at `epoch` (so another node can claim at once): false if
    /// it was not the owner.
    pub async fn release(&self, session_id: &str, node: &str, epoch: u64) -> StoreResult<bool> {
        let keys = SessionKeys::new(session_id);
        let script = self.inner.scripts.release.clone();
        let owner = keys::owner_value(node, epoch);
        let mut conn = self.conn();
        self.run("release", async move {
            script
                .key(keys.owner)
                .arg(owner)
                .invoke_async(&mut conn)
                .await
        })
        .await
    }

    /// The current owner `(node, epoch)`, if the session has one.
    pub async fn owner(&self, session_id: &str) -> StoreResult<Option<(String, u64)>> {
        let key = SessionKeys::new(session_id).owner;
        let Some(value) = self.get(key.clone()).await? else {
            return Ok(None);
        };
        keys::parse_owner(&value)
            .map(Some)
            .ok_or_else(|| StoreError::Protocol(format!("{key} holds {value:?}, not NODE|EPOCH")))
    }

    /// How long each session's owner key has left to live, in one pipelined `PTTL` per
    /// session, answers in order: `None` for a session without an owner (the key is gone),
    /// so a claim can succeed now.
    pub async fn owner_ttls(&self, session_ids: &[String]) -> StoreResult<Vec<Option<Duration>>> {
        if session_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in session_ids {
            pipe.cmd("PTTL").arg(SessionKeys::new(id).owner);
        }
        let mut conn = self.conn();
        let ttls: Vec<i64> = self
            .run("PTTL", async move { pipe.query_async(&mut conn).await })
            .await?;
        // -2: no key. -1: a key without expiry, which no script writes; it never expires, so
        // it reads as an owner forever (`Duration::MAX`: never claimable, never a wake-up).
        Ok(ttls
            .into_iter()
            .map(|ms| match ms {
                -2 => None,
                -1 => Some(Duration::MAX),
                ms => Some(Duration::from_millis(ms.max(0) as u64)),
            })
            .collect())
    }

    /// Appends an entry to the session's inbound stream and wakes its owner: answers the entry
    /// id, or [`StoreError::NoSession`] if the session does not exist or has ended.
    pub async fn append_inbound(&self, session_id: &str, entry_json: &str) -> StoreResult<String> {
        let keys = SessionKeys::new(session_id);
        let script = self.inner.scripts.append_inbound.clone();
        let entry = entry_json.to_owned();
        let payload = session_id.to_owned();
        let mut conn = self.conn();
        let id: Option<String> = self
            .run("append inbound", async move {
                script
                    .key(keys.spec)
                    .key(keys.inbound)
                    .arg(entry)
                    .arg(keys.inbound_channel)
                    .arg(payload)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        id.ok_or_else(|| StoreError::NoSession(session_id.to_owned()))
    }

    /// The owner's own inbound entry (its timer), fenced: answers the entry id, or `None` if
    /// `node` at `epoch` is not the owner (nothing written).
    pub async fn append_inbound_fenced(
        &self,
        session_id: &str,
        node: &str,
        epoch: u64,
        entry_json: &str,
    ) -> StoreResult<Option<String>> {
        let keys = SessionKeys::new(session_id);
        let script = self.inner.scripts.append_inbound_fenced.clone();
        let owner = keys::owner_value(node, epoch);
        let entry = entry_json.to_owned();
        let payload = session_id.to_owned();
        let mut conn = self.conn();
        self.run("append inbound (fenced)", async move {
            script
                .key(keys.owner)
                .key(keys.inbound)
                .arg(owner)
                .arg(entry)
                .arg(keys.inbound_channel)
                .arg(payload)
                .invoke_async(&mut conn)
                .await
        })
        .await
    }

    /// Up to `count` inbound entries after the id `after` (exclusive; `"0-0"` for the start).
    pub async fn read_inbound(
        &self,
        session_id: &str,
        after: &str,
        count: usize,
    ) -> StoreResult<Vec<Entry>> {
        let keys = SessionKeys::new(session_id);
        self.read_stream(keys.inbound, "e", after, count).await
    }

    /// The owner's output for a batch, fenced, in one script: answers the new outbound id, or
    /// `None` if `node` at `epoch` is not the owner (nothing written). Writes the batch, the
    /// cursor, the view (if any), trims (if asked), wakes the member nodes; and if the session
    /// ended, deletes the owner key and lets the other keys expire after [`ENDED_DRAIN`].
    ///
    /// When it ended, the id then leaves `ls:sessions` in a second command (another slot, so
    /// not in the script). If that command fails the write still stands (answered `Some`), the
    /// id stays listed with no spec, and a reader of [`Store::session_ids`] sees it as ended.
    pub async fn append_outbound(
        &self,
        session_id: &str,
        node: &str,
        epoch: u64,
        write: &OutboundWrite,
    ) -> StoreResult<Option<String>> {
        let keys = SessionKeys::new(session_id);
        let script = self.inner.scripts.append_outbound.clone();
        let owner = keys::owner_value(node, epoch);
        let write_owned = write.clone();
        let payload = session_id.to_owned();
        let mut conn = self.conn();
        let id: Option<String> = self
            .run("append outbound", async move {
                let write = write_owned;
                script
                    .key(keys.owner)
                    .key(keys.outbound)
                    .key(keys.cursor)
                    .key(keys.view)
                    .key(keys.spec)
                    .key(keys.inbound)
                    .arg(owner)
                    .arg(write.batch)
                    .arg(write.cursor)
                    .arg(write.view.as_deref().unwrap_or(""))
                    .arg(flag(write.view.is_some()))
                    .arg(write.trim_min_id.as_deref().unwrap_or(""))
                    .arg(flag(write.ended))
                    .arg(keys.outbound_channel)
                    .arg(payload)
                    .arg(millis(ENDED_DRAIN))
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        if id.is_some() && write.ended {
            self.unlist_session(&write.session_id).await;
        }
        Ok(id)
    }

    /// Up to `count` outbound entries after the id `after` (exclusive; `"0-0"` for the start).
    pub async fn read_outbound(
        &self,
        session_id: &str,
        after: &str,
        count: usize,
    ) -> StoreResult<Vec<Entry>> {
        let keys = SessionKeys::new(session_id);
        self.read_stream(keys.outbound, "b", after, count).await
    }

    /// The id of the last outbound entry, `"0-0"` if there is none.
    pub async fn outbound_tail(&self, session_id: &str) -> StoreResult<String> {
        let key = SessionKeys::new(session_id).outbound;
        let last = self.edge_id(key, "XREVRANGE", "+", "-").await?;
        Ok(last.unwrap_or_else(|| "0-0".to_owned()))
    }

    /// The id of the first outbound entry still held (older ones were trimmed), if any: a
    /// reader whose last id is below it has missed entries.
    pub async fn outbound_head(&self, session_id: &str) -> StoreResult<Option<String>> {
        let key = SessionKeys::new(session_id).outbound;
        self.edge_id(key, "XRANGE", "-", "+").await
    }

    /// The id of the last inbound entry the owner applied, if any.
    pub async fn cursor(&self, session_id: &str) -> StoreResult<Option<String>> {
        self.get(SessionKeys::new(session_id).cursor).await
    }

    /// The admin view JSON of each session, in order (`None`: no view). One pipelined `GET`
    /// per session (the keys are in different slots).
    pub async fn views(&self, session_ids: &[String]) -> StoreResult<Vec<Option<String>>> {
        let keys = session_ids
            .iter()
            .map(|id| SessionKeys::new(id).view)
            .collect();
        self.get_many("GET view", keys).await
    }

    /// Stores a resume token's value for `ttl` (a plain `SET PX`).
    pub async fn set_token(&self, token: &str, value: &str, ttl: Duration) -> StoreResult<()> {
        let mut conn = self.conn();
        let key = keys::token(token);
        let value = value.to_owned();
        self.run("SET token", async move {
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(millis(ttl))
                .query_async::<()>(&mut conn)
                .await
        })
        .await
    }

    /// A resume token's value, if it is still held.
    pub async fn get_token(&self, token: &str) -> StoreResult<Option<String>> {
        self.get(keys::token(token)).await
    }

    /// Subscribes to the session's inbound (`inbound`) or outbound wake-ups. Kept across
    /// reconnections.
    pub async fn subscribe_session(&self, session_id: &str, inbound: bool) -> StoreResult<()> {
        let channel = SessionKeys::new(session_id)
            .channel(direction(inbound))
            .to_owned();
        let mut conn = self.conn();
        self.run("SUBSCRIBE", async move { conn.subscribe(channel).await })
            .await
    }

    /// Undoes [`Store::subscribe_session`].
    pub async fn unsubscribe_session(&self, session_id: &str, inbound: bool) -> StoreResult<()> {
        let channel = SessionKeys::new(session_id)
            .channel(direction(inbound))
            .to_owned();
        let mut conn = self.conn();
        self.run(
            "UNSUBSCRIBE",
            async move { conn.unsubscribe(channel).await },
        )
        .await
    }

    /// Tells every node (by `PUBLISH ls:released!`) that this one released its sessions, so
    /// they claim them at once ([`Wake::Released`]); this node hears it too.
    pub async fn announce_released(&self) -> StoreResult<()> {
        let mut conn = self.conn();
        self.run("PUBLISH released", async move {
            redis::cmd("PUBLISH")
                .arg(keys::RELEASED_CHANNEL)
                .arg("1")
                .query_async::<()>(&mut conn)
                .await
        })
        .await
    }

    /// `FLUSHALL`: for tests only (it deletes every key of the Redis, not only ours).
    pub async fn flush_all_for_tests(&self) -> StoreResult<()> {
        let mut conn = self.conn();
        self.run("FLUSHALL", async move {
            redis::cmd("FLUSHALL").query_async::<()>(&mut conn).await
        })
        .await
    }

    /// A handle on the shared connection (the manager is a cheap clone).
    pub(crate) fn conn(&self) -> ConnectionManager {
        self.inner.manager.clone()
    }

    /// Runs one Redis call under [`COMMAND_TIMEOUT`], keeps [`Store::connected`] up to date,
    /// and names the step in the error.
    pub(crate) async fn run<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, RedisError>>,
    ) -> StoreResult<T> {
        match tokio::time::timeout(COMMAND_TIMEOUT, call).await {
            Ok(Ok(value)) => {
                self.inner.connected.store(true, Ordering::Relaxed);
                Ok(value)
            }
            Ok(Err(error)) => {
                if is_connection_error(&error) {
                    self.inner.connected.store(false, Ordering::Relaxed);
                }
                Err(StoreError::Redis(format!("{what}: {error}")))
            }
            Err(_) => {
                self.inner.connected.store(false, Ordering::Relaxed);
                Err(StoreError::Redis(format!(
                    "{what}: no answer within {COMMAND_TIMEOUT:?}"
                )))
            }
        }
    }

    /// `GET key`.
    async fn get(&self, key: String) -> StoreResult<Option<String>> {
        let mut conn = self.conn();
        self.run("GET", async move {
            redis::cmd("GET").arg(key).query_async(&mut conn).await
        })
        .await
    }

    /// One pipelined `GET` per key, answers in order.
    async fn get_many(&self, what: &str, keys: Vec<String>) -> StoreResult<Vec<Option<String>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.cmd("GET").arg(key);
        }
        let mut conn = self.conn();
        self.run(what, async move { pipe.query_async(&mut conn).await })
            .await
    }

    /// `EXISTS key`.
    async fn exists(&self, key: String) -> StoreResult<bool> {
        let mut conn = self.conn();
        self.run("EXISTS", async move {
            redis::cmd("EXISTS").arg(key).query_async(&mut conn).await
        })
        .await
    }

    /// `SMEMBERS key`.
    async fn set_members(&self, key: &'static str) -> StoreResult<Vec<String>> {
        let mut conn = self.conn();
        self.run("SMEMBERS", async move {
            redis::cmd("SMEMBERS").arg(key).query_async(&mut conn).await
        })
        .await
    }

    /// `XRANGE key (after + COUNT count`, each entry's `field`.
    pub(crate) async fn read_stream(
        &self,
        key: String,
        field: &'static str,
        after: &str,
        count: usize,
    ) -> StoreResult<Vec<Entry>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let start = format!("({after}");
        let mut conn = self.conn();
        let reply: Value = self
            .run("XRANGE", async move {
                redis::cmd("XRANGE")
                    .arg(&key)
                    .arg(start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(count)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        parse_entries(reply, field)
    }

    /// The id of the first (`XRANGE - +`) or last (`XREVRANGE + -`) entry of a stream.
    pub(crate) async fn edge_id(
        &self,
        key: String,
        command: &'static str,
        from: &'static str,
        to: &'static str,
    ) -> StoreResult<Option<String>> {
        let mut conn = self.conn();
        let reply: Value = self
            .run(command, async move {
                redis::cmd(command)
                    .arg(key)
                    .arg(from)
                    .arg(to)
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let mut entries = entry_list(reply)?;
        match entries.pop() {
            None => Ok(None),
            Some(entry) => Ok(Some(split_entry(entry)?.0)),
        }
    }

    /// Removes an ended session's id from `ls:sessions`; a failure is logged, not returned
    /// (the ended write it follows has happened).
    async fn unlist_session(&self, session_id: &str) {
        let mut conn = self.conn();
        let id = session_id.to_owned();
        let result = self
            .run("SREM sessions", async move {
                redis::cmd("SREM")
                    .arg(keys::SESSIONS)
                    .arg(id)
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await;
        if let Err(error) = result {
            tracing::warn!(session = session_id, %error, "ended session left listed in ls:sessions");
        }
    }
}

/// A client for `url` that speaks RESP3 (needed for push messages), whatever the URL asks.
fn resp3_client(url: &str) -> StoreResult<Client> {
    let info = url
        .into_connection_info()
        .map_err(|e| StoreError::Redis(format!("the Redis URL is not valid: {e}")))?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    Client::open(info.set_redis_settings(settings))
        .map_err(|e| StoreError::Redis(format!("the Redis URL is not valid: {e}")))
}

/// The push handler: pub/sub messages on our channels become [`Wake`]s; a disconnection marks
/// the store disconnected and is passed on. It never blocks (an unbounded channel) and ignores
/// a closed receiver.
fn push_handler(
    wakes: UnboundedSender<Wake>,
    connected: Arc<AtomicBool>,
) -> impl Fn(PushInfo) -> Result<(), std::convert::Infallible> + Send + Sync + 'static {
    move |push: PushInfo| {
        if push.kind == PushKind::Disconnection {
            connected.store(false, Ordering::Relaxed);
        }
        if let Some(wake) = wake_of(&push) {
            let _ = wakes.send(wake);
        }
        Ok(())
    }
}

/// The [`Wake`] a push message means, if any: a `message` on one of our channels, or a
/// disconnection. Subscription confirmations and foreign channels mean nothing.
pub fn wake_of(push: &PushInfo) -> Option<Wake> {
    match push.kind {
        PushKind::Disconnection => Some(Wake::Disconnected),
        PushKind::Message => {
            let channel = push.data.first().and_then(value_text)?;
            if channel == keys::RELEASED_CHANNEL {
                return Some(Wake::Released);
            }
            if channel.starts_with(keys::PAIRING_PREFIX) {
                return Some(Wake::Pairing(channel));
            }
            let (key, direction) = keys::parse_channel(&channel)?;
            Some(match direction {
                Direction::Inbound => Wake::Inbound(key),
                Direction::Outbound => Wake::Outbound(key),
            })
        }
        _ => None,
    }
}

/// Errors that mean the connection (not the command) failed.
fn is_connection_error(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_unrecoverable_error()
}

/// A duration in whole milliseconds for `PX`/`PEXPIRE`, at least 1 (0 is an error there).
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// A script flag argument.
fn flag(on: bool) -> &'static str {
    if on {
        "1"
    } else {
        "0"
    }
}

/// The channel direction of `inbound`.
fn direction(inbound: bool) -> Direction {
    if inbound {
        Direction::Inbound
    } else {
        Direction::Outbound
    }
}

/// The text of a string-like value.
fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// The entries of an `XRANGE`/`XREVRANGE` reply.
fn entry_list(reply: Value) -> StoreResult<Vec<Value>> {
    match reply {
        Value::Array(entries) => Ok(entries),
        Value::Nil => Ok(Vec::new()),
        other => Err(StoreError::Protocol(format!(
            "a stream range answered {other:?}, not a list of entries"
        ))),
    }
}

/// One entry `[id, fields]` into its id and its fields as `(name, value)` pairs.
fn split_entry(entry: Value) -> StoreResult<(String, Vec<(Value, Value)>)> {
    let Value::Array(parts) = entry else {
        return Err(StoreError::Protocol(format!(
            "a stream entry is {entry:?}, not [id, fields]"
        )));
    };
    let mut parts = parts.into_iter();
    let (Some(id), Some(fields), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(StoreError::Protocol(
            "a stream entry does not have exactly an id and fields".into(),
        ));
    };
    let id = value_text(&id)
        .ok_or_else(|| StoreError::Protocol(format!("a stream entry id is {id:?}")))?;
    let fields = match fields {
        Value::Map(pairs) => pairs,
        Value::Array(flat) => pair_up(flat),
        other => {
            return Err(StoreError::Protocol(format!(
                "the fields of stream entry {id} are {other:?}"
            )))
        }
    };
    Ok((id, fields))
}

/// `[k1, v1, k2, v2, ...]` into pairs (an odd last item is dropped).
fn pair_up(flat: Vec<Value>) -> Vec<(Value, Value)> {
    let mut pairs = Vec::with_capacity(flat.len() / 2);
    let mut items = flat.into_iter();
    while let (Some(name), Some(value)) = (items.next(), items.next()) {
        pairs.push((name, value));
    }
    pairs
}

/// The `(id, value of field)` of every entry of a stream range reply.
fn parse_entries(reply: Value, field: &str) -> StoreResult<Vec<Entry>> {
    entry_list(reply)?
        .into_iter()
        .map(|entry| {
            let (id, fields) = split_entry(entry)?;
            let value = fields
                .iter()
                .find(|(name, _)| value_text(name).as_deref() == Some(field))
                .and_then(|(_, value)| value_text(value))
                .ok_or_else(|| {
                    StoreError::Protocol(format!("stream entry {id} has no UTF-8 field {field:?}"))
                })?;
            Ok((id, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn message(channel: &str) -> PushInfo {
        PushInfo {
            kind: PushKind::Message,
            data: vec![text(channel), text("k7p3xq")],
        }
    }

    #[test]
    fn push_messages_become_wakes_by_their_channel() {
        assert_eq!(
            wake_of(&message("ls:{s:K7P3XQ}:in!")),
            Some(Wake::Inbound("K7P3XQ".into()))
        );
        assert_eq!(
            wake_of(&message("ls:{s:K7P3XQ}:out!")),
            Some(Wake::Outbound("K7P3XQ".into()))
        );
        assert_eq!(wake_of(&message("ls:released!")), Some(Wake::Released));
        assert_eq!(wake_of(&message("other")), None);
        let disconnect = PushInfo {
            kind: PushKind::Disconnection,
            data: vec![],
        };
        assert_eq!(wake_of(&disconnect), Some(Wake::Disconnected));
        let confirmation = PushInfo {
            kind: PushKind::Subscribe,
            data: vec![text("ls:{s:K7P3XQ}:in!"), Value::Int(1)],
        };
        assert_eq!(wake_of(&confirmation), None);
        let empty = PushInfo {
            kind: PushKind::Message,
            data: vec![],
        };
        assert_eq!(wake_of(&empty), None);
    }

    #[test]
    fn the_push_handler_marks_a_disconnection() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let connected = Arc::new(AtomicBool::new(true));
        let handler = push_handler(tx, connected.clone());
        handler(message("ls:{s:AB}:out!")).unwrap();
        assert!(connected.load(Ordering::Relaxed));
        handler(PushInfo {
            kind: PushKind::Disconnection,
            data: vec![],
        })
        .unwrap();
        assert!(!connected.load(Ordering::Relaxed));
        assert_eq!(rx.try_recv(), Ok(Wake::Outbound("AB".into())));
        assert_eq!(rx.try_recv(), Ok(Wake::Disconnected));
        drop(rx);
        handler(message("ls:{s:AB}:out!")).expect("a closed receiver is not an error");
    }

    #[test]
    fn stream_replies_parse_flat_and_map_fields() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                text("1-0"),
                Value::Array(vec![text("e"), text("{\"a\":1}")]),
            ]),
            Value::Array(vec![
                text("2-5"),
                Value::Map(vec![(text("x"), text("no")), (text("e"), text("two"))]),
            ]),
        ]);
        assert_eq!(
            parse_entries(reply, "e").unwrap(),
            vec![
                ("1-0".to_owned(), "{\"a\":1}".to_owned()),
                ("2-5".to_owned(), "two".to_owned())
            ]
        );
        assert_eq!(parse_entries(Value::Nil, "e").unwrap(), vec![]);
    }

    #[test]
    fn malformed_stream_replies_are_errors_not_panics() {
        let missing_field = Value::Array(vec![Value::Array(vec![
            text("1-0"),
            Value::Array(vec![text("b"), text("x")]),
        ])]);
        assert!(matches!(
            parse_entries(missing_field, "e"),
            Err(StoreError::Protocol(_))
        ));
        assert!(matches!(
            parse_entries(Value::Int(3), "e"),
            Err(StoreError::Protocol(_))
        ));
        let short = Value::Array(vec![Value::Array(vec![text("1-0")])]);
        assert!(matches!(
            parse_entries(short, "e"),
            Err(StoreError::Protocol(_))
        ));
        let bad_utf8 = Value::Array(vec![Value::Array(vec![
            text("1-0"),
            Value::Array(vec![text("e"), Value::BulkString(vec![0xff])]),
        ])]);
        assert!(matches!(
            parse_entries(bad_utf8, "e"),
            Err(StoreError::Protocol(_))
        ));
    }

    #[test]
    fn durations_become_positive_milliseconds() {
        assert_eq!(millis(Duration::from_secs(10)), 10_000);
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_micros(1500)), 1);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }

    #[test]
    fn a_url_of_any_protocol_becomes_resp3() {
        for url in [
            "redis://127.0.0.1:7000",
            "redis://127.0.0.1:7000/?protocol=resp2",
        ] {
            let client = resp3_client(url).unwrap();
            assert_eq!(
                client.get_connection_info().redis_settings().protocol(),
                ProtocolVersion::RESP3,
                "{url}"
            );
        }
        assert!(resp3_client("not a url").is_err());
    }
}
