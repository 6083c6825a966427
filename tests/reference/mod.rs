//! Runs the Python reference scripts of tests/python with the project's interpreter
//! (`VIDEOSDGX_PYTHON`, else the set-up's `.venv`, else `python3` as on the lent GPU).
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The script's stdout for `script ARGS…` fed `stdin`; panics with its stderr when it fails.
pub fn run(script: &str, args: &[&OsStr], stdin: &[u8]) -> Vec<u8> {
    let root = env!("CARGO_MANIFEST_DIR");
    let venv = format!("{root}/.venv/bin/python");
    let python = std::env::var("VIDEOSDGX_PYTHON").unwrap_or_else(|_| {
        if Path::new(&venv).exists() {
            venv
        } else {
            "python3".into()
        }
    });
    let mut child = Command::new(python)
        .arg(format!("{root}/tests/python/{script}"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {script}: {e}"));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The script's stdout for `script DIR`.
pub fn run_into(script: &str, dir: &Path) -> Vec<u8> {
    run(script, &[dir.as_os_str()], b"")
}

/// The folder the script has written its fixtures into, for the tests of one binary to share
/// through a static: Cargo's scratch folder for tests (inside `target/`) under the script's name,
/// written afresh by each run. A static `TempDir` is never dropped, so each run would leave one
/// behind in /tmp.
pub fn shared_fixtures(script: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(script.trim_end_matches(".py"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    run_into(script, &dir);
    dir
}

/// A fresh folder the script has written its fixtures into.
pub fn fixtures(script: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    run_into(script, dir.path());
    dir
}

/// The largest absolute difference between two tensors of the same shape.
pub fn max_abs_diff(a: &tch::Tensor, b: &tch::Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}
