//! Outbound batches: what one round of a session's owner produced, for the nodes that hold
//! its members to deliver.
//!
//! The owner applies a batch of inbound entries and collects everything the session wanted
//! sent in a [`BatchBuilder`]: the frames for each socket (already encoded, as the outboxes
//! would have taken them), the answers to joins and resumes, the replies to HTTP requests.
//! The frames are kept once each however many sockets get them ([`OutboundBatch::payloads`]),
//! and items refer to them by index; the builder recognises a frame by its buffer (a
//! broadcast pushes clones of one [`Bytes`]), so deduplication costs no hashing of contents.
//!
//! Payloads are the server's encoded JSON frames, written into the batch as raw JSON (not
//! as escaped strings), so a reader copies each one out of the batch's text as it is.

use std::collections::{BTreeSet, HashMap};

use base64::Engine as _;
use bytes::Bytes;
use loudsync_core::connection::ResumeAnswer;
use loudsync_core::session::AdminRefusal;
use loudsync_protocol::{ResumeFailure, ServerMessage};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use super::{decode_json, encode_json, WireError};
use crate::outbox::OutFrame;
use crate::sessions::AdminResult;

/// What a session's owner wrote in one outbound stream entry.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OutboundBatch {
    /// The owner's epoch when it wrote the batch.
    pub epoch: u64,
    /// Each distinct frame once: the encoded JSON text, as an outbox takes it.
    pub payloads: Vec<Bytes>,
    /// What each socket gets, one entry per socket.
    pub deliveries: Vec<Delivery>,
    /// Answers to requests (the admin API, closes).
    pub replies: Vec<Reply>,
    /// The session ended with this batch: it is the last.
    pub ended: bool,
}

/// What one socket gets from a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// The socket (cluster-unique id).
    #[serde(rename = "s")]
    pub socket: u64,
    /// In the order the socket gets them.
    #[serde(rename = "i")]
    pub items: Vec<Item>,
}

/// One thing for one socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Item {
    /// A text frame: `payloads[index]` ([`OutFrame::Text`]).
    #[serde(rename = "t")]
    Text(u32),
    /// A numbered frame: its `seq` and `payloads[index]` ([`OutFrame::Numbered`]).
    #[serde(rename = "n")]
    Numbered(u64, u32),
    /// Close the socket with this code and reason ([`OutFrame::Close`]).
    #[serde(rename = "x")]
    Close(u16, String),
    /// The answer to the socket's join: `Ok` once `welcome` is queued (it is among the
    /// socket's frames), else the refusal (an `error`) to send before closing.
    #[serde(rename = "j")]
    Joined(#[serde(with = "join_result")] Result<(), ServerMessage>),
    /// The answer to the socket's resume.
    #[serde(rename = "res")]
    Resumed(#[serde(with = "ResumeAnswerDef")] ResumeAnswer),
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The request's id (cluster-unique, like socket ids).
    #[serde(rename = "q")]
    pub request: u64,
    /// Its answer.
    #[serde(rename = "r")]
    pub result: ReplyResult,
}

/// What a request is answered with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReplyResult {
    /// An [`super::Inbound::Admin`]'s outcome.
    #[serde(rename = "admin")]
    Admin(#[serde(with = "admin_result")] AdminResult),
    /// An [`super::Inbound::Close`] is done: every member has been told.
    #[serde(rename = "closed")]
    Closed,
}

/// The JSON of an outbound batch (the `b` field of its stream entry).
///
/// Each payload is checked to be JSON text (valid UTF-8, one JSON value, no whitespace
/// around it) and written as it is. One that is not (which the server's encoder never
/// produces) is written as a base64 string and listed in `b`, so its bytes still arrive
/// exactly; [`decode_batch`] turns it back into the same bytes.
pub fn encode_batch(batch: &OutboundBatch) -> String {
    let mut base64_indices = Vec::new();
    let payloads = batch
        .payloads
        .iter()
        .enumerate()
        .map(|(index, bytes)| {
            let form = PayloadOut::of(bytes);
            if matches!(form, PayloadOut::Base64(_)) {
                base64_indices.push(index_u32(index));
            }
            form
        })
        .collect();
    encode_json(&BatchOut {
        e: batch.epoch,
        p: payloads,
        b: base64_indices,
        d: &batch.deliveries,
        r: &batch.replies,
        end: batch.ended,
    })
}

/// Reads an outbound batch; the error names the field at fault. Each payload is copied out
/// of `text` once, into its own [`Bytes`]; every item's index is checked to name one.
pub fn decode_batch(text: &str) -> Result<OutboundBatch, WireError> {
    let wire: BatchIn<'_> = decode_json(WHAT, text)?;
    let payloads = decode_payloads(&wire.p, &wire.b)?;
    check_indices(&wire.d, payloads.len())?;
    Ok(OutboundBatch {
        epoch: wire.e,
        payloads,
        deliveries: wire.d,
        replies: wire.r,
        ended: wire.end,
    })
}

/// What [`WireError::what`] says for a batch.
const WHAT: &str = "outbound batch";

/// A batch as it is written.
#[derive(Serialize)]
struct BatchOut<'a> {
    e: u64,
    p: Vec<PayloadOut<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    b: Vec<u32>,
    #[serde(skip_serializing_if = "slice_is_empty")]
    d: &'a [Delivery],
    #[serde(skip_serializing_if = "slice_is_empty")]
    r: &'a [Reply],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    end: bool,
}

fn slice_is_empty<T>(items: &&[T]) -> bool {
    items.is_empty()
}

/// A batch as it is read: the payloads still slices of the text.
#[derive(Deserialize)]
struct BatchIn<'a> {
    e: u64,
    #[serde(borrow, default)]
    p: Vec<&'a RawValue>,
    #[serde(default)]
    b: Vec<u32>,
    #[serde(default)]
    d: Vec<Delivery>,
    #[serde(default)]
    r: Vec<Reply>,
    #[serde(default)]
    end: bool,
}

/// One payload as it is written.
#[derive(Serialize)]
#[serde(untagged)]
enum PayloadOut<'a> {
    /// JSON text, written as it is.
    Json(&'a RawValue),
    /// Anything else, as a base64 string.
    Base64(String),
}

impl<'a> PayloadOut<'a> {
    /// How `bytes` is written: as it is if it is exactly one JSON value (so that reading it
    /// back gives the same bytes), else in base64.
    fn of(bytes: &'a [u8]) -> PayloadOut<'a> {
        let json = std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| serde_json::from_str::<&RawValue>(text).ok())
            .filter(|raw| raw.get().len() == bytes.len());
        match json {
            Some(raw) => PayloadOut::Json(raw),
            None => PayloadOut::Base64(base64_engine().encode(bytes)),
        }
    }
}

fn base64_engine() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// The payloads of a batch as bytes: the raw JSON of each, or the bytes of the base64
/// strings that `base64_indices` lists.
fn decode_payloads(raw: &[&RawValue], base64_indices: &[u32]) -> Result<Vec<Bytes>, WireError> {
    let mut base64 = BTreeSet::new();
    for (at, &index) in base64_indices.iter().enumerate() {
        if index as usize >= raw.len() {
            return Err(out_of_range(format!("b[{at}]"), index, raw.len()));
        }
        base64.insert(index as usize);
    }
    raw.iter()
        .enumerate()
        .map(|(index, payload)| {
            if base64.contains(&index) {
                decode_base64_payload(index, payload)
            } else {
                Ok(Bytes::copy_from_slice(payload.get().as_bytes()))
            }
        })
        .collect()
}

/// A payload kept in base64 (one that was not JSON text).
fn decode_base64_payload(index: usize, payload: &RawValue) -> Result<Bytes, WireError> {
    let path = format!("p[{index}]");
    let text: String = serde_json::from_str(payload.get()).map_err(|_| {
        WireError::at(
            WHAT,
            &path,
            "listed in `b`, so a base64 string, but not a string",
        )
    })?;
    base64_engine()
        .decode(text)
        .map(Bytes::from)
        .map_err(|e| WireError::at(WHAT, &path, format_args!("invalid base64: {e}")))
}

/// Every item's payload index names a payload.
fn check_indices(deliveries: &[Delivery], payloads: usize) -> Result<(), WireError> {
    for (d, delivery) in deliveries.iter().enumerate() {
        for (i, item) in delivery.items.iter().enumerate() {
            let index = match item {
                Item::Text(index) | Item::Numbered(_, index) => *index,
                Item::Close(..) | Item::Joined(_) | Item::Resumed(_) => continue,
            };
            if index as usize >= payloads {
                return Err(out_of_range(format!("d[{d}].i[{i}]"), index, payloads));
            }
        }
    }
    Ok(())
}

fn out_of_range(path: String, index: u32, payloads: usize) -> WireError {
    WireError::at(
        WHAT,
        path,
        format_args!("payload index {index} out of range (the batch has {payloads})"),
    )
}

/// A payload index as the batch holds it.
fn index_u32(index: usize) -> u32 {
    u32::try_from(index).expect("fewer than 2^32 payloads in one batch")
}

/// Collects one round's outputs into an [`OutboundBatch`].
///
/// Frames are deduplicated by their buffer: two [`Bytes`] with the same start and length
/// are the same frame (clones of one broadcast). The builder keeps a clone of every frame it
/// took, so no buffer it has seen can be freed and reused for different bytes while it
/// lives. Each socket's items keep the order they were added in, across every kind of call.
#[derive(Debug, Default)]
pub struct BatchBuilder {
    epoch: u64,
    payloads: Vec<Bytes>,
    /// (start address, length) of each payload's buffer → its index.
    interned: HashMap<(usize, usize), u32>,
    deliveries: Vec<Delivery>,
    /// Socket → index of its delivery.
    by_socket: HashMap<u64, usize>,
    replies: Vec<Reply>,
    ended: bool,
}

impl BatchBuilder {
    /// An empty batch of the owner of epoch `epoch`.
    pub fn new(epoch: u64) -> BatchBuilder {
        BatchBuilder {
            epoch,
            ..BatchBuilder::default()
        }
    }

    /// A frame for `socket`, as its outbox would have taken it. Pings are the member's own
    /// node's business (liveness is local) and are skipped.
    pub fn push(&mut self, socket: u64, frame: OutFrame) {
        let item = match frame {
            OutFrame::Text(bytes) => Item::Text(self.intern(bytes)),
            OutFrame::Numbered(seq, bytes) => Item::Numbered(seq, self.intern(bytes)),
            OutFrame::Close(code, reason) => Item::Close(code, reason),
            OutFrame::Ping(_) => return,
        };
        self.add(socket, item);
    }

    /// The answer to `socket`'s join.
    pub fn joined(&mut self, socket: u64, result: Result<(), ServerMessage>) {
        self.add(socket, Item::Joined(result));
    }

    /// The answer to `socket`'s resume.
    pub fn resumed(&mut self, socket: u64, answer: ResumeAnswer) {
        self.add(socket, Item::Resumed(answer));
    }

    /// The answer to request `request`.
    pub fn reply(&mut self, request: u64, result: ReplyResult) {
        self.replies.push(Reply { request, result });
    }

    /// The session ended: this batch is its last.
    pub fn ended(&mut self) {
        self.ended = true;
    }

    /// Nothing to write: no item, no reply, not ended.
    pub fn is_empty(&self) -> bool {
        self.deliveries.is_empty() && self.replies.is_empty() && !self.ended
    }

    /// The batch.
    pub fn build(self) -> OutboundBatch {
        OutboundBatch {
            epoch: self.epoch,
            payloads: self.payloads,
            deliveries: self.deliveries,
            replies: self.replies,
            ended: self.ended,
        }
    }

    /// The index of `bytes` among the payloads, added if its buffer is new.
    fn intern(&mut self, bytes: Bytes) -> u32 {
        let key = (bytes.as_ptr() as usize, bytes.len());
        if let Some(&index) = self.interned.get(&key) {
            return index;
        }
        let index = index_u32(self.payloads.len());
        self.payloads.push(bytes);
        self.interned.insert(key, index);
        index
    }

    /// Appends `item` to `socket`'s delivery, opening it if it is the socket's first.
    fn add(&mut self, socket: u64, item: Item) {
        let deliveries = &mut self.deliveries;
        let at = *self.by_socket.entry(socket).or_insert_with(|| {
            deliveries.push(Delivery {
                socket,
                items: Vec::new(),
            });
            deliveries.len() - 1
        });
        self.deliveries[at].items.push(item);
    }
}

/// A join's answer (`j`): `null` for `Ok`, the refusal (an `error`, through
/// `ServerMessage`'s own serde: its `code`, `message` and `details`) for `Err`.
mod join_result {
    use super::*;

    pub fn serialize<S: Serializer>(
        result: &Result<(), ServerMessage>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        result.as_ref().err().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Result<(), ServerMessage>, D::Error> {
        Ok(match Option::<ServerMessage>::deserialize(d)? {
            None => Ok(()),
            Some(refusal) => Err(refusal),
        })
    }
}

/// A resume's answer (`res`).
#[derive(Serialize, Deserialize)]
#[serde(remote = "ResumeAnswer")]
enum ResumeAnswerDef {
    #[serde(rename = "ok")]
    Resumed {
        #[serde(rename = "l")]
        last_in: u64,
    },
    #[serde(rename = "failed")]
    Failed(ResumeFailure),
    #[serde(rename = "invalid")]
    Invalid(String),
}

/// An admin action's outcome (`admin`): `{"ok":handoff id or null}` or `{"err":refusal}`.
mod admin_result {
    use super::*;

    #[derive(Serialize, Deserialize)]
    #[serde(remote = "AdminRefusal", rename_all = "snake_case")]
    enum AdminRefusalDef {
        NoSuchMember,
        IsHost,
        NoHost,
        Busy,
        NotEligible,
    }

    #[derive(Serialize, Deserialize)]
    enum AdminResultWire {
        #[serde(rename = "ok")]
        Ok(Option<String>),
        #[serde(rename = "err")]
        Err(#[serde(with = "AdminRefusalDef")] AdminRefusal),
    }

    pub fn serialize<S: Serializer>(result: &AdminResult, s: S) -> Result<S::Ok, S::Error> {
        match result {
            Ok(handoff) => AdminResultWire::Ok(handoff.clone()),
            Err(refusal) => AdminResultWire::Err(*refusal),
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<AdminResult, D::Error> {
        Ok(match AdminResultWire::deserialize(d)? {
            AdminResultWire::Ok(handoff) => Ok(handoff),
            AdminResultWire::Err(refusal) => Err(refusal),
        })
    }
}

#[cfg(test)]
mod tests {
    use loudsync_protocol::ErrorCode;
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn round_trip(batch: &OutboundBatch) -> String {
        let text = encode_batch(batch);
        let back = decode_batch(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(&back, batch, "{text}");
        text
    }

    fn frame(text: &'static str) -> Bytes {
        Bytes::from_static(text.as_bytes())
    }

    #[test]
    fn the_documented_example_is_what_a_builder_writes() {
        let message = Bytes::from(
            r#"{"type":"message","from":"c7","data":{"x":[1,2]},"timestamp":1700000000000}"#,
        );
        let mut builder = BatchBuilder::new(3);
        builder.push(1 << 40 | 2, OutFrame::Text(message.clone()));
        builder.push(2 << 40 | 1, OutFrame::Numbered(41, message));
        builder.reply(2 << 40 | 2, ReplyResult::Admin(Ok(None)));
        let text = round_trip(&builder.build());
        assert_eq!(
            text,
            concat!(
                r#"{"e":3,"p":[{"type":"message","from":"c7","data":{"x":[1,2]},"timestamp":1700000000000}],"#,
                r#""d":[{"s":1099511627778,"i":[{"t":0}]},{"s":2199023255553,"i":[{"n":[41,0]}]}],"#,
                r#""r":[{"q":2199023255554,"r":{"admin":{"ok":null}}}]}"#
            )
        );
    }

    #[test]
    fn a_broadcast_to_1000_members_stores_its_bytes_once() {
        let frame = Bytes::from(r#"{"type":"member_joined","member":{"clientId":"c9"}}"#);
        let mut builder = BatchBuilder::new(1);
        for socket in 0..1000 {
            builder.push(socket, OutFrame::Text(frame.clone()));
        }
        let batch = builder.build();
        assert_eq!(batch.payloads, vec![frame.clone()]);
        assert_eq!(batch.deliveries.len(), 1000);
        assert!(batch
            .deliveries
            .iter()
            .all(|d| d.items == vec![Item::Text(0)]));
        let text = round_trip(&batch);
        assert_eq!(text.matches("member_joined").count(), 1);
    }

    #[test]
    fn equal_bytes_in_different_buffers_are_different_payloads() {
        // Two heap buffers (equal static literals may share one address).
        let a = Bytes::from(r#"{"type":"pong"}"#.to_string());
        let b = Bytes::from(r#"{"type":"pong"}"#.to_string());
        let mut builder = BatchBuilder::new(1);
        builder.push(1, OutFrame::Text(a.clone()));
        builder.push(1, OutFrame::Text(b));
        builder.push(2, OutFrame::Text(a.slice(0..a.len())));
        let batch = builder.build();
        assert_eq!(batch.payloads.len(), 2);
        assert_eq!(
            batch.deliveries[0].items,
            vec![Item::Text(0), Item::Text(1)]
        );
        assert_eq!(batch.deliveries[1].items, vec![Item::Text(0)]);
    }

    #[test]
    fn a_sockets_items_keep_their_order_across_calls() {
        let welcome = frame(r#"{"type":"welcome"}"#);
        let list = frame(r#"{"type":"member_list","members":[]}"#);
        let mut builder = BatchBuilder::new(2);
        builder.push(7, OutFrame::Text(welcome.clone()));
        builder.push(8, OutFrame::Text(list.clone()));
        builder.joined(7, Ok(()));
        builder.push(7, OutFrame::Ping(*b"12345678"));
        builder.resumed(8, ResumeAnswer::Resumed { last_in: 4 });
        builder.push(7, OutFrame::Numbered(1, list.clone()));
        builder.push(7, OutFrame::Close(1000, "bye".into()));
        let batch = builder.build();
        assert_eq!(batch.payloads, vec![welcome, list]);
        assert_eq!(
            batch.deliveries,
            vec![
                Delivery {
                    socket: 7,
                    items: vec![
                        Item::Text(0),
                        Item::Joined(Ok(())),
                        Item::Numbered(1, 1),
                        Item::Close(1000, "bye".into()),
                    ],
                },
                Delivery {
                    socket: 8,
                    items: vec![
                        Item::Text(1),
                        Item::Resumed(ResumeAnswer::Resumed { last_in: 4 })
                    ],
                },
            ]
        );
        round_trip(&batch);
    }

    #[test]
    fn pings_are_skipped() {
        let mut builder = BatchBuilder::new(1);
        builder.push(1, OutFrame::Ping([0; 8]));
        assert!(builder.is_empty());
        assert_eq!(
            builder.build(),
            OutboundBatch {
                epoch: 1,
                ..OutboundBatch::default()
            }
        );
    }

    #[test]
    fn is_empty_until_an_item_a_reply_or_the_end() {
        let mut builder = BatchBuilder::new(1);
        assert!(builder.is_empty());
        builder.push(1, OutFrame::Close(1000, String::new()));
        assert!(!builder.is_empty());
        let mut builder = BatchBuilder::new(1);
        builder.reply(5, ReplyResult::Closed);
        assert!(!builder.is_empty());
        let mut builder = BatchBuilder::new(1);
        builder.ended();
        assert!(!builder.is_empty());
        let batch = builder.build();
        assert!(batch.ended);
        assert_eq!(round_trip(&batch), r#"{"e":1,"p":[],"end":true}"#);
    }

    #[test]
    fn join_refusals_round_trip_code_message_and_details() {
        let mut builder = BatchBuilder::new(4);
        builder.joined(
            1,
            Err(ServerMessage::Error {
                code: ErrorCode::SessionFull,
                message: "session K7P3XQ is full (8 of 8)".into(),
                details: Some(json!({"maxMembers": 8, "currentMembers": 8})),
            }),
        );
        builder.joined(
            2,
            Err(ServerMessage::error(
                ErrorCode::WrongPassword,
                "wrong password",
            )),
        );
        builder.push(2, OutFrame::Close(1000, "join rejected".into()));
        let text = round_trip(&builder.build());
        assert!(text.contains(r#""code":"session_full""#), "{text}");
    }

    #[test]
    fn every_resume_answer_round_trips() {
        let mut builder = BatchBuilder::new(1);
        builder.resumed(1, ResumeAnswer::Resumed { last_in: 0 });
        for (socket, failure) in [
            ResumeFailure::UnknownToken,
            ResumeFailure::Expired,
            ResumeFailure::BufferOverflow,
            ResumeFailure::SessionClosed,
        ]
        .into_iter()
        .enumerate()
        {
            builder.resumed(2 + socket as u64, ResumeAnswer::Failed(failure));
        }
        builder.resumed(9, ResumeAnswer::Invalid("lastSeq 9 is above 4".into()));
        round_trip(&builder.build());
    }

    #[test]
    fn every_reply_round_trips() {
        let mut builder = BatchBuilder::new(1);
        builder.reply(1, ReplyResult::Admin(Ok(Some("h1".into()))));
        builder.reply(2, ReplyResult::Admin(Ok(None)));
        for (request, refusal) in [
            AdminRefusal::NoSuchMember,
            AdminRefusal::IsHost,
            AdminRefusal::NoHost,
            AdminRefusal::Busy,
            AdminRefusal::NotEligible,
        ]
        .into_iter()
        .enumerate()
        {
            builder.reply(3 + request as u64, ReplyResult::Admin(Err(refusal)));
        }
        builder.reply(9, ReplyResult::Closed);
        let text = round_trip(&builder.build());
        assert!(text.contains(r#"{"err":"not_eligible"}"#), "{text}");
    }

    #[test]
    fn payloads_are_raw_json_not_escaped_strings() {
        let mut builder = BatchBuilder::new(1);
        builder.push(
            1,
            OutFrame::Text(frame(r#"{"type":"message","data":"a\"b"}"#)),
        );
        let text = encode_batch(&builder.build());
        assert!(
            text.contains(r#""p":[{"type":"message","data":"a\"b"}]"#),
            "{text}"
        );
    }

    #[test]
    fn payloads_that_are_not_json_text_survive_as_base64() {
        let payloads = vec![
            Bytes::from_static(b"\xff\xfe not utf-8"),
            frame(r#"{"type":"pong"}"#),
            frame(r#" {"type":"pong"}"#),
            frame(r#"{"type":"#),
            Bytes::new(),
            frame(r#""a string""#),
        ];
        let batch = OutboundBatch {
            epoch: 1,
            payloads,
            deliveries: (0..6)
                .map(|i| Delivery {
                    socket: i,
                    items: vec![Item::Text(i as u32)],
                })
                .collect(),
            ..OutboundBatch::default()
        };
        let text = round_trip(&batch);
        assert!(text.contains(r#""b":[0,2,3,4]"#), "{text}");
        assert!(text.contains(r#"{"type":"pong"},"#), "{text}");
        assert!(
            text.contains(r#""\"a string\""#) || text.contains(r#","a string"]"#),
            "{text}"
        );
    }

    /// The error's text for `text`.
    fn error(text: &str) -> String {
        decode_batch(text).unwrap_err().to_string()
    }

    #[test]
    fn an_index_out_of_range_is_an_error_naming_the_item() {
        let e = error(r#"{"e":1,"p":[{}],"d":[{"s":1,"i":[{"t":0},{"n":[3,1]}]}]}"#);
        assert_eq!(
            e,
            "outbound batch: d[0].i[1]: payload index 1 out of range (the batch has 1)"
        );
        let e = error(r#"{"e":1,"p":[{}],"b":[4]}"#);
        assert!(
            e.starts_with("outbound batch: b[0]: payload index 4"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_base64_payload_is_an_error_naming_it() {
        let e = error(r#"{"e":1,"p":[{}, "!!"],"b":[1]}"#);
        assert!(e.starts_with("outbound batch: p[1]: invalid base64"), "{e}");
        let e = error(r#"{"e":1,"p":[{}],"b":[0]}"#);
        assert!(e.starts_with("outbound batch: p[0]: listed in `b`"), "{e}");
    }

    #[test]
    fn decode_errors_name_the_field_path() {
        let e = error(r#"{"e":1,"p":[],"d":[{"s":1,"i":[{"zz":1}]}]}"#);
        assert!(
            e.starts_with("outbound batch: d[0].i[0]: unknown variant `zz`"),
            "{e}"
        );
        let e = error(r#"{"e":1,"p":[],"r":[{"q":1,"r":{"admin":{"err":"nope"}}}]}"#);
        assert!(
            e.starts_with("outbound batch: r[0].r.admin.err: unknown variant `nope`"),
            "{e}"
        );
        let e = error(
            r#"{"e":1,"d":[{"s":1,"i":[{"j":{"type":"error","code":"zzz","message":""}}]}]}"#,
        );
        assert!(e.starts_with("outbound batch: d[0].i[0].j"), "{e}");
        let e = error(r#"{"p":[]}"#);
        assert!(e.contains("missing field `e`"), "{e}");
        assert!(decode_batch(r#"{"e":1,"p":[{"a":}]}"#).is_err());
    }

    #[test]
    fn decoded_payloads_are_separate_copies() {
        let text = r#"{"e":1,"p":[{"a":1},[2]],"d":[{"s":1,"i":[{"t":1},{"t":0}]}]}"#;
        let batch = decode_batch(text).unwrap();
        assert_eq!(
            batch.payloads,
            vec![Bytes::from(r#"{"a":1}"#), Bytes::from("[2]")]
        );
    }

    proptest! {
        #[test]
        fn payload_bytes_round_trip_exactly(
            texts in prop::collection::vec(any::<String>(), 0..8),
            junk in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..16), 0..4),
        ) {
            // JSON strings (quotes, unicode, control characters escaped) as frames, and
            // arbitrary bytes.
            let mut builder = BatchBuilder::new(7);
            for (socket, text) in texts.iter().enumerate() {
                let frame = format!(r#"{{"type":"message","data":{}}}"#, serde_json::to_string(text).unwrap());
                builder.push(socket as u64, OutFrame::Numbered(socket as u64, Bytes::from(frame)));
                builder.push(socket as u64, OutFrame::Close(4000, text.clone()));
            }
            for bytes in junk {
                builder.push(99, OutFrame::Text(Bytes::from(bytes)));
            }
            let batch = builder.build();
            let back = decode_batch(&encode_batch(&batch)).unwrap();
            prop_assert_eq!(back, batch);
        }

        #[test]
        fn decoding_any_text_never_panics(text in any::<String>()) {
            let _ = decode_batch(&text);
        }

        #[test]
        fn decoding_a_damaged_batch_never_panics(cut in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut builder = BatchBuilder::new(3);
            builder.push(1, OutFrame::Text(frame(r#"{"type":"pong"}"#)));
            builder.push(1, OutFrame::Text(Bytes::from_static(b"\xff")));
            builder.joined(2, Err(ServerMessage::error(ErrorCode::SessionFull, "full")));
            builder.resumed(3, ResumeAnswer::Failed(ResumeFailure::Expired));
            builder.reply(4, ReplyResult::Admin(Err(AdminRefusal::Busy)));
            builder.ended();
            let mut bytes = encode_batch(&builder.build()).into_bytes();
            let at = cut.index(bytes.len());
            bytes[at] = byte;
            let _ = decode_batch(&String::from_utf8_lossy(&bytes));
            let _ = decode_batch(&String::from_utf8_lossy(&bytes[..at]));
        }
    }
}
