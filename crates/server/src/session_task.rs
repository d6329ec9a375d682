//! The task that owns one session: the single writer of its state machine.
//!
//! It takes [`SessionInput`]s from its channel (joins, members' commands and detaches, admin
//! closes), feeds them to the core's [`Session`] with the current time, and carries out the
//! actions: each message is encoded once per dialect and the same bytes are queued on every
//! recipient's outbox. It also sleeps until the session's own timer ([`Session::poll_timeout`])
//! when it has one. Inputs already queued are handled as one batch, and every member touched
//! by the batch is woken once at its end, so a burst (a big session's joins) costs one write
//! per member rather than one per frame.

use std::sync::Arc;

use bytes::Bytes;
use loudsync_core::connection::ResumeAnswer;
use loudsync_core::directory::{JoinError, SessionSpec};
use loudsync_core::resume::TokenState;
use loudsync_core::session::access::FailureLimit;
use loudsync_core::session::{
    Joiner, Outgoing, ResumeRefusal, Session, SessionAction, SessionConfig,
};
use loudsync_core::Now;
use loudsync_protocol::app::Dialect;
use loudsync_protocol::types::MediaRole;
use loudsync_protocol::{close_code, ErrorCode, ResumeFailure, ServerMessage, Stamp};
use tokio::sync::mpsc;
use tokio::time::Instant as TokioInstant;

use crate::clock::now;
use crate::encoding;
use crate::media::relay;
use crate::outbox::{OutFrame, Outbox};
use crate::sessions::{AdminAction, ResumeRequest, SessionInput, SessionView};
use crate::state::{ServerState, TokenPlace};

/// Inputs handled before the touched members are woken.
const MAX_BATCH: usize = 64;

/// The `media_unavailable` text of issue 13 R4 (a server without `--media-listen`).
pub(crate) const MEDIA_UNAVAILABLE: &str =
    "media_token: this server has no media relay (start it with --media-listen)";

/// Starts the task owning a new session made from `spec`.
pub(crate) fn spawn(
    state: Arc<ServerState>,
    spec: SessionSpec,
    serial: u64,
    rx: mpsc::UnboundedReceiver<SessionInput>,
) {
    let owner = SessionOwner::open(state, spec, serial);
    tokio::spawn(owner.run(rx));
}

/// The single writer of one session's state machine, and what it does with the machine's
/// actions. [`spawn`] drives it from a channel with the server's clock; in cluster mode
/// (`crate::cluster::owner`) the same owner is driven by the session's inbound stream, with
/// the time each entry carries.
pub(crate) struct SessionOwner {
    state: Arc<ServerState>,
    session: Session<Arc<Outbox>>,
    /// Outboxes given frames in the current batch, to wake once at its end.
    touched: Vec<Arc<Outbox>>,
    serial: u64,
    /// The host the media relay was last told of.
    media_host: Option<String>,
    /// Connection tokens the session ended, kept for a cluster owner to record in Redis
    /// (`None` on a single node, which keeps them in its own token table only).
    ended_tokens: Option<Vec<(String, ResumeFailure)>>,
}

impl SessionOwner {
    /// A new session made from `spec`: the media relay, the metrics and the admin event
    /// stream are told it opened.
    pub(crate) fn open(state: Arc<ServerState>, spec: SessionSpec, serial: u64) -> SessionOwner {
        let config = SessionConfig {
            password_failures: FailureLimit {
                max_failures: state.config.password_max_failures,
                window: state.config.password_failure_window,
            },
            detach_hold: state.config.resume_window,
            replay: state.config.replay_limits(),
            handoff: state.config.handoff(),
        };
        let owner = SessionOwner {
            session: Session::new(spec, config),
            state,
            touched: Vec::new(),
            serial,
            media_host: None,
            ended_tokens: None,
        };
        if let Some(media) = &owner.state.media {
            media.open_session(owner.session.id());
        }
        owner.state.metrics.sessions.increment(1.0);
        let session = &owner.session;
        owner.state.events.publish("session_opened", || {
            let info = session.session_info();
            serde_json::json!({
                "session": session.id(),
                "name": session.name(),
                "maxMembers": session.max_members(),
                "hostId": info.host_id,
                "hostName": info.host.map(|h| h.name),
                "passwordProtected": session.password_protected(),
            })
        });
        tracing::info!(session = owner.session.id(), "session opened");
        owner
    }

    /// The state machine (read only).
    pub(crate) fn session(&self) -> &Session<Arc<Outbox>> {
        &self.session
    }

    /// Handles one input at `now`; what it gives members is queued on their outboxes, which
    /// [`Self::take_touched`] then returns.
    pub(crate) fn handle_at(&mut self, now: Now, input: SessionInput) {
        self.handle(now, input);
    }

    /// The session's timer fired at `now`.
    pub(crate) fn timeout_at(&mut self, now: Now) {
        let before = self.session.member_count() as f64;
        self.session.set_observed(self.state.events.observing());
        self.session.handle_timeout(now);
        self.publish_events();
        self.apply(now);
        let after = self.session.member_count() as f64;
        self.state.metrics.members.increment(after - before);
    }

    /// From now on, keeps the connection tokens the session ends for
    /// [`Self::take_ended_tokens`] (a cluster owner records them in Redis).
    pub(crate) fn keep_ended_tokens(&mut self) {
        self.ended_tokens.get_or_insert_with(Vec::new);
    }

    /// The connection tokens ended since the last call (with [`Self::keep_ended_tokens`]).
    pub(crate) fn take_ended_tokens(&mut self) -> Vec<(String, ResumeFailure)> {
        self.ended_tokens
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// The outboxes given frames since the last call (each once).
    pub(crate) fn take_touched(&mut self) -> Vec<Arc<Outbox>> {
        std::mem::take(&mut self.touched)
    }

    /// The session is over on this node: the media relay and the metrics forget it. (The
    /// registry entry is the caller's.)
    pub(crate) fn finish(&self) {
        if let Some(media) = &self.state.media {
            media.end_session(self.session.id());
        }
        self.state.metrics.sessions.decrement(1.0);
        self.state
            .metrics
            .members
            .decrement(self.session.member_count() as f64);
        tracing::info!(session = self.session.id(), "session closed");
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<SessionInput>) {
        loop {
            let first = match self.session.poll_timeout() {
                Some(at) => {
                    tokio::select! {
                        input = rx.recv() => input,
                        _ = tokio::time::sleep_until(TokioInstant::from_std(at)) => {
                            self.timeout_at(now());
                            self.wake_touched();
                            if self.session.is_ended() { break; }
                            continue;
                        }
                    }
                }
                None => rx.recv().await,
            };
            let Some(first) = first else { break };
            // Handle what is already queued as one batch (bounded), so every member touched
            // is woken once for all the frames the batch gave it.
            let mut next = Some(first);
            let mut handled = 0;
            while let Some(input) = next.take() {
                self.handle(now(), input);
                handled += 1;
                if self.session.is_ended() || handled == MAX_BATCH {
                    break;
                }
                next = rx.try_recv().ok();
            }
            self.wake_touched();
            if self.session.is_ended() {
                break;
            }
        }
        // Before the id is free again: a new session under the same id opens after this.
        self.finish();
        self.state.registry.remove(self.session.id(), self.serial);
        // Inputs that raced with the end: joins are told the session is gone.
        rx.close();
        while let Ok(input) = rx.try_recv() {
            match input {
                SessionInput::Join { reply, .. } => {
                    let ended = JoinError::Ended {
                        session: self.session.id().to_string(),
                    };
                    let _ = reply.send(Err(ended.to_message()));
                }
                SessionInput::Close {
                    done: Some(done), ..
                } => {
                    let _ = done.send(());
                }
                _ => {}
            }
        }
    }

    /// Hands the session's events to the admin event stream, in order.
    fn publish_events(&mut self) {
        while let Some(event) = self.session.poll_event() {
            self.state.events.session_event(self.session.id(), event);
        }
    }

    fn wake_touched(&mut self) {
        for outbox in self.touched.drain(..) {
            outbox.notify();
        }
    }

    /// Handles one input. Frames are queued without waking their consumers; [`Self::run`]
    /// wakes every touched member once per batch.
    fn handle(&mut self, now: Now, input: SessionInput) {
        // The members gauge follows the member table, whatever changed it (a held place that
        // runs out leaves without a transport to close).
        let before = self.session.member_count() as f64;
        self.session.set_observed(self.state.events.observing());
        self.handle_input(now, input);
        self.publish_events();
        self.state
            .metrics
            .members
            .increment(self.session.member_count() as f64 - before);
    }

    fn handle_input(&mut self, now: Now, input: SessionInput) {
        match input {
            SessionInput::Join { request, reply } => {
                let request = *request;
                let joiner = Joiner {
                    transport: request.outbox,
                    dialect: request.dialect,
                    address: request.address,
                    credentials: request.credentials,
                    socket: request.socket,
                    resume_token: request.resume_token.clone(),
                };
                let member_id = request.member_id.clone();
                let result =
                    self.session
                        .handle_join(now, request.member_id, &request.join, joiner);
                let result = match result {
                    Ok(()) => {
                        self.state.metrics.joins.increment(1);
                        if let Some(token) = request.resume_token {
                            let place = TokenPlace {
                                session_id: self.session.id().to_string(),
                                member_id,
                            };
                            self.state
                                .tokens
                                .lock()
                                .expect("tokens")
                                .insert(token, place);
                        }
                        Ok(())
                    }
                    Err((refusal, _transport)) => Err(refusal.to_message()),
                };
                self.apply(now);
                let _ = reply.send(result);
            }
            SessionInput::Command {
                member_id,
                socket,
                seq,
                command,
            } => {
                self.session
                    .handle_numbered(now, &member_id, socket, seq, command);
                self.apply(now);
            }
            SessionInput::Detach {
                member_id,
                socket,
                reason,
                fatal,
            } => {
                self.session
                    .handle_socket_detach(now, &member_id, socket, reason, fatal);
                self.apply(now);
            }
            SessionInput::Resume { request, reply } => {
                let member = request.member_id.clone();
                let answer = self.resume(now, *request);
                self.state.metrics.resumed(&answer);
                self.publish_events();
                let failed = match &answer {
                    ResumeAnswer::Resumed { .. } => None,
                    ResumeAnswer::Failed(why) => Some(why.as_str()),
                    ResumeAnswer::Invalid(_) => Some("invalid"),
                };
                self.state
                    .events
                    .resume(Some(self.session.id()), Some(&member), failed);
                self.apply(now);
                let _ = reply.send(answer);
            }
            SessionInput::Close { reason, code, done } => {
                self.session.handle_close(now, &reason, code);
                self.apply(now);
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            SessionInput::View(reply) => {
                let details = self.session.member_details();
                let _ = reply.send(SessionView {
                    id: self.session.id().to_string(),
                    name: self.session.name().to_string(),
                    max_members: self.session.max_members(),
                    host_id: self.session.host_id().map(str::to_string),
                    password_protected: self.session.password_protected(),
                    host_device: self.session.session_info().host,
                    members: details.iter().map(|(m, _)| m.clone()).collect(),
                    dialects: details.iter().map(|(_, d)| *d).collect(),
                    state: Some(self.session.state().snapshot(self.session.term())),
                });
            }
            SessionInput::Admin(admin) => {
                let (action, reply) = *admin;
                let answer = match action {
                    AdminAction::Kick { member_id, reason } => self
                        .session
                        .handle_admin_kick(&member_id, reason)
                        .map(|()| None),
                    AdminAction::Handoff { target_id } => {
                        self.session.handle_admin_handoff(now, &target_id).map(Some)
                    }
                };
                self.apply(now);
                let _ = reply.send(answer);
            }
        }
    }

    /// A resume: on success the new socket gets the connection token, `resumed`, and the
    /// replay, before anything else; a socket the place still had is closed with 4000.
    fn resume(&mut self, now: Now, request: ResumeRequest) -> ResumeAnswer {
        let ResumeRequest {
            member_id,
            token,
            last_seq,
            socket,
            outbox,
        } = request;
        match self
            .session
            .handle_resume(now, &member_id, &token, last_seq, socket, outbox.clone())
        {
            Ok(resumption) => {
                let stamp = Stamp::Now(now.unix_ms);
                let own = |m: &ServerMessage| {
                    OutFrame::Text(Bytes::from(loudsync_protocol::encode(m, &stamp)))
                };
                outbox.push_uncounted(
                    own(&ServerMessage::Token {
                        token: token.clone(),
                    }),
                    now.instant,
                );
                outbox.push_uncounted(
                    own(&ServerMessage::Resumed {
                        last_seq: resumption.last_in,
                        replayed: resumption.replay.len() as u64,
                    }),
                    now.instant,
                );
                for (seq, bytes) in resumption.replay {
                    outbox.push_uncounted(OutFrame::Numbered(seq, bytes), now.instant);
                }
                self.touched.push(outbox);
                if let Some(old) = resumption.replaced {
                    old.force_close(close_code::REPLACED, "replaced".to_string());
                }
                ResumeAnswer::Resumed {
                    last_in: resumption.last_in,
                }
            }
            Err((ResumeRefusal::AboveSent { last_sent }, _)) => ResumeAnswer::Invalid(format!(
                "token: lastSeq {last_seq} is above the last seq sent on this connection ({last_sent})"
            )),
            Err((ResumeRefusal::Failed(ResumeFailure::UnknownToken), _)) => {
                // The place may have ended since the token was looked up: say why.
                match self.state.tokens.lock().expect("tokens").lookup(now.instant, &token) {
                    TokenState::Ended(why) => ResumeAnswer::Failed(why),
                    TokenState::Live(_) => ResumeAnswer::Failed(ResumeFailure::UnknownToken),
                }
            }
            Err((ResumeRefusal::Failed(why), _)) => ResumeAnswer::Failed(why),
        }
    }

    /// The answer to a member's `media_token`: a grant from the relay (R2), or R4's
    /// `media_unavailable` on a server without one.
    fn media_token(&mut self, now: Now, member: &str, role: MediaRole) -> ServerMessage {
        let Some(media) = &self.state.media else {
            return ServerMessage::error(ErrorCode::MediaUnavailable, MEDIA_UNAVAILABLE);
        };
        match media.grant(now, self.session.id(), member, relay::core_role(role)) {
            Some(grant) => relay::reply(grant, now, media.port()),
            None => {
                // Cannot happen while the session task runs (it opened the session in the
                // relay, and session ids are valid stream ids); answered all the same.
                tracing::warn!(session = self.session.id(), "media relay refused a grant");
                ServerMessage::error(
                    ErrorCode::MediaUnavailable,
                    "media_token: the media relay cannot grant a token for this session",
                )
            }
        }
    }

    /// Tells the media relay when the session's host changed (R8: a member that stops being
    /// host loses its publish tuple), after each batch of actions.
    fn follow_host(&mut self) {
        let Some(media) = &self.state.media else {
            return;
        };
        let host = self.session.host_id();
        if host != self.media_host.as_deref() {
            media.host_changed(self.session.id(), host);
            self.media_host = host.map(str::to_string);
        }
    }

    /// Carries out the session's actions, each resolved to its recipients as it is polled.
    fn apply(&mut self, now: Now) {
        while let Some(action) = self.session.poll_action() {
            match action {
                SessionAction::Send { to, message } => {
                    if let ServerMessage::Error { code, .. } = &message {
                        crate::metrics::Metrics::error_sent(code.as_str());
                    }
                    crate::metrics::Metrics::handoff_event(&message);
                    // Encoded before delivery, once per dialect among the recipients (the
                    // app's names members by address, which the session looks up).
                    let session = &self.session;
                    let state = &self.state;
                    let address_of = |id: &str| session.address_of(id).map(str::to_string);
                    let (ours, app) = session.recipient_dialects(&to);
                    let encode = |dialect| {
                        encoding::encode(
                            dialect,
                            &message,
                            &Stamp::Now(now.unix_ms),
                            now.unix_ms,
                            &address_of,
                            state.ids.as_ref(),
                        )
                    };
                    let encoded = Encoded {
                        ours: ours.then(|| encode(Dialect::LoudSync)),
                        app: app.then(|| encode(Dialect::App)),
                    };
                    let touched = &mut self.touched;
                    let sent = self.session.deliver(
                        &to,
                        &message,
                        &mut |dialect| encoded.bytes(dialect),
                        &mut |outbox, frame| queue(outbox, frame, now, touched),
                    );
                    self.state.metrics.frames_sent.increment(sent);
                }
                SessionAction::TokenEnded { token, why } => {
                    if let Some(ended) = &mut self.ended_tokens {
                        ended.push((token.clone(), why));
                    }
                    self.state
                        .tokens
                        .lock()
                        .expect("tokens")
                        .end(now.instant, &token, why);
                }
                SessionAction::Close {
                    transport,
                    code,
                    reason,
                    ..
                } => {
                    if transport.enqueue(OutFrame::Close(code, reason), now.instant) == Some(true) {
                        self.touched.push(transport);
                    }
                }
                SessionAction::MediaToken { member, role } => {
                    let answer = self.media_token(now, &member, role);
                    self.session.send_to(&member, answer);
                }
                SessionAction::MemberGone { member } => {
                    if let Some(media) = &self.state.media {
                        media.member_gone(self.session.id(), &member);
                    }
                }
                SessionAction::Ended => {}
            }
        }
        self.follow_host();
    }
}

/// A message's bytes in each dialect its recipients speak, encoded once and shared by every
/// recipient of that dialect.
#[derive(Default)]
struct Encoded {
    ours: Option<Bytes>,
    app: Option<Bytes>,
}

impl Encoded {
    fn bytes(&self, dialect: Dialect) -> Bytes {
        match dialect {
            Dialect::LoudSync => self.ours.clone(),
            Dialect::App => self.app.clone(),
        }
        .unwrap_or_default()
    }
}

/// Queues one recipient's frame; the outbox is owed a wake-up at the batch's end if this is
/// its first frame since the last.
fn queue(outbox: &Arc<Outbox>, frame: Outgoing, now: Now, touched: &mut Vec<Arc<Outbox>>) {
    let frame = match frame {
        Outgoing::Plain(bytes) => OutFrame::Text(bytes),
        Outgoing::Numbered(seq, bytes) => OutFrame::Numbered(seq, bytes),
    };
    if outbox.enqueue(frame, now.instant) == Some(true) {
        touched.push(outbox.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loudsync_core::outbound::OutboundLimits;

    fn outbox() -> Arc<Outbox> {
        Arc::new(Outbox::new(OutboundLimits::default()))
    }

    fn text(o: &Outbox) -> Bytes {
        match o.pop() {
            Some(OutFrame::Text(b)) => b,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_broadcast_is_encoded_once_per_dialect_and_shared() {
        let encoded = Encoded {
            ours: Some(Bytes::from_static(b"{\"type\":\"ours\"}")),
            app: Some(Bytes::from_static(b"{\"type\":\"APP\"}")),
        };
        let outboxes: Vec<Arc<Outbox>> = (0..4).map(|_| outbox()).collect();
        let mut touched = Vec::new();
        for (i, o) in outboxes.iter().enumerate() {
            let dialect = if i < 2 {
                Dialect::LoudSync
            } else {
                Dialect::App
            };
            queue(
                o,
                Outgoing::Plain(encoded.bytes(dialect)),
                now(),
                &mut touched,
            );
        }
        // A resumable recipient's frame is numbered but shares the same bytes.
        queue(
            &outboxes[1],
            Outgoing::Numbered(7, encoded.bytes(Dialect::LoudSync)),
            now(),
            &mut touched,
        );
        assert_eq!(touched.len(), 4, "each recipient is owed one wake-up");
        let (a, b, c, d) = (
            text(&outboxes[0]),
            text(&outboxes[1]),
            text(&outboxes[2]),
            text(&outboxes[3]),
        );
        assert_eq!(&a[..], b"{\"type\":\"ours\"}");
        assert_eq!(&c[..], b"{\"type\":\"APP\"}");
        assert_eq!(a.as_ptr(), b.as_ptr(), "shared, not copied");
        assert_eq!(c.as_ptr(), d.as_ptr(), "shared, not copied");
        match outboxes[1].pop() {
            Some(OutFrame::Numbered(7, n)) => assert_eq!(n.as_ptr(), a.as_ptr()),
            other => panic!("{other:?}"),
        }
    }
}
