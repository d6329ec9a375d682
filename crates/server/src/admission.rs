//! Who a connection is and whether it may come in: the client address behind trusted
//! proxies, and the server's per-address tables (connections, unjoined WebSockets, join
//! attempts) under their locks. The rules themselves are the core's
//! ([`loudsync_core::admission`]); this file holds the tables and the permits that give a
//! count back when they drop.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderMap;
use ipnet::IpNet;
use loudsync_core::admission::{address_key, AddressCounts, Caps, Fitted, JoinRate, Refusal};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::ServerConfig;

/// The client's address as the server counts it (after [`client_address`]): a request
/// extension set on every request, for handlers and middleware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// An address or a range of them (`10.0.0.7`, `10.0.0.0/8`, `::1`, `fd00::/8`), as given to
/// `--trusted-proxy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRange(IpNet);

impl AddressRange {
    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

impl FromStr for AddressRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(AddressRange(IpNet::from(ip.to_canonical())));
        }
        s.parse::<IpNet>()
            .map(|net| AddressRange(net.trunc()))
            .map_err(|_| format!("`{s}` is not an IP address or a CIDR range (e.g. 10.0.0.0/8)"))
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.prefix_len() == self.0.max_prefix_len() {
            write!(f, "{}", self.0.addr())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl Serialize for AddressRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AddressRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One `X-Forwarded-For` entry: an address, with or without a port (`[v6]:port`).
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    entry
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|sa| sa.ip().to_canonical())
}

/// The client's address. `X-Forwarded-For` counts only when the TCP peer is a trusted proxy;
/// then the entries are read from the right (the nearest hop first), skipping trusted
/// proxies, and the first address that is not one is the client. An entry that is not an
/// address stops the walk at the last address read (what the proxies vouched for). Without a
/// trusted peer the header is ignored: anybody can write it.
pub fn client_address<'a>(
    peer: IpAddr,
    forwarded_for: impl DoubleEndedIterator<Item = &'a str>,
    trusted: &[AddressRange],
) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|r| r.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let entries: Vec<&str> = forwarded_for.flat_map(|value| value.split(',')).collect();
    let mut client = peer;
    for entry in entries.into_iter().rev() {
        if entry.trim().is_empty() {
            continue;
        }
        let Some(ip) = parse_forwarded(entry) else {
            return client;
        };
        client = ip;
        if !is_trusted(ip) {
            return ip;
        }
    }
    client
}

/// The open-file limit now in force for this process (its soft limit), if there is one.
pub fn open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one `rlimit` into the struct it is given.
        let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
        if ok && limit.rlim_cur != libc::RLIM_INFINITY {
            #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every unix
            return Some(limit.rlim_cur as u64);
        }
        None
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// A counted place in one of the tables; the count is given back when it drops.
pub struct Permit {
    table: Arc<Mutex<AddressCounts>>,
    key: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.table
            .lock()
            .expect("admission table")
            .release(self.key);
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Permit({})", self.key)
    }
}

/// The server's admission tables: open connections (by TCP peer), unjoined WebSockets and
/// join attempts (by client address).
pub struct Admission {
    fitted: Fitted,
    open_files_limit: Option<u64>,
    connections: Arc<Mutex<AddressCounts>>,
    unjoined: Arc<Mutex<AddressCounts>>,
    joins: Mutex<JoinRate>,
    trusted: Vec<AddressRange>,
    warned_untrusted_forwarded: AtomicBool,
}

impl Admission {
    /// The tables for these settings, with the caps fitted under `open_files_limit`.
    pub fn new(config: &ServerConfig, open_files_limit: Option<u64>) -> Self {
        let fitted = Caps {
            max_connections: config.max_connections,
            max_connections_per_address: config.max_connections_per_address,
            max_unjoined_per_address: config.max_unjoined_per_address,
        }
        .clamp_to_files(open_files_limit);
        let caps = fitted.caps;
        Admission {
            fitted,
            open_files_limit,
            connections: Arc::new(Mutex::new(AddressCounts::new(
                caps.max_connections,
                caps.max_connections_per_address,
            ))),
            unjoined: Arc::new(Mutex::new(AddressCounts::new(
                usize::MAX,
                caps.max_unjoined_per_address,
            ))),
            joins: Mutex::new(JoinRate::new(
                config.join_rate_per_address,
                config.join_burst_per_address,
            )),
            trusted: config.trusted_proxies.clone(),
            warned_untrusted_forwarded: AtomicBool::new(false),
        }
    }

    /// The caps in force (after fitting them under the open-file limit).
    pub fn caps(&self) -> Caps {
        self.fitted.caps
    }

    /// Files kept back for the server's own use, when there is an open-file limit.
    pub fn reserve(&self) -> Option<u64> {
        self.fitted.reserve
    }

    /// The open-file limit the caps were fitted under.
    pub fn open_files_limit(&self) -> Option<u64> {
        self.open_files_limit
    }

    /// Whether `ip` is a configured trusted proxy.
    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|r| r.contains(ip))
    }

    /// A place for one TCP connection from `peer`; a trusted proxy is held to the total cap
    /// only. The permit must live as long as the socket.
    pub fn try_connection(&self, peer: IpAddr) -> Result<Permit, Refusal> {
        let key = address_key(peer.to_canonical());
        let exempt = self.is_trusted_proxy(peer);
        self.connections
            .lock()
            .expect("admission table")
            .try_acquire(key, exempt)?;
        Ok(Permit {
            table: self.connections.clone(),
            key,
        })
    }

    /// Open TCP connections now (all, and from `peer`'s address).
    pub fn connections(&self, peer: IpAddr) -> (usize, usize) {
        let table = self.connections.lock().expect("admission table");
        (table.total(), table.count(address_key(peer.to_canonical())))
    }

    /// A place for one upgraded, not yet joined WebSocket from `client`, given back when the
    /// member joins or the socket ends.
    pub fn try_unjoined(&self, client: IpAddr) -> Result<Permit, Refusal> {
        let key = address_key(client.to_canonical());
        self.unjoined
            .lock()
            .expect("admission table")
            .try_acquire(key, false)?;
        Ok(Permit {
            table: self.unjoined.clone(),
            key,
        })
    }

    /// One join attempt from `client` at `now`: `Err(wait)` when over the per-address rate.
    pub fn try_join(&self, now: Instant, client: IpAddr) -> Result<(), Duration> {
        let key = address_key(client.to_canonical());
        self.joins
            .lock()
            .expect("admission table")
            .try_join(now, key)
    }

    /// The client address of a request from `peer` (see [`client_address`]). Warns once when
    /// a loopback peer that is not a trusted proxy sends `X-Forwarded-For`: a reverse proxy
    /// on this machine that is not configured makes every client look like loopback.
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let forwarded = headers.get_all("x-forwarded-for");
        let peer = peer.to_canonical();
        if !self.is_trusted_proxy(peer) {
            if peer.is_loopback()
                && forwarded.iter().next().is_some()
                && !self
                    .warned_untrusted_forwarded
                    .swap(true, Ordering::Relaxed)
            {
                tracing::warn!(
                    %peer,
                    "a request from {peer} carries X-Forwarded-For, but {peer} is not a trusted \
                     proxy: the header is ignored and every client of that proxy counts as \
                     {peer}, a loopback address, so without --admin-token they all pass the \
                     admin API's loopback rule; start the server with --trusted-proxy {peer} \
                     (this warning is logged once)"
                );
            }
            return peer;
        }
        client_address(
            peer,
            forwarded.iter().filter_map(|v| v.to_str().ok()),
            &self.trusted,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ranges(list: &[&str]) -> Vec<AddressRange> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn ranges_parse_addresses_and_cidrs_and_print_back() {
        let r: AddressRange = "10.0.0.0/8".parse().unwrap();
        assert!(r.contains(ip("10.200.0.1")));
        assert!(!r.contains(ip("11.0.0.1")));
        assert!(r.contains(ip("::ffff:10.1.1.1")), "mapped IPv4 is IPv4");
        assert_eq!(r.to_string(), "10.0.0.0/8");
        let one: AddressRange = "127.0.0.1".parse().unwrap();
        assert_eq!(one.to_string(), "127.0.0.1");
        assert!(!one.contains(ip("127.0.0.2")));
        let v6: AddressRange = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")));
        // Host bits are dropped: 10.1.2.3/8 is 10.0.0.0/8.
        assert_eq!(
            "10.1.2.3/8".parse::<AddressRange>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        let err = "proxy.local".parse::<AddressRange>().unwrap_err();
        assert!(err.contains("not an IP address or a CIDR range"), "{err}");
        assert!("10.0.0.0/33".parse::<AddressRange>().is_err());
    }

    #[test]
    fn forwarded_for_counts_only_from_a_trusted_peer() {
        let none: Vec<AddressRange> = Vec::new();
        let lo = ranges(&["127.0.0.1"]);
        let xff = ["203.0.113.9"];
        // No trusted proxies: the header is ignored, whoever sends it.
        assert_eq!(
            client_address(ip("127.0.0.1"), xff.into_iter(), &none),
            ip("127.0.0.1")
        );
        // From the trusted proxy: the client it names.
        assert_eq!(
            client_address(ip("127.0.0.1"), xff.into_iter(), &lo),
            ip("203.0.113.9")
        );
        // From anybody else: ignored.
        assert_eq!(
            client_address(ip("198.51.100.1"), xff.into_iter(), &lo),
            ip("198.51.100.1")
        );
        // A trusted proxy with no header is the client itself.
        assert_eq!(
            client_address(ip("127.0.0.1"), std::iter::empty(), &lo),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn forwarded_for_takes_the_rightmost_address_that_is_not_a_trusted_proxy() {
        let trusted = ranges(&["10.0.0.0/8", "127.0.0.1"]);
        // The client forged the first entry; the proxies appended the rest.
        let headers = ["127.0.0.1, 198.51.100.4", "10.0.0.5"];
        assert_eq!(
            client_address(ip("127.0.0.1"), headers.into_iter(), &trusted),
            ip("198.51.100.4")
        );
        // Ports and brackets as some proxies write them.
        assert_eq!(
            client_address(
                ip("10.0.0.2"),
                ["[2001:db8::7]:4711, 10.0.0.3:80"].into_iter(),
                &trusted
            ),
            ip("2001:db8::7")
        );
        // Garbage stops the walk at what the proxies vouched for.
        assert_eq!(
            client_address(ip("10.0.0.2"), ["unknown, 10.0.0.3"].into_iter(), &trusted),
            ip("10.0.0.3")
        );
        // Only proxies: the farthest one.
        assert_eq!(
            client_address(ip("10.0.0.2"), ["10.0.0.9, 10.0.0.3"].into_iter(), &trusted),
            ip("10.0.0.9")
        );
        // A mapped IPv4 peer is the IPv4 address.
        assert_eq!(
            client_address(
                ip("::ffff:127.0.0.1"),
                ["203.0.113.1"].into_iter(),
                &trusted
            ),
            ip("203.0.113.1")
        );
    }

    #[test]
    fn permits_give_their_place_back_when_they_drop() {
        let config = ServerConfig {
            max_connections: 4,
            max_connections_per_address: 2,
            max_unjoined_per_address: 1,
            trusted_proxies: ranges(&["10.0.0.1"]),
            ..ServerConfig::default()
        };
        let a = Admission::new(&config, None);
        let first = a.try_connection(ip("192.0.2.1")).unwrap();
        let _second = a.try_connection(ip("192.0.2.1")).unwrap();
        assert_eq!(
            a.try_connection(ip("192.0.2.1")).unwrap_err(),
            Refusal::PerAddress
        );
        drop(first);
        let _third = a.try_connection(ip("192.0.2.1")).unwrap();
        // The trusted proxy is held to the total only.
        let _p1 = a.try_connection(ip("10.0.0.1")).unwrap();
        let _p2 = a.try_connection(ip("10.0.0.1")).unwrap();
        assert_eq!(
            a.try_connection(ip("10.0.0.1")).unwrap_err(),
            Refusal::Total
        );
        let u = a.try_unjoined(ip("192.0.2.1")).unwrap();
        assert!(a.try_unjoined(ip("192.0.2.1")).is_err());
        assert!(a.try_unjoined(ip("192.0.2.2")).is_ok());
        drop(u);
        assert!(a.try_unjoined(ip("192.0.2.1")).is_ok());
        assert_eq!(a.connections(ip("192.0.2.1")), (4, 2));
    }
}
