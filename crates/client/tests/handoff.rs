//! The SDK's handoff layer against the real server on loopback (issue 11): a full handoff
//! between two real clients carrying the session state (a decline first, then an accept; the
//! new host's state reaches the old one with the new term; the old host is fenced), the
//! automatic handoff when a plain host's connection is cut and when a resumable host stays
//! away past its window (`--on-host-loss handoff`), and a host opening a session without an
//! id (a 6-character code others join by, rejoined by that code after a server restart), and
//! the state a host sets while resuming, queued and delivered once.

use std::net::SocketAddr;
use std::time::Duration;

use loudsync_client::{
    display_code, typed_code, ClientConfig, ConnectionState, ErrorCode, Event, HandoffFailure,
    HostChange, LeaveReason, PendingHandoff, Role,
};
use loudsync_server::config::OnHostLoss;
use loudsync_server::{Server, ServerConfig};
use serde_json::json;

mod common;

use common::{fast, url, Cut, Peer, Proxy};

fn server_config(on_host_loss: OnHostLoss) -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        heartbeat_timeout: Duration::from_millis(600),
        heartbeat_check_interval: Duration::from_millis(50),
        latency_interval: Duration::from_millis(100),
        close_timeout: Duration::from_millis(200),
        drain_timeout: Duration::from_secs(1),
        ack_interval: Duration::from_millis(200),
        resume_window: Duration::from_millis(300),
        handoff_timeout: Duration::from_secs(3),
        on_host_loss,
        ..ServerConfig::default()
    }
}

async fn start(on_host_loss: OnHostLoss) -> Server {
    Server::bind(server_config(on_host_loss)).await.unwrap()
}

/// [`common::fast`], with the client's resume patience short too.
fn quick(c: ClientConfig) -> ClientConfig {
    let mut c = fast(c);
    c.resume_window = Duration::from_millis(300);
    c
}

fn host_config(addr: SocketAddr) -> ClientConfig {
    quick(common::host_config(addr))
}

fn member_config(addr: SocketAddr, device: &str) -> ClientConfig {
    quick(common::member_config(addr, device))
}

#[tokio::test]
async fn a_full_handoff_between_two_real_clients_carries_the_state() {
    let server = start(OnHostLoss::Close).await;
    let addr = server.local_addr();
    let host = Peer::connect(host_config(addr)).await;
    let host_id = host.id();
    assert!(host.client.is_host());
    assert_eq!(host.client.role(), Role::Assigned);
    assert_eq!(host.client.term(), 1);
    // The host sets the state; its own `state` frame confirms it.
    host.client
        .set_state(json!({"track": "Blue in Green", "pos": 0}), Some(0))
        .unwrap();
    host.find("the host's state confirmation", |e| match e {
        Event::SessionState { version: 1, .. } => Some(()),
        _ => None,
    })
    .await;

    // A member joins: welcome carries the state, version and term.
    let member = Peer::connect(member_config(addr, "phone")).await;
    let member_id = member.id();
    assert_eq!(
        member.client.session_state(),
        (json!({"track": "Blue in Green", "pos": 0}), 1)
    );
    assert_eq!(member.client.term(), 1);
    assert_eq!(member.client.host_id().as_deref(), Some(host_id.as_str()));
    assert!(!member.client.is_host());

    // It declares itself ready; the host sees it in its member table.
    member.client.set_ready(true).unwrap();
    member
        .find("the member's own role", |e| {
            (*e == Event::RoleChanged(Role::HandoffReady)).then_some(())
        })
        .await;
    assert_eq!(member.client.role(), Role::HandoffReady);
    host.find("the member's readiness", |e| match e {
        Event::MemberUpdated(m) if m.id == member_id && m.handoff_ready => Some(()),
        _ => None,
    })
    .await;

    // A first request, declined: the host keeps control.
    host.client.request_handoff(None).unwrap();
    let first = member
        .find("the first prompt", |e| match e {
            Event::HandoffRequested { handoff_id, .. } => Some(handoff_id.clone()),
            _ => None,
        })
        .await;
    member
        .client
        .decline_handoff(&first, Some("not now"))
        .unwrap();
    let failed = host
        .find("the decline", |e| match e {
            Event::HandoffFailed {
                reason,
                handoff_id,
                target_id,
            } => Some((*reason, handoff_id.clone(), target_id.clone())),
            _ => None,
        })
        .await;
    assert_eq!(
        failed,
        (
            HandoffFailure::Declined,
            Some(first.clone()),
            Some(member_id.clone())
        )
    );
    host.until_client("the declined request is over", |c| {
        c.pending_handoff().is_none()
    })
    .await;
    assert!(host.client.is_host());

    // The second, to the same ready member (the server's choice), accepted.
    host.client.request_handoff(None).unwrap();
    let (handoff_id, target) = host
        .find("handoff_started", |e| match e {
            Event::HandoffStarted {
                handoff_id,
                target_id,
            } if *handoff_id != first => Some((handoff_id.clone(), target_id.clone())),
            _ => None,
        })
        .await;
    assert_eq!(target, member_id, "the ready member is the candidate");
    assert_eq!(
        host.client.role(),
        Role::Assigned,
        "a host with a pending request"
    );
    assert!(matches!(
        host.client.pending_handoff(),
        Some(PendingHandoff::Started { .. })
    ));
    let prompt = member
        .find("the prompt with the state", |e| match e {
            Event::HandoffRequested {
                handoff_id: id,
                from_id,
                state,
                version,
                term,
                timeout_ms,
            } if *id == handoff_id => {
                Some((from_id.clone(), state.clone(), *version, *term, *timeout_ms))
            }
            _ => None,
        })
        .await;
    assert_eq!(
        prompt,
        (
            host_id.clone(),
            json!({"track": "Blue in Green", "pos": 0}),
            1,
            1,
            3000
        )
    );
    assert!(matches!(
        member.client.pending_handoff(),
        Some(PendingHandoff::Offered(o)) if o.handoff_id == handoff_id
    ));
    member.client.accept_handoff(&handoff_id).unwrap();

    // The old host is acknowledged, then both see host_changed.
    let ack = host
        .find("handoff_ack", |e| match e {
            Event::HandoffAcknowledged {
                handoff_id,
                host_id,
                term,
            } => Some((handoff_id.clone(), host_id.clone(), *term)),
            _ => None,
        })
        .await;
    assert_eq!(ack, (handoff_id.clone(), member_id.clone(), 2));
    let expected = Event::HostChanged {
        host_id: member_id.clone(),
        previous_host_id: host_id.clone(),
        term: 2,
        reason: HostChange::Handoff,
    };
    for peer in [&host, &member] {
        peer.find("host_changed", |e| (*e == expected).then_some(()))
            .await;
    }
    let host_events = host.events();
    let ack_at = host_events
        .iter()
        .position(|e| matches!(e, Event::HandoffAcknowledged { .. }))
        .unwrap();
    let changed_at = host_events.iter().position(|e| *e == expected).unwrap();
    assert!(ack_at < changed_at, "the ack comes first: {host_events:?}");

    // Roles, host, term and tables on both sides.
    assert!(member.client.is_host());
    assert_eq!(member.client.role(), Role::Assigned);
    assert_eq!(member.client.pending_handoff(), None);
    assert!(!host.client.is_host());
    assert_eq!(
        host.client.role(),
        Role::HandoffReady,
        "the old host is ready at once"
    );
    for peer in [&host, &member] {
        assert_eq!(peer.client.term(), 2);
        assert_eq!(peer.client.host_id().as_deref(), Some(member_id.as_str()));
        let table: Vec<_> = peer
            .client
            .members()
            .into_iter()
            .map(|m| (m.id, m.is_host, m.handoff_ready))
            .collect();
        assert_eq!(
            table,
            [
                (member_id.clone(), true, false),
                (host_id.clone(), false, true)
            ]
        );
        assert!(peer
            .events()
            .contains(&Event::RoleChanged(if peer.id() == member_id {
                Role::Assigned
            } else {
                Role::HandoffReady
            })));
    }

    // The new host sets the state; the old host gets it with term 2.
    member
        .client
        .patch_state(json!({"pos": 42}), Some(1))
        .unwrap();
    let got = host
        .find("the new host's state", |e| match e {
            Event::SessionState {
                state,
                version: 2,
                term,
                updated_by,
            } => Some((state.clone(), *term, updated_by.clone())),
            _ => None,
        })
        .await;
    assert_eq!(
        got,
        (
            json!({"track": "Blue in Green", "pos": 42}),
            2,
            Some(member_id.clone())
        )
    );

    // The old host is fenced: its set is refused, nothing changes.
    host.client
        .set_state(json!({"track": "So What"}), None)
        .unwrap();
    let refusal = host
        .find("unauthorized", |e| match e {
            Event::Error(err) if err.code == ErrorCode::Unauthorized => Some(err.clone()),
            _ => None,
        })
        .await;
    let details = refusal.details.expect("details");
    assert_eq!(details["hostId"], json!(member_id));
    assert_eq!(details["term"], json!(2));
    assert_eq!(host.client.session_state().1, 2);
    // The document did not change: the new host's next patch builds on its own version.
    member
        .client
        .patch_state(json!({"pos": 43}), Some(2))
        .unwrap();
    let got = host
        .find("version 3", |e| match e {
            Event::SessionState {
                state, version: 3, ..
            } => Some(state.clone()),
            _ => None,
        })
        .await;
    assert_eq!(got, json!({"track": "Blue in Green", "pos": 43}));
    // And a handoff request from it too.
    host.client.request_handoff(None).unwrap();
    host.find("a second unauthorized", |e| match e {
        Event::Error(err)
            if err.code == ErrorCode::Unauthorized && err.message.contains("handoff") =>
        {
            Some(())
        }
        _ => None,
    })
    .await;
}

#[tokio::test]
async fn a_plain_hosts_cut_connection_passes_the_session_to_the_ready_member() {
    let server = start(OnHostLoss::Handoff).await;
    let addr = server.local_addr();
    let proxy = Proxy::start(addr).await;
    let mut host_cfg = host_config(proxy.addr);
    host_cfg.resume = false;
    let host = Peer::connect(host_cfg).await;
    let host_id = host.id();
    host.client.set_state(json!({"track": 7}), None).unwrap();
    // The first member joined first (longest present); the second is ready: it wins.
    let first = Peer::connect(member_config(addr, "phone")).await;
    let second = Peer::connect(member_config(addr, "tablet")).await;
    let second_id = second.id();
    second.client.set_ready(true).unwrap();
    host.find("the second member's readiness", |e| match e {
        Event::MemberUpdated(m) if m.id == second_id && m.handoff_ready => Some(()),
        _ => None,
    })
    .await;

    proxy.cut(Cut::Clean);
    let expected = Event::HostChanged {
        host_id: second_id.clone(),
        previous_host_id: host_id.clone(),
        term: 2,
        reason: HostChange::HostLost,
    };
    for peer in [&first, &second] {
        peer.find("host_changed host_lost", |e| (*e == expected).then_some(()))
            .await;
        let events = peer.events();
        let left = events
            .iter()
            .position(|e| matches!(e, Event::MemberLeft { member_id, reason: LeaveReason::Error } if *member_id == host_id))
            .expect("member_left for the host");
        let changed = events.iter().position(|e| *e == expected).unwrap();
        assert!(left < changed, "member_left first: {events:?}");
        assert_eq!(peer.client.host_id().as_deref(), Some(second_id.as_str()));
        assert_eq!(peer.client.term(), 2);
        assert_eq!(peer.client.session_state(), (json!({"track": 7}), 1));
    }
    assert!(second.client.is_host());
    assert_eq!(second.client.role(), Role::Assigned, "a host is not ready");
    assert!(!first.client.is_host());
    // The old host's SDK ends: its plain connection was the host's.
    host.find("the old host's end", |e| match e {
        Event::SessionClosed { .. } => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(host.client.role(), Role::Disconnected);
    // The new host rules: its state reaches the other member with the new term.
    second
        .client
        .set_state(json!({"track": 8}), Some(1))
        .unwrap();
    let got = first
        .find("the new host's state", |e| match e {
            Event::SessionState {
                state,
                version: 2,
                term,
                ..
            } => Some((state.clone(), *term)),
            _ => None,
        })
        .await;
    assert_eq!(got, (json!({"track": 8}), 2));
}

#[tokio::test]
async fn a_resumable_host_away_past_its_window_passes_the_session_to_the_longest_present() {
    let server = start(OnHostLoss::Handoff).await;
    let addr = server.local_addr();
    let proxy = Proxy::start(addr).await;
    let host = Peer::connect(host_config(proxy.addr)).await;
    let host_id = host.id();
    let first = Peer::connect(member_config(addr, "phone")).await;
    let first_id = first.id();
    let second = Peer::connect(member_config(addr, "tablet")).await;
    // Nobody is ready: the longest-present member takes over once the window ended.
    proxy.refuse(true);
    proxy.cut(Cut::Clean);
    let expected = Event::HostChanged {
        host_id: first_id.clone(),
        previous_host_id: host_id.clone(),
        term: 2,
        reason: HostChange::HostLost,
    };
    for peer in [&first, &second] {
        peer.find("host_changed host_lost", |e| (*e == expected).then_some(()))
            .await;
        assert!(peer.events().iter().any(|e| matches!(
            e,
            Event::MemberLeft { member_id, reason: LeaveReason::Timeout } if *member_id == host_id
        )));
    }
    assert!(first.client.is_host());
    assert_eq!(first.client.members()[0].id, first_id);
    // The old host could not come back within its window: it ends.
    host.until_client("the old host gave up", |c| {
        c.state() == ConnectionState::Failed
    })
    .await;
    assert_eq!(host.client.role(), Role::Disconnected);
}

#[tokio::test]
async fn a_host_opening_a_session_without_an_id_gets_a_six_character_code() {
    let server = start(OnHostLoss::Close).await;
    let addr = server.local_addr();
    let host = Peer::connect(fast(ClientConfig::new_session(
        url(addr),
        "Kitchen",
        "mac",
        "Mac",
    )))
    .await;
    let code = host.client.session_id().expect("an assigned code");
    assert_eq!(code.len(), 6, "{code}");
    assert!(
        code.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()),
        "{code}"
    );
    assert_eq!(
        host.client.snapshot().session.map(|s| s.id),
        Some(code.clone())
    );
    assert!(host.client.is_host());
    assert_eq!(host.client.term(), 1);
    // Someone types the code as shown (with the dash, lower-cased) and joins it.
    let typed = typed_code(&display_code(&code).to_lowercase());
    assert_eq!(typed, code);
    let member = Peer::connect(member_config(addr, "phone").with_session(&typed)).await;
    assert_eq!(member.client.session_id(), Some(code.clone()));
    assert_eq!(member.client.host_id(), host.client.client_id());
    // A second new session gets another code.
    let other = Peer::connect(fast(ClientConfig::new_session(
        url(addr),
        "Garage",
        "pc",
        "PC",
    )))
    .await;
    assert_ne!(other.client.session_id(), Some(code));
}

#[tokio::test]
async fn a_new_sessions_host_rejoins_its_code_when_the_server_comes_back() {
    let server = start(OnHostLoss::Close).await;
    let addr = server.local_addr();
    let host = Peer::connect(fast(ClientConfig::new_session(
        url(addr),
        "Kitchen",
        "mac",
        "Mac",
    )))
    .await;
    let code = host.client.session_id().expect("an assigned code");
    let first_id = host.id();
    server.shutdown().await; // session_closed + 1001: a fresh join follows
    host.find("reconnecting", |e| {
        (*e == Event::StateChanged(ConnectionState::Reconnecting)).then_some(())
    })
    .await;
    assert_eq!(
        host.client.session_id(),
        Some(code.clone()),
        "kept while away"
    );
    let mut config = server_config(OnHostLoss::Close);
    config.listen = addr;
    let _server = Server::bind(config).await.expect("rebind the same port");
    host.until_client("joined again", |c| {
        c.state() == ConnectionState::Connected && c.client_id() != Some(first_id.clone())
    })
    .await;
    // The same code, not a new session: the join named it.
    assert_eq!(host.client.session_id(), Some(code.clone()));
    assert_eq!(host.client.snapshot().session.map(|s| s.id), Some(code));
    assert!(host.client.is_host());
}

#[tokio::test]
async fn state_set_while_the_host_resumes_is_queued_and_reaches_the_members_once() {
    let mut config = server_config(OnHostLoss::Close);
    config.resume_window = Duration::from_secs(5);
    let server = Server::bind(config).await.unwrap();
    let addr = server.local_addr();
    let proxy = Proxy::start(addr).await;
    let mut host_cfg = host_config(proxy.addr);
    host_cfg.resume_window = Duration::from_secs(5);
    let host = Peer::connect(host_cfg).await;
    let member = Peer::connect(member_config(addr, "phone")).await;
    proxy.refuse(true);
    proxy.cut(Cut::Clean);
    host.find("a refused resume attempt", |e| {
        matches!(e, Event::Resuming { attempt: 2, .. }).then_some(())
    })
    .await;
    // Queued while away (the role and host stay: the server holds the place).
    assert_eq!(host.client.state(), ConnectionState::Reconnecting);
    host.client.set_state(json!({"track": 1}), Some(0)).unwrap();
    host.client.patch_state(json!({"pos": 5}), Some(1)).unwrap();
    assert_eq!(host.client.role(), Role::Assigned);
    assert!(host.client.is_host());
    proxy.refuse(false);
    host.find("resumed", |e| {
        matches!(e, Event::Resumed { .. }).then_some(())
    })
    .await;
    let got = member
        .find("the queued sets, applied in order", |e| match e {
            Event::SessionState {
                state, version: 2, ..
            } => Some(state.clone()),
            _ => None,
        })
        .await;
    assert_eq!(got, json!({"track": 1, "pos": 5}));
    let versions: Vec<u64> = member
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::SessionState { version, .. } => Some(*version),
            _ => None,
        })
        .collect();
    assert_eq!(versions, [0, 1, 2], "welcome's, then each set once");
}

trait WithSession {
    fn with_session(self, id: &str) -> Self;
}

impl WithSession for ClientConfig {
    fn with_session(mut self, id: &str) -> Self {
        self.session_id = id.to_string();
        self
    }
}
