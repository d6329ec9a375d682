//! Tests of the crSocket machine on a virtual clock: every state transition, metastate
//! change and timer, with `Instant`s advanced by hand.

use super::*;

const ME: &str = "111111";
const A: &str = "222222";
const B: &str = "333333";

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A start time with room before it (the helpers set things up shortly before `t0`).
fn base() -> Instant {
    Instant::now() + s(100)
}

fn config(role: PairingRole) -> PairingConfig {
    PairingConfig {
        client_id: Some(ME.into()),
        access_token: Some("tok".into()),
        ..PairingConfig::new(role)
    }
}

fn ev(sender: &str, event_type: &str, sub_type: &str) -> IncomingEvent {
    IncomingEvent {
        sender: sender.into(),
        event_type: event_type.into(),
        sub_type: sub_type.into(),
        params: Vec::new(),
    }
}

fn out(recipient: &str, event_type: &str, sub_type: &str) -> OutgoingEvent {
    OutgoingEvent::new(recipient, event_type, sub_type)
}

fn events(c: &mut CrSocket) -> Vec<PairingEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn sent(c: &mut CrSocket) -> Vec<OutgoingEvent> {
    std::iter::from_fn(|| c.poll_transmit()).collect()
}

fn states(c: &mut CrSocket) -> Vec<State> {
    events(c)
        .into_iter()
        .filter_map(|e| match e {
            PairingEvent::StateChanged(s) => Some(s),
            _ => None,
        })
        .collect()
}

/// Fires every timeout up to `until`; returns what was sent, with its time since `t0`.
fn run_until(c: &mut CrSocket, t0: Instant, until: Instant) -> Vec<(Duration, OutgoingEvent)> {
    let mut log = Vec::new();
    while let Some(at) = c.poll_timeout().filter(|at| *at <= until) {
        c.handle_timeout(at);
        for e in sent(c) {
            log.push((at - t0, e));
        }
    }
    log
}

fn pings(log: &[(Duration, OutgoingEvent)]) -> Vec<Duration> {
    log.iter()
        .filter(|(_, e)| e.event_type == PING)
        .map(|(t, _)| *t)
        .collect()
}

/// A socket of `role`, connected at `t0`, its events and transmits drained.
fn connected(role: PairingRole, t0: Instant) -> CrSocket {
    let mut c = CrSocket::new(config(role));
    c.set_active(t0, true);
    c.handle_connected(t0, ME);
    assert_eq!(c.state(), State::ReadyToPair);
    events(&mut c);
    sent(&mut c);
    c
}

/// A controller paired with A and interacting at `t0` (A pinged it), drained.
fn interacting_controller(t0: Instant) -> CrSocket {
    let mut c = connected(PairingRole::Controller, t0 - s(2));
    c.assign_partner(t0 - s(2), Some(A.into()));
    c.handle_event(t0, ev(A, PING, ""));
    assert_eq!(c.state(), State::Interacting);
    assert_eq!(c.poll_transmit(), Some(out(A, PING, "")));
    assert_eq!(
        c.poll_transmit(),
        Some(out(A, PING, "")),
        "interacting's ping"
    );
    events(&mut c);
    sent(&mut c);
    c
}

const M_ACTIVE: Metastates = Metastates {
    active: true,
    connected: false,
    paired: false,
};
const M_CONNECTED: Metastates = Metastates {
    active: true,
    connected: true,
    paired: false,
};
const M_PAIRED: Metastates = Metastates {
    active: true,
    connected: true,
    paired: true,
};

// ---- passive, readyToConnect, connecting --------------------------------------------------

#[test]
fn passive_until_the_app_is_active_and_has_a_client_id() {
    let t0 = base();
    let mut c = CrSocket::new(PairingConfig {
        access_token: Some("tok".into()),
        ..PairingConfig::new(PairingRole::Controller)
    });
    assert_eq!(c.state(), State::Passive);
    assert_eq!(c.metastates(), Metastates::default());
    c.set_active(t0, true);
    assert_eq!(c.state(), State::Passive, "no client id yet");
    assert!(events(&mut c).is_empty());
    c.set_client_id(t0, Some(ME.into()));
    assert_eq!(
        events(&mut c),
        vec![
            PairingEvent::ClientIdChanged(ME.into()),
            PairingEvent::StateChanged(State::Connecting),
            PairingEvent::MetastatesChanged(M_ACTIVE),
        ]
    );
    c.set_client_id(t0, None);
    assert_eq!(c.state(), State::Passive);
    assert_eq!(
        events(&mut c),
        vec![
            PairingEvent::StateChanged(State::Passive),
            PairingEvent::MetastatesChanged(Metastates::default()),
        ]
    );
}

#[test]
fn ready_to_connect_without_a_token_and_connecting_once_it_is_given() {
    let t0 = base();
    let mut c = CrSocket::new(PairingConfig {
        client_id: Some(ME.into()),
        ..PairingConfig::new(PairingRole::Responder)
    });
    c.set_active(t0, true);
    assert_eq!(
        events(&mut c),
        vec![
            PairingEvent::StateChanged(State::ReadyToConnect),
            PairingEvent::MetastatesChanged(M_ACTIVE),
        ]
    );
    c.set_access_token(t0, Some("tok".into()));
    assert_eq!(c.state(), State::Connecting);
    // Same metastates: only the state is told.
    assert_eq!(
        events(&mut c),
        vec![PairingEvent::StateChanged(State::Connecting)]
    );
    c.set_access_token(t0, None);
    assert_eq!(c.state(), State::ReadyToConnect);
}

#[test]
fn connecting_then_connected_is_ready_to_pair() {
    let t0 = base();
    let mut c = CrSocket::new(config(PairingRole::Controller));
    c.set_active(t0, true);
    assert_eq!(c.state(), State::Connecting);
    events(&mut c);
    c.handle_connected(t0, ME);
    assert_eq!(
        events(&mut c),
        vec![
            PairingEvent::StateChanged(State::ReadyToPair),
            PairingEvent::MetastatesChanged(M_CONNECTED),
        ]
    );
    assert!(sent(&mut c).is_empty(), "no partner: nothing to ping");
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn connected_is_ignored_unless_connecting() {
    let t0 = base();
    let mut c = CrSocket::new(config(PairingRole::Controller));
    c.handle_connected(t0, ME);
    assert_eq!(c.state(), State::Passive);
    c.set_active(t0, true);
    c.handle_aborted(t0, "notAuthorized");
    c.handle_connected(t0, ME);
    assert_eq!(
        c.state(),
        State::ReadyToConnect,
        "a stale welcome after an abort"
    );
}

#[test]
fn the_servers_client_id_replaces_the_own_one() {
    let t0 = base();
    let mut c = CrSocket::new(config(PairingRole::Responder));
    c.set_active(t0, true);
    events(&mut c);
    c.handle_connected(t0, "000042");
    assert_eq!(c.client_id(), Some("000042"));
    assert_eq!(
        events(&mut c)[0],
        PairingEvent::ClientIdChanged("000042".into())
    );
}

#[test]
fn an_abort_holds_ready_to_connect_until_retry_a_new_token_or_a_passive_cycle() {
    let t0 = base();
    let mut c = connected(PairingRole::Controller, t0);
    c.handle_aborted(t0, "releasedByOther");
    assert_eq!(c.state(), State::ReadyToConnect);
    assert_eq!(c.aborted(), Some("releasedByOther"));
    assert_eq!(
        events(&mut c),
        vec![
            PairingEvent::StateChanged(State::ReadyToConnect),
            PairingEvent::MetastatesChanged(M_ACTIVE),
        ]
    );
    c.retry(t0);
    assert_eq!(c.state(), State::Connecting);
    c.handle_aborted(t0, "notAuthorized");
    c.set_access_token(t0, Some("other".into()));
    assert_eq!(c.state(), State::Connecting, "a new token tries again");
    c.handle_aborted(t0, "clientNotAlive");
    c.set_active(t0, false);
    c.set_active(t0, true);
    assert_eq!(
        c.state(),
        State::Connecting,
        "a passive/active cycle tries again"
    );
    assert_eq!(c.aborted(), None);
}

#[test]
fn going_passive_from_any_active_state_is_passive() {
    let t0 = base();
    for setup in 0..4 {
        let mut c = CrSocket::new(config(PairingRole::Controller));
        c.set_active(t0, true);
        match setup {
            0 => c.set_access_token(t0, None),
            1 => {}
            2 => c.handle_connected(t0, ME),
            _ => {
                c.handle_connected(t0, ME);
                c.assign_partner(t0, Some(A.into()));
            }
        }
        events(&mut c);
        c.set_active(t0, false);
        assert_eq!(c.state(), State::Passive, "setup {setup}");
        assert_eq!(
            events(&mut c)
                .into_iter()
                .filter(|e| matches!(e, PairingEvent::MetastatesChanged(_)))
                .collect::<Vec<_>>(),
            vec![PairingEvent::MetastatesChanged(Metastates::default())]
        );
        c.set_active(t0, true);
        let back = if setup == 0 {
            State::ReadyToConnect
        } else {
            State::Connecting
        };
        assert_eq!(c.state(), back, "passive dropped the connection");
    }
}

// ---- readyToPair, searching, interacting; pings ------------------------------------------

#[test]
fn a_controller_assigned_a_partner_searches_and_pings_at_once_then_every_5s() {
    let t0 = base();
    let mut c = connected(PairingRole::Controller, t0);
    c.assign_partner(t0, Some(A.into()));
    assert_eq!(
        events(&mut c),
        vec![
            PairingEvent::PartnerChanged(Some(A.into())),
            PairingEvent::StateChanged(State::Searching),
            PairingEvent::MetastatesChanged(M_PAIRED),
        ]
    );
    assert_eq!(sent(&mut c), vec![out(A, PING, "")]);
    assert_eq!(c.poll_timeout(), Some(t0 + s(5)));
    let log = run_until(&mut c, t0, t0 + s(21));
    assert_eq!(pings(&log), vec![s(5), s(10), s(15), s(20)]);
    assert_eq!(c.state(), State::Searching);
}

#[test]
fn a_partner_event_moves_searching_to_interacting_with_a_ping_then_every_10s() {
    let t0 = base();
    let mut c = connected(PairingRole::Controller, t0);
    c.assign_partner(t0, Some(A.into()));
    sent(&mut c);
    events(&mut c);
    c.handle_event(t0 + s(2), ev(A, PING, ""));
    assert_eq!(c.state(), State::Interacting);
    // Paired both times: the metastates do not change.
    assert_eq!(
        events(&mut c),
        vec![PairingEvent::StateChanged(State::Interacting)]
    );
    assert_eq!(sent(&mut c), vec![out(A, PING, "")]);
    // Keep the partner alive with an event every 20 s; the pings stay 10 s apart.
    let mut log = run_until(&mut c, t0, t0 + s(20));
    c.handle_event(t0 + s(20), ev(A, "tap", ""));
    log.extend(run_until(&mut c, t0, t0 + s(33)));
    assert_eq!(pings(&log), vec![s(12), s(22), s(32)]);
    assert_eq!(c.state(), State::Interacting);
}

#[test]
fn the_partner_is_active_for_25s_after_its_last_event() {
    let t0 = base();
    let mut c = interacting_controller(t0);
    c.handle_timeout(t0 + s(25) - ms(1));
    assert_eq!(c.state(), State::Interacting);
    // An event at 10 s carries it to 35 s.
    c.handle_event(t0 + s(10), ev(A, "tap", ""));
    run_until(&mut c, t0, t0 + s(35) - ms(1));
    assert_eq!(c.state(), State::Interacting);
    assert_eq!(c.poll_timeout(), Some(t0 + s(35)), "the partner's deadline");
    events(&mut c);
    c.handle_timeout(t0 + s(35));
    assert_eq!(c.state(), State::Searching);
    assert_eq!(
        events(&mut c),
        vec![PairingEvent::StateChanged(State::Searching)]
    );
}

#[test]
fn interacting_to_searching_restarts_the_5s_ping_sequence_without_a_ping_at_once() {
    let t0 = base();
    let mut c = interacting_controller(t0);
    let log = run_until(&mut c, t0, t0 + s(25));
    assert_eq!(c.state(), State::Searching);
    assert_eq!(pings(&log), vec![s(10), s(20)], "none at 25 s");
    let log = run_until(&mut c, t0, t0 + s(36));
    assert_eq!(pings(&log), vec![s(30), s(35)]);
}

#[test]
fn a_responder_auto_pairs_with_the_first_controller_that_pings_it() {
    let t0 = base();
    let mut r = connected(PairingRole::Responder, t0);
    r.handle_event(t0, ev(A, PING, ""));
    assert_eq!(r.partner(), Some(A));
    assert_eq!(
        events(&mut r),
        vec![
            PairingEvent::PartnerChanged(Some(A.into())),
            PairingEvent::StateChanged(State::Interacting),
            PairingEvent::MetastatesChanged(M_PAIRED),
        ]
    );
    assert_eq!(sent(&mut r), vec![out(A, PING, "")], "a ping back at once");
    let log = run_until(&mut r, t0, t0 + s(11));
    assert_eq!(
        pings(&log),
        vec![s(10)],
        "a responder pings while paired too"
    );
}

#[test]
fn a_paired_responder_rejects_a_second_controller_with_assigned_to_other_at_once() {
    let t0 = base();
    let mut r = connected(PairingRole::Responder, t0);
    r.handle_event(t0, ev(A, PING, ""));
    sent(&mut r);
    events(&mut r);
    // Within the pacing interval of its own ping: a reject skips the queue.
    r.handle_event(t0 + ms(100), ev(B, PING, ""));
    assert_eq!(sent(&mut r), vec![out(B, REJECT, ASSIGNED_TO_OTHER)]);
    assert_eq!(r.partner(), Some(A));
    assert_eq!(r.state(), State::Interacting);
    assert!(events(&mut r).is_empty(), "nothing from B reaches the app");
    // Searching too.
    r.handle_timeout(t0 + s(25));
    assert_eq!(r.state(), State::Searching);
    sent(&mut r);
    r.handle_event(t0 + s(26), ev(B, PING, ""));
    assert_eq!(sent(&mut r), vec![out(B, REJECT, ASSIGNED_TO_OTHER)]);
}

#[test]
fn a_responder_assigned_by_the_app_rejects_other_pingers() {
    let t0 = base();
    let mut r = connected(PairingRole::Responder, t0);
    r.assign_partner(t0, Some(A.into()));
    assert_eq!(r.state(), State::Searching);
    assert_eq!(sent(&mut r), vec![out(A, PING, "")]);
    r.handle_event(t0 + s(1), ev(B, PING, ""));
    assert_eq!(sent(&mut r), vec![out(B, REJECT, ASSIGNED_TO_OTHER)]);
    r.handle_event(t0 + s(1), ev(A, PING, ""));
    assert_eq!(r.state(), State::Interacting);
}

#[test]
fn a_controller_answers_a_ping_from_a_non_partner_with_not_paired() {
    let t0 = base();
    let mut c = connected(PairingRole::Controller, t0);
    c.handle_event(t0, ev(B, PING, ""));
    assert_eq!(sent(&mut c), vec![out(B, REJECT, NOT_PAIRED)]);
    assert_eq!(c.partner(), None, "a controller never auto-pairs");
    assert_eq!(c.state(), State::ReadyToPair);
    c.assign_partner(t0, Some(A.into()));
    sent(&mut c);
    c.handle_event(t0, ev(B, PING, ""));
    assert_eq!(sent(&mut c), vec![out(B, REJECT, NOT_PAIRED)]);
    assert_eq!(
        c.state(),
        State::Searching,
        "B's ping is no partner activity"
    );
}

#[test]
fn not_paired_from_the_controller_flags_a_pinging_responder() {
    let t0 = base();
    let mut r = connected(PairingRole::Responder, t0);
    r.assign_partner(t0, Some(A.into()));
    sent(&mut r);
    events(&mut r);
    r.handle_event(t0, ev(A, REJECT, NOT_PAIRED));
    assert_eq!(r.rejected(), Some(NOT_PAIRED));
    assert_eq!(r.state(), State::ReadyToPair);
    assert_eq!(
        events(&mut r),
        vec![
            PairingEvent::Rejected {
                partner: A.into(),
                sub_type: NOT_PAIRED.into()
            },
            PairingEvent::StateChanged(State::ReadyToPair),
            PairingEvent::MetastatesChanged(M_CONNECTED),
        ]
    );
    assert!(sent(&mut r).is_empty(), "a responder sends no unassign");
    // Reading: a rejected partner no longer pairs it; the next controller's ping does.
    r.handle_event(t0 + s(1), ev(B, PING, ""));
    assert_eq!(r.partner(), Some(B));
    assert_eq!(r.rejected(), None);
    assert_eq!(r.state(), State::Interacting);
}

#[test]
fn a_reject_flags_the_partner_and_stops_the_pings_until_reassigned() {
    for sub_type in [ASSIGNED_TO_OTHER, APP_ID_MISMATCH, INVALID_PARTNER_ROLE] {
        let t0 = base();
        let mut c = connected(PairingRole::Controller, t0);
        c.assign_partner(t0, Some(A.into()));
        sent(&mut c);
        events(&mut c);
        // The server's rejects carry the pinged id (the partner) as sender (P22).
        c.handle_event(t0 + s(1), ev(A, REJECT, sub_type));
        assert_eq!(c.state(), State::ReadyToPair, "{sub_type}");
        assert_eq!(c.partner(), Some(A), "flagged, not unassigned");
        assert_eq!(
            events(&mut c)[0],
            PairingEvent::Rejected {
                partner: A.into(),
                sub_type: sub_type.into()
            }
        );
        assert!(sent(&mut c).is_empty(), "no unassign after a reject");
        assert_eq!(c.poll_timeout(), None, "the ping sequence stopped");
        assert!(run_until(&mut c, t0, t0 + s(60)).is_empty());
        // Reassigning the same id removes the flag.
        c.assign_partner(t0 + s(60), Some(A.into()));
        assert_eq!(c.state(), State::Searching);
        assert_eq!(sent(&mut c), vec![out(A, PING, "")]);
    }
}

#[test]
fn assigning_another_partner_removes_the_reject_flag() {
    let t0 = base();
    let mut c = connected(PairingRole::Controller, t0);
    c.assign_partner(t0, Some(A.into()));
    c.handle_event(t0, ev(A, REJECT, ASSIGNED_TO_OTHER));
    sent(&mut c);
    c.assign_partner(t0 + s(2), Some(B.into()));
    assert_eq!(c.rejected(), None);
    assert_eq!(c.state(), State::Searching);
    assert_eq!(sent(&mut c), vec![out(B, PING, "")]);
}

#[test]
fn a_ping_from_the_rejected_partner_reassigns_it() {
    let t0 = base();
    let mut c = connected(PairingRole::Controller, t0);
    c.assign_partner(t0, Some(A.into()));
    c.handle_event(t0, ev(A, REJECT, ASSIGNED_TO_OTHER));
    sent(&mut c);
    c.handle_event(t0 + s(3), ev(A, PING, ""));
    assert_eq!(c.rejected(), None);
    assert_eq!(c.state(), State::Interacting);
    assert_eq!(sent(&mut c), vec![out(A, PING, "")]);
}

#[test]
fn a_reject_from_a_non_partner_is_ignored() {
    let t0 = base();
    let mut c = interacting_controller(t0);
    c.handle_event(t0, ev(B, REJECT, ASSIGNED_TO_OTHER));
    assert_eq!(c.rejected(), None);
    assert_eq!(c.state(), State::Interacting);
    assert!(events(&mut c).is_empty());
    assert!(sent(&mut c).is_empty(), "only pings are answered");
}

#[test]
fn going_passive_clears_the_reject_flag() {
    let t0 = base();
    let mut c = connected(PairingRole::Controller, t0);
    c.assign_partner(t0, Some(A.into()));
    c.handle_event(t0, ev(A, REJECT, ASSIGNED_TO_OTHER));
    c.set_active(t0, false);
    c.set_active(t0, true);
    c.handle_connected(t0, ME);
    assert_eq!(c.state(), State::Searching);
}

// ---- inactive, unassign ------------------------------------------------------------------

#[test]
fn inactive_from_the_partner_drops_interacting_to_searching_at_once() {
    let t0 = base();
    let mut c = interacting_controller(t0);
    c.handle_event(t0 + s(1), ev(A, INACTIVE, ""));
    assert_eq!(c.state(), State::Searching, "not 25 s later");
    assert_eq!(
        events(&mut c),
        vec![PairingEvent::StateChanged(State::Searching)]
    );
    let log = run_until(&mut c, t0, t0 + s(7));
    assert_eq!(pings(&log), vec![s(6)], "searching's 5 s from the drop");
    // The partner's next event brings it back.
    c.handle_event(t0 + s(8), ev(A, PING, ""));
    assert_eq!(c.state(), State::Interacting);
}

#[test]
fn going_passive_sends_inactive_to_the_partner() {
    let t0 = base();
    let mut c = interacting_controller(t0);
    c.set_active(t0 + s(1), false);
    assert_eq!(c.state(), State::Passive);
    assert_eq!(sent(&mut c), vec![out(A, INACTIVE, "")]);
    assert_eq!(
        events(&mut c),
        vec![
            PairingEvent::StateChanged(State::Passive),
            PairingEvent::MetastatesChanged(Metastates::default()),
        ]
    );
    assert_eq!(c.poll_timeout(), None);
    assert_eq!(c.partner(), Some(A), "the assignment is kept");
}

#[test]
fn a_controller_going_passive_moves_the_responder_to_searching_at_once() {
    let t0 = base();
    let mut c = connected(PairingRole::Controller, t0);
    let mut r = CrSocket::new(PairingConfig {
        client_id: Some(A.into()),
        ..config(PairingRole::Responder)
    });
    r.set_active(t0, true);
    r.handle_connected(t0, A);
    c.assign_partner(t0, Some(A.into()));
    relay(&mut c, ME, &mut r, A, t0);
    assert_eq!(c.state(), State::Interacting);
    assert_eq!(r.state(), State::Interacting);
    assert_eq!(r.partner(), Some(ME));
    c.set_active(t0 + s(3), false);
    relay(&mut c, ME, &mut r, A, t0 + s(3));
    assert_eq!(r.state(), State::Searching);
}

/// Delivers what each side sends to the other until both are quiet (a lossless relay).
fn relay(x: &mut CrSocket, x_id: &str, y: &mut CrSocket, y_id: &str, now: Instant) {
    loop {
        let mut quiet = true;
        for e in sent(x) {
            quiet = false;
            if e.recipient == y_id {
                y.handle_event(now, incoming(x_id, e));
            }
        }
        for e in sent(y) {
            quiet = false;
            if e.recipient == x_id {
                x.handle_event(now, incoming(y_id, e));
            }
        }
        if quiet {
            return;
        }
    }
}

fn incoming(sender: &str, e: OutgoingEvent) -> IncomingEvent {
    IncomingEvent {
        sender: sender.into(),
        event_type: e.event_type,
        sub_type: e.sub_type,
        params: e.params,
    }
}

#[test]
fn unassigning_sends_unassign_not_paired_and_is_ready_to_pair() {
    let t0 = base();
    let mut c = interacting_controller(t0);
    c.assign_partner(t0 + s(1), None);
    assert_eq!(c.state(), State::ReadyToPair);
    assert_eq!(sent(&mut c), vec![out(A, UNASSIGN, NOT_PAIRED)]);
    assert_eq!(
        events(&mut c),
        vec![
            PairingEvent::PartnerChanged(None),
            PairingEvent::StateChanged(State::ReadyToPair),
            PairingEvent::MetastatesChanged(M_CONNECTED),
        ]
    );
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn a_responder_drops_its_partner_on_the_partners_unassign() {
    let t0 = base();
    let mut r = connected(PairingRole::Responder, t0);
    r.handle_event(t0, ev(A, PING, ""));
    sent(&mut r);
    events(&mut r);
    r.handle_event(t0 + s(1), ev(B, UNASSIGN, NOT_PAIRED));
    assert_eq!(r.partner(), Some(A), "a stranger's unassign is ignored");
    r.handle_event(t0 + s(1), ev(A, UNASSIGN, NOT_PAIRED));
    assert_eq!(r.partner(), None);
    assert_eq!(r.state(), State::ReadyToPair);
    assert_eq!(
        events(&mut r),
        vec![
            PairingEvent::PartnerChanged(None),
            PairingEvent::StateChanged(State::ReadyToPair),
            PairingEvent::MetastatesChanged(M_CONNECTED),
        ]
    );
    assert!(sent(&mut r).is_empty());
    // Free again: the next controller that pings becomes the partner.
    r.handle_event(t0 + s(2), ev(B, PING, ""));
    assert_eq!(r.partner(), Some(B));
}

#[test]
fn replacing_the_partner_unassigns_the_former_one_then_pings_the_new_one() {
    let t0 = base();
    let mut c = interacting_controller(t0);
    c.assign_partner(t0 + s(2), Some(B.into()));
    assert_eq!(
        states(&mut c),
        vec![State::ReadyToPair, State::Searching],
        "through readyToPair"
    );
    assert_eq!(
        sent(&mut c),
        vec![out(A, UNASSIGN, NOT_PAIRED)],
        "the ping waits for the pacing after the unassign"
    );
    c.handle_timeout(t0 + s(3));
    assert_eq!(sent(&mut c), vec![out(B, PING, "")]);
    c.handle_event(t0 + s(3), ev(A, PING, ""));
    assert_eq!(sent(&mut c), vec![out(A, REJECT, NOT_PAIRED)]);
}

// ---- disconnection and reconnection ------------------------------------------------------

#[test]
fn a_drop_while_paired_is_connecting_and_sends_inactive() {
    let t0 = base();
    let mut c = interacting_controller(t0);
    c.handle_disconnected(t0 + s(1));
    assert_eq!(c.state(), State::Connecting);
    assert_eq!(sent(&mut c), vec![out(A, INACTIVE, "")]);
    assert_eq!(
        events(&mut c),
        vec![
            PairingEvent::StateChanged(State::Connecting),
            PairingEvent::MetastatesChanged(M_ACTIVE),
        ]
    );
    assert_eq!(c.poll_timeout(), None, "no pings while not connected");
    c.handle_event(t0 + s(2), ev(A, PING, ""));
    assert_eq!(
        c.state(),
        State::Connecting,
        "events are ignored while not connected"
    );
}

#[test]
fn reconnecting_within_the_alive_time_is_interacting_after_it_searching() {
    let t0 = base();
    let mut c = interacting_controller(t0);
    c.handle_disconnected(t0 + s(1));
    c.handle_connected(t0 + s(3), ME);
    assert_eq!(c.state(), State::Interacting);
    assert_eq!(
        events(&mut c),
        vec![
            PairingEvent::StateChanged(State::Connecting),
            PairingEvent::MetastatesChanged(M_ACTIVE),
            PairingEvent::StateChanged(State::Interacting),
            PairingEvent::MetastatesChanged(M_PAIRED),
        ]
    );
    let after: Vec<_> = sent(&mut c);
    assert_eq!(
        after.last(),
        Some(&out(A, PING, "")),
        "a ping on re-pairing"
    );

    let mut c = interacting_controller(t0);
    c.handle_disconnected(t0 + s(1));
    c.handle_connected(t0 + s(30), ME);
    assert_eq!(c.state(), State::Searching);
    c.handle_disconnected(t0 + s(31));
    c.handle_disconnected(t0 + s(31));
    assert_eq!(c.state(), State::Connecting);
}

#[test]
fn a_responder_reconnecting_keeps_its_auto_assigned_partner() {
    let t0 = base();
    let mut r = connected(PairingRole::Responder, t0);
    r.handle_event(t0, ev(A, PING, ""));
    r.handle_disconnected(t0 + s(1));
    r.handle_connected(t0 + s(40), ME);
    assert_eq!(r.partner(), Some(A));
    assert_eq!(r.state(), State::Searching);
    sent(&mut r);
    r.handle_event(t0 + s(41), ev(B, PING, ""));
    assert_eq!(sent(&mut r), vec![out(B, REJECT, ASSIGNED_TO_OTHER)]);
}

// ---- application events ------------------------------------------------------------------

#[test]
fn application_events_reach_the_app_only_from_the_current_partner() {
    let t0 = base();
    let mut c = interacting_controller(t0);
    let mut tap = ev(A, "tap", "left");
    tap.params = vec!["1".into(), "2".into()];
    c.handle_event(t0, tap.clone());
    c.handle_event(t0, ev(B, "tap", "right"));
    c.handle_event(t0, ev(A, PING, ""));
    assert_eq!(events(&mut c), vec![PairingEvent::AppEvent(tap)]);
}

#[test]
fn an_application_event_is_partner_activity() {
    let t0 = base();
    let mut c = connected(PairingRole::Controller, t0);
    c.assign_partner(t0, Some(A.into()));
    c.handle_event(t0 + s(1), ev(A, "hello", ""));
    assert_eq!(c.state(), State::Interacting);
}

#[test]
fn sending_is_refused_unless_paired_and_valid() {
    let t0 = base();
    let mut c = connected(PairingRole::Controller, t0);
    assert_eq!(
        c.send_app_event(t0, "tap", "", vec![]),
        Err(SendError::NotPaired(State::ReadyToPair))
    );
    c.assign_partner(t0, Some(A.into()));
    assert_eq!(
        c.send_app_event(t0, PING, "", vec![]),
        Err(SendError::Reserved(PING.into()))
    );
    for (t, sub, params) in [
        ("", "", vec![]),
        ("ta-p", "", vec![]),
        ("tap", "a b", vec![]),
        ("tap", "", vec!["a,b".to_string()]),
    ] {
        assert!(
            matches!(
                c.send_app_event(t0, t, sub, params),
                Err(SendError::Invalid(_))
            ),
            "{t:?} {sub:?}"
        );
    }
    c.handle_event(t0, ev(A, REJECT, ASSIGNED_TO_OTHER));
    assert!(matches!(
        c.send_app_event(t0, "tap", "", vec![]),
        Err(SendError::NotPaired(State::ReadyToPair))
    ));
}

#[test]
fn queued_events_go_out_one_per_second_and_delay_the_pings() {
    let t0 = base();
    let mut c = interacting_controller(t0);
    // The interacting ping went out at t0: these wait for the pacing.
    for n in 0..3 {
        c.send_app_event(t0, "tap", "", vec![n.to_string()])
            .unwrap();
    }
    assert!(sent(&mut c).is_empty());
    assert_eq!(c.poll_timeout(), Some(t0 + s(1)));
    let log = run_until(&mut c, t0, t0 + s(12));
    let times: Vec<_> = log
        .iter()
        .map(|(t, e)| (*t, e.event_type.as_str()))
        .collect();
    assert_eq!(
        times,
        vec![(s(1), "tap"), (s(2), "tap"), (s(3), "tap"), (s(10), "ping")]
    );
    assert_eq!(log[2].1.params, vec!["2".to_string()], "in order");
    // A send restarts the ping sequence: the next ping is 10 s after it.
    c.send_app_event(t0 + s(15), "tap", "", vec![]).unwrap();
    assert_eq!(sent(&mut c).len(), 1, "a free slot: at once");
    let log = run_until(&mut c, t0, t0 + s(26));
    assert_eq!(pings(&log), vec![s(25)]);
}

#[test]
fn a_reject_skips_the_queue_but_counts_as_the_last_send() {
    let t0 = base();
    let mut c = interacting_controller(t0);
    c.handle_timeout(t0 + s(5));
    c.handle_event(t0 + s(5), ev(B, PING, ""));
    c.send_app_event(t0 + s(5), "tap", "", vec![]).unwrap();
    assert_eq!(sent(&mut c), vec![out(B, REJECT, NOT_PAIRED)]);
    assert_eq!(c.poll_timeout(), Some(t0 + s(6)));
    c.handle_timeout(t0 + s(6));
    assert_eq!(sent(&mut c)[0].event_type, "tap");
}

#[test]
fn leaving_paired_drops_what_was_queued_for_the_partner() {
    let t0 = base();
    let mut c = interacting_controller(t0);
    c.send_app_event(t0, "tap", "", vec![]).unwrap();
    c.assign_partner(t0, None);
    assert_eq!(sent(&mut c), vec![out(A, UNASSIGN, NOT_PAIRED)]);
    assert!(run_until(&mut c, t0, t0 + s(30)).is_empty());
}

#[test]
fn every_timer_is_configurable() {
    let t0 = base();
    let mut c = CrSocket::new(PairingConfig {
        partner_alive: s(3),
        search_ping: s(2),
        interact_ping: s(4),
        pacing: ms(100),
        ..config(PairingRole::Controller)
    });
    c.set_active(t0, true);
    c.handle_connected(t0, ME);
    c.assign_partner(t0, Some(A.into()));
    sent(&mut c);
    let log = run_until(&mut c, t0, t0 + s(5));
    assert_eq!(pings(&log), vec![s(2), s(4)]);
    c.handle_event(t0 + s(5), ev(A, PING, ""));
    assert_eq!(
        sent(&mut c),
        vec![out(A, PING, "")],
        "100 ms after the last: at once"
    );
    assert_eq!(c.state(), State::Interacting);
    c.send_app_event(t0 + s(5), "a", "", vec![]).unwrap();
    c.send_app_event(t0 + s(5), "b", "", vec![]).unwrap();
    let log = run_until(&mut c, t0, t0 + s(8));
    let times: Vec<_> = log
        .iter()
        .map(|(t, e)| (*t, e.event_type.as_str()))
        .collect();
    // The interacting ping at 5 s, then a at 5.1, b at 5.2; alive 3 s: searching at 8 s.
    assert_eq!(
        times,
        vec![(s(5) + ms(100), "a"), (s(5) + ms(200), "b")],
        "{log:?}"
    );
    assert_eq!(c.state(), State::Searching);
}

#[test]
fn a_controller_and_a_responder_pair_and_exchange_events() {
    let t0 = base();
    let mut c = connected(PairingRole::Controller, t0);
    let mut r = CrSocket::new(PairingConfig {
        client_id: Some(A.into()),
        ..config(PairingRole::Responder)
    });
    r.set_active(t0, true);
    r.handle_connected(t0, A);
    events(&mut r);
    c.assign_partner(t0, Some(A.into()));
    relay(&mut c, ME, &mut r, A, t0);
    events(&mut c);
    events(&mut r);
    r.send_app_event(t0 + s(2), "score", "", vec!["7".into()])
        .unwrap();
    relay(&mut c, ME, &mut r, A, t0 + s(2));
    assert_eq!(
        events(&mut c),
        vec![PairingEvent::AppEvent(IncomingEvent {
            sender: A.into(),
            event_type: "score".into(),
            sub_type: "".into(),
            params: vec!["7".into()],
        })]
    );
    // A second controller is turned away.
    let mut c2 = CrSocket::new(PairingConfig {
        client_id: Some(B.into()),
        ..config(PairingRole::Controller)
    });
    c2.set_active(t0, true);
    c2.handle_connected(t0, B);
    c2.assign_partner(t0 + s(3), Some(A.into()));
    relay(&mut c2, B, &mut r, A, t0 + s(3));
    assert_eq!(c2.rejected(), Some(ASSIGNED_TO_OTHER));
    assert_eq!(c2.state(), State::ReadyToPair);
    assert_eq!(r.partner(), Some(ME));
}

#[test]
fn the_pacing_queue_is_bounded() {
    let t0 = base();
    let mut c = CrSocket::new(PairingConfig {
        queue_limit: 2,
        ..config(PairingRole::Controller)
    });
    c.set_active(t0, true);
    c.handle_connected(t0, ME);
    c.assign_partner(t0, Some(A.into()));
    assert_eq!(sent(&mut c), vec![out(A, PING, "")]);
    c.send_app_event(t0, "a", "", vec![]).unwrap();
    c.send_app_event(t0, "b", "", vec![]).unwrap();
    assert_eq!(
        c.send_app_event(t0, "c", "", vec![]),
        Err(SendError::QueueFull)
    );
    assert_eq!(c.queued(), 2);
    c.handle_timeout(t0 + s(1));
    assert_eq!(sent(&mut c)[0].event_type, "a");
    c.send_app_event(t0 + s(1), "c", "", vec![]).unwrap();
}

#[test]
fn an_abort_while_paired_sends_inactive_and_is_ready_to_connect() {
    let t0 = base();
    let mut c = interacting_controller(t0);
    c.handle_aborted(t0 + s(1), "releasedByOther");
    assert_eq!(c.state(), State::ReadyToConnect);
    assert_eq!(sent(&mut c), vec![out(A, INACTIVE, "")]);
    assert_eq!(
        events(&mut c),
        vec![
            PairingEvent::StateChanged(State::ReadyToConnect),
            PairingEvent::MetastatesChanged(M_ACTIVE),
        ]
    );
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn searching_to_passive_sends_inactive_too() {
    let t0 = base();
    let mut c = connected(PairingRole::Controller, t0);
    c.assign_partner(t0, Some(A.into()));
    sent(&mut c);
    c.set_active(t0 + s(2), false);
    assert_eq!(sent(&mut c), vec![out(A, INACTIVE, "")]);
    // Not paired: going passive again or from readyToPair sends nothing.
    let mut c = connected(PairingRole::Controller, t0);
    c.set_active(t0, false);
    assert!(sent(&mut c).is_empty());
}
