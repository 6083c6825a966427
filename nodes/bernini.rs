//! Bernini (`comfy_extras/nodes_bernini.py`): in-context conditioning for Wan 2.2 A14B. The
//! source video, a reference video and reference images are VAE-encoded as separate streams,
//! which the model reads after the video's tokens (`WanModel`'s `context_latents`).

use std::sync::Arc;

use tch::{Kind, Tensor};

use super::wan::with_extras;
use crate::engine::context::ExecContext;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeError, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::models::vae::Vae;
use crate::models::wan::net::context_latent_key;
use crate::sampling::model::Conditioning;
use crate::upscale::common_upscale;

/// Reference image inputs (`reference_image_0` …).
const REFERENCE_IMAGES: usize = 8;
/// Sides are snapped to multiples of this.
const STRIDE: f64 = 16.0;

/// `_resize_long_edge`: keeps the aspect, the long edge at most `max_size`, each side rounded
/// (half to even, as Python's `round`) to a multiple of 16; area resampling, no crop.
fn resize_long_edge(images: &Tensor, max_size: i64) -> Result<Tensor, NodeError> {
    let (h, w) = (images.size()[1] as f64, images.size()[2] as f64);
    let scale = (max_size as f64 / h.max(w)).min(1.0);
    let side = |v: f64| ((v * scale / STRIDE).round_ties_even() * STRIDE).max(STRIDE) as i64;
    let rgb = images.narrow(3, 0, 3).permute([0, 3, 1, 2]);
    Ok(common_upscale(&rgb, side(w), side(h), "area", "disabled")?.permute([0, 2, 3, 1]))
}

fn bernini_conditioning(i: &Inputs, _: &ExecContext) -> NodeResult {
    let vae = i.object::<Arc<Vae>>("vae")?;
    let (width, height, length) = (i.int("width")?, i.int("height")?, i.int("length")?);
    let batch = i.int("batch_size")?;
    let max_size = i.int("ref_max_size").unwrap_or(848);
    let cpu = (Kind::Float, tch::Device::Cpu);
    let latent = Tensor::zeros(
        [batch, 16, (length - 1) / 4 + 1, height / 8, width / 8],
        cpu,
    );

    // Streams in order: the source video, the reference video, then each reference image.
    let mut streams = Vec::new();
    if let Some(video) = i.opt_tensor("source_video") {
        let n = video.size()[0].min(length);
        let frames = video.narrow(0, 0, n).narrow(3, 0, 3).permute([0, 3, 1, 2]);
        let frames = common_upscale(&frames, width, height, "area", "center")?;
        streams.push(vae.encode(&frames.permute([0, 2, 3, 1]))?);
    }
    if let Some(video) = i.opt_tensor("reference_video") {
        let n = video.size()[0].min(length);
        streams.push(vae.encode(&resize_long_edge(&video.narrow(0, 0, n), max_size)?)?);
    }
    for n in 0..REFERENCE_IMAGES {
        let Some(images) = i.opt_tensor(&format!("reference_images.reference_image_{n}")) else {
            continue;
        };
        for k in 0..images.size()[0] {
            let image = resize_long_edge(&images.narrow(0, k, 1), max_size)?;
            streams.push(vae.encode(&image)?);
        }
    }
    let keys: Vec<String> = (0..streams.len()).map(context_latent_key).collect();
    let extras: Vec<(&str, &Tensor)> = keys.iter().map(String::as_str).zip(&streams).collect();
    let positive = with_extras(i.object::<Conditioning>("positive")?, &extras);
    let negative = with_extras(i.object::<Conditioning>("negative")?, &extras);
    super::wan::conditioned(positive, negative, latent)
}

pub fn register(r: &mut Registry) {
    let size = |name: &str, default: i64| {
        InputDef::int(name)
            .default(default)
            .min(16)
            .max(8192)
            .step(16)
    };
    let image =
        |name: &str, tooltip: &str| InputDef::new(name, "IMAGE").optional().tooltip(tooltip);
    r.add(
        NodeDef::new(
            "BerniniConditioning",
            Style::V3,
            Arc::new(bernini_conditioning),
        )
        .display("Bernini Conditioning")
        .category("model/conditioning/bernini")
        .module("comfy_extras.nodes_bernini")
        .description(
            "Conditioning node for Bernini in-context video/image conditioning. It can be \
                 used for the following tasks: t2v (text-to-video), v2v (video-to-video), rv2v \
                 (reference-guided video editing), r2v (reference-to-video), ads2v (insert \
                 image/video into video).Reference images injected as in-context tokens (r2v, \
                 rv2v) are encoded independently at their own native aspect ratio (long edge \
                 capped at ref_max_size)",
        )
        .input(InputDef::new("positive", "CONDITIONING"))
        .input(InputDef::new("negative", "CONDITIONING"))
        .input(InputDef::new("vae", "VAE"))
        .input(size("width", 832))
        .input(size("height", 480))
        .input(InputDef::int("length").default(81).min(1).max(8192).step(4))
        .input(InputDef::int("batch_size").default(1).min(1).max(4096))
        .input(image(
            "source_video",
            "Source video to edit or restyle (v2v, rv2v). Resized to width/height and \
                 trimmed to length.",
        ))
        .input(image(
            "reference_video",
            "Video to insert into the source video (ads2v).",
        ))
        .input(
            InputDef::autogrow_prefix(
                "reference_images",
                InputDef::new("reference_image", "IMAGE")
                    .tooltip("Reference image injected as an in-context token (r2v, rv2v)."),
                "reference_image_",
                0,
                REFERENCE_IMAGES,
            )
            .optional(),
        )
        .input(
            InputDef::int("ref_max_size")
                .optional()
                .tooltip(
                    "Max size for the long edge of reference_video and reference_images. \
                         Resized with preserved aspect ratio and snapped to 16px.",
                )
                .default(848)
                .min(16)
                .max(8192)
                .step(16),
        )
        .named_output("CONDITIONING", "positive")
        .named_output("CONDITIONING", "negative")
        .named_output("LATENT", "latent"),
    );
}
