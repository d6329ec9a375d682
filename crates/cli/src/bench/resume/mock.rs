//! A minimal in-process stand-in for the resume layer (handshake, numbering, acks, replay on
//! resume), for the storm worker's own tests. It is not LoudSync's server: it knows only what
//! the bench's members send, and it acks every third message so the members' buffers move.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use loudsync_protocol::client::{merge_tokens, number_frame};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_websockets::{Message, ServerBuilder};

use super::local_token;

struct Place {
    session: String,
    is_host: bool,
    out_seq: u64,
    buffer: VecDeque<(u64, String)>,
    in_seq: u64,
    socket: Option<(u64, mpsc::UnboundedSender<String>)>,
}

#[derive(Default)]
struct State {
    places: HashMap<String, Place>,
    tokens: HashMap<String, String>,
    sessions: HashMap<String, Vec<String>>,
    sockets: u64,
}

impl State {
    fn deliver(&mut self, to: &str, frame: &str) {
        let Some(p) = self.places.get_mut(to) else {
            return;
        };
        p.out_seq += 1;
        let numbered = number_frame(p.out_seq, frame);
        p.buffer.push_back((p.out_seq, numbered.clone()));
        if let Some((_, tx)) = &p.socket {
            let _ = tx.send(numbered);
        }
    }
}

/// Listens on a loopback port; returns its address.
pub async fn start() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(Mutex::new(State::default()));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(socket(tcp, state.clone()));
        }
    });
    addr
}

/// A frame with `type` first, as the server writes it (`json!` sorts its keys).
fn frame(v: Value) -> String {
    let mut v = v;
    let kind = v["type"].take();
    v.as_object_mut().unwrap().remove("type");
    let body = v.to_string();
    let rest = body.strip_prefix('{').unwrap();
    let sep = if rest == "}" { "" } else { "," };
    format!("{{\"type\":{kind}{sep}{rest}")
}

async fn socket(tcp: TcpStream, state: Arc<Mutex<State>>) {
    let Ok((_, mut ws)) = ServerBuilder::new().accept(tcp).await else {
        return;
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let id_of_socket = {
        let mut s = state.lock().unwrap();
        s.sockets += 1;
        s.sockets
    };
    let a = local_token();
    let mut b = String::new();
    let mut step = 0;
    let mut me: Option<String> = None;
    let mut processed = 0u64;
    loop {
        tokio::select! {
            out = rx.recv() => {
                let Some(out) = out else { break };
                if ws.send(Message::text(out)).await.is_err() {
                    break;
                }
            }
            msg = ws.next() => {
                let Some(Ok(msg)) = msg else { break };
                let Some(text) = msg.as_text() else { continue };
                let v: Value = serde_json::from_str(text).unwrap();
                let kind = v["type"].as_str().unwrap_or_default().to_string();
                let mut s = state.lock().unwrap();
                match (step, kind.as_str()) {
                    (0, "token") if v["lastSeq"].is_u64() => {
                        let t = v["token"].as_str().unwrap().to_string();
                        let last = v["lastSeq"].as_u64().unwrap();
                        let Some(id) = s.tokens.get(&t).cloned() else {
                            let _ = tx.send(frame(json!({"type": "resume_failed", "reason": "unknown_token"})));
                            continue;
                        };
                        let p = s.places.get_mut(&id).unwrap();
                        while p.buffer.front().is_some_and(|(q, _)| *q <= last) {
                            p.buffer.pop_front();
                        }
                        let _ = tx.send(frame(json!({"type": "token", "token": t})));
                        let _ = tx.send(frame(json!({"type": "resumed", "lastSeq": p.in_seq, "replayed": p.buffer.len()})));
                        for (_, f) in &p.buffer {
                            let _ = tx.send(f.clone());
                        }
                        p.socket = Some((id_of_socket, tx.clone()));
                        me = Some(id);
                        step = 3;
                    }
                    (0, "token") => {
                        b = v["token"].as_str().unwrap().to_string();
                        let _ = tx.send(frame(json!({"type": "token", "token": a})));
                        step = 1;
                    }
                    (1, "token") => {
                        let _ = tx.send(frame(json!({"type": "token", "token": a})));
                        step = 2;
                    }
                    (2, "join") => {
                        let session = v["sessionId"].as_str().unwrap().to_string();
                        let id = format!("c_{id_of_socket}");
                        s.tokens.insert(merge_tokens(&a, &b), id.clone());
                        s.places.insert(id.clone(), Place {
                            session: session.clone(),
                            is_host: v["deviceInfo"]["type"] == "host",
                            out_seq: 0,
                            buffer: VecDeque::new(),
                            in_seq: 0,
                            socket: Some((id_of_socket, tx.clone())),
                        });
                        s.sessions.entry(session.clone()).or_default().push(id.clone());
                        let members: Vec<Value> = s.sessions[&session]
                            .iter()
                            .map(|m| json!({"id": m, "isHost": s.places[m].is_host}))
                            .collect();
                        let _ = tx.send(frame(json!({"type": "welcome", "clientId": id, "resumable": true})));
                        s.deliver(&id, &frame(json!({"type": "member_list", "members": members})));
                        me = Some(id);
                        step = 3;
                    }
                    (3, "heartbeat" | "ping") => {}
                    (3, "ack") => {
                        let seq = v["seq"].as_u64().unwrap();
                        let p = s.places.get_mut(me.as_deref().unwrap()).unwrap();
                        while p.buffer.front().is_some_and(|(q, _)| *q <= seq) {
                            p.buffer.pop_front();
                        }
                    }
                    (3, "token") => break,
                    (3, _) => {
                        let id = me.clone().unwrap();
                        let seq = v["seq"].as_u64().unwrap();
                        let p = s.places.get_mut(&id).unwrap();
                        if seq <= p.in_seq {
                            continue;
                        }
                        if seq > p.in_seq + 1 {
                            let last = p.in_seq;
                            s.deliver(&id, &frame(json!({"type": "error", "code": "invalid_message", "details": {"lastSeq": last}})));
                            continue;
                        }
                        p.in_seq = seq;
                        let (session, in_seq) = (p.session.clone(), p.in_seq);
                        if kind == "message" {
                            let relayed = frame(json!({"type": "message", "from": id, "data": v["data"]}));
                            let to: Vec<String> = match v["to"].as_str() {
                                Some(to) => vec![to.to_string()],
                                None => s.sessions[&session].iter().filter(|m| **m != id).cloned().collect(),
                            };
                            for r in to {
                                s.deliver(&r, &relayed);
                            }
                        }
                        processed += 1;
                        if processed.is_multiple_of(3) {
                            let _ = tx.send(frame(json!({"type": "ack", "seq": in_seq})));
                        }
                    }
                    _ => {
                        let _ = tx.send(frame(json!({"type": "error", "code": "invalid_message"})));
                    }
                }
            }
        }
    }
    if let Some(id) = me {
        let mut s = state.lock().unwrap();
        if let Some(p) = s.places.get_mut(&id) {
            if p.socket.as_ref().map(|(i, _)| *i) == Some(id_of_socket) {
                p.socket = None;
            }
        }
    }
}
