//! [`OwnerLease`]: what a node believes about a lease it holds in Redis, and when to renew it.
//!
//! A node holds two kinds of lease, both a Redis key with a `PX` expiry: the ownership of a
//! session (`ls:{s:ID}:owner` = `NODE|EPOCH`) and its own liveness (`ls:node:NODE`). Redis is
//! the only judge of who holds a lease; this machine is the node's *conservative local
//! estimate* of it, so the node stops acting as owner before Redis could let anyone else in.
//!
//! **The estimate.** A renewal (or the claim) that Redis answers "yes" set the key's expiry to
//! Redis's time *when the script ran* plus the lease. The script ran after the node sent the
//! request, so the node counts the lease from the moment it **sent** the request:
//! `valid_until = sent_at + lease` is never later than the expiry Redis set, however long the
//! request or its answer travelled. The node then keeps a safety margin of `lease / 10` on
//! top, and may write only while `now < valid_until - margin`. The margin covers what the send
//! time does not: the node's monotonic clock running slower than Redis's (up to 10 % over a
//! lease), and a write's travel time, so that a write sent just before the local deadline
//! normally still reaches Redis while the lease is alive (if it does not, the fenced script
//! refuses it: the margin is for the estimate, the fence is what makes late writes harmless).
//! A clock that *stops* (a suspended machine; `Instant` does not count suspend on Linux) is
//! outside the assumption; a stopped *process* (`SIGSTOP`) is fine, its clock keeps running.
//!
//! **Renewing.** A renewal is due `lease / 3` after the send time of the last successful
//! renewal (or of the claim), so two renewals can fail before the lease runs out. Only one
//! renewal is in flight at a time. The driver sleeps until [`OwnerLease::poll_timeout`],
//! calls [`OwnerLease::handle_timeout`], and when it returns [`LeaseStep::Renew`] sends the
//! renewal at once: `handle_timeout` has recorded *that* `now` as the send time (recording it
//! a little before the request really leaves only makes the estimate more conservative). The
//! answer goes to [`OwnerLease::handle_renewed`] (`ok` = Redis said the owner was still
//! `NODE|EPOCH`), a failure to get any answer (timeout, connection lost) to
//! [`OwnerLease::handle_renew_error`], which leaves the lease as it was and retries after
//! `lease / 10`.
//!
//! **Losing it.** The lease is lost when Redis answers "no" (someone else owns it, or it
//! expired there), or when `now` reaches `valid_until - margin` before a renewal came back.
//! Lost is final: a renewal answer that arrives after the local deadline does not bring the
//! lease back, even if Redis did renew it (the node has stopped serving and may already have
//! told its members so; it should `release` the key so another node can claim at once). The
//! loss is reported exactly once, as `Some(LeaseStep::Lost)` from whichever call noticed it.
//!
//! The driver must route a renewal's answer to the lease it was sent for (compare
//! [`OwnerLease::epoch`], or drop the pending request together with the lease), since a node
//! that lost a session may claim it again with a new epoch while an old answer is in flight.

use std::time::{Duration, Instant};

/// What the lease's owner must do after [`OwnerLease::handle_timeout`] (or learns from an
/// answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseStep {
    /// Send a renewal now (`renew(node, epoch, lease)`); its send time is recorded.
    Renew,
    /// The lease is gone: stop writing for it at once. Reported once; the lease stays lost.
    Lost,
}

/// The local view of one lease held in Redis: when to renew it and whether writing under it
/// is still safe. See the module documentation for the rules.
#[derive(Debug, Clone)]
pub struct OwnerLease {
    epoch: u64,
    lease: Duration,
    /// Send time of the last renewal (or the claim) that Redis accepted.
    granted_at: Instant,
    /// When the next renewal is due (if none is in flight).
    renew_due: Instant,
    /// Send time of the renewal waiting for its answer, if any.
    in_flight: Option<Instant>,
    lost: bool,
}

impl OwnerLease {
    /// A lease just granted with `epoch` for `lease`. `sent_at` is when the claim (or the
    /// first liveness `SET`) was **sent**, not when its answer came back.
    pub fn new(epoch: u64, lease: Duration, sent_at: Instant) -> OwnerLease {
        OwnerLease {
            epoch,
            lease,
            granted_at: sent_at,
            renew_due: sent_at + renew_interval(lease),
            in_flight: None,
            lost: false,
        }
    }

    /// The epoch Redis granted with the claim; fenced writes carry it.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The lease's length, as given to Redis in `PX`.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// The safety margin kept before the estimated expiry: `lease / 10`.
    pub fn margin(&self) -> Duration {
        margin(self.lease)
    }

    /// Whether the lease is lost (final).
    pub fn is_lost(&self) -> bool {
        self.lost
    }

    /// Whether a renewal was sent and its answer has not come back yet.
    pub fn renewal_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The estimated expiry: send time of the last accepted renewal (or claim) plus the
    /// lease. Redis's own expiry is never earlier.
    pub fn valid_until(&self) -> Instant {
        self.granted_at + self.lease
    }

    /// The moment writing stops: [`OwnerLease::valid_until`] minus the margin.
    pub fn write_deadline(&self) -> Instant {
        self.granted_at + self.lease.saturating_sub(self.margin())
    }

    /// Whether the owner may write under this lease at `now`: not lost, and
    /// `now + margin < valid_until`. (It does not need a timer to have fired first.)
    pub fn may_write(&self, now: Instant) -> bool {
        !self.lost && now < self.write_deadline()
    }

    /// When [`OwnerLease::handle_timeout`] must next be called: the next renewal (if none
    /// is in flight) or the write deadline, whichever is first; `None` once lost.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.lost {
            return None;
        }
        let deadline = self.write_deadline();
        match self.in_flight {
            Some(_) => Some(deadline),
            None => Some(self.renew_due.min(deadline)),
        }
    }

    /// Time has come to `now`. Returns [`LeaseStep::Lost`] (once) if the write deadline has
    /// passed, else [`LeaseStep::Renew`] if a renewal is due and none is in flight; in that
    /// case the renewal counts as sent at `now`, and the caller must send it.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<LeaseStep> {
        if self.lost {
            return None;
        }
        if now >= self.write_deadline() {
            return self.lose();
        }
        if self.in_flight.is_none() && now >= self.renew_due {
            self.in_flight = Some(now);
            return Some(LeaseStep::Renew);
        }
        None
    }

    /// Redis answered the renewal in flight at `now`: `ok` if the owner was still this node
    /// and epoch (the expiry is then `lease` from when the script ran). A refusal loses the
    /// lease; so does an acceptance that arrives at or after the write deadline (lost is
    /// final). Returns [`LeaseStep::Lost`] if this answer lost it. An answer with no renewal
    /// in flight, or to a lost lease, is ignored.
    pub fn handle_renewed(&mut self, now: Instant, ok: bool) -> Option<LeaseStep> {
        if self.lost {
            return None;
        }
        let sent_at = self.in_flight.take()?;
        if !ok || now >= self.write_deadline() {
            return self.lose();
        }
        self.granted_at = self.granted_at.max(sent_at);
        self.renew_due = self.granted_at + renew_interval(self.lease);
        None
    }

    /// The renewal in flight got no answer (a timeout, a lost connection): Redis may or may
    /// not have run it, so the lease keeps its current estimate and a new renewal is tried
    /// `lease / 10` from `now`. Returns [`LeaseStep::Lost`] if the write deadline has passed.
    pub fn handle_renew_error(&mut self, now: Instant) -> Option<LeaseStep> {
        if self.lost {
            return None;
        }
        self.in_flight = None;
        if now >= self.write_deadline() {
            return self.lose();
        }
        self.renew_due = now + self.margin();
        None
    }

    /// Marks the lease lost, reporting it only if it was not lost already.
    fn lose(&mut self) -> Option<LeaseStep> {
        if self.lost {
            return None;
        }
        self.lost = true;
        self.in_flight = None;
        Some(LeaseStep::Lost)
    }
}

/// How long after a granted renewal's send time the next one is due: `lease / 3`.
fn renew_interval(lease: Duration) -> Duration {
    lease / 3
}

/// The margin kept before the estimated expiry: `lease / 10`.
fn margin(lease: Duration) -> Duration {
    lease / 10
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(9);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn claimed() -> (OwnerLease, Instant) {
        let t0 = Instant::now();
        (OwnerLease::new(7, LEASE, t0), t0)
    }

    #[test]
    fn a_fresh_lease_renews_after_a_third_and_stops_writing_a_tenth_before_expiry() {
        let (mut lease, t0) = claimed();
        assert_eq!(lease.epoch(), 7);
        assert_eq!(lease.margin(), ms(900));
        assert_eq!(lease.valid_until(), t0 + LEASE);
        assert_eq!(lease.write_deadline(), t0 + ms(8_100));
        assert_eq!(lease.poll_timeout(), Some(t0 + ms(3_000)));
        assert_eq!(lease.handle_timeout(t0 + ms(2_999)), None);
        assert!(lease.may_write(t0 + ms(8_099)));
        assert!(!lease.may_write(t0 + ms(8_100)));
        assert_eq!(lease.handle_timeout(t0 + ms(3_000)), Some(LeaseStep::Renew));
        assert!(lease.renewal_in_flight());
    }

    #[test]
    fn only_one_renewal_is_in_flight_and_then_the_timer_is_the_deadline() {
        let (mut lease, t0) = claimed();
        assert_eq!(lease.handle_timeout(t0 + ms(3_000)), Some(LeaseStep::Renew));
        assert_eq!(lease.poll_timeout(), Some(t0 + ms(8_100)));
        assert_eq!(lease.handle_timeout(t0 + ms(5_000)), None);
        assert_eq!(lease.handle_timeout(t0 + ms(8_000)), None);
        assert!(lease.may_write(t0 + ms(8_000)));
    }

    #[test]
    fn an_accepted_renewal_counts_from_its_send_time_not_its_answer() {
        let (mut lease, t0) = claimed();
        let sent = t0 + ms(3_500); // the timer fired late
        assert_eq!(lease.handle_timeout(sent), Some(LeaseStep::Renew));
        assert_eq!(lease.handle_renewed(t0 + ms(6_000), true), None);
        assert!(!lease.renewal_in_flight());
        assert_eq!(lease.valid_until(), sent + LEASE);
        assert_eq!(lease.write_deadline(), sent + ms(8_100));
        assert_eq!(lease.poll_timeout(), Some(sent + ms(3_000)));
        assert!(lease.may_write(sent + ms(8_099)));
        assert!(!lease.may_write(sent + ms(8_100)));
        // The next renewal is due a third after the send time, not after the answer.
        assert_eq!(lease.handle_timeout(sent + ms(2_999)), None);
        assert_eq!(
            lease.handle_timeout(sent + ms(3_000)),
            Some(LeaseStep::Renew)
        );
    }

    #[test]
    fn a_refused_renewal_loses_the_lease_at_once_and_for_good() {
        let (mut lease, t0) = claimed();
        assert_eq!(lease.handle_timeout(t0 + ms(3_000)), Some(LeaseStep::Renew));
        assert_eq!(
            lease.handle_renewed(t0 + ms(3_010), false),
            Some(LeaseStep::Lost)
        );
        assert!(lease.is_lost());
        assert!(!lease.may_write(t0 + ms(3_010)));
        assert_eq!(lease.poll_timeout(), None);
        assert_eq!(
            lease.handle_timeout(t0 + ms(9_000)),
            None,
            "lost is reported once"
        );
        assert_eq!(lease.handle_renewed(t0 + ms(3_020), true), None);
        assert!(!lease.may_write(t0 + ms(3_020)));
    }

    #[test]
    fn the_deadline_loses_the_lease_once_even_with_a_renewal_in_flight() {
        let (mut lease, t0) = claimed();
        assert_eq!(lease.handle_timeout(t0 + ms(3_000)), Some(LeaseStep::Renew));
        assert_eq!(lease.handle_timeout(t0 + ms(8_100)), Some(LeaseStep::Lost));
        assert_eq!(lease.handle_timeout(t0 + ms(8_200)), None);
        assert_eq!(lease.poll_timeout(), None);
    }

    #[test]
    fn a_late_accepted_answer_does_not_resurrect_the_lease() {
        let (mut lease, t0) = claimed();
        assert_eq!(lease.handle_timeout(t0 + ms(3_000)), Some(LeaseStep::Renew));
        // The answer comes after the deadline, before the timer noticed (a paused process).
        assert_eq!(
            lease.handle_renewed(t0 + ms(8_100), true),
            Some(LeaseStep::Lost)
        );
        assert!(!lease.may_write(t0 + ms(8_100)));
        // Had the timer noticed first, the answer is ignored.
        let (mut other, t1) = claimed();
        assert_eq!(other.handle_timeout(t1 + ms(3_000)), Some(LeaseStep::Renew));
        assert_eq!(other.handle_timeout(t1 + ms(9_000)), Some(LeaseStep::Lost));
        assert_eq!(other.handle_renewed(t1 + ms(9_001), true), None);
        assert!(other.is_lost());
        assert!(
            !other.may_write(t1 + ms(3_001)),
            "lost even at an earlier instant"
        );
    }

    #[test]
    fn a_missed_timer_loses_the_lease_when_it_finally_fires() {
        let (mut lease, t0) = claimed();
        // Paused through the renewal and the deadline: no renewal is sent any more.
        assert_eq!(lease.handle_timeout(t0 + ms(20_000)), Some(LeaseStep::Lost));
        assert!(!lease.renewal_in_flight());
    }

    #[test]
    fn a_renewal_error_keeps_the_estimate_and_retries_after_a_tenth() {
        let (mut lease, t0) = claimed();
        assert_eq!(lease.handle_timeout(t0 + ms(3_000)), Some(LeaseStep::Renew));
        assert_eq!(lease.handle_renew_error(t0 + ms(5_000)), None);
        assert!(!lease.renewal_in_flight());
        assert_eq!(lease.write_deadline(), t0 + ms(8_100));
        assert_eq!(lease.poll_timeout(), Some(t0 + ms(5_900)));
        assert_eq!(lease.handle_timeout(t0 + ms(5_899)), None);
        assert_eq!(lease.handle_timeout(t0 + ms(5_900)), Some(LeaseStep::Renew));
        // The retry due after the deadline is capped by it.
        assert_eq!(lease.handle_renew_error(t0 + ms(7_500)), None);
        assert_eq!(lease.poll_timeout(), Some(t0 + ms(8_100)));
        assert_eq!(lease.handle_timeout(t0 + ms(8_100)), Some(LeaseStep::Lost));
        assert_eq!(lease.handle_renew_error(t0 + ms(8_200)), None);
    }

    #[test]
    fn an_error_after_the_deadline_reports_the_loss() {
        let (mut lease, t0) = claimed();
        assert_eq!(lease.handle_timeout(t0 + ms(3_000)), Some(LeaseStep::Renew));
        assert_eq!(
            lease.handle_renew_error(t0 + ms(8_100)),
            Some(LeaseStep::Lost)
        );
        assert!(lease.is_lost());
    }

    #[test]
    fn an_answer_without_a_renewal_in_flight_is_ignored() {
        let (mut lease, t0) = claimed();
        assert_eq!(lease.handle_renewed(t0 + ms(100), false), None);
        assert!(!lease.is_lost());
        assert_eq!(lease.handle_renewed(t0 + ms(100), true), None);
        assert_eq!(lease.valid_until(), t0 + LEASE);
    }

    #[test]
    fn the_default_ten_second_lease_renews_every_third() {
        let t0 = Instant::now();
        let mut lease = OwnerLease::new(1, Duration::from_secs(10), t0);
        let third = Duration::from_nanos(3_333_333_333);
        assert_eq!(lease.poll_timeout(), Some(t0 + third));
        assert_eq!(lease.write_deadline(), t0 + ms(9_000));
        let mut now = t0;
        for _ in 0..5 {
            now = lease.poll_timeout().unwrap();
            assert_eq!(lease.handle_timeout(now), Some(LeaseStep::Renew));
            assert_eq!(lease.handle_renewed(now + ms(2), true), None);
            assert_eq!(lease.poll_timeout(), Some(now + third));
        }
        assert!(lease.may_write(now + ms(8_999)));
        assert_eq!(lease.valid_until(), now + Duration::from_secs(10));
    }
}
