//! One client transport: what a frame means before it reaches a session.
//!
//! The machine decodes text frames, answers `ping` itself, keeps the connection's liveness,
//! measures round-trip time with WebSocket pings, enforces the message rate limit, forwards
//! session messages only once `join` has succeeded, and bounds how long a closing transport
//! may linger. The first text frame decides the connection's dialect (ours or the LOUDSYNC
//! app's); both decode into the same messages, so every rule below holds for both.
//!
//! Its timers are lazy, because an idle server spends its life in them: the liveness
//! deadline is `last_seen + heartbeat_timeout`, checked no more often than the check
//! interval, so a member that keeps talking never wakes its timer; latency probes are not
//! timed at all but ride on the member's own traffic (the first frame after the latency
//! interval has passed is answered with its reply *and* a probe, written together), so an
//! idle member costs one write per ping it sends and nothing else.
//!
//! It is the *transport* half of a member; the member's place lives in the session, so the
//! resume layer can move a member onto a new transport.
//!
//! **The resume handshake** (seed 003) is a phase before `join`: the client sends its local
//! token B, the server answers with its own A (PRECONNECTED), the client confirms B, the
//! server confirms A (CONNECTED), and both hold the connection token T = A+B in byte order.
//! A `join` then makes the connection *numbered*: every frame but `ack`, `token`,
//! `heartbeat` and `ping` carries `seq`, checked here before anything else about the frame
//! ([`crate::resume::InboundSeq`]), and acknowledged when an ack is owed
//! ([`crate::resume::AckSchedule`]). A socket whose first frame is T with `lastSeq` asks to
//! resume ([`ConnAction::Resume`]). On a numbered connection the errors this machine finds go
//! through the session ([`MemberCommand::Report`]), so they are numbered and replayed too.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use loudsync_protocol::app::{self, Dialect};
use loudsync_protocol::client::{merge_tokens, CONNECTION_TOKEN_LEN, TOKEN_LEN};
use loudsync_protocol::{
    client::version_compatible, close_code, decode_numbered, ClientMessage, Decoded, ErrorCode,
    Join, LeaveReason, RawJson, ResumeFailure, Seq, ServerMessage, Stamp, StateChange,
    PROTOCOL_VERSION,
};

use crate::directory::JoinError;
use crate::limits::{RateLimiter, Verdict};
use crate::resume::{AckSchedule, InboundSeq, SeqVerdict};
use crate::Now;

/// The settings a connection runs with.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// A connection silent this long is dropped (document: 15 s).
    pub heartbeat_timeout: Duration,
    /// The liveness deadline is checked at most this often (document: 5 s).
    pub heartbeat_check_interval: Duration,
    /// How often a WebSocket ping measures round-trip time (at most; probes ride on the
    /// member's own frames).
    pub latency_interval: Duration,
    /// Messages per second allowed on average (0 = unlimited).
    pub rate_per_sec: u32,
    /// Messages allowed in a burst.
    pub rate_burst: u32,
    /// Largest `message` frame, in bytes, relayed to members; larger ones get `too_large`.
    pub max_data_bytes: usize,
    /// Once a close is decided, how long the transport may take to finish it before it is
    /// dropped (a client that never reads what is queued before the close frame).
    pub close_timeout: Duration,
    /// On a numbered connection, an `ack` is owed at the latest this long after the first
    /// unacknowledged client message (`--ack-interval`).
    pub ack_interval: Duration,
    /// ... or after this many (`--ack-every`).
    pub ack_every: u64,
    /// Where the server's local tokens come from (the OS CSPRNG; tests inject their own).
    pub local_token: fn() -> String,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            heartbeat_timeout: Duration::from_secs(15),
            heartbeat_check_interval: Duration::from_secs(5),
            latency_interval: Duration::from_secs(5),
            rate_per_sec: 100,
            rate_burst: 200,
            max_data_bytes: 16 * 1024,
            close_timeout: Duration::from_secs(1),
            ack_interval: Duration::from_secs(5),
            ack_every: 100,
            local_token: crate::resume::random_token,
        }
    }
}

/// A request the connection forwards to its session, on behalf of its member.
#[derive(Debug, Clone, PartialEq)]
pub enum MemberCommand {
    /// `leave`.
    Leave,
    /// `kick` (the session checks that the sender is the host).
    Kick {
        /// Target `clientId`.
        member_id: String,
        /// Shown to the target.
        reason: Option<String>,
    },
    /// `member_list` request.
    MemberList,
    /// `media_token` request (issue 13 R2): the session decides the role, the server grants.
    MediaToken,
    /// Application `message`.
    Message {
        /// The payload, as the sender wrote it.
        data: RawJson,
        /// One recipient, or everyone else.
        to: Option<String>,
    },
    /// A new round-trip-time measurement, in ms (sent only when it changed).
    Latency(u64),
    /// `ack`: the client received every server message up to this `seq` (resumable only).
    Ack(u64),
    /// A message for the member itself that its connection decided (an error about one of
    /// its frames): on a resumable connection it goes through the session, so it is
    /// numbered and replayed like every other (boxed: commands travel in the session's
    /// channel, whose every slot is as large as the largest input).
    Report(Box<ServerMessage>),
    /// `state_set` (the session checks host, term, version and size; the change is boxed to
    /// keep commands small).
    StateSet {
        /// The whole document or a merge patch.
        change: Box<StateChange>,
        /// The version it is based on.
        base_version: Option<u64>,
        /// The term it is sent in.
        term: Option<u64>,
    },
    /// `handoff_ready`.
    HandoffReady(bool),
    /// `handoff_request` (the session checks that the sender is the host).
    HandoffRequest {
        /// The member asked for, or the server's choice.
        target: Option<String>,
    },
    /// `handoff_accept` (`accept: true`) or `handoff_decline` (the decline's free-text
    /// reason is informational and not passed on).
    HandoffAnswer {
        /// The request answered.
        handoff_id: String,
        /// Accept or decline.
        accept: bool,
    },
}

/// What the I/O layer must do for this connection.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnAction {
    /// Send this message on this transport only.
    Reply(ServerMessage, Stamp),
    /// Route this join to its session; report the result with
    /// [`Connection::handle_join_result`]. Nothing more is read until then.
    Join(Join),
    /// Forward this to the member's session.
    Session(MemberCommand),
    /// Forward this to the member's session: it came from the client frame numbered `seq`
    /// (a numbered connection), which the session records as processed.
    Numbered {
        /// The frame's `seq`.
        seq: u64,
        /// What it asked.
        command: MemberCommand,
    },
    /// The socket's first frame asks to resume the place of connection `token`; report the
    /// answer with [`Connection::handle_resume_result`]. Nothing more is read until then.
    Resume {
        /// The connection token.
        token: String,
        /// The last server `seq` the client received.
        last_seq: u64,
    },
    /// The member's transport is gone without `leave`: detach it from its place.
    Detach(LeaveReason),
    /// The member's transport is gone for a reason a resume cannot mend (a frame over the
    /// size limit, a framing violation): its place ends now.
    DetachFatal(LeaveReason),
    /// Send a WebSocket ping control frame with this payload.
    Ping([u8; 8]),
    /// Close the transport with this code and reason, after what is already queued.
    Close {
        /// WebSocket close code.
        code: u16,
        /// Close reason text.
        reason: String,
    },
    /// The close did not finish within the close timeout: drop the transport now.
    Abort,
}

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Open, no session yet.
    AwaitingJoin,
    /// A join is being routed; nothing else is read until it is answered.
    Joining,
    /// A member of a session.
    Joined,
    /// Closing or closed; nothing more is accepted.
    Closed,
}

/// Where the resume handshake stands (boxed in [`Connection`], so a plain connection pays one
/// word for it).
#[derive(Debug)]
enum Link {
    /// Step 2 sent: waiting for the client to confirm its token.
    PreConnected { local: String, remote: String },
    /// Step 4 sent: the connection token is agreed; `join` makes the connection numbered.
    Agreed { token: String },
    /// A resume is on its way to the session.
    Resuming { token: String },
    /// A resume was refused: only a fresh handshake (or a plain `join`) now.
    Refused,
    /// Joined or resumed: numbered both ways.
    Numbered {
        token: String,
        inbound: InboundSeq,
        acks: AckSchedule,
    },
}

/// How a resume was answered, as [`Connection::handle_resume_result`] takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeAnswer {
    /// Resumed: the session queued `token`, `resumed` and the replay; this is the last client
    /// `seq` it processed, where the numbering continues.
    Resumed {
        /// The last client `seq` processed.
        last_in: u64,
    },
    /// `resume_failed` with this reason.
    Failed(ResumeFailure),
    /// `invalid_message` with this text (a `lastSeq` above what was sent).
    Invalid(String),
}

/// The state machine of one client transport.
#[derive(Debug)]
pub struct Connection {
    config: ConnectionConfig,
    phase: Phase,
    /// Decided by the first text frame, for the connection's whole life.
    dialect: Option<Dialect>,
    opened: Instant,
    last_seen: Instant,
    /// The liveness deadline is not checked before this.
    next_check: Instant,
    /// A probe rides on the first frame at or after this.
    next_probe: Instant,
    outstanding_probe: Option<(u64, Instant)>,
    probe_counter: u64,
    last_latency: Option<u64>,
    /// Once a close is decided: when the transport is dropped at the latest.
    close_deadline: Option<Instant>,
    /// The close deadline passed and [`ConnAction::Abort`] was given.
    aborted: bool,
    /// The message rate limit and what happens to the frames it drops.
    rate: RateLimiter,
    /// A text frame was seen (a resume must be a socket's first frame).
    seen_text: bool,
    /// The resume handshake and numbering, once a `token` started it.
    link: Option<Box<Link>>,
    /// The `seq` of the numbered frame being handled, until its command is forwarded.
    in_flight: Option<u64>,
    actions: VecDeque<ConnAction>,
}

impl Connection {
    /// A connection opened at `now`.
    pub fn new(config: ConnectionConfig, now: Now) -> Self {
        let t = now.instant;
        Connection {
            rate: RateLimiter::new(config.rate_per_sec, config.rate_burst, t),
            phase: Phase::AwaitingJoin,
            dialect: None,
            opened: t,
            last_seen: t,
            next_check: t + config.heartbeat_timeout,
            next_probe: t + config.latency_interval,
            outstanding_probe: None,
            probe_counter: 0,
            last_latency: None,
            close_deadline: None,
            aborted: false,
            seen_text: false,
            link: None,
            in_flight: None,
            actions: VecDeque::new(),
            config,
        }
    }

    /// The dialect this connection speaks (ours until its first text frame says otherwise).
    pub fn dialect(&self) -> Dialect {
        self.dialect.unwrap_or(Dialect::LoudSync)
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The connection token once the handshake agreed one (and while it is in use): a `join`
    /// now makes a resumable member with it.
    pub fn connection_token(&self) -> Option<&str> {
        match self.link.as_deref()? {
            Link::Agreed { token } | Link::Resuming { token } | Link::Numbered { token, .. } => {
                Some(token)
            }
            Link::PreConnected { .. } | Link::Refused => None,
        }
    }

    /// Whether the connection is numbered (joined or resumed after the handshake).
    pub fn is_numbered(&self) -> bool {
        matches!(self.link.as_deref(), Some(Link::Numbered { .. }))
    }

    /// Whether the transport should stop reading for now: while a join is being routed, so
    /// the frames after `join` are handled once its answer is in (timers and writes go on).
    pub fn reading_paused(&self) -> bool {
        self.phase == Phase::Joining
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<ConnAction> {
        self.actions.pop_front()
    }

    /// When [`Connection::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if let Some(deadline) = self.close_deadline {
            return Some(deadline);
        }
        match self.phase {
            Phase::Closed => None,
            Phase::Joined => match self.link.as_deref() {
                Some(Link::Numbered { acks, .. }) => Some(
                    acks.deadline()
                        .map_or(self.next_check, |at| at.min(self.next_check)),
                ),
                _ => Some(self.next_check),
            },
            Phase::AwaitingJoin | Phase::Joining => Some(
                self.next_check
                    .min(self.opened + self.config.heartbeat_timeout),
            ),
        }
    }

    /// A text frame arrived.
    pub fn handle_text(&mut self, now: Now, text: &str) {
        if !self.admit(now) {
            return;
        }
        let dialect = *self.dialect.get_or_insert_with(|| app::detect(text));
        let decoded = match dialect {
            Dialect::LoudSync => decode_numbered(text),
            Dialect::App => Decoded {
                seq: Seq::Absent,
                message: app::decode(text),
            },
        };
        let first = !std::mem::replace(&mut self.seen_text, true);
        if self.is_numbered() {
            self.handle_numbered(now, decoded, text.len());
            return;
        }
        match decoded.message {
            Ok(message) => {
                self.last_seen = now.instant;
                self.handle_message(now, message, text.len(), first);
                self.maybe_probe(now);
            }
            Err(e) => self.reply_error(now, ErrorCode::InvalidMessage, e.message),
        }
    }

    /// A frame on a numbered connection: its `seq` is judged before the frame itself, so a
    /// refused frame still uses up its number, and duplicates and gaps go no further.
    fn handle_numbered(&mut self, now: Now, decoded: Decoded, frame_len: usize) {
        let seq = match (&decoded.message, decoded.seq) {
            (Ok(m), _) if !m.is_numbered() => None,
            (_, Seq::Valid(seq)) => Some(seq),
            (Ok(m), Seq::Absent) => {
                let kind = m.type_name();
                self.last_seen = now.instant;
                return self.reply_error(
                    now,
                    ErrorCode::InvalidMessage,
                    format!("{kind}: missing field `seq` (this connection is resumable: number every message but ack, token, heartbeat and ping)"),
                );
            }
            (_, Seq::Invalid) => {
                return self.reply_error(
                    now,
                    ErrorCode::InvalidMessage,
                    "field `seq` must be a positive integer",
                )
            }
            (Err(_), Seq::Absent) => None,
        };
        if let Some(seq) = seq {
            let Some(Link::Numbered { inbound, acks, .. }) = self.link.as_deref_mut() else {
                unreachable!("numbered")
            };
            match inbound.check(seq) {
                SeqVerdict::Duplicate => {
                    self.last_seen = now.instant;
                    return;
                }
                SeqVerdict::Gap { notify, last } => {
                    self.last_seen = now.instant;
                    if notify {
                        self.report(ServerMessage::Error {
                            code: ErrorCode::InvalidMessage,
                            message: format!(
                                "seq {seq} skips a message: the last processed is {last}; resend from {}",
                                last + 1
                            ),
                            details: Some(serde_json::json!({ "lastSeq": last })),
                        });
                    }
                    return;
                }
                SeqVerdict::Next => {
                    let owed = acks.received(
                        now.instant,
                        seq,
                        self.config.ack_every,
                        self.config.ack_interval,
                    );
                    if let Some(ack) = owed {
                        self.send_ack(now, ack);
                    }
                    self.in_flight = Some(seq);
                }
            }
        }
        match decoded.message {
            Ok(message) => {
                self.last_seen = now.instant;
                self.handle_message(now, message, frame_len, false);
                self.maybe_probe(now);
            }
            Err(e) => self.reply_error(now, ErrorCode::InvalidMessage, e.message),
        }
        self.in_flight = None;
    }

    fn send_ack(&mut self, now: Now, seq: u64) {
        self.actions.push_back(ConnAction::Reply(
            ServerMessage::Ack { seq },
            Stamp::Now(now.unix_ms),
        ));
    }

    /// A message about the member's own frames: through the session on a numbered
    /// connection (so it is numbered), straight to the socket otherwise.
    fn report(&mut self, message: ServerMessage) {
        self.forward(MemberCommand::Report(Box::new(message)));
    }

    /// Forwards a command to the session, with the `seq` of the frame it came from.
    fn forward(&mut self, command: MemberCommand) {
        self.actions.push_back(match self.in_flight.take() {
            Some(seq) => ConnAction::Numbered { seq, command },
            None => ConnAction::Session(command),
        });
    }

    /// The session's answer to a [`ConnAction::Resume`].
    pub fn handle_resume_result(&mut self, now: Now, answer: ResumeAnswer) {
        let Some(Link::Resuming { .. }) = self.link.as_deref() else {
            return;
        };
        if self.phase != Phase::Joining {
            return;
        }
        let Some(Link::Resuming { token }) = self.link.take().map(|b| *b) else {
            unreachable!("looked above")
        };
        match answer {
            ResumeAnswer::Resumed { last_in } => {
                self.phase = Phase::Joined;
                self.next_probe = now.instant + self.config.latency_interval;
                self.link = Some(Box::new(Link::Numbered {
                    token,
                    inbound: InboundSeq::after(last_in),
                    acks: AckSchedule::after(last_in),
                }));
            }
            ResumeAnswer::Failed(reason) => {
                self.phase = Phase::AwaitingJoin;
                self.link = Some(Box::new(Link::Refused));
                self.actions.push_back(ConnAction::Reply(
                    ServerMessage::ResumeFailed { reason },
                    Stamp::Now(now.unix_ms),
                ));
            }
            ResumeAnswer::Invalid(text) => {
                self.phase = Phase::AwaitingJoin;
                self.link = Some(Box::new(Link::Refused));
                self.reply_error(now, ErrorCode::InvalidMessage, text);
            }
        }
    }

    /// A binary frame arrived: the protocol is JSON text only.
    pub fn handle_binary(&mut self, now: Now) {
        if !self.admit(now) {
            return;
        }
        self.reply_error(
            now,
            ErrorCode::InvalidMessage,
            "binary frames are not part of the protocol; send JSON as a text frame",
        );
    }

    /// A WebSocket pong control frame arrived. Control frames never refresh liveness.
    pub fn handle_pong(&mut self, now: Now, payload: &[u8]) {
        let Some((counter, sent)) = self.outstanding_probe else {
            return;
        };
        if payload == counter.to_be_bytes() {
            self.outstanding_probe = None;
            let rtt = now.instant.saturating_duration_since(sent).as_millis() as u64;
            if self.phase == Phase::Joined && self.last_latency != Some(rtt) {
                // Unchanged figures are not worth waking the session for.
                self.last_latency = Some(rtt);
                self.actions
                    .push_back(ConnAction::Session(MemberCommand::Latency(rtt)));
            }
        }
    }

    /// The session's answer to a [`ConnAction::Join`]: `Ok` once `welcome` is queued, or the
    /// refusal to send before closing.
    pub fn handle_join_result(&mut self, now: Now, result: Result<(), ServerMessage>) {
        if self.phase != Phase::Joining {
            return;
        }
        match result {
            Ok(()) => {
                self.phase = Phase::Joined;
                self.next_probe = now.instant + self.config.latency_interval;
                if let Some(Link::Agreed { .. }) = self.link.as_deref() {
                    let Some(Link::Agreed { token }) = self.link.take().map(|b| *b) else {
                        unreachable!("looked above")
                    };
                    self.link = Some(Box::new(Link::Numbered {
                        token,
                        inbound: InboundSeq::after(0),
                        acks: AckSchedule::after(0),
                    }));
                }
            }
            Err(error) => {
                let reason = self.join_rejected_reason(&error);
                self.actions
                    .push_back(ConnAction::Reply(error, Stamp::Now(now.unix_ms)));
                self.close(now, close_code::NORMAL, reason);
            }
        }
    }

    /// Timers: the close deadline, the join deadline and the liveness deadline.
    pub fn handle_timeout(&mut self, now: Now) {
        let t = now.instant;
        if let Some(deadline) = self.close_deadline {
            if t >= deadline {
                self.close_deadline = None;
                self.aborted = true;
                self.actions.push_back(ConnAction::Abort);
            }
            return;
        }
        if self.phase == Phase::Joined {
            if let Some(Link::Numbered { inbound, acks, .. }) = self.link.as_deref_mut() {
                if let Some(seq) = acks.poll(t, inbound.last()) {
                    self.send_ack(now, seq);
                }
            }
        }
        if self.phase == Phase::Closed || t < self.next_check.min(self.join_deadline()) {
            return;
        }
        // A socket that spoke but never joined is told so: its join deadline (from opening)
        // comes before its liveness deadline (from its last frame), however late the timer
        // fires. A socket silent since it opened is a heartbeat timeout, as it always was.
        if self.seen_text
            && matches!(self.phase, Phase::AwaitingJoin | Phase::Joining)
            && t >= self.join_deadline()
        {
            self.close(
                now,
                close_code::NORMAL,
                "no join within the heartbeat timeout",
            );
            return;
        }
        if t.saturating_duration_since(self.last_seen) >= self.config.heartbeat_timeout {
            self.drop_member(
                now,
                LeaveReason::Timeout,
                close_code::NORMAL,
                match self.dialect {
                    Some(Dialect::App) => "Timeout",
                    _ => "heartbeat timeout",
                },
            );
            return;
        }
        // Still alive: look again when the silence could first reach the timeout.
        self.next_check = (self.last_seen + self.config.heartbeat_timeout)
            .max(t + self.config.heartbeat_check_interval);
    }

    /// The transport ended or is ending from the client's side (its close frame, end of
    /// stream, an I/O error, a protocol violation): the member is detached, and the transport
    /// gets the close timeout to finish.
    pub fn handle_transport_closed(&mut self, now: Now) {
        if self.phase == Phase::Joined {
            self.actions
                .push_back(ConnAction::Detach(LeaveReason::Error));
        }
        self.phase = Phase::Closed;
        self.start_close_deadline(now);
    }

    /// The transport failed in a way a resume cannot mend (a frame over the size limit, a
    /// framing violation): like [`Connection::handle_transport_closed`], but the member's
    /// place ends now even if it is resumable.
    pub fn handle_transport_failed(&mut self, now: Now) {
        if self.phase == Phase::Joined {
            self.actions
                .push_back(ConnAction::DetachFatal(LeaveReason::Error));
        }
        self.phase = Phase::Closed;
        self.start_close_deadline(now);
    }

    /// The member's outbound queue overflowed: it cannot keep up, so it is dropped.
    pub fn handle_outbound_overflow(&mut self, now: Now) {
        self.drop_member(
            now,
            LeaveReason::Error,
            close_code::POLICY_VIOLATION,
            "outbound queue overflow: client too slow",
        );
    }

    /// The server side (the session, shutdown) queued a close on this transport; the session
    /// already knows. The transport gets the close timeout to finish.
    pub fn handle_closed_by_server(&mut self, now: Now) {
        self.phase = Phase::Closed;
        self.start_close_deadline(now);
    }

    /// When a join routed now must have been answered by.
    fn join_deadline(&self) -> Instant {
        self.opened + self.config.heartbeat_timeout
    }

    /// A latency probe rides on the member's own traffic: queued after the reply to the first
    /// frame past the latency interval, so both go out in one write.
    fn maybe_probe(&mut self, now: Now) {
        if self.phase != Phase::Joined || now.instant < self.next_probe {
            return;
        }
        self.next_probe = now.instant + self.config.latency_interval;
        self.probe_counter += 1;
        self.outstanding_probe = Some((self.probe_counter, now.instant));
        self.actions
            .push_back(ConnAction::Ping(self.probe_counter.to_be_bytes()));
    }

    /// Closes the transport and then detaches the member, in that order, so this close (and
    /// its code) is queued before any close the session sends back.
    fn drop_member(&mut self, now: Now, reason: LeaveReason, code: u16, close_reason: &str) {
        let was_joined = self.phase == Phase::Joined;
        self.close(now, code, close_reason);
        if was_joined {
            self.actions.push_back(ConnAction::Detach(reason));
        }
    }

    fn close(&mut self, now: Now, code: u16, reason: &str) {
        if self.phase != Phase::Closed {
            self.phase = Phase::Closed;
            self.actions.push_back(ConnAction::Close {
                code,
                reason: reason.to_string(),
            });
            self.start_close_deadline(now);
        }
    }

    /// The close reason after a refused join: ours is `join rejected`; in the app's dialect,
    /// the words of the app's own server for the refusals it has (`docs/PROTOCOL.md` §10.7).
    fn join_rejected_reason(&self, error: &ServerMessage) -> &'static str {
        match (self.dialect, error) {
            (Some(Dialect::App), ServerMessage::Error { code, .. }) => match code {
                ErrorCode::SessionNotFound => "Invalid session",
                ErrorCode::AlreadyJoined => "Already joined",
                ErrorCode::SessionFull => "Session full",
                _ => "join rejected",
            },
            _ => "join rejected",
        }
    }

    fn start_close_deadline(&mut self, now: Now) {
        if self.close_deadline.is_none() && !self.aborted {
            self.close_deadline = Some(now.instant + self.config.close_timeout);
        }
    }

    /// Rate limit (`crate::limits`): `false` drops the frame. A dropped frame gets a
    /// `rate_limited` error at most once a second; more than `rate_burst` drops within 10 s
    /// close the socket with 1008.
    fn admit(&mut self, now: Now) -> bool {
        if self.phase == Phase::Closed {
            return false;
        }
        match self.rate.check(now.instant) {
            Verdict::Admit => true,
            Verdict::Drop { notify: false } => false,
            Verdict::Drop { notify: true } => {
                let message = format!(
                    "over the rate limit of {} messages/s (burst {}); messages are dropped until the rate falls",
                    self.config.rate_per_sec, self.config.rate_burst
                );
                match self.link.as_deref() {
                    // Numbered: say where to resend from.
                    Some(Link::Numbered { inbound, .. }) => {
                        let last = inbound.last();
                        self.report(ServerMessage::Error {
                            code: ErrorCode::RateLimited,
                            message: format!("{message}; resend from seq {}", last + 1),
                            details: Some(serde_json::json!({ "lastSeq": last })),
                        });
                    }
                    _ => self.reply_error(now, ErrorCode::RateLimited, message),
                }
                false
            }
            Verdict::Close => {
                self.drop_member(
                    now,
                    LeaveReason::Error,
                    close_code::POLICY_VIOLATION,
                    "rate limit exceeded",
                );
                false
            }
        }
    }

    fn handle_message(&mut self, now: Now, message: ClientMessage, frame_len: usize, first: bool) {
        let type_name = message.type_name();
        match message {
            ClientMessage::Token { token, last_seq } => self.handle_token(now, token, last_seq, first),
            ClientMessage::Ack { seq } => match self.phase {
                Phase::Joined if self.is_numbered() => {
                    self.forward(MemberCommand::Ack(seq))
                }
                Phase::Joined => self.reply_error(
                    now,
                    ErrorCode::InvalidMessage,
                    "ack: this connection is not resumable (it did no token handshake)",
                ),
                _ => self.reply_error(
                    now,
                    ErrorCode::InvalidMessage,
                    "ack: send `join` first; this connection is not in a session",
                ),
            },
            ClientMessage::Ping { timestamp } => self.actions.push_back(ConnAction::Reply(
                ServerMessage::Pong,
                Stamp::Echo(timestamp),
            )),
            ClientMessage::Heartbeat | ClientMessage::Pong => {}
            ClientMessage::Join(_) if matches!(self.link.as_deref(), Some(Link::PreConnected { .. })) => {
                self.reply_error(
                    now,
                    ErrorCode::InvalidMessage,
                    "join: the resume handshake is not complete; confirm your token first (send it again)",
                )
            }
            ClientMessage::Join(join) => match self.phase {
                Phase::AwaitingJoin => {
                    if let Some(v) = &join.protocol_version {
                        if !version_compatible(v, PROTOCOL_VERSION) {
                            let refusal = JoinError::VersionMismatch { client: v.clone() };
                            self.actions.push_back(ConnAction::Reply(
                                refusal.to_message(),
                                Stamp::Now(now.unix_ms),
                            ));
                            let reason = self.join_rejected_reason(&refusal.to_message());
                            self.close(now, close_code::NORMAL, reason);
                            return;
                        }
                    }
                    self.phase = Phase::Joining;
                    self.actions.push_back(ConnAction::Join(join));
                }
                _ => self.reply_error(
                    now,
                    ErrorCode::InvalidMessage,
                    "join: this connection has already joined a session",
                ),
            },
            other => {
                if self.phase != Phase::Joined {
                    self.reply_error(
                        now,
                        ErrorCode::InvalidMessage,
                        format!(
                            "{type_name}: send `join` first; this connection is not in a session"
                        ),
                    );
                    return;
                }
                let command = match other {
                    ClientMessage::Leave { .. } => MemberCommand::Leave,
                    ClientMessage::Kick { member_id, reason } => {
                        MemberCommand::Kick { member_id, reason }
                    }
                    ClientMessage::MemberList => MemberCommand::MemberList,
                    ClientMessage::MediaToken => MemberCommand::MediaToken,
                    ClientMessage::StateSet {
                        change,
                        base_version,
                        term,
                    } => MemberCommand::StateSet {
                        change: Box::new(change),
                        base_version,
                        term,
                    },
                    ClientMessage::HandoffReady { ready } => MemberCommand::HandoffReady(ready),
                    ClientMessage::HandoffRequest { target_id } => {
                        MemberCommand::HandoffRequest { target: target_id }
                    }
                    ClientMessage::HandoffAccept { handoff_id } => MemberCommand::HandoffAnswer {
                        handoff_id,
                        accept: true,
                    },
                    ClientMessage::HandoffDecline { handoff_id, .. } => {
                        MemberCommand::HandoffAnswer {
                            handoff_id,
                            accept: false,
                        }
                    }
                    ClientMessage::Message { data, to } => {
                        if frame_len > self.config.max_data_bytes {
                            self.reply_error(
                                now,
                                ErrorCode::TooLarge,
                                format!(
                                    "message: {frame_len} bytes is over the {}-byte limit for application messages",
                                    self.config.max_data_bytes
                                ),
                            );
                            return;
                        }
                        MemberCommand::Message { data, to }
                    }
                    ClientMessage::Token { .. }
                    | ClientMessage::Ack { .. }
                    | ClientMessage::Join(_)
                    | ClientMessage::Ping { .. }
                    | ClientMessage::Heartbeat
                    | ClientMessage::Pong => {
                        unreachable!("handled above")
                    }
                };
                self.forward(command);
            }
        }
    }

    /// A `token` frame: a step of the handshake, a resume, or a formal disconnect.
    fn handle_token(&mut self, now: Now, token: String, last_seq: Option<u64>, first: bool) {
        let invalid = |text: &str| text.to_string();
        let outcome: Result<(), String> = match (self.link.as_deref(), last_seq) {
            // Formal disconnect: the connection token, without `lastSeq`, on its own socket.
            (Some(Link::Numbered { token: t, .. }), None) if *t == token => {
                self.forward(MemberCommand::Leave);
                Ok(())
            }
            (Some(Link::Numbered { .. }), _) => Err(invalid(
                "token: this connection is resumable and joined; only its own connection token (without lastSeq) may be sent, to disconnect",
            )),
            _ if self.phase == Phase::Joined => Err(invalid(
                "token: this connection joined without the resume handshake; it cannot start one now",
            )),
            (Some(Link::Resuming { .. }), _) => Err(invalid("token: a resume is on its way")),
            // Step 3: the client confirms its token; the server confirms its own (step 4).
            (Some(Link::PreConnected { remote, .. }), None) if *remote == token => {
                let Some(Link::PreConnected { local, remote }) = self.link.take().map(|b| *b)
                else {
                    unreachable!("matched above")
                };
                let connection = merge_tokens(&local, &remote);
                self.reply(now, ServerMessage::Token { token: local });
                self.link = Some(Box::new(Link::Agreed { token: connection }));
                Ok(())
            }
            (Some(Link::PreConnected { .. }), _) => Err(invalid(
                "token: expected your own token again (step 3 of the handshake)",
            )),
            (Some(Link::Agreed { .. }), _) => Err(invalid(
                "token: the handshake is complete; send `join`",
            )),
            // A resume: the connection token with `lastSeq`, as the socket's first frame.
            (None, Some(last_seq)) if first && token.len() == CONNECTION_TOKEN_LEN => {
                self.phase = Phase::Joining;
                self.link = Some(Box::new(Link::Resuming {
                    token: token.clone(),
                }));
                self.actions
                    .push_back(ConnAction::Resume { token, last_seq });
                Ok(())
            }
            (_, Some(_)) if token.len() == CONNECTION_TOKEN_LEN => Err(invalid(
                "token: a resume (with lastSeq) must be the first frame on a new socket; after resume_failed, start a fresh handshake",
            )),
            (_, Some(_)) => Err(invalid(
                "token: lastSeq goes with a 64-character connection token (a resume)",
            )),
            // Step 1 (also after a refused resume): answer with the server's token.
            (None | Some(Link::Refused), None) if token.len() == TOKEN_LEN => {
                let local = (self.config.local_token)();
                self.reply(
                    now,
                    ServerMessage::Token {
                        token: local.clone(),
                    },
                );
                self.link = Some(Box::new(Link::PreConnected {
                    local,
                    remote: token,
                }));
                Ok(())
            }
            (None | Some(Link::Refused), None) => Err(invalid(
                "token: a connection token without lastSeq is a disconnect, and only on the socket carrying the connection; to resume, send lastSeq",
            )),
        };
        if let Err(text) = outcome {
            self.reply_error(now, ErrorCode::InvalidMessage, text);
        }
    }

    fn reply(&mut self, now: Now, message: ServerMessage) {
        self.actions
            .push_back(ConnAction::Reply(message, Stamp::Now(now.unix_ms)));
    }

    fn reply_error(&mut self, now: Now, code: ErrorCode, message: impl Into<String>) {
        let error = ServerMessage::error(code, message);
        if self.phase == Phase::Joined && self.is_numbered() {
            self.report(error);
        } else {
            self.reply(now, error);
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod resume_tests;
