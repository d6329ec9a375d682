//! The SDK against the real server on loopback, with short timers.

use std::net::SocketAddr;
use std::time::Duration;

use loudsync_client::{
    AnyErrorCode, Client, ClientConfig, ClientError, ConnectionState, ErrorCode, Event, Events,
    LeaveReason, RawJson, ReconnectPolicy,
};
use loudsync_protocol::{server::SessionInfo, ClientMessage, ServerMessage, Stamp};
use loudsync_server::{Server, ServerConfig};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(5);

fn server_config(listen: SocketAddr) -> ServerConfig {
    ServerConfig {
        listen,
        heartbeat_timeout: Duration::from_millis(600),
        heartbeat_check_interval: Duration::from_millis(50),
        latency_interval: Duration::from_millis(100),
        close_timeout: Duration::from_millis(200),
        drain_timeout: Duration::from_secs(1),
        ..ServerConfig::default()
    }
}

async fn start() -> Server {
    Server::bind(server_config("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap()
}

fn url(addr: SocketAddr) -> String {
    format!("ws://{addr}/")
}

fn fast(mut c: ClientConfig) -> ClientConfig {
    c.heartbeat_interval = Duration::from_millis(100);
    c.silence_timeout = Duration::from_millis(600);
    c.join_timeout = Duration::from_secs(2);
    c.reconnect = ReconnectPolicy {
        attempts: 3,
        delay: Duration::from_millis(200),
        backoff: None,
    };
    c
}

/// [`fast`], without the resume handshake: for the stand-in servers below, which speak the
/// plain protocol (`join` first).
fn plain(c: ClientConfig) -> ClientConfig {
    let mut c = fast(c);
    c.resume = false;
    c
}

async fn host(addr: SocketAddr, session: &str) -> (Client, Events) {
    Client::connect(fast(ClientConfig::host(
        url(addr),
        session,
        "Party",
        "mac",
        "Mac",
    )))
    .await
    .expect("host connects")
}

async fn member(addr: SocketAddr, session: &str, device: &str) -> (Client, Events) {
    Client::connect(fast(ClientConfig::member(
        url(addr),
        session,
        device,
        device,
    )))
    .await
    .expect("member connects")
}

/// Waits for an event matching `pred`, returning it.
async fn until(events: &mut Events, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
    tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Some(e) if pred(&e) => return e,
                Some(_) => {}
                None => panic!("events ended while waiting for {what}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
}

/// A well-formed server frame, written by the protocol crate.
fn server_frame(message: &ServerMessage) -> String {
    loudsync_protocol::encode(message, &Stamp::Now(1))
}

fn welcome(client_id: &str) -> String {
    server_frame(&ServerMessage::Welcome {
        client_id: client_id.into(),
        session_info: Box::new(SessionInfo {
            id: "s".into(),
            name: "S".into(),
            host_id: Some("h".into()),
            host: None,
        }),
        device: Default::default(),
        joined_at: 0,
        resumable: false,
        state: None,
    })
}

fn empty_member_list() -> String {
    server_frame(&ServerMessage::MemberList { members: vec![] })
}

/// Waits until the event stream ends; returns everything seen.
async fn until_end(events: &mut Events) -> Vec<Event> {
    tokio::time::timeout(WAIT, async {
        let mut seen = Vec::new();
        while let Some(e) = events.recv().await {
            seen.push(e);
        }
        seen
    })
    .await
    .expect("event stream ended")
}

#[tokio::test]
async fn join_and_member_table() {
    let server = start().await;
    let addr = server.local_addr();
    let (h, mut hev) = host(addr, "s").await;
    assert_eq!(h.state(), ConnectionState::Connected);
    let host_id = h.client_id().unwrap();
    let (m, _mev) = member(addr, "s", "phone").await;
    let member_id = m.client_id().unwrap();
    // The member's table: host first, then itself.
    let ids: Vec<_> = m.members().into_iter().map(|x| x.id).collect();
    assert_eq!(ids, vec![host_id.clone(), member_id.clone()]);
    assert!(m.members()[0].is_host);
    // The host's table follows member_joined.
    until(
        &mut hev,
        "member_joined",
        |e| matches!(e, Event::MemberJoined(x) if x.id == member_id),
    )
    .await;
    assert_eq!(h.members().len(), 2);
    // ... and member_left.
    m.leave().await;
    assert_eq!(m.state(), ConnectionState::Disconnected);
    let left = until(&mut hev, "member_left", |e| {
        matches!(e, Event::MemberLeft { .. })
    })
    .await;
    assert_eq!(
        left,
        Event::MemberLeft {
            member_id,
            reason: LeaveReason::Left
        }
    );
    assert_eq!(h.members().len(), 1);
    assert!(matches!(m.ping(), Err(ClientError::NotConnected)));
}

#[tokio::test]
async fn latency_is_measured_both_ways() {
    let server = start().await;
    let addr = server.local_addr();
    let (h, _hev) = host(addr, "s").await;
    let (m, mut mev) = member(addr, "s", "phone").await;
    // The client's own ping/pong.
    let Event::Latency { ms } =
        until(&mut mev, "latency", |e| matches!(e, Event::Latency { .. })).await
    else {
        unreachable!()
    };
    assert!(ms < 1000);
    assert_eq!(m.latency(), Some(ms));
    // The server's measurement appears in the member table after a member_list.
    let mut seen = false;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        h.request_member_list().unwrap();
        if h.members().iter().all(|x| x.latency.is_some()) {
            seen = true;
            break;
        }
    }
    assert!(
        seen,
        "server-measured latency never showed up: {:?}",
        h.members()
    );
}

#[tokio::test]
async fn messages_reach_everyone_or_one() {
    let server = start().await;
    let addr = server.local_addr();
    let (h, mut hev) = host(addr, "s").await;
    let (m1, mut m1ev) = member(addr, "s", "a").await;
    let (_m2, mut m2ev) = member(addr, "s", "b").await;
    m1.send(json!({"track": 3})).unwrap();
    for ev in [&mut hev, &mut m2ev] {
        let e = until(ev, "message", |e| matches!(e, Event::Message { .. })).await;
        assert_eq!(
            e,
            Event::Message {
                from: m1.client_id().unwrap(),
                data: json!({"track": 3})
            }
        );
    }
    h.send_to(&m1.client_id().unwrap(), json!("just you"))
        .unwrap();
    let e = until(&mut m1ev, "direct message", |e| {
        matches!(e, Event::Message { .. })
    })
    .await;
    assert_eq!(
        e,
        Event::Message {
            from: h.client_id().unwrap(),
            data: json!("just you")
        }
    );
}

#[tokio::test]
async fn kicked_ends_without_reconnecting() {
    let server = start().await;
    let addr = server.local_addr();
    let (h, _hev) = host(addr, "s").await;
    let (m, mut mev) = member(addr, "s", "phone").await;
    h.kick(&m.client_id().unwrap(), Some("be nice")).unwrap();
    let seen = until_end(&mut mev).await;
    assert!(
        seen.contains(&Event::Kicked {
            reason: "be nice".into()
        }),
        "{seen:?}"
    );
    assert!(
        !seen.iter().any(|e| matches!(e, Event::Reconnecting { .. })),
        "{seen:?}"
    );
    assert_eq!(m.state(), ConnectionState::Disconnected);
    assert!(m.members().is_empty(), "session state cleared");
}

#[tokio::test]
async fn session_closed_ends_without_reconnecting() {
    let server = start().await;
    let addr = server.local_addr();
    let (h, _hev) = host(addr, "s").await;
    let (m, mut mev) = member(addr, "s", "phone").await;
    h.close_session().await;
    let seen = until_end(&mut mev).await;
    assert!(
        seen.contains(&Event::SessionClosed {
            reason: "Host ended the session".into()
        }),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|e| matches!(e, Event::Reconnecting { .. })));
    assert_eq!(m.state(), ConnectionState::Disconnected);
}

#[tokio::test]
async fn typed_join_errors() {
    let mut config = server_config("127.0.0.1:0".parse().unwrap());
    config.max_members = 2;
    let server = Server::bind(config).await.unwrap();
    let addr = server.local_addr();
    let err = Client::connect(fast(ClientConfig::member(url(addr), "nope", "d", "d")))
        .await
        .err()
        .expect("rejected");
    assert!(
        matches!(&err, ClientError::Rejected(e) if e.code == ErrorCode::SessionNotFound),
        "{err:?}"
    );

    let (_h, _) = host(addr, "s").await;
    let (_m, _) = member(addr, "s", "phone").await;
    let err = Client::connect(fast(ClientConfig::member(url(addr), "s", "phone", "again")))
        .await
        .err()
        .expect("rejected");
    assert!(
        matches!(&err, ClientError::Rejected(e) if e.code == ErrorCode::AlreadyJoined),
        "{err:?}"
    );
    let err = Client::connect(fast(ClientConfig::member(url(addr), "s", "tablet", "t")))
        .await
        .err()
        .expect("rejected");
    match err {
        ClientError::Rejected(e) => {
            assert_eq!(e.code, ErrorCode::SessionFull);
            assert_eq!(
                e.details,
                Some(json!({"maxMembers": 2, "currentMembers": 2}))
            );
        }
        other => panic!("{other:?}"),
    }
    let err = Client::connect(fast(ClientConfig::member(
        "ws://127.0.0.1:1/",
        "s",
        "x",
        "x",
    )))
    .await
    .err()
    .expect("cannot connect");
    assert!(matches!(err, ClientError::Connect(_)), "{err:?}");
}

#[tokio::test]
async fn reconnects_when_the_server_comes_back_on_the_same_port() {
    let server = start().await;
    let addr = server.local_addr();
    let (h, mut hev) = host(addr, "s").await;
    let (m, mut mev) = member(addr, "s", "phone").await;
    let old_member_id = m.client_id().unwrap();
    server.shutdown().await; // session_closed + 1001: the server is going away
    until(&mut mev, "reconnecting", |e| {
        *e == Event::StateChanged(ConnectionState::Reconnecting)
    })
    .await;
    assert_eq!(m.state(), ConnectionState::Reconnecting);
    // Back within the attempts (3 x 200 ms), on the same port.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _server = Server::bind(server_config(addr))
        .await
        .expect("rebind the same port");
    // The host's SDK re-opens the session; the member joins it again.
    until(&mut hev, "host welcome", |e| {
        matches!(e, Event::Welcome { .. })
    })
    .await;
    until(&mut mev, "member welcome", |e| {
        matches!(e, Event::Welcome { .. })
    })
    .await;
    assert_eq!(m.state(), ConnectionState::Connected);
    let new_member_id = m.client_id().unwrap();
    assert_ne!(
        new_member_id, old_member_id,
        "a new clientId after rejoining"
    );
    until(
        &mut hev,
        "member_joined",
        |e| matches!(e, Event::MemberJoined(x) if x.id == new_member_id),
    )
    .await;
    let ids: Vec<_> = h.members().into_iter().map(|x| x.id).collect();
    assert_eq!(ids, vec![h.client_id().unwrap(), new_member_id]);
}

#[tokio::test]
async fn failed_after_the_attempts_when_the_server_stays_away() {
    let server = start().await;
    let addr = server.local_addr();
    let (_h, _hev) = host(addr, "s").await;
    let (m, mut mev) = member(addr, "s", "phone").await;
    server.shutdown().await;
    let seen = until_end(&mut mev).await;
    let attempts = seen
        .iter()
        .filter(|e| matches!(e, Event::Reconnecting { .. }))
        .count();
    assert_eq!(attempts, 3, "{seen:?}");
    assert!(
        matches!(seen.last(), Some(Event::Failed { reason }) if reason.contains("could not connect")),
        "{seen:?}"
    );
    assert_eq!(m.state(), ConnectionState::Failed);
}

/// A stand-in server that welcomes a client and then stays silent (reads nothing, sends
/// nothing): only the client's own silence detection can notice.
#[tokio::test]
async fn a_silent_server_is_detected_and_the_client_reconnects() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_websockets::{Message, ServerBuilder};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        for id in ["c_first", "c_second"] {
            let (tcp, _) = listener.accept().await.unwrap();
            let (_, mut ws) = ServerBuilder::new().accept(tcp).await.unwrap();
            let _join = ws.next().await;
            ws.send(Message::text(welcome(id))).await.unwrap();
            ws.send(Message::text(empty_member_list())).await.unwrap();
            if id == "c_second" {
                // The second connection is served: answer pings so it stays up.
                tokio::spawn(async move {
                    while let Some(Ok(m)) = ws.next().await {
                        let Some(t) = m.as_text() else { continue };
                        if let Ok(ClientMessage::Ping { timestamp }) = loudsync_protocol::decode(t)
                        {
                            let pong = loudsync_protocol::encode(
                                &ServerMessage::Pong,
                                &Stamp::Echo(timestamp),
                            );
                            let _ = ws.send(Message::text(pong)).await;
                        }
                    }
                });
            } else {
                held.push(ws); // silent: never read, never written
            }
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(held);
    });
    let (m, mut mev) = Client::connect(plain(ClientConfig::member(url(addr), "s", "d", "d")))
        .await
        .unwrap();
    assert_eq!(m.client_id().as_deref(), Some("c_first"));
    let lost = until(&mut mev, "connection lost", |e| {
        matches!(e, Event::ConnectionLost { .. })
    })
    .await;
    assert!(
        matches!(&lost, Event::ConnectionLost { reason } if reason.contains("silence")),
        "{lost:?}"
    );
    until(&mut mev, "welcome again", |e| {
        matches!(e, Event::Welcome { .. })
    })
    .await;
    assert_eq!(m.state(), ConnectionState::Connected);
    assert_eq!(m.client_id().as_deref(), Some("c_second"));
}

const QUOTA: &str = r#"{"type":"error","code":"quota_exceeded","message":"over your quota","details":{"limit":5},"timestamp":1,"retryAfter":30}"#;
const PRESENCE: &str = r#"{"type":"presence_diff","timestamp":1,"added":["c_9"],"removed":[]}"#;

/// A stand-in for a newer server: welcomes the client (checking that its `join` is one the
/// real server decodes), then sends `frames` as they are, then keeps the socket open.
async fn newer_server(frames: &'static [&'static str], welcome_first: bool) -> SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    use tokio_websockets::{Message, ServerBuilder};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let (_, mut ws) = ServerBuilder::new().accept(tcp).await.unwrap();
        let join = ws.next().await.unwrap().unwrap();
        let join = loudsync_protocol::decode(join.as_text().unwrap()).unwrap();
        assert!(matches!(join, ClientMessage::Join(_)), "{join:?}");
        if welcome_first {
            ws.send(Message::text(welcome("c_new"))).await.unwrap();
            ws.send(Message::text(empty_member_list())).await.unwrap();
        }
        for frame in frames {
            ws.send(Message::text(frame.to_string())).await.unwrap();
        }
        while let Some(Ok(_)) = ws.next().await {}
    });
    addr
}

#[tokio::test]
async fn a_newer_servers_error_codes_and_message_types_reach_the_events() {
    let addr = newer_server(&[QUOTA, PRESENCE], true).await;
    let (m, mut mev) = Client::connect(plain(ClientConfig::member(url(addr), "s", "d", "d")))
        .await
        .unwrap();
    let error = until(&mut mev, "error", |e| matches!(e, Event::Error(_))).await;
    let Event::Error(error) = error else {
        unreachable!()
    };
    assert_eq!(error.code, AnyErrorCode::Unknown("quota_exceeded".into()));
    assert_eq!(error.code.known(), None);
    assert_eq!(error.message, "over your quota");
    assert_eq!(error.details, Some(json!({"limit": 5})));
    assert_eq!(error.to_string(), "quota_exceeded: over your quota");
    let unknown = until(&mut mev, "unknown", |e| matches!(e, Event::Unknown { .. })).await;
    assert_eq!(
        unknown,
        Event::Unknown {
            kind: "presence_diff".into(),
            raw: RawJson::from_text(PRESENCE).unwrap(),
        }
    );
    assert_eq!(m.state(), ConnectionState::Connected, "neither is fatal");
}

#[tokio::test]
async fn a_join_refused_with_an_unknown_code_is_a_typed_rejection() {
    let addr = newer_server(&[QUOTA], false).await;
    let err = Client::connect(plain(ClientConfig::member(url(addr), "s", "d", "d")))
        .await
        .err()
        .expect("rejected");
    match err {
        ClientError::Rejected(e) => {
            assert_eq!(e.code.as_str(), "quota_exceeded");
            assert_ne!(e.code, ErrorCode::SessionFull);
        }
        other => panic!("{other:?}"),
    }
}

/// Against the real server: a host's password is required of members; the refusals are typed
/// access refusals, and the right password joins.
#[tokio::test]
async fn password_refusals_are_typed_join_errors() {
    let server = start().await;
    let addr = server.local_addr();
    let mut host_config = fast(ClientConfig::host(url(addr), "p", "P", "mac", "Mac"));
    host_config.password = Some("open sesame".into());
    let (_h, _hev) = Client::connect(host_config).await.expect("host");
    for (given, code) in [
        (None, ErrorCode::PasswordRequired),
        (Some("guess"), ErrorCode::WrongPassword),
    ] {
        let mut c = fast(ClientConfig::member(url(addr), "p", "phone", "Phone"));
        c.password = given.map(Into::into);
        let err = Client::connect(c).await.err().expect("refused");
        match &err {
            ClientError::Rejected(e) => {
                assert_eq!(e.code, code);
                assert!(e.is_access_refusal());
                assert!(!e.message.contains("open sesame"));
            }
            other => panic!("{other:?}"),
        }
    }
    let mut c = fast(ClientConfig::member(url(addr), "p", "phone", "Phone"));
    c.password = Some("open sesame".into());
    let (m, _mev) = Client::connect(c).await.expect("the right password joins");
    assert_eq!(m.members().len(), 2);
}
