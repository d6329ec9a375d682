//! Turning a server message into the bytes of one text frame, in a connection's dialect.
//! The formats are the protocol crate's; this adds what a send needs besides the message: the
//! time, a fresh `messageId` for the app's dialect, and members' addresses.

use bytes::Bytes;
use loudsync_core::ids::IdSource;
use loudsync_protocol::app::{self, Dialect, EncodeContext};
use loudsync_protocol::{encode as encode_ours, ServerMessage, Stamp};

/// Encodes `message` for a connection speaking `dialect`. `address_of` gives a member's
/// network address by `clientId` (only the app's dialect shows it).
pub fn encode(
    dialect: Dialect,
    message: &ServerMessage,
    stamp: &Stamp,
    now_ms: u64,
    address_of: &dyn Fn(&str) -> Option<String>,
    ids: &dyn IdSource,
) -> Bytes {
    match dialect {
        Dialect::LoudSync => Bytes::from(encode_ours(message, stamp)),
        Dialect::App => {
            let message_id = ids.app_message_id(now_ms);
            let ctx = EncodeContext {
                now_ms,
                message_id: &message_id,
                address_of,
            };
            Bytes::from(app::encode(message, stamp, &ctx))
        }
    }
}

/// For messages that name no other member.
pub fn no_addresses(_: &str) -> Option<String> {
    None
}
