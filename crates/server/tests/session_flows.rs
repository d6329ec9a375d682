//! Every seed-001 flow against the real server over loopback WebSockets.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use loudsync_protocol::{close_code, ClientMessage, DeviceInfo, DeviceType, Join, RawJson};
use serde_json::{json, Number, Value};

#[tokio::test]
async fn host_opens_a_session_and_members_join() {
    let server = start().await;
    let addr = server.local_addr();
    let mut host = Client::connect(addr).await;
    host.send(&ClientMessage::Join(Join {
        session_id: Some("abc123".into()),
        device_info: DeviceInfo {
            id: "device-host".into(),
            name: "Rishad's MacBook".into(),
            kind: DeviceType::Host,
        },
        session_name: Some("Rishad's Party".into()),
        protocol_version: None,
        password: None,
        token: None,
    }))
    .await;
    let welcome = host.recv_type("welcome").await;
    let host_id = welcome["clientId"].as_str().unwrap().to_string();
    assert_ne!(
        host_id, "device-host",
        "member ids are server-assigned, not device ids"
    );
    assert_eq!(
        welcome["sessionInfo"],
        json!({"id": "abc123", "name": "Rishad's Party", "hostId": host_id})
    );
    let list = host.recv_type("member_list").await;
    assert_eq!(list["members"].as_array().unwrap().len(), 1);
    assert_eq!(list["members"][0]["id"], host_id);
    assert_eq!(list["members"][0]["isHost"], true);
    assert_eq!(list["members"][0]["name"], "Rishad's MacBook");
    assert_eq!(list["members"][0]["connectionStatus"], "connected");
    assert!(list["members"][0]["joinedAt"].as_u64().unwrap() > 1_700_000_000_000);

    let (mut guest, gw, glist) = join(addr, "abc123", "device-456", "client").await;
    let guest_id = gw["clientId"].as_str().unwrap().to_string();
    assert_eq!(gw["sessionInfo"]["hostId"], host_id);
    let ids: Vec<_> = glist["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!(host_id), json!(guest_id)]);

    let joined = host.recv_type("member_joined").await;
    assert_eq!(joined["member"]["id"], guest_id);
    assert_eq!(joined["member"]["name"], "device-456 name");
    assert_eq!(joined["member"]["isHost"], false);
    // The joiner never gets its own member_joined.
    guest.expect_silence(Duration::from_millis(150)).await;

    // The /ws path works the same way, and a third member sees host first then join order.
    let mut third = Client::connect_path(addr, "/ws").await;
    third
        .send(&join_msg("abc123", "device-789", "client"))
        .await;
    let tw = third.recv_type("welcome").await;
    let tl = third.recv_type("member_list").await;
    let ids: Vec<_> = tl["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(
        ids,
        vec![json!(host_id), json!(guest_id), tw["clientId"].clone()]
    );
    host.recv_type("member_joined").await;
    guest.recv_type("member_joined").await;
}

#[tokio::test]
async fn default_session_name_comes_from_the_host_device() {
    let server = start().await;
    let (_h, w, _) = join(server.local_addr(), "s-name", "mac", "host").await;
    assert_eq!(w["sessionInfo"]["name"], "mac name's session");
}

#[tokio::test]
async fn join_rejections_send_the_error_then_close_1000() {
    let mut config = test_config();
    config.max_members = 2;
    let server = start_with(config).await;
    let addr = server.local_addr();

    let expect_rejection = |session: &'static str,
                            device: &'static str,
                            kind: &'static str,
                            code: &'static str| async move {
        let mut c = Client::connect(addr).await;
        c.send(&join_msg(session, device, kind)).await;
        let (msgs, end) = c.recv_end().await;
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert_eq!(msgs[0]["type"], "error");
        assert_eq!(msgs[0]["code"], code, "{}", msgs[0]);
        assert!(msgs[0]["message"].as_str().unwrap().len() > 5);
        assert!(
            matches!(end, Ended::Close(close_code::NORMAL, _)),
            "{end:?}"
        );
        msgs[0].clone()
    };

    expect_rejection("nope", "d1", "client", "session_not_found").await;

    let (_host, _, _) = join(addr, "s1", "host-dev", "host").await;
    expect_rejection("s1", "host-dev", "client", "already_joined").await;
    expect_rejection("s1", "other-host", "host", "unauthorized").await;
    let (_c1, _, _) = join(addr, "s1", "d1", "client").await;
    let full = expect_rejection("s1", "d2", "client", "session_full").await;
    assert_eq!(
        full["details"],
        json!({"maxMembers": 2, "currentMembers": 2})
    );

    let mut c = Client::connect(addr).await;
    let mut join = join_fields("s1", "d3", "client");
    join.protocol_version = Some("2.0".into());
    c.send(&ClientMessage::Join(join)).await;
    let (msgs, end) = c.recv_end().await;
    assert_eq!(msgs[0]["code"], "version_mismatch");
    assert!(matches!(end, Ended::Close(close_code::NORMAL, _)));
}

#[tokio::test]
async fn compatible_protocol_version_joins() {
    let server = start().await;
    let mut c = Client::connect(server.local_addr()).await;
    let mut join = join_fields("v", "h", "host");
    join.protocol_version = Some("1.3".into());
    c.send(&ClientMessage::Join(join)).await;
    c.recv_type("welcome").await;
}

#[tokio::test]
async fn leave_notifies_others_and_the_server_closes_the_socket() {
    let server = start().await;
    let (mut clients, ids) = party(server.local_addr(), "s", 2).await;
    clients[1].send(&ClientMessage::leave(Some("bye"))).await;
    let (msgs, end) = clients[1].recv_end().await;
    assert!(msgs.is_empty(), "{msgs:?}");
    assert!(
        matches!(end, Ended::Close(close_code::NORMAL, _)),
        "{end:?}"
    );
    for i in [0, 2] {
        let left = clients[i].recv_type("member_left").await;
        assert_eq!(left["memberId"], ids[1]);
        assert_eq!(left["reason"], "left");
    }
}

#[tokio::test]
async fn a_socket_that_closes_without_leave_is_reported_as_error() {
    let server = start().await;
    let (mut clients, ids) = party(server.local_addr(), "s", 2).await;
    let gone = clients.remove(2);
    drop(gone); // TCP close, no close frame, no leave
    let left = clients[0].recv_type("member_left").await;
    assert_eq!(left["memberId"], ids[2]);
    assert_eq!(left["reason"], "error");

    // A clean WebSocket close without leave is also "error".
    let mut c = clients.remove(1);
    c.ws.close().await.unwrap();
    let left = clients[0].recv_type("member_left").await;
    assert_eq!(left["memberId"], ids[1]);
    assert_eq!(left["reason"], "error");
}

#[tokio::test]
async fn silent_members_time_out_and_heartbeats_keep_members_alive() {
    let server = start().await; // timeout 400 ms, checked every 50 ms
    let (mut clients, ids) = party(server.local_addr(), "s", 2).await;
    // The host and client 1 heartbeat every 100 ms for 900 ms; client 2 stays silent (its
    // library still answers the server's WebSocket pings, which must not count).
    let mut silent = clients.remove(2);
    let beaters: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for _ in 0..9 {
                    c.send(&ClientMessage::Heartbeat).await;
                    if let Ok(v) = tokio::time::timeout(Duration::from_millis(100), c.recv()).await
                    {
                        seen.push(v);
                    }
                }
                (c, seen)
            })
        })
        .collect();
    let (_, end) = silent.recv_end().await;
    assert!(
        matches!(end, Ended::Close(close_code::NORMAL, _)),
        "{end:?}"
    );
    // Keep every client until all are checked: dropping the host would end the session.
    let mut alive = Vec::new();
    for b in beaters {
        let (c, seen) = b.await.unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0]["type"], "member_left");
        assert_eq!(seen[0]["memberId"], ids[2]);
        assert_eq!(seen[0]["reason"], "timeout");
        alive.push(c);
    }
    for c in alive.iter_mut() {
        c.assert_alive().await;
    }
}

#[tokio::test]
async fn websocket_control_frames_do_not_keep_a_member_alive() {
    let server = start().await; // timeout 400 ms
    let (mut clients, ids) = party(server.local_addr(), "s", 1).await;
    let mut pinger = clients.remove(1);
    let mut host = clients.remove(0);
    let host_task = tokio::spawn(async move {
        for _ in 0..12 {
            host.send(&ClientMessage::Heartbeat).await;
            if let Ok(v) = tokio::time::timeout(Duration::from_millis(100), host.recv()).await {
                return v;
            }
        }
        panic!("no member_left for the member that only sent control frames");
    });
    // Only WebSocket pings (and the library's pongs to the server's pings) from this member.
    let mut closed = None;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    let mut next_ping = tokio::time::Instant::now();
    while closed.is_none() && tokio::time::Instant::now() < deadline {
        if tokio::time::Instant::now() >= next_ping {
            next_ping += Duration::from_millis(100);
            let ping = tokio_websockets::Message::ping("x");
            if pinger.ws.send(ping).await.is_err() {
                break;
            }
        }
        match tokio::time::timeout_at(next_ping, pinger.ws.next()).await {
            Ok(Some(Ok(m))) if m.is_close() => closed = m.as_close().map(|(c, _)| u16::from(c)),
            // Pongs to our pings, and the server's latency pings (the library answers them).
            Ok(Some(Ok(m))) => assert!(m.is_pong() || m.is_ping(), "got {m:?}"),
            Ok(other) => panic!("socket ended without a close frame: {other:?}"),
            Err(_) => {}
        }
    }
    assert_eq!(closed, Some(close_code::NORMAL));
    let left = host_task.await.unwrap();
    assert_eq!(left["type"], "member_left");
    assert_eq!(left["memberId"], ids[1]);
    assert_eq!(left["reason"], "timeout");
}

/// A member that floods WebSocket pings and never reads: pings are not liveness, the flood must
/// neither hold off the heartbeat check nor keep the closing socket alive, and what the server
/// owes it must stay bounded (reading pauses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_that_never_reads_is_timed_out_and_dropped() {
    let server = start().await; // heartbeat timeout 400 ms, close timeout 300 ms
    let (mut clients, ids) = party(server.local_addr(), "s", 1).await;
    let mut flooder = clients.remove(1);
    let mut host = clients.remove(0);
    let flood = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let payload = vec![7u8; 125];
        while started.elapsed() < Duration::from_secs(5) {
            let ping = tokio_websockets::Message::ping(payload.clone());
            match tokio::time::timeout(Duration::from_millis(50), flooder.ws.send(ping)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Some(started.elapsed()), // the server dropped us
                Err(_) => {}                                  // blocked: the server stopped reading
            }
        }
        None
    });
    let mut left = None;
    for _ in 0..40 {
        host.send(&ClientMessage::Heartbeat).await;
        if let Ok(v) = tokio::time::timeout(Duration::from_millis(100), host.recv()).await {
            left = Some(v);
            break;
        }
    }
    let left = left.expect("the flooding member was removed");
    assert_eq!(left["memberId"], ids[1]);
    assert_eq!(left["reason"], "timeout");
    let dropped = flood.await.unwrap();
    assert!(dropped.is_some(), "the flooder's socket was never dropped");
}

#[tokio::test]
async fn ping_gets_pong_with_the_same_timestamp() {
    let server = start().await;
    let mut c = Client::connect(server.local_addr()).await;
    for ts in [
        Number::from(1706889650000u64),
        Number::from(-3i64),
        Number::from(0u64),
        Number::from(18446744073709551615u64),
    ] {
        c.send(&ClientMessage::ping(ts.clone())).await;
        let pong = c.recv_type("pong").await;
        assert_eq!(pong["timestamp"], Value::Number(ts));
        assert_eq!(pong.as_object().unwrap().len(), 2, "{pong}");
    }
}

#[tokio::test]
async fn latency_is_measured_by_the_server_and_reported() {
    let server = start().await; // latency pings every 100 ms
    let (mut clients, _) = party(server.local_addr(), "s", 1).await;
    let mut reported = false;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Reading drives the client library's automatic pong replies.
        clients[1].send(&ClientMessage::MemberList).await;
        let list = clients[1].recv_type("member_list").await;
        clients[0].send(&ClientMessage::Heartbeat).await;
        let _ = tokio::time::timeout(Duration::from_millis(1), clients[0].recv()).await;
        if list["members"][1]["latency"].is_u64() {
            assert!(list["members"][1]["latency"].as_u64().unwrap() < 1000);
            reported = true;
            break;
        }
    }
    assert!(reported, "latency never appeared in member_list");
}

#[tokio::test]
async fn host_kicks_a_member() {
    let server = start().await;
    let (mut clients, ids) = party(server.local_addr(), "s", 2).await;
    clients[0]
        .send(&ClientMessage::kick(&ids[1], Some("too loud")))
        .await;
    let (msgs, end) = clients[1].recv_end().await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["type"], "kicked");
    assert_eq!(msgs[0]["reason"], "too loud");
    assert!(matches!(end, Ended::Close(close_code::NORMAL, _)));
    for i in [0, 2] {
        let left = clients[i].recv_type("member_left").await;
        assert_eq!(left["memberId"], ids[1]);
        assert_eq!(left["reason"], "kicked");
    }
}

#[tokio::test]
async fn kick_from_a_non_host_is_unauthorized_and_unknown_targets_are_invalid() {
    let server = start().await;
    let (mut clients, ids) = party(server.local_addr(), "s", 2).await;
    clients[1].send(&ClientMessage::kick(&ids[2], None)).await;
    let e = clients[1].recv_type("error").await;
    assert_eq!(e["code"], "unauthorized");
    clients[1].assert_alive().await;
    clients[2].expect_silence(Duration::from_millis(100)).await;
    clients[0].send(&ClientMessage::kick("ghost", None)).await;
    let e = clients[0].recv_type("error").await;
    assert_eq!(e["code"], "invalid_message");
    assert!(e["message"].as_str().unwrap().contains("ghost"));
}

#[tokio::test]
async fn member_list_on_request() {
    let server = start().await;
    let (mut clients, ids) = party(server.local_addr(), "s", 1).await;
    clients[1].send(&ClientMessage::MemberList).await;
    let list = clients[1].recv_type("member_list").await;
    let got: Vec<_> = list["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, ids);
}

#[tokio::test]
async fn application_messages_broadcast_or_direct_in_order() {
    let server = start().await;
    let (mut clients, ids) = party(server.local_addr(), "s", 2).await;
    for i in 0..20 {
        clients[1]
            .send(&message(json!({"seq": i, "track": "x"}), None))
            .await;
    }
    for r in [0, 2] {
        for i in 0..20 {
            let m = clients[r].recv_type("message").await;
            assert_eq!(m["from"], ids[1]);
            assert_eq!(m["data"], json!({"seq": i, "track": "x"}));
        }
    }
    clients[1].expect_silence(Duration::from_millis(100)).await;
    // Direct.
    clients[2]
        .send(&message(json!([1, 2]), Some(&ids[0])))
        .await;
    let m = clients[0].recv_type("message").await;
    assert_eq!(m["from"], ids[2]);
    assert_eq!(m["data"], json!([1, 2]));
    clients[1].expect_silence(Duration::from_millis(100)).await;
    // To nobody.
    clients[2].send(&message(json!(1), Some("ghost"))).await;
    assert_eq!(
        clients[2].recv_type("error").await["code"],
        "invalid_message"
    );
}

#[tokio::test]
async fn application_data_is_relayed_byte_for_byte() {
    let server = start().await;
    let (mut clients, _ids) = party(server.local_addr(), "raw", 1).await;
    // Key order, big integers, exponents, negative zero and inner whitespace survive the relay.
    for data in [
        r#"{"b":1,"a":2}"#,
        "12345678901234567890123",
        "[1e2,-0]",
        r#"{ "nested" : [ 1.50, "\u00e9" ] }"#,
    ] {
        let data = RawJson::from_text(data).unwrap();
        clients[1]
            .send(&ClientMessage::message(data.clone(), None))
            .await;
        let data = data.get();
        let raw = clients[0].recv_raw().await;
        assert!(
            raw.contains(&format!(r#""data":{data}"#)),
            "data rebuilt: sent {data}, got {raw}"
        );
    }
    // Invalid JSON inside `data` is still refused, and the sender stays.
    clients[1]
        .send_text(r#"{"type":"message","data":[1,}"#)
        .await;
    let e = clients[1].recv_type("error").await;
    assert_eq!(e["code"], "invalid_message");
    clients[1].assert_alive().await;
}

#[tokio::test]
async fn oversized_application_message_gets_an_error_and_the_socket_stays() {
    let mut config = test_config();
    config.max_data_bytes = 1000;
    let server = start_with(config).await;
    let (mut clients, _) = party(server.local_addr(), "s", 1).await;
    clients[1]
        .send(&message(json!("x".repeat(2000)), None))
        .await;
    let e = clients[1].recv_type("error").await;
    assert_eq!(e["code"], "too_large");
    clients[0].expect_silence(Duration::from_millis(100)).await;
    clients[1].assert_alive().await;
}

#[tokio::test]
async fn host_leave_closes_the_session_for_everyone() {
    let server = start().await;
    let base = http(&server);
    let (mut clients, _) = party(server.local_addr(), "s", 2).await;
    clients[0].send(&ClientMessage::leave(None)).await;
    for c in clients.iter_mut() {
        let (msgs, end) = c.recv_end().await;
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert_eq!(msgs[0]["type"], "session_closed");
        assert!(msgs[0]["reason"].is_string());
        assert!(
            matches!(end, Ended::Close(close_code::NORMAL, _)),
            "{end:?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let status = reqwest::get(format!("{base}/v1/sessions/s"))
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
    // The id can be used again.
    let (_h, _, _) = join(server.local_addr(), "s", "new-host", "host").await;
}

#[tokio::test]
async fn host_socket_drop_ends_the_session() {
    let server = start().await;
    let (mut clients, _) = party(server.local_addr(), "s", 2).await;
    drop(clients.remove(0));
    for c in clients.iter_mut() {
        let (msgs, end) = c.recv_end().await;
        assert_eq!(msgs[0]["type"], "session_closed");
        assert_eq!(msgs[0]["reason"], "Host disconnected");
        assert!(matches!(end, Ended::Close(close_code::NORMAL, _)));
    }
}

#[tokio::test]
async fn bad_input_gets_invalid_message_and_the_socket_survives() {
    let server = start().await;
    let (mut clients, _) = party(server.local_addr(), "s", 1).await;
    let mut fresh = Client::connect(server.local_addr()).await;
    let cases: Vec<(&str, &str)> = vec![
        ("{not json", "invalid JSON"),
        ("[1,2,3]", "must be a JSON object"),
        (r#"{"type":"dance"}"#, "unknown message type `dance`"),
        (r#"{"timestamp":1}"#, "missing field `type`"),
        (
            r#"{"type":"kick","memberId":42}"#,
            "kick: in `memberId`: invalid type",
        ),
        (
            r#"{"type":"join","sessionId":"s"}"#,
            "join: missing field `deviceInfo`",
        ),
        (
            r#"{"type":"join","sessionId":"s","deviceInfo":{"id":"x","name":"y","type":"boss"}}"#,
            "unknown variant `boss`",
        ),
        (
            r#"{"type":"ping","timestamp":"soon"}"#,
            "ping: in `timestamp`: invalid type",
        ),
    ];
    for c in [&mut clients[1], &mut fresh] {
        for (text, needle) in &cases {
            c.send_text(text).await;
            let e = c.recv_type("error").await;
            assert_eq!(e["code"], "invalid_message", "{text}");
            assert!(
                e["message"].as_str().unwrap().contains(needle),
                "{text}: {e}"
            );
        }
        c.ws.send(tokio_websockets::Message::binary(vec![1u8, 2, 3]))
            .await
            .unwrap();
        let e = c.recv_type("error").await;
        assert_eq!(e["code"], "invalid_message");
        assert!(e["message"].as_str().unwrap().contains("binary"));
        c.assert_alive().await;
    }
    // Session messages before join.
    for msg in [
        ClientMessage::leave(None),
        ClientMessage::MemberList,
        message(json!(1), None),
    ] {
        fresh.send(&msg).await;
        let e = fresh.recv_type("error").await;
        assert_eq!(e["code"], "invalid_message");
        assert!(e["message"].as_str().unwrap().contains("join"));
    }
    // A bad join did not use up the connection: it can still join.
    fresh.send(&join_msg("s", "late", "client")).await;
    fresh.recv_type("welcome").await;
    // Nobody else heard any of it but the join.
    assert_eq!(clients[0].recv().await["type"], "member_joined");
}

#[tokio::test]
async fn a_frame_over_the_size_limit_closes_with_1009() {
    let mut config = test_config();
    config.max_message_bytes = 1024;
    config.max_state_bytes = 512;
    config.outbound_queue_bytes = 4096;
    let server = start_with(config).await;
    let (mut clients, ids) = party(server.local_addr(), "s", 1).await;
    clients[1]
        .send(&message(json!("y".repeat(2000)), None))
        .await;
    let (_, end) = clients[1].recv_end().await;
    assert!(
        matches!(end, Ended::Close(close_code::MESSAGE_TOO_BIG, _)),
        "{end:?}"
    );
    let left = clients[0].recv_type("member_left").await;
    assert_eq!(left["memberId"], ids[1]);
    assert_eq!(left["reason"], "error");
}

#[tokio::test]
async fn a_fragmented_message_over_the_size_limit_also_closes_with_1009() {
    let mut config = test_config();
    config.max_message_bytes = 1024;
    config.max_state_bytes = 512;
    config.outbound_queue_bytes = 4096;
    let server = start_with(config).await;
    let addr = server.local_addr();
    let (mut host, _, _) = join(addr, "s", "h", "host").await;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut c = Client::connect_with(
        addr,
        "/",
        tcp,
        tokio_websockets::Config::default().frame_size(256),
    )
    .await;
    c.send(&join_msg("s", "frag", "client")).await;
    c.recv_type("welcome").await;
    c.recv_type("member_list").await;
    host.recv_type("member_joined").await;
    // Eight frames of 256 bytes: each under the limit, the message over it.
    c.send(&message(json!("y".repeat(2000)), None)).await;
    let (_, end) = c.recv_end().await;
    assert!(
        matches!(end, Ended::Close(close_code::MESSAGE_TOO_BIG, _)),
        "{end:?}"
    );
    assert_eq!(host.recv_type("member_left").await["reason"], "error");
}

// Multi-threaded, so the session task races the socket task: the 1008 must still win.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_member_gets_rate_limited_then_closed_1008() {
    let mut config = test_config();
    config.rate_limit = 20;
    config.rate_burst = 10;
    let server = start_with(config).await;
    let (mut clients, ids) = party(server.local_addr(), "s", 1).await;
    for _ in 0..40 {
        clients[1].send(&ClientMessage::Heartbeat).await;
    }
    let (msgs, end) = clients[1].recv_end().await;
    assert_eq!(
        msgs.len(),
        1,
        "one error, not one per dropped message: {msgs:?}"
    );
    assert_eq!(msgs[0]["code"], "rate_limited");
    assert!(
        matches!(end, Ended::Close(close_code::POLICY_VIOLATION, _)),
        "{end:?}"
    );
    let left = clients[0].recv_type("member_left").await;
    assert_eq!(left["memberId"], ids[1]);
}

#[tokio::test]
async fn rate_limited_member_that_slows_down_stays() {
    let mut config = test_config();
    config.rate_limit = 20;
    config.rate_burst = 10;
    let server = start_with(config).await;
    let (mut clients, _) = party(server.local_addr(), "s", 1).await;
    for _ in 0..12 {
        clients[1].send(&ClientMessage::Heartbeat).await;
    }
    assert_eq!(clients[1].recv_type("error").await["code"], "rate_limited");
    // Slowed down, it is served again. (On a starved machine the server may process the
    // flood and the first pings together, so a ping may still be dropped: retry, slowly.)
    let mut served = false;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        clients[1].send(&ClientMessage::ping(9u64)).await;
        // A ping dropped after the first error gets no reply at all.
        let Ok(reply) = tokio::time::timeout(Duration::from_millis(300), clients[1].recv()).await
        else {
            continue;
        };
        if reply["type"] == "pong" {
            served = true;
            break;
        }
        assert_eq!(reply["code"], "rate_limited", "{reply}");
    }
    assert!(served, "never served again after slowing down");
}

#[tokio::test]
async fn a_member_that_does_not_read_is_disconnected_not_buffered_forever() {
    let mut config = test_config();
    config.rate_limit = 0;
    config.max_message_bytes = 64 * 1024;
    config.max_data_bytes = 64 * 1024;
    config.outbound_queue_bytes = 64 * 1024;
    config.heartbeat_timeout = Duration::from_secs(30);
    let server = start_with(config).await;
    let addr = server.local_addr();
    let (mut host, _, _) = join(addr, "s", "h", "host").await;
    // A reader with a tiny receive buffer that never reads after joining.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let mut slow = Client::connect_on(addr, "/", tcp).await;
    slow.send(&join_msg("s", "slow", "client")).await;
    let slow_id = slow.recv_type("welcome").await["clientId"].clone();
    slow.recv_type("member_list").await;
    host.recv_type("member_joined").await;
    let chunk = message(json!("z".repeat(60 * 1024)), None);
    let mut dropped = None;
    for _ in 0..2000 {
        host.send(&chunk).await;
        if let Ok(v) = tokio::time::timeout(Duration::from_millis(1), host.recv()).await {
            dropped = Some(v);
            break;
        }
    }
    let left = dropped.expect("the slow member was never dropped");
    assert_eq!(left["type"], "member_left");
    assert_eq!(left["memberId"], slow_id);
    assert_eq!(left["reason"], "error");
    let metrics = reqwest::get(format!("{}/metrics", http(&server)))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("loudsync_slow_consumer_disconnects_total"),
        "{metrics}"
    );
    host.assert_alive().await;
}

#[tokio::test]
async fn shutdown_closes_every_member_with_session_closed_and_1001() {
    let server = start().await;
    let addr = server.local_addr();
    let (mut clients, _) = party(addr, "s", 1).await;
    let mut idle = Client::connect(addr).await;
    let stopping = tokio::spawn(server.shutdown());
    for c in clients.iter_mut() {
        let (msgs, end) = c.recv_end().await;
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert_eq!(msgs[0]["type"], "session_closed");
        assert_eq!(msgs[0]["reason"], "Server shutting down");
        assert!(
            matches!(end, Ended::Close(close_code::GOING_AWAY, _)),
            "{end:?}"
        );
    }
    let (_, end) = idle.recv_end().await;
    assert!(
        matches!(end, Ended::Close(close_code::GOING_AWAY, _)),
        "{end:?}"
    );
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("shutdown finished")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting"
    );
}
