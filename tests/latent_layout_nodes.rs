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
    let id = s.queue(&mismatch, None);
    let history = s.wait_history(&id, T);
    let error = history["status"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m[0] == "execution_error")
        .expect("an execution error")[1]
        .clone();
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
