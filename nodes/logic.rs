//! Logic nodes (`comfy_extras/nodes_logic.py`): the If/Else switch whose branches are lazy, so
//! only the chosen one runs (the Wan 2.2 A14B templates switch between their LoRA and plain
//! models with it), CustomCombo, a combo whose options the frontend defines, and
//! ResolutionSelector (`nodes_resolution.py`); And, Or and Not with Python's truthiness.

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

/// Python's `bool(value)`: a tensor is true or false only when it holds exactly one value.
fn python_bool(value: &Value) -> Result<bool, NodeError> {
    if let Value::Tensor(t) = value {
        match t.numel() {
            1 => {}
            0 => {
                return Err(NodeError::runtime(
                    "Boolean value of Tensor with no values is ambiguous",
                ))
            }
            _ => {
                return Err(NodeError::runtime(
                    "Boolean value of Tensor with more than one value is ambiguous",
                ))
            }
        }
    }
    Ok(value.truthy())
}

/// The values connected to And/Or's Autogrow (`values.value0` …), in order.
fn grown_values(i: &Inputs) -> impl Iterator<Item = &Value> {
    (0..LOGIC_INPUTS).filter_map(move |n| i.get(&format!("values.value{n}")))
}

/// Upstream's Autogrow of And and Or: `value0` … `value9`.
const LOGIC_INPUTS: usize = 10;

fn and(i: &Inputs, _: &ExecContext) -> NodeResult {
    let mut all = true;
    for value in grown_values(i) {
        // `all` stops at the first false value, as Python's does.
        if !python_bool(value)? {
            all = false;
            break;
        }
    }
    Ok(NodeOutput::one(Value::Bool(all)))
}

fn or(i: &Inputs, _: &ExecContext) -> NodeResult {
    let mut any = false;
    for value in grown_values(i) {
        if python_bool(value)? {
            any = true;
            break;
        }
    }
    Ok(NodeOutput::one(Value::Bool(any)))
}

fn not(i: &Inputs, _: &ExecContext) -> NodeResult {
    let value = i
        .get("value")
        .cloned()
        .unwrap_or(Value::Json(serde_json::Value::Null));
    Ok(NodeOutput::one(Value::Bool(!python_bool(&value)?)))
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

/// ResolutionSelector's aspect ratios: the label and (width, height) parts.
const ASPECTS: [(&str, (f64, f64)); 8] = [
    ("1:1 (Square)", (1.0, 1.0)),
    ("2:3 (Portrait Photo)", (2.0, 3.0)),
    ("3:2 (Photo)", (3.0, 2.0)),
    ("3:4 (Portrait Standard)", (3.0, 4.0)),
    ("4:3 (Standard)", (4.0, 3.0)),
    ("9:16 (Portrait Widescreen)", (9.0, 16.0)),
    ("16:9 (Widescreen)", (16.0, 9.0)),
    ("21:9 (Ultrawide)", (21.0, 9.0)),
];

/// `ResolutionSelector`: width and height of about `megapixels` at the aspect ratio, each the
/// nearest multiple of `multiple` (Python's rounding).
fn resolution(i: &Inputs, _: &ExecContext) -> NodeResult {
    let label = i.string("aspect_ratio")?;
    let (w, h) = ASPECTS
        .iter()
        .find(|(l, _)| *l == label)
        .map(|(_, parts)| *parts)
        .ok_or_else(|| NodeError::new("KeyError", format!("'{label}'")))?;
    let multiple = i.int("multiple")? as f64;
    let scale = (i.float("megapixels")? * 1024.0 * 1024.0 / (w * h)).sqrt();
    let side = |part: f64| (part * scale / multiple).round_ties_even() as i128 * multiple as i128;
    Ok(NodeOutput::values(vec![
        Value::Int(side(w)),
        Value::Int(side(h)),
    ]))
}

pub fn register(r: &mut Registry) {
    let logic = |name: &str, display: &str, f: fn(&Inputs, &ExecContext) -> NodeResult| {
        NodeDef::builtin(name, Style::V3, display, "utilities/logic", f)
            .module("comfy_extras.nodes_logic")
    };
    let any = |name: &str| InputDef::new(name, "*");
    let truthiness = |rule: &str| format!("{rule}. Uses Python's rules for truthiness.");
    r.add(
        logic("ComfyNotNode", "Not", not)
            .description(&truthiness(
                "Logical NOT operation. Returns true if the value is falsy",
            ))
            .aliases(&["invert", "toggle", "negate", "flip boolean"])
            .input(any("value"))
            .output("BOOLEAN"),
    );
    let grown = || InputDef::autogrow_prefix("values", any("value"), "value", 1, LOGIC_INPUTS);
    r.add(
        logic("ComfyAndNode", "And", and)
            .description(&truthiness(
                "Logical AND operation. Returns true if all of the values are truthy",
            ))
            .aliases(&["all", "every"])
            .input(grown())
            .output("BOOLEAN"),
    );
    r.add(
        logic("ComfyOrNode", "Or", or)
            .description(&truthiness(
                "Logical OR operation. Returns true if any of the values are truthy",
            ))
            .aliases(&["any", "some"])
            .input(grown())
            .output("BOOLEAN"),
    );
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
    let labels: Vec<&str> = ASPECTS.iter().map(|(l, _)| *l).collect();
    r.add(
        NodeDef::new("ResolutionSelector", Style::V3, Arc::new(resolution))
            .display("Resolution Selector")
            .category("utilities")
            .module("comfy_extras.nodes_resolution")
            .description(
                "Calculate width and height from aspect ratio and megapixel target. Useful for \
                 setting up Empty Latent Image dimensions.",
            )
            .input(
                InputDef::combo("aspect_ratio", &labels)
                    .tooltip("The aspect ratio for the output dimensions.")
                    .default("1:1 (Square)"),
            )
            .input(
                InputDef::float("megapixels")
                    .tooltip("Target total megapixels. 1.0 MP ≈ 1024x1024 for square.")
                    .default_float(1.0)
                    .min_float(0.1)
                    .max_float(16.0)
                    .step_float(0.1),
            )
            .input(
                InputDef::int("multiple")
                    .tooltip("Nearest multiple of the result to set the selected resolution to.")
                    .opt("advanced", serde_json::json!(true))
                    .default(8)
                    .min(8)
                    .max(128)
                    .step(4),
            )
            .named_output("INT", "width")
            .output_tooltip("Calculated width in pixels multiplied by the selected multiple.")
            .named_output("INT", "height")
            .output_tooltip("Calculated height in pixels multiplied by the selected multiple."),
    );
}
