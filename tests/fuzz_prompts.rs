//! 10,000 random and mutated `POST /prompt` bodies: every answer is a JSON success or a JSON
//! error, and the server stays up and keeps executing.

mod common;

use std::time::Duration;

use common::Server;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use serde_json::{json, Map, Value};

const CLASSES: &[&str] = &[
    "EmptyImage",
    "ManualSigmas",
    "SetFirstSigma",
    "ExtendIntermediateSigmas",
    "PolyexponentialScheduler",
    "LaplaceScheduler",
    "VPScheduler",
    "AlignYourStepsScheduler",
    "OptimalStepsScheduler",
    "SamplerLMS",
    "SamplerER_SDE",
    "SamplerDPMAdaptative",
    "LatentAdd",
    "LatentInterpolate",
    "LatentMultiply",
    "LatentBatchSeedBehavior",
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
    "ImageRotate",
    "ImageFlip",
    "ImageBlend",
    "ImageBlur",
    "ImageSharpen",
    "ImageAddNoise",
    "BatchMasksNode",
    "BatchLatentsNode",
    "ComfyAndNode",
    "ComfyOrNode",
    "ComfyNotNode",
    "ReplaceVideoLatentFrames",
    "SolidMask",
    "InvertMask",
    "MaskToImage",
    "ImageToMask",
    "PrimitiveInt",
    "PrimitiveFloat",
    "PrimitiveString",
    "PrimitiveBoolean",
    "LoadImage",
    "BatchImagesNode",
    "ImagePadForOutpaint",
    "JoinImageWithAlpha",
    "Canny",
    "GenerateTracks",
    "WanMoveTracksFromCoords",
    "WanMoveConcatTrack",
    "WanMoveVisualizeTracks",
    "EmptyAudio",
    "TrimAudioDuration",
    "AudioAdjustVolume",
    "AudioConcat",
    "AudioMerge",
    "SplitAudioChannels",
    "JoinAudioChannels",
    "LatentCut",
    "PreviewAny",
    "GrowMask",
    "FeatherMask",
    "CropMask",
    "MaskComposite",
    "ImageCompositeMasked",
    "ThresholdMask",
    "ImageColorToMask",
    "MaskPreview",
    "ResizeImageMaskNode",
    "ImageStitch",
    "RegexReplace",
    "RegexExtract",
    "StringSubstring",
    "CaseConverter",
    "CustomCombo",
    "RebatchImages",
    "LatentRotate",
    "LatentFlip",
    "LatentCrop",
    "LatentComposite",
    "LatentBlend",
    "RepeatLatentBatch",
    "LoadLatent",
    "ImageScaleToTotalPixels",
    "ImageScaleToMaxDimension",
    "ResizeAndPadImage",
    "ResolutionSelector",
    "Painter",
    "ImageCompare",
    "Video Slice",
    "ComfyNumberConvert",
    "ContextWindowsManual",
    "WanContextWindowsManual",
    "ColorTransfer",
    "SCAIL2ColoredMask",
    "WanDancerEncodeAudio",
    "WanDancerPadKeyframes",
    "WanDancerPadKeyframesList",
    "SAM3_TrackToMask",
    "StubImage",
    "StubInt",
    "TestMakeListNode",
    "TestLazyMixImages",
    "NotANode",
];
const NAMES: &[&str] = &[
    "width",
    "height",
    "bg_color",
    "image_a",
    "compare_view",
    "start_time",
    "batch_size",
    "color",
    "images",
    "image",
    "image1",
    "image2",
    "mask",
    "value",
    "channel",
    "upscale_method",
    "crop",
    "scale_by",
    "x",
    "y",
    "amount",
    "batch_index",
    "length",
    "filename_prefix",
    "content",
    "value1",
    "value2",
    "images.image0",
    "images.image1",
    "alpha",
    "left",
    "bottom",
    "feathering",
    "low_threshold",
    "high_threshold",
    "num_frames",
    "num_tracks",
    "track_spread",
    "bezier",
    "interpolation",
    "track_coords",
    "track_mask",
    "tracks",
    "tracks_1",
    "tracks_2",
    "line_resolution",
    "circle_size",
    "opacity",
    "line_width",
    "duration",
    "sample_rate",
    "channels",
    "start_index",
    "audio",
    "audio1",
    "audio2",
    "audio_left",
    "audio_right",
    "direction",
    "merge_method",
    "volume",
    "source",
    "samples",
    "dim",
    "index",
    "expand",
    "tapered_corners",
    "destination",
    "source",
    "operation",
    "top",
    "right",
    "resize_source",
    "input",
    "resize_type",
    "resize_type.width",
    "resize_type.multiplier",
    "resize_type.multiple",
    "scale_method",
    "image1",
    "image2",
    "match_image_size",
    "spacing_width",
    "spacing_color",
    "string",
    "regex_pattern",
    "replace",
    "start",
    "end",
    "mode",
    "group_index",
    "choice",
    "rotation",
    "flip_method",
    "samples_to",
    "samples_from",
    "feather",
    "blend_factor",
    "latent",
    "megapixels",
    "resolution_steps",
    "largest_size",
    "target_width",
    "target_height",
    "padding_color",
    "interpolation",
    "aspect_ratio",
    "multiple",
    "upscale_method",
    "context_length",
    "context_overlap",
    "context_schedule",
    "fuse_method",
    "cond_retain_index_list",
    "image_target",
    "image_ref",
    "method",
    "source_stats",
    "source_stats.target_index",
    "strength",
    "driving_track_data",
    "ref_track_data",
    "track_data",
    "object_indices",
    "sort_by",
    "replacement_mode",
    "video_frames",
    "audio_inject_scale",
    "segment_length",
    "segment_index",
    "__value__",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-3i64..40).prop_map(Value::from),
        (-2.0f64..4.0).prop_map(Value::from),
        prop::sample::select(vec![
            "",
            "x",
            "WHITE",
            "bilinear",
            "center",
            "red",
            "8",
            "1e3",
            "nan",
            "../x.png",
            "ease_in_out",
            "before",
            "mean",
            "t",
            "scale to multiple",
            "scale by multiplier",
            "(a|\\1",
            "\\g<x>",
            "Title Case",
            "All Groups",
            "[{'x': 3, 'y': 2}, {'x': -9, 'y': 1e9}]",
            "mkl_lab",
            "histogram",
            "target_frame",
            "0,2,,x",
            "left_to_right",
        ])
        .prop_map(Value::from),
        Just(json!(18446744073709551615u64)),
        Just(json!(-1e308)),
    ]
}

fn link() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec!["1", "2", "3", "4", "9", "404", ""]),
        -2i64..4,
    )
        .prop_map(|(id, slot)| json!([id, slot]))
}

fn input_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![4 => scalar(), 3 => link()];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            inner.prop_map(|v| json!({"__value__": v})),
        ]
    })
}

fn node() -> impl Strategy<Value = Value> {
    let inputs = prop::collection::vec((prop::sample::select(NAMES), input_value()), 0..6)
        .prop_map(|kv| {
            Value::Object(
                kv.into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect::<Map<_, _>>(),
            )
        })
        .boxed();
    prop_oneof![
        8 => (prop::sample::select(CLASSES), inputs.clone()).prop_map(|(c, i)| json!({"class_type": c, "inputs": i})),
        1 => inputs.clone().prop_map(|i| json!({"inputs": i})),
        1 => prop::sample::select(CLASSES).prop_map(|c| json!({"class_type": c, "inputs": [1, 2]})),
        1 => scalar(),
        1 => (scalar(), inputs).prop_map(|(c, i)| json!({"class_type": c, "inputs": i})),
    ]
}

/// A valid small graph with one node replaced or edited at random.
fn mutated_valid() -> impl Strategy<Value = Value> {
    let base = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "ImageScaleBy", "inputs": {"image": ["2", 0], "upscale_method": "area", "scale_by": 0.5}},
        "4": {"class_type": "ColorTransfer", "inputs": {"image_target": ["3", 0], "image_ref": ["1", 0], "method": "mkl_lab", "source_stats": "target_frame", "source_stats.target_index": 0, "strength": 1.0}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
    });
    (
        prop::sample::select(vec!["1", "2", "3", "4", "9", "7"]),
        node(),
        prop::sample::select(NAMES),
        input_value(),
        any::<bool>(),
    )
        .prop_map(move |(id, replacement, name, value, whole)| {
            let mut p = base.clone();
            if whole {
                p[id] = replacement;
            } else if let Some(inputs) = p.get_mut(id).and_then(|n| n.get_mut("inputs")) {
                inputs[name] = value;
            }
            p
        })
}

fn body() -> impl Strategy<Value = String> {
    let prompt = prop_oneof![
        3 => mutated_valid(),
        2 => prop::collection::vec((prop::sample::select(vec!["1", "2", "3", "9"]), node()), 0..5)
            .prop_map(|n| Value::Object(n.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        1 => scalar(),
    ];
    let extras = (
        prop::option::of(scalar()),
        prop::option::of(scalar()),
        prop::option::of(prop::collection::vec(scalar(), 0..3).prop_map(Value::Array)),
        prop::option::of(prop_oneof![
            scalar(),
            Just(json!({"extra_pnginfo": {"workflow": {}}}))
        ]),
    );
    prop_oneof![
        8 => (prompt, extras).prop_map(|(p, (number, front, targets, extra))| {
            let mut b = json!({"prompt": p});
            if let Some(n) = number { b["number"] = n; }
            if let Some(f) = front { b["front"] = f; }
            if let Some(t) = targets { b["partial_execution_targets"] = t; }
            if let Some(e) = extra { b["extra_data"] = e; }
            b.to_string()
        }),
        1 => scalar().prop_map(|v| v.to_string()),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

/// Ten thousand generated bodies, each answered with JSON (a prompt id or ComfyUI's error
/// shape); then the same server must still execute a prompt. One test, so the server is
/// dropped (its process killed, its folder removed) when it ends.
#[test]
fn every_prompt_body_gets_a_json_answer_and_the_server_survives() {
    let server = Server::start(&[]);
    let config = ProptestConfig {
        cases: 10_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    TestRunner::new(config)
        .run(&body(), |body| {
            let r = server.post("/prompt", &body);
            prop_assert!(
                r.status == 200 || r.status == 400,
                "status {} for {}: {}",
                r.status,
                body,
                r.text()
            );
            let answer: Value = serde_json::from_slice(&r.body)
                .map_err(|e| TestCaseError::fail(format!("{e}: {}", r.text())))?;
            if r.status == 200 {
                prop_assert!(answer["prompt_id"].is_string());
            } else {
                prop_assert!(answer["error"].is_object(), "{}", answer);
            }
            Ok(())
        })
        .unwrap();

    let id = server.queue(&common::stub_save("WHITE", "alive"), None);
    let entry = server.wait_history(&id, Duration::from_secs(120));
    assert_eq!(entry["status"]["status_str"], "success");
    assert_eq!(server.get("/system_stats").status, 200);
}
