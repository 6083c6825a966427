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
    /// A JPEG preview; framed per client as type 4 (with metadata) when it negotiated
    /// `supports_preview_metadata`, else as type 1.
    Preview {
        jpeg: Bytes,
        metadata: Json,
    },
}

/// Binary event types (`protocol.py` `BinaryEventTypes`).
const PREVIEW_IMAGE: u32 = 1;
const TEXT: u32 = 3;
const PREVIEW_IMAGE_WITH_METADATA: u32 = 4;
const JPEG: u32 = 1;

/// The frame of a node's progress text: the node id's length and bytes, then the text.
pub fn text_frame(node_id: &str, text: &str) -> Bytes {
    let mut out = Vec::with_capacity(8 + node_id.len() + text.len());
    out.extend_from_slice(&TEXT.to_be_bytes());
    out.extend_from_slice(&(node_id.len() as u32).to_be_bytes());
    out.extend_from_slice(node_id.as_bytes());
    out.extend_from_slice(text.as_bytes());
    Bytes::from(out)
}

/// The frame a client gets for a preview.
pub fn preview_frame(jpeg: &[u8], metadata: &Json, with_metadata: bool) -> Bytes {
    let mut out = Vec::with_capacity(jpeg.len() + 256);
    if with_metadata {
        let meta = crate::pyjson::dumps(metadata);
        out.extend_from_slice(&PREVIEW_IMAGE_WITH_METADATA.to_be_bytes());
        out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        out.extend_from_slice(meta.as_bytes());
    } else {
        out.extend_from_slice(&PREVIEW_IMAGE.to_be_bytes());
        out.extend_from_slice(&JPEG.to_be_bytes());
    }
    out.extend_from_slice(jpeg);
    Bytes::from(out)
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

    pub fn send_preview(&self, jpeg: Vec<u8>, metadata: Json, target: Target) {
        let _ = self.outbox.send((
            target,
            Payload::Preview {
                jpeg: Bytes::from(jpeg),
                metadata,
            },
        ));
    }

    /// Delivers the outbox; runs for the server's lifetime on its async runtime.
    pub async fn deliver(&self) {
        let Some(mut rx) = self.inbox.lock().ok().and_then(|mut g| g.take()) else {
            return;
        };
        while let Some((target, payload)) = rx.recv().await {
            // Broadcast previews always go out as type 1, as in ComfyUI.
            let sessions: Vec<(actix_ws::Session, bool)> = match &target {
                Target::All => self
                    .clients
                    .iter()
                    .map(|c| (c.session.clone(), false))
                    .collect(),
                Target::Sid(sid) => self
                    .clients
                    .get(sid)
                    .map(|c| (c.session.clone(), c.preview_metadata))
                    .into_iter()
                    .collect(),
            };
            for (mut s, with_metadata) in sessions {
                let _ = match &payload {
                    Payload::Text(t) => s.text(t.clone()).await,
                    Payload::Binary(b) => s.binary(b.clone()).await,
                    Payload::Preview { jpeg, metadata } => {
                        s.binary(preview_frame(jpeg, metadata, with_metadata)).await
                    }
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn preview_frames_follow_protocol_py() {
        let legacy = preview_frame(b"JPG", &json!({}), false);
        assert_eq!(&legacy[..], b"\x00\x00\x00\x01\x00\x00\x00\x01JPG");
        let meta = json!({"node_id": "3", "prompt_id": "p"});
        let framed = preview_frame(b"JPG", &meta, true);
        let text = crate::pyjson::dumps(&meta);
        assert_eq!(&framed[..4], &[0, 0, 0, 4]);
        assert_eq!(
            u32::from_be_bytes(framed[4..8].try_into().unwrap()) as usize,
            text.len()
        );
        assert_eq!(&framed[8..8 + text.len()], text.as_bytes());
        assert_eq!(&framed[8 + text.len()..], b"JPG");
    }
}
