//! `loudsync discover` finds a running server's sessions (UDP on loopback, mDNS off).

use std::process::Command;
use std::time::Duration;

use loudsync_client::{Client, ClientConfig};
use loudsync_server::{Server, ServerConfig};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn finds_the_sessions_of_a_running_server() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let server = Server::bind(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        discovery: true,
        mdns: false,
        discovery_port: port,
        discovery_broadcast: sink.local_addr().unwrap(),
        discovery_interval: Duration::from_secs(60),
        advertise_address: Some("127.0.0.1".parse().unwrap()),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let url = format!("ws://{}/", server.local_addr());
    let (_h, _) = Client::connect(ClientConfig::host(
        &url,
        "A1B2C3",
        "Friday Jam",
        "mac",
        "Mac",
    ))
    .await
    .unwrap();
    let (_g, _) = Client::connect(ClientConfig::member(&url, "A1B2C3", "phone", "Phone"))
        .await
        .unwrap();
    // The server refuses control characters in names (issue 9), but a bidirectional-text
    // control is a character like any other: it reaches the table escaped.
    let (_e, _) = Client::connect(ClientConfig::host(
        &url,
        "ZZ-evil",
        "Jam\u{202e}[2J",
        "evil",
        "Eve",
    ))
    .await
    .unwrap();

    let bin = env!("CARGO_BIN_EXE_loudsync");
    let to = format!("127.0.0.1:{port}");
    let out = Command::new(bin)
        .args([
            "discover",
            "--to",
            &to,
            "--no-mdns",
            "--timeout",
            "500ms",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sessions"][1]["sessionName"], "Jam\u{202e}[2J");
    let raw = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(!raw.contains('\u{202e}'), "{raw:?}");
    let s = &v["sessions"][0];
    assert_eq!(s["sessionId"], "A1B2C3");
    assert_eq!(s["sessionName"], "Friday Jam");
    assert_eq!(s["hostName"], "Mac");
    assert_eq!(s["memberCount"], 2);
    assert_eq!(s["port"], server.local_addr().port());
    assert_eq!(s["via"], "udp");

    let table = Command::new(bin)
        .args(["discover", "--to", &to, "--no-mdns", "--timeout", "500ms"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("Friday Jam") && text.contains("A1B-2C3") && text.contains("2/10"),
        "{text}"
    );
    assert!(text.contains(r"Jam\u{202e}[2J"), "{text}");
    assert!(!text.contains('\u{202e}'), "{text:?}");
}
