//! ComfySwitchNode and ComfyMathExpression (the Wan 2.2 A14B templates' logic): their V3
//! `/object_info` schemas as upstream builds them (MatchType, Autogrow by names; BatchImagesNode's
//! Autogrow by prefix and the guidance patches' advanced inputs too), the switch running only the
//! branch it picks, and the expression's outputs feeding other nodes; ComfyNumberConvert in the
//! `basic_datatype_conversion` template.

mod common;

use std::time::Duration;

use common::Server;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);

#[test]
fn schemas_follow_upstreams_v3_shapes() {
    let s = Server::start(&[]);
    let info = s.get("/object_info").json();
    let switch = &info["ComfySwitchNode"];
    let template = json!({"template_id": "switch", "allowed_types": "*"});
    assert_eq!(
        switch["input"].to_string(),
        json!({"required": {
            "switch": ["BOOLEAN", {}],
            "on_false": ["COMFY_MATCHTYPE_V3", {"lazy": true, "template": template}],
            "on_true": ["COMFY_MATCHTYPE_V3", {"lazy": true, "template": template}]}})
        .to_string()
    );
    assert_eq!(switch["output"], json!(["COMFY_MATCHTYPE_V3"]));
    assert_eq!(switch["output_name"], json!(["output"]));
    assert_eq!(switch["output_matchtypes"], json!(["switch"]));
    assert_eq!(switch["experimental"], true);
    assert_eq!(switch["category"], "utilities/logic");

    let math = &info["ComfyMathExpression"];
    let names: Vec<String> = ('a'..='z').map(String::from).collect();
    assert_eq!(
        math["input"].to_string(),
        json!({"required": {
            "expression": ["STRING", {"default": "a + b", "multiline": true}],
            "values": ["COMFY_AUTOGROW_V3", {"template": {
                "input": {"required": {"value": ["FLOAT,INT,BOOLEAN", {}]}},
                "names": names, "min": 1}}]}})
        .to_string()
    );
    assert_eq!(math["output"], json!(["FLOAT", "INT", "BOOLEAN"]));
    assert_eq!(math["output_name"], json!(["FLOAT", "INT", "BOOL"]));
    assert_eq!(math["output_matchtypes"], Value::Null);

    // Autogrow.TemplatePrefix: the template's fields after its input, no names listed.
    let batch = &info["BatchImagesNode"];
    assert_eq!(
        batch["input"].to_string(),
        json!({"required": {"images": ["COMFY_AUTOGROW_V3", {"template": {
            "input": {"required": {"image": ["IMAGE", {}]}},
            "prefix": "image", "min": 1, "max": 50}}]}})
        .to_string()
    );
    assert_eq!(batch["essentials_category"], "Image Tools");
    // V3 puts `advanced` before a widget's own options; ComfyUI's ints stay ints.
    let slg = &info["SkipLayerGuidanceDiT"]["input"]["required"];
    assert_eq!(
        slg["double_layers"].to_string(),
        json!(["STRING", {"advanced": true, "default": "7, 8, 9", "multiline": false}]).to_string()
    );
    assert_eq!(
        slg["start_percent"].to_string(),
        r#"["FLOAT",{"advanced":true,"default":0.01,"min":0.0,"max":1.0,"step":0.001}]"#
    );
    assert_eq!(info["SkipLayerGuidanceDiT"]["experimental"], true);
    assert_eq!(info["CFGZeroStar"]["output_name"], json!(["patched_model"]));
    let camera = &info["WanCameraEmbedding"]["input"]["optional"];
    assert_eq!(
        camera["fx"].to_string(),
        r#"["FLOAT",{"advanced":true,"default":0.5,"min":0,"max":1,"step":1e-09}]"#
    );
}

/// A prompt previewing an EmptyImage whose width comes from `width` (a link) and whose color
/// comes through the switch.
fn prompt(switch: bool, width: Value) -> Value {
    json!({
        "1": {"class_type": "PrimitiveBoolean", "inputs": {"value": switch}},
        "2": {"class_type": "PrimitiveInt", "inputs": {"value": 255}},
        "3": {"class_type": "TestFail", "inputs": {"message": "the unpicked branch ran"}},
        "4": {"class_type": "ComfySwitchNode",
              "inputs": {"switch": ["1", 0], "on_true": ["2", 0], "on_false": ["3", 0]}},
        "5": {"class_type": "PrimitiveFloat", "inputs": {"value": 2.5}},
        "6": {"class_type": "PrimitiveInt", "inputs": {"value": 3}},
        "7": {"class_type": "ComfyMathExpression",
              "inputs": {"expression": "floor(a * b) + 1", "values.a": ["5", 0],
                         "values.b": ["6", 0]}},
        "8": {"class_type": "EmptyImage",
              "inputs": {"width": width, "height": 8, "batch_size": 1, "color": ["4", 0]}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    })
}

#[test]
fn the_switch_runs_only_its_branch_and_the_expression_feeds_widgets() {
    let s = Server::start(&[]);
    let id = s.queue(&prompt(true, json!(["7", 1])), None);
    let history = s.wait_history(&id, T);
    assert_eq!(history["status"]["status_str"], "success", "{}", s.log());
    let image = &history["outputs"]["9"]["images"][0];
    let path = s.dir.join("temp").join(image["filename"].as_str().unwrap());
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let reader = decoder.read_info().unwrap();
    // floor(2.5 · 3) + 1
    assert_eq!(reader.info().width, 8);

    // Switched off, the failing branch is the one that runs.
    let id = s.queue(&prompt(false, json!(8)), None);
    let history = s.wait_history(&id, T);
    assert_eq!(history["status"]["status_str"], "error");
    let messages = history["status"]["messages"].to_string();
    assert!(messages.contains("the unpicked branch ran"), "{messages}");

    // `values.a` is required (Autogrow's min 1); the rest are optional.
    let mut bad = prompt(true, json!(["7", 1]));
    bad["7"]["inputs"] = json!({"expression": "b", "values.b": ["6", 0]});
    let r = s.post_json("/prompt", &json!({"prompt": bad}));
    assert_eq!(r.status, 400);
    let errors = &r.json()["node_errors"]["7"]["errors"][0];
    assert_eq!(errors["type"], "required_input_missing");
    assert_eq!(errors["extra_info"]["input_name"], "values.a");
}

/// CustomCombo passes any choice (its options live in the frontend) and the frontend's
/// `index`; RebatchImages regroups a list of batches.
#[test]
fn custom_combo_and_rebatch_images() {
    let s = Server::start(&[]);
    let prompt = json!({
        "1": {"class_type": "CustomCombo", "inputs": {"choice": "beta", "index": 1, "option0": "alpha"}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["1", 1]}},
        "4": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 5, "color": 0}},
        "5": {"class_type": "RebatchImages", "inputs": {"images": ["4", 0], "batch_size": 2}},
        "6": {"class_type": "GetImageSize", "inputs": {"image": ["5", 0]}},
        "7": {"class_type": "PreviewAny", "inputs": {"source": ["6", 2]}},
    });
    let id = s.queue(&prompt, None);
    let history = s.wait_history(&id, T);
    assert_eq!(history["status"]["status_str"], "success", "{}", s.log());
    assert_eq!(history["outputs"]["2"]["text"], json!(["beta"]));
    assert_eq!(history["outputs"]["3"]["text"], json!(["1"]));
    // Batches of 2, 2 and 1, one GetImageSize call each.
    assert_eq!(history["outputs"]["7"]["text"], json!(["2", "2", "1"]));
}

/// `basic_datatype_conversion` as shipped: ComfyNumberConvert parses the string "1" into 1.0 and
/// 1, ComfyMathExpression turns 0 and 1.5 into FLOAT, INT and BOOL, and PreviewAny shows each as
/// Python prints it.
#[test]
fn basic_datatype_conversion_template_previews_pythons_values() {
    let s = Server::start(&[]);
    let path = format!(
        "{}/workflows/basic_datatype_conversion_api.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let prompt: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let outputs = s.run_ok(&prompt, T)["outputs"].clone();
    let text = |node: &str| outputs[node]["text"][0].as_str().unwrap_or("?").to_string();
    let expected = [
        ("5", "1.0"),
        ("6", "1"),
        ("12", "0"),
        ("13", "1.5"),
        ("15", "False"),
        ("16", "0.0"),
        ("17", "0"),
        ("20", "1.5"),
        ("21", "1"),
        ("22", "True"),
        ("24", "True"),
    ];
    for (node, want) in expected {
        assert_eq!(text(node), want, "PreviewAny {node}");
    }
    // A string that is no number is ComfyUI's error.
    let mut bad = prompt;
    bad["2"]["inputs"]["value"] = json!("one");
    let id = s.queue(&bad, None);
    let entry = s.wait_history(&id, T);
    assert_eq!(entry["status"]["status_str"], "error");
}

/// GetImageSize shows the size on the node: a binary TEXT frame (type 3) with the node id's
/// length and bytes, then upstream's text.
#[test]
fn get_image_size_shows_its_size_as_progress_text() {
    let s = Server::start(&[]);
    let mut ws = s.ws("sizes");
    let prompt = json!({
        "img": {"class_type": "EmptyImage", "inputs": {"width": 24, "height": 16, "batch_size": 3, "color": 0}},
        "size": {"class_type": "GetImageSize", "inputs": {"image": ["img", 0]}},
        "show": {"class_type": "PreviewAny", "inputs": {"source": ["size", 0]}},
    });
    let id = s.queue(&prompt, Some("sizes"));
    let (_, frames) = ws.until_done_with_binary(&id, T);
    let mut expected = 3u32.to_be_bytes().to_vec();
    expected.extend(4u32.to_be_bytes());
    expected.extend(b"size");
    expected.extend(b"width: 24, height: 16\n batch size: 3");
    assert!(frames.contains(&expected), "{frames:?}");
}

/// And, Or and Not judge their inputs by Python's truthiness; a tensor of several values is
/// ambiguous, as `bool(tensor)` is.
#[test]
fn and_or_not_follow_pythons_truthiness() {
    let s = Server::start(&[]);
    let prompt = json!({
        "and": {"class_type": "ComfyAndNode", "inputs": {"values.value0": 1, "values.value1": "", "values.value2": true}},
        "or": {"class_type": "ComfyOrNode", "inputs": {"values.value0": 0, "values.value1": "x"}},
        "not": {"class_type": "ComfyNotNode", "inputs": {"value": 0.0}},
        "all": {"class_type": "ComfyAndNode", "inputs": {"values.value0": "a", "values.value1": 2}},
        "pa": {"class_type": "PreviewAny", "inputs": {"source": ["and", 0]}},
        "po": {"class_type": "PreviewAny", "inputs": {"source": ["or", 0]}},
        "pn": {"class_type": "PreviewAny", "inputs": {"source": ["not", 0]}},
        "pl": {"class_type": "PreviewAny", "inputs": {"source": ["all", 0]}},
    });
    let history = s.run_ok(&prompt, T);
    let text = |id: &str| history["outputs"][id]["text"][0].clone();
    assert_eq!(
        [text("pa"), text("po"), text("pn"), text("pl")],
        ["False", "True", "True", "True"].map(Value::from)
    );
    let image = json!({
        "img": {"class_type": "EmptyImage", "inputs": {"width": 4, "height": 4, "batch_size": 1, "color": 0}},
        "not": {"class_type": "ComfyNotNode", "inputs": {"value": ["img", 0]}},
        "p": {"class_type": "PreviewAny", "inputs": {"source": ["not", 0]}},
    });
    let error = s.run_failing(&image, T);
    assert_eq!(error["exception_type"], "RuntimeError");
    assert_eq!(
        error["exception_message"],
        "Boolean value of Tensor with more than one value is ambiguous\n"
    );
}
