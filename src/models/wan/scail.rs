//! SCAIL and SCAIL-2 (ComfyUI's `SCAILWanModel` and `SCAIL2WanModel`): a Wan 2.1 I2V DiT whose
//! reference frames go in front of the video and whose pose video (at half size, through its
//! own patch embedding) follows it, each part rotated at its own place; SCAIL-2 adds an
//! identity-mask stream (`patch_embedding_mask`) to the reference and video tokens and to the
//! pose tokens.

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use super::dit::{pad_to_patch, WanModel, PATCH};
use crate::models::rope::RopeOptions;
use crate::models::weights::Weights;

/// Which SCAIL a file is (the mask stream is SCAIL-2's).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ScailKind {
    Preview,
    Masked,
}

/// Where replacement mode puts the reference frames' rows, far from the video's.
const REPLACEMENT_REFERENCE_ROW: f64 = 120.0;
/// Where the pose's columns start, beside the video's.
const POSE_COLUMN: f64 = 120.0;

/// The pose and mask patch embeddings (float32 Conv3d weights whose stride is their kernel).
pub struct ScailParts {
    pose_patch: (Tensor, Tensor),
    mask_patch: Option<(Tensor, Tensor)>,
}

/// What a SCAIL forward takes besides the video: tensors in the model's batch, normalized.
#[derive(Default, Clone, Copy)]
pub struct ScailInputs<'a> {
    /// The reference frames `[b, in_dim, R, h, w]` (extra references first, the primary last).
    pub reference: Option<&'a Tensor>,
    /// The pose latents `[b, in_dim, F, hp, wp]`.
    pub pose: Option<&'a Tensor>,
    /// SCAIL-2: the reference frames' identity masks then zeros over the video,
    /// `[b, 28, R + T, h, w]`.
    pub reference_mask: Option<&'a Tensor>,
    /// SCAIL-2: the pose video's identity masks `[b, 28, F, hp, wp]`.
    pub pose_mask: Option<&'a Tensor>,
    /// SCAIL-2's replacement mode (`ref_mask_flag` false): the reference and the pose are set
    /// apart by rows and columns instead of by time.
    pub replacement: bool,
}

impl ScailParts {
    pub fn load(w: &Weights, kind: ScailKind) -> Result<Self> {
        let patch = |name: &str| -> Result<(Tensor, Tensor)> {
            Ok((
                w.tensor_as(&format!("{name}.weight"), Kind::Float)?,
                w.tensor_as(&format!("{name}.bias"), Kind::Float)?,
            ))
        };
        Ok(Self {
            pose_patch: patch("patch_embedding_pose")?,
            mask_patch: match kind {
                ScailKind::Masked => Some(patch("patch_embedding_mask")?),
                ScailKind::Preview => None,
            },
        })
    }

    /// The mask stream of `mask` added to `tokens` (models without one ignore it).
    fn with_mask(&self, model: &WanModel, tokens: Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        match (&self.mask_patch, mask) {
            (Some((weight, bias)), Some(mask)) => {
                let mask = pad_to_patch(&mask.to_kind(model.dtype));
                let added = model.embed_patches(&mask, (weight, bias))?;
                if added.size() != tokens.size() {
                    bail!(
                        "the SCAIL-2 mask has {:?} tokens where the stream has {:?}",
                        added.size(),
                        tokens.size()
                    );
                }
                Ok(tokens + added)
            }
            _ => Ok(tokens),
        }
    }

    /// The sequence `[reference, video, pose]` of `video` (the embedded `[b, T·h·w, dim]` tokens
    /// of a `(T, h, w)` patch grid from a `latent_h × latent_w` latent) and its rotations; also
    /// how many reference tokens lead.
    pub fn sequence(
        &self,
        model: &WanModel,
        video: Tensor,
        ((pt, ph, pw), (latent_h, latent_w)): ((i64, i64, i64), (i64, i64)),
        inputs: &ScailInputs,
        (items, rope): (i64, &RopeOptions),
    ) -> Result<(Tensor, Tensor, i64)> {
        let device = video.device();
        let first = |t: &Tensor| t.narrow(0, 0, items).to_kind(model.dtype);
        let patch = model.patch();
        let (reference_tokens, reference_frames) = match inputs.reference {
            Some(reference) => {
                let reference = pad_to_patch(&first(reference));
                let (_, _, r, h, w) = reference.size5()?;
                if (h / PATCH[1], w / PATCH[2]) != (ph, pw) {
                    bail!("the SCAIL reference latent is {h}×{w}, the video's patches {ph}×{pw}");
                }
                (Some(model.embed_patches(&reference, patch)?), r)
            }
            None => (None, 0),
        };
        let tokens = match &reference_tokens {
            Some(r) => Tensor::cat(&[r, &video], 1),
            None => video,
        };
        let reference_mask = inputs.reference_mask.map(first);
        let mut tokens = self.with_mask(model, tokens, reference_mask.as_ref())?;
        let frames = reference_frames + pt;

        let pose = match inputs.pose {
            Some(pose) => {
                let pose = pad_to_patch(&first(pose));
                let (_, _, f, hp, wp) = pose.size5()?;
                let (weight, bias) = &self.pose_patch;
                let pose_tokens = model.embed_patches(&pose, (weight, bias))?;
                let pose_mask = inputs.pose_mask.map(first);
                let pose_tokens = self.with_mask(model, pose_tokens, pose_mask.as_ref())?;
                tokens = Tensor::cat(&[tokens, pose_tokens], 1);
                Some((f, hp / PATCH[1], wp / PATCH[2], hp, wp))
            }
            None => None,
        };

        // The pose at half size is stretched over the video's extent, its positions at the
        // midpoints of the video's (as the original code places them), in columns of its own.
        let pose_options = |time: f64, (hp, wp): (i64, i64)| {
            let (h_scale, w_scale) = (latent_h as f64 / hp as f64, latent_w as f64 / wp as f64);
            RopeOptions {
                scale: [1.0, h_scale, w_scale],
                shift: [
                    time,
                    (h_scale - 1.0) / 2.0,
                    POSE_COLUMN + (w_scale - 1.0) / 2.0,
                ],
            }
        };
        let mut parts = Vec::new();
        if inputs.replacement {
            let video_start = (reference_frames - 1).max(0) as f64;
            if reference_frames > 0 {
                let options = RopeOptions {
                    scale: [1.0; 3],
                    shift: [0.0, REPLACEMENT_REFERENCE_ROW, 0.0],
                };
                parts.push(model.rotations((reference_frames, ph, pw), device, &options));
            }
            let mut main = *rope;
            main.shift[0] += video_start;
            parts.push(model.rotations((pt, ph, pw), device, &main));
            if let Some((f, gh, gw, hp, wp)) = pose {
                let options = pose_options(video_start, (hp, wp));
                parts.push(model.rotations((f, gh, gw), device, &options));
            }
        } else {
            parts.push(model.rotations((frames, ph, pw), device, rope));
            if let Some((f, gh, gw, hp, wp)) = pose {
                let options = pose_options(reference_frames as f64, (hp, wp));
                parts.push(model.rotations((f, gh, gw), device, &options));
            }
        }
        let freqs = Tensor::cat(&parts, 1);
        Ok((tokens, freqs, reference_frames * ph * pw))
    }
}
