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
    serve_logging(&["--log", "warn"], args, env, Stdio::null())
}

fn serve_logging(log: &[&str], args: &[&str], env: &[(&str, &str)], stderr: Stdio) -> Serve {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loudsync"));
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(log)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(stderr);
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

#[test]
fn help_shows_each_default_once() {
    let out = Command::new(env!("CARGO_BIN_EXE_loudsync"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert_eq!(help.matches("[default: info]").count(), 1, "{help}");
    assert!(help.contains("--admin-token-file <FILE>"), "{help}");
}

#[test]
fn logs_on_a_pipe_carry_no_colour_codes() {
    let mut s = serve_logging(&["--log", "info"], &[], &[], Stdio::piped());
    let mut stderr = s.child.stderr.take().unwrap();
    Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()
        .unwrap();
    let mut log = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut log).unwrap();
    assert!(log.contains("shutting down"), "{log}");
    assert!(!log.contains('\u{1b}'), "colour codes on a pipe: {log:?}");
}

/// A plain HTTP/1.1 request; the status code of the answer.
fn http_status(addr: SocketAddr, request: &str) -> u16 {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    tcp.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

#[test]
fn the_admin_token_file_keeps_the_token_off_the_command_line() {
    let dir = std::env::temp_dir().join(format!("loudsync-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("admin-token");
    std::fs::write(&file, "tok-7f3a\n").unwrap();
    let s = serve(&["--admin-token-file", file.to_str().unwrap()], &[]);
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", s.child.id())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains("tok-7f3a"));
    let get = |auth: &str| {
        http_status(
            s.addr,
            &format!("GET /v1/sessions HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"),
        )
    };
    assert_eq!(
        get("Authorization: Bearer tok-7f3a\r\n"),
        200,
        "the newline is not part of it"
    );
    assert_eq!(get(""), 401);
    // The variable names a file too; an empty file and both sources are refused at start.
    let s = serve(
        &[],
        &[("LOUDSYNC_ADMIN_TOKEN_FILE", file.to_str().unwrap())],
    );
    assert_eq!(
        http_status(
            s.addr,
            "GET /v1/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-7f3a\r\nConnection: close\r\n\r\n"
        ),
        200
    );
    let empty = dir.join("empty");
    std::fs::write(&empty, "").unwrap();
    for args in [
        vec!["--admin-token-file", empty.to_str().unwrap()],
        vec![
            "--admin-token-file",
            file.to_str().unwrap(),
            "--admin-token",
            "x",
        ],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_loudsync"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("empty") || err.contains("cannot be used with"),
            "{err}"
        );
    }
}

#[test]
fn with_tls_the_listening_line_says_https() {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let dir = std::env::temp_dir().join(format!("loudsync-serve-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_loudsync"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log",
            "warn",
            "--tls-cert",
        ])
        .arg(&cert_file)
        .arg("--tls-key")
        .arg(&key_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        line.starts_with("loudsync listening on https://127.0.0.1:"),
        "{line:?}"
    );
}
