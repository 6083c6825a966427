//! InfiniteTalk: ModelPatchLoader (`comfy_extras/nodes_model_patch.py`, the InfiniteTalk kind)
//! and WanInfiniteTalkToVideo (`comfy_extras/nodes_wan.py`), which projects one or two
//! speakers' wav2vec2 features into the patch's audio tokens and patches the model with them,
//! the start image (or the previous clip's last frames) held fixed at the video's start.

use std::sync::Arc;

use tch::{Kind, Tensor};

use super::loaders::{files, model_file};
use super::wan::{
    both_with, fit_end, fit_start, latent_frames, video_length, video_side, with_clip_vision,
};
use crate::engine::context::ExecContext;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeError, NodeOutput, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::{SharedTensor, Value};
use crate::models::audio_encoder::AudioEncoderOutput;
use crate::models::vae::Vae;
use crate::models::wan::infinite_talk::TalkPatchFile;
use crate::models::wan::net::{TalkSettings, WanNet};
use crate::sampling::model::{Conditioning, FixedStart, Latent, Model};

/// wav2vec2 states come at 50 per second; InfiniteTalk takes one per video frame at 25 fps.
const AUDIO_FPS: f64 = 50.0;
const VIDEO_FPS: f64 = 25.0;

fn model_patch_loader(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let path = model_file(ctx, "model_patches", &i.string("name")?)?;
    let patch = TalkPatchFile::open(ctx.env.models.clone(), &path).map_err(|e| {
        NodeError::value(format!(
            "{}: {e:#} (only InfiniteTalk patches are supported so far)",
            path.display()
        ))
    })?;
    Ok(NodeOutput::one(Value::object(Arc::new(patch))))
}

/// `linear_interpolation` of one speaker's encoder states: every layer but the first (the
/// feature projection) from 50 to 25 states per second (linear, corners aligned),
/// `[frames, layers, width]`.
fn speaker_features(audio: &AudioEncoderOutput) -> Result<Tensor, NodeError> {
    let layers: Vec<Tensor> = audio
        .all_layers
        .iter()
        .skip(1)
        .map(|t| t.squeeze_dim(0))
        .collect();
    if layers.is_empty() {
        return Err(NodeError::value("the audio encoder output has no layers"));
    }
    let states = Tensor::stack(&layers, 0).to_kind(Kind::Float); // [layers, T, width]
    Ok(to_video_rate(&states).transpose(0, 1))
}

/// `linear_interpolation(features, 50, 25)`: encoder states `[n, T, width]` at 50 per second
/// to 25 (video frames), linear with aligned corners.
pub(super) fn to_video_rate(states: &Tensor) -> Tensor {
    let n = states.size()[1];
    let frames = (n as f64 / AUDIO_FPS * VIDEO_FPS) as i64;
    states
        .transpose(1, 2)
        .upsample_linear1d([frames], true, None)
        .transpose(1, 2)
}

/// ComfyUI's `multi_audio_type = "add"`: the speakers one after the other, each silent (zeros)
/// while the other speaks.
fn one_after_another(speakers: Vec<Tensor>) -> Vec<Tensor> {
    if speakers.len() < 2 {
        return speakers;
    }
    let total: i64 = speakers.iter().map(|s| s.size()[0]).sum();
    let mut offset = 0;
    speakers
        .iter()
        .map(|s| {
            let mut shape = s.size();
            let n = shape[0];
            shape[0] = total;
            let full = Tensor::zeros(shape.as_slice(), (s.kind(), s.device()));
            full.narrow(0, offset, n).copy_(s);
            offset += n;
            full
        })
        .collect()
}

/// The two speakers' masks at the patch grid of the latent (nearest), as 0/1 per token of a
/// latent frame: `[2, (h/2)·(w/2)]`.
fn token_masks(masks: [&Tensor; 2], latent_h: i64, latent_w: i64) -> Tensor {
    let masks: Vec<Tensor> = masks
        .iter()
        .map(|m| {
            m.to_kind(Kind::Float)
                .reshape([-1, m.size()[m.dim() - 2], m.size()[m.dim() - 1]])
        })
        .collect();
    let masks = Tensor::cat(&masks, 0).unsqueeze(0);
    let grid = masks.upsample_nearest2d([latent_h / 2, latent_w / 2], None, None);
    grid.squeeze_dim(0)
        .gt(0.0)
        .to_kind(Kind::Float)
        .flatten(1, 2)
}

fn infinite_talk_to_video(i: &Inputs, _: &ExecContext) -> NodeResult {
    let model = i.object::<Model>("model")?;
    let patch = i.object::<Arc<TalkPatchFile>>("model_patch")?;
    let vae = i.object::<Arc<Vae>>("vae")?;
    let (width, height, length) = (i.int("width")?, i.int("height")?, i.int("length")?);
    let motion_frame_count = i.int("motion_frame_count")?;
    let previous = i.opt_tensor("previous_frames");
    if previous.is_some_and(|p| p.size()[0] < motion_frame_count) {
        return Err(NodeError::value("Not enough previous frames provided."));
    }
    let two = i.string("mode")? == "two_speakers";
    let in_mode = |name: &str| format!("mode.{name}");
    let second = two
        .then(|| i.opt_object::<AudioEncoderOutput>(&in_mode("audio_encoder_output_2")))
        .flatten();
    let masks = two.then(|| {
        [
            i.opt_tensor(&in_mode("mask_1")),
            i.opt_tensor(&in_mode("mask_2")),
        ]
    });
    let masks = match (masks, second) {
        (Some([Some(a), Some(b)]), Some(_)) => Some([a, b]),
        (Some([Some(_), Some(_)]), None) => {
            return Err(NodeError::value(
                "Second audio encoder output must be provided if two masks are used.",
            ))
        }
        (_, Some(_)) => {
            return Err(NodeError::value(
                "Masks must be provided if two audio encoder outputs are used.",
            ))
        }
        _ => None,
    };

    let frames = latent_frames(length);
    let (latent_h, latent_w) = (height / 8, width / 8);
    let cpu = (Kind::Float, tch::Device::Cpu);
    let latent = Tensor::zeros([1, 16, frames, latent_h, latent_w], cpu);
    let mut positive = i.object::<Conditioning>("positive")?.clone();
    let mut negative = i.object::<Conditioning>("negative")?.clone();
    let mut start_latent = None;
    if let Some(start) = i.opt_tensor("start_image") {
        let start = fit_start(start, length, width, height)?;
        let n = start.size()[0];
        let channels = start.size()[3];
        let image = Tensor::full([length, height, width, channels], 0.5, cpu);
        image.narrow(0, 0, n).copy_(&start.to_kind(Kind::Float));
        let encoded = vae.encode(&image.narrow(3, 0, 3))?;
        let (eh, ew) = (encoded.size()[3], encoded.size()[4]);
        let mask = Tensor::ones([1, 1, frames, eh, ew], cpu);
        let _ = mask.narrow(2, 0, latent_frames(n)).fill_(0.0);
        let extras = [("concat_latent_image", &encoded), ("concat_mask", &mask)];
        (positive, negative) = both_with(&positive, &negative, &extras);
        start_latent = Some(encoded.narrow(2, 0, 1));
    }
    let (positive, negative) = with_clip_vision(i, positive, negative);

    let first = i.object::<AudioEncoderOutput>("audio_encoder_output_1")?;
    let mut speakers = vec![speaker_features(first)?];
    if let Some(second) = second {
        speakers.push(speaker_features(second)?);
    }
    let speakers = one_after_another(speakers);

    let (audio_start, motion_latent, trim_image) = match previous {
        Some(previous) => {
            let motion = fit_end(previous, motion_frame_count, width, height)?;
            let offset = previous.size()[0] - motion_frame_count;
            let latent = vae.encode(&motion.narrow(3, 0, 3))?;
            (offset, latent, motion_frame_count)
        }
        None => {
            let latent = start_latent.ok_or_else(|| {
                NodeError::value("WanInfiniteTalkToVideo needs a start_image or previous_frames")
            })?;
            (0, latent, 0)
        }
    };
    let projection = patch.projection()?;
    let audio = tch::no_grad(|| projection.project(&speakers, audio_start, audio_start + length))?;

    let net = model
        .net
        .as_any()
        .and_then(|n| n.downcast_ref::<WanNet>())
        .ok_or_else(|| NodeError::value("InfiniteTalk patches Wan 2.1 models only"))?;
    let talk = TalkSettings {
        patch: patch.clone(),
        audio: SharedTensor::new(audio),
        scale: i.float("audio_scale")?,
        speaker_masks: masks.map(|m| SharedTensor::new(token_masks(m, latent_h, latent_w))),
    };
    let patched = Model {
        net: Arc::new(net.with_talk(talk)),
        fixed_start: Some(FixedStart {
            latent: Arc::new(SharedTensor::new(motion_latent)),
            replaces_output: previous.is_some(),
        }),
        ..model.clone()
    };
    Ok(NodeOutput::values(vec![
        Value::object(patched),
        Value::object(positive),
        Value::object(negative),
        Value::object(Latent::new(latent)),
        Value::Int(trim_image.into()),
    ]))
}

pub fn register(r: &mut Registry) {
    let mut loader = NodeDef::builtin(
        "ModelPatchLoader",
        Style::V1,
        "Load Model Patch",
        "model/loaders",
        model_patch_loader,
    )
    .module("comfy_extras.nodes_model_patch")
    .input(InputDef::combo_dynamic("name", files("model_patches")))
    .output("MODEL_PATCH");
    loader.experimental = true;
    r.add(loader);

    let optional = |name: &str, io_type: &str| InputDef::new(name, io_type).optional();
    let mode = InputDef::dynamic_combo(
        "mode",
        vec![
            ("single_speaker", vec![]),
            (
                "two_speakers",
                vec![
                    optional("audio_encoder_output_2", "AUDIO_ENCODER_OUTPUT"),
                    optional("mask_1", "MASK")
                        .tooltip("Mask for the first speaker, required if using two audio inputs."),
                    optional("mask_2", "MASK").tooltip(
                        "Mask for the second speaker, required if using two audio inputs.",
                    ),
                ],
            ),
        ],
    );
    r.add(
        NodeDef::builtin(
            "WanInfiniteTalkToVideo",
            Style::V3,
            "WanInfiniteTalkToVideo",
            "model/conditioning/wan/infinite talk",
            infinite_talk_to_video,
        )
        .module("comfy_extras.nodes_wan")
        .input(mode)
        .input(InputDef::new("model", "MODEL"))
        .input(InputDef::new("model_patch", "MODEL_PATCH"))
        .input(InputDef::new("positive", "CONDITIONING"))
        .input(InputDef::new("negative", "CONDITIONING"))
        .input(InputDef::new("vae", "VAE"))
        .input(video_side("width", 832))
        .input(video_side("height", 480))
        .input(video_length(81))
        .input(optional("clip_vision_output", "CLIP_VISION_OUTPUT"))
        .input(optional("start_image", "IMAGE"))
        .input(InputDef::new(
            "audio_encoder_output_1",
            "AUDIO_ENCODER_OUTPUT",
        ))
        .input(
            InputDef::int("motion_frame_count")
                .tooltip("Number of previous frames to use as motion context.")
                .opt("advanced", serde_json::json!(true))
                .default(9)
                .min(1)
                .max(33)
                .step(1),
        )
        .input(
            InputDef::float("audio_scale")
                .default_float(1.0)
                .min_float(-10.0)
                .max_float(10.0)
                .step_float(0.01),
        )
        .input(optional("previous_frames", "IMAGE"))
        .named_output("MODEL", "model")
        .named_output("CONDITIONING", "positive")
        .named_output("CONDITIONING", "negative")
        .named_output("LATENT", "latent")
        .named_output("INT", "trim_image"),
    );
}
