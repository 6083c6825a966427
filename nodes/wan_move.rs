//! WanMove (`comfy_extras/nodes_wanmove.py`): GenerateTracks, WanMoveTracksFromCoords,
//! WanMoveConcatTrack, WanMoveVisualizeTracks and WanMoveTrackToVideo, which copies the start
//! frame's latent features along the tracks into the image-to-video concat latent.

use tch::{Kind, Tensor};

use super::wan::{
    both_with, conditioned, latent_frames, start_frames_concat, video_length, with_clip_vision,
};
use crate::engine::context::ExecContext;
use crate::engine::node::{
    InputDef, Inputs, NodeDef, NodeError, NodeFunction, NodeOutput, NodeResult, Style,
    MAX_RESOLUTION,
};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::models::wan::track_overlay::{draw_tracks, OverlayStyle};
use crate::models::wan::wan_move::{
    carry_features, generate_tracks, latent_cells, tracks_from_json, PathSpec, Timing, Tracks,
};
use crate::sampling::model::Conditioning;

fn move_node(name: &str, display: &str, f: NodeFunction) -> NodeDef {
    NodeDef::builtin(name, Style::V3, display, "model/conditioning/wan/move", f)
        .module("comfy_extras.nodes_wanmove")
}

/// The tracks and their frame count, as the track sources return them.
fn tracks_output(tracks: Tracks) -> NodeResult {
    let length = tracks.frames() as i128;
    Ok(NodeOutput::values(vec![
        Value::object(tracks),
        Value::Int(length),
    ]))
}

/// The tracks with the optional `track_mask`'s per-frame visibility.
fn masked(i: &Inputs, tracks: Tracks) -> Result<Tracks, NodeError> {
    match i.opt_tensor("track_mask") {
        Some(mask) => tracks.with_mask(mask).map_err(NodeError::value),
        None => Ok(tracks),
    }
}

fn generate(i: &Inputs, _: &ExecContext) -> NodeResult {
    let point =
        |x: &str, y: &str| -> Result<(f64, f64), NodeError> { Ok((i.float(x)?, i.float(y)?)) };
    let interpolation = i.string("interpolation")?;
    let timing = Timing::from_name(&interpolation)
        .ok_or_else(|| NodeError::value(format!("unknown interpolation {interpolation:?}")))?;
    let spec = PathSpec {
        width: i.int("width")?,
        height: i.int("height")?,
        start: point("start_x", "start_y")?,
        mid: point("mid_x", "mid_y")?,
        end: point("end_x", "end_y")?,
        frames: i.int("num_frames")?,
        tracks: i.int("num_tracks")?,
        spread: i.float("track_spread")?,
        bezier: i.boolean("bezier")?,
        timing,
    };
    tracks_output(masked(i, generate_tracks(&spec))?)
}

fn from_coords(i: &Inputs, _: &ExecContext) -> NodeResult {
    let text = match i.get("track_coords") {
        Some(_) => i.string("track_coords")?,
        None => "[]".into(),
    };
    let tracks = tracks_from_json(&text).map_err(NodeError::value)?;
    tracks_output(masked(i, tracks)?)
}

fn concat(i: &Inputs, _: &ExecContext) -> NodeResult {
    let first = i.object::<Tracks>("tracks_1")?;
    let joined = match i.opt_object::<Tracks>("tracks_2") {
        Some(second) => first.concat(second).map_err(NodeError::value)?,
        None => first.clone(),
    };
    Ok(NodeOutput::one(Value::object(joined)))
}

fn visualize(i: &Inputs, _: &ExecContext) -> NodeResult {
    let images = i.tensor("images")?;
    let Some(tracks) = i.opt_object::<Tracks>("tracks") else {
        return Ok(NodeOutput::one(Value::tensor(images.shallow_clone())));
    };
    let style = OverlayStyle {
        tail: i.int("line_resolution")? as usize,
        circle_radius: i.int("circle_size")?,
        opacity: i.float("opacity")?,
        line_width: i.int("line_width")?,
    };
    let video = draw_tracks(images, tracks, style).map_err(NodeError::value)?;
    Ok(NodeOutput::one(Value::tensor(video)))
}

/// `WanMoveTrackToVideo`: WanImageToVideo whose concat latent carries the start frame's
/// features along the tracks (cut to `length` frames) by `strength`. ComfyUI changes the
/// encoded latent in place, so the negative conditioning gets the carried features too.
fn track_to_video(i: &Inputs, _: &ExecContext) -> NodeResult {
    let (width, height, length) = (i.int("width")?, i.int("height")?, i.int("length")?);
    let batch = i.int("batch_size")?;
    let mut positive = i.object::<Conditioning>("positive")?.clone();
    let mut negative = i.object::<Conditioning>("negative")?.clone();
    let latent = Tensor::zeros(
        [batch, 16, latent_frames(length), height / 8, width / 8],
        (Kind::Float, tch::Device::Cpu),
    );
    if let Some(start) = i.opt_tensor("start_image") {
        let (mut concat, mask) = start_frames_concat(i, start)?;
        let strength = i.float("strength")?;
        if let Some(tracks) = i.opt_object::<Tracks>("tracks").filter(|_| strength > 0.0) {
            let cells = latent_cells(&tracks.truncated(length as usize), (width, height));
            concat = carry_features(&concat, &cells, strength);
        }
        let extras = [("concat_latent_image", &concat), ("concat_mask", &mask)];
        (positive, negative) = both_with(&positive, &negative, &extras);
    }
    let (positive, negative) = with_clip_vision(i, positive, negative);
    conditioned(positive, negative, latent)
}

pub fn register(r: &mut Registry) {
    let unit = |name: &str, default: f64, tooltip: &str| {
        InputDef::float(name)
            .tooltip(tooltip)
            .default_float(default)
            .min_float(0.0)
            .max_float(1.0)
            .step_float(0.01)
    };
    let size = |name: &str, default: i64, max: i64| {
        InputDef::int(name)
            .default(default)
            .min(16)
            .max(max)
            .step(16)
    };
    let mask = |tooltip: Option<&str>| {
        let input = InputDef::new("track_mask", "MASK").optional();
        match tooltip {
            Some(t) => input.tooltip(t),
            None => input,
        }
    };
    r.add(
        move_node("WanMoveTrackToVideo", "WanMoveTrackToVideo", track_to_video)
            .input(InputDef::new("positive", "CONDITIONING"))
            .input(InputDef::new("negative", "CONDITIONING"))
            .input(InputDef::new("vae", "VAE"))
            .input(InputDef::new("tracks", "TRACKS").optional())
            .input(
                InputDef::float("strength")
                    .tooltip("Strength of the track conditioning.")
                    .default_float(1.0)
                    .min_float(0.0)
                    .max_float(100.0)
                    .step_float(0.01),
            )
            .input(size("width", 832, MAX_RESOLUTION))
            .input(size("height", 480, MAX_RESOLUTION))
            .input(video_length(81))
            .input(InputDef::int("batch_size").default(1).min(1).max(4096))
            .input(InputDef::new("start_image", "IMAGE"))
            .input(InputDef::new("clip_vision_output", "CLIP_VISION_OUTPUT").optional())
            .named_output("CONDITIONING", "positive")
            .named_output("CONDITIONING", "negative")
            .named_output("LATENT", "latent"),
    );
    r.add(
        move_node(
            "WanMoveTracksFromCoords",
            "WanMoveTracksFromCoords",
            from_coords,
        )
        .input(
            InputDef::string("track_coords")
                .optional()
                .default("[]")
                .opt("forceInput", serde_json::json!(true)),
        )
        .input(mask(None))
        .output("TRACKS")
        .named_output("INT", "track_length"),
    );
    r.add(
        move_node("WanMoveConcatTrack", "WanMoveConcatTrack", concat)
            .input(InputDef::new("tracks_1", "TRACKS"))
            .input(InputDef::new("tracks_2", "TRACKS").optional())
            .output("TRACKS"),
    );
    r.add(
        move_node(
            "WanMoveVisualizeTracks",
            "WanMoveVisualizeTracks",
            visualize,
        )
        .input(InputDef::new("images", "IMAGE"))
        .input(InputDef::new("tracks", "TRACKS").optional())
        .input(
            InputDef::int("line_resolution")
                .default(24)
                .min(1)
                .max(1024),
        )
        .input(
            InputDef::int("circle_size")
                .opt("advanced", serde_json::json!(true))
                .default(12)
                .min(1)
                .max(128),
        )
        .input(
            InputDef::float("opacity")
                .default_float(0.75)
                .min_float(0.0)
                .max_float(1.0)
                .step_float(0.01),
        )
        .input(
            InputDef::int("line_width")
                .opt("advanced", serde_json::json!(true))
                .default(16)
                .min(1)
                .max(128),
        )
        .output("IMAGE"),
    );
    r.add(
        move_node("GenerateTracks", "Generate Video Tracks", generate)
            .aliases(&["motion paths", "camera movement", "trajectory"])
            .input(size("width", 832, 4096))
            .input(size("height", 480, 4096))
            .input(unit(
                "start_x",
                0.0,
                "Normalized X coordinate (0-1) for start position.",
            ))
            .input(unit(
                "start_y",
                0.0,
                "Normalized Y coordinate (0-1) for start position.",
            ))
            .input(unit(
                "end_x",
                1.0,
                "Normalized X coordinate (0-1) for end position.",
            ))
            .input(unit(
                "end_y",
                1.0,
                "Normalized Y coordinate (0-1) for end position.",
            ))
            .input(InputDef::int("num_frames").default(81).min(1).max(1024))
            .input(InputDef::int("num_tracks").default(5).min(1).max(100))
            .input(
                InputDef::float("track_spread")
                    .tooltip(
                        "Normalized distance between tracks. Tracks are spread perpendicular to \
                         the motion direction.",
                    )
                    .default_float(0.025)
                    .min_float(0.0)
                    .max_float(1.0)
                    .step_float(0.001),
            )
            .input(
                InputDef::boolean("bezier")
                    .tooltip("Enable Bezier curve path using the mid point as control point.")
                    .default(false),
            )
            .input(unit(
                "mid_x",
                0.5,
                "Normalized X control point for Bezier curve. Only used when 'bezier' is enabled.",
            ))
            .input(unit(
                "mid_y",
                0.5,
                "Normalized Y control point for Bezier curve. Only used when 'bezier' is enabled.",
            ))
            .input(
                InputDef::combo("interpolation", &Timing::NAMES)
                    .tooltip("Controls the timing/speed of movement along the path."),
            )
            .input(mask(Some("Optional mask to indicate visible frames.")))
            .output("TRACKS")
            .named_output("INT", "track_length"),
    );
}
