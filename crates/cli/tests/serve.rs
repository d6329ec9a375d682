//! The `loudsync serve` binary as an operator runs it: the listening line, settings from the
//! environment and flags, and a graceful SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use loudsync_protocol::{close_code, encode_client, ClientMessage, DeviceType};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_websockets::{ClientBuilder, Message, WebSocketStream};

struct Serve {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(args: &[&str], env: &[(&str, &str)]) -> Serve {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loudsync"));
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0", "--log", "warn"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn loudsync");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("loudsync listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .parse()
        .expect("address");
    Serve { child, addr }
}

async fn ws(addr: SocketAddr) -> WebSocketStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    ClientBuilder::new()
        .uri(&format!("ws://{addr}/"))
        .unwrap()
        .connect_on(tcp)
        .await
        .unwrap()
        .0
}

async fn join(
    addr: SocketAddr,
    device: &str,
    kind: DeviceType,
) -> (WebSocketStream<TcpStream>, Value) {
    let mut c = ws(addr).await;
    let join = encode_client(&ClientMessage::join("s", device, device, kind), 0).unwrap();
    c.send(Message::text(join)).await.unwrap();
    let first = next_text(&mut c).await;
    (c, first)
}

async fn next_text(c: &mut WebSocketStream<TcpStream>) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(3), c.next())
            .await
            .expect("timely message")
            .expect("open")
            .unwrap_or_else(|e| panic!("read error: {e:?}"));
        if let Some(t) = m.as_text() {
            return serde_json::from_str(t).unwrap();
        }
        assert!(!m.is_close(), "closed");
    }
}

#[tokio::test]
async fn prints_the_real_address_and_serves() {
    let s = serve(&[], &[]);
    assert_ne!(s.addr.port(), 0);
    let (_host, welcome) = join(s.addr, "h", DeviceType::Host).await;
    assert_eq!(welcome["type"], "welcome");
}

#[tokio::test]
async fn environment_sets_capacity_and_flags_win_over_it() {
    let s = serve(&[], &[("LOUDSYNC_MAX_MEMBERS", "1")]);
    let (_host, _) = join(s.addr, "h", DeviceType::Host).await;
    let (_c, reply) = join(s.addr, "g", DeviceType::Client).await;
    assert_eq!(reply["code"], "session_full");

    let s = serve(&["--max-members", "2"], &[("LOUDSYNC_MAX_MEMBERS", "1")]);
    let (_host, _) = join(s.addr, "h", DeviceType::Host).await;
    let (_c, reply) = join(s.addr, "g", DeviceType::Client).await;
    assert_eq!(reply["type"], "welcome");
}

#[tokio::test]
async fn sigterm_closes_members_with_session_closed_and_exits() {
    stop_with_signal("-TERM").await;
}

#[tokio::test]
async fn ctrl_c_closes_members_with_session_closed_and_exits() {
    stop_with_signal("-INT").await;
}

async fn stop_with_signal(signal: &str) {
    let mut s = serve(&[], &[]);
    let (mut host, _) = join(s.addr, "h", DeviceType::Host).await;
    assert_eq!(next_text(&mut host).await["type"], "member_list");
    let status = Command::new("kill")
        .args([signal, &s.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let closed = next_text(&mut host).await;
    assert_eq!(closed["type"], "session_closed");
    assert_eq!(closed["reason"], "Server shutting down");
    let end = tokio::time::timeout(Duration::from_secs(3), host.next())
        .await
        .unwrap();
    let m = end.expect("close frame").expect("ok");
    let (code, _) = m.as_close().expect("a close frame");
    assert_eq!(u16::from(code), close_code::GOING_AWAY);
    drop(host);
    let started = Instant::now();
    loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn bad_settings_are_reported_not_ignored() {
    let out = Command::new(env!("CARGO_BIN_EXE_loudsync"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--heartbeat-timeout",
            "soon",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("heartbeat-timeout"), "{err}");
}

#[test]
fn help_documents_the_settings() {
    let out = Command::new(env!("CARGO_BIN_EXE_loudsync"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--max-members",
        "--heartbeat-timeout",
        "--heartbeat-check-interval",
        "--max-message-bytes",
        "--rate-limit",
        "--admin-token",
        "LOUDSYNC_",
    ] {
        assert!(help.contains(flag), "{flag} missing from help");
    }
}
