//! One client socket: what a frame means before it reaches a session.
//!
//! The machine decodes text frames, answers `ping` itself, keeps the connection's liveness
//! (any valid protocol message refreshes it; a connection silent for the heartbeat timeout is
//! dropped at the next check), measures round-trip time with WebSocket pings, enforces the
//! message rate limit, and forwards session messages only once `join` has succeeded.
//! The first text frame decides the connection's dialect (ours or the LOUDSYNC app's); both
//! decode into the same messages, so every rule below holds for both.
//! It is the *socket* half of a member; the logical member lives in the session, so a later
//! layer can move a member onto a new socket.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use loudsync_protocol::app::{self, Dialect};
use loudsync_protocol::{
    client::version_compatible, close_code, decode, ClientMessage, ErrorCode, Join, LeaveReason,
    RawJson, ServerMessage, Stamp, PROTOCOL_VERSION,
};

use crate::limits::TokenBucket;
use crate::Now;

/// The settings a connection runs with.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// A connection silent this long is dropped (document: 15 s).
    pub heartbeat_timeout: Duration,
    /// How often liveness is checked (document: 5 s).
    pub heartbeat_check_interval: Duration,
    /// How often a WebSocket ping measures round-trip time.
    pub latency_interval: Duration,
    /// Messages per second allowed on average (0 = unlimited).
    pub rate_per_sec: u32,
    /// Messages allowed in a burst.
    pub rate_burst: u32,
    /// Largest `message` frame, in bytes, relayed to members; larger ones get `too_large`.
    pub max_data_bytes: usize,
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
    /// A new round-trip-time measurement, in ms.
    Latency(u64),
    /// The socket is gone without `leave` (closed, timed out, or dropped for a policy).
    Disconnected(LeaveReason),
}

/// What the I/O layer must do for this connection.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnAction {
    /// Send this message on this socket only.
    Reply(ServerMessage, Stamp),
    /// Route this join to its session (creating it for a host); report the result with
    /// [`Connection::handle_join_result`].
    Join(Join),
    /// Forward this to the member's session.
    Session(MemberCommand),
    /// Send a WebSocket ping control frame with this payload.
    Ping([u8; 8]),
    /// Close the socket with this code and reason, after what is already queued.
    Close {
        /// WebSocket close code.
        code: u16,
        /// Close reason text.
        reason: String,
    },
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

/// The state machine of one client socket.
#[derive(Debug)]
pub struct Connection {
    config: ConnectionConfig,
    phase: Phase,
    /// Decided by the first text frame, for the connection's whole life.
    dialect: Option<Dialect>,
    opened: Instant,
    last_seen: Instant,
    next_check: Instant,
    next_ping: Instant,
    outstanding_ping: Option<(u64, Instant)>,
    ping_counter: u64,
    bucket: TokenBucket,
    /// Messages dropped since the last one under the rate limit.
    rate_violations: u32,
    actions: VecDeque<ConnAction>,
}

impl Connection {
    /// A connection opened at `now`.
    pub fn new(config: ConnectionConfig, now: Now) -> Self {
        let t = now.instant;
        Connection {
            bucket: TokenBucket::new(config.rate_per_sec, config.rate_burst, t),
            phase: Phase::AwaitingJoin,
            dialect: None,
            opened: t,
            last_seen: t,
            next_check: t + config.heartbeat_check_interval,
            next_ping: t + config.latency_interval,
            outstanding_ping: None,
            ping_counter: 0,
            rate_violations: 0,
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

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<ConnAction> {
        self.actions.pop_front()
    }

    /// When [`Connection::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Closed => None,
            Phase::Joined => Some(self.next_check.min(self.next_ping)),
            Phase::AwaitingJoin | Phase::Joining => Some(self.next_check),
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
        let Some((counter, sent)) = self.outstanding_ping else {
            return;
        };
        if payload == counter.to_be_bytes() {
            self.outstanding_ping = None;
            if self.phase == Phase::Joined {
                let rtt = now.instant.saturating_duration_since(sent).as_millis() as u64;
                self.actions
                    .push_back(ConnAction::Session(MemberCommand::Latency(rtt)));
            }
        }
    }

    /// The session's answer to a [`ConnAction::Join`]: `Ok` once `welcome` is queued, or the
    /// rejection to send before closing.
    pub fn handle_join_result(&mut self, now: Now, result: Result<(), ServerMessage>) {
        if self.phase != Phase::Joining {
            return;
        }
        match result {
            Ok(()) => {
                self.phase = Phase::Joined;
                self.next_ping = now.instant + self.config.latency_interval;
            }
            Err(error) => {
                self.actions
                    .push_back(ConnAction::Reply(error, Stamp::Now(now.unix_ms)));
                self.close(close_code::NORMAL, "join rejected");
            }
        }
    }

    /// Timers: the liveness check and the latency ping.
    pub fn handle_timeout(&mut self, now: Now) {
        let t = now.instant;
        if self.phase == Phase::Closed {
            return;
        }
        if t >= self.next_check {
            self.next_check = t + self.config.heartbeat_check_interval;
            if t.saturating_duration_since(self.last_seen) >= self.config.heartbeat_timeout {
                self.drop_member(
                    LeaveReason::Timeout,
                    close_code::NORMAL,
                    "heartbeat timeout",
                );
                return;
            }
            if self.phase == Phase::AwaitingJoin
                && t.saturating_duration_since(self.opened) >= self.config.heartbeat_timeout
            {
                self.close(close_code::NORMAL, "no join within the heartbeat timeout");
                return;
            }
        }
        if self.phase == Phase::Joined && t >= self.next_ping {
            self.next_ping = t + self.config.latency_interval;
            self.ping_counter += 1;
            self.outstanding_ping = Some((self.ping_counter, t));
            self.actions
                .push_back(ConnAction::Ping(self.ping_counter.to_be_bytes()));
        }
    }

    /// The socket closed (peer close, I/O error, end of stream) without the server closing it.
    pub fn handle_socket_closed(&mut self) {
        if self.phase == Phase::Joined {
            self.actions
                .push_back(ConnAction::Session(MemberCommand::Disconnected(
                    LeaveReason::Error,
                )));
        }
        self.phase = Phase::Closed;
    }

    /// The member's outbound queue overflowed: it cannot keep up, so it is dropped.
    pub fn handle_outbound_overflow(&mut self) {
        self.drop_member(
            LeaveReason::Error,
            close_code::POLICY_VIOLATION,
            "outbound queue overflow: client too slow",
        );
    }

    /// The server (session or shutdown) closed this socket; the session already knows.
    pub fn handle_closed_by_server(&mut self) {
        self.phase = Phase::Closed;
    }

    /// Closes the socket and then tells the session, in that order, so this close (and its
    /// code) is queued before any close the session sends back.
    fn drop_member(&mut self, reason: LeaveReason, code: u16, close_reason: &str) {
        let was_joined = self.phase == Phase::Joined;
        self.close(code, close_reason);
        if was_joined {
            self.actions
                .push_back(ConnAction::Session(MemberCommand::Disconnected(reason)));
        }
    }

    fn close(&mut self, code: u16, reason: &str) {
        if self.phase != Phase::Closed {
            self.phase = Phase::Closed;
            self.actions.push_back(ConnAction::Close {
                code,
                reason: reason.to_string(),
            });
        }
    }

    /// Rate limit: `false` drops the frame. The first frame over the limit gets an error; if
    /// another full burst arrives over the limit, the socket is closed with 1008.
    fn admit(&mut self, now: Now) -> bool {
        if self.phase == Phase::Closed {
            return false;
        }
        if self.bucket.try_take(now.instant) {
            self.rate_violations = 0;
            return true;
        }
        self.rate_violations += 1;
        if self.rate_violations == 1 {
            self.reply_error(
                now,
                ErrorCode::RateLimited,
                format!(
                    "over the rate limit of {} messages/s (burst {}); messages are dropped until the rate falls",
                    self.config.rate_per_sec, self.config.rate_burst
                ),
            );
        } else if self.rate_violations > self.config.rate_burst.max(1) {
            self.drop_member(
                LeaveReason::Error,
                close_code::POLICY_VIOLATION,
                "rate limit exceeded",
            );
        }
        false
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
                            self.reply_error(
                                now,
                                ErrorCode::VersionMismatch,
                                format!(
                                    "protocol version {v} is not supported; this server speaks {PROTOCOL_VERSION}"
                                ),
                            );
                            self.close(close_code::NORMAL, "join rejected");
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
