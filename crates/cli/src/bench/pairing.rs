//! `loudsync bench pairing`: controller/responder pairing (issue 12) under load. Two
//! measurements, each against a server of its own with `--spawn-server`:
//!
//! - **Memory per SSE client.** `--sse-clients` identified `eventsource/` streams (and, with
//!   `--ws-clients`, identified pairing WebSockets on another fresh server) are opened, spread
//!   over the worker processes, and held; the server's RSS growth divided by the streams
//!   opened is the memory per client, read from `/proc` as `bench idle` does for members.
//! - **Events per second between pairs.** `--pairs` controller/responder pairs, each pair in
//!   one worker process (so one clock stamps an event's send and its delivery). Each
//!   controller keeps `--window` events in flight to its responder (it sends while fewer than
//!   that are undelivered), for `--duration`; then the ones in flight are drained. Per
//!   `--modes`, the controller sends over the pairing WebSocket (`cr_event` frames) or as
//!   `sendevent/` GET requests pipelined on one keep-alive HTTP/1.1 connection, and the
//!   responder receives on its WebSocket or its `eventsource/` stream. Each event carries its
//!   send instant (µs, the worker's clock) as its one parameter; latency is send to delivery.
//!
//! A spawned server gets `--app bench` (unless `--server-arg` names an app or a config file)
//! and `--rate-limit 0` (unless given): the landed limit of 100 frames/s per connection, and
//! the same per client id on `sendevent/`, would otherwise be what is measured.
//!
//! Worker processes are this command again with the hidden `--worker` flag: a [`WorkerPlan`]
//! as the first stdin line, then the coordinator's `go` / `report` / `exit` lines, answered
//! with JSON lines (`progress`, `ready`, `report`) as `bench-worker` does.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use clap::{Args, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use loudsync_protocol::pairing::sse::rawurlencode;
use loudsync_protocol::pairing::ws::encode_client;
use loudsync_protocol::pairing::{IdentifyFrame, IdentifyId, PairingClientFrame};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_websockets::Message;

use super::worker::{
    connect, decode_hist, emit, encode_hist, gather_joins, histogram, message_type, BenchDialect,
    Mode, WorkerSpec, Ws,
};
use super::{percentiles, plot, probe, sources, target, tell, wait_for, Common, Line, Worker};

/// Options of `bench pairing`.
#[derive(Args)]
pub struct PairingArgs {
    #[command(flatten)]
    common: Common,
    /// The pairing app (a spawned server gets `--app NAME` unless `--server-arg` names one).
    #[arg(long, default_value = "bench")]
    app: String,
    /// The access token every client identifies with (an open app accepts any).
    #[arg(long, default_value = "bench")]
    token: String,
    /// Identified `eventsource/` streams to open and hold for the memory figure (0: skip).
    #[arg(long, default_value_t = 2000)]
    sse_clients: usize,
    /// Identified pairing WebSockets to hold for the same figure, on a fresh server (0: skip).
    #[arg(long, default_value_t = 0)]
    ws_clients: usize,
    /// Wait after the last stream opened before reading the server's memory.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// Controller/responder pairs exchanging events (0: skip).
    #[arg(long, default_value_t = 100)]
    pairs: usize,
    /// Events each controller keeps in flight (sent, not yet delivered to its responder).
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// How long the controllers send, per mode.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Sender and receiver transports, one run each: `ws` (WebSocket to WebSocket), `sse`
    /// (`sendevent/` to `eventsource/`), `ws-to-sse`, `sse-to-ws`.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "ws,sse")]
    modes: Vec<PairMode>,
    /// Run as a worker process (internal).
    #[arg(long, hide = true)]
    worker: bool,
}

/// Which transports a pair's controller sends on and its responder receives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
pub enum PairMode {
    /// `cr_event` frames on the pairing WebSocket, both ends.
    Ws,
    /// `sendevent/` GET requests (keep-alive, pipelined) to an `eventsource/` stream.
    Sse,
    /// WebSocket controller, `eventsource/` responder.
    WsToSse,
    /// `sendevent/` controller, WebSocket responder.
    SseToWs,
}

impl PairMode {
    fn label(self) -> &'static str {
        match self {
            PairMode::Ws => "ws -> ws",
            PairMode::Sse => "sendevent -> eventsource",
            PairMode::WsToSse => "ws -> eventsource",
            PairMode::SseToWs => "sendevent -> ws",
        }
    }

    /// (controller, responder) transports.
    fn ends(self) -> (Kind, Kind) {
        match self {
            PairMode::Ws => (Kind::Ws, Kind::Ws),
            PairMode::Sse => (Kind::Http, Kind::Http),
            PairMode::WsToSse => (Kind::Ws, Kind::Http),
            PairMode::SseToWs => (Kind::Http, Kind::Ws),
        }
    }
}

/// A client's transport: the pairing WebSocket, or HTTP (`eventsource/` to receive,
/// `sendevent/` to send).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// `GET /crsocket/{APP}/ws`.
    Ws,
    /// `eventsource/` and `sendevent/`.
    Http,
}

/// What one worker process does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerPlan {
    /// The server.
    pub addr: SocketAddr,
    /// Source addresses, round robin.
    pub sources: Vec<IpAddr>,
    /// The app.
    pub app: String,
    /// The access token.
    pub token: String,
    /// Connections being opened at once.
    pub concurrency: usize,
    /// Client ids are `first_id`, `first_id + 1`, ... (6 digits).
    pub first_id: u32,
    /// The task.
    pub task: Task,
}

/// A worker's task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Task {
    /// Open `clients` identified responders on `kind` and hold them until `exit`.
    Hold {
        /// How many.
        clients: usize,
        /// On which transport.
        kind: Kind,
    },
    /// Run `pairs` pairs for `seconds` after `go`.
    Pairs {
        /// How many.
        pairs: usize,
        /// The transports.
        mode: PairMode,
        /// Events in flight per controller.
        window: usize,
        /// How long the controllers send.
        seconds: f64,
    },
}

/// A worker's report.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PairReport {
    /// Clients (or pairs) that identified.
    pub opened: u64,
    /// ... that did not.
    pub failed: u64,
    /// Events sent by the controllers.
    pub sent: u64,
    /// Events delivered to the responders.
    pub delivered: u64,
    /// From `go` to the last pair done (drained), seconds.
    pub elapsed_s: f64,
    /// Latency send to delivery (µs), serialised.
    pub latency_hist: String,
    /// `error` frames, or `sendevent/` answers other than 204.
    pub errors: u64,
    /// Connections the server closed.
    pub closed_by_server: u64,
}

/// Runs the scenario (or, with `--worker`, one worker process).
pub(super) fn run(a: PairingArgs) -> anyhow::Result<()> {
    if a.worker {
        return worker_main();
    }
    ensure!(
        a.common.dialect == BenchDialect::Loudsync,
        "--dialect: pairing clients speak the cr_* frames and CRSocket's HTTP, no session dialect"
    );
    ensure!(a.window >= 1, "--window must be at least 1");
    ensure!(
        2 * a.pairs + a.sse_clients.max(a.ws_clients) < 900_000,
        "client ids are 6 digits: too many clients"
    );
    let mut spawn = a.common.clone();
    let has = |flag: &str| {
        spawn
            .server_args
            .iter()
            .any(|s| s == flag || s.starts_with(&format!("{flag}=")))
    };
    let (has_app, has_rate) = (has("--app") || has("--config"), has("--rate-limit"));
    if !has_app {
        spawn.server_args.push(format!("--app={}", a.app));
    }
    if !has_rate {
        spawn.server_args.push("--rate-limit=0".into());
    }
    let first_id = fastrand::u32(0..50_000);
    let mut results = Vec::new();
    let mut series = Vec::new();
    for (clients, kind) in [(a.sse_clients, Kind::Http), (a.ws_clients, Kind::Ws)] {
        if clients > 0 {
            results.push(memory(&a, &spawn, clients, kind, first_id)?);
        }
    }
    if a.pairs > 0 && !a.modes.is_empty() {
        // One server for every mode; each mode's pairs use ids of their own.
        let server = target(&spawn)?;
        for (i, mode) in a.modes.iter().enumerate() {
            let ids = first_id + (i as u32) * (2 * a.pairs as u32);
            let (result, hist) = exchange(&a, &server, *mode, ids)?;
            results.push(result);
            series.push((mode.label(), hist));
        }
    }
    if let Some(path) = &a.common.plot {
        let s: Vec<(&str, &Histogram<u64>)> = series.iter().map(|(l, h)| (*l, h)).collect();
        std::fs::write(
            path,
            plot::svg("loudsync bench pairing: send to delivery", &s),
        )
        .with_context(|| format!("write {}", path.display()))?;
    }
    let report = json!({"scenario": "pairing", "results": results});
    if a.common.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&results);
    }
    let problems: Vec<String> = results
        .iter()
        .flat_map(|r| {
            let what = r["what"].as_str().unwrap_or("?").to_string();
            [
                ("failed", "did not identify"),
                ("errors", "errors"),
                ("closed_by_server", "closed by the server"),
                ("lost", "events lost"),
            ]
            .into_iter()
            .filter(|(k, _)| r[*k].as_u64().unwrap_or(0) > 0)
            .map(move |(k, label)| format!("{what}: {} {label}", r[k]))
        })
        .collect();
    ensure!(problems.is_empty(), "{}", problems.join("; "));
    Ok(())
}

/// Spawns `plans.len()` worker processes (`bench pairing --worker`).
fn spawn_workers(plans: &[WorkerPlan]) -> anyhow::Result<(Vec<Worker>, mpsc::Receiver<Line>)> {
    let (tx, rx) = mpsc::channel();
    let mut workers = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["bench", "pairing", "--worker"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawn worker")?;
        let mut stdin = child.stdin.take().expect("piped");
        writeln!(stdin, "{}", serde_json::to_string(plan)?)?;
        let stdout = child.stdout.take().expect("piped");
        let tx = tx.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(v) = serde_json::from_str(&line) {
                    let _ = tx.send(Line::Event(i, v));
                }
            }
            let _ = tx.send(Line::Exited(i));
        });
        workers.push(Worker { child, stdin });
    }
    Ok((workers, rx))
}

/// `total` split over at most `workers` parts, as even as can be (no empty part).
fn split(total: usize, workers: usize) -> Vec<usize> {
    let n = workers.clamp(1, total.max(1));
    (0..n)
        .map(|w| total / n + usize::from(w < total % n))
        .filter(|&k| k > 0)
        .collect()
}

fn plans(
    a: &PairingArgs,
    addr: SocketAddr,
    first_id: u32,
    shares: &[usize],
    ids_per: usize,
    task: impl Fn(usize) -> Task,
) -> Vec<WorkerPlan> {
    let srcs = sources(a.common.sources, addr);
    let mut next = first_id;
    shares
        .iter()
        .map(|&share| {
            let plan = WorkerPlan {
                addr,
                sources: srcs.clone(),
                app: a.app.clone(),
                token: a.token.clone(),
                concurrency: a.common.concurrency,
                first_id: next,
                task: task(share),
            };
            next += (share * ids_per) as u32;
            plan
        })
        .collect()
}

fn reports(rx: &mpsc::Receiver<Line>, n: usize) -> anyhow::Result<Vec<PairReport>> {
    wait_for(rx, n, "report", 0, true)?
        .into_iter()
        .map(|v| serde_json::from_value(v["report"].clone()).context("worker report"))
        .collect()
}

/// Memory per held client of `kind`, on a server of its own when spawned.
fn memory(
    a: &PairingArgs,
    spawn: &Common,
    clients: usize,
    kind: Kind,
    first_id: u32,
) -> anyhow::Result<Value> {
    let (addr, _, pid, _server) = target(spawn)?;
    let what = match kind {
        Kind::Http => "eventsource/ streams held",
        Kind::Ws => "pairing WebSockets held",
    };
    // At most ~19 000 sockets per worker process.
    let workers = a.common.workers.max(clients.div_ceil(19_000));
    let shares = split(clients, workers);
    let plans = plans(a, addr, first_id, &shares, 1, |share| Task::Hold {
        clients: share,
        kind,
    });
    if !a.common.json {
        eprintln!(
            "pairing: {clients} {what} over {} workers against {addr}{}",
            plans.len(),
            pid.map(|p| format!(" (server pid {p})"))
                .unwrap_or_default()
        );
    }
    let baseline = pid.and_then(probe::sample);
    let started = Instant::now();
    let (mut workers, rx) = spawn_workers(&plans)?;
    let ready = wait_for(&rx, plans.len(), "ready", clients, a.common.json)?;
    let open_time = started.elapsed();
    std::thread::sleep(a.settle);
    let loaded = pid.and_then(probe::sample);
    tell(&mut workers, "report");
    let reps = reports(&rx, plans.len())?;
    tell(&mut workers, "exit");
    for w in workers.iter_mut() {
        let _ = w.child.wait();
    }
    let opened: u64 = ready.iter().filter_map(|v| v["joined"].as_u64()).sum();
    let failed: u64 = ready.iter().filter_map(|v| v["failed"].as_u64()).sum();
    let server = match (baseline, loaded) {
        (Some(b), Some(l)) => json!({
            "rss_empty_bytes": b.rss_bytes,
            "rss_loaded_bytes": l.rss_bytes,
            "rss_per_client_bytes": l.rss_bytes.saturating_sub(b.rss_bytes) as f64 / opened.max(1) as f64,
            "cpu_ms_per_open": 1000.0 * l.cpu.saturating_sub(b.cpu).as_secs_f64() / opened.max(1) as f64,
        }),
        _ => Value::Null,
    };
    Ok(json!({
        "what": what,
        "clients": clients,
        "workers": plans.len(),
        "opened": opened,
        "failed": failed,
        "open_time_s": open_time.as_secs_f64(),
        "errors": reps.iter().map(|r| r.errors).sum::<u64>(),
        "closed_by_server": reps.iter().map(|r| r.closed_by_server).sum::<u64>(),
        "server": server,
    }))
}

/// Events per second for `mode`, against `server`.
fn exchange(
    a: &PairingArgs,
    server: &super::Target,
    mode: PairMode,
    first_id: u32,
) -> anyhow::Result<(Value, Histogram<u64>)> {
    let (addr, pid) = (server.0, server.2);
    let shares = split(a.pairs, a.common.workers);
    let plans = plans(a, addr, first_id, &shares, 2, |share| Task::Pairs {
        pairs: share,
        mode,
        window: a.window,
        seconds: a.duration.as_secs_f64(),
    });
    if !a.common.json {
        eprintln!(
            "pairing: {} pairs ({}), window {}, over {} workers",
            a.pairs,
            mode.label(),
            a.window,
            plans.len()
        );
    }
    let (mut workers, rx) = spawn_workers(&plans)?;
    let ready = wait_for(&rx, plans.len(), "ready", 2 * a.pairs, a.common.json)?;
    let before = pid.and_then(probe::sample);
    let measured = Instant::now();
    tell(&mut workers, "go");
    let reps = reports(&rx, plans.len())?;
    let after = pid.and_then(probe::sample);
    let measured = measured.elapsed().as_secs_f64();
    tell(&mut workers, "exit");
    for w in workers.iter_mut() {
        let _ = w.child.wait();
    }
    let mut latency = histogram();
    for r in &reps {
        latency.add(decode_hist(&r.latency_hist)?)?;
    }
    let sum = |f: fn(&PairReport) -> u64| reps.iter().map(f).sum::<u64>();
    let (sent, delivered) = (sum(|r| r.sent), sum(|r| r.delivered));
    let elapsed = reps.iter().map(|r| r.elapsed_s).fold(0.0, f64::max);
    let server = match (before, after) {
        (Some(b), Some(e)) => {
            let cpu = e.cpu.saturating_sub(b.cpu).as_secs_f64();
            json!({
                "cpu_percent": 100.0 * cpu / measured.max(1e-9),
                "cpu_us_per_event": 1e6 * cpu / delivered.max(1) as f64,
                "rss_end_bytes": e.rss_bytes,
            })
        }
        _ => Value::Null,
    };
    let result = json!({
        "what": format!("{} pairs, {}", a.pairs, mode.label()),
        "mode": mode,
        "pairs": a.pairs,
        "window": a.window,
        "workers": plans.len(),
        "opened": ready.iter().filter_map(|v| v["joined"].as_u64()).sum::<u64>(),
        "failed": ready.iter().filter_map(|v| v["failed"].as_u64()).sum::<u64>(),
        "sent": sent,
        "delivered": delivered,
        "lost": sent.saturating_sub(delivered),
        "elapsed_s": elapsed,
        "events_per_s": delivered as f64 / elapsed.max(1e-9),
        "latency": percentiles(&latency),
        "errors": sum(|r| r.errors),
        "closed_by_server": sum(|r| r.closed_by_server),
        "server": server,
    });
    Ok((result, latency))
}

fn print_table(results: &[Value]) {
    let row = |k: &str, v: String| println!("  {k:<34} {v}");
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    println!("pairing benchmark");
    for r in results {
        println!(" {}", r["what"].as_str().unwrap_or("?"));
        if r["mode"].is_null() {
            row(
                "identified",
                format!(
                    "{} of {} ({} failed) in {:.2} s",
                    r["opened"],
                    r["clients"],
                    r["failed"],
                    f(&r["open_time_s"])
                ),
            );
            let s = &r["server"];
            if !s.is_null() {
                row(
                    "server RSS empty / loaded",
                    format!(
                        "{:.1} / {:.1} MiB",
                        f(&s["rss_empty_bytes"]) / 1048576.0,
                        f(&s["rss_loaded_bytes"]) / 1048576.0
                    ),
                );
                row(
                    "server RSS per client",
                    format!("{:.0} bytes", f(&s["rss_per_client_bytes"])),
                );
                row(
                    "server CPU per open",
                    format!("{:.3} ms", f(&s["cpu_ms_per_open"])),
                );
            }
        } else {
            row(
                "events delivered",
                format!(
                    "{} of {} sent in {:.2} s: {:.0} events/s",
                    r["delivered"],
                    r["sent"],
                    f(&r["elapsed_s"]),
                    f(&r["events_per_s"])
                ),
            );
            let h = &r["latency"];
            row(
                "send to delivery",
                format!(
                    "p50 {} ms  p90 {} ms  p99 {} ms  p99.9 {} ms  max {} ms",
                    h["p50_ms"], h["p90_ms"], h["p99_ms"], h["p999_ms"], h["max_ms"]
                ),
            );
            let s = &r["server"];
            if !s.is_null() {
                row(
                    "server CPU",
                    format!(
                        "{:.1} % of a core, {:.2} us per event",
                        f(&s["cpu_percent"]),
                        f(&s["cpu_us_per_event"])
                    ),
                );
            }
        }
        row(
            "errors / closed by server",
            format!("{} / {}", r["errors"], r["closed_by_server"]),
        );
    }
}

// ---------------------------------------------------------------------------------------
// The worker process.

/// What a worker's connections share.
struct Shared {
    plan: WorkerPlan,
    /// For [`connect`] (the WebSocket path, the sources).
    spec: WorkerSpec,
    start: Instant,
    latency: Mutex<Histogram<u64>>,
    errors: AtomicU64,
    closed: AtomicU64,
}

impl Shared {
    fn id(&self, n: usize) -> String {
        format!("{:06}", self.plan.first_id as usize + n)
    }

    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    fn query(&self, id: &str, role: &str) -> String {
        format!(
            "clientId={id}&clientRole={role}&accessToken={}",
            rawurlencode(&self.plan.token)
        )
    }
}

fn worker_main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut stdin = BufReader::new(tokio::io::stdin()).lines();
        let line = stdin.next_line().await?.context("no plan on stdin")?;
        let plan: WorkerPlan = serde_json::from_str(&line).context("bad plan")?;
        let spec = WorkerSpec {
            dialect: BenchDialect::Loudsync,
            addr: plan.addr,
            path: format!("/crsocket/{}/ws", plan.app),
            sessions: Vec::new(),
            sources: plan.sources.clone(),
            interval_ms: 0,
            concurrency: plan.concurrency,
            tag: String::new(),
            mode: Mode::Idle,
            resumable: false,
            host_addr: None,
        };
        let shared = Arc::new(Shared {
            plan,
            spec,
            start: Instant::now(),
            latency: Mutex::new(histogram()),
            errors: AtomicU64::new(0),
            closed: AtomicU64::new(0),
        });
        let task = shared.plan.task.clone();
        let (total, per) = match &task {
            Task::Hold { clients, .. } => (*clients, 1),
            Task::Pairs { pairs, .. } => (*pairs, 2),
        };
        let done = Arc::new(AtomicU64::new(0));
        let limit = Arc::new(Semaphore::new(shared.plan.concurrency.max(1)));
        // Open everything, `concurrency` at a time (one task per connection or pair).
        let mut opening = Vec::new();
        for n in 0..total {
            let (shared, done, limit, task) =
                (shared.clone(), done.clone(), limit.clone(), task.clone());
            let permit = limit.acquire_owned().await.expect("semaphore");
            opening.push(tokio::spawn(async move {
                let r = match task {
                    Task::Hold { kind, .. } => {
                        let id = shared.id(n);
                        receiver(&shared, kind, &id)
                            .await
                            .map(|r| Opened::Held(Box::new(r)))
                    }
                    Task::Pairs { mode, .. } => pair(&shared, mode, n)
                        .await
                        .map(|p| Opened::Pair(Box::new(p))),
                };
                drop(permit);
                done.fetch_add(per, Ordering::Relaxed);
                match r {
                    Ok(o) => (vec![o], 0),
                    Err(e) => {
                        eprintln!("pairing worker: {e:#}");
                        (Vec::new(), 1)
                    }
                }
            }));
        }
        let (opened, failed) = gather_joins(opening, &done, total * per as usize).await;
        emit(json!({"event": "ready", "joined": opened.len() as u64 * per, "failed": failed}));
        let mut held = Vec::new();
        let mut pairs = Vec::new();
        for o in opened {
            match o {
                Opened::Held(r) => held.push(tokio::spawn(hold(shared.clone(), *r))),
                Opened::Pair(p) => pairs.push(*p),
            }
        }
        let opened_n = (held.len() + pairs.len()) as u64;
        let mut report = PairReport {
            opened: opened_n,
            failed,
            ..PairReport::default()
        };
        while let Some(line) = stdin.next_line().await? {
            match line.trim() {
                "go" => {
                    let Task::Pairs {
                        window, seconds, ..
                    } = task
                    else {
                        continue;
                    };
                    let go = Instant::now();
                    let deadline = go + Duration::from_secs_f64(seconds);
                    let runs: Vec<_> = pairs
                        .drain(..)
                        .map(|p| tokio::spawn(run_pair(shared.clone(), p, window, deadline)))
                        .collect();
                    for r in runs {
                        if let Ok((sent, delivered)) = r.await {
                            report.sent += sent;
                            report.delivered += delivered;
                        }
                    }
                    report.elapsed_s = go.elapsed().as_secs_f64();
                    emit_report(&shared, &mut report);
                }
                "report" => emit_report(&shared, &mut report),
                "exit" => break,
                _ => {}
            }
        }
        for h in held {
            h.abort();
        }
        Ok(())
    })
}

fn emit_report(shared: &Shared, report: &mut PairReport) {
    report.latency_hist = encode_hist(&shared.latency.lock().unwrap());
    report.errors = shared.errors.load(Ordering::Relaxed);
    report.closed_by_server = shared.closed.load(Ordering::Relaxed);
    emit(json!({"event": "report", "report": report}));
}

enum Opened {
    Held(Box<Receiver>),
    Pair(Box<Pair>),
}

/// A pair: its controller's way to send, its responder's way to receive.
struct Pair {
    sender: Sender,
    receiver: Receiver,
    recipient: String,
}

/// Opens pair `n`: the responder first (identified before anything is sent to it).
async fn pair(shared: &Arc<Shared>, mode: PairMode, n: usize) -> anyhow::Result<Pair> {
    let (controller, responder) = (shared.id(2 * n), shared.id(2 * n + 1));
    let (send_kind, receive_kind) = mode.ends();
    let receiver = receiver(shared, receive_kind, &responder).await?;
    let sender = match send_kind {
        Kind::Ws => Sender::Ws(identify_ws(shared, &controller, "controller", 2 * n).await?),
        Kind::Http => Sender::Http {
            tcp: tcp(shared, 2 * n).await?,
            buf: Vec::new(),
            prefix: format!(
                "GET /crsocket/{}/sendevent/?{}&recipientClientId={responder}&eventType=crEvent&eventData=",
                shared.plan.app,
                shared.query(&controller, "controller")
            ),
            head: format!(" HTTP/1.1\r\nHost: {}\r\n\r\n", shared.plan.addr),
            controller,
            out: Vec::new(),
        },
    };
    Ok(Pair {
        sender,
        receiver,
        recipient: responder,
    })
}

async fn tcp(shared: &Shared, n: usize) -> anyhow::Result<TcpStream> {
    let addr = shared.plan.addr;
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    let srcs = &shared.plan.sources;
    if srcs.len() > 1 {
        socket.bind(SocketAddr::new(srcs[n % srcs.len()], 0))?;
    }
    let tcp = socket.connect(addr).await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// Opens the pairing WebSocket and identifies as `id` in `role`.
async fn identify_ws(shared: &Shared, id: &str, role: &str, n: usize) -> anyhow::Result<Ws> {
    let mut ws = connect(&shared.spec, n as u64).await?;
    let identify = PairingClientFrame::Identify(IdentifyFrame {
        client_role: Some(role.into()),
        client_id: IdentifyId::Given(id.into()),
        access_token: Some(shared.plan.token.clone()),
    });
    ws.send(Message::text(encode_client(&identify))).await?;
    let deadline = Duration::from_secs(10);
    loop {
        let msg = tokio::time::timeout(deadline, ws.next())
            .await
            .context("no cr_welcome")?
            .context("closed before cr_welcome")??;
        if let Some(text) = msg.as_text() {
            match message_type(text) {
                Some("cr_welcome") => return Ok(ws),
                Some("cr_aborted") | Some("error") => bail!("identify refused: {text}"),
                _ => {}
            }
        }
    }
}

/// The receiving end of a responder.
enum Receiver {
    Ws(Ws),
    /// An `eventsource/` stream: its socket and the bytes read but not yet parsed.
    Sse(Sse),
}

/// An `eventsource/` response being read: chunked transfer coding, then SSE events.
struct Sse {
    tcp: TcpStream,
    raw: Vec<u8>,
    chunked: bool,
    text: Vec<u8>,
}

/// Opens responder `id`'s receiving end on `kind`, identified.
async fn receiver(shared: &Arc<Shared>, kind: Kind, id: &str) -> anyhow::Result<Receiver> {
    let n = id.parse::<usize>().unwrap_or(0);
    match kind {
        Kind::Ws => Ok(Receiver::Ws(identify_ws(shared, id, "responder", n).await?)),
        Kind::Http => {
            let mut tcp = tcp(shared, n).await?;
            let request = format!(
                "GET /crsocket/{}/eventsource/?{} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
                shared.plan.app,
                shared.query(id, "responder"),
                shared.plan.addr
            );
            tcp.write_all(request.as_bytes()).await?;
            let mut raw = Vec::with_capacity(1024);
            let head_end = loop {
                if let Some(i) = find(&raw, b"\r\n\r\n") {
                    break i;
                }
                let n = tokio::time::timeout(Duration::from_secs(10), tcp.read_buf(&mut raw))
                    .await
                    .context("no eventsource/ response")??;
                ensure!(n > 0, "closed before the eventsource/ response");
            };
            let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
            ensure!(
                head.starts_with("http/1.1 200"),
                "eventsource/ answered {}",
                head.lines().next().unwrap_or("")
            );
            let chunked = head.contains("transfer-encoding: chunked");
            raw.drain(..head_end + 4);
            let mut sse = Sse {
                tcp,
                raw,
                chunked,
                text: Vec::new(),
            };
            // The first event says whether the stream is identified.
            let first = tokio::time::timeout(Duration::from_secs(10), sse.next_events())
                .await
                .context("no hello")??;
            match first.first() {
                Some(SseEvent::Hello) => Ok(Receiver::Sse(sse)),
                other => bail!("eventsource/ stream for {id} began with {other:?}"),
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[derive(Debug)]
enum SseEvent {
    Hello,
    /// A `crEvent` with its last field (the bench's send instant), if it is a number.
    CrEvent(Option<u64>),
    /// Any other event (`aborted`, `closed`, `shutdown`, ...), by name.
    Other(String),
}

impl Sse {
    /// Reads until at least one whole event is in; returns every whole event read.
    async fn next_events(&mut self) -> anyhow::Result<Vec<SseEvent>> {
        loop {
            self.dechunk()?;
            let events = self.parse();
            if !events.is_empty() {
                return Ok(events);
            }
            let n = self.tcp.read_buf(&mut self.raw).await?;
            ensure!(n > 0, "the stream ended");
        }
    }

    /// Moves whole chunks from `raw` to `text`.
    fn dechunk(&mut self) -> anyhow::Result<()> {
        if !self.chunked {
            self.text.extend_from_slice(&self.raw);
            self.raw.clear();
            return Ok(());
        }
        while let Some(line_end) = find(&self.raw, b"\r\n") {
            let size = std::str::from_utf8(&self.raw[..line_end])
                .ok()
                .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
                .context("bad chunk size")?;
            ensure!(size > 0, "the stream ended");
            if self.raw.len() < line_end + 2 + size + 2 {
                break;
            }
            let data = &self.raw[line_end + 2..line_end + 2 + size];
            self.text.extend_from_slice(data);
            self.raw.drain(..line_end + 2 + size + 2);
        }
        Ok(())
    }

    /// Takes the whole events (`...\n\n`) out of `text`.
    fn parse(&mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        let mut used = 0;
        while let Some(end) = find(&self.text[used..], b"\n\n") {
            let block = &self.text[used..used + end];
            used += end + 2;
            let (mut name, mut data) = ("", "");
            for line in std::str::from_utf8(block).unwrap_or("").lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = v;
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = v;
                }
            }
            events.push(match name {
                "hello" => SseEvent::Hello,
                // The data is percent-encoded: the fields are separated by `%2C`.
                "crEvent" => {
                    SseEvent::CrEvent(data.rsplit("%2C").next().and_then(|t| t.parse().ok()))
                }
                "" => continue,
                other => SseEvent::Other(other.to_string()),
            });
        }
        self.text.drain(..used);
        events
    }
}

impl Receiver {
    /// Waits for what arrives next: the send instants of the events delivered (empty for
    /// anything else). An error is the end of the connection.
    async fn next(&mut self, shared: &Shared) -> anyhow::Result<Vec<Option<u64>>> {
        match self {
            Receiver::Ws(ws) => {
                let msg = ws.next().await.context("closed")??;
                if msg.is_close() {
                    bail!("closed");
                }
                let Some(text) = msg.as_text() else {
                    return Ok(Vec::new());
                };
                match message_type(text) {
                    Some("cr_event") => Ok(vec![event_param(text)]),
                    Some("error") | Some("cr_aborted") => {
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                        Ok(Vec::new())
                    }
                    _ => Ok(Vec::new()),
                }
            }
            Receiver::Sse(sse) => {
                let mut out = Vec::new();
                for e in sse.next_events().await? {
                    match e {
                        SseEvent::CrEvent(t) => out.push(t),
                        SseEvent::Other(name) if name == "aborted" => {
                            shared.errors.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                }
                Ok(out)
            }
        }
    }
}

/// The first of a `cr_event`'s `eventParams`, as a number.
fn event_param(text: &str) -> Option<u64> {
    let key = "\"eventParams\":[\"";
    let at = text.find(key)? + key.len();
    text[at..].split('"').next()?.parse().ok()
}

/// The sending end of a controller.
enum Sender {
    Ws(Ws),
    /// `sendevent/` requests on one keep-alive connection, pipelined.
    Http {
        tcp: TcpStream,
        /// Response bytes read but not yet parsed.
        buf: Vec<u8>,
        /// The request line up to `eventData=`.
        prefix: String,
        /// The rest of the request.
        head: String,
        controller: String,
        /// Requests written since the last flush.
        out: Vec<u8>,
    },
}

impl Sender {
    /// Queues one event for `recipient`, carrying `t_us`.
    async fn feed(&mut self, recipient: &str, t_us: u64) -> anyhow::Result<()> {
        match self {
            Sender::Ws(ws) => {
                let frame = format!(
                    r#"{{"type":"cr_event","recipientClientId":"{recipient}","eventType":"bench","eventParams":["{t_us}"]}}"#
                );
                ws.feed(Message::text(frame)).await?;
            }
            Sender::Http {
                prefix,
                head,
                controller,
                out,
                ..
            } => {
                let data = format!("bench,,false,false,true,NaN,NaN,{controller},{t_us}");
                out.extend_from_slice(prefix.as_bytes());
                out.extend_from_slice(rawurlencode(&data).as_bytes());
                out.extend_from_slice(head.as_bytes());
            }
        }
        Ok(())
    }

    /// Writes what was fed.
    async fn flush(&mut self) -> anyhow::Result<()> {
        match self {
            Sender::Ws(ws) => ws.flush().await?,
            Sender::Http { tcp, out, .. } => {
                if !out.is_empty() {
                    tcp.write_all(out).await?;
                    out.clear();
                }
            }
        }
        Ok(())
    }

    /// Reads what the server says to the controller (a WebSocket's `error`s, the answers to
    /// `sendevent/`), counting anything but success as an error. An error is the end.
    async fn next(&mut self, shared: &Shared) -> anyhow::Result<()> {
        match self {
            Sender::Ws(ws) => {
                let msg = ws.next().await.context("closed")??;
                if msg.is_close() {
                    bail!("closed");
                }
                if let Some(text) = msg.as_text() {
                    if matches!(message_type(text), Some("error") | Some("cr_aborted")) {
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Sender::Http { tcp, buf, .. } => {
                let n = tcp.read_buf(buf).await?;
                ensure!(n > 0, "sendevent/ connection closed");
                // Every answer is a head with an empty body.
                while let Some(end) = find(buf, b"\r\n\r\n") {
                    if !buf.starts_with(b"HTTP/1.1 204") {
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    buf.drain(..end + 4);
                }
            }
        }
        Ok(())
    }
}

/// Runs one pair until `deadline`, then drains what is in flight (at most 5 s): events sent
/// and delivered.
async fn run_pair(
    shared: Arc<Shared>,
    mut p: Pair,
    window: usize,
    deadline: Instant,
) -> (u64, u64) {
    let (mut sent, mut delivered) = (0u64, 0u64);
    let drain_end = tokio::time::Instant::from_std(deadline + Duration::from_secs(5));
    let deadline = tokio::time::Instant::from_std(deadline);
    loop {
        let sending = tokio::time::Instant::now() < deadline;
        if sending && sent - delivered < window as u64 {
            let mut fed = false;
            while sent - delivered < window as u64 {
                if p.sender.feed(&p.recipient, shared.now_us()).await.is_err() {
                    break;
                }
                sent += 1;
                fed = true;
            }
            if fed && p.sender.flush().await.is_err() {
                shared.closed.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
        if !sending && delivered >= sent {
            break;
        }
        tokio::select! {
            got = p.receiver.next(&shared) => match got {
                Ok(times) => {
                    let now = shared.now_us();
                    let mut h = shared.latency.lock().unwrap();
                    for t in times {
                        delivered += 1;
                        if let Some(t) = t {
                            let _ = h.record(now.saturating_sub(t).max(1));
                        }
                    }
                }
                Err(_) => {
                    shared.closed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            },
            r = p.sender.next(&shared) => if r.is_err() {
                shared.closed.fetch_add(1, Ordering::Relaxed);
                break;
            },
            _ = tokio::time::sleep_until(deadline), if sending => {}
            _ = tokio::time::sleep_until(drain_end) => break,
        }
    }
    (sent, delivered)
}

/// Holds a receiving end until the worker exits, counting a close by the server.
async fn hold(shared: Arc<Shared>, mut r: Receiver) {
    loop {
        if r.next(&shared).await.is_err() {
            shared.closed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_is_split_evenly_without_empty_workers() {
        assert_eq!(split(10, 3), vec![4, 3, 3]);
        assert_eq!(split(1, 4), vec![1]);
        assert_eq!(split(0, 2), Vec::<usize>::new());
    }

    #[test]
    fn the_send_instant_is_read_back_from_both_transports() {
        let ws = r#"{"type":"cr_event","eventType":"bench","eventSubType":"","eventParams":["1234"],"buffered":false}"#;
        assert_eq!(event_param(ws), Some(1234));
        let data = "bench,,false,false,true,NaN,NaN,000001,987";
        let sse = loudsync_protocol::pairing::sse::sse_event("crEvent", data);
        let hello = loudsync_protocol::pairing::sse::sse_event("hello", "5");
        // Chunked as a server would write it, split in the middle of a chunk.
        let body = format!(
            "{:x}\r\n{hello}\r\n{:x}\r\n{sse}\r\n",
            hello.len(),
            sse.len()
        );
        let (a, b) = body.as_bytes().split_at(body.len() - 7);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let client = TcpStream::connect(listener.local_addr().unwrap());
            let (client, (mut server, _)) =
                tokio::join!(client, async { listener.accept().await.unwrap() });
            let mut sse = Sse {
                tcp: client.unwrap(),
                raw: Vec::new(),
                chunked: true,
                text: Vec::new(),
            };
            server.write_all(a).await.unwrap();
            let first = sse.next_events().await.unwrap();
            assert!(matches!(first.as_slice(), [SseEvent::Hello]), "{first:?}");
            server.write_all(b).await.unwrap();
            let second = sse.next_events().await.unwrap();
            assert!(
                matches!(second.as_slice(), [SseEvent::CrEvent(Some(987))]),
                "{second:?}"
            );
        });
    }
}
