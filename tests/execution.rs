//! Execution through the real server and WebSocket: message order, caching between prompts,
//! lazy inputs, list mapping, interrupt, errors and partial execution.

mod common;

use std::time::Duration;

use common::{executed_nodes, png_pixel, stub_save, types, Server};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

#[test]
fn websocket_protocol_and_cache_between_prompts() {
    let s = Server::start(&[]);
    let mut ws = s.ws("client-a");
    let hello = ws.next(T).unwrap();
    assert_eq!(
        hello,
        json!({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "client-a"}})
    );
    ws.send(r#"{"type": "feature_flags", "data": {"supports_preview_metadata": true}}"#);
    let flags = ws.next(T).unwrap();
    assert_eq!(flags["type"], "feature_flags");
    assert_eq!(flags["data"]["max_upload_size"], 104857600);

    let id = s.queue(&stub_save("WHITE", "run"), Some("client-a"));
    let msgs = ws.until_done(&id, T);
    let kinds = types(&msgs);
    let pos = |k: &str| {
        kinds
            .iter()
            .position(|t| t == k)
            .unwrap_or_else(|| panic!("no {k} in {kinds:?}"))
    };
    assert!(pos("execution_start") < pos("execution_cached"));
    assert!(pos("execution_cached") < pos("executing"));
    assert!(pos("executed") < pos("execution_success"));
    assert_eq!(kinds.last().unwrap(), "executing");
    assert_eq!(
        kinds[kinds.len() - 2],
        "status",
        "status comes after history is written: {kinds:?}"
    );
    assert_eq!(executed_nodes(&msgs), ["1", "2"]);
    let executed = msgs.iter().find(|m| m["type"] == "executed").unwrap();
    assert_eq!(
        executed["data"]["output"]["images"][0],
        json!({"filename": "run_00001_.png", "subfolder": "", "type": "output"})
    );
    assert!(msgs.iter().any(|m| m["type"] == "progress_state"));

    // History is already written when `executing: null` arrives.
    let entry = s.get(&format!("/history/{id}")).json()[&id].clone();
    assert_eq!(entry["status"]["status_str"], "success");
    let events: Vec<&str> = entry["status"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m[0].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        ["execution_start", "execution_cached", "execution_success"]
    );
    assert_eq!(
        png_pixel(&s.output_dir().join("run_00001_.png")),
        [255, 255, 255]
    );

    // Same graph, other ids: everything cached; the output node re-sends its UI.
    let renumbered = json!({
        "10": {"class_type": "StubImage", "inputs": {"content": "WHITE", "height": 8, "width": 8, "batch_size": 1}},
        "20": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "run"}},
    });
    let id2 = s.queue(&renumbered, Some("client-a"));
    let msgs = ws.until_done(&id2, T);
    let cached = msgs
        .iter()
        .find(|m| m["type"] == "execution_cached")
        .unwrap();
    assert_eq!(cached["data"]["nodes"], json!(["10", "20"]));
    assert!(executed_nodes(&msgs).is_empty());
    assert!(msgs
        .iter()
        .any(|m| m["type"] == "executed" && m["data"]["node"] == "20"));
    assert!(s.get(&format!("/history/{id2}")).json()[&id2]["outputs"]["20"].is_object());

    // Partial re-run: only the changed node runs.
    let id3 = s.queue(&stub_save("WHITE", "other"), Some("client-a"));
    let msgs = ws.until_done(&id3, T);
    let cached = msgs
        .iter()
        .find(|m| m["type"] == "execution_cached")
        .unwrap();
    assert_eq!(cached["data"]["nodes"], json!(["1"]));
    assert_eq!(executed_nodes(&msgs), ["2"]);
}

#[test]
fn cache_none_reruns_everything_and_lru_keeps_alternating_graphs() {
    let s = Server::start(&["--cache-none"]);
    let mut ws = s.ws("c");
    for _ in 0..2 {
        let id = s.queue(&stub_save("BLACK", "n"), Some("c"));
        let msgs = ws.until_done(&id, T);
        assert_eq!(executed_nodes(&msgs), ["1", "2"]);
    }
    drop(s);

    let s = Server::start(&["--cache-lru", "10"]);
    let mut ws = s.ws("c");
    let a = stub_save("BLACK", "a");
    let b = stub_save("WHITE", "b");
    for p in [&a, &b] {
        let id = s.queue(p, Some("c"));
        ws.until_done(&id, T);
    }
    // Classic caching would have dropped graph a's results while running b.
    let id = s.queue(&a, Some("c"));
    assert!(executed_nodes(&ws.until_done(&id, T)).is_empty());
}

#[test]
fn lazy_inputs_lists_and_partial_targets() {
    let s = Server::start(&[]);
    let mut ws = s.ws("c");
    let lazy = json!({
        "1": {"class_type": "StubImage", "inputs": {"content": "BLACK", "height": 8, "width": 8, "batch_size": 1}},
        "2": {"class_type": "StubImage", "inputs": {"content": "WHITE", "height": 8, "width": 8, "batch_size": 1}},
        "3": {"class_type": "StubMask", "inputs": {"value": 0.0, "height": 8, "width": 8, "batch_size": 1}},
        "4": {"class_type": "TestLazyMixImages", "inputs": {"image1": ["1", 0], "image2": ["2", 0], "mask": ["3", 0]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "lazy"}},
    });
    let id = s.queue(&lazy, Some("c"));
    let ran = executed_nodes(&ws.until_done(&id, T));
    assert!(ran.contains(&"1".to_string()) && ran.contains(&"4".to_string()));
    assert!(
        !ran.contains(&"2".to_string()),
        "the unused lazy input ran: {ran:?}"
    );
    assert_eq!(
        png_pixel(&s.output_dir().join("lazy_00001_.png")),
        [0, 0, 0]
    );

    // A list of two batch sizes maps StubImage over it: 1 + 2 images saved.
    let lists = json!({
        "1": {"class_type": "StubInt", "inputs": {"value": 1}},
        "2": {"class_type": "StubInt", "inputs": {"value": 2}},
        "3": {"class_type": "TestMakeListNode", "inputs": {"value1": ["1", 0], "value2": ["2", 0]}},
        "4": {"class_type": "StubImage", "inputs": {"content": "WHITE", "height": 4, "width": 4, "batch_size": ["3", 0]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "list"}},
    });
    let id = s.queue(&lists, Some("c"));
    ws.until_done(&id, T);
    let entry = s.get(&format!("/history/{id}")).json()[&id].clone();
    assert_eq!(entry["outputs"]["5"]["images"].as_array().unwrap().len(), 3);

    // partial_execution_targets runs only the chosen output and what it needs.
    let two = json!({
        "1": {"class_type": "StubImage", "inputs": {"content": "NOISE", "height": 4, "width": 4, "batch_size": 1}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "p1"}},
        "3": {"class_type": "StubImage", "inputs": {"content": "NOISE", "height": 5, "width": 5, "batch_size": 1}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "p2"}},
    });
    let r = s.post_json(
        "/prompt",
        &json!({"prompt": two, "client_id": "c", "partial_execution_targets": ["4"]}),
    );
    let id = r.json()["prompt_id"].as_str().unwrap().to_string();
    assert_eq!(executed_nodes(&ws.until_done(&id, T)), ["3", "4"]);
    let r = s.post_json(
        "/prompt",
        &json!({"prompt": two, "partial_execution_targets": []}),
    );
    assert_eq!(r.json()["error"]["type"], "prompt_no_outputs");
}

#[test]
fn errors_and_interrupts_reach_client_and_history() {
    let s = Server::start(&[]);
    let mut ws = s.ws("c");
    let failing = json!({
        "1": {"class_type": "TestFail", "inputs": {"message": "bad things"}},
        "2": {"class_type": "StubImage", "inputs": {"content": "WHITE", "height": ["1", 0], "width": 4, "batch_size": 1}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "f"}},
    });
    let id = s.queue(&failing, Some("c"));
    let msgs = ws.until_done(&id, T);
    let err = msgs
        .iter()
        .find(|m| m["type"] == "execution_error")
        .expect("execution_error");
    assert_eq!(err["data"]["node_id"], "1");
    assert_eq!(err["data"]["node_type"], "TestFail");
    assert_eq!(err["data"]["exception_type"], "RuntimeError");
    assert_eq!(
        err["data"]["exception_message"],
        "Intentional failure: bad things\n"
    );
    assert_eq!(
        err["data"]["current_inputs"]["message"],
        json!(["bad things"])
    );
    let entry = s.wait_history(&id, T);
    assert_eq!(entry["status"]["status_str"], "error");
    assert_eq!(entry["status"]["completed"], false);

    // A node that panics fails its prompt with a RuntimeError; the worker lives on (the prompts
    // below still run).
    let panicking = json!({
        "1": {"class_type": "TestPanic", "inputs": {"message": "shape mismatch"}},
        "2": {"class_type": "StubImage", "inputs": {"content": "WHITE", "height": ["1", 0], "width": 4, "batch_size": 1}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "p"}},
    });
    let id = s.queue(&panicking, Some("c"));
    let msgs = ws.until_done(&id, T);
    let err = msgs
        .iter()
        .find(|m| m["type"] == "execution_error")
        .expect("execution_error");
    assert_eq!(err["data"]["node_type"], "TestPanic");
    assert_eq!(err["data"]["exception_type"], "RuntimeError");
    assert_eq!(
        err["data"]["exception_message"],
        "Intentional panic: shape mismatch\n"
    );

    // Interrupt a running node at its next progress point.
    let slow = json!({
        "1": {"class_type": "StubImage", "inputs": {"content": "WHITE", "height": 4, "width": 4, "batch_size": 1}},
        "2": {"class_type": "TestSleep", "inputs": {"value": ["1", 0], "seconds": 60.0}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "slow"}},
    });
    let id = s.queue(&slow, Some("c"));
    loop {
        let m = ws.next(T).expect("progress from the sleeping node");
        if m["type"] == "progress" {
            assert_eq!(m["data"]["node"], "2");
            break;
        }
    }
    // Interrupting another prompt id leaves this one running.
    s.post_json("/interrupt", &json!({"prompt_id": "someone-else"}));
    let started = std::time::Instant::now();
    s.post_json("/interrupt", &json!({"prompt_id": id}));
    let msgs = ws.until_done(&id, T);
    assert!(started.elapsed() < Duration::from_secs(5));
    let int = msgs
        .iter()
        .find(|m| m["type"] == "execution_interrupted")
        .expect("execution_interrupted");
    assert_eq!(int["data"]["node_id"], "2");
    assert_eq!(int["data"]["executed"], json!(["1"]));
    let entry = s.wait_history(&id, T);
    assert_eq!(entry["status"]["status_str"], "error");
    let last: Vec<&str> = entry["status"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m[0].as_str().unwrap())
        .collect();
    assert_eq!(last.last(), Some(&"execution_interrupted"));

    // The server carries on with the next prompt.
    let id = s.queue(&stub_save("BLACK", "after"), Some("c"));
    assert_eq!(s.wait_history(&id, T)["status"]["status_str"], "success");
}

#[test]
fn saved_png_embeds_prompt_and_workflow() {
    let s = Server::start(&[]);
    let workflow = json!({"nodes": [], "links": [], "version": 0.4, "note": "é"});
    let body = json!({"prompt": stub_save("WHITE", "meta"), "extra_data": {"extra_pnginfo": {"workflow": workflow}}});
    let r = s.post_json("/prompt", &body);
    let id = r.json()["prompt_id"].as_str().unwrap().to_string();
    s.wait_history(&id, T);
    let decoder =
        png::Decoder::new(std::fs::File::open(s.output_dir().join("meta_00001_.png")).unwrap());
    let reader = decoder.read_info().unwrap();
    let text: Vec<(String, String)> = reader
        .info()
        .uncompressed_latin1_text
        .iter()
        .map(|t| (t.keyword.clone(), t.text.clone()))
        .collect();
    assert_eq!(text[0].0, "prompt");
    let prompt: Value = serde_json::from_str(&text[0].1).unwrap();
    assert_eq!(prompt["2"]["class_type"], "SaveImage");
    assert_eq!(text[1].0, "workflow");
    assert_eq!(serde_json::from_str::<Value>(&text[1].1).unwrap(), workflow);
}
