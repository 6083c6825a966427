//! What a node sees while it runs: the server's folders, the prompt, progress and interrupt.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value as Json};

use super::node::NodeError;
use crate::paths::Paths;

/// Shared, read-only facts nodes need at validation and run time.
pub struct NodeEnv {
    pub paths: Arc<Paths>,
    /// `--disable-metadata`: save nodes write no prompt/workflow chunks.
    pub disable_metadata: bool,
    /// `--preview-method` other than `none`: samplers send latent previews.
    pub previews: bool,
    /// The compute device's resident models (loader nodes go through it).
    pub models: Arc<crate::runtime::manager::ModelManager>,
}

/// How a message reaches clients (ComfyUI routes execution messages by the prompt's client).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Route {
    /// Only the prompt's client; dropped when the prompt has none.
    Client,
    /// The prompt's client, or every socket when the prompt has none.
    ClientOrBroadcast,
}

/// Receives the execution messages of one prompt, already shaped as ComfyUI's WS `data`.
pub trait EventSink: Send + Sync {
    fn send(&self, kind: &str, data: Json, route: Route);

    /// A JPEG preview with its metadata (node, prompt, image type); dropped by default.
    fn preview(&self, _jpeg: Vec<u8>, _metadata: Json) {}

    /// Text shown on a node (`send_progress_text`); dropped by default.
    fn progress_text(&self, _node_id: &str, _text: &str) {}
}

/// A sink that drops everything.
pub struct NullSink;

impl EventSink for NullSink {
    fn send(&self, _kind: &str, _data: Json, _route: Route) {}
}

/// The interrupt flag the worker clears at each prompt start and nodes poll.
#[derive(Default, Clone)]
pub struct InterruptFlag(Arc<AtomicBool>);

impl InterruptFlag {
    pub fn set(&self) {
        self.0.store(true, Ordering::SeqCst)
    }
    pub fn clear(&self) {
        self.0.store(false, Ordering::SeqCst)
    }
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The context of one node call.
pub struct ExecContext<'a> {
    pub env: &'a NodeEnv,
    pub prompt_id: &'a str,
    pub unique_id: &'a str,
    pub display_id: &'a str,
    /// The normalised prompt (the `PROMPT` hidden input).
    pub prompt: &'a Json,
    /// `extra_data.extra_pnginfo` (the `EXTRA_PNGINFO` hidden input).
    pub extra_pnginfo: Option<&'a Json>,
    pub events: &'a dyn EventSink,
    pub interrupt: &'a InterruptFlag,
}

impl ExecContext<'_> {
    /// Fails with `Interrupted` once an interrupt was requested: nodes call it between steps.
    pub fn check_interrupt(&self) -> Result<(), NodeError> {
        if self.interrupt.is_set() {
            Err(NodeError::Interrupted)
        } else {
            Ok(())
        }
    }

    /// Sends an RGB preview `[H, W, 3]` in 0..1, shrunk to fit 512 px, as JPEG (quality 95).
    pub fn preview(&self, rgb: &tch::Tensor) {
        let Ok(jpeg) = crate::imageio::preview_jpeg(rgb, 512) else {
            return;
        };
        let metadata = json!({
            "node_id": self.unique_id, "prompt_id": self.prompt_id, "display_node_id": self.display_id,
            "parent_node_id": null, "real_node_id": self.unique_id, "image_type": "image/jpeg",
        });
        self.events.preview(jpeg, metadata);
    }

    /// Shows `text` on this node in the frontend (ComfyUI's `send_progress_text`).
    pub fn progress_text(&self, text: &str) {
        self.events.progress_text(self.unique_id, text);
    }

    /// Reports progress (ComfyUI's `ProgressBar.update_absolute`) and honours interrupts.
    pub fn progress(&self, value: u64, max: u64) -> Result<(), NodeError> {
        self.check_interrupt()?;
        let state = json!({
            "prompt_id": self.prompt_id,
            "nodes": {self.unique_id: {
                "value": value, "max": max, "state": "running",
                "node_id": self.unique_id, "prompt_id": self.prompt_id,
                "display_node_id": self.display_id, "parent_node_id": null,
                "real_node_id": self.unique_id,
            }},
        });
        self.events
            .send("progress_state", state, Route::ClientOrBroadcast);
        let data = json!({"value": value, "max": max, "prompt_id": self.prompt_id, "node": self.unique_id});
        self.events.send("progress", data, Route::ClientOrBroadcast);
        Ok(())
    }
}
