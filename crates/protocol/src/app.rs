//! The LOUDSYNC app's own dialect, spoken by the app's clients unchanged.
//!
//! The app's code differs from its protocol document: UPPERCASE types, every field inside a
//! `payload` object, an optional `messageId`, members named by their device id, and a `PONG`
//! that carries `pingTimestamp`. A connection's first frame tells the dialect ([`detect`]); the
//! server then decodes that connection's frames with [`decode`] into the same
//! [`ClientMessage`]s as ours, and encodes what it sends with [`encode`].
//!
//! The client side is here too: [`encode_client`] writes a [`ClientMessage`] as the frame the
//! app's own client sends (what the bench's `--dialect app` and the tests send).

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::client::{ClientMessage, DecodeError, EncodeError, Join};
use crate::server::{ServerMessage, Stamp};
use crate::types::{DeviceInfo, DeviceType, ErrorCode, LeaveReason, MemberInfo};

/// Which dialect a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// Ours: the protocol document's (lowercase types, fields at the top level).
    LoudSync,
    /// The LOUDSYNC app's (UPPERCASE types, fields in `payload`).
    App,
}

/// The dialect of a connection, from its first text frame: the app's frames have an
/// UPPERCASE `type` and a `payload` object; anything else is ours (and is decoded, and
/// rejected if need be, as ours).
pub fn detect(first_frame: &str) -> Dialect {
    let Ok(Value::Object(o)) = serde_json::from_str::<Value>(first_frame) else {
        return Dialect::LoudSync;
    };
    let upper = o
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_uppercase() || c == '_'));
    if upper && o.get("payload").is_some_and(Value::is_object) {
        Dialect::App
    } else {
        Dialect::LoudSync
    }
}

/// The version the app's client sends in `JOIN` (`payload.version`), and the version the app
/// expects in discovery advertisements: the app's version, not the protocol's.
pub const APP_VERSION: &str = "1.0.0";

/// The app's message types, for error messages.
pub const APP_CLIENT_TYPES: &[&str] = &["JOIN", "LEAVE", "HEARTBEAT", "PING", "PONG"];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinPayload {
    session_id: String,
    device_id: String,
    device_name: String,
}

#[derive(Deserialize)]
struct PingPayload {
    timestamp: serde_json::Number,
}

/// Decodes one text frame of the app's dialect.
pub fn decode(text: &str) -> Result<ClientMessage, DecodeError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| DecodeError::new(format!("invalid JSON: {e}")))?;
    let Value::Object(mut object) = value else {
        return Err(DecodeError::new("a message must be a JSON object"));
    };
    let kind = match object.get("type") {
        Some(Value::String(t)) => t.clone(),
        _ => return Err(DecodeError::new("missing or non-string field `type`")),
    };
    let payload = match object.remove("payload") {
        Some(Value::Object(p)) => p,
        _ => {
            return Err(DecodeError::new(format!(
                "{kind}: missing object field `payload`"
            )))
        }
    };
    let message = match kind.as_str() {
        "JOIN" => {
            let p: JoinPayload = payload_fields(&kind, payload)?;
            let join = Join {
                session_id: Some(p.session_id),
                device_info: DeviceInfo {
                    id: p.device_id,
                    name: p.device_name,
                    kind: DeviceType::Client,
                },
                session_name: None,
                protocol_version: None,
                password: None,
                token: None,
            };
            crate::client::validate_join(&join)?;
            ClientMessage::Join(join)
        }
        "LEAVE" => {
            let reason = payload
                .get("reason")
                .and_then(Value::as_str)
                .map(str::to_string);
            if reason.as_deref().is_some_and(crate::client::has_control) {
                return Err(DecodeError::new(
                    "LEAVE: `payload.reason` must not contain control characters",
                ));
            }
            ClientMessage::Leave { reason }
        }
        "HEARTBEAT" => ClientMessage::Heartbeat,
        "PING" => {
            let p: PingPayload = payload_fields(&kind, payload)?;
            if !(p.timestamp.is_i64() || p.timestamp.is_u64()) {
                return Err(DecodeError::new(
                    "PING: `payload.timestamp` must be an integer",
                ));
            }
            ClientMessage::Ping {
                timestamp: p.timestamp,
            }
        }
        "PONG" => ClientMessage::Pong,
        other => {
            return Err(DecodeError::new(format!(
                "unknown message type `{other}`; expected one of: {}",
                APP_CLIENT_TYPES.join(", ")
            )))
        }
    };
    Ok(message)
}

/// What the app's client puts in a frame besides the message's own fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientContext<'a> {
    /// This device's id: the app repeats it in `HEARTBEAT` and `LEAVE` payloads (and sends
    /// it as `deviceId` in `JOIN`, where it is the message's own).
    pub device_id: &'a str,
    /// The envelope's `timestamp`, ms since the Unix epoch (the server ignores it). Also
    /// `payload.timestamp` of `HEARTBEAT` and `PONG`, as the app writes them.
    pub timestamp_ms: u64,
    /// The envelope's `messageId`, written when given (the app sends one on `JOIN` and
    /// `LEAVE`; the server ignores it).
    pub message_id: Option<&'a str>,
    /// `PONG` only: `payload.pingTimestamp`, the timestamp of the server `PING` it answers
    /// (the server ignores it).
    pub ping_timestamp: u64,
}

impl<'a> ClientContext<'a> {
    /// A context for `device_id` at `timestamp_ms`, without `messageId`, answering no ping.
    pub fn new(device_id: &'a str, timestamp_ms: u64) -> Self {
        ClientContext {
            device_id,
            timestamp_ms,
            message_id: None,
            ping_timestamp: 0,
        }
    }

    /// The same context with this `messageId`.
    pub fn with_message_id(self, message_id: &'a str) -> Self {
        ClientContext {
            message_id: Some(message_id),
            ..self
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JoinOut<'a> {
    session_id: &'a str,
    device_id: &'a str,
    device_name: &'a str,
    version: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LeaveOut<'a> {
    device_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HeartbeatOut<'a> {
    device_id: &'a str,
    timestamp: u64,
}

#[derive(Serialize)]
struct PingOut<'a> {
    timestamp: &'a serde_json::Number,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PongOut {
    timestamp: u64,
    ping_timestamp: u64,
}

/// Writes a client message as the frame the app's own client sends (§10.3 of
/// `docs/PROTOCOL.md`): an UPPERCASE `type`, `timestamp`, `messageId` when `ctx` has one, and
/// the fields in `payload`:
///
/// - `JOIN`: `sessionId`, `deviceId`, `deviceName` and `version` ([`APP_VERSION`]);
/// - `LEAVE`: `deviceId` and `reason` (left out when `None`);
/// - `HEARTBEAT`: `deviceId` and `timestamp`;
/// - `PING`: `timestamp`, the message's own (verbatim);
/// - `PONG`: `timestamp` and `pingTimestamp` (from `ctx`).
///
/// [`decode`] of the result gives `message` back. Fails for what the app cannot say: `kick`,
/// `member_list`, `media_token`, `message`, and a `join` as host or with `sessionName` or
/// `protocolVersion`.
pub fn encode_client(
    message: &ClientMessage,
    ctx: &ClientContext<'_>,
) -> Result<String, EncodeError> {
    let fail = |problem| {
        Err(EncodeError {
            dialect: Dialect::App,
            problem,
        })
    };
    let text = match message {
        ClientMessage::Join(join) => {
            if join.device_info.kind != DeviceType::Client {
                return fail("app devices never host: `join` must be of type client");
            }
            if join.session_name.is_some() || join.protocol_version.is_some() {
                return fail("`JOIN` has no `sessionName` or `protocolVersion`");
            }
            let Some(session_id) = join.session_id.as_deref() else {
                return fail("`JOIN` needs a `sessionId` (app devices never open sessions)");
            };
            client_envelope(
                ctx,
                "JOIN",
                JoinOut {
                    session_id,
                    device_id: &join.device_info.id,
                    device_name: &join.device_info.name,
                    version: APP_VERSION,
                },
            )
        }
        ClientMessage::Leave { reason } => client_envelope(
            ctx,
            "LEAVE",
            LeaveOut {
                device_id: ctx.device_id,
                reason: reason.as_deref(),
            },
        ),
        ClientMessage::Heartbeat => client_envelope(
            ctx,
            "HEARTBEAT",
            HeartbeatOut {
                device_id: ctx.device_id,
                timestamp: ctx.timestamp_ms,
            },
        ),
        ClientMessage::Ping { timestamp } => client_envelope(ctx, "PING", PingOut { timestamp }),
        ClientMessage::Pong => client_envelope(
            ctx,
            "PONG",
            PongOut {
                timestamp: ctx.timestamp_ms,
                ping_timestamp: ctx.ping_timestamp,
            },
        ),
        ClientMessage::Kick { .. } => return fail("no client message `kick`"),
        ClientMessage::MemberList => return fail("no client message `member_list`"),
        ClientMessage::MediaToken => return fail("no client message `media_token`"),
        ClientMessage::Message { .. } => return fail("no client message `message`"),
        ClientMessage::Token { .. } => return fail("no resume handshake (`token`)"),
        ClientMessage::Ack { .. } => return fail("no resume handshake (`ack`)"),
        ClientMessage::StateSet { .. }
        | ClientMessage::HandoffReady { .. }
        | ClientMessage::HandoffRequest { .. }
        | ClientMessage::HandoffAccept { .. }
        | ClientMessage::HandoffDecline { .. } => {
            return fail("no session state or handoff (app devices never host)")
        }
    };
    Ok(text)
}

/// Appends the app's `PING` frame for `timestamp` to `out` (the envelope's `timestamp` is the
/// same value): the same bytes as [`encode_client`] of [`ClientMessage::ping`] with a context
/// at `timestamp` and no `messageId`, without building a message.
pub fn write_ping(out: &mut String, timestamp: u64) {
    use std::fmt::Write;
    let _ = write!(
        out,
        r#"{{"type":"PING","timestamp":{timestamp},"payload":{{"timestamp":{timestamp}}}}}"#
    );
}

fn client_envelope<P: Serialize>(ctx: &ClientContext<'_>, kind: &str, payload: P) -> String {
    serde_json::to_string(&Envelope {
        kind,
        timestamp: ctx.timestamp_ms,
        message_id: ctx.message_id,
        payload,
    })
    .expect("app client frames serialise")
}

fn payload_fields<T: for<'de> Deserialize<'de>>(
    kind: &str,
    payload: Map<String, Value>,
) -> Result<T, DecodeError> {
    crate::client::deserialize_named(payload, |path, inner| match path {
        None => format!("{kind}: payload: {inner}"),
        Some(path) => format!("{kind}: payload.{path}: {inner}"),
    })
}

/// The `reason` text the app shows for a member who left.
pub fn leave_reason_text(reason: LeaveReason) -> &'static str {
    match reason {
        LeaveReason::Left => "User left session",
        LeaveReason::Kicked => "Kicked by host",
        LeaveReason::Timeout => "Heartbeat timeout",
        LeaveReason::Error => "Connection closed",
    }
}

/// The text the app's own host server sends with an error code, where it has one: its
/// `ERROR`s say `Session not found`, `Already joined` and `Session full`, and the app shows
/// that text to its user. Codes the app's server never sends keep our text.
pub fn error_text(code: ErrorCode) -> Option<&'static str> {
    match code {
        ErrorCode::SessionNotFound => Some("Session not found"),
        ErrorCode::AlreadyJoined => Some("Already joined"),
        ErrorCode::SessionFull => Some("Session full"),
        _ => None,
    }
}

/// Everything [`encode`] needs besides the message.
pub struct EncodeContext<'a> {
    /// The server's clock, ms since the Unix epoch.
    pub now_ms: u64,
    /// A fresh `messageId` (`msg_<ms>_<7 base-36 chars>`), for the types that carry one.
    pub message_id: &'a str,
    /// A member's network address by `clientId` (the app shows it), if known.
    pub address_of: &'a dyn Fn(&str) -> Option<String>,
}

/// A member as the app sees it (serialised straight from borrowed fields: a big session's
/// list is encoded for every joiner).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AppMember<'a> {
    id: &'a str,
    name: &'a str,
    role: &'static str,
    connection_status: crate::types::ConnectionStatus,
    joined_at: u64,
    last_seen: u64,
    address: String,
    latency: Option<u64>,
}

fn app_member<'a>(m: &'a MemberInfo, ctx: &EncodeContext<'_>) -> AppMember<'a> {
    AppMember {
        id: &m.device_id,
        name: &m.name,
        role: if m.is_host { "host" } else { "client" },
        connection_status: m.connection_status,
        joined_at: m.joined_at,
        last_seen: ctx.now_ms,
        address: (ctx.address_of)(&m.id).unwrap_or_else(|| "unknown".to_string()),
        latency: m.latency,
    }
}

fn member_json(m: &MemberInfo, ctx: &EncodeContext<'_>) -> Value {
    serde_json::to_value(app_member(m, ctx)).expect("a member serialises")
}

/// The app's envelope, both ways: `type` first, as the app writes it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a, P: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    timestamp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_id: Option<&'a str>,
    payload: P,
}

/// `MESSAGE`'s payload, with `data` written as its sender wrote it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MessagePayload<'a> {
    from: &'a str,
    from_name: &'a str,
    data: &'a crate::types::RawJson,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MemberListPayload<'a> {
    members: Vec<AppMember<'a>>,
    total_count: usize,
}

/// Serialises a server message in the app's dialect.
pub fn encode(message: &ServerMessage, stamp: &Stamp, ctx: &EncodeContext<'_>) -> String {
    let (kind, payload) = match message {
        ServerMessage::Welcome {
            session_info,
            device,
            joined_at,
            ..
        } => (
            "WELCOME",
            json!({
                "sessionId": session_info.id,
                "sessionName": session_info.name,
                "hostId": session_info.host.as_ref().map(|h| h.device_id.as_str()).unwrap_or(""),
                "hostName": session_info.host.as_ref().map(|h| h.name.as_str()).unwrap_or(""),
                "yourDeviceId": device.device_id,
                "connectedAt": joined_at,
            }),
        ),
        ServerMessage::MemberList { members } => {
            let payload = MemberListPayload {
                members: members.iter().map(|m| app_member(m, ctx)).collect(),
                total_count: members.len(),
            };
            return envelope("MEMBER_LIST", Some(ctx.message_id), ctx.now_ms, payload);
        }
        ServerMessage::MemberJoined { member } => (
            "MEMBER_JOINED",
            json!({ "member": member_json(member, ctx) }),
        ),
        ServerMessage::MemberLeft { reason, device, .. } => (
            "MEMBER_LEFT",
            json!({
                "deviceId": device.device_id,
                "deviceName": device.name,
                "reason": leave_reason_text(*reason),
            }),
        ),
        ServerMessage::Kicked { reason } => ("KICKED", json!({ "reason": reason })),
        ServerMessage::SessionClosed { reason } => ("SESSION_CLOSED", json!({ "reason": reason })),
        ServerMessage::Pong => {
            let ping = match stamp {
                Stamp::Echo(n) => Value::Number(n.clone()),
                Stamp::Now(ms) => json!(ms),
            };
            let payload = json!({"timestamp": ctx.now_ms, "pingTimestamp": ping});
            return envelope("PONG", None, ctx.now_ms, payload);
        }
        ServerMessage::Error { code, message, .. } => (
            "ERROR",
            json!({
                "code": code.as_str().to_ascii_uppercase(),
                "message": error_text(*code).unwrap_or(message),
            }),
        ),
        ServerMessage::Message { data, device, .. } => {
            let payload = MessagePayload {
                from: &device.device_id,
                from_name: &device.name,
                data,
            };
            return envelope("MESSAGE", Some(ctx.message_id), ctx.now_ms, payload);
        }
        // The app's dialect has no resume handshake, so a session never sends these to its
        // connections (a member's change reaches them as a fresh `MEMBER_LIST`); should one
        // be encoded anyway, it keeps its own name, which the app's client ignores.
        ServerMessage::MemberUpdated { member } => (
            "MEMBER_UPDATED",
            json!({ "member": member_json(member, ctx) }),
        ),
        // Neither has the app's dialect any frame of the state and handoff layer; a session
        // never sends these to app connections either (decision 27 of issue 11).
        ServerMessage::State { .. }
        | ServerMessage::HandoffStarted { .. }
        | ServerMessage::HandoffRequest { .. }
        | ServerMessage::HandoffAck { .. }
        | ServerMessage::HostChanged { .. }
        | ServerMessage::HandoffFailed { .. }
        | ServerMessage::Token { .. }
        | ServerMessage::Resumed { .. }
        | ServerMessage::ResumeFailed { .. }
        | ServerMessage::Ack { .. }
        // Nor of the media relay (issue 13 R3): an app connection can never ask for a token.
        | ServerMessage::MediaToken { .. } => ("UNSUPPORTED", json!({ "type": message.type_name() })),
    };
    envelope(kind, Some(ctx.message_id), ctx.now_ms, payload)
}

fn envelope<P: Serialize>(
    kind: &str,
    message_id: Option<&str>,
    timestamp: u64,
    payload: P,
) -> String {
    serde_json::to_string(&Envelope {
        kind,
        timestamp,
        message_id,
        payload,
    })
    .expect("app messages serialise")
}

#[cfg(test)]
mod tests;
