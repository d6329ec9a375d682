//! The one place the server reads the clock: the core is given the time, never takes it.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use loudsync_core::Now;

/// The current time for the core.
pub fn now() -> Now {
    Now {
        instant: Instant::now(),
        unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    }
}
