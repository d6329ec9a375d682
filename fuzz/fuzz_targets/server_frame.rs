//! Fuzz target `server_frame`: server frames as the client SDK reads them
//! ([`loudsync_protocol::decode_server`]); a hostile or broken server is a peer of every
//! client. Any UTF-8 text (the SDK's WebSocket library admits only valid UTF-8 text).
//!
//! Beyond "no panic": what decodes as a known message is written back by the server's
//! `encode` (with the frame's `timestamp` echoed, or a clock value when it had none) and
//! decodes to the same message and timestamp; an `error` keeps its code, known or not; an
//! unknown type is never one this version knows.
//!
//! "The same" allows a float to move by its last digits: serde_json's default float parser
//! is best-effort (its `float_roundtrip` feature is off), so `50e90` reads as
//! `4.9999999999999995e91`, which is written that way and reads back as
//! `4.999999999999999e91`. Found by this target; see docs/RELIABILITY.md.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loudsync_protocol::server::SERVER_TYPES;
use loudsync_protocol::{decode_server, encode, Received, ServerMessage, Stamp};
use serde_json::{to_value, Number, Value};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok((received, timestamp)) = decode_server(text) else {
        return;
    };
    let stamp = match &timestamp {
        Some(n) => Stamp::Echo(n.clone()),
        None => Stamp::Now(1_700_000_000_000),
    };
    let expected_timestamp = Some(match &stamp {
        Stamp::Echo(n) => n.clone(),
        Stamp::Now(ms) => Number::from(*ms),
    });
    let message = match received {
        Received::Known(message) => {
            assert!(
                !matches!(message, ServerMessage::Error { .. }),
                "an error must be Received::Error: {text:?}"
            );
            message
        }
        Received::Error {
            code,
            message,
            details,
        } => match code.known() {
            Some(code) => ServerMessage::Error {
                code,
                message,
                details,
            },
            None => return, // a newer server's code: ours cannot write it
        },
        Received::Unknown { kind, raw } => {
            assert!(
                kind != "error" && !SERVER_TYPES.contains(&kind.as_str()),
                "known type {kind:?} read as unknown: {text:?}"
            );
            let again: Value = serde_json::from_str(raw.get()).expect("raw is JSON");
            let first: Value = serde_json::from_str(text).expect("text is JSON");
            assert_eq!(again, first, "an unknown frame is kept whole");
            return;
        }
    };
    let encoded = encode(&message, &stamp);
    let (back, back_timestamp) = decode_server(&encoded)
        .unwrap_or_else(|e| panic!("{encoded:?}, written from {text:?}, does not decode: {e}"));
    let back = match back {
        Received::Known(m) => m,
        Received::Error {
            code,
            message,
            details,
        } => ServerMessage::Error {
            code: code.known().expect("a known code stays known"),
            message,
            details,
        },
        other => panic!("{encoded:?} (from {text:?}) decodes as {other:?}"),
    };
    assert!(
        same(&to_value(&back), &to_value(&message)),
        "round trip of {text:?} through {encoded:?}: {back:?} is not {message:?}"
    );
    assert!(
        same(&to_value(&back_timestamp), &to_value(&expected_timestamp)),
        "timestamp of {encoded:?}: {back_timestamp:?}, not {expected_timestamp:?}"
    );
});

/// Equal values, floats within a relative 1e-15 (a few units in the last place).
fn same(a: &Result<Value, serde_json::Error>, b: &Result<Value, serde_json::Error>) -> bool {
    fn eq(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                x == y || (x - y).abs() <= 1e-15 * x.abs().max(y.abs())
            }
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(x, y)| eq(x, y))
            }
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| eq(v, w)))
            }
            _ => a == b,
        }
    }
    match (a, b) {
        (Ok(a), Ok(b)) => eq(a, b),
        _ => false,
    }
}
