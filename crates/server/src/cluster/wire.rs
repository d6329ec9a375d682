//! The JSON of what crosses Redis in cluster mode: inbound entries (a session's inputs, in
//! the `e` field of `ls:{s:ID}:in`), outbound batches (a session's outputs, in the `b` field
//! of `ls:{s:ID}:out`) and session specs (`ls:{s:ID}:spec`). Pure serde_json, no Redis.
//!
//! # How it works
//!
//! Each of the three is written by one function and read back by one ([`encode_inbound`] /
//! [`decode_inbound`], [`encode_batch`] / [`decode_batch`], [`encode_spec`] / [`decode_spec`]).
//! Encoding cannot fail. Decoding never panics, on any text: what Redis holds may have been
//! written by another version of the server, or damaged, so a decode error is a [`WireError`]
//! naming what was read and the path of the field that is wrong (`inbound entry: cmd.c.msg.d:
//! ...`), as `serde_path_to_error` tracks it.
//!
//! The types of the core and the protocol crates carry no serde derives of their own (or
//! none fit for this), so their JSON is described here, with serde's remote derives
//! (`#[serde(remote = ...)]`): the compiler checks each description against the type it
//! describes, so a field or variant added there breaks the build here instead of being
//! dropped silently.
//!
//! Entries and batches are written on every message, so field names are short (one or two
//! letters) and absent optional fields are left out. Enums are externally tagged (`{"tag":
//! fields}`, or a bare `"tag"` for a variant without fields): serde reads those without
//! buffering, which is what lets application `data` and frame payloads pass through as raw
//! JSON, byte for byte, never re-parsed into a tree or escaped into a string. Unknown fields
//! are ignored (a newer node may add optional ones); unknown tags are errors.
//!
//! # Inbound entries (`e`)
//!
//! One of (`m` member id, `s` socket id, `n` node id, `q` seq or request id):
//!
//! | entry | JSON |
//! |---|---|
//! | `Join` | `{"join":{"n","s","m","j":{join fields},"d":"loudsync"\|"app","a":address,"c":{"t":token?},"r"?:resume token}}` |
//! | `Command` | `{"cmd":{"m","s","q"?,"c":command}}` |
//! | `Detach` | `{"detach":{"m","s","r":"left"\|"kicked"\|"timeout"\|"error","f":fatal}}` |
//! | `Resume` | `{"resume":{"n","s","m","t":token,"l":last seq}}` |
//! | `Close` | `{"close":{"r":reason,"c":code,"q"?:reply}}` |
//! | `Admin` | `{"admin":{"a":{"kick":{"m","r"?}}\|{"handoff":{"m"}},"q":reply}}` |
//! | `Tick` | `"tick"` |
//! | `NodeGone` | `{"gone":{"n"}}` |
//!
//! A command (`c`) is `"leave"`, `"list"`, `"media"`, `{"kick":{"m","r"?}}`,
//! `{"msg":{"d":data,"to"?}}`, `{"rtt":ms}`, `{"ack":seq}`, `{"report":server message}`,
//! `{"state":{"c":{"set":{..}}|{"patch":{..}},"v"?:base version,"t"?:term}}`,
//! `{"ready":bool}`, `{"handoff":{"to"?}}` or `{"answer":{"id","ok":bool}}`. The join fields
//! (`j`) are the `join` frame's own (`sessionId`, `deviceInfo`, ...), without `type` and
//! `timestamp`. An application message from a member:
//!
//! ```json
//! {"cmd":{"m":"c7","s":1099511627777,"q":12,"c":{"msg":{"d":{"x":[1,2]},"to":"c2"}}}}
//! ```
//!
//! # Outbound batches (`b`)
//!
//! `{"e":epoch,"p":[payload, ...],"b"?:[index, ...],"d"?:[delivery, ...],"r"?:[reply, ...],
//! "end"?:true}`. `p` holds each distinct frame once, as the raw JSON the server encoded it
//! to; items refer to it by index, so a broadcast to 1000 members stores its bytes once. A
//! delivery is `{"s":socket,"i":[item, ...]}`, its items in the order that socket gets them:
//! `{"t":index}` (a text frame), `{"n":[seq,index]}` (a numbered frame), `{"x":[code,reason]}`
//! (close), `{"j":null}` (joined) or `{"j":{"type":"error","code",..}}` (refused),
//! `{"res":{"ok":{"l":last in}}|{"failed":reason}|{"invalid":text}}` (a resume's answer). A
//! reply is `{"q":request,"r":{"admin":{"ok":handoff id or null}|{"err":refusal}}|"closed"}`.
//! `b` lists the payloads that were not valid JSON text (which should not happen): those are
//! kept as base64 strings in `p`, so no byte is lost. A message to two members, one of them
//! numbered, and the answer to a kick:
//!
//! ```json
//! {"e":3,"p":[{"type":"message","from":"c7","data":{"x":[1,2]},"timestamp":1700000000000}],
//!  "d":[{"s":1099511627778,"i":[{"t":0}]},{"s":2199023255553,"i":[{"n":[41,0]}]}],
//!  "r":[{"q":2199023255554,"r":{"admin":{"ok":null}}}]}
//! ```
//!
//! # Session specs
//!
//! Written once per session, so readable: `{"id","name","maxMembers","access":{"host":"open"|
//! {"device":id}|"token_only","password"?:SHA-256 digest in hex,"hostName"?}}`. The digest
//! never leaves the servers' side (Redis, the admin API).

mod inbound;
mod outbound;
mod spec;

use std::fmt;

use serde::Deserialize;

pub use inbound::{decode_inbound, encode_inbound, Inbound};
pub use outbound::{
    decode_batch, encode_batch, BatchBuilder, Delivery, Item, OutboundBatch, Reply, ReplyResult,
};
pub use spec::{decode_spec, encode_spec};

/// Why a text read from Redis is not what it should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct WireError {
    /// What was being read: `inbound entry`, `outbound batch` or `session spec`.
    pub what: &'static str,
    /// The path of the field at fault, e.g. `cmd.c.msg.d` or `d[2].i[0].t` (`.` for the
    /// whole text).
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl WireError {
    /// An error about the field at `path` of a `what`.
    fn at(what: &'static str, path: impl Into<String>, message: impl fmt::Display) -> WireError {
        WireError {
            what,
            path: path.into(),
            message: message.to_string(),
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() || self.path == "." {
            write!(f, "{}: {}", self.what, self.message)
        } else {
            write!(f, "{}: {}: {}", self.what, self.path, self.message)
        }
    }
}

/// Reads `text` as one JSON value of type `T` (nothing but whitespace after it), naming the
/// path of the field at fault if it is not one.
fn decode_json<'de, T: Deserialize<'de>>(
    what: &'static str,
    text: &'de str,
) -> Result<T, WireError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value: T = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| WireError::at(what, e.path().to_string(), e.inner()))?;
    de.end().map_err(|e| WireError::at(what, ".", e))?;
    Ok(value)
}

/// Serialises a value of this module's schema. Nothing in it can fail to serialise: every
/// map has string keys and every custom serialiser here is infallible.
fn encode_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("the cluster wire types always serialise")
}
