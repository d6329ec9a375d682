//! The owner side of cluster pairing: what the node holding the relay's lease does. Its
//! lease (renewed, claimed when free, and the epoch every node checks), the relay hub it
//! runs on the inputs of `ls:pairing:in`, and the fenced write of that hub's output to each
//! node's `ls:pairing:out:NODE` and of the admin view to `ls:pairing:view`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use loudsync_core::pairing::{ConnId, IdentifyError, Sender, Transport};
use loudsync_protocol::close_code;
use loudsync_protocol::pairing::{ClaimedId, Event};

use super::wire::{Body, Claimed, IdResult, In, Out, ViewClient};
use super::{ClusterPairing, Owning, MAX_STREAM_LEN, OUT_TTL, READ_COUNT};
use crate::cluster::keys;
use crate::cluster::store::StoreResult;
use crate::outbox::Outbox;
use crate::pairing::hub::{PairingHub, StreamRequest};
use crate::pairing::ws::RELAY_MOVED;
use crate::state::ServerState;

impl ClusterPairing {
    /// The owner's write of the admin view, with a lease's TTL.
    async fn write_view(&self, json: String) {
        let mut conn = self.store.conn();
        let ttl = millis(self.lease);
        let _ = self
            .store
            .run("SET pairing view", async move {
                redis::cmd("SET")
                    .arg(keys::PAIRING_VIEW)
                    .arg(json)
                    .arg("PX")
                    .arg(ttl)
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await;
    }

    /// The relay's lease, every third of a lease.
    pub(super) async fn lease_loop(self: Arc<Self>, state: Arc<ServerState>) {
        loop {
            tokio::time::sleep(self.lease / 3).await;
            if self.stopping.load(Ordering::Relaxed) {
                return;
            }
            self.clone().lease_tick(&state).await;
        }
    }

    /// Renews the lease if this node owns the relay, claims it if it is free, and closes this
    /// node's connections if the relay changed epoch since they opened.
    pub(super) async fn lease_tick(self: Arc<Self>, state: &Arc<ServerState>) {
        let owned = self
            .owning
            .lock()
            .expect("owning")
            .as_ref()
            .map(|o| (o.epoch, o.value.clone()));
        if let Some((epoch, value)) = owned {
            let renewed = self.renew(value).await;
            if !renewed {
                tracing::warn!(
                    node = self.node,
                    epoch,
                    "cluster pairing: relay lease lost; this node stops running it"
                );
                self.stop_owning(epoch);
            }
        }
        let current = match self.current_owner().await {
            Ok(Some(value)) => Some(value),
            Ok(None) if !self.stopping.load(Ordering::Relaxed) && !state.is_shutting_down() => {
                self.clone().claim().await
            }
            _ => None,
        };
        self.read_view().await;
        let Some(current) = current else {
            return;
        };
        let previous = self
            .known_epoch
            .lock()
            .expect("known epoch")
            .replace(current.clone());
        if previous.is_some_and(|p| p != current) {
            self.close_all();
        }
    }

    /// Closes every pairing connection of this node (the relay they belonged to is gone).
    fn close_all(&self) {
        let conns: Vec<Arc<Outbox>> = self
            .conns
            .lock()
            .expect("conns")
            .drain()
            .map(|(_, o)| o)
            .collect();
        self.replies.lock().expect("replies").clear();
        for outbox in &conns {
            outbox.force_close(close_code::SERVICE_RESTART, RELAY_MOVED.to_string());
        }
        tracing::info!(
            node = self.node,
            connections = conns.len(),
            "cluster pairing: the relay moved; this node's pairing connections are closed with 1012"
        );
    }

    /// The relay lease's value, if any node holds it.
    async fn current_owner(&self) -> StoreResult<Option<String>> {
        let mut conn = self.store.conn();
        let value: Option<String> = self
            .store
            .run("GET pairing owner", async move {
                redis::cmd("GET")
                    .arg(keys::PAIRING_OWNER)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(value)
    }

    async fn renew(&self, owner: String) -> bool {
        let script = self.scripts.renew.clone();
        let lease = millis(self.lease);
        let mut conn = self.store.conn();
        let renewed = self
            .store
            .run("renew pairing", async move {
                script
                    .key(keys::PAIRING_OWNER)
                    .arg(owner)
                    .arg(lease)
                    .invoke_async::<i64>(&mut conn)
                    .await
            })
            .await;
        // A failed command is not a lost lease yet; it lapses by itself after a lease, and
        // the fenced writes stop at once then.
        !matches!(renewed, Ok(0))
    }

    /// Claims the free relay and starts running it here: the lease's value, or `None`.
    async fn claim(self: Arc<Self>) -> Option<String> {
        let script = self.scripts.claim.clone();
        let node = self.node.clone();
        let nonce = nonce();
        let lease = millis(self.lease);
        let mut conn = self.store.conn();
        let arg_nonce = nonce.clone();
        let claimed: Option<(u64, String)> = self
            .store
            .run("claim pairing", async move {
                script
                    .key(keys::PAIRING_OWNER)
                    .key(keys::PAIRING_EPOCH)
                    .key(keys::PAIRING_IN)
                    .arg(node)
                    .arg(lease)
                    .arg(arg_nonce)
                    .invoke_async(&mut conn)
                    .await
            })
            .await
            .ok()
            .flatten();
        let (epoch, cursor) = claimed?;
        tracing::info!(
            node = self.node,
            epoch,
            "cluster pairing: this node runs the cluster's pairing relay"
        );
        let value = format!("{}|{epoch}|{nonce}", self.node);
        let task = tokio::spawn(self.clone().own(epoch, value.clone(), cursor));
        let old = self.owning.lock().expect("owning").replace(Owning {
            epoch,
            value: value.clone(),
            task,
        });
        if let Some(old) = old {
            old.task.abort();
        }
        Some(value)
    }

    fn stop_owning(&self, epoch: u64) {
        let mut owning = self.owning.lock().expect("owning");
        if owning.as_ref().is_some_and(|o| o.epoch == epoch) {
            if let Some(o) = owning.take() {
                o.task.abort();
            }
        }
    }

    /// Runs the cluster's relay at `epoch` (lease value `fence`), reading inputs after
    /// `cursor`.
    async fn own(self: Arc<Self>, epoch: u64, fence: String, mut cursor: String) {
        let relay = PairingHub::new(self.relay_config.clone(), self.ids.clone());
        let mut view = String::new();
        let mut view_due = Instant::now();
        loop {
            let timer = relay.next_timer();
            let wait = match timer {
                Some(at) => at.saturating_duration_since(Instant::now()).min(self.poll),
                None => self.poll,
            };
            let _ = tokio::time::timeout(wait, self.in_wake.notified()).await;
            let mut out: BTreeMap<String, Vec<Out>> = BTreeMap::new();
            loop {
                let entries = match self
                    .store
                    .read_stream(keys::PAIRING_IN.to_string(), "e", &cursor, READ_COUNT)
                    .await
                {
                    Ok(entries) => entries,
                    Err(e) => {
                        tracing::debug!(error = %e, "cluster pairing: reading the inbound stream failed");
                        break;
                    }
                };
                let full = entries.len() == READ_COUNT;
                for (id, json) in entries {
                    cursor = id;
                    match serde_json::from_str::<In>(&json) {
                        Ok(input) => feed(&relay, input, &mut out),
                        Err(e) => tracing::warn!(error = %e, "cluster pairing: undecodable input"),
                    }
                }
                if !full {
                    break;
                }
            }
            relay.run_due_timers();
            collect(&relay, &mut out);
            let now_view = serde_json::to_string(
                &relay
                    .clients()
                    .iter()
                    .map(ViewClient::of)
                    .collect::<Vec<_>>(),
            )
            .expect("a view serializes");
            if now_view != view || Instant::now() >= view_due {
                self.write_view(now_view.clone()).await;
                view = now_view;
                view_due = Instant::now() + self.lease / 3;
            }
            if out.is_empty() {
                continue;
            }
            if !self.ship(&fence, out).await {
                tracing::warn!(
                    node = self.node,
                    epoch,
                    "cluster pairing: relay lease lost while writing; this node stops running it"
                );
                self.stop_owning(epoch);
                return;
            }
        }
    }

    /// Writes one batch per node, fenced: `false` if the lease is no longer `fence`.
    async fn ship(&self, fence: &str, out: BTreeMap<String, Vec<Out>>) -> bool {
        let script = self.scripts.ship.clone();
        let mut invocation = script.prepare_invoke();
        invocation.key(keys::PAIRING_OWNER);
        for node in out.keys() {
            invocation.key(keys::pairing_out(node));
        }
        invocation
            .arg(fence)
            .arg(MAX_STREAM_LEN)
            .arg(millis(OUT_TTL));
        for batch in out.values() {
            invocation.arg(serde_json::to_string(batch).expect("a pairing batch serializes"));
        }
        let mut conn = self.store.conn();
        match self
            .store
            .run("ship pairing", async move {
                invocation.invoke_async::<i64>(&mut conn).await
            })
            .await
        {
            Ok(written) => written == 1,
            Err(e) => {
                // Not written; the relay's output is lost (pairing promises no redelivery).
                tracing::warn!(error = %e, "cluster pairing: writing the relay's output failed");
                true
            }
        }
    }
}

/// Feeds one input to the relay hub and collects what it sent, then the answer, if any.
fn feed(relay: &PairingHub, input: In, out: &mut BTreeMap<String, Vec<Out>>) {
    match input {
        In::Open { node, conn, sse } => {
            let transport = if sse {
                Transport::Sse
            } else {
                Transport::WebSocket
            };
            relay.open_remote(ConnId(conn), node, transport);
        }
        In::Identify {
            node,
            conn,
            req,
            app,
            role,
            id,
            token,
        } => {
            let conn = ConnId(conn);
            let stream = relay.stream_of(conn).unwrap_or(0);
            let claimed = match &id {
                Claimed::Assign => ClaimedId::Assign,
                Claimed::Given(id) => ClaimedId::Given(id),
                Claimed::Invalid => ClaimedId::Invalid,
            };
            let result =
                match relay.identify(conn, &app, role.as_deref(), claimed, token.as_deref()) {
                    Ok(welcome) => IdResult::Ok(welcome.client_id),
                    Err(IdentifyError::Aborted(reason)) => IdResult::Aborted(reason),
                    Err(IdentifyError::NotAwaitingIdentify) => IdResult::NotAwaiting,
                };
            collect(relay, out);
            out.entry(node).or_default().push(Out::Identified {
                req,
                stream,
                result,
            });
        }
        In::Event { conn, to, data } => {
            if let Ok(event) = Event::parse_data(&data) {
                relay.event(&Sender::Conn(ConnId(conn)), &to, event);
            }
        }
        In::Alive { conn } => {
            relay.alive(ConnId(conn));
        }
        In::Request {
            app,
            role,
            client,
            token,
            to,
            body,
        } => {
            if let Ok(credentials) =
                relay.check_credentials(&app, Some(&role), &client, Some(&token))
            {
                match body {
                    Body::Event(data) => {
                        if let Ok(event) = Event::parse_data(&data) {
                            relay.event(&Sender::Request(credentials), &to, event);
                        }
                    }
                    Body::Alive(sid) => {
                        relay.stream_request(&credentials, StreamRequest::Alive, &sid);
                    }
                    Body::Close(sid) => {
                        relay.stream_request(&credentials, StreamRequest::Close, &sid);
                    }
                }
            }
        }
        In::Assign { node, req } => {
            let id = relay.assign_client_id();
            collect(relay, out);
            out.entry(node).or_default().push(Out::Assigned { req, id });
        }
        In::Gone { conn } => relay.gone(ConnId(conn)),
    }
    collect(relay, out);
}

/// Moves what the relay hub sent into the per-node batches, in order.
fn collect(relay: &PairingHub, out: &mut BTreeMap<String, Vec<Out>>) {
    for (node, conn, s) in relay.take_shipped() {
        out.entry(node)
            .or_default()
            .push(Out::Frame { conn: conn.0, s });
    }
}

/// 16 random hex digits.
fn nonce() -> String {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A duration in whole milliseconds, at least 1.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}
