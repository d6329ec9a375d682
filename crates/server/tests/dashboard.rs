//! The dashboard's server side (issue 15), end to end against a real server on loopback: the
//! page and its assets with their content types and security headers, the redirect, the
//! access rule without a token (loopback only: a non-loopback client is made by a trusted
//! proxy's `X-Forwarded-For`) and with one (login, the cookie, the Origin check on writes,
//! bearer requests unaffected, logout), and the `GET /v1/pairing` and `GET /v1/media` views
//! with real pairing WebSockets and real UDP media tuples.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::pairing::{event_frame, pairing_config, recv_event, ws_identified};
use common::*;
use loudsync_protocol::media::{
    decode_control, encode_data, encode_start, encode_start_confirm, ControlBody, DataHeader,
    MediaToken, StreamId, FREQUENCY,
};
use loudsync_protocol::ClientMessage;
use loudsync_server::{Server, ServerConfig};
use reqwest::header::{HeaderMap, CONTENT_TYPE, COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use serde_json::{json, Value};
use tokio::net::UdpSocket;

const TOKEN: &str = "dash-s3cret";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn with_token() -> Server {
    start_with(ServerConfig {
        admin_token: Some(TOKEN.into()),
        ..test_config()
    })
    .await
}

fn assert_security_headers(h: &HeaderMap, what: &str) {
    assert_eq!(h["cache-control"], "no-cache", "{what}");
    assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(h["referrer-policy"], "no-referrer", "{what}");
    assert_eq!(
        h["content-security-policy"],
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
         connect-src 'self'; frame-ancestors 'none'",
        "{what}"
    );
}

async fn error_code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert!(body["message"].is_string(), "{body}");
    (status, body["code"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn every_asset_is_served_with_its_type_and_the_security_headers() {
    let server = start().await;
    let base = http(&server);
    let c = client();
    for (path, content_type, bytes) in [
        (
            "/dashboard/",
            "text/html; charset=utf-8",
            loudsync_server::dashboard::INDEX_HTML,
        ),
        (
            "/dashboard/app.js",
            "text/javascript; charset=utf-8",
            loudsync_server::dashboard::APP_JS,
        ),
        (
            "/dashboard/app.css",
            "text/css; charset=utf-8",
            loudsync_server::dashboard::APP_CSS,
        ),
    ] {
        let r = c.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()[CONTENT_TYPE], content_type, "{path}");
        assert_security_headers(r.headers(), path);
        assert_eq!(&r.bytes().await.unwrap()[..], bytes, "{path}");
        let head = c.head(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(head.status(), 200, "HEAD {path}");
        assert_eq!(head.headers()[CONTENT_TYPE], content_type, "HEAD {path}");
    }
    assert!(!loudsync_server::dashboard::INDEX_HTML.is_empty());
    let r = c.get(format!("{base}/dashboard")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()[LOCATION], "/dashboard/");
    assert_security_headers(r.headers(), "redirect");
    let r = c
        .get(format!("{base}/dashboard/nothing.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    server.shutdown().await;
}

#[tokio::test]
async fn without_a_token_the_dashboard_answers_loopback_clients_only() {
    // The test client is on loopback; a trusted proxy on loopback that names a LAN client in
    // X-Forwarded-For makes the server see a non-loopback client.
    let server = start_with(ServerConfig {
        trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
        ..test_config()
    })
    .await;
    let base = http(&server);
    let c = client();
    for path in [
        "/dashboard",
        "/dashboard/",
        "/dashboard/app.js",
        "/dashboard/app.css",
        "/v1/sessions",
        "/v1/pairing",
        "/v1/media",
    ] {
        let r = c.get(format!("{base}{path}")).send().await.unwrap();
        assert!(r.status().is_success() || r.status() == 302, "{path}");
        let r = c
            .get(format!("{base}{path}"))
            .header("x-forwarded-for", "192.0.2.7")
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(r).await, (403, "forbidden".into()), "{path}");
    }
    let r = c
        .post(format!("{base}/dashboard/login"))
        .header("x-forwarded-for", "192.0.2.7")
        .form(&[("token", "x")])
        .send()
        .await
        .unwrap();
    assert_security_headers(r.headers(), "refused login");
    assert_eq!(error_code(r).await, (403, "forbidden".into()));
    // A loopback request addressed to another name is what a DNS-rebinding page sends.
    for path in ["/dashboard/", "/v1/sessions"] {
        let r = c
            .get(format!("{base}{path}"))
            .header("host", "rebound.example:8080")
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(r).await,
            (403, "forbidden_host".into()),
            "{path}"
        );
        let r = c
            .get(format!("{base}{path}"))
            .header("host", "localhost:8080")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path} as localhost");
    }
    // A loopback login on a server without a token: nothing to log in to.
    let r = c
        .post(format!("{base}/dashboard/login"))
        .form(&[("token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (409, "no_admin_token".into()));
    server.shutdown().await;
}

#[tokio::test]
async fn without_a_token_a_write_from_another_origin_is_refused_and_scripts_are_unaffected() {
    let server = start().await;
    let base = http(&server);
    let own = base.clone();
    let c = client();
    for id in ["o1", "o2", "o3"] {
        let r = c
            .post(format!("{base}/v1/sessions"))
            .json(&json!({"name": id, "id": id}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let r = c
        .delete(format!("{base}/v1/sessions/o1"))
        .header(ORIGIN, "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (403, "forbidden_origin".into()));
    // A read from another origin is a read (CORS keeps the answer from the page anyway).
    let r = c
        .get(format!("{base}/v1/sessions"))
        .header(ORIGIN, "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .delete(format!("{base}/v1/sessions/o1"))
        .header(ORIGIN, &own)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "the dashboard's own page");
    let r = c
        .delete(format!("{base}/v1/sessions/o2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "a script sends no Origin");
    server.shutdown().await;
}

/// The `loudsync_admin=...` pair of a `Set-Cookie`, and its attributes.
fn cookie_of(h: &HeaderMap) -> (String, String) {
    let set = h[SET_COOKIE].to_str().unwrap().to_string();
    let (pair, attributes) = set.split_once(';').unwrap();
    (pair.to_string(), attributes.to_string())
}

#[tokio::test]
async fn with_a_token_the_page_is_public_and_the_login_cookie_opens_the_admin_api() {
    let server = with_token().await;
    let base = http(&server);
    let own = base.clone();
    let c = client();
    let bearer = format!("Bearer {TOKEN}");
    // The page and its assets hold no data: served to anyone.
    for path in ["/dashboard/", "/dashboard/app.js", "/dashboard/app.css"] {
        let r = c.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    // The data needs the token.
    for path in ["/v1/sessions", "/v1/events", "/v1/pairing", "/v1/media"] {
        let r = c.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(error_code(r).await, (401, "unauthorized".into()), "{path}");
    }
    // Wrong token, no token, a foreign origin.
    let r = c
        .post(format!("{base}/dashboard/login"))
        .form(&[("token", "dash-s3cre")])
        .send()
        .await
        .unwrap();
    assert!(r.headers().get(SET_COOKIE).is_none());
    assert_security_headers(r.headers(), "wrong login");
    assert_eq!(error_code(r).await, (401, "unauthorized".into()));
    let r = c
        .post(format!("{base}/dashboard/login"))
        .form(&[("other", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (400, "invalid_request".into()));
    let r = c
        .post(format!("{base}/dashboard/login"))
        .header(ORIGIN, "http://evil.example")
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert!(r.headers().get(SET_COOKIE).is_none());
    assert_eq!(error_code(r).await, (403, "forbidden_origin".into()));
    // The right token, as a form (what the page's form posts) and as JSON.
    let r = c
        .post(format!("{base}/dashboard/login"))
        .header(ORIGIN, &own)
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_security_headers(r.headers(), "login");
    let (pair, attributes) = cookie_of(r.headers());
    assert_eq!(pair, format!("loudsync_admin={TOKEN}"));
    assert!(attributes.contains("HttpOnly"), "{attributes}");
    assert!(attributes.contains("SameSite=Strict"), "{attributes}");
    assert!(attributes.contains("Path=/"), "{attributes}");
    assert!(!attributes.contains("Secure"), "no TLS here: {attributes}");
    let r = c
        .post(format!("{base}/dashboard/login"))
        .json(&json!({"token": TOKEN}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(cookie_of(r.headers()).0, pair);

    // The cookie grants the reads, the event stream included.
    let r = c
        .get(format!("{base}/v1/sessions"))
        .header(COOKIE, format!("theme=dark; {pair}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("{base}/v1/events"))
        .header(COOKIE, &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()[CONTENT_TYPE], "text/event-stream");
    drop(r);
    for path in ["/v1/pairing", "/v1/media"] {
        let r = c
            .get(format!("{base}{path}"))
            .header(COOKIE, &pair)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    // A stale or forged cookie is refused.
    let r = c
        .get(format!("{base}/v1/sessions"))
        .header(COOKIE, "loudsync_admin=dash-s3cre")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (401, "unauthorized".into()));

    // Writes with the cookie need the page's own Origin.
    for id in ["c1", "c2", "c3"] {
        let r = c
            .post(format!("{base}/v1/sessions"))
            .header("authorization", &bearer)
            .json(&json!({"name": id, "id": id}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let r = c
        .delete(format!("{base}/v1/sessions/c1"))
        .header(COOKIE, &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (403, "forbidden_origin".into()));
    for foreign in [
        "http://evil.example",
        "null",
        &own.replace("http://", "https://"),
    ] {
        let r = c
            .delete(format!("{base}/v1/sessions/c1"))
            .header(COOKIE, &pair)
            .header(ORIGIN, foreign)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(r).await,
            (403, "forbidden_origin".into()),
            "{foreign}"
        );
    }
    let r = c
        .post(format!("{base}/v1/sessions/c1/members/nobody/kick"))
        .header(COOKIE, &pair)
        .header(ORIGIN, "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (403, "forbidden_origin".into()));
    let r = c
        .delete(format!("{base}/v1/sessions/c1"))
        .header(COOKIE, &pair)
        .header(ORIGIN, &own)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // Bearer requests are unaffected: no Origin needed, a foreign one changes nothing.
    let r = c
        .delete(format!("{base}/v1/sessions/c2"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = c
        .delete(format!("{base}/v1/sessions/c3"))
        .header("authorization", &bearer)
        .header(ORIGIN, "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = c
        .get(format!("{base}/v1/sessions"))
        .header("authorization", "Bearer nope")
        .header(COOKIE, &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await,
        (401, "unauthorized".into()),
        "a bearer credential is judged on its own"
    );

    // Logout clears the cookie.
    let r = c
        .post(format!("{base}/dashboard/logout"))
        .header(COOKIE, &pair)
        .header(ORIGIN, &own)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (cleared, attributes) = cookie_of(r.headers());
    assert_eq!(cleared, "loudsync_admin=");
    assert!(attributes.contains("Max-Age=0"), "{attributes}");
    assert!(attributes.contains("HttpOnly") && attributes.contains("Path=/"));
    let r = c
        .get(format!("{base}/v1/sessions"))
        .header(COOKIE, &cleared)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (401, "unauthorized".into()));
    server.shutdown().await;
}

#[tokio::test]
async fn a_token_with_cookie_unsafe_characters_round_trips_through_the_cookie() {
    let token = "a b;c,d\"e\\f=g+h%";
    let server = start_with(ServerConfig {
        admin_token: Some(token.into()),
        ..test_config()
    })
    .await;
    let base = http(&server);
    let c = client();
    let r = c
        .post(format!("{base}/dashboard/login"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (pair, _) = cookie_of(r.headers());
    assert!(!pair.contains(' ') && !pair.contains(',') && !pair.contains('"'));
    let r = c
        .get(format!("{base}/v1/sessions"))
        .header(COOKIE, &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.shutdown().await;
}

async fn get_json(base: &str, path: &str) -> Value {
    let r = client().get(format!("{base}{path}")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

#[tokio::test]
async fn v1_pairing_lists_each_apps_clients_and_who_they_are_paired_with() {
    let plain = start().await;
    assert_eq!(
        get_json(&http(&plain), "/v1/pairing").await,
        json!({"apps": []})
    );
    plain.shutdown().await;

    let server = start_with(pairing_config()).await;
    let addr = server.local_addr();
    let base = http(&server);
    let mut ctl = ws_identified(addr, "alpha", "controller", "123456").await;
    let mut rsp = ws_identified(addr, "alpha", "responder", "654321").await;
    let _lone = ws_identified(addr, "beta", "responder", "777777").await;
    let view = get_json(&base, "/v1/pairing").await;
    let apps: Vec<&str> = view["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["app"].as_str().unwrap())
        .collect();
    assert_eq!(apps, ["alpha", "beta", "secret"]);
    assert_eq!(
        view["apps"][0]["clients"][0],
        json!({"clientId": "123456", "role": "controller", "transport": "ws",
               "connected": true, "partner": null, "active": false})
    );
    // The controller pings the responder, which answers: both name each other.
    ctl.send_text(&event_frame("654321", "ping")).await;
    assert_eq!(recv_event(&mut rsp).await["senderClientId"], "123456");
    rsp.send_text(&event_frame("123456", "pong")).await;
    assert_eq!(recv_event(&mut ctl).await["senderClientId"], "654321");
    let view = get_json(&base, "/v1/pairing").await;
    assert_eq!(
        view["apps"][0],
        json!({"app": "alpha", "clients": [
            {"clientId": "123456", "role": "controller", "transport": "ws",
             "connected": true, "partner": "654321", "active": true},
            {"clientId": "654321", "role": "responder", "transport": "ws",
             "connected": true, "partner": "123456", "active": true},
        ]})
    );
    assert_eq!(
        view["apps"][1]["clients"],
        json!([{"clientId": "777777", "role": "responder", "transport": "ws",
                "connected": true, "partner": null, "active": false}])
    );
    assert_eq!(view["apps"][2]["clients"], json!([]));
    // The responder goes: it leaves the list, the controller's partner is no longer active.
    drop(rsp);
    let mut last = Value::Null;
    for _ in 0..300 {
        last = get_json(&base, "/v1/pairing").await;
        if last["apps"][0]["clients"].as_array().unwrap().len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        last["apps"][0]["clients"],
        json!([{"clientId": "123456", "role": "controller", "transport": "ws",
                "connected": true, "partner": "654321", "active": false}])
    );
    server.shutdown().await;
}

/// A member's UDP endpoint for the relay: START (resent until answered), START_CONFIRM
/// (resent until the relay streams the tuple).
async fn media_tuple(server: &Server, member: &mut Client) -> UdpSocket {
    let media = server.state().media.clone().unwrap();
    let relay = media.local_addr();
    member.send(&ClientMessage::MediaToken).await;
    let grant = member.recv_until("media_token").await;
    let stream = StreamId::new(grant["streamId"].as_str().unwrap()).unwrap();
    let token = MediaToken::new(grant["token"].as_str().unwrap().as_bytes().to_vec()).unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = vec![0u8; 2048];
    let mut id = None;
    for _ in 0..12 {
        socket
            .send_to(&encode_start(&stream, Some(&token)), relay)
            .await
            .unwrap();
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(250), socket.recv_from(&mut buf)).await
        {
            let ack = decode_control(&buf[..n]).expect("a control frame");
            assert!(matches!(ack.body, ControlBody::StartAck { .. }), "{ack:?}");
            id = Some(ack.connection_id);
            break;
        }
    }
    let id = id.expect("a START_ACK");
    let me = socket.local_addr().unwrap();
    for _ in 0..60 {
        if media.tuple(me).is_some_and(|t| t.streaming) {
            return socket;
        }
        socket
            .send_to(&encode_start_confirm(&id, &stream), relay)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the relay never streamed {me}");
}

#[tokio::test]
async fn v1_media_is_disabled_without_the_relay_and_shows_streams_with_it() {
    let plain = start().await;
    assert_eq!(
        get_json(&http(&plain), "/v1/media").await,
        json!({"enabled": false})
    );
    plain.shutdown().await;

    let server = start_with(ServerConfig {
        media_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..test_config()
    })
    .await;
    let base = http(&server);
    let port = server.state().media.as_ref().unwrap().port();
    let (mut clients, ids) = party(server.local_addr(), "media-view", 1).await;
    let view = get_json(&base, "/v1/media").await;
    assert_eq!(
        view,
        json!({"enabled": true, "port": port, "streams": [
            {"sessionId": "media-view", "publisher": null, "subscribers": [],
             "datagramsRelayed": 0, "framesLost": 0, "jitterMs": null}
        ]})
    );
    let publisher = media_tuple(&server, &mut clients[0]).await;
    let subscriber = media_tuple(&server, &mut clients[1]).await;
    let relay: SocketAddr = server.state().media.as_ref().unwrap().local_addr();
    // Frames 1..=5 and 7 (6 never sent: one lost), 20 ms apart on the sender's clock.
    let sequences = [1i64, 2, 3, 4, 5, 7];
    let mut buf = vec![0u8; 2048];
    for seq in sequences {
        let header = DataHeader {
            sequence: seq,
            timestamp: seq * 20_000_000,
            frequency: FREQUENCY,
        };
        publisher
            .send_to(&encode_data(&header, 0, 200), relay)
            .await
            .unwrap();
        // Each reaches the subscriber before the next is sent (nothing lost on loopback).
        let (n, _) = tokio::time::timeout(WAIT, subscriber.recv_from(&mut buf))
            .await
            .expect("the frame reaches the subscriber")
            .unwrap();
        assert_eq!(n, 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let view = get_json(&base, "/v1/media").await;
    let stream = &view["streams"][0];
    assert_eq!(stream["sessionId"], "media-view");
    assert_eq!(
        stream["publisher"],
        json!({"memberId": ids[0], "address": publisher.local_addr().unwrap().to_string()})
    );
    assert_eq!(
        stream["subscribers"],
        json!([{"memberId": ids[1], "address": subscriber.local_addr().unwrap().to_string()}])
    );
    assert_eq!(stream["datagramsRelayed"], 6);
    assert_eq!(stream["framesLost"], 1);
    let jitter = stream["jitterMs"]
        .as_f64()
        .expect("jitter after six frames");
    assert!((0.0..1000.0).contains(&jitter), "{jitter}");
    drop(clients);
    server.shutdown().await;
}

#[tokio::test]
async fn behind_a_trusted_tls_proxy_the_cookie_is_secure_and_the_origin_is_the_proxys() {
    let server = start_with(ServerConfig {
        admin_token: Some(TOKEN.into()),
        trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
        ..test_config()
    })
    .await;
    let base = http(&server);
    let c = client();
    let login = |proto: Option<&'static str>| {
        let mut r = c
            .post(format!("{base}/dashboard/login"))
            .form(&[("token", TOKEN)]);
        if let Some(proto) = proto {
            r = r.header("x-forwarded-proto", proto);
        }
        r.send()
    };
    let r = login(Some("https")).await.unwrap();
    assert_eq!(r.status(), 204);
    let (pair, attributes) = cookie_of(r.headers());
    assert!(attributes.ends_with("; Secure"), "{attributes}");
    let r = login(None).await.unwrap();
    assert!(!cookie_of(r.headers()).1.contains("Secure"));
    let r = c
        .post(format!("{base}/v1/sessions"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .json(&json!({"name": "p", "id": "p1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // The page's origin is the proxy's public one, from X-Forwarded-Proto and -Host.
    let public = "https://dash.example.org";
    let r = c
        .delete(format!("{base}/v1/sessions/p1"))
        .header(COOKIE, &pair)
        .header(ORIGIN, public)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (403, "forbidden_origin".into()));
    let r = c
        .delete(format!("{base}/v1/sessions/p1"))
        .header(COOKIE, &pair)
        .header(ORIGIN, public)
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "dash.example.org")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    server.shutdown().await;

    // From a peer that is no trusted proxy, the headers are anybody's: ignored.
    let server = with_token().await;
    let r = client()
        .post(format!("{}/dashboard/login", http(&server)))
        .header("x-forwarded-proto", "https")
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert!(!cookie_of(r.headers()).1.contains("Secure"));
    server.shutdown().await;
}

#[tokio::test]
async fn login_attempts_are_rate_limited_per_address() {
    let server = with_token().await;
    let base = http(&server);
    let c = client();
    let burst = loudsync_server::dashboard::LOGIN_BURST;
    for i in 0..burst {
        let r = c
            .post(format!("{base}/dashboard/login"))
            .form(&[("token", format!("guess-{i}"))])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "attempt {i}");
    }
    // Over the burst, even the right token waits: a guesser learns nothing.
    let r = c
        .post(format!("{base}/dashboard/login"))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert!(r.headers().get(SET_COOKIE).is_none());
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert_eq!(error_code(r).await, (429, "too_many_attempts".into()));
    // The Bearer API is not the login's bucket.
    let r = c
        .get(format!("{base}/v1/sessions"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // After a second, one more attempt.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = c
        .post(format!("{base}/dashboard/login"))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    server.shutdown().await;
}
