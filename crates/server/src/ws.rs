//! The server side of RFC 6455 WebSocket framing, holding no buffer while a connection idles.
//!
//! WebSocket libraries keep a fixed read buffer per connection (8 KiB in `tokio-websockets`
//! and `fastwebsockets`), which is most of an idle member's memory. Here, reads go into a
//! per-thread scratch buffer; a connection keeps bytes only for a frame or message that is
//! still incomplete, and frees them once it is complete. Written frames are queued in a
//! buffer that is freed once written. Rules enforced on what clients send: frames masked,
//! reserved bits clear, known opcodes, control frames short and unfragmented, continuation
//! frames only inside a fragmented message, text valid UTF-8, close codes valid, and a message
//! size limit (1009). A violation closes the connection with the matching code.
//!
//! [`FrameParser`] is the sans-IO part (bytes in, messages out); [`WsStream`] drives it over
//! a socket.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A complete message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsMessage {
    /// A text message (valid UTF-8).
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A ping (already answered with a pong).
    Ping(Vec<u8>),
    /// A pong.
    Pong(Vec<u8>),
    /// The client's close frame: code and reason, if it gave them.
    Close(Option<(u16, String)>),
}

/// A rule of the protocol the client broke: the close code to answer with, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    /// 1002 (protocol error), 1007 (invalid payload) or 1009 (too big).
    pub code: u16,
    /// A short reason, sent in the close frame.
    pub reason: &'static str,
}

const fn violation(code: u16, reason: &'static str) -> Violation {
    Violation { code, reason }
}

const OP_CONTINUATION: u8 = 0;
const OP_TEXT: u8 = 1;
const OP_BINARY: u8 = 2;
const OP_CLOSE: u8 = 8;
const OP_PING: u8 = 9;
const OP_PONG: u8 = 10;

/// Parses client frames into messages. Keeps bytes only while a frame or a fragmented message
/// is incomplete.
#[derive(Debug)]
pub struct FrameParser {
    max_message: usize,
    /// Bytes of an incomplete frame.
    partial: Vec<u8>,
    /// A fragmented message being assembled: its opcode and payload so far.
    message: Option<(u8, Vec<u8>)>,
    /// Bytes the incomplete frame in `partial` needs at least, before it is parsed again.
    need: usize,
}

impl FrameParser {
    /// A parser accepting messages of at most `max_message` payload bytes.
    pub fn new(max_message: usize) -> Self {
        FrameParser {
            max_message,
            partial: Vec::new(),
            message: None,
            need: 0,
        }
    }

    /// Bytes held for incomplete frames and messages.
    pub fn held_bytes(&self) -> usize {
        self.partial.capacity() + self.message.as_ref().map_or(0, |(_, m)| m.capacity())
    }

    /// Feeds bytes read from the socket; complete messages are appended to `out`.
    pub fn feed(&mut self, data: &[u8], out: &mut VecDeque<WsMessage>) -> Result<(), Violation> {
        if self.partial.is_empty() {
            let used = self.parse(data, out)?;
            if used < data.len() {
                self.partial.extend_from_slice(&data[used..]);
            }
            return Ok(());
        }
        self.partial.extend_from_slice(data);
        if self.partial.len() < self.need {
            // The frame is still incomplete: no need to look at it again yet.
            return Ok(());
        }
        let mut buf = std::mem::take(&mut self.partial);
        let used = self.parse(&buf, out)?;
        if used < buf.len() {
            buf.drain(..used);
            self.partial = buf;
        }
        Ok(())
    }

    /// Parses as many whole frames from `data` as there are; returns the bytes used, and
    /// records how many bytes the incomplete frame after them needs.
    fn parse(&mut self, data: &[u8], out: &mut VecDeque<WsMessage>) -> Result<usize, Violation> {
        let mut at = 0;
        loop {
            match self.frame(&data[at..])? {
                Parsed::Frame { len, message } => {
                    at += len;
                    if let Some(m) = message {
                        out.push_back(m);
                    }
                }
                Parsed::Incomplete { need } => {
                    self.need = need;
                    return Ok(at);
                }
            }
        }
    }

    /// One frame at the start of `data`: its length and the message it completes (if any),
    /// or how many bytes it needs at least.
    fn frame(&mut self, data: &[u8]) -> Result<Parsed, Violation> {
        if data.len() < 2 {
            return Ok(Parsed::Incomplete { need: 2 });
        }
        let (b0, b1) = (data[0], data[1]);
        let fin = b0 & 0x80 != 0;
        if b0 & 0x70 != 0 {
            return Err(violation(1002, "reserved bits set"));
        }
        let opcode = b0 & 0x0F;
        let control = opcode >= OP_CLOSE;
        if !matches!(
            opcode,
            OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
        ) {
            return Err(violation(1002, "unknown opcode"));
        }
        if b1 & 0x80 == 0 {
            return Err(violation(1002, "client frames must be masked"));
        }
        let (len, header) = match b1 & 0x7F {
            126 => {
                if data.len() < 4 {
                    return Ok(Parsed::Incomplete { need: 4 });
                }
                let n = u16::from_be_bytes([data[2], data[3]]) as u64;
                if n < 126 {
                    return Err(violation(1002, "non-minimal length"));
                }
                (n, 4)
            }
            127 => {
                if data.len() < 10 {
                    return Ok(Parsed::Incomplete { need: 10 });
                }
                let n = u64::from_be_bytes(data[2..10].try_into().expect("8 bytes"));
                if n <= u16::MAX as u64 || n >> 63 != 0 {
                    return Err(violation(1002, "non-minimal length"));
                }
                (n, 10)
            }
            n => (n as u64, 2),
        };
        if control && (!fin || len > 125) {
            return Err(violation(1002, "control frames must be short and whole"));
        }
        let so_far = self.message.as_ref().map_or(0, |(_, m)| m.len()) as u64;
        if !control && so_far + len > self.max_message as u64 {
            return Err(violation(1009, "message too big"));
        }
        let total = header + 4 + len as usize;
        if data.len() < total {
            return Ok(Parsed::Incomplete { need: total });
        }
        let mask: [u8; 4] = data[header..header + 4].try_into().expect("4 bytes");
        let mut payload = data[header + 4..total].to_vec();
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i & 3];
        }
        let message = match opcode {
            OP_PING => Some(WsMessage::Ping(payload)),
            OP_PONG => Some(WsMessage::Pong(payload)),
            OP_CLOSE => Some(WsMessage::Close(close_payload(&payload)?)),
            OP_CONTINUATION => {
                let Some((_, buf)) = self.message.as_mut() else {
                    return Err(violation(1002, "continuation without a message"));
                };
                buf.extend_from_slice(&payload);
                if fin {
                    let (op, buf) = self.message.take().expect("checked");
                    Some(data_message(op, buf)?)
                } else {
                    None
                }
            }
            op => {
                if self.message.is_some() {
                    return Err(violation(1002, "new message inside a fragmented one"));
                }
                if fin {
                    Some(data_message(op, payload)?)
                } else {
                    self.message = Some((op, payload));
                    None
                }
            }
        };
        Ok(Parsed::Frame {
            len: total,
            message,
        })
    }
}

/// What [`FrameParser::frame`] found.
enum Parsed {
    /// A whole frame of `len` bytes, completing `message` if any.
    Frame {
        len: usize,
        message: Option<WsMessage>,
    },
    /// Not enough bytes: at least `need` in all.
    Incomplete { need: usize },
}

fn data_message(opcode: u8, payload: Vec<u8>) -> Result<WsMessage, Violation> {
    if opcode == OP_TEXT {
        String::from_utf8(payload)
            .map(WsMessage::Text)
            .map_err(|_| violation(1007, "text is not valid UTF-8"))
    } else {
        Ok(WsMessage::Binary(payload))
    }
}

fn close_payload(p: &[u8]) -> Result<Option<(u16, String)>, Violation> {
    match p.len() {
        0 => Ok(None),
        1 => Err(violation(1002, "close payload of one byte")),
        _ => {
            let code = u16::from_be_bytes([p[0], p[1]]);
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !valid {
                return Err(violation(1002, "invalid close code"));
            }
            let reason = std::str::from_utf8(&p[2..])
                .map_err(|_| violation(1007, "close reason is not valid UTF-8"))?;
            Ok(Some((code, reason.to_string())))
        }
    }
}

/// Appends a server frame (unmasked, final) to `out`.
pub fn encode_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= u16::MAX as usize => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

thread_local! {
    /// Where every connection on this thread reads into.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; 16 * 1024].into_boxed_slice());
}

/// Why the stream failed.
#[derive(Debug)]
pub enum WsError {
    /// The client broke the protocol; a close frame with the code is queued.
    Violation(Violation),
    /// The socket failed.
    Io(io::Error),
}

impl std::fmt::Display for WsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WsError::Violation(v) => write!(f, "protocol violation ({}): {}", v.code, v.reason),
            WsError::Io(e) => write!(f, "i/o: {e}"),
        }
    }
}

/// A server WebSocket over an upgraded socket.
pub struct WsStream<S> {
    io: S,
    parser: FrameParser,
    ready: VecDeque<WsMessage>,
    out: Vec<u8>,
    written: usize,
    close_sent: bool,
    /// The peer closed (or broke the protocol): no more reading.
    read_done: bool,
    /// A violation to report once the messages before it are delivered.
    violation: Option<Violation>,
}

/// Written buffers larger than this are freed once written, so an idle connection holds none.
const KEEP_WRITE_CAPACITY: usize = 256;

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    /// Wraps a socket that has completed the upgrade handshake.
    pub fn new(io: S, max_message: usize) -> Self {
        WsStream {
            io,
            parser: FrameParser::new(max_message),
            ready: VecDeque::new(),
            out: Vec::new(),
            written: 0,
            close_sent: false,
            read_done: false,
            violation: None,
        }
    }

    /// Bytes queued and not yet written.
    pub fn pending_bytes(&self) -> usize {
        self.out.len() - self.written
    }

    /// Whether a close frame was queued (nothing more can be sent).
    pub fn close_sent(&self) -> bool {
        self.close_sent
    }

    /// Queues a text frame.
    pub fn queue_text(&mut self, text: &[u8]) {
        if !self.close_sent {
            encode_frame(&mut self.out, OP_TEXT, text);
        }
    }

    /// Queues a ping.
    pub fn queue_ping(&mut self, payload: &[u8]) {
        if !self.close_sent {
            encode_frame(&mut self.out, OP_PING, payload);
        }
    }

    /// Queues a close frame (once).
    pub fn queue_close(&mut self, code: u16, reason: &str) {
        if self.close_sent {
            return;
        }
        self.close_sent = true;
        let mut reason = reason;
        while reason.len() > 123 {
            let mut end = 123;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason = &reason[..end];
        }
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        encode_frame(&mut self.out, OP_CLOSE, &payload);
    }

    /// Writes what is queued.
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.out.len() {
            match Pin::new(&mut self.io).poll_write(cx, &self.out[self.written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.out.capacity() > KEEP_WRITE_CAPACITY {
            self.out = Vec::new();
        } else {
            self.out.clear();
        }
        self.written = 0;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// The next message; `None` once the connection is over (after the close handshake, end of
    /// stream, or a protocol violation's close). Pings are answered here.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<WsMessage, WsError>>> {
        loop {
            if let Some(m) = self.ready.pop_front() {
                if self.ready.is_empty() && self.ready.capacity() > 8 {
                    self.ready = VecDeque::new();
                }
                match &m {
                    WsMessage::Ping(p) if !self.close_sent => {
                        encode_frame(&mut self.out, OP_PONG, p);
                    }
                    WsMessage::Close(c) => {
                        self.read_done = true;
                        self.ready.clear();
                        // Echo the close (its code) unless we sent ours first.
                        let code = c.as_ref().map_or(1000, |(code, _)| *code);
                        self.queue_close(code, "");
                    }
                    _ => {}
                }
                return Poll::Ready(Some(Ok(m)));
            }
            if let Some(v) = self.violation.take() {
                // Reported after the messages that arrived before the bad frame.
                self.queue_close(v.code, v.reason);
                return Poll::Ready(Some(Err(WsError::Violation(v))));
            }
            if self.read_done {
                // Nothing more to read; finish writing (the close) and end.
                return match self.poll_flush(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(_) => Poll::Ready(None),
                };
            }
            let read = SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let mut buf = ReadBuf::new(&mut scratch[..]);
                match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Err(e)) => Poll::Ready(Err(WsError::Io(e))),
                    Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(Ok(false)),
                    Poll::Ready(Ok(())) => {
                        let filled = buf.filled();
                        match self.parser.feed(filled, &mut self.ready) {
                            Ok(()) => Poll::Ready(Ok(true)),
                            Err(v) => Poll::Ready(Err(WsError::Violation(v))),
                        }
                    }
                }
            });
            match read {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(true)) => continue,
                Poll::Ready(Ok(false)) => {
                    self.read_done = true;
                    self.close_sent = true; // the socket is gone: nothing more to send
                    return Poll::Ready(None);
                }
                Poll::Ready(Err(WsError::Violation(v))) => {
                    self.read_done = true;
                    self.violation = Some(v);
                    continue;
                }
                Poll::Ready(Err(e)) => {
                    self.read_done = true;
                    self.close_sent = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
