//! When media datagrams go and what they hold, shared by the senders (the responder and the
//! relay's publisher): the frame schedule of D26, the DATA datagrams of one frame (D24, D25),
//! the sender counter (D22), and the resend schedule of the handshake (D18).
//!
//! Everything here is a pure function of its inputs (or a small value the caller drives with
//! the current time), so the state machines using it stay sans-IO and testable on a virtual
//! clock:
//!
//! - frame index n (sequence number n + 1) is due at `base + n * 10^9 / fps` ns, computed
//!   from n each time, so rounding never accumulates ([`frame_offset`], [`frame_due`]);
//! - a synthetic frame is the fragments [`StreamParams::fragments`] gives, each a full
//!   26-byte header with the frame's sequence number and the pattern of D25
//!   ([`synthetic_frame`]); an application's frame is its payload cut into pieces that fit
//!   the datagram size behind the same header ([`application_frame`]);
//! - [`RetrySchedule`] sends once at the start, then again after `initial`, `2 * initial`, ...
//!   (capped at `max`) until `attempts` sends, and is exhausted one more timeout later
//!   (D18: 0, 500, 1500 ms, given up at 3500 ms).

use std::time::{Duration, Instant};

use loudsync_protocol::media::{write_data, DataHeader, StreamParams, DATA_HEADER_LEN};

/// Frame index `n`'s offset from the stream's base: `n * 10^9 / fps` ns (integer division,
/// D26), `fps` taken as at least 1.
pub fn frame_offset(n: u64, fps: u32) -> Duration {
    let ns = u128::from(n) * 1_000_000_000 / u128::from(fps.max(1));
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

/// When frame index `n` (sequence number `n + 1`) is due.
pub fn frame_due(base: Instant, n: u64, fps: u32) -> Instant {
    base + frame_offset(n, fps)
}

/// The sender counter at `now` (D22): nanoseconds since `epoch`, frequency 10^9.
pub fn counter(epoch: Instant, now: Instant) -> i64 {
    i64::try_from(now.saturating_duration_since(epoch).as_nanos()).unwrap_or(i64::MAX)
}

/// The DATA datagrams of one synthetic frame (D24, D25), in sending order: each fragment of
/// `params` with `header` and the pattern from the fragment's payload offset.
pub fn synthetic_frame<'a>(
    params: &StreamParams,
    header: &'a DataHeader,
) -> impl Iterator<Item = Vec<u8>> + 'a {
    params.fragments().map(move |fragment| {
        let mut bytes = vec![0; fragment.size.max(DATA_HEADER_LEN)];
        write_data(&mut bytes, header, fragment.payload_offset);
        bytes
    })
}

/// The DATA datagrams of an application's frame: `payload` cut into pieces of at most
/// `datagram_size - 26` bytes, each behind `header`, in order; an empty payload is one
/// header-only datagram. `datagram_size` is taken as at least 27.
pub fn application_frame<'a>(
    datagram_size: usize,
    header: &'a DataHeader,
    payload: &'a [u8],
) -> impl Iterator<Item = Vec<u8>> + 'a {
    let piece = datagram_size.max(DATA_HEADER_LEN + 1) - DATA_HEADER_LEN;
    let pieces = payload.len().div_ceil(piece).max(1);
    (0..pieces).map(move |k| {
        let chunk = payload.get(k * piece..payload.len().min((k + 1) * piece));
        let chunk = chunk.unwrap_or_default();
        let mut bytes = vec![0; DATA_HEADER_LEN + chunk.len()];
        header.write(&mut bytes);
        bytes[DATA_HEADER_LEN..].copy_from_slice(chunk);
        bytes
    })
}

/// The timeout after send number `k` (0-based) of D18's schedule: `initial * 2^k`, capped at
/// `max`.
pub fn retry_timeout(initial: Duration, max: Duration, k: u32) -> Duration {
    initial
        .checked_mul(1u32.checked_shl(k).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max)
}

/// What a [`RetrySchedule`] says at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryStep {
    /// Not due yet (or already exhausted).
    Wait,
    /// Send again now.
    Send,
    /// The last timeout ran out after the last send: give up (reported once).
    Exhausted,
}

/// D18's resend schedule for one datagram: the first send at the start, resends after
/// `initial`, `2 * initial`, ... (capped at `max`) until `attempts` sends in all (0 is taken
/// as 1), then [`RetryStep::Exhausted`] one more timeout after the last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    initial: Duration,
    max: Duration,
    attempts: u32,
    sent: u32,
    deadline: Option<Instant>,
}

impl RetrySchedule {
    /// A schedule whose first send happens at `now` (the caller sends it).
    pub fn start(initial: Duration, max: Duration, attempts: u32, now: Instant) -> Self {
        RetrySchedule {
            initial,
            max,
            attempts: attempts.max(1),
            sent: 1,
            deadline: Some(now + retry_timeout(initial, max, 0)),
        }
    }

    /// When [`RetrySchedule::poll`] next has something to say (`None` once exhausted).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Sends so far (the first included).
    pub fn sent(&self) -> u32 {
        self.sent
    }

    /// Advances to `now`: [`RetryStep::Send`] when a resend is due (the caller sends),
    /// [`RetryStep::Exhausted`] once when the wait after the last send ran out.
    pub fn poll(&mut self, now: Instant) -> RetryStep {
        match self.deadline {
            Some(deadline) if now >= deadline => {
                if self.sent >= self.attempts {
                    self.deadline = None;
                    RetryStep::Exhausted
                } else {
                    self.deadline = Some(now + retry_timeout(self.initial, self.max, self.sent));
                    self.sent += 1;
                    RetryStep::Send
                }
            }
            _ => RetryStep::Wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loudsync_protocol::media::{decode_data, FREQUENCY};

    #[test]
    fn frames_are_due_without_accumulated_rounding() {
        // 3 fps: 333_333_333 ns, 666_666_666 ns, exactly 1 s for frame index 3.
        assert_eq!(frame_offset(0, 3), Duration::ZERO);
        assert_eq!(frame_offset(1, 3), Duration::from_nanos(333_333_333));
        assert_eq!(frame_offset(2, 3), Duration::from_nanos(666_666_666));
        assert_eq!(frame_offset(3, 3), Duration::from_secs(1));
        assert_eq!(frame_offset(50, 50), Duration::from_secs(1));
        assert_eq!(
            frame_offset(1, 0),
            Duration::from_secs(1),
            "fps 0 taken as 1"
        );
    }

    #[test]
    fn a_synthetic_frame_is_d24s_fragments_with_d25s_pattern() {
        let params = StreamParams::new(2020 * 8 * 50, 50, 1000).unwrap();
        let header = DataHeader {
            sequence: 4,
            timestamp: 99,
            frequency: FREQUENCY,
        };
        let frame: Vec<Vec<u8>> = synthetic_frame(&params, &header).collect();
        let sizes: Vec<usize> = frame.iter().map(Vec::len).collect();
        assert_eq!(sizes, [1000, 993, 27]);
        let mut p = 0;
        for bytes in &frame {
            let data = decode_data(bytes).unwrap();
            assert_eq!(data.header, header);
            assert!(data.pattern_ok(p));
            p += data.payload.len();
        }
    }

    #[test]
    fn an_application_frame_is_cut_to_the_datagram_size() {
        let header = DataHeader {
            sequence: 7,
            timestamp: 1,
            frequency: FREQUENCY,
        };
        let payload: Vec<u8> = (0..=255u8).cycle().take(250).collect();
        let frame: Vec<Vec<u8>> = application_frame(126, &header, &payload).collect();
        let sizes: Vec<usize> = frame.iter().map(Vec::len).collect();
        assert_eq!(sizes, [126, 126, 76]);
        let joined: Vec<u8> = frame
            .iter()
            .flat_map(|b| {
                assert_eq!(decode_data(b).unwrap().header, header);
                b[26..].to_vec()
            })
            .collect();
        assert_eq!(joined, payload);
        let empty: Vec<Vec<u8>> = application_frame(126, &header, &[]).collect();
        assert_eq!(empty.len(), 1);
        assert_eq!(empty[0].len(), 26);
        let exact: Vec<Vec<u8>> = application_frame(126, &header, &payload[..200]).collect();
        assert_eq!(exact.iter().map(Vec::len).collect::<Vec<_>>(), [126, 126]);
    }

    #[test]
    fn the_retry_schedule_is_0_500_1500_then_gives_up_at_3500_ms() {
        let t = Instant::now();
        let ms = |n: u64| t + Duration::from_millis(n);
        let mut retry =
            RetrySchedule::start(Duration::from_millis(500), Duration::from_secs(2), 3, t);
        assert_eq!(retry.deadline(), Some(ms(500)));
        assert_eq!(retry.poll(ms(499)), RetryStep::Wait);
        assert_eq!(retry.poll(ms(500)), RetryStep::Send);
        assert_eq!(retry.deadline(), Some(ms(1500)));
        assert_eq!(retry.poll(ms(1500)), RetryStep::Send);
        assert_eq!(retry.sent(), 3);
        assert_eq!(retry.deadline(), Some(ms(3500)));
        assert_eq!(retry.poll(ms(3499)), RetryStep::Wait);
        assert_eq!(retry.poll(ms(3500)), RetryStep::Exhausted);
        assert_eq!(retry.poll(ms(9000)), RetryStep::Wait);
        assert_eq!(retry.deadline(), None);
        // Capped at max; a zero attempt count still sends once.
        assert_eq!(
            retry_timeout(Duration::from_millis(500), Duration::from_secs(2), 40),
            Duration::from_secs(2)
        );
        let mut once = RetrySchedule::start(Duration::from_secs(1), Duration::from_secs(1), 0, t);
        assert_eq!(once.poll(ms(1000)), RetryStep::Exhausted);
    }
}
