//! The owner of one cluster session: the node holding its lease runs the session's state
//! machine here, fed only by the session's inbound stream.
//!
//! Each step reads the inbound entries after the cursor (the last one applied), applies them
//! in order to the same [`SessionOwner`] a single node runs, with the time each entry's id
//! carries, and collects what the machine queued for every socket (the sockets are capture
//! outboxes here, not transports). It then writes one outbound batch, the new cursor and the
//! admin view in one fenced script: only while the lease is this owner's, and only after that
//! does any member see the step's output. The session's timer becomes a `Tick` entry, a dead
//! member node a `NodeGone` entry, so the state is a function of the inbound stream alone and a
//! node taking the session over rebuilds it by applying the stream again up to the cursor,
//! discarding the outputs (they are in the outbound stream already), then carries on.
//!
//! The lease is renewed every third of it ([`OwnerLease`]). When a renewal fails, or cannot be
//! made in time, or a fenced write is refused, the owner stops at once: it writes nothing more
//! and closes the session's sockets this node holds with 1012, so their members resume.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use loudsync_core::cluster::{LeaseStep, OwnerLease, StreamClock, StreamId};
use loudsync_core::directory::SessionSpec;
use loudsync_core::outbound::OutboundLimits;
use loudsync_core::Now;
use loudsync_protocol::{close_code, LeaveReason};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant as TokioInstant;

use crate::cluster::store::OutboundWrite;
use crate::cluster::wire::{self, BatchBuilder, Inbound, ReplyResult};
use crate::cluster::Cluster;
use crate::outbox::{OutFrame, Outbox};
use crate::session_task::SessionOwner;
use crate::sessions::{JoinRequest, ResumeRequest, SessionInput};
use crate::state::ServerState;

/// Inbound entries applied per step (one outbound batch).
const STEP_ENTRIES: usize = 64;
/// Inbound entries read per call while rebuilding.
const REBUILD_READ: usize = 1024;
/// The shortest time between two ticks appended for the same deadline (clock skew between
/// this node and Redis can make a tick land just before the deadline it was for).
const TICK_RETRY: Duration = Duration::from_millis(20);
/// Between retries of a write that failed because Redis did not answer.
const WRITE_RETRY: Duration = Duration::from_millis(100);

/// What the node asks of one of its owners.
pub(crate) enum OwnerSignal {
    /// New inbound entries (a pub/sub wake-up).
    Wake,
    /// Give the session up (rolling restart): release the lease so another node takes it at
    /// once; answered when done.
    Release(oneshot::Sender<()>),
    /// Stop at once without writing (Redis came back empty: the session is gone).
    Abandon,
}

/// How an owner starts.
pub(crate) struct OwnerStart {
    /// The session's id.
    pub session_id: String,
    /// Its spec, as created.
    pub spec: SessionSpec,
    /// The epoch of the lease just claimed.
    pub epoch: u64,
    /// When the claim was sent (the lease counts from then).
    pub claimed_at: Instant,
}

/// Starts the owner task of a session whose lease this node just claimed: it first applies
/// the inbound stream up to the stored cursor (nothing for a new session), then serves.
pub(crate) fn spawn(state: Arc<ServerState>, cluster: Arc<Cluster>, start: OwnerStart) {
    let (tx, rx) = mpsc::unbounded_channel();
    if !cluster.add_owner(&start.session_id, tx) {
        // Already owned here (a claim raced with another of ours): nothing to start.
        return;
    }
    let serial = cluster.next_id();
    let mut owner = SessionOwner::open(state.clone(), start.spec, serial);
    owner.keep_ended_tokens();
    let lease = OwnerLease::new(start.epoch, cluster.lease, start.claimed_at);
    let task = ClusterOwner {
        id: start.session_id,
        epoch: start.epoch,
        owner,
        lease,
        clock: StreamClock::new(crate::clock::now()),
        cursor: StreamId::ZERO,
        captures: HashMap::new(),
        socket_of: HashMap::new(),
        sockets_of_members: HashMap::new(),
        gone_nodes: HashSet::new(),
        last_view: None,
        last_tick: None,
        replaying: false,
        state,
        cluster,
    };
    tokio::spawn(task.run(rx));
}

/// Why an owner stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The session ended (closed, or its host left for good).
    Ended,
    /// The lease is no longer ours.
    Lost,
    /// Released on purpose (rolling restart).
    Released,
    /// Given up without a write (cluster state lost).
    Abandoned,
}

struct ClusterOwner {
    state: Arc<ServerState>,
    cluster: Arc<Cluster>,
    id: String,
    epoch: u64,
    owner: SessionOwner,
    lease: OwnerLease,
    clock: StreamClock,
    /// The last inbound entry applied.
    cursor: StreamId,
    /// Each socket's capture outbox: what the session gives it in a step.
    captures: HashMap<u64, Arc<Outbox>>,
    /// The socket of each capture, by the capture's address (to map touched outboxes back).
    socket_of: HashMap<usize, u64>,
    /// Each member's node and socket (from its join or resume), for dead-node checks.
    sockets_of_members: HashMap<String, (String, u64)>,
    /// Nodes whose members were already detached as gone.
    gone_nodes: HashSet<String>,
    /// The admin view last written.
    last_view: Option<String>,
    /// When the last tick was appended, and for which deadline.
    last_tick: Option<(Instant, Instant)>,
    /// Rebuilding: outputs are dropped.
    replaying: bool,
}

impl ClusterOwner {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<OwnerSignal>) {
        // Wake-ups for new inbound entries make the owner prompt; the poll covers a lost one.
        if let Err(e) = self.cluster.store.subscribe_session(&self.id, true).await {
            tracing::debug!(session = self.id, error = %e, "subscribe failed; the poll reads the stream");
        }
        let stop = match self.rebuild().await {
            Err(stop) => stop,
            Ok(()) => self.serve(&mut rx).await,
        };
        self.stop(stop).await;
    }

    /// Applies the inbound stream up to the stored cursor, outputs dropped.
    async fn rebuild(&mut self) -> Result<(), Stop> {
        let store = self.cluster.store.clone();
        let id = self.id.clone();
        let Some(target) = self.read_with_retry(|| store.cursor(&id)).await? else {
            return Ok(());
        };
        let Ok(target) = target.parse::<StreamId>() else {
            tracing::warn!(
                session = self.id,
                target,
                "bad cursor; rebuilding from nothing"
            );
            return Ok(());
        };
        self.replaying = true;
        let started = Instant::now();
        let mut applied = 0usize;
        while self.cursor < target {
            let after = self.cursor.to_string();
            let entries = self
                .read_with_retry(|| store.read_inbound(&id, &after, REBUILD_READ))
                .await?;
            if entries.is_empty() {
                break;
            }
            let mut builder = BatchBuilder::new(self.epoch);
            for (id, text) in entries {
                let Ok(id) = id.parse::<StreamId>() else {
                    continue;
                };
                if id > target {
                    break;
                }
                self.apply_entry(id, &text, &mut builder);
                applied += 1;
            }
            self.collect(&mut builder, true);
        }
        self.replaying = false;
        self.last_view = None;
        tracing::info!(
            session = self.id,
            epoch = self.epoch,
            entries = applied,
            took_ms = started.elapsed().as_millis() as u64,
            "session taken over: state rebuilt from its inbound stream"
        );
        self.state.metrics.cluster_takeovers.increment(1);
        Ok(())
    }

    /// Retries a Redis read while the lease lasts.
    async fn read_with_retry<T, F, Fut>(&mut self, mut read: F) -> Result<T, Stop>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = crate::cluster::store::StoreResult<T>>,
    {
        loop {
            match read().await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    if !self.lease.may_write(Instant::now()) {
                        return Err(Stop::Lost);
                    }
                    tracing::debug!(session = self.id, error = %e, "redis read failed; retrying");
                    tokio::time::sleep(WRITE_RETRY).await;
                    self.keep_lease().await?;
                }
            }
        }
    }

    async fn serve(&mut self, rx: &mut mpsc::UnboundedReceiver<OwnerSignal>) -> Stop {
        let node_check = self.cluster.lease / 3;
        let mut next_node_check = TokioInstant::now() + node_check;
        let mut next_poll = TokioInstant::now();
        loop {
            if let Err(stop) = self.keep_lease().await {
                return stop;
            }
            if TokioInstant::now() >= next_poll {
                // Read until the stream is drained.
                loop {
                    match self.step().await {
                        Ok(true) => continue,
                        Ok(false) => break,
                        Err(stop) => return stop,
                    }
                }
                next_poll = TokioInstant::now() + self.cluster.poll;
            }
            if self.owner.session().is_ended() {
                return Stop::Ended;
            }
            if TokioInstant::now() >= next_node_check {
                if let Err(stop) = self.check_nodes().await {
                    return stop;
                }
                next_node_check = TokioInstant::now() + node_check;
            }
            let mut wake_at = next_poll.min(next_node_check);
            if let Some(at) = self.lease.poll_timeout() {
                wake_at = wake_at.min(TokioInstant::from_std(at));
            }
            let deadline = self.owner.session().poll_timeout();
            if let Some(at) = deadline {
                let at = self.tick_due(at);
                wake_at = wake_at.min(TokioInstant::from_std(at));
            }
            tokio::select! {
                signal = rx.recv() => match signal {
                    Some(OwnerSignal::Wake) => next_poll = TokioInstant::now(),
                    Some(OwnerSignal::Release(done)) => {
                        let _ = self.cluster.store.release(&self.id, &self.cluster.node_id, self.epoch).await;
                        let _ = done.send(());
                        return Stop::Released;
                    }
                    Some(OwnerSignal::Abandon) | None => return Stop::Abandoned,
                },
                _ = tokio::time::sleep_until(wake_at) => {}
            }
            if let Some(at) = deadline {
                if Instant::now() >= self.tick_due(at) {
                    if let Err(stop) = self.append_tick(at).await {
                        return stop;
                    }
                    next_poll = TokioInstant::now();
                }
            }
        }
    }

    /// When the tick for deadline `at` is to be appended (again, if one for it landed early).
    fn tick_due(&self, at: Instant) -> Instant {
        match self.last_tick {
            Some((sent, deadline)) if deadline == at => at.max(sent + TICK_RETRY),
            _ => at,
        }
    }

    async fn append_tick(&mut self, deadline: Instant) -> Result<(), Stop> {
        self.last_tick = Some((Instant::now(), deadline));
        self.append_own(&Inbound::Tick).await
    }

    /// Appends an entry of the owner's own (fenced: only while the lease is ours).
    async fn append_own(&mut self, entry: &Inbound) -> Result<(), Stop> {
        let text = wire::encode_inbound(entry);
        loop {
            if !self.lease.may_write(Instant::now()) {
                return Err(Stop::Lost);
            }
            match self
                .cluster
                .store
                .append_inbound_fenced(&self.id, &self.cluster.node_id, self.epoch, &text)
                .await
            {
                Ok(Some(_)) => return Ok(()),
                Ok(None) => return Err(Stop::Lost),
                Err(e) => {
                    tracing::debug!(session = self.id, error = %e, "fenced append failed; retrying");
                    tokio::time::sleep(WRITE_RETRY).await;
                    self.keep_lease().await?;
                }
            }
        }
    }

    /// Renews the lease when due; `Err(Lost)` once it is gone.
    async fn keep_lease(&mut self) -> Result<(), Stop> {
        loop {
            let now = Instant::now();
            match self.lease.handle_timeout(now) {
                Some(LeaseStep::Renew) => {
                    let answer = self
                        .cluster
                        .store
                        .renew(
                            &self.id,
                            &self.cluster.node_id,
                            self.epoch,
                            self.cluster.lease,
                        )
                        .await;
                    let step = match answer {
                        Ok(ok) => self.lease.handle_renewed(Instant::now(), ok),
                        Err(e) => {
                            // No answer: the lease keeps its estimate and retries shortly.
                            tracing::debug!(session = self.id, error = %e, "lease renewal got no answer");
                            self.lease.handle_renew_error(Instant::now())
                        }
                    };
                    if step == Some(LeaseStep::Lost) || self.lease.is_lost() {
                        return Err(Stop::Lost);
                    }
                    if self.lease.renewal_in_flight() {
                        return Ok(());
                    }
                }
                Some(LeaseStep::Lost) => return Err(Stop::Lost),
                None => {
                    return if self.lease.is_lost() {
                        Err(Stop::Lost)
                    } else {
                        Ok(())
                    }
                }
            }
        }
    }

    /// Asks Redis whether the nodes holding members are alive; a dead one's members are
    /// detached through a `NodeGone` entry (so a rebuild detaches them at the same point).
    async fn check_nodes(&mut self) -> Result<(), Stop> {
        let nodes: HashSet<String> = self
            .sockets_of_members
            .values()
            .map(|(node, _)| node.clone())
            .filter(|n| !self.gone_nodes.contains(n))
            .collect();
        for node in nodes {
            match self.cluster.store.node_alive(&node).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(
                        session = self.id,
                        node,
                        "member node gone; its members are detached"
                    );
                    self.append_own(&Inbound::NodeGone { node }).await?;
                }
                Err(_) => return Ok(()),
            }
        }
        Ok(())
    }

    /// Applies up to [`STEP_ENTRIES`] new inbound entries and writes their output; `Ok(true)`
    /// if it applied any.
    async fn step(&mut self) -> Result<bool, Stop> {
        let after = self.cursor.to_string();
        let entries = match self
            .cluster
            .store
            .read_inbound(&self.id, &after, STEP_ENTRIES)
            .await
        {
            Ok(entries) => entries,
            Err(e) => {
                tracing::debug!(session = self.id, error = %e, "inbound read failed");
                return Ok(false);
            }
        };
        // A new owner writes its view at once, so the admin API of every node lists the
        // session before anything happened in it.
        if entries.is_empty() && self.last_view.is_some() {
            return Ok(false);
        }
        let first_view = entries.is_empty();
        let mut builder = BatchBuilder::new(self.epoch);
        let mut sweep = false;
        let mut view_changed = false;
        for (id, text) in entries {
            let Ok(id) = id.parse::<StreamId>() else {
                tracing::warn!(session = self.id, id, "inbound entry with a bad id skipped");
                continue;
            };
            let kind = self.apply_entry(id, &text, &mut builder);
            sweep |= kind.sweep;
            view_changed |= kind.view;
        }
        self.collect(&mut builder, sweep);
        let ended = self.owner.session().is_ended();
        if ended {
            builder.ended();
        }
        let view = if view_changed || ended || self.last_view.is_none() {
            let view = self.view_json();
            (Some(&view) != self.last_view.as_ref()).then_some(view)
        } else {
            None
        };
        let write = OutboundWrite {
            batch: wire::encode_batch(&builder.build()),
            cursor: self.cursor.to_string(),
            view: view.clone(),
            trim_min_id: Some(self.trim_point().to_string()),
            ended,
            session_id: self.id.clone(),
        };
        self.write(&write).await?;
        if view.is_some() {
            self.last_view = view;
        }
        self.record_ended_tokens().await;
        self.state.metrics.cluster_batches.increment(1);
        Ok(!first_view)
    }

    /// The oldest outbound entry still worth keeping: one resume window back.
    fn trim_point(&self) -> StreamId {
        let window = self.state.config.resume_window.as_millis() as u64;
        let now_ms = crate::clock::now().unix_ms;
        StreamId {
            ms: now_ms.saturating_sub(window.saturating_mul(2)),
            seq: 0,
        }
    }

    /// Writes a step's output, fenced; retried while Redis does not answer and the lease lasts.
    async fn write(&mut self, write: &OutboundWrite) -> Result<(), Stop> {
        loop {
            if !self.lease.may_write(Instant::now()) {
                return Err(Stop::Lost);
            }
            match self
                .cluster
                .store
                .append_outbound(&self.id, &self.cluster.node_id, self.epoch, write)
                .await
            {
                Ok(Some(_)) => return Ok(()),
                Ok(None) => {
                    tracing::warn!(
                        session = self.id,
                        epoch = self.epoch,
                        "fenced write refused: the lease is no longer ours"
                    );
                    return Err(Stop::Lost);
                }
                Err(e) => {
                    tracing::debug!(session = self.id, error = %e, "outbound write failed; retrying");
                    tokio::time::sleep(WRITE_RETRY).await;
                    self.keep_lease().await?;
                }
            }
        }
    }

    /// Connection tokens the session ended in the step: recorded cluster-wide, so a resume on
    /// any node is told why.
    async fn record_ended_tokens(&mut self) {
        let ended = self.owner.take_ended_tokens();
        let ttl = self.state.config.resume_window.saturating_mul(10);
        for (token, why) in ended {
            let value = format!("E|{}", why.as_str());
            if let Err(e) = self.cluster.store.set_token(&token, &value, ttl).await {
                tracing::debug!(error = %e, "could not record an ended token");
            }
        }
    }

    /// The admin view (`GET /v1/sessions/{id}` with the owner's node and epoch).
    fn view_json(&self) -> String {
        let session = self.owner.session();
        let details = session.member_details();
        let view = crate::sessions::SessionView {
            id: session.id().to_string(),
            name: session.name().to_string(),
            max_members: session.max_members(),
            host_id: session.host_id().map(str::to_string),
            password_protected: session.password_protected(),
            host_device: session.session_info().host,
            members: details.iter().map(|(m, _)| m.clone()).collect(),
            dialects: details.iter().map(|(_, d)| *d).collect(),
            state: Some(session.state().snapshot(session.term())),
        };
        let mut body = crate::http::session_detail(&view);
        body["owner"] = self.cluster.node_id.clone().into();
        body["epoch"] = self.epoch.into();
        body["ended"] = session.is_ended().into();
        body.to_string()
    }

    /// Applies one inbound entry at the time its id carries.
    fn apply_entry(&mut self, id: StreamId, text: &str, builder: &mut BatchBuilder) -> Applied {
        self.cursor = self.cursor.max(id);
        let now = self.clock.at(id.ms);
        let entry = match wire::decode_inbound(text) {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(session = self.id, %id, error = %e, "undecodable inbound entry skipped");
                return Applied::default();
            }
        };
        self.apply(now, entry, builder)
    }

    fn capture(&mut self, socket: u64) -> Arc<Outbox> {
        let outbox = self
            .captures
            .entry(socket)
            .or_insert_with(|| Arc::new(Outbox::new(capture_limits())))
            .clone();
        self.socket_of.insert(Arc::as_ptr(&outbox) as usize, socket);
        outbox
    }

    /// Forgets the captures of sockets that are closed (or `also`).
    fn forget_closed(&mut self, also: Option<u64>) {
        let socket_of = &mut self.socket_of;
        self.captures.retain(|socket, outbox| {
            let keep = !outbox.is_closed() && Some(*socket) != also;
            if !keep {
                socket_of.remove(&(Arc::as_ptr(outbox) as usize));
            }
            keep
        });
    }

    fn apply(&mut self, now: Now, entry: Inbound, builder: &mut BatchBuilder) -> Applied {
        match entry {
            Inbound::Join {
                node,
                socket,
                member_id,
                join,
                dialect,
                address,
                credentials,
                resume_token,
            } => {
                let outbox = self.capture(socket);
                let (reply, mut answer) = oneshot::channel();
                self.gone_nodes.remove(&node);
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
                self.owner
                    .handle_at(now, SessionInput::Join { request, reply });
                let result = answer.try_recv().unwrap_or_else(|_| {
                    Err(loudsync_protocol::ServerMessage::error(
                        loudsync_protocol::ErrorCode::SessionNotFound,
                        "the session ended",
                    ))
                });
                if result.is_ok() {
                    self.sockets_of_members.insert(member_id, (node, socket));
                }
                // Frames first: the answer follows the `welcome` (or the error) it gave.
                self.collect_socket(socket, builder);
                if result.is_err() {
                    self.forget_closed(Some(socket));
                }
                builder.joined(socket, result);
                Applied {
                    sweep: false,
                    view: true,
                }
            }
            Inbound::Command {
                member_id,
                socket,
                seq,
                command,
            } => {
                let view = matches!(
                    command,
                    loudsync_core::connection::MemberCommand::Leave
                        | loudsync_core::connection::MemberCommand::Kick { .. }
                        | loudsync_core::connection::MemberCommand::StateSet { .. }
                        | loudsync_core::connection::MemberCommand::HandoffAnswer { .. }
                        | loudsync_core::connection::MemberCommand::Latency(_)
                );
                self.owner.handle_at(
                    now,
                    SessionInput::Command {
                        member_id,
                        socket,
                        seq,
                        command,
                    },
                );
                Applied { sweep: false, view }
            }
            Inbound::Detach {
                member_id,
                socket,
                reason,
                fatal,
            } => {
                self.owner.handle_at(
                    now,
                    SessionInput::Detach {
                        member_id,
                        socket,
                        reason,
                        fatal,
                    },
                );
                Applied {
                    sweep: false,
                    view: true,
                }
            }
            Inbound::Resume {
                node,
                socket,
                member_id,
                token,
                last_seq,
            } => {
                let outbox = self.capture(socket);
                let (reply, mut answer) = oneshot::channel();
                self.gone_nodes.remove(&node);
                let request = Box::new(ResumeRequest {
                    member_id: member_id.clone(),
                    token,
                    last_seq,
                    socket,
                    outbox,
                });
                self.owner
                    .handle_at(now, SessionInput::Resume { request, reply });
                let answer =
                    answer
                        .try_recv()
                        .unwrap_or(loudsync_core::connection::ResumeAnswer::Failed(
                            loudsync_protocol::ResumeFailure::SessionClosed,
                        ));
                let resumed = matches!(
                    answer,
                    loudsync_core::connection::ResumeAnswer::Resumed { .. }
                );
                if resumed {
                    self.sockets_of_members.insert(member_id, (node, socket));
                }
                self.collect_socket(socket, builder);
                if !resumed {
                    self.forget_closed(Some(socket));
                }
                builder.resumed(socket, answer);
                Applied {
                    sweep: true,
                    view: true,
                }
            }
            Inbound::Close {
                reason,
                code,
                reply,
            } => {
                let (done, _ack) = oneshot::channel();
                self.owner.handle_at(
                    now,
                    SessionInput::Close {
                        reason,
                        code,
                        done: Some(done),
                    },
                );
                if let Some(request) = reply {
                    builder.reply(request, ReplyResult::Closed);
                }
                Applied {
                    sweep: false,
                    view: true,
                }
            }
            Inbound::Admin { action, reply } => {
                let (tx, mut rx) = oneshot::channel();
                self.owner
                    .handle_at(now, SessionInput::Admin(Box::new((action, tx))));
                if let Ok(result) = rx.try_recv() {
                    builder.reply(reply, ReplyResult::Admin(result));
                }
                Applied {
                    sweep: false,
                    view: true,
                }
            }
            Inbound::Tick => {
                self.owner.timeout_at(now);
                Applied {
                    sweep: false,
                    view: true,
                }
            }
            Inbound::NodeGone { node } => {
                let gone: Vec<(String, u64)> = self
                    .sockets_of_members
                    .iter()
                    .filter(|(_, (n, _))| *n == node)
                    .map(|(m, (_, s))| (m.clone(), *s))
                    .collect();
                for (member_id, socket) in gone {
                    self.sockets_of_members.remove(&member_id);
                    self.owner.handle_at(
                        now,
                        SessionInput::Detach {
                            member_id,
                            socket,
                            reason: LeaveReason::Timeout,
                            fatal: false,
                        },
                    );
                }
                self.gone_nodes.insert(node);
                Applied {
                    sweep: true,
                    view: true,
                }
            }
        }
    }

    /// Moves one socket's captured frames into the batch.
    fn collect_socket(&mut self, socket: u64, builder: &mut BatchBuilder) {
        if let Some(outbox) = self.captures.get(&socket) {
            drain(outbox, socket, builder);
        }
    }

    /// Moves every touched capture's frames into the batch (every capture's, after a resume
    /// or a dead node, which can close a socket without touching it); forgets closed ones.
    fn collect(&mut self, builder: &mut BatchBuilder, sweep: bool) {
        let touched = self.owner.take_touched();
        if sweep {
            for (socket, outbox) in &self.captures {
                drain(outbox, *socket, builder);
            }
        } else {
            for outbox in touched {
                if let Some(socket) = self.socket_of.get(&(Arc::as_ptr(&outbox) as usize)) {
                    drain(&outbox, *socket, builder);
                }
            }
        }
        if self.replaying {
            *builder = BatchBuilder::new(self.epoch);
        }
        self.forget_closed(None);
    }

    async fn stop(mut self, stop: Stop) {
        self.cluster.remove_owner(&self.id);
        let _ = self.cluster.store.unsubscribe_session(&self.id, true).await;
        self.owner.finish();
        match stop {
            Stop::Ended => {
                tracing::info!(session = self.id, "cluster session ended");
            }
            Stop::Lost | Stop::Released => {
                self.state.metrics.cluster_leases_lost.increment(1);
                tracing::warn!(
                    session = self.id,
                    epoch = self.epoch,
                    ?stop,
                    "stopped owning the session"
                );
                let ids = self.state.ids.clone();
                self.cluster.local.close_sockets(
                    Some(&self.id),
                    None,
                    close_code::SERVICE_RESTART,
                    "service restart: resume",
                    ids.as_ref(),
                );
            }
            Stop::Abandoned => {}
        }
        self.captures.clear();
        self.socket_of.clear();
    }
}

/// What an applied entry may have changed.
#[derive(Default)]
struct Applied {
    /// Every capture must be looked at (a socket may have been closed untouched).
    sweep: bool,
    /// The admin view may have changed.
    view: bool,
}

/// Capture outboxes hold one step's frames: never a slow consumer.
fn capture_limits() -> OutboundLimits {
    OutboundLimits {
        soft_bytes: usize::MAX / 4,
        hard_bytes: usize::MAX / 2,
        grace: Duration::from_secs(3600),
    }
}

/// Moves a capture's frames into the batch. The capture is "notified" (it has no consumer) so
/// its next frame counts as a first one again and marks it touched.
fn drain(outbox: &Outbox, socket: u64, builder: &mut BatchBuilder) {
    let mut frames = std::collections::VecDeque::new();
    outbox.drain_into(&mut frames);
    outbox.notify();
    for frame in frames {
        if !matches!(frame, OutFrame::Ping(_)) {
            builder.push(socket, frame);
        }
    }
}
