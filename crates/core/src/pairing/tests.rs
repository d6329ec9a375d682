//! Tests of the pairing relay on a virtual clock: identify and its validation order, one
//! connection per client id (replacement, `clientIdInUse`), assigned ids and stream ids, every
//! routing, blocking and server-reject rule, the alive timeout's bounds and what refreshes it,
//! the identify deadline, `alive` / `close` requests, and the `sendevent` rate limit.
//!
//! The settings are those of the test server (P3, §6): alive timeout 2 s, checked every
//! 200 ms; apps `alpha` and `beta` (open) and `secret` (tokens `tokA`, `tokB`).

use super::*;
use crate::ids::SequentialIds;
use std::sync::Mutex;

/// A test event: its type and a number to tell events apart.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ev(&'static str, u32);

impl RelayEvent for Ev {
    fn event_type(&self) -> &str {
        self.0
    }
}

type Relay = PairingRelay<Ev>;

const C: Option<&str> = Some("controller");
const R: Option<&str> = Some("responder");
const TOK: Option<&str> = Some("tok");

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn t0() -> Now {
    Now {
        instant: Instant::now(),
        unix_ms: 1_700_000_000_000,
    }
}

fn app(name: &str, tokens: Option<&[&str]>) -> AppSpec {
    AppSpec {
        name: name.to_string(),
        tokens: tokens.map(|t| t.iter().map(|s| s.to_string()).collect()),
    }
}

fn config() -> RelayConfig {
    RelayConfig {
        apps: vec![
            app("alpha", None),
            app("beta", None),
            app("secret", Some(&["tokA", "tokB"])),
        ],
        alive_timeout: ms(2000),
        check_interval: ms(200),
        rate_limit: 100,
        rate_burst: 200,
    }
}

fn relay() -> Relay {
    Relay::new(config(), Arc::new(SequentialIds::default()))
}

/// Opens `conn` and identifies it in `app` with `role` and the id `id`; panics if refused.
fn connect(
    r: &mut Relay,
    now: Now,
    conn: u64,
    transport: Transport,
    app: &str,
    role: Option<&str>,
    id: &str,
) -> Welcome {
    r.handle_open(now, ConnId(conn), transport);
    r.handle_identify(now, ConnId(conn), app, role, ClaimedId::Given(id), TOK)
        .expect("identify accepted")
}

fn drain(r: &mut Relay) -> Vec<Action<Ev>> {
    std::iter::from_fn(|| r.poll_action()).collect()
}

fn creds(r: &Relay, app: &str, role: Option<&str>, id: &str) -> Credentials {
    r.check_credentials(app, role, id, TOK).unwrap()
}

fn deliver(to: u64, transport: Transport, event: Ev, sender: &str) -> Action<Ev> {
    Action::Deliver {
        to: ConnId(to),
        transport,
        event,
        sender: sender.to_string(),
    }
}

fn reject(to: u64, transport: Transport, subtype: RejectSubtype, sender: &str) -> Action<Ev> {
    Action::Reject {
        to: ConnId(to),
        transport,
        subtype,
        sender: sender.to_string(),
    }
}

/// Runs the relay's timers from `from` up to `until`, waking exactly when it asks to; returns
/// every action with the time (ms after `base`) it came at.
fn run_until(r: &mut Relay, base: Now, until: Duration) -> Vec<(u64, Action<Ev>)> {
    let mut out = Vec::new();
    while let Some(at) = r.poll_timeout() {
        if at > base.instant + until {
            break;
        }
        let now = base.plus(at - base.instant);
        r.handle_timeout(now);
        let t = (at - base.instant).as_millis() as u64;
        out.extend(drain(r).into_iter().map(|a| (t, a)));
    }
    out
}

// ---- identify and validation order (P8) ----

/// One identify: app, role, client id, token, and the reason it must be refused with.
type Case<'a> = (
    &'a str,
    Option<&'a str>,
    ClaimedId<'a>,
    Option<&'a str>,
    AbortReason,
);

#[test]
fn validation_order_is_role_client_id_token_syntax_authorisation_then_in_use() {
    let now = t0();
    let mut r = relay();
    connect(&mut r, now, 1, Transport::WebSocket, "alpha", C, "111111");
    let cases: &[Case] = &[
        // Everything wrong: the role is named.
        (
            "secret",
            Some("boss"),
            ClaimedId::Given("1"),
            Some(" "),
            AbortReason::InvalidRole,
        ),
        (
            "alpha",
            None,
            ClaimedId::Given("111111"),
            TOK,
            AbortReason::InvalidRole,
        ),
        (
            "alpha",
            Some("Controller"),
            ClaimedId::Assign,
            TOK,
            AbortReason::InvalidRole,
        ),
        // Role fine, id wrong (also when the id is taken elsewhere, or of the wrong JSON type).
        (
            "secret",
            R,
            ClaimedId::Given("12345"),
            None,
            AbortReason::InvalidClientId,
        ),
        (
            "alpha",
            R,
            ClaimedId::Given("1234567"),
            TOK,
            AbortReason::InvalidClientId,
        ),
        (
            "alpha",
            R,
            ClaimedId::Given("12a456"),
            TOK,
            AbortReason::InvalidClientId,
        ),
        (
            "alpha",
            R,
            ClaimedId::Given(""),
            TOK,
            AbortReason::InvalidClientId,
        ),
        (
            "alpha",
            R,
            ClaimedId::Invalid,
            Some("x y"),
            AbortReason::InvalidClientId,
        ),
        // Token syntax: missing, empty, a space, too long; before authorisation.
        (
            "secret",
            R,
            ClaimedId::Given("222222"),
            None,
            AbortReason::InvalidAccessToken,
        ),
        (
            "alpha",
            R,
            ClaimedId::Given("222222"),
            Some(""),
            AbortReason::InvalidAccessToken,
        ),
        (
            "secret",
            R,
            ClaimedId::Assign,
            Some("tok A"),
            AbortReason::InvalidAccessToken,
        ),
        (
            "alpha",
            R,
            ClaimedId::Given("222222"),
            Some(&"x".repeat(257)),
            AbortReason::InvalidAccessToken,
        ),
        // Authorisation: a token the app does not have; an unknown app has none. Before P7:
        // the id taken in another app does not show.
        (
            "secret",
            R,
            ClaimedId::Given("222222"),
            TOK,
            AbortReason::NotAuthorized,
        ),
        (
            "secret",
            R,
            ClaimedId::Given("111111"),
            Some("tokC"),
            AbortReason::NotAuthorized,
        ),
        (
            "nosuch",
            R,
            ClaimedId::Given("222222"),
            TOK,
            AbortReason::NotAuthorized,
        ),
        // Last: the id is live in another app.
        (
            "beta",
            R,
            ClaimedId::Given("111111"),
            TOK,
            AbortReason::ClientIdInUse,
        ),
        (
            "secret",
            R,
            ClaimedId::Given("111111"),
            Some("tokB"),
            AbortReason::ClientIdInUse,
        ),
    ];
    for (i, (app, role, id, token, reason)) in cases.iter().enumerate() {
        let conn = ConnId(100 + i as u64);
        r.handle_open(now, conn, Transport::Sse);
        let got = r.handle_identify(now, conn, app, *role, *id, *token);
        assert_eq!(got, Err(IdentifyError::Aborted(*reason)), "case {i}");
        // A refused connection is forgotten at once.
        assert_eq!(r.connection_count(), 1, "case {i}");
    }
    // None of it touched the live connection.
    assert_eq!(r.connection_of("111111"), Some(ConnId(1)));
    assert_eq!(drain(&mut r), vec![]);
}

#[test]
fn accepted_identifies_in_open_and_token_apps() {
    let now = t0();
    let mut r = relay();
    r.handle_open(now, ConnId(1), Transport::WebSocket);
    let w = r
        .handle_identify(
            now,
            ConnId(1),
            "secret",
            C,
            ClaimedId::Given("000042"),
            Some("tokB"),
        )
        .unwrap();
    assert_eq!(w.app, "secret");
    assert_eq!(w.client_id, "000042");
    assert_eq!(w.role, Role::Controller);
    // An open app takes any well-formed token, in either role.
    let w = connect(&mut r, now, 2, Transport::Sse, "alpha", R, "999999");
    assert_eq!((w.role, w.client_id.as_str()), (Role::Responder, "999999"));
    assert!(r.has_app("alpha") && !r.has_app("nosuch"));
    // sendevent credentials follow the same checks.
    assert_eq!(
        r.check_credentials("secret", C, "000042", Some("tokA"))
            .map(|c| c.role()),
        Ok(Role::Controller)
    );
    assert_eq!(
        r.check_credentials("alpha", C, "", TOK),
        Err(AbortReason::InvalidClientId)
    );
    assert_eq!(
        r.check_credentials("secret", Some("x"), "", Some("tokA")),
        Err(AbortReason::InvalidRole)
    );
    assert_eq!(
        r.check_credentials("secret", C, "000042", TOK),
        Err(AbortReason::NotAuthorized)
    );
}

#[test]
fn identify_only_once_and_only_on_an_open_connection() {
    let now = t0();
    let mut r = relay();
    let id = ClaimedId::Given("123456");
    assert_eq!(
        r.handle_identify(now, ConnId(9), "alpha", C, id, TOK),
        Err(IdentifyError::NotAwaitingIdentify)
    );
    connect(&mut r, now, 1, Transport::WebSocket, "alpha", C, "123456");
    assert_eq!(
        r.handle_identify(now, ConnId(1), "alpha", R, ClaimedId::Given("654321"), TOK),
        Err(IdentifyError::NotAwaitingIdentify)
    );
    // Nothing changed: still the controller 123456.
    assert_eq!(r.connection_of("123456"), Some(ConnId(1)));
    assert_eq!(r.connection_of("654321"), None);
    // A refused connection cannot try again either: it is gone.
    r.handle_open(now, ConnId(2), Transport::WebSocket);
    let bad = r.handle_identify(now, ConnId(2), "alpha", Some("x"), id, TOK);
    assert_eq!(bad, Err(IdentifyError::Aborted(AbortReason::InvalidRole)));
    assert_eq!(
        r.handle_identify(now, ConnId(2), "alpha", R, ClaimedId::Given("222222"), TOK),
        Err(IdentifyError::NotAwaitingIdentify)
    );
}

// ---- one connection per client id (P7) ----

#[test]
fn a_new_connection_in_the_same_app_replaces_the_old_one_which_is_released_by_other() {
    let now = t0();
    let mut r = relay();
    let old = connect(&mut r, now, 1, Transport::Sse, "alpha", R, "111111");
    connect(&mut r, now, 3, Transport::Sse, "alpha", C, "333333");
    // The same id, the same app, another transport and even another role.
    r.handle_open(now, ConnId(2), Transport::WebSocket);
    let new = r
        .handle_identify(now, ConnId(2), "alpha", C, ClaimedId::Given("111111"), TOK)
        .unwrap();
    assert_ne!(new.stream_id, old.stream_id);
    assert_eq!(
        drain(&mut r),
        vec![Action::Abort {
            conn: ConnId(1),
            transport: Transport::Sse,
            stream_id: old.stream_id,
            reason: AbortReason::ReleasedByOther,
            releaser: Some(new.stream_id),
        }]
    );
    assert_eq!(r.connection_of("111111"), Some(ConnId(2)));
    assert_eq!(r.connection_count(), 2);
    // Events for the id now reach the new connection only, with its new role: the
    // controller 333333 is blocked sending to the controller 111111.
    let s = Sender::Conn(ConnId(3));
    assert_eq!(
        r.handle_event(now, &s, "111111", Ev("ping", 1)),
        Routed::SameRole
    );
    let s = Sender::Conn(ConnId(2));
    assert_eq!(
        r.handle_event(now, &s, "333333", Ev("x", 2)),
        Routed::SameRole
    );
    // The old connection is gone for the relay: its gone is a no-op.
    r.handle_gone(now, ConnId(1));
    assert_eq!(r.connection_of("111111"), Some(ConnId(2)));
}

#[test]
fn a_new_connection_for_an_id_live_in_another_app_is_refused_client_id_in_use() {
    let now = t0();
    let mut r = relay();
    let old = connect(&mut r, now, 1, Transport::WebSocket, "alpha", R, "111111");
    connect(&mut r, now, 2, Transport::WebSocket, "alpha", C, "222222");
    r.handle_open(now, ConnId(3), Transport::Sse);
    assert_eq!(
        r.handle_identify(now, ConnId(3), "beta", R, ClaimedId::Given("111111"), TOK),
        Err(IdentifyError::Aborted(AbortReason::ClientIdInUse))
    );
    assert_eq!(drain(&mut r), vec![], "the old one is untouched");
    assert_eq!(r.connection_of("111111"), Some(ConnId(1)));
    let s = Sender::Conn(ConnId(2));
    assert_eq!(
        r.handle_event(now, &s, "111111", Ev("ping", 1)),
        Routed::Delivered
    );
    assert_eq!(
        drain(&mut r),
        vec![deliver(1, Transport::WebSocket, Ev("ping", 1), "222222")]
    );
    // Once the old one is gone, the id is free for any app.
    r.handle_gone(now, ConnId(1));
    let w = connect(&mut r, now, 4, Transport::Sse, "beta", R, "111111");
    assert!(w.stream_id > old.stream_id);
}

// ---- ids (P6, P15) ----

/// Gives the scripted draws in order, then `000000` for ever.
struct Script(Mutex<VecDeque<&'static str>>);

impl IdSource for Script {
    fn chars(&self, _alphabet: &[u8], _len: usize) -> String {
        let next = self.0.lock().unwrap().pop_front();
        next.unwrap_or("000000").to_string()
    }
}

#[test]
fn assigned_ids_are_six_digits_never_connected_and_never_handed_out_twice() {
    let now = t0();
    let draws = [
        "000007", "000007", "123456", "000009", "000007", "000009", "000010",
    ];
    let mut r = Relay::new(config(), Arc::new(Script(Mutex::new(draws.into()))));
    // clientid/: 000007, leading zeros kept.
    assert_eq!(r.assign_client_id().as_deref(), Some("000007"));
    // A client brings 123456 itself; a WS identify without an id is then given neither 000007
    // (handed out) nor 123456 (connected), but 000009.
    connect(&mut r, now, 1, Transport::Sse, "alpha", C, "123456");
    r.handle_open(now, ConnId(2), Transport::WebSocket);
    let w = r
        .handle_identify(now, ConnId(2), "beta", R, ClaimedId::Assign, TOK)
        .unwrap();
    assert_eq!(w.client_id, "000009");
    assert_eq!(r.connection_of("000009"), Some(ConnId(2)));
    // 000009 leaves; it was handed out, so it does not come back: 000010 does.
    r.handle_gone(now, ConnId(2));
    assert_eq!(r.assign_client_id().as_deref(), Some("000010"));
}

#[test]
fn a_refused_identify_does_not_use_up_an_id() {
    let now = t0();
    let mut r = relay();
    r.handle_open(now, ConnId(1), Transport::WebSocket);
    let bad = r.handle_identify(now, ConnId(1), "secret", C, ClaimedId::Assign, TOK);
    assert_eq!(bad, Err(IdentifyError::Aborted(AbortReason::NotAuthorized)));
    assert_eq!(r.assign_client_id().as_deref(), Some("000001"));
}

#[test]
fn stream_ids_are_decimal_unique_per_connection_and_never_zero() {
    let now = t0();
    let mut r = relay();
    let mut seen = Vec::new();
    for i in 0..50 {
        let transport = if i % 2 == 0 {
            Transport::Sse
        } else {
            Transport::WebSocket
        };
        let sid = r.handle_open(now, ConnId(i % 5), transport);
        assert_ne!(sid.get(), 0);
        assert_eq!(sid.to_string(), sid.get().to_string());
        assert!(!seen.contains(&sid), "{sid} twice");
        seen.push(sid);
    }
    // Reopening a handle forgot the old connection.
    assert_eq!(r.connection_count(), 5);
}

// ---- routing, blocking, rejects (P20..P22) ----

/// alpha: controller 100001 (WS, conn 1), responder 100002 (SSE, conn 2), controller
/// 100003 (SSE, conn 3); beta: responder 200001 (WS, conn 4).
fn four(now: Now) -> Relay {
    let mut r = relay();
    connect(&mut r, now, 1, Transport::WebSocket, "alpha", C, "100001");
    connect(&mut r, now, 2, Transport::Sse, "alpha", R, "100002");
    connect(&mut r, now, 3, Transport::Sse, "alpha", C, "100003");
    connect(&mut r, now, 4, Transport::WebSocket, "beta", R, "200001");
    r
}

#[test]
fn an_event_to_an_id_with_no_live_connection_is_dropped_even_a_ping() {
    let now = t0();
    let mut r = four(now);
    let s = Sender::Conn(ConnId(1));
    for kind in ["ping", "reject", "x"] {
        assert_eq!(
            r.handle_event(now, &s, "999999", Ev(kind, 0)),
            Routed::NoRecipient
        );
    }
    // Opened but not identified is not live.
    r.handle_open(now, ConnId(9), Transport::Sse);
    assert_eq!(
        r.handle_event(now, &s, "999999", Ev("ping", 0)),
        Routed::NoRecipient
    );
    // Gone is not live.
    r.handle_gone(now, ConnId(2));
    assert_eq!(
        r.handle_event(now, &s, "100002", Ev("ping", 0)),
        Routed::NoRecipient
    );
    assert_eq!(drain(&mut r), vec![]);
}

#[test]
fn a_ping_across_apps_is_answered_app_id_mismatch_from_the_pinged_id_other_events_get_nothing() {
    let now = t0();
    let mut r = four(now);
    let s = Sender::Conn(ConnId(1));
    assert_eq!(
        r.handle_event(now, &s, "200001", Ev("ping", 1)),
        Routed::AppIdMismatch
    );
    assert_eq!(
        drain(&mut r),
        vec![reject(
            1,
            Transport::WebSocket,
            RejectSubtype::AppIdMismatch,
            "200001"
        )]
    );
    // Across apps the roles do not matter: the beta responder pinging the alpha responder.
    let s = Sender::Conn(ConnId(4));
    assert_eq!(
        r.handle_event(now, &s, "100002", Ev("ping", 2)),
        Routed::AppIdMismatch
    );
    assert_eq!(
        drain(&mut r),
        vec![reject(
            4,
            Transport::WebSocket,
            RejectSubtype::AppIdMismatch,
            "100002"
        )]
    );
    for kind in ["reject", "unassign", "inactive", "hello", "pings"] {
        assert_eq!(
            r.handle_event(now, &s, "100001", Ev(kind, 3)),
            Routed::AppIdMismatch
        );
    }
    assert_eq!(drain(&mut r), vec![]);
}

#[test]
fn a_ping_to_the_same_role_is_answered_invalid_partner_role_other_events_get_nothing() {
    let now = t0();
    let mut r = four(now);
    let s = Sender::Conn(ConnId(3));
    assert_eq!(
        r.handle_event(now, &s, "100001", Ev("ping", 1)),
        Routed::SameRole
    );
    assert_eq!(
        drain(&mut r),
        vec![reject(
            3,
            Transport::Sse,
            RejectSubtype::InvalidPartnerRole,
            "100001"
        )]
    );
    // A client-sent reject obeys the same rules: blocked, and not answered.
    for kind in ["reject", "unassign", "inactive", "app"] {
        assert_eq!(
            r.handle_event(now, &s, "100001", Ev(kind, 2)),
            Routed::SameRole
        );
    }
    // To oneself: the same role too.
    assert_eq!(
        r.handle_event(now, &s, "100003", Ev("ping", 3)),
        Routed::SameRole
    );
    assert_eq!(
        drain(&mut r),
        vec![reject(
            3,
            Transport::Sse,
            RejectSubtype::InvalidPartnerRole,
            "100003"
        )]
    );
}

#[test]
fn any_event_between_opposite_roles_of_one_app_is_delivered_in_order_on_the_recipients_transport() {
    let now = t0();
    let mut r = four(now);
    let kinds = ["ping", "reject", "unassign", "inactive", "someAppEvent"];
    for (i, kind) in kinds.iter().enumerate() {
        let s = Sender::Conn(ConnId(1));
        assert_eq!(
            r.handle_event(now, &s, "100002", Ev(kind, i as u32)),
            Routed::Delivered
        );
    }
    let s = Sender::Conn(ConnId(2));
    assert_eq!(
        r.handle_event(now, &s, "100001", Ev("ping", 9)),
        Routed::Delivered
    );
    let mut want: Vec<_> = kinds
        .iter()
        .enumerate()
        .map(|(i, k)| deliver(2, Transport::Sse, Ev(k, i as u32), "100001"))
        .collect();
    want.push(deliver(1, Transport::WebSocket, Ev("ping", 9), "100002"));
    assert_eq!(drain(&mut r), want);
}

#[test]
fn a_sendevent_sender_is_routed_by_its_credentials_and_answered_on_its_stream_if_it_has_one() {
    let now = t0();
    let mut r = four(now);
    // 100003 (alpha controller, SSE conn 3) sending by request.
    let s = Sender::Request(creds(&r, "alpha", C, "100003"));
    assert_eq!(
        r.handle_event(now, &s, "100002", Ev("x", 1)),
        Routed::Delivered
    );
    assert_eq!(
        r.handle_event(now, &s, "200001", Ev("ping", 2)),
        Routed::AppIdMismatch
    );
    assert_eq!(
        r.handle_event(now, &s, "100001", Ev("ping", 3)),
        Routed::SameRole
    );
    assert_eq!(
        drain(&mut r),
        vec![
            deliver(2, Transport::Sse, Ev("x", 1), "100003"),
            reject(3, Transport::Sse, RejectSubtype::AppIdMismatch, "200001"),
            reject(
                3,
                Transport::Sse,
                RejectSubtype::InvalidPartnerRole,
                "100001"
            ),
        ]
    );
    // A sender with no stream: delivered as well, its rejects dropped.
    let s = Sender::Request(creds(&r, "alpha", R, "555555"));
    assert_eq!(
        r.handle_event(now, &s, "100001", Ev("ping", 4)),
        Routed::Delivered
    );
    assert_eq!(
        r.handle_event(now, &s, "200001", Ev("ping", 5)),
        Routed::AppIdMismatch
    );
    assert_eq!(
        r.handle_event(now, &s, "100002", Ev("ping", 6)),
        Routed::SameRole
    );
    assert_eq!(
        drain(&mut r),
        vec![deliver(1, Transport::WebSocket, Ev("ping", 4), "555555")]
    );
    // A sender whose id is live only in another app has no stream in this one.
    let s = Sender::Request(creds(&r, "beta", C, "100003"));
    assert_eq!(
        r.handle_event(now, &s, "100002", Ev("ping", 7)),
        Routed::AppIdMismatch
    );
    assert_eq!(drain(&mut r), vec![]);
}

#[test]
fn an_unidentified_connection_sends_nothing() {
    let now = t0();
    let mut r = four(now);
    r.handle_open(now, ConnId(9), Transport::WebSocket);
    for conn in [9, 77] {
        let s = Sender::Conn(ConnId(conn));
        assert_eq!(
            r.handle_event(now, &s, "100002", Ev("ping", 0)),
            Routed::NotIdentified
        );
        assert!(!r.handle_alive(now, ConnId(conn)));
    }
    assert_eq!(drain(&mut r), vec![]);
}

// ---- liveness (P3, P23) ----

#[test]
fn a_silent_connection_is_aborted_client_not_alive_no_earlier_than_the_timeout_and_by_one_check_later(
) {
    // The last refresh at several phases against the 200 ms check ticks (which start 200 ms
    // after the first connection opened).
    for offset in [0, 1, 50, 199, 200, 201, 399] {
        let base = t0();
        let mut r = relay();
        r.handle_open(base, ConnId(99), Transport::Sse);
        let at = base.plus(ms(offset));
        let w = connect(&mut r, at, 1, Transport::WebSocket, "alpha", C, "111111");
        r.handle_gone(at, ConnId(99));
        let actions = run_until(&mut r, base, ms(offset + 2500));
        let [(t, action)] = actions.as_slice() else {
            panic!("offset {offset}: {actions:?}");
        };
        assert_eq!(
            *action,
            Action::Abort {
                conn: ConnId(1),
                transport: Transport::WebSocket,
                stream_id: w.stream_id,
                reason: AbortReason::ClientNotAlive,
                releaser: None,
            }
        );
        let silent = t - offset;
        assert!(
            (2000..2200).contains(&silent),
            "offset {offset}: silent {silent} ms"
        );
        // Forgotten: its id is free, nothing is left to time.
        assert_eq!(r.connection_of("111111"), None);
        assert_eq!(r.poll_timeout(), None);
    }
}

#[test]
fn the_check_that_finds_exactly_the_timeout_aborts_and_the_one_before_does_not() {
    let base = t0();
    let mut r = relay();
    connect(&mut r, base, 1, Transport::Sse, "alpha", C, "111111");
    // Ticks at 200, 400, ... ms: the one at 1800 finds 1.8 s of silence, the one at 2000 2 s.
    r.handle_timeout(base.plus(ms(1800)));
    assert_eq!(drain(&mut r), vec![]);
    assert_eq!(r.poll_timeout(), Some(base.instant + ms(2000)));
    // Woken a little early: nothing (the check is not due).
    r.handle_timeout(base.plus(ms(1999)));
    assert_eq!(drain(&mut r), vec![]);
    r.handle_timeout(base.plus(ms(2000)));
    assert!(matches!(
        drain(&mut r).as_slice(),
        [Action::Abort {
            reason: AbortReason::ClientNotAlive,
            ..
        }]
    ));
}

#[test]
fn a_late_wakeup_checks_once_and_the_ticks_keep_their_phase() {
    let base = t0();
    let mut r = relay();
    connect(&mut r, base, 1, Transport::Sse, "alpha", C, "111111");
    connect(&mut r, base, 2, Transport::Sse, "alpha", R, "222222");
    // Woken 1 s late at 1.05 s: one check, the next tick is still on the 200 ms grid.
    r.handle_timeout(base.plus(ms(1050)));
    assert_eq!(r.poll_timeout(), Some(base.instant + ms(1200)));
    r.handle_timeout(base.plus(ms(3150)));
    let aborted: Vec<ConnId> = drain(&mut r)
        .into_iter()
        .map(|a| match a {
            Action::Abort { conn, .. } => conn,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(aborted, vec![ConnId(1), ConnId(2)], "in stream order");
}

#[test]
fn frames_and_requests_that_pass_validation_refresh_the_sender_even_when_dropped() {
    let base = t0();
    let mut r = four(base);
    let mut all = Vec::new();
    // Every 1.5 s, each client does one thing the relay validates; none is ever aborted.
    for step in 1..=6u64 {
        all.extend(run_until(&mut r, base, ms(1500 * step)));
        let now = base.plus(ms(1500 * step));
        // 1: an event to nobody (dropped); 2: a sendevent alive with another SID; 3: a
        // sendevent event blocked by role; 4: cr_alive.
        let s1 = Sender::Conn(ConnId(1));
        assert_eq!(
            r.handle_event(now, &s1, "999999", Ev("x", 0)),
            Routed::NoRecipient
        );
        let c2 = creds(&r, "alpha", R, "100002");
        assert!(!r.handle_alive_request(now, &c2, "0"));
        let s3 = Sender::Request(creds(&r, "alpha", C, "100003"));
        assert_eq!(
            r.handle_event(now, &s3, "100001", Ev("x", 0)),
            Routed::SameRole
        );
        assert!(r.handle_alive(now, ConnId(4)));
        all.extend(drain(&mut r).into_iter().map(|a| (0, a)));
    }
    assert_eq!(r.connection_count(), 4);
    assert!(
        all.iter().all(|(_, a)| matches!(
            a,
            Action::Alive {
                conn: ConnId(4),
                ..
            }
        )),
        "{all:?}"
    );
    // Then silence: all four are aborted 2 s after their last refresh (9 s), at the tick of
    // 11 s.
    let actions = run_until(&mut r, base, ms(12_000));
    let times: Vec<u64> = actions.iter().map(|(t, _)| *t).collect();
    assert_eq!(times, vec![11_000; 4], "{actions:?}");
}

#[test]
fn delivered_events_refresh_the_recipient_blocked_ones_do_not() {
    let base = t0();
    let mut r = four(base);
    let mut all = Vec::new();
    // The controller 100001 talks to the responder 100002 every second for 5 s; the
    // controller 100003 pings the beta responder 200001 (blocked) as often.
    for step in 1..=5u64 {
        all.extend(run_until(&mut r, base, ms(1000 * step)));
        let now = base.plus(ms(1000 * step));
        let s = Sender::Conn(ConnId(1));
        assert_eq!(
            r.handle_event(now, &s, "100002", Ev("x", 0)),
            Routed::Delivered
        );
        let s = Sender::Conn(ConnId(3));
        r.handle_event(now, &s, "200001", Ev("ping", 0));
        drain(&mut r);
    }
    all.extend(run_until(&mut r, base, ms(8000)));
    let aborted = |conn: u64| {
        all.iter()
            .find(|(_, a)| matches!(a, Action::Abort { conn: c, .. } if *c == ConnId(conn)))
            .map(|(t, _)| *t)
    };
    // The beta responder, pinged but never delivered to, goes 2 s after it opened; the
    // responder 100002, which never sends but is delivered to, 2 s after the last delivery.
    assert_eq!(aborted(4), Some(2000));
    assert_eq!(aborted(2), Some(7000));
    assert_eq!(aborted(1), Some(7000));
    assert_eq!(aborted(3), Some(7000));
}

#[test]
fn a_connection_that_does_not_identify_is_dismissed_at_the_alive_timeout_of_opening() {
    let base = t0();
    let mut r = relay();
    r.handle_open(base, ConnId(1), Transport::WebSocket);
    r.handle_open(base.plus(ms(10)), ConnId(2), Transport::WebSocket);
    assert_eq!(
        r.poll_timeout(),
        Some(base.instant + ms(200)),
        "the check tick first"
    );
    // Not before: at 1999 ms nothing.
    r.handle_timeout(base.plus(ms(1999)));
    assert_eq!(drain(&mut r), vec![]);
    // Conn 2 identifies at 2005 ms, inside its deadline (2010 ms).
    connect_open(&mut r, base.plus(ms(2005)), 2, "111111");
    let actions = run_until(&mut r, base, ms(2100));
    assert_eq!(
        actions,
        vec![(
            2000,
            Action::IdentifyTimeout {
                conn: ConnId(1),
                transport: Transport::WebSocket
            }
        )],
        "exactly at the deadline, without waiting for a check"
    );
    assert_eq!(r.connection_count(), 1);
    // A frame before identify does not extend the deadline (it is not validated).
    r.handle_open(base.plus(ms(3000)), ConnId(3), Transport::WebSocket);
    assert!(!r.handle_alive(base.plus(ms(4000)), ConnId(3)));
    let actions = run_until(&mut r, base, ms(5100));
    assert!(actions.contains(&(
        5000,
        Action::IdentifyTimeout {
            conn: ConnId(3),
            transport: Transport::WebSocket
        }
    )));
}

/// Identifies the already open `conn` as an alpha responder.
fn connect_open(r: &mut Relay, now: Now, conn: u64, id: &str) {
    r.handle_identify(now, ConnId(conn), "alpha", R, ClaimedId::Given(id), TOK)
        .unwrap();
}

#[test]
fn nothing_to_time_without_connections() {
    let base = t0();
    let mut r = relay();
    assert_eq!(r.poll_timeout(), None);
    connect(&mut r, base, 1, Transport::Sse, "alpha", C, "111111");
    assert!(r.poll_timeout().is_some());
    r.handle_gone(base, ConnId(1));
    r.handle_timeout(base.plus(ms(200)));
    assert_eq!(r.poll_timeout(), None);
}

// ---- alive and close (P12, P17) ----

#[test]
fn alive_and_close_requests_answer_only_the_current_stream_id() {
    let now = t0();
    let mut r = relay();
    let old = connect(&mut r, now, 1, Transport::Sse, "alpha", R, "111111");
    let w = connect(&mut r, now, 2, Transport::Sse, "alpha", R, "111111");
    drain(&mut r);
    let c = creds(&r, "alpha", R, "111111");
    let sid = w.stream_id.to_string();
    // The replaced stream's id, a number with a leading zero, garbage: ignored.
    for other in [
        old.stream_id.to_string(),
        format!("0{sid}"),
        "x".into(),
        String::new(),
    ] {
        assert!(!r.handle_alive_request(now, &c, &other));
        assert!(!r.handle_close_request(now, &c, &other));
    }
    assert_eq!(drain(&mut r), vec![]);
    // The same id in another app has no stream here.
    let beta = creds(&r, "beta", R, "111111");
    assert!(!r.handle_alive_request(now, &beta, &sid));
    assert!(!r.handle_close_request(now, &beta, &sid));
    // The current one: alive is echoed, close answered `closed` and the stream forgotten.
    assert!(r.handle_alive_request(now, &c, &sid));
    assert!(r.handle_close_request(now, &c, &sid));
    assert_eq!(
        drain(&mut r),
        vec![
            Action::Alive {
                conn: ConnId(2),
                transport: Transport::Sse,
                stream_id: w.stream_id
            },
            Action::Closed {
                conn: ConnId(2),
                transport: Transport::Sse,
                stream_id: w.stream_id
            },
        ]
    );
    assert_eq!(r.connection_of("111111"), None);
    assert!(!r.handle_alive_request(now, &c, &sid), "closed is gone");
}

#[test]
fn a_websocket_alive_is_echoed() {
    let now = t0();
    let mut r = relay();
    let w = connect(&mut r, now, 1, Transport::WebSocket, "alpha", C, "111111");
    assert!(r.handle_alive(now, ConnId(1)));
    assert_eq!(
        drain(&mut r),
        vec![Action::Alive {
            conn: ConnId(1),
            transport: Transport::WebSocket,
            stream_id: w.stream_id
        }]
    );
}

// ---- the sendevent rate limit (P24) ----

fn limited(rate: u32, burst: u32) -> Relay {
    let config = RelayConfig {
        rate_limit: rate,
        rate_burst: burst,
        ..config()
    };
    Relay::new(config, Arc::new(SequentialIds::default()))
}

#[test]
fn sendevent_requests_are_rate_limited_per_client_id_and_the_excess_dropped() {
    let now = t0();
    let mut r = limited(10, 5);
    let w = connect(&mut r, now, 1, Transport::Sse, "alpha", R, "111111");
    let a = creds(&r, "alpha", C, "222222");
    let s = Sender::Request(a.clone());
    for i in 0..5 {
        assert_eq!(
            r.handle_event(now, &s, "111111", Ev("x", i)),
            Routed::Delivered
        );
    }
    assert_eq!(
        r.handle_event(now, &s, "111111", Ev("x", 5)),
        Routed::RateLimited
    );
    // Another client id has its own bucket; alive and close count against the sender's.
    let b = Sender::Request(creds(&r, "alpha", C, "333333"));
    assert_eq!(
        r.handle_event(now, &b, "111111", Ev("x", 6)),
        Routed::Delivered
    );
    let own = creds(&r, "alpha", R, "111111");
    let sid = w.stream_id.to_string();
    for _ in 0..5 {
        assert!(r.handle_alive_request(now, &own, &sid));
    }
    assert!(!r.handle_alive_request(now, &own, &sid), "over the limit");
    assert!(!r.handle_close_request(now, &own, &sid), "over the limit");
    assert_eq!(r.connection_of("111111"), Some(ConnId(1)));
    let delivered = drain(&mut r)
        .into_iter()
        .filter(|a| matches!(a, Action::Deliver { .. }))
        .count();
    assert_eq!(delivered, 6);
    // 100 ms later one more token.
    let later = now.plus(ms(100));
    assert_eq!(
        r.handle_event(later, &s, "111111", Ev("x", 7)),
        Routed::Delivered
    );
    assert_eq!(
        r.handle_event(later, &s, "111111", Ev("x", 8)),
        Routed::RateLimited
    );
    // WS frames are the socket's limiter's business, not this one's.
    connect(&mut r, now, 2, Transport::WebSocket, "alpha", C, "444444");
    let ws = Sender::Conn(ConnId(2));
    for i in 0..50 {
        assert_eq!(
            r.handle_event(now, &ws, "111111", Ev("x", i)),
            Routed::Delivered
        );
    }
}

#[test]
fn a_rate_limited_request_neither_refreshes_nor_is_answered() {
    let base = t0();
    let mut r = limited(1, 1);
    let w = connect(&mut r, base, 1, Transport::Sse, "alpha", R, "111111");
    let c = creds(&r, "alpha", R, "111111");
    let sid = w.stream_id.to_string();
    // A burst of 1 at 1 a second: the request at 1 s is admitted, the one at 1.5 s is not,
    // so the last refresh is at 1 s and the abort comes at the tick 2 s after it.
    assert!(r.handle_alive_request(base.plus(ms(1000)), &c, &sid));
    assert!(!r.handle_alive_request(base.plus(ms(1500)), &c, &sid));
    drain(&mut r);
    let actions = run_until(&mut r, base, ms(4000));
    let (t, _) = actions
        .iter()
        .find(|(_, a)| matches!(a, Action::Abort { .. }))
        .expect("aborted");
    assert!(
        (3000..3200).contains(t),
        "2 s after the admitted request at 1 s: {t}"
    );
}

#[test]
fn a_zero_rate_does_not_limit_sendevent() {
    let now = t0();
    let mut r = limited(0, 1);
    connect(&mut r, now, 1, Transport::Sse, "alpha", R, "111111");
    let s = Sender::Request(creds(&r, "alpha", C, "222222"));
    for i in 0..1000 {
        assert_eq!(
            r.handle_event(now, &s, "111111", Ev("x", i)),
            Routed::Delivered
        );
    }
}

#[test]
fn an_idle_client_ids_bucket_is_forgotten_once_it_would_be_full_again() {
    let base = t0();
    let mut r = limited(10, 5);
    let c = creds(&r, "alpha", C, "222222");
    let s = Sender::Request(c);
    for i in 0..5 {
        assert_eq!(
            r.handle_event(base, &s, "111111", Ev("x", i)),
            Routed::NoRecipient
        );
    }
    assert_eq!(
        r.handle_event(base, &s, "111111", Ev("x", 5)),
        Routed::RateLimited
    );
    // No connection, but the bucket keeps the checks running until it has refilled (0.5 s).
    assert!(r.poll_timeout().is_some());
    run_until(&mut r, base, ms(1000));
    assert_eq!(r.poll_timeout(), None);
    // A new bucket: the full burst again.
    let later = base.plus(ms(1000));
    for i in 0..5 {
        assert_eq!(
            r.handle_event(later, &s, "111111", Ev("x", i)),
            Routed::NoRecipient
        );
    }
    assert_eq!(
        r.handle_event(later, &s, "111111", Ev("x", 5)),
        Routed::RateLimited
    );
}

#[test]
fn the_wires_event_is_relayed_untouched_and_its_type_decides_the_reject() {
    use loudsync_protocol::pairing::Event;
    let now = t0();
    let mut r: PairingRelay<Event> =
        PairingRelay::new(config(), Arc::new(SequentialIds::default()));
    for (conn, app, role, id) in [
        (1, "alpha", C, "100001"),
        (2, "alpha", R, "100002"),
        (3, "beta", R, "200001"),
    ] {
        r.handle_open(now, ConnId(conn), Transport::Sse);
        r.handle_identify(now, ConnId(conn), app, role, ClaimedId::Given(id), TOK)
            .unwrap();
    }
    let mut event = Event::parse_data("someEvent,sub,true,false,true,123,NaN,999999,a,b").unwrap();
    event.params.push("c".into());
    let s = Sender::Conn(ConnId(1));
    assert_eq!(
        r.handle_event(now, &s, "100002", event.clone()),
        Routed::Delivered
    );
    let ping = Event::new("ping");
    assert_eq!(
        r.handle_event(now, &s, "200001", ping),
        Routed::AppIdMismatch
    );
    let actions: Vec<_> = std::iter::from_fn(|| r.poll_action()).collect();
    assert_eq!(
        actions,
        vec![
            Action::Deliver {
                to: ConnId(2),
                transport: Transport::Sse,
                event,
                sender: "100001".into()
            },
            Action::Reject {
                to: ConnId(1),
                transport: Transport::Sse,
                subtype: RejectSubtype::AppIdMismatch,
                sender: "200001".into()
            },
        ]
    );
}

/// Random sequences of opens, identifies, events (from connections and from requests), alive
/// and close requests, ends and time, checked against a model of the rules: who is live for
/// which id, what each event must do, and that every connection is aborted within the alive
/// timeout's bounds and no earlier.
mod property {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{HashMap, HashSet};

    const APPS: [&str; 3] = ["alpha", "beta", "nosuch"];
    const ROLES: [Option<&str>; 3] = [C, R, Some("boss")];
    const IDS: [&str; 3] = ["100001", "100002", "100003"];

    #[derive(Debug, Clone)]
    enum Op {
        Open(u64, bool),
        /// conn, app, role, id (3 = assign).
        Identify(u64, usize, usize, usize),
        /// sender conn, recipient id, ping?
        Event(u64, usize, bool),
        /// app, role, sender id, recipient id, ping?
        Request(usize, usize, usize, usize, bool),
        Alive(u64),
        /// app, role, id, the current SID (else another), close (else alive).
        Control(usize, usize, usize, bool, bool),
        Gone(u64),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..5u64, any::<bool>()).prop_map(|(c, ws)| Op::Open(c, ws)),
            (0..5u64, 0..3usize, 0..3usize, 0..4usize)
                .prop_map(|(c, a, r, i)| Op::Identify(c, a, r, i)),
            (0..5u64, 0..3usize, any::<bool>()).prop_map(|(c, i, p)| Op::Event(c, i, p)),
            (0..2usize, 0..2usize, 0..3usize, 0..3usize, any::<bool>())
                .prop_map(|(a, r, s, i, p)| Op::Request(a, r, s, i, p)),
            (0..5u64).prop_map(Op::Alive),
            (
                0..2usize,
                0..2usize,
                0..3usize,
                any::<bool>(),
                any::<bool>()
            )
                .prop_map(|(a, r, i, cur, close)| Op::Control(a, r, i, cur, close)),
            (0..5u64).prop_map(Op::Gone),
            (0..1500u64).prop_map(Op::Advance),
        ]
    }

    #[derive(Debug, Clone)]
    struct Live {
        app: usize,
        role: Role,
        id: String,
        sid: StreamId,
        refreshed: u64,
    }

    #[derive(Default)]
    struct Model {
        t: u64,
        /// Identified connections.
        live: HashMap<ConnId, Live>,
        /// Open, not identified: when they opened, their stream id.
        waiting: HashMap<ConnId, (u64, StreamId)>,
        assigned: HashSet<String>,
    }

    impl Model {
        fn by_id(&self, id: &str) -> Option<(ConnId, &Live)> {
            self.live
                .iter()
                .find(|(_, l)| l.id == id)
                .map(|(c, l)| (*c, l))
        }

        fn forget(&mut self, conn: ConnId) {
            self.live.remove(&conn);
            self.waiting.remove(&conn);
        }

        /// The actions routing one event must give, and its outcome (P20..P22).
        fn route(
            &mut self,
            from: Option<ConnId>,
            app: usize,
            role: Role,
            sender: &str,
            to: &str,
            ping: bool,
        ) -> (Routed, Vec<Action<Ev>>) {
            let t = self.t;
            if let Some(l) = from.and_then(|c| self.live.get_mut(&c)) {
                l.refreshed = t;
            }
            let Some((rc, rl)) = self.by_id(to) else {
                return (Routed::NoRecipient, vec![]);
            };
            let (r_app, r_role) = (rl.app, rl.role);
            let blocked = if r_app != app {
                Some((Routed::AppIdMismatch, RejectSubtype::AppIdMismatch))
            } else if r_role == role {
                Some((Routed::SameRole, RejectSubtype::InvalidPartnerRole))
            } else {
                None
            };
            let event = Ev(if ping { "ping" } else { "x" }, 0);
            match blocked {
                Some((routed, subtype)) => {
                    let answer = match from {
                        Some(s) if ping => vec![Action::Reject {
                            to: s,
                            transport: Transport::Sse,
                            subtype,
                            sender: to.to_string(),
                        }],
                        _ => vec![],
                    };
                    (routed, answer)
                }
                None => {
                    self.live.get_mut(&rc).unwrap().refreshed = t;
                    let deliver = Action::Deliver {
                        to: rc,
                        transport: Transport::Sse,
                        event,
                        sender: sender.to_string(),
                    };
                    (Routed::Delivered, vec![deliver])
                }
            }
        }
    }

    /// The relay's actions with every transport written as SSE (the model does not track
    /// transports; the example tests check them).
    fn drained(r: &mut Relay) -> Vec<Action<Ev>> {
        drain(r)
            .into_iter()
            .map(|a| match a {
                Action::Deliver {
                    to, event, sender, ..
                } => Action::Deliver {
                    to,
                    transport: Transport::Sse,
                    event,
                    sender,
                },
                Action::Reject {
                    to,
                    subtype,
                    sender,
                    ..
                } => Action::Reject {
                    to,
                    transport: Transport::Sse,
                    subtype,
                    sender,
                },
                Action::Abort {
                    conn,
                    stream_id,
                    reason,
                    releaser,
                    ..
                } => Action::Abort {
                    conn,
                    transport: Transport::Sse,
                    stream_id,
                    reason,
                    releaser,
                },
                other => other,
            })
            .collect()
    }

    fn step(r: &mut Relay, m: &mut Model, base: Now, op: Op) {
        let now = base.plus(ms(m.t));
        match op {
            Op::Open(c, ws) => {
                let transport = if ws {
                    Transport::WebSocket
                } else {
                    Transport::Sse
                };
                m.forget(ConnId(c));
                let sid = r.handle_open(now, ConnId(c), transport);
                m.waiting.insert(ConnId(c), (m.t, sid));
            }
            Op::Identify(c, a, ro, i) => {
                let conn = ConnId(c);
                let claimed = IDS
                    .get(i)
                    .map_or(ClaimedId::Assign, |id| ClaimedId::Given(id));
                let got = r.handle_identify(now, conn, APPS[a], ROLES[ro], claimed, TOK);
                let Some(&(_, sid)) = m.waiting.get(&conn) else {
                    assert_eq!(got, Err(IdentifyError::NotAwaitingIdentify));
                    assert_eq!(drained(r), vec![]);
                    return;
                };
                let role = Role::parse(ROLES[ro].unwrap());
                let refused = match (role, a) {
                    (None, _) => Some(AbortReason::InvalidRole),
                    (_, 2) => Some(AbortReason::NotAuthorized),
                    _ => match IDS.get(i).and_then(|id| m.by_id(id)) {
                        Some((_, l)) if l.app != a => Some(AbortReason::ClientIdInUse),
                        _ => None,
                    },
                };
                if let Some(reason) = refused {
                    assert_eq!(got, Err(IdentifyError::Aborted(reason)));
                    assert_eq!(drained(r), vec![]);
                    m.forget(conn);
                    return;
                }
                let w = got.expect("accepted");
                assert_eq!(w.stream_id, sid);
                let mut want = vec![];
                match IDS.get(i) {
                    Some(id) => {
                        assert_eq!(w.client_id, *id);
                        if let Some((old, l)) = m.by_id(id) {
                            want.push(Action::Abort {
                                conn: old,
                                transport: Transport::Sse,
                                stream_id: l.sid,
                                reason: AbortReason::ReleasedByOther,
                                releaser: Some(sid),
                            });
                            m.forget(old);
                        }
                    }
                    None => {
                        assert!(m.by_id(&w.client_id).is_none(), "assigned a live id");
                        assert!(m.assigned.insert(w.client_id.clone()), "assigned twice");
                        assert_eq!(w.client_id.len(), 6);
                    }
                }
                assert_eq!(drained(r), want);
                m.waiting.remove(&conn);
                let (role, id) = (role.unwrap(), w.client_id);
                m.live.insert(
                    conn,
                    Live {
                        app: a,
                        role,
                        id,
                        sid,
                        refreshed: m.t,
                    },
                );
            }
            Op::Event(c, i, ping) => {
                let event = Ev(if ping { "ping" } else { "x" }, 0);
                let got = r.handle_event(now, &Sender::Conn(ConnId(c)), IDS[i], event);
                let (want, actions) = match m.live.get(&ConnId(c)).cloned() {
                    None => (Routed::NotIdentified, vec![]),
                    Some(l) => m.route(Some(ConnId(c)), l.app, l.role, &l.id, IDS[i], ping),
                };
                assert_eq!(got, want);
                assert_eq!(drained(r), actions);
            }
            Op::Request(a, ro, s, i, ping) => {
                let cred = creds(r, APPS[a], ROLES[ro], IDS[s]);
                let event = Ev(if ping { "ping" } else { "x" }, 0);
                let got = r.handle_event(now, &Sender::Request(cred), IDS[i], event);
                let own = m.by_id(IDS[s]).filter(|(_, l)| l.app == a).map(|(c, _)| c);
                let role = Role::parse(ROLES[ro].unwrap()).unwrap();
                let (want, actions) = m.route(own, a, role, IDS[s], IDS[i], ping);
                assert_eq!(got, want);
                assert_eq!(drained(r), actions);
            }
            Op::Alive(c) => {
                let answered = r.handle_alive(now, ConnId(c));
                let l = m.live.get_mut(&ConnId(c));
                assert_eq!(answered, l.is_some());
                if let Some(l) = l {
                    l.refreshed = m.t;
                }
                drain(r);
            }
            Op::Control(a, ro, i, current, close) => {
                let cred = creds(r, APPS[a], ROLES[ro], IDS[i]);
                let own = m.by_id(IDS[i]).filter(|(_, l)| l.app == a).map(|(c, _)| c);
                let sid = match own {
                    Some(c) if current => m.live[&c].sid.to_string(),
                    _ => "0".to_string(),
                };
                let done = if close {
                    r.handle_close_request(now, &cred, &sid)
                } else {
                    r.handle_alive_request(now, &cred, &sid)
                };
                assert_eq!(done, own.is_some() && current);
                if let Some(c) = own {
                    m.live.get_mut(&c).unwrap().refreshed = m.t;
                    if done && close {
                        m.forget(c);
                    }
                }
                drain(r);
            }
            Op::Gone(c) => {
                r.handle_gone(now, ConnId(c));
                m.forget(ConnId(c));
            }
            Op::Advance(d) => {
                let until = m.t + d;
                while let Some(at) = r.poll_timeout() {
                    let at_ms = (at - base.instant).as_millis() as u64;
                    if at_ms > until {
                        break;
                    }
                    m.t = at_ms;
                    r.handle_timeout(base.plus(ms(at_ms)));
                    for action in drain(r) {
                        match action {
                            Action::Abort {
                                conn,
                                reason: AbortReason::ClientNotAlive,
                                ..
                            } => {
                                let l = m.live.get(&conn).expect("aborts a live connection");
                                assert!(m.t - l.refreshed >= 2000, "aborted early");
                                m.forget(conn);
                            }
                            Action::IdentifyTimeout { conn, .. } => {
                                let (opened, _) = m.waiting[&conn];
                                assert_eq!(m.t, opened + 2000);
                                m.forget(conn);
                            }
                            other => panic!("a timer gave {other:?}"),
                        }
                    }
                }
                m.t = until;
            }
        }
        // After every step: one live connection per id, as the model says; nobody silent
        // longer than the timeout plus one check, nobody unidentified past the deadline.
        for id in IDS {
            assert_eq!(r.connection_of(id), m.by_id(id).map(|(c, _)| c), "{id}");
        }
        assert_eq!(r.connection_count(), m.live.len() + m.waiting.len());
        for l in m.live.values() {
            assert!(m.t - l.refreshed < 2200, "{l:?} silent at {}", m.t);
        }
        for (opened, _) in m.waiting.values() {
            assert!(m.t - opened < 2000);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn the_relay_follows_the_rules_in_any_sequence(ops in proptest::collection::vec(op(), 1..80)) {
            let base = t0();
            let mut r = relay();
            let mut m = Model::default();
            for op in ops {
                step(&mut r, &mut m, base, op);
            }
        }
    }
}

#[test]
fn the_admin_view_lists_identified_clients_with_the_partner_of_their_last_delivered_event() {
    let now = t0();
    let mut r = four(now);
    r.handle_open(now, ConnId(9), Transport::WebSocket); // not identified: not listed
    let partners = |r: &Relay| -> Vec<(String, Option<String>, bool)> {
        r.clients()
            .into_iter()
            .map(|c| (c.client_id, c.partner, c.partner_live))
            .collect()
    };
    assert_eq!(
        partners(&r),
        vec![
            ("100001".into(), None, false),
            ("100002".into(), None, false),
            ("100003".into(), None, false),
            ("200001".into(), None, false),
        ]
    );
    let first = &r.clients()[0];
    assert_eq!(
        (first.app.as_str(), first.role, first.transport),
        ("alpha", Role::Controller, Transport::WebSocket)
    );
    // A blocked event (same role) pairs nobody.
    r.handle_event(now, &Sender::Conn(ConnId(1)), "100003", Ev("ping", 0));
    assert!(partners(&r).iter().all(|p| p.1.is_none()));
    r.handle_event(now, &Sender::Conn(ConnId(1)), "100002", Ev("ping", 1));
    assert_eq!(
        partners(&r)[..2],
        [
            ("100001".into(), Some("100002".into()), true),
            ("100002".into(), Some("100001".into()), true),
        ]
    );
    // A sendevent request from 100003 (which has a stream) moves the responder's partner.
    let s = Sender::Request(creds(&r, "alpha", C, "100003"));
    r.handle_event(now, &s, "100002", Ev("ping", 2));
    assert_eq!(
        partners(&r)[1],
        ("100002".into(), Some("100003".into()), true)
    );
    assert_eq!(
        partners(&r)[2],
        ("100003".into(), Some("100002".into()), true)
    );
    // The partner goes: still named, no longer live.
    r.handle_gone(now, ConnId(2));
    assert_eq!(
        partners(&r)[0],
        ("100001".into(), Some("100002".into()), false)
    );
    assert_eq!(r.clients().len(), 3);
}
