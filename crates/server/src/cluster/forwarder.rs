//! The member side of one cluster session on this node: the task behind the session's
//! [`crate::sessions::SessionHandle`], which appends what this node's members and admin API
//! send to the session's inbound stream, in the order they sent it.
//!
//! A forwarder first resolves its session: a host's first join creates it cluster-wide
//! (`SET NX` of its spec) and this node claims its lease and owns it; a join to an id this
//! node has not seen looks it up in Redis (`session_not_found` if no node has it). Then each
//! input becomes one inbound entry. A join or resume registers its socket with
//! [`super::local::Local`] first, and starts reading the outbound stream from its tail before
//! the entry is appended, so the answer cannot be missed. Liveness stays here: `ack`s are
//! dropped (the replay buffer is bounded by its own limits), and a frame that cannot reach
//! Redis is answered `cluster_unavailable` at once instead of being dropped silently. A
//! detach is retried until Redis takes it, so no member is left a ghost.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use loudsync_core::cluster::StreamId;
use loudsync_core::connection::{MemberCommand, ResumeAnswer};
use loudsync_core::directory::{JoinError, SessionSpec};
use loudsync_protocol::{ErrorCode, ResumeFailure, ServerMessage};
use tokio::sync::mpsc;

use super::local::{LocalSocket, Pending, PendingRequest};
use super::wire::{self, Inbound};
use super::Cluster;
use crate::sessions::SessionInput;
use crate::state::ServerState;

/// The text of `cluster_unavailable`.
pub(crate) const CLUSTER_UNAVAILABLE: &str =
    "this node cannot reach the cluster right now; the frame was not taken (resend it after resuming)";

/// Between retries of a detach Redis did not take.
const DETACH_RETRY: Duration = Duration::from_millis(250);

/// How a forwarder finds its session.
pub(crate) enum Resolve {
    /// Create it cluster-wide if no node has it (a host's join, the admin API), and own it.
    Create(SessionSpec),
    /// It must exist somewhere (a member's join, a resume, the admin API).
    Existing,
}

/// Starts the forwarder of session `session_id` on this node.
pub(crate) fn spawn(
    state: Arc<ServerState>,
    cluster: Arc<Cluster>,
    session_id: String,
    resolve: Resolve,
    rx: mpsc::UnboundedReceiver<SessionInput>,
) {
    let forwarder = Forwarder {
        state,
        cluster,
        id: session_id,
        detaches: VecDeque::new(),
    };
    tokio::spawn(forwarder.run(resolve, rx));
}

struct Forwarder {
    state: Arc<ServerState>,
    cluster: Arc<Cluster>,
    id: String,
    /// Detach entries Redis has not taken yet, in order.
    detaches: VecDeque<String>,
}

impl Forwarder {
    async fn run(mut self, resolve: Resolve, mut rx: mpsc::UnboundedReceiver<SessionInput>) {
        if let Err(refusal) = self.resolve(resolve).await {
            self.refuse_all(&mut rx, refusal);
            self.state.registry.forget_cluster(&self.id);
            return;
        }
        loop {
            let input = if self.detaches.is_empty() {
                rx.recv().await
            } else {
                match tokio::time::timeout(DETACH_RETRY, rx.recv()).await {
                    Ok(input) => input,
                    Err(_) => {
                        self.flush_detaches().await;
                        continue;
                    }
                }
            };
            let Some(input) = input else { break };
            self.flush_detaches().await;
            self.forward(input).await;
        }
        // Every handle is gone (the session ended here): what is left is sent all the same.
        while !self.detaches.is_empty() {
            self.flush_detaches().await;
            if !self.detaches.is_empty() {
                tokio::time::sleep(DETACH_RETRY).await;
            }
        }
    }

    /// Finds (or creates) the session cluster-wide; the error is what its joins are told.
    async fn resolve(&mut self, resolve: Resolve) -> Result<(), ServerMessage> {
        let store = &self.cluster.store;
        let unavailable =
            |_| ServerMessage::error(ErrorCode::ClusterUnavailable, CLUSTER_UNAVAILABLE);
        match resolve {
            Resolve::Create(spec) => {
                let created = store
                    .create_session(&self.id, &wire::encode_spec(&spec))
                    .await
                    .map_err(unavailable)?;
                if created {
                    self.cluster
                        .claim_and_own(&self.state, &self.id)
                        .await
                        .map_err(unavailable)?;
                }
                Ok(())
            }
            Resolve::Existing => match store.session_spec(&self.id).await.map_err(unavailable)? {
                Some(_) => Ok(()),
                None => Err(JoinError::NotFound {
                    session: self.id.clone(),
                }
                .to_message()),
            },
        }
    }

    /// Answers every queued input of a session that could not be resolved.
    fn refuse_all(&self, rx: &mut mpsc::UnboundedReceiver<SessionInput>, refusal: ServerMessage) {
        rx.close();
        while let Ok(input) = rx.try_recv() {
            match input {
                SessionInput::Join { reply, .. } => {
                    let _ = reply.send(Err(refusal.clone()));
                }
                SessionInput::Resume { reply, .. } => {
                    let _ = reply.send(ResumeAnswer::Failed(ResumeFailure::SessionClosed));
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

    async fn flush_detaches(&mut self) {
        while let Some(entry) = self.detaches.front() {
            if self
                .cluster
                .store
                .append_inbound(&self.id, entry)
                .await
                .is_err()
            {
                return;
            }
            self.detaches.pop_front();
        }
    }

    /// Registers a socket of this session; a new subscription starts at the stream's tail.
    /// If Redis cannot say where that is, the socket is not registered and what its driver
    /// waits for is given back.
    async fn register(&self, socket: u64, local: LocalSocket) -> Result<(), Pending> {
        if self.cluster.local.add_socket(socket, local) {
            match self.cluster.store.outbound_tail(&self.id).await {
                Ok(tail) => {
                    let tail = tail.parse::<StreamId>().unwrap_or(StreamId::ZERO);
                    self.cluster.local.start_at(&self.id, tail);
                    // Wake-ups make delivery prompt; the poll covers a lost one.
                    if let Err(e) = self.cluster.store.subscribe_session(&self.id, false).await {
                        tracing::debug!(session = self.id, error = %e, "subscribe failed; the poll reads the stream");
                    }
                }
                Err(_) => {
                    let pending = self.cluster.local.take_pending(socket);
                    self.cluster.local.remove_socket(socket);
                    return Err(pending);
                }
            }
        }
        Ok(())
    }

    /// A resume that cannot reach the owner now: the socket is closed with 1012 (service
    /// restart), so the client resumes again shortly; its place is not touched.
    fn resume_later(&self, outbox: &crate::outbox::Outbox) {
        self.state.metrics.cluster_unavailable.increment(1);
        outbox.force_close(
            loudsync_protocol::close_code::SERVICE_RESTART,
            "cluster unavailable: resume again".to_string(),
        );
    }

    async fn append(&self, entry: &Inbound) -> bool {
        let text = wire::encode_inbound(entry);
        self.cluster
            .store
            .append_inbound(&self.id, &text)
            .await
            .is_ok()
    }

    fn unavailable(&self, socket: u64) {
        self.state.metrics.cluster_unavailable.increment(1);
        self.cluster.local.send_error(
            socket,
            ErrorCode::ClusterUnavailable,
            CLUSTER_UNAVAILABLE,
            self.state.ids.as_ref(),
        );
    }

    async fn forward(&mut self, input: SessionInput) {
        let node = self.cluster.node_id.clone();
        match input {
            SessionInput::Join { request, reply } => {
                let request = *request;
                let socket = request.socket;
                let local = LocalSocket {
                    session: self.id.clone(),
                    member_id: request.member_id.clone(),
                    outbox: request.outbox.clone(),
                    dialect: request.dialect,
                    resume_token: request.resume_token.clone(),
                    pending: Pending::Join(reply),
                };
                let refused =
                    || ServerMessage::error(ErrorCode::ClusterUnavailable, CLUSTER_UNAVAILABLE);
                if let Err(Pending::Join(reply)) = self.register(socket, local).await {
                    let _ = reply.send(Err(refused()));
                    return;
                }
                let entry = Inbound::Join {
                    node,
                    socket,
                    member_id: request.member_id,
                    join: request.join,
                    dialect: request.dialect,
                    address: request.address,
                    credentials: request.credentials,
                    resume_token: request.resume_token,
                };
                if !self.append(&entry).await {
                    if let Pending::Join(reply) = self.cluster.local.take_pending(socket) {
                        let _ = reply.send(Err(refused()));
                    }
                    self.cluster.local.remove_socket(socket);
                }
            }
            SessionInput::Resume { request, reply } => {
                let request = *request;
                let socket = request.socket;
                let local = LocalSocket {
                    session: self.id.clone(),
                    member_id: request.member_id.clone(),
                    outbox: request.outbox.clone(),
                    dialect: loudsync_protocol::app::Dialect::LoudSync,
                    resume_token: Some(request.token.clone()),
                    pending: Pending::Resume(reply),
                };
                let outbox = request.outbox.clone();
                if self.register(socket, local).await.is_err() {
                    self.resume_later(&outbox);
                    return;
                }
                let entry = Inbound::Resume {
                    node,
                    socket,
                    member_id: request.member_id,
                    token: request.token,
                    last_seq: request.last_seq,
                };
                if !self.append(&entry).await {
                    // The pending answer is dropped with the socket, unanswered: the socket
                    // closes and the client resumes again.
                    let _ = self.cluster.local.take_pending(socket);
                    self.cluster.local.remove_socket(socket);
                    self.resume_later(&outbox);
                }
            }
            SessionInput::Command {
                command: MemberCommand::Ack(_),
                ..
            } => {
                // Liveness stays on the member's node.
            }
            SessionInput::Command {
                member_id,
                socket,
                seq,
                command,
            } => {
                let entry = Inbound::Command {
                    member_id,
                    socket,
                    seq,
                    command,
                };
                if !self.append(&entry).await {
                    self.unavailable(socket);
                }
            }
            SessionInput::Detach {
                member_id,
                socket,
                reason,
                fatal,
            } => {
                let entry = wire::encode_inbound(&Inbound::Detach {
                    member_id,
                    socket,
                    reason,
                    fatal,
                });
                if self.cluster.local.remove_socket(socket).is_some() {
                    let _ = self
                        .cluster
                        .store
                        .unsubscribe_session(&self.id, false)
                        .await;
                }
                self.detaches.push_back(entry);
                self.flush_detaches().await;
            }
            SessionInput::Close { reason, code, done } => {
                let reply = done.map(|done| {
                    let id = self.cluster.next_id();
                    self.cluster
                        .local
                        .add_request(id, PendingRequest::Close(done));
                    id
                });
                let entry = Inbound::Close {
                    reason,
                    code,
                    reply,
                };
                if !self.append(&entry).await {
                    if let Some(id) = reply {
                        self.cluster.local.remove_request(id);
                    }
                }
            }
            SessionInput::Admin(admin) => {
                let (action, tx) = *admin;
                let id = self.cluster.next_id();
                self.cluster
                    .local
                    .add_request(id, PendingRequest::Admin(tx));
                if !self.append(&Inbound::Admin { action, reply: id }).await {
                    self.cluster.local.remove_request(id);
                }
            }
            SessionInput::View(reply) => {
                // Views of cluster sessions are read from Redis (`Registry::cluster_view`);
                // a caller asking the handle gets none.
                drop(reply);
            }
        }
    }
}
