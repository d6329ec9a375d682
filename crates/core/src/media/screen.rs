//! D12 steps 1-4, the checks every responder (`media serve`'s [`Responder`], the session
//! [`Relay`]) runs on a datagram before its own rules: what is dropped silently, what is
//! answered with ERROR 1 or 2, and the decoded control frame steps 5 and 6 get.
//!
//! Dropped: unknown flags (D2), START_ACK and LEGACY_ID (only a responder sends them), START
//! and START_CONFIRM under 256 bytes (D10: too short to answer without amplifying), and a
//! broken ERROR (an ERROR is never answered, so two peers cannot ping-pong errors). DATA and
//! the 5-byte legacy START are handed back as they are: what they mean is the caller's.
//!
//! [`Responder`]: crate::media::responder::Responder
//! [`Relay`]: crate::media::relay::Relay

use loudsync_protocol::media::{
    classify, decode_control, ControlError, ControlFrame, ControlKind, DatagramKind, ErrorCode,
    StreamId,
};

/// What D12 steps 1-4 made of a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Screened {
    /// Drop silently.
    Drop,
    /// A DATA datagram.
    Data,
    /// The exact 5-byte legacy START (D28).
    LegacyStart,
    /// Answer with this ERROR (1 or 2, with the STREAM_ID when it was read) and tear down.
    Refuse(ErrorCode, Option<StreamId>),
    /// A decoded control frame (START, START_CONFIRM or ERROR) for steps 5 and 6.
    Frame(ControlFrame),
}

/// Runs D12 steps 1-4 on `bytes`.
pub(crate) fn screen(bytes: &[u8]) -> Screened {
    let kind = match classify(bytes) {
        DatagramKind::Data => return Screened::Data,
        DatagramKind::LegacyStart => return Screened::LegacyStart,
        DatagramKind::Control(kind) => kind,
        // (1) D2: unknown flags, and what only a responder sends.
        DatagramKind::LegacyId | DatagramKind::Drop => return Screened::Drop,
    };
    match kind {
        ControlKind::StartAck => return Screened::Drop,
        // (2) D10.
        ControlKind::Start | ControlKind::StartConfirm if bytes.len() < kind.min_len() => {
            return Screened::Drop
        }
        _ => {}
    }
    match decode_control(bytes) {
        Ok(frame) => Screened::Frame(frame),
        Err(_) if kind == ControlKind::Error => Screened::Drop,
        // (3) ERROR 1, (4) ERROR 2; anything else is dropped.
        Err(error) => match error.error_code() {
            Some(code) => {
                let stream_id = match error {
                    ControlError::Malformed { stream_id, .. } => stream_id,
                    _ => None,
                };
                Screened::Refuse(code, stream_id)
            }
            None => Screened::Drop,
        },
    }
}
