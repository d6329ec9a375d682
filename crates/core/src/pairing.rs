//! The pairing relay (issue 12, "CRSocket"): the server side of controller/responder pairing,
//! as a sans-IO machine shared by both transports (WebSocket `cr_*` frames, and SSE streams
//! plus `sendevent/` requests).
//!
//! The relay **validates, routes, blocks and answers blocked pings; it keeps no partner
//! table**. Who is paired with whom is the clients' state machine (the SDK); the server only
//! knows which connection is live for which client id, in which app and role.
//!
//! **Connections.** The caller opens a connection with [`PairingRelay::handle_open`] (its own
//! handle, a [`ConnId`], and the [`Transport`]); the connection gets a [`StreamId`] there, a
//! decimal number unique per connection in this process (P15; SSE shows it in `hello`, a
//! WebSocket never sees its own but may be named as the releaser of an SSE stream it replaced).
//! [`PairingRelay::handle_identify`] then checks the credentials in the order of P8 (role,
//! client id, token syntax, token authorisation, then one connection per id) and either
//! welcomes the connection or refuses it, which forgets it (the caller sends `cr_aborted` /
//! `aborted` and ends it). [`PairingRelay::handle_gone`] forgets a connection that ended by
//! itself. Every connection the relay ends itself (an [`Action::Abort`], [`Action::Closed`]
//! or [`Action::IdentifyTimeout`]) is forgotten when the action is queued, so its client id
//! is free at once.
//!
//! **One live connection per client id** (P6, P7), in one namespace for the whole server: a
//! new connection for an id live in the *same* app replaces it (the old one gets
//! `releasedByOther` naming the new stream id); for an id live in *another* app the *new* one
//! is refused `clientIdInUse`. Assigned ids come from [`ClientIdAllocator`] (six digits, never
//! connected, never handed out twice until all 10^6 were).
//!
//! **Routing** (P20..P22), for a well-formed event from sender S to recipient id R:
//!
//! ```text
//!   R not live (any app)          -> dropped
//!   R live in another app         -> dropped; a `ping` is answered: reject appIdMismatch
//!   R live with S's role          -> dropped; a `ping` is answered: reject invalidPartnerRole
//!   otherwise                     -> delivered to R's connection, senderClientId = S
//! ```
//!
//! A server reject goes to S's live connection in S's app ([`Action::Reject`], sender R), so a
//! `sendevent` sender without a stream gets nothing. The event itself is opaque: the relay
//! asks it only whether it is a `ping` ([`RelayEvent`]) and hands it on unchanged; encoding it
//! for the recipient's transport (P11, P18, P19) is the caller's.
//!
//! **Liveness** (P3, P23): opening, every validated frame or request of the client, and every
//! event delivered to it refresh a connection. The relay checks every `check_interval` (ticks
//! from the first connection) and aborts `clientNotAlive` each identified connection silent
//! for at least `alive_timeout` at that check, so the abort comes no earlier than the timeout
//! and before timeout + interval. A connection that has not identified within `alive_timeout`
//! of opening is dismissed at that deadline exactly ([`Action::IdentifyTimeout`]; the
//! WebSocket closes 1000 without `cr_aborted`), like the landed join deadline.
//!
//! [`socket`] holds what only a WebSocket has: its frames' meaning before the relay, the
//! landed per-socket rate limit, and its close.
//!
//! **`sendevent/`** requests are not connections: the caller checks their credentials with
//! [`PairingRelay::check_credentials`] (its error maps to 400 / 403), and passes the
//! [`Credentials`] it gets as [`Sender::Request`]. They are rate limited per client id with
//! the landed numbers (P24, a [`TokenBucket`] per id; the excess is dropped silently), and
//! refresh the client's live connection in that app. `alive` and `close` requests name a
//! stream id and are answered only if it is the client's current stream in that app (P17).

mod client_ids;
pub mod socket;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use client_ids::{format_client_id, ClientIdAllocator, CLIENT_ID_SPACE};

use crate::ids::IdSource;
use crate::limits::TokenBucket;
use crate::Now;
use loudsync_protocol::pairing::{
    check_credentials, AbortReason, AppSpec, ClaimedId, Identity, RejectSubtype, Role,
};

/// The caller's handle for one pairing connection (a WebSocket or an SSE stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// How a pairing connection reaches its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// `GET /crsocket/{NAME}/ws`, `cr_*` JSON frames.
    WebSocket,
    /// `GET /crsocket/{NAME}/eventsource/`, server-sent events (the client sends by
    /// `sendevent/` requests).
    Sse,
}

/// A connection's stream id (P15): a decimal number, unique per connection in this process,
/// never 0 (the `aborted` event writes 0 for "no releaser").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(u64);

impl StreamId {
    /// The number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What the relay needs to know of an event: whether it is a `ping` (the only event type a
/// blocked delivery is answered for). Everything else about it is passed on untouched.
pub trait RelayEvent {
    /// The event's `eventType` (`ping`, `reject`, an application type, ...).
    fn event_type(&self) -> &str;
}

/// The wire's transport-neutral event is what the server relays.
impl RelayEvent for loudsync_protocol::pairing::Event {
    fn event_type(&self) -> &str {
        &self.event_type
    }
}

/// The relay's settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The configured apps (`--app`).
    pub apps: Vec<AppSpec>,
    /// A connection silent this long is aborted `clientNotAlive`, and one that has not
    /// identified this long after opening is dismissed (`--pairing-alive-timeout`, 25 s).
    pub alive_timeout: Duration,
    /// How often liveness is checked (`--heartbeat-check-interval`, 5 s).
    pub check_interval: Duration,
    /// `sendevent` requests per second allowed per client id on average (`--rate-limit`,
    /// 100; 0 = unlimited).
    pub rate_limit: u32,
    /// `sendevent` requests allowed in a burst per client id (`--rate-burst`, 200).
    pub rate_burst: u32,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            apps: Vec::new(),
            alive_timeout: Duration::from_secs(25),
            check_interval: Duration::from_secs(5),
            rate_limit: 100,
            rate_burst: 200,
        }
    }
}

/// A `sendevent` sender whose credentials passed [`PairingRelay::check_credentials`]; only
/// the relay makes these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    app: usize,
    client_id: String,
    role: Role,
}

impl Credentials {
    /// The sender's client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The sender's role.
    pub fn role(&self) -> Role {
        self.role
    }
}

/// Who sends an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// An identified connection (a WebSocket's `cr_event`).
    Conn(ConnId),
    /// A `sendevent/` request.
    Request(Credentials),
}

/// A successful identify: what `cr_welcome` / `hello` say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The app's name.
    pub app: String,
    /// The client's id (its own, or the one assigned).
    pub client_id: String,
    /// The client's role.
    pub role: Role,
    /// The connection's stream id.
    pub stream_id: StreamId,
}

/// Why [`PairingRelay::handle_identify`] did not welcome a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentifyError {
    /// Refused with this reason (P8); the connection is forgotten, the caller sends
    /// `cr_aborted` / `aborted` and ends it.
    Aborted(AbortReason),
    /// The connection is not open, or has already identified (a second `cr_identify` is the
    /// caller's `invalid_message`); nothing changed.
    NotAwaitingIdentify,
}

/// What became of one event (for the caller's metrics and for tests; every rule's effect on
/// the clients is in the actions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// Delivered to the recipient ([`Action::Deliver`]).
    Delivered,
    /// The recipient has no live connection (P20).
    NoRecipient,
    /// The recipient is in another app (P21); a ping was answered if the sender is live.
    AppIdMismatch,
    /// The recipient has the sender's role (P21); a ping was answered if the sender is live.
    SameRole,
    /// The sending connection has not identified (or is unknown): nothing happened.
    NotIdentified,
    /// Over the `sendevent` rate limit of the sender's client id: dropped, nothing happened.
    RateLimited,
}

/// What the caller must do, drained with [`PairingRelay::poll_action`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<E> {
    /// Send `event` to `to`, with `senderClientId` = `sender`.
    Deliver {
        /// The recipient's connection.
        to: ConnId,
        /// Its transport, which decides the encoding.
        transport: Transport,
        /// The event as the sender sent it.
        event: E,
        /// The sender's client id.
        sender: String,
    },
    /// Send a server-generated `reject` (P22) to `to`: subtype `subtype`, no params, flags
    /// false/false/true, no `sendCt`, `senderClientId` = `sender` (the pinged id R).
    Reject {
        /// The pinging client's connection.
        to: ConnId,
        /// Its transport.
        transport: Transport,
        /// `appIdMismatch` or `invalidPartnerRole`.
        subtype: RejectSubtype,
        /// The pinged client id.
        sender: String,
    },
    /// Send `cr_aborted` / `aborted` with `reason` and end the connection (already forgotten).
    Abort {
        /// The connection.
        conn: ConnId,
        /// Its transport.
        transport: Transport,
        /// Its stream id (the SSE `aborted` data starts with it).
        stream_id: StreamId,
        /// `releasedByOther` or `clientNotAlive`.
        reason: AbortReason,
        /// For `releasedByOther`, the new connection's stream id.
        releaser: Option<StreamId>,
    },
    /// Answer an `alive`: `cr_alive` / SSE `alive` with `stream_id`.
    Alive {
        /// The connection.
        conn: ConnId,
        /// Its transport.
        transport: Transport,
        /// Its stream id.
        stream_id: StreamId,
    },
    /// Answer a `close`: SSE `closed` with `stream_id`, then end the stream (already
    /// forgotten).
    Closed {
        /// The connection.
        conn: ConnId,
        /// Its transport.
        transport: Transport,
        /// Its stream id.
        stream_id: StreamId,
    },
    /// The connection did not identify within the alive timeout of opening: close it (1000,
    /// `no identify within the alive timeout`, no `cr_aborted`); already forgotten.
    IdentifyTimeout {
        /// The connection.
        conn: ConnId,
        /// Its transport.
        transport: Transport,
    },
}

/// One identified pairing connection as the admin view shows it ([`PairingRelay::clients`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// The app's name.
    pub app: String,
    /// The client id.
    pub client_id: String,
    /// Its role.
    pub role: Role,
    /// Its transport.
    pub transport: Transport,
    /// The client id it last exchanged a delivered event with, if any.
    pub partner: Option<String>,
    /// Whether that partner is connected now, in the same app, with the other role.
    pub partner_live: bool,
}

/// An identified connection's identity.
#[derive(Debug, Clone)]
struct Peer {
    app: usize,
    role: Role,
    client_id: String,
    /// The client id it last exchanged a delivered event with (either way), for the admin
    /// view ([`PairingRelay::clients`]); routing never reads it.
    partner: Option<String>,
}

/// One open connection.
#[derive(Debug, Clone)]
struct Conn {
    transport: Transport,
    stream_id: StreamId,
    /// When it opened plus the alive timeout: the identify deadline.
    identify_by: Instant,
    last_refresh: Instant,
    peer: Option<Peer>,
}

/// A client id's `sendevent` bucket and when it was last used.
#[derive(Debug, Clone)]
struct Bucket {
    bucket: TokenBucket,
    last: Instant,
}

/// The pairing relay: see the module comment.
#[derive(Debug)]
pub struct PairingRelay<E> {
    config: RelayConfig,
    ids: ClientIdAllocator,
    next_stream: u64,
    conns: HashMap<ConnId, Conn>,
    /// Identified connections by client id (all apps: one namespace).
    by_client: HashMap<String, ConnId>,
    /// Unidentified connections by identify deadline.
    identify_deadlines: BTreeSet<(Instant, ConnId)>,
    /// `sendevent` rate limit per client id.
    buckets: HashMap<String, Bucket>,
    /// The next liveness check; `None` while there is nothing to check.
    next_check: Option<Instant>,
    actions: VecDeque<Action<E>>,
}

impl<E: RelayEvent> PairingRelay<E> {
    /// A relay with no connections; assigned client ids are drawn from `ids`.
    pub fn new(config: RelayConfig, ids: Arc<dyn IdSource>) -> Self {
        PairingRelay {
            config,
            ids: ClientIdAllocator::new(ids),
            next_stream: 1,
            conns: HashMap::new(),
            by_client: HashMap::new(),
            identify_deadlines: BTreeSet::new(),
            buckets: HashMap::new(),
            next_check: None,
            actions: VecDeque::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    /// Whether `name` is a configured app.
    pub fn has_app(&self, name: &str) -> bool {
        self.app_index(name).is_some()
    }

    /// A new connection: it gets its stream id, counts as live from `now`, and must identify
    /// within the alive timeout. A `conn` that is already open is forgotten first.
    pub fn handle_open(&mut self, now: Now, conn: ConnId, transport: Transport) -> StreamId {
        self.remove(conn);
        let stream_id = StreamId(self.next_stream);
        self.next_stream += 1;
        let identify_by = now.instant + self.config.alive_timeout;
        self.conns.insert(
            conn,
            Conn {
                transport,
                stream_id,
                identify_by,
                last_refresh: now.instant,
                peer: None,
            },
        );
        self.identify_deadlines.insert((identify_by, conn));
        self.arm(now.instant);
        stream_id
    }

    /// Checks `sendevent` credentials for `app` in the order of P8 (role, client id, token
    /// syntax, authorisation; an unknown app is `notAuthorized`). A `sendevent` client id is
    /// required: a missing one is the empty string, `invalidClientId`.
    pub fn check_credentials(
        &self,
        app: &str,
        role: Option<&str>,
        client_id: &str,
        token: Option<&str>,
    ) -> Result<Credentials, AbortReason> {
        let (index, identity) = self.check(app, role, ClaimedId::Given(client_id), token)?;
        Ok(Credentials {
            app: index.expect("a known app passes authorisation"),
            client_id: identity.client_id.unwrap_or_default(),
            role: identity.role,
        })
    }

    /// A connection's identify (a WebSocket's `cr_identify`, an SSE request's parameters):
    /// the checks of P8 in order, then P7. On success the connection is live for its client
    /// id (assigned if `client_id` is [`ClaimedId::Assign`]), and an older connection of the
    /// id in the same app is aborted `releasedByOther`.
    pub fn handle_identify(
        &mut self,
        now: Now,
        conn: ConnId,
        app: &str,
        role: Option<&str>,
        client_id: ClaimedId<'_>,
        token: Option<&str>,
    ) -> Result<Welcome, IdentifyError> {
        if self.conns.get(&conn).is_none_or(|c| c.peer.is_some()) {
            return Err(IdentifyError::NotAwaitingIdentify);
        }
        let (index, identity) = match self.check(app, role, client_id, token) {
            Ok((Some(index), identity)) => (index, identity),
            Ok((None, _)) => unreachable!("an unknown app fails authorisation"),
            Err(reason) => return Err(self.refuse(conn, reason)),
        };
        let client_id = match identity.client_id {
            Some(id) => id,
            None => match self.assign_client_id() {
                Some(id) => id,
                // Every one of the 10^6 ids is connected.
                None => return Err(self.refuse(conn, AbortReason::ClientIdInUse)),
            },
        };
        let stream_id = self.conns[&conn].stream_id;
        if let Some(&old) = self.by_client.get(&client_id) {
            let old_app = self.peer(old).map(|p| p.app);
            if old_app != Some(index) {
                return Err(self.refuse(conn, AbortReason::ClientIdInUse));
            }
            self.abort(old, AbortReason::ReleasedByOther, Some(stream_id));
        }
        self.identify_deadlines
            .remove(&(self.conns[&conn].identify_by, conn));
        let entry = self.conns.get_mut(&conn).expect("checked above");
        entry.last_refresh = now.instant;
        entry.peer = Some(Peer {
            app: index,
            role: identity.role,
            client_id: client_id.clone(),
            partner: None,
        });
        self.by_client.insert(client_id.clone(), conn);
        Ok(Welcome {
            app: self.config.apps[index].name.clone(),
            client_id,
            role: identity.role,
            stream_id,
        })
    }

    /// A fresh client id (`GET clientid/`, or an identify without one), by P6; `None` only if
    /// all 10^6 ids are connected.
    pub fn assign_client_id(&mut self) -> Option<String> {
        let by_client = &self.by_client;
        self.ids
            .allocate(|n| by_client.contains_key(&format_client_id(n)))
            .map(format_client_id)
    }

    /// An event from `from` to the client id `recipient` (valid per P5; the caller checked
    /// the frame or request), routed by P20..P22. A validated event refreshes its sender,
    /// whatever becomes of it; a delivered one refreshes its recipient.
    pub fn handle_event(&mut self, now: Now, from: &Sender, recipient: &str, event: E) -> Routed {
        let t = now.instant;
        let (sender_conn, app, role, sender_id) = match from {
            Sender::Conn(conn) => match self.peer(*conn) {
                Some(p) => (Some(*conn), p.app, p.role, p.client_id.clone()),
                None => return Routed::NotIdentified,
            },
            Sender::Request(cred) => {
                if !self.admit_request(t, &cred.client_id) {
                    return Routed::RateLimited;
                }
                let live = self.live_in_app(&cred.client_id, cred.app);
                (live, cred.app, cred.role, cred.client_id.clone())
            }
        };
        if let Some(conn) = sender_conn {
            self.refresh(conn, t);
        }
        let Some(&to) = self.by_client.get(recipient) else {
            return Routed::NoRecipient;
        };
        let (to_app, to_role) = match self.peer(to) {
            Some(p) => (p.app, p.role),
            None => return Routed::NoRecipient,
        };
        let blocked = if to_app != app {
            Some((Routed::AppIdMismatch, RejectSubtype::AppIdMismatch))
        } else if to_role == role {
            Some((Routed::SameRole, RejectSubtype::InvalidPartnerRole))
        } else {
            None
        };
        if let Some((routed, subtype)) = blocked {
            if event.event_type() == "ping" {
                if let Some(s) = sender_conn {
                    self.actions.push_back(Action::Reject {
                        to: s,
                        transport: self.conns[&s].transport,
                        subtype,
                        sender: recipient.to_string(),
                    });
                }
            }
            return routed;
        }
        self.refresh(to, t);
        self.set_partner(to, &sender_id);
        if let Some(conn) = sender_conn {
            self.set_partner(conn, recipient);
        }
        self.actions.push_back(Action::Deliver {
            to,
            transport: self.conns[&to].transport,
            event,
            sender: sender_id,
        });
        Routed::Delivered
    }

    /// A WebSocket's `cr_alive`: answered, and the connection refreshed; `false` (nothing
    /// done) if it has not identified.
    pub fn handle_alive(&mut self, now: Now, conn: ConnId) -> bool {
        if self.peer(conn).is_none() {
            return false;
        }
        self.refresh(conn, now.instant);
        self.push_alive(conn);
        true
    }

    /// `sendevent/?eventType=alive&eventData=SID` (P17): refreshes the client's live
    /// connection in its app, and answers it `alive` if its stream id is `sid`. `true` if
    /// answered.
    pub fn handle_alive_request(&mut self, now: Now, from: &Credentials, sid: &str) -> bool {
        match self.current_stream(now.instant, from, sid) {
            Some(conn) => {
                self.push_alive(conn);
                true
            }
            None => false,
        }
    }

    /// `sendevent/?eventType=close&eventData=SID` (P17): if `sid` is the client's current
    /// stream in its app, it gets `closed` and ends ([`Action::Closed`]). `true` if closed.
    pub fn handle_close_request(&mut self, now: Now, from: &Credentials, sid: &str) -> bool {
        let Some(conn) = self.current_stream(now.instant, from, sid) else {
            return false;
        };
        let c = self.remove(conn).expect("a live connection");
        self.actions.push_back(Action::Closed {
            conn,
            transport: c.transport,
            stream_id: c.stream_id,
        });
        true
    }

    /// The connection ended by itself (socket closed, SSE response dropped): forgotten, its
    /// client id free. Unknown connections are ignored.
    pub fn handle_gone(&mut self, _now: Now, conn: ConnId) {
        self.remove(conn);
    }

    /// Runs the timers that are due at `now`: identify deadlines, then the liveness check if
    /// a check is due (missed checks are not repeated).
    pub fn handle_timeout(&mut self, now: Now) {
        let t = now.instant;
        while let Some(&(deadline, conn)) = self.identify_deadlines.first() {
            if deadline > t {
                break;
            }
            self.identify_deadlines.pop_first();
            if let Some(c) = self.remove(conn) {
                self.actions.push_back(Action::IdentifyTimeout {
                    conn,
                    transport: c.transport,
                });
            }
        }
        let Some(next) = self.next_check else {
            return;
        };
        if t < next {
            return;
        }
        self.check_alive(t);
        let interval = self.interval();
        let mut next = next;
        while next <= t {
            next += interval;
        }
        self.next_check = (!self.conns.is_empty() || !self.buckets.is_empty()).then_some(next);
    }

    /// When [`PairingRelay::handle_timeout`] must next run, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let identify = self.identify_deadlines.first().map(|(d, _)| *d);
        match (identify, self.next_check) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next thing the caller must do, in the order the inputs caused them.
    pub fn poll_action(&mut self) -> Option<Action<E>> {
        self.actions.pop_front()
    }

    /// How many connections are open (identified or not).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// The connection live for `client_id`, if any (any app).
    pub fn connection_of(&self, client_id: &str) -> Option<ConnId> {
        self.by_client.get(client_id).copied()
    }

    /// Every identified connection, for the admin view (`GET /v1/pairing`), by app then
    /// client id. The relay keeps no partner table (the pairing is the clients' state); a
    /// client's `partner` is the client id it last exchanged a delivered event with, either
    /// way, and `partner_live` says whether that id is connected now in the same app with
    /// the other role.
    pub fn clients(&self) -> Vec<ClientInfo> {
        let mut out: Vec<ClientInfo> = self
            .conns
            .values()
            .filter_map(|c| {
                let p = c.peer.as_ref()?;
                let partner_live = p.partner.as_deref().is_some_and(|partner| {
                    self.by_client
                        .get(partner)
                        .and_then(|&conn| self.peer(conn))
                        .is_some_and(|q| q.app == p.app && q.role != p.role)
                });
                Some(ClientInfo {
                    app: self.config.apps[p.app].name.clone(),
                    client_id: p.client_id.clone(),
                    role: p.role,
                    transport: c.transport,
                    partner: p.partner.clone(),
                    partner_live,
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.app, &a.client_id).cmp(&(&b.app, &b.client_id)));
        out
    }

    // ---- helpers ----

    fn set_partner(&mut self, conn: ConnId, partner: &str) {
        if let Some(p) = self.conns.get_mut(&conn).and_then(|c| c.peer.as_mut()) {
            if p.partner.as_deref() != Some(partner) {
                p.partner = Some(partner.to_string());
            }
        }
    }

    fn app_index(&self, name: &str) -> Option<usize> {
        self.config.apps.iter().position(|a| a.name == name)
    }

    /// P8's four checks; an unknown app authorises no token.
    fn check(
        &self,
        app: &str,
        role: Option<&str>,
        client_id: ClaimedId<'_>,
        token: Option<&str>,
    ) -> Result<(Option<usize>, Identity), AbortReason> {
        let index = self.app_index(app);
        let closed = AppSpec {
            name: app.to_string(),
            tokens: Some(Vec::new()),
        };
        let spec = index.map_or(&closed, |i| &self.config.apps[i]);
        let identity = check_credentials(spec, role, client_id, token)?;
        Ok((index, identity))
    }

    fn peer(&self, conn: ConnId) -> Option<&Peer> {
        self.conns.get(&conn).and_then(|c| c.peer.as_ref())
    }

    /// The live connection of `client_id` if it is in app `app`.
    fn live_in_app(&self, client_id: &str, app: usize) -> Option<ConnId> {
        let conn = *self.by_client.get(client_id)?;
        (self.peer(conn)?.app == app).then_some(conn)
    }

    /// A `sendevent` alive/close: rate limit, refresh, and the connection if `sid` is its
    /// stream id.
    fn current_stream(&mut self, t: Instant, from: &Credentials, sid: &str) -> Option<ConnId> {
        if !self.admit_request(t, &from.client_id) {
            return None;
        }
        let conn = self.live_in_app(&from.client_id, from.app)?;
        self.refresh(conn, t);
        (self.conns[&conn].stream_id.to_string() == sid).then_some(conn)
    }

    fn push_alive(&mut self, conn: ConnId) {
        let c = &self.conns[&conn];
        self.actions.push_back(Action::Alive {
            conn,
            transport: c.transport,
            stream_id: c.stream_id,
        });
    }

    fn refresh(&mut self, conn: ConnId, t: Instant) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.last_refresh = c.last_refresh.max(t);
        }
    }

    /// Forgets a connection: its identify deadline, its client id.
    fn remove(&mut self, conn: ConnId) -> Option<Conn> {
        let c = self.conns.remove(&conn)?;
        self.identify_deadlines.remove(&(c.identify_by, conn));
        if let Some(p) = &c.peer {
            if self.by_client.get(&p.client_id) == Some(&conn) {
                self.by_client.remove(&p.client_id);
            }
        }
        Some(c)
    }

    /// Refuses an identifying connection: forgotten, the reason handed back.
    fn refuse(&mut self, conn: ConnId, reason: AbortReason) -> IdentifyError {
        self.remove(conn);
        IdentifyError::Aborted(reason)
    }

    fn abort(&mut self, conn: ConnId, reason: AbortReason, releaser: Option<StreamId>) {
        if let Some(c) = self.remove(conn) {
            self.actions.push_back(Action::Abort {
                conn,
                transport: c.transport,
                stream_id: c.stream_id,
                reason,
                releaser,
            });
        }
    }

    /// One liveness check at `t`: aborts, in stream order, every identified connection silent
    /// for at least the alive timeout; forgets rate-limit buckets that have refilled.
    fn check_alive(&mut self, t: Instant) {
        let timeout = self.config.alive_timeout;
        let mut silent: Vec<(StreamId, ConnId)> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.peer.is_some() && t.saturating_duration_since(c.last_refresh) >= timeout
            })
            .map(|(id, c)| (c.stream_id, *id))
            .collect();
        silent.sort();
        for (_, conn) in silent {
            self.abort(conn, AbortReason::ClientNotAlive, None);
        }
        let refill = self.refill_time();
        self.buckets
            .retain(|_, b| t.saturating_duration_since(b.last) < refill);
    }

    /// The time an empty bucket takes to be full again: after it, a client id's bucket is
    /// the same as a new one and can be forgotten.
    fn refill_time(&self) -> Duration {
        let rate = f64::from(self.config.rate_limit.max(1));
        Duration::from_secs_f64(f64::from(self.config.rate_burst.max(1)) / rate)
    }

    /// The `sendevent` rate limit of P24, per client id.
    fn admit_request(&mut self, t: Instant, client_id: &str) -> bool {
        if self.config.rate_limit == 0 {
            return true;
        }
        let (rate, burst) = (self.config.rate_limit, self.config.rate_burst);
        let b = self
            .buckets
            .entry(client_id.to_string())
            .or_insert_with(|| Bucket {
                bucket: TokenBucket::new(rate, burst, t),
                last: t,
            });
        b.last = t;
        let admitted = b.bucket.try_take(t);
        self.arm(t);
        admitted
    }

    fn interval(&self) -> Duration {
        self.config.check_interval.max(Duration::from_millis(1))
    }

    /// Starts the liveness checks if they are not running.
    fn arm(&mut self, t: Instant) {
        if self.next_check.is_none() {
            self.next_check = Some(t + self.interval());
        }
    }
}
