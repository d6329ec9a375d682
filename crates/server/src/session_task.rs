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
use loudsync_core::directory::{JoinError, SessionSpec};
use loudsync_core::session::access::FailureLimit;
use loudsync_core::session::{Joiner, Session, SessionAction, SessionConfig};
use loudsync_core::Now;
use loudsync_protocol::app::Dialect;
use loudsync_protocol::{ServerMessage, Stamp};
use tokio::sync::mpsc;
use tokio::time::Instant as TokioInstant;

use crate::clock::now;
use crate::encoding;
use crate::outbox::{OutFrame, Outbox};
use crate::sessions::{SessionInput, SessionView};
use crate::state::ServerState;

/// Inputs handled before the touched members are woken.
const MAX_BATCH: usize = 64;

/// Starts the task owning a new session made from `spec`.
pub(crate) fn spawn(
    state: Arc<ServerState>,
    spec: SessionSpec,
    serial: u64,
    rx: mpsc::UnboundedReceiver<SessionInput>,
) {
    let config = SessionConfig {
        password_failures: FailureLimit {
            max_failures: state.config.password_max_failures,
            window: state.config.password_failure_window,
        },
        ..SessionConfig::default()
    };
    let owner = SessionOwner {
        session: Session::new(spec, config),
        state,
        touched: Vec::new(),
        serial,
    };
    owner.state.metrics.sessions.increment(1.0);
    tracing::info!(session = owner.session.id(), "session opened");
    tokio::spawn(owner.run(rx));
}

struct SessionOwner {
    state: Arc<ServerState>,
    session: Session<Arc<Outbox>>,
    /// Outboxes given frames in the current batch, to wake once at its end.
    touched: Vec<Arc<Outbox>>,
    serial: u64,
}

impl SessionOwner {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<SessionInput>) {
        loop {
            let first = match self.session.poll_timeout() {
                Some(at) => {
                    tokio::select! {
                        input = rx.recv() => input,
                        _ = tokio::time::sleep_until(TokioInstant::from_std(at)) => {
                            self.session.handle_timeout(now());
                            self.apply(now());
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
                self.handle(input);
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
        self.state.registry.remove(self.session.id(), self.serial);
        self.state.metrics.sessions.decrement(1.0);
        tracing::info!(session = self.session.id(), "session closed");
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

    fn wake_touched(&mut self) {
        for outbox in self.touched.drain(..) {
            outbox.notify();
        }
    }

    /// Handles one input. Frames are queued without waking their consumers; [`Self::run`]
    /// wakes every touched member once per batch.
    fn handle(&mut self, input: SessionInput) {
        let now = now();
        match input {
            SessionInput::Join { request, reply } => {
                let request = *request;
                let joiner = Joiner {
                    transport: request.outbox,
                    dialect: request.dialect,
                    address: request.address,
                    credentials: request.credentials,
                };
                let result =
                    self.session
                        .handle_join(now, request.member_id, &request.join, joiner);
                let result = match result {
                    Ok(()) => {
                        self.state.metrics.joins.increment(1);
                        self.state.metrics.members.increment(1.0);
                        Ok(())
                    }
                    Err((refusal, _transport)) => Err(refusal.to_message()),
                };
                self.apply(now);
                let _ = reply.send(result);
            }
            SessionInput::Command { member_id, command } => {
                self.session.handle_command(now, &member_id, command);
                self.apply(now);
            }
            SessionInput::Detach { member_id, reason } => {
                self.session.handle_detach(now, &member_id, reason);
                self.apply(now);
            }
            SessionInput::Close { reason, code, done } => {
                self.session.handle_close(now, &reason, code);
                self.apply(now);
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            SessionInput::View(reply) => {
                let _ = reply.send(SessionView {
                    id: self.session.id().to_string(),
                    name: self.session.name().to_string(),
                    max_members: self.session.max_members(),
                    host_id: self.session.host_id().map(str::to_string),
                    password_protected: self.session.password_protected(),
                    host_device: self.session.session_info().host,
                    members: self.session.member_infos(),
                });
            }
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
                    let session = &self.session;
                    let state = &self.state;
                    let address_of = |id: &str| session.address_of(id).map(str::to_string);
                    let mut encoded = Encoded::default();
                    let mut bytes_for = |dialect| {
                        encoded
                            .get(dialect, || {
                                encoding::encode(
                                    dialect,
                                    &message,
                                    &Stamp::Now(now.unix_ms),
                                    now.unix_ms,
                                    &address_of,
                                    state.ids.as_ref(),
                                )
                            })
                            .clone()
                    };
                    let sent = deliver(
                        session.deliveries(&to),
                        &mut bytes_for,
                        now,
                        &mut self.touched,
                    );
                    self.state.metrics.frames_sent.increment(sent);
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
                    self.state.metrics.members.decrement(1.0);
                }
                SessionAction::Ended => {}
            }
        }
    }
}

/// A message's bytes, encoded at most once per dialect.
#[derive(Default)]
struct Encoded {
    ours: Option<Bytes>,
    app: Option<Bytes>,
}

impl Encoded {
    fn get(&mut self, dialect: Dialect, encode: impl FnOnce() -> Bytes) -> &Bytes {
        let slot = match dialect {
            Dialect::LoudSync => &mut self.ours,
            Dialect::App => &mut self.app,
        };
        slot.get_or_insert_with(encode)
    }
}

/// Queues a message for every recipient, in its dialect's bytes (shared by every recipient of
/// that dialect); returns how many it was queued for.
fn deliver<'a>(
    recipients: impl Iterator<Item = (&'a Arc<Outbox>, Dialect)>,
    bytes_for: &mut dyn FnMut(Dialect) -> Bytes,
    now: Now,
    touched: &mut Vec<Arc<Outbox>>,
) -> u64 {
    let mut queued = 0;
    for (outbox, dialect) in recipients {
        if let Some(first) = outbox.enqueue(OutFrame::Text(bytes_for(dialect)), now.instant) {
            queued += 1;
            if first {
                touched.push(outbox.clone());
            }
        }
    }
    queued
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
        let members: Vec<(Arc<Outbox>, Dialect)> = [
            Dialect::LoudSync,
            Dialect::LoudSync,
            Dialect::App,
            Dialect::App,
        ]
        .into_iter()
        .map(|d| (outbox(), d))
        .collect();
        let mut encodings = Vec::new();
        let mut encoded = Encoded::default();
        let mut bytes_for = |d: Dialect| {
            encoded
                .get(d, || {
                    encodings.push(d);
                    Bytes::from(format!("{d:?}"))
                })
                .clone()
        };
        let mut touched = Vec::new();
        let sent = deliver(
            members.iter().map(|(o, d)| (o, *d)),
            &mut bytes_for,
            now(),
            &mut touched,
        );
        assert_eq!(sent, 4);
        assert_eq!(touched.len(), 4, "each recipient is owed one wake-up");
        assert_eq!(
            encodings,
            [Dialect::LoudSync, Dialect::App],
            "one encoding per dialect"
        );
        let (a, b, c, d) = (
            text(&members[0].0),
            text(&members[1].0),
            text(&members[2].0),
            text(&members[3].0),
        );
        assert_eq!(&a[..], b"LoudSync");
        assert_eq!(&c[..], b"App");
        assert_eq!(a.as_ptr(), b.as_ptr(), "shared, not copied");
        assert_eq!(c.as_ptr(), d.as_ptr(), "shared, not copied");
    }
}
