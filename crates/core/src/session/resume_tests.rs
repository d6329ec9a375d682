//! Tests of the session's resume layer on a virtual clock: held places and their window,
//! numbering and the replay buffer, resumes and their races, tokens' fates.

use super::*;
use crate::directory::Credentials;

type S = Session<String>;

/// The landed session tests' clock start and `join`.
use super::tests::{join, now as t0};

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
            SessionAction::MediaToken { .. } | SessionAction::MemberGone { .. } => {}
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

const W: Duration = Duration::from_secs(30);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A join with every particular: `id` with device `dev-<id>`, transport `t`, socket, token
/// `T-<id>` if resumable, dialect.
fn join_with(
    s: &mut S,
    now: Now,
    id: &str,
    kind: DeviceType,
    transport: &str,
    resumable: bool,
    dialect: Dialect,
) -> Result<(), JoinError> {
    let joiner = Joiner {
        transport: transport.into(),
        dialect,
        address: "127.0.0.1".into(),
        credentials: Credentials::default(),
        socket: 1,
        resume_token: resumable.then(|| format!("T-{id}")),
    };
    s.handle_join(now, id.into(), &join(&format!("dev-{id}"), kind), joiner)
        .map_err(|(e, _)| e)
}

fn message(data: &str, to: Option<&str>) -> MemberCommand {
    MemberCommand::Message {
        data: loudsync_protocol::RawJson::from_text(data).unwrap(),
        to: to.map(String::from),
    }
}

/// One frame handed out by `deliver`.
#[derive(Debug, Clone)]
struct Frame {
    to: String,
    message: ServerMessage,
    seq: Option<u64>,
    bytes: Bytes,
}

/// What `drain_full` saw, in order within each kind.
#[derive(Debug, Default)]
struct Drained {
    frames: Vec<Frame>,
    closes: Vec<(String, u16, String)>,
    tokens: Vec<(String, ResumeFailure)>,
    ended: bool,
}

impl Drained {
    fn to(&self, transport: &str) -> Vec<&Frame> {
        self.frames.iter().filter(|f| f.to == transport).collect()
    }
    fn kinds_to(&self, transport: &str) -> Vec<&'static str> {
        self.to(transport)
            .iter()
            .map(|f| f.message.type_name())
            .collect()
    }
    fn left(&self) -> Vec<(String, LeaveReason)> {
        let mut seen = Vec::new();
        for f in &self.frames {
            if let ServerMessage::MemberLeft {
                member_id, reason, ..
            } = &f.message
            {
                if !seen.contains(&(member_id.clone(), *reason)) {
                    seen.push((member_id.clone(), *reason));
                }
            }
        }
        seen
    }
}

/// Resolves every action as the server does, encoding each message once per dialect into
/// unique bytes (a counter), so byte identity can be checked.
fn drain_full(s: &mut S, counter: &mut u64) -> Drained {
    let mut d = Drained::default();
    while let Some(action) = s.poll_action() {
        match action {
            SessionAction::Send { to, message } => {
                let mut cache: Vec<(Dialect, Bytes)> = Vec::new();
                let mut got = Vec::new();
                s.deliver(
                    &to,
                    &message,
                    &mut |dialect| {
                        if let Some((_, b)) = cache.iter().find(|(d, _)| *d == dialect) {
                            return b.clone();
                        }
                        *counter += 1;
                        let b = Bytes::from(format!(
                            "{}-{:?}-{}",
                            message.type_name(),
                            dialect,
                            counter
                        ));
                        cache.push((dialect, b.clone()));
                        b
                    },
                    &mut |t, frame| {
                        let (seq, bytes) = match frame {
                            Outgoing::Plain(b) => (None, b),
                            Outgoing::Numbered(seq, b) => (Some(seq), b),
                        };
                        got.push(Frame {
                            to: t.clone(),
                            message: message.clone(),
                            seq,
                            bytes,
                        });
                    },
                );
                d.frames.extend(got);
            }
            SessionAction::Close {
                transport,
                code,
                reason,
                ..
            } => d.closes.push((transport, code, reason)),
            SessionAction::TokenEnded { token, why } => d.tokens.push((token, why)),
            SessionAction::Ended => d.ended = true,
            SessionAction::MediaToken { .. } | SessionAction::MemberGone { .. } => {}
        }
    }
    d
}

fn full(s: &mut S) -> Drained {
    let mut n = 0;
    drain_full(s, &mut n)
}

fn status_of(s: &S, id: &str) -> Option<ConnectionStatus> {
    s.member_infos()
        .into_iter()
        .find(|m| m.id == id)
        .map(|m| m.connection_status)
}

fn updated_status(f: &Frame) -> Option<(String, ConnectionStatus)> {
    match &f.message {
        ServerMessage::MemberUpdated { member } => {
            Some((member.id.clone(), member.connection_status))
        }
        _ => None,
    }
}

fn resume_ok(s: &mut S, now: Now, id: &str, last_seq: u64, socket: u64) -> Resumption<String> {
    s.handle_resume(
        now,
        id,
        &format!("T-{id}"),
        last_seq,
        socket,
        format!("t-{id}@{socket}"),
    )
    .map_err(|(e, _)| e)
    .unwrap()
}

fn resume_err(s: &mut S, now: Now, id: &str, last_seq: u64, socket: u64) -> ResumeRefusal {
    match s.handle_resume(
        now,
        id,
        &format!("T-{id}"),
        last_seq,
        socket,
        format!("t-{id}@{socket}"),
    ) {
        Ok(_) => panic!("resume of {id} from {last_seq} succeeded"),
        Err((refusal, transport)) => {
            assert_eq!(transport, format!("t-{id}@{socket}"), "handed back");
            refusal
        }
    }
}

/// The default session (host `h`, client `c1`, both resumable) with a plain client `p`.
fn with_plain(window: Duration) -> S {
    let mut s = session(window, ReplayLimits::default());
    join_with(
        &mut s,
        t0(),
        "p",
        DeviceType::Client,
        "t-p",
        false,
        Dialect::LoudSync,
    )
    .unwrap();
    drain(&mut s);
    s
}

#[test]
fn a_plain_member_leaves_at_once_even_with_a_window() {
    let t = t0();
    let mut s = with_plain(W);
    s.handle_socket_detach(t, "p", 1, LeaveReason::Error, false);
    let d = full(&mut s);
    assert_eq!(d.left(), [("p".to_string(), LeaveReason::Error)]);
    assert!(d.tokens.is_empty(), "a plain member has no token");
    assert_eq!(
        d.closes,
        [("t-p".to_string(), 1000, "disconnected".to_string())]
    );
    assert_eq!(s.poll_timeout(), None, "nothing held");
    assert_eq!(status_of(&s, "p"), None);
    // A plain host ends the session at once.
    let mut s: S = Session::new(
        SessionSpec {
            id: "s1".into(),
            name: "n".into(),
            max_members: 10,
            access: Access::default(),
        },
        SessionConfig {
            detach_hold: W,
            ..SessionConfig::default()
        },
    );
    join_with(
        &mut s,
        t,
        "h",
        DeviceType::Host,
        "t-h",
        false,
        Dialect::LoudSync,
    )
    .unwrap();
    join_with(
        &mut s,
        t,
        "c1",
        DeviceType::Client,
        "t-c1",
        true,
        Dialect::LoudSync,
    )
    .unwrap();
    drain(&mut s);
    s.handle_socket_detach(t, "h", 1, LeaveReason::Error, false);
    let d = full(&mut s);
    assert!(d.ended);
    assert!(matches!(
        &d.to("t-c1")[0].message,
        ServerMessage::SessionClosed { reason } if reason == "Host disconnected"
    ));
    assert_eq!(
        d.tokens,
        [("T-c1".to_string(), ResumeFailure::SessionClosed)]
    );
}

#[test]
fn with_no_window_a_resumable_member_leaves_at_once() {
    let t = t0();
    let mut s = session(Duration::ZERO, ReplayLimits::default());
    s.handle_socket_detach(t, "c1", 1, LeaveReason::Error, false);
    let d = full(&mut s);
    assert_eq!(d.left(), [("c1".to_string(), LeaveReason::Error)]);
    assert_eq!(
        d.tokens,
        [("T-c1".to_string(), ResumeFailure::UnknownToken)]
    );
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn a_fatal_detach_ends_the_place_at_once_and_forgets_the_token() {
    let t = t0();
    let mut s = session(W, ReplayLimits::default());
    s.handle_socket_detach(t, "c1", 1, LeaveReason::Error, true);
    let d = full(&mut s);
    assert_eq!(d.left(), [("c1".to_string(), LeaveReason::Error)]);
    assert_eq!(d.kinds_to("t-h"), ["member_left"]);
    assert_eq!(d.to("t-h")[0].seq, Some(3), "numbered to the host");
    assert_eq!(
        d.tokens,
        [("T-c1".to_string(), ResumeFailure::UnknownToken)]
    );
    assert_eq!(s.poll_timeout(), None, "nothing held");
    assert_eq!(
        resume_err(&mut s, t, "c1", 1, 2),
        ResumeRefusal::Failed(ResumeFailure::UnknownToken)
    );
}

#[test]
fn the_window_ends_with_member_left_timeout_and_an_expired_token() {
    let t = t0();
    let mut s = session(W, ReplayLimits::default());
    s.handle_socket_detach(t, "c1", 1, LeaveReason::Error, false);
    let d = full(&mut s);
    assert_eq!(
        d.to("t-h")
            .iter()
            .filter_map(|f| updated_status(f))
            .collect::<Vec<_>>(),
        [("c1".to_string(), ConnectionStatus::Reconnecting)]
    );
    assert!(d.left().is_empty(), "no member_left before the window ends");
    // The place counts, is listed reconnecting, and may be messaged meanwhile.
    assert_eq!(s.member_count(), 2);
    s.handle_timeout(t.plus(secs(29)));
    assert!(full(&mut s).frames.is_empty());
    s.handle_timeout(t.plus(secs(31)));
    let d = full(&mut s);
    assert_eq!(d.left(), [("c1".to_string(), LeaveReason::Timeout)]);
    assert_eq!(d.tokens, [("T-c1".to_string(), ResumeFailure::Expired)]);
    assert!(d.closes.is_empty());
    assert_eq!(s.member_count(), 1);
    assert!(!s.is_ended());
    // A later resume of the place finds nothing (the server's token table says `expired`).
    assert_eq!(
        resume_err(&mut s, t.plus(secs(32)), "c1", 0, 2),
        ResumeRefusal::Failed(ResumeFailure::UnknownToken)
    );
    s.handle_timeout(t.plus(secs(60)));
    assert!(full(&mut s).frames.is_empty(), "it ends once");
}

#[test]
fn the_hosts_window_end_closes_the_session_host_timed_out() {
    let t = t0();
    let mut s = session(W, ReplayLimits::default());
    join_with(
        &mut s,
        t,
        "c2",
        DeviceType::Client,
        "t-c2",
        false,
        Dialect::LoudSync,
    )
    .unwrap();
    drain(&mut s);
    s.handle_socket_detach(t, "h", 1, LeaveReason::Timeout, false);
    let d = full(&mut s);
    assert_eq!(
        d.to("t-c1")
            .iter()
            .filter_map(|f| updated_status(f))
            .collect::<Vec<_>>(),
        [("h".to_string(), ConnectionStatus::Reconnecting)]
    );
    assert!(!s.is_ended(), "the session stays open through the window");
    assert_eq!(s.host_id(), Some("h"));
    s.handle_timeout(t.plus(W));
    let d = full(&mut s);
    assert!(d.ended);
    for t in ["t-c1", "t-c2"] {
        let to = d.to(t);
        assert_eq!(to.len(), 1, "{t}: {to:?}");
        assert!(matches!(
            &to[0].message,
            ServerMessage::SessionClosed { reason } if reason == "Host timed out"
        ));
    }
    assert!(d.to("t-c1")[0].seq.is_some(), "numbered to resumable c1");
    assert_eq!(d.to("t-c2")[0].seq, None, "plain to c2");
    let mut tokens = d.tokens.clone();
    tokens.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        tokens,
        [
            ("T-c1".to_string(), ResumeFailure::SessionClosed),
            ("T-h".to_string(), ResumeFailure::Expired)
        ]
    );
    let mut closed: Vec<_> = d.closes.iter().map(|c| c.0.as_str()).collect();
    closed.sort();
    assert_eq!(closed, ["t-c1", "t-c2"]);
    assert_eq!(
        resume_err(&mut s, t.plus(W), "c1", 0, 2),
        ResumeRefusal::Failed(ResumeFailure::SessionClosed)
    );
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn the_host_resuming_in_time_keeps_the_session() {
    let t = t0();
    let mut s = session(W, ReplayLimits::default());
    s.handle_socket_detach(t, "h", 1, LeaveReason::Error, false);
    drain(&mut s);
    let r = resume_ok(&mut s, t.plus(secs(29)), "h", 2, 2);
    assert!(r.replay.is_empty());
    let d = full(&mut s);
    assert_eq!(
        d.to("t-c1")
            .iter()
            .filter_map(|f| updated_status(f))
            .collect::<Vec<_>>(),
        [("h".to_string(), ConnectionStatus::Connected)]
    );
    s.handle_timeout(t.plus(secs(31)));
    assert!(full(&mut s).frames.is_empty());
    assert!(!s.is_ended());
    assert_eq!(s.host_id(), Some("h"));
}

#[test]
fn messages_to_an_away_member_are_buffered_and_replayed_byte_identical_in_order() {
    let t = t0();
    let mut s = with_plain(W);
    let mut n = 0;
    s.handle_socket_detach(t, "c1", 1, LeaveReason::Error, false);
    let d = drain_full(&mut s, &mut n);
    // h got member_list #1, member_joined(c1) #2, member_joined(p) #3, member_updated #4.
    assert_eq!(d.to("t-h")[0].seq, Some(4));
    let mut sent: Vec<Frame> = Vec::new();
    for (from, data, to) in [
        ("h", "1", None),
        ("p", "2", Some("c1")),
        ("h", "3", Some("c1")),
        ("p", "4", None),
    ] {
        s.handle_command(t, from, message(data, to));
        let d = drain_full(&mut s, &mut n);
        assert!(d.to("t-c1").is_empty(), "c1 is away: nothing delivered");
        // Each message was delivered to the other connected recipients.
        if to.is_none() {
            assert!(!d.frames.is_empty());
        }
        sent.extend(d.frames);
    }
    // c1 had member_list #1 and member_joined(p) #2 before the drop.
    let r = resume_ok(&mut s, t.plus(secs(5)), "c1", 2, 2);
    assert_eq!(r.last_in, 0);
    assert!(r.replaced.is_none());
    assert_eq!(
        r.replay.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        [3, 4, 5, 6]
    );
    // Byte-identical to what the other recipient of each broadcast got (the same bytes):
    // h's "1" went to p too, p's "4" to h.
    let to_p = sent.iter().find(|f| f.to == "t-p").unwrap();
    assert_eq!(r.replay[0].1, to_p.bytes);
    assert_eq!(
        r.replay[0].1.as_ptr(),
        to_p.bytes.as_ptr(),
        "the same shared Bytes"
    );
    let to_h = sent.iter().find(|f| f.to == "t-h").unwrap();
    assert_eq!(r.replay[3].1, to_h.bytes);
    assert_eq!(r.replay[3].1.as_ptr(), to_h.bytes.as_ptr());
    assert_eq!(
        sent.len(),
        2,
        "the others got only what was addressed to them"
    );
    // The replay stays until acknowledged: a client that lost it resumes from the same
    // lastSeq and gets the same bytes again, with their original seq, then #7, sent while
    // away again (member_updated is never sent to the member it describes).
    s.handle_socket_detach(t.plus(secs(6)), "c1", 2, LeaveReason::Error, false);
    drain(&mut s);
    s.handle_command(t, "p", message("6", Some("c1")));
    drain(&mut s);
    let again = resume_ok(&mut s, t.plus(secs(7)), "c1", 2, 3);
    assert_eq!(
        again.replay.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        [3, 4, 5, 6, 7]
    );
    for (a, b) in r.replay.iter().zip(again.replay.iter()) {
        assert_eq!(a, b);
        assert_eq!(a.1.as_ptr(), b.1.as_ptr());
    }
    // Numbering continues after the replay on the new transport.
    s.handle_command(t, "h", message("5", Some("c1")));
    let d = drain_full(&mut s, &mut n);
    assert_eq!(d.to("t-c1@3")[0].seq, Some(8));
    // A lastSeq below what the last resume acknowledged cannot be replayed.
    s.handle_socket_detach(t.plus(secs(8)), "c1", 3, LeaveReason::Error, false);
    drain(&mut s);
    assert_eq!(
        resume_err(&mut s, t.plus(secs(9)), "c1", 1, 4),
        ResumeRefusal::Failed(ResumeFailure::BufferOverflow)
    );
}

#[test]
fn a_resume_of_a_held_place_tells_the_others_connected() {
    let t = t0();
    let mut s = with_plain(W);
    s.handle_socket_detach(t, "c1", 1, LeaveReason::Error, false);
    drain(&mut s);
    assert_eq!(status_of(&s, "c1"), Some(ConnectionStatus::Reconnecting));
    let r = resume_ok(&mut s, t, "c1", 2, 2);
    assert!(r.replaced.is_none());
    let d = full(&mut s);
    for to in ["t-h", "t-p"] {
        assert_eq!(
            d.to(to)
                .iter()
                .filter_map(|f| updated_status(f))
                .collect::<Vec<_>>(),
            [("c1".to_string(), ConnectionStatus::Connected)],
            "{to}"
        );
    }
    assert!(
        d.to("t-c1@2").is_empty(),
        "never to the member it describes"
    );
    assert_eq!(status_of(&s, "c1"), Some(ConnectionStatus::Connected));
    assert_eq!(s.poll_timeout(), None);
    s.handle_timeout(t.plus(W));
    assert!(full(&mut s).frames.is_empty(), "the window is over");
}

#[test]
fn a_resume_of_a_still_attached_place_replaces_the_transport_silently() {
    let t = t0();
    let mut s = session(W, ReplayLimits::default());
    let r = resume_ok(&mut s, t, "c1", 1, 2);
    assert_eq!(r.replaced.as_deref(), Some("t-c1"), "close it with 4000");
    assert!(r.replay.is_empty());
    assert!(full(&mut s).frames.is_empty(), "no member_updated");
    assert_eq!(status_of(&s, "c1"), Some(ConnectionStatus::Connected));
    // The old socket's late detach and its commands are ignored.
    s.handle_socket_detach(t, "c1", 1, LeaveReason::Error, false);
    s.handle_socket_detach(t, "c1", 1, LeaveReason::Error, true);
    s.handle_numbered(t, "c1", 1, Some(1), message("1", None));
    s.handle_numbered(t, "c1", 1, None, MemberCommand::Leave);
    s.handle_numbered(t, "c1", 1, None, MemberCommand::Ack(1));
    assert!(full(&mut s).frames.is_empty());
    assert_eq!(status_of(&s, "c1"), Some(ConnectionStatus::Connected));
    assert_eq!(s.poll_timeout(), None);
    // The new socket's are not.
    s.handle_numbered(t, "c1", 2, Some(1), message("1", None));
    let d = full(&mut s);
    assert_eq!(d.kinds_to("t-h"), ["message"]);
    // A resume racing it: the one processed last wins; the second replaces the first.
    let r2 = resume_ok(&mut s, t, "c1", 1, 3);
    assert_eq!(r2.replaced.as_deref(), Some("t-c1@2"));
    assert_eq!(r2.last_in, 1);
    s.handle_socket_detach(t, "c1", 2, LeaveReason::Error, false);
    s.handle_numbered(t, "c1", 2, Some(2), message("2", None));
    assert!(full(&mut s).frames.is_empty());
    s.handle_command(t, "h", message("9", Some("c1")));
    let d = full(&mut s);
    assert_eq!(d.to("t-c1@3").len(), 1, "only the last transport gets it");
    assert!(d.to("t-c1@2").is_empty() && d.to("t-c1").is_empty());
}

#[test]
fn a_late_detach_of_the_old_socket_after_a_resume_from_away_is_ignored() {
    let t = t0();
    let mut s = session(W, ReplayLimits::default());
    s.handle_socket_detach(t, "c1", 1, LeaveReason::Error, false);
    drain(&mut s);
    resume_ok(&mut s, t, "c1", 1, 2);
    drain(&mut s);
    s.handle_socket_detach(t, "c1", 1, LeaveReason::Timeout, false);
    assert!(full(&mut s).frames.is_empty());
    assert_eq!(status_of(&s, "c1"), Some(ConnectionStatus::Connected));
    // The window of the first drop does not end the resumed place.
    s.handle_timeout(t.plus(W));
    assert!(full(&mut s).frames.is_empty());
    // A second drop starts a new window from its own time.
    s.handle_socket_detach(t.plus(secs(10)), "c1", 2, LeaveReason::Error, false);
    drain(&mut s);
    assert_eq!(s.poll_timeout(), Some(t.plus(secs(40)).instant));
    // A detach of an away place changes nothing.
    s.handle_socket_detach(t.plus(secs(20)), "c1", 2, LeaveReason::Error, false);
    assert!(full(&mut s).frames.is_empty());
    assert_eq!(s.poll_timeout(), Some(t.plus(secs(40)).instant));
}

#[test]
fn handle_numbered_processes_each_seq_once_and_a_resume_reports_the_last() {
    let t = t0();
    let mut s = session(W, ReplayLimits::default());
    s.handle_numbered(t, "c1", 1, Some(1), message("1", None));
    s.handle_numbered(t, "c1", 1, Some(2), message("2", None));
    s.handle_numbered(t, "c1", 1, Some(2), message("2", None));
    s.handle_numbered(t, "c1", 1, Some(1), message("1", None));
    // Unnumbered commands (acks, reports, latency) pass without touching the numbering.
    s.handle_numbered(t, "c1", 1, None, MemberCommand::Latency(12));
    let d = full(&mut s);
    assert_eq!(
        d.kinds_to("t-h"),
        ["message", "message"],
        "duplicates dropped"
    );
    s.handle_socket_detach(t, "c1", 1, LeaveReason::Error, false);
    drain(&mut s);
    let r = resume_ok(&mut s, t, "c1", 1, 2);
    assert_eq!(r.last_in, 2);
    // The client resends 2 and 3: 2 is a duplicate.
    s.handle_numbered(t, "c1", 2, Some(2), message("2", None));
    s.handle_numbered(t, "c1", 2, Some(3), message("3", None));
    let d = full(&mut s);
    assert_eq!(d.kinds_to("t-h"), ["member_updated", "message"]);
    let r = resume_ok(&mut s, t, "c1", 1, 3);
    assert_eq!(r.last_in, 3);
    // A refused frame's report still uses up its seq.
    s.handle_numbered(
        t,
        "c1",
        3,
        Some(4),
        MemberCommand::Report(Box::new(ServerMessage::error(ErrorCode::TooLarge, "big"))),
    );
    let d = full(&mut s);
    assert_eq!(d.kinds_to("t-c1@3"), ["error"]);
    assert_eq!(
        d.to("t-c1@3")[0].seq,
        Some(2),
        "numbered, after member_list #1"
    );
    assert_eq!(resume_ok(&mut s, t, "c1", 2, 4).last_in, 4);
}

#[test]
fn an_ack_trims_the_buffer_and_one_above_sent_is_an_error() {
    let t = t0();
    let mut s = session(W, ReplayLimits::default());
    for i in 0..4 {
        s.handle_command(t, "h", message(&i.to_string(), Some("c1")));
    }
    drain(&mut s);
    // c1: member_list #1, messages #2..#5.
    s.handle_numbered(t, "c1", 1, None, MemberCommand::Ack(3));
    assert!(full(&mut s).frames.is_empty());
    s.handle_numbered(t, "c1", 1, None, MemberCommand::Ack(2));
    assert!(
        full(&mut s).frames.is_empty(),
        "an older ack changes nothing"
    );
    s.handle_numbered(t, "c1", 1, None, MemberCommand::Ack(9));
    let d = full(&mut s);
    let to = d.to("t-c1");
    assert_eq!(to.len(), 1);
    assert!(matches!(
        &to[0].message,
        ServerMessage::Error { code: ErrorCode::InvalidMessage, message, .. } if message.contains('9') && message.contains('5')
    ));
    assert_eq!(to[0].seq, Some(6), "the error is numbered too");
    s.handle_socket_detach(t, "c1", 1, LeaveReason::Error, false);
    drain(&mut s);
    // From the ack on: the replay starts after what the client has.
    let r = resume_ok(&mut s, t, "c1", 3, 2);
    assert_eq!(
        r.replay.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        [4, 5, 6]
    );
    // The resume's lastSeq acknowledged up to 3 too; lastSeq 5 then trims further.
    s.handle_socket_detach(t, "c1", 2, LeaveReason::Error, false);
    drain(&mut s);
    let r = resume_ok(&mut s, t, "c1", 5, 3);
    assert_eq!(
        r.replay.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        [6]
    );
    // An ack from a plain member is invalid.
    let mut s = with_plain(W);
    s.handle_command(t, "p", MemberCommand::Ack(1));
    let d = full(&mut s);
    assert_eq!(d.kinds_to("t-p"), ["error"]);
}

#[test]
fn a_last_seq_above_sent_is_refused_and_the_place_stays_held() {
    let t = t0();
    let mut s = session(W, ReplayLimits::default());
    s.handle_socket_detach(t, "c1", 1, LeaveReason::Error, false);
    drain(&mut s);
    assert_eq!(
        resume_err(&mut s, t.plus(secs(5)), "c1", 2, 2),
        ResumeRefusal::AboveSent { last_sent: 1 }
    );
    let d = full(&mut s);
    assert!(d.frames.is_empty() && d.tokens.is_empty());
    assert_eq!(status_of(&s, "c1"), Some(ConnectionStatus::Reconnecting));
    assert_eq!(
        s.poll_timeout(),
        Some(t.plus(W).instant),
        "the window is unchanged"
    );
    let r = resume_ok(&mut s, t.plus(secs(6)), "c1", 1, 3);
    assert!(r.replay.is_empty());
    // On a connected place too: nothing is replaced.
    assert_eq!(
        resume_err(&mut s, t.plus(secs(7)), "c1", 50, 4),
        ResumeRefusal::AboveSent { last_sent: 1 }
    );
    s.handle_command(t, "h", message("1", Some("c1")));
    assert_eq!(full(&mut s).to("t-c1@3").len(), 1, "still on socket 3");
}

#[test]
fn a_last_seq_below_what_was_acknowledged_ends_the_place_buffer_overflow() {
    let t = t0();
    let mut s = session(W, ReplayLimits::default());
    for i in 0..3 {
        s.handle_command(t, "h", message(&i.to_string(), Some("c1")));
    }
    drain(&mut s);
    s.handle_numbered(t, "c1", 1, None, MemberCommand::Ack(3));
    s.handle_socket_detach(t, "c1", 1, LeaveReason::Error, false);
    drain(&mut s);
    assert_eq!(
        resume_err(&mut s, t, "c1", 2, 2),
        ResumeRefusal::Failed(ResumeFailure::BufferOverflow)
    );
    let d = full(&mut s);
    assert_eq!(d.left(), [("c1".to_string(), LeaveReason::Error)]);
    assert_eq!(
        d.tokens,
        [("T-c1".to_string(), ResumeFailure::BufferOverflow)]
    );
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(s.member_count(), 1);
}

#[test]
fn overflow_while_away_ends_the_place() {
    let t = t0();
    let limits = ReplayLimits {
        messages: 3,
        bytes: 1 << 20,
    };
    let mut s = session(W, limits);
    // c1 holds member_list #1 (unacknowledged).
    s.handle_socket_detach(t, "c1", 1, LeaveReason::Error, false);
    drain(&mut s);
    // The host acknowledges what it has (member_list, member_joined, member_updated), so the
    // member_left to come fits its own buffer.
    s.handle_numbered(t, "h", 1, None, MemberCommand::Ack(3));
    s.handle_command(t, "h", message("1", Some("c1")));
    s.handle_command(t, "h", message("2", Some("c1")));
    let d = full(&mut s);
    assert!(d.left().is_empty() && d.tokens.is_empty(), "3 fit");
    s.handle_command(t, "h", message("3", Some("c1")));
    let d = full(&mut s);
    assert_eq!(d.left(), [("c1".to_string(), LeaveReason::Error)]);
    assert_eq!(
        d.tokens,
        [("T-c1".to_string(), ResumeFailure::BufferOverflow)]
    );
    assert!(d.closes.is_empty(), "no transport to close");
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(
        resume_err(&mut s, t, "c1", 1, 2),
        ResumeRefusal::Failed(ResumeFailure::UnknownToken),
        "the place is gone (the server's table answers buffer_overflow)"
    );
}

#[test]
fn overflow_by_bytes_while_away_ends_the_place() {
    let t = t0();
    let mut s = session(
        W,
        ReplayLimits {
            messages: 1000,
            bytes: 200,
        },
    );
    s.handle_socket_detach(t, "c1", 1, LeaveReason::Error, false);
    drain(&mut s);
    let mut n = 0;
    let mut ended = None;
    for i in 0..100 {
        s.handle_command(t, "h", message(&i.to_string(), Some("c1")));
        let d = drain_full(&mut s, &mut n);
        if !d.tokens.is_empty() {
            ended = Some((i, d.tokens.clone()));
            break;
        }
    }
    let (i, tokens) = ended.expect("the byte bound is reached");
    assert!(i > 2, "a few fit first ({i})");
    assert_eq!(
        tokens,
        [("T-c1".to_string(), ResumeFailure::BufferOverflow)]
    );
}

#[test]
fn overflow_while_connected_closes_with_1008() {
    let t = t0();
    let limits = ReplayLimits {
        messages: 3,
        bytes: 1 << 20,
    };
    let mut s = session(W, limits);
    s.handle_command(t, "h", message("1", Some("c1")));
    s.handle_command(t, "h", message("2", Some("c1")));
    let d = full(&mut s);
    assert_eq!(d.to("t-c1").len(), 2);
    // Acks keep it going.
    s.handle_numbered(t, "c1", 1, None, MemberCommand::Ack(3));
    for i in 0..3 {
        s.handle_command(t, "h", message(&i.to_string(), Some("c1")));
    }
    let d = full(&mut s);
    assert!(d.closes.is_empty());
    assert_eq!(d.to("t-c1").len(), 3);
    // Without acks it overflows.
    s.handle_command(t, "h", message("\"x\"", Some("c1")));
    let d = full(&mut s);
    assert!(d
        .to("t-c1")
        .iter()
        .all(|f| f.message.type_name() != "message"));
    assert_eq!(
        d.closes,
        [(
            "t-c1".to_string(),
            1008,
            "resume buffer overflow".to_string()
        )]
    );
    assert_eq!(d.left(), [("c1".to_string(), LeaveReason::Error)]);
    assert_eq!(
        d.tokens,
        [("T-c1".to_string(), ResumeFailure::BufferOverflow)]
    );
    // Its late detach changes nothing.
    s.handle_socket_detach(t, "c1", 1, LeaveReason::Error, false);
    assert!(full(&mut s).frames.is_empty());
}

#[test]
fn a_kick_of_an_away_member_forgets_its_token() {
    let t = t0();
    let mut s = session(W, ReplayLimits::default());
    s.handle_socket_detach(t, "c1", 1, LeaveReason::Error, false);
    drain(&mut s);
    s.handle_command(
        t,
        "h",
        MemberCommand::Kick {
            member_id: "c1".into(),
            reason: None,
        },
    );
    let d = full(&mut s);
    assert_eq!(d.left(), [("c1".to_string(), LeaveReason::Kicked)]);
    assert_eq!(
        d.tokens,
        [("T-c1".to_string(), ResumeFailure::UnknownToken)]
    );
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(
        resume_err(&mut s, t, "c1", 1, 2),
        ResumeRefusal::Failed(ResumeFailure::UnknownToken)
    );
}

#[test]
fn a_leave_forgets_the_token() {
    let t = t0();
    let mut s = session(W, ReplayLimits::default());
    s.handle_numbered(t, "c1", 1, None, MemberCommand::Leave);
    let d = full(&mut s);
    assert_eq!(d.left(), [("c1".to_string(), LeaveReason::Left)]);
    assert_eq!(d.closes, [("t-c1".to_string(), 1000, "left".to_string())]);
    assert_eq!(
        d.tokens,
        [("T-c1".to_string(), ResumeFailure::UnknownToken)]
    );
}

#[test]
fn a_session_closed_while_away_ends_the_token_session_closed() {
    let t = t0();
    let mut s = session(W, ReplayLimits::default());
    s.handle_socket_detach(t, "c1", 1, LeaveReason::Error, false);
    drain(&mut s);
    s.handle_close(t, "Session deleted", 1001);
    let d = full(&mut s);
    assert!(d.ended);
    let mut tokens = d.tokens.clone();
    tokens.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        tokens,
        [
            ("T-c1".to_string(), ResumeFailure::SessionClosed),
            ("T-h".to_string(), ResumeFailure::SessionClosed)
        ]
    );
    assert_eq!(d.closes.len(), 1, "only the host had a transport");
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(
        resume_err(&mut s, t, "c1", 1, 2),
        ResumeRefusal::Failed(ResumeFailure::SessionClosed)
    );
}

#[test]
fn joins_meet_the_held_place() {
    let t = t0();
    let mut s = session(W, ReplayLimits::default());
    s.handle_socket_detach(t, "c1", 1, LeaveReason::Error, false);
    s.handle_socket_detach(t, "h", 1, LeaveReason::Error, false);
    drain(&mut s);
    // The same device again, plain: already_joined (the SDK resumes instead).
    let joiner = Joiner {
        transport: "t-x".to_string(),
        dialect: Dialect::LoudSync,
        address: "127.0.0.1".into(),
        credentials: Credentials::default(),
        socket: 9,
        resume_token: None,
    };
    let err = s
        .handle_join(
            t,
            "c1b".into(),
            &join("dev-c1", DeviceType::Client),
            joiner.clone(),
        )
        .map_err(|(e, _)| e)
        .unwrap_err();
    assert!(matches!(err, JoinError::AlreadyJoined { .. }), "{err:?}");
    // Another host while the host is away: unauthorized.
    let err = s
        .handle_join(t, "h2".into(), &join("dev-h2", DeviceType::Host), joiner)
        .map_err(|(e, _)| e)
        .unwrap_err();
    assert!(matches!(err, JoinError::HostTaken { .. }), "{err:?}");
    assert_eq!(
        err.to_message(),
        JoinError::HostTaken {
            session: "s1".into()
        }
        .to_message()
    );
    assert!(full(&mut s).frames.is_empty());
}

#[test]
fn an_away_member_counts_toward_max_members() {
    let t = t0();
    let mut s: S = Session::new(
        SessionSpec {
            id: "s1".into(),
            name: "n".into(),
            max_members: 2,
            access: Access::default(),
        },
        SessionConfig {
            detach_hold: W,
            ..SessionConfig::default()
        },
    );
    join_member(&mut s, t, "h", DeviceType::Host, true);
    join_member(&mut s, t, "c1", DeviceType::Client, true);
    s.handle_socket_detach(t, "c1", 1, LeaveReason::Error, false);
    drain(&mut s);
    let err = join_with(
        &mut s,
        t,
        "c2",
        DeviceType::Client,
        "t-c2",
        true,
        Dialect::LoudSync,
    )
    .unwrap_err();
    assert!(matches!(err, JoinError::Full { .. }), "{err:?}");
    // Its window's end frees the place.
    s.handle_timeout(t.plus(W));
    drain(&mut s);
    join_with(
        &mut s,
        t,
        "c2",
        DeviceType::Client,
        "t-c2",
        true,
        Dialect::LoudSync,
    )
    .unwrap();
}

#[test]
fn app_members_get_a_member_list_instead_of_member_updated() {
    let t = t0();
    let mut s = session(W, ReplayLimits::default());
    join_with(
        &mut s,
        t,
        "a",
        DeviceType::Client,
        "t-a",
        false,
        Dialect::App,
    )
    .unwrap();
    drain(&mut s);
    s.handle_socket_detach(t, "c1", 1, LeaveReason::Error, false);
    let d = full(&mut s);
    assert_eq!(d.kinds_to("t-h"), ["member_updated"]);
    assert_eq!(d.kinds_to("t-a"), ["member_list"]);
    match &d.to("t-a")[0].message {
        ServerMessage::MemberList { members } => {
            let c1 = members.iter().find(|m| m.id == "c1").unwrap();
            assert_eq!(c1.connection_status, ConnectionStatus::Reconnecting);
            assert_eq!(members.len(), 3, "the away member is listed");
        }
        _ => unreachable!(),
    }
    assert_eq!(d.to("t-a")[0].seq, None, "the app is never numbered");
    resume_ok(&mut s, t, "c1", 1, 2);
    let d = full(&mut s);
    assert_eq!(d.kinds_to("t-h"), ["member_updated"]);
    assert_eq!(d.kinds_to("t-a"), ["member_list"]);
    match &d.to("t-a")[0].message {
        ServerMessage::MemberList { members } => assert!(members
            .iter()
            .all(|m| m.connection_status == ConnectionStatus::Connected)),
        _ => unreachable!(),
    }
    // The window's end reaches it as member_left timeout.
    s.handle_socket_detach(t, "c1", 2, LeaveReason::Error, false);
    drain(&mut s);
    s.handle_timeout(t.plus(W));
    let d = full(&mut s);
    assert_eq!(d.kinds_to("t-a"), ["member_left"]);
    assert_eq!(d.left(), [("c1".to_string(), LeaveReason::Timeout)]);
    // An app member's own drop ends its place at once.
    s.handle_socket_detach(t, "a", 1, LeaveReason::Error, false);
    let d = full(&mut s);
    assert_eq!(d.left(), [("a".to_string(), LeaveReason::Error)]);
}

#[test]
fn a_resume_with_a_wrong_token_or_member_is_unknown() {
    let t = t0();
    let mut s = session(W, ReplayLimits::default());
    s.handle_socket_detach(t, "c1", 1, LeaveReason::Error, false);
    drain(&mut s);
    let refused = s
        .handle_resume(t, "c1", "T-h", 1, 2, "x".into())
        .map_err(|(e, _)| e)
        .unwrap_err();
    assert_eq!(refused, ResumeRefusal::Failed(ResumeFailure::UnknownToken));
    let refused = s
        .handle_resume(t, "nobody", "T-c1", 1, 2, "x".into())
        .map_err(|(e, _)| e)
        .unwrap_err();
    assert_eq!(refused, ResumeRefusal::Failed(ResumeFailure::UnknownToken));
    assert_eq!(status_of(&s, "c1"), Some(ConnectionStatus::Reconnecting));
    // A plain member cannot be resumed.
    let mut s = with_plain(W);
    let refused = s
        .handle_resume(t, "p", "T-p", 0, 2, "x".into())
        .map_err(|(e, _)| e)
        .unwrap_err();
    assert_eq!(refused, ResumeRefusal::Failed(ResumeFailure::UnknownToken));
}

#[test]
fn a_resume_racing_the_windows_end_never_gives_a_stale_member_left() {
    let t = t0();
    // Resumed at the last moment before the deadline: the deadline passes without effect.
    let mut s = session(W, ReplayLimits::default());
    s.handle_socket_detach(t, "c1", 1, LeaveReason::Error, false);
    drain(&mut s);
    resume_ok(&mut s, t.plus(W - Duration::from_millis(1)), "c1", 1, 2);
    drain(&mut s);
    s.handle_timeout(t.plus(W));
    assert!(full(&mut s).left().is_empty());
    // Processed after the deadline's timeout: the place is gone, the resume is refused.
    let mut s = session(W, ReplayLimits::default());
    s.handle_socket_detach(t, "c1", 1, LeaveReason::Error, false);
    drain(&mut s);
    s.handle_timeout(t.plus(W));
    assert_eq!(
        full(&mut s).left(),
        [("c1".to_string(), LeaveReason::Timeout)]
    );
    assert_eq!(
        resume_err(&mut s, t.plus(W), "c1", 1, 2),
        ResumeRefusal::Failed(ResumeFailure::UnknownToken)
    );
}

/// The proptest's model of one member's client.
#[derive(Debug)]
struct ModelClient {
    id: &'static str,
    resumable: bool,
    /// The place still exists (as far as the session told).
    live: bool,
    /// The session has a transport for it.
    connected: bool,
    socket: u64,
    /// Sockets it had before (their late inputs must be ignored).
    old_sockets: Vec<u64>,
    /// The next server seq the client must read: every seq below it was read exactly once.
    expect: u64,
    /// Numbered frames on the wire to the current socket, not read yet.
    inflight: VecDeque<(u64, Bytes)>,
    /// The bytes of every seq seen so far (delivered or replayed), for byte identity.
    seen: std::collections::HashMap<u64, Bytes>,
    /// The next client seq it sends.
    next_out: u64,
}

impl ModelClient {
    fn transport(&self) -> String {
        format!("t-{}@{}", self.id, self.socket)
    }
    /// Reads `n` of the frames on the wire (all if `None`): each must be the next seq.
    fn read(&mut self, n: Option<usize>) -> Result<(), String> {
        let n = n.unwrap_or(self.inflight.len()).min(self.inflight.len());
        for _ in 0..n {
            let (seq, bytes) = self.inflight.pop_front().expect("counted");
            if seq != self.expect {
                return Err(format!(
                    "{}: read seq {seq}, expected {}",
                    self.id, self.expect
                ));
            }
            if let Some(first) = self.seen.get(&seq) {
                if *first != bytes {
                    return Err(format!("{}: seq {seq} replayed with other bytes", self.id));
                }
            }
            self.seen.insert(seq, bytes);
            self.expect += 1;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// The member's current socket is gone (`fatal`: a 1009 or framing violation); or a
    /// socket it had before reports a late detach (`stale`).
    Detach {
        who: usize,
        fatal: bool,
        stale: bool,
        keep: usize,
    },
    /// The client resumes on a new socket, having read `keep` of the frames on the wire.
    Resume {
        who: usize,
        keep: usize,
    },
    /// The client reads what reached it.
    Read {
        who: usize,
    },
    /// The client acknowledges what it read.
    Ack {
        who: usize,
    },
    /// An application message, to everyone else or one member.
    Message {
        from: usize,
        to: Option<usize>,
    },
    /// An input from a socket the member no longer has.
    StaleMessage {
        from: usize,
    },
    Kick {
        who: usize,
    },
    Leave {
        who: usize,
    },
    /// Time passes; timers fire.
    Advance {
        ms: u64,
    },
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    let who = 0usize..4;
    prop_oneof![
        3 => (who.clone(), proptest::bool::weighted(0.1), proptest::bool::weighted(0.2), 0usize..4)
            .prop_map(|(who, fatal, stale, keep)| Op::Detach { who, fatal, stale, keep }),
        3 => (who.clone(), 0usize..4).prop_map(|(who, keep)| Op::Resume { who, keep }),
        3 => who.clone().prop_map(|who| Op::Read { who }),
        2 => who.clone().prop_map(|who| Op::Ack { who }),
        6 => (who.clone(), proptest::option::of(who.clone()))
            .prop_map(|(from, to)| Op::Message { from, to }),
        1 => who.clone().prop_map(|from| Op::StaleMessage { from }),
        1 => (1usize..4).prop_map(|who| Op::Kick { who }),
        1 => who.clone().prop_map(|who| Op::Leave { who }),
        2 => (0u64..40_000).prop_map(|ms| Op::Advance { ms }),
    ]
}

/// Runs `ops` on a session of a resumable host `h`, resumable `c1`, `c2` and a plain `p`,
/// checking after each: exactly one host or ended; no member_left for a member that was
/// connected unless its own socket, leave, kick or overflow ended it; every numbered frame to
/// a member reaches its client exactly once and in seq order across resumes, byte-identical
/// when replayed.
fn run_model(ops: &[Op]) -> Result<(), String> {
    let mut now = t0();
    let window = Duration::from_secs(30);
    let mut s: S = Session::new(
        SessionSpec {
            id: "s1".into(),
            name: "Model".into(),
            max_members: 10,
            access: Access::default(),
        },
        SessionConfig {
            detach_hold: window,
            replay: ReplayLimits {
                messages: 12,
                bytes: 1 << 20,
            },
            ..SessionConfig::default()
        },
    );
    let ids = ["h", "c1", "c2", "p"];
    let mut clients: Vec<ModelClient> = ids
        .iter()
        .map(|id| ModelClient {
            id,
            resumable: *id != "p",
            live: true,
            connected: true,
            socket: 1,
            old_sockets: Vec::new(),
            expect: 1,
            inflight: VecDeque::new(),
            seen: Default::default(),
            next_out: 1,
        })
        .collect();
    let mut counter = 0;
    let mut next_socket = 2;
    for (i, id) in ids.iter().enumerate() {
        let kind = if i == 0 {
            DeviceType::Host
        } else {
            DeviceType::Client
        };
        let joiner = Joiner {
            transport: clients[i].transport(),
            dialect: Dialect::LoudSync,
            address: "127.0.0.1".into(),
            credentials: Credentials::default(),
            socket: 1,
            resume_token: clients[i].resumable.then(|| format!("T-{id}")),
        };
        s.handle_join(
            now,
            id.to_string(),
            &join(&format!("dev-{id}"), kind),
            joiner,
        )
        .map_err(|(e, _)| format!("{e:?}"))?;
    }
    let mut d = drain_full(&mut s, &mut counter);
    absorb(&mut clients, &d, &s, None)?;
    for op in ops {
        let before: Vec<(String, ConnectionStatus)> = s
            .member_infos()
            .into_iter()
            .map(|m| (m.id, m.connection_status))
            .collect();
        // Who this op may legitimately end while connected.
        let mut may_end: Option<usize> = None;
        // A transport the op just took away: what the session still queues to it before it
        // notices (a host's `session_closed`) goes nowhere.
        let mut gone_transport: Option<String> = None;
        match op.clone() {
            Op::Detach {
                who,
                fatal,
                stale,
                keep,
            } => {
                let c = &mut clients[who];
                if stale {
                    if let Some(old) = c.old_sockets.last().copied() {
                        s.handle_socket_detach(now, ids[who], old, LeaveReason::Error, fatal);
                    }
                } else if c.live && c.connected {
                    c.read(Some(keep))?;
                    c.inflight.clear();
                    s.handle_socket_detach(now, ids[who], c.socket, LeaveReason::Error, fatal);
                    c.connected = false;
                    gone_transport = Some(c.transport());
                    may_end = Some(who);
                }
            }
            Op::Resume { who, keep } => {
                let c = &mut clients[who];
                if !c.resumable {
                    continue;
                }
                if c.connected {
                    c.read(Some(keep))?;
                }
                c.inflight.clear();
                let socket = next_socket;
                next_socket += 1;
                let transport = format!("t-{}@{socket}", ids[who]);
                let token = format!("T-{}", ids[who]);
                match s.handle_resume(now, ids[who], &token, c.expect - 1, socket, transport) {
                    Ok(r) => {
                        if !c.live {
                            return Err(format!("{}: resumed a place that ended", c.id));
                        }
                        let expected_replaced = c.connected.then(|| c.transport());
                        if r.replaced != expected_replaced {
                            return Err(format!(
                                "{}: replaced {:?}, expected {expected_replaced:?}",
                                c.id, r.replaced
                            ));
                        }
                        let seqs: Vec<u64> = r.replay.iter().map(|(seq, _)| *seq).collect();
                        if seqs.iter().zip(c.expect..).any(|(a, b)| *a != b) {
                            return Err(format!(
                                "{}: replay {seqs:?} does not start at {}",
                                c.id, c.expect
                            ));
                        }
                        if r.last_in != c.next_out - 1 {
                            return Err(format!(
                                "{}: last_in {} but it sent up to {}",
                                c.id,
                                r.last_in,
                                c.next_out - 1
                            ));
                        }
                        c.old_sockets.push(c.socket);
                        c.socket = socket;
                        c.connected = true;
                        c.inflight = r.replay.into_iter().collect();
                    }
                    Err((refusal, _)) => {
                        if c.live {
                            return Err(format!("{}: a live place refused: {refusal:?}", c.id));
                        }
                    }
                }
            }
            Op::Read { who } => clients[who].read(None)?,
            Op::Ack { who } => {
                let c = &clients[who];
                if c.live && c.connected && c.resumable {
                    s.handle_numbered(
                        now,
                        ids[who],
                        c.socket,
                        None,
                        MemberCommand::Ack(c.expect - 1),
                    );
                }
            }
            Op::Message { from, to } => {
                let c = &mut clients[from];
                if c.live && c.connected {
                    let seq = c.resumable.then_some(c.next_out);
                    if c.resumable {
                        c.next_out += 1;
                    }
                    // A resend of the last one too, sometimes: a duplicate, dropped.
                    let to = to.map(|t| ids[t]);
                    s.handle_numbered(now, ids[from], c.socket, seq, message("1", to));
                    if let Some(seq) = seq {
                        s.handle_numbered(now, ids[from], c.socket, Some(seq), message("1", to));
                    }
                }
            }
            Op::StaleMessage { from } => {
                let c = &clients[from];
                if let Some(old) = c.old_sockets.last().copied() {
                    s.handle_numbered(now, ids[from], old, Some(c.next_out), MemberCommand::Leave);
                    s.handle_numbered(now, ids[from], old, None, MemberCommand::Leave);
                }
            }
            Op::Kick { who } => {
                let h = &clients[0];
                if h.live && h.connected {
                    let seq = h.next_out;
                    clients[0].next_out += 1;
                    let sock = clients[0].socket;
                    s.handle_numbered(
                        now,
                        "h",
                        sock,
                        Some(seq),
                        MemberCommand::Kick {
                            member_id: ids[who].into(),
                            reason: None,
                        },
                    );
                    may_end = Some(who);
                }
            }
            Op::Leave { who } => {
                let c = &mut clients[who];
                if c.live && c.connected {
                    let seq = c.resumable.then_some(c.next_out);
                    if c.resumable {
                        c.next_out += 1;
                    }
                    s.handle_numbered(now, ids[who], c.socket, seq, MemberCommand::Leave);
                    may_end = Some(who);
                }
            }
            Op::Advance { ms } => {
                now = now.plus(Duration::from_millis(ms));
                s.handle_timeout(now);
            }
        }
        d = drain_full(&mut s, &mut counter);
        // member_left only for a member that was away, or that this op (or its overflow)
        // ended; never twice.
        for (gone, reason) in d.left() {
            let was = before.iter().find(|(id, _)| *id == gone).map(|(_, st)| *st);
            let overflowed = d
                .tokens
                .iter()
                .any(|(t, why)| *t == format!("T-{gone}") && *why == ResumeFailure::BufferOverflow);
            let ok = match was {
                None => false,
                Some(ConnectionStatus::Reconnecting) => true,
                Some(_) => may_end.map(|w| ids[w]) == Some(gone.as_str()) || overflowed,
            };
            if !ok {
                return Err(format!(
                    "member_left {gone} ({reason:?}) but it was {was:?} before {op:?}"
                ));
            }
            if reason == LeaveReason::Timeout && was != Some(ConnectionStatus::Reconnecting) {
                return Err(format!("member_left timeout for {gone}, which was {was:?}"));
            }
        }
        absorb(&mut clients, &d, &s, gone_transport.as_deref())?;
        // Exactly one host, or ended.
        let infos = s.member_infos();
        let hosts = infos.iter().filter(|m| m.is_host).count();
        if s.is_ended() {
            if !infos.is_empty() || s.host_id().is_some() {
                return Err("ended with members or a host".into());
            }
        } else if hosts != 1 || s.host_id().is_none() {
            return Err(format!("{hosts} hosts and not ended after {op:?}"));
        }
        // The session's view and the model's agree.
        for c in &clients {
            let st = infos
                .iter()
                .find(|m| m.id == c.id)
                .map(|m| m.connection_status);
            let model = match (c.live, c.connected) {
                (false, _) => None,
                (true, true) => Some(ConnectionStatus::Connected),
                (true, false) => Some(ConnectionStatus::Reconnecting),
            };
            if st != model {
                return Err(format!(
                    "{}: session says {st:?}, model {model:?} after {op:?}",
                    c.id
                ));
            }
        }
        if s.is_ended() {
            break;
        }
    }
    Ok(())
}

/// Takes what one drain handed out into the model clients.
fn absorb(
    clients: &mut [ModelClient],
    d: &Drained,
    s: &S,
    gone_transport: Option<&str>,
) -> Result<(), String> {
    for f in d
        .frames
        .iter()
        .filter(|f| Some(f.to.as_str()) != gone_transport)
    {
        let Some(c) = clients.iter_mut().find(|c| c.transport() == f.to) else {
            return Err(format!(
                "a frame to {} (not a current transport): {f:?}",
                f.to
            ));
        };
        if !c.live || !c.connected {
            return Err(format!(
                "a frame to {} while the model has it away/gone",
                c.id
            ));
        }
        match (c.resumable && f.message.is_numbered(), f.seq) {
            (true, Some(seq)) => c.inflight.push_back((seq, f.bytes.clone())),
            (false, None) => {}
            (numbered, seq) => {
                return Err(format!(
                    "{}: {} numbered {numbered} but seq {seq:?}",
                    c.id,
                    f.message.type_name()
                ))
            }
        }
    }
    for (transport, _, _) in &d.closes {
        if let Some(c) = clients.iter_mut().find(|c| c.transport() == *transport) {
            c.connected = false;
        }
    }
    for c in clients.iter_mut() {
        if c.live && !s.member_infos().iter().any(|m| m.id == c.id) {
            c.live = false;
            c.connected = false;
        }
    }
    // Every token that ended belonged to a place that is gone now.
    for (token, _) in &d.tokens {
        if let Some(c) = clients.iter().find(|c| format!("T-{}", c.id) == *token) {
            if c.live {
                return Err(format!("token {token} ended but {} is still live", c.id));
            }
        }
    }
    // The model's away state follows the session's for a detach it decided.
    for c in clients.iter_mut() {
        if let Some(m) = s.member_infos().iter().find(|m| m.id == c.id) {
            if m.connection_status == ConnectionStatus::Reconnecting && c.connected {
                return Err(format!("{} reconnecting but the model is connected", c.id));
            }
        }
    }
    Ok(())
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
    #[test]
    fn random_interleavings_keep_the_resume_invariants(ops in proptest::collection::vec(op(), 0..80)) {
        if let Err(e) = run_model(&ops) {
            proptest::prop_assert!(false, "{}", e);
        }
    }
}

#[test]
fn member_updated_carries_the_entry_as_member_list_shows_it_with_the_last_latency() {
    let t = t0();
    let mut s = session(W, ReplayLimits::default());
    s.handle_numbered(t, "c1", 1, None, MemberCommand::Latency(42));
    s.handle_socket_detach(t, "c1", 1, LeaveReason::Error, false);
    let d = full(&mut s);
    let listed = s.member_infos().into_iter().find(|m| m.id == "c1").unwrap();
    assert_eq!(listed.latency, Some(42), "the last one measured");
    assert_eq!(listed.connection_status, ConnectionStatus::Reconnecting);
    match &d.to("t-h")[0].message {
        ServerMessage::MemberUpdated { member } => assert_eq!(*member, listed),
        other => panic!("{other:?}"),
    }
    // The away member's own member_list request cannot come (no transport); the host's shows it.
    s.handle_numbered(t, "h", 1, Some(1), MemberCommand::MemberList);
    let d = full(&mut s);
    match &d.to("t-h")[0].message {
        ServerMessage::MemberList { members } => assert!(members.contains(&listed)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_message_to_an_away_member_by_id_is_accepted_and_buffered() {
    let t = t0();
    let mut s = session(W, ReplayLimits::default());
    s.handle_socket_detach(t, "c1", 1, LeaveReason::Error, false);
    drain(&mut s);
    s.handle_numbered(t, "h", 1, Some(1), message("7", Some("c1")));
    let d = full(&mut s);
    assert!(
        d.frames.is_empty(),
        "no error to the sender, nothing delivered"
    );
    let r = resume_ok(&mut s, t, "c1", 1, 2);
    assert_eq!(r.replay.len(), 1);
    assert_eq!(r.replay[0].0, 2);
}

// The host's own ways out: its token is forgotten, an overflowed host is closed as too slow.
#[test]
fn a_hosts_formal_disconnect_forgets_its_token() {
    // Issue 10: "Formal disconnect ... acts exactly as leave (... a host ends the session); a
    // later resume with that token answers unknown_token."
    let t = t0();
    let mut s = session(W, ReplayLimits::default());
    s.handle_numbered(t, "h", 1, None, MemberCommand::Leave);
    let d = full(&mut s);
    assert!(d.ended);
    let host = d.tokens.iter().find(|(tok, _)| tok == "T-h").cloned();
    assert_eq!(host, Some(("T-h".to_string(), ResumeFailure::UnknownToken)));
    assert_eq!(
        d.kinds_to("t-h"),
        ["session_closed"],
        "the host is told, like everyone (and its close follows)"
    );
}

#[test]
fn a_hosts_fatal_drop_forgets_its_token() {
    // Issue 10: "A 1009 ... or a framing violation ... ends the place at once ... (a host:
    // "Host disconnected") ... its token then answers unknown_token."
    let t = t0();
    let mut s = session(W, ReplayLimits::default());
    s.handle_socket_detach(t, "h", 1, LeaveReason::Error, true);
    let d = full(&mut s);
    assert!(d.ended);
    let host = d.tokens.iter().find(|(tok, _)| tok == "T-h").cloned();
    assert_eq!(host, Some(("T-h".to_string(), ResumeFailure::UnknownToken)));
}

#[test]
fn a_connected_hosts_overflow_closes_it_with_1008() {
    // Issue 10: "a connected member whose unacknowledged buffer exceeds either is closed with
    // 1008 (reason resume buffer overflow) and its place ends the same way."
    let t = t0();
    let mut s = session(
        W,
        ReplayLimits {
            messages: 3,
            bytes: 1 << 20,
        },
    );
    // h holds member_list #1, member_joined #2.
    s.handle_command(t, "c1", message("1", Some("h")));
    s.handle_command(t, "c1", message("2", Some("h")));
    let d = full(&mut s);
    assert!(d.ended, "the host's place ended");
    let host_close = d.closes.iter().find(|c| c.0 == "t-h").cloned();
    assert_eq!(
        host_close,
        Some((
            "t-h".to_string(),
            1008,
            "resume buffer overflow".to_string()
        ))
    );
    assert!(d
        .tokens
        .contains(&("T-h".to_string(), ResumeFailure::BufferOverflow)));
}

#[test]
fn a_media_token_reply_is_numbered_and_replayed_like_any_other() {
    let t = t0();
    let mut s = session(Duration::from_secs(30), ReplayLimits::default());
    s.handle_command(t, "c1", MemberCommand::MediaToken);
    let mut asked = None;
    while let Some(action) = s.poll_action() {
        if let SessionAction::MediaToken { member, role } = action {
            asked = Some((member, role));
        }
    }
    assert_eq!(
        asked,
        Some((
            "c1".to_string(),
            loudsync_protocol::types::MediaRole::Subscribe
        ))
    );
    let reply = ServerMessage::MediaToken {
        token: "t".repeat(43),
        role: loudsync_protocol::types::MediaRole::Subscribe,
        stream_id: "s1".into(),
        port: 9,
        expires_at: 1,
    };
    s.send_to("c1", reply.clone());
    assert_eq!(drain(&mut s), ["t-c1 media_token #2"]);
    // Lost with the socket: the resume replays it.
    s.handle_socket_detach(t, "c1", 1, LeaveReason::Error, false);
    drain(&mut s);
    let r = s
        .handle_resume(t, "c1", "T-c1", 1, 2, "t-c1b".into())
        .map_err(|(e, _)| e)
        .unwrap();
    assert_eq!(r.replay.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [2]);
}

#[test]
fn a_held_place_that_runs_out_reports_member_gone_without_a_transport_to_close() {
    let t = t0();
    let mut s = session(Duration::from_secs(30), ReplayLimits::default());
    s.handle_socket_detach(t, "c1", 1, LeaveReason::Error, false);
    let mut gone = Vec::new();
    while let Some(action) = s.poll_action() {
        if let SessionAction::MemberGone { member } = action {
            gone.push(member);
        }
    }
    assert!(gone.is_empty(), "held, not gone");
    s.handle_timeout(t.plus(Duration::from_secs(30)));
    while let Some(action) = s.poll_action() {
        match action {
            SessionAction::MemberGone { member } => gone.push(member),
            SessionAction::Close { member, .. } => panic!("no transport to close for {member}"),
            _ => {}
        }
    }
    assert_eq!(gone, ["c1"]);
}
