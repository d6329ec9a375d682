//! Server-to-client messages and [`encode`], which adds the `timestamp` every one carries.

use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};

use crate::types::{DeviceRef, ErrorCode, LeaveReason, MemberInfo, RawJson};

/// `data` inside an internally tagged message: serde buffers the fields first, which a raw
/// value cannot be read from, so the value is read as a tree and written back.
fn raw_from_any<'de, D: serde::Deserializer<'de>>(d: D) -> Result<RawJson, D::Error> {
    let value = Value::deserialize(d)?;
    Ok(RawJson::from_value(&value))
}

/// The session summary carried by `welcome`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    /// The session id.
    pub id: String,
    /// The session's display name.
    pub name: String,
    /// The host's `clientId`; `null` while a session created over HTTP has no host yet.
    pub host_id: Option<String>,
    /// The host as a device (not sent in our dialect).
    #[serde(skip)]
    pub host: Option<DeviceRef>,
}

/// A message from the server. [`encode`] serialises it with its `type` and a `timestamp`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The join succeeded; `clientId` is the member's id from now on.
    #[serde(rename_all = "camelCase")]
    Welcome {
        /// The id the server assigned to this member.
        client_id: String,
        /// The session joined (boxed to keep every message small).
        session_info: Box<SessionInfo>,
        /// The joiner as a device (not sent in our dialect).
        #[serde(skip)]
        device: DeviceRef,
        /// When it joined, ms since the Unix epoch (not sent in our dialect).
        #[serde(skip)]
        joined_at: u64,
    },
    /// Every member: host first, then in join order.
    MemberList {
        /// The members.
        members: Vec<MemberInfo>,
    },
    /// A member joined (sent to everyone but the joiner).
    MemberJoined {
        /// The new member.
        member: MemberInfo,
    },
    /// A member left.
    #[serde(rename_all = "camelCase")]
    MemberLeft {
        /// The member's `clientId`.
        member_id: String,
        /// Why it left.
        reason: LeaveReason,
        /// The member as a device (not sent in our dialect).
        #[serde(skip)]
        device: DeviceRef,
    },
    /// You were removed from the session; the server closes the socket.
    Kicked {
        /// Why.
        reason: String,
    },
    /// The session ended; the server closes the socket.
    SessionClosed {
        /// Why.
        reason: String,
    },
    /// The reply to `ping`. Its timestamp is the ping's, see [`Stamp::Echo`].
    Pong,
    /// Something went wrong.
    Error {
        /// The machine-readable code.
        code: ErrorCode,
        /// A human-readable explanation.
        message: String,
        /// Extra structured information, e.g. `{maxMembers, currentMembers}` for `session_full`.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        details: Option<Value>,
    },
    /// Application data from another member.
    Message {
        /// The sender's `clientId`.
        from: String,
        /// The data as the sender gave it, byte for byte.
        #[serde(deserialize_with = "raw_from_any")]
        data: RawJson,
        /// The sender as a device (not sent in our dialect).
        #[serde(skip)]
        device: DeviceRef,
    },
}

impl ServerMessage {
    /// An `error` without details.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code,
            message: message.into(),
            details: None,
        }
    }

    /// The wire `type` of this message.
    pub fn type_name(&self) -> &'static str {
        match self {
            ServerMessage::Welcome { .. } => "welcome",
            ServerMessage::MemberList { .. } => "member_list",
            ServerMessage::MemberJoined { .. } => "member_joined",
            ServerMessage::MemberLeft { .. } => "member_left",
            ServerMessage::Kicked { .. } => "kicked",
            ServerMessage::SessionClosed { .. } => "session_closed",
            ServerMessage::Pong => "pong",
            ServerMessage::Error { .. } => "error",
            ServerMessage::Message { .. } => "message",
        }
    }
}

/// The `timestamp` a message is sent with.
#[derive(Debug, Clone, PartialEq)]
pub enum Stamp {
    /// The server's clock, in ms since the Unix epoch.
    Now(u64),
    /// A client's value echoed unchanged (the `pong` to a `ping`).
    Echo(Number),
}

#[derive(Serialize)]
struct Stamped<'a> {
    #[serde(flatten)]
    message: &'a ServerMessage,
    timestamp: &'a Stamp,
}

impl Serialize for Stamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Stamp::Now(ms) => s.serialize_u64(*ms),
            Stamp::Echo(n) => n.serialize(s),
        }
    }
}

/// Decodes a server message (the client side of the protocol), with its `timestamp`.
/// Unknown fields are ignored, so newer servers stay readable.
pub fn decode_server(text: &str) -> Result<(ServerMessage, Option<Number>), serde_json::Error> {
    let value: Value = serde_json::from_str(text)?;
    let timestamp = value.get("timestamp").and_then(|t| t.as_number().cloned());
    Ok((serde_json::from_value(value)?, timestamp))
}

/// Serialises a message with its `timestamp`, ready to be sent as one text frame.
pub fn encode(message: &ServerMessage, timestamp: &Stamp) -> String {
    serde_json::to_string(&Stamped { message, timestamp })
        .expect("server messages always serialise")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ConnectionStatus;
    use serde_json::json;

    fn enc(m: &ServerMessage) -> Value {
        serde_json::from_str(&encode(m, &Stamp::Now(1706889600100))).unwrap()
    }

    #[test]
    fn welcome_matches_the_document() {
        let m = ServerMessage::Welcome {
            client_id: "client-789".into(),
            session_info: Box::new(SessionInfo {
                id: "abc123".into(),
                name: "Rishad's Party".into(),
                host_id: Some("host-001".into()),
                host: None,
            }),
            device: DeviceRef::default(),
            joined_at: 0,
        };
        assert_eq!(
            enc(&m),
            json!({"type":"welcome","timestamp":1706889600100u64,"clientId":"client-789",
                   "sessionInfo":{"id":"abc123","name":"Rishad's Party","hostId":"host-001"}})
        );
    }

    #[test]
    fn every_message_has_type_and_timestamp() {
        let member = MemberInfo {
            id: "c".into(),
            name: "n".into(),
            is_host: false,
            connection_status: ConnectionStatus::Connected,
            joined_at: 1,
            latency: Some(23),
            device_id: String::new(),
        };
        let all = [
            ServerMessage::MemberList {
                members: vec![member.clone()],
            },
            ServerMessage::MemberJoined { member },
            ServerMessage::MemberLeft {
                member_id: "c".into(),
                reason: LeaveReason::Timeout,
                device: DeviceRef::default(),
            },
            ServerMessage::Kicked { reason: "r".into() },
            ServerMessage::SessionClosed { reason: "r".into() },
            ServerMessage::Pong,
            ServerMessage::error(ErrorCode::SessionFull, "full"),
            ServerMessage::Message {
                from: "c".into(),
                data: RawJson::from_text("[1]").unwrap(),
                device: DeviceRef::default(),
            },
        ];
        for m in all {
            let v = enc(&m);
            assert_eq!(v["type"], m.type_name());
            assert_eq!(v["timestamp"], 1706889600100u64);
        }
    }

    #[test]
    fn member_left_and_error_fields() {
        assert_eq!(
            enc(&ServerMessage::MemberLeft {
                member_id: "c7".into(),
                reason: LeaveReason::Kicked,
                device: DeviceRef::default(),
            }),
            json!({"type":"member_left","timestamp":1706889600100u64,"memberId":"c7","reason":"kicked"})
        );
        let e = ServerMessage::Error {
            code: ErrorCode::SessionFull,
            message: "full".into(),
            details: Some(json!({"maxMembers":10,"currentMembers":10})),
        };
        assert_eq!(enc(&e)["details"]["maxMembers"], 10);
        assert_eq!(enc(&e)["code"], "session_full");
    }

    #[test]
    fn every_message_decodes_back() {
        let msgs = [
            ServerMessage::Welcome {
                client_id: "c".into(),
                session_info: Box::new(SessionInfo {
                    id: "s".into(),
                    name: "n".into(),
                    host_id: None,
                    host: None,
                }),
                device: DeviceRef::default(),
                joined_at: 0,
            },
            ServerMessage::Pong,
            ServerMessage::error(ErrorCode::AlreadyJoined, "x"),
            ServerMessage::Message {
                from: "c".into(),
                data: RawJson::from_text(r#"{"a":[1]}"#).unwrap(),
                device: DeviceRef::default(),
            },
            ServerMessage::MemberLeft {
                member_id: "c".into(),
                reason: LeaveReason::Error,
                device: DeviceRef::default(),
            },
        ];
        for m in msgs {
            let (back, ts) = decode_server(&encode(&m, &Stamp::Now(5))).unwrap();
            assert_eq!(back, m);
            assert_eq!(ts.unwrap().as_u64(), Some(5));
        }
    }

    #[test]
    fn pong_echoes_the_client_timestamp() {
        let n: Number = serde_json::from_str("-42").unwrap();
        let v: Value =
            serde_json::from_str(&encode(&ServerMessage::Pong, &Stamp::Echo(n))).unwrap();
        assert_eq!(v, json!({"type":"pong","timestamp":-42}));
    }
}
