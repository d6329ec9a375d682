//! Who may open a connection, an unjoined WebSocket or a join, by client address: the rules
//! behind the server's connection caps, its per-address tables and its HTTP deadline. Pure
//! logic, fed with the time; the server keeps the tables under locks and applies the answers.
//!
//! - [`address_key`]: what counts as one address (an IPv4 address; an IPv6 `/64`).
//! - [`Caps`] and [`Caps::clamp_to_files`]: the caps as configured, fitted under the
//!   process's open-file limit with a reserve for the server's own files.
//! - [`AddressCounts`]: a total and a per-address count with caps (connections, unjoined
//!   sockets); an address's entry is removed when its count falls to zero.
//! - [`JoinRate`]: join attempts per address, as a token bucket kept as one instant per
//!   address (GCRA); entries whose bucket is full again are swept, so memory stays bounded.
//! - [`RequestDeadline`]: an HTTP connection's deadline: a connection without a request in
//!   progress (its first request's headers not yet complete, or idle between requests) is
//!   closed after the request timeout.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

/// The key an address is counted under: an IPv4 address as it is (also when written as an
/// IPv4-mapped IPv6 address), an IPv6 address by its `/64` prefix (one subscriber's network;
/// a host picks addresses inside it at will).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

/// The connection caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Open TCP connections in all (HTTP, upgraded or not).
    pub max_connections: usize,
    /// Open TCP connections from one address.
    pub max_connections_per_address: usize,
    /// Upgraded WebSockets from one address that have not joined yet.
    pub max_unjoined_per_address: usize,
}

/// The caps as fitted to the open-file limit, and what was kept back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fitted {
    /// The caps in force.
    pub caps: Caps,
    /// Files kept for the server's own use (listening socket, event queue, discovery, logs,
    /// certificate files), when there is a limit.
    pub reserve: Option<u64>,
}

impl Caps {
    /// Files kept back from a limit of `limit` open files: a tenth, at least 32 and at most 256.
    pub fn reserve_for(limit: u64) -> u64 {
        (limit / 10).clamp(32, 256)
    }

    /// Fits the caps under an open-file limit (`None`: no limit known). Each socket is one
    /// file, so the total is at most the limit less the reserve; one address may hold at most
    /// half of the total, so one address can never lock out another; unjoined sockets are at
    /// most the address's connections. Every cap is at least 1.
    pub fn clamp_to_files(self, open_files_limit: Option<u64>) -> Fitted {
        let (max_connections, reserve) = match open_files_limit {
            Some(limit) => {
                let reserve = Self::reserve_for(limit);
                let room = usize::try_from(limit.saturating_sub(reserve)).unwrap_or(usize::MAX);
                (self.max_connections.min(room), Some(reserve))
            }
            None => (self.max_connections, None),
        };
        let max_connections = max_connections.max(1);
        let max_connections_per_address = self
            .max_connections_per_address
            .min(max_connections / 2)
            .max(1);
        let max_unjoined_per_address = self
            .max_unjoined_per_address
            .min(max_connections_per_address)
            .max(1);
        Fitted {
            caps: Caps {
                max_connections,
                max_connections_per_address,
                max_unjoined_per_address,
            },
            reserve,
        }
    }
}

/// Why [`AddressCounts::try_acquire`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The total is at its cap.
    Total,
    /// This address is at its cap.
    PerAddress,
}

impl Refusal {
    /// A short name for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Total => "max_connections",
            Refusal::PerAddress => "per_address",
        }
    }
}

/// A total count and a count per address, each with a cap. Addresses are keys from
/// [`address_key`]; an entry exists only while its count is above zero.
#[derive(Debug, Clone)]
pub struct AddressCounts {
    max_total: usize,
    max_per_address: usize,
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

impl AddressCounts {
    /// Empty counts with these caps.
    pub fn new(max_total: usize, max_per_address: usize) -> Self {
        AddressCounts {
            max_total,
            max_per_address,
            total: 0,
            per_address: HashMap::new(),
        }
    }

    /// Counts one more for `key` if neither cap is reached. With `exempt`, only the total
    /// cap applies (a trusted proxy carries many clients).
    pub fn try_acquire(&mut self, key: IpAddr, exempt: bool) -> Result<(), Refusal> {
        if self.total >= self.max_total {
            return Err(Refusal::Total);
        }
        let count = self.per_address.entry(key).or_insert(0);
        if !exempt && *count >= self.max_per_address {
            return Err(Refusal::PerAddress);
        }
        *count += 1;
        self.total += 1;
        Ok(())
    }

    /// Counts one less for `key` (one it acquired); the entry goes at zero.
    pub fn release(&mut self, key: IpAddr) {
        if let Some(count) = self.per_address.get_mut(&key) {
            *count -= 1;
            self.total -= 1;
            if *count == 0 {
                self.per_address.remove(&key);
            }
        }
    }

    /// The total now.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The count of one address now.
    pub fn count(&self, key: IpAddr) -> usize {
        self.per_address.get(&key).copied().unwrap_or(0)
    }

    /// How many addresses have an entry (the table's size).
    pub fn addresses(&self) -> usize {
        self.per_address.len()
    }
}

/// Join attempts per address: `rate` a second on average, bursts of `burst`. Each address
/// is one instant, its bucket's "theoretical arrival time" (GCRA): an attempt is allowed
/// while that instant is at most `(burst - 1) / rate` ahead of now, and pushes it `1 / rate`
/// further. An entry at or behind now is a full bucket, the same as none: the table is swept
/// of those whenever it has doubled since the last sweep, so it holds only the addresses
/// that joined in the last `burst / rate`.
#[derive(Debug, Clone)]
pub struct JoinRate {
    interval: Option<Duration>,
    tolerance: Duration,
    tat: HashMap<IpAddr, Instant>,
    sweep_at: usize,
}

/// Entries at which the first sweep happens.
const FIRST_SWEEP: usize = 1024;

impl JoinRate {
    /// Allows `rate` attempts a second per address with bursts of `burst`; a `rate` of 0
    /// turns the limit off.
    pub fn new(rate: u32, burst: u32) -> Self {
        let interval = (rate > 0).then(|| Duration::from_secs(1) / rate);
        let tolerance = interval.unwrap_or_default() * burst.max(1).saturating_sub(1);
        JoinRate {
            interval,
            tolerance,
            tat: HashMap::new(),
            sweep_at: FIRST_SWEEP,
        }
    }

    /// One join attempt from `key` at `now`: `Ok`, or `Err(wait)` with how long until the
    /// next attempt would be allowed.
    pub fn try_join(&mut self, now: Instant, key: IpAddr) -> Result<(), Duration> {
        let Some(interval) = self.interval else {
            return Ok(());
        };
        let tat = self.tat.get(&key).copied().unwrap_or(now).max(now);
        let allowed_from = tat.checked_sub(self.tolerance).unwrap_or(now);
        if now < allowed_from {
            return Err(allowed_from - now);
        }
        self.tat.insert(key, tat + interval);
        if self.tat.len() >= self.sweep_at {
            self.tat.retain(|_, t| *t > now);
            self.sweep_at = (self.tat.len() * 2).max(FIRST_SWEEP);
        }
        Ok(())
    }

    /// How many addresses the table holds.
    pub fn addresses(&self) -> usize {
        self.tat.len()
    }
}

/// An HTTP connection's deadline. While no request is in progress (its first request's
/// headers, TLS handshake included, are not complete yet; or it idles between requests),
/// the connection must see a request within `timeout` or be closed. While a request is in
/// progress the handler's own timeout bounds it.
#[derive(Debug, Clone)]
pub struct RequestDeadline {
    timeout: Duration,
    in_progress: usize,
    idle_since: Instant,
}

impl RequestDeadline {
    /// A connection accepted at `now`.
    pub fn new(now: Instant, timeout: Duration) -> Self {
        RequestDeadline {
            timeout,
            in_progress: 0,
            idle_since: now,
        }
    }

    /// A request's headers are complete and it is being handled.
    pub fn request_started(&mut self) {
        self.in_progress += 1;
    }

    /// A request was answered (or abandoned) at `now`.
    pub fn request_ended(&mut self, now: Instant) {
        self.in_progress = self.in_progress.saturating_sub(1);
        if self.in_progress == 0 {
            self.idle_since = now;
        }
    }

    /// When the connection must be closed unless a request starts first; `None` while a
    /// request is in progress.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.in_progress == 0).then(|| self.idle_since + self.timeout)
    }

    /// Whether the connection must be closed at `now`.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.poll_timeout().is_some_and(|deadline| now >= deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_counts_by_its_64_prefix_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            address_key(ip("2001:db8:1:2:aaaa::1")),
            address_key(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            address_key(ip("2001:db8:1:2::1")),
            address_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(address_key(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(address_key(ip("10.1.2.3")), ip("10.1.2.3"));
    }

    #[test]
    fn caps_fit_under_the_open_file_limit_and_one_address_gets_half_at_most() {
        let configured = Caps {
            max_connections: 10_000,
            max_connections_per_address: 256,
            max_unjoined_per_address: 32,
        };
        let fitted = configured.clamp_to_files(Some(512));
        assert_eq!(fitted.reserve, Some(51));
        assert_eq!(fitted.caps.max_connections, 461);
        assert_eq!(fitted.caps.max_connections_per_address, 230);
        assert_eq!(fitted.caps.max_unjoined_per_address, 32);
        // A generous limit leaves the configured caps alone.
        let fitted = configured.clamp_to_files(Some(1 << 20));
        assert_eq!(fitted.caps, configured);
        assert_eq!(fitted.reserve, Some(256));
        assert_eq!(configured.clamp_to_files(None).caps, configured);
        // A tiny limit still leaves one of each.
        let fitted = configured.clamp_to_files(Some(20));
        assert_eq!(
            fitted.caps,
            Caps {
                max_connections: 1,
                max_connections_per_address: 1,
                max_unjoined_per_address: 1
            }
        );
        // Per address never above half the total, unjoined never above per address.
        let fitted = Caps {
            max_connections: 100,
            max_connections_per_address: 100,
            max_unjoined_per_address: 100,
        }
        .clamp_to_files(None);
        assert_eq!(fitted.caps.max_connections_per_address, 50);
        assert_eq!(fitted.caps.max_unjoined_per_address, 50);
    }

    #[test]
    fn counts_refuse_at_each_cap_and_forget_addresses_at_zero() {
        let mut c = AddressCounts::new(3, 2);
        let (a, b, p) = (ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.9"));
        assert_eq!(c.try_acquire(a, false), Ok(()));
        assert_eq!(c.try_acquire(a, false), Ok(()));
        assert_eq!(c.try_acquire(a, false), Err(Refusal::PerAddress));
        assert_eq!(c.try_acquire(b, false), Ok(()));
        assert_eq!(c.try_acquire(b, false), Err(Refusal::Total));
        assert_eq!((c.total(), c.count(a), c.count(b)), (3, 2, 1));
        c.release(a);
        c.release(a);
        c.release(b);
        assert_eq!((c.total(), c.addresses()), (0, 0), "no entry left behind");
        // An exempt address (a trusted proxy) is held to the total only.
        for _ in 0..3 {
            assert_eq!(c.try_acquire(p, true), Ok(()));
        }
        assert_eq!(c.try_acquire(p, true), Err(Refusal::Total));
        // Releasing what was never acquired changes nothing.
        c.release(a);
        assert_eq!(c.total(), 3);
    }

    #[test]
    fn join_rate_allows_the_burst_then_the_rate_per_address_on_a_virtual_clock() {
        let t0 = Instant::now();
        let mut r = JoinRate::new(2, 3);
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        for _ in 0..3 {
            assert_eq!(r.try_join(t0, a), Ok(()));
        }
        let wait = r.try_join(t0, a).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Another address has its own bucket.
        assert_eq!(r.try_join(t0, b), Ok(()));
        // Refusals do not dig the hole deeper: half a second later one more is allowed.
        assert!(r.try_join(t0 + Duration::from_millis(499), a).is_err());
        assert_eq!(r.try_join(t0 + Duration::from_millis(500), a), Ok(()));
        assert!(r.try_join(t0 + Duration::from_millis(600), a).is_err());
        // After burst / rate the bucket is full again.
        let later = t0 + Duration::from_secs(3);
        for _ in 0..3 {
            assert_eq!(r.try_join(later, a), Ok(()));
        }
        assert!(r.try_join(later, a).is_err());
        // Off at rate 0.
        let mut off = JoinRate::new(0, 1);
        for _ in 0..1000 {
            assert_eq!(off.try_join(t0, a), Ok(()));
        }
        assert_eq!(off.addresses(), 0);
    }

    #[test]
    fn the_join_table_forgets_addresses_whose_bucket_is_full_again() {
        let t0 = Instant::now();
        let mut r = JoinRate::new(10, 5);
        for i in 0..100_000u32 {
            // Each address joins once; a second later its bucket is full again.
            let now = t0 + Duration::from_millis(u64::from(i));
            r.try_join(now, IpAddr::from(i.to_be_bytes())).unwrap();
            assert!(r.addresses() <= 2 * FIRST_SWEEP + 200, "{}", r.addresses());
        }
    }

    #[test]
    fn a_connection_without_a_request_in_progress_is_closed_at_the_timeout() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(10);
        let mut d = RequestDeadline::new(t0, timeout);
        // Headers not complete: the deadline runs from the accept.
        assert_eq!(d.poll_timeout(), Some(t0 + timeout));
        assert!(!d.is_expired(t0 + Duration::from_millis(9_999)));
        assert!(d.is_expired(t0 + timeout));
        // A request in progress has no connection deadline.
        d.request_started();
        assert_eq!(d.poll_timeout(), None);
        assert!(!d.is_expired(t0 + Duration::from_secs(60)));
        // Idle after the answer: the deadline runs from then (keep-alive idle).
        let t1 = t0 + Duration::from_secs(4);
        d.request_ended(t1);
        assert_eq!(d.poll_timeout(), Some(t1 + timeout));
        assert!(!d.is_expired(t0 + timeout));
        assert!(d.is_expired(t1 + timeout));
    }
}
