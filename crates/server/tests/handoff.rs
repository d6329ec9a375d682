//! Issue 11, session state and handoff, against the real server over loopback WebSockets:
//! `state_set` and its refusals, readiness, a voluntary handoff end to end (with fencing of
//! the former host, the member list and the HTTP view after it), every failure path, the
//! automatic handoff on host loss (plain and resumable hosts), sessions opened under a fresh
//! code, and the LOUDSYNC app's members in a session whose host changes.
//!
//! The frames of this layer are compared whole (their `timestamp` checked, then removed), so a
//! field added, missing or renamed on the wire fails a test; member entries, whose `latency`
//! comes and goes, are checked field by field. Timers are short and configured
//! (a 300 ms handoff timeout where a timeout is the point, a 500 ms resume window); nothing
//! here sleeps to assert timing.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use loudsync_protocol::client::merge_tokens;
use loudsync_protocol::{app, ClientMessage, DeviceType, Join, StateChange};
use loudsync_server::config::OnHostLoss;
use loudsync_server::ServerConfig;
use serde_json::{json, Map, Value};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Short timers, but members that do not heartbeat during a test stay; a handoff waits long
/// enough (5 s) that only the timeout test ever sees one run out.
fn config() -> ServerConfig {
    ServerConfig {
        heartbeat_timeout: Duration::from_secs(30),
        handoff_timeout: Duration::from_secs(5),
        ..test_config()
    }
}

/// `config()` with `--on-host-loss handoff`.
fn handing_off() -> ServerConfig {
    ServerConfig {
        on_host_loss: OnHostLoss::Handoff,
        ..config()
    }
}

/// How long a test listens to show that nothing arrives.
const QUIET: Duration = Duration::from_millis(150);

/// Checks `v`'s `timestamp` and returns the frame without it, to compare whole.
fn bare(mut v: Value) -> Value {
    assert!(v["timestamp"].is_u64(), "no timestamp in {v}");
    v.as_object_mut().unwrap().remove("timestamp");
    v
}

/// The next frame on `c`, without its `timestamp`.
async fn next(c: &mut Client) -> Value {
    bare(c.recv().await)
}

/// The `clientId` of a `welcome`.
fn client_id(welcome: &Value) -> String {
    welcome["clientId"].as_str().expect("clientId").to_string()
}

/// A JSON object as a map.
fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// `state_set` replacing the whole document.
fn set_state(state: Value, base_version: Option<u64>, term: Option<u64>) -> ClientMessage {
    ClientMessage::StateSet {
        change: StateChange::Replace(object(state)),
        base_version,
        term,
    }
}

/// `state_set` merge-patching the document.
fn patch_state(patch: Value, base_version: Option<u64>, term: Option<u64>) -> ClientMessage {
    ClientMessage::StateSet {
        change: StateChange::Patch(object(patch)),
        base_version,
        term,
    }
}

fn ready(ready: bool) -> ClientMessage {
    ClientMessage::HandoffReady { ready }
}

fn request(target: Option<&str>) -> ClientMessage {
    ClientMessage::HandoffRequest {
        target_id: target.map(str::to_string),
    }
}

fn accept(handoff_id: &str) -> ClientMessage {
    ClientMessage::HandoffAccept {
        handoff_id: handoff_id.to_string(),
    }
}

fn decline(handoff_id: &str, reason: Option<&str>) -> ClientMessage {
    ClientMessage::HandoffDecline {
        handoff_id: handoff_id.to_string(),
        reason: reason.map(str::to_string),
    }
}

/// The `state` frame every member gets.
fn state_frame(state: Value, version: u64, term: u64, by: &str) -> Value {
    json!({"type": "state", "state": state, "version": version, "term": term, "updatedBy": by})
}

/// The `host_changed` frame every member gets.
fn host_changed(new: &str, previous: &str, term: u64, reason: &str) -> Value {
    json!({"type": "host_changed", "hostId": new, "previousHostId": previous, "term": term,
           "reason": reason})
}

/// An `error` frame (without its timestamp).
fn error(code: &str, message: &str, details: Option<Value>) -> Value {
    let mut e = json!({"type": "error", "code": code, "message": message});
    if let Some(d) = details {
        e["details"] = d;
    }
    e
}

/// The fencing refusal of a host-only frame from a member that is not the host.
fn not_host(message: &str, host: &str, term: u64) -> Value {
    error(
        "unauthorized",
        message,
        Some(json!({"hostId": host, "term": term})),
    )
}

/// Asserts `c`'s next frame is `member_updated` for `id` with this readiness (and connected,
/// not host).
async fn expect_ready_update(c: &mut Client, id: &str, ready: bool) {
    let v = next(c).await;
    assert_eq!(v["type"], "member_updated", "{v}");
    let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["member", "type"], "{v}");
    let m = &v["member"];
    assert_eq!(m["id"], id, "{v}");
    assert_eq!(m["handoffReady"], ready, "{v}");
    assert_eq!(m["isHost"], false, "{v}");
    assert_eq!(m["connectionStatus"], "connected", "{v}");
}

/// `(id, isHost, handoffReady)` of each entry of a member list, in order.
fn roles(members: &Value) -> Vec<(String, bool, bool)> {
    members
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_string(),
                m["isHost"].as_bool().unwrap(),
                m["handoffReady"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// Asks for a `member_list` and returns its `(id, isHost, handoffReady)` rows; the reply
/// must be the next frame.
async fn listed(c: &mut Client) -> Vec<(String, bool, bool)> {
    c.send(&ClientMessage::MemberList).await;
    let list = c.recv_type("member_list").await;
    roles(&list["members"])
}

fn row(id: &str, host: bool, ready: bool) -> (String, bool, bool) {
    (id.to_string(), host, ready)
}

/// `GET /v1/sessions/<id>`: the status and the JSON answer.
async fn http_session(server: &loudsync_server::Server, id: &str) -> (u16, Value) {
    let r = reqwest::get(format!("{}/v1/sessions/{id}", http(server)))
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Asserts every client in `cs` gets exactly `frame` next.
async fn all_get(cs: &mut [&mut Client], frame: &Value) {
    for c in cs.iter_mut() {
        assert_eq!(&next(c).await, frame);
    }
}

/// Asserts none of `cs` gets anything for [`QUIET`].
async fn all_quiet(cs: &mut [&mut Client]) {
    for c in cs.iter_mut() {
        c.expect_silence(QUIET).await;
    }
}

/// Starts a named handoff from `host` to `target` and reads both first frames; returns the
/// handoff id.
async fn start_handoff(
    host: &mut Client,
    host_id: &str,
    target: &mut Client,
    target_id: &str,
) -> String {
    host.send(&request(Some(target_id))).await;
    let started = next(host).await;
    assert_eq!(started["type"], "handoff_started", "{started}");
    assert_eq!(started["targetId"], target_id, "{started}");
    let h = started["handoffId"].as_str().unwrap().to_string();
    let forwarded = next(target).await;
    assert_eq!(forwarded["type"], "handoff_request", "{forwarded}");
    assert_eq!(forwarded["handoffId"], h.as_str(), "{forwarded}");
    assert_eq!(forwarded["fromId"], host_id, "{forwarded}");
    h
}

/// Reads the socket's end: a close 1000, and nothing before it but `before`.
async fn closes_normally_after(c: &mut Client, before: &[Value]) {
    let (seen, end) = c.recv_end().await;
    let seen: Vec<Value> = seen.into_iter().map(bare).collect();
    assert_eq!(seen, before);
    assert!(
        matches!(end, Ended::Close(1000, _)),
        "expected a close 1000, got {end:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Session state
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_hosts_state_set_whole_and_patch_reaches_every_member_and_a_later_joiner() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let (h, hw, _) = join(addr, "st", "host-dev", "host").await;
    let host_id = client_id(&hw);
    // A fresh session: `{}`, version 0, term 1, in the welcome beside clientId and
    // sessionInfo.
    assert_eq!(
        bare(hw.clone()),
        json!({"type": "welcome", "clientId": host_id,
               "sessionInfo": {"id": "st", "name": "host-dev name's session", "hostId": host_id},
               "state": {}, "version": 0, "term": 1})
    );
    let mut h = h;
    let (mut a, _, _) = join(addr, "st", "dev-a", "client").await;
    h.recv_type("member_joined").await;

    // The whole document, unconditionally.
    h.send(&set_state(json!({"track": "t1", "pos": 10}), None, None))
        .await;
    let first = state_frame(json!({"track": "t1", "pos": 10}), 1, 1, &host_id);
    all_get(&mut [&mut h, &mut a], &first).await;

    // A merge patch on version 1, naming the term: `null` removes a key, nested objects
    // merge, and every member gets the whole result, never the patch.
    h.send(&patch_state(
        json!({"pos": null, "queue": {"next": "t2"}}),
        Some(1),
        Some(1),
    ))
    .await;
    let second = state_frame(
        json!({"track": "t1", "queue": {"next": "t2"}}),
        2,
        1,
        &host_id,
    );
    all_get(&mut [&mut h, &mut a], &second).await;
    h.send(&patch_state(
        json!({"queue": {"after": "t3"}}),
        Some(2),
        None,
    ))
    .await;
    let third = state_frame(
        json!({"track": "t1", "queue": {"next": "t2", "after": "t3"}}),
        3,
        1,
        &host_id,
    );
    all_get(&mut [&mut h, &mut a], &third).await;

    // A later joiner gets the current document in its welcome, and no `state` frames.
    let (mut late, lw, _) = join(addr, "st", "dev-late", "client").await;
    assert_eq!(
        bare(lw.clone()),
        json!({"type": "welcome", "clientId": client_id(&lw),
               "sessionInfo": {"id": "st", "name": "host-dev name's session", "hostId": host_id},
               "state": {"track": "t1", "queue": {"next": "t2", "after": "t3"}},
               "version": 3, "term": 1})
    );
    late.expect_silence(QUIET).await;
    h.recv_type("member_joined").await;
    a.recv_type("member_joined").await;

    // A replacement drops what it does not name.
    h.send(&set_state(json!({"track": "t9"}), Some(3), None))
        .await;
    let fourth = state_frame(json!({"track": "t9"}), 4, 1, &host_id);
    all_get(&mut [&mut h, &mut a, &mut late], &fourth).await;
}

#[tokio::test]
async fn refused_state_sets_answer_the_sender_only_and_change_nothing() {
    let server = start_with(ServerConfig {
        max_state_bytes: 40,
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let (mut cs, ids) = party(addr, "ref", 1).await;
    let (h, rest) = cs.split_at_mut(1);
    let (h, a) = (&mut h[0], &mut rest[0]);
    let host_id = &ids[0];
    h.send(&set_state(json!({"n": 1}), None, None)).await;
    let v1 = state_frame(json!({"n": 1}), 1, 1, host_id);
    all_get(&mut [&mut *h, &mut *a], &v1).await;

    // A member that is not the host: unauthorized with who is, and in which term; its
    // socket stays open; the host hears nothing.
    a.send(&set_state(json!({"n": 666}), None, None)).await;
    assert_eq!(
        next(a).await,
        not_host(
            "state_set: only the host may set the session state",
            host_id,
            1
        )
    );
    a.assert_alive().await;
    // Fencing comes first: a non-host's frame with a wrong term and version is still
    // `unauthorized`.
    a.send(&patch_state(json!({"n": 2}), Some(0), Some(7)))
        .await;
    assert_eq!(next(a).await["code"], "unauthorized");

    // A stale base version: the current one in details.
    h.send(&set_state(json!({"n": 2}), Some(0), None)).await;
    assert_eq!(
        next(h).await,
        error(
            "stale_version",
            "state_set: baseVersion 0 is not the current version 1; apply the latest `state` and retry",
            Some(json!({"currentVersion": 1}))
        )
    );
    // A term that is not the current one: stale_term with the fencing details, checked
    // before the version.
    h.send(&set_state(json!({"n": 2}), Some(0), Some(2))).await;
    assert_eq!(
        next(h).await,
        error(
            "stale_term",
            "state_set: term 2 is not the current term 1",
            Some(json!({"hostId": host_id, "term": 1}))
        )
    );
    // A result over --max-state-bytes (40): the sizes in details. `{"n":1,"pad":"..."}` is
    // 16 bytes plus the padding.
    let pad = "x".repeat(30);
    h.send(&patch_state(json!({"pad": pad}), Some(1), Some(1)))
        .await;
    assert_eq!(
        next(h).await,
        error(
            "state_too_large",
            "state_set: the resulting state is 46 bytes, over the 40-byte limit",
            Some(json!({"maxBytes": 40, "bytes": 46}))
        )
    );
    // Exactly at the limit is accepted: 16 + 24 = 40.
    let pad = "x".repeat(24);
    h.send(&patch_state(json!({"pad": pad}), Some(1), Some(1)))
        .await;
    let v2 = state_frame(json!({"n": 1, "pad": pad}), 2, 1, host_id);
    all_get(&mut [&mut *h, &mut *a], &v2).await;

    // Nothing the refusals touched changed: a late joiner sees version 2.
    let (_late, lw, _) = join(addr, "ref", "late", "client").await;
    assert_eq!(lw["version"], 2);
    assert_eq!(lw["state"], json!({"n": 1, "pad": pad}));
    assert_eq!(lw["term"], 1);
    h.recv_type("member_joined").await;
    a.recv_type("member_joined").await;
    all_quiet(&mut [&mut *h, &mut *a]).await;
    h.assert_alive().await;
}

#[tokio::test]
async fn malformed_state_sets_are_invalid_message_with_the_decoders_text() {
    let server = start_with(config()).await;
    let (mut cs, _) = party(server.local_addr(), "bad", 1).await;
    let frames = [
        (
            r#"{"type":"state_set","state":{"a":1},"patch":{"b":2}}"#,
            Some("state_set: give exactly one of `state` (the whole document) or `patch` (a merge patch), not both"),
        ),
        (
            r#"{"type":"state_set"}"#,
            Some("state_set: missing field `state` (the whole document) or `patch` (a merge patch)"),
        ),
        (
            r#"{"type":"state_set","baseVersion":0}"#,
            Some("state_set: missing field `state` (the whole document) or `patch` (a merge patch)"),
        ),
        (
            r#"{"type":"state_set","state":[1,2]}"#,
            Some("state_set: field `state` must be a JSON object, got an array"),
        ),
        (
            r#"{"type":"state_set","patch":"x"}"#,
            Some("state_set: field `patch` must be a JSON object, got a string"),
        ),
        (
            r#"{"type":"state_set","state":7}"#,
            Some("state_set: field `state` must be a JSON object, got a number"),
        ),
        (r#"{"type":"state_set","state":{},"baseVersion":1.5}"#, None),
        (r#"{"type":"state_set","state":{},"baseVersion":"1"}"#, None),
        (r#"{"type":"state_set","state":{},"baseVersion":-1}"#, None),
        (r#"{"type":"state_set","patch":{},"term":"1"}"#, None),
    ];
    // From the host and from a member alike: the decoder answers before any role check.
    for c in cs.iter_mut() {
        for (frame, text) in frames {
            let decoder = loudsync_protocol::decode(frame).expect_err(frame).message;
            if let Some(text) = text {
                assert_eq!(decoder, text, "{frame}");
            } else {
                assert!(
                    decoder.starts_with("state_set: in `baseVersion`")
                        || decoder.starts_with("state_set: in `term`"),
                    "{frame}: {decoder}"
                );
            }
            c.send_text(frame).await;
            assert_eq!(
                next(c).await,
                error("invalid_message", &decoder, None),
                "{frame}"
            );
        }
        c.assert_alive().await;
    }
    // Nothing was set: a joiner sees the fresh document.
    let (_j, w, _) = join(server.local_addr(), "bad", "j", "client").await;
    assert_eq!(
        (w["state"].clone(), w["version"].clone()),
        (json!({}), json!(0))
    );
}

#[tokio::test]
async fn the_layers_frames_before_join_get_send_join_first() {
    let server = start_with(config()).await;
    let mut c = Client::connect(server.local_addr()).await;
    for (kind, message) in [
        ("state_set", set_state(json!({"a": 1}), Some(0), Some(1))),
        ("handoff_ready", ready(true)),
        ("handoff_request", request(Some("c_000000000000"))),
        ("handoff_accept", accept("h1")),
        ("handoff_decline", decline("h1", Some("no"))),
    ] {
        c.send(&message).await;
        assert_eq!(
            next(&mut c).await,
            error(
                "invalid_message",
                &format!("{kind}: send `join` first; this connection is not in a session"),
                None
            )
        );
    }
    // The socket is still open and may join.
    c.assert_alive().await;
    c.send(&join_msg("after", "h", "host")).await;
    c.recv_type("welcome").await;
}

// ---------------------------------------------------------------------------------------------
// A voluntary handoff
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_voluntary_handoff_among_three_members_moves_control_and_fences_the_old_host() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let (mut cs, ids) = party(addr, "vol", 2).await;
    let mut b = cs.pop().unwrap();
    let mut a = cs.pop().unwrap();
    let mut h = cs.pop().unwrap();
    let (hid, aid, bid) = (ids[0].as_str(), ids[1].as_str(), ids[2].as_str());

    h.send(&set_state(json!({"track": "t1"}), Some(0), None))
        .await;
    let s1 = state_frame(json!({"track": "t1"}), 1, 1, hid);
    all_get(&mut [&mut h, &mut a, &mut b], &s1).await;

    // b declares itself ready: the others get member_updated, b itself nothing.
    b.send(&ready(true)).await;
    expect_ready_update(&mut h, bid, true).await;
    expect_ready_update(&mut a, bid, true).await;
    b.expect_silence(QUIET).await;
    // Re-declaring changes nothing and tells nobody.
    b.send(&ready(true)).await;
    all_quiet(&mut [&mut h, &mut a, &mut b]).await;

    // The host asks without a target: the server picks the ready member.
    h.send(&request(None)).await;
    assert_eq!(
        next(&mut h).await,
        json!({"type": "handoff_started", "handoffId": "h1", "targetId": bid})
    );
    assert_eq!(
        next(&mut b).await,
        json!({"type": "handoff_request", "handoffId": "h1", "fromId": hid,
               "state": {"track": "t1"}, "version": 1, "term": 1, "timeoutMs": 5000})
    );
    a.expect_silence(QUIET).await;

    // While pending the host may still set state, and the candidate gets it.
    h.send(&patch_state(json!({"pos": 42}), Some(1), Some(1)))
        .await;
    let s2 = state_frame(json!({"track": "t1", "pos": 42}), 2, 1, hid);
    all_get(&mut [&mut h, &mut a, &mut b], &s2).await;

    b.send(&accept("h1")).await;
    assert_eq!(
        next(&mut h).await,
        json!({"type": "handoff_ack", "handoffId": "h1", "hostId": bid, "term": 2})
    );
    let changed = host_changed(bid, hid, 2, "handoff");
    all_get(&mut [&mut h, &mut a, &mut b], &changed).await;

    // The member list: the new host first, the old one an ordinary (ready) member in its
    // join-order place; the reply is the very next frame (no member_updated came first).
    let after = vec![
        row(bid, true, false),
        row(hid, false, true),
        row(aid, false, false),
    ];
    assert_eq!(listed(&mut a).await, after);
    assert_eq!(listed(&mut h).await, after);
    assert_eq!(listed(&mut b).await, after);

    // HTTP agrees.
    let (status, view) = http_session(&server, "vol").await;
    assert_eq!(status, 200);
    assert_eq!(view["hostId"], bid, "{view}");
    assert_eq!(roles(&view["members"]), after, "{view}");

    // A joiner's welcome names the new host and the state in term 2.
    let (mut j, jw, jl) = join(addr, "vol", "joiner", "client").await;
    let jid = client_id(&jw);
    assert_eq!(jw["sessionInfo"]["hostId"], bid);
    assert_eq!(
        (
            jw["state"].clone(),
            jw["version"].clone(),
            jw["term"].clone()
        ),
        (json!({"track": "t1", "pos": 42}), json!(2), json!(2))
    );
    assert_eq!(roles(&jl["members"])[0], row(bid, true, false));
    for c in [&mut h, &mut a, &mut b] {
        c.recv_type("member_joined").await;
    }

    // The new host sets state in term 2.
    b.send(&patch_state(json!({"pos": 43}), Some(2), Some(2)))
        .await;
    let s3 = state_frame(json!({"track": "t1", "pos": 43}), 3, 2, bid);
    all_get(&mut [&mut h, &mut a, &mut b, &mut j], &s3).await;

    // The old host is fenced out of every host-only frame, its socket open.
    h.send(&set_state(json!({"track": "mine"}), Some(3), Some(1)))
        .await;
    assert_eq!(
        next(&mut h).await,
        not_host("state_set: only the host may set the session state", bid, 2)
    );
    h.send(&ClientMessage::kick(aid, Some("bye"))).await;
    assert_eq!(
        next(&mut h).await,
        not_host("kick: only the host may kick members", bid, 2)
    );
    h.send(&request(Some(aid))).await;
    assert_eq!(
        next(&mut h).await,
        not_host(
            "handoff_request: only the host may hand control over",
            bid,
            2
        )
    );
    // An ordinary member too.
    a.send(&request(None)).await;
    assert_eq!(
        next(&mut a).await,
        not_host(
            "handoff_request: only the host may hand control over",
            bid,
            2
        )
    );
    h.assert_alive().await;
    all_quiet(&mut [&mut a, &mut b, &mut j]).await;

    // The new host may kick.
    b.send(&ClientMessage::kick(jid.as_str(), Some("out")))
        .await;
    assert_eq!(
        next(&mut j).await,
        json!({"type": "kicked", "reason": "out"})
    );
    for c in [&mut h, &mut a, &mut b] {
        assert_eq!(
            next(c).await,
            json!({"type": "member_left", "memberId": jid, "reason": "kicked"})
        );
    }
}

#[tokio::test]
async fn the_old_host_may_take_control_back_and_its_readiness_comes_first() {
    let server = start_with(config()).await;
    let (mut cs, ids) = party(server.local_addr(), "back", 2).await;
    let mut b = cs.pop().unwrap();
    let mut a = cs.pop().unwrap();
    let mut h = cs.pop().unwrap();
    let (hid, aid, bid) = (ids[0].as_str(), ids[1].as_str(), ids[2].as_str());

    // Hand to a by name (a never declared itself ready; a named target need not).
    let h1 = start_handoff(&mut h, hid, &mut a, aid).await;
    assert_eq!(h1, "h1");
    a.send(&accept(&h1)).await;
    assert_eq!(next(&mut h).await["type"], "handoff_ack");
    let changed = host_changed(aid, hid, 2, "handoff");
    all_get(&mut [&mut h, &mut a, &mut b], &changed).await;

    // b declares now; the old host's declaration (made by the handoff) is older, so a
    // request without a target picks it.
    b.send(&ready(true)).await;
    expect_ready_update(&mut h, bid, true).await;
    expect_ready_update(&mut a, bid, true).await;
    a.send(&request(None)).await;
    assert_eq!(
        next(&mut a).await,
        json!({"type": "handoff_started", "handoffId": "h2", "targetId": hid})
    );
    assert_eq!(
        next(&mut h).await,
        json!({"type": "handoff_request", "handoffId": "h2", "fromId": aid,
               "state": {}, "version": 0, "term": 2, "timeoutMs": 5000})
    );
    h.send(&accept("h2")).await;
    assert_eq!(
        next(&mut a).await,
        json!({"type": "handoff_ack", "handoffId": "h2", "hostId": hid, "term": 3})
    );
    let back = host_changed(hid, aid, 3, "handoff");
    all_get(&mut [&mut h, &mut a, &mut b], &back).await;
    assert_eq!(
        listed(&mut b).await,
        vec![
            row(hid, true, false),
            row(aid, false, true),
            row(bid, false, true)
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Failure paths
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_declined_handoff_leaves_the_host_and_term_as_they_were() {
    let server = start_with(config()).await;
    let (mut cs, ids) = party(server.local_addr(), "dec", 2).await;
    let mut b = cs.pop().unwrap();
    let mut a = cs.pop().unwrap();
    let mut h = cs.pop().unwrap();
    let (hid, aid, bid) = (ids[0].as_str(), ids[1].as_str(), ids[2].as_str());

    let h1 = start_handoff(&mut h, hid, &mut a, aid).await;
    // Another id, or from another member: not pending, nothing changes.
    a.send(&decline("h9", None)).await;
    assert_eq!(
        next(&mut a).await,
        error(
            "handoff_not_pending",
            "handoff_decline: no handoff `h9` is pending for you",
            None
        )
    );
    b.send(&accept(&h1)).await;
    assert_eq!(
        next(&mut b).await,
        error(
            "handoff_not_pending",
            "handoff_accept: no handoff `h1` is pending for you",
            None
        )
    );
    // The candidate declines; its reason is not forwarded.
    a.send(&decline(&h1, Some("busy driving"))).await;
    assert_eq!(
        next(&mut h).await,
        json!({"type": "handoff_failed", "reason": "declined", "handoffId": h1, "targetId": aid})
    );
    all_quiet(&mut [&mut h, &mut a, &mut b]).await;
    // Nothing pending any more.
    a.send(&accept(&h1)).await;
    assert_eq!(next(&mut a).await["code"], "handoff_not_pending");

    // Host and term unchanged.
    h.send(&set_state(json!({"x": 1}), None, Some(1))).await;
    let s = state_frame(json!({"x": 1}), 1, 1, hid);
    all_get(&mut [&mut h, &mut a, &mut b], &s).await;
    assert_eq!(
        listed(&mut b).await,
        vec![
            row(hid, true, false),
            row(aid, false, false),
            row(bid, false, false)
        ]
    );
    // The next request gets the next id.
    let h2 = start_handoff(&mut h, hid, &mut b, bid).await;
    assert_eq!(h2, "h2");
}

#[tokio::test]
async fn a_silent_candidate_times_out_on_both_sides_and_a_late_accept_is_not_pending() {
    let server = start_with(ServerConfig {
        handoff_timeout: Duration::from_millis(300),
        ..config()
    })
    .await;
    let (mut cs, ids) = party(server.local_addr(), "tmo", 2).await;
    let mut b = cs.pop().unwrap();
    let mut a = cs.pop().unwrap();
    let mut h = cs.pop().unwrap();
    let (hid, aid) = (ids[0].as_str(), ids[1].as_str());

    h.send(&request(Some(aid))).await;
    assert_eq!(
        next(&mut h).await,
        json!({"type": "handoff_started", "handoffId": "h1", "targetId": aid})
    );
    assert_eq!(
        next(&mut a).await,
        json!({"type": "handoff_request", "handoffId": "h1", "fromId": hid,
               "state": {}, "version": 0, "term": 1, "timeoutMs": 300})
    );
    // The candidate says nothing; after 300 ms both sides are told.
    assert_eq!(
        next(&mut h).await,
        json!({"type": "handoff_failed", "reason": "timeout", "handoffId": "h1", "targetId": aid})
    );
    assert_eq!(
        next(&mut a).await,
        json!({"type": "handoff_failed", "reason": "timeout", "handoffId": "h1"})
    );
    b.expect_silence(QUIET).await;
    // Too late.
    a.send(&accept("h1")).await;
    assert_eq!(
        next(&mut a).await,
        error(
            "handoff_not_pending",
            "handoff_accept: no handoff `h1` is pending for you",
            None
        )
    );
    all_quiet(&mut [&mut h, &mut b]).await;
    assert_eq!(listed(&mut a).await[0], row(hid, true, false));
    h.send(&set_state(json!({}), None, Some(1))).await;
    assert_eq!(next(&mut h).await, state_frame(json!({}), 1, 1, hid));
}

#[tokio::test]
async fn a_second_request_while_one_is_pending_is_busy_and_the_first_goes_on() {
    let server = start_with(config()).await;
    let (mut cs, ids) = party(server.local_addr(), "busy", 2).await;
    let mut b = cs.pop().unwrap();
    let mut a = cs.pop().unwrap();
    let mut h = cs.pop().unwrap();
    let (hid, aid, bid) = (ids[0].as_str(), ids[1].as_str(), ids[2].as_str());

    let h1 = start_handoff(&mut h, hid, &mut a, aid).await;
    h.send(&request(Some(bid))).await;
    assert_eq!(
        next(&mut h).await,
        json!({"type": "handoff_failed", "reason": "busy"})
    );
    h.send(&request(None)).await;
    assert_eq!(
        next(&mut h).await,
        json!({"type": "handoff_failed", "reason": "busy"})
    );
    b.expect_silence(QUIET).await;
    a.send(&accept(&h1)).await;
    assert_eq!(
        next(&mut h).await,
        json!({"type": "handoff_ack", "handoffId": h1, "hostId": aid, "term": 2})
    );
    let changed = host_changed(aid, hid, 2, "handoff");
    all_get(&mut [&mut h, &mut a, &mut b], &changed).await;
}

#[tokio::test]
async fn no_candidate_when_nobody_is_ready_or_the_target_is_the_host_or_unknown() {
    let server = start_with(config()).await;
    let (mut cs, ids) = party(server.local_addr(), "none", 1).await;
    let mut a = cs.pop().unwrap();
    let mut h = cs.pop().unwrap();
    let (hid, aid) = (ids[0].as_str(), ids[1].as_str());
    let no_candidate = json!({"type": "handoff_failed", "reason": "no_candidate"});
    for target in [None, Some(hid), Some("c_unknown00000"), Some("someone")] {
        h.send(&request(target)).await;
        assert_eq!(next(&mut h).await, no_candidate, "{target:?}");
    }
    // A member that withdrew its readiness is no candidate either.
    a.send(&ready(true)).await;
    expect_ready_update(&mut h, aid, true).await;
    a.send(&ready(false)).await;
    expect_ready_update(&mut h, aid, false).await;
    h.send(&request(None)).await;
    assert_eq!(next(&mut h).await, no_candidate);
    // The host cannot declare itself ready.
    h.send(&ready(true)).await;
    assert_eq!(
        next(&mut h).await,
        error(
            "invalid_message",
            "handoff_ready: the host cannot declare itself ready",
            None
        )
    );
    a.expect_silence(QUIET).await;
    // Nothing was pending: an accept is refused, and the ids were never used up.
    a.send(&accept("h1")).await;
    assert_eq!(next(&mut a).await["code"], "handoff_not_pending");
    let h1 = start_handoff(&mut h, hid, &mut a, aid).await;
    assert_eq!(h1, "h1");
}

#[tokio::test]
async fn the_candidate_dropping_mid_handoff_fails_it_candidate_left() {
    let server = start_with(config()).await;
    let (mut cs, ids) = party(server.local_addr(), "cdrop", 2).await;
    let mut b = cs.pop().unwrap();
    let mut a = cs.pop().unwrap();
    let mut h = cs.pop().unwrap();
    let (hid, aid, bid) = (ids[0].as_str(), ids[1].as_str(), ids[2].as_str());

    let h1 = start_handoff(&mut h, hid, &mut a, aid).await;
    drop(a); // the TCP connection ends, no close frame, no leave
    let left = json!({"type": "member_left", "memberId": aid, "reason": "error"});
    assert_eq!(next(&mut h).await, left);
    assert_eq!(
        next(&mut h).await,
        json!({"type": "handoff_failed", "reason": "candidate_left", "handoffId": h1,
               "targetId": aid})
    );
    assert_eq!(next(&mut b).await, left);
    all_quiet(&mut [&mut h, &mut b]).await;
    assert_eq!(
        listed(&mut b).await,
        vec![row(hid, true, false), row(bid, false, false)]
    );
    // Nothing pending: a new request starts.
    assert_eq!(start_handoff(&mut h, hid, &mut b, bid).await, "h2");
}

#[tokio::test]
async fn the_candidate_leaving_mid_handoff_fails_it_candidate_left() {
    let server = start_with(config()).await;
    let (mut cs, ids) = party(server.local_addr(), "cleave", 1).await;
    let mut a = cs.pop().unwrap();
    let mut h = cs.pop().unwrap();
    let (hid, aid) = (ids[0].as_str(), ids[1].as_str());
    let h1 = start_handoff(&mut h, hid, &mut a, aid).await;
    a.send(&ClientMessage::leave(Some("bye"))).await;
    assert_eq!(
        next(&mut h).await,
        json!({"type": "member_left", "memberId": aid, "reason": "left"})
    );
    assert_eq!(
        next(&mut h).await,
        json!({"type": "handoff_failed", "reason": "candidate_left", "handoffId": h1,
               "targetId": aid})
    );
    closes_normally_after(&mut a, &[]).await;
}

#[tokio::test]
async fn the_host_leaving_mid_handoff_tells_the_candidate_host_left_then_closes() {
    // Under either policy an explicit leave of the host ends the session.
    for policy in [OnHostLoss::Close, OnHostLoss::Handoff] {
        let server = start_with(ServerConfig {
            on_host_loss: policy,
            ..config()
        })
        .await;
        let (mut cs, ids) = party(server.local_addr(), "hleave", 2).await;
        let mut b = cs.pop().unwrap();
        let mut a = cs.pop().unwrap();
        let mut h = cs.pop().unwrap();
        let (hid, aid) = (ids[0].as_str(), ids[1].as_str());
        let h1 = start_handoff(&mut h, hid, &mut a, aid).await;
        h.send(&ClientMessage::leave(None)).await;
        let closed = json!({"type": "session_closed", "reason": "Host ended the session"});
        closes_normally_after(
            &mut a,
            &[
                json!({"type": "handoff_failed", "reason": "host_left", "handoffId": h1}),
                closed.clone(),
            ],
        )
        .await;
        closes_normally_after(&mut b, &[closed]).await;
    }
}

#[tokio::test]
async fn the_host_dropping_mid_handoff_under_handoff_policy_passes_on_without_accept() {
    let server = start_with(handing_off()).await;
    let (mut cs, ids) = party(server.local_addr(), "hdrop", 2).await;
    let mut b = cs.pop().unwrap();
    let mut a = cs.pop().unwrap();
    let h = cs.pop().unwrap();
    let (hid, aid, bid) = (ids[0].as_str(), ids[1].as_str(), ids[2].as_str());
    let mut h = h;
    // b is ready, a is the named candidate: the loss picks b (ready), not the candidate.
    b.send(&ready(true)).await;
    expect_ready_update(&mut h, bid, true).await;
    expect_ready_update(&mut a, bid, true).await;
    let h1 = start_handoff(&mut h, hid, &mut a, aid).await;
    drop(h);
    let left = json!({"type": "member_left", "memberId": hid, "reason": "error"});
    let changed = host_changed(bid, hid, 2, "host_lost");
    assert_eq!(
        next(&mut a).await,
        json!({"type": "handoff_failed", "reason": "host_left", "handoffId": h1})
    );
    all_get(&mut [&mut a, &mut b], &left).await;
    all_get(&mut [&mut a, &mut b], &changed).await;
    // The old candidate's accept is not pending.
    a.send(&accept(&h1)).await;
    assert_eq!(next(&mut a).await["code"], "handoff_not_pending");
    assert_eq!(
        listed(&mut a).await,
        vec![row(bid, true, false), row(aid, false, false)]
    );
}

// ---------------------------------------------------------------------------------------------
// Host loss
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_plain_hosts_drop_hands_the_session_to_the_ready_member() {
    let server = start_with(handing_off()).await;
    let (mut cs, ids) = party(server.local_addr(), "lossr", 3).await;
    let mut c = cs.pop().unwrap();
    let mut b = cs.pop().unwrap();
    let mut a = cs.pop().unwrap();
    let mut h = cs.pop().unwrap();
    let (hid, aid, bid, cid) = (
        ids[0].as_str(),
        ids[1].as_str(),
        ids[2].as_str(),
        ids[3].as_str(),
    );
    h.send(&set_state(json!({"song": 1}), None, None)).await;
    let s = state_frame(json!({"song": 1}), 1, 1, hid);
    all_get(&mut [&mut h, &mut a, &mut b, &mut c], &s).await;
    // c declares first, then b; c withdraws: b's is then the oldest declaration.
    c.send(&ready(true)).await;
    for m in [&mut h, &mut a, &mut b] {
        expect_ready_update(m, cid, true).await;
    }
    b.send(&ready(true)).await;
    for m in [&mut h, &mut a, &mut c] {
        expect_ready_update(m, bid, true).await;
    }
    c.send(&ready(false)).await;
    for m in [&mut h, &mut a, &mut b] {
        expect_ready_update(m, cid, false).await;
    }
    drop(h);
    let left = json!({"type": "member_left", "memberId": hid, "reason": "error"});
    let changed = host_changed(bid, hid, 2, "host_lost");
    for m in [&mut a, &mut b, &mut c] {
        assert_eq!(next(m).await, left);
        assert_eq!(next(m).await, changed);
    }
    assert_eq!(
        listed(&mut a).await,
        vec![
            row(bid, true, false),
            row(aid, false, false),
            row(cid, false, false)
        ]
    );
    // The state survived; the new host sets it in term 2.
    b.send(&patch_state(json!({"song": 2}), Some(1), Some(2)))
        .await;
    let s2 = state_frame(json!({"song": 2}), 2, 2, bid);
    all_get(&mut [&mut a, &mut b, &mut c], &s2).await;
    let (status, view) = http_session(&server, "lossr").await;
    assert_eq!(status, 200);
    assert_eq!(view["hostId"], bid, "{view}");
}

#[tokio::test]
async fn a_plain_hosts_drop_with_nobody_ready_passes_to_the_first_joined() {
    let server = start_with(handing_off()).await;
    let (mut cs, ids) = party(server.local_addr(), "lossf", 2).await;
    let mut b = cs.pop().unwrap();
    let mut a = cs.pop().unwrap();
    let mut h = cs.pop().unwrap();
    let (hid, aid, bid) = (ids[0].as_str(), ids[1].as_str(), ids[2].as_str());
    // A clean WebSocket close without leave is a drop too.
    h.ws.close().await.unwrap();
    let left = json!({"type": "member_left", "memberId": hid, "reason": "error"});
    let changed = host_changed(aid, hid, 2, "host_lost");
    for m in [&mut a, &mut b] {
        assert_eq!(next(m).await, left);
        assert_eq!(next(m).await, changed);
    }
    assert_eq!(
        listed(&mut b).await,
        vec![row(aid, true, false), row(bid, false, false)]
    );
    // The new host leaving alone ends the session (a host's leave), with one member left.
    a.send(&ClientMessage::leave(None)).await;
    closes_normally_after(
        &mut b,
        &[json!({"type": "session_closed", "reason": "Host ended the session"})],
    )
    .await;
}

#[tokio::test]
async fn with_the_default_close_policy_a_plain_hosts_drop_ends_the_session() {
    let server = start_with(config()).await;
    let (mut cs, ids) = party(server.local_addr(), "lossc", 2).await;
    let mut b = cs.pop().unwrap();
    let mut a = cs.pop().unwrap();
    let h = cs.pop().unwrap();
    // b is ready, and still the session closes.
    b.send(&ready(true)).await;
    expect_ready_update(&mut a, &ids[2], true).await;
    drop(h);
    let closed = json!({"type": "session_closed", "reason": "Host disconnected"});
    closes_normally_after(&mut a, std::slice::from_ref(&closed)).await;
    closes_normally_after(&mut b, &[closed]).await;
    let (status, _) = http_session(&server, "lossc").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_hosts_drop_with_no_member_of_ours_left_closes_the_session() {
    let server = start_with(handing_off()).await;
    let addr = server.local_addr();
    let (h, _, _) = join(addr, APP_SESSION, "host-dev", "host").await;
    let mut h = h;
    let mut app = Client::connect(addr).await;
    app_join(&mut app, "app-device", "Phone").await;
    app.recv().await; // WELCOME
    app.recv().await; // MEMBER_LIST
    h.recv_type("member_joined").await;
    drop(h);
    // The app member is no candidate: the session ends as seed 001 says.
    let (seen, end) = app.recv_end().await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["type"], "SESSION_CLOSED", "{seen:?}");
    assert_eq!(seen[0]["payload"], json!({"reason": "Host disconnected"}));
    assert!(matches!(end, Ended::Close(1000, _)), "{end:?}");
}

// ---------------------------------------------------------------------------------------------
// Resumable members: a host gone for good at its window's end, a mid-handoff departure at the
// drop, members away in their window are no candidates
// ---------------------------------------------------------------------------------------------

/// A fresh local token: 32 characters of `[A-Za-z0-9]`.
fn local_token() -> String {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..32)
        .map(|_| ALNUM[fastrand::usize(..ALNUM.len())] as char)
        .collect()
}

/// A resumable connection (seed 003) as a test drives it: it numbers what it sends, checks
/// the server's numbering of what it reads, and can drop its socket and resume.
struct Resumable {
    c: Client,
    id: String,
    token: String,
    /// The last server `seq` read.
    last: u64,
    /// The next client `seq`.
    next: u64,
}

impl Resumable {
    /// The handshake's four steps, then a `join`; returns the member and its `welcome` (the
    /// `member_list` read).
    async fn join(addr: SocketAddr, session: &str, device: &str, kind: &str) -> (Self, Value) {
        let mut c = Client::connect(addr).await;
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
        assert_eq!(c.recv_type("token").await["token"], a.as_str());
        c.send(&join_msg(session, device, kind)).await;
        let welcome = c.recv_type("welcome").await;
        assert_eq!(welcome["resumable"], true, "{welcome}");
        let mut m = Resumable {
            c,
            id: client_id(&welcome),
            token: merge_tokens(&a, &b),
            last: 0,
            next: 1,
        };
        assert_eq!(m.next().await["type"], "member_list");
        (m, welcome)
    }

    /// The next frame, its `seq` checked (one more than the last) and removed with its
    /// `timestamp`.
    async fn next(&mut self) -> Value {
        let mut v = next(&mut self.c).await;
        let seq = v["seq"].as_u64().unwrap_or_else(|| panic!("numbered: {v}"));
        assert_eq!(seq, self.last + 1, "server seq runs on by one: {v}");
        self.last = seq;
        v.as_object_mut().unwrap().remove("seq");
        v
    }

    /// Sends `m`, numbered if it is of a numbered kind.
    async fn send(&mut self, m: &ClientMessage) {
        let seq = m.is_numbered().then(|| {
            self.next += 1;
            self.next - 1
        });
        let frame = loudsync_protocol::encode_client_numbered(m, unix_ms(), seq).unwrap();
        self.c.send_text(&frame).await;
    }

    /// Drops the socket (the TCP connection just ends) and resumes on a new one with the
    /// real `lastSeq`; returns the `resumed` frame (the replay is left to read).
    async fn drop_and_resume(self, addr: SocketAddr, before: impl AsyncFnOnce()) -> (Self, Value) {
        let Resumable {
            c, id, token, last, ..
        } = self;
        drop(c);
        before().await;
        let mut c = Client::connect(addr).await;
        c.send(&ClientMessage::Token {
            token: token.clone(),
            last_seq: Some(last),
        })
        .await;
        assert_eq!(c.recv_type("token").await["token"], token.as_str());
        let resumed = bare(c.recv_type("resumed").await);
        let next = resumed["lastSeq"].as_u64().unwrap() + 1;
        let m = Resumable {
            c,
            id,
            token,
            last,
            next,
        };
        (m, resumed)
    }
}

/// Asserts `c`'s next frame is `member_updated` for `id` with this connection status (and
/// host flag).
async fn expect_status_update(c: &mut Client, id: &str, status: &str, host: bool) {
    let v = next(c).await;
    assert_eq!(v["type"], "member_updated", "{v}");
    assert_eq!(v["member"]["id"], id, "{v}");
    assert_eq!(v["member"]["connectionStatus"], status, "{v}");
    assert_eq!(v["member"]["isHost"], host, "{v}");
}

#[tokio::test]
async fn a_resumable_hosts_drop_waits_for_its_window_then_the_session_passes_on() {
    let server = start_with(ServerConfig {
        resume_window: Duration::from_millis(500),
        ..handing_off()
    })
    .await;
    let addr = server.local_addr();
    let (mut h, _) = Resumable::join(addr, "rh", "host-dev", "host").await;
    let hid = h.id.clone();
    let (mut a, aw, _) = join(addr, "rh", "dev-a", "client").await;
    h.next().await;
    let (mut b, bw, _) = join(addr, "rh", "dev-b", "client").await;
    h.next().await;
    a.recv_type("member_joined").await;
    let (aid, bid) = (client_id(&aw), client_id(&bw));
    b.send(&ready(true)).await;
    assert_eq!(h.next().await["type"], "member_updated");
    expect_ready_update(&mut a, &bid, true).await;

    drop(h);
    // At the drop: only `reconnecting`, the host still the host.
    for m in [&mut a, &mut b] {
        expect_status_update(m, &hid, "reconnecting", true).await;
    }
    // Well inside the window nothing else happens, and the host is still the host.
    all_quiet(&mut [&mut a, &mut b]).await;
    assert_eq!(listed(&mut a).await[0], row(&hid, true, false));
    // A handoff request from a member meanwhile is fenced by the absent host.
    a.send(&request(None)).await;
    assert_eq!(
        next(&mut a).await,
        not_host(
            "handoff_request: only the host may hand control over",
            &hid,
            1
        )
    );
    // At the window's end: the place ends (timeout), then the ready member takes over.
    let left = json!({"type": "member_left", "memberId": hid, "reason": "timeout"});
    let changed = host_changed(&bid, &hid, 2, "host_lost");
    for m in [&mut a, &mut b] {
        assert_eq!(next(m).await, left);
        assert_eq!(next(m).await, changed);
    }
    assert_eq!(
        listed(&mut b).await,
        vec![row(&bid, true, false), row(&aid, false, false)]
    );
}

#[tokio::test]
async fn a_resumable_host_that_resumes_in_its_window_keeps_control() {
    let server = start_with(ServerConfig {
        resume_window: Duration::from_millis(500),
        ..handing_off()
    })
    .await;
    let addr = server.local_addr();
    let (mut h, _) = Resumable::join(addr, "rb", "host-dev", "host").await;
    let hid = h.id.clone();
    let (mut a, aw, _) = join(addr, "rb", "dev-a", "client").await;
    let aid = client_id(&aw);
    h.next().await;
    let (mut h, resumed) = h
        .drop_and_resume(addr, async || {
            expect_status_update(&mut a, &hid, "reconnecting", true).await
        })
        .await;
    assert_eq!(resumed["replayed"], 0, "{resumed}");
    expect_status_update(&mut a, &hid, "connected", true).await;
    // Past where the window would have ended, no host change, and the host still sets
    // state in term 1.
    a.expect_silence(Duration::from_millis(700)).await;
    h.send(&set_state(json!({"back": true}), None, Some(1)))
        .await;
    let s = state_frame(json!({"back": true}), 1, 1, &hid);
    assert_eq!(h.next().await, s);
    assert_eq!(next(&mut a).await, s);
    assert_eq!(
        listed(&mut a).await,
        vec![row(&hid, true, false), row(&aid, false, false)]
    );
}

#[tokio::test]
async fn a_resumable_candidates_drop_fails_the_handoff_at_once() {
    let server = start_with(ServerConfig {
        resume_window: Duration::from_secs(5),
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let (mut h, hw, _) = join(addr, "rc", "host-dev", "host").await;
    let hid = client_id(&hw);
    let (mut a, _) = Resumable::join(addr, "rc", "dev-a", "client").await;
    let aid = a.id.clone();
    h.recv_type("member_joined").await;
    h.send(&request(Some(&aid))).await;
    assert_eq!(
        next(&mut h).await,
        json!({"type": "handoff_started", "handoffId": "h1", "targetId": aid})
    );
    assert_eq!(a.next().await["type"], "handoff_request");
    // The socket drops: the handoff fails at once (not at the window's end), after the
    // event the drop is to the host.
    let (mut a, resumed) = a
        .drop_and_resume(addr, async || {
            expect_status_update(&mut h, &aid, "reconnecting", false).await;
            assert_eq!(
                next(&mut h).await,
                json!({"type": "handoff_failed", "reason": "candidate_left", "handoffId": "h1",
                       "targetId": aid})
            );
        })
        .await;
    // Back: it is told the handoff failed (kept for it while it was away), so no prompt
    // outlives its request; an accept now is not pending.
    assert_eq!(resumed["replayed"], 1, "{resumed}");
    assert_eq!(
        a.next().await,
        json!({"type": "handoff_failed", "reason": "candidate_left", "handoffId": "h1"})
    );
    expect_status_update(&mut h, &aid, "connected", false).await;
    a.send(&accept("h1")).await;
    assert_eq!(
        a.next().await,
        error(
            "handoff_not_pending",
            "handoff_accept: no handoff `h1` is pending for you",
            None
        )
    );
    assert_eq!(listed(&mut h).await[0], row(&hid, true, false));
}

#[tokio::test]
async fn a_resumable_hosts_drop_mid_handoff_tells_the_candidate_host_left_at_once() {
    let server = start_with(ServerConfig {
        resume_window: Duration::from_millis(500),
        ..handing_off()
    })
    .await;
    let addr = server.local_addr();
    let (mut h, _) = Resumable::join(addr, "rhm", "host-dev", "host").await;
    let hid = h.id.clone();
    let (mut a, aw, _) = join(addr, "rhm", "dev-a", "client").await;
    let aid = client_id(&aw);
    h.next().await;
    h.send(&request(Some(&aid))).await;
    assert_eq!(
        h.next().await,
        json!({"type": "handoff_started", "handoffId": "h1", "targetId": aid})
    );
    assert_eq!(next(&mut a).await["type"], "handoff_request");
    drop(h);
    // host_left first, then what the drop causes (reconnecting); the host is still the host.
    assert_eq!(
        next(&mut a).await,
        json!({"type": "handoff_failed", "reason": "host_left", "handoffId": "h1"})
    );
    expect_status_update(&mut a, &hid, "reconnecting", true).await;
    a.send(&accept("h1")).await;
    assert_eq!(next(&mut a).await["code"], "handoff_not_pending");
    // At the window's end the only other member takes over.
    assert_eq!(
        next(&mut a).await,
        json!({"type": "member_left", "memberId": hid, "reason": "timeout"})
    );
    assert_eq!(next(&mut a).await, host_changed(&aid, &hid, 2, "host_lost"));
}

#[tokio::test]
async fn a_resumable_host_that_drops_mid_handoff_and_resumes_is_told_its_request_failed() {
    let server = start_with(ServerConfig {
        resume_window: Duration::from_secs(5),
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let (mut h, _) = Resumable::join(addr, "rhr", "host-dev", "host").await;
    let hid = h.id.clone();
    let (mut a, aw, _) = join(addr, "rhr", "dev-a", "client").await;
    let aid = client_id(&aw);
    h.next().await;
    h.send(&request(Some(&aid))).await;
    assert_eq!(h.next().await["type"], "handoff_started");
    assert_eq!(next(&mut a).await["type"], "handoff_request");
    let (mut h, resumed) = h
        .drop_and_resume(addr, async || {
            assert_eq!(
                next(&mut a).await,
                json!({"type": "handoff_failed", "reason": "host_left", "handoffId": "h1"})
            );
            expect_status_update(&mut a, &hid, "reconnecting", true).await;
        })
        .await;
    // Its replay says the request is over; it is still the host, in the same term.
    assert_eq!(resumed["replayed"], 1, "{resumed}");
    assert_eq!(
        h.next().await,
        json!({"type": "handoff_failed", "reason": "host_left", "handoffId": "h1",
               "targetId": aid})
    );
    expect_status_update(&mut a, &hid, "connected", true).await;
    h.send(&request(Some(&aid))).await;
    assert_eq!(
        h.next().await,
        json!({"type": "handoff_started", "handoffId": "h2", "targetId": aid})
    );
}

#[tokio::test]
async fn members_away_in_their_window_are_never_candidates() {
    let server = start_with(ServerConfig {
        resume_window: Duration::from_secs(5),
        ..handing_off()
    })
    .await;
    let addr = server.local_addr();
    let (mut h, hw, _) = join(addr, "away", "host-dev", "host").await;
    let hid = client_id(&hw);
    let (mut a, _) = Resumable::join(addr, "away", "dev-a", "client").await;
    let aid = a.id.clone();
    h.recv_type("member_joined").await;
    let (mut b, bw, _) = join(addr, "away", "dev-b", "client").await;
    let bid = client_id(&bw);
    h.recv_type("member_joined").await;
    assert_eq!(a.next().await["type"], "member_joined");
    // a, the first to join after the host, declares itself ready, then goes away.
    a.send(&ready(true)).await;
    expect_ready_update(&mut h, &aid, true).await;
    expect_ready_update(&mut b, &aid, true).await;
    let (mut a, resumed) = a
        .drop_and_resume(addr, async || {
            expect_status_update(&mut h, &aid, "reconnecting", false).await;
            expect_status_update(&mut b, &aid, "reconnecting", false).await;
            // Away: neither chosen nor nameable.
            let no_candidate = json!({"type": "handoff_failed", "reason": "no_candidate"});
            h.send(&request(None)).await;
            assert_eq!(next(&mut h).await, no_candidate);
            h.send(&request(Some(&aid))).await;
            assert_eq!(next(&mut h).await, no_candidate);
            // The host is lost: b, connected though not ready and joined later, takes over.
            drop(std::mem::replace(&mut h, Client::connect(addr).await));
            assert_eq!(
                next(&mut b).await,
                json!({"type": "member_left", "memberId": hid, "reason": "error"})
            );
            assert_eq!(next(&mut b).await, host_changed(&bid, &hid, 2, "host_lost"));
        })
        .await;
    // Back, a reads what it missed: the host's departure and the change, in order.
    assert_eq!(resumed["replayed"], 2, "{resumed}");
    assert_eq!(
        a.next().await,
        json!({"type": "member_left", "memberId": hid, "reason": "error"})
    );
    assert_eq!(a.next().await, host_changed(&bid, &hid, 2, "host_lost"));
    expect_status_update(&mut b, &aid, "connected", false).await;
    // Still ready: the new host's request without a target picks it.
    b.send(&request(None)).await;
    assert_eq!(
        next(&mut b).await,
        json!({"type": "handoff_started", "handoffId": "h1", "targetId": aid})
    );
    assert_eq!(
        a.next().await,
        json!({"type": "handoff_request", "handoffId": "h1", "fromId": bid, "state": {},
               "version": 0, "term": 2, "timeoutMs": 5000})
    );
}

// ---------------------------------------------------------------------------------------------
// A new session under a fresh code
// ---------------------------------------------------------------------------------------------

/// Whether `id` is a generated code: 6 characters of `[0-9A-Z]`.
fn is_code(id: &str) -> bool {
    id.len() == 6
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

#[tokio::test]
async fn a_host_without_a_session_id_opens_a_session_under_a_fresh_code() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let mut codes = Vec::new();
    let frames = [
        // Written by the encoder, with the field left out.
        loudsync_protocol::encode_client(
            &ClientMessage::Join(Join {
                session_id: None,
                ..join_fields("unused", "host-1", "host")
            }),
            unix_ms(),
        )
        .unwrap(),
        r#"{"type":"join","deviceInfo":{"id":"host-2","name":"Two","type":"host"}}"#.to_string(),
        r#"{"type":"join","sessionId":null,"deviceInfo":{"id":"host-3","name":"Three","type":"host"}}"#
            .to_string(),
    ];
    assert!(!frames[0].contains("sessionId"), "{}", frames[0]);
    let mut hosts = Vec::new();
    for frame in &frames {
        let mut h = Client::connect(addr).await;
        h.send_text(frame).await;
        let w = h.recv_type("welcome").await;
        let code = w["sessionInfo"]["id"].as_str().unwrap().to_string();
        assert!(is_code(&code), "{w}");
        assert_eq!(w["sessionInfo"]["hostId"], w["clientId"], "{w}");
        assert_eq!(
            (w["state"].clone(), w["version"].clone(), w["term"].clone()),
            (json!({}), json!(0), json!(1))
        );
        h.recv_type("member_list").await;
        codes.push(code);
        hosts.push(h);
    }
    codes.sort();
    codes.dedup();
    assert_eq!(codes.len(), 3, "each host got its own session: {codes:?}");

    // A client joins under the code; HTTP knows it.
    let (_g, gw, gl) = join(addr, &codes[1], "guest", "client").await;
    assert_eq!(gw["sessionInfo"]["id"], codes[1].as_str());
    assert_eq!(gl["members"].as_array().unwrap().len(), 2);
    let (status, view) = http_session(&server, &codes[1]).await;
    assert_eq!(status, 200);
    assert_eq!(view["id"], codes[1].as_str());
    assert_eq!(view["members"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_client_without_a_session_id_is_invalid_message() {
    let server = start_with(config()).await;
    let mut c = Client::connect(server.local_addr()).await;
    for frame in [
        r#"{"type":"join","deviceInfo":{"id":"d","name":"n","type":"client"}}"#,
        r#"{"type":"join","sessionId":null,"deviceInfo":{"id":"d","name":"n","type":"client"}}"#,
    ] {
        c.send_text(frame).await;
        assert_eq!(
            next(&mut c).await,
            error("invalid_message", "join: missing field `sessionId`", None),
            "{frame}"
        );
    }
    c.assert_alive().await;
}

// ---------------------------------------------------------------------------------------------
// The LOUDSYNC app's dialect
// ---------------------------------------------------------------------------------------------

const APP_SESSION: &str = "K7P-3XQ";

/// The app's `JOIN` to [`APP_SESSION`], as its client sends it.
async fn app_join(c: &mut Client, device: &str, name: &str) {
    let join = ClientMessage::join(APP_SESSION, device, name, DeviceType::Client);
    let ctx =
        app::ClientContext::new(device, 1738941234567).with_message_id("msg_1738941234567_4fzq8ab");
    c.send_app(&join, &ctx).await;
}

/// Our host, one member of ours and an app member in [`APP_SESSION`]: `(server, host,
/// member, app, ids: host, member, app member)`. Every join is consumed.
async fn mixed(
    config: ServerConfig,
) -> (loudsync_server::Server, Client, Client, Client, [String; 3]) {
    let server = start_with(config).await;
    let addr = server.local_addr();
    let (mut h, hw, _) = join(addr, APP_SESSION, "host-dev", "host").await;
    let (mut o, ow, _) = join(addr, APP_SESSION, "tablet", "client").await;
    h.recv_type("member_joined").await;
    let mut app = Client::connect(addr).await;
    app_join(&mut app, "app-device", "Phone").await;
    let welcome = app.recv().await;
    assert_eq!(welcome["type"], "WELCOME");
    // The app's WELCOME stays as landed: no state, version or term.
    let keys: Vec<_> = welcome["payload"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        keys,
        [
            "connectedAt",
            "hostId",
            "hostName",
            "sessionId",
            "sessionName",
            "yourDeviceId"
        ],
        "{welcome}"
    );
    assert_eq!(app.recv().await["type"], "MEMBER_LIST");
    let app_id = h.recv_type("member_joined").await["member"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        o.recv_type("member_joined").await["member"]["id"],
        app_id.as_str()
    );
    (server, h, o, app, [client_id(&hw), client_id(&ow), app_id])
}

#[tokio::test]
async fn an_app_member_sees_no_state_or_handoff_frames_and_gets_a_fresh_member_list() {
    let (server, mut h, mut o, mut app, [hid, oid, app_id]) = mixed(config()).await;
    // State, readiness and a handoff: the app hears none of it ...
    h.send(&set_state(json!({"track": 1}), None, None)).await;
    let s = state_frame(json!({"track": 1}), 1, 1, &hid);
    all_get(&mut [&mut h, &mut o], &s).await;
    o.send(&ready(true)).await;
    expect_ready_update(&mut h, &oid, true).await;
    h.send(&request(None)).await;
    assert_eq!(
        next(&mut h).await,
        json!({"type": "handoff_started", "handoffId": "h1", "targetId": oid})
    );
    assert_eq!(next(&mut o).await["type"], "handoff_request");
    o.send(&accept("h1")).await;
    assert_eq!(next(&mut h).await["type"], "handoff_ack");
    let changed = host_changed(&oid, &hid, 2, "handoff");
    all_get(&mut [&mut h, &mut o], &changed).await;

    // ... but gets a fresh MEMBER_LIST as its very next frame: the new host first, by device
    // id, with role host; the old host a client now.
    let v = app.recv().await;
    assert_eq!(v["type"], "MEMBER_LIST", "{v}");
    let members = v["payload"]["members"].as_array().unwrap();
    let roles: Vec<_> = members
        .iter()
        .map(|m| (m["id"].clone(), m["role"].clone()))
        .collect();
    assert_eq!(
        roles,
        vec![
            (json!("tablet"), json!("host")),
            (json!("host-dev"), json!("client")),
            (json!("app-device"), json!("client")),
        ]
    );
    assert_eq!(v["payload"]["totalCount"], 3);
    app.expect_silence(QUIET).await;

    // A later app WELCOME names the current host.
    let mut app2 = Client::connect(server.local_addr()).await;
    app_join(&mut app2, "app-device-2", "Phone 2").await;
    let w = app2.recv().await;
    assert_eq!(w["type"], "WELCOME", "{w}");
    assert_eq!(w["payload"]["hostId"], "tablet", "{w}");
    assert_eq!(w["payload"]["hostName"], "tablet name", "{w}");
    let l = app2.recv().await;
    assert_eq!(l["payload"]["members"][0]["id"], "tablet", "{l}");
    assert_eq!(l["payload"]["members"][0]["role"], "host", "{l}");
    let app2_id = h.recv_type("member_joined").await["member"]["id"].clone();
    o.recv_type("member_joined").await;
    assert_eq!(app.recv().await["type"], "MEMBER_JOINED");

    // Ours see the app member as an ordinary member, never ready.
    assert_eq!(
        listed(&mut h).await,
        vec![
            row(&oid, true, false),
            row(&hid, false, true),
            row(&app_id, false, false),
            row(app2_id.as_str().unwrap(), false, false),
        ]
    );
}

#[tokio::test]
async fn an_app_member_is_never_a_candidate() {
    let server_config = handing_off();
    let (_server, mut h, mut o, mut app, [hid, oid, app_id]) = mixed(server_config).await;
    // Named, or without a target (the app member cannot declare itself ready): no candidate.
    h.send(&request(Some(&app_id))).await;
    assert_eq!(
        next(&mut h).await,
        json!({"type": "handoff_failed", "reason": "no_candidate"})
    );
    h.send(&request(None)).await;
    assert_eq!(
        next(&mut h).await,
        json!({"type": "handoff_failed", "reason": "no_candidate"})
    );
    app.expect_silence(QUIET).await;

    // On host loss the member of ours takes over, not the app member (which joined later
    // anyway), and the app gets the fresh list.
    drop(h);
    assert_eq!(
        next(&mut o).await,
        json!({"type": "member_left", "memberId": hid, "reason": "error"})
    );
    assert_eq!(next(&mut o).await, host_changed(&oid, &hid, 2, "host_lost"));
    let left = app.recv().await;
    assert_eq!(left["type"], "MEMBER_LEFT", "{left}");
    assert_eq!(left["payload"]["deviceId"], "host-dev", "{left}");
    let list = app.recv().await;
    assert_eq!(list["type"], "MEMBER_LIST", "{list}");
    assert_eq!(list["payload"]["members"][0]["id"], "tablet");
    assert_eq!(list["payload"]["members"][0]["role"], "host");
    app.expect_silence(QUIET).await;
}

// ---------------------------------------------------------------------------------------------
// After a handoff; heartbeat timeouts; kicks; sessions created over HTTP; settings
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn after_a_handoff_the_old_host_is_an_ordinary_member() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let (mut cs, ids) = party(addr, "old", 2).await;
    let mut b = cs.pop().unwrap();
    let mut a = cs.pop().unwrap();
    let mut h = cs.pop().unwrap();
    let (hid, aid, bid) = (ids[0].as_str(), ids[1].as_str(), ids[2].as_str());
    let h1 = start_handoff(&mut h, hid, &mut a, aid).await;
    a.send(&accept(&h1)).await;
    assert_eq!(next(&mut h).await["type"], "handoff_ack");
    let changed = host_changed(aid, hid, 2, "handoff");
    all_get(&mut [&mut h, &mut a, &mut b], &changed).await;

    // The new host naming the old term is stale_term, with the fencing details.
    a.send(&set_state(json!({"x": 1}), None, Some(1))).await;
    assert_eq!(
        next(&mut a).await,
        error(
            "stale_term",
            "state_set: term 1 is not the current term 2",
            Some(json!({"hostId": aid, "term": 2}))
        )
    );
    // Another device cannot join as host while the new host is connected.
    let mut other = Client::connect(addr).await;
    other.send(&join_msg("old", "other-host", "host")).await;
    let (seen, end) = other.recv_end().await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["code"], "unauthorized", "{seen:?}");
    assert!(matches!(end, Ended::Close(1000, _)), "{end:?}");

    // The old host's leave is an ordinary member_left: the session goes on.
    h.send(&ClientMessage::leave(None)).await;
    closes_normally_after(&mut h, &[]).await;
    let left = json!({"type": "member_left", "memberId": hid, "reason": "left"});
    all_get(&mut [&mut a, &mut b], &left).await;
    assert_eq!(
        listed(&mut b).await,
        vec![row(aid, true, false), row(bid, false, false)]
    );
    a.send(&set_state(json!({"x": 2}), Some(0), Some(2))).await;
    let s = state_frame(json!({"x": 2}), 1, 2, aid);
    all_get(&mut [&mut a, &mut b], &s).await;
}

/// Reads `c` while heartbeating it (and `others`, so they stay) until a frame arrives;
/// returns it without its `timestamp`.
async fn next_beating(c: &mut Client, others: &mut [&mut Client]) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    loop {
        assert!(std::time::Instant::now() < deadline, "nothing in time");
        c.send(&ClientMessage::Heartbeat).await;
        for o in others.iter_mut() {
            o.send(&ClientMessage::Heartbeat).await;
        }
        if let Ok(v) = tokio::time::timeout(Duration::from_millis(100), c.recv()).await {
            return bare(v);
        }
    }
}

#[tokio::test]
async fn a_hosts_heartbeat_timeout_under_handoff_policy_passes_on_with_reason_timeout() {
    let server = start_with(ServerConfig {
        heartbeat_timeout: Duration::from_millis(400),
        ..handing_off()
    })
    .await;
    let (mut cs, ids) = party(server.local_addr(), "hbt", 1).await;
    let mut a = cs.pop().unwrap();
    let h = cs.pop().unwrap();
    let (hid, aid) = (ids[0].as_str(), ids[1].as_str());
    // The host stays silent (its socket open); a heartbeats.
    let silent = tokio::spawn(async move {
        let mut h = h;
        h.recv_end().await.1
    });
    assert_eq!(
        next_beating(&mut a, &mut []).await,
        json!({"type": "member_left", "memberId": hid, "reason": "timeout"})
    );
    assert_eq!(
        next_beating(&mut a, &mut []).await,
        host_changed(aid, hid, 2, "host_lost")
    );
    assert!(matches!(silent.await.unwrap(), Ended::Close(..)));
}

#[tokio::test]
async fn a_hosts_heartbeat_timeout_under_close_policy_is_host_timed_out() {
    let server = start_with(ServerConfig {
        heartbeat_timeout: Duration::from_millis(400),
        ..config()
    })
    .await;
    let (mut cs, _) = party(server.local_addr(), "hbc", 1).await;
    let mut a = cs.pop().unwrap();
    let _silent_host = cs.pop().unwrap();
    assert_eq!(
        next_beating(&mut a, &mut []).await,
        json!({"type": "session_closed", "reason": "Host timed out"})
    );
    closes_normally_after(&mut a, &[]).await;
}

#[tokio::test]
async fn a_candidate_kicked_or_timed_out_mid_handoff_fails_it_candidate_left() {
    let server = start_with(ServerConfig {
        heartbeat_timeout: Duration::from_millis(400),
        ..config()
    })
    .await;
    let (mut cs, ids) = party(server.local_addr(), "ckick", 2).await;
    let mut b = cs.pop().unwrap();
    let mut a = cs.pop().unwrap();
    let mut h = cs.pop().unwrap();
    let (hid, aid, bid) = (ids[0].as_str(), ids[1].as_str(), ids[2].as_str());

    // Kicked by the host while it is the candidate.
    let h1 = start_handoff(&mut h, hid, &mut a, aid).await;
    h.send(&ClientMessage::kick(aid, Some("changed my mind")))
        .await;
    closes_normally_after(
        &mut a,
        &[json!({"type": "kicked", "reason": "changed my mind"})],
    )
    .await;
    assert_eq!(
        next(&mut h).await,
        json!({"type": "member_left", "memberId": aid, "reason": "kicked"})
    );
    assert_eq!(
        next(&mut h).await,
        json!({"type": "handoff_failed", "reason": "candidate_left", "handoffId": h1,
               "targetId": aid})
    );
    assert_eq!(
        next(&mut b).await,
        json!({"type": "member_left", "memberId": aid, "reason": "kicked"})
    );

    // Silent past the heartbeat timeout while it is the candidate.
    let h2 = start_handoff(&mut h, hid, &mut b, bid).await;
    let silent = tokio::spawn(async move { b.recv_end().await.1 });
    assert_eq!(
        next_beating(&mut h, &mut []).await,
        json!({"type": "member_left", "memberId": bid, "reason": "timeout"})
    );
    assert_eq!(
        next_beating(&mut h, &mut []).await,
        json!({"type": "handoff_failed", "reason": "candidate_left", "handoffId": h2,
               "targetId": bid})
    );
    assert!(matches!(silent.await.unwrap(), Ended::Close(..)));
}

#[tokio::test]
async fn in_a_session_created_over_http_before_its_host_the_fence_names_no_host() {
    let server = start_with(config()).await;
    let addr = server.local_addr();
    let (status, created) = post(
        &http(&server),
        json!({"id": "made", "name": "Made", "hostDeviceId": "host-dev"}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let (mut a, aw, _) = join(addr, "made", "dev-a", "client").await;
    assert_eq!(
        (
            aw["state"].clone(),
            aw["version"].clone(),
            aw["term"].clone()
        ),
        (json!({}), json!(0), json!(1))
    );
    assert_eq!(aw["sessionInfo"]["hostId"], Value::Null);
    let fence = json!({"hostId": null, "term": 1});
    a.send(&set_state(json!({"x": 1}), None, None)).await;
    assert_eq!(
        next(&mut a).await,
        error(
            "unauthorized",
            "state_set: only the host may set the session state",
            Some(fence.clone())
        )
    );
    a.send(&request(None)).await;
    assert_eq!(
        next(&mut a).await,
        error(
            "unauthorized",
            "handoff_request: only the host may hand control over",
            Some(fence)
        )
    );
    // Readiness works before a host: nobody else to tell.
    a.send(&ready(true)).await;
    a.expect_silence(QUIET).await;
    // The first host joining does not change the term.
    let (mut h, hw, hl) = join(addr, "made", "host-dev", "host").await;
    assert_eq!(hw["term"], 1);
    assert_eq!(
        roles(&hl["members"]),
        vec![
            row(&client_id(&hw), true, false),
            row(&client_id(&aw), false, true)
        ]
    );
    assert_eq!(next(&mut a).await["type"], "member_joined");
    h.send(&request(None)).await;
    assert_eq!(next(&mut h).await["type"], "handoff_started");
}

#[tokio::test]
async fn the_server_refuses_a_max_state_bytes_not_below_max_message_bytes() {
    for max_state_bytes in [65536, 70000] {
        let refused = loudsync_server::Server::bind(ServerConfig {
            max_state_bytes,
            ..config()
        })
        .await;
        let error = refused.err().expect("refused").to_string();
        assert!(
            error.contains(&format!(
                "max-state-bytes ({max_state_bytes}) must be below max-message-bytes (65536)"
            )),
            "{error}"
        );
    }
    // Just below is fine, and a whole maximal state fits in one frame.
    let server = start_with(ServerConfig {
        max_state_bytes: 65535 - 1024,
        ..config()
    })
    .await;
    let (mut h, _, _) = join(server.local_addr(), "big", "host-dev", "host").await;
    let pad = "x".repeat(65535 - 1024 - 10);
    h.send(&set_state(json!({"p": pad}), None, None)).await;
    let v = next(&mut h).await;
    assert_eq!(v["type"], "state", "{}", &v.to_string()[..200]);
    assert_eq!(v["version"], 1);
}

#[tokio::test]
async fn malformed_handoff_frames_are_invalid_message_and_change_nothing() {
    let server = start_with(config()).await;
    let (mut cs, ids) = party(server.local_addr(), "badh", 1).await;
    let mut a = cs.pop().unwrap();
    let mut h = cs.pop().unwrap();
    let frames = [
        r#"{"type":"handoff_ready"}"#,
        r#"{"type":"handoff_ready","ready":"yes"}"#,
        r#"{"type":"handoff_ready","ready":1}"#,
        r#"{"type":"handoff_request","targetId":5}"#,
        r#"{"type":"handoff_accept"}"#,
        r#"{"type":"handoff_accept","handoffId":1}"#,
        r#"{"type":"handoff_decline","handoffId":"h1","reason":7}"#,
    ];
    for c in [&mut h, &mut a] {
        for frame in frames {
            let decoder = loudsync_protocol::decode(frame).expect_err(frame).message;
            let kind: Value = serde_json::from_str(frame).unwrap();
            let kind = kind["type"].as_str().unwrap();
            assert!(
                decoder.starts_with(&format!("{kind}: ")),
                "{frame}: {decoder}"
            );
            c.send_text(frame).await;
            assert_eq!(
                next(c).await,
                error("invalid_message", &decoder, None),
                "{frame}"
            );
        }
    }
    all_quiet(&mut [&mut h, &mut a]).await;
    assert_eq!(
        listed(&mut a).await,
        vec![row(&ids[0], true, false), row(&ids[1], false, false)]
    );
}

#[tokio::test]
async fn re_declaring_keeps_the_original_declaration_and_withdrawing_drops_it() {
    let server = start_with(config()).await;
    let (mut cs, ids) = party(server.local_addr(), "order", 2).await;
    let mut b = cs.pop().unwrap();
    let mut a = cs.pop().unwrap();
    let mut h = cs.pop().unwrap();
    let (hid, aid, bid) = (ids[0].as_str(), ids[1].as_str(), ids[2].as_str());
    // Withdrawing what was never declared changes nothing and tells nobody.
    b.send(&ready(false)).await;
    all_quiet(&mut [&mut h, &mut a, &mut b]).await;
    // b first, then a; b re-declares (no event, and it keeps its place).
    b.send(&ready(true)).await;
    expect_ready_update(&mut h, bid, true).await;
    expect_ready_update(&mut a, bid, true).await;
    a.send(&ready(true)).await;
    expect_ready_update(&mut h, aid, true).await;
    expect_ready_update(&mut b, aid, true).await;
    b.send(&ready(true)).await;
    all_quiet(&mut [&mut h, &mut a]).await;
    h.send(&request(None)).await;
    assert_eq!(
        next(&mut h).await,
        json!({"type": "handoff_started", "handoffId": "h1", "targetId": bid})
    );
    assert_eq!(next(&mut b).await["handoffId"], "h1");
    b.send(&decline("h1", None)).await;
    assert_eq!(next(&mut h).await["reason"], "declined");
    // b withdraws, and later declares again: now a's declaration is older.
    b.send(&ready(false)).await;
    expect_ready_update(&mut h, bid, false).await;
    expect_ready_update(&mut a, bid, false).await;
    b.send(&ready(true)).await;
    expect_ready_update(&mut h, bid, true).await;
    expect_ready_update(&mut a, bid, true).await;
    h.send(&request(None)).await;
    assert_eq!(
        next(&mut h).await,
        json!({"type": "handoff_started", "handoffId": "h2", "targetId": aid})
    );
    assert_eq!(
        next(&mut a).await,
        json!({"type": "handoff_request", "handoffId": "h2", "fromId": hid, "state": {},
               "version": 0, "term": 1, "timeoutMs": 5000})
    );
    // A declined request does not withdraw the candidate's readiness.
    a.send(&decline("h2", None)).await;
    assert_eq!(next(&mut h).await["reason"], "declined");
    assert_eq!(
        listed(&mut h).await,
        vec![
            row(hid, true, false),
            row(aid, false, true),
            row(bid, false, true)
        ]
    );
}

#[tokio::test]
async fn the_layers_frames_count_toward_the_rate_limit() {
    let server = start_with(ServerConfig {
        rate_limit: 20,
        rate_burst: 10,
        ..handing_off()
    })
    .await;
    let (mut cs, ids) = party(server.local_addr(), "flood", 2).await;
    let mut b = cs.pop().unwrap();
    let mut a = cs.pop().unwrap();
    let mut h = cs.pop().unwrap();
    let (hid, aid, bid) = (ids[0].as_str(), ids[1].as_str(), ids[2].as_str());
    // A member flooding readiness is closed 1008 like any flood.
    for n in 0..40 {
        b.send(&ready(n % 2 == 0)).await;
    }
    let (seen, end) = b.recv_end().await;
    assert_eq!(
        end,
        Ended::Close(1008, "rate limit exceeded".into()),
        "{seen:?}"
    );
    let codes: Vec<_> = seen.iter().map(|v| v["code"].clone()).collect();
    assert_eq!(codes, [json!("rate_limited")], "{seen:?}");
    let a_saw = loop {
        let v = next(&mut h).await;
        if v["type"] == "member_left" {
            assert_eq!(
                v,
                json!({"type": "member_left", "memberId": bid, "reason": "error"})
            );
            break a.recv_until("member_left").await;
        }
        assert_eq!(v["type"], "member_updated", "{v}");
    };
    assert_eq!(
        bare(a_saw),
        json!({"type": "member_left", "memberId": bid, "reason": "error"})
    );

    // A host flooding state_set is closed 1008, and under `handoff` that loses the host.
    for n in 0..40 {
        h.send(&set_state(json!({"n": n}), None, None)).await;
    }
    let (seen, end) = h.recv_end().await;
    assert_eq!(end, Ended::Close(1008, "rate limit exceeded".into()));
    assert_eq!(
        seen.iter().filter(|v| v["type"] == "error").count(),
        1,
        "{seen:?}"
    );
    let sets = seen.iter().filter(|v| v["type"] == "state").count() as u64;
    let mut got = 0;
    loop {
        let v = next(&mut a).await;
        match v["type"].as_str().unwrap() {
            "state" => {
                assert_eq!(v["state"], json!({"n": got}), "in order: {v}");
                got += 1;
                assert_eq!(v["version"], got);
            }
            "member_left" => {
                assert_eq!(
                    v,
                    json!({"type": "member_left", "memberId": hid, "reason": "error"})
                );
                break;
            }
            _ => panic!("unexpected {v}"),
        }
    }
    assert!(got >= sets && got < 40, "{got} accepted, {sets} confirmed");
    assert_eq!(next(&mut a).await, host_changed(aid, hid, 2, "host_lost"));
    // A joiner now sees the new host, the last accepted state and term 2.
    let (_j, jw, jl) = join(server.local_addr(), "flood", "joiner", "client").await;
    assert_eq!(jw["sessionInfo"]["hostId"], aid);
    assert_eq!(
        (
            jw["state"].clone(),
            jw["version"].clone(),
            jw["term"].clone()
        ),
        (json!({"n": got - 1}), json!(got), json!(2))
    );
    assert_eq!(roles(&jl["members"])[0], row(aid, true, false));
}

#[tokio::test]
async fn the_app_cannot_send_the_layers_frames_and_its_errors_are_upper_case() {
    let (_server, mut h, mut o, mut app, [hid, oid, app_id]) = mixed(config()).await;
    for kind in [
        "STATE_SET",
        "HANDOFF_READY",
        "HANDOFF_REQUEST",
        "HANDOFF_ACCEPT",
        "handoff_ready",
    ] {
        app.send_text(&format!(
            r#"{{"type":"{kind}","timestamp":1,"payload":{{"ready":true,"state":{{}}}}}}"#
        ))
        .await;
        let v = app.recv().await;
        assert_eq!(v["type"], "ERROR", "{kind}: {v}");
        assert_eq!(v["payload"]["code"], "INVALID_MESSAGE", "{kind}: {v}");
    }
    all_quiet(&mut [&mut h, &mut o]).await;
    assert_eq!(
        listed(&mut o).await,
        vec![
            row(&hid, true, false),
            row(&oid, false, false),
            row(&app_id, false, false)
        ]
    );
}

#[tokio::test]
async fn a_resumable_host_whose_buffer_overflows_is_lost_at_once() {
    let server = start_with(ServerConfig {
        resume_buffer_messages: 3,
        resume_window: Duration::from_secs(5),
        ..handing_off()
    })
    .await;
    let addr = server.local_addr();
    let (mut h, _) = Resumable::join(addr, "ovh", "host-dev", "host").await;
    let hid = h.id.clone();
    let (mut a, aw, _) = join(addr, "ovh", "dev-a", "client").await;
    let aid = client_id(&aw);
    // member_list (1) and member_joined (2) are unacknowledged; one more fills the buffer,
    // the next exceeds it: gone for good while connected, not a window.
    assert_eq!(h.next().await["type"], "member_joined");
    a.send(&message(json!(1), None)).await;
    assert_eq!(h.next().await["type"], "message");
    a.send(&message(json!(2), None)).await;
    let (seen, end) = h.c.recv_end().await;
    assert!(seen.iter().all(|v| v["type"] == "message"), "{seen:?}");
    assert_eq!(end, Ended::Close(1008, "resume buffer overflow".into()));
    assert_eq!(
        next(&mut a).await,
        json!({"type": "member_left", "memberId": hid, "reason": "error"})
    );
    assert_eq!(next(&mut a).await, host_changed(&aid, &hid, 2, "host_lost"));
}

#[tokio::test]
async fn host_loss_skips_an_app_member_that_joined_first() {
    let server = start_with(handing_off()).await;
    let addr = server.local_addr();
    let (mut h, hw, _) = join(addr, APP_SESSION, "host-dev", "host").await;
    let hid = client_id(&hw);
    let mut app = Client::connect(addr).await;
    app_join(&mut app, "app-device", "Phone").await;
    assert_eq!(app.recv().await["type"], "WELCOME");
    assert_eq!(app.recv().await["type"], "MEMBER_LIST");
    h.recv_type("member_joined").await;
    let (mut o, ow, _) = join(addr, APP_SESSION, "tablet", "client").await;
    let oid = client_id(&ow);
    h.recv_type("member_joined").await;
    assert_eq!(app.recv().await["type"], "MEMBER_JOINED");
    drop(h);
    assert_eq!(
        next(&mut o).await,
        json!({"type": "member_left", "memberId": hid, "reason": "error"})
    );
    assert_eq!(next(&mut o).await, host_changed(&oid, &hid, 2, "host_lost"));
    assert_eq!(app.recv().await["type"], "MEMBER_LEFT");
    let list = app.recv().await;
    assert_eq!(list["type"], "MEMBER_LIST", "{list}");
    let roles: Vec<_> = list["payload"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].clone(), m["role"].clone()))
        .collect();
    assert_eq!(
        roles,
        vec![
            (json!("tablet"), json!("host")),
            (json!("app-device"), json!("client")),
        ]
    );
}

#[tokio::test]
async fn state_frames_missed_in_a_resume_window_are_replayed_in_order() {
    let server = start_with(ServerConfig {
        resume_window: Duration::from_secs(5),
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let (mut h, hw, _) = join(addr, "rs", "host-dev", "host").await;
    let hid = client_id(&hw);
    let (a, _) = Resumable::join(addr, "rs", "dev-a", "client").await;
    let aid = a.id.clone();
    h.recv_type("member_joined").await;
    let (mut a, resumed) = a
        .drop_and_resume(addr, async || {
            expect_status_update(&mut h, &aid, "reconnecting", false).await;
            h.send(&set_state(json!({"k": 1}), Some(0), None)).await;
            h.send(&patch_state(json!({"j": 2}), Some(1), None)).await;
            assert_eq!(next(&mut h).await["version"], 1);
            assert_eq!(next(&mut h).await["version"], 2);
        })
        .await;
    assert_eq!(resumed["replayed"], 2, "{resumed}");
    assert_eq!(a.next().await, state_frame(json!({"k": 1}), 1, 1, &hid));
    assert_eq!(
        a.next().await,
        state_frame(json!({"k": 1, "j": 2}), 2, 1, &hid)
    );
    expect_status_update(&mut h, &aid, "connected", false).await;
    // Back and ready: a candidate like any other.
    a.send(&ready(true)).await;
    expect_ready_update(&mut h, &aid, true).await;
    h.send(&request(None)).await;
    assert_eq!(next(&mut h).await["targetId"], aid.as_str());
    assert_eq!(
        a.next().await,
        json!({"type": "handoff_request", "handoffId": "h1", "fromId": hid,
               "state": {"k": 1, "j": 2}, "version": 2, "term": 1, "timeoutMs": 5000})
    );
    a.send(&accept("h1")).await;
    assert_eq!(next(&mut h).await["type"], "handoff_ack");
    let changed = host_changed(&aid, &hid, 2, "handoff");
    assert_eq!(next(&mut h).await, changed);
    assert_eq!(a.next().await, changed);
}
