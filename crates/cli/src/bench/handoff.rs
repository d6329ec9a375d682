//! `loudsync bench handoff`: one session of N members (a host and N-1 others), every member
//! in this one process so that every instant is read from one monotonic clock (issue 11's
//! benchmarks). Two measurements:
//!
//! - **Handoff latency.** The current host sends `handoff_request` naming the other of two
//!   members (or, with `--by-readiness`, naming nobody: the server picks the member that
//!   declared itself ready); that candidate answers `handoff_accept` the moment the forwarded
//!   request arrives. Measured from the accept's send to the moment the last of the N members
//!   has `host_changed`. The next round hands control back (the new host requests).
//! - **State fan-out.** The host sends a `state_set` whose document is `--state-bytes` of
//!   compact JSON, and, in the same rounds, a plain `message` padded so that the frame the
//!   members receive has the same size as the `state` frame; each is measured from its send to
//!   the moment the last other member has it.
//!
//! Each member's task records the instant a frame arrives before it looks into it, and sends
//! the coordinator an [`Event`]; the coordinator runs one round at a time, each bounded in
//! time. `--workers` does not apply (a second process would have a second clock).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use loudsync_protocol::handoff::StateChange;
use loudsync_protocol::{encode_client, ClientMessage, DeviceType, RawJson};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};
use tokio_websockets::Message;

use super::worker::{connect, histogram, message_type, BenchDialect, WorkerSpec, Ws};
use super::{percentiles, plot, probe, sources, target, Common, Plan};

/// Options of `bench handoff`.
#[derive(Args)]
pub struct HandoffArgs {
    #[command(flatten)]
    common: Common,
    /// Members of the one session, host included (at least 2; all in this process). The first
    /// opens the session as its host (`--session` names it; against `--url` the server needs
    /// `--max-members` at least this).
    #[arg(long, default_value_t = 1000)]
    members: usize,
    /// Handoffs measured (control goes to a second member and back, alternately).
    #[arg(long, default_value_t = 200)]
    rounds: u32,
    /// Fan-out rounds measured, each one `state_set` and one `message` (default: `--rounds`).
    #[arg(long)]
    fanout_rounds: Option<u32>,
    /// Size of the state document each `state_set` sets, as compact JSON.
    #[arg(long, default_value_t = 1024)]
    state_bytes: usize,
    /// Pause between rounds: the sockets go quiet, and the host stays under the server's
    /// per-connection rate limit (100 frames/s by default).
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    gap: Duration,
    /// The host names no target; the candidate is the member that declared itself ready
    /// (`handoff_ready`; after each handoff the old host is ready, decision 8).
    #[arg(long)]
    by_readiness: bool,
    /// A round not complete within this fails the run.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    round_timeout: Duration,
    /// The target for the handoff latency's p99.
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    target: Duration,
    /// Pause after the joins (the member_joined backlog drains).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    settle: Duration,
}

/// What a member's task saw or did, and when.
#[derive(Debug)]
struct Event {
    member: usize,
    at: Instant,
    kind: Kind,
    /// The frame's length in bytes (received frames).
    len: usize,
    /// The frame, for the kinds that are checked afterwards.
    text: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The coordinator's frame was written (the instant is taken just before the write).
    Sent,
    /// The candidate's `handoff_accept` was written (instant just before the write).
    AcceptSent,
    HandoffRequest,
    HandoffStarted,
    HandoffAck,
    HostChanged,
    State,
    Message,
    MemberUpdated,
    HandoffFailed,
    Error,
    /// The socket closed or failed.
    Closed,
}

impl Kind {
    fn of(frame_type: &str) -> Option<Kind> {
        Some(match frame_type {
            "handoff_request" => Kind::HandoffRequest,
            "handoff_started" => Kind::HandoffStarted,
            "handoff_ack" => Kind::HandoffAck,
            "host_changed" => Kind::HostChanged,
            "state" => Kind::State,
            "message" => Kind::Message,
            "member_updated" => Kind::MemberUpdated,
            "handoff_failed" => Kind::HandoffFailed,
            "error" => Kind::Error,
            _ => return None,
        })
    }

    /// Whether the coordinator keeps the frame's text (small frames it checks).
    fn keeps_text(self) -> bool {
        !matches!(self, Kind::State | Kind::Message | Kind::MemberUpdated)
    }

    /// Whether the event ends a round as a failure.
    fn fails(self) -> bool {
        matches!(self, Kind::HandoffFailed | Kind::Error | Kind::Closed)
    }
}

/// A joined member: its `clientId` and the channel of frames for it to send.
struct Member {
    id: String,
    send: mpsc::UnboundedSender<String>,
    task: tokio::task::JoinHandle<()>,
}

type Events = mpsc::UnboundedReceiver<Event>;

/// Runs the benchmark, prints the result; fails if a round failed or timed out, a member was
/// closed, or a `host_changed` was missing, doubled or wrong.
pub(super) fn run(a: HandoffArgs) -> anyhow::Result<()> {
    let common = &a.common;
    if common.dialect == BenchDialect::App {
        bail!("the app's dialect has no handoff frames and never hosts");
    }
    ensure!(a.members >= 2, "--members must be at least 2");
    ensure!(
        a.members <= 19_000,
        "--members: all members are in one process, which holds at most ~19 000 sockets"
    );
    // The host opens the session by joining it, so the server's default capacity must hold
    // every member: a spawned server gets `--max-members` (unless given); a `--url` server
    // must be started with it.
    let mut spawn = common.clone();
    if !spawn
        .server_args
        .iter()
        .any(|s| s.starts_with("--max-members"))
    {
        spawn
            .server_args
            .push(format!("--max-members={}", a.members));
    }
    let (addr, path, pid, _server) = target(&spawn)?;
    let tag = format!("b{:x}", fastrand::u32(..));
    let session = common
        .session
        .clone()
        .unwrap_or_else(|| format!("{tag}-handoff"));
    let mut spec = Plan::base(common, &tag);
    spec.addr = addr;
    spec.path = path;
    spec.sources = sources(common.sources, addr);
    if !common.json {
        eprintln!(
            "handoff: {} members in one session ({session}) in this process against {addr}{}",
            a.members,
            pid.map(|p| format!(" (server pid {p})"))
                .unwrap_or_default()
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(measure(&a, Arc::new(spec), &session, pid))?;
    if let Some(path) = &common.plot {
        let hists: Vec<(&str, Histogram<u64>)> = [
            ("handoff: accept to last host_changed", "handoff"),
            ("state to every member", "state"),
            ("message to every member", "message"),
        ]
        .into_iter()
        .filter_map(|(label, key)| {
            Some((
                label,
                super::worker::decode_hist(result.hists[key].as_str()?).ok()?,
            ))
        })
        .collect();
        let series: Vec<(&str, &Histogram<u64>)> = hists.iter().map(|(l, h)| (*l, h)).collect();
        std::fs::write(path, plot::svg("loudsync bench handoff", &series))
            .with_context(|| format!("write {}", path.display()))?;
    }
    if common.json {
        println!("{}", serde_json::to_string_pretty(&result.report)?);
    } else {
        print_table(&result.report);
    }
    ensure!(result.problems.is_empty(), "{}", result.problems.join(", "));
    Ok(())
}

/// The report, the histograms (serialised, for the plot), and what went wrong.
struct Outcome {
    report: Value,
    hists: Value,
    problems: Vec<String>,
}

/// Joins the members, runs the handoff rounds, then the fan-out rounds.
async fn measure(
    a: &HandoffArgs,
    spec: Arc<WorkerSpec>,
    session: &str,
    pid: Option<u32>,
) -> anyhow::Result<Outcome> {
    let n = a.members;
    let quiet = a.common.json;
    let (events_tx, mut rx) = mpsc::unbounded_channel();
    let started = Instant::now();
    let members = join_all(&spec, session, n, a.common.concurrency, &events_tx, quiet).await?;
    let join_time = started.elapsed();
    drop(events_tx);
    tokio::time::sleep(a.settle).await;
    drain(&mut rx);
    let mut problems = Vec::new();

    // Handoff rounds: control goes between members 0 and 1.
    if a.by_readiness {
        members[1].send.send(encode_client(
            &ClientMessage::HandoffReady { ready: true },
            0,
        )?)?;
        // The host's member_updated about member 1 says the server has the declaration.
        collect(&mut rx, a.round_timeout, |e| {
            e.kind == Kind::MemberUpdated && e.member == 0
        })
        .await
        .context("waiting for the readiness declaration")?;
    }
    let mut handoff = histogram();
    let mut first_changed = histogram();
    let mut old_host_ack = histogram();
    let mut forward = histogram();
    let mut whole = histogram();
    let (mut host, mut candidate) = (0usize, 1usize);
    let mut term = None::<u64>;
    let cpu_before = pid.and_then(probe::sample);
    for round in 1..=a.rounds {
        let target_id = (!a.by_readiness).then(|| members[candidate].id.clone());
        drain(&mut rx);
        members[host].send.send(encode_client(
            &ClientMessage::HandoffRequest { target_id },
            0,
        )?)?;
        let mut changed = 0;
        let events = collect(&mut rx, a.round_timeout, |e| {
            changed += usize::from(e.kind == Kind::HostChanged);
            changed == n
        })
        .await
        .with_context(|| format!("handoff round {round}"))?;
        let at = |kind: Kind, member: usize| {
            events
                .iter()
                .find(|e| e.kind == kind && e.member == member)
                .map(|e| e.at)
        };
        let sent = at(Kind::Sent, host).context("the request's send")?;
        let accept = at(Kind::AcceptSent, candidate)
            .with_context(|| format!("round {round}: the expected candidate did not accept"))?;
        let request_in = at(Kind::HandoffRequest, candidate).context("the forwarded request")?;
        let ack = at(Kind::HandoffAck, host).context("the old host's handoff_ack")?;
        let changes: Vec<&Event> = events
            .iter()
            .filter(|e| e.kind == Kind::HostChanged)
            .collect();
        let distinct: HashSet<usize> = changes.iter().map(|e| e.member).collect();
        if distinct.len() != n {
            problems.push(format!(
                "round {round}: host_changed reached {} distinct members of {n}",
                distinct.len()
            ));
        }
        let expected_term = term.map(|t| t + 1);
        for e in &changes {
            let v: Value = serde_json::from_str(e.text.as_deref().unwrap_or("null"))?;
            let right = v["hostId"] == members[candidate].id.as_str()
                && v["previousHostId"] == members[host].id.as_str()
                && v["reason"] == "handoff"
                && expected_term.is_none_or(|t| v["term"] == t);
            if !right {
                problems.push(format!(
                    "round {round}: member {} got {}",
                    e.member,
                    e.text.as_deref().unwrap_or("")
                ));
                break;
            }
        }
        term = changes
            .first()
            .and_then(|e| serde_json::from_str::<Value>(e.text.as_deref()?).ok())
            .and_then(|v| v["term"].as_u64());
        let last = changes.iter().map(|e| e.at).max().expect("n host_changed");
        let first = changes.iter().map(|e| e.at).min().expect("n host_changed");
        record(&mut handoff, accept, last);
        record(&mut first_changed, accept, first);
        record(&mut old_host_ack, accept, ack);
        record(&mut forward, sent, request_in);
        record(&mut whole, sent, last);
        std::mem::swap(&mut host, &mut candidate);
        tokio::time::sleep(a.gap).await;
    }
    let cpu_handoff = cpu_ms(cpu_before, pid.and_then(probe::sample));
    if !quiet {
        eprintln!(
            "  {} handoffs: accept to last host_changed p50 {} ms, p99 {} ms",
            a.rounds,
            percentiles(&handoff)["p50_ms"],
            percentiles(&handoff)["p99_ms"]
        );
    }

    // Fan-out: calibrate the message's padding on an unmeasured pair, then alternate.
    let other = usize::from(host == 0);
    let state_pad = pad_for(a.state_bytes);
    let state_doc = document(state_pad, 0);
    let doc_bytes = state_doc.len();
    let state_in = fan_out(
        &mut rx,
        &members,
        host,
        Kind::State,
        state_frame(&state_doc)?,
        a,
    )
    .await
    .context("warm-up state")?;
    let message_in = fan_out(
        &mut rx,
        &members,
        host,
        Kind::Message,
        message_frame(&document(state_pad, 0))?,
        a,
    )
    .await
    .context("warm-up message")?;
    let len_at = |f: &Fanout| f.lens_of(other);
    let message_pad = (state_pad + len_at(&state_in)).saturating_sub(len_at(&message_in));
    let mut state = FanoutStats::default();
    let mut message = FanoutStats::default();
    let fanout_rounds = a.fanout_rounds.unwrap_or(a.rounds);
    let (mut cpu_state, mut cpu_message) = (0.0, 0.0);
    for round in 1..=fanout_rounds {
        let before = pid.and_then(probe::sample);
        let f = fan_out(
            &mut rx,
            &members,
            host,
            Kind::State,
            state_frame(&document(state_pad, round))?,
            a,
        )
        .await
        .with_context(|| format!("state round {round}"))?;
        let mid = pid.and_then(probe::sample);
        state.add(&f, host, n, &mut problems);
        let f = fan_out(
            &mut rx,
            &members,
            host,
            Kind::Message,
            message_frame(&document(message_pad, round))?,
            a,
        )
        .await
        .with_context(|| format!("message round {round}"))?;
        message.add(&f, host, n, &mut problems);
        cpu_state += cpu_ms(before, mid).unwrap_or(0.0);
        cpu_message += cpu_ms(mid, pid.and_then(probe::sample)).unwrap_or(0.0);
    }

    for m in members {
        drop(m.send);
        let _ = tokio::time::timeout(Duration::from_secs(2), m.task).await;
    }
    let handoff_p = percentiles(&handoff);
    let p99 = handoff_p["p99_ms"].as_f64().unwrap_or(f64::MAX);
    let target_ms = a.target.as_secs_f64() * 1e3;
    let per = |cpu: Option<f64>, k: u32| cpu.map(|c| c / f64::from(k.max(1)));
    let measured = pid.is_some();
    let report = json!({
        "scenario": "handoff",
        "members": n,
        "join_time_s": join_time.as_secs_f64(),
        "candidate": if a.by_readiness { "the ready member (no targetId)" } else { "named by targetId" },
        "handoff": {
            "rounds": a.rounds,
            "accept_to_last_host_changed": handoff_p,
            "accept_to_first_host_changed": percentiles(&first_changed),
            "accept_to_old_host_handoff_ack": percentiles(&old_host_ack),
            "request_to_candidate": percentiles(&forward),
            "request_to_last_host_changed": percentiles(&whole),
            "server_cpu_ms_per_handoff": per(cpu_handoff, a.rounds),
        },
        "fanout": {
            "rounds": fanout_rounds,
            "state_document_bytes": doc_bytes,
            "state": state.report(measured.then_some(cpu_state / f64::from(fanout_rounds.max(1)))),
            "message": message.report(measured.then_some(cpu_message / f64::from(fanout_rounds.max(1)))),
        },
        "target": {
            "handoff_p99_ms_below": target_ms,
            "handoff_p99_ms": p99,
            "met": p99 < target_ms,
        },
    });
    let hists = json!({
        "handoff": super::worker::encode_hist(&handoff),
        "state": super::worker::encode_hist(&state.last),
        "message": super::worker::encode_hist(&message.last),
    });
    Ok(Outcome {
        report,
        hists,
        problems,
    })
}

/// Records `to - from` in µs.
fn record(h: &mut Histogram<u64>, from: Instant, to: Instant) {
    let us = to.saturating_duration_since(from).as_micros() as u64;
    let _ = h.record(us.max(1));
}

fn cpu_ms(before: Option<probe::Sample>, after: Option<probe::Sample>) -> Option<f64> {
    Some(1e3 * after?.cpu.saturating_sub(before?.cpu).as_secs_f64())
}

/// The padding that makes [`document`] `bytes` long (its shortest form if `bytes` is less).
fn pad_for(bytes: usize) -> usize {
    bytes.saturating_sub(document(0, 0).len())
}

/// A compact JSON object of `pad` padding bytes and a fixed-width round number.
fn document(pad: usize, round: u32) -> String {
    format!(r#"{{"pad":"{}","round":"{round:08}"}}"#, "x".repeat(pad))
}

fn state_frame(doc: &str) -> anyhow::Result<String> {
    let change = StateChange::Replace(serde_json::from_str(doc)?);
    Ok(encode_client(
        &ClientMessage::StateSet {
            change,
            base_version: None,
            term: None,
        },
        0,
    )?)
}

fn message_frame(doc: &str) -> anyhow::Result<String> {
    Ok(encode_client(
        &ClientMessage::message(RawJson::from_text(doc)?, None),
        0,
    )?)
}

/// One fan-out round's events.
struct Fanout {
    sent: Instant,
    kind: Kind,
    events: Vec<Event>,
}

impl Fanout {
    /// The length of the frame `member` received (0 if none).
    fn lens_of(&self, member: usize) -> usize {
        self.events
            .iter()
            .find(|e| e.kind == self.kind && e.member == member)
            .map_or(0, |e| e.len)
    }
}

/// The host sends `frame`; waits until every member it goes to has the `kind` frame (the
/// setter's own `state` included).
async fn fan_out(
    rx: &mut Events,
    members: &[Member],
    host: usize,
    kind: Kind,
    frame: String,
    a: &HandoffArgs,
) -> anyhow::Result<Fanout> {
    let n = members.len();
    let need = if kind == Kind::State { n } else { n - 1 };
    drain(rx);
    members[host].send.send(frame)?;
    let mut got = 0;
    let events = collect(rx, a.round_timeout, |e| {
        got += usize::from(e.kind == kind);
        got == need
    })
    .await?;
    let sent = events
        .iter()
        .find(|e| e.kind == Kind::Sent && e.member == host)
        .map(|e| e.at)
        .context("the host's send")?;
    tokio::time::sleep(a.gap).await;
    Ok(Fanout { sent, kind, events })
}

/// One kind's fan-out figures over the rounds.
struct FanoutStats {
    /// Send to the last other member's receipt, µs.
    last: Histogram<u64>,
    /// Send to the first other member's receipt, µs.
    first: Histogram<u64>,
    /// Send to the setter's own copy (`state` only), µs.
    own: Histogram<u64>,
    min_len: usize,
    max_len: usize,
}

impl Default for FanoutStats {
    fn default() -> Self {
        FanoutStats {
            last: histogram(),
            first: histogram(),
            own: histogram(),
            min_len: usize::MAX,
            max_len: 0,
        }
    }
}

impl FanoutStats {
    fn add(&mut self, f: &Fanout, host: usize, n: usize, problems: &mut Vec<String>) {
        let got: Vec<&Event> = f.events.iter().filter(|e| e.kind == f.kind).collect();
        let others: Vec<&&Event> = got.iter().filter(|e| e.member != host).collect();
        let distinct: HashSet<usize> = others.iter().map(|e| e.member).collect();
        if distinct.len() != n - 1 {
            problems.push(format!(
                "{:?} reached {} of the {} other members",
                f.kind,
                distinct.len(),
                n - 1
            ));
        }
        if let Some(last) = others.iter().map(|e| e.at).max() {
            record(&mut self.last, f.sent, last);
        }
        if let Some(first) = others.iter().map(|e| e.at).min() {
            record(&mut self.first, f.sent, first);
        }
        if let Some(own) = got.iter().find(|e| e.member == host) {
            record(&mut self.own, f.sent, own.at);
        }
        for e in &others {
            self.min_len = self.min_len.min(e.len);
            self.max_len = self.max_len.max(e.len);
        }
    }

    fn report(&self, server_cpu_ms: Option<f64>) -> Value {
        json!({
            "frame_bytes_min": (self.max_len > 0).then_some(self.min_len),
            "frame_bytes_max": (self.max_len > 0).then_some(self.max_len),
            "send_to_last_member": percentiles(&self.last),
            "send_to_first_member": percentiles(&self.first),
            "send_to_setters_own_copy": (!self.own.is_empty()).then(|| percentiles(&self.own)),
            "server_cpu_ms_per_fanout": server_cpu_ms,
        })
    }
}

/// Throws away whatever events are queued (between rounds).
fn drain(rx: &mut Events) {
    while rx.try_recv().is_ok() {}
}

/// Collects events until `done` holds for the last one, within `limit`. A `handoff_failed`,
/// an `error` or a closed member ends it with an error.
async fn collect(
    rx: &mut Events,
    limit: Duration,
    mut done: impl FnMut(&Event) -> bool,
) -> anyhow::Result<Vec<Event>> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut events = Vec::new();
    loop {
        let e = match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) => e,
            Ok(None) => bail!("every member is gone"),
            Err(_) => bail!(
                "not complete within {limit:?} ({} events so far)",
                events.len()
            ),
        };
        if e.kind.fails() {
            bail!(
                "member {} got {:?}: {}",
                e.member,
                e.kind,
                e.text.as_deref().unwrap_or("")
            );
        }
        let finished = done(&e);
        events.push(e);
        if finished {
            return Ok(events);
        }
    }
}

/// Joins the host, then the others (`concurrency` at a time); each member's task starts as
/// soon as it is in (it must read its `member_joined` frames).
async fn join_all(
    spec: &Arc<WorkerSpec>,
    session: &str,
    n: usize,
    concurrency: usize,
    events: &mpsc::UnboundedSender<Event>,
    quiet: bool,
) -> anyhow::Result<Vec<Member>> {
    let host = join(spec.clone(), session.to_string(), 0, events.clone()).await?;
    let limit = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut joins = Vec::with_capacity(n - 1);
    for i in 1..n {
        let permit = limit.clone().acquire_owned().await?;
        let (spec, session, events) = (spec.clone(), session.to_string(), events.clone());
        joins.push(tokio::spawn(async move {
            let m = join(spec, session, i, events).await;
            drop(permit);
            m
        }));
    }
    let mut members = vec![host];
    for (i, j) in joins.into_iter().enumerate() {
        members.push(j.await?.with_context(|| format!("member {}", i + 1))?);
        if !quiet && (i + 2) % 100 == 0 {
            eprint!("\r  joined {}/{n}   ", i + 2);
        }
    }
    if !quiet {
        eprintln!("\r  joined {n}/{n}   ");
    }
    Ok(members)
}

/// Connects member `i` (the host if 0), joins, reads up to its `member_list`, and starts its
/// task.
async fn join(
    spec: Arc<WorkerSpec>,
    session: String,
    i: usize,
    events: mpsc::UnboundedSender<Event>,
) -> anyhow::Result<Member> {
    let mut ws = connect(&spec, i as u64).await?;
    let device = format!("{}-{i}", spec.tag);
    let kind = if i == 0 {
        DeviceType::Host
    } else {
        DeviceType::Client
    };
    ws.send(Message::text(spec.dialect.join(&session, &device, kind)?))
        .await?;
    let mut id = None;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .context("join timed out")?
            .context("closed during join")??;
        if let Some((code, reason)) = msg.as_close() {
            bail!("closed during join: {} {reason}", u16::from(code));
        }
        let Some(text) = msg.as_text() else { continue };
        match message_type(text) {
            Some("welcome") => {
                let v: Value = serde_json::from_str(text)?;
                id = v["clientId"].as_str().map(str::to_string);
            }
            Some("member_list") => break,
            Some("error") => bail!("join rejected: {text}"),
            _ => {}
        }
    }
    let id = id.context("no welcome with a clientId before member_list")?;
    let (send, cmds) = mpsc::unbounded_channel();
    let interval = Duration::from_millis(spec.interval_ms.max(1));
    let task = tokio::spawn(member(ws, i, device, interval, cmds, events));
    Ok(Member { id, send, task })
}

/// The `handoffId` of a forwarded `handoff_request`, read from the text.
fn handoff_id(text: &str) -> Option<&str> {
    const KEY: &str = "\"handoffId\":\"";
    let rest = &text[text.find(KEY)? + KEY.len()..];
    rest.split('"').next()
}

/// A member: heartbeats, writes what the coordinator gives it, accepts any handoff request
/// at once, and reports the frames that matter with the instant each arrived. Ends when the
/// coordinator drops its sender, or its socket goes.
async fn member(
    mut ws: Ws,
    me: usize,
    device: String,
    interval: Duration,
    mut cmds: mpsc::UnboundedReceiver<String>,
    events: mpsc::UnboundedSender<Event>,
) {
    let event = |at: Instant, kind: Kind, len: usize, text: Option<String>| Event {
        member: me,
        at,
        kind,
        len,
        text,
    };
    let closed = |why: String| event(Instant::now(), Kind::Closed, 0, Some(why));
    let phase = Duration::from_millis(fastrand::u64(0..interval.as_millis().max(1) as u64));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            cmd = cmds.recv() => {
                let Some(frame) = cmd else {
                    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close()).await;
                    return;
                };
                let at = Instant::now();
                if let Err(e) = ws.send(Message::text(frame)).await {
                    let _ = events.send(closed(format!("send: {e}")));
                    return;
                }
                let _ = events.send(event(at, Kind::Sent, 0, None));
            }
            _ = tick.tick() => {
                let hb = BenchDialect::Loudsync.heartbeat(&device, 0);
                if let Err(e) = ws.send(Message::text(hb)).await {
                    let _ = events.send(closed(format!("heartbeat: {e}")));
                    return;
                }
            }
            msg = ws.next() => {
                let at = Instant::now();
                let msg = match msg {
                    Some(Ok(msg)) => msg,
                    Some(Err(e)) => {
                        let _ = events.send(closed(format!("read: {e}")));
                        return;
                    }
                    None => {
                        let _ = events.send(closed("socket closed".into()));
                        return;
                    }
                };
                if let Some((code, reason)) = msg.as_close() {
                    let _ = events.send(closed(format!("closed by the server: {} {reason}", u16::from(code))));
                    return;
                }
                let Some(text) = msg.as_text() else { continue };
                let Some(kind) = message_type(text).and_then(Kind::of) else { continue };
                if kind == Kind::HandoffRequest {
                    if let Some(id) = handoff_id(text) {
                        let accept = ClientMessage::HandoffAccept { handoff_id: id.to_string() };
                        let frame = encode_client(&accept, 0).expect("handoff_accept encodes");
                        let sent = Instant::now();
                        if let Err(e) = ws.send(Message::text(frame)).await {
                            let _ = events.send(closed(format!("accept: {e}")));
                            return;
                        }
                        let _ = events.send(event(sent, Kind::AcceptSent, 0, None));
                    }
                }
                let kept = kind.keeps_text().then(|| text.to_string());
                let _ = events.send(event(at, kind, text.len(), kept));
            }
        }
    }
}

fn print_table(r: &Value) {
    let row = |k: &str, v: String| println!("  {k:<40} {v}");
    let hist = |h: &Value| {
        format!(
            "p50 {} ms  p90 {} ms  p99 {} ms  max {} ms  (n={})",
            h["p50_ms"], h["p90_ms"], h["p99_ms"], h["max_ms"], h["count"]
        )
    };
    let h = &r["handoff"];
    println!(
        "handoff benchmark: {} members in one session (joined in {:.2} s), candidate {}",
        r["members"],
        r["join_time_s"].as_f64().unwrap_or(0.0),
        r["candidate"].as_str().unwrap_or("?")
    );
    row(
        "handoff: accept -> every member's host_changed",
        hist(&h["accept_to_last_host_changed"]),
    );
    row(
        "  accept -> first member's host_changed",
        hist(&h["accept_to_first_host_changed"]),
    );
    row(
        "  accept -> old host's handoff_ack",
        hist(&h["accept_to_old_host_handoff_ack"]),
    );
    row(
        "  request -> candidate has it",
        hist(&h["request_to_candidate"]),
    );
    row(
        "  request -> every member's host_changed",
        hist(&h["request_to_last_host_changed"]),
    );
    if let Some(ms) = h["server_cpu_ms_per_handoff"].as_f64() {
        row("  server CPU per handoff", format!("{ms:.2} ms"));
    }
    let f = &r["fanout"];
    println!(
        "  fan-out, {} rounds; state document {} B (compact JSON)",
        f["rounds"], f["state_document_bytes"]
    );
    println!("  {:<40} {:>26} {:>26}", "", "state (state_set)", "message");
    let sizes = |v: &Value| match (v["frame_bytes_min"].as_u64(), v["frame_bytes_max"].as_u64()) {
        (Some(lo), Some(hi)) => format!("{lo}-{hi}"),
        _ => "-".to_string(),
    };
    let side = |label: &str, key: &str| {
        let cell = |v: &Value| {
            if v["count"].as_u64().unwrap_or(0) == 0 {
                "-".to_string()
            } else {
                format!("{} / {} / {} ms", v["p50_ms"], v["p99_ms"], v["max_ms"])
            }
        };
        println!(
            "  {label:<40} {:>26} {:>26}",
            cell(&f["state"][key]),
            cell(&f["message"][key])
        );
    };
    println!(
        "  {:<40} {:>26} {:>26}",
        "frame received, bytes",
        sizes(&f["state"]),
        sizes(&f["message"])
    );
    side(
        "send -> every other member (p50/p99/max)",
        "send_to_last_member",
    );
    side("send -> first other member", "send_to_first_member");
    side("send -> the setter's own copy", "send_to_setters_own_copy");
    let cpu = |v: &Value| v.as_f64().map_or("-".to_string(), |c| format!("{c:.2} ms"));
    println!(
        "  {:<40} {:>26} {:>26}",
        "server CPU per fan-out (to all members)",
        cpu(&f["state"]["server_cpu_ms_per_fanout"]),
        cpu(&f["message"]["server_cpu_ms_per_fanout"])
    );
    let t = &r["target"];
    row(
        "target",
        format!(
            "handoff p99 under {} ms: {} (p99 {} ms)",
            t["handoff_p99_ms_below"],
            if t["met"] == true { "met" } else { "NOT met" },
            t["handoff_p99_ms"]
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_has_the_asked_size_and_the_frames_decode() {
        let doc = document(pad_for(1024), 7);
        assert_eq!(doc.len(), 1024);
        let v: Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(v["round"], "00000007");
        let frame = state_frame(&doc).unwrap();
        match loudsync_protocol::decode(&frame).unwrap() {
            ClientMessage::StateSet {
                change: StateChange::Replace(map),
                base_version: None,
                term: None,
            } => assert_eq!(serde_json::to_string(&map).unwrap().len(), 1024),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            loudsync_protocol::decode(&message_frame(&doc).unwrap()).unwrap(),
            ClientMessage::Message { to: None, .. }
        ));
        // Too small a size gives the shortest document.
        assert_eq!(document(pad_for(3), 0), document(0, 0));
    }

    #[test]
    fn the_handoff_id_is_read_from_the_forwarded_request() {
        let text = r#"{"type":"handoff_request","handoffId":"h12","fromId":"c_x","state":{"handoffId":"no"},"version":3,"term":2,"timeoutMs":10000}"#;
        assert_eq!(handoff_id(text), Some("h12"));
        assert_eq!(
            message_type(text).and_then(Kind::of),
            Some(Kind::HandoffRequest)
        );
        assert_eq!(handoff_id(r#"{"type":"handoff_request"}"#), None);
    }
}
