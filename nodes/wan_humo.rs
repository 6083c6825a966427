//! HuMo's conditioning (`WanHuMoImageToVideo` in `comfy_extras/nodes_wan.py`): Whisper's
//! layers averaged in four groups of eight plus the last, at 25 per second, cut into each latent
//! frame's 8-frame window; the reference image's latent (zeros for the negative).

use std::sync::Arc;

use tch::{Kind, Tensor};

use super::wan::{both_with, conditioned, conditioning_inputs, latent_frames, with_extras};
use super::wan_talk::to_video_rate;
use crate::engine::context::ExecContext;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeError, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::models::audio_encoder::AudioEncoderOutput;
use crate::models::vae::Vae;
use crate::sampling::model::Conditioning;
use crate::upscale::common_upscale;

/// Samples of 16 kHz audio per video frame at 25 fps.
const SAMPLES_PER_FRAME: i64 = 640;
/// Whisper large-v3's width, of the zero audio used when none is given.
const WHISPER_WIDTH: i64 = 1280;
/// Frames of audio features per latent frame's window.
const WINDOW: i64 = 8;
/// `audio_shift`: the window reaches this far around a latent frame's four video frames.
const SHIFT: i64 = 2;

/// The five feature rows per video frame: layers 0–7, 8–15, 16–23 and 24–31 averaged, and the
/// last state, `[frames, 5, width]`.
fn feature_groups(audio: &AudioEncoderOutput) -> Result<Tensor, NodeError> {
    let layers: Vec<Tensor> = audio.all_layers.iter().map(|t| t.shallow_clone()).collect();
    if layers.len() < 33 {
        return Err(NodeError::value(format!(
            "HuMo needs Whisper large-v3's 33 hidden states, the encoder gave {}",
            layers.len()
        )));
    }
    let states = Tensor::stack(&layers, 2).to_kind(Kind::Float); // [B, T, 33, width]
    let kept = (audio.audio_samples / SAMPLES_PER_FRAME * 2).min(states.size()[1]);
    let states = states.narrow(1, 0, kept);
    let group = |start: i64, n: i64| {
        let mean = states.narrow(2, start, n).mean_dim(2, false, Kind::Float);
        to_video_rate(&mean)
    };
    let groups = [
        group(0, 8),
        group(8, 8),
        group(16, 8),
        group(24, 8),
        group(32, 1),
    ];
    Ok(Tensor::stack(&groups, 2).get(0))
}

/// `get_audio_emb_window`: each latent frame's window of features (zeros outside the audio):
/// the first frame's five around it after three zero rows, then every four video frames with
/// two more on either side. `[latent frames, 8, 5, width]`.
fn latent_windows(features: &Tensor, length: i64) -> Tensor {
    let n = features.size()[0];
    let row_shape = &features.size()[1..];
    let zeros = |k: i64| {
        Tensor::zeros(
            [&[k][..], row_shape].concat().as_slice(),
            (features.kind(), features.device()),
        )
    };
    let rows = |start: i64, end: i64| -> Vec<Tensor> {
        (start..end)
            .map(|i| {
                if (0..n).contains(&i) {
                    features.narrow(0, i, 1)
                } else {
                    zeros(1)
                }
            })
            .collect()
    };
    let windows: Vec<Tensor> = (0..latent_frames(length))
        .map(|lt| {
            let parts = if lt == 0 {
                let mut parts = vec![zeros(WINDOW - 5)];
                parts.extend(rows(-SHIFT, SHIFT + 1));
                parts
            } else {
                rows(1 + 4 * (lt - 1) - SHIFT, 1 + 4 * lt + SHIFT)
            };
            Tensor::cat(&parts, 0)
        })
        .collect();
    Tensor::stack(&windows, 0)
}

fn humo_image_to_video(i: &Inputs, _: &ExecContext) -> NodeResult {
    let vae = i.object::<Arc<Vae>>("vae")?;
    let (width, height, length) = (i.int("width")?, i.int("height")?, i.int("length")?);
    let batch = i.int("batch_size")?;
    let frames = latent_frames(length);
    let cpu = (Kind::Float, tch::Device::Cpu);
    let latent = Tensor::zeros([batch, 16, frames, height / 8, width / 8], cpu);
    let positive = i.object::<Conditioning>("positive")?;
    let negative = i.object::<Conditioning>("negative")?;
    let (positive, negative) = match i.opt_tensor("ref_image") {
        Some(image) => {
            let first = image.narrow(0, 0, 1).narrow(3, 0, 3).permute([0, 3, 1, 2]);
            let first = common_upscale(&first, width, height, "bilinear", "center")?;
            let reference = vae.encode(&first.permute([0, 2, 3, 1]))?;
            let none = reference.zeros_like();
            (
                with_extras(positive, &[("reference_latent", &reference)]),
                with_extras(negative, &[("reference_latent", &none)]),
            )
        }
        None => {
            let none = Tensor::zeros([batch, 16, 1, height / 8, width / 8], cpu);
            both_with(positive, negative, &[("reference_latent", &none)])
        }
    };
    let audio = match i.opt_object::<AudioEncoderOutput>("audio_encoder_output") {
        Some(audio) => latent_windows(&feature_groups(audio)?, length).unsqueeze(0),
        // ComfyUI's zeros here have one frame more than the video, which its model cannot
        // take; silence for the video's frames.
        None => Tensor::zeros([batch, frames, WINDOW, 5, WHISPER_WIDTH], cpu),
    };
    let silence = audio.zeros_like();
    let positive = with_extras(&positive, &[("audio_embed", &audio)]);
    let negative = with_extras(&negative, &[("audio_embed", &silence)]);
    conditioned(positive, negative, latent)
}

pub fn register(r: &mut Registry) {
    let node = NodeDef::builtin(
        "WanHuMoImageToVideo",
        Style::V3,
        "WanHuMoImageToVideo",
        "model/conditioning/wan/humo",
        humo_image_to_video,
    )
    .module("comfy_extras.nodes_wan");
    let mut node = conditioning_inputs(node, 97)
        .input(InputDef::new("audio_encoder_output", "AUDIO_ENCODER_OUTPUT").optional())
        .input(InputDef::new("ref_image", "IMAGE").optional())
        .named_output("CONDITIONING", "positive")
        .named_output("CONDITIONING", "negative")
        .named_output("LATENT", "latent");
    node.experimental = true;
    r.add(node);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::value::SharedTensor;

    /// Row `i` of the features holds `i + 1`, so a window shows which rows it took (0: none).
    fn taken(window: &Tensor) -> Vec<i64> {
        Vec::<f32>::try_from(window.select(1, 0).select(1, 0))
            .unwrap()
            .iter()
            .map(|v| *v as i64)
            .collect()
    }

    #[test]
    fn latent_windows_take_comfyuis_rows() {
        let features = (Tensor::arange(12, (Kind::Float, tch::Device::Cpu)) + 1.0)
            .view([12, 1, 1])
            .expand([12, 5, 3], false);
        let windows = latent_windows(&features, 13);
        assert_eq!(windows.size(), [4, 8, 5, 3]);
        // The first frame: three zero rows, then rows −2 … 2.
        assert_eq!(taken(&windows.get(0)), [0, 0, 0, 0, 0, 1, 2, 3]);
        // Then rows 4k − 5 … 4k + 2 for latent frame k.
        assert_eq!(taken(&windows.get(1)), [0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(taken(&windows.get(2)), [4, 5, 6, 7, 8, 9, 10, 11]);
        assert_eq!(taken(&windows.get(3)), [8, 9, 10, 11, 12, 0, 0, 0]);
    }

    #[test]
    fn feature_groups_average_eight_layers_at_a_time_and_keep_the_last() {
        // Layer i holds i everywhere; 1 s of audio keeps 50 states, 25 after resampling.
        let layers = (0..33)
            .map(|i| {
                Arc::new(SharedTensor::new(Tensor::full(
                    [1, 1500, 4],
                    i as f64,
                    (Kind::Float, tch::Device::Cpu),
                )))
            })
            .collect();
        let output = AudioEncoderOutput {
            encoded_audio: Arc::new(SharedTensor::new(Tensor::zeros(
                [1, 1500, 4],
                (Kind::Float, tch::Device::Cpu),
            ))),
            all_layers: layers,
            audio_samples: 16000,
        };
        let groups = feature_groups(&output).unwrap();
        assert_eq!(groups.size(), [25, 5, 4]);
        let values = Vec::<f32>::try_from(groups.get(7).select(1, 0)).unwrap();
        assert_eq!(values, [3.5, 11.5, 19.5, 27.5, 32.0]);
    }
}
