//! The pairing WebSocket, `GET /crsocket/{NAME}/ws` (issue 12, PROTOCOL §16), black-box over
//! real loopback sockets: identify and its refusals (P8, P9), events both ways with every
//! field (P10, P11), blocking and server rejects (P20..P22), one connection per id (P7),
//! liveness (P3, P12, P23), malformed frames (P13), and the HTTP side of the endpoint (P1, P4).

mod common;

use std::time::{Duration, Instant};

use common::pairing::*;
use common::*;
use futures_util::SinkExt;
use loudsync_server::ServerConfig;
use serde_json::json;
use tokio_websockets::Message;

/// An identify refused with `reason`: `cr_aborted` then close 1000 `identify rejected`.
async fn assert_refused(c: &mut Client, reason: &str) {
    let (seen, end) = c.recv_end().await;
    assert_eq!(seen.len(), 1, "one cr_aborted, then the close: {seen:?}");
    assert_eq!(
        without_timestamp(seen[0].clone()),
        json!({"type": "cr_aborted", "reason": reason})
    );
    assert_eq!(end, Ended::Close(1000, "identify rejected".into()));
}

/// `cr_alive` is answered: the socket is open and served.
async fn assert_served(c: &mut Client) {
    c.send_text(r#"{"type":"cr_alive"}"#).await;
    assert_eq!(
        without_timestamp(c.recv_type("cr_alive").await),
        json!({"type": "cr_alive"})
    );
}

#[tokio::test]
async fn identify_with_own_id_is_welcomed_with_app_id_and_timestamp() {
    let server = start_with(pairing_config()).await;
    let mut c = ws_open(server.local_addr(), "alpha").await;
    let before = unix_ms();
    c.send_text(&identify_frame(
        Some("controller"),
        Some("123456"),
        Some("tok"),
    ))
    .await;
    let welcome = c.recv_type("cr_welcome").await;
    let ts = welcome["timestamp"].as_u64().unwrap();
    assert!(ts >= before && ts <= unix_ms(), "timestamp {ts} is now");
    assert_eq!(
        without_timestamp(welcome),
        json!({"type": "cr_welcome", "appId": "alpha", "clientId": "123456", "clientRole": "controller"})
    );
    assert_served(&mut c).await;
}

#[tokio::test]
async fn identify_without_client_id_is_assigned_a_six_digit_id() {
    let server = start_with(pairing_config()).await;
    let addr = server.local_addr();
    let mut ids = Vec::new();
    for frame in [
        r#"{"type":"cr_identify","clientRole":"responder","accessToken":"tok"}"#,
        r#"{"type":"cr_identify","clientRole":"responder","accessToken":"tok","clientId":null}"#,
    ] {
        let mut c = ws_open(addr, "beta").await;
        c.send_text(frame).await;
        let mut welcome = without_timestamp(c.recv_type("cr_welcome").await);
        let id = welcome["clientId"].as_str().unwrap().to_string();
        assert!(
            id.len() == 6 && id.bytes().all(|b| b.is_ascii_digit()),
            "assigned id {id:?}"
        );
        welcome["clientId"] = json!("");
        assert_eq!(
            welcome,
            json!({"type": "cr_welcome", "appId": "beta", "clientId": "", "clientRole": "responder"})
        );
        ids.push((id, c));
    }
    assert_ne!(ids[0].0, ids[1].0, "two connected clients share an id");
}

#[tokio::test]
async fn identify_refusals_come_in_p8_order_then_close_1000() {
    let server = start_with(pairing_config()).await;
    let addr = server.local_addr();
    let cases: &[(&str, &str, &str)] = &[
        // Role first, even when everything else is wrong too.
        (
            "alpha",
            r#"{"type":"cr_identify","clientRole":"boss","clientId":"12","accessToken":""}"#,
            "invalidRole",
        ),
        (
            "alpha",
            r#"{"type":"cr_identify","clientId":"111111","accessToken":"tok"}"#,
            "invalidRole",
        ),
        // Then the client id, a non-string one included.
        (
            "alpha",
            r#"{"type":"cr_identify","clientRole":"controller","clientId":"12345","accessToken":"a b"}"#,
            "invalidClientId",
        ),
        (
            "alpha",
            r#"{"type":"cr_identify","clientRole":"controller","clientId":123456,"accessToken":"tok"}"#,
            "invalidClientId",
        ),
        // Then the token's syntax, a missing or non-string one included.
        (
            "secret",
            r#"{"type":"cr_identify","clientRole":"controller","clientId":"111111","accessToken":"a b"}"#,
            "invalidAccessToken",
        ),
        (
            "alpha",
            r#"{"type":"cr_identify","clientRole":"controller","clientId":"111111"}"#,
            "invalidAccessToken",
        ),
        (
            "alpha",
            r#"{"type":"cr_identify","clientRole":"controller","clientId":"111111","accessToken":7}"#,
            "invalidAccessToken",
        ),
        // Then authorisation, in an app with tokens.
        (
            "secret",
            r#"{"type":"cr_identify","clientRole":"controller","clientId":"111111","accessToken":"tokC"}"#,
            "notAuthorized",
        ),
    ];
    for (app, frame, reason) in cases {
        let mut c = ws_open(addr, app).await;
        c.send_text(frame).await;
        assert_refused(&mut c, reason).await;
    }
    // Both of the app's tokens are accepted, for either role.
    for (id, role, token) in [
        ("111111", "controller", "tokA"),
        ("222222", "responder", "tokB"),
    ] {
        let mut c = ws_open(addr, "secret").await;
        c.send_text(&identify_frame(Some(role), Some(id), Some(token)))
            .await;
        assert_eq!(
            without_timestamp(c.recv_type("cr_welcome").await),
            json!({"type": "cr_welcome", "appId": "secret", "clientId": id, "clientRole": role})
        );
    }
}

#[tokio::test]
async fn events_go_both_ways_with_every_field_and_the_server_sets_the_sender() {
    let server = start_with(pairing_config()).await;
    let addr = server.local_addr();
    let mut ctl = ws_identified(addr, "alpha", "controller", "111111").await;
    let mut rsp = ws_identified(addr, "alpha", "responder", "222222").await;

    // Every field given; the client's senderClientId and receiveCt are ignored.
    ctl.send_text(
        &json!({
            "type": "cr_event", "recipientClientId": "222222", "eventType": "ping",
            "eventSubType": "sub1", "eventParams": ["a", "b c", ""], "buffered": true,
            "logged": true, "interceptable": false, "sendCt": 1_700_000_000_123u64,
            "senderClientId": "999999", "receiveCt": 5
        })
        .to_string(),
    )
    .await;
    assert_eq!(
        recv_event(&mut rsp).await,
        server_event(
            "ping",
            "sub1",
            &["a", "b c", ""],
            true,
            true,
            false,
            Some(1_700_000_000_123),
            "111111"
        )
    );

    // Only the required fields: the defaults are filled in.
    rsp.send_text(&event_frame("111111", "appEvent42")).await;
    assert_eq!(
        recv_event(&mut ctl).await,
        server_event("appEvent42", "", &[], false, false, true, None, "222222")
    );
    // sendCt null explicitly is null.
    rsp.send_text(
        &json!({"type": "cr_event", "recipientClientId": "111111", "eventType": "x",
                "sendCt": null, "senderClientId": "111111"})
        .to_string(),
    )
    .await;
    assert_eq!(
        recv_event(&mut ctl).await,
        server_event("x", "", &[], false, false, true, None, "222222")
    );
}

#[tokio::test]
async fn ping_to_a_same_role_id_gets_reject_invalid_partner_role() {
    let server = start_with(pairing_config()).await;
    let addr = server.local_addr();
    let mut a = ws_identified(addr, "alpha", "controller", "111111").await;
    let mut b = ws_identified(addr, "alpha", "controller", "222222").await;
    a.send_text(&event_frame("222222", "ping")).await;
    assert_eq!(
        recv_event(&mut a).await,
        ws_reject("invalidPartnerRole", "222222")
    );
    b.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn ping_across_apps_gets_reject_app_id_mismatch() {
    let server = start_with(pairing_config()).await;
    let addr = server.local_addr();
    let mut a = ws_identified(addr, "alpha", "controller", "111111").await;
    let mut b = ws_identified(addr, "beta", "responder", "333333").await;
    a.send_text(&event_frame("333333", "ping")).await;
    assert_eq!(
        recv_event(&mut a).await,
        ws_reject("appIdMismatch", "333333")
    );
    b.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn blocked_events_other_than_ping_get_nothing() {
    let server = start_with(pairing_config()).await;
    let addr = server.local_addr();
    let mut a = ws_identified(addr, "alpha", "controller", "111111").await;
    let mut same = ws_identified(addr, "alpha", "controller", "222222").await;
    let mut other = ws_identified(addr, "beta", "responder", "333333").await;
    for kind in ["unassign", "inactive", "reject", "appEvent"] {
        a.send_text(&event_frame("222222", kind)).await;
        a.send_text(&event_frame("333333", kind)).await;
    }
    // Answered in order: nothing came before the cr_alive.
    assert_served(&mut a).await;
    same.expect_silence(Duration::from_millis(200)).await;
    other.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn an_event_to_an_unconnected_id_gets_nothing() {
    let server = start_with(pairing_config()).await;
    let mut a = ws_identified(server.local_addr(), "alpha", "controller", "111111").await;
    a.send_text(&event_frame("654321", "ping")).await;
    a.send_text(&event_frame("654321", "appEvent")).await;
    assert_served(&mut a).await;
    a.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_second_connection_with_the_same_id_in_the_same_app_releases_the_first() {
    let server = start_with(pairing_config()).await;
    let addr = server.local_addr();
    let mut old = ws_identified(addr, "alpha", "responder", "111111").await;
    let mut new = ws_identified(addr, "alpha", "responder", "111111").await;
    let (seen, end) = old.recv_end().await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        without_timestamp(seen[0].clone()),
        json!({"type": "cr_aborted", "reason": "releasedByOther"})
    );
    assert_eq!(end, Ended::Close(1000, "releasedByOther".into()));
    // The new one works: it is served and events reach it.
    assert_served(&mut new).await;
    let mut ctl = ws_identified(addr, "alpha", "controller", "222222").await;
    ctl.send_text(&event_frame("111111", "ping")).await;
    assert_eq!(
        recv_event(&mut new).await,
        server_event("ping", "", &[], false, false, true, None, "222222")
    );
}

#[tokio::test]
async fn the_same_id_in_another_app_is_refused_client_id_in_use() {
    let server = start_with(pairing_config()).await;
    let addr = server.local_addr();
    let mut old = ws_identified(addr, "alpha", "responder", "111111").await;
    let mut new = ws_open(addr, "beta").await;
    new.send_text(&identify_frame(
        Some("responder"),
        Some("111111"),
        Some("tok"),
    ))
    .await;
    assert_refused(&mut new, "clientIdInUse").await;
    // The old one is untouched: still served and still reachable.
    assert_served(&mut old).await;
    let mut ctl = ws_identified(addr, "alpha", "controller", "222222").await;
    ctl.send_text(&event_frame("111111", "hello")).await;
    assert_eq!(
        recv_event(&mut old).await,
        server_event("hello", "", &[], false, false, true, None, "222222")
    );
}

#[tokio::test]
async fn cr_alive_is_answered_cr_alive_with_a_timestamp() {
    let server = start_with(pairing_config()).await;
    let mut c = ws_identified(server.local_addr(), "alpha", "controller", "111111").await;
    let before = unix_ms();
    c.send_text(r#"{"type":"cr_alive"}"#).await;
    let alive = c.recv_type("cr_alive").await;
    let ts = alive["timestamp"].as_u64().unwrap();
    assert!(ts >= before && ts <= unix_ms());
    assert_eq!(without_timestamp(alive), json!({"type": "cr_alive"}));
}

/// The next frame is `error` `invalid_message`; returns its message.
async fn invalid_message(c: &mut Client) -> String {
    let e = without_timestamp(c.recv_type("error").await);
    assert_eq!(e["code"], "invalid_message", "{e}");
    assert_eq!(e.as_object().unwrap().len(), 3, "type, code, message: {e}");
    e["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn malformed_frames_get_invalid_message_and_the_socket_stays_usable() {
    let server = start_with(pairing_config()).await;
    let addr = server.local_addr();
    let mut c = ws_open(addr, "alpha").await;
    // Before the identify.
    c.send_text(&event_frame("222222", "ping")).await;
    assert_eq!(
        invalid_message(&mut c).await,
        "cr_event: send `cr_identify` first; this connection has not identified"
    );
    c.send_text(r#"{"type":"cr_alive"}"#).await;
    assert_eq!(
        invalid_message(&mut c).await,
        "cr_alive: send `cr_identify` first; this connection has not identified"
    );
    c.send_text("{not json").await;
    assert!(invalid_message(&mut c).await.starts_with("invalid JSON: "));
    // The identify still works after them.
    c.send_text(&identify_frame(
        Some("controller"),
        Some("111111"),
        Some("tok"),
    ))
    .await;
    c.recv_type("cr_welcome").await;

    c.send_text("{not json").await;
    assert!(invalid_message(&mut c).await.starts_with("invalid JSON: "));
    c.send_text("[1,2]").await;
    invalid_message(&mut c).await;
    c.ws.send(Message::binary(&b"{\"type\":\"cr_alive\"}"[..]))
        .await
        .unwrap();
    assert_eq!(
        invalid_message(&mut c).await,
        "binary frames are not part of the protocol; send JSON as a text frame"
    );
    c.send_text(r#"{"type":"join","sessionId":"s","deviceId":"d"}"#)
        .await;
    assert_eq!(
        invalid_message(&mut c).await,
        "unknown message type `join`; expected one of: cr_identify, cr_event, cr_alive"
    );
    c.send_text(&identify_frame(
        Some("controller"),
        Some("111111"),
        Some("tok"),
    ))
    .await;
    assert_eq!(
        invalid_message(&mut c).await,
        "cr_identify: this connection has already identified"
    );
    c.send_text(&event_frame("12345", "ping")).await;
    assert_eq!(
        invalid_message(&mut c).await,
        "cr_event: field `recipientClientId` must be 6 ASCII digits"
    );
    c.send_text(
        &json!({"type": "cr_event", "recipientClientId": 222222, "eventType": "ping"}).to_string(),
    )
    .await;
    invalid_message(&mut c).await;
    c.send_text(&event_frame("222222", "bad-type")).await;
    invalid_message(&mut c).await;
    c.send_text(
        &json!({"type": "cr_event", "recipientClientId": "222222", "eventType": "ping",
                "eventParams": ["a,b"]})
        .to_string(),
    )
    .await;
    assert!(invalid_message(&mut c).await.contains("eventParams"));
    // Still identified and served, and events still reach a partner.
    assert_served(&mut c).await;
    let mut rsp = ws_identified(addr, "alpha", "responder", "222222").await;
    c.send_text(&event_frame("222222", "ping")).await;
    assert_eq!(
        recv_event(&mut rsp).await,
        server_event("ping", "", &[], false, false, true, None, "111111")
    );
}

#[tokio::test]
async fn a_silent_identified_connection_is_aborted_client_not_alive_in_the_window() {
    let (timeout, interval) = (Duration::from_secs(1), Duration::from_millis(100));
    let server = start_with(fast_alive_config(timeout, interval)).await;
    let mut c = ws_open(server.local_addr(), "alpha").await;
    c.send_text(&identify_frame(
        Some("controller"),
        Some("111111"),
        Some("tok"),
    ))
    .await;
    c.recv_type("cr_welcome").await;
    // The last refresh: this cr_alive (sent after `sent`, answered before `answered`).
    let sent = Instant::now();
    c.send_text(r#"{"type":"cr_alive"}"#).await;
    c.recv_type("cr_alive").await;
    let answered = Instant::now();
    let (seen, end) = c.recv_end().await;
    let at = Instant::now();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        without_timestamp(seen[0].clone()),
        json!({"type": "cr_aborted", "reason": "clientNotAlive"})
    );
    assert_eq!(end, Ended::Close(1000, "clientNotAlive".into()));
    assert!(
        at - sent >= timeout,
        "aborted {:?} after the last refresh",
        at - sent
    );
    assert!(
        at - answered <= timeout + interval + Duration::from_millis(500),
        "aborted {:?} after the last refresh",
        at - answered
    );
}

#[tokio::test]
async fn a_connection_kept_busy_by_delivered_events_is_not_aborted() {
    let (timeout, interval) = (Duration::from_secs(1), Duration::from_millis(100));
    let server = start_with(fast_alive_config(timeout, interval)).await;
    let addr = server.local_addr();
    let mut ctl = ws_identified(addr, "alpha", "controller", "111111").await;
    let mut rsp = ws_identified(addr, "alpha", "responder", "222222").await;
    // The responder sends nothing for 2.5 timeouts; events delivered to it keep it alive.
    let until = Instant::now() + timeout * 5 / 2;
    let mut n = 0;
    while Instant::now() < until {
        ctl.send_text(&event_frame("222222", "tick")).await;
        assert_eq!(
            recv_event(&mut rsp).await,
            server_event("tick", "", &[], false, false, true, None, "111111")
        );
        n += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(n >= 10);
    assert_served(&mut rsp).await;
    assert_served(&mut ctl).await;
}

#[tokio::test]
async fn no_identify_within_the_alive_timeout_closes_1000_without_cr_aborted() {
    let (timeout, interval) = (Duration::from_secs(1), Duration::from_millis(100));
    let server = start_with(fast_alive_config(timeout, interval)).await;
    let opened = Instant::now();
    let mut c = ws_open(server.local_addr(), "alpha").await;
    let connected = Instant::now();
    let (seen, end) = c.recv_end().await;
    let at = Instant::now();
    assert_eq!(seen, Vec::<serde_json::Value>::new());
    assert_eq!(
        end,
        Ended::Close(1000, "no identify within the alive timeout".into())
    );
    assert!(at - opened >= timeout, "closed after {:?}", at - opened);
    assert!(
        at - connected <= timeout + interval + Duration::from_millis(500),
        "closed after {:?}",
        at - connected
    );
}

#[tokio::test]
async fn an_upgrade_to_an_unknown_app_is_refused_404_before_the_upgrade() {
    let server = start_with(pairing_config()).await;
    let r = raw_request(
        server.local_addr(),
        "GET /crsocket/nope/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.head);
    assert_eq!(
        String::from_utf8(r.body).unwrap(),
        r#"{"code":"app_not_found","message":"no pairing app `nope`"}"#
    );
}

#[tokio::test]
async fn a_plain_get_on_the_pairing_websocket_answers_426() {
    let server = start_with(pairing_config()).await;
    let r = reqwest::get(format!("{}/crsocket/alpha/ws", http(&server)))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 426);
    assert_eq!(
        r.headers()
            .get("upgrade")
            .map(|v| v.to_str().unwrap().to_ascii_lowercase()),
        Some("websocket".to_string())
    );
}

#[tokio::test]
async fn without_apps_every_crsocket_path_answers_404() {
    let server = start_with(ServerConfig {
        apps: Vec::new(),
        ..pairing_config()
    })
    .await;
    let base = http(&server);
    for path in [
        "/crsocket/alpha/ws",
        "/crsocket/alpha/clientid/",
        "/crsocket/alpha/clientid",
        "/crsocket/alpha/eventsource/?clientId=111111&clientRole=controller&accessToken=t",
        "/crsocket/alpha/sendevent/?clientId=111111",
        "/crsocket/alpha/controller/index.html",
        "/crsocket/",
    ] {
        let r = reqwest::get(format!("{base}{path}")).await.unwrap();
        assert_eq!(r.status().as_u16(), 404, "{path}");
    }
    let r = raw_request(
        server.local_addr(),
        "GET /crsocket/alpha/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.head);
}

#[tokio::test]
async fn shutdown_closes_pairing_websockets_1001_identified_or_not() {
    let server = start_with(pairing_config()).await;
    let addr = server.local_addr();
    let mut identified = ws_identified(addr, "alpha", "controller", "111111").await;
    let mut fresh = ws_open(addr, "beta").await;
    let started = Instant::now();
    let shutdown = tokio::spawn(server.shutdown());
    for c in [&mut identified, &mut fresh] {
        let (seen, end) = c.recv_end().await;
        assert_eq!(seen, Vec::<serde_json::Value>::new(), "no cr_aborted");
        assert_eq!(end, Ended::Close(1001, "server shutting down".into()));
    }
    tokio::time::timeout(Duration::from_secs(2), shutdown)
        .await
        .expect("shutdown held up by pairing sockets")
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "drain-timeout 5 s"
    );
}
