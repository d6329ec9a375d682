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
    lines: mpsc::Receiver<Value>,
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
            let _ = tx.send(serde_json::from_str(&line).unwrap_or(Value::String(line)));
        }
    });
    Proc { child, lines }
}

impl Proc {
    /// The next JSON line whose `event` is `kind`.
    fn until(&self, kind: &str) -> Value {
        loop {
            let v = self
                .lines
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or_else(|_| panic!("no `{kind}` line"));
            if v["event"] == kind {
                return v;
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
