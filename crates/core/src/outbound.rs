//! The slow-consumer rule: how much a member's outbound queue may hold before the member is
//! disconnected as too slow.
//!
//! A queue may go over its soft limit for a while (a burst: a big session's joins, a member
//! list of thousands), but not for longer than the grace period, and never over the hard
//! limit. One frame larger than the soft limit is always accepted into an empty queue (a big
//! session's `member_list`). So a member that reads slowly during a burst keeps up, and a
//! member that stops reading is dropped with its memory bounded by the hard limit.
//!
//! [`Backlog`] is the pure rule; the server's outbox applies it under its lock.

use std::time::{Duration, Instant};

/// The limits of one member's outbound queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboundLimits {
    /// Bytes the queue may hold without question.
    pub soft_bytes: usize,
    /// Bytes the queue may never exceed.
    pub hard_bytes: usize,
    /// How long the queue may stay over `soft_bytes`.
    pub grace: Duration,
}

impl Default for OutboundLimits {
    fn default() -> Self {
        OutboundLimits {
            soft_bytes: 256 * 1024,
            hard_bytes: 4 * 1024 * 1024,
            grace: Duration::from_secs(5),
        }
    }
}

/// Whether a frame may join the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Queue it.
    Queue,
    /// The member cannot keep up: disconnect it.
    TooSlow,
}

/// The state of the rule for one queue: since when it has been over the soft limit.
#[derive(Debug, Clone, Default)]
pub struct Backlog {
    over_since: Option<Instant>,
}

impl Backlog {
    /// Whether a frame of `frame` bytes may join a queue holding `queued` bytes at `now`.
    pub fn admit(
        &mut self,
        limits: &OutboundLimits,
        now: Instant,
        queued: usize,
        frame: usize,
    ) -> Admit {
        if queued == 0 {
            self.over_since = None;
            return Admit::Queue;
        }
        let after = queued + frame;
        if after > limits.hard_bytes {
            return Admit::TooSlow;
        }
        if after <= limits.soft_bytes {
            self.over_since = None;
            return Admit::Queue;
        }
        let since = *self.over_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= limits.grace {
            Admit::TooSlow
        } else {
            Admit::Queue
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: OutboundLimits = OutboundLimits {
        soft_bytes: 100,
        hard_bytes: 400,
        grace: Duration::from_secs(2),
    };

    #[test]
    fn under_the_soft_limit_everything_queues() {
        let t = Instant::now();
        let mut b = Backlog::default();
        assert_eq!(b.admit(&LIMITS, t, 50, 50), Admit::Queue);
        assert_eq!(
            b.admit(&LIMITS, t + Duration::from_secs(100), 99, 1),
            Admit::Queue
        );
    }

    #[test]
    fn one_large_frame_fits_an_empty_queue_even_over_the_hard_limit() {
        let mut b = Backlog::default();
        assert_eq!(b.admit(&LIMITS, Instant::now(), 0, 10_000), Admit::Queue);
    }

    #[test]
    fn over_the_soft_limit_for_the_grace_period_is_too_slow() {
        let t = Instant::now();
        let mut b = Backlog::default();
        assert_eq!(b.admit(&LIMITS, t, 90, 20), Admit::Queue, "burst starts");
        assert_eq!(
            b.admit(&LIMITS, t + Duration::from_millis(1999), 200, 20),
            Admit::Queue
        );
        assert_eq!(
            b.admit(&LIMITS, t + Duration::from_secs(2), 220, 20),
            Admit::TooSlow
        );
    }

    #[test]
    fn draining_under_the_soft_limit_restarts_the_grace_period() {
        let t = Instant::now();
        let mut b = Backlog::default();
        assert_eq!(b.admit(&LIMITS, t, 90, 20), Admit::Queue);
        // The consumer caught up, then a new burst 1.5 s later.
        assert_eq!(
            b.admit(&LIMITS, t + Duration::from_millis(1500), 0, 20),
            Admit::Queue
        );
        assert_eq!(
            b.admit(&LIMITS, t + Duration::from_millis(1600), 90, 20),
            Admit::Queue
        );
        assert_eq!(
            b.admit(&LIMITS, t + Duration::from_millis(3500), 200, 20),
            Admit::Queue,
            "1.9 s over since the new burst"
        );
    }

    #[test]
    fn the_hard_limit_is_never_exceeded() {
        let t = Instant::now();
        let mut b = Backlog::default();
        assert_eq!(b.admit(&LIMITS, t, 390, 20), Admit::TooSlow);
    }
}
