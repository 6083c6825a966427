//! Protocol latency of the release binary: `POST /prompt` → `execution_start` on the
//! WebSocket for a trivial graph, and `GET /object_info`. Prints p50/p99 in milliseconds.
//!
//! Run: `make bench` (or `cargo bench --bench server_latency`).

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{self, Message};

const ROUNDS: usize = 300;

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

fn report(name: &str, mut samples: Vec<f64>) {
    let (p50, p99) = (
        percentile(&mut samples, 0.5),
        percentile(&mut samples, 0.99),
    );
    println!(
        "{name}: p50 {p50:.3} ms, p99 {p99:.3} ms ({} samples)",
        samples.len()
    );
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_videosdgx"))
        .args([
            "--base-directory",
            dir.path().to_str().unwrap(),
            "--port",
            &port.to_string(),
            "--verbose",
            "WARNING",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
    let base = format!("http://127.0.0.1:{port}");
    let (mut ws, _) =
        tungstenite::connect(format!("ws://127.0.0.1:{port}/ws?clientId=bench")).unwrap();

    let prompt = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    });
    let body = json!({"prompt": prompt, "client_id": "bench"}).to_string();
    let mut to_start = Vec::new();
    for _ in 0..ROUNDS {
        let t0 = Instant::now();
        let mut res = agent
            .post(&format!("{base}/prompt"))
            .send(body.as_str())
            .unwrap();
        let id = res.body_mut().read_json::<Value>().unwrap()["prompt_id"]
            .as_str()
            .unwrap()
            .to_string();
        let mut started = false;
        loop {
            let Message::Text(t) = ws.read().unwrap() else {
                continue;
            };
            let m: Value = serde_json::from_str(&t).unwrap();
            if m["data"]["prompt_id"] != id.as_str() {
                continue;
            }
            if m["type"] == "execution_start" && !started {
                to_start.push(t0.elapsed().as_secs_f64() * 1e3);
                started = true;
            }
            if m["type"] == "executing" && m["data"]["node"].is_null() {
                break;
            }
        }
    }
    report("POST /prompt -> execution_start", to_start);

    let mut info = Vec::new();
    for _ in 0..ROUNDS {
        let t0 = Instant::now();
        let mut res = agent.get(&format!("{base}/object_info")).call().unwrap();
        res.body_mut().read_to_vec().unwrap();
        info.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    report("GET /object_info", info);
    let _ = child.kill();
    let _ = child.wait();
}
