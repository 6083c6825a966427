//! Subgraphs in UI-format workflows (`definitions.subgraphs`): every instance node is replaced
//! by its definition's nodes, as the frontend does when it builds the API prompt — inner node
//! ids become `instance:inner`, links from the subgraph's input node take the instance's outer
//! links (or keep the inner widget value when the input is unlinked), links to its output node
//! become the sources of the instance's outgoing links. Nested subgraphs unfold level by level.

use std::collections::HashMap;

use anyhow::{bail, Result};
use serde_json::{json, Value as Json};

/// The subgraph's input and output pseudo-nodes in its links.
const INPUT_NODE: i64 = -10;
const OUTPUT_NODE: i64 = -20;
/// Deeper than this is a cycle between definitions.
const MAX_DEPTH: usize = 32;

/// A link in the array form top-level workflows use: `[id, origin, slot, target, slot, type]`.
fn normalized_links(links: &Json) -> Vec<Json> {
    links
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| match l {
            Json::Array(_) => Some(l.clone()),
            Json::Object(o) => Some(json!([
                o.get("id")?,
                o.get("origin_id")?,
                o.get("origin_slot")?,
                o.get("target_id")?,
                o.get("target_slot")?,
                o.get("type").cloned().unwrap_or(Json::Null)
            ])),
            _ => None,
        })
        .collect()
}

fn id_string(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The workflow with every subgraph instance expanded; unchanged when it has none.
pub fn flatten(workflow: &Json, widget_value: WidgetValue) -> Result<Json> {
    let definitions: HashMap<String, &Json> = workflow
        .pointer("/definitions/subgraphs")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(|d| Some((d.get("id")?.as_str()?.to_string(), d)))
        .collect();
    let mut nodes: Vec<Json> = workflow["nodes"].as_array().cloned().unwrap_or_default();
    let mut links = normalized_links(&workflow["links"]);
    let mut next_link = links
        .iter()
        .filter_map(|l| l[0].as_i64())
        .max()
        .unwrap_or(0)
        + 1;
    for _ in 0..MAX_DEPTH {
        let Some(at) = nodes.iter().position(|n| {
            n["type"]
                .as_str()
                .is_some_and(|t| definitions.contains_key(t))
        }) else {
            let mut out = workflow.clone();
            out["nodes"] = Json::Array(nodes);
            out["links"] = Json::Array(links);
            return Ok(out);
        };
        // Expand every instance at this depth before looking inside the new nodes.
        let mut pending = vec![nodes.remove(at)];
        while let Some(i) = nodes.iter().position(|n| {
            n["type"]
                .as_str()
                .is_some_and(|t| definitions.contains_key(t))
        }) {
            pending.push(nodes.remove(i));
        }
        for instance in pending {
            let definition = definitions[instance["type"].as_str().unwrap_or_default()];
            let (inner, inner_links) = expand(
                &instance,
                definition,
                &mut links,
                &mut next_link,
                widget_value,
            );
            nodes.extend(inner);
            links.extend(inner_links);
        }
    }
    bail!("subgraphs nest deeper than {MAX_DEPTH} levels (a definition contains itself?)")
}

/// The names of the definition's inputs that feed a widget of an inner node, in order.
fn promoted_widgets(definition: &Json) -> Vec<String> {
    let inner_has_widget = |node: &Json, slot: &Json| -> bool {
        let Some(slot) = slot.as_u64() else {
            return false;
        };
        definition["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| id_string(&n["id"]) == id_string(node))
            .and_then(|n| n["inputs"].get(slot as usize))
            .is_some_and(|i| i.get("widget").is_some())
    };
    let links = normalized_links(&definition["links"]);
    definition["inputs"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(slot, _)| {
            links.iter().any(|l| {
                l[1].as_i64() == Some(INPUT_NODE)
                    && l[2].as_u64() == Some(*slot as u64)
                    && inner_has_widget(&l[3], &l[4])
            })
        })
        .filter_map(|(_, i)| i["name"].as_str().map(str::to_string))
        .collect()
}

/// A node's widget value for an input name, as the node's definition reads its
/// `widgets_values`.
pub type WidgetValue<'a> = &'a dyn Fn(&Json, &str) -> Option<Json>;

/// The value of the inner widget that the definition's input `slot` feeds: the frontend
/// promotes it, and the input's links to other inner inputs take that value when the instance
/// leaves the input unlinked.
fn inner_widget_value(definition: &Json, slot: usize, widget_value: WidgetValue) -> Option<Json> {
    let nodes = definition["nodes"].as_array()?;
    normalized_links(&definition["links"])
        .iter()
        .filter(|l| l[1].as_i64() == Some(INPUT_NODE) && l[2].as_u64() == Some(slot as u64))
        .find_map(|l| {
            let node = nodes
                .iter()
                .find(|n| id_string(&n["id"]) == id_string(&l[3]))?;
            let input = node["inputs"].as_array()?.get(l[4].as_u64()? as usize)?;
            let name = input.get("widget")?.get("name")?.as_str()?;
            widget_value(node, name)
        })
}

/// The instance's inner nodes and links; rewires `outer` links leaving the instance.
fn expand(
    instance: &Json,
    definition: &Json,
    outer: &mut [Json],
    next_link: &mut i64,
    widget_value: WidgetValue,
) -> (Vec<Json>, Vec<Json>) {
    let prefix = format!("{}:", id_string(&instance["id"]));
    let mode = instance["mode"].as_i64().unwrap_or(0);
    let outer_by_id: HashMap<i64, Json> = outer
        .iter()
        .filter_map(|l| Some((l[0].as_i64()?, l.clone())))
        .collect();
    let sub_inputs = definition["inputs"].as_array().cloned().unwrap_or_default();
    // The instance's own value for a promoted widget input, if it keeps one: its widgets are
    // the definition's inputs that feed an inner widget, in the definition's order (the
    // instance's `inputs` list may name fewer).
    let widget_inputs = promoted_widgets(definition);
    let instance_widget = |name: &str| -> Option<Json> {
        let index = widget_inputs.iter().position(|i| i == name)?;
        instance["widgets_values"].get(index).cloned()
    };
    let instance_link = |name: &str| -> Option<Json> {
        let input = instance["inputs"]
            .as_array()?
            .iter()
            .find(|i| i["name"] == name)?;
        outer_by_id.get(&input["link"].as_i64()?).cloned()
    };

    let mut new_ids: HashMap<i64, Option<i64>> = HashMap::new();
    let mut links = Vec::new();
    let mut extra_nodes = Vec::new();
    let mut output_sources: HashMap<i64, (Json, Json)> = HashMap::new();
    for link in normalized_links(&definition["links"]) {
        let (Some(id), origin, target) = (link[0].as_i64(), &link[1], &link[3]) else {
            continue;
        };
        if target.as_i64() == Some(OUTPUT_NODE) {
            let slot = link[4].as_i64().unwrap_or(0);
            output_sources.insert(
                slot,
                (
                    json!(format!("{prefix}{}", id_string(origin))),
                    link[2].clone(),
                ),
            );
            continue;
        }
        let target_id = json!(format!("{prefix}{}", id_string(target)));
        let new_id = *next_link;
        *next_link += 1;
        if origin.as_i64() == Some(INPUT_NODE) {
            let slot = link[2].as_u64().unwrap_or(0) as usize;
            let name = sub_inputs
                .get(slot)
                .and_then(|i| i["name"].as_str())
                .unwrap_or_default();
            if let Some(from) = instance_link(name) {
                links.push(json!([
                    new_id, from[1], from[2], target_id, link[4], link[5]
                ]));
            } else if let Some(value) =
                instance_widget(name).or_else(|| inner_widget_value(definition, slot, widget_value))
            {
                // A literal the converter reads like a PrimitiveNode's.
                let node_id = format!("{prefix}input:{slot}:{new_id}");
                extra_nodes.push(json!({"id": node_id, "type": "PrimitiveNode",
                                        "mode": 0, "widgets_values": [value]}));
                links.push(json!([new_id, node_id, 0, target_id, link[4], link[5]]));
            } else {
                new_ids.insert(id, None);
                continue;
            }
        } else {
            let origin = json!(format!("{prefix}{}", id_string(origin)));
            links.push(json!([
                new_id, origin, link[2], target_id, link[4], link[5]
            ]));
        }
        new_ids.insert(id, Some(new_id));
    }

    for link in outer.iter_mut() {
        if link[1] == instance["id"] {
            if let Some((origin, slot)) = output_sources.get(&link[2].as_i64().unwrap_or(0)) {
                link[1] = origin.clone();
                link[2] = slot.clone();
            }
        }
    }

    let mut nodes: Vec<Json> = definition["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|node| {
            let mut node = node.clone();
            node["id"] = json!(format!("{prefix}{}", id_string(&node["id"])));
            if mode != 0 {
                node["mode"] = json!(mode);
            }
            for input in node["inputs"].as_array_mut().into_iter().flatten() {
                if let Some(old) = input["link"].as_i64() {
                    input["link"] = match new_ids.get(&old) {
                        Some(Some(new)) => json!(new),
                        _ => Json::Null,
                    };
                }
            }
            node
        })
        .collect();
    nodes.extend(extra_nodes);
    (nodes, links)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outer node 1 feeds the instance's first input, the instance keeps values for the two
    /// promoted widgets (its own `inputs` list naming only the second, as shipped templates
    /// do: values follow the definition's order), and its output feeds outer node 2.
    fn workflow() -> Json {
        json!({
            "nodes": [
                {"id": 1, "type": "Source", "mode": 0},
                {"id": 5, "type": "sub", "mode": 0, "widgets_values": [640, 42],
                 "inputs": [{"name": "image", "link": 7},
                            {"name": "seed", "link": null, "widget": {"name": "seed"}}]},
                {"id": 2, "type": "Sink", "mode": 0, "inputs": [{"name": "x", "link": 8}]}
            ],
            "links": [[7, 1, 0, 5, 0, "IMAGE"], [8, 5, 0, 2, 0, "IMAGE"]],
            "definitions": {"subgraphs": [{
                "id": "sub",
                "inputs": [{"name": "image"}, {"name": "width"}, {"name": "seed"}],
                "nodes": [{"id": 10, "type": "Inner", "mode": 0,
                           "inputs": [{"name": "a", "link": 20},
                                      {"name": "width", "link": 23, "widget": {"name": "width"}},
                                      {"name": "seed", "link": 21, "widget": {"name": "seed"}}]}],
                "links": [
                    {"id": 20, "origin_id": -10, "origin_slot": 0, "target_id": 10, "target_slot": 0},
                    {"id": 23, "origin_id": -10, "origin_slot": 1, "target_id": 10, "target_slot": 1},
                    {"id": 21, "origin_id": -10, "origin_slot": 2, "target_id": 10, "target_slot": 2},
                    {"id": 22, "origin_id": 10, "origin_slot": 0, "target_id": -20, "target_slot": 0}
                ]
            }]}
        })
    }

    #[test]
    fn instances_unfold_into_prefixed_nodes_with_rewired_links() {
        let flat = flatten(&workflow(), &|_, _| None).unwrap();
        let nodes = flat["nodes"].as_array().unwrap();
        let ids: Vec<String> = nodes.iter().map(|n| id_string(&n["id"])).collect();
        assert!(ids.contains(&"5:10".to_string()) && !ids.contains(&"5".to_string()));
        let links = flat["links"].as_array().unwrap();
        let into = |slot: i64| {
            let inner = nodes.iter().find(|n| n["id"] == "5:10").unwrap();
            let id = inner["inputs"][slot as usize]["link"].clone();
            links.iter().find(|l| l[0] == id).unwrap().clone()
        };
        // The outer link reaches the inner node; the kept value arrives as a literal.
        assert_eq!(into(0)[1], json!(1));
        for (slot, value) in [(1, 640), (2, 42)] {
            let literal = into(slot)[1].as_str().unwrap().to_string();
            let primitive = nodes.iter().find(|n| n["id"] == literal.as_str()).unwrap();
            assert_eq!(primitive["type"], "PrimitiveNode");
            assert_eq!(primitive["widgets_values"], json!([value]));
        }
        // The instance's output link now starts at the inner node.
        let out = links.iter().find(|l| l[0] == 8).unwrap();
        assert_eq!((out[1].clone(), out[3].clone()), (json!("5:10"), json!(2)));
    }

    #[test]
    fn a_definition_that_contains_itself_is_an_error() {
        let mut w = workflow();
        w["definitions"]["subgraphs"][0]["nodes"][0]["type"] = json!("sub");
        assert!(flatten(&w, &|_, _| None).is_err());
    }
}
