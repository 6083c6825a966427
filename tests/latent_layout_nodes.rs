//! LatentCut, LatentConcat and LatentCutToBatch (Wan S2V's and Dancer's latent plumbing) and
//! PreviewAny through the server: the shapes ComfyUI's clamping, ordering and batching rules
//! give, a size mismatch reported in ComfyUI's words, and the preview's text in the history.

mod common;

use std::time::Duration;

use common::{merged, Server};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);

/// The saved latent's shape and values.
fn saved(server: &Server, prompt: Value, prefix: &str) -> (Vec<usize>, Vec<f32>) {
    let mut prompt = prompt;
    prompt["save"] = json!({"class_type": "SaveLatent",
        "inputs": {"samples": ["out", 0], "filename_prefix": format!("latents/{prefix}")}});
    server.run_ok(&prompt, T);
    let path = server
        .output_dir()
        .join(format!("latents/{prefix}_00001_.latent"));
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensor = file.tensor("latent_tensor").unwrap();
    let values = tensor
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (tensor.shape().to_vec(), values)
}

/// An empty 16-channel Wan latent of a 64×32 video of `frames_length` frames, as node `id`.
fn video(frames_length: i64, id: &str) -> Value {
    json!({id: {"class_type": "EmptyHunyuanLatentVideo",
        "inputs": {"width": 64, "height": 32, "length": frames_length, "batch_size": 1}}})
}

#[test]
fn latent_cut_concat_and_cut_to_batch_follow_comfyuis_rules() {
    let s = Server::start(&[]);
    // 9 frames → 3 latent frames; cut from −2 for 5 keeps the last 2.
    let cut = merged(&[
        video(9, "v"),
        json!({"out": {"class_type": "LatentCut",
            "inputs": {"samples": ["v", 0], "dim": "t", "index": -2, "amount": 5}}}),
    ]);
    assert_eq!(saved(&s, cut, "cut").0, [1, 16, 2, 4, 8]);
    // An index past the end keeps the last entry.
    let past = merged(&[
        video(9, "v"),
        json!({"out": {"class_type": "LatentCut",
            "inputs": {"samples": ["v", 0], "dim": "x", "index": 100, "amount": 3}}}),
    ]);
    assert_eq!(saved(&s, past, "past").0, [1, 16, 3, 4, 1]);
    // The second latent goes first with "-t"; a batch of 2 is cut to the first's batch of 1.
    let concat = merged(&[
        video(9, "a"),
        json!({"b": {"class_type": "EmptyHunyuanLatentVideo",
            "inputs": {"width": 64, "height": 32, "length": 5, "batch_size": 2}}}),
        json!({"out": {"class_type": "LatentConcat",
            "inputs": {"samples1": ["a", 0], "samples2": ["b", 0], "dim": "-t"}}}),
    ]);
    assert_eq!(saved(&s, concat, "concat").0, [1, 16, 5, 4, 8]);
    // 3 latent frames in slices of 2: one batch item of 2 frames, the third frame dropped.
    let batched = merged(&[
        video(9, "v"),
        json!({"out": {"class_type": "LatentCutToBatch",
            "inputs": {"samples": ["v", 0], "dim": "t", "slice_size": 2}}}),
    ]);
    assert_eq!(saved(&s, batched, "batched").0, [1, 16, 2, 4, 8]);
    let by_x = merged(&[
        video(5, "v"),
        json!({"out": {"class_type": "LatentCutToBatch",
            "inputs": {"samples": ["v", 0], "dim": "x", "slice_size": 4}}}),
    ]);
    assert_eq!(saved(&s, by_x, "by_x").0, [2, 16, 2, 4, 4]);

    let mismatch = merged(&[
        video(9, "a"),
        json!({"b": {"class_type": "EmptyHunyuanLatentVideo",
            "inputs": {"width": 32, "height": 32, "length": 9, "batch_size": 1}}}),
        json!({"out": {"class_type": "LatentConcat",
            "inputs": {"samples1": ["a", 0], "samples2": ["b", 0], "dim": "t"}}}),
        json!({"save": {"class_type": "SaveLatent",
            "inputs": {"samples": ["out", 0], "filename_prefix": "latents/bad"}}}),
    ]);
    let error = s.run_failing(&mismatch, T);
    assert_eq!(error["exception_type"], "RuntimeError");
    assert_eq!(
        error["exception_message"],
        "Sizes of tensors must match except in dimension 2. Expected size 8 but got size 4 for \
         tensor number 1 in the list.\n"
    );
}

#[test]
fn preview_any_shows_the_value_as_text() {
    let s = Server::start(&[]);
    let prompt = json!({
        "1": {"class_type": "PrimitiveFloat", "inputs": {"value": 2.5}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
        "3": {"class_type": "PrimitiveString", "inputs": {"value": "a cat"}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}},
    });
    let history = s.run_ok(&prompt, T);
    assert_eq!(history["outputs"]["2"], json!({"text": ["2.5"]}));
    assert_eq!(history["outputs"]["4"], json!({"text": ["a cat"]}));
}

/// Writes a `.latent` of shape `[outer, rest…]` into the input folder, slice k of the first
/// axis after `outer` filled with `base + k` (the batch item of an image latent, the frame of
/// a video latent `[1, C, T, H, W]` when `by_frame`).
fn numbered(server: &Server, name: &str, shape: &[usize], by_frame: bool, base: f32) {
    let per = |axis: usize| shape[axis + 1..].iter().product::<usize>();
    let total: usize = shape.iter().product();
    let values: Vec<u8> = (0..total)
        .map(|n| {
            let k = if by_frame {
                n / per(2) % shape[2]
            } else {
                n / per(0)
            };
            base + k as f32
        })
        .flat_map(f32::to_le_bytes)
        .collect();
    let samples =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.to_vec(), &values)
            .unwrap();
    let version =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![0], &[]).unwrap();
    let tensors = [
        ("latent_tensor", samples),
        ("latent_format_version_0", version),
    ];
    safetensors::serialize_to_file(tensors, None, &server.dir.join("input").join(name)).unwrap();
}

#[test]
fn latent_from_batch_counts_negative_indices_from_the_end() {
    let s = Server::start(&[]);
    numbered(&s, "four.latent", &[4, 4, 2, 2], false, 0.0);
    let pick = |index: i64, length: i64| {
        json!({
            "load": {"class_type": "LoadLatent", "inputs": {"latent": "four.latent"}},
            "out": {"class_type": "LatentFromBatch",
                "inputs": {"samples": ["load", 0], "batch_index": index, "length": length}},
        })
    };
    let items = |(shape, values): (Vec<usize>, Vec<f32>)| {
        let per_item = values.len() / shape[0];
        values.chunks(per_item).map(|c| c[0]).collect::<Vec<f32>>()
    };
    // −1 is the last item; the length is cut to what is left.
    assert_eq!(items(saved(&s, pick(-1, 2), "last")), [3.0]);
    assert_eq!(items(saved(&s, pick(-3, 2), "middle")), [1.0, 2.0]);
    // Past either end: clamped to the first or last item.
    assert_eq!(items(saved(&s, pick(-9, 1), "before")), [0.0]);
    assert_eq!(items(saved(&s, pick(7, 3), "after")), [3.0]);
}

/// VAELoader's `pixel_space` VAE (pixel-space models): the latent is the image itself in −1..1,
/// channels first, and decoding gives the image back.
#[test]
fn pixel_space_vae_keeps_the_pixels() {
    let s = Server::start(&[]);
    let info = s.get("/object_info/VAELoader").json();
    assert_eq!(
        info["VAELoader"]["input"]["required"]["vae_name"][0],
        json!(["pixel_space"])
    );
    let prompt = json!({
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "pixel_space"}},
        "img": {"class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 6, "batch_size": 1, "color": 0x336699}},
        "out": {"class_type": "VAEEncode", "inputs": {"pixels": ["img", 0], "vae": ["vae", 0]}},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["out", 0], "vae": ["vae", 0]}},
        "png": {"class_type": "SaveImage", "inputs": {"images": ["dec", 0], "filename_prefix": "px"}},
    });
    let (shape, values) = saved(&s, prompt, "pixels");
    assert_eq!(shape, [1, 3, 6, 8]);
    for (channel, byte) in [0x33, 0x66, 0x99].into_iter().enumerate() {
        let expected = 2.0 * byte as f32 / 255.0 - 1.0;
        let plane = &values[channel * 48..(channel + 1) * 48];
        assert!(
            plane.iter().all(|v| (v - expected).abs() < 1e-6),
            "{plane:?}"
        );
    }
    // ×2−1 and back in float32 leaves 0x33 a hair under 51, which SaveImage truncates, as
    // upstream's round trip does.
    let back = |byte: u8| ((((byte as f32 / 255.0) * 2.0 - 1.0) + 1.0) / 2.0 * 255.0) as u8;
    assert_eq!(back(0x33), 50);
    assert_eq!(
        common::png_pixel(&s.output_dir().join("px_00001_.png")),
        [back(0x33), back(0x66), back(0x99)]
    );
}

/// ReplaceVideoLatentFrames writes the source's frames over the destination's from the index
/// (negative from the end) and passes the destination on where they do not fit.
#[test]
fn replace_video_latent_frames_writes_over_the_destination() {
    let s = Server::start(&[]);
    numbered(&s, "dest.latent", &[1, 2, 5, 2, 2], true, 0.0);
    numbered(&s, "src.latent", &[1, 2, 2, 2, 2], true, 10.0);
    let replace = |index: i64| {
        json!({
            "d": {"class_type": "LoadLatent", "inputs": {"latent": "dest.latent"}},
            "s": {"class_type": "LoadLatent", "inputs": {"latent": "src.latent"}},
            "out": {"class_type": "ReplaceVideoLatentFrames",
                "inputs": {"destination": ["d", 0], "source": ["s", 0], "index": index}},
        })
    };
    // The value of each frame of channel 0.
    let frames = |(shape, values): (Vec<usize>, Vec<f32>)| {
        let per_frame = shape[3] * shape[4];
        (0..shape[2])
            .map(|t| values[t * per_frame])
            .collect::<Vec<f32>>()
    };
    assert_eq!(
        frames(saved(&s, replace(1), "at1")),
        [0.0, 10.0, 11.0, 3.0, 4.0]
    );
    assert_eq!(
        frames(saved(&s, replace(-2), "end")),
        [0.0, 1.0, 2.0, 10.0, 11.0]
    );
    assert_eq!(
        frames(saved(&s, replace(4), "over")),
        [0.0, 1.0, 2.0, 3.0, 4.0]
    );
}

/// BatchLatentsNode resizes every latent to the first one's frame and batches them; BatchMasksNode
/// does the same for masks.
#[test]
fn batch_latents_and_masks_stack_their_inputs() {
    let s = Server::start(&[]);
    numbered(&s, "two.latent", &[2, 4, 2, 2], false, 0.0);
    numbered(&s, "three.latent", &[3, 4, 2, 2], false, 5.0);
    let prompt = json!({
        "a": {"class_type": "LoadLatent", "inputs": {"latent": "two.latent"}},
        "b": {"class_type": "LoadLatent", "inputs": {"latent": "three.latent"}},
        "out": {"class_type": "BatchLatentsNode",
            "inputs": {"latents.latent0": ["a", 0], "latents.latent1": ["b", 0]}},
    });
    let (shape, values) = saved(&s, prompt, "batched");
    assert_eq!(shape, [5, 4, 2, 2]);
    let firsts: Vec<f32> = values.chunks(16).map(|c| c[0]).collect();
    assert_eq!(firsts, [0.0, 1.0, 5.0, 6.0, 7.0]);

    let masks = json!({
        "m1": {"class_type": "SolidMask", "inputs": {"value": 0.25, "width": 16, "height": 8}},
        "m2": {"class_type": "SolidMask", "inputs": {"value": 0.75, "width": 4, "height": 4}},
        "both": {"class_type": "BatchMasksNode", "inputs": {"masks.mask0": ["m1", 0], "masks.mask1": ["m2", 0]}},
        "img": {"class_type": "MaskToImage", "inputs": {"mask": ["both", 0]}},
        "size": {"class_type": "GetImageSize", "inputs": {"image": ["img", 0]}},
        "w": {"class_type": "PreviewAny", "inputs": {"source": ["size", 0]}},
        "h": {"class_type": "PreviewAny", "inputs": {"source": ["size", 1]}},
        "n": {"class_type": "PreviewAny", "inputs": {"source": ["size", 2]}},
    });
    let history = s.run_ok(&masks, T);
    let text = |id: &str| history["outputs"][id]["text"][0].clone();
    assert_eq!(
        [text("w"), text("h"), text("n")],
        ["16", "8", "2"].map(Value::from)
    );
}
