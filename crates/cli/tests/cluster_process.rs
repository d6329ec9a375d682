//! Cluster mode (issue 16) with real processes: three `loudsync serve` nodes over one real
//! `redis-server`, SDK clients (`loudsync-client`) as members, and nodes treated the way the
//! world treats them: killed with `SIGKILL` (a crash: a member node, the owner), frozen with
//! `SIGSTOP` past the owner's lease and woken with `SIGCONT` (a long pause: the woken owner must
//! write nothing more, which the test checks in the outbound stream in Redis with
//! `redis-cli`), and restarted one after the other with `SIGTERM` on the same address (a
//! rolling restart).
//!
//! How it works: each node is a child process started with `--listen 127.0.0.1:0` and short
//! cluster timers (lease 1 s, poll 50 ms, heartbeat timeout 1 s); its address is read from the
//! first stdout line (`loudsync listening on http://ADDR`). A resumable member that must move
//! to another node when its node dies connects through a [`Forwarder`]: a TCP relay whose
//! target can be changed, so the SDK's resume lands on a surviving node. Every client's events
//! are pumped into a shared log; waits poll that log until a deadline. Members send numbered
//! messages (`{"sender":..,"n":..}`) and [`check_logs`] compares what each member received
//! with what the senders were told was sent: each message exactly once, in order.

#[path = "../../server/tests/common/redis.rs"]
mod redis;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loudsync_client::machine::Event;
use loudsync_client::{Client, ClientConfig};
use loudsync_protocol::{ConnectionStatus, LeaveReason};
use loudsync_server::cluster::keys::{parse_owner, SessionKeys};
use redis::{RedisOptions, RedisServer};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};

/// The lease of every node in these tests.
const LEASE: Duration = Duration::from_secs(1);

/// The server's heartbeat timeout in these tests.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a wait that is not a timing assertion may take.
const LONG: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------------------------

/// One `loudsync serve` process in cluster mode.
struct Node {
    child: Child,
    addr: SocketAddr,
}

impl Node {
    /// Starts node `id` on the Redis at `url`, listening on `listen` (`127.0.0.1:0` for any
    /// port); returns once it printed its address.
    fn start(url: &str, id: &str, listen: &str) -> Node {
        Node::try_start(url, id, listen).unwrap_or_else(|e| panic!("node {id}: {e}"))
    }

    /// As [`Node::start`], but answers why the node did not come up (e.g. its port is still
    /// taken) instead of panicking; the failed process is reaped.
    fn try_start(url: &str, id: &str, listen: &str) -> Result<Node, String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_loudsync"))
            .arg("serve")
            .args(["--listen", listen, "--log", "warn"])
            .args(["--redis", url, "--node-id", id])
            .args(["--lease", "1s", "--cluster-poll", "50ms"])
            .args([
                "--heartbeat-timeout",
                "1s",
                "--heartbeat-check-interval",
                "100ms",
            ])
            .args(["--resume-window", "10s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn loudsync");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let addr = match line
            .trim()
            .strip_prefix("loudsync listening on http://")
            .map(str::parse)
        {
            Some(Ok(addr)) => addr,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("unexpected first line {line:?}"));
            }
        };
        // Keep draining stdout so a later line never blocks or breaks the node.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = stdout.read_to_end(&mut sink);
        });
        Ok(Node { child, addr })
    }

    /// Starts node `id` again on `addr` (the address it had), retrying for a while if the
    /// port is not free again yet.
    fn restart(url: &str, id: &str, addr: SocketAddr) -> Node {
        let deadline = Instant::now() + LONG;
        loop {
            match Node::try_start(url, id, &addr.to_string()) {
                Ok(node) => {
                    assert_eq!(node.addr, addr, "node {id} came back elsewhere");
                    return node;
                }
                Err(e) if Instant::now() >= deadline => panic!("node {id} not back: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// `ws://ADDR/`.
    fn ws(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Sends `signal` to the process.
    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({signal})");
    }

    /// `SIGKILL`, and reaps the process.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (bounded) for the process to exit (after a `SIGTERM`), and reaps it.
    fn wait_exit(&mut self) {
        let deadline = Instant::now() + LONG;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            assert!(Instant::now() < deadline, "node did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // A stopped node must be woken to die cleanly; then kill it. Only a process not yet
        // reaped is signalled (a reaped pid may belong to someone else by now).
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: as in `signal`.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGCONT) };
        }
        self.kill9();
    }
}

/// A Redis and three nodes `a`, `b`, `c` on it.
fn cluster() -> (RedisServer, Vec<Node>) {
    let redis = RedisServer::start(RedisOptions::default());
    let nodes = ["a", "b", "c"]
        .iter()
        .map(|id| Node::start(&redis.url(), id, "127.0.0.1:0"))
        .collect();
    (redis, nodes)
}

/// A blocking `METHOD path` with an optional JSON body: the status and the JSON answer.
fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut tcp = std::net::TcpStream::connect(addr).expect("connect for HTTP");
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {answer:?}"));
    let (head, payload) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let payload = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(payload)
    } else {
        payload.to_string()
    };
    (
        status,
        serde_json::from_str(&payload).unwrap_or(Value::Null),
    )
}

/// The body of a chunked HTTP/1.1 answer.
fn dechunk(mut text: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = text.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        text = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// The member ids in node `addr`'s admin view of `session`, if it has one.
fn view_members(addr: SocketAddr, session: &str) -> Option<Vec<String>> {
    let (status, view) = http(addr, "GET", &format!("/v1/sessions/{session}"), None);
    (status == 200).then(|| {
        view["members"]
            .as_array()
            .map(|members| {
                members
                    .iter()
                    .filter_map(|m| m["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// `redis-cli -p PORT ARGS...`: its standard output (raw: one value a line), panicking if it
/// fails.
fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8 from redis-cli")
}

/// `(node, epoch)` of `session`'s `owner` key in the Redis on `port`, if it has one.
fn owner_of(port: u16, session: &str) -> Option<(String, u64)> {
    let keys = SessionKeys::new(session);
    parse_owner(redis_cli(port, &["GET", &keys.owner]).trim())
}

/// Every entry of `session`'s outbound stream as `(entry id, epoch of its writer)`, in stream
/// order. An entry is one field `b`, the batch's JSON, whose `e` is the writer's epoch.
fn outbound_epochs(port: u16, session: &str) -> Vec<(String, u64)> {
    let keys = SessionKeys::new(session);
    let text = redis_cli(port, &["XRANGE", &keys.outbound, "-", "+"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len() % 3, 0, "not id/field/value triples: {text}");
    lines
        .chunks(3)
        .map(|entry| {
            assert_eq!(entry[1], "b", "an outbound entry's field: {entry:?}");
            let batch: Value = serde_json::from_str(entry[2]).expect("a batch's JSON");
            let epoch = batch["e"]
                .as_u64()
                .unwrap_or_else(|| panic!("no epoch: {batch}"));
            (entry[0].to_string(), epoch)
        })
        .collect()
}

/// Compares two stream entry ids (`MS-SEQ`) numerically.
fn stream_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().expect("ms"), seq.parse().expect("seq"))
}

// ---------------------------------------------------------------------------------------------
// The forwarder
// ---------------------------------------------------------------------------------------------

/// A TCP relay on a loopback port whose target can change: new connections go to the
/// current target, existing ones stay where they are until they end.
struct Forwarder {
    addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
}

impl Forwarder {
    /// Listens on `127.0.0.1:0` and forwards to `target`.
    async fn start(target: SocketAddr) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = Arc::new(Mutex::new(target));
        let current = target.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = *current.lock().unwrap();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Forwarder { addr, target }
    }

    /// `ws://ADDR/` of the relay.
    fn ws(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// New connections go to `to` from now on.
    fn retarget(&self, to: SocketAddr) {
        *self.target.lock().unwrap() = to;
    }
}

// ---------------------------------------------------------------------------------------------
// Clients and their logs
// ---------------------------------------------------------------------------------------------

/// An SDK client and every event it produced, in order.
struct Member {
    name: String,
    client: Client,
    events: Arc<Mutex<Vec<Event>>>,
    /// The `n` of every message this client was told was sent (`send` returned `Ok`).
    sent: Vec<u64>,
}

/// Client settings for these tests: heartbeats well inside the 1 s server timeout, and
/// reconnections that keep trying for a while.
fn tune(mut config: ClientConfig, resumable: bool) -> ClientConfig {
    config.resume = resumable;
    config.heartbeat_interval = Duration::from_millis(200);
    config.silence_timeout = Duration::from_secs(3);
    config.resume_window = Duration::from_secs(10);
    config.reconnect.attempts = 20;
    config.jitter_seed = 7;
    config
}

/// [`tune`] for a resumable member that also tries again quickly (200 ms between attempts,
/// not the SDK's 2 s), so a member moved by a restart is back within a few hundred ms.
fn quick(config: ClientConfig) -> ClientConfig {
    let mut config = tune(config, true);
    config.reconnect.delay = Duration::from_millis(200);
    config
}

impl Member {
    /// Connects `config` and starts pumping its events; returns once it is welcomed.
    async fn connect(name: &str, config: ClientConfig) -> Member {
        let (client, mut events) = Client::connect(config).await.expect("client connects");
        let log = Arc::new(Mutex::new(Vec::new()));
        let pump = log.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                pump.lock().unwrap().push(event);
            }
        });
        let member = Member {
            name: name.to_string(),
            client,
            events: log,
            sent: Vec::new(),
        };
        member
            .wait_for("welcome", LONG, |e| matches!(e, Event::Welcome { .. }))
            .await;
        member
    }

    /// This member's id in the session.
    fn id(&self) -> String {
        self.client.client_id().expect("welcomed")
    }

    /// Polls the event log until `matches` holds for one event; panics after `within`.
    async fn wait_for(&self, what: &str, within: Duration, matches: impl Fn(&Event) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            if self.events.lock().unwrap().iter().any(&matches) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no {what} within {within:?}; events: {:?}",
                self.name,
                self.events.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// How many events in the log `matches` holds for.
    fn count(&self, matches: impl Fn(&Event) -> bool) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches(e))
            .count()
    }

    /// Sends message number `n` to everyone else and records it as sent if accepted.
    fn send_numbered(&mut self, n: u64) {
        if self
            .client
            .send(json!({ "sender": self.name, "n": n }))
            .is_ok()
        {
            self.sent.push(n);
        }
    }

    /// The `n`s received from `sender`, in arrival order.
    fn received_from(&self, sender: &str) -> Vec<u64> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::Message { data, .. } if data["sender"] == sender => data["n"].as_u64(),
                _ => None,
            })
            .collect()
    }
}

/// [`traffic`] among all of `members`, numbered from `*next` on; `*next` moves past them.
async fn batch(members: &mut [Member], next: &mut u64, count: u64) {
    let mut all: Vec<&mut Member> = members.iter_mut().collect();
    traffic(&mut all, *next, count).await;
    *next += count;
}

/// Waits until every member received from every other member exactly what it was told was
/// sent, each once and in order; panics with the first difference after `within`.
async fn check_logs(members: &[&Member], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let mut difference = None;
        for receiver in members {
            for sender in members {
                if sender.name == receiver.name {
                    continue;
                }
                let got = receiver.received_from(&sender.name);
                if got != sender.sent {
                    difference = Some(format!(
                        "{} from {}: sent {:?}, received {:?}",
                        receiver.name, sender.name, sender.sent, got
                    ));
                }
            }
        }
        match difference {
            None => return,
            Some(d) if Instant::now() >= deadline => panic!("logs differ: {d}"),
            Some(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}

/// Each member sends `count` numbered messages starting at `first`, round robin, with a short
/// pause between rounds so traffic spans whatever happens meanwhile.
async fn traffic(members: &mut [&mut Member], first: u64, count: u64) {
    for n in first..first + count {
        for m in members.iter_mut() {
            m.send_numbered(n);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// A node holding only members dies: its plain member leaves with `timeout`, its resumable
/// one turns `reconnecting`, within a lease plus the heartbeat timeout plus a second; no node's
/// admin view keeps the plain one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_member_node_removes_plain_members_and_marks_resumable_ones() {
    let (_redis, mut nodes) = cluster();
    let host = Member::connect(
        "host",
        tune(
            ClientConfig::host(nodes[0].ws(), "kmn", "Kill", "dev-h", "Host"),
            true,
        ),
    )
    .await;
    let plain = Member::connect(
        "plain",
        tune(
            ClientConfig::member(nodes[1].ws(), "kmn", "dev-p", "Plain"),
            false,
        ),
    )
    .await;
    let resumable = Member::connect(
        "resumable",
        tune(
            ClientConfig::member(nodes[1].ws(), "kmn", "dev-r", "Res"),
            true,
        ),
    )
    .await;
    let (plain_id, resumable_id) = (plain.id(), resumable.id());
    host.wait_for(
        "both joins",
        LONG,
        |e| matches!(e, Event::MemberJoined(m) if m.id == resumable_id),
    )
    .await;

    nodes[1].kill9();
    let bound = LEASE + HEARTBEAT_TIMEOUT + Duration::from_secs(1);
    host.wait_for("plain member_left timeout", bound, |e| {
        matches!(e, Event::MemberLeft { member_id, reason: LeaveReason::Timeout } if *member_id == plain_id)
    })
    .await;
    host.wait_for("resumable reconnecting", bound, |e| {
        matches!(e, Event::MemberUpdated(m)
            if m.id == resumable_id && m.connection_status == ConnectionStatus::Reconnecting)
    })
    .await;

    for node in [&nodes[0], &nodes[2]] {
        let deadline = Instant::now() + LONG;
        loop {
            let members = view_members(node.addr, "kmn");
            if members
                .as_ref()
                .is_some_and(|m| !m.contains(&plain_id) && m.contains(&host.id()))
            {
                break;
            }
            assert!(Instant::now() < deadline, "ghost in the view: {members:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    let (status, list) = http(nodes[2].addr, "GET", "/v1/sessions", None);
    assert_eq!(status, 200, "{list}");
    assert!(
        !list.to_string().contains(&plain_id),
        "the plain member is still listed: {list}"
    );
}

/// The owner node dies: the session is taken over within a lease plus a second, members on
/// the surviving nodes keep messaging, a resumable member of the dead node resumes on another
/// through the forwarder, and every log has each message once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_owner_node_loses_nothing() {
    let (_redis, mut nodes) = cluster();
    let (status, body) = http(
        nodes[0].addr,
        "POST",
        "/v1/sessions",
        Some(&json!({"id": "own", "name": "Owned by a", "hostDeviceId": "dev-h"})),
    );
    assert_eq!(status, 201, "{body}");
    let forwarder = Forwarder::start(nodes[0].addr).await;
    let mut host = Member::connect(
        "host",
        tune(
            ClientConfig::host(nodes[1].ws(), "own", "Owned", "dev-h", "Host"),
            true,
        ),
    )
    .await;
    let mut on_c = Member::connect(
        "on_c",
        tune(
            ClientConfig::member(nodes[2].ws(), "own", "dev-c", "C"),
            true,
        ),
    )
    .await;
    let mut moving = Member::connect(
        "moving",
        tune(
            ClientConfig::member(forwarder.ws(), "own", "dev-m", "Moving"),
            true,
        ),
    )
    .await;
    let moving_id = moving.id();
    host.wait_for(
        "the moving member's join",
        LONG,
        |e| matches!(e, Event::MemberJoined(m) if m.id == moving_id),
    )
    .await;
    traffic(&mut [&mut host, &mut on_c, &mut moving], 0, 20).await;
    check_logs(&[&host, &on_c, &moving], LONG).await;

    forwarder.retarget(nodes[1].addr);
    nodes[0].kill9();
    let killed = Instant::now();
    // The first message after the kill reaches c once the new owner runs the session.
    host.send_numbered(1000);
    let deadline = killed + LEASE + Duration::from_secs(1);
    loop {
        if on_c.received_from("host").contains(&1000) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not taken over within {:?}",
            LEASE + Duration::from_secs(1)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    traffic(&mut [&mut host, &mut on_c, &mut moving], 1001, 30).await;
    moving
        .wait_for("resumed", LONG, |e| matches!(e, Event::Resumed { .. }))
        .await;
    traffic(&mut [&mut host, &mut on_c, &mut moving], 2000, 20).await;
    check_logs(&[&host, &on_c, &moving], LONG).await;
}

/// The owner node is frozen (`SIGSTOP`) for longer than its lease, then woken (`SIGCONT`):
/// another node takes the session over within a lease plus two seconds and members on the
/// other nodes keep messaging; the woken node writes nothing more for the session (every
/// outbound entry after the wake has the new owner's epoch, and the stream's epochs never go
/// back) and closes the socket it held; that member resumes on another node through its
/// forwarder, and what it sent while its node was frozen is delivered; every log has each
/// message once and in order. The close is 1012 (service restart), as for any node that finds
/// it lost a session's lease: the heartbeats that waited in the socket during the freeze are
/// read before the overdue heartbeat deadline is acted on (`ws_pump.rs`), so the pause is not
/// charged to the member as a `1000 heartbeat timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_owner_that_wakes_writes_nothing_more_and_its_member_resumes_elsewhere() {
    let (redis, nodes) = cluster();
    let (status, body) = http(
        nodes[0].addr,
        "POST",
        "/v1/sessions",
        Some(&json!({"id": "stp", "name": "Owned by a", "hostDeviceId": "dev-h"})),
    );
    assert_eq!(status, 201, "{body}");
    let forwarder = Forwarder::start(nodes[0].addr).await;
    let mut host = Member::connect(
        "host",
        quick(ClientConfig::host(
            nodes[1].ws(),
            "stp",
            "Owned",
            "dev-h",
            "Host",
        )),
    )
    .await;
    let mut on_c = Member::connect(
        "on_c",
        quick(ClientConfig::member(nodes[2].ws(), "stp", "dev-c", "C")),
    )
    .await;
    // It must not give its socket up by itself while `a` is frozen: the close has to come from
    // the woken node.
    let mut config = quick(ClientConfig::member(
        forwarder.ws(),
        "stp",
        "dev-m",
        "Moving",
    ));
    config.silence_timeout = Duration::from_secs(30);
    let mut moving = Member::connect("moving", config).await;
    let moving_id = moving.id();
    host.wait_for(
        "the moving member's join",
        LONG,
        |e| matches!(e, Event::MemberJoined(m) if m.id == moving_id),
    )
    .await;
    traffic(&mut [&mut host, &mut on_c, &mut moving], 0, 20).await;
    check_logs(&[&host, &on_c, &moving], LONG).await;
    let (first_owner, old_epoch) = owner_of(redis.port(), "stp").expect("an owner");
    assert_eq!(first_owner, "a", "the session was created on a");

    forwarder.retarget(nodes[1].addr);
    nodes[0].signal(libc::SIGSTOP);
    let stopped = Instant::now();
    // The first message after the stop reaches c once another node runs the session.
    host.send_numbered(1000);
    let bound = LEASE + Duration::from_secs(2);
    loop {
        if on_c.received_from("host").contains(&1000) {
            break;
        }
        assert!(
            Instant::now() < stopped + bound,
            "not taken over within {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took_over = stopped.elapsed();
    let (new_owner, new_epoch) = owner_of(redis.port(), "stp").expect("an owner");
    assert_ne!(new_owner, "a", "still owned by the frozen node");
    assert!(new_epoch > old_epoch, "epoch {old_epoch} -> {new_epoch}");
    // Traffic among the others until the freeze has lasted well past the lease; the frozen
    // node's member sends too: its frames wait in the socket until `a` wakes.
    let mut n = 1001;
    while stopped.elapsed() < LEASE + Duration::from_millis(1500) {
        host.send_numbered(n);
        on_c.send_numbered(n);
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for k in 0..5 {
        moving.send_numbered(1000 + k);
    }
    let last_before_wake = outbound_epochs(redis.port(), "stp")
        .last()
        .map(|(id, _)| id.clone())
        .expect("outbound entries");
    let closes_before = moving.count(|e| matches!(e, Event::ConnectionLost { .. }));
    assert_eq!(
        closes_before, 0,
        "moving lost its socket while a was frozen"
    );
    nodes[0].signal(libc::SIGCONT);
    let woken = Instant::now();

    moving
        .wait_for("its socket closed", LONG, |e| {
            matches!(e, Event::ConnectionLost { .. })
        })
        .await;
    moving
        .wait_for(
            "its socket closed with 1012",
            Duration::ZERO,
            |e| matches!(e, Event::ConnectionLost { reason } if reason.contains("(1012")),
        )
        .await;
    moving
        .wait_for("resumed", LONG, |e| matches!(e, Event::Resumed { .. }))
        .await;
    let resumed_after = woken.elapsed();
    traffic(&mut [&mut host, &mut on_c, &mut moving], 2000, 20).await;
    check_logs(&[&host, &on_c, &moving], LONG).await;

    // Fencing: the owner is still the new one, the stream's epochs never go back, and nothing
    // the woken node could have written after it woke is there.
    assert_eq!(
        owner_of(redis.port(), "stp"),
        Some((new_owner.clone(), new_epoch)),
        "the owner changed again"
    );
    let entries = outbound_epochs(redis.port(), "stp");
    for pair in entries.windows(2) {
        assert!(
            pair[0].1 <= pair[1].1,
            "epochs go back in the outbound stream: {pair:?}"
        );
    }
    let first_new = entries
        .iter()
        .position(|(_, epoch)| *epoch == new_epoch)
        .expect("the new owner wrote");
    assert!(
        entries[first_new..].iter().all(|(_, e)| *e == new_epoch),
        "an entry of another epoch after the new owner's first: {:?}",
        &entries[first_new..]
    );
    let after_wake: Vec<_> = entries
        .iter()
        .filter(|(id, _)| stream_id(id) > stream_id(&last_before_wake))
        .collect();
    assert!(!after_wake.is_empty(), "nothing written after the wake");
    assert!(
        after_wake.iter().all(|(_, e)| *e == new_epoch),
        "written after the wake by another epoch than {new_epoch}: {after_wake:?}"
    );
    eprintln!(
        "taken over by {new_owner} (epoch {old_epoch} -> {new_epoch}) {took_over:?} after the \
         stop; moving resumed {resumed_after:?} after the wake; {} outbound entries",
        entries.len()
    );
}

/// A rolling restart: each node in turn is stopped with `SIGTERM` (it hands its sessions over
/// and closes its sockets with 1012) and started again on the same address, under numbered
/// traffic (sent during the handover, while the node is down, and after it is back). The members it held resume on another node (their forwarders point there before
/// the stop), including the host; every member resumes at least once, and after each restart
/// every log has each message once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_node_loses_nothing() {
    let (redis, mut nodes) = cluster();
    let url = redis.url();
    let mut forwarders = Vec::new();
    for node in &nodes {
        forwarders.push(Forwarder::start(node.addr).await);
    }
    let mut members = vec![
        Member::connect(
            "host",
            quick(ClientConfig::host(
                forwarders[0].ws(),
                "roll",
                "Rolling",
                "dev-h",
                "Host",
            )),
        )
        .await,
        Member::connect(
            "on_b",
            quick(ClientConfig::member(
                forwarders[1].ws(),
                "roll",
                "dev-b",
                "B",
            )),
        )
        .await,
        Member::connect(
            "on_c",
            quick(ClientConfig::member(
                forwarders[2].ws(),
                "roll",
                "dev-c",
                "C",
            )),
        )
        .await,
    ];
    let last_id = members[2].id();
    members[0]
        .wait_for(
            "the last join",
            LONG,
            |e| matches!(e, Event::MemberJoined(m) if m.id == last_id),
        )
        .await;
    let resumes = |m: &Member| m.count(|e| matches!(e, Event::Resumed { .. }));
    let restart_closes = |m: &Member| {
        m.count(|e| matches!(e, Event::ConnectionLost { reason } if reason.contains("(1012 ")))
    };
    // Which node each member's forwarder sends new connections to.
    let mut at = [0, 1, 2];
    let mut next = 0;
    batch(&mut members, &mut next, 20).await;
    check_logs(&members.iter().collect::<Vec<_>>(), LONG).await;

    for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
        let to = (i + 1) % 3;
        let moving: Vec<usize> = (0..3).filter(|&m| at[m] == i).collect();
        let before: Vec<usize> = members.iter().map(resumes).collect();
        let closes_before: Vec<usize> = members.iter().map(restart_closes).collect();
        for &m in &moving {
            forwarders[m].retarget(nodes[to].addr);
            at[m] = to;
        }
        let addr = nodes[i].addr;
        // Traffic goes on while the node hands over, and while it is down (its members
        // resume elsewhere; what they send meanwhile waits in their clients).
        nodes[i].signal(libc::SIGTERM);
        batch(&mut members, &mut next, 20).await;
        tokio::task::block_in_place(|| nodes[i].wait_exit());
        batch(&mut members, &mut next, 10).await;
        nodes[i] = tokio::task::block_in_place(|| Node::restart(&url, id, addr));
        for &m in &moving {
            let member = &members[m];
            let deadline = Instant::now() + LONG;
            while resumes(member) <= before[m] {
                assert!(
                    Instant::now() < deadline,
                    "{} did not resume after {id} restarted; events: {:?}",
                    member.name,
                    member.events.lock().unwrap()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(
                restart_closes(member) > closes_before[m],
                "{}: its socket was not closed with 1012; events: {:?}",
                member.name,
                member.events.lock().unwrap()
            );
        }
        for m in (0..3).filter(|m| !moving.contains(m)) {
            assert_eq!(
                restart_closes(&members[m]),
                closes_before[m],
                "{} lost its socket though its node did not restart",
                members[m].name
            );
        }
        batch(&mut members, &mut next, 10).await;
        check_logs(&members.iter().collect::<Vec<_>>(), LONG).await;
        eprintln!(
            "restarted {id}: moved {:?}; owner now {:?}",
            moving.iter().map(|&m| &members[m].name).collect::<Vec<_>>(),
            owner_of(redis.port(), "roll")
        );
    }
    for member in &members {
        assert!(resumes(member) >= 1, "{} never resumed", member.name);
    }
}
