//! Values shared by client and server messages: device info, member info, error codes, reasons.

use serde::{Deserialize, Serialize};

/// Whether a device joins as the session's host or as an ordinary member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceType {
    /// The device that opens (or takes over) the session and may kick and close it.
    Host,
    /// An ordinary member.
    Client,
}

/// The device's own description of itself, sent in `join`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// The device's own identifier; unique within a session (`already_joined` otherwise).
    /// Never used as the member id: the server assigns a `clientId`.
    pub id: String,
    /// A human-readable device name shown to other members.
    pub name: String,
    /// Host or client.
    #[serde(rename = "type")]
    pub kind: DeviceType,
}

/// The connection status the server reports for a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionStatus {
    /// The member's socket is open.
    Connected,
    /// The member's socket is gone (reported by later layers, e.g. resume).
    Disconnected,
    /// The member is expected back on a new socket (resume, a later layer).
    Reconnecting,
}

/// A member as devices know it: its own device id and name. Not part of our dialect's
/// messages (which name members by `clientId`), but needed by dialects that do (the LOUDSYNC
/// app's, see [`crate::app`]), so the core fills it in and our encoder skips it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceRef {
    /// `deviceInfo.id`.
    pub device_id: String,
    /// `deviceInfo.name`.
    pub name: String,
}

/// One member as it appears in `member_list`, `member_joined` and the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberInfo {
    /// The `clientId` the server assigned in `welcome`.
    pub id: String,
    /// The device name given at join.
    pub name: String,
    /// Whether this member is the session's host.
    pub is_host: bool,
    /// Connected, disconnected or reconnecting.
    pub connection_status: ConnectionStatus,
    /// When the member joined, in ms since the Unix epoch.
    pub joined_at: u64,
    /// Last measured round-trip time in ms (absent until measured).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub latency: Option<u64>,
    /// The device's own id (not sent in our dialect).
    #[serde(skip)]
    pub device_id: String,
}

/// A JSON value kept exactly as its sender wrote it: validated, never rebuilt.
///
/// Application `data` is relayed with the sender's bytes, so key order, number spelling
/// (`12345678901234567890123`, `1e2`, `-0`) and whitespace inside it survive the relay, and
/// the server does no work building and re-serialising a tree it does not look into.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawJson(pub Box<serde_json::value::RawValue>);

impl RawJson {
    /// Validates `text` as one JSON value and keeps it as written.
    pub fn from_text(text: &str) -> Result<RawJson, serde_json::Error> {
        serde_json::value::RawValue::from_string(text.to_string()).map(RawJson)
    }

    /// The value's JSON, exactly as received.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// Builds a tree of the value (for applications that want to look inside it).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(self.get()).expect("RawJson holds valid JSON")
    }

    /// Serialises `value` (for senders that hold a tree).
    pub fn from_value(value: &serde_json::Value) -> RawJson {
        RawJson(serde_json::value::to_raw_value(value).expect("a JSON value serialises"))
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

/// Why a member left, as reported in `member_left`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaveReason {
    /// The member sent `leave`.
    Left,
    /// The host kicked the member.
    Kicked,
    /// The member was silent longer than the heartbeat timeout.
    Timeout,
    /// The member's socket closed without `leave`, or it was dropped for a policy reason.
    Error,
}

/// Error codes carried by `error` messages. The first six are the document's; the last two are
/// LoudSync extensions for limits the document does not name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The session id does not exist.
    SessionNotFound,
    /// The session is at `maxMembers` (the host counts).
    SessionFull,
    /// A device with the same `deviceInfo.id` is already connected to the session.
    AlreadyJoined,
    /// The message could not be decoded or is not allowed in the connection's state.
    InvalidMessage,
    /// The sender lacks the right (not the host; or a second host).
    Unauthorized,
    /// The client's `protocolVersion` has a different major version.
    VersionMismatch,
    /// Extension: the connection sent messages faster than its rate limit.
    RateLimited,
    /// Extension: an application `message` is larger than the server accepts.
    TooLarge,
}

impl ErrorCode {
    /// The wire string of this code, e.g. `"session_full"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::SessionNotFound => "session_not_found",
            ErrorCode::SessionFull => "session_full",
            ErrorCode::AlreadyJoined => "already_joined",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::VersionMismatch => "version_mismatch",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooLarge => "too_large",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_code_strings_match_serde() {
        for code in [
            ErrorCode::SessionNotFound,
            ErrorCode::SessionFull,
            ErrorCode::AlreadyJoined,
            ErrorCode::InvalidMessage,
            ErrorCode::Unauthorized,
            ErrorCode::VersionMismatch,
            ErrorCode::RateLimited,
            ErrorCode::TooLarge,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn member_info_omits_unmeasured_latency() {
        let m = MemberInfo {
            id: "c1".into(),
            name: "n".into(),
            is_host: true,
            connection_status: ConnectionStatus::Connected,
            joined_at: 5,
            latency: None,
            device_id: "dev".into(),
        };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id":"c1","name":"n","isHost":true,"connectionStatus":"connected","joinedAt":5})
        );
    }
}
