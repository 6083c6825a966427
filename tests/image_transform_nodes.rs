//! The image/transform nodes. ResizeImageMaskNode and the V3 DynamicCombo input it introduced:
//! the `/object_info` shape (`COMFY_DYNAMICCOMBO_V3` with each option's inputs), prompts naming
//! the chosen option's inputs `resize_type.<name>` (the others ignored, the chosen one's
//! required), the UI format's widget values (key, the option's widgets, then the rest), and the
//! sizes each rule gives an image and a mask. ImageStitch: sizes, padding and the spacing bar.
//! The Lanczos resize under them all, against Pillow's.

mod common;
mod reference;

use std::time::Duration;

use common::Server;
use serde_json::{json, Value};
use videosdgx::engine::registry::Registry;
use videosdgx::pil_resample::resize_lanczos;

const T: Duration = Duration::from_secs(60);

fn registry() -> Registry {
    let mut r = Registry::default();
    videosdgx::nodes::register_builtin(&mut r);
    r
}

#[test]
fn the_dynamic_combo_shows_each_options_inputs() {
    let s = Server::start(&[]);
    let info = s.get("/object_info/ResizeImageMaskNode").json();
    let node = &info["ResizeImageMaskNode"];
    assert_eq!(
        node["input_order"]["required"],
        json!(["input", "resize_type", "scale_method"])
    );
    let resize = &node["input"]["required"]["resize_type"];
    assert_eq!(resize[0], "COMFY_DYNAMICCOMBO_V3");
    let options = resize[1]["options"].as_array().unwrap();
    assert_eq!(options.len(), 9);
    assert_eq!(options[0]["key"], "scale dimensions");
    assert_eq!(
        options[0]["inputs"]["required"]["crop"][1]["default"],
        "center"
    );
    assert_eq!(options[7]["inputs"]["required"]["match"][0], "IMAGE,MASK");
    assert_eq!(
        node["input"]["required"]["input"][1]["template"]["allowed_types"],
        "IMAGE,MASK"
    );
    assert_eq!(node["output_name"], json!(["resized"]));
}

#[test]
fn ui_widget_values_fill_the_chosen_options_inputs() {
    let workflow = json!({
        "nodes": [
            {"id": 1, "type": "EmptyImage", "mode": 0, "inputs": [], "outputs": [{"name": "IMAGE", "links": [1]}],
             "widgets_values": [40, 30, 1, 0]},
            {"id": 2, "type": "ResizeImageMaskNode", "mode": 0,
             "inputs": [{"name": "input", "link": 1}], "outputs": [{"name": "resized", "links": []}],
             "widgets_values": ["scale dimensions", 1024, 512, "center", "lanczos"]},
            {"id": 3, "type": "ResizeImageMaskNode", "mode": 0,
             "inputs": [{"name": "input", "link": null}], "outputs": [],
             "widgets_values": ["scale total pixels", 1, "area"]},
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"]],
    });
    let api = videosdgx::workflow_ui::to_api(&workflow, &registry()).unwrap();
    assert_eq!(
        api["2"]["inputs"],
        json!({"resize_type": "scale dimensions", "resize_type.width": 1024,
               "resize_type.height": 512, "resize_type.crop": "center", "scale_method": "lanczos",
               "input": ["1", 0]})
    );
    assert_eq!(
        api["3"]["inputs"],
        json!({"resize_type": "scale total pixels", "resize_type.megapixels": 1, "scale_method": "area"})
    );
}

/// The saved image's size.
fn saved_size(s: &Server, outputs: &Value, node: &str) -> (u32, u32) {
    let rec = &outputs[node]["images"][0];
    image::image_dimensions(s.output_dir().join(rec["filename"].as_str().unwrap())).unwrap()
}

#[test]
fn each_rule_sizes_images_and_masks_as_comfyui_does() {
    let s = Server::start(&[]);
    let resize = |from: &str, kind: &str, args: Value| {
        let mut inputs =
            json!({"input": [from, 0], "resize_type": kind, "scale_method": "bilinear"});
        for (k, v) in args.as_object().unwrap() {
            inputs[format!("resize_type.{k}")] = v.clone();
        }
        json!({"class_type": "ResizeImageMaskNode", "inputs": inputs})
    };
    let save = |from: &str, prefix: &str| json!({"class_type": "SaveImage", "inputs": {"images": [from, 0], "filename_prefix": prefix}});
    let prompt = json!({
        "img": {"class_type": "EmptyImage", "inputs": {"width": 40, "height": 30, "batch_size": 1, "color": 0x336699}},
        "mask": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 10, "height": 20}},
        // Width 20, height from the aspect: round(30 · 20 / 40) = 15.
        "a": resize("img", "scale width", json!({"width": 20, "height": 999})),
        "b": resize("img", "scale longer dimension", json!({"longer_size": 64})),
        "c": resize("img", "scale by multiplier", json!({"multiplier": 0.5})),
        "d": resize("img", "match size", json!({"match": ["mask", 0], "crop": "disabled"})),
        "e": resize("mask", "scale to multiple", json!({"multiple": 8})),
        "e_img": {"class_type": "MaskToImage", "inputs": {"mask": ["e", 0]}},
        "f": resize("img", "scale total pixels", json!({"megapixels": 0.01})),
        "sa": save("a", "a"), "sb": save("b", "b"), "sc": save("c", "c"), "sd": save("d", "d"),
        "se": save("e_img", "e"), "sf": save("f", "f"),
    });
    let entry = s.run_ok(&prompt, T);
    let out = &entry["outputs"];
    assert_eq!(saved_size(&s, out, "sa"), (20, 15));
    assert_eq!(saved_size(&s, out, "sb"), (64, 48));
    assert_eq!(saved_size(&s, out, "sc"), (20, 15));
    assert_eq!(saved_size(&s, out, "sd"), (10, 20));
    // 10 × 20 to multiples of 8: scaled to 8 × 16, nothing to cut.
    assert_eq!(saved_size(&s, out, "se"), (8, 16));
    // int(0.01 · 1024²) = 10485 pixels: √(10485 / 1200) · (40, 30) → (118, 89).
    assert_eq!(saved_size(&s, out, "sf"), (118, 89));

    // The chosen option's inputs are required; another option's are not looked at.
    let missing = json!({
        "img": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "r": {"class_type": "ResizeImageMaskNode", "inputs": {"input": ["img", 0],
              "resize_type": "scale dimensions", "resize_type.width": 4,
              "resize_type.multiplier": "not a number", "scale_method": "area"}},
        "s": save("r", "missing"),
    });
    let response = s.post_json("/prompt", &json!({"prompt": missing}));
    let body = response.json();
    let errors = &body["node_errors"]["r"]["errors"];
    let names: Vec<&str> = errors
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["extra_info"]["input_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["resize_type.height", "resize_type.crop"], "{body}");
}

#[test]
fn stitched_images_line_up_with_padding_and_a_spacing_bar() {
    let s = Server::start(&[]);
    let stitch = |a: &str, b: &str, direction: &str, matched: bool, spacing: i64, colour: &str| {
        json!({"class_type": "ImageStitch", "inputs": {"image1": [a, 0], "image2": [b, 0],
            "direction": direction, "match_image_size": matched, "spacing_width": spacing,
            "spacing_color": colour}})
    };
    let save = |from: &str| json!({"class_type": "SaveImage", "inputs": {"images": [from, 0], "filename_prefix": from}});
    let prompt = json!({
        "a": {"class_type": "EmptyImage", "inputs": {"width": 40, "height": 30, "batch_size": 1, "color": 0xff0000}},
        "b": {"class_type": "EmptyImage", "inputs": {"width": 20, "height": 10, "batch_size": 2, "color": 0x00ff00}},
        // Matched: image2 becomes 60 × 30 (its 2:1 at image1's height), 4 px of blue between.
        "right": stitch("a", "b", "right", true, 3, "blue"),
        // Unmatched, downwards: image2 padded to 40 wide with black (10 px each side).
        "down": stitch("a", "b", "down", false, 0, "black"),
        "up": stitch("a", "b", "up", false, 0, "white"),
        "s_right": save("right"), "s_down": save("down"), "s_up": save("up"),
    });
    let entry = s.run_ok(&prompt, T);
    let out = &entry["outputs"];
    let open = |node: &str, n: usize| {
        let rec = &out[node]["images"][n];
        image::open(s.output_dir().join(rec["filename"].as_str().unwrap()))
            .unwrap()
            .to_rgb8()
    };
    // image1's single frame is repeated to image2's batch of 2.
    assert_eq!(out["s_right"]["images"].as_array().unwrap().len(), 2);
    let right = open("s_right", 1);
    assert_eq!(right.dimensions(), (40 + 4 + 60, 30));
    assert_eq!(right.get_pixel(10, 10).0, [255, 0, 0]);
    assert_eq!(right.get_pixel(41, 10).0, [0, 0, 255]);
    assert_eq!(right.get_pixel(80, 10).0[1], 255);
    let down = open("s_down", 0);
    assert_eq!(down.dimensions(), (40, 40));
    assert_eq!(down.get_pixel(5, 35).0, [0, 0, 0]);
    assert_eq!(down.get_pixel(20, 35).0, [0, 255, 0]);
    let up = open("s_up", 0);
    assert_eq!(up.get_pixel(5, 5).0, [255, 255, 255], "white padding");
    assert_eq!(up.get_pixel(20, 5).0, [0, 255, 0]);
    assert_eq!(up.get_pixel(20, 25).0, [255, 0, 0]);
}

/// The scaling nodes' sizes (Python's rounding) and ResizeAndPadImage's centred letterbox.
#[test]
fn scaling_nodes_size_and_pad_as_comfyui_does() {
    let s = Server::start(&[]);
    let save = |from: &str| json!({"class_type": "SaveImage", "inputs": {"images": [from, 0], "filename_prefix": from}});
    let prompt = json!({
        "img": {"class_type": "EmptyImage", "inputs": {"width": 40, "height": 30, "batch_size": 1, "color": 0xff0000}},
        "total": {"class_type": "ImageScaleToTotalPixels", "inputs": {"image": ["img", 0], "upscale_method": "bilinear", "megapixels": 0.01, "resolution_steps": 1}},
        "max": {"class_type": "ImageScaleToMaxDimension", "inputs": {"image": ["img", 0], "upscale_method": "area", "largest_size": 64}},
        "pad": {"class_type": "ResizeAndPadImage", "inputs": {"image": ["img", 0], "target_width": 64, "target_height": 64, "padding_color": "black", "interpolation": "bilinear"}},
        "res": {"class_type": "ResolutionSelector", "inputs": {"aspect_ratio": "16:9 (Widescreen)", "megapixels": 1.0, "multiple": 8}},
        "pw": {"class_type": "PreviewAny", "inputs": {"source": ["res", 0]}},
        "ph": {"class_type": "PreviewAny", "inputs": {"source": ["res", 1]}},
        "s_total": save("total"), "s_max": save("max"), "s_pad": save("pad"),
    });
    let entry = s.run_ok(&prompt, T);
    let out = &entry["outputs"];
    // 0.01 MP = 10485.76 pixels: √(10485.76 / 1200) · (40, 30) → (118, 89).
    assert_eq!(saved_size(&s, out, "s_total"), (118, 89));
    assert_eq!(saved_size(&s, out, "s_max"), (64, 48));
    let rec = &out["s_pad"]["images"][0];
    let pad = image::open(s.output_dir().join(rec["filename"].as_str().unwrap()))
        .unwrap()
        .to_rgb8();
    assert_eq!(pad.dimensions(), (64, 64));
    assert_eq!(pad.get_pixel(0, 0).0, [0, 0, 0]);
    assert_eq!(pad.get_pixel(32, 32).0, [255, 0, 0]);
    // 1 MP at 16:9 to multiples of 8: 1368 × 768.
    assert_eq!(out["pw"]["text"], json!(["1368"]));
    assert_eq!(out["ph"]["text"], json!(["768"]));
}

/// ImageRotate turns clockwise by quarter turns (`torch.rot90(image, k, [2, 1])`) and ImageFlip
/// mirrors across either axis; the expected grids are torch's results for a 3×2 image.
#[test]
fn rotate_and_flip_move_pixels_as_torch_does() {
    let s = Server::start(&[]);
    // Pixel (x, y) of a 3×2 image holds 40·(3y + x) in every channel.
    image::RgbImage::from_fn(3, 2, |x, y| {
        let v = (40 * (3 * y + x)) as u8;
        image::Rgb([v, v, v])
    })
    .save(s.dir.join("input/grid.png"))
    .unwrap();
    let run = |class: &str, input: &str, choice: &str| {
        let prompt = json!({
            "load": {"class_type": "LoadImage", "inputs": {"image": "grid.png"}},
            "op": {"class_type": class, "inputs": {"image": ["load", 0], input: choice}},
            "save": {"class_type": "SaveImage", "inputs": {"images": ["op", 0], "filename_prefix": "grid"}},
        });
        let history = s.run_ok(&prompt, T);
        let name = history["outputs"]["save"]["images"][0]["filename"]
            .as_str()
            .unwrap()
            .to_string();
        let img = image::open(s.output_dir().join(name)).unwrap().to_rgb8();
        (0..img.height())
            .map(|y| {
                (0..img.width())
                    .map(|x| img.get_pixel(x, y).0[0] / 40)
                    .collect()
            })
            .collect::<Vec<Vec<u8>>>()
    };
    assert_eq!(
        run("ImageRotate", "rotation", "90 degrees"),
        [[3, 0], [4, 1], [5, 2]]
    );
    assert_eq!(
        run("ImageRotate", "rotation", "180 degrees"),
        [[5, 4, 3], [2, 1, 0]]
    );
    assert_eq!(
        run("ImageRotate", "rotation", "270 degrees"),
        [[2, 5], [1, 4], [0, 3]]
    );
    assert_eq!(
        run("ImageRotate", "rotation", "none"),
        [[0, 1, 2], [3, 4, 5]]
    );
    assert_eq!(
        run("ImageFlip", "flip_method", "x-axis: vertically"),
        [[3, 4, 5], [0, 1, 2]]
    );
    assert_eq!(
        run("ImageFlip", "flip_method", "y-axis: horizontally"),
        [[2, 1, 0], [5, 4, 3]]
    );
}

/// ImageAddNoise draws its grain from the CPU generator seeded like ComfyUI's, so a seed gives
/// the same bytes as upstream's node (tests/python/add_noise_reference.py).
#[test]
fn add_noise_matches_comfyuis_seeded_grain() {
    let s = Server::start(&[]);
    let prompt = json!({
        "img": {"class_type": "EmptyImage", "inputs": {"width": 6, "height": 4, "batch_size": 1, "color": 0x808080}},
        "noisy": {"class_type": "ImageAddNoise", "inputs": {"image": ["img", 0], "seed": 42, "strength": 0.1}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["noisy", 0], "filename_prefix": "grain"}},
    });
    let history = s.run_ok(&prompt, T);
    let name = history["outputs"]["save"]["images"][0]["filename"]
        .as_str()
        .unwrap();
    let img = image::open(s.output_dir().join(name)).unwrap().to_rgb8();
    let ours: Vec<Vec<u8>> = (0..4)
        .map(|y| (0..6).map(|x| img.get_pixel(x, y).0[0]).collect())
        .collect();
    let expected: Vec<Vec<u8>> =
        serde_json::from_slice(&reference::run("add_noise_reference.py", &[], b"")).unwrap();
    assert_eq!(ours, expected);
    assert!(
        ours.iter().flatten().any(|&v| v != 0x80),
        "no grain: {ours:?}"
    );
}

/// Our Lanczos resize against Pillow's (tests/python/pil_resample_reference.py), byte for byte:
/// ComfyUI's "lanczos" scaling goes through `PIL.Image.resize`.
#[test]
fn lanczos_resizes_like_pillow() {
    let dir = reference::fixtures("pil_resample_reference.py");
    let cases: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("cases.json")).unwrap()).unwrap();
    let cases = cases.as_array().unwrap();
    assert_eq!(cases.len(), 7);
    for (i, case) in cases.iter().enumerate() {
        let dims = |key: &str| -> Vec<usize> {
            case[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect()
        };
        let (size, new) = (dims("size"), dims("new"));
        let input = std::fs::read(dir.path().join(format!("in{i}.raw"))).unwrap();
        let expected = std::fs::read(dir.path().join(format!("out{i}.raw"))).unwrap();
        let ours = resize_lanczos(&input, (size[0], size[1], size[2]), (new[0], new[1])).unwrap();
        let differing = ours.iter().zip(&expected).filter(|(a, b)| a != b).count();
        assert_eq!(ours.len(), expected.len(), "case {i}");
        assert_eq!(differing, 0, "case {i} {size:?} → {new:?}");
    }
}

#[test]
fn lanczos_refuses_mismatched_buffers() {
    assert!(resize_lanczos(&[0; 5], (2, 2, 1), (3, 3)).is_err());
    assert!(resize_lanczos(&[0; 8], (2, 2, 2), (3, 3)).is_err());
}
