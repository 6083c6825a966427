//! The queue and history survive `kill -9`: nothing queued is lost, pending prompts run after
//! the restart.

mod common;

use std::time::Duration;

use common::{stub_save, Server};
use serde_json::json;

#[test]
fn sigkill_loses_no_queued_prompt_and_no_history() {
    let mut s = Server::start(&[]);
    let before = s.queue(&stub_save("WHITE", "before"), None);
    s.wait_history(&before, Duration::from_secs(20));

    let ids: Vec<String> = (0..20)
        .map(|i| {
            let width = i + 1;
            let prompt = json!({
                "1": {"class_type": "StubInt", "inputs": {"value": width}},
                "2": {"class_type": "StubImage", "inputs": {"content": "WHITE", "height": 4, "width": ["1", 0], "batch_size": 1}},
                "3": {"class_type": "TestSleep", "inputs": {"value": ["2", 0], "seconds": 0.2}},
                "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": format!("p{i}")}},
            });
            s.queue(&prompt, None)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    let waiting = s.get("/prompt").json()["exec_info"]["queue_remaining"]
        .as_u64()
        .unwrap();
    assert!(
        waiting >= 10,
        "the kill must hit a full queue, {waiting} left"
    );
    s.kill_and_restart();

    for id in &ids {
        let entry = s.wait_history(id, Duration::from_secs(60));
        assert_eq!(entry["status"]["status_str"], "success", "{id}: {entry}");
    }
    let history = s.get("/history").json();
    assert!(
        history.get(&before).is_some(),
        "history from before the crash is kept"
    );
    assert_eq!(history.as_object().unwrap().len(), 21);
    assert_eq!(s.get("/queue").json()["queue_pending"], json!([]));
    // New prompts number after the restored ones, so they queue behind them.
    let r = s
        .post_json("/prompt", &json!({"prompt": stub_save("BLACK", "after")}))
        .json();
    assert!(r["number"].as_i64().unwrap() >= 21, "{r}");
}
