//! Which node runs next (ComfyUI's `ExecutionList`): dependencies block their consumers,
//! lazy links block only once a node asks for them, and among ready nodes the ones closest
//! to an output go first so results appear early.

use std::collections::{HashMap, HashSet};

use indexmap::IndexSet;
use serde_json::{Map, Value as Json};

use super::registry::Registry;
use crate::pyjson;

/// `[source_id, slot]` when a prompt input value is a link.
pub fn link_source(v: &Json) -> Option<(String, usize)> {
    let arr = v.as_array()?;
    if arr.len() != 2 {
        return None;
    }
    let id = arr[0].as_str()?;
    let slot = match &arr[1] {
        Json::Number(n) => pyjson::as_i128(n).and_then(|s| usize::try_from(s).ok())?,
        _ => return None,
    };
    Some((id.to_string(), slot))
}

pub struct ExecutionList<'a> {
    prompt: &'a Map<String, Json>,
    registry: &'a Registry,
    pending: IndexSet<String>,
    block_count: HashMap<String, usize>,
    /// source → the consumers it blocks.
    blocking: HashMap<String, HashSet<String>>,
}

impl<'a> ExecutionList<'a> {
    pub fn new(prompt: &'a Map<String, Json>, registry: &'a Registry) -> Self {
        ExecutionList {
            prompt,
            registry,
            pending: IndexSet::new(),
            block_count: HashMap::new(),
            blocking: HashMap::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    fn inputs(&self, id: &str) -> Option<&'a Map<String, Json>> {
        self.prompt.get(id)?.get("inputs")?.as_object()
    }

    fn is_lazy(&self, id: &str, input: &str) -> bool {
        let class = self.prompt.get(id).and_then(|n| n["class_type"].as_str());
        class
            .and_then(|c| self.registry.get(c))
            .and_then(|d| d.input_def(input))
            .is_some_and(|i| i.is_lazy())
    }

    /// Schedules `root` and, transitively, every uncached non-lazy dependency.
    pub fn add_node(&mut self, root: &str, is_cached: &dyn Fn(&str) -> bool) {
        let mut stack = vec![root.to_string()];
        let mut links = Vec::new();
        while let Some(id) = stack.pop() {
            if self.pending.contains(&id) {
                continue;
            }
            self.pending.insert(id.clone());
            self.block_count.insert(id.clone(), 0);
            let Some(inputs) = self.inputs(&id) else {
                continue;
            };
            for (name, value) in inputs {
                let Some((src, _)) = link_source(value) else {
                    continue;
                };
                if !self.prompt.contains_key(&src) || self.is_lazy(&id, name) {
                    continue;
                }
                if !is_cached(&src) {
                    stack.push(src.clone());
                }
                links.push((src, id.clone()));
            }
        }
        for (src, dst) in links {
            self.add_strong_link(&src, &dst, is_cached);
        }
    }

    fn add_strong_link(&mut self, src: &str, dst: &str, is_cached: &dyn Fn(&str) -> bool) {
        if is_cached(src) {
            return;
        }
        self.add_node(src, is_cached);
        if self
            .blocking
            .entry(src.to_string())
            .or_default()
            .insert(dst.to_string())
        {
            *self.block_count.entry(dst.to_string()).or_default() += 1;
        }
    }

    /// Makes a lazy input of `id` a real dependency (the node asked for it).
    pub fn make_input_strong_link(
        &mut self,
        id: &str,
        input: &str,
        is_cached: &dyn Fn(&str) -> bool,
    ) {
        let Some(src) = self
            .inputs(id)
            .and_then(|i| i.get(input))
            .and_then(link_source)
        else {
            return;
        };
        if self.prompt.contains_key(&src.0) {
            self.add_strong_link(&src.0, id, is_cached);
        }
    }

    fn is_output(&self, id: &str) -> bool {
        let class = self.prompt.get(id).and_then(|n| n["class_type"].as_str());
        class
            .and_then(|c| self.registry.get(c))
            .is_some_and(|d| d.output_node)
    }

    fn feeds_output(&self, id: &str, hops: usize) -> bool {
        let Some(consumers) = self.blocking.get(id) else {
            return false;
        };
        consumers
            .iter()
            .any(|c| self.is_output(c) || (hops > 1 && self.feeds_output(c, hops - 1)))
    }

    /// The next node to run, or `None` when nothing is ready (done, or a cycle).
    pub fn stage(&self) -> Option<String> {
        let ready: Vec<&String> = self
            .pending
            .iter()
            .filter(|n| self.block_count.get(*n) == Some(&0))
            .collect();
        let pick = ready
            .iter()
            .find(|n| self.is_output(n))
            .or_else(|| ready.iter().find(|n| self.feeds_output(n, 1)))
            .or_else(|| ready.iter().find(|n| self.feeds_output(n, 2)))
            .or_else(|| ready.first());
        pick.map(|s| s.to_string())
    }

    /// Marks `id` done and releases the nodes it blocked.
    pub fn complete(&mut self, id: &str) {
        self.pending.shift_remove(id);
        if let Some(consumers) = self.blocking.remove(id) {
            for c in consumers {
                if let Some(count) = self.block_count.get_mut(&c) {
                    *count = count.saturating_sub(1);
                }
            }
        }
    }

    /// A node still blocked when nothing is ready: the first node of the cycle.
    pub fn cycle_member(&self) -> Option<String> {
        self.pending.first().cloned()
    }
}
