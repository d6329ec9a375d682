//! The admin event stream, `GET /v1/events`, against a real server on loopback: the events of
//! a scripted flow in order with their fields, reconnection with `Last-Event-ID` (exactly the
//! missed events, then live ones), `reset` for an id it cannot replay from, the admin access
//! rule, keep-alive comments, a slow subscriber cut off without touching another, and `stats`.
//!
//! The stream is read off a raw socket (chunked transfer decoded here), so the tests see the
//! exact bytes the server wrote.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use loudsync_protocol::client::merge_tokens;
use loudsync_protocol::ClientMessage;
use loudsync_server::ServerConfig;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Test settings with quiet timers: no `stats` or keep-alive unless a test asks.
fn config() -> ServerConfig {
    ServerConfig {
        events_stats_interval: Duration::from_secs(600),
        events_keepalive: Duration::from_secs(600),
        resume_window: Duration::from_secs(5),
        heartbeat_timeout: Duration::from_secs(30),
        ..test_config()
    }
}

/// One event as read: its `id`, `event` and parsed `data`.
#[derive(Debug, Clone)]
struct Ev {
    id: String,
    kind: String,
    data: Value,
}

/// An open `/v1/events` stream.
struct Events {
    tcp: TcpStream,
    raw: Vec<u8>,
    body: Vec<u8>,
    ended: bool,
    status: u16,
    head: String,
}

impl Events {
    async fn open(addr: SocketAddr, last_event_id: Option<&str>) -> Events {
        Self::request(addr, last_event_id, None).await
    }

    async fn request(addr: SocketAddr, last_event_id: Option<&str>, token: Option<&str>) -> Events {
        let tcp = TcpStream::connect(addr).await.unwrap();
        Self::open_on(tcp, last_event_id, token).await
    }

    async fn open_on(
        mut tcp: TcpStream,
        last_event_id: Option<&str>,
        token: Option<&str>,
    ) -> Events {
        let mut request = String::from(
            "GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n",
        );
        if let Some(id) = last_event_id {
            request.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        if let Some(token) = token {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        request.push_str("\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut e = Events {
            tcp,
            raw: Vec::new(),
            body: Vec::new(),
            ended: false,
            status: 0,
            head: String::new(),
        };
        tokio::time::timeout(WAIT, e.read_head())
            .await
            .expect("a head in time");
        e
    }

    async fn fill(&mut self) -> bool {
        let mut b = [0u8; 16 * 1024];
        match self.tcp.read(&mut b).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.raw.extend_from_slice(&b[..n]);
                true
            }
        }
    }

    async fn read_head(&mut self) {
        loop {
            if let Some(pos) = find(&self.raw, b"\r\n\r\n") {
                self.head = String::from_utf8(self.raw[..pos].to_vec())
                    .unwrap()
                    .to_lowercase();
                self.raw.drain(..pos + 4);
                self.status = self.head[9..12].parse().unwrap();
                return;
            }
            assert!(self.fill().await, "ended before the head");
        }
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    }

    /// Moves complete chunks from `raw` to `body`; `false` once the last chunk was seen.
    fn dechunk(&mut self) -> bool {
        loop {
            let Some(pos) = find(&self.raw, b"\r\n") else {
                return true;
            };
            let line = String::from_utf8(self.raw[..pos].to_vec()).unwrap();
            let size = usize::from_str_radix(line.trim(), 16).expect("a chunk size");
            if self.raw.len() < pos + 2 + size + 2 {
                return true;
            }
            let data: Vec<u8> = self.raw.drain(..pos + 2 + size + 2).collect();
            if size == 0 {
                return false;
            }
            self.body.extend_from_slice(&data[pos + 2..pos + 2 + size]);
        }
    }

    /// The next block (event or comment) exactly as written, or `None` at the end.
    async fn next_block_untimed(&mut self) -> Option<String> {
        loop {
            if let Some(pos) = find(&self.body, b"\n\n") {
                let block: Vec<u8> = self.body.drain(..pos + 2).collect();
                return Some(String::from_utf8(block).expect("UTF-8"));
            }
            if self.ended {
                return None;
            }
            let had = self.body.len();
            if !self.dechunk() {
                self.ended = true;
                continue;
            }
            if self.body.len() > had {
                continue;
            }
            if !self.fill().await {
                self.ended = true;
            }
        }
    }

    async fn next_block(&mut self) -> String {
        tokio::time::timeout(WAIT, self.next_block_untimed())
            .await
            .expect("a block in time")
            .expect("the stream ended")
    }

    /// The next event (comments skipped, `stats` too unless `with_stats`).
    async fn next_of(&mut self, with_stats: bool) -> Ev {
        loop {
            let block = self.next_block().await;
            if block.starts_with(':') {
                continue;
            }
            let ev = parse(&block);
            if ev.kind == "stats" && !with_stats {
                continue;
            }
            return ev;
        }
    }

    async fn next(&mut self) -> Ev {
        self.next_of(false).await
    }

    /// The next event, which must be of `kind`.
    async fn expect(&mut self, kind: &str) -> Ev {
        let ev = self.next().await;
        assert_eq!(ev.kind, kind, "{ev:?}");
        ev
    }

    /// Asserts the stream ends (no pause of [`WAIT`] before) and returns the events before
    /// the end.
    async fn until_end(&mut self) -> Vec<Ev> {
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout(WAIT, self.next_block_untimed()).await {
                Ok(Some(block)) if block.starts_with(':') => {}
                Ok(Some(block)) => seen.push(parse(&block)),
                Ok(None) => return seen,
                Err(_) => panic!(
                    "the stream did not end after {} events, the last {:?}",
                    seen.len(),
                    seen.last()
                ),
            }
        }
    }

    /// Asserts no event but `stats` and comments comes for `d`.
    async fn expect_quiet(&mut self, d: Duration) {
        if let Ok(ev) = tokio::time::timeout(d, self.next()).await {
            panic!("expected quiet, got {ev:?}");
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `id: I\nevent: K\ndata: D\n\n`, in that exact form.
fn parse(block: &str) -> Ev {
    let lines: Vec<&str> = block.trim_end_matches('\n').split('\n').collect();
    assert_eq!(lines.len(), 3, "not id/event/data: {block:?}");
    let id = lines[0].strip_prefix("id: ").expect(block).to_string();
    let kind = lines[1].strip_prefix("event: ").expect(block).to_string();
    let data = serde_json::from_str(lines[2].strip_prefix("data: ").expect(block)).expect(block);
    Ev { id, kind, data }
}

/// The number in `<stream>-<n>`.
fn num(id: &str) -> u64 {
    id.rsplit_once('-').unwrap().1.parse().unwrap()
}

fn stream_of(id: &str) -> &str {
    id.rsplit_once('-').unwrap().0
}

/// Opens a stream and reads its `hello`.
async fn subscribe(addr: SocketAddr, last: Option<&str>) -> (Events, Ev) {
    let mut e = Events::open(addr, last).await;
    assert_eq!(e.status, 200, "{}", e.head);
    assert_eq!(
        e.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    assert_eq!(e.header("cache-control").as_deref(), Some("no-cache"));
    let hello = e.expect("hello").await;
    (e, hello)
}

async fn create(base: &str, id: &str) {
    let (status, body) = post(base, json!({"name": format!("{id} name"), "id": id})).await;
    assert_eq!(status, 201, "{body}");
}

async fn delete(base: &str, id: &str) -> u16 {
    reqwest::Client::new()
        .delete(format!("{base}/v1/sessions/{id}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A fresh local token of the resume handshake.
fn local_token() -> String {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..32)
        .map(|_| ALNUM[fastrand::usize(..ALNUM.len())] as char)
        .collect()
}

/// The resume handshake on `c`: the connection token.
async fn handshake(c: &mut Client) -> String {
    let b = local_token();
    let token = |t: &str| ClientMessage::Token {
        token: t.to_string(),
        last_seq: None,
    };
    c.send(&token(&b)).await;
    let a = c.recv_type("token").await["token"]
        .as_str()
        .unwrap()
        .to_string();
    c.send(&token(&b)).await;
    c.recv_type("token").await;
    merge_tokens(&a, &b)
}

#[tokio::test]
async fn a_scripted_flow_gives_every_event_in_order_with_its_fields() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let (mut events, hello) = subscribe(addr, None).await;
    assert_eq!(num(&hello.id), 0, "{hello:?}");
    assert_eq!(hello.data["stream"], stream_of(&hello.id));
    let stream = stream_of(&hello.id).to_string();

    // The host opens the session by joining it.
    let (mut host, w, _) = join(addr, "FLOW", "host-dev", "host").await;
    let host_id = w["clientId"].as_str().unwrap().to_string();
    // A resumable member.
    let mut b = Client::connect(addr).await;
    let token_b = handshake(&mut b).await;
    b.send(&join_msg("FLOW", "dev-b", "client")).await;
    let b_id = b.recv_type("welcome").await["clientId"]
        .as_str()
        .unwrap()
        .to_string();
    host.recv_type("member_joined").await;
    // A plain member, kicked by the host.
    let (mut c, w, _) = join(addr, "FLOW", "dev-c", "client").await;
    let c_id = w["clientId"].as_str().unwrap().to_string();
    host.recv_type("member_joined").await;
    host.send(&ClientMessage::Kick {
        member_id: c_id.clone(),
        reason: Some("bye".into()),
    })
    .await;
    assert_eq!(c.recv_type("kicked").await["reason"], "bye");
    host.recv_type("member_left").await;
    // B's socket is cut; B resumes on a new one.
    drop(b);
    host.recv_type("member_updated").await;
    let mut b = Client::connect(addr).await;
    b.send(&ClientMessage::Token {
        token: token_b.clone(),
        last_seq: Some(0),
    })
    .await;
    b.recv_type("token").await;
    let next_seq = b.recv_type("resumed").await["lastSeq"].as_u64().unwrap() + 1;
    host.recv_type("member_updated").await;
    // The host hands control to B, who accepts.
    host.send(&ClientMessage::HandoffRequest {
        target_id: Some(b_id.clone()),
    })
    .await;
    let request = b.recv_until("handoff_request").await;
    let accept = ClientMessage::HandoffAccept {
        handoff_id: request["handoffId"].as_str().unwrap().to_string(),
    };
    let frame =
        loudsync_protocol::encode_client_numbered(&accept, unix_ms(), Some(next_seq)).unwrap();
    b.send_text(&frame).await;
    b.recv_until("host_changed").await;
    // The administrator closes the session.
    assert_eq!(delete(&http(&server), "FLOW").await, 204);

    let mut seen = Vec::new();
    for _ in 0..11 {
        seen.push(events.next().await);
    }
    let kinds: Vec<&str> = seen.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "session_opened",
            "member_joined",
            "member_joined",
            "member_joined",
            "member_left",
            "member_updated",
            "member_updated",
            "resume",
            "handoff",
            "host_changed",
            "session_closed",
        ],
        "{seen:#?}"
    );
    events.expect_quiet(Duration::from_millis(200)).await;
    // Numbered 1, 2, 3, ... in this process's stream.
    for (i, e) in seen.iter().enumerate() {
        assert_eq!(e.id, format!("{stream}-{}", i + 1), "{e:?}");
        assert!(e.data["at"].is_u64(), "{e:?}");
    }
    let d = |i: usize| &seen[i].data;
    assert_eq!(d(0)["session"], "FLOW");
    assert_eq!(d(0)["name"], "host-dev name's session");
    assert_eq!(d(0)["hostId"], Value::Null);
    for (i, id, device, is_host) in [
        (1, &host_id, "host-dev", true),
        (2, &b_id, "dev-b", false),
        (3, &c_id, "dev-c", false),
    ] {
        assert_eq!(d(i)["session"], "FLOW");
        let m = &d(i)["member"];
        assert_eq!(m["id"], id.as_str(), "{m}");
        assert_eq!(m["name"], format!("{device} name"));
        assert_eq!(m["deviceId"], device);
        assert_eq!(m["dialect"], "loudsync");
        assert_eq!(m["isHost"], is_host);
    }
    assert_eq!(d(4)["memberId"], c_id.as_str());
    assert_eq!(d(4)["reason"], "kicked");
    assert_eq!(d(5)["member"]["id"], b_id.as_str());
    assert_eq!(d(5)["member"]["connectionStatus"], "reconnecting");
    assert_eq!(d(6)["member"]["connectionStatus"], "connected");
    assert_eq!(d(7)["outcome"], "resumed");
    assert_eq!(d(7)["memberId"], b_id.as_str());
    assert_eq!(d(7)["session"], "FLOW");
    assert_eq!(d(8)["outcome"], "started");
    assert_eq!(d(8)["hostId"], host_id.as_str());
    assert_eq!(d(8)["targetId"], b_id.as_str());
    assert_eq!(d(9)["hostId"], b_id.as_str());
    assert_eq!(d(9)["previousHostId"], host_id.as_str());
    assert_eq!(d(9)["term"], 2);
    assert_eq!(d(9)["reason"], "handoff");
    assert_eq!(d(10)["session"], "FLOW");
    assert_eq!(
        d(10)["reason"],
        "Session closed by the server administrator"
    );
}

#[tokio::test]
async fn the_scripted_flow_kinds_are_exact() {
    // The same flow, shorter, with the whole list of kinds compared at once.
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let (mut events, _) = subscribe(addr, None).await;
    let (mut host, _, _) = join(addr, "K", "host-dev", "host").await;
    let (mut c, w, _) = join(addr, "K", "dev-c", "client").await;
    host.recv_type("member_joined").await;
    c.send(&ClientMessage::Leave { reason: None }).await;
    host.recv_type("member_left").await;
    host.send(&ClientMessage::HandoffRequest { target_id: None })
        .await;
    host.recv_type("handoff_failed").await;
    host.send(&ClientMessage::Leave { reason: None }).await;
    let mut kinds = Vec::new();
    let mut last = None;
    for _ in 0..6 {
        let e = events.next().await;
        kinds.push(e.kind.clone());
        last = Some(e);
    }
    assert_eq!(
        kinds,
        [
            "session_opened",
            "member_joined",
            "member_joined",
            "member_left",
            "handoff",
            "session_closed"
        ]
    );
    assert_eq!(last.unwrap().data["reason"], "Host ended the session");
    let _ = w;
}

#[tokio::test]
async fn last_event_id_replays_exactly_the_missed_events_then_live_ones() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let base = http(&server);
    let (mut first, _) = subscribe(addr, None).await;
    create(&base, "R1").await;
    let seen = first.expect("session_opened").await;
    drop(first);
    // Missed while away (the server keeps recording for events-linger).
    create(&base, "R2").await;
    assert_eq!(delete(&base, "R1").await, 204);
    let (mut again, hello) = subscribe(addr, Some(&seen.id)).await;
    assert_eq!(hello.id, seen.id, "hello carries the position resumed from");
    let a = again.expect("session_opened").await;
    assert_eq!(a.data["session"], "R2");
    assert_eq!(num(&a.id), num(&seen.id) + 1);
    let b = again.expect("session_closed").await;
    assert_eq!(b.data["session"], "R1");
    assert_eq!(num(&b.id), num(&seen.id) + 2);
    // Then live.
    create(&base, "R3").await;
    let c = again.expect("session_opened").await;
    assert_eq!(c.data["session"], "R3");
    assert_eq!(num(&c.id), num(&seen.id) + 3);
    again.expect_quiet(Duration::from_millis(200)).await;

    // Up to date: nothing replayed, then live.
    let (mut current, hello) = subscribe(addr, Some(&c.id)).await;
    assert_eq!(hello.id, c.id);
    create(&base, "R4").await;
    assert_eq!(current.expect("session_opened").await.data["session"], "R4");
}

#[tokio::test]
async fn an_unknown_malformed_or_too_old_id_gets_reset_first() {
    let server = start_with(ServerConfig {
        events_history: 2,
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let base = http(&server);
    let (mut watcher, hello) = subscribe(addr, None).await;
    let stream = stream_of(&hello.id).to_string();
    let mut last = 0;
    for id in ["T1", "T2", "T3", "T4"] {
        create(&base, id).await;
        last = num(&watcher.expect("session_opened").await.id);
    }
    for (i, (given, reason)) in [
        ("zzzz-3".to_string(), "other_stream"),
        ("3".to_string(), "malformed"),
        // Not visible ASCII (obs-text bytes): malformed too, not taken for no id at all.
        (format!("{stream}-3\u{e9}"), "malformed"),
        (format!("{stream}-1"), "too_old"),
        (format!("{stream}-99"), "ahead"),
    ]
    .into_iter()
    .enumerate()
    {
        let (mut e, hello) = subscribe(addr, Some(&given)).await;
        assert_eq!(hello.id, format!("{stream}-{last}"), "{given}");
        let reset = e.expect("reset").await;
        assert_eq!(reset.data["reason"], reason, "{given}");
        assert_eq!(reset.data["reload"], "/v1/sessions");
        assert_eq!(reset.id, format!("{stream}-{last}"));
        // Then live.
        create(&base, &format!("L{i}{reason}")).await;
        let next = e.expect("session_opened").await;
        last = num(&watcher.expect("session_opened").await.id);
        assert_eq!(num(&next.id), last);
        assert_eq!(next.data["session"], format!("L{i}{reason}"));
    }
    // Still within the ring (history 2: events 8 and 9 kept): replayed from 7.
    let (mut e, _) = subscribe(addr, Some(&format!("{stream}-7"))).await;
    assert_eq!(num(&e.expect("session_opened").await.id), 8);
}

#[tokio::test]
async fn after_the_linger_without_subscribers_a_returning_client_resets() {
    let server = start_with(ServerConfig {
        events_linger: Duration::from_millis(100),
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let base = http(&server);
    let (mut e, _) = subscribe(addr, None).await;
    create(&base, "G1").await;
    let seen = e.expect("session_opened").await;
    drop(e);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !server.state().events.observing(),
        "nobody listens: nothing recorded"
    );
    create(&base, "G2").await; // unseen
    let (mut e, _) = subscribe(addr, Some(&seen.id)).await;
    assert_eq!(e.expect("reset").await.data["reason"], "too_old");
    create(&base, "G3").await;
    let live = e.expect("session_opened").await;
    assert_eq!(live.data["session"], "G3");
    assert_eq!(
        num(&live.id),
        num(&seen.id) + 1,
        "unrecorded events take no number"
    );
}

#[tokio::test]
async fn the_stream_needs_the_admin_token_when_one_is_set() {
    let server = start_with(ServerConfig {
        admin_token: Some("s3cret".into()),
        ..config()
    })
    .await;
    let addr = server.local_addr();
    for token in [None, Some("wrong")] {
        let r = Events::request(addr, None, token).await;
        assert_eq!(r.status, 401, "{token:?}: {}", r.head);
        assert!(
            r.header("content-type")
                .unwrap()
                .starts_with("application/json"),
            "{}",
            r.head
        );
    }
    let mut ok = Events::request(addr, None, Some("s3cret")).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.next().await.kind, "hello");
    assert_eq!(server.state().events.subscribers(), 1);
}

#[tokio::test]
async fn keep_alive_comments_come_at_the_configured_interval() {
    let server = start_with(ServerConfig {
        events_keepalive: Duration::from_millis(100),
        ..config()
    })
    .await;
    let (mut e, _) = subscribe(server.local_addr(), None).await;
    let start = Instant::now();
    let mut at = Vec::new();
    while at.len() < 5 {
        let block = e.next_block().await;
        assert_eq!(block, ": keep-alive\n\n");
        at.push(start.elapsed());
    }
    let elapsed = at[4];
    assert!(
        elapsed >= Duration::from_millis(480) && elapsed < Duration::from_millis(1500),
        "{at:?}"
    );
}

#[tokio::test]
async fn stats_counters_rise() {
    let server = start_with(ServerConfig {
        events_stats_interval: Duration::from_millis(100),
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let (mut e, hello) = subscribe(addr, None).await;
    let first = e.next_of(true).await;
    assert_eq!(first.kind, "stats");
    assert_eq!(first.id, hello.id, "stats carries the current position");
    for key in [
        "connections",
        "sessions",
        "members",
        "joins",
        "framesIn",
        "framesOut",
        "slowConsumerDrops",
        "heartbeatTimeouts",
        "resumes",
        "resumeFailures",
        "subscribers",
    ] {
        assert!(first.data[key].is_number(), "{key}: {first:?}");
    }
    assert_eq!(first.data["joins"], 0);
    let (mut clients, _) = party(addr, "S", 2).await;
    clients[0].send(&message(json!({"n": 1}), None)).await;
    clients[1].recv_type("message").await;
    let stats = loop {
        let ev = e.next_of(true).await;
        if ev.kind == "stats" && ev.data["framesIn"].as_u64().unwrap() >= 4 {
            break ev;
        }
    };
    assert_eq!(stats.data["joins"], 3);
    assert_eq!(stats.data["members"], 3);
    assert_eq!(stats.data["sessions"], 1);
    assert_eq!(stats.data["connections"], 3);
    assert!(stats.data["framesOut"].as_u64().unwrap() >= 6, "{stats:?}");
    assert_eq!(stats.data["subscribers"], 1);
    assert_eq!(
        num(&stats.id),
        4,
        "after session_opened and 3 joins: {stats:?}"
    );
}

#[tokio::test]
async fn a_slow_subscriber_is_cut_off_with_overflow_and_the_other_is_not() {
    let server = start_with(ServerConfig {
        events_buffer: 256,
        rate_limit: 0,
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let base = http(&server);
    // The slow one reads nothing (and offers a tiny window).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let mut slow = Events::open_on(tcp, None, None).await;
    assert_eq!(slow.status, 200);
    let (fast, _) = subscribe(addr, None).await;
    // The fast one reads everything as it comes, in its own task.
    let read = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn({
        let read = read.clone();
        async move {
            let mut fast = fast;
            let mut got = Vec::new();
            let mut done = done_rx;
            loop {
                tokio::select! {
                    e = fast.next() => {
                        got.push(e);
                        read.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    _ = &mut done => return got,
                }
            }
        }
    });
    // A member alone in its session (no one to send its updates to) toggles its readiness:
    // one `member_updated` of some 500 bytes each, thousands of them quickly.
    create(&base, "SPAM").await;
    let long = "y".repeat(250);
    let mut m = Client::connect(addr).await;
    m.send(&ClientMessage::join(
        "SPAM",
        "dev-spam",
        long.clone(),
        device_type("client"),
    ))
    .await;
    m.recv_type("welcome").await;
    m.recv_type("member_list").await;
    const N: usize = 20_000;
    let mut sent = 2; // session_opened, member_joined
    for batch in 0..N / 100 {
        for i in 0..100 {
            m.send(&ClientMessage::HandoffReady {
                ready: (batch * 100 + i) % 2 == 0,
            })
            .await;
        }
        sent += 100;
        // The fast one is never more than a batch behind.
        let deadline = Instant::now() + WAIT;
        while read.load(std::sync::atomic::Ordering::Relaxed) < sent {
            assert!(Instant::now() < deadline, "the fast subscriber fell behind");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    done_tx.send(()).unwrap();
    let got = reader.await.unwrap();
    assert_eq!(got.len(), N + 2);
    for (i, e) in got.iter().enumerate() {
        assert_eq!(num(&e.id), i as u64 + 1, "{e:?}");
    }
    assert!(got[2..].iter().all(|e| e.kind == "member_updated"));
    // Now the slow one reads: what fitted in the pipes, then `overflow`, then the end.
    let seen = slow.until_end().await;
    let last = seen.last().expect("events");
    assert_eq!(
        last.kind,
        "overflow",
        "{:?}",
        &seen[seen.len().saturating_sub(3)..]
    );
    assert_eq!(last.data["reason"], "too_slow");
    assert_eq!(last.data["buffer"], 256);
    assert!(seen.len() < N, "it was cut off: {} events", seen.len());
    // What it did get before the cut was in order, without a gap.
    for (i, e) in seen[1..seen.len() - 1].iter().enumerate() {
        assert_eq!(num(&e.id), i as u64 + 1, "{e:?}");
    }
    assert_eq!(server.state().events.subscribers(), 0);
    // The member, its session and the server are unaffected.
    m.assert_alive().await;
    let (mut again, _) = subscribe(addr, None).await;
    create(&base, "AFTER").await;
    assert_eq!(
        again.expect("session_opened").await.data["session"],
        "AFTER"
    );
}

#[tokio::test]
async fn shutdown_ends_the_stream_with_shutdown() {
    let server = start_with(config()).await;
    let (mut e, _) = subscribe(server.local_addr(), None).await;
    let stop = tokio::spawn(server.shutdown());
    let rest = e.until_end().await;
    assert_eq!(
        rest.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["shutdown"]
    );
    stop.await.unwrap();
}

/// `POST {base}{path}` with a raw body: the status and the JSON answer (`null` if none).
async fn post_raw(base: &str, path: &str, body: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_admin_kick_removes_a_member_who_gets_kicked() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let base = http(&server);
    let (mut events, _) = subscribe(addr, None).await;
    let (mut cs, ids) = party(addr, "KICK", 2).await;
    for _ in 0..4 {
        events.next().await; // session_opened, 3 joins
    }
    let path = |m: &str| format!("/v1/sessions/KICK/members/{m}/kick");
    let (status, _) = post_raw(&base, &path(&ids[1]), r#"{"reason":"spam"}"#).await;
    assert_eq!(status, 204);
    assert_eq!(cs[1].recv_type("kicked").await["reason"], "spam");
    let (_, ended) = cs[1].recv_end().await;
    assert_eq!(ended, Ended::Close(1000, "kicked".into()));
    let left = cs[0].recv_type("member_left").await;
    assert_eq!(left["reason"], "kicked");
    assert_eq!(left["memberId"], ids[1].as_str());
    let ev = events.expect("member_left").await;
    assert_eq!(ev.data["memberId"], ids[1].as_str());
    assert_eq!(ev.data["reason"], "kicked");
    // Without a body: the default reason.
    let (status, _) = post_raw(&base, &path(&ids[2]), "").await;
    assert_eq!(status, 204);
    assert_eq!(
        cs[2].recv_until("kicked").await["reason"],
        "Removed by the server administrator"
    );
    // Refusals.
    for (p, body, status, code) in [
        (path(&ids[1]), "", 404, "member_not_found"),
        (path(&ids[0]), "", 409, "is_host"),
        (
            "/v1/sessions/NOPE/members/x/kick".to_string(),
            "",
            404,
            "session_not_found",
        ),
        (path(&ids[0]), r#"{"why":"x"}"#, 400, "invalid_request"),
        (path(&ids[0]), "{", 400, "invalid_request"),
    ] {
        let (got, v) = post_raw(&base, &p, body).await;
        assert_eq!(
            (got, v["code"].as_str()),
            (status, Some(code)),
            "{p} {body}: {v}"
        );
        assert!(v["message"].is_string(), "{v}");
    }
    assert_eq!(
        cs[0].recv_type("member_left").await["memberId"],
        ids[2].as_str()
    );
    cs[0].assert_alive().await;
}

#[tokio::test]
async fn the_admin_handoff_goes_through_the_handoff_layer() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let base = http(&server);
    let (mut events, _) = subscribe(addr, None).await;
    let (mut cs, ids) = party(addr, "HAND", 2).await;
    for _ in 0..4 {
        events.next().await;
    }
    let body = |t: &str| json!({"targetId": t}).to_string();
    let (status, v) = post_raw(&base, "/v1/sessions/HAND/handoff", &body(&ids[1])).await;
    assert_eq!(status, 202, "{v}");
    let handoff_id = v["handoffId"].as_str().unwrap().to_string();
    assert_eq!(v["targetId"], ids[1].as_str());
    let started = cs[0].recv_type("handoff_started").await;
    assert_eq!(started["handoffId"], handoff_id.as_str());
    let request = cs[1].recv_type("handoff_request").await;
    assert_eq!(request["handoffId"], handoff_id.as_str());
    // While it is pending: busy.
    let (status, v) = post_raw(&base, "/v1/sessions/HAND/handoff", &body(&ids[2])).await;
    assert_eq!((status, v["code"].as_str()), (409, Some("busy")), "{v}");
    cs[1]
        .send(&ClientMessage::HandoffAccept {
            handoff_id: handoff_id.clone(),
        })
        .await;
    let changed = cs[2].recv_type("host_changed").await;
    assert_eq!(changed["hostId"], ids[1].as_str());
    let ev = events.expect("handoff").await;
    assert_eq!(ev.data["outcome"], "started");
    let ev = events.expect("host_changed").await;
    assert_eq!(ev.data["hostId"], ids[1].as_str());
    assert_eq!(ev.data["reason"], "handoff");
    // Refusals.
    for (target, raw, status, code) in [
        (Some(ids[1].as_str()), None, 409, "is_host"),
        (Some("c_nobody"), None, 404, "member_not_found"),
        (None, Some("{}"), 400, "invalid_request"),
        (None, Some(""), 400, "invalid_request"),
    ] {
        let b = raw.map_or_else(|| body(target.unwrap()), str::to_string);
        let (got, v) = post_raw(&base, "/v1/sessions/HAND/handoff", &b).await;
        assert_eq!((got, v["code"].as_str()), (status, Some(code)), "{b}: {v}");
    }
    let (got, v) = post_raw(&base, "/v1/sessions/NOPE/handoff", &body("x")).await;
    assert_eq!((got, v["code"].as_str()), (404, Some("session_not_found")));
    // A session without a host.
    create(&base, "HOSTLESS").await;
    let (_c, w, _) = join(addr, "HOSTLESS", "dev-h", "client").await;
    let id = w["clientId"].as_str().unwrap();
    let (got, v) = post_raw(&base, "/v1/sessions/HOSTLESS/handoff", &body(id)).await;
    assert_eq!((got, v["code"].as_str()), (409, Some("no_host")), "{v}");
}

#[tokio::test]
async fn get_one_session_shows_devices_dialects_and_the_state() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let (mut cs, ids) = party(addr, "VIEW", 1).await;
    cs[0]
        .send(&ClientMessage::StateSet {
            change: loudsync_protocol::StateChange::Replace(
                json!({"song": 3}).as_object().unwrap().clone(),
            ),
            base_version: None,
            term: None,
        })
        .await;
    cs[1].recv_type("state").await;
    let got: Value = reqwest::get(format!("{}/v1/sessions/VIEW", http(&server)))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["state"], json!({"song": 3}), "{got}");
    assert_eq!(got["version"], 1);
    assert_eq!(got["term"], 1);
    let m = &got["members"];
    assert_eq!(m[0]["id"], ids[0].as_str());
    assert_eq!(m[0]["deviceId"], "host-dev");
    assert_eq!(m[0]["dialect"], "loudsync");
    assert_eq!(m[0]["isHost"], true);
    assert_eq!(m[1]["deviceId"], "dev-0");
    assert_eq!(m[1]["connectionStatus"], "connected");
    assert_eq!(m[1]["handoffReady"], false);
    // The list stays as it was: no state, no devices.
    let list: Value = reqwest::get(format!("{}/v1/sessions", http(&server)))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(list["sessions"][0].get("state").is_none(), "{list}");
    assert!(list["sessions"][0]["members"][0].get("deviceId").is_none());
}

#[tokio::test]
async fn a_stream_outlives_the_request_timeout() {
    let server = start_with(ServerConfig {
        request_timeout: Duration::from_millis(200),
        events_keepalive: Duration::from_millis(100),
        ..config()
    })
    .await;
    let (mut e, _) = subscribe(server.local_addr(), None).await;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(900) {
        assert_eq!(e.next_block().await, ": keep-alive\n\n");
    }
    create(&http(&server), "LATE").await;
    assert_eq!(e.expect("session_opened").await.data["session"], "LATE");
}

#[tokio::test]
async fn a_resume_with_a_token_that_leads_nowhere_is_a_resume_failed_event() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let (mut e, _) = subscribe(addr, None).await;
    let mut c = Client::connect(addr).await;
    c.send(&ClientMessage::Token {
        token: format!("{}{}", local_token(), local_token()),
        last_seq: Some(0),
    })
    .await;
    assert_eq!(
        c.recv_type("resume_failed").await["reason"],
        "unknown_token"
    );
    let ev = e.expect("resume").await;
    assert_eq!(ev.data["outcome"], "resume_failed");
    assert_eq!(ev.data["reason"], "unknown_token");
    assert_eq!(ev.data["session"], Value::Null);
    assert_eq!(ev.data["memberId"], Value::Null);
}
