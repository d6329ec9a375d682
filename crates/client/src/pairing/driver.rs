//! The tokio driver of the crSocket machine: one controller's or responder's pairing over the
//! WebSocket `ws(s)://HOST/crsocket/{APP}/ws` (issue 12, P9 to P13).
//!
//! As the session SDK's driver does, a task owns the socket and the [`CrSocket`] machine; the
//! application holds a [`PairingClient`] handle for commands and reads a [`PairingEvents`]
//! stream of [`PairingUpdate`]s. The task:
//!
//! - opens a connection while the machine is [`State::Connecting`] and closes it when the
//!   machine leaves the connected states (on [`State::Passive`], after sending the
//!   `inactive` the machine hands over, and on [`State::ReadyToConnect`] after an abort);
//! - identifies with `cr_identify` first; `cr_welcome` is the machine's `handle_connected`,
//!   `cr_aborted` its `handle_aborted` (the server closes 1000 after it; the driver does not
//!   reconnect until [`PairingClient::retry`], a new token, or a passive/active cycle);
//! - turns each `cr_event` into an [`IncomingEvent`] (its `receiveCt` stamped here, in ms
//!   since the Unix epoch, as P11 leaves it to the SDK) and each [`OutgoingEvent`] of the
//!   machine into a `cr_event` frame (its `sendCt` stamped here);
//! - sends `cr_alive` every [`PairingClientConfig::alive_interval`] (12 s, as CRSocket's JS)
//!   once identified, and counts a connection silent for
//!   [`PairingClientConfig::silence_timeout`] as lost (the server answers every `cr_alive`);
//! - reconnects a lost connection after [`PairingClientConfig::reconnect_delay`], for as long
//!   as the machine is connecting (CRSocket's pages retry forever too).
//!
//! # The client id
//!
//! The machine is passive until it has a client id. Without one in
//! [`PairingConfig::client_id`], the driver does not fetch one from `clientid/` first (that
//! would take an HTTP client and a second round trip): it identifies *without* a `clientId`
//! (P9: "assign me one"), and at the `cr_welcome` gives the machine the server's id
//! (`set_client_id`, so it is connecting) and then the connection (`handle_connected`). So an
//! id-less client shows [`PairingUpdate::ClientIdChanged`] and `connecting`, then
//! [`PairingUpdate::Welcome`], then `readyToPair` (every client: the welcome comes before the
//! state changes it causes). The id is kept from then on: a reconnection identifies with it. While the
//! machine is passive for want of an id, the driver keeps its own note of an abort (the
//! machine ignores `handle_aborted` while passive), so a refused id-less identify is not
//! retried either, and is told as [`PairingUpdate::Aborted`] all the same.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use loudsync_protocol::pairing::ws::{decode_server, encode_client};
use loudsync_protocol::pairing::{
    valid_access_token, valid_app_name, valid_client_id, AbortReason, Event as WireEvent,
    IdentifyFrame, IdentifyId, PairingClientFrame, PairingServerFrame,
};
use loudsync_protocol::server::Received;
use tokio::sync::{mpsc, oneshot};
use tokio_websockets::Message;

use super::{
    CrSocket, IncomingEvent, Metastates, OutgoingEvent, PairingConfig, PairingEvent, PairingRole,
    SendError, State,
};
use crate::config::TlsRoots;
use crate::machine::ServerError;
use crate::transport::{Target, Ws};

/// Settings of a [`PairingClient`]: where, which app, the machine's own settings, and the
/// driver's timers. [`PairingClientConfig::new`] gives the defaults.
#[derive(Clone, PartialEq)]
pub struct PairingClientConfig {
    /// The server, as for the session SDK: `ws://HOST:PORT/` or `wss://HOST:PORT/`. The
    /// pairing endpoint is `crsocket/{app}/ws` under the URL's path (a trailing `/ws`, the
    /// session endpoint, is dropped first, so `ws://h:8080/ws` works too).
    pub url: String,
    /// The app's name (`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`, P1).
    pub app: String,
    /// The machine's settings: role, client id (`None`: the server assigns one), access
    /// token, timers.
    pub pairing: PairingConfig,
    /// Whether the application is active from the start (`true`); otherwise the client waits
    /// for [`PairingClient::set_active`].
    pub active: bool,
    /// How often to send `cr_alive` once identified (12 s; the server's alive timeout is
    /// 25 s by default).
    pub alive_interval: Duration,
    /// A connection on which nothing arrived for this long (the server answers every
    /// `cr_alive`), or that got no `cr_welcome` within it, counts as lost (30 s).
    pub silence_timeout: Duration,
    /// Wait before each reconnection attempt (2 s).
    pub reconnect_delay: Duration,
    /// For `wss://`: the certificate authorities the server must chain to.
    pub tls_roots: TlsRoots,
}

impl std::fmt::Debug for PairingClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut pairing = self.pairing.clone();
        pairing.access_token = pairing.access_token.map(|_| "<redacted>".into());
        f.debug_struct("PairingClientConfig")
            .field("url", &self.url)
            .field("app", &self.app)
            .field("pairing", &pairing)
            .field("active", &self.active)
            .field("alive_interval", &self.alive_interval)
            .field("silence_timeout", &self.silence_timeout)
            .field("reconnect_delay", &self.reconnect_delay)
            .field("tls_roots", &self.tls_roots)
            .finish()
    }
}

impl PairingClientConfig {
    /// A `role` client of `app` on the server at `url` presenting `access_token`, active,
    /// with no client id (the server assigns one) and the default timers.
    pub fn new(
        url: impl Into<String>,
        app: impl Into<String>,
        role: PairingRole,
        access_token: impl Into<String>,
    ) -> Self {
        PairingClientConfig {
            url: url.into(),
            app: app.into(),
            pairing: PairingConfig {
                access_token: Some(access_token.into()),
                ..PairingConfig::new(role)
            },
            active: true,
            alive_interval: Duration::from_secs(12),
            silence_timeout: Duration::from_secs(30),
            reconnect_delay: Duration::from_secs(2),
            tls_roots: TlsRoots::System,
        }
    }

    /// The pairing WebSocket's URL for these settings, e.g.
    /// `ws://127.0.0.1:8080/crsocket/alpha/ws`; an error (a sentence) for a URL that is not
    /// `ws://` or `wss://` or an app name breaking P1.
    pub fn endpoint(&self) -> Result<String, String> {
        if !valid_app_name(&self.app) {
            return Err(format!(
                "`{}` is not an app name (1-64 of A-Z a-z 0-9 - _, starting with a letter or digit)",
                self.app
            ));
        }
        let not_a_url = || {
            format!(
                "`{}` is not a ws:// or wss:// URL (write e.g. ws://127.0.0.1:8080/)",
                self.url
            )
        };
        let uri: http::Uri = self.url.parse().map_err(|_| not_a_url())?;
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err(not_a_url());
        };
        if !matches!(scheme, "ws" | "wss") {
            return Err(not_a_url());
        }
        let path = uri.path().trim_end_matches('/');
        let prefix = path.strip_suffix("/ws").unwrap_or(path);
        Ok(format!(
            "{scheme}://{authority}{prefix}/crsocket/{}/ws",
            self.app
        ))
    }
}

/// What can go wrong for a caller of a [`PairingClient`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PairingError {
    /// The settings cannot work (URL, app name, client id, token syntax, TLS roots). Nothing
    /// was sent.
    #[error("{0}")]
    Config(String),
    /// [`PairingClient::connect`]: the first connection could not be made (the text says
    /// which step failed) or ended before `cr_welcome`.
    #[error("{0}")]
    Connect(String),
    /// [`PairingClient::connect`]: the server refused the identify (`cr_aborted`).
    #[error("identify refused: {0}")]
    Refused(AbortReason),
    /// A command's argument is unusable (a partner id that is not 6 digits, say).
    #[error("{0}")]
    Invalid(String),
    /// The machine refused to send the event (not paired, reserved type, invalid, queue full).
    #[error("{0}")]
    Send(SendError),
    /// The client was closed (or its task ended).
    #[error("the pairing client is closed")]
    Closed,
}

/// An application event from the partner, with the fields of its `cr_event`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedEvent {
    /// The sender's client id (the partner's), as the server stamped it.
    pub sender: String,
    /// The application's event type.
    pub event_type: String,
    /// The subtype (`""` if none).
    pub sub_type: String,
    /// The parameters.
    pub params: Vec<String>,
    /// The sender's `buffered` flag.
    pub buffered: bool,
    /// The sender's `logged` flag.
    pub logged: bool,
    /// The sender's `interceptable` flag.
    pub interceptable: bool,
    /// The sender's clock when it sent the event (ms), if it said.
    pub send_ct: Option<i64>,
    /// This client's clock when the event arrived (ms since the Unix epoch): the `receiveCt`
    /// the server leaves null for the SDK to stamp (P11).
    pub receive_ct: u64,
}

/// What a [`PairingClient`] tells the application, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum PairingUpdate {
    /// The machine's state changed.
    StateChanged(State),
    /// The metastates changed (after the [`PairingUpdate::StateChanged`] that caused it).
    MetastatesChanged(Metastates),
    /// The partner changed (assigned, auto-paired, unassigned).
    PartnerChanged(Option<String>),
    /// The partner rejected this client, or the server rejected a ping to it
    /// (`appIdMismatch`, `invalidPartnerRole`); the machine is readyToPair.
    Rejected {
        /// The partner that was flagged.
        partner: String,
        /// `assignedToOther`, `notPaired`, `appIdMismatch`, `invalidPartnerRole`, ...
        sub_type: String,
    },
    /// This client's id changed (the server assigned one, or its `cr_welcome` named another).
    ClientIdChanged(String),
    /// An application event from the partner.
    AppEvent(ReceivedEvent),
    /// A `cr_welcome`: the identify was accepted (every connection, reconnections too).
    Welcome {
        /// The app's name as the server has it.
        app_id: String,
        /// This client's id.
        client_id: String,
    },
    /// A `cr_aborted`: the server refused the identify or ended the connection. No
    /// reconnection until [`PairingClient::retry`], a new token or a passive/active cycle.
    Aborted {
        /// Why (`notAuthorized`, `releasedByOther`, `clientNotAlive`, ...).
        reason: AbortReason,
    },
    /// A connection attempt failed; another follows after the reconnect delay.
    ConnectFailed {
        /// Which step failed, for a person.
        reason: String,
    },
    /// An open connection ended without `cr_aborted`; the client reconnects while it is
    /// connecting.
    Disconnected {
        /// The close code and reason, or what broke, for a person.
        reason: String,
    },
    /// An `error` the server sent (`invalid_message`, `too_large`, `rate_limited`, ...).
    Error(ServerError),
}

/// What a [`PairingClient`] currently knows, readable at any time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PairingSnapshot {
    /// The machine's state (`Passive` before the task started).
    pub state: Option<State>,
    /// This client's id, once it has one.
    pub client_id: Option<String>,
    /// The assigned partner, if any (rejected or not).
    pub partner: Option<String>,
    /// The subtype the partner is flagged rejected with, if it is.
    pub rejected: Option<String>,
    /// The last abort reason, while it holds the client back from connecting.
    pub aborted: Option<AbortReason>,
}

enum Command {
    SetActive(bool),
    AssignPartner(Option<String>),
    SetAccessToken(Option<String>),
    Retry,
    Send {
        event_type: String,
        sub_type: String,
        params: Vec<String>,
        done: oneshot::Sender<Result<(), SendError>>,
    },
    Close(oneshot::Sender<()>),
}

/// A handle to a pairing client. Cheap to clone; the client goes passive (telling a partner
/// `inactive`) and closes when [`PairingClient::close`] is called or every handle is dropped.
#[derive(Clone)]
pub struct PairingClient {
    commands: mpsc::UnboundedSender<Command>,
    shared: Arc<Mutex<PairingSnapshot>>,
}

/// The stream of [`PairingUpdate`]s of one client.
pub struct PairingEvents {
    rx: mpsc::UnboundedReceiver<PairingUpdate>,
}

impl PairingEvents {
    /// The next update; `None` once the client is closed and every update was read.
    pub async fn recv(&mut self) -> Option<PairingUpdate> {
        self.rx.recv().await
    }
}

impl PairingClient {
    /// Starts the client's task (inside a tokio runtime) and returns at once; connection
    /// failures and refusals arrive as updates. An error only for settings that cannot work.
    pub fn start(
        config: PairingClientConfig,
    ) -> Result<(PairingClient, PairingEvents), PairingError> {
        Self::spawn(config, None)
    }

    /// Starts the client and waits for the first connection's outcome: `Ok` at its
    /// `cr_welcome`, [`PairingError::Refused`] at a `cr_aborted`, [`PairingError::Connect`]
    /// if it could not be made or ended before the welcome (nothing is retried then). A
    /// client that would not connect at the start (not [`PairingClientConfig::active`], or
    /// no token) returns at once, as [`PairingClient::start`].
    pub async fn connect(
        config: PairingClientConfig,
    ) -> Result<(PairingClient, PairingEvents), PairingError> {
        let (first_tx, first_rx) = oneshot::channel();
        let (client, events) = Self::spawn(config, Some(first_tx))?;
        match first_rx.await {
            Ok(Ok(())) => Ok((client, events)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(PairingError::Connect("pairing task ended".into())),
        }
    }

    fn spawn(
        config: PairingClientConfig,
        first: Option<oneshot::Sender<Result<(), PairingError>>>,
    ) -> Result<(PairingClient, PairingEvents), PairingError> {
        let endpoint = config.endpoint().map_err(PairingError::Config)?;
        if let Some(id) = &config.pairing.client_id {
            if !valid_client_id(id) {
                return Err(PairingError::Config(format!(
                    "client id `{id}`: expected 6 ASCII digits"
                )));
            }
        }
        if let Some(token) = &config.pairing.access_token {
            if !valid_access_token(token) {
                return Err(PairingError::Config(
                    "the access token must be 1 to 256 characters of ! to ~ (no spaces)".into(),
                ));
            }
        }
        let target = Target::new(&endpoint, &config.tls_roots).map_err(PairingError::Config)?;
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Mutex::new(PairingSnapshot::default()));
        let now = Instant::now();
        let driver = Driver {
            target,
            app: config.app.clone(),
            token: config.pairing.access_token.clone(),
            role: config.pairing.role,
            machine: CrSocket::new(config.pairing),
            active: config.active,
            driver_abort: None,
            ws: None,
            identified: false,
            aborted_socket: false,
            close: None,
            alive_interval: config.alive_interval,
            silence_timeout: config.silence_timeout,
            reconnect_delay: config.reconnect_delay,
            next_alive: None,
            last_heard: now,
            reconnect_at: None,
            events: ev_tx,
            shared: shared.clone(),
            first,
        };
        tokio::spawn(driver.run(cmd_rx));
        Ok((
            PairingClient {
                commands: cmd_tx,
                shared,
            },
            PairingEvents { rx: ev_rx },
        ))
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, PairingSnapshot> {
        self.shared.lock().expect("pairing snapshot")
    }

    /// Everything the client currently knows.
    pub fn snapshot(&self) -> PairingSnapshot {
        self.shared().clone()
    }

    /// The machine's state.
    pub fn state(&self) -> State {
        self.shared().state.unwrap_or(State::Passive)
    }

    /// The machine's metastates.
    pub fn metastates(&self) -> Metastates {
        self.state().metastates()
    }

    /// This client's id, once it has one.
    pub fn client_id(&self) -> Option<String> {
        self.shared().client_id.clone()
    }

    /// The assigned partner, if any.
    pub fn partner(&self) -> Option<String> {
        self.shared().partner.clone()
    }

    fn command(&self, command: Command) -> Result<(), PairingError> {
        self.commands
            .send(command)
            .map_err(|_| PairingError::Closed)
    }

    /// The application became active (visible, in use) or passive. Going passive sends
    /// `inactive` to a partner and closes the connection; going active connects again.
    pub fn set_active(&self, active: bool) -> Result<(), PairingError> {
        self.command(Command::SetActive(active))
    }

    /// Assigns the partner (`None` unassigns it): a controller's only way to get one. A
    /// controller pings it; a responder assigned one rejects other controllers.
    pub fn assign_partner(&self, partner: Option<&str>) -> Result<(), PairingError> {
        if let Some(id) = partner {
            if !valid_client_id(id) {
                return Err(PairingError::Invalid(format!(
                    "partner id `{id}`: expected 6 ASCII digits"
                )));
            }
        }
        self.command(Command::AssignPartner(partner.map(str::to_string)))
    }

    /// A new access token (or none: readyToConnect). A new token clears an abort: the
    /// client connects again with it.
    pub fn set_access_token(&self, token: Option<&str>) -> Result<(), PairingError> {
        if let Some(token) = token {
            if !valid_access_token(token) {
                return Err(PairingError::Invalid(
                    "the access token must be 1 to 256 characters of ! to ~ (no spaces)".into(),
                ));
            }
        }
        self.command(Command::SetAccessToken(token.map(str::to_string)))
    }

    /// After a [`PairingUpdate::Aborted`]: connect again.
    pub fn retry(&self) -> Result<(), PairingError> {
        self.command(Command::Retry)
    }

    /// Queues an application event for the partner: sent paced (one event per
    /// [`PairingConfig::pacing`]). Refused unless paired ([`SendError::NotPaired`]), for the
    /// pairing's own types, for a type or subtype that is not letters and digits or a
    /// parameter with `,`, and when the queue is full.
    pub async fn send_event(
        &self,
        event_type: &str,
        sub_type: &str,
        params: Vec<String>,
    ) -> Result<(), PairingError> {
        let (done, answer) = oneshot::channel();
        self.command(Command::Send {
            event_type: event_type.to_string(),
            sub_type: sub_type.to_string(),
            params,
            done,
        })?;
        match answer.await {
            Ok(result) => result.map_err(PairingError::Send),
            Err(_) => Err(PairingError::Closed),
        }
    }

    /// Goes passive (a partner gets `inactive`), closes the connection and ends the client;
    /// waits until it is closed. The update stream ends after the last updates.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Close(tx)).is_ok() {
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

/// The `cr_event` fields of the event being handled, for the [`ReceivedEvent`] it may become.
struct Arrival {
    buffered: bool,
    logged: bool,
    interceptable: bool,
    send_ct: Option<i64>,
    receive_ct: u64,
}

/// The task that owns the socket and the machine.
struct Driver {
    target: Target,
    /// The app's name, for messages.
    app: String,
    /// The token to identify with (the machine keeps its own copy, unreadable).
    token: Option<String>,
    role: PairingRole,
    machine: CrSocket,
    /// The application's activity, as last given (the machine does not expose it).
    active: bool,
    /// The last abort, kept here for an id-less client (whose passive machine ignores it);
    /// cleared as the machine clears its own.
    driver_abort: Option<AbortReason>,
    ws: Option<Ws>,
    /// The socket got its `cr_welcome`.
    identified: bool,
    /// The socket got a `cr_aborted` (its close is no disconnection).
    aborted_socket: bool,
    /// The close frame the server sent on this socket.
    close: Option<(u16, String)>,
    alive_interval: Duration,
    silence_timeout: Duration,
    reconnect_delay: Duration,
    next_alive: Option<Instant>,
    last_heard: Instant,
    reconnect_at: Option<Instant>,
    events: mpsc::UnboundedSender<PairingUpdate>,
    shared: Arc<Mutex<PairingSnapshot>>,
    first: Option<oneshot::Sender<Result<(), PairingError>>>,
}

impl Driver {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let now = Instant::now();
        if self.active {
            self.machine.set_active(now, true);
        }
        let mut handles_gone = false;
        let mut closing: Vec<oneshot::Sender<()>> = Vec::new();
        loop {
            self.settle().await;
            if !closing.is_empty() || handles_gone {
                break;
            }
            if let Some(first) = self.first.take() {
                if self.ws.is_none() && !self.wants_connection() {
                    // Nothing to wait for: `connect` of a client that does not connect.
                    let _ = first.send(Ok(()));
                } else {
                    self.first = Some(first);
                }
            }
            let deadline = self.deadline();
            tokio::select! {
                frame = next_frame(&mut self.ws) => self.on_frame(frame),
                command = commands.recv() => match command {
                    None => handles_gone = true,
                    Some(Command::Close(done)) => closing.push(done),
                    Some(command) => self.on_command(command),
                },
                _ = sleep_until(deadline) => self.on_timer().await,
            }
        }
        // Passive: the machine hands over `inactive` for a partner, sent before the close.
        self.active = false;
        self.machine.set_active(Instant::now(), false);
        self.flush().await;
        self.close_socket().await;
        self.publish();
        while let Ok(Command::Close(done)) = commands.try_recv() {
            closing.push(done);
        }
        for done in closing {
            let _ = done.send(());
        }
    }

    /// Whether a socket should be open now (see the module's notes on the client id).
    fn wants_connection(&self) -> bool {
        match self.machine.client_id() {
            Some(_) => matches!(
                self.machine.state(),
                State::Connecting | State::ReadyToPair | State::Searching | State::Interacting
            ),
            None => self.active && self.token.is_some() && self.driver_abort.is_none(),
        }
    }

    /// The next time something is due: the machine's timer, `cr_alive`, the silence limit,
    /// the next connection attempt.
    fn deadline(&self) -> Option<tokio::time::Instant> {
        let silence = self
            .ws
            .as_ref()
            .map(|_| self.last_heard + self.silence_timeout);
        let alive = self.next_alive.filter(|_| self.identified);
        let reconnect = self
            .reconnect_at
            .filter(|_| self.ws.is_none() && self.wants_connection());
        [self.machine.poll_timeout(), alive, silence, reconnect]
            .into_iter()
            .flatten()
            .min()
            .map(tokio::time::Instant::from_std)
    }

    /// Sends what the machine holds, tells the application what it says, and opens or closes
    /// the socket as the machine's state asks.
    async fn settle(&mut self) {
        self.flush().await;
        if self.ws.is_some() {
            // Identified, but the machine no longer counts itself connected (passive, a new
            // token, an abort): this socket is done.
            let stale = self.identified && !self.machine.metastates().connected;
            if !self.wants_connection() || stale || self.aborted_socket {
                self.close_socket().await;
            }
        }
        if self.ws.is_none() && self.wants_connection() {
            let due = self.reconnect_at.is_none_or(|at| at <= Instant::now());
            if due {
                self.open().await;
            }
        }
        self.publish();
    }

    async fn open(&mut self) {
        self.reconnect_at = None;
        match self.target.connect().await {
            Ok(mut ws) => {
                let identify = IdentifyFrame {
                    client_role: Some(self.role.as_str().to_string()),
                    client_id: match self.machine.client_id() {
                        Some(id) => IdentifyId::Given(id.to_string()),
                        None => IdentifyId::Assign,
                    },
                    access_token: self.token.clone(),
                };
                let text = encode_client(&PairingClientFrame::Identify(identify));
                // A failed send shows up as the stream ending.
                let _ = ws.send(Message::text(text)).await;
                self.ws = Some(ws);
                self.identified = false;
                self.aborted_socket = false;
                self.close = None;
                self.last_heard = Instant::now();
            }
            Err(mut reason) => {
                if reason.ends_with("status code 404") {
                    // P4: an unknown app is refused with 404 before the upgrade.
                    reason.push_str(&format!(
                        " (the server has no pairing app `{}`: it serves one given as \
                         `loudsync serve --app {}`)",
                        self.app, self.app
                    ));
                }
                self.reconnect_at = Some(Instant::now() + self.reconnect_delay);
                if let Some(first) = self.first.take() {
                    let _ = first.send(Err(PairingError::Connect(reason.clone())));
                }
                self.emit(PairingUpdate::ConnectFailed { reason });
            }
        }
    }

    async fn close_socket(&mut self) {
        if let Some(mut ws) = self.ws.take() {
            let _ = tokio::time::timeout(Duration::from_millis(200), ws.close()).await;
        }
        self.identified = false;
        self.next_alive = None;
    }

    /// The machine's outputs: events to send (on an identified socket; dropped otherwise, as
    /// an `inactive` after a drop) and updates for the application.
    async fn flush(&mut self) {
        self.drain_updates(None);
        while let Some(out) = self.machine.poll_transmit() {
            if !self.identified {
                tracing::debug!(event = %out.event_type, "no identified connection: event dropped");
                continue;
            }
            let text = encode_client(&event_frame(out));
            if let Some(ws) = self.ws.as_mut() {
                let _ = ws.send(Message::text(text)).await;
            }
        }
        self.drain_updates(None);
    }

    /// Tells the application what the machine says; `arrival` completes an application
    /// event the machine passed on from the frame just handled.
    fn drain_updates(&mut self, arrival: Option<&Arrival>) {
        while let Some(event) = self.machine.poll_event() {
            let update = match event {
                PairingEvent::StateChanged(s) => PairingUpdate::StateChanged(s),
                PairingEvent::MetastatesChanged(m) => PairingUpdate::MetastatesChanged(m),
                PairingEvent::PartnerChanged(p) => PairingUpdate::PartnerChanged(p),
                PairingEvent::Rejected { partner, sub_type } => {
                    PairingUpdate::Rejected { partner, sub_type }
                }
                PairingEvent::ClientIdChanged(id) => PairingUpdate::ClientIdChanged(id),
                PairingEvent::AppEvent(e) => PairingUpdate::AppEvent(received(e, arrival)),
            };
            self.emit(update);
        }
    }

    fn emit(&mut self, update: PairingUpdate) {
        // What the update says is in the snapshot before the update is read.
        self.publish();
        let _ = self.events.send(update);
    }

    fn publish(&self) {
        let mut shared = self.shared.lock().expect("pairing snapshot");
        shared.state = Some(self.machine.state());
        shared.client_id = self.machine.client_id().map(str::to_string);
        shared.partner = self.machine.partner().map(str::to_string);
        shared.rejected = self.machine.rejected().map(str::to_string);
        shared.aborted = self.driver_abort;
    }

    fn on_command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::SetActive(active) => {
                if self.active != active {
                    self.driver_abort = None;
                }
                self.active = active;
                self.machine.set_active(now, active);
            }
            Command::AssignPartner(partner) => self.machine.assign_partner(now, partner),
            Command::SetAccessToken(token) => {
                if self.token != token {
                    self.driver_abort = None;
                    self.token = token.clone();
                    self.reconnect_at = None;
                }
                self.machine.set_access_token(now, token);
            }
            Command::Retry => {
                self.driver_abort = None;
                self.reconnect_at = None;
                self.machine.retry(now);
            }
            Command::Send {
                event_type,
                sub_type,
                params,
                done,
            } => {
                let result = self
                    .machine
                    .send_app_event(now, &event_type, &sub_type, params);
                let _ = done.send(result);
            }
            Command::Close(_) => unreachable!("handled by the loop"),
        }
    }

    async fn on_timer(&mut self) {
        let now = Instant::now();
        if self.ws.is_some() && self.last_heard + self.silence_timeout <= now {
            let what = if self.identified {
                "nothing heard"
            } else {
                "no cr_welcome"
            };
            let reason = format!("{what} from the server for {:?}", self.silence_timeout);
            self.ws = None;
            self.lost(now, reason);
            return;
        }
        if self.machine.poll_timeout().is_some_and(|at| at <= now) {
            self.machine.handle_timeout(now);
        }
        if let Some(at) = self.next_alive.filter(|at| self.identified && *at <= now) {
            self.next_alive = Some(at.max(now - self.alive_interval) + self.alive_interval);
            if let Some(ws) = self.ws.as_mut() {
                let text = encode_client(&PairingClientFrame::Alive);
                let _ = ws.send(Message::text(text)).await;
            }
        }
    }

    fn on_frame(&mut self, frame: Option<Result<Message, tokio_websockets::Error>>) {
        let now = Instant::now();
        match frame {
            Some(Ok(m)) => {
                self.last_heard = now;
                if let Some(text) = m.as_text() {
                    self.on_text(now, text);
                } else if let Some((code, reason)) = m.as_close() {
                    self.close = Some((code.into(), reason.to_string()));
                }
            }
            Some(Err(e)) => {
                self.ws = None;
                self.lost(now, format!("connection failed: {e}"));
            }
            None => {
                self.ws = None;
                let reason = match self.close.take() {
                    Some((code, reason)) if reason.is_empty() => format!("closed ({code})"),
                    Some((code, reason)) => format!("closed ({code} {reason})"),
                    None => "connection closed".to_string(),
                };
                self.lost(now, reason);
            }
        }
    }

    /// The socket ended (already taken out): unless an abort ended it, the machine is
    /// disconnected and connects again after the delay.
    fn lost(&mut self, now: Instant, reason: String) {
        let identified = std::mem::take(&mut self.identified);
        self.next_alive = None;
        if std::mem::take(&mut self.aborted_socket) {
            return;
        }
        if let Some(first) = self.first.take() {
            let _ = first.send(Err(PairingError::Connect(format!(
                "the connection ended before cr_welcome: {reason}"
            ))));
        }
        self.reconnect_at = Some(now + self.reconnect_delay);
        if identified {
            self.machine.handle_disconnected(now);
        }
        self.emit(PairingUpdate::Disconnected { reason });
    }

    fn on_text(&mut self, now: Instant, text: &str) {
        let frame = match decode_server(text) {
            Ok((frame, _)) => frame,
            Err(e) => {
                match loudsync_protocol::server::decode_server(text) {
                    Ok((
                        Received::Error {
                            code,
                            message,
                            details,
                        },
                        _,
                    )) => self.emit(PairingUpdate::Error(ServerError {
                        code,
                        message,
                        details,
                    })),
                    _ => tracing::debug!(error = %e.message, "unreadable pairing frame ignored"),
                }
                return;
            }
        };
        match frame {
            PairingServerFrame::Welcome {
                app_id, client_id, ..
            } => {
                if self.identified || self.aborted_socket {
                    return;
                }
                self.identified = true;
                self.next_alive = Some(now + self.alive_interval);
                if self.machine.client_id().is_none() {
                    self.machine.set_client_id(now, Some(client_id.clone()));
                    self.drain_updates(None);
                }
                // The welcome first, then what it does to the machine (readyToPair, ...).
                self.emit(PairingUpdate::Welcome {
                    app_id,
                    client_id: client_id.clone(),
                });
                self.machine.handle_connected(now, &client_id);
                self.drain_updates(None);
                if let Some(first) = self.first.take() {
                    let _ = first.send(Ok(()));
                }
            }
            PairingServerFrame::Event { sender, event } => {
                if !self.identified {
                    return;
                }
                let arrival = Arrival {
                    buffered: event.buffered,
                    logged: event.logged,
                    interceptable: event.interceptable,
                    send_ct: event.send_ct,
                    receive_ct: unix_ms(),
                };
                self.machine.handle_event(
                    now,
                    IncomingEvent {
                        sender,
                        event_type: event.event_type,
                        sub_type: event.sub_type,
                        params: event.params,
                    },
                );
                self.drain_updates(Some(&arrival));
            }
            PairingServerFrame::Alive => {}
            PairingServerFrame::Aborted { reason } => {
                self.aborted_socket = true;
                self.identified = false;
                self.next_alive = None;
                self.driver_abort = Some(reason);
                self.machine.handle_aborted(now, reason.as_str());
                self.drain_updates(None);
                self.emit(PairingUpdate::Aborted { reason });
                if let Some(first) = self.first.take() {
                    let _ = first.send(Err(PairingError::Refused(reason)));
                }
            }
        }
    }
}

/// A machine event as a `cr_event` frame, `sendCt` now.
fn event_frame(out: OutgoingEvent) -> PairingClientFrame {
    let mut event = WireEvent::new(out.event_type);
    event.sub_type = out.sub_type;
    event.params = out.params;
    event.send_ct = i64::try_from(unix_ms()).ok();
    PairingClientFrame::Event {
        recipient: out.recipient,
        event,
    }
}

fn received(e: IncomingEvent, arrival: Option<&Arrival>) -> ReceivedEvent {
    let (buffered, logged, interceptable, send_ct, receive_ct) = match arrival {
        Some(a) => (
            a.buffered,
            a.logged,
            a.interceptable,
            a.send_ct,
            a.receive_ct,
        ),
        None => (false, false, true, None, unix_ms()),
    };
    ReceivedEvent {
        sender: e.sender,
        event_type: e.event_type,
        sub_type: e.sub_type,
        params: e.params,
        buffered,
        logged,
        interceptable,
        send_ct,
        receive_ct,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str, app: &str) -> PairingClientConfig {
        PairingClientConfig::new(url, app, PairingRole::Controller, "open")
    }

    #[test]
    fn the_endpoint_is_crsocket_app_ws_under_the_urls_path() {
        for (url, want) in [
            (
                "ws://127.0.0.1:8080/",
                "ws://127.0.0.1:8080/crsocket/alpha/ws",
            ),
            (
                "ws://127.0.0.1:8080",
                "ws://127.0.0.1:8080/crsocket/alpha/ws",
            ),
            (
                "ws://127.0.0.1:8080/ws",
                "ws://127.0.0.1:8080/crsocket/alpha/ws",
            ),
            (
                "wss://example.org/base/",
                "wss://example.org/base/crsocket/alpha/ws",
            ),
            ("ws://[::1]:9/", "ws://[::1]:9/crsocket/alpha/ws"),
        ] {
            assert_eq!(
                config(url, "alpha").endpoint().as_deref(),
                Ok(want),
                "{url}"
            );
        }
    }

    #[test]
    fn a_bad_url_or_app_name_is_a_config_error() {
        for url in ["http://x/", "127.0.0.1:8080", "", "ws:///"] {
            let err = config(url, "alpha").endpoint().unwrap_err();
            assert!(err.contains("is not a ws:// or wss:// URL"), "{url}: {err}");
        }
        for app in ["", "-x", "a/b", "a b", &"x".repeat(65)] {
            let err = config("ws://h/", app).endpoint().unwrap_err();
            assert!(err.contains("is not an app name"), "{app}: {err}");
        }
    }

    #[tokio::test]
    async fn bad_settings_are_refused_before_anything_is_sent() {
        let mut c = config("ws://127.0.0.1:9/", "alpha");
        c.pairing.client_id = Some("12345".into());
        assert!(
            matches!(PairingClient::start(c), Err(PairingError::Config(e)) if e.contains("client id"))
        );
        let c =
            PairingClientConfig::new("ws://127.0.0.1:9/", "alpha", PairingRole::Responder, "a b");
        assert!(
            matches!(PairingClient::start(c), Err(PairingError::Config(e)) if e.contains("token"))
        );
    }

    #[test]
    fn debug_hides_the_token() {
        let c = PairingClientConfig::new("ws://h/", "alpha", PairingRole::Responder, "s3cret");
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn an_outgoing_event_is_a_cr_event_with_send_ct() {
        let out = OutgoingEvent {
            recipient: "222222".into(),
            event_type: "tap".into(),
            sub_type: "left".into(),
            params: vec!["1".into()],
        };
        let before = unix_ms() as i64;
        let text = encode_client(&event_frame(out));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], "cr_event");
        assert_eq!(v["recipientClientId"], "222222");
        assert_eq!(v["eventType"], "tap");
        assert_eq!(v["eventSubType"], "left");
        assert_eq!(v["eventParams"], serde_json::json!(["1"]));
        assert!(v["sendCt"].as_i64().unwrap() >= before);
    }
}
