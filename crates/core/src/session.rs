//! One session: its member table, its host, and every rule of seed 001 that involves more than
//! one socket (join validation, member list, leave, kick, application messages, closing).
//!
//! A **member** is a place in the session (id, device, dialect, latency, join time); a
//! **transport** is what currently carries it (in the server, the member's outbound queue).
//! Places and transports are separate: a join creates a place with a transport,
//! [`Session::handle_detach`] takes the transport away, [`Session::handle_attach`] gives a held
//! place a new one. The session decides what a detach means: with the default hold of zero
//! the place ends at once (`member_left`, or the end of the session for the host), exactly as
//! seed 001 says; with a hold (the resume layer) the place waits for a new transport until its
//! deadline, which [`Session::poll_timeout`] reports.
//!
//! What must be sent comes out of [`Session::poll_action`] as [`SessionAction::Send`] with a
//! [`Recipients`] set; the caller resolves it with [`Session::deliveries`] right away, before
//! polling the next action, so it encodes each message once per dialect and queues the same
//! bytes for every recipient. A member removed by an action is still a recipient of the
//! actions queued before its removal, and of none after (its [`SessionAction::Close`] hands
//! its transport back).
//!
//! Who may join is the session's [`Access`]: who may take the host role, and the password
//! every join must carry (unless it holds a valid join token), with wrong passwords limited
//! per address ([`access`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use loudsync_protocol::app::Dialect;
use loudsync_protocol::{
    close_code, server::SessionInfo, types::MediaRole, ConnectionStatus, DeviceRef, DeviceType,
    ErrorCode, HandoffFailure, HostChange, Join, LeaveReason, MemberInfo, ResumeFailure,
    ServerMessage,
};

use crate::connection::MemberCommand;
use crate::directory::{Access, Credentials, HostRule, JoinError, SessionSpec};
use crate::resume::{ReplayBuffer, ReplayError, ReplayLimits};
use crate::Now;

pub mod access;
pub mod handoff;
pub mod state;

use access::{Attempts, FailureLimit};
use handoff::{Control, HandoffConfig};
use state::SessionState;

/// Who a message goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipients {
    /// One member.
    One(String),
    /// Every member but one (typically the sender or the subject).
    AllExcept(String),
    /// Every member.
    All,
    /// Every member speaking this dialect but one (the subject).
    AllExceptIn(String, Dialect),
    /// Every member speaking this dialect.
    AllIn(Dialect),
}

impl Recipients {
    fn includes(&self, id: &str, dialect: Dialect) -> bool {
        match self {
            Recipients::One(to) => to == id,
            Recipients::AllExcept(not) => not != id,
            Recipients::All => true,
            Recipients::AllExceptIn(not, d) => not != id && *d == dialect,
            Recipients::AllIn(d) => *d == dialect,
        }
    }
}

/// A frame for one recipient, as [`Session::deliver`] hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// As encoded (plain connections, and messages that are never numbered).
    Plain(Bytes),
    /// To be sent with this `seq` in front (a resumable member's numbered message).
    Numbered(u64, Bytes),
}

/// A resume that succeeded: what the new transport must be sent, in this order, before
/// anything else: `token` (the connection token), `resumed {lastSeq: last_in, replayed}`,
/// then `replay`.
#[derive(Debug)]
pub struct Resumption<T> {
    /// The last client `seq` the session processed: the client resends what follows.
    pub last_in: u64,
    /// The numbered frames after the client's `lastSeq`, in order, as first sent.
    pub replay: Vec<(u64, Bytes)>,
    /// The transport the place had, if it still had one: close it with 4000 `replaced`.
    pub replaced: Option<T>,
}

/// Why a resume was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeRefusal {
    /// `resume_failed` with this reason (the socket stays open for a fresh handshake).
    Failed(ResumeFailure),
    /// `lastSeq` is above the last `seq` sent: `invalid_message`, the place stays held.
    AboveSent {
        /// The last `seq` sent to the member.
        last_sent: u64,
    },
}

/// What the I/O layer must do for this session.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionAction<T> {
    /// Send a message to these members (resolve them with [`Session::deliveries`] now).
    Send {
        /// Who gets it.
        to: Recipients,
        /// What.
        message: ServerMessage,
    },
    /// The member's place ended: close its transport after what is queued on it.
    Close {
        /// The member's `clientId`.
        member: String,
        /// Its transport, handed back.
        transport: T,
        /// WebSocket close code.
        code: u16,
        /// Close reason text.
        reason: String,
    },
    /// A resumable place ended: from now on its connection token answers `why`.
    TokenEnded {
        /// The connection token.
        token: String,
        /// What a resume with it answers.
        why: ResumeFailure,
    },
    /// A member asked for a media token (issue 13 R2) and may have one for `role` (R3: the
    /// host publishes, everyone else subscribes). The caller grants it (or refuses with
    /// `media_unavailable`) and answers through [`Session::send_to`], so a resumable member's
    /// reply is numbered and replayed like every other message.
    MediaToken {
        /// The asking member's `clientId`.
        member: String,
        /// The role its token grants.
        role: MediaRole,
    },
    /// A member's place ended, whatever the reason (left, kicked, timed out, dropped, its
    /// held place ran out, the session ended): whatever it held outside the session (its
    /// media tuples, issue 13 R8) goes too. Queued before the place's [`SessionAction::Close`].
    MemberGone {
        /// The member's `clientId`.
        member: String,
    },
    /// The session is over; every member has been told and closed.
    Ended,
}

/// What an operator watching the server sees of a session (the admin event stream, `GET
/// /v1/events`): recorded only while the session is observed ([`Session::set_observed`]),
/// drained with [`Session::poll_event`].
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// A place was created by a join (also the first member's, whom no `member_joined` tells).
    MemberJoined {
        /// The member as `member_list` shows it.
        member: MemberInfo,
        /// The dialect it speaks.
        dialect: Dialect,
    },
    /// A place ended while the session goes on (left, kicked, timed out, dropped).
    MemberLeft {
        /// The member's `clientId`.
        member_id: String,
        /// Why.
        reason: LeaveReason,
    },
    /// A member's entry changed: its connection status (`reconnecting`, `connected`) or its
    /// readiness to take control.
    MemberUpdated {
        /// The member as `member_list` shows it.
        member: MemberInfo,
    },
    /// The host changed.
    HostChanged {
        /// The new host.
        host_id: String,
        /// The host before it.
        previous_host_id: String,
        /// The new term.
        term: u64,
        /// A handoff, or the loss of the host.
        reason: HostChange,
    },
    /// A handoff began: the request is on its way to the candidate.
    HandoffStarted {
        /// The request's id.
        handoff_id: String,
        /// The host asking.
        host_id: String,
        /// The candidate.
        target_id: String,
    },
    /// A handoff did not happen (one event per failure, whoever is told).
    HandoffFailed {
        /// The request's id (none for `busy` and `no_candidate`).
        handoff_id: Option<String>,
        /// The candidate, when there was one.
        target_id: Option<String>,
        /// Why.
        reason: HandoffFailure,
    },
    /// The session ended; every place with it.
    Closed {
        /// The reason `session_closed` gives.
        reason: String,
    },
}

/// Why an operator's action on a session (the admin API) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRefusal {
    /// No member with this id.
    NoSuchMember,
    /// The member is the host: it cannot be kicked (close the session, or hand control
    /// first), nor handed control it has.
    IsHost,
    /// The session has no host to hand control from.
    NoHost,
    /// A handoff is pending already.
    Busy,
    /// The member cannot take control now (away in a resume window, or of the app's dialect).
    NotEligible,
}

/// The settings of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// How long a detached resumable member's place is held for a new transport (the resume
    /// window). Zero ends every place at once; plain members' places always end at once, as
    /// seed 001 has it.
    pub detach_hold: Duration,
    /// The bounds of each resumable member's replay buffer.
    pub replay: ReplayLimits,
    /// How many wrong passwords an address may give, and over what window.
    pub password_failures: FailureLimit,
    /// The state and handoff layer's settings.
    pub handoff: HandoffConfig,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            detach_hold: Duration::ZERO,
            replay: ReplayLimits::default(),
            password_failures: FailureLimit::default(),
            handoff: HandoffConfig::default(),
        }
    }
}

/// A transport joining with its member's particulars.
#[derive(Debug, Clone)]
pub struct Joiner<T> {
    /// What carries the member.
    pub transport: T,
    /// The dialect its messages are encoded in.
    pub dialect: Dialect,
    /// Its network address (the LOUDSYNC app's dialect shows it to other members; wrong
    /// passwords are counted by it).
    pub address: String,
    /// What it proved before it was routed here (a valid join token).
    pub credentials: Credentials,
    /// The caller's id for this transport: inputs from a transport the place no longer has
    /// (after a resume moved it) are ignored.
    pub socket: u64,
    /// The connection token, if the transport went through the resume handshake: the member
    /// is then numbered and its place may be resumed.
    pub resume_token: Option<String>,
}

/// Why a transport could not be attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachError {
    /// No place with this id (never joined, or ended).
    NoSuchMember,
    /// The place has a transport already.
    AlreadyAttached,
}

#[derive(Debug)]
struct Member<T> {
    id: String,
    device_id: String,
    name: String,
    joined_at: u64,
    latency: Option<u64>,
    dialect: Dialect,
    address: String,
    transport: Option<T>,
    /// The id of the transport the place has (or had last).
    socket: u64,
    /// While detached: the deadline of the held place, and why it was detached.
    held: Option<(Instant, LeaveReason)>,
    /// The resume layer's state of a resumable member (boxed: plain members stay small).
    resume: Option<Box<Resumable>>,
    /// The number of its readiness declaration, while it is ready to take control.
    ready: Option<u64>,
}

/// What a resumable place keeps across its transports.
#[derive(Debug)]
struct Resumable {
    /// The connection token.
    token: String,
    /// Its outbound numbering and unacknowledged frames.
    out: ReplayBuffer,
    /// The last client `seq` processed.
    last_in: u64,
    /// How the place is ending, decided before it ends (its replay buffer overflowed, its
    /// window ran out): its token answers this whatever the path that removes it.
    fate: Option<ResumeFailure>,
}

/// What is queued inside, before a close is resolved to its transport.
#[derive(Debug)]
enum Pending {
    Send {
        to: Recipients,
        message: ServerMessage,
    },
    Close {
        member: String,
        code: u16,
        reason: String,
    },
    TokenEnded {
        token: String,
        why: ResumeFailure,
    },
    MediaToken {
        member: String,
        role: MediaRole,
    },
    MemberGone {
        member: String,
    },
    Ended,
}

/// The state machine of one session; `T` is the caller's transport handle.
#[derive(Debug)]
pub struct Session<T> {
    id: String,
    name: String,
    max_members: usize,
    config: SessionConfig,
    access: Access,
    attempts: Attempts,
    host: Option<String>,
    /// The places, in join order.
    members: Vec<Member<T>>,
    /// Removed members whose `Close` has not been polled yet: still recipients of what was
    /// queued before their removal.
    departing: Vec<Member<T>>,
    ended: bool,
    /// How many places are held (detached, waiting for a transport): no timer while none.
    held: usize,
    actions: VecDeque<Pending>,
    /// The state document.
    state: SessionState,
    /// The term, the pending handoff, the readiness order.
    control: Control,
    /// Whether [`SessionEvent`]s are recorded.
    observed: bool,
    events: VecDeque<SessionEvent>,
}

impl<T> Session<T> {
    /// An empty session (created over HTTP, or for a host's `join`).
    pub fn new(spec: SessionSpec, config: SessionConfig) -> Self {
        Session {
            id: spec.id,
            name: spec.name,
            max_members: spec.max_members.max(1),
            attempts: Attempts::new(config.password_failures),
            config,
            access: spec.access,
            host: None,
            members: Vec::new(),
            departing: Vec::new(),
            ended: false,
            held: 0,
            actions: VecDeque::new(),
            state: SessionState::new(),
            control: Control::new(),
            observed: false,
            events: VecDeque::new(),
        }
    }

    /// Whether to record [`SessionEvent`]s from now on (off by default: an unobserved
    /// session builds none). Turning it off drops what was not polled.
    pub fn set_observed(&mut self, observed: bool) {
        self.observed = observed;
        if !observed {
            self.events.clear();
        }
    }

    /// The next event for the operators, in the order things happened.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// Records an event if the session is observed (built only then).
    fn note(&mut self, event: impl FnOnce(&Self) -> SessionEvent) {
        if self.observed {
            let event = event(self);
            self.events.push_back(event);
        }
    }

    /// The state document and its version.
    pub fn state(&self) -> &SessionState {
        &self.state
    }

    /// The session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The display name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The capacity, host included.
    pub fn max_members(&self) -> usize {
        self.max_members
    }

    /// The host's `clientId`, if the session has a host.
    pub fn host_id(&self) -> Option<&str> {
        self.host.as_deref()
    }

    /// Whether joins need a password.
    pub fn password_protected(&self) -> bool {
        self.access.password.is_some()
    }

    /// How many places the session has, host included.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Whether the session has ended.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The next thing to do, if any. Resolve a [`SessionAction::Send`] with
    /// [`Session::deliveries`] before polling again.
    pub fn poll_action(&mut self) -> Option<SessionAction<T>> {
        loop {
            match self.actions.pop_front()? {
                Pending::Send { to, message } => return Some(SessionAction::Send { to, message }),
                Pending::Ended => return Some(SessionAction::Ended),
                Pending::TokenEnded { token, why } => {
                    return Some(SessionAction::TokenEnded { token, why })
                }
                Pending::MediaToken { member, role } => {
                    return Some(SessionAction::MediaToken { member, role })
                }
                Pending::MemberGone { member } => {
                    return Some(SessionAction::MemberGone { member })
                }
                Pending::Close {
                    member,
                    code,
                    reason,
                } => {
                    let Some(at) = self.departing.iter().position(|m| m.id == member) else {
                        continue;
                    };
                    let departed = self.departing.swap_remove(at);
                    if let Some(transport) = departed.transport {
                        return Some(SessionAction::Close {
                            member,
                            transport,
                            code,
                            reason,
                        });
                    }
                }
            }
        }
    }

    /// The transports a message for `to` goes to, with their dialects.
    pub fn deliveries<'a>(&'a self, to: &'a Recipients) -> impl Iterator<Item = (&'a T, Dialect)> {
        self.members
            .iter()
            .chain(self.departing.iter())
            .filter(move |m| to.includes(&m.id, m.dialect))
            .filter_map(|m| m.transport.as_ref().map(|t| (t, m.dialect)))
    }

    /// Which dialects the recipients of `to` speak: (ours, the app's), so a message is
    /// encoded only in those before [`Session::deliver`].
    pub fn recipient_dialects(&self, to: &Recipients) -> (bool, bool) {
        let mut dialects = (false, false);
        for m in self.members.iter().chain(self.departing.iter()) {
            if to.includes(&m.id, m.dialect) {
                match m.dialect {
                    Dialect::LoudSync => dialects.0 = true,
                    Dialect::App => dialects.1 = true,
                }
                if dialects == (true, true) {
                    break;
                }
            }
        }
        dialects
    }

    /// Resolves a [`SessionAction::Send`]: hands `out` the frame for every recipient with a
    /// transport, `encode(dialect)` giving the message's bytes in a dialect (the caller
    /// encodes once per dialect and shares the bytes). A resumable recipient's numbered
    /// message is numbered and kept in its replay buffer, also while it is away; one that
    /// overflows the buffer ends the place (closed with 1008 `resume buffer overflow` if it
    /// is connected). Returns how many frames were handed out.
    pub fn deliver(
        &mut self,
        to: &Recipients,
        message: &ServerMessage,
        encode: &mut dyn FnMut(Dialect) -> Bytes,
        out: &mut dyn FnMut(&T, Outgoing),
    ) -> u64 {
        let numbered = message.is_numbered();
        let limits = self.config.replay;
        let mut overflowed = Vec::new();
        let mut handed = 0;
        for m in self.members.iter_mut().chain(self.departing.iter_mut()) {
            if !to.includes(&m.id, m.dialect) {
                continue;
            }
            let frame = match (&mut m.resume, numbered) {
                (Some(r), true) => {
                    if r.fate == Some(ResumeFailure::BufferOverflow) {
                        // Being dropped for it: nothing more is numbered or sent.
                        continue;
                    }
                    let bytes = encode(m.dialect);
                    match r.out.push(bytes.clone(), &limits) {
                        Ok(seq) => Outgoing::Numbered(seq, bytes),
                        Err(_) => {
                            r.fate = Some(ResumeFailure::BufferOverflow);
                            overflowed.push(m.id.clone());
                            continue;
                        }
                    }
                }
                _ if m.transport.is_none() => continue,
                _ => Outgoing::Plain(encode(m.dialect)),
            };
            if let Some(t) = &m.transport {
                out(t, frame);
                handed += 1;
            }
        }
        for id in overflowed {
            self.end_overflowed(&id);
        }
        handed
    }

    /// A resumable place whose replay buffer overflowed ends: its member is told as for an
    /// error, a connected one is closed with 1008, and its token answers `buffer_overflow`.
    fn end_overflowed(&mut self, member_id: &str) {
        if self.member(member_id).is_none() {
            return;
        }
        if self.host.as_deref() == Some(member_id) {
            // The host goes first, as the too slow member it is; then what its loss causes.
            self.lose_host(
                member_id,
                LeaveReason::Error,
                close_code::POLICY_VIOLATION,
                "resume buffer overflow",
            );
        } else {
            self.remove_with(
                member_id,
                LeaveReason::Error,
                close_code::POLICY_VIOLATION,
                "resume buffer overflow",
            );
        }
    }

    /// A member's network address (for the app dialect's member view).
    pub fn address_of(&self, member_id: &str) -> Option<&str> {
        self.present_or_departing(member_id)
            .map(|m| m.address.as_str())
    }

    /// A member in the table, or removed with its `Close` not polled yet.
    fn present_or_departing(&self, member_id: &str) -> Option<&Member<T>> {
        self.members
            .iter()
            .chain(self.departing.iter())
            .find(|m| m.id == member_id)
    }

    /// When [`Session::handle_timeout`] must next be called: the earliest held place's deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let handoff = self.handoff_deadline();
        if self.held == 0 {
            // The common case, checked after every batch of a big session: no scan.
            return handoff;
        }
        self.members
            .iter()
            .filter_map(|m| m.held.map(|(at, _)| at))
            .chain(handoff)
            .min()
    }

    /// Timers: a pending handoff past its deadline fails; held places whose deadline passed
    /// end, as an immediate detach would have.
    pub fn handle_timeout(&mut self, now: Now) {
        self.handoff_timeout(now);
        if self.held == 0 {
            return;
        }
        let expired: Vec<(String, LeaveReason)> = self
            .members
            .iter()
            .filter_map(|m| match m.held {
                Some((at, reason)) if at <= now.instant => Some((m.id.clone(), reason)),
                _ => None,
            })
            .collect();
        for (id, reason) in expired {
            if let Some(r) = self
                .members
                .iter_mut()
                .find(|m| m.id == id)
                .and_then(|m| m.resume.as_mut())
            {
                r.fate = Some(ResumeFailure::Expired);
            }
            self.end_place(&id, reason);
        }
    }

    /// The members as `member_list` shows them: host first, then join order.
    pub fn member_infos(&self) -> Vec<MemberInfo> {
        let host = self.host.as_deref();
        let mut infos: Vec<MemberInfo> = Vec::with_capacity(self.members.len());
        if let Some(h) = self.members.iter().find(|m| Some(m.id.as_str()) == host) {
            infos.push(self.info(h));
        }
        infos.extend(
            self.members
                .iter()
                .filter(|m| Some(m.id.as_str()) != host)
                .map(|m| self.info(m)),
        );
        infos
    }

    /// [`Session::member_infos`], each with its member's dialect.
    pub fn member_details(&self) -> Vec<(MemberInfo, Dialect)> {
        let host = self.host.as_deref();
        let mut details = Vec::with_capacity(self.members.len());
        if let Some(h) = self.members.iter().find(|m| Some(m.id.as_str()) == host) {
            details.push((self.info(h), h.dialect));
        }
        details.extend(
            self.members
                .iter()
                .filter(|m| Some(m.id.as_str()) != host)
                .map(|m| (self.info(m), m.dialect)),
        );
        details
    }

    fn info(&self, m: &Member<T>) -> MemberInfo {
        MemberInfo {
            id: m.id.clone(),
            name: m.name.clone(),
            is_host: self.host.as_deref() == Some(m.id.as_str()),
            connection_status: match (&m.transport, &m.resume) {
                (Some(_), _) => ConnectionStatus::Connected,
                (None, Some(_)) => ConnectionStatus::Reconnecting,
                (None, None) => ConnectionStatus::Disconnected,
            },
            joined_at: m.joined_at,
            latency: m.latency,
            handoff_ready: m.ready.is_some() && self.host.as_deref() != Some(m.id.as_str()),
            device_id: m.device_id.clone(),
        }
    }

    fn member(&self, member_id: &str) -> Option<&Member<T>> {
        self.members.iter().find(|m| m.id == member_id)
    }

    fn device(&self, member_id: &str) -> DeviceRef {
        self.present_or_departing(member_id)
            .map(|m| DeviceRef {
                device_id: m.device_id.clone(),
                name: m.name.clone(),
            })
            .unwrap_or_default()
    }

    /// A `join` for this session by a new member whose `clientId` is `member_id` (made by the
    /// directory), carried by `joiner`'s transport.
    ///
    /// Validates in order: the session has not ended; a host-type join may take the host
    /// role (`host_not_allowed`); the password, unless the join holds a valid token
    /// (`too_many_attempts` while the address is over its limit of wrong passwords, then
    /// `password_required`, `wrong_password`); the device is not already a member
    /// (`already_joined`); a host-type join finds no host (`unauthorized`); capacity
    /// (`session_full`). On success it queues `welcome` and `member_list` to the joiner and
    /// `member_joined` to the others. On failure nothing is queued, and the transport is
    /// handed back with the refusal.
    pub fn handle_join(
        &mut self,
        now: Now,
        member_id: String,
        join: &Join,
        joiner: Joiner<T>,
    ) -> Result<(), (JoinError, T)> {
        if let Err(e) = self.check_join(now, join, &joiner.address, joiner.credentials) {
            return Err((e, joiner.transport));
        }
        let device = &join.device_info;
        let as_host = device.kind == DeviceType::Host;
        let resumable = joiner.resume_token.is_some();
        self.members.push(Member {
            id: member_id.clone(),
            device_id: device.id.clone(),
            name: device.name.clone(),
            joined_at: now.unix_ms,
            latency: None,
            dialect: joiner.dialect,
            address: joiner.address,
            transport: Some(joiner.transport),
            socket: joiner.socket,
            held: None,
            resume: joiner.resume_token.map(|token| {
                Box::new(Resumable {
                    token,
                    out: ReplayBuffer::new(),
                    last_in: 0,
                    fate: None,
                })
            }),
            ready: None,
        });
        if as_host {
            self.host = Some(member_id.clone());
        }
        let info = self.info(self.members.last().expect("just pushed"));
        let dialect = joiner.dialect;
        self.note(|_| SessionEvent::MemberJoined {
            member: info.clone(),
            dialect,
        });
        self.send(
            Recipients::One(member_id.clone()),
            ServerMessage::Welcome {
                client_id: member_id.clone(),
                session_info: Box::new(self.session_info()),
                device: self.device(&member_id),
                joined_at: now.unix_ms,
                resumable,
                state: Some(Box::new(self.state.snapshot(self.control.term))),
            },
        );
        self.send(
            Recipients::One(member_id.clone()),
            ServerMessage::MemberList {
                members: self.member_infos(),
            },
        );
        if self.members.len() > 1 {
            self.send(
                Recipients::AllExcept(member_id),
                ServerMessage::MemberJoined { member: info },
            );
        }
        Ok(())
    }

    fn check_join(
        &mut self,
        now: Now,
        join: &Join,
        address: &str,
        credentials: Credentials,
    ) -> Result<(), JoinError> {
        if self.ended {
            return Err(JoinError::Ended {
                session: self.id.clone(),
            });
        }
        let device = &join.device_info;
        if device.kind == DeviceType::Host && !credentials.token {
            let names_a_device = match &self.access.host {
                HostRule::Open => None,
                HostRule::Device(d) if *d == device.id => None,
                HostRule::Device(_) => Some(true),
                HostRule::TokenOnly => Some(false),
            };
            if let Some(names_a_device) = names_a_device {
                return Err(JoinError::HostNotAllowed {
                    session: self.id.clone(),
                    names_a_device,
                });
            }
        }
        if let (Some(password), false) = (&self.access.password, credentials.token) {
            if let Some(wait) = self.attempts.blocked(now.instant, address) {
                return Err(JoinError::TooManyAttempts {
                    session: self.id.clone(),
                    retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                });
            }
            match &join.password {
                None => {
                    return Err(JoinError::PasswordRequired {
                        session: self.id.clone(),
                    })
                }
                Some(given) if !password.matches(given) => {
                    self.attempts.record_failure(now.instant, address);
                    return Err(JoinError::WrongPassword {
                        session: self.id.clone(),
                    });
                }
                Some(_) => {}
            }
        }
        if self.members.iter().any(|m| m.device_id == device.id) {
            return Err(JoinError::AlreadyJoined {
                device: device.id.clone(),
                session: self.id.clone(),
            });
        }
        if device.kind == DeviceType::Host && self.host.is_some() {
            return Err(JoinError::HostTaken {
                session: self.id.clone(),
            });
        }
        if self.members.len() >= self.max_members {
            return Err(JoinError::Full {
                max_members: self.max_members,
                current: self.members.len(),
            });
        }
        Ok(())
    }

    /// The `sessionInfo` of `welcome`.
    ///
    /// While there is no host, a session created with a host name (over HTTP) shows that name
    /// as the host's to dialects that name the host as a device (the app's `hostName`), with
    /// the host device id it names, if any; `hostId` stays `null` in ours.
    pub fn session_info(&self) -> SessionInfo {
        let named_host = || {
            self.access.host_name.as_ref().map(|name| DeviceRef {
                device_id: match &self.access.host {
                    HostRule::Device(d) => d.clone(),
                    _ => String::new(),
                },
                name: name.clone(),
            })
        };
        SessionInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            host_id: self.host.clone(),
            host: match self.host.as_deref() {
                Some(h) => Some(self.device(h)),
                None => named_host(),
            },
        }
    }

    /// Member `member_id`'s transport is gone without `leave` (closed, timed out, dropped for
    /// a policy). With no hold the place ends now; with a hold it waits for
    /// [`Session::handle_attach`] until the deadline. Unknown or already detached members are
    /// ignored.
    pub fn handle_detach(&mut self, now: Now, member_id: &str, reason: LeaveReason) {
        let Some(socket) = self.member(member_id).map(|m| m.socket) else {
            return;
        };
        self.handle_socket_detach(now, member_id, socket, reason, false);
    }

    /// Transport `socket` of member `member_id` is gone. A resumable member's place is held
    /// for the resume window (others see it `reconnecting`), unless the drop is `fatal` (a
    /// frame over the size limit, a framing violation: a resume would only send the same
    /// bytes again) or there is no window; a plain member's ends now. A detach from a socket
    /// the place no longer has (a resume moved it) is ignored, so a late close of an old
    /// socket never ends a connected member's place.
    pub fn handle_socket_detach(
        &mut self,
        now: Now,
        member_id: &str,
        socket: u64,
        reason: LeaveReason,
        fatal: bool,
    ) {
        if self.ended {
            return;
        }
        let hold = self.config.detach_hold;
        let Some(m) = self.members.iter_mut().find(|m| m.id == member_id) else {
            return;
        };
        if m.transport.is_none() || m.socket != socket {
            return;
        }
        if hold.is_zero() || m.resume.is_none() || fatal {
            if let Some(r) = m.resume.as_mut() {
                // Its token is forgotten, also when the host's drop ends the session.
                r.fate.get_or_insert(ResumeFailure::UnknownToken);
            }
            self.end_place(member_id, reason);
        } else {
            m.transport = None;
            // Only the window's end tells the others it is gone: as a timeout.
            m.held = Some((now.instant + hold, LeaveReason::Timeout));
            self.held += 1;
            // A handoff it is part of fails now, not at the window's end: the host's
            // candidate hears it first, the candidate's host after the member's update.
            let is_host = self.host.as_deref() == Some(member_id);
            if is_host {
                self.handoff_member_gone(member_id);
            }
            self.send_member_update(member_id);
            if !is_host {
                self.handoff_member_gone(member_id);
            }
        }
    }

    /// A new transport for a held place, without the resume layer's checks (tests, and a
    /// later transport that brings its own).
    pub fn handle_attach(
        &mut self,
        _now: Now,
        member_id: &str,
        transport: T,
    ) -> Result<(), AttachError> {
        let m = self
            .members
            .iter_mut()
            .find(|m| m.id == member_id)
            .ok_or(AttachError::NoSuchMember)?;
        if m.transport.is_some() {
            return Err(AttachError::AlreadyAttached);
        }
        m.transport = Some(transport);
        if m.held.take().is_some() {
            self.held -= 1;
        }
        Ok(())
    }

    /// A resume: member `member_id`'s place continues on transport `socket`, presented with
    /// connection `token` and the last server `seq` the client received.
    ///
    /// On success the place has the new transport and the [`Resumption`] says what to send
    /// it first; the old transport, if the place still had one, comes back to be closed with
    /// 4000 (the others are told nothing then), else the others get `member_updated`
    /// (`connected`). A `last_seq` below what was acknowledged ends the place
    /// (`buffer_overflow`); one above the last `seq` sent is refused and the place stays as
    /// it was. The transport is handed back with a refusal.
    pub fn handle_resume(
        &mut self,
        _now: Now,
        member_id: &str,
        token: &str,
        last_seq: u64,
        socket: u64,
        transport: T,
    ) -> Result<Resumption<T>, (ResumeRefusal, T)> {
        if self.ended {
            return Err((
                ResumeRefusal::Failed(ResumeFailure::SessionClosed),
                transport,
            ));
        }
        let Some(m) = self
            .members
            .iter_mut()
            .find(|m| m.id == member_id && m.resume.as_ref().is_some_and(|r| r.token == token))
        else {
            return Err((
                ResumeRefusal::Failed(ResumeFailure::UnknownToken),
                transport,
            ));
        };
        let r = m.resume.as_mut().expect("matched on it");
        let replay = match r.out.replay_after(last_seq) {
            Ok(replay) => replay,
            Err(ReplayError::AboveSent { last_sent }) => {
                return Err((ResumeRefusal::AboveSent { last_sent }, transport))
            }
            Err(ReplayError::Dropped) => {
                r.fate = Some(ResumeFailure::BufferOverflow);
                self.end_overflowed(member_id);
                return Err((
                    ResumeRefusal::Failed(ResumeFailure::BufferOverflow),
                    transport,
                ));
            }
        };
        let last_in = r.last_in;
        let replaced = m.transport.replace(transport);
        m.socket = socket;
        if m.held.take().is_some() {
            self.held -= 1;
        }
        if replaced.is_none() {
            self.send_member_update(member_id);
        }
        Ok(Resumption {
            last_in,
            replay,
            replaced,
        })
    }

    /// Tells the others a member's entry changed: `member_updated` in our dialect, a fresh
    /// `member_list` in the app's (which has no `member_updated`).
    fn send_member_update(&mut self, member_id: &str) {
        self.send_member_update_to_ours(member_id);
        if self
            .members
            .iter()
            .any(|m| m.dialect == Dialect::App && m.id != member_id)
        {
            self.send(
                Recipients::AllExceptIn(member_id.to_string(), Dialect::App),
                ServerMessage::MemberList {
                    members: self.member_infos(),
                },
            );
        }
    }

    /// Tells the other members of our dialect a member's entry changed (`member_updated`);
    /// the app's dialect has no field for what changed (readiness).
    fn send_member_update_to_ours(&mut self, member_id: &str) {
        let Some(m) = self.member(member_id) else {
            return;
        };
        let member = self.info(m);
        self.note(|_| SessionEvent::MemberUpdated {
            member: member.clone(),
        });
        self.send(
            Recipients::AllExceptIn(member_id.to_string(), Dialect::LoudSync),
            ServerMessage::MemberUpdated { member },
        );
    }

    /// Ends a place the way a detach does: the host's is the loss of the host
    /// ([`handoff::HostLoss`] says what follows).
    fn end_place(&mut self, member_id: &str, reason: LeaveReason) {
        if self.host.as_deref() == Some(member_id) {
            self.lose_host(member_id, reason, close_code::NORMAL, "disconnected");
        } else {
            self.remove(member_id, reason, "disconnected");
        }
    }

    /// A command from member `member_id`'s transport `socket`, numbered `seq` on a resumable
    /// connection. Commands from a transport the place no longer has are ignored, and so is
    /// a `seq` already processed (the place's numbering is the one a resume reports).
    pub fn handle_numbered(
        &mut self,
        now: Now,
        member_id: &str,
        socket: u64,
        seq: Option<u64>,
        command: MemberCommand,
    ) {
        let Some(m) = self.members.iter_mut().find(|m| m.id == member_id) else {
            return;
        };
        if m.socket != socket {
            return;
        }
        if let (Some(seq), Some(r)) = (seq, m.resume.as_mut()) {
            if seq <= r.last_in {
                return;
            }
            r.last_in = seq;
        }
        self.handle_command(now, member_id, command);
    }

    /// A command from member `member_id`'s connection. Commands from unknown members (already
    /// removed) are ignored.
    pub fn handle_command(&mut self, now: Now, member_id: &str, command: MemberCommand) {
        if self.ended || self.member(member_id).is_none() {
            return;
        }
        let is_host = self.host.as_deref() == Some(member_id);
        match command {
            MemberCommand::Leave if is_host => {
                if let Some(r) = self
                    .members
                    .iter_mut()
                    .find(|m| m.id == member_id)
                    .and_then(|m| m.resume.as_mut())
                {
                    // A host's leave forgets its token; the others' say `session_closed`.
                    r.fate.get_or_insert(ResumeFailure::UnknownToken);
                }
                // Under either host-loss policy: leaving without ending is a handoff first.
                self.handoff_member_gone(member_id);
                self.end("Host ended the session", close_code::NORMAL)
            }
            MemberCommand::Leave => self.remove(member_id, LeaveReason::Left, "left"),
            MemberCommand::MediaToken => {
                let role = if is_host {
                    MediaRole::Publish
                } else {
                    MediaRole::Subscribe
                };
                self.actions.push_back(Pending::MediaToken {
                    member: member_id.to_string(),
                    role,
                });
            }
            MemberCommand::MemberList => self.send(
                Recipients::One(member_id.to_string()),
                ServerMessage::MemberList {
                    members: self.member_infos(),
                },
            ),
            MemberCommand::Ack(seq) => {
                let Some(r) = self
                    .members
                    .iter_mut()
                    .find(|m| m.id == member_id)
                    .and_then(|m| m.resume.as_mut())
                else {
                    return self.error(
                        member_id,
                        ErrorCode::InvalidMessage,
                        "ack: this connection is not resumable",
                    );
                };
                if let Err(ReplayError::AboveSent { last_sent }) = r.out.ack(seq) {
                    self.error(
                        member_id,
                        ErrorCode::InvalidMessage,
                        format!("ack: seq {seq} was never sent (the last sent is {last_sent})"),
                    );
                }
            }
            MemberCommand::Report(message) => {
                self.send(Recipients::One(member_id.to_string()), *message)
            }
            MemberCommand::Latency(ms) => {
                if let Some(m) = self.members.iter_mut().find(|m| m.id == member_id) {
                    m.latency = Some(ms);
                }
            }
            MemberCommand::Kick {
                member_id: target,
                reason,
            } => self.kick(member_id, is_host, &target, reason),
            MemberCommand::StateSet {
                change,
                base_version,
                term,
            } => self.handle_state_set(member_id, *change, base_version, term),
            MemberCommand::HandoffReady(ready) => self.handle_ready(member_id, ready),
            MemberCommand::HandoffRequest { target } => {
                self.handle_handoff_request(now, member_id, target)
            }
            MemberCommand::HandoffAnswer { handoff_id, accept } => {
                self.handle_handoff_answer(member_id, &handoff_id, accept)
            }
            MemberCommand::Message { data, to } => {
                let to = match to {
                    None => Recipients::AllExcept(member_id.to_string()),
                    Some(to) if self.member(&to).is_some() => Recipients::One(to),
                    Some(to) => {
                        return self.error(
                            member_id,
                            ErrorCode::InvalidMessage,
                            format!("message: no member `{to}` in this session"),
                        )
                    }
                };
                let message = ServerMessage::Message {
                    from: member_id.to_string(),
                    data,
                    device: self.device(member_id),
                };
                self.send(to, message);
            }
        }
    }

    fn kick(&mut self, from: &str, is_host: bool, target: &str, reason: Option<String>) {
        if !is_host {
            return self.refuse_not_host(from, "kick: only the host may kick members");
        }
        if target == from {
            return self.error(
                from,
                ErrorCode::InvalidMessage,
                "kick: the host cannot kick itself; send `leave` to end the session",
            );
        }
        if self.member(target).is_none() {
            return self.error(
                from,
                ErrorCode::InvalidMessage,
                format!("kick: no member `{target}` in this session"),
            );
        }
        let reason = reason.unwrap_or_else(|| "Host removed you from the session".to_string());
        // The app's own server closes a kicked socket with the kick's reason; ours says
        // `kicked` (the reason is in the `kicked` message).
        let close_reason = match self.member(target).map(|m| m.dialect) {
            Some(Dialect::App) => reason.clone(),
            _ => "kicked".to_string(),
        };
        self.send(
            Recipients::One(target.to_string()),
            ServerMessage::Kicked { reason },
        );
        self.remove(target, LeaveReason::Kicked, &close_reason);
    }

    /// The administrator removes `target` (the admin API): as a host's `kick` (`kicked`
    /// with `reason`, then `member_left` `kicked` to the others), for any member but the host.
    pub fn handle_admin_kick(
        &mut self,
        target: &str,
        reason: Option<String>,
    ) -> Result<(), AdminRefusal> {
        let Some(m) = self.member(target) else {
            return Err(AdminRefusal::NoSuchMember);
        };
        if self.host.as_deref() == Some(target) {
            return Err(AdminRefusal::IsHost);
        }
        let reason = reason.unwrap_or_else(|| "Removed by the server administrator".to_string());
        let close_reason = match m.dialect {
            Dialect::App => reason.clone(),
            Dialect::LoudSync => "kicked".to_string(),
        };
        self.send(
            Recipients::One(target.to_string()),
            ServerMessage::Kicked { reason },
        );
        self.remove(target, LeaveReason::Kicked, &close_reason);
        Ok(())
    }

    /// Ends the session from outside (HTTP `DELETE`, server shutdown): every member gets
    /// `session_closed {reason}` and is closed with `code`.
    pub fn handle_close(&mut self, _now: Now, reason: &str, code: u16) {
        self.end(reason, code);
    }

    /// Removes a member, closes its transport, tells the others.
    fn remove(&mut self, member_id: &str, reason: LeaveReason, close_reason: &str) {
        self.remove_with(member_id, reason, close_code::NORMAL, close_reason);
    }

    /// [`Session::remove`] with a close code.
    fn remove_with(&mut self, member_id: &str, reason: LeaveReason, code: u16, close_reason: &str) {
        let device = self.device(member_id);
        // A kick, a leave, a fatal drop: the token is forgotten (a held place that ran out
        // has its fate, `expired`, set already).
        self.depart(member_id, code, close_reason, ResumeFailure::UnknownToken);
        self.note(|_| SessionEvent::MemberLeft {
            member_id: member_id.to_string(),
            reason,
        });
        self.send(
            Recipients::All,
            ServerMessage::MemberLeft {
                member_id: member_id.to_string(),
                reason,
                device,
            },
        );
        self.handoff_member_gone(member_id);
    }

    /// Moves a member out of the table; its transport is handed back by its `Close`, and a
    /// resumable member's token answers `why` from now on (`buffer_overflow` if its buffer
    /// overflowed, whatever the path).
    fn depart(&mut self, member_id: &str, code: u16, reason: &str, why: ResumeFailure) {
        if let Some(at) = self.members.iter().position(|m| m.id == member_id) {
            let mut m = self.members.remove(at);
            if m.held.take().is_some() {
                self.held -= 1;
            }
            if let Some(r) = &m.resume {
                let why = r.fate.unwrap_or(why);
                self.actions.push_back(Pending::TokenEnded {
                    token: r.token.clone(),
                    why,
                });
            }
            self.departing.push(m);
            self.actions.push_back(Pending::MemberGone {
                member: member_id.to_string(),
            });
            self.actions.push_back(Pending::Close {
                member: member_id.to_string(),
                code,
                reason: reason.to_string(),
            });
        }
        if self.host.as_deref() == Some(member_id) {
            self.host = None;
        }
    }

    fn end(&mut self, reason: &str, code: u16) {
        if self.ended {
            return;
        }
        self.note(|_| SessionEvent::Closed {
            reason: reason.to_string(),
        });
        self.send(
            Recipients::All,
            ServerMessage::SessionClosed {
                reason: reason.to_string(),
            },
        );
        let ids: Vec<String> = self.members.iter().map(|m| m.id.clone()).collect();
        for id in ids {
            self.depart(&id, code, "session closed", ResumeFailure::SessionClosed);
        }
        self.host = None;
        self.control.pending = None;
        self.ended = true;
        self.actions.push_back(Pending::Ended);
    }

    /// Sends `message` to member `member_id` alone, through the session's own path (numbered
    /// and kept for replay on a resumable connection): how the caller answers a
    /// [`SessionAction::MediaToken`]. Nothing happens once the member is gone or the session
    /// has ended.
    pub fn send_to(&mut self, member_id: &str, message: ServerMessage) {
        if self.ended || self.member(member_id).is_none() {
            return;
        }
        self.send(Recipients::One(member_id.to_string()), message);
    }

    fn error(&mut self, member_id: &str, code: ErrorCode, message: impl Into<String>) {
        self.send(
            Recipients::One(member_id.to_string()),
            ServerMessage::error(code, message),
        );
    }

    fn send(&mut self, to: Recipients, message: ServerMessage) {
        // A broadcast to nobody is not worth an action.
        let anyone = match &to {
            Recipients::One(_) => true,
            Recipients::All => !self.members.is_empty(),
            _ => self.members.iter().any(|m| to.includes(&m.id, m.dialect)),
        };
        if anyone {
            self.actions.push_back(Pending::Send { to, message });
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod resume_tests;

#[cfg(test)]
mod handoff_tests;

#[cfg(test)]
mod event_tests;
