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

/// `loudsync serve` with these flags and variables that must refuse to start: its exit code
/// and its stderr. A server that starts anyway is killed (after 10 s at the latest) and the
/// test fails.
fn refused(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loudsync"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--log", "warn"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn loudsync");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} {env:?}: the server started");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("listening"),
        "{args:?} {env:?}: the server started: {stdout}"
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts `serve` exits 1 with an `Error: ` line that says `says`.
fn refused_with(args: &[&str], env: &[(&str, &str)], says: &str) {
    let (code, err) = refused(args, env);
    assert_eq!(code, Some(1), "{args:?} {env:?}: {err}");
    assert!(err.starts_with("Error: "), "{args:?} {env:?}: {err}");
    assert!(
        err.contains(says),
        "{args:?} {env:?}: want {says:?} in {err}"
    );
}

/// A fresh folder for one test's files.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("loudsync-serve-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A TOML config file in `dir` holding `text`; its path.
fn toml(dir: &std::path::Path, name: &str, text: &str) -> String {
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    file.to_str().unwrap().to_string()
}

#[test]
fn apps_are_read_from_each_layer_and_a_duplicate_name_stops_the_server() {
    let dir = scratch("apps-dup");
    let twice = "app `alpha` is configured twice";
    refused_with(&["--app", "alpha", "--app", "alpha:tok"], &[], twice);
    refused_with(&[], &[("LOUDSYNC_APPS", "alpha;beta;alpha:tok")], twice);
    let file = toml(&dir, "dup.toml", "apps = [\"alpha\", \"alpha:tok\"]\n");
    refused_with(&["--config", &file], &[], twice);
    // Names are case-sensitive, as URL paths are: these are two apps.
    let _s = serve(&["--app", "alpha", "--app", "ALPHA:tok"], &[]);
}

#[test]
fn a_bad_app_spec_stops_the_server_naming_the_app_not_the_token() {
    let dir = scratch("apps-bad");
    for (spec, says) in [
        ("a:to,,k", "invalid app `a`: token 2 must be"),
        ("a:to k", "invalid app `a`: token 1 must be"),
        ("a:tok;x", "invalid app `a`: token 1 must be"),
        ("a:", "invalid app `a`: no token after `:`"),
        ("-a", "invalid app `-a`: the name"),
        ("", "invalid app ``"),
    ] {
        // `--app=SPEC`, so clap takes `-a` as the value, not as a flag.
        refused_with(&["--app", "ok", &format!("--app={spec}")], &[], says);
        let file = toml(&dir, "bad.toml", &format!("apps = [{spec:?}]\n"));
        refused_with(&["--config", &file], &[], says);
    }
    // The token itself is never echoed.
    let (_, err) = refused(&["--app", "a:g00d,b@d s3cr3t"], &[]);
    assert!(!err.contains("s3cr3t"), "{err}");
    // The variable: an empty item is refused like --app "", and says which variable it was.
    for (value, says) in [
        ("a:to,,k", "LOUDSYNC_APPS: invalid app `a`: token 2"),
        ("a;;b", "LOUDSYNC_APPS: invalid app ``"),
        ("a;", "LOUDSYNC_APPS: invalid app ``"),
        ("a:to k", "LOUDSYNC_APPS: invalid app `a`: token 1"),
    ] {
        refused_with(&[], &[("LOUDSYNC_APPS", value)], says);
    }
}

#[test]
fn app_flags_beat_the_variable_which_beats_the_file() {
    let dir = scratch("apps-layers");
    let bad_file = toml(&dir, "bad.toml", "apps = [\"x\", \"x\"]\n");
    let good_file = toml(&dir, "good.toml", "apps = [\"alpha\"]\n");
    let bad_env = [("LOUDSYNC_APPS", "y;y")];
    // Each layer replaces the ones below it as a whole, so a bad list below is never read.
    let _s = serve(&["--app", "alpha"], &bad_env);
    let _s = serve(&["--app", "alpha", "--config", &bad_file], &bad_env);
    let _s = serve(&["--config", &bad_file], &[("LOUDSYNC_APPS", "alpha")]);
    // An empty variable is "no app", over the file's list too.
    let _s = serve(&["--config", &bad_file], &[("LOUDSYNC_APPS", "")]);
    // And the other way round a bad upper layer is what counts.
    refused_with(
        &["--config", &good_file],
        &bad_env,
        "app `y` is configured twice",
    );
    refused_with(
        &["--app", "z", "--app", "z"],
        &[("LOUDSYNC_APPS", "alpha")],
        "app `z` is configured twice",
    );
}

#[test]
fn the_pairing_alive_timeout_must_be_a_positive_duration() {
    let dir = scratch("alive");
    let says = "pairing-alive-timeout must be greater than zero";
    refused_with(&["--pairing-alive-timeout", "0s"], &[], says);
    refused_with(&[], &[("LOUDSYNC_PAIRING_ALIVE_TIMEOUT", "0ms")], says);
    let file = toml(&dir, "zero.toml", "pairing-alive-timeout = \"0s\"\n");
    refused_with(&["--config", &file], &[], says);
    // Not a duration at all is clap's parse error: exit 2.
    let (code, err) = refused(&["--pairing-alive-timeout", "soon"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--pairing-alive-timeout"), "{err}");
    // The flag beats a bad variable and a bad file.
    let _s = serve(
        &["--pairing-alive-timeout", "2s", "--config", &file],
        &[("LOUDSYNC_PAIRING_ALIVE_TIMEOUT", "0s")],
    );
}

#[test]
fn the_pairing_pages_must_be_an_existing_directory() {
    let dir = scratch("pages");
    let missing = dir.join("no-such-folder");
    let missing = missing.to_str().unwrap();
    refused_with(
        &["--app", "alpha", "--pairing-pages", missing],
        &[],
        &format!("pairing-pages `{missing}` does not exist"),
    );
    refused_with(
        &[],
        &[("LOUDSYNC_PAIRING_PAGES", missing)],
        "does not exist",
    );
    let file = dir.join("index.html");
    std::fs::write(&file, "<p>a file</p>").unwrap();
    let file = file.to_str().unwrap();
    refused_with(&["--pairing-pages", file], &[], "is not a directory");
    let cfg = toml(
        &dir,
        "pages.toml",
        &format!("pairing-pages = {missing:?}\n"),
    );
    refused_with(&["--config", &cfg], &[], "does not exist");
    let _s = serve(&["--pairing-pages", dir.to_str().unwrap()], &[]);
    let _s = serve(&[], &[("LOUDSYNC_PAIRING_PAGES", dir.to_str().unwrap())]);
}

#[test]
fn help_documents_the_pairing_settings() {
    let out = Command::new(env!("CARGO_BIN_EXE_loudsync"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for text in [
        "--app <NAME[:TOKEN,...]>",
        "pairing is off",
        "LOUDSYNC_APPS",
        "apps = [",
        "--pairing-alive-timeout",
        "[default: 25s]",
        "LOUDSYNC_PAIRING_ALIVE_TIMEOUT",
        "--pairing-pages <DIR>",
        "LOUDSYNC_PAIRING_PAGES",
        "--pairing-cors-origin <ORIGIN>",
        "LOUDSYNC_PAIRING_CORS_ORIGINS",
        "pairing-cors-origins = [",
    ] {
        assert!(help.contains(text), "{text} missing from help:\n{help}");
    }
}

/// A plain HTTP/1.1 `GET path` with `headers` (each `Name: value\r\n`); the whole answer,
/// header names in lower case as the server writes them.
fn http_get(addr: SocketAddr, path: &str, headers: &str) -> String {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// Whether `serve` at `addr` has the pairing app `name`: its `clientid/` hands out an id
/// (200), or it answers 404 `app_not_found`; anything else fails the test.
fn has_app(addr: SocketAddr, name: &str) -> bool {
    let answer = http_get(addr, &format!("/crsocket/{name}/clientid/"), "");
    if answer.starts_with("HTTP/1.1 200 ") {
        assert!(answer.contains("<clientId value='"), "{answer}");
        true
    } else {
        assert!(answer.starts_with("HTTP/1.1 404 "), "{answer}");
        assert!(answer.contains("\"app_not_found\""), "{answer}");
        false
    }
}

#[test]
fn a_started_server_answers_for_the_apps_of_the_winning_layer_only() {
    let dir = scratch("apps-live");
    let file = toml(&dir, "apps.toml", "apps = [\"delta\"]\n");
    let s = serve(&["--app", "alpha"], &[]);
    assert!(has_app(s.addr, "alpha"));
    let nope = http_get(s.addr, "/crsocket/nope/clientid/", "");
    assert!(nope.starts_with("HTTP/1.1 404 "), "{nope}");
    assert!(
        nope.contains(r#"{"code":"app_not_found","message":"no pairing app `nope`"}"#),
        "{nope}"
    );
    let s = serve(&[], &[("LOUDSYNC_APPS", "beta;gamma:tokA,tokB")]);
    assert!(has_app(s.addr, "beta") && has_app(s.addr, "gamma"));
    assert!(!has_app(s.addr, "alpha"));
    let s = serve(&["--config", &file], &[]);
    assert!(has_app(s.addr, "delta"));
    // Flags over the variable over the file, each list replacing the one below.
    let s = serve(
        &["--app", "alpha", "--config", &file],
        &[("LOUDSYNC_APPS", "beta")],
    );
    assert!(has_app(s.addr, "alpha"));
    assert!(!has_app(s.addr, "beta") && !has_app(s.addr, "delta"));
    let s = serve(&["--config", &file], &[("LOUDSYNC_APPS", "beta")]);
    assert!(has_app(s.addr, "beta") && !has_app(s.addr, "delta"));
    // With no app pairing is off.
    let s = serve(&[], &[]);
    let off = http_get(s.addr, "/crsocket/alpha/clientid/", "");
    assert!(off.starts_with("HTTP/1.1 404 "), "{off}");
}

#[test]
fn cors_origins_come_from_flags_the_comma_separated_variable_or_the_file() {
    let dir = scratch("cors");
    let allowed = |addr: SocketAddr, origin: &str| {
        let answer = http_get(
            addr,
            "/crsocket/alpha/clientid/",
            &format!("Origin: {origin}\r\n"),
        );
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        answer.contains(&format!("access-control-allow-origin: {origin}\r\n"))
    };
    let env = [(
        "LOUDSYNC_PAIRING_CORS_ORIGINS",
        "https://a.example,https://b.example",
    )];
    let s = serve(&["--app", "alpha"], &env);
    assert!(allowed(s.addr, "https://a.example") && allowed(s.addr, "https://b.example"));
    assert!(!allowed(s.addr, "https://c.example"));
    let s = serve(
        &[
            "--app",
            "alpha",
            "--pairing-cors-origin",
            "https://c.example",
        ],
        &env,
    );
    assert!(allowed(s.addr, "https://c.example"));
    assert!(
        !allowed(s.addr, "https://a.example"),
        "the flag replaces the variable"
    );
    let file = toml(
        &dir,
        "cors.toml",
        "apps = [\"alpha\"]\npairing-cors-origins = [\"https://d.example\"]\n",
    );
    let s = serve(&["--config", &file], &[]);
    assert!(allowed(s.addr, "https://d.example") && !allowed(s.addr, "https://a.example"));
    let s = serve(&["--app", "alpha"], &[]);
    assert!(
        !allowed(s.addr, "https://a.example"),
        "no CORS unless asked"
    );
}

#[test]
fn the_pairing_pages_folder_is_served_under_crsocket() {
    let dir = scratch("pages-live");
    std::fs::create_dir_all(dir.join("alpha/controller")).unwrap();
    std::fs::write(
        dir.join("alpha/controller/index.html"),
        "<title>controller page</title>",
    )
    .unwrap();
    let s = serve(
        &["--app", "alpha"],
        &[("LOUDSYNC_PAIRING_PAGES", dir.to_str().unwrap())],
    );
    let page = http_get(s.addr, "/crsocket/alpha/controller/", "");
    assert!(page.starts_with("HTTP/1.1 200 "), "{page}");
    assert!(page.ends_with("<title>controller page</title>"), "{page}");
    assert!(has_app(s.addr, "alpha"), "the endpoints beside the pages");
}
