//! A client that breaks the WebSocket protocol gets the close frame with the violation's code,
//! even when it sent more bytes behind the bad frame (closing a socket with unread bytes would
//! make the kernel reset the connection, and a reset can discard the close at the client).

mod common;

use std::time::Duration;

use common::*;
use loudsync_protocol::close_code;
use loudsync_server::ws::masked_client_frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const UPGRADE: &str = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// The close code in the first close frame of `bytes` (server frames are unmasked).
fn close_code_in(mut bytes: &[u8]) -> Option<u16> {
    while bytes.len() >= 2 {
        let (op, len) = (bytes[0] & 0x0F, (bytes[1] & 0x7F) as usize);
        let (header, len) = match len {
            126 => (4, u16::from_be_bytes([bytes[2], bytes[3]]) as usize),
            127 => return None,
            n => (2, n),
        };
        if bytes.len() < header + len {
            return None;
        }
        if op == 8 && len >= 2 {
            return Some(u16::from_be_bytes([bytes[header], bytes[header + 1]]));
        }
        bytes = &bytes[header + len..];
    }
    None
}

#[tokio::test]
async fn the_close_code_arrives_even_with_bytes_unread_behind_the_bad_frame() {
    let mut config = test_config();
    config.max_message_bytes = 1024;
    config.max_state_bytes = 512;
    config.outbound_queue_bytes = 4096;
    let server = start_with(config).await;
    let mut tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    tcp.write_all(UPGRADE.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        tcp.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    // A text frame over the 1 KiB limit, then 256 KiB more the server will never read.
    let mut bytes = masked_client_frame(true, 1, &[b'y'; 2000], [1, 2, 3, 4]);
    for _ in 0..2048 {
        bytes.extend(masked_client_frame(true, 1, &[b'z'; 120], [5, 6, 7, 8]));
    }
    let _ = tcp.write_all(&bytes).await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut got)).await;
    let read = read.expect("the server ends the connection in time");
    assert_eq!(
        close_code_in(&got),
        Some(close_code::MESSAGE_TOO_BIG),
        "no close frame with 1009 (read ended with {read:?} after {} bytes)",
        got.len()
    );
}
