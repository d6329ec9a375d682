//! Fuzz target `ws_frames`: the server's own WebSocket framing ([`FrameParser`]), which reads
//! every byte a client sends after the upgrade.
//!
//! Input: byte 0 picks the message size limit, bytes 1 and 2 how the rest is cut into reads
//! (the longest read, and a seed for the read lengths); the rest is what the client sent.
//! The bytes go through three decoders, and all three must agree:
//!
//! - the parser fed everything in one read;
//! - a second parser fed the same bytes in the reads the input chose (partial headers,
//!   payloads cut anywhere, a UTF-8 character cut between reads);
//! - [`reference`], a plain whole-buffer decoder of RFC 6455 written from the rules in the
//!   module comment of `crates/server/src/ws.rs`, not from its code.
//!
//! They must give the same messages and the same first violation (the two parsers the same
//! reason too). After every read the parser holds no more than twice the message limit plus
//! a control frame's worth (vectors grow by doubling), and when the input ends between whole
//! messages it holds nothing at all (the module's promise: no buffer while a connection idles).
#![no_main]

use std::collections::VecDeque;

use libfuzzer_sys::fuzz_target;
use loudsync_server::ws::{FrameParser, Violation, WsMessage};

/// The message limits tried: around the 7-bit and 16-bit length encodings and the control
/// frame limit, tiny ones to reach 1009 often, and the server's default order of size.
const LIMITS: [usize; 8] = [0, 1, 7, 125, 126, 300, 65_536, 1 << 20];

/// The longest frame start the parser may keep: a whole control frame (2 + 4 + 125 bytes).
const MAX_CONTROL_FRAME: usize = 131;

fuzz_target!(|data: &[u8]| {
    let [limit, max_read, seed, ref stream @ ..] = *data else {
        return;
    };
    let max_message = LIMITS[usize::from(limit) % LIMITS.len()];
    let bound = 2 * max_message + 2 * MAX_CONTROL_FRAME;

    let mut whole = FrameParser::new(max_message);
    let mut whole_out = VecDeque::new();
    let whole_result = whole.feed(stream, &mut whole_out);

    let mut split = FrameParser::new(max_message);
    let mut split_out = VecDeque::new();
    let mut split_result = Ok(());
    let mut rng = u32::from(seed) | 0x100;
    let mut rest = stream;
    while !rest.is_empty() {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        let n = (1 + rng as usize % (usize::from(max_read) + 1)).min(rest.len());
        let (read, after) = rest.split_at(n);
        rest = after;
        split_result = split.feed(read, &mut split_out);
        if split_result.is_err() {
            break;
        }
        let held = split.held_bytes();
        assert!(held <= bound, "holds {held} bytes, limit {max_message}");
    }

    let (expected, end) = reference(stream, max_message);
    assert_eq!(Vec::from(whole_out), expected, "one read");
    assert_eq!(Vec::from(split_out), expected, "split reads");
    assert_eq!(whole_result, split_result, "one read vs split reads");
    assert_eq!(
        whole_result.map_err(|v: Violation| v.code),
        end.map(|_| ()),
        "violation code"
    );
    if end == Ok(End::Idle) {
        assert_eq!(whole.held_bytes(), 0, "idle after one read");
        assert_eq!(split.held_bytes(), 0, "idle after split reads");
    }
});

/// Where the reference decoder stopped, when no rule was broken.
#[derive(Debug, Clone, Copy, PartialEq)]
enum End {
    /// Between messages: every frame whole, no fragmented message open.
    Idle,
    /// Inside a frame or a fragmented message.
    Pending,
}

/// Decodes a whole buffer of client frames: the messages, then where it ended or the close
/// code of the first rule broken.
fn reference(data: &[u8], max_message: usize) -> (Vec<WsMessage>, Result<End, u16>) {
    let mut out = Vec::new();
    let end = decode_all(data, max_message, &mut out);
    (out, end)
}

fn decode_all(data: &[u8], max_message: usize, out: &mut Vec<WsMessage>) -> Result<End, u16> {
    const PROTOCOL: u16 = 1002;
    const NOT_UTF8: u16 = 1007;
    const TOO_BIG: u16 = 1009;
    // The data message being assembled: text or not, its payload so far.
    let mut message: Option<(bool, Vec<u8>)> = None;
    let mut pos = 0;
    loop {
        let rest = &data[pos..];
        if rest.is_empty() {
            return Ok(if message.is_some() {
                End::Pending
            } else {
                End::Idle
            });
        }
        if rest.len() < 2 {
            return Ok(End::Pending);
        }
        let fin = rest[0] & 0x80 != 0;
        let opcode = rest[0] & 0x0F;
        if rest[0] & 0x70 != 0 || !matches!(opcode, 0..=2 | 8..=10) || rest[1] & 0x80 == 0 {
            return Err(PROTOCOL); // reserved bits, unknown opcode, unmasked
        }
        let (len, header) = match rest[1] & 0x7F {
            126 if rest.len() < 4 => return Ok(End::Pending),
            126 => match u16::from_be_bytes([rest[2], rest[3]]) {
                n if n < 126 => return Err(PROTOCOL),
                n => (u64::from(n), 4),
            },
            127 if rest.len() < 10 => return Ok(End::Pending),
            127 => match u64::from_be_bytes(rest[2..10].try_into().unwrap()) {
                n if n <= 0xFFFF || n >= 1 << 63 => return Err(PROTOCOL),
                n => (n, 10),
            },
            n => (u64::from(n), 2),
        };
        let control = opcode >= 8;
        if control && (!fin || len > 125) {
            return Err(PROTOCOL);
        }
        let start = header + 4;
        let mask = |i: usize| rest[header + i % 4];
        if control {
            let total = start + len as usize;
            if rest.len() < total {
                return Ok(End::Pending);
            }
            let payload: Vec<u8> = (0..len as usize)
                .map(|i| rest[start + i] ^ mask(i))
                .collect();
            out.push(match opcode {
                9 => WsMessage::Ping(payload),
                10 => WsMessage::Pong(payload),
                _ => WsMessage::Close(match payload.len() {
                    0 => None,
                    1 => return Err(PROTOCOL),
                    _ => {
                        let code = u16::from_be_bytes([payload[0], payload[1]]);
                        if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                            return Err(PROTOCOL);
                        }
                        match std::str::from_utf8(&payload[2..]) {
                            Ok(reason) => Some((code, reason.to_string())),
                            Err(_) => return Err(NOT_UTF8),
                        }
                    }
                }),
            });
            pos += total;
            continue;
        }
        match (opcode, &message) {
            (0, None) | (1 | 2, Some(_)) => return Err(PROTOCOL),
            _ => {}
        }
        let so_far = message.as_ref().map_or(0, |(_, p)| p.len());
        if so_far as u64 + len > max_message as u64 {
            return Err(TOO_BIG);
        }
        if rest.len() < start + usize::from(len > 0) {
            return Ok(End::Pending); // the header, without a payload byte yet
        }
        let here = (len as usize).min(rest.len() - start);
        let (text, payload) = message.get_or_insert_with(|| (opcode == 1, Vec::new()));
        payload.extend((0..here).map(|i| rest[start + i] ^ mask(i)));
        let whole = here == len as usize;
        if *text {
            match std::str::from_utf8(payload) {
                Ok(_) => {}
                // Only a character cut by the end, and more may follow.
                Err(e) if e.error_len().is_none() && !(whole && fin) => {}
                Err(_) => return Err(NOT_UTF8),
            }
        }
        if !whole {
            return Ok(End::Pending);
        }
        pos += start + here;
        if fin {
            let (text, payload) = message.take().unwrap();
            out.push(if text {
                WsMessage::Text(String::from_utf8(payload).unwrap())
            } else {
                WsMessage::Binary(payload)
            });
        }
    }
}
