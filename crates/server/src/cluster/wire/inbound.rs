//! Inbound entries: a session's inputs as its owner applies them, in stream order.
//!
//! [`Inbound`] mirrors [`crate::sessions::SessionInput`] with what cannot cross Redis
//! replaced: reply channels become the request id the answer is sent back under (in an
//! outbound batch's replies) or the socket that gets it (in its deliveries), outboxes become
//! the node and socket the member is on. The owner's timer is an entry too ([`Inbound::Tick`]),
//! so the session's state is a pure function of its inbound stream.
//!
//! The JSON is described by serde attributes on [`Inbound`] and by remote descriptions of
//! the foreign types it carries (see the schema in [`super`]).

use loudsync_core::connection::MemberCommand;
use loudsync_core::directory::Credentials;
use loudsync_protocol::app::Dialect;
use loudsync_protocol::{Join, LeaveReason, RawJson, ServerMessage, StateChange};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::{decode_json, encode_json, WireError};
use crate::sessions::AdminAction;

/// One input of a session, as its inbound stream holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Inbound {
    /// A transport on node `node` asks to join; the answer is an [`super::Item::Joined`]
    /// for `socket`.
    #[serde(rename = "join")]
    Join {
        /// The node the transport is on.
        #[serde(rename = "n")]
        node: String,
        /// The transport's socket id (cluster-unique).
        #[serde(rename = "s")]
        socket: u64,
        /// The `clientId` the member's node made for it.
        #[serde(rename = "m")]
        member_id: String,
        /// The `join` message.
        #[serde(rename = "j", with = "join_fields")]
        join: Join,
        /// The dialect the transport speaks.
        #[serde(rename = "d", with = "dialect")]
        dialect: Dialect,
        /// Its peer address.
        #[serde(rename = "a")]
        address: String,
        /// What it proved before it was routed.
        #[serde(rename = "c", with = "CredentialsDef")]
        credentials: Credentials,
        /// The connection token of the resume handshake, if it did one.
        #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
        resume_token: Option<String>,
    },
    /// A joined member's command.
    #[serde(rename = "cmd")]
    Command {
        /// The member.
        #[serde(rename = "m")]
        member_id: String,
        /// The transport it came on (ignored if the place has moved to another).
        #[serde(rename = "s")]
        socket: u64,
        /// The client frame's `seq`, on a resumable connection.
        #[serde(rename = "q", default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        /// What it asked.
        #[serde(rename = "c", with = "MemberCommandDef")]
        command: MemberCommand,
    },
    /// A member's transport is gone.
    #[serde(rename = "detach")]
    Detach {
        /// The member.
        #[serde(rename = "m")]
        member_id: String,
        /// The transport that is gone (ignored if the place has moved to another).
        #[serde(rename = "s")]
        socket: u64,
        /// Why.
        #[serde(rename = "r")]
        reason: LeaveReason,
        /// Gone in a way a resume cannot mend.
        #[serde(rename = "f")]
        fatal: bool,
    },
    /// A new socket on node `node` resumes a member's place; the answer is an
    /// [`super::Item::Resumed`] for `socket`.
    #[serde(rename = "resume")]
    Resume {
        /// The node the new socket is on.
        #[serde(rename = "n")]
        node: String,
        /// The new socket's id.
        #[serde(rename = "s")]
        socket: u64,
        /// The member.
        #[serde(rename = "m")]
        member_id: String,
        /// The connection token it presented.
        #[serde(rename = "t")]
        token: String,
        /// The last server `seq` it received.
        #[serde(rename = "l")]
        last_seq: u64,
    },
    /// End the session (HTTP DELETE, shutdown); answered with [`super::ReplyResult::Closed`]
    /// under `reply`, if given, once every member has been told.
    #[serde(rename = "close")]
    Close {
        /// Sent in `session_closed`.
        #[serde(rename = "r")]
        reason: String,
        /// The close code for every transport.
        #[serde(rename = "c")]
        code: u16,
        /// The request id the answer goes to.
        #[serde(rename = "q", default, skip_serializing_if = "Option::is_none")]
        reply: Option<u64>,
    },
    /// An administrator's action, answered with [`super::ReplyResult::Admin`] under `reply`.
    #[serde(rename = "admin")]
    Admin {
        /// What is asked.
        #[serde(rename = "a", with = "AdminActionDef")]
        action: AdminAction,
        /// The request id the answer goes to.
        #[serde(rename = "q")]
        reply: u64,
    },
    /// The owner's timer: the session's deadlines are checked at the entry's time.
    #[serde(rename = "tick")]
    Tick,
    /// A node is gone (its liveness key expired): its members' transports are gone.
    #[serde(rename = "gone")]
    NodeGone {
        /// The node.
        #[serde(rename = "n")]
        node: String,
    },
}

/// The JSON of an inbound entry (the `e` field of its stream entry).
pub fn encode_inbound(entry: &Inbound) -> String {
    encode_json(entry)
}

/// Reads an inbound entry; the error names the field at fault.
pub fn decode_inbound(text: &str) -> Result<Inbound, WireError> {
    decode_json("inbound entry", text)
}

/// A member's command (`c` of a `cmd` entry).
#[derive(Serialize, Deserialize)]
#[serde(remote = "MemberCommand")]
enum MemberCommandDef {
    #[serde(rename = "leave")]
    Leave,
    #[serde(rename = "kick")]
    Kick {
        #[serde(rename = "m")]
        member_id: String,
        #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    #[serde(rename = "list")]
    MemberList,
    #[serde(rename = "media")]
    MediaToken,
    #[serde(rename = "msg")]
    Message {
        /// Raw: the sender's bytes, neither parsed into a tree nor escaped.
        #[serde(rename = "d")]
        data: RawJson,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
    },
    #[serde(rename = "rtt")]
    Latency(u64),
    #[serde(rename = "ack")]
    Ack(u64),
    /// Always an `error` (see `Connection::report`); through `ServerMessage`'s own serde,
    /// which round-trips every field of an `error` (a message of another type would lose
    /// its `#[serde(skip)]` fields, the device references of the app's dialect).
    #[serde(rename = "report")]
    Report(Box<ServerMessage>),
    #[serde(rename = "state")]
    StateSet {
        #[serde(rename = "c", with = "boxed_state_change")]
        change: Box<StateChange>,
        #[serde(rename = "v", default, skip_serializing_if = "Option::is_none")]
        base_version: Option<u64>,
        #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
        term: Option<u64>,
    },
    #[serde(rename = "ready")]
    HandoffReady(bool),
    #[serde(rename = "handoff")]
    HandoffRequest {
        #[serde(rename = "to", default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
    },
    #[serde(rename = "answer")]
    HandoffAnswer {
        #[serde(rename = "id")]
        handoff_id: String,
        #[serde(rename = "ok")]
        accept: bool,
    },
}

/// A `state_set`'s change: `{"set":{..}}` (the whole document) or `{"patch":{..}}`.
#[derive(Serialize, Deserialize)]
#[serde(remote = "StateChange")]
enum StateChangeDef {
    #[serde(rename = "set")]
    Replace(Map<String, Value>),
    #[serde(rename = "patch")]
    Patch(Map<String, Value>),
}

/// [`StateChangeDef`] for the boxed change a command carries.
mod boxed_state_change {
    use super::*;

    pub fn serialize<S: Serializer>(change: &StateChange, s: S) -> Result<S::Ok, S::Error> {
        StateChangeDef::serialize(change, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Box<StateChange>, D::Error> {
        StateChangeDef::deserialize(d).map(Box::new)
    }
}

/// An administrator's action (`a` of an `admin` entry).
#[derive(Serialize, Deserialize)]
#[serde(remote = "AdminAction")]
enum AdminActionDef {
    #[serde(rename = "kick")]
    Kick {
        #[serde(rename = "m")]
        member_id: String,
        #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    #[serde(rename = "handoff")]
    Handoff {
        #[serde(rename = "m")]
        target_id: String,
    },
}

/// What a join proved before it was routed (`c` of a `join` entry).
#[derive(Serialize, Deserialize)]
#[serde(remote = "Credentials")]
struct CredentialsDef {
    #[serde(rename = "t", default)]
    token: bool,
}

/// A join's fields (`j` of a `join` entry): the `join` frame's own names, read back with
/// [`Join`]'s own `Deserialize` (the one the protocol crate reads client frames with).
///
/// Written as an object rather than as the client frame's text: a frame inside a string
/// would have each of its quotes escaped, and would be parsed twice.
mod join_fields {
    use loudsync_protocol::DeviceInfo;

    use super::*;

    /// [`Join`] as it is written: its fields, the absent ones left out.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct JoinOut<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        session_id: &'a Option<String>,
        device_info: &'a DeviceInfo,
        #[serde(skip_serializing_if = "Option::is_none")]
        session_name: &'a Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        protocol_version: &'a Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        password: &'a Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        token: &'a Option<String>,
    }

    pub fn serialize<S: Serializer>(join: &Join, s: S) -> Result<S::Ok, S::Error> {
        // Destructured in full: a field added to `Join` must be added here too.
        let Join {
            session_id,
            device_info,
            session_name,
            protocol_version,
            password,
            token,
        } = join;
        JoinOut {
            session_id,
            device_info,
            session_name,
            protocol_version,
            password,
            token,
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Join, D::Error> {
        Join::deserialize(d)
    }
}

/// A connection's dialect (`d` of a `join` entry): `"loudsync"` or `"app"`.
mod dialect {
    use super::*;

    #[derive(Serialize, Deserialize)]
    #[serde(remote = "Dialect")]
    enum DialectDef {
        #[serde(rename = "loudsync")]
        LoudSync,
        #[serde(rename = "app")]
        App,
    }

    pub fn serialize<S: Serializer>(dialect: &Dialect, s: S) -> Result<S::Ok, S::Error> {
        DialectDef::serialize(dialect, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Dialect, D::Error> {
        DialectDef::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use loudsync_protocol::{DeviceInfo, DeviceType, ErrorCode};
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    /// Encodes, decodes, checks the entry came back equal; returns the JSON.
    fn round_trip(entry: Inbound) -> String {
        let text = encode_inbound(&entry);
        let back = decode_inbound(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(back, entry, "{text}");
        text
    }

    fn command(command: MemberCommand) -> String {
        round_trip(Inbound::Command {
            member_id: "c7".into(),
            socket: 1 << 40 | 3,
            seq: Some(12),
            command,
        })
    }

    fn join(session_id: Option<&str>) -> Join {
        Join {
            session_id: session_id.map(str::to_string),
            device_info: DeviceInfo {
                id: "dev-1".into(),
                name: "Ana's \"phone\" \u{1F3B5}".into(),
                kind: DeviceType::Host,
            },
            session_name: Some("Gig".into()),
            protocol_version: Some("1.0".into()),
            password: Some("s3cret".into()),
            token: Some("a.b.c".into()),
        }
    }

    fn raw(text: &str) -> RawJson {
        RawJson::from_text(text).unwrap()
    }

    #[test]
    fn join_with_every_field_round_trips() {
        let text = round_trip(Inbound::Join {
            node: "node-a".into(),
            socket: 1 << 40 | 9,
            member_id: "c1".into(),
            join: join(Some("K7P3XQ")),
            dialect: Dialect::App,
            address: "10.0.0.5".into(),
            credentials: Credentials { token: true },
            resume_token: Some("tok".into()),
        });
        assert!(text.contains(r#""deviceInfo":{"id":"dev-1""#), "{text}");
        assert!(text.contains(r#""d":"app""#), "{text}");
    }

    #[test]
    fn join_without_optional_fields_round_trips_and_leaves_them_out() {
        let bare = Join {
            session_id: None,
            device_info: DeviceInfo {
                id: "d".into(),
                name: "n".into(),
                kind: DeviceType::Client,
            },
            session_name: None,
            protocol_version: None,
            password: None,
            token: None,
        };
        let text = round_trip(Inbound::Join {
            node: "n".into(),
            socket: 1,
            member_id: "c2".into(),
            join: bare,
            dialect: Dialect::LoudSync,
            address: "::1".into(),
            credentials: Credentials::default(),
            resume_token: None,
        });
        assert_eq!(
            text,
            r#"{"join":{"n":"n","s":1,"m":"c2","j":{"deviceInfo":{"id":"d","name":"n","type":"client"}},"d":"loudsync","a":"::1","c":{"t":false}}}"#
        );
    }

    #[test]
    fn command_leave_round_trips() {
        command(MemberCommand::Leave);
    }

    #[test]
    fn command_kick_round_trips() {
        command(MemberCommand::Kick {
            member_id: "c9".into(),
            reason: Some("bye".into()),
        });
        command(MemberCommand::Kick {
            member_id: "c9".into(),
            reason: None,
        });
    }

    #[test]
    fn command_member_list_round_trips() {
        command(MemberCommand::MemberList);
    }

    #[test]
    fn command_media_token_round_trips() {
        command(MemberCommand::MediaToken);
    }

    #[test]
    fn command_message_round_trips_with_data_as_raw_json() {
        let text = command(MemberCommand::Message {
            data: raw(r#"{"x":[1,2]}"#),
            to: Some("c2".into()),
        });
        assert_eq!(
            text,
            r#"{"cmd":{"m":"c7","s":1099511627779,"q":12,"c":{"msg":{"d":{"x":[1,2]},"to":"c2"}}}}"#
        );
        command(MemberCommand::Message {
            data: raw("null"),
            to: None,
        });
    }

    #[test]
    fn message_data_keeps_the_senders_bytes() {
        // Key order, number spelling, whitespace and escapes as the sender wrote them.
        let data = r#"{ "z" : 1e2, "a":[ -0, 12345678901234567890123 ], "s":"\u00e9\n\"" }"#;
        let entry = Inbound::Command {
            member_id: "c7".into(),
            socket: 1,
            seq: None,
            command: MemberCommand::Message {
                data: raw(data),
                to: None,
            },
        };
        match decode_inbound(&encode_inbound(&entry)).unwrap() {
            Inbound::Command {
                command: MemberCommand::Message { data: back, .. },
                ..
            } => assert_eq!(back.get(), data),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn command_latency_round_trips() {
        command(MemberCommand::Latency(37));
    }

    #[test]
    fn command_ack_round_trips() {
        command(MemberCommand::Ack(u64::MAX));
    }

    #[test]
    fn command_report_round_trips_code_message_and_details() {
        command(MemberCommand::Report(Box::new(ServerMessage::Error {
            code: ErrorCode::InvalidMessage,
            message: "seq 9 skips a message".into(),
            details: Some(json!({"lastSeq": 7})),
        })));
        command(MemberCommand::Report(Box::new(ServerMessage::error(
            ErrorCode::RateLimited,
            "slow down",
        ))));
    }

    #[test]
    fn command_state_set_round_trips_replace_and_patch() {
        let map = |v: Value| match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        command(MemberCommand::StateSet {
            change: Box::new(StateChange::Replace(map(
                json!({"a": 1.5, "b": [true, null]}),
            ))),
            base_version: Some(3),
            term: Some(1),
        });
        command(MemberCommand::StateSet {
            change: Box::new(StateChange::Patch(map(json!({"a": null})))),
            base_version: None,
            term: None,
        });
    }

    #[test]
    fn command_handoff_ready_round_trips() {
        command(MemberCommand::HandoffReady(true));
        command(MemberCommand::HandoffReady(false));
    }

    #[test]
    fn command_handoff_request_round_trips() {
        command(MemberCommand::HandoffRequest {
            target: Some("c3".into()),
        });
        command(MemberCommand::HandoffRequest { target: None });
    }

    #[test]
    fn command_handoff_answer_round_trips() {
        command(MemberCommand::HandoffAnswer {
            handoff_id: "h1".into(),
            accept: true,
        });
        command(MemberCommand::HandoffAnswer {
            handoff_id: "h2".into(),
            accept: false,
        });
    }

    #[test]
    fn command_without_seq_round_trips() {
        round_trip(Inbound::Command {
            member_id: "c7".into(),
            socket: 5,
            seq: None,
            command: MemberCommand::Leave,
        });
    }

    #[test]
    fn detach_round_trips() {
        for reason in [
            LeaveReason::Left,
            LeaveReason::Kicked,
            LeaveReason::Timeout,
            LeaveReason::Error,
        ] {
            round_trip(Inbound::Detach {
                member_id: "c1".into(),
                socket: 8,
                reason,
                fatal: reason == LeaveReason::Error,
            });
        }
    }

    #[test]
    fn resume_round_trips() {
        round_trip(Inbound::Resume {
            node: "node-b".into(),
            socket: 2 << 40 | 1,
            member_id: "c1".into(),
            token: "tok".into(),
            last_seq: 41,
        });
    }

    #[test]
    fn close_round_trips() {
        round_trip(Inbound::Close {
            reason: "closed by the administrator".into(),
            code: 1001,
            reply: Some(77),
        });
        round_trip(Inbound::Close {
            reason: String::new(),
            code: 1000,
            reply: None,
        });
    }

    #[test]
    fn admin_round_trips() {
        round_trip(Inbound::Admin {
            action: AdminAction::Kick {
                member_id: "c4".into(),
                reason: Some("spam".into()),
            },
            reply: 9,
        });
        round_trip(Inbound::Admin {
            action: AdminAction::Kick {
                member_id: "c4".into(),
                reason: None,
            },
            reply: 10,
        });
        round_trip(Inbound::Admin {
            action: AdminAction::Handoff {
                target_id: "c5".into(),
            },
            reply: 11,
        });
    }

    #[test]
    fn tick_round_trips_as_a_bare_tag() {
        assert_eq!(round_trip(Inbound::Tick), r#""tick""#);
    }

    #[test]
    fn node_gone_round_trips() {
        round_trip(Inbound::NodeGone {
            node: "node-c".into(),
        });
    }

    /// The error's text for `text`.
    fn error(text: &str) -> String {
        decode_inbound(text).unwrap_err().to_string()
    }

    #[test]
    fn an_unknown_entry_tag_is_an_error() {
        let e = error(r#"{"fly":{}}"#);
        assert!(e.starts_with("inbound entry: "), "{e}");
        assert!(e.contains("unknown variant `fly`"), "{e}");
        assert!(error(r#""fly""#).contains("unknown variant `fly`"));
    }

    #[test]
    fn an_unknown_command_tag_names_its_path() {
        let e = error(r#"{"cmd":{"m":"c","s":1,"c":"fly"}}"#);
        assert!(
            e.starts_with("inbound entry: cmd.c: unknown variant `fly`"),
            "{e}"
        );
    }

    #[test]
    fn a_mistyped_field_names_its_path() {
        let e = error(r#"{"cmd":{"m":"c","s":"one","c":"leave"}}"#);
        assert!(
            e.starts_with("inbound entry: cmd.s: invalid type: string"),
            "{e}"
        );
        let e = error(r#"{"cmd":{"m":"c","s":1,"c":{"msg":{"to":5,"d":1}}}}"#);
        assert!(
            e.starts_with("inbound entry: cmd.c.msg.to: invalid type"),
            "{e}"
        );
        let e = error(
            r#"{"join":{"n":"a","s":1,"m":"c","j":{"deviceInfo":{"id":"d","name":"n","type":"boss"}},"d":"app","a":"x","c":{}}}"#,
        );
        assert!(
            e.starts_with("inbound entry: join.j.deviceInfo.type: unknown variant `boss`"),
            "{e}"
        );
        let e = error(r#"{"admin":{"a":{"handoff":{"m":1}},"q":1}}"#);
        assert!(
            e.starts_with("inbound entry: admin.a.handoff.m: invalid type"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_field_is_named() {
        let e = error(r#"{"cmd":{"s":1,"c":"leave"}}"#);
        assert!(e.contains("missing field `m`"), "{e}");
        assert!(e.starts_with("inbound entry: cmd: "), "{e}");
    }

    #[test]
    fn text_that_is_not_one_json_value_is_an_error() {
        assert!(decode_inbound("").is_err());
        assert!(decode_inbound("tick").is_err());
        assert!(decode_inbound(r#""tick" x"#).is_err());
        assert!(decode_inbound(r#"{"cmd":{"m":"c","s":1,"c":{"msg":{"d":}}}}"#).is_err());
        assert!(decode_inbound(r#""tick"  "#).is_ok());
    }

    /// JSON values with every kind of string: quotes, backslashes, unicode, control characters.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn messages_round_trip_byte_for_byte(
            value in json_value(),
            pretty in any::<bool>(),
            member in any::<String>(),
            to in proptest::option::of(any::<String>()),
            seq in proptest::option::of(any::<u64>()),
        ) {
            let text = if pretty {
                serde_json::to_string_pretty(&value).unwrap()
            } else {
                serde_json::to_string(&value).unwrap()
            };
            let entry = Inbound::Command {
                member_id: member,
                socket: 7,
                seq,
                command: MemberCommand::Message { data: raw(&text), to },
            };
            let back = decode_inbound(&encode_inbound(&entry)).unwrap();
            prop_assert_eq!(&back, &entry);
            if let Inbound::Command { command: MemberCommand::Message { data, .. }, .. } = back {
                prop_assert_eq!(data.get(), text.as_str());
            }
        }

        #[test]
        fn strings_round_trip_in_every_field(
            a in any::<String>(), b in any::<String>(), c in any::<String>(), d in any::<String>()
        ) {
            round_trip(Inbound::Resume { node: a.clone(), socket: 1, member_id: b.clone(), token: c.clone(), last_seq: 2 });
            round_trip(Inbound::Close { reason: d.clone(), code: 4000, reply: None });
            round_trip(Inbound::Admin { action: AdminAction::Kick { member_id: a.clone(), reason: Some(b.clone()) }, reply: 3 });
            round_trip(Inbound::Command { member_id: c, socket: 4, seq: None, command: MemberCommand::HandoffAnswer { handoff_id: d, accept: true } });
            let mut j = join(Some(&a));
            j.device_info.name = b;
            round_trip(Inbound::Join {
                node: a, socket: 5, member_id: "c".into(), join: j, dialect: Dialect::LoudSync,
                address: "x".into(), credentials: Credentials::default(), resume_token: None,
            });
        }

        #[test]
        fn decoding_any_text_never_panics(text in any::<String>()) {
            let _ = decode_inbound(&text);
        }

        #[test]
        fn decoding_a_damaged_entry_never_panics(cut in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let text = encode_inbound(&Inbound::Join {
                node: "node-a".into(), socket: 9, member_id: "c1".into(), join: join(Some("K7")),
                dialect: Dialect::App, address: "a".into(), credentials: Credentials { token: true },
                resume_token: Some("t".into()),
            });
            let mut bytes = text.into_bytes();
            let at = cut.index(bytes.len());
            bytes[at] = byte;
            let _ = decode_inbound(&String::from_utf8_lossy(&bytes));
            let _ = decode_inbound(&String::from_utf8_lossy(&bytes[..at]));
        }
    }
}
