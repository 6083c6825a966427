//! The mask and compositing nodes (`comfy_extras/nodes_mask.py`) through the server: GrowMask
//! against scipy.ndimage's grey dilation and erosion (tests/python/grow_mask_reference.py),
//! ImageCompositeMasked and LatentCompositeMasked pasting through a mask over an edge,
//! MaskComposite's arithmetic and clamping, FeatherMask, CropMask, ThresholdMask,
//! ImageColorToMask, and MaskPreview's preview images.

mod common;
mod reference;

use std::time::Duration;

use common::{merged, Server};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);

fn run_ok(s: &Server, prompt: &Value) -> Value {
    s.run_ok(prompt, T)["outputs"].clone()
}

/// The saved image of output `node` as rows of RGB pixels.
fn pixels(s: &Server, outputs: &Value, node: &str) -> image::RgbImage {
    let rec = &outputs[node]["images"][0];
    let dir = if rec["type"] == "temp" {
        s.dir.join("temp")
    } else {
        s.output_dir()
    };
    image::open(dir.join(rec["filename"].as_str().unwrap()))
        .unwrap()
        .to_rgb8()
}

fn save_mask(id: &str, mask: &str) -> Value {
    json!({
        format!("{id}_image"): {"class_type": "MaskToImage", "inputs": {"mask": [mask, 0]}},
        id: {"class_type": "SaveImage", "inputs": {"images": [format!("{id}_image"), 0], "filename_prefix": id}},
    })
}

#[test]
fn grow_mask_matches_scipy_grey_dilation_and_erosion() {
    let s = Server::start(&[]);
    reference::run_into("grow_mask_reference.py", &s.dir);
    let expected: Value =
        serde_json::from_slice(&std::fs::read(s.dir.join("grow_expected.json")).unwrap()).unwrap();
    let mut parts = vec![json!({"m": {"class_type": "LoadImageMask",
        "inputs": {"image": "grow.png", "channel": "red"}}})];
    let cases = [(2, true), (-2, true), (3, false), (-1, false)];
    for (n, (expand, tapered)) in cases.iter().enumerate() {
        let id = format!("g{n}");
        parts.push(json!({id.clone(): {"class_type": "GrowMask",
            "inputs": {"mask": ["m", 0], "expand": expand, "tapered_corners": tapered}}}));
        parts.push(save_mask(&format!("s{n}"), &id));
    }
    let outputs = run_ok(&s, &merged(&parts));
    for (n, (expand, tapered)) in cases.iter().enumerate() {
        let image = pixels(&s, &outputs, &format!("s{n}"));
        let want = &expected[format!("{expand}_{}", if *tapered { "True" } else { "False" })];
        for (y, row) in want.as_array().unwrap().iter().enumerate() {
            for (x, v) in row.as_array().unwrap().iter().enumerate() {
                let got = image.get_pixel(x as u32, y as u32).0[0] as i64;
                assert_eq!(
                    got,
                    v.as_i64().unwrap(),
                    "expand {expand} tapered {tapered} at ({x}, {y})"
                );
            }
        }
    }
}

#[test]
fn composites_paste_through_masks_and_masks_combine_and_clamp() {
    let s = Server::start(&[]);
    let prompt = json!({
        "red": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": 0xff0000}},
        "blue": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0x0000ff}},
        "half": {"class_type": "SolidMask", "inputs": {"value": 0.5, "width": 4, "height": 4}},
        "paste": {"class_type": "ImageCompositeMasked", "inputs": {"destination": ["red", 0], "source": ["blue", 0],
            "x": 12, "y": 4, "resize_source": false, "mask": ["half", 0]}},
        "save_paste": {"class_type": "SaveImage", "inputs": {"images": ["paste", 0], "filename_prefix": "paste"}},
        "one": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 8, "height": 8}},
        "part": {"class_type": "SolidMask", "inputs": {"value": 0.25, "width": 4, "height": 4}},
        "sum": {"class_type": "MaskComposite", "inputs": {"destination": ["one", 0], "source": ["part", 0], "x": 6, "y": 6, "operation": "add"}},
        "diff": {"class_type": "MaskComposite", "inputs": {"destination": ["one", 0], "source": ["part", 0], "x": 6, "y": 6, "operation": "subtract"}},
        "xor": {"class_type": "MaskComposite", "inputs": {"destination": ["one", 0], "source": ["one", 0], "x": 4, "y": 0, "operation": "xor"}},
        "feather": {"class_type": "FeatherMask", "inputs": {"mask": ["one", 0], "left": 4, "top": 0, "right": 0, "bottom": 0}},
        "crop": {"class_type": "CropMask", "inputs": {"mask": ["one", 0], "x": 6, "y": 2, "width": 5, "height": 3}},
        "threshold": {"class_type": "ThresholdMask", "inputs": {"mask": ["feather", 0], "value": 0.5}},
        "keyed": {"class_type": "ImageColorToMask", "inputs": {"image": ["paste", 0], "color": 0xff0000}},
        "preview": {"class_type": "MaskPreview", "inputs": {"mask": ["crop", 0]}},
        "lat_a": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "lat": {"class_type": "LatentCompositeMasked", "inputs": {"destination": ["lat_a", 0], "source": ["lat_a", 0], "x": 16, "y": 0, "resize_source": false}},
        "save_lat": {"class_type": "SaveLatent", "inputs": {"samples": ["lat", 0], "filename_prefix": "latents/lat"}},
    });
    let mut prompt = prompt;
    for (id, mask) in [
        ("s_sum", "sum"),
        ("s_diff", "diff"),
        ("s_xor", "xor"),
        ("s_feather", "feather"),
        ("s_threshold", "threshold"),
        ("s_keyed", "keyed"),
    ] {
        prompt
            .as_object_mut()
            .unwrap()
            .extend(save_mask(id, mask).as_object().unwrap().clone());
    }
    let outputs = run_ok(&s, &prompt);
    let paste = pixels(&s, &outputs, "save_paste");
    // Inside the 4×8 overlap (x 12–15, y 4–11): half blue over red; outside: red.
    let mixed = paste.get_pixel(13, 5).0;
    assert!(
        mixed[0].abs_diff(127) <= 1 && mixed[1] == 0 && mixed[2].abs_diff(127) <= 1,
        "{mixed:?}"
    );
    assert_eq!(paste.get_pixel(11, 5).0, [255, 0, 0]);
    assert_eq!(paste.get_pixel(13, 12).0, [255, 0, 0]);
    let grey = |node: &str, x: u32, y: u32| pixels(&s, &outputs, node).get_pixel(x, y).0[0];
    assert_eq!(grey("s_sum", 7, 7), 255, "1 + 0.25 clamps to 1");
    assert!(grey("s_diff", 7, 7).abs_diff(191) <= 1);
    assert_eq!(grey("s_diff", 5, 7), 255);
    assert_eq!((grey("s_xor", 3, 0), grey("s_xor", 5, 0)), (255, 0));
    // Column x of 4 feathered columns is scaled by (x + 1)/4.
    assert!(grey("s_feather", 0, 3).abs_diff(64) <= 1);
    assert!(grey("s_feather", 2, 3).abs_diff(191) <= 1);
    assert_eq!(
        (grey("s_threshold", 1, 0), grey("s_threshold", 2, 0)),
        (0, 255)
    );
    assert_eq!((grey("s_keyed", 0, 0), grey("s_keyed", 13, 5)), (255, 0));
    let preview = &outputs["preview"]["images"][0];
    assert_eq!(preview["type"], "temp");
    // The 5-wide crop from x = 6 of an 8-wide mask keeps the 2 columns there are.
    assert_eq!(pixels(&s, &outputs, "preview").dimensions(), (2, 3));

    // Latents of different channels cannot be composited: a clear error, not a crash.
    let mismatch = json!({
        "a": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "b": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "c": {"class_type": "LatentCompositeMasked", "inputs": {"destination": ["a", 0], "source": ["b", 0], "x": 0, "y": 0, "resize_source": false}},
        "d": {"class_type": "SaveLatent", "inputs": {"samples": ["c", 0], "filename_prefix": "latents/bad"}},
    });
    let error = s.run_failing(&mismatch, T);
    assert!(
        error["exception_message"]
            .as_str()
            .unwrap()
            .contains("same channels"),
        "{error}"
    );
}

/// Painter: without a painting, the background colour and an empty mask (with its preview);
/// with one, the painting's RGB over the base image by its alpha, and the alpha as the mask,
/// the painting resized to the base image.
#[test]
fn painter_composites_the_painting_by_its_alpha() {
    let s = Server::start(&[]);
    let input = s.dir.join("input");
    std::fs::create_dir_all(&input).unwrap();
    // Red, opaque on the left half, half-transparent on the right, at twice the base's size.
    let painting = image::RgbaImage::from_fn(16, 8, |x, _| {
        image::Rgba([255, 0, 0, if x < 8 { 255 } else { 128 }])
    });
    painting.save(input.join("paint.png")).unwrap();
    let prompt = merged(&[
        json!({
            "bg": {"class_type": "Painter", "inputs": {"mask": "", "width": 64, "height": 128,
                "bg_color": "#3366ff"}},
            "base": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 4,
                "batch_size": 1, "color": 0x0000ff}},
            "p": {"class_type": "Painter", "inputs": {"image": ["base", 0], "mask": "paint.png",
                "width": 512, "height": 512, "bg_color": "#000000"}},
            "bg_image": {"class_type": "SaveImage", "inputs": {"images": ["bg", 0],
                "filename_prefix": "bg"}},
            "p_image": {"class_type": "SaveImage", "inputs": {"images": ["p", 0],
                "filename_prefix": "p"}},
        }),
        save_mask("bg_mask", "bg"),
        save_mask("p_mask", "p"),
    ]);
    let prompt = {
        let mut p = prompt;
        p["bg_mask_image"]["inputs"]["mask"] = json!(["bg", 1]);
        p["p_mask_image"]["inputs"]["mask"] = json!(["p", 1]);
        p
    };
    let outputs = run_ok(&s, &prompt);
    assert!(outputs["bg"]["images"][0]["type"] == "temp", "{outputs}");
    let bg = pixels(&s, &outputs, "bg_image");
    assert_eq!(bg.dimensions(), (64, 128));
    assert_eq!(bg.get_pixel(10, 100).0, [0x33, 0x66, 0xff]);
    assert_eq!(pixels(&s, &outputs, "bg_mask").get_pixel(3, 3).0, [0, 0, 0]);
    let painted = pixels(&s, &outputs, "p_image");
    assert_eq!(painted.dimensions(), (8, 4));
    assert_eq!(painted.get_pixel(1, 1).0, [255, 0, 0]);
    // 128/255 red over blue.
    let [r, g, b] = painted.get_pixel(6, 2).0;
    assert!(
        (r as i32 - 128).abs() <= 1 && g == 0 && (b as i32 - 127).abs() <= 1,
        "{r} {g} {b}"
    );
    let mask = pixels(&s, &outputs, "p_mask");
    assert_eq!(mask.get_pixel(1, 1).0, [255, 255, 255]);
    assert!((mask.get_pixel(6, 2).0[0] as i32 - 128).abs() <= 1);
}
