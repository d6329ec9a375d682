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
//! It is the *transport* half of a member; the member's place lives in the session, so a
//! later layer can move a member onto a new transport.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use loudsync_protocol::app::{self, Dialect};
use loudsync_protocol::{
    client::version_compatible, close_code, decode, ClientMessage, ErrorCode, Join, LeaveReason,
    RawJson, ServerMessage, Stamp, PROTOCOL_VERSION,
};

use crate::directory::JoinError;
use crate::limits::{RateLimiter, Verdict};
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
    /// Application `message`.
    Message {
        /// The payload, as the sender wrote it.
        data: RawJson,
        /// One recipient, or everyone else.
        to: Option<String>,
    },
    /// A new round-trip-time measurement, in ms (sent only when it changed).
    Latency(u64),
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
    /// The member's transport is gone without `leave`: detach it from its place.
    Detach(LeaveReason),
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
            Phase::Joined => Some(self.next_check),
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
            Dialect::LoudSync => decode(text),
            Dialect::App => app::decode(text),
        };
        match decoded {
            Ok(message) => {
                self.last_seen = now.instant;
                self.handle_message(now, message, text.len());
                self.maybe_probe(now);
            }
            Err(e) => self.reply_error(now, ErrorCode::InvalidMessage, e.message),
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
        if self.phase == Phase::Closed || t < self.next_check.min(self.join_deadline()) {
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
        if matches!(self.phase, Phase::AwaitingJoin | Phase::Joining) && t >= self.join_deadline() {
            self.close(
                now,
                close_code::NORMAL,
                "no join within the heartbeat timeout",
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
                self.reply_error(
                    now,
                    ErrorCode::RateLimited,
                    format!(
                        "over the rate limit of {} messages/s (burst {}); messages are dropped until the rate falls",
                        self.config.rate_per_sec, self.config.rate_burst
                    ),
                );
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

    fn handle_message(&mut self, now: Now, message: ClientMessage, frame_len: usize) {
        let type_name = message.type_name();
        match message {
            ClientMessage::Ping { timestamp } => self.actions.push_back(ConnAction::Reply(
                ServerMessage::Pong,
                Stamp::Echo(timestamp),
            )),
            ClientMessage::Heartbeat | ClientMessage::Pong => {}
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
                    ClientMessage::Token { .. } | ClientMessage::Ack { .. } => {
                        self.reply_error(
                            now,
                            ErrorCode::InvalidMessage,
                            format!("{type_name}: this connection is not resumable"),
                        );
                        return;
                    }
                    ClientMessage::Join(_)
                    | ClientMessage::Ping { .. }
                    | ClientMessage::Heartbeat
                    | ClientMessage::Pong => {
                        unreachable!("handled above")
                    }
                };
                self.actions.push_back(ConnAction::Session(command));
            }
        }
    }

    fn reply_error(&mut self, now: Now, code: ErrorCode, message: impl Into<String>) {
        self.actions.push_back(ConnAction::Reply(
            ServerMessage::error(code, message),
            Stamp::Now(now.unix_ms),
        ));
    }
}

#[cfg(test)]
mod tests;
