//! What every route and the worker share.

use std::sync::Arc;

use serde_json::json;

use super::hub::{Hub, Target};
use crate::cli::Args;
use crate::engine::context::{InterruptFlag, NodeEnv};
use crate::engine::registry::Registry;
use crate::paths::Paths;
use crate::queue::PromptQueue;

pub struct AppState {
    pub args: Args,
    pub paths: Arc<Paths>,
    pub env: Arc<NodeEnv>,
    pub registry: Arc<Registry>,
    pub queue: Arc<PromptQueue>,
    pub hub: Arc<Hub>,
    pub interrupt: InterruptFlag,
    pub max_body: usize,
    pub frontend: super::frontend::Frontend,
}

impl AppState {
    pub fn status_data(&self) -> serde_json::Value {
        json!({"status": {"exec_info": {"queue_remaining": self.queue.remaining()}}})
    }

    /// The `status` broadcast ComfyUI sends after every queue change.
    pub fn broadcast_status(&self) {
        self.hub.send("status", self.status_data(), Target::All);
    }
}
