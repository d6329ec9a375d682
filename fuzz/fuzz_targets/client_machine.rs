//! Fuzz target `client_machine`: the client SDK's state machine
//! ([`loudsync_client::machine::Machine`]) reading what a hostile server sends: any sequence
//! of text frames, closes and passing time, from the first `join` to the end.
//!
//! Input: steps separated by `0xFF` (a byte UTF-8 never has). A step starting with `0x01`
//! lets its next byte's worth of quarter seconds pass and fires the timers; `0x02` closes
//! the socket (with the close code in the next two bytes and the reason after them, if
//! any); `0x03` makes the
//! application send something (ping, member list, kick, message); anything else is a text
//! frame from the server. The driver's part is played as `crate::Client` plays it: a
//! `Connect` succeeds at once, a `CloseSocket` reports the socket closed.
//!
//! Beyond "no panic": every frame the machine sends is one the server's decoder accepts, and
//! an ended machine asks for no timer.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use loudsync_client::machine::{Action, Machine};
use loudsync_client::ClientConfig;

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let mut now = start;
    let mut config = ClientConfig::host("ws://fuzz/", "K7P-3XQ", "Jam", "dev-1", "Host");
    config.jitter_seed = 7;
    let mut machine = Machine::new(config, now, 1_700_000_000_000);
    machine.start(now);
    drive(&mut machine, now);
    for step in data.split(|&b| b == 0xFF) {
        match step {
            [0x01, rest @ ..] => {
                now += Duration::from_millis(250 * u64::from(rest.first().copied().unwrap_or(1)));
                machine.handle_timeout(now);
            }
            [0x02, rest @ ..] => {
                let reason;
                let close = match rest {
                    [a, b, tail @ ..] => {
                        reason = String::from_utf8_lossy(tail);
                        Some((u16::from_be_bytes([*a, *b]), &*reason))
                    }
                    _ => None,
                };
                machine.handle_closed(now, close);
            }
            [0x03, rest @ ..] => {
                // What the application passes is its own business: only clean text, so a
                // frame the server refuses is the machine's doing.
                let arg: String = String::from_utf8_lossy(rest.get(1..).unwrap_or_default())
                    .chars()
                    .filter(|c| !c.is_control())
                    .collect();
                let arg = arg.as_str();
                let _ = match rest.first().copied().unwrap_or(0) % 4 {
                    0 => machine.ping(now),
                    1 => machine.request_member_list(now),
                    2 => machine.kick(now, arg, Some(arg)),
                    _ => machine.send_message(now, serde_json::json!({ "t": arg }), Some(arg)),
                };
            }
            text => {
                if let Ok(text) = std::str::from_utf8(text) {
                    machine.handle_activity(now);
                    machine.handle_text(now, text);
                }
            }
        }
        drive(&mut machine, now);
        if machine.is_ended() {
            assert_eq!(
                machine.poll_timeout(),
                None,
                "an ended machine wants a timer"
            );
        }
    }
});

/// Plays the driver: connects at once, reports closed sockets, checks every frame sent.
fn drive(machine: &mut Machine, now: Instant) {
    // Bounded: a machine that kept asking for work forever would be a finding too.
    for _ in 0..1000 {
        let Some(action) = machine.poll_action() else {
            return;
        };
        match action {
            Action::Connect => machine.handle_connected(now),
            Action::Send(frame) => {
                if let Err(e) = loudsync_protocol::decode(&frame) {
                    panic!("the SDK sent {frame:?}, which the server rejects: {e}");
                }
            }
            Action::CloseSocket => machine.handle_closed(now, None),
            Action::Emit(_) => {}
        }
    }
    panic!("the machine asked for more than 1000 actions in one step");
}
