//! The owner's clock: a stream entry's milliseconds as the [`Now`] a session runs at.
//!
//! A session's state must be a pure function of its inbound stream, so that a new owner that
//! re-applies the stream rebuilds exactly the state the old owner had. Its inputs therefore
//! take their time from the entries, not from the node: entry `MS-SEQ` is applied at wall time
//! `MS` (the Redis server's clock when the entry was added). The session machine wants a
//! [`Now`], a monotonic `Instant` *and* wall milliseconds, so a [`StreamClock`] pins one
//! moment where both are known (`base`, taken from the node's clock when it became owner) and
//! maps every other millisecond by its distance from that base:
//!
//! ```text
//!   at(ms).unix_ms = ms
//!   at(ms).instant = base.instant + (ms - base.unix_ms)      (or minus, for ms before base)
//! ```
//!
//! Entries older than the base (a new owner replaying history) map to instants before the
//! base. An `Instant` cannot go below the point the OS chose as its zero, so when it would,
//! the base instant itself is used; the same fallback covers a sum too large for an
//! `Instant` (only a corrupt id could be that far away). Either way no input panics.
//!
//! [`StreamClock::wall_ms`] goes the other way: the session's next deadline (an `Instant`
//! from `poll_timeout`) into Redis milliseconds, rounded *up* to a whole millisecond, so
//! that `at(wall_ms(deadline)).instant >= deadline`: a `Tick` stamped with that time is
//! never applied before the deadline it was written for.

use std::time::{Duration, Instant};

use crate::Now;

/// Maps stream milliseconds to [`Now`] and deadlines back to milliseconds, around one base
/// moment. Cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamClock {
    base: Now,
}

impl StreamClock {
    /// A clock pinned at `base`: `at(base.unix_ms) == base`.
    pub fn new(base: Now) -> StreamClock {
        StreamClock { base }
    }

    /// The moment both clocks were read together.
    pub fn base(&self) -> Now {
        self.base
    }

    /// The [`Now`] for wall time `ms` (an entry id's milliseconds): `unix_ms` is `ms`, the
    /// instant is as far from the base instant as `ms` is from the base milliseconds (the
    /// base instant itself if that is not representable).
    pub fn at(&self, ms: u64) -> Now {
        let instant = if ms >= self.base.unix_ms {
            let ahead = Duration::from_millis(ms - self.base.unix_ms);
            self.base.instant.checked_add(ahead)
        } else {
            let behind = Duration::from_millis(self.base.unix_ms - ms);
            self.base.instant.checked_sub(behind)
        };
        Now {
            instant: instant.unwrap_or(self.base.instant),
            unix_ms: ms,
        }
    }

    /// The wall milliseconds of `instant`, rounded up to a whole millisecond (saturating at
    /// `0` and `u64::MAX`). The inverse of [`StreamClock::at`]: `wall_ms(at(ms).instant) == ms`
    /// whenever `at` did not fall back to the base.
    pub fn wall_ms(&self, instant: Instant) -> u64 {
        if instant >= self.base.instant {
            let ahead = ceil_millis(instant - self.base.instant);
            self.base.unix_ms.saturating_add(ahead)
        } else {
            // Rounding the wall time up means rounding the distance back down.
            let behind = floor_millis(self.base.instant - instant);
            self.base.unix_ms.saturating_sub(behind)
        }
    }
}

/// Whole milliseconds in `d`, a started millisecond counting as one (saturating).
fn ceil_millis(d: Duration) -> u64 {
    let whole = floor_millis(d);
    if d > Duration::from_millis(whole) {
        whole.saturating_add(1)
    } else {
        whole
    }
}

/// Whole milliseconds in `d`, the rest dropped (saturating).
fn floor_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A base far enough from the OS's zero instant that going back an hour is representable
    /// (the same one for the whole test run).
    fn base() -> Now {
        static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        Now {
            instant: *BASE.get_or_init(|| Instant::now() + Duration::from_secs(3600)),
            unix_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn base_maps_to_itself() {
        let clock = StreamClock::new(base());
        assert_eq!(clock.at(base().unix_ms), base());
        assert_eq!(clock.wall_ms(base().instant), base().unix_ms);
    }

    #[test]
    fn later_and_earlier_ms_move_the_instant_by_the_same_distance() {
        let b = base();
        let clock = StreamClock::new(b);
        let later = clock.at(b.unix_ms + 2_500);
        assert_eq!(later.unix_ms, b.unix_ms + 2_500);
        assert_eq!(later.instant, b.instant + Duration::from_millis(2_500));
        let earlier = clock.at(b.unix_ms - 1_000);
        assert_eq!(earlier.unix_ms, b.unix_ms - 1_000);
        assert_eq!(earlier.instant, b.instant - Duration::from_millis(1_000));
    }

    #[test]
    fn unrepresentable_instants_do_not_panic() {
        let b = base();
        let clock = StreamClock::new(b);
        // 54 years before the base and far beyond it: whether the platform's `Instant` can
        // represent them or not (Linux's can go below zero), nothing panics and the instant
        // is never on the wrong side of the base.
        assert!(clock.at(0).instant <= b.instant);
        assert_eq!(clock.at(0).unix_ms, 0);
        assert!(clock.at(u64::MAX).instant >= b.instant);
        assert_eq!(clock.at(u64::MAX).unix_ms, u64::MAX);
    }

    #[test]
    fn wall_ms_rounds_a_deadline_up() {
        let b = base();
        let clock = StreamClock::new(b);
        let deadline = b.instant + Duration::from_micros(10_001);
        assert_eq!(clock.wall_ms(deadline), b.unix_ms + 11);
        assert!(clock.at(clock.wall_ms(deadline)).instant >= deadline);
        let before = b.instant - Duration::from_micros(10_999);
        assert_eq!(clock.wall_ms(before), b.unix_ms - 10);
        assert!(clock.at(clock.wall_ms(before)).instant >= before);
    }

    proptest! {
        #[test]
        fn wall_ms_inverts_at(offset in -3_600_000i64..3_600_000) {
            let b = base();
            let clock = StreamClock::new(b);
            let ms = b.unix_ms.checked_add_signed(offset).unwrap();
            prop_assert_eq!(clock.wall_ms(clock.at(ms).instant), ms);
        }

        #[test]
        fn a_deadline_round_trip_is_never_early(micros in -3_600_000_000i64..3_600_000_000) {
            let b = base();
            let clock = StreamClock::new(b);
            let d = Duration::from_micros(micros.unsigned_abs());
            let deadline = if micros >= 0 { b.instant + d } else { b.instant - d };
            let back = clock.at(clock.wall_ms(deadline)).instant;
            prop_assert!(back >= deadline);
            prop_assert!(back - deadline < Duration::from_millis(1));
        }
    }
}
