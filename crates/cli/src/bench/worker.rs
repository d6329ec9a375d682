//! A load-generator worker process: opens its share of members, joins them, keeps them alive
//! at the document's rates, measures, and reports to the coordinator as JSON lines on stdout.
//!
//! Protocol with the coordinator: the spec arrives as the first line on stdin; the worker
//! prints `progress` lines while joining and one `ready` line; on the stdin line `hold` it
//! runs the hold phase, prints `done`, and exits when stdin says `exit` (or closes).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_websockets::{ClientBuilder, Message, WebSocketStream};

/// One session this worker fills.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionPlan {
    /// Session id.
    pub id: String,
    /// Members including the host (the first one joins as host).
    pub members: usize,
}

/// What a worker is asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// The server's TCP address.
    pub addr: SocketAddr,
    /// The WebSocket path.
    pub path: String,
    /// Sessions to fill, each entirely by this worker.
    pub sessions: Vec<SessionPlan>,
    /// Source addresses to spread connections over.
    pub sources: Vec<IpAddr>,
    /// Heartbeat and ping interval, ms.
    pub interval_ms: u64,
    /// Joins in flight at once.
    pub concurrency: usize,
    /// Distinguishes device ids between runs and workers.
    pub tag: String,
}

/// What the worker reports at the end.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct WorkerReport {
    /// Members that joined.
    pub joined: u64,
    /// Members whose connect or join failed.
    pub join_failed: u64,
    /// Join latency histogram (µs), serialised.
    pub join_hist: String,
    /// Ping RTT histogram (µs), serialised.
    pub rtt_hist: String,
    /// `member_left` with reason `timeout` seen by any member (false timeouts).
    pub timeouts_seen: u64,
    /// Members whose socket the server closed during the hold.
    pub closed_by_server: u64,
    /// `error` messages received.
    pub errors: u64,
}

type Ws = WebSocketStream<TcpStream>;

struct Shared {
    start: Instant,
    rtt: Mutex<Histogram<u64>>,
    join: Mutex<Histogram<u64>>,
    timeouts_seen: Mutex<u64>,
    closed: Mutex<u64>,
    errors: Mutex<u64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
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

fn emit(v: Value) {
    println!("{v}");
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
        let shared = Arc::new(Shared {
            start: Instant::now(),
            rtt: Mutex::new(histogram()),
            join: Mutex::new(histogram()),
            timeouts_seen: Mutex::new(0),
            closed: Mutex::new(0),
            errors: Mutex::new(0),
        });
        let (hold_tx, hold_rx) = watch::channel(false);
        let (joined, failed) = join_all(&spec, &shared, hold_rx).await;
        emit(json!({"event": "ready", "joined": joined, "failed": failed}));
        // Wait for `hold`, then `done` ... `exit`.
        while let Some(line) = stdin.next_line().await? {
            match line.trim() {
                "hold" => {
                    let _ = hold_tx.send(true);
                }
                "report" => {
                    let report = WorkerReport {
                        joined,
                        join_failed: failed,
                        join_hist: encode_hist(&shared.join.lock().unwrap()),
                        rtt_hist: encode_hist(&shared.rtt.lock().unwrap()),
                        timeouts_seen: *shared.timeouts_seen.lock().unwrap(),
                        closed_by_server: *shared.closed.lock().unwrap(),
                        errors: *shared.errors.lock().unwrap(),
                    };
                    emit(json!({"event": "report", "report": report}));
                }
                "exit" => break,
                _ => {}
            }
        }
        Ok(())
    })
}

/// Connects and joins every member of every planned session (hosts first in each session).
async fn join_all(
    spec: &WorkerSpec,
    shared: &Arc<Shared>,
    hold: watch::Receiver<bool>,
) -> (u64, u64) {
    let limit = Arc::new(Semaphore::new(spec.concurrency.max(1)));
    let mut joined = 0u64;
    let mut failed = 0u64;
    let mut n = 0usize;
    let mut last_progress = Instant::now();
    for session in &spec.sessions {
        // The host must be in before its members.
        let mut pending = Vec::new();
        for i in 0..session.members {
            let source = spec.sources[n % spec.sources.len()];
            n += 1;
            let device = format!("{}-{}-{i}", spec.tag, session.id);
            let kind = if i == 0 { "host" } else { "client" };
            let permit = limit.clone().acquire_owned().await.expect("semaphore");
            let fut = join_one(
                spec.clone(),
                source,
                session.id.clone(),
                device,
                kind,
                shared.clone(),
            );
            if i == 0 {
                let r = fut.await;
                drop(permit);
                match r {
                    Ok(ws) => {
                        joined += 1;
                        tokio::spawn(keep_alive(
                            ws,
                            spec.interval_ms,
                            shared.clone(),
                            hold.clone(),
                        ));
                    }
                    Err(_) => failed += 1,
                }
            } else {
                let shared2 = shared.clone();
                let hold2 = hold.clone();
                let interval = spec.interval_ms;
                pending.push(tokio::spawn(async move {
                    let r = fut.await;
                    drop(permit);
                    match r {
                        Ok(ws) => {
                            tokio::spawn(keep_alive(ws, interval, shared2, hold2));
                            true
                        }
                        Err(_) => false,
                    }
                }));
            }
        }
        for p in pending {
            if p.await.unwrap_or(false) {
                joined += 1;
            } else {
                failed += 1;
            }
        }
        if last_progress.elapsed() > Duration::from_millis(500) {
            last_progress = Instant::now();
            emit(json!({"event": "progress", "joined": joined, "failed": failed}));
        }
    }
    (joined, failed)
}

async fn join_one(
    spec: WorkerSpec,
    source: IpAddr,
    session: String,
    device: String,
    kind: &'static str,
    shared: Arc<Shared>,
) -> anyhow::Result<Ws> {
    let started = Instant::now();
    let socket = if spec.addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(source, 0))?;
    let tcp = socket.connect(spec.addr).await?;
    tcp.set_nodelay(true)?;
    let (mut ws, _) = ClientBuilder::new()
        .uri(&format!("ws://{}{}", spec.addr, spec.path))?
        .connect_on(tcp)
        .await?;
    let join = json!({"type": "join", "timestamp": 0, "sessionId": session,
        "deviceInfo": {"id": device, "name": device, "type": kind}});
    ws.send(Message::text(join.to_string())).await?;
    let mut got_list = false;
    while !got_list {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .context("join timed out")?
            .context("closed during join")??;
        if let Some(text) = msg.as_text() {
            let v: Value = serde_json::from_str(text)?;
            match v["type"].as_str() {
                Some("member_list") => got_list = true,
                Some("error") => anyhow::bail!("join rejected: {v}"),
                _ => {}
            }
        }
    }
    let us = started.elapsed().as_micros() as u64;
    let _ = shared.join.lock().unwrap().record(us.max(1));
    Ok(ws)
}

/// Heartbeat and ping every interval (random phase), record pong RTTs once the hold starts.
async fn keep_alive(
    mut ws: Ws,
    interval_ms: u64,
    shared: Arc<Shared>,
    mut hold: watch::Receiver<bool>,
) {
    let phase = Duration::from_millis(fastrand::u64(0..interval_ms.max(1)));
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + phase,
        Duration::from_millis(interval_ms),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut recording = *hold.borrow();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now_us = shared.start.elapsed().as_micros() as u64;
                let hb = Message::text(r#"{"type":"heartbeat"}"#.to_string());
                let ping = Message::text(format!(r#"{{"type":"ping","timestamp":{now_us}}}"#));
                if ws.feed(hb).await.is_err() || ws.send(ping).await.is_err() {
                    break;
                }
            }
            changed = hold.changed(), if !recording => {
                if changed.is_err() { break; }
                recording = *hold.borrow();
            }
            msg = ws.next() => {
                let Some(Ok(msg)) = msg else {
                    if recording { *shared.closed.lock().unwrap() += 1; }
                    break;
                };
                let Some(text) = msg.as_text() else { continue };
                let Ok(v) = serde_json::from_str::<Value>(text) else { continue };
                match v["type"].as_str() {
                    Some("pong") if recording => {
                        if let Some(sent) = v["timestamp"].as_u64() {
                            let now_us = shared.start.elapsed().as_micros() as u64;
                            let _ = shared.rtt.lock().unwrap().record(now_us.saturating_sub(sent).max(1));
                        }
                    }
                    Some("member_left") if v["reason"] == "timeout" => {
                        *shared.timeouts_seen.lock().unwrap() += 1;
                    }
                    Some("error") => *shared.errors.lock().unwrap() += 1,
                    Some("session_closed") | Some("kicked") => {
                        if recording { *shared.closed.lock().unwrap() += 1; }
                        break;
                    }
                    _ => {}
                }
            }
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
}
