//! `loudsync bench`: the load generator's coordinator. It plans the members, spreads them over
//! worker processes (one process may hold at most 20 000 open files here), drives the phases,
//! samples the server's RSS and CPU from `/proc`, and prints the results.

pub mod probe;
pub mod worker;

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use worker::{decode_hist, SessionPlan, WorkerReport, WorkerSpec};

/// Load scenarios against a LoudSync server.
#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// N members in sessions of S, heartbeating and pinging at the document's rates, held for a
    /// duration: server memory per member, CPU, ping RTT, and false timeouts.
    Idle(IdleArgs),
}

/// Options every scenario shares.
#[derive(Args, Clone)]
pub struct Common {
    /// Server WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:8080/")]
    url: String,
    /// Start a server for the run (`loudsync serve` on 127.0.0.1, random port) and measure it.
    #[arg(long)]
    spawn_server: bool,
    /// Extra arguments for the spawned server, e.g. `--server-arg=--max-members=5000`.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// PID of a server on this machine, to report its RSS and CPU.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Worker processes to spread clients over.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Loopback source addresses to spread connections over (127.0.0.1, .2, ...), for more
    /// connections than one source address has ports.
    #[arg(long, default_value_t = 1)]
    sources: u8,
    /// Joins in flight at once per worker.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Options of `bench idle`.
#[derive(Args)]
pub struct IdleArgs {
    #[command(flatten)]
    common: Common,
    /// Members in all.
    #[arg(long, default_value_t = 1000)]
    members: usize,
    /// Members per session, host included.
    #[arg(long, default_value_t = 10)]
    session_size: usize,
    /// How long to hold them after all have joined.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Heartbeat and ping interval of each member.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Wait after the last join before measuring memory.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    settle: Duration,
}

/// Runs the chosen scenario.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.scenario {
        Scenario::Idle(a) => idle(a),
    }
}

/// A server started for the run.
struct SpawnedServer {
    child: Child,
    addr: SocketAddr,
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_server(extra: &[String]) -> anyhow::Result<SpawnedServer> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["serve", "--listen", "127.0.0.1:0", "--log", "warn"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("spawn server")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("loudsync listening on http://")
        .with_context(|| format!("server said {line:?}"))?
        .parse()?;
    Ok(SpawnedServer { child, addr })
}

/// Where to connect: address, path, and the server's pid if known.
fn target(
    common: &Common,
) -> anyhow::Result<(SocketAddr, String, Option<u32>, Option<SpawnedServer>)> {
    if common.spawn_server {
        let s = spawn_server(&common.server_args)?;
        return Ok((s.addr, "/".into(), Some(s.child.id()), Some(s)));
    }
    let rest = common
        .url
        .strip_prefix("ws://")
        .context("--url must start with ws://")?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let addr = hostport
        .to_socket_addrs()?
        .next()
        .with_context(|| format!("cannot resolve {hostport}"))?;
    Ok((addr, path, common.server_pid, None))
}

fn sources(n: u8, server: SocketAddr) -> Vec<IpAddr> {
    if !server.ip().is_loopback() || !server.is_ipv4() {
        return vec![if server.is_ipv4() {
            IpAddr::from([0, 0, 0, 0])
        } else {
            "::".parse().unwrap()
        }];
    }
    (1..=n.max(1))
        .map(|i| IpAddr::from([127, 0, 0, i]))
        .collect()
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
}

enum Line {
    Event(usize, Value),
    Exited(usize),
}

fn spawn_workers(specs: Vec<WorkerSpec>) -> anyhow::Result<(Vec<Worker>, mpsc::Receiver<Line>)> {
    let (tx, rx) = mpsc::channel();
    let mut workers = Vec::new();
    for (i, spec) in specs.into_iter().enumerate() {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("bench-worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawn worker")?;
        let mut stdin = child.stdin.take().expect("piped");
        writeln!(stdin, "{}", serde_json::to_string(&spec)?)?;
        let stdout = child.stdout.take().expect("piped");
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
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

fn tell(workers: &mut [Worker], what: &str) {
    for w in workers.iter_mut() {
        let _ = writeln!(w.stdin, "{what}");
        let _ = w.stdin.flush();
    }
}

/// Waits until every worker has sent an event of `kind`, showing progress.
fn wait_for(
    rx: &mpsc::Receiver<Line>,
    n: usize,
    kind: &str,
    total: usize,
    quiet: bool,
) -> anyhow::Result<Vec<Value>> {
    let mut got: Vec<Option<Value>> = vec![None; n];
    let mut progress = vec![0u64; n];
    while got.iter().any(Option::is_none) {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Line::Event(i, v)) => {
                if v["event"] == kind {
                    got[i] = Some(v.clone());
                }
                if let Some(j) = v["joined"].as_u64() {
                    progress[i] = j;
                }
                if !quiet {
                    eprint!("\r  joined {}/{}   ", progress.iter().sum::<u64>(), total);
                }
            }
            Ok(Line::Exited(i)) if got[i].is_none() => bail!("worker {i} exited early"),
            Ok(Line::Exited(_)) => {}
            Err(_) => bail!("workers stopped reporting"),
        }
    }
    if !quiet {
        eprintln!();
    }
    Ok(got.into_iter().flatten().collect())
}

fn percentiles(h: &Histogram<u64>) -> Value {
    let ms = |us: u64| (us as f64) / 1000.0;
    json!({
        "count": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.5)),
        "p90_ms": ms(h.value_at_quantile(0.9)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
    })
}

fn idle(args: IdleArgs) -> anyhow::Result<()> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let common = &args.common;
    let (addr, path, pid, _server) = target(common)?;
    let quiet = common.json;
    let baseline = pid.and_then(probe::sample);
    let size = args.session_size.max(1);
    let sessions = args.members.div_ceil(size);
    let tag = format!("b{}", fastrand::u32(..));
    let workers_n = common.workers.clamp(1, sessions.max(1));
    let sources = sources(common.sources, addr);
    let mut specs: Vec<WorkerSpec> = (0..workers_n)
        .map(|w| WorkerSpec {
            addr,
            path: path.clone(),
            sessions: Vec::new(),
            sources: sources.clone(),
            interval_ms: args.interval.as_millis() as u64,
            concurrency: common.concurrency,
            tag: format!("{tag}w{w}"),
        })
        .collect();
    let mut left = args.members;
    for k in 0..sessions {
        let members = left.min(size);
        left -= members;
        specs[k % workers_n].sessions.push(SessionPlan {
            id: format!("{tag}-{k}"),
            members,
        });
    }
    if !quiet {
        eprintln!(
            "idle: {} members in {} sessions of {} over {} workers, target {addr}",
            args.members, sessions, size, workers_n
        );
    }
    let started = Instant::now();
    let (mut workers, rx) = spawn_workers(specs)?;
    let ready = wait_for(&rx, workers_n, "ready", args.members, quiet)?;
    let join_time = started.elapsed();
    let joined: u64 = ready.iter().filter_map(|v| v["joined"].as_u64()).sum();
    let failed: u64 = ready.iter().filter_map(|v| v["failed"].as_u64()).sum();
    tell(&mut workers, "hold");
    std::thread::sleep(args.settle);
    let loaded = pid.and_then(probe::sample);
    let hold_start = Instant::now();
    std::thread::sleep(args.duration);
    let end = pid.and_then(probe::sample);
    let hold = hold_start.elapsed();
    tell(&mut workers, "report");
    let reports: Vec<WorkerReport> = wait_for(&rx, workers_n, "report", args.members, true)?
        .into_iter()
        .map(|v| serde_json::from_value(v["report"].clone()))
        .collect::<Result<_, _>>()?;
    tell(&mut workers, "exit");
    for w in workers.iter_mut() {
        let _ = w.child.wait();
    }
    let mut rtt = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut join = rtt.clone();
    for r in &reports {
        rtt.add(decode_hist(&r.rtt_hist)?)?;
        join.add(decode_hist(&r.join_hist)?)?;
    }
    let timeouts: u64 = reports.iter().map(|r| r.timeouts_seen).sum();
    let closed: u64 = reports.iter().map(|r| r.closed_by_server).sum();
    let errors: u64 = reports.iter().map(|r| r.errors).sum();
    let server = match (baseline, loaded, end) {
        (Some(b), Some(l), Some(e)) => json!({
            "rss_empty_bytes": b.rss_bytes,
            "rss_loaded_bytes": l.rss_bytes,
            "rss_end_bytes": e.rss_bytes,
            "rss_per_member_bytes": (l.rss_bytes.saturating_sub(b.rss_bytes)) as f64 / joined.max(1) as f64,
            "cpu_percent_during_hold": 100.0 * (e.cpu.saturating_sub(l.cpu)).as_secs_f64() / hold.as_secs_f64(),
        }),
        _ => Value::Null,
    };
    let result = json!({
        "scenario": "idle",
        "members": args.members,
        "session_size": size,
        "workers": workers_n,
        "joined": joined,
        "join_failed": failed,
        "join_time_s": join_time.as_secs_f64(),
        "hold_s": hold.as_secs_f64(),
        "join_latency": percentiles(&join),
        "ping_rtt": percentiles(&rtt),
        "false_timeouts": timeouts,
        "closed_by_server": closed,
        "errors": errors,
        "server": server,
    });
    if common.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print_table(&result);
    }
    if failed > 0 || timeouts > 0 || closed > 0 {
        bail!("{failed} joins failed, {timeouts} false timeouts, {closed} members closed by the server");
    }
    Ok(())
}

fn print_table(r: &Value) {
    let row = |k: &str, v: String| println!("  {k:<28} {v}");
    println!("idle benchmark");
    row(
        "members joined",
        format!(
            "{} ({} failed) in {:.2} s",
            r["joined"],
            r["join_failed"],
            r["join_time_s"].as_f64().unwrap_or(0.0)
        ),
    );
    for (name, key) in [("join latency", "join_latency"), ("ping RTT", "ping_rtt")] {
        let h = &r[key];
        row(
            name,
            format!(
                "p50 {} ms  p90 {} ms  p99 {} ms  p99.9 {} ms  max {} ms  (n={})",
                h["p50_ms"], h["p90_ms"], h["p99_ms"], h["p999_ms"], h["max_ms"], h["count"]
            ),
        );
    }
    row("false timeouts", r["false_timeouts"].to_string());
    row("closed by server", r["closed_by_server"].to_string());
    let s = &r["server"];
    if !s.is_null() {
        let mib = |b: &Value| b.as_f64().unwrap_or(0.0) / 1048576.0;
        row(
            "server RSS empty",
            format!("{:.1} MiB", mib(&s["rss_empty_bytes"])),
        );
        row(
            "server RSS loaded",
            format!("{:.1} MiB", mib(&s["rss_loaded_bytes"])),
        );
        row(
            "server RSS at end of hold",
            format!("{:.1} MiB", mib(&s["rss_end_bytes"])),
        );
        row(
            "server RSS per member",
            format!(
                "{:.0} bytes",
                s["rss_per_member_bytes"].as_f64().unwrap_or(0.0)
            ),
        );
        row(
            "server CPU during hold",
            format!(
                "{:.1} %",
                s["cpu_percent_during_hold"].as_f64().unwrap_or(0.0)
            ),
        );
    }
}
