//! The resume layer's rules on a virtual clock (issue 10): the handshake and the pipelined
//! join, numbering, acks by count and by time, duplicates, gap resends, resume with replay,
//! each refusal and the fresh join after it, the closes never resumed, attempts until the
//! window's end, queueing while away, pacing, `member_updated`, the formal disconnect.

use super::tests::{decoded, sends, Rig};
use super::*;
use crate::config::{Backoff, ClientConfig, ReconnectPolicy};
use loudsync_protocol::{ConnectionStatus, Seq};
use serde_json::{json, Value};
use std::time::Duration;

/// The server's local token in these tests.
const A: &str = "SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS";

pub(super) fn rconfig() -> ClientConfig {
    let mut c = ClientConfig::member("ws://x/", "s1", "dev-1", "Phone");
    c.jitter_seed = 1;
    c
}

fn rhost_config() -> ClientConfig {
    let mut c = ClientConfig::host("ws://x/", "s1", "Party", "mac", "Mac");
    c.jitter_seed = 1;
    c
}

/// `v` with `"seq": seq` (the server's numbered frames).
pub(super) fn numbered(seq: u64, mut v: Value) -> Value {
    v["seq"] = json!(seq);
    v
}

fn message_from(from: &str, data: Value) -> Value {
    json!({"type":"message","timestamp":1,"from":from,"data":data})
}

fn welcome(client_id: &str, resumable: bool) -> Value {
    json!({"type":"welcome","timestamp":1,"clientId":client_id,"resumable":resumable,
        "sessionInfo":{"id":"s1","name":"S","hostId":"h"}})
}

fn member_list(client_id: &str) -> Value {
    if client_id == "h" {
        return json!({"type":"member_list","timestamp":1,"members":[
            {"id":"h","name":"Host","isHost":true,"connectionStatus":"connected","joinedAt":1}]});
    }
    json!({"type":"member_list","timestamp":1,"members":[
        {"id":"h","name":"Host","isHost":true,"connectionStatus":"connected","joinedAt":1},
        {"id":client_id,"name":"Phone","isHost":false,"connectionStatus":"connected","joinedAt":2}]})
}

/// The `seq` the server reads on each sent frame, with the frame's type.
pub(super) fn seqs(actions: &[Action]) -> Vec<(Seq, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(t) => {
                let d = loudsync_protocol::decode_numbered(t);
                let m = d.message.expect("a valid client frame");
                Some((d.seq, m.type_name().to_string()))
            }
            _ => None,
        })
        .collect()
}

/// The numbered frames sent, as (seq, data) for messages.
fn sent_messages(actions: &[Action]) -> Vec<(u64, Value)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(t) => {
                let d = loudsync_protocol::decode_numbered(t);
                match (d.seq, d.message.expect("valid")) {
                    (Seq::Valid(n), ClientMessage::Message { data, .. }) => {
                        Some((n, data.to_value()))
                    }
                    _ => None,
                }
            }
            _ => None,
        })
        .collect()
}

pub(super) fn emitted(actions: &[Action]) -> Vec<Event> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Emit(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn links(actions: &[Action]) -> Vec<LinkState> {
    emitted(actions)
        .into_iter()
        .filter_map(|e| match e {
            Event::LinkChanged(l) => Some(l),
            _ => None,
        })
        .collect()
}

/// Runs the handshake on the current socket (after `handle_connected`, or after a refused
/// resume) and joins as `client_id`; returns this client's local token and every action.
pub(super) fn handshake_on_socket(
    r: &mut Rig,
    pending: Vec<Action>,
    client_id: &str,
) -> (String, Vec<Action>) {
    let mut all = pending;
    let step1 = decoded(&all);
    let Some(ClientMessage::Token {
        token: b,
        last_seq: None,
    }) = step1.last().cloned()
    else {
        panic!("step 1 expected: {step1:?}");
    };
    r.text(json!({"type":"token","timestamp":1,"token":A}));
    r.text(json!({"type":"token","timestamp":1,"token":A}));
    r.text(welcome(client_id, true));
    r.text(numbered(1, member_list(client_id)));
    all.extend(r.drain());
    (b, all)
}

/// A resumable member joined as `c1`, with member_list seq 1 received; returns the
/// connection token.
/// Connected and joined: a member as `c1`, a host as `h` (the welcome's `hostId`: the host
/// role is the session's word, issue 11).
pub(super) fn rconnected_with(config: ClientConfig) -> (Rig, String) {
    let id = if config.device.kind == DeviceType::Host {
        "h"
    } else {
        "c1"
    };
    let mut r = Rig::new(config);
    r.m.start(r.now);
    r.drain();
    r.m.handle_connected(r.now);
    let first = r.drain();
    let (b, _) = handshake_on_socket(&mut r, first, id);
    assert!(r.m.is_resumable());
    (r, merge_tokens(A, &b))
}

fn rconnected() -> (Rig, String) {
    rconnected_with(rconfig())
}

/// Drops the socket (no close frame), waits out the first delay and opens the new socket;
/// returns the actions and the resume frame's (token, lastSeq).
pub(super) fn drop_and_reopen(r: &mut Rig) -> (Vec<Action>, String, u64) {
    let now = r.now;
    r.m.handle_closed(now, None);
    let until = r.elapsed() + Duration::from_secs(3);
    let mut actions = r.drain();
    actions.extend(r.run_until(until));
    assert!(actions.contains(&Action::Connect), "{actions:?}");
    let now = r.now;
    r.m.handle_connected(now);
    let sent = r.drain();
    let resume = decoded(&sent);
    assert_eq!(
        resume.len(),
        1,
        "the resume frame comes first and alone: {resume:?}"
    );
    let ClientMessage::Token {
        token,
        last_seq: Some(n),
    } = resume[0].clone()
    else {
        panic!("resume frame expected: {resume:?}");
    };
    actions.extend(sent);
    (actions, token, n)
}

#[test]
fn handshake_tokens_then_pipelined_join_then_a_resumable_welcome() {
    let mut r = Rig::new(rconfig());
    r.m.start(r.now);
    r.drain();
    r.m.handle_connected(r.now);
    let step1 = r.drain();
    let sent = decoded(&step1);
    let b = match &sent[..] {
        [ClientMessage::Token {
            token,
            last_seq: None,
        }] => token.clone(),
        other => panic!("only the client's token first, no join: {other:?}"),
    };
    assert_eq!(b.len(), 32);
    assert!(b.bytes().all(|c| c.is_ascii_alphanumeric()), "{b}");
    assert_eq!(links(&step1), [LinkState::Open]);
    assert_eq!(r.m.link_state(), LinkState::Open);

    // Step 2: the server's token. Step 3 (the same B) and the join right behind it.
    r.text(json!({"type":"token","timestamp":1,"token":A}));
    let a = r.drain();
    let sent = decoded(&a);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(
        sent[0],
        ClientMessage::Token {
            token: b.clone(),
            last_seq: None
        }
    );
    assert!(matches!(&sent[1], ClientMessage::Join(j) if j.session_id.as_deref() == Some("s1")));
    assert_eq!(seqs(&a)[1].0, Seq::Absent, "join itself is not numbered");
    assert_eq!(links(&a), [LinkState::PreConnected]);

    // Step 4: confirmation; the connection token is the merge.
    r.text(json!({"type":"token","timestamp":1,"token":A}));
    assert_eq!(links(&r.drain()), [LinkState::Connected]);
    assert_eq!(r.m.state(), ConnectionState::Connecting);
    r.text(welcome("c1", true));
    let ev = r.events();
    assert!(ev.contains(&Event::StateChanged(ConnectionState::Connected)));
    assert!(r.m.is_resumable());
    assert_eq!(r.m.client_id(), Some("c1"));

    // The connection token is what a resume carries.
    let (_, token, _) = drop_and_reopen(&mut r);
    assert_eq!(token, merge_tokens(A, &b));
    assert_eq!(token.len(), 64);
}

#[test]
fn a_server_refusing_the_handshake_gets_a_plain_join_on_the_same_socket() {
    let mut r = Rig::new(rconfig());
    r.m.start(r.now);
    r.drain();
    r.m.handle_connected(r.now);
    r.drain();
    r.text(
        json!({"type":"error","timestamp":1,"code":"invalid_message",
        "message":"unknown type `token`"}),
    );
    let a = r.drain();
    assert!(
        matches!(&decoded(&a)[..], [ClientMessage::Join(_)]),
        "{a:?}"
    );
    assert!(!a.contains(&Action::CloseSocket));
    assert!(!emitted(&a).iter().any(|e| matches!(e, Event::Error(_))));
    r.text(welcome("c1", false));
    r.drain();
    assert_eq!(r.m.state(), ConnectionState::Connected);
    assert!(!r.m.is_resumable());
    assert_eq!(r.m.link_state(), LinkState::Disconnected);
    // Plain: messages carry no seq, nothing is acked.
    r.m.send_message(r.now, json!(1), None).unwrap();
    assert_eq!(seqs(&r.drain()), [(Seq::Absent, "message".to_string())]);
    r.text(numbered(5, message_from("h", json!(2))));
    let actions = r.run_until(Duration::from_secs(12));
    assert!(!seqs(&actions).iter().any(|(_, t)| t == "ack"));
}

#[test]
fn client_frames_are_numbered_from_1_and_liveness_frames_never() {
    let (mut r, _) = rconnected();
    let now = r.now;
    r.m.send_message(now, json!({"n": 1}), None).unwrap();
    r.m.kick(now, "c9", None).unwrap();
    r.m.request_member_list(now).unwrap();
    r.m.send_message(now, json!({"n": 2}), Some("h")).unwrap();
    let mut actions = r.drain();
    actions.extend(r.run_until(Duration::from_millis(5_300)));
    let s = seqs(&actions);
    let numbered: Vec<_> = s
        .iter()
        .filter(|(q, _)| *q != Seq::Absent)
        .cloned()
        .collect();
    assert_eq!(
        numbered,
        [
            (Seq::Valid(1), "message".to_string()),
            (Seq::Valid(2), "kick".to_string()),
            (Seq::Valid(3), "member_list".to_string()),
            (Seq::Valid(4), "message".to_string()),
        ]
    );
    for (q, t) in &s {
        if ["heartbeat", "ping", "ack"].contains(&t.as_str()) {
            assert_eq!(*q, Seq::Absent, "{t} is never numbered");
        }
    }
    assert!(s.iter().any(|(_, t)| t == "heartbeat") && s.iter().any(|(_, t)| t == "ping"));
    // The numbered frame is the plain one with the prefix: `{"seq":1,"type":"message",...`.
    let Action::Send(first) = actions
        .iter()
        .find(|a| matches!(a, Action::Send(_)))
        .unwrap()
    else {
        unreachable!()
    };
    assert!(
        first.starts_with(r#"{"seq":1,"type":"message","#),
        "{first}"
    );
}

#[test]
fn acks_every_n_messages_cumulatively() {
    let mut c = rconfig();
    c.ack_every = 3;
    let (mut r, _) = rconnected_with(c);
    // member_list was seq 1.
    r.text(numbered(2, message_from("h", json!(2))));
    assert!(decoded(&r.drain()).is_empty(), "two new: no ack yet");
    r.text(numbered(3, message_from("h", json!(3))));
    assert_eq!(
        decoded(&r.drain()),
        [ClientMessage::Ack { seq: 3 }],
        "the third new frame is acked at once"
    );
    for n in 4..=6 {
        r.text(numbered(n, message_from("h", json!(n))));
    }
    let acks: Vec<_> = decoded(&r.drain())
        .into_iter()
        .filter(|m| matches!(m, ClientMessage::Ack { .. }))
        .collect();
    assert_eq!(acks, [ClientMessage::Ack { seq: 6 }]);
}

#[test]
fn acks_after_the_interval_and_only_when_there_is_something_new() {
    let (mut r, _) = rconnected();
    // member_list seq 1 arrived at 0 s: acked at the 5 s interval, not before.
    let before = r.run_until(Duration::from_millis(4_900));
    assert!(!decoded(&before)
        .iter()
        .any(|m| matches!(m, ClientMessage::Ack { .. })));
    let at = r.run_until(Duration::from_millis(5_100));
    let acks: Vec<_> = decoded(&at)
        .into_iter()
        .filter(|m| matches!(m, ClientMessage::Ack { .. }))
        .collect();
    assert_eq!(acks, [ClientMessage::Ack { seq: 1 }]);
    // Nothing new: no more acks, however long (heartbeats still go out).
    let quiet = r.run_until(Duration::from_secs(14));
    assert!(!decoded(&quiet)
        .iter()
        .any(|m| matches!(m, ClientMessage::Ack { .. })));
    // Something new: acked an interval after it.
    r.text(numbered(2, message_from("h", json!(2))));
    let later = r.run_until(Duration::from_millis(19_100));
    let acks: Vec<_> = decoded(&later)
        .into_iter()
        .filter(|m| matches!(m, ClientMessage::Ack { .. }))
        .collect();
    assert_eq!(acks, [ClientMessage::Ack { seq: 2 }]);
    // Acks and duplicates do not keep the connection from being silent... but they count as
    // signs of life like any frame (covered by the landed silence test).
}

#[test]
fn duplicate_server_frames_are_dropped_by_seq() {
    let (mut r, _) = rconnected();
    r.text(numbered(2, message_from("h", json!("once"))));
    r.text(numbered(2, message_from("h", json!("once"))));
    r.text(numbered(1, member_list("c1")));
    r.text(numbered(3, message_from("h", json!("next"))));
    let messages: Vec<_> = r
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Message { data, .. } => Some(data),
            Event::MemberList(_) => Some(json!("member_list")),
            _ => None,
        })
        .collect();
    assert_eq!(messages, [json!("once"), json!("next")]);
}

#[test]
fn a_gap_error_resends_everything_after_its_last_seq_and_is_not_shown() {
    let (mut r, _) = rconnected();
    for n in 1..=5 {
        r.m.send_message(r.now, json!(n), None).unwrap();
    }
    let first = r.drain();
    let originals: Vec<String> = first
        .iter()
        .filter_map(|a| match a {
            Action::Send(t) => Some(t.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(originals.len(), 5);
    r.text(numbered(
        2,
        json!({"type":"error","timestamp":1,"code":"invalid_message",
            "message":"seq gap","details":{"lastSeq":2}}),
    ));
    let again = r.drain();
    let resent: Vec<String> = again
        .iter()
        .filter_map(|a| match a {
            Action::Send(t) if !t.contains("\"ack\"") => Some(t.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(resent, originals[2..], "3, 4, 5 again, byte for byte");
    assert!(!emitted(&again).iter().any(|e| matches!(e, Event::Error(_))));

    // `rate_limited` with details: resent too, and shown as on plain connections.
    r.text(numbered(
        3,
        json!({"type":"error","timestamp":1,"code":"rate_limited",
            "message":"slow down","details":{"lastSeq":4}}),
    ));
    let again = r.drain();
    assert_eq!(sent_messages(&again), [(5, json!(5))]);
    assert!(emitted(&again)
        .iter()
        .any(|e| matches!(e, Event::Error(e) if e.code == ErrorCode::RateLimited)));
    // An error without lastSeq resends nothing.
    r.text(numbered(
        4,
        json!({"type":"error","timestamp":1,"code":"member_not_found","message":"no"}),
    ));
    assert!(sent_messages(&r.drain()).is_empty());
}

#[test]
fn acks_from_the_server_free_the_queue() {
    let mut c = rconfig();
    c.queue_limit = 3;
    let (mut r, _) = rconnected_with(c);
    for n in 1..=3 {
        r.m.send_message(r.now, json!(n), None).unwrap();
    }
    assert!(r.m.queue_full());
    assert_eq!(
        r.m.send_message(r.now, json!(4), None),
        Err(CommandError::QueueFull)
    );
    r.text(json!({"type":"ack","timestamp":1,"seq":2}));
    assert!(!r.m.queue_full());
    r.m.send_message(r.now, json!(4), None).unwrap();
    r.drain();
    // After a drop, only what the server did not acknowledge is resent.
    let (_, _, _) = drop_and_reopen(&mut r);
    r.text(json!({"type":"resumed","timestamp":1,"lastSeq":2,"replayed":0}));
    assert_eq!(sent_messages(&r.drain()), [(3, json!(3)), (4, json!(4))]);
}

#[test]
fn a_drop_resumes_with_the_connection_token_and_replay_nothing_lost_or_doubled() {
    let (mut r, token) = rconnected();
    r.text(numbered(2, message_from("h", json!("before 2"))));
    r.text(numbered(3, message_from("h", json!("before 3"))));
    for n in 1..=3 {
        r.m.send_message(r.now, json!(n), None).unwrap();
    }
    r.text(json!({"type":"ack","timestamp":1,"seq":1}));
    r.drain();

    let now = r.now;
    r.m.handle_closed(now, Some((1000, "heartbeat timeout")));
    let lost = r.drain();
    let ev = emitted(&lost);
    assert!(ev.iter().any(|e| matches!(e, Event::ConnectionLost { .. })));
    assert!(ev.contains(&Event::StateChanged(ConnectionState::Reconnecting)));
    assert_eq!(links(&lost), [LinkState::Reconnecting]);
    assert!(!ev
        .iter()
        .any(|e| matches!(e, Event::SessionClosed { .. } | Event::Failed { .. })));
    // The place is held: id, session and members stay.
    assert_eq!(r.m.client_id(), Some("c1"));
    assert_eq!(r.m.members().len(), 2);
    // What the app sends while away is queued.
    assert!(r.m.accepts_commands());
    r.m.send_message(r.now, json!(4), None).unwrap();
    assert!(
        decoded(&r.drain()).is_empty(),
        "nothing goes out without a socket"
    );
    assert_eq!(
        r.m.ping(r.now),
        Err(CommandError::NotConnected),
        "pings are never queued"
    );

    let waited = r.run_until(r.elapsed() + Duration::from_millis(2_100));
    let ev = emitted(&waited);
    assert!(
        ev.iter().any(|e| matches!(e, Event::Resuming { attempt: 1, window_left } if *window_left <= Duration::from_secs(28))),
        "{ev:?}"
    );
    assert!(!ev.iter().any(|e| matches!(e, Event::Reconnecting { .. })));
    assert!(waited.contains(&Action::Connect));
    r.m.handle_connected(r.now);
    let resume = decoded(&r.drain());
    assert_eq!(
        resume,
        [ClientMessage::Token {
            token: token.clone(),
            last_seq: Some(3)
        }]
    );
    // Echo, then resumed: the server had processed up to 2.
    r.text(json!({"type":"token","timestamp":1,"token":token}));
    assert_eq!(r.m.link_state(), LinkState::Connected);
    r.text(json!({"type":"resumed","timestamp":1,"lastSeq":2,"replayed":2}));
    let back = r.drain();
    let ev = emitted(&back);
    assert!(ev.contains(&Event::Resumed { replayed: 2 }), "{ev:?}");
    assert!(ev.contains(&Event::StateChanged(ConnectionState::Connected)));
    assert!(!ev.iter().any(|e| matches!(e, Event::Welcome { .. })));
    assert_eq!(
        sent_messages(&back),
        [(3, json!(3)), (4, json!(4))],
        "the unacknowledged one with its seq, then the queued one"
    );
    // The replay: 3 again (a duplicate), then 4 (sent while away).
    r.text(numbered(3, message_from("h", json!("before 3"))));
    r.text(numbered(4, message_from("h", json!("while away"))));
    let data: Vec<_> = r
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Message { data, .. } => Some(data),
            _ => None,
        })
        .collect();
    assert_eq!(data, [json!("while away")]);
    assert_eq!(r.m.client_id(), Some("c1"));
    // Numbering continues: the next message is 5.
    r.m.send_message(r.now, json!(5), None).unwrap();
    assert_eq!(sent_messages(&r.drain()), [(5, json!(5))]);
}

#[test]
fn each_refusal_is_reported_then_a_fresh_handshake_and_join_on_the_same_socket() {
    for (wire, reason) in [
        ("unknown_token", ResumeFailure::UnknownToken),
        ("expired", ResumeFailure::Expired),
        ("buffer_overflow", ResumeFailure::BufferOverflow),
    ] {
        let (mut r, token) = rconnected();
        r.m.send_message(r.now, json!("sent"), None).unwrap();
        r.drain();
        let (_, _, _) = drop_and_reopen(&mut r);
        r.m.send_message(r.now, json!("queued"), None).unwrap();
        r.drain();
        r.text(json!({"type":"resume_failed","timestamp":1,"reason":wire}));
        let failed = r.drain();
        let ev = emitted(&failed);
        assert!(
            ev.contains(&Event::ResumeFailed {
                reason,
                unconfirmed: 1,
                rejoining: true
            }),
            "{wire}: {ev:?}"
        );
        assert!(!failed.contains(&Action::Connect), "{wire}: same socket");
        assert!(
            !failed.contains(&Action::CloseSocket),
            "{wire}: same socket"
        );
        assert_eq!(r.m.client_id(), None, "{wire}: the old place is gone");
        let (b, joined) = handshake_on_socket(&mut r, failed, "c2");
        assert_ne!(merge_tokens(A, &b), token, "{wire}: a new local token");
        let ev = emitted(&joined);
        assert!(
            ev.iter()
                .any(|e| matches!(e, Event::Welcome { client_id, .. } if client_id == "c2")),
            "{wire}: {ev:?}"
        );
        assert!(ev.contains(&Event::StateChanged(ConnectionState::Connected)));
        assert_eq!(
            sent_messages(&joined),
            [(1, json!("queued"))],
            "{wire}: the queued message under the new numbering, the unconfirmed one not again"
        );
        assert!(r.m.is_resumable());
    }
}

#[test]
fn a_session_closed_refusal_ends_with_session_closed() {
    let (mut r, _) = rconnected();
    let (_, _, _) = drop_and_reopen(&mut r);
    r.text(json!({"type":"resume_failed","timestamp":1,"reason":"session_closed"}));
    let a = r.drain();
    let ev = emitted(&a);
    assert!(ev.contains(&Event::ResumeFailed {
        reason: ResumeFailure::SessionClosed,
        unconfirmed: 0,
        rejoining: false
    }));
    assert!(ev.iter().any(|e| matches!(e, Event::SessionClosed { .. })));
    assert!(a.contains(&Action::CloseSocket));
    assert!(decoded(&a).is_empty(), "no fresh handshake");
    assert!(r.m.is_ended());
    assert_eq!(r.m.state(), ConnectionState::Disconnected);
    assert_eq!(r.m.link_state(), LinkState::Disconnected);
}

/// What follows a close of a joined resumable member: the frames sent by the next socket
/// (if one opens within 3 s), and every action.
fn after_close(r: &mut Rig, close: Option<(u16, &str)>) -> (Vec<Action>, Vec<ClientMessage>) {
    let now = r.now;
    r.m.handle_closed(now, close);
    let until = r.elapsed() + Duration::from_secs(3);
    let mut actions = r.drain();
    actions.extend(r.run_until(until));
    let mut next = Vec::new();
    if actions.contains(&Action::Connect) {
        let now = r.now;
        r.m.handle_connected(now);
        let opened = r.drain();
        next = decoded(&opened);
        actions.extend(opened);
    }
    (actions, next)
}

fn is_resume(frames: &[ClientMessage]) -> bool {
    matches!(frames, [ClientMessage::Token { token, last_seq: Some(_) }] if token.len() == 64)
}

fn is_fresh_handshake(frames: &[ClientMessage]) -> bool {
    matches!(frames, [ClientMessage::Token { token, last_seq: None }] if token.len() == 32)
}

#[test]
fn closes_announced_by_a_frame_are_never_resumed() {
    // kicked
    let (mut r, _) = rconnected();
    r.text(numbered(
        2,
        json!({"type":"kicked","timestamp":1,"reason":"bye"}),
    ));
    let (a, next) = after_close(&mut r, Some((1000, "kicked")));
    assert!(emitted(&a).contains(&Event::Kicked {
        reason: "bye".into()
    }));
    assert!(next.is_empty() && r.m.is_ended());
    // session_closed
    let (mut r, _) = rconnected();
    r.text(numbered(
        2,
        json!({"type":"session_closed","timestamp":1,"reason":"Host ended the session"}),
    ));
    let (a, next) = after_close(&mut r, Some((1000, "session closed")));
    assert!(emitted(&a)
        .iter()
        .any(|e| matches!(e, Event::SessionClosed { .. })));
    assert!(next.is_empty() && r.m.is_ended());
    // session_closed then 1001: the server is going away; a fresh join, not a resume.
    let (mut r, _) = rconnected();
    r.text(numbered(
        2,
        json!({"type":"session_closed","timestamp":1,"reason":"Server shutting down"}),
    ));
    let (_, next) = after_close(&mut r, Some((1001, "going away")));
    assert!(is_fresh_handshake(&next), "{next:?}");
    // own leave (numbered, like any command)
    let (mut r, _) = rconnected();
    r.m.leave(r.now);
    assert_eq!(seqs(&r.drain()), [(Seq::Valid(1), "leave".to_string())]);
    let (a, next) = after_close(&mut r, Some((1000, "left")));
    assert!(next.is_empty() && r.m.is_ended(), "{a:?}");
    assert_eq!(r.m.state(), ConnectionState::Disconnected);
}

#[test]
fn closes_by_code_4000_1009_1002_1007_are_never_resumed() {
    // 4000: another socket resumed this place.
    let (mut r, _) = rconnected();
    let (a, next) = after_close(&mut r, Some((4000, "replaced")));
    assert!(next.is_empty(), "{next:?}");
    assert!(r.m.is_ended());
    assert_eq!(r.m.state(), ConnectionState::Failed);
    assert!(emitted(&a)
        .iter()
        .any(|e| matches!(e, Event::Failed { .. })));
    // 1009, 1002, 1007: the place ended; a member joins afresh (the landed rule).
    for code in [1009, 1002, 1007] {
        let (mut r, _) = rconnected();
        let (a, next) = after_close(&mut r, Some((code, "")));
        assert!(is_fresh_handshake(&next), "{code}: {next:?}");
        assert!(emitted(&a)
            .iter()
            .any(|e| matches!(e, Event::Reconnecting { attempt: 1, of: 3 })));
    }
    // ... and a host is told its session ended (it would re-create it).
    let (mut r, _) = rconnected_with(rhost_config());
    let (a, next) = after_close(&mut r, Some((1009, "message too big")));
    assert!(next.is_empty());
    assert!(emitted(&a)
        .iter()
        .any(|e| matches!(e, Event::SessionClosed { .. })));
}

#[test]
fn drops_timeouts_and_1008_are_resumed_by_members_and_hosts() {
    for close in [
        None,
        Some((1000, "heartbeat timeout")),
        Some((1008, "rate limit exceeded")),
        Some((1008, "outbound queue overflow: client too slow")),
        Some((1001, "going away")),
        Some((1011, "")),
    ] {
        for config in [rconfig(), rhost_config()] {
            let host = config.device.kind == DeviceType::Host;
            let (mut r, _) = rconnected_with(config);
            let (a, next) = after_close(&mut r, close);
            assert!(is_resume(&next), "{close:?} host {host}: {next:?}");
            assert!(
                !emitted(&a)
                    .iter()
                    .any(|e| matches!(e, Event::SessionClosed { .. })),
                "{close:?}: a resumable host resumes"
            );
        }
    }
}

#[test]
fn silence_on_a_resumable_connection_resumes() {
    let (mut r, _) = rconnected_with(rhost_config());
    let a = r.run_until(Duration::from_millis(15_100));
    assert!(a.contains(&Action::CloseSocket));
    let ev = emitted(&a);
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::ConnectionLost { reason } if reason.contains("silence"))));
    assert!(!ev.iter().any(|e| matches!(e, Event::SessionClosed { .. })));
    let a = r.run_until(Duration::from_millis(17_200));
    assert!(a.contains(&Action::Connect));
    r.m.handle_connected(r.now);
    assert!(is_resume(&decoded(&r.drain())));
}

#[test]
fn resume_attempts_go_on_with_the_backoff_until_the_window_has_passed() {
    let mut c = rconfig();
    c.reconnect = ReconnectPolicy {
        attempts: 3,
        delay: Duration::from_secs(1),
        backoff: Some(Backoff {
            factor: 2.0,
            max_delay: Duration::from_secs(8),
            jitter: 0.0,
        }),
    };
    let (mut r, _) = rconnected_with(c);
    r.at(Duration::from_secs(10));
    let dropped = r.now;
    r.m.handle_closed(dropped, None);
    r.drain();
    let mut starts = Vec::new();
    let mut failed = None;
    while r.elapsed() < Duration::from_secs(60) && failed.is_none() {
        let t = r.elapsed() + Duration::from_millis(100);
        for a in r.run_until(t) {
            match a {
                Action::Connect => {
                    starts.push(r.elapsed().as_millis() as u64 - 10_000);
                    let now = r.now;
                    r.m.handle_connect_failed(now, "refused");
                }
                Action::Emit(Event::Failed { reason }) => failed = Some(reason),
                _ => {}
            }
        }
        // Failures reported within the same step produce more actions.
        for a in r.drain() {
            if let Action::Emit(Event::Failed { reason }) = a {
                failed = Some(reason);
            }
        }
    }
    // 1, 2, 4, 8, 8 s apart, the last clamped to the window's end (30 s after the drop).
    assert_eq!(
        starts,
        [1_000, 3_000, 7_000, 15_000, 23_000, 30_000],
        "{failed:?}"
    );
    let reason = failed.expect("failed after the window");
    assert!(reason.contains("resume window"), "{reason}");
    assert_eq!(r.m.state(), ConnectionState::Failed);
    assert_eq!(r.m.link_state(), LinkState::Disconnected);
    assert!(r.m.members().is_empty());
}

#[test]
fn a_plain_connection_keeps_the_landed_three_attempts() {
    let mut c = rconfig();
    c.resume = false;
    let mut r = Rig::new(c);
    r.m.start(r.now);
    r.drain();
    r.join("c1");
    r.drain();
    r.m.handle_closed(r.now, None);
    let mut connects = 0;
    let mut actions = r.drain();
    for _ in 0..100 {
        let t = r.elapsed() + Duration::from_millis(100);
        actions.extend(r.run_until(t));
        for a in std::mem::take(&mut actions) {
            if a == Action::Connect {
                connects += 1;
                r.m.handle_connect_failed(r.now, "refused");
            }
        }
        actions.extend(r.drain());
    }
    assert_eq!(connects, 3);
    assert_eq!(r.m.state(), ConnectionState::Failed);
}

#[test]
fn a_resume_attempt_whose_socket_drops_or_times_out_is_retried() {
    let (mut r, _) = rconnected();
    let (_, _, _) = drop_and_reopen(&mut r);
    // The resume socket drops before any answer: another attempt after the delay.
    r.m.handle_closed(r.now, None);
    let a = r.run_until(r.elapsed() + Duration::from_millis(2_100));
    assert!(a.contains(&Action::Connect), "{a:?}");
    r.m.handle_connected(r.now);
    assert!(is_resume(&decoded(&r.drain())));
    // No answer within the join timeout: closed and retried.
    let a = r.run_until(r.elapsed() + Duration::from_millis(10_100));
    assert!(a.contains(&Action::CloseSocket));
    let a = r.run_until(r.elapsed() + Duration::from_millis(2_100));
    assert!(a.contains(&Action::Connect));
    assert!(emitted(&a)
        .iter()
        .any(|e| matches!(e, Event::Resuming { attempt: 3, .. })));
}

#[test]
fn what_is_queued_while_away_goes_out_in_order_paced_to_the_rate() {
    let mut c = rconfig();
    c.send_rate = 10;
    c.send_burst = 3;
    let (mut r, _) = rconnected_with(c);
    let (_, _, _) = drop_and_reopen(&mut r);
    for n in 1..=6 {
        r.m.send_message(r.now, json!(n), None).unwrap();
    }
    r.text(json!({"type":"resumed","timestamp":1,"lastSeq":0,"replayed":0}));
    let burst = r.drain();
    assert_eq!(
        sent_messages(&burst),
        [(1, json!(1)), (2, json!(2)), (3, json!(3))],
        "the burst at once"
    );
    let start = r.elapsed();
    let mut paced = Vec::new();
    let mut at = Vec::new();
    while paced.len() < 3 && r.elapsed() < start + Duration::from_secs(2) {
        let t = r.elapsed() + Duration::from_millis(10);
        // 10 ms steps by hand (run_until steps 100 ms).
        let now = r.at(t);
        if r.m.poll_timeout().is_some_and(|d| d <= now) {
            r.m.handle_timeout(now);
        }
        for m in sent_messages(&r.drain()) {
            paced.push(m);
            at.push((r.elapsed() - start).as_millis());
        }
    }
    assert_eq!(paced, [(4, json!(4)), (5, json!(5)), (6, json!(6))]);
    // 100 ms apart at 10 per second (to the 10 ms step).
    for (i, ms) in at.iter().enumerate() {
        let want = 100 * (i as u128 + 1);
        assert!(*ms >= want && *ms <= want + 10, "{at:?}");
    }
    // A message given while the backlog drains waits its turn.
    assert_eq!(r.m.send_message(r.now, json!(7), None), Ok(()));
}

#[test]
fn sends_while_away_are_refused_once_the_queue_is_full_and_without_resume() {
    let mut c = rconfig();
    c.queue_limit = 2;
    let (mut r, _) = rconnected_with(c);
    r.m.handle_closed(r.now, None);
    r.drain();
    r.m.send_message(r.now, json!(1), None).unwrap();
    r.m.send_message(r.now, json!(2), None).unwrap();
    assert!(!r.m.accepts_commands());
    assert!(r.m.queue_full());
    assert_eq!(
        r.m.send_message(r.now, json!(3), None),
        Err(CommandError::QueueFull)
    );
    // With resume off, nothing is queued (the landed rule).
    let mut c = rconfig();
    c.resume = false;
    let mut r = Rig::new(c);
    r.m.start(r.now);
    r.drain();
    r.join("c1");
    r.m.handle_closed(r.now, None);
    r.drain();
    assert_eq!(
        r.m.send_message(r.now, json!(1), None),
        Err(CommandError::NotConnected)
    );
}

#[test]
fn member_updated_changes_the_table_entry_and_is_an_event() {
    let (mut r, _) = rconnected();
    r.text(numbered(
        2,
        json!({"type":"member_updated","timestamp":1,"member":
        {"id":"h","name":"Host","isHost":true,"connectionStatus":"reconnecting","joinedAt":1,"latency":9}}),
    ));
    assert_eq!(
        r.m.members()[0].connection_status,
        ConnectionStatus::Reconnecting
    );
    assert_eq!(r.m.members()[0].latency, Some(9));
    assert_eq!(r.m.members().len(), 2, "updated in place");
    let ev = r.events();
    assert!(ev.iter().any(|e| matches!(e, Event::MemberUpdated(m)
        if m.id == "h" && m.connection_status == ConnectionStatus::Reconnecting)));
    r.text(numbered(
        3,
        json!({"type":"member_updated","timestamp":1,"member":
        {"id":"h","name":"Host","isHost":true,"connectionStatus":"connected","joinedAt":1}}),
    ));
    assert_eq!(
        r.m.members()[0].connection_status,
        ConnectionStatus::Connected
    );
    assert_eq!(r.m.members()[0].id, "h");
}

#[test]
fn the_formal_disconnect_sends_the_token_after_the_queue_and_ends() {
    let mut c = rconfig();
    c.send_rate = 10;
    c.send_burst = 1;
    let (mut r, token) = rconnected_with(c);
    r.m.send_message(r.now, json!(1), None).unwrap();
    r.m.send_message(r.now, json!(2), None).unwrap();
    r.m.disconnect(r.now);
    let a = r.drain();
    assert_eq!(sent_messages(&a), [(1, json!(1))]);
    assert!(!decoded(&a)
        .iter()
        .any(|m| matches!(m, ClientMessage::Token { .. })));
    assert!(r.m.send_message(r.now, json!(3), None).is_err());
    let a = r.run_until(r.elapsed() + Duration::from_millis(200));
    let sent = decoded(&a);
    let tail: Vec<_> = sent
        .iter()
        .filter(|m| !matches!(m, ClientMessage::Heartbeat | ClientMessage::Ping { .. }))
        .cloned()
        .collect();
    assert_eq!(tail.len(), 2, "{sent:?}");
    assert!(matches!(&tail[0], ClientMessage::Message { .. }));
    assert_eq!(
        tail[1],
        ClientMessage::Token {
            token,
            last_seq: None
        }
    );
    assert_eq!(
        seqs(&a).last().unwrap().0,
        Seq::Absent,
        "the token is not numbered"
    );
    assert_eq!(r.m.link_state(), LinkState::Disconnected);
    let (a, next) = after_close(&mut r, Some((1000, "left")));
    assert!(next.is_empty() && r.m.is_ended(), "{a:?}");
    assert_eq!(r.m.state(), ConnectionState::Disconnected);
}

#[test]
fn the_plain_join_of_resume_off_sends_no_token() {
    let mut c = rconfig();
    c.resume = false;
    let mut r = Rig::new(c);
    r.m.start(r.now);
    r.drain();
    r.m.handle_connected(r.now);
    assert!(matches!(&decoded(&r.drain())[..], [ClientMessage::Join(_)]));
    assert_eq!(r.m.link_state(), LinkState::Disconnected);
}

#[test]
fn every_frame_of_a_resumable_connection_is_valid_for_the_server() {
    let (mut r, _) = rconnected();
    let now = r.now;
    r.m.send_message(now, json!({"k": [1, 2.5, "x"]}), Some("h"))
        .unwrap();
    r.m.kick(now, "c9", Some("why")).unwrap();
    r.m.request_member_list(now).unwrap();
    let mut a = r.drain();
    a.extend(r.run_until(Duration::from_secs(6)));
    let (more, _, _) = drop_and_reopen(&mut r);
    a.extend(more);
    for action in &a {
        if let Action::Send(t) = action {
            let d = loudsync_protocol::decode_numbered(t);
            assert!(d.message.is_ok(), "{t}");
            assert_ne!(d.seq, Seq::Invalid, "{t}");
        }
    }
    let _ = sends(&a);
}

/// Runs timers until the next attempt opens a socket (within 3 s); returns every action.
fn until_connect(r: &mut Rig) -> Vec<Action> {
    let until = r.elapsed() + Duration::from_secs(3);
    let mut actions = Vec::new();
    while r.elapsed() < until && !actions.contains(&Action::Connect) {
        let t = r.elapsed() + Duration::from_millis(100);
        actions.extend(r.run_until(t));
    }
    assert!(actions.contains(&Action::Connect), "{actions:?}");
    actions
}

/// A resumable member with `1` acknowledged and `2` sent unacknowledged drops and calls
/// `leave()` (or the formal disconnect) while away; returns the connection token.
fn leave_while_away(disconnect: bool) -> (Rig, String) {
    let (mut r, token) = rconnected();
    r.m.send_message(r.now, json!(1), None).unwrap();
    r.m.send_message(r.now, json!(2), None).unwrap();
    r.text(json!({"type":"ack","timestamp":1,"seq":1}));
    r.drain();
    let now = r.now;
    r.m.handle_closed(now, None);
    r.drain();
    assert_eq!(r.m.state(), ConnectionState::Reconnecting);
    if disconnect {
        r.m.disconnect(r.now);
    } else {
        r.m.leave(r.now);
    }
    let a = r.drain();
    assert!(!r.m.is_ended(), "queued, not ended: {a:?}");
    assert!(!a.contains(&Action::CloseSocket), "{a:?}");
    assert!(decoded(&a).is_empty(), "nothing goes out without a socket");
    assert!(r.m.leave_queued());
    assert_eq!(r.m.state(), ConnectionState::Reconnecting);
    assert_eq!(r.m.client_id(), Some("c1"), "the place is still held");
    // Nothing is taken after the leave.
    assert!(!r.m.accepts_commands());
    assert!(!r.m.queue_full());
    assert_eq!(
        r.m.send_message(r.now, json!(3), None),
        Err(CommandError::NotConnected)
    );
    (r, token)
}

/// Opens the next socket (the first attempt is refused: the leave survives between
/// attempts) and gets to the resume's answer; returns the resume frame's `lastSeq`.
fn reopen_after_a_refused_attempt(r: &mut Rig, token: &str) -> u64 {
    until_connect(r);
    let now = r.now;
    r.m.handle_connect_failed(now, "connection refused");
    let a = r.drain();
    assert!(!r.m.is_ended(), "{a:?}");
    assert!(r.m.leave_queued(), "kept between attempts");
    until_connect(r);
    let now = r.now;
    r.m.handle_connected(now);
    let sent = decoded(&r.drain());
    let [ClientMessage::Token {
        token: t,
        last_seq: Some(n),
    }] = &sent[..]
    else {
        panic!("a resume, not a leave or a fresh join: {sent:?}");
    };
    assert_eq!(t, token);
    r.text(json!({"type":"token","timestamp":1,"token":token}));
    *n
}

#[test]
fn leave_while_resuming_goes_out_right_after_the_resend_once_resumed() {
    let (mut r, token) = leave_while_away(false);
    assert_eq!(reopen_after_a_refused_attempt(&mut r, &token), 1);
    // The server processed 1; 2 is resent with its seq, then the leave is the next number.
    r.text(json!({"type":"resumed","timestamp":1,"lastSeq":1,"replayed":0}));
    let back = r.drain();
    assert!(emitted(&back).contains(&Event::Resumed { replayed: 0 }));
    assert_eq!(
        seqs(&back),
        [
            (Seq::Valid(2), "message".to_string()),
            (Seq::Valid(3), "leave".to_string())
        ]
    );
    assert!(!r.m.leave_queued());
    assert!(!r.m.accepts_commands());
    // The server answers with 1000 `left`: the end, as after a connected leave.
    let (a, next) = after_close(&mut r, Some((1000, "left")));
    assert!(next.is_empty() && r.m.is_ended(), "{a:?}");
    assert!(!emitted(&a)
        .iter()
        .any(|e| matches!(e, Event::Failed { .. } | Event::Resuming { .. })));
    assert_eq!(r.m.state(), ConnectionState::Disconnected);
    assert_eq!(r.m.link_state(), LinkState::Disconnected);
}

#[test]
fn leave_while_resuming_then_resume_failed_ends_without_a_fresh_join() {
    for (wire, reason) in [
        ("unknown_token", ResumeFailure::UnknownToken),
        ("expired", ResumeFailure::Expired),
        ("buffer_overflow", ResumeFailure::BufferOverflow),
        ("session_closed", ResumeFailure::SessionClosed),
    ] {
        let (mut r, token) = leave_while_away(false);
        reopen_after_a_refused_attempt(&mut r, &token);
        r.text(json!({"type":"resume_failed","timestamp":1,"reason":wire}));
        let a = r.drain();
        let ev = emitted(&a);
        assert!(
            ev.contains(&Event::ResumeFailed {
                reason,
                unconfirmed: 1,
                rejoining: false
            }),
            "{wire}: {ev:?}"
        );
        assert_eq!(
            ev.iter().any(|e| matches!(e, Event::SessionClosed { .. })),
            reason == ResumeFailure::SessionClosed,
            "{wire}: {ev:?}"
        );
        assert!(!ev.iter().any(|e| matches!(e, Event::Failed { .. })));
        assert!(decoded(&a).is_empty(), "{wire}: no fresh handshake");
        assert!(a.contains(&Action::CloseSocket), "{wire}");
        assert!(r.m.is_ended(), "{wire}");
        assert_eq!(r.m.state(), ConnectionState::Disconnected, "{wire}");
        assert_eq!(r.m.link_state(), LinkState::Disconnected, "{wire}");
        assert!(r
            .run_until(r.elapsed() + Duration::from_secs(60))
            .is_empty());
    }
}

#[test]
fn leave_while_resuming_ends_when_the_window_passes() {
    let (mut r, _) = leave_while_away(false);
    let mut all = Vec::new();
    while r.elapsed() < Duration::from_secs(40) && !r.m.is_ended() {
        let t = r.elapsed() + Duration::from_millis(100);
        for a in r.run_until(t) {
            if a == Action::Connect {
                let now = r.now;
                r.m.handle_connect_failed(now, "connection refused");
            }
            all.push(a);
        }
        all.extend(r.drain());
    }
    assert!(r.m.is_ended());
    assert!(
        r.elapsed() >= Duration::from_secs(30),
        "the window: {:?}",
        r.elapsed()
    );
    assert_eq!(
        r.m.state(),
        ConnectionState::Disconnected,
        "left, not failed"
    );
    let ev = emitted(&all);
    assert!(
        !ev.iter().any(|e| matches!(e, Event::Failed { .. })),
        "{ev:?}"
    );
    assert!(!ev.iter().any(|e| matches!(e, Event::Reconnecting { .. })));
    assert!(r
        .run_until(r.elapsed() + Duration::from_secs(60))
        .is_empty());
}

#[test]
fn the_formal_disconnect_while_resuming_goes_out_after_the_resend() {
    let (mut r, token) = leave_while_away(true);
    reopen_after_a_refused_attempt(&mut r, &token);
    r.text(json!({"type":"resumed","timestamp":1,"lastSeq":1,"replayed":0}));
    let back = r.drain();
    assert_eq!(
        seqs(&back),
        [
            (Seq::Valid(2), "message".to_string()),
            (Seq::Absent, "token".to_string())
        ]
    );
    assert_eq!(
        decoded(&back)[1],
        ClientMessage::Token {
            token,
            last_seq: None
        }
    );
    let (a, next) = after_close(&mut r, Some((1000, "left")));
    assert!(next.is_empty() && r.m.is_ended(), "{a:?}");
    assert_eq!(r.m.state(), ConnectionState::Disconnected);
}

#[test]
fn leave_while_reconnecting_a_plain_connection_still_ends_at_once() {
    let mut r = Rig::new(rconfig());
    r.m.start(r.now);
    r.drain();
    r.m.handle_connected(r.now);
    r.drain();
    // The handshake, then a welcome without `resumable`: a plain connection.
    r.text(json!({"type":"token","timestamp":1,"token":A}));
    r.text(json!({"type":"token","timestamp":1,"token":A}));
    r.text(welcome("c1", false));
    r.drain();
    assert!(!r.m.is_resumable());
    let now = r.now;
    r.m.handle_closed(now, None);
    r.drain();
    assert_eq!(r.m.state(), ConnectionState::Reconnecting);
    r.m.leave(r.now);
    assert!(!r.m.leave_queued());
    assert!(r.m.is_ended());
    assert_eq!(r.m.state(), ConnectionState::Disconnected);
}
