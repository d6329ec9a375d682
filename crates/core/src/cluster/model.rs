//! A pure model of the ownership scripts the server runs in Redis, for the property tests.
//!
//! Each method is one Lua script (one atomic step in Redis) over the keys
//! `ls:{s:ID}:owner` (`NODE|EPOCH`, `PX lease`) and `ls:{s:ID}:epoch` (a counter):
//!
//! ```text
//!   claim(node)            owner absent  -> epoch = INCR epoch; SET owner NODE|epoch PX lease
//!   renew(node, e)         owner == NODE|e -> SET owner NODE|e PX lease       (else refuse)
//!   release(node, e)       owner == NODE|e -> DEL owner                       (else refuse)
//!   fenced_write(node, e)  owner == NODE|e -> the write happens               (else refuse)
//! ```
//!
//! Time is the Redis server's clock in milliseconds, passed in as `now` (a script sees one
//! frozen time for its whole run, as Redis 7 does). A key set with `PX lease` at `t` expires
//! at `t + lease` and, as in Redis (`now > when` means expired), is still there at exactly
//! that millisecond and gone one millisecond later. An expired key behaves as absent. The
//! epoch counter has no expiry: it only rises, so an epoch is never handed out twice.
//!
//! Callers pass a `now` that does not go backwards, as the Redis clock does not.

use std::time::Duration;

/// The current holder of the owner key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owner {
    node: String,
    epoch: u64,
    /// Redis time (ms) of the key's expiry: present while `now <= expires_at`.
    expires_at: u64,
}

/// The owner and epoch keys of one session, with the scripts that may change them.
#[derive(Debug, Clone)]
pub struct LeaseStore {
    lease_ms: u64,
    last_epoch: u64,
    owner: Option<Owner>,
}

impl LeaseStore {
    /// No owner yet, epoch counter at 0; every claim and renewal sets `PX lease`.
    pub fn new(lease: Duration) -> LeaseStore {
        LeaseStore {
            lease_ms: u64::try_from(lease.as_millis()).unwrap_or(u64::MAX),
            last_epoch: 0,
            owner: None,
        }
    }

    /// The last epoch handed out by a claim (0 before the first claim).
    pub fn last_epoch(&self) -> u64 {
        self.last_epoch
    }

    /// Who owns the session at `now`, if the owner key is present: `(node, epoch)`.
    pub fn owner(&self, now: u64) -> Option<(&str, u64)> {
        self.live_owner(now).map(|o| (o.node.as_str(), o.epoch))
    }

    /// When the owner key expires (Redis ms; present through that millisecond), if present.
    pub fn expires_at(&self, now: u64) -> Option<u64> {
        self.live_owner(now).map(|o| o.expires_at)
    }

    /// The claim script: if no owner key is present, `node` becomes owner with the next
    /// epoch, for a lease from `now`. `None` while someone (even `node`) owns it.
    pub fn claim(&mut self, node: &str, now: u64) -> Option<u64> {
        if self.live_owner(now).is_some() {
            return None;
        }
        self.last_epoch += 1;
        self.owner = Some(Owner {
            node: node.to_owned(),
            epoch: self.last_epoch,
            expires_at: now.saturating_add(self.lease_ms),
        });
        Some(self.last_epoch)
    }

    /// The renew script: if the owner key is present and is exactly `node|epoch`, its expiry
    /// becomes `now + lease`. Whether it was.
    pub fn renew(&mut self, node: &str, epoch: u64, now: u64) -> bool {
        let lease_ms = self.lease_ms;
        match self.owner_if(node, epoch, now) {
            Some(owner) => {
                owner.expires_at = now.saturating_add(lease_ms);
                true
            }
            None => false,
        }
    }

    /// The release script: deletes the owner key if it is present and is exactly
    /// `node|epoch`. Whether it did.
    pub fn release(&mut self, node: &str, epoch: u64, now: u64) -> bool {
        if self.owner_if(node, epoch, now).is_none() {
            return false;
        }
        self.owner = None;
        true
    }

    /// The fence of every owner write: accepted only if the owner key is present and is
    /// exactly `node|epoch` at `now`. The write itself changes nothing here.
    pub fn fenced_write(&mut self, node: &str, epoch: u64, now: u64) -> bool {
        self.owner_if(node, epoch, now).is_some()
    }

    /// The owner key if present at `now` and holding exactly `node|epoch`.
    fn owner_if(&mut self, node: &str, epoch: u64, now: u64) -> Option<&mut Owner> {
        self.expire(now);
        self.owner
            .as_mut()
            .filter(|o| o.node == node && o.epoch == epoch)
    }

    /// The owner key if present at `now`.
    fn live_owner(&self, now: u64) -> Option<&Owner> {
        self.owner.as_ref().filter(|o| now <= o.expires_at)
    }

    /// Drops the owner key once it has expired (Redis's lazy expiry).
    fn expire(&mut self, now: u64) {
        if self.live_owner(now).is_none() {
            self.owner = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> LeaseStore {
        LeaseStore::new(Duration::from_millis(1_000))
    }

    #[test]
    fn claim_takes_a_free_lease_with_a_rising_epoch() {
        let mut s = store();
        assert_eq!(s.owner(0), None);
        assert_eq!(s.claim("a", 100), Some(1));
        assert_eq!(s.owner(100), Some(("a", 1)));
        assert_eq!(s.claim("b", 500), None);
        assert_eq!(s.claim("a", 500), None, "not even the owner claims twice");
        assert_eq!(s.last_epoch(), 1);
    }

    #[test]
    fn the_key_lives_through_its_px_millisecond_and_not_after() {
        let mut s = store();
        s.claim("a", 100);
        assert_eq!(s.expires_at(100), Some(1_100));
        assert_eq!(s.owner(1_100), Some(("a", 1)));
        assert!(s.fenced_write("a", 1, 1_100));
        assert_eq!(s.owner(1_101), None);
        assert!(!s.fenced_write("a", 1, 1_101));
        assert!(!s.renew("a", 1, 1_101), "an expired key cannot be renewed");
        assert_eq!(s.claim("b", 1_101), Some(2));
    }

    #[test]
    fn renew_extends_only_the_exact_owner() {
        let mut s = store();
        s.claim("a", 0);
        assert!(!s.renew("b", 1, 500));
        assert!(!s.renew("a", 2, 500));
        assert!(s.renew("a", 1, 900));
        assert_eq!(s.expires_at(900), Some(1_900));
        assert_eq!(s.owner(1_900), Some(("a", 1)));
    }

    #[test]
    fn release_frees_the_lease_for_the_next_claim_only_for_the_owner() {
        let mut s = store();
        s.claim("a", 0);
        assert!(!s.release("b", 1, 10));
        assert!(!s.release("a", 2, 10));
        assert!(s.release("a", 1, 10));
        assert!(!s.fenced_write("a", 1, 11));
        assert_eq!(s.claim("b", 11), Some(2));
        assert!(
            !s.release("a", 1, 12),
            "a stale release does not free the new owner"
        );
        assert_eq!(s.owner(12), Some(("b", 2)));
    }

    #[test]
    fn fenced_writes_need_the_current_node_and_epoch() {
        let mut s = store();
        s.claim("a", 0);
        assert!(s.fenced_write("a", 1, 5));
        assert!(!s.fenced_write("b", 1, 5));
        assert!(!s.fenced_write("a", 2, 5));
        s.release("a", 1, 6);
        s.claim("a", 7);
        assert!(
            !s.fenced_write("a", 1, 8),
            "the node's old epoch is fenced out too"
        );
        assert!(s.fenced_write("a", 2, 8));
    }
}
