//! The UDP media stream's wire (issue 13, "The exact wire" §1, §2, §5, §6): datagram kinds,
//! the handshake's control frames, the ctsTraffic DATA datagrams and the legacy one-way START.
//!
//! Pure encode and decode functions, no I/O and no clock: the state machines of the responder
//! (`media serve`, the relay) and of the initiator (`media recv`) call these and own the time,
//! the sockets and the randomness. All integers are little-endian.
//!
//! Every datagram but the legacy 5-byte `START` begins with a u16 flag that says what it is
//! ([`classify`], D1, D2):
//!
//! ```text
//! flag 0x0000 DATA · 0x0100 START · 0x0101 START_ACK · 0x0102 START_CONFIRM · 0x0103 ERROR
//!      0x1000 LEGACY_ID · anything else, or shorter than 26 bytes: dropped
//! ```
//!
//! A control frame (START, START_ACK, START_CONFIRM, ERROR; [`decode_control`],
//! [`ControlFrame::encode`]) is a fixed 67-byte part and a TLV payload to the end:
//!
//! ```text
//!  0      2                        26   27   28   30                      67
//!  +------+------------------------+----+----+----+-----------------------+-----------...
//!  | flag | 24 zero bytes (ignored)| v=1|flgs| 0 0| connection id (37)    | TLV, TLV...
//!  +------+------------------------+----+----+----+-----------------------+-----------...
//!  TLV:   type u16 | length u16 | value[length]
//!         1 STREAM_ID (1..64 bytes of 0x21..0x7E)   2 MEDIA_TOKEN (1..128 bytes)
//!         3 ERROR_CODE (u16, ERROR's first TLV)     4 PADDING (ignored)   others: skipped
//! ```
//!
//! START and START_CONFIRM are padded to at least [`MIN_PADDED_LEN`] (256) bytes, START_ACK is
//! exactly the fixed part plus the STREAM_ID (71 + len <= 135 bytes), so no reply is larger
//! than what caused it (D8..D10). Decoding reports errors in the responder's validation order
//! (D12): not a control frame, too short, bad version (before any TLV is read), malformed TLVs.
//! The 256-byte minimum is the caller's check ([`ControlKind::min_len`]), made before decoding.
//!
//! A DATA datagram ([`decode_data`], [`write_data`]) is the ctsTraffic 26-byte header and a
//! payload:
//!
//! ```text
//!  0      2                10               18               26
//!  +------+----------------+----------------+----------------+--------------------...
//!  | 0 0  | i64 sequence   | i64 timestamp  | i64 frequency  | payload: (P + i) & 0xFF
//!  +------+----------------+----------------+----------------+--------------------...
//! ```
//!
//! A frame of F = bitrate / 8 / fps bytes (headers included) is split into datagrams of at most
//! D bytes, the last at least 27 ([`StreamParams::fragments`], D23, D24); P is the number of
//! payload bytes in the frame's earlier fragments (D25).
//!
//! The legacy one-way start (§6): the client's 5 bytes `START` ([`is_legacy_start`]) and the
//! server's 39-byte LEGACY_ID (`00 10` + connection id; [`encode_legacy_id`],
//! [`decode_legacy_id`]).

use std::fmt;

/// The flag of a DATA datagram.
pub const FLAG_DATA: u16 = 0x0000;
/// The flag of a START control frame.
pub const FLAG_START: u16 = 0x0100;
/// The flag of a START_ACK control frame.
pub const FLAG_START_ACK: u16 = 0x0101;
/// The flag of a START_CONFIRM control frame.
pub const FLAG_START_CONFIRM: u16 = 0x0102;
/// The flag of an ERROR control frame (D1).
pub const FLAG_ERROR: u16 = 0x0103;
/// The flag of the legacy LEGACY_ID datagram (§6).
pub const FLAG_LEGACY_ID: u16 = 0x1000;

/// The DATA header's size, and the smallest datagram that is not dropped (D2).
pub const DATA_HEADER_LEN: usize = 26;
/// The size of a control frame's fixed part (D3).
pub const CONTROL_FIXED_LEN: usize = 67;
/// The smallest START or START_CONFIRM a responder answers (D10).
pub const MIN_PADDED_LEN: usize = 256;
/// The offset of a control frame's version byte.
pub const VERSION_OFFSET: usize = 26;
/// The offset of a control frame's flags byte.
pub const FLAGS_OFFSET: usize = 27;
/// The offset of a control frame's connection id.
pub const CONNECTION_ID_OFFSET: usize = 30;
/// The control frames' version.
pub const VERSION: u8 = 1;
/// START_ACK's flags bit 0, "accepted" (always set, D5).
pub const FLAG_ACCEPTED: u8 = 0x01;
/// The connection id's size on the wire: 36 characters and a NUL (D6).
pub const CONNECTION_ID_LEN: usize = 37;
/// The size of a TLV's type and length.
pub const TLV_HEADER_LEN: usize = 4;
/// TLV type STREAM_ID.
pub const TLV_STREAM_ID: u16 = 0x0001;
/// TLV type MEDIA_TOKEN.
pub const TLV_MEDIA_TOKEN: u16 = 0x0002;
/// TLV type ERROR_CODE.
pub const TLV_ERROR_CODE: u16 = 0x0003;
/// TLV type PADDING.
pub const TLV_PADDING: u16 = 0x0004;
/// The longest stream id.
pub const MAX_STREAM_ID_LEN: usize = 64;
/// The longest media token.
pub const MAX_MEDIA_TOKEN_LEN: usize = 128;
/// The legacy one-way START: exactly these 5 bytes (§6).
pub const LEGACY_START: &[u8; 5] = b"START";
/// The size of a LEGACY_ID datagram.
pub const LEGACY_ID_LEN: usize = 2 + CONNECTION_ID_LEN;
/// The counter frequency every DATA datagram carries: nanoseconds (D22).
pub const FREQUENCY: i64 = 1_000_000_000;
/// The smallest frame size a stream may have (D23).
pub const MIN_FRAME_SIZE: u64 = 40;
/// The smallest `--datagram-size` (D23).
pub const MIN_DATAGRAM_SIZE: usize = 64;
/// The largest `--datagram-size` (D23).
pub const MAX_DATAGRAM_SIZE: usize = 65507;
/// The last fragment of a frame carries at least this many bytes (D24).
pub const MIN_LAST_FRAGMENT: usize = 27;

fn flag_of(datagram: &[u8]) -> Option<u16> {
    Some(u16::from_le_bytes([*datagram.first()?, *datagram.get(1)?]))
}

// ---------------------------------------------------------------------------------------------
// Datagram kinds (§1)
// ---------------------------------------------------------------------------------------------

/// The four control frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControlKind {
    /// START (`0x0100`), initiator to responder.
    Start,
    /// START_ACK (`0x0101`), responder to initiator.
    StartAck,
    /// START_CONFIRM (`0x0102`), initiator to responder.
    StartConfirm,
    /// ERROR (`0x0103`), either way.
    Error,
}

impl ControlKind {
    /// The kind's flag.
    pub fn flag(self) -> u16 {
        match self {
            ControlKind::Start => FLAG_START,
            ControlKind::StartAck => FLAG_START_ACK,
            ControlKind::StartConfirm => FLAG_START_CONFIRM,
            ControlKind::Error => FLAG_ERROR,
        }
    }

    /// The kind with this flag, if it is a control flag.
    pub fn from_flag(flag: u16) -> Option<ControlKind> {
        match flag {
            FLAG_START => Some(ControlKind::Start),
            FLAG_START_ACK => Some(ControlKind::StartAck),
            FLAG_START_CONFIRM => Some(ControlKind::StartConfirm),
            FLAG_ERROR => Some(ControlKind::Error),
            _ => None,
        }
    }

    /// The smallest datagram of this kind a responder answers: [`MIN_PADDED_LEN`] for START
    /// and START_CONFIRM (shorter ones are dropped silently, D10, D12 step 2), the fixed part
    /// for the others.
    pub fn min_len(self) -> usize {
        match self {
            ControlKind::Start | ControlKind::StartConfirm => MIN_PADDED_LEN,
            ControlKind::StartAck | ControlKind::Error => CONTROL_FIXED_LEN,
        }
    }

    /// The name on the wire documents and logs use (`START_ACK`).
    pub fn name(self) -> &'static str {
        match self {
            ControlKind::Start => "START",
            ControlKind::StartAck => "START_ACK",
            ControlKind::StartConfirm => "START_CONFIRM",
            ControlKind::Error => "ERROR",
        }
    }
}

/// What a datagram is, by its flag (D1, D2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatagramKind {
    /// A DATA datagram (flag `0x0000`).
    Data,
    /// A control frame; [`decode_control`] reads it.
    Control(ControlKind),
    /// A LEGACY_ID datagram (flag `0x1000`); [`decode_legacy_id`] reads it.
    LegacyId,
    /// The exact 5-byte legacy START (only answered with `--legacy-start`).
    LegacyStart,
    /// Shorter than 26 bytes (and not the legacy START), or an unknown flag: dropped silently.
    Drop,
}

/// Classifies a datagram by its flag (D1, D2): the exact 5 bytes `START` are the legacy start,
/// anything else shorter than [`DATA_HEADER_LEN`] or with an unknown flag is [`DatagramKind::Drop`].
/// Which kinds a role accepts is the role's business (the responder also drops DATA, START_ACK
/// and LEGACY_ID).
pub fn classify(datagram: &[u8]) -> DatagramKind {
    if is_legacy_start(datagram) {
        return DatagramKind::LegacyStart;
    }
    if datagram.len() < DATA_HEADER_LEN {
        return DatagramKind::Drop;
    }
    match flag_of(datagram) {
        Some(FLAG_DATA) => DatagramKind::Data,
        Some(FLAG_LEGACY_ID) => DatagramKind::LegacyId,
        Some(flag) => ControlKind::from_flag(flag)
            .map(DatagramKind::Control)
            .unwrap_or(DatagramKind::Drop),
        None => DatagramKind::Drop,
    }
}

// ---------------------------------------------------------------------------------------------
// Values carried by control frames
// ---------------------------------------------------------------------------------------------

/// A connection id as it is on the wire: 37 bytes, either a lowercase hyphenated v4 UUID and a
/// NUL, or 37 zero bytes ([`ConnectionId::ZERO`], "none", D6).
///
/// Decoding keeps whatever 37 bytes arrived (START's are ignored, START_CONFIRM's are compared
/// with the START_ACK's), so a received id is not necessarily valid: [`ConnectionId::as_uuid`]
/// says whether it is.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId([u8; CONNECTION_ID_LEN]);

impl ConnectionId {
    /// 37 zero bytes: no id (START, and ERROR from a responder that holds no state).
    pub const ZERO: ConnectionId = ConnectionId([0; CONNECTION_ID_LEN]);

    /// A v4 UUID from 16 random bytes (the caller's randomness): the version nibble is set to
    /// 4 and the variant bits to `10`, written lowercase and hyphenated, then a NUL.
    pub fn from_random(mut bytes: [u8; 16]) -> ConnectionId {
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; CONNECTION_ID_LEN];
        let mut at = 0;
        for (i, byte) in bytes.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                out[at] = b'-';
                at += 1;
            }
            out[at] = HEX[usize::from(byte >> 4)];
            out[at + 1] = HEX[usize::from(byte & 0x0f)];
            at += 2;
        }
        ConnectionId(out)
    }

    /// Parses the 36-character text form; `None` unless it is a lowercase hyphenated v4 UUID
    /// (`xxxxxxxx-xxxx-4xxx-[89ab]xxx-xxxxxxxxxxxx`).
    pub fn parse(text: &str) -> Option<ConnectionId> {
        let bytes = text.as_bytes();
        if bytes.len() != CONNECTION_ID_LEN - 1 {
            return None;
        }
        let mut out = [0u8; CONNECTION_ID_LEN];
        out[..CONNECTION_ID_LEN - 1].copy_from_slice(bytes);
        let id = ConnectionId(out);
        id.as_uuid().map(|_| id)
    }

    /// The id exactly as these 37 wire bytes (any bytes).
    pub fn from_wire(bytes: [u8; CONNECTION_ID_LEN]) -> ConnectionId {
        ConnectionId(bytes)
    }

    /// The 37 wire bytes.
    pub fn as_bytes(&self) -> &[u8; CONNECTION_ID_LEN] {
        &self.0
    }

    /// Whether this is the all-zero "no id".
    pub fn is_zero(&self) -> bool {
        self.0 == [0; CONNECTION_ID_LEN]
    }

    /// The 36-character text when the bytes are a valid id (lowercase hyphenated v4 UUID and a
    /// NUL), else `None`.
    pub fn as_uuid(&self) -> Option<&str> {
        let (text, nul) = self.0.split_at(CONNECTION_ID_LEN - 1);
        if nul != [0] {
            return None;
        }
        for (i, &c) in text.iter().enumerate() {
            let ok = match i {
                8 | 13 | 18 | 23 => c == b'-',
                14 => c == b'4',
                19 => matches!(c, b'8' | b'9' | b'a' | b'b'),
                _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
            };
            if !ok {
                return None;
            }
        }
        std::str::from_utf8(text).ok()
    }
}

impl fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_uuid() {
            Some(text) => write!(f, "ConnectionId({text})"),
            None if self.is_zero() => write!(f, "ConnectionId::ZERO"),
            None => write!(f, "ConnectionId({:02x?})", &self.0[..]),
        }
    }
}

/// A stream id: 1..64 bytes, each a printable ASCII character `0x21..0x7E` (D7).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(String);

impl StreamId {
    /// Checks the rule; `None` when the text is empty, longer than 64 bytes or has a byte
    /// outside `0x21..0x7E`.
    pub fn new(text: impl Into<String>) -> Option<StreamId> {
        let text = text.into();
        Self::valid(text.as_bytes()).then_some(StreamId(text))
    }

    /// Reads a STREAM_ID value; `None` when it breaks the rule.
    pub fn from_bytes(bytes: &[u8]) -> Option<StreamId> {
        if !Self::valid(bytes) {
            return None;
        }
        // Printable ASCII is UTF-8.
        std::str::from_utf8(bytes)
            .ok()
            .map(|text| StreamId(text.to_owned()))
    }

    fn valid(bytes: &[u8]) -> bool {
        (1..=MAX_STREAM_ID_LEN).contains(&bytes.len())
            && bytes.iter().all(|b| (0x21..=0x7e).contains(b))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A media token as carried in START: 1..128 bytes (D7); what it means is the relay's business.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MediaToken(Vec<u8>);

impl MediaToken {
    /// `None` when empty or longer than 128 bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Option<MediaToken> {
        let bytes = bytes.into();
        (1..=MAX_MEDIA_TOKEN_LEN)
            .contains(&bytes.len())
            .then_some(MediaToken(bytes))
    }

    /// The token's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for MediaToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A grant: never printed, only its size.
        write!(f, "MediaToken({} bytes)", self.0.len())
    }
}

/// The ERROR frame's codes (D11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// START/START_CONFIRM with version != 1 (checked before the TLVs).
    BadVersion = 1,
    /// A >= 256-byte START/START_CONFIRM whose TLVs are bad, or with no or an invalid STREAM_ID.
    Malformed = 2,
    /// START naming a stream the responder does not serve.
    UnknownStream = 3,
    /// Connection id or stream id differs from what the tuple holds.
    StreamMismatch = 4,
    /// Reservation refused (`--max-streams` reached).
    Refused = 5,
    /// Relay only: missing, invalid or expired media token.
    BadToken = 6,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 6] = [
        ErrorCode::BadVersion,
        ErrorCode::Malformed,
        ErrorCode::UnknownStream,
        ErrorCode::StreamMismatch,
        ErrorCode::Refused,
        ErrorCode::BadToken,
    ];

    /// The u16 on the wire.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The code with this number, if it is one of ours.
    pub fn from_code(code: u16) -> Option<ErrorCode> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The name as `media recv` prints it (`REFUSED`).
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::BadVersion => "BAD_VERSION",
            ErrorCode::Malformed => "MALFORMED",
            ErrorCode::UnknownStream => "UNKNOWN_STREAM",
            ErrorCode::StreamMismatch => "STREAM_MISMATCH",
            ErrorCode::Refused => "REFUSED",
            ErrorCode::BadToken => "BAD_TOKEN",
        }
    }

    /// The name in snake_case, as metrics label it (`bad_token`, R9).
    pub fn label(self) -> &'static str {
        match self {
            ErrorCode::BadVersion => "bad_version",
            ErrorCode::Malformed => "malformed",
            ErrorCode::UnknownStream => "unknown_stream",
            ErrorCode::StreamMismatch => "stream_mismatch",
            ErrorCode::Refused => "refused",
            ErrorCode::BadToken => "bad_token",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Control frames (§2)
// ---------------------------------------------------------------------------------------------

/// A decoded (or to be encoded) control frame: the fixed part's flags and id, and what its TLVs
/// carry. Its version is 1 (another version is [`ControlError::BadVersion`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlFrame {
    /// The flags byte as received (unknown bits are kept but mean nothing, D5).
    pub flags: u8,
    /// The connection id (D6).
    pub connection_id: ConnectionId,
    /// The frame's kind and its TLV contents.
    pub body: ControlBody,
}

/// The kind of a control frame with the TLV values it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlBody {
    /// START: the stream asked for and, for the relay, a media token.
    Start {
        /// The STREAM_ID TLV (required).
        stream_id: StreamId,
        /// The MEDIA_TOKEN TLV (optional).
        media_token: Option<MediaToken>,
    },
    /// START_ACK: the echoed stream id.
    StartAck {
        /// The STREAM_ID TLV (required).
        stream_id: StreamId,
    },
    /// START_CONFIRM: the stream id again.
    StartConfirm {
        /// The STREAM_ID TLV (required).
        stream_id: StreamId,
    },
    /// ERROR: a code (any u16; [`ErrorCode::from_code`] names ours) and maybe the stream id.
    Error {
        /// The ERROR_CODE TLV, the first TLV.
        code: u16,
        /// The STREAM_ID TLV, when the START's was parsed.
        stream_id: Option<StreamId>,
    },
}

impl ControlBody {
    /// The frame's kind.
    pub fn kind(&self) -> ControlKind {
        match self {
            ControlBody::Start { .. } => ControlKind::Start,
            ControlBody::StartAck { .. } => ControlKind::StartAck,
            ControlBody::StartConfirm { .. } => ControlKind::StartConfirm,
            ControlBody::Error { .. } => ControlKind::Error,
        }
    }

    /// The stream id the frame carries, if any.
    pub fn stream_id(&self) -> Option<&StreamId> {
        match self {
            ControlBody::Start { stream_id, .. }
            | ControlBody::StartAck { stream_id }
            | ControlBody::StartConfirm { stream_id } => Some(stream_id),
            ControlBody::Error { stream_id, .. } => stream_id.as_ref(),
        }
    }
}

impl ControlFrame {
    /// The frame's kind.
    pub fn kind(&self) -> ControlKind {
        self.body.kind()
    }

    /// Writes the frame: the fixed part (version 1, zeroed header and reserved bytes), then
    /// ERROR_CODE (ERROR only), STREAM_ID, MEDIA_TOKEN (START only), then for START and
    /// START_CONFIRM one PADDING TLV of zeros bringing the datagram to at least 256 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let kind = self.kind();
        let mut out = Vec::with_capacity(MIN_PADDED_LEN);
        out.extend_from_slice(&kind.flag().to_le_bytes());
        out.resize(VERSION_OFFSET, 0);
        out.push(VERSION);
        out.push(self.flags);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(self.connection_id.as_bytes());
        debug_assert_eq!(out.len(), CONTROL_FIXED_LEN);
        if let ControlBody::Error { code, .. } = &self.body {
            push_tlv(&mut out, TLV_ERROR_CODE, &code.to_le_bytes());
        }
        if let Some(stream_id) = self.body.stream_id() {
            push_tlv(&mut out, TLV_STREAM_ID, stream_id.as_str().as_bytes());
        }
        if let ControlBody::Start {
            media_token: Some(token),
            ..
        } = &self.body
        {
            push_tlv(&mut out, TLV_MEDIA_TOKEN, token.as_bytes());
        }
        if kind.min_len() > out.len() {
            let pad = (kind.min_len() - out.len()).saturating_sub(TLV_HEADER_LEN);
            out.extend_from_slice(&TLV_PADDING.to_le_bytes());
            out.extend_from_slice(&(pad as u16).to_le_bytes());
            out.resize(out.len() + pad, 0);
        }
        out
    }
}

fn push_tlv(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
}

/// START (D10): flags 0, id zero, STREAM_ID, optional MEDIA_TOKEN, padded to >= 256 bytes.
pub fn encode_start(stream_id: &StreamId, media_token: Option<&MediaToken>) -> Vec<u8> {
    ControlFrame {
        flags: 0,
        connection_id: ConnectionId::ZERO,
        body: ControlBody::Start {
            stream_id: stream_id.clone(),
            media_token: media_token.cloned(),
        },
    }
    .encode()
}

/// START_ACK (D8): flags `0x01`, the assigned id, exactly the STREAM_ID: 71 + len bytes.
pub fn encode_start_ack(connection_id: &ConnectionId, stream_id: &StreamId) -> Vec<u8> {
    ControlFrame {
        flags: FLAG_ACCEPTED,
        connection_id: *connection_id,
        body: ControlBody::StartAck {
            stream_id: stream_id.clone(),
        },
    }
    .encode()
}

/// START_CONFIRM (D9): flags 0, the START_ACK's id, STREAM_ID, padded to >= 256 bytes.
pub fn encode_start_confirm(connection_id: &ConnectionId, stream_id: &StreamId) -> Vec<u8> {
    ControlFrame {
        flags: 0,
        connection_id: *connection_id,
        body: ControlBody::StartConfirm {
            stream_id: stream_id.clone(),
        },
    }
    .encode()
}

/// ERROR (D11): version 1, flags 0, the id (or [`ConnectionId::ZERO`]), ERROR_CODE first
/// (`03 00 02 00 cc cc`), then the STREAM_ID when one was parsed. At most 141 bytes.
pub fn encode_error(
    code: ErrorCode,
    connection_id: &ConnectionId,
    stream_id: Option<&StreamId>,
) -> Vec<u8> {
    ControlFrame {
        flags: 0,
        connection_id: *connection_id,
        body: ControlBody::Error {
            code: code.code(),
            stream_id: stream_id.cloned(),
        },
    }
    .encode()
}

/// Why a control frame's TLV payload is malformed (D7; answered with ERROR 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// A TLV's value runs past the end of the datagram.
    #[error("TLV at offset {offset} runs past the end")]
    Overrun {
        /// The TLV's offset in the datagram.
        offset: usize,
    },
    /// 1..3 bytes left after the last TLV, too few for a TLV header.
    #[error("{count} trailing bytes after the last TLV")]
    TrailingBytes {
        /// How many (1..3).
        count: usize,
    },
    /// START, START_ACK or START_CONFIRM without a STREAM_ID.
    #[error("no STREAM_ID")]
    MissingStreamId,
    /// A STREAM_ID empty, longer than 64 bytes, or with a byte outside `0x21..0x7E`.
    #[error("invalid STREAM_ID")]
    InvalidStreamId,
    /// A second STREAM_ID.
    #[error("STREAM_ID twice")]
    DuplicateStreamId,
    /// A START's MEDIA_TOKEN empty or longer than 128 bytes.
    #[error("invalid MEDIA_TOKEN")]
    InvalidMediaToken,
    /// A START with two MEDIA_TOKENs.
    #[error("MEDIA_TOKEN twice")]
    DuplicateMediaToken,
    /// An ERROR whose first TLV is not ERROR_CODE (or that has no TLV).
    #[error("ERROR without ERROR_CODE as its first TLV")]
    MissingErrorCode,
    /// An ERROR_CODE whose length is not 2.
    #[error("ERROR_CODE of length {length}, not 2")]
    BadErrorCodeLength {
        /// The length field.
        length: u16,
    },
    /// An ERROR with a second ERROR_CODE.
    #[error("ERROR_CODE twice")]
    DuplicateErrorCode,
}

/// Why [`decode_control`] refused a datagram, in the responder's validation order (D12).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The flag is not a control flag (or there are fewer than 2 bytes).
    #[error("not a control frame")]
    NotControl,
    /// Shorter than the 67-byte fixed part (D3).
    #[error("{kind:?} of {len} bytes, shorter than the 67-byte fixed part")]
    TooShort {
        /// The frame's kind.
        kind: ControlKind,
        /// Its length.
        len: usize,
    },
    /// Version is not 1; the TLVs were not read (ERROR 1).
    #[error("{kind:?} with version {version}")]
    BadVersion {
        /// The frame's kind.
        kind: ControlKind,
        /// The version byte.
        version: u8,
    },
    /// Version 1 but the TLV payload is bad (ERROR 2).
    #[error("malformed {kind:?}: {reason}")]
    Malformed {
        /// The frame's kind.
        kind: ControlKind,
        /// The fixed part's connection id.
        connection_id: ConnectionId,
        /// A valid STREAM_ID seen before the fault, for the ERROR's optional STREAM_ID.
        stream_id: Option<StreamId>,
        /// What is wrong.
        reason: Malformed,
    },
}

impl ControlError {
    /// The ERROR code a responder answers with: 1 for a bad version, 2 for malformed TLVs,
    /// none (drop silently) for the rest.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            ControlError::BadVersion { .. } => Some(ErrorCode::BadVersion),
            ControlError::Malformed { .. } => Some(ErrorCode::Malformed),
            ControlError::NotControl | ControlError::TooShort { .. } => None,
        }
    }
}

/// Reads a control frame. The zeroed header (bytes 2..26) and reserved bytes are ignored, the
/// version is checked before any TLV is read, then the TLVs are walked (unknown types and
/// PADDING skipped, MEDIA_TOKEN and ERROR_CODE read only where they belong). Does not apply
/// the 256-byte minimum (see [`ControlKind::min_len`]).
pub fn decode_control(datagram: &[u8]) -> Result<ControlFrame, ControlError> {
    let kind = flag_of(datagram)
        .and_then(ControlKind::from_flag)
        .ok_or(ControlError::NotControl)?;
    if datagram.len() < CONTROL_FIXED_LEN {
        return Err(ControlError::TooShort {
            kind,
            len: datagram.len(),
        });
    }
    let version = datagram[VERSION_OFFSET];
    if version != VERSION {
        return Err(ControlError::BadVersion { kind, version });
    }
    let flags = datagram[FLAGS_OFFSET];
    let mut id = [0u8; CONNECTION_ID_LEN];
    id.copy_from_slice(&datagram[CONNECTION_ID_OFFSET..CONTROL_FIXED_LEN]);
    let connection_id = ConnectionId(id);

    let mut stream_id: Option<StreamId> = None;
    let fail = |stream_id: &Option<StreamId>, reason| ControlError::Malformed {
        kind,
        connection_id,
        stream_id: stream_id.clone(),
        reason,
    };
    let mut media_token = None;
    let mut code = None;
    let mut at = CONTROL_FIXED_LEN;
    let mut first = true;
    while at < datagram.len() {
        let left = datagram.len() - at;
        if left < TLV_HEADER_LEN {
            return Err(fail(&stream_id, Malformed::TrailingBytes { count: left }));
        }
        let tlv_type = u16::from_le_bytes([datagram[at], datagram[at + 1]]);
        let length = u16::from_le_bytes([datagram[at + 2], datagram[at + 3]]);
        let start = at + TLV_HEADER_LEN;
        let end = start + usize::from(length);
        if end > datagram.len() {
            return Err(fail(&stream_id, Malformed::Overrun { offset: at }));
        }
        let value = &datagram[start..end];
        if kind == ControlKind::Error && first && tlv_type != TLV_ERROR_CODE {
            return Err(fail(&stream_id, Malformed::MissingErrorCode));
        }
        match tlv_type {
            TLV_STREAM_ID => {
                if stream_id.is_some() {
                    return Err(fail(&stream_id, Malformed::DuplicateStreamId));
                }
                let id = StreamId::from_bytes(value)
                    .ok_or_else(|| fail(&stream_id, Malformed::InvalidStreamId))?;
                stream_id = Some(id);
            }
            TLV_MEDIA_TOKEN if kind == ControlKind::Start => {
                if media_token.is_some() {
                    return Err(fail(&stream_id, Malformed::DuplicateMediaToken));
                }
                let token = MediaToken::new(value)
                    .ok_or_else(|| fail(&stream_id, Malformed::InvalidMediaToken))?;
                media_token = Some(token);
            }
            TLV_ERROR_CODE if kind == ControlKind::Error => {
                if code.is_some() {
                    return Err(fail(&stream_id, Malformed::DuplicateErrorCode));
                }
                let [lo, hi] = value else {
                    return Err(fail(&stream_id, Malformed::BadErrorCodeLength { length }));
                };
                code = Some(u16::from_le_bytes([*lo, *hi]));
            }
            // PADDING, unknown types, and known types where they do not belong: skipped.
            _ => {}
        }
        first = false;
        at = end;
    }
    let body = match kind {
        ControlKind::Error => ControlBody::Error {
            code: code.ok_or_else(|| fail(&stream_id, Malformed::MissingErrorCode))?,
            stream_id,
        },
        _ => {
            let Some(stream_id) = stream_id else {
                return Err(fail(&None, Malformed::MissingStreamId));
            };
            match kind {
                ControlKind::Start => ControlBody::Start {
                    stream_id,
                    media_token,
                },
                ControlKind::StartAck => ControlBody::StartAck { stream_id },
                _ => ControlBody::StartConfirm { stream_id },
            }
        }
    };
    Ok(ControlFrame {
        flags,
        connection_id,
        body,
    })
}

// ---------------------------------------------------------------------------------------------
// DATA datagrams (§5)
// ---------------------------------------------------------------------------------------------

/// The 26-byte ctsTraffic header after the flag: sequence number, sender counter, frequency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DataHeader {
    /// The frame's sequence number (from 1, D21).
    pub sequence: i64,
    /// The sender's counter at send (monotonic nanoseconds, D22).
    pub timestamp: i64,
    /// The counter's frequency ([`FREQUENCY`] from us).
    pub frequency: i64,
}

impl DataHeader {
    /// Writes the header (flag `0x0000` and the three i64) into `out[..26]`.
    ///
    /// # Panics
    /// If `out` is shorter than 26 bytes.
    pub fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&FLAG_DATA.to_le_bytes());
        out[2..10].copy_from_slice(&self.sequence.to_le_bytes());
        out[10..18].copy_from_slice(&self.timestamp.to_le_bytes());
        out[18..26].copy_from_slice(&self.frequency.to_le_bytes());
    }
}

/// The payload byte at payload offset `p` of a frame (D25): `p & 0xFF`.
pub fn pattern_byte(p: usize) -> u8 {
    (p & 0xff) as u8
}

/// Writes a whole DATA datagram into `out` (its length is the datagram's size, at least 26):
/// the header, then the pattern from payload offset `payload_offset` (P, D25).
///
/// # Panics
/// If `out` is shorter than 26 bytes.
pub fn write_data(out: &mut [u8], header: &DataHeader, payload_offset: usize) {
    header.write(out);
    for (i, byte) in out[DATA_HEADER_LEN..].iter_mut().enumerate() {
        *byte = pattern_byte(payload_offset + i);
    }
}

/// A DATA datagram of `size` bytes (at least 26), as [`write_data`] writes it.
pub fn encode_data(header: &DataHeader, payload_offset: usize, size: usize) -> Vec<u8> {
    let mut out = vec![0; size.max(DATA_HEADER_LEN)];
    write_data(&mut out, header, payload_offset);
    out
}

/// Why a datagram is not a DATA datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// Shorter than the 26-byte header.
    #[error("{len} bytes, shorter than the 26-byte DATA header")]
    TooShort {
        /// The datagram's length.
        len: usize,
    },
    /// The flag is not `0x0000`.
    #[error("flag {flag:#06x} is not DATA")]
    NotData {
        /// The flag.
        flag: u16,
    },
}

/// A DATA datagram read in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataDatagram<'a> {
    /// The header.
    pub header: DataHeader,
    /// The bytes after the header.
    pub payload: &'a [u8],
}

impl DataDatagram<'_> {
    /// Whether the payload is the pattern starting at payload offset `payload_offset` (D25).
    pub fn pattern_ok(&self, payload_offset: usize) -> bool {
        self.payload
            .iter()
            .enumerate()
            .all(|(i, &b)| b == pattern_byte(payload_offset + i))
    }

    /// The datagram's size on the wire (header and payload).
    pub fn len(&self) -> usize {
        DATA_HEADER_LEN + self.payload.len()
    }

    /// Always false: a DATA datagram has at least its header.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Reads a DATA datagram's header; the payload is not checked (see
/// [`DataDatagram::pattern_ok`]).
pub fn decode_data(datagram: &[u8]) -> Result<DataDatagram<'_>, DataError> {
    if datagram.len() < DATA_HEADER_LEN {
        return Err(DataError::TooShort {
            len: datagram.len(),
        });
    }
    let flag = u16::from_le_bytes([datagram[0], datagram[1]]);
    if flag != FLAG_DATA {
        return Err(DataError::NotData { flag });
    }
    let i64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&datagram[at..at + 8]);
        i64::from_le_bytes(b)
    };
    Ok(DataDatagram {
        header: DataHeader {
            sequence: i64_at(2),
            timestamp: i64_at(10),
            frequency: i64_at(18),
        },
        payload: &datagram[DATA_HEADER_LEN..],
    })
}

/// Why stream parameters are refused (D23; an invalid setting, exit 1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// `--fps` is 0.
    #[error("--fps must be at least 1")]
    ZeroFps,
    /// The frame would be shorter than 40 bytes.
    #[error(
        "frame size {frame_size} bytes (bitrate / 8 / fps) is below the minimum of 40; raise --bitrate or lower --fps"
    )]
    FrameTooSmall {
        /// floor(bitrate / 8 / fps).
        frame_size: u64,
    },
    /// `--datagram-size` outside 64..65507.
    #[error("--datagram-size {datagram_size} is outside 64..65507")]
    DatagramSize {
        /// The value given.
        datagram_size: usize,
    },
}

/// Frame size F = floor(bitrate / 8 / fps) bytes, headers included (D23); 0 when fps is 0.
pub fn frame_size(bitrate: u64, fps: u32) -> u64 {
    bitrate.checked_div(8 * u64::from(fps)).unwrap_or_default()
}

/// A stream's validated shape: frame size and maximum datagram size (D23).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamParams {
    frame_size: usize,
    datagram_size: usize,
}

/// One datagram of a frame: its size and the payload offset P its pattern starts at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// The datagram's size, header included.
    pub size: usize,
    /// The number of payload bytes in the frame's earlier fragments (D25).
    pub payload_offset: usize,
}

impl StreamParams {
    /// Checks `--bitrate`, `--fps` and `--datagram-size` (D23): fps >= 1, F >= 40, D in
    /// 64..=65507.
    pub fn new(bitrate: u64, fps: u32, datagram_size: usize) -> Result<StreamParams, ParamsError> {
        if fps == 0 {
            return Err(ParamsError::ZeroFps);
        }
        let frame_size = frame_size(bitrate, fps);
        if frame_size < MIN_FRAME_SIZE {
            return Err(ParamsError::FrameTooSmall { frame_size });
        }
        if !(MIN_DATAGRAM_SIZE..=MAX_DATAGRAM_SIZE).contains(&datagram_size) {
            return Err(ParamsError::DatagramSize { datagram_size });
        }
        Ok(StreamParams {
            // Saturates only on 32-bit targets, for frames no network carries.
            frame_size: usize::try_from(frame_size).unwrap_or(usize::MAX),
            datagram_size,
        })
    }

    /// F: the frame's size in bytes, headers included.
    pub fn frame_size(&self) -> usize {
        self.frame_size
    }

    /// D: the largest datagram.
    pub fn datagram_size(&self) -> usize {
        self.datagram_size
    }

    /// The frame's datagrams in sending order (D24): D bytes each while more than D remain,
    /// except that a fragment leaves at least 27 bytes for the last (F=2020, D=1000: 1000,
    /// 993, 27). Sizes add up to F, each is at most D and at least 27; there are ceil(F / D).
    pub fn fragments(&self) -> Fragments {
        Fragments {
            remaining: self.frame_size,
            datagram_size: self.datagram_size,
            payload_offset: 0,
        }
    }

    /// The payload bytes of one frame: F minus a 26-byte header per fragment.
    pub fn frame_payload_len(&self) -> usize {
        self.frame_size - DATA_HEADER_LEN * self.frame_size.div_ceil(self.datagram_size)
    }
}

/// The iterator of [`StreamParams::fragments`].
#[derive(Debug, Clone)]
pub struct Fragments {
    remaining: usize,
    datagram_size: usize,
    payload_offset: usize,
}

impl Iterator for Fragments {
    type Item = Fragment;

    fn next(&mut self) -> Option<Fragment> {
        if self.remaining == 0 {
            return None;
        }
        let d = self.datagram_size;
        let size = if self.remaining <= d {
            self.remaining
        } else if self.remaining - d < MIN_LAST_FRAGMENT {
            self.remaining - MIN_LAST_FRAGMENT
        } else {
            d
        };
        let fragment = Fragment {
            size,
            payload_offset: self.payload_offset,
        };
        self.payload_offset += size - DATA_HEADER_LEN;
        self.remaining -= size;
        Some(fragment)
    }
}

// ---------------------------------------------------------------------------------------------
// Legacy one-way start (§6)
// ---------------------------------------------------------------------------------------------

/// Whether the datagram is exactly the legacy 5-byte `START` (`53 54 41 52 54`).
pub fn is_legacy_start(datagram: &[u8]) -> bool {
    datagram == LEGACY_START
}

/// The 39-byte LEGACY_ID datagram: `00 10` and the 37-byte connection id.
pub fn encode_legacy_id(connection_id: &ConnectionId) -> [u8; LEGACY_ID_LEN] {
    let mut out = [0u8; LEGACY_ID_LEN];
    out[..2].copy_from_slice(&FLAG_LEGACY_ID.to_le_bytes());
    out[2..].copy_from_slice(connection_id.as_bytes());
    out
}

/// Reads a LEGACY_ID: exactly 39 bytes with flag `0x1000`; the id's bytes are kept as they are
/// (see [`ConnectionId::as_uuid`]).
pub fn decode_legacy_id(datagram: &[u8]) -> Option<ConnectionId> {
    if datagram.len() != LEGACY_ID_LEN || flag_of(datagram) != Some(FLAG_LEGACY_ID) {
        return None;
    }
    let mut id = [0u8; CONNECTION_ID_LEN];
    id.copy_from_slice(&datagram[2..]);
    Some(ConnectionId(id))
}

#[cfg(test)]
mod tests;
