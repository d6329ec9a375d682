//! When a node looks for sessions to take over, sans-IO.
//!
//! Issue 16 bounds a takeover: it completes within a lease plus a second after the dead
//! owner's last renewal. Every node scans the cluster's sessions every third of a lease and
//! claims those without an owner; with that scan alone, an owner key that expires just after
//! a scan is found a third of a lease later, up to `lease + lease / 3` after the last renewal,
//! past the bound for any lease over 3 s (13.3 s with the default 10 s).
//!
//! So each scan also reports how long every other node's owner key has left to live (its
//! `PTTL`), and [`TakeoverTimer`] wakes the node for another scan at the earliest of those
//! expiries plus a small margin, the first moment a claim can succeed. A key that was renewed
//! meanwhile is found alive then, and the scan reports its new expiry; a dead owner's key is
//! found gone and claimed. Between those, the regular scan every third of a lease still runs
//! (new sessions, released ones, an expiry not seen).

use std::time::{Duration, Instant};

use crate::Now;

/// The next moment a node scans for ownerless sessions: see the module comment.
#[derive(Debug, Clone)]
pub struct TakeoverTimer {
    every: Duration,
    margin: Duration,
    next_scan: Instant,
    earliest_expiry: Option<Instant>,
}

impl TakeoverTimer {
    /// Regular scans every `every` from `now`; an expiry is looked at `margin` after it.
    pub fn new(now: Now, every: Duration, margin: Duration) -> TakeoverTimer {
        TakeoverTimer {
            every,
            margin,
            next_scan: now.instant + every,
            earliest_expiry: None,
        }
    }

    /// A scan starts at `now`: the next regular one is a period later, and the expiries the
    /// last scan saw are forgotten (this one sees them again, or they are gone).
    pub fn handle_scan_started(&mut self, now: Now) {
        self.next_scan = now.instant + self.every;
        self.earliest_expiry = None;
    }

    /// The scan at `now` found another node's owner key with `ttl` left to live
    /// (`Duration::MAX` for a key that never expires: no wake-up).
    pub fn observe_owner(&mut self, now: Now, ttl: Duration) {
        let Some(at) = now.instant.checked_add(ttl.saturating_add(self.margin)) else {
            return;
        };
        self.earliest_expiry = Some(self.earliest_expiry.map_or(at, |e| e.min(at)));
    }

    /// When the next scan is due.
    pub fn poll_timeout(&self) -> Instant {
        self.earliest_expiry
            .map_or(self.next_scan, |e| e.min(self.next_scan))
    }

    /// Whether a scan is due at `now`.
    pub fn is_due(&self, now: Now) -> bool {
        now.instant >= self.poll_timeout()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(10);
    const MARGIN: Duration = Duration::from_millis(50);

    fn start() -> Now {
        Now {
            instant: Instant::now(),
            unix_ms: 1_000_000,
        }
    }

    fn timer(t0: Now) -> TakeoverTimer {
        TakeoverTimer::new(t0, LEASE / 3, MARGIN)
    }

    #[test]
    fn without_owners_it_scans_every_period() {
        let t0 = start();
        let mut t = timer(t0);
        assert_eq!(t.poll_timeout(), t0.instant + LEASE / 3);
        assert!(!t.is_due(t0.plus(LEASE / 3 - Duration::from_millis(1))));
        let t1 = t0.plus(LEASE / 3);
        assert!(t.is_due(t1));
        t.handle_scan_started(t1);
        assert_eq!(t.poll_timeout(), t1.instant + LEASE / 3);
    }

    #[test]
    fn an_owner_key_about_to_expire_brings_the_next_scan_forward() {
        // The owner renewed, then died; a scan saw its key with 1 s left. The next scan is
        // at its expiry plus the margin, not at the regular period that would find it up to
        // a third of a lease late.
        let t0 = start();
        let mut t = timer(t0);
        t.handle_scan_started(t0);
        t.observe_owner(t0, Duration::from_millis(9_000));
        t.observe_owner(t0, Duration::from_millis(1_000));
        let expiry = t0.instant + Duration::from_millis(1_000) + MARGIN;
        assert_eq!(t.poll_timeout(), expiry);
        assert!(!t.is_due(t0.plus(Duration::from_millis(1_000))));
        assert!(t.is_due(t0.plus(Duration::from_millis(1_000) + MARGIN)));
        // That scan finds the key renewed (a full lease again): the regular period is next.
        let t1 = t0.plus(Duration::from_millis(1_000) + MARGIN);
        t.handle_scan_started(t1);
        t.observe_owner(t1, LEASE);
        assert_eq!(t.poll_timeout(), t1.instant + LEASE / 3);
    }

    #[test]
    fn a_key_that_never_expires_wakes_nothing() {
        let t0 = start();
        let mut t = timer(t0);
        t.handle_scan_started(t0);
        t.observe_owner(t0, Duration::MAX);
        assert_eq!(t.poll_timeout(), t0.instant + LEASE / 3);
    }

    #[test]
    fn a_key_expiring_after_the_regular_scan_leaves_the_period_alone() {
        let t0 = start();
        let mut t = timer(t0);
        t.handle_scan_started(t0);
        t.observe_owner(t0, Duration::from_millis(9_990));
        assert_eq!(t.poll_timeout(), t0.instant + LEASE / 3);
    }

    #[test]
    fn the_worst_case_takeover_is_a_lease_and_the_margin_after_the_last_renewal() {
        // Virtual clock: the owner renews every third of a lease and dies right after some
        // renewal; the scanning node starts at every phase of that cycle. The scan that claims
        // must come no later than lease + margin (+ one scan's own time, not modelled) after
        // the last renewal, for every phase.
        let step = Duration::from_millis(37);
        let mut phase = Duration::ZERO;
        while phase < LEASE / 3 {
            let t0 = start();
            let last_renewal = t0.plus(phase);
            let expiry = last_renewal.instant + LEASE;
            let mut t = timer(t0);
            let mut now = t0;
            let claimed_at = loop {
                t.handle_scan_started(now);
                if now.instant >= expiry {
                    break now.instant;
                }
                // Before the death the key is renewed every third of a lease.
                let renewed = if now.instant < last_renewal.instant {
                    let cycles =
                        (last_renewal.instant - now.instant).as_nanos() / (LEASE / 3).as_nanos();
                    last_renewal.instant - (LEASE / 3) * cycles as u32
                } else {
                    last_renewal.instant
                };
                t.observe_owner(now, renewed + LEASE - now.instant);
                now = t0.plus(t.poll_timeout() - t0.instant);
            };
            assert!(
                claimed_at <= expiry + MARGIN,
                "phase {phase:?}: claimed {:?} after the expiry",
                claimed_at - expiry
            );
            phase += step;
        }
    }
}
