//! Fuzz target `media_frames`: every parser of the UDP media wire (issue 13,
//! [`loudsync_protocol::media`]) on one datagram as a peer sends it: [`classify`],
//! [`decode_control`], [`decode_data`], [`decode_legacy_id`].
//!
//! Beyond "no panic": the classification agrees with the decoders; a control frame that
//! decodes is written back by `encode` into one that decodes the same, no shorter than its
//! kind's minimum (START_ACK exactly 71 + len(stream id)); a decode error is the one the
//! validation order (D12) says for these bytes (bad version only when byte 26 is not 1, and
//! before any TLV); a DATA datagram's header is written back byte for byte; a LEGACY_ID is
//! written back exactly. The first bytes also drive the fragmentation rule (D24): fragments
//! add up to the frame, each within 27..=D, in ceil(F / D) datagrams.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loudsync_protocol::media::{
    classify, decode_control, decode_data, decode_legacy_id, encode_legacy_id, ControlError,
    ControlKind, DatagramKind, StreamParams, CONTROL_FIXED_LEN, DATA_HEADER_LEN, MIN_LAST_FRAGMENT,
    VERSION, VERSION_OFFSET,
};

fuzz_target!(|data: &[u8]| {
    let kind = classify(data);
    match decode_control(data) {
        Ok(frame) => {
            assert_eq!(kind, DatagramKind::Control(frame.kind()));
            assert_eq!(data[VERSION_OFFSET], VERSION);
            let written = frame.encode();
            assert!(written.len() >= frame.kind().min_len());
            if frame.kind() == ControlKind::StartAck {
                let stream_id = frame.body.stream_id().expect("START_ACK has a stream id");
                assert_eq!(written.len(), 71 + stream_id.as_str().len());
            }
            assert_eq!(decode_control(&written).as_ref(), Ok(&frame), "{data:?}");
        }
        Err(ControlError::NotControl) => {
            assert!(!matches!(kind, DatagramKind::Control(_)));
        }
        Err(ControlError::TooShort { len, .. }) => {
            assert!(len < CONTROL_FIXED_LEN && len == data.len());
        }
        Err(ControlError::BadVersion { version, .. }) => {
            assert!(data.len() >= CONTROL_FIXED_LEN && version != VERSION);
            assert_eq!(data[VERSION_OFFSET], version);
        }
        Err(ControlError::Malformed { .. }) => {
            assert!(data.len() >= CONTROL_FIXED_LEN && data[VERSION_OFFSET] == VERSION);
        }
    }
    if let Ok(datagram) = decode_data(data) {
        assert_eq!(kind, DatagramKind::Data);
        assert_eq!(datagram.len(), data.len());
        let mut copy = data.to_vec();
        copy[..DATA_HEADER_LEN].fill(0xaa);
        datagram.header.write(&mut copy);
        assert_eq!(copy, data);
    } else {
        assert_ne!(kind, DatagramKind::Data);
    }
    if let Some(id) = decode_legacy_id(data) {
        assert_eq!(kind, DatagramKind::LegacyId);
        assert_eq!(&encode_legacy_id(&id)[..], data);
    }

    // Fragmentation, from the first 6 bytes: a 24-bit bitrate, fps, a 16-bit datagram size.
    if let [b0, b1, b2, fps, d0, d1, ..] = *data {
        let bitrate = u64::from(u32::from_le_bytes([b0, b1, b2, 0]));
        let datagram_size = usize::from(u16::from_le_bytes([d0, d1]));
        if let Ok(params) = StreamParams::new(bitrate, u32::from(fps), datagram_size) {
            let mut total = 0;
            let mut payload = 0;
            let mut count = 0;
            for fragment in params.fragments() {
                assert!((MIN_LAST_FRAGMENT..=datagram_size).contains(&fragment.size));
                assert_eq!(fragment.payload_offset, payload);
                payload += fragment.size - DATA_HEADER_LEN;
                total += fragment.size;
                count += 1;
            }
            assert_eq!(total, params.frame_size());
            assert_eq!(payload, params.frame_payload_len());
            assert_eq!(count, params.frame_size().div_ceil(datagram_size));
        }
    }
});
