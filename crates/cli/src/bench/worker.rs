//! A load-generator worker process: opens its share of members, joins them, keeps them alive
//! at the document's rates, measures, and reports to the coordinator as JSON lines on stdout.
//!
//! Protocol with the coordinator: the [`WorkerSpec`] arrives as the first line on stdin; the
//! worker prints `progress` lines while joining and one `ready` line; then it obeys stdin
//! lines: `go` starts the scenario's measured phase (recording RTTs; churning for `churn`),
//! `report` prints a `report` line, `exit` leaves every member and exits.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use loudsync_protocol::{app, close_code, encode_client, ClientMessage, DeviceType};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{oneshot, watch, Semaphore};
use tokio_websockets::{ClientBuilder, Message, WebSocketStream};

/// The `messageId` the bench's app members put on `JOIN` and `LEAVE` (the server ignores it).
const BENCH_MESSAGE_ID: &str = "msg_0_bench00";

/// One session this worker fills.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionPlan {
    /// Session id.
    pub id: String,
    /// Members this worker puts in it.
    pub members: usize,
    /// Whether the first of them joins as host (else the session must exist).
    pub with_host: bool,
}

/// What the measured phase does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Mode {
    /// Keep members alive and record ping RTTs.
    Idle,
    /// Replace members: `rate` leave+join pairs per second (this worker's share), for `seconds`.
    Churn {
        /// Replacements per second.
        rate: f64,
        /// How long.
        seconds: f64,
    },
    /// `resume-storm`: resumable members whose sockets are cut at once on command.
    ResumeStorm(super::resume::StormPlan),
}

/// Which dialect the generated members speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum BenchDialect {
    /// Ours (the protocol document's).
    Loudsync,
    /// The LOUDSYNC app's own (UPPERCASE types, fields in `payload`); works against the app's
    /// own host server too.
    App,
}

impl BenchDialect {
    /// A member's `join` (the app's: `JOIN` as the app sends it; app devices never host).
    pub(super) fn join(
        self,
        session: &str,
        device: &str,
        kind: DeviceType,
    ) -> anyhow::Result<String> {
        let join = ClientMessage::join(session, device, device, kind);
        Ok(match self {
            BenchDialect::Loudsync => encode_client(&join, 0)?,
            BenchDialect::App => app::encode_client(
                &join,
                &app::ClientContext::new(device, 0).with_message_id(BENCH_MESSAGE_ID),
            )?,
        })
    }

    pub(super) fn heartbeat(self, device: &str, ts: u64) -> String {
        match self {
            BenchDialect::Loudsync => encode_client(&ClientMessage::Heartbeat, ts),
            BenchDialect::App => app::encode_client(
                &ClientMessage::Heartbeat,
                &app::ClientContext::new(device, ts),
            ),
        }
        .expect("both dialects have heartbeat")
    }

    /// The ping frame, written by the protocol crate's fast path (the same bytes as its
    /// encoder's, about 40% faster to produce).
    fn ping(self, ts: u64) -> String {
        let mut out = String::with_capacity(80);
        match self {
            BenchDialect::Loudsync => loudsync_protocol::client::write_ping(&mut out, ts),
            BenchDialect::App => app::write_ping(&mut out, ts),
        }
        out
    }

    fn leave(self, device: &str) -> String {
        match self {
            BenchDialect::Loudsync => encode_client(&ClientMessage::leave(None), 0),
            BenchDialect::App => app::encode_client(
                &ClientMessage::leave(Some("User left session")),
                &app::ClientContext::new(device, 0).with_message_id(BENCH_MESSAGE_ID),
            ),
        }
        .expect("both dialects have leave")
    }

    /// The message's type, lowercase in both dialects (`member_list`, `pong`, ...).
    fn message_type(self, text: &str) -> Option<String> {
        match self {
            BenchDialect::Loudsync => message_type(text).map(str::to_string),
            BenchDialect::App => {
                // Both LoudSync and the app's own server write `type` first; parse otherwise.
                if let Some(t) = message_type(text) {
                    return Some(t.to_ascii_lowercase());
                }
                let v: Value = serde_json::from_str(text).ok()?;
                Some(v["type"].as_str()?.to_ascii_lowercase())
            }
        }
    }

    /// The timestamp this client put in the ping a pong answers.
    fn pong_sent_at(self, text: &str) -> Option<u64> {
        let v: Value = serde_json::from_str(text).ok()?;
        match self {
            BenchDialect::Loudsync => v["timestamp"].as_u64(),
            BenchDialect::App => v["payload"]["pingTimestamp"].as_u64(),
        }
    }
}

/// What a worker is asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// The members' dialect.
    pub dialect: BenchDialect,
    /// The server's TCP address.
    pub addr: SocketAddr,
    /// The WebSocket path.
    pub path: String,
    /// Sessions to fill.
    pub sessions: Vec<SessionPlan>,
    /// Source addresses to spread connections over.
    pub sources: Vec<IpAddr>,
    /// Heartbeat and ping interval, ms.
    pub interval_ms: u64,
    /// Joins in flight at once.
    pub concurrency: usize,
    /// Distinguishes device ids between runs and workers.
    pub tag: String,
    /// The measured phase.
    pub mode: Mode,
    /// Members do seed 003's token handshake before `join` (resumable, numbered, acks).
    #[serde(default)]
    pub resumable: bool,
    /// Where the hosts connect, if not to `addr` (`bench cluster`: the sessions live on one
    /// node, their other members on another).
    #[serde(default)]
    pub host_addr: Option<SocketAddr>,
}

/// What the worker reports.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct WorkerReport {
    /// Members that joined in the join phase.
    pub joined: u64,
    /// Members whose connect or join failed.
    pub join_failed: u64,
    /// Join latency histogram (µs), serialised.
    pub join_hist: String,
    /// Ping RTT histogram (µs) during the measured phase, serialised.
    pub rtt_hist: String,
    /// Churn: join latency of replacement members (µs), serialised.
    pub churn_join_hist: String,
    /// Churn: replacements done.
    pub churned: u64,
    /// `member_left` with reason `timeout` seen by any member (false timeouts).
    pub timeouts_seen: u64,
    /// `member_joined` messages received by this worker's members.
    pub member_joined_seen: u64,
    /// Members whose socket the server closed unexpectedly.
    pub closed_by_server: u64,
    /// ... of which with 1008, policy violation (slow consumer or rate limit).
    pub dropped_1008: u64,
    /// `error` messages received.
    pub errors: u64,
}

pub(super) type Ws = WebSocketStream<TcpStream>;

struct Shared {
    start: Instant,
    spec: WorkerSpec,
    rtt: Mutex<Histogram<u64>>,
    join: Mutex<Histogram<u64>>,
    churn_join: Mutex<Histogram<u64>>,
    timeouts_seen: AtomicU64,
    member_joined_seen: AtomicU64,
    closed: AtomicU64,
    dropped_1008: AtomicU64,
    errors: AtomicU64,
    next_device: AtomicU64,
    recording: watch::Receiver<bool>,
}

pub(super) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

/// Serialises a histogram to base64 (V2 format).
pub fn encode_hist(h: &Histogram<u64>) -> String {
    use base64::Engine;
    use hdrhistogram::serialization::Serializer;
    let mut buf = Vec::new();
    hdrhistogram::serialization::V2Serializer::new()
        .serialize(h, &mut buf)
        .expect("serialise histogram");
    base64::engine::general_purpose::STANDARD.encode(buf)
}

/// The inverse of [`encode_hist`].
pub fn decode_hist(s: &str) -> anyhow::Result<Histogram<u64>> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(s)?;
    hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(|e| anyhow::anyhow!("histogram: {e:?}"))
}

pub(super) fn emit(v: Value) {
    println!("{v}");
}

/// A member kept alive by a task; dropping `leave` (or sending on it) makes it leave.
struct Live {
    session: usize,
    is_host: bool,
    leave: oneshot::Sender<()>,
}

/// Entry point of `loudsync bench-worker`.
pub fn run() -> anyhow::Result<()> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut stdin = BufReader::new(tokio::io::stdin()).lines();
        let spec_line = stdin.next_line().await?.context("no spec on stdin")?;
        let spec: WorkerSpec = serde_json::from_str(&spec_line).context("bad spec")?;
        if let Mode::ResumeStorm(plan) = spec.mode.clone() {
            return super::resume::run(spec, plan, stdin).await.map(drop);
        }
        let (recording_tx, recording) = watch::channel(false);
        let shared = Arc::new(Shared {
            start: Instant::now(),
            spec,
            rtt: Mutex::new(histogram()),
            join: Mutex::new(histogram()),
            churn_join: Mutex::new(histogram()),
            timeouts_seen: AtomicU64::new(0),
            member_joined_seen: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            dropped_1008: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            next_device: AtomicU64::new(0),
            recording,
        });
        let (mut live, failed) = join_all(&shared).await;
        let joined = live.len() as u64;
        emit(json!({"event": "ready", "joined": joined, "failed": failed}));
        let churned = Arc::new(AtomicU64::new(0));
        while let Some(line) = stdin.next_line().await? {
            match line.trim() {
                "go" => {
                    let _ = recording_tx.send(true);
                    if let Mode::Churn { rate, seconds } = shared.spec.mode {
                        churn(&shared, &mut live, rate, seconds, &churned).await;
                        emit(json!({"event": "churned", "count": churned.load(Ordering::Relaxed)}));
                    }
                }
                "report" => {
                    let report = WorkerReport {
                        joined,
                        join_failed: failed,
                        join_hist: encode_hist(&shared.join.lock().unwrap()),
                        rtt_hist: encode_hist(&shared.rtt.lock().unwrap()),
                        churn_join_hist: encode_hist(&shared.churn_join.lock().unwrap()),
                        churned: churned.load(Ordering::Relaxed),
                        timeouts_seen: shared.timeouts_seen.load(Ordering::Relaxed),
                        member_joined_seen: shared.member_joined_seen.load(Ordering::Relaxed),
                        closed_by_server: shared.closed.load(Ordering::Relaxed),
                        dropped_1008: shared.dropped_1008.load(Ordering::Relaxed),
                        errors: shared.errors.load(Ordering::Relaxed),
                    };
                    emit(json!({"event": "report", "report": report}));
                }
                "exit" => break,
                _ => {}
            }
        }
        let _ = recording_tx.send(false);
        for m in live.drain(..) {
            let _ = m.leave.send(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(())
    })
}

/// Joins every planned member; hosts first in their session, everything else concurrently
/// within the in-flight limit.
async fn join_all(shared: &Arc<Shared>) -> (Vec<Live>, u64) {
    let limit = Arc::new(Semaphore::new(shared.spec.concurrency.max(1)));
    let total: usize = shared.spec.sessions.iter().map(|s| s.members).sum();
    let done = Arc::new(AtomicU64::new(0));
    let mut session_tasks = Vec::new();
    for (index, plan) in shared.spec.sessions.iter().cloned().enumerate() {
        let shared = shared.clone();
        let limit = limit.clone();
        let done = done.clone();
        session_tasks.push(tokio::spawn(async move {
            let mut live = Vec::new();
            let mut failed = 0u64;
            let mut start = 0;
            if plan.with_host && plan.members > 0 {
                let permit = limit.clone().acquire_owned().await.expect("semaphore");
                match join_member(&shared, index, DeviceType::Host, &shared.join).await {
                    Ok(m) => live.push(m),
                    Err(_) => failed += 1,
                }
                drop(permit);
                done.fetch_add(1, Ordering::Relaxed);
                start = 1;
            }
            let mut joins = Vec::new();
            for _ in start..plan.members {
                let permit = limit.clone().acquire_owned().await.expect("semaphore");
                let shared = shared.clone();
                let done = done.clone();
                joins.push(tokio::spawn(async move {
                    let r = join_member(&shared, index, DeviceType::Client, &shared.join).await;
                    drop(permit);
                    done.fetch_add(1, Ordering::Relaxed);
                    r
                }));
            }
            for j in joins {
                match j.await {
                    Ok(Ok(m)) => live.push(m),
                    _ => failed += 1,
                }
            }
            (live, failed)
        }));
    }
    gather_joins(session_tasks, &done, total).await
}

/// Waits for every session's join task, reporting progress every 500 ms meanwhile: the
/// members that got in, and how many did not.
pub(super) async fn gather_joins<T: Send + 'static>(
    session_tasks: Vec<tokio::task::JoinHandle<(Vec<T>, u64)>>,
    done: &Arc<AtomicU64>,
    total: usize,
) -> (Vec<T>, u64) {
    let progress = {
        let done = done.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                emit(
                    json!({"event": "progress", "joined": done.load(Ordering::Relaxed), "total": total}),
                );
            }
        })
    };
    let mut joined = Vec::new();
    let mut failed = 0;
    for t in session_tasks {
        if let Ok((j, f)) = t.await {
            joined.extend(j);
            failed += f;
        }
    }
    progress.abort();
    (joined, failed)
}

/// Connects, joins session `index`, records the join latency, and spawns its keep-alive task.
async fn join_member(
    shared: &Arc<Shared>,
    index: usize,
    kind: DeviceType,
    hist: &Mutex<Histogram<u64>>,
) -> anyhow::Result<Live> {
    let spec = &shared.spec;
    let n = shared.next_device.fetch_add(1, Ordering::Relaxed);
    let device = format!("{}-{n}", spec.tag);
    let session = &spec.sessions[index].id;
    let started = Instant::now();
    let mut ws = connect(spec, n).await?;
    let dialect = spec.dialect;
    let join = dialect.join(session, &device, kind)?;
    // A resumable member: the handshake, then the pipelined join, up to member_list (seq 1).
    let numbered = if spec.resumable {
        Some(super::resume::handshake_join(&mut ws, join).await?.last_seq)
    } else {
        ws.send(Message::text(join)).await?;
        None
    };
    while numbered.is_none() {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .context("join timed out")?
            .context("closed during join")??;
        if let Some(text) = msg.as_text() {
            // Only the type matters here; a big session's member_list is not worth parsing.
            match dialect.message_type(text).as_deref() {
                Some("member_list") => break,
                Some("error") => anyhow::bail!("join rejected: {text}"),
                _ => {}
            }
        }
    }
    let us = started.elapsed().as_micros() as u64;
    let _ = hist.lock().unwrap().record(us.max(1));
    let (leave, leave_rx) = oneshot::channel();
    tokio::spawn(keep_alive(ws, shared.clone(), device, numbered, leave_rx));
    Ok(Live {
        session: index,
        is_host: kind == DeviceType::Host,
        leave,
    })
}

/// Opens the WebSocket of device number `n` (its source address is the `n`th, round robin).
pub(super) async fn connect(spec: &WorkerSpec, n: u64) -> anyhow::Result<Ws> {
    connect_at(spec, spec.addr, n).await
}

/// [`connect`] to `addr` instead of the spec's address (same path and source addresses).
pub(super) async fn connect_at(spec: &WorkerSpec, addr: SocketAddr, n: u64) -> anyhow::Result<Ws> {
    let source = spec.sources[n as usize % spec.sources.len()];
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if spec.sources.len() > 1 {
        bind_source(&socket, source)?;
    }
    let tcp = socket.connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (ws, _) = ClientBuilder::new()
        .uri(&format!("ws://{}{}", addr, spec.path))?
        .connect_on(tcp)
        .await?;
    Ok(ws)
}

/// Binds the socket to a source address, leaving the port to `connect` (Linux's
/// `IP_BIND_ADDRESS_NO_PORT`): binding to port 0 first is slow once thousands of ports are in
/// use, and would limit each source address to one port range for all destinations.
fn bind_source(socket: &TcpSocket, source: IpAddr) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let one: libc::c_int = 1;
        // SAFETY: a valid socket fd and a c_int option value of the right size.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    socket.bind(SocketAddr::new(source, 0))
}

/// The `type` of a server message, read from its first bytes (the encoder writes it first,
/// after the `seq` of a numbered frame: `{"seq":N,"type":...`).
pub(super) fn message_type(text: &str) -> Option<&str> {
    let rest = match text.strip_prefix("{\"seq\":") {
        Some(numbered) => &numbered[numbered.find(',')? + 1..],
        None => text.strip_prefix('{')?,
    };
    rest.strip_prefix("\"type\":\"")?.split('"').next()
}

/// Heartbeat and ping every interval (random phase); record RTTs while recording; count
/// what arrives; leave when told. A resumable member (`numbered`: the last server seq it got)
/// tracks the server's seq and acks it with the next heartbeat, as the SDK does at the latest
/// after the ack interval; its own frames are never numbered (heartbeat, ping), but its
/// `leave` is (seq 1).
async fn keep_alive(
    mut ws: Ws,
    shared: Arc<Shared>,
    device: String,
    mut numbered: Option<u64>,
    mut leave: oneshot::Receiver<()>,
) {
    let mut acked = 0u64;
    let dialect = shared.spec.dialect;
    let interval_ms = shared.spec.interval_ms.max(1);
    let phase = Duration::from_millis(fastrand::u64(0..interval_ms));
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + phase,
        Duration::from_millis(interval_ms),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let recording = shared.recording.clone();
    loop {
        tokio::select! {
            _ = &mut leave => {
                let mut bye = dialect.leave(&device);
                if numbered.is_some() {
                    bye = loudsync_protocol::client::number_frame(1, &bye);
                }
                let _ = ws.send(Message::text(bye)).await;
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    while let Some(Ok(_)) = ws.next().await {}
                }).await;
                return;
            }
            _ = tick.tick() => {
                let now_us = shared.start.elapsed().as_micros() as u64;
                let hb = Message::text(dialect.heartbeat(&device, now_us));
                let ping = Message::text(dialect.ping(now_us));
                if ws.feed(hb).await.is_err() {
                    break;
                }
                if let Some(last) = numbered.filter(|&s| s > acked) {
                    acked = last;
                    let ack = Message::text(super::resume::ack_frame(last));
                    if ws.feed(ack).await.is_err() {
                        break;
                    }
                }
                if ws.send(ping).await.is_err() {
                    break;
                }
            }
            msg = ws.next() => {
                let Some(Ok(msg)) = msg else {
                    shared.closed.fetch_add(1, Ordering::Relaxed);
                    break;
                };
                if let Some((code, _)) = msg.as_close() {
                    shared.closed.fetch_add(1, Ordering::Relaxed);
                    if u16::from(code) == close_code::POLICY_VIOLATION {
                        shared.dropped_1008.fetch_add(1, Ordering::Relaxed);
                    }
                    break;
                }
                let Some(text) = msg.as_text() else { continue };
                if let (Some(last), Some(seq)) = (numbered.as_mut(), super::resume::frame_seq(text)) {
                    *last = (*last).max(seq);
                }
                match dialect.message_type(text).as_deref() {
                    Some("pong") if *recording.borrow() => {
                        if let Some(sent) = dialect.pong_sent_at(text) {
                            let now_us = shared.start.elapsed().as_micros() as u64;
                            let _ = shared.rtt.lock().unwrap().record(now_us.saturating_sub(sent).max(1));
                        }
                    }
                    Some("member_joined") => {
                        shared.member_joined_seen.fetch_add(1, Ordering::Relaxed);
                    }
                    Some("member_left")
                        if text.contains(r#""reason":"timeout""#)
                            || text.contains(r#""reason":"Heartbeat timeout""#) =>
                    {
                        shared.timeouts_seen.fetch_add(1, Ordering::Relaxed);
                    }
                    Some("error") => {
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Replaces members at `rate` per second for `seconds`: one leaves, a new one joins its
/// session (so sessions stay full). Hosts stay.
async fn churn(
    shared: &Arc<Shared>,
    live: &mut Vec<Live>,
    rate: f64,
    seconds: f64,
    churned: &Arc<AtomicU64>,
) {
    if rate <= 0.0 || live.is_empty() {
        return;
    }
    let period = Duration::from_secs_f64(1.0 / rate);
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Option<Live>>();
    let mut in_flight = 0usize;
    while Instant::now() < end {
        tokio::select! {
            _ = tick.tick() => {
                // Any member but a host (a host leaving would end its session).
                if live.is_empty() { continue; }
                let i = fastrand::usize(..live.len());
                if live[i].is_host { continue; }
                let index = live[i].session;
                let gone = live.swap_remove(i);
                let _ = gone.leave.send(());
                let shared = shared.clone();
                let tx = tx.clone();
                let churned = churned.clone();
                in_flight += 1;
                tokio::spawn(async move {
                    // A new device joins the session the old one left.
                    let joined = join_member(&shared, index, DeviceType::Client, &shared.churn_join).await.ok();
                    if joined.is_some() {
                        churned.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = tx.send(joined);
                });
            }
            Some(m) = rx.recv() => {
                in_flight -= 1;
                live.extend(m);
            }
        }
    }
    while in_flight > 0 {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(m)) => {
                in_flight -= 1;
                live.extend(m);
            }
            _ => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_survive_the_trip() {
        let mut h = histogram();
        for v in [10, 200, 3000] {
            h.record(v).unwrap();
        }
        let back = decode_hist(&encode_hist(&h)).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back.max(), h.max());
    }

    #[test]
    fn the_bench_sends_frames_the_server_decodes() {
        for dialect in [BenchDialect::Loudsync, BenchDialect::App] {
            let decode = |frame: &str| match dialect {
                BenchDialect::Loudsync => loudsync_protocol::decode(frame),
                BenchDialect::App => {
                    assert_eq!(app::detect(frame), app::Dialect::App, "{frame}");
                    app::decode(frame)
                }
            };
            let join = dialect.join("s-1", "b1w0-7", DeviceType::Client).unwrap();
            assert_eq!(
                decode(&join).unwrap(),
                ClientMessage::join("s-1", "b1w0-7", "b1w0-7", DeviceType::Client)
            );
            assert_eq!(
                decode(&dialect.heartbeat("b1w0-7", 5)).unwrap(),
                ClientMessage::Heartbeat
            );
            assert_eq!(
                decode(&dialect.ping(1234)).unwrap(),
                ClientMessage::ping(1234u64)
            );
            assert!(matches!(
                decode(&dialect.leave("b1w0-7")).unwrap(),
                ClientMessage::Leave { .. }
            ));
        }
        assert!(BenchDialect::App.join("s", "d", DeviceType::Host).is_err());
        // The fast path is the encoder's bytes.
        assert_eq!(
            BenchDialect::Loudsync.ping(77),
            encode_client(&ClientMessage::ping(77u64), 0).unwrap()
        );
    }

    #[test]
    fn message_type_from_the_first_bytes() {
        assert_eq!(
            message_type(r#"{"type":"member_list","members":[]}"#),
            Some("member_list")
        );
        assert_eq!(message_type(r#"{"a":1}"#), None);
    }
}
