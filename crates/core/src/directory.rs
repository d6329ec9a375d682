//! Routing and identity: which session a `join` goes to, the ids members get, and the words of
//! every join error.
//!
//! A [`Directory`] maps session ids to whatever the caller uses to reach a session (a channel
//! to its owner task in the server, a plain value in tests). It decides, without I/O:
//! - a join for a known session goes there ([`Route::To`]);
//! - a *host* join for an unknown session creates it ([`Route::Create`], named after the
//!   host's device unless the join names it), which the caller starts and [`Directory::insert`]s;
//! - a *client* join for an unknown session is refused with `session_not_found`.
//!
//! Member ids and session codes come from the [`IdSource`] the caller injects.
//! [`JoinError`] holds the text of each join refusal, so it is worded in one place whichever
//! component (directory, session, connection, server) refuses.

use std::collections::HashMap;
use std::sync::Arc;

use loudsync_protocol::{DeviceType, ErrorCode, Join, ServerMessage, PROTOCOL_VERSION};
use serde_json::json;

use crate::ids::IdSource;

/// Why a join was refused. [`JoinError::to_message`] gives the `error` sent to the joiner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinError {
    /// No session has this id (and the joiner is not a host, who would create it).
    NotFound {
        /// The session id asked for.
        session: String,
    },
    /// The session ended while the join was on its way.
    Ended {
        /// The session id.
        session: String,
    },
    /// A device with this id is already a member.
    AlreadyJoined {
        /// The device id.
        device: String,
        /// The session id.
        session: String,
    },
    /// A host-type join for a session that has a host.
    HostTaken {
        /// The session id.
        session: String,
    },
    /// The session is at capacity (the host counts).
    Full {
        /// The capacity.
        max_members: usize,
        /// Members now.
        current: usize,
    },
    /// The client's `protocolVersion` has another major version.
    VersionMismatch {
        /// What the client sent.
        client: String,
    },
}

impl JoinError {
    /// The error code on the wire.
    pub fn code(&self) -> ErrorCode {
        match self {
            JoinError::NotFound { .. } | JoinError::Ended { .. } => ErrorCode::SessionNotFound,
            JoinError::AlreadyJoined { .. } => ErrorCode::AlreadyJoined,
            JoinError::HostTaken { .. } => ErrorCode::Unauthorized,
            JoinError::Full { .. } => ErrorCode::SessionFull,
            JoinError::VersionMismatch { .. } => ErrorCode::VersionMismatch,
        }
    }

    /// The human-readable text of the refusal (also used by the HTTP API's 404).
    pub fn text(&self) -> String {
        match self {
            JoinError::NotFound { session } => format!("session `{session}` does not exist"),
            JoinError::Ended { session } => format!("session `{session}` has ended"),
            JoinError::AlreadyJoined { device, session } => {
                format!("device `{device}` is already connected to session `{session}`")
            }
            JoinError::HostTaken { session } => {
                format!("session `{session}` already has a connected host")
            }
            JoinError::Full { max_members, .. } => {
                format!("Session has reached maximum capacity ({max_members} members)")
            }
            JoinError::VersionMismatch { client } => format!(
                "protocol version {client} is not supported; this server speaks {PROTOCOL_VERSION}"
            ),
        }
    }

    /// The `error` message for the joiner.
    pub fn to_message(&self) -> ServerMessage {
        let message = self.text();
        let details = match self {
            JoinError::Full {
                max_members,
                current,
            } => Some(json!({"maxMembers": max_members, "currentMembers": current})),
            _ => None,
        };
        ServerMessage::Error {
            code: self.code(),
            message,
            details,
        }
    }
}

/// What a session to be created looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSpec {
    /// Its id.
    pub id: String,
    /// Its display name.
    pub name: String,
    /// Its capacity, host included.
    pub max_members: usize,
}

/// Where a join goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<H> {
    /// To this existing session.
    To(H),
    /// To a session to be created for the joining host; start it, then
    /// [`Directory::insert`] it, then send it the join.
    Create(SessionSpec),
}

/// Creating a session whose id is taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlreadyExists;

/// Session id -> how to reach the session, and the rules of routing and naming.
pub struct Directory<H> {
    sessions: HashMap<String, H>,
    ids: Arc<dyn IdSource>,
    default_max_members: usize,
}

impl<H: Clone> Directory<H> {
    /// An empty directory; sessions created by a host join get `default_max_members`.
    pub fn new(ids: Arc<dyn IdSource>, default_max_members: usize) -> Self {
        Directory {
            sessions: HashMap::new(),
            ids,
            default_max_members: default_max_members.max(1),
        }
    }

    /// Where `join` goes (see the module comment).
    pub fn route(&self, join: &Join) -> Result<Route<H>, JoinError> {
        if let Some(h) = self.sessions.get(&join.session_id) {
            return Ok(Route::To(h.clone()));
        }
        if join.device_info.kind != DeviceType::Host {
            return Err(JoinError::NotFound {
                session: join.session_id.clone(),
            });
        }
        let name = join
            .session_name
            .clone()
            .unwrap_or_else(|| format!("{}'s session", join.device_info.name));
        Ok(Route::Create(SessionSpec {
            id: join.session_id.clone(),
            name,
            max_members: self.default_max_members,
        }))
    }

    /// The spec of a session created by the admin API: its id (or a fresh code), its name, its
    /// capacity (or the default). Fails if the id is taken.
    pub fn spec(
        &self,
        id: Option<String>,
        name: String,
        max_members: Option<usize>,
    ) -> Result<SessionSpec, AlreadyExists> {
        let id = match id {
            Some(id) => id,
            None => loop {
                let code = self.ids.session_code();
                if !self.sessions.contains_key(&code) {
                    break code;
                }
            },
        };
        if self.sessions.contains_key(&id) {
            return Err(AlreadyExists);
        }
        Ok(SessionSpec {
            id,
            name,
            max_members: max_members.unwrap_or(self.default_max_members).max(1),
        })
    }

    /// A fresh member id.
    pub fn new_member_id(&self) -> String {
        self.ids.member_id()
    }

    /// Registers a started session.
    pub fn insert(&mut self, id: String, handle: H) -> Result<(), AlreadyExists> {
        if self.sessions.contains_key(&id) {
            return Err(AlreadyExists);
        }
        self.sessions.insert(id, handle);
        Ok(())
    }

    /// The session with this id.
    pub fn get(&self, id: &str) -> Option<&H> {
        self.sessions.get(id)
    }

    /// Every session.
    pub fn all(&self) -> impl Iterator<Item = &H> {
        self.sessions.values()
    }

    /// How many sessions there are.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Forgets session `id` if `is_it` says the entry is the one that ended (a new session
    /// with the same id may have replaced it).
    pub fn remove_if(&mut self, id: &str, is_it: impl FnOnce(&H) -> bool) {
        if self.sessions.get(id).is_some_and(is_it) {
            self.sessions.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SequentialIds;
    use loudsync_protocol::DeviceInfo;

    fn join(session: &str, kind: DeviceType, name: Option<&str>) -> Join {
        Join {
            session_id: session.into(),
            device_info: DeviceInfo {
                id: "d".into(),
                name: "Rishad's iPhone".into(),
                kind,
            },
            session_name: name.map(str::to_string),
            protocol_version: None,
            password: None,
            token: None,
        }
    }

    fn directory() -> Directory<u32> {
        Directory::new(Arc::new(SequentialIds::default()), 10)
    }

    #[test]
    fn a_host_join_creates_a_client_join_is_refused_an_existing_session_is_found() {
        let mut d = directory();
        assert_eq!(
            d.route(&join("s", DeviceType::Client, None)),
            Err(JoinError::NotFound {
                session: "s".into()
            })
        );
        assert_eq!(
            d.route(&join("s", DeviceType::Host, None)),
            Ok(Route::Create(SessionSpec {
                id: "s".into(),
                name: "Rishad's iPhone's session".into(),
                max_members: 10
            }))
        );
        assert_eq!(
            d.route(&join("s", DeviceType::Host, Some("Party"))),
            Ok(Route::Create(SessionSpec {
                id: "s".into(),
                name: "Party".into(),
                max_members: 10
            }))
        );
        d.insert("s".into(), 7).unwrap();
        assert_eq!(d.insert("s".into(), 8), Err(AlreadyExists));
        assert_eq!(
            d.route(&join("s", DeviceType::Client, None)),
            Ok(Route::To(7))
        );
        assert_eq!(
            d.route(&join("s", DeviceType::Host, None)),
            Ok(Route::To(7))
        );
    }

    #[test]
    fn ids_come_from_the_injected_source() {
        let d = directory();
        assert_eq!(d.new_member_id(), "c_000000000001");
        let spec = d.spec(None, "n".into(), None).unwrap();
        assert_eq!(spec.id, "000002");
        assert_eq!(spec.max_members, 10);
    }

    #[test]
    fn admin_specs_refuse_taken_ids_and_removal_checks_identity() {
        let mut d = directory();
        d.insert("lobby".into(), 1).unwrap();
        assert_eq!(
            d.spec(Some("lobby".into()), "n".into(), Some(3)),
            Err(AlreadyExists)
        );
        d.remove_if("lobby", |h| *h == 2);
        assert_eq!(
            d.get("lobby"),
            Some(&1),
            "another session's end removes nothing"
        );
        d.remove_if("lobby", |h| *h == 1);
        assert!(d.is_empty());
    }

    #[test]
    fn every_join_error_is_worded_once_with_its_code() {
        let cases = [
            (
                JoinError::NotFound {
                    session: "x".into(),
                },
                "session_not_found",
                "session `x` does not exist",
            ),
            (
                JoinError::Ended {
                    session: "x".into(),
                },
                "session_not_found",
                "session `x` has ended",
            ),
            (
                JoinError::AlreadyJoined {
                    device: "d".into(),
                    session: "x".into(),
                },
                "already_joined",
                "device `d` is already connected to session `x`",
            ),
            (
                JoinError::HostTaken {
                    session: "x".into(),
                },
                "unauthorized",
                "session `x` already has a connected host",
            ),
            (
                JoinError::Full {
                    max_members: 2,
                    current: 2,
                },
                "session_full",
                "Session has reached maximum capacity (2 members)",
            ),
            (
                JoinError::VersionMismatch {
                    client: "2.0".into(),
                },
                "version_mismatch",
                "protocol version 2.0 is not supported; this server speaks 1.0",
            ),
        ];
        for (e, code, text) in cases {
            let ServerMessage::Error {
                code: c,
                message,
                details,
            } = e.to_message()
            else {
                panic!()
            };
            assert_eq!((c.as_str(), message.as_str()), (code, text));
            assert_eq!(details.is_some(), code == "session_full");
        }
    }
}
