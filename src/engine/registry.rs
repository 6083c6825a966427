//! The registered node classes, in registration order (the order of `/object_info`).

use std::sync::Arc;

use indexmap::IndexMap;

use super::node::NodeDef;

#[derive(Default)]
pub struct Registry {
    defs: IndexMap<String, Arc<NodeDef>>,
}

impl Registry {
    pub fn add(&mut self, def: NodeDef) {
        let def = def.finalized();
        self.defs.insert(def.name.clone(), Arc::new(def));
    }
    pub fn get(&self, name: &str) -> Option<&Arc<NodeDef>> {
        self.defs.get(name)
    }
    pub fn iter(&self) -> impl Iterator<Item = &Arc<NodeDef>> {
        self.defs.values()
    }
}
