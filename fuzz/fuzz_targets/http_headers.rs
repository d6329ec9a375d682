//! Fuzz target `http_headers`: the request headers the server reads itself, which any HTTP
//! client writes: `Authorization` ([`bearer_token`], the admin API's scheme parser),
//! `Sec-WebSocket-Key` ([`valid_websocket_key`]) and `X-Forwarded-For` ([`client_address`],
//! behind `--trusted-proxy`).
//!
//! Input: the first byte picks the header; the rest is its value. Each is checked against a
//! rule written from its RFC or its documentation rather than from its code:
//!
//! - a bearer credential is non-empty, has no spaces around it, and follows a scheme that is
//!   `Bearer` in any case; `Bearer <token68>` always gives the token back;
//! - a key is valid exactly when it is the canonical base64 of 16 bytes (22 characters of the
//!   alphabet, the last with its low four bits clear, then `==`);
//! - `X-Forwarded-For` from a peer that is not a trusted proxy changes nothing; through a
//!   trusted proxy that appends the address it saw, whatever the client wrote before it, the
//!   client is that address (nobody behind a proxy can pass for another address).
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use loudsync_server::admission::{client_address, AddressRange};
use loudsync_server::http::{bearer_token, valid_websocket_key};

const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fuzz_target!(|data: &[u8]| {
    let [which, ref rest @ ..] = *data else {
        return;
    };
    match which % 3 {
        0 => authorization(rest),
        1 => websocket_key(rest),
        _ => forwarded_for(which, rest),
    }
});

fn authorization(value: &[u8]) {
    let Ok(value) = std::str::from_utf8(value) else {
        return;
    };
    if let Some(token) = bearer_token(value) {
        assert!(
            !token.is_empty() && token.trim_matches(' ') == token,
            "{value:?}"
        );
        let scheme = value.trim_start().get(..7).unwrap_or_default();
        assert!(scheme.eq_ignore_ascii_case("bearer "), "{value:?}");
        assert!(value.contains(token));
    }
    if token68(value) {
        assert_eq!(bearer_token(&format!("Bearer {value}")), Some(value));
        assert_eq!(bearer_token(&format!("bEARER  {value}")), Some(value));
    }
}

/// Whether `s` is an RFC 9110 `token68`: what a bearer credential is written as.
fn token68(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

fn websocket_key(key: &[u8]) {
    let value = |c: u8| BASE64.iter().position(|&b| b == c);
    let canonical = key.len() == 24
        && key[..21].iter().all(|&c| value(c).is_some())
        && value(key[21]).is_some_and(|v| v & 0xF == 0)
        && &key[22..] == b"==";
    assert_eq!(valid_websocket_key(key), canonical, "{key:?}");
}

/// The proxies trusted: loopback and two private ranges (flag bits 2 to 4 pick the peer).
fn forwarded_for(flags: u8, rest: &[u8]) {
    let trusted: Vec<AddressRange> = ["127.0.0.1", "::1", "10.0.0.0/8", "fd00::/8"]
        .iter()
        .map(|r| r.parse().expect("a valid range"))
        .collect();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|r| r.contains(ip));
    let peer = match (flags >> 2) % 6 {
        0 => IpAddr::V4(Ipv4Addr::LOCALHOST),
        1 => IpAddr::V6(Ipv6Addr::LOCALHOST),
        2 => IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
        3 => IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
        4 => IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
        _ => IpAddr::V6(Ipv4Addr::new(10, 9, 9, 9).to_ipv6_mapped()),
    };
    // The last 4 bytes are the address the proxy saw (when there are 4); the rest is what
    // the client wrote into the header.
    let (written, seen) = match rest.len().checked_sub(4) {
        Some(n) => (&rest[..n], Some(<[u8; 4]>::try_from(&rest[n..]).unwrap())),
        None => (rest, None),
    };
    let Ok(written) = std::str::from_utf8(written) else {
        return;
    };
    let plain = client_address(peer, written.split('\n'), &trusted);
    if !is_trusted(peer) {
        assert_eq!(
            plain,
            peer.to_canonical(),
            "an untrusted peer's header counted"
        );
    }
    let Some(seen) = seen else {
        return;
    };
    let seen = IpAddr::V4(Ipv4Addr::from(seen));
    let appended = format!("{written}, {seen}");
    let client = client_address(peer, [appended.as_str()].into_iter(), &trusted);
    let expected = match (is_trusted(peer), is_trusted(seen)) {
        (false, _) => peer.to_canonical(),
        (true, false) => seen,
        (true, true) => return, // a client inside the trusted ranges: the walk goes on
    };
    assert_eq!(client, expected, "peer {peer}, header {appended:?}");
}
