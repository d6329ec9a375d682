//! `loudsync bench media`: the session media relay of `loudsync serve --media-listen` (issue
//! 13 §9) under load, on loopback, next to `iperf3 -u`.
//!
//! Every run is a fresh session on the relay: a host and its subscribers join over the
//! WebSocket, each asks for a `media_token` (the host gets `publish`, the others `subscribe`),
//! each opens a UDP socket connected to the relay and does the 3-way handshake (START with its
//! token, START_ACK, START_CONFIRM); the subscribers first, then the publisher, which streams
//! paced DATA frames of the ctsTraffic layout for `--step-duration`. When it stops, the
//! subscribers drain, the members leave, and the figures are read:
//!
//! - **Throughput steps** (`--rates`, Mbit/s of UDP payload): one publisher to one subscriber,
//!   frames of `--frame-datagrams` datagrams of `--datagram-size` bytes (so fps = bitrate / 8 /
//!   frame size, and a frame is a short burst as iperf3's pacing makes one). Each step is
//!   followed by `iperf3 -s -1` + `iperf3 -u -c 127.0.0.1 -b RATE -l SIZE -t SECS --json` at the
//!   same rate and size (the receiver's `sum_received` figures), so the two alternate in one run.
//! - **Fan-out** (`--fanout`, subscriber counts): one publisher at `--fanout-rate` to N
//!   subscribers: server CPU (utime + stime from `/proc/PID/stat`, over the stream) per relayed
//!   datagram (`loudsync_media_datagrams_relayed_total` from `/metrics`, the same window),
//!   datagrams relayed per second, and loss, jitter and time in flight per subscriber.
//! - **Batched vs unbatched** (`--batching both`): every relay measurement runs on two
//!   spawned servers, one with `LOUDSYNC_MEDIA_BATCHING=off` (one `recv_from` / `send_to` per
//!   datagram instead of `recvmmsg` / `sendmmsg`), alternating.
//!
//! The generator is one process: the WebSocket members on a one-thread tokio runtime, the
//! publisher on a blocking thread of its own, the subscribers as tasks on another one-thread
//! runtime (every socket in one epoll; `--receivers threads` gives each a blocking thread
//! instead, whose wake-up per datagram the kernel charges partly to the relay's send on
//! loopback). A second process would add no core on this machine. Loss is `1 - received / sent` per subscriber (the
//! publisher counts what it sent after every subscriber confirmed). Time in flight is the
//! arrival instant minus the DATA header's sender timestamp, both on one monotonic clock of
//! this process, for the last datagram of each frame; jitter is the mean absolute difference of
//! consecutive received frames' times in flight (`media recv`'s `jitter_ms`, D32).

use std::io::{BufRead, BufReader, ErrorKind};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use clap::{Args, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use loudsync_core::media::pacer::{counter, frame_due};
use loudsync_protocol::media::{
    decode_control, decode_data, encode_start, encode_start_confirm, write_data, ControlBody,
    DataHeader, ErrorCode, MediaToken, StreamId, StreamParams, FREQUENCY, MAX_DATAGRAM_SIZE,
};
use loudsync_protocol::{encode_client, ClientMessage, DeviceType};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_websockets::{ClientBuilder, Message};

use super::worker::{message_type, BenchDialect, Ws};
use super::{http, probe, Common, SpawnedServer, BENCH_SERVER_DEFAULTS};

/// Options of `bench media`.
#[derive(Args)]
pub struct MediaArgs {
    #[command(flatten)]
    common: Common,
    /// What to run: `throughput` (1 -> 1 at rising bitrates, next to iperf3), `fanout`
    /// (1 -> N).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "throughput,fanout"
    )]
    phases: Vec<Phase>,
    /// Publisher bitrates of the throughput steps, Mbit/s of UDP payload.
    #[arg(long, value_delimiter = ',', default_value = "50,100,200,400,800,1600")]
    rates: Vec<f64>,
    /// How long the publisher streams in each step (and iperf3's `-t`, whole seconds).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    step_duration: Duration,
    /// UDP payload bytes per datagram (and iperf3's `-l`).
    #[arg(long, default_value_t = 1400)]
    datagram_size: usize,
    /// Datagrams per frame: fps = bitrate / 8 / (this x --datagram-size).
    #[arg(long, default_value_t = 4)]
    frame_datagrams: usize,
    /// The iperf3 binary for the side-by-side steps.
    #[arg(long, default_value = "iperf3")]
    iperf3: String,
    /// Skip the iperf3 steps.
    #[arg(long)]
    no_iperf3: bool,
    /// Subscriber counts of the fan-out runs.
    #[arg(long, value_delimiter = ',', default_value = "1,10,50,100")]
    fanout: Vec<usize>,
    /// Publisher bitrate of the fan-out runs, Mbit/s of UDP payload.
    #[arg(long, default_value_t = 8.0)]
    fanout_rate: f64,
    /// The relay's datagram I/O: `on` (recvmmsg/sendmmsg), `off` (a spawned server with
    /// `LOUDSYNC_MEDIA_BATCHING=off`), or `both`: every relay run on two spawned servers,
    /// alternating.
    #[arg(long, value_enum, default_value = "on")]
    batching: BatchingChoice,
    /// Record a CPU profile of the (first) server with `perf record -e cpu-clock -g` during the
    /// largest fan-out run, into this file (`perf report -i FILE` reads it).
    #[arg(long)]
    perf_record: Option<PathBuf>,
    /// How the subscribers receive: `epoll` (a task each on one tokio thread, all sockets in
    /// one epoll) or `threads` (a blocking thread each: every datagram wakes a thread, a cost
    /// the kernel charges partly to the relay's send on loopback).
    #[arg(long, value_enum, default_value = "epoll")]
    receivers: ReceiverKind,
    /// SO_RCVBUF and SO_SNDBUF of the bench's own UDP sockets (publisher and subscribers), and
    /// iperf3's `-w` (both its ends), in bytes; the kernel caps it at `net.core.rmem_max` /
    /// `wmem_max` and doubles it. Unset: the kernel's defaults on both, as the relay's socket.
    #[arg(long)]
    socket_buffer: Option<u32>,
}

/// How the subscribers receive (see `--receivers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ReceiverKind {
    /// One tokio thread, a task per socket.
    Epoll,
    /// A blocking thread per socket.
    Threads,
}

/// A part of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Phase {
    /// 1 publisher -> 1 subscriber at rising bitrates, each step next to iperf3.
    Throughput,
    /// 1 publisher -> N subscribers at a fixed bitrate.
    Fanout,
}

/// Which relay I/O the servers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BatchingChoice {
    /// Batched system calls (the default).
    On,
    /// One datagram per system call.
    Off,
    /// Both, on two servers.
    Both,
}

/// A server with a relay, and how to measure it.
struct RelayServer {
    /// `batched` or `unbatched` (or `given` for a `--url` server).
    label: &'static str,
    addr: SocketAddr,
    path: String,
    pid: Option<u32>,
    _spawned: Option<SpawnedServer>,
}

/// Runs the scenario.
pub(super) fn run(a: MediaArgs) -> anyhow::Result<()> {
    let common = &a.common;
    ensure!(
        common.dialect == BenchDialect::Loudsync,
        "the app's dialect has no media_token message (R3)"
    );
    ensure!(
        a.frame_datagrams >= 1,
        "--frame-datagrams must be at least 1"
    );
    ensure!(
        (64..=MAX_DATAGRAM_SIZE).contains(&a.datagram_size),
        "--datagram-size must be within 64..{MAX_DATAGRAM_SIZE}"
    );
    let largest = a.fanout.iter().copied().max().unwrap_or(1).max(1);
    let servers = servers(&a, largest)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The subscribers' own runtime, one thread: every socket in one epoll.
    let receivers_runtime = match a.receivers {
        ReceiverKind::Epoll => Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?,
        ),
        ReceiverKind::Threads => None,
    };
    let handle = receivers_runtime.as_ref().map(|r| r.handle());
    let tag = format!("m{:x}", fastrand::u32(..));
    let mut out = serde_json::Map::new();
    let quiet = common.json;
    if !quiet {
        for s in &servers {
            eprintln!(
                "bench media: {} relay, server {}{}",
                s.label,
                s.addr,
                s.pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
            );
        }
    }
    let mut run_no = 0usize;
    if a.phases.contains(&Phase::Throughput) {
        let mut steps = Vec::new();
        for &rate in &a.rates {
            let mut step = serde_json::Map::new();
            step.insert("rate_mbit".into(), json!(rate));
            for server in &servers {
                run_no += 1;
                let session = format!("{tag}-{run_no}");
                let r = runtime
                    .block_on(relay_run(&a, server, &session, rate, 1, None, handle))
                    .with_context(|| format!("relay at {rate} Mbit/s ({})", server.label))?;
                if !quiet {
                    print_throughput_line(server.label, rate, &r);
                }
                step.insert(format!("relay_{}", server.label), r);
            }
            if !a.no_iperf3 {
                let r =
                    iperf3_step(&a, rate).with_context(|| format!("iperf3 at {rate} Mbit/s"))?;
                if !quiet {
                    print_iperf3_line(rate, &r);
                }
                step.insert("iperf3".into(), r);
            }
            steps.push(Value::Object(step));
        }
        out.insert("throughput".into(), Value::Array(steps));
    }
    if a.phases.contains(&Phase::Fanout) {
        let mut runs = Vec::new();
        for &n in &a.fanout {
            let mut one = serde_json::Map::new();
            one.insert("subscribers".into(), json!(n));
            for (i, server) in servers.iter().enumerate() {
                run_no += 1;
                let session = format!("{tag}-{run_no}");
                let perf = (i == 0 && n == largest)
                    .then_some(a.perf_record.as_ref())
                    .flatten();
                let r = runtime
                    .block_on(relay_run(
                        &a,
                        server,
                        &session,
                        a.fanout_rate,
                        n,
                        perf,
                        handle,
                    ))
                    .with_context(|| format!("fan-out to {n} ({})", server.label))?;
                if !quiet {
                    print_fanout_line(server.label, n, &r);
                }
                one.insert(format!("relay_{}", server.label), r);
            }
            runs.push(Value::Object(one));
        }
        out.insert("fanout".into(), Value::Array(runs));
    }
    let result = Value::Object(out);
    if common.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        summarize(&result);
    }
    Ok(())
}

/// The servers to measure: spawned (one per batching mode) or the `--url` one.
fn servers(a: &MediaArgs, largest: usize) -> anyhow::Result<Vec<RelayServer>> {
    let common = &a.common;
    if !common.spawn_server {
        ensure!(
            a.batching == BatchingChoice::On,
            "--batching off/both needs --spawn-server (the setting is the server's environment)"
        );
        ensure!(
            a.perf_record.is_none() || common.server_pid.is_some(),
            "--perf-record needs --server-pid or --spawn-server"
        );
        let (addr, path, pid, _) = super::target(common)?;
        return Ok(vec![RelayServer {
            label: "given",
            addr,
            path,
            pid,
            _spawned: None,
        }]);
    }
    let modes: &[(&'static str, bool)] = match a.batching {
        BatchingChoice::On => &[("batched", true)],
        BatchingChoice::Off => &[("unbatched", false)],
        BatchingChoice::Both => &[("batched", true), ("unbatched", false)],
    };
    let mut extra = common.server_args.clone();
    if !extra.iter().any(|s| s.starts_with("--max-members")) {
        // The host opens the session by joining it, so the default capacity must hold all.
        extra.push(format!("--max-members={}", largest + 1));
    }
    if !extra.iter().any(|s| s.starts_with("--media-listen")) {
        extra.push("--media-listen=127.0.0.1:0".into());
    }
    modes
        .iter()
        .map(|&(label, batched)| {
            let s = spawn_relay_server(&extra, batched)?;
            Ok(RelayServer {
                label,
                addr: s.addr,
                path: "/".into(),
                pid: Some(s.child.id()),
                _spawned: Some(s),
            })
        })
        .collect()
}

/// `loudsync serve` on a random loopback port with the bench's defaults (as `--spawn-server`
/// does) and `extra`, with `LOUDSYNC_MEDIA_BATCHING=off` unless `batched`.
fn spawn_relay_server(extra: &[String], batched: bool) -> anyhow::Result<SpawnedServer> {
    let mut args: Vec<String> = ["serve", "--listen", "127.0.0.1:0", "--log", "warn"]
        .map(String::from)
        .to_vec();
    for (flag, value) in BENCH_SERVER_DEFAULTS {
        let given = extra
            .iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")));
        if !given {
            args.extend([flag.to_string(), value.to_string()]);
        }
    }
    args.extend(extra.iter().cloned());
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if batched {
        command.env_remove("LOUDSYNC_MEDIA_BATCHING");
    } else {
        command.env("LOUDSYNC_MEDIA_BATCHING", "off");
    }
    let mut child = command.spawn().context("spawn `loudsync serve`")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    let addr = match line.trim().strip_prefix("loudsync listening on http://") {
        Some(addr) => addr.parse()?,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`loudsync serve` said {line:?}");
        }
    };
    Ok(SpawnedServer { child, addr })
}

/// A member of a bench session with its media grant.
struct Member {
    ws: Ws,
    device: String,
    token: MediaToken,
    stream: StreamId,
    relay: SocketAddr,
}

/// Connects, joins `session` (as its host when `host`), and asks for a media token.
async fn join_member(
    server: &RelayServer,
    session: &str,
    device: String,
    host: bool,
) -> anyhow::Result<Member> {
    let tcp = tokio::net::TcpStream::connect(server.addr).await?;
    tcp.set_nodelay(true)?;
    let (mut ws, _) = ClientBuilder::new()
        .uri(&format!("ws://{}{}", server.addr, server.path))?
        .connect_on(tcp)
        .await?;
    let kind = if host {
        DeviceType::Host
    } else {
        DeviceType::Client
    };
    ws.send(Message::text(
        BenchDialect::Loudsync.join(session, &device, kind)?,
    ))
    .await?;
    read_until(&mut ws, "member_list").await.context("join")?;
    ws.send(Message::text(encode_client(
        &ClientMessage::MediaToken,
        unix_ms(),
    )?))
    .await?;
    let grant = read_until(&mut ws, "media_token")
        .await
        .context("media_token")?;
    let want = if host { "publish" } else { "subscribe" };
    ensure!(
        grant["role"] == want,
        "media_token gave role {} to a {want}er",
        grant["role"]
    );
    let token = grant["token"]
        .as_str()
        .and_then(|t| MediaToken::new(t.as_bytes()))
        .context("media_token without a token")?;
    let stream = grant["streamId"]
        .as_str()
        .and_then(StreamId::new)
        .context("media_token without a streamId")?;
    let port = grant["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .context("media_token without a port")?;
    Ok(Member {
        ws,
        device,
        token,
        stream,
        relay: SocketAddr::new(server.addr.ip(), port),
    })
}

/// Reads frames until one of type `kind` (returned, parsed); an `error` or a close fails.
async fn read_until(ws: &mut Ws, kind: &str) -> anyhow::Result<Value> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .with_context(|| format!("no {kind} within 10 s"))?
            .context("closed")??;
        if let Some((code, reason)) = msg.as_close() {
            bail!("closed: {} {reason}", u16::from(code));
        }
        let Some(text) = msg.as_text() else { continue };
        match message_type(text) {
            Some(t) if t == kind => return Ok(serde_json::from_str(text)?),
            Some("error") => bail!("server error: {text}"),
            _ => {}
        }
    }
}

/// Keeps a member in its session (reads what comes, heartbeats every 4 s) until `stop`, then
/// leaves.
async fn keep_member(mut ws: Ws, device: String, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(4));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let beat = BenchDialect::Loudsync.heartbeat(&device, unix_ms());
                if ws.send(Message::text(beat)).await.is_err() {
                    return;
                }
            }
            msg = ws.next() => {
                if !matches!(msg, Some(Ok(_))) {
                    return;
                }
            }
            _ = stop.changed() => break,
        }
    }
    if let Ok(leave) = encode_client(&ClientMessage::leave(None), unix_ms()) {
        let _ = ws.send(Message::text(leave)).await;
    }
    let _ = ws.close().await;
}

/// One relay run: a fresh session, `subscribers` of them, the publisher at `rate_mbit` for
/// `--step-duration`; the figures as JSON.
async fn relay_run(
    a: &MediaArgs,
    server: &RelayServer,
    session: &str,
    rate_mbit: f64,
    subscribers: usize,
    perf: Option<&PathBuf>,
    receivers_runtime: Option<&tokio::runtime::Handle>,
) -> anyhow::Result<Value> {
    let frame = a.frame_datagrams * a.datagram_size;
    let bitrate = (rate_mbit * 1e6).round() as u64;
    let fps = ((bitrate as f64 / 8.0 / frame as f64).round() as u32).max(1);
    let params =
        StreamParams::new(bitrate, fps, a.datagram_size).map_err(|e| anyhow::anyhow!("{e}"))?;

    let host = join_member(server, session, format!("{session}-host"), true).await?;
    let joins =
        (0..subscribers).map(|i| join_member(server, session, format!("{session}-s{i}"), false));
    let subs = futures_util::future::try_join_all(joins).await?;

    // Subscribers first: each confirmed before the publisher sends its first frame.
    let (stop_ws, stop_rx) = watch::channel(false);
    let stop_udp = Arc::new(AtomicBool::new(false));
    let mut receivers: Vec<Receiver> = Vec::with_capacity(subscribers);
    for m in subs {
        let socket = udp_handshake(&m, a.socket_buffer)
            .await
            .with_context(|| format!("subscriber {} handshake", m.device))?;
        let stop = stop_udp.clone();
        receivers.push(match receivers_runtime {
            Some(rt) => Receiver::Task(rt.spawn(receive_async(socket, stop))),
            None => Receiver::Thread(std::thread::spawn(move || receive_blocking(socket, &stop))),
        });
        tokio::spawn(keep_member(m.ws, m.device, stop_rx.clone()));
    }
    let publisher = udp_handshake(&host, a.socket_buffer)
        .await
        .context("publisher handshake")?;
    let relay_port = host.relay.port();
    tokio::spawn(keep_member(host.ws, host.device, stop_rx.clone()));

    let frames = (a.step_duration.as_secs_f64() * f64::from(fps))
        .round()
        .max(1.0) as u64;
    let metrics_before = relayed(server.addr);
    let udp_before = kernel_drops();
    let relay_drops_before = socket_drops(relay_port);
    let cpu_before = server.pid.and_then(probe::sample);
    let profiler = match (perf, server.pid) {
        (Some(path), Some(pid)) => Some(Profiler::start(path, pid)?),
        _ => None,
    };
    let sent =
        tokio::task::spawn_blocking(move || publish(publisher, params, fps, frames)).await??;
    let cpu_after = server.pid.and_then(probe::sample);
    let metrics_after = relayed(server.addr);
    if let Some(p) = profiler {
        p.stop()?;
    }
    // What is in flight arrives within milliseconds on loopback.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_udp.store(true, Ordering::Relaxed);
    let mut stats = Vec::with_capacity(receivers.len());
    for r in receivers {
        stats.push(match r {
            Receiver::Thread(t) => tokio::task::spawn_blocking(move || t.join())
                .await?
                .map_err(|_| anyhow::anyhow!("a subscriber thread panicked"))?,
            Receiver::Task(t) => t.await?,
        });
    }
    let udp_errors = kernel_drops_since(udp_before);
    let relay_socket_drops = match (relay_drops_before, socket_drops(relay_port)) {
        (Some(b), Some(e)) => Some(e.saturating_sub(b)),
        _ => None,
    };
    let _ = stop_ws.send(true);
    tokio::time::sleep(Duration::from_millis(50)).await;

    let span = sent.span.as_secs_f64().max(1e-9);
    let cpu = match (cpu_before, cpu_after) {
        (Some(b), Some(e)) => Some(e.cpu.saturating_sub(b.cpu).as_secs_f64()),
        _ => None,
    };
    let relayed = match (metrics_before, metrics_after) {
        (Some(b), Some(e)) => Some(e - b),
        _ => None,
    };
    let loss: Vec<f64> = stats
        .iter()
        .map(|s| 100.0 * (1.0 - s.datagrams as f64 / sent.datagrams.max(1) as f64))
        .collect();
    let jitter: Vec<f64> = stats
        .iter()
        .filter_map(SubscriberStats::jitter_ms)
        .collect();
    let tif: Vec<f64> = stats.iter().filter_map(SubscriberStats::tif_ms).collect();
    let received_bytes: u64 = stats.iter().map(|s| s.bytes).sum();
    // One subscriber: its own arrival span, as iperf3's receiver measures; else the sender's.
    let received_mbit = match stats.as_slice() {
        [one] => one.mbit().unwrap_or(0.0),
        _ => received_bytes as f64 * 8.0 / span / 1e6 / stats.len().max(1) as f64,
    };
    Ok(json!({
        "session": session,
        "subscribers": subscribers,
        "target_mbit": rate_mbit,
        "fps": fps,
        "frame_bytes": params.frame_size(),
        "datagrams_per_frame": params.fragments().count(),
        "frames": frames,
        "sent_datagrams": sent.datagrams,
        "send_errors": sent.errors,
        "send_span_s": span,
        "offered_mbit": sent.bytes as f64 * 8.0 / span / 1e6,
        "received_mbit_per_subscriber": received_mbit,
        "received_datagrams": stats.iter().map(|s| s.datagrams).sum::<u64>(),
        "loss_percent": spread(&loss),
        "jitter_ms": spread(&jitter),
        "time_in_flight_ms": spread(&tif),
        "relayed_datagrams": relayed,
        "machine_kernel_drops": udp_errors,
        "relay_socket_drops": relay_socket_drops,
        "subscriber_socket_drops": stats.iter().map(|s| s.socket_drops).sum::<u64>(),
        "relayed_per_s": relayed.map(|r| r / span),
        "server_cpu_s": cpu,
        "server_cpu_percent": cpu.map(|c| 100.0 * c / span),
        "server_cpu_us_per_relayed": match (cpu, relayed) {
            (Some(c), Some(r)) if r > 0.0 => Some(1e6 * c / r),
            _ => None,
        },
    }))
}

/// A subscriber's receiving thread or task.
enum Receiver {
    Thread(JoinHandle<SubscriberStats>),
    Task(tokio::task::JoinHandle<SubscriberStats>),
}

/// min / median / max (null when empty).
fn spread(values: &[f64]) -> Value {
    if values.is_empty() {
        return Value::Null;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    json!({"min": v[0], "median": v[v.len() / 2], "max": v[v.len() - 1]})
}

/// The machine's UDP `RcvbufErrors` and `SndbufErrors` (`/proc/net/snmp`: datagrams the
/// kernel dropped because a socket's receive buffer was full, or could not queue for sending)
/// and the input backlog drops of every CPU (`/proc/net/softnet_stat`, 2nd column: packets
/// dropped because a CPU's backlog held `net.core.netdev_max_backlog` already; every loopback
/// packet passes it).
fn kernel_drops() -> Option<[u64; 3]> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = udp.next()?.split_whitespace().collect();
    let values: Vec<&str> = udp.next()?.split_whitespace().collect();
    let get = |name: &str| {
        let i = names.iter().position(|n| *n == name)?;
        values.get(i)?.parse::<u64>().ok()
    };
    let softnet = std::fs::read_to_string("/proc/net/softnet_stat").ok()?;
    let backlog = softnet
        .lines()
        .filter_map(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
        .sum();
    Some([get("RcvbufErrors")?, get("SndbufErrors")?, backlog])
}

/// The change in [`kernel_drops`] since `before`, as JSON.
fn kernel_drops_since(before: Option<[u64; 3]>) -> Value {
    match (before, kernel_drops()) {
        (Some(b), Some(e)) => json!({
            "rcvbuf": e[0].saturating_sub(b[0]),
            "sndbuf": e[1].saturating_sub(b[1]),
            "backlog": e[2].saturating_sub(b[2]),
        }),
        _ => Value::Null,
    }
}

/// The `drops` of the IPv4 UDP socket bound to local `port` (`/proc/net/udp`, its last
/// column): datagrams the kernel could not queue to that socket, since it was opened.
fn socket_drops(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/udp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local_port = fields.get(1)?.rsplit(':').next()?;
        if u16::from_str_radix(local_port, 16).ok()? != port {
            return None;
        }
        fields.last()?.parse().ok()
    })
}

/// `loudsync_media_datagrams_relayed_total` from the server's `/metrics`.
fn relayed(addr: SocketAddr) -> Option<f64> {
    let (status, body) = http::request(addr, "GET", "/metrics", None, None).ok()?;
    if status != 200 {
        return None;
    }
    let name = "loudsync_media_datagrams_relayed_total";
    Some(
        body.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0),
    )
}

/// A UDP socket connected to `member`'s relay, after the 3-way handshake with its token:
/// START (resent after 500 ms, 1 s, 2 s), START_ACK with the right stream id, START_CONFIRM
/// (sent twice: a duplicate is ignored by a streaming tuple, D12, and nothing acknowledges
/// the first).
async fn udp_handshake(member: &Member, buffer: Option<u32>) -> anyhow::Result<UdpSocket> {
    let (relay, stream, token) = (member.relay, member.stream.clone(), member.token.clone());
    tokio::task::spawn_blocking(move || {
        let socket = UdpSocket::bind(SocketAddr::new(relay.ip(), 0))?;
        if let Some(bytes) = buffer {
            set_buffers(&socket, bytes)?;
        }
        socket.connect(relay)?;
        let start = encode_start(&stream, Some(&token));
        let mut buf = vec![0u8; 2048];
        for wait_ms in [500u64, 1000, 2000] {
            socket.send(&start)?;
            let deadline = Instant::now() + Duration::from_millis(wait_ms);
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                socket.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
                let n = match socket.recv(&mut buf) {
                    Ok(n) => n,
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        break
                    }
                    // ICMP port unreachable: retry on schedule.
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => continue,
                    Err(e) => return Err(e.into()),
                };
                let Ok(frame) = decode_control(&buf[..n]) else {
                    continue;
                };
                match frame.body {
                    ControlBody::StartAck { stream_id } if stream_id == stream => {
                        let confirm = encode_start_confirm(&frame.connection_id, &stream);
                        socket.send(&confirm)?;
                        socket.send(&confirm)?;
                        return Ok(socket);
                    }
                    ControlBody::Error { code, .. } => bail!(
                        "the relay answered ERROR {code} {}",
                        ErrorCode::from_code(code).map_or("?", ErrorCode::name)
                    ),
                    _ => {}
                }
            }
        }
        bail!("no START_ACK from the relay at {relay}")
    })
    .await?
}

/// Sets SO_RCVBUF and SO_SNDBUF of `socket` to `bytes`.
fn set_buffers(socket: &UdpSocket, bytes: u32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for option in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: a valid socket fd and a c_int option value of the right size.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                &value as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// What the publisher sent.
struct Sent {
    datagrams: u64,
    bytes: u64,
    errors: u64,
    /// First datagram to last.
    span: Duration,
}

/// The DATA timestamp (D22): nanoseconds since the first call, one clock for the publisher
/// and every subscriber (all threads of this process), so time in flight is the real delay.
fn monotonic_ns() -> i64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    counter(*EPOCH.get_or_init(Instant::now), Instant::now())
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Streams `frames` frames at `fps` (D24 fragments, D25 payload, a fresh timestamp per
/// datagram): frame n is due `n * 10^9 / fps` ns after the first; a late frame goes at once.
fn publish(socket: UdpSocket, params: StreamParams, fps: u32, frames: u64) -> anyhow::Result<Sent> {
    let mut fragments: Vec<Vec<u8>> = params
        .fragments()
        .map(|f| {
            let mut buf = vec![0u8; f.size];
            let header = DataHeader {
                sequence: 0,
                timestamp: 0,
                frequency: FREQUENCY,
            };
            write_data(&mut buf, &header, f.payload_offset);
            buf
        })
        .collect();
    let mut sent = Sent {
        datagrams: 0,
        bytes: 0,
        errors: 0,
        span: Duration::ZERO,
    };
    let base = Instant::now();
    let mut first = None;
    for n in 0..frames {
        let due = frame_due(base, n, fps);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        for buf in fragments.iter_mut() {
            DataHeader {
                sequence: n as i64 + 1,
                timestamp: monotonic_ns(),
                frequency: FREQUENCY,
            }
            .write(&mut buf[..]);
            match socket.send(buf) {
                Ok(len) => {
                    sent.datagrams += 1;
                    sent.bytes += len as u64;
                    first.get_or_insert_with(Instant::now);
                }
                Err(_) => sent.errors += 1,
            }
        }
    }
    sent.span = first.map_or(Duration::ZERO, |f| f.elapsed());
    Ok(sent)
}

/// What one subscriber received.
#[derive(Default)]
struct SubscriberStats {
    datagrams: u64,
    bytes: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    /// Frames whose time in flight was taken, and their sum (ns).
    frames: u64,
    tif_sum_ns: f64,
    /// Consecutive frame pairs, and the sum of |difference of their times in flight| (ns).
    jitter_pairs: u64,
    jitter_sum_ns: f64,
    /// Datagrams the kernel dropped at this subscriber's socket (its receive buffer full).
    socket_drops: u64,
}

impl SubscriberStats {
    fn jitter_ms(&self) -> Option<f64> {
        (self.jitter_pairs > 0).then(|| self.jitter_sum_ns / self.jitter_pairs as f64 / 1e6)
    }

    fn tif_ms(&self) -> Option<f64> {
        (self.frames > 0).then(|| self.tif_sum_ns / self.frames as f64 / 1e6)
    }

    /// Received Mbit/s over the first-to-last arrival span.
    fn mbit(&self) -> Option<f64> {
        let span = self.last?.duration_since(self.first?).as_secs_f64();
        (span > 0.0).then(|| self.bytes as f64 * 8.0 / span / 1e6)
    }
}

/// Counts a frame whose last datagram's time in flight was `tif` (ns), with its difference to
/// the previous frame's.
fn finish(s: &mut SubscriberStats, tif: i64, previous: &mut Option<i64>) {
    s.frames += 1;
    s.tif_sum_ns += tif as f64;
    if let Some(p) = *previous {
        s.jitter_pairs += 1;
        s.jitter_sum_ns += (tif - p).abs() as f64;
    }
    *previous = Some(tif);
}

/// A subscriber's running count: [`SubscriberStats`] and the frame being received.
#[derive(Default)]
struct Tally {
    stats: SubscriberStats,
    /// The frame being received: its sequence number and its last datagram's time in flight.
    current: Option<(i64, i64)>,
    previous_tif: Option<i64>,
}

impl Tally {
    /// Counts one received datagram (anything but DATA is ignored).
    fn record(&mut self, datagram: &[u8]) {
        let Ok(data) = decode_data(datagram) else {
            return;
        };
        let now = Instant::now();
        let tif = monotonic_ns() - data.header.timestamp;
        let s = &mut self.stats;
        s.datagrams += 1;
        s.bytes += datagram.len() as u64;
        s.first.get_or_insert(now);
        s.last = Some(now);
        match self.current {
            Some((seq, _)) if seq == data.header.sequence => self.current = Some((seq, tif)),
            Some((_, done)) => {
                finish(s, done, &mut self.previous_tif);
                self.current = Some((data.header.sequence, tif));
            }
            None => self.current = Some((data.header.sequence, tif)),
        }
    }

    /// The totals, with the drops the kernel counted at the socket bound to `local`.
    fn end(mut self, local: Option<SocketAddr>) -> SubscriberStats {
        if let Some((_, tif)) = self.current {
            finish(&mut self.stats, tif, &mut self.previous_tif);
        }
        self.stats.socket_drops = local.and_then(|a| socket_drops(a.port())).unwrap_or(0);
        self.stats
    }
}

/// Counts DATA datagrams on a thread of its own (blocking reads) until `stop` is set and the
/// socket has been quiet for 50 ms.
fn receive_blocking(socket: UdpSocket, stop: &AtomicBool) -> SubscriberStats {
    let mut tally = Tally::default();
    let _ = socket.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = vec![0u8; MAX_DATAGRAM_SIZE];
    loop {
        match socket.recv(&mut buf) {
            Ok(n) => tally.record(&buf[..n]),
            Err(_) if stop.load(Ordering::Relaxed) => break,
            Err(_) => {}
        }
    }
    tally.end(socket.local_addr().ok())
}

/// The same as a task on the receivers' tokio runtime (one epoll for every socket).
async fn receive_async(socket: UdpSocket, stop: Arc<AtomicBool>) -> SubscriberStats {
    let mut tally = Tally::default();
    let local = socket.local_addr().ok();
    let socket = match socket
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UdpSocket::from_std(socket))
    {
        Ok(s) => s,
        Err(_) => return tally.end(local),
    };
    let mut buf = vec![0u8; MAX_DATAGRAM_SIZE];
    loop {
        match tokio::time::timeout(Duration::from_millis(50), socket.recv(&mut buf)).await {
            Ok(Ok(n)) => tally.record(&buf[..n]),
            _ if stop.load(Ordering::Relaxed) => break,
            _ => {}
        }
    }
    tally.end(local)
}

/// `perf record -e cpu-clock -g -p PID -o FILE`, stopped with SIGINT.
struct Profiler {
    child: Child,
}

impl Profiler {
    fn start(path: &PathBuf, pid: u32) -> anyhow::Result<Profiler> {
        let child = Command::new("perf")
            .args([
                "record",
                "-e",
                "cpu-clock",
                "-g",
                "-p",
                &pid.to_string(),
                "-o",
            ])
            .arg(path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn perf record")?;
        // perf attaches within a few milliseconds.
        std::thread::sleep(Duration::from_millis(200));
        Ok(Profiler { child })
    }

    fn stop(mut self) -> anyhow::Result<()> {
        let pid = libc::pid_t::try_from(self.child.id())?;
        // SAFETY: signalling our own child process by its pid.
        unsafe { libc::kill(pid, libc::SIGINT) };
        self.child.wait()?;
        Ok(())
    }
}

/// One iperf3 step at `rate_mbit`: `iperf3 -s -1` on a free port, the client with `--json`;
/// the receiver's figures (`end.sum_received`, loss and jitter from `end.sum`).
fn iperf3_step(a: &MediaArgs, rate_mbit: f64) -> anyhow::Result<Value> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let port_s = port.to_string();
    let mut server = Command::new(&a.iperf3)
        .args(["-s", "-1", "-B", "127.0.0.1", "-p", &port_s, "--forceflush"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("spawn `{} -s`", a.iperf3))?;
    // It prints "Server listening on PORT" once bound (flushed at once with --forceflush).
    let mut lines = BufReader::new(server.stdout.take().expect("piped")).lines();
    if !lines.any(|l| l.is_ok_and(|l| l.starts_with("Server listening"))) {
        let _ = server.kill();
        let _ = server.wait();
        bail!("`{} -s` did not listen on {port}", a.iperf3);
    }
    // Keep reading (and discarding) its output so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let seconds = a.step_duration.as_secs().max(1).to_string();
    let rate = format!("{}M", rate_mbit);
    let size = a.datagram_size.to_string();
    let window = a.socket_buffer.map(|b| b.to_string());
    let mut args = vec![
        "-u",
        "-c",
        "127.0.0.1",
        "-p",
        &port_s,
        "-b",
        &rate,
        "-l",
        &size,
        "-t",
        &seconds,
        "--json",
    ];
    if let Some(w) = &window {
        args.extend(["-w", w]);
    }
    let udp_before = kernel_drops();
    let output = Command::new(&a.iperf3).args(&args).output()?;
    let udp_errors = kernel_drops_since(udp_before);
    let _ = server.kill();
    let _ = server.wait();
    let v: Value = serde_json::from_slice(&output.stdout).context("iperf3 --json output")?;
    if let Some(e) = v["error"].as_str() {
        bail!("iperf3: {e}");
    }
    let end = &v["end"];
    let received = if end["sum_received"].is_object() {
        &end["sum_received"]
    } else {
        &end["sum"]
    };
    Ok(json!({
        "command": format!("{} {}", a.iperf3, args.join(" ")),
        "offered_mbit": end["sum_sent"]["bits_per_second"].as_f64().map(|b| b / 1e6),
        "received_mbit": received["bits_per_second"].as_f64().map(|b| b / 1e6),
        "loss_percent": end["sum"]["lost_percent"],
        "jitter_ms": end["sum"]["jitter_ms"],
        "packets": end["sum"]["packets"],
        "machine_kernel_drops": udp_errors,
        "receiver_cpu_percent": end["cpu_utilization_percent"]["remote_total"],
        "sender_cpu_percent": end["cpu_utilization_percent"]["host_total"],
    }))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn print_throughput_line(label: &str, rate: f64, r: &Value) {
    println!(
        "  {rate:>7} Mbit/s relay ({label}): offered {:.1}, received {:.1} Mbit/s, loss {:.3} %, \
         server CPU {:.1} % ({} fps x {} datagrams; kernel drops {}, at the relay's socket {}, at the subscriber's {})",
        f(&r["offered_mbit"]),
        f(&r["received_mbit_per_subscriber"]),
        f(&r["loss_percent"]["max"]),
        f(&r["server_cpu_percent"]),
        r["fps"],
        r["datagrams_per_frame"],
        r["machine_kernel_drops"],
        r["relay_socket_drops"],
        r["subscriber_socket_drops"]
    );
}

fn print_iperf3_line(rate: f64, r: &Value) {
    println!(
        "  {rate:>7} Mbit/s iperf3: offered {:.1}, received {:.1} Mbit/s, loss {:.3} %, jitter {:.3} ms; kernel drops {}",
        f(&r["offered_mbit"]),
        f(&r["received_mbit"]),
        f(&r["loss_percent"]),
        f(&r["jitter_ms"]),
        r["machine_kernel_drops"]
    );
}

fn print_fanout_line(label: &str, n: usize, r: &Value) {
    let s = |v: &Value| {
        format!(
            "{:.3}/{:.3}/{:.3}",
            f(&v["min"]),
            f(&v["median"]),
            f(&v["max"])
        )
    };
    println!(
        "  1 -> {n:<4} ({label}): {:.0} relayed/s, server CPU {:.2} us per relayed datagram \
         ({:.1} % of a core), loss % {}, jitter ms {}, time in flight ms {} (min/median/max); drops at the relay's socket {}, at the subscribers' {}, kernel {}",
        f(&r["relayed_per_s"]),
        f(&r["server_cpu_us_per_relayed"]),
        f(&r["server_cpu_percent"]),
        s(&r["loss_percent"]),
        s(&r["jitter_ms"]),
        s(&r["time_in_flight_ms"]),
        r["relay_socket_drops"],
        r["subscriber_socket_drops"],
        r["machine_kernel_drops"]
    );
}

/// The throughput targets (issue 13: relay >= 80 % of iperf3's best, no loss at half of it).
fn summarize(result: &Value) {
    let Some(steps) = result["throughput"].as_array() else {
        return;
    };
    let best = |key: &str, field: &str| {
        steps
            .iter()
            .filter_map(|s| s[key][field].as_f64())
            .fold(0.0f64, f64::max)
    };
    let iperf = best("iperf3", "received_mbit");
    let relay = best("relay_batched", "received_mbit_per_subscriber")
        .max(best("relay_given", "received_mbit_per_subscriber"));
    if iperf > 0.0 {
        println!(
            "best received: relay {relay:.1} Mbit/s, iperf3 {iperf:.1} Mbit/s: {:.0} % (target >= 80 %)",
            100.0 * relay / iperf
        );
    }
}
