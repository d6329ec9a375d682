//! `loudsync host` and `loudsync join` as scripts use them: JSON lines and exit codes, and
//! the commands they read from stdin (the handoff: `r`, `h`, `a`, ...).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use loudsync_client::{Client, ClientConfig};
use loudsync_server::{Server, ServerConfig};
use serde_json::Value;

async fn server() -> Server {
    Server::bind(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        latency_interval: Duration::from_millis(200),
        ..ServerConfig::default()
    })
    .await
    .unwrap()
}

struct Proc {
    child: Child,
    /// Each stdout line as printed, and as JSON (a string if it is not JSON).
    lines: mpsc::Receiver<(String, Value)>,
    /// Its stdin, for [`spawn_typing`]'s processes (others get an empty stdin).
    stdin: Option<ChildStdin>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(args: &[&str]) -> Proc {
    spawn_env(args, &[])
}

fn spawn_env(args: &[&str], env: &[(&str, &str)]) -> Proc {
    spawn_with(args, env, Stdio::null())
}

/// A process whose stdin the test types into ([`Proc::type_line`]).
fn spawn_typing(args: &[&str]) -> Proc {
    let mut p = spawn_with(args, &[], Stdio::piped());
    p.stdin = p.child.stdin.take();
    p
}

fn spawn_with(args: &[&str], env: &[(&str, &str)], stdin: Stdio) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_loudsync"))
        .args(args)
        .env_remove("LOUDSYNC_PASSWORD")
        .env_remove("LOUDSYNC_TOKEN")
        .envs(env.iter().copied())
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout: ChildStdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let value = serde_json::from_str(&line).unwrap_or(Value::String(line.clone()));
            let _ = tx.send((line, value));
        }
    });
    Proc {
        child,
        lines,
        stdin: None,
    }
}

impl Proc {
    /// Types `line` and Enter, as a person at the terminal would.
    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("spawned with spawn_typing");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// The next JSON line whose `event` is `kind` and that `matches`.
    fn until_where(&self, kind: &str, matches: impl Fn(&Value) -> bool) -> Value {
        loop {
            let v = self.until(kind);
            if matches(&v) {
                return v;
            }
        }
    }

    /// The next JSON line whose `event` is `kind`.
    fn until(&self, kind: &str) -> Value {
        self.until_raw(kind).1
    }

    /// The next JSON line whose `event` is `kind`, also as printed.
    fn until_raw(&self, kind: &str) -> (String, Value) {
        loop {
            let (line, v) = self
                .lines
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or_else(|_| panic!("no `{kind}` line"));
            if v["event"] == kind {
                return (line, v);
            }
        }
    }

    fn exit_code(&mut self) -> i32 {
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().expect("exited normally");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("did not exit");
    }

    fn signal(&self, sig: &str) {
        Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
    }
}

fn url(server: &Server) -> String {
    format!("ws://{}/", server.local_addr())
}

#[tokio::test(flavor = "multi_thread")]
async fn host_and_join_then_ctrl_c_on_the_host_closes_the_session() {
    let server = server().await;
    let u = url(&server);
    let mut host = spawn(&[
        "host",
        "--session",
        "party",
        "--session-name",
        "Friday",
        "--device-name",
        "Mac",
        "--url",
        &u,
        "--json",
    ]);
    let welcome = host.until("welcome");
    assert_eq!(welcome["session"]["name"], "Friday");
    let mut guest = spawn(&[
        "join",
        "--session",
        "party",
        "--device-name",
        "Phone",
        "--url",
        &u,
    ]); // a pipe: JSON by default
    let list = guest.until("member_list");
    let names: Vec<_> = list["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].clone())
        .collect();
    assert_eq!(names, vec![Value::from("Mac"), Value::from("Phone")]);
    let joined = host.until("member_joined");
    assert_eq!(joined["member"]["name"], "Phone");
    host.signal("-INT");
    host.until("left");
    assert_eq!(host.exit_code(), 0);
    let closed = guest.until("session_closed");
    assert_eq!(closed["reason"], "Host ended the session");
    assert_eq!(guest.exit_code(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn kicked_exits_3() {
    let server = server().await;
    let u = url(&server);
    let (host, _events) = Client::connect(ClientConfig::host(&u, "s", "S", "h", "H"))
        .await
        .unwrap();
    let mut guest = spawn(&[
        "join",
        "--session",
        "s",
        "--device-name",
        "Phone",
        "--url",
        &u,
        "--json",
    ]);
    let id = guest.until("welcome")["clientId"]
        .as_str()
        .unwrap()
        .to_string();
    host.kick(&id, Some("out")).unwrap();
    assert_eq!(guest.until("kicked")["reason"], "out");
    assert_eq!(guest.exit_code(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_exits_6_with_the_code() {
    let server = server().await;
    let u = url(&server);
    let mut guest = spawn(&[
        "join",
        "--session",
        "nope",
        "--device-name",
        "Phone",
        "--url",
        &u,
        "--json",
    ]);
    let line = guest.until("rejected");
    assert_eq!(line["code"], "session_not_found");
    assert_eq!(guest.exit_code(), 6);
}

#[test]
fn could_not_connect_exits_5() {
    let mut guest = spawn(&[
        "join",
        "--session",
        "s",
        "--device-name",
        "P",
        "--url",
        "ws://127.0.0.1:1/",
        "--json",
    ]);
    assert!(guest.until("failed")["reason"]
        .as_str()
        .unwrap()
        .contains("connect"));
    assert_eq!(guest.exit_code(), 5);
}

/// A stand-in server's first frame from the SDK, past the resume handshake: the SDK opens
/// with `{"type":"token"}` (resume is on by default); answering it as a server without the
/// resume layer does (`invalid_message`) makes it send its plain `join` on the same socket.
async fn first_frame_after_handshake<S>(
    ws: &mut tokio_websockets::WebSocketStream<S>,
) -> Option<tokio_websockets::Message>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::{SinkExt, StreamExt};
    loop {
        let frame = ws.next().await?.ok()?;
        let is_token = frame
            .as_text()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
            .is_some_and(|v| v["type"] == "token");
        if !is_token {
            return Some(frame);
        }
        let refusal = r#"{"type":"error","code":"invalid_message","message":"unknown type `token`","timestamp":1}"#;
        ws.send(tokio_websockets::Message::text(refusal))
            .await
            .ok()?;
    }
}

/// A stand-in for a newer server: welcomes the joiner, then sends an `error` with a code this
/// version does not know and a message of a type it does not know, then stays open.
async fn newer_server() -> std::net::SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    use loudsync_protocol::{server::SessionInfo, ServerMessage, Stamp};
    use tokio_websockets::{Message, ServerBuilder};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let (_, mut ws) = ServerBuilder::new().accept(tcp).await.unwrap();
        let _join = first_frame_after_handshake(&mut ws).await;
        let welcome = ServerMessage::Welcome {
            client_id: "c_new".into(),
            session_info: Box::new(SessionInfo {
                id: "s".into(),
                name: "S".into(),
                host_id: None,
                host: None,
            }),
            device: Default::default(),
            joined_at: 0,
            resumable: false,
            state: None,
        };
        let list = ServerMessage::MemberList { members: vec![] };
        for m in [welcome, list] {
            let frame = loudsync_protocol::encode(&m, &Stamp::Now(1));
            ws.send(Message::text(frame)).await.unwrap();
        }
        for frame in [
            r#"{"type":"error","code":"quota_exceeded","message":"over quota\u001b[2J","timestamp":1}"#,
            r#"{"type":"presence_diff","added":["c_9"],"note":"\u009b31m","timestamp":1}"#,
        ] {
            ws.send(Message::text(frame)).await.unwrap();
        }
        while let Some(Ok(_)) = ws.next().await {}
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn a_newer_servers_events_are_shown_escaped() {
    let addr = newer_server().await;
    let u = format!("ws://{addr}/");
    let guest = spawn(&[
        "join",
        "--session",
        "s",
        "--device-name",
        "P",
        "--url",
        &u,
        "--json",
    ]);
    let (line, error) = guest.until_raw("error");
    assert_eq!(error["code"], "quota_exceeded");
    assert_eq!(error["message"], "over quota\u{1b}[2J");
    assert!(
        line.contains(r"\u001b[2J") && !line.contains('\u{1b}'),
        "{line:?}"
    );
    let (line, unknown) = guest.until_raw("unknown");
    assert!(
        line.contains(r"\u009b31m") && !line.contains('\u{9b}'),
        "{line:?}"
    );
    assert_eq!(unknown["type"], "presence_diff");
    assert_eq!(unknown["message"]["added"], serde_json::json!(["c_9"]));
    assert_eq!(unknown["message"]["note"], "\u{9b}31m");
}

/// What a finished run printed: its exit code, stdout and stderr.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `loudsync` with `args` and `env` to its end (at most 10 s).
fn run_to_end(args: &[&str], env: &[(&str, &str)]) -> Ran {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loudsync"));
    cmd.args(args)
        .env_remove("LOUDSYNC_PASSWORD")
        .env_remove("LOUDSYNC_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let id = child.id();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(10));
        let _ = Command::new("kill")
            .args(["-KILL", &id.to_string()])
            .status();
    });
    let out = child.wait_with_output().unwrap();
    drop(killer);
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A stand-in server for one client: hands its `join` over, answers with `replies` (frames
/// as they are), then closes the socket normally.
async fn scripted(replies: Vec<String>) -> (std::net::SocketAddr, mpsc::Receiver<Value>) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_websockets::{Message, ServerBuilder};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let (_, mut ws) = ServerBuilder::new().accept(tcp).await.unwrap();
        let join = first_frame_after_handshake(&mut ws).await.unwrap();
        let _ = tx.send(serde_json::from_str::<Value>(join.as_text().unwrap()).unwrap());
        for frame in replies {
            ws.send(Message::text(frame)).await.unwrap();
        }
        let _ = ws.close().await;
        while let Some(Ok(_)) = ws.next().await {}
    });
    (addr, rx)
}

const HOSTILE: &str = "\u{1b}]0;PWNED\u{7}\u{1b}[1A\u{1b}[2K";

/// Everything a peer can name, named [`HOSTILE`]: the session, a member, an error's text, the
/// kick reason.
fn hostile_frames() -> Vec<String> {
    let member = |id: &str| {
        serde_json::json!({"id": id, "name": HOSTILE, "isHost": id == "c_h",
            "connectionStatus": "connected", "joinedAt": 1, "deviceId": HOSTILE})
    };
    [
        serde_json::json!({"type": "welcome", "clientId": "c_me", "timestamp": 1,
            "sessionInfo": {"id": "party", "name": HOSTILE, "hostId": "c_h"}}),
        serde_json::json!({"type": "member_list", "timestamp": 1,
            "members": [member("c_h"), member("c_me")]}),
        serde_json::json!({"type": "member_joined", "timestamp": 1, "member": member("c_x")}),
        serde_json::json!({"type": "member_left", "timestamp": 1, "memberId": HOSTILE,
            "reason": "left"}),
        serde_json::json!({"type": "error", "code": "invalid_message", "message": HOSTILE,
            "timestamp": 1}),
        serde_json::json!({"type": "message", "from": HOSTILE, "data": {"t": HOSTILE},
            "timestamp": 1}),
        serde_json::json!({"type": "kicked", "reason": HOSTILE, "timestamp": 1}),
    ]
    .iter()
    .map(Value::to_string)
    .collect()
}

/// Finding 2 of issue 9: a member named with escape codes retitled the host's terminal and
/// erased rows of its table.
#[tokio::test(flavor = "multi_thread")]
async fn names_reasons_and_errors_from_peers_never_reach_the_terminal_raw() {
    for mode in ["--live", "--json"] {
        let (addr, _join) = scripted(hostile_frames()).await;
        let u = format!("ws://{addr}/");
        let ran = tokio::task::spawn_blocking(move || {
            run_to_end(&["join", "--session", "party", "--url", &u, mode], &[])
        })
        .await
        .unwrap();
        assert_eq!(ran.code, 3, "kicked: {}", ran.stderr);
        // The view's own home-and-clear is the only escape sequence written.
        let without_ours = ran.stdout.replace("\u{1b}[H\u{1b}[2J", "");
        for text in [&without_ours, &ran.stderr] {
            assert!(
                !text.contains('\u{1b}') && !text.contains('\u{7}'),
                "{mode}: raw control characters: {text:?}"
            );
        }
        if mode == "--live" {
            let last = ran.stdout.rsplit("\u{1b}[2J").next().unwrap();
            let escaped = r"\u{1b}]0;PWNED\u{7}\u{1b}[1A\u{1b}[2K";
            assert!(
                last.starts_with(&format!("session {escaped} (party)")),
                "{last}"
            );
            assert!(
                last.contains(&format!("ended: kicked: {escaped}")),
                "{last}"
            );
            assert!(
                last.contains(&format!("error invalid_message: {escaped}")),
                "{last}"
            );
        } else {
            let escaped = r"\u001b]0;PWNED\u0007\u001b[1A\u001b[2K";
            assert!(ran.stdout.contains(escaped), "{}", ran.stdout);
            let kicked: Value = ran
                .stdout
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| v["event"] == "kicked")
                .expect("a kicked line");
            assert_eq!(kicked["reason"], HOSTILE, "the same JSON, escaped");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_guests_last_screen_keeps_the_session_and_says_why_it_ended() {
    let server = server().await;
    let u = url(&server);
    let (host, _events) =
        Client::connect(ClientConfig::host(&u, "party", "Friday night", "h", "Mac"))
            .await
            .unwrap();
    let guest = spawn(&[
        "join",
        "--session",
        "party",
        "--device-name",
        "Phone",
        "--url",
        &u,
        "--live",
    ]);
    // Until the guest's view shows both members, then the host ends the session.
    loop {
        let (line, _) = guest
            .lines
            .recv_timeout(Duration::from_secs(5))
            .expect("the guest's view");
        if line.contains("Phone (you)") {
            break;
        }
    }
    host.leave().await;
    let mut last = String::new();
    while let Ok((line, _)) = guest.lines.recv_timeout(Duration::from_secs(5)) {
        if line.contains("\u{1b}[2J") {
            last.clear();
        }
        last.push_str(&line);
        last.push('\n');
    }
    let last = last.rsplit("\u{1b}[2J").next().unwrap();
    assert!(
        last.starts_with(
            "session Friday night (party)   state: disconnected\n\
             ended: session closed: Host ended the session\n"
        ),
        "{last:?}"
    );
    // Who had control, and the table, as they were when the session ended, no longer
    // offering Ctrl-C.
    assert!(last.contains("\nhost: Mac (c_"), "{last}");
    assert!(
        last.contains("* Mac ") && last.contains("Phone (you)"),
        "{last}"
    );
    assert!(
        last.contains("\n2 members when it ended\n") && !last.contains("Ctrl-C"),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn member_list_is_printed_once_at_the_start_on_a_pipe() {
    let server = server().await;
    let u = url(&server);
    let (_host, _events) = Client::connect(ClientConfig::host(&u, "s", "S", "h", "H"))
        .await
        .unwrap();
    let guest = spawn(&["join", "--session", "s", "--device-name", "P", "--url", &u]);
    guest.until("welcome");
    let mut lists = 0;
    while let Ok((_, v)) = guest.lines.recv_timeout(Duration::from_millis(1500)) {
        if v["event"] == "member_list" {
            lists += 1;
        }
    }
    assert_eq!(
        lists, 1,
        "one member_list at the start, the refresh comes 5 s later"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn device_and_session_names_mean_the_same_on_host_and_join() {
    let server = server().await;
    let u = url(&server);
    let host = spawn(&[
        "host",
        "--session",
        "s",
        "--session-name",
        "Jam",
        "--device-name",
        "Mac",
        "--url",
        &u,
    ]);
    let welcome = host.until("welcome");
    assert_eq!(welcome["session"]["name"], "Jam");
    let list = host.until("member_list");
    assert_eq!(list["members"][0]["name"], "Mac");
    // join --device-name is the device's name (it was accepted and ignored before).
    let guest = spawn(&[
        "join",
        "--session",
        "s",
        "--device-name",
        "Phone",
        "--url",
        &u,
    ]);
    let list = guest.until("member_list");
    assert_eq!(list["members"][1]["name"], "Phone");
    // The old spellings still work, as hidden aliases.
    let old_guest = spawn(&["join", "--session", "s", "--name", "Tablet", "--url", &u]);
    assert_eq!(
        old_guest.until("member_list")["members"][2]["name"],
        "Tablet"
    );
    let old_host = spawn(&[
        "host",
        "--session",
        "s2",
        "--name",
        "Old",
        "--device-name",
        "M",
        "--url",
        &u,
    ]);
    assert_eq!(old_host.until("welcome")["session"]["name"], "Old");
    for command in ["host", "join"] {
        let help = run_to_end(&[command, "--help"], &[]).stdout;
        assert!(help.contains("--device-name"), "{help}");
        assert!(
            !help.contains("--name "),
            "{command}: --name is hidden: {help}"
        );
        assert_eq!(help.contains("--session-name"), command == "host", "{help}");
    }
}

#[test]
fn a_bad_url_says_it_is_not_a_websocket_url() {
    for json in [false, true] {
        let mut args = vec![
            "join",
            "--session",
            "s",
            "--device-name",
            "P",
            "--url",
            "notaurl",
        ];
        args.push(if json { "--json" } else { "--live" });
        let ran = run_to_end(&args, &[]);
        assert_eq!(ran.code, 2);
        let said = if json { &ran.stdout } else { &ran.stderr };
        assert!(
            said.contains("`notaurl` is not a ws:// or wss:// URL"),
            "{said}"
        );
        assert!(!said.contains("DNS"), "{said}");
    }
}

#[test]
fn could_not_connect_is_said_once() {
    let ran = run_to_end(
        &[
            "join",
            "--session",
            "s",
            "--device-name",
            "P",
            "--url",
            "ws://127.0.0.1:1/",
            "--live",
        ],
        &[],
    );
    assert_eq!(ran.code, 5);
    assert!(
        ran.stderr.starts_with("could not connect: 127.0.0.1:1: "),
        "{}",
        ran.stderr
    );
    assert_eq!(
        ran.stderr.matches("could not connect").count(),
        1,
        "{}",
        ran.stderr
    );
}

fn refusal(code: &str) -> Vec<String> {
    vec![
        serde_json::json!({"type": "error", "code": code, "message": "refused", "timestamp": 1})
            .to_string(),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn password_and_token_come_from_the_environment_and_go_in_join() {
    let (addr, join) = scripted(refusal("wrong_password")).await;
    let u = format!("ws://{addr}/");
    let ran = tokio::task::spawn_blocking(move || {
        run_to_end(
            &[
                "join",
                "--session",
                "party",
                "--device-name",
                "P",
                "--url",
                &u,
                "--live",
            ],
            &[
                ("LOUDSYNC_PASSWORD", "open sesame"),
                ("LOUDSYNC_TOKEN", "t.o.k"),
            ],
        )
    })
    .await
    .unwrap();
    let join = join.recv_timeout(Duration::from_secs(1)).unwrap();
    assert_eq!(join["password"], "open sesame");
    assert_eq!(join["token"], "t.o.k");
    assert_eq!(ran.code, 6);
    assert_eq!(
        ran.stderr.trim(),
        "join rejected: wrong password for session `party` (wrong_password)"
    );
    assert!(!ran.stderr.contains("open sesame"));
    // And from the flags, for the host too.
    let (addr, join) = scripted(refusal("host_not_allowed")).await;
    let u = format!("ws://{addr}/");
    let ran = tokio::task::spawn_blocking(move || {
        run_to_end(
            &[
                "host",
                "--session",
                "lobby",
                "--url",
                &u,
                "--password",
                "pw",
                "--token",
                "tk",
                "--json",
            ],
            &[],
        )
    })
    .await
    .unwrap();
    let join = join.recv_timeout(Duration::from_secs(1)).unwrap();
    assert_eq!(
        (join["password"].as_str(), join["token"].as_str()),
        (Some("pw"), Some("tk"))
    );
    assert_eq!(ran.code, 6);
    let line: Value = serde_json::from_str(ran.stdout.trim()).unwrap();
    assert_eq!(line["event"], "rejected");
    assert_eq!(line["code"], "host_not_allowed");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_access_refusal_exits_6_with_advice() {
    for (code, advice) in [
        (
            "password_required",
            "needs a password: give --password, or set LOUDSYNC_PASSWORD",
        ),
        ("wrong_password", "wrong password for session `s`"),
        (
            "token_required",
            "needs a join token: give --token, or set LOUDSYNC_TOKEN",
        ),
        ("invalid_token", "the join token was refused"),
        ("host_not_allowed", "you may not host session `s`"),
        (
            "too_many_attempts",
            "too many join attempts from this address",
        ),
    ] {
        let (addr, _join) = scripted(refusal(code)).await;
        let u = format!("ws://{addr}/");
        let ran = tokio::task::spawn_blocking(move || {
            run_to_end(
                &[
                    "join",
                    "--session",
                    "s",
                    "--device-name",
                    "P",
                    "--url",
                    &u,
                    "--live",
                ],
                &[],
            )
        })
        .await
        .unwrap();
        assert_eq!(ran.code, 6, "{code}");
        assert!(ran.stderr.contains(advice), "{code}: {}", ran.stderr);
        assert!(
            ran.stderr.trim().ends_with(&format!(" ({code})")),
            "{}",
            ran.stderr
        );
    }
}

/// A host frozen (SIGSTOP) past the server's heartbeat timeout, then thawed, used to re-create
/// an empty session under the same id without a word. Now its connection is resumable: the
/// server holds the session through the resume window and the thawed host resumes it, with
/// its id.
#[tokio::test(flavor = "multi_thread")]
async fn a_host_frozen_past_the_heartbeat_timeout_resumes_its_held_session() {
    let server = Server::bind(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        heartbeat_timeout: Duration::from_millis(400),
        heartbeat_check_interval: Duration::from_millis(50),
        close_timeout: Duration::from_millis(100),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let u = url(&server);
    let mut host = spawn(&[
        "host",
        "--session",
        "party",
        "--device-name",
        "Mac",
        "--url",
        &u,
        "--heartbeat-interval",
        "100ms",
    ]);
    let welcome = host.until("welcome");
    host.until("member_list");
    host.signal("-STOP");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    host.signal("-CONT");
    host.until("resumed");
    // The same session, the same host.
    let (m, _events) = Client::connect(ClientConfig::member(&u, "party", "d", "Phone"))
        .await
        .expect("the session is still there");
    assert_eq!(
        m.snapshot().session.unwrap().host_id.as_deref(),
        welcome["clientId"].as_str()
    );
    drop(m);
    host.signal("-INT");
    assert_eq!(host.exit_code(), 0);
}

/// `join --ca FILE` to a `loudsync` server with `--tls-cert` / `--tls-key` (a CA made here);
/// without the CA, the system's roots refuse the private certificate.
#[tokio::test(flavor = "multi_thread")]
async fn join_over_wss_with_a_private_ca() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "LoudSync CLI test CA");
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let dir = std::env::temp_dir().join(format!("loudsync-cli-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca_file, cert_file, key_file) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&ca_file, ca.pem()).unwrap();
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let server = Server::bind(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls_cert: Some(cert_file),
        tls_key: Some(key_file),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let u = format!("wss://localhost:{}/", server.local_addr().port());
    let host = spawn(&[
        "host",
        "--session",
        "s",
        "--device-name",
        "Mac",
        "--url",
        &u,
        "--ca",
        ca_file.to_str().unwrap(),
    ]);
    assert_eq!(host.until("welcome")["session"]["id"], "s");
    let guest = spawn(&[
        "join",
        "--session",
        "s",
        "--device-name",
        "P",
        "--url",
        &u,
        "--ca",
        ca_file.to_str().unwrap(),
    ]);
    assert_eq!(guest.until("member_list")["members"][0]["name"], "Mac");
    let u2 = u.clone();
    let ran = tokio::task::spawn_blocking(move || {
        run_to_end(
            &[
                "join",
                "--session",
                "s",
                "--device-name",
                "Q",
                "--url",
                &u2,
                "--live",
            ],
            &[],
        )
    })
    .await
    .unwrap();
    assert_eq!(ran.code, 5, "{}", ran.stderr);
    assert!(
        ran.stderr.contains("TLS with localhost:") || ran.stderr.contains("no system root"),
        "{}",
        ran.stderr
    );
    let ran = run_to_end(
        &[
            "join",
            "--session",
            "s",
            "--url",
            &u,
            "--ca",
            "/nonexistent.pem",
        ],
        &[],
    );
    assert_eq!(ran.code, 2);
    assert!(
        ran.stdout
            .contains("cannot read the CA file /nonexistent.pem"),
        "{}",
        ran.stdout
    );
}

/// Against the real server: `host --password` gives the session it opens a password; a
/// `join` without it, or with a wrong one, is refused with advice (exit 6); with it, joins.
#[tokio::test(flavor = "multi_thread")]
async fn a_password_set_by_the_host_is_required_of_those_who_join() {
    let server = server().await;
    let u = url(&server);
    let host = spawn(&[
        "host",
        "--session",
        "p",
        "--device-name",
        "Mac",
        "--url",
        &u,
        "--password",
        "open sesame",
    ]);
    host.until("member_list");
    let join = |env: &'static [(&'static str, &'static str)]| {
        let u = u.clone();
        tokio::task::spawn_blocking(move || {
            run_to_end(
                &[
                    "join",
                    "--session",
                    "p",
                    "--device-name",
                    "P",
                    "--url",
                    &u,
                    "--live",
                ],
                env,
            )
        })
    };
    let ran = join(&[]).await.unwrap();
    assert_eq!(ran.code, 6);
    assert!(
        ran.stderr
            .contains("session `p` needs a password: give --password, or set LOUDSYNC_PASSWORD"),
        "{}",
        ran.stderr
    );
    let ran = join(&[("LOUDSYNC_PASSWORD", "guess")]).await.unwrap();
    assert_eq!(ran.code, 6);
    assert!(
        ran.stderr.contains("wrong password for session `p`"),
        "{}",
        ran.stderr
    );
    let guest = spawn_env(
        &[
            "join",
            "--session",
            "p",
            "--device-name",
            "Phone",
            "--url",
            &u,
        ],
        &[("LOUDSYNC_PASSWORD", "open sesame")],
    );
    assert_eq!(guest.until("member_list")["members"][1]["name"], "Phone");
}

/// `loudsync host --json | head -1`: once the reader has gone, the next line ends the
/// program quietly with status 0 (it used to panic with "failed printing to stdout").
#[tokio::test(flavor = "multi_thread")]
async fn a_closed_pipe_ends_the_program_quietly() {
    let server = server().await;
    let u = url(&server);
    let mut child = Command::new(env!("CARGO_BIN_EXE_loudsync"))
        .args([
            "host",
            "--session",
            "pipe",
            "--device-name",
            "Mac",
            "--url",
            &u,
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    // Read until the session exists (the host's `welcome`), then go away, as `head` does.
    loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "the host ended early"
        );
        if line.contains(r#""event":"welcome""#) {
            break;
        }
    }
    drop(stdout);
    // Something more for the host to print: a member joins. (The host usually has a line to
    // print already, `member_list`, and is gone before the guest arrives: then the guest's
    // join is refused, which is fine.)
    let guest = Client::connect(ClientConfig::member(&u, "pipe", "guest", "Guest")).await;
    let mut status = None;
    for _ in 0..100 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = status.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("the host went on printing into a closed pipe")
    });
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    drop(guest);
}

/// `A1B-2C3`: three of `[0-9A-Z]`, a dash, three more.
fn is_shown_code(code: &str) -> bool {
    let b = code.as_bytes();
    b.len() == 7
        && b[3] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 3 || c.is_ascii_digit() || c.is_ascii_uppercase())
}

#[tokio::test(flavor = "multi_thread")]
async fn host_without_a_session_opens_one_with_a_new_code_that_join_takes_as_shown() {
    let server = server().await;
    let u = url(&server);
    let host = spawn(&["host", "--device-name", "Mac", "--url", &u, "--json"]);
    let welcome = host.until("welcome");
    let code = welcome["code"].as_str().unwrap().to_string();
    assert!(is_shown_code(&code), "{welcome}");
    let id = welcome["session"]["id"].as_str().unwrap();
    assert_eq!(id, code.replace('-', ""), "the id itself has no dash");
    assert_eq!(welcome["session"]["hostId"], welcome["clientId"]);
    // As shown, with the dash ...
    let guest = spawn(&[
        "join",
        "--session",
        &code,
        "--device-name",
        "Phone",
        "--url",
        &u,
    ]);
    let joined = guest.until("welcome");
    assert_eq!(joined["session"]["id"], id);
    assert_eq!(joined["code"], code);
    assert_eq!(host.until("member_joined")["member"]["name"], "Phone");
    // ... or typed in lower case without it.
    let typed = code.replace('-', "").to_lowercase();
    let other = spawn(&[
        "join",
        "--session",
        &typed,
        "--device-name",
        "Tab",
        "--url",
        &u,
    ]);
    assert_eq!(other.until("welcome")["session"]["id"], id);
    // The session's state and term arrive with the welcome.
    let state = other.until("session_state");
    assert_eq!(state["version"], 0);
    assert_eq!(state["term"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handoff_typed_on_stdin_moves_control_and_the_state() {
    let server = server().await;
    let u = url(&server);
    let mut host = spawn_typing(&["host", "--device-name", "Mac", "--url", &u, "--json"]);
    let welcome = host.until("welcome");
    let host_id = welcome["clientId"].as_str().unwrap().to_string();
    let code = welcome["code"].as_str().unwrap().to_string();
    let mut guest = spawn_typing(&[
        "join",
        "--session",
        &code,
        "--device-name",
        "Phone",
        "--url",
        &u,
        "--json",
    ]);
    let guest_id = guest.until("welcome")["clientId"]
        .as_str()
        .unwrap()
        .to_string();
    host.until("member_joined");
    // Nobody is ready yet: the server has no candidate, and says so.
    host.type_line("h");
    assert_eq!(host.until("handoff_failed")["reason"], "no_candidate");
    // A state to carry over.
    host.type_line(r#"s {"track": "Song 2", "position": 12}"#);
    let set = host.until("session_state");
    assert_eq!(set["version"], 1);
    assert_eq!(set["updatedBy"], host_id.as_str());
    let seen = guest.until_where("session_state", |v| v["version"] == 1);
    assert_eq!(seen["state"]["track"], "Song 2");
    // Commands that make no sense now, or are not commands, say so.
    guest.type_line("a");
    let no = guest.until("command_error");
    assert!(
        no["message"]
            .as_str()
            .unwrap()
            .contains("nothing to accept"),
        "{no}"
    );
    guest.type_line("x");
    let unknown = guest.until("command_error");
    assert_eq!(unknown["input"], "x");
    assert!(unknown["message"]
        .as_str()
        .unwrap()
        .starts_with("unknown command"));
    // r: ready. The host sees it in the member's entry.
    guest.type_line("r");
    assert_eq!(guest.until("role")["role"], "handoff_ready");
    let updated = host.until("member_updated");
    assert_eq!(updated["member"]["id"], guest_id.as_str());
    assert_eq!(updated["member"]["handoffReady"], true);
    // h: to the member ready first.
    host.type_line("h");
    assert_eq!(host.until("handoff_started")["targetId"], guest_id.as_str());
    let asked = guest.until("handoff_requested");
    assert_eq!(asked["fromId"], host_id.as_str());
    assert_eq!(asked["state"]["position"], 12);
    assert_eq!(asked["version"], 1);
    assert_eq!(asked["term"], 1);
    // a: accept.
    guest.type_line("a");
    let ack = host.until("handoff_acknowledged");
    assert_eq!(ack["hostId"], guest_id.as_str());
    assert_eq!(ack["term"], 2);
    for (who, p) in [("host", &host), ("guest", &guest)] {
        let changed = p.until("host_changed");
        assert_eq!(changed["hostId"], guest_id.as_str(), "{who}: {changed}");
        assert_eq!(changed["previousHostId"], host_id.as_str(), "{who}");
        assert_eq!(changed["term"], 2, "{who}");
        assert_eq!(changed["reason"], "handoff", "{who}");
    }
    // The old host is Handoff-Ready (decision 16); the new one sets the state, in term 2.
    assert_eq!(host.until("role")["role"], "handoff_ready");
    guest.type_line(r#"p {"position": 40}"#);
    for p in [&host, &guest] {
        let state = p.until_where("session_state", |v| v["version"] == 2);
        assert_eq!(state["term"], 2);
        assert_eq!(state["updatedBy"], guest_id.as_str());
        assert_eq!(
            state["state"],
            serde_json::json!({"track": "Song 2", "position": 40})
        );
    }
    // The old host is fenced.
    host.type_line(r#"s {"track": "Mine"}"#);
    let refused = host.until("error");
    assert_eq!(refused["code"], "unauthorized");
    assert_eq!(refused["details"]["hostId"], guest_id.as_str());
    assert_eq!(refused["details"]["term"], 2);
    // q: the old host leaves as an ordinary member; the session goes on.
    host.type_line("q");
    host.until("left");
    assert_eq!(host.exit_code(), 0);
    assert_eq!(guest.until("member_left")["memberId"], host_id.as_str());
    guest.type_line("q");
    guest.until("left");
    assert_eq!(guest.exit_code(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_live_view_shows_the_code_the_host_and_a_declined_handoff() {
    let server = server().await;
    let u = url(&server);
    let mut host = spawn_typing(&["host", "--device-name", "Mac", "--url", &u, "--live"]);
    let (code, host_screen) = {
        let mut screen = String::new();
        loop {
            let (line, _) = host
                .lines
                .recv_timeout(Duration::from_secs(5))
                .expect("the host's view");
            let hint = format!("others join with: loudsync join --url {u} --session ");
            if let Some(rest) = line.split(&hint).nth(1) {
                break (rest.trim().to_string(), screen);
            }
            screen.push_str(&line);
            screen.push('\n');
        }
    };
    assert!(is_shown_code(&code), "{code}");
    assert!(
        host_screen.contains(", that is you   term: 1"),
        "{host_screen}"
    );
    let mut guest = spawn_typing(&[
        "join",
        "--session",
        &code,
        "--device-name",
        "Phone",
        "--url",
        &u,
        "--live",
    ]);
    let screen_until = |p: &Proc, what: &str| -> String {
        let mut screen = String::new();
        loop {
            let (line, _) = p
                .lines
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or_else(|_| panic!("no `{what}` on screen:\n{screen}"));
            if line.contains("\u{1b}[2J") {
                screen.clear();
            }
            screen.push_str(&line);
            screen.push('\n');
            // A whole screen: it ends with the commands, `q` last (then the prompt, `> `).
            let whole = screen
                .split("\ncommands (")
                .nth(1)
                .is_some_and(|f| f.contains("q leave") || f.contains("q end the session"));
            if screen.contains(what) && whole {
                return screen;
            }
        }
    };
    screen_until(&guest, "role: Assigned");
    guest.type_line("r");
    let screen = screen_until(&guest, "role: Handoff-Ready");
    assert!(screen.contains("r not ready"), "{screen}");
    screen_until(&host, "  ready");
    host.type_line("h Phone");
    let screen = screen_until(&guest, "asks you to take control: a accept, d decline (");
    assert!(screen.contains("host: Mac ("), "{screen}");
    guest.type_line("d");
    let screen = screen_until(&host, "handoff failed (declined): Phone (");
    assert!(screen.contains("that is you   term: 1"), "{screen}");
    host.signal("-INT");
    assert_eq!(host.exit_code(), 0);
    assert_eq!(guest.exit_code(), 4);
}
