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
use loudsync_protocol::{encode, DeviceType, ErrorCode, Join, MemberInfo, ServerMessage, Stamp};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::outbox::{OutFrame, Outbox};
use crate::{now, App};

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

/// What a session's task is asked to do.
pub enum SessionInput {
    /// A connection wants to join.
    Join {
        /// The `clientId` generated for it.
        member_id: String,
        /// The join message (boxed: it is the largest input, and every slot of the session's
        /// channel is as large as the largest input).
        join: Box<Join>,
        /// Its outbound queue.
        outbox: Arc<Outbox>,
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
        member_id: String,
        join: Join,
        outbox: Arc<Outbox>,
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
                        member_id,
                        join: Box::new(join),
                        outbox,
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
            outboxes: HashMap::new(),
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
    outboxes: HashMap<String, Arc<Outbox>>,
    serial: u64,
}

impl SessionOwner {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<SessionInput>) {
        while let Some(input) = rx.recv().await {
            let now = now();
            match input {
                SessionInput::Join {
                    member_id,
                    join,
                    outbox,
                    reply,
                } => {
                    let result = self.session.handle_join(now, member_id.clone(), &join);
                    if result.is_ok() {
                        self.outboxes.insert(member_id, outbox);
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

    /// Carries out the session's actions: each message is encoded once and the same bytes are
    /// queued for every recipient.
    fn apply(&mut self, now: Now) {
        while let Some(action) = self.session.poll_action() {
            match action {
                SessionAction::Send { to, message } => {
                    if let ServerMessage::Error { code, .. } = &message {
                        crate::metrics::Metrics::error_sent(code.as_str());
                    }
                    let bytes = Bytes::from(encode(&message, &Stamp::Now(now.unix_ms)));
                    let sent = deliver(&self.outboxes, &to, &bytes);
                    self.app.metrics.frames_sent.increment(sent);
                }
                SessionAction::Close {
                    member,
                    code,
                    reason,
                } => {
                    if let Some(outbox) = self.outboxes.remove(&member) {
                        outbox.push(OutFrame::Close(code, reason));
                        self.app.metrics.members.decrement(1.0);
                    }
                }
                SessionAction::Ended => {}
            }
        }
    }
}

/// Queues the same encoded bytes for every recipient; returns how many it was queued for.
fn deliver(outboxes: &HashMap<String, Arc<Outbox>>, to: &Recipients, bytes: &Bytes) -> u64 {
    let mut queued = 0;
    let mut push = |outbox: &Arc<Outbox>| {
        if outbox.push(OutFrame::Text(bytes.clone())) {
            queued += 1;
        }
    };
    match to {
        Recipients::One(id) => outboxes.get(id).into_iter().for_each(push),
        Recipients::AllExcept(id) => outboxes
            .iter()
            .filter(|(k, _)| *k != id)
            .for_each(|(_, o)| push(o)),
        Recipients::All => outboxes.values().for_each(push),
    }
    queued
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broadcast_is_encoded_once_and_shared() {
        let outboxes: HashMap<String, Arc<Outbox>> = ["a", "b", "c"]
            .into_iter()
            .map(|k| (k.to_string(), Arc::new(Outbox::new(1 << 20))))
            .collect();
        let bytes = Bytes::from(r#"{"type":"member_left"}"#.to_string());
        assert_eq!(
            deliver(&outboxes, &Recipients::AllExcept("a".into()), &bytes),
            2
        );
        assert_eq!(outboxes["a"].pop(), None);
        for k in ["b", "c"] {
            match outboxes[k].pop() {
                Some(OutFrame::Text(b)) => assert_eq!(b.as_ptr(), bytes.as_ptr(), "copied for {k}"),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(deliver(&outboxes, &Recipients::All, &bytes), 3);
        assert_eq!(
            deliver(&outboxes, &Recipients::One("ghost".into()), &bytes),
            0
        );
    }
}
