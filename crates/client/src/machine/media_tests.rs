//! The `media_token` request (issue 13 R2, R4) on a virtual clock: sent as a numbered command
//! like `member_list`, queued while a resumable connection is away, and its reply delivered as
//! a typed [`Event::MediaToken`], or `media_unavailable` as a typed [`Event::Error`] that leaves
//! the connection as it was.

use super::resume_tests::{drop_and_reopen, emitted, rconfig, rconnected_with, seqs};
use super::tests::{decoded, Rig};
use super::*;
use crate::config::ClientConfig;
use loudsync_protocol::Seq;
use serde_json::json;

fn plain_connected() -> Rig {
    let mut c = ClientConfig::member("ws://x/", "s1", "dev-1", "Phone");
    c.jitter_seed = 1;
    c.resume = false;
    let mut r = Rig::new(c);
    r.m.start(r.now);
    r.drain();
    r.join("c1");
    r.drain();
    r
}

fn grant_frame(role: &str) -> serde_json::Value {
    json!({"type":"media_token","token":"T".repeat(43),"role":role,"streamId":"s1",
        "port":40001,"expiresAt":1_800_000_030_000u64,"timestamp":1})
}

fn grant(role: MediaRole) -> MediaGrant {
    MediaGrant {
        token: "T".repeat(43),
        role,
        stream_id: "s1".into(),
        port: 40001,
        expires_at: 1_800_000_030_000,
    }
}

#[test]
fn the_request_is_the_protocols_field_less_media_token_frame() {
    let mut r = plain_connected();
    r.m.request_media_token(r.now).unwrap();
    let actions = r.drain();
    assert_eq!(decoded(&actions), [ClientMessage::MediaToken]);
    let Some(Action::Send(text)) = actions.first() else {
        panic!("one frame sent: {actions:?}");
    };
    let frame: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(frame["type"], "media_token");
    assert_eq!(
        frame.as_object().unwrap().len(),
        2,
        "type and timestamp only: {frame}"
    );
}

#[test]
fn the_request_needs_a_connection() {
    let mut r = Rig::new(ClientConfig::member("ws://x/", "s1", "dev-1", "Phone"));
    assert_eq!(
        r.m.request_media_token(r.now),
        Err(CommandError::NotConnected)
    );
    r.m.start(r.now);
    assert_eq!(
        r.m.request_media_token(r.now),
        Err(CommandError::NotConnected),
        "not while connecting"
    );
}

#[test]
fn the_reply_is_a_typed_media_token_event_for_either_role() {
    let mut r = plain_connected();
    let generation = r.m.generation();
    for (role, typed) in [
        ("subscribe", MediaRole::Subscribe),
        ("publish", MediaRole::Publish),
    ] {
        r.text(grant_frame(role));
        assert_eq!(r.events(), [Event::MediaToken(grant(typed))]);
    }
    assert_eq!(r.m.state(), ConnectionState::Connected);
    assert_eq!(
        r.m.generation(),
        generation,
        "a grant changes nothing the snapshot shows"
    );
}

#[test]
fn media_unavailable_is_a_typed_error_and_the_connection_stays() {
    let mut r = plain_connected();
    r.m.request_media_token(r.now).unwrap();
    r.drain();
    r.text(
        json!({"type":"error","timestamp":1,"code":"media_unavailable",
        "message":"media_token: this server has no media relay (start it with --media-listen)"}),
    );
    let events = r.events();
    let [Event::Error(error)] = events.as_slice() else {
        panic!("one error event: {events:?}");
    };
    assert_eq!(error.code, ErrorCode::MediaUnavailable);
    assert_eq!(error.code.known(), Some(ErrorCode::MediaUnavailable));
    assert!(!error.is_access_refusal());
    assert_eq!(
        error.message,
        "media_token: this server has no media relay (start it with --media-listen)"
    );
    assert_eq!(r.m.state(), ConnectionState::Connected);
    assert!(
        r.m.request_media_token(r.now).is_ok(),
        "still taking commands"
    );
}

#[test]
fn on_a_resumable_connection_the_request_is_numbered_and_queued_while_away() {
    let (mut r, _) = rconnected_with(rconfig());
    r.m.request_member_list(r.now).unwrap();
    r.m.request_media_token(r.now).unwrap();
    assert_eq!(
        seqs(&r.drain()),
        [
            (Seq::Valid(1), "member_list".to_string()),
            (Seq::Valid(2), "media_token".to_string())
        ]
    );
    // Acknowledged, then the socket drops: a request given while away waits for the resume.
    r.text(json!({"type":"ack","timestamp":1,"seq":2}));
    r.drain();
    drop_and_reopen(&mut r);
    r.m.request_media_token(r.now).unwrap();
    assert!(seqs(&r.drain()).is_empty(), "nothing sent before `resumed`");
    r.text(json!({"type":"resumed","timestamp":1,"lastSeq":2,"replayed":0}));
    assert_eq!(
        seqs(&r.drain()),
        [(Seq::Valid(3), "media_token".to_string())]
    );
    // Its reply, numbered by the server, is the typed event.
    let mut reply = grant_frame("subscribe");
    reply["seq"] = json!(2);
    r.text(reply);
    let events: Vec<Event> = emitted(&r.drain())
        .into_iter()
        .filter(|e| matches!(e, Event::MediaToken(_)))
        .collect();
    assert_eq!(events, [Event::MediaToken(grant(MediaRole::Subscribe))]);
}

#[test]
fn a_grant_gives_the_start_values_and_never_shows_its_token() {
    let g = grant(MediaRole::Publish);
    assert_eq!(
        g.media_token().unwrap().as_bytes(),
        "T".repeat(43).as_bytes()
    );
    assert_eq!(g.stream().unwrap().as_str(), "s1");
    let shown = format!("{:?}", Event::MediaToken(g.clone()));
    assert!(!shown.contains("TTTT"), "{shown}");
    assert!(
        shown.contains("<redacted>") && shown.contains("40001"),
        "{shown}"
    );
    let unusable = MediaGrant {
        token: String::new(),
        stream_id: "has space".into(),
        ..g
    };
    assert_eq!(unusable.media_token(), None);
    assert_eq!(unusable.stream(), None);
}
