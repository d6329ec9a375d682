//! The Redis layer of cluster mode against a real `redis-server` (one per test, on its own
//! loopback port and directory): every `Store` method and Lua script, the fences, the expiry
//! of leases, the pub/sub wake-ups, and what happens when Redis stops, restarts or dies.

#[path = "common/redis.rs"]
mod redis_harness;

use std::time::{Duration, Instant};

use loudsync_server::cluster::store::{OutboundWrite, Store, StoreError, Wake, ENDED_DRAIN};
use redis_harness::{RedisOptions, RedisServer};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// How long a test waits for something that should happen.
const WAIT: Duration = Duration::from_secs(5);

const LEASE: Duration = Duration::from_secs(10);

const SPEC: &str = r#"{"id":"K7P3XQ","name":"test"}"#;

fn redis() -> RedisServer {
    RedisServer::start(RedisOptions::default())
}

async fn store(server: &RedisServer) -> (Store, UnboundedReceiver<Wake>) {
    let (tx, rx) = unbounded_channel();
    let store = Store::connect(&server.url(), tx).await.expect("connect");
    (store, rx)
}

/// A plain connection for looking at Redis behind the store's back.
async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn pttl(server: &RedisServer, key: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut raw(server).await)
        .await
        .unwrap()
}

async fn next_wake(wakes: &mut UnboundedReceiver<Wake>) -> Wake {
    tokio::time::timeout(WAIT, wakes.recv())
        .await
        .expect("a wake-up in time")
        .expect("the wake channel is open")
}

/// The next wake-up that is not a disconnection.
async fn next_message(wakes: &mut UnboundedReceiver<Wake>) -> Wake {
    loop {
        match next_wake(wakes).await {
            Wake::Disconnected => continue,
            wake => return wake,
        }
    }
}

/// Waits (polling) until `ping` succeeds again.
async fn until_reachable(store: &Store) {
    let deadline = Instant::now() + WAIT;
    while store.ping().await.is_err() {
        assert!(Instant::now() < deadline, "Redis did not come back in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn write(batch: &str, cursor: &str) -> OutboundWrite {
    OutboundWrite {
        batch: batch.to_owned(),
        cursor: cursor.to_owned(),
        view: None,
        trim_min_id: None,
        ended: false,
        session_id: "K7P3XQ".to_owned(),
    }
}

async fn created_session(store: &Store) {
    assert!(store.create_session("K7P3XQ", SPEC).await.unwrap());
}

#[tokio::test]
async fn ping_cluster_epoch_and_node_numbers() {
    let server = redis();
    let (a, _) = store(&server).await;
    let (b, _) = store(&server).await;
    a.ping().await.unwrap();
    assert!(a.connected());
    assert_eq!(a.cluster_epoch("first").await.unwrap(), "first");
    assert_eq!(
        b.cluster_epoch("second").await.unwrap(),
        "first",
        "the first node's epoch stays"
    );
    assert_eq!(a.node_number().await.unwrap(), 1);
    assert_eq!(b.node_number().await.unwrap(), 2);
    assert_eq!(a.node_number().await.unwrap(), 3);
}

#[tokio::test]
async fn node_liveness_keys() {
    let server = redis();
    let (s, _) = store(&server).await;
    assert!(!s.node_alive("n1").await.unwrap());
    s.renew_node("n1", r#"{"number":1}"#, LEASE).await.unwrap();
    s.renew_node("n2", r#"{"number":2}"#, Duration::from_millis(100))
        .await
        .unwrap();
    assert!(s.node_alive("n1").await.unwrap());
    let ttl = pttl(&server, "ls:node:n1").await;
    assert!(ttl > 9_000 && ttl <= 10_000, "PX lease: {ttl}");

    // n2's lease runs out; it stays in ls:nodes but is not live.
    let deadline = Instant::now() + WAIT;
    while s.node_alive("n2").await.unwrap() {
        assert!(Instant::now() < deadline, "n2's key never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        s.live_nodes().await.unwrap(),
        vec![("n1".to_owned(), r#"{"number":1}"#.to_owned())]
    );
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg("ls:nodes")
        .query_async(&mut raw(&server).await)
        .await
        .unwrap();
    assert_eq!(members.len(), 2, "{members:?}");

    s.remove_node("n1").await.unwrap();
    assert!(!s.node_alive("n1").await.unwrap());
    assert_eq!(s.live_nodes().await.unwrap(), vec![]);
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg("ls:nodes")
        .query_async(&mut raw(&server).await)
        .await
        .unwrap();
    assert_eq!(members, vec!["n2".to_owned()]);
}

#[tokio::test]
async fn sessions_are_created_once() {
    let server = redis();
    let (s, _) = store(&server).await;
    assert_eq!(s.session_spec("K7P3XQ").await.unwrap(), None);
    assert!(s.create_session("K7P3XQ", SPEC).await.unwrap());
    assert!(
        !s.create_session("k7p-3xq", r#"{"other":1}"#).await.unwrap(),
        "another spelling of the id is the same session"
    );
    assert_eq!(
        s.session_spec("k7p3xq").await.unwrap().as_deref(),
        Some(SPEC)
    );
    assert!(s.create_session("AB2CD3", "{}").await.unwrap());
    assert_eq!(
        s.session_ids().await.unwrap(),
        vec!["AB2CD3".to_owned(), "K7P3XQ".to_owned()]
    );
}

#[tokio::test]
async fn claim_renew_release_and_epochs() {
    let server = redis();
    let (s, _) = store(&server).await;
    assert_eq!(
        s.claim("K7P3XQ", "a", LEASE).await.unwrap(),
        None,
        "no spec: nothing to claim"
    );
    created_session(&s).await;

    assert_eq!(s.claim("K7P3XQ", "a", LEASE).await.unwrap(), Some(1));
    assert_eq!(s.owner("K7P3XQ").await.unwrap(), Some(("a".to_owned(), 1)));
    assert_eq!(s.claim("K7P3XQ", "b", LEASE).await.unwrap(), None, "owned");
    assert_eq!(
        s.claim("K7P3XQ", "a", LEASE).await.unwrap(),
        None,
        "owned, also by the claimer"
    );

    assert!(s.renew("K7P3XQ", "a", 1, LEASE).await.unwrap());
    assert!(!s.renew("K7P3XQ", "b", 1, LEASE).await.unwrap(), "not b's");
    assert!(
        !s.renew("K7P3XQ", "a", 2, LEASE).await.unwrap(),
        "not epoch 2"
    );
    assert!(!s.release("K7P3XQ", "b", 1).await.unwrap());
    assert_eq!(s.owner("K7P3XQ").await.unwrap(), Some(("a".to_owned(), 1)));

    assert!(s.release("K7P3XQ", "a", 1).await.unwrap());
    assert_eq!(s.owner("K7P3XQ").await.unwrap(), None);
    assert!(
        !s.release("K7P3XQ", "a", 1).await.unwrap(),
        "released already"
    );
    assert!(!s.renew("K7P3XQ", "a", 1, LEASE).await.unwrap(), "released");

    assert_eq!(
        s.claim("K7P3XQ", "b", LEASE).await.unwrap(),
        Some(2),
        "every claim raises the epoch"
    );
    assert_eq!(s.owner("K7P3XQ").await.unwrap(), Some(("b".to_owned(), 2)));
}

#[tokio::test]
async fn a_renewal_extends_the_lease() {
    let server = redis();
    let (s, _) = store(&server).await;
    created_session(&s).await;
    s.claim("K7P3XQ", "a", Duration::from_millis(500))
        .await
        .unwrap();
    let key = "ls:{s:K7P3XQ}:owner";
    assert!(pttl(&server, key).await <= 500);
    assert!(s.renew("K7P3XQ", "a", 1, LEASE).await.unwrap());
    assert!(pttl(&server, key).await > 9_000);
}

#[tokio::test]
async fn a_lapsed_lease_can_be_taken_over_and_fences_the_old_owner_out() {
    let server = redis();
    let (s, _) = store(&server).await;
    created_session(&s).await;
    let short = Duration::from_millis(150);
    assert_eq!(s.claim("K7P3XQ", "a", short).await.unwrap(), Some(1));
    assert_eq!(s.claim("K7P3XQ", "b", LEASE).await.unwrap(), None);

    // a is paused past its lease; b takes over once Redis expired it.
    let deadline = Instant::now() + WAIT;
    let epoch = loop {
        if let Some(epoch) = s.claim("K7P3XQ", "b", LEASE).await.unwrap() {
            break epoch;
        }
        assert!(Instant::now() < deadline, "the lease never lapsed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(epoch, 2);

    // a wakes up: every write of its epoch is refused and writes nothing.
    assert!(!s.renew("K7P3XQ", "a", 1, LEASE).await.unwrap());
    assert!(!s.release("K7P3XQ", "a", 1).await.unwrap());
    let mut stale = write(r#"{"from":"a"}"#, "5-0");
    stale.view = Some(r#"{"view":"a"}"#.to_owned());
    stale.ended = true;
    assert_eq!(
        s.append_outbound("K7P3XQ", "a", 1, &stale).await.unwrap(),
        None
    );
    assert_eq!(
        s.append_inbound_fenced("K7P3XQ", "a", 1, r#"{"tick":"a"}"#)
            .await
            .unwrap(),
        None
    );
    assert_eq!(s.outbound_tail("K7P3XQ").await.unwrap(), "0-0");
    assert_eq!(s.read_inbound("K7P3XQ", "0-0", 10).await.unwrap(), vec![]);
    assert_eq!(s.cursor("K7P3XQ").await.unwrap(), None);
    assert_eq!(s.views(&["K7P3XQ".to_owned()]).await.unwrap(), vec![None]);
    assert_eq!(s.owner("K7P3XQ").await.unwrap(), Some(("b".to_owned(), 2)));
    assert_eq!(pttl(&server, "ls:{s:K7P3XQ}:spec").await, -1, "not ended");
    assert_eq!(
        s.session_ids().await.unwrap(),
        vec!["K7P3XQ".to_owned()],
        "a refused ended write unlists nothing"
    );

    // b's writes go through.
    assert!(s
        .append_outbound("K7P3XQ", "b", 2, &write("{}", "1-0"))
        .await
        .unwrap()
        .is_some());
    // Same node, an older epoch (a previous incarnation of b's owner task): refused too.
    assert_eq!(
        s.append_outbound("K7P3XQ", "b", 1, &write("{}", "1-0"))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn inbound_entries_append_and_read_in_order() {
    let server = redis();
    let (s, _) = store(&server).await;
    match s.append_inbound("K7P3XQ", "{}").await {
        Err(StoreError::NoSession(id)) => assert_eq!(id, "K7P3XQ"),
        other => panic!("an unknown session takes no entries: {other:?}"),
    }
    let streams: i64 = redis::cmd("EXISTS")
        .arg("ls:{s:K7P3XQ}:in")
        .query_async(&mut raw(&server).await)
        .await
        .unwrap();
    assert_eq!(streams, 0, "no stream was created for it");

    created_session(&s).await;
    let first = s.append_inbound("K7P3XQ", r#"{"n":1}"#).await.unwrap();
    let second = s.append_inbound("k7p-3xq", r#"{"n":2}"#).await.unwrap();
    s.claim("K7P3XQ", "a", LEASE).await.unwrap();
    let third = s
        .append_inbound_fenced("K7P3XQ", "a", 1, r#"{"tick":true}"#)
        .await
        .unwrap()
        .expect("the owner's tick");

    let all = s.read_inbound("K7P3XQ", "0-0", 100).await.unwrap();
    assert_eq!(
        all,
        vec![
            (first.clone(), r#"{"n":1}"#.to_owned()),
            (second.clone(), r#"{"n":2}"#.to_owned()),
            (third.clone(), r#"{"tick":true}"#.to_owned()),
        ]
    );
    assert_eq!(
        s.read_inbound("K7P3XQ", &first, 1).await.unwrap(),
        vec![(second.clone(), r#"{"n":2}"#.to_owned())],
        "after is exclusive; count limits"
    );
    assert_eq!(s.read_inbound("K7P3XQ", &third, 10).await.unwrap(), vec![]);
    assert_eq!(s.read_inbound("K7P3XQ", "0-0", 0).await.unwrap(), vec![]);
}

#[tokio::test]
async fn outbound_batches_write_cursor_view_and_trim() {
    let server = redis();
    let (s, _) = store(&server).await;
    created_session(&s).await;
    let epoch = s.claim("K7P3XQ", "a", LEASE).await.unwrap().unwrap();
    assert_eq!(s.outbound_tail("K7P3XQ").await.unwrap(), "0-0");
    assert_eq!(s.outbound_head("K7P3XQ").await.unwrap(), None);

    let mut first = write(r#"{"b":1}"#, "1-0");
    first.view = Some(r#"{"members":1}"#.to_owned());
    let id1 = s
        .append_outbound("K7P3XQ", "a", epoch, &first)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.cursor("K7P3XQ").await.unwrap().as_deref(), Some("1-0"));
    assert_eq!(
        s.views(&["K7P3XQ".to_owned(), "NOPE".to_owned()])
            .await
            .unwrap(),
        vec![Some(r#"{"members":1}"#.to_owned()), None]
    );

    // No view: the last one stays.
    let id2 = s
        .append_outbound("K7P3XQ", "a", epoch, &write(r#"{"b":2}"#, "2-0"))
        .await
        .unwrap()
        .unwrap();
    let id3 = s
        .append_outbound("K7P3XQ", "a", epoch, &write(r#"{"b":3}"#, "3-0"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.cursor("K7P3XQ").await.unwrap().as_deref(), Some("3-0"));
    assert_eq!(
        s.views(&["K7P3XQ".to_owned()]).await.unwrap(),
        vec![Some(r#"{"members":1}"#.to_owned())]
    );
    assert_eq!(s.outbound_tail("K7P3XQ").await.unwrap(), id3);
    assert_eq!(s.outbound_head("K7P3XQ").await.unwrap(), Some(id1.clone()));
    assert_eq!(
        s.read_outbound("K7P3XQ", &id1, 10).await.unwrap(),
        vec![
            (id2.clone(), r#"{"b":2}"#.to_owned()),
            (id3.clone(), r#"{"b":3}"#.to_owned())
        ]
    );

    // Trim to id3: the two older batches go, the head moves, the new batch is kept.
    let mut trimmed = write(r#"{"b":4}"#, "4-0");
    trimmed.trim_min_id = Some(id3.clone());
    let id4 = s
        .append_outbound("K7P3XQ", "a", epoch, &trimmed)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.outbound_head("K7P3XQ").await.unwrap(), Some(id3.clone()));
    assert_eq!(
        s.read_outbound("K7P3XQ", "0-0", 10).await.unwrap(),
        vec![
            (id3, r#"{"b":3}"#.to_owned()),
            (id4.clone(), r#"{"b":4}"#.to_owned())
        ]
    );
    assert_eq!(s.outbound_tail("K7P3XQ").await.unwrap(), id4);
    assert_eq!(
        pttl(&server, "ls:{s:K7P3XQ}:out").await,
        -1,
        "a live session's keys do not expire"
    );
}

#[tokio::test]
async fn an_ended_session_is_unlisted_and_drains() {
    let server = redis();
    let (s, _) = store(&server).await;
    created_session(&s).await;
    assert!(s.create_session("OTHER1", "{}").await.unwrap());
    let epoch = s.claim("K7P3XQ", "a", LEASE).await.unwrap().unwrap();
    s.append_inbound("K7P3XQ", r#"{"close":1}"#).await.unwrap();
    let mut last = write(r#"{"ended":true}"#, "9-0");
    last.view = Some("{}".to_owned());
    last.ended = true;
    let id = s
        .append_outbound("K7P3XQ", "a", epoch, &last)
        .await
        .unwrap()
        .unwrap();

    assert_eq!(s.owner("K7P3XQ").await.unwrap(), None, "the owner key went");
    assert_eq!(s.session_ids().await.unwrap(), vec!["OTHER1".to_owned()]);
    for key in ["spec", "in", "out", "cursor", "view"] {
        let ttl = pttl(&server, &format!("ls:{{s:K7P3XQ}}:{key}")).await;
        let drain = ENDED_DRAIN.as_millis() as i64;
        assert!(ttl > drain - 5_000 && ttl <= drain, "{key}: {ttl}");
    }
    // Member nodes can still read the last batch.
    assert_eq!(
        s.read_outbound("K7P3XQ", "0-0", 10).await.unwrap(),
        vec![(id, r#"{"ended":true}"#.to_owned())]
    );
    // Nobody may claim it, append to it, or create it again while it drains.
    assert_eq!(s.claim("K7P3XQ", "b", LEASE).await.unwrap(), None);
    assert!(matches!(
        s.append_inbound("K7P3XQ", "{}").await,
        Err(StoreError::NoSession(_))
    ));
    assert!(!s.create_session("K7P3XQ", SPEC).await.unwrap());
    assert_eq!(
        s.append_outbound("K7P3XQ", "a", epoch, &write("{}", "10-0"))
            .await
            .unwrap(),
        None,
        "no owner: no writes"
    );
}

#[tokio::test]
async fn resume_tokens() {
    let server = redis();
    let (s, _) = store(&server).await;
    assert_eq!(s.get_token("t1").await.unwrap(), None);
    s.set_token("t1", "L|K7P3XQ|c_1", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        s.get_token("t1").await.unwrap().as_deref(),
        Some("L|K7P3XQ|c_1")
    );
    let ttl = pttl(&server, "ls:tok:t1").await;
    assert!(ttl > 25_000 && ttl <= 30_000, "{ttl}");
    s.set_token("t1", "E|closed", Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(
        s.get_token("t1").await.unwrap().as_deref(),
        Some("E|closed")
    );
    let deadline = Instant::now() + WAIT;
    while s.get_token("t1").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the token never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn views_of_many_sessions() {
    let server = redis();
    let (s, _) = store(&server).await;
    assert_eq!(s.views(&[]).await.unwrap(), Vec::<Option<String>>::new());
    let mut ids = Vec::new();
    for n in 0..5 {
        let id = format!("S{n}");
        assert!(s.create_session(&id, "{}").await.unwrap());
        let epoch = s.claim(&id, "a", LEASE).await.unwrap().unwrap();
        if n % 2 == 0 {
            let mut w = write("{}", "1-0");
            w.view = Some(format!(r#"{{"n":{n}}}"#));
            s.append_outbound(&id, "a", epoch, &w).await.unwrap();
        }
        ids.push(id);
    }
    assert_eq!(
        s.views(&ids).await.unwrap(),
        vec![
            Some(r#"{"n":0}"#.to_owned()),
            None,
            Some(r#"{"n":2}"#.to_owned()),
            None,
            Some(r#"{"n":4}"#.to_owned()),
        ]
    );
}

#[tokio::test]
async fn pub_sub_wakes_arrive_for_subscribed_sessions_only() {
    let server = redis();
    let (owner, mut owner_wakes) = store(&server).await;
    let (member, mut member_wakes) = store(&server).await;
    created_session(&owner).await;
    let epoch = owner.claim("K7P3XQ", "a", LEASE).await.unwrap().unwrap();
    owner.subscribe_session("k7p-3xq", true).await.unwrap();
    member.subscribe_session("K7P3XQ", false).await.unwrap();

    member.append_inbound("K7P3XQ", "{}").await.unwrap();
    assert_eq!(
        next_wake(&mut owner_wakes).await,
        Wake::Inbound("K7P3XQ".to_owned())
    );
    owner
        .append_inbound_fenced("K7P3XQ", "a", epoch, "{}")
        .await
        .unwrap();
    assert_eq!(
        next_wake(&mut owner_wakes).await,
        Wake::Inbound("K7P3XQ".to_owned())
    );
    owner
        .append_outbound("K7P3XQ", "a", epoch, &write("{}", "1-0"))
        .await
        .unwrap();
    assert_eq!(
        next_wake(&mut member_wakes).await,
        Wake::Outbound("K7P3XQ".to_owned())
    );

    // Unsubscribed from inbound, subscribed to outbound: one connection delivers in order, so
    // had the inbound message come, it would be ahead of the outbound one.
    owner.subscribe_session("K7P3XQ", false).await.unwrap();
    owner.unsubscribe_session("K7P3XQ", true).await.unwrap();
    member.append_inbound("K7P3XQ", "{}").await.unwrap();
    owner
        .append_outbound("K7P3XQ", "a", epoch, &write("{}", "2-0"))
        .await
        .unwrap();
    assert_eq!(
        next_wake(&mut owner_wakes).await,
        Wake::Outbound("K7P3XQ".to_owned())
    );
    assert!(
        owner_wakes.try_recv().is_err(),
        "nothing else for the owner"
    );
    // A refused (stale) write publishes nothing either.
    assert_eq!(
        owner
            .append_outbound("K7P3XQ", "a", epoch + 1, &write("{}", "3-0"))
            .await
            .unwrap(),
        None
    );
    member.announce_released().await.unwrap();
    assert_eq!(next_wake(&mut owner_wakes).await, Wake::Released);
    assert_eq!(
        next_wake(&mut member_wakes).await,
        Wake::Outbound("K7P3XQ".to_owned()),
        "the member saw the second batch"
    );
    assert_eq!(
        next_wake(&mut member_wakes).await,
        Wake::Released,
        "the announcer hears itself too"
    );
}

#[tokio::test]
async fn wakes_resume_after_a_redis_restart() {
    let mut server = redis();
    let (s, mut wakes) = store(&server).await;
    s.subscribe_session("K7P3XQ", false).await.unwrap();
    s.subscribe_session("K7P3XQ", true).await.unwrap();

    server.stop();
    assert_eq!(next_wake(&mut wakes).await, Wake::Disconnected);
    assert!(!s.connected());
    assert!(s.ping().await.is_err(), "Redis is down");
    assert!(!s.connected());

    server.start_again();
    until_reachable(&s).await;
    assert!(s.connected());
    // A PUBLISH by another client after the restart reaches the resubscribed store.
    let mut other = raw(&server).await;
    for channel in ["ls:{s:K7P3XQ}:out!", "ls:{s:K7P3XQ}:in!", "ls:released!"] {
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg("K7P3XQ")
            .query_async::<i64>(&mut other)
            .await
            .unwrap();
    }
    assert_eq!(
        next_message(&mut wakes).await,
        Wake::Outbound("K7P3XQ".to_owned())
    );
    assert_eq!(
        next_message(&mut wakes).await,
        Wake::Inbound("K7P3XQ".to_owned())
    );
    assert_eq!(next_message(&mut wakes).await, Wake::Released);
}

#[tokio::test]
async fn a_restart_without_appendonly_is_empty_and_with_it_keeps_everything() {
    for appendonly in [false, true] {
        let mut server = RedisServer::start(RedisOptions { appendonly });
        let (s, _) = store(&server).await;
        s.cluster_epoch("before").await.unwrap();
        created_session(&s).await;
        let epoch = s.claim("K7P3XQ", "a", LEASE).await.unwrap().unwrap();
        let entry = s.append_inbound("K7P3XQ", "{}").await.unwrap();
        let batch = s
            .append_outbound("K7P3XQ", "a", epoch, &write("{}", &entry))
            .await
            .unwrap()
            .unwrap();

        server.stop();
        server.start_again();
        until_reachable(&s).await;

        let epoch_after = s.cluster_epoch("after").await.unwrap();
        if appendonly {
            assert_eq!(epoch_after, "before");
            assert_eq!(s.owner("K7P3XQ").await.unwrap(), Some(("a".into(), epoch)));
            assert_eq!(s.outbound_tail("K7P3XQ").await.unwrap(), batch);
            assert_eq!(s.cursor("K7P3XQ").await.unwrap(), Some(entry));
            // The script cache is empty after a restart: the scripts load again by themselves.
            assert!(s.renew("K7P3XQ", "a", epoch, LEASE).await.unwrap());
            assert!(s
                .append_outbound("K7P3XQ", "a", epoch, &write("{}", "2-0"))
                .await
                .unwrap()
                .is_some());
        } else {
            assert_eq!(epoch_after, "after", "an empty Redis: a new cluster epoch");
            assert_eq!(s.session_spec("K7P3XQ").await.unwrap(), None);
            assert_eq!(s.outbound_tail("K7P3XQ").await.unwrap(), "0-0");
            assert_eq!(s.claim("K7P3XQ", "a", LEASE).await.unwrap(), None);
        }
    }
}

#[tokio::test]
async fn a_dead_redis_fails_fast_and_connected_comes_back() {
    let mut server = redis();
    let (s, mut wakes) = store(&server).await;
    assert!(s.connected());
    server.kill();
    assert_eq!(next_wake(&mut wakes).await, Wake::Disconnected);
    assert!(!s.connected());

    // Commands, scripts and subscriptions each answer an error in bounded time, while the
    // manager keeps trying to reconnect.
    for call in 0..3 {
        let started = Instant::now();
        let failed = match call {
            0 => matches!(s.ping().await, Err(StoreError::Redis(_))),
            1 => s.claim("K7P3XQ", "a", LEASE).await.is_err(),
            _ => s.subscribe_session("K7P3XQ", false).await.is_err(),
        };
        assert!(failed, "call {call} succeeded without Redis");
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(3),
            "call {call} gave up after {took:?}"
        );
        assert!(!s.connected());
    }

    server.start_again();
    until_reachable(&s).await;
    assert!(s.connected());
}

#[tokio::test]
async fn connect_fails_fast_without_redis() {
    let mut server = redis();
    let url = server.url();
    server.kill();
    let (tx, _rx) = unbounded_channel();
    let started = Instant::now();
    assert!(Store::connect(&url, tx).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(3));
    let (tx, _rx) = unbounded_channel();
    assert!(Store::connect("http://nope", tx).await.is_err());
}
