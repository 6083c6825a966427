//! SAM3_Detect (`comfy_extras/nodes_sam3.py`): open-vocabulary detection and segmentation of
//! each image with SAM 3 / SAM 3.1 on a text prompt (CLIPTextEncode of the checkpoint's CLIP),
//! boxes (BOUNDING_BOX) or point prompts (JSON `[{"x":…, "y":…}]` in pixels).

use serde_json::{json, Value as Json};
use tch::{Kind, Tensor};

use crate::engine::context::ExecContext;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeError, NodeOutput, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::media::encode::{write_video, VideoSpec};
use crate::models::sam3::frame::{Frame, PixelPrompt, TextPrompt};
use crate::models::sam3::track_data::{object_indices, unpack_masks, TrackData};
use crate::models::sam3::track_preview::render;
use crate::models::sam3::tracker::FrameOutput;
use crate::models::sam3::video::TrackSettings;
use crate::models::sam3::Sam3;
use crate::sampling::model::Conditioning;

use super::media_save::{animated_ui, with_progress};

/// The text prompts of SAM 3 conditioning: each comma-separated part with its count, or the
/// whole prompt once.
fn text_prompts(cond: &Conditioning) -> Vec<TextPrompt> {
    let Some(entry) = cond.0.first() else {
        return Vec::new();
    };
    let ones =
        |states: &Tensor| Tensor::ones([1, states.size()[1]], (Kind::Int64, states.device()));
    let mask_of = |key: &str, states: &Tensor| {
        entry
            .extra
            .get(key)
            .map_or_else(|| ones(states), |m| m.shallow_clone())
    };
    let mut prompts = Vec::new();
    while let Some(states) = entry
        .extra
        .get(&format!("sam3_prompt.{}.cond", prompts.len()))
    {
        let i = prompts.len();
        let count = entry
            .extra
            .get(&format!("sam3_prompt.{i}.max_detections"))
            .map_or(1, |c| c.int64_value(&[0]).max(1) as usize);
        prompts.push(TextPrompt {
            mask: mask_of(&format!("sam3_prompt.{i}.attention_mask"), states),
            states: states.shallow_clone(),
            max_detections: count,
        });
    }
    if prompts.is_empty() {
        prompts.push(TextPrompt {
            mask: mask_of("attention_mask", &entry.context),
            states: entry.context.shallow_clone(),
            max_detections: 1,
        });
    }
    prompts
}

/// One box dict `{x, y, width, height}` → (x1, y1, x2, y2).
fn box_of(d: &Json) -> Result<[f64; 4], NodeError> {
    let get = |k: &str| {
        d.get(k)
            .and_then(Json::as_f64)
            .ok_or_else(|| NodeError::value(format!("a bounding box needs a number `{k}`: {d}")))
    };
    let (x, y) = (get("x")?, get("y")?);
    Ok([x, y, x + get("width")?, y + get("height")?])
}

/// BOUNDING_BOX input → the boxes of each of `frames` frames: one dict or a list for every
/// frame, or a list per frame (the last repeated when there are fewer lists than frames).
fn frame_boxes(value: &Json, frames: usize) -> Result<Vec<Vec<[f64; 4]>>, NodeError> {
    let shared = |boxes: Vec<[f64; 4]>| Ok(vec![boxes; frames]);
    match value {
        Json::Object(_) => shared(vec![box_of(value)?]),
        Json::Array(items) if items.first().is_some_and(Json::is_array) => {
            let mut out = items
                .iter()
                .map(|f| {
                    f.as_array()
                        .map_or(Ok(Vec::new()), |f| f.iter().map(box_of).collect())
                })
                .collect::<Result<Vec<_>, _>>()?;
            while out.len() < frames {
                out.push(out.last().cloned().unwrap_or_default());
            }
            Ok(out)
        }
        Json::Array(items) => shared(items.iter().map(box_of).collect::<Result<_, _>>()?),
        _ => Ok(vec![Vec::new(); frames]),
    }
}

/// A point-prompt JSON string (KJNodes' PointsEditor format) → (x, y) pairs.
fn points_of(text: Option<String>) -> Result<Vec<(f64, f64)>, NodeError> {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(Vec::new());
    };
    let parsed: Json = serde_json::from_str(&text)
        .map_err(|e| NodeError::value(format!("point prompts are not JSON ({e}): {text}")))?;
    let items = parsed
        .as_array()
        .ok_or_else(|| NodeError::value(format!("point prompts must be a list: {text}")))?;
    items
        .iter()
        .map(|p| {
            let get = |k: &str| p.get(k).and_then(Json::as_f64);
            get("x")
                .zip(get("y"))
                .ok_or_else(|| NodeError::value(format!("a point needs numbers x and y: {p}")))
        })
        .collect()
}

fn json_input(i: &Inputs, name: &str) -> Option<Json> {
    match i.get(name)? {
        Value::Json(Json::Null) => None,
        Value::Json(j) => Some(j.clone()),
        Value::List(items) => Some(Json::Array(
            items
                .iter()
                .filter_map(|v| match v {
                    Value::Json(j) => Some(j.clone()),
                    _ => None,
                })
                .collect(),
        )),
        _ => None,
    }
}

/// A batch's image count, height and width.
type BatchSize = (i64, i64, i64);

/// The SAM 3 MODEL of `node`'s inputs and its `images` input with their count and size.
fn model_and_images<'a>(
    i: &'a Inputs,
    node: &str,
    images: &str,
) -> Result<(&'a Sam3, &'a Tensor, BatchSize), NodeError> {
    let sam3 = i
        .object::<Sam3>("model")
        .map_err(|_| NodeError::value(format!("{node} needs the MODEL of a SAM 3 checkpoint")))?;
    let images = i.tensor(images)?;
    let (frames, h, w, _) = images
        .size4()
        .map_err(|e| NodeError::value(e.to_string()))?;
    Ok((sam3, images, (frames, h, w)))
}

fn detect_node(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let (sam3, images, (frames, h, w)) = model_and_images(i, "SAM3_Detect", "image")?;
    let threshold = i.float("threshold")?;
    let passes = i.int("refine_iterations")?;
    let individual = i.boolean("individual_masks")?;
    let prompts = i
        .opt_object::<Conditioning>("conditioning")
        .map(text_prompts)
        .unwrap_or_default();
    let boxes = json_input(i, "bboxes")
        .map(|b| frame_boxes(&b, frames as usize))
        .transpose()?;
    let positive = points_of(i.get("positive_coords").and_then(string_of))?;
    let negative = points_of(i.get("negative_coords").and_then(string_of))?;
    let frame_boxes = |f: i64| {
        boxes
            .as_ref()
            .map(|b| b[f as usize].clone())
            .unwrap_or_default()
    };
    let points: Vec<(f64, f64, i64)> = positive
        .iter()
        .map(|&(x, y)| (x, y, 1))
        .chain(negative.iter().map(|&(x, y)| (x, y, 0)))
        .collect();
    let model = sam3.loaded()?;
    let device = sam3.device();
    let mut all_masks = Vec::new();
    let mut all_boxes = Vec::new();
    for f in 0..frames {
        let mut masks = Vec::new();
        let mut found_boxes = Vec::new();
        let frame_boxes = frame_boxes(f);
        if !points.is_empty() || !frame_boxes.is_empty() || !prompts.is_empty() {
            let pixels = images.get(f).to_device(device).to_kind(Kind::Float);
            let frame = Frame::new(&model, pixels)?;
            if !points.is_empty() {
                masks.push(frame.segment(PixelPrompt::Points(points.clone()), passes)?);
            }
            // Beside a text prompt the boxes are the detector's exemplars; alone, each is
            // segmented by the SAM heads.
            if prompts.is_empty() {
                for &b in &frame_boxes {
                    masks.push(frame.segment(PixelPrompt::Box(b), passes)?);
                }
            }
            for d in frame.detect_text(&prompts, &frame_boxes, threshold, passes)? {
                let [x1, y1, x2, y2] = d.bbox;
                found_boxes.push(json!({
                    "x": x1, "y": y1, "width": x2 - x1, "height": y2 - y1, "score": d.score,
                }));
                masks.push(d.mask);
            }
        }
        let masks: Vec<Tensor> = masks
            .iter()
            .map(|m| m.to_device(tch::Device::Cpu))
            .collect();
        let stacked = if masks.is_empty() {
            Tensor::zeros([0, h, w], (Kind::Float, tch::Device::Cpu))
        } else {
            Tensor::stack(&masks, 0)
        };
        // The union of no masks is an empty frame.
        let frame_mask = if individual {
            stacked
        } else {
            stacked.gt(0.0).any_dim(0, false).to_kind(Kind::Float)
        };
        all_masks.push(frame_mask);
        all_boxes.push(Json::Array(found_boxes));
        ctx.progress(f as u64 + 1, frames as u64)?;
    }
    let masks = if individual {
        Tensor::cat(&all_masks, 0)
    } else {
        Tensor::stack(&all_masks, 0)
    };
    Ok(NodeOutput::values(vec![
        Value::tensor(masks),
        Value::Json(Json::Array(all_boxes)),
    ]))
}

fn string_of(v: &Value) -> Option<String> {
    match v {
        Value::Str(s) => Some(s.clone()),
        _ => None,
    }
}

fn video_track(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let (sam3, images, (frames, _, _)) = model_and_images(i, "SAM3_VideoTrack", "images")?;
    let prompts = i
        .opt_object::<Conditioning>("conditioning")
        .filter(|c| !c.0.is_empty())
        .map(text_prompts)
        .unwrap_or_default();
    let initial = i.opt_tensor("initial_mask");
    if prompts.is_empty() && initial.is_none() {
        return Err(NodeError::value(
            "Either initial_mask or conditioning must be provided",
        ));
    }
    let settings = TrackSettings {
        threshold: i.float("detection_threshold")?,
        max_objects: i.int("max_objects")?,
        detect_interval: i.int("detect_interval")?,
    };
    let model = sam3.loaded()?;
    let initial = initial.map(|m| {
        let m = if m.dim() == 2 {
            m.unsqueeze(0)
        } else {
            m.shallow_clone()
        };
        m.to_kind(model.dtype)
    });
    let mut stopped = None;
    let report = |done: i64, _: Option<&FrameOutput>| match ctx.progress(done as u64, frames as u64)
    {
        Ok(()) => true,
        Err(e) => {
            stopped = Some(e);
            false
        }
    };
    let tracked = model.track_video(images, initial.as_ref(), &prompts, &settings, report);
    if let Some(e) = stopped {
        return Err(e);
    }
    Ok(NodeOutput::one(Value::object(tracked?)))
}

fn track_to_mask(i: &Inputs, _: &ExecContext) -> NodeResult {
    let track = i.object::<TrackData>("track_data")?;
    let (h, w) = track.orig_size;
    let empty = |n: i64| Tensor::zeros([n, h, w], (Kind::Float, tch::Device::Cpu));
    let Some(packed) = &track.packed else {
        return Ok(NodeOutput::one(Value::tensor(empty(track.frames))));
    };
    let (n, objects) = (packed.size()[0], packed.size()[1]);
    let chosen = object_indices(&i.string("object_indices")?, objects);
    let Some((&first, rest)) = chosen.split_first() else {
        return Ok(NodeOutput::one(Value::tensor(empty(n))));
    };
    let union = rest.iter().fold(packed.select(1, first), |u, &k| {
        u.bitwise_or_tensor(&packed.select(1, k))
    });
    let masks = unpack_masks(&union)
        .unsqueeze(1)
        .to_kind(Kind::Float)
        .upsample_bilinear2d([h, w], false, None, None)
        .select(1, 0);
    Ok(NodeOutput::one(Value::tensor(masks)))
}

/// SAM3_TrackPreview: the tracks painted over the video (or black frames), saved as an h264
/// mp4 in the temp folder and shown as the node's animated preview.
fn track_preview(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let track = i.object::<TrackData>("track_data")?;
    let frames = render(track, i.opt_tensor("images"), i.float("opacity")?);
    let name = format!(
        "sam3_track_preview_{}.mp4",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let folder = ctx.env.paths.type_dir("temp").expect("known type");
    std::fs::create_dir_all(folder).map_err(|e| NodeError::runtime(e.to_string()))?;
    let spec = VideoSpec::h264_mp4(vec![], vec![]);
    // ComfyUI's rate is the fps in thousandths.
    let fps = (i.float("fps")? * 1000.0).round() / 1000.0;
    with_progress(ctx, |p| {
        write_video(&folder.join(&name), &frames, fps, None, &spec, p)
    })?;
    let record = json!({"filename": name, "subfolder": "", "type": "temp"});
    Ok(NodeOutput {
        values: vec![],
        ui: Some(animated_ui(record)),
    })
}

pub fn register(r: &mut Registry) {
    r.add(
        NodeDef::builtin(
            "SAM3_VideoTrack",
            Style::V3,
            "Run SAM3 Video Track",
            "image/detection",
            video_track,
        )
        .module("comfy_extras.nodes_sam3")
        .aliases(&["sam3", "video", "track", "propagate"])
        .input(InputDef::new("images", "IMAGE").opt("display_name", json!("images")).tooltip("Video frames as batched images"))
        .input(InputDef::new("model", "MODEL").opt("display_name", json!("model")))
        .input(
            InputDef::new("initial_mask", "MASK")
                .optional()
                .opt("display_name", json!("initial_mask"))
                .tooltip("Mask(s) for the first frame to track (one per object)"),
        )
        .input(
            InputDef::new("conditioning", "CONDITIONING")
                .optional()
                .opt("display_name", json!("conditioning"))
                .tooltip("Text conditioning for detecting new objects during tracking"),
        )
        .input(
            InputDef::float("detection_threshold")
                .opt("display_name", json!("detection_threshold"))
                .default_float(0.5)
                .min_float(0.0)
                .max_float(1.0)
                .step_float(0.01)
                .tooltip("Score threshold for text-prompted detection."),
        )
        .input(
            InputDef::int("max_objects")
                .opt("display_name", json!("max_objects"))
                .default(4)
                .min(0)
                .max(64)
                .tooltip("Max tracked objects. Initial masks count toward this limit. 0 uses the internal cap of 64."),
        )
        .input(
            InputDef::int("detect_interval")
                .opt("display_name", json!("detect_interval"))
                .default(1)
                .min(1)
                .tooltip("Run detection every N frames (1=every frame). Higher values save compute."),
        )
        .named_output("SAM3_TRACK_DATA", "track_data"),
    );
    r.add(
        NodeDef::builtin(
            "SAM3_TrackToMask",
            Style::V3,
            "SAM3 Track to Mask",
            "image/detection",
            track_to_mask,
        )
        .module("comfy_extras.nodes_sam3")
        .input(InputDef::new("track_data", "SAM3_TRACK_DATA").opt("display_name", json!("track_data")))
        .input(
            InputDef::string("object_indices")
                .opt("display_name", json!("object_indices"))
                .default("")
                .tooltip("Comma-separated object indices to include (e.g. '0,2,3'). Empty = all objects."),
        )
        .named_output("MASK", "masks"),
    );
    r.add(
        NodeDef::builtin(
            "SAM3_TrackPreview",
            Style::V3,
            "SAM3 Track Preview",
            "image/detection",
            track_preview,
        )
        .module("comfy_extras.nodes_sam3")
        .input(
            InputDef::new("track_data", "SAM3_TRACK_DATA").opt("display_name", json!("track_data")),
        )
        .input(
            InputDef::new("images", "IMAGE")
                .optional()
                .opt("display_name", json!("images")),
        )
        .input(
            InputDef::float("opacity")
                .opt("display_name", json!("opacity"))
                .default_float(0.5)
                .min_float(0.0)
                .max_float(1.0)
                .step_float(0.05),
        )
        .input(
            InputDef::float("fps")
                .opt("display_name", json!("fps"))
                .default_float(24.0)
                .min_float(1.0)
                .max_float(120.0)
                .step_float(1.0),
        )
        .output_node(),
    );
    let forced = |d: InputDef| d.optional().opt("forceInput", json!(true));
    // SAM3_Detect's schema names every input's display name after the input.
    let shown = |d: InputDef| {
        let name = d.name.clone();
        d.opt("display_name", json!(name))
    };
    r.add(
        NodeDef::builtin(
            "SAM3_Detect",
            Style::V3,
            "SAM3 Detect",
            "image/detection",
            detect_node,
        )
        .module("comfy_extras.nodes_sam3")
        .aliases(&[
            "sam3",
            "segment anything",
            "open vocabulary",
            "text detection",
            "segment",
        ])
        .input(shown(InputDef::new("model", "MODEL")))
        .input(shown(InputDef::new("image", "IMAGE")))
        .input(
            shown(InputDef::new("conditioning", "CONDITIONING"))
                .optional()
                .tooltip("Text conditioning from CLIPTextEncode"),
        )
        .input(
            // A BoundingBox input is a socketless widget with a default box.
            shown(InputDef::new("bboxes", "BOUNDING_BOX"))
                .optional()
                .tooltip("Bounding boxes to segment within")
                .default(json!({"x": 0, "y": 0, "width": 512, "height": 512}))
                .opt("socketless", json!(true))
                .opt("forceInput", json!(true)),
        )
        .input(forced(shown(InputDef::string("positive_coords"))).tooltip(
            "Positive point prompts as JSON [{\"x\": int, \"y\": int}, ...] (pixel coords)",
        ))
        .input(forced(shown(InputDef::string("negative_coords"))).tooltip(
            "Negative point prompts as JSON [{\"x\": int, \"y\": int}, ...] (pixel coords)",
        ))
        .input(
            shown(InputDef::float("threshold"))
                .default_float(0.5)
                .min_float(0.0)
                .max_float(1.0)
                .step_float(0.01),
        )
        .input(
            shown(InputDef::int("refine_iterations"))
                .default(2)
                .min(0)
                .max(5)
                .tooltip("SAM decoder refinement passes (0=use raw detector masks)"),
        )
        .input(
            shown(InputDef::boolean("individual_masks"))
                .default(false)
                .tooltip("Output per-object masks instead of union"),
        )
        .named_output("MASK", "masks")
        .named_output("BOUNDING_BOX", "bboxes"),
    );
}
