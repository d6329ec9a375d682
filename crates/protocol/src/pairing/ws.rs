//! The JSON frames of the pairing WebSocket, `GET /crsocket/{NAME}/ws` (decisions P9 to P13).
//!
//! Frames follow the landed conventions (lowercase `type`, camelCase fields at the top level,
//! a `timestamp` in ms on every server frame); pairing types are prefixed `cr_`. A client sends
//! `cr_identify` first, then `cr_event`s and `cr_alive`s ([`decode`] reads them into a
//! [`PairingClientFrame`]); the server answers `cr_welcome`, relays `cr_event`s, echoes
//! `cr_alive`, and ends a connection with `cr_aborted` ([`encode`] writes a
//! [`PairingServerFrame`]).
//!
//! Two kinds of failure are kept apart. A malformed frame is a [`DecodeError`], which the
//! server sends back as the landed `error` `invalid_message` and the socket stays open (P13).
//! A well-formed `cr_identify` whose credentials are wrong is not a decode error: it is read
//! leniently into its raw parts ([`IdentifyFrame`]) and [`check_identify`] names the
//! [`AbortReason`] (P8, P9), which ends the connection with `cr_aborted`.
//!
//! [`encode_client`] and [`decode_server`] are the client side (the SDK, the CLI, tests).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::event::Event;
use super::{
    check_credentials, valid_client_id, valid_event_sub_type, valid_event_type, valid_param,
    AbortReason, AppSpec, ClaimedId, Identity, Role,
};
use crate::client::{fields, json_kind, DecodeError};

/// The frame types a pairing client may send, for error messages.
pub const PAIRING_CLIENT_TYPES: &[&str] = &["cr_identify", "cr_event", "cr_alive"];

/// A frame from a pairing client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairingClientFrame {
    /// `cr_identify`: who the client is, unchecked (see [`check_identify`]).
    Identify(IdentifyFrame),
    /// `cr_event`: an event for `recipient`.
    Event {
        /// `recipientClientId`, a valid client id.
        recipient: String,
        /// The event.
        event: Event,
    },
    /// `cr_alive`: the client is still there.
    Alive,
}

/// The `clientId` of a `cr_identify` as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentifyId {
    /// Absent or `null`: assign one.
    Assign,
    /// A string (not yet checked).
    Given(String),
    /// Another JSON type (`invalidClientId`).
    Invalid,
}

/// A `cr_identify` read leniently: each credential is kept if it is a string, so the checks
/// of P8 (not the decoder) decide which is wrong and in what order. Its `Debug` hides the
/// token.
#[derive(Clone, PartialEq, Eq)]
pub struct IdentifyFrame {
    /// `clientRole` if it is a string; `None` if missing or another type (`invalidRole`).
    pub client_role: Option<String>,
    /// `clientId`.
    pub client_id: IdentifyId,
    /// `accessToken` if it is a string; `None` if missing or another type
    /// (`invalidAccessToken`).
    pub access_token: Option<String>,
}

impl std::fmt::Debug for IdentifyFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentifyFrame")
            .field("client_role", &self.client_role)
            .field("client_id", &self.client_id)
            .field(
                "access_token",
                &self.access_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Checks a `cr_identify` for `app` in P8 order: role, client id, token syntax, token
/// authorisation. (`clientIdInUse` needs the server's table of connections.)
pub fn check_identify(frame: &IdentifyFrame, app: &AppSpec) -> Result<Identity, AbortReason> {
    let client_id = match &frame.client_id {
        IdentifyId::Assign => ClaimedId::Assign,
        IdentifyId::Given(id) => ClaimedId::Given(id),
        IdentifyId::Invalid => ClaimedId::Invalid,
    };
    check_credentials(
        app,
        frame.client_role.as_deref(),
        client_id,
        frame.access_token.as_deref(),
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventFields {
    recipient_client_id: String,
    event_type: String,
    #[serde(default)]
    event_sub_type: Option<String>,
    #[serde(default)]
    event_params: Option<Vec<String>>,
    #[serde(default)]
    buffered: Option<bool>,
    #[serde(default)]
    logged: Option<bool>,
    #[serde(default)]
    interceptable: Option<bool>,
    #[serde(default)]
    send_ct: Option<i64>,
}

/// Decodes one text frame of a pairing client. Unknown extra fields are ignored (a
/// `senderClientId` or `receiveCt` a client adds included, P10); a missing or mistyped field of
/// `cr_event`, or one failing P5, is an error naming the field.
pub fn decode(text: &str) -> Result<PairingClientFrame, DecodeError> {
    let Ok(object) = serde_json::from_str::<BTreeMap<String, Box<RawValue>>>(text) else {
        return Err(match serde_json::from_str::<Value>(text) {
            Err(e) => DecodeError::new(format!("invalid JSON: {e}")),
            Ok(value) => DecodeError::new(format!(
                "a message must be a JSON object, got {}",
                json_kind(&value)
            )),
        });
    };
    let kind = match object
        .get("type")
        .map(|raw| serde_json::from_str::<Value>(raw.get()))
    {
        Some(Ok(Value::String(kind))) => kind,
        Some(Ok(other)) => {
            return Err(DecodeError::new(format!(
                "field `type` must be a string, got {}",
                json_kind(&other)
            )))
        }
        Some(Err(e)) => return Err(DecodeError::new(format!("invalid JSON: {e}"))),
        None => return Err(DecodeError::new("missing field `type`")),
    };
    match kind.as_str() {
        "cr_identify" => Ok(PairingClientFrame::Identify(identify(&object))),
        "cr_event" => event(fields(&kind, object)?),
        "cr_alive" => Ok(PairingClientFrame::Alive),
        other => Err(DecodeError::new(format!(
            "unknown message type `{other}`; expected one of: {}",
            PAIRING_CLIENT_TYPES.join(", ")
        ))),
    }
}

fn identify(object: &BTreeMap<String, Box<RawValue>>) -> IdentifyFrame {
    let value = |key: &str| {
        object
            .get(key)
            .and_then(|raw| serde_json::from_str::<Value>(raw.get()).ok())
    };
    let string = |key: &str| match value(key) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    IdentifyFrame {
        client_role: string("clientRole"),
        access_token: string("accessToken"),
        // Classified by the raw text, so a value that cannot be read (a number out of range,
        // a lone surrogate) is invalid rather than mistaken for an absent one.
        client_id: match object.get("clientId").map(|raw| raw.get().trim()) {
            None | Some("null") => IdentifyId::Assign,
            Some(_) => match value("clientId") {
                Some(Value::String(id)) => IdentifyId::Given(id),
                _ => IdentifyId::Invalid,
            },
        },
    }
}

fn event(f: EventFields) -> Result<PairingClientFrame, DecodeError> {
    if !valid_client_id(&f.recipient_client_id) {
        return Err(DecodeError::new(
            "cr_event: field `recipientClientId` must be 6 ASCII digits",
        ));
    }
    if !valid_event_type(&f.event_type) {
        return Err(DecodeError::new(
            "cr_event: field `eventType` must be one or more of A-Z, a-z, 0-9",
        ));
    }
    let sub_type = f.event_sub_type.unwrap_or_default();
    if !valid_event_sub_type(&sub_type) {
        return Err(DecodeError::new(
            "cr_event: field `eventSubType` must be A-Z, a-z, 0-9 only",
        ));
    }
    let params = f.event_params.unwrap_or_default();
    if let Some(i) = params.iter().position(|p| !valid_param(p)) {
        return Err(DecodeError::new(format!(
            "cr_event: in `eventParams[{i}]`: a parameter must not contain `,`"
        )));
    }
    let mut event = Event::new(f.event_type);
    event.sub_type = sub_type;
    event.params = params;
    event.buffered = f.buffered.unwrap_or(false);
    event.logged = f.logged.unwrap_or(false);
    event.interceptable = f.interceptable.unwrap_or(true);
    event.send_ct = f.send_ct;
    Ok(PairingClientFrame::Event {
        recipient: f.recipient_client_id,
        event,
    })
}

/// The error for a `cr_event` or `cr_alive` before `cr_welcome` (P13).
pub fn not_identified(kind: &str) -> DecodeError {
    DecodeError::new(format!(
        "{kind}: send `cr_identify` first; this connection has not identified"
    ))
}

/// The error for a second `cr_identify` on an identified connection (P13).
pub fn already_identified() -> DecodeError {
    DecodeError::new("cr_identify: this connection has already identified")
}

/// Writes a client frame (the SDK's side): every field of a `cr_event` is written, `clientId`
/// of a `cr_identify` only when given (an [`IdentifyId::Invalid`] is written as `false`, for
/// tests of the server).
pub fn encode_client(frame: &PairingClientFrame) -> String {
    let value = match frame {
        PairingClientFrame::Identify(f) => {
            let mut map = Map::new();
            map.insert("type".into(), "cr_identify".into());
            if let Some(role) = &f.client_role {
                map.insert("clientRole".into(), role.as_str().into());
            }
            if let Some(token) = &f.access_token {
                map.insert("accessToken".into(), token.as_str().into());
            }
            match &f.client_id {
                IdentifyId::Assign => {}
                IdentifyId::Given(id) => {
                    map.insert("clientId".into(), id.as_str().into());
                }
                IdentifyId::Invalid => {
                    map.insert("clientId".into(), false.into());
                }
            }
            Value::Object(map)
        }
        PairingClientFrame::Event { recipient, event } => json!({
            "type": "cr_event",
            "recipientClientId": recipient,
            "eventType": event.event_type,
            "eventSubType": event.sub_type,
            "eventParams": event.params,
            "buffered": event.buffered,
            "logged": event.logged,
            "interceptable": event.interceptable,
            "sendCt": event.send_ct,
        }),
        PairingClientFrame::Alive => json!({"type": "cr_alive"}),
    };
    value.to_string()
}

/// A frame from the server to a pairing client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairingServerFrame {
    /// `cr_welcome`: the identify was accepted.
    Welcome {
        /// `appId`: the app's name.
        app_id: String,
        /// `clientId`: the client's id (assigned if it asked for one).
        client_id: String,
        /// `clientRole`.
        client_role: Role,
    },
    /// `cr_event`: an event relayed from `sender` (or a server reject, P22).
    Event {
        /// `senderClientId`, set by the server.
        sender: String,
        /// The event as its sender gave it.
        event: Event,
    },
    /// `cr_alive`: the answer to the client's `cr_alive`.
    Alive,
    /// `cr_aborted`: the connection ends (close 1000 follows).
    Aborted {
        /// Why.
        reason: AbortReason,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Wire<'a> {
    #[serde(rename = "cr_welcome", rename_all = "camelCase")]
    Welcome {
        app_id: &'a str,
        client_id: &'a str,
        client_role: Role,
        timestamp: u64,
    },
    #[serde(rename = "cr_event", rename_all = "camelCase")]
    Event {
        event_type: &'a str,
        event_sub_type: &'a str,
        event_params: &'a [String],
        buffered: bool,
        logged: bool,
        interceptable: bool,
        send_ct: Option<i64>,
        receive_ct: Option<i64>,
        sender_client_id: &'a str,
        timestamp: u64,
    },
    #[serde(rename = "cr_alive")]
    Alive { timestamp: u64 },
    #[serde(rename = "cr_aborted")]
    Aborted { reason: AbortReason, timestamp: u64 },
}

/// Writes a server frame with its `timestamp` (ms since the Unix epoch). A `cr_event` has every
/// field (P11), `receiveCt` always `null`.
pub fn encode(frame: &PairingServerFrame, timestamp: u64) -> String {
    let wire = match frame {
        PairingServerFrame::Welcome {
            app_id,
            client_id,
            client_role,
        } => Wire::Welcome {
            app_id,
            client_id,
            client_role: *client_role,
            timestamp,
        },
        PairingServerFrame::Event { sender, event } => Wire::Event {
            event_type: &event.event_type,
            event_sub_type: &event.sub_type,
            event_params: &event.params,
            buffered: event.buffered,
            logged: event.logged,
            interceptable: event.interceptable,
            send_ct: event.send_ct,
            receive_ct: None,
            sender_client_id: sender,
            timestamp,
        },
        PairingServerFrame::Alive => Wire::Alive { timestamp },
        PairingServerFrame::Aborted { reason } => Wire::Aborted {
            reason: *reason,
            timestamp,
        },
    };
    serde_json::to_string(&wire).expect("pairing frames always serialise")
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WelcomeFields {
    app_id: String,
    client_id: String,
    client_role: Role,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServerEventFields {
    event_type: String,
    event_sub_type: String,
    event_params: Vec<String>,
    buffered: bool,
    logged: bool,
    interceptable: bool,
    send_ct: Option<i64>,
    sender_client_id: String,
}

#[derive(Deserialize)]
struct AbortedFields {
    reason: AbortReason,
}

/// Reads a server frame (the client side) with its `timestamp` if it has an integer one.
/// Strict about the fields the SDK relies on; an unknown `type` or abort reason is an error.
pub fn decode_server(text: &str) -> Result<(PairingServerFrame, Option<u64>), DecodeError> {
    let object: BTreeMap<String, Box<RawValue>> =
        serde_json::from_str(text).map_err(|e| DecodeError::new(format!("invalid JSON: {e}")))?;
    let timestamp = object
        .get("timestamp")
        .and_then(|raw| raw.get().parse::<u64>().ok());
    let kind: String = object
        .get("type")
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
        .ok_or_else(|| DecodeError::new("missing field `type`"))?;
    let frame = match kind.as_str() {
        "cr_welcome" => {
            let f: WelcomeFields = fields(&kind, object)?;
            PairingServerFrame::Welcome {
                app_id: f.app_id,
                client_id: f.client_id,
                client_role: f.client_role,
            }
        }
        "cr_event" => {
            let f: ServerEventFields = fields(&kind, object)?;
            let mut event = Event::new(f.event_type);
            event.sub_type = f.event_sub_type;
            event.params = f.event_params;
            event.buffered = f.buffered;
            event.logged = f.logged;
            event.interceptable = f.interceptable;
            event.send_ct = f.send_ct;
            PairingServerFrame::Event {
                sender: f.sender_client_id,
                event,
            }
        }
        "cr_alive" => PairingServerFrame::Alive,
        "cr_aborted" => {
            let f: AbortedFields = fields(&kind, object)?;
            PairingServerFrame::Aborted { reason: f.reason }
        }
        other => {
            return Err(DecodeError::new(format!(
                "unknown pairing server message type `{other}`"
            )))
        }
    };
    Ok((frame, timestamp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_client_id_is_invalid_not_absent() {
        for raw in ["1e999", r#""\ud800""#, "true", "[]", "123456"] {
            let text = format!(
                r#"{{"type":"cr_identify","clientRole":"controller","accessToken":"tok","clientId":{raw}}}"#
            );
            let Ok(PairingClientFrame::Identify(frame)) = decode(&text) else {
                panic!("{text}")
            };
            assert_eq!(frame.client_id, IdentifyId::Invalid, "{raw}");
        }
        let null = r#"{"type":"cr_identify","clientRole":"controller","accessToken":"tok","clientId":null}"#;
        let Ok(PairingClientFrame::Identify(frame)) = decode(null) else {
            panic!()
        };
        assert_eq!(frame.client_id, IdentifyId::Assign);
    }
    use crate::pairing::event::MAX_EVENT_DATA_CHARS;
    use crate::pairing::RejectSubtype;
    use proptest::prelude::*;
    use serde_json::json;

    fn err(text: &str) -> String {
        decode(text).unwrap_err().message
    }

    fn parsed(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn identify_reads_its_parts_leniently() {
        let frame = decode(
            r#"{"type":"cr_identify","clientRole":"controller","accessToken":"tok","clientId":"123456"}"#,
        )
        .unwrap();
        assert_eq!(
            frame,
            PairingClientFrame::Identify(IdentifyFrame {
                client_role: Some("controller".into()),
                client_id: IdentifyId::Given("123456".into()),
                access_token: Some("tok".into()),
            })
        );
        let assign = |text: &str| match decode(text).unwrap() {
            PairingClientFrame::Identify(f) => f,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            assign(r#"{"type":"cr_identify","clientId":null}"#).client_id,
            IdentifyId::Assign
        );
        // Wrong types are kept for check_identify, never decode errors.
        let odd =
            assign(r#"{"type":"cr_identify","clientRole":7,"accessToken":[],"clientId":123456}"#);
        assert_eq!(odd.client_role, None);
        assert_eq!(odd.access_token, None);
        assert_eq!(odd.client_id, IdentifyId::Invalid);
        assert_eq!(
            assign(r#"{"type":"cr_identify"}"#),
            IdentifyFrame {
                client_role: None,
                client_id: IdentifyId::Assign,
                access_token: None
            }
        );
    }

    #[test]
    fn identify_debug_hides_the_token() {
        let PairingClientFrame::Identify(f) =
            decode(r#"{"type":"cr_identify","clientRole":"controller","accessToken":"hunter2"}"#)
                .unwrap()
        else {
            panic!()
        };
        let shown = format!("{f:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("<redacted>"),
            "{shown}"
        );
    }

    #[test]
    fn check_identify_names_the_first_failing_check() {
        let app = AppSpec::parse("secret:tokA").unwrap();
        let check = |text: &str| match decode(text).unwrap() {
            PairingClientFrame::Identify(f) => check_identify(&f, &app),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            check(r#"{"type":"cr_identify","clientRole":"boss","clientId":5}"#),
            Err(AbortReason::InvalidRole)
        );
        assert_eq!(
            check(
                r#"{"type":"cr_identify","clientRole":"controller","clientId":123456,"accessToken":"tokA"}"#
            ),
            Err(AbortReason::InvalidClientId)
        );
        assert_eq!(
            check(r#"{"type":"cr_identify","clientRole":"controller","clientId":"12345"}"#),
            Err(AbortReason::InvalidClientId)
        );
        assert_eq!(
            check(r#"{"type":"cr_identify","clientRole":"controller","accessToken":5}"#),
            Err(AbortReason::InvalidAccessToken)
        );
        assert_eq!(
            check(r#"{"type":"cr_identify","clientRole":"responder","accessToken":"tokB"}"#),
            Err(AbortReason::NotAuthorized)
        );
        assert_eq!(
            check(r#"{"type":"cr_identify","clientRole":"responder","accessToken":"tokA"}"#),
            Ok(Identity {
                role: Role::Responder,
                client_id: None
            })
        );
    }

    #[test]
    fn event_defaults_and_ignored_fields() {
        let frame = decode(
            r#"{"type":"cr_event","recipientClientId":"654321","eventType":"ping","senderClientId":"000000","receiveCt":5}"#,
        )
        .unwrap();
        assert_eq!(
            frame,
            PairingClientFrame::Event {
                recipient: "654321".into(),
                event: Event::new("ping")
            }
        );
        let PairingClientFrame::Event { event, .. } = decode(
            r#"{"type":"cr_event","recipientClientId":"654321","eventType":"move","eventSubType":"up","eventParams":["1","a b"],"buffered":true,"logged":true,"interceptable":false,"sendCt":1700000000000}"#,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(event.sub_type, "up");
        assert_eq!(event.params, ["1", "a b"]);
        assert!(event.buffered && event.logged && !event.interceptable);
        assert_eq!(event.send_ct, Some(1700000000000));
        // null is the default for every optional field.
        let PairingClientFrame::Event { event, .. } = decode(
            r#"{"type":"cr_event","recipientClientId":"654321","eventType":"x","eventSubType":null,"eventParams":null,"interceptable":null,"sendCt":null}"#,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(event, Event::new("x"));
    }

    #[test]
    fn malformed_frames_have_the_landed_texts() {
        assert!(err("{").starts_with("invalid JSON: "));
        assert_eq!(err("[1]"), "a message must be a JSON object, got an array");
        assert_eq!(err("{}"), "missing field `type`");
        assert_eq!(
            err(r#"{"type":1}"#),
            "field `type` must be a string, got a number"
        );
        assert_eq!(
            err(r#"{"type":"join"}"#),
            "unknown message type `join`; expected one of: cr_identify, cr_event, cr_alive"
        );
        assert_eq!(
            err(r#"{"type":"cr_event","eventType":"ping"}"#),
            "cr_event: missing field `recipientClientId`"
        );
        assert_eq!(
            err(
                r#"{"type":"cr_event","recipientClientId":"654321","eventType":"ping","eventParams":"x"}"#
            ),
            "cr_event: in `eventParams`: invalid type: string \"x\", expected a sequence"
        );
        assert_eq!(
            err(
                r#"{"type":"cr_event","recipientClientId":"654321","eventType":"ping","eventParams":["a",1]}"#
            ),
            "cr_event: in `eventParams[1]`: invalid type: integer `1`, expected a string"
        );
        assert_eq!(
            err(
                r#"{"type":"cr_event","recipientClientId":"654321","eventType":"ping","eventParams":["a","b,c"]}"#
            ),
            "cr_event: in `eventParams[1]`: a parameter must not contain `,`"
        );
        assert_eq!(
            err(r#"{"type":"cr_event","recipientClientId":"65432","eventType":"ping"}"#),
            "cr_event: field `recipientClientId` must be 6 ASCII digits"
        );
        assert_eq!(
            err(r#"{"type":"cr_event","recipientClientId":"654321","eventType":""}"#),
            "cr_event: field `eventType` must be one or more of A-Z, a-z, 0-9"
        );
        assert_eq!(
            err(
                r#"{"type":"cr_event","recipientClientId":"654321","eventType":"a","eventSubType":"b-c"}"#
            ),
            "cr_event: field `eventSubType` must be A-Z, a-z, 0-9 only"
        );
        assert_eq!(
            err(r#"{"type":"cr_event","recipientClientId":"654321","eventType":"a","sendCt":1.5}"#),
            "cr_event: in `sendCt`: invalid type: floating point `1.5`, expected i64"
        );
        assert_eq!(
            err(
                r#"{"type":"cr_event","recipientClientId":"654321","eventType":"a","buffered":"yes"}"#
            ),
            "cr_event: in `buffered`: invalid type: string \"yes\", expected a boolean"
        );
        assert_eq!(
            not_identified("cr_event").message,
            "cr_event: send `cr_identify` first; this connection has not identified"
        );
        assert_eq!(
            already_identified().message,
            "cr_identify: this connection has already identified"
        );
        assert_eq!(
            decode(r#"{"type":"cr_alive","x":1}"#),
            Ok(PairingClientFrame::Alive)
        );
    }

    #[test]
    fn server_frames_have_every_field() {
        let welcome = PairingServerFrame::Welcome {
            app_id: "alpha".into(),
            client_id: "123456".into(),
            client_role: Role::Controller,
        };
        assert_eq!(
            parsed(&encode(&welcome, 7)),
            json!({"type":"cr_welcome","appId":"alpha","clientId":"123456","clientRole":"controller","timestamp":7})
        );
        let mut ping = Event::new("ping");
        ping.send_ct = Some(1700000000000);
        assert_eq!(
            parsed(&encode(
                &PairingServerFrame::Event {
                    sender: "123456".into(),
                    event: ping
                },
                8
            )),
            json!({"type":"cr_event","eventType":"ping","eventSubType":"","eventParams":[],
                "buffered":false,"logged":false,"interceptable":true,"sendCt":1700000000000u64,
                "receiveCt":null,"senderClientId":"123456","timestamp":8})
        );
        let reject = PairingServerFrame::Event {
            sender: "654321".into(),
            event: Event::server_reject(RejectSubtype::InvalidPartnerRole),
        };
        let v = parsed(&encode(&reject, 9));
        assert_eq!(v["eventSubType"], "invalidPartnerRole");
        assert_eq!(v["sendCt"], Value::Null);
        assert_eq!(v["senderClientId"], "654321");
        assert_eq!(
            parsed(&encode(&PairingServerFrame::Alive, 10)),
            json!({"type":"cr_alive","timestamp":10})
        );
        assert_eq!(
            parsed(&encode(
                &PairingServerFrame::Aborted {
                    reason: AbortReason::ClientIdInUse
                },
                11
            )),
            json!({"type":"cr_aborted","reason":"clientIdInUse","timestamp":11})
        );
    }

    #[test]
    fn translation_between_the_transports() {
        // SSE -> WS (P19): flags, NaN -> null, params -> eventParams.
        let e = Event::parse_data("tap,x,true,false,true,NaN,NaN,999999,a,b").unwrap();
        let v = parsed(&encode(
            &PairingServerFrame::Event {
                sender: "111111".into(),
                event: e,
            },
            1,
        ));
        assert_eq!(v["buffered"], true);
        assert_eq!(v["logged"], false);
        assert_eq!(v["sendCt"], Value::Null);
        assert_eq!(v["eventParams"], json!(["a", "b"]));
        assert_eq!(v["senderClientId"], "111111");
        // WS -> SSE: booleans as words, null -> NaN, params appended in order.
        let PairingClientFrame::Event { event, .. } = decode(
            r#"{"type":"cr_event","recipientClientId":"654321","eventType":"tap","eventParams":["p1","p2"],"logged":true}"#,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            event.to_data("222222"),
            "tap,,false,true,true,NaN,NaN,222222,p1,p2"
        );
        assert!(!event.too_large("222222"));
        let mut big = event.clone();
        big.params = vec!["é".repeat(MAX_EVENT_DATA_CHARS)];
        assert!(big.too_large("222222"));
    }

    #[test]
    fn decode_server_reads_what_encode_writes() {
        let (frame, ts) = decode_server(&encode(
            &PairingServerFrame::Aborted {
                reason: AbortReason::ReleasedByOther,
            },
            42,
        ))
        .unwrap();
        assert_eq!(
            frame,
            PairingServerFrame::Aborted {
                reason: AbortReason::ReleasedByOther
            }
        );
        assert_eq!(ts, Some(42));
        assert!(decode_server(r#"{"type":"cr_aborted","reason":"other"}"#).is_err());
        assert!(decode_server(r#"{"type":"error","code":"x"}"#)
            .unwrap_err()
            .message
            .contains("`error`"));
    }

    fn any_ws_event() -> impl Strategy<Value = Event> {
        (
            "[0-9A-Za-z]{1,8}",
            "[0-9A-Za-z]{0,8}",
            proptest::collection::vec("[^,]{0,6}", 0..5),
            any::<(bool, bool, bool)>(),
            proptest::option::of(any::<i64>()),
        )
            .prop_map(|(t, s, params, (b, l, i), send_ct)| {
                let mut e = Event::new(t);
                e.sub_type = s;
                e.params = params;
                e.buffered = b;
                e.logged = l;
                e.interceptable = i;
                e.send_ct = send_ct;
                e
            })
    }

    proptest! {
        #[test]
        fn client_event_round_trips(event in any_ws_event(), recipient in "[0-9]{6}") {
            let frame = PairingClientFrame::Event { recipient, event };
            prop_assert_eq!(decode(&encode_client(&frame)).unwrap(), frame);
        }

        #[test]
        fn server_event_round_trips(event in any_ws_event(), sender in "[0-9]{6}", ts in any::<u64>()) {
            let frame = PairingServerFrame::Event { sender, event };
            let (back, got) = decode_server(&encode(&frame, ts)).unwrap();
            prop_assert_eq!(back, frame);
            prop_assert_eq!(got, Some(ts));
        }

        #[test]
        fn identify_round_trips(
            role in proptest::option::of("[a-z]{0,10}"),
            token in proptest::option::of("[!-~]{0,10}"),
            id in prop_oneof![
                Just(IdentifyId::Assign),
                Just(IdentifyId::Invalid),
                "[0-9]{0,7}".prop_map(IdentifyId::Given)
            ],
        ) {
            let frame = PairingClientFrame::Identify(IdentifyFrame {
                client_role: role, client_id: id, access_token: token,
            });
            prop_assert_eq!(decode(&encode_client(&frame)).unwrap(), frame);
        }

        #[test]
        fn decode_never_panics(text in ".{0,64}") {
            let _ = decode(&text);
        }
    }
}
