//! Helpers for the pairing tests (issue 12, `/crsocket/{NAME}/...`): a server with the three
//! test apps and short pairing timers, a pairing WebSocket client (on [`Client`]), a raw SSE
//! reader that sees the stream's exact bytes, raw HTTP requests, and `sendevent/` URLs.
//!
//! The expectations are written independently of the server's own encoders: the tests'
//! [`rawurlencode`] and [`enc`] are their own.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use loudsync_server::ServerConfig;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Client, WAIT};

/// The settings of PROTOCOL §16's tests: apps `alpha`, `beta` (open) and `secret` (tokens
/// `tokA`, `tokB`), pairing alive timeout 2 s, checks every 200 ms.
pub fn pairing_config() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        apps: vec!["alpha".into(), "beta".into(), "secret:tokA,tokB".into()],
        pairing_alive_timeout: Duration::from_secs(2),
        heartbeat_check_interval: Duration::from_millis(200),
        close_timeout: Duration::from_millis(300),
        drain_timeout: Duration::from_secs(5),
        ..ServerConfig::default()
    }
}

/// [`pairing_config`] with a shorter alive timeout and check interval, for the tests that
/// wait for them.
pub fn fast_alive_config(timeout: Duration, interval: Duration) -> ServerConfig {
    ServerConfig {
        pairing_alive_timeout: timeout,
        heartbeat_check_interval: interval,
        ..pairing_config()
    }
}

/// A `cr_identify` frame; `None` fields are left out.
pub fn identify_frame(role: Option<&str>, id: Option<&str>, token: Option<&str>) -> String {
    let mut v = json!({"type": "cr_identify"});
    if let Some(role) = role {
        v["clientRole"] = json!(role);
    }
    if let Some(id) = id {
        v["clientId"] = json!(id);
    }
    if let Some(token) = token {
        v["accessToken"] = json!(token);
    }
    v.to_string()
}

/// A pairing WebSocket to app `app`, not identified yet.
pub async fn ws_open(addr: SocketAddr, app: &str) -> Client {
    Client::connect_path(addr, &format!("/crsocket/{app}/ws")).await
}

/// A pairing WebSocket identified as `role` with `id` in `app` (token `tok`): the client and
/// its `cr_welcome`, which is checked field by field.
pub async fn ws_identified(addr: SocketAddr, app: &str, role: &str, id: &str) -> Client {
    let token = if app == "secret" { "tokA" } else { "tok" };
    let mut c = ws_open(addr, app).await;
    c.send_text(&identify_frame(Some(role), Some(id), Some(token)))
        .await;
    let welcome = c.recv_type("cr_welcome").await;
    assert_eq!(
        without_timestamp(welcome),
        json!({"type": "cr_welcome", "appId": app, "clientId": id, "clientRole": role})
    );
    c
}

/// `v` without its `timestamp`, which must be an integer (ms).
pub fn without_timestamp(mut v: Value) -> Value {
    let ts = v
        .as_object_mut()
        .and_then(|o| o.remove("timestamp"))
        .unwrap_or_else(|| panic!("no timestamp in {v}"));
    assert!(ts.is_u64(), "timestamp is not an integer ms: {ts}");
    v
}

/// The next frame, which must be a `cr_event`: without its timestamp.
pub async fn recv_event(c: &mut Client) -> Value {
    without_timestamp(c.recv_type("cr_event").await)
}

/// A server `cr_event` as P11 writes it (every field), without its timestamp.
#[allow(clippy::too_many_arguments)]
pub fn server_event(
    event_type: &str,
    sub: &str,
    params: &[&str],
    buffered: bool,
    logged: bool,
    interceptable: bool,
    send_ct: Option<u64>,
    sender: &str,
) -> Value {
    json!({
        "type": "cr_event",
        "eventType": event_type,
        "eventSubType": sub,
        "eventParams": params,
        "buffered": buffered,
        "logged": logged,
        "interceptable": interceptable,
        "sendCt": send_ct,
        "receiveCt": null,
        "senderClientId": sender,
    })
}

/// The server reject of P22 from `pinged`, as a WebSocket sender gets it.
pub fn ws_reject(subtype: &str, pinged: &str) -> Value {
    server_event("reject", subtype, &[], false, false, true, None, pinged)
}

/// A minimal `cr_event` frame (defaults for every optional field).
pub fn event_frame(recipient: &str, event_type: &str) -> String {
    json!({"type": "cr_event", "recipientClientId": recipient, "eventType": event_type}).to_string()
}

/// PHP's `rawurlencode`: UTF-8 bytes, all but `A-Za-z0-9-_.~` as `%XX` (uppercase hex).
pub fn rawurlencode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query value, percent-encoded (what a browser's `encodeURIComponent` leaves is a subset).
pub fn enc(text: &str) -> String {
    rawurlencode(text)
}

/// The exact bytes of one SSE event.
pub fn sse_bytes(event: &str, data: &str) -> String {
    format!("event: {event}\ndata: {}\n\n", rawurlencode(data))
}

/// The path of an `eventsource/` request.
pub fn eventsource_path(app: &str, id: &str, role: &str, token: &str) -> String {
    format!(
        "/crsocket/{app}/eventsource/?clientId={}&clientRole={}&accessToken={}",
        enc(id),
        enc(role),
        enc(token)
    )
}

/// A `sendevent/` request's parameters.
#[derive(Clone, Copy)]
pub struct SendReq<'a> {
    /// The app.
    pub app: &'a str,
    /// `clientId`.
    pub id: &'a str,
    /// `clientRole`.
    pub role: &'a str,
    /// `accessToken`.
    pub token: &'a str,
    /// `recipientClientId`.
    pub to: &'a str,
    /// `eventType`.
    pub kind: &'a str,
    /// `eventData`.
    pub data: &'a str,
}

impl SendReq<'_> {
    /// The request's path and query.
    pub fn path(&self) -> String {
        format!(
            "/crsocket/{}/sendevent/?clientId={}&clientRole={}&accessToken={}&recipientClientId={}&eventType={}&eventData={}",
            self.app,
            enc(self.id),
            enc(self.role),
            enc(self.token),
            enc(self.to),
            enc(self.kind),
            enc(self.data)
        )
    }

    /// Sends it with GET: the status (the body must be empty).
    pub async fn get(&self, addr: SocketAddr) -> u16 {
        let r = reqwest::get(format!("http://{addr}{}", self.path()))
            .await
            .expect("sendevent");
        let status = r.status().as_u16();
        let body = r.bytes().await.unwrap();
        assert!(body.is_empty(), "sendevent answered a body: {body:?}");
        status
    }

    /// Sends it with POST (a body the server ignores): the status (the body must be empty).
    pub async fn post(&self, addr: SocketAddr) -> u16 {
        let r = reqwest::Client::new()
            .post(format!("http://{addr}{}", self.path()))
            .body("ignored=1&eventType=bogus")
            .send()
            .await
            .expect("sendevent");
        let status = r.status().as_u16();
        let body = r.bytes().await.unwrap();
        assert!(body.is_empty(), "sendevent answered a body: {body:?}");
        status
    }
}

/// `sendevent/` of a crEvent from `id` (`role`, token `tok`) in `app` to `to`: the status.
pub async fn send_event(
    addr: SocketAddr,
    app: &str,
    id: &str,
    role: &str,
    to: &str,
    data: &str,
) -> u16 {
    SendReq {
        app,
        id,
        role,
        token: "tok",
        to,
        kind: "crEvent",
        data,
    }
    .get(addr)
    .await
}

/// An HTTP response read off a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// The head (status line and headers), lowercased.
    pub head: String,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The value of header `name` (lowercase), if any.
    pub fn header(&self, name: &str) -> Option<String> {
        header_of(&self.head, name)
    }
}

fn header_of(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then(|| v.trim().to_string())
    })
}

/// Sends `request` (a whole HTTP/1.1 request) on a new connection and reads one response
/// with a `Content-Length` or chunked body.
pub async fn raw_request(addr: SocketAddr, request: &str) -> RawResponse {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut reader = RawReader::new(tcp);
    let (status, head) = tokio::time::timeout(WAIT, reader.head())
        .await
        .expect("a response head in time");
    let body = if let Some(len) = header_of(&head, "content-length") {
        let len: usize = len.parse().unwrap();
        tokio::time::timeout(WAIT, reader.exact(len))
            .await
            .expect("the body in time")
    } else {
        let mut body = Vec::new();
        while let Some(chunk) = tokio::time::timeout(WAIT, reader.chunk())
            .await
            .expect("a chunk in time")
        {
            body.extend(chunk);
        }
        body
    };
    RawResponse { status, head, body }
}

/// Reads an HTTP/1.1 response off a socket piece by piece.
pub struct RawReader {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl RawReader {
    fn new(tcp: TcpStream) -> Self {
        RawReader {
            tcp,
            buf: Vec::new(),
        }
    }

    /// Reads more bytes; `false` at the end of the connection.
    async fn fill(&mut self) -> bool {
        let mut b = [0u8; 16 * 1024];
        match self.tcp.read(&mut b).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&b[..n]);
                true
            }
        }
    }

    async fn head(&mut self) -> (u16, String) {
        loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8(self.buf[..pos].to_vec()).unwrap();
                self.buf.drain(..pos + 4);
                let status = head[9..12].parse().unwrap();
                return (status, head.to_lowercase());
            }
            assert!(self.fill().await, "connection ended before the head");
        }
    }

    async fn exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill().await, "connection ended in the body");
        }
        self.buf.drain(..n).collect()
    }

    /// The next chunk of a chunked body; `None` after the last (or at the connection's end).
    async fn chunk(&mut self) -> Option<Vec<u8>> {
        let line = loop {
            if let Some(pos) = find(&self.buf, b"\r\n") {
                let line = String::from_utf8(self.buf[..pos].to_vec()).unwrap();
                self.buf.drain(..pos + 2);
                break line;
            }
            if !self.fill().await {
                return None;
            }
        };
        let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
        let data = self.exact(size + 2).await;
        assert_eq!(&data[size..], b"\r\n", "chunk not followed by CRLF");
        if size == 0 {
            return None;
        }
        Some(data[..size].to_vec())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// An open `eventsource/` stream read off a raw socket: its head, then its events as the
/// exact bytes the server wrote.
pub struct Sse {
    reader: RawReader,
    /// The status code.
    pub status: u16,
    /// The response head, lowercased.
    pub head: String,
    chunked: bool,
    body: Vec<u8>,
    ended: bool,
}

impl Sse {
    /// Opens `path` (an `eventsource/` path and query).
    pub async fn open(addr: SocketAddr, path: &str) -> Sse {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut reader = RawReader::new(tcp);
        let (status, head) = tokio::time::timeout(WAIT, reader.head())
            .await
            .expect("the stream's head in time");
        let chunked = header_of(&head, "transfer-encoding").as_deref() == Some("chunked");
        Sse {
            reader,
            status,
            head,
            chunked,
            body: Vec::new(),
            ended: false,
        }
    }

    /// Opens a stream for `id` as `role` in `app` (token `tok`, or `tokA` in `secret`) and
    /// reads its `hello`: the stream and its id. Checks the head (P15).
    pub async fn identified(addr: SocketAddr, app: &str, id: &str, role: &str) -> (Sse, String) {
        let token = if app == "secret" { "tokA" } else { "tok" };
        let mut s = Sse::open(addr, &eventsource_path(app, id, role, token)).await;
        s.assert_stream_head();
        let (kind, sid) = s.next_event().await;
        assert_eq!(kind, "hello");
        assert!(
            !sid.is_empty() && sid.bytes().all(|b| b.is_ascii_digit()),
            "stream id {sid:?}"
        );
        (s, sid)
    }

    /// Asserts the head of P15: 200, `text/event-stream`, `Cache-Control: no-cache`.
    pub fn assert_stream_head(&self) {
        assert_eq!(self.status, 200, "{}", self.head);
        assert_eq!(
            header_of(&self.head, "content-type").as_deref(),
            Some("text/event-stream"),
            "{}",
            self.head
        );
        assert_eq!(
            header_of(&self.head, "cache-control").as_deref(),
            Some("no-cache"),
            "{}",
            self.head
        );
    }

    /// Reads more of the body; `false` at its end.
    async fn more(&mut self) -> bool {
        if self.ended {
            return false;
        }
        if self.chunked {
            match self.reader.chunk().await {
                Some(c) => {
                    self.body.extend(c);
                    true
                }
                None => {
                    self.ended = true;
                    false
                }
            }
        } else {
            let had = self.reader.buf.len();
            if had > 0 {
                self.body.append(&mut self.reader.buf);
                return true;
            }
            if self.reader.fill().await {
                self.body.append(&mut self.reader.buf);
                true
            } else {
                self.ended = true;
                false
            }
        }
    }

    /// The next event's exact bytes (comment-only blocks skipped), or `None` at the end.
    async fn next_block_untimed(&mut self) -> Option<String> {
        loop {
            if let Some(pos) = find(&self.body, b"\n\n") {
                let block: Vec<u8> = self.body.drain(..pos + 2).collect();
                let block = String::from_utf8(block).expect("SSE is UTF-8");
                let kept: String = block
                    .split_inclusive('\n')
                    .filter(|l| !l.starts_with(':'))
                    .collect();
                if kept.trim().is_empty() {
                    continue;
                }
                return Some(kept);
            }
            if !self.more().await {
                assert!(
                    self.body.iter().all(|b| b.is_ascii_whitespace()),
                    "stream ended in an event: {:?}",
                    String::from_utf8_lossy(&self.body)
                );
                return None;
            }
        }
    }

    /// The next event's exact bytes; panics at the end or after [`WAIT`].
    pub async fn next_block(&mut self) -> String {
        tokio::time::timeout(WAIT, self.next_block_untimed())
            .await
            .expect("no SSE event in time")
            .expect("the stream ended")
    }

    /// The next event as (type, data still percent-encoded); checks its exact form.
    pub async fn next_event(&mut self) -> (String, String) {
        let block = self.next_block().await;
        parse_block(&block)
    }

    /// Asserts the stream ends (within [`WAIT`]) with no further event.
    pub async fn expect_end(&mut self) {
        let next = tokio::time::timeout(WAIT, self.next_block_untimed())
            .await
            .expect("the stream did not end");
        assert_eq!(next, None, "an event instead of the end");
    }

    /// Asserts no event arrives (and the stream does not end) for `d`.
    pub async fn expect_silence(&mut self, d: Duration) {
        if let Ok(next) = tokio::time::timeout(d, self.next_block_untimed()).await {
            panic!("expected silence, got {next:?}");
        }
    }

    /// Waits up to `d` for the next event or the end, returning when it came.
    pub async fn next_within(&mut self, d: Duration) -> (Option<String>, Instant) {
        let next = tokio::time::timeout(d, self.next_block_untimed())
            .await
            .expect("nothing within the bound");
        (next, Instant::now())
    }
}

/// Splits `event: T\ndata: D\n\n` into (T, D), asserting that exact form.
pub fn parse_block(block: &str) -> (String, String) {
    let rest = block
        .strip_prefix("event: ")
        .unwrap_or_else(|| panic!("not an SSE event: {block:?}"));
    let (kind, rest) = rest.split_once('\n').unwrap();
    let data = rest
        .strip_prefix("data: ")
        .and_then(|d| d.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("not one data line: {block:?}"));
    assert!(!data.contains('\n'), "more than one data line: {block:?}");
    (kind.to_string(), data.to_string())
}
