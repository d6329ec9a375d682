//! Tests of the session's resume layer on a virtual clock: held places and their window,
//! numbering and the replay buffer, resumes and their races, tokens' fates.

use super::*;
use crate::directory::Credentials;
use loudsync_protocol::DeviceInfo;

type S = Session<String>;

fn t0() -> Now {
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
        password: None,
        token: None,
    }
}

/// Joins `id` (transport `t-<id>`, socket 1) resumable with token `T-<id>`, or plain.
fn join_member(s: &mut S, now: Now, id: &str, kind: DeviceType, resumable: bool) {
    let joiner = Joiner {
        transport: format!("t-{id}"),
        dialect: Dialect::LoudSync,
        address: "127.0.0.1".into(),
        credentials: Credentials::default(),
        socket: 1,
        resume_token: resumable.then(|| format!("T-{id}")),
    };
    s.handle_join(now, id.into(), &join(&format!("dev-{id}"), kind), joiner)
        .map_err(|(e, _)| e)
        .unwrap();
}

fn session(window: Duration, replay: ReplayLimits) -> S {
    let mut s: S = Session::new(
        SessionSpec {
            id: "s1".into(),
            name: "Held".into(),
            max_members: 10,
            access: Access::default(),
        },
        SessionConfig {
            detach_hold: window,
            replay,
            ..SessionConfig::default()
        },
    );
    join_member(&mut s, t0(), "h", DeviceType::Host, true);
    join_member(&mut s, t0(), "c1", DeviceType::Client, true);
    drain(&mut s);
    s
}

/// Everything the session does, resolved as the server does: (recipient transport, type,
/// seq) per frame, closes as ("close", transport, code), token fates as ("token", token, why).
fn drain(s: &mut S) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(action) = s.poll_action() {
        match action {
            SessionAction::Send { to, message } => {
                let kind = message.type_name();
                let mut got = Vec::new();
                s.deliver(
                    &to,
                    &message,
                    &mut |_| Bytes::from_static(b"{}"),
                    &mut |t, frame| {
                        got.push(match frame {
                            Outgoing::Plain(_) => format!("{t} {kind}"),
                            Outgoing::Numbered(seq, _) => format!("{t} {kind} #{seq}"),
                        })
                    },
                );
                got.sort();
                out.extend(got);
            }
            SessionAction::Close {
                transport, code, ..
            } => out.push(format!("close {transport} {code}")),
            SessionAction::TokenEnded { token, why } => {
                out.push(format!("token {token} {}", why.as_str()))
            }
            SessionAction::Ended => out.push("ended".into()),
        }
    }
    out
}

#[test]
fn a_resumable_drop_holds_the_place_for_the_window_and_others_see_it_reconnecting() {
    let t = t0();
    let mut s = session(Duration::from_secs(30), ReplayLimits::default());
    s.handle_socket_detach(t, "c1", 1, LeaveReason::Error, false);
    assert_eq!(drain(&mut s), ["t-h member_updated #3"]);
    assert_eq!(
        s.member_infos()[1].connection_status,
        ConnectionStatus::Reconnecting
    );
    assert_eq!(
        s.poll_timeout(),
        Some(t.plus(Duration::from_secs(30)).instant)
    );
    s.handle_timeout(t.plus(Duration::from_secs(29)));
    assert!(drain(&mut s).is_empty());
    s.handle_timeout(t.plus(Duration::from_secs(30)));
    assert_eq!(
        drain(&mut s),
        ["token T-c1 expired", "t-h member_left #4"],
        "member_left (reason timeout) only when the window ends"
    );
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn messages_to_an_away_member_are_numbered_and_replayed_on_resume() {
    let t = t0();
    let mut s = session(Duration::from_secs(30), ReplayLimits::default());
    // c1 got welcome (unnumbered) and member_list #1 at its join.
    s.handle_socket_detach(t, "c1", 1, LeaveReason::Error, false);
    drain(&mut s);
    s.handle_command(
        t,
        "h",
        MemberCommand::Message {
            data: RawJsonLit::obj(),
            to: None,
        },
    );
    assert!(drain(&mut s).is_empty(), "buffered, not delivered");
    let r = s
        .handle_resume(t, "c1", "T-c1", 1, 2, "t-c1b".into())
        .map_err(|(e, _)| e)
        .unwrap();
    assert_eq!(r.last_in, 0);
    assert_eq!(r.replay.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [2]);
    assert!(r.replaced.is_none());
    assert_eq!(drain(&mut s), ["t-h member_updated #4"]);
    assert_eq!(
        s.member_infos()[1].connection_status,
        ConnectionStatus::Connected
    );
    assert_eq!(s.poll_timeout(), None, "the window is over");
}

/// `{}` as application data.
struct RawJsonLit;
impl RawJsonLit {
    fn obj() -> loudsync_protocol::RawJson {
        loudsync_protocol::RawJson::from_text("{}").unwrap()
    }
}
