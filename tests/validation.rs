//! Every validation error type of `POST /prompt`, in ComfyUI's shapes, through the real binary.

mod common;

use common::Server;
use serde_json::{json, Value};

fn post(s: &Server, body: Value) -> (u16, Value) {
    let r = s.post_json("/prompt", &body);
    (r.status, r.json())
}

fn node_error_types(body: &Value, node: &str) -> Vec<String> {
    body["node_errors"][node]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

fn save(images: Value) -> Value {
    json!({"class_type": "SaveImage", "inputs": {"images": images, "filename_prefix": "v"}})
}

#[test]
fn every_validation_error_type() {
    let s = Server::start(&[]);

    let (code, b) = post(&s, json!({"client_id": "x"}));
    assert_eq!(
        (code, b["error"]["type"].as_str()),
        (400, Some("no_prompt"))
    );
    assert_eq!(b["error"]["message"], "No prompt provided");
    assert_eq!(b["node_errors"], json!({}));

    let (code, b) = post(&s, json!({"prompt": {"1": {"inputs": {}}}}));
    assert_eq!(
        (code, b["error"]["type"].as_str()),
        (400, Some("missing_node_type"))
    );
    assert_eq!(b["error"]["details"], "Node ID '#1'");
    assert_eq!(
        b["error"]["message"],
        "Node 'ID #1' has no class_type. The workflow may be corrupted or a custom node is missing."
    );
    assert_eq!(
        b["error"]["extra_info"],
        json!({"node_id": "1", "class_type": null, "node_title": null})
    );

    let (code, b) = post(
        &s,
        json!({"prompt": {"7": {"class_type": "NoSuchNode", "inputs": {}, "_meta": {"title": "My node"}}}}),
    );
    assert_eq!(
        (code, b["error"]["type"].as_str()),
        (400, Some("missing_node_type"))
    );
    assert_eq!(
        b["error"]["message"],
        "Node 'My node' not found. The custom node may not be installed."
    );
    assert_eq!(
        b["error"]["extra_info"],
        json!({"node_id": "7", "class_type": "NoSuchNode", "node_title": "My node"})
    );

    let (code, b) = post(
        &s,
        json!({"prompt": {"1": {"class_type": "EmptyImage", "inputs": {}}}}),
    );
    assert_eq!(
        (code, b["error"]["type"].as_str()),
        (400, Some("prompt_no_outputs"))
    );

    // Per-input errors, each on its own node, all blocking output "9".
    let prompt = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": "wide", "height": 0, "batch_size": 99999, "color": 0}},
        "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "sideways", "width": 8, "height": 8, "crop": "disabled"}},
        "3": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0, 1]}},
        "4": {"class_type": "ImageBatch", "inputs": {"image1": ["3", 0], "image2": ["11", 0]}},
        "5": {"class_type": "ImageBatch", "inputs": {"image1": ["4", 0], "image2": ["12", 0]}},
        "11": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 8, "height": 8}},
        "12": {"class_type": "ImageInvert", "inputs": {"image": ["404", 0]}},
        "9": save(json!(["5", 0])),
        "10": save(json!(["2", 0])),
    });
    let (code, b) = post(&s, json!({"prompt": prompt}));
    assert_eq!(code, 400, "{b}");
    assert_eq!(b["error"]["type"], "prompt_outputs_failed_validation");
    assert_eq!(
        node_error_types(&b, "1"),
        [
            "invalid_input_type",
            "value_smaller_than_min",
            "value_bigger_than_max"
        ]
    );
    assert_eq!(node_error_types(&b, "2"), ["value_not_in_list"]);
    assert_eq!(node_error_types(&b, "3"), ["bad_linked_input"]);
    assert_eq!(node_error_types(&b, "4"), ["return_type_mismatch"], "{b}");
    assert_eq!(
        node_error_types(&b, "12"),
        ["exception_during_inner_validation"]
    );
    assert_eq!(
        b["node_errors"]["3"]["dependent_outputs"],
        json!(["9", "10"])
    );
    assert_eq!(b["node_errors"]["1"]["class_type"], "EmptyImage");
    let e = &b["node_errors"]["1"]["errors"];
    assert_eq!(
        e[0]["details"],
        "width, wide, invalid literal for int() with base 10: 'wide'"
    );
    assert_eq!(e[1]["message"], "Value 0 smaller than min of 1");
    assert_eq!(e[2]["message"], "Value 99999 bigger than max of 4096");
    assert_eq!(
        e[1]["extra_info"]["input_config"],
        json!(["INT", {"default": 512, "min": 1, "max": 16384, "step": 1}])
    );
    let not_in_list = &b["node_errors"]["2"]["errors"][0];
    assert_eq!(
        not_in_list["details"],
        "upscale_method: 'sideways' not in ['nearest-exact', 'bilinear', 'area', 'bicubic', 'lanczos']"
    );
    assert_eq!(not_in_list["extra_info"]["received_value"], "sideways");
    let mismatch = &b["node_errors"]["4"]["errors"][0];
    assert_eq!(
        mismatch["details"],
        "image2, received_type(MASK) mismatch input_type(IMAGE)"
    );
    assert_eq!(mismatch["extra_info"]["linked_node"], json!(["11", 0]));
    assert_eq!(
        b["node_errors"]["12"]["errors"][0]["extra_info"]["exception_type"],
        "KeyError"
    );

    // Missing required input, custom validator failure, validator crash.
    let prompt = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1}},
        "2": {"class_type": "TestCustomValidation", "inputs": {"value": 7.0}},
        "3": {"class_type": "TestCustomValidation", "inputs": {"value": 13.0}},
        "4": {"class_type": "TestSleep", "inputs": {"value": ["2", 0], "seconds": 0.0}},
        "5": {"class_type": "TestSleep", "inputs": {"value": ["3", 0], "seconds": 0.0}},
        "6": {"class_type": "StubImage", "inputs": {"content": "WHITE", "height": ["4", 0], "width": ["5", 0], "batch_size": 1}},
        "9": save(json!(["1", 0])),
        "10": save(json!(["6", 0])),
    });
    let (code, b) = post(&s, json!({"prompt": prompt}));
    assert_eq!(code, 400, "{b}");
    assert_eq!(node_error_types(&b, "1"), ["required_input_missing"]);
    assert_eq!(
        b["node_errors"]["1"]["errors"][0]["extra_info"],
        json!({"input_name": "color"})
    );
    assert_eq!(node_error_types(&b, "2"), ["custom_validation_failed"]);
    assert_eq!(
        b["node_errors"]["2"]["errors"][0]["details"],
        "value - value 7.0 is above 5"
    );
    assert_eq!(node_error_types(&b, "3"), ["exception_during_validation"]);

    // A cycle is reported on every node of it instead of recursing forever.
    let prompt = json!({
        "1": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "9": save(json!(["1", 0])),
    });
    let (code, b) = post(&s, json!({"prompt": prompt}));
    assert_eq!(code, 400);
    assert_eq!(node_error_types(&b, "1"), ["dependency_cycle"]);
    assert_eq!(node_error_types(&b, "2"), ["dependency_cycle"]);

    // Some outputs valid, some not: 200 with node_errors, and only the valid one runs.
    let prompt = json!({
        "1": {"class_type": "StubImage", "inputs": {"content": "WHITE", "height": 8, "width": 8, "batch_size": 1}},
        "9": save(json!(["1", 0])),
        "10": save(json!(["404", 0])),
    });
    let (code, b) = post(&s, json!({"prompt": prompt}));
    assert_eq!(code, 200, "{b}");
    assert_eq!(
        node_error_types(&b, "10"),
        ["exception_during_inner_validation"]
    );
    let entry = s.wait_history(
        b["prompt_id"].as_str().unwrap(),
        std::time::Duration::from_secs(20),
    );
    assert_eq!(entry["prompt"][4], json!(["9"]));
    assert!(entry["outputs"]["9"].is_object() && entry["outputs"].get("10").is_none());
}

#[test]
fn validation_normalises_the_stored_prompt() {
    let s = Server::start(&[]);
    let prompt = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": "8", "height": 8.9, "batch_size": true, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": {"__value__": 5}}},
    });
    let id = s.queue(&prompt, None);
    let entry = s.wait_history(&id, std::time::Duration::from_secs(20));
    let stored = &entry["prompt"][2];
    assert_eq!(
        stored["1"]["inputs"],
        json!({"width": 8, "height": 8, "batch_size": 1, "color": 0})
    );
    assert_eq!(stored["2"]["inputs"]["filename_prefix"], "5");
    assert_eq!(entry["status"]["status_str"], "success");
}

#[test]
fn malformed_bodies_get_json_400s() {
    let s = Server::start(&[]);
    for body in [
        "{not json",
        "[1, 2]",
        "\"text\"",
        "",
        "{\"prompt\": [1]}",
        "{\"prompt\": {\"1\": 5}}",
        "{\"prompt\": {\"1\": {\"class_type\": \"EmptyImage\", \"inputs\": 3}}}",
    ] {
        let r = s.post("/prompt", body);
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.json()["error"].is_object(), "{body}");
    }
    for route in ["/queue", "/history", "/free"] {
        let r = s.post(route, "{oops");
        assert_eq!(r.status, 400, "{route}");
        r.json();
    }
    assert_eq!(s.post("/interrupt", "{oops").status, 200);
}
