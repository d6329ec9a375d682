//! Virtual-clock tests of the connection machine: liveness, pings, rate limit, join gating.

use super::*;
use loudsync_protocol::app::Dialect;
use loudsync_protocol::DeviceType;

fn t0() -> Now {
    Now {
        instant: Instant::now(),
        unix_ms: 1_700_000_000_000,
    }
}

fn drain(c: &mut Connection) -> Vec<ConnAction> {
    std::iter::from_fn(|| c.poll_action()).collect()
}

const JOIN: &str =
    r#"{"type":"join","sessionId":"s1","deviceInfo":{"id":"d1","name":"Phone","type":"client"}}"#;

fn joined(now: Now) -> Connection {
    let mut c = Connection::new(ConnectionConfig::default(), now);
    c.handle_text(now, JOIN);
    let actions = drain(&mut c);
    assert!(
        matches!(&actions[..], [ConnAction::Join(j)] if j.device_info.kind == DeviceType::Client)
    );
    c.handle_join_result(now, Ok(()));
    assert_eq!(c.phase(), Phase::Joined);
    c
}

fn error_code(a: &ConnAction) -> Option<ErrorCode> {
    match a {
        ConnAction::Reply(ServerMessage::Error { code, .. }, _) => Some(*code),
        _ => None,
    }
}

#[test]
fn ping_is_answered_with_the_same_timestamp_before_and_after_join() {
    let now = t0();
    let mut c = Connection::new(ConnectionConfig::default(), now);
    c.handle_text(now, r#"{"type":"ping","timestamp":123}"#);
    let a = drain(&mut c);
    assert_eq!(a.len(), 1);
    match &a[0] {
        ConnAction::Reply(ServerMessage::Pong, Stamp::Echo(n)) => assert_eq!(n.to_string(), "123"),
        other => panic!("{other:?}"),
    }
    let mut c = joined(now);
    c.handle_text(now, r#"{"type":"ping","timestamp":-9}"#);
    assert!(
        matches!(&drain(&mut c)[..], [ConnAction::Reply(ServerMessage::Pong, Stamp::Echo(n))] if n.to_string() == "-9")
    );
}

#[test]
fn session_messages_before_join_are_invalid_and_keep_the_socket() {
    let now = t0();
    let mut c = Connection::new(ConnectionConfig::default(), now);
    for text in [
        r#"{"type":"leave"}"#,
        r#"{"type":"member_list"}"#,
        r#"{"type":"kick","memberId":"x"}"#,
        r#"{"type":"message","data":1}"#,
    ] {
        c.handle_text(now, text);
        let a = drain(&mut c);
        assert_eq!(a.len(), 1, "{text}");
        assert_eq!(error_code(&a[0]), Some(ErrorCode::InvalidMessage));
        match &a[0] {
            ConnAction::Reply(ServerMessage::Error { message, .. }, _) => {
                assert!(message.contains("send `join` first"), "{message}")
            }
            _ => unreachable!(),
        }
    }
    assert_eq!(c.phase(), Phase::AwaitingJoin);
}

#[test]
fn bad_frames_get_invalid_message_and_the_socket_stays() {
    let now = t0();
    let mut c = joined(now);
    c.handle_text(now, "{oops");
    c.handle_text(now, r#"{"type":"nope"}"#);
    c.handle_binary(now);
    c.handle_text(now, r#"{"type":"kick","memberId":5}"#);
    let a = drain(&mut c);
    assert_eq!(a.len(), 4);
    assert!(a
        .iter()
        .all(|x| error_code(x) == Some(ErrorCode::InvalidMessage)));
    assert_eq!(c.phase(), Phase::Joined);
}

#[test]
fn joined_messages_are_forwarded_to_the_session() {
    let now = t0();
    let mut c = joined(now);
    c.handle_text(now, r#"{"type":"kick","memberId":"c2","reason":"bye"}"#);
    c.handle_text(now, r#"{"type":"member_list"}"#);
    c.handle_text(now, r#"{"type":"message","data":{"pos":3},"to":"c3"}"#);
    c.handle_text(now, r#"{"type":"leave"}"#);
    let a = drain(&mut c);
    assert_eq!(
        a,
        vec![
            ConnAction::Session(MemberCommand::Kick {
                member_id: "c2".into(),
                reason: Some("bye".into())
            }),
            ConnAction::Session(MemberCommand::MemberList),
            ConnAction::Session(MemberCommand::Message {
                data: loudsync_protocol::RawJson::from_text(r#"{"pos":3}"#).unwrap(),
                to: Some("c3".into())
            }),
            ConnAction::Session(MemberCommand::Leave),
        ]
    );
}

#[test]
fn second_join_is_invalid() {
    let now = t0();
    let mut c = joined(now);
    c.handle_text(now, JOIN);
    let a = drain(&mut c);
    assert_eq!(error_code(&a[0]), Some(ErrorCode::InvalidMessage));
}

#[test]
fn version_mismatch_rejects_and_closes_normally() {
    let now = t0();
    let mut c = Connection::new(ConnectionConfig::default(), now);
    c.handle_text(
        now,
        r#"{"type":"join","sessionId":"s","protocolVersion":"2.0","deviceInfo":{"id":"d","name":"n","type":"client"}}"#,
    );
    let a = drain(&mut c);
    assert_eq!(error_code(&a[0]), Some(ErrorCode::VersionMismatch));
    assert_eq!(
        a[1],
        ConnAction::Close {
            code: 1000,
            reason: "join rejected".into()
        }
    );
}

#[test]
fn join_rejection_is_sent_then_closed_with_1000() {
    let now = t0();
    let mut c = Connection::new(ConnectionConfig::default(), now);
    c.handle_text(now, JOIN);
    drain(&mut c);
    c.handle_join_result(
        now,
        Err(ServerMessage::error(ErrorCode::SessionNotFound, "no")),
    );
    let a = drain(&mut c);
    assert_eq!(error_code(&a[0]), Some(ErrorCode::SessionNotFound));
    assert!(matches!(a[1], ConnAction::Close { code: 1000, .. }));
    assert_eq!(c.phase(), Phase::Closed);
}

#[test]
fn heartbeat_timeout_on_a_virtual_clock() {
    let now = t0();
    let mut c = joined(now);
    // Heartbeats every 5 s keep it alive for a minute.
    for i in 1..=12 {
        let t = now.plus(Duration::from_secs(5 * i));
        c.handle_text(t, r#"{"type":"heartbeat"}"#);
        c.handle_timeout(t);
        assert!(drain(&mut c)
            .iter()
            .all(|a| !matches!(a, ConnAction::Close { .. })));
    }
    // Then silence: removed at the first check at or after 15 s of silence.
    // (The session hears of it after the close is queued.)
    let last = now.plus(Duration::from_secs(60));
    let mut t = last;
    let closed_at = loop {
        t = t.plus(Duration::from_secs(1));
        if c.poll_timeout().is_some_and(|d| d <= t.instant) {
            c.handle_timeout(t);
        }
        let a = drain(&mut c);
        if a.iter().any(|a| matches!(a, ConnAction::Close { .. })) {
            assert!(a.contains(&ConnAction::Detach(LeaveReason::Timeout)));
            break t;
        }
        assert!(
            t.instant < last.instant + Duration::from_secs(30),
            "never timed out"
        );
    };
    let silent = closed_at.instant - last.instant;
    assert!(
        silent >= Duration::from_secs(15) && silent <= Duration::from_secs(20),
        "{silent:?}"
    );
}

#[test]
fn any_valid_message_refreshes_liveness_but_invalid_ones_do_not() {
    let now = t0();
    let cfg = ConnectionConfig {
        heartbeat_timeout: Duration::from_secs(15),
        heartbeat_check_interval: Duration::from_secs(5),
        ..Default::default()
    };
    let mut c = Connection::new(cfg.clone(), now);
    c.handle_text(now, JOIN);
    c.handle_join_result(now, Ok(()));
    drain(&mut c);
    c.handle_text(
        now.plus(Duration::from_secs(14)),
        r#"{"type":"ping","timestamp":1}"#,
    );
    c.handle_timeout(now.plus(Duration::from_secs(20)));
    assert!(drain(&mut c)
        .iter()
        .all(|a| !matches!(a, ConnAction::Close { .. })));

    let mut c = Connection::new(cfg, now);
    c.handle_text(now.plus(Duration::from_secs(14)), "garbage");
    c.handle_pong(now.plus(Duration::from_secs(14)), &[0; 8]);
    c.handle_timeout(now.plus(Duration::from_secs(15)));
    assert!(drain(&mut c)
        .iter()
        .any(|a| matches!(a, ConnAction::Close { .. })));
}

#[test]
fn latency_is_measured_with_pings() {
    let now = t0();
    let mut c = joined(now);
    // No timer for probes: the liveness deadline is the only one.
    assert_eq!(
        c.poll_timeout(),
        Some(now.plus(Duration::from_secs(15)).instant)
    );
    // A frame before the latency interval carries no probe.
    c.handle_text(now.plus(Duration::from_secs(4)), r#"{"type":"heartbeat"}"#);
    assert!(drain(&mut c).is_empty());
    // The first frame after it is answered with its reply, then a probe: one write.
    let t = now.plus(Duration::from_secs(5));
    c.handle_text(t, r#"{"type":"ping","timestamp":9}"#);
    let a = drain(&mut c);
    assert!(
        matches!(a[0], ConnAction::Reply(ServerMessage::Pong, _)),
        "{a:?}"
    );
    let ConnAction::Ping(payload) = a[1] else {
        panic!("no probe after the pong: {a:?}")
    };
    c.handle_pong(t.plus(Duration::from_millis(37)), &payload);
    assert_eq!(
        drain(&mut c),
        vec![ConnAction::Session(MemberCommand::Latency(37))]
    );
    // A stale or foreign pong measures nothing.
    c.handle_pong(t.plus(Duration::from_millis(50)), &payload);
    assert!(drain(&mut c).is_empty());
    // The next probe waits for the interval, and an unchanged figure is not forwarded.
    c.handle_text(t.plus(Duration::from_secs(1)), r#"{"type":"heartbeat"}"#);
    assert!(drain(&mut c).is_empty());
    let t2 = t.plus(Duration::from_secs(5));
    c.handle_text(t2, r#"{"type":"heartbeat"}"#);
    let ConnAction::Ping(payload) = drain(&mut c)[0] else {
        panic!("no second probe")
    };
    c.handle_pong(t2.plus(Duration::from_millis(37)), &payload);
    assert!(
        drain(&mut c).is_empty(),
        "same latency: the session is not woken"
    );
}

#[test]
fn rate_limit_errors_once_then_closes_if_it_persists() {
    let now = t0();
    let cfg = ConnectionConfig {
        rate_per_sec: 10,
        rate_burst: 5,
        ..Default::default()
    };
    let mut c = Connection::new(cfg, now);
    c.handle_text(now, JOIN);
    drain(&mut c);
    c.handle_join_result(now, Ok(()));
    for _ in 0..4 {
        c.handle_text(now, r#"{"type":"heartbeat"}"#);
    }
    assert!(drain(&mut c).is_empty());
    c.handle_text(now, r#"{"type":"heartbeat"}"#);
    let a = drain(&mut c);
    assert_eq!(a.len(), 1);
    assert_eq!(error_code(&a[0]), Some(ErrorCode::RateLimited));
    // Slowing down recovers without a close.
    let later = now.plus(Duration::from_secs(1));
    c.handle_text(later, r#"{"type":"heartbeat"}"#);
    assert!(drain(&mut c).is_empty());
    // Flooding on: an error, then a close with 1008 after another burst.
    let mut closed = false;
    for _ in 0..40 {
        c.handle_text(later, r#"{"type":"heartbeat"}"#);
        let a = drain(&mut c);
        if let Some(ConnAction::Close { code, .. }) = a.first() {
            assert_eq!(*code, 1008);
            assert_eq!(a[1], ConnAction::Detach(LeaveReason::Error));
            closed = true;
        }
    }
    assert!(closed);
    assert_eq!(c.phase(), Phase::Closed);
}

#[test]
fn a_client_at_one_and_a_half_times_the_rate_hears_once_a_second_and_is_closed() {
    // Issue 9, finding 9: the old limiter forgot its drops at every admitted frame, so a
    // client at 1.5x the limit got an error for every third frame and was never closed.
    let now = t0();
    let cfg = ConnectionConfig {
        rate_per_sec: 10,
        rate_burst: 5,
        heartbeat_timeout: Duration::from_secs(3600),
        ..Default::default()
    };
    let mut c = Connection::new(cfg, now);
    c.handle_text(now, JOIN);
    drain(&mut c);
    c.handle_join_result(now, Ok(()));
    let mut errors_per_second = [0u32; 20];
    let mut closed_at = None;
    for i in 0..15 * 20 {
        let at = Duration::from_millis(1000 * i / 15);
        c.handle_text(now.plus(at), r#"{"type":"heartbeat"}"#);
        for action in drain(&mut c) {
            match action {
                a if error_code(&a) == Some(ErrorCode::RateLimited) => {
                    errors_per_second[at.as_secs() as usize] += 1
                }
                ConnAction::Close { code, .. } => {
                    assert_eq!(code, 1008);
                    closed_at.get_or_insert(at);
                }
                _ => {}
            }
        }
        if closed_at.is_some() {
            break;
        }
    }
    let closed_at = closed_at.expect("a client sending 1.5x the limit is closed");
    assert!(closed_at < Duration::from_secs(5), "{closed_at:?}");
    assert!(
        errors_per_second.iter().all(|&n| n <= 1),
        "{errors_per_second:?}"
    );
    assert_eq!(c.phase(), Phase::Closed);
}

#[test]
fn oversized_application_message_gets_too_large() {
    let now = t0();
    let cfg = ConnectionConfig {
        max_data_bytes: 64,
        ..Default::default()
    };
    let mut c = Connection::new(cfg, now);
    c.handle_text(now, JOIN);
    drain(&mut c);
    c.handle_join_result(now, Ok(()));
    let big = format!(r#"{{"type":"message","data":"{}"}}"#, "x".repeat(100));
    c.handle_text(now, &big);
    let a = drain(&mut c);
    assert_eq!(error_code(&a[0]), Some(ErrorCode::TooLarge));
    assert_eq!(c.phase(), Phase::Joined);
}

#[test]
fn socket_close_and_overflow_tell_the_session() {
    let now = t0();
    let mut c = joined(now);
    c.handle_transport_closed(now);
    assert_eq!(drain(&mut c), vec![ConnAction::Detach(LeaveReason::Error)]);
    let mut c = joined(now);
    c.handle_outbound_overflow(now);
    let a = drain(&mut c);
    // The close comes first so its code wins over any close the session queues back.
    assert!(matches!(a[0], ConnAction::Close { code: 1008, .. }));
    assert_eq!(a[1], ConnAction::Detach(LeaveReason::Error));
}

#[test]
fn unjoined_socket_that_stays_silent_is_closed_without_a_session_event() {
    let now = t0();
    let mut c = Connection::new(ConnectionConfig::default(), now);
    c.handle_timeout(now.plus(Duration::from_secs(15)));
    assert_eq!(
        drain(&mut c),
        vec![ConnAction::Close {
            code: 1000,
            reason: "heartbeat timeout".into()
        }]
    );
}

#[test]
fn a_socket_that_never_joins_is_closed_even_if_it_pings() {
    let now = t0();
    let mut c = Connection::new(ConnectionConfig::default(), now);
    for i in 1..=4 {
        let t = now.plus(Duration::from_secs(5 * i));
        c.handle_text(t, r#"{"type":"ping","timestamp":1}"#);
        c.handle_timeout(t);
    }
    let a = drain(&mut c);
    assert!(
        a.contains(&ConnAction::Close {
            code: 1000,
            reason: "no join within the heartbeat timeout".into()
        }),
        "{a:?}"
    );
}

#[test]
fn the_first_frame_decides_the_dialect_for_good() {
    let now = t0();
    let mut c = Connection::new(ConnectionConfig::default(), now);
    assert_eq!(c.dialect(), Dialect::LoudSync);
    c.handle_text(
        now,
        r#"{"type":"JOIN","timestamp":1,"messageId":"m","payload":{"sessionId":"K7P-3XQ","deviceId":"d1","deviceName":"Device 1","version":"1.0.0"}}"#,
    );
    assert_eq!(c.dialect(), Dialect::App);
    assert!(
        matches!(&drain(&mut c)[..], [ConnAction::Join(j)] if j.session_id.as_deref() == Some("K7P-3XQ"))
    );
    c.handle_join_result(now, Ok(()));
    // Our dialect's frames are not the app's: an error, and the dialect stays.
    c.handle_text(now, r#"{"type":"heartbeat"}"#);
    assert_eq!(
        error_code(&drain(&mut c)[0]),
        Some(ErrorCode::InvalidMessage)
    );
    assert_eq!(c.dialect(), Dialect::App);
    c.handle_text(
        now,
        r#"{"type":"LEAVE","timestamp":1,"payload":{"deviceId":"d1"}}"#,
    );
    assert_eq!(
        drain(&mut c),
        vec![ConnAction::Session(MemberCommand::Leave)]
    );
}

#[test]
fn a_member_that_keeps_talking_wakes_its_timer_once_per_timeout_not_per_check() {
    let now = t0();
    let mut c = joined(now);
    let mut wakes = 0;
    // 150 s of a heartbeat every 5 s, driven as the I/O layer does: wake when due.
    for ms in (100..=150_000).step_by(100) {
        let t = now.plus(Duration::from_millis(ms));
        if ms % 5_000 == 0 {
            c.handle_text(t, r#"{"type":"heartbeat"}"#);
        }
        if c.poll_timeout().is_some_and(|d| d <= t.instant) {
            wakes += 1;
            c.handle_timeout(t);
        }
        assert!(drain(&mut c)
            .iter()
            .all(|a| !matches!(a, ConnAction::Close { .. })));
    }
    // A timer checked every 5 s would have fired 30 times.
    assert!(wakes <= 11, "{wakes} wake-ups");
    // After the last heartbeat (at 150 s) the deadline is 15 s later at the latest.
    assert!(c.poll_timeout().unwrap() <= now.plus(Duration::from_secs(165)).instant);
}

#[test]
fn a_decided_close_gets_the_close_timeout_then_the_transport_is_aborted() {
    let now = t0();
    let mut c = joined(now);
    c.handle_text(now, r#"{"type":"leave"}"#);
    drain(&mut c);
    // The session closes the member: the close deadline starts.
    c.handle_closed_by_server(now);
    let deadline = now.plus(Duration::from_secs(1));
    assert_eq!(c.poll_timeout(), Some(deadline.instant));
    c.handle_timeout(now.plus(Duration::from_millis(999)));
    assert!(drain(&mut c).is_empty());
    c.handle_timeout(deadline);
    assert_eq!(drain(&mut c), vec![ConnAction::Abort]);
    assert_eq!(c.poll_timeout(), None);
    // Its own close decisions start the same deadline.
    let mut c = joined(now);
    c.handle_outbound_overflow(now);
    drain(&mut c);
    assert_eq!(c.poll_timeout(), Some(deadline.instant));
}

#[test]
fn nothing_is_read_while_a_join_is_routed() {
    let now = t0();
    let mut c = Connection::new(ConnectionConfig::default(), now);
    assert!(!c.reading_paused());
    c.handle_text(now, JOIN);
    drain(&mut c);
    assert_eq!(c.phase(), Phase::Joining);
    assert!(c.reading_paused());
    c.handle_join_result(now, Ok(()));
    assert!(!c.reading_paused());
}

#[test]
fn media_token_before_join_is_the_landed_invalid_message_and_after_join_goes_to_the_session() {
    // Issue 13 R2: the exact text, the socket stays.
    let now = t0();
    let mut c = Connection::new(ConnectionConfig::default(), now);
    c.handle_text(now, r#"{"type":"media_token"}"#);
    let a = drain(&mut c);
    match &a[..] {
        [ConnAction::Reply(
            ServerMessage::Error {
                code: ErrorCode::InvalidMessage,
                message,
                ..
            },
            _,
        )] => assert_eq!(
            message,
            "media_token: send `join` first; this connection is not in a session"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.phase(), Phase::AwaitingJoin);
    let mut c = joined(now);
    c.handle_text(now, r#"{"type":"media_token","role":"publish"}"#);
    assert_eq!(
        drain(&mut c),
        vec![ConnAction::Session(MemberCommand::MediaToken)]
    );
}

#[test]
fn media_token_requests_count_toward_the_rate_limit() {
    let now = t0();
    let cfg = ConnectionConfig {
        rate_per_sec: 10,
        rate_burst: 5,
        ..Default::default()
    };
    let mut c = Connection::new(cfg, now);
    c.handle_text(now, JOIN);
    drain(&mut c);
    c.handle_join_result(now, Ok(()));
    for _ in 0..4 {
        c.handle_text(now, r#"{"type":"media_token"}"#);
    }
    assert_eq!(
        drain(&mut c),
        vec![ConnAction::Session(MemberCommand::MediaToken); 4]
    );
    c.handle_text(now, r#"{"type":"media_token"}"#);
    let a = drain(&mut c);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(error_code(&a[0]), Some(ErrorCode::RateLimited));
}

#[test]
fn an_app_connection_cannot_ask_for_a_media_token() {
    // Issue 13 R3: the app's dialect has no such message.
    let now = t0();
    let mut c = Connection::new(ConnectionConfig::default(), now);
    c.handle_text(
        now,
        r#"{"type":"JOIN","timestamp":1,"messageId":"m","payload":{"sessionId":"K7P-3XQ","deviceId":"d1","deviceName":"Device 1","version":"1.0.0"}}"#,
    );
    drain(&mut c);
    c.handle_join_result(now, Ok(()));
    for frame in [
        r#"{"type":"MEDIA_TOKEN","timestamp":1,"payload":{}}"#,
        r#"{"type":"media_token"}"#,
    ] {
        c.handle_text(now, frame);
        let a = drain(&mut c);
        assert_eq!(a.len(), 1, "{frame}: {a:?}");
        assert_eq!(
            error_code(&a[0]),
            Some(ErrorCode::InvalidMessage),
            "{frame}"
        );
    }
}
