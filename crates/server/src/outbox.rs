//! A member's outbound queue: the one path every server-to-client frame takes.
//!
//! Producers (the session, the member's own driver) push already-encoded frames; the
//! transport's task drains them. The queue is bounded in bytes by the core's slow-consumer
//! rule ([`loudsync_core::outbound`]): a push the rule refuses marks the outbox overflowed and
//! wakes the transport's task, which disconnects the member as too slow instead of letting
//! memory grow. A resumable member's numbered frames are kept (for a replay) by its place in
//! the session, not here; a replay is queued without counting toward the bound (it is held in
//! the replay buffer already), and frames queued behind it count as usual.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::Waker;

use std::time::Instant;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use loudsync_core::outbound::{Admit, Backlog, OutboundLimits};

/// One queued frame.
#[derive(Debug, Clone, PartialEq)]
pub enum OutFrame {
    /// A JSON text frame, shared by every recipient of a broadcast.
    Text(Bytes),
    /// A numbered JSON text frame (a resumable member's): written as `{"seq":N,` followed by
    /// the shared bytes without their opening brace.
    Numbered(u64, Bytes),
    /// A WebSocket ping control frame (latency measurement).
    Ping([u8; 8]),
    /// Close the socket with this code and reason; nothing after it is sent.
    Close(u16, String),
}

/// What the consumer must know on waking: see [`Outbox::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxStatus {
    /// A push overflowed the limits: the member is too slow.
    pub overflowed: bool,
    /// A close was queued.
    pub closed: bool,
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<OutFrame>,
    bytes: usize,
    backlog: Backlog,
    overflowed: bool,
    closed: bool,
}

/// A bounded, byte-counted queue with a single consumer.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    waker: AtomicWaker,
    limits: OutboundLimits,
    /// Set by [`Outbox::enqueue`] until [`Outbox::notify`]: whether a wake-up is owed.
    wake_owed: AtomicBool,
}

impl Outbox {
    /// An empty outbox bounded by `limits`.
    pub fn new(limits: OutboundLimits) -> Self {
        Outbox {
            state: Mutex::new(State::default()),
            waker: AtomicWaker::new(),
            limits,
            wake_owed: AtomicBool::new(false),
        }
    }

    /// Queues a frame. Returns `false` if it was not queued: the outbox is closed, or this
    /// frame overflowed it (the consumer is woken to drop the member).
    pub fn push(&self, frame: OutFrame, now: Instant) -> bool {
        let queued = self.enqueue(frame, now).is_some();
        if queued {
            self.notify();
        }
        queued
    }

    /// Like [`Outbox::push`] but without waking the consumer: a producer queuing several frames
    /// for many members (a session handling a batch of inputs) wakes each consumer once, with
    /// [`Outbox::notify`], so the consumer writes them in one go. An overflow still wakes.
    ///
    /// Returns `None` if the frame was not queued, else whether this is the first frame since
    /// the last [`Outbox::notify`] (the producer then owes one notify).
    pub fn enqueue(&self, frame: OutFrame, now: Instant) -> Option<bool> {
        self.queue(frame, now)?;
        Some(!self.wake_owed.swap(true, Ordering::AcqRel))
    }

    /// Queues a frame from the consumer's own side (the member driver's replies and probes):
    /// no wake-up, since the consumer drains the outbox before it next waits (waking itself
    /// would only cost a second poll and, on a multi-thread runtime, possibly an unpark of
    /// another worker), and no wake owed either, so producers' [`Outbox::enqueue`] still sees
    /// the first-frame flag as it was. Returns `false` if not queued (closed, or the frame
    /// overflowed the queue: then the consumer is woken as usual).
    pub fn push_own(&self, frame: OutFrame, now: Instant) -> bool {
        self.queue(frame, now).is_some()
    }

    /// Queues a frame under the slow-consumer rule; `None` if refused (an overflow wakes the
    /// consumer to drop the member).
    fn queue(&self, frame: OutFrame, now: Instant) -> Option<()> {
        let mut st = self.state.lock().expect("outbox lock");
        if st.closed || st.overflowed {
            return None;
        }
        match &frame {
            OutFrame::Text(b) | OutFrame::Numbered(_, b) => {
                let queued = st.bytes;
                if st.backlog.admit(&self.limits, now, queued, b.len()) == Admit::TooSlow {
                    st.overflowed = true;
                    drop(st);
                    self.waker.wake();
                    return None;
                }
                st.bytes += b.len();
            }
            OutFrame::Close(..) => st.closed = true,
            OutFrame::Ping(_) => {}
        }
        st.frames.push_back(frame);
        Some(())
    }

    /// Queues a frame without counting it toward the slow-consumer bound (a resume's replay,
    /// and the frames before it); the producer wakes the consumer. Returns `false` if closed.
    pub fn push_uncounted(&self, frame: OutFrame, _now: Instant) -> bool {
        let mut st = self.state.lock().expect("outbox lock");
        if st.closed || st.overflowed {
            return false;
        }
        st.frames.push_back(frame);
        true
    }

    /// Wakes the consumer (after [`Outbox::enqueue`]).
    pub fn notify(&self) {
        self.wake_owed.store(false, Ordering::Release);
        self.waker.wake();
    }

    /// Registers the consumer's waker; call before [`Outbox::drain_into`] so no push is missed.
    pub fn register(&self, waker: &Waker) {
        self.waker.register(waker);
    }

    /// Moves every queued frame into `into` (one lock for all of them).
    pub fn drain_into(&self, into: &mut VecDeque<OutFrame>) {
        let mut st = self.state.lock().expect("outbox lock");
        if st.frames.is_empty() {
            return;
        }
        st.bytes = 0;
        if into.is_empty() {
            std::mem::swap(into, &mut st.frames);
        } else {
            into.extend(st.frames.drain(..));
        }
    }

    /// Takes the next frame (tests; the socket task drains everything at once).
    #[cfg(test)]
    pub(crate) fn pop(&self) -> Option<OutFrame> {
        let mut st = self.state.lock().expect("outbox lock");
        let frame = st.frames.pop_front()?;
        if let OutFrame::Text(b) | OutFrame::Numbered(_, b) = &frame {
            st.bytes = st.bytes.saturating_sub(b.len());
        }
        Some(frame)
    }

    /// Queues a close even past an overflow (dropping what an overflowed queue holds, since
    /// that member is being disconnected for not reading it). Ignored once closed.
    pub fn force_close(&self, code: u16, reason: String) {
        let mut st = self.state.lock().expect("outbox lock");
        if st.closed {
            return;
        }
        if st.overflowed {
            st.frames.clear();
            st.bytes = 0;
        }
        st.closed = true;
        st.frames.push_back(OutFrame::Close(code, reason));
        drop(st);
        self.waker.wake();
    }

    /// Whether a close was queued (the socket is to be closed).
    pub fn is_closed(&self) -> bool {
        self.status().closed
    }

    /// Whether a push overflowed the limit.
    pub fn overflowed(&self) -> bool {
        self.status().overflowed
    }

    /// Both flags in one lock (the consumer looks at them on every wake-up).
    pub fn status(&self) -> OutboxStatus {
        let st = self.state.lock().expect("outbox lock");
        OutboxStatus {
            overflowed: st.overflowed,
            closed: st.closed,
        }
    }

    /// Bytes of text frames waiting.
    pub fn queued_bytes(&self) -> usize {
        self.state.lock().expect("outbox lock").bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loudsync_protocol::close_code;
    use std::time::Duration;

    /// A strict outbox: `soft` bytes, no grace, so anything over it is too slow at once.
    fn outbox(soft: usize) -> Outbox {
        Outbox::new(OutboundLimits {
            soft_bytes: soft,
            hard_bytes: soft,
            grace: Duration::ZERO,
        })
    }

    fn t() -> Instant {
        Instant::now()
    }

    #[test]
    fn keeps_order_and_counts_bytes() {
        let o = outbox(100);
        assert!(o.push(OutFrame::Text(Bytes::from_static(b"abc")), t()));
        assert!(o.push(OutFrame::Ping([1; 8]), t()));
        assert_eq!(o.queued_bytes(), 3);
        assert_eq!(o.pop(), Some(OutFrame::Text(Bytes::from_static(b"abc"))));
        assert_eq!(o.pop(), Some(OutFrame::Ping([1; 8])));
        assert_eq!(o.pop(), None);
        assert_eq!(o.queued_bytes(), 0);
    }

    #[test]
    fn overflow_refuses_and_flags() {
        let o = outbox(10);
        assert!(o.push(OutFrame::Text(Bytes::from(vec![0; 8])), t()));
        assert!(!o.push(OutFrame::Text(Bytes::from(vec![0; 8])), t()));
        assert!(o.overflowed());
        assert!(!o.push(OutFrame::Text(Bytes::from(vec![0; 1])), t()));
        // The disconnect still gets its close frame, and only it.
        o.force_close(close_code::POLICY_VIOLATION, "slow".into());
        assert_eq!(
            o.pop(),
            Some(OutFrame::Close(close_code::POLICY_VIOLATION, "slow".into()))
        );
        assert_eq!(o.pop(), None);
    }

    #[test]
    fn one_large_frame_fits_an_empty_queue() {
        let o = outbox(10);
        assert!(o.push(OutFrame::Text(Bytes::from(vec![0; 50])), t()));
        assert!(!o.overflowed());
        assert!(!o.push(OutFrame::Text(Bytes::from(vec![0; 1])), t()));
        assert!(o.overflowed());
    }

    #[test]
    fn enqueue_then_drain_in_one_go() {
        let o = outbox(100);
        assert_eq!(
            o.enqueue(OutFrame::Text(Bytes::from_static(b"ab")), t()),
            Some(true)
        );
        assert_eq!(
            o.enqueue(OutFrame::Text(Bytes::from_static(b"cd")), t()),
            Some(false),
            "one notify owed"
        );
        o.notify();
        assert_eq!(o.enqueue(OutFrame::Ping([0; 8]), t()), Some(true));
        assert_eq!(o.queued_bytes(), 4);
        let mut local = VecDeque::new();
        o.drain_into(&mut local);
        assert_eq!(local.len(), 3);
        assert_eq!(o.queued_bytes(), 0);
        assert_eq!(o.pop(), None);
    }

    #[test]
    fn own_frames_owe_no_wake_up_and_leave_the_producers_flag_alone() {
        let o = outbox(100);
        assert!(o.push_own(OutFrame::Ping([1; 8]), t()));
        assert!(o.push_own(OutFrame::Text(Bytes::from_static(b"pong")), t()));
        // A producer's first frame still owes the wake-up.
        assert_eq!(
            o.enqueue(OutFrame::Text(Bytes::from_static(b"x")), t()),
            Some(true)
        );
        assert_eq!(o.queued_bytes(), 5);
        assert!(!o.push_own(OutFrame::Text(Bytes::from(vec![0; 200])), t()));
        assert!(o.overflowed(), "own frames obey the limits too");
    }

    #[test]
    fn nothing_after_close() {
        let o = outbox(10);
        assert!(o.push(OutFrame::Close(close_code::NORMAL, "bye".into()), t()));
        assert!(!o.push(OutFrame::Text(Bytes::from_static(b"x")), t()));
        assert!(!o.push(OutFrame::Close(close_code::GOING_AWAY, "again".into()), t()));
    }
}
