//! The Lua scripts of cluster mode: the steps that must be atomic in Redis.
//!
//! Redis runs a script as one command: nothing else runs between its first and last call, so
//! a check ("is the owner still `NODE|EPOCH`?") and the writes it guards cannot be split by
//! another node's claim. That is the **fence**: a paused or partitioned former owner wakes up,
//! sends its write, and the script finds a different owner (or none) and writes nothing. A
//! script is also one round trip, so a write never half-happens when the connection breaks:
//! Redis either ran all of it or none of it.
//!
//! Conventions, for Redis Cluster and for reading them:
//! - every key a script touches is passed in `KEYS[]` (never built inside the script), and all
//!   keys of one call belong to **one session** (one hash tag, so one slot). The one step that
//!   would need a key of another slot, removing an ended session from `ls:sessions`, is a
//!   separate command the store sends after [`APPEND_OUTBOUND`] succeeded.
//! - a channel name is an `ARGV` (channels are not keys; `PUBLISH` reaches every shard).
//! - Lua sees a missing key's `GET` as `false`, never `nil`; comparing `false` with a string
//!   is simply unequal, so `GET owner ~= ARGV[1]` covers "no owner" and "another owner" alike.
//! - a script answers `false` (a nil reply) for "refused" and a value for "done", so the store
//!   reads `Option<_>`.
//!
//! [`Scripts`] holds them as [`redis::Script`]s: those run by `EVALSHA` and load the source
//! once on `NOSCRIPT` (a restarted Redis has an empty script cache; that is handled).

use redis::Script;

/// Claims a free session: `KEYS` = owner, epoch, spec; `ARGV` = node, lease (ms).
///
/// Answers the new epoch, or nil when the session has an owner already, does not exist (no
/// spec) or is ending (its spec has a TTL: set by [`APPEND_OUTBOUND`] when it ended). Atomic
/// because "owner free?" and "owner := me" must not be split: two nodes claiming at once
/// would otherwise both see it free. `INCR epoch` happens only on success, so epochs rise by
/// exactly one per successful claim and a later claim always has a higher epoch than any
/// earlier owner's, which is what every fenced write compares.
pub const CLAIM: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
if redis.call('PTTL', KEYS[3]) ~= -1 then return false end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. epoch, 'PX', ARGV[2])
return epoch
"#;

/// Renews a lease: `KEYS` = owner; `ARGV` = `NODE|EPOCH`, lease (ms). Answers 1 if renewed,
/// 0 if the owner is not (or no longer) `NODE|EPOCH`.
///
/// Atomic because a plain `PEXPIRE` after a separate `GET` could extend the lease of a new
/// owner that claimed in between; here the check and the extension are one step.
pub const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#;

/// Gives a lease up: `KEYS` = owner; `ARGV` = `NODE|EPOCH`. Answers 1 if released, 0 if the
/// owner was not `NODE|EPOCH` (nothing deleted).
///
/// Atomic for the same reason as [`RENEW`]: a `DEL` after a separate check could delete a
/// new owner's lease.
pub const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"#;

/// Appends an entry to a session's inbound stream and wakes its owner: `KEYS` = spec, inbound
/// stream; `ARGV` = entry JSON, inbound channel, session id. Answers the new entry id, or nil
/// if the session does not exist (no spec) or has ended (its spec has a TTL).
///
/// Not fenced (any node holding a member may append); one script so that the wake-up is never
/// lost for an entry that was written (and never sent for one that was not), and so that an
/// entry for a session that is gone or ending (no owner will ever read it) is refused instead
/// of creating a stream nobody would ever delete.
pub const APPEND_INBOUND: &str = r#"
if redis.call('PTTL', KEYS[1]) ~= -1 then return false end
local id = redis.call('XADD', KEYS[2], '*', 'e', ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return id
"#;

/// The owner's own inbound entry (its `Tick` timer): `KEYS` = owner, inbound stream; `ARGV` =
/// `NODE|EPOCH`, entry JSON, inbound channel, session id. Answers the new entry id, or nil if
/// the caller is not the owner (nothing written).
///
/// Fenced: the check and the `XADD` are one step, so a former owner's timer can never enter
/// the stream after a takeover (the new owner would apply it as if it were its own).
pub const APPEND_INBOUND_FENCED: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local id = redis.call('XADD', KEYS[2], '*', 'e', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return id
"#;

/// The owner's output for one batch of inbound entries.
///
/// `KEYS` = owner, outbound stream, cursor, view, spec, inbound stream.
/// `ARGV` = `NODE|EPOCH`, batch JSON, cursor, view JSON, `1` if the view is to be written,
/// `MINID` to trim the outbound stream to (`""`: no trim), `1` if the session ended,
/// outbound channel, session id, how long an ended session's keys stay (ms).
///
/// Answers the new outbound entry id, or nil if the caller is not the owner (nothing written).
///
/// Fenced and atomic: the output batch and the cursor saying which inbound entries it answers
/// are written together or not at all, so after a takeover the new owner resumes exactly after
/// the last batch members can see: nothing is sent twice, nothing is lost. When the session
/// ended, the owner key goes (no one may claim or write any more; [`CLAIM`] also refuses a
/// spec with a TTL) and the other keys expire after a drain time, so member nodes can still
/// read the last batch. Removing the id from `ls:sessions` would touch another slot, so the
/// store does it right after this script, as its own command.
pub const APPEND_OUTBOUND: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local id = redis.call('XADD', KEYS[2], '*', 'b', ARGV[2])
redis.call('SET', KEYS[3], ARGV[3])
if ARGV[5] == '1' then redis.call('SET', KEYS[4], ARGV[4]) end
if ARGV[6] ~= '' then redis.call('XTRIM', KEYS[2], 'MINID', ARGV[6]) end
redis.call('PUBLISH', ARGV[8], ARGV[9])
if ARGV[7] == '1' then
  redis.call('DEL', KEYS[1])
  for i = 2, 6 do redis.call('PEXPIRE', KEYS[i], ARGV[10]) end
end
return id
"#;

/// Sets the cluster epoch if there is none and answers the one that holds: `KEYS` =
/// `ls:cluster`; `ARGV` = this node's candidate.
///
/// One script so that the answer is the value the `SET NX` raced against, even if another
/// node's candidate won a moment earlier.
pub const CLUSTER_EPOCH: &str = r#"
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
"#;

/// The scripts, ready to run (each knows its SHA1).
#[derive(Debug, Clone)]
pub struct Scripts {
    /// [`CLAIM`].
    pub claim: Script,
    /// [`RENEW`].
    pub renew: Script,
    /// [`RELEASE`].
    pub release: Script,
    /// [`APPEND_INBOUND`].
    pub append_inbound: Script,
    /// [`APPEND_INBOUND_FENCED`].
    pub append_inbound_fenced: Script,
    /// [`APPEND_OUTBOUND`].
    pub append_outbound: Script,
    /// [`CLUSTER_EPOCH`].
    pub cluster_epoch: Script,
}

impl Scripts {
    /// Hashes every script.
    pub fn new() -> Scripts {
        Scripts {
            claim: Script::new(CLAIM),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
            append_inbound: Script::new(APPEND_INBOUND),
            append_inbound_fenced: Script::new(APPEND_INBOUND_FENCED),
            append_outbound: Script::new(APPEND_OUTBOUND),
            cluster_epoch: Script::new(CLUSTER_EPOCH),
        }
    }
}

impl Default for Scripts {
    fn default() -> Scripts {
        Scripts::new()
    }
}
