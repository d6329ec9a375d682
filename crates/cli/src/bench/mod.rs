//! `loudsync bench`: the load generator's coordinator. It plans the members, spreads them over
//! worker processes (one process may hold at most 20 000 open files here), drives the phases,
//! samples the server's RSS and CPU from `/proc` and its counters from `/metrics`, and prints
//! the results as a table, as JSON, and optionally as an SVG latency plot.

mod cluster;
mod handoff;
pub mod http;
mod media;
mod pairing;
pub mod plot;
pub mod probe;
pub mod resume;
mod storm;
pub mod worker;

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use worker::{decode_hist, BenchDialect, Mode, SessionPlan, WorkerReport, WorkerSpec};

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
    /// Members join as fast as the server takes them (connect, upgrade, join, welcome and
    /// member_list; they leave at the end): joins per second and join latency.
    JoinStorm(JoinStormArgs),
    /// Members join and leave continuously at a given rate, sessions kept full: join latency
    /// under churn, RTT of the members who stay, and CPU.
    Churn(ChurnArgs),
    /// One session of N members; each joiner gets every later member_joined: time to fill,
    /// broadcast delivery, and ping RTT afterwards.
    BigSession(BigSessionArgs),
    /// Resumable members (seed 003's token handshake) exchanging numbered messages, all of
    /// whose sockets are cut at once and resumed on new sockets: time until all are resumed,
    /// resume latency, messages lost or doubled, and the server's memory per held place.
    ResumeStorm(storm::ResumeStormArgs),
    /// One session of N members (issue 11): handoff latency, from the candidate's
    /// `handoff_accept` to every member's `host_changed`, and a `state_set` fanned out to every
    /// member side by side with a `message` of the same frame size.
    Handoff(handoff::HandoffArgs),
    /// Controller/responder pairing (issue 12): the server's memory per identified
    /// `eventsource/` stream, and events per second between pairs over the pairing WebSocket
    /// and over `sendevent/` + `eventsource/`, with their send-to-delivery latency.
    Pairing(pairing::PairingArgs),
    /// The session media relay (issue 13, `serve --media-listen`): 1 -> 1 throughput at rising
    /// bitrates next to `iperf3 -u`, and 1 -> N fan-out (server CPU per relayed datagram, loss
    /// and jitter per subscriber), batched or unbatched datagram I/O.
    Media(media::MediaArgs),
    /// Cluster mode (issue 16): a redis-server and three nodes of its own; message latency
    /// and cost on one node and across nodes next to a plain server, takeover time after the
    /// owner is killed, and a resume storm of a dead node's members onto the others.
    Cluster(cluster::ClusterArgs),
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
    /// Extra arguments for the spawned server, e.g. `--server-arg=--rate-limit=0`.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// PID of a server on this machine, to report its RSS and CPU.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Admin token of the server, for the scenarios that create a session over HTTP.
    #[arg(long, env = "LOUDSYNC_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Worker processes to spread clients over.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Loopback source addresses to spread connections over (127.0.0.1, .2, ...), for more
    /// connections than one source address has ports.
    #[arg(long, default_value_t = 1)]
    sources: u8,
    /// Joins in flight at once, per worker.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Heartbeat and ping interval of each member.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// The members' dialect. With `app` nobody can host, so sessions are created over HTTP
    /// first (a LoudSync server), or `--session` names one that exists (e.g. the app's own
    /// host server, which holds exactly one).
    #[arg(long, value_enum, default_value = "loudsync")]
    dialect: BenchDialect,
    /// Join this existing session instead of creating sessions (with `--dialect app`, and for
    /// `big-session`), e.g. the one session of the app's own host server.
    #[arg(long)]
    session: Option<String>,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Draw the latency distributions to this SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,
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
    /// Wait after the last join before measuring memory.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// First run the same members against a bare echo floor (`loudsync bench-floor`: the
    /// server's own WebSocket framing and JSON codecs, answering `join` and `ping` and nothing
    /// more), started by the bench, then against the server; report the server's CPU as a
    /// multiple of the floor's.
    #[arg(long)]
    floor: bool,
    /// Resumable members: seed 003's token handshake before `join`, numbered server frames
    /// acknowledged with the next heartbeat (issue 10).
    #[arg(long)]
    resumable: bool,
    /// With `--resumable` and `--spawn-server`: first the same run with plain members on a
    /// server of its own, then the resumable one on a fresh server, and both side by side.
    #[arg(long, requires = "resumable")]
    versus_plain: bool,
}

/// Options of `bench join-storm`.
#[derive(Args)]
pub struct JoinStormArgs {
    #[command(flatten)]
    common: Common,
    /// Joins in all (every member stays until the end, so at most ~19 000 per server).
    #[arg(long, default_value_t = 10000)]
    members: usize,
    /// Members per session, host included.
    #[arg(long, default_value_t = 10)]
    session_size: usize,
}

/// Options of `bench churn`.
#[derive(Args)]
pub struct ChurnArgs {
    #[command(flatten)]
    common: Common,
    /// Members kept in sessions.
    #[arg(long, default_value_t = 1000)]
    members: usize,
    /// Members per session, host included.
    #[arg(long, default_value_t = 10)]
    session_size: usize,
    /// Leave+join replacements per second, in all.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// How long to churn.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
}

/// Options of `bench big-session`.
#[derive(Args)]
pub struct BigSessionArgs {
    #[command(flatten)]
    common: Common,
    /// Members of the one session (it is created over HTTP with this capacity).
    #[arg(long, default_value_t = 5000)]
    members: usize,
    /// How long to measure ping RTT once it is full.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
}

/// Runs the chosen scenario.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    raise_open_file_limit();
    match args.scenario {
        Scenario::Idle(a) => {
            if a.resumable && a.common.dialect == BenchDialect::App {
                bail!("the app's dialect has no handshake: its members are never resumable");
            }
            let name = if a.resumable {
                "idle (resumable)"
            } else {
                "idle"
            };
            let mut plan = Plan::sessions(name, &a.common, a.members, a.session_size, Mode::Idle)
                .hold(a.settle, a.duration);
            if a.versus_plain {
                if !a.common.spawn_server {
                    bail!("--versus-plain needs --spawn-server (a fresh server for each run)");
                }
                let plain = execute(&a.common, plan.clone())?;
                plan.specs.iter_mut().for_each(|s| s.resumable = true);
                let resumable = execute(&a.common, plan)?;
                compare_resumable(&a.common, &plain, &resumable);
                return Ok(());
            }
            plan.specs
                .iter_mut()
                .for_each(|s| s.resumable = a.resumable);
            if !a.floor {
                return execute(&a.common, plan).map(drop);
            }
            // The floor runs on the same kind of runtime as the server it is compared with.
            let floor = spawn_floor(worker_threads_of(&a.common.server_args))?;
            let floor_target = (floor.addr, "/".to_string(), Some(floor.child.id()), None);
            let mut floor_plan = plan.clone();
            floor_plan.scenario = "idle (echo floor)";
            floor_plan.create.clear();
            let floor_result = execute_on(&a.common, floor_plan, floor_target)?;
            drop(floor);
            let result = execute(&a.common, plan)?;
            compare_with_floor(&a.common, &floor_result, &result);
            Ok(())
        }
        Scenario::JoinStorm(a) => {
            let plan = Plan::sessions(
                "join-storm",
                &a.common,
                a.members,
                a.session_size,
                Mode::Idle,
            );
            execute(&a.common, plan.hold(Duration::ZERO, Duration::ZERO)).map(drop)
        }
        Scenario::Churn(a) => {
            let workers = a.common.workers.max(1) as f64;
            let mode = Mode::Churn {
                rate: a.rate / workers,
                seconds: a.duration.as_secs_f64(),
            };
            let plan = Plan::sessions("churn", &a.common, a.members, a.session_size, mode);
            execute(&a.common, plan.hold(Duration::ZERO, Duration::ZERO)).map(drop)
        }
        Scenario::ResumeStorm(a) => storm::run(a),
        Scenario::Handoff(a) => handoff::run(a),
        Scenario::Pairing(a) => pairing::run(a),
        Scenario::Media(a) => media::run(a),
        Scenario::Cluster(a) => cluster::run(a),
        Scenario::BigSession(a) => execute(
            &a.common,
            Plan::big_session(&a.common, a.members, a.duration),
        )
        .map(drop),
    }
}

fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) if n < 20_000 => eprintln!(
            "note: open-file limit is {n}; each worker process holds its members' sockets, use --workers to spread them"
        ),
        Ok(_) => {}
        Err(e) => eprintln!("note: cannot raise the open-file limit ({e}); use more --workers"),
    }
}

/// What one run does.
#[derive(Clone)]
struct Plan {
    scenario: &'static str,
    specs: Vec<WorkerSpec>,
    members: usize,
    settle: Duration,
    hold: Duration,
    /// Create these sessions over HTTP first (id, capacity).
    create: Vec<(String, usize)>,
    /// For big-session: how many `member_joined` must arrive in all.
    expect_member_joined: Option<u64>,
}

impl Plan {
    fn base(common: &Common, tag: &str) -> WorkerSpec {
        WorkerSpec {
            addr: "127.0.0.1:1".parse().expect("placeholder"),
            path: "/".into(),
            sessions: Vec::new(),
            sources: Vec::new(),
            interval_ms: common.interval.as_millis() as u64,
            concurrency: common.concurrency,
            tag: tag.to_string(),
            mode: Mode::Idle,
            dialect: common.dialect,
            resumable: false,
            host_addr: None,
        }
    }

    /// `members` in sessions of `size`, whole sessions per worker, each with a host.
    fn sessions(
        scenario: &'static str,
        common: &Common,
        members: usize,
        size: usize,
        mode: Mode,
    ) -> Plan {
        let size = size.max(1);
        let sessions = members.div_ceil(size);
        let tag = format!("b{:x}", fastrand::u32(..));
        let workers = common.workers.clamp(1, sessions.max(1));
        let mut specs: Vec<WorkerSpec> = (0..workers)
            .map(|w| WorkerSpec {
                mode: mode.clone(),
                ..Self::base(common, &format!("{tag}w{w}"))
            })
            .collect();
        let app = common.dialect == BenchDialect::App;
        let mut create = Vec::new();
        if let (true, Some(id)) = (app, &common.session) {
            // Everyone into the one existing session, spread over the workers.
            for (w, spec) in specs.iter_mut().enumerate() {
                let share = members / workers + usize::from(w < members % workers);
                spec.sessions.push(SessionPlan {
                    id: id.clone(),
                    members: share,
                    with_host: false,
                });
            }
        } else {
            let mut left = members;
            for k in 0..sessions {
                let n = left.min(size);
                left -= n;
                let id = format!("{tag}-{k}");
                if app {
                    // Nobody in the app's dialect can host: create the session first.
                    create.push((id.clone(), size));
                }
                specs[k % workers].sessions.push(SessionPlan {
                    id,
                    members: n,
                    with_host: !app,
                });
            }
        }
        Plan {
            scenario,
            specs,
            members,
            settle: Duration::ZERO,
            hold: Duration::ZERO,
            create,
            expect_member_joined: None,
        }
    }

    /// One session created over HTTP with capacity `members`, filled by every worker.
    fn big_session(common: &Common, members: usize, hold: Duration) -> Plan {
        let tag = format!("b{:x}", fastrand::u32(..));
        // `--session`: fill a session that exists (e.g. on the app's own host server).
        let (id, create) = match &common.session {
            Some(id) => (id.clone(), Vec::new()),
            None => (format!("{tag}-big"), vec![(format!("{tag}-big"), members)]),
        };
        let workers = common.workers.max(1);
        let specs = (0..workers)
            .map(|w| {
                let share = members / workers + usize::from(w < members % workers);
                WorkerSpec {
                    sessions: vec![SessionPlan {
                        id: id.clone(),
                        members: share,
                        with_host: false,
                    }],
                    ..Self::base(common, &format!("{tag}w{w}"))
                }
            })
            .collect();
        let n = members as u64;
        Plan {
            scenario: "big-session",
            specs,
            members,
            settle: Duration::ZERO,
            hold,
            create,
            expect_member_joined: Some(n * n.saturating_sub(1) / 2),
        }
    }

    fn hold(mut self, settle: Duration, hold: Duration) -> Plan {
        self.settle = settle;
        self.hold = hold;
        self
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

/// Starts the echo floor (`loudsync bench-floor`) on a random loopback port.
fn spawn_floor(worker_threads: usize) -> anyhow::Result<SpawnedServer> {
    let threads = worker_threads.to_string();
    spawn_child(
        &[
            "bench-floor",
            "--listen",
            "127.0.0.1:0",
            "--worker-threads",
            &threads,
        ],
        "loudsync floor listening on http://",
    )
}

/// The `--worker-threads` among the spawned server's arguments (0, its default, if none).
fn worker_threads_of(server_args: &[String]) -> usize {
    let mut args = server_args.iter();
    while let Some(arg) = args.next() {
        if let Some(n) = arg.strip_prefix("--worker-threads=") {
            return n.parse().unwrap_or(0);
        }
        if arg == "--worker-threads" {
            return args.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        }
    }
    0
}

/// Starts this binary with `args` and reads the address it prints after `prefix`.
fn spawn_child(args: &[&str], prefix: &str) -> anyhow::Result<SpawnedServer> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("spawn `loudsync {}`", args[0]))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix(prefix)
        .with_context(|| format!("`loudsync {}` said {line:?}", args[0]))?
        .parse()?;
    Ok(SpawnedServer { child, addr })
}

/// Prints (or adds to the JSON) the server's idle CPU as a multiple of the floor's.
fn compare_with_floor(common: &Common, floor: &Value, server: &Value) {
    let cpu = |r: &Value| r["server"]["cpu_percent_during_hold"].as_f64();
    let (Some(f), Some(s)) = (cpu(floor), cpu(server)) else {
        eprintln!("note: no CPU figure for the server (give --server-pid or --spawn-server)");
        return;
    };
    if f <= 0.0 {
        eprintln!("note: the floor used no measurable CPU (clock ticks are 10 ms); hold longer");
        return;
    }
    let ratio = s / f;
    if common.json {
        println!(
            "{}",
            json!({"floor_cpu_percent": f, "server_cpu_percent": s, "server_cpu_vs_floor": ratio})
        );
    } else {
        println!("server CPU vs echo floor        {s:.2} % vs {f:.2} % of a core: {ratio:.2}x");
    }
}

/// Prints (or adds to the JSON) the idle figures of plain and resumable members side by side.
fn compare_resumable(common: &Common, plain: &Value, resumable: &Value) {
    let keys = [
        ("rss_per_member_bytes", "server RSS per member, bytes"),
        ("cpu_ms_per_join", "server CPU per join, ms"),
        (
            "cpu_percent_during_hold",
            "server CPU during the hold, % of a core",
        ),
        (
            "cpu_us_per_delivered_frame",
            "server CPU per delivered frame, us",
        ),
    ];
    let mut out = serde_json::Map::new();
    if !common.json {
        println!(
            "{:<44} {:>12} {:>12} {:>8}",
            "", "plain", "resumable", "ratio"
        );
    }
    for (key, label) in keys {
        let (p, r) = (
            plain["server"][key].as_f64(),
            resumable["server"][key].as_f64(),
        );
        let ratio = match (p, r) {
            (Some(p), Some(r)) if p > 0.0 => Some(r / p),
            _ => None,
        };
        out.insert(
            key.into(),
            json!({"plain": p, "resumable": r, "ratio": ratio}),
        );
        if !common.json {
            let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
            println!("{label:<44} {:>12} {:>12} {:>8}", f(p), f(r), f(ratio));
        }
    }
    for key in ["p50_ms", "p99_ms"] {
        let (p, r) = (
            plain["ping_rtt"][key].as_f64(),
            resumable["ping_rtt"][key].as_f64(),
        );
        out.insert(
            format!("ping_rtt_{key}"),
            json!({"plain": p, "resumable": r}),
        );
        if !common.json {
            let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
            println!(
                "{:<44} {:>12} {:>12}",
                format!("ping RTT {key}"),
                f(p),
                f(r)
            );
        }
    }
    if common.json {
        println!("{}", json!({"plain_vs_resumable": out}));
    }
}

/// The per-address limits a spawned server is started without, unless `--server-arg` sets
/// them: the whole load comes from 127.0.0.1, which the server would otherwise (rightly) treat
/// as one flooding address. Loopback is made a trusted proxy, which exempts it from the
/// per-address connection cap; it sends no `X-Forwarded-For`, so it stays the client address.
const BENCH_SERVER_DEFAULTS: &[(&str, &str)] = &[
    ("--trusted-proxy", "127.0.0.1"),
    ("--join-rate-per-address", "0"),
    ("--max-connections-per-address", "1000000"),
    ("--max-unjoined-per-address", "1000000"),
];

fn spawn_server(extra: &[String]) -> anyhow::Result<SpawnedServer> {
    let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--log", "warn"];
    for (flag, value) in BENCH_SERVER_DEFAULTS {
        let given = extra
            .iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")));
        if !given {
            args.extend([*flag, *value]);
        }
    }
    args.extend(extra.iter().map(String::as_str));
    spawn_child(&args, "loudsync listening on http://")
}

type Target = (SocketAddr, String, Option<u32>, Option<SpawnedServer>);

/// Where to connect: address, path, the server's pid if known, and the server if spawned.
fn target(common: &Common) -> anyhow::Result<Target> {
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
        let any: IpAddr = if server.is_ipv4() {
            [0, 0, 0, 0].into()
        } else {
            "::".parse().expect("ip")
        };
        return vec![any];
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

fn spawn_workers(specs: &[WorkerSpec]) -> anyhow::Result<(Vec<Worker>, mpsc::Receiver<Line>)> {
    let (tx, rx) = mpsc::channel();
    let mut workers = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("bench-worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawn worker")?;
        let mut stdin = child.stdin.take().expect("piped");
        writeln!(stdin, "{}", serde_json::to_string(spec)?)?;
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

/// Waits until every worker has sent an event of `kind`, showing a progress line.
fn wait_for(
    rx: &mpsc::Receiver<Line>,
    n: usize,
    kind: &str,
    total: usize,
    quiet: bool,
) -> anyhow::Result<Vec<Value>> {
    let mut got: Vec<Option<Value>> = vec![None; n];
    let mut progress = vec![0u64; n];
    let started = Instant::now();
    while got.iter().any(Option::is_none) {
        match rx.recv_timeout(Duration::from_secs(300)) {
            Ok(Line::Event(i, v)) => {
                if v["event"] == kind {
                    got[i] = Some(v.clone());
                }
                if let Some(j) = v["joined"].as_u64() {
                    progress[i] = j;
                }
                if !quiet && kind == "ready" {
                    eprint!(
                        "\r  joined {}/{} ({:.1} s)   ",
                        progress.iter().sum::<u64>(),
                        total,
                        started.elapsed().as_secs_f64()
                    );
                }
            }
            Ok(Line::Exited(i)) if got[i].is_none() => bail!("worker {i} exited early"),
            Ok(Line::Exited(_)) => {}
            Err(_) => bail!("workers stopped reporting"),
        }
    }
    if !quiet && kind == "ready" {
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

/// The server counters the run reads from `/metrics`.
#[derive(Default, Clone, Copy)]
struct Counters {
    frames_sent: f64,
    slow_consumer_disconnects: f64,
}

fn counters(addr: SocketAddr) -> Option<Counters> {
    let (status, body) = http::request(addr, "GET", "/metrics", None, None).ok()?;
    if status != 200 {
        return None;
    }
    let get = |name: &str| {
        body.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Some(Counters {
        frames_sent: get("loudsync_frames_sent_total"),
        slow_consumer_disconnects: get("loudsync_slow_consumer_disconnects_total"),
    })
}

/// Runs `plan` against the server `common` names (or spawns), prints the result, returns it.
fn execute(common: &Common, plan: Plan) -> anyhow::Result<Value> {
    execute_on(common, plan, target(common)?)
}

fn execute_on(common: &Common, mut plan: Plan, target: Target) -> anyhow::Result<Value> {
    let (addr, path, pid, _server) = target;
    let quiet = common.json;
    let srcs = sources(common.sources, addr);
    for s in plan.specs.iter_mut() {
        s.addr = addr;
        s.path = path.clone();
        s.sources = srcs.clone();
    }
    for (id, capacity) in &plan.create {
        let body = json!({"name": "bench", "id": id, "maxMembers": capacity}).to_string();
        let (status, text) = http::request(
            addr,
            "POST",
            "/v1/sessions",
            Some(&body),
            common.admin_token.as_deref(),
        )
        .context("create the session over HTTP")?;
        if status != 201 {
            bail!("creating the session failed: {status} {text}");
        }
    }
    let workers_n = plan.specs.len();
    if !quiet {
        eprintln!(
            "{}: {} members over {} workers against {addr}{}",
            plan.scenario,
            plan.members,
            workers_n,
            pid.map(|p| format!(" (server pid {p})"))
                .unwrap_or_default()
        );
    }
    let baseline = pid.and_then(probe::sample);
    let started = Instant::now();
    let (mut workers, rx) = spawn_workers(&plan.specs)?;
    let ready = wait_for(&rx, workers_n, "ready", plan.members, quiet)?;
    let join_time = started.elapsed();
    let after_join = pid.and_then(probe::sample);
    let joined: u64 = ready.iter().filter_map(|v| v["joined"].as_u64()).sum();
    let failed: u64 = ready.iter().filter_map(|v| v["failed"].as_u64()).sum();

    // The measured phase.
    let before_hold = counters(addr);
    tell(&mut workers, "go");
    std::thread::sleep(plan.settle);
    let loaded = pid.and_then(probe::sample);
    let hold_start = Instant::now();
    if let Mode::Churn { .. } = plan.specs[0].mode {
        wait_for(&rx, workers_n, "churned", 0, true)?;
    } else {
        std::thread::sleep(plan.hold);
    }
    // Big session: wait (bounded) for every member_joined to be delivered.
    if let Some(expected) = plan.expect_member_joined {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            tell(&mut workers, "report");
            let seen: u64 = collect_reports(&rx, workers_n)?
                .iter()
                .map(|r| r.member_joined_seen)
                .sum();
            if seen >= expected || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let hold = hold_start.elapsed();
    let end = pid.and_then(probe::sample);
    let after_hold = counters(addr);
    tell(&mut workers, "report");
    let reports = collect_reports(&rx, workers_n)?;
    tell(&mut workers, "exit");
    for w in workers.iter_mut() {
        let _ = w.child.wait();
    }

    let mut rtt = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut join = rtt.clone();
    let mut churn_join = rtt.clone();
    for r in &reports {
        rtt.add(decode_hist(&r.rtt_hist)?)?;
        join.add(decode_hist(&r.join_hist)?)?;
        churn_join.add(decode_hist(&r.churn_join_hist)?)?;
    }
    let sum = |f: fn(&WorkerReport) -> u64| reports.iter().map(f).sum::<u64>();
    let frames_in_hold = match (before_hold, after_hold) {
        (Some(a), Some(b)) => Some(b.frames_sent - a.frames_sent),
        _ => None,
    };
    let slow_consumers = after_hold.map(|c| c.slow_consumer_disconnects);
    let server = match (baseline, after_join, loaded, end) {
        (Some(b), Some(j), Some(l), Some(e)) => {
            let join_cpu = j.cpu.saturating_sub(b.cpu).as_secs_f64();
            let hold_cpu = e.cpu.saturating_sub(l.cpu).as_secs_f64();
            json!({
                "rss_empty_bytes": b.rss_bytes,
                "rss_loaded_bytes": l.rss_bytes,
                "rss_end_bytes": e.rss_bytes,
                "rss_per_member_bytes": (l.rss_bytes.saturating_sub(b.rss_bytes)) as f64 / joined.max(1) as f64,
                "cpu_ms_per_join": 1000.0 * join_cpu / joined.max(1) as f64,
                "cpu_percent_during_hold": 100.0 * hold_cpu / hold.as_secs_f64().max(1e-9),
                "cpu_us_per_delivered_frame": frames_in_hold.filter(|f| *f > 0.0).map(|f| 1e6 * hold_cpu / f),
            })
        }
        _ => Value::Null,
    };
    let result = json!({
        "scenario": plan.scenario,
        "members": plan.members,
        "workers": workers_n,
        "joined": joined,
        "join_failed": failed,
        "join_time_s": join_time.as_secs_f64(),
        "joins_per_s": joined as f64 / join_time.as_secs_f64().max(1e-9),
        "hold_s": hold.as_secs_f64(),
        "join_latency": percentiles(&join),
        "ping_rtt": percentiles(&rtt),
        "churned": sum(|r| r.churned),
        "churn_join_latency": percentiles(&churn_join),
        "member_joined_seen": sum(|r| r.member_joined_seen),
        "member_joined_expected": plan.expect_member_joined,
        "frames_delivered_during_hold": frames_in_hold,
        "false_timeouts": sum(|r| r.timeouts_seen),
        "closed_by_server": sum(|r| r.closed_by_server),
        "dropped_1008": sum(|r| r.dropped_1008),
        "slow_consumer_disconnects_total": slow_consumers,
        "errors": sum(|r| r.errors),
        "server": server,
    });
    if let Some(path) = &common.plot {
        let mut series = vec![("join latency", &join)];
        if !rtt.is_empty() {
            series.push(("ping RTT", &rtt));
        }
        if !churn_join.is_empty() {
            series.push(("join latency under churn", &churn_join));
        }
        std::fs::write(
            path,
            plot::svg(&format!("loudsync bench {}", plan.scenario), &series),
        )
        .with_context(|| format!("write {}", path.display()))?;
    }
    if common.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print_table(&result);
    }
    let problems = [
        (failed, "joins failed"),
        (sum(|r| r.timeouts_seen), "false timeouts"),
        (sum(|r| r.closed_by_server), "members closed by the server"),
    ];
    let problems: Vec<String> = problems
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
    if let Some(expected) = plan.expect_member_joined {
        let seen = sum(|r| r.member_joined_seen);
        if seen != expected {
            bail!("{seen} of {expected} member_joined delivered");
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join(", "));
    }
    Ok(result)
}

fn collect_reports(rx: &mpsc::Receiver<Line>, n: usize) -> anyhow::Result<Vec<WorkerReport>> {
    wait_for(rx, n, "report", 0, true)?
        .into_iter()
        .map(|v| serde_json::from_value(v["report"].clone()).context("worker report"))
        .collect()
}

fn print_table(r: &Value) {
    let row = |k: &str, v: String| println!("  {k:<30} {v}");
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    println!("{} benchmark", r["scenario"].as_str().unwrap_or("?"));
    row(
        "members joined",
        format!(
            "{} ({} failed) in {:.2} s: {:.0} joins/s",
            r["joined"],
            r["join_failed"],
            f(&r["join_time_s"]),
            f(&r["joins_per_s"])
        ),
    );
    let hist = |name: &str, h: &Value| {
        if h["count"].as_u64().unwrap_or(0) > 0 {
            row(
                name,
                format!(
                    "p50 {} ms  p90 {} ms  p99 {} ms  p99.9 {} ms  max {} ms  (n={})",
                    h["p50_ms"], h["p90_ms"], h["p99_ms"], h["p999_ms"], h["max_ms"], h["count"]
                ),
            );
        }
    };
    hist("join latency", &r["join_latency"]);
    hist("join latency under churn", &r["churn_join_latency"]);
    hist("ping RTT", &r["ping_rtt"]);
    if r["churned"].as_u64().unwrap_or(0) > 0 {
        row(
            "replacements (leave + join)",
            format!("{} in {:.1} s", r["churned"], f(&r["hold_s"])),
        );
    }
    if !r["member_joined_expected"].is_null() {
        row(
            "member_joined delivered",
            format!(
                "{} of {}",
                r["member_joined_seen"], r["member_joined_expected"]
            ),
        );
    }
    if !r["frames_delivered_during_hold"].is_null() {
        row(
            "frames delivered (measured phase)",
            format!("{}", r["frames_delivered_during_hold"]),
        );
    }
    row("false timeouts", r["false_timeouts"].to_string());
    row(
        "closed by server",
        format!(
            "{} ({}: {}; server slow-consumer drops: {})",
            r["closed_by_server"],
            loudsync_protocol::close_code::POLICY_VIOLATION,
            r["dropped_1008"],
            r["slow_consumer_disconnects_total"]
        ),
    );
    // Server figures: (label, key, scale, unit), shown when measured.
    let server_rows: [(&str, &str, f64, &str); 7] = [
        (
            "server RSS empty",
            "rss_empty_bytes",
            1.0 / 1048576.0,
            "MiB",
        ),
        (
            "server RSS loaded",
            "rss_loaded_bytes",
            1.0 / 1048576.0,
            "MiB",
        ),
        ("server RSS at end", "rss_end_bytes", 1.0 / 1048576.0, "MiB"),
        (
            "server RSS per member",
            "rss_per_member_bytes",
            1.0,
            "bytes",
        ),
        ("server CPU per join", "cpu_ms_per_join", 1.0, "ms"),
        (
            "server CPU, measured phase",
            "cpu_percent_during_hold",
            1.0,
            "% of a core",
        ),
        (
            "server CPU per delivered frame",
            "cpu_us_per_delivered_frame",
            1.0,
            "us",
        ),
    ];
    for (label, key, scale, unit) in server_rows {
        let v = &r["server"][key];
        if !v.is_null() {
            row(label, format!("{:.2} {unit}", f(v) * scale));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_gets_the_servers_thread_count() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(worker_threads_of(&args(&[])), 0);
        assert_eq!(worker_threads_of(&args(&["--worker-threads=1"])), 1);
        assert_eq!(
            worker_threads_of(&args(&["--rate-limit=0", "--worker-threads", "3"])),
            3
        );
    }
}
