//! The admin event stream, `GET /v1/events`: what happens to sessions and members, as
//! server-sent events, for scripts (`curl -N`) and the dashboard.
//!
//! The [`EventHub`] numbers every event (one sequence per server, rising by 1), keeps the
//! last `events-history` of them in the core's [`EventRing`] for clients that reconnect with
//! `Last-Event-ID`, and hands each to the live subscribers through a `tokio` broadcast
//! channel of `events-buffer` slots: a subscriber that falls further behind than that is cut
//! off with `event: overflow`, the only memory a slow one can hold being those slots, shared
//! by everyone. Nobody else waits for it.
//!
//! While nobody listens (and `events-linger` after the last subscriber left) nothing is
//! recorded: sessions check one flag ([`EventHub::observing`]) and build no event. The ring
//! then forgets its history, so a client that comes back later is told to `reset` rather
//! than miss what happened unseen.
//!
//! Each subscriber's response body ([`body`]) writes `hello`, then a `reset` or the replay,
//! then live events, a `stats` event every `events-stats-interval` and a keep-alive comment
//! every `events-keepalive`, until the client goes, it overflows, or the server shuts down
//! (`event: shutdown`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use loudsync_core::events::{EventRing, Resolution};
use loudsync_core::session::SessionEvent;
use loudsync_protocol::app::Dialect;
use loudsync_protocol::{HandoffFailure, HostChange, LeaveReason, ResumeFailure};
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};
use tokio::time::{interval_at, Instant, MissedTickBehavior};

use crate::config::ServerConfig;
use crate::state::ServerState;

/// One numbered event as written: its number and its SSE block (`id`, `event`, `data`).
#[derive(Debug)]
pub struct Published {
    /// Its number in the stream.
    pub n: u64,
    /// `id: <stream>-<n>\nevent: <kind>\ndata: <json>\n\n`.
    pub block: Bytes,
}

/// The server's admin event stream: numbering, history, live subscribers.
pub struct EventHub {
    ring: Mutex<EventRing<Arc<Published>>>,
    tx: broadcast::Sender<Arc<Published>>,
    subscribers: AtomicUsize,
    observing: AtomicBool,
    /// Rises with every subscription, so a lingering stop knows nobody came meanwhile.
    generation: AtomicU64,
    linger: Duration,
    buffer: usize,
    closed: watch::Sender<bool>,
}

/// The SSE block of one event.
fn block(id: &str, kind: &str, data: &Value) -> Bytes {
    let data = serde_json::to_string(data).expect("JSON values serialise");
    Bytes::from(format!("id: {id}\nevent: {kind}\ndata: {data}\n\n"))
}

/// A fresh stream id: 10 characters of `[a-z0-9]` (never a `-`).
fn stream_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..10)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect()
}

impl EventHub {
    /// A hub with these settings (`events-history`, `events-buffer`, `events-linger`).
    pub fn new(config: &ServerConfig) -> Self {
        let (tx, _) = broadcast::channel(config.events_buffer.max(1));
        EventHub {
            ring: Mutex::new(EventRing::new(stream_id(), config.events_history)),
            tx,
            subscribers: AtomicUsize::new(0),
            observing: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            linger: config.events_linger,
            buffer: config.events_buffer.max(1),
            closed: watch::channel(false).0,
        }
    }

    /// Whether events are being recorded (a subscriber is there, or left less than
    /// `events-linger` ago). One atomic load: what a session checks before building any.
    pub fn observing(&self) -> bool {
        self.observing.load(Ordering::Relaxed)
    }

    /// How many clients are subscribed.
    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    /// This process's stream id.
    pub fn stream(&self) -> String {
        self.ring.lock().expect("events").stream().to_string()
    }

    /// Numbers, keeps and sends an event of `kind`, whose `data` (an object; `at`, the
    /// Unix time in ms, is added) is built only if events are being recorded.
    pub fn publish(&self, kind: &str, data: impl FnOnce() -> Value) {
        if !self.observing() {
            return;
        }
        let mut data = data();
        data["at"] = crate::clock::now().unix_ms.into();
        let mut ring = self.ring.lock().expect("events");
        if !self.observing() {
            return;
        }
        let n = ring.last() + 1;
        let published = Arc::new(Published {
            n,
            block: block(&ring.id_of(n), kind, &data),
        });
        ring.push(published.clone());
        // No receiver (all gone this instant) is no error: the ring has it.
        let _ = self.tx.send(published);
    }

    /// A session's own events, as the stream shows them.
    pub fn session_event(&self, session: &str, event: SessionEvent) {
        let (kind, data) = session_event_data(session, event);
        self.publish(kind, || data);
    }

    /// A resume's outcome: `resumed`, or `resume_failed` with its reason (`session` and
    /// `memberId` are `null` when the token led nowhere).
    pub fn resume(&self, session: Option<&str>, member: Option<&str>, failed: Option<&str>) {
        self.publish("resume", || {
            json!({
                "session": session,
                "memberId": member,
                "outcome": if failed.is_some() { "resume_failed" } else { "resumed" },
                "reason": failed,
            })
        });
    }

    /// A resume that failed before reaching a session.
    pub fn resume_failed(&self, why: ResumeFailure) {
        self.resume(None, None, Some(why.as_str()));
    }

    /// Subscribes a client whose `Last-Event-ID` is `last_event_id`: what it is sent before
    /// live events, and its place among the live subscribers.
    pub fn subscribe(self: &Arc<Self>, last_event_id: Option<&str>) -> Subscription {
        let ring = self.ring.lock().expect("events");
        self.observing.store(true, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed);
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        let rx = self.tx.subscribe();
        let resolution = ring.resolve(last_event_id);
        let last = ring.last();
        let mut pending = VecDeque::new();
        let hello = |at: u64| {
            block(
                &ring.id_of(at),
                "hello",
                &json!({
                    "stream": ring.stream(),
                    "lastId": ring.id_of(last),
                    "kept": ring.len(),
                }),
            )
        };
        let at = match resolution {
            Resolution::Live => {
                pending.push_back(hello(last));
                last
            }
            Resolution::Reset(why) => {
                pending.push_back(hello(last));
                pending.push_back(block(
                    &ring.id_of(last),
                    "reset",
                    &json!({"reason": why.as_str(), "reload": "/v1/sessions"}),
                ));
                last
            }
            Resolution::Replay(events) => {
                // Its own position first: it has seen everything up to the first replayed
                // event's predecessor.
                let from = events.first().map_or(last, |e| e.n - 1);
                pending.push_back(hello(from));
                pending.extend(events.iter().map(|e| e.block.clone()));
                last
            }
        };
        drop(ring);
        Subscription {
            hub: self.clone(),
            rx,
            pending,
            at,
        }
    }

    /// The last subscriber left: after `events-linger` with nobody back, stop recording.
    fn unsubscribed(self: &Arc<Self>) {
        if self.subscribers.fetch_sub(1, Ordering::Relaxed) != 1 {
            return;
        }
        let generation = self.generation.load(Ordering::Relaxed);
        if self.linger.is_zero() {
            return self.stop_if_idle(generation);
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let hub = self.clone();
            let linger = self.linger;
            runtime.spawn(async move {
                tokio::time::sleep(linger).await;
                hub.stop_if_idle(generation);
            });
        }
    }

    fn stop_if_idle(&self, generation: u64) {
        let mut ring = self.ring.lock().expect("events");
        if self.subscribers() == 0 && self.generation.load(Ordering::Relaxed) == generation {
            self.observing.store(false, Ordering::Relaxed);
            ring.forget();
        }
    }

    /// Ends every stream with `event: shutdown` (the server is shutting down).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }
}

/// One subscriber's place: what it is owed before live events, and its receiver.
pub struct Subscription {
    hub: Arc<EventHub>,
    rx: broadcast::Receiver<Arc<Published>>,
    pending: VecDeque<Bytes>,
    /// The number of the last event it was given.
    at: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribed();
    }
}

fn dialect(d: Dialect) -> &'static str {
    match d {
        Dialect::LoudSync => "loudsync",
        Dialect::App => "app",
    }
}

fn leave_reason(r: LeaveReason) -> &'static str {
    match r {
        LeaveReason::Left => "left",
        LeaveReason::Kicked => "kicked",
        LeaveReason::Timeout => "timeout",
        LeaveReason::Error => "error",
    }
}

fn host_change(r: HostChange) -> &'static str {
    match r {
        HostChange::Handoff => "handoff",
        HostChange::HostLost => "host_lost",
    }
}

fn member(m: &loudsync_protocol::MemberInfo) -> Value {
    let mut v = serde_json::to_value(m).expect("a member serialises");
    v["deviceId"] = m.device_id.clone().into();
    v
}

/// The kind and data of a session's event.
pub fn session_event_data(session: &str, event: SessionEvent) -> (&'static str, Value) {
    match event {
        SessionEvent::MemberJoined {
            member: m,
            dialect: d,
        } => {
            let mut m = member(&m);
            m["dialect"] = dialect(d).into();
            ("member_joined", json!({"session": session, "member": m}))
        }
        SessionEvent::MemberLeft { member_id, reason } => (
            "member_left",
            json!({"session": session, "memberId": member_id, "reason": leave_reason(reason)}),
        ),
        SessionEvent::MemberUpdated { member: m } => (
            "member_updated",
            json!({"session": session, "member": member(&m)}),
        ),
        SessionEvent::HostChanged {
            host_id,
            previous_host_id,
            term,
            reason,
        } => (
            "host_changed",
            json!({
                "session": session,
                "hostId": host_id,
                "previousHostId": previous_host_id,
                "term": term,
                "reason": host_change(reason),
            }),
        ),
        SessionEvent::HandoffStarted {
            handoff_id,
            host_id,
            target_id,
        } => (
            "handoff",
            json!({
                "session": session,
                "outcome": "started",
                "handoffId": handoff_id,
                "hostId": host_id,
                "targetId": target_id,
            }),
        ),
        SessionEvent::HandoffFailed {
            handoff_id,
            target_id,
            reason,
        } => (
            "handoff",
            json!({
                "session": session,
                "outcome": "failed",
                "handoffId": handoff_id,
                "targetId": target_id,
                "reason": handoff_failure(reason),
            }),
        ),
        SessionEvent::Closed { reason } => (
            "session_closed",
            json!({"session": session, "reason": reason}),
        ),
    }
}

fn handoff_failure(r: HandoffFailure) -> &'static str {
    r.as_str()
}

/// The `stats` event's data: this server's cumulative counters and current levels.
pub fn stats(state: &ServerState) -> Value {
    let m = &state.metrics;
    json!({
        "connections": m.connections.get(),
        "sessions": m.sessions.get(),
        "members": m.members.get(),
        "joins": m.joins.get(),
        "framesIn": m.frames_received.get(),
        "framesOut": m.frames_sent.get(),
        "slowConsumerDrops": m.slow_consumer_disconnects.get(),
        "heartbeatTimeouts": m.heartbeat_timeouts.get(),
        "resumes": m.resumes.0.load(Ordering::Relaxed),
        "resumeFailures": m.resumes.1.load(Ordering::Relaxed),
        "subscribers": state.events.subscribers(),
        "at": crate::clock::now().unix_ms,
    })
}

/// What one stream writes next.
struct Feed {
    state: Arc<ServerState>,
    sub: Subscription,
    keepalive: tokio::time::Interval,
    stats: tokio::time::Interval,
    closed: watch::Receiver<bool>,
    ended: bool,
}

impl Feed {
    fn id(&self) -> String {
        format!("{}-{}", self.stream(), self.sub.at)
    }

    fn stream(&self) -> String {
        self.sub.hub.stream()
    }

    async fn next(&mut self) -> Option<Bytes> {
        if let Some(pending) = self.sub.pending.pop_front() {
            return Some(pending);
        }
        if self.ended {
            return None;
        }
        enum Wake {
            Closed,
            Received(Result<Arc<Published>, broadcast::error::RecvError>),
            Stats,
            Keepalive,
        }
        let closed = &mut self.closed;
        let wake = tokio::select! {
            biased;
            _ = async { let _ = closed.wait_for(|closed| *closed).await; } => Wake::Closed,
            received = self.sub.rx.recv() => Wake::Received(received),
            _ = self.stats.tick() => Wake::Stats,
            _ = self.keepalive.tick() => Wake::Keepalive,
        };
        match wake {
            Wake::Closed => {
                self.ended = true;
                Some(block(&self.id(), "shutdown", &json!({})))
            }
            Wake::Received(Ok(event)) => {
                self.sub.at = event.n;
                Some(event.block.clone())
            }
            Wake::Received(Err(broadcast::error::RecvError::Lagged(missed))) => {
                self.ended = true;
                self.state.metrics.slow_consumer_disconnects.increment(1);
                let data = json!({
                    "reason": "too_slow",
                    "buffer": self.sub.hub.buffer,
                    "missed": missed,
                    "reload": "/v1/sessions",
                });
                Some(block(&self.id(), "overflow", &data))
            }
            Wake::Received(Err(broadcast::error::RecvError::Closed)) => None,
            Wake::Stats => Some(block(&self.id(), "stats", &stats(&self.state))),
            Wake::Keepalive => Some(Bytes::from_static(b": keep-alive\n\n")),
        }
    }
}

/// The response body of one `GET /v1/events`.
pub fn body(state: Arc<ServerState>, sub: Subscription) -> Body {
    let every = |d: Duration| {
        let mut i = interval_at(Instant::now() + d, d);
        i.set_missed_tick_behavior(MissedTickBehavior::Delay);
        i
    };
    let feed = Feed {
        keepalive: every(state.config.events_keepalive),
        stats: every(state.config.events_stats_interval),
        closed: state.events.closed.subscribe(),
        state,
        sub,
        ended: false,
    };
    Body::from_stream(futures_util::stream::unfold(feed, |mut feed| async move {
        let chunk = feed.next().await?;
        Some((Ok::<_, Infallible>(chunk), feed))
    }))
}
