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
//! A data frame's payload is unmasked (a word at a time) into its message as its bytes arrive,
//! so a frame split over many reads is copied once; text is checked for UTF-8 as it arrives
//! too (each fragment, and the received part of an incomplete frame, carrying a character cut
//! at the end over to the next bytes), so a client sending invalid text is failed with 1007 at
//! the first bad byte rather than when its message completes.
//!
//! [`FrameParser`] is the sans-IO part (bytes in, messages out); [`WsStream`] drives it over
//! a socket.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::io::Write as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use loudsync_protocol::close_code::{INVALID_PAYLOAD, MESSAGE_TOO_BIG, PROTOCOL_ERROR};
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
    /// [`PROTOCOL_ERROR`] (1002), [`INVALID_PAYLOAD`] (1007) or [`MESSAGE_TOO_BIG`] (1009).
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

const NOT_UTF8: Violation = violation(INVALID_PAYLOAD, "text is not valid UTF-8");

/// Parses client frames into messages. Keeps bytes only while a frame or a fragmented message
/// is incomplete.
#[derive(Debug)]
pub struct FrameParser {
    max_message: usize,
    /// The start of a frame not yet parsed: an incomplete header (a data frame's header is
    /// kept here until a payload byte follows it) or an incomplete control frame.
    partial: Vec<u8>,
    /// Bytes `partial` needs at least before it is parsed again.
    need: usize,
    /// The data message being assembled, from a fragmented message or from a data frame whose
    /// payload is still arriving.
    message: Option<Message>,
    /// The data frame whose payload is arriving, into `message`.
    frame: Option<DataFrame>,
}

/// A data message being assembled.
#[derive(Debug)]
struct Message {
    opcode: u8,
    /// The unmasked payload so far.
    payload: Vec<u8>,
    /// For text, how much of `payload` is known to be whole valid UTF-8 characters: the rest,
    /// at most 3 bytes, is the start of a character cut by the end of what arrived.
    checked: usize,
}

impl Message {
    /// Checks the text not checked yet; a character cut at the end is checked once the rest
    /// of it arrives.
    fn check_utf8(&mut self) -> Result<(), Violation> {
        if self.opcode != OP_TEXT {
            return Ok(());
        }
        // simdutf8's `compat` validator reports what std's does (`valid_up_to`, `error_len`),
        // several times faster on long text.
        match simdutf8::compat::from_utf8(&self.payload[self.checked..]) {
            Ok(_) => self.checked = self.payload.len(),
            // `error_len() == None`: only a character cut by the end, so far valid.
            Err(e) if e.error_len().is_none() => self.checked += e.valid_up_to(),
            Err(_) => return Err(NOT_UTF8),
        }
        Ok(())
    }

    /// The complete message.
    fn finish(mut self) -> Result<WsMessage, Violation> {
        if self.opcode != OP_TEXT {
            return Ok(WsMessage::Binary(self.payload));
        }
        self.check_utf8()?;
        if self.checked != self.payload.len() {
            // A character cut by the end of the message.
            return Err(NOT_UTF8);
        }
        // SAFETY: `check_utf8` has validated every byte of `payload` (`checked == len`), in
        // pieces that each start on a character boundary; valid pieces make valid text.
        Ok(WsMessage::Text(unsafe {
            String::from_utf8_unchecked(self.payload)
        }))
    }
}

/// A data frame whose header was parsed, and whose payload is arriving.
#[derive(Debug)]
struct DataFrame {
    fin: bool,
    mask: [u8; 4],
    /// Payload bytes still to come.
    remaining: u64,
    /// Payload bytes already received (where the mask stands).
    offset: usize,
}

/// What [`FrameParser::frame`] did with the start of its input.
enum Step {
    /// Used this many bytes: a whole frame, or a data frame's header and the payload bytes
    /// there were (the rest of that payload goes to [`FrameParser::payload`]).
    Used(usize),
    /// Not enough bytes to go on: at least `need` in all.
    Incomplete { need: usize },
}

impl FrameParser {
    /// A parser accepting messages of at most `max_message` payload bytes.
    pub fn new(max_message: usize) -> Self {
        FrameParser {
            max_message,
            partial: Vec::new(),
            need: 0,
            message: None,
            frame: None,
        }
    }

    /// Bytes held for incomplete frames and messages.
    pub fn held_bytes(&self) -> usize {
        self.partial.capacity() + self.message.as_ref().map_or(0, |m| m.payload.capacity())
    }

    /// Feeds bytes read from the socket; complete messages are appended to `out`. A violation
    /// is reported as soon as the bytes showing it arrive (messages completed before them are
    /// in `out`); the parser is not to be fed again after one.
    pub fn feed(
        &mut self,
        mut data: &[u8],
        out: &mut VecDeque<WsMessage>,
    ) -> Result<(), Violation> {
        loop {
            if let Some(frame) = &self.frame {
                // The payload of a data frame: everything until it ends belongs to it.
                let n = frame.remaining.min(data.len() as u64) as usize;
                self.payload(&data[..n], out)?;
                data = &data[n..];
                if self.frame.is_some() {
                    return Ok(()); // all of `data` was payload
                }
            } else if !self.partial.is_empty() {
                // Complete the frame start held back, taking no more bytes than it needs, so
                // that a payload is never copied into `partial`.
                let take = (self.need - self.partial.len()).min(data.len());
                self.partial.extend_from_slice(&data[..take]);
                data = &data[take..];
                if self.partial.len() < self.need {
                    return Ok(()); // all of `data` taken, still incomplete
                }
                let held = std::mem::take(&mut self.partial);
                match self.frame(&held, out)? {
                    Step::Used(n) => debug_assert_eq!(n, held.len(), "needed bytes all used"),
                    Step::Incomplete { need } => {
                        self.need = need;
                        self.partial = held;
                    }
                }
            } else if data.is_empty() {
                return Ok(());
            } else {
                match self.frame(data, out)? {
                    Step::Used(n) => data = &data[n..],
                    Step::Incomplete { need } => {
                        self.need = need;
                        self.partial.extend_from_slice(data);
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Bytes of the payload of the data frame in progress (no more than it still needs).
    fn payload(&mut self, bytes: &[u8], out: &mut VecDeque<WsMessage>) -> Result<(), Violation> {
        let frame = self.frame.as_mut().expect("a frame in progress");
        let message = self.message.as_mut().expect("a frame belongs to a message");
        let rest = frame.remaining as usize; // at most `max_message`: it fits
        if bytes.len() * 2 >= rest {
            // Room for the whole rest of the frame once half of it is here (no more than
            // doubling would take), so a frame in two reads is not moved when it completes.
            message.payload.reserve(rest);
        }
        unmask_into(&mut message.payload, bytes, frame.mask, frame.offset);
        frame.offset += bytes.len();
        frame.remaining -= bytes.len() as u64;
        if frame.remaining > 0 {
            return message.check_utf8();
        }
        let fin = frame.fin;
        self.frame = None;
        if fin {
            let message = self.message.take().expect("checked");
            out.push_back(message.finish()?);
            Ok(())
        } else {
            message.check_utf8()
        }
    }

    /// The frame at the start of `data`: a control frame needs to be whole; a data frame needs
    /// its header and, unless it is empty, one payload byte, and is then streamed.
    fn frame(&mut self, data: &[u8], out: &mut VecDeque<WsMessage>) -> Result<Step, Violation> {
        if data.len() < 2 {
            return Ok(Step::Incomplete { need: 2 });
        }
        let (b0, b1) = (data[0], data[1]);
        let fin = b0 & 0x80 != 0;
        if b0 & 0x70 != 0 {
            return Err(violation(PROTOCOL_ERROR, "reserved bits set"));
        }
        let opcode = b0 & 0x0F;
        let control = opcode >= OP_CLOSE;
        if !matches!(
            opcode,
            OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
        ) {
            return Err(violation(PROTOCOL_ERROR, "unknown opcode"));
        }
        if b1 & 0x80 == 0 {
            return Err(violation(PROTOCOL_ERROR, "client frames must be masked"));
        }
        let (len, header) = match b1 & 0x7F {
            126 => {
                if data.len() < 4 {
                    return Ok(Step::Incomplete { need: 4 });
                }
                let n = u16::from_be_bytes([data[2], data[3]]) as u64;
                if n < 126 {
                    return Err(violation(PROTOCOL_ERROR, "non-minimal length"));
                }
                (n, 4)
            }
            127 => {
                if data.len() < 10 {
                    return Ok(Step::Incomplete { need: 10 });
                }
                let n = u64::from_be_bytes(data[2..10].try_into().expect("8 bytes"));
                if n <= u16::MAX as u64 || n >> 63 != 0 {
                    return Err(violation(PROTOCOL_ERROR, "non-minimal length"));
                }
                (n, 10)
            }
            n => (n as u64, 2),
        };
        if control && (!fin || len > 125) {
            return Err(violation(
                PROTOCOL_ERROR,
                "control frames must be short and whole",
            ));
        }
        let start = header + 4;
        if control {
            let total = start + len as usize;
            if data.len() < total {
                return Ok(Step::Incomplete { need: total });
            }
            let mask = data[header..start].try_into().expect("4 bytes");
            let mut payload = Vec::with_capacity(len as usize);
            unmask_into(&mut payload, &data[start..total], mask, 0);
            out.push_back(match opcode {
                OP_PING => WsMessage::Ping(payload),
                OP_PONG => WsMessage::Pong(payload),
                _ => WsMessage::Close(close_payload(&payload)?),
            });
            return Ok(Step::Used(total));
        }
        match (opcode, &self.message) {
            (OP_CONTINUATION, None) => {
                return Err(violation(PROTOCOL_ERROR, "continuation without a message"))
            }
            (OP_TEXT | OP_BINARY, Some(_)) => {
                return Err(violation(
                    PROTOCOL_ERROR,
                    "new message inside a fragmented one",
                ))
            }
            _ => {}
        }
        let so_far = self.message.as_ref().map_or(0, |m| m.payload.len()) as u64;
        if so_far + len > self.max_message as u64 {
            return Err(violation(MESSAGE_TOO_BIG, "message too big"));
        }
        // Held back until a payload byte follows the header (so a connection that sent only
        // a header still shows what it holds).
        let need = start + (len > 0) as usize;
        if data.len() < need {
            return Ok(Step::Incomplete { need });
        }
        let mask = data[header..start].try_into().expect("4 bytes");
        let here = (data.len() - start) as u64;
        if self.message.is_none() && fin && here >= len {
            // The common case, a whole unfragmented message: straight out.
            let total = start + len as usize;
            let mut payload = Vec::with_capacity(len as usize);
            unmask_into(&mut payload, &data[start..total], mask, 0);
            let message = Message {
                opcode,
                payload,
                checked: 0,
            };
            out.push_back(message.finish()?);
            return Ok(Step::Used(total));
        }
        if self.message.is_none() {
            self.message = Some(Message {
                opcode,
                payload: Vec::new(),
                checked: 0,
            });
        }
        self.frame = Some(DataFrame {
            fin,
            mask,
            remaining: len,
            offset: 0,
        });
        let n = here.min(len) as usize;
        self.payload(&data[start..start + n], out)?;
        Ok(Step::Used(start + n))
    }
}

/// Appends `src` unmasked to `dst`, `src[0]` being the payload's byte `offset` (any offset: a
/// payload may arrive in pieces). Eight bytes at a time, then the tail; copying and unmasking
/// in one pass (not `memcpy` then unmasking in place: that reads the payload twice, and glibc's
/// `memcpy` of a few KiB is many times slower when source and destination are 8 or 16 bytes
/// apart modulo 4096, as a frame's payload and a fresh buffer can be).
fn unmask_into(dst: &mut Vec<u8>, src: &[u8], mask: [u8; 4], offset: usize) {
    let mut key = mask;
    key.rotate_left(offset & 3);
    let word = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let start = dst.len();
    dst.resize(start + src.len(), 0);
    let dst = &mut dst[start..];
    let mut dst_words = dst.chunks_exact_mut(8);
    let mut src_words = src.chunks_exact(8);
    for (d, s) in (&mut dst_words).zip(&mut src_words) {
        let s = u64::from_ne_bytes(s.try_into().expect("8 bytes"));
        d.copy_from_slice(&(s ^ word).to_ne_bytes());
    }
    // Words are a multiple of 4 bytes: the tail starts at `key[0]` again.
    let tail = dst_words.into_remainder().iter_mut();
    for ((d, s), k) in tail.zip(src_words.remainder()).zip(key.iter().cycle()) {
        *d = s ^ k;
    }
}

fn close_payload(p: &[u8]) -> Result<Option<(u16, String)>, Violation> {
    match p.len() {
        0 => Ok(None),
        1 => Err(violation(PROTOCOL_ERROR, "close payload of one byte")),
        _ => {
            let code = u16::from_be_bytes([p[0], p[1]]);
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !valid {
                return Err(violation(PROTOCOL_ERROR, "invalid close code"));
            }
            let reason = std::str::from_utf8(&p[2..])
                .map_err(|_| violation(INVALID_PAYLOAD, "close reason is not valid UTF-8"))?;
            Ok(Some((code, reason.to_string())))
        }
    }
}

/// A client frame, masked with `mask`, as a client would send it (for tests and benchmarks of
/// the parser; the server never sends masked frames).
pub fn masked_client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
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

/// The longest `{"seq":N,` (N = `u64::MAX`).
const SEQ_PREFIX_MAX: usize = 28;

/// Writes `{"seq":N,` into `buf` and returns it: the same bytes as
/// [`loudsync_protocol::client::seq_prefix`], without an allocation (this runs for every
/// numbered frame).
fn seq_prefix(buf: &mut [u8; SEQ_PREFIX_MAX], seq: u64) -> &[u8] {
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    write!(cursor, "{{\"seq\":{seq},").expect("fits: at most 28 bytes");
    let len = cursor.position() as usize;
    &buf[..len]
}

/// Appends a server frame (unmasked, final) to `out`.
pub fn encode_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    encode_frame_parts(out, opcode, &[payload]);
}

/// Appends a server frame whose payload is `parts` one after the other (a numbered frame's
/// `seq` prefix and the shared bytes of the message, without copying them together first).
pub fn encode_frame_parts(out: &mut Vec<u8>, opcode: u8, parts: &[&[u8]]) {
    out.push(0x80 | opcode);
    match parts.iter().map(|p| p.len()).sum::<usize>() {
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
    for part in parts {
        out.extend_from_slice(part);
    }
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

    /// The socket back, e.g. to shut it down gracefully once [`WsStream::poll_next`] has
    /// ended (bytes queued and not written, and bytes read and not parsed, are dropped).
    pub fn into_inner(self) -> S {
        self.io
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

    /// Queues a numbered text frame: `{"seq":N,` then `text` without its opening brace.
    pub fn queue_numbered_text(&mut self, seq: u64, text: &[u8]) {
        if !self.close_sent {
            let mut prefix = [0u8; SEQ_PREFIX_MAX];
            let prefix = seq_prefix(&mut prefix, seq);
            let rest = text.strip_prefix(b"{").unwrap_or(text);
            encode_frame_parts(&mut self.out, OP_TEXT, &[prefix, rest]);
        }
    }

    /// Queues a binary frame.
    pub fn queue_binary(&mut self, payload: &[u8]) {
        if !self.close_sent {
            encode_frame(&mut self.out, OP_BINARY, payload);
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
