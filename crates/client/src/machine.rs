//! The client's rules as a sans-IO state machine: connection states, join, heartbeats and
//! pings, latency, the member table, silence detection, reconnection with its attempts, and
//! the resume layer (issue 10): the `token` handshake before a pipelined `join`, numbered
//! frames both ways with acks, and the resume of an unclean drop on a new socket. The resume
//! layer's bookkeeping (buffers, acks, pacing, which closes end a place) is in
//! [`crate::resume`]; this file holds the flow.
//!
//! Resume: on a resumable connection (the handshake done, `welcome` with `resumable: true`)
//! a drop that the frames before it did not announce (own `leave` or formal disconnect,
//! `kicked`, `session_closed`) and whose close code does not end the place (4000, 1009, 1002,
//! 1007) is resumed: attempts go on, the reconnection policy's delay apart, until the resume
//! window has passed since the drop. Meanwhile the member table, id and session stay, and
//! what the application sends is queued, a `leave` or formal disconnect too (sent after the
//! rest; if the resume is refused or the window passes, the client just ends). On `resumed`
//! the unacknowledged frames are sent again (original `seq`), then the queue, paced; the
//! replayed server frames are handled as usual, duplicates dropped by `seq`. A refused
//! resume ([`Event::ResumeFailed`]) is followed by a fresh handshake and `join` on the same
//! socket, except for `session_closed` or a leave given while away. A resuming host resumes
//! (its session is held for it), so the host rule below applies to plain connections only.
//!
//! What is retried: a lost connection (drop, silence, server restart), and on a rejoin the
//! transient refusals `already_joined` and `session_not_found`. What is not: `kicked`,
//! `session_closed`, any refusal of the first join, the access refusals (password, token,
//! host role, attempts) at any join, and a host's lost connection other than a server going
//! away (close 1001): the server ends a session when its host's connection ends, so a
//! reconnecting host would silently open a new, empty session under the same id; the machine
//! reports [`Event::SessionClosed`] instead.
//!
//! The driver ([`crate::Client`]) owns the socket and the clock; this machine owns every
//! decision. It takes inputs through `handle_*` methods with the current time and tells the
//! driver what to do through [`Machine::poll_action`] and [`Machine::poll_timeout`].

use std::collections::VecDeque;
use std::time::Instant;

use loudsync_protocol::client::{merge_tokens, TOKEN_LEN};
use loudsync_protocol::types::MediaRole;
use loudsync_protocol::{
    close_code, decode_server_numbered, encode_client, server::SessionInfo, AnyErrorCode,
    ClientMessage, DeviceType, ErrorCode, HandoffFailure, HostChange, Join, LeaveReason,
    MemberInfo, RawJson, Received, ResumeFailure, ServerMessage, StateChange,
};
use serde_json::{Map, Value};

use crate::config::ClientConfig;
use crate::handoff::{Control, HandoffOffer, PendingHandoff, Role};
use crate::resume::{self, Arrival, Inbox, LinkState, Outbox, Pacer};

/// The connection states, as the protocol document names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    /// No active connection.
    Disconnected,
    /// The first connection attempt is in progress.
    Connecting,
    /// Connected and joined.
    Connected,
    /// The connection was lost; attempting to reconnect.
    Reconnecting,
    /// All reconnection attempts are exhausted.
    Failed,
}

impl ConnectionState {
    /// The document's lowercase name (`"connected"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Disconnected => "disconnected",
            ConnectionState::Connecting => "connecting",
            ConnectionState::Connected => "connected",
            ConnectionState::Reconnecting => "reconnecting",
            ConnectionState::Failed => "failed",
        }
    }
}

/// An `error` from the server.
///
/// Forward compatible: `code` is an [`AnyErrorCode`], so an error whose code this version
/// does not know (a newer server's, say `quota_exceeded`) still reaches the application, as
/// [`AnyErrorCode::Unknown`] with the server's string. Known codes compare directly:
/// `error.code == ErrorCode::SessionFull`, or `error.code.known()` to match on them.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ServerError {
    /// The machine-readable code, known to this version or not.
    pub code: AnyErrorCode,
    /// The server's explanation.
    pub message: String,
    /// Extra information (e.g. `{maxMembers, currentMembers}` for `session_full`).
    pub details: Option<Value>,
}

impl ServerError {
    /// Whether the server refused access: `password_required`, `wrong_password`,
    /// `token_required`, `invalid_token`, `host_not_allowed` or `too_many_attempts`. These
    /// are never retried: the same credentials would be refused again.
    pub fn is_access_refusal(&self) -> bool {
        matches!(
            self.code.known(),
            Some(
                ErrorCode::PasswordRequired
                    | ErrorCode::WrongPassword
                    | ErrorCode::TokenRequired
                    | ErrorCode::InvalidToken
                    | ErrorCode::HostNotAllowed
                    | ErrorCode::TooManyAttempts
            )
        )
    }
}

/// A media token the server granted (the `media_token` reply, issue 13 R2): what this member
/// needs to publish to (the host) or subscribe from (everyone else) the session's UDP relay.
///
/// The token is a credential: [`Debug`] output shows `<redacted>` in its place.
#[derive(Clone, PartialEq, Eq)]
pub struct MediaGrant {
    /// 43 base64url characters: what START's MEDIA_TOKEN TLV carries
    /// ([`MediaGrant::media_token`]).
    pub token: String,
    /// `Publish` for the session's host, `Subscribe` for every other member (R3).
    pub role: MediaRole,
    /// The STREAM_ID to ask for in START: the session id (R6, [`MediaGrant::stream`]).
    pub stream_id: String,
    /// The relay's UDP port, on the server's host ([`crate::Client::relay_address`]).
    pub port: u16,
    /// Until when a first START may claim the token, ms since the Unix epoch (once claimed,
    /// the tuple lasts as long as the member's place in the session).
    pub expires_at: u64,
}

impl MediaGrant {
    /// The token as START's MEDIA_TOKEN TLV value; `None` if the server sent one that cannot
    /// be carried (empty or over 128 bytes).
    pub fn media_token(&self) -> Option<loudsync_protocol::media::MediaToken> {
        loudsync_protocol::media::MediaToken::new(self.token.as_bytes())
    }

    /// The stream id as START's STREAM_ID TLV value; `None` if the server sent one that
    /// breaks D7 (1 to 64 bytes of `0x21..0x7E`).
    pub fn stream(&self) -> Option<loudsync_protocol::media::StreamId> {
        loudsync_protocol::media::StreamId::new(self.stream_id.clone())
    }
}

impl std::fmt::Debug for MediaGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaGrant")
            .field("token", &"<redacted>")
            .field("role", &self.role)
            .field("stream_id", &self.stream_id)
            .field("port", &self.port)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Something the application should know.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The connection state changed.
    StateChanged(ConnectionState),
    /// The resume link's state changed (seed 003's states, beside the connection state).
    LinkChanged(LinkState),
    /// Joined (again, after a reconnection that was not a resume: the server assigns a new id
    /// each time). A resume keeps the id and sends [`Event::Resumed`] instead.
    Welcome {
        /// This member's id in the session.
        client_id: String,
        /// The session.
        session: SessionInfo,
    },
    /// The full member list (host first, then join order).
    MemberList(Vec<MemberInfo>),
    /// The reply to [`Machine::request_media_token`]: a token for the session's UDP media
    /// relay. A server without one answers `error` `media_unavailable` instead
    /// ([`Event::Error`], [`ErrorCode::MediaUnavailable`]).
    MediaToken(MediaGrant),
    /// A member joined.
    MemberJoined(MemberInfo),
    /// A member's entry changed (on resumable sessions: its `connectionStatus` went to
    /// `reconnecting` when its socket dropped, or back to `connected` when it resumed); the
    /// member table has it already.
    MemberUpdated(MemberInfo),
    /// A member left.
    MemberLeft {
        /// Its id.
        member_id: String,
        /// Why.
        reason: LeaveReason,
    },
    /// The host removed this member; the connection ends without reconnecting.
    Kicked {
        /// The host's reason.
        reason: String,
    },
    /// The session ended; the connection ends without reconnecting. Also what a host is told
    /// when its own connection was lost (its session ended on the server with it), with a
    /// reason that says so.
    SessionClosed {
        /// The server's reason.
        reason: String,
    },
    /// The server reported an error.
    Error(ServerError),
    /// A new round-trip time, measured from this client's own `ping`.
    Latency {
        /// Milliseconds.
        ms: u64,
    },
    /// Application data from another member.
    Message {
        /// The sender's id.
        from: String,
        /// The data.
        data: Value,
    },
    /// A message whose `type` this version does not know (a newer server's, say
    /// `presence_diff`), handed over rather than dropped; the client's own state is unchanged.
    /// Delivered while joining or joined.
    Unknown {
        /// Its `type`, as the server wrote it.
        kind: String,
        /// The whole frame, exactly as received.
        raw: RawJson,
    },
    /// The connection was lost; a reconnection follows (or `Failed`, if no attempts are left).
    ConnectionLost {
        /// What happened.
        reason: String,
    },
    /// A reconnection attempt is starting.
    Reconnecting {
        /// 1-based attempt number.
        attempt: u32,
        /// Attempts allowed.
        of: u32,
    },
    /// Reconnection gave up; the state is `failed`.
    Failed {
        /// Why the last attempt failed.
        reason: String,
    },
    /// An attempt to resume is starting (a resumable connection dropped; the server holds
    /// this client's place). Attempts go on until the resume window has passed since the
    /// drop.
    Resuming {
        /// 1-based attempt number.
        attempt: u32,
        /// What is left of the resume window.
        window_left: std::time::Duration,
    },
    /// The connection was resumed: same id, same numbering, nothing lost or doubled. The
    /// `replayed` server messages sent while away follow as their usual events; what this
    /// client sent unacknowledged, then what it queued, goes out again.
    Resumed {
        /// How many server messages the server replays.
        replayed: u64,
    },
    /// The server refused the resume. If `rejoining`, a fresh handshake and `join` follow on
    /// the same socket (a new id: [`Event::Welcome`] when in, or the usual join failure
    /// events); otherwise (`session_closed`: the session ended while away)
    /// [`Event::SessionClosed`] follows and the client ends. After a leave given while away
    /// there is no fresh join either, whatever the reason: the client ends (`Disconnected`).
    ResumeFailed {
        /// Why.
        reason: ResumeFailure,
        /// Messages this client sent before the drop that the server never acknowledged:
        /// they may or may not have reached the others, and are not sent again. Messages
        /// queued while away (never sent) are sent after the fresh join.
        unconfirmed: usize,
        /// Whether a fresh join follows.
        rejoining: bool,
    },
    /// This client's [`Role`] changed (see [`crate::handoff`] for the transitions).
    RoleChanged(Role),
    /// The session state: a `state` frame (every member gets one per accepted change, the
    /// host its own as confirmation), or the state `welcome` carried. Frames of a term
    /// below the highest seen are dropped, never shown (decision 21).
    SessionState {
        /// The whole document (a JSON object).
        state: Value,
        /// Its version (+1 per accepted change).
        version: u64,
        /// The term it was set in.
        term: u64,
        /// The host that set it; `None` for the state `welcome` carried.
        updated_by: Option<String>,
    },
    /// The host changed (`host_changed`, to every member, the old and new host included):
    /// the member table, [`Machine::host_id`] and [`Machine::term`] already say so.
    HostChanged {
        /// The new host.
        host_id: String,
        /// The host before it.
        previous_host_id: String,
        /// The new term.
        term: u64,
        /// A handoff, or the loss of the host.
        reason: HostChange,
    },
    /// To a candidate: the host asks this member to take control, with the state. Answer
    /// with `accept_handoff` or `decline_handoff`; [`Machine::pending_handoff`] holds it.
    HandoffRequested {
        /// Answer with this id.
        handoff_id: String,
        /// The host asking.
        from_id: String,
        /// The session state it would take over.
        state: Value,
        /// Its version.
        version: u64,
        /// The current term.
        term: u64,
        /// How long the request waits for an answer, in ms.
        timeout_ms: u64,
    },
    /// To the host: its request went to this candidate (the server's choice, or the named
    /// member).
    HandoffStarted {
        /// The request's id.
        handoff_id: String,
        /// The candidate.
        target_id: String,
    },
    /// To the old host: the candidate accepted; control passed (`host_changed` follows).
    HandoffAcknowledged {
        /// The request's id.
        handoff_id: String,
        /// The new host.
        host_id: String,
        /// The new term.
        term: u64,
    },
    /// To the host (or the candidate): a handoff did not happen; host and term are
    /// unchanged.
    HandoffFailed {
        /// Why.
        reason: HandoffFailure,
        /// The request's id (absent for `no_candidate` and `busy`).
        handoff_id: Option<String>,
        /// The candidate (to the host, when there was one).
        target_id: Option<String>,
    },
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Open a new socket and report [`Machine::handle_connected`] or
    /// [`Machine::handle_connect_failed`].
    Connect,
    /// Send this text frame.
    Send(String),
    /// Close the socket (a lost connection the machine detected itself, or the end).
    CloseSocket,
    /// Deliver this event to the application.
    Emit(Event),
}

/// Why a command could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The client is not connected (connecting, reconnecting without resume, failed or
    /// ended).
    #[error("not connected")]
    NotConnected,
    /// On a resumable connection: [`ClientConfig::queue_limit`] frames are waiting already
    /// (unacknowledged, or queued while disconnected).
    #[error("send queue full")]
    QueueFull,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not started.
    Idle,
    /// A socket is being opened; `attempt` 0 is the first connect.
    Connecting { attempt: u32 },
    /// Handshake step 1 sent, waiting for the server's token.
    Handshake { attempt: u32, deadline: Instant },
    /// `join` sent (after handshake step 3, on a resumable connection), waiting for `welcome`.
    Joining { attempt: u32, deadline: Instant },
    /// The resume frame sent, waiting for `resumed` or `resume_failed`.
    Resuming { attempt: u32, deadline: Instant },
    /// Joined.
    Connected,
    /// Waiting before reconnection attempt `attempt`.
    Waiting { attempt: u32, at: Instant },
    /// Over: left, kicked, session closed, rejected, or failed.
    Ended,
}

/// How the current socket is expected to end.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ending {
    /// Not ending: a close is a lost connection.
    None,
    /// This client sent `leave` or its formal disconnect.
    Leaving,
    /// `kicked` arrived.
    Kicked(String),
    /// `session_closed` arrived; final unless the server closes with 1001 (going away).
    SessionClosed(String),
}

/// A leave the application asked for while the place was being resumed: sent once resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Farewell {
    /// [`Machine::leave`]: `leave`, numbered, right after the resend.
    Leave,
    /// [`Machine::disconnect`]: the formal disconnect, once the resend went out.
    Disconnect,
}

/// The client state machine.
#[derive(Debug)]
pub struct Machine {
    config: ClientConfig,
    phase: Phase,
    state: ConnectionState,
    ending: Ending,
    client_id: Option<String>,
    session: Option<SessionInfo>,
    members: Vec<MemberInfo>,
    latency: Option<u64>,
    last_heard: Instant,
    next_beat: Instant,
    /// The reason the connection was last lost, for `Failed`.
    lost_reason: String,
    rng: fastrand::Rng,
    /// Bumped whenever what [`Machine::snapshot`] shows changes.
    generation: u64,
    actions: VecDeque<Action>,
    /// Unix ms at `epoch` (to stamp messages without a wall clock).
    epoch: (Instant, u64),
    /// The resume link's state.
    link: LinkState,
    /// This handshake's local token and, once it arrived, the server's.
    local_token: Option<String>,
    remote_token: Option<String>,
    /// The connection token, from handshake step 4 until the place is given up.
    token: Option<String>,
    /// Whether the current (or held) connection was welcomed as resumable.
    resumable: bool,
    /// While the server holds this client's place after a drop: until when to try resuming.
    resume_until: Option<Instant>,
    /// Numbered frames sent and unacknowledged, or queued.
    outbox: Outbox,
    /// Numbered server frames received, and the ack due.
    inbox: Inbox,
    /// Paces numbered sends under the server's rate limit.
    pacer: Pacer,
    /// A formal disconnect is waiting for the queue to go out.
    disconnect_pending: bool,
    /// A leave (or formal disconnect) given while resuming, to send once resumed.
    farewell: Option<Farewell>,
    /// The handoff layer: host, term, state, readiness, the pending handoff.
    control: Control,
    /// The role last announced with [`Event::RoleChanged`].
    shown_role: Role,
}

impl Machine {
    /// A machine for `config`; `now` and `unix_ms` anchor its clock.
    pub fn new(config: ClientConfig, now: Instant, unix_ms: u64) -> Self {
        let pacer = Pacer::new(config.send_rate, config.send_burst, now);
        Machine {
            rng: fastrand::Rng::with_seed(config.jitter_seed),
            config,
            phase: Phase::Idle,
            state: ConnectionState::Disconnected,
            ending: Ending::None,
            client_id: None,
            session: None,
            members: Vec::new(),
            latency: None,
            last_heard: now,
            next_beat: now,
            lost_reason: String::new(),
            generation: 0,
            actions: VecDeque::new(),
            epoch: (now, unix_ms),
            link: LinkState::Disconnected,
            local_token: None,
            remote_token: None,
            token: None,
            resumable: false,
            resume_until: None,
            outbox: Outbox::default(),
            inbox: Inbox::default(),
            pacer,
            disconnect_pending: false,
            farewell: None,
            control: Control::default(),
            shown_role: Role::Idle,
        }
    }

    /// Whether the connection is over for good (left, kicked, closed, rejected or failed).
    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// The current connection state.
    pub fn state(&self) -> ConnectionState {
        self.state
    }

    /// The resume link's state.
    pub fn link_state(&self) -> LinkState {
        self.link
    }

    /// Whether the current connection is resumable (welcomed with `resumable: true`, or held
    /// by the server while this client resumes).
    pub fn is_resumable(&self) -> bool {
        self.resumable
    }

    /// Whether a command given now would be taken: connected, or (with resume on)
    /// reconnecting with room in the queue.
    pub fn accepts_commands(&self) -> bool {
        if self.ending != Ending::None || self.farewell.is_some() {
            return false;
        }
        match self.phase {
            Phase::Connected if !self.resumable => true,
            Phase::Connected => self.outbox.len() < self.config.queue_limit,
            _ if self.queues() => self.outbox.len() < self.config.queue_limit,
            _ => false,
        }
    }

    /// Whether commands are refused only because [`ClientConfig::queue_limit`] frames are
    /// waiting (resumable, or reconnecting with resume on).
    pub fn queue_full(&self) -> bool {
        self.ending == Ending::None
            && self.farewell.is_none()
            && ((self.phase == Phase::Connected && self.resumable) || self.queues())
            && self.outbox.len() >= self.config.queue_limit
    }

    /// This member's id, while joined.
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    /// The session, while joined.
    pub fn session(&self) -> Option<&SessionInfo> {
        self.session.as_ref()
    }

    /// The member table: host first, then join order.
    pub fn members(&self) -> &[MemberInfo] {
        &self.members
    }

    /// The last round-trip time this client measured, in ms.
    pub fn latency(&self) -> Option<u64> {
        self.latency
    }

    /// A counter that changes whenever state, ids, members or latency change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// This client's role (see [`crate::handoff`]).
    pub fn role(&self) -> Role {
        match self.phase {
            Phase::Idle => Role::Idle,
            Phase::Ended => Role::Disconnected,
            // Joined, or resuming a place the server holds: the role it had.
            _ if self.phase == Phase::Connected || self.resuming_place() => {
                if self.control.ready && !self.is_host() {
                    Role::HandoffReady
                } else {
                    Role::Assigned
                }
            }
            _ => Role::Connecting,
        }
    }

    /// Whether this client is the session's host now (it may have become host by a handoff,
    /// or stopped being one), as far as it knows; `false` while not joined.
    pub fn is_host(&self) -> bool {
        self.client_id.is_some() && self.control.is_host(self.client_id.as_deref())
    }

    /// The current host's id, while joined (`None` in a session created over HTTP that no
    /// host joined yet).
    pub fn host_id(&self) -> Option<&str> {
        self.client_id.as_ref().and(self.control.host_id.as_deref())
    }

    /// The highest term seen (1 at a session's creation, +1 per change of host); 0 before
    /// the first `welcome` or with a server without session state.
    pub fn term(&self) -> u64 {
        self.control.term
    }

    /// The session state (a JSON object; `{}` until known) and its version.
    pub fn session_state(&self) -> (&Value, u64) {
        (&self.control.state, self.control.version)
    }

    /// The handoff this client is part of: its own request as host, or the prompt it was
    /// sent as a candidate.
    pub fn pending_handoff(&self) -> Option<&PendingHandoff> {
        self.control.pending.as_ref()
    }

    /// Whether this client declared itself ready to take control (and is not the host).
    pub fn is_ready(&self) -> bool {
        self.control.ready && !self.is_host()
    }

    /// The session's id: as the last `welcome` gave it (for a session this host opened
    /// without one, [`ClientConfig::new_session`], the code the server assigned), else the
    /// configured one (`None` for a new session before its `welcome`). Reconnections rejoin
    /// this id.
    pub fn session_id(&self) -> Option<&str> {
        self.control
            .assigned_session
            .as_deref()
            .or((!self.config.session_id.is_empty()).then_some(self.config.session_id.as_str()))
    }

    /// The next thing to do. Once nothing else is left, a change of [`Machine::role`] since
    /// it was last announced is announced ([`Event::RoleChanged`]).
    pub fn poll_action(&mut self) -> Option<Action> {
        if self.actions.is_empty() {
            self.sync_role();
        }
        self.actions.pop_front()
    }

    /// When [`Machine::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Connected => {
                let mut at = self
                    .next_beat
                    .min(self.last_heard + self.config.silence_timeout);
                if self.resumable {
                    if let Some(ack) = self.inbox.deadline() {
                        at = at.min(ack);
                    }
                    if self.outbox.has_unsent() {
                        at = at.min(self.pacer.ready_at());
                    }
                }
                Some(at)
            }
            Phase::Handshake { deadline, .. }
            | Phase::Joining { deadline, .. }
            | Phase::Resuming { deadline, .. } => Some(deadline),
            Phase::Waiting { at, .. } => Some(at),
            Phase::Idle | Phase::Connecting { .. } | Phase::Ended => None,
        }
    }

    /// Starts the first connection.
    pub fn start(&mut self, _now: Instant) {
        if self.phase != Phase::Idle {
            return;
        }
        self.phase = Phase::Connecting { attempt: 0 };
        self.set_connection(ConnectionState::Connecting);
        self.actions.push_back(Action::Connect);
    }

    /// The socket is open: resume (the server holds this client's place), start the
    /// handshake (resume on), or send `join`.
    pub fn handle_connected(&mut self, now: Instant) {
        let Phase::Connecting { attempt } = self.phase else {
            return;
        };
        self.ending = Ending::None;
        self.last_heard = now;
        self.pacer.refill(now);
        let deadline = now + self.config.join_timeout;
        match (self.resume_until, self.token.clone()) {
            (Some(_), Some(token)) => {
                self.phase = Phase::Resuming { attempt, deadline };
                let resume = ClientMessage::Token {
                    token,
                    last_seq: Some(self.inbox.last()),
                };
                let frame = self.frame(now, &resume);
                self.inbox.resume_sent();
                self.actions.push_back(Action::Send(frame));
            }
            _ if self.config.resume => self.start_handshake(now, attempt, deadline),
            _ => {
                self.phase = Phase::Joining { attempt, deadline };
                self.send_join(now);
            }
        }
    }

    /// Handshake step 1 on the current socket, with a fresh local token.
    fn start_handshake(&mut self, now: Instant, attempt: u32, deadline: Instant) {
        let local = resume::local_token();
        let step1 = ClientMessage::Token {
            token: local.clone(),
            last_seq: None,
        };
        let frame = self.frame(now, &step1);
        self.local_token = Some(local);
        self.remote_token = None;
        self.token = None;
        self.resumable = false;
        self.phase = Phase::Handshake { attempt, deadline };
        self.set_link(LinkState::Open);
        self.actions.push_back(Action::Send(frame));
    }

    fn send_join(&mut self, now: Instant) {
        let mut device_info = self.config.device.clone();
        if self.control.yielded && device_info.kind == DeviceType::Host {
            // This host handed control over: it comes back as a member (another host holds
            // the session; asking for the role would be refused, decision 24).
            device_info.kind = DeviceType::Client;
        }
        let join = ClientMessage::Join(Join {
            session_id: self.session_id().map(str::to_string),
            device_info,
            session_name: self.config.session_name.clone(),
            protocol_version: Some(loudsync_protocol::PROTOCOL_VERSION.to_string()),
            password: self
                .config
                .password
                .as_ref()
                .map(|p| p.expose().to_string()),
            token: self.config.token.as_ref().map(|t| t.expose().to_string()),
        });
        let frame = self.frame(now, &join);
        self.actions.push_back(Action::Send(frame));
    }

    /// The socket could not be opened.
    pub fn handle_connect_failed(&mut self, now: Instant, reason: &str) {
        let Phase::Connecting { attempt } = self.phase else {
            return;
        };
        self.attempt_failed(now, attempt, format!("could not connect: {reason}"));
    }

    /// A frame arrived (control frames included): the server is alive.
    pub fn handle_activity(&mut self, now: Instant) {
        self.last_heard = now;
    }

    /// A text frame arrived.
    pub fn handle_text(&mut self, now: Instant, text: &str) {
        self.last_heard = now;
        let (received, timestamp, seq) = match decode_server_numbered(text) {
            Ok(decoded) => decoded,
            Err(error) => {
                // Not a message, or a known type with broken fields: nothing to act on.
                tracing::debug!(%error, bytes = text.len(), "undecodable server frame ignored");
                return;
            }
        };
        let numbered = self.phase == Phase::Connected && self.resumable;
        if let (true, Some(seq)) = (numbered, seq) {
            if self.inbox.arrive(seq, now, self.config.ack_interval) == Arrival::Duplicate {
                tracing::debug!(seq, "duplicate server frame dropped");
                return;
            }
        }
        match (self.phase, received) {
            (
                Phase::Handshake { attempt, deadline },
                Received::Known(ServerMessage::Token { token }),
            ) if token.len() == TOKEN_LEN && loudsync_protocol::client::valid_token(&token) => {
                // Step 2 arrived: confirm (step 3) and pipeline the join behind it.
                let step3 = ClientMessage::Token {
                    token: self.local_token.clone().unwrap_or_default(),
                    last_seq: None,
                };
                let frame = self.frame(now, &step3);
                self.actions.push_back(Action::Send(frame));
                self.remote_token = Some(token);
                self.set_link(LinkState::PreConnected);
                self.phase = Phase::Joining { attempt, deadline };
                self.send_join(now);
            }
            (Phase::Handshake { attempt, deadline }, Received::Error { code, .. }) => {
                // A server without the handshake (or refusing it): join plainly, on this
                // socket, as the landed layer does.
                tracing::debug!(%code, "handshake refused; joining without resume");
                self.local_token = None;
                self.set_link(LinkState::Disconnected);
                self.phase = Phase::Joining { attempt, deadline };
                self.send_join(now);
            }
            (Phase::Joining { .. }, Received::Known(ServerMessage::Token { token }))
                if self.remote_token.as_deref() == Some(token.as_str()) =>
            {
                // Step 4: the server confirms; both sides hold the connection token.
                if let Some(local) = &self.local_token {
                    self.token = Some(merge_tokens(local, &token));
                    self.set_link(LinkState::Connected);
                }
            }
            (Phase::Resuming { .. }, Received::Known(ServerMessage::Token { token }))
                if self.token.as_deref() == Some(token.as_str()) =>
            {
                // The server's confirmation of the resume (seed 003 step 15).
                self.set_link(LinkState::Connected);
            }
            (
                Phase::Resuming { .. },
                Received::Known(ServerMessage::Resumed { last_seq, replayed }),
            ) => self.resumed(now, last_seq, replayed),
            (Phase::Resuming { .. }, Received::Known(ServerMessage::ResumeFailed { reason })) => {
                self.resume_refused(now, reason)
            }
            (
                Phase::Resuming { attempt, .. },
                Received::Error {
                    code,
                    message,
                    details,
                },
            ) => {
                // The resume frame itself was refused (the place stays held): a failed
                // attempt, retried within the window.
                let error = ServerError {
                    code,
                    message,
                    details,
                };
                self.actions.push_back(Action::CloseSocket);
                self.attempt_failed(now, attempt, format!("resume refused: {error}"));
            }
            (Phase::Joining { .. } | Phase::Connected, Received::Unknown { kind, raw }) => {
                self.emit(Event::Unknown { kind, raw });
            }
            (
                Phase::Joining { .. },
                Received::Known(ServerMessage::Welcome {
                    client_id,
                    session_info,
                    resumable,
                    state,
                    ..
                }),
            ) => {
                self.phase = Phase::Connected;
                self.welcomed(now, resumable);
                self.next_beat = now;
                let redeclare = self.control.welcomed(
                    &client_id,
                    &session_info.id,
                    session_info.host_id.as_deref(),
                    state.as_deref(),
                );
                self.client_id = Some(client_id.clone());
                self.session = Some((*session_info).clone());
                self.members.clear();
                self.bump();
                self.set_connection(ConnectionState::Connected);
                self.emit(Event::Welcome {
                    client_id,
                    session: *session_info,
                });
                if state.is_some() {
                    self.emit(Event::SessionState {
                        state: self.control.state.clone(),
                        version: self.control.version,
                        term: self.control.term,
                        updated_by: None,
                    });
                }
                if redeclare {
                    // Behind whatever was queued while away, like any command.
                    let ready = self.frame(now, &ClientMessage::HandoffReady { ready: true });
                    self.outbox.push(ready);
                }
                self.flush(now);
            }
            (
                Phase::Joining { attempt, .. },
                Received::Error {
                    code,
                    message,
                    details,
                },
            ) => {
                // Any error before `welcome` refuses the join, a code this version does not
                // know included (not retried: only a known transient code is; never an
                // access refusal, see `ServerError::is_access_refusal`).
                let retryable = matches!(
                    code.known(),
                    Some(ErrorCode::AlreadyJoined | ErrorCode::SessionNotFound)
                );
                let error = ServerError {
                    code,
                    message,
                    details,
                };
                self.actions.push_back(Action::CloseSocket);
                if attempt > 0 && retryable {
                    self.attempt_failed(now, attempt, format!("rejoin refused: {error}"));
                } else {
                    self.emit(Event::Error(error.clone()));
                    if attempt > 0 {
                        self.fail(format!("rejoin refused: {error}"));
                    } else {
                        self.end();
                    }
                }
            }
            (Phase::Connected, Received::Known(message)) => {
                self.handle_session_message(now, message, timestamp)
            }
            (
                Phase::Connected,
                Received::Error {
                    code,
                    message,
                    details,
                },
            ) => {
                let mut shown = true;
                if self.resumable {
                    if let Some(last) = resume::last_seq_of(&details) {
                        // A gap (or a frame the rate limit dropped): everything after `last`
                        // again. The gap's `invalid_message` is this layer's business; a
                        // `rate_limited` is still shown, as on plain connections.
                        self.outbox.rewind(last);
                        self.pump(now);
                        shown = code.known() == Some(ErrorCode::RateLimited);
                    }
                }
                if shown {
                    self.emit(Event::Error(ServerError {
                        code,
                        message,
                        details,
                    }));
                }
            }
            _ => {}
        }
        if self.phase == Phase::Connected && self.resumable {
            self.send_ack_if_due(now);
        }
    }

    /// `welcome` arrived: numbering starts if the server made the connection resumable;
    /// otherwise the handshake (if any) is forgotten and this is a plain connection.
    fn welcomed(&mut self, _now: Instant, resumable: bool) {
        if resumable && self.token.is_none() {
            // The step-4 token should have come first; derive the token anyway.
            if let (Some(local), Some(remote)) = (&self.local_token, &self.remote_token) {
                self.token = Some(merge_tokens(local, remote));
            }
        }
        self.resumable = resumable && self.token.is_some();
        self.local_token = None;
        self.remote_token = None;
        self.inbox.reset();
        if self.resumable {
            self.outbox.start();
            self.set_link(LinkState::Connected);
        } else {
            self.token = None;
            self.set_link(LinkState::Disconnected);
        }
    }

    /// Sends what waited for the connection: numbered and paced on a resumable one, plain
    /// in order otherwise.
    fn flush(&mut self, now: Instant) {
        if self.resumable {
            self.pump(now);
        } else {
            for plain in self.outbox.take_waiting() {
                self.actions.push_back(Action::Send(plain));
            }
        }
    }

    /// Puts numbered frames on the socket as the pacer allows; then a pending formal
    /// disconnect.
    fn pump(&mut self, now: Instant) {
        if self.phase != Phase::Connected || !self.resumable {
            return;
        }
        while self.outbox.has_unsent() && self.pacer.take(now) {
            if let Some(frame) = self.outbox.next_frame() {
                self.actions.push_back(Action::Send(frame));
            }
        }
        if self.disconnect_pending && !self.outbox.has_unsent() {
            self.disconnect_pending = false;
            if let Some(token) = self.token.clone() {
                let frame = self.frame(
                    now,
                    &ClientMessage::Token {
                        token,
                        last_seq: None,
                    },
                );
                self.actions.push_back(Action::Send(frame));
            }
            self.set_link(LinkState::Disconnected);
        }
    }

    fn send_ack_if_due(&mut self, now: Instant) {
        if let Some(seq) = self.inbox.ack_due(now, self.config.ack_every) {
            let frame = self.frame(now, &ClientMessage::Ack { seq });
            self.actions.push_back(Action::Send(frame));
        }
    }

    /// `resumed`: the same place, on this socket.
    fn resumed(&mut self, now: Instant, last_seq: u64, replayed: u64) {
        self.phase = Phase::Connected;
        self.resume_until = None;
        self.next_beat = now;
        self.outbox.resumed(last_seq);
        self.set_link(LinkState::Connected);
        self.set_connection(ConnectionState::Connected);
        self.emit(Event::Resumed { replayed });
        // A leave given while away goes out right behind the resend (and what was queued
        // before it); the server then closes with 1000 `left`.
        match self.farewell.take() {
            Some(Farewell::Leave) => {
                self.ending = Ending::Leaving;
                let leave = self.frame(now, &ClientMessage::leave(None));
                self.outbox.push(leave);
            }
            Some(Farewell::Disconnect) => {
                self.ending = Ending::Leaving;
                self.disconnect_pending = true;
            }
            None => {}
        }
        self.pump(now);
    }

    /// `resume_failed`: the place is gone. A fresh handshake and join on this socket follow,
    /// unless the session itself ended or the application asked to leave meanwhile.
    fn resume_refused(&mut self, now: Instant, reason: ResumeFailure) {
        let leaving = self.farewell.is_some();
        let unconfirmed = self.forget_place();
        self.clear_session();
        let rejoining = reason != ResumeFailure::SessionClosed && !leaving;
        self.emit(Event::ResumeFailed {
            reason,
            unconfirmed,
            rejoining,
        });
        if rejoining {
            // The first attempt of a fresh join (the reconnection policy's attempts apply).
            self.start_handshake(now, 1, now + self.config.join_timeout);
        } else {
            self.actions.push_back(Action::CloseSocket);
            if reason == ResumeFailure::SessionClosed {
                self.emit(Event::SessionClosed {
                    reason: "the session ended while this client was away".into(),
                });
            }
            self.end();
        }
    }

    /// Gives up the resumable place (numbering, tokens, window); returns how many sent
    /// frames were never acknowledged. Unsent ones stay queued for the next connection.
    fn forget_place(&mut self) -> usize {
        let unconfirmed = self.outbox.give_up();
        self.inbox.reset();
        self.token = None;
        self.local_token = None;
        self.remote_token = None;
        self.resumable = false;
        self.resume_until = None;
        self.disconnect_pending = false;
        self.farewell = None;
        self.set_link(LinkState::Disconnected);
        unconfirmed
    }

    fn handle_session_message(
        &mut self,
        now: Instant,
        message: ServerMessage,
        timestamp: Option<serde_json::Number>,
    ) {
        match message {
            ServerMessage::MemberList { mut members } => {
                let me = self.client_id.clone();
                self.control.overlay_own(me.as_deref(), &mut members);
                if let Some(host) = members.iter().find(|m| m.is_host) {
                    // A fresh list is the server's word on who hosts (decision 26).
                    self.control.host_id = Some(host.id.clone());
                    if let Some(s) = self.session.as_mut() {
                        s.host_id = Some(host.id.clone());
                    }
                }
                self.members = members.clone();
                self.bump();
                self.emit(Event::MemberList(members));
            }
            ServerMessage::MediaToken {
                token,
                role,
                stream_id,
                port,
                expires_at,
            } => self.emit(Event::MediaToken(MediaGrant {
                token,
                role,
                stream_id,
                port,
                expires_at,
            })),
            ServerMessage::MemberJoined { member } => {
                self.members.retain(|m| m.id != member.id);
                if member.is_host {
                    // The first host of a session created over HTTP.
                    self.control.host_id = Some(member.id.clone());
                    if let Some(s) = self.session.as_mut() {
                        s.host_id = Some(member.id.clone());
                    }
                    self.members.insert(0, member.clone());
                } else {
                    self.members.push(member.clone());
                }
                self.bump();
                self.emit(Event::MemberJoined(member));
            }
            ServerMessage::MemberUpdated { member } => {
                match self.members.iter_mut().find(|m| m.id == member.id) {
                    Some(entry) => *entry = member.clone(),
                    None if member.is_host => self.members.insert(0, member.clone()),
                    None => self.members.push(member.clone()),
                }
                self.bump();
                self.emit(Event::MemberUpdated(member));
            }
            ServerMessage::MemberLeft {
                member_id, reason, ..
            } => {
                self.members.retain(|m| m.id != member_id);
                self.bump();
                self.emit(Event::MemberLeft { member_id, reason });
            }
            ServerMessage::Kicked { reason } => self.ending = Ending::Kicked(reason),
            ServerMessage::SessionClosed { reason } => self.ending = Ending::SessionClosed(reason),
            ServerMessage::Pong => {
                if let Some(sent) = timestamp.and_then(|t| t.as_u64()) {
                    let ms = self.unix_ms(now).saturating_sub(sent);
                    self.latency = Some(ms);
                    self.bump();
                    self.emit(Event::Latency { ms });
                }
            }
            ServerMessage::Message { from, data, .. } => self.emit(Event::Message {
                from,
                data: data.to_value(),
            }),
            ServerMessage::Ack { seq } => {
                if self.resumable {
                    self.outbox.acknowledge(seq);
                    self.pump(now);
                }
            }
            // `decode_server` gives every `error` as `Received::Error`; a second `welcome`
            // means nothing, and the handshake's frames have no meaning once connected.
            ServerMessage::Error { .. }
            | ServerMessage::Welcome { .. }
            | ServerMessage::Token { .. }
            | ServerMessage::Resumed { .. }
            | ServerMessage::ResumeFailed { .. } => {}
            ServerMessage::State {
                state,
                version,
                term,
                updated_by,
            } => {
                let state = state.to_value();
                if !state.is_object() || !self.control.state_frame(state.clone(), version, term) {
                    tracing::debug!(term, seen = self.control.term, "stale state frame dropped");
                    return;
                }
                self.bump();
                self.emit(Event::SessionState {
                    state,
                    version,
                    term,
                    updated_by: Some(updated_by),
                });
            }
            ServerMessage::HandoffStarted {
                handoff_id,
                target_id,
            } => {
                self.control.pending = Some(PendingHandoff::Started {
                    handoff_id: handoff_id.clone(),
                    target_id: target_id.clone(),
                });
                self.bump();
                self.emit(Event::HandoffStarted {
                    handoff_id,
                    target_id,
                });
            }
            ServerMessage::HandoffRequest {
                handoff_id,
                from_id,
                state,
                version,
                term,
                timeout_ms,
            } => {
                self.control.see_term(term);
                let state = state.to_value();
                self.control.pending = Some(PendingHandoff::Offered(HandoffOffer {
                    handoff_id: handoff_id.clone(),
                    from_id: from_id.clone(),
                    state: state.clone(),
                    version,
                    term,
                    timeout_ms,
                }));
                self.bump();
                self.emit(Event::HandoffRequested {
                    handoff_id,
                    from_id,
                    state,
                    version,
                    term,
                    timeout_ms,
                });
            }
            ServerMessage::HandoffAck {
                handoff_id,
                host_id,
                term,
            } => {
                self.control.acknowledged(&handoff_id, term);
                self.bump();
                self.emit(Event::HandoffAcknowledged {
                    handoff_id,
                    host_id,
                    term,
                });
            }
            ServerMessage::HostChanged {
                host_id,
                previous_host_id,
                term,
                reason,
            } => {
                let me = self.client_id.clone();
                if !self.control.host_changed(
                    me.as_deref(),
                    &mut self.members,
                    &host_id,
                    &previous_host_id,
                    term,
                    reason,
                ) {
                    tracing::debug!(term, "host_changed of an older term dropped");
                    return;
                }
                if let Some(s) = self.session.as_mut() {
                    s.host_id = Some(host_id.clone());
                    s.host = None;
                }
                self.bump();
                self.emit(Event::HostChanged {
                    host_id,
                    previous_host_id,
                    term,
                    reason,
                });
                self.sync_role();
            }
            ServerMessage::HandoffFailed {
                reason,
                handoff_id,
                target_id,
            } => {
                self.control.handoff_failed(reason, handoff_id.as_deref());
                self.bump();
                self.emit(Event::HandoffFailed {
                    reason,
                    handoff_id,
                    target_id,
                });
            }
        }
    }

    /// The socket ended; `close` is the server's close code and reason if a close frame came.
    pub fn handle_closed(&mut self, now: Instant, close: Option<(u16, &str)>) {
        let close_code = close.map(|(code, _)| code);
        let attempt = match self.phase {
            Phase::Connected => 0,
            Phase::Handshake { attempt, .. }
            | Phase::Joining { attempt, .. }
            | Phase::Resuming { attempt, .. } => attempt,
            _ => return,
        };
        let why = match close {
            Some((code, "")) => format!("connection closed by the server ({code})"),
            Some((code, text)) => format!("connection closed by the server ({code} {text})"),
            None => "connection dropped".to_string(),
        };
        if let Phase::Resuming { attempt, .. } = self.phase {
            // The resume's own socket ended: a failed attempt; the place is still held.
            self.ending = Ending::None;
            self.emit(Event::ConnectionLost {
                reason: why.clone(),
            });
            self.attempt_failed(now, attempt, why);
            return;
        }
        let joined = self.phase == Phase::Connected;
        match std::mem::replace(&mut self.ending, Ending::None) {
            Ending::Leaving => self.end(),
            Ending::Kicked(reason) => {
                self.emit(Event::Kicked { reason });
                self.end();
            }
            Ending::SessionClosed(reason) if close_code != Some(close_code::GOING_AWAY) => {
                self.emit(Event::SessionClosed { reason });
                self.end();
            }
            Ending::SessionClosed(reason) => {
                // A server going away ended the session: nothing to resume, rejoin afresh.
                self.forget_place();
                self.lose(now, attempt, format!("server going away: {reason}"))
            }
            Ending::None if joined && self.resumable && !resume::close_ends_place(close_code) => {
                self.drop_resumable(now, why)
            }
            Ending::None
                if joined && self.resumable && close_code == Some(close_code::REPLACED) =>
            {
                // Another socket resumed this place: it is that socket's now.
                self.forget_place();
                self.emit(Event::ConnectionLost {
                    reason: why.clone(),
                });
                self.fail(format!(
                    "{why}: another connection resumed this client's place"
                ));
            }
            Ending::None if close_code == Some(close_code::GOING_AWAY) => {
                self.forget_place();
                self.lose(now, attempt, "server going away".to_string())
            }
            Ending::None => {
                // A plain connection, or a close that ends the place (1009, 1002, 1007):
                // the landed rules.
                self.forget_place();
                if self.is_host() && joined {
                    self.host_lost(why);
                } else {
                    self.lose(now, attempt, why);
                }
            }
        }
    }

    /// A resumable connection dropped uncleanly: hold on to everything and resume.
    fn drop_resumable(&mut self, now: Instant, why: String) {
        self.emit(Event::ConnectionLost {
            reason: why.clone(),
        });
        self.outbox.socket_lost();
        self.resume_until = Some(now + self.config.resume_window);
        self.set_link(LinkState::Reconnecting);
        self.lost_reason = why;
        self.schedule_resume(now, 1);
    }

    /// Waits before resume attempt `attempt`, or fails once the window has passed.
    fn schedule_resume(&mut self, now: Instant, attempt: u32) {
        let Some(until) = self.resume_until else {
            return;
        };
        if self.config.reconnect.attempts == 0 || now >= until {
            let reason = std::mem::take(&mut self.lost_reason);
            if self.farewell.is_some() {
                // The application asked to leave: the server's window has ended the place
                // (`member_left` `timeout`), which is the end it asked for, if late.
                self.actions.push_back(Action::CloseSocket);
                self.end();
            } else {
                self.fail(format!("not resumed within the resume window: {reason}"));
            }
            return;
        }
        let delay = self.config.reconnect.delay_before(attempt, &mut self.rng);
        self.phase = Phase::Waiting {
            attempt,
            at: (now + delay).min(until),
        };
        self.set_connection(ConnectionState::Reconnecting);
    }

    /// Timers: heartbeat and ping, silence detection, acks, paced sends, join and resume
    /// timeouts, reconnection delay.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Connected => {
                if now.saturating_duration_since(self.last_heard) >= self.config.silence_timeout {
                    self.actions.push_back(Action::CloseSocket);
                    let why = "no sign of the server within the silence timeout".to_string();
                    if self.resumable {
                        self.drop_resumable(now, why);
                    } else if self.is_host() {
                        self.host_lost(why);
                    } else {
                        self.lose(now, 0, why);
                    }
                    return;
                }
                if now >= self.next_beat {
                    self.next_beat = now + self.config.heartbeat_interval;
                    let heartbeat = self.frame(now, &ClientMessage::Heartbeat);
                    let ping = self.frame(now, &ClientMessage::ping(self.unix_ms(now)));
                    self.actions.push_back(Action::Send(heartbeat));
                    self.actions.push_back(Action::Send(ping));
                }
                if self.resumable {
                    self.send_ack_if_due(now);
                    self.pump(now);
                }
            }
            Phase::Handshake { attempt, deadline }
            | Phase::Joining { attempt, deadline }
            | Phase::Resuming { attempt, deadline }
                if now >= deadline =>
            {
                self.actions.push_back(Action::CloseSocket);
                let what = match self.phase {
                    Phase::Resuming { .. } => "no resume answer within the join timeout",
                    _ => "no welcome within the join timeout",
                };
                self.attempt_failed(now, attempt, what.into());
            }
            Phase::Waiting { attempt, at } if now >= at => {
                self.phase = Phase::Connecting { attempt };
                match self.resume_until {
                    Some(until) => self.emit(Event::Resuming {
                        attempt,
                        window_left: until.saturating_duration_since(now),
                    }),
                    None => self.emit(Event::Reconnecting {
                        attempt,
                        of: self.config.reconnect.attempts,
                    }),
                }
                self.actions.push_back(Action::Connect);
            }
            _ => {}
        }
    }

    /// Sends `leave` (numbered and behind what is queued, on a resumable connection); the
    /// server closes the socket. While a resumable place is being resumed (between attempts
    /// too) the leave is queued ([`Machine::leave_queued`]): on `resumed` it goes out right
    /// after the resend, and the server's close ends the client; if the resume is refused or
    /// the window passes, the client ends without joining afresh. Otherwise, if not
    /// connected, ends at once.
    pub fn leave(&mut self, now: Instant) {
        if self.resuming_place() {
            self.farewell.get_or_insert(Farewell::Leave);
            self.bump();
        } else if self.phase == Phase::Connected {
            self.ending = Ending::Leaving;
            let leave = self.frame(now, &ClientMessage::leave(None));
            if self.resumable {
                self.outbox.push(leave);
                self.pump(now);
            } else {
                self.actions.push_back(Action::Send(leave));
            }
        } else if self.phase != Phase::Ended {
            self.actions.push_back(Action::CloseSocket);
            self.end();
        }
    }

    /// The formal disconnect (seed 003): on a resumable connection, sends the connection
    /// token once everything queued went out; the server treats it as `leave` and the token
    /// can no longer be resumed. While the place is being resumed it is queued like
    /// [`Machine::leave`] (sent once resumed, after the resend). Otherwise the same as
    /// [`Machine::leave`].
    pub fn disconnect(&mut self, now: Instant) {
        if self.resuming_place() {
            self.farewell.get_or_insert(Farewell::Disconnect);
            self.bump();
        } else if self.phase == Phase::Connected && self.resumable {
            self.ending = Ending::Leaving;
            self.disconnect_pending = true;
            self.pump(now);
        } else {
            self.leave(now);
        }
    }

    /// Whether a leave (or formal disconnect) given while resuming waits for the resume; it
    /// is sent once resumed, and then the server's close (or the driver's leave timeout)
    /// ends the client.
    pub fn leave_queued(&self) -> bool {
        self.farewell.is_some()
    }

    /// Whether the server holds this client's place and the machine is resuming it (waiting
    /// between attempts, opening a socket, or waiting for the resume's answer).
    fn resuming_place(&self) -> bool {
        self.resume_until.is_some() && self.token.is_some() && self.phase != Phase::Ended
    }

    /// The driver gave up waiting for the server to close after `leave`.
    pub fn handle_leave_timeout(&mut self) {
        if self.ending == Ending::Leaving {
            self.actions.push_back(Action::CloseSocket);
            self.end();
        }
    }

    /// Sends a `ping` now (one is also sent every heartbeat interval). Never queued.
    pub fn ping(&mut self, now: Instant) -> Result<(), CommandError> {
        if self.phase != Phase::Connected || self.ending != Ending::None {
            return Err(CommandError::NotConnected);
        }
        let ping = self.frame(now, &ClientMessage::ping(self.unix_ms(now)));
        self.actions.push_back(Action::Send(ping));
        Ok(())
    }

    /// Host only: removes a member.
    pub fn kick(
        &mut self,
        now: Instant,
        member_id: &str,
        reason: Option<&str>,
    ) -> Result<(), CommandError> {
        self.send(now, &ClientMessage::kick(member_id, reason))
    }

    /// Asks for a fresh member list.
    pub fn request_member_list(&mut self, now: Instant) -> Result<(), CommandError> {
        self.send(now, &ClientMessage::MemberList)
    }

    /// Asks for a media token (`media_token`, issue 13 R2), numbered and queued like every
    /// command; the reply is [`Event::MediaToken`], or [`Event::Error`] with
    /// `media_unavailable` from a server without a relay.
    pub fn request_media_token(&mut self, now: Instant) -> Result<(), CommandError> {
        self.send(now, &ClientMessage::MediaToken)
    }

    /// Sends application data to everyone else, or to one member.
    pub fn send_message(
        &mut self,
        now: Instant,
        data: Value,
        to: Option<&str>,
    ) -> Result<(), CommandError> {
        self.send(now, &ClientMessage::message(RawJson::from_value(&data), to))
    }

    /// Host only: replaces the session state with `state` (`state_set` with `state`),
    /// refused with `stale_version` unless `base_version` is the current version (when
    /// given). Sent with the current term, so a host that lost control meanwhile is refused
    /// (`stale_term`, or `unauthorized` when the server already knows). Every member, this
    /// one included, gets the result as [`Event::SessionState`].
    pub fn set_state(
        &mut self,
        now: Instant,
        state: Map<String, Value>,
        base_version: Option<u64>,
    ) -> Result<(), CommandError> {
        self.send_state(now, StateChange::Replace(state), base_version)
    }

    /// Host only: applies `patch` to the session state as an RFC 7396 merge patch (`null`
    /// removes a key); otherwise as [`Machine::set_state`].
    pub fn patch_state(
        &mut self,
        now: Instant,
        patch: Map<String, Value>,
        base_version: Option<u64>,
    ) -> Result<(), CommandError> {
        self.send_state(now, StateChange::Patch(patch), base_version)
    }

    fn send_state(
        &mut self,
        now: Instant,
        change: StateChange,
        base_version: Option<u64>,
    ) -> Result<(), CommandError> {
        let term = (self.control.term > 0).then_some(self.control.term);
        self.send(
            now,
            &ClientMessage::StateSet {
                change,
                base_version,
                term,
            },
        )
    }

    /// Host only: hands control to `target` (a member's id), or to the member the server
    /// chooses (the one whose readiness declaration is oldest). Pending as
    /// [`PendingHandoff::Requested`], then [`Event::HandoffStarted`] or
    /// [`Event::HandoffFailed`].
    pub fn request_handoff(
        &mut self,
        now: Instant,
        target: Option<&str>,
    ) -> Result<(), CommandError> {
        self.send(
            now,
            &ClientMessage::HandoffRequest {
                target_id: target.map(str::to_string),
            },
        )?;
        self.control.requested(target);
        self.bump();
        Ok(())
    }

    /// As the candidate: takes control (the answer to [`Event::HandoffRequested`]).
    pub fn accept_handoff(&mut self, now: Instant, handoff_id: &str) -> Result<(), CommandError> {
        self.send(
            now,
            &ClientMessage::HandoffAccept {
                handoff_id: handoff_id.to_string(),
            },
        )?;
        self.control.answered(handoff_id);
        self.bump();
        Ok(())
    }

    /// As the candidate: refuses control; `reason` is not passed on to the host.
    pub fn decline_handoff(
        &mut self,
        now: Instant,
        handoff_id: &str,
        reason: Option<&str>,
    ) -> Result<(), CommandError> {
        self.send(
            now,
            &ClientMessage::HandoffDecline {
                handoff_id: handoff_id.to_string(),
                reason: reason.map(str::to_string),
            },
        )?;
        self.control.answered(handoff_id);
        self.bump();
        Ok(())
    }

    /// As a member: declares (or withdraws) readiness to take control (`handoff_ready`);
    /// the role becomes [`Role::HandoffReady`] (or [`Role::Assigned`]). The host cannot
    /// declare itself ready (the server answers `invalid_message`; the role stays).
    pub fn set_ready(&mut self, now: Instant, ready: bool) -> Result<(), CommandError> {
        self.send(now, &ClientMessage::HandoffReady { ready })?;
        if !self.is_host() {
            self.control.ready = ready;
            let me = self.client_id.clone();
            self.control.overlay_own(me.as_deref(), &mut self.members);
            self.bump();
            self.sync_role();
        }
        Ok(())
    }

    /// A numbered command: sent at once on a plain connection; on a resumable one, numbered
    /// and paced; while reconnecting with resume on, queued.
    fn send(&mut self, now: Instant, message: &ClientMessage) -> Result<(), CommandError> {
        if self.ending != Ending::None || self.farewell.is_some() {
            return Err(CommandError::NotConnected);
        }
        let frame = self.frame(now, message);
        if self.phase == Phase::Connected && !self.resumable {
            self.actions.push_back(Action::Send(frame));
            Ok(())
        } else if self.phase == Phase::Connected || self.queues() {
            if self.outbox.len() >= self.config.queue_limit {
                return Err(CommandError::QueueFull);
            }
            self.outbox.push(frame);
            self.pump(now);
            Ok(())
        } else {
            Err(CommandError::NotConnected)
        }
    }

    /// Whether commands are queued now: resume on, and reconnecting (not the first
    /// connection, not ended).
    fn queues(&self) -> bool {
        self.config.resume
            && match self.phase {
                Phase::Waiting { .. } | Phase::Resuming { .. } => true,
                Phase::Connecting { attempt }
                | Phase::Handshake { attempt, .. }
                | Phase::Joining { attempt, .. } => attempt > 0,
                Phase::Idle | Phase::Connected | Phase::Ended => false,
            }
    }

    /// The text frame of `message`, stamped with the current time.
    fn frame(&self, now: Instant, message: &ClientMessage) -> String {
        encode_client(message, self.unix_ms(now))
            .expect("the SDK sends only our dialect's messages")
    }

    /// A joined host's plain connection was lost, not by a server going away: the server
    /// ended the session with it (`Host disconnected`, or `Host timed out` after a freeze).
    /// Rejoining as host would open a new, empty session under the same id, so the host is
    /// told instead. (A resumable host resumes: the server holds its session.) "Host" is
    /// the role at the time ([`Machine::is_host`]): a member that took control by a handoff
    /// counts, a host that handed control over does not (it rejoins as a member). A server
    /// run with `--on-host-loss handoff` passes the session on instead of ending it; this
    /// client, gone from it, ends all the same.
    fn host_lost(&mut self, why: String) {
        self.emit(Event::ConnectionLost {
            reason: why.clone(),
        });
        self.emit(Event::SessionClosed {
            reason: format!(
                "this host's connection was lost ({why}); the server ends a session with its \
                 host's connection (or, with --on-host-loss handoff, passes it to a member), \
                 so it was not re-created"
            ),
        });
        self.end();
    }

    /// The connection was lost: start reconnecting, or fail if no attempts are configured.
    fn lose(&mut self, now: Instant, attempt: u32, reason: String) {
        self.emit(Event::ConnectionLost {
            reason: reason.clone(),
        });
        self.clear_session();
        if attempt > 0 {
            // Lost while rejoining: that attempt failed.
            self.attempt_failed(now, attempt, reason);
        } else {
            self.lost_reason = reason;
            self.schedule(now, 1);
        }
    }

    fn attempt_failed(&mut self, now: Instant, attempt: u32, reason: String) {
        if self.resume_until.is_some() {
            self.lost_reason = reason;
            self.schedule_resume(now, attempt + 1);
            return;
        }
        if attempt == 0 {
            // The very first connection: nothing to reconnect to.
            self.emit(Event::Failed { reason });
            self.forget_all();
            self.phase = Phase::Ended;
            self.set_connection(ConnectionState::Failed);
            return;
        }
        self.lost_reason = reason;
        self.schedule(now, attempt + 1);
    }

    fn schedule(&mut self, now: Instant, attempt: u32) {
        let policy = &self.config.reconnect;
        if attempt > policy.attempts {
            let reason = std::mem::take(&mut self.lost_reason);
            self.fail(reason);
            return;
        }
        let delay = policy.delay_before(attempt, &mut self.rng);
        self.phase = Phase::Waiting {
            attempt,
            at: now + delay,
        };
        self.set_connection(ConnectionState::Reconnecting);
    }

    fn fail(&mut self, reason: String) {
        self.clear_session();
        self.forget_all();
        self.phase = Phase::Ended;
        self.set_connection(ConnectionState::Failed);
        self.emit(Event::Failed { reason });
    }

    fn end(&mut self) {
        self.clear_session();
        self.forget_all();
        self.phase = Phase::Ended;
        self.set_connection(ConnectionState::Disconnected);
    }

    /// The end: the place, the queue and the link go.
    fn forget_all(&mut self) {
        self.forget_place();
        self.outbox.clear();
    }

    /// The membership is gone (ended, or a fresh join follows): what the session told this
    /// member goes with it, except the session's assigned id, the readiness wish (see
    /// [`crate::handoff`]) and whether this host handed control over.
    fn clear_session(&mut self) {
        self.client_id = None;
        self.session = None;
        self.members.clear();
        self.latency = None;
        self.control.host_id = None;
        self.control.pending = None;
        self.bump();
    }

    fn set_connection(&mut self, state: ConnectionState) {
        if self.state != state {
            self.state = state;
            self.bump();
            self.emit(Event::StateChanged(state));
        }
        self.sync_role();
    }

    /// Announces a change of [`Machine::role`] now, beside what caused it (a final
    /// [`Event::Failed`] stays the last event). [`Machine::poll_action`] catches any change
    /// made elsewhere.
    fn sync_role(&mut self) {
        let role = self.role();
        if role != self.shown_role {
            self.shown_role = role;
            self.bump();
            self.emit(Event::RoleChanged(role));
        }
    }

    fn set_link(&mut self, link: LinkState) {
        if self.link != link {
            self.link = link;
            self.bump();
            self.emit(Event::LinkChanged(link));
        }
    }

    fn emit(&mut self, event: Event) {
        self.actions.push_back(Action::Emit(event));
    }

    fn bump(&mut self) {
        self.generation += 1;
    }

    fn unix_ms(&self, now: Instant) -> u64 {
        self.epoch.1 + now.saturating_duration_since(self.epoch.0).as_millis() as u64
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod resume_tests;

#[cfg(test)]
mod handoff_tests;

#[cfg(test)]
mod media_tests;
