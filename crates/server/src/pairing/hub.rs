//! The pairing hub: the core's [`PairingRelay`] under one lock, with each connection's
//! outbox, and the task that runs the relay's timers.
//!
//! Every pairing connection (a WebSocket's driver, an SSE stream, a `sendevent/` request)
//! calls the hub directly: it locks, feeds the relay one input with the current time, and
//! carries out what the relay decided before unlocking: each [`Action`] is encoded for the
//! recipient's transport ([`encode_event`]: a `cr_event` frame or an SSE `crEvent`) and
//! pushed onto that connection's outbox, which never waits. So an event goes from its
//! sender's task to its recipient's outbox with no hop in between, and the relay's rules see
//! every input in one order. The timer task sleeps until the relay's
//! [`PairingRelay::poll_timeout`] and is woken whenever an input may have moved it earlier.
//!
//! **Cluster mode** (`--redis`, see [`crate::cluster::pairing`]) uses the same hub two ways.
//! Every node's hub is attached to the node's [`ClusterPairing`] ([`PairingHub::attach`]) and
//! becomes a thin proxy: each input is handed to it (it goes to the cluster's one relay
//! through Redis) and answers that the caller awaits come back as an [`Answer::Later`]. The
//! node holding the cluster's pairing lease runs one more hub, whose connections are all
//! *remote* ([`PairingHub::open_remote`]): what it would push onto a connection's outbox is
//! collected instead ([`PairingHub::take_shipped`]) and sent to the node holding it. The
//! encoding and every rule stay the ones above.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use loudsync_core::ids::IdSource;
use loudsync_core::pairing::{
    Action, ConnId, Credentials, IdentifyError, PairingRelay, RelayConfig, Routed, Sender,
    StreamId, Transport, Welcome,
};
use loudsync_core::Now;
use loudsync_protocol::close_code;
use loudsync_protocol::pairing::sse;
use loudsync_protocol::pairing::ws::{self, PairingServerFrame};
use loudsync_protocol::pairing::{AbortReason, AppSpec, ClaimedId, Event};
use metrics::{counter, gauge};
use tokio::sync::Notify;

use crate::clock::now;
use crate::cluster::pairing::ClusterPairing;
use crate::outbox::{OutFrame, Outbox};

/// The close reason of a WebSocket that sent no valid `cr_identify` in time.
pub const NO_IDENTIFY: &str = "no identify within the alive timeout";

/// Where a connection's frames go.
enum SinkTo {
    /// Its outbox on this node.
    Local(Arc<Outbox>),
    /// The node with this id holds it (the cluster's relay hub only).
    Remote(String),
}

/// One open connection's way out.
struct Sink {
    to: SinkTo,
    transport: Transport,
    stream_id: StreamId,
}

/// What the cluster's relay hub sends a connection held by a node (see
/// [`PairingHub::take_shipped`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Shipped {
    /// A text frame (WebSocket) or SSE event text, for the connection's outbox.
    Text(String),
    /// End the connection after what is queued: this close code and reason.
    Close(u16, String),
}

struct Inner {
    relay: PairingRelay<Event>,
    sinks: HashMap<ConnId, Sink>,
    next_conn: u64,
    /// What was sent to remote connections, in order: (node, connection, what).
    shipped: Vec<(String, ConnId, Shipped)>,
}

/// The relay, the connections' outboxes, and the timer's wake-up: see the module comment.
pub struct PairingHub {
    inner: Mutex<Inner>,
    apps: Vec<AppSpec>,
    wake: Notify,
    /// Cluster mode: the node's way to the cluster's one relay (every input goes there).
    remote: OnceLock<Arc<ClusterPairing>>,
}

/// What an identify got: the client id it is live for, or why not; and the connection's
/// stream id (0 when not known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifyAnswer {
    /// The connection's stream id (P15).
    pub stream_id: u64,
    /// The client id (its own or the one assigned), or the refusal.
    pub result: Result<String, IdentifyError>,
}

/// An answer now (one node), or one to await (cluster mode: it comes back through Redis;
/// `None` if it did not come in time or the cluster's relay moved).
pub enum Answer<T> {
    /// Known now.
    Now(T),
    /// To await.
    Later(Pin<Box<dyn Future<Output = Option<T>> + Send>>),
}

impl<T> Answer<T> {
    /// The answer, awaited if need be.
    pub async fn get(self) -> Option<T> {
        match self {
            Answer::Now(t) => Some(t),
            Answer::Later(f) => f.await,
        }
    }
}

/// The relay's answer to a `sendevent/` alive or close request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamRequest {
    /// `alive`.
    Alive,
    /// `close`.
    Close,
}

impl PairingHub {
    /// A hub for the configured apps; assigned client ids come from `ids`.
    pub fn new(config: RelayConfig, ids: Arc<dyn IdSource>) -> Self {
        PairingHub {
            apps: config.apps.clone(),
            inner: Mutex::new(Inner {
                relay: PairingRelay::new(config, ids),
                sinks: HashMap::new(),
                next_conn: 1,
                shipped: Vec::new(),
            }),
            wake: Notify::new(),
            remote: OnceLock::new(),
        }
    }

    /// Cluster mode: from now on every input goes to the cluster's relay through `remote`.
    /// Call before any connection opens.
    pub fn attach(&self, remote: Arc<ClusterPairing>) {
        let _ = self.remote.set(remote);
    }

    /// The cluster's relay link, in cluster mode.
    fn remote(&self) -> Option<&Arc<ClusterPairing>> {
        self.remote.get()
    }

    /// The configured app named `name`.
    pub fn app(&self, name: &str) -> Option<&AppSpec> {
        self.apps.iter().find(|a| a.name == name)
    }

    /// Opens a connection whose frames go to `outbox`: its handle and stream id (0 in
    /// cluster mode, where the cluster's relay numbers it: see [`IdentifyAnswer`]).
    pub fn open(&self, transport: Transport, outbox: Arc<Outbox>) -> (ConnId, u64) {
        if let Some(remote) = self.remote() {
            return (remote.open(transport, outbox), 0);
        }
        let mut inner = self.lock();
        let conn = ConnId(inner.next_conn);
        inner.next_conn += 1;
        let stream = self.open_sink(&mut inner, conn, transport, SinkTo::Local(outbox));
        (conn, stream.get())
    }

    /// The cluster's relay hub: opens connection `conn` held by node `node` (its frames are
    /// collected for [`PairingHub::take_shipped`]). `conn` is cluster-unique.
    pub fn open_remote(&self, conn: ConnId, node: String, transport: Transport) -> StreamId {
        let mut inner = self.lock();
        self.open_sink(&mut inner, conn, transport, SinkTo::Remote(node))
    }

    fn open_sink(
        &self,
        inner: &mut std::sync::MutexGuard<'_, Inner>,
        conn: ConnId,
        transport: Transport,
        to: SinkTo,
    ) -> StreamId {
        let before = inner.relay.poll_timeout();
        let stream_id = inner.relay.handle_open(now(), conn, transport);
        let after = inner.relay.poll_timeout();
        if let Some(old) = inner.sinks.insert(
            conn,
            Sink {
                to,
                transport,
                stream_id,
            },
        ) {
            closed_gauge(old.transport);
        }
        gauge!("loudsync_pairing_connections", "transport" => transport_label(transport))
            .increment(1.0);
        // The timer task sleeps until the relay's earliest deadline: only an open that makes
        // it earlier must wake it (in a burst of opens, only the first does).
        if after.is_some() && (before.is_none() || after < before) {
            self.wake.notify_one();
        }
        stream_id
    }

    /// Identifies connection `conn` on whichever relay serves it: this node's (answered now,
    /// see [`PairingHub::identify`]) or, in cluster mode, the cluster's (answered later).
    pub fn identify_answer(
        &self,
        conn: ConnId,
        app: &str,
        role: Option<&str>,
        client_id: ClaimedId<'_>,
        token: Option<&str>,
    ) -> Answer<IdentifyAnswer> {
        if let Some(remote) = self.remote() {
            return Answer::Later(remote.identify(conn, app, role, client_id, token));
        }
        let stream_id = self.stream_of(conn).unwrap_or(0);
        let result = self
            .identify(conn, app, role, client_id, token)
            .map(|w| w.client_id);
        Answer::Now(IdentifyAnswer { stream_id, result })
    }

    /// The stream id of open connection `conn`.
    pub fn stream_of(&self, conn: ConnId) -> Option<u64> {
        self.lock().sinks.get(&conn).map(|s| s.stream_id.get())
    }

    /// The cluster's relay hub: everything sent to remote connections since the last call,
    /// in order, as (node, connection, what).
    pub fn take_shipped(&self) -> Vec<(String, ConnId, Shipped)> {
        std::mem::take(&mut self.lock().shipped)
    }

    /// Runs the relay's timers that are due now (the cluster's relay hub runs them in its
    /// owner's loop instead of [`PairingHub::run_timers`]).
    pub fn run_due_timers(&self) {
        let now = now();
        let mut inner = self.lock();
        if inner
            .relay
            .poll_timeout()
            .is_some_and(|at| at <= now.instant)
        {
            inner.relay.handle_timeout(now);
            inner.carry_out(now);
        }
    }

    /// When the relay's timers are next due.
    pub fn next_timer(&self) -> Option<std::time::Instant> {
        self.lock().relay.poll_timeout()
    }

    /// Identifies connection `conn` (P8, P7) and queues its welcome (`cr_welcome`, or the SSE
    /// `hello`). On a refusal the connection is forgotten; the caller tells the client and
    /// ends it.
    pub fn identify(
        &self,
        conn: ConnId,
        app: &str,
        role: Option<&str>,
        client_id: ClaimedId<'_>,
        token: Option<&str>,
    ) -> Result<Welcome, IdentifyError> {
        let now = now();
        let mut inner = self.lock();
        let result = inner
            .relay
            .handle_identify(now, conn, app, role, client_id, token);
        match &result {
            // The welcome goes on the outbox under the lock: nothing delivered to the new
            // connection can go before it.
            Ok(welcome) => {
                let bytes = match inner.sinks.get(&conn).map(|s| s.transport) {
                    Some(Transport::WebSocket) => ws::encode(
                        &PairingServerFrame::Welcome {
                            app_id: welcome.app.clone(),
                            client_id: welcome.client_id.clone(),
                            client_role: welcome.role,
                        },
                        now.unix_ms,
                    ),
                    _ => sse::sse_event("hello", &sse::hello(welcome.stream_id.get())),
                };
                inner.send(conn, bytes);
            }
            Err(IdentifyError::Aborted(reason)) => {
                counter!("loudsync_pairing_aborts_total", "reason" => reason.as_str()).increment(1);
                if let Some(sink) = inner.sinks.remove(&conn) {
                    closed_gauge(sink.transport);
                }
            }
            Err(IdentifyError::NotAwaitingIdentify) => {}
        }
        inner.carry_out(now);
        result
    }

    /// Checks a `sendevent/` request's credentials (P8 order).
    pub fn check_credentials(
        &self,
        app: &str,
        role: Option<&str>,
        client_id: &str,
        token: Option<&str>,
    ) -> Result<Credentials, AbortReason> {
        self.lock()
            .relay
            .check_credentials(app, role, client_id, token)
    }

    /// Routes one event (P20..P22). In cluster mode a connection's event goes to the
    /// cluster's relay and the answer is [`Routed::Delivered`] (not known here; metrics are
    /// counted by the relay's node).
    pub fn event(&self, from: &Sender, recipient: &str, event: Event) -> Routed {
        if let (Some(remote), Sender::Conn(conn)) = (self.remote(), from) {
            remote.event(*conn, recipient, &event);
            return Routed::Delivered;
        }
        let now = now();
        let mut inner = self.lock();
        let routed = inner.relay.handle_event(now, from, recipient, event);
        inner.carry_out(now);
        drop(inner);
        counter!("loudsync_pairing_events_total", "outcome" => routed_label(routed)).increment(1);
        routed
    }

    /// A WebSocket's `cr_alive`.
    pub fn alive(&self, conn: ConnId) -> bool {
        if let Some(remote) = self.remote() {
            remote.alive(conn);
            return true;
        }
        let now = now();
        let mut inner = self.lock();
        let answered = inner.relay.handle_alive(now, conn);
        inner.carry_out(now);
        answered
    }

    /// A `sendevent/` `alive` or `close` naming stream `sid` (P17).
    pub fn stream_request(&self, from: &Credentials, request: StreamRequest, sid: &str) -> bool {
        let now = now();
        let mut inner = self.lock();
        let done = match request {
            StreamRequest::Alive => inner.relay.handle_alive_request(now, from, sid),
            StreamRequest::Close => inner.relay.handle_close_request(now, from, sid),
        };
        inner.carry_out(now);
        done
    }

    /// A fresh client id (`clientid/`), or `None` if every id is connected.
    pub fn assign_client_id(&self) -> Option<String> {
        self.lock().relay.assign_client_id()
    }

    /// A fresh client id from whichever relay serves this node (`clientid/`): the inner
    /// `None` if every id is connected; the outer `None` if the cluster's relay did not
    /// answer in time.
    pub fn assign_client_id_answer(&self) -> Answer<Option<String>> {
        match self.remote() {
            Some(remote) => Answer::Later(remote.assign_client_id()),
            None => Answer::Now(self.assign_client_id()),
        }
    }

    /// Cluster mode: a valid `sendevent/` request (its credentials checked here first, for
    /// the status) goes to the cluster's relay, which checks them again and carries it out.
    /// `false` on one node (the caller carries it out itself).
    pub fn send_remote(
        &self,
        app: &str,
        request: &loudsync_protocol::pairing::sse::SendEvent,
        token: &str,
    ) -> bool {
        match self.remote() {
            Some(remote) => {
                remote.request(app, request, token);
                true
            }
            None => false,
        }
    }

    /// The connection ended by itself (socket closed, SSE response dropped).
    pub fn gone(&self, conn: ConnId) {
        if let Some(remote) = self.remote() {
            remote.gone(conn);
            return;
        }
        let mut inner = self.lock();
        inner.relay.handle_gone(now(), conn);
        if let Some(sink) = inner.sinks.remove(&conn) {
            closed_gauge(sink.transport);
        }
    }

    /// Every identified pairing connection, by app then client id, with the partner of its
    /// last delivered event (for `GET /v1/pairing`; see
    /// [`loudsync_core::pairing::PairingRelay::clients`]).
    ///
    /// In cluster mode: the cluster relay's clients, as last read from Redis.
    pub fn clients(&self) -> Vec<loudsync_core::pairing::ClientInfo> {
        if let Some(remote) = self.remote() {
            return remote.clients();
        }
        self.lock().relay.clients()
    }

    /// The configured apps, in the order given.
    pub fn apps(&self) -> &[AppSpec] {
        &self.apps
    }

    /// How many pairing connections are open.
    pub fn connection_count(&self) -> usize {
        self.lock().relay.connection_count()
    }

    /// Runs the relay's timers until `stop`'s sender is gone (the server was dropped); the
    /// server's shutdown aborts it.
    pub async fn run_timers<T>(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<T>) {
        loop {
            let deadline = self.lock().relay.poll_timeout();
            let woken = self.wake.notified();
            let due = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = due => {}
                _ = woken => continue,
                changed = stop.changed() => match changed {
                    Ok(()) => continue,
                    Err(_) => return,
                },
            }
            let now = now();
            let mut inner = self.lock();
            inner.relay.handle_timeout(now);
            inner.carry_out(now);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("pairing hub")
    }
}

impl Inner {
    /// Carries out the relay's actions: encodes and queues, never waits.
    fn carry_out(&mut self, now: Now) {
        while let Some(action) = self.relay.poll_action() {
            match action {
                Action::Deliver {
                    to,
                    transport,
                    event,
                    sender,
                } => self.send(to, encode_event(transport, &event, &sender, now.unix_ms)),
                Action::Reject {
                    to,
                    transport,
                    subtype,
                    sender,
                } => {
                    let event = Event::server_reject(subtype);
                    self.send(to, encode_event(transport, &event, &sender, now.unix_ms));
                }
                Action::Alive {
                    conn,
                    transport,
                    stream_id,
                } => {
                    let bytes = match transport {
                        Transport::WebSocket => ws::encode(&PairingServerFrame::Alive, now.unix_ms),
                        Transport::Sse => sse::sse_event("alive", &sse::alive(stream_id.get())),
                    };
                    self.send(conn, bytes);
                }
                Action::Abort {
                    conn,
                    transport,
                    stream_id,
                    reason,
                    releaser,
                } => {
                    counter!("loudsync_pairing_aborts_total", "reason" => reason.as_str())
                        .increment(1);
                    let bytes = match transport {
                        Transport::WebSocket => {
                            ws::encode(&PairingServerFrame::Aborted { reason }, now.unix_ms)
                        }
                        Transport::Sse => sse::sse_event(
                            "aborted",
                            &sse::aborted(stream_id.get(), reason, releaser.map(StreamId::get)),
                        ),
                    };
                    self.send(conn, bytes);
                    self.end(conn, reason.as_str());
                }
                Action::Closed {
                    conn, stream_id, ..
                } => {
                    self.send(
                        conn,
                        sse::sse_event("closed", &sse::closed(stream_id.get())),
                    );
                    self.end(conn, "closed");
                }
                Action::IdentifyTimeout { conn, .. } => self.end(conn, NO_IDENTIFY),
            }
        }
    }

    fn send(&mut self, conn: ConnId, bytes: String) {
        match self.sinks.get(&conn).map(|s| &s.to) {
            Some(SinkTo::Local(outbox)) => {
                outbox.push(
                    OutFrame::Text(Bytes::from(bytes)),
                    std::time::Instant::now(),
                );
            }
            Some(SinkTo::Remote(node)) => {
                let node = node.clone();
                self.shipped.push((node, conn, Shipped::Text(bytes)));
            }
            None => {}
        }
    }

    /// Ends a connection the relay has forgotten: close 1000 after what is queued.
    fn end(&mut self, conn: ConnId, reason: &str) {
        if let Some(sink) = self.sinks.remove(&conn) {
            match sink.to {
                SinkTo::Local(outbox) => outbox.force_close(close_code::NORMAL, reason.to_string()),
                SinkTo::Remote(node) => self.shipped.push((
                    node,
                    conn,
                    Shipped::Close(close_code::NORMAL, reason.to_string()),
                )),
            }
            closed_gauge(sink.transport);
        }
    }
}

/// An event for a recipient on `transport`, with `senderClientId` = `sender`: a `cr_event`
/// frame (P11) or an SSE `crEvent` (P18; P19 translates between the two).
pub fn encode_event(transport: Transport, event: &Event, sender: &str, unix_ms: u64) -> String {
    match transport {
        Transport::WebSocket => ws::encode(
            &PairingServerFrame::Event {
                sender: sender.to_string(),
                event: event.clone(),
            },
            unix_ms,
        ),
        Transport::Sse => sse::sse_event(sse::CR_EVENT, &event.to_data(sender)),
    }
}

fn transport_label(transport: Transport) -> &'static str {
    match transport {
        Transport::WebSocket => "websocket",
        Transport::Sse => "sse",
    }
}

fn closed_gauge(transport: Transport) {
    gauge!("loudsync_pairing_connections", "transport" => transport_label(transport))
        .decrement(1.0);
}

fn routed_label(routed: Routed) -> &'static str {
    match routed {
        Routed::Delivered => "delivered",
        Routed::NoRecipient => "no_recipient",
        Routed::AppIdMismatch => "app_id_mismatch",
        Routed::SameRole => "same_role",
        Routed::NotIdentified => "not_identified",
        Routed::RateLimited => "rate_limited",
    }
}
