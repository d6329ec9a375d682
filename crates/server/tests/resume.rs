//! Issue 10, resumable connections, against a real server on loopback: the seed-003 token
//! handshake, the numbering both ways, acks, resume and its failures, and (through the
//! fault-injecting proxy of `common::proxy`) cuts at chosen points, mid-frame included, with
//! numbered traffic both ways: every message arrives exactly once, in order.
//!
//! The tests speak the raw wire (no SDK): `Member` is a resumable connection as a test drives
//! it by hand, `Peer` a small resumable client that resends after `resumed.lastSeq` and
//! dedupes by `seq`, for the fault tests.

mod common;

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::proxy::{Dir, Link, Proxy};
use common::*;
use futures_util::{SinkExt, StreamExt};
use loudsync_protocol::client::merge_tokens;
use loudsync_protocol::{
    app, close_code, encode_client, encode_client_numbered, ClientMessage, DeviceType,
};
use loudsync_server::ServerConfig;
use serde_json::{json, Value};
use tokio_websockets::Message;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Settings for the resume tests: short timers, a window long enough to resume in.
fn config() -> ServerConfig {
    ServerConfig {
        heartbeat_timeout: Duration::from_secs(2),
        resume_window: Duration::from_secs(2),
        resume_buffer_messages: 1000,
        resume_buffer_bytes: 1 << 20,
        ack_interval: Duration::from_secs(30),
        ack_every: 100,
        ..test_config()
    }
}

/// `config()` with this resume window.
fn with_window(window: Duration) -> ServerConfig {
    ServerConfig {
        resume_window: window,
        ..config()
    }
}

/// A fresh local token: 32 characters of `[A-Za-z0-9]`.
fn local_token() -> String {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..32)
        .map(|_| ALNUM[fastrand::usize(..ALNUM.len())] as char)
        .collect()
}

fn token_msg(token: &str, last_seq: Option<u64>) -> ClientMessage {
    ClientMessage::Token {
        token: token.to_string(),
        last_seq,
    }
}

/// The sorted keys of a JSON object.
fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
    k.sort();
    k
}

fn is_token_form(t: &str, len: usize) -> bool {
    t.len() == len && t.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Asserts `v` is `error` with this code and no `seq` (before `welcome`, or on a plain
/// connection).
fn assert_error_unnumbered(v: &Value, code: &str) {
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["code"], code, "{v}");
    assert!(v.get("seq").is_none(), "unnumbered expected: {v}");
    assert!(v["timestamp"].is_u64(), "{v}");
}

/// The four steps on `c`; checks every frame; returns (A, B, T).
async fn handshake(c: &mut Client) -> (String, String, String) {
    let b = local_token();
    c.send(&token_msg(&b, None)).await;
    let step2 = c.recv_type("token").await;
    assert_eq!(keys(&step2), ["timestamp", "token", "type"], "{step2}");
    let a = step2["token"].as_str().unwrap().to_string();
    assert!(is_token_form(&a, 32), "server token {a:?}");
    c.send(&token_msg(&b, None)).await;
    let step4 = c.recv_type("token").await;
    assert_eq!(keys(&step4), ["timestamp", "token", "type"], "{step4}");
    assert_eq!(step4["token"], a.as_str(), "the confirmation repeats A");
    let t = merge_tokens(&a, &b);
    // The rule, written out independently of the protocol crate: the smaller in byte order
    // first (so `Z` < `a`).
    let by_hand = if a.as_bytes() < b.as_bytes() {
        format!("{a}{b}")
    } else {
        format!("{b}{a}")
    };
    assert_eq!(t, by_hand);
    (a, b, t)
}

/// A resumable connection as a test drives it: checks the server's numbering on every frame
/// it reads and numbers what it sends.
struct Member {
    c: Client,
    token: String,
    id: String,
    /// The last server `seq` received.
    last: u64,
    /// The next client `seq`.
    next: u64,
}

impl Member {
    /// Checks the numbering of one server frame read on a resumable connection after
    /// `welcome`.
    fn number(&mut self, v: &Value) {
        let kind = v["type"].as_str().expect("a type");
        match kind {
            "pong" => {
                assert_eq!(
                    keys(v),
                    ["timestamp", "type"],
                    "pong keeps its two keys: {v}"
                )
            }
            "ack" => assert_eq!(keys(v), ["seq", "timestamp", "type"], "{v}"),
            "welcome" | "token" | "resumed" | "resume_failed" => {
                assert!(v.get("seq").is_none(), "{kind} is never numbered: {v}")
            }
            _ => {
                let seq = v["seq"].as_u64().unwrap_or_else(|| panic!("numbered: {v}"));
                assert_eq!(seq, self.last + 1, "server seq runs on by one: {v}");
                self.last = seq;
            }
        }
    }

    async fn recv(&mut self) -> Value {
        let v = self.c.recv().await;
        self.number(&v);
        v
    }

    /// The next frame exactly as written, numbering checked.
    async fn recv_raw(&mut self) -> (String, Value) {
        let raw = self.c.recv_raw().await;
        let v: Value = serde_json::from_str(&raw).unwrap();
        self.number(&v);
        (raw, v)
    }

    async fn recv_type(&mut self, kind: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(v["type"], kind, "expected `{kind}`, got {v}");
        assert!(v["timestamp"].is_u64(), "{v}");
        v
    }

    /// Sends `m`, numbered if it is of a numbered kind.
    async fn send(&mut self, m: &ClientMessage) {
        let seq = m.is_numbered().then(|| {
            self.next += 1;
            self.next - 1
        });
        let frame = encode_client_numbered(m, unix_ms(), seq).unwrap();
        self.c.send_text(&frame).await;
    }

    /// A `message` with `data`, numbered.
    async fn say(&mut self, data: Value) {
        self.send(&message(data, None)).await;
    }

    /// A `ping` whose `pong` is the very next frame: nothing (no `error`, no `ack`) was
    /// queued for this socket before it.
    async fn assert_nothing_queued(&mut self) {
        let ts = fastrand::u64(1..1_000_000);
        self.c.send(&ClientMessage::ping(ts)).await;
        let pong = self.recv().await;
        assert_eq!(pong["type"], "pong", "expected the pong first, got {pong}");
        assert_eq!(pong["timestamp"], ts);
    }

    /// Drops the socket: no close frame, the TCP connection just ends.
    fn drop_socket(self) -> Held {
        Held {
            token: self.token,
            id: self.id,
            last: self.last,
        }
    }
}

/// A member whose socket is gone, with what it needs to resume.
struct Held {
    token: String,
    id: String,
    last: u64,
}

impl Held {
    /// Resumes on a new socket with its real `lastSeq`: token echo, `resumed`; returns the
    /// member and the `resumed` frame (the replay is left to read).
    async fn resume(self, addr: SocketAddr) -> (Member, Value) {
        let c = Client::connect(addr).await;
        self.resume_on(c, None).await
    }

    /// Resumes on `c` with `last_seq` (default: the real one).
    async fn resume_on(self, mut c: Client, last_seq: Option<u64>) -> (Member, Value) {
        let last = last_seq.unwrap_or(self.last);
        c.send(&token_msg(&self.token, Some(last))).await;
        let echo = c.recv_type("token").await;
        assert_eq!(keys(&echo), ["timestamp", "token", "type"], "{echo}");
        assert_eq!(echo["token"], self.token.as_str(), "the confirmation is T");
        let resumed = c.recv_type("resumed").await;
        assert_eq!(
            keys(&resumed),
            ["lastSeq", "replayed", "timestamp", "type"],
            "{resumed}"
        );
        let m = resumed["lastSeq"].as_u64().unwrap();
        let member = Member {
            c,
            token: self.token,
            id: self.id,
            last,
            next: m + 1,
        };
        (member, resumed)
    }

    /// A resume on a new socket that must fail with `reason`; returns the socket (open).
    async fn resume_fails(&self, addr: SocketAddr, reason: &str) -> Client {
        resume_fails(addr, &self.token, self.last, reason).await
    }
}

/// A resume of `token` on a new socket that must fail with `reason`; the socket stays open.
async fn resume_fails(addr: SocketAddr, token: &str, last: u64, reason: &str) -> Client {
    let mut c = Client::connect(addr).await;
    c.send(&token_msg(token, Some(last))).await;
    let failed = c.recv_type("resume_failed").await;
    assert_eq!(failed["reason"], reason, "{failed}");
    assert_eq!(keys(&failed), ["reason", "timestamp", "type"], "{failed}");
    c.assert_alive().await;
    c
}

/// Handshake and `join` on `c`; checks `welcome.resumable` and `member_list` seq 1.
async fn rjoin_on(mut c: Client, session: &str, device: &str, kind: &str) -> (Member, Value) {
    let (_, _, t) = handshake(&mut c).await;
    c.send(&join_msg(session, device, kind)).await;
    let welcome = c.recv_type("welcome").await;
    assert_eq!(welcome["resumable"], true, "{welcome}");
    assert!(
        welcome.get("seq").is_none(),
        "welcome is unnumbered: {welcome}"
    );
    let mut m = Member {
        c,
        token: t,
        id: welcome["clientId"].as_str().unwrap().to_string(),
        last: 0,
        next: 1,
    };
    let list = m.recv_type("member_list").await;
    assert_eq!(list["seq"], 1, "{list}");
    (m, list)
}

/// A resumable member joined to `session`.
async fn rjoin(addr: SocketAddr, session: &str, device: &str, kind: &str) -> (Member, Value) {
    rjoin_on(Client::connect(addr).await, session, device, kind).await
}

/// A plain host of `session`, with its client id.
async fn plain_host(addr: SocketAddr, session: &str) -> (Client, String) {
    let (h, w, _) = join(addr, session, "host-dev", "host").await;
    (h, w["clientId"].as_str().unwrap().to_string())
}

/// The next `member_updated` on a plain connection: checks its form; returns the member.
async fn member_updated(c: &mut Client, id: &str, status: &str) -> Value {
    let v = c.recv_type("member_updated").await;
    assert_eq!(keys(&v), ["member", "timestamp", "type"], "{v}");
    assert_eq!(v["member"]["id"], id, "{v}");
    assert_eq!(v["member"]["connectionStatus"], status, "{v}");
    v["member"].clone()
}

/// Reads `c` while heartbeating it (the test waits longer than its heartbeat timeout might
/// allow) until a frame of `kind` arrives; fails on any other frame but `also`.
async fn await_beating(c: &mut Client, kind: &str, also: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        assert!(Instant::now() < deadline, "no `{kind}` in time");
        c.send(&ClientMessage::Heartbeat).await;
        if let Ok(v) = tokio::time::timeout(Duration::from_millis(100), c.recv()).await {
            if v["type"] == kind {
                return v;
            }
            assert!(
                also.contains(&v["type"].as_str().unwrap()),
                "unexpected {v} while waiting for `{kind}`"
            );
        }
    }
}

/// Heartbeats `c` for `d`, asserting it gets nothing meanwhile.
async fn beat_for(c: &mut Client, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        c.send(&ClientMessage::Heartbeat).await;
        c.expect_silence(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The handshake
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn four_step_handshake_then_join_is_resumable() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let mut c = Client::connect(addr).await;
    // The server sends nothing on a new socket before the client's first frame.
    c.expect_silence(Duration::from_millis(150)).await;
    let (a, b, t) = handshake(&mut c).await;
    assert_ne!(a, b);
    assert_eq!(t, merge_tokens(&a, &b));
    c.send(&join_msg("hs", "host-dev", "host")).await;
    let welcome = c.recv_type("welcome").await;
    assert_eq!(welcome["resumable"], true);
    assert!(welcome.get("seq").is_none());
    let list = c.recv_type("member_list").await;
    assert_eq!(list["seq"], 1);

    // Another handshake gets another server token (a CSPRNG, not a constant).
    let mut other = Client::connect(addr).await;
    let (a2, _, _) = handshake(&mut other).await;
    assert_ne!(a, a2);

    // T as both sides derive it is the token the server resumes.
    drop(c);
    let held = Held {
        token: t,
        id: welcome["clientId"].as_str().unwrap().into(),
        last: 1,
    };
    let (_m, resumed) = held.resume(addr).await;
    assert_eq!(resumed["lastSeq"], 0);
    assert_eq!(resumed["replayed"], 0, "{resumed}");
}

#[tokio::test]
async fn pipelined_join_gets_token_welcome_member_list_in_that_order() {
    let server = start_with(config()).await;
    let mut c = Client::connect(server.local_addr()).await;
    let b = local_token();
    c.send(&token_msg(&b, None)).await;
    let a = c.recv_type("token").await["token"]
        .as_str()
        .unwrap()
        .to_string();
    // Step 3 and the join back to back, step 4 unread.
    let step3 = encode_client(&token_msg(&b, None), unix_ms()).unwrap();
    let join = encode_client(&join_msg("pipe", "host-dev", "host"), unix_ms()).unwrap();
    c.send_text(&step3).await;
    c.send_text(&join).await;
    let step4 = c.recv_type("token").await;
    assert_eq!(step4["token"], a.as_str());
    let welcome = c.recv_type("welcome").await;
    assert_eq!(welcome["resumable"], true);
    let list = c.recv_type("member_list").await;
    assert_eq!(list["seq"], 1);
}

#[tokio::test]
async fn join_first_is_a_plain_connection_without_seq() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let (mut host, w, list) = join(addr, "plain", "host-dev", "host").await;
    assert!(w.get("resumable").is_none(), "{w}");
    assert!(list.get("seq").is_none(), "{list}");
    let (mut guest, _, glist) = join(addr, "plain", "g", "client").await;
    assert!(glist.get("seq").is_none());
    let joined = host.recv_type("member_joined").await;
    assert!(joined.get("seq").is_none(), "{joined}");
    guest.send(&message(json!({"n": 1}), None)).await;
    let msg = host.recv_type("message").await;
    assert!(msg.get("seq").is_none(), "{msg}");
    // An ack on a plain connection is invalid, as is any token frame after join.
    guest.send(&ClientMessage::Ack { seq: 1 }).await;
    assert_error_unnumbered(&guest.recv().await, "invalid_message");
    guest.send(&token_msg(&local_token(), None)).await;
    assert_error_unnumbered(&guest.recv().await, "invalid_message");
    guest.assert_alive().await;
}

#[tokio::test]
async fn malformed_tokens_get_invalid_message_and_the_socket_stays_open() {
    let server = start_with(config()).await;
    let mut c = Client::connect(server.local_addr()).await;
    let bad = [
        r#"{"type":"token","token":"short"}"#.to_string(),
        format!(r#"{{"type":"token","token":"{}"}}"#, "a".repeat(31)),
        format!(r#"{{"type":"token","token":"{}"}}"#, "a".repeat(33)),
        format!(r#"{{"type":"token","token":"{}-"}}"#, "a".repeat(31)),
        format!(r#"{{"type":"token","token":"{}é"}}"#, "a".repeat(31)),
        format!(r#"{{"type":"token","token":"{}_"}}"#, "a".repeat(63)),
        r#"{"type":"token","token":""}"#.to_string(),
        r#"{"type":"token","token":12345678901234567890123456789012}"#.to_string(),
        r#"{"type":"token"}"#.to_string(),
    ];
    for frame in &bad {
        c.send_text(frame).await;
        let v = c.recv().await;
        assert_error_unnumbered(&v, "invalid_message");
        c.assert_alive().await;
    }
    // The state is still OPEN: a valid step 1 is answered.
    handshake(&mut c).await;
}

#[tokio::test]
async fn preconnected_refuses_other_tokens_and_join_and_keeps_its_state() {
    let server = start_with(config()).await;
    let mut c = Client::connect(server.local_addr()).await;
    let b = local_token();
    c.send(&token_msg(&b, None)).await;
    let a = c.recv_type("token").await["token"]
        .as_str()
        .unwrap()
        .to_string();
    // Another local token, a join (before step 3), a resume frame: each refused.
    for m in [
        token_msg(&local_token(), None),
        join_msg("pre", "host-dev", "host"),
        token_msg(&merge_tokens(&a, &b), Some(0)),
        token_msg(&merge_tokens(&a, &b), None),
        ClientMessage::Ack { seq: 0 },
    ] {
        c.send(&m).await;
        assert_error_unnumbered(&c.recv().await, "invalid_message");
    }
    // Still PRECONNECTED: step 3 with B completes the handshake.
    c.send(&token_msg(&b, None)).await;
    assert_eq!(c.recv_type("token").await["token"], a.as_str());
    c.send(&join_msg("pre", "host-dev", "host")).await;
    assert_eq!(c.recv_type("welcome").await["resumable"], true);
    assert_eq!(c.recv_type("member_list").await["seq"], 1);
}

#[tokio::test]
async fn a_second_local_token_after_step_four_is_invalid_before_and_after_join() {
    let server = start_with(config()).await;
    let mut c = Client::connect(server.local_addr()).await;
    let (_, b, t) = handshake(&mut c).await;
    for token in [local_token(), b.clone()] {
        c.send(&token_msg(&token, None)).await;
        assert_error_unnumbered(&c.recv().await, "invalid_message");
    }
    // An ack before join is invalid too.
    c.send(&ClientMessage::Ack { seq: 0 }).await;
    assert_error_unnumbered(&c.recv().await, "invalid_message");
    c.send(&join_msg("again", "host-dev", "host")).await;
    let w = c.recv_type("welcome").await;
    assert_eq!(w["resumable"], true);
    let mut m = Member {
        c,
        token: t,
        id: w["clientId"].as_str().unwrap().into(),
        last: 0,
        next: 1,
    };
    m.recv_type("member_list").await;
    // After join: a 32-character token is invalid, numbered like every error after welcome.
    m.send(&token_msg(&b, None)).await;
    let e = m.recv_type("error").await;
    assert_eq!(e["code"], "invalid_message");
    assert_eq!(e["seq"], 2);
    m.assert_nothing_queued().await;
}

#[tokio::test]
async fn an_ack_before_join_is_invalid() {
    let server = start_with(config()).await;
    let mut c = Client::connect(server.local_addr()).await;
    c.send(&ClientMessage::Ack { seq: 1 }).await;
    assert_error_unnumbered(&c.recv().await, "invalid_message");
    c.assert_alive().await;
    // The socket is still OPEN for a handshake.
    handshake(&mut c).await;
}

// ---------------------------------------------------------------------------------------------
// Token frames on a new socket that are not a valid resume
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_connection_token_without_last_seq_on_a_new_socket_is_invalid() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let (mut host, _) = plain_host(addr, "nols").await;
    let (mut g, _) = rjoin(addr, "nols", "g", "client").await;
    host.recv_type("member_joined").await;
    let mut other = Client::connect(addr).await;
    other.send(&token_msg(&g.token, None)).await;
    assert_error_unnumbered(&other.recv().await, "invalid_message");
    other.assert_alive().await;
    // The member is untouched: still connected, nothing sent to anyone.
    g.assert_nothing_queued().await;
    g.say(json!({"n": 1})).await;
    assert_eq!(host.recv_type("message").await["data"], json!({"n": 1}));
}

#[tokio::test]
async fn a_resume_frame_that_is_not_the_first_frame_is_invalid() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let (mut host, _) = plain_host(addr, "late").await;
    let (g, _) = rjoin(addr, "late", "g", "client").await;
    host.recv_type("member_joined").await;
    let held = g.drop_socket();
    member_updated(&mut host, &held.id, "reconnecting").await;
    let mut c = Client::connect(addr).await;
    c.assert_alive().await; // a ping first
    c.send(&token_msg(&held.token, Some(held.last))).await;
    assert_error_unnumbered(&c.recv().await, "invalid_message");
    // The place is still held: a proper resume works.
    let (g, resumed) = held.resume(addr).await;
    assert_eq!(resumed["replayed"], 0);
    member_updated(&mut host, &g.id, "connected").await;
}

#[tokio::test]
async fn a_last_seq_above_what_was_sent_is_invalid_and_the_place_stays() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let (mut host, _) = plain_host(addr, "above").await;
    let (g, _) = rjoin(addr, "above", "g", "client").await;
    host.recv_type("member_joined").await;
    let held = g.drop_socket();
    member_updated(&mut host, &held.id, "reconnecting").await;
    let mut c = Client::connect(addr).await;
    c.send(&token_msg(&held.token, Some(held.last + 5))).await;
    assert_error_unnumbered(&c.recv().await, "invalid_message");
    c.assert_alive().await;
    let (g, resumed) = held.resume(addr).await;
    assert_eq!(
        (resumed["lastSeq"].as_u64(), resumed["replayed"].as_u64()),
        (Some(0), Some(0))
    );
    member_updated(&mut host, &g.id, "connected").await;
}

// ---------------------------------------------------------------------------------------------
// Numbering
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_server_frame_after_welcome_is_numbered_but_pong_and_ack() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let (mut host, host_id) = plain_host(addr, "num").await;
    let (mut g, list) = rjoin(addr, "num", "g", "client").await;
    assert_eq!(list["members"].as_array().unwrap().len(), 2);
    host.recv_type("member_joined").await;

    let (mut x, xw, _) = join(addr, "num", "x", "client").await;
    let x_id = xw["clientId"].as_str().unwrap().to_string();
    host.recv_type("member_joined").await;
    assert_eq!(g.recv_type("member_joined").await["seq"], 2);

    host.send(&message(json!({"track": 3}), None)).await;
    let m = g.recv_type("message").await;
    assert_eq!((m["seq"].as_u64(), &m["from"]), (Some(3), &json!(host_id)));
    x.recv_type("message").await;

    g.send(&ClientMessage::MemberList).await;
    assert_eq!(g.recv_type("member_list").await["seq"], 4);

    // Pong: unnumbered, the landed two keys (checked by `Member::number`).
    g.send(&ClientMessage::ping(42u64)).await;
    assert_eq!(g.recv_type("pong").await["timestamp"], 42);

    // An error (a guest may not kick) is numbered.
    g.send(&ClientMessage::kick(&x_id, None)).await;
    let e = g.recv_type("error").await;
    assert_eq!(
        (e["code"].as_str(), e["seq"].as_u64()),
        (Some("unauthorized"), Some(5))
    );

    x.send(&ClientMessage::leave(None)).await;
    let left = g.recv_type("member_left").await;
    assert_eq!(
        (left["memberId"].as_str(), left["seq"].as_u64()),
        (Some(x_id.as_str()), Some(6))
    );
    host.recv_type("member_left").await;

    host.send(&ClientMessage::kick(&g.id, Some("bye"))).await;
    let kicked = g.recv_type("kicked").await;
    assert_eq!(kicked["seq"], 7);
    let (_, end) = g.c.recv_end().await;
    assert!(
        matches!(end, Ended::Close(close_code::NORMAL, _)),
        "{end:?}"
    );
    // A kicked member's token is unknown.
    resume_fails(addr, &g.token, g.last, "unknown_token").await;
}

/// The host's next frame is g's message `{"n": n}`.
async fn host_gets(host: &mut Client, n: Value) {
    let m = host.recv_type("message").await;
    assert_eq!(m["data"], json!({ "n": n }), "{m}");
}

#[tokio::test]
async fn client_seq_rules_duplicates_gaps_unnumbered_kinds_and_refused_frames() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let (mut host, _) = plain_host(addr, "cseq").await;
    let (mut g, _) = rjoin(addr, "cseq", "g", "client").await;
    host.recv_type("member_joined").await;
    let raw = |seq: u64, n: Value| {
        encode_client_numbered(&message(json!({ "n": n }), None), unix_ms(), Some(seq)).unwrap()
    };

    g.c.send_text(&raw(1, json!(1))).await;
    host_gets(&mut host, json!(1)).await;

    // A duplicate is dropped silently.
    g.c.send_text(&raw(1, json!("dup"))).await;
    g.assert_nothing_queued().await;

    // A gap: not processed, one error with details.lastSeq for the whole run.
    g.c.send_text(&raw(3, json!("gap3"))).await;
    let e = g.recv_type("error").await;
    assert_eq!(e["code"], "invalid_message", "{e}");
    assert_eq!(e["details"], json!({"lastSeq": 1}), "{e}");
    g.c.send_text(&raw(4, json!("gap4"))).await;
    g.assert_nothing_queued().await;

    // The resend after lastSeq is processed in order.
    g.c.send_text(&raw(2, json!(2))).await;
    g.c.send_text(&raw(3, json!(3))).await;
    host_gets(&mut host, json!(2)).await;
    host_gets(&mut host, json!(3)).await;

    // A message without seq after join is invalid (and uses no seq).
    g.c.send(&message(json!("noseq"), None)).await;
    assert_eq!(g.recv_type("error").await["code"], "invalid_message");

    // A seq on heartbeat or ping is ignored whatever its value; the ping still gets its pong.
    g.c.send_text(r#"{"seq":99,"type":"heartbeat"}"#).await;
    g.c.send_text(r#"{"seq":1,"type":"ping","timestamp":5}"#)
        .await;
    assert_eq!(g.recv_type("pong").await["timestamp"], 5);
    g.c.send_text(&raw(4, json!(4))).await;
    host_gets(&mut host, json!(4)).await;

    // Refused frames with a readable seq use it up: a message without data, an unknown type,
    // a kick by a guest.
    g.c.send_text(r#"{"seq":5,"type":"message"}"#).await;
    assert_eq!(g.recv_type("error").await["code"], "invalid_message");
    g.c.send_text(r#"{"seq":6,"type":"dance"}"#).await;
    assert_eq!(g.recv_type("error").await["code"], "invalid_message");
    g.c.send_text(&raw(7, json!(7))).await;
    host_gets(&mut host, json!(7)).await;
    g.assert_nothing_queued().await;

    // A new run of gaps gets its own error.
    g.c.send_text(&raw(9, json!("gap9"))).await;
    assert_eq!(g.recv_type("error").await["details"], json!({"lastSeq": 7}));
    g.c.send_text(&raw(8, json!(8))).await;
    g.c.send_text(&raw(9, json!(9))).await;
    host_gets(&mut host, json!(8)).await;
    host_gets(&mut host, json!(9)).await;
    // Nothing else reached the host: no duplicate, no gap frame.
    host.assert_alive().await;
    g.assert_nothing_queued().await;
}

#[tokio::test]
async fn the_server_acks_every_ack_every_messages() {
    let server = start_with(ServerConfig {
        ack_every: 3,
        ack_interval: Duration::from_secs(30),
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let (mut host, _) = plain_host(addr, "acks").await;
    let (mut g, _) = rjoin(addr, "acks", "g", "client").await;
    host.recv_type("member_joined").await;
    for n in 1..=3 {
        g.say(json!(n)).await;
    }
    let ack = g.recv_type("ack").await;
    assert_eq!(ack["seq"], 3, "{ack}");
    for n in 4..=5 {
        g.say(json!(n)).await;
    }
    // Two new messages: no ack yet (the interval is long).
    g.assert_nothing_queued().await;
    g.say(json!(6)).await;
    assert_eq!(g.recv_type("ack").await["seq"], 6);
    for n in 1..=6 {
        assert_eq!(host.recv_type("message").await["data"], json!(n));
    }
    // The client's acks: one for what it received is accepted; one for a seq never sent is
    // invalid_message.
    g.send(&ClientMessage::Ack { seq: g.last }).await;
    g.assert_nothing_queued().await;
    g.send(&ClientMessage::Ack { seq: g.last + 10 }).await;
    assert_eq!(g.recv_type("error").await["code"], "invalid_message");
}

#[tokio::test]
async fn the_server_acks_within_ack_interval_and_only_when_it_has_something_new() {
    let server = start_with(ServerConfig {
        ack_every: 100,
        ack_interval: Duration::from_millis(200),
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let (mut host, _) = plain_host(addr, "ackint").await;
    let (mut g, _) = rjoin(addr, "ackint", "g", "client").await;
    host.recv_type("member_joined").await;
    g.say(json!(1)).await;
    g.say(json!(2)).await;
    let ack = g.recv_type("ack").await;
    assert_eq!(ack["seq"], 2);
    // Idle (heartbeats are never numbered): no further ack.
    for _ in 0..5 {
        g.send(&ClientMessage::Heartbeat).await;
        g.c.expect_silence(Duration::from_millis(100)).await;
    }
    g.say(json!(3)).await;
    assert_eq!(g.recv_type("ack").await["seq"], 3);
}

// ---------------------------------------------------------------------------------------------
// Resume
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn resume_echoes_the_token_and_replays_byte_identical_frames() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let (mut host, host_id) = plain_host(addr, "replay").await;
    let from_host = json!(host_id);
    let (mut g, _) = rjoin(addr, "replay", "g", "client").await;
    host.recv_type("member_joined").await;
    let g_id = g.id.clone();

    // Numbered traffic both ways before the drop.
    g.say(json!({"g": 1})).await;
    g.say(json!({"g": 2})).await;
    assert_eq!(host.recv_type("message").await["data"], json!({"g": 1}));
    assert_eq!(host.recv_type("message").await["data"], json!({"g": 2}));
    host.send(&message(json!({"h": 1}), None)).await;
    host.send(&message(json!({"h": 2}), None)).await;
    let mut originals = Vec::new();
    for _ in 0..2 {
        let (raw, v) = g.recv_raw().await;
        assert_eq!(v["type"], "message");
        originals.push(raw);
    }
    assert_eq!(g.last, 3);

    // The socket drops; the host sees reconnecting, with the entry as member_list has it.
    let held = g.drop_socket();
    let entry = member_updated(&mut host, &g_id, "reconnecting").await;
    host.send(&ClientMessage::MemberList).await;
    let list = host.recv_type("member_list").await;
    let listed = list["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == g_id.as_str())
        .expect("an away member stays listed")
        .clone();
    assert_eq!(listed["connectionStatus"], "reconnecting");
    assert_eq!(keys(&listed), keys(&entry));
    assert_eq!(listed, entry);

    // While away: two more frames for it (x's join is handled before the host's message:
    // the host has seen it).
    let (mut x, _, _) = join(addr, "replay", "x", "client").await;
    host.recv_type("member_joined").await;
    host.send(&message(json!({"h": 3}), None)).await;
    assert_eq!(x.recv_type("message").await["data"], json!({"h": 3}));

    // It resumes claiming it got only seq 1: seq 2 and 3 come back as they were, then the rest.
    let c = Client::connect(addr).await;
    let (mut g, resumed) = held.resume_on(c, Some(1)).await;
    assert_eq!(resumed["lastSeq"], 2, "the last client seq processed");
    assert_eq!(resumed["replayed"], 4, "{resumed}");
    for original in &originals {
        let (raw, _) = g.recv_raw().await;
        assert_eq!(&raw, original, "a replayed frame is byte-identical");
    }
    let j = g.recv_type("member_joined").await;
    assert_eq!(j["seq"], 4);
    let m = g.recv_type("message").await;
    assert_eq!((m["seq"].as_u64(), &m["data"]), (Some(5), &json!({"h": 3})));
    // The others see it back; it never gets a member_updated about itself.
    let back = member_updated(&mut host, &g_id, "connected").await;
    assert_eq!(back["id"], g_id.as_str());
    member_updated(&mut x, &g_id, "connected").await;
    g.assert_nothing_queued().await;

    // Numbering continues on both sides.
    g.say(json!({"g": 3})).await;
    let m = host.recv_type("message").await;
    assert_eq!((&m["data"], &m["from"]), (&json!({"g": 3}), &json!(g_id)));
    host.send(&message(json!({"h": 4}), None)).await;
    let m = g.recv_type("message").await;
    assert_eq!((m["seq"].as_u64(), &m["from"]), (Some(6), &from_host));
}

#[tokio::test]
async fn unknown_token_fails_and_the_socket_takes_a_fresh_handshake_and_join() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let t = merge_tokens(&local_token(), &local_token());
    let mut c = resume_fails(addr, &t, 0, "unknown_token").await;
    // Only a fresh handshake now: another resume frame is invalid.
    c.send(&token_msg(&t, Some(0))).await;
    assert_error_unnumbered(&c.recv().await, "invalid_message");
    let (m, _) = rjoin_on(c, "fresh", "host-dev", "host").await;
    assert_eq!(m.last, 1);
}

#[tokio::test]
async fn the_window_runs_out_member_left_timeout_then_expired() {
    let server = start_with(with_window(Duration::from_millis(300))).await;
    let addr = server.local_addr();
    let (mut host, _) = plain_host(addr, "exp").await;
    let (g, _) = rjoin(addr, "exp", "g", "client").await;
    host.recv_type("member_joined").await;
    let held = g.drop_socket();
    let dropped = Instant::now();
    member_updated(&mut host, &held.id, "reconnecting").await;
    let left = host.recv_type("member_left").await;
    assert_eq!(left["memberId"], held.id.as_str());
    assert_eq!(left["reason"], "timeout");
    assert!(
        dropped.elapsed() >= Duration::from_millis(250),
        "left too early"
    );
    let mut c = held.resume_fails(addr, "expired").await;
    // A fresh handshake and join on the same socket works; it is a new member.
    let (_, list) = {
        let (_, _, _) = handshake(&mut c).await;
        c.send(&join_msg("exp", "g", "client")).await;
        let w = c.recv_type("welcome").await;
        assert_ne!(w["clientId"], held.id.as_str());
        (w, c.recv_type("member_list").await)
    };
    assert_eq!(list["seq"], 1);
}

#[tokio::test]
async fn the_session_ends_while_away_then_session_closed() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let (mut host, _) = plain_host(addr, "sc").await;
    let (g, _) = rjoin(addr, "sc", "g", "client").await;
    host.recv_type("member_joined").await;
    let held = g.drop_socket();
    member_updated(&mut host, &held.id, "reconnecting").await;
    host.send(&ClientMessage::leave(None)).await;
    let (_, end) = host.recv_end().await;
    assert!(matches!(end, Ended::Close(close_code::NORMAL, _)));
    // resume_failed only: the session's session_closed is not replayed.
    let mut c = held.resume_fails(addr, "session_closed").await;
    c.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn an_away_buffer_over_its_message_limit_ends_the_place() {
    let server = start_with(ServerConfig {
        resume_buffer_messages: 4,
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let (mut host, _) = plain_host(addr, "ovm").await;
    let (mut g, _) = rjoin(addr, "ovm", "g", "client").await;
    host.recv_type("member_joined").await;
    g.send(&ClientMessage::Ack { seq: 1 }).await;
    g.assert_nothing_queued().await;
    let held = g.drop_socket();
    member_updated(&mut host, &held.id, "reconnecting").await;
    // Four fill the buffer exactly: the place is still held (the pong comes first).
    for n in 1..=4 {
        host.send(&message(json!(n), None)).await;
    }
    host.assert_alive().await;
    // The fifth would exceed it.
    host.send(&message(json!(5), None)).await;
    let left = host.recv_type("member_left").await;
    assert_eq!(
        (left["memberId"].as_str(), left["reason"].as_str()),
        (Some(held.id.as_str()), Some("error"))
    );
    held.resume_fails(addr, "buffer_overflow").await;
}

#[tokio::test]
async fn an_away_buffer_over_its_byte_limit_ends_the_place() {
    let server = start_with(ServerConfig {
        resume_buffer_bytes: 4096,
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let (mut host, _) = plain_host(addr, "ovb").await;
    let (mut g, _) = rjoin(addr, "ovb", "g", "client").await;
    host.recv_type("member_joined").await;
    g.send(&ClientMessage::Ack { seq: 1 }).await;
    g.assert_nothing_queued().await;
    let held = g.drop_socket();
    member_updated(&mut host, &held.id, "reconnecting").await;
    let big = "x".repeat(1500);
    for _ in 0..3 {
        host.send(&message(json!(big), None)).await;
    }
    let left = host.recv_type("member_left").await;
    assert_eq!(left["reason"], "error", "{left}");
    held.resume_fails(addr, "buffer_overflow").await;
}

#[tokio::test]
async fn the_byte_limit_is_exceeded_only_past_it() {
    // The size of one numbered message frame (seq of one digit), measured on a first server:
    // frames of the same message differ only in the clientId (same length) and timestamp.
    let data = json!({"pad": "p".repeat(1000)});
    let frame_len = {
        let server = start_with(config()).await;
        let addr = server.local_addr();
        let (mut host, _) = plain_host(addr, "measure").await;
        let (mut g, _) = rjoin(addr, "measure", "g", "client").await;
        host.recv_type("member_joined").await;
        host.send(&message(data.clone(), None)).await;
        let (raw, v) = g.recv_raw().await;
        assert_eq!(v["seq"], 2);
        raw.len()
    };
    // A buffer of exactly three such frames.
    let server = start_with(ServerConfig {
        resume_buffer_bytes: 3 * frame_len,
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let (mut host, _) = plain_host(addr, "bytes").await;
    let (mut g, _) = rjoin(addr, "bytes", "g", "client").await;
    host.recv_type("member_joined").await;
    g.send(&ClientMessage::Ack { seq: 1 }).await;
    g.assert_nothing_queued().await;
    let held = g.drop_socket();
    member_updated(&mut host, &held.id, "reconnecting").await;
    for _ in 0..3 {
        host.send(&message(data.clone(), None)).await;
    }
    host.assert_alive().await; // three fill it exactly: still held
    host.send(&message(data.clone(), None)).await;
    let left = host.recv_type("member_left").await;
    assert_eq!(left["reason"], "error", "{left}");
    held.resume_fails(addr, "buffer_overflow").await;
}

#[tokio::test]
async fn a_connected_member_that_never_acks_is_closed_1008_at_the_limit() {
    let server = start_with(ServerConfig {
        resume_buffer_messages: 3,
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let (mut host, _) = plain_host(addr, "ovc").await;
    let (mut g, _) = rjoin(addr, "ovc", "g", "client").await;
    host.recv_type("member_joined").await;
    // member_list (1) is unacknowledged; two more fill the buffer exactly (g stays), a third
    // exceeds it.
    for n in 1..=2 {
        host.send(&message(json!(n), None)).await;
        g.recv_type("message").await;
    }
    g.assert_nothing_queued().await;
    host.send(&message(json!(3), None)).await;
    let (seen, end) = g.c.recv_end().await;
    assert!(seen.iter().all(|v| v["type"] == "message"), "{seen:?}");
    assert_eq!(
        end,
        Ended::Close(
            close_code::POLICY_VIOLATION,
            "resume buffer overflow".into()
        )
    );
    let left = host.recv_type("member_left").await;
    assert_eq!(left["reason"], "error", "{left}");
    resume_fails(addr, &g.token, 1, "buffer_overflow").await;
}

#[tokio::test]
async fn a_last_seq_below_what_was_acknowledged_is_buffer_overflow() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let (mut host, _) = plain_host(addr, "below").await;
    let (mut g, _) = rjoin(addr, "below", "g", "client").await;
    host.recv_type("member_joined").await;
    host.send(&message(json!(1), None)).await;
    host.send(&message(json!(2), None)).await;
    g.recv_type("message").await;
    g.recv_type("message").await;
    g.send(&ClientMessage::Ack { seq: 3 }).await;
    g.assert_nothing_queued().await;
    let held = g.drop_socket();
    member_updated(&mut host, &held.id, "reconnecting").await;
    resume_fails(addr, &held.token, 1, "buffer_overflow").await;
    // The place ended.
    let left = host.recv_type("member_left").await;
    assert_eq!(left["memberId"], held.id.as_str());
    held.resume_fails(addr, "buffer_overflow").await;
}

#[tokio::test]
async fn a_resume_of_an_open_socket_closes_it_4000_and_others_see_nothing() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let (mut host, _) = plain_host(addr, "repl").await;
    let (mut g, _) = rjoin(addr, "repl", "g", "client").await;
    host.recv_type("member_joined").await;
    host.send(&message(json!(1), None)).await;
    g.recv_type("message").await;

    // A resume on a second socket while the first is open: the first closes with 4000.
    let new_socket = Client::connect(addr).await;
    let held = Held {
        token: g.token.clone(),
        id: g.id.clone(),
        last: g.last,
    };
    let (mut g2, resumed) = held.resume_on(new_socket, None).await;
    assert_eq!(
        (resumed["lastSeq"].as_u64(), resumed["replayed"].as_u64()),
        (Some(0), Some(0))
    );
    let (_, end) = g.c.recv_end().await;
    assert!(
        matches!(end, Ended::Close(close_code::REPLACED, _)),
        "{end:?}"
    );

    // And again (resumes in a row: the last one wins).
    let held = Held {
        token: g2.token.clone(),
        id: g2.id.clone(),
        last: g2.last,
    };
    let (mut g3, _) = held.resume(addr).await;
    let (_, end) = g2.c.recv_end().await;
    assert!(
        matches!(end, Ended::Close(close_code::REPLACED, _)),
        "{end:?}"
    );

    // The host got no member_updated: the next frame it gets is g's message.
    g3.say(json!("after")).await;
    let m = host.recv_type("message").await;
    assert_eq!(m["data"], json!("after"));
    host.send(&message(json!(2), None)).await;
    assert_eq!(g3.recv_type("message").await["seq"], 3);
}

#[tokio::test]
async fn formal_disconnect_is_leave_and_its_token_is_then_unknown() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let (mut host, _) = plain_host(addr, "fd").await;
    let (mut g, _) = rjoin(addr, "fd", "g", "client").await;
    host.recv_type("member_joined").await;
    g.send(&token_msg(&g.token.clone(), None)).await;
    let (seen, end) = g.c.recv_end().await;
    assert!(seen.is_empty(), "{seen:?}");
    assert_eq!(end, Ended::Close(close_code::NORMAL, "left".into()));
    let left = host.recv_type("member_left").await;
    assert_eq!(
        (left["memberId"].as_str(), left["reason"].as_str()),
        (Some(g.id.as_str()), Some("left"))
    );
    resume_fails(addr, &g.token, g.last, "unknown_token").await;

    // A host's formal disconnect ends the session as its leave does.
    let (mut h2, _) = rjoin(addr, "fd2", "h2", "host").await;
    let (mut guest, _, _) = join(addr, "fd2", "gg", "client").await;
    h2.recv_type("member_joined").await;
    h2.send(&token_msg(&h2.token.clone(), None)).await;
    let closed = guest.recv_type("session_closed").await;
    assert_eq!(closed["reason"], "Host ended the session");
    let (_, end) = h2.c.recv_end().await;
    assert!(
        matches!(end, Ended::Close(close_code::NORMAL, _)),
        "{end:?}"
    );
}

#[tokio::test]
async fn other_token_frames_on_a_joined_socket_are_invalid() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let (mut host, _) = plain_host(addr, "othertok").await;
    let (mut g, _) = rjoin(addr, "othertok", "g", "client").await;
    host.recv_type("member_joined").await;
    let t = g.token.clone();
    let other = merge_tokens(&local_token(), &local_token());
    for m in [
        token_msg(&other, None),     // not its connection token: no formal disconnect
        token_msg(&t, Some(g.last)), // a resume frame, not first
        token_msg(&other, Some(0)),  // the same, another token
    ] {
        g.send(&m).await;
        let e = g.recv_type("error").await;
        assert_eq!(e["code"], "invalid_message", "{e}");
    }
    // Still joined and connected: nothing reached the host.
    g.say(json!("still here")).await;
    assert_eq!(host.recv_type("message").await["data"], "still here");
}

#[tokio::test]
async fn a_close_frame_of_any_code_without_leave_starts_the_window() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let (mut host, _) = plain_host(addr, "closeframe").await;
    let mut back = Vec::new();
    for (i, code) in [1000u16, 1001, 4321].into_iter().enumerate() {
        let (mut g, _) = rjoin(addr, "closeframe", &format!("g{i}"), "client").await;
        host.recv_type("member_joined").await;
        g.c.ws
            .send(Message::close(
                Some(tokio_websockets::CloseCode::try_from(code).unwrap()),
                "bye",
            ))
            .await
            .unwrap();
        let _ = g.c.recv_end().await;
        let held = g.drop_socket();
        member_updated(&mut host, &held.id, "reconnecting").await;
        let (g, _) = held.resume(addr).await;
        member_updated(&mut host, &g.id, "connected").await;
        back.push(g);
    }
}

#[tokio::test]
async fn a_hosts_drop_keeps_the_session_through_the_window() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let (h, _) = rjoin(addr, "hd", "host-dev", "host").await;
    let host_id = h.id.clone();
    let (mut guest, _, _) = join(addr, "hd", "g", "client").await;
    let mut h = h;
    h.recv_type("member_joined").await;
    let held = h.drop_socket();
    let entry = member_updated(&mut guest, &host_id, "reconnecting").await;
    assert_eq!(entry["isHost"], true);

    // The session is still there: a guest joins and sees the host reconnecting.
    let (mut x, w, list) = join(addr, "hd", "x", "client").await;
    assert_eq!(w["sessionInfo"]["hostId"], host_id.as_str());
    assert_eq!(list["members"][0]["id"], host_id.as_str());
    assert_eq!(list["members"][0]["connectionStatus"], "reconnecting");
    guest.recv_type("member_joined").await;
    // Another host may not take over meanwhile.
    let mut other = Client::connect(addr).await;
    other.send(&join_msg("hd", "other-host", "host")).await;
    assert_eq!(other.recv_type("error").await["code"], "unauthorized");

    let (mut h, resumed) = held.resume(addr).await;
    assert_eq!(resumed["replayed"], 1, "the member_joined of x: {resumed}");
    assert_eq!(
        h.recv_type("member_joined").await["member"]["id"],
        w["clientId"]
    );
    member_updated(&mut guest, &host_id, "connected").await;
    member_updated(&mut x, &host_id, "connected").await;
}

#[tokio::test]
async fn a_hosts_window_running_out_closes_the_session_host_timed_out() {
    let server = start_with(with_window(Duration::from_millis(300))).await;
    let addr = server.local_addr();
    let (mut h, _) = rjoin(addr, "hto", "host-dev", "host").await;
    let (mut guest, _, _) = join(addr, "hto", "g", "client").await;
    h.recv_type("member_joined").await;
    let held = h.drop_socket();
    member_updated(&mut guest, &held.id, "reconnecting").await;
    let closed = guest.recv_type("session_closed").await;
    assert_eq!(closed["reason"], "Host timed out");
    let (_, end) = guest.recv_end().await;
    assert!(
        matches!(end, Ended::Close(close_code::NORMAL, _)),
        "{end:?}"
    );
}

#[tokio::test]
async fn a_plain_join_of_a_held_device_is_already_joined() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let (mut host, _) = plain_host(addr, "aj").await;
    let (g, _) = rjoin(addr, "aj", "g", "client").await;
    host.recv_type("member_joined").await;
    let held = g.drop_socket();
    member_updated(&mut host, &held.id, "reconnecting").await;
    let mut again = Client::connect(addr).await;
    again.send(&join_msg("aj", "g", "client")).await;
    let (seen, end) = again.recv_end().await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_error_unnumbered(&seen[0], "already_joined");
    assert!(
        matches!(end, Ended::Close(close_code::NORMAL, _)),
        "{end:?}"
    );
    // The place is still held and resumes.
    let (g, _) = held.resume(addr).await;
    member_updated(&mut host, &g.id, "connected").await;
}

#[tokio::test]
async fn kicked_while_away_then_unknown_token() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let (mut host, _) = plain_host(addr, "kaw").await;
    let (g, _) = rjoin(addr, "kaw", "g", "client").await;
    host.recv_type("member_joined").await;
    let held = g.drop_socket();
    member_updated(&mut host, &held.id, "reconnecting").await;
    host.send(&ClientMessage::kick(&held.id, None)).await;
    let left = host.recv_type("member_left").await;
    assert_eq!(left["reason"], "kicked");
    held.resume_fails(addr, "unknown_token").await;
}

#[tokio::test]
async fn a_silent_resumable_member_goes_reconnecting_at_the_heartbeat_timeout() {
    let server = start_with(ServerConfig {
        heartbeat_timeout: Duration::from_millis(500),
        resume_window: Duration::from_secs(3),
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let (mut host, _) = plain_host(addr, "hbt").await;
    let (mut g, _) = rjoin(addr, "hbt", "g", "client").await;
    host.recv_type("member_joined").await;
    // g says nothing (the host heartbeats); g's socket is closed as in the landed layer,
    // its place held.
    let silent = tokio::spawn(async move {
        let ended = g.c.recv_end().await;
        (g, ended)
    });
    let upd = await_beating(&mut host, "member_updated", &[]).await;
    assert_eq!(upd["member"]["connectionStatus"], "reconnecting");
    let (g, (seen, end)) = silent.await.unwrap();
    assert!(seen.is_empty(), "{seen:?}");
    assert_eq!(
        end,
        Ended::Close(close_code::NORMAL, "heartbeat timeout".into())
    );
    // Away for twice the heartbeat timeout: heartbeat timeouts do not apply while away.
    beat_for(&mut host, Duration::from_millis(1000)).await;
    let held = Held {
        token: g.token.clone(),
        id: g.id.clone(),
        last: g.last,
    };
    let (_g, _) = held.resume(addr).await;
    let back = await_beating(&mut host, "member_updated", &[]).await;
    assert_eq!(back["member"]["connectionStatus"], "connected");
}

#[tokio::test]
async fn the_join_deadline_holds_after_a_handshake() {
    let deadline = Duration::from_millis(1000);
    let server = start_with(ServerConfig {
        heartbeat_timeout: deadline,
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let no_join = Ended::Close(
        close_code::NORMAL,
        "no join within the heartbeat timeout".into(),
    );
    let opened = Instant::now();
    let mut c = Client::connect(addr).await;
    handshake(&mut c).await;
    let (_, end) = c.recv_end().await;
    assert_eq!(end, no_join, "after a handshake and no join");
    assert!(opened.elapsed() >= deadline - Duration::from_millis(50));
}

#[tokio::test]
async fn after_resume_failed_the_join_deadline_still_counts_from_the_opening() {
    let deadline = Duration::from_millis(1000);
    let server = start_with(ServerConfig {
        heartbeat_timeout: deadline,
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let no_join = Ended::Close(
        close_code::NORMAL,
        "no join within the heartbeat timeout".into(),
    );
    // A socket that fails its resume 800 ms in is closed about 200 ms later, not a whole
    // timeout later.
    let opened = Instant::now();
    let mut c = Client::connect(addr).await;
    tokio::time::sleep(Duration::from_millis(800)).await; // time passing is the point here
    let t = merge_tokens(&local_token(), &local_token());
    c.send(&token_msg(&t, Some(0))).await;
    assert_eq!(
        c.recv_type("resume_failed").await["reason"],
        "unknown_token"
    );
    let (_, end) = c.recv_end().await;
    assert_eq!(end, no_join, "after resume_failed");
    let closed = opened.elapsed();
    assert!(
        closed < Duration::from_millis(1500),
        "closed {closed:?} after opening: the deadline restarted at resume_failed"
    );
}

#[tokio::test]
async fn a_frame_over_the_size_limit_ends_the_place_at_once() {
    let server = start_with(ServerConfig {
        max_message_bytes: 4096,
        max_state_bytes: 2048,
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let (mut host, _) = plain_host(addr, "big").await;
    let (mut g, _) = rjoin(addr, "big", "g", "client").await;
    host.recv_type("member_joined").await;
    g.say(json!("x".repeat(5000))).await;
    let (_, end) = g.c.recv_end().await;
    assert!(
        matches!(end, Ended::Close(close_code::MESSAGE_TOO_BIG, _)),
        "{end:?}"
    );
    // No reconnecting: the place ends.
    let left = host.recv_type("member_left").await;
    assert_eq!(left["reason"], "error", "{left}");
    resume_fails(addr, &g.token, g.last, "unknown_token").await;
}

#[tokio::test]
async fn app_members_get_a_fresh_member_list_when_a_member_goes_and_comes_back() {
    let server = start_with(with_window(Duration::from_millis(600))).await;
    let addr = server.local_addr();
    let (mut host, _) = plain_host(addr, "K7P-3XQ").await;
    let mut app_c = Client::connect(addr).await;
    let app_device = "loudsync_1738940000000_k3j9x2m1q";
    let join = ClientMessage::join("K7P-3XQ", app_device, "Device 42", DeviceType::Client);
    let ctx = app::ClientContext::new(app_device, 1738941234567)
        .with_message_id("msg_1738941234567_4fzq8ab");
    app_c.send_app(&join, &ctx).await;
    assert_eq!(app_c.recv().await["type"], "WELCOME");
    assert_eq!(app_c.recv().await["type"], "MEMBER_LIST");
    host.recv_type("member_joined").await;

    let (g, _) = rjoin(addr, "K7P-3XQ", "g-device", "client").await;
    host.recv_type("member_joined").await;
    let joined = app_c.recv().await;
    assert_eq!(joined["type"], "MEMBER_JOINED", "{joined}");

    let status_of = |list: &Value| {
        assert_eq!(list["type"], "MEMBER_LIST", "{list}");
        list["payload"]["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == "g-device")
            .expect("listed by device id")["connectionStatus"]
            .clone()
    };
    let held = g.drop_socket();
    member_updated(&mut host, &held.id, "reconnecting").await;
    assert_eq!(status_of(&app_c.recv().await), "reconnecting");
    let (g, _) = held.resume(addr).await;
    member_updated(&mut host, &g.id, "connected").await;
    assert_eq!(status_of(&app_c.recv().await), "connected");

    // The window's end reaches the app as MEMBER_LEFT "Heartbeat timeout".
    let held = g.drop_socket();
    member_updated(&mut host, &held.id, "reconnecting").await;
    assert_eq!(status_of(&app_c.recv().await), "reconnecting");
    assert_eq!(host.recv_type("member_left").await["reason"], "timeout");
    let left = app_c.recv().await;
    assert_eq!(left["type"], "MEMBER_LEFT", "{left}");
    assert_eq!(left["payload"]["deviceId"], "g-device");
    assert_eq!(left["payload"]["reason"], "Heartbeat timeout");
}

#[tokio::test]
async fn a_flooding_resumable_member_is_closed_1008_and_resumes_with_last_seq() {
    let server = start_with(ServerConfig {
        rate_limit: 20,
        rate_burst: 10,
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let (mut host, _) = plain_host(addr, "flood").await;
    let (mut g, _) = rjoin(addr, "flood", "g", "client").await;
    host.recv_type("member_joined").await;
    for n in 1..=40 {
        g.say(json!(n)).await;
    }
    let (mut seen, end) = g.c.recv_end().await;
    assert_eq!(
        end,
        Ended::Close(close_code::POLICY_VIOLATION, "rate limit exceeded".into())
    );
    // A transient drop: the place is held, not ended.
    let mut got = 0;
    loop {
        let v = host.recv().await;
        match v["type"].as_str().unwrap() {
            "message" => {
                got += 1;
                assert_eq!(v["data"], json!(got), "in order, no gap");
            }
            "member_updated" => {
                assert_eq!(v["member"]["connectionStatus"], "reconnecting");
                break;
            }
            _ => panic!("unexpected {v}"),
        }
    }
    for v in &seen {
        g.number(v);
    }
    let held = Held {
        token: g.token.clone(),
        id: g.id.clone(),
        last: g.last,
    };
    let (mut g, resumed) = held.resume(addr).await;
    assert_eq!(resumed["lastSeq"], got, "{resumed}");
    for _ in 0..resumed["replayed"].as_u64().unwrap() {
        seen.push(g.recv().await);
    }
    // The rate_limited error (numbered: read before the close, or replayed) says lastSeq.
    let limited: Vec<&Value> = seen.iter().filter(|v| v["type"] == "error").collect();
    assert_eq!(limited.len(), 1, "one error per run: {seen:?}");
    assert_eq!(limited[0]["code"], "rate_limited");
    let told = limited[0]["details"]["lastSeq"]
        .as_u64()
        .unwrap_or_else(|| panic!("rate_limited carries lastSeq: {}", limited[0]));
    assert!(told <= got, "told {told}, processed {got}");
    // It resends what follows (a few, within the bucket).
    for n in got + 1..=got + 3 {
        g.say(json!(n)).await;
    }
    member_updated(&mut host, &g.id, "connected").await;
    for n in got + 1..=got + 3 {
        assert_eq!(host.recv_type("message").await["data"], json!(n));
    }
}

#[tokio::test]
async fn an_away_member_counts_toward_max_members_and_is_listed_reconnecting_over_http() {
    let server = start_with(ServerConfig {
        max_members: 2,
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let (mut host, _) = plain_host(addr, "full").await;
    let (g, _) = rjoin(addr, "full", "g", "client").await;
    host.recv_type("member_joined").await;
    let held = g.drop_socket();
    member_updated(&mut host, &held.id, "reconnecting").await;
    let mut third = Client::connect(addr).await;
    third.send(&join_msg("full", "third", "client")).await;
    assert_eq!(third.recv_type("error").await["code"], "session_full");
    let got: Value = reqwest::get(format!("{}/v1/sessions/full", http(&server)))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entry = got["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == held.id.as_str())
        .unwrap_or_else(|| panic!("listed: {got}"))
        .clone();
    assert_eq!(entry["connectionStatus"], "reconnecting", "{got}");
}

#[tokio::test]
async fn a_message_to_an_away_member_is_buffered_and_replayed() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let (mut host, host_id) = plain_host(addr, "to").await;
    let (g, _) = rjoin(addr, "to", "g", "client").await;
    host.recv_type("member_joined").await;
    let held = g.drop_socket();
    member_updated(&mut host, &held.id, "reconnecting").await;
    host.send(&message(json!({"only": "g"}), Some(&held.id)))
        .await;
    host.assert_alive().await; // no error: the member is still there
    let (mut g, resumed) = held.resume(addr).await;
    assert_eq!(resumed["replayed"], 1);
    let m = g.recv_type("message").await;
    assert_eq!(
        (&m["data"], &m["from"]),
        (&json!({"only": "g"}), &json!(host_id))
    );
}

#[tokio::test]
async fn a_slow_resumable_reader_closed_1008_is_held_and_its_whole_replay_gets_through() {
    let server = start_with(ServerConfig {
        rate_limit: 0,
        max_message_bytes: 64 * 1024,
        max_data_bytes: 64 * 1024,
        outbound_queue_bytes: 64 * 1024,
        outbound_queue_max_bytes: 1024 * 1024,
        resume_buffer_bytes: 16 << 20,
        heartbeat_timeout: Duration::from_secs(30),
        resume_window: Duration::from_secs(30),
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let (mut host, _) = plain_host(addr, "slow").await;
    // A reader with a tiny receive buffer that stops reading after its join.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let c = Client::connect_on(addr, "/", tcp).await;
    let (mut slow, _) = rjoin_on(c, "slow", "slow", "client").await;
    host.recv_type("member_joined").await;
    let chunk = message(json!("z".repeat(60 * 1024)), None);
    let mut sent = 0u64;
    let mut noticed = None;
    while sent < 2000 {
        host.send(&chunk).await;
        sent += 1;
        if let Ok(v) = tokio::time::timeout(Duration::from_millis(1), host.recv()).await {
            noticed = Some(v);
            break;
        }
    }
    // A transient drop (landed: member_left error): the place is held instead.
    let noticed = noticed.expect("the slow member was never closed");
    assert_eq!(noticed["type"], "member_updated", "{noticed}");
    assert_eq!(noticed["member"]["id"], slow.id.as_str());
    assert_eq!(noticed["member"]["connectionStatus"], "reconnecting");
    let (seen, end) = slow.c.recv_end().await;
    assert!(
        matches!(
            end,
            Ended::Close(close_code::POLICY_VIOLATION, _) | Ended::Eof
        ),
        "{end:?}"
    );
    for v in &seen {
        slow.number(v);
    }
    let read = seen.len() as u64;
    let held = slow.drop_socket();

    // The replay (far over outbound-queue-bytes) is written as the socket drains: all of it,
    // in order, and the socket stays.
    let (mut g, resumed) = held.resume(addr).await;
    assert_eq!(
        resumed["replayed"].as_u64(),
        Some(sent - read),
        "every chunk not read before the close: {resumed}"
    );
    for _ in 0..sent - read {
        assert_eq!(
            g.recv_type("message").await["data"].as_str().unwrap().len(),
            60 * 1024
        );
    }
    member_updated(&mut host, &g.id, "connected").await;
    g.assert_nothing_queued().await;
}

#[tokio::test]
async fn session_closed_and_member_updated_are_numbered_too() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let (mut host, _) = rjoin(addr, "nb", "host-dev", "host").await;
    let (mut g1, _) = rjoin(addr, "nb", "g1", "client").await;
    assert_eq!(host.recv_type("member_joined").await["seq"], 2);
    let (g2, _) = rjoin(addr, "nb", "g2", "client").await;
    assert_eq!(host.recv_type("member_joined").await["seq"], 3);
    assert_eq!(g1.recv_type("member_joined").await["seq"], 2);
    let g2_id = g2.id.clone();
    drop(g2.drop_socket());
    let upd = host.recv_type("member_updated").await;
    assert_eq!(
        (upd["seq"].as_u64(), &upd["member"]["id"]),
        (Some(4), &json!(g2_id))
    );
    assert_eq!(g1.recv_type("member_updated").await["seq"], 3);
    host.send(&ClientMessage::leave(None)).await;
    let closed = g1.recv_type("session_closed").await;
    assert_eq!(closed["seq"], 4, "{closed}");
    assert_eq!(closed["reason"], "Host ended the session");
}

#[tokio::test]
async fn a_pong_is_never_replayed() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let (mut host, _) = plain_host(addr, "pong").await;
    let (mut g, _) = rjoin(addr, "pong", "g", "client").await;
    host.recv_type("member_joined").await;
    // A ping whose pong is never read: the socket drops right after it.
    g.c.send(&ClientMessage::ping(1u64)).await;
    g.c.send(&ClientMessage::ping(2u64)).await;
    let held = g.drop_socket();
    member_updated(&mut host, &held.id, "reconnecting").await;
    host.send(&message(json!("while away"), None)).await;
    let (mut g, resumed) = held.resume(addr).await;
    assert_eq!(resumed["replayed"], 1, "{resumed}");
    assert_eq!(g.recv_type("message").await["data"], "while away");
    g.assert_nothing_queued().await;
}

#[tokio::test]
async fn acks_alone_keep_a_member_alive() {
    let server = start_with(ServerConfig {
        heartbeat_timeout: Duration::from_millis(500),
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let (mut host, _) = plain_host(addr, "ackalive").await;
    let (mut g, _) = rjoin(addr, "ackalive", "g", "client").await;
    host.recv_type("member_joined").await;
    // For three heartbeat timeouts g sends nothing but acks (of what it has: seq 1).
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        g.send(&ClientMessage::Ack { seq: 1 }).await;
        host.send(&ClientMessage::Heartbeat).await;
        host.expect_silence(Duration::from_millis(100)).await;
    }
    g.assert_nothing_queued().await;
}

/// After a ping: its pong (the socket is live) or the close code (it was closed).
async fn pong_or_close(c: &mut Client) -> Result<Value, u16> {
    let _ =
        c.ws.send(Message::text(
            encode_client(&ClientMessage::ping(5u64), 0).unwrap(),
        ))
        .await;
    loop {
        let next = tokio::time::timeout(WAIT, c.ws.next())
            .await
            .expect("a pong or a close in time");
        match next {
            Some(Ok(m)) => {
                if let Some((code, _)) = m.as_close() {
                    return Err(code.into());
                }
                if let Some(text) = m.as_text() {
                    let v: Value = serde_json::from_str(text).unwrap();
                    assert_eq!(v["type"], "pong", "{v}");
                    return Ok(v);
                }
            }
            other => panic!("ended without a close frame: {other:?}"),
        }
    }
}

#[tokio::test]
async fn two_resumes_at_once_leave_one_live_socket_and_one_member_updated() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let (mut host, _) = plain_host(addr, "race2").await;
    let (g, _) = rjoin(addr, "race2", "g", "client").await;
    host.recv_type("member_joined").await;
    let held = g.drop_socket();
    member_updated(&mut host, &held.id, "reconnecting").await;
    let frame = encode_client(&token_msg(&held.token, Some(held.last)), unix_ms()).unwrap();
    let mut a = Client::connect(addr).await;
    let mut b = Client::connect(addr).await;
    a.send_text(&frame).await;
    b.send_text(&frame).await;
    // Both are processed, in some order: each gets its token and resumed; the one processed
    // first is then replaced (4000), the last one wins.
    for c in [&mut a, &mut b] {
        assert_eq!(c.recv_type("token").await["token"], held.token.as_str());
        assert_eq!(c.recv_type("resumed").await["replayed"], 0);
    }
    let (ra, rb) = (pong_or_close(&mut a).await, pong_or_close(&mut b).await);
    let live = match (&ra, &rb) {
        (Ok(_), Err(close_code::REPLACED)) => a,
        (Err(close_code::REPLACED), Ok(_)) => b,
        _ => panic!("one live socket and one replaced expected: {ra:?} {rb:?}"),
    };
    let mut g = Member {
        c: live,
        token: held.token.clone(),
        id: held.id.clone(),
        last: held.last,
        next: 1,
    };
    // The host saw the member back once, and nothing for the replacement.
    g.say(json!("one")).await;
    member_updated(&mut host, &g.id, "connected").await;
    assert_eq!(host.recv_type("message").await["data"], "one");
}

#[tokio::test]
async fn a_resume_racing_the_windows_end_is_resumed_or_expired_never_both() {
    let window = Duration::from_millis(200);
    let server = start_with(with_window(window)).await;
    let addr = server.local_addr();
    let (mut host, _) = plain_host(addr, "edge").await;
    let (mut resumed_n, mut expired_n) = (0, 0);
    for i in 0..16u64 {
        let device = format!("g{i}");
        let (g, _) = rjoin(addr, "edge", &device, "client").await;
        host.recv_type("member_joined").await;
        let held = g.drop_socket();
        member_updated(&mut host, &held.id, "reconnecting").await;
        // Around the window's end: from 30 ms before to 30 ms after (time passing is the
        // point here; the outcome may go either way, the frames must agree with it).
        let wait =
            (window + Duration::from_millis(4 * i)).saturating_sub(Duration::from_millis(30));
        tokio::time::sleep(wait).await;
        let mut c = Client::connect(addr).await;
        c.send(&token_msg(&held.token, Some(held.last))).await;
        let first = c.recv().await;
        match first["type"].as_str().unwrap() {
            "token" => {
                resumed_n += 1;
                c.recv_type("resumed").await;
                let mut g = Member {
                    c,
                    token: held.token.clone(),
                    id: held.id.clone(),
                    last: held.last,
                    next: 1,
                };
                g.say(json!({"back": i})).await;
                // The host: member_updated connected, then the message; no member_left.
                let v = host.recv().await;
                assert_eq!(v["type"], "member_updated", "{v}");
                assert_eq!(v["member"]["connectionStatus"], "connected", "{v}");
                let m = host.recv().await;
                assert_eq!(m["data"], json!({"back": i}), "{m}");
                g.send(&ClientMessage::leave(None)).await;
                let left = host.recv_type("member_left").await;
                assert_eq!(left["reason"], "left", "{left}");
            }
            "resume_failed" => {
                expired_n += 1;
                assert_eq!(first["reason"], "expired", "{first}");
                let left = host.recv_type("member_left").await;
                assert_eq!(
                    (left["memberId"].as_str(), left["reason"].as_str()),
                    (Some(held.id.as_str()), Some("timeout"))
                );
            }
            _ => panic!("resume answered {first}"),
        }
        host.assert_alive().await;
    }
    eprintln!("at the window's edge: {resumed_n} resumed, {expired_n} expired");
}

#[tokio::test]
async fn an_expired_token_is_remembered_well_after_the_window() {
    let window = Duration::from_millis(100);
    let server = start_with(with_window(window)).await;
    let addr = server.local_addr();
    let (mut host, _) = plain_host(addr, "mem").await;
    let (g, _) = rjoin(addr, "mem", "g", "client").await;
    host.recv_type("member_joined").await;
    let held = g.drop_socket();
    member_updated(&mut host, &held.id, "reconnecting").await;
    assert_eq!(host.recv_type("member_left").await["reason"], "timeout");
    // Five windows later (of the ten at least that it is kept): still `expired`.
    tokio::time::sleep(window * 5).await; // time passing is the point here
    held.resume_fails(addr, "expired").await;
}

#[tokio::test]
async fn resume_at_exactly_the_acknowledged_seq_replays_what_follows() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let (mut host, _) = plain_host(addr, "edgeack").await;
    let (mut g, _) = rjoin(addr, "edgeack", "g", "client").await;
    host.recv_type("member_joined").await;
    for n in 1..=2 {
        host.send(&message(json!(n), None)).await;
        g.recv_type("message").await;
    }
    g.send(&ClientMessage::Ack { seq: 3 }).await;
    g.assert_nothing_queued().await;
    let held = g.drop_socket();
    member_updated(&mut host, &held.id, "reconnecting").await;
    host.send(&message(json!(3), None)).await;
    // lastSeq 3 is exactly what was acknowledged (dropped from the buffer): not an overflow.
    let (mut g, resumed) = held.resume(addr).await;
    assert_eq!(resumed["replayed"], 1, "{resumed}");
    let m = g.recv_type("message").await;
    assert_eq!((m["seq"].as_u64(), &m["data"]), (Some(4), &json!(3)));
}

#[tokio::test]
async fn a_plain_members_drop_still_removes_it_at_once() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let (mut host, _) = rjoin(addr, "plaindrop", "host-dev", "host").await;
    let (plain, w, _) = join(addr, "plaindrop", "p", "client").await;
    host.recv_type("member_joined").await;
    drop(plain);
    let left = host.recv_type("member_left").await;
    assert_eq!(
        (left["memberId"].as_str(), left["reason"].as_str()),
        (w["clientId"].as_str(), Some("error")),
        "a plain member never goes reconnecting: {left}"
    );
}

#[tokio::test]
async fn a_resumable_hosts_oversized_frame_ends_the_session_and_forgets_its_token() {
    let server = start_with(ServerConfig {
        max_message_bytes: 4096,
        max_state_bytes: 2048,
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let (mut h, _) = rjoin(addr, "hbig", "host-dev", "host").await;
    let (mut guest, _, _) = join(addr, "hbig", "g", "client").await;
    h.recv_type("member_joined").await;
    h.say(json!("x".repeat(5000))).await;
    let (_, end) = h.c.recv_end().await;
    assert!(
        matches!(end, Ended::Close(close_code::MESSAGE_TOO_BIG, _)),
        "{end:?}"
    );
    let closed = guest.recv_type("session_closed").await;
    assert_eq!(closed["reason"], "Host disconnected");
    resume_fails(addr, &h.token, h.last, "unknown_token").await;
}

#[tokio::test]
async fn an_away_hosts_buffer_overflow_ends_the_session() {
    let server = start_with(ServerConfig {
        resume_buffer_messages: 3,
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let (mut h, _) = rjoin(addr, "hov", "host-dev", "host").await;
    let (mut guest, _, _) = join(addr, "hov", "g", "client").await;
    h.recv_type("member_joined").await;
    h.send(&ClientMessage::Ack { seq: h.last }).await;
    h.assert_nothing_queued().await;
    let held = h.drop_socket();
    member_updated(&mut guest, &held.id, "reconnecting").await;
    for n in 1..=4 {
        guest.send(&message(json!(n), None)).await;
    }
    let closed = guest.recv_type("session_closed").await;
    // Its place ends with reason `error`: for a host, the landed "Host disconnected".
    assert_eq!(closed["reason"], "Host disconnected", "{closed}");
    held.resume_fails(addr, "buffer_overflow").await;
}

// ---------------------------------------------------------------------------------------------
// Through the fault-injecting proxy
// ---------------------------------------------------------------------------------------------

/// Fault-test settings: no rate limit (the landed bucket would drop frames and make gaps the
/// test did not ask for), frequent acks, no latency probes (their control frames would come
/// between the bytes a test counts), a long window.
fn fault_config() -> ServerConfig {
    ServerConfig {
        rate_limit: 0,
        latency_interval: Duration::from_secs(3600),
        heartbeat_timeout: Duration::from_secs(5),
        resume_window: Duration::from_secs(10),
        ack_every: 10,
        ack_interval: Duration::from_millis(100),
        ..config()
    }
}

/// A WebSocket through the proxy, with its link (armed by the caller after the upgrade).
async fn via(proxy: &Proxy) -> (Client, Link) {
    let (tcp, link) = proxy.connect().await;
    let c = tokio::time::timeout(
        Duration::from_secs(30),
        Client::connect_on(proxy.addr(), "/", tcp),
    )
    .await
    .expect("a WebSocket upgrade through the proxy within 30 s");
    (c, link)
}

/// Bounds a wait on the proxy.
async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

#[tokio::test]
async fn a_cut_mid_frame_towards_the_client_loses_nothing() {
    let server = start_with(fault_config()).await;
    let addr = server.local_addr();
    let proxy = Proxy::start(addr).await;
    let (mut host, _) = plain_host(addr, "midc").await;
    let (c, link) = via(&proxy).await;
    let (mut g, _) = rjoin_on(c, "midc", "g", "client").await;
    host.recv_type("member_joined").await;
    host.send(&message(json!({"n": 1}), None)).await;
    assert_eq!(g.recv_type("message").await["seq"], 2);

    // Quiet now: the next frame towards g is cut 5 bytes in (past its header, in its JSON).
    let before = link.forwarded(Dir::ToClient);
    link.cut_after(Dir::ToClient, 5);
    host.send(&message(json!({"n": 2, "pad": "x".repeat(200)}), None))
        .await;
    within("the cut", link.wait_cut()).await;
    assert_eq!(link.forwarded(Dir::ToClient) - before, 5);
    let (seen, end) = g.c.recv_end().await;
    assert!(seen.is_empty(), "{seen:?}");
    assert_eq!(end, Ended::Eof);
    let held = g.drop_socket();
    member_updated(&mut host, &held.id, "reconnecting").await;

    let (c, _) = via(&proxy).await;
    let (mut g, resumed) = held.resume_on(c, None).await;
    assert_eq!(
        (resumed["lastSeq"].as_u64(), resumed["replayed"].as_u64()),
        (Some(0), Some(1))
    );
    let m = g.recv_type("message").await;
    assert_eq!((m["seq"].as_u64(), &m["data"]["n"]), (Some(3), &json!(2)));
    member_updated(&mut host, &g.id, "connected").await;
    g.assert_nothing_queued().await;
}

#[tokio::test]
async fn a_cut_mid_frame_towards_the_server_loses_nothing() {
    let server = start_with(fault_config()).await;
    let addr = server.local_addr();
    let proxy = Proxy::start(addr).await;
    let (mut host, _) = plain_host(addr, "mids").await;
    let (c, link) = via(&proxy).await;
    let (mut g, _) = rjoin_on(c, "mids", "g", "client").await;
    host.recv_type("member_joined").await;
    g.say(json!({"n": 1})).await;
    assert_eq!(host.recv_type("message").await["data"]["n"], 1);

    // g's next frame reaches the server only 10 bytes in; then both sides drop.
    let before = link.forwarded(Dir::ToServer);
    link.cut_after(Dir::ToServer, 10);
    let two = json!({"n": 2, "pad": "y".repeat(200)});
    g.say(two.clone()).await;
    within("the cut", link.wait_cut()).await;
    assert_eq!(link.forwarded(Dir::ToServer) - before, 10);
    member_updated(&mut host, &g.id, "reconnecting").await;
    let held = g.drop_socket();

    // The resume says seq 1 was the last processed: g resends 2, the host gets it once.
    let (c, _) = via(&proxy).await;
    let (mut g, resumed) = held.resume_on(c, None).await;
    assert_eq!(
        (resumed["lastSeq"].as_u64(), resumed["replayed"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(g.next, 2);
    g.say(two.clone()).await;
    g.say(json!({"n": 3})).await;
    member_updated(&mut host, &g.id, "connected").await;
    assert_eq!(host.recv_type("message").await["data"], two);
    assert_eq!(host.recv_type("message").await["data"]["n"], 3);
    host.assert_alive().await;
}

#[tokio::test]
async fn a_resume_cut_midway_can_be_resumed_again() {
    let server = start_with(fault_config()).await;
    let addr = server.local_addr();
    let proxy = Proxy::start(addr).await;
    let (mut host, _) = plain_host(addr, "rr").await;
    let (c, link) = via(&proxy).await;
    let (g, _) = rjoin_on(c, "rr", "g", "client").await;
    host.recv_type("member_joined").await;
    link.cut();
    let held = g.drop_socket();
    member_updated(&mut host, &held.id, "reconnecting").await;
    host.send(&message(json!({"n": 1}), None)).await;
    host.send(&message(json!({"n": 2}), None)).await;

    let resume_frame = encode_client(&token_msg(&held.token, Some(held.last)), unix_ms()).unwrap();
    // 1. The resume frame itself is cut (20 bytes reach the server): nothing happens.
    let (mut c, link) = via(&proxy).await;
    link.cut_after(Dir::ToServer, 20);
    c.send_text(&resume_frame).await;
    within("the cut", link.wait_cut()).await;
    assert_eq!(c.recv_end().await, (vec![], Ended::Eof));

    // 2. The server resumes, but its answer is cut mid-token: back, then away again.
    let (mut c, link) = via(&proxy).await;
    link.cut_after(Dir::ToClient, 30);
    c.send_text(&resume_frame).await;
    within("the cut", link.wait_cut()).await;
    assert_eq!(c.recv_end().await, (vec![], Ended::Eof));
    member_updated(&mut host, &held.id, "connected").await;
    member_updated(&mut host, &held.id, "reconnecting").await;

    // 3. A whole resume: the same replay as the lost one would have been.
    let (c, _) = via(&proxy).await;
    let (mut g, resumed) = held.resume_on(c, None).await;
    assert_eq!(
        (resumed["lastSeq"].as_u64(), resumed["replayed"].as_u64()),
        (Some(0), Some(2))
    );
    assert_eq!(g.recv_type("message").await["data"]["n"], 1);
    assert_eq!(g.recv_type("message").await["data"]["n"], 2);
    member_updated(&mut host, &g.id, "connected").await;
    g.assert_nothing_queued().await;
}

/// A small resumable client for the fault tests: sends `total` numbered messages
/// (`{"n": i}`), resends what follows `resumed.lastSeq` after every cut, acks what it
/// receives, and records every message by `seq` (duplicates counted, never recorded).
struct Peer {
    session: String,
    device: String,
    /// The cut to arm on each new connection, in order (the first after the join).
    cuts: VecDeque<(Dir, u64)>,
    token: String,
    id: String,
    /// The last server seq processed.
    last: u64,
    /// The last seq acknowledged to the server.
    acked: u64,
    next: u64,
    /// Sent and not acknowledged by the server: resent after a resume.
    outbox: VecDeque<(u64, String)>,
    sent: u64,
    total: u64,
    /// Stop after this many messages sent until `pause` lets go (once).
    pause: Option<(u64, Arc<tokio::sync::Barrier>)>,
    /// Messages received: (from, n).
    got: Vec<(String, u64)>,
    resumes: u64,
    /// Connections opened after the first (resume attempts, cut or not).
    reconnects: u64,
    /// `resumed.lastSeq` of every resume, in order.
    resumed_at: Vec<u64>,
    first_resume: Option<Instant>,
    duplicates: u64,
    /// How long a read waits before the peer acks what it has and maybe heartbeats.
    tick: Duration,
    /// How often an idle peer heartbeats.
    beat: Duration,
    last_beat: Instant,
    /// A peer still running at this point fails, with its state.
    deadline: Instant,
}

impl Peer {
    /// Joins through the proxy (no cut armed yet); returns the peer and its connection.
    async fn start(
        proxy: &Proxy,
        session: &str,
        device: &str,
        kind: &str,
        total: u64,
    ) -> (Peer, Client, Link) {
        let (c, link) = via(proxy).await;
        let (m, _) = rjoin_on(c, session, device, kind).await;
        let peer = Peer {
            session: session.into(),
            device: device.into(),
            cuts: VecDeque::new(),
            token: m.token,
            id: m.id,
            last: m.last,
            acked: 0,
            next: 1,
            outbox: VecDeque::new(),
            sent: 0,
            total,
            pause: None,
            got: Vec::new(),
            resumes: 0,
            reconnects: 0,
            resumed_at: Vec::new(),
            first_resume: None,
            duplicates: 0,
            tick: Duration::from_millis(50),
            beat: Duration::from_millis(500),
            last_beat: Instant::now(),
            deadline: Instant::now() + Duration::from_secs(50),
        };
        (peer, m.c, link)
    }

    fn finished(&self, expect: usize) -> bool {
        self.sent == self.total && self.outbox.is_empty() && self.got.len() >= expect
    }

    /// Drives the peer until every peer of the test has finished; reconnects and resumes
    /// after every cut.
    async fn run(
        mut self,
        first: (Client, Link),
        proxy: Arc<Proxy>,
        expect: usize,
        done: Arc<AtomicUsize>,
        peers: usize,
    ) -> Peer {
        let mut conn = Some(first);
        let mut counted = false;
        'conn: loop {
            let mut c = match conn.take() {
                Some((c, link)) => {
                    if let Some((dir, n)) = self.cuts.pop_front() {
                        link.cut_after(dir, n);
                    }
                    c
                }
                None => {
                    self.reconnects += 1;
                    let (mut c, link) = via(&proxy).await;
                    if let Some((dir, n)) = self.cuts.pop_front() {
                        link.cut_after(dir, n);
                    }
                    if !self.resume(&mut c).await {
                        continue 'conn;
                    }
                    c
                }
            };
            loop {
                // Write what the window allows.
                let paused = matches!(&self.pause, Some((at, _)) if self.sent >= *at);
                if paused {
                    let (_, barrier) = self.pause.take().unwrap();
                    barrier.wait().await;
                }
                while self.sent < self.total && self.outbox.len() < 32 {
                    if matches!(&self.pause, Some((at, _)) if self.sent >= *at) {
                        break;
                    }
                    let seq = self.next;
                    self.next += 1;
                    let m = message(json!({"n": self.sent, "from": self.device}), None);
                    let frame = encode_client_numbered(&m, unix_ms(), Some(seq)).unwrap();
                    self.outbox.push_back((seq, frame.clone()));
                    self.sent += 1;
                    if c.ws.send(Message::text(frame)).await.is_err() {
                        continue 'conn;
                    }
                }
                if !counted && self.finished(expect) {
                    counted = true;
                    done.fetch_add(1, Ordering::SeqCst);
                }
                if done.load(Ordering::SeqCst) == peers {
                    return self;
                }
                assert!(
                    Instant::now() < self.deadline,
                    "{}/{} ({}) stalled: {} of {expect} messages in, {} of {} sent, {} unacknowledged, \
                     {} resumes (lastSeq {:?}), last seq {}, next seq {}; {} of {peers} peers \
                     done; got {:?}",
                    self.session,
                    self.device,
                    self.id,
                    self.got.len(),
                    self.sent,
                    self.total,
                    self.outbox.len(),
                    self.resumes,
                    self.resumed_at,
                    self.last,
                    self.next,
                    done.load(Ordering::SeqCst),
                    if self.got.len() < expect {
                        &self.got[..]
                    } else {
                        &[]
                    },
                );
                match tokio::time::timeout(self.tick, c.ws.next()).await {
                    Err(_) => {
                        let mut ok = true;
                        if self.last_beat.elapsed() >= self.beat {
                            self.last_beat = Instant::now();
                            ok = self.send_plain(&mut c, &ClientMessage::Heartbeat).await;
                        }
                        if self.last > self.acked {
                            ok &= self.ack(&mut c).await;
                        }
                        if !ok {
                            continue 'conn;
                        }
                    }
                    Ok(Some(Ok(m))) => {
                        if m.is_close() {
                            continue 'conn;
                        }
                        if let Some(text) = m.as_text() {
                            let v: Value = serde_json::from_str(text).unwrap();
                            self.handle(&v);
                            if self.last >= self.acked + 10 && !self.ack(&mut c).await {
                                continue 'conn;
                            }
                        }
                    }
                    Ok(Some(Err(_))) | Ok(None) => continue 'conn,
                }
            }
        }
    }

    async fn send_plain(&mut self, c: &mut Client, m: &ClientMessage) -> bool {
        let frame = encode_client(m, unix_ms()).unwrap();
        c.ws.send(Message::text(frame)).await.is_ok()
    }

    async fn ack(&mut self, c: &mut Client) -> bool {
        self.acked = self.last;
        self.send_plain(c, &ClientMessage::Ack { seq: self.last })
            .await
    }

    /// The next frame, or `None` when the socket ended; a stall fails the test.
    async fn next_frame(&self, c: &mut Client) -> Option<Value> {
        loop {
            let next = tokio::time::timeout(Duration::from_secs(30), c.ws.next())
                .await
                .unwrap_or_else(|_| panic!("{}: no frame in 30 s", self.device));
            match next {
                Some(Ok(m)) if m.is_close() => return None,
                Some(Ok(m)) => {
                    if let Some(text) = m.as_text() {
                        return Some(serde_json::from_str(text).unwrap());
                    }
                }
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Resume on `c`: `false` if the socket was cut before the server's `resumed`.
    async fn resume(&mut self, c: &mut Client) -> bool {
        let frame = token_msg(&self.token.clone(), Some(self.last));
        if !self.send_plain(c, &frame).await {
            return false;
        }
        let Some(echo) = self.next_frame(c).await else {
            return false;
        };
        assert_eq!(
            echo["type"], "token",
            "{}: resume answered {echo}",
            self.device
        );
        assert_eq!(echo["token"], self.token.as_str());
        let Some(resumed) = self.next_frame(c).await else {
            return false;
        };
        assert_eq!(resumed["type"], "resumed", "{resumed}");
        let m = resumed["lastSeq"].as_u64().unwrap();
        assert!(m < self.next, "{}: lastSeq {m} was never sent", self.device);
        self.resumes += 1;
        self.resumed_at.push(m);
        self.first_resume.get_or_insert_with(Instant::now);
        self.outbox.retain(|(seq, _)| *seq > m);
        // The acked ones are gone from the server's side; the last ack may have been lost.
        self.acked = self.acked.min(self.last);
        let resend: Vec<String> = self.outbox.iter().map(|(_, f)| f.clone()).collect();
        for frame in resend {
            if c.ws.send(Message::text(frame)).await.is_err() {
                return false;
            }
        }
        true
    }

    fn handle(&mut self, v: &Value) {
        let kind = v["type"].as_str().unwrap();
        match kind {
            "ack" => {
                let seq = v["seq"].as_u64().unwrap();
                assert!(
                    seq < self.next,
                    "{}: ack for a seq never sent: {v}",
                    self.device
                );
                self.outbox.retain(|(s, _)| *s > seq);
            }
            "pong" => {}
            "token" | "resumed" | "resume_failed" | "welcome" => {
                panic!("{}: unexpected {v}", self.device)
            }
            _ => {
                let seq = v["seq"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{}: unnumbered {v}", self.device));
                if seq <= self.last {
                    self.duplicates += 1;
                    return;
                }
                assert_eq!(
                    seq,
                    self.last + 1,
                    "{}: a server frame was lost: {v}",
                    self.device
                );
                self.last = seq;
                match kind {
                    "message" => self.got.push((
                        v["from"].as_str().unwrap().to_string(),
                        v["data"]["n"].as_u64().unwrap(),
                    )),
                    "error" => panic!("{}: the server refused a frame: {v}", self.device),
                    _ => {}
                }
            }
        }
    }

    /// Asserts every message of every other peer arrived exactly once, in order.
    fn check(&self, others: &[(String, u64)]) {
        assert_eq!(self.duplicates, 0, "{}: replayed duplicates", self.device);
        for (id, total) in others {
            let ns: Vec<u64> = self
                .got
                .iter()
                .filter(|(from, _)| from == id)
                .map(|(_, n)| *n)
                .collect();
            let want: Vec<u64> = (0..*total).collect();
            assert_eq!(
                ns, want,
                "{} from {id}: lost, doubled or reordered",
                self.device
            );
        }
        let senders: BTreeSet<&String> = self.got.iter().map(|(f, _)| f).collect();
        assert_eq!(
            senders.len(),
            others.len(),
            "{}/{}",
            self.session,
            self.device
        );
    }
}

/// `peers` resumable members (one host), all through the proxy, each sending `total`
/// messages while each of their connections is cut, `cuts` times in all, at a point drawn
/// from `seed`: in one direction, after 1 to `within` bytes (so mostly mid-frame; small
/// points cut the resume exchange itself): every message reaches every other member exactly
/// once, in order.
async fn exactly_once_across_cuts(seed: u64, peers: usize, total: u64, cuts: usize, within: u64) {
    let server = start_with(fault_config()).await;
    let proxy = Arc::new(Proxy::start(server.local_addr()).await);
    let session = format!("eo-{seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut started = Vec::new();
    for i in 0..peers {
        let kind = if i == 0 { "host" } else { "client" };
        let (mut peer, c, link) =
            Peer::start(&proxy, &session, &format!("p{i}"), kind, total).await;
        for _ in 0..cuts {
            let dir = if rng.bool() {
                Dir::ToServer
            } else {
                Dir::ToClient
            };
            peer.cuts.push_back((dir, rng.u64(1..within)));
        }
        started.push((peer, (c, link)));
    }
    let done = Arc::new(AtomicUsize::new(0));
    let ids: Vec<(String, u64)> = started.iter().map(|(p, _)| (p.id.clone(), total)).collect();
    let expect = (peers - 1) * total as usize;
    let mut tasks = Vec::new();
    for (peer, c) in started {
        tasks.push(tokio::spawn(peer.run(
            c,
            proxy.clone(),
            expect,
            done.clone(),
            peers,
        )));
    }
    let finished = tokio::time::timeout(
        Duration::from_secs(60),
        futures_util::future::join_all(tasks),
    )
    .await
    .expect("every peer finishes within 60 s");
    for peer in finished {
        let peer = peer.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        let others: Vec<(String, u64)> = ids
            .iter()
            .filter(|(id, _)| *id != peer.id)
            .cloned()
            .collect();
        peer.check(&others);
        assert!(peer.resumes >= 1, "{}: never cut", peer.device);
        eprintln!(
            "{}: {} resumes in {} reconnects",
            peer.device, peer.resumes, peer.reconnects
        );
    }
}

#[tokio::test]
async fn exactly_once_in_order_both_ways_across_cuts_two_peers() {
    exactly_once_across_cuts(1, 2, 300, 8, 2500).await;
}

#[tokio::test]
async fn exactly_once_in_order_both_ways_across_cuts_three_peers() {
    exactly_once_across_cuts(2, 3, 200, 6, 2500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_in_order_both_ways_across_many_small_cuts() {
    exactly_once_across_cuts(3, 2, 400, 16, 2500).await;
}

#[tokio::test]
async fn exactly_once_with_cuts_inside_the_resume_exchange() {
    // Cuts within the first 300 bytes of a connection: most land in the resume frame, the
    // token echo, `resumed` or the replay.
    exactly_once_across_cuts(4, 2, 150, 30, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_over_many_seeds() {
    for seed in 10..20 {
        exactly_once_across_cuts(seed, 3, 200, 10, 2000).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_cut_at_once_all_resume() {
    const SESSIONS: usize = 100;
    const PER_SESSION: usize = 10; // the host and 9 guests: the default max-members
    const TOTAL: u64 = 2;
    let server = start_with(ServerConfig {
        max_connections: 8000,
        max_connections_per_address: 4000,
        max_unjoined_per_address: 4000,
        join_rate_per_address: 0,
        heartbeat_timeout: Duration::from_secs(30),
        resume_window: Duration::from_secs(30),
        ack_every: 10,
        ack_interval: Duration::from_millis(200),
        ..fault_config()
    })
    .await;
    let proxy = Arc::new(Proxy::start(server.local_addr()).await);
    let barrier = Arc::new(tokio::sync::Barrier::new(SESSIONS * PER_SESSION + 1));

    // Every session joins at once, each host before its guests.
    // (At most 100 handshakes in flight, so no single join waits long for the server.)
    let joining = Arc::new(tokio::sync::Semaphore::new(100));
    let join_started = Instant::now();
    let mut sessions = Vec::new();
    for s in 0..SESSIONS {
        let proxy = proxy.clone();
        let joining = joining.clone();
        sessions.push(tokio::spawn(async move {
            let session = format!("storm-{s}");
            let host = {
                let _permit = joining.acquire().await.unwrap();
                Peer::start(&proxy, &session, "host", "host", TOTAL).await
            };
            let guests = (1..PER_SESSION).map(|i| {
                let proxy = proxy.clone();
                let session = session.clone();
                let joining = joining.clone();
                async move {
                    let _permit = joining.acquire().await.unwrap();
                    Peer::start(&proxy, &session, &format!("g{i}"), "client", TOTAL).await
                }
            });
            let mut all = vec![host];
            all.extend(futures_util::future::join_all(guests).await);
            all
        }));
    }
    let joined = tokio::time::timeout(
        Duration::from_secs(60),
        futures_util::future::join_all(sessions),
    )
    .await
    .expect("1000 joins within 60 s");
    eprintln!(
        "1000 resumable joins through the proxy: {:?}",
        join_started.elapsed()
    );
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    let mut mates = Vec::new();
    for session in joined {
        let session = session.expect("a join panicked");
        let ids: Vec<(String, u64)> = session
            .iter()
            .map(|(p, _, _)| (p.id.clone(), TOTAL))
            .collect();
        for (mut peer, c, link) in session {
            peer.pause = Some((1, barrier.clone()));
            peer.tick = Duration::from_millis(200);
            peer.beat = Duration::from_secs(5);
            peer.deadline = Instant::now() + Duration::from_secs(100);
            mates.push(
                ids.iter()
                    .filter(|(id, _)| *id != peer.id)
                    .cloned()
                    .collect::<Vec<_>>(),
            );
            tasks.push(tokio::spawn(peer.run(
                (c, link),
                proxy.clone(),
                (PER_SESSION - 1) * TOTAL as usize,
                done.clone(),
                SESSIONS * PER_SESSION,
            )));
        }
    }
    // Everyone has sent its first message (some still in flight): cut every connection.
    barrier.wait().await;
    let cut_at = Instant::now();
    proxy.cut_all();
    let finished = tokio::time::timeout(
        Duration::from_secs(120),
        futures_util::future::join_all(tasks),
    )
    .await
    .expect("every client resumed and got everything (each fails itself, with its state, first)");
    let mut last_resume = cut_at;
    for (peer, others) in finished.into_iter().zip(mates) {
        let peer = peer.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        assert!(
            peer.resumes >= 1,
            "{}/{} did not resume",
            peer.session,
            peer.device
        );
        peer.check(&others);
        last_resume = last_resume.max(peer.first_resume.unwrap());
    }
    eprintln!(
        "1000 clients cut at once: all resumed within {:?}; proxy: {}",
        last_resume - cut_at,
        proxy.stats()
    );
}
