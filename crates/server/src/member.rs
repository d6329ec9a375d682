//! A member's driver: the glue between one transport and the member's session, written once
//! for every transport (WebSocket today; server-sent events + HTTP posts next).
//!
//! A transport (see [`crate::ws_pump`]) hands the driver what arrived (text, binary, a pong,
//! the transport's end) and asks it when to wake; the driver feeds the core's
//! [`Connection`] machine with the time and carries out what it decides, at once and without
//! waiting: replies and probes go on the member's outbox, a join is routed by the registry
//! and its answer awaited as one more thing the transport polls ([`MemberDriver::poll_join`]),
//! commands and detaches go to the session's task. A resume is routed the same way: the
//! connection token is looked up in the server's token table, and the session that holds
//! the place is asked to move it onto this transport. The transport only moves bytes.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use loudsync_core::connection::{ConnAction, Connection, MemberCommand, ResumeAnswer};
use loudsync_core::directory::JoinError;
use loudsync_core::resume::TokenState;
use loudsync_core::Now;
use loudsync_protocol::{ErrorCode, LeaveReason, ResumeFailure, ServerMessage};
use tokio::sync::oneshot;

use crate::admission::Permit;
use crate::clock::now;
use crate::encoding;
use crate::outbox::{OutFrame, Outbox};
use crate::sessions::{JoinResult, Joining, ResumeRequest, SessionHandle, SessionInput};
use crate::state::ServerState;

/// Where a transport comes from.
#[derive(Debug)]
pub struct Peer {
    /// The TCP peer (for logs).
    pub socket: SocketAddr,
    /// The client's address: the TCP peer, or the client a trusted proxy named. Join attempts
    /// are counted under it, and the app's dialect is shown it.
    pub client: IpAddr,
    /// The transport's place among its address's unjoined WebSockets, given back once it
    /// has joined (or when the transport ends).
    pub unjoined: Option<Permit>,
}

impl From<SocketAddr> for Peer {
    /// A peer that is its own client, holding no unjoined place.
    fn from(socket: SocketAddr) -> Self {
        Peer {
            socket,
            client: socket.ip(),
            unjoined: None,
        }
    }
}

/// The member a transport carries, once joined (or while its join is on its way).
struct Membership {
    member_id: String,
    session_id: String,
    session: SessionHandle,
}

/// Drives one member over whatever transport calls it.
pub struct MemberDriver {
    state: Arc<ServerState>,
    conn: Connection,
    outbox: Arc<Outbox>,
    peer: Peer,
    membership: Option<Membership>,
    /// The session's answer to a join on its way.
    join_answer: Option<oneshot::Receiver<JoinResult>>,
    /// The session's answer to a resume on its way.
    resume_answer: Option<oneshot::Receiver<ResumeAnswer>>,
    /// Cluster mode: the answer to a resume whose token is being looked up in Redis, with
    /// the place it leads to.
    cluster_resume: Option<oneshot::Receiver<ClusterResumed>>,
    /// This transport's id (the session ignores inputs from a transport its member left).
    socket: u64,
    aborted: bool,
}

impl MemberDriver {
    /// A driver for a transport just opened from `peer`, writing into `outbox`.
    /// `socket` is the transport's id, unique in the server.
    pub fn new(state: Arc<ServerState>, outbox: Arc<Outbox>, socket: u64, peer: Peer) -> Self {
        MemberDriver {
            conn: Connection::new(state.config.connection(), now()),
            state,
            outbox,
            peer,
            membership: None,
            join_answer: None,
            resume_answer: None,
            cluster_resume: None,
            socket,
            aborted: false,
        }
    }

    /// The member's outbox, which the transport drains.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// A text frame arrived.
    pub fn handle_text(&mut self, text: &str) {
        self.state.metrics.frames_received.increment(1);
        self.drive(|conn, now| conn.handle_text(now, text));
    }

    /// A binary frame arrived.
    pub fn handle_binary(&mut self) {
        self.state.metrics.frames_received.increment(1);
        self.drive(|conn, now| conn.handle_binary(now));
    }

    /// A pong to one of our probes arrived.
    pub fn handle_pong(&mut self, payload: &[u8]) {
        self.drive(|conn, now| conn.handle_pong(now, payload));
    }

    /// The transport ended or is ending from the client's side.
    pub fn handle_transport_closed(&mut self) {
        self.drive(|conn, now| conn.handle_transport_closed(now));
    }

    /// The transport failed in a way a resume cannot mend (a framing violation, a frame over
    /// the size limit).
    pub fn handle_transport_failed(&mut self) {
        self.drive(|conn, now| conn.handle_transport_failed(now));
    }

    /// A close was queued on the outbox by the server side (session, shutdown).
    pub fn handle_closed_by_server(&mut self) {
        self.drive(|conn, now| conn.handle_closed_by_server(now));
    }

    /// The outbox refused a frame: the member is too slow.
    pub fn handle_overflow(&mut self) {
        self.state.metrics.slow_consumer_disconnects.increment(1);
        self.drive(|conn, now| conn.handle_outbound_overflow(now));
    }

    /// A timer is due.
    pub fn handle_timeout(&mut self) {
        self.drive(|conn, now| conn.handle_timeout(now));
    }

    /// Feeds the connection machine one input at the current time (one clock read), then
    /// carries out what it decided.
    fn drive(&mut self, input: impl FnOnce(&mut Connection, Now)) {
        let now = now();
        input(&mut self.conn, now);
        self.carry_out(now);
    }

    /// When [`MemberDriver::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conn.poll_timeout()
    }

    /// Whether the transport should hold off reading (a join is on its way).
    pub fn reading_paused(&self) -> bool {
        self.conn.reading_paused()
    }

    /// Whether the transport must be dropped now (its close did not finish in time).
    pub fn is_aborted(&self) -> bool {
        self.aborted
    }

    /// Polls the answer to a join or a resume on its way; `Ready` once it arrived and was
    /// handled.
    pub fn poll_join(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(answer) = self.cluster_resume.as_mut() {
            let Poll::Ready(answer) = std::pin::Pin::new(answer).poll(cx) else {
                return Poll::Pending;
            };
            self.cluster_resume = None;
            let Ok(ClusterResumed { answer, place }) = answer else {
                // The lookup gave up without an answer: the socket was closed with 1012.
                return Poll::Ready(());
            };
            if matches!(answer, ResumeAnswer::Resumed { .. }) {
                self.peer.unjoined = None;
                self.membership = place;
            }
            self.drive(|conn, now| conn.handle_resume_result(now, answer));
            return Poll::Ready(());
        }
        if let Some(answer) = self.resume_answer.as_mut() {
            let Poll::Ready(answer) = std::pin::Pin::new(answer).poll(cx) else {
                return Poll::Pending;
            };
            self.resume_answer = None;
            // The session's task ended without answering: the session is gone.
            let answer = answer.unwrap_or(ResumeAnswer::Failed(ResumeFailure::SessionClosed));
            if matches!(answer, ResumeAnswer::Resumed { .. }) {
                self.peer.unjoined = None;
            } else {
                self.membership = None;
            }
            self.drive(|conn, now| conn.handle_resume_result(now, answer));
            return Poll::Ready(());
        }
        let Some(answer) = self.join_answer.as_mut() else {
            return Poll::Pending;
        };
        let Poll::Ready(result) = std::pin::Pin::new(answer).poll(cx) else {
            return Poll::Pending;
        };
        self.join_answer = None;
        let result = result.unwrap_or_else(|_| {
            // The session's task ended without answering.
            let session = self.membership.as_ref().map(|m| m.session_id.clone());
            Err(JoinError::Ended {
                session: session.unwrap_or_default(),
            }
            .to_message())
        });
        if result.is_err() {
            self.membership = None;
        } else {
            // Joined: no longer one of its address's unjoined sockets.
            self.peer.unjoined = None;
        }
        self.drive(|conn, now| conn.handle_join_result(now, result));
        Poll::Ready(())
    }

    /// Carries out what the connection machine decided at `now`. Never waits.
    fn carry_out(&mut self, now: Now) {
        while let Some(action) = self.conn.poll_action() {
            match action {
                ConnAction::Reply(message, stamp) => {
                    if let ServerMessage::Error { code, .. } = &message {
                        crate::metrics::Metrics::error_sent(code.as_str());
                    }
                    self.state.metrics.frames_sent.increment(1);
                    let bytes = encoding::encode(
                        self.conn.dialect(),
                        &message,
                        &stamp,
                        now.unix_ms,
                        &encoding::no_addresses,
                        self.state.ids.as_ref(),
                    );
                    // Our own frame: the transport drains the outbox before it waits again.
                    self.outbox.push_own(OutFrame::Text(bytes), now.instant);
                }
                ConnAction::Ping(payload) => {
                    self.outbox.push_own(OutFrame::Ping(payload), now.instant);
                }
                ConnAction::Join(join) => self.route_join(now, join),
                ConnAction::Session(command) => self.to_session(None, command),
                ConnAction::Numbered { seq, command } => self.to_session(Some(seq), command),
                ConnAction::Resume { token, last_seq } => self.route_resume(now, token, last_seq),
                ConnAction::Detach(reason) => self.detach(reason, false),
                ConnAction::DetachFatal(reason) => self.detach(reason, true),
                ConnAction::Close { code, reason } => {
                    self.outbox.force_close(code, reason);
                }
                ConnAction::Abort => self.aborted = true,
            }
        }
    }

    fn to_session(&self, seq: Option<u64>, command: MemberCommand) {
        if let Some(m) = &self.membership {
            m.session.send(SessionInput::Command {
                member_id: m.member_id.clone(),
                socket: self.socket,
                seq,
                command,
            });
        }
    }

    fn detach(&mut self, reason: LeaveReason, fatal: bool) {
        if reason == LeaveReason::Timeout {
            self.state.metrics.heartbeat_timeouts.increment(1);
        }
        if let Some(m) = self.membership.take() {
            m.session.send(SessionInput::Detach {
                member_id: m.member_id,
                socket: self.socket,
                reason,
                fatal,
            });
        }
    }

    /// Finds the place of connection `token` and asks its session to move it here; the
    /// answer arrives through [`MemberDriver::poll_join`].
    fn route_resume(&mut self, now: Now, token: String, last_seq: u64) {
        if self.state.cluster.is_some() {
            let (tx, rx) = oneshot::channel();
            tokio::spawn(cluster_resume(
                self.state.clone(),
                token,
                last_seq,
                self.socket,
                self.outbox.clone(),
                tx,
            ));
            self.cluster_resume = Some(rx);
            return;
        }
        let found = self
            .state
            .tokens
            .lock()
            .expect("tokens")
            .lookup(now.instant, &token);
        let place = match found {
            TokenState::Live(place) => place,
            TokenState::Ended(why) => {
                self.state.metrics.resume_outcome(why.as_str());
                self.state.events.resume_failed(why);
                return self
                    .conn
                    .handle_resume_result(now, ResumeAnswer::Failed(why));
            }
        };
        let Some(session) = self.state.registry.get(&place.session_id) else {
            self.state
                .metrics
                .resume_outcome(ResumeFailure::SessionClosed.as_str());
            self.state
                .events
                .resume_failed(ResumeFailure::SessionClosed);
            return self
                .conn
                .handle_resume_result(now, ResumeAnswer::Failed(ResumeFailure::SessionClosed));
        };
        let (reply, answer) = oneshot::channel();
        let request = Box::new(ResumeRequest {
            member_id: place.member_id.clone(),
            token,
            last_seq,
            socket: self.socket,
            outbox: self.outbox.clone(),
        });
        if !session.send(SessionInput::Resume { request, reply }) {
            self.state
                .metrics
                .resume_outcome(ResumeFailure::SessionClosed.as_str());
            return self
                .conn
                .handle_resume_result(now, ResumeAnswer::Failed(ResumeFailure::SessionClosed));
        }
        self.membership = Some(Membership {
            member_id: place.member_id,
            session_id: place.session_id,
            session,
        });
        self.resume_answer = Some(answer);
    }

    fn route_join(&mut self, now: Now, join: loudsync_protocol::Join) {
        if let Err(wait) = self.state.admission.try_join(now.instant, self.peer.client) {
            self.state.metrics.join_attempts_limited.increment(1);
            let retry_ms = wait.as_millis().max(1) as u64;
            self.conn.handle_join_result(
                now,
                Err(ServerMessage::Error {
                    code: ErrorCode::TooManyAttempts,
                    message: format!(
                        "too many join attempts from this address; retry in {retry_ms} ms"
                    ),
                    details: Some(serde_json::json!({ "retryAfterMs": retry_ms })),
                }),
            );
            return;
        }
        let joining = Joining {
            outbox: self.outbox.clone(),
            dialect: self.conn.dialect(),
            address: self.peer.client.to_string(),
            socket: self.socket,
            resume_token: self.conn.connection_token().map(str::to_string),
        };
        let routed = self.state.registry.join(&self.state, join, joining);
        match routed {
            Ok(routed) => {
                self.membership = Some(Membership {
                    member_id: routed.member_id,
                    session_id: routed.session_id,
                    session: routed.session,
                });
                self.join_answer = Some(routed.answer);
            }
            Err(refusal) => {
                // Answered at once (e.g. `session_not_found`): handled with the next action.
                self.conn.handle_join_result(now, Err(refusal));
            }
        }
    }
}

/// A cluster resume's answer and, when it resumed, the place it leads to.
struct ClusterResumed {
    answer: ResumeAnswer,
    place: Option<Membership>,
}

/// Cluster mode: looks connection `token` up in Redis (the place may be on any node) and
/// asks the session's forwarder on this node to resume it. A token Redis does not know is
/// `unknown_token`; one it knows as ended says why. If Redis cannot be asked, the socket is
/// closed with 1012 so the client resumes again shortly (a takeover or an outage alone never
/// makes a `resume_failed`).
async fn cluster_resume(
    state: Arc<ServerState>,
    token: String,
    last_seq: u64,
    socket: u64,
    outbox: Arc<Outbox>,
    reply: oneshot::Sender<ClusterResumed>,
) {
    let cluster = state.cluster.clone().expect("cluster mode");
    let fail = |why: ResumeFailure| {
        state.metrics.resume_outcome(why.as_str());
        state.events.resume_failed(why);
        ClusterResumed {
            answer: ResumeAnswer::Failed(why),
            place: None,
        }
    };
    let retry_later = || {
        state.metrics.cluster_unavailable.increment(1);
        outbox.force_close(
            loudsync_protocol::close_code::SERVICE_RESTART,
            "cluster unavailable: resume again".to_string(),
        );
    };
    let value = match cluster.store.get_token(&token).await {
        Ok(value) => value,
        Err(_) => return retry_later(),
    };
    let place = value.as_deref().and_then(|v| {
        let mut parts = v.splitn(3, '|');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("L"), Some(session), Some(member)) => {
                Some(Ok((session.to_string(), member.to_string())))
            }
            (Some("E"), Some(why), None) => Some(Err(why.to_string())),
            _ => None,
        }
    });
    let (session_id, member_id) = match place {
        None => {
            let _ = reply.send(fail(ResumeFailure::UnknownToken));
            return;
        }
        Some(Err(why)) => {
            let why = serde_json::from_value(serde_json::Value::String(why))
                .unwrap_or(ResumeFailure::UnknownToken);
            let _ = reply.send(fail(why));
            return;
        }
        Some(Ok(place)) => place,
    };
    let Some(session) = state.registry.resolve(&state, &session_id).await else {
        let _ = reply.send(fail(ResumeFailure::SessionClosed));
        return;
    };
    let (tx, answer) = oneshot::channel();
    let request = Box::new(ResumeRequest {
        member_id: member_id.clone(),
        token,
        last_seq,
        socket,
        outbox,
    });
    if !session.send(SessionInput::Resume { request, reply: tx }) {
        let _ = reply.send(fail(ResumeFailure::SessionClosed));
        return;
    }
    // The forwarder answers, or drops the request having closed the socket with 1012.
    let Ok(answer) = answer.await else { return };
    state.metrics.resumed(&answer);
    let place = Some(Membership {
        member_id,
        session_id,
        session,
    });
    let _ = reply.send(ClusterResumed { answer, place });
}

impl Drop for MemberDriver {
    /// A transport that ends while its member is still in a session (its join was on its way,
    /// or it was dropped at the close deadline) detaches the member. The session's task
    /// handles inputs in order, so this follows the join; for a member the session already
    /// removed it is ignored.
    fn drop(&mut self) {
        self.detach(LeaveReason::Error, false);
    }
}
