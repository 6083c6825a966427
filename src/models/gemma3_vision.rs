//! Gemma 3's image input as ComfyUI runs it (`Gemma3_12B.preprocess_embed`,
//! `Gemma3MultiModalProjector`): the picture scaled by area to about 896² pixels, then CLIP's
//! preprocessing to the tower's square size with mean and std 0.5; a SigLIP tower
//! (`clip_vision::ClipVisionModel` without a class token, GELU(tanh)); its patches
//! average-pooled to 16×16, RMS-normed (`1 + weight`) and projected into Gemma's width: 256 soft
//! tokens per image.

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use super::clip_vision::{preprocess, Activation, ClipVisionModel};
use super::weights::Weights;
use crate::upscale::{common_upscale, py_round};

/// `mm_tokens_per_image`: a 16×16 grid.
const TOKENS_PER_SIDE: i64 = 16;
/// The tokenizer scales a picture to about this many pixels first.
const PIXELS: f64 = 896.0 * 896.0;
const RMS_EPS: f64 = 1e-6;

pub struct Gemma3Vision {
    tower: ClipVisionModel,
    /// `1 + mm_soft_emb_norm.weight`.
    soft_norm: Tensor,
    /// `mm_input_projection_weight` `[vision width, text width]`.
    projection: Tensor,
}

impl Gemma3Vision {
    /// `vision_model.` and `multi_modal_projector.` under `w`'s prefix.
    pub fn load(w: &Weights) -> Result<Self> {
        if !w.has("vision_model.embeddings.patch_embedding.weight") {
            bail!(
                "this Gemma 3 file has no vision tower (vision_model.*), so TextGenerate cannot \
                 take an image with it"
            );
        }
        let tower = ClipVisionModel::load(w, Activation::GeluTanh)?;
        let per_side = tower.patches_per_side();
        if per_side % TOKENS_PER_SIDE != 0 {
            bail!("a vision tower of {per_side}² patches does not pool to 16×16 tokens");
        }
        Ok(Self {
            tower,
            soft_norm: w.tensor("multi_modal_projector.mm_soft_emb_norm.weight")? + 1.0,
            projection: w.tensor("multi_modal_projector.mm_input_projection_weight")?,
        })
    }

    /// The soft tokens `[B·256, text width]` (float32) of images `[B, H, W, C]` in 0..1.
    pub fn embed(&self, images: &Tensor) -> Result<Tensor> {
        let device = self.soft_norm.device();
        let samples = images
            .to_device(device)
            .to_kind(Kind::Float)
            .permute([0, 3, 1, 2]);
        let (h, w) = (samples.size()[2], samples.size()[3]);
        let scale = (PIXELS / (w * h) as f64).sqrt();
        let (width, height) = (py_round(w as f64 * scale), py_round(h as f64 * scale));
        let scaled = common_upscale(&samples, width, height, "area", "disabled")?;
        // `preprocess` keeps the first three channels, as the tokenizer's slice does.
        let pixels = preprocess(
            &scaled.permute([0, 2, 3, 1]),
            self.tower.image_size,
            true,
            self.tower.mean_std(),
        );
        let (states, _, _) = self.tower.forward(&pixels)?;
        Ok(self.project(&states))
    }

    /// `Gemma3MultiModalProjector`: patches average-pooled to 16×16, RMS-normed, projected.
    fn project(&self, states: &Tensor) -> Tensor {
        let (b, patches, width) = states.size3().expect("[batch, patches, width]");
        let per_side = (patches as f64).sqrt().round() as i64;
        let kernel = per_side / TOKENS_PER_SIDE;
        let grid = states
            .transpose(1, 2)
            .reshape([b, width, per_side, per_side]);
        let pooled = grid
            .avg_pool2d(
                [kernel, kernel],
                [kernel, kernel],
                [0, 0],
                false,
                true,
                None,
            )
            .flatten(2, -1)
            .transpose(1, 2);
        let normed = pooled.rms_norm(
            [width],
            Some(&self.soft_norm.to_kind(pooled.kind())),
            RMS_EPS,
        );
        let tokens = normed.matmul(&self.projection.to_kind(normed.kind()));
        tokens
            .reshape([-1, self.projection.size()[1]])
            .to_kind(Kind::Float)
    }
}
