//! Output caching between prompts, keyed by input signature (ComfyUI's
//! `CacheKeySetInputSignature`): a node's key covers its class, literal inputs and
//! `IS_CHANGED` value and those of all its ancestors, but not node ids.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::{json, Map, Value as Json};

use super::context::NodeEnv;
use super::graph::link_source;
use super::node::{Inputs, Section};
use super::registry::Registry;
use super::value::Value;

/// A node's cached result: output slots (each a list of values) and its UI record.
pub struct CacheEntry {
    pub outputs: Vec<Vec<Value>>,
    pub ui: Option<Json>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheMode {
    /// Keep only what the current prompt can use (ComfyUI's classic and default behaviour).
    Classic,
    /// `--cache-lru N`: keep up to N entries across prompts, oldest prompt generations first out.
    Lru(usize),
    /// `--cache-none`: nothing persists between prompts.
    None,
}

pub struct OutputCache {
    mode: CacheMode,
    entries: HashMap<String, (Arc<CacheEntry>, u64)>,
    generation: u64,
}

impl OutputCache {
    pub fn new(mode: CacheMode) -> Self {
        OutputCache {
            mode,
            entries: HashMap::new(),
            generation: 0,
        }
    }

    pub fn mode(&self) -> CacheMode {
        self.mode
    }

    /// Starts a prompt whose nodes have these keys, dropping what the mode says to drop.
    pub fn set_prompt(&mut self, keys: &HashSet<String>) {
        self.generation += 1;
        match self.mode {
            CacheMode::None => self.entries.clear(),
            CacheMode::Classic => self.entries.retain(|k, _| keys.contains(k)),
            CacheMode::Lru(max) => {
                for k in keys {
                    if let Some(e) = self.entries.get_mut(k) {
                        e.1 = self.generation;
                    }
                }
                while self.entries.len() > max {
                    let Some(oldest) = self.entries.values().map(|e| e.1).min() else {
                        break;
                    };
                    if oldest >= self.generation {
                        break;
                    }
                    self.entries.retain(|_, e| e.1 != oldest);
                }
            }
        }
    }

    pub fn get(&mut self, key: &str) -> Option<Arc<CacheEntry>> {
        let generation = self.generation;
        let e = self.entries.get_mut(key)?;
        e.1 = generation;
        Some(e.0.clone())
    }

    pub fn set(&mut self, key: String, entry: Arc<CacheEntry>) {
        if self.mode != CacheMode::None {
            self.entries.insert(key, (entry, self.generation));
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

/// Cache keys for every node of a prompt.
pub fn signatures(
    registry: &Registry,
    env: &NodeEnv,
    prompt: &Map<String, Json>,
    call_is_changed: bool,
) -> HashMap<String, String> {
    let immediate: HashMap<&String, Json> = prompt
        .iter()
        .map(|(id, node)| {
            (
                id,
                immediate_signature(registry, env, prompt, id, node, call_is_changed),
            )
        })
        .collect();
    prompt
        .keys()
        .map(|id| {
            let mut order: Vec<&String> = Vec::new();
            let mut index: HashMap<&String, usize> = HashMap::new();
            ancestry(prompt, id, &mut order, &mut index);
            let mut parts = vec![with_ancestors(&immediate[id], prompt, id, &index)];
            for a in &order {
                parts.push(with_ancestors(&immediate[a], prompt, a, &index));
            }
            (id.clone(), Json::Array(parts).to_string())
        })
        .collect()
}

fn ancestry<'a>(
    prompt: &'a Map<String, Json>,
    id: &str,
    order: &mut Vec<&'a String>,
    index: &mut HashMap<&'a String, usize>,
) {
    let Some(inputs) = prompt
        .get(id)
        .and_then(|n| n.get("inputs"))
        .and_then(Json::as_object)
    else {
        return;
    };
    let mut keys: Vec<&String> = inputs.keys().collect();
    keys.sort();
    for key in keys {
        let Some((src, _)) = link_source(&inputs[key]) else {
            continue;
        };
        let Some((src_key, _)) = prompt.get_key_value(&src) else {
            continue;
        };
        if !index.contains_key(src_key) {
            order.push(src_key);
            index.insert(src_key, order.len() - 1);
            ancestry(prompt, src_key, order, index);
        }
    }
}

/// `[class, is_changed, id?]` plus sorted inputs where links name ancestor positions.
fn with_ancestors(
    head: &Json,
    prompt: &Map<String, Json>,
    id: &str,
    index: &HashMap<&String, usize>,
) -> Json {
    let mut sig = head.as_array().cloned().unwrap_or_default();
    if let Some(inputs) = prompt
        .get(id)
        .and_then(|n| n.get("inputs"))
        .and_then(Json::as_object)
    {
        let mut keys: Vec<&String> = inputs.keys().collect();
        keys.sort();
        for key in keys {
            let v = &inputs[key];
            match link_source(v).and_then(|(src, slot)| index.get(&src).map(|i| (*i, slot))) {
                Some((i, slot)) => sig.push(json!([key, ["ANCESTOR", i, slot]])),
                None => sig.push(json!([key, canonical(v)])),
            }
        }
    }
    Json::Array(sig)
}

fn immediate_signature(
    registry: &Registry,
    env: &NodeEnv,
    prompt: &Map<String, Json>,
    id: &str,
    node: &Json,
    call_is_changed: bool,
) -> Json {
    let class_type = node.get("class_type").and_then(Json::as_str).unwrap_or("");
    let def = registry.get(class_type);
    let changed = match def.and_then(|d| d.is_changed.clone()) {
        Some(f) if call_is_changed => {
            let literals = literal_inputs(node, def.map(|d| d.as_ref()));
            // NaN in ComfyUI: a key that never equals itself, so the node always runs.
            f(&Inputs(literals), env)
                .unwrap_or_else(|| json!(["NaN", uuid::Uuid::new_v4().to_string()]))
        }
        _ => Json::Bool(false),
    };
    let mut head = vec![json!(class_type), changed];
    if def.is_some_and(|d| d.keyed_by_id()) {
        head.push(json!(id));
    }
    let _ = prompt;
    Json::Array(head)
}

/// The literal declared inputs of a prompt node (what `IS_CHANGED` and validators see).
pub fn literal_inputs(
    node: &Json,
    def: Option<&super::node::NodeDef>,
) -> indexmap::IndexMap<String, Value> {
    let mut out = indexmap::IndexMap::new();
    let Some(inputs) = node.get("inputs").and_then(Json::as_object) else {
        return out;
    };
    for (k, v) in inputs {
        let declared =
            def.is_none_or(|d| d.input_def(k).is_some_and(|i| i.section != Section::Hidden));
        if declared && link_source(v).is_none() {
            out.insert(k.clone(), Value::from_json(v));
        }
    }
    out
}

/// Objects with sorted keys, so equal literals give equal keys.
fn canonical(v: &Json) -> Json {
    match v {
        Json::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Json::Array(
                keys.into_iter()
                    .map(|k| json!([k, canonical(&m[k])]))
                    .collect(),
            )
        }
        Json::Array(a) => Json::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}
