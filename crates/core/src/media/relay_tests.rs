//! Tests of the session relay on a virtual clock: tokens (R5), every ERROR path of D12 with
//! R6's token checks (exact bytes), duplicates, confirm-timeout expiry (D14), fan-out and what
//! is not forwarded (R7), silent teardown (R8), lost-frame counting, and a property test that
//! a spoofing address never gets into a fan-out list and no reply is larger than its cause.

use super::*;
use loudsync_protocol::media::{
    decode_control, encode_data, encode_start, encode_start_confirm, ControlFrame, DataHeader,
    FREQUENCY,
};
use proptest::prelude::*;
use std::collections::HashSet;

const SESSION: &str = "sess-1";
const OTHER: &str = "sess-2";

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

/// Tokens from a counter: the k-th token is made from 32 bytes `k`.
fn counter_tokens() -> TokenRandomness {
    let mut k = 0u8;
    Box::new(move || {
        k = k.wrapping_add(1);
        [k; 32]
    })
}

fn id_n(k: u8) -> ConnectionId {
    ConnectionId::from_random([k; 16])
}

fn config() -> RelayConfig {
    RelayConfig {
        max_streams: 8,
        confirm_timeout: Duration::from_secs(5),
        token_ttl: Duration::from_secs(30),
    }
}

/// A relay with SESSION and OTHER open.
fn relay(cfg: RelayConfig, now: Now) -> Relay {
    let mut r = Relay::new(cfg, now, counter_ids(), counter_tokens());
    r.open_session(SESSION);
    r.open_session(OTHER);
    r
}

fn token_of(grant: &Grant) -> MediaToken {
    MediaToken::new(grant.token.as_bytes()).unwrap()
}

fn start(session: &str, token: Option<&MediaToken>) -> Vec<u8> {
    encode_start(&sid(session), token)
}

fn confirm(id: &ConnectionId, session: &str) -> Vec<u8> {
    encode_start_confirm(id, &sid(session))
}

fn data(sequence: i64) -> Vec<u8> {
    encode_data(
        &DataHeader {
            sequence,
            timestamp: 7,
            frequency: FREQUENCY,
        },
        0,
        100,
    )
}

fn drain(r: &mut Relay) -> Vec<Transmit> {
    std::iter::from_fn(|| r.poll_transmit()).collect()
}

fn events(r: &mut Relay) -> Vec<RelayEvent> {
    std::iter::from_fn(|| r.poll_event()).collect()
}

/// Sends a control datagram from `from`, drains the replies and checks each goes to `from`
/// and none is larger than `bytes`; returns the replies' bytes.
fn send(r: &mut Relay, now: Now, from: SocketAddr, bytes: &[u8]) -> Vec<Vec<u8>> {
    let forward = r.handle_datagram(now, from, bytes).to_vec();
    assert!(forward.is_empty(), "a control frame is never forwarded");
    drain(r)
        .into_iter()
        .map(|t| {
            assert_eq!(t.to, from, "a reply goes to the sender");
            assert!(t.bytes.len() <= bytes.len(), "amplifying reply {t:?}");
            t.bytes
        })
        .collect()
}

/// DATA from `from`: the fan-out list (sorted), and nothing queued.
fn forward(r: &mut Relay, now: Now, from: SocketAddr, bytes: &[u8]) -> Vec<SocketAddr> {
    let mut to = r.handle_datagram(now, from, bytes).to_vec();
    assert!(drain(r).is_empty(), "DATA is never answered");
    to.sort();
    to
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

/// Grants `member` a token, STARTs and confirms from `from`; returns the connection id.
fn join(
    r: &mut Relay,
    now: Now,
    from: SocketAddr,
    session: &str,
    member: &str,
    role: MediaRole,
) -> ConnectionId {
    let grant = r.grant(now, session, member, role).unwrap();
    let replies = send(r, now, from, &start(session, Some(&token_of(&grant))));
    assert_eq!(replies.len(), 1);
    let id = ConnectionId::from_wire(replies[0][30..67].try_into().unwrap());
    assert_eq!(replies[0], start_ack_bytes(&id, session));
    assert!(send(r, now, from, &confirm(&id, session)).is_empty());
    id
}

#[test]
fn grant_makes_a_new_43_char_base64url_token_each_time() {
    let now = t0();
    let mut r = relay(config(), now);
    let a = r.grant(now, SESSION, "m1", MediaRole::Subscribe).unwrap();
    let b = r.grant(now, SESSION, "m1", MediaRole::Subscribe).unwrap();
    assert_eq!(a.token, URL_SAFE_NO_PAD.encode([1u8; 32]));
    assert_eq!(a.token.len(), 43);
    assert!(a
        .token
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    assert_ne!(a.token, b.token);
    assert_eq!(a.role, MediaRole::Subscribe);
    assert_eq!(a.stream_id, sid(SESSION));
    assert_eq!(a.expires_at, now.instant + Duration::from_secs(30));
    assert_eq!(r.tokens(), 2);
    // Both stay valid: each claims a tuple of its own.
    assert_eq!(
        send(&mut r, now, addr(1), &start(SESSION, Some(&token_of(&a)))).len(),
        1
    );
    let replies = send(&mut r, now, addr(2), &start(SESSION, Some(&token_of(&b))));
    assert_eq!(replies[0][0..2], [0x01, 0x01]);
    assert_eq!(r.grant(now, "nope", "m1", MediaRole::Subscribe), None);
    r.end_session(SESSION);
    assert_eq!(r.grant(now, SESSION, "m1", MediaRole::Subscribe), None);
    assert_eq!(r.tokens(), 0);
}

#[test]
fn grant_gives_up_when_randomness_repeats_a_live_token() {
    let now = t0();
    let mut r = Relay::new(config(), now, counter_ids(), Box::new(|| [9; 32]));
    r.open_session(SESSION);
    assert!(r.grant(now, SESSION, "m1", MediaRole::Subscribe).is_some());
    assert_eq!(r.grant(now, SESSION, "m2", MediaRole::Subscribe), None);
}

#[test]
fn error_3_for_a_session_not_open_or_ended() {
    let now = t0();
    let mut r = relay(config(), now);
    let grant = r.grant(now, SESSION, "m1", MediaRole::Subscribe).unwrap();
    let replies = send(
        &mut r,
        now,
        addr(1),
        &start("nope", Some(&token_of(&grant))),
    );
    assert_eq!(
        replies,
        vec![error_bytes(3, &ConnectionId::ZERO, Some("nope"))]
    );
    r.end_session(SESSION);
    let replies = send(
        &mut r,
        now,
        addr(1),
        &start(SESSION, Some(&token_of(&grant))),
    );
    assert_eq!(
        replies,
        vec![error_bytes(3, &ConnectionId::ZERO, Some(SESSION))]
    );
    assert_eq!(
        events(&mut r),
        vec![
            RelayEvent::Refused {
                code: ErrorCode::UnknownStream
            };
            2
        ]
    );
}

#[test]
fn error_6_for_a_missing_unknown_or_foreign_token() {
    let now = t0();
    let mut r = relay(config(), now);
    let other = r.grant(now, OTHER, "m1", MediaRole::Subscribe).unwrap();
    let unknown = MediaToken::new(URL_SAFE_NO_PAD.encode([77u8; 32]).as_bytes()).unwrap();
    let bad = error_bytes(6, &ConnectionId::ZERO, Some(SESSION));
    for token in [None, Some(&unknown), Some(&token_of(&other))] {
        let replies = send(&mut r, now, addr(1), &start(SESSION, token));
        assert_eq!(replies, vec![bad.clone()], "token {token:?}");
    }
    assert_eq!(r.tuples(), 0);
    assert_eq!(
        events(&mut r),
        vec![
            RelayEvent::Refused {
                code: ErrorCode::BadToken
            };
            3
        ]
    );
}

#[test]
fn error_6_for_an_expired_token() {
    let now = t0();
    let mut r = relay(config(), now);
    let grant = r.grant(now, SESSION, "m1", MediaRole::Subscribe).unwrap();
    assert_eq!(r.poll_timeout(), Some(grant.expires_at));
    let later = now.plus(Duration::from_secs(30));
    let replies = send(
        &mut r,
        later,
        addr(1),
        &start(SESSION, Some(&token_of(&grant))),
    );
    assert_eq!(
        replies,
        vec![error_bytes(6, &ConnectionId::ZERO, Some(SESSION))]
    );
    assert_eq!(r.tokens(), 0);
    assert_eq!(r.poll_timeout(), None);

    // Just before its expiry it is still good; handle_timeout forgets an unclaimed one.
    let grant = r.grant(later, SESSION, "m1", MediaRole::Subscribe).unwrap();
    let just_before = later.plus(Duration::from_millis(29_999));
    r.handle_timeout(just_before);
    assert_eq!(r.tokens(), 1);
    r.handle_timeout(later.plus(Duration::from_secs(30)));
    assert_eq!(r.tokens(), 0);
    let replies = send(
        &mut r,
        just_before,
        addr(1),
        &start(SESSION, Some(&token_of(&grant))),
    );
    assert_eq!(replies[0][0..2], [0x03, 0x01]);
}

#[test]
fn error_6_for_a_token_claimed_by_another_tuple() {
    let now = t0();
    let mut r = relay(config(), now);
    let grant = r.grant(now, SESSION, "m1", MediaRole::Subscribe).unwrap();
    let s = start(SESSION, Some(&token_of(&grant)));
    assert_eq!(
        send(&mut r, now, addr(1), &s),
        vec![start_ack_bytes(&id_n(1), SESSION)]
    );
    assert_eq!(
        send(&mut r, now, addr(2), &s),
        vec![error_bytes(6, &ConnectionId::ZERO, Some(SESSION))]
    );
    // The claim holder is untouched and may still confirm.
    assert!(send(&mut r, now, addr(1), &confirm(&id_n(1), SESSION)).is_empty());
    assert_eq!(r.subscribers(SESSION), 1);
}

#[test]
fn error_6_for_a_second_publisher_pending_or_streaming() {
    let now = t0();
    let mut r = relay(config(), now);
    let first = r.grant(now, SESSION, "host", MediaRole::Publish).unwrap();
    let second = r.grant(now, SESSION, "host", MediaRole::Publish).unwrap();
    let bad = vec![error_bytes(6, &ConnectionId::ZERO, Some(SESSION))];
    assert_eq!(
        send(
            &mut r,
            now,
            addr(1),
            &start(SESSION, Some(&token_of(&first)))
        )
        .len(),
        1
    );
    // Pending publisher at addr(1): another tuple's publish token is refused.
    assert_eq!(
        send(
            &mut r,
            now,
            addr(2),
            &start(SESSION, Some(&token_of(&second)))
        ),
        bad
    );
    assert!(send(&mut r, now, addr(1), &confirm(&id_n(1), SESSION)).is_empty());
    // Streaming publisher: still refused.
    assert_eq!(
        send(
            &mut r,
            now,
            addr(2),
            &start(SESSION, Some(&token_of(&second)))
        ),
        bad
    );
    // The publisher's own duplicate START is answered as a duplicate.
    assert_eq!(
        send(
            &mut r,
            now,
            addr(1),
            &start(SESSION, Some(&token_of(&first)))
        ),
        vec![start_ack_bytes(&id_n(1), SESSION)]
    );
    // Once it is gone, the second token may publish.
    r.member_gone(SESSION, "nobody");
    assert_eq!(
        send(
            &mut r,
            now,
            addr(1),
            &encode_error(ErrorCode::Refused, &id_n(1), None)
        ),
        Vec::<Vec<u8>>::new()
    );
    let replies = send(
        &mut r,
        now,
        addr(2),
        &start(SESSION, Some(&token_of(&second))),
    );
    assert_eq!(replies, vec![start_ack_bytes(&id_n(2), SESSION)]);
}

#[test]
fn error_4_for_a_tuple_holding_another_session_and_teardown() {
    let now = t0();
    let mut r = relay(config(), now);
    let id = join(&mut r, now, addr(1), SESSION, "m1", MediaRole::Subscribe);
    let grant = r.grant(now, OTHER, "m1", MediaRole::Subscribe).unwrap();
    let replies = send(&mut r, now, addr(1), &start(OTHER, Some(&token_of(&grant))));
    assert_eq!(replies, vec![error_bytes(4, &id, Some(OTHER))]);
    assert_eq!(r.tuples(), 0);
    assert_eq!(r.subscribers(SESSION), 0);
    let ev = events(&mut r);
    assert!(ev.contains(&RelayEvent::Stopped {
        role: MediaRole::Subscribe
    }));
    assert_eq!(
        ev.last(),
        Some(&RelayEvent::Refused {
            code: ErrorCode::StreamMismatch
        })
    );
}

#[test]
fn error_4_for_a_confirm_with_the_wrong_id_or_stream() {
    let now = t0();
    let mut r = relay(config(), now);
    let grant = r.grant(now, SESSION, "m1", MediaRole::Subscribe).unwrap();
    let s = start(SESSION, Some(&token_of(&grant)));
    send(&mut r, now, addr(1), &s);
    let replies = send(&mut r, now, addr(1), &confirm(&id_n(9), SESSION));
    assert_eq!(replies, vec![error_bytes(4, &id_n(1), Some(SESSION))]);
    assert_eq!(r.tuples(), 0);
    // Same token, same tuple: a new reservation with a new id.
    assert_eq!(
        send(&mut r, now, addr(1), &s),
        vec![start_ack_bytes(&id_n(2), SESSION)]
    );
    let replies = send(&mut r, now, addr(1), &confirm(&id_n(2), OTHER));
    assert_eq!(replies, vec![error_bytes(4, &id_n(2), Some(OTHER))]);
    // A confirm from a tuple without state is dropped.
    assert!(send(&mut r, now, addr(3), &confirm(&id_n(2), SESSION)).is_empty());
}

#[test]
fn error_5_when_every_stream_is_taken() {
    let now = t0();
    let mut cfg = config();
    cfg.max_streams = 2;
    let mut r = relay(cfg, now);
    join(&mut r, now, addr(1), SESSION, "m1", MediaRole::Subscribe);
    let g = r.grant(now, OTHER, "m2", MediaRole::Subscribe).unwrap();
    send(&mut r, now, addr(2), &start(OTHER, Some(&token_of(&g))));
    let g = r.grant(now, SESSION, "m3", MediaRole::Subscribe).unwrap();
    let s = start(SESSION, Some(&token_of(&g)));
    assert_eq!(
        send(&mut r, now, addr(3), &s),
        vec![error_bytes(5, &ConnectionId::ZERO, Some(SESSION))]
    );
    // The token was not claimed: after a slot frees, the same tuple gets in with it.
    r.member_gone(OTHER, "m2");
    assert_eq!(
        send(&mut r, now, addr(3), &s),
        vec![start_ack_bytes(&id_n(3), SESSION)]
    );
}

#[test]
fn steps_1_to_4_drop_or_answer_as_the_responder_does() {
    let now = t0();
    let mut r = relay(config(), now);
    let grant = r.grant(now, SESSION, "m1", MediaRole::Subscribe).unwrap();
    let good = start(SESSION, Some(&token_of(&grant)));
    // Short START, START_ACK, legacy START, garbage: dropped, no state.
    for bytes in [
        good[..255].to_vec(),
        start_ack_bytes(&id_n(1), SESSION),
        b"START".to_vec(),
        vec![0x07; 300],
    ] {
        assert!(send(&mut r, now, addr(1), &bytes).is_empty());
    }
    let mut bad_version = good.clone();
    bad_version[26] = 2;
    assert_eq!(
        send(&mut r, now, addr(1), &bad_version),
        vec![error_bytes(1, &ConnectionId::ZERO, None)]
    );
    let mut no_stream = good.clone();
    no_stream[67] = 0x09; // the STREAM_ID TLV becomes an unknown type
    assert_eq!(
        send(&mut r, now, addr(1), &no_stream),
        vec![error_bytes(2, &ConnectionId::ZERO, None)]
    );
    assert_eq!(r.tuples(), 0);
    assert_eq!(r.tokens(), 1);
}

#[test]
fn duplicate_start_gets_the_identical_start_ack_and_changes_nothing() {
    let now = t0();
    let mut r = relay(config(), now);
    let grant = r.grant(now, SESSION, "m1", MediaRole::Subscribe).unwrap();
    let s = start(SESSION, Some(&token_of(&grant)));
    let first = send(&mut r, now, addr(1), &s);
    // Even after the token's expiry: a claimed token no longer expires for its tuple.
    let later = now.plus(Duration::from_secs(4));
    assert_eq!(send(&mut r, later, addr(1), &s), first);
    assert_eq!(events(&mut r), vec![RelayEvent::HandshakeStarted]);
    // The pending deadline counts from the last START.
    assert_eq!(
        r.poll_timeout(),
        Some(later.instant + Duration::from_secs(5))
    );
    let confirmed = later.plus(Duration::from_secs(1));
    assert!(send(&mut r, confirmed, addr(1), &confirm(&id_n(1), SESSION)).is_empty());
    assert_eq!(
        events(&mut r),
        vec![RelayEvent::Streaming {
            role: MediaRole::Subscribe,
            time_to_stream: Duration::from_secs(5)
        }]
    );
    let much_later = now.plus(Duration::from_secs(60));
    r.handle_timeout(much_later);
    assert_eq!(send(&mut r, much_later, addr(1), &s), first);
    assert!(send(&mut r, much_later, addr(1), &confirm(&id_n(1), SESSION)).is_empty());
    assert_eq!(r.streams(), 1);
    assert!(events(&mut r).is_empty());
}

#[test]
fn a_reservation_expires_confirm_timeout_after_the_last_start() {
    let now = t0();
    let mut r = relay(config(), now);
    let grant = r.grant(now, SESSION, "m1", MediaRole::Publish).unwrap();
    let s = start(SESSION, Some(&token_of(&grant)));
    send(&mut r, now, addr(1), &s);
    let deadline = now.instant + Duration::from_secs(5);
    assert_eq!(r.poll_timeout(), Some(deadline));
    r.handle_timeout(now.plus(Duration::from_millis(4_999)));
    assert_eq!(r.tuples(), 1);
    let expired = now.plus(Duration::from_secs(5));
    r.handle_timeout(expired);
    assert_eq!(r.tuples(), 0);
    assert!(drain(&mut r).is_empty(), "expiry is silent");
    // The claimed token waits for its own expiry.
    assert_eq!(r.poll_timeout(), Some(grant.expires_at));
    // A late confirm is dropped; a new START from the same tuple starts over with a new id.
    assert!(send(&mut r, expired, addr(1), &confirm(&id_n(1), SESSION)).is_empty());
    assert_eq!(
        send(&mut r, expired, addr(1), &s),
        vec![start_ack_bytes(&id_n(2), SESSION)]
    );
    // Another tuple still cannot use it, and the session's publisher slot is held again.
    let second = r
        .grant(expired, SESSION, "host", MediaRole::Publish)
        .unwrap();
    assert_eq!(
        send(
            &mut r,
            expired,
            addr(2),
            &start(SESSION, Some(&token_of(&second)))
        )[0],
        error_bytes(6, &ConnectionId::ZERO, Some(SESSION))
    );
}

#[test]
fn a_pending_reservation_expires_on_the_next_datagram_too() {
    let now = t0();
    let mut r = relay(config(), now);
    let grant = r.grant(now, SESSION, "m1", MediaRole::Subscribe).unwrap();
    send(
        &mut r,
        now,
        addr(1),
        &start(SESSION, Some(&token_of(&grant))),
    );
    let expired = now.plus(Duration::from_secs(5));
    assert!(send(&mut r, expired, addr(1), &confirm(&id_n(1), SESSION)).is_empty());
    assert_eq!(r.streams(), 0);
    assert_eq!(r.subscribers(SESSION), 0);
}

#[test]
fn fan_out_to_three_subscribers_and_never_to_the_publisher() {
    let now = t0();
    let mut r = relay(config(), now);
    join(&mut r, now, addr(1), SESSION, "host", MediaRole::Publish);
    for n in 2..=4 {
        join(
            &mut r,
            now,
            addr(n),
            SESSION,
            &format!("m{n}"),
            MediaRole::Subscribe,
        );
    }
    // A subscriber of another session gets nothing of this one.
    join(&mut r, now, addr(9), OTHER, "x", MediaRole::Subscribe);
    assert_eq!(r.streams(), 5);
    assert_eq!(r.subscribers(SESSION), 3);
    let datagram = data(1);
    let copy = datagram.clone();
    assert_eq!(
        forward(&mut r, now, addr(1), &datagram),
        vec![addr(2), addr(3), addr(4)]
    );
    assert_eq!(datagram, copy, "forwarded unchanged");
    // Control frames from the publisher are not forwarded either.
    assert!(send(&mut r, now, addr(1), &confirm(&id_n(1), SESSION)).is_empty());
}

#[test]
fn data_from_anyone_but_the_streaming_publisher_is_dropped() {
    let now = t0();
    let mut r = relay(config(), now);
    join(&mut r, now, addr(2), SESSION, "m2", MediaRole::Subscribe);
    let grant = r.grant(now, SESSION, "host", MediaRole::Publish).unwrap();
    send(
        &mut r,
        now,
        addr(1),
        &start(SESSION, Some(&token_of(&grant))),
    );
    // Unconfirmed publisher, subscriber, stranger.
    for from in [addr(1), addr(2), addr(7)] {
        assert!(
            forward(&mut r, now, from, &data(1)).is_empty(),
            "from {from}"
        );
    }
    // A short datagram with the DATA flag is no DATA.
    assert!(send(&mut r, now, addr(1), &[0u8; 25]).is_empty());
    assert!(send(&mut r, now, addr(1), &confirm(&id_n(2), SESSION)).is_empty());
    assert_eq!(forward(&mut r, now, addr(1), &data(1)), vec![addr(2)]);
}

#[test]
fn a_subscriber_confirmed_mid_stream_gets_only_later_data() {
    let now = t0();
    let mut r = relay(config(), now);
    join(&mut r, now, addr(1), SESSION, "host", MediaRole::Publish);
    join(&mut r, now, addr(2), SESSION, "m2", MediaRole::Subscribe);
    assert_eq!(forward(&mut r, now, addr(1), &data(1)), vec![addr(2)]);
    let grant = r.grant(now, SESSION, "m3", MediaRole::Subscribe).unwrap();
    send(
        &mut r,
        now,
        addr(3),
        &start(SESSION, Some(&token_of(&grant))),
    );
    assert_eq!(forward(&mut r, now, addr(1), &data(2)), vec![addr(2)]);
    send(&mut r, now, addr(3), &confirm(&id_n(3), SESSION));
    assert_eq!(
        forward(&mut r, now, addr(1), &data(3)),
        vec![addr(2), addr(3)]
    );
}

#[test]
fn teardown_by_member_gone_stops_forwarding_silently() {
    let now = t0();
    let mut r = relay(config(), now);
    join(&mut r, now, addr(1), SESSION, "host", MediaRole::Publish);
    join(&mut r, now, addr(2), SESSION, "m2", MediaRole::Subscribe);
    join(&mut r, now, addr(3), SESSION, "m3", MediaRole::Subscribe);
    let spare = r.grant(now, SESSION, "m2", MediaRole::Subscribe).unwrap();
    events(&mut r);
    r.member_gone(SESSION, "m2");
    assert!(drain(&mut r).is_empty());
    assert_eq!(
        events(&mut r),
        vec![RelayEvent::Stopped {
            role: MediaRole::Subscribe
        }]
    );
    assert_eq!(forward(&mut r, now, addr(1), &data(1)), vec![addr(3)]);
    // Its unclaimed tokens went too.
    assert_eq!(
        send(
            &mut r,
            now,
            addr(5),
            &start(SESSION, Some(&token_of(&spare)))
        )[0],
        error_bytes(6, &ConnectionId::ZERO, Some(SESSION))
    );
    r.member_gone(SESSION, "host");
    assert!(drain(&mut r).is_empty());
    assert!(forward(&mut r, now, addr(1), &data(2)).is_empty());
    assert_eq!(r.streams(), 1);
}

#[test]
fn teardown_by_end_session_drops_everything_silently() {
    let now = t0();
    let mut r = relay(config(), now);
    join(&mut r, now, addr(1), SESSION, "host", MediaRole::Publish);
    join(&mut r, now, addr(2), SESSION, "m2", MediaRole::Subscribe);
    join(&mut r, now, addr(3), OTHER, "m3", MediaRole::Subscribe);
    r.grant(now, SESSION, "m4", MediaRole::Subscribe).unwrap();
    events(&mut r);
    r.end_session(SESSION);
    assert!(drain(&mut r).is_empty());
    let mut ev = events(&mut r);
    ev.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(
        ev,
        vec![
            RelayEvent::Stopped {
                role: MediaRole::Publish
            },
            RelayEvent::Stopped {
                role: MediaRole::Subscribe
            }
        ]
    );
    assert!(forward(&mut r, now, addr(1), &data(1)).is_empty());
    // What is left is OTHER's subscriber and its token.
    assert_eq!((r.tuples(), r.tokens(), r.streams()), (1, 1, 1));
    assert_eq!(r.subscribers(SESSION), 0);
    assert_eq!(r.subscribers(OTHER), 1);
}

#[test]
fn teardown_by_host_changed_drops_only_other_publishers() {
    let now = t0();
    let mut r = relay(config(), now);
    join(&mut r, now, addr(1), SESSION, "host", MediaRole::Publish);
    join(&mut r, now, addr(2), SESSION, "m2", MediaRole::Subscribe);
    let old = r.grant(now, SESSION, "host", MediaRole::Publish).unwrap();
    r.host_changed(SESSION, Some("host"));
    assert_eq!(forward(&mut r, now, addr(1), &data(1)), vec![addr(2)]);
    events(&mut r);
    r.host_changed(SESSION, Some("m2"));
    assert!(drain(&mut r).is_empty());
    assert_eq!(
        events(&mut r),
        vec![RelayEvent::Stopped {
            role: MediaRole::Publish
        }]
    );
    assert!(forward(&mut r, now, addr(1), &data(2)).is_empty());
    assert_eq!(r.subscribers(SESSION), 1, "subscribers stay");
    assert_eq!(
        send(&mut r, now, addr(1), &start(SESSION, Some(&token_of(&old))))[0],
        error_bytes(6, &ConnectionId::ZERO, Some(SESSION))
    );
    // The new host may publish; no host at all drops it again.
    join(&mut r, now, addr(4), SESSION, "m2", MediaRole::Publish);
    r.host_changed(SESSION, None);
    assert!(forward(&mut r, now, addr(4), &data(1)).is_empty());
}

#[test]
fn a_received_error_tears_down_silently() {
    let now = t0();
    let mut r = relay(config(), now);
    join(&mut r, now, addr(1), SESSION, "host", MediaRole::Publish);
    join(&mut r, now, addr(2), SESSION, "m2", MediaRole::Subscribe);
    events(&mut r);
    let error = encode_error(ErrorCode::StreamMismatch, &id_n(2), None);
    assert!(send(&mut r, now, addr(2), &error).is_empty());
    assert_eq!(
        events(&mut r),
        vec![RelayEvent::Stopped {
            role: MediaRole::Subscribe
        }]
    );
    assert!(forward(&mut r, now, addr(1), &data(1)).is_empty());
}

#[test]
fn frames_lost_counts_sequence_gaps_once() {
    let now = t0();
    let mut r = relay(config(), now);
    join(&mut r, now, addr(1), SESSION, "host", MediaRole::Publish);
    join(&mut r, now, addr(2), SESSION, "m2", MediaRole::Subscribe);
    events(&mut r);
    let lost = |r: &mut Relay, seq: i64| {
        forward(r, now, addr(1), &data(seq));
        events(r)
    };
    assert!(lost(&mut r, 1).is_empty());
    assert!(lost(&mut r, 1).is_empty(), "another fragment of frame 1");
    assert!(lost(&mut r, 2).is_empty());
    assert_eq!(lost(&mut r, 5), vec![RelayEvent::FramesLost { frames: 2 }]);
    assert!(lost(&mut r, 4).is_empty(), "reordered, not counted again");
    assert!(lost(&mut r, 6).is_empty());
    // Gaps not yet polled add up in one event.
    forward(&mut r, now, addr(1), &data(8));
    forward(&mut r, now, addr(1), &data(11));
    assert_eq!(events(&mut r), vec![RelayEvent::FramesLost { frames: 3 }]);
    // A new publisher tuple counts from its own frame 1.
    r.member_gone(SESSION, "host");
    join(&mut r, now, addr(3), SESSION, "host", MediaRole::Publish);
    events(&mut r);
    assert!(lost(&mut r, 1).is_empty());
}

#[test]
fn first_data_after_a_gap_from_zero_counts_the_frames_before_it() {
    let now = t0();
    let mut r = relay(config(), now);
    join(&mut r, now, addr(1), SESSION, "host", MediaRole::Publish);
    events(&mut r);
    forward(&mut r, now, addr(1), &data(4));
    assert_eq!(events(&mut r), vec![RelayEvent::FramesLost { frames: 3 }]);
}

#[derive(Debug, Clone)]
enum Op {
    /// A datagram from tuple `from` (0..3 are members, 3 a spoofed source whose sender sees
    /// no replies but may replay any token and any id sent to others).
    Datagram { from: u8, kind: Kind },
    /// Time passes.
    Wait(u16),
    /// A member is granted another token.
    Grant(u8),
}

#[derive(Debug, Clone)]
enum Kind {
    /// START with the sender's own first token (member m's for tuple m; the spoofer replays
    /// member 1's).
    StartOwn,
    /// START with the k-th token granted so far (any member's).
    Start(usize),
    /// START_CONFIRM with the latest connection id acknowledged to the sender (none for the
    /// spoofer, which sees no replies: it replays one acknowledged to another).
    ConfirmOwn,
    /// START_CONFIRM with the k-th connection id acknowledged so far to another address.
    ConfirmReplay(usize),
    /// DATA with this sequence number.
    Data(i64),
    Error,
    Random(Vec<u8>),
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        3 => Just(Kind::StartOwn),
        1 => (0usize..5).prop_map(Kind::Start),
        3 => Just(Kind::ConfirmOwn),
        1 => (0usize..6).prop_map(Kind::ConfirmReplay),
        4 => (1i64..20).prop_map(Kind::Data),
        1 => Just(Kind::Error),
        1 => proptest::collection::vec(any::<u8>(), 0..300).prop_map(Kind::Random),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..4, kind()).prop_map(|(from, kind)| Op::Datagram { from, kind }),
        1 => (0u16..3000).prop_map(Op::Wait),
        1 => (0u8..3).prop_map(Op::Grant),
    ]
}

proptest! {
    #[test]
    fn a_spoofer_never_gets_media_and_nothing_amplifies(ops in proptest::collection::vec(op(), 1..80)) {
        let mut now = t0();
        let mut cfg = config();
        cfg.max_streams = 3;
        let mut r = relay(cfg, now);
        // Member 0 hosts. Tokens granted so far; ids acknowledged, and to whom.
        let role = |m: u8| if m == 0 { MediaRole::Publish } else { MediaRole::Subscribe };
        let mut tokens: Vec<MediaToken> = (0..3u8)
            .map(|m| token_of(&r.grant(now, SESSION, &format!("m{m}"), role(m)).unwrap()))
            .collect();
        let mut acked: Vec<(ConnectionId, SocketAddr)> = vec![];
        let mut confirmed: HashSet<SocketAddr> = HashSet::new();
        let spoofer = addr(3);
        // Members 0 (publishing) and 1 stream from the start, so DATA gets fanned out and the
        // spoofer has something to break into; member 2 may join later.
        for m in 0..2u8 {
            let replies = send(&mut r, now, addr(m), &start(SESSION, Some(&tokens[usize::from(m)])));
            let id = ConnectionId::from_wire(replies[0][30..67].try_into().unwrap());
            acked.push((id, addr(m)));
            send(&mut r, now, addr(m), &confirm(&id, SESSION));
            confirmed.insert(addr(m));
        }
        prop_assert_eq!(r.streams(), 2);
        for op in ops {
            match op {
                Op::Wait(ms) => {
                    now = now.plus(Duration::from_millis(u64::from(ms)));
                    r.handle_timeout(now);
                    prop_assert!(drain(&mut r).is_empty(), "nothing sent on a timeout");
                }
                Op::Grant(m) => {
                    if let Some(g) = r.grant(now, SESSION, &format!("m{m}"), role(m)) {
                        tokens.push(token_of(&g));
                    }
                }
                Op::Datagram { from: member, kind } => {
                    let from = addr(member);
                    let bytes = match &kind {
                        Kind::StartOwn => {
                            let m = if from == spoofer { 1 } else { usize::from(member) };
                            start(SESSION, tokens.get(m))
                        }
                        Kind::Start(k) => start(SESSION, tokens.get(*k)),
                        Kind::ConfirmOwn => {
                            let own = acked.iter().rev().find(|a| a.1 == from && from != spoofer);
                            let other = acked.iter().rev().find(|a| a.1 != from);
                            confirm(&own.or(other).map_or(id_n(200), |a| a.0), SESSION)
                        }
                        Kind::ConfirmReplay(k) => {
                            let others: Vec<ConnectionId> =
                                acked.iter().filter(|a| a.1 != from).map(|a| a.0).collect();
                            confirm(others.get(*k).unwrap_or(&id_n(200)), SESSION)
                        }
                        Kind::Data(seq) => data(*seq),
                        Kind::Error => encode_error(ErrorCode::Refused, &ConnectionId::ZERO, None),
                        Kind::Random(b) => b.clone(),
                    };
                    if let Ok(ControlFrame { body: ControlBody::StartConfirm { .. }, connection_id, .. }) = decode_control(&bytes) {
                        if acked.iter().any(|&(id, to)| id == connection_id && to == from) {
                            confirmed.insert(from);
                        }
                    }
                    let fan_out = r.handle_datagram(now, from, &bytes).to_vec();
                    for to in &fan_out {
                        prop_assert!(*to != spoofer, "the spoofer is in a fan-out list");
                        prop_assert!(confirmed.contains(to), "fan-out to unconfirmed {}", to);
                        prop_assert!(*to != from, "DATA back to its publisher");
                    }
                    let out = drain(&mut r);
                    prop_assert!(out.len() <= 1);
                    for t in out {
                        prop_assert_eq!(t.to, from, "a reply goes to the sender");
                        prop_assert!(t.bytes.len() <= bytes.len(), "reply of {} to {} bytes", t.bytes.len(), bytes.len());
                        if t.bytes[0..2] == [0x01, 0x01] {
                            acked.push((ConnectionId::from_wire(t.bytes[30..67].try_into().unwrap()), t.to));
                        }
                    }
                }
            }
        }
    }
}

fn data_at(sequence: i64, timestamp_ns: i64) -> Vec<u8> {
    encode_data(
        &DataHeader {
            sequence,
            timestamp: timestamp_ns,
            frequency: FREQUENCY,
        },
        0,
        100,
    )
}

#[test]
fn stream_stats_count_copies_and_losses_and_estimate_rfc3550_jitter() {
    let now = t0();
    let mut r = relay(config(), now);
    let at = |ms: u64| Now {
        instant: now.instant + Duration::from_millis(ms),
        unix_ms: now.unix_ms + ms,
    };
    let empty = r.stream_stats();
    assert_eq!(empty.len(), 2);
    assert_eq!(
        (
            empty[0].session_id.as_str(),
            empty[0].publisher.clone(),
            empty[0].jitter_ms
        ),
        (SESSION, None, None)
    );
    join(&mut r, now, addr(1), SESSION, "host", MediaRole::Publish);
    join(&mut r, now, addr(2), SESSION, "m2", MediaRole::Subscribe);
    join(&mut r, now, addr(3), SESSION, "m3", MediaRole::Subscribe);
    // Frames sent every 10 ms of the sender's clock; arrivals 10, 20, 34 (4 ms late), 40 ms.
    forward(&mut r, at(10), addr(1), &data_at(1, 0));
    assert_eq!(
        r.stream_stats()[0].jitter_ms,
        None,
        "one frame: no pair yet"
    );
    forward(&mut r, at(20), addr(1), &data_at(2, 10_000_000));
    forward(&mut r, at(20), addr(1), &data_at(2, 10_000_000)); // a second fragment: no frame
    forward(&mut r, at(34), addr(1), &data_at(3, 20_000_000));
    forward(&mut r, at(40), addr(1), &data_at(5, 40_000_000)); // frame 4 lost; 10 ms early
    let s = &r.stream_stats()[0];
    assert_eq!(s.publisher, Some(("host".into(), addr(1))));
    assert_eq!(
        s.subscribers,
        vec![("m2".into(), addr(2)), ("m3".into(), addr(3))]
    );
    assert_eq!(s.datagrams_relayed, 10, "5 datagrams, 2 copies each");
    assert_eq!(s.frames_lost, 1);
    // D = 0, 4, -14 ms: J = 0, then 4/16 = 0.25, then 0.25 + (14 - 0.25)/16.
    let want = 0.25 + (14.0 - 0.25) / 16.0;
    let got = s.jitter_ms.unwrap();
    assert!((got - want).abs() < 1e-6, "{got} != {want}");
    // The other session is untouched; a new publisher tuple starts its jitter afresh, the
    // session's counters go on.
    assert_eq!(r.stream_stats()[1].datagrams_relayed, 0);
    r.member_gone(SESSION, "host");
    assert_eq!(r.stream_stats()[0].publisher, None);
    join(&mut r, at(50), addr(4), SESSION, "host", MediaRole::Publish);
    forward(&mut r, at(60), addr(4), &data_at(1, 0));
    let s = &r.stream_stats()[0];
    assert_eq!((s.jitter_ms, s.datagrams_relayed), (None, 12));
}
