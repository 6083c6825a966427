//! Runs the Python reference scripts of tests/python with the project's interpreter
//! (`VIDEOSDGX_PYTHON`, else the set-up's `.venv`).
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// The script's stdout for `script DIR`; panics with its stderr when it fails.
pub fn run_into(script: &str, dir: &Path) -> Vec<u8> {
    let root = env!("CARGO_MANIFEST_DIR");
    let python =
        std::env::var("VIDEOSDGX_PYTHON").unwrap_or_else(|_| format!("{root}/.venv/bin/python"));
    let out = Command::new(python)
        .arg(format!("{root}/tests/python/{script}"))
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
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
