//! Tests of the session machine: join validation order, member list, leave, kick, messages, close.

use super::*;
use crate::directory::Password;
use loudsync_protocol::{DeviceInfo, DeviceRef};
use std::time::Instant;

/// Tests name each member's transport after the member.
type S = Session<String>;

fn new_session(name: &str, max_members: usize) -> S {
    Session::new(
        SessionSpec {
            id: "s1".into(),
            name: name.into(),
            max_members,
            access: Access::default(),
        },
        SessionConfig::default(),
    )
}

fn joiner(id: &str) -> Joiner<String> {
    Joiner {
        transport: format!("t-{id}"),
        dialect: Dialect::LoudSync,
        address: "127.0.0.1".into(),
        credentials: Credentials::default(),
        socket: 0,
        resume_token: None,
    }
}

/// Joins member `id` with a transport named `t-<id>`; a refusal comes back as its `error`.
fn sjoin(s: &mut S, id: String, j: &Join) -> Result<(), ServerMessage> {
    let t = joiner(&id);
    s.handle_join(now(), id, j, t)
        .map_err(|(e, _)| e.to_message())
}

pub(super) fn now() -> Now {
    Now {
        instant: Instant::now(),
        unix_ms: 1_700_000_000_000,
    }
}

pub(super) fn join(device: &str, kind: DeviceType) -> Join {
    Join {
        session_id: Some("s1".into()),
        device_info: DeviceInfo {
            id: device.into(),
            name: format!("{device} name"),
            kind,
        },
        session_name: None,
        protocol_version: None,
        password: None,
        token: None,
    }
}

/// The device of member `c{n}` as [`session_with`] joins it.
fn dev(n: usize) -> DeviceRef {
    DeviceRef {
        device_id: format!("dev-{n}"),
        name: format!("dev-{n} name"),
    }
}

/// Every action but [`SessionAction::MemberGone`] (tested on its own, with [`drain_all`]).
fn drain(s: &mut S) -> Vec<SessionAction<String>> {
    drain_all(s)
        .into_iter()
        .filter(|a| !matches!(a, SessionAction::MemberGone { .. }))
        .collect()
}

fn drain_all(s: &mut S) -> Vec<SessionAction<String>> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

/// A session with a host `h` and members `c1..=n`.
fn session_with(n: usize) -> S {
    let mut s = new_session("Party", 10);
    sjoin(&mut s, "h".into(), &join("dev-h", DeviceType::Host)).unwrap();
    for i in 1..=n {
        sjoin(
            &mut s,
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
    sjoin(&mut s, "c2".into(), &join("dev-2", DeviceType::Client)).unwrap();
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
    let mut s = new_session("Lobby", 10);
    sjoin(&mut s, "c1".into(), &join("dev-1", DeviceType::Client)).unwrap();
    assert_eq!(s.session_info().host_id, None);
    sjoin(&mut s, "h".into(), &join("dev-h", DeviceType::Host)).unwrap();
    let ids: Vec<_> = s.member_infos().into_iter().map(|m| m.id).collect();
    assert_eq!(ids, ["h", "c1"]);
    assert_eq!(s.host_id(), Some("h"));
}

#[test]
fn join_validation_order_already_joined_then_host_then_capacity() {
    let mut s = new_session("P", 2);
    sjoin(&mut s, "h".into(), &join("dev-h", DeviceType::Host)).unwrap();
    sjoin(&mut s, "c1".into(), &join("dev-1", DeviceType::Client)).unwrap();
    drain(&mut s);
    // Full, but the duplicate device is reported first.
    assert_eq!(
        code(&sjoin(&mut s, "x".into(), &join("dev-1", DeviceType::Client)).unwrap_err()),
        ErrorCode::AlreadyJoined
    );
    // A second host, even when full, is unauthorized.
    assert_eq!(
        code(&sjoin(&mut s, "x".into(), &join("dev-h2", DeviceType::Host)).unwrap_err()),
        ErrorCode::Unauthorized
    );
    let (refusal, transport) = s
        .handle_join(
            now(),
            "x".into(),
            &join("dev-2", DeviceType::Client),
            joiner("x"),
        )
        .unwrap_err();
    assert_eq!(transport, "t-x", "a refused joiner gets its transport back");
    let full = refusal.to_message();
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
                transport: "t-c1".into(),
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
    s.handle_detach(now(), "c1", LeaveReason::Error);
    s.handle_detach(now(), "c2", LeaveReason::Timeout);
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
    for how in [None, Some(LeaveReason::Error), Some(LeaveReason::Timeout)] {
        let mut s = session_with(2);
        match how {
            None => s.handle_command(now(), "h", MemberCommand::Leave),
            Some(reason) => s.handle_detach(now(), "h", reason),
        }
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
        code(&sjoin(&mut s, "z".into(), &join("z", DeviceType::Client)).unwrap_err()),
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
    s.handle_detach(now(), "c1", LeaveReason::Error);
    s.handle_command(now(), "c1", MemberCommand::MemberList);
    assert!(drain(&mut s).is_empty());
}

proptest::proptest! {
    /// Whatever members do, the session never exceeds capacity, never lists a member twice,
    /// and the host, while there is one, is listed first.
    #[test]
    fn invariants_hold_under_random_commands(ops in proptest::collection::vec((0u8..6, 0usize..6), 0..60)) {
        let mut s = new_session("S", 4);
        let ids: Vec<String> = (0..6).map(|i| format!("m{i}")).collect();
        let mut next: usize = 0;
        for (op, who) in ops {
            let id = &ids[who];
            match op {
                0 => { let _ = sjoin(&mut s, format!("{id}-{next}"), &join(id, if who == 0 { DeviceType::Host } else { DeviceType::Client })); next += 1; }
                1 => s.handle_command(now(), &format!("{id}-{}", next.saturating_sub(1)), MemberCommand::Leave),
                2 => { let infos = s.member_infos(); if let Some(m) = infos.get(who % infos.len().max(1)) { let mid = m.id.clone(); s.handle_detach(now(), &mid, LeaveReason::Error); } }
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

fn delivered_to(s: &S, to: &Recipients) -> Vec<String> {
    let mut t: Vec<String> = s.deliveries(to).map(|(t, _)| t.clone()).collect();
    t.sort();
    t
}

#[test]
fn a_kicked_member_gets_kicked_but_not_its_own_member_left() {
    let mut s = session_with(2);
    s.handle_command(
        now(),
        "h",
        MemberCommand::Kick {
            member_id: "c1".into(),
            reason: None,
        },
    );
    // Resolve each action as it is polled, as the server does.
    let mut got = Vec::new();
    while let Some(a) = s.poll_action() {
        match a {
            SessionAction::Send { to, message } => {
                got.push((message.type_name(), delivered_to(&s, &to)))
            }
            SessionAction::Close { transport, .. } => got.push(("close", vec![transport])),
            SessionAction::Ended
            | SessionAction::TokenEnded { .. }
            | SessionAction::MediaToken { .. }
            | SessionAction::MemberGone { .. } => {}
        }
    }
    assert_eq!(
        got,
        vec![
            ("kicked", vec!["t-c1".to_string()]),
            ("close", vec!["t-c1".to_string()]),
            ("member_left", vec!["t-c2".to_string(), "t-h".to_string()]),
        ]
    );
}

#[test]
fn session_closed_reaches_everyone_before_their_closes() {
    let mut s = session_with(2);
    s.handle_close(now(), "bye", close_code::GOING_AWAY);
    let Some(SessionAction::Send { to, .. }) = s.poll_action() else {
        panic!()
    };
    assert_eq!(delivered_to(&s, &to), ["t-c1", "t-c2", "t-h"]);
    let closes: Vec<String> = std::iter::from_fn(|| s.poll_action())
        .filter_map(|a| match a {
            SessionAction::Close { transport, .. } => Some(transport),
            _ => None,
        })
        .collect();
    assert_eq!(closes.len(), 3);
    assert_eq!(delivered_to(&s, &Recipients::All), Vec::<String>::new());
}

#[test]
fn with_no_hold_a_detach_ends_the_place_and_there_is_no_timer() {
    let mut s = session_with(1);
    assert_eq!(s.poll_timeout(), None);
    s.handle_detach(now(), "c1", LeaveReason::Error);
    assert_eq!(s.member_count(), 1);
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(
        s.handle_attach(now(), "c1", "t-new".into()),
        Err(AttachError::NoSuchMember)
    );
}

// Held places (the resume window) are tested with resumable members in `resume_tests.rs`.

// Who may join (issue 9): the host role of sessions created over HTTP, passwords, tokens.

fn guarded(host: HostRule, password: Option<&str>) -> S {
    Session::new(
        SessionSpec {
            id: "lobby".into(),
            name: "Admin lobby".into(),
            max_members: 10,
            access: Access {
                host,
                password: password.map(Password::new),
                host_name: Some("Front desk".into()),
            },
        },
        SessionConfig::default(),
    )
}

/// Joins at `now` from `address`, with or without a valid token.
fn join_as(
    s: &mut S,
    at: Now,
    id: &str,
    j: &Join,
    address: &str,
    token: bool,
) -> Result<(), JoinError> {
    let joiner = Joiner {
        address: address.into(),
        credentials: Credentials { token },
        ..joiner(id)
    };
    s.handle_join(at, id.into(), j, joiner).map_err(|(e, _)| e)
}

fn with_password(device: &str, kind: DeviceType, password: Option<&str>) -> Join {
    Join {
        password: password.map(str::to_string),
        ..join(device, kind)
    }
}

fn verdict(r: Result<(), JoinError>) -> &'static str {
    r.map_err(|e| e.code().as_str()).err().unwrap_or("ok")
}

#[test]
fn a_named_host_device_may_claim_the_host_role_and_no_other() {
    let mut s = guarded(HostRule::Device("desk".into()), None);
    let t = now();
    assert_eq!(
        join_as(
            &mut s,
            t,
            "m1",
            &join("mallory", DeviceType::Host),
            "192.0.2.66",
            false
        ),
        Err(JoinError::HostNotAllowed {
            session: "lobby".into(),
            names_a_device: true
        })
    );
    assert_eq!(
        verdict(join_as(
            &mut s,
            t,
            "c1",
            &join("guest", DeviceType::Client),
            "192.0.2.1",
            false
        )),
        "ok"
    );
    assert_eq!(
        verdict(join_as(
            &mut s,
            t,
            "h",
            &join("desk", DeviceType::Host),
            "192.0.2.2",
            false
        )),
        "ok"
    );
    assert_eq!(s.host_id(), Some("h"));
}

#[test]
fn a_session_created_without_a_host_has_no_host_role_to_claim_but_a_host_token_takes_it() {
    let mut s = guarded(HostRule::TokenOnly, None);
    let t = now();
    assert_eq!(
        verdict(join_as(
            &mut s,
            t,
            "c1",
            &join("guest", DeviceType::Client),
            "192.0.2.1",
            false
        )),
        "ok"
    );
    drain(&mut s);
    // Finding 3: an anonymous host join is refused, and the member already there hears nothing.
    assert_eq!(
        join_as(
            &mut s,
            t,
            "m1",
            &join("mallory", DeviceType::Host),
            "192.0.2.66",
            false
        ),
        Err(JoinError::HostNotAllowed {
            session: "lobby".into(),
            names_a_device: false
        })
    );
    assert!(s.poll_action().is_none(), "nothing is sent to anyone");
    assert_eq!(
        (s.host_id(), s.member_count(), s.is_ended()),
        (None, 1, false)
    );
    // The bearer of a host token (checked by `admit` against this join) takes the role.
    assert_eq!(
        verdict(join_as(
            &mut s,
            t,
            "h",
            &join("desk", DeviceType::Host),
            "192.0.2.2",
            true
        )),
        "ok"
    );
    assert_eq!(s.host_id(), Some("h"));
}

#[test]
fn a_password_is_required_and_compared_and_a_token_stands_in_for_it() {
    let mut s = guarded(HostRule::TokenOnly, Some("hunter2"));
    assert!(s.password_protected());
    let t = now();
    let addr = "192.0.2.1";
    assert_eq!(
        join_as(
            &mut s,
            t,
            "c1",
            &with_password("a", DeviceType::Client, None),
            addr,
            false
        ),
        Err(JoinError::PasswordRequired {
            session: "lobby".into()
        })
    );
    assert_eq!(
        join_as(
            &mut s,
            t,
            "c1",
            &with_password("a", DeviceType::Client, Some("hunter3")),
            addr,
            false
        ),
        Err(JoinError::WrongPassword {
            session: "lobby".into()
        })
    );
    assert_eq!(
        verdict(join_as(
            &mut s,
            t,
            "c1",
            &with_password("a", DeviceType::Client, Some("hunter2")),
            addr,
            false
        )),
        "ok"
    );
    assert_eq!(
        verdict(join_as(
            &mut s,
            t,
            "c2",
            &with_password("b", DeviceType::Client, None),
            addr,
            true
        )),
        "ok",
        "a valid token needs no password"
    );
    assert!(!guarded(HostRule::TokenOnly, None).password_protected());
}

#[test]
fn wrong_passwords_are_limited_per_address_on_the_clock() {
    let mut s = guarded(HostRule::TokenOnly, Some("hunter2"));
    let t0 = now();
    let wrong = with_password("a", DeviceType::Client, Some("guess"));
    let right = with_password("a", DeviceType::Client, Some("hunter2"));
    let mallory = "198.51.100.9";
    for i in 0..5 {
        let at = t0.plus(Duration::from_secs(i));
        assert_eq!(
            verdict(join_as(&mut s, at, "m", &wrong, mallory, false)),
            "wrong_password",
            "try {i}"
        );
    }
    // The sixth try is refused before the password is looked at, even the right one.
    let at = t0.plus(Duration::from_secs(10));
    assert_eq!(
        join_as(&mut s, at, "m", &right, mallory, false),
        Err(JoinError::TooManyAttempts {
            session: "lobby".into(),
            retry_after_secs: 50
        })
    );
    // Other addresses are not affected.
    assert_eq!(
        verdict(join_as(
            &mut s,
            at,
            "c1",
            &with_password("b", DeviceType::Client, Some("hunter2")),
            "192.0.2.1",
            false
        )),
        "ok"
    );
    // Once the window (one minute from the first failure) has passed, the address may try.
    let later = t0.plus(Duration::from_secs(60));
    assert_eq!(
        verdict(join_as(&mut s, later, "m", &right, mallory, false)),
        "ok"
    );
}

#[test]
fn the_app_sees_the_named_host_while_there_is_none() {
    let mut s = guarded(HostRule::Device("desk".into()), None);
    let info = s.session_info();
    assert_eq!(
        info.host_id, None,
        "ours names members by clientId: none yet"
    );
    assert_eq!(
        info.host,
        Some(DeviceRef {
            device_id: "desk".into(),
            name: "Front desk".into()
        })
    );
    assert_eq!(
        guarded(HostRule::TokenOnly, None)
            .session_info()
            .host
            .unwrap()
            .device_id,
        ""
    );
    join_as(
        &mut s,
        now(),
        "h",
        &join("desk", DeviceType::Host),
        "192.0.2.2",
        false,
    )
    .unwrap();
    let info = s.session_info();
    assert_eq!(info.host_id.as_deref(), Some("h"));
    assert_eq!(
        info.host.unwrap().name,
        "desk name",
        "the host's own name once it is there"
    );
}

#[test]
fn media_token_requests_name_the_role_by_the_host_rule() {
    // Issue 13 R3: the host publishes, everyone else subscribes; nothing is sent yet.
    let mut s = session_with(2);
    drain(&mut s);
    s.handle_command(now(), "h", MemberCommand::MediaToken);
    s.handle_command(now(), "c2", MemberCommand::MediaToken);
    assert_eq!(
        drain(&mut s),
        vec![
            SessionAction::MediaToken {
                member: "h".into(),
                role: MediaRole::Publish,
            },
            SessionAction::MediaToken {
                member: "c2".into(),
                role: MediaRole::Subscribe,
            },
        ]
    );
    // The caller's answer goes to the asker alone.
    let grant = ServerMessage::error(ErrorCode::MediaUnavailable, "none");
    s.send_to("c2", grant.clone());
    let actions = drain(&mut s);
    let [SessionAction::Send { to, message }] = &actions[..] else {
        panic!("{actions:?}")
    };
    assert_eq!(message, &grant);
    assert_eq!(delivered_to(&s, to), ["t-c2"]);
    // Nobody to answer once the member is gone.
    s.handle_command(now(), "c2", MemberCommand::Leave);
    drain(&mut s);
    s.send_to("c2", grant);
    assert!(drain(&mut s).is_empty());
}

#[test]
fn every_departure_reports_member_gone_before_its_close() {
    let mut s = session_with(3);
    drain_all(&mut s);
    let gone_then_closed = |actions: Vec<SessionAction<String>>| -> Vec<String> {
        actions
            .into_iter()
            .filter_map(|a| match a {
                SessionAction::MemberGone { member } => Some(format!("gone {member}")),
                SessionAction::Close { member, .. } => Some(format!("close {member}")),
                _ => None,
            })
            .collect()
    };
    s.handle_command(now(), "c1", MemberCommand::Leave);
    assert_eq!(gone_then_closed(drain_all(&mut s)), ["gone c1", "close c1"]);
    s.handle_command(
        now(),
        "h",
        MemberCommand::Kick {
            member_id: "c2".into(),
            reason: None,
        },
    );
    assert_eq!(gone_then_closed(drain_all(&mut s)), ["gone c2", "close c2"]);
    s.handle_detach(now(), "c3", LeaveReason::Error);
    assert_eq!(
        gone_then_closed(drain_all(&mut s)),
        ["gone c3", "close c3"],
        "a dropped socket (a plain member's place ends at once)"
    );
    // The session's end: everyone, then Ended.
    let mut s = session_with(1);
    drain_all(&mut s);
    s.handle_close(now(), "bye", close_code::GOING_AWAY);
    let actions = drain_all(&mut s);
    assert_eq!(
        gone_then_closed(actions.clone()),
        ["gone h", "close h", "gone c1", "close c1"]
    );
    assert_eq!(actions.last(), Some(&SessionAction::Ended));
}
