//! Tests of the session machine: join validation order, member list, leave, kick, messages, close.

use super::*;
use loudsync_protocol::{DeviceInfo, DeviceRef};
use std::time::Instant;

fn now() -> Now {
    Now {
        instant: Instant::now(),
        unix_ms: 1_700_000_000_000,
    }
}

fn join(device: &str, kind: DeviceType) -> Join {
    Join {
        session_id: "s1".into(),
        device_info: DeviceInfo {
            id: device.into(),
            name: format!("{device} name"),
            kind,
        },
        session_name: None,
        protocol_version: None,
    }
}

/// The device of member `c{n}` as [`session_with`] joins it.
fn dev(n: usize) -> DeviceRef {
    DeviceRef {
        device_id: format!("dev-{n}"),
        name: format!("dev-{n} name"),
    }
}

fn drain(s: &mut Session) -> Vec<SessionAction> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

/// A session with a host `h` and members `c1..=n`.
fn session_with(n: usize) -> Session {
    let mut s = Session::new("s1".into(), "Party".into(), 10);
    s.handle_join(now(), "h".into(), &join("dev-h", DeviceType::Host))
        .unwrap();
    for i in 1..=n {
        s.handle_join(
            now(),
            format!("c{i}"),
            &join(&format!("dev-{i}"), DeviceType::Client),
        )
        .unwrap();
    }
    drain(&mut s);
    s
}

fn code(e: &ServerMessage) -> ErrorCode {
    match e {
        ServerMessage::Error { code, .. } => *code,
        other => panic!("not an error: {other:?}"),
    }
}

#[test]
fn join_sends_welcome_then_member_list_to_joiner_and_member_joined_to_others() {
    let mut s = session_with(1);
    s.handle_join(now(), "c2".into(), &join("dev-2", DeviceType::Client))
        .unwrap();
    let a = drain(&mut s);
    assert_eq!(a.len(), 3);
    match &a[0] {
        SessionAction::Send {
            to: Recipients::One(id),
            message:
                ServerMessage::Welcome {
                    client_id,
                    session_info,
                    device,
                    ..
                },
        } => {
            assert_eq!(device, &dev(2));
            assert_eq!(session_info.host.as_ref().unwrap().device_id, "dev-h");
            assert_eq!(id, "c2");
            assert_eq!(client_id, "c2");
            assert_eq!(session_info.host_id.as_deref(), Some("h"));
            assert_eq!(session_info.name, "Party");
        }
        other => panic!("{other:?}"),
    }
    match &a[1] {
        SessionAction::Send {
            to: Recipients::One(id),
            message: ServerMessage::MemberList { members },
        } => {
            assert_eq!(id, "c2");
            let ids: Vec<_> = members.iter().map(|m| m.id.as_str()).collect();
            assert_eq!(ids, ["h", "c1", "c2"]);
            assert!(members[0].is_host && !members[1].is_host);
        }
        other => panic!("{other:?}"),
    }
    match &a[2] {
        SessionAction::Send {
            to: Recipients::AllExcept(id),
            message: ServerMessage::MemberJoined { member },
        } => {
            assert_eq!(id, "c2");
            assert_eq!(member.id, "c2");
            assert_eq!(member.name, "dev-2 name");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn host_is_listed_first_even_when_it_joins_late() {
    let mut s = Session::new("s1".into(), "Lobby".into(), 10);
    s.handle_join(now(), "c1".into(), &join("dev-1", DeviceType::Client))
        .unwrap();
    assert_eq!(s.session_info().host_id, None);
    s.handle_join(now(), "h".into(), &join("dev-h", DeviceType::Host))
        .unwrap();
    let ids: Vec<_> = s.member_infos().into_iter().map(|m| m.id).collect();
    assert_eq!(ids, ["h", "c1"]);
    assert_eq!(s.host_id(), Some("h"));
}

#[test]
fn join_validation_order_already_joined_then_host_then_capacity() {
    let mut s = Session::new("s1".into(), "P".into(), 2);
    s.handle_join(now(), "h".into(), &join("dev-h", DeviceType::Host))
        .unwrap();
    s.handle_join(now(), "c1".into(), &join("dev-1", DeviceType::Client))
        .unwrap();
    drain(&mut s);
    // Full, but the duplicate device is reported first.
    assert_eq!(
        code(
            &s.handle_join(now(), "x".into(), &join("dev-1", DeviceType::Client))
                .unwrap_err()
        ),
        ErrorCode::AlreadyJoined
    );
    // A second host, even when full, is unauthorized.
    assert_eq!(
        code(
            &s.handle_join(now(), "x".into(), &join("dev-h2", DeviceType::Host))
                .unwrap_err()
        ),
        ErrorCode::Unauthorized
    );
    let full = s
        .handle_join(now(), "x".into(), &join("dev-2", DeviceType::Client))
        .unwrap_err();
    match full {
        ServerMessage::Error { code, details, .. } => {
            assert_eq!(code, ErrorCode::SessionFull);
            assert_eq!(
                details,
                Some(serde_json::json!({"maxMembers": 2, "currentMembers": 2}))
            );
        }
        _ => unreachable!(),
    }
    assert!(
        drain(&mut s).is_empty(),
        "a rejected join sends nothing to members"
    );
    assert_eq!(s.member_count(), 2);
}

#[test]
fn leave_tells_the_others_and_closes_the_leaver() {
    let mut s = session_with(2);
    s.handle_command(now(), "c1", MemberCommand::Leave);
    let a = drain(&mut s);
    assert_eq!(
        a,
        vec![
            SessionAction::Close {
                member: "c1".into(),
                code: 1000,
                reason: "left".into()
            },
            SessionAction::Send {
                to: Recipients::All,
                message: ServerMessage::MemberLeft {
                    member_id: "c1".into(),
                    reason: LeaveReason::Left,
                    device: dev(1),
                }
            },
        ]
    );
    assert_eq!(s.member_count(), 2);
}

#[test]
fn disconnect_and_timeout_give_member_left_with_their_reason() {
    let mut s = session_with(2);
    s.handle_command(now(), "c1", MemberCommand::Disconnected(LeaveReason::Error));
    s.handle_command(
        now(),
        "c2",
        MemberCommand::Disconnected(LeaveReason::Timeout),
    );
    let reasons: Vec<_> = drain(&mut s)
        .into_iter()
        .filter_map(|a| match a {
            SessionAction::Send {
                message:
                    ServerMessage::MemberLeft {
                        member_id, reason, ..
                    },
                ..
            } => Some((member_id, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("c1".into(), LeaveReason::Error),
            ("c2".into(), LeaveReason::Timeout)
        ]
    );
}

#[test]
fn kick_by_host_removes_the_target() {
    let mut s = session_with(2);
    s.handle_command(
        now(),
        "h",
        MemberCommand::Kick {
            member_id: "c2".into(),
            reason: None,
        },
    );
    let a = drain(&mut s);
    assert_eq!(
        a[0],
        SessionAction::Send {
            to: Recipients::One("c2".into()),
            message: ServerMessage::Kicked {
                reason: "Host removed you from the session".into()
            }
        }
    );
    assert!(matches!(&a[1], SessionAction::Close { member, .. } if member == "c2"));
    assert_eq!(
        a[2],
        SessionAction::Send {
            to: Recipients::All,
            message: ServerMessage::MemberLeft {
                member_id: "c2".into(),
                reason: LeaveReason::Kicked,
                device: dev(2),
            }
        }
    );
}

#[test]
fn kick_errors() {
    let mut s = session_with(2);
    s.handle_command(
        now(),
        "c1",
        MemberCommand::Kick {
            member_id: "c2".into(),
            reason: None,
        },
    );
    s.handle_command(
        now(),
        "h",
        MemberCommand::Kick {
            member_id: "nobody".into(),
            reason: None,
        },
    );
    s.handle_command(
        now(),
        "h",
        MemberCommand::Kick {
            member_id: "h".into(),
            reason: None,
        },
    );
    let a = drain(&mut s);
    let codes: Vec<_> = a
        .iter()
        .map(|a| match a {
            SessionAction::Send {
                to: Recipients::One(to),
                message,
            } => (to.clone(), code(message)),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        codes,
        vec![
            ("c1".into(), ErrorCode::Unauthorized),
            ("h".into(), ErrorCode::InvalidMessage),
            ("h".into(), ErrorCode::InvalidMessage)
        ]
    );
    assert_eq!(s.member_count(), 3);
}

#[test]
fn host_leave_or_drop_ends_the_session_for_everyone() {
    for command in [
        MemberCommand::Leave,
        MemberCommand::Disconnected(LeaveReason::Error),
        MemberCommand::Disconnected(LeaveReason::Timeout),
    ] {
        let mut s = session_with(2);
        s.handle_command(now(), "h", command);
        let a = drain(&mut s);
        assert!(matches!(
            &a[0],
            SessionAction::Send {
                to: Recipients::All,
                message: ServerMessage::SessionClosed { .. }
            }
        ));
        let closed: Vec<_> = a
            .iter()
            .filter_map(|a| match a {
                SessionAction::Close { member, .. } => Some(member.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(closed, ["h", "c1", "c2"]);
        assert_eq!(a.last(), Some(&SessionAction::Ended));
        assert!(s.is_ended());
    }
}

#[test]
fn admin_close_uses_the_given_reason_and_code() {
    let mut s = session_with(1);
    s.handle_close(now(), "Server shutting down", 1001);
    let a = drain(&mut s);
    assert_eq!(
        a[0],
        SessionAction::Send {
            to: Recipients::All,
            message: ServerMessage::SessionClosed {
                reason: "Server shutting down".into()
            }
        }
    );
    assert!(a
        .iter()
        .any(|a| matches!(a, SessionAction::Close { code: 1001, .. })));
    // An ended session rejects joins.
    assert_eq!(
        code(
            &s.handle_join(now(), "z".into(), &join("z", DeviceType::Client))
                .unwrap_err()
        ),
        ErrorCode::SessionNotFound
    );
}

#[test]
fn messages_go_to_everyone_else_or_to_one() {
    let mut s = session_with(2);
    let data =
        loudsync_protocol::RawJson::from_text(r#"{"track": "x", "position": 12.5}"#).unwrap();
    s.handle_command(
        now(),
        "c1",
        MemberCommand::Message {
            data: data.clone(),
            to: None,
        },
    );
    s.handle_command(
        now(),
        "c1",
        MemberCommand::Message {
            data: data.clone(),
            to: Some("h".into()),
        },
    );
    s.handle_command(
        now(),
        "c1",
        MemberCommand::Message {
            data: data.clone(),
            to: Some("ghost".into()),
        },
    );
    let a = drain(&mut s);
    let msg = ServerMessage::Message {
        from: "c1".into(),
        data,
        device: dev(1),
    };
    assert_eq!(
        a[0],
        SessionAction::Send {
            to: Recipients::AllExcept("c1".into()),
            message: msg.clone()
        }
    );
    assert_eq!(
        a[1],
        SessionAction::Send {
            to: Recipients::One("h".into()),
            message: msg
        }
    );
    assert!(
        matches!(&a[2], SessionAction::Send { to: Recipients::One(c), message } if c == "c1" && code(message) == ErrorCode::InvalidMessage)
    );
}

#[test]
fn latency_and_member_list_request() {
    let mut s = session_with(1);
    s.handle_command(now(), "c1", MemberCommand::Latency(42));
    s.handle_command(now(), "c1", MemberCommand::MemberList);
    let a = drain(&mut s);
    match &a[..] {
        [SessionAction::Send {
            to: Recipients::One(c),
            message: ServerMessage::MemberList { members },
        }] => {
            assert_eq!(c, "c1");
            assert_eq!(members[1].latency, Some(42));
            assert_eq!(members[0].latency, None);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn commands_from_departed_members_are_ignored() {
    let mut s = session_with(1);
    s.handle_command(now(), "c1", MemberCommand::Leave);
    drain(&mut s);
    s.handle_command(now(), "c1", MemberCommand::Disconnected(LeaveReason::Error));
    s.handle_command(now(), "c1", MemberCommand::MemberList);
    assert!(drain(&mut s).is_empty());
}

proptest::proptest! {
    /// Whatever members do, the session never exceeds capacity, never lists a member twice,
    /// and the host, while there is one, is listed first.
    #[test]
    fn invariants_hold_under_random_commands(ops in proptest::collection::vec((0u8..6, 0usize..6), 0..60)) {
        let mut s = Session::new("s".into(), "S".into(), 4);
        let ids: Vec<String> = (0..6).map(|i| format!("m{i}")).collect();
        let mut next: usize = 0;
        for (op, who) in ops {
            let id = &ids[who];
            match op {
                0 => { let _ = s.handle_join(now(), format!("{id}-{next}"), &join(id, if who == 0 { DeviceType::Host } else { DeviceType::Client })); next += 1; }
                1 => s.handle_command(now(), &format!("{id}-{}", next.saturating_sub(1)), MemberCommand::Leave),
                2 => { let infos = s.member_infos(); if let Some(m) = infos.get(who % infos.len().max(1)) { let mid = m.id.clone(); s.handle_command(now(), &mid, MemberCommand::Disconnected(LeaveReason::Error)); } }
                3 => { let infos = s.member_infos(); if let (Some(h), Some(t)) = (infos.first(), infos.last()) { let (h, t) = (h.id.clone(), t.id.clone()); s.handle_command(now(), &h, MemberCommand::Kick { member_id: t, reason: None }); } }
                _ => { let infos = s.member_infos(); if let Some(m) = infos.first() { let mid = m.id.clone(); s.handle_command(now(), &mid, MemberCommand::MemberList); } }
            }
            drain(&mut s);
            let infos = s.member_infos();
            proptest::prop_assert!(infos.len() <= 4);
            let mut seen: Vec<_> = infos.iter().map(|m| m.id.clone()).collect();
            seen.sort();
            seen.dedup();
            proptest::prop_assert_eq!(seen.len(), infos.len());
            if let Some(h) = s.host_id() {
                proptest::prop_assert_eq!(infos[0].id.as_str(), h);
            }
            if s.is_ended() { break; }
        }
    }
}
