//! The session media relay inside `loudsync serve --media-listen ADDR:PORT` (issue 13 §9): the
//! UDP socket, the clock and the task around the sans-IO [`Relay`] of `loudsync_core`.
//!
//! [`MediaRelay::bind`] binds the socket when the server starts (so a bad or busy address is a
//! startup error, [`MediaBindError`]); [`MediaRelay::start`] spawns the one task that owns its
//! receive side. The core relay sits under a `std` mutex shared with the session tasks, which
//! tell it what the session layer decides: [`MediaRelay::open_session`] when a session task
//! starts, [`MediaRelay::grant`] for a member's `media_token`, [`MediaRelay::member_gone`],
//! [`MediaRelay::host_changed`] and [`MediaRelay::end_session`] as places, hosts and sessions
//! end (R8). The lock is never held across an `.await`.
//!
//! The task takes datagrams in batches ([`UdpIo::recv_batch`]: `recvmmsg` on Linux, up to
//! [`super::udp::BATCH`] per call), and for the batch locks once: [`Relay::handle_datagram`]
//! for each, the subscribers each is to be forwarded to, the control replies
//! ([`Relay::poll_transmit`]) and the events ([`Relay::poll_event`], counted into the
//! `loudsync_media_*` metrics). A datagram to forward is copied once, out of the receive
//! buffers into a reused one (the receive buffers are reused by the next batch); then, unlocked,
//! every copy (the same bytes to each subscriber, unchanged) and every reply go out in one
//! [`UdpIo::send_batch`] (`sendmmsg`). It sleeps until [`Relay::poll_timeout`] when the relay
//! has a deadline, and is woken to look again whenever a grant or a teardown may have moved it.
//! [`MediaRelay::stop`] ends it at shutdown. `LOUDSYNC_MEDIA_BATCHING=off` makes it one system
//! call per datagram (for the benchmark's comparison).

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use loudsync_core::media::relay::{Grant, MediaRole, Relay, RelayConfig, RelayEvent};
use loudsync_core::media::responder::{IdRandomness, Transmit};
use loudsync_core::Now;
use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::udp::{Batching, UdpIo};
use crate::clock::now;
use crate::metrics::MediaMetrics;

/// The media relay could not bind its UDP address (the server does not start).
#[derive(Debug)]
pub struct MediaBindError {
    /// The `--media-listen` address.
    pub addr: SocketAddr,
    /// Why.
    pub source: std::io::Error,
}

impl fmt::Display for MediaBindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot bind the media relay (--media-listen) to udp://{}: {}",
            self.addr, self.source
        )
    }
}

/// The message includes the cause already, so no `source` is chained (it would print twice).
impl std::error::Error for MediaBindError {}

impl MediaBindError {
    /// Whether `error` (as [`crate::Server::bind`] returns it) is a media bind failure, so
    /// the CLI names the media address rather than `--listen`.
    pub fn is(error: &std::io::Error) -> bool {
        error
            .get_ref()
            .is_some_and(|inner| inner.is::<MediaBindError>())
    }
}

/// The relay's socket, its state machine and its task (see the module comment).
pub struct MediaRelay {
    relay: Mutex<Relay>,
    /// The socket, until [`MediaRelay::start`] hands it to the task.
    socket: Mutex<Option<UdpSocket>>,
    local_addr: SocketAddr,
    /// Woken when the relay's next deadline may have moved (a grant, a teardown).
    rethink: Notify,
    metrics: MediaMetrics,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for MediaRelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaRelay")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl MediaRelay {
    /// Binds `addr` (UDP) for a relay with `config`. Must be called inside the tokio runtime.
    /// Fails with a [`MediaBindError`] (inside the `io::Error`) naming the address.
    pub fn bind(addr: SocketAddr, config: RelayConfig) -> std::io::Result<MediaRelay> {
        let failed = |source: std::io::Error| {
            std::io::Error::new(source.kind(), MediaBindError { addr, source })
        };
        let socket = std::net::UdpSocket::bind(addr).map_err(failed)?;
        // Bigger kernel buffers ride out a moment without a core (BENCHMARKS: media).
        match super::udp::enlarge_buffers(&socket) {
            Ok((recv, send)) => tracing::debug!(recv, send, "media relay socket buffers"),
            Err(error) => tracing::warn!(%error, "media relay: cannot enlarge the socket buffers"),
        }
        socket.set_nonblocking(true).map_err(failed)?;
        let socket = UdpSocket::from_std(socket).map_err(failed)?;
        let local_addr = socket.local_addr().map_err(failed)?;
        let relay = Relay::new(config, now(), secure_ids(), secure_tokens());
        Ok(MediaRelay {
            relay: Mutex::new(relay),
            socket: Mutex::new(Some(socket)),
            local_addr,
            rethink: Notify::new(),
            metrics: MediaMetrics::new(),
            task: Mutex::new(None),
        })
    }

    /// Starts the task that receives, forwards and answers datagrams (once; later calls do
    /// nothing).
    pub fn start(self: &Arc<Self>) {
        let Some(socket) = self.socket.lock().expect("media socket").take() else {
            return;
        };
        let io = UdpIo::new(socket, Batching::from_env());
        let me = self.clone();
        let task = tokio::spawn(async move { me.run(io).await });
        *self.task.lock().expect("media task") = Some(task);
        tracing::info!("media relay listening on udp://{}", self.local_addr);
    }

    /// Stops the task (at shutdown); the socket closes with the last reference.
    pub fn stop(&self) {
        if let Some(task) = self.task.lock().expect("media task").take() {
            task.abort();
        }
    }

    /// The address bound (with the real port when `:0` was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The UDP port a `media_token` reply names.
    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// A session now exists: START may name it.
    pub fn open_session(&self, session_id: &str) {
        self.with_relay(|relay| relay.open_session(session_id));
    }

    /// The session ended: its tuples and tokens go, silently; a START naming it gets ERROR 3.
    pub fn end_session(&self, session_id: &str) {
        self.with_relay(|relay| relay.end_session(session_id));
    }

    /// A member's place ended: its tuples and tokens go, silently.
    pub fn member_gone(&self, session_id: &str, member_id: &str) {
        self.with_relay(|relay| relay.member_gone(session_id, member_id));
    }

    /// The session's host is now `host`: anyone else's publish tuple or token goes.
    pub fn host_changed(&self, session_id: &str, host: Option<&str>) {
        self.with_relay(|relay| relay.host_changed(session_id, host));
    }

    /// A token for `member_id` of `session_id` in `role`, or `None` if the session is not
    /// open in the relay.
    pub fn grant(
        &self,
        now: Now,
        session_id: &str,
        member_id: &str,
        role: MediaRole,
    ) -> Option<Grant> {
        self.with_relay(|relay| relay.grant(now, session_id, member_id, role))
    }

    /// Tuples streaming now.
    pub fn streams(&self) -> usize {
        self.lock().streams()
    }

    /// Streaming subscribers of `session_id`.
    pub fn subscribers(&self, session_id: &str) -> usize {
        self.lock().subscribers(session_id)
    }

    /// Every open session's stream (publisher, subscribers, copies forwarded, frames lost,
    /// jitter), for `GET /v1/media`.
    pub fn stream_stats(&self) -> Vec<loudsync_core::media::relay::StreamStats> {
        self.lock().stream_stats()
    }

    /// What the relay holds for `tuple` (for logs and tests).
    pub fn tuple(&self, tuple: SocketAddr) -> Option<loudsync_core::media::relay::TupleInfo> {
        self.lock().tuple(tuple)
    }

    fn lock(&self) -> MutexGuard<'_, Relay> {
        self.relay.lock().expect("media relay")
    }

    /// Runs `f` on the relay, counts the events it caused, and has the task look at the
    /// relay's deadline again.
    fn with_relay<R>(&self, f: impl FnOnce(&mut Relay) -> R) -> R {
        let result = {
            let mut relay = self.lock();
            let result = f(&mut relay);
            self.count_events(&mut relay);
            result
        };
        self.rethink.notify_one();
        result
    }

    /// Counts the relay's events; the streams gauge follows the relay when one changed it.
    fn count_events(&self, relay: &mut Relay) {
        let mut streams_changed = false;
        while let Some(event) = relay.poll_event() {
            match event {
                RelayEvent::HandshakeStarted => self.metrics.handshakes.increment(1),
                RelayEvent::Streaming { time_to_stream, .. } => {
                    self.metrics
                        .time_to_stream
                        .record(time_to_stream.as_secs_f64());
                    streams_changed = true;
                }
                RelayEvent::Stopped { .. } => streams_changed = true,
                RelayEvent::Refused { code } => MediaMetrics::handshake_failure(code.label()),
                RelayEvent::FramesLost { frames } => self.metrics.frames_lost.increment(frames),
            }
        }
        if streams_changed {
            self.metrics.streams.set(relay.streams() as f64);
        }
    }

    /// The task: batches of datagrams, and the relay's timer.
    async fn run(self: Arc<Self>, mut io: UdpIo) {
        // The datagrams to forward, back to back, each with the range of `targets` it goes to.
        let mut copies: Vec<u8> = Vec::new();
        let mut forwards: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)> = Vec::new();
        let mut targets: Vec<SocketAddr> = Vec::new();
        let mut replies: Vec<Transmit> = Vec::new();
        loop {
            let deadline = self.lock().poll_timeout();
            tokio::select! {
                received = io.recv_batch() => {
                    let batch = match received {
                        Ok(batch) => batch,
                        Err(e) => {
                            // An ICMP report for an earlier send on some systems: go on.
                            tracing::debug!(error = %e, "media relay: receive failed");
                            continue;
                        }
                    };
                    let mut relay = self.lock();
                    for (from, datagram) in batch.iter() {
                        let to = relay.handle_datagram(now(), from, datagram);
                        if !to.is_empty() {
                            let bytes = copies.len()..copies.len() + datagram.len();
                            let subscribers = targets.len()..targets.len() + to.len();
                            copies.extend_from_slice(datagram);
                            targets.extend_from_slice(to);
                            forwards.push((bytes, subscribers));
                        }
                    }
                    replies.extend(std::iter::from_fn(|| relay.poll_transmit()));
                    self.count_events(&mut relay);
                }
                _ = sleep_until(deadline) => {
                    let mut relay = self.lock();
                    relay.handle_timeout(now());
                    replies.extend(std::iter::from_fn(|| relay.poll_transmit()));
                    self.count_events(&mut relay);
                }
                _ = self.rethink.notified() => {}
            }
            if forwards.is_empty() && replies.is_empty() {
                continue;
            }
            let relayed = targets.len() as u64;
            let mut datagrams: Vec<(SocketAddr, &[u8])> =
                Vec::with_capacity(targets.len() + replies.len());
            for (bytes, subscribers) in &forwards {
                let copy = &copies[bytes.clone()];
                datagrams.extend(targets[subscribers.clone()].iter().map(|to| (*to, copy)));
            }
            datagrams.extend(replies.iter().map(|r| (r.to, r.bytes.as_slice())));
            let sent = io.send_batch(&datagrams).await;
            drop(datagrams);
            self.metrics.datagrams_sent.increment(sent as u64);
            self.metrics.datagrams_relayed.increment(relayed);
            copies.clear();
            forwards.clear();
            targets.clear();
            replies.clear();
        }
    }
}

/// Sleeps until `at`, or forever when the relay has no deadline.
async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// Connection ids from the operating system's CSPRNG (nobody can guess the id a START_CONFIRM
/// must echo).
fn secure_ids() -> IdRandomness {
    Box::new(|| {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the operating system's random source");
        bytes
    })
}

/// Media tokens from the operating system's CSPRNG.
fn secure_tokens() -> loudsync_core::media::relay::TokenRandomness {
    Box::new(|| {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the operating system's random source");
        bytes
    })
}

/// The `media_token` reply for a grant: `expiresAt` in ms since the Unix epoch, from the
/// grant's instant and `now`.
pub fn reply(grant: Grant, now: Now, port: u16) -> loudsync_protocol::ServerMessage {
    let ttl = grant.expires_at.saturating_duration_since(now.instant);
    loudsync_protocol::ServerMessage::MediaToken {
        token: grant.token,
        role: match grant.role {
            MediaRole::Publish => loudsync_protocol::types::MediaRole::Publish,
            MediaRole::Subscribe => loudsync_protocol::types::MediaRole::Subscribe,
        },
        stream_id: grant.stream_id.as_str().to_string(),
        port,
        expires_at: now.unix_ms + ttl.as_millis() as u64,
    }
}

/// The core's role for the session layer's.
pub fn core_role(role: loudsync_protocol::types::MediaRole) -> MediaRole {
    match role {
        loudsync_protocol::types::MediaRole::Publish => MediaRole::Publish,
        loudsync_protocol::types::MediaRole::Subscribe => MediaRole::Subscribe,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_reply_carries_the_grant_with_expires_at_in_unix_ms() {
        let now = Now {
            instant: Instant::now(),
            unix_ms: 1_796_147_836_830,
        };
        let grant = Grant {
            token: "t".repeat(43),
            role: MediaRole::Publish,
            stream_id: loudsync_protocol::media::StreamId::new("s-1").unwrap(),
            expires_at: now.instant + Duration::from_secs(30),
        };
        let m = reply(grant, now, 4444);
        assert_eq!(
            m,
            loudsync_protocol::ServerMessage::MediaToken {
                token: "t".repeat(43),
                role: loudsync_protocol::types::MediaRole::Publish,
                stream_id: "s-1".into(),
                port: 4444,
                expires_at: 1_796_147_866_830,
            }
        );
        assert_eq!(
            core_role(loudsync_protocol::types::MediaRole::Subscribe),
            MediaRole::Subscribe
        );
    }

    #[tokio::test]
    async fn a_busy_address_is_a_bind_error_naming_it() {
        let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = MediaRelay::bind(addr, RelayConfig::default()).unwrap_err();
        assert!(MediaBindError::is(&err));
        assert!(
            err.to_string().starts_with(&format!(
                "cannot bind the media relay (--media-listen) to udp://{addr}: "
            )),
            "{err}"
        );
        let other = std::io::Error::other("x");
        assert!(!MediaBindError::is(&other));
    }
}
