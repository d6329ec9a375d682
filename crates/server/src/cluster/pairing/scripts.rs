//! The Lua scripts of cluster pairing (the relay's lease and the owner's fenced write) and
//! the [`Scripts`] a node loads them into once.

use redis::Script;

/// Claims the free pairing relay: `KEYS` = owner, epoch counter, inbound stream; `ARGV` =
/// node, lease (ms), a random nonce. The lease's value is `NODE|EPOCH|NONCE` (the nonce tells
/// two claims apart even if Redis came back empty and counts epochs from 1 again). Answers
/// `{epoch, last inbound id}` (the new owner reads after it), or nil if the relay has an
/// owner. One script so that two nodes cannot both claim it.
pub const CLAIM: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. epoch .. '|' .. ARGV[3], 'PX', ARGV[2])
local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
local id = '0-0'
if last[1] then id = last[1][1] end
return {epoch, id}
"#;

/// Renews the relay's lease: `KEYS` = owner; `ARGV` = its value, lease (ms). 1 if renewed,
/// 0 if the lease is not (or no longer) that value.
pub const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#;

/// Gives the relay's lease up: `KEYS` = owner; `ARGV` = its value. 1 if released.
pub const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"#;

/// The owner's fenced write of one batch per node: `KEYS` = owner, then one outbound stream
/// per node; `ARGV` = the lease's value, max stream length, stream TTL (ms), then one batch JSON
/// per stream. Appends each batch and publishes on the stream's channel (its name and `!`);
/// 1 if written, 0 (nothing written) if the lease is not the writer's.
pub const SHIP: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 2, #KEYS do
  redis.call('XADD', KEYS[i], 'MAXLEN', '~', ARGV[2], '*', 'b', ARGV[i + 2])
  redis.call('PEXPIRE', KEYS[i], ARGV[3])
  redis.call('PUBLISH', KEYS[i] .. '!', '1')
end
return 1
"#;

/// The scripts, loaded once per node.
#[derive(Clone)]
pub(super) struct Scripts {
    pub(super) claim: Script,
    pub(super) renew: Script,
    pub(super) release: Script,
    pub(super) ship: Script,
}
