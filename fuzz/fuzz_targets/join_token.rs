//! Fuzz target `join_token`: the join-token verifier ([`access::verify`]), which reads the
//! `token` of any client's `join` (a JWT) with the server's key.
//!
//! Input: the first byte picks the case; the rest is the token, or the header and claims to
//! sign (separated by the first newline; no header means `{"alg":"HS256","typ":"JWT"}`):
//!
//! - a raw token, verified as it is: no panic, and nothing verifies (the fuzzer cannot sign);
//! - header and claims signed with the server's own HS256 secret, so the claims' checks are
//!   reached: a token verifies only if its header asks for HS256, and then its claims are
//!   the ones signed (`sid`, `role`, `exp`, `nbf`), `exp` has not passed and `nbf` has come
//!   (each with the documented leeway);
//! - the same signed with another secret: never verifies.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use loudsync_server::access::{verify, TokenKey, LEEWAY_SECS};
use serde_json::Value;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const OTHER: &[u8] = b"fedcba9876543210fedcba9876543210";
const NOW: u64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let [which, ref rest @ ..] = *data else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let key = TokenKey::hs256(SECRET).expect("a long enough secret");
    let now = NOW.wrapping_add(u64::from(which >> 2)).wrapping_sub(32);
    match which % 3 {
        0 => assert!(
            verify(text, &key, now).is_err(),
            "{text:?} verifies unsigned"
        ),
        n => {
            let (header, claims) = text
                .split_once('\n')
                .unwrap_or((r#"{"alg":"HS256","typ":"JWT"}"#, text));
            let secret = if n == 1 { SECRET } else { OTHER };
            let token = sign(header, claims, secret);
            let Ok(verified) = verify(&token, &key, now) else {
                return;
            };
            assert_eq!(n, 1, "{token:?} signed with another key verifies");
            // serde_json's `Value` refuses numbers out of range (`1e999`) that a typed read
            // skips in the fields it ignores: such a header or claims set is not compared.
            if let Ok(header) = serde_json::from_str::<Value>(header) {
                assert_eq!(
                    header["alg"], "HS256",
                    "{token:?} verifies with its header's alg"
                );
            }
            if let Ok(claims) = serde_json::from_str::<Value>(claims) {
                assert_eq!(claims["sid"], verified.sid.as_str(), "{token:?}");
                assert_eq!(claims["role"], serde_json::to_value(verified.role).unwrap());
                assert_eq!(claims["exp"].as_u64(), Some(verified.exp));
                assert_eq!(claims["nbf"].as_u64(), verified.nbf);
            }
            assert!(
                now < verified.exp.saturating_add(LEEWAY_SECS),
                "expired: {token:?}"
            );
            if let Some(nbf) = verified.nbf {
                assert!(
                    nbf <= now.saturating_add(LEEWAY_SECS),
                    "not yet valid: {token:?}"
                );
            }
        }
    }
});

/// A JWT of exactly these header and claims bytes, signed with HS256 and `secret`.
fn sign(header: &str, claims: &str, secret: &[u8]) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(secret),
        Algorithm::HS256,
    )
    .expect("HS256 signs anything");
    format!("{message}.{signature}")
}
