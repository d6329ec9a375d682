//! The bare floor that `loudsync bench idle --floor` measures LoudSync against: a WebSocket
//! server on the same framing (`ws.rs`) and the same JSON codecs, with none of the rest.
//!
//! It answers `join` with an empty `member_list` (what the load generator waits for), `ping`
//! with `pong` carrying the same timestamp, and ignores everything else (heartbeats included).
//! No sessions, no timers, no outboxes, no metrics: one task per socket that reads a frame and
//! writes its answer. What LoudSync costs beyond this floor is what its own machinery costs.
//! It is a measuring instrument, not a server: never expose it.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use loudsync_protocol::app::{self, Dialect, EncodeContext};
use loudsync_protocol::{decode, encode, ClientMessage, ServerMessage, Stamp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::ws::{WsMessage, WsStream};

/// Largest HTTP upgrade request read.
const MAX_REQUEST: usize = 8 * 1024;

/// Serves the floor on `listener` until the process ends.
pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    loop {
        let (tcp, peer) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            if let Err(e) = connection(tcp, peer).await {
                tracing::debug!(%peer, error = %e, "floor connection");
            }
        });
    }
}

async fn connection(mut tcp: TcpStream, _peer: SocketAddr) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.ends_with(b"\r\n\r\n") {
        let n = tcp.read(&mut buf).await?;
        if n == 0 || request.len() + n > MAX_REQUEST {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&request);
    let Some(key) = text.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim().to_string())
    }) else {
        return tcp.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
    };
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        crate::http::accept_key(key.as_bytes())
    );
    tcp.write_all(response.as_bytes()).await?;
    let mut ws = WsStream::new(tcp, 64 * 1024);
    let mut dialect = None;
    while let Some(Ok(message)) = std::future::poll_fn(|cx| ws.poll_next(cx)).await {
        let WsMessage::Text(text) = message else {
            continue;
        };
        let dialect = *dialect.get_or_insert_with(|| app::detect(&text));
        let decoded = match dialect {
            Dialect::LoudSync => decode(&text),
            Dialect::App => app::decode(&text),
        };
        let reply = match decoded {
            Ok(ClientMessage::Ping { timestamp }) => (ServerMessage::Pong, Stamp::Echo(timestamp)),
            Ok(ClientMessage::Join(_)) => (
                ServerMessage::MemberList { members: vec![] },
                Stamp::Now(now_ms()),
            ),
            _ => continue,
        };
        let bytes = match dialect {
            Dialect::LoudSync => encode(&reply.0, &reply.1),
            Dialect::App => app::encode(
                &reply.0,
                &reply.1,
                &EncodeContext {
                    now_ms: now_ms(),
                    message_id: "msg_0_floor00",
                    address_of: &|_| None,
                },
            ),
        };
        ws.queue_text(bytes.as_bytes());
        std::future::poll_fn(|cx| ws.poll_flush(cx)).await?;
    }
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
