//! The app's dialect: detection, decoding of what the app's client sends, and every reply's
//! fields as the app reads them.

use super::*;
use crate::server::SessionInfo;
use crate::types::{ConnectionStatus, DeviceRef, ErrorCode};

const APP_JOIN: &str = r#"{"type":"JOIN","timestamp":1738941234567,"messageId":"msg_1738941234567_4fzq8ab","payload":{"sessionId":"K7P-3XQ","deviceId":"loudsync_1738940000000_k3j9x2m1q","deviceName":"Device 42","version":"1.0.0"}}"#;

fn ctx_encode(m: &ServerMessage, stamp: Stamp) -> Value {
    let address = |id: &str| (id == "c_guest").then(|| "192.168.1.23".to_string());
    let ctx = EncodeContext {
        now_ms: 1000,
        message_id: "msg_1000_abcdefg",
        address_of: &address,
    };
    serde_json::from_str(&encode(m, &stamp, &ctx)).unwrap()
}

fn member(id: &str, device: &str, host: bool) -> MemberInfo {
    MemberInfo {
        id: id.into(),
        name: format!("{device} name"),
        is_host: host,
        connection_status: ConnectionStatus::Connected,
        joined_at: 500,
        latency: if host { None } else { Some(7) },
        handoff_ready: false,
        device_id: device.into(),
    }
}

#[test]
fn detects_the_apps_frames_and_ours() {
    assert_eq!(detect(APP_JOIN), Dialect::App);
    assert_eq!(
        detect(r#"{"type":"HEARTBEAT","timestamp":1,"payload":{"deviceId":"d","timestamp":1}}"#),
        Dialect::App
    );
    assert_eq!(
        detect(
            r#"{"type":"join","sessionId":"s","deviceInfo":{"id":"d","name":"n","type":"client"}}"#
        ),
        Dialect::LoudSync
    );
    assert_eq!(
        detect(r#"{"type":"JOIN"}"#),
        Dialect::LoudSync,
        "no payload: ours, rejected as ours"
    );
    assert_eq!(detect("not json"), Dialect::LoudSync);
}

#[test]
fn decodes_every_app_client_message() {
    let ClientMessage::Join(j) = decode(APP_JOIN).unwrap() else {
        panic!()
    };
    assert_eq!(j.session_id.as_deref(), Some("K7P-3XQ"));
    assert_eq!(j.device_info.id, "loudsync_1738940000000_k3j9x2m1q");
    assert_eq!(j.device_info.name, "Device 42");
    assert_eq!(j.device_info.kind, DeviceType::Client);
    assert_eq!(
        decode(r#"{"type":"LEAVE","timestamp":1,"messageId":"m","payload":{"deviceId":"d","reason":"User left session"}}"#).unwrap(),
        ClientMessage::Leave { reason: Some("User left session".into()) }
    );
    assert_eq!(
        decode(r#"{"type":"HEARTBEAT","timestamp":1,"payload":{"deviceId":"d","timestamp":1}}"#)
            .unwrap(),
        ClientMessage::Heartbeat
    );
    let ClientMessage::Ping { timestamp } =
        decode(r#"{"type":"PING","timestamp":5,"payload":{"timestamp":1738941239568}}"#).unwrap()
    else {
        panic!()
    };
    assert_eq!(timestamp.as_u64(), Some(1738941239568));
    assert_eq!(
        decode(r#"{"type":"PONG","timestamp":1,"payload":{"timestamp":1,"pingTimestamp":0}}"#)
            .unwrap(),
        ClientMessage::Pong
    );
}

#[test]
fn decode_errors_are_precise() {
    let e = |t: &str| decode(t).unwrap_err().message;
    assert!(
        e(r#"{"type":"JOIN","payload":{"sessionId":"s","deviceName":"n"}}"#)
            .contains("JOIN: payload: missing field `deviceId`")
    );
    assert!(e(r#"{"type":"JOIN","timestamp":1}"#).contains("missing object field `payload`"));
    assert!(e(r#"{"type":"DANCE","payload":{}}"#).contains("unknown message type `DANCE`"));
    assert!(e(r#"{"type":"PING","payload":{"timestamp":"x"}}"#).contains("PING: payload.timestamp"));
}

/// Finding 7 of issue 9, in the app's dialect: the texts name our fields, as for any `JOIN`.
#[test]
fn control_characters_are_refused_in_app_frames() {
    let e = |t: &str| decode(t).unwrap_err().message;
    assert_eq!(
        e(r#"{"type":"JOIN","payload":{"sessionId":"s","deviceId":"d\u0000","deviceName":"n"}}"#),
        "join: field `deviceInfo.id` must not contain control characters"
    );
    assert_eq!(
        e(
            r#"{"type":"JOIN","payload":{"sessionId":"s","deviceId":"d","deviceName":"\u001b]0;PWNED\u0007"}}"#
        ),
        "join: field `deviceInfo.name` must not contain control characters"
    );
    assert_eq!(
        e(r#"{"type":"LEAVE","payload":{"deviceId":"d","reason":"bye\u009b2J"}}"#),
        "LEAVE: `payload.reason` must not contain control characters"
    );
}

/// The app shows an `ERROR`'s text to its user: where the app's own host server has words
/// for a code, the app hears those; other codes keep ours.
#[test]
fn error_texts_are_the_app_servers_own() {
    for (code, ours, app) in [
        (
            ErrorCode::SessionNotFound,
            "session `x` does not exist",
            "Session not found",
        ),
        (
            ErrorCode::AlreadyJoined,
            "device `d` is already connected to session `x`",
            "Already joined",
        ),
        (
            ErrorCode::SessionFull,
            "Session has reached maximum capacity (2 members)",
            "Session full",
        ),
        (
            ErrorCode::WrongPassword,
            "wrong password for session `x`",
            "wrong password for session `x`",
        ),
    ] {
        let v = ctx_encode(&ServerMessage::error(code, ours), Stamp::Now(1));
        assert_eq!(v["payload"]["message"], app, "{code}");
        assert_eq!(v["payload"]["code"], code.as_str().to_ascii_uppercase());
    }
}

#[test]
fn welcome_names_devices() {
    let m = ServerMessage::Welcome {
        client_id: "c_guest".into(),
        session_info: Box::new(SessionInfo {
            id: "K7P-3XQ".into(),
            name: "Friday Jam".into(),
            host_id: Some("c_host".into()),
            host: Some(DeviceRef {
                device_id: "host-dev".into(),
                name: "Device 7".into(),
            }),
        }),
        device: DeviceRef {
            device_id: "guest-dev".into(),
            name: "Device 42".into(),
        },
        joined_at: 999,
        resumable: false,
        state: None,
    };
    assert_eq!(
        ctx_encode(&m, Stamp::Now(1000)),
        json!({"type":"WELCOME","timestamp":1000,"messageId":"msg_1000_abcdefg","payload":{
            "sessionId":"K7P-3XQ","sessionName":"Friday Jam","hostId":"host-dev","hostName":"Device 7",
            "yourDeviceId":"guest-dev","connectedAt":999}})
    );
}

#[test]
fn member_list_and_member_joined_use_device_ids() {
    let list = ServerMessage::MemberList {
        members: vec![
            member("c_host", "host-dev", true),
            member("c_guest", "guest-dev", false),
        ],
    };
    let v = ctx_encode(&list, Stamp::Now(1000));
    assert_eq!(v["type"], "MEMBER_LIST");
    assert_eq!(v["payload"]["totalCount"], 2);
    assert_eq!(
        v["payload"]["members"][0],
        json!({"id":"host-dev","name":"host-dev name","role":"host","connectionStatus":"connected",
               "joinedAt":500,"lastSeen":1000,"address":"unknown","latency":null})
    );
    assert_eq!(v["payload"]["members"][1]["address"], "192.168.1.23");
    assert_eq!(v["payload"]["members"][1]["latency"], 7);
    let joined = ctx_encode(
        &ServerMessage::MemberJoined {
            member: member("c_guest", "guest-dev", false),
        },
        Stamp::Now(1000),
    );
    assert_eq!(joined["payload"]["member"]["id"], "guest-dev");
    assert_eq!(joined["payload"]["member"]["role"], "client");
}

#[test]
fn member_left_kicked_closed_error_message() {
    let left = ctx_encode(
        &ServerMessage::MemberLeft {
            member_id: "c_guest".into(),
            reason: LeaveReason::Left,
            device: DeviceRef {
                device_id: "guest-dev".into(),
                name: "Device 42".into(),
            },
        },
        Stamp::Now(1000),
    );
    assert_eq!(
        left["payload"],
        json!({"deviceId":"guest-dev","deviceName":"Device 42","reason":"User left session"})
    );
    assert_eq!(
        ctx_encode(
            &ServerMessage::Kicked {
                reason: "bye".into()
            },
            Stamp::Now(1)
        )["payload"],
        json!({"reason":"bye"})
    );
    let closed = ctx_encode(
        &ServerMessage::SessionClosed {
            reason: "Host ended the session".into(),
        },
        Stamp::Now(1),
    );
    assert_eq!(closed["type"], "SESSION_CLOSED");
    let err = ctx_encode(
        &ServerMessage::error(ErrorCode::SessionFull, "full"),
        Stamp::Now(1),
    );
    assert_eq!(
        err["payload"],
        json!({"code":"SESSION_FULL","message":"Session full"}),
        "the app's own server's words"
    );
    assert_eq!(err["messageId"], "msg_1000_abcdefg");
    let msg = ctx_encode(
        &ServerMessage::Message {
            from: "c_x".into(),
            data: crate::types::RawJson::from_text(r#"{"a":1}"#).unwrap(),
            device: DeviceRef {
                device_id: "x-dev".into(),
                name: "X".into(),
            },
        },
        Stamp::Now(1),
    );
    assert_eq!(
        msg["payload"],
        json!({"from":"x-dev","fromName":"X","data":{"a":1}})
    );
}

#[test]
fn pong_carries_ping_timestamp_and_no_message_id() {
    let n: serde_json::Number = serde_json::from_str("1738941239568").unwrap();
    let v = ctx_encode(&ServerMessage::Pong, Stamp::Echo(n));
    assert_eq!(
        v,
        json!({"type":"PONG","timestamp":1000,"payload":{"timestamp":1000,"pingTimestamp":1738941239568u64}})
    );
}

#[test]
fn the_envelope_puts_type_first_like_the_app() {
    let text = {
        let none = |_: &str| None;
        let ctx = EncodeContext {
            now_ms: 1,
            message_id: "msg_1_abcdefg",
            address_of: &none,
        };
        encode(
            &ServerMessage::Kicked { reason: "r".into() },
            &Stamp::Now(1),
            &ctx,
        )
    };
    assert!(
        text.starts_with(
            r#"{"type":"KICKED","timestamp":1,"messageId":"msg_1_abcdefg","payload":"#
        ),
        "{text}"
    );
}

const DEVICE: &str = "loudsync_1738940000000_k3j9x2m1q";

#[test]
fn encode_client_writes_the_apps_own_frames() {
    let join = ClientMessage::join("K7P-3XQ", DEVICE, "Device 42", DeviceType::Client);
    let ctx =
        ClientContext::new(DEVICE, 1738941234567).with_message_id("msg_1738941234567_4fzq8ab");
    let frame = encode_client(&join, &ctx).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&frame).unwrap(),
        serde_json::from_str::<Value>(APP_JOIN).unwrap(),
        "the document's JOIN"
    );
    assert!(
        frame.starts_with(r#"{"type":"JOIN","timestamp":1738941234567,"messageId":"#),
        "{frame}"
    );
    let at = |ts| ClientContext::new(DEVICE, ts);
    let cases = [
        (
            ClientMessage::Heartbeat,
            at(1738941239567),
            format!(
                r#"{{"type":"HEARTBEAT","timestamp":1738941239567,"payload":{{"deviceId":"{DEVICE}","timestamp":1738941239567}}}}"#
            ),
        ),
        (
            ClientMessage::ping(1738941239568u64),
            at(1738941239568),
            r#"{"type":"PING","timestamp":1738941239568,"payload":{"timestamp":1738941239568}}"#
                .to_string(),
        ),
        (
            ClientMessage::leave(Some("User left session")),
            at(1738941300000).with_message_id("msg_1738941300000_l3v4e5x"),
            format!(
                r#"{{"type":"LEAVE","timestamp":1738941300000,"messageId":"msg_1738941300000_l3v4e5x","payload":{{"deviceId":"{DEVICE}","reason":"User left session"}}}}"#
            ),
        ),
        (
            ClientMessage::Pong,
            ClientContext {
                ping_timestamp: 0,
                ..at(1)
            },
            r#"{"type":"PONG","timestamp":1,"payload":{"timestamp":1,"pingTimestamp":0}}"#
                .to_string(),
        ),
    ];
    for (message, ctx, frame) in cases {
        assert_eq!(encode_client(&message, &ctx).unwrap(), frame);
        assert_eq!(detect(&frame), Dialect::App);
        assert_eq!(decode(&frame).unwrap(), message);
    }
}

#[test]
fn encode_client_refuses_what_the_app_cannot_say() {
    let ctx = ClientContext::new("d", 1);
    let host = ClientMessage::join("s", "d", "n", DeviceType::Host);
    let mut named = ClientMessage::join("s", "d", "n", DeviceType::Client);
    if let ClientMessage::Join(j) = &mut named {
        j.session_name = Some("Party".into());
    }
    for m in [
        host,
        named,
        ClientMessage::kick("c", None),
        ClientMessage::MemberList,
        ClientMessage::MediaToken,
        ClientMessage::message(crate::types::RawJson::from_text("1").unwrap(), None),
    ] {
        let e = encode_client(&m, &ctx).unwrap_err();
        assert_eq!(e.dialect, Dialect::App, "{m:?}");
    }
}

#[test]
fn write_ping_is_the_app_encoders_ping() {
    for ts in [0, 1738941239568, u64::MAX] {
        let mut out = String::new();
        write_ping(&mut out, ts);
        let ctx = ClientContext::new("ignored", ts);
        assert_eq!(out, encode_client(&ClientMessage::ping(ts), &ctx).unwrap());
    }
}

fn app_messages() -> impl proptest::strategy::Strategy<Value = ClientMessage> {
    use crate::client::strategies;
    use proptest::prelude::*;
    prop_oneof![
        strategies::join(false, false).prop_map(ClientMessage::Join),
        proptest::option::of(strategies::text(0, 20))
            .prop_map(|reason| ClientMessage::Leave { reason }),
        Just(ClientMessage::Heartbeat),
        strategies::integer().prop_map(|timestamp| ClientMessage::Ping { timestamp }),
        Just(ClientMessage::Pong),
    ]
}

proptest::proptest! {
    #[test]
    fn app_encode_client_then_decode_gives_the_message_back(
        m in app_messages(),
        device in ".{0,20}",
        ts in proptest::prelude::any::<u64>(),
        id in proptest::option::of("msg_[0-9]{1,13}_[0-9a-z]{7}"),
        ping in proptest::prelude::any::<u64>(),
    ) {
        let ctx = ClientContext { device_id: &device, timestamp_ms: ts, message_id: id.as_deref(), ping_timestamp: ping };
        let frame = encode_client(&m, &ctx).unwrap();
        proptest::prop_assert_eq!(detect(&frame), Dialect::App);
        proptest::prop_assert_eq!(decode(&frame).unwrap(), m);
    }
}

#[test]
fn the_app_dialect_has_no_media_token() {
    // Issue 13 R3: app members cannot take part; their frames are refused like `member_list`.
    for frame in [
        r#"{"type":"MEDIA_TOKEN","payload":{}}"#,
        r#"{"type":"media_token","payload":{}}"#,
        r#"{"type":"MEMBER_LIST","payload":{}}"#,
    ] {
        let e = decode(frame).unwrap_err().message;
        assert!(e.starts_with("unknown message type"), "{frame}: {e}");
    }
    let e = encode_client(&ClientMessage::MediaToken, &ClientContext::new("d", 1)).unwrap_err();
    assert_eq!(e.problem, "no client message `media_token`");
}
