//! The pairing driver ([`PairingClient`]) against the real server on loopback, over the
//! pairing WebSocket `/crsocket/{APP}/ws`, with short timers: controllers and responders
//! pair and exchange events, the SDK's and the server's rejects, `inactive` on going passive,
//! refused identifies, `cr_alive` keeping a connection open, reconnection after a cut.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Cut, Proxy, WAIT};
use loudsync_client::pairing::State;
use loudsync_client::{
    PairingClient, PairingClientConfig, PairingError, PairingRole, PairingUpdate, ReceivedEvent,
};
use loudsync_protocol::pairing::AbortReason;
use loudsync_server::{Server, ServerConfig};

/// The server's alive timeout in these tests (the client sends `cr_alive` far more often).
const ALIVE_TIMEOUT: Duration = Duration::from_millis(1500);

async fn server() -> Server {
    Server::bind(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        apps: vec!["alpha".into(), "beta".into(), "secret:tokA,tokB".into()],
        pairing_alive_timeout: ALIVE_TIMEOUT,
        heartbeat_check_interval: Duration::from_millis(150),
        ..ServerConfig::default()
    })
    .await
    .unwrap()
}

/// A client of `app` on `addr` with millisecond timers. The partner stays active for 20 s
/// after its last event, so a move out of interacting within a test's few seconds is never
/// that timer's doing.
fn config(addr: SocketAddr, app: &str, role: PairingRole, token: &str) -> PairingClientConfig {
    let mut c = PairingClientConfig::new(format!("ws://{addr}/"), app, role, token);
    c.alive_interval = Duration::from_millis(300);
    c.silence_timeout = Duration::from_secs(3);
    c.reconnect_delay = Duration::from_millis(100);
    c.pairing.pacing = Duration::from_millis(20);
    c.pairing.search_ping = Duration::from_millis(400);
    c.pairing.interact_ping = Duration::from_millis(800);
    c.pairing.partner_alive = Duration::from_secs(20);
    c
}

/// A pairing client whose updates are collected in the background.
struct Pairer {
    client: PairingClient,
    log: Arc<Mutex<Vec<PairingUpdate>>>,
}

impl Pairer {
    /// Starts `config` and waits for its `cr_welcome`.
    async fn welcomed(config: PairingClientConfig) -> Pairer {
        let p = Pairer::start(config);
        p.until("welcome", |u| matches!(u, PairingUpdate::Welcome { .. }))
            .await;
        p
    }

    fn start(config: PairingClientConfig) -> Pairer {
        let (client, mut events) = PairingClient::start(config).expect("settings are fine");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        tokio::spawn(async move {
            while let Some(u) = events.recv().await {
                sink.lock().unwrap().push(u);
            }
        });
        Pairer { client, log }
    }

    fn id(&self) -> String {
        self.client.client_id().expect("welcomed: has an id")
    }

    fn updates(&self) -> Vec<PairingUpdate> {
        self.log.lock().unwrap().clone()
    }

    fn count(&self, pred: impl Fn(&PairingUpdate) -> bool) -> usize {
        self.log.lock().unwrap().iter().filter(|u| pred(u)).count()
    }

    /// The first update `pick` finds something in, waiting for it (bounded).
    async fn find<T>(&self, what: &str, pick: impl Fn(&PairingUpdate) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(found) = self.log.lock().unwrap().iter().find_map(&pick) {
                return found;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("no {what} within {WAIT:?}; updates: {:?}", self.updates());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn until(&self, what: &str, pred: impl Fn(&PairingUpdate) -> bool) {
        self.find(what, |u| pred(u).then_some(())).await
    }

    /// Waits until the client's state is `state` (bounded by `within`).
    async fn until_state(&self, state: State, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.client.state() != state {
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "not {state:?} within {within:?} (is {:?}); updates: {:?}",
                    self.client.state(),
                    self.updates()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The application events received so far.
    fn app_events(&self) -> Vec<ReceivedEvent> {
        self.updates()
            .into_iter()
            .filter_map(|u| match u {
                PairingUpdate::AppEvent(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    /// Clears the log (to look only at what follows).
    fn forget(&self) {
        self.log.lock().unwrap().clear();
    }
}

/// A responder and a controller of `app` paired and interacting (the controller was
/// assigned the responder; the responder auto-paired on its ping).
async fn pair(addr: SocketAddr, app: &str) -> (Pairer, Pairer) {
    let r = Pairer::welcomed(config(addr, app, PairingRole::Responder, "open")).await;
    let c = Pairer::welcomed(config(addr, app, PairingRole::Controller, "open")).await;
    c.client.assign_partner(Some(&r.id())).unwrap();
    c.until_state(State::Interacting, WAIT).await;
    r.until_state(State::Interacting, WAIT).await;
    assert_eq!(
        r.client.partner(),
        Some(c.id()),
        "auto-paired with the pinger"
    );
    (c, r)
}

#[tokio::test]
async fn a_controller_and_a_responder_pair_and_exchange_app_events() {
    let server = server().await;
    let addr = server.local_addr();
    let r = Pairer::welcomed(config(addr, "alpha", PairingRole::Responder, "open")).await;
    // Without a client id the server assigned one, and said it in cr_welcome.
    let r_id = r.id();
    assert!(
        r_id.len() == 6 && r_id.bytes().all(|b| b.is_ascii_digit()),
        "{r_id}"
    );
    let welcome = r
        .find("welcome", |u| match u {
            PairingUpdate::Welcome { app_id, client_id } => {
                Some((app_id.clone(), client_id.clone()))
            }
            _ => None,
        })
        .await;
    assert_eq!(welcome, ("alpha".to_string(), r_id.clone()));
    assert_eq!(r.client.state(), State::ReadyToPair);

    let mut cc = config(addr, "alpha", PairingRole::Controller, "open");
    cc.pairing.client_id = Some("424242".into());
    let c = Pairer::welcomed(cc).await;
    assert_eq!(c.id(), "424242", "a client keeps its own id");
    c.client.assign_partner(Some(&r_id)).unwrap();
    c.until_state(State::Interacting, WAIT).await;
    r.until_state(State::Interacting, WAIT).await;
    assert_eq!(r.client.partner().as_deref(), Some("424242"));
    assert!(r.count(|u| *u == PairingUpdate::PartnerChanged(Some("424242".into()))) == 1);
    assert!(
        r.count(|u| matches!(u, PairingUpdate::MetastatesChanged(m) if m.paired)) >= 1,
        "the paired metastate is observable"
    );

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    c.client
        .send_event("tap", "left", vec!["1".into(), "two".into()])
        .await
        .unwrap();
    let tap = r
        .find("tap", |u| match u {
            PairingUpdate::AppEvent(e) if e.event_type == "tap" => Some(e.clone()),
            _ => None,
        })
        .await;
    assert_eq!(tap.sender, "424242");
    assert_eq!(tap.sub_type, "left");
    assert_eq!(tap.params, vec!["1".to_string(), "two".to_string()]);
    let sent = tap.send_ct.expect("the SDK stamps sendCt") as u64;
    assert!(sent >= before && tap.receive_ct >= sent, "{tap:?}");
    assert!((tap.interceptable, tap.buffered, tap.logged) == (true, false, false));

    r.client
        .send_event("score", "", vec!["7".into()])
        .await
        .unwrap();
    let score = c
        .find("score", |u| match u {
            PairingUpdate::AppEvent(e) if e.event_type == "score" => Some(e.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        (score.sender.as_str(), score.params.as_slice()),
        (r_id.as_str(), &["7".to_string()][..])
    );
    // The pairing's own events never reach the application.
    for p in [&c, &r] {
        assert!(p
            .app_events()
            .iter()
            .all(|e| !["ping", "reject", "unassign", "inactive"].contains(&e.event_type.as_str())));
    }
    // Not paired: refused by the machine, nothing sent.
    let lone = Pairer::welcomed(config(addr, "alpha", PairingRole::Controller, "open")).await;
    assert!(matches!(
        lone.client.send_event("tap", "", vec![]).await,
        Err(PairingError::Send(_))
    ));
    c.client.close().await;
    r.client.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_second_controller_pinging_a_paired_responder_is_rejected_assigned_to_other() {
    let server = server().await;
    let addr = server.local_addr();
    let (c, r) = pair(addr, "alpha").await;
    let c2 = Pairer::welcomed(config(addr, "alpha", PairingRole::Controller, "open")).await;
    c2.client.assign_partner(Some(&r.id())).unwrap();
    let (partner, sub_type) = c2
        .find("reject", |u| match u {
            PairingUpdate::Rejected { partner, sub_type } => {
                Some((partner.clone(), sub_type.clone()))
            }
            _ => None,
        })
        .await;
    assert_eq!((partner, sub_type.as_str()), (r.id(), "assignedToOther"));
    c2.until_state(State::ReadyToPair, WAIT).await;
    assert_eq!(
        c2.client.snapshot().rejected.as_deref(),
        Some("assignedToOther")
    );
    // The responder keeps its partner, and stays interacting with it.
    assert_eq!(r.client.partner(), Some(c.id()));
    assert_eq!(r.client.state(), State::Interacting);
    assert_eq!(c.client.state(), State::Interacting);
    server.shutdown().await;
}

#[tokio::test]
async fn a_ping_across_apps_gets_the_servers_app_id_mismatch_and_one_to_the_same_role_invalid_partner_role(
) {
    let server = server().await;
    let addr = server.local_addr();
    let r = Pairer::welcomed(config(addr, "alpha", PairingRole::Responder, "open")).await;
    let other_app = Pairer::welcomed(config(addr, "beta", PairingRole::Controller, "open")).await;
    other_app.client.assign_partner(Some(&r.id())).unwrap();
    let reject = other_app
        .find("reject", |u| match u {
            PairingUpdate::Rejected { partner, sub_type } => {
                Some((partner.clone(), sub_type.clone()))
            }
            _ => None,
        })
        .await;
    assert_eq!(
        reject,
        (r.id(), "appIdMismatch".to_string()),
        "sender = the pinged id (P22)"
    );
    other_app.until_state(State::ReadyToPair, WAIT).await;
    assert_eq!(
        r.client.state(),
        State::ReadyToPair,
        "the responder never saw the ping"
    );
    assert_eq!(r.client.partner(), None);

    let r2 = Pairer::welcomed(config(addr, "alpha", PairingRole::Responder, "open")).await;
    r2.client.assign_partner(Some(&r.id())).unwrap();
    let reject = r2
        .find("reject", |u| match u {
            PairingUpdate::Rejected { sub_type, .. } => Some(sub_type.clone()),
            _ => None,
        })
        .await;
    assert_eq!(reject, "invalidPartnerRole");
    server.shutdown().await;
}

#[tokio::test]
async fn a_controller_going_passive_moves_the_responder_to_searching_at_once() {
    let server = server().await;
    let addr = server.local_addr();
    let (c, r) = pair(addr, "alpha").await;
    r.forget();
    let started = std::time::Instant::now();
    c.client.set_active(false).unwrap();
    // Far sooner than the partner's 20 s alive time: the `inactive` did it.
    r.until_state(State::Searching, Duration::from_secs(5))
        .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    c.until_state(State::Passive, WAIT).await;
    assert!(c.client.metastates() == Default::default());
    assert_eq!(r.client.partner(), Some(c.id()), "still paired, searching");
    // Back active: the controller reconnects with its id and pairs again.
    c.client.set_active(true).unwrap();
    c.until_state(State::Interacting, WAIT).await;
    r.until_state(State::Interacting, WAIT).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_refused_identify_surfaces_the_abort_reason_and_is_not_retried() {
    let server = server().await;
    let addr = server.local_addr();
    // connect(): the refusal is the error.
    let refused =
        PairingClient::connect(config(addr, "secret", PairingRole::Controller, "bad")).await;
    assert_eq!(
        refused.err(),
        Some(PairingError::Refused(AbortReason::NotAuthorized))
    );

    // start(), with an id: Aborted, readyToConnect, no new attempt until a new token.
    let mut cc = config(addr, "secret", PairingRole::Controller, "wrong");
    cc.pairing.client_id = Some("135790".into());
    let p = Pairer::start(cc);
    let reason = p
        .find("aborted", |u| match u {
            PairingUpdate::Aborted { reason } => Some(*reason),
            _ => None,
        })
        .await;
    assert_eq!(reason, AbortReason::NotAuthorized);
    p.until_state(State::ReadyToConnect, WAIT).await;
    assert_eq!(
        p.client.snapshot().aborted,
        Some(AbortReason::NotAuthorized)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        p.count(|u| matches!(
            u,
            PairingUpdate::Aborted { .. } | PairingUpdate::Welcome { .. }
        )),
        1,
        "no retry on its own: {:?}",
        p.updates()
    );
    p.client.set_access_token(Some("tokB")).unwrap();
    p.until("welcome", |u| matches!(u, PairingUpdate::Welcome { .. }))
        .await;
    p.until_state(State::ReadyToPair, WAIT).await;
    assert_eq!(p.client.snapshot().aborted, None);

    // An id-less client refused: the same, though its machine is passive for want of an id.
    let q = Pairer::start(config(addr, "secret", PairingRole::Responder, "nope"));
    q.until("aborted", |u| {
        matches!(
            u,
            PairingUpdate::Aborted {
                reason: AbortReason::NotAuthorized
            }
        )
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(q.count(|u| matches!(u, PairingUpdate::Aborted { .. })), 1);
    assert_eq!(q.client.client_id(), None);
    server.shutdown().await;
}

#[tokio::test]
async fn cr_alive_keeps_an_idle_connection_open_past_the_servers_alive_timeout() {
    let server = server().await;
    let addr = server.local_addr();
    let p = Pairer::welcomed(config(addr, "alpha", PairingRole::Responder, "open")).await;
    tokio::time::sleep(ALIVE_TIMEOUT * 3).await;
    assert_eq!(p.client.state(), State::ReadyToPair);
    assert_eq!(
        p.count(|u| matches!(
            u,
            PairingUpdate::Aborted { .. } | PairingUpdate::Disconnected { .. }
        )),
        0,
        "{:?}",
        p.updates()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_second_connection_with_the_same_id_releases_the_first() {
    let server = server().await;
    let addr = server.local_addr();
    let first = Pairer::welcomed(config(addr, "alpha", PairingRole::Responder, "open")).await;
    let mut again = config(addr, "alpha", PairingRole::Responder, "open");
    again.pairing.client_id = Some(first.id());
    let _second = Pairer::welcomed(again).await;
    first
        .until("releasedByOther", |u| {
            matches!(
                u,
                PairingUpdate::Aborted {
                    reason: AbortReason::ReleasedByOther
                }
            )
        })
        .await;
    first.until_state(State::ReadyToConnect, WAIT).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_cut_connection_reconnects_with_the_same_id_and_pairs_again() {
    let server = server().await;
    let proxy = Proxy::start(server.local_addr()).await;
    let r = Pairer::welcomed(config(
        server.local_addr(),
        "alpha",
        PairingRole::Responder,
        "open",
    ))
    .await;
    let c = Pairer::welcomed(config(proxy.addr, "alpha", PairingRole::Controller, "open")).await;
    let c_id = c.id();
    c.client.assign_partner(Some(&r.id())).unwrap();
    c.until_state(State::Interacting, WAIT).await;
    c.forget();
    proxy.cut(Cut::Clean);
    c.until("disconnected", |u| {
        matches!(u, PairingUpdate::Disconnected { .. })
    })
    .await;
    c.until("welcome again", |u| {
        matches!(u, PairingUpdate::Welcome { .. })
    })
    .await;
    assert_eq!(c.id(), c_id, "identified with its id");
    c.until_state(State::Interacting, WAIT).await;
    c.client.send_event("after", "", vec![]).await.unwrap();
    r.until(
        "the event after the cut",
        |u| matches!(u, PairingUpdate::AppEvent(e) if e.event_type == "after" && e.sender == c_id),
    )
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn no_server_is_a_connect_error_and_start_keeps_trying() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = PairingClient::connect(config(addr, "alpha", PairingRole::Controller, "open"))
        .await
        .err();
    assert!(matches!(err, Some(PairingError::Connect(_))), "{err:?}");
    let p = Pairer::start(config(addr, "alpha", PairingRole::Controller, "open"));
    let deadline = tokio::time::Instant::now() + WAIT;
    while p.count(|u| matches!(u, PairingUpdate::ConnectFailed { .. })) < 2 {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", p.updates());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.client.close().await;
}

#[tokio::test]
async fn closing_a_paired_client_tells_the_partner_inactive() {
    let server = server().await;
    let addr = server.local_addr();
    let (c, r) = pair(addr, "alpha").await;
    c.client.close().await;
    r.until_state(State::Searching, Duration::from_secs(5))
        .await;
    assert!(matches!(
        c.client.set_active(true),
        Err(PairingError::Closed)
    ));
    server.shutdown().await;
}

#[tokio::test]
async fn an_id_less_client_is_told_its_id_then_the_welcome_then_ready_to_pair() {
    let server = server().await;
    let addr = server.local_addr();
    let mut cfg = config(addr, "alpha", PairingRole::Controller, "open");
    cfg.active = false;
    // Not active: connect() has nothing to wait for, and nothing connects.
    let (client, mut events) = PairingClient::connect(cfg).await.unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(300), events.recv()).await;
    assert!(quiet.is_err(), "nothing happens while passive: {quiet:?}");
    assert_eq!(client.state(), State::Passive);
    client.set_active(true).unwrap();
    let mut seen = Vec::new();
    while !matches!(seen.last(), Some(PairingUpdate::MetastatesChanged(m)) if m.connected) {
        let u = tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("updates")
            .expect("open");
        seen.push(u);
    }
    let id = client.client_id().expect("assigned");
    assert_eq!(
        seen,
        vec![
            PairingUpdate::ClientIdChanged(id.clone()),
            PairingUpdate::StateChanged(State::Connecting),
            PairingUpdate::MetastatesChanged(loudsync_client::Metastates {
                active: true,
                connected: false,
                paired: false
            }),
            PairingUpdate::Welcome {
                app_id: "alpha".into(),
                client_id: id,
            },
            PairingUpdate::StateChanged(State::ReadyToPair),
            PairingUpdate::MetastatesChanged(loudsync_client::Metastates {
                active: true,
                connected: true,
                paired: false
            }),
        ]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_servers_error_arrives_as_an_update() {
    let server = server().await;
    let addr = server.local_addr();
    let (c, r) = pair(addr, "alpha").await;
    // Over P13's 8192-character data string: the server answers `too_large`, relays nothing.
    c.client
        .send_event("big", "", vec!["x".repeat(9000)])
        .await
        .unwrap();
    let code = c
        .find("error", |u| match u {
            PairingUpdate::Error(e) => Some(e.code.as_str().to_string()),
            _ => None,
        })
        .await;
    assert_eq!(code, "too_large");
    c.client.send_event("small", "", vec![]).await.unwrap();
    r.until(
        "small",
        |u| matches!(u, PairingUpdate::AppEvent(e) if e.event_type == "small"),
    )
    .await;
    assert!(r.app_events().iter().all(|e| e.event_type != "big"));
    assert_eq!(
        c.client.state(),
        State::Interacting,
        "the socket stays open"
    );
    server.shutdown().await;
}
