//! WebSocket clients by session id, and one ordered outbox every message goes through.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use actix_web::web::Bytes;
use dashmap::DashMap;
use serde_json::{json, Value as Json};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::pyjson;

pub struct Client {
    pub conn_id: u64,
    pub session: actix_ws::Session,
    pub preview_metadata: bool,
}

#[derive(Debug, Clone)]
pub enum Target {
    All,
    Sid(String),
}

pub enum Payload {
    Text(String),
    Binary(Bytes),
}

pub struct Hub {
    pub clients: DashMap<String, Client>,
    outbox: UnboundedSender<(Target, Payload)>,
    inbox: Mutex<Option<UnboundedReceiver<(Target, Payload)>>>,
    next_conn: AtomicU64,
}

impl Default for Hub {
    fn default() -> Self {
        let (tx, rx) = unbounded_channel();
        Hub {
            clients: DashMap::new(),
            outbox: tx,
            inbox: Mutex::new(Some(rx)),
            next_conn: AtomicU64::new(1),
        }
    }
}

impl Hub {
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues `{"type": kind, "data": data}` for the target, in order with everything else.
    pub fn send(&self, kind: &str, data: Json, target: Target) {
        let text = pyjson::dumps(&json!({"type": kind, "data": data}));
        let _ = self.outbox.send((target, Payload::Text(text)));
    }

    pub fn send_binary(&self, bytes: Bytes, target: Target) {
        let _ = self.outbox.send((target, Payload::Binary(bytes)));
    }

    /// Delivers the outbox; runs for the server's lifetime on its async runtime.
    pub async fn deliver(&self) {
        let Some(mut rx) = self.inbox.lock().ok().and_then(|mut g| g.take()) else {
            return;
        };
        while let Some((target, payload)) = rx.recv().await {
            let sessions: Vec<actix_ws::Session> = match &target {
                Target::All => self.clients.iter().map(|c| c.session.clone()).collect(),
                Target::Sid(sid) => self
                    .clients
                    .get(sid)
                    .map(|c| c.session.clone())
                    .into_iter()
                    .collect(),
            };
            for mut s in sessions {
                let _ = match &payload {
                    Payload::Text(t) => s.text(t.clone()).await,
                    Payload::Binary(b) => s.binary(b.clone()).await,
                };
            }
        }
    }
}
