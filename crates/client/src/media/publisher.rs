//! Publishing a session's media stream to the server's relay (issue 13 §9, R7): the tokio
//! driver around the sans-IO [`Publisher`] of `loudsync_core::media::publisher`.
//!
//! [`publish`] binds a UDP socket of the relay's address family (loopback for a loopback
//! relay, else the unspecified address) and *connects* it to the relay, so the kernel hands
//! this socket datagrams from the relay's address only: a START_ACK or ERROR spoofed from
//! anywhere else never reaches the publisher. A task then loops until the publisher has an
//! outcome: send what [`Publisher::poll_transmit`] hands out, feed every datagram received to
//! [`Publisher::handle_datagram`], wake the publisher at [`Publisher::poll_timeout`] (the
//! START and START_CONFIRM retries, and each synthetic frame's due time: the core decides
//! what is due, this task only sleeps until then), and pass the application's frames
//! ([`Publishing::send_frame`]) to [`Publisher::send_frame`]. [`Publishing`] is the
//! application's handle: the phase and frames sent so far, the end ([`Publishing::finished`]),
//! and [`Publishing::stop`] (dropping the handle stops the stream too).
//!
//! An ICMP "port unreachable" reported on the connected socket (no relay listening) is not an
//! error here: the publisher's retries and give-up (D18) decide, so "no answer" ends as
//! [`Outcome::NoStartAck`] whether the datagrams vanish or bounce.
//!
//! [`relay_address`] finds the relay: the server URL's host with the port of the member's
//! [`crate::MediaGrant`] ([`crate::Client::relay_address`] prefers the address the client's
//! WebSocket actually reached).
//!
//! ```no_run
//! use loudsync_client::media::publisher::publish;
//! use loudsync_core::media::publisher::PublisherConfig;
//! use loudsync_protocol::media::StreamParams;
//!
//! # async fn run(client: loudsync_client::Client) -> Result<(), Box<dyn std::error::Error>> {
//! let grant = client.media_token().await?; // the host's: MediaRole::Publish
//! let relay = client.relay_address(&grant).await?;
//! let params = StreamParams::new(808_000, 50, 1000).expect("valid settings");
//! let (stream, token) = (grant.stream().expect("id"), grant.media_token().expect("token"));
//! let config = PublisherConfig::new(stream, token, params, 50, Some(50)); // 1 s at 50 fps
//! let published = publish(relay, config).await?.finished().await?;
//! println!("{:?} after {} frames", published.outcome, published.sent_frames);
//! # Ok(()) }
//! ```

use std::io;
use std::net::SocketAddr;

use http::Uri;
use loudsync_core::media::initiator::Outcome;
use loudsync_core::media::publisher::{Phase, Publisher, PublisherConfig, SendFrameError, Source};
use loudsync_protocol::media::MAX_DATAGRAM_SIZE;
use tokio::net::UdpSocket;

use super::socket::{bounced, connect, host_monotonic_origin, now, send, sleep_until};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// How a publish ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The publisher's outcome: [`Outcome::Finished`] (every synthetic frame sent),
    /// [`Outcome::NoStartAck`] (no answer after the retries) or [`Outcome::Refused`] (an ERROR
    /// from the relay, e.g. 6 `BAD_TOKEN`); `None` when it was stopped first
    /// ([`Publishing::stop`]).
    pub outcome: Option<Outcome>,
    /// Frames sent (each one or more datagrams).
    pub sent_frames: u64,
}

/// What the task reports while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Status {
    phase: Phase,
    sent_frames: u64,
}

/// What the handle asks of the task.
enum Input {
    /// An application frame's payload ([`Source::Application`]).
    Frame(Vec<u8>),
    /// End now.
    Stop,
}

/// A running publish: the handle [`publish`] returns. Dropping it stops the stream.
#[derive(Debug)]
pub struct Publishing {
    inputs: mpsc::UnboundedSender<Input>,
    status: watch::Receiver<Status>,
    source: Source,
    relay: SocketAddr,
    local: SocketAddr,
    task: JoinHandle<io::Result<Published>>,
}

/// Starts publishing to the relay at `relay` as `config` says (its STREAM_ID the session id,
/// its MEDIA_TOKEN a publish grant's, D18's retries, the synthetic pattern or the
/// application's frames): binds and connects the socket, then runs the handshake and the
/// stream on a task. Fails only if the socket cannot be bound or connected; everything after
/// that ends in [`Publishing::finished`].
pub async fn publish(relay: SocketAddr, config: PublisherConfig) -> io::Result<Publishing> {
    let mut config = config;
    // DATA timestamps count the host's monotonic clock unless told otherwise (D22).
    config
        .clock_origin
        .get_or_insert_with(host_monotonic_origin);
    let socket = connect(relay).await?;
    let local = socket.local_addr()?;
    let source = config.source;
    let publisher = Publisher::new(config, now());
    let (inputs, input_rx) = mpsc::unbounded_channel();
    let (status_tx, status) = watch::channel(Status {
        phase: publisher.phase(),
        sent_frames: 0,
    });
    let task = tokio::spawn(run(socket, publisher, input_rx, status_tx));
    Ok(Publishing {
        inputs,
        status,
        source,
        relay,
        local,
        task,
    })
}

impl Publishing {
    /// The publisher's phase now: `AwaitAck` during the handshake, `Streaming` from the first
    /// START_CONFIRM on, `Done` once it ended.
    pub fn phase(&self) -> Phase {
        self.status.borrow().phase
    }

    /// Frames sent so far.
    pub fn sent_frames(&self) -> u64 {
        self.status.borrow().sent_frames
    }

    /// The relay's address (as given to [`publish`]).
    pub fn relay(&self) -> SocketAddr {
        self.relay
    }

    /// The socket's own address: the tuple the relay knows this publisher by.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Waits until the handshake is over: `true` once streaming (the first START_CONFIRM
    /// went out), `false` if the publisher ended first (see [`Publishing::finished`]).
    pub async fn streaming(&mut self) -> bool {
        let phase = self
            .status
            .wait_for(|s| s.phase != Phase::AwaitAck)
            .await
            .map(|s| s.phase)
            .unwrap_or(Phase::Done);
        phase == Phase::Streaming
    }

    /// Sends one application frame ([`PublisherConfig::application`]): the next sequence
    /// number, `payload` cut into datagrams of at most the datagram size. Refused unless
    /// streaming; a frame given as the stream ends is dropped.
    pub fn send_frame(&self, payload: impl Into<Vec<u8>>) -> Result<(), SendFrameError> {
        if self.source != Source::Application {
            return Err(SendFrameError::Synthetic);
        }
        match self.phase() {
            Phase::AwaitAck => Err(SendFrameError::NotStreaming),
            Phase::Done => Err(SendFrameError::Done),
            Phase::Streaming => self
                .inputs
                .send(Input::Frame(payload.into()))
                .map_err(|_| SendFrameError::Done),
        }
    }

    /// Ends the stream now (nothing more is sent; the relay learns of it by the session's
    /// teardown, R8). [`Publishing::finished`] then gives `outcome: None`, unless the
    /// publisher had ended already.
    pub fn stop(&self) {
        let _ = self.inputs.send(Input::Stop);
    }

    /// Waits for the end: the outcome and the frames sent, or the socket error that ended the
    /// task.
    pub async fn finished(self) -> io::Result<Published> {
        let Publishing { inputs, task, .. } = self;
        let result = task.await;
        drop(inputs);
        match result {
            Ok(result) => result,
            Err(join) => Err(io::Error::other(format!("publisher task failed: {join}"))),
        }
    }
}

/// The task: the loop of the module comment.
async fn run(
    socket: UdpSocket,
    mut publisher: Publisher,
    mut inputs: mpsc::UnboundedReceiver<Input>,
    status: watch::Sender<Status>,
) -> io::Result<Published> {
    let mut buf = vec![0u8; MAX_DATAGRAM_SIZE];
    let result = 'run: loop {
        while let Some(datagram) = publisher.poll_transmit() {
            if let Err(error) = send(&socket, &datagram).await {
                break 'run Err(error);
            }
        }
        let now_status = Status {
            phase: publisher.phase(),
            sent_frames: publisher.sent_frames(),
        };
        status.send_if_modified(|s| std::mem::replace(s, now_status) != now_status);
        if let Some(outcome) = publisher.outcome() {
            break 'run Ok(Some(outcome));
        }
        let wake = publisher.poll_timeout();
        tokio::select! {
            received = socket.recv(&mut buf) => match received {
                Ok(len) => publisher.handle_datagram(now(), &buf[..len]),
                Err(error) if bounced(&error) => {}
                Err(error) => break Err(error),
            },
            () = sleep_until(wake) => publisher.handle_timeout(now()),
            input = inputs.recv() => match input {
                Some(Input::Frame(payload)) => {
                    // Refused only if the stream ended meanwhile: the frame is dropped.
                    let _ = publisher.send_frame(now(), &payload);
                }
                Some(Input::Stop) | None => break Ok(None),
            },
        }
    };
    let sent_frames = publisher.sent_frames();
    status.send_modify(|s| {
        *s = Status {
            phase: Phase::Done,
            sent_frames,
        }
    });
    result.map(|outcome| Published {
        outcome,
        sent_frames,
    })
}

/// The relay's UDP address for a server at `server_url` (`ws://HOST:PORT/...` or `wss://...`)
/// whose `media_token` reply named `port`: the URL's host (an IP address as written, a name
/// resolved, its first address taken) with `port`. An error of kind `InvalidInput` for a URL
/// that is not `ws://` or `wss://` with a host; DNS errors as the resolver gives them.
pub async fn relay_address(server_url: &str, port: u16) -> io::Result<SocketAddr> {
    let not_a_url = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{server_url}` is not a ws:// or wss:// URL with a host"),
        )
    };
    let uri: Uri = server_url.parse().map_err(|_| not_a_url())?;
    if !matches!(uri.scheme_str(), Some("ws" | "wss")) {
        return Err(not_a_url());
    }
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(not_a_url)?
        .trim_start_matches('[')
        .trim_end_matches(']');
    let first = tokio::net::lookup_host((host, port)).await?.next();
    first.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("`{host}` resolved to no address"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use loudsync_protocol::media::{
        classify, decode_control, decode_data, encode_error, encode_start_ack, ConnectionId,
        ControlBody, ControlKind, DatagramKind, ErrorCode, MediaToken, StreamId, StreamParams,
    };
    use std::time::Duration;
    use std::time::Instant;

    const WAIT: Duration = Duration::from_secs(5);

    fn stream() -> StreamId {
        StreamId::new("sess-1").unwrap()
    }

    /// 808 000 bps at 50 fps with 1000-byte datagrams: 2020-byte frames of 1000/993/27.
    fn config(frames: Option<u64>) -> PublisherConfig {
        let params = StreamParams::new(808_000, 50, 1000).unwrap();
        let token = MediaToken::new(b"T".repeat(43)).unwrap();
        let mut config = PublisherConfig::new(stream(), token, params, 50, frames);
        config.retry_initial = Duration::from_millis(50);
        config.retry_max = Duration::from_millis(100);
        config
    }

    /// A stand-in relay on loopback: one socket, reads with a bound.
    struct FakeRelay {
        socket: UdpSocket,
    }

    impl FakeRelay {
        async fn bind() -> FakeRelay {
            FakeRelay {
                socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            }
        }
        fn addr(&self) -> SocketAddr {
            self.socket.local_addr().unwrap()
        }
        async fn recv(&self) -> (Vec<u8>, SocketAddr) {
            let mut buf = vec![0u8; MAX_DATAGRAM_SIZE];
            let (len, from) = tokio::time::timeout(WAIT, self.socket.recv_from(&mut buf))
                .await
                .expect("a datagram in time")
                .unwrap();
            buf.truncate(len);
            (buf, from)
        }
        /// Reads the publisher's START (with its token) and answers START_ACK.
        async fn accept(&self) -> SocketAddr {
            let (start, from) = self.recv().await;
            let frame = decode_control(&start).unwrap();
            let ControlBody::Start {
                stream_id,
                media_token,
            } = frame.body
            else {
                panic!("START expected: {frame:?}");
            };
            assert_eq!(stream_id, stream());
            assert_eq!(media_token.unwrap().as_bytes(), b"T".repeat(43).as_slice());
            let id = ConnectionId::from_random([7; 16]);
            self.socket
                .send_to(&encode_start_ack(&id, &stream()), from)
                .await
                .unwrap();
            from
        }
    }

    #[tokio::test]
    async fn the_relay_is_the_urls_host_with_the_grants_port() {
        for (url, want) in [
            ("ws://127.0.0.1:8080/", "127.0.0.1:40001"),
            ("wss://127.0.0.1/ws", "127.0.0.1:40001"),
            ("ws://[::1]:8080/", "[::1]:40001"),
        ] {
            let got = relay_address(url, 40001).await.unwrap();
            assert_eq!(got, want.parse::<SocketAddr>().unwrap(), "{url}");
        }
        let localhost = relay_address("ws://localhost:8080/", 40001).await.unwrap();
        assert!(localhost.ip().is_loopback() && localhost.port() == 40001);
    }

    #[tokio::test]
    async fn a_url_that_is_not_a_websocket_url_is_invalid_input() {
        for url in [
            "http://127.0.0.1:8080/",
            "127.0.0.1:8080",
            "ws:///path",
            "not a url",
        ] {
            let error = relay_address(url, 1).await.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{url}");
        }
    }

    #[tokio::test]
    async fn a_synthetic_stream_goes_out_after_the_handshake_every_frame_in_its_fragments() {
        let relay = FakeRelay::bind().await;
        let mut publishing = publish(relay.addr(), config(Some(10))).await.unwrap();
        assert_eq!(publishing.phase(), Phase::AwaitAck);
        let tuple = relay.accept().await;
        assert_eq!(tuple, publishing.local_addr());
        assert!(publishing.streaming().await);
        // START_CONFIRM first (then its resends), and 10 frames of 1000 + 993 + 27 bytes.
        let mut sizes: std::collections::BTreeMap<i64, Vec<usize>> = Default::default();
        let mut confirms = 0;
        let mut first_data_after_confirm = None;
        while sizes.values().map(Vec::len).sum::<usize>() < 30 {
            let (datagram, _) = relay.recv().await;
            match classify(&datagram) {
                DatagramKind::Control(ControlKind::StartConfirm) => confirms += 1,
                DatagramKind::Data => {
                    first_data_after_confirm.get_or_insert(confirms);
                    let data = decode_data(&datagram).unwrap();
                    assert_eq!(data.header.frequency, 1_000_000_000);
                    sizes
                        .entry(data.header.sequence)
                        .or_default()
                        .push(datagram.len());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            first_data_after_confirm,
            Some(1),
            "no DATA before START_CONFIRM"
        );
        assert_eq!(
            sizes.keys().copied().collect::<Vec<_>>(),
            (1..=10).collect::<Vec<_>>()
        );
        assert!(sizes.values().all(|s| s == &[1000, 993, 27]), "{sizes:?}");
        let published = tokio::time::timeout(WAIT, publishing.finished())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            published,
            Published {
                outcome: Some(Outcome::Finished),
                sent_frames: 10
            }
        );
    }

    #[tokio::test]
    async fn nothing_listening_ends_with_no_answer_after_the_retries() {
        let vacant = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = vacant.local_addr().unwrap();
        drop(vacant);
        let started = Instant::now();
        let mut publishing = publish(addr, config(Some(10))).await.unwrap();
        assert!(!publishing.streaming().await);
        let published = publishing.finished().await.unwrap();
        assert_eq!(published.outcome, Some(Outcome::NoStartAck));
        assert_eq!(published.sent_frames, 0);
        // 50 + 100 + 100 ms of retries.
        assert!(started.elapsed() >= Duration::from_millis(250));
        assert!(started.elapsed() < WAIT);
    }

    #[tokio::test]
    async fn an_error_from_the_relay_ends_with_its_code() {
        let relay = FakeRelay::bind().await;
        let publishing = publish(relay.addr(), config(Some(10))).await.unwrap();
        let (_, from) = relay.recv().await;
        let refusal = encode_error(ErrorCode::BadToken, &ConnectionId::ZERO, Some(&stream()));
        relay.socket.send_to(&refusal, from).await.unwrap();
        let published = tokio::time::timeout(WAIT, publishing.finished())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(published.outcome, Some(Outcome::Refused(6)));
        assert_eq!(published.sent_frames, 0);
    }

    #[tokio::test]
    async fn a_start_ack_from_another_address_never_reaches_the_publisher() {
        let relay = FakeRelay::bind().await;
        let spoofer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let publishing = publish(relay.addr(), config(Some(10))).await.unwrap();
        let (_, from) = relay.recv().await;
        let id = ConnectionId::from_random([9; 16]);
        spoofer
            .send_to(&encode_start_ack(&id, &stream()), from)
            .await
            .unwrap();
        let published = tokio::time::timeout(WAIT, publishing.finished())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(published.outcome, Some(Outcome::NoStartAck));
    }

    #[tokio::test]
    async fn application_frames_go_out_once_streaming_numbered_from_1() {
        let relay = FakeRelay::bind().await;
        let mut app = config(None);
        app.source = Source::Application;
        let mut publishing = publish(relay.addr(), app).await.unwrap();
        assert_eq!(
            publishing.send_frame(vec![1u8; 10]),
            Err(SendFrameError::NotStreaming)
        );
        relay.accept().await;
        assert!(publishing.streaming().await);
        publishing.send_frame(vec![0xAB; 1500]).unwrap();
        publishing.send_frame(b"hello".to_vec()).unwrap();
        let mut data = Vec::new();
        while data.len() < 3 {
            let (datagram, _) = relay.recv().await;
            if classify(&datagram) == DatagramKind::Data {
                let d = decode_data(&datagram).unwrap();
                data.push((d.header.sequence, d.payload.to_vec()));
            }
        }
        assert_eq!(data[0].0, 1);
        assert_eq!(data[1].0, 1);
        assert_eq!(
            [data[0].1.clone(), data[1].1.clone()].concat(),
            vec![0xAB; 1500]
        );
        assert_eq!(data[2], (2, b"hello".to_vec()));
        publishing.stop();
        let published = tokio::time::timeout(WAIT, publishing.finished())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            published,
            Published {
                outcome: None,
                sent_frames: 2
            }
        );
    }

    #[tokio::test]
    async fn a_synthetic_publisher_takes_no_application_frames_and_stops_on_request() {
        let relay = FakeRelay::bind().await;
        let mut publishing = publish(relay.addr(), config(None)).await.unwrap();
        relay.accept().await;
        assert!(publishing.streaming().await);
        assert_eq!(
            publishing.send_frame(vec![1u8; 10]),
            Err(SendFrameError::Synthetic)
        );
        publishing.stop();
        let published = tokio::time::timeout(WAIT, publishing.finished())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            published.outcome, None,
            "an endless stream ends only when stopped"
        );
        assert!(published.sent_frames >= 1);
    }
}
