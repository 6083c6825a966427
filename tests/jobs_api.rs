//! The jobs API current frontends use (`/api/jobs`, cancel routes) and the newer
//! `POST /prompt` rules (canonical UUID ids, 409 on a duplicate, `create_time`), through
//! the real binary.

mod common;

use std::time::{Duration, Instant};

use common::{stub_save, Server};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

fn jobs(s: &Server, query: &str) -> Value {
    let r = s.get(&format!("/api/jobs{query}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn ids(list: &Value) -> Vec<String> {
    list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < T, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn prompt_ids_are_canonical_uuids_and_unique() {
    let s = Server::start(&[]);
    let id = "0b8e9c1a-4f5d-4c3b-9a2e-7d6f5e4c3b2a";
    let r = s.post_json(
        "/prompt",
        &json!({"prompt": stub_save("WHITE", "a"), "prompt_id": id}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["prompt_id"], id);
    let again = s.post_json(
        "/prompt",
        &json!({"prompt": stub_save("WHITE", "a"), "prompt_id": id}),
    );
    assert_eq!(
        (again.status, again.json()),
        (409, json!({"error": "prompt_id already exists"}))
    );
    for bad in [
        json!(id.to_uppercase()),
        json!("0b8e9c1a4f5d4c3b9a2e7d6f5e4c3b2a"),
        json!("not-a-uuid"),
        json!(7),
    ] {
        let r = s.post_json(
            "/prompt",
            &json!({"prompt": stub_save("WHITE", "a"), "prompt_id": bad}),
        );
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.json()["error"]["type"], "invalid_prompt_id", "{bad}");
    }
    let entry = s.wait_history(id, T);
    let extra = &entry["prompt"][3];
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let created = extra["create_time"].as_u64().expect("create_time in ms");
    assert!(
        now_ms - created < 60_000,
        "create_time {created} vs {now_ms}"
    );

    // Comfy.org credentials are dropped on arrival, never listed or kept.
    let r = s.post_json(
        "/prompt",
        &json!({"prompt": stub_save("WHITE", "b"),
                "extra_data": {"api_key_comfy_org": "k", "auth_token_comfy_org": "t", "keep": 1}}),
    );
    let entry = s.wait_history(r.json()["prompt_id"].as_str().unwrap(), T);
    let extra = entry["prompt"][3].as_object().unwrap();
    assert!(
        !extra.contains_key("api_key_comfy_org") && !extra.contains_key("auth_token_comfy_org")
    );
    assert_eq!(extra["keep"], 1);
}

#[test]
fn jobs_list_filter_sort_cancel_and_detail() {
    let s = Server::start(&[]);
    let done = s.queue(&stub_save("WHITE", "done"), None);
    s.wait_history(&done, T);
    let failed = s.queue(
        &json!({"1": {"class_type": "TestFail", "inputs": {"message": "nope"}},
                "2": {"class_type": "StubImage", "inputs": {"content": "WHITE", "height": ["1", 0], "width": 4, "batch_size": 1}},
                "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "f"}}}),
        None,
    );
    s.wait_history(&failed, T);
    let slow = json!({
        "1": {"class_type": "StubImage", "inputs": {"content": "WHITE", "height": 4, "width": 4, "batch_size": 1}},
        "2": {"class_type": "TestSleep", "inputs": {"value": ["1", 0], "seconds": 60.0}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "slow"}},
    });
    let running = s.queue(&slow, None);
    let pending = s.queue(&stub_save("BLACK", "later"), None);
    wait_until("the slow prompt to start", || {
        ids(&jobs(&s, "?status=in_progress")) == [running.clone()]
    });

    let all = jobs(&s, "");
    assert_eq!(
        all["pagination"],
        json!({"offset": 0, "limit": null, "total": 4, "has_more": false})
    );
    // Newest first by default.
    assert_eq!(
        ids(&all),
        [
            pending.clone(),
            running.clone(),
            failed.clone(),
            done.clone()
        ]
    );
    let statuses: Vec<&str> = all["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["pending", "in_progress", "failed", "completed"]);
    let page = jobs(&s, "?sort_order=asc&limit=2&offset=1");
    assert_eq!(ids(&page), [failed.clone(), running.clone()]);
    assert_eq!(
        page["pagination"],
        json!({"offset": 1, "limit": 2, "total": 4, "has_more": true})
    );

    let completed = &jobs(&s, "?status=completed")["jobs"][0];
    assert_eq!(completed["outputs_count"], 1);
    assert_eq!(completed["previewable_outputs_count"], 1);
    assert_eq!(
        completed["preview_output"],
        json!({"filename": "done_00001_.png", "subfolder": "", "type": "output", "nodeId": "2", "mediaType": "images"})
    );
    assert!(completed["execution_end_time"].as_u64() >= completed["execution_start_time"].as_u64());
    let fail = &jobs(&s, "?status=failed")["jobs"][0];
    assert_eq!(
        fail["execution_error"]["exception_message"],
        "Intentional failure: nope\n"
    );

    let detail = s.get(&format!("/api/jobs/{done}")).json();
    assert_eq!(
        detail["outputs"]["2"]["images"][0]["filename"],
        "done_00001_.png"
    );
    assert_eq!(detail["execution_status"]["status_str"], "success");
    assert_eq!(detail["workflow"]["prompt"]["1"]["class_type"], "StubImage");
    assert_eq!(
        s.get(&format!("/api/jobs/{pending}")).json()["status"],
        "pending"
    );
    let missing = s.get("/api/jobs/0b8e9c1a-4f5d-4c3b-9a2e-7d6f5e4c3b2a");
    assert_eq!(
        (missing.status, missing.json()),
        (404, json!({"error": "Job not found"}))
    );

    // Cancel the pending one, then the running one; cancelling again is a no-op.
    let cancel = |id: &str| s.post(&format!("/api/jobs/{id}/cancel"), "").json();
    assert_eq!(cancel(&pending), json!({"cancelled": true}));
    assert_eq!(cancel(&pending), json!({"cancelled": false}));
    assert_eq!(cancel(&running), json!({"cancelled": true}));
    let entry = s.wait_history(&running, T);
    assert_eq!(entry["status"]["status_str"], "error");
    assert_eq!(
        jobs(&s, "?status=cancelled")["jobs"][0]["id"],
        running.as_str()
    );
    assert_eq!(cancel(&done), json!({"cancelled": false}));

    let bad = s.post_json("/api/jobs/cancel", &json!({"job_ids": [done, "nope", 3]}));
    assert_eq!(
        (bad.status, bad.json()),
        (
            400,
            json!({"error": "job_ids contains invalid id(s)", "invalid_ids": ["nope", "3"]})
        )
    );
    let batch = s.post_json("/api/jobs/cancel", &json!({"job_ids": [done]}));
    assert_eq!(batch.json(), json!({"cancelled": false}));

    for (query, error) in [
        ("?status=done", "Invalid status value(s): done. Valid values: pending, in_progress, completed, failed, cancelled"),
        ("?sort_by=name", "sort_by must be 'created_at' or 'execution_duration'"),
        ("?sort_order=up", "sort_order must be 'asc' or 'desc'"),
        ("?limit=0", "limit must be a positive integer"),
        ("?limit=x", "limit must be an integer"),
        ("?offset=x", "offset must be an integer"),
    ] {
        let r = s.get(&format!("/api/jobs{query}"));
        assert_eq!((r.status, r.json()), (400, json!({"error": error})), "{query}");
    }
    // Registered with a literal /api: also at /api/api/jobs, never bare.
    assert_eq!(s.get("/api/api/jobs").status, 200);
    assert_eq!(s.get("/jobs").status, 404);
}
