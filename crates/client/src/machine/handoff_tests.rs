//! The handoff layer's rules on a virtual clock (issue 11): the roles and their changes, the
//! host and the term, the state from `welcome` and `state` frames (a stale term's dropped),
//! the frames each command writes (with the term), the host's request and the candidate's
//! prompt with their answers and failures, readiness in the member table, `host_changed`'s
//! reordering, a new session's join and its rejoin, and the layer's commands queued while
//! resuming.

use super::resume_tests::{
    drop_and_reopen, emitted, handshake_on_socket, numbered, rconfig, rconnected_with, seqs,
};
use super::tests::{decoded, sends, Rig};
use super::*;
use crate::config::ClientConfig;
use loudsync_protocol::Seq;
use serde_json::{json, Value};
use std::time::Duration;

fn plain(mut c: ClientConfig) -> ClientConfig {
    c.jitter_seed = 1;
    c.resume = false;
    c
}

fn member_config() -> ClientConfig {
    plain(ClientConfig::member("ws://x/", "s1", "dev-1", "Phone"))
}

fn host_config() -> ClientConfig {
    plain(ClientConfig::host("ws://x/", "s1", "Party", "mac", "Mac"))
}

fn object(v: Value) -> Map<String, Value> {
    v.as_object().expect("an object").clone()
}

/// The roles announced in `actions`.
fn roles(actions: &[Action]) -> Vec<Role> {
    emitted(actions)
        .into_iter()
        .filter_map(|e| match e {
            Event::RoleChanged(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn welcome_with_state(client_id: &str, host: &str, state: Value, version: u64, term: u64) -> Value {
    json!({"type":"welcome","timestamp":1,"clientId":client_id,
        "sessionInfo":{"id":"s1","name":"S","hostId":host},
        "state":state,"version":version,"term":term})
}

/// Host `h` (joined at 1), `c1` (2), `c2` (3, ready), `c3` (4).
fn four_members() -> Value {
    json!({"type":"member_list","timestamp":1,"members":[
        {"id":"h","name":"Host","isHost":true,"connectionStatus":"connected","joinedAt":1},
        {"id":"c1","name":"Phone","isHost":false,"connectionStatus":"connected","joinedAt":2},
        {"id":"c2","name":"Tablet","isHost":false,"connectionStatus":"connected","joinedAt":3,"handoffReady":true},
        {"id":"c3","name":"Tv","isHost":false,"connectionStatus":"connected","joinedAt":4}]})
}

/// A plain connection joined as `me` in a session hosted by `h`, at term 1, with
/// [`four_members`]; returns the rig and every action so far.
fn joined_as(config: ClientConfig, me: &str) -> (Rig, Vec<Action>) {
    let mut r = Rig::new(config);
    r.m.start(r.now);
    r.m.handle_connected(r.now);
    r.text(welcome_with_state(me, "h", json!({}), 0, 1));
    r.text(four_members());
    let all = r.drain_all();
    (r, all)
}

fn host_changed(host: &str, previous: &str, term: u64, reason: &str) -> Value {
    json!({"type":"host_changed","timestamp":1,"hostId":host,"previousHostId":previous,
        "term":term,"reason":reason})
}

fn table(r: &Rig) -> Vec<(String, bool, bool)> {
    r.m.members()
        .iter()
        .map(|m| (m.id.clone(), m.is_host, m.handoff_ready))
        .collect()
}

fn row(id: &str, host: bool, ready: bool) -> (String, bool, bool) {
    (id.to_string(), host, ready)
}

#[test]
fn roles_go_idle_connecting_assigned_ready_and_disconnected() {
    let mut r = Rig::new(member_config());
    assert_eq!(r.m.role(), Role::Idle);
    r.m.start(r.now);
    assert_eq!(roles(&r.drain_all()), [Role::Connecting]);
    r.m.handle_connected(r.now);
    r.text(welcome_with_state("c1", "h", json!({}), 0, 1));
    let a = r.drain_all();
    assert_eq!(roles(&a), [Role::Assigned]);
    assert_eq!(r.m.role(), Role::Assigned);
    // Declaring readiness: the frame, and the role.
    r.m.set_ready(r.now, true).unwrap();
    let a = r.drain_all();
    assert_eq!(
        decoded(&a),
        [ClientMessage::HandoffReady { ready: true }],
        "{a:?}"
    );
    assert_eq!(roles(&a), [Role::HandoffReady]);
    assert!(r.m.is_ready());
    r.m.set_ready(r.now, false).unwrap();
    let a = r.drain_all();
    assert_eq!(decoded(&a), [ClientMessage::HandoffReady { ready: false }]);
    assert_eq!(roles(&a), [Role::Assigned]);
    // The end.
    r.m.leave(r.now);
    r.m.handle_closed(r.now, Some((1000, "left")));
    assert_eq!(roles(&r.drain_all()), [Role::Disconnected]);
    assert_eq!(r.m.role(), Role::Disconnected);
}

#[test]
fn a_plain_connections_loss_is_connecting_until_the_fresh_join_and_failed_is_disconnected() {
    let (mut r, _) = joined_as(member_config(), "c1");
    r.m.handle_closed(r.now, None);
    let a = r.drain_all();
    assert_eq!(roles(&a), [Role::Connecting]);
    assert_eq!(r.m.host_id(), None, "the membership is gone");
    // The attempts run out: Disconnected comes before the final `Failed`.
    let mut all = Vec::new();
    for _ in 0..4 {
        let until = r.elapsed() + Duration::from_secs(3);
        all.extend(r.run_until(until));
        if r.m.is_ended() {
            break;
        }
        r.m.handle_connect_failed(r.now, "refused");
        all.extend(r.drain_all());
    }
    let ev = emitted(&all);
    assert!(matches!(ev.last(), Some(Event::Failed { .. })), "{ev:?}");
    assert!(
        ev.contains(&Event::RoleChanged(Role::Disconnected)),
        "{ev:?}"
    );
    assert_eq!(r.m.role(), Role::Disconnected);
}

#[test]
fn welcome_carries_the_state_and_the_term_and_state_frames_follow() {
    let mut r = Rig::new(member_config());
    r.m.start(r.now);
    r.m.handle_connected(r.now);
    r.text(welcome_with_state("c1", "h", json!({"track":"a"}), 3, 2));
    let ev = emitted(&r.drain_all());
    assert!(
        ev.contains(&Event::SessionState {
            state: json!({"track":"a"}),
            version: 3,
            term: 2,
            updated_by: None
        }),
        "{ev:?}"
    );
    assert_eq!(r.m.session_state(), (&json!({"track":"a"}), 3));
    assert_eq!(r.m.term(), 2);
    assert_eq!(r.m.host_id(), Some("h"));
    assert!(!r.m.is_host());
    r.text(
        json!({"type":"state","timestamp":1,"state":{"track":"b"},"version":4,"term":2,
        "updatedBy":"h"}),
    );
    assert_eq!(
        emitted(&r.drain_all()),
        [Event::SessionState {
            state: json!({"track":"b"}),
            version: 4,
            term: 2,
            updated_by: Some("h".into())
        }]
    );
    assert_eq!(r.m.session_state(), (&json!({"track":"b"}), 4));
}

#[test]
fn state_frames_of_a_term_below_the_highest_seen_are_dropped() {
    let (mut r, _) = joined_as(member_config(), "c1");
    r.text(host_changed("c2", "h", 2, "handoff"));
    r.drain_all();
    assert_eq!(r.m.term(), 2);
    // A frame the former host's term produced (it may be in flight): dropped, unseen.
    r.text(
        json!({"type":"state","timestamp":1,"state":{"stale":true},"version":7,"term":1,
        "updatedBy":"h"}),
    );
    assert_eq!(emitted(&r.drain_all()), []);
    assert_eq!(r.m.session_state(), (&json!({}), 0));
    // The new host's frame is taken; a higher term than seen is taken too.
    r.text(
        json!({"type":"state","timestamp":1,"state":{"x":1},"version":1,"term":2,
        "updatedBy":"c2"}),
    );
    r.text(
        json!({"type":"state","timestamp":1,"state":{"x":2},"version":2,"term":3,
        "updatedBy":"c3"}),
    );
    assert_eq!(emitted(&r.drain_all()).len(), 2);
    assert_eq!(r.m.session_state(), (&json!({"x":2}), 2));
    assert_eq!(r.m.term(), 3);
    // And a host_changed of an older term means nothing.
    r.text(host_changed("c1", "c2", 2, "handoff"));
    assert_eq!(emitted(&r.drain_all()), []);
    assert_eq!(r.m.host_id(), Some("c2"));
}

#[test]
fn set_state_and_patch_state_carry_the_term_and_the_base_version() {
    let (mut r, _) = joined_as(host_config(), "h");
    assert!(r.m.is_host());
    r.m.set_state(r.now, object(json!({"track":"a"})), Some(0))
        .unwrap();
    r.m.patch_state(r.now, object(json!({"pos":null})), None)
        .unwrap();
    let sent = decoded(&r.drain_all());
    assert_eq!(
        sent,
        [
            ClientMessage::StateSet {
                change: StateChange::Replace(object(json!({"track":"a"}))),
                base_version: Some(0),
                term: Some(1),
            },
            ClientMessage::StateSet {
                change: StateChange::Patch(object(json!({"pos":null}))),
                base_version: None,
                term: Some(1),
            }
        ]
    );
    // The confirmation is the state frame every member gets.
    r.text(
        json!({"type":"state","timestamp":1,"state":{"track":"a"},"version":1,"term":1,
        "updatedBy":"h"}),
    );
    r.drain_all();
    assert_eq!(r.m.session_state().1, 1);
    // After a term change, the sets carry the new term.
    r.text(host_changed("h", "c2", 5, "host_lost"));
    r.drain_all();
    r.m.set_state(r.now, object(json!({})), None).unwrap();
    let wire = sends(&r.drain_all());
    assert_eq!(wire[0]["term"], 5, "{wire:?}");
    assert!(wire[0].get("baseVersion").is_none(), "{wire:?}");
}

#[test]
fn a_hosts_request_is_pending_while_it_stays_assigned_and_it_becomes_ready_after_handing_over() {
    let (mut r, _) = joined_as(host_config(), "h");
    r.m.request_handoff(r.now, None).unwrap();
    let a = r.drain_all();
    assert_eq!(
        decoded(&a),
        [ClientMessage::HandoffRequest { target_id: None }]
    );
    assert_eq!(
        r.m.pending_handoff(),
        Some(&PendingHandoff::Requested { target_id: None })
    );
    assert_eq!(r.m.role(), Role::Assigned, "a host is never Handoff-Ready");
    r.text(json!({"type":"handoff_started","timestamp":1,"handoffId":"h1","targetId":"c2"}));
    assert_eq!(
        emitted(&r.drain_all()),
        [Event::HandoffStarted {
            handoff_id: "h1".into(),
            target_id: "c2".into()
        }]
    );
    assert_eq!(
        r.m.pending_handoff(),
        Some(&PendingHandoff::Started {
            handoff_id: "h1".into(),
            target_id: "c2".into()
        })
    );
    // A second request meanwhile: `busy` leaves the started one alone.
    r.m.request_handoff(r.now, Some("c3")).unwrap();
    r.text(json!({"type":"handoff_failed","timestamp":1,"reason":"busy"}));
    let ev = emitted(&r.drain_all());
    assert_eq!(
        ev,
        [Event::HandoffFailed {
            reason: HandoffFailure::Busy,
            handoff_id: None,
            target_id: None
        }]
    );
    assert_eq!(
        r.m.pending_handoff().and_then(|p| p.handoff_id()),
        Some("h1")
    );
    // Accepted: the ack, then host_changed makes this client a ready member.
    r.text(json!({"type":"handoff_ack","timestamp":1,"handoffId":"h1","hostId":"c2","term":2}));
    r.text(host_changed("c2", "h", 2, "handoff"));
    let a = r.drain_all();
    assert_eq!(
        emitted(&a),
        [
            Event::HandoffAcknowledged {
                handoff_id: "h1".into(),
                host_id: "c2".into(),
                term: 2
            },
            Event::HostChanged {
                host_id: "c2".into(),
                previous_host_id: "h".into(),
                term: 2,
                reason: HostChange::Handoff
            },
            Event::RoleChanged(Role::HandoffReady),
        ]
    );
    assert!(!r.m.is_host());
    assert_eq!(r.m.host_id(), Some("c2"));
    assert_eq!(r.m.session().unwrap().host_id.as_deref(), Some("c2"));
    assert_eq!(r.m.term(), 2);
    assert_eq!(r.m.pending_handoff(), None);
    assert!(r.m.is_ready());
    assert_eq!(
        table(&r),
        [
            row("c2", true, false),
            row("h", false, true),
            row("c1", false, false),
            row("c3", false, false)
        ]
    );
}

#[test]
fn handoff_failures_end_the_request_they_name() {
    let (mut r, _) = joined_as(host_config(), "h");
    // No candidate: answered at once, nothing pending.
    r.m.request_handoff(r.now, Some("nobody")).unwrap();
    r.text(json!({"type":"handoff_failed","timestamp":1,"reason":"no_candidate"}));
    r.drain_all();
    assert_eq!(r.m.pending_handoff(), None);
    for reason in ["declined", "timeout", "candidate_left"] {
        r.m.request_handoff(r.now, Some("c1")).unwrap();
        r.text(json!({"type":"handoff_started","timestamp":1,"handoffId":"h2","targetId":"c1"}));
        // A failure naming another request changes nothing.
        r.text(
            json!({"type":"handoff_failed","timestamp":1,"reason":reason,
            "handoffId":"h1","targetId":"c1"}),
        );
        r.drain_all();
        assert!(r.m.pending_handoff().is_some(), "{reason}");
        r.text(
            json!({"type":"handoff_failed","timestamp":1,"reason":reason,
            "handoffId":"h2","targetId":"c1"}),
        );
        let ev = emitted(&r.drain_all());
        assert!(
            matches!(&ev[..], [Event::HandoffFailed { handoff_id: Some(id), target_id: Some(t), .. }]
                if id == "h2" && t == "c1"),
            "{reason}: {ev:?}"
        );
        assert_eq!(r.m.pending_handoff(), None, "{reason}");
        assert!(r.m.is_host() && r.m.role() == Role::Assigned && r.m.term() == 1);
    }
}

#[test]
fn the_candidate_gets_the_prompt_with_the_state_and_its_answers_are_written() {
    let (mut r, _) = joined_as(member_config(), "c1");
    let prompt = json!({"type":"handoff_request","timestamp":1,"handoffId":"h1","fromId":"h",
        "state":{"track":"a"},"version":4,"term":1,"timeoutMs":10000});
    r.text(prompt.clone());
    let offer = HandoffOffer {
        handoff_id: "h1".into(),
        from_id: "h".into(),
        state: json!({"track":"a"}),
        version: 4,
        term: 1,
        timeout_ms: 10000,
    };
    assert_eq!(
        emitted(&r.drain_all()),
        [Event::HandoffRequested {
            handoff_id: "h1".into(),
            from_id: "h".into(),
            state: json!({"track":"a"}),
            version: 4,
            term: 1,
            timeout_ms: 10000
        }]
    );
    assert_eq!(
        r.m.pending_handoff(),
        Some(&PendingHandoff::Offered(offer.clone()))
    );
    // Decline: the frame with its reason; the prompt is answered.
    r.m.decline_handoff(r.now, "h1", Some("driving")).unwrap();
    assert_eq!(
        decoded(&r.drain_all()),
        [ClientMessage::HandoffDecline {
            handoff_id: "h1".into(),
            reason: Some("driving".into())
        }]
    );
    assert_eq!(r.m.pending_handoff(), None);
    // A second prompt that expires: the candidate's `handoff_failed` ends it.
    r.text(prompt.clone());
    r.text(json!({"type":"handoff_failed","timestamp":1,"reason":"timeout","handoffId":"h1"}));
    r.drain_all();
    assert_eq!(r.m.pending_handoff(), None);
    // A third, accepted: this member becomes host, its readiness cleared.
    r.m.set_ready(r.now, true).unwrap();
    r.text(prompt);
    r.m.accept_handoff(r.now, "h1").unwrap();
    let a = r.drain_all();
    assert_eq!(
        decoded(&a),
        [
            ClientMessage::HandoffReady { ready: true },
            ClientMessage::HandoffAccept {
                handoff_id: "h1".into()
            }
        ]
    );
    assert_eq!(r.m.role(), Role::HandoffReady);
    r.text(host_changed("c1", "h", 2, "handoff"));
    let a = r.drain_all();
    assert_eq!(roles(&a), [Role::Assigned]);
    assert!(r.m.is_host() && !r.m.is_ready());
    assert_eq!(
        table(&r),
        [
            row("c1", true, false),
            row("h", false, true),
            row("c2", false, true),
            row("c3", false, false)
        ]
    );
    // As host now, its sets carry the new term.
    r.m.set_state(r.now, object(json!({"track":"b"})), Some(4))
        .unwrap();
    assert_eq!(sends(&r.drain_all())[0]["term"], 2);
}

#[test]
fn host_changed_for_others_reorders_the_table_and_host_lost_sets_no_readiness() {
    let (mut r, _) = joined_as(member_config(), "c1");
    // A handoff between others: the old host keeps its join-order place, ready.
    r.text(host_changed("c3", "h", 2, "handoff"));
    let a = r.drain_all();
    assert_eq!(roles(&a), [], "this member's role did not change");
    assert_eq!(
        table(&r),
        [
            row("c3", true, false),
            row("h", false, true),
            row("c1", false, false),
            row("c2", false, true)
        ]
    );
    // The host is lost: member_left first, then host_changed host_lost (no readiness set).
    r.text(json!({"type":"member_left","timestamp":1,"memberId":"c3","reason":"timeout"}));
    r.text(host_changed("c2", "c3", 3, "host_lost"));
    let ev = emitted(&r.drain_all());
    assert!(ev.contains(&Event::HostChanged {
        host_id: "c2".into(),
        previous_host_id: "c3".into(),
        term: 3,
        reason: HostChange::HostLost
    }));
    assert_eq!(
        table(&r),
        [
            row("c2", true, false),
            row("h", false, true),
            row("c1", false, false)
        ]
    );
    assert_eq!((r.m.host_id(), r.m.term()), (Some("c2"), 3));
}

#[test]
fn readiness_shows_in_the_own_entry_of_the_member_table() {
    let (mut r, _) = joined_as(member_config(), "c1");
    r.m.set_ready(r.now, true).unwrap();
    r.drain_all();
    assert!(table(&r).contains(&row("c1", false, true)));
    // A fresh member list (the server may not have processed it yet) keeps showing it.
    r.text(four_members());
    r.drain_all();
    assert!(table(&r).contains(&row("c1", false, true)));
    // Others' readiness arrives as member_updated.
    r.text(json!({"type":"member_updated","timestamp":1,"member":
        {"id":"c3","name":"Tv","isHost":false,"connectionStatus":"connected","joinedAt":4,"handoffReady":true}}));
    r.drain_all();
    assert!(table(&r).contains(&row("c3", false, true)));
}

#[test]
fn a_new_session_joins_without_an_id_and_rejoins_the_assigned_one() {
    let mut r = Rig::new(plain(ClientConfig::new_session(
        "ws://x/", "Party", "mac", "Mac",
    )));
    assert!(r.m.config.opens_new_session());
    assert_eq!(r.m.session_id(), None);
    r.m.start(r.now);
    r.m.handle_connected(r.now);
    let join = &sends(&r.drain_all())[0];
    assert_eq!(join["type"], "join");
    assert!(join.get("sessionId").is_none(), "{join}");
    assert_eq!(join["deviceInfo"]["type"], "host");
    r.text(json!({"type":"welcome","timestamp":1,"clientId":"h",
        "sessionInfo":{"id":"A1B2C3","name":"Party","hostId":"h"},
        "state":{},"version":0,"term":1}));
    r.drain_all();
    assert_eq!(r.m.session_id(), Some("A1B2C3"));
    assert!(r.m.is_host());
    // The server goes away (1001): the host rejoins, naming the assigned code.
    r.m.handle_closed(r.now, Some((1001, "going away")));
    r.drain_all();
    assert_eq!(r.m.session_id(), Some("A1B2C3"), "kept while away");
    r.run_until(Duration::from_secs(3));
    r.m.handle_connected(r.now);
    let join = &sends(&r.drain_all())[0];
    assert_eq!(join["sessionId"], "A1B2C3", "{join}");
}

#[test]
fn a_host_that_handed_over_rejoins_as_a_member_and_a_member_that_took_over_is_the_host() {
    // The old host: a plain connection's loss is a member's (reconnect), as `client`.
    let (mut r, _) = joined_as(host_config(), "h");
    r.text(host_changed("c2", "h", 2, "handoff"));
    r.drain_all();
    r.m.handle_closed(r.now, None);
    let ev = emitted(&r.drain_all());
    assert!(
        !ev.iter().any(|e| matches!(e, Event::SessionClosed { .. })),
        "{ev:?}"
    );
    r.run_until(Duration::from_secs(3));
    r.m.handle_connected(r.now);
    let join = &sends(&r.drain_all())[0];
    assert_eq!(join["deviceInfo"]["type"], "client", "{join}");
    // Rejoined as a member: it re-declares the readiness it had (the old host's).
    r.text(welcome_with_state("c9", "c2", json!({}), 0, 2));
    let a = r.drain_all();
    assert_eq!(
        decoded(&a),
        [ClientMessage::HandoffReady { ready: true }],
        "{a:?}"
    );
    assert_eq!(r.m.role(), Role::HandoffReady);

    // The member that took over: its plain connection's loss is a host's (the session
    // ended with it, or passed on): no rejoin.
    let (mut r, _) = joined_as(member_config(), "c1");
    r.text(host_changed("c1", "h", 2, "handoff"));
    r.drain_all();
    r.m.handle_closed(r.now, None);
    let ev = emitted(&r.drain_all());
    assert!(
        ev.iter().any(|e| matches!(e, Event::SessionClosed { .. })),
        "{ev:?}"
    );
    assert!(r.m.is_ended());
    assert_eq!(r.m.role(), Role::Disconnected);
}

#[test]
fn while_resuming_the_role_stays_and_the_layers_commands_are_queued_then_sent_numbered() {
    let (mut r, _) = rconnected_with(rconfig());
    r.m.set_ready(r.now, true).unwrap();
    assert_eq!(seqs(&r.drain()), [(Seq::Valid(1), "handoff_ready".into())]);
    let (a, _, _) = drop_and_reopen(&mut r);
    assert_eq!(roles(&a), [], "the server holds the place and its role");
    assert_eq!(r.m.role(), Role::HandoffReady);
    assert_eq!(r.m.state(), ConnectionState::Reconnecting);
    // Queued while away, behind the unacknowledged readiness.
    r.m.set_ready(r.now, false).unwrap();
    r.m.accept_handoff(r.now, "h1").unwrap();
    r.m.decline_handoff(r.now, "h2", None).unwrap();
    r.m.request_handoff(r.now, None).unwrap();
    r.m.set_state(r.now, object(json!({"a":1})), None).unwrap();
    assert_eq!(
        seqs(&r.drain()),
        [],
        "nothing on the socket before the resume"
    );
    r.text(json!({"type":"resumed","timestamp":1,"lastSeq":0,"replayed":0}));
    let a = r.drain_all();
    assert_eq!(
        seqs(&a),
        [
            (Seq::Valid(1), "handoff_ready".into()),
            (Seq::Valid(2), "handoff_ready".into()),
            (Seq::Valid(3), "handoff_accept".into()),
            (Seq::Valid(4), "handoff_decline".into()),
            (Seq::Valid(5), "handoff_request".into()),
            (Seq::Valid(6), "state_set".into()),
        ]
    );
    assert_eq!(r.m.role(), Role::Assigned);
    // Replayed server frames of this layer are handled as usual, duplicates dropped.
    let state = json!({"type":"state","timestamp":1,"state":{"a":1},"version":1,"term":1,
        "updatedBy":"h"});
    r.text(numbered(2, state.clone()));
    r.text(numbered(2, state));
    let states = emitted(&r.drain_all())
        .into_iter()
        .filter(|e| matches!(e, Event::SessionState { .. }))
        .count();
    assert_eq!(states, 1);
}

#[test]
fn a_refused_resume_is_connecting_then_a_fresh_join_re_declares_readiness() {
    let (mut r, _) = rconnected_with(rconfig());
    r.m.set_ready(r.now, true).unwrap();
    r.drain();
    drop_and_reopen(&mut r);
    r.text(json!({"type":"resume_failed","timestamp":1,"reason":"expired"}));
    let failed = r.drain_all();
    assert_eq!(roles(&failed), [Role::Connecting]);
    let (_, joined) = handshake_on_socket(&mut r, failed, "c2");
    assert_eq!(r.m.role(), Role::HandoffReady);
    let after_welcome: Vec<_> = seqs(&joined)
        .into_iter()
        .filter(|(s, _)| matches!(s, Seq::Valid(_)))
        .collect();
    assert_eq!(after_welcome, [(Seq::Valid(1), "handoff_ready".into())]);
}

#[test]
fn the_snapshot_getters_follow_the_frames() {
    let (mut r, _) = joined_as(member_config(), "c1");
    let generation = r.m.generation();
    r.text(
        json!({"type":"state","timestamp":1,"state":{"k":"v"},"version":1,"term":1,
        "updatedBy":"h"}),
    );
    r.drain_all();
    assert_ne!(r.m.generation(), generation, "the driver republishes");
    let generation = r.m.generation();
    r.text(host_changed("c2", "h", 2, "handoff"));
    r.drain_all();
    assert_ne!(r.m.generation(), generation);
}

#[test]
fn the_first_host_joining_a_session_created_over_http_is_the_host() {
    let mut r = Rig::new(member_config());
    r.m.start(r.now);
    r.m.handle_connected(r.now);
    r.text(json!({"type":"welcome","timestamp":1,"clientId":"c1",
        "sessionInfo":{"id":"s1","name":"S","hostId":null},"state":{},"version":0,"term":1}));
    r.drain_all();
    assert_eq!(r.m.host_id(), None);
    r.text(json!({"type":"member_joined","timestamp":1,"member":
        {"id":"h","name":"Host","isHost":true,"connectionStatus":"connected","joinedAt":5}}));
    r.drain_all();
    assert_eq!(r.m.host_id(), Some("h"));
    assert_eq!(r.m.session().unwrap().host_id.as_deref(), Some("h"));
}
