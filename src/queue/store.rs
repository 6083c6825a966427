//! The queue and history on disk (redb), so a crash or `kill -9` loses nothing: an item
//! stays in `pending` until its history entry is written in the same transaction.

use std::path::Path;

use anyhow::{Context, Result};
use redb::{Database, ReadableTable, TableDefinition};
use serde_json::Value as Json;

const PENDING: TableDefinition<&str, &str> = TableDefinition::new("pending");
const HISTORY: TableDefinition<u64, &str> = TableDefinition::new("history");

pub struct Store {
    db: Database,
}

/// What a restart finds: unfinished items and history `(seq, prompt_id, entry)` in order.
pub struct Loaded {
    pub pending: Vec<Json>,
    pub history: Vec<(u64, String, Json)>,
}

impl Store {
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let db = Database::create(path)
            .with_context(|| format!("opening queue store {}", path.display()))?;
        let tx = db.begin_write()?;
        tx.open_table(PENDING)?;
        tx.open_table(HISTORY)?;
        tx.commit()?;
        Ok(Store { db })
    }

    pub fn load(&self) -> Result<Loaded> {
        let tx = self.db.begin_read()?;
        let mut pending = Vec::new();
        for row in tx.open_table(PENDING)?.iter()? {
            let (_, v) = row?;
            if let Ok(item) = serde_json::from_str(v.value()) {
                pending.push(item);
            }
        }
        let mut history = Vec::new();
        for row in tx.open_table(HISTORY)?.iter()? {
            let (k, v) = row?;
            if let Ok(Json::Array(pair)) = serde_json::from_str::<Json>(v.value()) {
                if let [Json::String(id), entry] = &pair[..] {
                    history.push((k.value(), id.clone(), entry.clone()));
                }
            }
        }
        Ok(Loaded { pending, history })
    }

    pub fn add_pending(&self, prompt_id: &str, item: &Json) -> Result<()> {
        let tx = self.db.begin_write()?;
        tx.open_table(PENDING)?
            .insert(prompt_id, item.to_string().as_str())?;
        tx.commit()?;
        Ok(())
    }

    pub fn remove_pending(&self, ids: &[String]) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(PENDING)?;
            for id in ids {
                t.remove(id.as_str())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Atomically: the item leaves `pending`, its entry joins history, `dropped` leave history.
    pub fn finish(&self, prompt_id: &str, seq: u64, entry: &Json, dropped: &[u64]) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            tx.open_table(PENDING)?.remove(prompt_id)?;
            let mut h = tx.open_table(HISTORY)?;
            for s in dropped {
                h.remove(*s)?;
            }
            let row = serde_json::json!([prompt_id, entry]).to_string();
            h.insert(seq, row.as_str())?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn delete_history(&self, seqs: &[u64]) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut h = tx.open_table(HISTORY)?;
            for s in seqs {
                h.remove(*s)?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}
