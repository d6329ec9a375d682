//! Prometheus metrics: the recorder, installed once per process, and the handles the hot path
//! uses (looked up once, not per message).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Gauge, Histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus handle (the recorder is installed on first use).
pub fn prometheus() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(TIME_TO_STREAM.to_string()),
                TIME_TO_STREAM_BUCKETS,
            )
            .expect("buckets are given")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (an embedding program's); then our
        // /metrics is empty rather than the process failing.
        if metrics::set_global_recorder(recorder).is_ok() {
            describe();
        }
        handle
    })
}

/// The media relay's handshake times, a Prometheus histogram (issue 13 R9).
const TIME_TO_STREAM: &str = "loudsync_media_time_to_stream_seconds";

/// Its buckets, in seconds: a loopback handshake takes a millisecond or less; a START_CONFIRM
/// on the initiator's retry schedule (0.5 s, 1 s, 2 s) lands in the upper ones.
const TIME_TO_STREAM_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The `# HELP` texts.
fn describe() {
    describe_counter!(
        "loudsync_media_handshakes_total",
        "Media relay STARTs answered with a new reservation (START_ACK; duplicates not counted)."
    );
    describe_counter!(
        "loudsync_media_handshake_failures_total",
        "Media relay ERRORs sent, by code: bad_version, malformed, unknown_stream, \
         stream_mismatch, refused, bad_token."
    );
    describe_gauge!(
        "loudsync_media_streams",
        "Media relay tuples streaming (publishers and subscribers)."
    );
    describe_histogram!(
        TIME_TO_STREAM,
        metrics::Unit::Seconds,
        "Media relay: a tuple's first START to its accepted START_CONFIRM."
    );
    describe_counter!(
        "loudsync_media_datagrams_sent_total",
        "Datagrams the media relay sent: control replies and DATA copies."
    );
    describe_counter!(
        "loudsync_media_datagrams_relayed_total",
        "DATA datagrams the media relay forwarded, once per subscriber copy."
    );
    describe_counter!(
        "loudsync_media_frames_lost_total",
        "Frames the publishers' sequence numbers skipped before reaching the media relay."
    );
    describe_gauge!("loudsync_connections", "Open WebSocket connections.");
    describe_gauge!(
        "loudsync_tcp_connections",
        "Open TCP connections (HTTP, TLS and WebSocket), each holding a connection permit."
    );
    describe_counter!(
        "loudsync_connections_refused_total",
        "Connections or upgrades refused at once, by reason: max_connections, per_address, \
         out_of_files (accepted and closed while the process had no free file), \
         unjoined_per_address (WebSocket upgrade answered 429)."
    );
    describe_counter!(
        "loudsync_request_timeouts_total",
        "HTTP connections closed for sending no complete request within request-timeout \
         (slow or missing headers, idle keep-alive), and requests answered 408."
    );
    describe_counter!(
        "loudsync_tls_handshake_failures_total",
        "TLS handshakes that failed or did not finish within request-timeout."
    );
    describe_counter!(
        "loudsync_join_attempts_limited_total",
        "Joins refused with too_many_attempts for going over the per-address join rate."
    );
    describe_gauge!(
        "loudsync_pairing_connections",
        "Open pairing connections (identified or not), by transport: websocket, sse."
    );
    describe_counter!(
        "loudsync_pairing_events_total",
        "Pairing events by what became of them: delivered, no_recipient, app_id_mismatch, \
         same_role, rate_limited (sendevent over the per-id limit), not_identified."
    );
    describe_counter!(
        "loudsync_pairing_aborts_total",
        "Pairing connections refused or ended with an abort reason (invalidRole, \
         invalidClientId, invalidAccessToken, notAuthorized, clientIdInUse, releasedByOther, \
         clientNotAlive)."
    );
    describe_counter!(
        "loudsync_cluster_batches_total",
        "Cluster mode: outbound batches this node wrote as a session's owner (one per step)."
    );
    describe_counter!(
        "loudsync_cluster_takeovers_total",
        "Cluster mode: sessions this node took over after their owner's lease lapsed."
    );
    describe_counter!(
        "loudsync_cluster_leases_lost_total",
        "Cluster mode: sessions this node stopped owning (lease lost, or released at shutdown)."
    );
    describe_counter!(
        "loudsync_cluster_unavailable_total",
        "Cluster mode: client frames answered `cluster_unavailable` (Redis unreachable)."
    );
    describe_counter!(
        "loudsync_drain_aborted_total",
        "Connections still open at the end of the shutdown drain, dropped."
    );
}

/// Handles for the metrics the server updates.
#[derive(Clone)]
pub struct Metrics {
    /// Open WebSocket connections.
    pub connections: Level,
    /// Live sessions.
    pub sessions: Level,
    /// Members in sessions.
    pub members: Level,
    /// Text/binary frames received from clients.
    pub frames_received: Tally,
    /// Text frames queued to clients (a broadcast counts once per recipient).
    pub frames_sent: Tally,
    /// Successful joins.
    pub joins: Tally,
    /// Members disconnected because their outbound queue overflowed.
    pub slow_consumer_disconnects: Tally,
    /// Members removed for heartbeat silence.
    pub heartbeat_timeouts: Tally,
    /// Cluster mode: outbound batches written as an owner.
    pub cluster_batches: Counter,
    /// Cluster mode: sessions taken over.
    pub cluster_takeovers: Counter,
    /// Cluster mode: sessions no longer owned (lease lost or released).
    pub cluster_leases_lost: Counter,
    /// Cluster mode: frames answered `cluster_unavailable`.
    pub cluster_unavailable: Counter,
    /// Open TCP connections (HTTP, TLS and WebSocket; each holds a connection permit).
    pub tcp_connections: Gauge,
    /// Connections closed at once because `max-connections` was reached.
    pub refused_max_connections: Counter,
    /// Connections closed at once because their address was at `max-connections-per-address`.
    pub refused_per_address: Counter,
    /// Connections accepted and closed at once because the process ran out of open files.
    pub refused_out_of_files: Counter,
    /// HTTP connections closed for sending no complete request within `request-timeout`
    /// (slow or missing headers, or idle keep-alive), and requests answered `408`.
    pub request_timeouts: Counter,
    /// TLS handshakes that failed or did not finish within `request-timeout`.
    pub tls_handshake_failures: Counter,
    /// WebSocket upgrades refused because the address was at `max-unjoined-per-address`.
    pub refused_unjoined: Counter,
    /// Joins refused for going over the per-address join rate.
    pub join_attempts_limited: Counter,
    /// Upgraded sockets still open at the end of the drain, dropped.
    pub drain_aborted: Counter,
    /// Resumes answered, and how many of them failed (the admin stream's `stats`).
    pub resumes: Arc<(AtomicU64, AtomicU64)>,
}

/// A Prometheus counter that also keeps this server's own total, for the admin event
/// stream's `stats` (the recorder is process-wide and write-only).
#[derive(Clone)]
pub struct Tally {
    counter: Counter,
    total: Arc<AtomicU64>,
}

impl Tally {
    fn new(counter: Counter) -> Self {
        Tally {
            counter,
            total: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Adds `n`.
    pub fn increment(&self, n: u64) {
        self.counter.increment(n);
        self.total.fetch_add(n, Ordering::Relaxed);
    }

    /// This server's total so far.
    pub fn get(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

/// A Prometheus gauge of whole numbers that also keeps this server's own value.
#[derive(Clone)]
pub struct Level {
    gauge: Gauge,
    value: Arc<AtomicI64>,
}

impl Level {
    fn new(gauge: Gauge) -> Self {
        Level {
            gauge,
            value: Arc::new(AtomicI64::new(0)),
        }
    }

    /// Adds `n` (negative to take away).
    pub fn increment(&self, n: f64) {
        self.gauge.increment(n);
        self.value.fetch_add(n as i64, Ordering::Relaxed);
    }

    /// Takes `n` away.
    pub fn decrement(&self, n: f64) {
        self.increment(-n);
    }

    /// This server's value now.
    pub fn get(&self) -> i64 {
        self.value.load(Ordering::Relaxed)
    }
}

impl Metrics {
    /// Registers the metrics with the installed recorder.
    pub fn new() -> Self {
        prometheus();
        Metrics {
            connections: Level::new(gauge!("loudsync_connections")),
            sessions: Level::new(gauge!("loudsync_sessions")),
            members: Level::new(gauge!("loudsync_members")),
            frames_received: Tally::new(counter!("loudsync_frames_received_total")),
            frames_sent: Tally::new(counter!("loudsync_frames_sent_total")),
            joins: Tally::new(counter!("loudsync_joins_total")),
            slow_consumer_disconnects: Tally::new(counter!(
                "loudsync_slow_consumer_disconnects_total"
            )),
            heartbeat_timeouts: Tally::new(counter!("loudsync_heartbeat_timeouts_total")),
            tcp_connections: gauge!("loudsync_tcp_connections"),
            refused_max_connections: counter!(
                "loudsync_connections_refused_total", "reason" => "max_connections"
            ),
            refused_per_address: counter!(
                "loudsync_connections_refused_total", "reason" => "per_address"
            ),
            refused_out_of_files: counter!(
                "loudsync_connections_refused_total", "reason" => "out_of_files"
            ),
            request_timeouts: counter!("loudsync_request_timeouts_total"),
            tls_handshake_failures: counter!("loudsync_tls_handshake_failures_total"),
            refused_unjoined: counter!(
                "loudsync_connections_refused_total", "reason" => "unjoined_per_address"
            ),
            join_attempts_limited: counter!("loudsync_join_attempts_limited_total"),
            drain_aborted: counter!("loudsync_drain_aborted_total"),
            cluster_batches: counter!("loudsync_cluster_batches_total"),
            cluster_takeovers: counter!("loudsync_cluster_takeovers_total"),
            cluster_leases_lost: counter!("loudsync_cluster_leases_lost_total"),
            cluster_unavailable: counter!("loudsync_cluster_unavailable_total"),
            resumes: Arc::default(),
        }
    }

    /// Counts a resume by outcome: `resumed`, or the `resume_failed` reason, or `invalid`.
    pub fn resume_outcome(&self, outcome: &'static str) {
        self.resumes.0.fetch_add(1, Ordering::Relaxed);
        if outcome != "resumed" {
            self.resumes.1.fetch_add(1, Ordering::Relaxed);
        }
        counter!("loudsync_resumes_total", "outcome" => outcome).increment(1);
    }

    /// Counts a resume answered by a session.
    pub fn resumed(&self, answer: &loudsync_core::connection::ResumeAnswer) {
        use loudsync_core::connection::ResumeAnswer;
        self.resume_outcome(match answer {
            ResumeAnswer::Resumed { .. } => "resumed",
            ResumeAnswer::Failed(why) => why.as_str(),
            ResumeAnswer::Invalid(_) => "invalid",
        });
    }

    /// Counts the state and handoff layer's events as their frames go out: accepted state
    /// changes (`loudsync_state_changes_total`), changes of host by reason
    /// (`loudsync_host_changes_total{reason="handoff"|"host_lost"}`) and failed handoffs by
    /// reason (`loudsync_handoffs_failed_total{reason}`, counted once, on the host's copy).
    pub fn handoff_event(message: &loudsync_protocol::ServerMessage) {
        use loudsync_protocol::{HandoffFailure, HostChange, ServerMessage};
        match message {
            ServerMessage::State { .. } => counter!("loudsync_state_changes_total").increment(1),
            ServerMessage::HostChanged { reason, .. } => {
                let reason = match reason {
                    HostChange::Handoff => "handoff",
                    HostChange::HostLost => "host_lost",
                };
                counter!("loudsync_host_changes_total", "reason" => reason).increment(1)
            }
            // One count per failed handoff, though both sides may get a copy: `host_left`
            // on the candidate's copy (no `targetId`), every other reason on the host's copy
            // (with `targetId`), `busy` and `no_candidate` (the host's only) always.
            ServerMessage::HandoffFailed {
                reason, target_id, ..
            } if matches!(reason, HandoffFailure::Busy | HandoffFailure::NoCandidate)
                || (*reason == HandoffFailure::HostLeft) == target_id.is_none() =>
            {
                counter!("loudsync_handoffs_failed_total", "reason" => reason.as_str()).increment(1)
            }
            _ => {}
        }
    }

    /// Counts an `error` sent to a client, by code.
    pub fn error_sent(code: &'static str) {
        counter!("loudsync_errors_sent_total", "code" => code).increment(1);
    }
}

/// The media relay's metric handles (issue 13 R9).
#[derive(Clone)]
pub struct MediaMetrics {
    /// STARTs answered with a new reservation.
    pub handshakes: Counter,
    /// Tuples streaming.
    pub streams: Gauge,
    /// First START to accepted START_CONFIRM, in seconds.
    pub time_to_stream: Histogram,
    /// Every datagram sent: control replies and DATA copies.
    pub datagrams_sent: Counter,
    /// DATA copies sent to subscribers.
    pub datagrams_relayed: Counter,
    /// Frames the publisher's sequence numbers skipped.
    pub frames_lost: Counter,
}

impl MediaMetrics {
    /// Registers the media metrics with the installed recorder.
    pub fn new() -> Self {
        prometheus();
        MediaMetrics {
            handshakes: counter!("loudsync_media_handshakes_total"),
            streams: gauge!("loudsync_media_streams"),
            time_to_stream: histogram!(TIME_TO_STREAM),
            datagrams_sent: counter!("loudsync_media_datagrams_sent_total"),
            datagrams_relayed: counter!("loudsync_media_datagrams_relayed_total"),
            frames_lost: counter!("loudsync_media_frames_lost_total"),
        }
    }

    /// Counts an ERROR sent, by its snake_case name (`bad_token`).
    pub fn handshake_failure(code: &'static str) {
        counter!("loudsync_media_handshake_failures_total", "code" => code).increment(1);
    }
}

impl Default for MediaMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
