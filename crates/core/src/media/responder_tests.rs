//! Tests of the media responder on a virtual clock: each step of D12 with the exact reply
//! bytes, duplicates, expiry (D14), capacity, teardown, pacing and fragmentation (D21-D27),
//! and a property test that no DATA ever reaches an unconfirmed address and no reply is larger
//! than the datagram that caused it.

use super::*;
use loudsync_protocol::media::{
    decode_control, decode_data, encode_data, encode_start, encode_start_confirm, ControlFrame,
    FLAG_DATA, FLAG_LEGACY_ID, LEGACY_START,
};
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};

fn t0() -> Now {
    Now {
        instant: Instant::now(),
        unix_ms: 1_700_000_000_000,
    }
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, n], 40_000 + u16::from(n)))
}

fn sid(s: &str) -> StreamId {
    StreamId::new(s).unwrap()
}

/// Ids from a counter: the k-th id is made from sixteen bytes `k`.
fn counter_ids() -> IdRandomness {
    let mut k = 0u8;
    Box::new(move || {
        k = k.wrapping_add(1);
        [k; 16]
    })
}

fn id_n(k: u8) -> ConnectionId {
    ConnectionId::from_random([k; 16])
}

/// F = 2020 bytes at 50 fps, D = 1000: fragments 1000, 993, 27 (D24's example).
fn params() -> StreamParams {
    StreamParams::new(2020 * 8 * 50, 50, 1000).unwrap()
}

fn config(frames: u64) -> ResponderConfig {
    ResponderConfig::new(sid("synthetic"), params(), 50, frames)
}

fn responder(cfg: ResponderConfig, now: Now) -> Responder {
    Responder::new(cfg, now, counter_ids())
}

fn start() -> Vec<u8> {
    encode_start(&sid("synthetic"), None)
}

fn confirm(id: &ConnectionId) -> Vec<u8> {
    encode_start_confirm(id, &sid("synthetic"))
}

fn drain(r: &mut Responder) -> Vec<Transmit> {
    std::iter::from_fn(|| r.poll_transmit()).collect()
}

fn flag(bytes: &[u8]) -> u16 {
    u16::from_le_bytes([bytes[0], bytes[1]])
}

/// Sends `bytes` from `from`, drains the replies and checks none is larger than `bytes`.
fn send(r: &mut Responder, now: Now, from: SocketAddr, bytes: &[u8]) -> Vec<Transmit> {
    r.handle_datagram(now, from, bytes);
    let out = drain(r);
    for t in out.iter().filter(|t| flag(&t.bytes) != FLAG_DATA) {
        assert!(t.bytes.len() <= bytes.len(), "amplifying reply {t:?}");
    }
    out
}

/// The ERROR bytes D11 prescribes, written out by hand.
fn error_bytes(code: u16, id: &ConnectionId, stream: Option<&str>) -> Vec<u8> {
    let mut b = vec![0x03, 0x01];
    b.extend([0; 24]);
    b.extend([1, 0, 0, 0]);
    b.extend(id.as_bytes());
    b.extend([0x03, 0x00, 0x02, 0x00]);
    b.extend(code.to_le_bytes());
    if let Some(s) = stream {
        b.extend([0x01, 0x00]);
        b.extend((s.len() as u16).to_le_bytes());
        b.extend(s.as_bytes());
    }
    b
}

fn start_ack_bytes(id: &ConnectionId, stream: &str) -> Vec<u8> {
    let mut b = vec![0x01, 0x01];
    b.extend([0; 24]);
    b.extend([1, 1, 0, 0]);
    b.extend(id.as_bytes());
    b.extend([0x01, 0x00]);
    b.extend((stream.len() as u16).to_le_bytes());
    b.extend(stream.as_bytes());
    b
}

#[test]
fn step1_drops_what_a_responder_does_not_take() {
    let now = t0();
    let mut r = responder(config(10), now);
    let id = id_n(9);
    let mut unknown = start();
    unknown[0] = 0x07;
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x00, 0x01],
        vec![0u8; 25],
        encode_data(
            &DataHeader {
                sequence: 1,
                timestamp: 0,
                frequency: FREQUENCY,
            },
            0,
            100,
        ),
        encode_start_ack(&id, &sid("synthetic")),
        encode_legacy_id(&id).to_vec(),
        unknown,
        LEGACY_START.to_vec(),
    ];
    for case in cases {
        assert!(send(&mut r, now, addr(1), &case).is_empty(), "{case:?}");
        assert!(r.is_empty());
    }
}

#[test]
fn step2_short_start_and_confirm_are_dropped() {
    let now = t0();
    let mut r = responder(config(10), now);
    let mut s = start();
    assert_eq!(s.len(), 256);
    s.truncate(255);
    assert!(send(&mut r, now, addr(1), &s).is_empty());
    // Even a 255-byte bad-version START is dropped (step 2 before step 3).
    s[26] = 9;
    assert!(send(&mut r, now, addr(1), &s).is_empty());
    assert!(r.is_empty());
    // A short START_CONFIRM does not touch a pending tuple.
    send(&mut r, now, addr(1), &start());
    let id = r.connection_id(addr(1)).unwrap();
    let mut c = confirm(&id);
    c.truncate(255);
    assert!(send(&mut r, now, addr(1), &c).is_empty());
    assert_eq!(r.state(addr(1)), Some(TupleState::PendingConfirm));
}

#[test]
fn step3_bad_version_gets_error_1_and_tears_down() {
    let now = t0();
    let mut r = responder(config(10), now);
    let mut s = start();
    s[26] = 2;
    let out = send(&mut r, now, addr(1), &s);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to, addr(1));
    assert_eq!(out[0].bytes, error_bytes(1, &ConnectionId::ZERO, None));
    assert_eq!(out[0].bytes.len(), 73);
    assert!(r.is_empty());

    // With state, the ERROR carries the tuple's id and the state goes.
    send(&mut r, now, addr(1), &start());
    let id = r.connection_id(addr(1)).unwrap();
    let mut c = confirm(&id);
    c[26] = 0;
    let out = send(&mut r, now, addr(1), &c);
    assert_eq!(out[0].bytes, error_bytes(1, &id, None));
    assert!(r.is_empty());
}

#[test]
fn step4_bad_tlvs_get_error_2() {
    let now = t0();
    let mut r = responder(config(10), now);
    // One trailing byte after the padding: the STREAM_ID was read first, so it is echoed.
    let mut s = start();
    s.push(0);
    let out = send(&mut r, now, addr(1), &s);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].bytes,
        error_bytes(2, &ConnectionId::ZERO, Some("synthetic"))
    );
    // No STREAM_ID at all: a 256-byte START of one PADDING TLV.
    let mut bare = start()[..67].to_vec();
    bare.extend([0x04, 0x00]);
    bare.extend(((256 - 71) as u16).to_le_bytes());
    bare.resize(256, 0);
    let out = send(&mut r, now, addr(1), &bare);
    assert_eq!(out[0].bytes, error_bytes(2, &ConnectionId::ZERO, None));
    assert!(r.is_empty());
}

#[test]
fn step5_unknown_stream_gets_error_3() {
    let now = t0();
    let mut r = responder(config(10), now);
    let out = send(&mut r, now, addr(1), &encode_start(&sid("other"), None));
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].bytes,
        error_bytes(3, &ConnectionId::ZERO, Some("other"))
    );
    assert!(r.is_empty());
}

#[test]
fn step5_start_gets_start_ack_with_exact_bytes() {
    let now = t0();
    let mut r = responder(config(10), now);
    let out = send(&mut r, now, addr(1), &start());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to, addr(1));
    assert_eq!(out[0].bytes, start_ack_bytes(&id_n(1), "synthetic"));
    assert_eq!(out[0].bytes.len(), 71 + 9);
    assert_eq!(r.state(addr(1)), Some(TupleState::PendingConfirm));
    assert_eq!(r.connection_id(addr(1)), Some(id_n(1)));
}

#[test]
fn step5_duplicate_start_gets_the_identical_start_ack() {
    let now = t0();
    let mut r = responder(config(10), now);
    let first = send(&mut r, now, addr(1), &start());
    let again = send(
        &mut r,
        now.plus(Duration::from_millis(500)),
        addr(1),
        &start(),
    );
    assert_eq!(first, again);
    assert_eq!(r.connection_id(addr(1)), Some(id_n(1)));
    // Also while streaming: same bytes, nothing reset.
    send(&mut r, now, addr(1), &confirm(&id_n(1)));
    let later = now.plus(Duration::from_millis(30));
    r.handle_timeout(later);
    drain(&mut r);
    let again = send(&mut r, later, addr(1), &start());
    assert_eq!(first, again);
    assert_eq!(r.state(addr(1)), Some(TupleState::Streaming { sent: 2 }));
}

#[test]
fn step5_capacity_counts_pending_and_streaming() {
    let now = t0();
    let mut cfg = config(100);
    cfg.max_streams = 2;
    let mut r = responder(cfg, now);
    send(&mut r, now, addr(1), &start());
    send(&mut r, now, addr(1), &confirm(&id_n(1)));
    send(&mut r, now, addr(2), &start());
    assert_eq!(r.len(), 2);
    let out = send(&mut r, now, addr(3), &start());
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].bytes,
        error_bytes(5, &ConnectionId::ZERO, Some("synthetic"))
    );
    assert_eq!(r.state(addr(3)), None);
    // A duplicate from a holder is still answered when full.
    assert_eq!(send(&mut r, now, addr(2), &start()).len(), 1);
    // Once the pending one expires there is room again.
    let later = now.plus(DEFAULT_CONFIRM_TIMEOUT);
    r.handle_timeout(later);
    drain(&mut r);
    let out = send(&mut r, later, addr(3), &start());
    assert_eq!(flag(&out[0].bytes), 0x0101);
}

#[test]
fn step6_confirm_without_state_is_dropped_and_no_media_flows() {
    let now = t0();
    let mut r = responder(config(10), now);
    send(&mut r, now, addr(1), &start());
    // A spoofer guesses addr(2) and even the right id: addr(2) has no state.
    assert!(send(&mut r, now, addr(2), &confirm(&id_n(1))).is_empty());
    assert!(send(&mut r, now, addr(2), &confirm(&ConnectionId::ZERO)).is_empty());
    r.handle_timeout(now.plus(Duration::from_secs(1)));
    assert!(drain(&mut r).is_empty());
    assert_eq!(r.state(addr(1)), Some(TupleState::PendingConfirm));
}

#[test]
fn step6_wrong_id_or_stream_gets_error_4_and_teardown() {
    let now = t0();
    let mut r = responder(config(10), now);
    send(&mut r, now, addr(1), &start());
    let out = send(&mut r, now, addr(1), &confirm(&id_n(7)));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].bytes, error_bytes(4, &id_n(1), Some("synthetic")));
    assert!(r.is_empty());

    send(&mut r, now, addr(1), &start());
    let id = r.connection_id(addr(1)).unwrap();
    assert_eq!(id, id_n(2));
    let out = send(
        &mut r,
        now,
        addr(1),
        &encode_start_confirm(&id, &sid("other")),
    );
    assert_eq!(out[0].bytes, error_bytes(4, &id, Some("other")));
    assert!(r.is_empty());
}

#[test]
fn step6_confirm_streams_frame_1_at_once_fragmented() {
    let now = t0();
    let mut r = responder(config(10), now);
    send(&mut r, now, addr(1), &start());
    let at = now.plus(Duration::from_millis(7));
    let out = send(&mut r, at, addr(1), &confirm(&id_n(1)));
    let sizes: Vec<usize> = out.iter().map(|t| t.bytes.len()).collect();
    assert_eq!(sizes, [1000, 993, 27]);
    let mut p = 0;
    for t in &out {
        assert_eq!(t.to, addr(1));
        let d = decode_data(&t.bytes).unwrap();
        assert_eq!(d.header.sequence, 1);
        assert_eq!(d.header.timestamp, 7_000_000);
        assert_eq!(d.header.frequency, 1_000_000_000);
        assert!(d.pattern_ok(p));
        p += d.payload.len();
    }
    assert_eq!(r.state(addr(1)), Some(TupleState::Streaming { sent: 1 }));
    assert_eq!(
        r.poll_timeout(),
        Some(at.instant + Duration::from_millis(20))
    );
}

#[test]
fn step6_duplicate_confirm_while_streaming_is_ignored() {
    let now = t0();
    let mut r = responder(config(10), now);
    send(&mut r, now, addr(1), &start());
    send(&mut r, now, addr(1), &confirm(&id_n(1)));
    let later = now.plus(Duration::from_millis(25));
    r.handle_timeout(later);
    assert_eq!(drain(&mut r).len(), 3);
    assert!(send(&mut r, later, addr(1), &confirm(&id_n(1))).is_empty());
    let out = {
        r.handle_timeout(now.plus(Duration::from_millis(40)));
        drain(&mut r)
    };
    assert_eq!(decode_data(&out[0].bytes).unwrap().header.sequence, 3);
}

#[test]
fn no_data_before_confirm() {
    let now = t0();
    let mut r = responder(config(10), now);
    send(&mut r, now, addr(1), &start());
    for ms in (0..5000).step_by(10) {
        r.handle_timeout(now.plus(Duration::from_millis(ms)));
        assert!(drain(&mut r).is_empty());
    }
}

#[test]
fn pending_expires_exactly_at_confirm_timeout_after_the_last_start() {
    let now = t0();
    let mut r = responder(config(10), now);
    send(&mut r, now, addr(1), &start());
    send(&mut r, now, addr(2), &start());
    // A duplicate START 1 s later moves addr(2)'s deadline.
    send(&mut r, now.plus(Duration::from_secs(1)), addr(2), &start());
    assert_eq!(
        r.poll_timeout(),
        Some(now.instant + DEFAULT_CONFIRM_TIMEOUT)
    );
    let just_before = now.plus(DEFAULT_CONFIRM_TIMEOUT - Duration::from_nanos(1));
    r.handle_timeout(just_before);
    assert_eq!(r.len(), 2);
    let at = now.plus(DEFAULT_CONFIRM_TIMEOUT);
    // Confirm at exactly the deadline: the state is gone, dropped silently.
    assert!(send(&mut r, at, addr(1), &confirm(&id_n(1))).is_empty());
    assert_eq!(r.state(addr(1)), None);
    assert_eq!(r.state(addr(2)), Some(TupleState::PendingConfirm));
    // A new START starts over with a new id.
    let out = send(&mut r, at, addr(1), &start());
    assert_eq!(out[0].bytes, start_ack_bytes(&id_n(3), "synthetic"));
}

#[test]
fn error_received_tears_down_silently() {
    let now = t0();
    let mut r = responder(config(100), now);
    send(&mut r, now, addr(1), &start());
    send(&mut r, now, addr(1), &confirm(&id_n(1)));
    let err = encode_error(ErrorCode::StreamMismatch, &id_n(1), None);
    assert!(send(&mut r, now, addr(1), &err).is_empty());
    assert!(r.is_empty());
    r.handle_timeout(now.plus(Duration::from_secs(1)));
    assert!(drain(&mut r).is_empty());
    // A broken ERROR is never answered.
    let mut bad = err.clone();
    bad[26] = 3;
    send(&mut r, now, addr(1), &start());
    assert!(send(&mut r, now, addr(1), &bad).is_empty());
    assert_eq!(r.state(addr(1)), Some(TupleState::PendingConfirm));
}

#[test]
fn pacing_sends_n_frames_at_their_instants_then_drops_the_tuple() {
    let now = t0();
    let mut r = responder(config(5), now);
    send(&mut r, now, addr(1), &start());
    let base = now.plus(Duration::from_millis(3));
    let mut seqs = vec![];
    for t in send(&mut r, base, addr(1), &confirm(&id_n(1))) {
        seqs.push(decode_data(&t.bytes).unwrap().header.sequence);
    }
    for n in 1..5u64 {
        let due = base.instant + Duration::from_millis(20 * n);
        assert_eq!(r.poll_timeout(), Some(due));
        r.handle_timeout(base.plus(Duration::from_millis(20 * n) - Duration::from_nanos(1)));
        assert!(drain(&mut r).is_empty());
        let at = base.plus(Duration::from_millis(20 * n));
        r.handle_timeout(at);
        let out = drain(&mut r);
        assert_eq!(out.len(), 3);
        for t in out {
            let d = decode_data(&t.bytes).unwrap();
            assert_eq!(d.header.timestamp, (3 + 20 * n as i64) * 1_000_000);
            seqs.push(d.header.sequence);
        }
    }
    assert_eq!(seqs, [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5]);
    assert!(r.is_empty());
    assert_eq!(r.poll_timeout(), None);
    r.handle_timeout(base.plus(Duration::from_secs(1)));
    assert!(drain(&mut r).is_empty());
    // A later START is a new stream with a new id.
    let out = send(&mut r, base, addr(1), &start());
    assert_eq!(out[0].bytes, start_ack_bytes(&id_n(2), "synthetic"));
}

#[test]
fn pacing_does_not_accumulate_rounding() {
    let now = t0();
    let cfg = ResponderConfig::new(
        sid("synthetic"),
        StreamParams::new(100 * 8 * 3, 3, 1400).unwrap(),
        3,
        4,
    );
    let mut r = responder(cfg, now);
    send(&mut r, now, addr(1), &start());
    send(&mut r, now, addr(1), &confirm(&id_n(1)));
    let mut dues = vec![];
    while let Some(due) = r.poll_timeout() {
        dues.push(due - now.instant);
        r.handle_timeout(now.plus(due - now.instant));
        drain(&mut r);
    }
    let ns = |n| Duration::from_nanos(n);
    assert_eq!(dues, [ns(333_333_333), ns(666_666_666), ns(1_000_000_000)]);
}

#[test]
fn late_frames_go_at_once_none_skipped() {
    let now = t0();
    let mut r = responder(config(10), now);
    send(&mut r, now, addr(1), &start());
    send(&mut r, now, addr(1), &confirm(&id_n(1)));
    r.handle_timeout(now.plus(Duration::from_millis(100)));
    let seqs: Vec<i64> = drain(&mut r)
        .iter()
        .map(|t| decode_data(&t.bytes).unwrap().header.sequence)
        .collect();
    assert_eq!(seqs, [2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6]);
}

#[test]
fn many_tuples_stream_with_their_own_ids_and_sequences() {
    let now = t0();
    let mut r = responder(config(3), now);
    send(&mut r, now, addr(1), &start());
    send(&mut r, now, addr(2), &start());
    send(&mut r, now, addr(1), &confirm(&id_n(1)));
    let later = now.plus(Duration::from_millis(10));
    let out = send(&mut r, later, addr(2), &confirm(&id_n(2)));
    assert!(out.iter().all(|t| t.to == addr(2)));
    assert_eq!(decode_data(&out[0].bytes).unwrap().header.sequence, 1);
    r.handle_timeout(now.plus(Duration::from_millis(30)));
    let out = drain(&mut r);
    let mut per: HashMap<SocketAddr, Vec<i64>> = HashMap::new();
    for t in out {
        per.entry(t.to)
            .or_default()
            .push(decode_data(&t.bytes).unwrap().header.sequence);
    }
    assert_eq!(per[&addr(1)], [2, 2, 2]);
    assert_eq!(per[&addr(2)], [2, 2, 2]);
}

#[test]
fn legacy_start_streams_at_once_when_enabled() {
    let now = t0();
    let mut cfg = config(3);
    cfg.legacy_start = true;
    let mut r = responder(cfg, now);
    r.handle_datagram(now, addr(1), LEGACY_START);
    let out = drain(&mut r);
    assert_eq!(out[0].bytes.len(), 39);
    assert_eq!(flag(&out[0].bytes), FLAG_LEGACY_ID);
    assert_eq!(&out[0].bytes[2..], id_n(1).as_bytes());
    assert_eq!(out.len(), 4);
    assert_eq!(decode_data(&out[1].bytes).unwrap().header.sequence, 1);
    r.handle_datagram(now, addr(1), LEGACY_START);
    assert!(drain(&mut r).is_empty());
}

#[test]
fn frame_count_rounds_half_up_and_is_at_least_one() {
    assert_eq!(frame_count(Duration::from_secs(1), 50), 50);
    assert_eq!(frame_count(Duration::ZERO, 50), 1);
    assert_eq!(frame_count(Duration::from_millis(10), 50), 1);
    assert_eq!(frame_count(Duration::from_millis(30), 50), 2);
    assert_eq!(frame_count(Duration::from_millis(29), 50), 1);
    assert_eq!(frame_count(Duration::from_secs(60), 60), 3600);
}

/// One step of the property test.
#[derive(Debug, Clone)]
enum Op {
    /// A datagram from address `from`.
    Datagram { from: u8, kind: Kind },
    /// Time passes by this many ms, then `handle_timeout`.
    Wait(u16),
}

#[derive(Debug, Clone)]
enum Kind {
    Start,
    StartOther,
    /// START_CONFIRM with the `k`-th id ever acknowledged to anyone (or a random one).
    Confirm(usize),
    Error,
    /// A valid frame of one of the above with byte `at` xor-ed by `x`, or truncated.
    Corrupt {
        base: Box<Kind>,
        at: usize,
        x: u8,
    },
    Truncate {
        base: Box<Kind>,
        len: usize,
    },
    Random(Vec<u8>),
}

fn kind() -> impl Strategy<Value = Kind> {
    let leaf = prop_oneof![
        3 => Just(Kind::Start),
        1 => Just(Kind::StartOther),
        3 => (0usize..6).prop_map(Kind::Confirm),
        1 => Just(Kind::Error),
        1 => proptest::collection::vec(any::<u8>(), 0..300).prop_map(Kind::Random),
    ];
    leaf.prop_recursive(1, 4, 1, |inner| {
        prop_oneof![
            (inner.clone(), 0usize..300, 1u8..=255).prop_map(|(b, at, x)| Kind::Corrupt {
                base: Box::new(b),
                at,
                x
            }),
            (inner, 0usize..300).prop_map(|(b, len)| Kind::Truncate {
                base: Box::new(b),
                len
            }),
        ]
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3, kind()).prop_map(|(from, kind)| Op::Datagram { from, kind }),
        1 => (0u16..3000).prop_map(Op::Wait),
    ]
}

fn render(kind: &Kind, acked: &[ConnectionId]) -> Vec<u8> {
    match kind {
        Kind::Start => start(),
        Kind::StartOther => encode_start(&sid("other"), None),
        Kind::Confirm(k) => confirm(acked.get(*k).unwrap_or(&id_n(200))),
        Kind::Error => encode_error(ErrorCode::Refused, &ConnectionId::ZERO, None),
        Kind::Corrupt { base, at, x } => {
            let mut b = render(base, acked);
            if let Some(byte) = b.get_mut(*at) {
                *byte ^= x;
            }
            b
        }
        Kind::Truncate { base, len } => {
            let mut b = render(base, acked);
            b.truncate(*len);
            b
        }
        Kind::Random(b) => b.clone(),
    }
}

proptest! {
    #[test]
    fn no_media_without_confirm_and_no_amplification(ops in proptest::collection::vec(op(), 1..60)) {
        let mut now = t0();
        let mut cfg = config(20);
        cfg.max_streams = 2;
        let mut r = responder(cfg, now);
        // Ids acknowledged to each address, and addresses that confirmed one of theirs.
        let mut acked: Vec<ConnectionId> = vec![];
        let mut acked_to: HashMap<SocketAddr, HashSet<ConnectionId>> = HashMap::new();
        let mut confirmed: HashSet<SocketAddr> = HashSet::new();
        for op in ops {
            let out = match op {
                Op::Wait(ms) => {
                    now = now.plus(Duration::from_millis(u64::from(ms)));
                    r.handle_timeout(now);
                    let out = drain(&mut r);
                    for t in &out {
                        prop_assert_eq!(flag(&t.bytes), FLAG_DATA, "only DATA on a timeout");
                    }
                    out
                }
                Op::Datagram { from, kind } => {
                    let from = addr(from);
                    let bytes = render(&kind, &acked);
                    // A START_CONFIRM the responder may accept: padded, our stream, and an
                    // id acknowledged to this very address.
                    if let Ok(ControlFrame {
                        body: ControlBody::StartConfirm { stream_id },
                        connection_id,
                        ..
                    }) = decode_control(&bytes)
                    {
                        if bytes.len() >= 256
                            && stream_id == sid("synthetic")
                            && acked_to.get(&from).is_some_and(|s| s.contains(&connection_id))
                        {
                            confirmed.insert(from);
                        }
                    }
                    r.handle_datagram(now, from, &bytes);
                    let out = drain(&mut r);
                    let control: usize = out
                        .iter()
                        .filter(|t| flag(&t.bytes) != FLAG_DATA)
                        .map(|t| t.bytes.len())
                        .sum();
                    prop_assert!(control <= bytes.len(), "reply of {} to {} bytes", control, bytes.len());
                    for t in &out {
                        prop_assert_eq!(t.to, from, "a reply goes to the sender");
                    }
                    out
                }
            };
            for t in out {
                match flag(&t.bytes) {
                    FLAG_DATA => prop_assert!(confirmed.contains(&t.to), "DATA to unconfirmed {}", t.to),
                    0x0101 => {
                        let id = ConnectionId::from_wire(t.bytes[30..67].try_into().unwrap());
                        acked.push(id);
                        acked_to.entry(t.to).or_default().insert(id);
                    }
                    other => prop_assert_eq!(other, 0x0103),
                }
            }
        }
    }
}
