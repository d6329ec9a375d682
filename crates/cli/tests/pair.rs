//! `loudsync pair` as scripts use it: JSON lines, the commands it reads from stdin, and its
//! exit codes (5 no server, 6 a refused identify with the `cr_aborted` reason, 0 on `q`).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use loudsync_server::{Server, ServerConfig};
use serde_json::Value;

async fn server() -> Server {
    Server::bind(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        apps: vec!["alpha".into(), "secret:tokA,tokB".into()],
        pairing_alive_timeout: Duration::from_secs(2),
        heartbeat_check_interval: Duration::from_millis(200),
        ..ServerConfig::default()
    })
    .await
    .unwrap()
}

fn url(server: &Server) -> String {
    format!("ws://{}/", server.local_addr())
}

struct Proc {
    child: Child,
    /// Each stdout line as printed, and as JSON (a string if it is not JSON).
    lines: mpsc::Receiver<(String, Value)>,
    stdin: ChildStdin,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `loudsync pair ARGS` with a piped stdin and stdout (so JSON lines by default). The alive
/// interval is kept under the test server's 2 s alive timeout.
fn pair(args: &[&str]) -> Proc {
    pair_env(args, None)
}

/// [`pair`] with `LOUDSYNC_URL` set to `url` (or removed).
fn pair_env(args: &[&str], url: Option<&str>) -> Proc {
    let mut command = Command::new(env!("CARGO_BIN_EXE_loudsync"));
    command
        .arg("pair")
        .args(args)
        .args(["--alive-interval", "500ms"]);
    match url {
        Some(url) => command.env("LOUDSYNC_URL", url),
        None => command.env_remove("LOUDSYNC_URL"),
    };
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stdin = child.stdin.take().unwrap();
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
        stdin,
    }
}

impl Proc {
    /// Types `line` and Enter.
    fn type_line(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next JSON line whose `event` is `kind` and that `matches`, also as printed.
    fn until_where(&self, kind: &str, matches: impl Fn(&Value) -> bool) -> (String, Value) {
        loop {
            let (line, v) = self
                .lines
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("no matching `{kind}` line"));
            if v["event"] == kind && matches(&v) {
                return (line, v);
            }
        }
    }

    fn until(&self, kind: &str) -> Value {
        self.until_where(kind, |_| true).1
    }

    fn state(&self, state: &str) {
        self.until_where("state", |v| v["state"] == state);
    }

    fn exit_code(&mut self) -> i32 {
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().expect("exited normally");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("did not exit");
    }
}

#[test]
fn no_server_exits_5() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let u = format!("ws://{addr}/");
    let mut p = pair(&[
        "--app",
        "alpha",
        "--role",
        "controller",
        "--url",
        &u,
        "--json",
    ]);
    let failed = p.until("failed");
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains(&addr.to_string()),
        "{failed}"
    );
    assert_eq!(p.exit_code(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_the_server_does_not_have_exits_5_saying_so() {
    let server = server().await;
    let u = url(&server);
    let mut p = pair(&["--app", "nope", "--role", "controller", "--url", &u]);
    let failed = p.until("failed");
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains("no pairing app `nope`"), "{reason}");
    assert_eq!(p.exit_code(), 5);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_token_exits_6_with_the_reason() {
    let server = server().await;
    let u = url(&server);
    let mut p = pair(&[
        "--app",
        "secret",
        "--role",
        "responder",
        "--token",
        "bad",
        "--url",
        &u,
        "--json",
    ]);
    let refused = p.until("refused");
    assert_eq!(refused["reason"], "notAuthorized");
    assert_eq!(p.exit_code(), 6);
    // The default token is not one of the app's either.
    let mut p = pair(&["--app", "secret", "--role", "responder", "--url", &u]);
    assert_eq!(p.until("refused")["reason"], "notAuthorized");
    assert_eq!(p.exit_code(), 6);
    // One of its tokens is accepted.
    let mut p = pair(&[
        "--app",
        "secret",
        "--role",
        "responder",
        "--token",
        "tokB",
        "--url",
        &u,
    ]);
    p.until("welcome");
    p.type_line("q");
    p.until("left");
    assert_eq!(p.exit_code(), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_controller_and_a_responder_pair_and_an_event_typed_into_one_reaches_the_other() {
    let server = server().await;
    let u = url(&server);
    // LOUDSYNC_URL is honoured as for host/join.
    let mut responder = pair_env(
        &[
            "--app",
            "alpha",
            "--role",
            "responder",
            "--client-id",
            "111111",
        ],
        Some(&u),
    );
    let welcome = responder.until("welcome");
    assert_eq!(welcome["clientId"], "111111");
    assert_eq!(welcome["appId"], "alpha");
    responder.state("readyToPair");

    let mut controller = pair(&[
        "--app",
        "alpha",
        "--role",
        "controller",
        "--partner",
        "111111",
        "--url",
        &u,
    ]);
    let id = controller.until("welcome")["clientId"]
        .as_str()
        .unwrap()
        .to_string();
    controller.state("interacting");
    let partner = responder.until("partner");
    assert_eq!(
        partner["partner"],
        id.as_str(),
        "auto-paired with the pinger"
    );
    responder.state("interacting");
    let meta = responder
        .until_where("metastates", |v| v["paired"] == true)
        .1;
    assert_eq!(
        (meta["active"].clone(), meta["connected"].clone()),
        (true.into(), true.into())
    );

    // An event typed into the controller, with a parameter a terminal would act on.
    controller.type_line("e tap:left 1 \x1b[2J\u{9b}x");
    let done = controller.until("command");
    assert_eq!(done["input"], "e tap:left 1 \u{1b}[2J\u{9b}x");
    let (line, event) = responder.until_where("app_event", |v| v["eventType"] == "tap");
    assert_eq!(event["sender"], id.as_str());
    assert_eq!(event["subType"], "left");
    assert_eq!(
        event["params"],
        serde_json::json!(["1", "\u{1b}[2J\u{9b}x"])
    );
    assert!(event["receiveCt"].as_u64().unwrap() >= event["sendCt"].as_u64().unwrap());
    assert!(
        !line.contains('\u{1b}') && !line.contains('\u{9b}'),
        "escaped on the terminal: {line:?}"
    );
    // And back.
    responder.type_line("e score 7");
    let back = controller
        .until_where("app_event", |v| v["eventType"] == "score")
        .1;
    assert_eq!(back["params"], serde_json::json!(["7"]));
    assert_eq!(back["sender"], "111111");
    // An event the SDK refuses is told with the reason, and the process goes on.
    responder.type_line("e 3-x");
    assert!(responder.until("command_error")["message"]
        .as_str()
        .unwrap()
        .contains("event type"));

    // The controller quits: 0, and its `inactive` moves the responder to searching at once.
    controller.type_line("q");
    controller.until("left");
    assert_eq!(controller.exit_code(), 0);
    responder.state("searching");
    responder.type_line("q");
    assert_eq!(responder.exit_code(), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_quits_with_0() {
    let server = server().await;
    let u = url(&server);
    let mut p = pair(&["--app", "alpha", "--role", "responder", "--url", &u]);
    p.until("welcome");
    Command::new("kill")
        .args(["-INT", &p.child.id().to_string()])
        .status()
        .unwrap();
    p.until("left");
    assert_eq!(p.exit_code(), 0);
    server.shutdown().await;
}

#[test]
fn a_bad_command_line_exits_2() {
    for args in [
        &[
            "--app",
            "alpha",
            "--role",
            "controller",
            "--url",
            "http://x/",
        ][..],
        &["--app", "a/b", "--role", "controller"][..],
        &["--app", "alpha", "--role", "controller", "--partner", "12"][..],
        &["--app", "alpha", "--role", "controller", "--client-id", "x"][..],
    ] {
        let mut p = pair(args);
        p.until("failed");
        assert_eq!(p.exit_code(), 2, "{args:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_abort_later_exits_6_with_the_reason() {
    let server = server().await;
    let u = url(&server);
    let args = [
        "--app",
        "alpha",
        "--role",
        "responder",
        "--client-id",
        "333333",
        "--url",
        &u,
    ];
    let mut first = pair(&args);
    first.until("welcome");
    // Another connection with the same id in the same app replaces it (P7).
    let mut second = pair(&args);
    second.until("welcome");
    let aborted = first.until("aborted");
    assert_eq!(aborted["reason"], "releasedByOther");
    assert_eq!(first.until("ended")["reason"], "releasedByOther");
    assert_eq!(first.exit_code(), 6);
    second.type_line("q");
    assert_eq!(second.exit_code(), 0);
    server.shutdown().await;
}
