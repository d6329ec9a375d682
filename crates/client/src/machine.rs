//! The client's rules as a sans-IO state machine: connection states, join, heartbeats and
//! pings, latency, the member table, silence detection, and reconnection with its attempts.
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

use loudsync_protocol::{
    close_code, decode_server, encode_client, server::SessionInfo, AnyErrorCode, ClientMessage,
    DeviceType, ErrorCode, Join, LeaveReason, MemberInfo, RawJson, Received, ServerMessage,
};
use serde_json::Value;

use crate::config::ClientConfig;

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

/// Something the application should know.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The connection state changed.
    StateChanged(ConnectionState),
    /// Joined (again, after a reconnection: the server assigns a new id each time).
    Welcome {
        /// This member's id in the session.
        client_id: String,
        /// The session.
        session: SessionInfo,
    },
    /// The full member list (host first, then join order).
    MemberList(Vec<MemberInfo>),
    /// A member joined.
    MemberJoined(MemberInfo),
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
    /// The client is not connected (connecting, reconnecting, failed or ended).
    #[error("not connected")]
    NotConnected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not started.
    Idle,
    /// A socket is being opened; `attempt` 0 is the first connect.
    Connecting { attempt: u32 },
    /// `join` sent, waiting for `welcome`.
    Joining { attempt: u32, deadline: Instant },
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
    /// This client sent `leave`.
    Leaving,
    /// `kicked` arrived.
    Kicked(String),
    /// `session_closed` arrived; final unless the server closes with 1001 (going away).
    SessionClosed(String),
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
}

impl Machine {
    /// A machine for `config`; `now` and `unix_ms` anchor its clock.
    pub fn new(config: ClientConfig, now: Instant, unix_ms: u64) -> Self {
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

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Machine::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Connected => Some(
                self.next_beat
                    .min(self.last_heard + self.config.silence_timeout),
            ),
            Phase::Joining { deadline, .. } => Some(deadline),
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
        self.set_state(ConnectionState::Connecting);
        self.actions.push_back(Action::Connect);
    }

    /// The socket is open: send `join`.
    pub fn handle_connected(&mut self, now: Instant) {
        let Phase::Connecting { attempt } = self.phase else {
            return;
        };
        self.ending = Ending::None;
        self.last_heard = now;
        self.phase = Phase::Joining {
            attempt,
            deadline: now + self.config.join_timeout,
        };
        let join = ClientMessage::Join(Join {
            session_id: self.config.session_id.clone(),
            device_info: self.config.device.clone(),
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

    /// Any frame arrived (control frames included): the server is alive.
    pub fn handle_activity(&mut self, now: Instant) {
        self.last_heard = now;
    }

    /// A text frame arrived.
    pub fn handle_text(&mut self, now: Instant, text: &str) {
        self.last_heard = now;
        let (received, timestamp) = match decode_server(text) {
            Ok(decoded) => decoded,
            Err(error) => {
                // Not a message, or a known type with broken fields: nothing to act on.
                tracing::debug!(%error, bytes = text.len(), "undecodable server frame ignored");
                return;
            }
        };
        match (self.phase, received) {
            (Phase::Joining { .. } | Phase::Connected, Received::Unknown { kind, raw }) => {
                self.emit(Event::Unknown { kind, raw });
            }
            (
                Phase::Joining { .. },
                Received::Known(ServerMessage::Welcome {
                    client_id,
                    session_info,
                    ..
                }),
            ) => {
                self.phase = Phase::Connected;
                self.next_beat = now;
                self.client_id = Some(client_id.clone());
                self.session = Some((*session_info).clone());
                self.members.clear();
                self.bump();
                self.set_state(ConnectionState::Connected);
                self.emit(Event::Welcome {
                    client_id,
                    session: *session_info,
                });
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
            ) => self.emit(Event::Error(ServerError {
                code,
                message,
                details,
            })),
            _ => {}
        }
    }

    fn handle_session_message(
        &mut self,
        now: Instant,
        message: ServerMessage,
        timestamp: Option<serde_json::Number>,
    ) {
        match message {
            ServerMessage::MemberList { members } => {
                self.members = members.clone();
                self.bump();
                self.emit(Event::MemberList(members));
            }
            ServerMessage::MemberJoined { member } => {
                self.members.retain(|m| m.id != member.id);
                if member.is_host {
                    self.members.insert(0, member.clone());
                } else {
                    self.members.push(member.clone());
                }
                self.bump();
                self.emit(Event::MemberJoined(member));
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
            // `decode_server` gives every `error` as `Received::Error`; a second `welcome`
            // means nothing.
            ServerMessage::Error { .. } | ServerMessage::Welcome { .. } => {}
            // The resume layer's frames; this connection did no handshake.
            ServerMessage::MemberUpdated { .. }
            | ServerMessage::Token { .. }
            | ServerMessage::Resumed { .. }
            | ServerMessage::ResumeFailed { .. }
            | ServerMessage::Ack { .. } => {}
        }
    }

    /// The socket ended; `close` is the server's close code and reason if a close frame came.
    pub fn handle_closed(&mut self, now: Instant, close: Option<(u16, &str)>) {
        let close_code = close.map(|(code, _)| code);
        match self.phase {
            Phase::Connected | Phase::Joining { .. } => {}
            _ => return,
        }
        let attempt = match self.phase {
            Phase::Joining { attempt, .. } => attempt,
            _ => 0,
        };
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
                self.lose(now, attempt, format!("server going away: {reason}"))
            }
            Ending::None if close_code == Some(close_code::GOING_AWAY) => {
                self.lose(now, attempt, "server going away".to_string())
            }
            Ending::None => {
                let why = match close {
                    Some((code, "")) => format!("connection closed by the server ({code})"),
                    Some((code, text)) => {
                        format!("connection closed by the server ({code} {text})")
                    }
                    None => "connection dropped".to_string(),
                };
                if self.is_host() && joined {
                    self.host_lost(why);
                } else {
                    self.lose(now, attempt, why);
                }
            }
        }
    }

    /// Timers: heartbeat and ping, silence detection, join timeout, reconnection delay.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Connected => {
                if now.saturating_duration_since(self.last_heard) >= self.config.silence_timeout {
                    self.actions.push_back(Action::CloseSocket);
                    let why = "no sign of the server within the silence timeout".to_string();
                    if self.is_host() {
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
            }
            Phase::Joining { attempt, deadline } if now >= deadline => {
                self.actions.push_back(Action::CloseSocket);
                self.attempt_failed(now, attempt, "no welcome within the join timeout".into());
            }
            Phase::Waiting { attempt, at } if now >= at => {
                self.phase = Phase::Connecting { attempt };
                self.emit(Event::Reconnecting {
                    attempt,
                    of: self.config.reconnect.attempts,
                });
                self.actions.push_back(Action::Connect);
            }
            _ => {}
        }
    }

    /// Sends `leave`; the server closes the socket. Ends at once if not connected.
    pub fn leave(&mut self, now: Instant) {
        if self.phase == Phase::Connected {
            self.ending = Ending::Leaving;
            let leave = self.frame(now, &ClientMessage::leave(None));
            self.actions.push_back(Action::Send(leave));
        } else if self.phase != Phase::Ended {
            self.actions.push_back(Action::CloseSocket);
            self.end();
        }
    }

    /// The driver gave up waiting for the server to close after `leave`.
    pub fn handle_leave_timeout(&mut self) {
        if self.ending == Ending::Leaving {
            self.actions.push_back(Action::CloseSocket);
            self.end();
        }
    }

    /// Sends a `ping` now (one is also sent every heartbeat interval).
    pub fn ping(&mut self, now: Instant) -> Result<(), CommandError> {
        let ping = ClientMessage::ping(self.unix_ms(now));
        self.send(now, &ping)
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

    /// Sends application data to everyone else, or to one member.
    pub fn send_message(
        &mut self,
        now: Instant,
        data: Value,
        to: Option<&str>,
    ) -> Result<(), CommandError> {
        self.send(now, &ClientMessage::message(RawJson::from_value(&data), to))
    }

    fn send(&mut self, now: Instant, message: &ClientMessage) -> Result<(), CommandError> {
        if self.phase != Phase::Connected || self.ending != Ending::None {
            return Err(CommandError::NotConnected);
        }
        let frame = self.frame(now, message);
        self.actions.push_back(Action::Send(frame));
        Ok(())
    }

    /// The text frame of `message`, stamped with the current time.
    fn frame(&self, now: Instant, message: &ClientMessage) -> String {
        encode_client(message, self.unix_ms(now))
            .expect("the SDK sends only our dialect's messages")
    }

    fn is_host(&self) -> bool {
        self.config.device.kind == DeviceType::Host
    }

    /// A joined host's connection was lost, not by a server going away: the server ended the
    /// session with it (`Host disconnected`, or `Host timed out` after a freeze). Rejoining as
    /// host would open a new, empty session under the same id, so the host is told instead.
    fn host_lost(&mut self, why: String) {
        self.emit(Event::ConnectionLost {
            reason: why.clone(),
        });
        self.emit(Event::SessionClosed {
            reason: format!(
                "this host's connection was lost ({why}); the server ends a session with its \
                 host's connection, so it was not re-created"
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
        if attempt == 0 {
            // The very first connection: nothing to reconnect to.
            self.emit(Event::Failed { reason });
            self.phase = Phase::Ended;
            self.set_state(ConnectionState::Failed);
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
        self.set_state(ConnectionState::Reconnecting);
    }

    fn fail(&mut self, reason: String) {
        self.clear_session();
        self.phase = Phase::Ended;
        self.set_state(ConnectionState::Failed);
        self.emit(Event::Failed { reason });
    }

    fn end(&mut self) {
        self.clear_session();
        self.phase = Phase::Ended;
        self.set_state(ConnectionState::Disconnected);
    }

    fn clear_session(&mut self) {
        self.client_id = None;
        self.session = None;
        self.members.clear();
        self.latency = None;
        self.bump();
    }

    fn set_state(&mut self, state: ConnectionState) {
        if self.state != state {
            self.state = state;
            self.bump();
            self.emit(Event::StateChanged(state));
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
