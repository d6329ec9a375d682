//! The member side of cluster mode: the sockets this node holds for cluster sessions, and the
//! delivery of each session's outbound stream to them.
//!
//! A socket that joins (or resumes) a cluster session is registered here with its outbox and
//! the answer its driver waits for. The session's owner (this node or another) writes one
//! outbound batch per step into the session's outbound stream; a node reads the stream of
//! every session it holds sockets of, from the last entry it delivered, whenever pub/sub wakes
//! it and on a periodic poll, and hands each batch's items to its own sockets by id. Items for
//! sockets of other nodes are skipped. Since the stream is read by position, a lost wake-up
//! only delays a frame until the next poll; a position the stream was trimmed past (this node
//! fell behind the resume window) is a gap that cannot be filled, so the sockets of that
//! session are closed with 1012 and resume from the owner's replay buffer.
//!
//! Sessions are named here by their key ([`session_key`]: upper case, no dashes), as the
//! wake-ups from Redis name them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use loudsync_core::cluster::StreamId;
use loudsync_core::connection::ResumeAnswer;
use loudsync_core::ids::session_key;
use loudsync_protocol::app::Dialect;
use loudsync_protocol::{close_code, ErrorCode, ServerMessage, Stamp};
use tokio::sync::oneshot;

use crate::cluster::store::Store;
use crate::cluster::wire::{self, Item, ReplyResult};
use crate::outbox::{OutFrame, Outbox};
use crate::sessions::{AdminResult, JoinResult};

/// How many outbound entries one read takes.
const READ_COUNT: usize = 256;

/// What a local socket's driver is waiting for from the owner.
pub(crate) enum Pending {
    /// Nothing.
    None,
    /// The answer to its join.
    Join(oneshot::Sender<JoinResult>),
    /// The answer to its resume.
    Resume(oneshot::Sender<ResumeAnswer>),
}

/// One socket of this node in a cluster session.
pub(crate) struct LocalSocket {
    /// The session's id.
    pub session: String,
    /// The member's id.
    pub member_id: String,
    /// Its outbox (the transport drains it).
    pub outbox: Arc<Outbox>,
    /// Its dialect (for the errors this node writes it itself).
    pub dialect: Dialect,
    /// Its connection token, if resumable: written to Redis once the join is accepted, so a
    /// resume on any node finds the place.
    pub resume_token: Option<String>,
    /// What its driver waits for.
    pub pending: Pending,
}

/// An admin request of this node waiting for the owner's reply.
pub(crate) enum PendingRequest {
    /// An admin action's result.
    Admin(oneshot::Sender<AdminResult>),
    /// A close's acknowledgement.
    Close(oneshot::Sender<()>),
}

/// The stream position of one session this node reads.
struct Subscription {
    /// The last outbound entry delivered; `None` until the caller set where reading starts.
    last: Option<StreamId>,
    /// Local sockets of the session.
    sockets: HashSet<u64>,
}

#[derive(Default)]
struct Tables {
    sockets: HashMap<u64, LocalSocket>,
    subscriptions: HashMap<String, Subscription>,
    requests: HashMap<u64, PendingRequest>,
    /// Sessions woken since they were last read.
    dirty: HashSet<String>,
}

/// What a delivery did that the caller must follow up (outside the lock).
#[derive(Default)]
pub(crate) struct Delivered {
    /// The sessions whose batch said they ended.
    pub ended: Vec<String>,
    /// Connection tokens to record as live: (token, session, member).
    pub tokens: Vec<(String, String, String)>,
}

/// The sockets, subscriptions and pending requests of this node.
#[derive(Default)]
pub(crate) struct Local {
    tables: Mutex<Tables>,
    wake: tokio::sync::Notify,
}

impl Local {
    /// Registers a socket of session `socket.session`. Returns `true` if the session had no
    /// subscription yet: the caller must then [`Local::start_at`] it before anything is
    /// appended for the socket, so no batch written for it is missed.
    pub(crate) fn add_socket(&self, id: u64, mut socket: LocalSocket) -> bool {
        let mut t = self.tables.lock().expect("cluster local");
        socket.session = session_key(&socket.session);
        let session = socket.session.clone();
        t.sockets.insert(id, socket);
        match t.subscriptions.get_mut(&session) {
            Some(sub) => {
                sub.sockets.insert(id);
                false
            }
            None => {
                t.subscriptions.insert(
                    session,
                    Subscription {
                        last: None,
                        sockets: HashSet::from([id]),
                    },
                );
                true
            }
        }
    }

    /// Sets where a new subscription starts reading (the stream's tail before the socket's
    /// first entry was appended). Only moves a subscription that has not started.
    pub(crate) fn start_at(&self, session: &str, tail: StreamId) {
        let mut t = self.tables.lock().expect("cluster local");
        if let Some(sub) = t.subscriptions.get_mut(&session_key(session)) {
            if sub.last.is_none() {
                sub.last = Some(tail);
            }
        }
    }

    /// Forgets a socket (its transport ended); the subscription goes with its last socket.
    /// Returns the session if it has no local socket left.
    pub(crate) fn remove_socket(&self, id: u64) -> Option<String> {
        let mut t = self.tables.lock().expect("cluster local");
        let socket = t.sockets.remove(&id)?;
        let sub = t.subscriptions.get_mut(&socket.session)?;
        sub.sockets.remove(&id);
        if sub.sockets.is_empty() {
            t.subscriptions.remove(&socket.session);
            return Some(socket.session);
        }
        None
    }

    /// Takes what the socket's driver waits for (to answer it with an error).
    pub(crate) fn take_pending(&self, id: u64) -> Pending {
        let mut t = self.tables.lock().expect("cluster local");
        match t.sockets.get_mut(&id) {
            Some(s) => std::mem::replace(&mut s.pending, Pending::None),
            None => Pending::None,
        }
    }

    /// Queues an error this node decided itself (e.g. `cluster_unavailable`) on a socket.
    pub(crate) fn send_error(
        &self,
        id: u64,
        code: ErrorCode,
        text: &str,
        ids: &dyn loudsync_core::ids::IdSource,
    ) {
        let t = self.tables.lock().expect("cluster local");
        let Some(socket) = t.sockets.get(&id) else {
            return;
        };
        let now = crate::clock::now();
        let bytes = crate::encoding::encode(
            socket.dialect,
            &ServerMessage::error(code, text),
            &Stamp::Now(now.unix_ms),
            now.unix_ms,
            &crate::encoding::no_addresses,
            ids,
        );
        socket.outbox.push(OutFrame::Text(bytes), now.instant);
    }

    /// Registers an admin request waiting for the owner's reply.
    pub(crate) fn add_request(&self, id: u64, request: PendingRequest) {
        self.tables
            .lock()
            .expect("cluster local")
            .requests
            .insert(id, request);
    }

    /// Drops a request that timed out or could not be sent.
    pub(crate) fn remove_request(&self, id: u64) {
        self.tables
            .lock()
            .expect("cluster local")
            .requests
            .remove(&id);
    }

    /// Marks a session to be read (a pub/sub wake-up) and wakes the reader.
    pub(crate) fn wake(&self, session: &str) {
        let session = session_key(session);
        let mut t = self.tables.lock().expect("cluster local");
        if t.subscriptions.contains_key(&session) {
            t.dirty.insert(session);
            drop(t);
            self.wake.notify_one();
        }
    }

    /// Marks every session to be read (the periodic poll, a reconnect).
    pub(crate) fn wake_all(&self) {
        let mut t = self.tables.lock().expect("cluster local");
        let all: Vec<String> = t.subscriptions.keys().cloned().collect();
        t.dirty.extend(all);
        drop(t);
        self.wake.notify_one();
    }

    /// Closes every local socket of `session` (or of every session) with `code`, after an
    /// optional message; their members resume (1012) or are told why (cluster state lost).
    pub(crate) fn close_sockets(
        &self,
        session: Option<&str>,
        message: Option<&ServerMessage>,
        code: u16,
        reason: &str,
        ids: &dyn loudsync_core::ids::IdSource,
    ) -> usize {
        let session = session.map(session_key);
        let t = self.tables.lock().expect("cluster local");
        let now = crate::clock::now();
        let mut closed = 0;
        for socket in t.sockets.values() {
            if session.as_ref().is_some_and(|s| *s != socket.session) {
                continue;
            }
            if let Some(message) = message {
                let bytes = crate::encoding::encode(
                    socket.dialect,
                    message,
                    &Stamp::Now(now.unix_ms),
                    now.unix_ms,
                    &crate::encoding::no_addresses,
                    ids,
                );
                socket.outbox.push(OutFrame::Text(bytes), now.instant);
            }
            socket.outbox.force_close(code, reason.to_string());
            closed += 1;
        }
        closed
    }

    /// Stops reading an ended session (its sockets were sent their close by its last batch).
    pub(crate) fn forget_session(&self, session: &str) {
        let session = session_key(session);
        let mut t = self.tables.lock().expect("cluster local");
        if let Some(sub) = t.subscriptions.remove(&session) {
            for socket in sub.sockets {
                t.sockets.remove(&socket);
            }
        }
        t.dirty.remove(&session);
    }

    /// Forgets every socket, subscription and request (Redis came back empty).
    pub(crate) fn clear(&self) {
        let mut t = self.tables.lock().expect("cluster local");
        t.sockets.clear();
        t.subscriptions.clear();
        t.dirty.clear();
        t.requests.clear();
    }

    /// Waits until a session is marked to be read, or `poll` passed.
    pub(crate) async fn wait(&self, poll: Duration) {
        let _ = tokio::time::timeout(poll, self.wake.notified()).await;
    }

    /// Takes the sessions marked to be read.
    fn take_dirty(&self) -> Vec<String> {
        let mut t = self.tables.lock().expect("cluster local");
        t.dirty.drain().collect()
    }

    fn position(&self, session: &str) -> Option<StreamId> {
        let t = self.tables.lock().expect("cluster local");
        t.subscriptions.get(session).and_then(|s| s.last)
    }

    /// Reads and delivers every session marked to be read, each up to the stream's tail.
    pub(crate) async fn read_dirty(
        &self,
        store: &Store,
        ids: &dyn loudsync_core::ids::IdSource,
    ) -> Delivered {
        let mut delivered = Delivered::default();
        for session in self.take_dirty() {
            self.read_session(store, &session, ids, &mut delivered)
                .await;
        }
        delivered
    }

    async fn read_session(
        &self,
        store: &Store,
        session: &str,
        ids: &dyn loudsync_core::ids::IdSource,
        delivered: &mut Delivered,
    ) {
        loop {
            let Some(last) = self.position(session) else {
                return;
            };
            let entries = match store
                .read_outbound(session, &last.to_string(), READ_COUNT)
                .await
            {
                Ok(entries) => entries,
                Err(e) => {
                    tracing::debug!(session, error = %e, "outbound read failed; retried at the next poll");
                    return;
                }
            };
            if entries.is_empty() {
                self.check_gap(store, session, last, ids).await;
                return;
            }
            let full = entries.len() == READ_COUNT;
            for (id, text) in entries {
                let Ok(id) = id.parse::<StreamId>() else {
                    tracing::warn!(session, id, "outbound entry with a bad id skipped");
                    continue;
                };
                match wire::decode_batch(&text) {
                    Ok(batch) => self.deliver(session, id, batch, delivered),
                    Err(e) => {
                        tracing::warn!(session, %id, error = %e, "undecodable outbound batch skipped");
                        self.advance(session, id);
                    }
                }
            }
            if !full {
                return;
            }
        }
    }

    /// A stream that holds nothing after our position but starts after it was trimmed past
    /// what we delivered: the frames between are lost to this node, so its sockets resume.
    async fn check_gap(
        &self,
        store: &Store,
        session: &str,
        last: StreamId,
        ids: &dyn loudsync_core::ids::IdSource,
    ) {
        let Ok(Some(head)) = store.outbound_head(session).await else {
            return;
        };
        let Ok(head) = head.parse::<StreamId>() else {
            return;
        };
        if last != StreamId::ZERO && head > last {
            // Entries between `last` and `head` may have been trimmed: can't tell they held
            // nothing for us, so the members resume and get them from the owner's replay.
            let tail = store
                .outbound_tail(session)
                .await
                .ok()
                .and_then(|t| t.parse::<StreamId>().ok());
            if tail.is_some_and(|t| t < head) {
                return;
            }
            tracing::warn!(session, %last, %head, "outbound stream trimmed past this node's position; its sockets resume");
            self.close_sockets(
                Some(session),
                None,
                close_code::SERVICE_RESTART,
                "fell behind the session's stream; resume",
                ids,
            );
            self.advance(session, head);
        }
    }

    fn advance(&self, session: &str, id: StreamId) {
        let mut t = self.tables.lock().expect("cluster local");
        if let Some(sub) = t.subscriptions.get_mut(session) {
            if sub.last.is_some_and(|last| last < id) {
                sub.last = Some(id);
            }
        }
    }

    /// Hands one batch's items to this node's sockets, then completes the answers the items
    /// carried (after the frames, as a single node queues `welcome` before answering).
    fn deliver(
        &self,
        session: &str,
        id: StreamId,
        batch: wire::OutboundBatch,
        delivered: &mut Delivered,
    ) {
        let now = crate::clock::now();
        let mut t = self.tables.lock().expect("cluster local");
        match t.subscriptions.get_mut(session) {
            Some(sub) if sub.last.is_some_and(|last| last < id) => sub.last = Some(id),
            // Delivered already (a read raced with another) or no longer read.
            _ => return,
        }
        let payload = |i: u32| {
            batch
                .payloads
                .get(i as usize)
                .cloned()
                .unwrap_or_else(Bytes::new)
        };
        let mut answers: Vec<Box<dyn FnOnce()>> = Vec::new();
        for delivery in batch.deliveries {
            let Some(socket) = t.sockets.get_mut(&delivery.socket) else {
                continue;
            };
            let mut touched = false;
            for item in delivery.items {
                match item {
                    Item::Text(i) => {
                        touched |= socket
                            .outbox
                            .enqueue(OutFrame::Text(payload(i)), now.instant)
                            == Some(true);
                    }
                    Item::Numbered(seq, i) => {
                        touched |= socket
                            .outbox
                            .enqueue(OutFrame::Numbered(seq, payload(i)), now.instant)
                            == Some(true);
                    }
                    Item::Close(code, reason) => {
                        touched |= socket
                            .outbox
                            .enqueue(OutFrame::Close(code, reason), now.instant)
                            == Some(true);
                    }
                    Item::Joined(result) => {
                        if result.is_ok() {
                            if let Some(token) = &socket.resume_token {
                                delivered.tokens.push((
                                    token.clone(),
                                    socket.session.clone(),
                                    socket.member_id.clone(),
                                ));
                            }
                        }
                        if let Pending::Join(reply) =
                            std::mem::replace(&mut socket.pending, Pending::None)
                        {
                            answers.push(Box::new(move || {
                                let _ = reply.send(result);
                            }));
                        }
                    }
                    Item::Resumed(answer) => {
                        if let Pending::Resume(reply) =
                            std::mem::replace(&mut socket.pending, Pending::None)
                        {
                            answers.push(Box::new(move || {
                                let _ = reply.send(answer);
                            }));
                        }
                    }
                }
            }
            if touched {
                socket.outbox.notify();
            }
        }
        for reply in batch.replies {
            match (t.requests.remove(&reply.request), reply.result) {
                (Some(PendingRequest::Admin(tx)), ReplyResult::Admin(result)) => {
                    answers.push(Box::new(move || {
                        let _ = tx.send(result);
                    }));
                }
                (Some(PendingRequest::Close(tx)), ReplyResult::Closed) => {
                    answers.push(Box::new(move || {
                        let _ = tx.send(());
                    }));
                }
                (Some(other), _) => {
                    // A reply of another kind: keep waiting (cannot happen with our owners).
                    t.requests.insert(reply.request, other);
                }
                (None, _) => {}
            }
        }
        if batch.ended {
            delivered.ended.push(session.to_string());
        }
        drop(t);
        for answer in answers {
            answer();
        }
    }
}
