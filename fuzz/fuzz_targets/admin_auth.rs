//! Fuzz target `admin_auth`: the admin API's access rule ([`admin_access`]), which reads the
//! `Authorization` header any HTTP client sends to `/v1/*`.
//!
//! Input: the first byte picks the peer (loopback or not, IPv4 or IPv6) and whether a token
//! is configured; then the configured token and the header value, separated by the first
//! newline. Properties that hold however the scheme is parsed: without a token only
//! loopback peers pass; with one, `Bearer <token>` passes (for a token of RFC 9110 `token68`
//! characters, as a configured token is), and nothing passes whose header does not contain
//! the token.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use loudsync_server::http::admin_access;

fuzz_target!(|data: &[u8]| {
    let [flags, ref rest @ ..] = *data else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let (token, header) = text.split_once('\n').unwrap_or(("", text));
    let peer = match flags & 3 {
        0 => IpAddr::V4(Ipv4Addr::LOCALHOST),
        1 => IpAddr::V6(Ipv6Addr::LOCALHOST),
        2 => IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
        _ => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)),
    };
    let configured = (flags & 4 != 0).then_some(token);
    let authorization = (flags & 8 != 0).then_some(header);
    let allowed = admin_access(configured, peer, authorization).is_ok();
    match configured {
        None => assert_eq!(allowed, peer.is_loopback(), "no token, peer {peer}"),
        Some(token) => {
            let contains = authorization.is_some_and(|h| h.contains(token));
            assert!(
                !allowed || contains,
                "{authorization:?} passes for {token:?}"
            );
            if token68(token) {
                let exact = admin_access(configured, peer, Some(&format!("Bearer {token}")));
                assert!(exact.is_ok(), "`Bearer {token}` refused");
            }
        }
    }
});

/// Whether `s` is an RFC 9110 `token68`: what a bearer credential is written as.
fn token68(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}
