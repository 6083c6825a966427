//! Every node's `/object_info` entry equals upstream ComfyUI's, as recorded from the upstream
//! checkout by `scripts/record_upstream_object_info.py` (empty model and input folders on both
//! sides). Objects compare by key, numbers by kind (an upstream `1.0` is not our `1`).

mod common;

use common::Server;
use serde_json::Value;

#[test]
fn object_info_matches_upstream_comfyui() {
    let recorded: serde_json::Map<String, Value> =
        serde_json::from_str(include_str!("fixtures/upstream_object_info.json")).unwrap();
    let s = Server::start(&[]);
    let served = s.get("/object_info").json();
    let served = served.as_object().unwrap();
    let mut differing = Vec::new();
    // The test server's own nodes (`nodes::testing`) are custom nodes, not upstream's.
    let builtin = served.iter().filter(|(_, info)| {
        !info["python_module"]
            .as_str()
            .unwrap()
            .starts_with("custom_nodes.")
    });
    for (name, ours) in builtin {
        match recorded.get(name) {
            None => differing.push(format!("{name}: not recorded (re-run the recorder)")),
            Some(upstream) if upstream != ours => {
                differing.push(format!("{name}:\n  upstream {upstream}\n  ours     {ours}"))
            }
            Some(_) => {}
        }
    }
    for name in recorded.keys().filter(|n| !served.contains_key(*n)) {
        differing.push(format!("{name}: recorded but not served"));
    }
    assert!(differing.is_empty(), "{}", differing.join("\n"));
}
