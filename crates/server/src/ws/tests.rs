//! The framing rules, byte by byte, and the stream over an in-memory socket.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn next<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WsStream<S>,
) -> Option<Result<WsMessage, WsError>> {
    std::future::poll_fn(|cx| ws.poll_next(cx)).await
}

/// A client frame: masked with `mask`.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 65535 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    out
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
    assert_eq!(code(&[0x81, 0x02, b'h', b'i']), 1002, "unmasked");
    let mut rsv = frame(true, OP_TEXT, b"x");
    rsv[0] |= 0x40;
    assert_eq!(code(&rsv), 1002, "reserved bit");
    assert_eq!(code(&frame(true, 3, b"x")), 1002, "unknown opcode");
    assert_eq!(
        code(&frame(false, OP_PING, b"x")),
        1002,
        "fragmented control frame"
    );
    assert_eq!(
        code(&frame(true, OP_PING, &[0; 126])),
        1002,
        "long control frame"
    );
    assert_eq!(
        code(&frame(true, OP_CONTINUATION, b"x")),
        1002,
        "stray continuation"
    );
    let mut nested = frame(false, OP_TEXT, b"a");
    nested.extend(frame(true, OP_TEXT, b"b"));
    assert_eq!(code(&nested), 1002, "new message inside a fragmented one");
    assert_eq!(
        code(&frame(true, OP_TEXT, &[0xff, 0xfe])),
        1007,
        "invalid UTF-8"
    );
    assert_eq!(
        code(&frame(true, OP_TEXT, &[b'x'; 1025])),
        1009,
        "one frame too big"
    );
    let mut split_big = frame(false, OP_TEXT, &[b'x'; 600]);
    split_big.extend(frame(true, OP_CONTINUATION, &[b'x'; 600]));
    assert_eq!(code(&split_big), 1009, "fragments together too big");
    assert_eq!(
        code(&frame(true, OP_CLOSE, &[3])),
        1002,
        "one-byte close payload"
    );
    assert_eq!(
        code(&frame(true, OP_CLOSE, &1005u16.to_be_bytes())),
        1002,
        "reserved close code"
    );
    let mut bad_reason = 1000u16.to_be_bytes().to_vec();
    bad_reason.push(0xff);
    assert_eq!(
        code(&frame(true, OP_CLOSE, &bad_reason)),
        1007,
        "close reason not UTF-8"
    );
    let mut non_minimal = vec![0x81, 0x80 | 126, 0, 5];
    non_minimal.extend([0, 0, 0, 0, 1, 2, 3, 4, 5]);
    assert_eq!(code(&non_minimal), 1002, "non-minimal length");
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
        Some(Err(WsError::Violation(Violation { code: 1002, .. })))
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
        Err(WsError::Violation(Violation { code: 1009, .. }))
    ));
    assert!(std::future::poll_fn(|cx| ws.poll_next(cx)).await.is_none());
    let mut head = [0u8; 4];
    client.read_exact(&mut head).await.unwrap();
    assert_eq!(&head[..2], &[0x88, 2 + "message too big".len() as u8]);
    assert_eq!(u16::from_be_bytes([head[2], head[3]]), 1009);
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
}
