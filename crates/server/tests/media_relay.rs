//! The session media relay inside `loudsync serve --media-listen` (issue 13 §9, R1-R9), end to
//! end: members ask for tokens over their WebSockets, then speak the media handshake over real
//! UDP sockets on loopback (every datagram written by `loudsync_protocol::media`'s encoders),
//! and the host's DATA reaches every confirmed subscriber byte for byte.
//!
//! Absence ("nothing is sent to X") is checked without sleeping on it: after the datagram that
//! X must not get, a second one is sent that the others must get; once they have it, the relay
//! has finished the first datagram's fan-out, so anything for X would already be in X's socket.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use loudsync_protocol::media::{
    decode_control, encode_data, encode_start, encode_start_confirm, ConnectionId, ControlBody,
    DataHeader, MediaToken, StreamId, FREQUENCY,
};
use loudsync_protocol::ClientMessage;
use loudsync_server::{Server, ServerConfig};
use serde_json::Value;
use tokio::net::UdpSocket;

/// A server with the relay on an ephemeral loopback port.
async fn relay_server(ttl: Duration) -> Server {
    start_with(ServerConfig {
        media_listen: Some("127.0.0.1:0".parse().unwrap()),
        media_token_ttl: ttl,
        ..test_config()
    })
    .await
}

fn relay_addr(server: &Server) -> SocketAddr {
    server.state().media.as_ref().expect("a relay").local_addr()
}

/// Asks for a media token; returns the reply (skipping what was sent before it).
async fn media_token(c: &mut Client) -> Value {
    c.send(&ClientMessage::MediaToken).await;
    c.recv_until("media_token").await
}

/// A UDP endpoint of a member: its socket and what its token grants.
struct Peer {
    socket: UdpSocket,
    relay: SocketAddr,
    stream: StreamId,
    token: String,
}

impl Peer {
    async fn new(relay: SocketAddr, grant: &Value) -> Peer {
        Peer {
            socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            relay,
            stream: StreamId::new(grant["streamId"].as_str().unwrap()).unwrap(),
            token: grant["token"].as_str().unwrap().to_string(),
        }
    }

    /// Another tuple holding the same grant (a second socket, or a spoofer that saw it).
    async fn elsewhere(&self) -> Peer {
        Peer {
            socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            relay: self.relay,
            stream: self.stream.clone(),
            token: self.token.clone(),
        }
    }

    fn start_bytes(&self) -> Vec<u8> {
        let token = MediaToken::new(self.token.as_bytes().to_vec()).unwrap();
        encode_start(&self.stream, Some(&token))
    }

    async fn send(&self, bytes: &[u8]) {
        self.socket.send_to(bytes, self.relay).await.unwrap();
    }

    /// The next datagram from the relay.
    async fn recv(&self) -> Vec<u8> {
        let mut buf = vec![0u8; 65_536];
        let (n, from) = tokio::time::timeout(WAIT, self.socket.recv_from(&mut buf))
            .await
            .expect("a datagram from the relay")
            .unwrap();
        assert_eq!(from, self.relay);
        buf.truncate(n);
        buf
    }

    /// Nothing is waiting in the socket (see the module comment for when this proves absence).
    fn assert_nothing_waiting(&self) {
        let mut buf = [0u8; 2048];
        match self.socket.try_recv_from(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("expected nothing, got {other:?}"),
        }
    }

    /// START, resent as an initiator does while nothing answers (a loaded machine may drop a
    /// loopback datagram); the START_ACK's connection id.
    async fn start(&self) -> ConnectionId {
        let mut buf = vec![0u8; 65_536];
        for _ in 0..RESENDS {
            self.send(&self.start_bytes()).await;
            let Ok(received) = tokio::time::timeout(RESEND, self.socket.recv_from(&mut buf)).await
            else {
                continue;
            };
            let (n, _) = received.unwrap();
            let ack = decode_control(&buf[..n]).expect("a control frame");
            match ack.body {
                ControlBody::StartAck { stream_id } => assert_eq!(stream_id, self.stream),
                other => panic!("expected START_ACK, got {other:?}"),
            }
            return ack.connection_id;
        }
        panic!("no START_ACK");
    }

    /// START with `bytes`; the ERROR code the relay answers.
    async fn refused(&self, bytes: &[u8]) -> u16 {
        self.send(bytes).await;
        match decode_control(&self.recv().await)
            .expect("a control frame")
            .body
        {
            ControlBody::Error { code, .. } => code,
            other => panic!("expected ERROR, got {other:?}"),
        }
    }

    /// START, START_ACK, START_CONFIRM (resent until the relay streams the tuple: nothing
    /// answers a START_CONFIRM).
    async fn handshake(&self, server: &Server) {
        let id = self.start().await;
        self.confirm(&id, server).await;
    }

    /// START_CONFIRM for `id`, resent until the relay streams the tuple.
    async fn confirm(&self, id: &ConnectionId, server: &Server) {
        let confirm = encode_start_confirm(id, &self.stream);
        let media = server.state().media.clone().unwrap();
        let me = self.socket.local_addr().unwrap();
        for _ in 0..RESENDS * 5 {
            if media.tuple(me).is_some_and(|t| t.streaming) {
                return;
            }
            self.send(&confirm).await;
            tokio::time::sleep(RESEND / 5).await;
        }
        panic!("the relay never took the START_CONFIRM");
    }
}

/// How long a test peer waits before it resends a START or START_CONFIRM, and how often.
const RESEND: Duration = Duration::from_millis(250);
const RESENDS: usize = 12;

/// A publisher's DATA datagram: sequence `seq`, `size` bytes.
fn data(seq: i64, size: usize) -> Vec<u8> {
    let header = DataHeader {
        sequence: seq,
        timestamp: seq * 20_000_000,
        frequency: FREQUENCY,
    };
    encode_data(&header, 0, size)
}

/// Waits (bounded) until `session` has `n` streaming subscribers in the relay: a subscriber's
/// START_CONFIRM has no answer, so this is how a test knows it was taken.
async fn until_subscribers(server: &Server, session: &str, n: usize) {
    let media = server.state().media.clone().unwrap();
    for _ in 0..300 {
        if media.subscribers(session) == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "{session}: {} streaming subscribers, expected {n}",
        media.subscribers(session)
    );
}

/// Waits (bounded) until the relay streams `n` tuples in all (the publisher included).
async fn until_streams(server: &Server, n: usize) {
    let media = server.state().media.clone().unwrap();
    for _ in 0..300 {
        if media.streams() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} streams, expected {n}", media.streams());
}

/// A session with a streaming publisher (the host) and `n` streaming subscribers.
struct Stage {
    clients: Vec<Client>,
    ids: Vec<String>,
    publisher: Peer,
    subscribers: Vec<Peer>,
}

async fn stage(server: &Server, session: &str, n: usize) -> Stage {
    let relay = relay_addr(server);
    let (mut clients, ids) = party(server.local_addr(), session, n).await;
    let grant = media_token(&mut clients[0]).await;
    assert_eq!(grant["role"], "publish");
    let publisher = Peer::new(relay, &grant).await;
    publisher.handshake(server).await;
    let mut subscribers = Vec::new();
    for c in clients.iter_mut().skip(1) {
        let grant = media_token(c).await;
        assert_eq!(grant["role"], "subscribe");
        let peer = Peer::new(relay, &grant).await;
        peer.handshake(server).await;
        subscribers.push(peer);
    }
    until_subscribers(server, session, n).await;
    Stage {
        clients,
        ids,
        publisher,
        subscribers,
    }
}

#[tokio::test]
async fn media_token_gives_the_host_publish_and_members_subscribe_tokens_for_the_relay_port() {
    let server = relay_server(Duration::from_secs(30)).await;
    let port = relay_addr(&server).port();
    let (mut clients, _) = party(server.local_addr(), "mt-shape", 1).await;
    let before = unix_ms();
    let host = media_token(&mut clients[0]).await;
    let member = media_token(&mut clients[1]).await;
    let after = unix_ms();
    for (reply, role) in [(&host, "publish"), (&member, "subscribe")] {
        let fields: Vec<&str> = reply
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields.len(),
            7,
            "type, token, role, streamId, port, expiresAt, timestamp: {reply}"
        );
        assert_eq!(reply["role"], role);
        assert_eq!(reply["streamId"], "mt-shape", "the session id (R6)");
        assert_eq!(reply["port"], port);
        let token = reply["token"].as_str().unwrap();
        assert_eq!(token.len(), 43, "{token}");
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "base64url: {token}"
        );
        let expires = reply["expiresAt"].as_u64().unwrap();
        assert!(
            (before + 30_000..=after + 30_000).contains(&expires),
            "{expires}"
        );
        assert!(reply["timestamp"].as_u64().unwrap() >= before);
    }
    // Every request is a new token.
    let again = media_token(&mut clients[1]).await;
    assert_ne!(again["token"], member["token"]);
    // The reply went to the asker only.
    clients[0].expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn media_token_before_join_is_invalid_message_and_the_socket_stays() {
    let server = relay_server(Duration::from_secs(30)).await;
    let mut c = Client::connect(server.local_addr()).await;
    c.send(&ClientMessage::MediaToken).await;
    let e = c.recv_type("error").await;
    assert_eq!(e["code"], "invalid_message");
    assert_eq!(
        e["message"],
        "media_token: send `join` first; this connection is not in a session"
    );
    c.assert_alive().await;
}

#[tokio::test]
async fn without_media_listen_media_token_is_media_unavailable_and_the_socket_stays() {
    let server = start().await;
    assert!(server.state().media.is_none(), "no socket bound (R1)");
    let (mut clients, _) = party(server.local_addr(), "no-relay", 1).await;
    for c in clients.iter_mut() {
        c.send(&ClientMessage::MediaToken).await;
        let e = c.recv_type("error").await;
        assert_eq!(e["code"], "media_unavailable");
        assert_eq!(
            e["message"],
            "media_token: this server has no media relay (start it with --media-listen)"
        );
        c.assert_alive().await;
    }
}

#[tokio::test]
async fn a_bad_media_listen_address_stops_the_server_at_start() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = Server::bind(ServerConfig {
        media_listen: Some(addr),
        ..test_config()
    })
    .await
    .err()
    .expect("the server must not start");
    assert!(
        loudsync_server::media::relay::MediaBindError::is(&err),
        "{err}"
    );
    assert!(err.to_string().contains(&format!("udp://{addr}")), "{err}");
}

#[tokio::test]
async fn the_publishers_data_reaches_every_subscriber_byte_for_byte_and_nothing_else() {
    let server = relay_server(Duration::from_secs(30)).await;
    let s = stage(&server, "fanout", 3).await;
    until_streams(&server, 4).await;
    let sent: Vec<Vec<u8>> = (1..=20)
        .map(|seq| data(seq, 26 + seq as usize * 50))
        .collect();
    for d in &sent {
        s.publisher.send(d).await;
    }
    for sub in &s.subscribers {
        for d in &sent {
            assert_eq!(&sub.recv().await, d, "unchanged, in order");
        }
    }
    // DATA from a subscriber is not relayed, and the publisher never gets DATA.
    s.subscribers[0].send(&data(99, 100)).await;
    let marker = data(21, 64);
    s.publisher.send(&marker).await;
    for sub in &s.subscribers {
        assert_eq!(
            sub.recv().await,
            marker,
            "the subscriber's DATA went nowhere"
        );
    }
    s.publisher.assert_nothing_waiting();
    for sub in &s.subscribers {
        sub.assert_nothing_waiting();
    }
    drop(s.clients);
}

#[tokio::test]
async fn bad_tokens_get_error_6() {
    let server = relay_server(Duration::from_secs(30)).await;
    let relay = relay_addr(&server);
    let (mut a, _) = party(server.local_addr(), "tok-a", 2).await;
    let (mut b, _) = party(server.local_addr(), "tok-b", 0).await;
    let grant = media_token(&mut a[1]).await;
    let peer = Peer::new(relay, &grant).await;
    // No token at all.
    assert_eq!(peer.refused(&encode_start(&peer.stream, None)).await, 6);
    // A token that was never granted.
    let forged = Peer {
        token: "A".repeat(43),
        ..peer.elsewhere().await
    };
    assert_eq!(forged.refused(&forged.start_bytes()).await, 6);
    // Another session's token.
    let other = media_token(&mut b[0]).await;
    let foreign = Peer {
        token: other["token"].as_str().unwrap().to_string(),
        ..peer.elsewhere().await
    };
    assert_eq!(foreign.refused(&foreign.start_bytes()).await, 6);
    // The same token from a second tuple, once the first claimed it.
    peer.start().await;
    let second = peer.elsewhere().await;
    assert_eq!(second.refused(&second.start_bytes()).await, 6);
    // A duplicate START from the claiming tuple is answered as any duplicate.
    peer.start().await;
    // A second publish token while a publisher streams.
    let publisher = Peer::new(relay, &media_token(&mut a[0]).await).await;
    publisher.handshake(&server).await;
    let again = Peer::new(relay, &media_token(&mut a[0]).await).await;
    assert_eq!(again.refused(&again.start_bytes()).await, 6);
    drop((a, b));
}

#[tokio::test]
async fn an_expired_token_gets_error_6() {
    let server = relay_server(Duration::from_millis(150)).await;
    let relay = relay_addr(&server);
    let (mut clients, _) = party(server.local_addr(), "ttl", 1).await;
    let grant = media_token(&mut clients[1]).await;
    let expires = grant["expiresAt"].as_u64().unwrap();
    assert!(expires <= unix_ms() + 150, "{grant}");
    // Let the token's time pass (this wait is the setting under test, not an assertion).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let peer = Peer::new(relay, &grant).await;
    assert_eq!(peer.refused(&peer.start_bytes()).await, 6);
    // A fresh token works.
    let fresh = Peer::new(relay, &media_token(&mut clients[1]).await).await;
    fresh.start().await;
}

#[tokio::test]
async fn an_ended_session_gets_error_3_and_stops_every_tuple() {
    let server = relay_server(Duration::from_secs(30)).await;
    let mut s = stage(&server, "ending", 2).await;
    let late = media_token(&mut s.clients[1]).await;
    let late = Peer::new(relay_addr(&server), &late).await;
    // The host leaves: the session ends.
    s.clients[0].send(&ClientMessage::leave(None)).await;
    s.clients[1].recv_until("session_closed").await;
    until_streams(&server, 0).await;
    // Its publisher's DATA goes nowhere now, and a START naming it is ERROR 3.
    s.publisher.send(&data(1, 100)).await;
    assert_eq!(late.refused(&late.start_bytes()).await, 3);
    for sub in &s.subscribers {
        sub.assert_nothing_waiting();
    }
    s.publisher.assert_nothing_waiting();
}

#[tokio::test]
async fn a_kicked_or_leaving_subscriber_stops_receiving() {
    let server = relay_server(Duration::from_secs(30)).await;
    let mut s = stage(&server, "kick", 3).await;
    let first = data(1, 200);
    s.publisher.send(&first).await;
    for sub in &s.subscribers {
        assert_eq!(sub.recv().await, first);
    }
    // The host kicks member 1; member 2 leaves. Each `member_left` the host reads was sent
    // after the relay dropped the member's tuple.
    let kicked = s.ids[1].clone();
    s.clients[0]
        .send(&ClientMessage::kick(kicked.clone(), None))
        .await;
    let left = s.clients[0].recv_until("member_left").await;
    assert_eq!(left["memberId"], kicked.as_str());
    s.clients[2].send(&ClientMessage::leave(None)).await;
    let left = s.clients[0].recv_until("member_left").await;
    assert_eq!(left["memberId"], s.ids[2].as_str());
    assert_eq!(
        server.state().media.as_ref().unwrap().subscribers("kick"),
        1
    );
    let second = data(2, 200);
    let third = data(3, 200);
    s.publisher.send(&second).await;
    s.publisher.send(&third).await;
    assert_eq!(s.subscribers[2].recv().await, second);
    assert_eq!(s.subscribers[2].recv().await, third);
    s.subscribers[0].assert_nothing_waiting();
    s.subscribers[1].assert_nothing_waiting();
}

#[tokio::test]
async fn a_spoofed_start_never_gets_media() {
    let server = relay_server(Duration::from_secs(30)).await;
    let relay = relay_addr(&server);
    let (mut clients, _) = party(server.local_addr(), "spoof", 1).await;
    let publisher = Peer::new(relay, &media_token(&mut clients[0]).await).await;
    publisher.handshake(&server).await;
    let member = Peer::new(relay, &media_token(&mut clients[1]).await).await;
    let id = member.start().await;
    // Someone who saw the member's START replays it from another address: refused, and a
    // START_CONFIRM echoing the member's id from there is not a confirmation either.
    let spoofer = member.elsewhere().await;
    assert_eq!(spoofer.refused(&member.start_bytes()).await, 6);
    spoofer
        .send(&encode_start_confirm(&id, &member.stream))
        .await;
    member.confirm(&id, &server).await;
    until_subscribers(&server, "spoof", 1).await;
    let d = data(1, 300);
    let marker = data(2, 300);
    publisher.send(&d).await;
    publisher.send(&marker).await;
    assert_eq!(member.recv().await, d);
    assert_eq!(member.recv().await, marker);
    spoofer.assert_nothing_waiting();
}

/// The value of the first sample of `name` (with any labels) in a Prometheus text.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn the_relays_metrics_are_in_metrics_with_the_issues_names() {
    let server = relay_server(Duration::from_secs(30)).await;
    let s = stage(&server, "metrics", 2).await;
    s.publisher.send(&data(1, 100)).await;
    // Sequence 2 never reaches the relay: one frame lost.
    s.publisher.send(&data(3, 100)).await;
    for sub in &s.subscribers {
        sub.recv().await;
        sub.recv().await;
    }
    let stranger = s.publisher.elsewhere().await;
    assert_eq!(
        stranger
            .refused(&encode_start(&stranger.stream, None))
            .await,
        6
    );
    let text = reqwest::get(format!("{}/metrics", http(&server)))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Other tests in this binary share the process's recorder: at least this test's counts.
    for (name, at_least) in [
        ("loudsync_media_handshakes_total", 3.0),
        (
            "loudsync_media_handshake_failures_total{code=\"bad_token\"}",
            1.0,
        ),
        ("loudsync_media_datagrams_sent_total", 8.0),
        ("loudsync_media_datagrams_relayed_total", 4.0),
        ("loudsync_media_frames_lost_total", 1.0),
        ("loudsync_media_time_to_stream_seconds_count", 3.0),
    ] {
        let value = sample(&text, name).unwrap_or_else(|| panic!("no {name} in\n{text}"));
        assert!(value >= at_least, "{name} = {value}");
    }
    assert!(
        sample(&text, "loudsync_media_streams").is_some(),
        "the gauge: {text}"
    );
    assert!(
        text.contains("loudsync_media_time_to_stream_seconds_bucket{le=\"0.001\"}"),
        "a histogram, not a summary"
    );
    drop(s.clients);
}

#[tokio::test]
async fn a_host_that_hands_off_loses_its_publish_tuple_and_the_new_host_publishes() {
    let server = relay_server(Duration::from_secs(30)).await;
    let relay = relay_addr(&server);
    let mut s = stage(&server, "handoff", 2).await;
    let first = data(1, 100);
    s.publisher.send(&first).await;
    assert_eq!(s.subscribers[0].recv().await, first);
    // Member 2 takes control; `host_changed` reaches members after the relay was told.
    let new_host = s.ids[2].clone();
    s.clients[0]
        .send(&ClientMessage::HandoffRequest {
            target_id: Some(new_host.clone()),
        })
        .await;
    let offer = s.clients[2].recv_until("handoff_request").await;
    s.clients[2]
        .send(&ClientMessage::HandoffAccept {
            handoff_id: offer["handoffId"].as_str().unwrap().to_string(),
        })
        .await;
    let changed = s.clients[1].recv_until("host_changed").await;
    assert_eq!(changed["hostId"], new_host.as_str());
    // The old host's DATA goes nowhere now; its new token subscribes, the new host's publishes.
    s.publisher.send(&data(2, 100)).await;
    assert_eq!(media_token(&mut s.clients[0]).await["role"], "subscribe");
    let grant = media_token(&mut s.clients[2]).await;
    assert_eq!(grant["role"], "publish");
    let publisher = Peer::new(relay, &grant).await;
    publisher.handshake(&server).await;
    let from_new_host = data(1, 120);
    publisher.send(&from_new_host).await;
    assert_eq!(
        s.subscribers[0].recv().await,
        from_new_host,
        "the old host's second datagram was not relayed"
    );
    s.publisher.assert_nothing_waiting();
}
