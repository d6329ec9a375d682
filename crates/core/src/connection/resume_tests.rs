//! Virtual-clock tests of the connection machine's resume layer (seed 003, issue 10): the
//! token handshake and every token frame it refuses, pipelined joins, numbering of client
//! frames (duplicates, gaps, refused frames that use up their seq), acks, the resume request
//! and its answers, and the timers that still hold on handshaking and numbered sockets.

use super::*;
use serde_json::json;

fn t0() -> Now {
    Now {
        instant: Instant::now(),
        unix_ms: 1_700_000_000_000,
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn drain(c: &mut Connection) -> Vec<ConnAction> {
    std::iter::from_fn(|| c.poll_action()).collect()
}

/// The server's local token in these tests (what `local_token` hands out).
const A: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
/// The client's local token.
const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn server_a() -> String {
    A.to_string()
}

fn lowercase_a() -> String {
    "a".repeat(32)
}

/// The connection token of A and B: A < B in byte order.
fn t_ab() -> String {
    format!("{A}{B}")
}

/// The default settings with the server's token injected, and latency probes out of the way
/// (they ride on frames after the latency interval; connection/tests.rs covers them).
fn cfg() -> ConnectionConfig {
    ConnectionConfig {
        local_token: server_a,
        latency_interval: Duration::from_secs(3600),
        ..ConnectionConfig::default()
    }
}

const JOIN: &str =
    r#"{"type":"join","sessionId":"s1","deviceInfo":{"id":"d1","name":"Phone","type":"client"}}"#;

fn token(t: &str) -> String {
    format!(r#"{{"type":"token","token":"{t}"}}"#)
}

fn resume(t: &str, last_seq: u64) -> String {
    format!(r#"{{"type":"token","token":"{t}","lastSeq":{last_seq}}}"#)
}

/// An application message numbered `seq`.
fn msg(seq: u64) -> String {
    format!(r#"{{"type":"message","seq":{seq},"data":{seq}}}"#)
}

fn data(n: u64) -> MemberCommand {
    MemberCommand::Message {
        data: loudsync_protocol::RawJson::from_text(&n.to_string()).unwrap(),
        to: None,
    }
}

fn reply_token(a: &ConnAction) -> Option<&str> {
    match a {
        ConnAction::Reply(ServerMessage::Token { token }, _) => Some(token),
        _ => None,
    }
}

/// An error straight to the socket (unnumbered connections and before `welcome`).
fn replied_error(a: &ConnAction) -> Option<ErrorCode> {
    match a {
        ConnAction::Reply(ServerMessage::Error { code, .. }, _) => Some(*code),
        _ => None,
    }
}

/// An error that goes through the session (numbered): (code, details, the frame's seq).
fn reported_error(a: &ConnAction) -> Option<(ErrorCode, Option<serde_json::Value>, Option<u64>)> {
    let (command, seq) = match a {
        ConnAction::Session(c) => (c, None),
        ConnAction::Numbered { seq, command } => (command, Some(*seq)),
        _ => return None,
    };
    match command {
        MemberCommand::Report(message) => match message.as_ref() {
            ServerMessage::Error { code, details, .. } => Some((*code, details.clone(), seq)),
            _ => None,
        },
        _ => None,
    }
}

/// One `invalid_message` straight to the socket and nothing else.
fn assert_only_invalid(actions: &[ConnAction], what: &str) {
    assert_eq!(actions.len(), 1, "{what}: {actions:?}");
    assert_eq!(
        replied_error(&actions[0]),
        Some(ErrorCode::InvalidMessage),
        "{what}: {actions:?}"
    );
}

/// Steps 1 to 4 at `now`: the connection token is agreed, nothing joined yet.
fn agreed(now: Now) -> Connection {
    let mut c = Connection::new(cfg(), now);
    c.handle_text(now, &token(B));
    assert_eq!(reply_token(&drain(&mut c)[0]), Some(A));
    c.handle_text(now, &token(B));
    assert_eq!(reply_token(&drain(&mut c)[0]), Some(A));
    assert_eq!(c.connection_token(), Some(t_ab().as_str()));
    c
}

/// A connection joined after the handshake: numbered.
fn numbered_with(config: ConnectionConfig, now: Now) -> Connection {
    let mut c = Connection::new(config, now);
    c.handle_text(now, &token(B));
    c.handle_text(now, &token(B));
    c.handle_text(now, JOIN);
    let a = drain(&mut c);
    assert!(matches!(a.last(), Some(ConnAction::Join(_))), "{a:?}");
    c.handle_join_result(now, Ok(()));
    assert!(c.is_numbered());
    assert_eq!(c.phase(), Phase::Joined);
    c
}

fn numbered(now: Now) -> Connection {
    numbered_with(cfg(), now)
}

/// A socket that resumed with `last_in` as the last client seq processed.
fn resumed(now: Now, last_in: u64) -> Connection {
    let mut c = Connection::new(cfg(), now);
    c.handle_text(now, &resume(&t_ab(), 3));
    assert_eq!(
        drain(&mut c),
        [ConnAction::Resume {
            token: t_ab(),
            last_seq: 3
        }]
    );
    c.handle_resume_result(now, ResumeAnswer::Resumed { last_in });
    assert!(drain(&mut c).is_empty());
    c
}

#[test]
fn the_four_steps_agree_on_the_connection_token() {
    let now = t0();
    let mut c = Connection::new(cfg(), now);
    assert!(
        drain(&mut c).is_empty(),
        "nothing before the client's first frame"
    );
    // Step 1 -> step 2: the server's token comes from `local_token`.
    c.handle_text(now, &token(B));
    let a = drain(&mut c);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(reply_token(&a[0]), Some(A));
    assert!(matches!(&a[0], ConnAction::Reply(_, Stamp::Now(ms)) if *ms == now.unix_ms));
    assert_eq!(
        c.connection_token(),
        None,
        "PRECONNECTED: nothing agreed yet"
    );
    assert_eq!(c.phase(), Phase::AwaitingJoin);
    // Step 3 -> step 4: the server confirms its own token; both hold T.
    c.handle_text(now, &token(B));
    let a = drain(&mut c);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(reply_token(&a[0]), Some(A));
    assert_eq!(c.connection_token(), Some(t_ab().as_str()));
    assert!(!c.is_numbered(), "numbered only once joined");
    assert_eq!(c.phase(), Phase::AwaitingJoin);
    // The join makes the connection numbered, with the same token.
    c.handle_text(now, JOIN);
    assert!(matches!(&drain(&mut c)[..], [ConnAction::Join(_)]));
    c.handle_join_result(now, Ok(()));
    assert!(c.is_numbered());
    assert_eq!(c.connection_token(), Some(t_ab().as_str()));
}

#[test]
fn the_connection_token_is_the_merge_in_byte_order() {
    let now = t0();
    // Client "Z..." and server "a...": `Z` < `a`, so the client's token comes first.
    let client = "Z".repeat(32);
    let mut c = Connection::new(
        ConnectionConfig {
            local_token: lowercase_a,
            ..ConnectionConfig::default()
        },
        now,
    );
    c.handle_text(now, &token(&client));
    c.handle_text(now, &token(&client));
    let a = drain(&mut c);
    assert_eq!(a.len(), 2);
    assert!(a
        .iter()
        .all(|x| reply_token(x) == Some(lowercase_a().as_str())));
    let expected = format!("{client}{}", lowercase_a());
    assert_eq!(c.connection_token(), Some(expected.as_str()));
    assert_eq!(expected.len(), 64);
    // Server "A..." and client "b...": the server's comes first.
    let c = agreed(now);
    assert_eq!(c.connection_token(), Some(format!("{A}{B}").as_str()));
}

#[test]
fn a_pipelined_join_is_answered_after_the_step_4_token() {
    let now = t0();
    let mut c = Connection::new(cfg(), now);
    c.handle_text(now, &token(B));
    drain(&mut c);
    // Step 3 and join back to back, before the client read step 4.
    c.handle_text(now, &token(B));
    c.handle_text(now, JOIN);
    let a = drain(&mut c);
    assert_eq!(a.len(), 2, "{a:?}");
    assert_eq!(reply_token(&a[0]), Some(A), "step 4 first");
    assert!(matches!(&a[1], ConnAction::Join(j) if j.session_id.as_deref() == Some("s1")));
    assert!(c.reading_paused());
    c.handle_join_result(now, Ok(()));
    assert!(c.is_numbered());
    // The client's numbering starts at 1 with the first numbered message after join.
    c.handle_text(now, &msg(1));
    assert_eq!(
        drain(&mut c),
        [ConnAction::Numbered {
            seq: 1,
            command: data(1)
        }]
    );
}

#[test]
fn a_join_first_is_plain_without_numbering() {
    let now = t0();
    let mut c = Connection::new(cfg(), now);
    c.handle_text(now, JOIN);
    assert!(matches!(&drain(&mut c)[..], [ConnAction::Join(_)]));
    c.handle_join_result(now, Ok(()));
    assert!(!c.is_numbered());
    assert_eq!(c.connection_token(), None);
    // Messages without seq are forwarded as before.
    c.handle_text(now, r#"{"type":"message","data":1}"#);
    assert_eq!(drain(&mut c), [ConnAction::Session(data(1))]);
    // A token cannot start a handshake after a plain join; an ack is invalid on a plain
    // connection. Both straight to the socket (plain errors are not numbered).
    c.handle_text(now, &token(B));
    assert_only_invalid(&drain(&mut c), "token after a plain join");
    c.handle_text(now, r#"{"type":"ack","seq":1}"#);
    assert_only_invalid(&drain(&mut c), "ack on a plain connection");
    assert_eq!(c.phase(), Phase::Joined);
}

#[test]
fn a_badly_formed_token_is_invalid_and_changes_nothing() {
    let now = t0();
    let mut c = Connection::new(cfg(), now);
    for bad in [
        "short".to_string(),
        "!".repeat(32),
        "b".repeat(33),
        "b".repeat(63),
        "é".repeat(16),
    ] {
        c.handle_text(now, &token(&bad));
        assert_only_invalid(&drain(&mut c), &bad);
        assert_eq!(c.phase(), Phase::AwaitingJoin);
        assert_eq!(c.connection_token(), None);
    }
    c.handle_text(now, r#"{"type":"token"}"#);
    assert_only_invalid(&drain(&mut c), "no token field");
    // Still open for a handshake; in PRECONNECTED a bad form changes nothing either.
    c.handle_text(now, &token(B));
    assert_eq!(reply_token(&drain(&mut c)[0]), Some(A));
    c.handle_text(now, &token("x-y"));
    assert_only_invalid(&drain(&mut c), "bad form in PRECONNECTED");
    c.handle_text(now, &token(B));
    assert_eq!(reply_token(&drain(&mut c)[0]), Some(A));
    assert_eq!(c.connection_token(), Some(t_ab().as_str()));
}

#[test]
fn preconnected_refuses_another_token_and_a_join() {
    let now = t0();
    let mut c = Connection::new(cfg(), now);
    c.handle_text(now, &token(B));
    drain(&mut c);
    let other = "c".repeat(32);
    for frame in [
        token(&other),
        token(A),
        JOIN.to_string(),
        token(&t_ab()),
        resume(&t_ab(), 0),
        resume(B, 0),
        r#"{"type":"ack","seq":1}"#.to_string(),
    ] {
        c.handle_text(now, &frame);
        assert_only_invalid(&drain(&mut c), &frame);
        assert_eq!(c.phase(), Phase::AwaitingJoin, "{frame}");
        assert_eq!(c.connection_token(), None, "{frame}");
    }
    // State unchanged: step 3 still completes the handshake.
    c.handle_text(now, &token(B));
    assert_eq!(reply_token(&drain(&mut c)[0]), Some(A));
    assert_eq!(c.connection_token(), Some(t_ab().as_str()));
}

#[test]
fn after_step_4_another_token_is_invalid() {
    let now = t0();
    let mut c = agreed(now);
    for frame in [
        token(B),
        token(A),
        token(&"c".repeat(32)),
        token(&t_ab()),
        resume(&t_ab(), 0),
    ] {
        c.handle_text(now, &frame);
        assert_only_invalid(&drain(&mut c), &frame);
        assert_eq!(c.connection_token(), Some(t_ab().as_str()), "{frame}");
    }
    c.handle_text(now, JOIN);
    assert!(matches!(&drain(&mut c)[..], [ConnAction::Join(_)]));
    c.handle_join_result(now, Ok(()));
    assert!(c.is_numbered());
}

#[test]
fn an_ack_before_join_is_invalid() {
    let now = t0();
    let mut c = Connection::new(cfg(), now);
    c.handle_text(now, r#"{"type":"ack","seq":1}"#);
    assert_only_invalid(&drain(&mut c), "ack on a new socket");
    let mut c = agreed(now);
    c.handle_text(now, r#"{"type":"ack","seq":0}"#);
    assert_only_invalid(&drain(&mut c), "ack after the handshake, before join");
    assert_eq!(c.phase(), Phase::AwaitingJoin);
}

#[test]
fn a_connection_token_without_last_seq_on_a_new_socket_is_invalid() {
    let now = t0();
    let mut c = Connection::new(cfg(), now);
    c.handle_text(now, &token(&t_ab()));
    assert_only_invalid(
        &drain(&mut c),
        "disconnect on a socket without a connection",
    );
    assert_eq!(c.phase(), Phase::AwaitingJoin);
    assert_eq!(c.connection_token(), None);
    // A 32-character token with lastSeq is no resume either.
    let mut c = Connection::new(cfg(), now);
    c.handle_text(now, &resume(B, 0));
    assert_only_invalid(&drain(&mut c), "lastSeq with a local token");
    // The socket is still good for a handshake.
    c.handle_text(now, &token(B));
    assert_eq!(reply_token(&drain(&mut c)[0]), Some(A));
}

#[test]
fn a_resume_must_be_the_first_frame() {
    let now = t0();
    let mut c = Connection::new(cfg(), now);
    c.handle_text(now, r#"{"type":"ping","timestamp":5}"#);
    assert!(matches!(
        &drain(&mut c)[..],
        [ConnAction::Reply(ServerMessage::Pong, _)]
    ));
    c.handle_text(now, &resume(&t_ab(), 0));
    assert_only_invalid(&drain(&mut c), "resume after a ping");
    assert_eq!(c.phase(), Phase::AwaitingJoin);
    // After an invalid first frame too.
    let mut c = Connection::new(cfg(), now);
    c.handle_text(now, "{oops");
    drain(&mut c);
    c.handle_text(now, &resume(&t_ab(), 0));
    assert_only_invalid(&drain(&mut c), "resume after a bad frame");
    // In the middle of a handshake.
    let mut c = Connection::new(cfg(), now);
    c.handle_text(now, &token(B));
    drain(&mut c);
    c.handle_text(now, &resume(&t_ab(), 0));
    assert_only_invalid(&drain(&mut c), "resume in PRECONNECTED");
    // On a numbered connection: through the session.
    let mut c = numbered(now);
    c.handle_text(now, &resume(&t_ab(), 0));
    let a = drain(&mut c);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(
        reported_error(&a[0]).map(|e| e.0),
        Some(ErrorCode::InvalidMessage)
    );
    assert!(c.is_numbered());
}

#[test]
fn a_resume_asks_the_session_and_pauses_reading() {
    let now = t0();
    let mut c = Connection::new(cfg(), now);
    c.handle_text(now, &resume(&t_ab(), 17));
    assert_eq!(
        drain(&mut c),
        [ConnAction::Resume {
            token: t_ab(),
            last_seq: 17
        }]
    );
    assert!(c.reading_paused());
    assert_eq!(c.phase(), Phase::Joining);
    assert_eq!(c.connection_token(), Some(t_ab().as_str()));
    assert!(!c.is_numbered());
}

#[test]
fn resumed_continues_the_numbering_after_last_in() {
    let now = t0();
    let mut c = resumed(now, 7);
    assert_eq!(c.phase(), Phase::Joined);
    assert!(c.is_numbered());
    assert!(!c.reading_paused());
    assert_eq!(c.connection_token(), Some(t_ab().as_str()));
    // The client resends from 8: what the session had is a duplicate.
    c.handle_text(now, &msg(7));
    c.handle_text(now, &msg(3));
    assert!(drain(&mut c).is_empty(), "duplicates are dropped silently");
    c.handle_text(now, &msg(8));
    c.handle_text(now, &msg(9));
    assert_eq!(
        drain(&mut c),
        [
            ConnAction::Numbered {
                seq: 8,
                command: data(8)
            },
            ConnAction::Numbered {
                seq: 9,
                command: data(9)
            }
        ]
    );
    // The formal disconnect works on a resumed socket too.
    c.handle_text(now, &token(&t_ab()));
    assert_eq!(drain(&mut c), [ConnAction::Session(MemberCommand::Leave)]);
    // A second answer changes nothing.
    c.handle_resume_result(now, ResumeAnswer::Failed(ResumeFailure::Expired));
    assert!(drain(&mut c).is_empty());
    assert!(c.is_numbered());
}

#[test]
fn resume_failed_keeps_the_socket_for_a_fresh_handshake_only() {
    let now = t0();
    let mut c = Connection::new(cfg(), now);
    c.handle_text(now, &resume(&t_ab(), 2));
    drain(&mut c);
    c.handle_resume_result(now, ResumeAnswer::Failed(ResumeFailure::Expired));
    let a = drain(&mut c);
    assert_eq!(a.len(), 1, "resume_failed and no close: {a:?}");
    assert!(matches!(
        &a[0],
        ConnAction::Reply(
            ServerMessage::ResumeFailed {
                reason: ResumeFailure::Expired
            },
            Stamp::Now(_)
        )
    ));
    assert_eq!(c.phase(), Phase::AwaitingJoin);
    assert!(!c.reading_paused());
    assert_eq!(c.connection_token(), None);
    // Another resume frame on this socket is invalid, with either token.
    c.handle_text(now, &resume(&t_ab(), 2));
    assert_only_invalid(&drain(&mut c), "second resume");
    c.handle_text(now, &token(&t_ab()));
    assert_only_invalid(&drain(&mut c), "connection token without lastSeq");
    assert_eq!(c.phase(), Phase::AwaitingJoin);
    // A fresh step 1 works, then a join: numbered from 1.
    c.handle_text(now, &token(B));
    assert_eq!(reply_token(&drain(&mut c)[0]), Some(A));
    c.handle_text(now, &token(B));
    assert_eq!(reply_token(&drain(&mut c)[0]), Some(A));
    c.handle_text(now, JOIN);
    assert!(matches!(&drain(&mut c)[..], [ConnAction::Join(_)]));
    c.handle_join_result(now, Ok(()));
    assert!(c.is_numbered());
    c.handle_text(now, &msg(1));
    assert_eq!(
        drain(&mut c),
        [ConnAction::Numbered {
            seq: 1,
            command: data(1)
        }]
    );
}

#[test]
fn a_plain_join_after_resume_failed_is_plain() {
    let now = t0();
    let mut c = Connection::new(cfg(), now);
    c.handle_text(now, &resume(&t_ab(), 0));
    drain(&mut c);
    c.handle_resume_result(now, ResumeAnswer::Failed(ResumeFailure::UnknownToken));
    drain(&mut c);
    c.handle_text(now, JOIN);
    assert!(matches!(&drain(&mut c)[..], [ConnAction::Join(_)]));
    c.handle_join_result(now, Ok(()));
    assert!(!c.is_numbered());
    assert_eq!(c.connection_token(), None);
    c.handle_text(now, r#"{"type":"message","data":1}"#);
    assert_eq!(drain(&mut c), [ConnAction::Session(data(1))]);
}

#[test]
fn an_invalid_resume_answer_is_invalid_message_and_the_socket_stays() {
    let now = t0();
    let mut c = Connection::new(cfg(), now);
    c.handle_text(now, &resume(&t_ab(), 99));
    drain(&mut c);
    c.handle_resume_result(
        now,
        ResumeAnswer::Invalid("lastSeq 99 was never sent".into()),
    );
    let a = drain(&mut c);
    assert_eq!(a.len(), 1, "{a:?}");
    match &a[0] {
        ConnAction::Reply(
            ServerMessage::Error {
                code: ErrorCode::InvalidMessage,
                message,
                ..
            },
            _,
        ) => assert!(message.contains("99"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.phase(), Phase::AwaitingJoin);
    c.handle_text(now, &resume(&t_ab(), 1));
    assert_only_invalid(&drain(&mut c), "only a fresh handshake now");
    c.handle_text(now, &token(B));
    assert_eq!(reply_token(&drain(&mut c)[0]), Some(A));
}

#[test]
fn numbered_frames_are_processed_once_and_in_order() {
    let now = t0();
    let mut c = numbered(now);
    c.handle_text(now, &msg(1));
    assert_eq!(
        drain(&mut c),
        [ConnAction::Numbered {
            seq: 1,
            command: data(1)
        }]
    );
    // A duplicate is dropped silently.
    c.handle_text(now, &msg(1));
    assert!(drain(&mut c).is_empty());
    // A gap: reported once per run, with the last processed seq.
    c.handle_text(now, &msg(3));
    let a = drain(&mut c);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(
        reported_error(&a[0]),
        Some((ErrorCode::InvalidMessage, Some(json!({"lastSeq": 1})), None))
    );
    c.handle_text(now, &msg(4));
    c.handle_text(now, &msg(5));
    assert!(
        drain(&mut c).is_empty(),
        "same run of gap frames: no second error"
    );
    // The resend fills the gap; a later gap is a new run.
    c.handle_text(now, &msg(2));
    c.handle_text(now, &msg(3));
    assert_eq!(
        drain(&mut c),
        [
            ConnAction::Numbered {
                seq: 2,
                command: data(2)
            },
            ConnAction::Numbered {
                seq: 3,
                command: data(3)
            }
        ]
    );
    c.handle_text(now, &msg(9));
    let a = drain(&mut c);
    assert_eq!(
        reported_error(&a[0]),
        Some((ErrorCode::InvalidMessage, Some(json!({"lastSeq": 3})), None))
    );
    // Every numbered kind is numbered.
    c.handle_text(now, r#"{"type":"member_list","seq":4}"#);
    c.handle_text(now, r#"{"seq":5,"type":"kick","memberId":"x"}"#);
    c.handle_text(now, r#"{"type":"leave","seq":6}"#);
    assert_eq!(
        drain(&mut c),
        [
            ConnAction::Numbered {
                seq: 4,
                command: MemberCommand::MemberList
            },
            ConnAction::Numbered {
                seq: 5,
                command: MemberCommand::Kick {
                    member_id: "x".into(),
                    reason: None
                }
            },
            ConnAction::Numbered {
                seq: 6,
                command: MemberCommand::Leave
            }
        ]
    );
}

#[test]
fn a_numbered_message_without_seq_or_with_a_bad_one_is_invalid_via_the_session() {
    let now = t0();
    let mut c = numbered(now);
    for frame in [
        r#"{"type":"message","data":1}"#,
        r#"{"type":"member_list"}"#,
        r#"{"type":"leave"}"#,
        r#"{"type":"message","seq":0,"data":1}"#,
        r#"{"type":"message","seq":-1,"data":1}"#,
        r#"{"type":"message","seq":"1","data":1}"#,
        r#"{"type":"message","seq":1.5,"data":1}"#,
    ] {
        c.handle_text(now, frame);
        let a = drain(&mut c);
        assert_eq!(a.len(), 1, "{frame}: {a:?}");
        assert_eq!(
            reported_error(&a[0]).map(|e| (e.0, e.2)),
            Some((ErrorCode::InvalidMessage, None)),
            "{frame}: {a:?}"
        );
    }
    // None of them used up a seq.
    c.handle_text(now, &msg(1));
    assert_eq!(
        drain(&mut c),
        [ConnAction::Numbered {
            seq: 1,
            command: data(1)
        }]
    );
}

#[test]
fn seq_on_ping_and_heartbeat_is_ignored() {
    let now = t0();
    let mut c = numbered(now);
    c.handle_text(now, r#"{"type":"ping","timestamp":7,"seq":99}"#);
    c.handle_text(now, r#"{"type":"ping","timestamp":8,"seq":"x"}"#);
    let a = drain(&mut c);
    assert_eq!(a.len(), 2, "{a:?}");
    assert!(a
        .iter()
        .all(|x| matches!(x, ConnAction::Reply(ServerMessage::Pong, Stamp::Echo(_)))));
    c.handle_text(now, r#"{"type":"heartbeat","seq":50}"#);
    c.handle_text(now, r#"{"type":"heartbeat","seq":1}"#);
    c.handle_text(now, r#"{"type":"heartbeat","seq":-3}"#);
    c.handle_text(now, r#"{"type":"heartbeat"}"#);
    assert!(drain(&mut c).is_empty(), "neither error, duplicate nor gap");
    // They did not advance the numbering.
    c.handle_text(now, &msg(1));
    assert_eq!(
        drain(&mut c),
        [ConnAction::Numbered {
            seq: 1,
            command: data(1)
        }]
    );
    // And they refresh liveness.
    let mut c = numbered(now);
    c.handle_text(now.plus(secs(10.0)), r#"{"type":"heartbeat","seq":77}"#);
    c.handle_timeout(now.plus(secs(15.0)));
    c.handle_timeout(now.plus(secs(24.9)));
    assert!(drain(&mut c).is_empty());
    assert_eq!(c.phase(), Phase::Joined);
}

#[test]
fn an_ack_on_a_numbered_connection_goes_to_the_session_unnumbered() {
    let now = t0();
    let mut c = numbered(now);
    c.handle_text(now, r#"{"type":"ack","seq":4}"#);
    c.handle_text(now, r#"{"type":"ack","seq":5,"lastSeq":1}"#);
    assert_eq!(
        drain(&mut c),
        [
            ConnAction::Session(MemberCommand::Ack(4)),
            ConnAction::Session(MemberCommand::Ack(5))
        ]
    );
    // It does not advance the client numbering.
    c.handle_text(now, &msg(1));
    assert!(matches!(
        &drain(&mut c)[..],
        [ConnAction::Numbered { seq: 1, .. }]
    ));
}

#[test]
fn duplicates_and_gaps_refresh_liveness() {
    let now = t0();
    let mut c = numbered(now);
    c.handle_text(now, &msg(1));
    drain(&mut c);
    c.handle_text(now.plus(secs(10.0)), &msg(1));
    assert!(drain(&mut c).is_empty());
    c.handle_timeout(now.plus(secs(15.0)));
    assert!(
        matches!(
            &drain(&mut c)[..],
            [ConnAction::Reply(ServerMessage::Ack { seq: 1 }, _)]
        ),
        "the ack owed since 1, and no close: the duplicate kept it alive"
    );
    c.handle_text(now.plus(secs(20.0)), &msg(5));
    assert_eq!(drain(&mut c).len(), 1, "the gap's error");
    c.handle_timeout(now.plus(secs(25.0)));
    c.handle_timeout(now.plus(secs(34.9)));
    assert!(drain(&mut c).is_empty(), "the gap frame kept it alive");
    c.handle_timeout(now.plus(secs(35.0)));
    assert_eq!(
        drain(&mut c),
        [
            ConnAction::Close {
                code: 1000,
                reason: "heartbeat timeout".into()
            },
            ConnAction::Detach(LeaveReason::Timeout)
        ]
    );
}

#[test]
fn a_refused_frame_with_a_seq_uses_it_up() {
    let now = t0();
    let mut c = numbered_with(
        ConnectionConfig {
            max_data_bytes: 40,
            ..cfg()
        },
        now,
    );
    let big = format!(
        r#"{{"type":"message","seq":1,"data":"{}"}}"#,
        "x".repeat(64)
    );
    c.handle_text(now, &big);
    c.handle_text(now, r#"{"type":"kick","memberId":5,"seq":2}"#);
    c.handle_text(now, r#"{"type":"nope","seq":3}"#);
    c.handle_text(now, r#"{"type":"join","seq":4,"sessionId":"s1","deviceInfo":{"id":"d1","name":"Phone","type":"client"}}"#);
    let a = drain(&mut c);
    assert_eq!(a.len(), 4, "{a:?}");
    assert_eq!(
        reported_error(&a[0]),
        Some((ErrorCode::TooLarge, None, Some(1)))
    );
    assert_eq!(
        reported_error(&a[1]),
        Some((ErrorCode::InvalidMessage, None, Some(2)))
    );
    assert_eq!(
        reported_error(&a[2]),
        Some((ErrorCode::InvalidMessage, None, Some(3)))
    );
    assert_eq!(
        reported_error(&a[3]),
        Some((ErrorCode::InvalidMessage, None, Some(4))),
        "a second join"
    );
    // Not wedged: 5 is next, and 4 again is a duplicate.
    c.handle_text(now, &msg(4));
    assert!(drain(&mut c).is_empty());
    c.handle_text(now, &msg(5));
    assert_eq!(
        drain(&mut c),
        [ConnAction::Numbered {
            seq: 5,
            command: data(5)
        }]
    );
}

#[test]
fn an_ack_is_sent_every_ack_every_messages() {
    let now = t0();
    let mut c = numbered_with(
        ConnectionConfig {
            ack_every: 3,
            ..cfg()
        },
        now,
    );
    c.handle_text(now, &msg(1));
    c.handle_text(now, &msg(2));
    let a = drain(&mut c);
    assert!(
        a.iter().all(|x| matches!(x, ConnAction::Numbered { .. })),
        "{a:?}"
    );
    c.handle_text(now, &msg(3));
    let a = drain(&mut c);
    assert_eq!(a.len(), 2, "{a:?}");
    assert!(matches!(
        &a[0],
        ConnAction::Reply(ServerMessage::Ack { seq: 3 }, Stamp::Now(_))
    ));
    assert!(matches!(&a[1], ConnAction::Numbered { seq: 3, .. }));
    // The ack timer is gone with the ack.
    assert_eq!(c.poll_timeout(), Some(now.plus(secs(15.0)).instant));
    for seq in 4..=6 {
        c.handle_text(now, &msg(seq));
    }
    let acks: Vec<_> = drain(&mut c)
        .into_iter()
        .filter(|x| matches!(x, ConnAction::Reply(ServerMessage::Ack { .. }, _)))
        .collect();
    assert_eq!(acks.len(), 1);
    assert!(matches!(
        &acks[0],
        ConnAction::Reply(ServerMessage::Ack { seq: 6 }, _)
    ));
    // Duplicates and unnumbered frames owe no ack.
    c.handle_text(now, &msg(6));
    c.handle_text(now, r#"{"type":"heartbeat"}"#);
    assert!(drain(&mut c).is_empty());
    assert_eq!(c.poll_timeout(), Some(now.plus(secs(15.0)).instant));
}

#[test]
fn an_ack_is_sent_at_the_latest_ack_interval_after_the_first_unacknowledged() {
    let now = t0();
    let mut c = numbered(now);
    // Idle: the only timer is the heartbeat check.
    assert_eq!(c.poll_timeout(), Some(now.plus(secs(15.0)).instant));
    c.handle_text(now.plus(secs(1.0)), &msg(1));
    drain(&mut c);
    assert_eq!(c.poll_timeout(), Some(now.plus(secs(6.0)).instant));
    c.handle_text(now.plus(secs(3.0)), &msg(2));
    drain(&mut c);
    assert_eq!(
        c.poll_timeout(),
        Some(now.plus(secs(6.0)).instant),
        "counted from the first unacknowledged"
    );
    c.handle_timeout(now.plus(secs(5.9)));
    assert!(drain(&mut c).is_empty());
    c.handle_timeout(now.plus(secs(6.0)));
    let a = drain(&mut c);
    assert_eq!(a.len(), 1, "{a:?}");
    assert!(matches!(
        &a[0],
        ConnAction::Reply(ServerMessage::Ack { seq: 2 }, Stamp::Now(ms)) if *ms == now.plus(secs(6.0)).unix_ms
    ));
    // Nothing more owed: no ack timer, and a later poll sends nothing.
    assert_eq!(c.poll_timeout(), Some(now.plus(secs(15.0)).instant));
    c.handle_timeout(now.plus(secs(12.0)));
    assert!(drain(&mut c).is_empty());
    // The next message starts a new interval.
    c.handle_text(now.plus(secs(13.0)), &msg(3));
    drain(&mut c);
    assert_eq!(c.poll_timeout(), Some(now.plus(secs(15.0)).instant));
    c.handle_timeout(now.plus(secs(15.0)));
    assert!(drain(&mut c).is_empty(), "alive: silent for 2 s only");
    assert_eq!(c.poll_timeout(), Some(now.plus(secs(18.0)).instant));
    c.handle_timeout(now.plus(secs(18.0)));
    assert!(matches!(
        &drain(&mut c)[..],
        [ConnAction::Reply(ServerMessage::Ack { seq: 3 }, _)]
    ));
}

#[test]
fn an_idle_numbered_connection_has_no_ack_timer() {
    let now = t0();
    let mut c = numbered(now);
    let plain = {
        let mut p = Connection::new(cfg(), now);
        p.handle_text(now, JOIN);
        drain(&mut p);
        p.handle_join_result(now, Ok(()));
        p
    };
    assert_eq!(c.poll_timeout(), plain.poll_timeout());
    // Heartbeats keep it alive and never arm an ack timer.
    for s in [4.0, 8.0, 12.0] {
        c.handle_text(now.plus(secs(s)), r#"{"type":"heartbeat"}"#);
    }
    assert_eq!(c.poll_timeout(), Some(now.plus(secs(15.0)).instant));
    c.handle_timeout(now.plus(secs(15.0)));
    assert!(drain(&mut c).is_empty());
    assert_eq!(c.poll_timeout(), Some(now.plus(secs(27.0)).instant));
    // A resumed socket with nothing new owes nothing either.
    let r = resumed(now, 5);
    assert_eq!(r.poll_timeout(), Some(now.plus(secs(15.0)).instant));
}

#[test]
fn acks_after_a_resume_continue_from_last_in() {
    let now = t0();
    let mut c = Connection::new(
        ConnectionConfig {
            ack_every: 2,
            ..cfg()
        },
        now,
    );
    c.handle_text(now, &resume(&t_ab(), 0));
    drain(&mut c);
    c.handle_resume_result(now, ResumeAnswer::Resumed { last_in: 10 });
    c.handle_text(now, &msg(11));
    assert!(matches!(
        &drain(&mut c)[..],
        [ConnAction::Numbered { seq: 11, .. }]
    ));
    c.handle_text(now, &msg(12));
    let a = drain(&mut c);
    assert!(
        matches!(&a[0], ConnAction::Reply(ServerMessage::Ack { seq: 12 }, _)),
        "{a:?}"
    );
}

#[test]
fn rate_limited_on_a_numbered_connection_carries_last_seq() {
    let now = t0();
    let mut c = numbered_with(
        ConnectionConfig {
            rate_per_sec: 10,
            rate_burst: 3,
            ..cfg()
        },
        now,
    );
    // The handshake and join took 3 frames of the burst; let it refill.
    let later = now.plus(secs(1.0));
    c.handle_text(later, &msg(1));
    c.handle_text(later, &msg(2));
    c.handle_text(later, &msg(3));
    assert_eq!(drain(&mut c).len(), 3);
    c.handle_text(later, &msg(4));
    let a = drain(&mut c);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(
        reported_error(&a[0]),
        Some((ErrorCode::RateLimited, Some(json!({"lastSeq": 3})), None))
    );
    // The dropped 4 is then a gap-free resend.
    let much_later = now.plus(secs(3.0));
    c.handle_text(much_later, &msg(4));
    assert!(matches!(
        &drain(&mut c)[..],
        [ConnAction::Numbered { seq: 4, .. }]
    ));
}

#[test]
fn rate_limited_on_a_plain_connection_has_no_details() {
    let now = t0();
    let mut c = Connection::new(
        ConnectionConfig {
            rate_per_sec: 10,
            rate_burst: 2,
            ..cfg()
        },
        now,
    );
    c.handle_text(now, JOIN);
    drain(&mut c);
    c.handle_join_result(now, Ok(()));
    // The join took one frame of the burst of 2.
    c.handle_text(now, r#"{"type":"message","data":1}"#);
    c.handle_text(now, r#"{"type":"message","data":1}"#);
    match &drain(&mut c)[..] {
        [ConnAction::Session(_), ConnAction::Reply(
            ServerMessage::Error {
                code: ErrorCode::RateLimited,
                details: None,
                ..
            },
            _,
        )] => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_formal_disconnect_is_a_leave() {
    let now = t0();
    let mut c = numbered(now);
    c.handle_text(now, &msg(1));
    drain(&mut c);
    c.handle_text(now, &token(&t_ab()));
    assert_eq!(drain(&mut c), [ConnAction::Session(MemberCommand::Leave)]);
    // Another token, or the connection token with lastSeq, is invalid, via the session.
    let mut c = numbered(now);
    for frame in [
        resume(&t_ab(), 0),
        token(B),
        token(A),
        token(&"q".repeat(64)),
    ] {
        c.handle_text(now, &frame);
        let a = drain(&mut c);
        assert_eq!(a.len(), 1, "{frame}: {a:?}");
        assert_eq!(
            reported_error(&a[0]).map(|e| e.0),
            Some(ErrorCode::InvalidMessage),
            "{frame}"
        );
    }
    assert_eq!(c.phase(), Phase::Joined);
}

#[test]
fn a_heartbeat_timeout_on_a_numbered_connection_detaches_for_the_window() {
    let now = t0();
    let mut c = numbered(now);
    c.handle_timeout(now.plus(secs(14.9)));
    assert!(drain(&mut c).is_empty());
    c.handle_timeout(now.plus(secs(15.0)));
    assert_eq!(
        drain(&mut c),
        [
            ConnAction::Close {
                code: 1000,
                reason: "heartbeat timeout".into()
            },
            ConnAction::Detach(LeaveReason::Timeout)
        ]
    );
    assert_eq!(c.phase(), Phase::Closed);
}

#[test]
fn a_transport_failure_is_fatal_and_a_close_is_not() {
    let now = t0();
    let mut c = numbered(now);
    c.handle_transport_failed(now);
    assert_eq!(drain(&mut c), [ConnAction::DetachFatal(LeaveReason::Error)]);
    assert_eq!(c.phase(), Phase::Closed);
    c.handle_transport_closed(now);
    assert!(drain(&mut c).is_empty(), "once");
    let mut c = numbered(now);
    c.handle_transport_closed(now);
    assert_eq!(drain(&mut c), [ConnAction::Detach(LeaveReason::Error)]);
    // Before join, neither tells a session.
    let mut c = agreed(now);
    c.handle_transport_failed(now);
    assert!(drain(&mut c).is_empty());
    // A rate-limit close on a numbered connection is a plain detach (the window starts).
    let mut c = numbered(now);
    c.handle_outbound_overflow(now);
    assert_eq!(
        drain(&mut c),
        [
            ConnAction::Close {
                code: 1008,
                reason: "outbound queue overflow: client too slow".into()
            },
            ConnAction::Detach(LeaveReason::Error)
        ]
    );
}

#[test]
fn the_join_deadline_holds_through_the_handshake() {
    let now = t0();
    let mut c = Connection::new(cfg(), now);
    assert_eq!(c.poll_timeout(), Some(now.plus(secs(15.0)).instant));
    c.handle_text(now.plus(secs(5.0)), &token(B));
    c.handle_text(now.plus(secs(10.0)), &token(B));
    c.handle_text(now.plus(secs(14.0)), r#"{"type":"heartbeat"}"#);
    drain(&mut c);
    assert_eq!(
        c.poll_timeout(),
        Some(now.plus(secs(15.0)).instant),
        "counted from opening"
    );
    c.handle_timeout(now.plus(secs(14.9)));
    assert!(drain(&mut c).is_empty());
    c.handle_timeout(now.plus(secs(15.0)));
    assert_eq!(
        drain(&mut c),
        [ConnAction::Close {
            code: 1000,
            reason: "no join within the heartbeat timeout".into()
        }]
    );
}

#[test]
fn the_join_deadline_holds_after_resume_failed_counted_from_opening() {
    let now = t0();
    let mut c = Connection::new(cfg(), now);
    c.handle_text(now.plus(secs(1.0)), &resume(&t_ab(), 0));
    drain(&mut c);
    c.handle_resume_result(
        now.plus(secs(2.0)),
        ResumeAnswer::Failed(ResumeFailure::BufferOverflow),
    );
    c.handle_text(now.plus(secs(8.0)), &token(B));
    c.handle_text(now.plus(secs(13.0)), r#"{"type":"ping","timestamp":1}"#);
    drain(&mut c);
    assert_eq!(c.poll_timeout(), Some(now.plus(secs(15.0)).instant));
    c.handle_timeout(now.plus(secs(15.0)));
    assert_eq!(
        drain(&mut c),
        [ConnAction::Close {
            code: 1000,
            reason: "no join within the heartbeat timeout".into()
        }]
    );
}

#[test]
fn the_join_deadline_holds_while_a_resume_is_routed() {
    let now = t0();
    let mut c = Connection::new(cfg(), now);
    c.handle_text(now.plus(secs(2.0)), &resume(&t_ab(), 0));
    drain(&mut c);
    assert_eq!(c.poll_timeout(), Some(now.plus(secs(15.0)).instant));
    c.handle_timeout(now.plus(secs(15.0)));
    assert_eq!(
        drain(&mut c),
        [ConnAction::Close {
            code: 1000,
            reason: "no join within the heartbeat timeout".into()
        }]
    );
    // An answer after the close changes nothing.
    c.handle_resume_result(now.plus(secs(16.0)), ResumeAnswer::Resumed { last_in: 0 });
    assert!(drain(&mut c).is_empty());
    assert_eq!(c.phase(), Phase::Closed);
}

#[test]
fn a_resumed_socket_times_out_on_silence_and_detaches() {
    let now = t0();
    let mut c = Connection::new(cfg(), now);
    c.handle_text(now, &resume(&t_ab(), 0));
    drain(&mut c);
    c.handle_resume_result(now.plus(secs(1.0)), ResumeAnswer::Resumed { last_in: 0 });
    c.handle_text(now.plus(secs(10.0)), r#"{"type":"heartbeat"}"#);
    c.handle_timeout(now.plus(secs(15.0)));
    assert!(
        drain(&mut c).is_empty(),
        "joined: the join deadline is over"
    );
    c.handle_timeout(now.plus(secs(25.0)));
    assert_eq!(
        drain(&mut c),
        [
            ConnAction::Close {
                code: 1000,
                reason: "heartbeat timeout".into()
            },
            ConnAction::Detach(LeaveReason::Timeout)
        ]
    );
}

#[test]
fn a_rate_limit_close_on_a_numbered_connection_is_a_plain_detach() {
    let now = t0();
    let mut c = numbered_with(
        ConnectionConfig {
            rate_per_sec: 10,
            rate_burst: 3,
            ..cfg()
        },
        now,
    );
    let mut seen = Vec::new();
    for seq in 1..=20 {
        c.handle_text(now, &msg(seq));
        seen.extend(drain(&mut c));
        if c.phase() == Phase::Closed {
            break;
        }
    }
    let tail = &seen[seen.len() - 2..];
    assert_eq!(
        tail,
        [
            ConnAction::Close {
                code: 1008,
                reason: "rate limit exceeded".into()
            },
            ConnAction::Detach(LeaveReason::Error)
        ],
        "the window starts: not DetachFatal"
    );
}

#[test]
fn a_numbered_connection_forwards_latency_unnumbered() {
    let now = t0();
    let mut c = numbered_with(
        ConnectionConfig {
            latency_interval: Duration::from_secs(1),
            ..cfg()
        },
        now,
    );
    let later = now.plus(secs(2.0));
    c.handle_text(later, &msg(1));
    let a = drain(&mut c);
    let ping = a.iter().find_map(|x| match x {
        ConnAction::Ping(p) => Some(*p),
        _ => None,
    });
    let ping = ping.expect("a probe rides on the frame");
    c.handle_pong(later.plus(secs(0.05)), &ping);
    assert_eq!(
        drain(&mut c),
        [ConnAction::Session(MemberCommand::Latency(50))]
    );
}

#[test]
fn a_socket_that_spoke_but_never_joined_is_told_no_join_however_late_the_timer_fires() {
    let t = Now {
        instant: std::time::Instant::now(),
        unix_ms: 1_700_000_000_000,
    };
    let mut c = Connection::new(ConnectionConfig::default(), t);
    c.handle_text(
        t.plus(Duration::from_millis(5)),
        &format!(r#"{{"type":"token","token":"{}"}}"#, "b".repeat(32)),
    );
    while c.poll_action().is_some() {}
    // Both deadlines have passed by the time the timer runs (a loaded machine).
    c.handle_timeout(t.plus(Duration::from_secs(16)));
    let actions: Vec<ConnAction> = std::iter::from_fn(|| c.poll_action()).collect();
    assert_eq!(
        actions,
        vec![ConnAction::Close {
            code: 1000,
            reason: "no join within the heartbeat timeout".into()
        }]
    );
}
