//! Starts the real `videosdgx` binary on a free port and talks to it over HTTP and WebSocket.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{self, Message};

pub struct Server {
    pub port: u16,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    child: Option<Child>,
    args: Vec<String>,
}

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut s = Server {
            port: free_port(),
            dir,
            _tmp: Some(tmp),
            child: None,
            args: extra.iter().map(|s| s.to_string()).collect(),
        };
        s.spawn();
        s
    }

    /// Starts the server; when it exits before listening (another process took its port in
    /// the meantime), again on another port.
    fn spawn(&mut self) {
        for _ in 0..5 {
            let log = std::fs::File::create(self.dir.join("server.log")).unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_videosdgx"))
                .args([
                    "--base-directory",
                    self.dir.to_str().unwrap(),
                    "--port",
                    &self.port.to_string(),
                    "--test-nodes",
                ])
                .args(&self.args)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("starting videosdgx");
            self.child = Some(child);
            if self.listening() {
                return;
            }
            self.port = free_port();
        }
        panic!("server did not start: {}", self.log());
    }

    /// Waits until the server listens; false when it exited first.
    fn listening(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // A connect to a port nobody listens on may pick that port as its own source and
            // connect to itself (TCP self-connect); only a connection to another socket counts.
            let connected = TcpStream::connect(("127.0.0.1", self.port))
                .is_ok_and(|s| s.local_addr().map(|a| a.port()).ok() != Some(self.port));
            if let Ok(Some(_)) = self.child.as_mut().expect("spawned").try_wait() {
                return false;
            }
            if connected {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "server did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// SIGKILL, then start again on the same folders and port.
    pub fn kill_and_restart(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        self.spawn();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into()
    }

    fn wrap(res: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Response {
        let mut res = res.expect("request failed");
        let status = res.status().as_u16();
        let headers = res
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let body = res
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .unwrap_or_default();
        Response {
            status,
            body,
            headers,
        }
    }

    pub fn get(&self, path: &str) -> Response {
        Self::wrap(Self::agent().get(&self.url(path)).call())
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Response {
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let agent = Self::agent();
        Self::wrap(match body {
            Some(b) => agent.run(req.body(b).unwrap()),
            None => agent.run(req.body(()).unwrap()),
        })
    }

    pub fn post(&self, path: &str, body: &str) -> Response {
        self.request("POST", path, &[], Some(body.as_bytes().to_vec()))
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Response {
        self.post(path, &body.to_string())
    }

    /// Queues a prompt; panics unless accepted.
    pub fn queue(&self, prompt: &Value, client_id: Option<&str>) -> String {
        let mut body = json!({"prompt": prompt});
        if let Some(c) = client_id {
            body["client_id"] = json!(c);
        }
        let r = self.post_json("/prompt", &body);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["prompt_id"].as_str().unwrap().to_string()
    }

    /// Queues a prompt that fails while running and returns its history's `execution_error`
    /// data.
    pub fn run_failing(&self, prompt: &Value, timeout: Duration) -> Value {
        let id = self.queue(prompt, None);
        let entry = self.wait_history(&id, timeout);
        entry["status"]["messages"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m[0] == "execution_error"))
            .unwrap_or_else(|| panic!("no execution error: {entry}"))[1]
            .clone()
    }

    /// Queues a prompt and waits for its history entry, which must report success.
    pub fn run_ok(&self, prompt: &Value, timeout: Duration) -> Value {
        let id = self.queue(prompt, None);
        let entry = self.wait_history(&id, timeout);
        assert_eq!(
            entry["status"]["status_str"],
            "success",
            "{}\n{}",
            entry["status"],
            self.log()
        );
        entry
    }

    /// Polls until the prompt has a history entry.
    pub fn wait_history(&self, prompt_id: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let h = self.get(&format!("/history/{prompt_id}")).json();
            if let Some(entry) = h.get(prompt_id) {
                return entry.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no history for {prompt_id}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn ws(&self, client_id: &str) -> Ws {
        let url = format!("ws://127.0.0.1:{}/ws?clientId={client_id}", self.port);
        let (socket, _) = tungstenite::connect(url).expect("websocket connect");
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = socket.get_ref() {
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
        }
        Ws { socket }
    }

    /// Makes the files the prompt's LoadImage, LoadAudio and LoadVideo nodes name in `input/`: a
    /// 40×30 gradient image, 2 s of a 330 Hz tone, and a 40×30 test-pattern mp4 of `frames`
    /// frames at 16 fps (ffmpeg's `testsrc`).
    pub fn make_inputs(&self, prompt: &Value, frames: usize) {
        let input = self.dir.join("input");
        std::fs::create_dir_all(&input).unwrap();
        let ffmpeg = |source: &str, args: &[&str], file: &str| {
            let status = Command::new("ffmpeg")
                .args(["-v", "error", "-y", "-f", "lavfi", "-i", source])
                .args(args)
                .arg(input.join(file))
                .status()
                .expect("ffmpeg (Debian's ffmpeg) is installed by the set-up");
            assert!(status.success());
        };
        for node in prompt.as_object().unwrap().values() {
            let inputs = &node["inputs"];
            match node["class_type"].as_str().unwrap() {
                "LoadImage" => {
                    let image = image::RgbImage::from_fn(40, 30, |x, y| {
                        image::Rgb([x as u8 * 6, y as u8 * 8, 90])
                    });
                    image
                        .save(input.join(inputs["image"].as_str().unwrap()))
                        .unwrap();
                }
                "LoadAudio" => ffmpeg(
                    "sine=frequency=330:duration=2:sample_rate=44100",
                    &[],
                    inputs["audio"].as_str().unwrap(),
                ),
                "LoadVideo" => ffmpeg(
                    "testsrc=size=40x30:rate=16",
                    &["-frames:v", &frames.to_string(), "-pix_fmt", "yuv420p"],
                    inputs["file"].as_str().unwrap(),
                ),
                _ => {}
            }
        }
    }

    pub fn output_dir(&self) -> PathBuf {
        self.dir.join("output")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub struct Ws {
    pub socket: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
}

impl Ws {
    /// The next text message, or None after `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        while let Some(message) = self.read_before(deadline) {
            if let Message::Text(t) = message {
                return Some(serde_json::from_str(&t).unwrap());
            }
        }
        None
    }

    /// The next frame of any kind, or None once `deadline` passes (reads time out regularly).
    fn read_before(&mut self, deadline: Instant) -> Option<Message> {
        while Instant::now() < deadline {
            match self.socket.read() {
                Ok(message) => return Some(message),
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("websocket error: {e}"),
            }
        }
        None
    }

    /// Every message for `prompt_id` up to and including `executing` with `node: null`.
    pub fn until_done(&mut self, prompt_id: &str, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while Instant::now() < deadline {
            let Some(m) = self.next(Duration::from_millis(500)) else {
                continue;
            };
            let mine = m["data"]["prompt_id"] == prompt_id;
            let done = mine && m["type"] == "executing" && m["data"]["node"].is_null();
            if mine || m["type"] == "status" {
                out.push(m);
            }
            if done {
                return out;
            }
        }
        panic!("prompt {prompt_id} did not finish; got {out:?}");
    }

    /// Like `until_done`, also returning the binary frames received meanwhile.
    pub fn until_done_with_binary(
        &mut self,
        prompt_id: &str,
        timeout: Duration,
    ) -> (Vec<Value>, Vec<Vec<u8>>) {
        let deadline = Instant::now() + timeout;
        let (mut texts, mut frames) = (Vec::new(), Vec::new());
        while let Some(message) = self.read_before(deadline) {
            match message {
                Message::Text(t) => {
                    let m: Value = serde_json::from_str(&t).unwrap();
                    let done = m["type"] == "executing"
                        && m["data"]["node"].is_null()
                        && m["data"]["prompt_id"] == prompt_id;
                    texts.push(m);
                    if done {
                        return (texts, frames);
                    }
                }
                Message::Binary(b) => frames.push(b.to_vec()),
                _ => {}
            }
        }
        panic!("prompt {prompt_id} did not finish");
    }

    /// Binary frames arriving within `window`.
    pub fn binary_frames(&mut self, window: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + window;
        let mut frames = Vec::new();
        while let Some(message) = self.read_before(deadline) {
            if let Message::Binary(b) = message {
                frames.push(b.to_vec());
            }
        }
        frames
    }

    pub fn send(&mut self, text: &str) {
        self.socket.send(Message::Text(text.into())).unwrap();
    }
}

pub fn types(msgs: &[Value]) -> Vec<String> {
    msgs.iter()
        .map(|m| m["type"].as_str().unwrap().to_string())
        .collect()
}

pub fn executed_nodes(msgs: &[Value]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m["type"] == "executing" && !m["data"]["node"].is_null())
        .map(|m| m["data"]["node"].as_str().unwrap().to_string())
        .collect()
}

/// A StubImage → SaveImage graph.
pub fn stub_save(content: &str, prefix: &str) -> Value {
    json!({
        "1": {"class_type": "StubImage", "inputs": {"content": content, "height": 8, "width": 8, "batch_size": 1}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    })
}

pub fn png_pixel(path: &Path) -> [u8; 3] {
    let img = image::open(path).unwrap().to_rgb8();
    img.get_pixel(0, 0).0
}

/// `ffprobe -count_frames -show_streams` of a media file: its streams.
pub fn ffprobe(path: &Path) -> Vec<Value> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-show_streams",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("ffprobe (Debian's ffmpeg) is installed by the set-up");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout).unwrap()["streams"]
        .as_array()
        .unwrap()
        .clone()
}

/// `videosdgx run FILE --base-directory BASE` on `workflow` written to `file`: the saved
/// outputs it prints, by node id.
pub fn run_workflow_file(
    workflow: &Value,
    file: &std::path::Path,
    base: &std::path::Path,
) -> Value {
    std::fs::write(file, workflow.to_string()).unwrap();
    let out = videosdgx(&[
        "run".as_ref(),
        file.as_os_str(),
        "--base-directory".as_ref(),
        base.as_os_str(),
    ]);
    serde_json::from_slice(&out).unwrap()
}

/// `videosdgx ARGS…`'s stdout; panics with its stderr when it fails.
pub fn videosdgx(args: &[&std::ffi::OsStr]) -> Vec<u8> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_videosdgx"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// One prompt from several maps of nodes.
pub fn merged(parts: &[Value]) -> Value {
    let mut out = serde_json::Map::new();
    for p in parts {
        out.extend(p.as_object().expect("a map of nodes").clone());
    }
    Value::Object(out)
}
