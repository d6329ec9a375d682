//! The client rules on a virtual clock: join, member table, heartbeats, latency, silence,
//! reconnection attempts, and the endings that must not reconnect, on plain connections
//! (`resume: false`, the landed first layer). The resume layer's rules are in
//! `resume_tests.rs`.

use super::*;
use crate::config::ClientConfig;
use std::time::Duration;

pub(super) const T0_MS: u64 = 1_800_000_000_000;

fn config() -> ClientConfig {
    let mut c = ClientConfig::member("ws://x/", "s1", "dev-1", "Phone");
    c.jitter_seed = 1;
    c.resume = false;
    c
}

pub(super) struct Rig {
    pub(super) m: Machine,
    t0: Instant,
    pub(super) now: Instant,
}

impl Rig {
    pub(super) fn new(config: ClientConfig) -> Rig {
        let t0 = Instant::now();
        Rig {
            m: Machine::new(config, t0, T0_MS),
            t0,
            now: t0,
        }
    }
    pub(super) fn at(&mut self, d: Duration) -> Instant {
        self.now = self.t0 + d;
        self.now
    }
    /// Every action, without the role announcements ([`Event::RoleChanged`]): the earlier
    /// layers' tests compare whole sequences, and `handoff_tests.rs` covers the roles (with
    /// [`Rig::drain_all`]).
    pub(super) fn drain(&mut self) -> Vec<Action> {
        self.drain_all()
            .into_iter()
            .filter(|a| !matches!(a, Action::Emit(Event::RoleChanged(_))))
            .collect()
    }
    /// Every action, the role announcements included.
    pub(super) fn drain_all(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.m.poll_action()).collect()
    }
    pub(super) fn events(&mut self) -> Vec<Event> {
        self.drain()
            .into_iter()
            .filter_map(|a| match a {
                Action::Emit(e) => Some(e),
                _ => None,
            })
            .collect()
    }
    pub(super) fn text(&mut self, v: serde_json::Value) {
        let now = self.now;
        self.m.handle_text(now, &v.to_string());
    }
    pub(super) fn elapsed(&self) -> Duration {
        self.now - self.t0
    }
    /// Runs timers until `until`, in 100 ms steps; returns every action.
    pub(super) fn run_until(&mut self, until: Duration) -> Vec<Action> {
        let mut out = Vec::new();
        let mut t = self.elapsed();
        while t < until {
            t += Duration::from_millis(100);
            let now = self.at(t);
            if self.m.poll_timeout().is_some_and(|d| d <= now) {
                self.m.handle_timeout(now);
            }
            out.extend(self.drain());
        }
        out
    }
    /// Connects and joins with `client_id`.
    pub(super) fn join(&mut self, client_id: &str) {
        let now = self.now;
        self.m.handle_connected(now);
        self.text(
            serde_json::json!({"type":"welcome","timestamp":1,"clientId":client_id,
            "sessionInfo":{"id":"s1","name":"S","hostId":"h"}}),
        );
        self.text(serde_json::json!({"type":"member_list","timestamp":1,"members":[
            {"id":"h","name":"Host","isHost":true,"connectionStatus":"connected","joinedAt":1,"latency":12},
            {"id":client_id,"name":"Phone","isHost":false,"connectionStatus":"connected","joinedAt":2}]}));
    }
}

pub(super) fn sends(actions: &[Action]) -> Vec<serde_json::Value> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(t) => Some(serde_json::from_str(t).unwrap()),
            _ => None,
        })
        .collect()
}

/// What the sent frames say, read with the server's own decoder.
pub(super) fn decoded(actions: &[Action]) -> Vec<ClientMessage> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(t) => Some(loudsync_protocol::decode(t).expect("a valid client frame")),
            _ => None,
        })
        .collect()
}

fn started() -> Rig {
    let mut r = Rig::new(config());
    r.m.start(r.now);
    assert_eq!(
        r.drain(),
        vec![
            Action::Emit(Event::StateChanged(ConnectionState::Connecting)),
            Action::Connect
        ]
    );
    r
}

fn connected() -> Rig {
    let mut r = started();
    r.join("c1");
    r.drain();
    r
}

#[test]
fn join_sends_device_info_then_welcome_connects_and_fills_the_member_table() {
    let mut r = Rig::new({
        let mut c = ClientConfig::host("ws://x/", "s1", "Party", "mac", "Mac");
        c.jitter_seed = 1;
        c.resume = false;
        c
    });
    r.m.start(r.now);
    r.drain();
    r.m.handle_connected(r.now);
    let join = &sends(&r.drain())[0];
    assert_eq!(join["type"], "join");
    assert_eq!(join["sessionId"], "s1");
    assert_eq!(join["sessionName"], "Party");
    assert_eq!(
        join["deviceInfo"],
        serde_json::json!({"id":"mac","name":"Mac","type":"host"})
    );
    assert_eq!(join["protocolVersion"], "1.0");

    let mut r = started();
    r.join("c1");
    let ev = r.events();
    assert!(ev.contains(&Event::StateChanged(ConnectionState::Connected)));
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::Welcome { client_id, .. } if client_id == "c1")));
    assert!(matches!(ev.last(), Some(Event::MemberList(m)) if m.len() == 2));
    assert_eq!(r.m.state(), ConnectionState::Connected);
    assert_eq!(r.m.client_id(), Some("c1"));
    assert_eq!(r.m.members()[0].latency, Some(12));

    r.text(
        serde_json::json!({"type":"member_joined","timestamp":1,"member":
        {"id":"c2","name":"Tab","isHost":false,"connectionStatus":"connected","joinedAt":3}}),
    );
    let ids: Vec<_> = r.m.members().iter().map(|m| m.id.clone()).collect();
    assert_eq!(ids, ["h", "c1", "c2"]);
    r.text(serde_json::json!({"type":"member_left","timestamp":1,"memberId":"c1","reason":"left"}));
    let ids: Vec<_> = r.m.members().iter().map(|m| m.id.clone()).collect();
    assert_eq!(ids, ["h", "c2"]);
    let ev = r.events();
    assert!(matches!(&ev[0], Event::MemberJoined(m) if m.id == "c2"));
    assert_eq!(
        ev[1],
        Event::MemberLeft {
            member_id: "c1".into(),
            reason: LeaveReason::Left
        }
    );
}

#[test]
fn heartbeat_and_ping_every_interval_and_latency_from_own_send_time() {
    let mut r = connected();
    let actions = r.run_until(Duration::from_millis(10_050));
    let sent = sends(&actions);
    let kinds: Vec<_> = sent
        .iter()
        .map(|v| v["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds,
        [
            "heartbeat",
            "ping",
            "heartbeat",
            "ping",
            "heartbeat",
            "ping"
        ]
    );
    let ping_ts = sent[5]["timestamp"].as_u64().unwrap();
    // The first beat goes out at the first timer after joining (the 100 ms step), then every 5 s.
    assert_eq!(ping_ts, T0_MS + 10_100);
    r.at(Duration::from_millis(10_137));
    r.m.handle_activity(r.now);
    r.text(serde_json::json!({"type":"pong","timestamp":ping_ts}));
    assert_eq!(r.events(), vec![Event::Latency { ms: 37 }]);
    assert_eq!(r.m.latency(), Some(37));
}

#[test]
fn silence_is_a_lost_connection_then_three_attempts_two_seconds_apart_then_failed() {
    let mut r = connected();
    // The server answers nothing: after 15 s the client notices.
    let actions = r.run_until(Duration::from_secs(16));
    let lost_at = actions
        .iter()
        .position(|a| *a == Action::CloseSocket)
        .expect("closes the socket");
    assert!(
        actions[lost_at..].contains(&Action::Emit(Event::StateChanged(
            ConnectionState::Reconnecting
        )))
    );
    assert_eq!(r.m.state(), ConnectionState::Reconnecting);
    assert_eq!(
        r.m.client_id(),
        None,
        "session state is cleared while reconnecting"
    );
    // Attempts 2 s apart (each connect fails at once), then failed.
    let mut attempts = Vec::new();
    let mut failed_reason = None;
    let mut t = r.elapsed();
    while t < Duration::from_secs(30) && r.m.state() != ConnectionState::Failed {
        t += Duration::from_millis(100);
        let now = r.at(t);
        if r.m.poll_timeout().is_some_and(|d| d <= now) {
            r.m.handle_timeout(now);
        }
        for a in r.drain() {
            if a == Action::Connect {
                attempts.push(t);
                r.m.handle_connect_failed(now, "refused");
            }
            if let Action::Emit(Event::Failed { reason }) = a {
                failed_reason = Some(reason);
            }
        }
        if let Some(Action::Emit(Event::Failed { reason })) = r.m.poll_action() {
            failed_reason = Some(reason);
        }
    }
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[1] - attempts[0], Duration::from_secs(2));
    assert_eq!(attempts[2] - attempts[1], Duration::from_secs(2));
    assert_eq!(r.m.state(), ConnectionState::Failed);
    assert!(r.m.is_ended());
    let reason = failed_reason.unwrap_or_else(|| {
        r.events()
            .into_iter()
            .find_map(|e| match e {
                Event::Failed { reason } => Some(reason),
                _ => None,
            })
            .expect("a Failed event")
    });
    assert!(reason.contains("could not connect: refused"), "{reason}");
}

#[test]
fn already_joined_and_session_not_found_on_rejoin_are_failed_attempts() {
    let mut r = connected();
    r.m.handle_closed(r.now, None); // 1006: dropped
    let ev = r.events();
    assert!(matches!(&ev[0], Event::ConnectionLost { reason } if reason.contains("dropped")));
    for (i, code) in ["already_joined", "session_not_found"]
        .into_iter()
        .enumerate()
    {
        let acts = r.run_until(r.elapsed() + Duration::from_secs(2));
        assert!(acts.contains(&Action::Connect), "attempt {}", i + 1);
        r.m.handle_connected(r.now);
        r.drain();
        r.text(serde_json::json!({"type":"error","timestamp":1,"code":code,"message":"m"}));
        let acts = r.drain();
        assert!(acts.contains(&Action::CloseSocket));
        assert_eq!(
            r.m.state(),
            ConnectionState::Reconnecting,
            "{code} is not final"
        );
    }
    // Third attempt succeeds: connected again with a new id.
    r.run_until(r.elapsed() + Duration::from_secs(2));
    r.join("c9");
    assert_eq!(r.m.state(), ConnectionState::Connected);
    assert_eq!(r.m.client_id(), Some("c9"));
    // And the attempt count starts over for the next loss.
    r.m.handle_closed(r.now, None);
    r.drain();
    let acts = r.run_until(r.elapsed() + Duration::from_secs(2));
    assert!(acts.contains(&Action::Emit(Event::Reconnecting { attempt: 1, of: 3 })));
}

#[test]
fn other_join_errors_on_rejoin_fail_at_once() {
    let mut r = connected();
    r.m.handle_closed(r.now, Some((1011, "")));
    r.run_until(r.elapsed() + Duration::from_secs(2));
    r.m.handle_connected(r.now);
    r.text(
        serde_json::json!({"type":"error","timestamp":1,"code":"session_full","message":"full"}),
    );
    let ev = r.events();
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::Error(ServerError {
            code: AnyErrorCode::Known(ErrorCode::SessionFull),
            ..
        })
    )));
    assert!(ev.iter().any(|e| matches!(e, Event::Failed { .. })));
    assert_eq!(r.m.state(), ConnectionState::Failed);
}

#[test]
fn kicked_ends_without_reconnecting_and_clears_the_session() {
    let mut r = connected();
    r.text(serde_json::json!({"type":"kicked","timestamp":1,"reason":"bye"}));
    r.m.handle_closed(r.now, Some((close_code::NORMAL, "")));
    let ev = r.events();
    assert!(ev.contains(&Event::Kicked {
        reason: "bye".into()
    }));
    assert!(ev.contains(&Event::StateChanged(ConnectionState::Disconnected)));
    assert!(r.m.is_ended());
    assert!(r.m.members().is_empty() && r.m.client_id().is_none());
    assert!(
        r.run_until(Duration::from_secs(30)).is_empty(),
        "no reconnection"
    );
}

#[test]
fn session_closed_is_final_unless_the_server_is_going_away() {
    let mut r = connected();
    r.text(
        serde_json::json!({"type":"session_closed","timestamp":1,"reason":"Host ended the session"}),
    );
    r.m.handle_closed(r.now, Some((close_code::NORMAL, "")));
    let ev = r.events();
    assert!(ev.contains(&Event::SessionClosed {
        reason: "Host ended the session".into()
    }));
    assert!(r.m.is_ended());
    assert_eq!(r.m.state(), ConnectionState::Disconnected);

    let mut r = connected();
    r.text(
        serde_json::json!({"type":"session_closed","timestamp":1,"reason":"Server shutting down"}),
    );
    r.m.handle_closed(r.now, Some((close_code::GOING_AWAY, "")));
    let ev = r.events();
    assert!(!ev.iter().any(|e| matches!(e, Event::SessionClosed { .. })));
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::ConnectionLost { reason } if reason.contains("going away"))));
    assert_eq!(r.m.state(), ConnectionState::Reconnecting);
}

#[test]
fn first_join_rejection_ends_without_reconnecting() {
    let mut r = started();
    r.m.handle_connected(r.now);
    r.text(
        serde_json::json!({"type":"error","timestamp":1,"code":"session_not_found","message":"no"}),
    );
    let acts = r.drain();
    assert!(acts.contains(&Action::CloseSocket));
    assert!(acts.iter().any(|a| matches!(
        a,
        Action::Emit(Event::Error(ServerError {
            code: AnyErrorCode::Known(ErrorCode::SessionNotFound),
            ..
        }))
    )));
    assert!(r.m.is_ended());
    assert_eq!(r.m.state(), ConnectionState::Disconnected);
}

#[test]
fn first_connect_failure_is_failed_without_retrying() {
    let mut r = started();
    r.m.handle_connect_failed(r.now, "connection refused");
    let ev = r.events();
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::Failed { reason } if reason.contains("connection refused"))));
    assert_eq!(r.m.state(), ConnectionState::Failed);
    assert!(r.run_until(Duration::from_secs(30)).is_empty());
}

#[test]
fn commands_need_a_connection_and_leave_ends_cleanly() {
    let mut r = started();
    assert_eq!(
        r.m.send_message(r.now, serde_json::json!(1), None),
        Err(CommandError::NotConnected)
    );
    let mut r = connected();
    r.m.kick(r.now, "c2", Some("rude")).unwrap();
    r.m.send_message(r.now, serde_json::json!({"a":1}), Some("h"))
        .unwrap();
    r.m.request_member_list(r.now).unwrap();
    let sent = decoded(&r.drain());
    assert_eq!(
        sent,
        [
            ClientMessage::kick("c2", Some("rude")),
            ClientMessage::message(RawJson::from_text(r#"{"a":1}"#).unwrap(), Some("h")),
            ClientMessage::MemberList,
        ]
    );
    r.m.leave(r.now);
    assert_eq!(decoded(&r.drain()), [ClientMessage::leave(None)]);
    assert_eq!(
        r.m.ping(r.now),
        Err(CommandError::NotConnected),
        "nothing after leave"
    );
    r.m.handle_closed(r.now, Some((close_code::NORMAL, "")));
    assert!(r
        .events()
        .contains(&Event::StateChanged(ConnectionState::Disconnected)));
    assert!(r.m.is_ended());
}

#[test]
fn join_timeout_counts_as_a_failed_attempt() {
    let mut r = connected();
    r.m.handle_closed(r.now, None);
    r.run_until(r.elapsed() + Duration::from_secs(2));
    r.m.handle_connected(r.now);
    r.drain();
    let acts = r.run_until(r.elapsed() + Duration::from_secs(11));
    assert!(acts.contains(&Action::CloseSocket));
    assert_eq!(r.m.state(), ConnectionState::Reconnecting);
}

#[test]
fn every_frame_sent_is_valid_for_the_server() {
    let mut r = Rig::new({
        let mut c = ClientConfig::host("ws://x/", "s1", "Party", "mac", "Mac");
        c.jitter_seed = 1;
        c.resume = false;
        c
    });
    r.m.start(r.now);
    r.drain();
    r.m.handle_connected(r.now);
    let ClientMessage::Join(join) = &decoded(&r.drain())[0] else {
        panic!("not a join")
    };
    assert_eq!(join.session_name.as_deref(), Some("Party"));
    assert_eq!(
        join.protocol_version.as_deref(),
        Some(loudsync_protocol::PROTOCOL_VERSION)
    );
    let mut r = connected();
    let sent = decoded(&r.run_until(Duration::from_millis(200)));
    assert_eq!(sent[0], ClientMessage::Heartbeat);
    assert!(matches!(sent[1], ClientMessage::Ping { .. }));
}

const QUOTA: &str = r#"{"type":"error","code":"quota_exceeded","message":"over your quota","details":{"limit":5},"timestamp":1,"retryAfter":30}"#;
const PRESENCE: &str =
    r#"{"type":"presence_diff","timestamp":1,"added":["c_9"],"removed":[],"v":1e2}"#;

#[test]
fn a_newer_servers_error_code_reaches_the_application() {
    let mut r = connected();
    r.m.handle_text(r.now, QUOTA);
    assert_eq!(
        r.events(),
        [Event::Error(ServerError {
            code: AnyErrorCode::Unknown("quota_exceeded".into()),
            message: "over your quota".into(),
            details: Some(serde_json::json!({"limit": 5})),
        })]
    );
    assert_eq!(
        r.m.state(),
        ConnectionState::Connected,
        "not fatal when joined"
    );
}

#[test]
fn a_newer_servers_message_type_reaches_the_application_with_its_bytes() {
    let mut r = connected();
    let members = r.m.members().to_vec();
    r.m.handle_text(r.now, PRESENCE);
    assert_eq!(
        r.events(),
        [Event::Unknown {
            kind: "presence_diff".into(),
            raw: RawJson::from_text(PRESENCE).unwrap(),
        }]
    );
    assert_eq!(
        r.m.members(),
        members,
        "the client's own state is unchanged"
    );
    assert_eq!(r.m.state(), ConnectionState::Connected);
}

#[test]
fn while_joining_unknown_types_are_delivered_and_unknown_codes_refuse_the_join() {
    let mut r = started();
    r.m.handle_connected(r.now);
    r.drain();
    r.m.handle_text(r.now, PRESENCE);
    assert!(matches!(&r.events()[..], [Event::Unknown { kind, .. }] if kind == "presence_diff"));
    r.m.handle_text(r.now, QUOTA);
    let acts = r.drain();
    assert!(acts.contains(&Action::CloseSocket));
    assert!(acts.iter().any(|a| matches!(
        a,
        Action::Emit(Event::Error(ServerError { code, .. })) if code.as_str() == "quota_exceeded"
    )));
    assert!(r.m.is_ended());
}

#[test]
fn known_types_with_extra_fields_still_work() {
    let mut r = connected();
    r.m.handle_text(
        r.now,
        r#"{"type":"member_left","timestamp":1,"memberId":"c1","reason":"left","colour":"red"}"#,
    );
    assert_eq!(
        r.events(),
        [Event::MemberLeft {
            member_id: "c1".into(),
            reason: LeaveReason::Left
        }]
    );
}

fn host_config() -> ClientConfig {
    let mut c = ClientConfig::host("ws://x/", "s1", "Party", "mac", "Mac");
    c.jitter_seed = 1;
    c.resume = false;
    c
}

/// A host, joined as `h`.
fn hosting() -> Rig {
    let mut r = Rig::new(host_config());
    r.m.start(r.now);
    r.drain();
    r.join("h");
    r.drain();
    r
}

#[test]
fn a_host_timed_out_by_the_server_is_told_and_does_not_re_create_the_session() {
    // Frozen (SIGSTOP) past the server's heartbeat timeout, then thawed: the server has
    // closed the socket with 1000 `heartbeat timeout` and ended the session with it.
    let mut r = hosting();
    r.at(Duration::from_secs(40));
    r.m.handle_closed(r.now, Some((close_code::NORMAL, "heartbeat timeout")));
    let ev = r.events();
    let closed = ev
        .iter()
        .find_map(|e| match e {
            Event::SessionClosed { reason } => Some(reason.clone()),
            _ => None,
        })
        .expect("told that the session ended");
    assert!(
        closed.contains("1000 heartbeat timeout") && closed.contains("not re-created"),
        "{closed}"
    );
    assert!(r.m.is_ended());
    assert_eq!(r.m.state(), ConnectionState::Disconnected);
    let later = r.run_until(Duration::from_secs(80));
    assert!(
        !later.contains(&Action::Connect),
        "no reconnection, so no new session under the same id: {later:?}"
    );
}

#[test]
fn a_host_that_hears_nothing_is_told_its_session_ended_rather_than_rejoining() {
    // The thawed host's own timer may fire before it reads the close frame.
    let mut r = hosting();
    let actions = r.run_until(Duration::from_secs(16));
    assert!(actions.contains(&Action::CloseSocket));
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Emit(Event::SessionClosed { reason }) if reason.contains("silence")
    )));
    assert!(!actions.contains(&Action::Connect));
    assert!(r.m.is_ended());
    // A dropped socket (no close frame) is the same for a host.
    let mut r = hosting();
    r.m.handle_closed(r.now, None);
    assert!(r
        .events()
        .iter()
        .any(|e| matches!(e, Event::SessionClosed { reason } if reason.contains("dropped"))));
    assert!(r.run_until(Duration::from_secs(30)).is_empty());
}

#[test]
fn a_host_whose_server_goes_away_reopens_the_session_after_the_restart() {
    let mut r = hosting();
    r.text(
        serde_json::json!({"type":"session_closed","timestamp":1,"reason":"Server shutting down"}),
    );
    r.m.handle_closed(r.now, Some((close_code::GOING_AWAY, "session closed")));
    assert!(!r
        .events()
        .iter()
        .any(|e| matches!(e, Event::SessionClosed { .. })));
    assert_eq!(r.m.state(), ConnectionState::Reconnecting);
    let acts = r.run_until(r.elapsed() + Duration::from_secs(2));
    assert!(acts.contains(&Action::Connect));
    // 1001 without a `session_closed` (the socket was closed before it) is the same.
    let mut r = hosting();
    r.m.handle_closed(
        r.now,
        Some((close_code::GOING_AWAY, "server shutting down")),
    );
    assert_eq!(r.m.state(), ConnectionState::Reconnecting);
}

#[test]
fn a_member_whose_connection_is_lost_still_rejoins() {
    let mut r = connected();
    r.m.handle_closed(r.now, Some((close_code::NORMAL, "heartbeat timeout")));
    let ev = r.events();
    assert!(!ev.iter().any(|e| matches!(e, Event::SessionClosed { .. })));
    assert!(ev.iter().any(
        |e| matches!(e, Event::ConnectionLost { reason } if reason.contains("heartbeat timeout"))
    ));
    assert_eq!(r.m.state(), ConnectionState::Reconnecting);
}

#[test]
fn join_carries_the_password_and_the_token() {
    let mut c = config();
    c.password = Some("open sesame".into());
    c.token = Some("t.o.k".into());
    let mut r = Rig::new(c);
    r.m.start(r.now);
    r.drain();
    r.m.handle_connected(r.now);
    let ClientMessage::Join(join) = &decoded(&r.drain())[0] else {
        panic!("not a join")
    };
    assert_eq!(join.password.as_deref(), Some("open sesame"));
    assert_eq!(join.token.as_deref(), Some("t.o.k"));
    // And neither when not configured.
    let mut r = started();
    r.m.handle_connected(r.now);
    let sent = &sends(&r.drain())[0];
    assert!(
        sent.get("password").is_none() && sent.get("token").is_none(),
        "{sent}"
    );
}

const ACCESS_CODES: [&str; 6] = [
    "password_required",
    "wrong_password",
    "token_required",
    "invalid_token",
    "host_not_allowed",
    "too_many_attempts",
];

#[test]
fn access_refusals_are_typed_and_never_retried() {
    for code in ACCESS_CODES {
        // The first join: ended, with the typed error.
        let mut r = started();
        r.m.handle_connected(r.now);
        r.text(serde_json::json!({"type":"error","timestamp":1,"code":code,"message":"no"}));
        let ev = r.events();
        let Some(Event::Error(e)) = ev.iter().find(|e| matches!(e, Event::Error(_))) else {
            panic!("{code}: no error event in {ev:?}")
        };
        assert!(e.is_access_refusal(), "{code}");
        assert_eq!(e.code.known().map(ErrorCode::as_str), Some(code));
        assert!(r.m.is_ended(), "{code}");
        assert!(r.run_until(Duration::from_secs(30)).is_empty(), "{code}");

        // A rejoin after a lost connection: failed at once, no further attempt.
        let mut r = connected();
        r.m.handle_closed(r.now, None);
        r.run_until(r.elapsed() + Duration::from_secs(2));
        r.m.handle_connected(r.now);
        r.drain();
        r.text(serde_json::json!({"type":"error","timestamp":1,"code":code,"message":"no"}));
        assert_eq!(r.m.state(), ConnectionState::Failed, "{code}");
        assert!(
            !r.run_until(r.elapsed() + Duration::from_secs(30))
                .contains(&Action::Connect),
            "{code} retried"
        );
    }
    let other = ServerError {
        code: ErrorCode::SessionFull.into(),
        message: String::new(),
        details: None,
    };
    assert!(!other.is_access_refusal());
}
