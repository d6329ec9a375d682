//! What crosses Redis in cluster pairing, as JSON: a node's inputs ([`In`], in
//! `ls:pairing:in`), the owner's per-node output batches ([`Out`], in `ls:pairing:out:NODE`)
//! and the admin view's clients ([`ViewClient`], in `ls:pairing:view`). Pure serde, no Redis.

use loudsync_core::pairing::{ClientInfo, Transport};
use loudsync_protocol::pairing::{AbortReason, Role};
use serde::{Deserialize, Serialize};

use crate::pairing::hub::Shipped;

/// An identify's client id as it crosses Redis.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) enum Claimed {
    Assign,
    Given(String),
    Invalid,
}

/// A `sendevent/` request's body as it crosses Redis (the event as its data string).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) enum Body {
    Event(String),
    Alive(String),
    Close(String),
}

/// One input of a node, in `ls:pairing:in`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "k")]
pub(super) enum In {
    Open {
        node: String,
        conn: u64,
        sse: bool,
    },
    Identify {
        node: String,
        conn: u64,
        req: u64,
        app: String,
        role: Option<String>,
        id: Claimed,
        token: Option<String>,
    },
    Event {
        conn: u64,
        to: String,
        data: String,
    },
    Alive {
        conn: u64,
    },
    Request {
        app: String,
        role: String,
        client: String,
        token: String,
        to: String,
        body: Body,
    },
    Assign {
        node: String,
        req: u64,
    },
    Gone {
        conn: u64,
    },
}

/// An identify's result as it crosses Redis.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) enum IdResult {
    Ok(String),
    Aborted(AbortReason),
    NotAwaiting,
}

/// One item of a batch in `ls:pairing:out:NODE`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "k")]
pub(super) enum Out {
    Frame {
        conn: u64,
        s: Shipped,
    },
    Identified {
        req: u64,
        stream: u64,
        result: IdResult,
    },
    Assigned {
        req: u64,
        id: Option<String>,
    },
}

/// One client of the admin view, as it crosses Redis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ViewClient {
    app: String,
    client_id: String,
    role: Role,
    sse: bool,
    partner: Option<String>,
    partner_live: bool,
}

impl ViewClient {
    pub(super) fn of(c: &ClientInfo) -> ViewClient {
        ViewClient {
            app: c.app.clone(),
            client_id: c.client_id.clone(),
            role: c.role,
            sse: c.transport == Transport::Sse,
            partner: c.partner.clone(),
            partner_live: c.partner_live,
        }
    }

    pub(super) fn info(self) -> ClientInfo {
        ClientInfo {
            app: self.app,
            client_id: self.client_id,
            role: self.role,
            transport: if self.sse {
                Transport::Sse
            } else {
                Transport::WebSocket
            },
            partner: self.partner,
            partner_live: self.partner_live,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loudsync_protocol::pairing::Event;

    #[test]
    fn inputs_and_outputs_round_trip_as_json() {
        let input = In::Identify {
            node: "n1".into(),
            conn: 7,
            req: 8,
            app: "app".into(),
            role: Some("controller".into()),
            id: Claimed::Given("123456".into()),
            token: None,
        };
        let json = serde_json::to_string(&input).unwrap();
        assert!(matches!(
            serde_json::from_str::<In>(&json).unwrap(),
            In::Identify {
                conn: 7,
                req: 8,
                ..
            }
        ));
        let batch = vec![
            Out::Frame {
                conn: 1,
                s: Shipped::Close(1000, "closed".into()),
            },
            Out::Identified {
                req: 2,
                stream: 3,
                result: IdResult::Aborted(AbortReason::ClientIdInUse),
            },
        ];
        let back: Vec<Out> = serde_json::from_str(&serde_json::to_string(&batch).unwrap()).unwrap();
        assert!(matches!(
            back[1],
            Out::Identified {
                result: IdResult::Aborted(AbortReason::ClientIdInUse),
                ..
            }
        ));
    }

    #[test]
    fn an_event_crosses_redis_as_its_data_string_unchanged() {
        let mut event = Event::new("ping");
        event.params = vec!["a".into(), "".into()];
        event.send_ct = Some(42);
        let back = Event::parse_data(&event.to_data("")).unwrap();
        assert_eq!(back.to_data("x"), event.to_data("x"));
    }
}
