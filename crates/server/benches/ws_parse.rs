//! What parsing one masked 16 KiB text frame costs: [`FrameParser::feed`] on the whole frame
//! and on the frame split as two socket reads, [`WsStream`] over an in-memory socket, and
//! `tokio-websockets` decoding the very same bytes over the same in-memory socket.
//!
//! Run with `cargo bench -p loudsync-server --bench ws_parse`.

use std::collections::VecDeque;
use std::hint::black_box;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_util::Stream;
use loudsync_server::ws::{FrameParser, WsMessage, WsStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Payload bytes of the measured frame.
const PAYLOAD: usize = 16 * 1024;

/// A masked client text frame carrying `payload`.
fn client_frame(payload: &[u8]) -> Vec<u8> {
    loudsync_server::ws::masked_client_frame(true, 1, payload, [0x37, 0xfa, 0x21, 0x3d])
}

/// 16 KiB of JSON-like text, mostly ASCII with a few multi-byte characters.
fn text_payload() -> Vec<u8> {
    let unit =
        "{\"type\":\"message\",\"data\":{\"track\":\"Blue in Green – Miles\",\"position\":42.5}},";
    let mut s = String::new();
    while s.len() + unit.len() <= PAYLOAD {
        s.push_str(unit);
    }
    while s.len() < PAYLOAD {
        s.push(' ');
    }
    s.into_bytes()
}

/// A socket whose reads return `frame` over and over (a read stops at the end of a frame),
/// and whose writes vanish.
struct Replay {
    frame: Vec<u8>,
    at: usize,
}

impl AsyncRead for Replay {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = buf.remaining().min(self.frame.len() - self.at);
        let at = self.at;
        // In pieces below glibc's `rep movsb` threshold: one `memcpy` of many KiB is many
        // times slower when source and destination are 8 or 16 bytes apart modulo 4096, which
        // would make the rows depend on where the allocator put the buffers (a real socket is
        // filled by the kernel).
        for piece in self.frame[at..at + n].chunks(2048) {
            buf.put_slice(piece);
        }
        self.at = (at + n) % self.frame.len();
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn parse(c: &mut Criterion) {
    let payload = text_payload();
    let frame = client_frame(&payload);
    let mut group = c.benchmark_group("ws_parse_16KiB_text");
    group.throughput(Throughput::Bytes(PAYLOAD as u64));

    group.bench_function("FrameParser::feed, one read", |b| {
        let mut parser = FrameParser::new(64 * 1024);
        let mut out = VecDeque::new();
        b.iter(|| {
            parser.feed(black_box(&frame), &mut out).unwrap();
            black_box(out.pop_front().unwrap())
        });
    });

    group.bench_function("FrameParser::feed, two reads (16 KiB + rest)", |b| {
        let mut parser = FrameParser::new(64 * 1024);
        let mut out = VecDeque::new();
        let (first, rest) = frame.split_at(16 * 1024);
        b.iter(|| {
            parser.feed(black_box(first), &mut out).unwrap();
            parser.feed(black_box(rest), &mut out).unwrap();
            black_box(out.pop_front().unwrap())
        });
    });

    let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());

    group.bench_function("WsStream::poll_next, in-memory socket", |b| {
        let io = Replay {
            frame: frame.clone(),
            at: 0,
        };
        let mut ws = WsStream::new(io, 64 * 1024);
        b.iter(|| match ws.poll_next(&mut cx) {
            Poll::Ready(Some(Ok(WsMessage::Text(t)))) => black_box(t),
            other => panic!("unexpected {other:?}"),
        });
    });

    group.bench_function("tokio-websockets WebSocketStream, in-memory socket", |b| {
        let io = Replay {
            frame: frame.clone(),
            at: 0,
        };
        let mut ws = tokio_websockets::ServerBuilder::new().serve(io);
        b.iter(|| match Pin::new(&mut ws).poll_next(&mut cx) {
            Poll::Ready(Some(Ok(m))) if m.is_text() => black_box(m),
            other => panic!("unexpected {other:?}"),
        });
    });
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
