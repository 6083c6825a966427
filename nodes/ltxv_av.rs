//! LTX-2's joint audio-video latents (`comfy_extras/nodes_lt.py`): LTXVConcatAVLatent nests a
//! video and an audio latent into one that the sampler packs, LTXVSeparateAVLatent splits it.

use std::sync::Arc;

use anyhow::bail;
use tch::Tensor;

use crate::engine::context::ExecContext;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeError, NodeOutput, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::{SharedTensor, Value};
use crate::sampling::ksampler::prepare_mask;
use crate::sampling::model::Latent;

/// `fit_audio`: the audio stream (and its mask) trimmed or zero-padded along the one axis where it
/// differs from the stream it replaces; the padding stays unmasked, so the model fills it.
fn fit_audio(
    reference: &Tensor,
    audio: Tensor,
    mask: Option<Tensor>,
) -> anyhow::Result<(Tensor, Option<Tensor>)> {
    let (want, have) = (reference.size(), audio.size());
    let dims: Vec<usize> = (0..want.len().max(have.len()))
        .filter(|&d| want.get(d) != have.get(d))
        .collect();
    if dims.is_empty() {
        return Ok((audio, mask));
    }
    if want.len() != have.len() || dims.len() > 1 || dims[0] < 2 {
        bail!("audio latent {have:?} cannot be fitted to {want:?}");
    }
    let (dim, length) = (dims[0] as i64, want[dims[0]]);
    let mask = mask.map(|m| prepare_mask(&m, &have));
    if have[dims[0]] > length {
        return Ok((
            audio.narrow(dim, 0, length),
            mask.map(|m| m.narrow(dim, 0, length)),
        ));
    }
    let mut pad_shape = have.clone();
    pad_shape[dims[0]] = length - have[dims[0]];
    let pad = Tensor::zeros(pad_shape.as_slice(), (audio.kind(), audio.device()));
    let mask = mask.map(|m| Tensor::cat(&[m, pad.ones_like()], dim));
    Ok((Tensor::cat(&[audio, pad], dim), mask))
}

fn concat_av_latent(i: &Inputs, _: &ExecContext) -> NodeResult {
    let video = i.object::<Latent>("video_latent")?;
    let audio = i.object::<Latent>("audio_latent")?;
    let tensor = |t: &Tensor| t.shallow_clone();
    let mut video_samples = tensor(&video.samples);
    let mut video_mask = video.noise_mask.as_deref().map(|m| tensor(m));
    let mut audio_samples = tensor(&audio.samples);
    let mut audio_mask = audio.noise_mask.as_deref().map(|m| tensor(m));
    // Already an AV latent: keep its video and swap its audio stream.
    if let Some(nested) = &video.nested {
        video_samples = tensor(&nested.parts[0]);
        video_mask = nested.masks.as_ref().map(|m| tensor(&m[0]));
        let reference = nested.parts.get(1).ok_or_else(|| {
            NodeError::value("LTXVConcatAVLatent: the video latent is nested without audio")
        })?;
        (audio_samples, audio_mask) = fit_audio(reference, audio_samples, audio_mask)?;
    }
    let masks = (video_mask.is_some() || audio_mask.is_some()).then(|| {
        vec![
            video_mask.unwrap_or_else(|| video_samples.ones_like()),
            audio_mask.unwrap_or_else(|| audio_samples.ones_like()),
        ]
    });
    let mut out = Latent::nested(vec![video_samples, audio_samples], masks);
    // The dict is the video's updated by the audio's.
    out.batch_index = audio
        .batch_index
        .clone()
        .or_else(|| video.batch_index.clone());
    Ok(NodeOutput::one(Value::object(out)))
}

fn separate_av_latent(i: &Inputs, _: &ExecContext) -> NodeResult {
    let av = i.object::<Latent>("av_latent")?;
    let nested = av
        .nested
        .as_ref()
        .filter(|n| n.parts.len() > 1)
        .ok_or_else(|| {
            NodeError::value(
                "LTXVSeparateAVLatent needs an audio-video latent (LTXVConcatAVLatent's)",
            )
        })?;
    let part = |k: usize| {
        let mut latent = av.with_samples(nested.parts[k].shallow_clone());
        if let Some(masks) = &nested.masks {
            latent.noise_mask = Some(Arc::new(SharedTensor::new(masks[k].shallow_clone())));
        }
        Value::object(latent)
    };
    Ok(NodeOutput::values(vec![part(0), part(1)]))
}

pub fn register(r: &mut Registry) {
    let node = |name: &str, display: &str, description: &str, f| {
        NodeDef::builtin(name, Style::V3, name, "model/latent/ltxv", f)
            .module("comfy_extras.nodes_lt")
            .display(display)
            .description(description)
    };
    r.add(
        node(
            "LTXVConcatAVLatent",
            "Concat AV Latent",
            "Merge a video latent and an audio latent into a joint AV latent (any AV model, e.g. \
             LTXV or MiniMax H3).",
            concat_av_latent,
        )
        .input(InputDef::new("video_latent", "LATENT"))
        .input(InputDef::new("audio_latent", "LATENT"))
        .named_output("LATENT", "latent"),
    );
    r.add(
        node(
            "LTXVSeparateAVLatent",
            "Separate AV Latent",
            "Split a joint AV latent into its video and audio latents (any AV model, e.g. LTXV or \
             MiniMax H3).",
            separate_av_latent,
        )
        .input(InputDef::new("av_latent", "LATENT"))
        .named_output("LATENT", "video_latent")
        .named_output("LATENT", "audio_latent"),
    );
}
