//! Resumable members (issue 10, seed 003's token handshake) for the load generator: the
//! handshake with a pipelined `join` (used by `bench idle --resumable` too), and the worker
//! side of `bench resume-storm`.
//!
//! A storm worker joins its sessions' members resumably, then obeys the coordinator's lines on
//! stdin: `cut` (every member sends its messages, its socket is cut abruptly, it queues more
//! messages while away and resumes at once on a new socket), `cut-hold` and `resume` (the same
//! cut, with the places held until `resume`), `drain` (wait until every message has arrived),
//! `report` and `exit`. Each member writes numbered application messages `{"m":slot,"n":k}`:
//! members to their host, the host to everyone. The receivers' tallies give the messages lost,
//! doubled and reordered across the cuts.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use loudsync_protocol::client::{merge_tokens, TOKEN_LEN};
use loudsync_protocol::{
    encode_client, encode_client_numbered, ClientMessage, DeviceType, RawJson,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncBufRead, Lines};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_websockets::Message;

use super::worker::{
    connect_at, emit, encode_hist, gather_joins, histogram, message_type, WorkerSpec, Ws,
};

/// How a storm cuts a socket (all of a worker's sockets in one tight loop, never with a close
/// frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum CutKind {
    /// `connect(AF_UNSPEC)`: the kernel disconnects the socket with a RST and drops whatever
    /// is unsent; the server's next read fails with a reset.
    Rst,
    /// `shutdown(SHUT_RDWR)`: FIN, the server reads EOF.
    Fin,
    /// No cut before the resume: each member resumes on a new socket while the old one is
    /// still open (the server must close it with 4000, `replaced`), and resets the old one
    /// only once `resumed` has arrived (a late close must not make the place `reconnecting`).
    Late,
}

/// What a storm worker does beyond joining.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StormPlan {
    /// Application messages each member writes just before each cut, and again while away.
    pub messages: u32,
    /// How sockets are cut.
    pub cut: CutKind,
    /// Resumes in flight at once in this worker (0: all at once).
    pub resume_concurrency: usize,
    /// A member that is not resumed this long after its cut (or the `resume` line) gives up.
    pub resume_timeout_ms: u64,
    /// The client acks after this many numbered frames (and at every heartbeat tick).
    pub ack_every: u64,
    /// Where members resume, round robin by member number (`bench cluster`: on other nodes
    /// than the one they joined); empty: where they joined.
    #[serde(default)]
    pub resume_addrs: Vec<SocketAddr>,
}

/// A local token: [`TOKEN_LEN`] characters of `[A-Za-z0-9]`.
pub fn local_token() -> String {
    (0..TOKEN_LEN).map(|_| fastrand::alphanumeric()).collect()
}

/// The `seq` of a numbered server frame (the server writes `{"seq":N,` first).
pub fn frame_seq(text: &str) -> Option<u64> {
    let rest = text.strip_prefix("{\"seq\":")?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

/// A resumable member right after its handshake and `join`.
pub struct Joined {
    /// The connection token T.
    pub token: String,
    /// The session's host (from `member_list`), if any.
    pub host_id: Option<String>,
    /// The last server `seq` received (the `member_list`, 1).
    pub last_seq: u64,
}

/// The next text frame, within `limit`.
async fn next_text(ws: &mut Ws, limit: Duration) -> anyhow::Result<String> {
    loop {
        let msg = tokio::time::timeout(limit, ws.next())
            .await
            .context("timed out")?
            .context("closed")??;
        if let Some((code, reason)) = msg.as_close() {
            bail!("closed by the server: {} {reason}", u16::from(code));
        }
        if let Some(text) = msg.as_text() {
            return Ok(text.to_string());
        }
    }
}

fn token_frame(token: &str, last_seq: Option<u64>) -> String {
    encode_client(
        &ClientMessage::Token {
            token: token.to_string(),
            last_seq,
        },
        0,
    )
    .expect("token frames encode")
}

fn server_token(text: &str) -> anyhow::Result<String> {
    ensure!(
        message_type(text) == Some("token"),
        "expected the server's token, got {text}"
    );
    let v: Value = serde_json::from_str(text)?;
    v["token"]
        .as_str()
        .map(str::to_string)
        .context("token without `token`")
}

/// Seed 003's handshake (steps 1-4) with `join` pipelined after step 3, up to `member_list`
/// (seq 1). Fails if the server does not answer with tokens or its `welcome` is not
/// `resumable`.
pub async fn handshake_join(ws: &mut Ws, join: String) -> anyhow::Result<Joined> {
    const LIMIT: Duration = Duration::from_secs(30);
    let b = local_token();
    let step = token_frame(&b, None);
    ws.send(Message::text(step.clone())).await?;
    let a = server_token(&next_text(ws, LIMIT).await?)?;
    ensure!(
        a.len() == TOKEN_LEN,
        "server token of {} characters",
        a.len()
    );
    ws.feed(Message::text(step)).await?;
    ws.send(Message::text(join)).await?;
    let again = server_token(&next_text(ws, LIMIT).await?)?;
    ensure!(again == a, "the server's confirmation token differs");
    let mut welcomed = false;
    loop {
        let text = next_text(ws, LIMIT).await?;
        match message_type(&text) {
            Some("welcome") => {
                let v: Value = serde_json::from_str(&text)?;
                ensure!(v["resumable"] == true, "welcome is not resumable: {text}");
                welcomed = true;
            }
            Some("member_list") => {
                let seq = frame_seq(&text);
                ensure!(seq == Some(1), "member_list with seq {seq:?}");
                let v: Value = serde_json::from_str(&text)?;
                let host_id = v["members"].as_array().and_then(|ms| {
                    ms.iter()
                        .find(|m| m["isHost"] == true)
                        .and_then(|m| m["id"].as_str().map(str::to_string))
                });
                ensure!(welcomed, "member_list before welcome");
                return Ok(Joined {
                    token: merge_tokens(&a, &b),
                    host_id,
                    last_seq: 1,
                });
            }
            Some("error") => bail!("join rejected: {text}"),
            _ => {}
        }
    }
}

/// The numbered `ack` frame.
pub fn ack_frame(seq: u64) -> String {
    encode_client(&ClientMessage::Ack { seq }, 0).expect("ack encodes")
}

/// Cuts the connection of a socket whose owner is waiting for [`Cmd::Cut`] (so the fd stays
/// open and is not reused while this runs); the owner closes it afterwards.
fn cut_fd(fd: RawFd, how: CutKind) {
    // SAFETY: `fd` is an open TCP socket (its owner holds it until told to drop it), and the
    // address is a plain `sockaddr` of the right size.
    unsafe {
        match how {
            CutKind::Rst => {
                let mut unspec: libc::sockaddr = std::mem::zeroed();
                unspec.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
                libc::connect(
                    fd,
                    &unspec,
                    std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
                );
            }
            CutKind::Fin => {
                libc::shutdown(fd, libc::SHUT_RDWR);
            }
            CutKind::Late => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tallies: who received which message.

/// One session's messages: what each slot wrote and what each slot received from each other.
#[derive(Default)]
pub struct Tally {
    /// Messages slot `s` wrote (numbered `1..=produced[s]`).
    produced: Vec<u32>,
    /// Slots that joined and are still in (not closed, resume not failed).
    alive: Vec<bool>,
    /// `received[r][s][n - 1]`: copies of message `n` from `s` that `r` received.
    received: Vec<Vec<Vec<u8>>>,
    /// Highest `n` `r` received from `s`.
    highest: Vec<Vec<u32>>,
    /// Messages that arrived after a later one from the same sender (first copies only).
    reordered: u64,
}

/// Lost, doubled, reordered, expected deliveries.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Deliveries expected: every message of an alive sender to each alive receiver.
    pub expected: u64,
    /// ... of which arrived (at least once).
    pub delivered: u64,
    /// ... never arrived.
    pub lost: u64,
    /// Extra copies.
    pub doubled: u64,
    /// Arrived after a later message of the same sender.
    pub reordered: u64,
}

impl Delivery {
    fn add(&mut self, o: Delivery) {
        self.expected += o.expected;
        self.delivered += o.delivered;
        self.lost += o.lost;
        self.doubled += o.doubled;
        self.reordered += o.reordered;
    }
}

impl Tally {
    /// A session of `slots` members, slot 0 the host.
    pub fn new(slots: usize) -> Tally {
        Tally {
            produced: vec![0; slots],
            alive: vec![false; slots],
            received: vec![vec![Vec::new(); slots]; slots],
            highest: vec![vec![0; slots]; slots],
            reordered: 0,
        }
    }

    fn record(&mut self, receiver: usize, sender: usize, n: u32) {
        if receiver >= self.received.len() || sender >= self.received.len() || n == 0 {
            return;
        }
        let copies = &mut self.received[receiver][sender];
        if copies.len() < n as usize {
            copies.resize(n as usize, 0);
        }
        let c = &mut copies[n as usize - 1];
        *c = c.saturating_add(1);
        let highest = &mut self.highest[receiver][sender];
        if *c == 1 && n < *highest {
            self.reordered += 1;
        }
        *highest = (*highest).max(n);
    }

    /// Members send to the host (slot 0), the host to everyone.
    fn count(&self) -> Delivery {
        let mut d = Delivery {
            reordered: self.reordered,
            ..Delivery::default()
        };
        let slots = self.produced.len();
        let pairs = (1..slots).flat_map(|s| [(0, s), (s, 0)]);
        for (r, s) in pairs {
            if !self.alive[r] || !self.alive[s] {
                continue;
            }
            let copies = &self.received[r][s];
            for n in 0..self.produced[s] as usize {
                d.expected += 1;
                match copies.get(n).copied().unwrap_or(0) {
                    0 => d.lost += 1,
                    c => {
                        d.delivered += 1;
                        d.doubled += u64::from(c - 1);
                    }
                }
            }
            // Copies of messages never written cannot happen; count them as doubled.
            d.doubled += copies
                .iter()
                .skip(self.produced[s] as usize)
                .map(|&c| u64::from(c))
                .sum::<u64>();
        }
        d
    }
}

// ---------------------------------------------------------------------------------------------
// The storm worker.

/// Counters a storm worker reports (every one but `resent`, `server_acks` and the
/// `member_updated` counts should be 0).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StormCounters {
    /// Sockets the server closed (close frame or EOF while connected).
    pub closed_by_server: u64,
    /// `error` frames received.
    pub errors: u64,
    /// Gap errors (`invalid_message` with `details.lastSeq`) the client resent after.
    pub gap_errors: u64,
    /// Numbered server frames with a seq already received (dropped, as a client must).
    pub server_seq_duplicates: u64,
    /// Numbered server frames that skipped a seq.
    pub server_seq_gaps: u64,
    /// `member_left` with reason `timeout`.
    pub false_timeouts: u64,
    /// `member_left` of any reason.
    pub member_left: u64,
    /// `member_updated` ... `reconnecting`.
    pub member_updated_reconnecting: u64,
    /// `member_updated` ... `connected`.
    pub member_updated_connected: u64,
    /// A resume's `token` echo that was not the connection token.
    pub token_mismatches: u64,
    /// Unexpected frames on a resume socket before `resumed`.
    pub unexpected_before_resumed: u64,
    /// Client frames sent again after `resumed` (or a gap error).
    pub resent: u64,
    /// Connects that failed during resumes and were retried.
    pub connect_retries: u64,
    /// Server `ack` frames.
    pub server_acks: u64,
    /// Client `ack` frames sent.
    pub client_acks: u64,
}

#[derive(Default)]
struct AtomicCounters {
    closed_by_server: AtomicU64,
    errors: AtomicU64,
    gap_errors: AtomicU64,
    server_seq_duplicates: AtomicU64,
    server_seq_gaps: AtomicU64,
    false_timeouts: AtomicU64,
    member_left: AtomicU64,
    member_updated_reconnecting: AtomicU64,
    member_updated_connected: AtomicU64,
    token_mismatches: AtomicU64,
    unexpected_before_resumed: AtomicU64,
    resent: AtomicU64,
    connect_retries: AtomicU64,
    server_acks: AtomicU64,
    client_acks: AtomicU64,
}

impl AtomicCounters {
    fn snapshot(&self) -> StormCounters {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StormCounters {
            closed_by_server: g(&self.closed_by_server),
            errors: g(&self.errors),
            gap_errors: g(&self.gap_errors),
            server_seq_duplicates: g(&self.server_seq_duplicates),
            server_seq_gaps: g(&self.server_seq_gaps),
            false_timeouts: g(&self.false_timeouts),
            member_left: g(&self.member_left),
            member_updated_reconnecting: g(&self.member_updated_reconnecting),
            member_updated_connected: g(&self.member_updated_connected),
            token_mismatches: g(&self.token_mismatches),
            unexpected_before_resumed: g(&self.unexpected_before_resumed),
            resent: g(&self.resent),
            connect_retries: g(&self.connect_retries),
            server_acks: g(&self.server_acks),
            client_acks: g(&self.client_acks),
        }
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

struct Shared {
    spec: WorkerSpec,
    plan: StormPlan,
    tallies: Vec<Mutex<Tally>>,
    resume_limit: Semaphore,
    counters: AtomicCounters,
    start: Instant,
}

/// What the worker's main loop tells every member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Nothing,
    /// Write this round's messages, report the socket's fd, and wait for [`Cmd::Cut`].
    Write {
        round: u32,
    },
    /// The socket has been cut (at `at`): drop it, queue messages while away, and resume at
    /// once (`resume`) or hold until [`Cmd::Resume`].
    Cut {
        round: u32,
        resume: bool,
        at: Instant,
    },
    Resume {
        round: u32,
    },
    Exit,
}

/// What members tell the worker's main loop.
enum Ev {
    /// This round's messages are written; the socket (this fd) may be cut.
    Written(RawFd),
    /// The cut socket is closed and the member waits for [`Cmd::Resume`].
    Holding,
    /// Resumed: latency (µs) from the cut (or the `resume` line) to `resumed`, when, and the
    /// µs from the same start until the new socket was open (TCP and WebSocket upgrade).
    Resumed(u64, Instant, u64),
    /// The replay after `resumed` has all arrived: µs from the cut (or the `resume` line).
    Replayed(u64),
    /// The resume failed (reason); the member is out.
    Failed(String),
    /// The server closed the member's socket; the member is out.
    Dead,
}

/// One member's client state.
struct Member {
    n: u64,
    session: usize,
    slot: usize,
    device: String,
    token: String,
    host_id: Option<String>,
    /// Last server seq received.
    in_seq: u64,
    /// Last server seq acked.
    acked: u64,
    /// Last client seq used.
    out_seq: u64,
    /// Client frames not yet acknowledged by the server (sent or still to send).
    unacked: VecDeque<(u64, String)>,
    /// Numbered frames still to come from the replay, and since when we wait.
    replay_left: u64,
    replay_from: Instant,
}

impl Member {
    /// Writes the next application message (numbered, kept until acknowledged).
    fn produce(&mut self, shared: &Shared) -> String {
        let n = {
            let mut t = shared.tallies[self.session].lock().unwrap();
            t.produced[self.slot] += 1;
            t.produced[self.slot]
        };
        let data =
            RawJson::from_text(&format!(r#"{{"m":{},"n":{n}}}"#, self.slot)).expect("valid JSON");
        self.out_seq += 1;
        let frame = encode_client_numbered(
            &ClientMessage::message(data, self.host_id.as_deref()),
            0,
            Some(self.out_seq),
        )
        .expect("message encodes");
        self.unacked.push_back((self.out_seq, frame.clone()));
        frame
    }

    fn acked_by_server(&mut self, seq: u64) {
        while self.unacked.front().is_some_and(|(s, _)| *s <= seq) {
            self.unacked.pop_front();
        }
    }

    /// Sends every unacknowledged frame after `seq` again, in order.
    async fn resend_after(&mut self, ws: &mut Ws, seq: u64, shared: &Shared) -> bool {
        self.acked_by_server(seq);
        for (_, frame) in &self.unacked {
            bump(&shared.counters.resent);
            if ws.feed(Message::text(frame.clone())).await.is_err() {
                return false;
            }
        }
        ws.flush().await.is_ok()
    }

    fn set_alive(&self, shared: &Shared, alive: bool) {
        shared.tallies[self.session].lock().unwrap().alive[self.slot] = alive;
    }
}

/// Joins every planned member resumably: hosts first in their session, then the others
/// within the in-flight limit.
async fn join_all(shared: &Arc<Shared>) -> (Vec<(Member, Ws)>, u64, Histogram<u64>) {
    let limit = Arc::new(Semaphore::new(shared.spec.concurrency.max(1)));
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let hist = Arc::new(Mutex::new(histogram()));
    let total: usize = shared.spec.sessions.iter().map(|s| s.members).sum();
    let mut session_tasks = Vec::new();
    for (index, plan) in shared.spec.sessions.iter().cloned().enumerate() {
        let (shared, limit, next, done, hist) = (
            shared.clone(),
            limit.clone(),
            next.clone(),
            done.clone(),
            hist.clone(),
        );
        session_tasks.push(tokio::spawn(async move {
            let mut joined = Vec::new();
            let mut failed = 0u64;
            let mut tasks = Vec::new();
            for slot in 0..plan.members {
                let permit = limit.clone().acquire_owned().await.expect("semaphore");
                let (shared, next, done, hist) =
                    (shared.clone(), next.clone(), done.clone(), hist.clone());
                let task = tokio::spawn(async move {
                    let kind = if slot == 0 && plan.with_host {
                        DeviceType::Host
                    } else {
                        DeviceType::Client
                    };
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let started = Instant::now();
                    let r = join_one(&shared, index, slot, n, kind).await;
                    if r.is_ok() {
                        let us = started.elapsed().as_micros() as u64;
                        let _ = hist.lock().unwrap().record(us.max(1));
                    }
                    drop(permit);
                    done.fetch_add(1, Ordering::Relaxed);
                    r
                });
                if slot == 0 && plan.with_host {
                    // The host opens the session before anyone else joins it.
                    match task.await {
                        Ok(Ok(m)) => joined.push(m),
                        Ok(Err(e)) => {
                            eprintln!("resume-storm: a host's join failed: {e:#}");
                            failed += 1;
                        }
                        Err(_) => failed += 1,
                    }
                } else {
                    tasks.push(task);
                }
            }
            for t in tasks {
                match t.await {
                    Ok(Ok(m)) => joined.push(m),
                    Ok(Err(e)) => {
                        if failed == 0 {
                            eprintln!("resume-storm: a join failed: {e:#}");
                        }
                        failed += 1;
                    }
                    Err(_) => failed += 1,
                }
            }
            (joined, failed)
        }));
    }
    let (all, failed) = gather_joins(session_tasks, &done, total).await;
    let hist = hist.lock().unwrap().clone();
    (all, failed, hist)
}

async fn join_one(
    shared: &Shared,
    session: usize,
    slot: usize,
    n: u64,
    kind: DeviceType,
) -> anyhow::Result<(Member, Ws)> {
    let spec = &shared.spec;
    let device = format!("{}-{n}", spec.tag);
    let addr = match (kind, spec.host_addr) {
        (DeviceType::Host, Some(host_addr)) => host_addr,
        _ => spec.addr,
    };
    let mut ws = connect_at(spec, addr, n).await?;
    let join = spec
        .dialect
        .join(&spec.sessions[session].id, &device, kind)?;
    let joined = handshake_join(&mut ws, join).await?;
    let member = Member {
        n,
        session,
        slot,
        device,
        token: joined.token,
        host_id: if kind == DeviceType::Host {
            None
        } else {
            Some(joined.host_id.context("no host in member_list")?)
        },
        in_seq: joined.last_seq,
        acked: 0,
        out_seq: 0,
        unacked: VecDeque::new(),
        replay_left: 0,
        replay_from: Instant::now(),
    };
    member.set_alive(shared, true);
    Ok((member, ws))
}

/// Why a member's connected phase ended.
enum Stop {
    Cmd(Cmd),
    Closed,
}

/// What a storm worker saw, when it exits (the worker process has reported it already; the
/// tests read it).
#[derive(Debug)]
#[cfg_attr(not(test), allow(dead_code))]
pub struct Outcome {
    /// Members joined.
    pub joined: u64,
    /// Messages delivered, lost, doubled, reordered.
    pub delivery: Delivery,
    /// Resume failures by reason.
    pub failures: BTreeMap<String, u64>,
    /// The counters.
    pub counters: StormCounters,
}

/// Entry point of a storm worker (the spec has been read already; `lines` are the
/// coordinator's commands).
pub async fn run<R: AsyncBufRead + Unpin>(
    spec: WorkerSpec,
    plan: StormPlan,
    mut stdin: Lines<R>,
) -> anyhow::Result<Outcome> {
    let tallies = spec
        .sessions
        .iter()
        .map(|s| Mutex::new(Tally::new(s.members)))
        .collect();
    let limit = match plan.resume_concurrency {
        0 => Semaphore::MAX_PERMITS,
        n => n,
    };
    let shared = Arc::new(Shared {
        spec,
        plan,
        tallies,
        resume_limit: Semaphore::new(limit),
        counters: AtomicCounters::default(),
        start: Instant::now(),
    });
    let (members, failed, join_hist) = join_all(&shared).await;
    let joined = members.len() as u64;
    let (cmd_tx, cmd_rx) = watch::channel(Cmd::Nothing);
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    for (m, ws) in members {
        tokio::spawn(member_task(
            m,
            ws,
            shared.clone(),
            cmd_rx.clone(),
            ev_tx.clone(),
        ));
    }
    drop(ev_tx);
    emit(json!({"event": "ready", "joined": joined, "failed": failed}));
    let mut live = joined;
    let mut round = 0u32;
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(line) = stdin.next_line().await? {
        match line.trim() {
            cmd @ ("cut" | "cut-hold" | "resume") => {
                let limit =
                    Duration::from_millis(shared.plan.resume_timeout_ms) + Duration::from_secs(10);
                let mut cut = CutPass::default();
                let resuming = cmd != "cut-hold";
                let t0 = if cmd == "resume" {
                    let t0 = Instant::now();
                    let _ = cmd_tx.send(Cmd::Resume { round });
                    t0
                } else {
                    round += 1;
                    let _ = cmd_tx.send(Cmd::Write { round });
                    let members = live;
                    let fds = collect_written(&mut ev_rx, &mut live, members, limit).await;
                    // Every socket of this worker, in one tight loop.
                    let t0 = Instant::now();
                    for &fd in &fds {
                        cut_fd(fd, shared.plan.cut);
                    }
                    let at = Instant::now();
                    cut = CutPass {
                        sockets: fds.len() as u64,
                        ms: at.duration_since(t0).as_secs_f64() * 1e3,
                    };
                    let _ = cmd_tx.send(Cmd::Cut {
                        round,
                        resume: resuming,
                        at,
                    });
                    t0
                };
                let r = if resuming {
                    collect_round(&mut ev_rx, &mut live, t0, cut, &mut failures, limit).await
                } else {
                    // Every place is held once every member has closed its socket.
                    let mut holding = 0;
                    while holding < live {
                        match tokio::time::timeout(limit, ev_rx.recv()).await {
                            Ok(Some(Ev::Holding)) => holding += 1,
                            Ok(Some(Ev::Dead)) => live -= 1,
                            Ok(Some(_)) => {}
                            _ => break,
                        }
                    }
                    RoundReport::new(live, cut)
                };
                let kind = if resuming { "round" } else { "held" };
                emit(json!({"event": kind, "round": r}));
            }
            "drain" => {
                let t0 = Instant::now();
                let limit = Duration::from_millis(shared.plan.resume_timeout_ms);
                let d = loop {
                    let d = delivery(&shared);
                    if d.lost == 0 || t0.elapsed() > limit {
                        break d;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                };
                emit(
                    json!({"event": "drained", "ms": t0.elapsed().as_secs_f64() * 1e3, "lost": d.lost}),
                );
            }
            "report" => {
                let d = delivery(&shared);
                emit(json!({
                    "event": "report",
                    "report": {
                        "joined": joined,
                        "join_failed": failed,
                        "join_hist": encode_hist(&join_hist),
                        "live": live,
                        "resume_failures": failures,
                        "delivery": d,
                        "counters": shared.counters.snapshot(),
                        "uptime_s": shared.start.elapsed().as_secs_f64(),
                    }
                }));
            }
            "exit" => break,
            _ => {}
        }
    }
    let _ = cmd_tx.send(Cmd::Exit);
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(Outcome {
        joined,
        delivery: delivery(&shared),
        failures,
        counters: shared.counters.snapshot(),
    })
}

fn delivery(shared: &Shared) -> Delivery {
    let mut d = Delivery::default();
    for t in &shared.tallies {
        d.add(t.lock().unwrap().count());
    }
    d
}

/// A worker's cut of all its sockets.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
pub struct CutPass {
    /// Sockets cut.
    pub sockets: u64,
    /// How long the loop over them took, ms.
    pub ms: f64,
}

/// Waits until every live member has written its messages (or is gone); returns the fds.
async fn collect_written(
    ev_rx: &mut mpsc::UnboundedReceiver<Ev>,
    live: &mut u64,
    members: u64,
    limit: Duration,
) -> Vec<RawFd> {
    let mut fds = Vec::with_capacity(members as usize);
    let mut gone = 0;
    let deadline = tokio::time::Instant::now() + limit;
    while (fds.len() as u64) + gone < members {
        match tokio::time::timeout_at(deadline, ev_rx.recv()).await {
            Ok(Some(Ev::Written(fd))) => fds.push(fd),
            Ok(Some(Ev::Dead)) => {
                gone += 1;
                *live -= 1;
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    fds
}

/// One round as a worker saw it.
#[derive(Debug, Serialize, Deserialize)]
pub struct RoundReport {
    /// Members in at the start of the round.
    pub members: u64,
    /// Sockets cut, and how long the loop took (ms).
    pub cut: CutPass,
    /// Members resumed.
    pub resumed: u64,
    /// Members whose resume failed (reasons in the report).
    pub failed: u64,
    /// Members closed by the server during the round.
    pub dead: u64,
    /// ms from the line to the last `resumed`.
    pub all_resumed_ms: f64,
    /// Resume latency (µs) from each member's cut (or the `resume` line) to `resumed`.
    pub resume_hist: String,
    /// From the same start to the last replayed frame.
    pub replay_hist: String,
    /// From the same start until the new socket was open (TCP connect and upgrade).
    pub upgrade_hist: String,
    /// Members whose replay completed.
    pub replayed: u64,
}

impl RoundReport {
    fn new(members: u64, cut: CutPass) -> RoundReport {
        RoundReport {
            members,
            cut,
            resumed: 0,
            failed: 0,
            dead: 0,
            all_resumed_ms: 0.0,
            resume_hist: encode_hist(&histogram()),
            replay_hist: encode_hist(&histogram()),
            upgrade_hist: encode_hist(&histogram()),
            replayed: 0,
        }
    }
}

/// Waits until every live member has resumed, failed or gone, and (a little longer) for the
/// replays to complete. `t0` is when the cut (or the `resume` line) started.
async fn collect_round(
    ev_rx: &mut mpsc::UnboundedReceiver<Ev>,
    live: &mut u64,
    t0: Instant,
    cut: CutPass,
    failures: &mut BTreeMap<String, u64>,
    limit: Duration,
) -> RoundReport {
    let members = *live;
    let mut r = RoundReport::new(members, cut);
    let mut resume_hist = histogram();
    let mut replay_hist = histogram();
    let mut upgrade_hist = histogram();
    let mut last_resumed = t0;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let resumes_done = r.resumed + r.failed + r.dead >= members;
        // Replays are waited for, but a little only once every resume is in.
        if resumes_done && r.replayed >= r.resumed {
            break;
        }
        let wait = if resumes_done {
            deadline.min(tokio::time::Instant::now() + Duration::from_secs(5))
        } else {
            deadline
        };
        let Ok(Some(ev)) = tokio::time::timeout_at(wait, ev_rx.recv()).await else {
            break;
        };
        match ev {
            Ev::Written(_) | Ev::Holding => {}
            Ev::Resumed(us, at, up) => {
                r.resumed += 1;
                let _ = resume_hist.record(us.max(1));
                let _ = upgrade_hist.record(up.max(1));
                last_resumed = last_resumed.max(at);
            }
            Ev::Replayed(us) => {
                r.replayed += 1;
                let _ = replay_hist.record(us.max(1));
            }
            Ev::Failed(reason) => {
                r.failed += 1;
                *live -= 1;
                *failures.entry(reason).or_default() += 1;
            }
            Ev::Dead => {
                r.dead += 1;
                *live -= 1;
            }
        }
    }
    r.all_resumed_ms = last_resumed.saturating_duration_since(t0).as_secs_f64() * 1e3;
    r.resume_hist = encode_hist(&resume_hist);
    r.replay_hist = encode_hist(&replay_hist);
    r.upgrade_hist = encode_hist(&upgrade_hist);
    r
}

async fn member_task(
    mut m: Member,
    mut ws: Ws,
    shared: Arc<Shared>,
    mut cmds: watch::Receiver<Cmd>,
    events: mpsc::UnboundedSender<Ev>,
) {
    let interval = Duration::from_millis(shared.spec.interval_ms.max(1));
    let phase = Duration::from_millis(fastrand::u64(0..interval.as_millis() as u64));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        match connected(&mut m, &mut ws, &shared, &mut cmds, &mut tick, &events).await {
            Stop::Closed => {
                m.set_alive(&shared, false);
                let _ = events.send(Ev::Dead);
                return;
            }
            Stop::Cmd(Cmd::Exit) => {
                // The formal disconnect (seed 003): the connection token without `lastSeq`.
                let _ = ws.send(Message::text(token_frame(&m.token, None))).await;
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
                return;
            }
            Stop::Cmd(Cmd::Write { .. }) => {
                for _ in 0..shared.plan.messages {
                    let f = m.produce(&shared);
                    let _ = ws.feed(Message::text(f)).await;
                }
                let _ = ws.flush().await;
                let _ = events.send(Ev::Written(ws.get_ref().as_raw_fd()));
                // Hold the socket (its fd must not be reused) until the loop has cut it.
                let (resume, cut_at) = loop {
                    if cmds.changed().await.is_err() {
                        return;
                    }
                    match *cmds.borrow_and_update() {
                        Cmd::Cut { resume, at, .. } => break (resume, at),
                        Cmd::Exit => return,
                        _ => {}
                    }
                };
                // `late`: the old socket stays open until the resume is through.
                let old = (shared.plan.cut == CutKind::Late).then_some(ws);
                // What the application sends while away is queued.
                for _ in 0..shared.plan.messages {
                    m.produce(&shared);
                }
                let start = if resume {
                    cut_at
                } else {
                    let _ = events.send(Ev::Holding);
                    loop {
                        if cmds.changed().await.is_err() {
                            return;
                        }
                        match *cmds.borrow_and_update() {
                            Cmd::Resume { .. } => break,
                            Cmd::Exit => return,
                            _ => {}
                        }
                    }
                    Instant::now()
                };
                let resumed = resume_member(&mut m, &shared, start).await;
                if let Some(old) = old {
                    cut_fd(old.get_ref().as_raw_fd(), CutKind::Rst);
                }
                match resumed {
                    Ok((new_ws, at, upgraded)) => {
                        ws = new_ws;
                        let us = at.duration_since(start).as_micros() as u64;
                        let up = upgraded.duration_since(start).as_micros() as u64;
                        let _ = events.send(Ev::Resumed(us, at, up));
                        if m.replay_left == 0 {
                            let _ = events.send(Ev::Replayed(us));
                        }
                    }
                    Err(reason) => {
                        m.set_alive(&shared, false);
                        let _ = events.send(Ev::Failed(reason));
                        return;
                    }
                }
            }
            Stop::Cmd(_) => {}
        }
    }
}

/// The connected phase: keeps the member alive, handles what arrives, until a command or the
/// socket's end.
async fn connected(
    m: &mut Member,
    ws: &mut Ws,
    shared: &Shared,
    cmds: &mut watch::Receiver<Cmd>,
    tick: &mut tokio::time::Interval,
    events: &mpsc::UnboundedSender<Ev>,
) -> Stop {
    let dialect = shared.spec.dialect;
    loop {
        tokio::select! {
            changed = cmds.changed() => {
                if changed.is_err() {
                    return Stop::Cmd(Cmd::Exit);
                }
                let cmd = *cmds.borrow_and_update();
                if cmd != Cmd::Nothing {
                    return Stop::Cmd(cmd);
                }
            }
            _ = tick.tick() => {
                let now_us = shared.start.elapsed().as_micros() as u64;
                if ws.feed(Message::text(dialect.heartbeat(&m.device, now_us))).await.is_err() {
                    return Stop::Closed;
                }
                if m.in_seq > m.acked {
                    m.acked = m.in_seq;
                    bump(&shared.counters.client_acks);
                    if ws.feed(Message::text(ack_frame(m.acked))).await.is_err() {
                        return Stop::Closed;
                    }
                }
                if ws.flush().await.is_err() {
                    return Stop::Closed;
                }
            }
            msg = ws.next() => {
                let Some(Ok(msg)) = msg else {
                    bump(&shared.counters.closed_by_server);
                    return Stop::Closed;
                };
                if let Some((code, reason)) = msg.as_close() {
                    bump(&shared.counters.closed_by_server);
                    let exiting = *cmds.borrow() == Cmd::Exit;
                    if !exiting && shared.counters.closed_by_server.load(Ordering::Relaxed) <= 3 {
                        eprintln!("resume-storm: the server closed a member: {} {reason}", u16::from(code));
                    }
                    return Stop::Closed;
                }
                let Some(text) = msg.as_text() else { continue };
                if !on_frame(m, ws, shared, text, events).await {
                    return Stop::Closed;
                }
            }
        }
    }
}

/// Handles one server frame; false if the socket failed.
async fn on_frame(
    m: &mut Member,
    ws: &mut Ws,
    shared: &Shared,
    text: &str,
    events: &mpsc::UnboundedSender<Ev>,
) -> bool {
    let c = &shared.counters;
    let kind = message_type(text);
    let Some(seq) = frame_seq(text) else {
        match kind {
            Some("ack") => {
                bump(&c.server_acks);
                if let Some(seq) = serde_json::from_str::<Value>(text)
                    .ok()
                    .and_then(|v| v["seq"].as_u64())
                {
                    m.acked_by_server(seq);
                }
            }
            Some("pong") => {}
            Some("error") => {
                bump(&c.errors);
                eprintln!("resume-storm: unnumbered error: {text}");
            }
            _ => bump(&c.unexpected_before_resumed),
        }
        return true;
    };
    if seq <= m.in_seq {
        bump(&c.server_seq_duplicates);
        return true;
    }
    if seq > m.in_seq + 1 {
        bump(&c.server_seq_gaps);
    }
    m.in_seq = seq;
    if m.replay_left > 0 {
        m.replay_left -= 1;
        if m.replay_left == 0 {
            let _ = events.send(Ev::Replayed(m.replay_from.elapsed().as_micros() as u64));
        }
    }
    match kind {
        Some("message") => {
            if let Ok(v) = serde_json::from_str::<Value>(text) {
                let (s, n) = (v["data"]["m"].as_u64(), v["data"]["n"].as_u64());
                if let (Some(s), Some(n)) = (s, n) {
                    shared.tallies[m.session]
                        .lock()
                        .unwrap()
                        .record(m.slot, s as usize, n as u32);
                }
            }
        }
        Some("member_left") => {
            bump(&c.member_left);
            if text.contains(r#""reason":"timeout""#) {
                bump(&c.false_timeouts);
            }
        }
        Some("member_updated") => {
            if text.contains(r#""connectionStatus":"reconnecting""#) {
                bump(&c.member_updated_reconnecting);
            } else {
                bump(&c.member_updated_connected);
            }
        }
        Some("error") => {
            bump(&c.errors);
            let v: Value = serde_json::from_str(text).unwrap_or_default();
            if let Some(last) = v["details"]["lastSeq"].as_u64() {
                bump(&c.gap_errors);
                if !m.resend_after(ws, last, shared).await {
                    return false;
                }
            } else if c.errors.load(Ordering::Relaxed) <= 3 {
                eprintln!("resume-storm: error: {text}");
            }
        }
        _ => {}
    }
    if m.in_seq - m.acked >= shared.plan.ack_every {
        m.acked = m.in_seq;
        bump(&c.client_acks);
        if ws.send(Message::text(ack_frame(m.acked))).await.is_err() {
            return false;
        }
    }
    true
}

/// Resumes on a new socket: the connection token with `lastSeq`, its echo, `resumed`, and the
/// client's frames after the server's `lastSeq` sent again. Returns the socket and when
/// `resumed` arrived, or why the resume failed.
async fn resume_member(
    m: &mut Member,
    shared: &Shared,
    start: Instant,
) -> Result<(Ws, Instant, Instant), String> {
    let c = &shared.counters;
    let _permit = shared.resume_limit.acquire().await.expect("semaphore");
    let deadline = tokio::time::Instant::from_std(
        start + Duration::from_millis(shared.plan.resume_timeout_ms),
    );
    let addrs = &shared.plan.resume_addrs;
    let addr = match addrs.len() {
        0 => shared.spec.addr,
        n => addrs[m.n as usize % n],
    };
    let mut ws = loop {
        match tokio::time::timeout_at(deadline, connect_at(&shared.spec, addr, m.n)).await {
            Ok(Ok(ws)) => break ws,
            Ok(Err(_)) => {
                bump(&c.connect_retries);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(_) => return Err("connect timed out".into()),
        }
    };
    let upgraded = Instant::now();
    ws.send(Message::text(token_frame(&m.token, Some(m.in_seq))))
        .await
        .map_err(|e| format!("send: {e}"))?;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let text = next_text(&mut ws, left)
            .await
            .map_err(|e| format!("{e:#}"))?;
        match message_type(&text) {
            Some("token") => {
                if server_token(&text).ok().as_deref() != Some(m.token.as_str()) {
                    bump(&c.token_mismatches);
                }
            }
            Some("resumed") => {
                let at = Instant::now();
                let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
                let last = v["lastSeq"].as_u64().ok_or("resumed without lastSeq")?;
                m.replay_left = v["replayed"].as_u64().unwrap_or(0);
                m.replay_from = start;
                if !m.resend_after(&mut ws, last, shared).await {
                    return Err("socket failed while resending".into());
                }
                return Ok((ws, at, upgraded));
            }
            Some("resume_failed") => {
                let v: Value = serde_json::from_str(&text).unwrap_or_default();
                return Err(v["reason"].as_str().unwrap_or("?").to_string());
            }
            Some("error") => {
                let v: Value = serde_json::from_str(&text).unwrap_or_default();
                return Err(format!("error {}", v["code"].as_str().unwrap_or("?")));
            }
            _ => bump(&c.unexpected_before_resumed),
        }
    }
}

#[cfg(test)]
mod mock;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::worker::{BenchDialect, Mode, SessionPlan};
    use tokio::io::AsyncBufReadExt;

    #[tokio::test(flavor = "current_thread")]
    async fn a_storm_against_a_stand_in_loses_and_doubles_nothing() {
        let addr = mock::start().await;
        for cut in [CutKind::Rst, CutKind::Fin] {
            let plan = StormPlan {
                messages: 3,
                cut,
                resume_concurrency: 2,
                resume_timeout_ms: 5000,
                ack_every: 4,
                resume_addrs: Vec::new(),
            };
            let spec = WorkerSpec {
                dialect: BenchDialect::Loudsync,
                addr,
                path: "/".into(),
                sessions: vec![
                    SessionPlan {
                        id: format!("s1{cut:?}"),
                        members: 4,
                        with_host: true,
                    },
                    SessionPlan {
                        id: format!("s2{cut:?}"),
                        members: 3,
                        with_host: true,
                    },
                ],
                sources: vec![[127, 0, 0, 1].into()],
                interval_ms: 100,
                concurrency: 3,
                tag: format!("t{cut:?}"),
                mode: Mode::ResumeStorm(plan.clone()),
                resumable: true,
                host_addr: None,
            };
            let input: &[u8] = b"cut\ncut\ncut-hold\nresume\ndrain\nreport\nexit\n";
            let out = run(spec, plan, tokio::io::BufReader::new(input).lines())
                .await
                .unwrap();
            assert_eq!(out.joined, 7);
            assert!(out.failures.is_empty(), "{:?}", out.failures);
            // Per round and phase, 3 messages on each host-member pair, both ways: 3 + 2 pairs.
            assert_eq!(
                out.delivery,
                Delivery {
                    expected: 2 * 5 * 3 * 2 * 3,
                    delivered: 2 * 5 * 3 * 2 * 3,
                    ..Delivery::default()
                },
                "{:?}",
                out.counters
            );
            assert_eq!(out.counters.server_seq_duplicates, 0);
            assert_eq!(out.counters.server_seq_gaps, 0);
            assert_eq!(out.counters.closed_by_server, 0);
        }
    }

    #[test]
    fn seq_is_read_from_the_prefix() {
        assert_eq!(frame_seq(r#"{"seq":12,"type":"message"}"#), Some(12));
        assert_eq!(frame_seq(r#"{"type":"ack","seq":5}"#), None);
        assert_eq!(
            message_type(r#"{"seq":3,"type":"member_list","members":[]}"#),
            Some("member_list")
        );
        let t = local_token();
        assert_eq!(t.len(), TOKEN_LEN);
        assert!(t.bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn the_bench_frames_decode_as_the_server_reads_them() {
        let ack = loudsync_protocol::decode_numbered(&ack_frame(9));
        assert_eq!(ack.message.unwrap(), ClientMessage::Ack { seq: 9 });
        let t = "a".repeat(64);
        let resume = loudsync_protocol::decode(&token_frame(&t, Some(4))).unwrap();
        assert_eq!(
            resume,
            ClientMessage::Token {
                token: t,
                last_seq: Some(4)
            }
        );
    }

    #[test]
    fn tallies_count_lost_doubled_and_reordered() {
        let mut t = Tally::new(3);
        t.alive = vec![true; 3];
        t.produced = vec![2, 3, 3];
        // Host (0) gets 1..3 from slot 1, with 2 twice; from slot 2: 1 and 3, then 2 late.
        for (s, n) in [(1, 1), (1, 2), (1, 2), (1, 3), (2, 1), (2, 3), (2, 2)] {
            t.record(0, s, n);
        }
        // Slot 1 gets both host messages; slot 2 only the first.
        t.record(1, 0, 1);
        t.record(1, 0, 2);
        t.record(2, 0, 1);
        let d = t.count();
        assert_eq!(
            d,
            Delivery {
                expected: 10,
                delivered: 9,
                lost: 1,
                doubled: 1,
                reordered: 1
            }
        );
        // A member that is out is not counted either way.
        t.alive[2] = false;
        assert_eq!(t.count().expected, 5);
    }
}
