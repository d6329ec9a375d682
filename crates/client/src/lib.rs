//! The Rust client SDK for LoudSync.
//!
//! Connect with a URL, a session id and this device's `{id, name, type}`; get a [`Client`]
//! handle for commands and an [`Events`] stream of typed [`Event`]s. The client sends
//! `heartbeat` and `ping` every 5 s, keeps a member table and its own latency, and reconnects
//! (3 attempts, 2 s apart by default) whenever the connection ends without the protocol ending
//! it. `kicked`, `session_closed`, a rejected first join and the access refusals
//! ([`ServerError::is_access_refusal`]) end it for good, and so does a host's lost connection
//! (other than a server going away, close 1001): the server ends a session with its host's
//! connection, so the host gets [`Event::SessionClosed`] saying so instead of silently opening
//! a new, empty session under the same id.
//!
//! Resumable connections (issue 10, on by default: [`ClientConfig::resume`]): before `join`
//! the client does seed 003's `token` handshake, then numbers what it sends and acknowledges
//! what it receives. When such a connection drops uncleanly (not after its own `leave` or
//! [`Client::disconnect`], `kicked` or `session_closed`; not on a close 4000, 1009, 1002 or
//! 1007) the client resumes it on a new socket within [`ClientConfig::resume_window`]: the
//! same id, the member table kept, nothing lost or doubled either way. What the application
//! sends meanwhile is queued ([`ClientConfig::queue_limit`]) and sent in order, paced under
//! the server's rate limit. [`Event::Resumed`] or [`Event::ResumeFailed`] says how it went;
//! after a refusal the client joins afresh by itself. [`LinkState`] (seed 003's OPEN ...
//! DISCONNECTED) is the link's state beside [`ConnectionState`]. A resumable host resumes
//! too: the server holds its session through the window.
//!
//! `ws://` and `wss://` URLs: TLS is rustls with the ring provider, checking the server's
//! certificate against the operating system's roots or a private CA ([`TlsRoots`]). The
//! session's password and a join token ([`ClientConfig::password`], [`ClientConfig::token`])
//! go in `join` and never show in `Debug` output.
//!
//! Session state and handoff (issue 11): every session holds a JSON state document with a
//! version; the host sets it ([`Client::set_state`], [`Client::patch_state`]) and every
//! member follows it ([`Event::SessionState`], [`Client::session_state`]). Control moves by
//! a handoff: a member declares itself ready ([`Client::set_ready`]), the host asks
//! ([`Client::request_handoff`]), the candidate is prompted ([`Event::HandoffRequested`]) and
//! accepts or declines ([`Client::accept_handoff`], [`Client::decline_handoff`]), and
//! everyone learns the new host ([`Event::HostChanged`]). [`Role`] is this client's view of
//! its part; [`Snapshot`] shows all of it. A host may open a new session without an id
//! ([`ClientConfig::new_session`]): the server's code arrives as [`Client::session_id`].
//! These frames are numbered and queued like every command.
//!
//! The session's UDP media stream (issue 13): a member asks for a media token
//! ([`Client::media_token`], or [`Client::request_media_token`] and [`Event::MediaToken`]),
//! numbered and queued like every command; the host's [`MediaGrant`] publishes, everyone
//! else's subscribes, and a server started without `--media-listen` answers
//! `media_unavailable` ([`ClientError::Refused`], [`Event::Error`]). The grant's port and the
//! server's address ([`Client::relay_address`]) locate the relay; [`media::publisher`] streams
//! to it and [`media::receiver`] receives from it (or from `loudsync media serve`).
//!
//! Forward compatible with newer servers: unknown fields are ignored, an `error` whose code
//! this version does not know arrives as [`Event::Error`] with an [`AnyErrorCode::Unknown`]
//! code, and a message of a type it does not know arrives as [`Event::Unknown`] with the
//! frame's text. Every frame the client sends is written by `loudsync_protocol`.
//!
//! ```no_run
//! use loudsync_client::{Client, ClientConfig, Event};
//!
//! # async fn run() -> Result<(), loudsync_client::ClientError> {
//! let config = ClientConfig::member("ws://127.0.0.1:8080/", "party", "phone-7", "Sara's phone");
//! let (client, mut events) = Client::connect(config).await?;
//! client.send(serde_json::json!({"track": "Blue in Green"}))?;
//! while let Some(event) = events.recv().await {
//!     match event {
//!         Event::MemberJoined(m) => println!("{} joined", m.name),
//!         Event::Message { from, data } => println!("{from}: {data}"),
//!         Event::Kicked { .. } | Event::SessionClosed { .. } => break,
//!         _ => {}
//!     }
//! }
//! client.leave().await;
//! # Ok(()) }
//! ```
//!
//! - [`config`]: settings, credentials, TLS roots and reconnection policy.
//! - [`machine`]: every client rule as a sans-IO state machine, tested on a virtual clock.
//! - [`resume`]: the resume layer's bookkeeping (link states, numbered frames, acks, pacing).
//! - [`handoff`]: the handoff layer's (roles, host and term, the session state, the pending
//!   handoff, readiness).
//! - [`pairing`]: the crSocket pairing state machine of seed 004 (issue 12), sans-IO: states,
//!   metastates, partner, pings, pacing; [`pairing::driver`] runs it over the pairing
//!   WebSocket (`/crsocket/{APP}/ws`): [`PairingClient`], [`PairingEvents`],
//!   [`PairingUpdate`].
//! - [`media`]: the UDP media stream's drivers: [`media::receiver`] (an initiator: `media
//!   recv`, a relay subscriber) and [`media::publisher`] (the host's stream to the relay).
//! - this module: the tokio driver that owns the socket; `transport`: the URL, DNS, TCP, TLS
//!   and the WebSocket upgrade, each failure worded for a person.

pub mod config;
pub mod handoff;
pub mod machine;
pub mod media;
pub mod pairing;
pub mod resume;
mod transport;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use loudsync_protocol::{server::SessionInfo, MemberInfo};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_websockets::Message;

pub use config::{Backoff, ClientConfig, ReconnectPolicy, Secret, TlsRoots};
pub use handoff::{HandoffOffer, PendingHandoff, Role};
pub use loudsync_protocol::handoff::{display_code, typed_code};
pub use loudsync_protocol::types::MediaRole;
pub use loudsync_protocol::{
    AnyErrorCode, ConnectionStatus, DeviceInfo, DeviceType, ErrorCode, HandoffFailure, HostChange,
    LeaveReason, RawJson,
};
use machine::{Action, Machine};
pub use machine::{ConnectionState, Event, MediaGrant, ServerError};
pub use media::publisher::relay_address;
pub use pairing::driver::{
    PairingClient, PairingClientConfig, PairingError, PairingEvents, PairingSnapshot,
    PairingUpdate, ReceivedEvent,
};
pub use pairing::{Metastates, PairingConfig, PairingRole, State as PairingState};
pub use resume::LinkState;
use transport::{Target, Ws};

/// What can go wrong for a caller.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// The configuration cannot work: the URL is not a `ws://` or `wss://` URL, or the TLS
    /// roots cannot be loaded. Nothing was sent.
    #[error("{0}")]
    Config(String),
    /// The first connection could not be made (the text says which step failed: DNS, TCP,
    /// TLS or the WebSocket upgrade).
    #[error("{0}")]
    Connect(String),
    /// The server refused the first join. The code is typed: `session_not_found`,
    /// `session_full`, and the access refusals `password_required`, `wrong_password`,
    /// `token_required`, `invalid_token`, `host_not_allowed`, `too_many_attempts`
    /// ([`ServerError::is_access_refusal`]). None of these is retried.
    #[error("join rejected: {0}")]
    Rejected(ServerError),
    /// A command was given while not connected (connecting, reconnecting without resume,
    /// or ended).
    #[error("not connected")]
    NotConnected,
    /// A resumable connection holds [`ClientConfig::queue_limit`] frames already
    /// (unacknowledged, or queued while reconnecting): try again once some are acknowledged.
    #[error("send queue full")]
    QueueFull,
    /// A command's argument cannot be sent (e.g. a session state that is not a JSON
    /// object). Nothing was sent.
    #[error("{0}")]
    Invalid(String),
    /// The server answered a request with an `error`: [`Client::media_token`] on a server
    /// without a media relay gets `media_unavailable` ([`ErrorCode::MediaUnavailable`]).
    /// The connection stays.
    #[error("refused: {0}")]
    Refused(ServerError),
}

/// What the client currently knows, readable at any time.
///
/// [`Default`] is the snapshot before connecting (`Disconnected`, `Idle`, nothing known), for
/// building one in a test: `Snapshot { role: Role::Assigned, ..Snapshot::default() }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The connection state.
    pub state: ConnectionState,
    /// This member's id, while joined.
    pub client_id: Option<String>,
    /// The session, while joined (its `host_id` follows `host_changed`).
    pub session: Option<SessionInfo>,
    /// The member table: host first, then join order; each with status, latency and
    /// readiness (`handoff_ready`, this client's own included).
    pub members: Vec<MemberInfo>,
    /// This client's last measured round-trip time, in ms.
    pub latency: Option<u64>,
    /// This client's role ([`Role`]; see [`handoff`]).
    pub role: Role,
    /// The session's id: as `welcome` gave it once joined (the code the server assigned to a
    /// session this host opened without one, [`ClientConfig::new_session`]), the configured
    /// one before (`None` for a new session until its `welcome`). Kept across reconnections,
    /// which rejoin it. Show it with [`display_code`] (`A1B-2C3`).
    pub session_id: Option<String>,
    /// The current host's id, while joined.
    pub host_id: Option<String>,
    /// Whether this client is the host now.
    pub is_host: bool,
    /// The highest term seen (+1 per change of host); 0 before `welcome`.
    pub term: u64,
    /// The session state (a JSON object, `{}` until known).
    pub session_state: Value,
    /// Its version.
    pub state_version: u64,
    /// The handoff this client is part of (its request as host, or its prompt as
    /// candidate).
    pub pending_handoff: Option<PendingHandoff>,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            state: ConnectionState::Disconnected,
            client_id: None,
            session: None,
            members: Vec::new(),
            latency: None,
            role: Role::Idle,
            session_id: None,
            host_id: None,
            is_host: false,
            term: 0,
            session_state: Value::Object(serde_json::Map::new()),
            state_version: 0,
            pending_handoff: None,
        }
    }
}

/// What the driver publishes beside the snapshot.
struct Shared {
    snapshot: Snapshot,
    link: LinkState,
    /// The machine would take a command now ([`Machine::accepts_commands`]).
    accepting: bool,
    /// ... or refuses it because the queue is full ([`Machine::queue_full`]).
    queueing: bool,
    /// The address the current (or last) WebSocket connection reached: where the server's
    /// media relay is ([`Client::relay_address`]).
    server_ip: Option<IpAddr>,
}

/// Who waits for the reply to a `media_token` request: [`Client::media_token`]'s caller, or
/// nobody ([`Client::request_media_token`]: the event alone). One per request, in order.
type MediaReply = Option<oneshot::Sender<Result<MediaGrant, ClientError>>>;

enum Command {
    Leave(oneshot::Sender<()>),
    Disconnect(oneshot::Sender<()>),
    Ping,
    Kick {
        member_id: String,
        reason: Option<String>,
    },
    MemberList,
    MediaToken(MediaReply),
    Message {
        data: Value,
        to: Option<String>,
    },
    State {
        change: serde_json::Map<String, Value>,
        patch: bool,
        base_version: Option<u64>,
    },
    Ready(bool),
    RequestHandoff(Option<String>),
    AnswerHandoff {
        handoff_id: String,
        accept: bool,
        reason: Option<String>,
    },
}

/// A handle to a connected client. Cheap to clone; the connection ends when [`Client::leave`]
/// is called or every handle is dropped.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    shared: Arc<Mutex<Shared>>,
    /// [`ClientConfig::url`], for [`Client::relay_address`] before any connection.
    url: Arc<str>,
}

/// The stream of events of one client.
pub struct Events {
    rx: mpsc::UnboundedReceiver<Event>,
}

impl Events {
    /// The next event; `None` once the connection is over and every event was read.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

impl Client {
    /// Connects and joins. Returns once `welcome` arrived, or with the reason the first
    /// connection or join failed (no reconnection is attempted for those).
    pub async fn connect(config: ClientConfig) -> Result<(Client, Events), ClientError> {
        let target = Target::new(&config.url, &config.tls_roots).map_err(ClientError::Config)?;
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (first_tx, first_rx) = oneshot::channel();
        let shared = Arc::new(Mutex::new(Shared {
            snapshot: Snapshot {
                session_id: (!config.session_id.is_empty()).then(|| config.session_id.clone()),
                ..Snapshot::default()
            },
            link: LinkState::Disconnected,
            accepting: false,
            queueing: false,
            server_ip: None,
        }));
        let url: Arc<str> = config.url.as_str().into();
        let driver = Driver {
            leave_timeout: config.leave_timeout,
            target,
            machine: Machine::new(config, Instant::now(), unix_ms()),
            ws: None,
            events: ev_tx,
            shared: shared.clone(),
            first: Some(first_tx),
            leaving: Vec::new(),
            leave_deadline: None,
            leave_queued: false,
            seen_generation: u64::MAX,
            seen_accepting: None,
            media_replies: VecDeque::new(),
        };
        tokio::spawn(driver.run(cmd_rx));
        match first_rx.await {
            Ok(Ok(())) => Ok((
                Client {
                    commands: cmd_tx,
                    shared,
                    url,
                },
                Events { rx: ev_rx },
            )),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ClientError::Connect("client task ended".into())),
        }
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().expect("snapshot")
    }

    /// Everything the client currently knows.
    pub fn snapshot(&self) -> Snapshot {
        self.shared().snapshot.clone()
    }

    /// The connection state.
    pub fn state(&self) -> ConnectionState {
        self.shared().snapshot.state
    }

    /// The resume link's state (seed 003's; `Disconnected` on a plain connection).
    pub fn link_state(&self) -> LinkState {
        self.shared().link
    }

    /// The member table.
    pub fn members(&self) -> Vec<MemberInfo> {
        self.shared().snapshot.members.clone()
    }

    /// This member's id, while joined.
    pub fn client_id(&self) -> Option<String> {
        self.shared().snapshot.client_id.clone()
    }

    /// This client's last measured round-trip time, in ms.
    pub fn latency(&self) -> Option<u64> {
        self.shared().snapshot.latency
    }

    /// This client's role ([`Role`]).
    pub fn role(&self) -> Role {
        self.shared().snapshot.role
    }

    /// The session's id ([`Snapshot::session_id`]): as `welcome` gave it (the code the
    /// server assigned to a session opened with [`ClientConfig::new_session`]), or the
    /// configured one before.
    pub fn session_id(&self) -> Option<String> {
        self.shared().snapshot.session_id.clone()
    }

    /// The current host's id, while joined.
    pub fn host_id(&self) -> Option<String> {
        self.shared().snapshot.host_id.clone()
    }

    /// Whether this client is the session's host now (a handoff can make a member host, or
    /// a host a member).
    pub fn is_host(&self) -> bool {
        self.shared().snapshot.is_host
    }

    /// The highest term seen (1 at the session's creation, +1 per change of host).
    pub fn term(&self) -> u64 {
        self.shared().snapshot.term
    }

    /// The session state (a JSON object) and its version.
    pub fn session_state(&self) -> (Value, u64) {
        let shared = self.shared();
        (
            shared.snapshot.session_state.clone(),
            shared.snapshot.state_version,
        )
    }

    /// The handoff this client is part of: as host, its request
    /// ([`PendingHandoff::Requested`], then [`PendingHandoff::Started`]); as candidate, the
    /// prompt to answer ([`PendingHandoff::Offered`]).
    pub fn pending_handoff(&self) -> Option<PendingHandoff> {
        self.shared().snapshot.pending_handoff.clone()
    }

    /// Host only: replaces the session state (a JSON object) with `state`. With
    /// `base_version`, the server refuses it (`stale_version`, an [`Event::Error`]) unless
    /// that is the current version. It carries the current term, so a host that lost control
    /// meanwhile is refused (`unauthorized` or `stale_term`). Every member, this one
    /// included, gets the result as [`Event::SessionState`]. Queued like [`Client::send`]
    /// while a resumable connection is being resumed.
    pub fn set_state(&self, state: Value, base_version: Option<u64>) -> Result<(), ClientError> {
        self.state_command(state, false, base_version)
    }

    /// Host only: applies `patch` (a JSON object) to the session state as an RFC 7396 merge
    /// patch (`null` removes a key); otherwise as [`Client::set_state`].
    pub fn patch_state(&self, patch: Value, base_version: Option<u64>) -> Result<(), ClientError> {
        self.state_command(patch, true, base_version)
    }

    fn state_command(
        &self,
        value: Value,
        patch: bool,
        base_version: Option<u64>,
    ) -> Result<(), ClientError> {
        let Value::Object(change) = value else {
            return Err(ClientError::Invalid(
                "the session state must be a JSON object".into(),
            ));
        };
        self.command(Command::State {
            change,
            patch,
            base_version,
        })
    }

    /// Host only: hands control to `target` (a member's id), or, with `None`, to the member
    /// that declared itself ready first. [`Event::HandoffStarted`] names the candidate;
    /// then [`Event::HandoffAcknowledged`] and [`Event::HostChanged`], or
    /// [`Event::HandoffFailed`].
    pub fn request_handoff(&self, target: Option<&str>) -> Result<(), ClientError> {
        self.command(Command::RequestHandoff(target.map(str::to_string)))
    }

    /// As the candidate: takes control ([`Event::HandoffRequested`]'s `handoff_id`).
    pub fn accept_handoff(&self, handoff_id: &str) -> Result<(), ClientError> {
        self.command(Command::AnswerHandoff {
            handoff_id: handoff_id.to_string(),
            accept: true,
            reason: None,
        })
    }

    /// As the candidate: refuses control (`reason` is not passed on to the host).
    pub fn decline_handoff(
        &self,
        handoff_id: &str,
        reason: Option<&str>,
    ) -> Result<(), ClientError> {
        self.command(Command::AnswerHandoff {
            handoff_id: handoff_id.to_string(),
            accept: false,
            reason: reason.map(str::to_string),
        })
    }

    /// As a member: declares (`true`) or withdraws readiness to take control; the role
    /// becomes [`Role::HandoffReady`] (or [`Role::Assigned`]). A host cannot be ready.
    pub fn set_ready(&self, ready: bool) -> Result<(), ClientError> {
        self.command(Command::Ready(ready))
    }

    /// A numbered command: taken while connected, and while reconnecting on a resumable
    /// connection (queued, sent in order once back).
    fn command(&self, command: Command) -> Result<(), ClientError> {
        {
            let shared = self.shared();
            if !shared.accepting {
                return Err(if shared.queueing {
                    ClientError::QueueFull
                } else {
                    ClientError::NotConnected
                });
            }
        }
        self.commands
            .send(command)
            .map_err(|_| ClientError::NotConnected)
    }

    /// Sends a `ping` now (the client also pings every heartbeat interval). Only while
    /// connected: a ping is never queued.
    pub fn ping(&self) -> Result<(), ClientError> {
        if self.state() != ConnectionState::Connected {
            return Err(ClientError::NotConnected);
        }
        self.commands
            .send(Command::Ping)
            .map_err(|_| ClientError::NotConnected)
    }

    /// Host only: removes a member (`unauthorized` comes back as an [`Event::Error`] otherwise).
    pub fn kick(&self, member_id: &str, reason: Option<&str>) -> Result<(), ClientError> {
        self.command(Command::Kick {
            member_id: member_id.to_string(),
            reason: reason.map(str::to_string),
        })
    }

    /// Asks for a fresh member list (arrives as [`Event::MemberList`]).
    pub fn request_member_list(&self) -> Result<(), ClientError> {
        self.command(Command::MemberList)
    }

    /// Asks for a media token for the session's UDP relay (issue 13): numbered and queued
    /// like every command; the reply arrives as [`Event::MediaToken`] (the host's grant is
    /// [`MediaRole::Publish`], everyone else's [`MediaRole::Subscribe`]), or, from a server
    /// started without `--media-listen`, as [`Event::Error`] with
    /// [`ErrorCode::MediaUnavailable`]. [`Client::media_token`] awaits it instead.
    pub fn request_media_token(&self) -> Result<(), ClientError> {
        self.command(Command::MediaToken(None))
    }

    /// Asks for a media token and waits for the reply: the [`MediaGrant`] (which also
    /// arrives as [`Event::MediaToken`]), or [`ClientError::Refused`] with
    /// `media_unavailable` from a server without a relay. Replies are matched to requests
    /// in order. [`ClientError::NotConnected`] when the request cannot be sent, or when the
    /// client ends or joins afresh (a new member id: a token for the old one is no use)
    /// before the reply. Any other `error` the request provokes (e.g. `rate_limited` on a
    /// plain connection) arrives as an [`Event::Error`] only, so bound the wait with a
    /// timeout where that matters.
    ///
    /// ```no_run
    /// # async fn run(client: loudsync_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let grant = client.media_token().await?;
    /// let relay = client.relay_address(&grant).await?;
    /// println!("{:?} on {relay} as {}", grant.role, grant.stream_id);
    /// # Ok(()) }
    /// ```
    pub async fn media_token(&self) -> Result<MediaGrant, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::MediaToken(Some(tx)))?;
        rx.await.unwrap_or(Err(ClientError::NotConnected))
    }

    /// The UDP address of the session's media relay for `grant`: the server's IP address as
    /// the WebSocket connection reached it (the URL's host, resolved as that connection
    /// resolved it) with the grant's port. Before any connection, the URL's host resolved
    /// anew ([`relay_address`]).
    pub async fn relay_address(&self, grant: &MediaGrant) -> std::io::Result<SocketAddr> {
        let known = self.shared().server_ip;
        match known {
            Some(ip) => Ok(SocketAddr::new(ip, grant.port)),
            None => relay_address(&self.url, grant.port).await,
        }
    }

    /// Sends application data to every other member.
    pub fn send(&self, data: Value) -> Result<(), ClientError> {
        self.command(Command::Message { data, to: None })
    }

    /// Sends application data to one member.
    pub fn send_to(&self, member_id: &str, data: Value) -> Result<(), ClientError> {
        self.command(Command::Message {
            data,
            to: Some(member_id.to_string()),
        })
    }

    /// Leaves the session and waits until the connection is closed. For the host this ends
    /// the session for everyone.
    ///
    /// While a resumable connection is being resumed (between attempts too), the leave is
    /// queued like any command: once resumed it goes out right after the resend, so the
    /// others see `member_left` `left` at once rather than `timeout` at the window's end,
    /// and this waits for the server's close as usual. If the resume is refused or the
    /// resume window passes, the client ends there without joining afresh. So this can wait
    /// up to [`ClientConfig::resume_window`] while the server is unreachable.
    pub async fn leave(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Leave(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Host only: ends the session for everyone (the host's `leave`).
    pub async fn close_session(&self) {
        self.leave().await;
    }

    /// The formal disconnect (seed 003): on a resumable connection, once what is queued went
    /// out, sends the connection token, which the server treats as `leave` (the place can no
    /// longer be resumed); waits until the connection is closed. While the connection is
    /// being resumed it is queued and sent once resumed, as [`Client::leave`] describes. On
    /// a plain connection, the same as [`Client::leave`].
    pub async fn disconnect(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Disconnect(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The task that owns the socket and carries out the machine's actions.
struct Driver {
    target: Target,
    leave_timeout: Duration,
    machine: Machine,
    ws: Option<Ws>,
    events: mpsc::UnboundedSender<Event>,
    shared: Arc<Mutex<Shared>>,
    first: Option<oneshot::Sender<Result<(), ClientError>>>,
    leaving: Vec<oneshot::Sender<()>>,
    leave_deadline: Option<tokio::time::Instant>,
    /// A leave was queued by the machine while resuming: the leave timeout starts once it
    /// went out.
    leave_queued: bool,
    seen_generation: u64,
    seen_accepting: Option<(bool, bool)>,
    /// One entry per `media_token` request sent and not yet answered, oldest first.
    media_replies: VecDeque<MediaReply>,
}

impl Driver {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        self.machine.start(Instant::now());
        let mut close: Option<(u16, String)> = None;
        let mut handles_gone = false;
        loop {
            self.carry_out().await;
            if self.machine.is_ended() {
                break;
            }
            if self.leave_queued && !self.machine.leave_queued() {
                // The leave queued while resuming went out: now wait for the server's close.
                self.leave_queued = false;
                self.leave_deadline = Some(tokio::time::Instant::now() + self.leave_timeout);
            }
            let deadline = [
                self.machine
                    .poll_timeout()
                    .map(tokio::time::Instant::from_std),
                self.leave_deadline,
            ]
            .into_iter()
            .flatten()
            .min();
            tokio::select! {
                frame = next_frame(&mut self.ws) => match frame {
                    Some(Ok(m)) => {
                        let now = Instant::now();
                        if let Some(text) = m.as_text() {
                            self.machine.handle_text(now, text);
                        } else if let Some((code, reason)) = m.as_close() {
                            close = Some((code.into(), reason.to_string()));
                        } else {
                            self.machine.handle_activity(now);
                        }
                    }
                    Some(Err(_)) | None => {
                        self.ws = None;
                        let close = close.take();
                        let close = close.as_ref().map(|(code, reason)| (*code, reason.as_str()));
                        self.machine.handle_closed(Instant::now(), close);
                    }
                },
                command = commands.recv(), if !handles_gone => {
                    let now = Instant::now();
                    let _ = match command {
                        Some(Command::Leave(done)) => {
                            self.leaving.push(done);
                            self.machine.leave(now);
                            self.arm_leave_deadline();
                            Ok(())
                        }
                        Some(Command::Disconnect(done)) => {
                            self.leaving.push(done);
                            self.machine.disconnect(now);
                            self.arm_leave_deadline();
                            Ok(())
                        }
                        Some(Command::Ping) => self.machine.ping(now),
                        Some(Command::Kick { member_id, reason }) => {
                            self.machine.kick(now, &member_id, reason.as_deref())
                        }
                        Some(Command::MemberList) => self.machine.request_member_list(now),
                        Some(Command::MediaToken(reply)) => {
                            match self.machine.request_media_token(now) {
                                Ok(()) => self.media_replies.push_back(reply),
                                Err(e) => {
                                    if let Some(reply) = reply {
                                        let _ = reply.send(Err(match e {
                                            machine::CommandError::QueueFull => {
                                                ClientError::QueueFull
                                            }
                                            machine::CommandError::NotConnected => {
                                                ClientError::NotConnected
                                            }
                                        }));
                                    }
                                }
                            }
                            Ok(())
                        }
                        Some(Command::Message { data, to }) => {
                            self.machine.send_message(now, data, to.as_deref())
                        }
                        Some(Command::State { change, patch: false, base_version }) => {
                            self.machine.set_state(now, change, base_version)
                        }
                        Some(Command::State { change, patch: true, base_version }) => {
                            self.machine.patch_state(now, change, base_version)
                        }
                        Some(Command::Ready(ready)) => self.machine.set_ready(now, ready),
                        Some(Command::RequestHandoff(target)) => {
                            self.machine.request_handoff(now, target.as_deref())
                        }
                        Some(Command::AnswerHandoff { handoff_id, accept: true, .. }) => {
                            self.machine.accept_handoff(now, &handoff_id)
                        }
                        Some(Command::AnswerHandoff { handoff_id, accept: false, reason }) => {
                            self.machine.decline_handoff(now, &handoff_id, reason.as_deref())
                        }
                        None => {
                            // Every handle is gone: leave politely.
                            handles_gone = true;
                            self.machine.leave(now);
                            self.arm_leave_deadline();
                            Ok(())
                        }
                    };
                }
                _ = sleep_until(deadline) => {
                    if self.leave_deadline.is_some_and(|d| d <= tokio::time::Instant::now()) {
                        self.leave_deadline = None;
                        self.machine.handle_leave_timeout();
                    } else {
                        self.machine.handle_timeout(Instant::now());
                    }
                }
            }
        }
        if let Some(mut ws) = self.ws.take() {
            let _ = tokio::time::timeout(Duration::from_millis(500), ws.close()).await;
        }
        for done in self.leaving.drain(..) {
            let _ = done.send(());
        }
    }

    /// After a leave or formal disconnect: the leave timeout runs from now, or, if the
    /// machine queued it while resuming, from when it goes out (the resume window bounds the
    /// wait until then).
    fn arm_leave_deadline(&mut self) {
        if self.machine.leave_queued() {
            self.leave_queued = true;
        } else if !self.leave_queued {
            self.leave_deadline = Some(tokio::time::Instant::now() + self.leave_timeout);
        }
    }

    async fn carry_out(&mut self) {
        while let Some(action) = self.machine.poll_action() {
            match action {
                Action::Connect => match self.target.connect().await {
                    Ok(ws) => {
                        if let Some(ip) = peer_ip(&ws) {
                            self.shared.lock().expect("snapshot").server_ip = Some(ip);
                        }
                        self.ws = Some(ws);
                        self.machine.handle_connected(Instant::now());
                    }
                    Err(e) => self.machine.handle_connect_failed(Instant::now(), &e),
                },
                Action::Send(text) => {
                    if let Some(ws) = self.ws.as_mut() {
                        // A failed send shows up as the stream ending; nothing to do here.
                        let _ = ws.send(Message::text(text)).await;
                    }
                }
                Action::CloseSocket => {
                    if let Some(mut ws) = self.ws.take() {
                        let _ = tokio::time::timeout(Duration::from_millis(200), ws.close()).await;
                    }
                }
                Action::Emit(event) => {
                    // What the event says is in the snapshot before the event is seen (and
                    // before `connect` returns on `Welcome`).
                    self.publish();
                    if let Some(first) = self.first.take() {
                        match &event {
                            Event::Welcome { .. } => {
                                let _ = first.send(Ok(()));
                            }
                            Event::Error(e) => {
                                let _ = first.send(Err(ClientError::Rejected(e.clone())));
                            }
                            Event::Failed { reason } => {
                                let _ = first.send(Err(ClientError::Connect(reason.clone())));
                            }
                            _ => self.first = Some(first),
                        }
                    }
                    self.answer_media_token(&event);
                    let _ = self.events.send(event);
                }
            }
        }
        self.publish();
    }

    /// Hands a `media_token` reply to its request's waiter (the oldest request unanswered);
    /// a fresh join or a refused resume means no earlier request will be answered.
    fn answer_media_token(&mut self, event: &Event) {
        let answer = match event {
            Event::MediaToken(grant) => Ok(grant.clone()),
            Event::Error(e) if e.code == ErrorCode::MediaUnavailable => {
                Err(ClientError::Refused(e.clone()))
            }
            Event::Welcome { .. } | Event::ResumeFailed { .. } => {
                self.media_replies.clear();
                return;
            }
            _ => return,
        };
        if let Some(Some(reply)) = self.media_replies.pop_front() {
            let _ = reply.send(answer);
        }
    }

    /// Copies what changed in the machine to the handles' shared state.
    fn publish(&mut self) {
        let accepting = (self.machine.accepts_commands(), self.machine.queue_full());
        if self.machine.generation() != self.seen_generation
            || self.seen_accepting != Some(accepting)
        {
            self.seen_generation = self.machine.generation();
            self.seen_accepting = Some(accepting);
            let mut shared = self.shared.lock().expect("snapshot");
            let s = &mut shared.snapshot;
            s.state = self.machine.state();
            s.client_id = self.machine.client_id().map(str::to_string);
            s.session = self.machine.session().cloned();
            s.members = self.machine.members().to_vec();
            s.latency = self.machine.latency();
            s.role = self.machine.role();
            s.session_id = self.machine.session_id().map(str::to_string);
            s.host_id = self.machine.host_id().map(str::to_string);
            s.is_host = self.machine.is_host();
            s.term = self.machine.term();
            let (state, version) = self.machine.session_state();
            s.session_state = state.clone();
            s.state_version = version;
            s.pending_handoff = self.machine.pending_handoff().cloned();
            shared.link = self.machine.link_state();
            (shared.accepting, shared.queueing) = accepting;
        }
    }
}

/// The server's IP address as this connection reached it (after DNS, behind TLS).
fn peer_ip(ws: &Ws) -> Option<IpAddr> {
    use tokio_websockets::MaybeTlsStream;
    let tcp = match ws.get_ref() {
        MaybeTlsStream::Plain(tcp) => tcp,
        MaybeTlsStream::Rustls(tls) => tls.get_ref().0,
    };
    tcp.peer_addr().ok().map(|a| a.ip())
}

async fn next_frame(ws: &mut Option<Ws>) -> Option<Result<Message, tokio_websockets::Error>> {
    match ws.as_mut() {
        Some(ws) => ws.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
