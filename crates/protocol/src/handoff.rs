//! The wire of session state and handoff (seed 000, "Multi-Client Sync and Handoff"): the
//! values its frames carry, the decoding of its client frames, and session codes as people
//! read them.
//!
//! Every session holds a JSON object, its **state**, with a `version` (+1 per accepted change)
//! and a `term` (+1 per change of host). Only the host sets it, whole or as an RFC 7396 merge
//! patch ([`StateChange`]); every member gets the whole result in a `state` frame. Control
//! moves by a **handoff**: the host asks (`handoff_request`), the server picks a candidate and
//! forwards the request with the state, the candidate accepts or declines, and everyone is told
//! the new host (`host_changed`). The frames are variants of
//! [`ClientMessage`](crate::ClientMessage) and [`ServerMessage`](crate::ServerMessage); this
//! module holds what they share, so `client.rs` and `server.rs` only list them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::client::{check_text, fields, ClientMessage, DecodeError};
use crate::types::RawJson;

/// What a `state_set` asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum StateChange {
    /// `state`: replace the whole document.
    Replace(Map<String, Value>),
    /// `patch`: an RFC 7396 JSON merge patch onto the current document (`null` removes a key).
    Patch(Map<String, Value>),
}

/// The session state as `welcome` carries it beside `clientId` and `sessionInfo` (the seed's
/// "Connect Acknowledgement with the current session state").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateSnapshot {
    /// The document, as compact JSON.
    #[serde(deserialize_with = "crate::server::raw_from_any")]
    pub state: RawJson,
    /// +1 per accepted change; 0 at creation.
    pub version: u64,
    /// +1 per change of host; 1 at creation.
    pub term: u64,
}

/// Why the host changed (`host_changed.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostChange {
    /// The candidate accepted a handoff.
    Handoff,
    /// The host was gone for good and the session passed itself on (`--on-host-loss handoff`).
    HostLost,
}

/// Why a handoff did not happen (`handoff_failed.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandoffFailure {
    /// Nobody can take over: the target is not a connected member of our dialect other than
    /// the host, or (no target) nobody declared itself ready.
    NoCandidate,
    /// The candidate declined.
    Declined,
    /// The candidate did not answer within `--handoff-timeout`.
    Timeout,
    /// The candidate left (or its socket went) while the request was pending.
    CandidateLeft,
    /// The host left (or its socket went) while the request was pending.
    HostLeft,
    /// Another handoff of the session is pending.
    Busy,
}

impl HandoffFailure {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            HandoffFailure::NoCandidate => "no_candidate",
            HandoffFailure::Declined => "declined",
            HandoffFailure::Timeout => "timeout",
            HandoffFailure::CandidateLeft => "candidate_left",
            HandoffFailure::HostLeft => "host_left",
            HandoffFailure::Busy => "busy",
        }
    }
}

/// Whether `id` has the form of a generated session code: 6 characters of `[0-9A-Z]`.
pub fn is_session_code(id: &str) -> bool {
    id.len() == 6
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

/// A session id as people read it: a generated code gets a dash in the middle (`A1B2C3` is
/// shown `A1B-2C3`, as `loudsync discover` and the LOUDSYNC app show codes); any other id is
/// shown as it is.
pub fn display_code(id: &str) -> String {
    if is_session_code(id) {
        format!("{}-{}", &id[..3], &id[3..])
    } else {
        id.to_string()
    }
}

/// What a person typed as a session code, as a client sends it: a code as people see it,
/// `A1B-2C3` (or typed `a1b-2c3`), is sent `A1B2C3`: the middle dash dropped, upper-cased.
/// Anything else (`party-1`, `kitchen`, `a1b2c3`) is sent as typed: ids are never rewritten
/// otherwise (the server finds a session whatever the case and dashes, docs/PROTOCOL.md §2).
pub fn typed_code(input: &str) -> String {
    let trimmed = input.trim();
    if let Some((a, b)) = trimmed.split_once('-') {
        let code = format!("{a}{b}").to_ascii_uppercase();
        if a.len() == 3 && is_session_code(&code) {
            return code;
        }
    }
    input.to_string()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StateSetFields {
    #[serde(default)]
    state: Option<Value>,
    #[serde(default)]
    patch: Option<Value>,
    #[serde(default)]
    base_version: Option<u64>,
    #[serde(default)]
    term: Option<u64>,
}

#[derive(Deserialize)]
struct ReadyFields {
    ready: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestFields {
    #[serde(default)]
    target_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnswerFields {
    handoff_id: String,
    #[serde(default)]
    reason: Option<String>,
}

/// Decodes the client frames of this layer; `None` for any other type.
pub(crate) fn decode_handoff(
    kind: &str,
    object: BTreeMap<String, Box<RawValue>>,
) -> Option<Result<ClientMessage, DecodeError>> {
    let decoded = match kind {
        "state_set" => fields::<StateSetFields>(kind, object).and_then(state_set),
        "handoff_ready" => fields::<ReadyFields>(kind, object)
            .map(|f| ClientMessage::HandoffReady { ready: f.ready }),
        "handoff_request" => fields::<RequestFields>(kind, object).and_then(|f| {
            check_text(kind, "targetId", f.target_id.as_deref())?;
            Ok(ClientMessage::HandoffRequest {
                target_id: f.target_id,
            })
        }),
        "handoff_accept" | "handoff_decline" => {
            fields::<AnswerFields>(kind, object).and_then(|f| {
                check_text(kind, "handoffId", Some(&f.handoff_id))?;
                check_text(kind, "reason", f.reason.as_deref())?;
                Ok(if kind == "handoff_accept" {
                    ClientMessage::HandoffAccept {
                        handoff_id: f.handoff_id,
                    }
                } else {
                    ClientMessage::HandoffDecline {
                        handoff_id: f.handoff_id,
                        reason: f.reason,
                    }
                })
            })
        }
        _ => return None,
    };
    Some(decoded)
}

fn state_set(f: StateSetFields) -> Result<ClientMessage, DecodeError> {
    let object = |field: &str, value: Value| match value {
        Value::Object(map) => Ok(map),
        other => Err(DecodeError::new(format!(
            "state_set: field `{field}` must be a JSON object, got {}",
            crate::client::json_kind(&other)
        ))),
    };
    let change = match (f.state, f.patch) {
        (Some(state), None) => StateChange::Replace(object("state", state)?),
        (None, Some(patch)) => StateChange::Patch(object("patch", patch)?),
        (Some(_), Some(_)) => {
            return Err(DecodeError::new(
                "state_set: give exactly one of `state` (the whole document) or `patch` (a merge patch), not both",
            ))
        }
        (None, None) => {
            return Err(DecodeError::new(
                "state_set: missing field `state` (the whole document) or `patch` (a merge patch)",
            ))
        }
    };
    Ok(ClientMessage::StateSet {
        change,
        base_version: f.base_version,
        term: f.term,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::decode;
    use serde_json::json;

    fn err(text: &str) -> String {
        decode(text).unwrap_err().message
    }

    #[test]
    fn state_set_takes_exactly_one_object() {
        assert_eq!(
            decode(r#"{"type":"state_set","state":{"track":3},"baseVersion":2,"term":1}"#).unwrap(),
            ClientMessage::StateSet {
                change: StateChange::Replace(json!({"track":3}).as_object().unwrap().clone()),
                base_version: Some(2),
                term: Some(1),
            }
        );
        assert_eq!(
            decode(r#"{"type":"state_set","patch":{"pos":null}}"#).unwrap(),
            ClientMessage::StateSet {
                change: StateChange::Patch(json!({"pos":null}).as_object().unwrap().clone()),
                base_version: None,
                term: None,
            }
        );
        assert!(err(r#"{"type":"state_set","state":{},"patch":{}}"#).contains("not both"));
        assert!(err(r#"{"type":"state_set"}"#).contains("missing field `state`"));
        assert_eq!(
            err(r#"{"type":"state_set","state":[1]}"#),
            "state_set: field `state` must be a JSON object, got an array"
        );
        assert_eq!(
            err(r#"{"type":"state_set","patch":null}"#),
            "state_set: missing field `state` (the whole document) or `patch` (a merge patch)"
        );
        assert!(err(r#"{"type":"state_set","state":{},"baseVersion":1.5}"#)
            .starts_with("state_set: in `baseVersion`"));
        assert!(err(r#"{"type":"state_set","state":{},"term":"1"}"#)
            .starts_with("state_set: in `term`"));
    }

    #[test]
    fn handoff_frames_decode_and_name_their_bad_fields() {
        assert_eq!(
            decode(r#"{"type":"handoff_ready","ready":true}"#).unwrap(),
            ClientMessage::HandoffReady { ready: true }
        );
        assert!(err(r#"{"type":"handoff_ready"}"#).contains("missing field `ready`"));
        assert!(err(r#"{"type":"handoff_ready","ready":"yes"}"#)
            .starts_with("handoff_ready: in `ready`"));
        assert_eq!(
            decode(r#"{"type":"handoff_request"}"#).unwrap(),
            ClientMessage::HandoffRequest { target_id: None }
        );
        assert_eq!(
            decode(r#"{"type":"handoff_request","targetId":"c_1"}"#).unwrap(),
            ClientMessage::HandoffRequest {
                target_id: Some("c_1".into())
            }
        );
        assert!(err(r#"{"type":"handoff_request","targetId":5}"#)
            .starts_with("handoff_request: in `targetId`"));
        assert_eq!(
            decode(r#"{"type":"handoff_accept","handoffId":"h1"}"#).unwrap(),
            ClientMessage::HandoffAccept {
                handoff_id: "h1".into()
            }
        );
        assert_eq!(
            decode(r#"{"type":"handoff_decline","handoffId":"h1","reason":"busy"}"#).unwrap(),
            ClientMessage::HandoffDecline {
                handoff_id: "h1".into(),
                reason: Some("busy".into())
            }
        );
        assert!(err(r#"{"type":"handoff_accept"}"#).contains("missing field `handoffId`"));
        assert!(err(
            "{\"type\":\"handoff_decline\",\"handoffId\":\"h1\",\"reason\":\"a\\u001bb\"}"
        )
        .contains("control characters"));
    }

    #[test]
    fn a_host_may_leave_the_session_id_out_and_a_client_may_not() {
        for id in ["", r#""sessionId":null,"#] {
            let host = format!(
                r#"{{"type":"join",{id}"deviceInfo":{{"id":"d","name":"n","type":"host"}}}}"#
            );
            let ClientMessage::Join(join) = decode(&host).unwrap() else {
                panic!()
            };
            assert_eq!(join.session_id, None);
            let client = host.replace(r#""type":"host""#, r#""type":"client""#);
            assert_eq!(err(&client), "join: missing field `sessionId`");
        }
        assert!(err(
            r#"{"type":"join","sessionId":"","deviceInfo":{"id":"d","name":"n","type":"host"}}"#
        )
        .contains("`sessionId` must be 1 to 64 characters"));
        let frame = crate::encode_client(
            &ClientMessage::Join(crate::Join {
                session_id: None,
                ..match ClientMessage::join("x", "d", "n", crate::DeviceType::Host) {
                    ClientMessage::Join(j) => j,
                    _ => unreachable!(),
                }
            }),
            1,
        )
        .unwrap();
        assert!(!frame.contains("sessionId"), "{frame}");
    }

    #[test]
    fn codes_are_shown_with_a_dash_and_typed_back_without() {
        assert_eq!(display_code("A1B2C3"), "A1B-2C3");
        assert_eq!(display_code("party-1"), "party-1");
        assert_eq!(display_code("a1b2c3"), "a1b2c3");
        assert_eq!(typed_code("A1B-2C3"), "A1B2C3");
        assert_eq!(typed_code("a1b-2c3"), "A1B2C3");
        assert_eq!(typed_code(" A1B-2C3 "), "A1B2C3");
        assert_eq!(typed_code("a1b2c3"), "a1b2c3", "no dash: sent as typed");
        assert_eq!(typed_code("party1"), "party1");
        assert_eq!(typed_code("party-1"), "party-1");
        assert_eq!(typed_code("kitchen"), "kitchen");
        assert!(is_session_code("0Z9A1B"));
        assert!(!is_session_code("0Z9A1"));
        assert!(!is_session_code("0Z9A1b"));
    }

    #[test]
    fn server_frames_have_the_issues_shapes_and_decode_back() {
        use crate::server::{decode_server, encode, Received, ServerMessage, SessionInfo, Stamp};
        use crate::types::DeviceRef;
        let raw = |t: &str| RawJson::from_text(t).unwrap();
        let cases = [
            (
                ServerMessage::State {
                    state: raw(r#"{"track":3}"#),
                    version: 4,
                    term: 2,
                    updated_by: "c_1".into(),
                },
                json!({"type":"state","timestamp":9,"state":{"track":3},"version":4,"term":2,"updatedBy":"c_1"}),
            ),
            (
                ServerMessage::HandoffStarted {
                    handoff_id: "h1".into(),
                    target_id: "c_2".into(),
                },
                json!({"type":"handoff_started","timestamp":9,"handoffId":"h1","targetId":"c_2"}),
            ),
            (
                ServerMessage::HandoffRequest {
                    handoff_id: "h1".into(),
                    from_id: "c_1".into(),
                    state: raw("{}"),
                    version: 0,
                    term: 1,
                    timeout_ms: 10000,
                },
                json!({"type":"handoff_request","timestamp":9,"handoffId":"h1","fromId":"c_1","state":{},"version":0,"term":1,"timeoutMs":10000}),
            ),
            (
                ServerMessage::HandoffAck {
                    handoff_id: "h1".into(),
                    host_id: "c_2".into(),
                    term: 2,
                },
                json!({"type":"handoff_ack","timestamp":9,"handoffId":"h1","hostId":"c_2","term":2}),
            ),
            (
                ServerMessage::HostChanged {
                    host_id: "c_2".into(),
                    previous_host_id: "c_1".into(),
                    term: 2,
                    reason: HostChange::Handoff,
                },
                json!({"type":"host_changed","timestamp":9,"hostId":"c_2","previousHostId":"c_1","term":2,"reason":"handoff"}),
            ),
            (
                ServerMessage::HandoffFailed {
                    reason: HandoffFailure::Busy,
                    handoff_id: None,
                    target_id: None,
                },
                json!({"type":"handoff_failed","timestamp":9,"reason":"busy"}),
            ),
            (
                ServerMessage::HandoffFailed {
                    reason: HandoffFailure::Timeout,
                    handoff_id: Some("h2".into()),
                    target_id: Some("c_3".into()),
                },
                json!({"type":"handoff_failed","timestamp":9,"reason":"timeout","handoffId":"h2","targetId":"c_3"}),
            ),
            (
                ServerMessage::Welcome {
                    client_id: "c_1".into(),
                    session_info: Box::new(SessionInfo {
                        id: "A1B2C3".into(),
                        name: "n".into(),
                        host_id: Some("c_1".into()),
                        host: None,
                    }),
                    device: DeviceRef::default(),
                    joined_at: 0,
                    resumable: false,
                    state: Some(Box::new(StateSnapshot {
                        state: raw(r#"{"a":[1]}"#),
                        version: 3,
                        term: 2,
                    })),
                },
                json!({"type":"welcome","timestamp":9,"clientId":"c_1",
                       "sessionInfo":{"id":"A1B2C3","name":"n","hostId":"c_1"},
                       "state":{"a":[1]},"version":3,"term":2}),
            ),
        ];
        for (message, expected) in cases {
            let text = encode(&message, &Stamp::Now(9));
            assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), expected);
            let (back, _) = decode_server(&text).unwrap();
            assert_eq!(back, Received::Known(message));
        }
        // A welcome from a server without this layer decodes without a state.
        let (back, _) = decode_server(
            r#"{"type":"welcome","clientId":"c","sessionInfo":{"id":"s","name":"n","hostId":null}}"#,
        )
        .unwrap();
        let Received::Known(ServerMessage::Welcome { state, .. }) = back else {
            panic!("{back:?}")
        };
        assert_eq!(state, None);
    }

    #[test]
    fn failures_and_changes_have_their_wire_names() {
        for f in [
            HandoffFailure::NoCandidate,
            HandoffFailure::Declined,
            HandoffFailure::Timeout,
            HandoffFailure::CandidateLeft,
            HandoffFailure::HostLeft,
            HandoffFailure::Busy,
        ] {
            assert_eq!(serde_json::to_value(f).unwrap(), json!(f.as_str()));
        }
        assert_eq!(
            serde_json::to_value(HostChange::HostLost).unwrap(),
            json!("host_lost")
        );
    }
}
