//! LoudSync's sans-IO core: every protocol rule as a plain state machine.
//!
//! Nothing here touches a socket, a task or the wall clock. Each machine takes inputs through
//! `handle_*(now, ...)` methods, and the caller drains what must happen through `poll_*`
//! methods; [`connection::Connection::poll_timeout`] says when it next needs to be woken.
//! Time comes in as a [`Now`], so tests drive heartbeat timeouts on a virtual clock.
//!
//! - [`connection`]: one transport: decoding, liveness (heartbeat timeout), latency probes,
//!   rate limiting, the rule that session messages need a `join` first, the close deadline.
//! - [`directory`]: routing and identity: where a join goes, member ids, join errors' words.
//! - [`session`]: one session: the member table (places, and the transports attached to
//!   them), host, who may join (host rule, password, token claims; `session/access.rs` limits
//!   wrong passwords per address), leave, kick, messages, close, held places' timers.
//! - [`resume`]: the resume layer (seed 003): numbering, the replay buffer, when acks are
//!   owed, which connection token belongs to which place (the handshake itself is a phase of
//!   [`connection`], the held place and its window are the [`session`]'s).
//! - [`outbound`]: the slow-consumer rule of a member's outbound queue.
//! - [`limits`]: the per-connection rate limit (token bucket, error spacing, drop window).
//! - [`admission`]: who may open a connection, an unjoined socket or a join, by address:
//!   caps fitted to the open-file limit, per-address counts, join rate, the HTTP deadline.
//! - [`events`]: the admin event stream's history (a ring) and its `Last-Event-ID` rule.
//! - [`ids`]: where ids come from (injected, so tests are deterministic).
//! - [`pairing`]: the controller/responder pairing relay (issue 12, CRSocket): identify, one
//!   connection per client id, routing and blocking of events, server rejects, liveness.
//! - [`media`]: the UDP media stream (issue 13): the responder and initiator of the 3-way
//!   handshake, pacing and the receiver's classification (being written).

pub mod admission;
pub mod cluster;
pub mod connection;
pub mod directory;
pub mod events;
pub mod ids;
pub mod limits;
pub mod media;
pub mod outbound;
pub mod pairing;
pub mod resume;
pub mod session;

use std::time::{Duration, Instant};

/// The current time as the I/O layer sees it: a monotonic instant for timers, and the Unix time
/// in milliseconds for the `timestamp` and `joinedAt` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time, for deadlines.
    pub instant: Instant,
    /// Milliseconds since the Unix epoch, for what goes on the wire.
    pub unix_ms: u64,
}

impl Now {
    /// The same moment advanced by `d` on both clocks (for virtual-clock tests and drivers).
    pub fn plus(self, d: Duration) -> Now {
        Now {
            instant: self.instant + d,
            unix_ms: self.unix_ms + d.as_millis() as u64,
        }
    }
}
