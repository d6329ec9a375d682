//! Tests of the initiator on a virtual clock (`Now::plus`): the D18 retry instants, the
//! START_ACK checks and START_CONFIRM resends of D19, D20's deadline, and the D31
//! classification of frames (success, dropped, duplicate) with time in flight and jitter.

use super::*;
use loudsync_protocol::media::{
    decode_control, encode_data, encode_error, encode_start_ack, ControlKind, DataHeader,
    MIN_PADDED_LEN,
};

fn t0() -> Now {
    Now {
        instant: Instant::now(),
        unix_ms: 1_700_000_000_000,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn stream() -> StreamId {
    StreamId::new("synthetic").unwrap()
}

/// F = 2020 bytes, D = 1000: fragments 1000, 993, 27 (the issue's §8 settings).
fn config(frames: Option<u64>) -> InitiatorConfig {
    InitiatorConfig::new(
        stream(),
        StreamParams::new(808_000, 50, 1000).unwrap(),
        50,
        frames,
    )
}

fn cid() -> ConnectionId {
    ConnectionId::from_random([7; 16])
}

fn drain(i: &mut Initiator) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| i.poll_transmit()).collect()
}

/// Runs timeouts up to `until`, returning (offset from t0 in ms, datagrams sent then).
fn run(i: &mut Initiator, t0: Now, until: Duration) -> Vec<(u128, Vec<Vec<u8>>)> {
    let mut sends = Vec::new();
    let start = drain(i);
    if !start.is_empty() {
        sends.push((0, start));
    }
    while let Some(at) = i.poll_timeout() {
        let offset = at - t0.instant;
        if offset > until {
            break;
        }
        i.handle_timeout(t0.plus(offset));
        let out = drain(i);
        if !out.is_empty() {
            sends.push((offset.as_millis(), out));
        }
    }
    sends
}

/// The datagrams of frame `seq` as the responder sends them, sent at `sender_ns`.
fn frame(seq: i64, sender_ns: i64) -> Vec<Vec<u8>> {
    StreamParams::new(808_000, 50, 1000)
        .unwrap()
        .fragments()
        .map(|f| {
            let header = DataHeader {
                sequence: seq,
                timestamp: sender_ns,
                frequency: 1_000_000_000,
            };
            encode_data(&header, f.payload_offset, f.size)
        })
        .collect()
}

/// An initiator that got its START_ACK at 10 ms (the CONFIRM drained).
fn confirmed(frames: Option<u64>) -> (Initiator, Now) {
    let now = t0();
    let mut i = Initiator::new(config(frames), now);
    drain(&mut i);
    i.handle_datagram(now.plus(ms(10)), &encode_start_ack(&cid(), &stream()));
    assert_eq!(i.phase(), Phase::Confirming);
    drain(&mut i);
    (i, now)
}

#[test]
fn start_is_padded_and_carries_stream_id_and_token() {
    let mut c = config(None);
    c.media_token = Some(MediaToken::new(b"tok".to_vec()).unwrap());
    let mut i = Initiator::new(c, t0());
    let start = i.poll_transmit().unwrap();
    assert!(i.poll_transmit().is_none());
    assert!(start.len() >= MIN_PADDED_LEN);
    assert_eq!(&start[..2], &[0x00, 0x01]);
    let frame = decode_control(&start).unwrap();
    assert_eq!(
        frame.body,
        ControlBody::Start {
            stream_id: stream(),
            media_token: Some(MediaToken::new(b"tok".to_vec()).unwrap()),
        }
    );
    assert!(frame.connection_id.is_zero());
}

#[test]
fn start_retries_at_0_500_1500_and_gives_up_at_3500() {
    let now = t0();
    let mut i = Initiator::new(config(None), now);
    let sends = run(&mut i, now, ms(10_000));
    let instants: Vec<u128> = sends.iter().map(|(t, _)| *t).collect();
    assert_eq!(instants, vec![0, 500, 1500]);
    let first = &sends[0].1[0];
    assert!(sends.iter().all(|(_, d)| d.len() == 1 && &d[0] == first));
    assert_eq!(i.outcome(), Some(Outcome::NoStartAck));
    assert_eq!(i.outcome().unwrap().exit_code(), 5);
    assert!(i.poll_timeout().is_none());

    // The give-up instant exactly: not at 3499 ms, at 3500 ms.
    let mut i = Initiator::new(config(None), now);
    drain(&mut i);
    i.handle_timeout(now.plus(ms(500)));
    i.handle_timeout(now.plus(ms(1500)));
    assert_eq!(i.poll_timeout(), Some(now.instant + ms(3500)));
    i.handle_timeout(now.plus(ms(3499)));
    assert_eq!(i.outcome(), None);
    i.handle_timeout(now.plus(ms(3500)));
    assert_eq!(i.outcome(), Some(Outcome::NoStartAck));
}

#[test]
fn backoff_is_capped_at_retry_max() {
    let now = t0();
    let mut c = config(None);
    c.retry_attempts = 5;
    let mut i = Initiator::new(c, now);
    let instants: Vec<u128> = run(&mut i, now, ms(20_000))
        .iter()
        .map(|(t, _)| *t)
        .collect();
    // Timeouts 500, 1000, 2000, 2000, then the last 2000 before giving up.
    assert_eq!(instants, vec![0, 500, 1500, 3500, 5500]);
    assert_eq!(i.outcome(), Some(Outcome::NoStartAck));
}

#[test]
fn mismatched_start_ack_sends_error_4_and_is_refused() {
    let now = t0();
    let mut i = Initiator::new(config(None), now);
    drain(&mut i);
    let other = StreamId::new("other").unwrap();
    i.handle_datagram(now.plus(ms(5)), &encode_start_ack(&cid(), &other));
    let out = drain(&mut i);
    assert_eq!(
        out,
        vec![encode_error(
            ErrorCode::StreamMismatch,
            &cid(),
            Some(&stream())
        )]
    );
    assert_eq!(&out[0][67..73], &[0x03, 0x00, 0x02, 0x00, 0x04, 0x00]);
    assert_eq!(i.outcome(), Some(Outcome::Refused(4)));
    assert_eq!(i.outcome().unwrap().exit_code(), 6);
    assert!(i.poll_timeout().is_none());
}

#[test]
fn error_from_responder_is_refused_with_its_code() {
    let now = t0();
    let mut i = Initiator::new(config(None), now);
    drain(&mut i);
    i.handle_datagram(
        now.plus(ms(5)),
        &encode_error(ErrorCode::Refused, &ConnectionId::ZERO, Some(&stream())),
    );
    assert!(drain(&mut i).is_empty());
    assert_eq!(i.outcome(), Some(Outcome::Refused(5)));

    // Also while confirming, but only with our connection id: an ERROR with none or another
    // (forged from the responder's address) is ignored.
    let (mut i, now) = confirmed(None);
    i.handle_datagram(
        now.plus(ms(20)),
        &encode_error(ErrorCode::StreamMismatch, &ConnectionId::ZERO, None),
    );
    let other = ConnectionId::parse("00000000-0000-4000-8000-000000000000").unwrap();
    i.handle_datagram(
        now.plus(ms(20)),
        &encode_error(ErrorCode::Refused, &other, None),
    );
    assert_eq!(i.outcome(), None);
    i.handle_datagram(
        now.plus(ms(20)),
        &encode_error(ErrorCode::StreamMismatch, &cid(), None),
    );
    assert_eq!(i.outcome(), Some(Outcome::Refused(4)));
}

#[test]
fn start_confirm_echoes_id_and_is_resent_until_data() {
    let now = t0();
    let mut i = Initiator::new(config(None), now);
    drain(&mut i);
    i.handle_datagram(now.plus(ms(100)), &encode_start_ack(&cid(), &stream()));
    assert_eq!(i.summary().handshake_ms, Some(100.0));
    assert_eq!(i.connection_id(), Some(&cid()));
    let confirm = drain(&mut i);
    assert_eq!(confirm.len(), 1);
    let confirm = confirm.into_iter().next().unwrap();
    assert!(confirm.len() >= MIN_PADDED_LEN);
    let decoded = decode_control(&confirm).unwrap();
    assert_eq!(decoded.kind(), ControlKind::StartConfirm);
    assert_eq!(decoded.connection_id, cid());
    assert_eq!(decoded.body.stream_id(), Some(&stream()));

    // Resent at +500 ms; DATA before the next resend stops them.
    assert_eq!(i.poll_timeout(), Some(now.instant + ms(600)));
    i.handle_timeout(now.plus(ms(600)));
    assert_eq!(drain(&mut i), vec![confirm.clone()]);
    i.handle_datagram(now.plus(ms(700)), &frame(1, 0)[0]);
    assert_eq!(i.phase(), Phase::Streaming);
    let sends = run(&mut i, now, ms(5_000));
    assert!(sends.is_empty(), "no resend after DATA: {sends:?}");
}

#[test]
fn start_confirm_schedule_then_no_data_deadline() {
    let mut c = config(None);
    c.buffer_depth = ms(4000);
    let now = t0();
    let mut i = Initiator::new(c, now);
    drain(&mut i);
    i.handle_datagram(now.plus(ms(100)), &encode_start_ack(&cid(), &stream()));
    drain(&mut i);
    let instants: Vec<u128> = run(&mut i, now, ms(10_000))
        .iter()
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(instants, vec![600, 1600]);
    assert_eq!(i.outcome(), Some(Outcome::NoData));
}

#[test]
fn duplicate_start_ack_gets_identical_confirm() {
    let now = t0();
    let mut i = Initiator::new(config(None), now);
    drain(&mut i);
    let ack = encode_start_ack(&cid(), &stream());
    i.handle_datagram(now.plus(ms(10)), &ack);
    let first = drain(&mut i);
    i.handle_datagram(now.plus(ms(20)), &ack);
    let second = drain(&mut i);
    assert_eq!(first.len(), 1);
    assert_eq!(first, second);
    assert_eq!(i.phase(), Phase::Confirming);
}

#[test]
fn no_data_by_buffer_depth_fails_with_no_data() {
    let (mut i, now) = confirmed(None);
    // First CONFIRM at 10 ms, buffer depth 1 s: deadline 1010 ms.
    i.handle_timeout(now.plus(ms(510)));
    assert_eq!(drain(&mut i).len(), 1);
    assert_eq!(i.poll_timeout(), Some(now.instant + ms(1010)));
    i.handle_timeout(now.plus(ms(1009)));
    assert_eq!(i.outcome(), None);
    i.handle_timeout(now.plus(ms(1010)));
    assert_eq!(i.outcome(), Some(Outcome::NoData));
    assert_eq!(i.outcome().unwrap().exit_code(), 5);
}

#[test]
fn data_before_start_ack_is_ignored() {
    let now = t0();
    let mut i = Initiator::new(config(Some(1)), now);
    drain(&mut i);
    for d in frame(1, 0) {
        i.handle_datagram(now.plus(ms(5)), &d);
    }
    assert_eq!(i.phase(), Phase::AwaitAck);
}

#[test]
fn frames_are_classified_at_render_time() {
    let (mut i, now) = confirmed(Some(4));
    let period = 20u64;
    // Frame 1 arrives at 100 ms; frame n's datagrams at 100 + 20 (n-1) ms, in flight 1 ms,
    // then 2 ms for frame 3.
    let arrive = |n: u64| now.plus(ms(100 + period * (n - 1)));
    let sent_ns = |n: u64, tif: u64| ((100 + period * (n - 1) - tif) * 1_000_000) as i64;
    for d in frame(1, sent_ns(1, 1)) {
        i.handle_datagram(arrive(1), &d);
    }
    // Frame 2: the middle fragment is lost.
    let f2 = frame(2, sent_ns(2, 1));
    i.handle_datagram(arrive(2), &f2[0]);
    i.handle_datagram(arrive(2), &f2[2]);
    // Frame 3: complete, then a fragment again.
    let f3 = frame(3, sent_ns(3, 2));
    for d in &f3 {
        i.handle_datagram(arrive(3), d);
    }
    i.handle_datagram(arrive(3), &f3[1]);
    // Frame 4: complete, 3 ms in flight.
    for d in frame(4, sent_ns(4, 3)) {
        i.handle_datagram(arrive(4), &d);
    }
    // A corrupt datagram (pattern broken) counts nowhere.
    let mut bad = frame(4, 0)[0].clone();
    bad[100] ^= 0xFF;
    i.handle_datagram(arrive(4), &bad);

    // Render times: 100 + 1000 + 20 (n-1) ms.
    assert_eq!(i.poll_timeout(), Some(now.instant + ms(1100)));
    i.handle_timeout(now.plus(ms(1099)));
    assert!(i.poll_frame().is_none());
    i.handle_timeout(now.plus(ms(1100)));
    let r1 = i.poll_frame().unwrap();
    assert!(i.poll_frame().is_none());
    assert_eq!(
        (r1.seq, r1.status, r1.bytes),
        (1, FrameStatus::Success, 2020)
    );
    assert_eq!(r1.time_in_flight_ms, Some(1.0));
    assert_eq!(r1.jitter_ms, None);
    assert_eq!(r1.receiver_qpc, 100_000_000);
    assert_eq!(
        r1.csv_row(),
        "1,99000000,1000000000,100000000,1000000000,1.000,"
    );

    i.handle_timeout(now.plus(ms(1160)));
    let rest: Vec<FrameRecord> = std::iter::from_fn(|| i.poll_frame()).collect();
    let classes: Vec<(i64, FrameStatus, usize)> =
        rest.iter().map(|r| (r.seq, r.status, r.bytes)).collect();
    assert_eq!(
        classes,
        vec![
            (2, FrameStatus::Dropped, 1027),
            (3, FrameStatus::Duplicate, 3013),
            (4, FrameStatus::Success, 2020),
        ]
    );
    assert_eq!(rest[0].jitter_ms, None);
    assert_eq!(rest[1].jitter_ms, None);
    assert_eq!(rest[2].time_in_flight_ms, Some(3.0));
    assert_eq!(rest[2].jitter_ms, Some(2.0));
    assert_eq!(
        rest[2].csv_row(),
        "4,157000000,1000000000,160000000,1000000000,3.000,2.000"
    );

    assert_eq!(i.outcome(), Some(Outcome::Finished));
    assert_eq!(i.outcome().unwrap().exit_code(), 0);
    let s = i.summary();
    assert_eq!(
        (s.expected, s.success, s.dropped, s.duplicate, s.corrupt),
        (4, 2, 1, 1, 1)
    );
    assert_eq!(s.tif_ms, 2.0);
    assert_eq!(s.jitter_ms, 2.0);
    assert_eq!(i.frames().len(), 4);
    assert!(i.poll_timeout().is_none());
}

#[test]
fn lost_first_frame_keeps_the_schedule_and_counts_dropped() {
    let (mut i, now) = confirmed(Some(2));
    // Frame 1 never arrives; frame 2 at 120 ms, so base_recv is 100 ms.
    for d in frame(2, 119_000_000) {
        i.handle_datagram(now.plus(ms(120)), &d);
    }
    assert_eq!(i.poll_timeout(), Some(now.instant + ms(1100)));
    i.handle_timeout(now.plus(ms(1120)));
    let rows: Vec<String> = std::iter::from_fn(|| i.poll_frame())
        .map(|r| r.csv_row())
        .collect();
    assert_eq!(
        rows,
        vec![
            "1,0,0,0,0,,".to_string(),
            "2,119000000,1000000000,120000000,1000000000,1.000,".to_string(),
        ]
    );
    let s = i.summary();
    assert_eq!((s.expected, s.success, s.dropped), (2, 1, 1));
    assert_eq!(i.outcome(), Some(Outcome::Finished));
}

#[test]
fn late_and_stray_datagrams_are_set_aside() {
    let (mut i, now) = confirmed(Some(2));
    for d in frame(1, 0) {
        i.handle_datagram(now.plus(ms(100)), &d);
    }
    i.handle_datagram(now.plus(ms(101)), &frame(3, 0)[0]);
    i.handle_timeout(now.plus(ms(1100)));
    i.handle_datagram(now.plus(ms(1101)), &frame(1, 0)[0]);
    let s = i.summary();
    assert_eq!((s.late, s.stray, s.success), (1, 1, 1));
}

#[test]
fn relay_subscriber_counts_from_first_sequence_seen() {
    let (mut i, now) = confirmed(None);
    for d in frame(41, 0) {
        i.handle_datagram(now.plus(ms(100)), &d);
    }
    i.handle_timeout(now.plus(ms(1120)));
    let seqs: Vec<(i64, FrameStatus)> = std::iter::from_fn(|| i.poll_frame())
        .map(|r| (r.seq, r.status))
        .collect();
    assert_eq!(
        seqs,
        vec![(41, FrameStatus::Success), (42, FrameStatus::Dropped)]
    );
    assert_eq!(i.outcome(), None);
}

proptest::proptest! {
    /// Whatever is lost or repeated, each frame's class is its byte count's (D31) and the
    /// classes add up to N.
    #[test]
    fn classes_follow_byte_counts(copies in proptest::collection::vec(0usize..3, 3 * 8)) {
        let n = 8u64;
        let (mut i, now) = confirmed(Some(n));
        // Frame 1's first fragment always arrives, so the schedule is fixed.
        let mut copies = copies;
        copies[0] = copies[0].max(1);
        let mut expected = Vec::new();
        for seq in 1..=n {
            let at = now.plus(ms(100 + 20 * (seq - 1)));
            let mut bytes = 0;
            for (k, d) in frame(seq as i64, 0).iter().enumerate() {
                for _ in 0..copies[(seq as usize - 1) * 3 + k] {
                    i.handle_datagram(at, d);
                    bytes += d.len();
                }
            }
            expected.push(match bytes.cmp(&2020) {
                std::cmp::Ordering::Equal => FrameStatus::Success,
                std::cmp::Ordering::Less => FrameStatus::Dropped,
                std::cmp::Ordering::Greater => FrameStatus::Duplicate,
            });
        }
        i.handle_timeout(now.plus(ms(10_000)));
        let got: Vec<FrameStatus> = i.frames().iter().map(|r| r.status).collect();
        proptest::prop_assert_eq!(got, expected);
        let s = i.summary();
        proptest::prop_assert_eq!(s.success + s.dropped + s.duplicate, n);
        proptest::prop_assert_eq!(i.outcome(), Some(Outcome::Finished));
    }
}
