//! The resume layer's bookkeeping (issue 10, seed 003's "dop" connectivity), kept apart from
//! the machine's flow so a reader finds it in one place: the link states, the local token,
//! the numbered frames this client sent and keeps until the server acknowledges them (with
//! what the application queued while disconnected), the last server `seq` received and when
//! to acknowledge it, the pacing of numbered sends under the server's rate limit, and which
//! closes are never resumed.
//!
//! Everything here is sans-IO and clock-free except through the `Instant`s it is given;
//! [`crate::machine::Machine`] decides when to call it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use loudsync_protocol::client::{number_frame, TOKEN_LEN};
use loudsync_protocol::close_code;
use serde_json::Value;

/// The resume link's state: seed 003's five states, kept beside
/// [`crate::ConnectionState`] (three names coincide, the meanings differ).
///
/// Only a connection that does the handshake has a link ([`crate::ClientConfig::resume`]);
/// with the handshake off, or against a server that refuses it, the link stays
/// `Disconnected` while the connection itself may be connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkState {
    /// A socket is open and this client's token was sent (handshake step 1); the server's
    /// has not arrived.
    Open,
    /// The server's token arrived and this client confirmed it (step 3, with `join` right
    /// behind it); the server's confirmation (step 4) has not arrived.
    PreConnected,
    /// Both sides hold the connection token: the link is up (after a handshake or a resume).
    Connected,
    /// The socket dropped while the server holds this client's place; resuming.
    Reconnecting,
    /// No link: not started, ended (left, formally disconnected, kicked, closed, failed),
    /// or a plain connection without a handshake.
    Disconnected,
}

impl LinkState {
    /// Seed 003's name (`"OPEN"`, `"PRECONNECTED"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Open => "OPEN",
            LinkState::PreConnected => "PRECONNECTED",
            LinkState::Connected => "CONNECTED",
            LinkState::Reconnecting => "RECONNECTING",
            LinkState::Disconnected => "DISCONNECTED",
        }
    }

    /// Seed 003's number for the state (`OPEN: 0` ... `DISCONNECTED: 4`).
    pub fn code(self) -> u8 {
        match self {
            LinkState::Open => 0,
            LinkState::PreConnected => 1,
            LinkState::Connected => 2,
            LinkState::Reconnecting => 3,
            LinkState::Disconnected => 4,
        }
    }
}

/// A fresh local token: [`TOKEN_LEN`] characters of `[A-Za-z0-9]` from the operating
/// system's CSPRNG (unbiased: bytes of 248 and above are drawn again).
pub(crate) fn local_token() -> String {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut token = String::with_capacity(TOKEN_LEN);
    let mut bytes = [0u8; 64];
    while token.len() < TOKEN_LEN {
        getrandom::fill(&mut bytes).expect("the operating system's random source");
        for b in bytes {
            if b < 248 && token.len() < TOKEN_LEN {
                token.push(ALPHABET[(b % 62) as usize] as char);
            }
        }
    }
    token
}

/// Whether a close with `code` ends this client's place for good, so it is never resumed:
/// 4000 (`replaced`: another socket resumed this token), 1009 (a frame too large: the
/// resend would repeat it), 1002 and 1007 (framing violations). Every other close, 1000
/// `heartbeat timeout` and 1008 (rate limit, slow consumer) included, is resumed unless the
/// frame before it said otherwise (own `leave`, `kicked`, `session_closed`).
pub(crate) fn close_ends_place(code: Option<u16>) -> bool {
    matches!(
        code,
        Some(
            close_code::REPLACED
                | close_code::MESSAGE_TOO_BIG
                | close_code::PROTOCOL_ERROR
                | close_code::INVALID_PAYLOAD
        )
    )
}

/// The `details.lastSeq` of a server `error` on a numbered connection (a gap, or
/// `rate_limited`): the last client `seq` the server processed.
pub(crate) fn last_seq_of(details: &Option<Value>) -> Option<u64> {
    details.as_ref()?.get("lastSeq")?.as_u64()
}

/// The numbered frames this client sends, from the `welcome` of a resumable connection on.
///
/// Each frame gets its `seq` when the application gives it (connected or not), stays here
/// until the server acknowledges it (`ack`, or `resumed.lastSeq`), and is put on the
/// current socket in order, as the pacer allows. Frames given while no numbering exists (a
/// fresh join after a refused resume, a plain reconnection) wait unnumbered in `waiting`.
#[derive(Debug)]
pub(crate) struct Outbox {
    /// Numbered frames not acknowledged, in seq order, as plain frames (the prefix is
    /// added when sent): `frames[i]` has seq `first + i`.
    frames: VecDeque<String>,
    /// The seq of `frames[0]` (one above the last acknowledged).
    first: u64,
    /// The next seq to put on the current socket; `None` while there is no socket to send
    /// on.
    next: Option<u64>,
    /// The highest seq ever sent, on any socket.
    sent_up_to: u64,
    /// Frames given while no numbering exists, plain, in order.
    waiting: VecDeque<String>,
    /// Whether numbering exists (a resumable connection was welcomed and not given up).
    numbered: bool,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox {
            frames: VecDeque::new(),
            first: 1,
            next: None,
            sent_up_to: 0,
            waiting: VecDeque::new(),
            numbered: false,
        }
    }
}

impl Outbox {
    /// Numbering starts (a resumable `welcome`): seq 1 is the first frame; what waited is
    /// numbered first, in order. Sending starts on the current socket.
    pub(crate) fn start(&mut self) {
        self.frames = std::mem::take(&mut self.waiting);
        self.first = 1;
        self.sent_up_to = 0;
        self.next = Some(1);
        self.numbered = true;
    }

    /// Whether numbering exists.
    #[cfg(test)]
    pub(crate) fn is_numbered(&self) -> bool {
        self.numbered
    }

    /// Frames held: unacknowledged, unsent and waiting.
    pub(crate) fn len(&self) -> usize {
        self.frames.len() + self.waiting.len()
    }

    /// Adds a frame from the application, numbered if numbering exists.
    pub(crate) fn push(&mut self, plain: String) {
        if self.numbered {
            self.frames.push_back(plain);
        } else {
            self.waiting.push_back(plain);
        }
    }

    /// The last seq given out (0 if none).
    pub(crate) fn last_seq(&self) -> u64 {
        self.first + self.frames.len() as u64 - 1
    }

    /// Whether a frame is ready for the current socket.
    pub(crate) fn has_unsent(&self) -> bool {
        self.next.is_some_and(|n| n <= self.last_seq())
    }

    /// The next frame for the current socket, numbered, if any: it counts as sent.
    pub(crate) fn next_frame(&mut self) -> Option<String> {
        let n = self.next.filter(|&n| n <= self.last_seq())?;
        let plain = &self.frames[(n - self.first) as usize];
        let frame = number_frame(n, plain);
        self.next = Some(n + 1);
        self.sent_up_to = self.sent_up_to.max(n);
        Some(frame)
    }

    /// The server processed everything up to `seq` (an `ack`): those frames are dropped.
    /// A seq above what was ever sent is a server's mistake and acknowledges only what was.
    pub(crate) fn acknowledge(&mut self, seq: u64) {
        let seq = seq.min(self.sent_up_to);
        while self.first <= seq && !self.frames.is_empty() {
            self.frames.pop_front();
            self.first += 1;
        }
        if self.frames.is_empty() {
            self.first = self.first.max(seq + 1);
        }
        if let Some(n) = self.next {
            self.next = Some(n.max(self.first));
        }
    }

    /// The server asks for everything after `last` again (a gap, `rate_limited`): what it
    /// processed is dropped and the current socket goes back to `last + 1`. Returns whether
    /// anything is to be resent.
    pub(crate) fn rewind(&mut self, last: u64) -> bool {
        if last > self.sent_up_to {
            return false;
        }
        self.acknowledge(last);
        match self.next {
            Some(n) if n > last + 1 => {
                self.next = Some(last + 1);
                true
            }
            _ => false,
        }
    }

    /// The socket is gone: nothing is sent until the next one is resumed.
    pub(crate) fn socket_lost(&mut self) {
        self.next = None;
    }

    /// The resume succeeded and the server processed up to `last`: everything after it is
    /// sent again on the new socket, in order, with its original seq.
    pub(crate) fn resumed(&mut self, last: u64) {
        self.acknowledge(last);
        // A `last` above what was ever sent (a broken server) counts as everything sent: what
        // was queued while away still goes out, under the numbers it was given.
        self.next = Some(self.first.max(last.min(self.sent_up_to) + 1));
    }

    /// The numbering ends (a refused resume, a close that ends the place, a plain
    /// reconnection): frames sent but never acknowledged are dropped (they may or may not
    /// have arrived; sending them again under new numbering could double them) and their
    /// count returned; frames never sent wait, unnumbered, for the next connection.
    pub(crate) fn give_up(&mut self) -> usize {
        let sent = self
            .sent_up_to
            .saturating_sub(self.first - 1)
            .min(self.frames.len() as u64) as usize;
        let unsent: Vec<String> = self.frames.drain(..).skip(sent).collect();
        for plain in unsent.into_iter().rev() {
            self.waiting.push_front(plain);
        }
        self.first = 1;
        self.sent_up_to = 0;
        self.next = None;
        self.numbered = false;
        sent
    }

    /// Takes the waiting frames, to send plain on a connection without numbering.
    pub(crate) fn take_waiting(&mut self) -> VecDeque<String> {
        std::mem::take(&mut self.waiting)
    }

    /// Drops everything (the client ended).
    pub(crate) fn clear(&mut self) {
        *self = Outbox::default();
    }
}

/// The server's numbered frames as received: the last `seq`, duplicates, and when the next
/// `ack` is due.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    /// The last server seq received (0: none).
    last: u64,
    /// The last seq acknowledged (sent in an `ack`, or as a resume's `lastSeq`).
    acked: u64,
    /// When the pending acknowledgement must go out at the latest.
    due: Option<Instant>,
}

/// What to do with a numbered server frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// New: handle it.
    New,
    /// Its seq was received already (a replay overlapping what arrived before the drop):
    /// drop it.
    Duplicate,
}

impl Inbox {
    /// A numbered frame `seq` arrived at `now`.
    pub(crate) fn arrive(&mut self, seq: u64, now: Instant, interval: Duration) -> Arrival {
        if seq <= self.last {
            return Arrival::Duplicate;
        }
        if seq > self.last + 1 {
            // The server never skips; nothing to ask for on this socket, so take it.
            tracing::warn!(
                last = self.last,
                seq,
                "server seq skipped ahead; taking the frame"
            );
        }
        self.last = seq;
        if self.due.is_none() {
            self.due = Some(now + interval);
        }
        Arrival::New
    }

    /// The last server seq received (a resume's `lastSeq`).
    pub(crate) fn last(&self) -> u64 {
        self.last
    }

    /// The seq to acknowledge now, if an `ack` is due: `every` frames arrived since the last
    /// one, or the interval passed since the first of them.
    pub(crate) fn ack_due(&mut self, now: Instant, every: u64) -> Option<u64> {
        let pending = self.last - self.acked;
        let due = pending >= every.max(1) || self.due.is_some_and(|d| d <= now);
        if pending > 0 && due {
            self.acked = self.last;
            self.due = None;
            Some(self.last)
        } else {
            None
        }
    }

    /// When an `ack` will be due if nothing else arrives.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.due
    }

    /// A resume sent `lastSeq` = everything received: that acknowledges it.
    pub(crate) fn resume_sent(&mut self) {
        self.acked = self.last;
        self.due = None;
    }

    /// A new numbering starts (a resumable `welcome`), or it ended.
    pub(crate) fn reset(&mut self) {
        *self = Inbox::default();
    }
}

/// A token bucket for numbered sends: `rate` per second on average, `burst` at once.
#[derive(Debug)]
pub(crate) struct Pacer {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Pacer {
    /// A full bucket at `now`.
    pub(crate) fn new(rate: u32, burst: u32, now: Instant) -> Pacer {
        let burst = f64::from(burst.max(1));
        Pacer {
            rate: f64::from(rate.max(1)),
            burst,
            tokens: burst,
            at: now,
        }
    }

    /// Full again (a new socket: the server's bucket is per socket).
    pub(crate) fn refill(&mut self, now: Instant) {
        self.tokens = self.burst;
        self.at = now;
    }

    fn update(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
    }

    /// Takes one send if the bucket allows it now.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        self.update(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the next send will be allowed.
    pub(crate) fn ready_at(&self) -> Instant {
        if self.tokens >= 1.0 {
            self.at
        } else {
            // Rounded up to the next millisecond, so a timer at this instant finds the token.
            let wait = (1.0 - self.tokens) / self.rate;
            self.at + Duration::from_micros((wait * 1e6).ceil() as u64 + 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_tokens_are_32_alphanumerics_and_differ() {
        let a = local_token();
        let b = local_token();
        assert_eq!(a.len(), TOKEN_LEN);
        assert!(loudsync_protocol::client::valid_token(&a), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn a_resumed_last_seq_above_what_was_sent_still_sends_what_waits() {
        let mut o = Outbox::default();
        o.start();
        o.push("{\"type\":\"a\"}".into());
        assert_eq!(o.next_frame().unwrap(), r#"{"seq":1,"type":"a"}"#);
        o.socket_lost();
        o.push("{\"type\":\"b\"}".into()); // queued while away: seq 2, never sent
        o.resumed(7); // the server claims to have processed up to 7
        assert_eq!(o.next_frame().unwrap(), r#"{"seq":2,"type":"b"}"#);
        o.push("{\"type\":\"c\"}".into());
        assert_eq!(o.next_frame().unwrap(), r#"{"seq":3,"type":"c"}"#);
    }

    #[test]
    fn outbox_numbers_sends_acks_rewinds_and_gives_up() {
        let mut o = Outbox::default();
        o.push("{\"type\":\"a\"}".into());
        assert!(!o.is_numbered());
        o.start();
        o.push("{\"type\":\"b\"}".into());
        o.push("{\"type\":\"c\"}".into());
        assert_eq!(o.last_seq(), 3);
        assert_eq!(o.next_frame().unwrap(), r#"{"seq":1,"type":"a"}"#);
        assert_eq!(o.next_frame().unwrap(), r#"{"seq":2,"type":"b"}"#);
        o.acknowledge(1);
        assert_eq!(o.len(), 2);
        assert!(o.rewind(1));
        assert_eq!(o.next_frame().unwrap(), r#"{"seq":2,"type":"b"}"#);
        assert_eq!(o.next_frame().unwrap(), r#"{"seq":3,"type":"c"}"#);
        assert!(o.next_frame().is_none());
        // An ack beyond what was sent acknowledges only what was.
        o.push("{\"type\":\"d\"}".into());
        o.acknowledge(10);
        assert_eq!(o.len(), 1);
        assert_eq!(o.next_frame().unwrap(), r#"{"seq":4,"type":"d"}"#);
        o.push("{\"type\":\"e\"}".into());
        o.socket_lost();
        assert!(o.next_frame().is_none());
        // 4 sent, unacknowledged; 5 never sent.
        assert_eq!(o.give_up(), 1);
        assert!(!o.is_numbered());
        o.start();
        assert_eq!(o.next_frame().unwrap(), r#"{"seq":1,"type":"e"}"#);
    }

    #[test]
    fn inbox_drops_duplicates_and_acks_by_count_and_time() {
        let t = Instant::now();
        let s = Duration::from_secs(5);
        let mut i = Inbox::default();
        assert_eq!(i.ack_due(t, 3), None);
        assert_eq!(i.arrive(1, t, s), Arrival::New);
        assert_eq!(i.arrive(1, t, s), Arrival::Duplicate);
        assert_eq!(i.ack_due(t, 3), None);
        assert_eq!(i.arrive(2, t, s), Arrival::New);
        assert_eq!(i.arrive(3, t, s), Arrival::New);
        assert_eq!(i.ack_due(t, 3), Some(3));
        assert_eq!(i.ack_due(t + s, 3), None, "nothing new");
        assert_eq!(i.arrive(4, t + s, s), Arrival::New);
        assert_eq!(i.ack_due(t + s + s / 2, 3), None);
        assert_eq!(i.ack_due(t + s + s, 3), Some(4));
    }

    #[test]
    fn pacer_allows_the_burst_then_the_rate() {
        let t = Instant::now();
        let mut p = Pacer::new(10, 3, t);
        assert!(p.take(t) && p.take(t) && p.take(t));
        assert!(!p.take(t));
        let ready = p.ready_at();
        assert!(ready > t + Duration::from_millis(99) && ready < t + Duration::from_millis(102));
        assert!(p.take(ready));
        assert!(!p.take(ready));
    }

    #[test]
    fn the_closes_that_end_a_place() {
        for code in [4000, 1009, 1002, 1007] {
            assert!(close_ends_place(Some(code)), "{code}");
        }
        for code in [Some(1000), Some(1001), Some(1008), Some(1011), None] {
            assert!(!close_ends_place(code), "{code:?}");
        }
    }
}
