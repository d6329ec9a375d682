//! Fuzz target `pairing_ws_frame`: the JSON frames of the pairing WebSocket
//! (`/crsocket/{NAME}/ws`, issue 12, P9 to P13), from any UTF-8 text: as the server reads a
//! client's ([`decode`]) and as the SDK reads the server's ([`decode_server`]).
//!
//! Beyond "no panic", for a client frame that decodes:
//!
//! - its fields are what the JSON says, with P10's defaults for what it leaves out (read here
//!   from the raw JSON, each value's type told by its first byte), and an event obeys P5
//!   (recipient 6 digits, type and subtype alphanumeric, no `,` in a parameter);
//! - `encode_client` writes it back into a frame that decodes to the same frame;
//! - a `cr_identify`'s [`check_identify`] against an open app and an app with tokens gives
//!   what P8 says ([`loudsync_fuzz::pairing::expected_identity`]);
//! - an event relayed by the server (`encode` of a server `cr_event`) has every field of P11,
//!   `receiveCt` null, and the SDK's `decode_server` reads back the same event and sender;
//!   translated to SSE (P19, `to_data`), it reads back the same too.
//!
//! And any JSON object whose `type` is `cr_identify` or `cr_alive` decodes (wrong credentials
//! are `check_identify`'s to refuse, P9, never a decode error). A server frame that
//! `decode_server` reads is written by `encode` into one it reads the same.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use loudsync_fuzz::pairing::{
    client_id_ok, event_sub_type_ok, event_type_ok, expected_identity, open_app, token_app, Claim,
};
use loudsync_protocol::pairing::ws::{decode, decode_server, encode, encode_client};
use loudsync_protocol::pairing::{
    check_identify, Event, IdentifyFrame, IdentifyId, PairingClientFrame, PairingServerFrame,
};
use serde_json::value::RawValue;

const TIMESTAMP: u64 = 1_700_000_000_000;

type Object = BTreeMap<String, Box<RawValue>>;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    server_side(text);
    let object = serde_json::from_str::<Object>(text).ok();
    let kind = object.as_ref().and_then(|o| string(o, "type"));
    let frame = match decode(text) {
        Ok(frame) => frame,
        Err(e) => {
            assert!(
                !matches!(kind.as_deref(), Some("cr_identify" | "cr_alive")),
                "{text:?} is a {kind:?} but does not decode: {}",
                e.message
            );
            return;
        }
    };
    let object = object.unwrap_or_else(|| panic!("{text:?} decoded but is no JSON object"));
    match &frame {
        PairingClientFrame::Identify(identify) => {
            assert_eq!(kind.as_deref(), Some("cr_identify"), "{text:?}");
            check_identify_fields(identify, &object, text);
            check_credentials(identify, text);
        }
        PairingClientFrame::Event { recipient, event } => {
            assert_eq!(kind.as_deref(), Some("cr_event"), "{text:?}");
            check_event_fields(recipient, event, &object, text);
            relay(recipient, event, text);
        }
        PairingClientFrame::Alive => assert_eq!(kind.as_deref(), Some("cr_alive"), "{text:?}"),
    }
    let encoded = encode_client(&frame);
    let back = decode(&encoded)
        .unwrap_or_else(|e| panic!("{encoded:?}, written from {text:?}, does not decode: {e}"));
    assert_eq!(back, frame, "round trip of {text:?} through {encoded:?}");
});

/// What the SDK reads: no panic, and what it reads is written back the same by `encode`.
fn server_side(text: &str) {
    let Ok((frame, timestamp)) = decode_server(text) else {
        return;
    };
    let timestamp = timestamp.unwrap_or(TIMESTAMP);
    let encoded = encode(&frame, timestamp);
    let back = decode_server(&encoded)
        .unwrap_or_else(|e| panic!("{encoded:?}, written from {text:?}, does not decode: {e}"));
    assert_eq!(
        back,
        (frame, Some(timestamp)),
        "{text:?} through {encoded:?}"
    );
}

/// P9: each credential is kept if it has the right JSON type; `clientId` absent or `null` asks
/// for one, another type than a string is invalid.
fn check_identify_fields(identify: &IdentifyFrame, object: &Object, text: &str) {
    assert_eq!(
        identify.client_role,
        string(object, "clientRole"),
        "{text:?}"
    );
    assert_eq!(
        identify.access_token,
        string(object, "accessToken"),
        "{text:?}"
    );
    let id = &identify.client_id;
    match object.get("clientId").map(|raw| raw.get()) {
        None | Some("null") => assert_eq!(*id, IdentifyId::Assign, "clientId of {text:?}"),
        Some(raw) if raw.starts_with('"') => match serde_json::from_str::<String>(raw) {
            Ok(given) => assert_eq!(*id, IdentifyId::Given(given), "clientId of {text:?}"),
            // A string no Rust string holds (a lone surrogate escape) is no id either way.
            Err(_) => assert_ne!(*id, IdentifyId::Assign, "clientId of {text:?}"),
        },
        Some(_) => assert_eq!(*id, IdentifyId::Invalid, "clientId of {text:?}"),
    }
}

/// P8, for an open app and an app with tokens; and what an app with tokens authorises, an open
/// app does too.
fn check_credentials(identify: &IdentifyFrame, text: &str) {
    let claim = match &identify.client_id {
        IdentifyId::Assign => Claim::Assign,
        IdentifyId::Given(id) => Claim::Given(id),
        IdentifyId::Invalid => Claim::Invalid,
    };
    let mut results = Vec::new();
    for app in [open_app(), token_app()] {
        let got = check_identify(identify, &app);
        let expected = expected_identity(
            &app,
            identify.client_role.as_deref(),
            claim,
            identify.access_token.as_deref(),
        );
        assert_eq!(got, expected, "{app:?}, {text:?}");
        results.push(got);
    }
    if results[1].is_ok() {
        assert_eq!(results[0], results[1], "{text:?}");
    }
}

/// P10: the fields as the JSON gives them, the defaults (empty subtype, no parameters,
/// `buffered` and `logged` false, `interceptable` true, `sendCt` null) for those it leaves out
/// or sets to null; P5 for what was accepted.
fn check_event_fields(recipient: &str, event: &Event, object: &Object, text: &str) {
    let raw = |key: &str| object.get(key).map(|r| r.get()).filter(|r| *r != "null");
    assert_eq!(
        Some(recipient.to_string()),
        string(object, "recipientClientId")
    );
    assert_eq!(Some(event.event_type.clone()), string(object, "eventType"));
    assert_eq!(
        event.sub_type,
        raw("eventSubType").map(parse::<String>).unwrap_or_default()
    );
    assert_eq!(
        event.params,
        raw("eventParams")
            .map(parse::<Vec<String>>)
            .unwrap_or_default()
    );
    assert_eq!(
        event.buffered,
        raw("buffered").map(parse::<bool>).unwrap_or(false)
    );
    assert_eq!(
        event.logged,
        raw("logged").map(parse::<bool>).unwrap_or(false)
    );
    assert_eq!(
        event.interceptable,
        raw("interceptable").map(parse::<bool>).unwrap_or(true)
    );
    assert_eq!(event.send_ct, raw("sendCt").map(parse::<i64>), "{text:?}");
    assert!(
        client_id_ok(recipient),
        "recipient {recipient:?} of {text:?}"
    );
    assert!(event_type_ok(&event.event_type), "{text:?}");
    assert!(event_sub_type_ok(&event.sub_type), "{text:?}");
    assert!(event.params.iter().all(|p| !p.contains(',')), "{text:?}");
}

/// P11 and P19: the event as the server relays it to a WebSocket and to an SSE recipient, from
/// `sender` (any valid id; the recipient's own will do).
fn relay(sender: &str, event: &Event, text: &str) {
    let frame = PairingServerFrame::Event {
        sender: sender.to_string(),
        event: event.clone(),
    };
    let encoded = encode(&frame, TIMESTAMP);
    let object: Object = serde_json::from_str(&encoded).expect("encode writes a JSON object");
    let keys: Vec<&str> = object.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "buffered",
            "eventParams",
            "eventSubType",
            "eventType",
            "interceptable",
            "logged",
            "receiveCt",
            "sendCt",
            "senderClientId",
            "timestamp",
            "type"
        ],
        "{encoded:?}"
    );
    assert_eq!(object["receiveCt"].get(), "null", "{encoded:?}");
    let back = decode_server(&encoded)
        .unwrap_or_else(|e| panic!("{encoded:?}, relayed from {text:?}, does not decode: {e}"));
    assert_eq!(
        back,
        (frame, Some(TIMESTAMP)),
        "{text:?} relayed as {encoded:?}"
    );
    let data = event.to_data(sender);
    assert_eq!(
        Event::parse_delivered(&data),
        Ok((event.clone(), sender.to_string())),
        "{text:?} translated to SSE as {data:?}"
    );
}

/// The value at `key` if it is a JSON string that a Rust string can hold (not one with a lone
/// surrogate escape, `"\ud800"`).
fn string(object: &Object, key: &str) -> Option<String> {
    serde_json::from_str(object.get(key)?.get()).ok()
}

fn parse<T: serde::de::DeserializeOwned>(raw: &str) -> T {
    serde_json::from_str(raw).unwrap_or_else(|e| panic!("{raw:?} accepted but unreadable: {e}"))
}
