//! The responder (sender) of the media stream (issue 13 §3, D12-D17, D26-D27), sans-IO.
//!
//! The responder is what `loudsync media serve` runs: it waits for initiators, answers START
//! with START_ACK, and streams paced DATA frames only after the initiator has proven it owns
//! its address by echoing the connection id in START_CONFIRM (a 3-way handshake, so a spoofed
//! source address never receives media). It owns no socket and no clock:
//!
//! - the I/O layer hands every received datagram to [`Responder::handle_datagram`] with the
//!   current time and the source address (the *tuple* all state is keyed by);
//! - it drains what to send with [`Responder::poll_transmit`] until `None`;
//! - it sleeps until [`Responder::poll_timeout`] (or the next datagram) and then calls
//!   [`Responder::handle_timeout`], which expires unconfirmed reservations (D14) and queues the
//!   DATA frames that have fallen due (D26).
//!
//! Each datagram is validated in the order of D12: (1) unknown flags, DATA, START_ACK and
//! LEGACY_ID are dropped; (2) START and START_CONFIRM shorter than 256 bytes are dropped; (3) a
//! bad version is answered with ERROR 1; (4) bad TLVs with ERROR 2; (5) START: unknown stream
//! ERROR 3, another stream ERROR 4, a duplicate gets the byte-identical START_ACK, a full house
//! ERROR 5, else a reservation; (6) START_CONFIRM: no state drop, a wrong id or stream ERROR 4,
//! pending becomes streaming, streaming ignores it. Sending an ERROR tears the tuple's state
//! down; receiving one does too, silently. Every reply answers a datagram of at least 256 bytes
//! and is at most 141 bytes, so the responder never amplifies (the opt-in legacy START, D28,
//! knowingly does).
//!
//! A streaming tuple's frame with sequence number s is due at `base + (s-1) * 10^9 / fps` ns,
//! base being the moment START_CONFIRM was accepted (so frame 1 goes at once); each frame is
//! split into fragments by [`StreamParams::fragments`] ([`pacer::synthetic_frame`]), every
//! fragment stamped with the frame's sequence number and the counter (nanoseconds since the
//! responder was made, frequency 10^9).
//! After the last frame the tuple's state is dropped (D17).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use loudsync_protocol::media::{
    encode_error, encode_legacy_id, encode_start_ack, ConnectionId, ControlBody, DataHeader,
    ErrorCode, StreamId, StreamParams, FREQUENCY,
};

use crate::media::pacer;
use crate::media::screen::{screen, Screened};
use crate::Now;

/// The default `--max-streams`: tuples pending or streaming at once (D14).
pub const DEFAULT_MAX_STREAMS: usize = 64;
/// The default `--confirm-timeout` (D14).
pub const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// The number of frames of a stream of `duration` at `fps` (D27): `round(duration x fps)`,
/// half up, at least 1.
pub fn frame_count(duration: Duration, fps: u32) -> u64 {
    let n = (duration.as_nanos() * u128::from(fps) + 500_000_000) / 1_000_000_000;
    u64::try_from(n).unwrap_or(u64::MAX).max(1)
}

/// What the responder serves and how it limits itself.
#[derive(Debug, Clone)]
pub struct ResponderConfig {
    /// The one stream served (`--stream-id`, D13); a START naming another gets ERROR 3.
    pub stream_id: StreamId,
    /// Tuples pending or streaming at once (`--max-streams`, D14); a START beyond gets ERROR 5.
    pub max_streams: usize,
    /// How long a reservation waits for START_CONFIRM after the last START (D14).
    pub confirm_timeout: Duration,
    /// Frame and datagram sizes (D23, D24).
    pub params: StreamParams,
    /// Frames per second (D26), at least 1.
    pub fps: u32,
    /// Frames per stream (D27, see [`frame_count`]), at least 1.
    pub frames: u64,
    /// Answer the 5-byte legacy START (`--legacy-start`, D28).
    pub legacy_start: bool,
}

impl ResponderConfig {
    /// A configuration with the default limits (64 streams, 5 s confirm timeout, no legacy
    /// START). `fps` and `frames` are raised to at least 1.
    pub fn new(stream_id: StreamId, params: StreamParams, fps: u32, frames: u64) -> Self {
        ResponderConfig {
            stream_id,
            max_streams: DEFAULT_MAX_STREAMS,
            confirm_timeout: DEFAULT_CONFIRM_TIMEOUT,
            params,
            fps: fps.max(1),
            frames: frames.max(1),
            legacy_start: false,
        }
    }
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The destination (the tuple).
    pub to: SocketAddr,
    /// The UDP payload.
    pub bytes: Vec<u8>,
}

/// Where connection ids come from: 16 random bytes per id, made into a v4 UUID by
/// [`ConnectionId::from_random`]. The server injects a secure source, tests a counter.
pub type IdRandomness = Box<dyn FnMut() -> [u8; 16] + Send>;

/// What a tuple is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// START_ACK sent; waiting for START_CONFIRM until `deadline`.
    Pending { deadline: Instant },
    /// Confirmed at `base`; `next` frames (indices 0..next) already queued.
    Streaming { base: Instant, next: u64 },
}

/// The state held for one tuple.
#[derive(Debug, Clone)]
struct Tuple {
    id: ConnectionId,
    stream_id: StreamId,
    /// The START_ACK sent, resent byte for byte to a duplicate START (D12, D16); `None` for a
    /// legacy stream.
    start_ack: Option<Vec<u8>>,
    phase: Phase,
}

/// Observable state of one tuple, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TupleState {
    /// START_ACK sent, no START_CONFIRM yet.
    PendingConfirm,
    /// Streaming; `sent` frames queued so far.
    Streaming {
        /// Frames already queued.
        sent: u64,
    },
}

/// The responder state machine (see the module comment).
pub struct Responder {
    config: ResponderConfig,
    ids: IdRandomness,
    epoch: Instant,
    tuples: BTreeMap<SocketAddr, Tuple>,
    out: VecDeque<Transmit>,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("config", &self.config)
            .field("tuples", &self.tuples)
            .field("queued", &self.out.len())
            .finish()
    }
}

impl Responder {
    /// A responder serving `config`, drawing connection ids from `ids`. `now` is the counter's
    /// origin: DATA timestamps are nanoseconds since it (D22).
    pub fn new(config: ResponderConfig, now: Now, ids: IdRandomness) -> Responder {
        Responder {
            config,
            ids,
            epoch: now.instant,
            tuples: BTreeMap::new(),
            out: VecDeque::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ResponderConfig {
        &self.config
    }

    /// Tuples pending or streaming (what counts toward `max_streams`).
    pub fn len(&self) -> usize {
        self.tuples.len()
    }

    /// No tuple holds state.
    pub fn is_empty(&self) -> bool {
        self.tuples.is_empty()
    }

    /// The state held for `tuple`, if any.
    pub fn state(&self, tuple: SocketAddr) -> Option<TupleState> {
        self.tuples.get(&tuple).map(|t| match t.phase {
            Phase::Pending { .. } => TupleState::PendingConfirm,
            Phase::Streaming { next, .. } => TupleState::Streaming { sent: next },
        })
    }

    /// The connection id assigned to `tuple`, if it holds state.
    pub fn connection_id(&self, tuple: SocketAddr) -> Option<ConnectionId> {
        self.tuples.get(&tuple).map(|t| t.id)
    }

    /// A datagram arrived from `from`: validate it in D12's order and queue any reply (and, on
    /// an accepted START_CONFIRM, the frames already due, i.e. frame 1).
    pub fn handle_datagram(&mut self, now: Now, from: SocketAddr, bytes: &[u8]) {
        self.expire(now.instant);
        let frame = match screen(bytes) {
            Screened::Frame(frame) => frame,
            Screened::LegacyStart => return self.on_legacy_start(now, from),
            Screened::Refuse(code, stream_id) => {
                return self.refuse(from, code, stream_id.as_ref())
            }
            // `media serve` takes no DATA.
            Screened::Drop | Screened::Data => return,
        };
        match frame.body {
            ControlBody::Start { stream_id, .. } => self.on_start(now, from, stream_id),
            ControlBody::StartConfirm { stream_id } => {
                self.on_confirm(now, from, frame.connection_id, stream_id)
            }
            ControlBody::Error { .. } => {
                self.tuples.remove(&from);
            }
            ControlBody::StartAck { .. } => {}
        }
    }

    /// The next datagram to send, oldest first.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// When [`Responder::handle_timeout`] next has something to do: the earliest pending
    /// expiry or next frame due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.tuples
            .values()
            .map(|t| match t.phase {
                Phase::Pending { deadline } => deadline,
                Phase::Streaming { base, next } => base + self.offset(next),
            })
            .min()
    }

    /// Time passed: expire reservations whose confirm timeout ran out (D14) and queue every
    /// frame due by `now` (D26; a late frame goes at once, none is skipped).
    pub fn handle_timeout(&mut self, now: Now) {
        self.expire(now.instant);
        let due: Vec<SocketAddr> = self
            .tuples
            .iter()
            .filter(|(_, t)| matches!(t.phase, Phase::Streaming { .. }))
            .map(|(addr, _)| *addr)
            .collect();
        for addr in due {
            self.pump(now, addr);
        }
    }

    /// Drops reservations whose deadline is at or before `now`.
    fn expire(&mut self, now: Instant) {
        self.tuples
            .retain(|_, t| !matches!(t.phase, Phase::Pending { deadline } if deadline <= now));
    }

    /// Frame index `n`'s offset from base: `n * 10^9 / fps` ns, without accumulated rounding.
    fn offset(&self, n: u64) -> Duration {
        pacer::frame_offset(n, self.config.fps)
    }

    /// Sends ERROR `code` to `to` and tears its state down (D11).
    fn refuse(&mut self, to: SocketAddr, code: ErrorCode, stream_id: Option<&StreamId>) {
        let id = self
            .tuples
            .remove(&to)
            .map(|t| t.id)
            .unwrap_or(ConnectionId::ZERO);
        self.out.push_back(Transmit {
            to,
            bytes: encode_error(code, &id, stream_id),
        });
    }

    /// D12 step 5.
    fn on_start(&mut self, now: Now, from: SocketAddr, stream_id: StreamId) {
        if stream_id != self.config.stream_id {
            return self.refuse(from, ErrorCode::UnknownStream, Some(&stream_id));
        }
        let confirm_timeout = self.config.confirm_timeout;
        if let Some(tuple) = self.tuples.get_mut(&from) {
            if tuple.stream_id != stream_id {
                return self.refuse(from, ErrorCode::StreamMismatch, Some(&stream_id));
            }
            if let Phase::Pending { deadline } = &mut tuple.phase {
                *deadline = now.instant + confirm_timeout;
            }
            if let Some(ack) = &tuple.start_ack {
                let bytes = ack.clone();
                self.out.push_back(Transmit { to: from, bytes });
            }
            return;
        }
        if self.tuples.len() >= self.config.max_streams {
            return self.refuse(from, ErrorCode::Refused, Some(&stream_id));
        }
        let id = ConnectionId::from_random((self.ids)());
        let ack = encode_start_ack(&id, &stream_id);
        self.out.push_back(Transmit {
            to: from,
            bytes: ack.clone(),
        });
        self.tuples.insert(
            from,
            Tuple {
                id,
                stream_id,
                start_ack: Some(ack),
                phase: Phase::Pending {
                    deadline: now.instant + confirm_timeout,
                },
            },
        );
    }

    /// D12 step 6.
    fn on_confirm(&mut self, now: Now, from: SocketAddr, id: ConnectionId, stream_id: StreamId) {
        let Some(tuple) = self.tuples.get_mut(&from) else {
            return;
        };
        if tuple.id != id || tuple.stream_id != stream_id {
            return self.refuse(from, ErrorCode::StreamMismatch, Some(&stream_id));
        }
        if let Phase::Pending { .. } = tuple.phase {
            tuple.phase = Phase::Streaming {
                base: now.instant,
                next: 0,
            };
            self.pump(now, from);
        }
    }

    /// D28: the opt-in legacy START streams at once to a tuple with no state.
    fn on_legacy_start(&mut self, now: Now, from: SocketAddr) {
        if !self.config.legacy_start
            || self.tuples.contains_key(&from)
            || self.tuples.len() >= self.config.max_streams
        {
            return;
        }
        let id = ConnectionId::from_random((self.ids)());
        self.out.push_back(Transmit {
            to: from,
            bytes: encode_legacy_id(&id).to_vec(),
        });
        self.tuples.insert(
            from,
            Tuple {
                id,
                stream_id: self.config.stream_id.clone(),
                start_ack: None,
                phase: Phase::Streaming {
                    base: now.instant,
                    next: 0,
                },
            },
        );
        self.pump(now, from);
    }

    /// Queues every frame of `addr`'s stream due by `now`; drops the tuple after the last.
    fn pump(&mut self, now: Now, addr: SocketAddr) {
        let timestamp = pacer::counter(self.epoch, now.instant);
        let Some(Phase::Streaming { base, mut next }) = self.tuples.get(&addr).map(|t| t.phase)
        else {
            return;
        };
        while next < self.config.frames && base + self.offset(next) <= now.instant {
            let header = DataHeader {
                sequence: i64::try_from(next + 1).unwrap_or(i64::MAX),
                timestamp,
                frequency: FREQUENCY,
            };
            for bytes in pacer::synthetic_frame(&self.config.params, &header) {
                self.out.push_back(Transmit { to: addr, bytes });
            }
            next += 1;
        }
        if next >= self.config.frames {
            self.tuples.remove(&addr);
        } else if let Some(tuple) = self.tuples.get_mut(&addr) {
            tuple.phase = Phase::Streaming { base, next };
        }
    }
}

#[cfg(test)]
#[path = "responder_tests.rs"]
mod tests;
