//! ComfyUI's `PromptQueue`: a min-heap on `(number, prompt_id)`, one running item, and a
//! history capped at 10,000 entries, persisted through [`store::Store`].

pub mod jobs;
pub mod store;

use std::cmp::Ordering;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Result;
use indexmap::IndexMap;
use serde_json::{json, Value as Json};

use store::Store;

pub const MAX_HISTORY: usize = 10_000;

/// Comfy.org credentials a frontend puts in `extra_data` for API nodes. We run none, so they
/// are dropped on arrival: never stored, listed by `/queue` or written to history.
pub const SENSITIVE_EXTRA_DATA_KEYS: &[&str] = &["auth_token_comfy_org", "api_key_comfy_org"];

/// A queued prompt: `[number, prompt_id, prompt, extra_data, outputs_to_execute]`.
#[derive(Clone, Debug)]
pub struct QueueItem {
    pub number: Json,
    pub prompt_id: String,
    pub prompt: Json,
    pub extra_data: Json,
    pub outputs: Vec<String>,
}

impl QueueItem {
    pub fn to_json(&self) -> Json {
        json!([
            self.number,
            self.prompt_id,
            self.prompt,
            self.extra_data,
            self.outputs
        ])
    }

    pub fn from_json(v: &Json) -> Option<Self> {
        let a = v.as_array()?;
        Some(QueueItem {
            number: a.first()?.clone(),
            prompt_id: a.get(1)?.as_str()?.to_string(),
            prompt: a.get(2)?.clone(),
            extra_data: a.get(3)?.clone(),
            outputs: a
                .get(4)?
                .as_array()?
                .iter()
                .filter_map(|o| o.as_str().map(String::from))
                .collect(),
        })
    }

    fn order(&self, other: &Self) -> Ordering {
        let n = |v: &Json| v.as_f64().unwrap_or(0.0);
        n(&self.number)
            .total_cmp(&n(&other.number))
            .then_with(|| self.prompt_id.cmp(&other.prompt_id))
    }

    pub fn client_id(&self) -> Option<String> {
        self.extra_data
            .get("client_id")
            .and_then(Json::as_str)
            .map(String::from)
    }
}

/// Requests from `/free`, read by the worker between prompts.
#[derive(Default, Clone, Copy, Debug)]
pub struct FreeFlags {
    pub unload_models: bool,
    pub free_memory: bool,
}

#[derive(Default)]
struct State {
    pending: Vec<QueueItem>,
    running: Option<QueueItem>,
    history: IndexMap<String, (u64, Json)>,
    next_seq: u64,
    counter: i64,
    free: FreeFlags,
}

pub struct PromptQueue {
    state: Mutex<State>,
    wake: Condvar,
    store: Store,
}

impl PromptQueue {
    /// Opens the store and restores unfinished items (the running one included) and history.
    pub fn open(store: Store) -> Result<Self> {
        let loaded = store.load()?;
        let mut state = State::default();
        for item in loaded.pending.iter().filter_map(QueueItem::from_json) {
            let n = item.number.as_f64().unwrap_or(0.0);
            state.counter = state.counter.max(n.floor() as i64 + 1);
            state.pending.push(item);
        }
        for (seq, id, entry) in loaded.history {
            state.next_seq = state.next_seq.max(seq + 1);
            state.history.insert(id, (seq, entry));
        }
        Ok(PromptQueue {
            state: Mutex::new(state),
            wake: Condvar::new(),
            store,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next priority number (consumed even if validation then fails).
    pub fn next_number(&self, front: bool) -> i64 {
        let mut s = self.lock();
        let n = s.counter;
        s.counter += 1;
        if front {
            -n
        } else {
            n
        }
    }

    pub fn put(&self, item: QueueItem) -> Result<()> {
        self.store.add_pending(&item.prompt_id, &item.to_json())?;
        self.lock().pending.push(item);
        self.wake.notify_all();
        Ok(())
    }

    /// Waits up to `timeout` for an item and marks it running.
    pub fn take(&self, timeout: Duration) -> Option<QueueItem> {
        let mut s = self.lock();
        if s.pending.is_empty() {
            s = self
                .wake
                .wait_timeout(s, timeout)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let best = (0..s.pending.len()).min_by(|a, b| s.pending[*a].order(&s.pending[*b]))?;
        let item = s.pending.remove(best);
        s.running = Some(item.clone());
        Some(item)
    }

    /// Records a finished item's history entry and clears it from the queue.
    pub fn task_done(&self, prompt_id: &str, entry: Json) -> Result<()> {
        let mut s = self.lock();
        let mut dropped = Vec::new();
        if let Some((seq, _)) = s.history.shift_remove(prompt_id) {
            dropped.push(seq);
        }
        while s.history.len() >= MAX_HISTORY {
            if let Some((_, (seq, _))) = s.history.shift_remove_index(0) {
                dropped.push(seq);
            }
        }
        let seq = s.next_seq;
        s.next_seq += 1;
        self.store.finish(prompt_id, seq, &entry, &dropped)?;
        s.history.insert(prompt_id.to_string(), (seq, entry));
        s.running = None;
        Ok(())
    }

    pub fn remaining(&self) -> usize {
        let s = self.lock();
        s.pending.len() + usize::from(s.running.is_some())
    }

    pub fn running_id(&self) -> Option<String> {
        self.lock().running.as_ref().map(|r| r.prompt_id.clone())
    }

    pub fn contains(&self, prompt_id: &str) -> bool {
        let s = self.lock();
        s.pending.iter().any(|p| p.prompt_id == prompt_id)
            || s.running.as_ref().is_some_and(|r| r.prompt_id == prompt_id)
            || s.history.contains_key(prompt_id)
    }

    /// `(running, pending)` as `/queue` lists them.
    pub fn snapshot(&self) -> (Vec<Json>, Vec<Json>) {
        let s = self.lock();
        (
            s.running.iter().map(QueueItem::to_json).collect(),
            s.pending.iter().map(QueueItem::to_json).collect(),
        )
    }

    pub fn clear_pending(&self) -> Result<()> {
        let ids: Vec<String> = self.lock().pending.drain(..).map(|p| p.prompt_id).collect();
        self.store.remove_pending(&ids)
    }

    /// Removes pending items by id; returns how many went.
    pub fn delete_pending(&self, ids: &[String]) -> Result<usize> {
        let mut s = self.lock();
        let before = s.pending.len();
        s.pending.retain(|p| !ids.contains(&p.prompt_id));
        let removed = before - s.pending.len();
        drop(s);
        self.store.remove_pending(ids)?;
        Ok(removed)
    }

    /// History entries by ComfyUI's `max_items`/`offset` rules, oldest first.
    pub fn history(
        &self,
        max_items: Option<i64>,
        offset: Option<i64>,
    ) -> serde_json::Map<String, Json> {
        let s = self.lock();
        let len = s.history.len() as i64;
        let mut offset = offset.unwrap_or(-1);
        if offset < 0 {
            if let Some(m) = max_items {
                offset = len - m;
            }
        }
        let start = offset.clamp(0, len) as usize;
        let end = match max_items {
            Some(m) => (start as i64 + m.max(0)).min(len) as usize,
            None => len as usize,
        };
        s.history
            .iter()
            .skip(start)
            .take(end.saturating_sub(start))
            .map(|(k, (_, v))| (k.clone(), v.clone()))
            .collect()
    }

    /// Maps the running item and then every pending one (`running` tells which), without
    /// copying the prompts.
    pub fn map_queue<T>(&self, mut f: impl FnMut(&QueueItem, bool) -> T) -> Vec<T> {
        let s = self.lock();
        let running = s.running.iter().map(|r| (r, true));
        let pending = s.pending.iter().map(|p| (p, false));
        running.chain(pending).map(|(item, r)| f(item, r)).collect()
    }

    /// Maps every history entry, oldest first, without copying the entries.
    pub fn map_history<T>(&self, mut f: impl FnMut(&str, &Json) -> T) -> Vec<T> {
        let s = self.lock();
        s.history.iter().map(|(id, (_, v))| f(id, v)).collect()
    }

    pub fn history_entry(&self, prompt_id: &str) -> Option<Json> {
        self.lock().history.get(prompt_id).map(|(_, v)| v.clone())
    }

    pub fn delete_history(&self, ids: Option<&[String]>) -> Result<()> {
        let mut s = self.lock();
        let seqs: Vec<u64> = match ids {
            None => s.history.drain(..).map(|(_, (seq, _))| seq).collect(),
            Some(ids) => ids
                .iter()
                .filter_map(|id| s.history.shift_remove(id))
                .map(|(seq, _)| seq)
                .collect(),
        };
        drop(s);
        self.store.delete_history(&seqs)
    }

    pub fn request_free(&self, flags: FreeFlags) {
        let mut s = self.lock();
        s.free.unload_models |= flags.unload_models || flags.free_memory;
        s.free.free_memory |= flags.free_memory;
        drop(s);
        self.wake.notify_all();
    }

    pub fn take_free(&self) -> FreeFlags {
        std::mem::take(&mut self.lock().free)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(number: Json, id: &str) -> QueueItem {
        QueueItem {
            number,
            prompt_id: id.into(),
            prompt: json!({}),
            extra_data: json!({}),
            outputs: vec![],
        }
    }

    #[test]
    fn order_and_persistence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.redb");
        {
            let q = PromptQueue::open(Store::open(&path).unwrap()).unwrap();
            q.put(item(json!(2), "b")).unwrap();
            q.put(item(json!(1), "c")).unwrap();
            q.put(item(json!(-3), "front")).unwrap();
            q.put(item(json!(1.5), "float")).unwrap();
            assert_eq!(q.take(Duration::ZERO).unwrap().prompt_id, "front");
            q.task_done("front", json!({"x": 1})).unwrap();
            assert_eq!(q.take(Duration::ZERO).unwrap().prompt_id, "c");
            // "c" is running when the process dies.
        }
        let q = PromptQueue::open(Store::open(&path).unwrap()).unwrap();
        assert_eq!(q.remaining(), 3);
        assert_eq!(q.history_entry("front"), Some(json!({"x": 1})));
        let order: Vec<String> = (0..3)
            .map(|_| q.take(Duration::ZERO).unwrap().prompt_id)
            .collect();
        assert_eq!(order, ["c", "float", "b"]);
        assert!(q.next_number(false) >= 3);
    }

    #[test]
    fn history_slicing_follows_comfyui() {
        let dir = tempfile::tempdir().unwrap();
        let q = PromptQueue::open(Store::open(&dir.path().join("q.redb")).unwrap()).unwrap();
        for i in 0..5 {
            q.task_done(&format!("p{i}"), json!(i)).unwrap();
        }
        let keys = |m: serde_json::Map<String, Json>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(q.history(Some(2), None)), ["p3", "p4"]);
        assert_eq!(keys(q.history(Some(2), Some(1))), ["p1", "p2"]);
        assert_eq!(keys(q.history(None, Some(3))), ["p3", "p4"]);
        assert!(q.history(None, Some(9)).is_empty());
        assert_eq!(keys(q.history(Some(2), Some(-1))), ["p3", "p4"]);
        assert_eq!(q.history(None, None).len(), 5);
    }
}
