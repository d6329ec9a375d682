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
//! Sessions are found by [`session_key`]: case and dashes do not matter (`k7p3xq` finds
//! `K7P-3XQ`), and each session keeps the form of its id it was created with.
//!
//! Who may join is decided here too, before a join is routed ([`admit`]: the join token's
//! claims against the join, and `--require-token`), and in the session ([`Access`]: who may
//! take the host role, the password), with the words of each refusal in [`JoinError`].
//!
//! Member ids and session codes come from the [`IdSource`] the caller injects.
//! [`JoinError`] holds the text of each join refusal, so it is worded in one place whichever
//! component (directory, session, connection, server) refuses.

use std::collections::HashMap;
use std::sync::Arc;

use loudsync_protocol::{DeviceType, ErrorCode, Join, ServerMessage, PROTOCOL_VERSION};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ids::{session_key, IdSource};

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
    /// The session has a password and the join carried none.
    PasswordRequired {
        /// The session id.
        session: String,
    },
    /// The join carried the wrong password.
    WrongPassword {
        /// The session id.
        session: String,
    },
    /// Too many wrong passwords for this session from the joiner's address.
    TooManyAttempts {
        /// The session id.
        session: String,
        /// Whole seconds until the address may try again (at least 1).
        retry_after_secs: u64,
    },
    /// The server needs a join token (`--require-token`) and the join carried none.
    TokenRequired,
    /// The join token does not grant this join.
    InvalidToken {
        /// Which check failed, e.g. `"it has expired"` (never the token itself).
        why: String,
    },
    /// A host-type join for a session whose host role it may not take.
    HostNotAllowed {
        /// The session id.
        session: String,
        /// Whether the session names a host device (another one), rather than none.
        names_a_device: bool,
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
            JoinError::PasswordRequired { .. } => ErrorCode::PasswordRequired,
            JoinError::WrongPassword { .. } => ErrorCode::WrongPassword,
            JoinError::TooManyAttempts { .. } => ErrorCode::TooManyAttempts,
            JoinError::TokenRequired => ErrorCode::TokenRequired,
            JoinError::InvalidToken { .. } => ErrorCode::InvalidToken,
            JoinError::HostNotAllowed { .. } => ErrorCode::HostNotAllowed,
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
            JoinError::PasswordRequired { session } => {
                format!("session `{session}` needs a password: send it as `password` in `join`")
            }
            JoinError::WrongPassword { session } => {
                format!("wrong password for session `{session}`")
            }
            JoinError::TooManyAttempts {
                session,
                retry_after_secs,
            } => format!(
                "too many wrong passwords for session `{session}` from this address; \
                 try again in {retry_after_secs} s"
            ),
            JoinError::TokenRequired => {
                "this server needs a signed join token: send it as `token` in `join`".to_string()
            }
            JoinError::InvalidToken { why } => format!("invalid join token: {why}"),
            JoinError::HostNotAllowed {
                session,
                names_a_device: true,
            } => format!(
                "session `{session}` names its host device: this device may not join it as host \
                 without a host token"
            ),
            JoinError::HostNotAllowed {
                session,
                names_a_device: false,
            } => format!(
                "session `{session}` was created over HTTP without a host: nobody may join it as \
                 host without a host token"
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

/// A session password, kept only as its SHA-256 digest and compared in constant time (on
/// digests, so the time taken says nothing about the password's length either). Its `Debug`
/// shows nothing of it.
#[derive(Clone)]
pub struct Password([u8; 32]);

impl Password {
    /// The password `password`.
    pub fn new(password: &str) -> Password {
        Password(Sha256::digest(password.as_bytes()).into())
    }

    /// Whether `given` is this password (constant time).
    pub fn matches(&self, given: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        self.0.ct_eq(&digest).into()
    }

    /// The password whose SHA-256 digest is `digest`, as [`Password::digest`] gave it: how a
    /// session's spec is read back from the cluster's store. The digest never leaves the
    /// server's side (the store, the admin API); clients never see it.
    pub fn from_digest(digest: [u8; 32]) -> Password {
        Password(digest)
    }

    /// The SHA-256 digest this password is kept as, for writing a session's spec to the
    /// cluster's store (read back with [`Password::from_digest`]). Never shown to clients.
    pub fn digest(&self) -> [u8; 32] {
        self.0
    }
}

impl PartialEq for Password {
    fn eq(&self, other: &Password) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for Password {}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Who may take a session's host role, besides the bearer of a valid host token (who always
/// may, while the role is free).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HostRule {
    /// Any host-type join: a session opened by a host's join (its host is its creator, and
    /// the session ends with it).
    #[default]
    Open,
    /// Only a host-type join from this `deviceInfo.id` (`hostDeviceId` over HTTP).
    Device(String),
    /// Only a host-type join with a host token: a session created over HTTP that names no
    /// host device.
    TokenOnly,
}

/// Who may join a session.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Access {
    /// Who may take the host role.
    pub host: HostRule,
    /// The password every join must carry (unless it has a valid join token).
    pub password: Option<Password>,
    /// The name to show as the host's while the session has none (the app dialect's
    /// `hostName`): `hostName` over HTTP.
    pub host_name: Option<String>,
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
    /// Who may join it.
    pub access: Access,
}

/// The claims of a join token whose signature and validity period the server checked
/// (`sid`, `role`, `sub`, `name`); [`admit`] checks them against the join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    /// The session it is for (compared by [`session_key`]).
    pub session: String,
    /// The role it grants: the join's `deviceInfo.type` must be this.
    pub role: DeviceType,
    /// The device it is for, if it names one: the join's `deviceInfo.id` must be this.
    pub device: Option<String>,
    /// The device name it is for, if it names one: the join's `deviceInfo.name` must be this.
    pub name: Option<String>,
}

/// What a join proved before its session looked at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Credentials {
    /// It carried a valid join token for this session, role and device: the session asks for
    /// no password, and a host token takes the host role of any session whose role is free.
    pub token: bool,
}

/// The checks made before a join is routed: its join token, if it carries one (`token` is
/// the server's reading of it: the claims, or why its signature or validity period failed),
/// must be for this session, role and device; with `require_token` it must carry one.
pub fn admit(
    join: &Join,
    token: Option<Result<TokenGrant, String>>,
    require_token: bool,
) -> Result<Credentials, JoinError> {
    let invalid = |why: &str| JoinError::InvalidToken {
        why: why.to_string(),
    };
    let grant = match token {
        None if require_token => return Err(JoinError::TokenRequired),
        None => return Ok(Credentials::default()),
        Some(Err(why)) => return Err(JoinError::InvalidToken { why }),
        Some(Ok(grant)) => grant,
    };
    if session_key(&grant.session) != session_key(join.session_id.as_deref().unwrap_or("")) {
        return Err(invalid("it is for another session"));
    }
    let device = &join.device_info;
    if grant.role != device.kind {
        return Err(invalid(match grant.role {
            DeviceType::Host => "it is for the host role; this join is a client's",
            DeviceType::Client => "it is for the client role; this join is a host's",
        }));
    }
    if grant.device.as_ref().is_some_and(|d| *d != device.id) {
        return Err(invalid("it is for another device (`deviceInfo.id`)"));
    }
    if grant.name.as_ref().is_some_and(|n| *n != device.name) {
        return Err(invalid("it is for another device name (`deviceInfo.name`)"));
    }
    Ok(Credentials { token: true })
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

/// Session id -> how to reach the session, and the rules of routing and naming. Keyed by
/// [`session_key`].
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
        let id = match &join.session_id {
            Some(id) => {
                if let Some(h) = self.get(id) {
                    return Ok(Route::To(h.clone()));
                }
                if join.device_info.kind != DeviceType::Host {
                    return Err(JoinError::NotFound {
                        session: id.clone(),
                    });
                }
                id.clone()
            }
            // A host without a session id opens a new session under a fresh code (seed
            // 000's Connect Event); the decoder refuses a client's join without one.
            None if join.device_info.kind == DeviceType::Host => self.fresh_code(),
            None => {
                return Err(JoinError::NotFound {
                    session: String::new(),
                })
            }
        };
        let name = join
            .session_name
            .clone()
            .unwrap_or_else(|| format!("{}'s session", join.device_info.name));
        Ok(Route::Create(SessionSpec {
            id,
            name,
            max_members: self.default_max_members,
            access: Access {
                host: HostRule::Open,
                password: join.password.as_deref().map(Password::new),
                host_name: None,
            },
        }))
    }

    /// The spec of a session created by the admin API: its id (or a fresh code), its name, its
    /// capacity (or the default), who may join it. Fails if the id is taken (in any case,
    /// with or without dashes).
    pub fn spec(
        &self,
        id: Option<String>,
        name: String,
        max_members: Option<usize>,
        access: Access,
    ) -> Result<SessionSpec, AlreadyExists> {
        let id = id.unwrap_or_else(|| self.fresh_code());
        if self.get(&id).is_some() {
            return Err(AlreadyExists);
        }
        Ok(SessionSpec {
            id,
            name,
            max_members: max_members.unwrap_or(self.default_max_members).max(1),
            access,
        })
    }

    /// A session code no open session has: 6 of `[0-9A-Z]` from the injected id source.
    fn fresh_code(&self) -> String {
        loop {
            let code = self.ids.session_code();
            if self.get(&code).is_none() {
                break code;
            }
        }
    }

    /// A fresh member id.
    pub fn new_member_id(&self) -> String {
        self.ids.member_id()
    }

    /// Registers a started session.
    pub fn insert(&mut self, id: String, handle: H) -> Result<(), AlreadyExists> {
        let key = session_key(&id);
        if self.sessions.contains_key(&key) {
            return Err(AlreadyExists);
        }
        self.sessions.insert(key, handle);
        Ok(())
    }

    /// The session with this id, however it is typed (case, dashes).
    pub fn get(&self, id: &str) -> Option<&H> {
        self.sessions.get(&session_key(id))
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
        let key = session_key(id);
        if self.sessions.get(&key).is_some_and(is_it) {
            self.sessions.remove(&key);
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
            session_id: Some(session.into()),
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
                max_members: 10,
                access: Access::default(),
            }))
        );
        assert_eq!(
            d.route(&join("s", DeviceType::Host, Some("Party"))),
            Ok(Route::Create(SessionSpec {
                id: "s".into(),
                name: "Party".into(),
                max_members: 10,
                access: Access::default(),
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
    fn session_codes_are_found_in_any_case_with_or_without_dashes() {
        let mut d = directory();
        d.insert("K7P-3XQ".into(), 1).unwrap();
        for typed in ["K7P-3XQ", "k7p3xq", "K7P3XQ", "k7p-3xq", "k-7-p-3-x-q"] {
            assert_eq!(d.get(typed), Some(&1), "{typed}");
            assert_eq!(
                d.route(&join(typed, DeviceType::Client, None)),
                Ok(Route::To(1)),
                "{typed}"
            );
            assert_eq!(
                d.spec(Some(typed.into()), "n".into(), None, Access::default()),
                Err(AlreadyExists),
                "{typed} is taken"
            );
        }
        assert_eq!(d.insert("k7p3xq".into(), 2), Err(AlreadyExists));
        assert_eq!(d.get("K7P-3XR"), None);
        d.remove_if("k7p3xq", |h| *h == 1);
        assert!(d.is_empty());
    }

    #[test]
    fn a_host_join_with_a_password_sets_it() {
        let d = directory();
        let mut j = join("s", DeviceType::Host, None);
        j.password = Some("hunter2".into());
        let Ok(Route::Create(spec)) = d.route(&j) else {
            panic!()
        };
        assert_eq!(spec.access.host, HostRule::Open);
        let password = spec.access.password.expect("a password");
        assert!(password.matches("hunter2"));
        assert!(!password.matches("hunter3"));
        assert!(!password.matches(""));
        assert_eq!(format!("{password:?}"), "Password(<redacted>)");
    }

    fn grant(session: &str, role: DeviceType) -> TokenGrant {
        TokenGrant {
            session: session.into(),
            role,
            device: None,
            name: None,
        }
    }

    #[test]
    fn admission_checks_the_tokens_claims_against_the_join() {
        let client = join("K7P-3XQ", DeviceType::Client, None);
        let host = join("K7P-3XQ", DeviceType::Host, None);
        let token = |g: TokenGrant| Some(Ok(g));
        let why = |r: Result<Credentials, JoinError>| match r {
            Err(JoinError::InvalidToken { why }) => why,
            other => panic!("{other:?}"),
        };
        // No token: fine unless the server requires one.
        assert_eq!(
            admit(&client, None, false),
            Ok(Credentials { token: false })
        );
        assert_eq!(admit(&client, None, true), Err(JoinError::TokenRequired));
        // A token the server could not verify: its reason.
        assert_eq!(
            why(admit(&client, Some(Err("it has expired".into())), false)),
            "it has expired"
        );
        // A valid token for this session (in any spelling of its code) and role.
        let ok = Ok(Credentials { token: true });
        assert_eq!(
            admit(&client, token(grant("k7p3xq", DeviceType::Client)), true),
            ok
        );
        assert_eq!(
            admit(&host, token(grant("K7P-3XQ", DeviceType::Host)), false),
            ok
        );
        assert_eq!(
            why(admit(
                &client,
                token(grant("other", DeviceType::Client)),
                false
            )),
            "it is for another session"
        );
        assert_eq!(
            why(admit(
                &client,
                token(grant("K7P-3XQ", DeviceType::Host)),
                false
            )),
            "it is for the host role; this join is a client's"
        );
        assert_eq!(
            why(admit(
                &host,
                token(grant("K7P-3XQ", DeviceType::Client)),
                false
            )),
            "it is for the client role; this join is a host's"
        );
        let mut for_device = grant("K7P-3XQ", DeviceType::Client);
        for_device.device = Some("d".into());
        assert_eq!(admit(&client, token(for_device.clone()), false), ok);
        for_device.device = Some("someone-else".into());
        assert_eq!(
            why(admit(&client, token(for_device), false)),
            "it is for another device (`deviceInfo.id`)"
        );
        let mut for_name = grant("K7P-3XQ", DeviceType::Client);
        for_name.name = Some("Rishad's iPhone".into());
        assert_eq!(admit(&client, token(for_name.clone()), false), ok);
        for_name.name = Some("Mallory".into());
        assert_eq!(
            why(admit(&client, token(for_name), false)),
            "it is for another device name (`deviceInfo.name`)"
        );
    }

    #[test]
    fn ids_come_from_the_injected_source() {
        let d = directory();
        assert_eq!(d.new_member_id(), "c_000000000001");
        let spec = d.spec(None, "n".into(), None, Access::default()).unwrap();
        assert_eq!(spec.id, "000002");
        assert_eq!(spec.max_members, 10);
    }

    #[test]
    fn admin_specs_refuse_taken_ids_and_removal_checks_identity() {
        let mut d = directory();
        d.insert("lobby".into(), 1).unwrap();
        assert_eq!(
            d.spec(Some("lobby".into()), "n".into(), Some(3), Access::default()),
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
            (
                JoinError::PasswordRequired {
                    session: "x".into(),
                },
                "password_required",
                "session `x` needs a password: send it as `password` in `join`",
            ),
            (
                JoinError::WrongPassword {
                    session: "x".into(),
                },
                "wrong_password",
                "wrong password for session `x`",
            ),
            (
                JoinError::TooManyAttempts {
                    session: "x".into(),
                    retry_after_secs: 42,
                },
                "too_many_attempts",
                "too many wrong passwords for session `x` from this address; try again in 42 s",
            ),
            (
                JoinError::TokenRequired,
                "token_required",
                "this server needs a signed join token: send it as `token` in `join`",
            ),
            (
                JoinError::InvalidToken {
                    why: "it has expired".into(),
                },
                "invalid_token",
                "invalid join token: it has expired",
            ),
            (
                JoinError::HostNotAllowed {
                    session: "x".into(),
                    names_a_device: true,
                },
                "host_not_allowed",
                "session `x` names its host device: this device may not join it as host without a host token",
            ),
            (
                JoinError::HostNotAllowed {
                    session: "x".into(),
                    names_a_device: false,
                },
                "host_not_allowed",
                "session `x` was created over HTTP without a host: nobody may join it as host without a host token",
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
