//! The bad-input suite: every hostile input the protocol names (`docs/PROTOCOL.md` §5, and the
//! findings of issue 9) gets its exact answer, the connection survives where the protocol says
//! it does, the healthy members of another session see nothing, and nothing panics anywhere
//! in the server.
//!
//! A panic in a server task does not fail a test by itself (tokio catches it and the task
//! ends), so the suite installs a panic hook that counts panics outside the tests' own files,
//! and checks the count.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use loudsync_protocol::ClientMessage;
use serde_json::Value;

static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // A failed assertion of a test is not the server's panic.
            let in_tests = info.location().is_some_and(|l| l.file().contains("tests/"));
            if !in_tests {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default(info)
        }));
    });
}

/// A healthy session beside the one under attack: a host and two members.
struct Bystanders {
    clients: Vec<Client>,
}

impl Bystanders {
    async fn new(server: &loudsync_server::Server) -> Bystanders {
        let (clients, _) = party(server.local_addr(), "healthy", 2).await;
        Bystanders { clients }
    }

    /// They heard nothing, and each is still served.
    async fn saw_nothing(mut self) {
        for c in self.clients.iter_mut() {
            c.expect_silence(Duration::from_millis(100)).await;
            c.assert_alive().await;
        }
    }
}

/// Short timers, but members that do not heartbeat during a test stay.
fn config() -> loudsync_server::ServerConfig {
    let mut config = test_config();
    config.heartbeat_timeout = Duration::from_secs(30);
    config
}

fn long(n: usize) -> String {
    "n".repeat(n)
}

const DEVICE: &str = r#""deviceInfo":{"id":"d","name":"n","type":"client"}"#;

/// Input frame -> the exact `message` of its `invalid_message` error (§5's table).
fn catalogue() -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = vec![
        (
            "{not json".into(),
            "invalid JSON: key must be a string at line 1 column 2".into(),
        ),
        (
            "[1,2,3]".into(),
            "a message must be a JSON object, got an array".into(),
        ),
        (r#"{"timestamp":1}"#.into(), "missing field `type`".into()),
        (
            r#"{"type":5}"#.into(),
            "field `type` must be a string, got a number".into(),
        ),
        (
            r#"{"type":"dance"}"#.into(),
            "unknown message type `dance`; expected one of: join, leave, heartbeat, ping, kick, member_list, media_token, message, token, ack, state_set, handoff_ready, handoff_request, handoff_accept, handoff_decline".into(),
        ),
        (
            r#"{"type":"join","sessionId":"s"}"#.into(),
            "join: missing field `deviceInfo`".into(),
        ),
        (
            format!(r#"{{"type":"join","sessionId":7,{DEVICE}}}"#),
            "join: in `sessionId`: invalid type: integer `7`, expected a string".into(),
        ),
        (
            r#"{"type":"join","sessionId":"s","deviceInfo":{"id":"d","name":"n"}}"#.into(),
            "join: in `deviceInfo`: missing field `type`".into(),
        ),
        (
            r#"{"type":"join","sessionId":"s","deviceInfo":{"id":"d","name":"n","type":"boss"}}"#.into(),
            "join: in `deviceInfo.type`: unknown variant `boss`, expected `host` or `client`".into(),
        ),
        (
            r#"{"type":"join","sessionId":"s","deviceInfo":{"id":" ","name":"n","type":"client"}}"#.into(),
            "join: field `deviceInfo.id` must not be empty".into(),
        ),
        (
            format!(
                r#"{{"type":"join","sessionId":"s","deviceInfo":{{"id":"d","name":"{}","type":"client"}}}}"#,
                long(300)
            ),
            "join: field `deviceInfo.name` is 300 bytes, longer than the 256-byte limit".into(),
        ),
        (
            format!(r#"{{"type":"join","sessionId":"s","sessionName":" ",{DEVICE}}}"#),
            "join: field `sessionName` must be 1 to 256 bytes, not blank".into(),
        ),
        (
            format!(
                r#"{{"type":"join","sessionId":"s","sessionName":"{}",{DEVICE}}}"#,
                long(257)
            ),
            "join: field `sessionName` must be 1 to 256 bytes, not blank".into(),
        ),
        (
            r#"{"type":"ping","timestamp":"soon"}"#.into(),
            r#"ping: in `timestamp`: invalid type: string "soon", expected a JSON number"#.into(),
        ),
        (
            r#"{"type":"ping","timestamp":1.5}"#.into(),
            "ping: field `timestamp` must be an integer, got 1.5".into(),
        ),
        (
            r#"{"type":"kick","memberId":42}"#.into(),
            "kick: in `memberId`: invalid type: integer `42`, expected a string".into(),
        ),
        (
            r#"{"type":"message"}"#.into(),
            "message: missing field `data`".into(),
        ),
    ];
    // Issue 9, finding 5: versions that are not strictly MAJOR or MAJOR.MINOR.
    let bad_version = r#"join: field `protocolVersion` must be MAJOR or MAJOR.MINOR in ASCII digits (e.g. "1.0")"#;
    for version in ["1.x", "1.0.0", "+1", " 1.0", "1.-1", "", "1.", ".1", "١"] {
        rows.push((
            format!(r#"{{"type":"join","sessionId":"s","protocolVersion":"{version}",{DEVICE}}}"#),
            bad_version.into(),
        ));
    }
    // Issue 9, finding 7: control characters in names, ids and reasons (escaped in JSON as
    // they would be on the wire: NUL, ESC, BEL, DEL, a C1 character).
    let hostile = r"\u0000\u001b]0;PWNED\u0007\u001b[1A\u007f\u009b";
    let control = |kind: &str, field: &str| {
        format!("{kind}: field `{field}` must not contain control characters")
    };
    rows.extend([
        (
            format!(r#"{{"type":"join","sessionId":"s","deviceInfo":{{"id":"d{hostile}","name":"n","type":"client"}}}}"#),
            control("join", "deviceInfo.id"),
        ),
        (
            format!(r#"{{"type":"join","sessionId":"s","deviceInfo":{{"id":"d","name":"n{hostile}","type":"client"}}}}"#),
            control("join", "deviceInfo.name"),
        ),
        (
            format!(r#"{{"type":"join","sessionId":"s","sessionName":"x{hostile}",{DEVICE}}}"#),
            control("join", "sessionName"),
        ),
        (
            format!(r#"{{"type":"kick","memberId":"c_1","reason":"{hostile}"}}"#),
            control("kick", "reason"),
        ),
        (
            format!(r#"{{"type":"kick","memberId":"c_1{hostile}"}}"#),
            control("kick", "memberId"),
        ),
        (
            format!(r#"{{"type":"message","data":1,"to":"c_1{hostile}"}}"#),
            control("message", "to"),
        ),
    ]);
    let bad_id = "join: field `sessionId` must be 1 to 64 characters of A-Z, a-z, 0-9, `-` and `_`";
    for id in ["a b".to_string(), String::new(), long(65)] {
        rows.push((
            format!(r#"{{"type":"join","sessionId":"{id}",{DEVICE}}}"#),
            bad_id.into(),
        ));
    }
    rows
}

async fn expect_error(c: &mut Client, text: &str, code: &str, message: &str) -> Value {
    c.send_text(text).await;
    let e = c.recv_type("error").await;
    assert_eq!(e["code"], code, "{text}: {e}");
    assert_eq!(e["message"], message, "{text}");
    e
}

#[tokio::test]
async fn the_catalogue_gets_its_exact_texts_before_and_after_join_and_harms_nobody() {
    count_panics();
    let server = start_with(config()).await;
    let bystanders = Bystanders::new(&server).await;
    let (mut target, _) = party(server.local_addr(), "target", 1).await;
    let mut fresh = Client::connect(server.local_addr()).await;
    for (text, message) in catalogue() {
        // A joined member sending a bad `join` gets the decoder's answer, not "already
        // joined": frames are decoded before they are judged.
        for c in [&mut target[1], &mut fresh] {
            expect_error(c, &text, "invalid_message", &message).await;
        }
    }
    for c in [&mut target[1], &mut fresh] {
        c.ws.send(tokio_websockets::Message::binary(vec![1u8, 2, 3]))
            .await
            .unwrap();
        let e = c.recv_type("error").await;
        assert_eq!(e["code"], "invalid_message");
        assert_eq!(
            e["message"],
            "binary frames are not part of the protocol; send JSON as a text frame"
        );
        c.assert_alive().await;
    }
    expect_error(
        &mut fresh,
        r#"{"type":"leave"}"#,
        "invalid_message",
        "leave: send `join` first; this connection is not in a session",
    )
    .await;
    let join = format!(r#"{{"type":"join","sessionId":"target",{DEVICE}}}"#);
    expect_error(
        &mut target[1],
        &join,
        "invalid_message",
        "join: this connection has already joined a session",
    )
    .await;
    // The target session's host heard nothing of it either.
    target[0].expect_silence(Duration::from_millis(100)).await;
    bystanders.saw_nothing().await;
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a server task panicked");
}

#[tokio::test]
async fn join_refusals_get_their_exact_texts_then_close_1000() {
    count_panics();
    let mut config = config();
    config.max_members = 3;
    let server = start_with(config).await;
    let bystanders = Bystanders::new(&server).await;
    let (mut target, _) = party(server.local_addr(), "full", 2).await;
    let cases: Vec<(ClientMessage, &str, String)> = vec![
        (
            join_msg("nowhere", "x", "client"),
            "session_not_found",
            "session `nowhere` does not exist".into(),
        ),
        (
            join_msg("full", "dev-0", "client"),
            "already_joined",
            "device `dev-0` is already connected to session `full`".into(),
        ),
        (
            join_msg("full", "other-host", "host"),
            "unauthorized",
            "session `full` already has a connected host".into(),
        ),
        (
            join_msg("full", "third", "client"),
            "session_full",
            "Session has reached maximum capacity (3 members)".into(),
        ),
    ];
    for (join, code, text) in cases {
        let mut c = Client::connect(server.local_addr()).await;
        c.send(&join).await;
        let (seen, ended) = c.recv_end().await;
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0]["type"], "error");
        assert_eq!(seen[0]["code"], code);
        assert_eq!(seen[0]["message"], text.as_str());
        assert_eq!(ended, Ended::Close(1000, "join rejected".into()));
    }
    for c in target.iter_mut() {
        c.expect_silence(Duration::from_millis(100)).await;
    }
    bystanders.saw_nothing().await;
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a server task panicked");
}

#[tokio::test]
async fn hostile_http_bodies_get_exact_answers_and_create_nothing() {
    count_panics();
    let server = start_with(config()).await;
    let bystanders = Bystanders::new(&server).await;
    let base = http(&server);
    let cases: Vec<(&str, &str)> = vec![
        (
            r#"{"name":"a\u0007b"}"#,
            "`name` must not contain control characters",
        ),
        (
            r#"{"name":"x","hostDeviceId":"d\u0000"}"#,
            "`hostDeviceId` must not contain control characters",
        ),
        (r#"{"name":""}"#, "`name` must be 1 to 256 bytes"),
        ("{nope", "body: key must be a string at line 1 column 2"),
        (
            r#"{"name":"x","id":"a b"}"#,
            "`id` must be 1 to 64 characters of A-Z, a-z, 0-9, `-` and `_`",
        ),
        (
            r#"{"name":"x","maxMembers":0}"#,
            "`maxMembers` must be between 1 and 100000",
        ),
        (
            r#"{"name":"x","password":""}"#,
            "`password` must be 1 to 256 bytes",
        ),
    ];
    let client = reqwest::Client::new();
    for (body, message) in cases {
        let r = client
            .post(format!("{base}/v1/sessions"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{body}");
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["code"], "invalid_request", "{body}");
        assert_eq!(answer["message"], message, "{body}");
    }
    let list: Value = client
        .get(format!("{base}/v1/sessions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["healthy"], "no hostile body created a session");
    bystanders.saw_nothing().await;
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a server task panicked");
}
