//! What several fuzz targets check: the rules every decoded client message obeys, in either
//! dialect, written from the protocol document's wording (`docs/PROTOCOL.md`) rather than
//! from the decoder's code, so a field the decoder forgets to check is caught.
//! [`pairing`] holds the same for the pairing wire (issue 12).

pub mod pairing;

use loudsync_protocol::client::{MAX_NAME_BYTES, MAX_PASSWORD_BYTES, MAX_TOKEN_BYTES};
use loudsync_protocol::{ClientMessage, PROTOCOL_VERSION};

/// Panics, naming the field, unless `message` obeys every rule the server relies on once a
/// frame has decoded: a valid session id; device id and name, session name not blank, at
/// most [`MAX_NAME_BYTES`]; `protocolVersion` strictly `MAJOR` or `MAJOR.MINOR`; password and
/// token within their limits; no control character (C0, DEL, C1) in any name, id or reason.
pub fn assert_valid(message: &ClientMessage, text: &str) {
    let clean = |field: &str, value: &str| {
        assert!(
            !value.chars().any(char::is_control),
            "{field} {value:?} has a control character, decoded from {text:?}"
        );
    };
    let name = |field: &str, value: &str| {
        clean(field, value);
        assert!(
            !value.trim().is_empty() && value.len() <= MAX_NAME_BYTES,
            "{field} {value:?} decoded from {text:?}"
        );
    };
    match message {
        ClientMessage::Join(join) => {
            match &join.session_id {
                Some(id) => assert!(
                    (1..=64).contains(&id.len())
                        && id
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                    "sessionId {id:?} decoded from {text:?}"
                ),
                // Only a host may leave it out (it opens a new session).
                None => assert_eq!(
                    join.device_info.kind,
                    loudsync_protocol::DeviceType::Host,
                    "a client's join without sessionId decoded from {text:?}"
                ),
            }
            name("deviceInfo.id", &join.device_info.id);
            name("deviceInfo.name", &join.device_info.name);
            if let Some(session_name) = &join.session_name {
                name("sessionName", session_name);
            }
            if let Some(version) = &join.protocol_version {
                assert!(
                    strict_version(version).is_some(),
                    "protocolVersion {version:?} decoded from {text:?}"
                );
            }
            if let Some(password) = &join.password {
                assert!((1..=MAX_PASSWORD_BYTES).contains(&password.len()));
            }
            if let Some(token) = &join.token {
                assert!((1..=MAX_TOKEN_BYTES).contains(&token.len()));
            }
        }
        ClientMessage::Leave {
            reason: Some(reason),
        } => clean("leave reason", reason),
        ClientMessage::Kick { member_id, reason } => {
            clean("memberId", member_id);
            if let Some(reason) = reason {
                clean("kick reason", reason);
            }
        }
        ClientMessage::Message { to: Some(to), .. } => clean("to", to),
        ClientMessage::HandoffRequest {
            target_id: Some(target),
        } => clean("targetId", target),
        ClientMessage::HandoffAccept { handoff_id } => clean("handoffId", handoff_id),
        ClientMessage::HandoffDecline { handoff_id, reason } => {
            clean("handoffId", handoff_id);
            if let Some(reason) = reason {
                clean("decline reason", reason);
            }
        }
        _ => {}
    }
}

/// The major version of a version written strictly as `MAJOR` or `MAJOR.MINOR`, each part 1
/// to 9 ASCII digits; `None` for anything else.
pub fn strict_version(version: &str) -> Option<u32> {
    let digits = |p: &str| (1..=9).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
    let major = match version.split_once('.') {
        Some((major, minor)) if digits(major) && digits(minor) => major,
        None if digits(version) => version,
        _ => return None,
    };
    major.parse().ok()
}

/// Whether a client at `version` is compatible with this server: same major version.
pub fn compatible(version: &str) -> bool {
    strict_version(version).is_some_and(|major| Some(major) == strict_version(PROTOCOL_VERSION))
}
