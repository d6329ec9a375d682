//! The framing rules, byte by byte, and the stream over an in-memory socket.

use super::*;
use loudsync_protocol::close_code::{INVALID_PAYLOAD, MESSAGE_TOO_BIG, PROTOCOL_ERROR};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn next<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WsStream<S>,
) -> Option<Result<WsMessage, WsError>> {
    std::future::poll_fn(|cx| ws.poll_next(cx)).await
}

/// A client frame, masked with a fixed mask.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    masked_frame(fin, opcode, payload, [0x12, 0x34, 0x56, 0x78])
}

/// A client frame masked with `mask`.
fn masked_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    masked_client_frame(fin, opcode, payload, mask)
}

fn parse_all(bytes: &[u8]) -> Result<Vec<WsMessage>, Violation> {
    let mut p = FrameParser::new(1024);
    let mut out = VecDeque::new();
    p.feed(bytes, &mut out)?;
    Ok(out.into_iter().collect())
}

fn code(bytes: &[u8]) -> u16 {
    parse_all(bytes).unwrap_err().code
}

#[test]
fn a_text_frame_whole_or_split_at_every_byte() {
    let f = frame(true, OP_TEXT, b"{\"type\":\"ping\"}");
    assert_eq!(
        parse_all(&f).unwrap(),
        vec![WsMessage::Text("{\"type\":\"ping\"}".into())]
    );
    for cut in 1..f.len() {
        let mut p = FrameParser::new(1024);
        let mut out = VecDeque::new();
        p.feed(&f[..cut], &mut out).unwrap();
        assert!(out.is_empty());
        assert!(p.held_bytes() > 0);
        p.feed(&f[cut..], &mut out).unwrap();
        assert_eq!(out.len(), 1, "cut at {cut}");
        assert_eq!(p.held_bytes(), 0, "nothing held once complete");
    }
}

#[test]
fn several_frames_in_one_read_and_fragmented_messages() {
    let mut bytes = frame(false, OP_TEXT, b"hel");
    bytes.extend(frame(true, OP_PING, b"p"));
    bytes.extend(frame(false, OP_CONTINUATION, b"lo "));
    bytes.extend(frame(true, OP_CONTINUATION, b"world"));
    bytes.extend(frame(true, OP_BINARY, &[1, 2]));
    assert_eq!(
        parse_all(&bytes).unwrap(),
        vec![
            WsMessage::Ping(b"p".to_vec()),
            WsMessage::Text("hello world".into()),
            WsMessage::Binary(vec![1, 2])
        ]
    );
}

#[test]
fn lengths_of_16_and_64_bits() {
    let mut p = FrameParser::new(100_000);
    let mut out = VecDeque::new();
    let big = "x".repeat(70_000);
    p.feed(&frame(true, OP_TEXT, "y".repeat(300).as_bytes()), &mut out)
        .unwrap();
    p.feed(&frame(true, OP_TEXT, big.as_bytes()), &mut out)
        .unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[1], WsMessage::Text(big));
}

#[test]
fn violations_and_their_codes() {
    assert_eq!(code(&[0x81, 0x02, b'h', b'i']), PROTOCOL_ERROR, "unmasked");
    let mut rsv = frame(true, OP_TEXT, b"x");
    rsv[0] |= 0x40;
    assert_eq!(code(&rsv), PROTOCOL_ERROR, "reserved bit");
    assert_eq!(
        code(&frame(true, 3, b"x")),
        PROTOCOL_ERROR,
        "unknown opcode"
    );
    assert_eq!(
        code(&frame(false, OP_PING, b"x")),
        PROTOCOL_ERROR,
        "fragmented control frame"
    );
    assert_eq!(
        code(&frame(true, OP_PING, &[0; 126])),
        PROTOCOL_ERROR,
        "long control frame"
    );
    assert_eq!(
        code(&frame(true, OP_CONTINUATION, b"x")),
        PROTOCOL_ERROR,
        "stray continuation"
    );
    let mut nested = frame(false, OP_TEXT, b"a");
    nested.extend(frame(true, OP_TEXT, b"b"));
    assert_eq!(
        code(&nested),
        PROTOCOL_ERROR,
        "new message inside a fragmented one"
    );
    assert_eq!(
        code(&frame(true, OP_TEXT, &[0xff, 0xfe])),
        INVALID_PAYLOAD,
        "invalid UTF-8"
    );
    assert_eq!(
        code(&frame(true, OP_TEXT, &[b'x'; 1025])),
        MESSAGE_TOO_BIG,
        "one frame too big"
    );
    let mut split_big = frame(false, OP_TEXT, &[b'x'; 600]);
    split_big.extend(frame(true, OP_CONTINUATION, &[b'x'; 600]));
    assert_eq!(
        code(&split_big),
        MESSAGE_TOO_BIG,
        "fragments together too big"
    );
    assert_eq!(
        code(&frame(true, OP_CLOSE, &[3])),
        PROTOCOL_ERROR,
        "one-byte close payload"
    );
    assert_eq!(
        code(&frame(true, OP_CLOSE, &1005u16.to_be_bytes())),
        PROTOCOL_ERROR,
        "reserved close code"
    );
    let mut bad_reason = 1000u16.to_be_bytes().to_vec();
    bad_reason.push(0xff);
    assert_eq!(
        code(&frame(true, OP_CLOSE, &bad_reason)),
        INVALID_PAYLOAD,
        "close reason not UTF-8"
    );
    let mut non_minimal = vec![0x81, 0x80 | 126, 0, 5];
    non_minimal.extend([0, 0, 0, 0, 1, 2, 3, 4, 5]);
    assert_eq!(code(&non_minimal), PROTOCOL_ERROR, "non-minimal length");
}

#[test]
fn close_frames() {
    let mut p = 1000u16.to_be_bytes().to_vec();
    p.extend_from_slice(b"bye");
    assert_eq!(
        parse_all(&frame(true, OP_CLOSE, &p)).unwrap(),
        vec![WsMessage::Close(Some((1000, "bye".into())))]
    );
    assert_eq!(
        parse_all(&frame(true, OP_CLOSE, b"")).unwrap(),
        vec![WsMessage::Close(None)]
    );
}

#[test]
fn server_frames_are_unmasked_with_minimal_lengths() {
    for (len, header) in [
        (0usize, 2usize),
        (125, 2),
        (126, 4),
        (65535, 4),
        (65536, 10),
    ] {
        let mut out = Vec::new();
        encode_frame(&mut out, OP_TEXT, &vec![b'a'; len]);
        assert_eq!(out.len(), header + len, "{len}");
        assert_eq!(out[0], 0x81);
        assert_eq!(out[1] & 0x80, 0, "unmasked");
    }
}

#[tokio::test]
async fn the_stream_answers_pings_echoes_close_and_frees_its_buffers() {
    let (server_io, mut client) = tokio::io::duplex(64 * 1024);
    let mut ws = WsStream::new(server_io, 1024);
    client
        .write_all(&frame(true, OP_PING, b"hi"))
        .await
        .unwrap();
    client
        .write_all(&frame(true, OP_TEXT, b"hello"))
        .await
        .unwrap();
    assert_eq!(
        next(&mut ws).await.unwrap().unwrap(),
        WsMessage::Ping(b"hi".to_vec())
    );
    assert_eq!(
        next(&mut ws).await.unwrap().unwrap(),
        WsMessage::Text("hello".into())
    );
    ws.queue_text(b"{\"type\":\"pong\"}");
    std::future::poll_fn(|cx| ws.poll_flush(cx)).await.unwrap();
    let mut got = vec![0u8; 4 + 17];
    client.read_exact(&mut got).await.unwrap();
    assert_eq!(
        &got[..4],
        &[0x8A, 2, b'h', b'i'],
        "pong with the ping's payload"
    );
    assert_eq!(&got[4..6], &[0x81, 15]);
    assert_eq!(ws.pending_bytes(), 0);
    assert_eq!(ws.parser.held_bytes(), 0);
    // The client closes: the server echoes the code, then the stream ends.
    client
        .write_all(&frame(true, OP_CLOSE, &1000u16.to_be_bytes()))
        .await
        .unwrap();
    assert_eq!(
        next(&mut ws).await.unwrap().unwrap(),
        WsMessage::Close(Some((1000, String::new())))
    );
    assert!(next(&mut ws).await.is_none());
    let mut echo = [0u8; 4];
    client.read_exact(&mut echo).await.unwrap();
    assert_eq!(echo, [0x88, 2, 0x03, 0xE8]);
}

#[tokio::test]
async fn messages_before_a_bad_frame_are_still_delivered() {
    let (server_io, mut client) = tokio::io::duplex(64 * 1024);
    let mut ws = WsStream::new(server_io, 1024);
    let mut bytes = frame(true, OP_TEXT, b"{\"type\":\"leave\"}");
    let mut bad = frame(true, OP_TEXT, b"x");
    bad[0] |= 0x40;
    bytes.extend(bad);
    client.write_all(&bytes).await.unwrap();
    assert_eq!(
        next(&mut ws).await.unwrap().unwrap(),
        WsMessage::Text("{\"type\":\"leave\"}".into())
    );
    assert!(matches!(
        next(&mut ws).await,
        Some(Err(WsError::Violation(Violation {
            code: PROTOCOL_ERROR,
            ..
        })))
    ));
    assert!(next(&mut ws).await.is_none());
}

#[tokio::test]
async fn a_violation_is_answered_with_its_close_code() {
    let (server_io, mut client) = tokio::io::duplex(64 * 1024);
    let mut ws = WsStream::new(server_io, 16);
    client
        .write_all(&frame(true, OP_TEXT, &[b'x'; 40]))
        .await
        .unwrap();
    let r = std::future::poll_fn(|cx| ws.poll_next(cx)).await.unwrap();
    assert!(matches!(
        r,
        Err(WsError::Violation(Violation {
            code: MESSAGE_TOO_BIG,
            ..
        }))
    ));
    assert!(std::future::poll_fn(|cx| ws.poll_next(cx)).await.is_none());
    let mut head = [0u8; 4];
    client.read_exact(&mut head).await.unwrap();
    assert_eq!(&head[..2], &[0x88, 2 + "message too big".len() as u8]);
    assert_eq!(u16::from_be_bytes([head[2], head[3]]), MESSAGE_TOO_BIG);
}

/// Feeds `pieces` one after the other, stopping at the first violation: the messages so far,
/// and the violation with the index of the piece that showed it.
fn feed_pieces(p: &mut FrameParser, pieces: &[&[u8]]) -> (Vec<WsMessage>, Option<(usize, u16)>) {
    let mut out = VecDeque::new();
    for (i, piece) in pieces.iter().enumerate() {
        if let Err(v) = p.feed(piece, &mut out) {
            return (out.into_iter().collect(), Some((i, v.code)));
        }
    }
    (out.into_iter().collect(), None)
}

#[test]
fn invalid_utf8_in_a_first_fragment_fails_before_the_message_completes() {
    // The fragment is complete, the message is not (no final frame yet): 1007 all the same.
    let mut p = FrameParser::new(1024);
    let first = frame(false, OP_TEXT, b"ok \xff so far");
    assert_eq!(
        feed_pieces(&mut p, &[&first]),
        (vec![], Some((0, INVALID_PAYLOAD)))
    );

    // Autobahn 6.4.1: a valid fragment, then one holding U+110000 (out of range), then the
    // rest: failed on the second, the third never needed.
    let mut p = FrameParser::new(1024);
    let valid = frame(false, OP_TEXT, "κόσμε".as_bytes());
    let bad = frame(false, OP_CONTINUATION, &[0xf4, 0x90, 0x80, 0x80]);
    assert_eq!(
        feed_pieces(&mut p, &[&valid, &bad]),
        (vec![], Some((1, INVALID_PAYLOAD)))
    );

    // Autobahn 6.4.2: the bad sequence cut between fragments: its first byte alone is only
    // incomplete, the second byte shows it cannot be valid.
    let mut p = FrameParser::new(1024);
    let mut first = "κόσμε".as_bytes().to_vec();
    first.push(0xf4);
    let (first, second) = (
        frame(false, OP_TEXT, &first),
        frame(false, OP_CONTINUATION, &[0x90]),
    );
    assert_eq!(
        feed_pieces(&mut p, &[&first, &second]),
        (vec![], Some((1, INVALID_PAYLOAD)))
    );

    // A ping between the fragments is still answered before the failure.
    let mut p = FrameParser::new(1024);
    let mut bytes = frame(false, OP_TEXT, b"abc");
    bytes.extend(frame(true, OP_PING, b"p"));
    bytes.extend(frame(false, OP_CONTINUATION, b"\xc0\xaf"));
    assert_eq!(
        feed_pieces(&mut p, &[&bytes]),
        (
            vec![WsMessage::Ping(b"p".to_vec())],
            Some((0, INVALID_PAYLOAD))
        )
    );

    // Binary data is not text: any bytes go.
    let mut p = FrameParser::new(1024);
    let mut bytes = frame(false, OP_BINARY, &[0xff]);
    bytes.extend(frame(true, OP_CONTINUATION, &[0xfe]));
    assert_eq!(
        feed_pieces(&mut p, &[&bytes]),
        (vec![WsMessage::Binary(vec![0xff, 0xfe])], None)
    );
}

#[test]
fn invalid_utf8_in_a_partial_frame_fails_before_the_frame_completes() {
    let mut payload = b"ab".to_vec();
    payload.push(0xff);
    payload.extend_from_slice(&[b'x'; 500]);
    for opcode in [OP_TEXT, OP_CONTINUATION] {
        let mut prefix = Vec::new();
        if opcode == OP_CONTINUATION {
            prefix = frame(false, OP_TEXT, "é".as_bytes());
        }
        let f = frame(true, opcode, &payload);
        let header = f.len() - payload.len(); // 4 for 126..65535 bytes, with the mask
        let bad_at = header + 2; // the 0xff
        for cut in 1..f.len() {
            let mut p = FrameParser::new(1024);
            let (got, failed) = feed_pieces(&mut p, &[&prefix, &f[..cut], &f[cut..]]);
            assert_eq!(got, vec![]);
            let fails_on = if cut > bad_at { 1 } else { 2 };
            assert_eq!(
                failed,
                Some((fails_on, INVALID_PAYLOAD)),
                "opcode {opcode}, cut at {cut}"
            );
        }
    }

    // Autobahn 6.4.3: the bad sequence in the middle of one frame sent in three chunks.
    let mut text = "κόσμε".as_bytes().to_vec();
    let bad_start = text.len();
    text.extend_from_slice(&[0xf4, 0x90, 0x80, 0x80]);
    text.extend_from_slice("edited".as_bytes());
    let f = frame(true, OP_TEXT, &text);
    let header = f.len() - text.len();
    let mut p = FrameParser::new(1024);
    let chunks = [
        &f[..header + bad_start],
        &f[header + bad_start..header + bad_start + 4],
        &f[header + bad_start + 4..],
    ];
    assert_eq!(
        feed_pieces(&mut p, &chunks),
        (vec![], Some((1, INVALID_PAYLOAD)))
    );
}

#[test]
fn a_character_split_across_fragments_and_reads_is_accepted() {
    let text = "aé✓😀z"; // characters of 1, 2, 3, 4 and 1 bytes
    let b = text.as_bytes();
    for at in 0..=b.len() {
        // Two fragments, the first possibly empty, the last possibly empty.
        let mut bytes = frame(false, OP_TEXT, &b[..at]);
        bytes.extend(frame(true, OP_CONTINUATION, &b[at..]));
        for cut in 0..=bytes.len() {
            let mut p = FrameParser::new(1024);
            let (got, failed) = feed_pieces(&mut p, &[&bytes[..cut], &bytes[cut..]]);
            assert_eq!(failed, None, "fragment at {at}, read cut at {cut}");
            assert_eq!(got, vec![WsMessage::Text(text.into())]);
            assert_eq!(p.held_bytes(), 0);
        }
        // One byte a read.
        let mut p = FrameParser::new(1024);
        let pieces: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(
            feed_pieces(&mut p, &pieces),
            (vec![WsMessage::Text(text.into())], None),
            "fragment at {at}, byte by byte"
        );
    }
    // And one frame read in pieces cutting every character.
    let f = frame(true, OP_TEXT, b);
    let mut p = FrameParser::new(1024);
    let pieces: Vec<&[u8]> = f.chunks(1).collect();
    assert_eq!(
        feed_pieces(&mut p, &pieces),
        (vec![WsMessage::Text(text.into())], None)
    );
    // A character left incomplete when the message ends is invalid.
    let mut bytes = frame(false, OP_TEXT, &b[..2]);
    bytes.extend(frame(true, OP_CONTINUATION, b""));
    assert_eq!(code(&bytes), INVALID_PAYLOAD);
}

#[test]
fn while_a_frame_arrives_its_bytes_are_held_and_then_freed() {
    let f = frame(true, OP_BINARY, &[7; 3000]);
    let mut p = FrameParser::new(4096);
    let mut out = VecDeque::new();
    for piece in f.chunks(700) {
        assert!(out.is_empty());
        p.feed(piece, &mut out).unwrap();
        if out.is_empty() {
            assert!(p.held_bytes() > 0);
        }
    }
    assert_eq!(out.pop_front(), Some(WsMessage::Binary(vec![7; 3000])));
    assert_eq!(p.held_bytes(), 0);
}

#[tokio::test]
async fn the_stream_fails_a_partial_text_frame_without_waiting_for_the_rest() {
    let (server_io, mut client) = tokio::io::duplex(64 * 1024);
    let mut ws = WsStream::new(server_io, 1024);
    let f = frame(true, OP_TEXT, &[0xff; 600]);
    // Only the start of the frame is ever sent: waiting for the rest would time out.
    client.write_all(&f[..20]).await.unwrap();
    let failed = tokio::time::timeout(std::time::Duration::from_secs(5), next(&mut ws)).await;
    assert!(matches!(
        failed.expect("failed without the rest of the frame"),
        Some(Err(WsError::Violation(Violation {
            code: INVALID_PAYLOAD,
            ..
        })))
    ));
    assert!(next(&mut ws).await.is_none());
    let mut head = [0u8; 4];
    client.read_exact(&mut head).await.unwrap();
    assert_eq!(head[0], 0x88);
    assert_eq!(u16::from_be_bytes([head[2], head[3]]), INVALID_PAYLOAD);
}

proptest::proptest! {
    /// Whatever bytes arrive, in whatever pieces, the parser never panics.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300), cut in 0usize..300) {
        let mut p = FrameParser::new(256);
        let mut out = VecDeque::new();
        let cut = cut.min(bytes.len());
        if p.feed(&bytes[..cut], &mut out).is_ok() {
            let _ = p.feed(&bytes[cut..], &mut out);
        }
    }

    /// Any sequence of valid text messages, fragmented and split into any pieces, comes out
    /// whole and in order.
    #[test]
    fn valid_messages_survive_any_split(
        messages in proptest::collection::vec("[a-zé✓ ]{0,40}", 1..6),
        pieces in proptest::collection::vec(1usize..20, 1..40),
        fragment_at in 0usize..10,
    ) {
        let mut bytes = Vec::new();
        for m in &messages {
            let b = m.as_bytes();
            let at = fragment_at.min(b.len());
            if at > 0 && at < b.len() {
                bytes.extend(frame(false, OP_TEXT, &b[..at]));
                bytes.extend(frame(true, OP_CONTINUATION, &b[at..]));
            } else {
                bytes.extend(frame(true, OP_TEXT, b));
            }
        }
        let mut p = FrameParser::new(1024);
        let mut out = VecDeque::new();
        let mut rest = &bytes[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = pieces[i % pieces.len()].min(rest.len());
            p.feed(&rest[..n], &mut out).unwrap();
            rest = &rest[n..];
            i += 1;
        }
        let got: Vec<_> = out.into_iter().collect();
        let want: Vec<_> = messages.into_iter().map(WsMessage::Text).collect();
        proptest::prop_assert_eq!(got, want);
        proptest::prop_assert_eq!(p.held_bytes(), 0);
    }

    /// Unmasking in two pieces, cut anywhere, undoes the mask for every payload length from 0
    /// to 40 (five words and every tail, from every mask phase), appended after what a buffer
    /// holds; and so does the parser on a frame read in two pieces cut anywhere.
    #[test]
    fn unmasking_is_right_for_every_length_and_split(
        bytes in proptest::collection::vec(proptest::num::u8::ANY, 40),
        mask in proptest::array::uniform4(proptest::num::u8::ANY),
        held in 0usize..8,
    ) {
        for len in 0..=40 {
            let payload = &bytes[..len];
            let masked: Vec<u8> =
                payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]).collect();
            for cut in 0..=len {
                let mut buf = vec![0xAA; held]; // what the message held before
                unmask_into(&mut buf, &masked[..cut], mask, 0);
                unmask_into(&mut buf, &masked[cut..], mask, cut);
                proptest::prop_assert_eq!(&buf[..held], &vec![0xAA; held][..]);
                proptest::prop_assert_eq!(&buf[held..], payload, "len {}, cut {}", len, cut);
            }
            let f = masked_frame(true, OP_BINARY, payload, mask);
            for cut in 0..=f.len() {
                let mut p = FrameParser::new(1024);
                let (got, failed) = feed_pieces(&mut p, &[&f[..cut], &f[cut..]]);
                proptest::prop_assert_eq!(failed, None);
                let want = vec![WsMessage::Binary(payload.to_vec())];
                proptest::prop_assert_eq!(got, want, "len {}, cut {}", len, cut);
            }
        }
    }
}

#[test]
fn the_seq_prefix_is_the_protocols_for_every_width() {
    for seq in [1, 9, 10, 12345, u64::MAX] {
        let mut buf = [0u8; SEQ_PREFIX_MAX];
        assert_eq!(
            seq_prefix(&mut buf, seq),
            loudsync_protocol::client::seq_prefix(seq).as_bytes()
        );
    }
}
