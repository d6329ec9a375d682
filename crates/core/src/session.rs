//! One session: its members, its host, and every rule of seed 001 that involves more than one
//! socket (join validation, member list, leave, kick, application messages, closing).
//!
//! Members are identified by the `clientId` the I/O layer generated for them; the session never
//! sees sockets. What must be sent comes out of [`Session::poll_action`] as
//! [`SessionAction::Send`] with a [`Recipients`] set, so the caller encodes each message once
//! and queues the same bytes for every recipient.

use std::collections::VecDeque;

use loudsync_protocol::{
    close_code, server::SessionInfo, ConnectionStatus, DeviceRef, DeviceType, ErrorCode, Join,
    LeaveReason, MemberInfo, ServerMessage,
};
use serde_json::json;

use crate::connection::MemberCommand;
use crate::Now;

/// Who a message goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipients {
    /// One member.
    One(String),
    /// Every member but one (typically the sender or the subject).
    AllExcept(String),
    /// Every member.
    All,
}

/// What the I/O layer must do for this session.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionAction {
    /// Send a message to these members (stamp it with the current time).
    Send {
        /// Who gets it.
        to: Recipients,
        /// What.
        message: ServerMessage,
    },
    /// Close this member's socket after what is queued for it, and forget its socket.
    Close {
        /// The member's `clientId`.
        member: String,
        /// WebSocket close code.
        code: u16,
        /// Close reason text.
        reason: String,
    },
    /// The session is over; every member has been told and closed.
    Ended,
}

#[derive(Debug, Clone)]
struct Member {
    id: String,
    device_id: String,
    name: String,
    joined_at: u64,
    latency: Option<u64>,
}

/// The state machine of one session.
#[derive(Debug)]
pub struct Session {
    id: String,
    name: String,
    max_members: usize,
    host: Option<String>,
    /// In join order.
    members: Vec<Member>,
    ended: bool,
    actions: VecDeque<SessionAction>,
}

impl Session {
    /// An empty session (created over HTTP, or by a host's `join`).
    pub fn new(id: String, name: String, max_members: usize) -> Self {
        Session {
            id,
            name,
            max_members: max_members.max(1),
            host: None,
            members: Vec::new(),
            ended: false,
            actions: VecDeque::new(),
        }
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

    /// The host's `clientId`, if a host is connected.
    pub fn host_id(&self) -> Option<&str> {
        self.host.as_deref()
    }

    /// How many members are connected, host included.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Whether the session has ended.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<SessionAction> {
        self.actions.pop_front()
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

    fn info(&self, m: &Member) -> MemberInfo {
        MemberInfo {
            id: m.id.clone(),
            name: m.name.clone(),
            is_host: self.host.as_deref() == Some(m.id.as_str()),
            connection_status: ConnectionStatus::Connected,
            joined_at: m.joined_at,
            latency: m.latency,
            device_id: m.device_id.clone(),
        }
    }

    fn device(&self, member_id: &str) -> DeviceRef {
        self.members
            .iter()
            .find(|m| m.id == member_id)
            .map(|m| DeviceRef {
                device_id: m.device_id.clone(),
                name: m.name.clone(),
            })
            .unwrap_or_default()
    }

    /// A `join` for this session by a new member whose `clientId` is `member_id`.
    ///
    /// Validates in order: the device is not already connected (`already_joined`), a host-type
    /// join finds no connected host (`unauthorized`), capacity (`session_full`). On success it
    /// queues `welcome` and `member_list` to the joiner and `member_joined` to the others.
    /// On failure it returns the `error` to send; nothing is queued.
    pub fn handle_join(
        &mut self,
        now: Now,
        member_id: String,
        join: &Join,
    ) -> Result<(), ServerMessage> {
        if self.ended {
            return Err(ServerMessage::error(
                ErrorCode::SessionNotFound,
                format!("session `{}` has ended", self.id),
            ));
        }
        let device = &join.device_info;
        if self.members.iter().any(|m| m.device_id == device.id) {
            return Err(ServerMessage::error(
                ErrorCode::AlreadyJoined,
                format!(
                    "device `{}` is already connected to session `{}`",
                    device.id, self.id
                ),
            ));
        }
        let as_host = device.kind == DeviceType::Host;
        if as_host && self.host.is_some() {
            return Err(ServerMessage::error(
                ErrorCode::Unauthorized,
                format!("session `{}` already has a connected host", self.id),
            ));
        }
        if self.members.len() >= self.max_members {
            return Err(ServerMessage::Error {
                code: ErrorCode::SessionFull,
                message: format!(
                    "Session has reached maximum capacity ({} members)",
                    self.max_members
                ),
                details: Some(json!({
                    "maxMembers": self.max_members,
                    "currentMembers": self.members.len(),
                })),
            });
        }
        let member = Member {
            id: member_id.clone(),
            device_id: device.id.clone(),
            name: device.name.clone(),
            joined_at: now.unix_ms,
            latency: None,
        };
        let info = {
            self.members.push(member);
            if as_host {
                self.host = Some(member_id.clone());
            }
            let m = self.members.last().expect("just pushed");
            self.info(m)
        };
        self.send(
            Recipients::One(member_id.clone()),
            ServerMessage::Welcome {
                client_id: member_id.clone(),
                session_info: Box::new(self.session_info()),
                device: self.device(&member_id),
                joined_at: now.unix_ms,
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

    /// The `sessionInfo` of `welcome`.
    pub fn session_info(&self) -> SessionInfo {
        SessionInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            host_id: self.host.clone(),
            host: self.host.as_deref().map(|h| self.device(h)),
        }
    }

    /// A command from member `member_id`'s connection. Commands from unknown members (already
    /// removed) are ignored.
    pub fn handle_command(&mut self, _now: Now, member_id: &str, command: MemberCommand) {
        if self.ended || !self.members.iter().any(|m| m.id == member_id) {
            return;
        }
        let is_host = self.host.as_deref() == Some(member_id);
        match command {
            MemberCommand::Leave if is_host => {
                self.end("Host ended the session", close_code::NORMAL)
            }
            MemberCommand::Leave => self.remove(member_id, LeaveReason::Left, "left"),
            MemberCommand::Disconnected(reason) if is_host => {
                let why = match reason {
                    LeaveReason::Timeout => "Host timed out",
                    _ => "Host disconnected",
                };
                self.end(why, close_code::NORMAL);
            }
            MemberCommand::Disconnected(reason) => self.remove(member_id, reason, "disconnected"),
            MemberCommand::MemberList => self.send(
                Recipients::One(member_id.to_string()),
                ServerMessage::MemberList {
                    members: self.member_infos(),
                },
            ),
            MemberCommand::Latency(ms) => {
                if let Some(m) = self.members.iter_mut().find(|m| m.id == member_id) {
                    m.latency = Some(ms);
                }
            }
            MemberCommand::Kick {
                member_id: target,
                reason,
            } => self.kick(member_id, is_host, &target, reason),
            MemberCommand::Message { data, to } => match to {
                None => self.send(
                    Recipients::AllExcept(member_id.to_string()),
                    ServerMessage::Message {
                        from: member_id.to_string(),
                        data,
                        device: self.device(member_id),
                    },
                ),
                Some(to) if self.members.iter().any(|m| m.id == to) => self.send(
                    Recipients::One(to),
                    ServerMessage::Message {
                        from: member_id.to_string(),
                        data,
                        device: self.device(member_id),
                    },
                ),
                Some(to) => self.error(
                    member_id,
                    ErrorCode::InvalidMessage,
                    format!("message: no member `{to}` in this session"),
                ),
            },
        }
    }

    fn kick(&mut self, from: &str, is_host: bool, target: &str, reason: Option<String>) {
        if !is_host {
            return self.error(
                from,
                ErrorCode::Unauthorized,
                "kick: only the host may kick members",
            );
        }
        if target == from {
            return self.error(
                from,
                ErrorCode::InvalidMessage,
                "kick: the host cannot kick itself; send `leave` to end the session",
            );
        }
        if !self.members.iter().any(|m| m.id == target) {
            return self.error(
                from,
                ErrorCode::InvalidMessage,
                format!("kick: no member `{target}` in this session"),
            );
        }
        let reason = reason.unwrap_or_else(|| "Host removed you from the session".to_string());
        self.send(
            Recipients::One(target.to_string()),
            ServerMessage::Kicked { reason },
        );
        self.remove(target, LeaveReason::Kicked, "kicked");
    }

    /// Ends the session from outside (HTTP `DELETE`, server shutdown): every member gets
    /// `session_closed {reason}` and is closed with `code`.
    pub fn handle_close(&mut self, _now: Now, reason: &str, code: u16) {
        self.end(reason, code);
    }

    /// Removes a member, tells the others, closes its socket.
    fn remove(&mut self, member_id: &str, reason: LeaveReason, close_reason: &str) {
        let device = self.device(member_id);
        self.forget(member_id);
        self.actions.push_back(SessionAction::Close {
            member: member_id.to_string(),
            code: close_code::NORMAL,
            reason: close_reason.to_string(),
        });
        self.send(
            Recipients::All,
            ServerMessage::MemberLeft {
                member_id: member_id.to_string(),
                reason,
                device,
            },
        );
    }

    fn forget(&mut self, member_id: &str) {
        self.members.retain(|m| m.id != member_id);
        if self.host.as_deref() == Some(member_id) {
            self.host = None;
        }
    }

    fn end(&mut self, reason: &str, code: u16) {
        if self.ended {
            return;
        }
        self.send(
            Recipients::All,
            ServerMessage::SessionClosed {
                reason: reason.to_string(),
            },
        );
        for m in std::mem::take(&mut self.members) {
            self.actions.push_back(SessionAction::Close {
                member: m.id,
                code,
                reason: "session closed".to_string(),
            });
        }
        self.host = None;
        self.ended = true;
        self.actions.push_back(SessionAction::Ended);
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
            Recipients::AllExcept(id) => self.members.iter().any(|m| &m.id != id),
            Recipients::All => !self.members.is_empty(),
        };
        if anyone {
            self.actions.push_back(SessionAction::Send { to, message });
        }
    }
}

#[cfg(test)]
mod tests;
