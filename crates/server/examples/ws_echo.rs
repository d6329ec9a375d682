//! A WebSocket echo server on the server's own framing ([`loudsync_server::ws`]), for
//! conformance testing (`.ci/autobahn.sh` runs the Autobahn|Testsuite against it): every text
//! and binary message is sent back as it came; pings are answered and closes echoed by
//! [`WsStream`] itself; a protocol violation closes with its code.
//!
//! `cargo run --release -p loudsync-server --example ws_echo -- PORT [MAX_MESSAGE_BYTES]`
//!
//! Listens on 127.0.0.1:PORT only. The upgrade is a minimal hyper HTTP/1.1 server doing the
//! RFC 6455 handshake; the largest message accepted is 16 MiB unless given.

use std::convert::Infallible;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::time::Duration;

use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use loudsync_server::ws::{WsError, WsMessage, WsStream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: ws_echo PORT [MAX_MESSAGE_BYTES]";
    let port: u16 = args.next().ok_or(usage)?.parse().map_err(|_| usage)?;
    let max_message: usize = match args.next() {
        Some(n) => n.parse().map_err(|_| usage)?,
        None => 16 * 1024 * 1024,
    };
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    println!("ws_echo listening on ws://{}/", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        tokio::spawn(async move {
            let service = service_fn(move |req| upgrade(req, max_message));
            let conn = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                eprintln!("ws_echo: http: {e}");
            }
        });
    }
}

/// Answers a WebSocket upgrade with 101 and echoes on the upgraded connection; anything else
/// gets a 400.
async fn upgrade(
    mut req: Request<Incoming>,
    max_message: usize,
) -> Result<Response<String>, Infallible> {
    let has_token = |name: header::HeaderName, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    let version_13 = req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        == Some(b"13");
    let (true, true, true, Some(key)) = (
        has_token(header::UPGRADE, "websocket"),
        has_token(header::CONNECTION, "upgrade"),
        version_13,
        key,
    ) else {
        let mut bad = Response::new("expected a WebSocket (version 13) upgrade\n".to_string());
        *bad.status_mut() = StatusCode::BAD_REQUEST;
        return Ok(bad);
    };
    let accept = loudsync_server::http::accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => echo(WsStream::new(TokioIo::new(upgraded), max_message)).await,
            Err(e) => eprintln!("ws_echo: upgrade failed: {e}"),
        }
    });
    let mut response = Response::new(String::new());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    loudsync_server::http::switching_protocols(response.headers_mut(), &accept);
    Ok(response)
}

/// Sends every message back until the connection is over, then closes it gracefully.
async fn echo<S>(mut ws: WsStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match poll_fn(|cx| ws.poll_next(cx)).await {
            None => break,
            Some(Ok(WsMessage::Text(text))) => ws.queue_text(text.as_bytes()),
            Some(Ok(WsMessage::Binary(data))) => ws.queue_binary(&data),
            // Pings were answered and closes echoed by `poll_next`; pongs need nothing.
            Some(Ok(_)) => {}
            // The close with the violation's code is queued; the next poll sends it and ends.
            Some(Err(WsError::Violation(_))) => {}
            Some(Err(WsError::Io(_))) => return,
        }
        if ws.pending_bytes() > 0 && poll_fn(|cx| ws.poll_flush(cx)).await.is_err() {
            return;
        }
    }
    // Our close is written. Closing the socket while the client's next bytes are unread (after
    // a violation, what it sent behind the bad frame) would reset the connection, which can
    // discard at the client what it has not read yet: our echoes and our close. So: FIN, then
    // read until the client closes too, for a while at most.
    let mut io = ws.into_inner();
    if io.shutdown().await.is_ok() {
        let mut sink = [0u8; 4096];
        let drain = async { while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {} };
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    }
}
