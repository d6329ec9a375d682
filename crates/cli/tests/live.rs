//! `loudsync host` and `loudsync join` as scripts use them: JSON lines and exit codes.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
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
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(args: &[&str]) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_loudsync"))
        .args(args)
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
    Proc { child, lines }
}

impl Proc {
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
        "--name",
        "Friday",
        "--device-name",
        "Mac",
        "--url",
        &u,
        "--json",
    ]);
    let welcome = host.until("welcome");
    assert_eq!(welcome["session"]["name"], "Friday");
    let mut guest = spawn(&["join", "--session", "party", "--name", "Phone", "--url", &u]); // a pipe: JSON by default
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
        "--name",
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
        "--name",
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
        "--name",
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
        let _join = ws.next().await;
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
        "--name",
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
