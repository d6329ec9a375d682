//! Tests of the state and handoff layer (seed 000, issue 11) on a virtual clock: state
//! changes and their checks, readiness, voluntary handoff and each of its failures, host loss
//! under both policies, fencing.

use super::handoff::{HandoffConfig, HostLoss};
use super::tests::{join, now as t0};
use super::*;
use loudsync_protocol::{HandoffFailure, HostChange, StateChange};
use serde_json::{json, Value};

type S = Session<String>;

/// What one recipient was handed, as JSON (so assertions read like the wire).
#[derive(Debug, Clone)]
struct Frame {
    to: String,
    message: Value,
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn session(config: HandoffConfig, window: Duration) -> S {
    Session::new(
        SessionSpec {
            id: "s1".into(),
            name: "Party".into(),
            max_members: 50,
            access: Access::default(),
        },
        SessionConfig {
            detach_hold: window,
            handoff: config,
            ..SessionConfig::default()
        },
    )
}

/// Joins `id` (device `dev-<id>`) on socket 0; resumable members get a token.
fn join_as(s: &mut S, now: Now, id: &str, kind: DeviceType, dialect: Dialect, resumable: bool) {
    let joiner = Joiner {
        transport: id.to_string(),
        dialect,
        address: "127.0.0.1".into(),
        credentials: Credentials::default(),
        socket: 0,
        resume_token: resumable.then(|| format!("tok-{id}")),
    };
    s.handle_join(
        now,
        id.to_string(),
        &join(&format!("dev-{id}"), kind),
        joiner,
    )
    .map_err(|(e, _)| e)
    .unwrap();
}

/// A session with host `h` and members `c1..=n` (our dialect, plain), drained.
fn party(n: usize, config: HandoffConfig) -> S {
    let mut s = session(config, Duration::ZERO);
    join_as(
        &mut s,
        t0(),
        "h",
        DeviceType::Host,
        Dialect::LoudSync,
        false,
    );
    for i in 1..=n {
        join_as(
            &mut s,
            t0(),
            &format!("c{i}"),
            DeviceType::Client,
            Dialect::LoudSync,
            false,
        );
    }
    drain(&mut s);
    s
}

/// Every frame handed out, per recipient, in order (closes are frames of type `close`).
fn drain(s: &mut S) -> Vec<Frame> {
    let mut out = Vec::new();
    while let Some(action) = s.poll_action() {
        match action {
            SessionAction::Send { to, message } => {
                let text = loudsync_protocol::encode(&message, &loudsync_protocol::Stamp::Now(1));
                let mut recipients = Vec::new();
                s.deliver(
                    &to,
                    &message,
                    &mut |_| Bytes::from(text.clone()),
                    &mut |t: &String, _| recipients.push(t.clone()),
                );
                for to in recipients {
                    out.push(Frame {
                        to,
                        message: serde_json::from_str(&text).unwrap(),
                    });
                }
            }
            SessionAction::Close {
                member,
                code,
                reason,
                ..
            } => out.push(Frame {
                to: member,
                message: json!({"type": "close", "code": code, "reason": reason}),
            }),
            SessionAction::TokenEnded { .. } | SessionAction::Ended => {}
        }
    }
    out
}

fn to<'a>(frames: &'a [Frame], who: &str) -> Vec<&'a Value> {
    frames
        .iter()
        .filter(|f| f.to == who)
        .map(|f| &f.message)
        .collect()
}

fn types(frames: &[Frame], who: &str) -> Vec<String> {
    to(frames, who)
        .iter()
        .map(|m| m["type"].as_str().unwrap().to_string())
        .collect()
}

fn cmd(s: &mut S, now: Now, who: &str, command: MemberCommand) -> Vec<Frame> {
    s.handle_command(now, who, command);
    drain(s)
}

fn replace(state: Value) -> MemberCommand {
    MemberCommand::StateSet {
        change: Box::new(StateChange::Replace(state.as_object().unwrap().clone())),
        base_version: None,
        term: None,
    }
}

fn request(target: Option<&str>) -> MemberCommand {
    MemberCommand::HandoffRequest {
        target: target.map(str::to_string),
    }
}

fn answer(id: &str, accept: bool) -> MemberCommand {
    MemberCommand::HandoffAnswer {
        handoff_id: id.into(),
        accept,
    }
}

#[test]
fn the_host_sets_the_state_and_every_member_gets_the_whole_document() {
    let mut s = party(2, HandoffConfig::default());
    let f = cmd(&mut s, t0(), "h", replace(json!({"track": "a", "pos": 1})));
    for who in ["h", "c1", "c2"] {
        assert_eq!(
            to(&f, who),
            [
                &json!({"type": "state", "timestamp": 1, "state": {"pos": 1, "track": "a"},
                     "version": 1, "term": 1, "updatedBy": "h"})
            ]
        );
    }
    let f = cmd(
        &mut s,
        t0(),
        "h",
        MemberCommand::StateSet {
            change: Box::new(StateChange::Patch(
                json!({"pos": null, "vol": 7}).as_object().unwrap().clone(),
            )),
            base_version: Some(1),
            term: Some(1),
        },
    );
    assert_eq!(to(&f, "c1")[0]["state"], json!({"track": "a", "vol": 7}));
    assert_eq!(to(&f, "c1")[0]["version"], 2);
    assert_eq!(s.state().version(), 2);
}

#[test]
fn a_voluntary_handoff_to_a_named_member_moves_control_and_the_term() {
    let mut s = party(2, HandoffConfig::default());
    cmd(&mut s, t0(), "h", replace(json!({"k": 1})));
    let f = cmd(&mut s, t0(), "h", request(Some("c2")));
    assert_eq!(
        to(&f, "h"),
        [&json!({"type": "handoff_started", "timestamp": 1, "handoffId": "h1", "targetId": "c2"})]
    );
    assert_eq!(
        to(&f, "c2"),
        [
            &json!({"type": "handoff_request", "timestamp": 1, "handoffId": "h1", "fromId": "h",
                 "state": {"k": 1}, "version": 1, "term": 1, "timeoutMs": 10000})
        ]
    );
    assert!(to(&f, "c1").is_empty());
    let f = cmd(&mut s, t0(), "c2", answer("h1", true));
    assert_eq!(types(&f, "h"), ["handoff_ack", "host_changed"]);
    assert_eq!(to(&f, "h")[0]["hostId"], "c2");
    assert_eq!(to(&f, "h")[0]["term"], 2);
    for who in ["h", "c1", "c2"] {
        let changed = to(&f, who).last().copied().unwrap().clone();
        assert_eq!(
            changed,
            json!({"type": "host_changed", "timestamp": 1, "hostId": "c2",
                   "previousHostId": "h", "term": 2, "reason": "handoff"})
        );
    }
    assert_eq!((s.host_id(), s.term()), (Some("c2"), 2));
    let infos = s.member_infos();
    assert_eq!(infos[0].id, "c2");
    assert!(infos[0].is_host && !infos[0].handoff_ready);
    let old = infos.iter().find(|m| m.id == "h").unwrap();
    assert!(
        !old.is_host && old.handoff_ready,
        "the old host is Handoff-Ready"
    );
    // Fencing: the former host can no longer set state; the new host can, in term 2.
    let f = cmd(&mut s, t0(), "h", replace(json!({"k": 2})));
    assert_eq!(to(&f, "h")[0]["code"], "unauthorized");
    assert_eq!(
        to(&f, "h")[0]["details"],
        json!({"hostId": "c2", "term": 2})
    );
    let f = cmd(&mut s, t0(), "c2", replace(json!({"k": 3})));
    assert_eq!(to(&f, "c1")[0]["term"], 2);
    let _ = (HandoffFailure::Busy, HostChange::Handoff, HostLoss::Close);
}

#[test]
fn a_silent_candidate_times_out_on_the_virtual_clock_and_a_late_accept_is_not_pending() {
    let config = HandoffConfig {
        timeout: secs(3),
        ..HandoffConfig::default()
    };
    let mut s = party(1, config);
    let start = t0();
    cmd(&mut s, start, "h", request(Some("c1")));
    assert_eq!(s.poll_timeout(), Some(start.instant + secs(3)));
    s.handle_timeout(start.plus(Duration::from_millis(2999)));
    assert!(drain(&mut s).is_empty(), "not before the deadline");
    s.handle_timeout(start.plus(secs(3)));
    let f = drain(&mut s);
    assert_eq!(
        to(&f, "h"),
        [
            &json!({"type": "handoff_failed", "timestamp": 1, "reason": "timeout",
                 "handoffId": "h1", "targetId": "c1"})
        ]
    );
    assert_eq!(
        to(&f, "c1"),
        [
            &json!({"type": "handoff_failed", "timestamp": 1, "reason": "timeout", "handoffId": "h1"})
        ]
    );
    assert_eq!(s.poll_timeout(), None);
    let f = cmd(&mut s, start.plus(secs(4)), "c1", answer("h1", true));
    assert_eq!(to(&f, "c1")[0]["code"], "handoff_not_pending");
    assert_eq!((s.host_id(), s.term()), (Some("h"), 1));
}
