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
    /// Whether the member declared itself ready to take control (`handoff_ready`); always
    /// `false` for the host.
    #[serde(default)]
    pub handoff_ready: bool,
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

/// What a media token lets its holder do on the session's UDP relay (issue 13 R3): the
/// session's host publishes, every other member subscribes. The `role` of a `media_token`
/// reply: `"publish"` or `"subscribe"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaRole {
    /// May stream DATA to the relay (the host).
    Publish,
    /// Receives the publisher's DATA from the relay.
    Subscribe,
}

impl MediaRole {
    /// The wire name, `publish` or `subscribe`.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaRole::Publish => "publish",
            MediaRole::Subscribe => "subscribe",
        }
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

/// Error codes carried by `error` messages. The first six are the document's; the others are
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
    /// Extension: the session has a password and the `join` carried none.
    PasswordRequired,
    /// Extension: the `join` carried the wrong password.
    WrongPassword,
    /// Extension: the server (`--require-token`) or the session needs a signed join token.
    TokenRequired,
    /// Extension: the join token is invalid: bad signature, expired, not yet valid, or for
    /// another session, role or device (the message says which).
    InvalidToken,
    /// Extension: nobody may take the host role of this session this way (a session created
    /// over HTTP names its host).
    HostNotAllowed,
    /// Extension: too many refused or too frequent joins from this address; retry later.
    TooManyAttempts,
    /// Extension: a `state_set`'s `baseVersion` is not the state's current version.
    StaleVersion,
    /// Extension: a `state_set`'s `term` is not the session's current term.
    StaleTerm,
    /// Extension: the state a `state_set` would make is over `--max-state-bytes`.
    StateTooLarge,
    /// Extension: a `handoff_accept` / `handoff_decline` for no handoff pending for its sender.
    HandoffNotPending,
    /// Extension: a `media_token` request to a server started without `--media-listen` (it
    /// has no media relay, issue 13 R4).
    MediaUnavailable,
    /// Extension (cluster mode, issue 16): the node cannot reach the cluster's Redis, so a
    /// frame that needs the session's owner was not taken; liveness still works. Resend it
    /// after the connection resumes.
    ClusterUnavailable,
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
            ErrorCode::PasswordRequired => "password_required",
            ErrorCode::WrongPassword => "wrong_password",
            ErrorCode::TokenRequired => "token_required",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::HostNotAllowed => "host_not_allowed",
            ErrorCode::TooManyAttempts => "too_many_attempts",
            ErrorCode::StaleVersion => "stale_version",
            ErrorCode::StaleTerm => "stale_term",
            ErrorCode::StateTooLarge => "state_too_large",
            ErrorCode::HandoffNotPending => "handoff_not_pending",
            ErrorCode::MediaUnavailable => "media_unavailable",
            ErrorCode::ClusterUnavailable => "cluster_unavailable",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ErrorCode {
    /// The code whose wire string is `code`, if this version knows it (read through the same
    /// serde names as the wire, so it can never miss a variant).
    pub fn from_wire(code: &str) -> Option<ErrorCode> {
        use serde::de::value::{Error, StrDeserializer};
        ErrorCode::deserialize(StrDeserializer::<Error>::new(code)).ok()
    }
}

/// The `code` of an `error` as a client reads it: forward compatible.
///
/// The server only ever sends [`ErrorCode`]s, but a newer server may send a code this version
/// does not know (say `quota_exceeded`). A client must not drop that error: it is decoded as
/// [`AnyErrorCode::Unknown`], which keeps the wire string, so the application can still show
/// it and branch on it. [`AnyErrorCode::parse`] always gives `Known` for a known string, and
/// equality, ordering-free hashing and [`AnyErrorCode::as_str`] go by the wire string, so
/// `Unknown("session_full")` built by hand still equals `Known(ErrorCode::SessionFull)`.
///
/// Compares directly with an [`ErrorCode`]: `error.code == ErrorCode::SessionFull`.
#[derive(Debug, Clone)]
pub enum AnyErrorCode {
    /// A code this version knows.
    Known(ErrorCode),
    /// A code this version does not know, as the server wrote it.
    Unknown(String),
}

impl AnyErrorCode {
    /// The code for a wire string: `Known` if this version knows it, else `Unknown`.
    pub fn parse(code: &str) -> AnyErrorCode {
        match ErrorCode::from_wire(code) {
            Some(known) => AnyErrorCode::Known(known),
            None => AnyErrorCode::Unknown(code.to_string()),
        }
    }

    /// The wire string, e.g. `"session_full"` or `"quota_exceeded"`.
    pub fn as_str(&self) -> &str {
        match self {
            AnyErrorCode::Known(code) => code.as_str(),
            AnyErrorCode::Unknown(code) => code,
        }
    }

    /// The typed code, if this version knows it.
    pub fn known(&self) -> Option<ErrorCode> {
        ErrorCode::from_wire(self.as_str())
    }
}

impl From<ErrorCode> for AnyErrorCode {
    fn from(code: ErrorCode) -> Self {
        AnyErrorCode::Known(code)
    }
}

impl PartialEq for AnyErrorCode {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for AnyErrorCode {}

impl std::hash::Hash for AnyErrorCode {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl PartialEq<ErrorCode> for AnyErrorCode {
    fn eq(&self, other: &ErrorCode) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<AnyErrorCode> for ErrorCode {
    fn eq(&self, other: &AnyErrorCode) -> bool {
        other == self
    }
}

impl std::fmt::Display for AnyErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for AnyErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AnyErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        Ok(AnyErrorCode::parse(&code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ErrorCode; 20] = [
        ErrorCode::SessionNotFound,
        ErrorCode::SessionFull,
        ErrorCode::AlreadyJoined,
        ErrorCode::InvalidMessage,
        ErrorCode::Unauthorized,
        ErrorCode::VersionMismatch,
        ErrorCode::RateLimited,
        ErrorCode::TooLarge,
        ErrorCode::PasswordRequired,
        ErrorCode::WrongPassword,
        ErrorCode::TokenRequired,
        ErrorCode::InvalidToken,
        ErrorCode::HostNotAllowed,
        ErrorCode::TooManyAttempts,
        ErrorCode::StaleVersion,
        ErrorCode::StaleTerm,
        ErrorCode::StateTooLarge,
        ErrorCode::HandoffNotPending,
        ErrorCode::MediaUnavailable,
        ErrorCode::ClusterUnavailable,
    ];

    #[test]
    fn error_code_strings_match_serde() {
        for code in ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn any_error_code_keeps_unknown_codes_and_types_known_ones() {
        for code in ALL {
            let any = AnyErrorCode::parse(code.as_str());
            assert!(matches!(any, AnyErrorCode::Known(c) if c == code));
            assert_eq!(any, code);
            assert_eq!(any.known(), Some(code));
        }
        let newer = AnyErrorCode::parse("quota_exceeded");
        assert_eq!(newer, AnyErrorCode::Unknown("quota_exceeded".into()));
        assert_eq!(newer.as_str(), "quota_exceeded");
        assert_eq!(newer.known(), None);
        assert_eq!(newer.to_string(), "quota_exceeded");
        assert_ne!(newer, ErrorCode::InvalidMessage);
        // Equality goes by the wire string, however the value was built.
        assert_eq!(
            AnyErrorCode::Unknown("session_full".into()),
            AnyErrorCode::Known(ErrorCode::SessionFull)
        );
        let back: AnyErrorCode = serde_json::from_str("\"too_large\"").unwrap();
        assert_eq!(back, ErrorCode::TooLarge);
        assert_eq!(serde_json::to_string(&newer).unwrap(), "\"quota_exceeded\"");
    }

    #[test]
    fn media_unavailable_and_media_roles_have_their_wire_names() {
        assert_eq!(ErrorCode::MediaUnavailable.as_str(), "media_unavailable");
        assert_eq!(
            ErrorCode::from_wire("media_unavailable"),
            Some(ErrorCode::MediaUnavailable)
        );
        for role in [MediaRole::Publish, MediaRole::Subscribe] {
            let json = serde_json::to_string(&role).unwrap();
            assert_eq!(json, format!("\"{}\"", role.as_str()));
            assert_eq!(serde_json::from_str::<MediaRole>(&json).unwrap(), role);
        }
        assert!(serde_json::from_str::<MediaRole>("\"host\"").is_err());
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
            handoff_ready: false,
            device_id: "dev".into(),
        };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id":"c1","name":"n","isHost":true,"connectionStatus":"connected","joinedAt":5,"handoffReady":false})
        );
    }
}
