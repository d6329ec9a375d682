//! Client-to-server messages: [`decode`], which reports exactly what is wrong with a frame
//! (the server's side), and [`encode_client`], which writes a [`ClientMessage`] as our
//! dialect's text frame (the side of every client: the SDK, the bench, the tests).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};

use crate::app::Dialect;
use crate::handoff::{decode_handoff, StateChange};
use crate::types::{DeviceInfo, DeviceType, RawJson};

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
    /// `media_token` (Extension, issue 13 R2): ask for a media token for the session's UDP
    /// relay; the host gets a publish token, everyone else a subscribe token. No fields.
    MediaToken,
    /// The LOUDSYNC app's `PONG` (its answer to a server `PING`): valid, and otherwise ignored.
    Pong,
    /// `message`: application data relayed to the other members, or to one.
    Message {
        /// Any JSON value, kept as the sender wrote it.
        data: RawJson,
        /// A member id; absent means everyone else.
        to: Option<String>,
    },
    /// `token`: a step of the resume handshake (seed 003): the client's local token (32
    /// characters), or the connection token (64) with `lastSeq` to resume, or without it to
    /// disconnect formally.
    Token {
        /// [`TOKEN_LEN`] or [`CONNECTION_TOKEN_LEN`] characters of `[A-Za-z0-9]`.
        token: String,
        /// The last server `seq` the client received (resume only).
        last_seq: Option<u64>,
    },
    /// `ack`: the highest server `seq` the client has received (resumable connections only).
    Ack {
        /// Cumulative: everything up to and including it.
        seq: u64,
    },
    /// `state_set` (host only): replace or merge-patch the session state.
    StateSet {
        /// The whole document, or a merge patch.
        change: StateChange,
        /// Refused with `stale_version` unless it is the current version (absent: any).
        base_version: Option<u64>,
        /// Refused with `stale_term` unless it is the current term (absent: any).
        term: Option<u64>,
    },
    /// `handoff_ready`: declare (or withdraw) readiness to take control.
    HandoffReady {
        /// Ready or not.
        ready: bool,
    },
    /// `handoff_request` (host only): hand control to `target_id`, or to whoever the server
    /// chooses (the member whose readiness is oldest).
    HandoffRequest {
        /// A member's `clientId`.
        target_id: Option<String>,
    },
    /// `handoff_accept`: the candidate takes control.
    HandoffAccept {
        /// The pending request's id.
        handoff_id: String,
    },
    /// `handoff_decline`: the candidate refuses.
    HandoffDecline {
        /// The pending request's id.
        handoff_id: String,
        /// Free text for the host.
        reason: Option<String>,
    },
}

/// Length of a side's local token in the resume handshake.
pub const TOKEN_LEN: usize = 32;

/// Length of the connection token both sides derive from the two local tokens.
pub const CONNECTION_TOKEN_LEN: usize = 2 * TOKEN_LEN;

/// Whether `token` has the form of a local token or a connection token: [`TOKEN_LEN`] or
/// [`CONNECTION_TOKEN_LEN`] characters of `[A-Za-z0-9]`.
pub fn valid_token(token: &str) -> bool {
    (token.len() == TOKEN_LEN || token.len() == CONNECTION_TOKEN_LEN)
        && token.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The connection token of a handshake: the two local tokens concatenated in byte order
/// (`Z` < `a`), the smaller first (seed 003; both are [`TOKEN_LEN`] long, so the document's
/// truncation to the shorter never applies).
pub fn merge_tokens(a: &str, b: &str) -> String {
    let (first, second) = if a.as_bytes() < b.as_bytes() {
        (a, b)
    } else {
        (b, a)
    };
    let mut t = String::with_capacity(first.len() + second.len());
    t.push_str(first);
    t.push_str(second);
    t
}

/// The `seq` of a client frame on a resumable connection, as [`decode_numbered`] read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seq {
    /// No `seq`, or a frame whose `seq` is never looked at (`ack`, `token`, `heartbeat`,
    /// `ping`: liveness, latency and handshake frames are never numbered).
    Absent,
    /// A positive integer.
    Valid(u64),
    /// Present but not a positive integer.
    Invalid,
}

/// A client frame decoded together with its numbering.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The frame's `seq`; read even when the rest of the frame is refused, so a refused frame
    /// still uses up its number.
    pub seq: Seq,
    /// The message, or what is wrong with it.
    pub message: Result<ClientMessage, DecodeError>,
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
            ClientMessage::MediaToken => "media_token",
            ClientMessage::Pong => "pong",
            ClientMessage::Message { .. } => "message",
            ClientMessage::Token { .. } => "token",
            ClientMessage::Ack { .. } => "ack",
            ClientMessage::StateSet { .. } => "state_set",
            ClientMessage::HandoffReady { .. } => "handoff_ready",
            ClientMessage::HandoffRequest { .. } => "handoff_request",
            ClientMessage::HandoffAccept { .. } => "handoff_accept",
            ClientMessage::HandoffDecline { .. } => "handoff_decline",
        }
    }

    /// Whether this message carries a `seq` on a resumable connection: everything but
    /// `ack`, `token`, `heartbeat`, `ping` (and the app's `pong`, which never is resumable).
    pub fn is_numbered(&self) -> bool {
        !matches!(
            self,
            ClientMessage::Ack { .. }
                | ClientMessage::Token { .. }
                | ClientMessage::Heartbeat
                | ClientMessage::Ping { .. }
                | ClientMessage::Pong
        )
    }

    /// A `join` with neither `sessionName` nor `protocolVersion`.
    pub fn join(
        session_id: impl Into<String>,
        device_id: impl Into<String>,
        device_name: impl Into<String>,
        kind: DeviceType,
    ) -> ClientMessage {
        ClientMessage::Join(Join {
            session_id: Some(session_id.into()),
            device_info: DeviceInfo {
                id: device_id.into(),
                name: device_name.into(),
                kind,
            },
            session_name: None,
            protocol_version: None,
            password: None,
            token: None,
        })
    }

    /// A `leave`, with an optional (informational) reason.
    pub fn leave(reason: Option<&str>) -> ClientMessage {
        ClientMessage::Leave {
            reason: reason.map(str::to_string),
        }
    }

    /// A `ping` carrying `timestamp` (any integer: `u64`, `i64`, ...).
    pub fn ping(timestamp: impl Into<Number>) -> ClientMessage {
        ClientMessage::Ping {
            timestamp: timestamp.into(),
        }
    }

    /// A `kick` of the member `member_id`, with an optional reason shown to it.
    pub fn kick(member_id: impl Into<String>, reason: Option<&str>) -> ClientMessage {
        ClientMessage::Kick {
            member_id: member_id.into(),
            reason: reason.map(str::to_string),
        }
    }

    /// A `message` with application `data`, to everyone else (`to: None`) or to one member.
    pub fn message(data: RawJson, to: Option<&str>) -> ClientMessage {
        ClientMessage::Message {
            data,
            to: to.map(str::to_string),
        }
    }
}

/// Why a [`ClientMessage`] cannot be written in a dialect: the dialect has no such message
/// (our dialect has no `pong`; the app's has no `kick`, `member_list` or `message`), or no
/// way to say part of it (the app never hosts, and has no `sessionName` or `protocolVersion`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{dialect:?} dialect: {problem}")]
pub struct EncodeError {
    /// The dialect asked for.
    pub dialect: Dialect,
    /// What it cannot express, e.g. ``"no client message `pong`"``.
    pub problem: &'static str,
}

/// Our dialect's client frames, in the order their fields are written: `type` first, then
/// `timestamp`, then the message's own fields; absent optional fields are left out.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Wire<'a> {
    #[serde(rename_all = "camelCase")]
    Join {
        timestamp: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        session_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        session_name: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        protocol_version: Option<&'a str>,
        device_info: &'a DeviceInfo,
        #[serde(skip_serializing_if = "Option::is_none")]
        password: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        token: Option<&'a str>,
    },
    Leave {
        timestamp: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'a str>,
    },
    Heartbeat {
        timestamp: u64,
    },
    Ping {
        timestamp: &'a Number,
    },
    #[serde(rename_all = "camelCase")]
    Kick {
        timestamp: u64,
        member_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'a str>,
    },
    MemberList {
        timestamp: u64,
    },
    MediaToken {
        timestamp: u64,
    },
    Message {
        timestamp: u64,
        data: &'a RawJson,
        #[serde(skip_serializing_if = "Option::is_none")]
        to: Option<&'a str>,
    },
    #[serde(rename_all = "camelCase")]
    Token {
        timestamp: u64,
        token: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        last_seq: Option<u64>,
    },
    Ack {
        timestamp: u64,
        seq: u64,
    },
    #[serde(rename_all = "camelCase")]
    StateSet {
        timestamp: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        state: Option<&'a Map<String, Value>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        patch: Option<&'a Map<String, Value>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        base_version: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        term: Option<u64>,
    },
    HandoffReady {
        timestamp: u64,
        ready: bool,
    },
    #[serde(rename_all = "camelCase")]
    HandoffRequest {
        timestamp: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        target_id: Option<&'a str>,
    },
    #[serde(rename_all = "camelCase")]
    HandoffAccept {
        timestamp: u64,
        handoff_id: &'a str,
    },
    #[serde(rename_all = "camelCase")]
    HandoffDecline {
        timestamp: u64,
        handoff_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'a str>,
    },
}

/// Writes a client message as one text frame of our dialect (§3 of `docs/PROTOCOL.md`).
///
/// `timestamp_ms` becomes the frame's `timestamp` (the base document's `BaseMessage` has one;
/// the server ignores it), except on `ping`, whose `timestamp` is the message's own and is
/// written verbatim. `type` comes first, then `timestamp`, then the message's fields; optional
/// fields that are `None` are left out, and `message.data` is written with the bytes it holds.
/// [`decode`] of the result gives `message` back.
///
/// Fails only for [`ClientMessage::Pong`], which is the app's and has no frame in ours.
pub fn encode_client(message: &ClientMessage, timestamp_ms: u64) -> Result<String, EncodeError> {
    let timestamp = timestamp_ms;
    let wire = match message {
        ClientMessage::Join(join) => Wire::Join {
            timestamp,
            session_id: join.session_id.as_deref(),
            session_name: join.session_name.as_deref(),
            protocol_version: join.protocol_version.as_deref(),
            device_info: &join.device_info,
            password: join.password.as_deref(),
            token: join.token.as_deref(),
        },
        ClientMessage::Leave { reason } => Wire::Leave {
            timestamp,
            reason: reason.as_deref(),
        },
        ClientMessage::Heartbeat => Wire::Heartbeat { timestamp },
        ClientMessage::Ping { timestamp } => Wire::Ping { timestamp },
        ClientMessage::Kick { member_id, reason } => Wire::Kick {
            timestamp,
            member_id,
            reason: reason.as_deref(),
        },
        ClientMessage::MemberList => Wire::MemberList { timestamp },
        ClientMessage::MediaToken => Wire::MediaToken { timestamp },
        ClientMessage::Message { data, to } => Wire::Message {
            timestamp,
            data,
            to: to.as_deref(),
        },
        ClientMessage::Token { token, last_seq } => Wire::Token {
            timestamp,
            token,
            last_seq: *last_seq,
        },
        ClientMessage::Ack { seq } => Wire::Ack {
            timestamp,
            seq: *seq,
        },
        ClientMessage::StateSet {
            change,
            base_version,
            term,
        } => {
            let (state, patch) = match change {
                StateChange::Replace(state) => (Some(state), None),
                StateChange::Patch(patch) => (None, Some(patch)),
            };
            Wire::StateSet {
                timestamp,
                state,
                patch,
                base_version: *base_version,
                term: *term,
            }
        }
        ClientMessage::HandoffReady { ready } => Wire::HandoffReady {
            timestamp,
            ready: *ready,
        },
        ClientMessage::HandoffRequest { target_id } => Wire::HandoffRequest {
            timestamp,
            target_id: target_id.as_deref(),
        },
        ClientMessage::HandoffAccept { handoff_id } => Wire::HandoffAccept {
            timestamp,
            handoff_id,
        },
        ClientMessage::HandoffDecline { handoff_id, reason } => Wire::HandoffDecline {
            timestamp,
            handoff_id,
            reason: reason.as_deref(),
        },
        ClientMessage::Pong => {
            return Err(EncodeError {
                dialect: Dialect::LoudSync,
                problem: "no client message `pong` (it is the app's)",
            })
        }
    };
    Ok(serde_json::to_string(&wire).expect("client messages always serialise"))
}

/// Like [`encode_client`], with the frame's `seq` on a resumable connection written first
/// (`{"seq":7,"type":"message",...}`); `None` writes the plain frame.
pub fn encode_client_numbered(
    message: &ClientMessage,
    timestamp_ms: u64,
    seq: Option<u64>,
) -> Result<String, EncodeError> {
    let plain = encode_client(message, timestamp_ms)?;
    Ok(match seq {
        None => plain,
        Some(seq) => number_frame(seq, &plain),
    })
}

/// `{"seq":N,` followed by `frame` without its opening brace: the numbered form of a frame
/// that is a JSON object (both directions number frames this way, so a numbered frame is
/// the plain one plus a prefix, and buffered bytes can be shared between recipients).
pub fn number_frame(seq: u64, frame: &str) -> String {
    let rest = frame.strip_prefix('{').unwrap_or(frame);
    let mut out = String::with_capacity(frame.len() + 24);
    out.push_str(&seq_prefix(seq));
    out.push_str(rest);
    out
}

/// The bytes that replace a numbered frame's opening brace: `{"seq":N,`.
pub fn seq_prefix(seq: u64) -> String {
    format!("{{\"seq\":{seq},")
}

/// Appends our `ping` frame for `timestamp` to `out`: the same bytes as [`encode_client`] of
/// [`ClientMessage::ping`], without building a message (the bench sends one per member every
/// interval).
pub fn write_ping(out: &mut String, timestamp: u64) {
    use std::fmt::Write;
    let _ = write!(out, r#"{{"type":"ping","timestamp":{timestamp}}}"#);
}

/// The fields of a `join` message. Its `Debug` output never shows `password` or `token`
/// (they print as `<redacted>`), so a logged join leaks neither.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Join {
    /// The session to join (or, for a host, to open). A host may leave it out (or send
    /// `null`) to open a new session under a fresh code; a client must name one.
    #[serde(default)]
    pub session_id: Option<String>,
    /// The device's own description.
    pub device_info: DeviceInfo,
    /// Extension: the name of a session a host creates (default `"<device name>'s session"`).
    #[serde(default)]
    pub session_name: Option<String>,
    /// Extension: the client's protocol version, `MAJOR.MINOR`.
    #[serde(default)]
    pub protocol_version: Option<String>,
    /// Extension: the session's password, for a session created with one.
    #[serde(default)]
    pub password: Option<String>,
    /// Extension: a signed join token (a JWT) granting this join.
    #[serde(default)]
    pub token: Option<String>,
}

impl std::fmt::Debug for Join {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |secret: &Option<String>| secret.as_ref().map(|_| "<redacted>");
        f.debug_struct("Join")
            .field("session_id", &self.session_id)
            .field("device_info", &self.device_info)
            .field("session_name", &self.session_name)
            .field("protocol_version", &self.protocol_version)
            .field("password", &redacted(&self.password))
            .field("token", &redacted(&self.token))
            .finish()
    }
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
#[serde(rename_all = "camelCase")]
struct TokenFields {
    token: String,
    #[serde(default)]
    last_seq: Option<u64>,
}

#[derive(Deserialize)]
struct AckFields {
    seq: u64,
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
    "media_token",
    "message",
    "token",
    "ack",
    "state_set",
    "handoff_ready",
    "handoff_request",
    "handoff_accept",
    "handoff_decline",
];

/// Decodes one text frame into a [`ClientMessage`].
///
/// Unknown extra fields are ignored (so clients may send `timestamp` or future fields), but a
/// missing or mistyped known field is an error naming the type and the field.
pub fn decode(text: &str) -> Result<ClientMessage, DecodeError> {
    decode_numbered(text).message
}

/// Decodes one text frame with its `seq` (resumable connections number their frames). The
/// `seq` is read first and reported even when the rest of the frame is refused; on `ack`,
/// `token`, `heartbeat` and `ping` it is never looked at ([`Seq::Absent`]).
pub fn decode_numbered(text: &str) -> Decoded {
    // One pass over the frame: the top-level fields are validated but kept as written, so
    // `message.data` is relayed with the sender's bytes and only small fields are built.
    let Ok(mut object) = serde_json::from_str::<BTreeMap<String, Box<RawValue>>>(text) else {
        return Decoded {
            seq: Seq::Absent,
            message: Err(not_an_object(text)),
        };
    };
    let kind = match object.get("type").map(|raw| raw.get()) {
        Some(raw) => match serde_json::from_str::<Value>(raw) {
            Ok(Value::String(kind)) => Ok(kind),
            Ok(other) => Err(DecodeError::new(format!(
                "field `type` must be a string, got {}",
                json_kind(&other)
            ))),
            Err(e) => Err(DecodeError::new(format!("invalid JSON: {e}"))),
        },
        None => Err(DecodeError::new("missing field `type`")),
    };
    let unnumbered = matches!(kind.as_deref(), Ok("ack" | "token" | "heartbeat" | "ping"));
    let seq = match object.get("seq") {
        _ if unnumbered => Seq::Absent,
        None => Seq::Absent,
        Some(raw) => match raw.get().parse::<u64>() {
            Ok(n) if n >= 1 => Seq::Valid(n),
            _ => Seq::Invalid,
        },
    };
    if !unnumbered {
        object.remove("seq");
    }
    let message = kind.and_then(|kind| decode_fields(&kind, object));
    Decoded { seq, message }
}

fn decode_fields(
    kind: &str,
    mut object: BTreeMap<String, Box<RawValue>>,
) -> Result<ClientMessage, DecodeError> {
    let kind = kind.to_string();
    let message = match kind.as_str() {
        "join" => {
            let join: Join = fields(&kind, object)?;
            validate_join(&join)?;
            ClientMessage::Join(join)
        }
        "leave" => {
            let f: LeaveFields = fields(&kind, object)?;
            check_text("leave", "reason", f.reason.as_deref())?;
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
            check_text("kick", "memberId", Some(&f.member_id))?;
            check_text("kick", "reason", f.reason.as_deref())?;
            ClientMessage::Kick {
                member_id: f.member_id,
                reason: f.reason,
            }
        }
        "member_list" => ClientMessage::MemberList,
        // Like `member_list`, no fields: anything else in the frame is ignored.
        "media_token" => ClientMessage::MediaToken,
        "token" => {
            let f: TokenFields = fields(&kind, object)?;
            if !valid_token(&f.token) {
                return Err(DecodeError::new(format!(
                    "token: field `token` must be {TOKEN_LEN} (a local token) or {CONNECTION_TOKEN_LEN} (a connection token) characters of [A-Za-z0-9], got {} characters",
                    f.token.chars().count()
                )));
            }
            ClientMessage::Token {
                token: f.token,
                last_seq: f.last_seq,
            }
        }
        "ack" => {
            let f: AckFields = fields(&kind, object)?;
            ClientMessage::Ack { seq: f.seq }
        }
        "message" => {
            let Some(data) = object.remove("data") else {
                return Err(DecodeError::new("message: missing field `data`"));
            };
            let f: MessageFields = fields(&kind, object)?;
            check_text("message", "to", f.to.as_deref())?;
            ClientMessage::Message {
                data: RawJson(data),
                to: f.to,
            }
        }
        other => {
            if let Some(decoded) = decode_handoff(other, object) {
                return decoded;
            }
            return Err(DecodeError::new(format!(
                "unknown message type `{other}`; expected one of: {}",
                CLIENT_TYPES.join(", ")
            )));
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

pub(crate) fn fields<T: for<'de> Deserialize<'de>>(
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

/// Longest `password` accepted in `join`, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 256;

/// Longest `token` accepted in `join`, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Whether `c` is a control character: C0 (`U+0000` to `U+001F`, tab and newline included),
/// DEL (`U+007F`) or C1 (`U+0080` to `U+009F`). Names, ids and reasons may not hold any.
pub fn is_control(c: char) -> bool {
    c.is_control()
}

/// Whether `text` holds a control character ([`is_control`]).
pub fn has_control(text: &str) -> bool {
    text.chars().any(is_control)
}

/// The error for a text field that holds a control character, if `value` does.
pub(crate) fn check_text(kind: &str, field: &str, value: Option<&str>) -> Result<(), DecodeError> {
    match value {
        Some(v) if has_control(v) => Err(DecodeError::new(format!(
            "{kind}: field `{field}` must not contain control characters"
        ))),
        _ => Ok(()),
    }
}

/// Whether `version` is written as `MAJOR` or `MAJOR.MINOR`: each part 1 to 9 ASCII digits,
/// nothing else (no sign, no spaces, no third part).
pub fn valid_protocol_version(version: &str) -> bool {
    parse_version(version).is_some()
}

/// `(major, minor)` of a version written as [`valid_protocol_version`] says.
fn parse_version(version: &str) -> Option<(u32, u32)> {
    let part = |p: &str| {
        ((1..=9).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse().ok())
            .flatten()
    };
    match version.split_once('.') {
        None => Some((part(version)?, 0)),
        Some((major, minor)) => Some((part(major)?, part(minor)?)),
    }
}

pub(crate) fn validate_join(join: &Join) -> Result<(), DecodeError> {
    let session_id = match (&join.session_id, join.device_info.kind) {
        (Some(id), _) => id.as_str(),
        // A host without a session id opens a new session (seed 000's Connect Event).
        (None, DeviceType::Host) => "",
        (None, DeviceType::Client) => {
            return Err(DecodeError::new("join: missing field `sessionId`"))
        }
    };
    if join.session_id.is_some() && !valid_session_id(session_id) {
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
        check_text("join", field, Some(value))?;
    }
    if let Some(name) = &join.session_name {
        if name.trim().is_empty() || name.len() > MAX_NAME_BYTES {
            return Err(DecodeError::new(format!(
                "join: field `sessionName` must be 1 to {MAX_NAME_BYTES} bytes, not blank"
            )));
        }
        check_text("join", "sessionName", Some(name))?;
    }
    if let Some(version) = &join.protocol_version {
        if !valid_protocol_version(version) {
            return Err(DecodeError::new(
                "join: field `protocolVersion` must be MAJOR or MAJOR.MINOR in ASCII digits (e.g. \"1.0\")",
            ));
        }
    }
    for (field, value, limit) in [
        ("password", &join.password, MAX_PASSWORD_BYTES),
        ("token", &join.token, MAX_TOKEN_BYTES),
    ] {
        if let Some(value) = value {
            if value.is_empty() || value.len() > limit {
                return Err(DecodeError::new(format!(
                    "join: field `{field}` must be 1 to {limit} bytes"
                )));
            }
        }
    }
    Ok(())
}

pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Whether a client's `protocolVersion` is compatible with ours: both are written as
/// [`valid_protocol_version`] says (strictly `MAJOR` or `MAJOR.MINOR`, ASCII digits), and
/// their major versions are equal. Anything else (`1.x`, `1.0.0`, `+1`, `" 1.0"`) is
/// incompatible; [`decode`] already refuses such a `join` as `invalid_message`.
pub fn version_compatible(client: &str, ours: &str) -> bool {
    match (parse_version(client), parse_version(ours)) {
        (Some((a, _)), Some((b, _))) => a == b,
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
        assert_eq!(join.session_id.as_deref(), Some("abc123"));
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

    /// Finding 5 of issue 9: these passed the version check.
    #[test]
    fn protocol_versions_are_strictly_major_or_major_dot_minor() {
        for good in ["1", "1.0", "1.7", "01.00", "2.0"] {
            assert!(valid_protocol_version(good), "{good:?}");
        }
        for bad in [
            "1.x",
            "1.0.0",
            "+1",
            " 1.0",
            "1.0 ",
            "1.-1",
            "-1",
            "",
            ".",
            "1.",
            ".1",
            "1..0",
            "١",
            "1e0",
            "0x1",
            "1234567890",
        ] {
            assert!(!valid_protocol_version(bad), "{bad:?}");
            assert!(!version_compatible(bad, "1.0"), "{bad:?}");
            let frame = format!(
                r#"{{"type":"join","sessionId":"s","protocolVersion":{},"deviceInfo":{{"id":"d","name":"n","type":"client"}}}}"#,
                serde_json::to_string(bad).unwrap()
            );
            assert_eq!(
                err(&frame),
                r#"join: field `protocolVersion` must be MAJOR or MAJOR.MINOR in ASCII digits (e.g. "1.0")"#,
                "{bad:?}"
            );
        }
        // Well formed, another major: decodes, and the connection answers `version_mismatch`.
        assert!(decode(r#"{"type":"join","sessionId":"s","protocolVersion":"2.0","deviceInfo":{"id":"d","name":"n","type":"client"}}"#).is_ok());
    }

    /// Finding 7 of issue 9: control characters in names, ids and reasons are refused.
    #[test]
    fn control_characters_are_refused_in_every_text_field() {
        let join = |id: &str, name: &str, session_name: &str| {
            format!(
                r#"{{"type":"join","sessionId":"s","sessionName":{},"deviceInfo":{{"id":{},"name":{},"type":"host"}}}}"#,
                serde_json::to_string(session_name).unwrap(),
                serde_json::to_string(id).unwrap(),
                serde_json::to_string(name).unwrap()
            )
        };
        for bad in [
            "\u{0}",
            "a\u{1b}]0;PWNED\u{7}",
            "tab\there",
            "new\nline",
            "del\u{7f}",
            "c1\u{9b}2J",
        ] {
            assert_eq!(
                err(&join(bad, "n", "S")),
                "join: field `deviceInfo.id` must not contain control characters"
            );
            assert_eq!(
                err(&join("d", bad, "S")),
                "join: field `deviceInfo.name` must not contain control characters"
            );
            assert_eq!(
                err(&join("d", "n", bad)),
                "join: field `sessionName` must not contain control characters"
            );
            let s = serde_json::to_string(bad).unwrap();
            assert_eq!(
                err(&format!(r#"{{"type":"leave","reason":{s}}}"#)),
                "leave: field `reason` must not contain control characters"
            );
            assert_eq!(
                err(&format!(
                    r#"{{"type":"kick","memberId":"c_1","reason":{s}}}"#
                )),
                "kick: field `reason` must not contain control characters"
            );
            assert_eq!(
                err(&format!(r#"{{"type":"kick","memberId":{s}}}"#)),
                "kick: field `memberId` must not contain control characters"
            );
            assert_eq!(
                err(&format!(r#"{{"type":"message","data":1,"to":{s}}}"#)),
                "message: field `to` must not contain control characters"
            );
        }
        // Other characters are names: emoji, right-to-left text, zero-width joiners.
        assert!(decode(&join("d", "Rishad's 📱 \u{202e}x \u{200d}", "Fête")).is_ok());
    }

    #[test]
    fn passwords_and_tokens_have_limits_and_never_show_in_debug() {
        let frame = |field: &str, value: &str| {
            format!(
                r#"{{"type":"join","sessionId":"s","{field}":{},"deviceInfo":{{"id":"d","name":"n","type":"client"}}}}"#,
                serde_json::to_string(value).unwrap()
            )
        };
        assert_eq!(
            err(&frame("password", "")),
            "join: field `password` must be 1 to 256 bytes"
        );
        assert_eq!(
            err(&frame("password", &"p".repeat(257))),
            "join: field `password` must be 1 to 256 bytes"
        );
        assert_eq!(
            err(&frame("token", &"t".repeat(4097))),
            "join: field `token` must be 1 to 4096 bytes"
        );
        let ClientMessage::Join(mut join) = decode(&frame("password", "hunter2")).unwrap() else {
            panic!()
        };
        join.token = Some("eyJhbGciOi.secret-token".into());
        let shown = format!("{join:?} {:?}", ClientMessage::Join(join.clone()));
        assert!(
            !shown.contains("hunter2") && !shown.contains("secret-token"),
            "{shown}"
        );
        assert!(shown.contains("<redacted>"), "{shown}");
        assert_eq!(join.password.as_deref(), Some("hunter2"));
    }

    #[test]
    fn media_token_is_a_field_less_request_of_ours_and_numbered() {
        // Issue 13 R2: `{"type":"media_token"}`, unknown fields ignored.
        for frame in [
            r#"{"type":"media_token"}"#,
            r#"{"type":"media_token","timestamp":1,"role":"publish","colour":[1]}"#,
        ] {
            assert_eq!(decode(frame).unwrap(), ClientMessage::MediaToken, "{frame}");
        }
        assert_eq!(
            encode_client(&ClientMessage::MediaToken, 5).unwrap(),
            r#"{"type":"media_token","timestamp":5}"#
        );
        assert_eq!(ClientMessage::MediaToken.type_name(), "media_token");
        assert!(ClientMessage::MediaToken.is_numbered());
        let d = decode_numbered(r#"{"seq":3,"type":"media_token"}"#);
        assert_eq!(d.seq, Seq::Valid(3));
        assert_eq!(d.message, Ok(ClientMessage::MediaToken));
        assert!(CLIENT_TYPES.contains(&"media_token"));
        assert_eq!(
            encode_client_numbered(&ClientMessage::MediaToken, 5, Some(2)).unwrap(),
            r#"{"seq":2,"type":"media_token","timestamp":5}"#
        );
    }

    #[test]
    fn encode_client_writes_the_documents_frames() {
        let join = ClientMessage::Join(Join {
            session_id: Some("abc123".into()),
            device_info: DeviceInfo {
                id: "device-456".into(),
                name: "Rishad's iPhone".into(),
                kind: DeviceType::Client,
            },
            session_name: Some("Rishad's Party".into()),
            protocol_version: Some("1.0".into()),
            password: None,
            token: None,
        });
        assert_eq!(
            encode_client(&join, 1706889600000).unwrap(),
            r#"{"type":"join","timestamp":1706889600000,"sessionId":"abc123","sessionName":"Rishad's Party","protocolVersion":"1.0","deviceInfo":{"id":"device-456","name":"Rishad's iPhone","type":"client"}}"#
        );
        let cases = [
            (
                ClientMessage::leave(Some("User exited session")),
                r#"{"type":"leave","timestamp":5,"reason":"User exited session"}"#,
            ),
            (
                ClientMessage::leave(None),
                r#"{"type":"leave","timestamp":5}"#,
            ),
            (
                ClientMessage::Heartbeat,
                r#"{"type":"heartbeat","timestamp":5}"#,
            ),
            (
                ClientMessage::ping(1706889650000u64),
                r#"{"type":"ping","timestamp":1706889650000}"#,
            ),
            (
                ClientMessage::ping(-3i64),
                r#"{"type":"ping","timestamp":-3}"#,
            ),
            (
                ClientMessage::kick("c_8d3hw0v5pj2n", Some("too loud")),
                r#"{"type":"kick","timestamp":5,"memberId":"c_8d3hw0v5pj2n","reason":"too loud"}"#,
            ),
            (
                ClientMessage::MemberList,
                r#"{"type":"member_list","timestamp":5}"#,
            ),
            (
                ClientMessage::message(
                    RawJson::from_text(r#"{ "track": 3, "position": 12.50 }"#).unwrap(),
                    Some("c_4k9x2m7q1z0a"),
                ),
                r#"{"type":"message","timestamp":5,"data":{ "track": 3, "position": 12.50 },"to":"c_4k9x2m7q1z0a"}"#,
            ),
        ];
        for (message, frame) in cases {
            assert_eq!(encode_client(&message, 5).unwrap(), frame);
            assert_eq!(decode(frame).unwrap(), message);
        }
    }

    #[test]
    fn pong_is_not_in_our_dialect() {
        let e = encode_client(&ClientMessage::Pong, 1).unwrap_err();
        assert_eq!(e.dialect, Dialect::LoudSync);
        assert!(e.to_string().contains("pong"), "{e}");
    }

    #[test]
    fn write_ping_is_the_encoders_ping() {
        for ts in [0, 1, 1706889650000, u64::MAX] {
            let mut out = String::from("keep:");
            write_ping(&mut out, ts);
            assert_eq!(
                out,
                format!(
                    "keep:{}",
                    encode_client(&ClientMessage::ping(ts), 9).unwrap()
                )
            );
        }
    }

    #[test]
    fn seq_is_read_before_the_frame_is_judged_and_ignored_on_liveness_frames() {
        let d = decode_numbered(r#"{"seq":3,"type":"message","data":{"a":1}}"#);
        assert_eq!(d.seq, Seq::Valid(3));
        assert!(matches!(d.message, Ok(ClientMessage::Message { .. })));
        // A refused frame still reports its number.
        let d = decode_numbered(r#"{"seq":4,"type":"kick"}"#);
        assert_eq!(d.seq, Seq::Valid(4));
        assert!(d.message.is_err());
        let d = decode_numbered(r#"{"seq":4,"type":"nope"}"#);
        assert_eq!(d.seq, Seq::Valid(4));
        for bad in ["0", "-1", "1.5", "\"2\"", "null"] {
            let d = decode_numbered(&format!(r#"{{"seq":{bad},"type":"member_list"}}"#));
            assert_eq!(d.seq, Seq::Invalid, "{bad}");
        }
        for unnumbered in [
            r#"{"seq":"x","type":"ping","timestamp":1}"#,
            r#"{"seq":9,"type":"heartbeat"}"#,
        ] {
            let d = decode_numbered(unnumbered);
            assert_eq!(d.seq, Seq::Absent, "{unnumbered}");
            assert!(d.message.is_ok(), "{unnumbered}");
        }
        assert_eq!(
            decode(r#"{"type":"ack","seq":5}"#).unwrap(),
            ClientMessage::Ack { seq: 5 }
        );
        assert!(
            decode(r#"{"type":"member_list"}"#).is_ok(),
            "plain frames decode as before"
        );
    }

    #[test]
    fn tokens_are_32_or_64_alphanumerics_and_merge_in_byte_order() {
        let a = "A".repeat(32);
        let z = "a".repeat(32);
        assert_eq!(
            merge_tokens(&z, &a),
            format!("{a}{z}"),
            "`A` < `a`: uppercase first"
        );
        assert_eq!(merge_tokens(&a, &z), format!("{a}{z}"));
        assert_eq!(
            decode(&format!(r#"{{"type":"token","token":"{a}"}}"#)).unwrap(),
            ClientMessage::Token {
                token: a.clone(),
                last_seq: None
            }
        );
        let t = format!("{a}{z}");
        assert_eq!(
            decode(&format!(r#"{{"type":"token","token":"{t}","lastSeq":0}}"#)).unwrap(),
            ClientMessage::Token {
                token: t,
                last_seq: Some(0)
            }
        );
        for bad in [
            "short",
            &"a".repeat(33),
            &format!("{}-", "a".repeat(31)),
            "",
        ] {
            let e = err(&format!(r#"{{"type":"token","token":"{bad}"}}"#));
            assert!(e.contains("token: field `token` must be 32"), "{e}");
        }
        let e = err(r#"{"type":"wat"}"#);
        assert!(e.contains("token, ack"), "{e}");
    }

    /// Every variant, so a new one is a compile error here until the strategy covers it.
    fn variant(m: &ClientMessage) -> usize {
        match m {
            ClientMessage::Join(_) => 0,
            ClientMessage::Leave { .. } => 1,
            ClientMessage::Heartbeat => 2,
            ClientMessage::Ping { .. } => 3,
            ClientMessage::Kick { .. } => 4,
            ClientMessage::MemberList => 5,
            ClientMessage::Pong => 6,
            ClientMessage::Message { .. } => 7,
            ClientMessage::Token { .. } => 8,
            ClientMessage::Ack { .. } => 9,
            ClientMessage::StateSet { .. } => 10,
            ClientMessage::HandoffReady { .. } => 11,
            ClientMessage::HandoffRequest { .. } => 12,
            ClientMessage::HandoffAccept { .. } => 13,
            ClientMessage::HandoffDecline { .. } => 14,
            ClientMessage::MediaToken => 15,
        }
    }

    #[test]
    fn the_strategy_covers_every_variant_of_ours() {
        use proptest::strategy::{Strategy, ValueTree};
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let mut seen = [false; 16];
        seen[6] = true; // `pong` is the app's only
        for _ in 0..500 {
            let m = strategies::ours().new_tree(&mut runner).unwrap().current();
            seen[variant(&m)] = true;
        }
        assert!(seen.iter().all(|s| *s), "{seen:?}");
    }

    proptest::proptest! {
        #[test]
        fn encode_client_then_decode_gives_the_message_back(
            m in strategies::ours(),
            ts in proptest::prelude::any::<u64>(),
        ) {
            let frame = encode_client(&m, ts).unwrap();
            proptest::prop_assert_eq!(decode(&frame).unwrap(), m);
        }

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

/// Strategies for property tests: every [`ClientMessage`] a client can validly send.
#[cfg(test)]
pub(crate) mod strategies {
    use super::*;
    use proptest::prelude::*;

    /// A name the decoder accepts: 1 to 30 characters (any but control characters: quotes,
    /// backslashes, emoji and bidirectional controls included), not blank.
    pub fn name() -> impl Strategy<Value = String> {
        text(1, 30).prop_filter("not blank", |s| !s.trim().is_empty())
    }

    /// `min` to `max` characters, none of them a control character.
    pub fn text(min: usize, max: usize) -> impl Strategy<Value = String> {
        proptest::string::string_regex(&format!("[^\\p{{Cc}}]{{{min},{max}}}"))
            .expect("a valid regex")
    }

    /// A valid session id.
    pub fn session_id() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_-]{1,64}"
    }

    /// Any JSON integer the decoder accepts.
    pub fn integer() -> impl Strategy<Value = Number> {
        prop_oneof![
            any::<u64>().prop_map(Number::from),
            any::<i64>().prop_map(Number::from)
        ]
    }

    /// Any JSON value.
    pub fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            integer().prop_map(Value::Number),
            (-1e300f64..1e300).prop_map(|f| serde_json::json!(f)),
            ".{0,10}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(".{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Application data as some sender might write it: compact, or with whitespace.
    pub fn raw_json() -> impl Strategy<Value = RawJson> {
        (json(), any::<bool>()).prop_map(|(v, pretty)| {
            let text = if pretty {
                serde_json::to_string_pretty(&v).unwrap()
            } else {
                v.to_string()
            };
            RawJson::from_text(&text).unwrap()
        })
    }

    /// A valid `join`; `host` chooses whether host joins are generated.
    pub fn join(host: bool, extensions: bool) -> impl Strategy<Value = Join> {
        let kind = if host {
            prop_oneof![Just(DeviceType::Host), Just(DeviceType::Client)].boxed()
        } else {
            Just(DeviceType::Client).boxed()
        };
        let optional = move |s: BoxedStrategy<String>| {
            if extensions {
                proptest::option::of(s).boxed()
            } else {
                Just(None).boxed()
            }
        };
        (
            (session_id(), any::<bool>()),
            name(),
            name(),
            kind,
            optional(name().boxed()),
            optional("[0-9]{1,2}\\.[0-9]{1,2}".boxed()),
        )
            .prop_map(
                |((session_id, new), id, name, kind, session_name, protocol_version)| Join {
                    // A host may leave the id out to open a new session.
                    session_id: (kind == DeviceType::Client || !new).then_some(session_id),
                    device_info: DeviceInfo { id, name, kind },
                    session_name,
                    protocol_version,
                    password: None,
                    token: None,
                },
            )
    }

    /// Every message of our dialect (all but `Pong`).
    pub fn ours() -> impl Strategy<Value = ClientMessage> {
        let text = || proptest::option::of(text(0, 20));
        prop_oneof![
            join(true, true).prop_map(ClientMessage::Join),
            text().prop_map(|reason| ClientMessage::Leave { reason }),
            Just(ClientMessage::Heartbeat),
            integer().prop_map(|timestamp| ClientMessage::Ping { timestamp }),
            (self::text(0, 20), text())
                .prop_map(|(member_id, reason)| ClientMessage::Kick { member_id, reason }),
            Just(ClientMessage::MemberList),
            Just(ClientMessage::MediaToken),
            (raw_json(), text()).prop_map(|(data, to)| ClientMessage::Message { data, to }),
            (
                "[A-Za-z0-9]{32}|[A-Za-z0-9]{64}",
                proptest::option::of(any::<u64>())
            )
                .prop_map(|(token, last_seq)| ClientMessage::Token { token, last_seq }),
            any::<u64>().prop_map(|seq| ClientMessage::Ack { seq }),
            (
                prop::collection::btree_map(".{0,6}", json(), 0..4),
                any::<bool>(),
                proptest::option::of(any::<u64>()),
                proptest::option::of(any::<u64>()),
            )
                .prop_map(|(map, patch, base_version, term)| {
                    let map = map.into_iter().collect();
                    ClientMessage::StateSet {
                        change: if patch {
                            StateChange::Patch(map)
                        } else {
                            StateChange::Replace(map)
                        },
                        base_version,
                        term,
                    }
                }),
            any::<bool>().prop_map(|ready| ClientMessage::HandoffReady { ready }),
            text().prop_map(|target_id| ClientMessage::HandoffRequest { target_id }),
            self::text(0, 20).prop_map(|handoff_id| ClientMessage::HandoffAccept { handoff_id }),
            (self::text(0, 20), text()).prop_map(|(handoff_id, reason)| {
                ClientMessage::HandoffDecline { handoff_id, reason }
            }),
        ]
    }
}
