//! `videosdgx run` executes API- and UI-format workflows without a server.

use std::process::Command;

fn run(workflow: &str, base: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_videosdgx"))
        .args(["run", workflow, "--base-directory", base.to_str().unwrap()])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

#[test]
fn runs_api_and_ui_workflows() {
    let base = tempfile::tempdir().unwrap();
    let out = run("workflows/empty_image_api.json", base.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let img = image::open(base.path().join("output/VideosDGX_00002_.png"))
        .unwrap()
        .to_rgb8();
    assert_eq!((img.width(), img.height()), (256, 128));
    // 1 − 0x99/255 in float32 truncates to 101, exactly as torch computes it for ComfyUI.
    assert_eq!(img.get_pixel(0, 0).0, [204, 153, 101]);

    // The UI workflow: PrimitiveNode sets the width, the bypassed invert and the Reroute pass
    // the image through, the muted preview is dropped.
    let out = run("workflows/empty_image_ui.json", base.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let img = image::open(base.path().join("output/VideosDGX_ui_00001_.png"))
        .unwrap()
        .to_rgb8();
    assert_eq!((img.width(), img.height()), (96, 128));
    assert_eq!(img.get_pixel(0, 0).0, [0x33, 0x66, 0x99]);
    assert!(!base.path().join("output/VideosDGX_ui_00003_.png").exists());

    let bad = base.path().join("bad.json");
    std::fs::write(&bad, r#"{"1": {"class_type": "SaveImage", "inputs": {}}}"#).unwrap();
    let out = run(bad.to_str().unwrap(), base.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("required_input_missing"));
}

/// Each official template kept in workflows/ as its UI file and its API file: the UI file
/// converts to the API file, as the frontend would queue it.
#[test]
fn template_ui_files_convert_to_their_api_files() {
    let templates = format!(
        "{}/.venv/lib/python3.11/site-packages/comfyui_workflow_templates_json/templates",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut registry = videosdgx::engine::registry::Registry::default();
    videosdgx::nodes::register_builtin(&mut registry);
    let mut checked = 0;
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/workflows")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let Some(stem) = name.strip_suffix("_ui.json") else {
            continue;
        };
        if !std::path::Path::new(&format!("{templates}/{stem}.json")).exists() {
            continue;
        }
        let (converted, _) = videosdgx::run_cli::load_prompt(&path, &registry).unwrap();
        let api = path.with_file_name(format!("{stem}_api.json"));
        let expected: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&api).unwrap()).unwrap();
        assert_eq!(serde_json::Value::Object(converted), expected, "{name}");
        checked += 1;
    }
    assert!(checked >= 50, "only {checked} templates in workflows/");
}
