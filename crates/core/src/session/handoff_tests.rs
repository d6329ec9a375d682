//! Tests of the state and handoff layer (seed 000, issue 11) on a virtual clock: state
//! changes and their checks, readiness, voluntary handoff and each of its failures, host loss
//! under both policies, fencing; and a property test (module `property`) of random sequences
//! that must keep exactly one host, on whom every member's own frames agree.

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
    /// The `seq` it was numbered with (resumable recipients).
    seq: Option<u64>,
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
                    &mut |t: &String, o| {
                        let seq = match o {
                            Outgoing::Numbered(seq, _) => Some(seq),
                            Outgoing::Plain(_) => None,
                        };
                        recipients.push((t.clone(), seq))
                    },
                );
                for (to, seq) in recipients {
                    out.push(Frame {
                        to,
                        message: serde_json::from_str(&text).unwrap(),
                        seq,
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
                seq: None,
            }),
            SessionAction::TokenEnded { .. }
            | SessionAction::Ended
            | SessionAction::MediaToken { .. }
            | SessionAction::MemberGone { .. } => {}
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

// ---------------------------------------------------------------------------------------------
// More of the harness: sessions of any make-up, the commands of this layer, the handoff itself.

/// A session under `config` whose resumable members are held for `window`, joined in the order
/// given: `h` / `rh` is the host (`rh` resumable), `c*` a plain member, `r*` a resumable one,
/// `a*` an app-dialect one (plain); drained.
fn crew(config: HandoffConfig, window: Duration, ids: &[&str]) -> S {
    let mut s = session(config, window);
    for id in ids {
        let kind = if *id == "h" || *id == "rh" {
            DeviceType::Host
        } else {
            DeviceType::Client
        };
        let dialect = if id.starts_with('a') {
            Dialect::App
        } else {
            Dialect::LoudSync
        };
        join_as(&mut s, t0(), id, kind, dialect, id.starts_with('r'));
    }
    drain(&mut s);
    s
}

/// The settings with host loss handled by a handoff.
fn on_loss_handoff() -> HandoffConfig {
    HandoffConfig {
        on_host_loss: HostLoss::Handoff,
        ..HandoffConfig::default()
    }
}

fn set(state: Value, base_version: Option<u64>, term: Option<u64>) -> MemberCommand {
    MemberCommand::StateSet {
        change: Box::new(StateChange::Replace(state.as_object().unwrap().clone())),
        base_version,
        term,
    }
}

fn patch(patch: Value, base_version: Option<u64>, term: Option<u64>) -> MemberCommand {
    MemberCommand::StateSet {
        change: Box::new(StateChange::Patch(patch.as_object().unwrap().clone())),
        base_version,
        term,
    }
}

fn ready(ready: bool) -> MemberCommand {
    MemberCommand::HandoffReady(ready)
}

/// The one frame of `frames`, which must be an `error` to `who` and the only frame at all (a
/// refusal is told to the sender and nobody else).
fn only_error<'a>(frames: &'a [Frame], who: &str) -> &'a Value {
    assert_eq!(frames.len(), 1, "one frame, to {who}: {frames:#?}");
    assert_eq!(frames[0].to, who);
    assert_eq!(frames[0].message["type"], "error", "{frames:#?}");
    &frames[0].message
}

/// The state document as JSON, and its version.
fn doc(s: &S) -> (Value, u64) {
    (
        serde_json::from_str(s.state().text().get()).unwrap(),
        s.state().version(),
    )
}

/// `from` (the host) hands control to `target`, who accepts; the frames of the accept.
fn hand_over(s: &mut S, from: &str, target: &str) -> Vec<Frame> {
    let f = cmd(s, t0(), from, request(Some(target)));
    assert_eq!(types(&f, from), ["handoff_started"], "{f:#?}");
    let id = s.pending_handoff().unwrap().0.to_string();
    cmd(s, t0(), target, answer(&id, true))
}

fn kick(target: &str) -> MemberCommand {
    MemberCommand::Kick {
        member_id: target.into(),
        reason: None,
    }
}

// ---------------------------------------------------------------------------------------------
// 1. State: the checks of a `state_set` in their order, and who gets what.

#[test]
fn a_state_set_from_a_member_or_a_former_host_is_unauthorized_and_changes_nothing() {
    let mut s = party(2, HandoffConfig::default());
    cmd(&mut s, t0(), "h", replace(json!({"k": 1})));
    let f = cmd(&mut s, t0(), "c1", replace(json!({"k": 2})));
    assert_eq!(
        only_error(&f, "c1"),
        &json!({"type": "error", "timestamp": 1, "code": "unauthorized",
                "message": "state_set: only the host may set the session state",
                "details": {"hostId": "h", "term": 1}})
    );
    assert_eq!(doc(&s), (json!({"k": 1}), 1));
    // A member's set is refused as not the host's even when its term and version are stale:
    // the host check comes first.
    let f = cmd(&mut s, t0(), "c1", set(json!({"k": 2}), Some(9), Some(9)));
    assert_eq!(only_error(&f, "c1")["code"], "unauthorized");

    hand_over(&mut s, "h", "c1");
    // The former host, even naming the version and a term it could know, is fenced out.
    let f = cmd(&mut s, t0(), "h", set(json!({"k": 3}), Some(1), Some(2)));
    assert_eq!(
        only_error(&f, "h")["details"],
        json!({"hostId": "c1", "term": 2})
    );
    let f = cmd(&mut s, t0(), "h", patch(json!({"k": 3}), None, None));
    assert_eq!(only_error(&f, "h")["code"], "unauthorized");
    assert_eq!(doc(&s), (json!({"k": 1}), 1));
}

#[test]
fn in_a_session_no_host_has_joined_the_refusal_names_no_host() {
    let mut s = session(HandoffConfig::default(), Duration::ZERO);
    for id in ["c1", "c2"] {
        join_as(
            &mut s,
            t0(),
            id,
            DeviceType::Client,
            Dialect::LoudSync,
            false,
        );
    }
    let f = drain(&mut s);
    let welcome = to(&f, "c1")[0];
    assert_eq!(welcome["sessionInfo"]["hostId"], Value::Null);
    assert_eq!(
        (&welcome["state"], &welcome["version"], &welcome["term"]),
        (&json!({}), &json!(0), &json!(1))
    );
    let f = cmd(&mut s, t0(), "c1", replace(json!({"k": 1})));
    assert_eq!(
        only_error(&f, "c1")["details"],
        json!({"hostId": null, "term": 1})
    );
    assert_eq!(doc(&s), (json!({}), 0));
    // The other host-only frames are fenced the same way.
    let f = cmd(&mut s, t0(), "c1", request(Some("c2")));
    assert_eq!(
        only_error(&f, "c1")["details"],
        json!({"hostId": null, "term": 1})
    );
    let f = cmd(&mut s, t0(), "c1", kick("c2"));
    assert_eq!(
        only_error(&f, "c1")["details"],
        json!({"hostId": null, "term": 1})
    );
}

#[test]
fn a_state_set_naming_another_term_is_stale_term_even_from_the_host() {
    let mut s = party(1, HandoffConfig::default());
    cmd(&mut s, t0(), "h", replace(json!({"k": 1})));
    for term in [0, 2, 99] {
        let f = cmd(&mut s, t0(), "h", set(json!({"k": 2}), None, Some(term)));
        let e = only_error(&f, "h");
        assert_eq!(e["code"], "stale_term");
        assert_eq!(e["details"], json!({"hostId": "h", "term": 1}));
        assert_eq!(
            e["message"],
            format!("state_set: term {term} is not the current term 1")
        );
    }
    // The term is checked before the version.
    let f = cmd(&mut s, t0(), "h", set(json!({"k": 2}), Some(7), Some(2)));
    assert_eq!(only_error(&f, "h")["code"], "stale_term");
    assert_eq!(doc(&s), (json!({"k": 1}), 1));
    // The current term passes.
    let f = cmd(&mut s, t0(), "h", set(json!({"k": 2}), Some(1), Some(1)));
    assert_eq!(types(&f, "c1"), ["state"]);
    assert_eq!(doc(&s), (json!({"k": 2}), 2));
}

#[test]
fn a_state_set_on_a_stale_base_version_is_stale_version_with_the_current_version() {
    let mut s = party(1, HandoffConfig::default());
    cmd(&mut s, t0(), "h", replace(json!({"k": 1})));
    cmd(&mut s, t0(), "h", replace(json!({"k": 2})));
    for base in [0, 1, 3] {
        let f = cmd(
            &mut s,
            t0(),
            "h",
            patch(json!({"k": 3}), Some(base), Some(1)),
        );
        let e = only_error(&f, "h");
        assert_eq!(e["code"], "stale_version");
        assert_eq!(e["details"], json!({"currentVersion": 2}));
    }
    assert_eq!(doc(&s), (json!({"k": 2}), 2));
    let f = cmd(&mut s, t0(), "h", patch(json!({"k": 3}), Some(2), None));
    assert_eq!(to(&f, "c1")[0]["version"], 3);
    // Absent: unconditional.
    let f = cmd(&mut s, t0(), "h", patch(json!({"k": 4}), None, None));
    assert_eq!(to(&f, "c1")[0]["version"], 4);
}

#[test]
fn a_state_over_the_limit_is_state_too_large_with_both_sizes_whole_or_patched() {
    let config = HandoffConfig {
        max_state_bytes: 16,
        ..HandoffConfig::default()
    };
    let mut s = party(1, config);
    cmd(&mut s, t0(), "h", replace(json!({"k": 1})));
    // {"k":"0123456789"} is 18 bytes as compact JSON.
    let f = cmd(&mut s, t0(), "h", replace(json!({"k": "0123456789"})));
    let e = only_error(&f, "h");
    assert_eq!(e["code"], "state_too_large");
    assert_eq!(e["details"], json!({"maxBytes": 16, "bytes": 18}));
    // The size is the merged document's: {"k":1,"x":"abcdefgh"} is 22 bytes.
    let f = cmd(
        &mut s,
        t0(),
        "h",
        patch(json!({"x": "abcdefgh"}), Some(1), Some(1)),
    );
    assert_eq!(
        only_error(&f, "h")["details"],
        json!({"maxBytes": 16, "bytes": 22})
    );
    // A stale version is found before the size.
    let f = cmd(&mut s, t0(), "h", replace(json!({"k": "0123456789"})));
    assert_eq!(only_error(&f, "h")["code"], "state_too_large");
    let f = cmd(
        &mut s,
        t0(),
        "h",
        set(json!({"k": "0123456789"}), Some(0), None),
    );
    assert_eq!(only_error(&f, "h")["code"], "stale_version");
    assert_eq!(doc(&s), (json!({"k": 1}), 1));
    // Exactly at the limit is accepted: {"k":"01234567"} is 16 bytes.
    let f = cmd(&mut s, t0(), "h", replace(json!({"k": "01234567"})));
    assert_eq!(types(&f, "c1"), ["state"]);
    assert_eq!(doc(&s), (json!({"k": "01234567"}), 2));
}

#[test]
fn a_patch_merges_and_its_nulls_remove_keys_and_every_member_gets_the_whole_result() {
    let mut s = party(2, HandoffConfig::default());
    cmd(
        &mut s,
        t0(),
        "h",
        replace(json!({"a": 1, "b": {"c": 2, "d": 3}, "e": 4})),
    );
    let f = cmd(
        &mut s,
        t0(),
        "h",
        patch(
            json!({"a": null, "b": {"c": null, "f": [1]}, "g": null}),
            Some(1),
            Some(1),
        ),
    );
    let whole = json!({"b": {"d": 3, "f": [1]}, "e": 4});
    for who in ["h", "c1", "c2"] {
        assert_eq!(
            to(&f, who),
            [
                &json!({"type": "state", "timestamp": 1, "state": whole, "version": 2,
                     "term": 1, "updatedBy": "h"})
            ]
        );
    }
    assert_eq!(doc(&s), (whole, 2));
}

#[test]
fn a_later_joiner_gets_the_current_state_in_its_welcome_and_no_earlier_state_frames() {
    let mut s = party(1, HandoffConfig::default());
    cmd(&mut s, t0(), "h", replace(json!({"k": 1})));
    cmd(&mut s, t0(), "h", patch(json!({"j": true}), None, None));
    join_as(
        &mut s,
        t0(),
        "c2",
        DeviceType::Client,
        Dialect::LoudSync,
        false,
    );
    let f = drain(&mut s);
    assert_eq!(types(&f, "c2"), ["welcome", "member_list"]);
    let w = to(&f, "c2")[0];
    assert_eq!(
        (&w["state"], &w["version"], &w["term"]),
        (&json!({"k": 1, "j": true}), &json!(2), &json!(1))
    );
    assert_eq!(w["sessionInfo"]["hostId"], "h");
    // After a handoff: the new host and term.
    hand_over(&mut s, "h", "c1");
    join_as(
        &mut s,
        t0(),
        "c3",
        DeviceType::Client,
        Dialect::LoudSync,
        false,
    );
    let f = drain(&mut s);
    assert_eq!(types(&f, "c3"), ["welcome", "member_list"]);
    let w = to(&f, "c3")[0];
    assert_eq!((&w["version"], &w["term"]), (&json!(2), &json!(2)));
    assert_eq!(w["sessionInfo"]["hostId"], "c1");
    let list = &to(&f, "c3")[1]["members"];
    assert_eq!(
        (&list[0]["id"], &list[0]["isHost"], &list[1]["id"]),
        (&json!("c1"), &json!(true), &json!("h"))
    );
}

#[test]
fn app_dialect_members_never_receive_state() {
    let mut s = crew(HandoffConfig::default(), Duration::ZERO, &["h", "a1", "c1"]);
    let f = cmd(&mut s, t0(), "h", replace(json!({"k": 1})));
    assert_eq!(types(&f, "h"), ["state"]);
    assert_eq!(types(&f, "c1"), ["state"]);
    assert!(to(&f, "a1").is_empty(), "{f:#?}");
    let f = cmd(&mut s, t0(), "h", patch(json!({"k": 2}), Some(1), Some(1)));
    assert!(to(&f, "a1").is_empty());
    assert_eq!(f.len(), 2);
}

// ---------------------------------------------------------------------------------------------
// 2. Readiness.

#[test]
fn a_readiness_change_is_told_to_the_other_members_of_our_dialect_only() {
    let mut s = crew(
        HandoffConfig::default(),
        Duration::ZERO,
        &["h", "c1", "a1", "c2"],
    );
    let f = cmd(&mut s, t0(), "c1", ready(true));
    assert_eq!(types(&f, "h"), ["member_updated"]);
    assert_eq!(types(&f, "c2"), ["member_updated"]);
    assert!(
        to(&f, "c1").is_empty(),
        "the declaring member gets no reply"
    );
    assert!(to(&f, "a1").is_empty(), "the app has no such field");
    let member = &to(&f, "h")[0]["member"];
    assert_eq!(
        (&member["id"], &member["handoffReady"]),
        (&json!("c1"), &json!(true))
    );
    assert!(s
        .member_infos()
        .iter()
        .any(|m| m.id == "c1" && m.handoff_ready));
    // Declaring again, or withdrawing what was never declared, changes nothing and says nothing.
    assert!(cmd(&mut s, t0(), "c1", ready(true)).is_empty());
    assert!(cmd(&mut s, t0(), "c2", ready(false)).is_empty());
    let f = cmd(&mut s, t0(), "c1", ready(false));
    assert_eq!(types(&f, "h"), ["member_updated"]);
    assert_eq!(types(&f, "c2"), ["member_updated"]);
    assert_eq!(f.len(), 2);
    assert_eq!(to(&f, "c2")[0]["member"]["handoffReady"], false);
    assert!(s.member_infos().iter().all(|m| !m.handoff_ready));
}

#[test]
fn the_host_cannot_declare_itself_ready() {
    let mut s = party(1, HandoffConfig::default());
    for r in [true, false] {
        let f = cmd(&mut s, t0(), "h", ready(r));
        let e = only_error(&f, "h");
        assert_eq!(e["code"], "invalid_message");
        assert_eq!(
            e["message"],
            "handoff_ready: the host cannot declare itself ready"
        );
    }
    assert!(s.member_infos().iter().all(|m| !m.handoff_ready));
    // A new host cannot either, while the old one may (and is, after giving control up).
    hand_over(&mut s, "h", "c1");
    let f = cmd(&mut s, t0(), "c1", ready(true));
    assert_eq!(only_error(&f, "c1")["code"], "invalid_message");
    let f = cmd(&mut s, t0(), "h", ready(false));
    assert_eq!(types(&f, "c1"), ["member_updated"]);
}

#[test]
fn declaring_again_keeps_the_first_declaration_and_withdrawing_loses_it() {
    let mut s = party(2, HandoffConfig::default());
    cmd(&mut s, t0(), "c1", ready(true));
    cmd(&mut s, t0(), "c2", ready(true));
    cmd(&mut s, t0(), "c1", ready(true));
    let f = cmd(&mut s, t0(), "h", request(None));
    assert_eq!(to(&f, "h")[0]["targetId"], "c1");
    assert_eq!(types(&f, "c1"), ["handoff_request"]);
    cmd(&mut s, t0(), "c1", answer("h1", false));

    // Withdrawn and declared again: now behind c2.
    let mut s = party(2, HandoffConfig::default());
    cmd(&mut s, t0(), "c1", ready(true));
    cmd(&mut s, t0(), "c2", ready(true));
    cmd(&mut s, t0(), "c1", ready(false));
    cmd(&mut s, t0(), "c1", ready(true));
    let f = cmd(&mut s, t0(), "h", request(None));
    assert_eq!(to(&f, "h")[0]["targetId"], "c2");
}

// ---------------------------------------------------------------------------------------------
// 3. Voluntary handoff: the candidate rule, its refusals, decline, accept.

#[test]
fn a_request_without_target_picks_the_oldest_ready_connected_member() {
    let mut s = crew(HandoffConfig::default(), secs(30), &["h", "c1", "r2", "c3"]);
    cmd(&mut s, t0(), "r2", ready(true));
    cmd(&mut s, t0(), "c3", ready(true));
    let f = cmd(&mut s, t0(), "h", request(None));
    assert_eq!(
        to(&f, "h")[0]["targetId"],
        "r2",
        "c1 joined first but is not ready"
    );
    assert_eq!(types(&f, "r2"), ["handoff_request"]);
    assert!(to(&f, "c3").is_empty() && to(&f, "c1").is_empty());
    cmd(&mut s, t0(), "r2", answer("h1", false));
    // r2 away in its window is no candidate, ready or not.
    s.handle_socket_detach(t0(), "r2", 0, LeaveReason::Error, false);
    drain(&mut s);
    let f = cmd(&mut s, t0(), "h", request(None));
    assert_eq!(to(&f, "h")[0]["targetId"], "c3");
    assert_eq!(s.pending_handoff(), Some(("h2", "c3")));
}

#[test]
fn with_nobody_ready_a_request_is_no_candidate_and_nothing_else_happens() {
    let mut s = party(2, HandoffConfig::default());
    let f = cmd(&mut s, t0(), "h", request(None));
    assert_eq!(
        f.iter()
            .map(|f| (&f.to[..], &f.message))
            .collect::<Vec<_>>(),
        [(
            "h",
            &json!({"type": "handoff_failed", "timestamp": 1, "reason": "no_candidate"})
        )]
    );
    assert_eq!(s.pending_handoff(), None);
    assert_eq!(s.poll_timeout(), None, "no deadline");
    assert_eq!((s.host_id(), s.term()), (Some("h"), 1));
    // The next started handoff is still the first.
    let f = cmd(&mut s, t0(), "h", request(Some("c2")));
    assert_eq!(to(&f, "h")[0]["handoffId"], "h1");
}

#[test]
fn a_target_that_is_unknown_gone_away_the_host_or_an_app_member_is_no_candidate() {
    let mut s = crew(
        HandoffConfig::default(),
        secs(30),
        &["h", "c1", "r2", "a3", "c4"],
    );
    cmd(&mut s, t0(), "r2", ready(true));
    s.handle_socket_detach(t0(), "r2", 0, LeaveReason::Error, false);
    cmd(&mut s, t0(), "c4", MemberCommand::Leave);
    drain(&mut s);
    for target in ["nobody", "h", "a3", "r2", "c4"] {
        let f = cmd(&mut s, t0(), "h", request(Some(target)));
        assert_eq!(
            f.iter()
                .map(|f| (&f.to[..], &f.message))
                .collect::<Vec<_>>(),
            [(
                "h",
                &json!({"type": "handoff_failed", "timestamp": 1, "reason": "no_candidate"})
            )],
            "target {target}"
        );
        assert_eq!(s.pending_handoff(), None);
    }
    // A named target need not be ready.
    let f = cmd(&mut s, t0(), "h", request(Some("c1")));
    assert_eq!(types(&f, "c1"), ["handoff_request"]);
}

#[test]
fn a_second_request_while_one_is_pending_is_busy_and_the_pending_one_continues() {
    let mut s = party(2, HandoffConfig::default());
    let start = t0();
    cmd(&mut s, start, "h", request(Some("c1")));
    for target in [Some("c2"), None, Some("c1")] {
        let f = cmd(&mut s, start.plus(secs(1)), "h", request(target));
        assert_eq!(
            f.iter()
                .map(|f| (&f.to[..], &f.message))
                .collect::<Vec<_>>(),
            [(
                "h",
                &json!({"type": "handoff_failed", "timestamp": 1, "reason": "busy"})
            )]
        );
    }
    assert_eq!(s.pending_handoff(), Some(("h1", "c1")));
    assert_eq!(
        s.poll_timeout(),
        Some(start.instant + secs(10)),
        "its deadline unchanged"
    );
    let f = cmd(&mut s, start.plus(secs(2)), "c1", answer("h1", true));
    assert_eq!(types(&f, "h"), ["handoff_ack", "host_changed"]);
    assert_eq!((s.host_id(), s.term()), (Some("c1"), 2));
}

#[test]
fn a_request_from_a_member_or_a_former_host_is_unauthorized() {
    let mut s = party(2, HandoffConfig::default());
    cmd(&mut s, t0(), "c2", ready(true));
    for target in [None, Some("c2")] {
        let f = cmd(&mut s, t0(), "c1", request(target));
        assert_eq!(
            only_error(&f, "c1"),
            &json!({"type": "error", "timestamp": 1, "code": "unauthorized",
                    "message": "handoff_request: only the host may hand control over",
                    "details": {"hostId": "h", "term": 1}})
        );
        assert_eq!(s.pending_handoff(), None);
    }
    hand_over(&mut s, "h", "c1");
    let f = cmd(&mut s, t0(), "h", request(Some("c2")));
    assert_eq!(
        only_error(&f, "h")["details"],
        json!({"hostId": "c1", "term": 2})
    );
    assert_eq!(s.pending_handoff(), None);
}

#[test]
fn a_decline_tells_the_host_and_changes_neither_host_nor_term() {
    let mut s = party(2, HandoffConfig::default());
    cmd(&mut s, t0(), "h", request(Some("c1")));
    let f = cmd(&mut s, t0(), "c1", answer("h1", false));
    assert_eq!(
        f.iter()
            .map(|f| (&f.to[..], &f.message))
            .collect::<Vec<_>>(),
        [(
            "h",
            &json!({"type": "handoff_failed", "timestamp": 1, "reason": "declined",
                    "handoffId": "h1", "targetId": "c1"})
        )],
        "no host_changed, nothing to the others"
    );
    assert_eq!((s.host_id(), s.term()), (Some("h"), 1));
    assert_eq!(s.pending_handoff(), None);
    assert_eq!(s.poll_timeout(), None);
    // A later accept of it is not pending; a new request gets a new id.
    let f = cmd(&mut s, t0(), "c1", answer("h1", true));
    assert_eq!(only_error(&f, "c1")["code"], "handoff_not_pending");
    let f = cmd(&mut s, t0(), "h", request(Some("c1")));
    assert_eq!(to(&f, "c1")[0]["handoffId"], "h2");
}

#[test]
fn an_answer_from_another_member_or_with_another_id_is_not_pending_and_changes_nothing() {
    let mut s = party(2, HandoffConfig::default());
    let f = cmd(&mut s, t0(), "c1", answer("h1", true));
    assert_eq!(only_error(&f, "c1")["code"], "handoff_not_pending");
    cmd(&mut s, t0(), "h", request(Some("c1")));
    for (who, id, accept) in [
        ("c2", "h1", true),
        ("c2", "h1", false),
        ("h", "h1", true),
        ("c1", "h2", true),
        ("c1", "x", false),
    ] {
        let f = cmd(&mut s, t0(), who, answer(id, accept));
        let e = only_error(&f, who);
        assert_eq!(e["code"], "handoff_not_pending");
        let kind = if accept {
            "handoff_accept"
        } else {
            "handoff_decline"
        };
        assert_eq!(
            e["message"],
            format!("{kind}: no handoff `{id}` is pending for you")
        );
        assert_eq!(s.pending_handoff(), Some(("h1", "c1")));
        assert_eq!((s.host_id(), s.term()), (Some("h"), 1));
    }
    let f = cmd(&mut s, t0(), "c1", answer("h1", true));
    assert_eq!(types(&f, "c1"), ["host_changed"]);
}

#[test]
fn an_accept_acks_the_old_host_before_anyone_hears_of_the_new_one_and_reorders_the_list() {
    let mut s = party(3, HandoffConfig::default());
    let f = hand_over(&mut s, "h", "c2");
    // The very first frame is the ack; every later one is the host_changed.
    assert_eq!(f[0].to, "h");
    assert_eq!(
        f[0].message,
        json!({"type": "handoff_ack", "timestamp": 1, "handoffId": "h1", "hostId": "c2", "term": 2})
    );
    assert_eq!(f.len(), 5);
    assert!(f[1..].iter().all(|f| f.message["type"] == "host_changed"));
    // The new host first; the old one keeps its join-order place (it joined before c1).
    let infos = s.member_infos();
    assert_eq!(
        infos
            .iter()
            .map(|m| (&m.id[..], m.is_host, m.handoff_ready))
            .collect::<Vec<_>>(),
        [
            ("c2", true, false),
            ("h", false, true),
            ("c1", false, false),
            ("c3", false, false)
        ]
    );
    let f = cmd(&mut s, t0(), "c1", MemberCommand::MemberList);
    let ids: Vec<_> = to(&f, "c1")[0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].clone(), m["isHost"].clone()))
        .collect();
    assert_eq!(
        ids,
        [
            (json!("c2"), json!(true)),
            (json!("h"), json!(false)),
            (json!("c1"), json!(false)),
            (json!("c3"), json!(false))
        ]
    );
    // The old host is the natural candidate to hand it back: it is ready, without a declaration.
    let f = cmd(&mut s, t0(), "c2", request(None));
    assert_eq!(to(&f, "c2")[0]["targetId"], "h");
}

#[test]
fn app_members_learn_of_a_new_host_from_a_fresh_member_list_and_get_no_host_changed() {
    let mut s = crew(HandoffConfig::default(), Duration::ZERO, &["h", "a1", "c1"]);
    let f = cmd(&mut s, t0(), "h", request(Some("c1")));
    assert!(to(&f, "a1").is_empty());
    let f = cmd(&mut s, t0(), "c1", answer("h1", true));
    assert_eq!(types(&f, "a1"), ["member_list"]);
    let list = to(&f, "a1")[0]["members"].as_array().unwrap().clone();
    assert_eq!(
        list.iter()
            .map(|m| (m["id"].clone(), m["isHost"].clone()))
            .collect::<Vec<_>>(),
        [
            (json!("c1"), json!(true)),
            (json!("h"), json!(false)),
            (json!("a1"), json!(false))
        ]
    );
    assert_eq!(types(&f, "h"), ["handoff_ack", "host_changed"]);
    assert_eq!(types(&f, "c1"), ["host_changed"]);
}

// ---------------------------------------------------------------------------------------------
// 4. Departures while a handoff is pending.

#[test]
fn the_candidate_leaving_fails_the_handoff_after_its_member_left() {
    let mut s = party(2, HandoffConfig::default());
    cmd(&mut s, t0(), "h", request(Some("c1")));
    let f = cmd(&mut s, t0(), "c1", MemberCommand::Leave);
    assert_eq!(types(&f, "h"), ["member_left", "handoff_failed"]);
    assert_eq!(
        to(&f, "h")[1],
        &json!({"type": "handoff_failed", "timestamp": 1, "reason": "candidate_left",
                "handoffId": "h1", "targetId": "c1"})
    );
    assert_eq!(types(&f, "c2"), ["member_left"]);
    assert_eq!(
        (s.host_id(), s.term(), s.pending_handoff()),
        (Some("h"), 1, None)
    );
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn the_candidate_kicked_by_the_host_fails_the_handoff_after_its_member_left() {
    let mut s = party(2, HandoffConfig::default());
    cmd(&mut s, t0(), "h", request(Some("c1")));
    let f = cmd(&mut s, t0(), "h", kick("c1"));
    assert_eq!(types(&f, "h"), ["member_left", "handoff_failed"]);
    assert_eq!(to(&f, "h")[0]["reason"], "kicked");
    assert_eq!(to(&f, "h")[1]["reason"], "candidate_left");
    assert_eq!(to(&f, "h")[1]["targetId"], "c1");
    assert_eq!(types(&f, "c1"), ["kicked", "close"]);
    assert_eq!(
        (s.host_id(), s.term(), s.pending_handoff()),
        (Some("h"), 1, None)
    );
}

#[test]
fn the_host_leaving_tells_the_candidate_host_left_before_the_session_closes() {
    for config in [HandoffConfig::default(), on_loss_handoff()] {
        let mut s = party(2, config);
        cmd(&mut s, t0(), "h", request(Some("c1")));
        let f = cmd(&mut s, t0(), "h", MemberCommand::Leave);
        assert_eq!(
            types(&f, "c1"),
            ["handoff_failed", "session_closed", "close"]
        );
        assert_eq!(
            to(&f, "c1")[0],
            &json!({"type": "handoff_failed", "timestamp": 1, "reason": "host_left", "handoffId": "h1"})
        );
        assert_eq!(to(&f, "c1")[1]["reason"], "Host ended the session");
        assert_eq!(types(&f, "c2"), ["session_closed", "close"]);
        assert!(s.is_ended());
        assert!(f.iter().all(|f| f.message["type"] != "host_changed"));
    }
}

#[test]
fn a_resumable_candidates_drop_fails_the_handoff_at_once_not_at_its_windows_end() {
    let mut s = crew(HandoffConfig::default(), secs(30), &["h", "r1", "c2"]);
    let t = t0();
    cmd(&mut s, t, "h", request(Some("r1")));
    s.handle_socket_detach(t, "r1", 0, LeaveReason::Error, false);
    let f = drain(&mut s);
    assert_eq!(types(&f, "h"), ["member_updated", "handoff_failed"]);
    assert_eq!(to(&f, "h")[0]["member"]["connectionStatus"], "reconnecting");
    assert_eq!(
        to(&f, "h")[1],
        &json!({"type": "handoff_failed", "timestamp": 1, "reason": "candidate_left",
                "handoffId": "h1", "targetId": "r1"})
    );
    assert_eq!(s.pending_handoff(), None);
    // The window's end is then an ordinary departure.
    s.handle_timeout(t.plus(secs(30)));
    let f = drain(&mut s);
    assert_eq!(types(&f, "h"), ["member_left"]);
    assert_eq!(to(&f, "h")[0]["reason"], "timeout");
    assert_eq!((s.host_id(), s.term()), (Some("h"), 1));
}

#[test]
fn a_resumable_hosts_drop_tells_the_candidate_host_left_at_once() {
    for config in [HandoffConfig::default(), on_loss_handoff()] {
        let mut s = crew(config, secs(30), &["rh", "c1", "c2"]);
        let t = t0();
        let f = cmd(&mut s, t, "rh", request(Some("c1")));
        let last_seq = f.iter().find(|f| f.to == "rh").unwrap().seq.unwrap();
        s.handle_socket_detach(t, "rh", 0, LeaveReason::Error, false);
        let f = drain(&mut s);
        assert_eq!(types(&f, "c1"), ["handoff_failed", "member_updated"]);
        assert_eq!(
            to(&f, "c1")[0],
            &json!({"type": "handoff_failed", "timestamp": 1, "reason": "host_left", "handoffId": "h1"})
        );
        assert_eq!(types(&f, "c2"), ["member_updated"]);
        assert_eq!(
            (s.host_id(), s.term(), s.pending_handoff()),
            (Some("rh"), 1, None)
        );
        let f = cmd(&mut s, t, "c1", answer("h1", true));
        assert_eq!(only_error(&f, "c1")["code"], "handoff_not_pending");
        // The host comes back in its window: still the host, same term.
        let r = s
            .handle_resume(t.plus(secs(5)), "rh", "tok-rh", last_seq, 1, "rh".into())
            .map_err(|(e, _)| e)
            .unwrap();
        // While away it can only have been told that its handoff is over.
        let replayed: Vec<Value> = r
            .replay
            .iter()
            .map(|(_, b)| serde_json::from_slice(b).unwrap())
            .collect();
        assert!(
            replayed.len() <= 1
                && replayed
                    .iter()
                    .all(|m| m["type"] == "handoff_failed" && m["handoffId"] == "h1"),
            "{replayed:?}"
        );
        drain(&mut s);
        assert_eq!((s.host_id(), s.term()), (Some("rh"), 1));
        s.handle_timeout(t.plus(secs(60)));
        assert!(drain(&mut s).is_empty(), "no window left to run out");
    }
}

#[test]
fn the_hosts_state_while_a_handoff_is_pending_reaches_the_candidate() {
    let mut s = party(2, HandoffConfig::default());
    cmd(&mut s, t0(), "h", replace(json!({"k": 1})));
    let f = cmd(&mut s, t0(), "h", request(Some("c1")));
    assert_eq!(to(&f, "c1")[0]["state"], json!({"k": 1}));
    assert_eq!(to(&f, "c1")[0]["version"], 1);
    let f = cmd(&mut s, t0(), "h", patch(json!({"k": 2}), Some(1), Some(1)));
    assert_eq!(
        to(&f, "c1"),
        [
            &json!({"type": "state", "timestamp": 1, "state": {"k": 2}, "version": 2,
                 "term": 1, "updatedBy": "h"})
        ]
    );
    cmd(&mut s, t0(), "c1", answer("h1", true));
    // The new host builds on what it last received, in the new term.
    let f = cmd(&mut s, t0(), "c1", patch(json!({"k": 3}), Some(2), Some(2)));
    assert_eq!(to(&f, "h")[0]["term"], 2);
    assert_eq!(doc(&s), (json!({"k": 3}), 3));
}

// ---------------------------------------------------------------------------------------------
// 5. Host loss under both policies.

#[test]
fn under_close_a_plain_hosts_lost_socket_ends_the_session_with_the_landed_reason() {
    for (reason, text) in [
        (LeaveReason::Error, "Host disconnected"),
        (LeaveReason::Timeout, "Host timed out"),
    ] {
        let mut s = party(2, HandoffConfig::default());
        cmd(&mut s, t0(), "c1", ready(true));
        s.handle_detach(t0(), "h", reason);
        let f = drain(&mut s);
        for who in ["c1", "c2"] {
            assert_eq!(types(&f, who), ["session_closed", "close"]);
            assert_eq!(to(&f, who)[0]["reason"], text);
            assert_eq!(to(&f, who)[1]["code"], 1000);
        }
        assert!(f.iter().all(|f| f.message["type"] != "host_changed"));
        assert!(s.is_ended());
        assert_eq!(s.host_id(), None);
    }
}

#[test]
fn under_handoff_a_plain_hosts_lost_socket_passes_the_session_on_at_once() {
    for (reason, wire) in [
        (LeaveReason::Error, "error"),
        (LeaveReason::Timeout, "timeout"),
    ] {
        let mut s = party(2, on_loss_handoff());
        cmd(&mut s, t0(), "h", replace(json!({"k": 1})));
        s.handle_detach(t0(), "h", reason);
        let f = drain(&mut s);
        for who in ["c1", "c2"] {
            assert_eq!(
                to(&f, who),
                [
                    &json!({"type": "member_left", "timestamp": 1, "memberId": "h", "reason": wire}),
                    &json!({"type": "host_changed", "timestamp": 1, "hostId": "c1",
                            "previousHostId": "h", "term": 2, "reason": "host_lost"})
                ]
            );
        }
        assert!(!s.is_ended());
        assert_eq!((s.host_id(), s.term()), (Some("c1"), 2));
        let infos = s.member_infos();
        assert_eq!(
            infos
                .iter()
                .map(|m| (&m.id[..], m.is_host))
                .collect::<Vec<_>>(),
            [("c1", true), ("c2", false)]
        );
        // The state stays; the new host sets it in the new term.
        let f = cmd(&mut s, t0(), "c1", patch(json!({"j": 1}), Some(1), Some(2)));
        assert_eq!(to(&f, "c2")[0]["state"], json!({"k": 1, "j": 1}));
    }
}

#[test]
fn on_host_loss_the_oldest_ready_member_succeeds_before_the_longest_present() {
    let mut s = crew(on_loss_handoff(), secs(30), &["h", "c1", "c2", "c3"]);
    cmd(&mut s, t0(), "c3", ready(true));
    cmd(&mut s, t0(), "c2", ready(true));
    s.handle_detach(t0(), "h", LeaveReason::Error);
    let f = drain(&mut s);
    assert_eq!(to(&f, "c1")[1]["hostId"], "c3");
    assert_eq!((s.host_id(), s.term()), (Some("c3"), 2));
    assert!(
        s.member_infos()
            .iter()
            .all(|m| m.id != "c3" || !m.handoff_ready),
        "the new host's readiness is cleared"
    );
}

#[test]
fn on_host_loss_without_a_ready_member_the_longest_present_connected_one_of_ours_succeeds() {
    // a1 (app) and r2 (ready, but away) joined before c3: neither can take over.
    let mut s = crew(on_loss_handoff(), secs(30), &["h", "a1", "r2", "c3", "c4"]);
    cmd(&mut s, t0(), "r2", ready(true));
    s.handle_socket_detach(t0(), "r2", 0, LeaveReason::Error, false);
    drain(&mut s);
    s.handle_detach(t0(), "h", LeaveReason::Error);
    let f = drain(&mut s);
    assert_eq!(types(&f, "c4"), ["member_left", "host_changed"]);
    assert_eq!(to(&f, "c4")[1]["hostId"], "c3");
    assert_eq!(types(&f, "a1"), ["member_left", "member_list"]);
    assert_eq!(to(&f, "a1")[1]["members"][0]["id"], "c3");
    assert_eq!(to(&f, "a1")[1]["members"][0]["isHost"], true);
    assert_eq!(s.host_id(), Some("c3"));
    // r2 finds the new host on its return (its buffered frames are replayed).
    let r = s
        .handle_resume(t0(), "r2", "tok-r2", 0, 1, "r2".into())
        .map_err(|(e, _)| e)
        .unwrap();
    let replayed: Vec<Value> = r
        .replay
        .iter()
        .map(|(_, b)| serde_json::from_slice(b).unwrap())
        .collect();
    let changed = replayed
        .iter()
        .find(|m| m["type"] == "host_changed")
        .unwrap();
    assert_eq!(
        (&changed["hostId"], &changed["term"]),
        (&json!("c3"), &json!(2))
    );
}

#[test]
fn on_host_loss_with_no_candidate_the_session_ends_as_under_close() {
    let mut s = crew(on_loss_handoff(), secs(30), &["h", "a1", "r2"]);
    s.handle_socket_detach(t0(), "r2", 0, LeaveReason::Error, false);
    drain(&mut s);
    s.handle_detach(t0(), "h", LeaveReason::Error);
    let f = drain(&mut s);
    assert_eq!(types(&f, "a1"), ["session_closed", "close"]);
    assert_eq!(to(&f, "a1")[0]["reason"], "Host disconnected");
    assert!(s.is_ended());
    assert!(f.iter().all(|f| f.message["type"] != "host_changed"));
    // A host alone: simply gone.
    let mut s = crew(on_loss_handoff(), secs(30), &["h"]);
    s.handle_detach(t0(), "h", LeaveReason::Timeout);
    drain(&mut s);
    assert!(s.is_ended());
}

#[test]
fn under_handoff_a_resumable_host_is_replaced_only_when_its_window_ends() {
    let mut s = crew(on_loss_handoff(), secs(30), &["rh", "c1", "c2"]);
    let t = t0();
    cmd(&mut s, t, "c2", ready(true));
    s.handle_socket_detach(t, "rh", 0, LeaveReason::Error, false);
    let f = drain(&mut s);
    for who in ["c1", "c2"] {
        assert_eq!(types(&f, who), ["member_updated"]);
        assert_eq!(to(&f, who)[0]["member"]["connectionStatus"], "reconnecting");
    }
    assert_eq!((s.host_id(), s.term()), (Some("rh"), 1));
    assert_eq!(s.poll_timeout(), Some(t.instant + secs(30)));
    s.handle_timeout(t.plus(Duration::from_millis(29_999)));
    assert!(drain(&mut s).is_empty());
    s.handle_timeout(t.plus(secs(30)));
    let f = drain(&mut s);
    for who in ["c1", "c2"] {
        assert_eq!(
            to(&f, who),
            [
                &json!({"type": "member_left", "timestamp": 1, "memberId": "rh", "reason": "timeout"}),
                &json!({"type": "host_changed", "timestamp": 1, "hostId": "c2",
                        "previousHostId": "rh", "term": 2, "reason": "host_lost"})
            ]
        );
    }
    assert_eq!((s.host_id(), s.term()), (Some("c2"), 2));
    assert!(!s.is_ended());
}

#[test]
fn under_close_a_resumable_hosts_window_end_says_host_timed_out() {
    let mut s = crew(HandoffConfig::default(), secs(30), &["rh", "c1"]);
    s.handle_socket_detach(t0(), "rh", 0, LeaveReason::Error, false);
    drain(&mut s);
    s.handle_timeout(t0().plus(secs(30)));
    let f = drain(&mut s);
    assert_eq!(types(&f, "c1"), ["session_closed", "close"]);
    assert_eq!(to(&f, "c1")[0]["reason"], "Host timed out");
    assert!(s.is_ended());
}

#[test]
fn under_handoff_the_hosts_explicit_leave_still_ends_the_session() {
    let mut s = party(2, on_loss_handoff());
    cmd(&mut s, t0(), "c1", ready(true));
    let f = cmd(&mut s, t0(), "h", MemberCommand::Leave);
    for who in ["c1", "c2"] {
        assert_eq!(types(&f, who), ["session_closed", "close"]);
        assert_eq!(to(&f, who)[0]["reason"], "Host ended the session");
    }
    assert!(s.is_ended());
}

#[test]
fn after_a_change_of_host_the_old_host_cannot_join_again_as_host() {
    let host_join = |s: &mut S, id: &str, device: &str| {
        let joiner = Joiner {
            transport: id.to_string(),
            dialect: Dialect::LoudSync,
            address: "127.0.0.1".into(),
            credentials: Credentials::default(),
            socket: 0,
            resume_token: None,
        };
        s.handle_join(t0(), id.into(), &join(device, DeviceType::Host), joiner)
            .map_err(|(e, _)| e)
    };
    // Lost: its device joins again as host, and finds the session taken.
    let mut s = party(1, on_loss_handoff());
    s.handle_detach(t0(), "h", LeaveReason::Error);
    drain(&mut s);
    let e = host_join(&mut s, "h2", "dev-h").unwrap_err();
    assert!(matches!(e, JoinError::HostTaken { .. }), "{e:?}");
    assert!(matches!(
        e.to_message(),
        ServerMessage::Error {
            code: ErrorCode::Unauthorized,
            ..
        }
    ));
    assert!(drain(&mut s).is_empty());
    // Handed over: the old host is a member; another of its devices cannot take the role.
    let mut s = party(1, HandoffConfig::default());
    hand_over(&mut s, "h", "c1");
    let e = host_join(&mut s, "h2", "dev-h-2").unwrap_err();
    assert!(matches!(e, JoinError::HostTaken { .. }), "{e:?}");
    assert_eq!(s.host_id(), Some("c1"));
    // Its leave is an ordinary member_left now.
    let f = cmd(&mut s, t0(), "h", MemberCommand::Leave);
    assert_eq!(types(&f, "c1"), ["member_left"]);
    assert!(!s.is_ended());
}

// ---------------------------------------------------------------------------------------------
// 6. Kick is fenced too.

#[test]
fn a_kick_from_a_member_or_a_former_host_is_unauthorized_with_the_landed_text() {
    let mut s = party(2, HandoffConfig::default());
    let f = cmd(&mut s, t0(), "c1", kick("c2"));
    assert_eq!(
        only_error(&f, "c1"),
        &json!({"type": "error", "timestamp": 1, "code": "unauthorized",
                "message": "kick: only the host may kick members",
                "details": {"hostId": "h", "term": 1}})
    );
    assert_eq!(s.member_count(), 3);
    hand_over(&mut s, "h", "c1");
    let f = cmd(&mut s, t0(), "h", kick("c2"));
    assert_eq!(
        only_error(&f, "h")["details"],
        json!({"hostId": "c1", "term": 2})
    );
    assert_eq!(s.member_count(), 3);
    let f = cmd(&mut s, t0(), "c1", kick("c2"));
    assert_eq!(types(&f, "c2"), ["kicked", "close"]);
}

// ---------------------------------------------------------------------------------------------
// Races and corners: the paths above meeting each other.

#[test]
fn a_candidates_heartbeat_timeout_fails_the_handoff_like_a_leave() {
    let mut s = party(2, HandoffConfig::default());
    cmd(&mut s, t0(), "h", request(Some("c1")));
    s.handle_detach(t0(), "c1", LeaveReason::Timeout);
    let f = drain(&mut s);
    assert_eq!(types(&f, "h"), ["member_left", "handoff_failed"]);
    assert_eq!(to(&f, "h")[0]["reason"], "timeout");
    assert_eq!(to(&f, "h")[1]["reason"], "candidate_left");
    assert_eq!(
        (s.host_id(), s.term(), s.pending_handoff()),
        (Some("h"), 1, None)
    );
}

#[test]
fn a_plain_host_lost_mid_handoff_tells_its_candidate_host_left_before_the_successor() {
    // c2 is the pending candidate, c1 the longest present: host_left first, then the loss.
    let mut s = party(2, on_loss_handoff());
    cmd(&mut s, t0(), "h", request(Some("c2")));
    s.handle_detach(t0(), "h", LeaveReason::Error);
    let f = drain(&mut s);
    assert_eq!(
        types(&f, "c2"),
        ["handoff_failed", "member_left", "host_changed"]
    );
    assert_eq!(to(&f, "c2")[0]["reason"], "host_left");
    assert_eq!(to(&f, "c2")[2]["hostId"], "c1");
    assert_eq!(types(&f, "c1"), ["member_left", "host_changed"]);
    assert_eq!(
        (s.host_id(), s.term(), s.pending_handoff()),
        (Some("c1"), 2, None)
    );
    assert_eq!(s.poll_timeout(), None, "the handoff's deadline is gone too");
}

#[test]
fn the_old_hosts_readiness_after_a_handoff_is_a_fresh_declaration_behind_earlier_ones() {
    let mut s = party(2, on_loss_handoff());
    cmd(&mut s, t0(), "c2", ready(true));
    hand_over(&mut s, "h", "c1");
    // c1 is lost: c2 declared before h became ready by handing over.
    s.handle_detach(t0(), "c1", LeaveReason::Error);
    let f = drain(&mut s);
    assert_eq!(to(&f, "h")[1]["hostId"], "c2");
    assert_eq!((s.host_id(), s.term()), (Some("c2"), 3));
    // Once more: h (ready) is the only ready member left, and takes it back.
    let f = cmd(&mut s, t0(), "c2", request(None));
    assert_eq!(to(&f, "c2")[0]["targetId"], "h");
}

#[test]
fn the_handoff_deadline_and_a_held_place_share_the_sessions_timer() {
    let config = HandoffConfig {
        timeout: secs(10),
        ..HandoffConfig::default()
    };
    let mut s = crew(config, secs(30), &["h", "r1", "c2"]);
    let t = t0();
    s.handle_socket_detach(t, "r1", 0, LeaveReason::Error, false);
    drain(&mut s);
    assert_eq!(s.poll_timeout(), Some(t.instant + secs(30)));
    cmd(&mut s, t.plus(secs(5)), "h", request(Some("c2")));
    assert_eq!(
        s.poll_timeout(),
        Some(t.instant + secs(15)),
        "the earlier one"
    );
    s.handle_timeout(t.plus(secs(15)));
    let f = drain(&mut s);
    assert_eq!(types(&f, "h"), ["handoff_failed"]);
    assert_eq!(to(&f, "h")[0]["reason"], "timeout");
    assert_eq!(types(&f, "c2"), ["handoff_failed"]);
    assert_eq!(s.poll_timeout(), Some(t.instant + secs(30)));
    // One late call past both: the place ends, nothing about the handoff again.
    s.handle_timeout(t.plus(secs(40)));
    let f = drain(&mut s);
    assert_eq!(types(&f, "h"), ["member_left"]);
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn a_candidate_answering_at_the_deadline_is_too_late_once_the_timer_ran() {
    let mut s = party(1, HandoffConfig::default());
    let t = t0();
    cmd(&mut s, t, "h", request(Some("c1")));
    // Processed before the timer: it wins.
    let f = cmd(&mut s, t.plus(secs(10)), "c1", answer("h1", true));
    assert_eq!(types(&f, "c1"), ["host_changed"]);
    s.handle_timeout(t.plus(secs(10)));
    assert!(
        drain(&mut s).is_empty(),
        "no timeout for a handoff that happened"
    );
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn under_handoff_a_hosts_overflowing_buffer_closes_it_and_passes_the_session_on() {
    let mut s = Session::new(
        SessionSpec {
            id: "s1".into(),
            name: "Party".into(),
            max_members: 50,
            access: Access::default(),
        },
        SessionConfig {
            detach_hold: secs(30),
            replay: ReplayLimits {
                messages: 4,
                bytes: 1 << 20,
            },
            handoff: on_loss_handoff(),
            ..SessionConfig::default()
        },
    );
    join_as(
        &mut s,
        t0(),
        "rh",
        DeviceType::Host,
        Dialect::LoudSync,
        true,
    );
    for id in ["c1", "c2"] {
        join_as(
            &mut s,
            t0(),
            id,
            DeviceType::Client,
            Dialect::LoudSync,
            false,
        );
    }
    drain(&mut s);
    // rh holds member_list #1, member_joined #2 and #3, unacknowledged; #4 fits, #5 does not.
    let to_host = || MemberCommand::Message {
        data: loudsync_protocol::RawJson::from_text("{}").unwrap(),
        to: Some("rh".into()),
    };
    let f = cmd(&mut s, t0(), "c1", to_host());
    assert_eq!(types(&f, "rh"), ["message"]);
    let f = cmd(&mut s, t0(), "c1", to_host());
    assert_eq!(types(&f, "rh"), ["close"]);
    assert_eq!(to(&f, "rh")[0]["code"], 1008);
    for who in ["c1", "c2"] {
        assert_eq!(types(&f, who), ["member_left", "host_changed"]);
        assert_eq!(to(&f, who)[0]["reason"], "error");
        assert_eq!(to(&f, who)[1]["hostId"], "c1");
        assert_eq!(to(&f, who)[1]["reason"], "host_lost");
    }
    assert_eq!((s.host_id(), s.term()), (Some("c1"), 2));
    assert!(!s.is_ended());
}

// ---------------------------------------------------------------------------------------------
// 7. The property: random sequences never leave a session with zero or two hosts, and every
// member's view of the host, built only from what it received, matches the session's.

mod property {
    use super::*;
    use proptest::prelude::*;

    const SLOTS: usize = 6;
    const WINDOW: Duration = Duration::from_secs(20);
    const TIMEOUT: Duration = Duration::from_secs(10);

    /// Who sends a command: whoever is host now, or the member in a slot.
    #[derive(Debug, Clone, Copy)]
    enum Who {
        Host,
        Slot(usize),
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// The slot's next member joins (if the slot is empty).
        Join(usize),
        /// A new device of the slot's joins as host (must be refused: there is one).
        JoinAsHost(usize),
        Leave(usize),
        /// The socket goes (`fatal`: a resumable place is not held; `timeout`: heartbeat).
        Drop {
            who: Who,
            fatal: bool,
            timeout: bool,
        },
        /// A late close of the slot's member's previous socket (after a resume): ignored.
        StaleDrop(usize),
        /// The n-th away member (modulo how many are away) resumes with the last `seq` it
        /// received.
        Resume(usize),
        /// The clock moves on by this many seconds, and timers run.
        Advance(u64),
        Ready(usize, bool),
        /// A handoff request; a target slot of `SLOTS` is an id nobody has.
        Request(Who, Option<usize>),
        Answer {
            candidate: bool,
            slot: usize,
            accept: bool,
            right_id: bool,
        },
        /// `term` / `base`: 0 absent, 1 the current one, 2 another one.
        StateSet {
            who: Who,
            term: u8,
            base: u8,
        },
        Kick(Who, usize),
    }

    fn who() -> impl Strategy<Value = Who> {
        prop_oneof![3 => Just(Who::Host), 1 => (0..SLOTS).prop_map(Who::Slot)]
    }

    fn op() -> impl Strategy<Value = Op> {
        let slot = 0..SLOTS;
        prop_oneof![
            3 => slot.clone().prop_map(Op::Join),
            1 => slot.clone().prop_map(Op::JoinAsHost),
            1 => slot.clone().prop_map(Op::Leave),
            3 => (
                prop_oneof![1 => Just(Who::Host), 5 => slot.clone().prop_map(Who::Slot)],
                any::<bool>(),
                any::<bool>(),
            )
                .prop_map(|(who, fatal, timeout)| Op::Drop { who, fatal: fatal && timeout, timeout }),
            3 => slot.clone().prop_map(Op::Resume),
            1 => slot.clone().prop_map(Op::StaleDrop),
            2 => prop_oneof![Just(1u64), Just(4), Just(9), Just(11), Just(21)].prop_map(Op::Advance),
            3 => (slot.clone(), any::<bool>()).prop_map(|(s, r)| Op::Ready(s, r)),
            3 => (who(), proptest::option::of(0..=SLOTS)).prop_map(|(w, t)| Op::Request(w, t)),
            4 => (0..4u8, slot.clone(), any::<bool>(), 0..4u8).prop_map(
                |(candidate, slot, accept, right_id)| Op::Answer {
                    candidate: candidate != 0,
                    slot,
                    accept,
                    right_id: right_id != 0,
                }
            ),
            3 => (who(), 0..3u8, 0..3u8).prop_map(|(who, term, base)| Op::StateSet { who, term, base }),
            1 => (who(), slot).prop_map(|(w, t)| Op::Kick(w, t)),
        ]
    }

    /// What a member knows, from its own frames only.
    #[derive(Debug, Default)]
    struct View {
        host: Option<String>,
        term: u64,
        version: u64,
        /// Its member table (our dialect): id -> (isHost, handoffReady, connectionStatus).
        table: std::collections::BTreeMap<String, Entry>,
    }

    type Entry = (bool, bool, String);

    fn entry(e: &Value) -> (String, Entry) {
        (
            str_of(&e["id"]).unwrap(),
            (
                e["isHost"] == true,
                e["handoffReady"] == true,
                str_of(&e["connectionStatus"]).unwrap(),
            ),
        )
    }

    /// A member of our dialect keeps its table from `member_list`, `member_joined`,
    /// `member_updated`, `member_left`, and infers a host change's flags from `host_changed`
    /// (the new host is not ready; after a handoff the previous one is).
    fn track_table(view: &mut View, m: &Value) {
        match m["type"].as_str().unwrap() {
            "member_list" => {
                view.table = m["members"].as_array().unwrap().iter().map(entry).collect()
            }
            "member_joined" | "member_updated" => {
                let (id, e) = entry(&m["member"]);
                view.table.insert(id, e);
            }
            "member_left" => {
                view.table.remove(m["memberId"].as_str().unwrap());
            }
            "host_changed" => {
                if let Some(p) = view.table.get_mut(m["previousHostId"].as_str().unwrap()) {
                    p.0 = false;
                    p.1 = m["reason"] == "handoff";
                }
                if let Some(n) = view.table.get_mut(m["hostId"].as_str().unwrap()) {
                    n.0 = true;
                    n.1 = false;
                }
            }
            _ => {}
        }
    }

    #[derive(Debug)]
    struct Live {
        id: String,
        socket: u64,
        last_seq: u64,
        closed: bool,
        view: View,
    }

    #[derive(Debug)]
    struct Slot {
        resumable: bool,
        app: bool,
        generation: u32,
        live: Option<Live>,
    }

    struct Model {
        s: S,
        now: Now,
        slots: Vec<Slot>,
        sockets: u64,
        /// The pending handoff as the frames announced it: (id, candidate).
        pending: Option<(String, String)>,
        /// Handoff ids ended (acknowledged or failed) in this step.
        ended_handoffs: Vec<String>,
        /// Every handoff id ended so far (a member away when its handoff ended may be told in
        /// its replay).
        all_ended: Vec<String>,
        state_versions: Vec<u64>,
        host_changes: Vec<Value>,
    }

    fn str_of(v: &Value) -> Option<String> {
        v.as_str().map(str::to_string)
    }

    impl Model {
        fn status(&self, id: &str) -> Option<ConnectionStatus> {
            self.s
                .member_infos()
                .into_iter()
                .find(|m| m.id == id)
                .map(|m| m.connection_status)
        }

        fn connected(&self, id: &str) -> bool {
            self.status(id) == Some(ConnectionStatus::Connected)
        }

        fn slot_of(&self, id: &str) -> Option<usize> {
            self.slots
                .iter()
                .position(|s| s.live.as_ref().is_some_and(|l| l.id == id))
        }

        fn id_of(&self, who: Who) -> Option<String> {
            match who {
                Who::Host => self.s.host_id().map(str::to_string),
                Who::Slot(i) => self.slots[i].live.as_ref().map(|l| l.id.clone()),
            }
        }

        /// A connected member of our dialect that can send this layer's frames.
        fn speaker(&self, who: Who) -> Option<String> {
            let id = self.id_of(who)?;
            let slot = self.slot_of(&id)?;
            (self.connected(&id) && !self.slots[slot].app).then_some(id)
        }

        fn join(&mut self, slot: usize, kind: DeviceType) -> Result<(), String> {
            let had_host = self.s.host_id().is_some();
            let sl = &mut self.slots[slot];
            sl.generation += 1;
            let id = format!("m{slot}g{}", sl.generation);
            let joiner = Joiner {
                transport: id.clone(),
                dialect: if sl.app {
                    Dialect::App
                } else {
                    Dialect::LoudSync
                },
                address: "127.0.0.1".into(),
                credentials: Credentials::default(),
                socket: 0,
                resume_token: sl.resumable.then(|| format!("tok-{id}")),
            };
            let result = self.s.handle_join(
                self.now,
                id.clone(),
                &join(&format!("dev-{id}"), kind),
                joiner,
            );
            let as_host = kind == DeviceType::Host && had_host;
            match (as_host, result) {
                (true, Err((JoinError::HostTaken { .. }, _))) => Ok(()),
                (true, other) => Err(format!(
                    "a host join while {:?} is host: {:?}",
                    self.s.host_id(),
                    other.map_err(|(e, _)| e)
                )),
                (false, Ok(())) => {
                    let sl = &mut self.slots[slot];
                    sl.live = Some(Live {
                        id,
                        socket: 0,
                        last_seq: 0,
                        closed: false,
                        view: View::default(),
                    });
                    Ok(())
                }
                (false, Err((e, _))) => Err(format!("join refused: {e:?}")),
            }
        }

        fn run(&mut self, op: &Op) -> Result<Vec<(String, Option<u64>, Value)>, String> {
            let mut replayed = Vec::new();
            let now = self.now;
            match *op {
                Op::Join(slot) if self.slots[slot].live.is_none() => {
                    self.join(slot, DeviceType::Client)?
                }
                Op::JoinAsHost(slot) if self.slots[slot].live.is_none() => {
                    self.join(slot, DeviceType::Host)?
                }
                Op::Leave(slot) => {
                    if let Some(id) = self.id_of(Who::Slot(slot)).filter(|id| self.connected(id)) {
                        self.s.handle_command(now, &id, MemberCommand::Leave);
                    }
                }
                Op::Drop {
                    who,
                    fatal,
                    timeout,
                } => {
                    if let Some(id) = self.id_of(who).filter(|id| self.connected(id)) {
                        let slot = self.slot_of(&id).unwrap();
                        let socket = self.slots[slot].live.as_ref().unwrap().socket;
                        let reason = if timeout {
                            LeaveReason::Timeout
                        } else {
                            LeaveReason::Error
                        };
                        self.s.handle_socket_detach(now, &id, socket, reason, fatal);
                    }
                }
                Op::StaleDrop(slot) => {
                    if let Some(live) = self.slots[slot].live.as_ref().filter(|l| l.socket > 0) {
                        let (id, old) = (live.id.clone(), live.socket - 1);
                        self.s
                            .handle_socket_detach(now, &id, old, LeaveReason::Error, false);
                        let f = drain(&mut self.s);
                        if !f.is_empty() {
                            return Err(format!("a stale socket's close did something: {f:?}"));
                        }
                    }
                }
                Op::Resume(n) => {
                    let away: Vec<usize> = (0..SLOTS)
                        .filter(|&i| {
                            self.slots[i].live.as_ref().is_some_and(|l| {
                                self.status(&l.id) == Some(ConnectionStatus::Reconnecting)
                            })
                        })
                        .collect();
                    if !away.is_empty() {
                        let slot = away[n % away.len()];
                        let id = self.id_of(Who::Slot(slot)).unwrap();
                        self.sockets += 1;
                        let socket = self.sockets;
                        let live = self.slots[slot].live.as_mut().unwrap();
                        let token = format!("tok-{id}");
                        let r = self
                            .s
                            .handle_resume(now, &id, &token, live.last_seq, socket, id.clone())
                            .map_err(|(e, _)| format!("resume of {id} refused: {e:?}"))?;
                        if r.replaced.is_some() {
                            return Err(format!("{id} was away but had a transport"));
                        }
                        live.socket = socket;
                        for (seq, bytes) in r.replay {
                            let message = serde_json::from_slice(&bytes).unwrap();
                            replayed.push((id.clone(), Some(seq), message));
                        }
                    }
                }
                Op::Advance(d) => {
                    self.now = now.plus(secs(d));
                    self.s.handle_timeout(self.now);
                }
                Op::Ready(slot, ready) => {
                    if let Some(id) = self.speaker(Who::Slot(slot)) {
                        self.s
                            .handle_command(now, &id, MemberCommand::HandoffReady(ready));
                    }
                }
                Op::Request(who, target) => {
                    if let Some(id) = self.speaker(who) {
                        let target = target.map(|t| {
                            (t < SLOTS)
                                .then(|| self.id_of(Who::Slot(t)))
                                .flatten()
                                .unwrap_or_else(|| "nobody".to_string())
                        });
                        self.s
                            .handle_command(now, &id, MemberCommand::HandoffRequest { target });
                    }
                }
                Op::Answer {
                    candidate,
                    slot,
                    accept,
                    right_id,
                } => {
                    let pending = self
                        .s
                        .pending_handoff()
                        .map(|(h, c)| (h.to_string(), c.to_string()));
                    let who = match (&pending, candidate) {
                        (Some((_, c)), true) => self.slot_of(c).map(Who::Slot),
                        _ => Some(Who::Slot(slot)),
                    };
                    if let Some(id) = who.and_then(|w| self.speaker(w)) {
                        let handoff_id = match (&pending, right_id) {
                            (Some((h, _)), true) => h.clone(),
                            _ => "h999".to_string(),
                        };
                        self.s.handle_command(
                            now,
                            &id,
                            MemberCommand::HandoffAnswer { handoff_id, accept },
                        );
                    }
                }
                Op::StateSet { who, term, base } => {
                    if let Some(id) = self.speaker(who) {
                        let pick = |choice: u8, current: u64| match choice {
                            0 => None,
                            1 => Some(current),
                            _ => Some(current + 1),
                        };
                        let command = set(
                            json!({"n": self.sockets, "v": self.s.state().version()}),
                            pick(base, self.s.state().version()),
                            pick(term, self.s.term()),
                        );
                        self.s.handle_command(now, &id, command);
                    }
                }
                Op::Kick(who, target) => {
                    if let (Some(id), Some(target)) =
                        (self.speaker(who), self.id_of(Who::Slot(target)))
                    {
                        self.s.handle_command(now, &id, kick(&target));
                    }
                }
                Op::Join(_) | Op::JoinAsHost(_) => {}
            }
            Ok(replayed)
        }

        /// One frame for member `id`, in the order it received it; `replayed` if it comes from
        /// a resume's replay (sent earlier, while the member was away).
        fn absorb(
            &mut self,
            id: &str,
            seq: Option<u64>,
            m: &Value,
            replayed: bool,
        ) -> Result<(), String> {
            let slot = self
                .slot_of(id)
                .ok_or_else(|| format!("a frame to {id}, who is no member: {m}"))?;
            let host_now = self.s.host_id().map(str::to_string);
            let app = self.slots[slot].app;
            let live = self.slots[slot].live.as_mut().unwrap();
            if live.closed {
                return Err(format!("{id} got {m} after its close"));
            }
            if let Some(seq) = seq {
                if seq != live.last_seq + 1 {
                    return Err(format!("{id} got seq {seq} after {}", live.last_seq));
                }
                live.last_seq = seq;
            }
            let kind = m["type"].as_str().unwrap();
            let view = &mut live.view;
            if !app {
                track_table(view, m);
            }
            if app
                && matches!(
                    kind,
                    "state"
                        | "host_changed"
                        | "member_updated"
                        | "handoff_started"
                        | "handoff_request"
                        | "handoff_ack"
                        | "handoff_failed"
                )
            {
                return Err(format!("app member {id} got {m}"));
            }
            match kind {
                "welcome" => {
                    view.host = str_of(&m["sessionInfo"]["hostId"]);
                    view.term = m["term"].as_u64().unwrap();
                    view.version = m["version"].as_u64().unwrap();
                }
                "member_list" => {
                    let hosts: Vec<_> = m["members"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|e| e["isHost"] == true)
                        .map(|e| str_of(&e["id"]))
                        .collect();
                    if hosts.len() > 1 || (hosts.len() == 1 && m["members"][0]["isHost"] != true) {
                        return Err(format!(
                            "{id}: a member_list with hosts {hosts:?} not first"
                        ));
                    }
                    let listed = hosts.into_iter().next().flatten();
                    if app {
                        view.host = listed;
                    } else if listed != view.host {
                        return Err(format!(
                            "{id}: member_list host {listed:?}, view {:?}",
                            view.host
                        ));
                    }
                }
                "host_changed" => {
                    let (new, previous) = (str_of(&m["hostId"]), str_of(&m["previousHostId"]));
                    if previous != view.host || new == previous {
                        return Err(format!("{id} saw {m} while its host was {:?}", view.host));
                    }
                    if m["term"].as_u64() != Some(view.term + 1) {
                        return Err(format!("{id} saw {m} after term {}", view.term));
                    }
                    view.host = new;
                    view.term += 1;
                    if !replayed {
                        self.host_changes.push(m.clone());
                    }
                }
                "state" => {
                    let (term, version) =
                        (m["term"].as_u64().unwrap(), m["version"].as_u64().unwrap());
                    if term != view.term
                        || version <= view.version
                        || str_of(&m["updatedBy"]) != view.host
                    {
                        return Err(format!("{id} got {m} with view {view:?}"));
                    }
                    view.version = version;
                    if !replayed && !self.state_versions.contains(&version) {
                        self.state_versions.push(version);
                    }
                }
                "handoff_request"
                    if m["term"].as_u64() != Some(view.term)
                        || str_of(&m["fromId"]) != view.host =>
                {
                    return Err(format!("{id} got {m} with view {view:?}"));
                }
                "handoff_failed"
                    if replayed
                        && str_of(&m["handoffId"]).is_some_and(|h| self.all_ended.contains(&h)) => {
                }
                _ if replayed && kind.starts_with("handoff_") => {
                    return Err(format!("{id} got {m} while away"));
                }
                "handoff_started" => {
                    if self.pending.is_some() || host_now.as_deref() != Some(id) {
                        return Err(format!("{id} got {m} with {:?} pending", self.pending));
                    }
                    self.pending = Some((
                        str_of(&m["handoffId"]).unwrap(),
                        str_of(&m["targetId"]).unwrap(),
                    ));
                }
                "handoff_ack" | "handoff_failed" => {
                    if kind == "handoff_ack" && m["term"].as_u64() != Some(view.term + 1) {
                        return Err(format!("{id} got {m} in term {}", view.term));
                    }
                    if let Some(h) = str_of(&m["handoffId"]) {
                        if self.pending.as_ref().is_some_and(|(p, _)| *p == h) {
                            self.pending = None;
                            self.ended_handoffs.push(h.clone());
                            self.all_ended.push(h);
                        } else if !self.ended_handoffs.contains(&h) {
                            return Err(format!("{id} got {m} with {:?} pending", self.pending));
                        }
                    }
                }
                "close" => live.closed = true,
                _ => {}
            }
            Ok(())
        }

        fn step(&mut self, op: &Op) -> Result<(), String> {
            let (host, term, version) = (
                self.s.host_id().map(str::to_string),
                self.s.term(),
                self.s.state().version(),
            );
            let pending = self.pending.clone();
            let connected: Vec<String> = self
                .s
                .member_infos()
                .into_iter()
                .filter(|m| m.connection_status == ConnectionStatus::Connected)
                .map(|m| m.id)
                .collect();
            self.ended_handoffs.clear();
            self.state_versions.clear();
            self.host_changes.clear();

            let replayed = self.run(op)?;
            let frames = drain(&mut self.s);
            for (id, seq, m) in &replayed {
                self.absorb(id, *seq, m, true)?;
            }
            for f in &frames {
                self.absorb(&f.to, f.seq, &f.message, false)?;
            }

            // Places that ended: a connected one was closed.
            for slot in 0..SLOTS {
                let Some(live) = &self.slots[slot].live else {
                    continue;
                };
                if self.status(&live.id).is_none() {
                    if connected.contains(&live.id) && !live.closed {
                        return Err(format!("{} removed without a close", live.id));
                    }
                    self.slots[slot].live = None;
                }
            }
            // A handoff ends only with a frame to one of its sides.
            if let Some((p, _)) = &pending {
                if self.pending.is_none() && !self.ended_handoffs.contains(p) {
                    return Err(format!("handoff {p} ended silently"));
                }
            }
            // Terms only rise, by one per host change, and every change told is real.
            let mut changes: Vec<&Value> = Vec::new();
            for c in &self.host_changes {
                if !changes.iter().any(|d| d["term"] == c["term"]) {
                    changes.push(c);
                } else if !changes.contains(&c) {
                    return Err(format!("two different host_changed for one term: {c}"));
                }
            }
            changes.sort_by_key(|c| c["term"].as_u64());
            if self.s.term() < term || self.s.term() - term != changes.len() as u64 {
                return Err(format!(
                    "term {term} -> {} with host_changed {changes:?}",
                    self.s.term()
                ));
            }
            let mut chain = host.clone();
            for c in &changes {
                if str_of(&c["previousHostId"]) != chain {
                    return Err(format!("{c} does not follow host {chain:?}"));
                }
                chain = str_of(&c["hostId"]);
            }
            if !changes.is_empty() && chain.as_deref() != self.s.host_id() {
                return Err(format!("told {chain:?}, host is {:?}", self.s.host_id()));
            }
            if changes.is_empty() && !self.s.is_ended() && self.s.host_id() != host.as_deref() {
                return Err(format!("host {host:?} -> {:?} untold", self.s.host_id()));
            }
            // Every accepted change was sent, in order; a refused one changed nothing.
            let fresh: Vec<u64> = self
                .state_versions
                .iter()
                .copied()
                .filter(|v| *v > version)
                .collect();
            let expected: Vec<u64> = (version + 1..=self.s.state().version()).collect();
            if fresh != expected {
                return Err(format!(
                    "version {version} -> {} with state frames {:?}",
                    self.s.state().version(),
                    self.state_versions
                ));
            }
            if self.s.is_ended() {
                return Ok(());
            }
            // Exactly one host, listed first, and the pending handoff as the frames told it.
            let Some(host) = self.s.host_id().map(str::to_string) else {
                return Err("no host in a session that goes on".into());
            };
            let infos = self.s.member_infos();
            let hosts: Vec<_> = infos.iter().filter(|m| m.is_host).map(|m| &m.id).collect();
            if hosts != [&host] || infos[0].id != host {
                return Err(format!("host {host}, listed {hosts:?}"));
            }
            let actual = self
                .s
                .pending_handoff()
                .map(|(h, c)| (h.to_string(), c.to_string()));
            if actual != self.pending {
                return Err(format!("pending {actual:?}, told {:?}", self.pending));
            }
            if let Some((_, c)) = &actual {
                let slot = self.slot_of(c).ok_or("a candidate that is no member")?;
                if !self.connected(c) || self.slots[slot].app || *c == host {
                    return Err(format!("candidate {c} cannot take over"));
                }
            }
            // Every connected member agrees who the host is (and, in our dialect, on the term
            // and the version).
            for sl in &self.slots {
                let Some(live) = &sl.live else { continue };
                if !self.connected(&live.id) {
                    continue;
                }
                let v = &live.view;
                let agrees = v.host.as_deref() == Some(host.as_str())
                    && (sl.app
                        || (v.term == self.s.term() && v.version == self.s.state().version()));
                if !agrees {
                    return Err(format!(
                        "{} sees {v:?}; host {host}, term {}, version {}",
                        live.id,
                        self.s.term(),
                        self.s.state().version()
                    ));
                }
                if sl.app {
                    continue;
                }
                // Its table: everyone as the session lists them (its own entry's readiness
                // and status are what it did, never told to it).
                let actual: std::collections::BTreeMap<String, Entry> = infos
                    .iter()
                    .map(|i| entry(&serde_json::to_value(i).unwrap()))
                    .collect();
                let same = actual.len() == v.table.len()
                    && actual.iter().all(|(id, a)| match v.table.get(id) {
                        Some(t) if *id == live.id => t.0 == a.0,
                        Some(t) => t == a,
                        None => false,
                    });
                if !same {
                    return Err(format!(
                        "{}'s table {:?}, the session's {actual:?}",
                        live.id, v.table
                    ));
                }
            }
            Ok(())
        }
    }

    fn run_model(
        handoff: bool,
        host_resumable: bool,
        attrs: &[(u8, u8)],
        initial: usize,
        ops: &[Op],
    ) -> Result<(), String> {
        let config = HandoffConfig {
            timeout: TIMEOUT,
            on_host_loss: if handoff {
                HostLoss::Handoff
            } else {
                HostLoss::Close
            },
            ..HandoffConfig::default()
        };
        let mut slots = vec![Slot {
            resumable: host_resumable,
            app: false,
            generation: 0,
            live: None,
        }];
        slots.extend(attrs.iter().map(|&(resumable, app)| Slot {
            resumable: resumable != 0 && app != 0,
            app: app == 0,
            generation: 0,
            live: None,
        }));
        let mut model = Model {
            s: session(config, WINDOW),
            now: t0(),
            slots,
            sockets: 0,
            pending: None,
            ended_handoffs: Vec::new(),
            all_ended: Vec::new(),
            state_versions: Vec::new(),
            host_changes: Vec::new(),
        };
        model.join(0, DeviceType::Host)?;
        for slot in 1..=initial {
            model.join(slot, DeviceType::Client)?;
        }
        let frames = drain(&mut model.s);
        for f in &frames {
            model.absorb(&f.to, f.seq, &f.message, false)?;
        }
        for (i, op) in ops.iter().enumerate() {
            if model.s.is_ended() {
                break;
            }
            model
                .step(op)
                .map_err(|e| format!("step {i} {op:?}: {e}"))?;
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn random_sequences_keep_one_host_that_every_member_agrees_on(
            handoff in any::<bool>(),
            host_resumable in any::<bool>(),
            attrs in proptest::collection::vec((0..4u8, 0..4u8), SLOTS - 1),
            initial in 0..SLOTS,
            ops in proptest::collection::vec(op(), 5..40),
        ) {
            if let Err(e) = run_model(handoff, host_resumable, &attrs, initial, &ops) {
                prop_assert!(false, "{}", e);
            }
        }
    }
}
