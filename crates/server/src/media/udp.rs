//! Datagram I/O for the media loops (issue 13): batched receive and send on a tokio
//! [`UdpSocket`], with a plain one-datagram-per-call fallback.
//!
//! The media loops move many small datagrams: a 2020-byte frame is three datagrams, and the
//! relay sends each publisher datagram to every subscriber (1-to-N fan-out). [`UdpIo`] takes
//! them in batches:
//!
//! - [`UdpIo::recv_batch`] waits until the socket is readable and then, on Linux, takes up to
//!   [`BATCH`] datagrams with their source addresses in one `recvmmsg(2)` into buffers kept
//!   between calls; elsewhere (or with [`Batching::Off`]) one `recv_from`.
//! - [`UdpIo::send_batch`] sends a list of `(destination, bytes)` pairs (the same bytes may go
//!   to many destinations) with `sendmmsg(2)`, [`BATCH`] at a time; elsewhere (or with
//!   [`Batching::Off`]) one `send_to` each.
//!
//! Both go through [`UdpSocket::try_io`] after the readiness future, so tokio's readiness
//! tracking stays right: `EAGAIN` clears readiness and the loop waits for the socket to become
//! writable (or readable) again rather than spinning. `sendmmsg` may send fewer datagrams than
//! asked; the rest are sent by the next call. A datagram the kernel refuses (an error other
//! than `EAGAIN`) is skipped and counted in [`UdpIo::send_errors`]; nothing else is dropped
//! here (the kernel may still drop what a full receive buffer cannot take: that is UDP).
//!
//! [`Batching::from_env`] reads `LOUDSYNC_MEDIA_BATCHING=off`, so the benchmark can compare
//! batched and unbatched I/O with the same binary. The `unsafe` code (the two system calls,
//! reading a kernel-written socket address) is all in the private `sys` module.

use std::io;
use std::net::SocketAddr;

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams taken or sent per system call when batching.
pub const BATCH: usize = 32;

/// The largest UDP payload a receive buffer holds (IPv4's maximum, 65507, rounded up).
pub const SLOT_SIZE: usize = 65_536;

/// The environment variable that turns batching off (`off`, `0` or `false`).
pub const BATCHING_ENV: &str = "LOUDSYNC_MEDIA_BATCHING";

/// Whether to use `recvmmsg`/`sendmmsg` (Linux) or one datagram per system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batching {
    /// Batched system calls where the platform has them (Linux); elsewhere as `Off`.
    On,
    /// One `recv_from` / `send_to` per datagram.
    Off,
}

impl Batching {
    /// `Off` when [`BATCHING_ENV`] is `off`, `0` or `false`, else `On`.
    pub fn from_env() -> Batching {
        match std::env::var(BATCHING_ENV) {
            Ok(v)
                if matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "off" | "0" | "false"
                ) =>
            {
                Batching::Off
            }
            _ => Batching::On,
        }
    }

    /// Whether batched system calls are actually used on this platform.
    fn batched(self) -> bool {
        self == Batching::On && cfg!(target_os = "linux")
    }
}

/// A UDP socket with batched datagram I/O (see the module comment).
#[derive(Debug)]
pub struct UdpIo {
    socket: UdpSocket,
    batching: Batching,
    /// `BATCH` receive slots of `SLOT_SIZE` bytes, back to back.
    buffers: Vec<u8>,
    /// The received datagrams: slot index order, (source, length).
    received: Vec<(SocketAddr, usize)>,
    send_errors: u64,
}

/// The datagrams of one [`UdpIo::recv_batch`], borrowed from the receive buffers.
#[derive(Debug)]
pub struct RecvBatch<'a> {
    buffers: &'a [u8],
    received: &'a [(SocketAddr, usize)],
}

impl<'a> RecvBatch<'a> {
    /// How many datagrams arrived.
    pub fn len(&self) -> usize {
        self.received.len()
    }

    /// None arrived (never the case for a successful receive).
    pub fn is_empty(&self) -> bool {
        self.received.is_empty()
    }

    /// Each datagram with its source address, in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &'a [u8])> + 'a {
        let buffers = self.buffers;
        self.received
            .iter()
            .enumerate()
            .map(move |(slot, &(from, len))| {
                let start = slot * SLOT_SIZE;
                (from, &buffers[start..start + len])
            })
    }
}

impl UdpIo {
    /// Wraps a bound socket.
    pub fn new(socket: UdpSocket, batching: Batching) -> UdpIo {
        let slots = if batching.batched() { BATCH } else { 1 };
        UdpIo {
            socket,
            batching,
            buffers: vec![0; slots * SLOT_SIZE],
            received: Vec::with_capacity(slots),
            send_errors: 0,
        }
    }

    /// The socket.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The batching asked for.
    pub fn batching(&self) -> Batching {
        self.batching
    }

    /// Datagrams the kernel refused to send so far (skipped by [`UdpIo::send_batch`]).
    pub fn send_errors(&self) -> u64 {
        self.send_errors
    }

    /// Waits for at least one datagram and returns every datagram available at once (up to
    /// [`BATCH`] when batching, else one). Errors are the socket's (an ICMP error reported
    /// for an earlier send is returned, as `recv_from` does; callers usually go on).
    pub async fn recv_batch(&mut self) -> io::Result<RecvBatch<'_>> {
        self.received.clear();
        if self.batching.batched() {
            loop {
                self.socket.readable().await?;
                let buffers = &mut self.buffers;
                let received = &mut self.received;
                let socket = &self.socket;
                match socket.try_io(Interest::READABLE, || {
                    sys::recv_mmsg(socket, buffers, SLOT_SIZE, received)
                }) {
                    Ok(_) => break,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
        } else {
            let (len, from) = self
                .socket
                .recv_from(&mut self.buffers[..SLOT_SIZE])
                .await?;
            self.received.push((from, len));
        }
        Ok(RecvBatch {
            buffers: &self.buffers,
            received: &self.received,
        })
    }

    /// Sends every datagram of `datagrams` (destination, bytes), in order, waiting while the
    /// socket's send buffer is full. Returns how many were sent; the others were refused by
    /// the kernel and are counted in [`UdpIo::send_errors`].
    pub async fn send_batch(&mut self, datagrams: &[(SocketAddr, &[u8])]) -> usize {
        let (sent, failed) = if self.batching.batched() {
            send_all(&mut MmsgSender(&self.socket), datagrams).await
        } else {
            send_all(&mut OneByOne(&self.socket), datagrams).await
        };
        self.send_errors += failed as u64;
        sent
    }
}

/// One attempt at sending the head of a batch, and the wait for the socket to take more.
trait BatchSender {
    /// Sends a prefix of `datagrams` without blocking: how many went, `WouldBlock` when the
    /// send buffer is full, another error when the kernel refused the first one.
    fn try_send(&mut self, datagrams: &[(SocketAddr, &[u8])]) -> io::Result<usize>;
    /// Waits until the socket is worth another try.
    async fn writable(&mut self) -> io::Result<()>;
}

/// Sends all of `datagrams` through `sender`: partial sends continue where they stopped,
/// `WouldBlock` waits for writability, a refused datagram is skipped and counted. Returns
/// (sent, refused).
async fn send_all<S: BatchSender>(
    sender: &mut S,
    datagrams: &[(SocketAddr, &[u8])],
) -> (usize, usize) {
    let (mut sent, mut refused) = (0, 0);
    let mut next = 0;
    while next < datagrams.len() {
        let end = datagrams.len().min(next + BATCH);
        match sender.try_send(&datagrams[next..end]) {
            Ok(n) if n > 0 => {
                sent += n;
                next += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Err(e) = sender.writable().await {
                    tracing::debug!(error = %e, "media socket not writable; datagrams refused");
                    refused += datagrams.len() - next;
                    break;
                }
            }
            result => {
                let error = result.err();
                tracing::debug!(to = %datagrams[next].0, error = ?error, "media datagram refused");
                refused += 1;
                next += 1;
            }
        }
    }
    (sent, refused)
}

/// `sendmmsg` through tokio's readiness.
struct MmsgSender<'a>(&'a UdpSocket);

impl BatchSender for MmsgSender<'_> {
    fn try_send(&mut self, datagrams: &[(SocketAddr, &[u8])]) -> io::Result<usize> {
        let socket = self.0;
        socket.try_io(Interest::WRITABLE, || sys::send_mmsg(socket, datagrams))
    }

    async fn writable(&mut self) -> io::Result<()> {
        self.0.writable().await
    }
}

/// One `send_to` per datagram.
struct OneByOne<'a>(&'a UdpSocket);

impl BatchSender for OneByOne<'_> {
    fn try_send(&mut self, datagrams: &[(SocketAddr, &[u8])]) -> io::Result<usize> {
        let (to, bytes) = datagrams[0];
        self.0.try_send_to(bytes, to).map(|_| 1)
    }

    async fn writable(&mut self) -> io::Result<()> {
        self.0.writable().await
    }
}

/// The system calls. Everything `unsafe` in this module is here.
/// What the media sockets ask for as their kernel buffers (`SO_RCVBUF`, `SO_SNDBUF`): 4 MiB.
/// The default (`net.core.rmem_default`, 208 KiB on Linux) holds about 90 datagrams of 1 400
/// bytes, 2.5 ms of input at 400 Mbit/s: one scheduler slice lost to another process is enough
/// to overflow it. The kernel caps the request at `net.core.rmem_max` / `wmem_max`.
pub const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// Asks the kernel for [`SOCKET_BUFFER_BYTES`] of receive and send buffer on `socket` and
/// returns what it granted (receive, send), as the kernel reports them (Linux doubles the
/// request for its own bookkeeping, then caps it).
pub fn enlarge_buffers(socket: &std::net::UdpSocket) -> io::Result<(usize, usize)> {
    let socket = socket2::SockRef::from(socket);
    socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES)?;
    socket.set_send_buffer_size(SOCKET_BUFFER_BYTES)?;
    Ok((socket.recv_buffer_size()?, socket.send_buffer_size()?))
}

#[cfg(target_os = "linux")]
mod sys {
    use std::io;
    use std::mem::{size_of, zeroed};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::AsRawFd;

    use tokio::net::UdpSocket;

    use super::BATCH;

    /// One `recvmmsg(MSG_DONTWAIT)` into `buffers` (slots of `slot` bytes): pushes (source,
    /// length) per datagram onto `received`, returns how many arrived.
    pub(super) fn recv_mmsg(
        socket: &UdpSocket,
        buffers: &mut [u8],
        slot: usize,
        received: &mut Vec<(SocketAddr, usize)>,
    ) -> io::Result<usize> {
        let count = (buffers.len() / slot).min(BATCH);
        // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs for which all-zero
        // bytes are a valid value.
        let mut names: [libc::sockaddr_storage; BATCH] = unsafe { zeroed() };
        let mut iovecs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for (i, chunk) in buffers.chunks_exact_mut(slot).take(count).enumerate() {
            iovecs[i].iov_base = chunk.as_mut_ptr().cast();
            iovecs[i].iov_len = slot;
            headers[i].msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
            headers[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as _;
            headers[i].msg_hdr.msg_iov = &mut iovecs[i];
            headers[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at a live name buffer of the size it states and at one
        // iovec covering a distinct `slot`-byte chunk of `buffers`; all outlive the call, and
        // `count` <= BATCH headers are initialised. MSG_DONTWAIT: it never blocks the thread.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                count as _,
                libc::MSG_DONTWAIT as _,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for i in 0..n {
            let from = socket_addr(&names[i], headers[i].msg_hdr.msg_namelen)
                .ok_or_else(|| io::Error::other("recvmmsg: unknown source address family"))?;
            received.push((from, (headers[i].msg_len as usize).min(slot)));
        }
        Ok(n)
    }

    /// A destination in the C form `sendmmsg` takes.
    enum RawAddr {
        V4(libc::sockaddr_in),
        V6(libc::sockaddr_in6),
    }

    impl RawAddr {
        fn new(addr: SocketAddr) -> RawAddr {
            match addr {
                SocketAddr::V4(a) => RawAddr::V4(libc::sockaddr_in {
                    sin_family: libc::AF_INET as _,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                }),
                SocketAddr::V6(a) => RawAddr::V6(libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as _,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                }),
            }
        }

        fn pointer_and_len(&mut self) -> (*mut libc::c_void, libc::socklen_t) {
            match self {
                RawAddr::V4(a) => (
                    (a as *mut libc::sockaddr_in).cast(),
                    size_of::<libc::sockaddr_in>() as _,
                ),
                RawAddr::V6(a) => (
                    (a as *mut libc::sockaddr_in6).cast(),
                    size_of::<libc::sockaddr_in6>() as _,
                ),
            }
        }
    }

    /// One `sendmmsg(MSG_DONTWAIT)` of up to BATCH of `datagrams`: how many the kernel took.
    pub(super) fn send_mmsg(
        socket: &UdpSocket,
        datagrams: &[(SocketAddr, &[u8])],
    ) -> io::Result<usize> {
        let count = datagrams.len().min(BATCH);
        let mut names: Vec<RawAddr> = datagrams[..count]
            .iter()
            .map(|(to, _)| RawAddr::new(*to))
            .collect();
        // SAFETY: iovec and mmsghdr are plain C structs for which all-zero bytes are valid.
        let mut iovecs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for (i, ((_, bytes), name)) in datagrams.iter().zip(names.iter_mut()).enumerate() {
            // sendmmsg only reads the payload; the pointer is mut because iovec is shared
            // with the receive calls.
            iovecs[i].iov_base = bytes.as_ptr().cast_mut().cast();
            iovecs[i].iov_len = bytes.len();
            let (name, len) = name.pointer_and_len();
            headers[i].msg_hdr.msg_name = name;
            headers[i].msg_hdr.msg_namelen = len;
            headers[i].msg_hdr.msg_iov = &mut iovecs[i];
            headers[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: the first `count` headers point at live addresses of the length they state
        // and at one iovec each over a borrowed payload that outlives the call; the kernel
        // only reads them (and writes msg_len). MSG_DONTWAIT: it never blocks the thread.
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                count as _,
                libc::MSG_DONTWAIT as _,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// The address the kernel wrote into `name` (`len` bytes), if it is IPv4 or IPv6.
    fn socket_addr(name: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
        let len = len as usize;
        match i32::from(name.ss_family) {
            libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
                // SAFETY: the family is AF_INET, so the kernel wrote a sockaddr_in at the start
                // of the storage, which is larger and at least as aligned.
                let a = unsafe {
                    &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>()
                };
                let ip = Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes());
                Some(SocketAddrV4::new(ip, u16::from_be(a.sin_port)).into())
            }
            libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
                // SAFETY: as above, for AF_INET6 and sockaddr_in6.
                let a = unsafe {
                    &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
                };
                let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
                Some(
                    SocketAddrV6::new(
                        ip,
                        u16::from_be(a.sin6_port),
                        a.sin6_flowinfo,
                        a.sin6_scope_id,
                    )
                    .into(),
                )
            }
            _ => None,
        }
    }
}

/// Not Linux: batching is never used ([`Batching::batched`] is false), so these are never
/// called.
#[cfg(not(target_os = "linux"))]
mod sys {
    use std::io;
    use std::net::SocketAddr;

    use tokio::net::UdpSocket;

    pub(super) fn recv_mmsg(
        _: &UdpSocket,
        _: &mut [u8],
        _: usize,
        _: &mut Vec<(SocketAddr, usize)>,
    ) -> io::Result<usize> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    pub(super) fn send_mmsg(_: &UdpSocket, _: &[(SocketAddr, &[u8])]) -> io::Result<usize> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::time::Duration;

    async fn bound() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").await.unwrap()
    }

    /// Sends `per_destination` numbered datagrams to each of three receivers in one
    /// `send_batch`, and reads them all back with `recv_batch`.
    async fn fan_out(batching: Batching) {
        let mut sender = UdpIo::new(bound().await, batching);
        let mut receivers = Vec::new();
        for _ in 0..3 {
            receivers.push(UdpIo::new(bound().await, batching));
        }
        let per_destination = 100usize;
        let payloads: Vec<Vec<u8>> = (0..per_destination)
            .map(|i| {
                let mut p = vec![i as u8; 100 + i];
                p[0] = i as u8;
                p
            })
            .collect();
        let mut datagrams = Vec::new();
        for payload in &payloads {
            for r in &receivers {
                datagrams.push((r.local_addr().unwrap(), payload.as_slice()));
            }
        }
        let sent = sender.send_batch(&datagrams).await;
        assert_eq!(sent, datagrams.len());
        assert_eq!(sender.send_errors(), 0);
        let from = sender.local_addr().unwrap();
        for r in &mut receivers {
            let mut got = Vec::new();
            let mut batches = 0;
            while got.len() < per_destination {
                let batch = tokio::time::timeout(Duration::from_secs(5), r.recv_batch())
                    .await
                    .expect("datagrams arrive")
                    .unwrap();
                assert!(batch.len() <= BATCH);
                batches += 1;
                for (source, bytes) in batch.iter() {
                    assert_eq!(source, from);
                    got.push(bytes.to_vec());
                }
            }
            assert_eq!(got, payloads, "every datagram, in order, intact");
            if batching.batched() {
                assert!(batches < per_destination, "recvmmsg took several at once");
            } else {
                assert_eq!(batches, per_destination);
            }
        }
    }

    #[tokio::test]
    async fn batched_fan_out_reaches_every_destination_in_order() {
        fan_out(Batching::On).await;
    }

    #[tokio::test]
    async fn unbatched_fan_out_reaches_every_destination_in_order() {
        fan_out(Batching::Off).await;
    }

    #[tokio::test]
    async fn ipv6_sources_and_destinations_round_trip() {
        let Ok(socket) = UdpSocket::bind("[::1]:0").await else {
            return; // no IPv6 loopback on this machine
        };
        let mut a = UdpIo::new(socket, Batching::On);
        let mut b = UdpIo::new(UdpSocket::bind("[::1]:0").await.unwrap(), Batching::On);
        let to = b.local_addr().unwrap();
        assert_eq!(a.send_batch(&[(to, b"six"), (to, b"six!")]).await, 2);
        let mut got = Vec::new();
        while got.len() < 2 {
            let batch = b.recv_batch().await.unwrap();
            got.extend(batch.iter().map(|(from, d)| (from, d.to_vec())));
        }
        let from = a.local_addr().unwrap();
        assert_eq!(got, vec![(from, b"six".to_vec()), (from, b"six!".to_vec())]);
    }

    #[tokio::test]
    async fn a_refused_datagram_is_counted_and_the_rest_are_sent() {
        let mut sender = UdpIo::new(bound().await, Batching::On);
        let mut receiver = UdpIo::new(bound().await, Batching::On);
        let to = receiver.local_addr().unwrap();
        // An IPv6 destination from an IPv4 socket: the kernel refuses it (EAFNOSUPPORT or
        // EINVAL), and only it.
        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        let too_big = vec![0u8; 70_000];
        let datagrams = [
            (to, b"one".as_slice()),
            (v6, b"lost".as_slice()),
            (to, too_big.as_slice()),
            (to, b"two".as_slice()),
        ];
        assert_eq!(sender.send_batch(&datagrams).await, 2);
        assert_eq!(sender.send_errors(), 2);
        let mut got = Vec::new();
        while got.len() < 2 {
            let batch = receiver.recv_batch().await.unwrap();
            got.extend(batch.iter().map(|(_, d)| d.to_vec()));
        }
        assert_eq!(got, vec![b"one".to_vec(), b"two".to_vec()]);
    }

    /// A scripted [`BatchSender`]: each try takes the next scripted answer.
    struct Scripted {
        answers: VecDeque<io::Result<usize>>,
        tries: Vec<usize>,
        waits: usize,
    }

    impl BatchSender for Scripted {
        fn try_send(&mut self, datagrams: &[(SocketAddr, &[u8])]) -> io::Result<usize> {
            self.tries.push(datagrams.len());
            let answer = self.answers.pop_front().expect("no more tries expected");
            answer.map(|n| n.min(datagrams.len()))
        }

        async fn writable(&mut self) -> io::Result<()> {
            self.waits += 1;
            Ok(())
        }
    }

    #[tokio::test]
    async fn partial_sends_continue_where_they_stopped_and_eagain_waits() {
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let datagrams = vec![(to, b"x".as_slice()); 40];
        let would_block = || Err(io::Error::from(io::ErrorKind::WouldBlock));
        let mut sender = Scripted {
            answers: VecDeque::from([
                Ok(10),
                would_block(),
                Ok(22),
                Err(io::Error::from_raw_os_error(libc::EMSGSIZE)),
                Ok(7),
            ]),
            tries: Vec::new(),
            waits: 0,
        };
        let (sent, refused) = send_all(&mut sender, &datagrams).await;
        assert_eq!((sent, refused), (39, 1));
        // 32 at most per call; after 10 the next 30 (capped 32), after the wait the same,
        // after 22 the last 8, one refused, then the last 7.
        assert_eq!(sender.tries, vec![32, 30, 30, 8, 7]);
        assert_eq!(
            sender.waits, 1,
            "EAGAIN waits for writability once, no spinning"
        );
    }

    #[tokio::test]
    async fn a_full_receive_buffer_does_not_stall_or_spin_the_sender() {
        // The receiver never reads: the kernel drops what its buffer cannot hold, the sender
        // neither blocks for ever nor counts those as its own errors.
        let mut sender = UdpIo::new(bound().await, Batching::On);
        let silent = bound().await;
        let to = silent.local_addr().unwrap();
        let payload = vec![7u8; 1400];
        let datagrams = vec![(to, payload.as_slice()); 5_000];
        let sent = tokio::time::timeout(Duration::from_secs(10), sender.send_batch(&datagrams))
            .await
            .expect("send_batch finishes");
        assert_eq!(sent, datagrams.len());
        assert_eq!(sender.send_errors(), 0);
    }

    #[test]
    fn batching_can_be_turned_off_from_the_environment() {
        // Only this test touches the variable.
        std::env::set_var(BATCHING_ENV, "off");
        assert_eq!(Batching::from_env(), Batching::Off);
        std::env::set_var(BATCHING_ENV, "on");
        assert_eq!(Batching::from_env(), Batching::On);
        std::env::remove_var(BATCHING_ENV);
        assert_eq!(Batching::from_env(), Batching::On);
    }

    #[test]
    fn media_sockets_get_bigger_buffers_than_the_default() {
        let plain = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let default = socket2::SockRef::from(&plain).recv_buffer_size().unwrap();
        let enlarged = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (recv, send) = enlarge_buffers(&enlarged).unwrap();
        // Capped by net.core.rmem_max, which may equal the default on some hosts.
        assert!(recv >= default, "{recv} < {default}");
        assert!(send > 0);
    }
}
