//! LoudSync wire types: the JSON session protocol of seed 001 (LOUDSYNC), pure and I/O free.
//!
//! Every message is a JSON object with a lowercase `type`, its fields at the top level in
//! camelCase, and (from the server) a `timestamp` in milliseconds since the Unix epoch.
//!
//! The crate owns the whole wire, both directions and both dialects, so servers, clients,
//! tools and tests write and read the same bytes:
//!
//! - [`client`]: what clients send: [`client::decode`], which turns a text frame into a
//!   [`ClientMessage`] or a precise [`DecodeError`], and [`encode_client`], which writes one.
//! - [`server`]: what the server sends: [`server::encode`], which stamps and serialises it, and
//!   [`decode_server`], which reads it forward compatibly ([`Received`]).
//! - [`types`]: the values both directions share (member info, device info, error codes).
//! - [`app`]: the LOUDSYNC app's own dialect, translated both ways ([`app::encode_client`]
//!   writes the app client's frames).
//! - [`discovery`]: the LAN discovery records (UDP query and advertisement, mDNS TXT).
//! - [`handoff`]: the session state and handoff layer (seed 000): state changes, handoff
//!   failures, session codes as people read them.
//! - [`pairing`]: controller/responder pairing (CRSocket, issue 12): roles, ids, tokens, apps.
//! - [`media`]: the UDP media stream (issue 13): control frames, DATA datagrams, legacy start.

pub mod app;
pub mod client;
pub mod discovery;
pub mod handoff;
pub mod media;
pub mod pairing;
pub mod server;
pub mod types;

pub use client::{
    decode, decode_numbered, encode_client, encode_client_numbered, ClientMessage, DecodeError,
    Decoded, EncodeError, Join, Seq,
};
pub use handoff::{HandoffFailure, HostChange, StateChange, StateSnapshot};
pub use server::{
    decode_server, decode_server_numbered, encode, Received, ResumeFailure, ServerMessage,
    SessionInfo, Stamp,
};
pub use types::{
    AnyErrorCode, ConnectionStatus, DeviceInfo, DeviceRef, DeviceType, ErrorCode, LeaveReason,
    MemberInfo, RawJson,
};

/// The protocol version this server speaks (`MAJOR.MINOR`); a `join` whose optional
/// `protocolVersion` has another major version is rejected with `version_mismatch`.
pub const PROTOCOL_VERSION: &str = "1.0";

/// WebSocket close codes the server uses, in one place so docs and code agree.
pub mod close_code {
    /// The protocol ended the connection: leave, kick, session closed, join rejected, timeout.
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the WebSocket framing rules (RFC 6455): an unmasked frame, reserved
    /// bits, an unknown opcode, a bad control frame, a stray continuation, a bad close code.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text message or a close reason that is not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A policy was broken: rate limit exceeded persistently, or the outbound queue overflowed.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A frame larger than the configured `max-message-bytes`.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// Cluster mode (issue 16): this node stopped serving the session (a rolling restart,
    /// or it lost the session's lease); resume, on this node or any other.
    pub const SERVICE_RESTART: u16 = 1012;
    /// A resume moved the member onto a new socket; this one is closed (never resumed).
    pub const REPLACED: u16 = 4000;
}
