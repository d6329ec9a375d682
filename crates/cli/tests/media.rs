//! `loudsync media serve` and `loudsync media recv` over real UDP on loopback (issue 13 §7,
//! §8): the receiver's counts and CSV, the sender's pacing measured from the DATA headers'
//! own timestamps (so this process's scheduling does not matter), the handshake's rules seen
//! from a raw test socket, the exit codes and messages, and a clean stop on SIGTERM/SIGINT.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use loudsync_protocol::media::{
    classify, decode_control, decode_data, encode_start, encode_start_confirm, ConnectionId,
    ControlBody, DatagramKind, StreamId, LEGACY_START,
};

/// The §8 stream: 2020-byte frames (1000/993/27-byte datagrams), 100 frames at 50 fps.
const STREAM_8: [&str; 8] = [
    "--bitrate",
    "808000",
    "--fps",
    "50",
    "--datagram-size",
    "1000",
    "--duration",
    "2s",
];

/// A running `media serve`, killed when dropped.
struct Serve {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `loudsync media serve --listen 127.0.0.1:0 ARGS` and reads its listening line.
fn serve(args: &[&str]) -> Serve {
    serve_with_env(args, &[])
}

/// [`serve`] with environment variables.
fn serve_with_env(args: &[&str], env: &[(&str, &str)]) -> Serve {
    let mut child = Command::new(env!("CARGO_BIN_EXE_loudsync"))
        .args(["media", "serve", "--listen", "127.0.0.1:0", "--log", "warn"])
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn loudsync");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("loudsync media listening on udp://")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .parse()
        .expect("address");
    Serve { child, addr }
}

/// Runs `loudsync media recv --connect ADDR ARGS` to its end.
fn recv(addr: SocketAddr, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loudsync"))
        .args([
            "media",
            "recv",
            "--connect",
            &addr.to_string(),
            "--log",
            "warn",
        ])
        .args(args)
        .output()
        .expect("run loudsync")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A raw test socket connected to the server (datagrams from elsewhere are not read).
fn raw(server: SocketAddr) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(server).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    socket
}

fn synthetic() -> StreamId {
    StreamId::new("synthetic").unwrap()
}

/// The next datagram, or a panic after the read timeout.
fn next(socket: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0u8; 65_536];
    let len = socket.recv(&mut buf).expect("a datagram in time");
    buf.truncate(len);
    buf
}

/// Sends START and returns the START_ACK's connection id.
fn start(socket: &UdpSocket) -> ConnectionId {
    socket.send(&encode_start(&synthetic(), None)).unwrap();
    let reply = next(socket);
    let frame = decode_control(&reply).expect("a control frame");
    assert!(
        matches!(&frame.body, ControlBody::StartAck { stream_id } if *stream_id == synthetic()),
        "{frame:?}"
    );
    frame.connection_id
}

/// A port with nothing listening on it (bound, then released).
fn vacant_port() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("loudsync-media-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn recv_against_serve_receives_every_frame_and_writes_one_csv_row_per_frame() {
    let server = serve(&STREAM_8);
    let csv = scratch("csv").join("frames.csv");
    let mut args = STREAM_8.to_vec();
    args.extend(["--csv", csv.to_str().unwrap()]);
    let started = Instant::now();
    let out = recv(server.addr, &args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // duration + buffer depth + 3 s of the handshake at most (D32).
    assert!(started.elapsed() < Duration::from_secs(6));
    let text = stdout(&out);
    let last = text.lines().last().expect("a summary line");
    assert!(
        last.starts_with("summary expected=100 success=100 dropped=0 duplicate=0 jitter_ms="),
        "{last}"
    );
    for field in [" tif_ms=", " handshake_ms="] {
        assert!(last.contains(field), "{last}");
    }
    let rows = std::fs::read_to_string(&csv).unwrap();
    let mut lines = rows.lines();
    assert_eq!(
        lines.next(),
        Some("seq,senderQpc,senderQpf,receiverQpc,receiverQpf,timeInFlightMs,jitter")
    );
    let seqs: Vec<u64> = lines
        .map(|row| {
            let fields: Vec<&str> = row.split(',').collect();
            assert_eq!(fields.len(), 7, "{row}");
            assert_eq!(fields[2], "1000000000", "{row}");
            assert_eq!(fields[4], "1000000000", "{row}");
            fields[0].parse().unwrap()
        })
        .collect();
    assert_eq!(seqs, (1..=100).collect::<Vec<u64>>());
}

#[test]
fn serve_without_batched_socket_calls_streams_the_same() {
    let server = serve_with_env(&STREAM_8, &[("LOUDSYNC_MEDIA_BATCHING", "off")]);
    let out = recv(server.addr, &STREAM_8);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let last = text.lines().last().expect("a summary line");
    assert!(
        last.starts_with("summary expected=100 success=100 dropped=0 duplicate=0 "),
        "{last}"
    );
}

/// One DATA datagram as the test socket saw it.
struct Seen {
    seq: i64,
    size: usize,
    timestamp: i64,
}

#[test]
fn serve_paces_frames_on_its_own_clock_and_keeps_numbering_through_a_duplicate_confirm() {
    let server = serve(&STREAM_8);
    let socket = raw(server.addr);
    let id = start(&socket);
    let confirm = encode_start_confirm(&id, &synthetic());
    socket.send(&confirm).unwrap();
    let confirmed = Instant::now();
    let first = next(&socket);
    let first_after = confirmed.elapsed();
    let mut seen = Vec::new();
    let mut datagram = first;
    let mut confirmed_again = false;
    loop {
        assert_eq!(classify(&datagram), DatagramKind::Data);
        let data = decode_data(&datagram).unwrap();
        seen.push(Seen {
            seq: data.header.sequence,
            size: datagram.len(),
            timestamp: data.header.timestamp,
        });
        assert_eq!(data.header.frequency, 1_000_000_000);
        if data.header.sequence == 50 && !confirmed_again {
            // A duplicate START_CONFIRM mid-stream changes nothing (D12 step 6, D21).
            socket.send(&confirm).unwrap();
            confirmed_again = true;
        }
        if seen.len() == 300 {
            break;
        }
        datagram = next(&socket);
    }
    assert!(
        first_after < Duration::from_millis(100),
        "frame 1 came {first_after:?} after START_CONFIRM"
    );
    // Every frame 1..100 in order, as 1000/993/27-byte fragments, timestamps never back.
    for (i, d) in seen.iter().enumerate() {
        assert_eq!(d.seq, (i / 3 + 1) as i64, "datagram {i}");
        assert_eq!(d.size, [1000, 993, 27][i % 3], "datagram {i}");
    }
    assert!(seen.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
    // Pacing against t1 + n * 20 ms, from the frames' first fragments.
    let stamps: Vec<i64> = seen.iter().step_by(3).map(|d| d.timestamp).collect();
    let t1 = stamps[0];
    let offsets_ms: Vec<f64> = stamps
        .iter()
        .enumerate()
        .map(|(n, &t)| (t - t1 - n as i64 * 20_000_000) as f64 / 1e6)
        .collect();
    let within = |ms: f64| offsets_ms.iter().filter(|o| o.abs() <= ms).count();
    assert!(
        within(5.0) >= 80,
        "±5 ms: {} of 100 {offsets_ms:?}",
        within(5.0)
    );
    assert!(
        within(15.0) >= 95,
        "±15 ms: {} of 100 {offsets_ms:?}",
        within(15.0)
    );
    assert!(
        offsets_ms.iter().all(|&o| o >= -5.0),
        "a frame more than 5 ms early: {offsets_ms:?}"
    );
    let span = (stamps[99] - t1) as f64 / 1e9;
    assert!((span - 1.98).abs() <= 1.98 * 0.03, "span {span} s");
    // After the last frame the tuple is forgotten: a new START is a new stream (D17).
    let again = start(&socket);
    assert_ne!(again, id);
}

#[test]
fn recv_with_nothing_listening_gives_up_after_the_retries_with_exit_5() {
    let started = Instant::now();
    let mut args = STREAM_8.to_vec();
    args.extend(["--retry-initial", "100ms", "--retry-max", "200ms"]);
    let out = recv(vacant_port(), &args);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert_eq!(stderr(&out).trim_end(), "media recv: no answer");
    // Sends at 0, 100 and 300 ms, then 200 ms more (D18 with these timers).
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[test]
fn a_full_server_refuses_with_error_5_and_an_unknown_stream_gets_error_3() {
    let mut args = STREAM_8.to_vec();
    args.extend(["--max-streams", "1", "--confirm-timeout", "2s"]);
    let server = serve(&args);
    // A first receiver holds the only place (pending its confirm for 2 s).
    let holder = raw(server.addr);
    start(&holder);
    let out = recv(server.addr, &STREAM_8);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert_eq!(stderr(&out).trim_end(), "media recv: error 5 REFUSED");
    // The stream check comes before the capacity check (D12 step 5).
    let mut other = STREAM_8.to_vec();
    other.extend(["--stream-id", "other"]);
    let out = recv(server.addr, &other);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).trim_end(),
        "media recv: error 3 UNKNOWN_STREAM"
    );
    assert!(!stdout(&out).contains("summary"));
}

/// The §8 legacy stream: 1000-byte frames in one datagram each, 50 frames.
const LEGACY_STREAM: [&str; 9] = [
    "--bitrate",
    "400000",
    "--fps",
    "50",
    "--datagram-size",
    "1400",
    "--duration",
    "1s",
    "--legacy-start",
];

#[test]
fn legacy_start_streams_to_the_five_byte_start_only_when_the_server_allows_it() {
    let server = serve(&LEGACY_STREAM);
    let out = recv(server.addr, &LEGACY_STREAM);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let last = text.lines().last().unwrap();
    assert!(
        last.starts_with("summary expected=50 success=50 dropped=0 duplicate=0 "),
        "{last}"
    );
    // Without --legacy-start the 5-byte START is dropped (D2, D28): the first answer this
    // socket gets is the START_ACK to the proper START sent after it, never a LEGACY_ID.
    let strict = serve(&LEGACY_STREAM[..8]);
    let socket = raw(strict.addr);
    socket.send(LEGACY_START).unwrap();
    start(&socket);
    // And `recv --legacy-start` against it hears nothing.
    let mut args = LEGACY_STREAM.to_vec();
    args.extend(["--retry-initial", "100ms", "--retry-max", "200ms"]);
    let out = recv(strict.addr, &args);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert_eq!(stderr(&out).trim_end(), "media recv: no answer");
}

#[test]
fn invalid_settings_exit_1_with_an_error_and_unparsable_ones_exit_2() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_loudsync"))
            .args(args)
            .output()
            .unwrap()
    };
    let tiny = [
        "--bitrate",
        "800",
        "--fps",
        "50",
        "--duration",
        "2s",
        "--log",
        "warn",
    ];
    let mut serve_args = vec!["media", "serve", "--listen", "127.0.0.1:0"];
    serve_args.extend(tiny);
    let out = run(&serve_args);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).starts_with("Error: "), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("below the minimum of 40"),
        "{}",
        stderr(&out)
    );
    assert!(!stdout(&out).contains("listening"));
    let mut recv_args = vec!["media", "recv", "--connect", "127.0.0.1:9"];
    recv_args.extend(tiny);
    let out = run(&recv_args);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).starts_with("Error: "), "{}", stderr(&out));
    let mut unwritable = vec!["media", "recv", "--connect", "127.0.0.1:9"];
    unwritable.extend(&STREAM_8);
    unwritable.extend(["--csv", "/nonexistent-loudsync-dir/frames.csv"]);
    let out = run(&unwritable);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("Error: cannot write --csv"),
        "{}",
        stderr(&out)
    );
    let big = [
        "media",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--bitrate",
        "808000",
        "--fps",
        "50",
        "--datagram-size",
        "65508",
        "--duration",
        "2s",
    ];
    let out = run(&big);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--datagram-size 65508"),
        "{}",
        stderr(&out)
    );
    let bare = [
        "media",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--bitrate",
        "808000",
        "--fps",
        "50",
        "--duration",
        "2",
    ];
    let out = run(&bare);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--duration"), "{}", stderr(&out));
}

#[test]
fn serve_stops_cleanly_on_sigterm_and_sigint() {
    for signal in ["-TERM", "-INT"] {
        let mut server = serve(&STREAM_8);
        // Mid-stream, so the loop is busy when the signal comes.
        let socket = raw(server.addr);
        let id = start(&socket);
        socket
            .send(&encode_start_confirm(&id, &synthetic()))
            .unwrap();
        next(&socket);
        let status = Command::new("kill")
            .args([signal, &server.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let started = Instant::now();
        loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                assert_eq!(status.code(), Some(0), "{signal}: {status:?}");
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(5), "did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn help_teaches_the_flags_and_their_defaults() {
    for (command, flags) in [
        (
            "serve",
            &[
                "--listen",
                "0.0.0.0:4444",
                "--max-streams",
                "64",
                "--confirm-timeout",
                "5s",
                "--legacy-start",
                "1400",
                "synthetic",
            ][..],
        ),
        (
            "recv",
            &[
                "--connect",
                "--buffer-depth",
                "--csv",
                "--retry-initial",
                "500ms",
                "--retry-max",
                "--retry-attempts",
            ][..],
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_loudsync"))
            .args(["media", command, "--help"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        let help = stdout(&out);
        for flag in flags {
            assert!(
                help.contains(flag),
                "media {command} --help lacks {flag}:\n{help}"
            );
        }
    }
}
