//! The node's own background work in cluster mode: its liveness lease, the cluster epoch,
//! the takeover of sessions whose owner is gone, the dispatch of pub/sub wake-ups, and the
//! loop that reads the outbound streams of the sessions it holds sockets of.
//!
//! Every third of a lease the node renews `ls:node:ID` and checks the cluster epoch: if Redis
//! came back empty (the epoch key changed), every session this node knew is gone, so its
//! members are told `session_closed` ("cluster state lost") and its owners stop without a
//! write. While renewals fail the node is not part of the cluster: `/healthz` answers 503,
//! local sockets stay open and liveness goes on; owners stop by themselves when their leases
//! run out locally. A second loop scans the cluster's sessions for one without an owner and
//! claims it (a takeover): every third of a lease, at once when a node that handed its
//! sessions over announces it, and at the moment another owner's key can have expired, so a
//! dead owner's session is claimed within a lease (plus a scan) of its last renewal.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use loudsync_core::cluster::TakeoverTimer;
use loudsync_core::Now;
use loudsync_protocol::{close_code, ServerMessage};

use super::owner::OwnerSignal;
use super::store::Wake;
use super::Cluster;
use crate::clock;
use crate::state::ServerState;

/// The reason members are given when Redis came back without the cluster's state.
pub(crate) const CLUSTER_STATE_LOST: &str = "cluster state lost";

/// Starts the node's tasks.
pub(crate) fn start(cluster: Arc<Cluster>, state: Arc<ServerState>) {
    let wakes = cluster.wakes.lock().expect("wakes").take();
    let (scan_tx, scan_rx) = tokio::sync::mpsc::unbounded_channel();
    if let Some(wakes) = wakes {
        tokio::spawn(dispatch(cluster.clone(), wakes, scan_tx));
    }
    tokio::spawn(read_loop(cluster.clone(), state.clone()));
    tokio::spawn(lease_loop(cluster.clone(), state.clone()));
    tokio::spawn(takeover_loop(cluster, state, scan_rx));
}

/// Hands each pub/sub wake-up to whom it is for.
async fn dispatch(
    cluster: Arc<Cluster>,
    mut wakes: tokio::sync::mpsc::UnboundedReceiver<Wake>,
    scan: tokio::sync::mpsc::UnboundedSender<()>,
) {
    while let Some(wake) = wakes.recv().await {
        match wake {
            Wake::Inbound(session) => cluster.signal_owner(&session, OwnerSignal::Wake),
            Wake::Outbound(session) => cluster.local.wake(&session),
            Wake::Released => {
                let _ = scan.send(());
            }
            Wake::Disconnected => {
                // Redis went away: what was published meanwhile is lost, so read everything
                // again once it is back (the poll does; this makes it sooner).
                cluster.local.wake_all();
                if let Some(pairing) = cluster.pairing.get() {
                    pairing.wake_all();
                }
            }
            Wake::Pairing(channel) => {
                if let Some(pairing) = cluster.pairing.get() {
                    pairing.wake(&channel);
                }
            }
        }
    }
}

/// Reads the outbound streams of this node's sessions: at once when woken, every poll
/// interval for all of them.
async fn read_loop(cluster: Arc<Cluster>, state: Arc<ServerState>) {
    let mut next_full = Instant::now() + cluster.poll;
    loop {
        cluster.local.wait(cluster.poll).await;
        if Instant::now() >= next_full {
            cluster.local.wake_all();
            next_full = Instant::now() + cluster.poll;
        }
        let delivered = cluster
            .local
            .read_dirty(&cluster.store, state.ids.as_ref())
            .await;
        let ttl = state.config.resume_window.saturating_mul(10);
        for (token, session, member) in delivered.tokens {
            let value = format!("L|{session}|{member}");
            if let Err(e) = cluster.store.set_token(&token, &value, ttl).await {
                tracing::warn!(error = %e, "could not record a connection token; a resume on another node will fail");
            }
        }
        for session in delivered.ended {
            cluster.local.forget_session(&session);
            state.registry.forget_cluster(&session);
        }
    }
}

/// The node's lease and the epoch check, every third of a lease.
async fn lease_loop(cluster: Arc<Cluster>, state: Arc<ServerState>) {
    let every = cluster.lease / 3;
    let mut last_renewal = Instant::now();
    loop {
        let slept = Instant::now();
        tokio::time::sleep(every).await;
        if state.is_shutting_down() {
            return;
        }
        if slept.elapsed() >= cluster.lease {
            // This node was paused for a whole lease: the owners have detached its members
            // as gone, so its sockets lead nowhere.
            strand_sockets(&cluster, &state, "this node was paused: resume");
        }
        match cluster.renew_node().await {
            Ok(()) => last_renewal = Instant::now(),
            Err(e) => tracing::warn!(error = %e, "cluster: node lease renewal failed"),
        }
        let alive = last_renewal.elapsed() < cluster.lease;
        if cluster.healthy.swap(alive, Ordering::Relaxed) != alive {
            if alive {
                tracing::info!(node = cluster.node_id, "cluster: back in the cluster");
                // Out for a lease or more: owners may have detached this node's members.
                strand_sockets(&cluster, &state, "this node was out of the cluster: resume");
            } else {
                tracing::warn!(
                    node = cluster.node_id,
                    "cluster: out of the cluster (Redis unreachable); /healthz answers 503"
                );
            }
        }
        if alive {
            check_epoch(&cluster, &state).await;
        }
    }
}

/// How long after another node's owner key expires this node looks again: Redis expires a
/// key at its deadline (a read after it finds it gone), so a little slack for the clocks
/// of two processes is enough.
const TAKEOVER_MARGIN: Duration = Duration::from_millis(25);

/// The takeover scan: every third of a lease, at once when another node released its
/// sessions, and at the earliest moment another node's owner key can have expired
/// ([`TakeoverTimer`]), so a takeover completes within a lease (and a scan) of the dead
/// owner's last renewal, not up to a third of a lease later.
async fn takeover_loop(
    cluster: Arc<Cluster>,
    state: Arc<ServerState>,
    mut released: tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    let mut timer = TakeoverTimer::new(clock::now(), cluster.lease / 3, TAKEOVER_MARGIN);
    let mut released_open = true;
    loop {
        let deadline = tokio::time::Instant::from_std(timer.poll_timeout());
        let woken = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => false,
            got = released.recv(), if released_open => {
                released_open = got.is_some();
                released_open
            }
        };
        if state.is_shutting_down() {
            return;
        }
        let now = clock::now();
        if !woken && !timer.is_due(now) {
            continue;
        }
        timer.handle_scan_started(now);
        if cluster.is_healthy() {
            scan_for_orphans(&cluster, &state, &mut timer, now).await;
        }
    }
}

/// Closes every cluster socket of this node with 1012: their members resume (or rejoin).
fn strand_sockets(cluster: &Cluster, state: &ServerState, reason: &str) {
    let closed = cluster.local.close_sockets(
        None,
        None,
        close_code::SERVICE_RESTART,
        reason,
        state.ids.as_ref(),
    );
    tracing::warn!(
        node = cluster.node_id,
        sockets = closed,
        "cluster: this node's lease lapsed; its sockets are closed with 1012"
    );
}

/// Compares the cluster epoch with the one this node joined under; a changed one means
/// Redis lost everything: every session this node knew is gone.
async fn check_epoch(cluster: &Arc<Cluster>, state: &Arc<ServerState>) {
    let Ok(current) = cluster.store.cluster_epoch(&super::random_epoch()).await else {
        return;
    };
    let known = cluster.epoch.lock().expect("epoch").clone();
    if current == known {
        return;
    }
    tracing::warn!(
        node = cluster.node_id,
        "cluster: Redis came back without the cluster's state (epoch changed); every session is closed"
    );
    *cluster.epoch.lock().expect("epoch") = current;
    let owners: Vec<String> = cluster
        .owners
        .lock()
        .expect("owners")
        .keys()
        .cloned()
        .collect();
    for session in owners {
        cluster.signal_owner(&session, OwnerSignal::Abandon);
    }
    let closed = ServerMessage::SessionClosed {
        reason: CLUSTER_STATE_LOST.to_string(),
    };
    cluster.local.close_sockets(
        None,
        Some(&closed),
        close_code::NORMAL,
        CLUSTER_STATE_LOST,
        state.ids.as_ref(),
    );
    cluster.local.clear();
    state.registry.forget_all_cluster();
    let _ = cluster.renew_node().await;
}

/// Claims every session of the cluster that has no owner (its owner died or released it),
/// and tells `timer` when the others' owner keys run out.
async fn scan_for_orphans(
    cluster: &Arc<Cluster>,
    state: &Arc<ServerState>,
    timer: &mut TakeoverTimer,
    now: Now,
) {
    let Ok(mut sessions) = cluster.store.session_ids().await else {
        return;
    };
    sessions.retain(|session| !cluster.owns(session));
    let Ok(ttls) = cluster.store.owner_ttls(&sessions).await else {
        return;
    };
    for (session, ttl) in sessions.iter().zip(ttls) {
        match ttl {
            None => {
                if let Err(e) = cluster.claim_and_own(state, session).await {
                    tracing::debug!(session, error = %e, "takeover claim failed");
                }
            }
            Some(ttl) => timer.observe_owner(now, ttl),
        }
    }
}
