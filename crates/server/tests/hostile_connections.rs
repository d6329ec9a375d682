//! Hostile and careless sockets at the edge: slow or missing request headers, idle keep-alive,
//! slow bodies, connection caps (global, per address, under a low open-file limit), running
//! out of files, unjoined WebSockets, join floods, forged `X-Forwarded-For`, bad
//! `Sec-WebSocket-Key`s, the bearer scheme's case, and shutdown with idle and half-open
//! sockets. Sockets from "other addresses" come from 127.0.0.2, 127.0.0.3, ... (all loopback).
//!
//! The open-file tests run the server in a child process (this test binary, re-run on one
//! `#[ignore]`d entry point) whose limit is lowered before it starts.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use http::{HeaderName, HeaderValue};
use loudsync_protocol::app;
use loudsync_protocol::{ClientMessage, DeviceType};
use loudsync_server::{Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_websockets::ClientBuilder;

/// A TCP connection to `addr` from the loopback address `from`.
async fn tcp_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    socket.connect(addr).await.expect("tcp connect")
}

/// Reads until the server ends the connection (EOF or reset); how long that took and what
/// arrived. Panics if it is still open after `within`.
async fn ends_within(s: &mut TcpStream, within: Duration) -> (Duration, String) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let ended = tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "still open after {within:?}; got {:?}",
        String::from_utf8_lossy(&got)
    );
    (
        started.elapsed(),
        String::from_utf8_lossy(&got).into_owned(),
    )
}

/// One HTTP/1.1 request with `Connection: close` from `from`; the status and the body.
async fn request(from: &str, addr: SocketAddr, head: &str) -> (u16, String) {
    let mut s = tcp_from(from, addr).await;
    s.write_all(format!("{head}Host: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (_, response) = ends_within(&mut s, WAIT).await;
    parse_response(&response)
}

fn parse_response(response: &str) -> (u16, String) {
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Reads one response of a keep-alive connection (headers, then `Content-Length` bytes).
async fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(WAIT, async {
        loop {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed mid-response");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                if body.len() >= len {
                    return;
                }
            }
        }
    })
    .await
    .expect("a response in time");
    parse_response(&String::from_utf8_lossy(&got))
}

/// A counter's value in `/metrics` (asked from 127.0.0.250); 0 if absent.
async fn metric(addr: SocketAddr, series: &str) -> f64 {
    let (status, body) = request("127.0.0.250", addr, "GET /metrics HTTP/1.1\r\n").await;
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// Waits (bounded) until the server's count of connections from `from` is `n`.
async fn connections_become(server: &Server, from: &str, n: usize) {
    let ip: IpAddr = from.parse().unwrap();
    let deadline = Instant::now() + WAIT;
    while server.state().admission.connections(ip).1 != n {
        assert!(
            Instant::now() < deadline,
            "connections from {from}: {:?}, expected {n}",
            server.state().admission.connections(ip)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn short_request_timeout() -> ServerConfig {
    ServerConfig {
        request_timeout: Duration::from_millis(300),
        ..test_config()
    }
}

#[tokio::test]
async fn a_connection_that_never_completes_its_headers_is_closed_at_the_request_timeout() {
    let server = start_with(short_request_timeout()).await;
    let addr = server.local_addr();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut partial = TcpStream::connect(addr).await.unwrap();
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Slowloris: one header byte every 50 ms, never finishing.
    let mut dribble = TcpStream::connect(addr).await.unwrap();
    dribble
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let (mut dribble_read, mut dribble_write) = dribble.into_split();
    let writer = tokio::spawn(async move {
        for _ in 0..100 {
            if dribble_write.write_all(b"X").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let started = Instant::now();
    for s in [&mut silent, &mut partial] {
        ends_within(s, Duration::from_secs(2)).await;
    }
    let mut buf = [0u8; 256];
    let dribble_end = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match dribble_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(dribble_end.is_ok(), "the slowloris socket is still open");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_millis(1500),
        "closed after {elapsed:?}, not at the 300 ms request timeout"
    );
    writer.abort();
    // The server still serves.
    assert_eq!(
        request("127.0.0.1", addr, "GET /healthz HTTP/1.1\r\n").await,
        (200, "ok\n".into())
    );
    server.shutdown().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_request_timeout() {
    let server = start_with(short_request_timeout()).await;
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    // Two requests, 200 ms apart, on one connection: each answered.
    for _ in 0..2 {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_response(&mut s).await, (200, "ok\n".into()));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Then idle: closed 300 ms after the last answer (200 ms of which have passed).
    let (after, _) = ends_within(&mut s, Duration::from_secs(2)).await;
    assert!(
        after < Duration::from_millis(1000),
        "idle connection lived {after:?} more"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_request_whose_body_never_arrives_gets_408() {
    let server = start_with(short_request_timeout()).await;
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    s.write_all(
        b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"name\":",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let (status, body) = read_response(&mut s).await;
    assert_eq!(status, 408, "{body}");
    assert!(body.contains("request_timeout"), "{body}");
    assert!(started.elapsed() < Duration::from_millis(1500));
    server.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_per_address_cap_are_refused_at_once_and_other_addresses_are_served() {
    let server = start_with(ServerConfig {
        max_connections: 8,
        max_connections_per_address: 3,
        ..test_config()
    })
    .await;
    let addr = server.local_addr();
    let refused_before = metric(
        addr,
        "loudsync_connections_refused_total{reason=\"per_address\"}",
    )
    .await;
    // Three served keep-alive connections from 127.0.0.1, held open.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = tcp_from("127.0.0.1", addr).await;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_response(&mut s).await.0, 200);
        held.push(s);
    }
    // The fourth from that address is refused at once with a 503.
    let mut fourth = tcp_from("127.0.0.1", addr).await;
    let (took, answer) = ends_within(&mut fourth, Duration::from_secs(1)).await;
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 503 "),
        "{answer:?}"
    );
    // Another address is served.
    assert_eq!(
        request("127.0.0.2", addr, "GET /healthz HTTP/1.1\r\n").await,
        (200, "ok\n".into())
    );
    assert!(
        metric(
            addr,
            "loudsync_connections_refused_total{reason=\"per_address\"}"
        )
        .await
            >= refused_before + 1.0
    );
    // The total cap: 3 + 3 + 2 = 8 held, the ninth (from a fourth address) is refused.
    for from in [
        "127.0.0.2",
        "127.0.0.2",
        "127.0.0.2",
        "127.0.0.3",
        "127.0.0.3",
    ] {
        held.push(tcp_from(from, addr).await);
    }
    connections_become(&server, "127.0.0.3", 2).await;
    let mut ninth = tcp_from("127.0.0.4", addr).await;
    ends_within(&mut ninth, Duration::from_secs(1)).await;
    // A place given back is a place taken again: the permits are counted per socket.
    held.remove(0);
    connections_become(&server, "127.0.0.1", 2).await;
    assert_eq!(
        request("127.0.0.1", addr, "GET /healthz HTTP/1.1\r\n").await,
        (200, "ok\n".into())
    );
    drop(held);
    for from in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
        connections_become(&server, from, 0).await;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn an_upgraded_websocket_keeps_its_connection_permit() {
    let server = start_with(ServerConfig {
        max_connections: 8,
        max_connections_per_address: 3,
        ..test_config()
    })
    .await;
    let addr = server.local_addr();
    let mut members = Vec::new();
    let (host, _, _) = join(addr, "permits", "host-dev", "host").await;
    members.push(host);
    for i in 0..2 {
        let (c, _, _) = join(addr, "permits", &format!("dev-{i}"), "client").await;
        members.push(c);
    }
    // Three upgraded sockets hold the address's three places.
    let mut fourth = tcp_from("127.0.0.1", addr).await;
    ends_within(&mut fourth, Duration::from_secs(1)).await;
    // One leaves: its place is free again.
    drop(members.pop());
    connections_become(&server, "127.0.0.1", 2).await;
    let (mut again, _, _) = join(addr, "permits", "dev-again", "client").await;
    again.assert_alive().await;
    server.shutdown().await;
}

/// Sends a WebSocket upgrade request by hand; the response's status and body.
async fn upgrade(from: &str, addr: SocketAddr, key: &str) -> (u16, String, TcpStream) {
    let mut s = tcp_from(from, addr).await;
    s.write_all(
        format!(
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(WAIT, async {
        loop {
            let n = s.read(&mut buf).await.unwrap_or(0);
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if n == 0 || text.starts_with("HTTP/1.1 101") && text.contains("\r\n\r\n") {
                return;
            }
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                if body.len() >= len {
                    return;
                }
            }
        }
    })
    .await
    .expect("an answer to the upgrade");
    let (status, body) = parse_response(&String::from_utf8_lossy(&got));
    (status, body, s)
}

const GOOD_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

#[tokio::test]
async fn an_invalid_sec_websocket_key_gets_400() {
    let server = start().await;
    let addr = server.local_addr();
    for bad in [
        "abc",
        "dGhlIHNhbXBsZSBub25j",     // 15 bytes
        "dGhlIHNhbXBsZSBub25jZXg=", // 17 bytes
        "dGhlIHNhbXBsZSBub25jZQ",   // no padding
        "!!!!!!!!!!!!!!!!!!!!!!==",
    ] {
        let (status, body, _) = upgrade("127.0.0.1", addr, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(
            body,
            "invalid Sec-WebSocket-Key: it must be the base64 of 16 random bytes \
             (RFC 6455 section 4.1)\n"
        );
    }
    let (status, _, _) = upgrade("127.0.0.1", addr, GOOD_KEY).await;
    assert_eq!(status, 101);
    server.shutdown().await;
}

#[tokio::test]
async fn unjoined_websockets_are_capped_per_address() {
    let server = start_with(ServerConfig {
        max_unjoined_per_address: 2,
        heartbeat_timeout: Duration::from_secs(5),
        ..test_config()
    })
    .await;
    let addr = server.local_addr();
    let refused_before = metric(
        addr,
        "loudsync_connections_refused_total{reason=\"unjoined_per_address\"}",
    )
    .await;
    let mut first = Client::connect_on(addr, "/", tcp_from("127.0.0.1", addr).await).await;
    let _second = Client::connect_on(addr, "/", tcp_from("127.0.0.1", addr).await).await;
    let (status, body, _) = upgrade("127.0.0.1", addr, GOOD_KEY).await;
    assert_eq!(status, 429, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["code"], "too_many_connections");
    assert_eq!(
        body["message"],
        "2 WebSocket connections from this address have not joined yet; join or close one first"
    );
    assert!(
        metric(
            addr,
            "loudsync_connections_refused_total{reason=\"unjoined_per_address\"}"
        )
        .await
            >= refused_before + 1.0
    );
    // Another address has its own count.
    assert_eq!(upgrade("127.0.0.2", addr, GOOD_KEY).await.0, 101);
    // A member that joins is no longer unjoined: its place is free.
    first.send(&join_msg("unjoined", "host-dev", "host")).await;
    first.recv_type("welcome").await;
    first.recv_type("member_list").await;
    first.assert_alive().await; // its join has been handled
    assert_eq!(upgrade("127.0.0.1", addr, GOOD_KEY).await.0, 101);
    server.shutdown().await;
}

#[tokio::test]
async fn join_attempts_are_rate_limited_per_address() {
    let server = start_with(ServerConfig {
        join_rate_per_address: 1,
        join_burst_per_address: 3,
        ..test_config()
    })
    .await;
    let addr = server.local_addr();
    let attempt = |from: &'static str| async move {
        let mut c = Client::connect_on(addr, "/", tcp_from(from, addr).await).await;
        c.send(&join_msg("nope", "dev", "client")).await;
        let (seen, ended) = c.recv_end().await;
        assert_eq!(ended, Ended::Close(1000, "join rejected".into()));
        seen.into_iter().next().expect("an error before the close")
    };
    for _ in 0..3 {
        assert_eq!(attempt("127.0.0.1").await["code"], "session_not_found");
    }
    let limited = attempt("127.0.0.1").await;
    assert_eq!(limited["type"], "error");
    assert_eq!(limited["code"], "too_many_attempts");
    let retry = limited["details"]["retryAfterMs"].as_u64().unwrap();
    assert!((1..=1000).contains(&retry), "{limited}");
    assert_eq!(
        limited["message"],
        format!("too many join attempts from this address; retry in {retry} ms")
    );
    // Another address is not held back.
    assert_eq!(attempt("127.0.0.2").await["code"], "session_not_found");
    server.shutdown().await;
}

/// A WebSocket from `from` whose upgrade request carries `X-Forwarded-For: xff`.
async fn ws_forwarded(from: &str, addr: SocketAddr, xff: &str) -> Client {
    let (ws, _) = ClientBuilder::new()
        .uri(&format!("ws://{addr}/"))
        .unwrap()
        .add_header(
            HeaderName::from_static("x-forwarded-for"),
            HeaderValue::from_str(xff).unwrap(),
        )
        .unwrap()
        .connect_on(tcp_from(from, addr).await)
        .await
        .expect("websocket connect");
    Client { ws }
}

#[tokio::test]
async fn x_forwarded_for_counts_only_from_a_trusted_proxy() {
    let server = start_with(ServerConfig {
        trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
        join_rate_per_address: 1,
        join_burst_per_address: 1,
        ..test_config()
    })
    .await;
    let addr = server.local_addr();
    let list = "GET /v1/sessions HTTP/1.1\r\n";
    let forged = "GET /v1/sessions HTTP/1.1\r\nX-Forwarded-For: 203.0.113.9\r\n";
    // Through the trusted proxy, a remote client is remote: no loopback pass.
    let (status, body) = request("127.0.0.1", addr, forged).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("\"forbidden\""), "{body}");
    // The proxy's own requests (no header) are loopback.
    assert_eq!(request("127.0.0.1", addr, list).await.0, 200);
    // From a peer that is not trusted, the header is ignored.
    assert_eq!(request("127.0.0.2", addr, forged).await.0, 200);
    // The proxy's clients each have their own join rate...
    let mut a = ws_forwarded("127.0.0.1", addr, "198.51.100.1").await;
    a.send(&join_msg("nope", "a", "client")).await;
    assert_eq!(a.recv().await["code"], "session_not_found");
    let mut a2 = ws_forwarded("127.0.0.1", addr, "198.51.100.1").await;
    a2.send(&join_msg("nope", "a", "client")).await;
    assert_eq!(a2.recv().await["code"], "too_many_attempts");
    // ...and the app's dialect is shown the client's address, not the proxy's.
    let mut host = ws_forwarded("127.0.0.1", addr, "10.9.8.7, 198.51.100.2").await;
    host.send(&join_msg("K7P-3XQ", "host-device", "host")).await;
    host.recv_type("welcome").await;
    let mut app_client = ws_forwarded("127.0.0.1", addr, "198.51.100.3").await;
    let join = ClientMessage::join("K7P-3XQ", "app-device", "Device 42", DeviceType::Client);
    app_client
        .send_app(&join, &app::ClientContext::new("app-device", unix_ms()))
        .await;
    let _welcome = app_client.recv().await;
    let list = app_client.recv().await;
    assert_eq!(list["type"], "MEMBER_LIST", "{list}");
    let members = list["payload"]["members"].as_array().unwrap();
    assert_eq!(members[0]["address"], "198.51.100.2", "{list}");
    assert_eq!(members[1]["address"], "198.51.100.3", "{list}");
    server.shutdown().await;

    // Without a trusted-proxy list the header never counts, from anybody.
    let server = start().await;
    let addr = server.local_addr();
    assert_eq!(request("127.0.0.1", addr, forged).await.0, 200);
    server.shutdown().await;
}

#[tokio::test]
async fn the_bearer_scheme_is_accepted_in_any_case() {
    let server = start_with(ServerConfig {
        admin_token: Some("s3cret".into()),
        ..test_config()
    })
    .await;
    let addr = server.local_addr();
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let head = format!("GET /v1/sessions HTTP/1.1\r\nAuthorization: {scheme} s3cret\r\n");
        assert_eq!(request("127.0.0.1", addr, &head).await.0, 200, "{scheme}");
    }
    let head = "GET /v1/sessions HTTP/1.1\r\nAuthorization: bearer s3cre\r\n";
    assert_eq!(request("127.0.0.1", addr, head).await.0, 401);
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_with_idle_and_half_open_sockets_stays_within_the_drain_timeout() {
    let drain = Duration::from_millis(500);
    let server = start_with(ServerConfig {
        drain_timeout: drain,
        // Long enough that neither the close deadline nor the request deadline ends anything
        // before the drain's own deadline.
        close_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(10),
        heartbeat_timeout: Duration::from_secs(10),
        heartbeat_check_interval: Duration::from_secs(1),
        ..test_config()
    })
    .await;
    let addr = server.local_addr();
    // Idle HTTP: silent sockets, a keep-alive connection after one request.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut keep_alive = TcpStream::connect(addr).await.unwrap();
    keep_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut keep_alive).await.0, 200);
    idle.push(keep_alive);
    let mut partial = TcpStream::connect(addr).await.unwrap();
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Half-open WebSockets: a joined member and an unjoined socket that will never read
    // again, so they never answer the server's close.
    let (member, _, _) = join(addr, "drain", "host-dev", "host").await;
    let unjoined = Client::connect(addr).await;
    connections_become(&server, "127.0.0.1", 7).await;

    let started = Instant::now();
    let shutdown = tokio::spawn(server.shutdown());
    // Idle HTTP connections are closed at once, long before the deadline.
    for s in idle.iter_mut() {
        let (_, _) = ends_within(s, drain).await;
    }
    let idle_closed = started.elapsed();
    assert!(
        idle_closed < Duration::from_millis(250),
        "idle HTTP connections closed after {idle_closed:?}"
    );
    ends_within(&mut partial, drain + Duration::from_millis(300)).await;
    shutdown.await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= drain - Duration::from_millis(50) && took < drain + Duration::from_millis(300),
        "shutdown took {took:?} with a {drain:?} drain timeout"
    );
    // The half-open sockets were told 1001, then dropped at the deadline.
    for (mut c, first) in [(member, "session_closed"), (unjoined, "")] {
        let (seen, ended) = c.recv_end().await;
        if !first.is_empty() {
            assert_eq!(seen[0]["type"], first);
        }
        assert!(
            matches!(ended, Ended::Close(1001, _)),
            "{ended:?} after {seen:?}"
        );
        let after = tokio::time::timeout(WAIT, c.ws.next()).await;
        assert!(
            matches!(after, Ok(None) | Ok(Some(Err(_)))),
            "the socket is closed: {after:?}"
        );
    }
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "nothing listens after shutdown"
    );
}

// ---- the open-file limit, in a child process -------------------------------------------

/// Runs this test binary's [`child_server`] in a child process with the open-file limit at
/// `nofile`, in `mode`.
fn spawn_child(mode: &str, nofile: u64) -> Child {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "child_server",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LOUDSYNC_CHILD_MODE", mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: nofile as libc::rlim_t,
                rlim_max: nofile as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().expect("spawn the child server")
}

/// The child's next `CHILD ...` line, as `key=value` pairs.
fn child_line(out: &mut impl BufRead) -> Vec<(String, String)> {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the child ended");
        // (The harness may have written `test child_server ... ` before it on the line.)
        if let Some((_, rest)) = line.trim().split_once("CHILD ") {
            return rest
                .split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        }
    }
}

fn field<'a>(fields: &'a [(String, String)], key: &str) -> &'a str {
    &fields.iter().find(|(k, _)| k == key).expect(key).1
}

/// The process's CPU time so far.
fn cpu_time() -> Duration {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv =
        |t: libc::timeval| Duration::from_micros(t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The server side of the open-file tests; does nothing unless run by [`spawn_child`].
///
/// - `caps`: serves with the default caps (fitted under the limit) and prints them, until
///   its standard input closes.
/// - `files`: serves, then opens files until none are left and says `full`; on `release`
///   it prints the CPU time it used since `full` and gives the files back; then serves until
///   its standard input closes.
#[tokio::test(flavor = "current_thread")]
#[ignore = "run by the open-file tests in a child process"]
async fn child_server() {
    let Ok(mode) = std::env::var("LOUDSYNC_CHILD_MODE") else {
        return;
    };
    let server = Server::bind(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        request_timeout: Duration::from_secs(30),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let caps = server.state().admission.caps();
    println!(
        "CHILD addr={} max={} per={} limit={:?}",
        server.local_addr(),
        caps.max_connections,
        caps.max_connections_per_address,
        server.state().admission.open_files_limit()
    );
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            if lines_tx.send(line.unwrap_or_default()).is_err() {
                return;
            }
        }
    });
    if mode == "files" {
        let mut hoard = Vec::new();
        while let Ok(f) = std::fs::File::open("/dev/null") {
            hoard.push(f);
        }
        let (cpu0, wall0) = (cpu_time(), Instant::now());
        println!("CHILD full files={}", hoard.len());
        while let Some(line) = lines.recv().await {
            if line == "release" {
                break;
            }
        }
        let (cpu, wall) = (cpu_time() - cpu0, wall0.elapsed());
        drop(hoard);
        println!(
            "CHILD cpu_ms={} wall_ms={}",
            cpu.as_millis(),
            wall.as_millis()
        );
    }
    while lines.recv().await.is_some() {}
    server.shutdown().await;
}

#[tokio::test]
async fn the_open_file_limit_caps_connections_and_one_address_cannot_lock_out_another() {
    let mut child = spawn_child("caps", 512);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let fields = child_line(&mut out);
    let addr: SocketAddr = field(&fields, "addr").parse().unwrap();
    let max: usize = field(&fields, "max").parse().unwrap();
    let per: usize = field(&fields, "per").parse().unwrap();
    assert_eq!(field(&fields, "limit"), "Some(512)");
    assert!(
        max < 512,
        "max-connections {max} fitted under the limit of 512"
    );
    assert!(
        per <= max / 2,
        "one address holds at most half: {per} of {max}"
    );
    // One address opens 560 idle sockets.
    let mut hog = Vec::new();
    for _ in 0..560 {
        hog.push(tcp_from("127.0.0.1", addr).await);
    }
    // Another address is served: HTTP and a WebSocket join.
    assert_eq!(
        request("127.0.0.2", addr, "GET /healthz HTTP/1.1\r\n").await,
        (200, "ok\n".into())
    );
    let mut c = Client::connect_on(addr, "/", tcp_from("127.0.0.2", addr).await).await;
    c.send(&join_msg("fd-party", "host-dev", "host")).await;
    c.recv_type("welcome").await;
    // The hog holds exactly its address's share; the rest were closed at once.
    let mut held = 0;
    let mut buf = [0u8; 256];
    for s in hog.iter_mut() {
        let still_open = tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf))
            .await
            .is_err();
        held += usize::from(still_open);
    }
    assert_eq!(held, per, "sockets of the hog still open");
    let refused = metric(
        addr,
        "loudsync_connections_refused_total{reason=\"per_address\"}",
    )
    .await;
    assert_eq!(refused as usize, 560 - per);
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn running_out_of_files_neither_stops_nor_spins_the_accept_loop() {
    let mut child = spawn_child("files", 256);
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let addr: SocketAddr = field(&child_line(&mut out), "addr").parse().unwrap();
    let full = child_line(&mut out);
    assert!(field(&full, "files").parse::<usize>().unwrap() > 100);
    // Out of files: every connection is accepted and closed at once, not left waiting.
    let started = Instant::now();
    for _ in 0..20 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let (took, _) = ends_within(&mut s, Duration::from_secs(1)).await;
        assert!(took < Duration::from_millis(500), "{took:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The loop did not spin meanwhile.
    writeln!(stdin, "release").unwrap();
    let usage = child_line(&mut out);
    let cpu: u64 = field(&usage, "cpu_ms").parse().unwrap();
    let wall: u64 = field(&usage, "wall_ms").parse().unwrap();
    assert!(
        wall >= started.elapsed().as_millis() as u64 / 2 && cpu * 4 < wall,
        "the child used {cpu} ms of CPU in {wall} ms out of files"
    );
    // Files are back: served again.
    assert_eq!(
        request("127.0.0.1", addr, "GET /healthz HTTP/1.1\r\n").await,
        (200, "ok\n".into())
    );
    let refused = metric(
        addr,
        "loudsync_connections_refused_total{reason=\"out_of_files\"}",
    )
    .await;
    assert!(refused >= 20.0, "{refused}");
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}
