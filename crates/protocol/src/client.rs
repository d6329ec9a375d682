//! Client-to-server messages and [`decode`], which reports exactly what is wrong with a frame.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};

use crate::types::{DeviceInfo, RawJson};

/// Longest accepted identifier or name (session id, device id, device name, session name), in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// A decoded client message.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// `join`: enter (or, as host, open) a session.
    Join(Join),
    /// `leave`: leave the session; the server closes the socket.
    Leave {
        /// Free text, informational only.
        reason: Option<String>,
    },
    /// `heartbeat`: keeps the member alive; no reply.
    Heartbeat,
    /// `ping`: answered at once by `pong` carrying this timestamp unchanged.
    Ping {
        /// The client's timestamp, any integer, echoed verbatim.
        timestamp: Number,
    },
    /// `kick` (host only): remove a member.
    Kick {
        /// The `clientId` of the member to remove.
        member_id: String,
        /// Shown to the kicked member.
        reason: Option<String>,
    },
    /// `member_list`: ask for a fresh `member_list`.
    MemberList,
    /// The LOUDSYNC app's `PONG` (its answer to a server `PING`): valid, and otherwise ignored.
    Pong,
    /// `message`: application data relayed to the other members, or to one.
    Message {
        /// Any JSON value, kept as the sender wrote it.
        data: RawJson,
        /// A member id; absent means everyone else.
        to: Option<String>,
    },
}

impl ClientMessage {
    /// The wire `type` of this message.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientMessage::Join(_) => "join",
            ClientMessage::Leave { .. } => "leave",
            ClientMessage::Heartbeat => "heartbeat",
            ClientMessage::Ping { .. } => "ping",
            ClientMessage::Kick { .. } => "kick",
            ClientMessage::MemberList => "member_list",
            ClientMessage::Pong => "pong",
            ClientMessage::Message { .. } => "message",
        }
    }
}

/// The fields of a `join` message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Join {
    /// The session to join (or, for a host, to open).
    pub session_id: String,
    /// The device's own description.
    pub device_info: DeviceInfo,
    /// Extension: the name of a session a host creates (default "<device name>'s session").
    #[serde(default)]
    pub session_name: Option<String>,
    /// Extension: the client's protocol version, `MAJOR.MINOR`.
    #[serde(default)]
    pub protocol_version: Option<String>,
}

/// Why a text frame is not a valid client message; `message` is meant for the client to read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    /// A human-readable description of the problem, naming the message type and field.
    pub message: String,
}

impl DecodeError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        DecodeError {
            message: message.into(),
        }
    }
}

#[derive(Deserialize)]
struct LeaveFields {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
struct PingFields {
    timestamp: Number,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KickFields {
    member_id: String,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
struct MessageFields {
    #[serde(default)]
    to: Option<String>,
}

/// The message types a client may send, for error messages.
pub const CLIENT_TYPES: &[&str] = &[
    "join",
    "leave",
    "heartbeat",
    "ping",
    "kick",
    "member_list",
    "message",
];

/// Decodes one text frame into a [`ClientMessage`].
///
/// Unknown extra fields are ignored (so clients may send `timestamp` or future fields), but a
/// missing or mistyped known field is an error naming the type and the field.
pub fn decode(text: &str) -> Result<ClientMessage, DecodeError> {
    // One pass over the frame: the top-level fields are validated but kept as written, so
    // `message.data` is relayed with the sender's bytes and only small fields are built.
    let Ok(mut object) = serde_json::from_str::<BTreeMap<String, Box<RawValue>>>(text) else {
        return Err(not_an_object(text));
    };
    let kind = match object.get("type").map(|raw| raw.get()) {
        Some(raw) => match serde_json::from_str::<Value>(raw) {
            Ok(Value::String(kind)) => kind,
            Ok(other) => {
                return Err(DecodeError::new(format!(
                    "field `type` must be a string, got {}",
                    json_kind(&other)
                )))
            }
            Err(e) => return Err(DecodeError::new(format!("invalid JSON: {e}"))),
        },
        None => return Err(DecodeError::new("missing field `type`")),
    };
    let message = match kind.as_str() {
        "join" => {
            let join: Join = fields(&kind, object)?;
            validate_join(&join)?;
            ClientMessage::Join(join)
        }
        "leave" => {
            let f: LeaveFields = fields(&kind, object)?;
            ClientMessage::Leave { reason: f.reason }
        }
        "heartbeat" => ClientMessage::Heartbeat,
        "ping" => {
            let f: PingFields = fields(&kind, object)?;
            if !(f.timestamp.is_i64() || f.timestamp.is_u64()) {
                return Err(DecodeError::new(format!(
                    "ping: field `timestamp` must be an integer, got {}",
                    f.timestamp
                )));
            }
            ClientMessage::Ping {
                timestamp: f.timestamp,
            }
        }
        "kick" => {
            let f: KickFields = fields(&kind, object)?;
            ClientMessage::Kick {
                member_id: f.member_id,
                reason: f.reason,
            }
        }
        "member_list" => ClientMessage::MemberList,
        "message" => {
            let Some(data) = object.remove("data") else {
                return Err(DecodeError::new("message: missing field `data`"));
            };
            let f: MessageFields = fields(&kind, object)?;
            ClientMessage::Message {
                data: RawJson(data),
                to: f.to,
            }
        }
        other => {
            return Err(DecodeError::new(format!(
                "unknown message type `{other}`; expected one of: {}",
                CLIENT_TYPES.join(", ")
            )))
        }
    };
    Ok(message)
}

/// The error for a frame that is not one JSON object: invalid JSON, or another kind of value.
fn not_an_object(text: &str) -> DecodeError {
    match serde_json::from_str::<Value>(text) {
        Err(e) => DecodeError::new(format!("invalid JSON: {e}")),
        Ok(value) => DecodeError::new(format!(
            "a message must be a JSON object, got {}",
            json_kind(&value)
        )),
    }
}

fn fields<T: for<'de> Deserialize<'de>>(
    kind: &str,
    object: BTreeMap<String, Box<RawValue>>,
) -> Result<T, DecodeError> {
    // The fields of control messages are small: build them as values, so errors can name
    // the nested field they are in.
    let mut map = Map::new();
    for (key, raw) in object {
        let value = serde_json::from_str(raw.get())
            .map_err(|e| DecodeError::new(format!("invalid JSON: {e}")))?;
        map.insert(key, value);
    }
    deserialize_named(map, |path, inner| match path {
        None => format!("{kind}: {inner}"),
        Some(path) => format!("{kind}: in `{path}`: {inner}"),
    })
}

/// Deserialises `object`; an error names the nested field it is in (`deviceInfo`), as
/// `describe(path, error)` words it (`path` is `None` at the top level).
pub(crate) fn deserialize_named<T: for<'de> Deserialize<'de>>(
    object: Map<String, Value>,
    describe: impl FnOnce(Option<&str>, &serde_json::Error) -> String,
) -> Result<T, DecodeError> {
    serde_path_to_error::deserialize(Value::Object(object)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let path = (path != "." && !path.is_empty()).then_some(path.as_str());
        DecodeError::new(describe(path, &inner))
    })
}

/// Longest session id, in bytes.
pub const MAX_SESSION_ID_BYTES: usize = 64;

/// Whether `id` is a valid session id: 1 to 64 characters of `A-Z a-z 0-9 - _`. The same rule
/// holds for `join` and the HTTP API, so every session can be addressed in a URL path.
pub fn valid_session_id(id: &str) -> bool {
    (1..=MAX_SESSION_ID_BYTES).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(crate) fn validate_join(join: &Join) -> Result<(), DecodeError> {
    if !valid_session_id(&join.session_id) {
        return Err(DecodeError::new(format!(
            "join: field `sessionId` must be 1 to {MAX_SESSION_ID_BYTES} characters of A-Z, a-z, 0-9, `-` and `_`"
        )));
    }
    let checks = [
        ("deviceInfo.id", join.device_info.id.as_str()),
        ("deviceInfo.name", join.device_info.name.as_str()),
    ];
    for (field, value) in checks {
        if value.trim().is_empty() {
            return Err(DecodeError::new(format!(
                "join: field `{field}` must not be empty"
            )));
        }
        if value.len() > MAX_NAME_BYTES {
            return Err(DecodeError::new(format!(
                "join: field `{field}` is {} bytes, longer than the {MAX_NAME_BYTES}-byte limit",
                value.len()
            )));
        }
    }
    if let Some(name) = &join.session_name {
        if name.trim().is_empty() || name.len() > MAX_NAME_BYTES {
            return Err(DecodeError::new(format!(
                "join: field `sessionName` must be 1 to {MAX_NAME_BYTES} bytes, not blank"
            )));
        }
    }
    Ok(())
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Whether a client's `protocolVersion` (`MAJOR.MINOR`, or `MAJOR`) is compatible with ours:
/// the major versions must be equal. Unparseable versions are incompatible.
pub fn version_compatible(client: &str, ours: &str) -> bool {
    fn major(v: &str) -> Option<u32> {
        v.trim().split('.').next()?.parse().ok()
    }
    match (major(client), major(ours)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::DeviceType;

    fn err(text: &str) -> String {
        decode(text).unwrap_err().message
    }

    #[test]
    fn decodes_the_documents_join_example() {
        let msg = decode(
            r#"{"type":"join","timestamp":1706889600000,"sessionId":"abc123",
               "deviceInfo":{"id":"device-456","name":"Rishad's iPhone","type":"client"}}"#,
        )
        .unwrap();
        let ClientMessage::Join(join) = msg else {
            panic!("not a join")
        };
        assert_eq!(join.session_id, "abc123");
        assert_eq!(join.device_info.id, "device-456");
        assert_eq!(join.device_info.kind, DeviceType::Client);
        assert_eq!(join.session_name, None);
    }

    #[test]
    fn decodes_every_other_type() {
        assert_eq!(
            decode(r#"{"type":"leave","reason":"bye"}"#).unwrap(),
            ClientMessage::Leave {
                reason: Some("bye".into())
            }
        );
        assert_eq!(
            decode(r#"{"type":"heartbeat","timestamp":1}"#).unwrap(),
            ClientMessage::Heartbeat
        );
        assert_eq!(
            decode(r#"{"type":"member_list"}"#).unwrap(),
            ClientMessage::MemberList
        );
        assert_eq!(
            decode(r#"{"type":"kick","memberId":"c2"}"#).unwrap(),
            ClientMessage::Kick {
                member_id: "c2".into(),
                reason: None
            }
        );
        assert_eq!(
            decode(r#"{"type":"message","data":{"track":3},"to":"c9"}"#).unwrap(),
            ClientMessage::Message {
                data: RawJson::from_text(r#"{"track":3}"#).unwrap(),
                to: Some("c9".into())
            }
        );
    }

    #[test]
    fn ping_timestamp_is_kept_verbatim_for_any_integer() {
        for ts in ["-5", "0", "18446744073709551615", "1706889650000"] {
            let ClientMessage::Ping { timestamp } =
                decode(&format!(r#"{{"type":"ping","timestamp":{ts}}}"#)).unwrap()
            else {
                panic!()
            };
            assert_eq!(timestamp.to_string(), ts);
        }
        assert!(err(r#"{"type":"ping","timestamp":1.5}"#).contains("must be an integer"));
        assert!(err(r#"{"type":"ping"}"#).contains("missing field `timestamp`"));
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(err("{not json").starts_with("invalid JSON"));
        assert!(err("[1,2]").contains("must be a JSON object, got an array"));
        assert_eq!(err(r#"{"x":1}"#), "missing field `type`");
        assert!(err(r#"{"type":5}"#).contains("`type` must be a string"));
        assert!(err(r#"{"type":"dance"}"#).contains("unknown message type `dance`"));
        assert!(
            err(r#"{"type":"join","sessionId":"s"}"#).contains("join: missing field `deviceInfo`")
        );
        assert!(err(
            r#"{"type":"join","sessionId":7,"deviceInfo":{"id":"d","name":"n","type":"client"}}"#
        )
        .contains("join: in `sessionId`: invalid type: integer `7`, expected a string"));
        assert!(err(
            r#"{"type":"join","sessionId":"s","deviceInfo":{"id":"d","name":"n","type":"boss"}}"#
        )
        .contains("unknown variant `boss`"));
        assert!(err(
            r#"{"type":"join","sessionId":"","deviceInfo":{"id":"d","name":"n","type":"client"}}"#
        )
        .contains("`sessionId` must be 1 to 64 characters"));
        assert!(err(
            r#"{"type":"join","sessionId":"a b","deviceInfo":{"id":"d","name":"n","type":"client"}}"#
        )
        .contains("`sessionId` must be 1 to 64 characters"));
        assert_eq!(
            err(r#"{"type":"join","sessionId":"s","deviceInfo":{"id":"d","name":"n"}}"#),
            "join: in `deviceInfo`: missing field `type`"
        );
        assert!(err(r#"{"type":"join","sessionId":"s","sessionName":" ","deviceInfo":{"id":"d","name":"n","type":"host"}}"#)
            .contains("`sessionName` must be 1 to 256 bytes"));
        assert!(err(r#"{"type":"kick"}"#).contains("kick: missing field `memberId`"));
        assert!(err(r#"{"type":"message"}"#).contains("message: missing field `data`"));
    }

    #[test]
    fn version_compatibility_compares_majors() {
        assert!(version_compatible("1.0", "1.0"));
        assert!(version_compatible("1.7", "1.0"));
        assert!(version_compatible("1", "1.0"));
        assert!(!version_compatible("2.0", "1.0"));
        assert!(!version_compatible("banana", "1.0"));
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(s in ".{0,200}") {
            let _ = decode(&s);
        }

        #[test]
        fn decode_never_panics_on_typed_garbage(t in "(join|leave|ping|kick|message|member_list)", body in ".{0,80}") {
            let _ = decode(&format!("{{\"type\":\"{t}\",{body}}}"));
        }
    }
}
