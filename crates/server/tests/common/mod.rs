//! Helpers for integration tests: a server on loopback with millisecond timers, and a small
//! raw WebSocket client that can inspect close frames.
//!
//! Every well-formed frame a test sends is written by `loudsync_protocol` ([`Client::send`]
//! for ours, [`Client::send_app`] for the app's); [`Client::send_text`] is for the malformed
//! and hostile frames that are a test's point.

#![allow(dead_code)]

pub mod pairing;
pub mod proxy;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use loudsync_protocol::{app, encode_client, ClientMessage, DeviceType, Join, RawJson};
use loudsync_server::{Server, ServerConfig};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_websockets::{ClientBuilder, Message, WebSocketStream};

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(3);

/// Settings for tests: loopback, short timers.
pub fn test_config() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        heartbeat_timeout: Duration::from_millis(400),
        heartbeat_check_interval: Duration::from_millis(50),
        latency_interval: Duration::from_millis(100),
        close_timeout: Duration::from_millis(300),
        drain_timeout: Duration::from_secs(2),
        ..ServerConfig::default()
    }
}

pub async fn start() -> Server {
    start_with(test_config()).await
}

pub async fn start_with(config: ServerConfig) -> Server {
    Server::bind(config).await.expect("bind")
}

pub struct Client {
    pub ws: WebSocketStream<TcpStream>,
}

/// How a socket ended, as the client saw it.
#[derive(Debug, PartialEq)]
pub enum Ended {
    /// A close frame with this code and reason.
    Close(u16, String),
    /// The stream ended with no close frame.
    Eof,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        Self::connect_path(addr, "/").await
    }

    pub async fn connect_path(addr: SocketAddr, path: &str) -> Client {
        let tcp = TcpStream::connect(addr).await.expect("tcp connect");
        Self::connect_on(addr, path, tcp).await
    }

    pub async fn connect_on(addr: SocketAddr, path: &str, tcp: TcpStream) -> Client {
        Self::connect_with(addr, path, tcp, tokio_websockets::Config::default()).await
    }

    /// Connects with a client-side WebSocket config (e.g. a small frame size to fragment).
    pub async fn connect_with(
        addr: SocketAddr,
        path: &str,
        tcp: TcpStream,
        config: tokio_websockets::Config,
    ) -> Client {
        let uri = format!("ws://{addr}{path}");
        let (ws, _) = ClientBuilder::new()
            .config(config)
            .uri(&uri)
            .unwrap()
            .connect_on(tcp)
            .await
            .expect("websocket connect");
        Client { ws }
    }

    /// Sends a message of our dialect, written by the protocol crate's encoder.
    pub async fn send(&mut self, message: &ClientMessage) {
        let frame = encode_client(message, unix_ms()).expect("a message of our dialect");
        self.send_text(&frame).await;
    }

    /// Sends a message as the app's own client writes it (`ctx`: its device id, timestamp,
    /// `messageId`).
    pub async fn send_app(&mut self, message: &ClientMessage, ctx: &app::ClientContext<'_>) {
        let frame = app::encode_client(message, ctx).expect("a message of the app's dialect");
        self.send_text(&frame).await;
    }

    /// Sends one text frame exactly as given: for malformed or hostile frames.
    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_string()))
            .await
            .expect("send");
    }

    /// The next JSON message; control frames are skipped; panics on close or timeout.
    pub async fn recv(&mut self) -> Value {
        match tokio::time::timeout(WAIT, self.next_json()).await {
            Ok(Ok(v)) => v,
            Ok(Err(ended)) => panic!("socket ended while waiting for a message: {ended:?}"),
            Err(_) => panic!("no message within {WAIT:?}"),
        }
    }

    /// The next text frame exactly as the server wrote it; control frames are skipped.
    pub async fn recv_raw(&mut self) -> String {
        let next = async {
            loop {
                match self.ws.next().await {
                    Some(Ok(m)) => {
                        if let Some(text) = m.as_text() {
                            return text.to_string();
                        }
                        assert!(m.as_close().is_none(), "socket closed: {m:?}");
                    }
                    other => panic!("socket ended while waiting for a frame: {other:?}"),
                }
            }
        };
        tokio::time::timeout(WAIT, next)
            .await
            .expect("no frame in time")
    }

    /// The next message, which must have this `type`.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(v["type"], kind, "expected `{kind}`, got {v}");
        assert!(v["timestamp"].is_number(), "no timestamp in {v}");
        v
    }

    /// Skips messages until one of this `type` arrives.
    pub async fn recv_until(&mut self, kind: &str) -> Value {
        loop {
            let v = self.recv().await;
            if v["type"] == kind {
                return v;
            }
        }
    }

    async fn next_json(&mut self) -> Result<Value, Ended> {
        loop {
            match self.ws.next().await {
                Some(Ok(m)) => {
                    if let Some(text) = m.as_text() {
                        return Ok(serde_json::from_str(text).expect("server sent JSON"));
                    }
                    if let Some((code, reason)) = m.as_close() {
                        return Err(Ended::Close(code.into(), reason.to_string()));
                    }
                }
                Some(Err(_)) | None => return Err(Ended::Eof),
            }
        }
    }

    /// Waits for the socket to end; returns how. Messages before the end are returned too.
    pub async fn recv_end(&mut self) -> (Vec<Value>, Ended) {
        let mut seen = Vec::new();
        let ended = tokio::time::timeout(WAIT, async {
            loop {
                match self.next_json().await {
                    Ok(v) => seen.push(v),
                    Err(e) => return e,
                }
            }
        })
        .await
        .expect("socket did not end");
        (seen, ended)
    }

    /// Asserts nothing (but control frames) arrives for `d`.
    pub async fn expect_silence(&mut self, d: Duration) {
        if let Ok(r) = tokio::time::timeout(d, self.next_json()).await {
            panic!("expected silence, got {r:?}");
        }
    }

    /// Proves the socket is still open and served: a ping gets its pong.
    pub async fn assert_alive(&mut self) {
        self.send(&ClientMessage::ping(777u64)).await;
        let pong = self.recv_type("pong").await;
        assert_eq!(pong["timestamp"], 777);
    }
}

/// The server clock's kind of timestamp, for the frames tests send.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `"host"` or `"client"` as a device type.
pub fn device_type(kind: &str) -> DeviceType {
    match kind {
        "host" => DeviceType::Host,
        "client" => DeviceType::Client,
        other => panic!("no device type {other}"),
    }
}

/// The fields of a `join` of `device` (named `"<device> name"`), to adjust before sending.
pub fn join_fields(session: &str, device: &str, kind: &str) -> Join {
    let ClientMessage::Join(join) = join_msg(session, device, kind) else {
        unreachable!()
    };
    join
}

/// A `join` of `device`, named `"<device> name"`.
pub fn join_msg(session: &str, device: &str, kind: &str) -> ClientMessage {
    ClientMessage::join(session, device, format!("{device} name"), device_type(kind))
}

/// A `message` with this data, to everyone else or to one member.
pub fn message(data: Value, to: Option<&str>) -> ClientMessage {
    ClientMessage::message(RawJson::from_value(&data), to)
}

/// Joins and returns the client with its `welcome` and `member_list`.
pub async fn join(
    addr: SocketAddr,
    session: &str,
    device: &str,
    kind: &str,
) -> (Client, Value, Value) {
    let mut c = Client::connect(addr).await;
    c.send(&join_msg(session, device, kind)).await;
    let welcome = c.recv_type("welcome").await;
    let list = c.recv_type("member_list").await;
    (c, welcome, list)
}

/// A host and `n` clients in `session`; returns them with their client ids (host first).
/// Every `member_joined` is consumed.
pub async fn party(addr: SocketAddr, session: &str, n: usize) -> (Vec<Client>, Vec<String>) {
    let (host, w, _) = join(addr, session, "host-dev", "host").await;
    let mut clients = vec![host];
    let mut ids = vec![w["clientId"].as_str().unwrap().to_string()];
    for i in 0..n {
        let (c, w, _) = join(addr, session, &format!("dev-{i}"), "client").await;
        for other in clients.iter_mut() {
            other.recv_type("member_joined").await;
        }
        clients.push(c);
        ids.push(w["clientId"].as_str().unwrap().to_string());
    }
    (clients, ids)
}

pub fn http(server: &Server) -> String {
    format!("http://{}", server.local_addr())
}

/// `POST /v1/sessions` with this body: the status and the JSON answer (`null` if none).
pub async fn post(base: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/sessions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}
