//! Every HTTP route, with and without `/api`, its status codes and shapes; uploads and
//! `/view` path checks; body limits and the origin check.

mod common;

use std::time::Duration;

use common::{stub_save, Server};
use serde_json::{json, Value};

const GET_ROUTES: &[&str] = &[
    "/prompt",
    "/queue",
    "/history",
    "/history/unknown",
    "/object_info",
    "/object_info/EmptyImage",
    "/system_stats",
    "/features",
    "/embeddings",
    "/models",
    "/models/checkpoints",
    "/extensions",
    "/experiment/models",
    "/experiment/models/loras",
    "/workflow_templates",
    "/i18n",
    "/users",
    "/settings",
    "/settings/Comfy.Foo",
    "/v2/userdata",
];

#[test]
fn every_get_route_answers_with_and_without_api_prefix() {
    let s = Server::start(&[]);
    for route in GET_ROUTES {
        for prefix in ["", "/api"] {
            let r = s.get(&format!("{prefix}{route}"));
            assert_eq!(r.status, 200, "{prefix}{route}: {}", r.text());
            assert_eq!(
                r.header("content-type"),
                Some("application/json; charset=utf-8"),
                "{prefix}{route}"
            );
            r.json();
            let head = s.request("HEAD", &format!("{prefix}{route}"), &[], None);
            assert_eq!(head.status, 200, "HEAD {prefix}{route}");
        }
    }
    for route in [
        "/internal/logs",
        "/internal/logs/raw",
        "/internal/folder_paths",
        "/internal/files/output",
    ] {
        assert_eq!(s.get(route).status, 200, "{route}");
        assert_eq!(
            s.get(&format!("/api{route}")).status,
            404,
            "internal routes are not under /api"
        );
    }
    assert_eq!(
        s.get("/internal/files/secret").json(),
        json!({"error": "Invalid directory type"})
    );
    assert_eq!(s.get("/").status, 200);
    assert_eq!(s.get("/nope").status, 404);
    assert_eq!(s.get("/prompt/").status, 404, "no trailing-slash aliases");
    assert_eq!(s.request("DELETE", "/prompt", &[], None).status, 405);
    assert_eq!(s.get("/models/unet").status, 404);
    assert_eq!(s.get("/object_info/Nope").json(), json!({}));
    assert_eq!(s.get("/history/unknown").json(), json!({}));

    let stats = s.get("/system_stats").json();
    for key in [
        "os",
        "python_version",
        "embedded_python",
        "comfyui_version",
        "pytorch_version",
        "argv",
        "ram_total",
        "ram_free",
    ] {
        assert!(
            stats["system"].get(key).is_some(),
            "system_stats.system.{key}"
        );
    }
    assert!(stats["system"]["ram_total"].as_u64().unwrap() > 0);
    let device = &stats["devices"][0];
    for key in [
        "name",
        "type",
        "index",
        "vram_total",
        "vram_free",
        "torch_vram_total",
        "torch_vram_free",
    ] {
        assert!(device.get(key).is_some(), "devices[0].{key}");
    }
    assert_eq!(
        s.get("/features").json(),
        json!({"supports_preview_metadata": true, "max_upload_size": 104857600,
               "node_replacements": true, "assets": false})
    );
    let models = s.get("/models").json();
    assert_eq!(models[0], "checkpoints");
    assert!(models
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m == "diffusion_models"));
}

#[test]
fn object_info_lists_the_builtin_nodes_with_comfyui_schemas() {
    let s = Server::start(&[]);
    let info = s.get("/object_info").json();
    for name in [
        "PrimitiveInt",
        "PrimitiveFloat",
        "PrimitiveString",
        "PrimitiveStringMultiline",
        "PrimitiveBoolean",
        "EmptyImage",
        "LoadImage",
        "LoadImageMask",
        "SaveImage",
        "PreviewImage",
        "ImageInvert",
        "ImageScale",
        "ImageScaleBy",
        "ImageCrop",
        "ImageBatch",
        "ImageFromBatch",
        "RepeatImageBatch",
        "GetImageSize",
        "SolidMask",
        "InvertMask",
        "MaskToImage",
        "ImageToMask",
    ] {
        let node = &info[name];
        for key in [
            "input",
            "input_order",
            "output",
            "output_is_list",
            "output_name",
            "name",
            "display_name",
            "description",
            "python_module",
            "category",
            "output_node",
        ] {
            assert!(node.get(key).is_some(), "{name}.{key}");
        }
    }
    let save = &info["SaveImage"];
    assert_eq!(save["output_node"], true);
    assert_eq!(
        save["input"]["hidden"],
        json!({"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"})
    );
    assert_eq!(
        save["input_order"],
        json!({"required": ["images", "filename_prefix"], "hidden": ["prompt", "extra_pnginfo"]})
    );
    assert_eq!(
        info["LoadImage"]["input"]["required"]["image"],
        json!([[], {"image_upload": true}])
    );
    assert_eq!(info["LoadImage"]["output"], json!(["IMAGE", "MASK"]));
    assert_eq!(
        info["ImageToMask"]["input"]["required"]["channel"],
        json!(["COMBO", {"multiselect": false, "options": ["red", "green", "blue", "alpha"]}])
    );
    assert_eq!(
        info["PrimitiveInt"]["input"]["required"]["value"][1]["max"],
        json!(9223372036854775807i64)
    );
    assert_eq!(
        info["GetImageSize"]["output_name"],
        json!(["width", "height", "batch_size"])
    );
}

fn multipart(fields: &[(&str, &str)], file: Option<(&str, &str, &[u8])>) -> (String, Vec<u8>) {
    let boundary = "videosdgxboundary";
    let mut body = Vec::new();
    for (k, v) in fields {
        body.extend(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    if let Some((field, name, data)) = file {
        body.extend(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\nContent-Type: image/png\r\n\r\n").as_bytes());
        body.extend(data);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn png_bytes(rgba: [u8; 4]) -> Vec<u8> {
    let img = image::RgbaImage::from_pixel(4, 4, image::Rgba(rgba));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn upload(
    s: &Server,
    route: &str,
    fields: &[(&str, &str)],
    name: &str,
    data: &[u8],
) -> common::Response {
    let (ct, body) = multipart(fields, Some(("image", name, data)));
    s.request("POST", route, &[("Content-Type", &ct)], Some(body))
}

#[test]
fn uploads_rename_on_duplicates_and_feed_load_image() {
    let s = Server::start(&[]);
    let red = png_bytes([255, 0, 0, 255]);
    let blue = png_bytes([0, 0, 255, 128]);
    let r = upload(&s, "/upload/image", &[], "pic.png", &red);
    assert_eq!(
        r.json(),
        json!({"name": "pic.png", "subfolder": "", "type": "input"})
    );
    // Same bytes: the existing name, no copy.
    assert_eq!(
        upload(&s, "/api/upload/image", &[], "pic.png", &red).json()["name"],
        "pic.png"
    );
    // Other bytes: renamed.
    assert_eq!(
        upload(&s, "/upload/image", &[], "pic.png", &blue).json()["name"],
        "pic (1).png"
    );
    assert_eq!(
        upload(
            &s,
            "/upload/image",
            &[("overwrite", "true")],
            "pic.png",
            &blue
        )
        .json()["name"],
        "pic.png"
    );
    let r = upload(
        &s,
        "/upload/image",
        &[("subfolder", "sub/dir"), ("type", "temp")],
        "x.png",
        &red,
    );
    assert_eq!(
        r.json(),
        json!({"name": "x.png", "subfolder": "sub/dir", "type": "temp"})
    );
    assert!(s.dir.join("temp/sub/dir/x.png").is_file());
    assert_eq!(
        upload(
            &s,
            "/upload/image",
            &[("subfolder", "../../etc")],
            "x.png",
            &red
        )
        .status,
        400
    );
    assert_eq!(
        upload(&s, "/upload/image", &[("type", "models")], "x.png", &red).status,
        400
    );
    let (ct, body) = multipart(&[("type", "input")], None);
    assert_eq!(
        s.request(
            "POST",
            "/upload/image",
            &[("Content-Type", &ct)],
            Some(body)
        )
        .status,
        400
    );

    // The upload appears in LoadImage's choices and loads: colour and alpha → mask.
    let info = s.get("/object_info/LoadImage").json();
    assert_eq!(
        info["LoadImage"]["input"]["required"]["image"][0],
        json!(["pic (1).png", "pic.png"])
    );
    let prompt = json!({
        "1": {"class_type": "LoadImage", "inputs": {"image": "pic.png"}},
        "2": {"class_type": "MaskToImage", "inputs": {"mask": ["1", 1]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "loaded"}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "mask"}},
    });
    let id = s.queue(&prompt, None);
    assert_eq!(
        s.wait_history(&id, Duration::from_secs(20))["status"]["status_str"],
        "success"
    );
    assert_eq!(
        common::png_pixel(&s.output_dir().join("loaded_00001_.png")),
        [0, 0, 255]
    );
    // Alpha 128 gives mask 1 − 128/255 in float32, which truncates to 126 (as in ComfyUI).
    assert_eq!(
        common::png_pixel(&s.output_dir().join("mask_00001_.png")),
        [126, 126, 126]
    );
    // A missing file is a validation error naming it.
    let missing = json!({"1": {"class_type": "LoadImage", "inputs": {"image": "gone.png"}}, "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}});
    let r = s.post_json("/prompt", &json!({"prompt": missing}));
    assert_eq!(
        r.json()["node_errors"]["1"]["errors"][0]["details"],
        "image - Invalid image file: gone.png"
    );

    // Mask upload: the original's alpha replaced by the mask's.
    let mask = png_bytes([0, 0, 0, 10]);
    let r = upload(
        &s,
        "/upload/mask",
        &[
            (
                "original_ref",
                r#"{"filename": "pic.png", "type": "input"}"#,
            ),
            ("subfolder", "clipspace"),
        ],
        "m.png",
        &mask,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let saved = image::open(s.dir.join("input/clipspace/m.png"))
        .unwrap()
        .to_rgba8();
    assert_eq!(saved.get_pixel(0, 0).0, [0, 0, 255, 10]);
}

#[test]
fn view_serves_files_with_range_and_rejects_traversal() {
    let s = Server::start(&[]);
    let id = s.queue(&stub_save("WHITE", "v"), None);
    s.wait_history(&id, Duration::from_secs(20));
    let whole = s.get("/view?filename=v_00001_.png&type=output");
    assert_eq!(whole.status, 200);
    assert_eq!(whole.header("content-type"), Some("image/png"));
    assert_eq!(
        whole.header("content-disposition"),
        Some("filename=\"v_00001_.png\"")
    );
    let part = s.request(
        "GET",
        "/api/view?filename=v_00001_.png",
        &[("Range", "bytes=1-3")],
        None,
    );
    assert_eq!(part.status, 206);
    assert_eq!(part.body, whole.body[1..4]);
    assert_eq!(
        s.get("/view?filename=v_00001_.png%20%5Boutput%5D&type=input")
            .status,
        200,
        "annotation overrides type"
    );
    let preview = s.get("/view?filename=v_00001_.png&preview=jpeg;80");
    assert_eq!(preview.header("content-type"), Some("image/jpeg"));
    let alpha = s.get("/view?filename=v_00001_.png&channel=a");
    assert_eq!(alpha.header("content-type"), Some("image/png"));

    std::fs::write(s.dir.join("secret.txt"), "secret").unwrap();
    std::os::unix::fs::symlink(s.dir.join("secret.txt"), s.dir.join("output/link.txt")).unwrap();
    std::fs::write(s.output_dir().join("page.html"), "<script>").unwrap();
    for (url, code) in [
        ("/view", 404),
        ("/view?filename=../secret.txt", 400),
        ("/view?filename=%2e%2e%2fsecret.txt", 400),
        ("/view?filename=..%2Fsecret.txt", 400),
        ("/view?filename=/etc/passwd", 400),
        ("/view?filename=%2Fetc%2Fpasswd", 400),
        ("/view?filename=secret.txt&subfolder=..", 403),
        ("/view?filename=passwd&subfolder=/etc", 403),
        ("/view?filename=secret.txt&subfolder=%2E%2E", 403),
        ("/view?filename=v_00001_.png&type=models", 400),
        ("/view?filename=link.txt", 404),
        ("/view?filename=nothere.png", 404),
    ] {
        let r = s.get(url);
        assert_eq!(r.status, code, "{url}");
        assert!(!r.text().contains("secret"), "{url} leaked the file");
    }
    // Active content is downloaded, never rendered in our origin; an SVG only inside <img>.
    std::fs::write(s.output_dir().join("pic.svg"), "<svg/>").unwrap();
    for (file, dest, mime, disposition) in [
        (
            "page.html",
            None,
            "application/octet-stream",
            "attachment; filename=\"page.html\"",
        ),
        (
            "pic.svg",
            None,
            "application/octet-stream",
            "attachment; filename=\"pic.svg\"",
        ),
        (
            "pic.svg",
            Some("document"),
            "application/octet-stream",
            "attachment; filename=\"pic.svg\"",
        ),
        (
            "pic.svg",
            Some("image"),
            "image/svg+xml",
            "filename=\"pic.svg\"",
        ),
    ] {
        let headers: Vec<(&str, &str)> = dest.map(|d| ("Sec-Fetch-Dest", d)).into_iter().collect();
        let r = s.request("GET", &format!("/view?filename={file}"), &headers, None);
        assert_eq!(r.header("content-type"), Some(mime), "{file} {dest:?}");
        assert_eq!(
            r.header("content-disposition"),
            Some(disposition),
            "{file} {dest:?}"
        );
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(r.header("vary"), Some("Sec-Fetch-Dest"));
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
    assert_eq!(whole.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(whole.header("vary"), None);
}

#[test]
fn frontend_root_is_served_after_the_routes() {
    let web = tempfile::tempdir().unwrap();
    let root = web.path();
    for (file, text) in [
        ("index.html", "<!doctype html><title>ComfyUI</title>"),
        ("assets/index-abc.js", "export {}"),
        ("extensions/core/editAttention.js", "export {}"),
        ("extensions/extra/tool.js", "export {}"),
        ("prompt", "a file that an API route shadows"),
    ] {
        let path = root.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let s = Server::start(&["--front-end-root", root.to_str().unwrap()]);
    for path in ["/", "/api/"] {
        let index = s.get(path);
        assert_eq!(
            index.text(),
            "<!doctype html><title>ComfyUI</title>",
            "{path}"
        );
        assert_eq!(
            index.header("cache-control"),
            Some("no-store, must-revalidate")
        );
        assert_eq!(index.header("pragma"), Some("no-cache"));
    }
    let js = s.get("/assets/index-abc.js");
    assert_eq!(js.status, 200);
    assert!(js.header("content-type").unwrap().contains("javascript"));
    assert_eq!(js.header("cache-control"), Some("no-cache"));
    assert_eq!(
        s.get("/api/assets/index-abc.js").status,
        404,
        "no files under /api"
    );
    assert_eq!(s.get("/prompt").json()["exec_info"]["queue_remaining"], 0);
    let escape = s.get("/assets/..%2F..%2F..%2F..%2Fetc%2Fpasswd");
    assert!(escape.status >= 400 && !escape.text().contains("root:"));
    assert_eq!(
        s.get("/api/extensions").json(),
        json!([
            "/extensions/core/editAttention.js",
            "/extensions/extra/tool.js"
        ])
    );
    let css = s.get("/user.css");
    assert_eq!(
        (css.status, css.header("content-type")),
        (200, Some("text/css"))
    );
    // A fresh user folder answers the frontend's start-up reads without 404s.
    assert_eq!(s.get("/api/userdata?dir=workflows").json(), json!([]));
    assert_eq!(s.get("/api/userdata?dir=subgraphs").json(), json!([]));
    assert_eq!(
        s.get("/api/userdata/comfy.templates.json").json(),
        json!([])
    );
    assert_eq!(s.get("/api/global_subgraphs").json(), json!({}));
    let replacements = s.get("/api/node_replacements").json();
    assert_eq!(
        replacements["ImageScaleBy"][0]["new_node_id"],
        "ResizeImageMaskNode"
    );

    // Templates come from the venv's template packages (scripts/setup.sh installs them).
    let index = s.get("/templates/index.json");
    assert_eq!(
        index.status, 200,
        "comfyui-workflow-templates-json in .venv"
    );
    assert_eq!(index.header("content-type"), Some("application/json"));
    assert!(index.json().as_array().is_some_and(|a| !a.is_empty()));
    assert_eq!(s.get("/templates/..%2Fsecret.json").status, 404);
    let stats = s.get("/system_stats").json();
    assert_eq!(stats["system"]["required_frontend_version"], "1.49.6");
    assert_eq!(
        stats["system"]["comfy_package_versions"][0]["name"],
        "comfyui-frontend-package"
    );
}

#[test]
fn queue_history_free_and_limits() {
    let s = Server::start(&["--max-upload-size", "0.001"]);
    let big = "x".repeat(2000);
    let r = s.post("/prompt", &format!("{{\"prompt\": \"{big}\"}}"));
    assert_eq!(r.status, 413);
    assert!(
        r.text()
            .starts_with("Maximum request body size 1049 exceeded"),
        "{}",
        r.text()
    );
    assert_eq!(s.get("/features").json()["max_upload_size"], json!(1049.0));
    drop(s);

    let s = Server::start(&[]);
    // A long prompt keeps the worker busy while others wait in the queue.
    let slow = json!({"1": {"class_type": "TestSleep", "inputs": {"value": 1, "seconds": 30.0}}, "2": {"class_type": "StubImage", "inputs": {"content": "WHITE", "height": ["1", 0], "width": 4, "batch_size": 1}}, "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}});
    let running = s.queue(&slow, None);
    let a = s.queue(&stub_save("WHITE", "a"), None);
    let b = s
        .post_json(
            "/prompt",
            &json!({"prompt": stub_save("WHITE", "b"), "number": 5}),
        )
        .json();
    assert_eq!(b["number"], json!(5.0));
    let front = s
        .post_json(
            "/prompt",
            &json!({"prompt": stub_save("WHITE", "f"), "front": true}),
        )
        .json();
    assert!(front["number"].as_i64().unwrap() < 0);
    std::thread::sleep(Duration::from_millis(300));
    let q = s.get("/queue").json();
    assert_eq!(q["queue_running"][0][1], running);
    assert_eq!(q["queue_pending"].as_array().unwrap().len(), 3);
    assert_eq!(
        s.get("/prompt").json(),
        json!({"exec_info": {"queue_remaining": 4}})
    );
    let r = s.post_json("/queue", &json!({"delete": [a]}));
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_eq!(
        s.get("/queue").json()["queue_pending"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    s.post_json("/queue", &json!({"clear": true}));
    assert_eq!(s.get("/queue").json()["queue_pending"], json!([]));
    s.post_json("/interrupt", &json!({}));
    s.wait_history(&running, Duration::from_secs(20));

    let done = s.queue(&stub_save("BLACK", "d"), None);
    s.wait_history(&done, Duration::from_secs(20));
    assert_eq!(
        s.get("/history?max_items=1")
            .json()
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        [&done]
    );
    assert_eq!(
        s.get("/history?max_items=1&offset=0")
            .json()
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        [&running]
    );
    assert_eq!(s.get("/history?offset=9").json(), json!({}));
    assert_eq!(s.get("/history?max_items=x").status, 400);
    s.post_json("/history", &json!({"delete": [running]}));
    assert_eq!(s.get("/history").json().as_object().unwrap().len(), 1);
    s.post_json("/history", &json!({"clear": true}));
    assert_eq!(s.get("/history").json(), json!({}));
    assert_eq!(
        s.post_json(
            "/free",
            &json!({"unload_models": true, "free_memory": true})
        )
        .status,
        200
    );
}

#[test]
fn origin_check_and_cors() {
    let s = Server::start(&[]);
    let host = format!("127.0.0.1:{}", s.port);
    let evil = s.request(
        "GET",
        "/queue",
        &[("Host", &host), ("Origin", "http://evil.example")],
        None,
    );
    assert_eq!(evil.status, 403);
    let other_port = s.request(
        "POST",
        "/prompt",
        &[("Host", &host), ("Origin", "http://127.0.0.1:1")],
        Some(b"{}".to_vec()),
    );
    assert_eq!(other_port.status, 403);
    let cross_site = s.request("GET", "/queue", &[("Sec-Fetch-Site", "cross-site")], None);
    assert_eq!(cross_site.status, 403);
    let same = s.request(
        "GET",
        "/queue",
        &[("Host", &host), ("Origin", &format!("http://{host}"))],
        None,
    );
    assert_eq!(same.status, 200);
    assert_eq!(
        s.request(
            "GET",
            "/queue",
            &[("Host", "example.com"), ("Origin", "http://evil.example")],
            None
        )
        .status,
        200
    );
    assert_eq!(s.request("OPTIONS", "/prompt", &[], None).status, 200);
    drop(s);

    let s = Server::start(&["--enable-cors-header"]);
    let host = format!("127.0.0.1:{}", s.port);
    let r = s.request(
        "GET",
        "/queue",
        &[("Host", &host), ("Origin", "http://evil.example")],
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let pre = s.request("OPTIONS", "/prompt", &[], None);
    assert_eq!(
        (pre.status, pre.header("access-control-allow-methods")),
        (200, Some("POST, GET, DELETE, PUT, OPTIONS"))
    );
}

#[test]
fn users_settings_and_userdata() {
    let s = Server::start(&[]);
    // The default user's folder exists from the start (seeded for the frontend).
    assert_eq!(
        s.get("/users").json(),
        json!({"storage": "server", "migrated": true})
    );
    assert_eq!(s.get("/settings").json(), json!({}));
    let r = s.request(
        "POST",
        "/settings",
        &[("Content-Type", "text/plain;charset=UTF-8")],
        Some(br#"{"a": 1, "b": 2}"#.to_vec()),
    );
    assert_eq!(r.status, 200);
    s.post("/api/settings/b", "\"two\"");
    assert_eq!(s.get("/settings").json(), json!({"a": 1, "b": "two"}));
    assert_eq!(s.get("/settings/b").json(), json!("two"));
    assert_eq!(s.get("/settings/zz").json(), Value::Null);

    let r = s.post("/userdata/workflows%2Fmy%20flow.json", "{\"nodes\": []}");
    assert_eq!(r.json(), json!("workflows/my flow.json"));
    assert_eq!(
        s.post("/userdata/workflows%2Fmy%20flow.json?overwrite=false", "{}")
            .status,
        409
    );
    assert_eq!(
        s.get("/userdata/workflows%2Fmy%20flow.json").text(),
        "{\"nodes\": []}"
    );
    let list = s
        .get("/userdata?dir=workflows&recurse=true&full_info=true")
        .json();
    assert_eq!(list[0]["path"], "my flow.json");
    assert_eq!(
        s.get("/userdata?dir=workflows").json(),
        json!(["my flow.json"])
    );
    assert_eq!(s.get("/userdata").status, 400);
    assert_eq!(s.get("/userdata?dir=nothing").status, 404);
    assert_eq!(s.get("/userdata?dir=..%2F..").status, 403);
    assert_eq!(s.get("/userdata/..%2F..%2Fsecret").status, 403);
    assert_eq!(
        s.get("/userdata/%252E%252E%252Fsecret").status,
        403,
        "double-encoded traversal"
    );
    let moved = s.post(
        "/userdata/workflows%2Fmy%20flow.json/move/workflows%2Frenamed.json",
        "",
    );
    assert_eq!(moved.json(), json!("workflows/renamed.json"));
    let v2 = s.get("/v2/userdata?path=workflows").json();
    assert_eq!(v2[0]["name"], "renamed.json");
    assert_eq!(
        s.request("DELETE", "/userdata/workflows%2Frenamed.json", &[], None)
            .status,
        204
    );
    assert_eq!(
        s.request("DELETE", "/userdata/workflows%2Frenamed.json", &[], None)
            .status,
        404
    );
    let id = s.post_json("/users", &json!({"username": "Ann B"})).json();
    assert!(id.as_str().unwrap().starts_with("Ann-B_"));
}
