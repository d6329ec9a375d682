//! Tests of the media wire: exact bytes from the tables (§1, §2, §5, §6), every
//! malformed case of D7, the size rules of D8..D10, fragmentation (D24, D25), and property
//! tests: decode(encode(x)) == x for every frame, and no input makes a decoder panic.

use super::*;
use proptest::prelude::*;

const ID_TEXT: &str = "0f8e2b7c-1d3a-4b5c-9e6f-a1b2c3d4e5f6";

fn id() -> ConnectionId {
    ConnectionId::parse(ID_TEXT).unwrap()
}

fn sid(text: &str) -> StreamId {
    StreamId::new(text).unwrap()
}

/// A version-1 control frame's fixed part with this flag and id, then `tlvs` verbatim.
fn raw_control(flag: u16, flags: u8, id: &ConnectionId, tlvs: &[u8]) -> Vec<u8> {
    let mut out = flag.to_le_bytes().to_vec();
    out.extend_from_slice(&[0; 24]);
    out.extend_from_slice(&[1, flags, 0, 0]);
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(tlvs);
    out
}

fn malformed(datagram: &[u8]) -> Malformed {
    match decode_control(datagram) {
        Err(ControlError::Malformed { reason, .. }) => reason,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

// §1 ------------------------------------------------------------------------------------------

#[test]
fn flags_on_the_wire() {
    let cases: [(u16, [u8; 2], DatagramKind); 6] = [
        (FLAG_DATA, [0x00, 0x00], DatagramKind::Data),
        (
            FLAG_START,
            [0x00, 0x01],
            DatagramKind::Control(ControlKind::Start),
        ),
        (
            FLAG_START_ACK,
            [0x01, 0x01],
            DatagramKind::Control(ControlKind::StartAck),
        ),
        (
            FLAG_START_CONFIRM,
            [0x02, 0x01],
            DatagramKind::Control(ControlKind::StartConfirm),
        ),
        (
            FLAG_ERROR,
            [0x03, 0x01],
            DatagramKind::Control(ControlKind::Error),
        ),
        (FLAG_LEGACY_ID, [0x00, 0x10], DatagramKind::LegacyId),
    ];
    for (flag, bytes, kind) in cases {
        assert_eq!(flag.to_le_bytes(), bytes);
        let mut datagram = bytes.to_vec();
        datagram.resize(26, 0);
        assert_eq!(classify(&datagram), kind, "{flag:#06x}");
    }
    for kind in [
        ControlKind::Start,
        ControlKind::StartAck,
        ControlKind::StartConfirm,
        ControlKind::Error,
    ] {
        assert_eq!(ControlKind::from_flag(kind.flag()), Some(kind));
    }
}

#[test]
fn short_or_unknown_datagrams_are_dropped() {
    assert_eq!(classify(&[]), DatagramKind::Drop);
    assert_eq!(classify(&[0x00, 0x01]), DatagramKind::Drop);
    assert_eq!(classify(&[0u8; 25]), DatagramKind::Drop);
    assert_eq!(classify(&[0u8; 26]), DatagramKind::Data);
    for flag in [0x0001u16, 0x00ff, 0x0104, 0x0200, 0x1001, 0xffff] {
        let mut datagram = flag.to_le_bytes().to_vec();
        datagram.resize(300, 0);
        assert_eq!(classify(&datagram), DatagramKind::Drop, "{flag:#06x}");
    }
    // Only the exact 5 bytes are the legacy start.
    assert_eq!(classify(b"START"), DatagramKind::LegacyStart);
    assert_eq!(
        classify(&[0x53, 0x54, 0x41, 0x52, 0x54]),
        DatagramKind::LegacyStart
    );
    assert_eq!(classify(b"START\0"), DatagramKind::Drop);
    assert_eq!(classify(b"start"), DatagramKind::Drop);
    assert_eq!(classify(b"STAR"), DatagramKind::Drop);
}

// §2 ------------------------------------------------------------------------------------------

#[test]
fn connection_ids() {
    let id = ConnectionId::from_random([0xff; 16]);
    assert_eq!(id.as_uuid(), Some("ffffffff-ffff-4fff-bfff-ffffffffffff"));
    assert_eq!(id.as_bytes()[36], 0);
    let id = ConnectionId::from_random([0; 16]);
    assert_eq!(id.as_uuid(), Some("00000000-0000-4000-8000-000000000000"));
    assert_eq!(
        ConnectionId::parse(ID_TEXT).unwrap().as_uuid(),
        Some(ID_TEXT)
    );
    for bad in [
        "0F8E2B7C-1D3A-4B5C-9E6F-A1B2C3D4E5F6", // uppercase
        "0f8e2b7c-1d3a-3b5c-9e6f-a1b2c3d4e5f6", // version 3
        "0f8e2b7c-1d3a-4b5c-7e6f-a1b2c3d4e5f6", // variant
        "0f8e2b7c1d3a-4b5c-9e6f-a1b2c3d4e5f6-", // hyphens
        "0f8e2b7c-1d3a-4b5c-9e6f-a1b2c3d4e5f",  // 35 chars
        "",
    ] {
        assert_eq!(ConnectionId::parse(bad), None, "{bad}");
    }
    assert!(ConnectionId::ZERO.is_zero());
    assert_eq!(ConnectionId::ZERO.as_uuid(), None);
    assert_eq!(ConnectionId::ZERO.as_bytes(), &[0u8; 37]);
    // The id must end with the NUL.
    let mut bytes = *id.as_bytes();
    bytes[36] = b'x';
    assert_eq!(ConnectionId::from_wire(bytes).as_uuid(), None);
}

#[test]
fn stream_id_rule() {
    assert!(StreamId::new("a").is_some());
    assert!(StreamId::new("!~").is_some());
    assert!(StreamId::new("x".repeat(64)).is_some());
    assert!(StreamId::new("x".repeat(65)).is_none());
    assert!(StreamId::new("").is_none());
    assert!(StreamId::new("a b").is_none());
    assert!(StreamId::new("é").is_none());
    assert!(StreamId::from_bytes(&[0x21, 0x7e]).is_some());
    assert!(StreamId::from_bytes(&[0x20]).is_none());
    assert!(StreamId::from_bytes(&[0x7f]).is_none());
    assert!(MediaToken::new(vec![0u8; 128]).is_some());
    assert!(MediaToken::new(vec![0u8; 129]).is_none());
    assert!(MediaToken::new(Vec::new()).is_none());
}

#[test]
fn start_ack_exact_bytes() {
    let bytes = encode_start_ack(&id(), &sid("synthetic"));
    let mut expected = vec![0x01, 0x01];
    expected.extend_from_slice(&[0; 24]);
    expected.extend_from_slice(&[0x01, 0x01, 0x00, 0x00]);
    expected.extend_from_slice(ID_TEXT.as_bytes());
    expected.push(0);
    expected.extend_from_slice(&[0x01, 0x00, 0x09, 0x00]);
    expected.extend_from_slice(b"synthetic");
    assert_eq!(bytes, expected);
    assert_eq!(bytes.len(), 71 + 9);
    assert_eq!(
        decode_control(&bytes).unwrap(),
        ControlFrame {
            flags: 0x01,
            connection_id: id(),
            body: ControlBody::StartAck {
                stream_id: sid("synthetic")
            },
        }
    );
}

/// The examples of docs/PROTOCOL.md §12.2, byte for byte (the hex there is this test's).
#[test]
fn protocol_md_examples() {
    fn hex(text: &str) -> Vec<u8> {
        text.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }
    let zeros = |n: usize| vec![0u8; n];
    let stream = sid("synthetic");
    let mut start = hex("00 01");
    start.extend(zeros(24));
    start.extend(hex("01 00 00 00"));
    start.extend(zeros(37));
    start.extend(hex("01 00 09 00 73 79 6e 74 68 65 74 69 63 04 00 ac 00"));
    start.extend(zeros(172));
    assert_eq!(encode_start(&stream, None), start);
    assert_eq!(start.len(), 256);

    let doc_id = ConnectionId::parse("1b4e28ba-2fa1-41d2-883f-0016d3cca427").unwrap();
    let mut ack = hex("01 01");
    ack.extend(zeros(24));
    ack.extend(hex("01 01 00 00"));
    ack.extend(hex(
        "31 62 34 65 32 38 62 61 2d 32 66 61 31 2d 34 31 64 32 2d 38 38 33 66 2d 30 30 31 36 \
         64 33 63 63 61 34 32 37 00",
    ));
    ack.extend(hex("01 00 09 00 73 79 6e 74 68 65 74 69 63"));
    assert_eq!(encode_start_ack(&doc_id, &stream), ack);
    assert_eq!(ack.len(), 80);

    let confirm = encode_start_confirm(&doc_id, &stream);
    assert_eq!(confirm.len(), 256);
    assert_eq!(&confirm[..2], &hex("02 01")[..]);
    assert_eq!(
        &confirm[2..67],
        &ack[2..67]
            .iter()
            .enumerate()
            .map(|(i, b)| if i == 25 { 0 } else { *b })
            .collect::<Vec<u8>>()[..]
    );
    assert_eq!(
        &confirm[67..84],
        &hex("01 00 09 00 73 79 6e 74 68 65 74 69 63 04 00 ac 00")[..]
    );

    let mut error = hex("03 01");
    error.extend(zeros(24));
    error.extend(hex("01 00 00 00"));
    error.extend(zeros(37));
    error.extend(hex("03 00 02 00 03 00 01 00 05 00 6f 74 68 65 72"));
    assert_eq!(
        encode_error(
            ErrorCode::UnknownStream,
            &ConnectionId::ZERO,
            Some(&sid("other"))
        ),
        error
    );
    assert_eq!(error.len(), 82);
}

#[test]
fn start_ack_size_rule() {
    for len in [1, 9, 32, 64] {
        let bytes = encode_start_ack(&id(), &sid(&"s".repeat(len)));
        assert_eq!(bytes.len(), 71 + len);
        assert!(bytes.len() <= 135);
    }
}

#[test]
fn start_exact_bytes_and_padding() {
    let bytes = encode_start(&sid("synthetic"), None);
    assert_eq!(bytes.len(), 256);
    assert_eq!(&bytes[..2], &[0x00, 0x01]);
    assert_eq!(&bytes[2..26], &[0; 24]);
    assert_eq!(&bytes[26..30], &[0x01, 0x00, 0x00, 0x00]);
    assert_eq!(&bytes[30..67], &[0; 37]);
    assert_eq!(&bytes[67..71], &[0x01, 0x00, 0x09, 0x00]);
    assert_eq!(&bytes[71..80], b"synthetic");
    // PADDING: type 4, length 256 - 80 - 4 = 172, zeros.
    assert_eq!(&bytes[80..84], &[0x04, 0x00, 172, 0x00]);
    assert!(bytes[84..].iter().all(|&b| b == 0));
    assert_eq!(
        decode_control(&bytes).unwrap().body,
        ControlBody::Start {
            stream_id: sid("synthetic"),
            media_token: None
        }
    );
}

#[test]
fn start_with_token_bytes() {
    let token = MediaToken::new(b"tok".to_vec()).unwrap();
    let bytes = encode_start(&sid("s1"), Some(&token));
    assert_eq!(bytes.len(), 256);
    assert_eq!(
        &bytes[67..80],
        &[0x01, 0x00, 0x02, 0x00, b's', b'1', 0x02, 0x00, 0x03, 0x00, b't', b'o', b'k']
    );
    let frame = decode_control(&bytes).unwrap();
    assert_eq!(frame.connection_id, ConnectionId::ZERO);
    assert_eq!(
        frame.body,
        ControlBody::Start {
            stream_id: sid("s1"),
            media_token: Some(token)
        }
    );
}

#[test]
fn padded_sizes_are_at_least_256() {
    // Every STREAM_ID and token length, including the 253..255 corner where the padding TLV's
    // own header overshoots.
    for sid_len in 1..=64 {
        let stream_id = sid(&"a".repeat(sid_len));
        let confirm = encode_start_confirm(&id(), &stream_id);
        assert!(confirm.len() >= 256 && confirm.len() <= 259, "{sid_len}");
        for token_len in 0..=128 {
            let token = MediaToken::new(vec![b't'; token_len]);
            let start = encode_start(&stream_id, token.as_ref());
            assert!(start.len() >= 256, "{sid_len} {token_len}");
            let reply = encode_start_ack(&id(), &stream_id);
            assert!(reply.len() <= start.len());
            let error = encode_error(ErrorCode::Refused, &id(), Some(&stream_id));
            assert!(error.len() <= 141 && error.len() <= start.len());
            let frame = decode_control(&start).unwrap();
            assert_eq!(frame.body.stream_id(), Some(&stream_id));
        }
    }
}

#[test]
fn start_confirm_bytes() {
    let bytes = encode_start_confirm(&id(), &sid("synthetic"));
    assert_eq!(bytes.len(), 256);
    assert_eq!(&bytes[..2], &[0x02, 0x01]);
    assert_eq!(&bytes[26..30], &[0x01, 0x00, 0x00, 0x00]);
    assert_eq!(&bytes[30..66], ID_TEXT.as_bytes());
    assert_eq!(bytes[66], 0);
    assert_eq!(&bytes[67..71], &[0x01, 0x00, 0x09, 0x00]);
    assert_eq!(&bytes[80..82], &[0x04, 0x00]);
    let frame = decode_control(&bytes).unwrap();
    assert_eq!(frame.connection_id, id());
    assert_eq!(frame.flags, 0);
}

#[test]
fn error_exact_bytes() {
    let bytes = encode_error(ErrorCode::Malformed, &ConnectionId::ZERO, None);
    let mut expected = vec![0x03, 0x01];
    expected.extend_from_slice(&[0; 24]);
    expected.extend_from_slice(&[0x01, 0x00, 0x00, 0x00]);
    expected.extend_from_slice(&[0; 37]);
    expected.extend_from_slice(&[0x03, 0x00, 0x02, 0x00, 0x02, 0x00]);
    assert_eq!(bytes, expected);
    assert_eq!(bytes.len(), 73);

    let bytes = encode_error(ErrorCode::Refused, &id(), Some(&sid("synthetic")));
    assert_eq!(&bytes[67..73], &[0x03, 0x00, 0x02, 0x00, 0x05, 0x00]);
    assert_eq!(&bytes[73..77], &[0x01, 0x00, 0x09, 0x00]);
    assert_eq!(bytes.len(), 73 + 4 + 9);
    assert_eq!(
        decode_control(&bytes).unwrap(),
        ControlFrame {
            flags: 0,
            connection_id: id(),
            body: ControlBody::Error {
                code: 5,
                stream_id: Some(sid("synthetic"))
            },
        }
    );
    // The largest ERROR: 73 + 4 + 64 = 141 bytes.
    assert_eq!(
        encode_error(ErrorCode::BadToken, &id(), Some(&sid(&"z".repeat(64)))).len(),
        141
    );
}

#[test]
fn error_codes_table() {
    let table = [
        (1, "BAD_VERSION", "bad_version"),
        (2, "MALFORMED", "malformed"),
        (3, "UNKNOWN_STREAM", "unknown_stream"),
        (4, "STREAM_MISMATCH", "stream_mismatch"),
        (5, "REFUSED", "refused"),
        (6, "BAD_TOKEN", "bad_token"),
    ];
    for (code, name, label) in table {
        let c = ErrorCode::from_code(code).unwrap();
        assert_eq!((c.code(), c.name(), c.label()), (code, name, label));
    }
    assert_eq!(ErrorCode::from_code(0), None);
    assert_eq!(ErrorCode::from_code(7), None);
    // An unknown code is still read (the initiator prints it).
    let bytes = raw_control(
        FLAG_ERROR,
        0,
        &ConnectionId::ZERO,
        &[3, 0, 2, 0, 0x34, 0x12],
    );
    assert_eq!(
        decode_control(&bytes).unwrap().body,
        ControlBody::Error {
            code: 0x1234,
            stream_id: None
        }
    );
}

#[test]
fn zeroed_header_reserved_and_unknown_flag_bits_are_ignored() {
    let mut bytes = encode_start_ack(&id(), &sid("synthetic"));
    for b in &mut bytes[2..26] {
        *b = 0xaa;
    }
    bytes[28] = 0x55;
    bytes[29] = 0x66;
    bytes[FLAGS_OFFSET] = 0x01 | 0x02 | 0x80;
    let frame = decode_control(&bytes).unwrap();
    assert_eq!(frame.flags, 0x83);
    assert_eq!(frame.connection_id, id());
    assert_eq!(
        frame.body,
        ControlBody::StartAck {
            stream_id: sid("synthetic")
        }
    );
}

#[test]
fn version_is_checked_before_the_tlvs() {
    for version in [0u8, 2, 0xff] {
        let mut bytes = encode_start(&sid("synthetic"), None);
        bytes[VERSION_OFFSET] = version;
        assert_eq!(
            decode_control(&bytes),
            Err(ControlError::BadVersion {
                kind: ControlKind::Start,
                version
            })
        );
        // Garbage TLVs do not change the answer.
        let mut bytes = raw_control(FLAG_START_CONFIRM, 0, &id(), &[0xff; 200]);
        bytes[VERSION_OFFSET] = version;
        let err = decode_control(&bytes).unwrap_err();
        assert_eq!(
            err,
            ControlError::BadVersion {
                kind: ControlKind::StartConfirm,
                version
            }
        );
        assert_eq!(err.error_code(), Some(ErrorCode::BadVersion));
    }
}

#[test]
fn too_short_and_not_control() {
    let bytes = encode_start_ack(&id(), &sid("x"));
    assert_eq!(
        decode_control(&bytes[..66]),
        Err(ControlError::TooShort {
            kind: ControlKind::StartAck,
            len: 66
        })
    );
    assert_eq!(decode_control(&[]), Err(ControlError::NotControl));
    assert_eq!(decode_control(&[0x01]), Err(ControlError::NotControl));
    assert_eq!(decode_control(&[0u8; 300]), Err(ControlError::NotControl));
    let mut legacy = [0u8; 300];
    legacy[1] = 0x10;
    assert_eq!(decode_control(&legacy), Err(ControlError::NotControl));
    assert_eq!(ControlError::NotControl.error_code(), None);
    assert_eq!(ControlKind::Start.min_len(), 256);
    assert_eq!(ControlKind::StartConfirm.min_len(), 256);
    assert_eq!(ControlKind::StartAck.min_len(), 67);
    assert_eq!(ControlKind::Error.min_len(), 67);
}

#[test]
fn every_malformed_case() {
    let z = ConnectionId::ZERO;
    let start = |tlvs: &[u8]| raw_control(FLAG_START, 0, &z, tlvs);
    let sid_tlv = [1u8, 0, 2, 0, b'a', b'b'];

    // No TLV at all, or only padding / unknown ones: no STREAM_ID.
    assert_eq!(malformed(&start(&[])), Malformed::MissingStreamId);
    assert_eq!(
        malformed(&start(&[4, 0, 2, 0, 0, 0, 9, 0, 0, 0])),
        Malformed::MissingStreamId
    );
    // 1..3 trailing bytes.
    for count in 1..=3 {
        let mut tlvs = sid_tlv.to_vec();
        tlvs.extend(std::iter::repeat_n(0u8, count));
        assert_eq!(malformed(&start(&tlvs)), Malformed::TrailingBytes { count });
        assert_eq!(
            malformed(&start(&vec![0; count])),
            Malformed::TrailingBytes { count }
        );
    }
    // A value past the end.
    assert_eq!(
        malformed(&start(&[1, 0, 3, 0, b'a', b'b'])),
        Malformed::Overrun { offset: 67 }
    );
    let mut tlvs = sid_tlv.to_vec();
    tlvs.extend_from_slice(&[4, 0, 0xff, 0xff, 0]);
    assert_eq!(malformed(&start(&tlvs)), Malformed::Overrun { offset: 73 });
    // Invalid stream ids: empty, 65 bytes, a space, DEL, a NUL.
    assert_eq!(malformed(&start(&[1, 0, 0, 0])), Malformed::InvalidStreamId);
    let mut long = vec![1u8, 0, 65, 0];
    long.extend_from_slice(&[b'a'; 65]);
    assert_eq!(malformed(&start(&long)), Malformed::InvalidStreamId);
    for bad in [0x20u8, 0x7f, 0x00, 0x80] {
        assert_eq!(
            malformed(&start(&[1, 0, 2, 0, b'a', bad])),
            Malformed::InvalidStreamId
        );
    }
    // STREAM_ID twice (even the same value).
    let mut twice = sid_tlv.to_vec();
    twice.extend_from_slice(&sid_tlv);
    assert_eq!(malformed(&start(&twice)), Malformed::DuplicateStreamId);
    // MEDIA_TOKEN empty, too long, twice.
    let mut tlvs = sid_tlv.to_vec();
    tlvs.extend_from_slice(&[2, 0, 0, 0]);
    assert_eq!(malformed(&start(&tlvs)), Malformed::InvalidMediaToken);
    let mut tlvs = sid_tlv.to_vec();
    tlvs.extend_from_slice(&[2, 0, 129, 0]);
    tlvs.extend_from_slice(&[b't'; 129]);
    assert_eq!(malformed(&start(&tlvs)), Malformed::InvalidMediaToken);
    let mut tlvs = sid_tlv.to_vec();
    tlvs.extend_from_slice(&[2, 0, 1, 0, b't', 2, 0, 1, 0, b'u']);
    assert_eq!(malformed(&start(&tlvs)), Malformed::DuplicateMediaToken);

    // START_ACK and START_CONFIRM need a STREAM_ID too.
    for flag in [FLAG_START_ACK, FLAG_START_CONFIRM] {
        assert_eq!(
            malformed(&raw_control(flag, 0, &id(), &[4, 0, 0, 0])),
            Malformed::MissingStreamId
        );
    }

    // ERROR: ERROR_CODE must come first, with length 2, once.
    let error = |tlvs: &[u8]| raw_control(FLAG_ERROR, 0, &z, tlvs);
    assert_eq!(malformed(&error(&[])), Malformed::MissingErrorCode);
    assert_eq!(
        malformed(&error(&[1, 0, 1, 0, b'a', 3, 0, 2, 0, 1, 0])),
        Malformed::MissingErrorCode
    );
    assert_eq!(
        malformed(&error(&[4, 0, 0, 0, 3, 0, 2, 0, 1, 0])),
        Malformed::MissingErrorCode
    );
    assert_eq!(
        malformed(&error(&[3, 0, 1, 0, 1])),
        Malformed::BadErrorCodeLength { length: 1 }
    );
    assert_eq!(
        malformed(&error(&[3, 0, 3, 0, 1, 0, 0])),
        Malformed::BadErrorCodeLength { length: 3 }
    );
    assert_eq!(
        malformed(&error(&[3, 0, 2, 0, 1, 0, 3, 0, 2, 0, 2, 0])),
        Malformed::DuplicateErrorCode
    );
    assert_eq!(
        malformed(&error(&[3, 0, 2, 0, 1, 0, 1, 0, 0, 0])),
        Malformed::InvalidStreamId
    );
}

#[test]
fn malformed_reports_kind_id_and_stream_id_seen() {
    let tlvs = [1u8, 0, 2, 0, b'a', b'b', 0xaa];
    let bytes = raw_control(FLAG_START_CONFIRM, 0, &id(), &tlvs);
    let err = decode_control(&bytes).unwrap_err();
    assert_eq!(
        err,
        ControlError::Malformed {
            kind: ControlKind::StartConfirm,
            connection_id: id(),
            stream_id: Some(sid("ab")),
            reason: Malformed::TrailingBytes { count: 1 },
        }
    );
    assert_eq!(err.error_code(), Some(ErrorCode::Malformed));
}

#[test]
fn unknown_types_padding_and_misplaced_tlvs_are_skipped() {
    // Unknown type 0x7777, PADDING, an ERROR_CODE in a START, a MEDIA_TOKEN (even empty) in a
    // START_CONFIRM: all skipped.
    let tlvs = [
        0x77, 0x77, 3, 0, 1, 2, 3, // unknown
        4, 0, 0, 0, // empty padding
        3, 0, 1, 0, 9, // ERROR_CODE out of place
        1, 0, 1, 0, b'q', // STREAM_ID
        2, 0, 0, 0, // MEDIA_TOKEN out of place
    ];
    let frame = decode_control(&raw_control(FLAG_START_CONFIRM, 0, &id(), &tlvs)).unwrap();
    assert_eq!(
        frame.body,
        ControlBody::StartConfirm {
            stream_id: sid("q")
        }
    );
    let frame = decode_control(&raw_control(FLAG_START, 0, &id(), &tlvs[..21])).unwrap();
    assert_eq!(
        frame.body,
        ControlBody::Start {
            stream_id: sid("q"),
            media_token: None
        }
    );
}

// §5 ------------------------------------------------------------------------------------------

#[test]
fn data_header_exact_bytes() {
    let header = DataHeader {
        sequence: 1,
        timestamp: 0x0102_0304_0506_0708,
        frequency: FREQUENCY,
    };
    let bytes = encode_data(&header, 0, 30);
    assert_eq!(
        bytes,
        [
            0x00, 0x00, // flag
            0x01, 0, 0, 0, 0, 0, 0, 0, // sequence
            0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // timestamp
            0x00, 0xca, 0x9a, 0x3b, 0, 0, 0, 0, // 1e9
            0, 1, 2, 3, // pattern
        ]
    );
    let data = decode_data(&bytes).unwrap();
    assert_eq!(data.header, header);
    assert_eq!(data.payload, &[0, 1, 2, 3]);
    assert_eq!(data.len(), 30);
    assert!(data.pattern_ok(0));
    assert!(!data.pattern_ok(1));
    assert_eq!(classify(&bytes), DatagramKind::Data);
}

#[test]
fn data_pattern_wraps_and_offsets() {
    let header = DataHeader {
        sequence: 7,
        timestamp: 0,
        frequency: FREQUENCY,
    };
    let bytes = encode_data(&header, 974, 30);
    assert_eq!(&bytes[26..], &[0xce, 0xcf, 0xd0, 0xd1]);
    let bytes = encode_data(&header, 254, 29);
    assert_eq!(&bytes[26..], &[0xfe, 0xff, 0x00]);
    let mut corrupt = bytes.clone();
    corrupt[27] ^= 1;
    assert!(!decode_data(&corrupt).unwrap().pattern_ok(254));
}

#[test]
fn data_decode_errors() {
    assert_eq!(decode_data(&[0; 25]), Err(DataError::TooShort { len: 25 }));
    let mut bytes = [0u8; 26];
    bytes[1] = 1;
    assert_eq!(
        decode_data(&bytes),
        Err(DataError::NotData { flag: 0x0100 })
    );
    assert!(decode_data(&[0u8; 26]).unwrap().payload.is_empty());
}

#[test]
fn frame_size_and_params() {
    assert_eq!(frame_size(808_000, 50), 2020);
    assert_eq!(frame_size(400_000, 50), 1000);
    assert_eq!(frame_size(800, 50), 2);
    assert_eq!(frame_size(807_999, 50), 2019);
    assert_eq!(frame_size(1000, 0), 0);
    assert!(StreamParams::new(808_000, 50, 1000).is_ok());
    assert_eq!(
        StreamParams::new(800, 50, 1400),
        Err(ParamsError::FrameTooSmall { frame_size: 2 })
    );
    assert_eq!(
        StreamParams::new(15_999, 50, 1400),
        Err(ParamsError::FrameTooSmall { frame_size: 39 })
    );
    assert!(StreamParams::new(16_000, 50, 1400).is_ok());
    assert_eq!(
        StreamParams::new(1_000_000, 0, 1400),
        Err(ParamsError::ZeroFps)
    );
    assert_eq!(
        StreamParams::new(808_000, 50, 63),
        Err(ParamsError::DatagramSize { datagram_size: 63 })
    );
    assert_eq!(
        StreamParams::new(808_000, 50, 65508),
        Err(ParamsError::DatagramSize {
            datagram_size: 65508
        })
    );
    assert!(StreamParams::new(808_000, 50, 64).is_ok());
    assert!(StreamParams::new(808_000, 50, 65507).is_ok());
}

#[test]
fn fragmentation_example() {
    let params = StreamParams::new(808_000, 50, 1000).unwrap();
    assert_eq!(
        params.fragments().collect::<Vec<_>>(),
        [
            Fragment {
                size: 1000,
                payload_offset: 0
            },
            Fragment {
                size: 993,
                payload_offset: 974
            },
            Fragment {
                size: 27,
                payload_offset: 974 + 967
            },
        ]
    );
    assert_eq!(params.frame_payload_len(), 2020 - 3 * 26);
    // A frame that fits: one datagram.
    let params = StreamParams::new(400_000, 50, 1400).unwrap();
    assert_eq!(
        params.fragments().collect::<Vec<_>>(),
        [Fragment {
            size: 1000,
            payload_offset: 0
        }]
    );
    // Exactly D + 27: no shortening.
    let params = StreamParams::new((1000 + 27) * 8 * 10, 10, 1000).unwrap();
    let sizes: Vec<_> = params.fragments().map(|f| f.size).collect();
    assert_eq!(sizes, [1000, 27]);
    let params = StreamParams::new((1000 + 26) * 8 * 10, 10, 1000).unwrap();
    let sizes: Vec<_> = params.fragments().map(|f| f.size).collect();
    assert_eq!(sizes, [999, 27]);
}

// §6 ------------------------------------------------------------------------------------------

#[test]
fn legacy_start_and_id() {
    assert!(is_legacy_start(&[0x53, 0x54, 0x41, 0x52, 0x54]));
    assert!(!is_legacy_start(b"STARTX"));
    let bytes = encode_legacy_id(&id());
    assert_eq!(bytes.len(), 39);
    assert_eq!(&bytes[..2], &[0x00, 0x10]);
    assert_eq!(&bytes[2..38], ID_TEXT.as_bytes());
    assert_eq!(bytes[38], 0);
    assert_eq!(classify(&bytes), DatagramKind::LegacyId);
    assert_eq!(decode_legacy_id(&bytes), Some(id()));
    assert_eq!(decode_legacy_id(&bytes[..38]), None);
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert_eq!(decode_legacy_id(&longer), None);
    let mut other = bytes;
    other[1] = 0x11;
    assert_eq!(decode_legacy_id(&other), None);
}

// Properties ----------------------------------------------------------------------------------

fn stream_ids() -> impl Strategy<Value = StreamId> {
    proptest::collection::vec(0x21u8..=0x7e, 1..=64)
        .prop_map(|bytes| StreamId::from_bytes(&bytes).unwrap())
}

fn tokens() -> impl Strategy<Value = MediaToken> {
    proptest::collection::vec(any::<u8>(), 1..=128).prop_map(|b| MediaToken::new(b).unwrap())
}

fn ids() -> impl Strategy<Value = ConnectionId> {
    prop_oneof![
        Just(ConnectionId::ZERO),
        any::<[u8; 16]>().prop_map(ConnectionId::from_random),
        proptest::collection::vec(any::<u8>(), 37).prop_map(|v| {
            let mut b = [0u8; 37];
            b.copy_from_slice(&v);
            ConnectionId::from_wire(b)
        }),
    ]
}

fn bodies() -> impl Strategy<Value = ControlBody> {
    prop_oneof![
        (stream_ids(), proptest::option::of(tokens())).prop_map(|(stream_id, media_token)| {
            ControlBody::Start {
                stream_id,
                media_token,
            }
        }),
        stream_ids().prop_map(|stream_id| ControlBody::StartAck { stream_id }),
        stream_ids().prop_map(|stream_id| ControlBody::StartConfirm { stream_id }),
        (any::<u16>(), proptest::option::of(stream_ids()))
            .prop_map(|(code, stream_id)| ControlBody::Error { code, stream_id }),
    ]
}

fn frames() -> impl Strategy<Value = ControlFrame> {
    (any::<u8>(), ids(), bodies()).prop_map(|(flags, connection_id, body)| ControlFrame {
        flags,
        connection_id,
        body,
    })
}

proptest! {
    #[test]
    fn control_round_trip(frame in frames()) {
        let bytes = frame.encode();
        prop_assert!(bytes.len() >= frame.kind().min_len());
        prop_assert_eq!(classify(&bytes), DatagramKind::Control(frame.kind()));
        prop_assert_eq!(decode_control(&bytes), Ok(frame));
    }

    #[test]
    fn builders_round_trip(
        stream_id in stream_ids(),
        token in proptest::option::of(tokens()),
        random in any::<[u8; 16]>(),
        code in 0usize..6,
    ) {
        let id = ConnectionId::from_random(random);
        prop_assert!(id.as_uuid().is_some());
        prop_assert_eq!(ConnectionId::parse(id.as_uuid().unwrap()), Some(id));
        let start = encode_start(&stream_id, token.as_ref());
        prop_assert!(start.len() >= 256);
        let ack = encode_start_ack(&id, &stream_id);
        prop_assert_eq!(ack.len(), 71 + stream_id.as_str().len());
        prop_assert!(ack.len() <= start.len() && ack.len() <= 135);
        prop_assert_eq!(decode_control(&ack).unwrap().flags, FLAG_ACCEPTED);
        let confirm = encode_start_confirm(&id, &stream_id);
        prop_assert!(confirm.len() >= 256);
        let decoded = decode_control(&confirm).unwrap();
        prop_assert_eq!(decoded.connection_id, id);
        prop_assert_eq!(decoded.body, ControlBody::StartConfirm { stream_id: stream_id.clone() });
        let code = ErrorCode::ALL[code];
        let error = encode_error(code, &id, Some(&stream_id));
        prop_assert!(error.len() <= 141 && error.len() <= start.len());
        prop_assert_eq!(&error[67..73], &[3, 0, 2, 0, code.code() as u8, 0][..]);
        prop_assert_eq!(
            decode_control(&error).unwrap().body,
            ControlBody::Error { code: code.code(), stream_id: Some(stream_id) }
        );
        let legacy = encode_legacy_id(&id);
        prop_assert_eq!(decode_legacy_id(&legacy), Some(id));
    }

    #[test]
    fn data_round_trip(
        sequence in any::<i64>(),
        timestamp in any::<i64>(),
        frequency in any::<i64>(),
        payload_offset in 0usize..100_000,
        size in 26usize..2000,
    ) {
        let header = DataHeader { sequence, timestamp, frequency };
        let bytes = encode_data(&header, payload_offset, size);
        prop_assert_eq!(bytes.len(), size);
        prop_assert_eq!(classify(&bytes), DatagramKind::Data);
        let data = decode_data(&bytes).unwrap();
        prop_assert_eq!(data.header, header);
        prop_assert_eq!(data.len(), size);
        prop_assert!(data.pattern_ok(payload_offset));
    }

    #[test]
    fn fragments_reassemble(
        bitrate in 16_000u64..20_000_000,
        fps in 1u32..200,
        datagram_size in 64usize..3000,
        sequence in 1i64..1_000_000,
    ) {
        let Ok(params) = StreamParams::new(bitrate, fps, datagram_size) else {
            prop_assert!(frame_size(bitrate, fps) < 40);
            return Ok(());
        };
        let fragments: Vec<_> = params.fragments().collect();
        let total: usize = fragments.iter().map(|f| f.size).sum();
        prop_assert_eq!(total, params.frame_size());
        prop_assert_eq!(params.frame_size() as u64, bitrate / 8 / u64::from(fps));
        let mut payload = Vec::new();
        for (i, fragment) in fragments.iter().enumerate() {
            prop_assert!(fragment.size <= datagram_size);
            prop_assert!(fragment.size >= MIN_LAST_FRAGMENT);
            prop_assert_eq!(fragment.payload_offset, payload.len());
            if i + 1 < fragments.len() {
                // Only the last may be short of D, unless shortened to leave 27 for it.
                let rest: usize = fragments[i + 1..].iter().map(|f| f.size).sum();
                prop_assert!(fragment.size == datagram_size || rest == MIN_LAST_FRAGMENT);
            }
            let header = DataHeader { sequence, timestamp: i as i64, frequency: FREQUENCY };
            let bytes = encode_data(&header, fragment.payload_offset, fragment.size);
            let data = decode_data(&bytes).unwrap();
            prop_assert_eq!(data.header, header);
            prop_assert!(data.pattern_ok(fragment.payload_offset));
            payload.extend_from_slice(data.payload);
        }
        prop_assert!(fragments.last().unwrap().size >= MIN_LAST_FRAGMENT);
        prop_assert_eq!(payload.len(), params.frame_payload_len());
        prop_assert!(payload.iter().enumerate().all(|(i, &b)| b == (i & 0xff) as u8));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let kind = classify(&bytes);
        let _ = decode_data(&bytes);
        let _ = decode_legacy_id(&bytes);
        match decode_control(&bytes) {
            Ok(frame) => {
                prop_assert_eq!(kind, DatagramKind::Control(frame.kind()));
                // Re-encoding a decoded frame gives a frame that decodes the same.
                prop_assert_eq!(decode_control(&frame.encode()), Ok(frame));
            }
            Err(ControlError::NotControl) => {
                prop_assert!(!matches!(kind, DatagramKind::Control(_)) || bytes.len() < 2);
            }
            Err(_) => {}
        }
    }

    #[test]
    fn control_frames_with_noise_never_panic(
        flag in prop_oneof![Just(FLAG_START), Just(FLAG_START_ACK), Just(FLAG_START_CONFIRM), Just(FLAG_ERROR)],
        tail in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        // A valid fixed part so the TLV walk is reached.
        let bytes = raw_control(flag, 0, &ConnectionId::ZERO, &tail);
        match decode_control(&bytes) {
            Ok(frame) => prop_assert_eq!(decode_control(&frame.encode()), Ok(frame)),
            Err(err) => prop_assert!(matches!(err, ControlError::Malformed { .. }), "{:?}", err),
        }
    }
}
