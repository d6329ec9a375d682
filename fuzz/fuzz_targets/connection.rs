//! Fuzz target `connection`: the core's per-transport state machine
//! ([`loudsync_core::connection::Connection`]), which every text frame a client sends reaches
//! after the WebSocket layer: dialect detection on the first frame, decoding in either
//! dialect, the join gate, the rate limit, liveness and the close deadline.
//!
//! Input: steps separated by `0xFF`. A step starting with `0x01` lets its next byte's worth
//! of 10 ms pass and fires the timers; `0x02` is a binary frame; `0x03` a pong with the rest
//! as payload; `0x04` the transport closing; anything else a text frame. A routed join is
//! answered by the session at once: accepted, or (when the join's session id starts with
//! `x`) refused. The limits are small (see [`config`]) so that short inputs reach them.
//!
//! A resume (a connection token with `lastSeq` as the first frame) is answered at once too:
//! resumed (after seq 3) when the token starts with `A`, else refused as `expired`. The
//! server's local token is fixed (32 `a`s), so inputs can complete the handshake.
//!
//! Beyond "no panic": only joins with a valid session id are routed, nothing is routed or
//! forwarded to a session before a join (or resume) succeeded or once the connection is
//! closed, numbered commands come only from a numbered connection, each `seq` is forwarded
//! at most once and in rising order, and every reply can be encoded in the connection's
//! dialect.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use loudsync_core::connection::{ConnAction, Connection, ConnectionConfig, Phase, ResumeAnswer};
use loudsync_core::Now;
use loudsync_protocol::app::{self, Dialect, EncodeContext};
use loudsync_protocol::client::valid_session_id;
use loudsync_protocol::{encode, ErrorCode, ResumeFailure, ServerMessage};

fuzz_target!(|data: &[u8]| {
    let mut now = Now {
        instant: Instant::now(),
        unix_ms: 1_700_000_000_000,
    };
    let mut conn = Connection::new(config(), now);
    let mut last_seq = 0;
    for step in data.split(|&b| b == 0xFF) {
        let before = conn.phase();
        match step {
            [0x01, rest @ ..] => {
                let ticks = u64::from(rest.first().copied().unwrap_or(1));
                now = now.plus(Duration::from_millis(10 * ticks));
                conn.handle_timeout(now);
            }
            [0x02, ..] => conn.handle_binary(now),
            [0x03, payload @ ..] => conn.handle_pong(now, payload),
            [0x04, ..] => conn.handle_transport_closed(now),
            text => {
                let Ok(text) = std::str::from_utf8(text) else {
                    continue;
                };
                conn.handle_text(now, text);
            }
        }
        drive(&mut conn, now, before, &mut last_seq);
    }
});

/// The defaults, but with limits small enough for a short input to reach: a burst of 4
/// frames, 20 a second, 64-byte `message` frames, a latency probe every second.
fn config() -> ConnectionConfig {
    ConnectionConfig {
        rate_per_sec: 20,
        rate_burst: 4,
        max_data_bytes: 64,
        latency_interval: Duration::from_secs(1),
        ack_every: 3,
        local_token: || "a".repeat(32),
        ..ConnectionConfig::default()
    }
}

/// Plays the member driver and the session: answers joins, checks every action.
fn drive(conn: &mut Connection, now: Now, before: Phase, last_seq: &mut u64) {
    for _ in 0..1000 {
        let Some(action) = conn.poll_action() else {
            return;
        };
        match action {
            ConnAction::Join(join) => {
                // A host may leave the id out (a new session); otherwise it is valid.
                assert!(
                    join.session_id.as_deref().is_none_or(valid_session_id),
                    "{join:?} routed"
                );
                assert_eq!(before, Phase::AwaitingJoin, "join routed in {before:?}");
                let result = if join
                    .session_id
                    .as_deref()
                    .is_some_and(|id| id.starts_with('x'))
                {
                    Err(ServerMessage::error(
                        ErrorCode::SessionNotFound,
                        "no such session",
                    ))
                } else {
                    Ok(())
                };
                conn.handle_join_result(now, result);
            }
            ConnAction::Session(command) => {
                assert!(
                    before == Phase::Joined,
                    "{command:?} forwarded in {before:?}"
                );
            }
            ConnAction::Numbered { seq, command } => {
                assert!(
                    before == Phase::Joined && conn.is_numbered(),
                    "{command:?} numbered {seq} in {before:?}"
                );
                assert!(seq > *last_seq, "seq {seq} after {last_seq}");
                *last_seq = seq;
            }
            ConnAction::Resume { token, .. } => {
                assert_eq!(before, Phase::AwaitingJoin, "resume routed in {before:?}");
                let answer = if token.starts_with('A') {
                    *last_seq = 3;
                    ResumeAnswer::Resumed { last_in: 3 }
                } else {
                    ResumeAnswer::Failed(ResumeFailure::Expired)
                };
                conn.handle_resume_result(now, answer);
            }
            ConnAction::Reply(message, stamp) => {
                let text = match conn.dialect() {
                    Dialect::LoudSync => encode(&message, &stamp),
                    Dialect::App => {
                        let ctx = EncodeContext {
                            now_ms: now.unix_ms,
                            message_id: "m-1",
                            address_of: &|_| None,
                        };
                        app::encode(&message, &stamp, &ctx)
                    }
                };
                assert!(!text.is_empty());
            }
            ConnAction::Detach(_)
            | ConnAction::DetachFatal(_)
            | ConnAction::Ping(_)
            | ConnAction::Close { .. }
            | ConnAction::Abort => {}
        }
    }
    panic!("the connection asked for more than 1000 actions in one step");
}
