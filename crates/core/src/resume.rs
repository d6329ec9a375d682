//! The resume layer (seed 003, "dop connectivity"): the pieces of a resumable connection that
//! are not the handshake itself.
//!
//! A connection that went through the token handshake is **numbered**: every server message
//! after `welcome` (but `pong`, `ack` and the handshake's frames) carries `seq` 1, 2, 3, ...,
//! and so does every client message after `join` (but `ack`, `token`, `heartbeat`, `ping`).
//! Each side keeps what it sent until the other acknowledges it, so after a drop the client
//! presents the connection token on a new socket with the last `seq` it received, and the
//! server replays what followed, byte for byte. The parts, each pure:
//!
//! - [`ReplayBuffer`]: a place's outbound numbering and the frames not yet acknowledged,
//!   bounded in count and bytes (the session holds one per resumable member, so it outlives
//!   sockets).
//! - [`InboundSeq`]: the rule for a client frame's `seq`: exactly one above the last processed
//!   is processed, lower or equal is a duplicate (dropped), higher is a gap (reported once).
//! - [`AckSchedule`]: when an acknowledgement is owed: after `ack_every` new messages, or
//!   `ack_interval` after the first unacknowledged one. No timer while nothing is owed, so an
//!   idle member costs nothing.
//! - [`Tokens`]: which connection token belongs to which place, and why an ended one ended
//!   (kept for ten windows, so a late resume learns `expired` rather than `unknown_token`).
//!
//! The handshake lives in [`crate::connection`], the held place and its window in
//! [`crate::session`].

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use loudsync_protocol::client::TOKEN_LEN;
use loudsync_protocol::ResumeFailure;

/// A side's local token: [`TOKEN_LEN`] characters of `[A-Za-z0-9]` from the operating
/// system's CSPRNG (the connection token is a bearer credential for the member's place).
pub fn random_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    crate::ids::secure_chars(ALPHABET, TOKEN_LEN)
}

/// The bounds of one place's replay buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayLimits {
    /// Unacknowledged messages kept at most (`--resume-buffer-messages`).
    pub messages: usize,
    /// Unacknowledged bytes kept at most, counted in the frames' JSON text
    /// (`--resume-buffer-bytes`).
    pub bytes: usize,
}

impl Default for ReplayLimits {
    fn default() -> Self {
        ReplayLimits {
            messages: 1000,
            bytes: 1 << 20,
        }
    }
}

/// Pushing a frame would exceed the replay buffer's limits: the place must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

/// Why a resume's `lastSeq` cannot be replayed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayError {
    /// Above the last `seq` sent: the client claims what was never sent (`invalid_message`,
    /// the place stays held).
    AboveSent {
        /// The last `seq` the server sent.
        last_sent: u64,
    },
    /// Below what was already dropped from the buffer: it cannot be replayed
    /// (`buffer_overflow`, the place ends).
    Dropped,
}

/// A place's outbound numbering and its unacknowledged frames.
///
/// Frames are kept as the shared bytes of their plain JSON (the same `Bytes` every recipient
/// of a broadcast holds); the `seq` is written in front of them when they go out (see
/// [`loudsync_protocol::client::number_frame`]), so a replayed frame is byte-identical to the
/// original.
#[derive(Debug, Default)]
pub struct ReplayBuffer {
    /// The last `seq` given out (0: none yet).
    last_sent: u64,
    /// Everything up to this was acknowledged (and dropped).
    acked: u64,
    /// `(seq, frame)` for every `seq` in `acked+1 ..= last_sent`.
    frames: VecDeque<(u64, Bytes)>,
    /// Bytes held, counted as sent (with their `seq` prefix).
    bytes: usize,
}

/// The bytes a numbered frame takes on the wire: the plain frame plus `"seq":N,`.
fn numbered_len(seq: u64, frame: &Bytes) -> usize {
    frame.len() + "\"seq\":,".len() + decimal_digits(seq)
}

fn decimal_digits(mut n: u64) -> usize {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}

impl ReplayBuffer {
    /// An empty buffer: nothing sent yet.
    pub fn new() -> Self {
        ReplayBuffer::default()
    }

    /// Numbers `frame` and keeps it until acknowledged; `Err` if that would exceed `limits`
    /// (nothing is kept then).
    pub fn push(&mut self, frame: Bytes, limits: &ReplayLimits) -> Result<u64, Overflow> {
        let seq = self.last_sent + 1;
        let len = numbered_len(seq, &frame);
        if self.frames.len() + 1 > limits.messages || self.bytes + len > limits.bytes {
            return Err(Overflow);
        }
        self.last_sent = seq;
        self.bytes += len;
        self.frames.push_back((seq, frame));
        Ok(seq)
    }

    /// The other side received everything up to `seq`: drop it. `Err` for a `seq` never sent.
    /// An ack below an earlier one changes nothing.
    pub fn ack(&mut self, seq: u64) -> Result<(), ReplayError> {
        if seq > self.last_sent {
            return Err(ReplayError::AboveSent {
                last_sent: self.last_sent,
            });
        }
        while let Some((s, frame)) = self.frames.front() {
            if *s > seq {
                break;
            }
            self.bytes -= numbered_len(*s, frame);
            self.frames.pop_front();
        }
        self.acked = self.acked.max(seq);
        if self.frames.is_empty() && self.frames.capacity() > 0 {
            // All acknowledged: an idle member holds no buffer (the common case).
            self.frames = VecDeque::new();
        }
        Ok(())
    }

    /// What a resume from `last_seq` replays: every frame after it, in order. It also
    /// acknowledges `last_seq` (the client has it).
    pub fn replay_after(&mut self, last_seq: u64) -> Result<Vec<(u64, Bytes)>, ReplayError> {
        if last_seq < self.acked {
            return Err(ReplayError::Dropped);
        }
        self.ack(last_seq)?;
        Ok(self.frames.iter().cloned().collect())
    }

    /// The last `seq` given out.
    pub fn last_sent(&self) -> u64 {
        self.last_sent
    }

    /// Frames held (unacknowledged).
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Bytes held, as sent.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// What to do with a client frame's `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqVerdict {
    /// Exactly the next one: process it.
    Next,
    /// Already processed: drop it silently.
    Duplicate,
    /// A frame is missing before it: drop it; `notify` on the first of a run of gap frames
    /// (answer `invalid_message` with `details.lastSeq`).
    Gap {
        /// Whether this is the first gap frame since the last processed one.
        notify: bool,
        /// The last `seq` processed: the client resends what follows.
        last: u64,
    },
}

/// The numbering of the frames a connection receives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InboundSeq {
    last: u64,
    in_gap: bool,
}

impl InboundSeq {
    /// Numbering that continues after `last` (0 on a fresh join; the place's last processed
    /// `seq` on a resume).
    pub fn after(last: u64) -> Self {
        InboundSeq {
            last,
            in_gap: false,
        }
    }

    /// The verdict on a frame numbered `seq` (and, if it is [`SeqVerdict::Next`], it now
    /// counts as processed).
    pub fn check(&mut self, seq: u64) -> SeqVerdict {
        if seq <= self.last {
            SeqVerdict::Duplicate
        } else if seq == self.last + 1 {
            self.last = seq;
            self.in_gap = false;
            SeqVerdict::Next
        } else {
            let notify = !self.in_gap;
            self.in_gap = true;
            SeqVerdict::Gap {
                notify,
                last: self.last,
            }
        }
    }

    /// The last `seq` processed.
    pub fn last(&self) -> u64 {
        self.last
    }
}

/// When a side owes the other an `ack`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckSchedule {
    /// The highest `seq` acknowledged so far.
    acked: u64,
    /// When the oldest unacknowledged message must be acknowledged by; `None` while nothing
    /// is owed.
    due: Option<Instant>,
}

impl AckSchedule {
    /// Nothing owed; `acked` was acknowledged already (or is 0).
    pub fn after(acked: u64) -> Self {
        AckSchedule { acked, due: None }
    }

    /// Message `seq` was received at `now`. Returns the `seq` to acknowledge now if
    /// `every` messages are unacknowledged.
    pub fn received(
        &mut self,
        now: Instant,
        seq: u64,
        every: u64,
        interval: Duration,
    ) -> Option<u64> {
        if seq <= self.acked {
            return None;
        }
        if seq - self.acked >= every.max(1) {
            return self.ack(seq);
        }
        self.due.get_or_insert(now + interval);
        None
    }

    /// When [`AckSchedule::poll`] must next be called.
    pub fn deadline(&self) -> Option<Instant> {
        self.due
    }

    /// At `now`, with `last` the highest `seq` received: the `seq` to acknowledge if the
    /// interval has passed.
    pub fn poll(&mut self, now: Instant, last: u64) -> Option<u64> {
        match self.due {
            Some(due) if now >= due => self.ack(last),
            _ => None,
        }
    }

    fn ack(&mut self, seq: u64) -> Option<u64> {
        self.due = None;
        (seq > self.acked).then(|| {
            self.acked = seq;
            seq
        })
    }
}

/// What a connection token leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenState<P> {
    /// A held or connected place.
    Live(P),
    /// The place ended; a resume answers this.
    Ended(ResumeFailure),
}

/// Connection tokens: the live ones with their places (`P`: whatever finds the place, e.g. a
/// session id and member id), and the ended ones with why, remembered for `remember`
/// (at least ten resume windows) and then forgotten (`unknown_token`).
#[derive(Debug)]
pub struct Tokens<P> {
    live: HashMap<String, P>,
    /// Why each ended token ended, and when it is forgotten.
    ended: HashMap<String, (ResumeFailure, Instant)>,
    /// Ended tokens in the order they ended, with when to forget them.
    forget: VecDeque<(Instant, String)>,
    remember: Duration,
}

impl<P: Clone> Tokens<P> {
    /// An empty table that remembers ended tokens for `remember`.
    pub fn new(remember: Duration) -> Self {
        Tokens {
            live: HashMap::new(),
            ended: HashMap::new(),
            forget: VecDeque::new(),
            remember,
        }
    }

    /// A place joined with `token`.
    pub fn insert(&mut self, token: String, place: P) {
        self.ended.remove(&token);
        self.live.insert(token, place);
    }

    /// The place of `token` ended at `now`: a resume answers `why` from now on (but
    /// [`ResumeFailure::UnknownToken`] forgets it at once).
    pub fn end(&mut self, now: Instant, token: &str, why: ResumeFailure) {
        self.expire(now);
        self.live.remove(token);
        if why == ResumeFailure::UnknownToken {
            self.ended.remove(token);
            return;
        }
        let at = now + self.remember;
        self.ended.insert(token.to_string(), (why, at));
        self.forget.push_back((at, token.to_string()));
    }

    /// What `token` leads to at `now`.
    pub fn lookup(&mut self, now: Instant, token: &str) -> TokenState<P> {
        self.expire(now);
        if let Some(place) = self.live.get(token) {
            return TokenState::Live(place.clone());
        }
        TokenState::Ended(
            self.ended
                .get(token)
                .map(|(why, _)| *why)
                .unwrap_or(ResumeFailure::UnknownToken),
        )
    }

    /// Live tokens.
    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    /// Ended tokens still remembered.
    pub fn ended_count(&self) -> usize {
        self.ended.len()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.forget.front() {
            if *at > now {
                break;
            }
            let (at, token) = self.forget.pop_front().expect("just looked");
            // Forget it unless it was ended again since (a later entry is queued for that).
            if self.ended.get(&token).is_some_and(|(_, when)| *when == at) {
                self.ended.remove(&token);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn b(s: &str) -> Bytes {
        Bytes::from(s.to_string())
    }

    #[test]
    fn tokens_are_32_alphanumerics_and_differ() {
        let a = random_token();
        assert_eq!(a.len(), TOKEN_LEN);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, random_token());
    }

    #[test]
    fn the_buffer_numbers_from_one_keeps_until_acked_and_replays_in_order() {
        let limits = ReplayLimits::default();
        let mut r = ReplayBuffer::new();
        assert_eq!(r.push(b("{\"a\":1}"), &limits), Ok(1));
        assert_eq!(r.push(b("{\"a\":2}"), &limits), Ok(2));
        assert_eq!(r.push(b("{\"a\":3}"), &limits), Ok(3));
        assert_eq!(r.bytes(), 3 * ("{\"a\":1}".len() + "\"seq\":1,".len()));
        assert_eq!(r.ack(1), Ok(()));
        assert_eq!(r.len(), 2);
        let replay = r.replay_after(1).unwrap();
        assert_eq!(replay.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(r.replay_after(3).unwrap(), vec![], "nothing after the last");
        assert_eq!(r.len(), 0, "a resume's lastSeq acknowledges");
        assert_eq!(
            r.replay_after(4),
            Err(ReplayError::AboveSent { last_sent: 3 })
        );
        assert_eq!(r.replay_after(2), Err(ReplayError::Dropped));
        assert_eq!(r.ack(9), Err(ReplayError::AboveSent { last_sent: 3 }));
        assert_eq!(r.ack(1), Ok(()), "an older ack changes nothing");
        assert_eq!(
            r.frames.capacity(),
            0,
            "an empty buffer holds no allocation"
        );
        assert_eq!(r.push(b("{}"), &limits), Ok(4));
    }

    #[test]
    fn the_buffer_refuses_past_either_limit_and_keeps_nothing_then() {
        let mut r = ReplayBuffer::new();
        let two = ReplayLimits {
            messages: 2,
            bytes: 1 << 20,
        };
        r.push(b("{}"), &two).unwrap();
        r.push(b("{}"), &two).unwrap();
        assert_eq!(r.push(b("{}"), &two), Err(Overflow));
        assert_eq!(r.last_sent(), 2);
        r.ack(2).unwrap();
        assert_eq!(r.push(b("{}"), &two), Ok(3), "acks make room");
        let small = ReplayLimits {
            messages: 100,
            bytes: 20,
        };
        let mut r = ReplayBuffer::new();
        assert_eq!(r.push(b("{\"x\":1}"), &small), Ok(1)); // 7 + 8 = 15 bytes
        assert_eq!(r.push(b("{\"x\":1}"), &small), Err(Overflow));
    }

    #[test]
    fn inbound_numbering_processes_the_next_drops_duplicates_and_reports_a_gap_once() {
        let mut n = InboundSeq::after(0);
        assert_eq!(n.check(1), SeqVerdict::Next);
        assert_eq!(n.check(1), SeqVerdict::Duplicate);
        assert_eq!(
            n.check(3),
            SeqVerdict::Gap {
                notify: true,
                last: 1
            }
        );
        assert_eq!(
            n.check(4),
            SeqVerdict::Gap {
                notify: false,
                last: 1
            },
            "once per run"
        );
        assert_eq!(n.check(2), SeqVerdict::Next);
        assert_eq!(n.check(3), SeqVerdict::Next);
        assert_eq!(
            n.check(9),
            SeqVerdict::Gap {
                notify: true,
                last: 3
            },
            "a new run after progress"
        );
        let mut resumed = InboundSeq::after(41);
        assert_eq!(resumed.check(41), SeqVerdict::Duplicate);
        assert_eq!(resumed.check(42), SeqVerdict::Next);
        assert_eq!(resumed.last(), 42);
    }

    #[test]
    fn acks_are_owed_every_n_messages_or_an_interval_after_the_first_and_never_when_idle() {
        let t0 = Instant::now();
        let i = Duration::from_secs(5);
        let mut a = AckSchedule::after(0);
        assert_eq!(a.deadline(), None, "nothing owed: no timer");
        assert_eq!(a.received(t0, 1, 3, i), None);
        assert_eq!(a.deadline(), Some(t0 + i));
        assert_eq!(a.received(t0 + Duration::from_secs(1), 2, 3, i), None);
        assert_eq!(a.deadline(), Some(t0 + i), "counted from the first");
        assert_eq!(a.received(t0, 3, 3, i), Some(3), "every 3");
        assert_eq!(a.deadline(), None);
        assert_eq!(a.received(t0, 4, 3, i), None);
        assert_eq!(a.poll(t0 + Duration::from_secs(4), 4), None);
        assert_eq!(a.poll(t0 + i, 4), Some(4));
        assert_eq!(a.deadline(), None);
        assert_eq!(a.poll(t0 + i + i, 4), None, "nothing new, no ack");
    }

    #[test]
    fn ended_tokens_say_why_for_a_while_then_are_unknown() {
        let t0 = Instant::now();
        let mut t: Tokens<u32> = Tokens::new(Duration::from_secs(300));
        t.insert("A".into(), 1);
        assert_eq!(t.lookup(t0, "A"), TokenState::Live(1));
        assert_eq!(
            t.lookup(t0, "B"),
            TokenState::Ended(ResumeFailure::UnknownToken)
        );
        t.end(t0, "A", ResumeFailure::Expired);
        assert_eq!(t.lookup(t0, "A"), TokenState::Ended(ResumeFailure::Expired));
        assert_eq!(
            t.lookup(t0 + Duration::from_secs(299), "A"),
            TokenState::Ended(ResumeFailure::Expired)
        );
        assert_eq!(
            t.lookup(t0 + Duration::from_secs(300), "A"),
            TokenState::Ended(ResumeFailure::UnknownToken)
        );
        assert_eq!(t.ended_count(), 0);
        t.insert("K".into(), 2);
        t.end(t0, "K", ResumeFailure::UnknownToken);
        assert_eq!(
            t.lookup(t0, "K"),
            TokenState::Ended(ResumeFailure::UnknownToken),
            "kicked, left: forgotten at once"
        );
        assert_eq!(t.live_count(), 0);
    }

    proptest! {
        /// Whatever the interleaving of pushes, acks and resumes, a replay is exactly the
        /// frames after `lastSeq`, in order, and the counters match what is held.
        #[test]
        fn a_replay_is_exactly_what_followed(ops in proptest::collection::vec((0u8..3, 0u64..20), 0..60)) {
            let limits = ReplayLimits { messages: 8, bytes: 1 << 20 };
            let mut r = ReplayBuffer::new();
            let mut acked = 0;
            for (op, n) in ops {
                match op {
                    0 => { let _ = r.push(Bytes::from(format!("{{\"n\":{n}}}")), &limits); }
                    1 => if r.ack(n).is_ok() { acked = acked.max(n) },
                    _ => match r.replay_after(n) {
                        Ok(frames) => {
                            acked = acked.max(n);
                            let seqs: Vec<u64> = frames.iter().map(|(s, _)| *s).collect();
                            let expected: Vec<u64> = (n + 1..=r.last_sent()).collect();
                            prop_assert_eq!(seqs, expected);
                        }
                        Err(ReplayError::Dropped) => prop_assert!(n < acked),
                        Err(ReplayError::AboveSent { last_sent }) => prop_assert!(n > last_sent),
                    },
                }
                prop_assert_eq!(r.len() as u64, r.last_sent() - acked.min(r.last_sent()));
                prop_assert!(r.len() <= limits.messages);
            }
        }
    }
}
