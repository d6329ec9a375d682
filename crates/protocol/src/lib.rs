//! LoudSync wire types: the JSON session protocol of seed 001 (LOUDSYNC), pure and I/O free.
//!
//! Every message is a JSON object with a lowercase `type`, its fields at the top level in
//! camelCase, and (from the server) a `timestamp` in milliseconds since the Unix epoch.
//!
//! - [`client`]: what clients send, and [`client::decode`], which turns a text frame into a
//!   [`ClientMessage`] or a precise [`DecodeError`].
//! - [`server`]: what the server sends, and [`server::encode`], which stamps and serialises it.
//! - [`types`]: the values both directions share (member info, device info, error codes).
//! - [`app`]: the LOUDSYNC app's own dialect, translated both ways.

pub mod app;
pub mod client;
pub mod server;
pub mod types;

pub use client::{decode, ClientMessage, DecodeError, Join};
pub use server::{decode_server, encode, ServerMessage, SessionInfo, Stamp};
pub use types::{
    ConnectionStatus, DeviceInfo, DeviceRef, DeviceType, ErrorCode, LeaveReason, MemberInfo,
    RawJson,
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
    /// A policy was broken: rate limit exceeded persistently, or the outbound queue overflowed.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A frame larger than the configured `max-message-bytes`.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
}
