//! LOUDSYNC app clients, unchanged, against the real server: frames exactly as the app's
//! client sends them, every message type, both dialects in one session, every reply checked
//! field by field.

mod common;

use std::time::Duration;

use common::*;
use loudsync_protocol::{app, close_code, ClientMessage, DeviceType};
use serde_json::{json, Value};

const SESSION: &str = "K7P-3XQ";

const APP_DEVICE: &str = "loudsync_1738940000000_k3j9x2m1q";

/// The app's `JOIN`, as its client sends it.
async fn app_join(c: &mut Client, device: &str, name: &str) {
    let join = ClientMessage::join(SESSION, device, name, DeviceType::Client);
    let ctx =
        app::ClientContext::new(device, 1738941234567).with_message_id("msg_1738941234567_4fzq8ab");
    c.send_app(&join, &ctx).await;
}

async fn app_heartbeat(c: &mut Client, device: &str) {
    let ctx = app::ClientContext::new(device, 1738941239567);
    c.send_app(&ClientMessage::Heartbeat, &ctx).await;
}

async fn app_ping(c: &mut Client, ts: u64) {
    let ctx = app::ClientContext::new(APP_DEVICE, ts);
    c.send_app(&ClientMessage::ping(ts), &ctx).await;
}

async fn app_leave(c: &mut Client, device: &str, reason: &str) {
    let ctx =
        app::ClientContext::new(device, 1738941300000).with_message_id("msg_1738941300000_l3v4e5x");
    c.send_app(&ClientMessage::leave(Some(reason)), &ctx).await;
}

/// Our host's `join`, opening the session as "Friday Jam".
fn host_join() -> ClientMessage {
    let mut join = join_fields(SESSION, "host-device", "host");
    join.device_info.name = "Device 7".into();
    join.session_name = Some("Friday Jam".into());
    ClientMessage::Join(join)
}

/// Checks the app's envelope: UPPERCASE type, timestamp, messageId where the app has one,
/// payload object; returns the payload.
fn envelope(v: &Value, kind: &str) -> Value {
    assert_eq!(v["type"], kind, "{v}");
    assert!(v["timestamp"].as_u64().unwrap() > 1_700_000_000_000, "{v}");
    let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    if kind == "PONG" {
        assert!(v.get("messageId").is_none(), "{v}");
        assert_eq!(keys.len(), 3, "{v}");
    } else {
        let id = v["messageId"].as_str().expect("messageId");
        let rest = id.strip_prefix("msg_").expect("msg_ prefix");
        let (ms, suffix) = rest.split_once('_').expect("msg_<ms>_<suffix>");
        assert!(ms.parse::<u64>().is_ok() && suffix.len() == 7, "{id}");
        assert_eq!(keys.len(), 4, "{v}");
    }
    assert!(v["payload"].is_object(), "{v}");
    v["payload"].clone()
}

/// A host of our dialect opening the session, and an app client joined to it.
async fn mixed_session() -> (loudsync_server::Server, Client, String, Client) {
    let server = start().await;
    let addr = server.local_addr();
    let mut host = Client::connect(addr).await;
    host.send(&host_join()).await;
    let host_id = host.recv_type("welcome").await["clientId"]
        .as_str()
        .unwrap()
        .to_string();
    host.recv_type("member_list").await;
    let mut app = Client::connect(addr).await;
    app_join(&mut app, "loudsync_1738940000000_k3j9x2m1q", "Device 42").await;
    app.recv().await; // WELCOME
    app.recv().await; // MEMBER_LIST
    host.recv_type("member_joined").await;
    (server, host, host_id, app)
}

#[tokio::test]
async fn an_app_client_joins_a_session_of_ours() {
    let server = start().await;
    let addr = server.local_addr();
    let mut host = Client::connect(addr).await;
    host.send(&host_join()).await;
    host.recv_type("welcome").await;
    host.recv_type("member_list").await;

    let mut app = Client::connect(addr).await;
    app_join(&mut app, "loudsync_1738940000000_k3j9x2m1q", "Device 42").await;
    let welcome = envelope(&app.recv().await, "WELCOME");
    assert_eq!(welcome["sessionId"], SESSION);
    assert_eq!(welcome["sessionName"], "Friday Jam");
    assert_eq!(
        welcome["hostId"], "host-device",
        "the host's device id, not its clientId"
    );
    assert_eq!(welcome["hostName"], "Device 7");
    assert_eq!(welcome["yourDeviceId"], "loudsync_1738940000000_k3j9x2m1q");
    assert!(welcome["connectedAt"].as_u64().unwrap() > 1_700_000_000_000);
    assert_eq!(welcome.as_object().unwrap().len(), 6);

    let list = envelope(&app.recv().await, "MEMBER_LIST");
    assert_eq!(list["totalCount"], 2);
    let members = list["members"].as_array().unwrap();
    let host_entry = &members[0];
    assert_eq!(host_entry["id"], "host-device");
    assert_eq!(host_entry["name"], "Device 7");
    assert_eq!(host_entry["role"], "host");
    assert_eq!(host_entry["connectionStatus"], "connected");
    assert!(host_entry["joinedAt"].is_u64() && host_entry["lastSeen"].is_u64());
    assert_eq!(host_entry["address"], "127.0.0.1");
    assert!(
        host_entry.get("latency").is_some(),
        "latency is present (null until measured)"
    );
    assert_eq!(members[1]["id"], "loudsync_1738940000000_k3j9x2m1q");
    assert_eq!(members[1]["role"], "client");
    assert_eq!(host_entry.as_object().unwrap().len(), 8);

    // Our host sees the app member under a server clientId.
    let joined = host.recv_type("member_joined").await;
    let member_id = joined["member"]["id"].as_str().unwrap();
    assert!(member_id.starts_with("c_"), "{joined}");
    assert_eq!(joined["member"]["name"], "Device 42");
    assert_eq!(joined["member"]["isHost"], false);
}

#[tokio::test]
async fn heartbeat_is_silent_and_ping_gets_the_apps_pong() {
    let (_server, _host, _, mut app) = mixed_session().await;
    app_heartbeat(&mut app, APP_DEVICE).await;
    app_ping(&mut app, 1738941239568).await;
    let pong = app.recv().await;
    let payload = envelope(&pong, "PONG");
    assert_eq!(payload["pingTimestamp"], 1738941239568u64);
    assert_eq!(payload["timestamp"], pong["timestamp"]);
    assert_eq!(payload.as_object().unwrap().len(), 2);
    // PONG from the app (its answer to a server PING) is accepted silently.
    let ctx = app::ClientContext {
        ping_timestamp: 0,
        ..app::ClientContext::new(APP_DEVICE, 1)
    };
    app.send_app(&ClientMessage::Pong, &ctx).await;
    app.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn both_dialects_see_each_other_join_message_and_leave() {
    let (server, mut host, host_id, mut app) = mixed_session().await;
    // One of ours joins: the app sees it by device id.
    let (mut ours, _, _) = join(server.local_addr(), SESSION, "tablet", "client").await;
    host.recv_type("member_joined").await;
    let joined = envelope(&app.recv().await, "MEMBER_JOINED");
    assert_eq!(joined["member"]["id"], "tablet");
    assert_eq!(joined["member"]["name"], "tablet name");
    assert_eq!(joined["member"]["role"], "client");
    assert_eq!(joined["member"]["address"], "127.0.0.1");

    // Application messages reach the app as MESSAGE, by device id.
    ours.send(&message(json!({"track": 3}), None)).await;
    host.recv_type("message").await;
    let msg = envelope(&app.recv().await, "MESSAGE");
    assert_eq!(
        msg,
        json!({"from": "tablet", "fromName": "tablet name", "data": {"track": 3}})
    );

    // The app leaves as the app does (LEAVE, then its own close): ours see reason "left".
    app_leave(&mut app, APP_DEVICE, "User left session").await;
    let left = host.recv_type("member_left").await;
    assert_eq!(left["reason"], "left");
    assert_ne!(left["memberId"], host_id);
    assert_eq!(
        ours.recv_type("member_left").await["memberId"],
        left["memberId"]
    );
    let (_, end) = app.recv_end().await;
    assert!(
        matches!(end, Ended::Close(close_code::NORMAL, _)),
        "{end:?}"
    );
}

#[tokio::test]
async fn the_app_sees_members_leave_by_device_id_with_its_reasons() {
    let (server, mut host, _, mut app) = mixed_session().await;
    let addr = server.local_addr();
    let mut app2 = Client::connect(addr).await;
    app_join(&mut app2, "second-device", "Device 9").await;
    app2.recv().await;
    app2.recv().await;
    host.recv_type("member_joined").await;
    assert_eq!(
        envelope(&app.recv().await, "MEMBER_JOINED")["member"]["id"],
        "second-device"
    );
    // The second app client's socket drops.
    drop(app2);
    let left = envelope(&app.recv().await, "MEMBER_LEFT");
    assert_eq!(
        left,
        json!({"deviceId": "second-device", "deviceName": "Device 9", "reason": "Connection closed"})
    );
    assert_eq!(host.recv_type("member_left").await["reason"], "error");
}

#[tokio::test]
async fn an_app_client_that_stops_heartbeating_times_out() {
    let (_server, mut host, _, mut app) = mixed_session().await; // timeout 400 ms
                                                                 // The app client keeps its socket open and sends nothing.
    let silent = tokio::spawn(async move { app.recv_end().await.1 });
    let mut left = None;
    for _ in 0..20 {
        host.send(&ClientMessage::Heartbeat).await;
        if let Ok(v) = tokio::time::timeout(Duration::from_millis(100), host.recv()).await {
            left = Some(v);
            break;
        }
    }
    assert_eq!(left.expect("member_left")["reason"], "timeout");
    // The app's own server's words for a timeout.
    assert_eq!(
        silent.await.unwrap(),
        Ended::Close(close_code::NORMAL, "Timeout".into())
    );
}

#[tokio::test]
async fn kick_and_session_end_reach_the_app_as_kicked_and_session_closed() {
    let (server, mut host, _, mut app) = mixed_session().await;
    let addr = server.local_addr();
    // Find the app member's clientId from our side.
    host.send(&ClientMessage::MemberList).await;
    let list = host.recv_type("member_list").await;
    let app_id = list["members"][1]["id"].as_str().unwrap().to_string();
    host.send(&ClientMessage::kick(&app_id, Some("Removed by host")))
        .await;
    let kicked = app.recv().await;
    assert_eq!(
        envelope(&kicked, "KICKED"),
        json!({"reason": "Removed by host"})
    );
    let (_, end) = app.recv_end().await;
    // As the app's own server: the kick's reason is the close reason.
    assert_eq!(
        end,
        Ended::Close(close_code::NORMAL, "Removed by host".into())
    );
    assert_eq!(host.recv_type("member_left").await["reason"], "kicked");

    let mut app2 = Client::connect(addr).await;
    app_join(&mut app2, "other-device", "Device 3").await;
    app2.recv().await;
    app2.recv().await;
    host.recv_type("member_joined").await;
    host.send(&ClientMessage::leave(None)).await;
    let closed = app2.recv().await;
    assert_eq!(
        envelope(&closed, "SESSION_CLOSED"),
        json!({"reason": "Host ended the session"})
    );
    let (_, end) = app2.recv_end().await;
    assert!(matches!(end, Ended::Close(close_code::NORMAL, _)));
}

#[tokio::test]
async fn app_join_errors_are_uppercase_and_close_with_1000() {
    let mut config = test_config();
    config.max_members = 2;
    let server = start_with(config).await;
    let addr = server.local_addr();
    let expect = |device: &'static str,
                  name: &'static str,
                  code: &'static str,
                  close_reason: &'static str| async move {
        let mut c = Client::connect(addr).await;
        app_join(&mut c, device, name).await;
        let (msgs, end) = c.recv_end().await;
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        let payload = envelope(&msgs[0], "ERROR");
        assert_eq!(payload["code"], code);
        assert!(payload["message"].as_str().unwrap().len() > 5);
        assert_eq!(payload.as_object().unwrap().len(), 2);
        // The app's own server's close reasons after its three refusals.
        assert_eq!(end, Ended::Close(close_code::NORMAL, close_reason.into()));
    };
    expect("d1", "Device 1", "SESSION_NOT_FOUND", "Invalid session").await;
    let mut host = Client::connect(addr).await;
    host.send(&join_msg(SESSION, "h", "host")).await;
    host.recv_type("welcome").await;
    let mut app = Client::connect(addr).await;
    app_join(&mut app, "d1", "Device 1").await;
    app.recv().await;
    expect("d1", "Device 1 again", "ALREADY_JOINED", "Already joined").await;
    expect("d2", "Device 2", "SESSION_FULL", "Session full").await; // the host counts
}

#[tokio::test]
async fn bad_app_frames_get_an_error_and_the_socket_stays() {
    let (_server, _host, _, mut app) = mixed_session().await;
    for (frame, needle) in [
        (
            r#"{"type":"DANCE","timestamp":1,"payload":{}}"#,
            "unknown message type `DANCE`",
        ),
        (
            r#"{"type":"PING","timestamp":1,"payload":{"timestamp":"soon"}}"#,
            "PING: payload.timestamp",
        ),
        (r#"{"type":"heartbeat"}"#, "payload"),
        ("{oops", "invalid JSON"),
    ] {
        app.send_text(frame).await;
        let payload = envelope(&app.recv().await, "ERROR");
        assert_eq!(payload["code"], "INVALID_MESSAGE");
        assert!(
            payload["message"].as_str().unwrap().contains(needle),
            "{frame}: {payload}"
        );
    }
    app_ping(&mut app, 5).await;
    assert_eq!(envelope(&app.recv().await, "PONG")["pingTimestamp"], 5);
}
