//! Who may join, over the wire (issue 9): the host role of sessions created over HTTP
//! (finding 3), session passwords and their per-address limit, signed join tokens (HS256 and
//! EdDSA), `--require-token`, strict `protocolVersion` (finding 5), control characters at the
//! edge (finding 7), session codes typed in any case with or without dashes, and the app
//! dialect's words. Each refusal is checked with its exact code, in both dialects where the
//! app's can say it.

mod common;

use std::time::Duration;

use common::*;
use loudsync_protocol::app::ClientContext;
use loudsync_protocol::{close_code, ClientMessage, DeviceType, Join};
use loudsync_server::access::{mint, Claims, TokenKey};
use loudsync_server::ServerConfig;
use serde_json::{json, Value};

const SECRET: &str = "an HS256 secret of 32 bytes.....";
const ED25519_PRIVATE: &str = include_str!("keys/ed25519-private.pem");

async fn get(base: &str, id: &str) -> (u16, Value) {
    let r = reqwest::get(format!("{base}/v1/sessions/{id}"))
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn with_secret() -> ServerConfig {
    ServerConfig {
        token_key: Some(loudsync_server::access::Secret(SECRET.into())),
        ..test_config()
    }
}

fn now_secs() -> u64 {
    unix_ms() / 1000
}

/// A token signed with `key` for `session` and `role`, valid for an hour.
fn token(key: &TokenKey, session: &str, role: DeviceType, device: Option<&str>) -> String {
    mint(
        &Claims {
            sid: session.into(),
            role,
            sub: device.map(str::to_string),
            name: None,
            exp: now_secs() + 3600,
            nbf: None,
            iat: Some(now_secs()),
        },
        key,
    )
    .unwrap()
}

fn hs256() -> TokenKey {
    TokenKey::hs256(SECRET.as_bytes()).unwrap()
}

/// Sends `join` and expects the refusal `code` (its text containing `needle`), then a close
/// with 1000; returns the text.
async fn refused(c: &mut Client, join: Join, code: &str, needle: &str) -> String {
    c.send(&ClientMessage::Join(join)).await;
    let (msgs, end) = c.recv_end().await;
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0]["type"], "error", "{msgs:?}");
    assert_eq!(msgs[0]["code"], code, "{msgs:?}");
    let text = msgs[0]["message"].as_str().unwrap().to_string();
    assert!(text.contains(needle), "{text:?} does not say {needle:?}");
    assert!(
        matches!(end, Ended::Close(close_code::NORMAL, _)),
        "{end:?}"
    );
    text
}

/// Connects, sends `join`, expects the refusal (see [`refused`]).
async fn refused_at(addr: std::net::SocketAddr, join: Join, code: &str, needle: &str) -> String {
    let mut c = Client::connect(addr).await;
    refused(&mut c, join, code, needle).await
}

/// Connects, sends `join`, expects `welcome` and `member_list`; returns the client and `welcome`.
async fn welcomed(addr: std::net::SocketAddr, join: Join) -> (Client, Value) {
    let mut c = Client::connect(addr).await;
    c.send(&ClientMessage::Join(join)).await;
    let w = c.recv_type("welcome").await;
    c.recv_type("member_list").await;
    (c, w)
}

fn with(mut join: Join, password: Option<&str>, token: Option<&str>) -> Join {
    join.password = password.map(str::to_string);
    join.token = token.map(str::to_string);
    join
}

#[tokio::test]
async fn a_named_host_device_claims_the_host_role_and_no_other_device_may() {
    let server = start().await;
    let (base, addr) = (http(&server), server.local_addr());
    let (status, created) = post(
        &base,
        json!({"name": "Desk", "id": "desk-1", "hostDeviceId": "desk"}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["hostId"], Value::Null);
    assert!(created.get("hostToken").is_none());
    let text = refused_at(
        addr,
        join_fields("desk-1", "mallory", "host"),
        "host_not_allowed",
        "names its host device",
    )
    .await;
    assert_eq!(
        text,
        "session `desk-1` names its host device: this device may not join it as host without a host token"
    );
    let (_host, w) = welcomed(addr, join_fields("desk-1", "desk", "host")).await;
    assert_eq!(w["sessionInfo"]["hostId"], w["clientId"]);
}

/// Finding 3: `POST {"name":"Admin lobby","id":"lobby"}`, then an anonymous host join and
/// `leave` ended the session for everyone. Now the host join is refused and the members
/// already there are not affected.
#[tokio::test]
async fn finding_3_nobody_claims_a_session_created_without_a_host() {
    let server = start().await;
    let (base, addr) = (http(&server), server.local_addr());
    let (status, _) = post(&base, json!({"name": "Admin lobby", "id": "lobby"})).await;
    assert_eq!(status, 201);
    let (mut member, _) = welcomed(addr, join_fields("lobby", "guest", "client")).await;
    let mut attacker = Client::connect(addr).await;
    refused(
        &mut attacker,
        join_fields("lobby", "attacker", "host"),
        "host_not_allowed",
        "created over HTTP without a host",
    )
    .await;
    member.expect_silence(Duration::from_millis(200)).await;
    member.assert_alive().await;
    let (status, view) = get(&base, "lobby").await;
    assert_eq!(status, 200);
    assert_eq!(view["hostId"], Value::Null);
    assert_eq!(view["members"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn post_answers_with_a_host_token_that_takes_the_host_role() {
    let server = start_with(with_secret()).await;
    let (base, addr) = (http(&server), server.local_addr());
    let (status, created) = post(
        &base,
        json!({"name": "Gig", "id": "gig", "hostToken": true, "hostTokenTtl": "10m"}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let host_token = created["hostToken"].as_str().unwrap().to_string();
    let claims = loudsync_server::access::verify(&host_token, &hs256(), now_secs()).unwrap();
    assert_eq!(
        (claims.sid.as_str(), claims.role),
        ("gig", DeviceType::Host)
    );
    assert!(claims.exp <= now_secs() + 600 && claims.exp + 5 >= now_secs() + 600);
    refused_at(
        addr,
        join_fields("gig", "anyone", "host"),
        "host_not_allowed",
        "without a host token",
    )
    .await;
    let (_host, w) = welcomed(
        addr,
        with(
            join_fields("gig", "any-device", "host"),
            None,
            Some(&host_token),
        ),
    )
    .await;
    assert_eq!(w["sessionInfo"]["hostId"], w["clientId"]);

    // Without a key, or with a public key only, the server cannot sign: a clear 400.
    let plain = start().await;
    let (status, body) = post(&http(&plain), json!({"name": "x", "hostToken": true})).await;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("needs a token key"),
        "{body}"
    );
    let mut config = test_config();
    config.token_key_file = Some(key_path("ed25519-public.pem"));
    let public = start_with(config).await;
    let (status, body) = post(&http(&public), json!({"name": "x", "hostToken": true})).await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("cannot sign"),
        "{body}"
    );
}

fn key_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keys")
        .join(name)
}

#[tokio::test]
async fn a_password_is_required_compared_and_never_shown() {
    let server = start().await;
    let (base, addr) = (http(&server), server.local_addr());
    let (status, created) = post(
        &base,
        json!({"name": "Quiet", "id": "quiet", "hostDeviceId": "desk", "password": "hunter2"}),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(created["passwordProtected"], true);
    assert!(!created.to_string().contains("hunter2"), "{created}");
    let (_, listed) = get(&base, "quiet").await;
    assert_eq!(listed["passwordProtected"], true);
    assert!(!listed.to_string().contains("hunter2"));

    let missing = refused_at(
        addr,
        join_fields("quiet", "g1", "client"),
        "password_required",
        "needs a password",
    )
    .await;
    assert_eq!(
        missing,
        "session `quiet` needs a password: send it as `password` in `join`"
    );
    let wrong = refused_at(
        addr,
        with(join_fields("quiet", "g1", "client"), Some("hunter3"), None),
        "wrong_password",
        "wrong password",
    )
    .await;
    assert!(!wrong.contains("hunter"), "{wrong}");
    // The named host needs the password too (or a token).
    refused_at(
        addr,
        join_fields("quiet", "desk", "host"),
        "password_required",
        "password",
    )
    .await;
    let (_host, _) = welcomed(
        addr,
        with(join_fields("quiet", "desk", "host"), Some("hunter2"), None),
    )
    .await;
    let (_guest, _) = welcomed(
        addr,
        with(join_fields("quiet", "g1", "client"), Some("hunter2"), None),
    )
    .await;
    // The app's JOIN has no password: it hears the code in its own words.
    let mut app = Client::connect(addr).await;
    app.send_app(
        &ClientMessage::join("quiet", "app-dev", "Device 42", DeviceType::Client),
        &ClientContext::new("app-dev", unix_ms()),
    )
    .await;
    let (msgs, end) = app.recv_end().await;
    assert_eq!(msgs[0]["type"], "ERROR");
    assert_eq!(msgs[0]["payload"]["code"], "PASSWORD_REQUIRED");
    assert!(matches!(end, Ended::Close(close_code::NORMAL, _)));
}

#[tokio::test]
async fn a_host_join_that_creates_a_session_sets_its_password() {
    let server = start().await;
    let (base, addr) = (http(&server), server.local_addr());
    let (mut host, _) = welcomed(
        addr,
        with(join_fields("party", "h", "host"), Some("s3cret"), None),
    )
    .await;
    let (_, view) = get(&base, "party").await;
    assert_eq!(view["passwordProtected"], true);
    refused_at(
        addr,
        join_fields("party", "g", "client"),
        "password_required",
        "password",
    )
    .await;
    host.expect_silence(Duration::from_millis(100)).await;
    let (_g, _) = welcomed(
        addr,
        with(join_fields("party", "g", "client"), Some("s3cret"), None),
    )
    .await;
    host.recv_type("member_joined").await;
}

#[tokio::test]
async fn wrong_passwords_are_limited_per_address_then_the_window_passes() {
    let mut config = test_config();
    config.password_max_failures = 2;
    config.password_failure_window = Duration::from_millis(600);
    let server = start_with(config).await;
    let (base, addr) = (http(&server), server.local_addr());
    post(
        &base,
        json!({"name": "Vault", "id": "vault", "password": "right"}),
    )
    .await;
    let wrong = || with(join_fields("vault", "g", "client"), Some("wrong"), None);
    let right = || with(join_fields("vault", "g", "client"), Some("right"), None);
    refused_at(addr, wrong(), "wrong_password", "wrong password").await;
    refused_at(addr, wrong(), "wrong_password", "wrong password").await;
    let text = refused_at(addr, right(), "too_many_attempts", "try again in").await;
    assert_eq!(
        text,
        "too many wrong passwords for session `vault` from this address; try again in 1 s"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (_g, _) = welcomed(addr, right()).await;
}

#[tokio::test]
async fn hs256_tokens_grant_the_join_and_every_bad_one_says_why() {
    let server = start_with(with_secret()).await;
    let addr = server.local_addr();
    let key = hs256();
    let (_host, _) = welcomed(
        addr,
        with(
            join_fields("K7P-3XQ", "h", "host"),
            Some("pw-of-the-host"),
            None,
        ),
    )
    .await;
    // A valid client token stands in for the password, in any spelling of the code.
    let good = token(&key, "k7p3xq", DeviceType::Client, Some("g1"));
    let (_g, w) = welcomed(
        addr,
        with(join_fields("K7P-3XQ", "g1", "client"), None, Some(&good)),
    )
    .await;
    assert_eq!(w["sessionInfo"]["id"], "K7P-3XQ");

    let claims = |f: &dyn Fn(&mut Claims)| {
        let mut c = Claims {
            sid: "K7P-3XQ".into(),
            role: DeviceType::Client,
            sub: Some("g2".into()),
            name: None,
            exp: now_secs() + 3600,
            nbf: None,
            iat: None,
        };
        f(&mut c);
        mint(&c, &key).unwrap()
    };
    let other_key = TokenKey::hs256(b"another secret, 32 bytes long...").unwrap();
    let cases: Vec<(String, &str)> = vec![
        (claims(&|c| c.exp = now_secs() - 3600), "invalid join token: it has expired"),
        (
            claims(&|c| c.nbf = Some(now_secs() + 3600)),
            "invalid join token: it is not valid yet (nbf)",
        ),
        (
            claims(&|c| c.sid = "OTHER".into()),
            "invalid join token: it is for another session",
        ),
        (
            claims(&|c| c.role = DeviceType::Host),
            "invalid join token: it is for the host role; this join is a client's",
        ),
        (
            claims(&|c| c.sub = Some("someone-else".into())),
            "invalid join token: it is for another device (`deviceInfo.id`)",
        ),
        (
            token(&other_key, "K7P-3XQ", DeviceType::Client, Some("g2")),
            "invalid join token: its signature does not match (signed with another key, or altered)",
        ),
        ("not.a.jwt".into(), "invalid join token: it is not a well-formed JWT"),
    ];
    for (bad, text) in cases {
        let got = refused_at(
            addr,
            with(join_fields("K7P-3XQ", "g2", "client"), None, Some(&bad)),
            "invalid_token",
            "invalid join token",
        )
        .await;
        assert_eq!(got, text);
        assert!(!got.contains(&bad), "the token is never echoed");
    }
}

#[tokio::test]
async fn require_token_refuses_joins_without_one() {
    let mut config = with_secret();
    config.require_token = true;
    let server = start_with(config).await;
    let addr = server.local_addr();
    let text = refused_at(
        addr,
        join_fields("s", "h", "host"),
        "token_required",
        "token",
    )
    .await;
    assert_eq!(
        text,
        "this server needs a signed join token: send it as `token` in `join`"
    );
    // The app's JOIN cannot carry a token: it hears the code.
    let mut app = Client::connect(addr).await;
    app.send_app(
        &ClientMessage::join("s", "app-dev", "Device 42", DeviceType::Client),
        &ClientContext::new("app-dev", unix_ms()),
    )
    .await;
    let (msgs, _) = app.recv_end().await;
    assert_eq!(msgs[0]["payload"]["code"], "TOKEN_REQUIRED");
    let host = token(&hs256(), "s", DeviceType::Host, Some("h"));
    let (_h, _) = welcomed(addr, with(join_fields("s", "h", "host"), None, Some(&host))).await;
    let client = token(&hs256(), "s", DeviceType::Client, None);
    let (_c, _) = welcomed(
        addr,
        with(join_fields("s", "c", "client"), None, Some(&client)),
    )
    .await;
}

#[tokio::test]
async fn an_ed25519_public_key_verifies_eddsa_tokens_only() {
    let mut config = test_config();
    config.token_key_file = Some(key_path("ed25519-public.pem"));
    config.require_token = true;
    let server = start_with(config).await;
    let addr = server.local_addr();
    let signer = TokenKey::from_pem(ED25519_PRIVATE.as_bytes()).unwrap();
    let good = token(&signer, "ed", DeviceType::Host, None);
    let (_h, _) = welcomed(
        addr,
        with(join_fields("ed", "h", "host"), None, Some(&good)),
    )
    .await;
    let hs = token(&hs256(), "ed", DeviceType::Client, None);
    refused_at(
        addr,
        with(join_fields("ed", "c", "client"), None, Some(&hs)),
        "invalid_token",
        "signed with another algorithm than this server's EdDSA",
    )
    .await;
}

/// Finding 5: these versions passed the check. Malformed is `invalid_message` naming the
/// field (the socket stays, and may join); another major is `version_mismatch` (closed).
#[tokio::test]
async fn protocol_versions_are_strict() {
    let server = start().await;
    let addr = server.local_addr();
    let mut c = Client::connect(addr).await;
    for bad in ["1.x", "1.0.0", "+1", " 1.0", "1.-1"] {
        let mut j = join_fields("v", "h", "host");
        j.protocol_version = Some(bad.into());
        c.send(&ClientMessage::Join(j)).await;
        let e = c.recv_type("error").await;
        assert_eq!(e["code"], "invalid_message", "{bad:?}");
        assert_eq!(
            e["message"],
            r#"join: field `protocolVersion` must be MAJOR or MAJOR.MINOR in ASCII digits (e.g. "1.0")"#
        );
    }
    let mut j = join_fields("v", "h", "host");
    j.protocol_version = Some("1.3".into());
    c.send(&ClientMessage::Join(j)).await;
    c.recv_type("welcome").await;
    let mut j = join_fields("v", "g", "client");
    j.protocol_version = Some("2.0".into());
    refused_at(
        addr,
        j,
        "version_mismatch",
        "protocol version 2.0 is not supported",
    )
    .await;
}

/// Finding 7: control characters are refused at the edge, over WebSocket (both dialects) and
/// HTTP, with the field named; the socket stays open.
#[tokio::test]
async fn control_characters_are_refused_in_every_field() {
    let server = start().await;
    let (base, addr) = (http(&server), server.local_addr());
    let evil = "\u{1b}]0;PWNED\u{7}\u{1b}[1A\u{2}K";
    let mut c = Client::connect(addr).await;
    let mut cases = Vec::new();
    let mut j = join_fields("ctl", evil, "host");
    cases.push((j.clone(), "deviceInfo.id"));
    j = join_fields("ctl", "h", "host");
    j.device_info.name = format!("Mal{evil}");
    cases.push((j.clone(), "deviceInfo.name"));
    j = join_fields("ctl", "h", "host");
    j.session_name = Some("Lobby\u{0}".into());
    cases.push((j, "sessionName"));
    for (join, field) in cases {
        c.send(&ClientMessage::Join(join)).await;
        let e = c.recv_type("error").await;
        assert_eq!(e["code"], "invalid_message");
        assert_eq!(
            e["message"],
            format!("join: field `{field}` must not contain control characters")
        );
    }
    c.send(&join_msg("ctl", "h", "host")).await;
    c.recv_type("welcome").await;
    c.recv_type("member_list").await;
    let (mut g, w, _) = join(addr, "ctl", "g", "client").await;
    let guest = w["clientId"].as_str().unwrap().to_string();
    c.recv_type("member_joined").await;
    for (frame, text) in [
        (
            format!(r#"{{"type":"kick","memberId":"{guest}","reason":"bye\u009b2J"}}"#),
            "kick: field `reason` must not contain control characters",
        ),
        (
            r#"{"type":"leave","reason":"bye\u0007"}"#.to_string(),
            "leave: field `reason` must not contain control characters",
        ),
    ] {
        c.send_text(&frame).await;
        let e = c.recv_type("error").await;
        assert_eq!(
            (e["code"].as_str(), e["message"].as_str()),
            (Some("invalid_message"), Some(text))
        );
    }
    g.send_text(r#"{"type":"leave","reason":"\u007f"}"#).await;
    assert_eq!(
        g.recv_type("error").await["message"],
        "leave: field `reason` must not contain control characters"
    );
    g.assert_alive().await;
    // The app's dialect: the same rule, our field names.
    let mut app = Client::connect(addr).await;
    app.send_text(&format!(
        r#"{{"type":"JOIN","timestamp":1,"payload":{{"sessionId":"ctl","deviceId":"a","deviceName":{}}}}}"#,
        serde_json::to_string(evil).unwrap()
    ))
    .await;
    let e = app.recv().await;
    assert_eq!(e["payload"]["code"], "INVALID_MESSAGE");
    assert_eq!(
        e["payload"]["message"],
        "join: field `deviceInfo.name` must not contain control characters"
    );
    // HTTP.
    for (body, text) in [
        (
            json!({"name": evil}),
            "`name` must not contain control characters",
        ),
        (
            json!({"name": "ok", "hostName": "a\u{0}"}),
            "`hostName` must not contain control characters",
        ),
        (
            json!({"name": "ok", "hostDeviceId": "a\u{85}"}),
            "`hostDeviceId` must not contain control characters",
        ),
    ] {
        let (status, e) = post(&base, body).await;
        assert_eq!((status, e["code"].as_str()), (400, Some("invalid_request")));
        assert_eq!(e["message"], text);
    }
}

/// People type session codes: any case, with or without dashes, everywhere an id is taken;
/// the form the session was created with is the one shown.
#[tokio::test]
async fn session_codes_are_found_in_any_case_with_or_without_dashes() {
    let server = start().await;
    let (base, addr) = (http(&server), server.local_addr());
    let (status, _) = post(
        &base,
        json!({"name": "Friday Jam", "id": "K7P-3XQ", "hostDeviceId": "desk", "hostName": "Front desk"}),
    )
    .await;
    assert_eq!(status, 201);
    let (status, conflict) = post(&base, json!({"name": "Again", "id": "k7p3xq"})).await;
    assert_eq!(
        (status, conflict["code"].as_str()),
        (409, Some("session_exists"))
    );
    for typed in ["k7p3xq", "K7P3XQ", "k7p-3xq"] {
        let (status, view) = get(&base, typed).await;
        assert_eq!(
            (status, view["id"].as_str()),
            (200, Some("K7P-3XQ")),
            "{typed}"
        );
    }
    // Ours.
    let (mut host, w) = welcomed(addr, join_fields("k7p3xq", "desk", "host")).await;
    assert_eq!(w["sessionInfo"]["id"], "K7P-3XQ");
    // The app's, which also sees the creator-given host name before it.
    let mut app = Client::connect(addr).await;
    app.send_app(
        &ClientMessage::join("k7p-3xq", "app-dev", "Device 42", DeviceType::Client),
        &ClientContext::new("app-dev", unix_ms()),
    )
    .await;
    let welcome = app.recv().await;
    assert_eq!(welcome["type"], "WELCOME");
    assert_eq!(welcome["payload"]["sessionId"], "K7P-3XQ");
    assert_eq!(welcome["payload"]["hostId"], "desk");
    host.recv_type("member_joined").await;
    let r = reqwest::Client::new()
        .delete(format!("{base}/v1/sessions/K7P3XQ"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        host.recv_type("session_closed").await["reason"],
        "Session closed by the server administrator"
    );
}

/// A session created over HTTP with a `hostName` shows it to the app before a host joins; the
/// app hears its own server's words for the refusals it knows.
#[tokio::test]
async fn the_app_sees_the_creators_host_name_and_its_own_words() {
    let server = start().await;
    let (base, addr) = (http(&server), server.local_addr());
    post(
        &base,
        json!({"name": "Lobby", "id": "LOBBY1", "hostName": "Front desk", "maxMembers": 1}),
    )
    .await;
    let mut app = Client::connect(addr).await;
    app.send_app(
        &ClientMessage::join("lobby1", "app-dev", "Device 42", DeviceType::Client),
        &ClientContext::new("app-dev", unix_ms()),
    )
    .await;
    let welcome = app.recv().await;
    assert_eq!(welcome["payload"]["hostName"], "Front desk");
    assert_eq!(welcome["payload"]["hostId"], "");
    for (session, device, code, text) in [
        ("nope", "d2", "SESSION_NOT_FOUND", "Session not found"),
        ("LOBBY1", "app-dev", "ALREADY_JOINED", "Already joined"),
        ("LOBBY1", "d3", "SESSION_FULL", "Session full"),
    ] {
        let mut c = Client::connect(addr).await;
        c.send_app(
            &ClientMessage::join(session, device, "Device", DeviceType::Client),
            &ClientContext::new(device, unix_ms()),
        )
        .await;
        let (msgs, _) = c.recv_end().await;
        assert_eq!(msgs[0]["payload"]["code"], code);
        assert_eq!(msgs[0]["payload"]["message"], text);
    }
}
