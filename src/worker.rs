//! The prompt worker: one thread takes queued prompts in priority order, runs them, writes
//! history, then tells clients (`status`, then `executing` with `node: null`).

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Map, Value as Json};

use crate::engine::cache::CacheMode;
use crate::engine::context::{EventSink, Route};
use crate::engine::executor::{Executor, RunRequest};
use crate::queue::QueueItem;
use crate::server::hub::{Hub, Target};
use crate::server::state::AppState;

/// Routes one prompt's messages to its client (or everyone, where ComfyUI broadcasts).
pub struct ClientSink {
    pub hub: Arc<Hub>,
    pub client_id: Option<String>,
}

impl EventSink for ClientSink {
    fn send(&self, kind: &str, data: Json, route: Route) {
        match (&self.client_id, route) {
            (Some(sid), _) => self.hub.send(kind, data, Target::Sid(sid.clone())),
            (None, Route::ClientOrBroadcast) => self.hub.send(kind, data, Target::All),
            (None, Route::Client) => {}
        }
    }

    fn preview(&self, jpeg: Vec<u8>, metadata: Json) {
        let target = match &self.client_id {
            Some(sid) => Target::Sid(sid.clone()),
            None => Target::All,
        };
        self.hub.send_preview(jpeg, metadata, target);
    }

    /// Broadcast, as upstream's nodes call `send_progress_text` without a client id.
    fn progress_text(&self, node_id: &str, text: &str) {
        self.hub
            .send_binary(crate::server::hub::text_frame(node_id, text), Target::All);
    }
}

pub fn spawn(state: Arc<AppState>, mode: CacheMode) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("prompt-worker".into())
        .spawn(move || {
            let _no_grad = tch::no_grad_guard();
            let mut executor = Executor::new(state.registry.clone(), state.env.clone(), mode);
            loop {
                let free = state.queue.take_free();
                if free.free_memory {
                    executor.reset_cache();
                }
                if free.unload_models || free.free_memory {
                    state.env.models.unload_all();
                    crate::runtime::accel::empty_cache();
                }
                let Some(item) = state.queue.take(Duration::from_millis(500)) else {
                    continue;
                };
                state.broadcast_status();
                run_item(&state, &mut executor, &item);
            }
        })
        .expect("spawning the worker thread")
}

fn run_item(state: &AppState, executor: &mut Executor, item: &QueueItem) {
    state.interrupt.clear();
    let sink = ClientSink {
        hub: state.hub.clone(),
        client_id: item.client_id(),
    };
    let empty = Map::new();
    let prompt = item.prompt.as_object().unwrap_or(&empty);
    let req = RunRequest {
        prompt_id: &item.prompt_id,
        prompt,
        extra_data: &item.extra_data,
        outputs: &item.outputs,
    };
    let result = executor.execute(&req, &sink, &state.interrupt);

    let entry = json!({
        "prompt": item.to_json(),
        "outputs": result.outputs,
        "status": {"status_str": if result.success { "success" } else { "error" },
                   "completed": result.success, "messages": result.messages},
        "meta": result.meta,
    });
    if let Err(e) = state.queue.task_done(&item.prompt_id, entry) {
        log::error!("could not record history for {}: {e:#}", item.prompt_id);
    }
    state.broadcast_status();
    if let Some(sid) = item.client_id() {
        state.hub.send(
            "executing",
            json!({"node": null, "prompt_id": item.prompt_id}),
            Target::Sid(sid),
        );
    }
}
