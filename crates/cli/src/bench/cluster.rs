//! `loudsync bench cluster`: cluster mode (issue 16) measured on this machine. The bench
//! starts its own `redis-server` (loopback, no persistence) and three `loudsync serve` nodes
//! A, B, C on it, with a short lease so a takeover is quick to measure, then runs phases:
//!
//! - **latency** ([`latency`]): the same message traffic three times, side by side in one
//!   run: on one plain server without Redis, on one cluster node (host, sender and receivers
//!   all on A, the owner), and across nodes (the host and owner on A, the sender on B, the
//!   others on B and C). Latency by where the receiver sits, CPU per delivered message of the
//!   nodes and of Redis, Redis commands per message.
//! - **takeover**: `--kills` times, a fresh node X creates a session over HTTP (so X owns it),
//!   a member joins on A and one on B; X is killed with `SIGKILL`, the member on A sends at
//!   once, and the takeover time is from the kill to that message's arrival on B (it is
//!   delivered by the new owner: frames sent during a takeover are held, not refused).
//! - **storm**: `--storm-members` resumable members join through a node X (their sessions'
//!   hosts join on A, so A owns them); every socket is cut, X is killed with `SIGKILL`, and
//!   all resume at once on A and B (round robin): their tokens are found in Redis and their
//!   replays read from the outbound streams. The resume storm's worker side is
//!   [`super::resume`]'s, with its checks of lost, doubled and reordered messages.
//!
//! `--url`, `--spawn-server` and `--server-pid` do not apply: the bench always starts its own
//! processes; `--server-arg` goes to every node.

mod latency;
mod procs;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use clap::{Args, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use loudsync_protocol::{encode_client, ClientMessage, DeviceType, RawJson};
use serde_json::{json, Value};
use tokio_websockets::Message;

use super::resume::{CutKind, StormPlan};
use super::storm::{merge_round, round_line, sum_objects};
use super::worker::{decode_hist, histogram, message_type, BenchDialect, Mode};
use super::{http, percentiles, spawn_workers, tell, wait_for, Common, Plan};
use latency::{connect_and_join, Layout};
use procs::{Node, Redis};

/// Options of `bench cluster`.
#[derive(Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    common: Common,
    /// The `redis-server` binary to start (Debian's package `redis-server`).
    #[arg(long, default_value = "redis-server")]
    redis_server: String,
    /// Every node's `--lease` (short, so that a takeover is quick to measure).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    lease: Duration,
    /// Every node's `--cluster-poll`.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    cluster_poll: Duration,
    /// The phases to run, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "latency,takeover,storm"
    )]
    phases: Vec<Phase>,
    /// Latency: sessions per layout.
    #[arg(long, default_value_t = 10)]
    sessions: usize,
    /// Latency: members per session, host included (at least 3).
    #[arg(long, default_value_t = 10)]
    session_size: usize,
    /// Latency: messages per second each session's sender writes (under the server's
    /// per-connection rate limit, 100 frames/s by default).
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Latency: how long the senders write (and, before, how long idle is measured).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Takeover: owners killed, one after the other.
    #[arg(long, default_value_t = 20)]
    kills: u32,
    /// Storm: resumable members on the node that dies (their hosts are on another node).
    #[arg(long, default_value_t = 1000)]
    storm_members: usize,
    /// Storm: members per session, host included (at least 2).
    #[arg(long, default_value_t = 10)]
    storm_session_size: usize,
    /// Storm: messages each member writes right before the cut, and again while away.
    #[arg(long, default_value_t = 3)]
    storm_messages: u32,
}

/// A phase of `bench cluster`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Phase {
    /// Message latency and cost: single node, same node, across nodes.
    Latency,
    /// Owner killed to first message delivered by the new owner.
    Takeover,
    /// Members of a dead node resume on the others at once.
    Storm,
}

/// Runs the phases, prints the result; fails if a message was missing, a takeover did not
/// complete, or the storm lost, doubled or reordered anything.
pub(super) fn run(a: ClusterArgs) -> anyhow::Result<()> {
    ensure!(a.session_size >= 3, "--session-size must be at least 3");
    ensure!(
        a.storm_session_size >= 2,
        "--storm-session-size must be at least 2"
    );
    ensure!(
        a.common.dialect == BenchDialect::Loudsync,
        "bench cluster speaks LoudSync's dialect only"
    );
    let quiet = a.common.json;
    let redis = Redis::start(&a.redis_server)?;
    let start = |id: &str| {
        Node::start(
            id,
            &redis.url(),
            a.lease,
            a.cluster_poll,
            &a.common.server_args,
        )
    };
    let nodes = [start("a")?, start("b")?, start("c")?];
    if !quiet {
        eprintln!(
            "cluster: redis {} and nodes {} (lease {:?}, poll {:?})",
            redis.url(),
            nodes
                .iter()
                .map(|n| format!("{}={}", n.id, n.addr()))
                .collect::<Vec<_>>()
                .join(" "),
            a.lease,
            a.cluster_poll
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut report = json!({
        "scenario": "cluster",
        "lease_ms": a.lease.as_secs_f64() * 1e3,
        "cluster_poll_ms": a.cluster_poll.as_secs_f64() * 1e3,
    });
    let mut problems = Vec::new();
    for phase in &a.phases {
        match phase {
            Phase::Latency => {
                let r = runtime.block_on(latency_phase(&a, &redis, &nodes))?;
                for l in r.as_array().into_iter().flatten() {
                    let (want, got) = (&l["deliveries_expected"], &l["delivered"]);
                    if want != got {
                        problems.push(format!("{}: {got} of {want} delivered", l["layout"]));
                    }
                }
                report["latency"] = r;
            }
            Phase::Takeover => {
                let r = runtime.block_on(takeover_phase(&a, &redis, &nodes))?;
                if let Some(n) = r["failed"].as_u64().filter(|n| *n > 0) {
                    problems.push(format!("{n} takeovers not completed"));
                }
                report["takeover"] = r;
            }
            Phase::Storm => {
                let r = storm_phase(&a, &redis, &nodes)?;
                problems.extend(storm_problems(&r));
                report["storm"] = r;
            }
        }
    }
    if quiet {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    if let Some(path) = &a.common.plot {
        let mut hists = Vec::new();
        for l in report["latency"].as_array().into_iter().flatten() {
            if let Some(h) = l["hist"].as_str().and_then(|h| decode_hist(h).ok()) {
                hists.push((l["layout"].as_str().unwrap_or("?").to_string(), h));
            }
        }
        if let Some(h) = report["takeover"]["hist"]
            .as_str()
            .and_then(|h| decode_hist(h).ok())
        {
            hists.push(("takeover".to_string(), h));
        }
        let series: Vec<(&str, &Histogram<u64>)> =
            hists.iter().map(|(l, h)| (l.as_str(), h)).collect();
        std::fs::write(path, super::plot::svg("loudsync bench cluster", &series))
            .with_context(|| format!("write {}", path.display()))?;
    }
    ensure!(problems.is_empty(), "{}", problems.join(", "));
    Ok(())
}

/// The three layouts, one after the other: a plain server, one node, three nodes.
async fn latency_phase(a: &ClusterArgs, redis: &Redis, nodes: &[Node; 3]) -> anyhow::Result<Value> {
    let tag = format!("b{:x}", fastrand::u32(..));
    let mut spec = Plan::base(&a.common, &tag);
    spec.sources = vec![[127, 0, 0, 1].into()];
    let single = Node::single(&a.common.server_args)?;
    let [na, nb, nc] = nodes;
    let layouts = [
        (
            Layout {
                name: "single node, no Redis",
                owner: single.addr(),
                sender: single.addr(),
                members: vec![single.addr()],
            },
            vec![&single],
            None,
        ),
        (
            Layout {
                name: "cluster, one node",
                owner: na.addr(),
                sender: na.addr(),
                members: vec![na.addr()],
            },
            vec![na, nb, nc],
            Some(redis),
        ),
        (
            Layout {
                name: "cluster, three nodes",
                owner: na.addr(),
                sender: nb.addr(),
                members: vec![nb.addr(), nc.addr()],
            },
            vec![na, nb, nc],
            Some(redis),
        ),
    ];
    let mut out = Vec::new();
    for (layout, procs, redis) in &layouts {
        if !a.common.json {
            eprintln!("  latency: {} ...", layout.name);
        }
        let r = latency::run(
            layout,
            &spec,
            a.sessions,
            a.session_size,
            a.rate,
            a.duration,
            procs,
            *redis,
        )
        .await?;
        out.push(r);
    }
    Ok(Value::Array(out))
}

/// `--kills` times: a fresh owner, killed; the time until the new owner delivers.
async fn takeover_phase(
    a: &ClusterArgs,
    redis: &Redis,
    nodes: &[Node; 3],
) -> anyhow::Result<Value> {
    let tag = format!("b{:x}", fastrand::u32(..));
    let mut spec = Plan::base(&a.common, &tag);
    spec.sources = vec![[127, 0, 0, 1].into()];
    let mut hist = histogram();
    let (mut failed, mut new_owners) = (0u64, Vec::new());
    let bound = a.lease + Duration::from_secs(1);
    let mut over_bound = 0u64;
    for k in 0..a.kills {
        let x = Node::start(
            &format!("x{k}"),
            &redis.url(),
            a.lease,
            a.cluster_poll,
            &a.common.server_args,
        )?;
        let session = format!("{tag}-takeover-{k}");
        let body = json!({"id": session, "name": "takeover"}).to_string();
        let (status, text) = http::request(
            x.addr(),
            "POST",
            "/v1/sessions",
            Some(&body),
            a.common.admin_token.as_deref(),
        )?;
        ensure!(status == 201, "create on x{k}: {status} {text}");
        let (mut sender, _) = connect_and_join(
            &spec,
            nodes[0].addr(),
            2 * k as u64,
            &session,
            DeviceType::Client,
        )
        .await?;
        let (mut receiver, _) = connect_and_join(
            &spec,
            nodes[1].addr(),
            2 * k as u64 + 1,
            &session,
            DeviceType::Client,
        )
        .await?;
        // Kill at a random point of the lease's renewal period.
        let third = a.lease.as_millis() as u64 / 3;
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..third.max(1)))).await;
        let killed = Instant::now();
        x.kill9();
        let data = RawJson::from_text(r#"{"takeover":true}"#).expect("valid JSON");
        sender
            .send(Message::text(encode_client(
                &ClientMessage::message(data, None),
                0,
            )?))
            .await?;
        let limit = 3 * a.lease + Duration::from_secs(5);
        let arrived = tokio::time::timeout(limit, async {
            while let Some(Ok(msg)) = receiver.next().await {
                if msg
                    .as_text()
                    .is_some_and(|t| message_type(t) == Some("message"))
                {
                    return Some(Instant::now());
                }
            }
            None
        })
        .await;
        match arrived {
            Ok(Some(at)) => {
                let took = at - killed;
                if took > bound {
                    over_bound += 1;
                }
                let _ = hist.record((took.as_micros() as u64).max(1));
                let (_, view) = http::request(
                    nodes[2].addr(),
                    "GET",
                    &format!("/v1/sessions/{session}"),
                    None,
                    a.common.admin_token.as_deref(),
                )?;
                let owner = serde_json::from_str::<Value>(&view).unwrap_or_default()["owner"]
                    .as_str()
                    .unwrap_or("?")
                    .to_string();
                new_owners.push(owner);
                if !a.common.json {
                    eprint!(
                        "\r  takeover {}/{}: {:.0} ms   ",
                        k + 1,
                        a.kills,
                        took.as_secs_f64() * 1e3
                    );
                }
            }
            _ => failed += 1,
        }
        let _ = sender.close().await;
        let _ = receiver.close().await;
    }
    if !a.common.json {
        eprintln!();
    }
    Ok(json!({
        "kills": a.kills,
        "failed": failed,
        "takeover": percentiles(&hist),
        "bound_ms": bound.as_secs_f64() * 1e3,
        "over_bound": over_bound,
        "new_owners": new_owners,
        "hist": super::worker::encode_hist(&hist),
    }))
}

/// The storm: members join through a node X, are cut, X dies, all resume on A and B.
fn storm_phase(a: &ClusterArgs, redis: &Redis, nodes: &[Node; 3]) -> anyhow::Result<Value> {
    let size = a.storm_session_size;
    let sessions = a.storm_members.div_ceil(size - 1);
    let total = a.storm_members + sessions;
    let storm = StormPlan {
        messages: a.storm_messages,
        cut: CutKind::Rst,
        resume_concurrency: 0,
        resume_timeout_ms: 30_000,
        ack_every: 100,
        resume_addrs: vec![nodes[0].addr(), nodes[1].addr()],
    };
    let mut plan = Plan::sessions(
        "cluster-storm",
        &a.common,
        total,
        size,
        Mode::ResumeStorm(storm),
    );
    let x = Node::start(
        "storm",
        &redis.url(),
        a.lease,
        a.cluster_poll,
        &a.common.server_args,
    )?;
    for s in plan.specs.iter_mut() {
        s.addr = x.addr();
        s.host_addr = Some(nodes[0].addr());
        s.sources = vec![[127, 0, 0, 1].into()];
        s.resumable = true;
    }
    let quiet = a.common.json;
    let n = plan.specs.len();
    if !quiet {
        eprintln!(
            "  storm: {} members on node storm={} (hosts on a), {sessions} sessions, {n} workers",
            a.storm_members,
            x.addr()
        );
    }
    let (mut workers, rx) = spawn_workers(&plan.specs)?;
    let ready = wait_for(&rx, n, "ready", total, quiet)?;
    let join_failed: u64 = ready.iter().filter_map(|v| v["failed"].as_u64()).sum();
    std::thread::sleep(Duration::from_secs(1));
    tell(&mut workers, "cut-hold");
    wait_for(&rx, n, "held", 0, true)?;
    x.kill9();
    let cpu = || -> (Duration, Duration) { (nodes.iter().map(Node::cpu).sum(), redis.cpu()) };
    let (cpu0, cmd0) = (cpu(), redis.commands().unwrap_or(0));
    let t0 = Instant::now();
    tell(&mut workers, "resume");
    let got = wait_for(&rx, n, "round", 0, true)?;
    let wall = t0.elapsed();
    let (cpu1, cmd1) = (cpu(), redis.commands().unwrap_or(0));
    let mut round = merge_round(
        "cut, node killed, all resume on a and b",
        &got,
        wall,
        None,
        None,
    )?;
    let resumed = round["resumed"].as_u64().unwrap_or(0).max(1) as f64;
    round["nodes_cpu_ms"] = json!(1e3 * (cpu1.0 - cpu0.0).as_secs_f64());
    round["redis_cpu_ms"] = json!(1e3 * (cpu1.1 - cpu0.1).as_secs_f64());
    round["redis_commands_per_resume"] = json!((cmd1 - cmd0) as f64 / resumed);
    if !quiet {
        eprintln!("  {}", round_line(&round));
    }
    tell(&mut workers, "drain");
    wait_for(&rx, n, "drained", 0, true)?;
    tell(&mut workers, "report");
    let reports: Vec<Value> = wait_for(&rx, n, "report", 0, true)?
        .into_iter()
        .map(|v| v["report"].clone())
        .collect();
    tell(&mut workers, "exit");
    for w in workers.iter_mut() {
        let _ = w.child.wait();
    }
    Ok(json!({
        "members_on_the_dead_node": a.storm_members,
        "hosts_on_a": sessions,
        "session_size": size,
        "join_failed": join_failed,
        "round": round,
        "delivery": sum_objects(reports.iter().map(|r| &r["delivery"])),
        "counters": sum_objects(reports.iter().map(|r| &r["counters"])),
        "resume_failures": sum_objects(reports.iter().map(|r| &r["resume_failures"])),
    }))
}

/// What went wrong in the storm, if anything.
fn storm_problems(r: &Value) -> Vec<String> {
    let get = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    let failures: u64 = r["resume_failures"]
        .as_object()
        .map_or(0, |o| o.values().filter_map(Value::as_u64).sum());
    [
        (get(r, "join_failed"), "storm joins failed"),
        (failures, "storm resumes failed"),
        (get(&r["delivery"], "lost"), "storm messages lost"),
        (get(&r["delivery"], "doubled"), "storm messages doubled"),
        (get(&r["delivery"], "reordered"), "storm messages reordered"),
        (
            get(&r["counters"], "server_seq_gaps"),
            "storm server seq gaps",
        ),
        (
            get(&r["counters"], "server_seq_duplicates"),
            "storm server seq duplicates",
        ),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect()
}

fn print_table(r: &Value) {
    let hist = |h: &Value| {
        format!(
            "p50 {} ms  p99 {} ms  max {} ms  (n={})",
            h["p50_ms"], h["p99_ms"], h["max_ms"], h["count"]
        )
    };
    let num = |v: &Value, digits: usize| {
        v.as_f64()
            .map_or("-".to_string(), |x| format!("{x:.digits$}"))
    };
    println!(
        "bench cluster (lease {} ms, poll {} ms)",
        r["lease_ms"], r["cluster_poll_ms"]
    );
    for l in r["latency"].as_array().into_iter().flatten() {
        println!("  {}:", l["layout"].as_str().unwrap_or("?"));
        println!(
            "    delivered {} of {}; latency {}",
            l["delivered"],
            l["deliveries_expected"],
            hist(&l["latency"])
        );
        for (place, h) in l["latency_by_receiver"].as_object().into_iter().flatten() {
            println!("      receiver on the {place:<26} {}", hist(h));
        }
        println!(
            "    CPU per delivery: nodes {} µs, redis {} µs; redis commands per message {} (idle {} /s)",
            num(&l["nodes_cpu_us_per_delivery"], 1),
            num(&l["redis_cpu_us_per_delivery"], 1),
            num(&l["redis_commands_per_message"], 2),
            num(&l["redis_commands_idle_per_s"], 0),
        );
        if let Some(by) = l["redis_calls_per_message_by_command"].as_object() {
            let list: Vec<String> = by.iter().map(|(k, v)| format!("{k} {v}")).collect();
            println!(
                "      by command (scripts' own calls included): {}",
                list.join(", ")
            );
        }
        if let Some(by) = l["redis_idle_calls_per_s_by_command"].as_object() {
            let list: Vec<String> = by.iter().map(|(k, v)| format!("{k} {v}")).collect();
            println!(
                "      idle, {} sessions in the cluster, calls/s: {}",
                l["redis_sessions_while_idle"],
                list.join(", ")
            );
        }
    }
    let t = &r["takeover"];
    if t.is_object() {
        println!(
            "  takeover over {} kills ({} failed, {} over the {} ms bound): {}",
            t["kills"],
            t["failed"],
            t["over_bound"],
            t["bound_ms"],
            hist(&t["takeover"])
        );
    }
    let s = &r["storm"];
    if s.is_object() {
        println!("  storm: {}", round_line(&s["round"]));
        println!(
            "    nodes CPU {} ms, redis CPU {} ms, redis commands per resume {}; delivery {}",
            num(&s["round"]["nodes_cpu_ms"], 0),
            num(&s["round"]["redis_cpu_ms"], 0),
            num(&s["round"]["redis_commands_per_resume"], 1),
            s["delivery"]
        );
    }
}
