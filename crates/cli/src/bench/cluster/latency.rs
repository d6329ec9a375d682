//! The latency phase of `bench cluster`: sessions whose members sit on the same node as the
//! session's owner, or spread over three nodes, exchange timestamped messages; each receiver
//! records the delay from the send, by where it sits (the sender's node, the owner's, a third
//! one). Every client is in this one process, so every instant comes from one clock.
//!
//! The figures per layout: the latency distribution, the CPU every process spent per
//! delivered message (net of what it spends idle over as long), and Redis commands per
//! message sent (also net of idle: lease renewals and polls).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use loudsync_protocol::{encode_client, ClientMessage, DeviceType, RawJson};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_websockets::Message;

use super::super::percentiles;
use super::super::worker::{
    connect_at, encode_hist, histogram, message_type, BenchDialect, WorkerSpec, Ws,
};
use super::procs::{Node, Redis};

/// Where a phase puts its members.
pub struct Layout {
    /// Its name in the report.
    pub name: &'static str,
    /// The node every host joins (and so the owner of every session).
    pub owner: SocketAddr,
    /// The node of each session's sender (its member 1).
    pub sender: SocketAddr,
    /// The nodes the other members join, round robin.
    pub members: Vec<SocketAddr>,
}

/// What the receivers record, shared by their tasks.
struct Recorder {
    base: Instant,
    by_place: Mutex<BTreeMap<&'static str, Histogram<u64>>>,
    delivered: AtomicU64,
}

impl Recorder {
    fn micros(&self) -> u64 {
        self.base.elapsed().as_micros() as u64
    }
}

/// A joined client: the frames for it to write.
struct Client {
    send: mpsc::UnboundedSender<String>,
}

/// Runs one layout: `sessions` sessions of `size` (host included), each sender writing
/// `rate` messages a second for `duration`. `processes` are the processes whose CPU counts.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    layout: &Layout,
    spec: &WorkerSpec,
    sessions: usize,
    size: usize,
    rate: f64,
    duration: Duration,
    nodes: &[&Node],
    redis: Option<&Redis>,
) -> anyhow::Result<Value> {
    let recorder = Arc::new(Recorder {
        base: Instant::now(),
        by_place: Mutex::new(BTreeMap::new()),
        delivered: AtomicU64::new(0),
    });
    let mut senders = Vec::new();
    let mut everyone = Vec::new();
    let mut n = 0u64;
    for s in 0..sessions {
        let key: String = layout
            .name
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        let session = format!("{}-{key}-{s}", spec.tag);
        for i in 0..size {
            let addr = match i {
                0 => layout.owner,
                1 => layout.sender,
                _ => layout.members[(i - 2) % layout.members.len()],
            };
            let place = place_of(addr, layout);
            let kind = if i == 0 {
                DeviceType::Host
            } else {
                DeviceType::Client
            };
            n += 1;
            let client = join(spec, addr, n, &session, kind, place, recorder.clone())
                .await
                .with_context(|| format!("{}: join {session} #{i}", layout.name))?;
            if i == 1 {
                senders.push(client.send.clone());
            }
            everyone.push(client);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Idle first, as long as the traffic will run: what renewals and polls cost.
    let cpu = |nodes: &[&Node]| -> (Duration, Duration) {
        (
            nodes.iter().map(|n| n.cpu()).sum(),
            redis.map_or(Duration::ZERO, Redis::cpu),
        )
    };
    let commands = || redis.and_then(|r| r.commands().ok()).unwrap_or(0);
    let calls = || redis.map(Redis::calls).unwrap_or_default();
    let (idle_calls0, idle_cpu0, idle_cmd0, idle_t0) =
        (calls(), cpu(nodes), commands(), Instant::now());
    tokio::time::sleep(duration).await;
    let (idle_cpu1, idle_cmd1, idle_wall) = (cpu(nodes), commands(), idle_t0.elapsed());
    let idle_calls1 = calls();

    let (calls0, cpu0, cmd0, t0) = (calls(), cpu(nodes), commands(), Instant::now());
    let ticks = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
    let mut every = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
    let mut sent = 0u64;
    for _ in 0..ticks {
        every.tick().await;
        for s in &senders {
            let t = recorder.micros();
            let data = RawJson::from_text(&format!(r#"{{"t":{t}}}"#)).expect("valid JSON");
            let frame = encode_client(&ClientMessage::message(data, None), 0)?;
            if s.send(frame).is_ok() {
                sent += 1;
            }
        }
    }
    let expected = sent * (size as u64 - 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while recorder.delivered.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (cpu1, cmd1, wall) = (cpu(nodes), commands(), t0.elapsed());
    let calls1 = calls();
    drop(senders);
    drop(everyone);

    let delivered = recorder.delivered.load(Ordering::Relaxed);
    let idle_scale = wall.as_secs_f64() / idle_wall.as_secs_f64().max(1e-9);
    let net = |busy: Duration, idle: Duration| {
        (busy.as_secs_f64() - idle.as_secs_f64() * idle_scale).max(0.0)
    };
    let nodes_cpu = net(cpu1.0 - cpu0.0, idle_cpu1.0 - idle_cpu0.0);
    let redis_cpu = net(cpu1.1 - cpu0.1, idle_cpu1.1 - idle_cpu0.1);
    let idle_cmds = (idle_cmd1 - idle_cmd0) as f64;
    let cmds = ((cmd1 - cmd0) as f64 - idle_cmds * idle_scale).max(0.0);
    let per = |x: f64, n: u64| x / n.max(1) as f64;
    let delta = |a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>, k: &str| {
        b.get(k).copied().unwrap_or(0) as f64 - a.get(k).copied().unwrap_or(0) as f64
    };
    let mut by_command = serde_json::Map::new();
    let mut idle_by_command = serde_json::Map::new();
    for k in idle_calls1.keys() {
        let x = delta(&idle_calls0, &idle_calls1, k) / idle_wall.as_secs_f64();
        if x >= 0.1 {
            idle_by_command.insert(k.clone(), json!(x.round()));
        }
    }
    for k in calls1.keys() {
        let busy = delta(&calls0, &calls1, k);
        let idle = delta(&idle_calls0, &idle_calls1, k) * idle_scale;
        let x = per((busy - idle).max(0.0), sent);
        if x >= 0.01 {
            by_command.insert(k.clone(), json!((x * 100.0).round() / 100.0));
        }
    }
    let mut all = histogram();
    let mut places = serde_json::Map::new();
    for (place, h) in recorder.by_place.lock().unwrap().iter() {
        all.add(h)?;
        places.insert(place.to_string(), percentiles(h));
    }
    Ok(json!({
        "layout": layout.name,
        "sessions": sessions,
        "session_size": size,
        "messages_sent": sent,
        "deliveries_expected": expected,
        "delivered": delivered,
        "latency": percentiles(&all),
        "hist": encode_hist(&all),
        "latency_by_receiver": places,
        "nodes_cpu_us_per_delivery": 1e6 * per(nodes_cpu, delivered),
        "redis_cpu_us_per_delivery": redis.map(|_| 1e6 * per(redis_cpu, delivered)),
        "redis_commands_per_message": redis.map(|_| per(cmds, sent)),
        "redis_calls_per_message_by_command": redis.map(|_| by_command),
        "redis_idle_calls_per_s_by_command": redis.map(|_| idle_by_command),
        "redis_sessions_while_idle": redis.map(|r| r.sessions()),
        "redis_commands_idle_per_s": redis.map(|_| idle_cmds / idle_wall.as_secs_f64()),
        "nodes_cpu_idle_percent": 100.0 * (idle_cpu1.0 - idle_cpu0.0).as_secs_f64() / idle_wall.as_secs_f64(),
    }))
}

/// Where a receiver on `addr` sits relative to the sender and the owner.
fn place_of(addr: SocketAddr, layout: &Layout) -> &'static str {
    match (addr == layout.sender, addr == layout.owner) {
        (true, true) => "sender's and owner's node",
        (false, true) => "owner's node",
        (true, false) => "sender's node",
        (false, false) => "third node",
    }
}

/// Connects client `n` to `addr`, joins `session` as `kind`, reads up to its `member_list`,
/// and starts its task.
async fn join(
    spec: &WorkerSpec,
    addr: SocketAddr,
    n: u64,
    session: &str,
    kind: DeviceType,
    place: &'static str,
    recorder: Arc<Recorder>,
) -> anyhow::Result<Client> {
    let (ws, device) = connect_and_join(spec, addr, n, session, kind).await?;
    let (send, frames) = mpsc::unbounded_channel();
    let interval = Duration::from_millis(spec.interval_ms.max(1));
    tokio::spawn(pump(ws, device, interval, frames, place, recorder));
    Ok(Client { send })
}

/// Connects client `n` to `addr` and joins `session` as `kind` (device `TAG-n`); returns
/// the socket once its `member_list` arrived, and the device id.
pub(super) async fn connect_and_join(
    spec: &WorkerSpec,
    addr: SocketAddr,
    n: u64,
    session: &str,
    kind: DeviceType,
) -> anyhow::Result<(Ws, String)> {
    let mut ws = connect_at(spec, addr, n).await?;
    let device = format!("{}-{n}", spec.tag);
    ws.send(Message::text(
        BenchDialect::Loudsync.join(session, &device, kind)?,
    ))
    .await?;
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
            Some("member_list") => return Ok((ws, device)),
            Some("error") => bail!("join rejected: {text}"),
            _ => {}
        }
    }
}

/// A client's task: heartbeats, writes what it is given, records every `message` it
/// receives. Ends (closing its socket) when its sender is dropped.
async fn pump(
    mut ws: Ws,
    device: String,
    interval: Duration,
    mut frames: mpsc::UnboundedReceiver<String>,
    place: &'static str,
    recorder: Arc<Recorder>,
) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            frame = frames.recv() => {
                let Some(frame) = frame else {
                    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close()).await;
                    return;
                };
                if ws.send(Message::text(frame)).await.is_err() {
                    return;
                }
            }
            _ = tick.tick() => {
                if ws.send(Message::text(BenchDialect::Loudsync.heartbeat(&device, 0))).await.is_err() {
                    return;
                }
            }
            msg = ws.next() => {
                let now = recorder.micros();
                let Some(Ok(msg)) = msg else { return };
                let Some(text) = msg.as_text() else { continue };
                if message_type(text) != Some("message") {
                    continue;
                }
                if let Some(t) = sent_at(text) {
                    let mut places = recorder.by_place.lock().unwrap();
                    let h = places.entry(place).or_insert_with(histogram);
                    let _ = h.record(now.saturating_sub(t).max(1));
                    recorder.delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// The send instant (µs) a bench message carries: its `data` is `{"t":N}`.
fn sent_at(text: &str) -> Option<u64> {
    const KEY: &str = "\"data\":{\"t\":";
    let rest = &text[text.find(KEY)? + KEY.len()..];
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_send_instant_is_read_from_the_message() {
        let frame = r#"{"type":"message","from":"c1","data":{"t":12345},"ts":0}"#;
        assert_eq!(sent_at(frame), Some(12345));
        assert_eq!(sent_at(r#"{"type":"message","data":{"x":1}}"#), None);
    }

    #[test]
    fn receivers_are_placed_by_sender_and_owner() {
        let [a, b, c]: [SocketAddr; 3] = [
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
            "127.0.0.1:3".parse().unwrap(),
        ];
        let layout = Layout {
            name: "cross",
            owner: a,
            sender: b,
            members: vec![b, c],
        };
        assert_eq!(place_of(a, &layout), "owner's node");
        assert_eq!(place_of(b, &layout), "sender's node");
        assert_eq!(place_of(c, &layout), "third node");
    }
}
