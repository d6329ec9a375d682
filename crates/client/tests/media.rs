//! The SDK's side of the session media relay (issue 13 §9) against the real server on
//! loopback: `media_token` grants (the host publishes, members subscribe, the stream is the
//! session), `media_unavailable` from a server without `--media-listen`, and a short
//! synthetic stream from the host through the relay to two subscribers, frame for frame.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{host_config, member_config, Peer, WAIT};
use loudsync_client::media::publisher::{publish, Published};
use loudsync_client::media::receiver::receive;
use loudsync_client::{ClientError, ConnectionState, ErrorCode, Event, MediaGrant, MediaRole};
use loudsync_core::media::initiator::{InitiatorConfig, Outcome};
use loudsync_core::media::publisher::PublisherConfig;
use loudsync_protocol::media::{MediaToken, StreamParams};
use loudsync_protocol::ClientMessage;
use loudsync_server::{Server, ServerConfig};

/// The session every peer of `common` joins.
const SESSION: &str = "s";

/// A server on loopback with short timers, its media relay on `127.0.0.1:0` when `relay`.
async fn start(relay: bool) -> Server {
    Server::bind(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        heartbeat_timeout: Duration::from_millis(600),
        heartbeat_check_interval: Duration::from_millis(50),
        latency_interval: Duration::from_millis(100),
        close_timeout: Duration::from_millis(200),
        drain_timeout: Duration::from_secs(1),
        media_listen: relay.then(|| "127.0.0.1:0".parse().unwrap()),
        ..ServerConfig::default()
    })
    .await
    .unwrap()
}

/// The host (`mac`) and two members (`phone`, `tablet`) of session `s`.
async fn party(addr: SocketAddr) -> (Peer, Peer, Peer) {
    let host = Peer::connect(host_config(addr)).await;
    let phone = Peer::connect(member_config(addr, "phone")).await;
    let tablet = Peer::connect(member_config(addr, "tablet")).await;
    (host, phone, tablet)
}

async fn grant(peer: &Peer) -> MediaGrant {
    tokio::time::timeout(WAIT, peer.client.media_token())
        .await
        .expect("a reply in time")
        .expect("a grant")
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// 808 000 bps at 50 fps in 1000-byte datagrams: 2020-byte frames of 1000/993/27 (§8).
fn params() -> StreamParams {
    StreamParams::new(808_000, 50, 1000).unwrap()
}

#[tokio::test]
async fn the_host_gets_a_publish_grant_and_members_subscribe_grants_for_the_session() {
    let server = start(true).await;
    let relay_port = server.state().media.as_ref().expect("relay on").port();
    let (host, phone, tablet) = party(server.local_addr()).await;
    let before = unix_ms();
    let grants = [
        grant(&host).await,
        grant(&phone).await,
        grant(&tablet).await,
    ];
    let roles: Vec<MediaRole> = grants.iter().map(|g| g.role).collect();
    assert_eq!(
        roles,
        [
            MediaRole::Publish,
            MediaRole::Subscribe,
            MediaRole::Subscribe
        ]
    );
    for g in &grants {
        assert_eq!(g.stream_id, SESSION, "the stream is the session (R6)");
        assert_eq!(g.port, relay_port);
        assert_eq!(g.token.len(), 43, "{g:?}");
        assert!(g
            .token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        // The default --media-token-ttl: 30 s from the reply.
        assert!(g.expires_at >= before + 30_000 && g.expires_at <= unix_ms() + 30_000);
    }
    // Each grant also arrived as the event, to its requester only.
    for (peer, g) in [
        (&host, &grants[0]),
        (&phone, &grants[1]),
        (&tablet, &grants[2]),
    ] {
        let shown = peer.find("media token event", |e| match e {
            Event::MediaToken(g) => Some(g.clone()),
            _ => None,
        });
        assert_eq!(&shown.await, g);
        assert_eq!(peer.count(|e| matches!(e, Event::MediaToken(_))), 1);
    }
    // Every request gets a new token; replies go to requests in order: a fire-and-forget
    // request's grant is its event's, not the awaited request's after it.
    phone.client.request_media_token().unwrap();
    let again = grant(&phone).await;
    phone
        .until_n("three grant events", 3, |e| {
            matches!(e, Event::MediaToken(_))
        })
        .await;
    let events: Vec<MediaGrant> = phone
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::MediaToken(g) => Some(g),
            _ => None,
        })
        .collect();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[2], again, "the awaited grant is the last reply");
    assert_ne!(events[1].token, again.token);
    assert_ne!(again.token, grants[1].token);
    assert_eq!(again.role, MediaRole::Subscribe);
    // The relay is the server's address with the grant's port.
    let relay = host.client.relay_address(&grants[0]).await.unwrap();
    assert_eq!(relay, SocketAddr::new(server.local_addr().ip(), relay_port));
    server.shutdown().await;
}

#[tokio::test]
async fn without_media_listen_the_request_gets_the_typed_media_unavailable_error() {
    let server = start(false).await;
    let host = Peer::connect(host_config(server.local_addr())).await;
    let refused = tokio::time::timeout(WAIT, host.client.media_token())
        .await
        .expect("a reply in time");
    let Err(ClientError::Refused(error)) = refused else {
        panic!("media_unavailable expected: {refused:?}");
    };
    assert_eq!(error.code, ErrorCode::MediaUnavailable);
    assert_eq!(
        error.message,
        "media_token: this server has no media relay (start it with --media-listen)"
    );
    // The event form, for the fire-and-forget request too; the connection stays.
    host.client.request_media_token().unwrap();
    host.until_n(
        "two media_unavailable errors",
        2,
        |e| matches!(e, Event::Error(e) if e.code == ErrorCode::MediaUnavailable),
    )
    .await;
    assert_eq!(host.client.state(), ConnectionState::Connected);
    assert_eq!(host.count(|e| matches!(e, Event::MediaToken(_))), 0);
    assert_eq!(
        grant_or_error(&host).await,
        Some(ErrorCode::MediaUnavailable)
    );
    // Once left, nothing is sent.
    host.client.leave().await;
    assert_eq!(
        host.client.media_token().await,
        Err(ClientError::NotConnected)
    );
    server.shutdown().await;
}

/// A stand-in server (plain protocol): the first connection is dropped when `media_token`
/// arrives, unanswered; the second welcomes the client afresh and answers `media_token` with
/// a grant.
async fn server_dropping_the_first_request() -> SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    use tokio_websockets::{Message, ServerBuilder};

    let welcome = |id: &str| {
        serde_json::json!({"type":"welcome","timestamp":1,"clientId":id,
            "sessionInfo":{"id":"s","name":"S","hostId":"h"}})
        .to_string()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for id in ["c_first", "c_second"] {
            let (tcp, _) = listener.accept().await.unwrap();
            let (_, mut ws) = ServerBuilder::new().accept(tcp).await.unwrap();
            let _join = ws.next().await;
            ws.send(Message::text(welcome(id))).await.unwrap();
            while let Some(Ok(m)) = ws.next().await {
                let Some(text) = m.as_text() else { continue };
                match loudsync_protocol::decode(text) {
                    // Kept up: the client's pings are answered.
                    Ok(ClientMessage::Ping { timestamp }) => {
                        let pong = loudsync_protocol::encode(
                            &loudsync_protocol::ServerMessage::Pong,
                            &loudsync_protocol::Stamp::Echo(timestamp),
                        );
                        ws.send(Message::text(pong)).await.unwrap();
                    }
                    Ok(ClientMessage::MediaToken) if id == "c_first" => break, // unanswered
                    Ok(ClientMessage::MediaToken) => {
                        let grant = serde_json::json!({"type":"media_token",
                            "token":"G".repeat(43),"role":"subscribe","streamId":"s",
                            "port":4444,"expiresAt":1,"timestamp":1});
                        ws.send(Message::text(grant.to_string())).await.unwrap();
                    }
                    _ => {}
                }
            }
        }
    });
    addr
}

#[tokio::test]
async fn a_request_lost_with_its_connection_fails_not_connected_at_the_fresh_join() {
    let addr = server_dropping_the_first_request().await;
    let mut config = member_config(addr, "phone");
    config.resume = false;
    let phone = Peer::connect(config).await;
    assert_eq!(phone.id(), "c_first");
    let lost = tokio::time::timeout(WAIT, phone.client.media_token())
        .await
        .expect("an answer in time");
    assert_eq!(lost, Err(ClientError::NotConnected));
    assert_eq!(phone.id(), "c_second", "failed at the fresh welcome");
    // On the new connection requests are answered again.
    let g = grant(&phone).await;
    assert_eq!(
        (g.role, g.port, g.stream_id.as_str()),
        (MediaRole::Subscribe, 4444, "s")
    );
}

/// The code of the error [`loudsync_client::Client::media_token`] returns, `None` for a grant.
async fn grant_or_error(peer: &Peer) -> Option<ErrorCode> {
    match tokio::time::timeout(WAIT, peer.client.media_token()).await {
        Ok(Err(ClientError::Refused(e))) => e.code.known(),
        Ok(Ok(_)) => None,
        other => panic!("no answer: {other:?}"),
    }
}

#[tokio::test]
async fn the_hosts_stream_reaches_both_subscribers_frame_for_frame() {
    let server = start(true).await;
    let media = server.state().media.clone().expect("relay on");
    let (host, phone, tablet) = party(server.local_addr()).await;
    const FRAMES: u64 = 50; // 1 s at 50 fps

    // Both members subscribe first, so they see the stream from frame 1 (R7).
    let mut subscribers = Vec::new();
    for peer in [&phone, &tablet] {
        let g = grant(peer).await;
        assert_eq!(g.role, MediaRole::Subscribe);
        let relay = peer.client.relay_address(&g).await.unwrap();
        let mut config = InitiatorConfig::new(g.stream().unwrap(), params(), 50, Some(FRAMES));
        config.media_token = g.media_token();
        subscribers.push(tokio::spawn(receive(relay, config, |_| {})));
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while media.subscribers(SESSION) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the subscribers did not confirm within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let g = grant(&host).await;
    assert_eq!(g.role, MediaRole::Publish);
    let relay = host.client.relay_address(&g).await.unwrap();
    let config = PublisherConfig::new(
        g.stream().unwrap(),
        g.media_token().unwrap(),
        params(),
        50,
        Some(FRAMES),
    );
    let published = tokio::time::timeout(WAIT, publish(relay, config).await.unwrap().finished())
        .await
        .expect("the stream ends in time")
        .unwrap();
    assert_eq!(
        published,
        Published {
            outcome: Some(Outcome::Finished),
            sent_frames: FRAMES
        }
    );
    for subscriber in subscribers {
        let received = tokio::time::timeout(WAIT, subscriber)
            .await
            .expect("the subscriber ends in time")
            .unwrap()
            .unwrap();
        assert_eq!(received.outcome, Some(Outcome::Finished));
        let s = received.summary;
        assert_eq!(
            (s.expected, s.success, s.dropped, s.duplicate),
            (FRAMES, FRAMES, 0, 0),
            "{s:?}"
        );
        assert_eq!((s.corrupt, s.stray), (0, 0), "{s:?}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_token_the_server_never_granted_is_refused_bad_token() {
    let server = start(true).await;
    let host = Peer::connect(host_config(server.local_addr())).await;
    let g = grant(&host).await;
    let relay = host.client.relay_address(&g).await.unwrap();
    let forged = MediaToken::new("A".repeat(43).into_bytes()).unwrap();
    let config = PublisherConfig::new(g.stream().unwrap(), forged, params(), 50, Some(5));
    let published = tokio::time::timeout(WAIT, publish(relay, config).await.unwrap().finished())
        .await
        .expect("refused in time")
        .unwrap();
    assert_eq!(
        published,
        Published {
            outcome: Some(Outcome::Refused(6)),
            sent_frames: 0
        }
    );
    server.shutdown().await;
}
