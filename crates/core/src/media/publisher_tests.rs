//! Tests of the publisher on a virtual clock: the handshake with its token, START and
//! START_CONFIRM retries (D18), refusals, no DATA before START_CONFIRM, the pacing schedule
//! (D26) and frame count (D27), application frames, and a publisher streaming through the
//! relay to a subscriber.

use super::*;
use crate::media::initiator::{Initiator, InitiatorConfig};
use crate::media::relay::{MediaRole, Relay, RelayConfig};
use loudsync_protocol::media::{
    decode_data, encode_start_ack, FLAG_DATA, FLAG_START, FLAG_START_CONFIRM,
};
use std::net::SocketAddr;

fn t0() -> Now {
    Now {
        instant: Instant::now(),
        unix_ms: 1_700_000_000_000,
    }
}

fn sid(s: &str) -> StreamId {
    StreamId::new(s).unwrap()
}

fn token() -> MediaToken {
    MediaToken::new(&b"publish-token"[..]).unwrap()
}

/// F = 2020 bytes at 50 fps, D = 1000: fragments 1000, 993, 27 (D24's example).
fn params() -> StreamParams {
    StreamParams::new(2020 * 8 * 50, 50, 1000).unwrap()
}

fn publisher(frames: Option<u64>, now: Now) -> Publisher {
    Publisher::new(
        PublisherConfig::new(sid("sess-1"), token(), params(), 50, frames),
        now,
    )
}

fn drain(p: &mut Publisher) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| p.poll_transmit()).collect()
}

fn flag(bytes: &[u8]) -> u16 {
    u16::from_le_bytes([bytes[0], bytes[1]])
}

fn id() -> ConnectionId {
    ConnectionId::from_random([5; 16])
}

fn ack() -> Vec<u8> {
    encode_start_ack(&id(), &sid("sess-1"))
}

/// The sequence numbers of the DATA datagrams in `out`, one per datagram.
fn sequences(out: &[Vec<u8>]) -> Vec<i64> {
    out.iter()
        .filter(|b| flag(b) == FLAG_DATA)
        .map(|b| decode_data(b).unwrap().header.sequence)
        .collect()
}

#[test]
fn start_carries_the_token_and_retries_on_d18s_schedule_then_gives_up() {
    let now = t0();
    let mut p = publisher(Some(10), now);
    let start = encode_start(&sid("sess-1"), Some(&token()));
    assert_eq!(drain(&mut p), vec![start.clone()]);
    match decode_control(&start).unwrap().body {
        ControlBody::Start { media_token, .. } => assert_eq!(media_token, Some(token())),
        other => panic!("{other:?}"),
    }
    let at = |ms: u64| now.plus(Duration::from_millis(ms));
    assert_eq!(p.poll_timeout(), Some(at(500).instant));
    p.handle_timeout(at(499));
    assert!(drain(&mut p).is_empty());
    p.handle_timeout(at(500));
    assert_eq!(drain(&mut p), vec![start.clone()]);
    assert_eq!(p.poll_timeout(), Some(at(1500).instant));
    p.handle_timeout(at(1500));
    assert_eq!(drain(&mut p), vec![start]);
    assert_eq!(p.poll_timeout(), Some(at(3500).instant));
    p.handle_timeout(at(3499));
    assert_eq!(p.outcome(), None);
    p.handle_timeout(at(3500));
    assert_eq!(p.outcome(), Some(Outcome::NoStartAck));
    assert_eq!(p.outcome().unwrap().exit_code(), 5);
    assert_eq!(p.phase(), Phase::Done);
    assert!(drain(&mut p).is_empty());
    assert_eq!(p.poll_timeout(), None);
}

#[test]
fn an_error_refuses_with_its_code() {
    let now = t0();
    let mut p = publisher(None, now);
    drain(&mut p);
    p.handle_datagram(
        now,
        &encode_error(ErrorCode::BadToken, &ConnectionId::ZERO, None),
    );
    assert_eq!(p.outcome(), Some(Outcome::Refused(6)));
    assert_eq!(p.outcome().unwrap().exit_code(), 6);
    assert!(drain(&mut p).is_empty(), "an ERROR is never answered");
    // While streaming too.
    let mut p = publisher(None, now);
    p.handle_datagram(now, &ack());
    drain(&mut p);
    // Not without our connection id (a forged ERROR from the relay's address).
    p.handle_datagram(
        now,
        &encode_error(ErrorCode::Refused, &ConnectionId::ZERO, None),
    );
    assert_eq!(p.outcome(), None);
    p.handle_datagram(now, &encode_error(ErrorCode::StreamMismatch, &id(), None));
    assert_eq!(p.outcome(), Some(Outcome::Refused(4)));
    p.handle_timeout(now.plus(Duration::from_secs(1)));
    assert!(drain(&mut p).is_empty(), "nothing after a refusal");
}

#[test]
fn a_start_ack_for_another_stream_gets_error_4() {
    let now = t0();
    let mut p = publisher(None, now);
    drain(&mut p);
    p.handle_datagram(now, &encode_start_ack(&id(), &sid("other")));
    assert_eq!(
        drain(&mut p),
        vec![encode_error(
            ErrorCode::StreamMismatch,
            &id(),
            Some(&sid("sess-1"))
        )]
    );
    assert_eq!(p.outcome(), Some(Outcome::Refused(4)));
}

#[test]
fn start_confirm_goes_first_then_frame_1_and_is_resent_three_times_in_all() {
    let now = t0();
    let mut p = publisher(None, now);
    drain(&mut p);
    let acked = now.plus(Duration::from_millis(30));
    p.handle_datagram(acked, &ack());
    assert_eq!(p.phase(), Phase::Streaming);
    assert_eq!(p.connection_id(), Some(&id()));
    let out = drain(&mut p);
    let confirm = encode_start_confirm(&id(), &sid("sess-1"));
    assert_eq!(out[0], confirm, "no DATA before START_CONFIRM");
    assert_eq!(
        out[1..].iter().map(Vec::len).collect::<Vec<_>>(),
        [1000, 993, 27]
    );
    assert_eq!(sequences(&out), [1, 1, 1]);
    // A duplicate START_ACK gets the same START_CONFIRM.
    p.handle_datagram(acked, &ack());
    assert_eq!(drain(&mut p), vec![confirm.clone()]);
    // Resends at +500 and +1500 ms, then no more (frames go on every 20 ms meanwhile).
    let mut confirms = vec![];
    let mut t = acked;
    while t.instant <= acked.instant + Duration::from_secs(5) {
        t = Now {
            instant: p.poll_timeout().unwrap(),
            unix_ms: 0,
        };
        p.handle_timeout(t);
        for bytes in drain(&mut p) {
            if flag(&bytes) == FLAG_START_CONFIRM {
                assert_eq!(bytes, confirm);
                confirms.push(t.instant - acked.instant);
            }
        }
    }
    assert_eq!(
        confirms,
        [Duration::from_millis(500), Duration::from_millis(1500)]
    );
}

#[test]
fn no_data_before_the_handshake() {
    let now = t0();
    let mut p = Publisher::new(
        PublisherConfig::new(sid("sess-1"), token(), params(), 50, Some(5)),
        now,
    );
    for ms in [0, 100, 500, 1000, 1500] {
        p.handle_timeout(now.plus(Duration::from_millis(ms)));
        assert!(drain(&mut p).iter().all(|b| flag(b) == FLAG_START));
        assert_eq!(p.sent_frames(), 0);
    }
    // DATA or a START_CONFIRM arriving is no START_ACK.
    p.handle_datagram(now, &encode_start_confirm(&id(), &sid("sess-1")));
    p.handle_datagram(now, &drain_one_data());
    assert_eq!(p.phase(), Phase::AwaitAck);
    assert_eq!(
        p.send_frame(now, b"x"),
        Err(SendFrameError::Synthetic),
        "synthetic source"
    );
}

fn drain_one_data() -> Vec<u8> {
    loudsync_protocol::media::encode_data(
        &DataHeader {
            sequence: 1,
            timestamp: 0,
            frequency: FREQUENCY,
        },
        0,
        100,
    )
}

#[test]
fn frames_are_paced_from_the_first_start_confirm_without_drift() {
    // 3 fps: frame n is due base + n * 333_333_333 ns (integer division, no accumulation).
    let now = t0();
    let params = StreamParams::new(2400, 3, 64).unwrap();
    let mut p = Publisher::new(
        PublisherConfig::new(sid("sess-1"), token(), params, 3, Some(7)),
        now,
    );
    drain(&mut p);
    let base = now.plus(Duration::from_millis(40));
    p.handle_datagram(base, &ack());
    let mut due = vec![];
    let first = drain(&mut p);
    assert_eq!(sequences(&first), [1, 1]);
    due.push(Duration::ZERO);
    while let Some(at) = p.poll_timeout() {
        let t = Now {
            instant: at,
            unix_ms: 0,
        };
        p.handle_timeout(t);
        let out = drain(&mut p);
        let seqs = sequences(&out);
        if !seqs.is_empty() {
            assert_eq!(seqs.len(), 2, "one frame of 2 datagrams at a time");
            let header = decode_data(out.iter().find(|b| flag(b) == FLAG_DATA).unwrap())
                .unwrap()
                .header;
            assert_eq!(header.sequence as usize, due.len() + 1);
            assert_eq!(
                header.timestamp,
                i64::try_from((at - now.instant).as_nanos()).unwrap(),
                "counter = ns since the publisher was made"
            );
            assert_eq!(header.frequency, 1_000_000_000);
            due.push(at - base.instant);
        }
    }
    let expected: Vec<Duration> = (0..7u64)
        .map(|n| Duration::from_nanos(n * 1_000_000_000 / 3))
        .collect();
    assert_eq!(due, expected);
    assert_eq!(due[3], Duration::from_secs(1));
    assert_eq!(p.sent_frames(), 7);
    assert_eq!(p.outcome(), Some(Outcome::Finished));
    assert_eq!(p.outcome().unwrap().exit_code(), 0);
}

#[test]
fn a_late_timeout_sends_every_frame_due_at_once_and_nothing_early() {
    let now = t0();
    let mut p = publisher(Some(100), now);
    drain(&mut p);
    p.handle_datagram(now, &ack());
    drain(&mut p);
    // 19.999 ms: frame 2 is not due yet.
    p.handle_timeout(now.plus(Duration::from_micros(19_999)));
    assert!(sequences(&drain(&mut p)).is_empty());
    // 100 ms late: frames 2..=6 (due at 20, 40, 60, 80, 100 ms) go at once, no more.
    p.handle_timeout(now.plus(Duration::from_millis(100)));
    assert_eq!(
        sequences(&drain(&mut p)),
        [2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6]
    );
    assert_eq!(p.sent_frames(), 6);
}

#[test]
fn frame_count_ends_the_stream_after_frame_n() {
    let now = t0();
    let mut p = publisher(Some(3), now);
    drain(&mut p);
    p.handle_datagram(now, &ack());
    p.handle_timeout(now.plus(Duration::from_secs(10)));
    let out = drain(&mut p);
    assert_eq!(sequences(&out), [1, 1, 1, 2, 2, 2, 3, 3, 3]);
    assert_eq!(p.outcome(), Some(Outcome::Finished));
    assert_eq!(p.poll_timeout(), None);
    p.handle_timeout(now.plus(Duration::from_secs(20)));
    assert!(drain(&mut p).is_empty());
    // `None`: no end.
    let mut p = publisher(None, now);
    drain(&mut p);
    p.handle_datagram(now, &ack());
    p.handle_timeout(now.plus(Duration::from_secs(60)));
    assert_eq!(p.sent_frames(), 3001);
    assert_eq!(p.outcome(), None);
}

#[test]
fn send_frame_cuts_an_application_frame_into_datagrams() {
    let now = t0();
    let params = StreamParams::new(2020 * 8 * 50, 50, 100).unwrap();
    let mut p = Publisher::new(
        PublisherConfig::application(sid("sess-1"), token(), params),
        now,
    );
    drain(&mut p);
    assert_eq!(
        p.send_frame(now, b"early"),
        Err(SendFrameError::NotStreaming)
    );
    p.handle_datagram(now, &ack());
    assert_eq!(
        drain(&mut p),
        vec![encode_start_confirm(&id(), &sid("sess-1"))],
        "no synthetic frames"
    );
    assert_eq!(
        p.poll_timeout(),
        Some(now.instant + Duration::from_millis(500))
    );
    let payload: Vec<u8> = (0..200u8).collect();
    let later = now.plus(Duration::from_millis(7));
    assert_eq!(p.send_frame(later, &payload), Ok(1));
    let out = drain(&mut p);
    assert_eq!(out.iter().map(Vec::len).collect::<Vec<_>>(), [100, 100, 78]);
    let mut joined = vec![];
    for bytes in &out {
        let data = decode_data(bytes).unwrap();
        assert_eq!(data.header.sequence, 1);
        assert_eq!(data.header.timestamp, 7_000_000);
        joined.extend_from_slice(data.payload);
    }
    assert_eq!(joined, payload);
    assert_eq!(p.send_frame(later, &[]), Ok(2));
    assert_eq!(drain(&mut p).iter().map(Vec::len).collect::<Vec<_>>(), [26]);
    assert_eq!(p.sent_frames(), 2);
    p.handle_datagram(later, &encode_error(ErrorCode::Refused, &id(), None));
    assert_eq!(p.send_frame(later, b"x"), Err(SendFrameError::Done));
    assert_eq!(
        SendFrameError::NotStreaming.to_string(),
        "the media handshake has not completed"
    );
}

/// Delivers everything queued between the three parties, with no loss, at `now`.
fn exchange(
    now: Now,
    relay: &mut Relay,
    publisher: (&mut Publisher, SocketAddr),
    subscriber: (&mut Initiator, SocketAddr),
) -> u64 {
    let mut forwarded = 0;
    for _ in 0..10 {
        let mut moved = false;
        while let Some(bytes) = publisher.0.poll_transmit() {
            moved = true;
            let to = relay.handle_datagram(now, publisher.1, &bytes).to_vec();
            for addr in to {
                assert_eq!(addr, subscriber.1);
                forwarded += 1;
                subscriber.0.handle_datagram(now, &bytes);
            }
        }
        while let Some(bytes) = subscriber.0.poll_transmit() {
            moved = true;
            assert!(relay.handle_datagram(now, subscriber.1, &bytes).is_empty());
        }
        while let Some(t) = relay.poll_transmit() {
            moved = true;
            if t.to == publisher.1 {
                publisher.0.handle_datagram(now, &t.bytes);
            } else {
                assert_eq!(t.to, subscriber.1);
                subscriber.0.handle_datagram(now, &t.bytes);
            }
        }
        if !moved {
            break;
        }
    }
    forwarded
}

#[test]
fn a_publisher_streams_through_the_relay_to_a_subscriber() {
    let now = t0();
    let mut relay = Relay::new(RelayConfig::default(), now, Box::new(|| [1; 16]), {
        let mut k = 0u8;
        Box::new(move || {
            k += 1;
            [k; 32]
        })
    });
    relay.open_session("sess-1");
    let publish = relay
        .grant(now, "sess-1", "host", MediaRole::Publish)
        .unwrap();
    let subscribe = relay
        .grant(now, "sess-1", "m2", MediaRole::Subscribe)
        .unwrap();
    let pub_addr: SocketAddr = "192.0.2.1:5000".parse().unwrap();
    let sub_addr: SocketAddr = "192.0.2.2:5000".parse().unwrap();
    let mut sub_config = InitiatorConfig::new(sid("sess-1"), params(), 50, None);
    sub_config.media_token = Some(MediaToken::new(subscribe.token.as_bytes()).unwrap());
    let mut sub = Initiator::new(sub_config, now);
    // The subscriber's handshake first (START, START_ACK, START_CONFIRM): it then gets every
    // frame from the publisher's first.
    for _ in 0..2 {
        while let Some(bytes) = sub.poll_transmit() {
            assert!(relay.handle_datagram(now, sub_addr, &bytes).is_empty());
        }
        while let Some(t) = relay.poll_transmit() {
            sub.handle_datagram(now, &t.bytes);
        }
    }
    assert_eq!(relay.subscribers("sess-1"), 1);
    let mut p = Publisher::new(
        PublisherConfig::new(
            sid("sess-1"),
            MediaToken::new(publish.token.as_bytes()).unwrap(),
            params(),
            50,
            Some(50),
        ),
        now,
    );
    let mut forwarded = exchange(now, &mut relay, (&mut p, pub_addr), (&mut sub, sub_addr));
    assert_eq!(relay.streams(), 2);
    assert_eq!(relay.subscribers("sess-1"), 1);
    let end = now.instant + Duration::from_secs(3);
    while let Some(at) = [p.poll_timeout(), sub.poll_timeout()]
        .into_iter()
        .flatten()
        .min()
    {
        if at > end {
            break;
        }
        let t = Now {
            instant: at,
            unix_ms: 0,
        };
        p.handle_timeout(t);
        sub.handle_timeout(t);
        forwarded += exchange(t, &mut relay, (&mut p, pub_addr), (&mut sub, sub_addr));
    }
    assert_eq!(p.outcome(), Some(Outcome::Finished));
    assert_eq!(forwarded, 150, "50 frames of 3 datagrams, all forwarded");
    // The subscriber has no frame count (R7): frames after the publisher's 50th are dropped.
    let frames = sub.frames();
    assert!(frames.len() >= 50);
    assert!(frames[..50]
        .iter()
        .enumerate()
        .all(|(i, f)| f.seq == i as i64 + 1
            && f.status == crate::media::initiator::FrameStatus::Success));
    assert_eq!(sub.summary().success, 50);
}
