//! The names of every Redis key and pub/sub channel cluster mode uses, in one place.
//!
//! Cluster-wide keys (`ls:cluster`, `ls:node_seq`, `ls:nodes`, `ls:node:NODE`, `ls:sessions`,
//! `ls:tok:TOKEN`) are plain names. Every key of one session carries the session's **hash tag**
//! `{s:ID}`, where `ID` is [`loudsync_core::ids::session_key`] of the session id (upper case,
//! no dashes, so every spelling of an id names the same keys). Redis Cluster hashes only the
//! text between the first `{` and the next `}`, so all keys of a session live in one slot and
//! a Lua script may touch all of them: the design runs on a Redis Cluster unchanged, as long as
//! no script (or `MULTI`) mixes keys of two sessions or a session key with a cluster-wide key.
//!
//! Channels are not keys (Redis Cluster broadcasts `PUBLISH` to every shard), but they carry
//! the same tag so a wake-up names its session: `ls:{s:ID}:in!` wakes the owner (an inbound
//! entry arrived), `ls:{s:ID}:out!` wakes the nodes holding members (an outbound batch
//! arrived). [`parse_channel`] turns a channel name back into the session and direction.
//! One channel is cluster-wide: [`RELEASED_CHANNEL`] (a node handed its sessions over).
//!
//! Everything here is a pure function of its arguments.

use loudsync_core::ids::session_key;

/// The cluster epoch: a random string `SET NX` by the first node. A different value later
/// means Redis came back empty.
pub const CLUSTER_EPOCH: &str = "ls:cluster";

/// The counter `INCR`ed by every node at start for its node number.
pub const NODE_SEQ: &str = "ls:node_seq";

/// The set of every node id seen (filter by [`node`] existing for the live ones).
pub const NODES: &str = "ls:nodes";

/// The set of live session ids (as created, e.g. `K7P3XQ`).
pub const SESSIONS: &str = "ls:sessions";

/// The prefix of every key and channel of cluster pairing ([`super::pairing`]).
pub const PAIRING_PREFIX: &str = "ls:pairing:";

/// The lease of the cluster's one pairing relay: `NODE|EPOCH|NONCE`, with a TTL.
pub const PAIRING_OWNER: &str = "ls:pairing:owner";

/// The counter of pairing relay epochs (one more per claim).
pub const PAIRING_EPOCH: &str = "ls:pairing:epoch";

/// The pairing relay's admin view (JSON of its clients), written by its owner.
pub const PAIRING_VIEW: &str = "ls:pairing:view";

/// The stream of every node's pairing inputs, read by the relay's owner.
pub const PAIRING_IN: &str = "ls:pairing:in";

/// The channel the owner of the pairing relay is woken on.
pub const PAIRING_IN_CHANNEL: &str = "ls:pairing:in!";

/// The stream of what the pairing relay sends to the connections of `node`; its channel is
/// the same name followed by `!`.
pub fn pairing_out(node: &str) -> String {
    format!("ls:pairing:out:{node}")
}

/// The cluster-wide channel a node publishes on when it released its sessions (rolling
/// restart), so the others look for orphans at once instead of at their next scan.
pub const RELEASED_CHANNEL: &str = "ls:released!";

/// Prefix of a session's keys and channels: `ls:{s:`.
const SESSION_PREFIX: &str = "ls:{s:";

/// Suffix of a session's inbound wake-up channel (after the closing `}`).
const INBOUND_CHANNEL_SUFFIX: &str = "}:in!";

/// Suffix of a session's outbound wake-up channel (after the closing `}`).
const OUTBOUND_CHANNEL_SUFFIX: &str = "}:out!";

/// The liveness key of a node: `ls:node:NODE`.
pub fn node(node: &str) -> String {
    format!("ls:node:{node}")
}

/// The key of a resume token: `ls:tok:TOKEN`.
pub fn token(token: &str) -> String {
    format!("ls:tok:{token}")
}

/// The hash tag of a session: `{s:ID}` with `ID` the session's key.
pub fn hash_tag(session_id: &str) -> String {
    format!("{{s:{}}}", session_key(session_id))
}

/// The value of a session's `owner` key: `NODE|EPOCH`.
pub fn owner_value(node: &str, epoch: u64) -> String {
    format!("{node}|{epoch}")
}

/// Parses an `owner` value back into `(node, epoch)`; `None` if it is not `NODE|EPOCH`.
/// The epoch follows the last `|`, so a node id may itself contain `|`.
pub fn parse_owner(value: &str) -> Option<(String, u64)> {
    let (node, epoch) = value.rsplit_once('|')?;
    let epoch = epoch.parse().ok()?;
    Some((node.to_owned(), epoch))
}

/// Which way a wake-up channel points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `ls:{s:ID}:in!`: an inbound entry arrived; the owner should read.
    Inbound,
    /// `ls:{s:ID}:out!`: an outbound batch arrived; member nodes should read.
    Outbound,
}

/// Splits a wake-up channel name into the session key (`ID`, already upper case) and its
/// direction; `None` for any other channel.
pub fn parse_channel(channel: &str) -> Option<(String, Direction)> {
    let rest = channel.strip_prefix(SESSION_PREFIX)?;
    let (id, direction) = if let Some(id) = rest.strip_suffix(INBOUND_CHANNEL_SUFFIX) {
        (id, Direction::Inbound)
    } else {
        (
            rest.strip_suffix(OUTBOUND_CHANNEL_SUFFIX)?,
            Direction::Outbound,
        )
    };
    if id.is_empty() {
        return None;
    }
    Some((id.to_owned(), direction))
}

/// Every key and channel of one session, all with the session's hash tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionKeys {
    /// `ls:{s:ID}:spec`: JSON of the session spec; its existence is the session's.
    pub spec: String,
    /// `ls:{s:ID}:owner`: `NODE|EPOCH` of the owner, with the lease as its TTL.
    pub owner: String,
    /// `ls:{s:ID}:epoch`: the counter `INCR`ed at every claim.
    pub epoch: String,
    /// `ls:{s:ID}:in`: the inbound stream (field `e`).
    pub inbound: String,
    /// `ls:{s:ID}:out`: the outbound stream (field `b`).
    pub outbound: String,
    /// `ls:{s:ID}:cursor`: id of the last inbound entry the owner applied.
    pub cursor: String,
    /// `ls:{s:ID}:view`: JSON of the session's admin view.
    pub view: String,
    /// `ls:{s:ID}:in!`: the channel waking the owner.
    pub inbound_channel: String,
    /// `ls:{s:ID}:out!`: the channel waking member nodes.
    pub outbound_channel: String,
}

impl SessionKeys {
    /// The keys of the session `session_id` (any spelling: the key is normalised).
    pub fn new(session_id: &str) -> SessionKeys {
        let base = format!("ls:{}", hash_tag(session_id));
        SessionKeys {
            spec: format!("{base}:spec"),
            owner: format!("{base}:owner"),
            epoch: format!("{base}:epoch"),
            inbound: format!("{base}:in"),
            outbound: format!("{base}:out"),
            cursor: format!("{base}:cursor"),
            view: format!("{base}:view"),
            inbound_channel: format!("{base}:in!"),
            outbound_channel: format!("{base}:out!"),
        }
    }

    /// The wake-up channel of one direction.
    pub fn channel(&self, direction: Direction) -> &str {
        match direction {
            Direction::Inbound => &self.inbound_channel,
            Direction::Outbound => &self.outbound_channel,
        }
    }

    /// The data keys (not the channels).
    pub fn all_keys(&self) -> [&str; 7] {
        [
            &self.spec,
            &self.owner,
            &self.epoch,
            &self.inbound,
            &self.outbound,
            &self.cursor,
            &self.view,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Redis Cluster hashes: the text between the first `{` and the next `}` if it is
    /// not empty, else the whole key.
    fn cluster_hash_input(key: &str) -> &str {
        if let Some(open) = key.find('{') {
            if let Some(len) = key[open + 1..].find('}') {
                if len > 0 {
                    return &key[open + 1..open + 1 + len];
                }
            }
        }
        key
    }

    #[test]
    fn the_keys_of_a_session_have_the_documented_names() {
        let keys = SessionKeys::new("K7P3XQ");
        assert_eq!(keys.spec, "ls:{s:K7P3XQ}:spec");
        assert_eq!(keys.owner, "ls:{s:K7P3XQ}:owner");
        assert_eq!(keys.epoch, "ls:{s:K7P3XQ}:epoch");
        assert_eq!(keys.inbound, "ls:{s:K7P3XQ}:in");
        assert_eq!(keys.outbound, "ls:{s:K7P3XQ}:out");
        assert_eq!(keys.cursor, "ls:{s:K7P3XQ}:cursor");
        assert_eq!(keys.view, "ls:{s:K7P3XQ}:view");
        assert_eq!(keys.inbound_channel, "ls:{s:K7P3XQ}:in!");
        assert_eq!(keys.outbound_channel, "ls:{s:K7P3XQ}:out!");
        assert_eq!(keys.channel(Direction::Inbound), "ls:{s:K7P3XQ}:in!");
        assert_eq!(keys.channel(Direction::Outbound), "ls:{s:K7P3XQ}:out!");
    }

    #[test]
    fn every_key_of_a_session_hashes_to_the_same_slot_input() {
        let keys = SessionKeys::new("fri_1");
        for key in keys.all_keys() {
            assert_eq!(cluster_hash_input(key), "s:FRI_1", "{key}");
        }
        assert_ne!(
            cluster_hash_input(&SessionKeys::new("fri1").spec),
            "s:FRI_1",
            "`_` is part of the id"
        );
    }

    #[test]
    fn any_spelling_of_an_id_names_the_same_keys() {
        assert_eq!(SessionKeys::new("k7p-3xq"), SessionKeys::new("K7P3XQ"));
        assert_eq!(hash_tag("k7p-3xq"), "{s:K7P3XQ}");
    }

    #[test]
    fn cluster_wide_keys() {
        assert_eq!(node("n1"), "ls:node:n1");
        assert_eq!(token("abc"), "ls:tok:abc");
        assert_eq!(CLUSTER_EPOCH, "ls:cluster");
        assert_eq!(NODE_SEQ, "ls:node_seq");
        assert_eq!(NODES, "ls:nodes");
        assert_eq!(SESSIONS, "ls:sessions");
        assert_eq!(
            parse_channel(RELEASED_CHANNEL),
            None,
            "not a session's channel"
        );
    }

    #[test]
    fn owner_values_round_trip() {
        assert_eq!(owner_value("n1", 7), "n1|7");
        assert_eq!(parse_owner("n1|7"), Some(("n1".to_owned(), 7)));
        assert_eq!(parse_owner("a|b|12"), Some(("a|b".to_owned(), 12)));
        assert_eq!(parse_owner("n1"), None);
        assert_eq!(parse_owner("n1|x"), None);
        assert_eq!(parse_owner("n1|-1"), None);
    }

    #[test]
    fn channels_parse_back_to_their_session_and_direction() {
        let keys = SessionKeys::new("k7p3xq");
        assert_eq!(
            parse_channel(&keys.inbound_channel),
            Some(("K7P3XQ".to_owned(), Direction::Inbound))
        );
        assert_eq!(
            parse_channel(&keys.outbound_channel),
            Some(("K7P3XQ".to_owned(), Direction::Outbound))
        );
        assert_eq!(parse_channel("ls:{s:}:in!"), None);
        assert_eq!(parse_channel("ls:{s:AB}:spec"), None);
        assert_eq!(parse_channel("other:{s:AB}:in!"), None);
        assert_eq!(parse_channel("ls:{s:AB}:in"), None);
    }

    proptest::proptest! {
        /// Every session id's channels parse back to its key, whatever characters it has.
        #[test]
        fn channels_round_trip(id in "[A-Za-z0-9_{}|:!-]{1,40}") {
            let keys = SessionKeys::new(&id);
            let key = session_key(&id);
            proptest::prop_assume!(!key.is_empty());
            proptest::prop_assert_eq!(
                parse_channel(&keys.inbound_channel),
                Some((key.clone(), Direction::Inbound))
            );
            proptest::prop_assert_eq!(
                parse_channel(&keys.outbound_channel),
                Some((key, Direction::Outbound))
            );
        }
    }
}
