//! The session media relay (issue 13 §9, R1-R9), sans-IO: the server's responder for a
//! session's publisher and subscribers, and the fan-out of the publisher's DATA.
//!
//! **Sessions and tokens.** The server tells the relay which sessions exist
//! ([`Relay::open_session`], [`Relay::end_session`]), who left ([`Relay::member_gone`]) and
//! who hosts ([`Relay::host_changed`]). A member's `media_token` request becomes
//! [`Relay::grant`]: a fresh token (32 random bytes, 43 base64url characters without padding)
//! bound to (session, member, role), claimable until `now + token_ttl`. Every grant is a new
//! token; earlier unexpired ones stay valid (R5). The first START carrying a token *claims* it
//! for its source `ip:port` (the tuple); from then on only that tuple may use it, and the
//! token's expiry no longer matters for that tuple: a claimed tuple lives as long as its
//! session and membership (R8), however long ago the token was granted. An unclaimed token is
//! forgotten at its `expires_at`; a claimed one stays bound to its tuple while the tuple holds
//! state and until its `expires_at` after that (so the same tuple may START again, another
//! tuple never).
//!
//! **Control frames.** Every tuple is an initiator (§4) and the relay its responder (§3): a
//! datagram from tuple T is checked in D12's order, (1) unknown flags, DATA from anyone but a
//! streaming publisher, START_ACK and LEGACY_ID dropped (the relay has no legacy START),
//! (2) START / START_CONFIRM shorter than 256 bytes dropped, (3) bad version ERROR 1, (4) bad
//! TLVs ERROR 2; then for START, R6: (a) a stream id that is no open session ERROR 3, (b) a
//! MEDIA_TOKEN missing, unknown, expired, for another session or claimed by another tuple,
//! or a publish token while the session has another publisher tuple (pending or streaming),
//! ERROR 6; (c) D12 step 5: T holds another session ERROR 4, T holds this one: the
//! byte-identical START_ACK again (the pending deadline restarts, nothing else changes), all
//! `max_streams` tuples taken ERROR 5, else the token is claimed, a connection id assigned,
//! START_ACK sent and T is pending for `confirm_timeout` after its last START (D14).
//! START_CONFIRM is D12 step 6: no state drop, wrong id or stream ERROR 4, pending becomes
//! streaming (a subscriber joins its session's fan-out list), streaming ignores it. Sending
//! an ERROR tears T down (D11, as the responder does: so a refused START forged with T's
//! source address ends T's stream too); receiving one does so silently. Every reply answers a datagram of at
//! least 256 bytes and is at most 141 bytes: the relay never amplifies and never sends a
//! control frame unprompted.
//!
//! **DATA** (R7). Each session keeps the addresses of its streaming subscribers in a `Vec`,
//! updated when one confirms or goes, so forwarding costs one lookup of the sender's tuple and
//! one of its session, and allocates nothing: [`Relay::handle_datagram`] returns that list for
//! a DATA datagram of the session's streaming publisher (the driver sends the datagram,
//! unchanged, to each), and an empty slice for DATA from anyone else (a subscriber, an
//! unconfirmed publisher, a stranger). The publisher is never in the list. The relay tracks
//! the publisher's highest sequence number (from 0 for each publisher tuple): a jump by more
//! than one reports the skipped frames as [`RelayEvent::FramesLost`]; an older number
//! (reordering, another fragment of the same frame) counts nothing.
//!
//! **Per-stream figures** for the admin view ([`Relay::stream_stats`], `GET /v1/media`): each
//! session counts the copies it forwarded and the frames it saw skipped, and estimates the
//! publisher's jitter as RFC 3550 (6.4.1) does: for each new frame (a sequence number above
//! the highest so far), the transit time is the arrival (the `now` the datagram is handed
//! in with) less the DATA header's timestamp (in seconds: timestamp / frequency);
//! `D` is the change of transit time since the previous new frame and `J += (|D| - J) / 16`.
//! It is a few arithmetic operations per frame, on the path that already reads the sequence
//! number; a new publisher tuple starts from none.
//!
//! **Teardown** (R8) is silent: the relay never sends anything unprompted. A streaming tuple
//! that goes is reported as [`RelayEvent::Stopped`].
//!
//! **Time.** [`Relay::poll_timeout`] is the earliest pending deadline or unclaimed-token
//! expiry (kept up to date on every control change, so asking is O(1));
//! [`Relay::handle_timeout`] (and any datagram arriving after it) expires them.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use loudsync_protocol::media::{
    encode_error, encode_start_ack, ConnectionId, ControlBody, ErrorCode, MediaToken, StreamId,
};

use crate::media::responder::{IdRandomness, Transmit};
use crate::media::screen::{screen, Screened};
use crate::Now;

/// The default `--media-token-ttl` (R1).
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(30);

/// Where media tokens come from: 32 random bytes per token (43 base64url characters).
pub type TokenRandomness = Box<dyn FnMut() -> [u8; 32] + Send>;

/// What the relay is configured with.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Tuples pending or streaming at once, over every session (D14's `max-streams`).
    pub max_streams: usize,
    /// How long a reservation waits for START_CONFIRM after the last START (D14).
    pub confirm_timeout: Duration,
    /// How long a granted token may be claimed (`--media-token-ttl`, R1, R5).
    pub token_ttl: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            max_streams: 4096,
            confirm_timeout: crate::media::responder::DEFAULT_CONFIRM_TIMEOUT,
            token_ttl: DEFAULT_TOKEN_TTL,
        }
    }
}

/// A token's role (R3): the host publishes, every other member subscribes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaRole {
    /// May send DATA to the relay (the session's host).
    Publish,
    /// Receives the publisher's DATA.
    Subscribe,
}

impl MediaRole {
    /// The wire name, `publish` or `subscribe` (R2).
    pub fn name(self) -> &'static str {
        match self {
            MediaRole::Publish => "publish",
            MediaRole::Subscribe => "subscribe",
        }
    }
}

/// A granted token (the `media_token` reply's contents but the port and timestamps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// 43 base64url characters (32 random bytes), what goes in START's MEDIA_TOKEN TLV.
    pub token: String,
    /// The role it grants.
    pub role: MediaRole,
    /// The STREAM_ID to ask for: the session id (R6).
    pub stream_id: StreamId,
    /// Until when it may be claimed.
    pub expires_at: Instant,
}

/// Something for metrics and logs (R9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayEvent {
    /// A START was answered with START_ACK (a new reservation, not a duplicate).
    HandshakeStarted,
    /// A tuple confirmed and is now streaming; `time_to_stream` = its first START to its
    /// START_CONFIRM.
    Streaming {
        /// The tuple's role.
        role: MediaRole,
        /// First START to accepted START_CONFIRM.
        time_to_stream: Duration,
    },
    /// A datagram was answered with ERROR `code`.
    Refused {
        /// The code sent.
        code: ErrorCode,
    },
    /// A streaming tuple stopped (R8, an ERROR received, or its session ended).
    Stopped {
        /// The tuple's role.
        role: MediaRole,
    },
    /// The publisher's sequence numbers skipped `frames` frames (they never reached the relay).
    FramesLost {
        /// Frames skipped.
        frames: u64,
    },
}

/// How often [`Relay::grant`] draws again when the randomness repeats a live token.
const TOKEN_DRAWS: usize = 8;

/// What a tuple is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// START_ACK sent; waiting for START_CONFIRM until `deadline` (D14).
    Pending { deadline: Instant },
    /// Confirmed: a subscriber receives the fan-out, a publisher's DATA is forwarded.
    Streaming,
}

/// The state held for one tuple (a source `ip:port`).
#[derive(Debug, Clone)]
struct Tuple {
    id: ConnectionId,
    session: String,
    member: String,
    role: MediaRole,
    /// The token this tuple claimed.
    token: String,
    /// The START_ACK sent, resent byte for byte to a duplicate START (D12, D16).
    start_ack: Vec<u8>,
    /// The first START, for [`RelayEvent::Streaming`]'s time to stream.
    first_start: Instant,
    phase: Phase,
}

/// A granted token.
#[derive(Debug, Clone)]
struct TokenEntry {
    session: String,
    member: String,
    role: MediaRole,
    expires_at: Instant,
    /// The tuple whose START claimed it (R5).
    claimed_by: Option<SocketAddr>,
}

/// An open session.
#[derive(Debug, Clone, Default)]
struct Session {
    /// The publish tuple, pending or streaming (at most one, R6).
    publisher: Option<SocketAddr>,
    /// The streaming subscribers: the fan-out list (R7).
    subscribers: Vec<SocketAddr>,
    /// The publisher's highest DATA sequence number so far (0 before its first).
    highest_sequence: i64,
    /// Copies of the publisher's DATA forwarded to subscribers.
    datagrams_relayed: u64,
    /// Frames the publisher's sequence numbers skipped.
    frames_lost: u64,
    /// The RFC 3550 jitter estimate of the current publisher tuple.
    jitter: Jitter,
}

/// RFC 3550 interarrival jitter, in nanoseconds (see the module comment).
#[derive(Debug, Clone, Copy, Default)]
struct Jitter {
    /// The previous new frame's transit time (arrival less send time), if any.
    last_transit: Option<i128>,
    /// The estimate `J`; meaningful once two frames were seen.
    j: f64,
    /// Whether `j` has been computed from at least one pair of frames.
    known: bool,
}

impl Jitter {
    /// A new frame, sent at `sent_ns` (sender's clock), arrived at `arrival_ns` (ours).
    fn frame(&mut self, arrival_ns: i128, sent_ns: i128) {
        let transit = arrival_ns - sent_ns;
        if let Some(last) = self.last_transit {
            let d = (transit - last).unsigned_abs() as f64;
            self.j += (d - self.j) / 16.0;
            self.known = true;
        }
        self.last_transit = Some(transit);
    }

    /// The estimate in milliseconds, once known.
    fn ms(&self) -> Option<f64> {
        self.known.then(|| self.j / 1e6)
    }
}

/// One session's stream as the admin view shows it ([`Relay::stream_stats`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamStats {
    /// The session id (the STREAM_ID).
    pub session_id: String,
    /// The publisher tuple (pending or streaming): its member and address.
    pub publisher: Option<(String, SocketAddr)>,
    /// The streaming subscribers: member and address, in the order they confirmed.
    pub subscribers: Vec<(String, SocketAddr)>,
    /// Copies of the publisher's DATA forwarded to subscribers, since the session opened.
    pub datagrams_relayed: u64,
    /// Frames the publisher's sequence numbers skipped, since the session opened.
    pub frames_lost: u64,
    /// The RFC 3550 interarrival jitter of the current publisher's frames, in milliseconds
    /// (`None` before two frames of it).
    pub jitter_ms: Option<f64>,
}

/// Observable state of one tuple, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TupleInfo {
    /// The session (stream id) it asked for.
    pub session: String,
    /// The member whose token it claimed.
    pub member: String,
    /// The token's role.
    pub role: MediaRole,
    /// The connection id assigned in START_ACK.
    pub connection_id: ConnectionId,
    /// Whether it confirmed (`false`: START_ACK sent, no START_CONFIRM yet).
    pub streaming: bool,
}

/// Whether `entry` (granted as `token`) is the token of the live tuple that claimed it: then
/// its expiry no longer matters (R5).
fn held_by_live_tuple(
    tuples: &HashMap<SocketAddr, Tuple>,
    token: &str,
    entry: &TokenEntry,
) -> bool {
    entry
        .claimed_by
        .and_then(|addr| tuples.get(&addr))
        .is_some_and(|tuple| tuple.token == token)
}

/// The relay state machine (see the module comment).
pub struct Relay {
    config: RelayConfig,
    /// Where arrival times are counted from (the `now` of [`Relay::new`]).
    epoch: Instant,
    ids: IdRandomness,
    tokens: TokenRandomness,
    sessions: HashMap<String, Session>,
    tuples: HashMap<SocketAddr, Tuple>,
    granted: HashMap<String, TokenEntry>,
    out: VecDeque<Transmit>,
    events: VecDeque<RelayEvent>,
    /// The earliest pending deadline or unclaimed-token expiry (what `poll_timeout` says).
    next_deadline: Option<Instant>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("config", &self.config)
            .field("sessions", &self.sessions.len())
            .field("tuples", &self.tuples.len())
            .field("tokens", &self.granted.len())
            .field("queued", &self.out.len())
            .finish()
    }
}

impl Relay {
    /// A relay with these settings, drawing connection ids from `ids` and tokens from `tokens`.
    pub fn new(config: RelayConfig, now: Now, ids: IdRandomness, tokens: TokenRandomness) -> Relay {
        Relay {
            config,
            epoch: now.instant,
            ids,
            tokens,
            sessions: HashMap::new(),
            tuples: HashMap::new(),
            granted: HashMap::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            next_deadline: None,
        }
    }

    /// The settings.
    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    /// A session now exists (its id becomes a stream the relay serves). Opening an open
    /// session changes nothing.
    pub fn open_session(&mut self, session_id: &str) {
        self.sessions.entry(session_id.to_owned()).or_default();
    }

    /// A session ended (R8): every tuple and token of it is dropped silently; a later START
    /// naming it gets ERROR 3.
    pub fn end_session(&mut self, session_id: &str) {
        self.drop_where(|t| t.session == session_id, |e| e.session == session_id);
        self.sessions.remove(session_id);
        self.refresh_deadline();
    }

    /// A member left, was kicked, timed out or dropped (R8): its tuples and tokens are dropped
    /// silently.
    pub fn member_gone(&mut self, session_id: &str, member_id: &str) {
        self.drop_where(
            |t| t.session == session_id && t.member == member_id,
            |e| e.session == session_id && e.member == member_id,
        );
        self.refresh_deadline();
    }

    /// The session's host is now `host` (R8): a publish tuple or token of anyone else is
    /// dropped silently.
    pub fn host_changed(&mut self, session_id: &str, host: Option<&str>) {
        let stale = |session: &str, member: &str, role: MediaRole| {
            session == session_id && role == MediaRole::Publish && Some(member) != host
        };
        self.drop_where(
            |t| stale(&t.session, &t.member, t.role),
            |e| stale(&e.session, &e.member, e.role),
        );
        self.refresh_deadline();
    }

    /// Grants `member_id` of `session_id` a token for `role` (R2, R5), valid for the TTL;
    /// `None` when the session is not open (or its id cannot be a STREAM_ID, or the token
    /// randomness keeps repeating live tokens).
    pub fn grant(
        &mut self,
        now: Now,
        session_id: &str,
        member_id: &str,
        role: MediaRole,
    ) -> Option<Grant> {
        if !self.sessions.contains_key(session_id) {
            return None;
        }
        let stream_id = StreamId::new(session_id)?;
        let token = (0..TOKEN_DRAWS)
            .map(|_| URL_SAFE_NO_PAD.encode((self.tokens)()))
            .find(|token| !self.granted.contains_key(token))?;
        let expires_at = now.instant.checked_add(self.config.token_ttl)?;
        self.granted.insert(
            token.clone(),
            TokenEntry {
                session: session_id.to_owned(),
                member: member_id.to_owned(),
                role,
                expires_at,
                claimed_by: None,
            },
        );
        self.next_deadline = Some(self.next_deadline.map_or(expires_at, |d| d.min(expires_at)));
        Some(Grant {
            token,
            role,
            stream_id,
            expires_at,
        })
    }

    /// A datagram arrived from `from`. Control frames are validated (D12 with R6's token
    /// checks) and replies queued for [`Relay::poll_transmit`]; a DATA datagram of a session's
    /// confirmed publisher returns the subscribers to forward it to, unchanged (R7); anything
    /// else returns an empty slice.
    pub fn handle_datagram(&mut self, now: Now, from: SocketAddr, bytes: &[u8]) -> &[SocketAddr] {
        if self.next_deadline.is_some_and(|d| d <= now.instant) {
            self.expire(now.instant);
        }
        // Only a tuple added or removed (a new reservation; a torn-down tuple's token expiring
        // again) or a pending one (a duplicate START restarts its deadline) moves the earliest
        // deadline; a stranger's datagram changes none of them and never pays for the scan.
        let tuples_before = self.tuples.len();
        let was_pending = self
            .tuples
            .get(&from)
            .is_some_and(|t| matches!(t.phase, Phase::Pending { .. }));
        match screen(bytes) {
            Screened::Data => return self.on_data(now, from, bytes),
            Screened::Drop | Screened::LegacyStart => return &[],
            Screened::Refuse(code, stream_id) => self.refuse(from, code, stream_id.as_ref()),
            Screened::Frame(frame) => match frame.body {
                ControlBody::Start {
                    stream_id,
                    media_token,
                } => self.on_start(now, from, stream_id, media_token),
                ControlBody::StartConfirm { stream_id } => {
                    self.on_confirm(from, now, frame.connection_id, stream_id)
                }
                ControlBody::Error { .. } => self.teardown(from),
                ControlBody::StartAck { .. } => {}
            },
        }
        if was_pending || self.tuples.len() != tuples_before {
            self.refresh_deadline();
        }
        &[]
    }

    /// The next control datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// The next event for metrics.
    pub fn poll_event(&mut self) -> Option<RelayEvent> {
        self.events.pop_front()
    }

    /// When [`Relay::handle_timeout`] next has something to do (a reservation or token expiry).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_deadline
    }

    /// Time passed: expire reservations (D14) and tokens (R5).
    pub fn handle_timeout(&mut self, now: Now) {
        self.expire(now.instant);
    }

    /// Tuples streaming now (the `loudsync_media_streams` gauge).
    pub fn streams(&self) -> usize {
        self.tuples
            .values()
            .filter(|t| t.phase == Phase::Streaming)
            .count()
    }

    /// Streaming subscribers of `session_id`.
    pub fn subscribers(&self, session_id: &str) -> usize {
        self.sessions
            .get(session_id)
            .map_or(0, |s| s.subscribers.len())
    }

    /// Tuples holding state, pending or streaming (what counts toward `max_streams`).
    pub fn tuples(&self) -> usize {
        self.tuples.len()
    }

    /// Tokens granted and not yet forgotten (unexpired, or bound to a live tuple).
    pub fn tokens(&self) -> usize {
        self.granted.len()
    }

    /// What `tuple` holds, if anything.
    pub fn tuple(&self, tuple: SocketAddr) -> Option<TupleInfo> {
        self.tuples.get(&tuple).map(|t| TupleInfo {
            session: t.session.clone(),
            member: t.member.clone(),
            role: t.role,
            connection_id: t.id,
            streaming: t.phase == Phase::Streaming,
        })
    }

    /// Every open session's stream, by session id, for the admin view (see the module
    /// comment). O(sessions + tuples).
    pub fn stream_stats(&self) -> Vec<StreamStats> {
        let member = |addr: &SocketAddr| self.tuples.get(addr).map(|t| (t.member.clone(), *addr));
        let mut out: Vec<StreamStats> = self
            .sessions
            .iter()
            .map(|(id, s)| StreamStats {
                session_id: id.clone(),
                publisher: s.publisher.as_ref().and_then(member),
                subscribers: s.subscribers.iter().filter_map(member).collect(),
                datagrams_relayed: s.datagrams_relayed,
                frames_lost: s.frames_lost,
                jitter_ms: s.jitter.ms(),
            })
            .collect();
        out.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        out
    }

    /// R7: the fan-out list for a streaming publisher's DATA, else nothing.
    fn on_data(&mut self, now: Now, from: SocketAddr, bytes: &[u8]) -> &[SocketAddr] {
        let Some(tuple) = self.tuples.get(&from) else {
            return &[];
        };
        if tuple.role != MediaRole::Publish || tuple.phase != Phase::Streaming {
            return &[];
        }
        let Some(session) = self.sessions.get_mut(&tuple.session) else {
            return &[];
        };
        let field = |at: usize| {
            let mut value = [0u8; 8];
            value.copy_from_slice(&bytes[at..at + 8]);
            i64::from_le_bytes(value)
        };
        let sequence = field(2);
        session.datagrams_relayed += session.subscribers.len() as u64;
        if sequence > session.highest_sequence {
            let gap = sequence.abs_diff(session.highest_sequence) - 1;
            session.highest_sequence = sequence;
            let (timestamp, frequency) = (field(10), field(18));
            if frequency > 0 {
                let arrival = now.instant.saturating_duration_since(self.epoch).as_nanos() as i128;
                let sent = i128::from(timestamp) * 1_000_000_000 / i128::from(frequency);
                session.jitter.frame(arrival, sent);
            }
            session.frames_lost += gap;
            if gap > 0 {
                match self.events.back_mut() {
                    Some(RelayEvent::FramesLost { frames }) => *frames += gap,
                    _ => self
                        .events
                        .push_back(RelayEvent::FramesLost { frames: gap }),
                }
            }
        }
        &session.subscribers
    }

    /// R6 then D12 step 5.
    fn on_start(
        &mut self,
        now: Now,
        from: SocketAddr,
        stream_id: StreamId,
        media_token: Option<MediaToken>,
    ) {
        let session_key = stream_id.as_str();
        let Some(session) = self.sessions.get(session_key) else {
            return self.refuse(from, ErrorCode::UnknownStream, Some(&stream_id));
        };
        let token = media_token
            .as_ref()
            .and_then(|t| std::str::from_utf8(t.as_bytes()).ok());
        let entry = token.and_then(|t| self.granted.get(t));
        let valid = entry.is_some_and(|e| {
            e.session == session_key
                && match e.claimed_by {
                    Some(tuple) => tuple == from,
                    None => now.instant < e.expires_at,
                }
                && (e.role != MediaRole::Publish
                    || !matches!(session.publisher, Some(p) if p != from))
        });
        let (Some(token), Some(entry), true) = (token, entry, valid) else {
            return self.refuse(from, ErrorCode::BadToken, Some(&stream_id));
        };
        let (member, role) = (entry.member.clone(), entry.role);
        let confirm_timeout = self.config.confirm_timeout;
        if let Some(tuple) = self.tuples.get_mut(&from) {
            if tuple.session != session_key {
                return self.refuse(from, ErrorCode::StreamMismatch, Some(&stream_id));
            }
            if let Phase::Pending { deadline } = &mut tuple.phase {
                *deadline = now.instant + confirm_timeout;
            }
            let bytes = tuple.start_ack.clone();
            self.out.push_back(Transmit { to: from, bytes });
            return;
        }
        if self.tuples.len() >= self.config.max_streams {
            return self.refuse(from, ErrorCode::Refused, Some(&stream_id));
        }
        let token = token.to_owned();
        if let Some(entry) = self.granted.get_mut(&token) {
            entry.claimed_by = Some(from);
        }
        if role == MediaRole::Publish {
            if let Some(session) = self.sessions.get_mut(session_key) {
                session.publisher = Some(from);
            }
        }
        let id = ConnectionId::from_random((self.ids)());
        let start_ack = encode_start_ack(&id, &stream_id);
        self.out.push_back(Transmit {
            to: from,
            bytes: start_ack.clone(),
        });
        self.tuples.insert(
            from,
            Tuple {
                id,
                session: session_key.to_owned(),
                member,
                role,
                token,
                start_ack,
                first_start: now.instant,
                phase: Phase::Pending {
                    deadline: now.instant + confirm_timeout,
                },
            },
        );
        self.events.push_back(RelayEvent::HandshakeStarted);
    }

    /// D12 step 6.
    fn on_confirm(&mut self, from: SocketAddr, now: Now, id: ConnectionId, stream_id: StreamId) {
        let Some(tuple) = self.tuples.get_mut(&from) else {
            return;
        };
        if tuple.id != id || tuple.session != stream_id.as_str() {
            return self.refuse(from, ErrorCode::StreamMismatch, Some(&stream_id));
        }
        if tuple.phase == Phase::Streaming {
            return;
        }
        tuple.phase = Phase::Streaming;
        let role = tuple.role;
        if let Some(session) = self.sessions.get_mut(&tuple.session) {
            match role {
                MediaRole::Subscribe => session.subscribers.push(from),
                // A new publisher tuple numbers its frames from 1 (D21).
                MediaRole::Publish => {
                    session.highest_sequence = 0;
                    session.jitter = Jitter::default();
                }
            }
        }
        self.events.push_back(RelayEvent::Streaming {
            role,
            time_to_stream: now.instant.saturating_duration_since(tuple.first_start),
        });
    }

    /// Sends ERROR `code` to `to` and tears its state down (D11).
    fn refuse(&mut self, to: SocketAddr, code: ErrorCode, stream_id: Option<&StreamId>) {
        let id = self.tuples.get(&to).map_or(ConnectionId::ZERO, |t| t.id);
        self.teardown(to);
        self.out.push_back(Transmit {
            to,
            bytes: encode_error(code, &id, stream_id),
        });
        self.events.push_back(RelayEvent::Refused { code });
    }

    /// Drops `addr`'s state silently: out of its session's publisher slot or fan-out list, a
    /// [`RelayEvent::Stopped`] if it was streaming. Its token stays bound to it until it
    /// expires.
    fn teardown(&mut self, addr: SocketAddr) {
        let Some(tuple) = self.tuples.remove(&addr) else {
            return;
        };
        self.unlink(addr, &tuple);
    }

    /// The bookkeeping of a tuple that is gone.
    fn unlink(&mut self, addr: SocketAddr, tuple: &Tuple) {
        if let Some(session) = self.sessions.get_mut(&tuple.session) {
            if session.publisher == Some(addr) {
                session.publisher = None;
            }
            if tuple.phase == Phase::Streaming && tuple.role == MediaRole::Subscribe {
                session.subscribers.retain(|s| *s != addr);
            }
        }
        if tuple.phase == Phase::Streaming {
            self.events
                .push_back(RelayEvent::Stopped { role: tuple.role });
        }
    }

    /// Drops, silently, every tuple and token matching.
    fn drop_where(&mut self, tuple: impl Fn(&Tuple) -> bool, token: impl Fn(&TokenEntry) -> bool) {
        let gone: Vec<SocketAddr> = self
            .tuples
            .iter()
            .filter(|(_, t)| tuple(t))
            .map(|(addr, _)| *addr)
            .collect();
        for addr in gone {
            self.teardown(addr);
        }
        self.granted.retain(|_, e| !token(e));
    }

    /// Drops reservations whose confirm timeout ran out (D14) and tokens past their
    /// `expires_at` that no live tuple holds (R5).
    fn expire(&mut self, now: Instant) {
        let expired: Vec<SocketAddr> = self
            .tuples
            .iter()
            .filter(|(_, t)| matches!(t.phase, Phase::Pending { deadline } if deadline <= now))
            .map(|(addr, _)| *addr)
            .collect();
        for addr in expired {
            self.teardown(addr);
        }
        let tuples = &self.tuples;
        self.granted
            .retain(|token, e| now < e.expires_at || held_by_live_tuple(tuples, token, e));
        self.refresh_deadline();
    }

    /// Recomputes [`Relay::poll_timeout`]'s answer after a control change.
    fn refresh_deadline(&mut self) {
        let pending = self.tuples.values().filter_map(|t| match t.phase {
            Phase::Pending { deadline } => Some(deadline),
            Phase::Streaming => None,
        });
        let tuples = &self.tuples;
        let tokens = self
            .granted
            .iter()
            .filter(|(token, e)| !held_by_live_tuple(tuples, token, e))
            .map(|(_, e)| e.expires_at);
        self.next_deadline = pending.chain(tokens).min();
    }
}

#[cfg(test)]
#[path = "relay_tests.rs"]
mod tests;
