//! Where sessions live: the registry (session id -> owner task) and the task that owns each
//! session's state machine and carries out its actions.
//!
//! The registry's lock is taken only to find, create or remove a session (joins and the HTTP
//! API), never on the message path: once joined, a connection talks to its session's task
//! over a channel, and the task writes straight into members' outboxes. One task owns one
//! session, the unit a cluster will later route to its owning node.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use loudsync_core::connection::MemberCommand;
use loudsync_core::session::{Recipients, Session, SessionAction};
use loudsync_core::Now;
use loudsync_protocol::app::Dialect;
use loudsync_protocol::{DeviceType, ErrorCode, Join, MemberInfo, ServerMessage, Stamp};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::outbox::{OutFrame, Outbox};
use crate::{encoding, now, App};

/// A session as the HTTP API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    /// Session id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Capacity, host included.
    pub max_members: usize,
    /// The host's `clientId`, or `null` while there is none.
    pub host_id: Option<String>,
    /// As in `member_list`.
    pub members: Vec<MemberInfo>,
}

/// The result of a join, as the connection receives it.
pub type JoinResult = Result<(), ServerMessage>;

/// A connection asking to join, as the session's task will keep it.
pub struct Joiner {
    /// The `clientId` generated for it.
    pub member_id: String,
    /// Its outbound queue.
    pub outbox: Arc<Outbox>,
    /// The dialect it speaks.
    pub dialect: Dialect,
    /// Its peer address (shown to the app's dialect).
    pub address: String,
}

/// What a session's task is asked to do.
pub enum SessionInput {
    /// A connection wants to join.
    Join {
        /// Who (boxed with the message: the largest input, and every slot of the session's
        /// channel is as large as the largest input).
        joiner: Box<(Joiner, Join)>,
        /// Where the answer goes.
        reply: oneshot::Sender<JoinResult>,
    },
    /// A joined member's command.
    Command {
        /// The member.
        member_id: String,
        /// What it asked.
        command: MemberCommand,
    },
    /// End the session (HTTP DELETE, shutdown).
    Close {
        /// Sent in `session_closed`.
        reason: String,
        /// The close code for every socket.
        code: u16,
        /// Answered once every member has been told.
        done: Option<oneshot::Sender<()>>,
    },
    /// Report the session's state.
    View(oneshot::Sender<SessionView>),
}

/// A cheap handle to a session's task.
#[derive(Clone)]
pub struct SessionHandle {
    tx: mpsc::UnboundedSender<SessionInput>,
    serial: u64,
}

impl SessionHandle {
    /// Sends an input; `false` if the session has ended.
    pub fn send(&self, input: SessionInput) -> bool {
        self.tx.send(input).is_ok()
    }

    /// The session's current state, or `None` if it ended meanwhile.
    pub async fn view(&self) -> Option<SessionView> {
        let (tx, rx) = oneshot::channel();
        if !self.send(SessionInput::View(tx)) {
            return None;
        }
        rx.await.ok()
    }
}

/// Session id -> the task that owns it.
#[derive(Default)]
pub struct Registry {
    sessions: Mutex<HashMap<String, SessionHandle>>,
    serial: AtomicU64,
}

/// Creating a session whose id is taken.
#[derive(Debug)]
pub struct AlreadyExists;

impl Registry {
    /// The session with this id.
    pub fn get(&self, id: &str) -> Option<SessionHandle> {
        self.sessions.lock().expect("registry").get(id).cloned()
    }

    /// Every live session.
    pub fn all(&self) -> Vec<SessionHandle> {
        self.sessions
            .lock()
            .expect("registry")
            .values()
            .cloned()
            .collect()
    }

    /// Creates an empty session and starts its task.
    pub fn create(
        &self,
        app: &Arc<App>,
        id: String,
        name: String,
        max_members: usize,
    ) -> Result<SessionHandle, AlreadyExists> {
        let mut sessions = self.sessions.lock().expect("registry");
        if sessions.contains_key(&id) {
            return Err(AlreadyExists);
        }
        let handle = self.spawn(app, Session::new(id.clone(), name, max_members));
        sessions.insert(id, handle.clone());
        Ok(handle)
    }

    /// Routes a join: to the existing session, or, for a host, to a session created for it.
    /// A client joining an unknown session is answered `session_not_found` at once.
    /// Returns the session routed to (if any) and where its answer arrives.
    pub fn join(
        &self,
        app: &Arc<App>,
        joiner: Joiner,
        join: Join,
    ) -> (Option<SessionHandle>, oneshot::Receiver<JoinResult>) {
        let (reply, rx) = oneshot::channel();
        let handle = {
            let mut sessions = self.sessions.lock().expect("registry");
            match sessions.get(&join.session_id) {
                Some(h) => Some(h.clone()),
                None if join.device_info.kind == DeviceType::Host => {
                    let name = join
                        .session_name
                        .clone()
                        .unwrap_or_else(|| format!("{}'s session", join.device_info.name));
                    let session =
                        Session::new(join.session_id.clone(), name, app.config.max_members);
                    let h = self.spawn(app, session);
                    sessions.insert(join.session_id.clone(), h.clone());
                    Some(h)
                }
                None => None,
            }
        };
        let not_found = |id: &str| {
            ServerMessage::error(
                ErrorCode::SessionNotFound,
                format!("session `{id}` does not exist"),
            )
        };
        match &handle {
            Some(h) => {
                let id = join.session_id.clone();
                if let Err(mpsc::error::SendError(SessionInput::Join { reply, .. })) =
                    h.tx.send(SessionInput::Join {
                        joiner: Box::new((joiner, join)),
                        reply,
                    })
                {
                    let _ = reply.send(Err(not_found(&id)));
                }
            }
            None => {
                let _ = reply.send(Err(not_found(&join.session_id)));
            }
        }
        (handle, rx)
    }

    fn spawn(&self, app: &Arc<App>, session: Session) -> SessionHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let owner = SessionOwner {
            app: app.clone(),
            session,
            members: HashMap::new(),
            touched: Vec::new(),
            serial,
        };
        app.metrics.sessions.increment(1.0);
        tracing::info!(session = owner.session.id(), "session opened");
        tokio::spawn(owner.run(rx));
        SessionHandle { tx, serial }
    }

    fn remove(&self, id: &str, serial: u64) {
        let mut sessions = self.sessions.lock().expect("registry");
        if sessions.get(id).is_some_and(|h| h.serial == serial) {
            sessions.remove(id);
        }
    }
}

/// The task that owns one session.
struct SessionOwner {
    app: Arc<App>,
    session: Session,
    members: HashMap<String, Recipient>,
    /// Outboxes given frames in the current batch, to wake once at its end.
    touched: Vec<Arc<Outbox>>,
    serial: u64,
}

/// Inputs handled before the touched members are woken.
const MAX_BATCH: usize = 64;

/// Where a member's messages go, and in which dialect.
struct Recipient {
    outbox: Arc<Outbox>,
    dialect: Dialect,
    address: String,
}

impl SessionOwner {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<SessionInput>) {
        while let Some(first) = rx.recv().await {
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
            for outbox in self.touched.drain(..) {
                outbox.notify();
            }
            if self.session.is_ended() {
                break;
            }
        }
        self.app.registry.remove(self.session.id(), self.serial);
        self.app.metrics.sessions.decrement(1.0);
        tracing::info!(session = self.session.id(), "session closed");
        // Joins that raced with the end are told the session is gone.
        rx.close();
        while let Ok(input) = rx.try_recv() {
            match input {
                SessionInput::Join { reply, .. } => {
                    let _ = reply.send(Err(ServerMessage::error(
                        ErrorCode::SessionNotFound,
                        format!("session `{}` has ended", self.session.id()),
                    )));
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

    /// Handles one input. Frames are queued without waking their consumers; [`run`] wakes
    /// every touched member once per batch.
    ///
    /// [`run`]: SessionOwner::run
    fn handle(&mut self, input: SessionInput) {
        let now = now();
        match input {
            SessionInput::Join { joiner, reply } => {
                let (joiner, join) = *joiner;
                let result = self
                    .session
                    .handle_join(now, joiner.member_id.clone(), &join);
                if result.is_ok() {
                    let recipient = Recipient {
                        outbox: joiner.outbox,
                        dialect: joiner.dialect,
                        address: joiner.address,
                    };
                    self.members.insert(joiner.member_id, recipient);
                    self.app.metrics.joins.increment(1);
                    self.app.metrics.members.increment(1.0);
                }
                self.apply(now);
                let _ = reply.send(result);
            }
            SessionInput::Command { member_id, command } => {
                self.session.handle_command(now, &member_id, command);
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
                    members: self.session.member_infos(),
                });
            }
        }
    }

    /// Carries out the session's actions: each message is encoded once per dialect and the
    /// same bytes are queued for every recipient of that dialect.
    fn apply(&mut self, now: Now) {
        while let Some(action) = self.session.poll_action() {
            match action {
                SessionAction::Send { to, message } => {
                    if let ServerMessage::Error { code, .. } = &message {
                        crate::metrics::Metrics::error_sent(code.as_str());
                    }
                    let members = &self.members;
                    let address_of = |id: &str| members.get(id).map(|r| r.address.clone());
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
                                )
                            })
                            .clone()
                    };
                    let sent = deliver(members, &to, &mut bytes_for, &mut self.touched);
                    self.app.metrics.frames_sent.increment(sent);
                }
                SessionAction::Close {
                    member,
                    code,
                    reason,
                } => {
                    if let Some(recipient) = self.members.remove(&member) {
                        if recipient.outbox.enqueue(OutFrame::Close(code, reason)) == Some(true) {
                            self.touched.push(recipient.outbox.clone());
                        }
                        self.app.metrics.members.decrement(1.0);
                    }
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
fn deliver(
    members: &HashMap<String, Recipient>,
    to: &Recipients,
    bytes_for: &mut dyn FnMut(Dialect) -> Bytes,
    touched: &mut Vec<Arc<Outbox>>,
) -> u64 {
    let mut queued = 0;
    let mut push = |r: &Recipient| {
        if let Some(first) = r.outbox.enqueue(OutFrame::Text(bytes_for(r.dialect))) {
            queued += 1;
            if first {
                touched.push(r.outbox.clone());
            }
        }
    };
    match to {
        Recipients::One(id) => members.get(id).into_iter().for_each(&mut push),
        Recipients::AllExcept(id) => members
            .iter()
            .filter(|(k, _)| *k != id)
            .for_each(|(_, r)| push(r)),
        Recipients::All => members.values().for_each(push),
    }
    queued
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipient(dialect: Dialect) -> Recipient {
        Recipient {
            outbox: Arc::new(Outbox::new(1 << 20)),
            dialect,
            address: "127.0.0.1".into(),
        }
    }

    fn text(r: &Recipient) -> Bytes {
        match r.outbox.pop() {
            Some(OutFrame::Text(b)) => b,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_broadcast_is_encoded_once_per_dialect_and_shared() {
        let members: HashMap<String, Recipient> = [
            ("a", Dialect::LoudSync),
            ("b", Dialect::LoudSync),
            ("c", Dialect::App),
            ("d", Dialect::App),
        ]
        .into_iter()
        .map(|(k, d)| (k.to_string(), recipient(d)))
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
        assert_eq!(
            deliver(
                &members,
                &Recipients::AllExcept("a".into()),
                &mut bytes_for,
                &mut touched
            ),
            3
        );
        assert_eq!(touched.len(), 3, "each recipient is owed one wake-up");
        assert_eq!(
            encodings.len(),
            2,
            "one encoding per dialect: {encodings:?}"
        );
        assert_eq!(members["a"].outbox.pop(), None);
        let (b, c, d) = (
            text(&members["b"]),
            text(&members["c"]),
            text(&members["d"]),
        );
        assert_eq!(&b[..], b"LoudSync");
        assert_eq!(&c[..], b"App");
        assert_eq!(c.as_ptr(), d.as_ptr(), "shared, not copied");
        let mut none = |_: Dialect| Bytes::new();
        assert_eq!(
            deliver(
                &members,
                &Recipients::One("ghost".into()),
                &mut none,
                &mut touched
            ),
            0
        );
    }
}
