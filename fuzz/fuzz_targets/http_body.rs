//! Fuzz target `http_body`: the body of the admin API's `POST /v1/sessions`
//! ([`parse_create_session`]), from any bytes (axum hands the handler the raw body).
//!
//! Beyond "no panic": a body that parses obeys every documented rule (docs/PROTOCOL.md, the
//! admin API): `name`, `hostDeviceId` and `hostName` not blank, at most 256 bytes, no control
//! character; `id` a valid session id; `maxMembers` from 1 to 100 000; `password` 1 to 256
//! bytes; `hostTokenTtl` only with `"hostToken": true`, more than 0 and at most 365 days.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loudsync_server::http::parse_create_session;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = parse_create_session(data) else {
        return;
    };
    let body = String::from_utf8_lossy(data);
    let text = |field: &str, value: &str| {
        assert!(
            !value.trim().is_empty() && value.len() <= 256 && !value.chars().any(char::is_control),
            "{field} {value:?} accepted in {body:?}"
        );
    };
    text("name", &req.name);
    if let Some(v) = &req.host_device_id {
        text("hostDeviceId", v);
    }
    if let Some(v) = &req.host_name {
        text("hostName", v);
    }
    if let Some(id) = &req.id {
        assert!(
            (1..=64).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "id {id:?} accepted in {body:?}"
        );
    }
    if let Some(n) = req.max_members {
        assert!(
            (1..=100_000).contains(&n),
            "maxMembers {n} accepted in {body:?}"
        );
    }
    if let Some(password) = &req.password {
        assert!(
            (1..=256).contains(&password.0.len()),
            "password length in {body:?}"
        );
    }
    if let Some(ttl) = req.host_token_ttl {
        assert!(req.host_token, "hostTokenTtl without hostToken in {body:?}");
        assert!(
            !ttl.is_zero() && ttl.as_secs() <= 365 * 24 * 3600,
            "hostTokenTtl {ttl:?} accepted in {body:?}"
        );
    }
});
