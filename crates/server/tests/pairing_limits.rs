//! The landed limits on pairing (issue 12, P13, P24, PROTOCOL §6), tested on the pairing
//! WebSocket as on `/ws`: the rate limit over every text and binary frame (`error`
//! `rate_limited` on the first drop, close 1008 at `rate-burst` + 1 drops in a row), close 1009
//! over `max-message-bytes`, `too_large` for an event whose SSE data string would pass 8192
//! characters, the outbound queue bound (a socket that does not read is closed 1008); and the
//! same rate limit per client id on `sendevent/` (excess dropped, 204).

mod common;

use std::time::{Duration, Instant};

use common::pairing::*;
use common::*;
use futures_util::SinkExt;
use loudsync_server::ServerConfig;
use serde_json::json;
use tokio_websockets::Message;

#[tokio::test]
async fn the_first_frame_over_the_rate_gets_rate_limited_then_burst_plus_one_drops_close_1008() {
    // One token a second, five in a burst: nothing refills while the test runs.
    let server = start_with(ServerConfig {
        rate_limit: 1,
        rate_burst: 5,
        ..pairing_config()
    })
    .await;
    let mut c = ws_identified(server.local_addr(), "alpha", "controller", "111111").await;
    // The identify took one token; each cr_alive takes one until the first is dropped.
    let mut admitted = 0;
    let error = loop {
        c.send_text(r#"{"type":"cr_alive"}"#).await;
        let v = c.recv().await;
        if v["type"] == "cr_alive" {
            admitted += 1;
            assert!(admitted <= 5, "more admitted than the burst");
            continue;
        }
        break without_timestamp(v);
    };
    assert_eq!(admitted, 4, "the burst of 5, less the identify");
    assert_eq!(
        error,
        json!({"type": "error", "code": "rate_limited",
               "message": "over the rate limit of 1 messages/s (burst 5); messages are dropped until the rate falls"})
    );
    // Drops 2..=5 (binary frames count too): dropped silently, the socket stays open.
    for n in 0..4 {
        if n % 2 == 0 {
            c.ws.send(Message::binary(&b"x"[..])).await.unwrap();
        } else {
            c.send_text(r#"{"type":"cr_alive"}"#).await;
        }
    }
    c.expect_silence(Duration::from_millis(150)).await;
    // Drop 6 = burst + 1: closed.
    c.send_text(r#"{"type":"cr_alive"}"#).await;
    let (seen, end) = c.recv_end().await;
    assert_eq!(seen, Vec::<serde_json::Value>::new());
    assert_eq!(end, Ended::Close(1008, "rate limit exceeded".into()));
}

// Multi-threaded, as the /ws flood test: a flood gets one error, then the 1008.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_pairing_socket_gets_one_rate_limited_then_close_1008() {
    let server = start_with(ServerConfig {
        rate_limit: 20,
        rate_burst: 10,
        ..pairing_config()
    })
    .await;
    let mut c = ws_identified(server.local_addr(), "alpha", "controller", "111111").await;
    for _ in 0..40 {
        c.send_text(r#"{"type":"cr_alive"}"#).await;
    }
    let (seen, end) = c.recv_end().await;
    assert_eq!(end, Ended::Close(1008, "rate limit exceeded".into()));
    let (alive, rest): (Vec<_>, Vec<_>) = seen.iter().partition(|v| v["type"] == "cr_alive");
    assert!(
        (9..=29).contains(&alive.len()),
        "{} admitted of 40",
        alive.len()
    );
    assert_eq!(rest.len(), 1, "one error, not one per drop: {rest:?}");
    assert_eq!(rest[0]["code"], "rate_limited");
    assert_eq!(
        seen.last().unwrap()["type"],
        "error",
        "nothing after the error"
    );
}

/// A `cr_alive` frame padded with spaces to exactly `len` bytes.
fn padded_alive(len: usize) -> String {
    let frame = r#"{"type":"cr_alive"}"#;
    format!("{frame}{}", " ".repeat(len - frame.len()))
}

#[tokio::test]
async fn a_frame_over_max_message_bytes_closes_1009() {
    let server = start_with(ServerConfig {
        max_message_bytes: 1024,
        max_state_bytes: 512,
        ..pairing_config()
    })
    .await;
    let mut c = ws_identified(server.local_addr(), "alpha", "controller", "111111").await;
    c.send_text(&padded_alive(1024)).await;
    c.recv_type("cr_alive").await;
    c.send_text(&padded_alive(1025)).await;
    let (seen, end) = c.recv_end().await;
    assert_eq!(seen, Vec::<serde_json::Value>::new());
    assert!(matches!(end, Ended::Close(1009, _)), "{end:?}");
}

#[tokio::test]
async fn a_frame_over_max_message_bytes_before_identify_closes_1009() {
    let server = start_with(ServerConfig {
        max_message_bytes: 1024,
        max_state_bytes: 512,
        ..pairing_config()
    })
    .await;
    let mut c = ws_open(server.local_addr(), "alpha").await;
    c.send_text(&"x".repeat(2000)).await;
    let (seen, end) = c.recv_end().await;
    assert_eq!(seen, Vec::<serde_json::Value>::new());
    assert!(matches!(end, Ended::Close(1009, _)), "{end:?}");
}

#[tokio::test]
async fn an_event_whose_sse_data_would_pass_8192_characters_is_too_large_and_not_forwarded() {
    let server = start_with(pairing_config()).await;
    let addr = server.local_addr();
    let mut ctl = ws_identified(addr, "alpha", "controller", "111111").await;
    let mut rsp = ws_identified(addr, "alpha", "responder", "222222").await;
    // The data string the event would have on SSE: `big,,false,false,true,NaN,NaN,111111,P`.
    let base = "big,,false,false,true,NaN,NaN,111111,".chars().count();
    // Two-byte characters: the limit is on characters, not bytes.
    let fits = "\u{e9}".repeat(8192 - base);
    let over = "\u{e9}".repeat(8193 - base);
    let frame = |param: &str| {
        json!({"type": "cr_event", "recipientClientId": "222222", "eventType": "big",
               "eventParams": [param]})
        .to_string()
    };
    ctl.send_text(&frame(&fits)).await;
    assert_eq!(
        recv_event(&mut rsp).await,
        server_event("big", "", &[&fits], false, false, true, None, "111111")
    );
    ctl.send_text(&frame(&over)).await;
    assert_eq!(
        without_timestamp(ctl.recv_type("error").await),
        json!({"type": "error", "code": "too_large",
               "message": "cr_event: the event's data string would be longer than 8192 characters"})
    );
    rsp.expect_silence(Duration::from_millis(300)).await;
    // The sender's socket stays usable.
    ctl.send_text(&event_frame("222222", "after")).await;
    assert_eq!(
        recv_event(&mut rsp).await,
        server_event("after", "", &[], false, false, true, None, "111111")
    );
}

#[tokio::test]
async fn sendevent_over_the_rate_limit_of_a_client_id_is_dropped_silently() {
    let (rate, burst) = (5u32, 5u32);
    let server = start_with(ServerConfig {
        rate_limit: rate,
        rate_burst: burst,
        ..pairing_config()
    })
    .await;
    let addr = server.local_addr();
    let (mut rsp, _) = Sse::identified(addr, "alpha", "222222", "responder").await;
    let started = Instant::now();
    for i in 0..20 {
        let data = format!("e,,false,false,true,NaN,NaN,000000,{i}");
        assert_eq!(
            send_event(addr, "alpha", "111111", "controller", "222222", &data).await,
            204,
            "request {i}"
        );
    }
    let elapsed = started.elapsed();
    let mut delivered = Vec::new();
    while let Ok(block) = tokio::time::timeout(Duration::from_millis(300), rsp.next_block()).await {
        let (kind, data) = parse_block(&block);
        assert_eq!(kind, "crEvent");
        let n: usize = data.rsplit("%2C").next().unwrap().parse().unwrap();
        delivered.push(n);
    }
    // The burst, then at most what refilled while the requests were sent.
    let refilled = (elapsed.as_secs_f64() * f64::from(rate)).ceil() as usize;
    assert!(
        delivered.len() >= burst as usize && delivered.len() <= burst as usize + refilled,
        "{} delivered of 20 in {elapsed:?}: {delivered:?}",
        delivered.len()
    );
    assert_eq!(&delivered[..burst as usize], &[0, 1, 2, 3, 4]);
    assert!(delivered.windows(2).all(|w| w[0] < w[1]), "{delivered:?}");
    // Per client id: another sender is not limited by the first one's drops.
    let data = "other,,false,false,true,NaN,NaN,000000";
    assert_eq!(
        send_event(addr, "alpha", "333333", "controller", "222222", data).await,
        204
    );
    assert_eq!(
        rsp.next_block().await,
        sse_bytes("crEvent", "other,,false,false,true,NaN,NaN,333333")
    );
}

#[tokio::test]
async fn a_pairing_websocket_that_does_not_read_is_closed_1008_and_its_partner_carries_on() {
    // A small outbound bound with no grace, and no rate limit, so one sender can fill it.
    let server = start_with(ServerConfig {
        rate_limit: 0,
        outbound_queue_bytes: 64 * 1024,
        outbound_queue_max_bytes: 128 * 1024,
        slow_consumer_grace: Duration::ZERO,
        ..pairing_config()
    })
    .await;
    let addr = server.local_addr();
    let mut reader = ws_identified(addr, "alpha", "responder", "222222").await;
    let mut sender = ws_identified(addr, "alpha", "controller", "111111").await;
    // 24 MB of events while the responder reads nothing: far more than loopback's socket
    // buffers (a few MB at most) and the outbox hold.
    let big = json!({
        "type": "cr_event", "recipientClientId": "222222", "eventType": "fill",
        "eventParams": ["x".repeat(8000)],
    })
    .to_string();
    for _ in 0..3000 {
        sender.send_text(&big).await;
    }
    // The sender is served throughout and after.
    sender.send_text(r#"{"type":"cr_alive"}"#).await;
    let alive = sender.recv().await;
    assert_eq!(alive["type"], "cr_alive", "{alive}");
    // The reader gets what was written before the overflow, then the 1008 close: never all.
    let (seen, end) = reader.recv_end().await;
    assert!(
        seen.len() < 3000,
        "{} events reached a reader that did not read",
        seen.len()
    );
    assert!(seen.iter().all(|v| v["eventType"] == "fill"));
    assert_eq!(
        end,
        Ended::Close(1008, "outbound queue overflow: client too slow".into())
    );
    // Its id is free again: a new connection with it is welcomed.
    let _again = ws_identified(addr, "alpha", "responder", "222222").await;
}
