//! `loudsync bench resume-storm`, the coordinator: resumable members join, then every worker
//! cuts all its sockets at once and resumes each on a new socket ([`super::resume`] is the
//! worker side). It reports the time until all are resumed, resume latency, the messages
//! lost, doubled and reordered across the cuts, and the server's memory while the places are
//! held.

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use super::resume::{CutKind, RoundReport, StormPlan};
use super::worker::{decode_hist, BenchDialect, Mode};
use super::{percentiles, probe, sources, spawn_workers, target, tell, wait_for, Common, Plan};

/// Options of `bench resume-storm`.
#[derive(Args)]
pub struct ResumeStormArgs {
    #[command(flatten)]
    common: Common,
    /// Members in all (the first of every session hosts it).
    #[arg(long, default_value_t = 1000)]
    members: usize,
    /// Members per session, host included (at least 2).
    #[arg(long, default_value_t = 10)]
    session_size: usize,
    /// Application messages each member writes right before each cut, and as many again while
    /// it is away (members to their host, the host to everyone in its session).
    #[arg(long, default_value_t = 5)]
    messages: u32,
    /// Cuts followed at once by the resumes.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Then one more cut whose places stay held this long before everyone resumes (the
    /// server's memory is read meanwhile); 0 skips it. Keep it under the resume window.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    hold: Duration,
    /// How a socket is cut: `rst` (SO_LINGER 0: reset, unsent bytes dropped) or `fin` (plain
    /// close); never a close frame.
    #[arg(long, value_enum, default_value = "rst")]
    cut: CutKind,
    /// Resumes in flight at once per worker (0: every member at once).
    #[arg(long, default_value_t = 0)]
    resume_concurrency: usize,
    /// A member not resumed this long after its cut gives up (counted as failed).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    resume_timeout: Duration,
    /// Pause after the joins and after each round.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// The target: every member resumed within this time of the cut.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    target: Duration,
    /// The members ack after this many numbered frames (and with every heartbeat).
    #[arg(long, default_value_t = 100)]
    ack_every: u64,
}

/// Runs the storm, prints the result; fails if anything was lost, doubled, reordered, or a
/// member did not come back.
pub(super) fn run(a: ResumeStormArgs) -> anyhow::Result<()> {
    let common = &a.common;
    if common.dialect == BenchDialect::App {
        bail!("the app's dialect has no handshake: its members are never resumable");
    }
    if a.session_size < 2 {
        bail!("--session-size must be at least 2 (a host and a member)");
    }
    let storm = StormPlan {
        messages: a.messages,
        cut: a.cut,
        resume_concurrency: a.resume_concurrency,
        resume_timeout_ms: a.resume_timeout.as_millis() as u64,
        ack_every: a.ack_every.max(1),
        resume_addrs: Vec::new(),
    };
    let mut plan = Plan::sessions(
        "resume-storm",
        common,
        a.members,
        a.session_size,
        Mode::ResumeStorm(storm),
    );
    let (addr, path, pid, _server) = target(common)?;
    let srcs = sources(common.sources, addr);
    for s in plan.specs.iter_mut() {
        s.addr = addr;
        s.path = path.clone();
        s.sources = srcs.clone();
        s.resumable = true;
    }
    let quiet = common.json;
    let n = plan.specs.len();
    if !quiet {
        eprintln!(
            "resume-storm: {} members in sessions of {} over {n} workers against {addr}{}",
            plan.members,
            a.session_size,
            pid.map(|p| format!(" (server pid {p})"))
                .unwrap_or_default()
        );
    }
    let sample = || pid.and_then(probe::sample);
    let empty = sample();
    let started = Instant::now();
    let (mut workers, rx) = spawn_workers(&plan.specs)?;
    let ready = wait_for(&rx, n, "ready", plan.members, quiet)?;
    let join_time = started.elapsed();
    let after_join = sample();
    let joined: u64 = ready.iter().filter_map(|v| v["joined"].as_u64()).sum();
    let join_failed: u64 = ready.iter().filter_map(|v| v["failed"].as_u64()).sum();
    std::thread::sleep(a.settle);
    let connected = sample();

    let mut rounds = Vec::new();
    for _ in 0..a.rounds {
        let before = sample();
        let tcp = tcp_counters();
        let gen = generator_cpu(&workers);
        let t0 = Instant::now();
        tell(&mut workers, "cut");
        let got = wait_for(&rx, n, "round", 0, true)?;
        let wall = t0.elapsed();
        let mut r = merge_round("cut, resume at once", &got, wall, before, sample())?;
        add_tcp(&mut r, tcp);
        r["generator_cpu_ms"] = json!(1e3 * (generator_cpu(&workers) - gen));
        rounds.push(r);
        if !quiet {
            eprintln!("  {}", round_line(rounds.last().expect("pushed")));
        }
        std::thread::sleep(a.settle);
    }
    let (mut held, mut after_held) = (None, None);
    if !a.hold.is_zero() {
        tell(&mut workers, "cut-hold");
        let cuts = wait_for(&rx, n, "held", 0, true)?;
        std::thread::sleep(a.hold);
        held = sample();
        let tcp = tcp_counters();
        let gen = generator_cpu(&workers);
        let t0 = Instant::now();
        tell(&mut workers, "resume");
        let got = wait_for(&rx, n, "round", 0, true)?;
        let wall = t0.elapsed();
        let mut r = merge_round(
            "held, then all resume (from the resume)",
            &got,
            wall,
            held,
            sample(),
        )?;
        r["held_s"] = json!(a.hold.as_secs_f64());
        add_tcp(&mut r, tcp);
        r["generator_cpu_ms"] = json!(1e3 * (generator_cpu(&workers) - gen));
        let pass = |v: &Value, k: &str| v["round"]["cut"][k].as_f64().unwrap_or(0.0);
        r["cut"] = json!(cuts.iter().map(|v| pass(v, "sockets")).sum::<f64>() as u64);
        r["cut_loop_ms"] = json!(cuts.iter().map(|v| pass(v, "ms")).fold(0.0, f64::max));
        if !quiet {
            eprintln!("  {}", round_line(&r));
        }
        rounds.push(r);
        std::thread::sleep(a.settle);
        after_held = sample();
    }
    tell(&mut workers, "drain");
    let drained = wait_for(&rx, n, "drained", 0, true)?;
    let drain_ms = drained
        .iter()
        .filter_map(|v| v["ms"].as_f64())
        .fold(0.0, f64::max);
    tell(&mut workers, "report");
    let reports: Vec<Value> = wait_for(&rx, n, "report", 0, true)?
        .into_iter()
        .map(|v| v["report"].clone())
        .collect();
    let end = sample();
    tell(&mut workers, "exit");
    for w in workers.iter_mut() {
        let _ = w.child.wait();
    }

    let mut join_hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for r in &reports {
        join_hist.add(decode_hist(r["join_hist"].as_str().unwrap_or_default())?)?;
    }
    let delivery = sum_objects(reports.iter().map(|r| &r["delivery"]));
    let counters = sum_objects(reports.iter().map(|r| &r["counters"]));
    let failures = sum_objects(reports.iter().map(|r| &r["resume_failures"]));
    let rss = |s: Option<probe::Sample>| s.map(|s| s.rss_bytes);
    let per = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => Some((a as f64 - b as f64) / joined.max(1) as f64),
        _ => None,
    };
    let worst_ms = rounds
        .iter()
        .filter_map(|r| r["all_resumed_ms"].as_f64())
        .fold(0.0, f64::max);
    let result = json!({
        "scenario": "resume-storm",
        "members": plan.members,
        "session_size": a.session_size,
        "workers": n,
        "cut": format!("{:?}", a.cut).to_lowercase(),
        "messages_per_phase": a.messages,
        "joined": joined,
        "join_failed": join_failed,
        "join_time_s": join_time.as_secs_f64(),
        "join_latency": percentiles(&join_hist),
        "server_cpu_ms_per_join": match (empty, after_join) {
            (Some(e), Some(j)) => Some(1e3 * j.cpu.saturating_sub(e.cpu).as_secs_f64() / joined.max(1) as f64),
            _ => None,
        },
        "rounds": rounds,
        "delivery": delivery,
        "drain_ms": drain_ms,
        "resume_failures": failures,
        "counters": counters,
        "server": {
            "rss_empty_bytes": rss(empty),
            "rss_connected_bytes": rss(connected),
            "rss_held_bytes": rss(held),
            "rss_after_resume_bytes": rss(after_held),
            "rss_end_bytes": rss(end),
            "rss_per_connected_member_bytes": per(rss(connected), rss(empty)),
            "rss_per_held_place_bytes": per(rss(held), rss(empty)),
            "rss_held_minus_connected_per_member_bytes": per(rss(held), rss(connected)),
        },
        "target": {
            "all_resumed_within_ms": a.target.as_secs_f64() * 1e3,
            "worst_all_resumed_ms": worst_ms,
            "met": worst_ms <= a.target.as_secs_f64() * 1e3,
        },
    });
    if common.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print_table(&result);
    }
    let get = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    let mut problems = Vec::new();
    for (n, what) in [
        (join_failed, "joins failed"),
        (
            failures
                .as_object()
                .map_or(0, |o| o.values().filter_map(Value::as_u64).sum()),
            "resumes failed",
        ),
        (get(&delivery, "lost"), "messages lost"),
        (get(&delivery, "doubled"), "messages doubled"),
        (get(&delivery, "reordered"), "messages reordered"),
        (
            get(&counters, "closed_by_server"),
            "members closed by the server",
        ),
        (
            get(&counters, "server_seq_duplicates"),
            "server frames with a seq already received",
        ),
        (get(&counters, "server_seq_gaps"), "server seq gaps"),
        (get(&counters, "false_timeouts"), "member_left timeouts"),
        (get(&counters, "errors"), "error frames"),
        (
            get(&counters, "token_mismatches"),
            "resume token echoes that differ",
        ),
    ] {
        if n > 0 {
            problems.push(format!("{n} {what}"));
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join(", "));
    }
    Ok(())
}

/// Adds up the workers' round reports.
pub(super) fn merge_round(
    kind: &str,
    got: &[Value],
    wall: Duration,
    before: Option<probe::Sample>,
    after: Option<probe::Sample>,
) -> anyhow::Result<Value> {
    let mut resume = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut replay = resume.clone();
    let mut upgrade = resume.clone();
    let (mut members, mut cut, mut resumed, mut failed, mut dead, mut replayed) =
        (0, 0, 0, 0, 0, 0);
    let (mut last_cut, mut all_resumed) = (0.0f64, 0.0f64);
    for v in got {
        let r: RoundReport = serde_json::from_value(v["round"].clone())?;
        resume.add(decode_hist(&r.resume_hist)?)?;
        replay.add(decode_hist(&r.replay_hist)?)?;
        upgrade.add(decode_hist(&r.upgrade_hist)?)?;
        members += r.members;
        cut += r.cut.sockets;
        resumed += r.resumed;
        failed += r.failed;
        dead += r.dead;
        replayed += r.replayed;
        last_cut = last_cut.max(r.cut.ms);
        all_resumed = all_resumed.max(r.all_resumed_ms);
    }
    let cpu_ms = match (before, after) {
        (Some(b), Some(a)) => Some(1e3 * a.cpu.saturating_sub(b.cpu).as_secs_f64()),
        _ => None,
    };
    Ok(json!({
        "kind": kind,
        "members": members,
        "cut": cut,
        "resumed": resumed,
        "failed": failed,
        "closed_by_server": dead,
        "replay_complete": replayed,
        "cut_loop_ms": last_cut,
        "all_resumed_ms": all_resumed,
        "wall_ms": wall.as_secs_f64() * 1e3,
        "resume_latency": percentiles(&resume),
        "replay_complete_latency": percentiles(&replay),
        "socket_open_latency": percentiles(&upgrade),
        "server_cpu_ms": cpu_ms,
        "server_cpu_ms_per_resume": cpu_ms.map(|c| c / resumed.max(1) as f64),
    }))
}

/// The kernel's TCP counters that explain a slow reconnect (system-wide, from
/// `/proc/net/netstat`): accept-queue overflows and SYN retransmissions (a dropped SYN is
/// retried after 1 s).
pub(super) fn tcp_counters() -> Option<[u64; 2]> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let get = |name: &str| {
        let i = names.split_whitespace().position(|n| n == name)?;
        values.split_whitespace().nth(i)?.parse().ok()
    };
    Some([get("ListenOverflows")?, get("TCPSynRetrans")?])
}

/// CPU seconds the worker processes have used so far.
pub(super) fn generator_cpu(workers: &[super::Worker]) -> f64 {
    workers
        .iter()
        .filter_map(|w| probe::sample(w.child.id()))
        .map(|s| s.cpu.as_secs_f64())
        .sum()
}

pub(super) fn add_tcp(round: &mut Value, before: Option<[u64; 2]>) {
    if let (Some(b), Some(a)) = (before, tcp_counters()) {
        round["kernel_listen_overflows"] = json!(a[0].saturating_sub(b[0]));
        round["kernel_syn_retransmits"] = json!(a[1].saturating_sub(b[1]));
    }
}

/// Sums the numbers of JSON objects key by key.
pub(super) fn sum_objects<'a>(values: impl Iterator<Item = &'a Value>) -> Value {
    let mut out = Map::new();
    for v in values {
        for (k, x) in v.as_object().into_iter().flatten() {
            let add = x.as_u64().unwrap_or(0);
            let e = out.entry(k.clone()).or_insert(json!(0));
            *e = json!(e.as_u64().unwrap_or(0) + add);
        }
    }
    Value::Object(out)
}

pub(super) fn round_line(r: &Value) -> String {
    format!(
        "{}: {} of {} resumed ({} failed), all within {:.0} ms; resume p50 {} ms p99 {} ms max {} ms",
        r["kind"].as_str().unwrap_or("?"),
        r["resumed"],
        r["members"],
        r["failed"],
        r["all_resumed_ms"].as_f64().unwrap_or(0.0),
        r["resume_latency"]["p50_ms"],
        r["resume_latency"]["p99_ms"],
        r["resume_latency"]["max_ms"],
    )
}

fn print_table(r: &Value) {
    let row = |k: &str, v: String| println!("  {k:<34} {v}");
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let mib = |v: &Value| {
        v.as_f64()
            .map_or("-".to_string(), |b| format!("{:.1} MiB", b / 1048576.0))
    };
    let bytes = |v: &Value| v.as_f64().map_or("-".to_string(), |b| format!("{b:.0} B"));
    let hist = |h: &Value| {
        format!(
            "p50 {} ms  p90 {} ms  p99 {} ms  p99.9 {} ms  max {} ms  (n={})",
            h["p50_ms"], h["p90_ms"], h["p99_ms"], h["p999_ms"], h["max_ms"], h["count"]
        )
    };
    println!("resume-storm benchmark");
    row(
        "members joined (resumable)",
        format!(
            "{} ({} failed) in {:.2} s, sessions of {}",
            r["joined"],
            r["join_failed"],
            f(&r["join_time_s"]),
            r["session_size"]
        ),
    );
    row("join latency (handshake + join)", hist(&r["join_latency"]));
    if let Some(ms) = r["server_cpu_ms_per_join"].as_f64() {
        row("server CPU per join", format!("{ms:.3} ms"));
    }
    for (i, round) in r["rounds"].as_array().into_iter().flatten().enumerate() {
        println!(
            "  round {}: {} (cut: {})",
            i + 1,
            round["kind"].as_str().unwrap_or("?"),
            r["cut"].as_str().unwrap_or("?")
        );
        row(
            "  resumed",
            format!(
                "{} of {} ({} failed, {} closed by the server)",
                round["resumed"], round["members"], round["failed"], round["closed_by_server"]
            ),
        );
        row(
            "  all resumed within",
            format!(
                "{:.0} ms of the cut (cutting {} sockets took {:.1} ms per worker; coordinator wall {:.0} ms incl. replays)",
                f(&round["all_resumed_ms"]),
                round["cut"],
                f(&round["cut_loop_ms"]),
                f(&round["wall_ms"])
            ),
        );
        row(
            "  new socket open (TCP + upgrade)",
            hist(&round["socket_open_latency"]),
        );
        row(
            "  resume latency (to `resumed`)",
            hist(&round["resume_latency"]),
        );
        row("  replay complete", hist(&round["replay_complete_latency"]));
        if !round["kernel_listen_overflows"].is_null() {
            row(
                "  kernel (system-wide)",
                format!(
                    "{} accept-queue overflows, {} SYN retransmits (1 s each)",
                    round["kernel_listen_overflows"], round["kernel_syn_retransmits"]
                ),
            );
        }
        if let Some(ms) = round["server_cpu_ms_per_resume"].as_f64() {
            row(
                "  server CPU",
                format!(
                    "{:.0} ms in the round, {ms:.3} ms per resume (the generator's workers: {:.0} ms)",
                    f(&round["server_cpu_ms"]),
                    f(&round["generator_cpu_ms"])
                ),
            );
        }
    }
    let d = &r["delivery"];
    row(
        "messages (deliveries expected)",
        format!(
            "{}: {} delivered, {} lost, {} doubled, {} reordered (drained in {:.0} ms)",
            d["expected"],
            d["delivered"],
            d["lost"],
            d["doubled"],
            d["reordered"],
            f(&r["drain_ms"])
        ),
    );
    let c = &r["counters"];
    row(
        "client frames sent again",
        format!(
            "{} (gap errors {}, connect retries {})",
            c["resent"], c["gap_errors"], c["connect_retries"]
        ),
    );
    row(
        "acks",
        format!("server {}, client {}", c["server_acks"], c["client_acks"]),
    );
    row(
        "member_updated seen",
        format!(
            "reconnecting {}, connected {}",
            c["member_updated_reconnecting"], c["member_updated_connected"]
        ),
    );
    row(
        "anomalies",
        format!(
            "closed {}, errors {}, seq dup {}, seq gap {}, member_left {} (timeout {}), token mismatch {}, unexpected {}",
            c["closed_by_server"],
            c["errors"],
            c["server_seq_duplicates"],
            c["server_seq_gaps"],
            c["member_left"],
            c["false_timeouts"],
            c["token_mismatches"],
            c["unexpected_before_resumed"]
        ),
    );
    if r["resume_failures"]
        .as_object()
        .is_some_and(|o| !o.is_empty())
    {
        row("resume failures", r["resume_failures"].to_string());
    }
    let s = &r["server"];
    if !s["rss_empty_bytes"].is_null() {
        row(
            "server RSS",
            format!(
                "empty {}, connected {}, held {}, after resume {}",
                mib(&s["rss_empty_bytes"]),
                mib(&s["rss_connected_bytes"]),
                mib(&s["rss_held_bytes"]),
                mib(&s["rss_after_resume_bytes"])
            ),
        );
        row(
            "server RSS per member",
            format!(
                "connected {}, held place {} (held minus connected: {})",
                bytes(&s["rss_per_connected_member_bytes"]),
                bytes(&s["rss_per_held_place_bytes"]),
                bytes(&s["rss_held_minus_connected_per_member_bytes"])
            ),
        );
    }
    let t = &r["target"];
    row(
        "target",
        format!(
            "all resumed within {:.0} ms: {} (worst round {:.0} ms)",
            f(&t["all_resumed_within_ms"]),
            if t["met"] == true { "met" } else { "NOT met" },
            f(&t["worst_all_resumed_ms"])
        ),
    );
}
