//! SAM 3.1 and SAM 3 against ComfyUI's forward written out in plain torch
//! (tests/python/sam3_reference.py), float32 on the CPU, from tiny random checkpoints in the
//! release's key layout: the text tower (transformers' CLIPTextModel with the padding mask), the
//! detector (boxes, scores, mask logits; on text alone and with box exemplars pooled by
//! torchvision's roi_align), the interactive heads on a mask, a point and a box,
//! and SAM3_Detect's per-frame work with the crop refinement; and SAM 3.1's video tracker
//! (tests/python/sam3_tracker_reference.py) frame by frame.

mod reference;

use std::ffi::OsStr;

use tch::{Device, Kind, Tensor};
use videosdgx::engine::value::SharedTensor;
use videosdgx::models::clip_text::{ClipLayer, ClipTextModel};
use videosdgx::models::clip_vision::Activation;
use videosdgx::models::sam3::frame::{Frame, TextPrompt};
use videosdgx::models::sam3::sam_heads::SegmentPrompt;
use videosdgx::models::sam3::track_data::{pack_masks, TrackData};
use videosdgx::models::sam3::track_preview::render;
use videosdgx::models::sam3::Sam3Model;
use videosdgx::models::weights::Weights;
use videosdgx::runtime::detect::detect;
use videosdgx::runtime::safetensors_file::SafetensorsFile;

const TOLERANCE: f64 = 1e-4;

fn check(name: &str, ours: &Tensor, theirs: &Tensor) {
    assert_eq!(ours.size(), theirs.size(), "{name}: shape");
    let err = reference::max_abs_diff(ours, theirs);
    assert!(err <= TOLERANCE, "{name}: max abs error {err}");
}

fn run_release(multiplex: bool) {
    let _guard = tch::no_grad_guard();
    let dir = tempfile::tempdir().unwrap();
    let flag = if multiplex { "1" } else { "0" };
    reference::run(
        "sam3_reference.py",
        &[dir.path().as_os_str(), OsStr::new(flag)],
        b"",
    );
    let path = dir.path().join("sam3.safetensors");
    let file = SafetensorsFile::open(&path).unwrap();
    let found = detect(&file).unwrap();
    let seg = found
        .iter()
        .find(|d| d.component == "segmentation")
        .unwrap();
    assert_eq!(seg.architecture, if multiplex { "SAM31" } else { "SAM3" });
    let text_prefix = "detector.backbone.language_backbone.encoder.";
    assert!(found
        .iter()
        .any(|d| d.component == "text_encoder" && d.prefix == text_prefix));

    let io = SafetensorsFile::open(&dir.path().join("sam3_io.safetensors")).unwrap();
    let get = |n: &str| io.tensor(n, Device::Cpu).unwrap();

    let text_weights = Weights::new(&file, text_prefix, Kind::Float, Device::Cpu).unwrap();
    let tower = ClipTextModel::load(&text_weights, Activation::QuickGelu).unwrap();
    let text = tower
        .forward_masked(
            &get("ids"),
            49407,
            ClipLayer::Last,
            None,
            Some(&get("text_mask")),
        )
        .unwrap()
        .hidden;
    // Rows past the end token are masked everywhere downstream; compare the prompt's rows.
    check("text", &text.narrow(1, 0, 3), &get("text").narrow(1, 0, 3));

    let weights = Weights::new(&file, "", Kind::Float, Device::Cpu).unwrap();
    let model = Sam3Model::load(&weights, multiplex).unwrap();
    let trunk = model.trunk(&get("image").permute([0, 3, 1, 2])).unwrap();
    let features = model.detector_features(&trunk);
    let det = model
        .detect(&features, &get("text"), &get("text_mask"), None)
        .unwrap();
    check("boxes", &det.boxes, &get("boxes"));
    check("scores", &det.scores, &get("scores"));
    check("masks", &det.masks, &get("masks"));
    // The text with two box exemplars (SAM3_Detect given both), which must move the scores.
    let exemplars = get("exemplars");
    let with_boxes = model
        .detect(&features, &get("text"), &get("text_mask"), Some(&exemplars))
        .unwrap();
    check(
        "boxes with exemplars",
        &with_boxes.boxes,
        &get("exemplar_boxes"),
    );
    check(
        "scores with exemplars",
        &with_boxes.scores,
        &get("exemplar_scores"),
    );
    check(
        "masks with exemplars",
        &with_boxes.masks,
        &get("exemplar_masks"),
    );
    let moved = (&with_boxes.scores - &det.scores)
        .abs()
        .max()
        .double_value(&[]);
    assert!(
        moved > 1e-2,
        "the exemplars change the scores by only {moved}"
    );

    let features = model.segment_features(&trunk);
    let low = get("low_mask").upsample_bilinear2d([1008, 1008], false, None, None);
    let mask = model.segment(&features, &SegmentPrompt::Mask(low)).unwrap();
    check("segment from a mask", &mask, &get("seg_mask"));
    let point = SegmentPrompt::Points(get("point").view([1, 2]), vec![1]);
    check(
        "segment from a point",
        &model.segment(&features, &point).unwrap(),
        &get("seg_point"),
    );
    let b: Vec<f64> = Vec::try_from(get("box").flatten(0, -1).to_kind(Kind::Double)).unwrap();
    let bbox = SegmentPrompt::Box([b[0], b[1], b[2], b[3]]);
    check(
        "segment from a box",
        &model.segment(&features, &bbox).unwrap(),
        &get("seg_box"),
    );

    // SAM3_Detect on a 200×120 frame: the best detection over the threshold, refined twice.
    let threshold = get("threshold").double_value(&[0]);
    let prompt = TextPrompt {
        states: get("text"),
        mask: get("text_mask"),
        max_detections: 1,
    };
    let frame = Frame::new(&model, get("frame").get(0)).unwrap();
    let found = frame.detect_text(&[prompt], &[], threshold, 2).unwrap();
    assert_eq!(found.len(), 1, "one detection passes the threshold");
    let boxes = get("node_boxes");
    let bbox = Tensor::from_slice(&found[0].bbox).view([1, 4]);
    check("frame box", &bbox, &boxes);
    let score = Tensor::from_slice(&[found[0].score]);
    check("frame score", &score, &get("node_scores"));
    // The mask is (refined > 0) | (coarse > 0): pixels may differ only where a logit is within
    // rounding of 0. (A box outside the frame skips the refinement; then only the whole mask
    // is compared.)
    let settled = match io.tensor("node_refined_0", Device::Cpu) {
        Ok(refined) => {
            let coarse = get("node_coarse_0").get(0);
            refined
                .get(0)
                .abs()
                .gt(1e-3)
                .logical_and(&coarse.abs().gt(1e-3))
        }
        Err(_) => get("node_mask").ones_like().to_kind(Kind::Bool),
    };
    let differ = found[0]
        .mask
        .ne_tensor(&get("node_mask"))
        .logical_and(&settled);
    assert_eq!(differ.sum(Kind::Int64).int64_value(&[]), 0, "frame mask");
    assert!(get("node_mask").sum(Kind::Float).double_value(&[]) > 100.0);
}

#[test]
fn sam3_1_detects_and_segments_as_comfyui() {
    run_release(true);
}

#[test]
fn sam3_detects_and_segments_as_comfyui() {
    run_release(false);
}

/// SAM3_VideoTrack's loop against `SAM31Tracker.track_video_with_detection` written out in
/// tests/python/sam3_tracker_reference.py: three frames, once with tracks started by the text
/// detector (new detections may join later) and once from two given masks with detection
/// every other frame. After every frame the tracker's masks, memory and object pointers are
/// compared; at the end the packed masks and the objects' scores.
#[test]
fn sam3_1_tracks_video_as_comfyui() {
    use videosdgx::models::sam3::track_data::unpack_masks;
    use videosdgx::models::sam3::video::TrackSettings;

    let _guard = tch::no_grad_guard();
    let dir = tempfile::tempdir().unwrap();
    reference::run("sam3_tracker_reference.py", &[dir.path().as_os_str()], b"");
    let file = SafetensorsFile::open(&dir.path().join("sam3.safetensors")).unwrap();
    let weights = Weights::new(&file, "", Kind::Float, Device::Cpu).unwrap();
    let model = Sam3Model::load(&weights, true).unwrap();
    let io = SafetensorsFile::open(&dir.path().join("track_io.safetensors")).unwrap();
    let get = |n: &str| io.tensor(n, Device::Cpu).unwrap();
    let cases = [
        ("detected", None, 4, 1),
        ("given", Some(get("initial")), 3, 2),
    ];
    for (case, initial, max_objects, detect_interval) in cases {
        let prompt = TextPrompt {
            states: get("text"),
            mask: get("text_mask"),
            max_detections: 0,
        };
        let settings = TrackSettings {
            threshold: 0.0,
            max_objects,
            detect_interval,
        };
        let mut tracked_frames = 0;
        let tracked = model
            .track_video(
                &get("video"),
                initial.as_ref(),
                &[prompt],
                &settings,
                |done, out| {
                    let Some(out) = out else { return true };
                    let frame = done - 1;
                    let name = |part: &str| format!("{case}_{frame}_{part}");
                    check(&name("low"), &out.low, &get(&name("low")));
                    check(&name("high"), &out.high, &get(&name("high")));
                    check(&name("memory"), &out.memory, &get(&name("memory")));
                    check(&name("pointers"), &out.pointers, &get(&name("pointers")));
                    tracked_frames += 1;
                    true
                },
            )
            .unwrap();
        assert_eq!(tracked_frames, 3, "{case}: every frame tracked");
        let packed = tracked.packed.expect("tracked masks");
        let theirs = get(&format!("{case}_packed"));
        assert_eq!(packed.size(), theirs.size(), "{case}: packed shape");
        // Pixels may differ only where the reference's logit is within rounding of 0.
        for frame in 0..3 {
            let high = get(&format!("{case}_{frame}_high")).select(1, 0);
            let objects = high.size()[0];
            let mask = |p: &Tensor| unpack_masks(&p.get(frame).narrow(0, 0, objects));
            let differ = mask(&packed)
                .logical_xor(&mask(&theirs))
                .logical_and(&high.abs().gt(1e-3));
            let count = differ.sum(Kind::Int64).int64_value(&[]);
            assert_eq!(count, 0, "{case}: frame {frame}'s packed masks");
        }
        let scores = Tensor::from_slice(&tracked.scores);
        check(
            &format!("{case} scores"),
            &scores,
            &get(&format!("{case}_scores")),
        );
    }
}

/// SAM3_TrackPreview's frames against ComfyUI's drawing written out
/// (tests/python/sam3_track_preview_reference.py): palette overlay, centroid labels in the
/// bitmap font with outlines, scores under 1 in percent, frames past the images black.
#[test]
fn sam3_track_preview_draws_as_comfyui() {
    let dir = tempfile::tempdir().unwrap();
    reference::run(
        "sam3_track_preview_reference.py",
        &[dir.path().as_os_str()],
        b"",
    );
    let io = SafetensorsFile::open(&dir.path().join("track_preview.safetensors")).unwrap();
    let get = |n: &str| io.tensor(n, Device::Cpu).unwrap();
    let masks = get("masks");
    let track = TrackData {
        packed: Some(SharedTensor::new(pack_masks(&masks))),
        frames: masks.size()[0],
        scores: Vec::try_from(get("scores")).unwrap(),
        orig_size: (48, 64),
    };
    let opacity = get("opacity").double_value(&[0]);
    let frames = render(&track, Some(&get("images")), opacity);
    let expected = get("frames");
    assert_eq!(frames.size(), expected.size());
    let differ = (&frames - &expected).abs().gt(1e-6);
    let at = differ.nonzero();
    assert_eq!(at.size()[0], 0, "pixels differ at {at}");
    // The labels are there: black outline pixels inside the painted regions.
    let black = expected
        .get(0)
        .sum_dim_intlist(-1, false, Kind::Float)
        .eq(0.0);
    assert!(black.sum(Kind::Int64).int64_value(&[]) > 20);
}
