//! Server-to-client messages: [`encode`], which adds the `timestamp` every one carries (the
//! server's side), and [`decode_server`], which reads them forward compatibly (a client's).

use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};

use crate::handoff::{HandoffFailure, HostChange, StateSnapshot};
use crate::types::{
    AnyErrorCode, DeviceRef, ErrorCode, LeaveReason, MediaRole, MemberInfo, RawJson,
};

/// `data` inside an internally tagged message: serde buffers the fields first, which a raw
/// value cannot be read from, so the value is read as a tree and written back.
pub(crate) fn raw_from_any<'de, D: serde::Deserializer<'de>>(d: D) -> Result<RawJson, D::Error> {
    let value = Value::deserialize(d)?;
    Ok(RawJson::from_value(&value))
}

/// The `data` of a `message` frame as the raw slice of the frame's text.
#[derive(Deserialize)]
struct DataOnly<'a> {
    #[serde(borrow)]
    data: &'a serde_json::value::RawValue,
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
        /// The connection went through the resume handshake: it is numbered and may resume
        /// (written only when `true`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        resumable: bool,
        /// The session state: `state`, `version` and `term` at the top level (absent from a
        /// server older than the handoff layer).
        #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
        state: Option<Box<StateSnapshot>>,
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
    /// A member's entry changed (its `connectionStatus` on a resumable connection); never
    /// sent to the member it describes.
    MemberUpdated {
        /// The member, exactly as a `member_list` entry.
        member: MemberInfo,
    },
    /// A step of the resume handshake: the server's local token, or the connection token
    /// confirming a resume.
    Token {
        /// 32 or 64 characters of `[A-Za-z0-9]`.
        token: String,
    },
    /// A resume succeeded; the `replayed` messages after the client's `lastSeq` follow.
    #[serde(rename_all = "camelCase")]
    Resumed {
        /// The last client `seq` the server processed: the client resends what follows it.
        last_seq: u64,
        /// How many server messages are replayed next.
        replayed: u64,
    },
    /// A resume was refused; the socket stays open for a fresh handshake and `join`.
    ResumeFailed {
        /// Why.
        reason: ResumeFailure,
    },
    /// The highest client `seq` the server has processed (resumable connections only).
    Ack {
        /// Cumulative.
        seq: u64,
    },
    /// The session state changed (to every member, the setter included): the whole
    /// resulting document.
    #[serde(rename_all = "camelCase")]
    State {
        /// The document, as compact JSON.
        #[serde(deserialize_with = "raw_from_any")]
        state: RawJson,
        /// Its version.
        version: u64,
        /// The term it was set in.
        term: u64,
        /// The host that set it.
        updated_by: String,
    },
    /// To the host: its `handoff_request` is on its way to this candidate.
    #[serde(rename_all = "camelCase")]
    HandoffStarted {
        /// The request's id.
        handoff_id: String,
        /// The candidate the server chose (or the host named).
        target_id: String,
    },
    /// To the candidate: the host asks it to take control, with the state it would take.
    #[serde(rename_all = "camelCase")]
    HandoffRequest {
        /// Answer with this id.
        handoff_id: String,
        /// The host asking.
        from_id: String,
        /// The current document.
        #[serde(deserialize_with = "raw_from_any")]
        state: RawJson,
        /// Its version.
        version: u64,
        /// The current term.
        term: u64,
        /// How long the request waits for an answer, in ms.
        timeout_ms: u64,
    },
    /// To the old host: the candidate accepted; control has passed.
    #[serde(rename_all = "camelCase")]
    HandoffAck {
        /// The request's id.
        handoff_id: String,
        /// The new host.
        host_id: String,
        /// The new term.
        term: u64,
    },
    /// To every member: the host changed.
    #[serde(rename_all = "camelCase")]
    HostChanged {
        /// The new host.
        host_id: String,
        /// The host before it.
        previous_host_id: String,
        /// The new term.
        term: u64,
        /// A handoff, or the loss of the host.
        reason: HostChange,
    },
    /// To the host (or the candidate): a handoff did not happen; host and term are unchanged.
    #[serde(rename_all = "camelCase")]
    HandoffFailed {
        /// Why.
        reason: HandoffFailure,
        /// The request's id (absent for `busy` and `no_candidate`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        handoff_id: Option<String>,
        /// The candidate (to the host only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target_id: Option<String>,
    },
    /// Extension (issue 13 R2): the reply to `media_token`, to its sender only: a token for
    /// the session's UDP media relay.
    #[serde(rename_all = "camelCase")]
    MediaToken {
        /// 43 base64url characters, what START's MEDIA_TOKEN TLV carries.
        token: String,
        /// `publish` for the session's host, `subscribe` for everyone else (R3).
        role: MediaRole,
        /// The STREAM_ID to ask for in START: the session id (R6).
        stream_id: String,
        /// The relay's UDP port (on the server's host).
        port: u16,
        /// Until when the token may be claimed by a first START, ms since the Unix epoch.
        expires_at: u64,
    },
}

/// Why a resume failed (`resume_failed.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResumeFailure {
    /// Never issued, never joined, kicked, formally disconnected, or forgotten.
    UnknownToken,
    /// The resume window ran out.
    Expired,
    /// The member's replay buffer overflowed while it was away (or before).
    BufferOverflow,
    /// The session ended.
    SessionClosed,
}

impl ResumeFailure {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ResumeFailure::UnknownToken => "unknown_token",
            ResumeFailure::Expired => "expired",
            ResumeFailure::BufferOverflow => "buffer_overflow",
            ResumeFailure::SessionClosed => "session_closed",
        }
    }
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
            ServerMessage::MemberUpdated { .. } => "member_updated",
            ServerMessage::Token { .. } => "token",
            ServerMessage::Resumed { .. } => "resumed",
            ServerMessage::ResumeFailed { .. } => "resume_failed",
            ServerMessage::Ack { .. } => "ack",
            ServerMessage::State { .. } => "state",
            ServerMessage::HandoffStarted { .. } => "handoff_started",
            ServerMessage::HandoffRequest { .. } => "handoff_request",
            ServerMessage::HandoffAck { .. } => "handoff_ack",
            ServerMessage::HostChanged { .. } => "host_changed",
            ServerMessage::HandoffFailed { .. } => "handoff_failed",
            ServerMessage::MediaToken { .. } => "media_token",
        }
    }

    /// Whether this message is numbered (carries `seq`) when sent on a resumable connection:
    /// everything but `welcome`, `pong` and the handshake's own frames (`token`, `resumed`,
    /// `resume_failed`, `ack`).
    pub fn is_numbered(&self) -> bool {
        !matches!(
            self,
            ServerMessage::Welcome { .. }
                | ServerMessage::Pong
                | ServerMessage::Token { .. }
                | ServerMessage::Resumed { .. }
                | ServerMessage::ResumeFailed { .. }
                | ServerMessage::Ack { .. }
        )
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

/// The server message types this version knows.
pub const SERVER_TYPES: &[&str] = &[
    "welcome",
    "member_list",
    "member_joined",
    "member_left",
    "kicked",
    "session_closed",
    "pong",
    "error",
    "message",
    "member_updated",
    "token",
    "resumed",
    "resume_failed",
    "ack",
    "state",
    "handoff_started",
    "handoff_request",
    "handoff_ack",
    "host_changed",
    "handoff_failed",
    "media_token",
];

/// A server frame as a client reads it, forward compatibly: a newer server may send error
/// codes and message types this version does not know, and a client must still hand them to
/// its application rather than drop them.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// A message of a type this version knows, other than `error`: every `error` is
    /// [`Received::Error`], so `Known` never holds a [`ServerMessage::Error`].
    Known(ServerMessage),
    /// An `error`, whether or not this version knows its `code`.
    Error {
        /// The code; [`AnyErrorCode::Unknown`] keeps a newer server's string.
        code: AnyErrorCode,
        /// The server's explanation.
        message: String,
        /// Extra structured information, if any.
        details: Option<Value>,
    },
    /// A message whose `type` this version does not know, e.g. a newer server's
    /// `presence_diff`.
    Unknown {
        /// Its `type`, as the server wrote it.
        kind: String,
        /// The whole frame, exactly as received.
        raw: RawJson,
    },
}

#[derive(Deserialize)]
struct ErrorFields {
    code: AnyErrorCode,
    message: String,
    #[serde(default)]
    details: Option<Value>,
}

/// Decodes a server frame (the client side of the protocol), with its `timestamp`.
///
/// Forward compatible: unknown fields are ignored, an `error` with a code this version does
/// not know keeps it ([`AnyErrorCode::Unknown`]), and a message of a type it does not know is
/// [`Received::Unknown`] with the frame's text. Fails only on a frame that is not a JSON object
/// with a string `type`, or on a known type whose known fields are missing or mistyped.
pub fn decode_server(text: &str) -> Result<(Received, Option<Number>), serde_json::Error> {
    decode_server_numbered(text).map(|(received, timestamp, _)| (received, timestamp))
}

/// [`decode_server`], with the frame's `seq` on a resumable connection (`None` on frames that
/// are never numbered, and on plain connections). An `ack`'s `seq` is its own field, not a
/// number, so it is `None` there too.
#[allow(clippy::type_complexity)]
pub fn decode_server_numbered(
    text: &str,
) -> Result<(Received, Option<Number>, Option<u64>), serde_json::Error> {
    let value: Value = serde_json::from_str(text)?;
    let timestamp = value.get("timestamp").and_then(|t| t.as_number().cloned());
    let seq = match value.get("type") {
        Some(Value::String(kind)) if kind == "ack" => None,
        _ => value.get("seq").and_then(Value::as_u64),
    };
    let kind = match value.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        _ => {
            return Err(serde::de::Error::custom(
                "a server message is an object with a string `type`",
            ))
        }
    };
    let received = match kind {
        "error" => {
            let e: ErrorFields = serde_json::from_value(value)?;
            Received::Error {
                code: e.code,
                message: e.message,
                details: e.details,
            }
        }
        "message" => {
            let mut message: ServerMessage = serde_json::from_value(value)?;
            // The tree above cannot keep `data` as it was written (key order, number
            // spelling); read it again as the raw slice of the frame.
            if let ServerMessage::Message { data, .. } = &mut message {
                let raw: DataOnly<'_> = serde_json::from_str(text)?;
                *data = RawJson::from_text(raw.data.get())?;
            }
            Received::Known(message)
        }
        known if SERVER_TYPES.contains(&known) => Received::Known(serde_json::from_value(value)?),
        other => Received::Unknown {
            kind: other.to_string(),
            raw: RawJson::from_text(text)?,
        },
    };
    Ok((received, timestamp, seq))
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
            resumable: false,
            state: None,
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
            handoff_ready: false,
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
                resumable: false,
                state: None,
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
            let expected = match m.clone() {
                ServerMessage::Error {
                    code,
                    message,
                    details,
                } => Received::Error {
                    code: code.into(),
                    message,
                    details,
                },
                other => Received::Known(other),
            };
            assert_eq!(back, expected);
            assert_eq!(ts.unwrap().as_u64(), Some(5));
        }
    }

    #[test]
    fn server_types_are_every_type_name() {
        let all = [
            ServerMessage::MemberList { members: vec![] },
            ServerMessage::Kicked { reason: "r".into() },
            ServerMessage::SessionClosed { reason: "r".into() },
            ServerMessage::Pong,
            ServerMessage::error(ErrorCode::TooLarge, "x"),
            ServerMessage::Token { token: "t".into() },
            ServerMessage::Resumed {
                last_seq: 1,
                replayed: 2,
            },
            ServerMessage::ResumeFailed {
                reason: ResumeFailure::Expired,
            },
            ServerMessage::Ack { seq: 3 },
        ];
        for m in all {
            assert!(SERVER_TYPES.contains(&m.type_name()), "{}", m.type_name());
        }
        assert_eq!(SERVER_TYPES.len(), 21);
    }

    #[test]
    fn resume_frames_have_the_issues_shapes_and_numbered_frames_decode_with_their_seq() {
        let e = |m: &ServerMessage| -> Value {
            serde_json::from_str(&encode(m, &Stamp::Now(7))).unwrap()
        };
        assert_eq!(
            e(&ServerMessage::Resumed {
                last_seq: 4,
                replayed: 2
            }),
            json!({"type": "resumed", "timestamp": 7, "lastSeq": 4, "replayed": 2})
        );
        assert_eq!(
            e(&ServerMessage::ResumeFailed {
                reason: ResumeFailure::BufferOverflow
            }),
            json!({"type": "resume_failed", "timestamp": 7, "reason": "buffer_overflow"})
        );
        assert_eq!(
            e(&ServerMessage::Ack { seq: 9 }),
            json!({"type": "ack", "timestamp": 7, "seq": 9})
        );
        let numbered = crate::client::number_frame(
            12,
            &encode(
                &ServerMessage::Kicked { reason: "r".into() },
                &Stamp::Now(7),
            ),
        );
        assert!(
            numbered.starts_with(r#"{"seq":12,"type":"kicked""#),
            "{numbered}"
        );
        let (received, _, seq) = decode_server_numbered(&numbered).unwrap();
        assert_eq!(seq, Some(12));
        assert_eq!(
            received,
            Received::Known(ServerMessage::Kicked { reason: "r".into() })
        );
        let (_, _, seq) = decode_server_numbered(r#"{"type":"ack","seq":5}"#).unwrap();
        assert_eq!(seq, None, "an ack's seq is its value, not its number");
    }

    fn media_grant(role: MediaRole) -> ServerMessage {
        ServerMessage::MediaToken {
            token: "A".repeat(43),
            role,
            stream_id: "sess-1_x".into(),
            port: 40001,
            expires_at: 1796147866830,
        }
    }

    #[test]
    fn media_token_reply_has_the_issues_shape_and_decodes_back() {
        // Issue 13 R2, field for field.
        let text = encode(&media_grant(MediaRole::Publish), &Stamp::Now(1796147836830));
        let a43 = "A".repeat(43);
        assert_eq!(
            text,
            format!(
                r#"{{"type":"media_token","token":"{a43}","role":"publish","streamId":"sess-1_x","port":40001,"expiresAt":1796147866830,"timestamp":1796147836830}}"#
            )
        );
        assert_eq!(
            enc(&media_grant(MediaRole::Subscribe))["role"],
            json!("subscribe")
        );
        let m = media_grant(MediaRole::Subscribe);
        assert!(m.is_numbered(), "numbered on a resumable connection");
        assert_eq!(m.type_name(), "media_token");
        let (back, ts) = decode_server(&encode(&m, &Stamp::Now(5))).unwrap();
        assert_eq!(back, Received::Known(m));
        assert_eq!(ts.unwrap().as_u64(), Some(5));
        // A client reads it forward compatibly: unknown fields are ignored.
        let (back, _) = decode_server(&format!(
            r#"{{"type":"media_token","token":"{a43}","role":"publish","streamId":"s","port":1,"expiresAt":2,"timestamp":3,"host":"x"}}"#
        ))
        .unwrap();
        assert!(matches!(
            back,
            Received::Known(ServerMessage::MediaToken {
                role: MediaRole::Publish,
                port: 1,
                expires_at: 2,
                ..
            })
        ));
    }

    #[test]
    fn media_unavailable_is_an_error_code_of_ours() {
        let m = ServerMessage::error(
            ErrorCode::MediaUnavailable,
            "media_token: this server has no media relay (start it with --media-listen)",
        );
        assert_eq!(
            enc(&m),
            json!({"type":"error","timestamp":1706889600100u64,"code":"media_unavailable",
                   "message":"media_token: this server has no media relay (start it with --media-listen)"})
        );
        let (back, _) = decode_server(&encode(&m, &Stamp::Now(1))).unwrap();
        let Received::Error { code, .. } = back else {
            panic!("{back:?}")
        };
        assert_eq!(code, AnyErrorCode::Known(ErrorCode::MediaUnavailable));
    }

    #[test]
    fn a_newer_servers_error_code_is_kept() {
        let text = r#"{"type":"error","code":"quota_exceeded","message":"over quota","details":{"limit":5},"timestamp":7,"retryAfter":30}"#;
        let (received, ts) = decode_server(text).unwrap();
        assert_eq!(
            received,
            Received::Error {
                code: AnyErrorCode::Unknown("quota_exceeded".into()),
                message: "over quota".into(),
                details: Some(json!({"limit": 5})),
            }
        );
        assert_eq!(ts.unwrap().as_u64(), Some(7));
        // Known codes stay typed.
        let (received, _) =
            decode_server(r#"{"type":"error","code":"session_full","message":"full"}"#).unwrap();
        let Received::Error { code, details, .. } = received else {
            panic!("{received:?}")
        };
        assert_eq!(code, AnyErrorCode::Known(ErrorCode::SessionFull));
        assert_eq!(details, None);
    }

    #[test]
    fn a_newer_servers_message_type_is_kept_with_its_bytes() {
        let text = r#"{"type":"presence_diff","added":[ "c_1" ],"n":1e2,"timestamp":9}"#;
        let (received, ts) = decode_server(text).unwrap();
        assert_eq!(
            received,
            Received::Unknown {
                kind: "presence_diff".into(),
                raw: RawJson::from_text(text).unwrap(),
            }
        );
        assert_eq!(ts.unwrap().as_u64(), Some(9));
    }

    #[test]
    fn unknown_fields_are_ignored_and_broken_frames_fail() {
        let (received, _) =
            decode_server(r#"{"type":"kicked","reason":"r","colour":"red","timestamp":1}"#)
                .unwrap();
        assert_eq!(
            received,
            Received::Known(ServerMessage::Kicked { reason: "r".into() })
        );
        for bad in [
            "{oops",
            "[1]",
            r#"{"reason":"r"}"#,
            r#"{"type":7}"#,
            r#"{"type":"kicked"}"#,
            r#"{"type":"error","message":"no code"}"#,
            r#"{"type":"error","code":5,"message":"m"}"#,
        ] {
            assert!(decode_server(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pong_echoes_the_client_timestamp() {
        let n: Number = serde_json::from_str("-42").unwrap();
        let v: Value =
            serde_json::from_str(&encode(&ServerMessage::Pong, &Stamp::Echo(n))).unwrap();
        assert_eq!(v, json!({"type":"pong","timestamp":-42}));
    }

    #[test]
    fn message_data_reaches_the_client_byte_for_byte() {
        // Key order, spacing and number spelling as the sender wrote them (found by the
        // `server_frame` fuzz target: the tree sorted keys and re-spelled 50e90).
        let text =
            r#"{"type":"message","timestamp":1,"from":"c_1","data":{"x":50e90, "b":1,"a":[2.50]}}"#;
        let (received, _) = decode_server(text).unwrap();
        let Received::Known(ServerMessage::Message { data, from, .. }) = received else {
            panic!("not a message: {received:?}")
        };
        assert_eq!(from, "c_1");
        assert_eq!(data.get(), r#"{"x":50e90, "b":1,"a":[2.50]}"#);
    }
}
