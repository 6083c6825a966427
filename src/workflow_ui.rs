//! UI-format workflows (the frontend's `nodes`/`links` JSON) to API-format prompts, doing
//! server-side what the frontend's `graphToPrompt` does: widget values by input order,
//! links (through Reroutes and bypassed nodes), PrimitiveNode values, muted nodes dropped,
//! subgraphs expanded (`workflow_subgraph.rs`).

use std::collections::HashMap;

use anyhow::{bail, Result};
use serde_json::{json, Map, Value as Json};

use crate::engine::node::{InputDef, NodeDef, Section};
use crate::engine::registry::Registry;

/// Whether a workflow file is UI format.
pub fn is_ui_format(v: &Json) -> bool {
    v.get("nodes").is_some_and(Json::is_array) && v.get("links").is_some()
}

struct Link {
    origin: String,
    slot: i64,
}

fn links_by_id(workflow: &Json) -> HashMap<i64, Link> {
    let mut out = HashMap::new();
    for l in workflow["links"].as_array().into_iter().flatten() {
        let (id, origin, slot) = match l {
            Json::Array(a) if a.len() >= 3 => (a[0].as_i64(), a[1].clone(), a[2].as_i64()),
            Json::Object(o) => (
                o.get("id").and_then(Json::as_i64),
                o.get("origin_id").cloned().unwrap_or(Json::Null),
                o.get("origin_slot").and_then(Json::as_i64),
            ),
            _ => continue,
        };
        if let (Some(id), Some(slot)) = (id, slot) {
            out.insert(
                id,
                Link {
                    origin: id_string(&origin),
                    slot,
                },
            );
        }
    }
    out
}

fn id_string(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

const VIRTUAL: &[&str] = &["Reroute", "PrimitiveNode", "Note", "MarkdownNote"];

/// A node's widget values by input name, as its definition lays the widgets out.
fn widget_inputs(def: &NodeDef, node: &Json) -> Map<String, Json> {
    let mut inputs = Map::new();
    let widgets = node["widgets_values"].clone();
    let mut position = 0usize;
    // The frontend lays widgets out as object_info lists the inputs: required, then optional.
    let in_section = |section: Section| def.inputs.iter().filter(move |i| i.section == section);
    for input in in_section(Section::Required).chain(in_section(Section::Optional)) {
        take_input(input, &input.name, &widgets, &mut position, &mut inputs);
    }
    inputs
}

/// One input's widget values under `name`; a DynamicCombo takes its key, then the chosen
/// option's widgets (nested combos alike), in the UI's order.
fn take_input(
    input: &InputDef,
    name: &str,
    widgets: &Json,
    position: &mut usize,
    inputs: &mut Map<String, Json>,
) {
    if input.dynamic.is_empty() {
        take_widget(input, name, widgets, position, inputs);
        return;
    }
    take_widget(&input.grown[0], name, widgets, position, inputs);
    let key = inputs.get(name).and_then(Json::as_str).unwrap_or("");
    for option_input in input.dynamic_inputs(key).to_vec() {
        let nested = format!("{name}.{}", option_input.name);
        take_input(&option_input, &nested, widgets, position, inputs);
    }
}

/// Converts a UI workflow to an API prompt.
pub fn to_api(workflow: &Json, registry: &Registry) -> Result<Map<String, Json>> {
    let widget_value = |node: &Json, name: &str| -> Option<Json> {
        let def = registry.get(node["type"].as_str()?)?;
        widget_inputs(def, node).remove(name)
    };
    let workflow = &crate::workflow_subgraph::flatten(workflow, &widget_value)?;
    let nodes: HashMap<String, &Json> = workflow["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| (id_string(&n["id"]), n))
        .collect();
    let links = links_by_id(workflow);

    // A link's real source: through Reroutes and bypassed nodes; None when it must be dropped.
    let resolve = |link_id: i64| -> Option<(String, i64)> {
        let mut link = links.get(&link_id)?;
        for _ in 0..1000 {
            let origin = nodes.get(&link.origin)?;
            let kind = origin["type"].as_str().unwrap_or("");
            let mode = origin["mode"].as_i64().unwrap_or(0);
            if kind == "Reroute" || mode == 4 {
                let inputs = origin["inputs"].as_array()?;
                let next = inputs.get(link.slot as usize).or(inputs.first())?;
                link = links.get(&next["link"].as_i64()?)?;
                continue;
            }
            if VIRTUAL.contains(&kind) || mode == 2 {
                return None;
            }
            return Some((link.origin.clone(), link.slot));
        }
        None
    };

    let mut prompt = Map::new();
    let mut ordered: Vec<&&Json> = nodes.values().collect();
    // Numeric ids in order; subgraph ids (`194:49`) by their parts.
    ordered.sort_by_key(|n| {
        id_string(&n["id"])
            .split(':')
            .map(|p| p.parse::<i64>().unwrap_or(i64::MAX))
            .collect::<Vec<_>>()
    });
    for node in ordered {
        let kind = node["type"].as_str().unwrap_or("");
        let mode = node["mode"].as_i64().unwrap_or(0);
        if VIRTUAL.contains(&kind) || mode == 2 || mode == 4 {
            continue;
        }
        let Some(def) = registry.get(kind) else {
            bail!(
                "node #{} uses the unknown node type {kind:?}",
                id_string(&node["id"])
            );
        };
        let mut inputs = widget_inputs(def, node);
        for slot in node["inputs"].as_array().into_iter().flatten() {
            let (Some(name), Some(link_id)) = (slot["name"].as_str(), slot["link"].as_i64()) else {
                continue;
            };
            if let Some(value) = primitive_value(&nodes, &links, link_id) {
                inputs.insert(name.to_string(), value);
                continue;
            }
            match resolve(link_id) {
                Some((origin, out_slot)) => {
                    inputs.insert(name.to_string(), json!([origin, out_slot]));
                }
                None => {
                    inputs.remove(name);
                }
            }
        }
        let title = node["title"]
            .as_str()
            .unwrap_or(def.shown_name())
            .to_string();
        prompt.insert(
            id_string(&node["id"]),
            json!({"inputs": inputs, "class_type": kind, "_meta": {"title": title}}),
        );
    }
    Ok(prompt)
}

/// The widget value of `input` (named `name` in the prompt) at `position` of the node's
/// `widgets_values` (or under its name when they are an object), stepping over the extra values
/// the UI stores after seeds and upload combos; sockets take none.
fn take_widget(
    input: &InputDef,
    name: &str,
    widgets: &Json,
    position: &mut usize,
    inputs: &mut Map<String, Json>,
) {
    let force_input = input.options.get("forceInput") == Some(&Json::Bool(true));
    if !input.is_widget() || force_input {
        return;
    }
    let value = match widgets {
        Json::Array(values) => values.get(*position).cloned(),
        Json::Object(map) => map.get(name).cloned(),
        _ => None,
    };
    *position += 1;
    // The frontend's name rule sees a DynamicCombo option's widget under its full name
    // (`sampling_mode.seed`), which never matches.
    let has_control = input.options.get("control_after_generate").is_some()
        || (input.io_type == "INT" && matches!(name, "seed" | "noise_seed"));
    if has_control {
        *position += 1;
    }
    // Upload combos have a button widget after them; the Painter's upload is its canvas.
    let is_combo = input.combo.is_some() || input.io_type == "COMBO";
    if is_combo && input.options.get("image_upload") == Some(&Json::Bool(true)) {
        *position += 1;
    }
    // The comparison slider stores no value; the frontend sends its `["", ""]`.
    let value = value.or_else(|| (input.io_type == "IMAGECOMPARE").then(|| json!(["", ""])));
    if let Some(v) = value {
        let v = if v.is_array() {
            json!({"__value__": v})
        } else {
            v
        };
        inputs.insert(name.to_string(), v);
    }
}

/// A PrimitiveNode feeding a widget gives its value as a literal.
fn primitive_value(
    nodes: &HashMap<String, &Json>,
    links: &HashMap<i64, Link>,
    link_id: i64,
) -> Option<Json> {
    let origin = nodes.get(&links.get(&link_id)?.origin)?;
    if origin["type"].as_str() != Some("PrimitiveNode") {
        return None;
    }
    origin["widgets_values"].get(0).cloned()
}
