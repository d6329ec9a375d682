//! The fencing property tests: three nodes, one [`LeaseStore`], random interleavings.
//!
//! The simulation has one real clock, in milliseconds, which is also the Redis clock the
//! store runs on. Each node reads its own monotonic clock: an arbitrary offset plus real time
//! times a rate between 0.9 and 1.0 (a node's clock may run up to 10 % slow against Redis's,
//! the drift the lease's margin of `lease / 10` is there for; a fast clock only makes a node
//! give up sooner). Every request a node sends (claim, renewal, fenced write, release) reaches
//! the store after a random delay, and its answer travels back after another; delays are
//! mostly short, sometimes longer than a lease. A node can be paused (`SIGSTOP`): it takes no
//! steps, and answers wait for it until it wakes. Its renewal timer fires only when a step
//! says so, so renewals can be late or missing, as under load.
//!
//! Message delays need no bound: a lease counts from the *send* time of the renewal, and the
//! store starts its `PX` when the request arrives, later. The only bound the argument needs is
//! the clock rate one. `slow_clocks_beyond_the_margin_break_the_belief` shows it is needed.
//!
//! Honest nodes write only while [`OwnerLease::may_write`] says so (the real node's logic);
//! rogue nodes write whenever a step says so, with any epoch they ever held or a forged one.
//! Checked at every millisecond and every accepted write:
//! 1. every epoch's accepted writes come from one node, the one whose claim got that epoch;
//! 2. accepted writes' epochs never decrease, and each is the latest epoch handed out;
//! 3. whenever a node's lease says it may write, the store's owner is that node and epoch
//!    (so no other node can have a write accepted then, for a higher epoch or any other).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::model::LeaseStore;
use super::{LeaseStep, OwnerLease};

const LEASE_MS: u64 = 900;
const LEASE: Duration = Duration::from_millis(LEASE_MS);
const NODES: usize = 3;

/// One thing that happens in a run.
#[derive(Debug, Clone)]
enum Step {
    /// Real time passes by this many milliseconds.
    Advance(u64),
    /// The node is stopped for this many milliseconds (time does not pass by itself).
    Pause { node: usize, ms: u64 },
    /// The node tries to claim the session (if it holds no live lease and no claim is out).
    Claim { node: usize, there: u64, back: u64 },
    /// The node's lease timer fires: `handle_timeout`, and a renewal if it says so.
    Timer { node: usize, there: u64, back: u64 },
    /// The node writes (honest: only if `may_write`; rogue: always, epoch possibly forged).
    Write {
        node: usize,
        there: u64,
        forged: Option<u64>,
    },
    /// The node gives the session up (if it may write) and forgets its lease.
    Release { node: usize, there: u64 },
}

/// A message on its way, to the store or back to a node.
#[derive(Debug, Clone)]
enum Msg {
    ClaimReq {
        node: usize,
        sent: Instant,
        back: u64,
    },
    ClaimAns {
        node: usize,
        sent: Instant,
        epoch: Option<u64>,
    },
    RenewReq {
        node: usize,
        epoch: u64,
        back: u64,
    },
    RenewAns {
        node: usize,
        epoch: u64,
        ok: bool,
    },
    WriteReq {
        node: usize,
        epoch: u64,
    },
    ReleaseReq {
        node: usize,
        epoch: u64,
    },
}

#[derive(Debug)]
struct SimNode {
    name: String,
    /// Local clock speed in thousandths of real time.
    rate_permille: u64,
    offset: Duration,
    lease: Option<OwnerLease>,
    claiming: bool,
    paused_until: u64,
    epochs_held: Vec<u64>,
}

struct Sim {
    /// Real time = Redis time, ms.
    t: u64,
    base: Instant,
    rogue: bool,
    store: LeaseStore,
    nodes: Vec<SimNode>,
    queue: Vec<(u64, u64, Msg)>,
    next_seq: u64,
    claimant: HashMap<u64, usize>,
    writer: HashMap<u64, usize>,
    last_accepted: Option<u64>,
    accepted: usize,
}

impl Sim {
    fn new(clocks: &[(u64, u64)], rogue: bool) -> Sim {
        let nodes = clocks
            .iter()
            .enumerate()
            .map(|(i, &(rate_permille, offset_ms))| SimNode {
                name: format!("node{i}"),
                rate_permille,
                offset: Duration::from_millis(offset_ms),
                lease: None,
                claiming: false,
                paused_until: 0,
                epochs_held: Vec::new(),
            })
            .collect();
        Sim {
            t: 0,
            base: Instant::now(),
            rogue,
            store: LeaseStore::new(LEASE),
            nodes,
            queue: Vec::new(),
            next_seq: 0,
            claimant: HashMap::new(),
            writer: HashMap::new(),
            last_accepted: None,
            accepted: 0,
        }
    }

    /// Node `i`'s monotonic clock at the current real time.
    fn local(&self, i: usize) -> Instant {
        let n = &self.nodes[i];
        self.base + n.offset + Duration::from_micros(self.t * n.rate_permille)
    }

    fn paused(&self, i: usize) -> bool {
        self.nodes[i].paused_until > self.t
    }

    fn send(&mut self, delay: u64, msg: Msg) {
        self.queue.push((self.t + delay, self.next_seq, msg));
        self.next_seq += 1;
    }

    fn run(&mut self, steps: &[Step]) -> Result<(), String> {
        for step in steps {
            self.step(step)?;
        }
        Ok(())
    }

    fn step(&mut self, step: &Step) -> Result<(), String> {
        match *step {
            Step::Advance(ms) => {
                for _ in 0..ms {
                    self.t += 1;
                    self.deliver_due()?;
                    self.check_beliefs()?;
                }
                return Ok(());
            }
            Step::Pause { node, ms } => {
                let until = self.t + ms;
                let n = &mut self.nodes[node];
                n.paused_until = n.paused_until.max(until);
            }
            Step::Claim { node, there, back } => self.claim(node, there, back),
            Step::Timer { node, there, back } => self.timer(node, there, back),
            Step::Write {
                node,
                there,
                forged,
            } => self.write(node, there, forged),
            Step::Release { node, there } => self.release(node, there),
        }
        self.deliver_due()?;
        self.check_beliefs()
    }

    fn claim(&mut self, node: usize, there: u64, back: u64) {
        let n = &self.nodes[node];
        let holds = n.lease.as_ref().is_some_and(|l| !l.is_lost());
        if self.paused(node) || n.claiming || holds {
            return;
        }
        let sent = self.local(node);
        self.nodes[node].claiming = true;
        self.send(there, Msg::ClaimReq { node, sent, back });
    }

    fn timer(&mut self, node: usize, there: u64, back: u64) {
        if self.paused(node) {
            return;
        }
        let now = self.local(node);
        let Some(lease) = self.nodes[node].lease.as_mut() else {
            return;
        };
        if lease.handle_timeout(now) == Some(LeaseStep::Renew) {
            let epoch = lease.epoch();
            self.send(there, Msg::RenewReq { node, epoch, back });
        }
    }

    fn write(&mut self, node: usize, there: u64, forged: Option<u64>) {
        if self.paused(node) {
            return;
        }
        let now = self.local(node);
        let n = &self.nodes[node];
        let epoch = if self.rogue {
            forged.or(n.epochs_held.last().copied())
        } else {
            n.lease
                .as_ref()
                .filter(|l| l.may_write(now))
                .map(OwnerLease::epoch)
        };
        if let Some(epoch) = epoch {
            self.send(there, Msg::WriteReq { node, epoch });
        }
    }

    fn release(&mut self, node: usize, there: u64) {
        if self.paused(node) {
            return;
        }
        let now = self.local(node);
        let Some(lease) = self.nodes[node].lease.take() else {
            return;
        };
        if lease.may_write(now) {
            let epoch = lease.epoch();
            self.send(there, Msg::ReleaseReq { node, epoch });
        }
    }

    /// Handles every message due by now, in order of arrival time, then of sending.
    fn deliver_due(&mut self) -> Result<(), String> {
        loop {
            let due = (0..self.queue.len())
                .filter(|&k| self.queue[k].0 <= self.t)
                .min_by_key(|&k| (self.queue[k].0, self.queue[k].1));
            let Some(k) = due else {
                return Ok(());
            };
            let (_, _, msg) = self.queue.swap_remove(k);
            self.handle(msg)?;
        }
    }

    fn handle(&mut self, msg: Msg) -> Result<(), String> {
        let t = self.t;
        match msg {
            Msg::ClaimReq { node, sent, back } => {
                let epoch = self.store.claim(&self.nodes[node].name, t);
                if let Some(epoch) = epoch {
                    self.claimant.insert(epoch, node);
                }
                self.send(back, Msg::ClaimAns { node, sent, epoch });
            }
            Msg::RenewReq { node, epoch, back } => {
                let ok = self.store.renew(&self.nodes[node].name, epoch, t);
                self.send(back, Msg::RenewAns { node, epoch, ok });
            }
            Msg::WriteReq { node, epoch } => {
                if self.store.fenced_write(&self.nodes[node].name, epoch, t) {
                    self.accept(node, epoch)?;
                }
            }
            Msg::ReleaseReq { node, epoch } => {
                self.store.release(&self.nodes[node].name, epoch, t);
            }
            answer @ (Msg::ClaimAns { node, .. } | Msg::RenewAns { node, .. }) => {
                if self.paused(node) {
                    // A stopped process reads its socket when it wakes.
                    let wake = self.nodes[node].paused_until - t;
                    self.send(wake, answer);
                } else {
                    self.answer(answer);
                }
            }
        }
        Ok(())
    }

    fn answer(&mut self, answer: Msg) {
        match answer {
            Msg::ClaimAns { node, sent, epoch } => {
                let n = &mut self.nodes[node];
                n.claiming = false;
                if let Some(epoch) = epoch {
                    n.lease = Some(OwnerLease::new(epoch, LEASE, sent));
                    n.epochs_held.push(epoch);
                }
            }
            Msg::RenewAns { node, epoch, ok } => {
                let now = self.local(node);
                if let Some(lease) = self.nodes[node].lease.as_mut() {
                    if lease.epoch() == epoch {
                        lease.handle_renewed(now, ok);
                    }
                }
            }
            _ => unreachable!("only answers are routed to nodes"),
        }
    }

    /// Properties 1 and 2 (and 3 from the writer's side) for a write the store accepted.
    fn accept(&mut self, node: usize, epoch: u64) -> Result<(), String> {
        self.accepted += 1;
        let t = self.t;
        if self.claimant.get(&epoch) != Some(&node) {
            return Err(format!(
                "t={t}: node{node} wrote epoch {epoch} it never claimed"
            ));
        }
        if *self.writer.entry(epoch).or_insert(node) != node {
            return Err(format!("t={t}: epoch {epoch} has two writers"));
        }
        if self.last_accepted.is_some_and(|last| epoch < last) {
            return Err(format!("t={t}: epoch {epoch} accepted after a later one"));
        }
        if epoch != self.store.last_epoch() {
            return Err(format!("t={t}: stale epoch {epoch} accepted"));
        }
        self.last_accepted = Some(epoch);
        for other in (0..self.nodes.len()).filter(|&o| o != node) {
            let now = self.local(other);
            if self.nodes[other]
                .lease
                .as_ref()
                .is_some_and(|l| l.may_write(now))
            {
                return Err(format!(
                    "t={t}: node{node} wrote epoch {epoch} while node{other} believed it owned"
                ));
            }
        }
        Ok(())
    }

    /// Property 3: a node whose lease says it may write is the store's owner right now.
    fn check_beliefs(&self) -> Result<(), String> {
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(lease) = n.lease.as_ref().filter(|l| l.may_write(self.local(i))) else {
                continue;
            };
            let truth = self.store.owner(self.t);
            if truth != Some((n.name.as_str(), lease.epoch())) {
                return Err(format!(
                    "t={}: node{i} believes it owns epoch {} but the store says {truth:?}",
                    self.t,
                    lease.epoch()
                ));
            }
        }
        Ok(())
    }
}

fn delay() -> impl Strategy<Value = u64> {
    prop_oneof![6 => 0..=30u64, 2 => 0..=300u64, 1 => 300..=2_000u64]
}

fn step() -> impl Strategy<Value = Step> {
    let node = 0..NODES;
    prop_oneof![
        8 => (1..=150u64).prop_map(Step::Advance),
        1 => (LEASE_MS..=3 * LEASE_MS).prop_map(Step::Advance),
        1 => (node.clone(), 100..=3_000u64).prop_map(|(node, ms)| Step::Pause { node, ms }),
        3 => (node.clone(), delay(), delay())
            .prop_map(|(node, there, back)| Step::Claim { node, there, back }),
        10 => (node.clone(), delay(), delay())
            .prop_map(|(node, there, back)| Step::Timer { node, there, back }),
        12 => (node.clone(), delay(), proptest::option::weighted(0.2, 0..6u64))
            .prop_map(|(node, there, forged)| Step::Write { node, there, forged }),
        1 => (node, delay()).prop_map(|(node, there)| Step::Release { node, there }),
    ]
}

/// Per node: clock rate (permille of real time, 0.9 to 1.0) and offset (ms).
fn clocks() -> impl Strategy<Value = Vec<(u64, u64)>> {
    proptest::collection::vec((900..=1_000u64, 0..10_000u64), NODES)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn honest_nodes_never_share_an_epoch_or_believe_wrongly(
        clocks in clocks(),
        steps in proptest::collection::vec(step(), 1..200),
    ) {
        let mut sim = Sim::new(&clocks, false);
        if let Err(why) = sim.run(&steps) {
            return Err(TestCaseError::fail(why));
        }
    }

    #[test]
    fn the_store_alone_refuses_rogue_writers(
        clocks in clocks(),
        steps in proptest::collection::vec(step(), 1..200),
    ) {
        let mut sim = Sim::new(&clocks, true);
        if let Err(why) = sim.run(&steps) {
            return Err(TestCaseError::fail(why));
        }
    }
}

fn exact_clocks() -> Vec<(u64, u64)> {
    vec![(1_000, 0); NODES]
}

/// The story the properties are about, step by step: an owner stopped past its lease, a
/// takeover, and the old owner waking with a renewal answer that arrives too late.
#[test]
fn a_paused_owner_wakes_up_fenced_out_after_a_takeover() {
    let mut sim = Sim::new(&exact_clocks(), false);
    let claim = |node| Step::Claim {
        node,
        there: 5,
        back: 5,
    };
    let write = |node| Step::Write {
        node,
        there: 5,
        forged: None,
    };
    sim.run(&[claim(0), Step::Advance(10), write(0), Step::Advance(10)])
        .unwrap();
    assert_eq!(sim.accepted, 1);
    assert_eq!(sim.store.owner(sim.t), Some(("node0", 1)));

    // node0's renewal is due at 300 ms (a third after its claim was sent at 0): the timer
    // fires, the renewal is accepted at once, but node0 stops before reading the answer.
    sim.run(&[
        Step::Advance(280),
        Step::Timer {
            node: 0,
            there: 0,
            back: 5,
        },
        Step::Pause { node: 0, ms: 3_000 },
    ])
    .unwrap();
    assert!(sim.nodes[0].lease.as_ref().unwrap().renewal_in_flight());
    // The key expires 900 ms after the renewal ran (t=300); node1 claims after that.
    sim.run(&[Step::Advance(901), claim(1), Step::Advance(10)])
        .unwrap();
    assert_eq!(sim.store.owner(sim.t), Some(("node1", 2)));
    sim.run(&[write(1), Step::Advance(10)]).unwrap();
    assert_eq!(sim.accepted, 2);

    // node0 wakes: the accepted renewal's answer is read now, after the local deadline
    // (300 + 810 ms): it does not bring the lease back, and node0 does not write.
    sim.run(&[Step::Advance(3_000), write(0), Step::Advance(10)])
        .unwrap();
    let lease0 = sim.nodes[0].lease.as_ref().unwrap();
    assert!(lease0.is_lost());
    assert_eq!(sim.accepted, 2);

    // A rogue node0 that wrote anyway would be refused by the store.
    assert!(!sim.store.fenced_write("node0", 1, sim.t));
    assert_eq!(sim.store.last_epoch(), 2);
}

/// The checks can fail: a rogue write would be caught (not by the store, which refuses it,
/// so it is fed to the checker directly), as would a wrong belief.
#[test]
fn the_checker_catches_a_stale_writer() {
    let two_claims = || {
        let mut sim = Sim::new(&exact_clocks(), true);
        sim.claimant.insert(1, 0);
        sim.claimant.insert(2, 1);
        sim.store.claim("node0", 0);
        sim.t = 1_000;
        sim.store.claim("node1", 1_000);
        sim
    };
    let mut sim = two_claims();
    assert!(sim.accept(0, 1).unwrap_err().contains("stale epoch"));
    let mut sim = two_claims();
    sim.accept(1, 2).unwrap();
    assert!(sim.accept(0, 1).unwrap_err().contains("after a later one"));
    assert!(sim.accept(0, 2).unwrap_err().contains("never claimed"));
    let mut sim = two_claims();
    sim.nodes[0].lease = Some(OwnerLease::new(1, LEASE, sim.local(0)));
    assert!(sim.accept(1, 2).unwrap_err().contains("believed it owned"));
}

/// The margin is what makes property 3 hold with slow clocks: a node whose clock runs at
/// 0.8 of Redis's still believes it owns a lease Redis has already given to another node.
#[test]
fn slow_clocks_beyond_the_margin_break_the_belief() {
    let mut sim = Sim::new(&[(800, 0), (1_000, 0), (1_000, 0)], false);
    let claim = |node| Step::Claim {
        node,
        there: 0,
        back: 0,
    };
    sim.run(&[claim(0)]).unwrap();
    // node0 never renews; its key expires at 900 and node1 claims at 901, when node0's
    // clock reads 720.8 ms, before its write deadline of 810 ms.
    let outcome = sim.run(&[Step::Advance(901), claim(1), Step::Advance(1)]);
    let why = outcome.unwrap_err();
    assert!(why.contains("node0 believes it owns epoch 1"), "{why}");
    // With a clock only 10 % slow the same story is fine.
    let mut fine = Sim::new(&[(900, 0), (1_000, 0), (1_000, 0)], false);
    fine.run(&[claim(0), Step::Advance(901), claim(1), Step::Advance(200)])
        .unwrap();
    assert_eq!(fine.store.owner(fine.t), Some(("node1", 2)));
}
