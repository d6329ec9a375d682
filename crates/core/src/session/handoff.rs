//! Handoff (seed 000): who controls a session, how control moves, and what fences a former
//! host out.
//!
//! The **host** is the seed's "active client". It alone may set the state (`state_set`),
//! kick, and hand control over. A **term** counts the hosts: 1 at creation, +1 at every
//! change of host, carried on every `state` frame, so a client can drop what a former host's
//! term produced, and a `state_set` naming an old term is refused.
//!
//! A member may declare itself **ready** to take control (`handoff_ready`); declarations are
//! ordered by a counter, so "the oldest declaration" is well defined and survives re-declaring.
//!
//! A voluntary handoff is one pending request at a time:
//!
//! ```text
//!   host                  server                         candidate
//!    | handoff_request ->  | picks the candidate           |
//!    | <- handoff_started  | -- handoff_request (state) -> |
//!    |                     | <- handoff_accept ----------- |
//!    | <- handoff_ack      |                               |
//!    | <- host_changed --- | ------ host_changed --------> |   (and to every member)
//! ```
//!
//! and every other ending answers both sides with `handoff_failed`: a decline, a timeout
//! (the deadline is one of the session's timers), either side leaving. The session changes
//! host in exactly one place ([`Session::change_host`]), so there is always exactly one host
//! and every member is told the same one.
//!
//! When the host is **gone for good** (a plain host's socket, a resumable host's window, its
//! buffer overflowing), [`HostLoss`] decides: `close` ends the session as seed 001 does;
//! `handoff` passes it to the oldest ready member, else the longest-present one, else closes.

use std::time::{Duration, Instant};

use loudsync_protocol::app::Dialect;
use loudsync_protocol::{
    close_code, ErrorCode, HandoffFailure, HostChange, LeaveReason, ServerMessage, StateChange,
};
use serde_json::json;

use super::{Member, Recipients, Session, SessionEvent};
use crate::Now;

/// What a session does when its host is gone for good (`--on-host-loss`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostLoss {
    /// End the session (seed 001's behaviour).
    #[default]
    Close,
    /// Pass it to a member (the oldest ready one, else the longest present), else end it.
    Handoff,
}

/// The settings of this layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandoffConfig {
    /// Largest state document, as compact JSON (`--max-state-bytes`).
    pub max_state_bytes: usize,
    /// How long a candidate has to answer (`--handoff-timeout`).
    pub timeout: Duration,
    /// What the loss of the host does (`--on-host-loss`).
    pub on_host_loss: HostLoss,
}

impl Default for HandoffConfig {
    fn default() -> Self {
        HandoffConfig {
            max_state_bytes: 32 * 1024,
            timeout: Duration::from_secs(10),
            on_host_loss: HostLoss::Close,
        }
    }
}

/// The one pending voluntary handoff of a session.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Pending {
    id: String,
    host: String,
    candidate: String,
    deadline: Instant,
}

/// What a session keeps for this layer besides its members' flags.
#[derive(Debug, Default)]
pub(super) struct Control {
    pub(super) term: u64,
    pub(super) pending: Option<Pending>,
    /// Requests started so far (handoff ids are `h1`, `h2`, ...).
    started: u64,
    /// Readiness declarations so far (a member's `ready` is its declaration's number).
    declarations: u64,
}

impl Control {
    pub(super) fn new() -> Self {
        Control {
            term: 1,
            ..Control::default()
        }
    }

    fn next_declaration(&mut self) -> u64 {
        self.declarations += 1;
        self.declarations
    }
}

impl<T> Session<T> {
    /// The current term: 1 at creation, +1 per change of host.
    pub fn term(&self) -> u64 {
        self.control.term
    }

    /// The pending handoff, if any: `(handoff id, candidate)`.
    pub fn pending_handoff(&self) -> Option<(&str, &str)> {
        self.control
            .pending
            .as_ref()
            .map(|p| (p.id.as_str(), p.candidate.as_str()))
    }

    /// The pending handoff's deadline, for [`Session::poll_timeout`].
    pub(super) fn handoff_deadline(&self) -> Option<Instant> {
        self.control.pending.as_ref().map(|p| p.deadline)
    }

    /// The `details` of a refusal for not being the host: who is, and in which term.
    fn fence_details(&self) -> serde_json::Value {
        json!({"hostId": self.host, "term": self.control.term})
    }

    /// The refusal of a host-only frame from a member that is not the host (a former host
    /// included): `unauthorized` with `details {hostId, term}`, nothing changes.
    pub(super) fn refuse_not_host(&mut self, member_id: &str, text: &str) {
        let details = self.fence_details();
        self.send(
            Recipients::One(member_id.to_string()),
            ServerMessage::Error {
                code: ErrorCode::Unauthorized,
                message: text.to_string(),
                details: Some(details),
            },
        );
    }

    /// `state_set`: checked in the order of the wire (host, term, base version, size); on
    /// success every member of our dialect gets the whole new document.
    pub(super) fn handle_state_set(
        &mut self,
        member_id: &str,
        change: StateChange,
        base_version: Option<u64>,
        term: Option<u64>,
    ) {
        if self.host.as_deref() != Some(member_id) {
            return self.refuse_not_host(
                member_id,
                "state_set: only the host may set the session state",
            );
        }
        let current_term = self.control.term;
        if let Some(term) = term.filter(|t| *t != current_term) {
            let details = self.fence_details();
            return self.send(
                Recipients::One(member_id.to_string()),
                ServerMessage::Error {
                    code: ErrorCode::StaleTerm,
                    message: format!(
                        "state_set: term {term} is not the current term {current_term}"
                    ),
                    details: Some(details),
                },
            );
        }
        let version = self.state.version();
        if let Some(base) = base_version.filter(|b| *b != version) {
            return self.send(
                Recipients::One(member_id.to_string()),
                ServerMessage::Error {
                    code: ErrorCode::StaleVersion,
                    message: format!(
                        "state_set: baseVersion {base} is not the current version {version}; apply the latest `state` and retry"
                    ),
                    details: Some(json!({"currentVersion": version})),
                },
            );
        }
        let max = self.config.handoff.max_state_bytes;
        if let Err(too_large) = self.state.apply(change, max) {
            return self.send(
                Recipients::One(member_id.to_string()),
                ServerMessage::Error {
                    code: ErrorCode::StateTooLarge,
                    message: format!(
                        "state_set: the resulting state is {} bytes, over the {max}-byte limit",
                        too_large.bytes
                    ),
                    details: Some(json!({"maxBytes": max, "bytes": too_large.bytes})),
                },
            );
        }
        self.send(
            Recipients::AllIn(Dialect::LoudSync),
            ServerMessage::State {
                state: self.state.text().clone(),
                version: self.state.version(),
                term: current_term,
                updated_by: member_id.to_string(),
            },
        );
    }

    /// `handoff_ready {ready}`: a member other than the host declares or withdraws its
    /// readiness; the other members of our dialect get `member_updated`.
    pub(super) fn handle_ready(&mut self, member_id: &str, ready: bool) {
        if self.host.as_deref() == Some(member_id) {
            return self.error(
                member_id,
                ErrorCode::InvalidMessage,
                "handoff_ready: the host cannot declare itself ready",
            );
        }
        let declaration = if ready {
            Some(self.control.next_declaration())
        } else {
            None
        };
        let Some(m) = self.members.iter_mut().find(|m| m.id == member_id) else {
            return;
        };
        match (m.ready, declaration) {
            // Re-declaring keeps the original declaration; withdrawing nothing changes nothing.
            (Some(_), Some(_)) | (None, None) => return,
            (_, declaration) => m.ready = declaration,
        }
        self.send_member_update_to_ours(member_id);
    }

    /// `handoff_request {targetId?}` from member `member_id`.
    pub(super) fn handle_handoff_request(
        &mut self,
        now: Now,
        member_id: &str,
        target: Option<String>,
    ) {
        if self.host.as_deref() != Some(member_id) {
            return self.refuse_not_host(
                member_id,
                "handoff_request: only the host may hand control over",
            );
        }
        if self.control.pending.is_some() {
            self.note(|_| SessionEvent::HandoffFailed {
                handoff_id: None,
                target_id: None,
                reason: HandoffFailure::Busy,
            });
            return self.send(
                Recipients::One(member_id.to_string()),
                ServerMessage::HandoffFailed {
                    reason: HandoffFailure::Busy,
                    handoff_id: None,
                    target_id: None,
                },
            );
        }
        let candidate = match target {
            Some(target) => self
                .members
                .iter()
                .find(|m| m.id == target && m.id != member_id && eligible(m))
                .map(|m| m.id.clone()),
            None => self.oldest_ready(member_id),
        };
        let Some(candidate) = candidate else {
            self.note(|_| SessionEvent::HandoffFailed {
                handoff_id: None,
                target_id: None,
                reason: HandoffFailure::NoCandidate,
            });
            return self.send(
                Recipients::One(member_id.to_string()),
                ServerMessage::HandoffFailed {
                    reason: HandoffFailure::NoCandidate,
                    handoff_id: None,
                    target_id: None,
                },
            );
        };
        self.control.started += 1;
        let id = format!("h{}", self.control.started);
        let timeout = self.config.handoff.timeout;
        self.control.pending = Some(Pending {
            id: id.clone(),
            host: member_id.to_string(),
            candidate: candidate.clone(),
            deadline: now.instant + timeout,
        });
        self.note(|_| SessionEvent::HandoffStarted {
            handoff_id: id.clone(),
            host_id: member_id.to_string(),
            target_id: candidate.clone(),
        });
        self.send(
            Recipients::One(member_id.to_string()),
            ServerMessage::HandoffStarted {
                handoff_id: id.clone(),
                target_id: candidate.clone(),
            },
        );
        self.send(
            Recipients::One(candidate),
            ServerMessage::HandoffRequest {
                handoff_id: id,
                from_id: member_id.to_string(),
                state: self.state.text().clone(),
                version: self.state.version(),
                term: self.control.term,
                timeout_ms: timeout.as_millis() as u64,
            },
        );
    }

    /// The administrator asks the host to hand control to `target` (the admin API): checked
    /// as an operator's request, then exactly the host's `handoff_request {targetId}` (the host
    /// gets `handoff_started`, the candidate `handoff_request`, and the candidate's answer
    /// decides). Returns the request's id.
    pub fn handle_admin_handoff(
        &mut self,
        now: Now,
        target: &str,
    ) -> Result<String, super::AdminRefusal> {
        use super::AdminRefusal;
        let Some(m) = self.members.iter().find(|m| m.id == target) else {
            return Err(AdminRefusal::NoSuchMember);
        };
        let Some(host) = self.host.clone() else {
            return Err(AdminRefusal::NoHost);
        };
        if host == target {
            return Err(AdminRefusal::IsHost);
        }
        if self.control.pending.is_some() {
            return Err(AdminRefusal::Busy);
        }
        if !eligible(m) {
            return Err(AdminRefusal::NotEligible);
        }
        self.handle_handoff_request(now, &host, Some(target.to_string()));
        match &self.control.pending {
            Some(p) => Ok(p.id.clone()),
            None => Err(AdminRefusal::NotEligible),
        }
    }

    /// `handoff_accept` (`accept`) or `handoff_decline` from member `member_id`.
    pub(super) fn handle_handoff_answer(
        &mut self,
        member_id: &str,
        handoff_id: &str,
        accept: bool,
    ) {
        let kind = if accept {
            "handoff_accept"
        } else {
            "handoff_decline"
        };
        let Some(pending) = self
            .control
            .pending
            .take_if(|p| p.candidate == member_id && p.id == handoff_id)
        else {
            return self.error(
                member_id,
                ErrorCode::HandoffNotPending,
                format!("{kind}: no handoff `{handoff_id}` is pending for you"),
            );
        };
        if !accept {
            self.note(|_| SessionEvent::HandoffFailed {
                handoff_id: Some(pending.id.clone()),
                target_id: Some(pending.candidate.clone()),
                reason: HandoffFailure::Declined,
            });
            return self.send(
                Recipients::One(pending.host),
                ServerMessage::HandoffFailed {
                    reason: HandoffFailure::Declined,
                    handoff_id: Some(pending.id),
                    target_id: Some(pending.candidate),
                },
            );
        }
        self.send(
            Recipients::One(pending.host.clone()),
            ServerMessage::HandoffAck {
                handoff_id: pending.id,
                host_id: pending.candidate.clone(),
                term: self.control.term + 1,
            },
        );
        self.change_host(&pending.candidate, &pending.host, HostChange::Handoff);
    }

    /// The pending handoff's deadline passed: both sides are told, nothing else changes.
    pub(super) fn handoff_timeout(&mut self, now: Now) {
        let Some(p) = self.control.pending.take_if(|p| p.deadline <= now.instant) else {
            return;
        };
        self.note(|_| SessionEvent::HandoffFailed {
            handoff_id: Some(p.id.clone()),
            target_id: Some(p.candidate.clone()),
            reason: HandoffFailure::Timeout,
        });
        self.send(
            Recipients::One(p.host),
            ServerMessage::HandoffFailed {
                reason: HandoffFailure::Timeout,
                handoff_id: Some(p.id.clone()),
                target_id: Some(p.candidate.clone()),
            },
        );
        self.send(
            Recipients::One(p.candidate),
            ServerMessage::HandoffFailed {
                reason: HandoffFailure::Timeout,
                handoff_id: Some(p.id),
                target_id: None,
            },
        );
    }

    /// Member `member_id` left, or its socket went: a pending handoff it is part of fails,
    /// and the other side is told (`candidate_left` to the host, `host_left` to the
    /// candidate). A resumable member whose place is held (its socket went, it may resume)
    /// is told too, in its replay buffer, so a resume finds the handoff over instead of a
    /// prompt or a request that no longer exists.
    pub(super) fn handoff_member_gone(&mut self, member_id: &str) {
        let Some(p) = self
            .control
            .pending
            .take_if(|p| p.host == member_id || p.candidate == member_id)
        else {
            return;
        };
        let (reason, other, other_target) = if p.candidate == member_id {
            (HandoffFailure::CandidateLeft, &p.host, Some(&p.candidate))
        } else {
            (HandoffFailure::HostLeft, &p.candidate, None)
        };
        self.note(|_| SessionEvent::HandoffFailed {
            handoff_id: Some(p.id.clone()),
            target_id: Some(p.candidate.clone()),
            reason,
        });
        self.send(
            Recipients::One(other.clone()),
            ServerMessage::HandoffFailed {
                reason,
                handoff_id: Some(p.id.clone()),
                target_id: other_target.cloned(),
            },
        );
        let held = self
            .members
            .iter()
            .any(|m| m.id == member_id && m.held.is_some());
        if held {
            self.send(
                Recipients::One(member_id.to_string()),
                ServerMessage::HandoffFailed {
                    reason,
                    handoff_id: Some(p.id.clone()),
                    target_id: (member_id == p.host).then(|| p.candidate.clone()),
                },
            );
        }
    }

    /// The host `host` is gone for good (`reason` as `member_left` says it). The candidate of
    /// a pending handoff hears `host_left` first; then, under [`HostLoss::Handoff`] with a
    /// successor, the host's place ends (`member_left`) and the successor becomes host;
    /// otherwise the session ends as seed 001 says. A host still connected (its buffer
    /// overflowed) is closed with `code` and `close_reason`.
    pub(super) fn lose_host(
        &mut self,
        host: &str,
        reason: LeaveReason,
        code: u16,
        close_reason: &str,
    ) {
        self.handoff_member_gone(host);
        if self.config.handoff.on_host_loss == HostLoss::Handoff {
            if let Some(next) = self.successor(host) {
                self.remove_with(host, reason, code, close_reason);
                self.change_host(&next, host, HostChange::HostLost);
                return;
            }
        }
        if code != close_code::NORMAL {
            self.depart(
                host,
                code,
                close_reason,
                loudsync_protocol::ResumeFailure::UnknownToken,
            );
        }
        let why = match reason {
            LeaveReason::Timeout => "Host timed out",
            _ => "Host disconnected",
        };
        self.end(why, close_code::NORMAL);
    }

    /// The only place the host changes: the term rises, the new host's readiness is cleared,
    /// a host that handed control over becomes ready (it is the natural candidate to hand it
    /// back), every member of our dialect gets `host_changed`, and the app's get a fresh
    /// `MEMBER_LIST` (new host first), which is how that dialect learns of a host.
    fn change_host(&mut self, new: &str, previous: &str, reason: HostChange) {
        self.host = Some(new.to_string());
        self.control.term += 1;
        let declaration = (reason == HostChange::Handoff).then(|| self.control.next_declaration());
        for m in self.members.iter_mut() {
            if m.id == new {
                m.ready = None;
            } else if m.id == previous {
                m.ready = declaration;
            }
        }
        let term = self.control.term;
        self.note(|_| SessionEvent::HostChanged {
            host_id: new.to_string(),
            previous_host_id: previous.to_string(),
            term,
            reason,
        });
        self.send(
            Recipients::AllIn(Dialect::LoudSync),
            ServerMessage::HostChanged {
                host_id: new.to_string(),
                previous_host_id: previous.to_string(),
                term: self.control.term,
                reason,
            },
        );
        if self.members.iter().any(|m| m.dialect == Dialect::App) {
            self.send(
                Recipients::AllIn(Dialect::App),
                ServerMessage::MemberList {
                    members: self.member_infos(),
                },
            );
        }
    }

    /// The connected member of our dialect, other than `except`, whose readiness is oldest.
    fn oldest_ready(&self, except: &str) -> Option<String> {
        self.members
            .iter()
            .filter(|m| m.id != except && eligible(m))
            .filter_map(|m| m.ready.map(|at| (at, m)))
            .min_by_key(|(at, _)| *at)
            .map(|(_, m)| m.id.clone())
    }

    /// Who takes over from a lost host: the oldest ready member, else the longest present
    /// (the table is in join order), among connected members of our dialect.
    fn successor(&self, host: &str) -> Option<String> {
        self.oldest_ready(host).or_else(|| {
            self.members
                .iter()
                .find(|m| m.id != host && eligible(m))
                .map(|m| m.id.clone())
        })
    }
}

/// Whether a member may receive control: connected now (not away in a resume window) and of
/// our dialect (app devices never host).
fn eligible<T>(m: &Member<T>) -> bool {
    m.transport.is_some() && m.dialect == Dialect::LoudSync
}
