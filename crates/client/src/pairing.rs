//! The crSocket state machine of seed 004 (issue 12, "Controller/responder pairing"), sans-IO.
//!
//! A [`CrSocket`] is one controller's or one responder's side of a pairing. The server is a
//! relay that keeps no partner table (issue 12, P21): who the partner is, when to ping, which
//! events reach the application and how fast events go out are all decided here. The machine
//! does no I/O and reads no clock: the driver feeds it inputs with the current [`Instant`]
//! (`set_active`, `set_client_id`, `set_access_token`, `assign_partner`, `handle_connected`,
//! `handle_disconnected`, `handle_aborted`, `handle_event`, `send_app_event`,
//! `handle_timeout`) and drains its outputs ([`CrSocket::poll_transmit`] for the events to
//! send, [`CrSocket::poll_event`] for what the application observes,
//! [`CrSocket::poll_timeout`] for when to call `handle_timeout` next). The driver opens a
//! connection while [`CrSocket::state`] is [`State::Connecting`] and closes it on
//! [`State::Passive`] (after sending what `poll_transmit` still holds).
//!
//! It speaks in its own small types ([`IncomingEvent`], [`OutgoingEvent`]), not the wire's:
//! an adapter maps them to `cr_event` frames or SSE data strings.
//!
//! # States (the seed's entry conditions)
//!
//! The state is a function of what the machine knows, recomputed after every input
//! ([`CrSocket::state`]):
//!
//! ```text
//!   app passive, or no client id ----------------------------------> passive
//!   active, not connected, no token or last attempt aborted -------> readyToConnect
//!   active, not connected, token, not aborted ---------------------> connecting
//!   connected, no partner or partner rejected ---------------------> readyToPair
//!   connected, partner, no partner event in the last 25 s, or the
//!     last one was `inactive` (or `reject`) -----------------------> searching
//!   connected, partner, a partner event under 25 s old, not
//!     `inactive` --------------------------------------------------> interacting
//!
//!                 set_active(true) + client id
//!   +---------+ ------------------------------> +----------------+
//!   | passive |                                  | readyToConnect |<-- handle_aborted
//!   +---------+ <--- set_active(false) -------- +----------------+
//!     ^  ^  ^   (from any state; sends             | token, not aborted
//!     |  |  |    `inactive` if it was paired)      v
//!     |  |  |                                  +------------+
//!     |  |  +--------------------------------- | connecting |<-- handle_disconnected
//!     |  |                                     +------------+    (from any connected state)
//!     |  |                                         | handle_connected
//!     |  |                                         v
//!     |  |                                    +-------------+  partner assigned (app), or
//!     |  +----------------------------------- | readyToPair |  responder: first controller
//!     |                                       +-------------+  ping
//!     |                                        ^   |      ^
//!     |           unassign / reject / new id --+   v      | unassign / reject
//!     |                                       +-----------+    +-------------+
//!     +-------------------------------------- | searching | -> | interacting |
//!                                             +-----------+ <- +-------------+
//!                                      partner event      25 s without a partner
//!                                      (not inactive)     event, or `inactive`
//! ```
//!
//! Metastates ([`Metastates`]): **active** = every state but passive; **connected** =
//! readyToPair, searching, interacting; **paired** = searching, interacting. Both the state
//! and the metastates are observable ([`PairingEvent::StateChanged`],
//! [`PairingEvent::MetastatesChanged`], in that order, only when they change).
//!
//! # What each move sends (as CRSocket's `CRSocket.js` does)
//!
//! - Entering **paired** (searching or interacting) from outside it: a `ping` at once, then
//!   the ping sequence: every [`PairingConfig::search_ping`] (5 s) while searching, every
//!   [`PairingConfig::interact_ping`] (10 s) while interacting. Searching -> interacting sends
//!   a `ping` at once too; interacting -> searching restarts the sequence (no ping at once).
//!   Any application event sent restarts it: a ping goes out only after an interval with
//!   nothing else sent. Both roles ping while paired (the seed: a ping "will be sent ... when
//!   the sender is paired"); that is what makes `notPaired` reachable.
//! - Leaving paired for **readyToPair** (the partner unassigned, replaced or rejected): the
//!   ping sequence stops and what is queued for the partner is dropped; a *controller* whose
//!   partner was unassigned or replaced (not rejected) sends `unassign` subtype `notPaired`
//!   to the former partner.
//! - Leaving paired for **passive, readyToConnect or connecting**: `inactive` to the partner.
//!
//! # Events received (only while connected)
//!
//! - From the partner (or, for a responder in readyToPair, a `ping` from anyone): a `ping`
//!   in readyToPair makes the sender the partner (a responder's auto-pairing with the first
//!   controller that pings it; for either role, a ping from the rejected partner itself is
//!   its re-assignment and clears the flag). `unassign` makes a responder drop its partner.
//!   `reject` flags the partner rejected ([`PairingEvent::Rejected`]), which leaves paired and
//!   stops the pings. Every such event counts as partner activity (25 s), except `inactive`
//!   and `reject`, which end it at once. Events of any other type reach the application as
//!   [`PairingEvent::AppEvent`].
//! - From anyone else: a `ping` is answered, at once and outside the pacing, with `reject`
//!   `notPaired` by a controller, `assignedToOther` by a responder that has a partner;
//!   everything else is ignored (the seed: "crSockets will only forward crEvents from their
//!   currently assigned partnerClient"). The server's own rejects (`appIdMismatch`,
//!   `invalidPartnerRole`) carry the pinged id as sender (P22), i.e. the partner's.
//!
//! # Pacing
//!
//! Pings and application events go through a queue released one per
//! [`PairingConfig::pacing`] (1 s, REFERENCE: "at most one crEvent per second per client").
//! The replies and notices that CRSocket sends "now" (`reject`, `unassign`, `inactive`) skip
//! the queue, but count as the last send, so the next queued event waits a full interval.
//!
//! # Readings of the document chosen here
//!
//! - A responder in readyToPair whose partner is flagged rejected takes the next pinging
//!   controller as partner (as CRSocket's JS does), rather than answering `assignedToOther`
//!   forever: a rejected partner no longer pairs it. With no partner it is the seed's rule.
//! - The reject flag is also cleared when the application goes passive (CRSocket's
//!   `clientActive` change clears it), and by `assign_partner` with the same id.
//! - Changing a paired partner A to B passes through readyToPair (as CRSocket's setter clears
//!   the id before setting the new one): a controller sends `unassign` to A, then pings B.
//! - An abort by the server ([`CrSocket::handle_aborted`]) stays readyToConnect until a new
//!   access token or client id, [`CrSocket::retry`], or a passive/active cycle; a connection
//!   that merely dropped ([`CrSocket::handle_disconnected`]) is connecting again at once, and
//!   the partner and its activity are kept (back within 25 s of its last event: interacting).
//! - The id in `handle_connected` (the server's `cr_welcome`) replaces the machine's own if it
//!   differs. The machine has no client id to start with unless given one: a driver gets one
//!   first (`clientid/`, P14, or a remembered id), as CRSocket does while passive.
//! - `inactive` when leaving paired because the connection dropped is still handed to the
//!   driver: over SSE + HTTP it can be sent; over a dropped WebSocket the driver drops it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub mod driver;

/// The event type of a ping.
pub const PING: &str = "ping";
/// The event type a controller sends its former partner when it unassigns it.
pub const UNASSIGN: &str = "unassign";
/// The event type sent to the partner on leaving paired for a non-connected state.
pub const INACTIVE: &str = "inactive";
/// The event type of a reject (its subtype says why).
pub const REJECT: &str = "reject";
/// Reject subtype: this responder is paired with another controller.
pub const ASSIGNED_TO_OTHER: &str = "assignedToOther";
/// Reject subtype (and `unassign`'s): this controller is not paired with the sender.
pub const NOT_PAIRED: &str = "notPaired";
/// Server reject subtype: the pinged client is in another app.
pub const APP_ID_MISMATCH: &str = "appIdMismatch";
/// Server reject subtype: the pinged client has the same role.
pub const INVALID_PARTNER_ROLE: &str = "invalidPartnerRole";

/// A crSocket's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PairingRole {
    /// Drives a responder; its partner is assigned by the application.
    Controller,
    /// Is driven; pairs with the first controller that pings it unless assigned one.
    Responder,
}

impl PairingRole {
    /// The wire name (`controller`, `responder`).
    pub fn as_str(self) -> &'static str {
        match self {
            PairingRole::Controller => "controller",
            PairingRole::Responder => "responder",
        }
    }
}

/// The seed's six states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// The application is inactive, or there is no client id.
    Passive,
    /// Active, not connected: no access token, or the last attempt was aborted.
    ReadyToConnect,
    /// Active, with a token, trying to connect.
    Connecting,
    /// Connected, without a partner (none assigned, or the partner rejected).
    ReadyToPair,
    /// Paired, no event from the partner within the alive time (or its last was `inactive`).
    Searching,
    /// Paired, the partner's last event is under the alive time old and not `inactive`.
    Interacting,
}

impl State {
    /// The seed's name (`passive`, `readyToConnect`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Passive => "passive",
            State::ReadyToConnect => "readyToConnect",
            State::Connecting => "connecting",
            State::ReadyToPair => "readyToPair",
            State::Searching => "searching",
            State::Interacting => "interacting",
        }
    }

    /// The metastates this state belongs to.
    pub fn metastates(self) -> Metastates {
        Metastates {
            active: self != State::Passive,
            connected: matches!(
                self,
                State::ReadyToPair | State::Searching | State::Interacting
            ),
            paired: matches!(self, State::Searching | State::Interacting),
        }
    }
}

/// The seed's metastates, each a set of states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Metastates {
    /// readyToConnect, connecting, readyToPair, searching, interacting.
    pub active: bool,
    /// readyToPair, searching, interacting.
    pub connected: bool,
    /// searching, interacting.
    pub paired: bool,
}

/// Settings of one crSocket; [`PairingConfig::new`] gives REFERENCE.md's timers.
#[derive(Debug, Clone, PartialEq)]
pub struct PairingConfig {
    /// Controller or responder.
    pub role: PairingRole,
    /// This client's 6-digit id, if it has one already.
    pub client_id: Option<String>,
    /// The app's access token, if known already.
    pub access_token: Option<String>,
    /// The partner counts as active while its last event is younger than this (25 s).
    pub partner_alive: Duration,
    /// Ping interval while searching (5 s).
    pub search_ping: Duration,
    /// Ping interval while interacting (10 s).
    pub interact_ping: Duration,
    /// At most one queued event per this interval (1 s).
    pub pacing: Duration,
    /// At most this many application events wait for the pacing at once (64); beyond it
    /// [`CrSocket::send_app_event`] answers [`SendError::QueueFull`].
    pub queue_limit: usize,
}

impl PairingConfig {
    /// A config for `role` with no id or token yet and the reference timers.
    pub fn new(role: PairingRole) -> Self {
        PairingConfig {
            role,
            client_id: None,
            access_token: None,
            partner_alive: Duration::from_secs(25),
            search_ping: Duration::from_secs(5),
            interact_ping: Duration::from_secs(10),
            pacing: Duration::from_secs(1),
            queue_limit: 64,
        }
    }
}

/// An event received from the server (the sender's id as the server stamped it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingEvent {
    /// The sender's client id.
    pub sender: String,
    /// `ping`, `unassign`, `inactive`, `reject` or an application type.
    pub event_type: String,
    /// The subtype (`""` if none).
    pub sub_type: String,
    /// The parameters.
    pub params: Vec<String>,
}

/// An event for the driver to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingEvent {
    /// The recipient's client id.
    pub recipient: String,
    /// The event type.
    pub event_type: String,
    /// The subtype (`""` if none).
    pub sub_type: String,
    /// The parameters.
    pub params: Vec<String>,
}

impl OutgoingEvent {
    fn new(recipient: &str, event_type: &str, sub_type: &str) -> Self {
        OutgoingEvent {
            recipient: recipient.to_string(),
            event_type: event_type.to_string(),
            sub_type: sub_type.to_string(),
            params: Vec::new(),
        }
    }
}

/// What the application observes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairingEvent {
    /// The state changed.
    StateChanged(State),
    /// The metastates changed (after the [`PairingEvent::StateChanged`] that caused it).
    MetastatesChanged(Metastates),
    /// The partner id changed (assigned, auto-paired, unassigned).
    PartnerChanged(Option<String>),
    /// The partner rejected this client (or the server rejected a ping to it).
    Rejected {
        /// The partner that was flagged.
        partner: String,
        /// `assignedToOther`, `notPaired`, `appIdMismatch`, `invalidPartnerRole`, ...
        sub_type: String,
    },
    /// The client id changed (the server's `cr_welcome` gave another one).
    ClientIdChanged(String),
    /// An application event from the current partner.
    AppEvent(IncomingEvent),
}

/// Why [`CrSocket::send_app_event`] refused an event. Nothing was queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Only a paired socket (searching, interacting) sends to its partner.
    #[error("not paired; state is {}", .0.as_str())]
    NotPaired(State),
    /// `ping`, `unassign`, `inactive` and `reject` are the machine's own.
    #[error("`{0}` is a pairing event type; the crSocket sends it itself")]
    Reserved(String),
    /// The type, subtype or a parameter breaks the document's rules (P5).
    #[error("{0}")]
    Invalid(String),
    /// [`PairingConfig::queue_limit`] events already wait for the pacing: try again later.
    #[error("send queue full")]
    QueueFull,
}

/// One crSocket: see the module comment.
#[derive(Debug)]
pub struct CrSocket {
    config: PairingConfig,
    app_active: bool,
    client_id: Option<String>,
    access_token: Option<String>,
    connected: bool,
    /// The server's abort reason, while it keeps the socket in readyToConnect.
    aborted: Option<String>,
    partner: Option<String>,
    /// The reject subtype the partner is flagged with.
    rejected: Option<String>,
    /// When the partner's last event arrived, and whether it counts as activity.
    last_partner_event: Option<(Instant, bool)>,
    state: State,
    /// The partner while paired (to address `unassign` / `inactive` after it changed).
    paired_with: Option<String>,
    next_ping: Option<Instant>,
    queue: VecDeque<OutgoingEvent>,
    last_sent: Option<Instant>,
    outbox: VecDeque<OutgoingEvent>,
    events: VecDeque<PairingEvent>,
}

fn reserved(event_type: &str) -> bool {
    [PING, UNASSIGN, INACTIVE, REJECT].contains(&event_type)
}

/// P5's rules for what this machine sends: type `^[0-9A-Za-z]+$`, subtype `^[0-9A-Za-z]*$`,
/// parameters without `,`.
fn check_event(event_type: &str, sub_type: &str, params: &[String]) -> Result<(), String> {
    let alnum = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric());
    if event_type.is_empty() || !alnum(event_type) {
        return Err(format!(
            "event type `{event_type}`: expected letters and digits only (at least one)"
        ));
    }
    if !alnum(sub_type) {
        return Err(format!(
            "event subtype `{sub_type}`: expected letters and digits only"
        ));
    }
    if let Some(i) = params.iter().position(|p| p.contains(',')) {
        return Err(format!("event parameter {i}: must not contain `,`"));
    }
    Ok(())
}

impl CrSocket {
    /// A crSocket, passive until [`CrSocket::set_active`] (and a client id).
    pub fn new(config: PairingConfig) -> Self {
        CrSocket {
            client_id: config.client_id.clone(),
            access_token: config.access_token.clone(),
            config,
            app_active: false,
            connected: false,
            aborted: None,
            partner: None,
            rejected: None,
            last_partner_event: None,
            state: State::Passive,
            paired_with: None,
            next_ping: None,
            queue: VecDeque::new(),
            last_sent: None,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The current metastates.
    pub fn metastates(&self) -> Metastates {
        self.state.metastates()
    }

    /// The role.
    pub fn role(&self) -> PairingRole {
        self.config.role
    }

    /// This client's id, if it has one.
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    /// The partner's id, if one is assigned (rejected or not).
    pub fn partner(&self) -> Option<&str> {
        self.partner.as_deref()
    }

    /// How many events (pings included) wait for the pacing.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The subtype the partner is flagged rejected with, if it is.
    pub fn rejected(&self) -> Option<&str> {
        self.rejected.as_deref()
    }

    /// The server's abort reason, while it holds the socket in readyToConnect.
    pub fn aborted(&self) -> Option<&str> {
        self.aborted.as_deref()
    }

    /// The application became active (`true`: visible, online, not paused) or passive.
    /// Going passive drops the connection (the driver closes it) and clears a reject flag
    /// and an abort.
    pub fn set_active(&mut self, now: Instant, active: bool) {
        if self.app_active == active {
            return;
        }
        self.app_active = active;
        self.rejected = None;
        self.aborted = None;
        if !active {
            self.connected = false;
        }
        self.update(now);
    }

    /// Gives this client an id (or takes it away: passive).
    pub fn set_client_id(&mut self, now: Instant, client_id: Option<String>) {
        if self.client_id != client_id {
            self.client_id = client_id;
            self.aborted = None;
            self.connected = false;
            if let Some(id) = &self.client_id {
                self.events
                    .push_back(PairingEvent::ClientIdChanged(id.clone()));
            }
            self.update(now);
        }
    }

    /// Gives the access token (or takes it away: readyToConnect). A new token clears an
    /// abort, so the socket tries to connect again.
    pub fn set_access_token(&mut self, now: Instant, token: Option<String>) {
        if self.access_token != token {
            self.access_token = token;
            self.aborted = None;
            self.connected = false;
            self.update(now);
        }
    }

    /// Leaves the readyToConnect an abort put it in: connecting again.
    pub fn retry(&mut self, now: Instant) {
        self.aborted = None;
        self.update(now);
    }

    /// Assigns the partner (`None` unassigns it). For a controller this is the only way to
    /// get one; a responder may be assigned one too. The same id again clears a reject flag.
    pub fn assign_partner(&mut self, now: Instant, partner: Option<String>) {
        if self.partner == partner {
            if self.rejected.take().is_some() {
                self.update(now);
            }
            return;
        }
        if self.partner.is_some() {
            self.set_partner(None);
            self.update(now);
        }
        if partner.is_some() {
            self.set_partner(partner);
            self.update(now);
        }
    }

    /// The connection is open (`cr_welcome`, or the SSE `hello`); `client_id` is the id the
    /// server confirmed. Ignored unless the socket is connecting.
    pub fn handle_connected(&mut self, now: Instant, client_id: &str) {
        if self.state != State::Connecting {
            return;
        }
        if self.client_id.as_deref() != Some(client_id) {
            self.client_id = Some(client_id.to_string());
            self.events
                .push_back(PairingEvent::ClientIdChanged(client_id.to_string()));
        }
        self.connected = true;
        self.update(now);
    }

    /// The connection dropped without an abort: connecting again (the driver reconnects).
    pub fn handle_disconnected(&mut self, now: Instant) {
        if self.connected {
            self.connected = false;
            self.update(now);
        }
    }

    /// The server aborted the connection or refused it (`cr_aborted`, SSE `aborted`) with
    /// `reason`: readyToConnect until [`CrSocket::retry`], a new token or id, or a
    /// passive/active cycle.
    pub fn handle_aborted(&mut self, now: Instant, reason: &str) {
        if self.state == State::Passive {
            return;
        }
        self.connected = false;
        self.aborted = Some(reason.to_string());
        self.update(now);
    }

    /// An event the server delivered. Ignored unless connected.
    pub fn handle_event(&mut self, now: Instant, event: IncomingEvent) {
        if !self.state.metastates().connected {
            return;
        }
        let from_partner = self.partner.as_deref() == Some(event.sender.as_str());
        let ping = event.event_type == PING;
        let auto_pair =
            self.config.role == PairingRole::Responder && self.state == State::ReadyToPair && ping;
        if !(from_partner || auto_pair) {
            if ping {
                let answer = match self.config.role {
                    PairingRole::Controller => Some(NOT_PAIRED),
                    PairingRole::Responder if self.partner.is_some() => Some(ASSIGNED_TO_OTHER),
                    PairingRole::Responder => None,
                };
                if let Some(sub_type) = answer {
                    self.send_now(now, OutgoingEvent::new(&event.sender, REJECT, sub_type));
                }
            }
            return;
        }
        match event.event_type.as_str() {
            PING if self.state == State::ReadyToPair => {
                // The first pinger (responder), or the rejected partner itself: (re)assigned.
                if from_partner {
                    self.rejected = None;
                } else {
                    self.set_partner(Some(event.sender.clone()));
                }
            }
            UNASSIGN if self.config.role == PairingRole::Responder => {
                self.set_partner(None);
                self.update(now);
                return;
            }
            REJECT => {
                self.rejected = Some(event.sub_type.clone());
                self.events.push_back(PairingEvent::Rejected {
                    partner: event.sender.clone(),
                    sub_type: event.sub_type.clone(),
                });
            }
            _ => {}
        }
        let counts = event.event_type != INACTIVE && event.event_type != REJECT;
        self.last_partner_event = Some((now, counts));
        if !reserved(&event.event_type) {
            self.events.push_back(PairingEvent::AppEvent(event));
        }
        self.update(now);
    }

    /// Queues an application event for the partner (paced; restarts the ping sequence).
    pub fn send_app_event(
        &mut self,
        now: Instant,
        event_type: &str,
        sub_type: &str,
        params: Vec<String>,
    ) -> Result<(), SendError> {
        if reserved(event_type) {
            return Err(SendError::Reserved(event_type.to_string()));
        }
        check_event(event_type, sub_type, &params).map_err(SendError::Invalid)?;
        let partner = match (&self.partner, self.state.metastates().paired) {
            (Some(p), true) => p.clone(),
            _ => return Err(SendError::NotPaired(self.state)),
        };
        let waiting = self.queue.iter().filter(|e| e.event_type != PING).count();
        if waiting >= self.config.queue_limit {
            return Err(SendError::QueueFull);
        }
        let mut event = OutgoingEvent::new(&partner, event_type, sub_type);
        event.params = params;
        self.queue.push_back(event);
        self.restart_pings(now);
        self.pump(now);
        Ok(())
    }

    /// Time passed: pings, the partner's activity, the pacing queue.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(at) = self.next_ping {
            if at <= now && self.state.metastates().paired {
                self.queue_ping();
                self.restart_pings(now);
            }
        }
        self.update(now);
        self.pump(now);
    }

    /// The next event to send, if any.
    pub fn poll_transmit(&mut self) -> Option<OutgoingEvent> {
        self.outbox.pop_front()
    }

    /// The next event for the application, if any.
    pub fn poll_event(&mut self) -> Option<PairingEvent> {
        self.events.pop_front()
    }

    /// When [`CrSocket::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let ping = self.next_ping.filter(|_| self.state.metastates().paired);
        let partner = match (self.state, self.last_partner_event) {
            (State::Interacting, Some((at, true))) => Some(at + self.config.partner_alive),
            _ => None,
        };
        let pacing = match (self.queue.is_empty(), self.last_sent) {
            (false, Some(at)) => Some(at + self.config.pacing),
            _ => None,
        };
        [ping, partner, pacing].into_iter().flatten().min()
    }

    fn set_partner(&mut self, partner: Option<String>) {
        self.partner = partner.clone();
        self.rejected = None;
        self.last_partner_event = None;
        self.events.push_back(PairingEvent::PartnerChanged(partner));
    }

    fn partner_active(&self, now: Instant) -> bool {
        matches!(self.last_partner_event, Some((at, true)) if now < at + self.config.partner_alive)
    }

    fn compute(&self, now: Instant) -> State {
        if !self.app_active || self.client_id.is_none() {
            State::Passive
        } else if !self.connected {
            if self.access_token.is_some() && self.aborted.is_none() {
                State::Connecting
            } else {
                State::ReadyToConnect
            }
        } else if self.partner.is_none() || self.rejected.is_some() {
            State::ReadyToPair
        } else if self.partner_active(now) {
            State::Interacting
        } else {
            State::Searching
        }
    }

    /// Recomputes the state; on a change, does what the move sends and tells the app.
    fn update(&mut self, now: Instant) {
        let old = self.state;
        let new = self.compute(now);
        if old == new {
            return;
        }
        self.state = new;
        let (was, is) = (old.metastates(), new.metastates());
        match (was.paired, is.paired) {
            (false, true) => {
                self.paired_with = self.partner.clone();
                self.queue_ping();
                self.restart_pings(now);
            }
            (true, true) => {
                if new == State::Interacting {
                    self.queue_ping();
                }
                self.restart_pings(now);
            }
            (true, false) => {
                self.next_ping = None;
                self.queue.clear();
                let former = self.paired_with.take();
                if let Some(former) = former {
                    if new == State::ReadyToPair {
                        if self.config.role == PairingRole::Controller && self.rejected.is_none() {
                            self.send_now(now, OutgoingEvent::new(&former, UNASSIGN, NOT_PAIRED));
                        }
                    } else {
                        self.send_now(now, OutgoingEvent::new(&former, INACTIVE, ""));
                    }
                }
            }
            (false, false) => {}
        }
        self.events.push_back(PairingEvent::StateChanged(new));
        if was != is {
            self.events.push_back(PairingEvent::MetastatesChanged(is));
        }
        self.pump(now);
    }

    fn queue_ping(&mut self) {
        let Some(partner) = self.partner.clone() else {
            return;
        };
        if !self.queue.iter().any(|e| e.event_type == PING) {
            self.queue.push_back(OutgoingEvent::new(&partner, PING, ""));
        }
    }

    fn restart_pings(&mut self, now: Instant) {
        self.next_ping = match self.state {
            State::Searching => Some(now + self.config.search_ping),
            State::Interacting => Some(now + self.config.interact_ping),
            _ => None,
        };
    }

    /// Sends outside the pacing queue (CRSocket's `sendCrEventNow`); counts as the last send.
    fn send_now(&mut self, now: Instant, event: OutgoingEvent) {
        self.outbox.push_back(event);
        self.last_sent = Some(now);
    }

    /// Releases the queue's head if a pacing interval passed since the last send.
    fn pump(&mut self, now: Instant) {
        if self.queue.is_empty() {
            return;
        }
        if self
            .last_sent
            .is_some_and(|at| now < at + self.config.pacing)
        {
            return;
        }
        if let Some(event) = self.queue.pop_front() {
            self.outbox.push_back(event);
            self.last_sent = Some(now);
        }
    }
}

#[cfg(test)]
mod tests;
