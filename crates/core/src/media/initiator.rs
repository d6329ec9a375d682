//! The initiator (receiver) of the media stream (issue 13 §4, D18-D20, D30-D32), sans-IO:
//! `loudsync media recv` and a relay subscriber. It talks to one responder; which address
//! that is stays the driver's business.
//!
//! **Driving it.** The driver creates an [`Initiator`] with [`Initiator::new`] and then loops:
//! send every datagram [`Initiator::poll_transmit`] hands out (the first START is ready at
//! once), feed every datagram received from the responder to
//! [`Initiator::handle_datagram`], and call [`Initiator::handle_timeout`] when the instant of
//! [`Initiator::poll_timeout`] has come. Classified frames come out of
//! [`Initiator::poll_frame`] (one [`FrameRecord`] per frame, seq ascending: the rows of the
//! D30 CSV), the totals from [`Initiator::summary`] (D32), and the end from
//! [`Initiator::outcome`].
//!
//! **The handshake** (D18, D19):
//!
//! ```text
//!  AwaitAck ──START_ACK, our STREAM_ID──▶ Confirming ──first DATA──▶ Streaming ──frame N──▶ Finished
//!     │ START at 0, +500, +1500 ms           │ START_CONFIRM on the same schedule  │ frames
//!     │ (retry_initial doubling, capped      │ duplicate START_ACK: same CONFIRM   │ classified
//!     │  at retry_max, retry_attempts sends) │ bytes again                         │ at render time
//!     ├─ no answer 2 s after the last ─▶ NoStartAck (exit 5)
//!     ├─ START_ACK, other STREAM_ID ─▶ ERROR 4 sent, Refused(4) (exit 6)
//!     └─ ERROR (any state) ─────────▶ Refused(code) (exit 6)
//!                                            └─ no DATA by first CONFIRM + buffer_depth ─▶ NoData (exit 5)
//! ```
//!
//! The START_CONFIRM is resent `retry_attempts` times in all (0, 500, 1500 ms after the
//! first by default) and then no more; what ends the wait for DATA is D20's deadline alone.
//! DATA before START_ACK is ignored (nothing was confirmed); datagrams that are not DATA or
//! a control frame, control frames that do not decode, START and START_CONFIRM are ignored.
//!
//! **Frames** (D24, D31). Every DATA datagram of a frame carries the frame's sequence number,
//! so the initiator adds up, per sequence number, the bytes of the datagrams that arrived.
//! A datagram counts only if it is one of the frame's fragments: its size is one of the sizes
//! [`StreamParams::fragments`] gives and its payload is the pattern of a fragment of that
//! size (D25); others are counted as [`Summary::corrupt`] and forgotten. At the frame's render
//! time the total decides: `== F` success, `< F` (0 included) dropped, `> F` duplicate (a
//! fragment came twice). Datagrams for a frame already classified are [`Summary::late`];
//! sequence numbers outside `1..=N` (or, with N unknown, before the first frame seen) are
//! [`Summary::stray`].
//!
//! **Render time** (D31): `base_recv + buffer_depth + due(seq)`, with
//! `due(seq) = (seq - origin) * 10^9 / fps` ns (integer division, as the sender's pacing,
//! D26). `origin` is 1 when the frame count N is known (standalone), else the first sequence
//! number seen (a relay subscriber joins mid-stream, R7). `base_recv` is the moment the
//! first frame would have arrived: the first DATA datagram's arrival minus the due offset of
//! its frame, so losing frame 1 does not shift the schedule.
//!
//! **Time in flight and jitter** (D30, REFERENCE "ctsTraffic media stream"): for the last
//! datagram of a frame, `(receiverQpc / receiverQpf - senderQpc / senderQpf) * 1000` ms, the
//! receiver counter being nanoseconds of [`Now::instant`] since
//! [`InitiatorConfig::clock_origin`]; jitter is a successful frame's time in flight minus the
//! previous successful frame's.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use loudsync_protocol::media::{
    classify, decode_control, decode_data, encode_error, encode_start, encode_start_confirm,
    ConnectionId, ControlBody, DatagramKind, ErrorCode, MediaToken, StreamId, StreamParams,
};

use crate::Now;

/// The receiver's counter frequency: nanoseconds (D30).
pub const RECEIVER_FREQUENCY: i64 = 1_000_000_000;

/// The header line of the per-frame CSV (D30).
pub const CSV_HEADER: &str =
    "seq,senderQpc,senderQpf,receiverQpc,receiverQpf,timeInFlightMs,jitter";

/// What the initiator is configured with (the `media recv` flags, D29).
#[derive(Debug, Clone)]
pub struct InitiatorConfig {
    /// The STREAM_ID sent in START and START_CONFIRM.
    pub stream_id: StreamId,
    /// The MEDIA_TOKEN sent in START (relay only).
    pub media_token: Option<MediaToken>,
    /// The first retry timeout (`--retry-initial`, 500 ms).
    pub retry_initial: Duration,
    /// The largest retry timeout (`--retry-max`, 2 s).
    pub retry_max: Duration,
    /// How many times START (and START_CONFIRM) is sent in all (`--retry-attempts`, 3); 0 is
    /// taken as 1.
    pub retry_attempts: u32,
    /// `--buffer-depth` (1 s): the D20 deadline after the first START_CONFIRM, and the delay
    /// between a frame's arrival and its render time.
    pub buffer_depth: Duration,
    /// Frame size and fragmentation, as the responder streams them (D23, D24).
    pub params: StreamParams,
    /// Frames per second (`--fps`, at least 1).
    pub fps: u32,
    /// The number of frames N (D27) when known; `None` for a relay subscriber, whose stream
    /// has no end the initiator knows of.
    pub frames: Option<u64>,
    /// The instant the receiver counter counts nanoseconds from; `None`: the `now` given to
    /// [`Initiator::new`].
    pub clock_origin: Option<Instant>,
}

impl InitiatorConfig {
    /// The defaults of D18, D20 and D29 for a stream id, parameters, fps and frame count.
    pub fn new(
        stream_id: StreamId,
        params: StreamParams,
        fps: u32,
        frames: Option<u64>,
    ) -> InitiatorConfig {
        InitiatorConfig {
            stream_id,
            media_token: None,
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(2),
            retry_attempts: 3,
            buffer_depth: Duration::from_secs(1),
            params,
            fps,
            frames,
            clock_origin: None,
        }
    }
}

/// How the initiator ended (D32's exit codes: [`Outcome::exit_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every expected frame was classified (loss included): exit 0.
    Finished,
    /// No START_ACK or ERROR after the retries (D18): exit 5.
    NoStartAck,
    /// No DATA by the first START_CONFIRM + buffer depth (D20): exit 5.
    NoData,
    /// An ERROR frame with this code, or the initiator's own ERROR 4 for a START_ACK echoing
    /// another stream id (D19): exit 6.
    Refused(u16),
}

impl Outcome {
    /// The exit code of `media recv` for this outcome (D32).
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Finished => 0,
            Outcome::NoStartAck | Outcome::NoData => 5,
            Outcome::Refused(_) => 6,
        }
    }
}

/// The handshake's and the stream's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// START sent, waiting for START_ACK.
    AwaitAck,
    /// START_CONFIRM sent, waiting for the first DATA.
    Confirming,
    /// DATA arrived; frames are being classified.
    Streaming,
    /// Over: see [`Initiator::outcome`].
    Done,
}

/// A frame's class at its render time (D31).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameStatus {
    /// Exactly F bytes arrived.
    Success,
    /// Fewer than F bytes (maybe none).
    Dropped,
    /// More than F bytes: some fragment came more than once.
    Duplicate,
}

/// One classified frame: a row of the D30 CSV.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameRecord {
    /// The frame's sequence number.
    pub seq: i64,
    /// The bytes of its datagrams that arrived (headers included).
    pub bytes: usize,
    /// The class.
    pub status: FrameStatus,
    /// The last datagram's sender counter (0 when none arrived).
    pub sender_qpc: i64,
    /// The last datagram's sender frequency (0 when none arrived).
    pub sender_qpf: i64,
    /// The receiver counter at the last datagram's arrival (0 when none arrived).
    pub receiver_qpc: i64,
    /// The receiver frequency, [`RECEIVER_FREQUENCY`] (0 when none arrived).
    pub receiver_qpf: i64,
    /// Time in flight of the last datagram, ms (`None` when none arrived).
    pub time_in_flight_ms: Option<f64>,
    /// Time in flight minus the previous successful frame's (successful frames after the
    /// first only).
    pub jitter_ms: Option<f64>,
}

impl FrameRecord {
    /// The frame's CSV row (D30; no line end): empty fields where the value is `None`.
    pub fn csv_row(&self) -> String {
        let opt = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
        format!(
            "{},{},{},{},{},{},{}",
            self.seq,
            self.sender_qpc,
            self.sender_qpf,
            self.receiver_qpc,
            self.receiver_qpf,
            opt(self.time_in_flight_ms),
            opt(self.jitter_ms)
        )
    }
}

/// The totals of D32 and what was set aside.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Summary {
    /// Frames classified so far (N once finished).
    pub expected: u64,
    /// Successful frames.
    pub success: u64,
    /// Dropped frames.
    pub dropped: u64,
    /// Duplicate frames.
    pub duplicate: u64,
    /// Mean |jitter| over successful frames, ms (0 when there is none).
    pub jitter_ms: f64,
    /// Mean time in flight over successful frames, ms (0 when there is none).
    pub tif_ms: f64,
    /// First START to START_ACK, ms (`None` before a START_ACK).
    pub handshake_ms: Option<f64>,
    /// DATA datagrams that were no fragment of the stream (size or pattern wrong).
    pub corrupt: u64,
    /// DATA datagrams for a frame already classified.
    pub late: u64,
    /// DATA datagrams with a sequence number outside the expected frames.
    pub stray: u64,
}

/// What arrived so far for a frame not yet classified.
#[derive(Debug, Clone, Copy, Default)]
struct FrameAcc {
    bytes: usize,
    sender_qpc: i64,
    sender_qpf: i64,
    receiver_qpc: i64,
}

/// A send repeated on the D18 schedule.
#[derive(Debug, Clone)]
struct Retry {
    bytes: Vec<u8>,
    /// Sends so far.
    sent: u32,
    /// When the next send (or the give-up) is due.
    deadline: Instant,
}

/// The receiver's state machine; see the module documentation.
#[derive(Debug)]
pub struct Initiator {
    config: InitiatorConfig,
    origin: Instant,
    phase: Phase,
    outcome: Option<Outcome>,
    transmit: Vec<Vec<u8>>,
    /// START (AwaitAck) or START_CONFIRM (Confirming) and its schedule.
    retry: Option<Retry>,
    started_at: Instant,
    connection_id: ConnectionId,
    confirm_bytes: Vec<u8>,
    /// D20's deadline (Confirming).
    data_deadline: Option<Instant>,
    /// Fragment (size, payload offset) pairs of a frame (D24).
    fragments: Vec<(usize, usize)>,
    /// Streaming: the first datagram's arrival and its frame's sequence number.
    first: Option<(Instant, i64)>,
    /// The sequence number `due` counts from.
    seq_origin: i64,
    /// The next frame to classify.
    next_seq: i64,
    pending: BTreeMap<i64, FrameAcc>,
    records: Vec<FrameRecord>,
    records_read: usize,
    summary: Summary,
    last_success_tif: Option<f64>,
    jitter_sum: f64,
    jitter_count: u64,
    tif_sum: f64,
}

impl Initiator {
    /// A new initiator whose first START is ready to send at `now` (D18).
    pub fn new(config: InitiatorConfig, now: Now) -> Initiator {
        let start = encode_start(&config.stream_id, config.media_token.as_ref());
        let fragments = config
            .params
            .fragments()
            .map(|f| (f.size, f.payload_offset))
            .collect();
        let origin = config.clock_origin.unwrap_or(now.instant);
        let mut initiator = Initiator {
            config,
            origin,
            phase: Phase::AwaitAck,
            outcome: None,
            transmit: Vec::new(),
            retry: None,
            started_at: now.instant,
            connection_id: ConnectionId::ZERO,
            confirm_bytes: Vec::new(),
            data_deadline: None,
            fragments,
            first: None,
            seq_origin: 1,
            next_seq: 1,
            pending: BTreeMap::new(),
            records: Vec::new(),
            records_read: 0,
            summary: Summary::default(),
            last_success_tif: None,
            jitter_sum: 0.0,
            jitter_count: 0,
            tif_sum: 0.0,
        };
        initiator.begin_retry(start, now.instant);
        initiator
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// How it ended, once it has.
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
    }

    /// The connection id the responder assigned (after START_ACK).
    pub fn connection_id(&self) -> Option<&ConnectionId> {
        (self.phase != Phase::AwaitAck && !self.connection_id.is_zero())
            .then_some(&self.connection_id)
    }

    /// The next datagram to send to the responder.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.transmit.is_empty() {
            None
        } else {
            Some(self.transmit.remove(0))
        }
    }

    /// The next classified frame, seq ascending (D30's rows).
    pub fn poll_frame(&mut self) -> Option<FrameRecord> {
        let record = self.records.get(self.records_read).copied()?;
        self.records_read += 1;
        Some(record)
    }

    /// Every frame classified so far, seq ascending (whether polled or not).
    pub fn frames(&self) -> &[FrameRecord] {
        &self.records
    }

    /// The totals so far (D32).
    pub fn summary(&self) -> Summary {
        let mut summary = self.summary;
        if summary.success > 0 {
            summary.tif_ms = self.tif_sum / summary.success as f64;
        }
        if self.jitter_count > 0 {
            summary.jitter_ms = self.jitter_sum / self.jitter_count as f64;
        }
        summary
    }

    /// When [`Initiator::handle_timeout`] is next due (`None` once done).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retry = self.retry.as_ref().map(|r| r.deadline);
        let render = match self.phase {
            Phase::Streaming => self.render_at(self.next_seq),
            _ => None,
        };
        [retry, self.data_deadline, render]
            .into_iter()
            .flatten()
            .min()
    }

    /// Resends, gives up, or classifies the frames whose render time has come.
    pub fn handle_timeout(&mut self, now: Now) {
        let t = now.instant;
        if self.phase == Phase::Done {
            return;
        }
        if self.data_deadline.is_some_and(|d| t >= d) {
            self.finish(Outcome::NoData);
            return;
        }
        if let Some(retry) = self.retry.as_mut() {
            if t >= retry.deadline {
                if retry.sent >= self.config.retry_attempts.max(1) {
                    self.retry = None;
                    if self.phase == Phase::AwaitAck {
                        self.finish(Outcome::NoStartAck);
                        return;
                    }
                } else {
                    let bytes = retry.bytes.clone();
                    let sent = retry.sent;
                    retry.sent += 1;
                    retry.deadline = t + backoff(&self.config, sent);
                    self.transmit.push(bytes);
                }
            }
        }
        if self.phase == Phase::Streaming {
            while let Some(at) = self.render_at(self.next_seq) {
                if at > t || self.phase == Phase::Done {
                    break;
                }
                self.classify_next();
            }
        }
    }

    /// Takes one datagram from the responder.
    pub fn handle_datagram(&mut self, now: Now, datagram: &[u8]) {
        match classify(datagram) {
            DatagramKind::Data => self.handle_data(now, datagram),
            DatagramKind::Control(_) => self.handle_control(now, datagram),
            _ => {}
        }
    }

    fn handle_control(&mut self, now: Now, datagram: &[u8]) {
        if self.phase == Phase::Done {
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
                Phase::AwaitAck => {
                    self.summary.handshake_ms =
                        Some(ms(now.instant.saturating_duration_since(self.started_at)));
                    if stream_id != self.config.stream_id {
                        self.transmit.push(encode_error(
                            ErrorCode::StreamMismatch,
                            &frame.connection_id,
                            Some(&self.config.stream_id),
                        ));
                        self.finish(Outcome::Refused(ErrorCode::StreamMismatch.code()));
                        return;
                    }
                    self.connection_id = frame.connection_id;
                    self.confirm_bytes =
                        encode_start_confirm(&self.connection_id, &self.config.stream_id);
                    self.phase = Phase::Confirming;
                    self.data_deadline = Some(now.instant + self.config.buffer_depth);
                    self.begin_retry(self.confirm_bytes.clone(), now.instant);
                }
                Phase::Confirming => {
                    if stream_id == self.config.stream_id {
                        self.transmit.push(self.confirm_bytes.clone());
                    }
                }
                Phase::Streaming | Phase::Done => {}
            },
            ControlBody::Start { .. } | ControlBody::StartConfirm { .. } => {}
        }
    }

    fn handle_data(&mut self, now: Now, datagram: &[u8]) {
        if !matches!(self.phase, Phase::Confirming | Phase::Streaming) {
            return;
        }
        let Ok(data) = decode_data(datagram) else {
            return;
        };
        let len = data.len();
        let fragment = self
            .fragments
            .iter()
            .any(|&(size, offset)| size == len && data.pattern_ok(offset));
        if !fragment || data.header.frequency <= 0 {
            self.summary.corrupt += 1;
            return;
        }
        let seq = data.header.sequence;
        if self.phase == Phase::Confirming {
            if seq < 1 || self.config.frames.is_some_and(|n| seq as u64 > n) {
                self.summary.stray += 1;
                return;
            }
            self.phase = Phase::Streaming;
            self.retry = None;
            self.data_deadline = None;
            self.first = Some((now.instant, seq));
            if self.config.frames.is_none() {
                self.seq_origin = seq;
            }
            self.next_seq = self.seq_origin;
        }
        if seq < self.seq_origin || self.config.frames.is_some_and(|n| seq as u64 > n) {
            self.summary.stray += 1;
            return;
        }
        if seq < self.next_seq {
            self.summary.late += 1;
            return;
        }
        let receiver_qpc = i64::try_from(
            now.instant
                .saturating_duration_since(self.origin)
                .as_nanos(),
        )
        .unwrap_or(i64::MAX);
        let acc = self.pending.entry(seq).or_default();
        acc.bytes += len;
        acc.sender_qpc = data.header.timestamp;
        acc.sender_qpf = data.header.frequency;
        acc.receiver_qpc = receiver_qpc;
    }

    /// The due offset of frame `seq` from the frame at `seq_origin`, ns (D26's rounding).
    fn due_ns(&self, seq: i64) -> i128 {
        let fps = i128::from(self.config.fps.max(1));
        i128::from(seq - self.seq_origin) * 1_000_000_000 / fps
    }

    /// The render time of frame `seq` (D31), once streaming.
    fn render_at(&self, seq: i64) -> Option<Instant> {
        if self.config.frames.is_some_and(|n| seq as u64 > n) {
            return None;
        }
        let (first_at, first_seq) = self.first?;
        let offset =
            self.config.buffer_depth.as_nanos() as i128 + self.due_ns(seq) - self.due_ns(first_seq);
        Some(first_at + Duration::from_nanos(u64::try_from(offset.max(0)).unwrap_or(u64::MAX)))
    }

    fn classify_next(&mut self) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let acc = self.pending.remove(&seq);
        let frame_size = self.config.params.frame_size();
        let bytes = acc.map_or(0, |a| a.bytes);
        let status = match bytes.cmp(&frame_size) {
            std::cmp::Ordering::Equal => FrameStatus::Success,
            std::cmp::Ordering::Less => FrameStatus::Dropped,
            std::cmp::Ordering::Greater => FrameStatus::Duplicate,
        };
        let mut record = FrameRecord {
            seq,
            bytes,
            status,
            sender_qpc: 0,
            sender_qpf: 0,
            receiver_qpc: 0,
            receiver_qpf: 0,
            time_in_flight_ms: None,
            jitter_ms: None,
        };
        if let Some(acc) = acc {
            record.sender_qpc = acc.sender_qpc;
            record.sender_qpf = acc.sender_qpf;
            record.receiver_qpc = acc.receiver_qpc;
            record.receiver_qpf = RECEIVER_FREQUENCY;
            record.time_in_flight_ms = Some(time_in_flight_ms(
                acc.sender_qpc,
                acc.sender_qpf,
                acc.receiver_qpc,
            ));
        }
        self.summary.expected += 1;
        match status {
            FrameStatus::Success => {
                self.summary.success += 1;
                let tif = record.time_in_flight_ms.unwrap_or_default();
                self.tif_sum += tif;
                if let Some(previous) = self.last_success_tif {
                    let jitter = tif - previous;
                    record.jitter_ms = Some(jitter);
                    self.jitter_sum += jitter.abs();
                    self.jitter_count += 1;
                }
                self.last_success_tif = Some(tif);
            }
            FrameStatus::Dropped => self.summary.dropped += 1,
            FrameStatus::Duplicate => self.summary.duplicate += 1,
        }
        self.records.push(record);
        if self.config.frames.is_some_and(|n| seq as u64 >= n) {
            self.finish(Outcome::Finished);
        }
    }

    fn begin_retry(&mut self, bytes: Vec<u8>, now: Instant) {
        self.transmit.push(bytes.clone());
        self.retry = Some(Retry {
            bytes,
            sent: 1,
            deadline: now + backoff(&self.config, 0),
        });
    }

    fn finish(&mut self, outcome: Outcome) {
        self.phase = Phase::Done;
        self.outcome = Some(outcome);
        self.retry = None;
        self.data_deadline = None;
        self.pending.clear();
    }
}

/// The timeout after send number `k` (0-based): `retry_initial * 2^k`, capped (D18).
fn backoff(config: &InitiatorConfig, k: u32) -> Duration {
    crate::media::pacer::retry_timeout(config.retry_initial, config.retry_max, k)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `(receiver / 1e9 - sender / sender_qpf) * 1000` ms, exact in integers when both count ns.
fn time_in_flight_ms(sender_qpc: i64, sender_qpf: i64, receiver_qpc: i64) -> f64 {
    if sender_qpf == RECEIVER_FREQUENCY {
        (i128::from(receiver_qpc) - i128::from(sender_qpc)) as f64 / 1e6
    } else {
        (receiver_qpc as f64 / RECEIVER_FREQUENCY as f64 - sender_qpc as f64 / sender_qpf as f64)
            * 1000.0
    }
}

#[cfg(test)]
#[path = "initiator_tests.rs"]
mod tests;
