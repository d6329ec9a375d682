//! Prometheus metrics: the recorder, installed once per process, and the handles the hot path
//! uses (looked up once, not per message).

use std::sync::OnceLock;

use metrics::{counter, gauge, Counter, Gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus handle (the recorder is installed on first use).
pub fn prometheus() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (an embedding program's); then our
        // /metrics is empty rather than the process failing.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Handles for the metrics the server updates.
#[derive(Clone)]
pub struct Metrics {
    /// Open WebSocket connections.
    pub connections: Gauge,
    /// Live sessions.
    pub sessions: Gauge,
    /// Members in sessions.
    pub members: Gauge,
    /// Text/binary frames received from clients.
    pub frames_received: Counter,
    /// Text frames queued to clients (a broadcast counts once per recipient).
    pub frames_sent: Counter,
    /// Successful joins.
    pub joins: Counter,
    /// Members disconnected because their outbound queue overflowed.
    pub slow_consumer_disconnects: Counter,
    /// Members removed for heartbeat silence.
    pub heartbeat_timeouts: Counter,
}

impl Metrics {
    /// Registers the metrics with the installed recorder.
    pub fn new() -> Self {
        prometheus();
        Metrics {
            connections: gauge!("loudsync_connections"),
            sessions: gauge!("loudsync_sessions"),
            members: gauge!("loudsync_members"),
            frames_received: counter!("loudsync_frames_received_total"),
            frames_sent: counter!("loudsync_frames_sent_total"),
            joins: counter!("loudsync_joins_total"),
            slow_consumer_disconnects: counter!("loudsync_slow_consumer_disconnects_total"),
            heartbeat_timeouts: counter!("loudsync_heartbeat_timeouts_total"),
        }
    }

    /// Counts an `error` sent to a client, by code.
    pub fn error_sent(code: &'static str) {
        counter!("loudsync_errors_sent_total", "code" => code).increment(1);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
