//! `loudsync media serve` (issue 13 §3, §7): the standalone responder streaming a synthetic
//! pattern over UDP, for network testing like ctsTraffic.
//!
//! [`StandaloneConfig`] holds the D29 settings; [`StandaloneConfig::validate`] turns them
//! into the core's [`ResponderConfig`] or the D23 error text (the CLI exits 1 with it).
//! [`StandaloneServer::bind`] binds the socket (so the caller can print the address), and
//! [`StandaloneServer::run`] is the loop around the sans-IO [`Responder`]:
//!
//! 1. send everything the responder has queued, in one [`UdpIo::send_batch`];
//! 2. wait for the first of: datagrams ([`UdpIo::recv_batch`], each fed to
//!    [`Responder::handle_datagram`] with the same arrival time), the responder's
//!    [`Responder::poll_timeout`] (then [`Responder::handle_timeout`], which queues the frames
//!    that fell due), or the caller's shutdown future (then it returns).
//!
//! All pacing is the responder's (D26: a frame is queued when due, never before); this loop
//! only sleeps until the instant it names. DATA timestamps count nanoseconds of the host's
//! [`StandaloneConfig::clock_origin`]: the CLI gives the host's monotonic clock's zero
//! (`loudsync_client::media::host_monotonic_origin`, D22), the time base `media recv` on the
//! same host uses too, so its time in flight is the real delay. Connection ids come from the operating system's
//! CSPRNG (`getrandom`), so nobody can guess the id a START_CONFIRM must echo.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use loudsync_core::media::responder::{
    frame_count, IdRandomness, Responder, ResponderConfig, DEFAULT_CONFIRM_TIMEOUT,
    DEFAULT_MAX_STREAMS,
};
use loudsync_protocol::media::{StreamId, StreamParams, MAX_STREAM_ID_LEN};
use tokio::net::UdpSocket;

use super::udp::{Batching, UdpIo};

/// The default `--listen` of `media serve` (port 4444, as ctsTraffic).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:4444";
/// The default `--stream-id` (D13).
pub const DEFAULT_STREAM_ID: &str = "synthetic";
/// The default `--datagram-size` (D29).
pub const DEFAULT_DATAGRAM_SIZE: usize = 1400;

/// The settings of `loudsync media serve` (D29).
#[derive(Debug, Clone)]
pub struct StandaloneConfig {
    /// Where to bind the UDP socket.
    pub listen: SocketAddr,
    /// Bits per second of each stream, headers included.
    pub bitrate: u64,
    /// Frames per second.
    pub fps: u32,
    /// Largest datagram, bytes (64..=65507).
    pub datagram_size: usize,
    /// How long each stream lasts (N = round(duration x fps) frames, D27).
    pub duration: Duration,
    /// The one stream served (D13).
    pub stream_id: String,
    /// Streams pending or running at once (D14).
    pub max_streams: usize,
    /// How long a START_ACK waits for its START_CONFIRM (D14).
    pub confirm_timeout: Duration,
    /// Also answer upstream ctsTraffic's one-way 5-byte START (D28).
    pub legacy_start: bool,
    /// Batched socket calls or one per datagram.
    pub batching: Batching,
    /// The instant DATA timestamps count nanoseconds from (D22); `None`: when the socket is
    /// bound.
    pub clock_origin: Option<Instant>,
}

impl StandaloneConfig {
    /// The defaults of D29 for a bitrate, fps and duration.
    pub fn new(bitrate: u64, fps: u32, duration: Duration) -> StandaloneConfig {
        StandaloneConfig {
            listen: DEFAULT_LISTEN.parse().expect("a valid default address"),
            bitrate,
            fps,
            datagram_size: DEFAULT_DATAGRAM_SIZE,
            duration,
            stream_id: DEFAULT_STREAM_ID.to_owned(),
            max_streams: DEFAULT_MAX_STREAMS,
            confirm_timeout: DEFAULT_CONFIRM_TIMEOUT,
            legacy_start: false,
            batching: Batching::On,
            clock_origin: None,
        }
    }

    /// Checks the settings (D23 and the rest of D29) and builds the responder's
    /// configuration; the error is the text an operator sees after `Error: `.
    pub fn validate(&self) -> Result<ResponderConfig, String> {
        let params = StreamParams::new(self.bitrate, self.fps, self.datagram_size)
            .map_err(|e| e.to_string())?;
        if self.duration.is_zero() {
            return Err("--duration must be more than 0 (write e.g. 2s or 1500ms)".into());
        }
        let stream_id = StreamId::new(self.stream_id.clone()).ok_or_else(|| {
            format!(
                "--stream-id must be 1 to {MAX_STREAM_ID_LEN} printable ASCII characters without spaces"
            )
        })?;
        if self.max_streams == 0 {
            return Err("--max-streams must be at least 1".into());
        }
        if self.confirm_timeout.is_zero() {
            return Err("--confirm-timeout must be more than 0".into());
        }
        let frames = frame_count(self.duration, self.fps);
        let mut config = ResponderConfig::new(stream_id, params, self.fps, frames);
        config.max_streams = self.max_streams;
        config.confirm_timeout = self.confirm_timeout;
        config.legacy_start = self.legacy_start;
        Ok(config)
    }
}

/// What a run did, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunStats {
    /// Datagrams received.
    pub datagrams_received: u64,
    /// Datagrams sent (replies and DATA).
    pub datagrams_sent: u64,
    /// Datagrams the kernel refused to send.
    pub send_errors: u64,
}

/// A bound `media serve` socket and its responder.
#[derive(Debug)]
pub struct StandaloneServer {
    io: UdpIo,
    responder: Responder,
}

impl StandaloneServer {
    /// Validates `config` and binds its socket. The error is an invalid setting
    /// ([`io::ErrorKind::InvalidInput`], the [`StandaloneConfig::validate`] text) or the
    /// bind's.
    pub async fn bind(config: &StandaloneConfig) -> io::Result<StandaloneServer> {
        let responder_config = config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let socket = std::net::UdpSocket::bind(config.listen)?;
        if let Err(error) = super::udp::enlarge_buffers(&socket) {
            tracing::warn!(%error, "media serve: cannot enlarge the socket buffers");
        }
        socket.set_nonblocking(true)?;
        let socket = UdpSocket::from_std(socket)?;
        let now = crate::now();
        let epoch = loudsync_core::Now {
            instant: config.clock_origin.unwrap_or(now.instant),
            ..now
        };
        let responder = Responder::new(responder_config, epoch, secure_ids());
        Ok(StandaloneServer {
            io: UdpIo::new(socket, config.batching),
            responder,
        })
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    /// Serves until `shutdown` completes (streams in progress stop there, D17).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<RunStats> {
        let StandaloneServer {
            mut io,
            mut responder,
        } = self;
        let mut stats = RunStats::default();
        tokio::pin!(shutdown);
        loop {
            let transmits: Vec<_> = std::iter::from_fn(|| responder.poll_transmit()).collect();
            if !transmits.is_empty() {
                let datagrams: Vec<(SocketAddr, &[u8])> = transmits
                    .iter()
                    .map(|t| (t.to, t.bytes.as_slice()))
                    .collect();
                stats.datagrams_sent += io.send_batch(&datagrams).await as u64;
                stats.send_errors = io.send_errors();
            }
            let wake = responder.poll_timeout();
            // Not `biased`: with frames overdue the timer would always win and the socket
            // would never be read (STARTs and ERRORs unanswered) until every stream ended.
            tokio::select! {
                () = &mut shutdown => break,
                () = sleep_until(wake) => responder.handle_timeout(crate::now()),
                received = io.recv_batch() => match received {
                    Ok(batch) => {
                        let now = crate::now();
                        for (from, datagram) in batch.iter() {
                            stats.datagrams_received += 1;
                            responder.handle_datagram(now, from, datagram);
                        }
                    }
                    // An ICMP error for an earlier send, or a datagram too large: the socket
                    // is still good.
                    Err(error) => tracing::debug!(%error, "media serve: receive error"),
                },
            }
        }
        tracing::info!(
            sent = stats.datagrams_sent,
            received = stats.datagrams_received,
            send_errors = stats.send_errors,
            "media serve stopped"
        );
        Ok(stats)
    }
}

/// Connection ids from the operating system's CSPRNG.
fn secure_ids() -> IdRandomness {
    Box::new(|| {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the operating system's random source");
        bytes
    })
}

/// Sleeps until `at`, or forever when there is nothing to wake for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loudsync_protocol::media::{
        decode_control, decode_data, encode_start, encode_start_confirm, ControlBody,
    };

    fn config() -> StandaloneConfig {
        let mut config = StandaloneConfig::new(808_000, 50, Duration::from_millis(200));
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.datagram_size = 1000;
        config
    }

    #[test]
    fn validate_refuses_each_invalid_setting_with_its_flag() {
        type Change = fn(&mut StandaloneConfig);
        let cases: [(&str, Change); 7] = [
            ("below the minimum of 40", |c| c.bitrate = 800),
            ("--fps", |c| c.fps = 0),
            ("--datagram-size 63", |c| c.datagram_size = 63),
            ("--datagram-size 65508", |c| c.datagram_size = 65_508),
            ("--duration", |c| c.duration = Duration::ZERO),
            ("--stream-id", |c| c.stream_id = "has space".into()),
            ("--max-streams", |c| c.max_streams = 0),
        ];
        for (says, change) in cases {
            let mut c = config();
            change(&mut c);
            let error = c.validate().expect_err(says);
            assert!(error.contains(says), "{error:?} should say {says:?}");
        }
        let good = config().validate().unwrap();
        assert_eq!(good.frames, 10);
        assert_eq!(good.params.frame_size(), 2020);
        assert_eq!(
            StandaloneConfig::new(808_000, 50, Duration::from_secs(2))
                .listen
                .port(),
            4444
        );
    }

    #[tokio::test]
    async fn bind_refuses_invalid_settings_as_invalid_input() {
        let mut c = config();
        c.fps = 0;
        let error = StandaloneServer::bind(&c).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }

    #[tokio::test]
    async fn serves_a_handshake_and_every_frame_then_stops_on_shutdown() {
        serve_one_stream(Batching::On).await;
    }

    #[tokio::test]
    async fn serves_the_same_stream_without_batching() {
        serve_one_stream(Batching::Off).await;
    }

    async fn serve_one_stream(batching: Batching) {
        let mut config = config();
        config.batching = batching;
        let server = StandaloneServer::bind(&config).await.unwrap();
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(addr).await.unwrap();
        let stream = StreamId::new("synthetic").unwrap();
        client.send(&encode_start(&stream, None)).await.unwrap();
        let mut buf = vec![0u8; 2048];
        let len = client.recv(&mut buf).await.unwrap();
        let ack = decode_control(&buf[..len]).unwrap();
        assert!(matches!(ack.body, ControlBody::StartAck { .. }));
        let id = ack.connection_id;
        assert!(id.as_uuid().is_some(), "a v4 UUID from getrandom");
        client
            .send(&encode_start_confirm(&id, &stream))
            .await
            .unwrap();
        let mut sizes = Vec::new();
        while sizes.len() < 30 {
            let len = tokio::time::timeout(Duration::from_secs(2), client.recv(&mut buf))
                .await
                .expect("frames arrive")
                .unwrap();
            let data = decode_data(&buf[..len]).unwrap();
            sizes.push((data.header.sequence, len));
        }
        let expected: Vec<(i64, usize)> = (1..=10)
            .flat_map(|s| [(s, 1000), (s, 993), (s, 27)])
            .collect();
        assert_eq!(sizes, expected);
        stop.send(()).unwrap();
        let stats = task.await.unwrap().unwrap();
        assert_eq!(stats.datagrams_received, 2);
        assert_eq!(stats.datagrams_sent, 31);
        assert_eq!(stats.send_errors, 0);
    }
}
