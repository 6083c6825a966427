//! Runs one validated prompt (ComfyUI's `PromptExecutor.execute_async`): cache lookup,
//! scheduling, lazy inputs, list mapping, progress, errors and interrupt.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use indexmap::IndexMap;
use serde_json::{json, Map, Value as Json};

use super::cache::{signatures, CacheEntry, CacheMode, OutputCache};
use super::context::{EventSink, ExecContext, InterruptFlag, NodeEnv, Route};
use super::graph::{link_source, ExecutionList};
use super::node::{Inputs, NodeDef, NodeError, Section};
use super::registry::Registry;
use super::value::Value;

/// One prompt to run.
pub struct RunRequest<'a> {
    pub prompt_id: &'a str,
    pub prompt: &'a Map<String, Json>,
    pub extra_data: &'a Json,
    pub outputs: &'a [String],
}

/// What history records of a run.
pub struct RunResult {
    pub outputs: Map<String, Json>,
    pub meta: Map<String, Json>,
    pub messages: Vec<Json>,
    pub success: bool,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Keeps the output cache between prompts.
pub struct Executor {
    pub registry: Arc<Registry>,
    pub env: Arc<NodeEnv>,
    cache: OutputCache,
}

enum Step {
    Done,
    /// The node asked for lazy inputs first.
    Needs(Vec<String>),
}

struct Failure {
    node_id: String,
    error: NodeError,
    inputs: Map<String, Json>,
}

struct Run<'a> {
    req: &'a RunRequest<'a>,
    sink: &'a dyn EventSink,
    interrupt: &'a InterruptFlag,
    prompt_json: Json,
    sigs: HashMap<String, String>,
    values: HashMap<String, Arc<CacheEntry>>,
    ui_outputs: Map<String, Json>,
    meta: Map<String, Json>,
    executed: Vec<String>,
    messages: Vec<Json>,
    progress: Map<String, Json>,
}

impl Run<'_> {
    fn message(&mut self, kind: &str, mut data: Json, route: Route) {
        data["timestamp"] = json!(now_ms());
        self.messages.push(json!([kind, data.clone()]));
        self.sink.send(kind, data, route);
    }

    fn node_state(&mut self, id: &str, state: &str) {
        let (value, max) = match state {
            "finished" => (1, 1),
            _ => (0, 1),
        };
        self.progress.insert(
            id.to_string(),
            json!({"value": value, "max": max, "state": state, "node_id": id, "prompt_id": self.req.prompt_id,
                   "display_node_id": id, "parent_node_id": null, "real_node_id": id}),
        );
        let data = json!({"prompt_id": self.req.prompt_id, "nodes": self.progress});
        self.sink
            .send("progress_state", data, Route::ClientOrBroadcast);
    }

    fn record_ui(&mut self, id: &str, ui: &Json) {
        self.ui_outputs.insert(id.to_string(), ui.clone());
        self.meta.insert(
            id.to_string(),
            json!({"node_id": id, "display_node": id, "parent_node": null, "real_node_id": id}),
        );
        let data =
            json!({"node": id, "display_node": id, "output": ui, "prompt_id": self.req.prompt_id});
        self.sink.send("executed", data, Route::Client);
    }
}

impl Executor {
    pub fn new(registry: Arc<Registry>, env: Arc<NodeEnv>, mode: CacheMode) -> Self {
        Executor {
            registry,
            env,
            cache: OutputCache::new(mode),
        }
    }

    /// `/free` with `free_memory`: forget every cached output.
    pub fn reset_cache(&mut self) {
        self.cache.clear();
    }

    pub fn execute(
        &mut self,
        req: &RunRequest,
        sink: &dyn EventSink,
        interrupt: &InterruptFlag,
    ) -> RunResult {
        let caching = self.cache.mode() != CacheMode::None;
        let mut run = Run {
            req,
            sink,
            interrupt,
            prompt_json: Json::Object(req.prompt.clone()),
            sigs: signatures(&self.registry, &self.env, req.prompt, caching),
            values: HashMap::new(),
            ui_outputs: Map::new(),
            meta: Map::new(),
            executed: Vec::new(),
            messages: Vec::new(),
            progress: Map::new(),
        };
        run.message(
            "execution_start",
            json!({"prompt_id": req.prompt_id}),
            Route::Client,
        );
        let keys: HashSet<String> = run.sigs.values().cloned().collect();
        self.cache.set_prompt(&keys);
        let mut cached_nodes = Vec::new();
        for id in req.prompt.keys() {
            if let Some(entry) = self.cache.get(&run.sigs[id]) {
                cached_nodes.push(json!(id));
                run.values.insert(id.clone(), entry);
            }
        }
        run.message(
            "execution_cached",
            json!({"nodes": cached_nodes, "prompt_id": req.prompt_id}),
            Route::Client,
        );

        let registry = self.registry.clone();
        let mut list = ExecutionList::new(req.prompt, &registry);
        let cached_ids: HashSet<String> = run.values.keys().cloned().collect();
        // Cached output nodes still go through the list so their UI is re-sent.
        let is_cached = |id: &str| cached_ids.contains(id) && !is_output(&registry, req.prompt, id);
        for o in req.outputs {
            list.add_node(o, &is_cached);
        }

        let mut failure = None;
        while !list.is_empty() {
            let Some(id) = list.stage() else {
                let node_id = list.cycle_member().unwrap_or_default();
                let error =
                    NodeError::new("graph.DependencyCycleError", "Dependency cycle detected");
                failure = Some(Failure {
                    node_id,
                    error,
                    inputs: Map::new(),
                });
                break;
            };
            match self.execute_node(&mut run, &id) {
                Ok(Step::Done) => list.complete(&id),
                Ok(Step::Needs(names)) => {
                    for n in names {
                        list.make_input_strong_link(&id, &n, &is_cached);
                    }
                }
                Err(f) => {
                    failure = Some(f);
                    break;
                }
            }
        }

        let success = failure.is_none();
        match failure {
            None => run.message(
                "execution_success",
                json!({"prompt_id": req.prompt_id}),
                Route::Client,
            ),
            Some(f) => self.report_failure(&mut run, f),
        }
        RunResult {
            outputs: run.ui_outputs,
            meta: run.meta,
            messages: run.messages,
            success,
        }
    }

    fn report_failure(&self, run: &mut Run, f: Failure) {
        let node_type = run
            .req
            .prompt
            .get(&f.node_id)
            .and_then(|n| n.get("class_type"))
            .cloned()
            .unwrap_or(Json::Null);
        let executed: Vec<&String> = run.executed.iter().collect();
        match f.error {
            NodeError::Interrupted => {
                let data = json!({"prompt_id": run.req.prompt_id, "node_id": f.node_id, "node_type": node_type, "executed": executed});
                run.message("execution_interrupted", data, Route::ClientOrBroadcast);
            }
            NodeError::Failed {
                exception_type,
                message,
            } => {
                let current_outputs: Vec<&String> = if self.cache.mode() == CacheMode::None {
                    Vec::new()
                } else {
                    run.req.prompt.keys().collect()
                };
                let data = json!({
                    "prompt_id": run.req.prompt_id, "node_id": f.node_id, "node_type": node_type,
                    "executed": executed, "exception_message": format!("{message}\n"),
                    "exception_type": exception_type,
                    "traceback": [format!("  videosdgx node '{}' ({})\n", f.node_id, node_type.as_str().unwrap_or(""))],
                    "current_inputs": f.inputs, "current_outputs": current_outputs,
                });
                run.message("execution_error", data, Route::Client);
            }
        }
    }

    fn execute_node(&mut self, run: &mut Run, id: &str) -> Result<Step, Failure> {
        let node = &run.req.prompt[id];
        let class_type = node["class_type"].as_str().unwrap_or_default();
        let def = self
            .registry
            .get(class_type)
            .cloned()
            .expect("validated prompts name known classes");
        let sig = run.sigs[id].clone();

        if let Some(entry) = self.cache.get(&sig) {
            if let Some(ui) = &entry.ui {
                run.record_ui(id, ui);
            }
            run.values.insert(id.to_string(), entry);
            run.node_state(id, "finished");
            return Ok(Step::Done);
        }

        run.node_state(id, "running");
        let inputs = gather_inputs(&def, node, &run.values);
        let fail = |error: NodeError, inputs: &IndexMap<String, Vec<Value>>| Failure {
            node_id: id.to_string(),
            error,
            inputs: report_inputs(inputs),
        };
        run.sink.send(
            "executing",
            json!({"node": id, "display_node": id, "prompt_id": run.req.prompt_id}),
            Route::Client,
        );

        let extra_pnginfo = run.req.extra_data.get("extra_pnginfo");
        let ctx = ExecContext {
            env: &self.env,
            prompt_id: run.req.prompt_id,
            unique_id: id,
            display_id: id,
            prompt: &run.prompt_json,
            extra_pnginfo,
            events: run.sink,
            interrupt: run.interrupt,
        };

        if let Some(check) = &def.check_lazy {
            let mut needed = Vec::new();
            for call in calls(&def, &inputs) {
                if run.interrupt.is_set() {
                    return Err(fail(NodeError::Interrupted, &inputs));
                }
                needed.extend(check(&call, &ctx));
            }
            let linked = node.get("inputs").and_then(Json::as_object);
            needed.retain(|n| {
                !inputs.contains_key(n)
                    && linked
                        .and_then(|l| l.get(n))
                        .and_then(link_source)
                        .is_some()
            });
            needed.dedup();
            if !needed.is_empty() {
                return Ok(Step::Needs(needed));
            }
        }

        let mut results = Vec::new();
        for call in calls(&def, &inputs) {
            if run.interrupt.is_set() {
                return Err(fail(NodeError::Interrupted, &inputs));
            }
            // A panicking node (e.g. a libtorch shape error) fails its prompt, not the worker.
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                (def.function)(&call, &ctx)
            }))
            .unwrap_or_else(|payload| Err(NodeError::from_panic(&panic_message(payload.as_ref()))))
            .map_err(|e| fail(e, &inputs))?;
            if out.values.len() != def.outputs.len() {
                let msg = format!(
                    "{class_type} returned {} values for {} outputs",
                    out.values.len(),
                    def.outputs.len()
                );
                return Err(fail(NodeError::runtime(msg), &inputs));
            }
            results.push(out);
        }

        let mut outputs: Vec<Vec<Value>> = vec![Vec::new(); def.outputs.len()];
        let mut ui: Option<Map<String, Json>> = None;
        for r in results {
            for (slot, value) in r.values.into_iter().enumerate() {
                match (def.outputs[slot].is_list, value) {
                    (true, Value::List(items)) => outputs[slot].extend(items),
                    (_, v) => outputs[slot].push(v),
                }
            }
            if let Some(call_ui) = r.ui {
                let merged = ui.get_or_insert_with(Map::new);
                for (k, v) in call_ui {
                    let slot = merged.entry(k).or_insert_with(|| json!([]));
                    match (slot.as_array_mut(), v) {
                        (Some(list), Json::Array(items)) => list.extend(items),
                        (Some(list), other) => list.push(other),
                        _ => {}
                    }
                }
            }
        }
        let ui = ui.map(Json::Object);
        if let Some(ui) = &ui {
            run.record_ui(id, ui);
        }
        let entry = Arc::new(CacheEntry { outputs, ui });
        self.cache.set(sig, entry.clone());
        run.values.insert(id.to_string(), entry);
        run.executed.push(id.to_string());
        run.node_state(id, "finished");
        Ok(Step::Done)
    }
}

fn is_output(registry: &Registry, prompt: &Map<String, Json>, id: &str) -> bool {
    let class = prompt.get(id).and_then(|n| n["class_type"].as_str());
    class
        .and_then(|c| registry.get(c))
        .is_some_and(|d| d.output_node)
}

/// Each input as a list: links give the source slot's list, declared literals one value.
/// Undeclared literals are dropped unless the node accepts all inputs; undeclared links pass
/// through (variadic nodes).
fn gather_inputs(
    def: &NodeDef,
    node: &Json,
    values: &HashMap<String, Arc<CacheEntry>>,
) -> IndexMap<String, Vec<Value>> {
    let mut out = IndexMap::new();
    let Some(inputs) = node.get("inputs").and_then(Json::as_object) else {
        return out;
    };
    for (name, v) in inputs {
        let declared = def
            .input_def(name)
            .is_some_and(|i| i.section != Section::Hidden);
        match link_source(v) {
            Some((src, slot)) => {
                if let Some(list) = values.get(&src).and_then(|e| e.outputs.get(slot)) {
                    out.insert(name.clone(), list.clone());
                }
            }
            None if declared || def.accept_all_inputs => {
                out.insert(name.clone(), vec![Value::from_json(v)]);
            }
            None => {}
        }
    }
    out
}

/// The calls of a node: one with whole lists for `INPUT_IS_LIST`, else one per list index
/// (shorter lists repeat their last item).
fn calls(def: &NodeDef, inputs: &IndexMap<String, Vec<Value>>) -> Vec<Inputs> {
    if def.input_is_list {
        let whole = inputs
            .iter()
            .map(|(k, v)| (k.clone(), Value::List(v.clone())))
            .collect();
        return vec![Inputs(whole)];
    }
    let n = inputs.values().map(Vec::len).max().unwrap_or(0).max(1);
    (0..n)
        .map(|i| {
            let call = inputs
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.clone(), v[i.min(v.len() - 1)].clone()))
                .collect();
            Inputs(call)
        })
        .collect()
}

fn report_inputs(inputs: &IndexMap<String, Vec<Value>>) -> Map<String, Json> {
    inputs
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                Json::Array(v.iter().map(Value::to_report_json).collect()),
            )
        })
        .collect()
}

/// The text a panic carried (`panic!` with a message, or libtorch's error).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "the node panicked".to_string())
}
