//! The SDK's resume layer against the real server on loopback (issue 10), through a small
//! TCP proxy that cuts connections on demand (mid-frame too) and can refuse new ones or
//! switch servers: numbered messages both ways arrive exactly once and in order across cuts,
//! a host resumes with its session held, what is sent while away is queued, the window's
//! end and an unknown token are refused and followed by a fresh join, the formal disconnect
//! is a leave, and many members cut at once all resume.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use loudsync_client::{
    ClientConfig, ClientError, ConnectionState, ConnectionStatus, Event, LeaveReason, LinkState,
};
use loudsync_protocol::ResumeFailure;
use loudsync_server::{Server, ServerConfig};
use serde_json::json;
use tokio::net::TcpListener;

mod common;

use common::{fast, host_config, member_config, url, Cut, Peer, Proxy, WAIT};

fn server_config(listen: SocketAddr) -> ServerConfig {
    ServerConfig {
        listen,
        heartbeat_timeout: Duration::from_millis(600),
        heartbeat_check_interval: Duration::from_millis(50),
        latency_interval: Duration::from_millis(100),
        close_timeout: Duration::from_millis(200),
        drain_timeout: Duration::from_secs(1),
        ack_interval: Duration::from_millis(200),
        ..ServerConfig::default()
    }
}

async fn start_with(config: ServerConfig) -> Server {
    Server::bind(config).await.unwrap()
}

async fn start() -> Server {
    start_with(server_config("127.0.0.1:0".parse().unwrap())).await
}

impl Peer {
    /// The `n` of every `{"n": ..}` message received, in order.
    fn received(&self) -> Vec<u64> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::Message { data, .. } => data["n"].as_u64(),
                _ => None,
            })
            .collect()
    }

    /// Sends `{"n": i}` for each `i`, waiting while the queue is full.
    async fn send_all(&self, ns: std::ops::Range<u64>) {
        for n in ns {
            loop {
                match self.client.send(json!({ "n": n })) {
                    Ok(()) => break,
                    Err(ClientError::QueueFull) => {
                        tokio::time::sleep(Duration::from_millis(5)).await
                    }
                    Err(e) => panic!("send {n}: {e}"),
                }
            }
            if n % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

fn is_resumed(e: &Event) -> bool {
    matches!(e, Event::Resumed { .. })
}

fn is_welcome(e: &Event) -> bool {
    matches!(e, Event::Welcome { .. })
}

#[tokio::test]
async fn connections_are_resumable_by_default() {
    let server = start().await;
    let addr = server.local_addr();
    let host = Peer::connect(host_config(addr)).await;
    assert_eq!(host.client.link_state(), LinkState::Connected);
    let member = Peer::connect(member_config(addr, "phone")).await;
    assert_eq!(member.client.link_state(), LinkState::Connected);
    member.client.send(json!({"n": 0})).unwrap();
    host.until("message", |e| matches!(e, Event::Message { .. }))
        .await;
    assert_eq!(host.received(), [0]);
    // The plain connection still works beside it.
    let mut c = member_config(addr, "tablet");
    c.resume = false;
    let plain = Peer::connect(c).await;
    assert_eq!(plain.client.link_state(), LinkState::Disconnected);
    assert_eq!(plain.client.state(), ConnectionState::Connected);
    plain.client.send(json!({"n": 1})).unwrap();
    host.until_n("message", 2, |e| matches!(e, Event::Message { .. }))
        .await;
    assert_eq!(host.received(), [0, 1]);
}

#[tokio::test]
async fn a_cut_member_resumes_and_nothing_is_lost_or_doubled_either_way() {
    const N: u64 = 400;
    let server = start().await;
    let addr = server.local_addr();
    let proxy = Proxy::start(addr).await;
    let host = Peer::connect(host_config(addr)).await;
    let member = Peer::connect(member_config(proxy.addr, "phone")).await;
    let member_id = member.client.client_id().unwrap();
    let host = Arc::new(host);
    let member = Arc::new(member);
    let (h, m) = (host.clone(), member.clone());
    let senders = [
        tokio::spawn(async move { h.send_all(0..N).await }),
        tokio::spawn(async move { m.send_all(0..N).await }),
    ];
    // Four cuts while both sides send, two of them inside a frame.
    for (i, how) in [Cut::Clean, Cut::MidFrame, Cut::Clean, Cut::MidFrame]
        .into_iter()
        .enumerate()
    {
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.cut(how);
        member.until_n("resumed", i + 1, is_resumed).await;
    }
    for s in senders {
        s.await.unwrap();
    }
    let all = |p: &Peer| p.received().len() as u64 >= N;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !(all(&host) && all(&member)) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // anything doubled would show now
    let want: Vec<u64> = (0..N).collect();
    assert_eq!(
        host.received(),
        want,
        "the host got the member's messages once, in order"
    );
    assert_eq!(
        member.received(),
        want,
        "the member got the host's messages once, in order"
    );
    // The same member throughout: resumed four times, never welcomed again, never left.
    assert_eq!(member.client.client_id().unwrap(), member_id);
    assert_eq!(member.count(is_resumed), 4, "{:?}", member.events());
    assert_eq!(member.count(is_welcome), 1, "only the first join's");
    assert_eq!(
        host.count(|e| matches!(e, Event::MemberLeft { .. })),
        0,
        "{:?}",
        host.events()
    );
    assert_eq!(host.members().len(), 2);
    assert!(host
        .members()
        .iter()
        .all(|m| m.connection_status == ConnectionStatus::Connected));
}

#[tokio::test]
async fn a_cut_host_resumes_and_its_session_stays_open() {
    let server = start().await;
    let addr = server.local_addr();
    let proxy = Proxy::start(addr).await;
    let host = Peer::connect(host_config(proxy.addr)).await;
    let host_id = host.client.client_id().unwrap();
    let member = Peer::connect(member_config(addr, "phone")).await;
    proxy.refuse(true);
    proxy.cut(Cut::Clean);
    let away = host_id.clone();
    member
        .until("the host reconnecting", move |e| {
            matches!(e, Event::MemberUpdated(m)
                if m.id == away && m.connection_status == ConnectionStatus::Reconnecting)
        })
        .await;
    proxy.refuse(false);
    host.until("resumed", is_resumed).await;
    let back = host_id.clone();
    member
        .until("the host connected again", move |e| {
            matches!(e, Event::MemberUpdated(m)
                if m.id == back && m.connection_status == ConnectionStatus::Connected)
        })
        .await;
    assert_eq!(host.client.client_id().unwrap(), host_id);
    assert_eq!(host.client.state(), ConnectionState::Connected);
    assert!(!member
        .events()
        .iter()
        .any(|e| matches!(e, Event::SessionClosed { .. } | Event::MemberLeft { .. })));
    assert!(!host
        .events()
        .iter()
        .any(|e| matches!(e, Event::SessionClosed { .. })));
    host.client.send(json!({"n": 7})).unwrap();
    member
        .until("message", |e| matches!(e, Event::Message { .. }))
        .await;
    assert_eq!(member.received(), [7]);
}

impl Peer {
    /// The id of the last `welcome` (the snapshot may lag the event by a moment).
    fn welcomed_as(&self) -> Option<String> {
        self.events().into_iter().rev().find_map(|e| match e {
            Event::Welcome { client_id, .. } => Some(client_id),
            _ => None,
        })
    }

    fn members(&self) -> Vec<loudsync_protocol::MemberInfo> {
        self.client.members()
    }
}

#[tokio::test]
async fn what_is_sent_while_away_is_queued_and_arrives_in_order() {
    let server = start().await;
    let addr = server.local_addr();
    let proxy = Proxy::start(addr).await;
    let host = Peer::connect(host_config(addr)).await;
    let member = Peer::connect(member_config(proxy.addr, "phone")).await;
    proxy.refuse(true);
    proxy.cut(Cut::Clean);
    member
        .until("reconnecting", |e| {
            *e == Event::StateChanged(ConnectionState::Reconnecting)
        })
        .await;
    // Sent while away: taken, not refused.
    for n in 0..50 {
        member.client.send(json!({ "n": n })).unwrap();
    }
    assert!(host.received().is_empty());
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.refuse(false);
    member.until("resumed", is_resumed).await;
    host.until_n("messages", 50, |e| matches!(e, Event::Message { .. }))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(host.received(), (0..50).collect::<Vec<u64>>());
    // Pings are never queued.
    proxy.refuse(true);
    proxy.cut(Cut::Clean);
    member
        .until_n("reconnecting", 2, |e| {
            *e == Event::StateChanged(ConnectionState::Reconnecting)
        })
        .await;
    assert!(matches!(
        member.client.ping(),
        Err(ClientError::NotConnected)
    ));
}

#[tokio::test]
async fn after_the_window_the_resume_is_refused_expired_and_the_member_joins_afresh() {
    let mut config = server_config("127.0.0.1:0".parse().unwrap());
    config.resume_window = Duration::from_millis(300);
    let server = start_with(config).await;
    let addr = server.local_addr();
    let proxy = Proxy::start(addr).await;
    let host = Peer::connect(host_config(addr)).await;
    let member = Peer::connect(member_config(proxy.addr, "phone")).await;
    let old_id = member.client.client_id().unwrap();
    proxy.refuse(true);
    proxy.cut(Cut::Clean);
    let gone = old_id.clone();
    host.until("member_left timeout", move |e| {
        *e == Event::MemberLeft {
            member_id: gone.clone(),
            reason: LeaveReason::Timeout,
        }
    })
    .await;
    proxy.refuse(false);
    member
        .until("resume_failed", |e| matches!(e, Event::ResumeFailed { .. }))
        .await;
    member.until_n("welcome", 2, is_welcome).await;
    let failed = member
        .events()
        .into_iter()
        .find(|e| matches!(e, Event::ResumeFailed { .. }))
        .unwrap();
    assert!(
        matches!(
            failed,
            Event::ResumeFailed {
                reason: ResumeFailure::Expired,
                rejoining: true,
                ..
            }
        ),
        "{failed:?}"
    );
    let new_id = member.welcomed_as().expect("welcomed");
    assert_ne!(new_id, old_id);
    assert_eq!(member.client.state(), ConnectionState::Connected);
    assert_eq!(member.client.link_state(), LinkState::Connected);
    let joined = new_id.clone();
    host.until(
        "member_joined",
        move |e| matches!(e, Event::MemberJoined(m) if m.id == joined),
    )
    .await;
    // The fresh connection is resumable in turn.
    proxy.cut(Cut::Clean);
    member.until("resumed", is_resumed).await;
    assert_eq!(member.client.client_id().unwrap(), new_id);
}

#[tokio::test]
async fn a_token_another_server_never_issued_is_refused_and_the_member_joins_there() {
    let first = start().await;
    let second = start().await;
    let proxy = Proxy::start(first.local_addr()).await;
    let _host1 = Peer::connect(host_config(first.local_addr())).await;
    let host2 = Peer::connect(host_config(second.local_addr())).await;
    let member = Peer::connect(member_config(proxy.addr, "phone")).await;
    proxy.switch_to(second.local_addr());
    proxy.cut(Cut::Clean);
    member
        .until("resume_failed", |e| matches!(e, Event::ResumeFailed { .. }))
        .await;
    member.until_n("welcome", 2, is_welcome).await;
    assert!(member.events().iter().any(|e| matches!(
        e,
        Event::ResumeFailed {
            reason: ResumeFailure::UnknownToken,
            rejoining: true,
            ..
        }
    )));
    let id = member.welcomed_as().expect("welcomed");
    host2
        .until(
            "member_joined",
            move |e| matches!(e, Event::MemberJoined(m) if m.id == id),
        )
        .await;
}

#[tokio::test]
async fn the_formal_disconnect_is_a_leave() {
    let server = start().await;
    let addr = server.local_addr();
    let host = Peer::connect(host_config(addr)).await;
    let member = Peer::connect(member_config(addr, "phone")).await;
    let id = member.client.client_id().unwrap();
    member.client.send(json!({"n": 1})).unwrap();
    member.client.disconnect().await;
    assert_eq!(member.client.state(), ConnectionState::Disconnected);
    assert_eq!(member.client.link_state(), LinkState::Disconnected);
    host.until("member_left", move |e| {
        *e == Event::MemberLeft {
            member_id: id.clone(),
            reason: LeaveReason::Left,
        }
    })
    .await;
    assert_eq!(
        host.received(),
        [1],
        "what was queued went out before the token"
    );
    assert_eq!(member.count(is_resumed), 0);
    assert!(!member
        .events()
        .iter()
        .any(|e| matches!(e, Event::Resuming { .. } | Event::Reconnecting { .. })));
}

#[tokio::test]
async fn kicked_and_session_closed_are_never_resumed() {
    let server = start().await;
    let addr = server.local_addr();
    let host = Peer::connect(host_config(addr)).await;
    let member = Peer::connect(member_config(addr, "phone")).await;
    host.client
        .kick(&member.client.client_id().unwrap(), Some("bye"))
        .unwrap();
    member
        .until("kicked", |e| matches!(e, Event::Kicked { .. }))
        .await;
    let other = Peer::connect(member_config(addr, "tablet")).await;
    host.client.close_session().await;
    other
        .until("session_closed", |e| {
            matches!(e, Event::SessionClosed { .. })
        })
        .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    for p in [&member, &other] {
        assert!(
            !p.events()
                .iter()
                .any(|e| matches!(e, Event::Resuming { .. } | Event::Reconnecting { .. })),
            "{:?}",
            p.events()
        );
        assert_eq!(p.client.state(), ConnectionState::Disconnected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_members_cut_at_once_all_resume() {
    const MEMBERS: usize = 100;
    let mut config = server_config("127.0.0.1:0".parse().unwrap());
    config.max_members = MEMBERS + 1;
    // One address for everyone: lift the per-address limits.
    config.join_rate_per_address = 0;
    config.max_connections_per_address = 1_000_000;
    config.max_unjoined_per_address = 1_000_000;
    // 100 resumes fan out ~20 000 `member_updated` frames: with the other tests' 600 ms
    // timeouts a debug build times members out again while it catches up.
    config.heartbeat_timeout = Duration::from_secs(3);
    let relaxed = |mut c: ClientConfig| {
        c.heartbeat_interval = Duration::from_millis(500);
        c.silence_timeout = Duration::from_secs(3);
        c.join_timeout = Duration::from_secs(5);
        c
    };
    let server = start_with(config).await;
    let addr = server.local_addr();
    let proxy = Proxy::start(addr).await;
    let host = Peer::connect(relaxed(host_config(addr))).await;
    let mut members = Vec::new();
    for i in 0..MEMBERS {
        let config = relaxed(member_config(proxy.addr, &format!("d{i}")));
        members.push(Peer::connect(config).await);
    }
    let ids: Vec<String> = members
        .iter()
        .map(|m| m.client.client_id().unwrap())
        .collect();
    proxy.cut(Cut::Clean);
    for m in &members {
        m.until("resumed", is_resumed).await;
    }
    let now: Vec<String> = members
        .iter()
        .map(|m| m.client.client_id().unwrap())
        .collect();
    assert_eq!(now, ids);
    // Resumed, not refused and joined afresh.
    for m in &members {
        assert_eq!(m.count(is_welcome), 1);
        assert_eq!(m.count(|e| matches!(e, Event::ResumeFailed { .. })), 0);
    }
    host.client.send(json!({"n": 1})).unwrap();
    for m in &members {
        m.until("message", |e| matches!(e, Event::Message { .. }))
            .await;
        assert_eq!(m.received(), [1]);
    }
    assert_eq!(host.count(|e| matches!(e, Event::MemberLeft { .. })), 0);
}

/// The host's copy of the member table shows the member that dropped as reconnecting while
/// it is away (the server's `member_updated`).
#[tokio::test]
async fn the_table_shows_a_member_reconnecting_while_away() {
    let server = start().await;
    let addr = server.local_addr();
    let proxy = Proxy::start(addr).await;
    let host = Peer::connect(host_config(addr)).await;
    let member = Peer::connect(member_config(proxy.addr, "phone")).await;
    let id = member.client.client_id().unwrap();
    proxy.refuse(true);
    proxy.cut(Cut::Clean);
    let away = id.clone();
    host.until(
        "member_updated",
        move |e| matches!(e, Event::MemberUpdated(m) if m.id == away),
    )
    .await;
    let entry = host
        .members()
        .into_iter()
        .find(|m| m.id == id)
        .expect("still in the table");
    assert_eq!(entry.connection_status, ConnectionStatus::Reconnecting);
}

/// The issue's figure: 1 000 clients cut at once all resume (50 sessions of a host and 19
/// members, so the `member_updated` fan-out stays that of a session of 20). Run with
/// `--ignored` (about ten seconds in a debug build).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn a_thousand_clients_cut_at_once_all_resume() {
    const SESSIONS: usize = 50;
    const PER_SESSION: usize = 20;
    let mut config = server_config("127.0.0.1:0".parse().unwrap());
    config.max_members = PER_SESSION;
    config.join_rate_per_address = 0;
    config.max_connections_per_address = 1_000_000;
    config.max_unjoined_per_address = 1_000_000;
    config.heartbeat_timeout = Duration::from_secs(5);
    let relaxed = |mut c: ClientConfig| {
        c.heartbeat_interval = Duration::from_secs(1);
        c.silence_timeout = Duration::from_secs(5);
        c.join_timeout = Duration::from_secs(10);
        c
    };
    let server = start_with(config).await;
    let proxy = Proxy::start(server.local_addr()).await;
    let mut peers = Vec::new();
    for s in 0..SESSIONS {
        let session = format!("s{s}");
        let host = ClientConfig::host(url(proxy.addr), &session, "P", format!("h{s}"), "H");
        peers.push(Peer::connect(relaxed(fast(host))).await);
        for i in 1..PER_SESSION {
            let device = format!("d{s}-{i}");
            let member = ClientConfig::member(url(proxy.addr), &session, &device, &device);
            peers.push(Peer::connect(relaxed(fast(member))).await);
        }
    }
    let ids: Vec<String> = peers
        .iter()
        .map(|p| p.client.client_id().unwrap())
        .collect();
    let started = tokio::time::Instant::now();
    proxy.cut(Cut::Clean);
    for p in &peers {
        p.until("resumed", is_resumed).await;
    }
    eprintln!(
        "{} clients resumed {:?} after the cut",
        peers.len(),
        started.elapsed()
    );
    let now: Vec<String> = peers
        .iter()
        .map(|p| p.client.client_id().unwrap())
        .collect();
    assert_eq!(now, ids);
    for p in &peers {
        assert_eq!(p.count(|e| matches!(e, Event::ResumeFailed { .. })), 0);
        assert_eq!(p.count(|e| matches!(e, Event::MemberLeft { .. })), 0);
    }
}

/// A server without the resume layer answers the handshake's first token with
/// `invalid_message`: the SDK joins plainly on the same socket and works as before.
#[tokio::test]
async fn a_server_without_the_resume_layer_gets_a_plain_join() {
    use futures_util::{SinkExt, StreamExt};
    use loudsync_protocol::{server::SessionInfo, ClientMessage, ServerMessage, Stamp};
    use tokio_websockets::{Message, ServerBuilder};

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let (_, mut ws) = ServerBuilder::new().accept(tcp).await.unwrap();
        while let Some(Ok(frame)) = ws.next().await {
            let Some(text) = frame.as_text() else {
                continue;
            };
            let message = loudsync_protocol::decode(text).unwrap();
            let _ = seen_tx.send(text.to_string());
            let reply = match message {
                ClientMessage::Token { .. } => vec![r#"{"type":"error","code":"invalid_message","message":"unknown type `token`","timestamp":1}"#.to_string()],
                ClientMessage::Join(_) => vec![
                    loudsync_protocol::encode(
                        &ServerMessage::Welcome {
                            client_id: "c_old".into(),
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
                        },
                        &Stamp::Now(1),
                    ),
                    loudsync_protocol::encode(
                        &ServerMessage::MemberList { members: vec![] },
                        &Stamp::Now(1),
                    ),
                ],
                _ => vec![],
            };
            for r in reply {
                ws.send(Message::text(r)).await.unwrap();
            }
        }
    });
    let member = Peer::connect(member_config(addr, "phone")).await;
    assert_eq!(member.client.client_id().as_deref(), Some("c_old"));
    assert_eq!(member.client.link_state(), LinkState::Disconnected);
    member.client.send(json!({"n": 1})).unwrap();
    let mut frames = Vec::new();
    while frames.len() < 3 {
        let frame = tokio::time::timeout(WAIT, seen_rx.recv())
            .await
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&frame).unwrap();
        if v["type"] != "heartbeat" && v["type"] != "ping" {
            frames.push(v);
        }
    }
    assert_eq!(frames[0]["type"], "token");
    assert_eq!(frames[1]["type"], "join");
    assert_eq!(frames[2]["type"], "message");
    assert!(frames[2].get("seq").is_none(), "plain: no seq");
    assert!(member
        .events()
        .iter()
        .all(|e| !matches!(e, Event::Error(_))));
}

/// A member cut by the proxy calls `leave()` (or `disconnect()`) before it is back: the leave
/// waits for the resume and goes out right behind it, so the host sees `member_left` `left`
/// at once, well before the window's end (5 s), and the member ends without joining afresh.
async fn leave_while_away(disconnect: bool) {
    let mut config = server_config("127.0.0.1:0".parse().unwrap());
    config.resume_window = Duration::from_secs(5);
    let server = start_with(config).await;
    let addr = server.local_addr();
    let proxy = Proxy::start(addr).await;
    let host = Peer::connect(host_config(addr)).await;
    let member = Peer::connect(member_config(proxy.addr, "phone")).await;
    let id = member.client.client_id().unwrap();
    member.client.send(json!({"n": 1})).unwrap();
    host.until("message", |e| matches!(e, Event::Message { .. }))
        .await;
    proxy.refuse(true);
    let cut = tokio::time::Instant::now();
    proxy.cut(Cut::Clean);
    member
        .until("reconnecting", |e| {
            *e == Event::StateChanged(ConnectionState::Reconnecting)
        })
        .await;
    let away = id.clone();
    host.until("member_updated reconnecting", move |e| {
        matches!(e, Event::MemberUpdated(m)
            if m.id == away && m.connection_status == ConnectionStatus::Reconnecting)
    })
    .await;
    let client = member.client.clone();
    let leaving = tokio::spawn(async move {
        if disconnect {
            client.disconnect().await
        } else {
            client.leave().await
        }
    });
    // Between attempts, with no socket: the leave waits, nothing more is taken.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!leaving.is_finished(), "the leave waits for the resume");
    assert_eq!(member.client.state(), ConnectionState::Reconnecting);
    assert_eq!(
        member.client.send(json!({"n": 2})),
        Err(ClientError::NotConnected)
    );
    proxy.refuse(false);
    let gone = id.clone();
    host.until(
        "member_left left",
        move |e| matches!(e, Event::MemberLeft { member_id, .. } if *member_id == gone),
    )
    .await;
    let took = cut.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "member_left after {took:?}, not at the window's end"
    );
    assert!(host.events().contains(&Event::MemberLeft {
        member_id: id.clone(),
        reason: LeaveReason::Left,
    }));
    tokio::time::timeout(WAIT, leaving)
        .await
        .expect("leave() returns once the server closed")
        .unwrap();
    assert_eq!(member.client.state(), ConnectionState::Disconnected);
    assert_eq!(member.client.link_state(), LinkState::Disconnected);
    assert_eq!(member.count(is_resumed), 1);
    assert_eq!(member.count(is_welcome), 1, "no fresh join");
    assert_eq!(host.received(), [1], "nothing sent after the leave");
}

#[tokio::test]
async fn leave_while_away_goes_out_once_resumed_and_the_others_see_left_at_once() {
    leave_while_away(false).await;
}

#[tokio::test]
async fn the_formal_disconnect_while_away_goes_out_once_resumed() {
    leave_while_away(true).await;
}
