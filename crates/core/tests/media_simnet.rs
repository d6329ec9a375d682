//! Both media roles (issue 13) driven through a simulated network on a virtual clock: one
//! [`Responder`] and one or more [`Initiator`]s, each at its own address, with no sockets and
//! no real time.
//!
//! **The network.** Every datagram handed to it (by a role, or by a scripted attacker) goes
//! through the [`Link`] of its direction and kind: initiator -> responder (`uplink`), responder
//! -> initiator control frames (`down_control`) and DATA (`down_data`). A seeded
//! [`fastrand::Rng`] decides per datagram whether it is dropped, duplicated (two copies), and
//! per copy whether it is corrupted (a flipped byte or a truncation, anywhere or only past the
//! 26-byte header) and how long it is delayed (fixed delay plus uniform jitter, so copies and
//! neighbours reorder). Deliveries wait in one queue ordered by (delivery instant, insertion
//! order). The loop drains what every role has to send, then advances the clock to the earliest
//! of the next queue entry, [`Responder::poll_timeout`], every [`Initiator::poll_timeout`] and
//! every initiator not started yet, delivers what is due (before timers of the same instant),
//! and fires the timers that are due. Every loop is bounded (steps and a virtual horizon).
//!
//! **The oracle.** While it runs, the simulation checks, for every call into the responder:
//! a DATA datagram goes only to an address whose own (not forged) START_CONFIRM the responder
//! accepted (PendingConfirm, id and stream matching, >= 256 bytes: D12 step 6) for the tuple's
//! current life; a tuple becomes Streaming only that way; every other datagram it sends answers
//! the datagram just received from that same address, is no larger than it and is the only
//! reply to it (D10: no amplification, nothing unprompted). For every initiator: no DATA
//! reaches it before it sent a START_CONFIRM. It logs what was sent and delivered so the tests
//! can predict each initiator's outcome from the network's events alone and compare.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use loudsync_core::media::initiator::{
    FrameStatus, Initiator, InitiatorConfig, Outcome, Phase, Summary,
};
use loudsync_core::media::responder::{Responder, ResponderConfig, TupleState};
use loudsync_core::Now;
use loudsync_protocol::media::{
    classify, decode_control, decode_data, encode_start, encode_start_confirm, ConnectionId,
    ControlBody, ControlKind, DatagramKind, ErrorCode, StreamId, StreamParams, DATA_HEADER_LEN,
    MIN_PADDED_LEN,
};
use proptest::prelude::*;

/// D8's stream parameters: F = 2020 bytes, fragments 1000, 993, 27.
const BITRATE: u64 = 808_000;
const FPS: u32 = 50;
const DATAGRAM_SIZE: usize = 1000;
/// Frames per stream (240 ms of media).
const FRAMES: u64 = 12;
const STREAM: &str = "synthetic";
/// The responder's confirm timeout: short, as the tests of §8 use.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(1);
/// The initiator's default buffer depth (D20's deadline after the first START_CONFIRM).
const BUFFER_DEPTH: Duration = Duration::from_secs(1);
/// D18: the initiator gives up 500 + 1000 + 2000 ms after its first START.
const GIVE_UP: Duration = Duration::from_millis(3500);
/// Bounds of every run.
const MAX_STEPS: usize = 100_000;
const HORIZON: Duration = Duration::from_secs(60);

fn sid(s: &str) -> StreamId {
    StreamId::new(s).unwrap()
}

fn params() -> StreamParams {
    StreamParams::new(BITRATE, FPS, DATAGRAM_SIZE).unwrap()
}

fn frame_size() -> usize {
    params().frame_size()
}

fn responder_addr() -> SocketAddr {
    SocketAddr::from(([198, 51, 100, 1], 4444))
}

fn peer_addr(n: u8) -> SocketAddr {
    SocketAddr::from(([198, 51, 100, 10 + n], 50_000 + u16::from(n)))
}

fn responder_config() -> ResponderConfig {
    let mut config = ResponderConfig::new(sid(STREAM), params(), FPS, FRAMES);
    config.confirm_timeout = CONFIRM_TIMEOUT;
    config
}

fn initiator_config() -> InitiatorConfig {
    InitiatorConfig::new(sid(STREAM), params(), FPS, Some(FRAMES))
}

/// Where a corruption may fall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mangling {
    /// Any byte, or a truncation to any length.
    Anywhere,
    /// A byte past the 26-byte header, or a truncation keeping at least the header.
    PastHeader,
}

/// The faults of one direction and kind of traffic.
#[derive(Debug, Clone, Copy)]
struct Link {
    drop: f64,
    duplicate: f64,
    corrupt: f64,
    mangling: Mangling,
    delay: Duration,
    jitter: Duration,
}

impl Link {
    /// 5 ms, nothing lost, nothing reordered.
    const CLEAN: Link = Link {
        drop: 0.0,
        duplicate: 0.0,
        corrupt: 0.0,
        mangling: Mangling::Anywhere,
        delay: Duration::from_millis(5),
        jitter: Duration::ZERO,
    };

    fn lossy(drop: f64, duplicate: f64, jitter_ms: u64) -> Link {
        Link {
            drop,
            duplicate,
            jitter: Duration::from_millis(jitter_ms),
            ..Link::CLEAN
        }
    }

    fn corrupting(self, corrupt: f64, mangling: Mangling) -> Link {
        Link {
            corrupt,
            mangling,
            ..self
        }
    }
}

/// The three links of the simulated network.
#[derive(Debug, Clone, Copy)]
struct Network {
    uplink: Link,
    down_control: Link,
    down_data: Link,
}

impl Network {
    fn clean() -> Network {
        Network {
            uplink: Link::CLEAN,
            down_control: Link::CLEAN,
            down_data: Link::CLEAN,
        }
    }
}

/// A datagram in flight.
#[derive(Debug, Clone)]
struct Datagram {
    /// The source address on the wire (forged when `sender` differs).
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
    /// Its kind as sent (before any corruption).
    kind: DatagramKind,
    /// Who really sent it.
    sender: SocketAddr,
    /// Corrupted on the way.
    mangled: bool,
}

impl Datagram {
    fn new(from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) -> Datagram {
        Datagram {
            from,
            to,
            kind: classify(&bytes),
            bytes,
            sender: from,
            mangled: false,
        }
    }

    /// A datagram `sender` sends with the forged source address `from`.
    fn forged(sender: SocketAddr, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) -> Datagram {
        Datagram {
            sender,
            ..Datagram::new(from, to, bytes)
        }
    }
}

/// Something queued for an instant: a datagram entering the network, or arriving.
#[derive(Debug)]
enum Event {
    Send(Datagram),
    Deliver(Datagram),
}

/// A logged datagram and when.
#[derive(Debug, Clone)]
struct Record {
    at: Instant,
    datagram: Datagram,
}

/// One initiator at its address, and what the oracle saw of it.
struct Peer {
    addr: SocketAddr,
    start_at: Instant,
    config: InitiatorConfig,
    initiator: Option<Initiator>,
    ended_at: Option<Instant>,
    start_sends: Vec<Instant>,
    confirm_sends: Vec<Instant>,
    /// Intact DATA bytes delivered per sequence number before that frame was classified.
    intact_bytes: BTreeMap<i64, usize>,
    /// Intact DATA delivered for a frame already classified (while streaming).
    late: u64,
    /// Corrupted DATA delivered while confirming or streaming.
    mangled_data: u64,
}

impl Peer {
    fn initiator(&self) -> &Initiator {
        self.initiator.as_ref().expect("started")
    }

    fn outcome(&self) -> Option<Outcome> {
        self.initiator.as_ref().and_then(Initiator::outcome)
    }

    fn summary(&self) -> Summary {
        self.initiator().summary()
    }
}

/// An on-path attacker at `attacker` that replays, `lag` later and from its own address,
/// every START and START_CONFIRM the initiator at `victim` sends.
#[derive(Debug, Clone, Copy)]
struct Replayer {
    victim: SocketAddr,
    attacker: SocketAddr,
    lag: Duration,
}

/// The simulation (see the module comment).
struct Sim {
    rng: fastrand::Rng,
    network: Network,
    origin: Instant,
    now: Now,
    responder: Responder,
    served: StreamId,
    peers: Vec<Peer>,
    replayers: Vec<Replayer>,
    queue: BTreeMap<(Instant, u64), Event>,
    order: u64,
    sent: Vec<Record>,
    delivered: Vec<Record>,
    /// Addresses whose own START_CONFIRM the responder accepted, for the tuple's current life.
    confirmed: HashSet<SocketAddr>,
    /// Every accepted START_CONFIRM: when, from where.
    accepted: Vec<(Instant, SocketAddr)>,
}

impl Sim {
    fn new(seed: u64, network: Network, config: ResponderConfig) -> Sim {
        let now = Now {
            instant: Instant::now(),
            unix_ms: 1_700_000_000_000,
        };
        let mut ids = fastrand::Rng::with_seed(seed ^ 0x05ee_d1d5);
        let served = config.stream_id.clone();
        let responder = Responder::new(
            config,
            now,
            Box::new(move || {
                let mut bytes = [0u8; 16];
                ids.fill(&mut bytes);
                bytes
            }),
        );
        Sim {
            rng: fastrand::Rng::with_seed(seed),
            network,
            origin: now.instant,
            now,
            responder,
            served,
            peers: Vec::new(),
            replayers: Vec::new(),
            queue: BTreeMap::new(),
            order: 0,
            sent: Vec::new(),
            delivered: Vec::new(),
            confirmed: HashSet::new(),
            accepted: Vec::new(),
        }
    }

    /// An initiator at `addr` that starts `after` the simulation's start.
    fn add_peer(&mut self, addr: SocketAddr, after: Duration, config: InitiatorConfig) {
        self.peers.push(Peer {
            addr,
            start_at: self.origin + after,
            config,
            initiator: None,
            ended_at: None,
            start_sends: Vec::new(),
            confirm_sends: Vec::new(),
            intact_bytes: BTreeMap::new(),
            late: 0,
            mangled_data: 0,
        });
    }

    fn peer(&self, addr: SocketAddr) -> &Peer {
        self.peers.iter().find(|p| p.addr == addr).expect("peer")
    }

    /// Queues `datagram` to enter the network `after` the simulation's start.
    fn inject(&mut self, after: Duration, datagram: Datagram) {
        let at = self.origin + after;
        self.schedule(at, Event::Send(datagram));
    }

    fn schedule(&mut self, at: Instant, event: Event) {
        self.order += 1;
        self.queue.insert((at, self.order), event);
    }

    /// Runs until nothing is left to do; panics past the bounds.
    fn run(&mut self) {
        for _ in 0..MAX_STEPS {
            self.flush_initiators();
            let Some(next) = self.next_instant() else {
                return;
            };
            assert!(
                next <= self.origin + HORIZON,
                "still busy after {HORIZON:?} of virtual time"
            );
            if next > self.now.instant {
                self.now = self.now.plus(next - self.now.instant);
            }
            let now = self.now.instant;
            for peer in &mut self.peers {
                if peer.initiator.is_none() && peer.start_at <= now {
                    peer.initiator = Some(Initiator::new(peer.config.clone(), self.now));
                }
            }
            while let Some(entry) = self.queue.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                match entry.remove() {
                    Event::Send(datagram) => self.send(datagram),
                    Event::Deliver(datagram) => self.deliver(datagram),
                }
            }
            if self.responder.poll_timeout().is_some_and(|t| t <= now) {
                self.responder_call(None);
            }
            for i in 0..self.peers.len() {
                let Some(initiator) = self.peers[i].initiator.as_mut() else {
                    continue;
                };
                if initiator.poll_timeout().is_some_and(|t| t <= now) {
                    initiator.handle_timeout(self.now);
                    self.note_end(i);
                }
            }
        }
        panic!("the simulation did not settle in {MAX_STEPS} steps");
    }

    fn next_instant(&self) -> Option<Instant> {
        let queue = self.queue.keys().next().map(|k| k.0);
        let peers = self.peers.iter().filter_map(|p| match &p.initiator {
            None => Some(p.start_at),
            Some(initiator) => initiator.poll_timeout(),
        });
        [queue, self.responder.poll_timeout()]
            .into_iter()
            .flatten()
            .chain(peers)
            .min()
    }

    fn note_end(&mut self, i: usize) {
        let peer = &mut self.peers[i];
        if peer.ended_at.is_none() && peer.outcome().is_some() {
            peer.ended_at = Some(self.now.instant);
        }
    }

    /// Sends what every initiator has to send (and the replays of any attacker watching it).
    fn flush_initiators(&mut self) {
        let now = self.now.instant;
        for i in 0..self.peers.len() {
            let addr = self.peers[i].addr;
            while let Some(bytes) = self.peers[i]
                .initiator
                .as_mut()
                .and_then(Initiator::poll_transmit)
            {
                let datagram = Datagram::new(addr, responder_addr(), bytes);
                match datagram.kind {
                    DatagramKind::Control(ControlKind::Start) => {
                        self.peers[i].start_sends.push(now)
                    }
                    DatagramKind::Control(ControlKind::StartConfirm) => {
                        self.peers[i].confirm_sends.push(now)
                    }
                    _ => {}
                }
                let replays: Vec<Replayer> = self
                    .replayers
                    .iter()
                    .filter(|r| r.victim == addr)
                    .copied()
                    .collect();
                if matches!(
                    datagram.kind,
                    DatagramKind::Control(ControlKind::Start | ControlKind::StartConfirm)
                ) {
                    for r in replays {
                        let copy =
                            Datagram::new(r.attacker, responder_addr(), datagram.bytes.clone());
                        self.schedule(now + r.lag, Event::Send(copy));
                    }
                }
                self.send(datagram);
            }
        }
    }

    /// A datagram enters the network: logged, then dropped, duplicated, corrupted, delayed.
    fn send(&mut self, datagram: Datagram) {
        let now = self.now.instant;
        self.sent.push(Record {
            at: now,
            datagram: datagram.clone(),
        });
        let link = if datagram.to == responder_addr() {
            self.network.uplink
        } else if datagram.kind == DatagramKind::Data {
            self.network.down_data
        } else {
            self.network.down_control
        };
        if self.rng.f64() < link.drop {
            return;
        }
        let copies = if self.rng.f64() < link.duplicate {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut copy = datagram.clone();
            if self.rng.f64() < link.corrupt {
                copy.mangled = mangle(&mut self.rng, &mut copy.bytes, link.mangling);
            }
            let jitter = u64::try_from(link.jitter.as_nanos()).unwrap_or(u64::MAX);
            let at = now + link.delay + Duration::from_nanos(self.rng.u64(0..=jitter));
            self.schedule(at, Event::Deliver(copy));
        }
    }

    /// A datagram arrives at its destination.
    fn deliver(&mut self, datagram: Datagram) {
        let now = self.now;
        self.delivered.push(Record {
            at: now.instant,
            datagram: datagram.clone(),
        });
        if datagram.to == responder_addr() {
            return self.responder_call(Some(&datagram));
        }
        let Some(i) = self.peers.iter().position(|p| p.addr == datagram.to) else {
            return; // an address no initiator listens on: only logged
        };
        let peer = &mut self.peers[i];
        let Some(initiator) = peer.initiator.as_mut() else {
            return;
        };
        if datagram.kind == DatagramKind::Data {
            assert!(
                !peer.confirm_sends.is_empty(),
                "DATA reached {} before it sent START_CONFIRM",
                peer.addr
            );
            let phase = initiator.phase();
            if matches!(phase, Phase::Confirming | Phase::Streaming) {
                if datagram.mangled {
                    peer.mangled_data += 1;
                } else {
                    let seq = decode_data(&datagram.bytes).unwrap().header.sequence;
                    let classified = initiator.frames().last().map_or(0, |f| f.seq);
                    if seq > classified {
                        *peer.intact_bytes.entry(seq).or_default() += datagram.bytes.len();
                    } else if phase == Phase::Streaming {
                        peer.late += 1;
                    }
                }
            }
        }
        initiator.handle_datagram(now, &datagram.bytes);
        self.note_end(i);
    }

    /// One call into the responder (`cause`: the datagram it handles, `None`: its timer), then
    /// the oracle's checks of what it sent.
    fn responder_call(&mut self, cause: Option<&Datagram>) {
        let now = self.now;
        let before = cause.map(|d| {
            (
                self.responder.state(d.from),
                self.responder.connection_id(d.from),
            )
        });
        match cause {
            Some(d) => self.responder.handle_datagram(now, d.from, &d.bytes),
            None => self.responder.handle_timeout(now),
        }
        if let (Some(d), Some((state, id))) = (cause, before) {
            let after = self.responder.state(d.from);
            let accepted = state == Some(TupleState::PendingConfirm)
                && accepts_confirm(&d.bytes, id, &self.served);
            if accepted {
                assert_eq!(
                    d.sender, d.from,
                    "the responder accepted a START_CONFIRM forged by {} for {}",
                    d.sender, d.from
                );
                assert!(
                    matches!(after, Some(TupleState::Streaming { .. }) | None),
                    "accepted START_CONFIRM from {} left {after:?}",
                    d.from
                );
                self.confirmed.insert(d.from);
                self.accepted.push((now.instant, d.from));
            } else if !matches!(state, Some(TupleState::Streaming { .. })) {
                assert!(
                    !matches!(after, Some(TupleState::Streaming { .. })),
                    "{} started streaming on {:?} without an accepted START_CONFIRM",
                    d.from,
                    d.kind
                );
            }
        }
        let mut replies = 0;
        while let Some(transmit) = self.responder.poll_transmit() {
            let datagram = Datagram::new(responder_addr(), transmit.to, transmit.bytes);
            if datagram.kind == DatagramKind::Data {
                assert!(
                    self.confirmed.contains(&datagram.to),
                    "DATA to {}, which had not confirmed",
                    datagram.to
                );
            } else {
                let d = cause.unwrap_or_else(|| {
                    panic!("{:?} sent unprompted to {}", datagram.kind, datagram.to)
                });
                assert_eq!(datagram.to, d.from, "a reply to another address");
                assert!(
                    datagram.bytes.len() <= d.bytes.len(),
                    "{} bytes answering {} bytes from {}",
                    datagram.bytes.len(),
                    d.bytes.len(),
                    d.from
                );
                replies += 1;
                assert!(replies <= 1, "two replies to one datagram from {}", d.from);
            }
            self.send(datagram);
        }
        let responder = &self.responder;
        self.confirmed.retain(|a| responder.state(*a).is_some());
    }

    /// The logged datagrams delivered to `to`.
    fn delivered_to(&self, to: SocketAddr) -> impl Iterator<Item = &Record> {
        self.delivered.iter().filter(move |r| r.datagram.to == to)
    }

    /// The datagrams the responder handed to the network for `to`.
    fn sent_to(&self, to: SocketAddr) -> impl Iterator<Item = &Record> {
        self.sent
            .iter()
            .filter(move |r| r.datagram.to == to && r.datagram.from == responder_addr())
    }
}

/// Whether the responder must accept `bytes` as START_CONFIRM for a tuple pending with `id`
/// (D12 steps 2 and 6).
fn accepts_confirm(bytes: &[u8], id: Option<ConnectionId>, served: &StreamId) -> bool {
    if bytes.len() < MIN_PADDED_LEN {
        return false;
    }
    match decode_control(bytes) {
        Ok(frame) => {
            matches!(&frame.body, ControlBody::StartConfirm { stream_id } if stream_id == served)
                && Some(frame.connection_id) == id
        }
        Err(_) => false,
    }
}

/// Corrupts `bytes` (a flipped byte or a truncation); false when there was nothing to corrupt.
fn mangle(rng: &mut fastrand::Rng, bytes: &mut Vec<u8>, mangling: Mangling) -> bool {
    let low = match mangling {
        Mangling::Anywhere => 0,
        Mangling::PastHeader => DATA_HEADER_LEN,
    };
    if bytes.len() <= low {
        return false;
    }
    if rng.bool() {
        let at = rng.usize(low..bytes.len());
        bytes[at] ^= rng.u8(1..=255);
    } else {
        let len = rng.usize(low..bytes.len());
        bytes.truncate(len);
    }
    true
}

/// What the network's log says `addr`'s initiator must end with, on a network whose DATA
/// link is clean: NoStartAck unless a START_ACK reached it by the give-up time (a START got
/// through and its START_ACK came back); else Finished if the responder accepted one of its
/// START_CONFIRMs early enough for frame 1 (sent at once, 5 ms in flight) to arrive by D20's
/// deadline; else NoData.
fn predicted_outcome(sim: &Sim, addr: SocketAddr) -> Outcome {
    let peer = sim.peer(addr);
    let t0 = peer.start_sends[0];
    let first_ack = sim
        .delivered_to(addr)
        .find(|r| r.datagram.kind == DatagramKind::Control(ControlKind::StartAck))
        .map(|r| r.at)
        .filter(|&at| at <= t0 + GIVE_UP);
    let Some(ack_at) = first_ack else {
        return Outcome::NoStartAck;
    };
    let deadline = ack_at + BUFFER_DEPTH;
    let confirmed_in_time = sim
        .accepted
        .iter()
        .any(|&(at, from)| from == addr && at + Link::CLEAN.delay <= deadline);
    if confirmed_in_time {
        Outcome::Finished
    } else {
        Outcome::NoData
    }
}

/// The D18/D20 instant of an outcome that is a timeout.
fn check_end_instant(sim: &Sim, addr: SocketAddr) {
    let peer = sim.peer(addr);
    let ended = peer.ended_at.expect("ended");
    match peer.outcome().unwrap() {
        Outcome::NoStartAck => {
            assert_eq!(ended, peer.start_sends[0] + GIVE_UP, "D18 give-up instant");
            assert!(peer.confirm_sends.is_empty());
        }
        Outcome::NoData => {
            assert_eq!(
                ended,
                peer.confirm_sends[0] + BUFFER_DEPTH,
                "D20 deadline instant"
            );
        }
        _ => {}
    }
}

/// Every frame's class is what the intact bytes delivered before its render time make it
/// (D31), and the totals add up to N.
fn check_frames(peer: &Peer) {
    let initiator = peer.initiator();
    let summary = initiator.summary();
    assert_eq!(
        summary.success + summary.dropped + summary.duplicate,
        FRAMES,
        "{summary:?}"
    );
    assert_eq!(initiator.frames().len() as u64, FRAMES);
    for record in initiator.frames() {
        let intact = peer.intact_bytes.get(&record.seq).copied().unwrap_or(0);
        assert_eq!(record.bytes, intact, "frame {}", record.seq);
        let expected = match intact.cmp(&frame_size()) {
            std::cmp::Ordering::Equal => FrameStatus::Success,
            std::cmp::Ordering::Less => FrameStatus::Dropped,
            std::cmp::Ordering::Greater => FrameStatus::Duplicate,
        };
        assert_eq!(record.status, expected, "frame {}", record.seq);
    }
    assert_eq!(summary.late, peer.late);
    assert_eq!(summary.corrupt, peer.mangled_data);
}

fn control_kind(record: &Record) -> Option<ControlKind> {
    match record.datagram.kind {
        DatagramKind::Control(kind) => Some(kind),
        _ => None,
    }
}

fn error_code(bytes: &[u8]) -> Option<u16> {
    match decode_control(bytes).ok()?.body {
        ControlBody::Error { code, .. } => Some(code),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The handshake completes when it can and fails clearly when it cannot
// ---------------------------------------------------------------------------------------------

#[test]
fn handshake_completes_whenever_a_start_its_ack_and_a_confirm_get_through() {
    let network = Network {
        uplink: Link::lossy(0.3, 0.2, 30),
        down_control: Link::lossy(0.3, 0.2, 30),
        down_data: Link::CLEAN,
    };
    let mut seen = [0u32; 3];
    for seed in 0..300 {
        let mut sim = Sim::new(seed, network, responder_config());
        sim.add_peer(peer_addr(1), Duration::ZERO, initiator_config());
        sim.run();
        let peer = sim.peer(peer_addr(1));
        let outcome = peer.outcome().expect("ended");
        assert_eq!(
            outcome,
            predicted_outcome(&sim, peer_addr(1)),
            "seed {seed}"
        );
        check_end_instant(&sim, peer_addr(1));
        match outcome {
            Outcome::Finished => {
                seen[0] += 1;
                assert_eq!(outcome.exit_code(), 0);
                check_frames(peer);
                assert_eq!(peer.summary().success, FRAMES, "seed {seed}: clean DATA");
                // D26: frame 1 goes out the moment START_CONFIRM is accepted.
                let accepted = sim.accepted[0].0;
                let first_data = sim
                    .sent_to(peer_addr(1))
                    .find(|r| r.datagram.kind == DatagramKind::Data)
                    .unwrap();
                assert_eq!(first_data.at, accepted, "seed {seed}");
            }
            Outcome::NoStartAck => {
                seen[1] += 1;
                assert_eq!(outcome.exit_code(), 5);
            }
            Outcome::NoData => {
                seen[2] += 1;
                assert_eq!(outcome.exit_code(), 5);
            }
            Outcome::Refused(code) => panic!("seed {seed}: refused {code}"),
        }
    }
    // Every branch of the prediction was exercised, and most runs got through.
    assert!(seen[0] >= 150 && seen[1] > 0 && seen[2] > 0, "{seen:?}");
}

#[test]
fn lossy_data_still_classifies_every_frame_from_the_bytes_that_arrived() {
    let network = Network {
        uplink: Link::lossy(0.2, 0.2, 20),
        down_control: Link::lossy(0.2, 0.2, 20),
        down_data: Link::lossy(0.1, 0.1, 15),
    };
    let (mut finished, mut dropped, mut duplicate) = (0, 0, 0);
    for seed in 0..150 {
        let mut sim = Sim::new(seed, network, responder_config());
        sim.add_peer(peer_addr(1), Duration::ZERO, initiator_config());
        sim.run();
        let peer = sim.peer(peer_addr(1));
        check_end_instant(&sim, peer_addr(1));
        match peer.outcome().unwrap() {
            Outcome::Finished => {
                finished += 1;
                check_frames(peer);
                dropped += peer.summary().dropped;
                duplicate += peer.summary().duplicate;
            }
            Outcome::NoStartAck | Outcome::NoData => {}
            Outcome::Refused(code) => panic!("seed {seed}: refused {code}"),
        }
    }
    assert!(finished >= 100 && dropped > 0 && duplicate > 0);
}

#[test]
fn with_every_start_lost_the_initiator_gives_up_3_5_s_after_the_first() {
    let network = Network {
        uplink: Link::lossy(1.0, 0.0, 0),
        ..Network::clean()
    };
    let mut sim = Sim::new(1, network, responder_config());
    sim.add_peer(peer_addr(1), Duration::from_millis(7), initiator_config());
    sim.run();
    let peer = sim.peer(peer_addr(1));
    let t0 = sim.origin + Duration::from_millis(7);
    let ms = Duration::from_millis;
    assert_eq!(peer.start_sends, vec![t0, t0 + ms(500), t0 + ms(1500)]);
    assert_eq!(peer.outcome(), Some(Outcome::NoStartAck));
    assert_eq!(peer.outcome().unwrap().exit_code(), 5);
    assert_eq!(peer.ended_at, Some(t0 + GIVE_UP));
    assert!(sim.sent_to(peer_addr(1)).next().is_none());
}

#[test]
fn with_every_start_ack_lost_the_responder_answers_each_start_once_and_sends_nothing_else() {
    let network = Network {
        down_control: Link::lossy(1.0, 0.0, 0),
        ..Network::clean()
    };
    // Confirm timeout 2 s: STARTs arrive at 5, 505, 1505 ms, all within the reservation,
    // so the three START_ACKs are byte-identical (D12, D16). With 1 s, the reservation made
    // at 5 ms and refreshed at 505 ms expires at 1505 ms, the instant the third START
    // arrives: expiry wins (a deadline at or before now has passed), so that START gets a
    // new reservation and a new id (D14).
    for (timeout, identical) in [(2000, 3), (1000, 2)] {
        let mut config = responder_config();
        config.confirm_timeout = Duration::from_millis(timeout);
        let mut sim = Sim::new(2, network, config);
        sim.add_peer(peer_addr(1), Duration::ZERO, initiator_config());
        sim.run();
        let peer = sim.peer(peer_addr(1));
        assert_eq!(peer.outcome(), Some(Outcome::NoStartAck));
        assert_eq!(peer.ended_at, Some(sim.origin + GIVE_UP));
        let acks: Vec<&Record> = sim.sent_to(peer_addr(1)).collect();
        assert_eq!(
            acks.len(),
            3,
            "one START_ACK per START, none unprompted (D16)"
        );
        assert!(acks
            .iter()
            .all(|r| control_kind(r) == Some(ControlKind::StartAck)));
        let same = acks
            .iter()
            .filter(|r| r.datagram.bytes == acks[0].datagram.bytes)
            .count();
        assert_eq!(same, identical, "confirm timeout {timeout} ms");
        assert!(sim.responder.is_empty(), "the reservation expired (D14)");
    }
}

#[test]
fn with_all_data_dropped_the_initiator_ends_no_data_at_the_buffer_deadline() {
    let network = Network {
        down_data: Link::lossy(1.0, 0.0, 0),
        ..Network::clean()
    };
    let mut sim = Sim::new(3, network, responder_config());
    sim.add_peer(peer_addr(1), Duration::ZERO, initiator_config());
    sim.run();
    let peer = sim.peer(peer_addr(1));
    assert_eq!(peer.outcome(), Some(Outcome::NoData));
    assert_eq!(peer.outcome().unwrap().exit_code(), 5);
    // START at 0 (5 ms out), START_ACK back at 10 ms; START_CONFIRM at 10 and 510 ms; the
    // third (1510 ms) would come after D20's deadline at 1010 ms.
    let ms = |n| sim.origin + Duration::from_millis(n);
    assert_eq!(peer.confirm_sends, vec![ms(10), ms(510)]);
    assert_eq!(peer.ended_at, Some(ms(1010)));
    assert_eq!(
        sim.accepted,
        vec![(ms(15), peer_addr(1))],
        "the responder streamed"
    );
    let data = sim
        .sent_to(peer_addr(1))
        .filter(|r| r.datagram.kind == DatagramKind::Data)
        .count();
    assert_eq!(data as u64, FRAMES * 3);
    assert!(sim
        .delivered_to(peer_addr(1))
        .all(|r| r.datagram.kind != DatagramKind::Data));
}

// ---------------------------------------------------------------------------------------------
// 2. No media precedes START_CONFIRM; 6. no reply is larger than its cause
// ---------------------------------------------------------------------------------------------

fn arb_link() -> impl Strategy<Value = Link> {
    (0.0..0.5f64, 0.0..0.4f64, 0u64..40).prop_map(|(d, u, j)| Link::lossy(d, u, j))
}

fn arb_network() -> impl Strategy<Value = Network> {
    (arb_link(), arb_link(), arb_link()).prop_map(|(uplink, down_control, down_data)| Network {
        uplink,
        down_control,
        down_data,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Up to three initiators starting at different times on random lossy links: the
    /// simulation's checks (DATA only to a tuple that itself confirmed, none reaching an
    /// initiator before its START_CONFIRM, replies never larger than their cause) hold
    /// throughout; every initiator ends, with a timeout or the whole stream.
    #[test]
    fn no_data_before_start_confirm_and_no_amplification_on_lossy_links(
        seed in any::<u64>(),
        network in arb_network(),
        starts in proptest::collection::vec(0u64..600, 1..=3),
    ) {
        let mut sim = Sim::new(seed, network, responder_config());
        for (i, start) in starts.iter().enumerate() {
            sim.add_peer(peer_addr(i as u8 + 1), Duration::from_millis(*start), initiator_config());
        }
        sim.run();
        for peer in &sim.peers {
            let outcome = peer.outcome().expect("ended");
            prop_assert!(!matches!(outcome, Outcome::Refused(_)), "{outcome:?}");
            if outcome == Outcome::Finished {
                check_frames(peer);
            }
            check_end_instant(&sim, peer.addr);
            // From the log: no DATA to the peer before the responder accepted its confirm,
            // and none delivered before its first START_CONFIRM.
            let accepted = sim.accepted.iter().find(|a| a.1 == peer.addr).map(|a| a.0);
            if let Some(first) = sim.sent_to(peer.addr).find(|r| r.datagram.kind == DatagramKind::Data) {
                prop_assert!(accepted.is_some_and(|a| a <= first.at));
            }
            if let Some(first) = sim.delivered_to(peer.addr).find(|r| r.datagram.kind == DatagramKind::Data) {
                prop_assert!(peer.confirm_sends[0] < first.at);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Spoofing
// ---------------------------------------------------------------------------------------------

fn guessed_confirm(rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes);
    encode_start_confirm(&ConnectionId::from_random(bytes), &sid(STREAM))
}

#[test]
fn forged_starts_and_confirms_from_a_passive_address_never_start_media() {
    let victim = peer_addr(1);
    let attacker = peer_addr(9);
    let mut guesses = fastrand::Rng::with_seed(99);
    let mut sim = Sim::new(4, Network::clean(), responder_config());
    let ms = Duration::from_millis;
    let start = encode_start(&sid(STREAM), None);
    let zero = encode_start_confirm(&ConnectionId::ZERO, &sid(STREAM));
    let to = responder_addr();
    // Forged from the victim's address (it runs no initiator): START, a zero-id and guessed-id
    // START_CONFIRMs, another START, more guesses.
    let forged: Vec<(u64, Vec<u8>)> = vec![
        (0, start.clone()),
        (20, zero.clone()),
        (40, start.clone()),
        (60, guessed_confirm(&mut guesses)),
        (80, guessed_confirm(&mut guesses)),
        (100, start.clone()),
        (1500, zero.clone()),
    ];
    let forged_count = forged.len();
    for (at, bytes) in forged {
        sim.inject(ms(at), Datagram::forged(attacker, victim, to, bytes));
    }
    // From its own address: START, then zero and guessed ids instead of the id it was sent.
    for (at, bytes) in [
        (0, start.clone()),
        (30, zero.clone()),
        (50, start.clone()),
        (70, guessed_confirm(&mut guesses)),
    ] {
        sim.inject(ms(at), Datagram::new(attacker, to, bytes));
    }
    sim.run();
    for addr in [victim, attacker] {
        assert!(sim
            .delivered_to(addr)
            .all(|r| r.datagram.kind != DatagramKind::Data));
        assert!(sim.sent_to(addr).all(|r| matches!(
            control_kind(r),
            Some(ControlKind::StartAck | ControlKind::Error)
        )));
    }
    assert!(sim.sent_to(victim).count() <= forged_count);
    assert!(sim.accepted.is_empty());
    assert!(sim.responder.is_empty());
    // The zero-id confirm against a pending START_ACK is ERROR 4 (D12 step 6).
    let codes: Vec<u16> = sim
        .sent_to(attacker)
        .filter_map(|r| error_code(&r.datagram.bytes))
        .collect();
    assert_eq!(codes, vec![ErrorCode::StreamMismatch.code(); 2]);
}

#[test]
fn an_attacker_replaying_the_victims_start_and_confirm_from_its_own_address_gets_no_media() {
    let victim = peer_addr(1);
    let attacker = peer_addr(9);
    let mut sim = Sim::new(5, Network::clean(), responder_config());
    sim.replayers.push(Replayer {
        victim,
        attacker,
        lag: Duration::from_millis(1),
    });
    sim.add_peer(victim, Duration::ZERO, initiator_config());
    let zero = encode_start_confirm(&ConnectionId::ZERO, &sid(STREAM));
    sim.inject(
        Duration::from_millis(40),
        Datagram::new(attacker, responder_addr(), zero),
    );
    sim.run();
    let peer = sim.peer(victim);
    assert_eq!(peer.outcome(), Some(Outcome::Finished));
    assert_eq!(peer.summary().success, FRAMES);
    // The attacker got a START_ACK of its own for the replayed START, ERROR 4 for the victim's
    // replayed START_CONFIRM (another id), nothing for the zero id (no state left), no DATA.
    let kinds: Vec<Option<ControlKind>> = sim.sent_to(attacker).map(control_kind).collect();
    assert_eq!(
        kinds,
        vec![Some(ControlKind::StartAck), Some(ControlKind::Error)]
    );
    let replayed = sim
        .sent
        .iter()
        .filter(|r| r.datagram.from == attacker)
        .count();
    assert_eq!(replayed, 3, "START, START_CONFIRM, zero-id START_CONFIRM");
    assert_eq!(sim.accepted, vec![(sim.accepted[0].0, victim)]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// A live victim on a lossy network while an attacker replays its frames from another
    /// address and forges START and START_CONFIRMs (zero or guessed ids) from the victim's
    /// address at random times. The attacker's address never gets DATA; the victim gets DATA
    /// only after its own START_CONFIRM was accepted (the simulation's checks). A forged
    /// START_CONFIRM with the wrong id tears the victim's tuple down with ERROR 4 (D12 step 6),
    /// so the victim may end Refused(4): denial of service, never media to the wrong party.
    #[test]
    fn spoofing_never_sends_media_to_an_address_that_did_not_confirm(
        seed in any::<u64>(),
        network in arb_network(),
        forgeries in proptest::collection::vec((0u64..2000, 0u8..3), 0..6),
    ) {
        let victim = peer_addr(1);
        let attacker = peer_addr(9);
        let mut guesses = fastrand::Rng::with_seed(seed.rotate_left(7));
        let mut sim = Sim::new(seed, network, responder_config());
        sim.replayers.push(Replayer { victim, attacker, lag: Duration::from_millis(3) });
        sim.add_peer(victim, Duration::ZERO, initiator_config());
        for (at, what) in forgeries {
            let bytes = match what {
                0 => encode_start(&sid(STREAM), None),
                1 => encode_start_confirm(&ConnectionId::ZERO, &sid(STREAM)),
                _ => guessed_confirm(&mut guesses),
            };
            sim.inject(Duration::from_millis(at), Datagram::forged(attacker, victim, responder_addr(), bytes));
        }
        sim.run();
        prop_assert!(sim.delivered_to(attacker).all(|r| r.datagram.kind != DatagramKind::Data));
        prop_assert!(sim.accepted.iter().all(|a| a.1 == victim));
        let outcome = sim.peer(victim).outcome().expect("ended");
        prop_assert!(matches!(
            outcome,
            Outcome::Finished | Outcome::NoStartAck | Outcome::NoData | Outcome::Refused(4)
        ), "{outcome:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Corruption
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any byte of any datagram, either way, may be flipped or the datagram cut: neither side
    /// panics, the simulation's checks hold (no media without an accepted START_CONFIRM), every
    /// initiator ends, and only corrupted DATA is ever counted corrupt.
    #[test]
    fn corrupted_frames_never_panic_or_start_media(
        seed in any::<u64>(),
        network in arb_network(),
        corrupt in (0.0..0.4f64, 0.0..0.4f64, 0.0..0.4f64),
    ) {
        let network = Network {
            uplink: network.uplink.corrupting(corrupt.0, Mangling::Anywhere),
            down_control: network.down_control.corrupting(corrupt.1, Mangling::Anywhere),
            down_data: network.down_data.corrupting(corrupt.2, Mangling::Anywhere),
        };
        let mut sim = Sim::new(seed, network, responder_config());
        sim.add_peer(peer_addr(1), Duration::ZERO, initiator_config());
        sim.add_peer(peer_addr(2), Duration::from_millis(100), initiator_config());
        sim.run();
        for peer in &sim.peers {
            let outcome = peer.outcome().expect("ended");
            // A refusal has a cause on the wire: an ERROR with that code reached the peer (the
            // responder's answer to a corrupted START or START_CONFIRM: 1, 2, 3 or 4, or any
            // code when the ERROR itself was corrupted), or, for 4, a corrupted START_ACK
            // whose STREAM_ID the initiator refused (D19).
            if let Outcome::Refused(code) = outcome {
                let error_arrived = sim
                    .delivered_to(peer.addr)
                    .any(|r| error_code(&r.datagram.bytes) == Some(code));
                let bad_ack_arrived = sim.delivered_to(peer.addr).any(|r| {
                    r.datagram.mangled
                        && r.datagram.kind == DatagramKind::Control(ControlKind::StartAck)
                });
                prop_assert!(
                    error_arrived || (code == 4 && bad_ack_arrived),
                    "{outcome:?} with no cause on the wire"
                );
                if !sim.delivered_to(peer.addr).any(|r| r.datagram.mangled) {
                    prop_assert!([1, 2, 3, 4].contains(&code), "{outcome:?}");
                }
            }
            prop_assert!(peer.summary().corrupt <= peer.mangled_data);
            if outcome == Outcome::Finished {
                let s = peer.summary();
                prop_assert_eq!(s.success + s.dropped + s.duplicate, FRAMES);
            }
        }
    }

    /// DATA corrupted past its header (a payload byte flipped, or cut short): every such
    /// datagram the initiator gets is counted corrupt and adds nothing to its frame, so a
    /// frame missing an intact copy of a fragment is dropped, never a success.
    #[test]
    fn corrupted_data_is_counted_corrupt_and_never_makes_a_success(
        seed in any::<u64>(),
        corrupt in 0.05..0.4f64,
        duplicate in 0.0..0.3f64,
    ) {
        let network = Network {
            down_data: Link::lossy(0.0, duplicate, 10).corrupting(corrupt, Mangling::PastHeader),
            ..Network::clean()
        };
        let mut sim = Sim::new(seed, network, responder_config());
        sim.add_peer(peer_addr(1), Duration::ZERO, initiator_config());
        sim.run();
        let peer = sim.peer(peer_addr(1));
        prop_assert_eq!(peer.outcome(), Some(Outcome::Finished));
        check_frames(peer);
        prop_assert_eq!(peer.summary().corrupt, peer.mangled_data);
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Refusals through the network
// ---------------------------------------------------------------------------------------------

#[test]
fn a_responder_serving_another_stream_refuses_with_error_3_through_duplicated_errors() {
    let network = Network {
        uplink: Link::lossy(0.3, 0.3, 30),
        down_control: Link::lossy(0.0, 0.6, 40),
        down_data: Link::CLEAN,
    };
    let mut refused = 0;
    for seed in 0..100 {
        let mut config = responder_config();
        config.stream_id = sid("other");
        let mut sim = Sim::new(seed, network, config);
        sim.add_peer(peer_addr(1), Duration::ZERO, initiator_config());
        sim.run();
        let peer = sim.peer(peer_addr(1));
        let first_error = sim
            .delivered_to(peer_addr(1))
            .find(|r| control_kind(r) == Some(ControlKind::Error))
            .map(|r| r.at)
            .filter(|&at| at <= sim.origin + GIVE_UP);
        match first_error {
            Some(at) => {
                refused += 1;
                assert_eq!(peer.outcome(), Some(Outcome::Refused(3)), "seed {seed}");
                assert_eq!(peer.outcome().unwrap().exit_code(), 6);
                assert_eq!(peer.ended_at, Some(at));
            }
            None => assert_eq!(peer.outcome(), Some(Outcome::NoStartAck), "seed {seed}"),
        }
        // Each START that arrived got exactly one ERROR 3 and the responder kept nothing.
        let starts = sim.delivered_to(responder_addr()).count();
        let errors: Vec<u16> = sim
            .sent_to(peer_addr(1))
            .map(|r| error_code(&r.datagram.bytes).unwrap())
            .collect();
        assert_eq!(errors, vec![ErrorCode::UnknownStream.code(); starts]);
        assert!(sim.responder.is_empty());
    }
    assert!(refused >= 80, "{refused}");
}

#[test]
fn with_max_streams_1_the_second_initiator_is_refused_with_error_5() {
    let network = Network {
        uplink: Link::lossy(0.0, 0.5, 20),
        down_control: Link::lossy(0.0, 0.5, 20),
        down_data: Link::lossy(0.0, 0.0, 5),
    };
    for seed in 0..50 {
        let mut config = responder_config();
        config.max_streams = 1;
        let mut sim = Sim::new(seed, network, config);
        sim.add_peer(peer_addr(1), Duration::ZERO, initiator_config());
        sim.add_peer(peer_addr(2), Duration::from_millis(50), initiator_config());
        sim.run();
        let first = sim.peer(peer_addr(1));
        assert_eq!(first.outcome(), Some(Outcome::Finished), "seed {seed}");
        assert_eq!(first.summary().success, FRAMES);
        let second = sim.peer(peer_addr(2));
        assert_eq!(second.outcome(), Some(Outcome::Refused(5)), "seed {seed}");
        assert_eq!(second.outcome().unwrap().exit_code(), 6);
        assert!(sim.accepted.iter().all(|a| a.1 == peer_addr(1)));
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Amplification, with junk from many forged addresses
// ---------------------------------------------------------------------------------------------

/// A datagram of `len` random bytes starting with `flag`.
fn junk(rng: &mut fastrand::Rng, flag: u16, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rng.fill(&mut bytes);
    if len >= 2 {
        bytes[..2].copy_from_slice(&flag.to_le_bytes());
    }
    if len > 26 && rng.bool() {
        bytes[26] = 1; // version 1, so more of them reach the TLV checks
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Honest initiators on lossy, corrupting links, plus random datagrams (every flag, sizes
    /// 0..400, some real STARTs) from many forged addresses: over the whole run the responder
    /// sends an unconfirmed address only replies, one per datagram, none larger than it (the
    /// simulation's checks), so it never sends such an address more bytes than it received.
    #[test]
    fn no_reply_is_larger_than_its_cause_and_none_is_unprompted(
        seed in any::<u64>(),
        network in arb_network(),
        corrupt in 0.0..0.3f64,
        junk_count in 0usize..80,
    ) {
        let network = Network {
            uplink: network.uplink.corrupting(corrupt, Mangling::Anywhere),
            ..network
        };
        let mut rng = fastrand::Rng::with_seed(seed ^ 0xa11);
        let mut sim = Sim::new(seed, network, responder_config());
        sim.add_peer(peer_addr(1), Duration::ZERO, initiator_config());
        sim.add_peer(peer_addr(2), Duration::from_millis(300), initiator_config());
        let flags = [0x0000, 0x0100, 0x0101, 0x0102, 0x0103, 0x1000, 0x4242];
        for _ in 0..junk_count {
            let from = peer_addr(rng.u8(20..30));
            let flag = flags[rng.usize(..flags.len())];
            let bytes = if rng.u8(..4) == 0 {
                encode_start(&sid(STREAM), None)
            } else {
                let len = rng.usize(0..400);
                junk(&mut rng, flag, len)
            };
            let at = Duration::from_millis(rng.u64(0..2000));
            sim.inject(at, Datagram::forged(peer_addr(99), from, responder_addr(), bytes));
        }
        sim.run();
        for n in 20..30 {
            let addr = peer_addr(n);
            let received: usize = sim.delivered_to(responder_addr())
                .filter(|r| r.datagram.from == addr)
                .map(|r| r.datagram.bytes.len())
                .sum();
            let sent: usize = sim.sent_to(addr).map(|r| r.datagram.bytes.len()).sum();
            prop_assert!(sent <= received, "{addr}: {sent} bytes sent for {received} received");
            prop_assert!(sim.sent_to(addr).all(|r| r.datagram.kind != DatagramKind::Data));
        }
    }
}
