//! The slow-consumer rule end to end: a member may fall behind during a burst and catch up,
//! but one whose queue stays over `outbound-queue-bytes` for longer than the grace period, or
//! reaches `outbound-queue-max-bytes`, is disconnected, and nobody else notices.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// A server with a 64 KiB soft limit, a 64 MiB hard limit and the given grace.
async fn server(grace: Duration) -> loudsync_server::Server {
    let mut config = test_config();
    config.rate_limit = 0;
    config.max_message_bytes = 64 * 1024;
    config.max_data_bytes = 64 * 1024;
    config.outbound_queue_bytes = 64 * 1024;
    config.outbound_queue_max_bytes = 64 * 1024 * 1024;
    config.slow_consumer_grace = grace;
    config.heartbeat_timeout = Duration::from_secs(30);
    start_with(config).await
}

/// A member with a 4 KiB receive buffer, so the server's queue fills as soon as it stops
/// reading.
async fn small_buffer_member(addr: std::net::SocketAddr, device: &str) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let mut c = Client::connect_on(addr, "/", tcp).await;
    c.send(&join_msg("s", device, "client")).await;
    c.recv_type("welcome").await;
    c.recv_type("member_list").await;
    c
}

#[tokio::test]
async fn a_member_that_falls_behind_in_a_burst_and_catches_up_stays() {
    // A grace far longer than the test: the member's queue goes over the soft limit (which
    // used to drop it at once) and it still stays.
    let server = server(Duration::from_secs(30)).await;
    let addr = server.local_addr();
    let (mut host, _, _) = join(addr, "s", "h", "host").await;
    let mut reader = small_buffer_member(addr, "reader").await;
    host.recv_type("member_joined").await;
    // A 9 MB burst: more than the kernel's socket buffers hold (4 MiB at most here), so the
    // queue goes far over the soft limit; well under the hard one.
    let chunk = "z".repeat(60 * 1024);
    let burst = message(json!(chunk), None);
    for _ in 0..150 {
        host.send(&burst).await;
    }
    // The reader pauses (within the grace), then reads everything.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..150 {
        assert_eq!(reader.recv_type("message").await["data"], chunk.as_str());
    }
    reader.assert_alive().await;
    host.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_member_over_the_soft_limit_past_the_grace_is_dropped_under_the_hard_limit() {
    let server = server(Duration::from_millis(300)).await;
    let addr = server.local_addr();
    let (mut host, _, _) = join(addr, "s", "h", "host").await;
    let _stalled = small_buffer_member(addr, "stalled").await;
    let mut other = small_buffer_member(addr, "other").await;
    host.recv_type("member_joined").await;
    host.recv_type("member_joined").await;
    let chunk = message(json!("z".repeat(60 * 1024)), None);
    // 9 MB: more than the kernel buffers, so the stalled member's queue goes over the soft
    // limit, and nowhere near the 64 MiB hard limit: only the grace rule can drop it.
    let mut left = None;
    for _ in 0..150 {
        host.send(&chunk).await;
        let m = other.recv().await;
        if m["type"] == "member_left" {
            left = Some(m);
            other.recv_type("message").await;
        }
    }
    if left.is_none() {
        tokio::time::sleep(Duration::from_millis(400)).await;
        // The next frame finds the queue over the limit for longer than the grace.
        host.send(&message(json!("one more"), None)).await;
        assert_eq!(other.recv_type("message").await["data"], "one more");
        left = Some(other.recv_type("member_left").await);
    }
    assert_eq!(left.unwrap()["reason"], "error");
    assert_eq!(host.recv_until("member_left").await["reason"], "error");
    // The member that reads is untouched.
    other.assert_alive().await;
    host.assert_alive().await;
}
