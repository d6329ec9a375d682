//! Where sessions are found: the registry (session id -> the task that owns the session) and
//! the messages a session's task takes.
//!
//! The routing rules are the core's ([`loudsync_core::directory`]); the registry only holds
//! the directory under a lock, starts a task when the directory says to create a session, and
//! hands the join to the session's task. The lock is taken only to find, create or remove a
//! session (joins and the HTTP API), never on the message path: once joined, a member talks to
//! its session's task over a channel, and the task writes straight into members' outboxes.
//! One task owns one session, the unit a cluster will later route to its owning node.
//!
//! A join's token is verified here ([`crate::access::check`]) and its claims checked against
//! the join by the core ([`admit`]) before the join is routed; what the token proved travels
//! with the join to the session, which applies the rest of its access rules.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use loudsync_core::connection::{MemberCommand, ResumeAnswer};
use loudsync_core::directory::{
    admit, Access, AlreadyExists, Credentials, Directory, JoinError, Route, SessionSpec,
};
use loudsync_core::ids::IdSource;
use loudsync_protocol::app::Dialect;
use loudsync_protocol::{DeviceRef, Join, LeaveReason, MemberInfo, ServerMessage};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::cluster::Resolve;
use crate::outbox::Outbox;
use crate::session_task;
use crate::state::ServerState;

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
    /// Whether joins need a password (the password itself is never shown).
    pub password_protected: bool,
    /// The host as a device, for what names the host by device (the app's dialect, LAN
    /// discovery): the host member, or else the host named when the session was created
    /// over HTTP (`hostName`, `hostDeviceId`). Not in the HTTP view.
    #[serde(skip)]
    pub host_device: Option<DeviceRef>,
    /// As in `member_list`.
    pub members: Vec<MemberInfo>,
    /// Each member's dialect, in the order of `members` (`GET /v1/sessions/{id}` shows it).
    #[serde(skip)]
    pub dialects: Vec<Dialect>,
    /// The state document with its version and term (`GET /v1/sessions/{id}` shows it).
    #[serde(skip)]
    pub state: Option<loudsync_protocol::StateSnapshot>,
}

/// What the administrator asks of a session (the admin API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminAction {
    /// Remove this member (`kicked` with the reason).
    Kick {
        /// The member's `clientId`.
        member_id: String,
        /// Shown to it (else a default).
        reason: Option<String>,
    },
    /// Hand control to this member, through the handoff layer.
    Handoff {
        /// The candidate's `clientId`.
        target_id: String,
    },
}

/// A session's answer to an [`AdminAction`]: for a handoff, the request's id.
pub type AdminResult = Result<Option<String>, loudsync_core::session::AdminRefusal>;

/// The result of a join, as the member's driver receives it: `Ok` once `welcome` is queued.
pub type JoinResult = Result<(), ServerMessage>;

/// A transport asking to join, with everything the session's task keeps of it.
pub struct JoinRequest {
    /// The `clientId` the directory made for it.
    pub member_id: String,
    /// The `join` message.
    pub join: Join,
    /// Its outbound queue (the member's transport handle in the session).
    pub outbox: Arc<Outbox>,
    /// The dialect it speaks.
    pub dialect: Dialect,
    /// Its peer address (shown to the app's dialect; wrong passwords are counted by it).
    pub address: String,
    /// What it proved before it was routed (a valid join token).
    pub credentials: Credentials,
    /// Its transport's id.
    pub socket: u64,
    /// The connection token of the resume handshake, if it did one (a resumable member).
    pub resume_token: Option<String>,
}

/// The transport a join comes on, with what the session keeps of it.
pub struct Joining {
    /// Its outbound queue.
    pub outbox: Arc<Outbox>,
    /// The dialect it speaks.
    pub dialect: Dialect,
    /// Its client address.
    pub address: String,
    /// Its id.
    pub socket: u64,
    /// The connection token, if it did the resume handshake.
    pub resume_token: Option<String>,
}

/// A socket asking to continue a resumable member's place.
pub struct ResumeRequest {
    /// The member.
    pub member_id: String,
    /// The connection token it presented.
    pub token: String,
    /// The last server `seq` it received.
    pub last_seq: u64,
    /// The new socket's id.
    pub socket: u64,
    /// The new socket's outbound queue.
    pub outbox: Arc<Outbox>,
}

/// What a session's task is asked to do.
pub enum SessionInput {
    /// A transport wants to join.
    Join {
        /// Who (boxed: the largest input, and every slot of the session's channel is as large
        /// as the largest input).
        request: Box<JoinRequest>,
        /// Where the answer goes.
        reply: oneshot::Sender<JoinResult>,
    },
    /// A joined member's command.
    Command {
        /// The member.
        member_id: String,
        /// The transport it came on (ignored if the place has moved to another).
        socket: u64,
        /// The client frame's `seq`, on a resumable connection.
        seq: Option<u64>,
        /// What it asked.
        command: MemberCommand,
    },
    /// A member's transport is gone.
    Detach {
        /// The member.
        member_id: String,
        /// The transport that is gone (ignored if the place has moved to another).
        socket: u64,
        /// Why.
        reason: LeaveReason,
        /// Gone in a way a resume cannot mend: the place ends even if resumable.
        fatal: bool,
    },
    /// A new socket resumes a member's place.
    Resume {
        /// Who and on what (boxed, like a join).
        request: Box<ResumeRequest>,
        /// Where the answer goes.
        reply: oneshot::Sender<ResumeAnswer>,
    },
    /// End the session (HTTP DELETE, shutdown).
    Close {
        /// Sent in `session_closed`.
        reason: String,
        /// The close code for every transport.
        code: u16,
        /// Answered once every member has been told.
        done: Option<oneshot::Sender<()>>,
    },
    /// Report the session's state.
    View(oneshot::Sender<SessionView>),
    /// An administrator's action (boxed, like a join).
    Admin(Box<(AdminAction, oneshot::Sender<AdminResult>)>),
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

/// A join on its way to its session.
pub struct RoutedJoin {
    /// The member id it will have.
    pub member_id: String,
    /// The id of the session it went to (a fresh code for a host that named none).
    pub session_id: String,
    /// The session it went to.
    pub session: SessionHandle,
    /// Where the session's answer arrives.
    pub answer: oneshot::Receiver<JoinResult>,
}

/// Session id -> the task that owns it.
pub struct Registry {
    directory: Mutex<Directory<SessionHandle>>,
    serial: AtomicU64,
    ids: Arc<dyn IdSource>,
    default_max_members: usize,
}

impl Registry {
    /// An empty registry.
    pub fn new(ids: Arc<dyn IdSource>, default_max_members: usize) -> Self {
        Registry {
            directory: Mutex::new(Directory::new(ids.clone(), default_max_members)),
            serial: AtomicU64::new(0),
            ids,
            default_max_members,
        }
    }

    /// The session with this id, however it is typed (case, dashes).
    pub fn get(&self, id: &str) -> Option<SessionHandle> {
        self.directory.lock().expect("registry").get(id).cloned()
    }

    /// Every live session.
    pub fn all(&self) -> Vec<SessionHandle> {
        self.directory
            .lock()
            .expect("registry")
            .all()
            .cloned()
            .collect()
    }

    /// Creates an empty session (admin API) with these access rules and starts its task.
    pub fn create(
        &self,
        state: &Arc<ServerState>,
        id: Option<String>,
        name: String,
        max_members: Option<usize>,
        access: Access,
    ) -> Result<(String, SessionHandle), AlreadyExists> {
        let mut directory = self.directory.lock().expect("registry");
        let spec = directory.spec(id, name, max_members, access)?;
        let id = spec.id.clone();
        let handle = self.start(state, spec);
        directory.insert(id.clone(), handle.clone())?;
        Ok((id, handle))
    }

    /// Checks the join's token (and `require-token`), routes the join as the directory
    /// decides (creating the session for a host) and sends it to the session's task; the
    /// answer arrives on the returned receiver. Never waits.
    pub fn join(
        &self,
        state: &Arc<ServerState>,
        join: Join,
        joining: Joining,
    ) -> Result<RoutedJoin, ServerMessage> {
        let Joining {
            outbox,
            dialect,
            address,
            socket,
            resume_token,
        } = joining;
        let now_secs = crate::clock::now().unix_ms / 1000;
        let token = join
            .token
            .as_deref()
            .map(|t| crate::access::check(t, state.token_key.as_ref(), now_secs));
        let credentials =
            admit(&join, token, state.config.require_token).map_err(|e| e.to_message())?;
        let (session, session_id, member_id) = {
            let mut directory = self.directory.lock().expect("registry");
            let route = match directory.route(&join) {
                // Cluster mode: an id this node has not seen may live on another node.
                Err(JoinError::NotFound { session })
                    if state.cluster.is_some() && !session.is_empty() =>
                {
                    let handle = self.start_cluster(state, session.clone(), Resolve::Existing);
                    directory
                        .insert(session.clone(), handle.clone())
                        .expect("not found under this lock: the id was free");
                    Route::To(handle)
                }
                other => other.map_err(|e| e.to_message())?,
            };
            let (session, id) = match route {
                Route::To(handle) => (handle, join.session_id.clone().unwrap_or_default()),
                Route::Create(spec) => {
                    let id = spec.id.clone();
                    let handle = self.start(state, spec);
                    directory
                        .insert(id.clone(), handle.clone())
                        .expect("routed to create: the id was free under this lock");
                    (handle, id)
                }
            };
            (session, id, directory.new_member_id())
        };
        let ended = JoinError::Ended {
            session: session_id.clone(),
        };
        let (reply, answer) = oneshot::channel();
        let request = Box::new(JoinRequest {
            member_id: member_id.clone(),
            join,
            outbox,
            dialect,
            address,
            credentials,
            socket,
            resume_token,
        });
        if !session.send(SessionInput::Join { request, reply }) {
            return Err(ended.to_message());
        }
        Ok(RoutedJoin {
            member_id,
            session_id,
            session,
            answer,
        })
    }

    fn start(&self, state: &Arc<ServerState>, spec: SessionSpec) -> SessionHandle {
        if state.cluster.is_some() {
            let id = spec.id.clone();
            return self.start_cluster(state, id, Resolve::Create(spec));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        session_task::spawn(state.clone(), spec, serial, rx);
        SessionHandle { tx, serial }
    }

    /// Cluster mode: a handle whose inputs go to the session's forwarder on this node.
    fn start_cluster(
        &self,
        state: &Arc<ServerState>,
        id: String,
        resolve: Resolve,
    ) -> SessionHandle {
        let cluster = state.cluster.as_ref().expect("cluster mode");
        let (tx, rx) = mpsc::unbounded_channel();
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        cluster.forwarder(state, id, resolve, rx);
        SessionHandle { tx, serial }
    }

    /// Cluster mode: the handle of session `id` if any node has it (its spec is in Redis),
    /// starting this node's forwarder for it if needed. On a single node, [`Registry::get`].
    pub async fn resolve(&self, state: &Arc<ServerState>, id: &str) -> Option<SessionHandle> {
        if let Some(handle) = self.get(id) {
            return Some(handle);
        }
        let cluster = state.cluster.as_ref()?;
        let key = loudsync_core::ids::session_key(id);
        let spec = cluster.store.session_spec(&key).await.ok()??;
        let id = crate::cluster::wire::decode_spec(&spec).ok()?.id;
        let mut directory = self.directory.lock().expect("registry");
        if let Some(handle) = directory.get(&id) {
            return Some(handle.clone());
        }
        let handle = self.start_cluster(state, id.clone(), Resolve::Existing);
        directory.insert(id, handle.clone()).ok()?;
        Some(handle)
    }

    /// Cluster mode: forgets this node's handle of session `id` (it ended, or could not be
    /// found); its forwarder ends once the last member's handle is dropped.
    pub(crate) fn forget_cluster(&self, id: &str) {
        self.directory
            .lock()
            .expect("registry")
            .remove_if(id, |_| true);
    }

    /// Cluster mode: forgets every session (Redis came back without the cluster's state).
    pub(crate) fn forget_all_cluster(&self) {
        *self.directory.lock().expect("registry") =
            Directory::new(self.ids.clone(), self.default_max_members);
    }

    /// Registers a session whose inputs arrive on the returned receiver instead of a task
    /// (tests play the session's owner).
    #[cfg(test)]
    pub(crate) fn insert_manual(&self, id: &str) -> mpsc::UnboundedReceiver<SessionInput> {
        let (tx, rx) = mpsc::unbounded_channel();
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        self.directory
            .lock()
            .expect("registry")
            .insert(id.to_string(), SessionHandle { tx, serial })
            .expect("a free id");
        rx
    }

    /// Forgets session `id` if it is still the one with this `serial` (a new session with the
    /// same id may have been created since).
    pub(crate) fn remove(&self, id: &str, serial: u64) {
        self.directory
            .lock()
            .expect("registry")
            .remove_if(id, |h| h.serial == serial);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every slot of a session's channel is as large as its largest input: big inputs are
    /// boxed, so a command stays small.
    #[test]
    fn session_inputs_stay_small() {
        let size = std::mem::size_of::<SessionInput>();
        assert!(size <= 96, "SessionInput is {size} bytes");
    }
}
