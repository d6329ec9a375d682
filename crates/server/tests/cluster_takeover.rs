//! The takeover bound of issue 16 at a lease long enough for it to matter: a session whose
//! owner stopped renewing is claimed within a lease plus a second of its last renewal, here
//! within a few hundred milliseconds of its owner key's expiry, at a 6 s lease whose regular
//! takeover scan (every third of a lease, 2 s) alone would be up to 2 s late.
//!
//! Two in-process nodes over one real `redis-server`. Three sessions are created on node `a`;
//! then their owner keys are overwritten, behind the nodes' backs, by a node that does not
//! exist ("ghost"), expiring 2.5 s, 3.1 s and 3.7 s later: as if their owner renewed and died
//! at once. Each must be claimed by a live node at most [`SLACK`] after its expiry, and not
//! before it (the fence holds). With scans every 2 s alone, the two nodes scan at most twice
//! within the 1.6 s those three windows span, so one of the three would always be late: the
//! test fails without the expiry-driven scan.

mod common;
#[path = "common/redis.rs"]
mod redis_harness;

use std::time::{Duration, Instant};

use common::*;
use loudsync_server::cluster::keys::{parse_owner, SessionKeys};
use loudsync_server::{Server, ServerConfig};
use redis_harness::{RedisOptions, RedisServer};
use serde_json::json;

const LEASE: Duration = Duration::from_secs(6);

/// How late after the owner key's expiry a claim may come: the timer's margin, one scan's
/// round trips, the claim itself and this test's own 10 ms polling, on a loaded machine.
const SLACK: Duration = Duration::from_millis(500);

fn node_config(url: &str, id: &str) -> ServerConfig {
    ServerConfig {
        redis: Some(url.to_string()),
        node_id: Some(id.to_string()),
        lease: LEASE,
        cluster_poll: Duration::from_millis(50),
        ..test_config()
    }
}

async fn raw(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn owner_of(conn: &mut redis::aio::MultiplexedConnection, session: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(SessionKeys::new(session).owner)
        .query_async(conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_owners_sessions_are_claimed_right_after_their_leases_expire() {
    let redis = RedisServer::start(RedisOptions::default());
    let a = Server::bind(node_config(&redis.url(), "a")).await.unwrap();
    let _b = Server::bind(node_config(&redis.url(), "b")).await.unwrap();
    let sessions = ["tk1", "tk2", "tk3"];
    for id in sessions {
        let (status, body) = post(&http(&a), json!({"id": id, "name": id})).await;
        assert_eq!(status, 201, "{body}");
    }
    let mut conn = raw(&redis).await;
    let mut epochs = Vec::new();
    for id in sessions {
        let owner = owner_of(&mut conn, id).await.expect("a owns it");
        let (node, epoch) = parse_owner(&owner).unwrap();
        assert_eq!(node, "a");
        epochs.push(epoch);
    }

    // The "ghost" owner renews all three and dies.
    let lives = [2_500u64, 3_100, 3_700];
    let set_at = Instant::now();
    let mut pipe = redis::pipe();
    for ((id, epoch), ms) in sessions.iter().zip(&epochs).zip(lives) {
        pipe.cmd("SET")
            .arg(SessionKeys::new(id).owner)
            .arg(format!("ghost|{epoch}"))
            .arg("PX")
            .arg(ms);
    }
    let _: () = pipe.query_async(&mut conn).await.unwrap();

    let mut claimed: [Option<Duration>; 3] = [None; 3];
    let deadline = set_at + LEASE * 2;
    while claimed.iter().any(Option::is_none) {
        assert!(Instant::now() < deadline, "not all claimed: {claimed:?}");
        for (i, id) in sessions.iter().enumerate() {
            if claimed[i].is_some() {
                continue;
            }
            let Some(owner) = owner_of(&mut conn, id).await else {
                continue;
            };
            let (node, epoch) = parse_owner(&owner).unwrap();
            if node == "ghost" {
                continue;
            }
            let at = set_at.elapsed();
            assert!(node == "a" || node == "b", "{owner}");
            assert!(epoch > epochs[i], "a takeover raises the epoch: {owner}");
            claimed[i] = Some(at);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (i, at) in claimed.iter().enumerate() {
        let at = at.unwrap();
        let expiry = Duration::from_millis(lives[i]);
        assert!(
            at + Duration::from_millis(50) >= expiry,
            "{}: claimed at {at:?}, before its owner key expired at {expiry:?}",
            sessions[i]
        );
        assert!(
            at <= expiry + SLACK,
            "{}: claimed at {at:?}, {:?} after its owner key expired",
            sessions[i],
            at - expiry
        );
    }
}
