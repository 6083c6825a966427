//! Logic nodes (`comfy_extras/nodes_logic.py`): the If/Else switch whose branches are lazy, so
//! only the chosen one runs (the Wan 2.2 A14B templates switch between their LoRA and plain
//! models with it), and CustomCombo, a combo whose options the frontend defines.

use std::sync::Arc;

use crate::engine::context::{ExecContext, NodeEnv};
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeError, NodeOutput, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::Value;

/// The input the switch passes on.
fn branch(on: bool) -> &'static str {
    if on {
        "on_true"
    } else {
        "on_false"
    }
}

/// `check_lazy_status`: the branch the switch picks, while it is not evaluated.
fn switch_needs(i: &Inputs, _: &ExecContext) -> Vec<String> {
    let branch = branch(i.get("switch").is_some_and(|s| s.truthy()));
    if i.get(branch).is_none() {
        vec![branch.to_string()]
    } else {
        Vec::new()
    }
}

fn switch(i: &Inputs, _: &ExecContext) -> NodeResult {
    let branch = branch(i.boolean("switch")?);
    let value = i
        .get(branch)
        .cloned()
        .ok_or_else(|| NodeError::value(format!("the switch's {branch} input is not connected")))?;
    Ok(NodeOutput::one(value))
}

/// `CustomCombo`: the chosen text and the frontend's `index` of it (0 when not given).
fn custom_combo(i: &Inputs, _: &ExecContext) -> NodeResult {
    let index = match i.get("index") {
        Some(_) => i.int("index")?,
        None => 0,
    };
    Ok(NodeOutput::values(vec![
        Value::Str(i.string("choice")?),
        Value::Int(index as i128),
    ]))
}

pub fn register(r: &mut Registry) {
    let mut node = NodeDef::new("ComfySwitchNode", Style::V3, Arc::new(switch))
        .display("If/Else Switch")
        .category("utilities/logic")
        .module("comfy_extras.nodes_logic")
        .aliases(&["if", "then", "switch", "conditional", "branch"])
        .input(InputDef::boolean("switch"))
        .input(InputDef::match_type("on_false", "switch", true))
        .input(InputDef::match_type("on_true", "switch", true))
        .match_type_output("switch", "output")
        .lazy_check(Arc::new(switch_needs));
    node.experimental = true;
    r.add(node);
    // Its options live in the frontend, so ComfyUI's validation accepts any choice.
    let mut combo = NodeDef::new("CustomCombo", Style::V3, Arc::new(custom_combo))
        .display("Custom Combo")
        .category("utilities")
        .module("comfy_extras.nodes_logic")
        .input(InputDef::combo("choice", &[]))
        .named_output("STRING", "STRING")
        .named_output("INT", "INDEX")
        .validator(None, Arc::new(|_: &Inputs, _: &NodeEnv| Ok(())));
    combo.experimental = true;
    combo.accept_all_inputs = true;
    r.add(combo);
}
