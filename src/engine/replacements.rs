//! Node replacements (`app/node_replace_manager.py`, registered in
//! `comfy_extras/nodes_replacements.py`): renamed or merged nodes mapped to their successors.
//! `/node_replacements` lists them for the frontend, and a queued prompt whose node type is
//! unknown here but has a known successor runs as that successor, its inputs and outputs mapped.

use serde_json::{json, Map, Value as Json};

use super::registry::Registry;

/// Upstream's table, in registration order and in its `as_dict` layout.
pub fn table() -> Json {
    let entry = |new: &str, old: &str, widgets: Json, inputs: Json, outputs: Json| {
        json!({"new_node_id": new, "old_node_id": old, "old_widget_ids": widgets,
               "input_mapping": inputs, "output_mapping": outputs})
    };
    let plain = |new: &str, old: &str| entry(new, old, Json::Null, Json::Null, Json::Null);
    let mut t = Map::new();
    let mut add = |e: Json| {
        let old = e["old_node_id"].as_str().unwrap_or_default().to_string();
        t.insert(old, json!([e]));
    };
    add(entry(
        "ImageScaleToMaxDimension",
        "ResizeImagesByLongerEdge",
        json!(["longer_edge"]),
        json!([{"new_id": "image", "old_id": "images"},
               {"new_id": "largest_size", "old_id": "longer_edge"},
               {"new_id": "upscale_method", "set_value": "lanczos"}]),
        json!([{"new_idx": 0, "old_idx": 0}]),
    ));
    add(entry(
        "BatchImagesNode",
        "ImageBatch",
        Json::Null,
        json!([{"new_id": "images.image0", "old_id": "image1"},
               {"new_id": "images.image1", "old_id": "image2"}]),
        Json::Null,
    ));
    add(entry(
        "ResizeImageMaskNode",
        "ImageScaleBy",
        json!(["upscale_method", "scale_by"]),
        json!([{"new_id": "input", "old_id": "image"},
               {"new_id": "resize_type", "set_value": "scale by multiplier"},
               {"new_id": "resize_type.multiplier", "old_id": "scale_by"},
               {"new_id": "scale_method", "old_id": "upscale_method"}]),
        Json::Null,
    ));
    add(entry(
        "ControlNetLoader",
        "T2IAdapterLoader",
        Json::Null,
        json!([{"new_id": "control_net_name", "old_id": "t2i_adapter_name"}]),
        Json::Null,
    ));
    add(plain("Load3D", "Load3DAnimation"));
    add(plain("Preview3D", "Preview3DAnimation"));
    add(plain(
        "SVD_img2vid_Conditioning",
        "SDV_img2vid_Conditioning",
    ));
    add(plain("ConditioningAverage", "ConditioningAverage "));
    Json::Object(t)
}

/// Rewrites, in place, each node whose type the registry lacks into the first successor
/// listed for it, when the registry has that successor. A mapped input the old node lacks is
/// left out, so validation names it.
pub fn apply(prompt: &mut Map<String, Json>, registry: &Registry) {
    let table = table();
    let mut replaced = Vec::new();
    for (id, node) in prompt.iter_mut() {
        let Some(class_type) = node.get("class_type").and_then(Json::as_str) else {
            continue;
        };
        if registry.get(class_type).is_some() {
            continue;
        }
        let Some(rule) = table.get(class_type).and_then(|r| r.get(0)) else {
            continue;
        };
        let new_type = rule["new_node_id"].as_str().unwrap_or_default();
        if registry.get(new_type).is_none() {
            continue;
        }
        let old_inputs = node.get("inputs").cloned().unwrap_or(json!({}));
        let mut inputs = Map::new();
        for map in rule["input_mapping"].as_array().into_iter().flatten() {
            let new_id = map["new_id"].as_str().unwrap_or_default().to_string();
            if let Some(value) = map.get("set_value") {
                inputs.insert(new_id, value.clone());
            } else if let Some(value) = map["old_id"].as_str().and_then(|o| old_inputs.get(o)) {
                inputs.insert(new_id, value.clone());
            }
        }
        node["class_type"] = json!(new_type);
        node["inputs"] = Json::Object(inputs);
        replaced.push((id.clone(), rule["output_mapping"].clone()));
    }
    for (source, outputs) in replaced {
        let Some(outputs) = outputs.as_array() else {
            continue;
        };
        for node in prompt.values_mut() {
            let Some(Json::Object(inputs)) = node.get_mut("inputs") else {
                continue;
            };
            for value in inputs.values_mut() {
                let Some([from, index]) = value.as_array_mut().map(|a| a.as_mut_slice()) else {
                    continue;
                };
                if crate::pyjson::value_str(from) != source {
                    continue;
                }
                let remapped = outputs.iter().find(|m| m["old_idx"] == *index);
                if let Some(m) = remapped {
                    *index = m["new_idx"].clone();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::context::ExecContext;
    use crate::engine::node::{Inputs, NodeDef, NodeOutput, NodeResult, Style};

    fn nothing(_: &Inputs, _: &ExecContext) -> NodeResult {
        Ok(NodeOutput::values(vec![]))
    }

    fn registry(names: &[&str]) -> Registry {
        let mut r = Registry::default();
        for name in names {
            r.add(NodeDef::new(name, Style::V3, Arc::new(nothing)));
        }
        r
    }

    fn prompt(v: Json) -> Map<String, Json> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn an_unknown_type_runs_as_its_successor() {
        let r = registry(&["LoadImage", "ImageScaleToMaxDimension", "SaveImage"]);
        let mut p = prompt(json!({
            "1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
            "2": {"class_type": "ResizeImagesByLongerEdge",
                  "inputs": {"images": ["1", 0], "longer_edge": 768}, "_meta": {"title": "R"}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0]}},
        }));
        apply(&mut p, &r);
        assert_eq!(
            p["2"],
            json!({"class_type": "ImageScaleToMaxDimension",
                   "inputs": {"image": ["1", 0], "largest_size": 768, "upscale_method": "lanczos"},
                   "_meta": {"title": "R"}})
        );
        assert_eq!(p["3"]["inputs"]["images"], json!(["2", 0]));
    }

    #[test]
    fn known_types_and_missing_successors_stay() {
        let r = registry(&["ResizeImagesByLongerEdge", "ConditioningAverage"]);
        let before = prompt(json!({
            "1": {"class_type": "ResizeImagesByLongerEdge", "inputs": {"longer_edge": 5}},
            "2": {"class_type": "T2IAdapterLoader", "inputs": {"t2i_adapter_name": "x"}},
        }));
        let mut p = before.clone();
        apply(&mut p, &r);
        assert_eq!(p, before);
        let mut p = prompt(json!({"1": {"class_type": "ConditioningAverage ", "inputs": {}}}));
        apply(&mut p, &r);
        assert_eq!(p["1"]["class_type"], "ConditioningAverage");
    }

    #[test]
    fn the_table_keeps_upstreams_order() {
        let keys: Vec<String> = table().as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys.len(), 8);
        assert_eq!(keys[0], "ResizeImagesByLongerEdge");
        assert_eq!(keys[7], "ConditioningAverage ");
    }
}
