//! The session media relay (issue 13 §9, R1-R9), sans-IO: the server's responder for a
//! session's publisher and subscribers, and the fan-out of the publisher's DATA.
//!
//! SKELETON: the API below is fixed (the server codes against it); the bodies are filled in by
//! the relay work. See the R5-R8 for the rules.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use loudsync_protocol::media::{ErrorCode, StreamId};

use crate::media::responder::{IdRandomness, Transmit};
use crate::Now;

/// The default `--media-token-ttl` (R1).
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(30);

/// Where media tokens come from: 32 random bytes per token (43 base64url characters).
pub type TokenRandomness = Box<dyn FnMut() -> [u8; 32] + Send>;

/// What the relay is configured with.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Tuples pending or streaming at once, over every session (D14's `max-streams`).
    pub max_streams: usize,
    /// How long a reservation waits for START_CONFIRM after the last START (D14).
    pub confirm_timeout: Duration,
    /// How long a granted token may be claimed (`--media-token-ttl`, R1, R5).
    pub token_ttl: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            max_streams: 4096,
            confirm_timeout: crate::media::responder::DEFAULT_CONFIRM_TIMEOUT,
            token_ttl: DEFAULT_TOKEN_TTL,
        }
    }
}

/// A token's role (R3): the host publishes, every other member subscribes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaRole {
    /// May send DATA to the relay (the session's host).
    Publish,
    /// Receives the publisher's DATA.
    Subscribe,
}

impl MediaRole {
    /// The wire name, `publish` or `subscribe` (R2).
    pub fn name(self) -> &'static str {
        match self {
            MediaRole::Publish => "publish",
            MediaRole::Subscribe => "subscribe",
        }
    }
}

/// A granted token (the `media_token` reply's contents but the port and timestamps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// 43 base64url characters (32 random bytes), what goes in START's MEDIA_TOKEN TLV.
    pub token: String,
    /// The role it grants.
    pub role: MediaRole,
    /// The STREAM_ID to ask for: the session id (R6).
    pub stream_id: StreamId,
    /// Until when it may be claimed.
    pub expires_at: Instant,
}

/// Something for metrics and logs (R9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayEvent {
    /// A START was answered with START_ACK (a new reservation, not a duplicate).
    HandshakeStarted,
    /// A tuple confirmed and is now streaming; `time_to_stream` = its first START to its
    /// START_CONFIRM.
    Streaming {
        /// The tuple's role.
        role: MediaRole,
        /// First START to accepted START_CONFIRM.
        time_to_stream: Duration,
    },
    /// A datagram was answered with ERROR `code`.
    Refused {
        /// The code sent.
        code: ErrorCode,
    },
    /// A streaming tuple stopped (R8, an ERROR received, or its session ended).
    Stopped {
        /// The tuple's role.
        role: MediaRole,
    },
    /// The publisher's sequence numbers skipped `frames` frames (they never reached the relay).
    FramesLost {
        /// Frames skipped.
        frames: u64,
    },
}

/// The relay state machine (see the module comment).
pub struct Relay {
    config: RelayConfig,
    #[allow(dead_code)]
    ids: IdRandomness,
    #[allow(dead_code)]
    tokens: TokenRandomness,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("config", &self.config)
            .finish()
    }
}

impl Relay {
    /// A relay with these settings, drawing connection ids from `ids` and tokens from `tokens`.
    pub fn new(
        config: RelayConfig,
        _now: Now,
        ids: IdRandomness,
        tokens: TokenRandomness,
    ) -> Relay {
        Relay {
            config,
            ids,
            tokens,
        }
    }

    /// The settings.
    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    /// A session now exists (its id becomes a stream the relay serves).
    pub fn open_session(&mut self, _session_id: &str) {}

    /// A session ended (R8): every tuple and token of it is dropped silently; a later START
    /// naming it gets ERROR 3.
    pub fn end_session(&mut self, _session_id: &str) {}

    /// A member left, was kicked, timed out or dropped (R8): its tuples and tokens are dropped
    /// silently.
    pub fn member_gone(&mut self, _session_id: &str, _member_id: &str) {}

    /// The session's host is now `host` (R8): a publish tuple or token of anyone else is
    /// dropped silently.
    pub fn host_changed(&mut self, _session_id: &str, _host: Option<&str>) {}

    /// Grants `member_id` of `session_id` a token for `role` (R2, R5), valid for the TTL;
    /// `None` when the session is not open.
    pub fn grant(
        &mut self,
        _now: Now,
        _session_id: &str,
        _member_id: &str,
        _role: MediaRole,
    ) -> Option<Grant> {
        None
    }

    /// A datagram arrived from `from`. Control frames are validated (D12 with R6's token
    /// checks) and replies queued for [`Relay::poll_transmit`]; a DATA datagram of a session's
    /// confirmed publisher returns the subscribers to forward it to, unchanged (R7); anything
    /// else returns an empty slice.
    pub fn handle_datagram(
        &mut self,
        _now: Now,
        _from: SocketAddr,
        _bytes: &[u8],
    ) -> &[SocketAddr] {
        &[]
    }

    /// The next control datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        None
    }

    /// The next event for metrics.
    pub fn poll_event(&mut self) -> Option<RelayEvent> {
        None
    }

    /// When [`Relay::handle_timeout`] next has something to do (a reservation or token expiry).
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// Time passed: expire reservations (D14) and tokens (R5).
    pub fn handle_timeout(&mut self, _now: Now) {}

    /// Tuples streaming now (the `loudsync_media_streams` gauge).
    pub fn streams(&self) -> usize {
        0
    }

    /// Streaming subscribers of `session_id`.
    pub fn subscribers(&self, _session_id: &str) -> usize {
        0
    }
}
