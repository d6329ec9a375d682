//! Receiving a media stream (issue 13 §4): the tokio driver around the sans-IO
//! [`Initiator`], as `loudsync media recv` and a relay subscriber use it.
//!
//! [`receive`] binds a UDP socket of the server's address family (loopback for a loopback
//! server, else the unspecified address) and *connects* it to the server, so the kernel hands
//! this socket datagrams from that address only: a datagram spoofed from anywhere else never
//! reaches the initiator. It then loops: send what the initiator hands out, feed it every
//! datagram received, wake it at [`Initiator::poll_timeout`], pass each classified frame to
//! the caller's callback, until the initiator has an [`Outcome`] (or the caller's stop future
//! completes, with [`receive_with`]).
//!
//! An ICMP "port unreachable" reported on the connected socket (nothing listening yet) is not
//! an error here: the initiator's retries and give-up (D18) decide, so "no answer" ends the
//! same way whether the packets vanish or bounce.
//!
//! [`StartMode::Legacy`] speaks upstream ctsTraffic's one-way start (D28): every START the
//! initiator would send (on the D18 schedule) goes out as the 5-byte `START`, the LEGACY_ID
//! answer is handed to the initiator as the START_ACK it stands for (so the handshake time
//! is first START to LEGACY_ID, D32), and START_CONFIRMs are not sent (a legacy sender
//! streams at once).

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use loudsync_core::media::initiator::Initiator;
/// The initiator's configuration, outcome, frame records and totals, re-exported so an
/// application needs no direct dependency on the core crate.
pub use loudsync_core::media::initiator::{
    FrameRecord, FrameStatus, InitiatorConfig, Outcome, Summary, CSV_HEADER,
};
use loudsync_protocol::media::{
    classify, decode_legacy_id, encode_start_ack, ControlKind, DatagramKind, LEGACY_START,
    MAX_DATAGRAM_SIZE,
};

use super::socket::{bounced, connect, host_monotonic_origin, now, send, sleep_until};

/// How the stream is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartMode {
    /// The 3-way handshake: START, START_ACK, START_CONFIRM (§2-§4).
    #[default]
    Handshake,
    /// Upstream ctsTraffic's one-way 5-byte `START`, answered by LEGACY_ID and the stream
    /// (`--legacy-start`, D28; the server must allow it).
    Legacy,
}

/// How a receive ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Received {
    /// The initiator's outcome; `None` when the stop future of [`receive_with`] completed
    /// first.
    pub outcome: Option<Outcome>,
    /// The totals (D32) at the end.
    pub summary: Summary,
}

/// Receives the stream `config` describes from `server` with the 3-way handshake, handing
/// every classified frame (seq ascending, D30's rows) to `on_frame`, until the initiator ends.
///
/// With `config.frames` unknown (`None`, a relay subscriber) the stream has no end the
/// initiator knows of: use [`receive_with`] and a stop future.
///
/// ```no_run
/// use loudsync_client::media::receiver::{receive, InitiatorConfig};
/// use loudsync_protocol::media::{StreamId, StreamParams};
///
/// # async fn run() -> std::io::Result<()> {
/// let params = StreamParams::new(808_000, 50, 1000).expect("valid settings");
/// let stream = StreamId::new("synthetic").expect("a valid stream id");
/// let config = InitiatorConfig::new(stream, params, 50, Some(100));
/// let received = receive("127.0.0.1:4444".parse().unwrap(), config, |frame| {
///     println!("{}", frame.csv_row());
/// })
/// .await?;
/// println!("{:?}: {} of 100 frames", received.outcome, received.summary.success);
/// # Ok(())
/// # }
/// ```
pub async fn receive(
    server: SocketAddr,
    config: InitiatorConfig,
    on_frame: impl FnMut(FrameRecord),
) -> io::Result<Received> {
    receive_with(
        server,
        config,
        StartMode::Handshake,
        on_frame,
        std::future::pending(),
    )
    .await
}

/// [`receive`] with a choice of [`StartMode`] and a `stop` future: when it completes first,
/// the receive ends with `outcome: None` and the totals so far.
pub async fn receive_with(
    server: SocketAddr,
    config: InitiatorConfig,
    mode: StartMode,
    mut on_frame: impl FnMut(FrameRecord),
    stop: impl Future<Output = ()>,
) -> io::Result<Received> {
    let mut config = config;
    // The receiver counter counts the host's monotonic clock unless told otherwise (D30).
    config
        .clock_origin
        .get_or_insert_with(host_monotonic_origin);
    let socket = connect(server).await?;
    let stream_id = config.stream_id.clone();
    let mut initiator = Initiator::new(config, now());
    let mut buf = vec![0u8; MAX_DATAGRAM_SIZE];
    tokio::pin!(stop);
    loop {
        while let Some(datagram) = initiator.poll_transmit() {
            let datagram = match (mode, classify(&datagram)) {
                (StartMode::Handshake, _) => datagram,
                (StartMode::Legacy, DatagramKind::Control(ControlKind::Start)) => {
                    LEGACY_START.to_vec()
                }
                (StartMode::Legacy, DatagramKind::Control(ControlKind::StartConfirm)) => continue,
                (StartMode::Legacy, _) => datagram,
            };
            send(&socket, &datagram).await?;
        }
        while let Some(frame) = initiator.poll_frame() {
            on_frame(frame);
        }
        if let Some(outcome) = initiator.outcome() {
            return Ok(Received {
                outcome: Some(outcome),
                summary: initiator.summary(),
            });
        }
        let wake = initiator.poll_timeout();
        tokio::select! {
            received = socket.recv(&mut buf) => match received {
                Ok(len) => {
                    let now = now();
                    let datagram = &buf[..len];
                    match (mode, classify(datagram)) {
                        (StartMode::Legacy, DatagramKind::LegacyId) => {
                            if let Some(id) = decode_legacy_id(datagram) {
                                initiator.handle_datagram(now, &encode_start_ack(&id, &stream_id));
                            }
                        }
                        _ => initiator.handle_datagram(now, datagram),
                    }
                }
                Err(error) if bounced(&error) => {}
                Err(error) => return Err(error),
            },
            () = sleep_until(wake) => initiator.handle_timeout(now()),
            () = &mut stop => {
                return Ok(Received { outcome: None, summary: initiator.summary() });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loudsync_protocol::media::{StreamId, StreamParams};
    use std::time::Duration;
    use std::time::Instant;
    use tokio::net::UdpSocket;

    fn config() -> InitiatorConfig {
        let params = StreamParams::new(808_000, 50, 1000).unwrap();
        let mut config =
            InitiatorConfig::new(StreamId::new("synthetic").unwrap(), params, 50, Some(2));
        config.retry_initial = Duration::from_millis(50);
        config.retry_max = Duration::from_millis(100);
        config
    }

    #[tokio::test]
    async fn nothing_listening_ends_with_no_answer_after_the_retries() {
        let vacant = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = vacant.local_addr().unwrap();
        drop(vacant);
        let started = Instant::now();
        let received = receive(addr, config(), |_| {}).await.unwrap();
        assert_eq!(received.outcome, Some(Outcome::NoStartAck));
        // 50 + 100 + 100 ms of retries.
        assert!(started.elapsed() >= Duration::from_millis(250));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn datagrams_from_another_address_are_never_fed_to_the_initiator() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let spoofer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server_addr = server.local_addr().unwrap();
        let task = tokio::spawn(receive(server_addr, config(), |_| {}));
        let mut buf = [0u8; 2048];
        let (_, client) = server.recv_from(&mut buf).await.unwrap();
        // A START_ACK from the wrong address would move the initiator on; it never arrives.
        let id = loudsync_protocol::media::ConnectionId::from_random([7; 16]);
        let ack = encode_start_ack(&id, &StreamId::new("synthetic").unwrap());
        spoofer.send_to(&ack, client).await.unwrap();
        let received = task.await.unwrap().unwrap();
        assert_eq!(received.outcome, Some(Outcome::NoStartAck));
        assert_eq!(received.summary.handshake_ms, None);
    }

    #[tokio::test]
    async fn the_stop_future_ends_the_receive_without_an_outcome() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let received = receive_with(
            server.local_addr().unwrap(),
            config(),
            StartMode::Handshake,
            |_| {},
            tokio::time::sleep(Duration::from_millis(20)),
        )
        .await
        .unwrap();
        assert_eq!(received.outcome, None);
    }

    #[tokio::test]
    async fn legacy_mode_sends_the_five_byte_start() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let task = tokio::spawn(receive_with(
            server.local_addr().unwrap(),
            config(),
            StartMode::Legacy,
            |_| {},
            std::future::pending(),
        ));
        let mut buf = [0u8; 2048];
        let (len, _) = server.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..len], LEGACY_START);
        let received = task.await.unwrap().unwrap();
        assert_eq!(received.outcome, Some(Outcome::NoStartAck));
    }
}
