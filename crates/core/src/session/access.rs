//! The limit on wrong passwords: per session, per address, over a fixed window.
//!
//! Each address (an IPv6 address counts by its /64, the block one host is usually given) may
//! give a session's password wrongly `max_failures` times within `window` of its first
//! failure; after that every join from it gets `too_many_attempts` (even with the right
//! password) until that window has passed. Memory is bounded: at most [`MAX_TRACKED`]
//! addresses are counted one by one; beyond that, the addresses not tracked share one count,
//! so a guesser with many addresses is throttled as one. Pure: fed with the time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How many addresses are counted one by one per session.
pub const MAX_TRACKED: usize = 1024;

/// How many wrong passwords an address may give within a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureLimit {
    /// Wrong passwords allowed per window (0: no limit).
    pub max_failures: u32,
    /// The window, from an address's first wrong password.
    pub window: Duration,
}

impl Default for FailureLimit {
    /// 5 wrong passwords per address per minute.
    fn default() -> Self {
        FailureLimit {
            max_failures: 5,
            window: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Count {
    since: Instant,
    failures: u32,
}

/// The wrong passwords of one session, by address.
#[derive(Debug)]
pub struct Attempts {
    limit: FailureLimit,
    by_address: HashMap<String, Count>,
    /// The shared count of the addresses beyond [`MAX_TRACKED`].
    overflow: Option<Count>,
}

/// The key an address is counted under: an IPv6 address by its /64.
fn address_key(address: &str) -> String {
    match address.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(IpAddr::V6(v6)) => v6.to_ipv4_mapped().expect("mapped").to_string(),
        _ => address.to_string(),
    }
}

impl Attempts {
    /// No failures yet.
    pub fn new(limit: FailureLimit) -> Self {
        Attempts {
            limit,
            by_address: HashMap::new(),
            overflow: None,
        }
    }

    fn live(&self, count: Option<Count>, now: Instant) -> Option<Count> {
        count.filter(|c| now < c.since + self.limit.window)
    }

    /// If `address` may not try now: how long until it may.
    pub fn blocked(&self, now: Instant, address: &str) -> Option<Duration> {
        if self.limit.max_failures == 0 {
            return None;
        }
        let key = address_key(address);
        let count = match self.by_address.get(&key) {
            Some(c) => Some(*c),
            None if self.by_address.len() >= MAX_TRACKED => self.overflow,
            None => None,
        };
        let c = self.live(count, now)?;
        (c.failures >= self.limit.max_failures).then(|| c.since + self.limit.window - now)
    }

    /// `address` gave a wrong password at `now`.
    pub fn record_failure(&mut self, now: Instant, address: &str) {
        if self.limit.max_failures == 0 {
            return;
        }
        let key = address_key(address);
        if !self.by_address.contains_key(&key) && self.by_address.len() >= MAX_TRACKED {
            let window = self.limit.window;
            self.by_address.retain(|_, c| now < c.since + window);
        }
        let slot = if self.by_address.contains_key(&key) || self.by_address.len() < MAX_TRACKED {
            self.by_address.entry(key).or_insert(Count {
                since: now,
                failures: 0,
            })
        } else {
            self.overflow.get_or_insert(Count {
                since: now,
                failures: 0,
            })
        };
        if now >= slot.since + self.limit.window {
            *slot = Count {
                since: now,
                failures: 0,
            };
        }
        slot.failures = slot.failures.saturating_add(1);
    }

    /// How many addresses are counted one by one (for tests of the memory bound).
    pub fn tracked(&self) -> usize {
        self.by_address.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn attempts() -> Attempts {
        Attempts::new(FailureLimit::default())
    }

    #[test]
    fn five_failures_block_the_address_until_the_window_passes() {
        let t0 = Instant::now();
        let mut a = attempts();
        for i in 0..5 {
            assert_eq!(a.blocked(t0, "192.0.2.7"), None, "after {i} failures");
            a.record_failure(t0 + Duration::from_secs(i), "192.0.2.7");
        }
        assert_eq!(
            a.blocked(t0 + Duration::from_secs(5), "192.0.2.7"),
            Some(MIN - Duration::from_secs(5))
        );
        assert_eq!(
            a.blocked(t0 + Duration::from_secs(59), "192.0.2.7"),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            a.blocked(t0 + Duration::from_secs(5), "192.0.2.8"),
            None,
            "per address"
        );
        assert_eq!(a.blocked(t0 + MIN, "192.0.2.7"), None, "the window passed");
        // A new window starts with the next failure.
        a.record_failure(t0 + MIN, "192.0.2.7");
        assert_eq!(a.blocked(t0 + MIN, "192.0.2.7"), None);
    }

    #[test]
    fn an_ipv6_address_counts_by_its_64() {
        let t0 = Instant::now();
        let mut a = attempts();
        for i in 0..5 {
            a.record_failure(t0, &format!("2001:db8:1:2::{i}"));
        }
        assert!(a.blocked(t0, "2001:db8:1:2:ffff::1").is_some());
        assert_eq!(a.blocked(t0, "2001:db8:1:3::1"), None);
        assert_eq!(address_key("::ffff:192.0.2.1"), "192.0.2.1");
    }

    #[test]
    fn memory_is_bounded_and_the_untracked_share_one_count() {
        let t0 = Instant::now();
        let mut a = attempts();
        for i in 0..MAX_TRACKED + 10 {
            a.record_failure(
                t0,
                &format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
            );
        }
        assert_eq!(a.tracked(), MAX_TRACKED);
        // The 10 beyond the bound shared one count: 10 failures, so a new address is blocked.
        assert!(a.blocked(t0, "198.51.100.1").is_some());
        // Once the window passed, tracked entries are reclaimed for new addresses.
        a.record_failure(t0 + MIN, "198.51.100.1");
        assert_eq!(a.tracked(), 1);
        assert_eq!(a.blocked(t0 + MIN, "198.51.100.2"), None);
    }

    #[test]
    fn a_limit_of_zero_counts_nothing() {
        let t0 = Instant::now();
        let mut a = Attempts::new(FailureLimit {
            max_failures: 0,
            window: MIN,
        });
        for _ in 0..100 {
            a.record_failure(t0, "192.0.2.7");
        }
        assert_eq!(a.blocked(t0, "192.0.2.7"), None);
        assert_eq!(a.tracked(), 0);
    }
}
