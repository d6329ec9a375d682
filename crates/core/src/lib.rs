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
//!   them), host, join validation, leave, kick, messages, close, held places' timers.
//! - [`outbound`]: the slow-consumer rule of a member's outbound queue.
//! - [`limits`]: the token bucket behind the per-connection rate limit.
//! - [`ids`]: where ids come from (injected, so tests are deterministic).

pub mod admission;
pub mod connection;
pub mod directory;
pub mod ids;
pub mod limits;
pub mod outbound;
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
