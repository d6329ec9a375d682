//! The SDK's handoff layer (issue 11, seed 000 "Multi-Client Sync and Handoff"): this client's
//! [`Role`], who the host is and the term, the session's state document with its version,
//! the handoff in progress ([`PendingHandoff`]), and the readiness of the members, kept
//! apart from the machine's flow so a reader finds them in one place (as [`crate::resume`]
//! keeps the resume layer's). [`crate::machine::Machine`] feeds it the frames and decides
//! when; everything here is sans-IO.
//!
//! # Roles (decision 8)
//!
//! ```text
//!   Idle -> Connecting -> Assigned <-> HandoffReady -> Disconnected
//!                  ^          |             |
//!                  +----------+-------------+   (a lost place: a fresh join follows)
//! ```
//!
//! - [`Role::Idle`]: before [`crate::Client::connect`] started.
//! - [`Role::Connecting`]: opening the socket, the handshake, `join`; and again while a
//!   *fresh* join is being made after the place was lost (a plain connection's drop, a
//!   refused resume): the server has no place for this client then.
//! - [`Role::Assigned`]: joined, host or not. A host whose handoff request is pending stays
//!   Assigned, with [`PendingHandoff::Requested`] / [`PendingHandoff::Started`].
//! - [`Role::HandoffReady`]: joined, not the host, and declared ready to take control
//!   ([`crate::Client::set_ready`]), or a host that just handed control over (the server
//!   counts it as a fresh declaration, decision 16). A host is never HandoffReady.
//! - [`Role::Disconnected`]: over (left, kicked, session closed, rejected, failed).
//!
//! **While a resumable connection is being resumed** the role stays what it was (Assigned or
//! HandoffReady): the server holds this client's place, its id and its role for the resume
//! window, so nothing about the role has changed; the connection's own trouble shows in
//! [`crate::ConnectionState`] and [`crate::LinkState`]. If the resume is refused and a fresh
//! join follows, the role goes to Connecting.
//!
//! # State and term
//!
//! The document and its version come from `welcome` (`state`, `version`, `term`) and from
//! every `state` frame. A `state` frame whose term is below the highest term this client has
//! seen (in `welcome`, `state`, a forwarded `handoff_request`, `handoff_ack`,
//! `host_changed`) is dropped (decision 21): it was produced under a former host. A fresh
//! `welcome` (a new membership) starts the count again from its own term.
//!
//! # Readiness across a fresh join
//!
//! A member that declared itself ready and whose place is lost (a fresh join, a new id)
//! declares itself ready again right after the new `welcome`, unless it is the host there:
//! the declaration is the application's wish, and the server forgot it with the old place.
//! The server counts it as a new declaration (its place in the readiness order is new).
//!
//! # Example
//!
//! A member that is willing to take over, follows the state, and accepts when asked:
//!
//! ```no_run
//! use loudsync_client::{Client, ClientConfig, Event, Role};
//!
//! # async fn run() -> Result<(), loudsync_client::ClientError> {
//! let config = ClientConfig::member("ws://127.0.0.1:8080/", "A1B2C3", "tv-1", "Living room");
//! let (client, mut events) = Client::connect(config).await?;
//! client.set_ready(true)?;
//! while let Some(event) = events.recv().await {
//!     match event {
//!         Event::SessionState { state, version, .. } => println!("v{version}: {state}"),
//!         Event::HandoffRequested { handoff_id, from_id, .. } => {
//!             println!("{from_id} hands over");
//!             client.accept_handoff(&handoff_id)?;
//!         }
//!         Event::HostChanged { host_id, term, .. } => println!("host {host_id} (term {term})"),
//!         Event::RoleChanged(Role::Assigned) if client.is_host() => {
//!             let (_, version) = client.session_state();
//!             client.patch_state(serde_json::json!({"volume": 7}), Some(version))?;
//!         }
//!         Event::Kicked { .. } | Event::SessionClosed { .. } | Event::Failed { .. } => break,
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```

use loudsync_protocol::{HandoffFailure, HostChange, MemberInfo, StateSnapshot};
use serde_json::{Map, Value};

/// This client's role in its session, the SDK's view of the seed's client states
/// (decision 8). See the [module documentation](self) for the transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Role {
    /// Not started.
    #[default]
    Idle,
    /// Connecting or joining (the first time, or afresh after the place was lost).
    Connecting,
    /// Joined: the host, or a member that has not declared itself ready.
    Assigned,
    /// Joined, not the host, and declared ready to take control.
    HandoffReady,
    /// The connection is over.
    Disconnected,
}

impl Role {
    /// A lowercase name (`"idle"`, `"connecting"`, `"assigned"`, `"handoff_ready"`,
    /// `"disconnected"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Idle => "idle",
            Role::Connecting => "connecting",
            Role::Assigned => "assigned",
            Role::HandoffReady => "handoff_ready",
            Role::Disconnected => "disconnected",
        }
    }
}

/// The handoff this client is part of, if any ([`crate::Client::pending_handoff`]).
#[derive(Debug, Clone, PartialEq)]
pub enum PendingHandoff {
    /// This host sent `handoff_request`; the server's answer (`handoff_started` or
    /// `handoff_failed`) has not arrived.
    Requested {
        /// The member it named, or `None` for the server's choice (the oldest ready member).
        target_id: Option<String>,
    },
    /// The server forwarded this host's request to `target_id` (`handoff_started`); its
    /// answer is awaited. Ends with `handoff_ack` + `host_changed`, or `handoff_failed`.
    Started {
        /// The request's id.
        handoff_id: String,
        /// The candidate.
        target_id: String,
    },
    /// This member is asked to take control: answer with [`crate::Client::accept_handoff`]
    /// or [`crate::Client::decline_handoff`] within `timeout_ms`. Cleared once answered,
    /// on `host_changed`, or on `handoff_failed` (the request expired, or its host left).
    Offered(HandoffOffer),
}

impl PendingHandoff {
    /// The request's id, once the server gave it one.
    pub fn handoff_id(&self) -> Option<&str> {
        match self {
            PendingHandoff::Requested { .. } => None,
            PendingHandoff::Started { handoff_id, .. } => Some(handoff_id),
            PendingHandoff::Offered(offer) => Some(&offer.handoff_id),
        }
    }
}

/// A forwarded `handoff_request`: the host asks this member to take control, with the state
/// it would take over.
#[derive(Debug, Clone, PartialEq)]
pub struct HandoffOffer {
    /// Answer with this id.
    pub handoff_id: String,
    /// The host asking.
    pub from_id: String,
    /// The session state at the time of the request (later `state` frames update
    /// [`crate::Client::session_state`], not this copy).
    pub state: Value,
    /// Its version.
    pub version: u64,
    /// The current term.
    pub term: u64,
    /// How long the request waits for an answer, in ms.
    pub timeout_ms: u64,
}

/// What the machine keeps for this layer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Control {
    /// The id the server assigned to a session this client opened without one (decision
    /// 25); kept across reconnections so a rejoin names it.
    pub(crate) assigned_session: Option<String>,
    /// The current host's id (`sessionInfo.hostId`, then `host_changed`).
    pub(crate) host_id: Option<String>,
    /// The highest term seen; 0 before `welcome` (or from a server without this layer).
    pub(crate) term: u64,
    /// The session state (always an object).
    pub(crate) state: Value,
    /// Its version.
    pub(crate) version: u64,
    /// This client declared itself ready (and is not the host).
    pub(crate) ready: bool,
    /// The handoff in progress.
    pub(crate) pending: Option<PendingHandoff>,
    /// This client was a host and control passed to another member: a fresh join must not
    /// ask for the host role (decision 24: `unauthorized` while another host is connected).
    pub(crate) yielded: bool,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            assigned_session: None,
            host_id: None,
            term: 0,
            state: Value::Object(Map::new()),
            version: 0,
            ready: false,
            pending: None,
            yielded: false,
        }
    }
}

impl Control {
    /// A `welcome` (a new membership as `client_id`): the host, the session's id and its
    /// state. Returns whether readiness must be declared again (see the module doc).
    pub(crate) fn welcomed(
        &mut self,
        client_id: &str,
        session_id: &str,
        host_id: Option<&str>,
        snapshot: Option<&StateSnapshot>,
    ) -> bool {
        self.assigned_session = Some(session_id.to_string());
        self.host_id = host_id.map(str::to_string);
        self.pending = None;
        match snapshot {
            Some(s) => {
                self.state = s.state.to_value();
                self.version = s.version;
                self.term = s.term;
            }
            None => {
                self.state = Value::Object(Map::new());
                self.version = 0;
                self.term = 0;
            }
        }
        let hosting = host_id == Some(client_id);
        if hosting {
            self.yielded = false;
            self.ready = false;
        }
        self.ready && !hosting
    }

    /// Whether `client_id` is the current host.
    pub(crate) fn is_host(&self, client_id: Option<&str>) -> bool {
        client_id.is_some() && self.host_id.as_deref() == client_id
    }

    /// Notes a term carried by a frame; whether it is not below the highest seen.
    pub(crate) fn see_term(&mut self, term: u64) -> bool {
        if term < self.term {
            return false;
        }
        self.term = term;
        true
    }

    /// A `state` frame: applied unless its term is stale (decision 21).
    pub(crate) fn state_frame(&mut self, state: Value, version: u64, term: u64) -> bool {
        if !self.see_term(term) {
            return false;
        }
        self.state = state;
        self.version = version;
        true
    }

    /// `host_changed`: the new host, the term, readiness and the member table. Returns false
    /// (and changes nothing) for a frame of an older term.
    pub(crate) fn host_changed(
        &mut self,
        me: Option<&str>,
        members: &mut Vec<MemberInfo>,
        host_id: &str,
        previous_host_id: &str,
        term: u64,
        reason: HostChange,
    ) -> bool {
        if !self.see_term(term) {
            return false;
        }
        self.host_id = Some(host_id.to_string());
        self.pending = None;
        if me == Some(host_id) {
            self.ready = false;
            self.yielded = false;
        } else if me == Some(previous_host_id) {
            self.yielded = true;
            // Decision 16: the host that handed control over is Handoff-Ready at once.
            self.ready = reason == HostChange::Handoff;
        }
        reorder(members, host_id, previous_host_id, reason);
        true
    }

    /// A `handoff_failed`: clears what it ends. A `busy` answer leaves a started request
    /// alone (it is about a second request; the first goes on).
    pub(crate) fn handoff_failed(&mut self, reason: HandoffFailure, handoff_id: Option<&str>) {
        let ends = match (&self.pending, reason) {
            (Some(PendingHandoff::Requested { .. }), _) => true,
            (Some(PendingHandoff::Started { .. }), HandoffFailure::Busy) => false,
            (Some(p @ (PendingHandoff::Started { .. } | PendingHandoff::Offered(_))), _) => {
                handoff_id.is_none() || p.handoff_id() == handoff_id
            }
            (None, _) => false,
        };
        if ends {
            self.pending = None;
        }
    }

    /// `handoff_ack` to this (old) host: its request is done.
    pub(crate) fn acknowledged(&mut self, handoff_id: &str, term: u64) {
        self.see_term(term);
        if matches!(&self.pending, Some(p @ PendingHandoff::Started { .. }) if p.handoff_id() == Some(handoff_id))
            || matches!(self.pending, Some(PendingHandoff::Requested { .. }))
        {
            self.pending = None;
        }
    }

    /// This client answered the offer `handoff_id`.
    pub(crate) fn answered(&mut self, handoff_id: &str) {
        if matches!(&self.pending, Some(p @ PendingHandoff::Offered(_)) if p.handoff_id() == Some(handoff_id))
        {
            self.pending = None;
        }
    }

    /// This host sent a request: it is pending unless one was started already (then the
    /// server answers the second with `busy` and the first goes on).
    pub(crate) fn requested(&mut self, target_id: Option<&str>) {
        if !matches!(self.pending, Some(PendingHandoff::Started { .. })) {
            self.pending = Some(PendingHandoff::Requested {
                target_id: target_id.map(str::to_string),
            });
        }
    }

    /// Shows this client's own readiness in its entry of the member table (the server
    /// never sends a member its own `member_updated`).
    pub(crate) fn overlay_own(&self, me: Option<&str>, members: &mut [MemberInfo]) {
        let Some(me) = me else { return };
        if let Some(entry) = members.iter_mut().find(|m| m.id == me) {
            entry.handoff_ready = self.ready && !entry.is_host;
        }
    }
}

/// The member table after a change of host, as the server orders it (decision 26): the new
/// host first with `isHost`, every other member in join order (by `joinedAt`; the old host,
/// first before, stays first among equal times), the old host with `isHost: false`. After a
/// handoff the old host is Handoff-Ready and the new host is not (decision 16).
pub(crate) fn reorder(
    members: &mut Vec<MemberInfo>,
    host_id: &str,
    previous_host_id: &str,
    reason: HostChange,
) {
    let new_host = members
        .iter()
        .position(|m| m.id == host_id)
        .map(|i| members.remove(i));
    for m in members.iter_mut() {
        m.is_host = false;
        if m.id == previous_host_id && reason == HostChange::Handoff {
            m.handoff_ready = true;
        }
    }
    members.sort_by_key(|m| m.joined_at);
    if let Some(mut host) = new_host {
        host.is_host = true;
        host.handoff_ready = false;
        members.insert(0, host);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loudsync_protocol::ConnectionStatus;

    fn member(id: &str, host: bool, joined_at: u64, ready: bool) -> MemberInfo {
        MemberInfo {
            id: id.into(),
            name: id.into(),
            is_host: host,
            connection_status: ConnectionStatus::Connected,
            joined_at,
            latency: None,
            handoff_ready: ready,
            device_id: String::new(),
        }
    }

    #[test]
    fn a_handoff_puts_the_new_host_first_and_the_old_one_back_in_join_order() {
        let mut members = vec![
            member("h", true, 1, false),
            member("a", false, 1, false),
            member("b", false, 3, true),
            member("c", false, 4, false),
        ];
        reorder(&mut members, "b", "h", HostChange::Handoff);
        let shown: Vec<_> = members
            .iter()
            .map(|m| (m.id.as_str(), m.is_host, m.handoff_ready))
            .collect();
        assert_eq!(
            shown,
            [
                ("b", true, false),
                ("h", false, true),
                ("a", false, false),
                ("c", false, false)
            ]
        );
    }

    #[test]
    fn a_stale_term_is_refused_and_an_equal_one_taken() {
        let mut c = Control {
            term: 3,
            ..Control::default()
        };
        assert!(!c.state_frame(serde_json::json!({"x":1}), 9, 2));
        assert_eq!(c.version, 0);
        assert!(c.state_frame(serde_json::json!({"x":1}), 9, 3));
        assert_eq!((c.version, c.term), (9, 3));
    }
}
