//! What the SDK's media drivers share: a UDP socket connected to the one peer they talk to
//! (so a datagram from any other address never reaches the state machine), sends that leave
//! an ICMP bounce to the state machine's retries, the wake-up sleep, and the clocks: the
//! `Now` the sans-IO roles are fed, and the host's monotonic clock's zero, which DATA
//! timestamps and the receiver's counter count from (D22, D30).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use loudsync_core::Now;
use tokio::net::UdpSocket;

/// A UDP socket of `peer`'s family (on loopback when `peer` is), connected to `peer`.
pub(crate) async fn connect(peer: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr = match (peer.ip().is_loopback(), peer) {
        (true, SocketAddr::V4(_)) => (Ipv4Addr::LOCALHOST, 0).into(),
        (true, SocketAddr::V6(_)) => (Ipv6Addr::LOCALHOST, 0).into(),
        (false, SocketAddr::V4(_)) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        (false, SocketAddr::V6(_)) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(peer).await?;
    Ok(socket)
}

/// Sends one datagram; a bounce (nothing listening) is left to the state machine's retries.
pub(crate) async fn send(socket: &UdpSocket, datagram: &[u8]) -> io::Result<()> {
    match socket.send(datagram).await {
        Ok(_) => Ok(()),
        Err(error) if bounced(&error) => Ok(()),
        Err(error) => Err(error),
    }
}

/// An ICMP error reported on the connected socket: the peer is not (yet) there.
pub(crate) fn bounced(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
    )
}

/// Sleeps until `at`, or forever when there is nothing to wake for.
pub(crate) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// The current time as the sans-IO roles take it.
pub(crate) fn now() -> Now {
    Now {
        instant: Instant::now(),
        unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0),
    }
}

/// The [`Instant`] at which the host's monotonic clock (`CLOCK_MONOTONIC` on Linux, the
/// clock std's `Instant` reads) was zero. DATA timestamps and the receiver's counter are
/// nanoseconds since it (D22, D30), so two processes on one host share a time base and the
/// time in flight they compute is the real one-way delay. Where the clock cannot be read, the
/// first call's moment (a per-process origin: jitter stays right, time in flight does not).
pub fn host_monotonic_origin() -> Instant {
    static FALLBACK: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    monotonic_origin().unwrap_or_else(|| *FALLBACK.get_or_init(Instant::now))
}

/// `Instant::now()` minus the `CLOCK_MONOTONIC` reading.
#[cfg(target_os = "linux")]
fn monotonic_origin() -> Option<Instant> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live, writable timespec; clock_gettime only writes it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let now = Instant::now();
    if rc != 0 {
        return None;
    }
    let since_zero = std::time::Duration::new(
        u64::try_from(ts.tv_sec).ok()?,
        u32::try_from(ts.tv_nsec).ok()?,
    );
    now.checked_sub(since_zero)
}

#[cfg(not(target_os = "linux"))]
fn monotonic_origin() -> Option<Instant> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_host_monotonic_origin_is_stable_and_in_the_past() {
        let a = host_monotonic_origin();
        let b = host_monotonic_origin();
        let skew = if a > b { a - b } else { b - a };
        assert!(skew < Duration::from_millis(1), "{skew:?}");
        assert!(a <= Instant::now());
    }
}
