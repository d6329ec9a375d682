//! The publisher of a relayed session stream (issue 13 §9, R7), sans-IO: an initiator's
//! handshake (START with a publish token, START_ACK, START_CONFIRM) followed by sending DATA
//! to the relay.
//!
//! **Driving it.** The driver (the host's client) creates a [`Publisher`] with
//! [`Publisher::new`] and loops: send every datagram [`Publisher::poll_transmit`] hands out
//! to the relay (the first START is ready at once), feed every datagram received from the
//! relay to [`Publisher::handle_datagram`], and call [`Publisher::handle_timeout`] when the
//! instant of [`Publisher::poll_timeout`] has come. [`Publisher::outcome`] says how it ended.
//!
//! **The handshake** is the initiator's (D18, D19, [`crate::media::initiator`]):
//!
//! ```text
//!  AwaitAck ──START_ACK, our STREAM_ID──▶ Streaming ──frame N sent (frames: Some(N))──▶ Done
//!     │ START (MEDIA_TOKEN) at 0, +500,      │ START_CONFIRM at 0, +500, +1500 ms
//!     │ +1500 ms                             │ duplicate START_ACK: the same CONFIRM again
//!     ├─ nothing 2 s after the last START ─▶ NoStartAck (exit 5)
//!     ├─ START_ACK, other STREAM_ID ───────▶ ERROR 4 sent, Refused(4) (exit 6)
//!     └─ ERROR (any phase but Done) ───────▶ Refused(code) (exit 6)
//! ```
//!
//! The schedules are [`RetrySchedule`]'s (`retry_initial` doubling, capped at `retry_max`,
//! `retry_attempts` sends). Nothing comes back to confirm the confirm (the relay sends no
//! DATA to a publisher, R7), so START_CONFIRM is sent `retry_attempts` times in all and then
//! no more; the relay ignores the duplicates (D12 step 6).
//!
//! **The stream** starts with the first START_CONFIRM: its send is the base of the pacing, and
//! no DATA is queued before it. What is sent depends on [`Source`]:
//!
//! - [`Source::Synthetic`]: the synthetic pattern of `media serve` (D24-D27): the frame with
//!   sequence number s is due at `base + (s - 1) * 10^9 / fps` ns, so frame 1 goes with the
//!   first START_CONFIRM; each frame is [`StreamParams::fragments`]'s datagrams with the
//!   pattern of D25. `frames: Some(N)` ends with [`Outcome::Finished`] after frame N (a
//!   START_CONFIRM resend still pending is dropped then); `None` streams until the publisher
//!   is dropped.
//! - [`Source::Application`]: no timer of its own; each [`Publisher::send_frame`] is the next
//!   frame (sequence numbers from 1), its payload cut into datagrams of at most the datagram
//!   size, each with the 26-byte header ([`pacer::application_frame`]). The application paces.
//!
//! Every DATA datagram is stamped at the moment it is queued with the counter (nanoseconds
//! since [`Publisher::new`], frequency 10^9, D22).

use std::time::{Duration, Instant};

use loudsync_protocol::media::{
    classify, decode_control, encode_error, encode_start, encode_start_confirm, ConnectionId,
    ControlBody, DataHeader, DatagramKind, ErrorCode, MediaToken, StreamId, StreamParams,
    FREQUENCY,
};

use crate::media::initiator::Outcome;
use crate::media::pacer::{self, RetrySchedule, RetryStep};
use crate::Now;

/// What the publisher streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The paced synthetic pattern (D24-D27): `frames` frames, or `None` until dropped.
    Synthetic {
        /// The number of frames N (D27), or `None` for no end.
        frames: Option<u64>,
    },
    /// The application's own frames, through [`Publisher::send_frame`].
    Application,
}

/// What the publisher is configured with.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// The STREAM_ID: the session id (R6).
    pub stream_id: StreamId,
    /// The publish token from the `media_token` reply (R2), sent in START.
    pub media_token: MediaToken,
    /// The first retry timeout (500 ms, D18).
    pub retry_initial: Duration,
    /// The largest retry timeout (2 s).
    pub retry_max: Duration,
    /// How many times START (and START_CONFIRM) is sent in all (3); 0 is taken as 1.
    pub retry_attempts: u32,
    /// Frame size and datagram size (D23, D24); for [`Source::Application`] only the datagram
    /// size matters.
    pub params: StreamParams,
    /// Frames per second of the synthetic pattern (at least 1).
    pub fps: u32,
    /// What is streamed.
    pub source: Source,
    /// The instant the DATA counter counts nanoseconds from (D22); `None`: the `now` given
    /// to [`Publisher::new`]. The SDK's driver gives the host's monotonic clock's zero, so a
    /// subscriber on the same host measures the real time in flight.
    pub clock_origin: Option<Instant>,
}

impl PublisherConfig {
    /// D18's retry defaults (500 ms, 2 s, 3 attempts) and the synthetic pattern of `frames`
    /// frames (`None`: until dropped).
    pub fn new(
        stream_id: StreamId,
        media_token: MediaToken,
        params: StreamParams,
        fps: u32,
        frames: Option<u64>,
    ) -> PublisherConfig {
        PublisherConfig {
            stream_id,
            media_token,
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(2),
            retry_attempts: 3,
            params,
            fps,
            source: Source::Synthetic { frames },
            clock_origin: None,
        }
    }

    /// The same defaults for an application that sends its own frames
    /// ([`Publisher::send_frame`]); `params` gives the datagram size.
    pub fn application(
        stream_id: StreamId,
        media_token: MediaToken,
        params: StreamParams,
    ) -> PublisherConfig {
        PublisherConfig {
            source: Source::Application,
            ..PublisherConfig::new(stream_id, media_token, params, 1, None)
        }
    }
}

/// The publisher's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// START sent, waiting for START_ACK.
    AwaitAck,
    /// START_CONFIRM sent; DATA flows.
    Streaming,
    /// Over: see [`Publisher::outcome`].
    Done,
}

/// Why [`Publisher::send_frame`] sent nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendFrameError {
    /// The handshake has not completed (no START_CONFIRM sent yet).
    NotStreaming,
    /// The publisher is done (refused, given up, or its synthetic frames all sent).
    Done,
    /// The publisher streams the synthetic pattern ([`Source::Synthetic`]).
    Synthetic,
}

impl std::fmt::Display for SendFrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SendFrameError::NotStreaming => "the media handshake has not completed",
            SendFrameError::Done => "the media stream is over",
            SendFrameError::Synthetic => "this publisher streams the synthetic pattern",
        })
    }
}

impl std::error::Error for SendFrameError {}

/// The publisher state machine (see the module comment).
#[derive(Debug)]
pub struct Publisher {
    config: PublisherConfig,
    epoch: Instant,
    phase: Phase,
    outcome: Option<Outcome>,
    transmit: Vec<Vec<u8>>,
    /// START (AwaitAck) or START_CONFIRM (Streaming) and its schedule.
    retry: Option<(Vec<u8>, RetrySchedule)>,
    connection_id: ConnectionId,
    confirm: Vec<u8>,
    /// The first START_CONFIRM's send: frame index n is due at base + n / fps.
    base: Option<Instant>,
    /// Frames sent so far (the next frame's sequence number minus 1).
    sent: u64,
}

impl Publisher {
    /// A publisher whose first START is ready to send at `now`; the DATA counter counts from
    /// [`PublisherConfig::clock_origin`], or from `now` when it is `None`.
    pub fn new(config: PublisherConfig, now: Now) -> Publisher {
        let start = encode_start(&config.stream_id, Some(&config.media_token));
        let epoch = config.clock_origin.unwrap_or(now.instant);
        let mut publisher = Publisher {
            config,
            epoch,
            phase: Phase::AwaitAck,
            outcome: None,
            transmit: Vec::new(),
            retry: None,
            connection_id: ConnectionId::ZERO,
            confirm: Vec::new(),
            base: None,
            sent: 0,
        };
        publisher.begin_retry(start, now.instant);
        publisher
    }

    /// The configuration.
    pub fn config(&self) -> &PublisherConfig {
        &self.config
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// How it ended, once it has: [`Outcome::Finished`] (every synthetic frame sent),
    /// [`Outcome::NoStartAck`] or [`Outcome::Refused`]; never [`Outcome::NoData`].
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
    }

    /// Frames sent so far (each of one or more datagrams).
    pub fn sent_frames(&self) -> u64 {
        self.sent
    }

    /// The connection id the relay assigned (once START_ACK arrived).
    pub fn connection_id(&self) -> Option<&ConnectionId> {
        (!self.connection_id.is_zero()).then_some(&self.connection_id)
    }

    /// The next datagram to send to the relay, oldest first.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.transmit.is_empty() {
            None
        } else {
            Some(self.transmit.remove(0))
        }
    }

    /// When [`Publisher::handle_timeout`] is next due: a resend, the give-up, or the next
    /// synthetic frame (`None` once done, or when nothing is scheduled).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retry = self.retry.as_ref().and_then(|(_, r)| r.deadline());
        let frame = match (self.phase, self.base, self.config.source) {
            (Phase::Streaming, Some(base), Source::Synthetic { .. }) => {
                Some(pacer::frame_due(base, self.sent, self.config.fps))
            }
            _ => None,
        };
        [retry, frame].into_iter().flatten().min()
    }

    /// Resends START or START_CONFIRM when due, gives up (D18), and queues every synthetic
    /// frame due by `now` (D26: a late frame goes at once, none is skipped).
    pub fn handle_timeout(&mut self, now: Now) {
        if self.phase == Phase::Done {
            return;
        }
        if let Some((bytes, schedule)) = self.retry.as_mut() {
            match schedule.poll(now.instant) {
                RetryStep::Send => self.transmit.push(bytes.clone()),
                RetryStep::Exhausted => {
                    self.retry = None;
                    if self.phase == Phase::AwaitAck {
                        return self.finish(Outcome::NoStartAck);
                    }
                }
                RetryStep::Wait => {}
            }
        }
        self.pump(now);
    }

    /// Takes one datagram from the relay: START_ACK and ERROR matter, the rest is ignored.
    pub fn handle_datagram(&mut self, now: Now, datagram: &[u8]) {
        if self.phase == Phase::Done || !matches!(classify(datagram), DatagramKind::Control(_)) {
            return;
        }
        let Ok(frame) = decode_control(datagram) else {
            return;
        };
        match frame.body {
            // Once a START_ACK named our connection id, only an ERROR carrying it ends us: a
            // forged ERROR from the responder's address must also guess the id.
            ControlBody::Error { .. }
                if !self.connection_id.is_zero() && frame.connection_id != self.connection_id => {}
            ControlBody::Error { code, .. } => self.finish(Outcome::Refused(code)),
            ControlBody::StartAck { stream_id } => match self.phase {
                Phase::AwaitAck if stream_id != self.config.stream_id => {
                    self.transmit.push(encode_error(
                        ErrorCode::StreamMismatch,
                        &frame.connection_id,
                        Some(&self.config.stream_id),
                    ));
                    self.finish(Outcome::Refused(ErrorCode::StreamMismatch.code()));
                }
                Phase::AwaitAck => {
                    self.connection_id = frame.connection_id;
                    self.confirm =
                        encode_start_confirm(&self.connection_id, &self.config.stream_id);
                    self.phase = Phase::Streaming;
                    self.base = Some(now.instant);
                    self.begin_retry(self.confirm.clone(), now.instant);
                    self.pump(now);
                }
                Phase::Streaming if stream_id == self.config.stream_id => {
                    self.transmit.push(self.confirm.clone());
                }
                Phase::Streaming | Phase::Done => {}
            },
            ControlBody::Start { .. } | ControlBody::StartConfirm { .. } => {}
        }
    }

    /// Sends one application frame (only with [`Source::Application`], once streaming): the
    /// next sequence number, `payload` cut into datagrams of at most the datagram size, each
    /// with the 26-byte header. Returns the frame's sequence number.
    pub fn send_frame(&mut self, now: Now, payload: &[u8]) -> Result<i64, SendFrameError> {
        match (self.phase, self.config.source) {
            (Phase::Done, _) => Err(SendFrameError::Done),
            (_, Source::Synthetic { .. }) => Err(SendFrameError::Synthetic),
            (Phase::AwaitAck, _) => Err(SendFrameError::NotStreaming),
            (Phase::Streaming, Source::Application) => {
                let header = self.next_header(now);
                let size = self.config.params.datagram_size();
                self.transmit
                    .extend(pacer::application_frame(size, &header, payload));
                Ok(header.sequence)
            }
        }
    }

    /// The header of the next frame, counted as sent.
    fn next_header(&mut self, now: Now) -> DataHeader {
        self.sent += 1;
        DataHeader {
            sequence: i64::try_from(self.sent).unwrap_or(i64::MAX),
            timestamp: pacer::counter(self.epoch, now.instant),
            frequency: FREQUENCY,
        }
    }

    /// Queues every synthetic frame due by `now`; finishes after the last.
    fn pump(&mut self, now: Now) {
        let (Phase::Streaming, Some(base), Source::Synthetic { frames }) =
            (self.phase, self.base, self.config.source)
        else {
            return;
        };
        let more = |sent: u64| match frames {
            Some(n) => sent < n,
            None => true,
        };
        while more(self.sent) && pacer::frame_due(base, self.sent, self.config.fps) <= now.instant {
            let header = self.next_header(now);
            self.transmit
                .extend(pacer::synthetic_frame(&self.config.params, &header));
        }
        if frames.is_some_and(|n| self.sent >= n) {
            self.finish(Outcome::Finished);
        }
    }

    fn begin_retry(&mut self, bytes: Vec<u8>, now: Instant) {
        self.transmit.push(bytes.clone());
        let schedule = RetrySchedule::start(
            self.config.retry_initial,
            self.config.retry_max,
            self.config.retry_attempts,
            now,
        );
        self.retry = Some((bytes, schedule));
    }

    fn finish(&mut self, outcome: Outcome) {
        self.phase = Phase::Done;
        self.outcome = Some(outcome);
        self.retry = None;
    }
}

#[cfg(test)]
#[path = "publisher_tests.rs"]
mod tests;
