//! LAN discovery on loopback only: the server answers LOUDSYNC_DISCOVER and "broadcasts" to
//! an address the test owns (127.0.0.1), with mDNS off. Nothing leaves the machine.

mod common;

use std::time::Duration;

use common::*;
use loudsync_protocol::discovery::{self, DISCOVER};
use serde_json::{json, Value};
use tokio::net::UdpSocket;

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn discovery_server(broadcast_to: std::net::SocketAddr) -> (loudsync_server::Server, u16) {
    let port = free_udp_port();
    let mut config = test_config();
    config.discovery = true;
    config.mdns = false;
    config.discovery_port = port;
    config.discovery_broadcast = broadcast_to;
    config.discovery_interval = Duration::from_millis(100);
    config.advertise_address = Some("127.0.0.1".parse().unwrap());
    (start_with(config).await, port)
}

async fn next_ad(socket: &UdpSocket) -> Value {
    let mut buf = [0u8; 2048];
    let (n, _) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf))
        .await
        .expect("an advertisement")
        .unwrap();
    // Read as the app would, by hand, and as `loudsync discover` does: the same thing.
    let text = std::str::from_utf8(&buf[..n]).unwrap();
    let json = text
        .strip_prefix("LOUDSYNC_RESPONSE:")
        .unwrap_or_else(|| panic!("{text}"));
    let value: Value = serde_json::from_str(json).unwrap();
    let parsed = discovery::parse_response(&buf[..n]).expect("parses");
    assert_eq!(serde_json::to_value(&parsed).unwrap(), value);
    value
}

#[tokio::test]
async fn answers_loudsync_discover_with_the_advertisement() {
    let sink = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (server, port) = discovery_server(sink.local_addr().unwrap()).await;
    let (_host, _, _) = join(server.local_addr(), "K7P-3XQ", "host-device", "host").await;
    let asker = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    asker.send_to(DISCOVER, ("127.0.0.1", port)).await.unwrap();
    let ad = next_ad(&asker).await;
    assert_eq!(ad["sessionId"], "K7P-3XQ");
    assert_eq!(ad["sessionName"], "host-device name's session");
    assert_eq!(ad["hostId"], "host-device");
    assert_eq!(ad["hostName"], "host-device name");
    assert_eq!(ad["hostAddress"], "127.0.0.1");
    assert_eq!(ad["port"], server.local_addr().port());
    assert_eq!(ad["memberCount"], 1);
    assert_eq!(ad["maxMembers"], 10);
    assert_eq!(ad["isPasswordProtected"], false);
    assert_eq!(ad["version"], "1.0.0");
    assert!(ad["timestamp"].is_u64());
    // Anything else is not answered.
    asker.send_to(b"HELLO", ("127.0.0.1", port)).await.unwrap();
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), asker.recv_from(&mut buf))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn broadcasts_every_interval_and_keeps_the_count_current() {
    let sink = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (server, _) = discovery_server(sink.local_addr().unwrap()).await;
    let addr = server.local_addr();
    let (_host, _, _) = join(addr, "lobby", "h", "host").await;
    assert_eq!(next_ad(&sink).await["memberCount"], 1);
    let (_guest, _, _) = join(addr, "lobby", "g", "client").await;
    let mut count = json!(1);
    for _ in 0..10 {
        count = next_ad(&sink).await["memberCount"].clone();
        if count == 2 {
            break;
        }
    }
    assert_eq!(count, 2, "the advertisement follows the members");
}

#[tokio::test]
async fn discovery_is_off_by_default() {
    let server = start().await;
    assert!(!server.state().config.discovery);
}
