//! Turning a server message into the bytes of one text frame, in a connection's dialect.

use bytes::Bytes;
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
) -> Bytes {
    match dialect {
        Dialect::LoudSync => Bytes::from(encode_ours(message, stamp)),
        Dialect::App => {
            let message_id = message_id(now_ms);
            let ctx = EncodeContext {
                now_ms,
                message_id: &message_id,
                address_of,
            };
            Bytes::from(app::encode(message, stamp, &ctx))
        }
    }
}

/// A `messageId` as the app makes them: `msg_<ms>_<7 base-36 chars>`.
fn message_id(now_ms: u64) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let suffix: String = (0..7)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect();
    format!("msg_{now_ms}_{suffix}")
}

/// For messages that name no other member.
pub fn no_addresses(_: &str) -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_look_like_the_apps() {
        let id = message_id(1738941234567);
        let rest = id.strip_prefix("msg_1738941234567_").unwrap();
        assert_eq!(rest.len(), 7);
        assert!(rest
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    }
}
