//! LotusConditioning (`comfy_extras/nodes_lotus.py`): Lotus-D's fixed prompt, the empty prompt's
//! OpenCLIP-H text states, as a conditioning.

use std::sync::Arc;

use crate::engine::context::ExecContext;
use crate::engine::node::{Inputs, NodeDef, NodeOutput, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::models::sdxl::lotus::null_prompt;
use crate::sampling::model::{CondEntry, Conditioning};

fn lotus_conditioning(_: &Inputs, _: &ExecContext) -> NodeResult {
    let cond = Conditioning(vec![CondEntry::new(null_prompt())]);
    Ok(NodeOutput::one(Value::object(cond)))
}

pub fn register(r: &mut Registry) {
    r.add(
        NodeDef::new("LotusConditioning", Style::V3, Arc::new(lotus_conditioning))
            .category("model/conditioning/lotus")
            .module("comfy_extras.nodes_lotus")
            .named_output("CONDITIONING", "conditioning"),
    );
}
