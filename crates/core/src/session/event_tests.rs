//! The session's events for operators ([`SessionEvent`], recorded only while observed) and the
//! administrator's actions ([`Session::handle_admin_kick`], [`Session::handle_admin_handoff`]).

use super::*;
use crate::directory::Credentials;
use loudsync_protocol::DeviceInfo;

type S = Session<String>;

fn now() -> Now {
    Now {
        instant: Instant::now(),
        unix_ms: 1_700_000_000_000,
    }
}

fn session() -> S {
    Session::new(
        SessionSpec {
            id: "s1".into(),
            name: "Party".into(),
            max_members: 50,
            access: Access::default(),
        },
        SessionConfig::default(),
    )
}

fn join(s: &mut S, id: &str, kind: DeviceType, dialect: Dialect) {
    let j = Join {
        session_id: Some("s1".into()),
        device_info: DeviceInfo {
            id: format!("dev-{id}"),
            name: format!("{id} name"),
            kind,
        },
        session_name: None,
        protocol_version: None,
        password: None,
        token: None,
    };
    let joiner = Joiner {
        transport: id.to_string(),
        dialect,
        address: "127.0.0.1".into(),
        credentials: Credentials::default(),
        socket: 0,
        resume_token: None,
    };
    s.handle_join(now(), id.to_string(), &j, joiner)
        .map_err(|(e, _)| e)
        .unwrap();
}

fn events(s: &mut S) -> Vec<SessionEvent> {
    while s.poll_action().is_some() {}
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn joined(e: &SessionEvent) -> (&str, bool, Dialect) {
    match e {
        SessionEvent::MemberJoined { member, dialect } => {
            (member.id.as_str(), member.is_host, *dialect)
        }
        other => panic!("not a join: {other:?}"),
    }
}

#[test]
fn an_unobserved_session_records_nothing() {
    let mut s = session();
    join(&mut s, "h", DeviceType::Host, Dialect::LoudSync);
    join(&mut s, "c1", DeviceType::Client, Dialect::LoudSync);
    s.handle_command(now(), "c1", MemberCommand::Leave);
    s.handle_close(now(), "bye", close_code::NORMAL);
    assert!(events(&mut s).is_empty());
}

#[test]
fn joins_kicks_and_the_close_are_recorded_in_order() {
    let mut s = session();
    s.set_observed(true);
    join(&mut s, "h", DeviceType::Host, Dialect::LoudSync);
    join(&mut s, "c1", DeviceType::Client, Dialect::App);
    s.handle_command(
        now(),
        "h",
        MemberCommand::Kick {
            member_id: "c1".into(),
            reason: None,
        },
    );
    join(&mut s, "c2", DeviceType::Client, Dialect::LoudSync);
    assert_eq!(s.handle_admin_kick("c2", Some("spam".into())), Ok(()));
    s.handle_close(now(), "Session closed by the server administrator", 1000);
    let e = events(&mut s);
    assert_eq!(e.len(), 6, "{e:#?}");
    assert_eq!(joined(&e[0]), ("h", true, Dialect::LoudSync));
    assert_eq!(joined(&e[1]), ("c1", false, Dialect::App));
    assert_eq!(
        e[2],
        SessionEvent::MemberLeft {
            member_id: "c1".into(),
            reason: LeaveReason::Kicked
        }
    );
    assert_eq!(joined(&e[3]), ("c2", false, Dialect::LoudSync));
    assert_eq!(
        e[4],
        SessionEvent::MemberLeft {
            member_id: "c2".into(),
            reason: LeaveReason::Kicked
        }
    );
    assert_eq!(
        e[5],
        SessionEvent::Closed {
            reason: "Session closed by the server administrator".into()
        }
    );
}

#[test]
fn turning_observation_off_drops_what_was_not_polled() {
    let mut s = session();
    s.set_observed(true);
    join(&mut s, "h", DeviceType::Host, Dialect::LoudSync);
    s.set_observed(false);
    assert_eq!(s.poll_event(), None);
}

#[test]
fn the_admin_kick_tells_the_member_and_refuses_the_host_and_strangers() {
    let mut s = session();
    join(&mut s, "h", DeviceType::Host, Dialect::LoudSync);
    join(&mut s, "c1", DeviceType::Client, Dialect::LoudSync);
    while s.poll_action().is_some() {}
    assert_eq!(s.handle_admin_kick("h", None), Err(AdminRefusal::IsHost));
    assert_eq!(
        s.handle_admin_kick("nobody", None),
        Err(AdminRefusal::NoSuchMember)
    );
    assert!(s.poll_action().is_none(), "a refusal sends nothing");
    s.handle_admin_kick("c1", None).unwrap();
    let actions: Vec<_> = std::iter::from_fn(|| s.poll_action()).collect();
    assert!(
        matches!(
            &actions[0],
            SessionAction::Send { to: Recipients::One(c), message: ServerMessage::Kicked { reason } }
                if c == "c1" && reason == "Removed by the server administrator"
        ),
        "{actions:#?}"
    );
    assert!(actions.iter().any(|a| matches!(
        a,
        SessionAction::Close { member, reason, .. } if member == "c1" && reason == "kicked"
    )));
    assert_eq!(s.member_count(), 1);
}

#[test]
fn the_admin_handoff_is_the_hosts_request_after_the_operators_checks() {
    let mut s = session();
    join(&mut s, "c0", DeviceType::Client, Dialect::LoudSync);
    assert_eq!(
        s.handle_admin_handoff(now(), "c0"),
        Err(AdminRefusal::NoHost)
    );
    join(&mut s, "h", DeviceType::Host, Dialect::LoudSync);
    join(&mut s, "app", DeviceType::Client, Dialect::App);
    s.set_observed(true);
    assert_eq!(
        s.handle_admin_handoff(now(), "nobody"),
        Err(AdminRefusal::NoSuchMember)
    );
    assert_eq!(
        s.handle_admin_handoff(now(), "h"),
        Err(AdminRefusal::IsHost)
    );
    assert_eq!(
        s.handle_admin_handoff(now(), "app"),
        Err(AdminRefusal::NotEligible)
    );
    let id = s.handle_admin_handoff(now(), "c0").unwrap();
    assert_eq!(s.pending_handoff(), Some((id.as_str(), "c0")));
    assert_eq!(s.handle_admin_handoff(now(), "c0"), Err(AdminRefusal::Busy));
    s.handle_command(
        now(),
        "c0",
        MemberCommand::HandoffAnswer {
            handoff_id: id.clone(),
            accept: true,
        },
    );
    assert_eq!(s.host_id(), Some("c0"));
    let e = events(&mut s);
    assert_eq!(
        e,
        [
            SessionEvent::HandoffStarted {
                handoff_id: id,
                host_id: "h".into(),
                target_id: "c0".into()
            },
            SessionEvent::HostChanged {
                host_id: "c0".into(),
                previous_host_id: "h".into(),
                term: 2,
                reason: HostChange::Handoff
            },
        ]
    );
}
