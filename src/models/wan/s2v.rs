//! What Wan 2.2 S2V (`WanModel_S2V` in `comfy/ldm/wan/model.py`) adds to the DiT: the wav2vec2
//! layers weighed and run through a causal 1-D convolution stack into 4 audio tokens (plus a
//! learned padding token) and one AdaIN vector per latent frame; audio cross-attention injected
//! after chosen blocks into each frame's tokens; a control-video embedding added to the patches;
//! a reference image and FramePack-style motion tokens (the last 19 latent frames at three
//! resolutions) appended to the sequence, each marked by a learned embedding and rotated at its
//! own positions.

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use super::dit::{layer_norm, rope_positions, AttentionLayers, PATCH};
use crate::models::weights::Weights;
use crate::runtime::linear::Linear;

/// ComfyUI's `audio_inject_layers`: the blocks after which the injectors run, in order.
const INJECT_AFTER: [i64; 12] = [0, 4, 8, 12, 16, 20, 24, 27, 30, 33, 36, 39];
/// Audio tokens per latent frame (`num_audio_token`).
const AUDIO_TOKENS: i64 = 4;
/// FramePack's buckets of motion frames, farthest first after the split: 16, 2, 1.
const MOTION_FRAMES: i64 = 19;

/// What an S2V forward takes besides the latent and text (each in the model's dtype, batched).
#[derive(Default)]
pub struct SoundInputs<'a> {
    /// wav2vec2 features per video frame, `[b, layers, 1024, frames]`.
    pub audio: Option<&'a Tensor>,
    /// The reference image's latent, `[b, 16, 1, h, w]`.
    pub reference: Option<&'a Tensor>,
    /// The previous clip's last latent frames, `[b, 16, ≤19, h, w]`.
    pub motion: Option<&'a Tensor>,
    /// The control video's latent, `[b, 16, t, h, w]`.
    pub control: Option<&'a Tensor>,
}

type Conv = (Tensor, Tensor);

fn conv(w: &Weights, name: &str) -> Result<Conv> {
    Ok((
        w.tensor(&format!("{name}.weight"))?,
        w.tensor(&format!("{name}.bias"))?,
    ))
}

/// `CausalConv1d`: replicate-padded on the left by `kernel − 1`.
fn causal_conv(x: &Tensor, (weight, bias): &Conv, stride: i64) -> Tensor {
    let kernel = weight.size()[2];
    x.replication_pad1d([kernel - 1, 0])
        .conv1d(weight, Some(bias), [stride], [0], [1], 1)
}

/// LayerNorm without affine parameters and SiLU over the last axis.
fn norm_silu(x: &Tensor) -> Tensor {
    layer_norm(x, None, 1e-6).silu()
}

/// `CausalAudioEncoder` with its `MotionEncoder_tc`.
struct AudioEncoder {
    /// The learned weight of each wav2vec2 layer, `[1, layers, 1, 1]`.
    layer_weights: Tensor,
    local_in: Conv,
    global_in: Conv,
    down1: Conv,
    down2: Conv,
    global_out: Linear,
    padding_token: Tensor,
}

impl AudioEncoder {
    fn load(w: &Weights, dim: i64) -> Result<Self> {
        let p = "casual_audio_encoder";
        Ok(Self {
            layer_weights: w.tensor(&format!("{p}.weights"))?,
            local_in: conv(w, &format!("{p}.encoder.conv1_local.conv"))?,
            global_in: conv(w, &format!("{p}.encoder.conv1_global.conv"))?,
            down1: conv(w, &format!("{p}.encoder.conv2.conv"))?,
            down2: conv(w, &format!("{p}.encoder.conv3.conv"))?,
            global_out: w.linear(&format!("{p}.encoder.final_linear"), (dim, dim))?,
            padding_token: w.tensor(&format!("{p}.encoder.padding_tokens"))?,
        })
    }

    /// The two stride-2 convolutions both paths share, each followed by norm and SiLU:
    /// `[n, c, t]` → `[n, t/4, dim]`.
    fn downsample(&self, x: &Tensor) -> Tensor {
        let x = norm_silu(&causal_conv(x, &self.down1, 2).transpose(1, 2));
        norm_silu(&causal_conv(&x.transpose(1, 2), &self.down2, 2).transpose(1, 2))
    }

    /// Features `[b, layers, c, frames]` → (AdaIN vectors `[b, frames/4, 1, dim]`, audio tokens
    /// `[b, frames/4, 5, dim]`).
    fn forward(&self, features: &Tensor) -> Result<(Tensor, Tensor)> {
        let kind = features.kind();
        let weights = self.layer_weights.to_kind(kind).silu();
        let total = weights.sum_dim_intlist([1i64].as_slice(), true, kind);
        let x = (features * &weights / total).sum_dim_intlist([1i64].as_slice(), false, kind);
        let b = x.size()[0];
        let local = causal_conv(&x, &self.local_in, 1);
        let (channels, frames) = (local.size()[1] / AUDIO_TOKENS, local.size()[2]);
        let local = local
            .view([b, AUDIO_TOKENS, channels, frames])
            .permute([0, 1, 3, 2])
            .reshape([b * AUDIO_TOKENS, frames, channels]);
        let local = self.downsample(&norm_silu(&local).transpose(1, 2));
        let (steps, dim) = (local.size()[1], local.size()[2]);
        let local = local
            .view([b, AUDIO_TOKENS, steps, dim])
            .permute([0, 2, 1, 3]);
        let padding = self
            .padding_token
            .to_kind(kind)
            .expand([b, steps, 1, dim], false);
        let local = Tensor::cat(&[local, padding], 2);
        let global = norm_silu(&causal_conv(&x, &self.global_in, 1).transpose(1, 2));
        let global = self
            .global_out
            .forward(&self.downsample(&global.transpose(1, 2)))?;
        Ok((global.unsqueeze(2), local))
    }
}

/// One audio injector: AdaIN from the frame's global audio vector, then cross-attention from
/// the frame's tokens to its 5 audio tokens.
struct Injector {
    after_block: i64,
    attention: AttentionLayers,
    adain: Linear,
}

/// `FramePackMotioner`: the motion latents at three resolutions.
struct FramePacker {
    near: Conv,
    mid: Conv,
    far: Conv,
}

impl FramePacker {
    /// Motion latents `[b, 16, f, h, w]` → tokens `[b, n, dim]` and their rotations, given the
    /// latent grid's `(h, w)` in patches.
    fn forward(&self, motion: &Tensor, head_dim: i64) -> Result<(Tensor, Tensor)> {
        let (b, c, f, h, w) = motion.size5()?;
        let kind = motion.kind();
        let padded = Tensor::zeros([b, c, MOTION_FRAMES, h, w], (kind, motion.device()));
        let kept = f.min(MOTION_FRAMES);
        padded
            .narrow(2, MOTION_FRAMES - kept, kept)
            .copy_(&motion.narrow(2, f - kept, kept));
        let (h_len, w_len) = ((h + 1) / 2, (w + 1) / 2);
        let ids = |start: f64, len: i64, steps: i64| {
            Tensor::linspace(start, start + (len - 1) as f64, steps, (kind, Device::Cpu))
        };
        let mut tokens = Vec::new();
        let mut rotations = Vec::new();
        // (frames from the end, convolution, time start, time length)
        let parts = [
            (1, &self.near, -1.0, 1),
            (2, &self.mid, -3.0, 1),
            (16, &self.far, -19.0, 4),
        ];
        let mut end = MOTION_FRAMES;
        for (frames, (weight, bias), t_start, t_len) in parts {
            let clip = padded.narrow(2, end - frames, frames);
            end -= frames;
            let kernel = weight.size()[2..].to_vec();
            let out = clip.conv3d(
                weight,
                Some(bias),
                kernel.as_slice(),
                [0, 0, 0],
                [1, 1, 1],
                1,
            );
            let (steps_t, steps_h, steps_w) = (out.size()[2], out.size()[3], out.size()[4]);
            tokens.push(out.flatten(2, -1).transpose(1, 2));
            let positions = [
                &ids(t_start, t_len, steps_t),
                &ids(0.0, h_len, steps_h),
                &ids(0.0, w_len, steps_w),
            ];
            rotations.push(rope_positions(positions, head_dim));
        }
        Ok((Tensor::cat(&tokens, 1), Tensor::cat(&rotations, 1)))
    }
}

/// The S2V parts of a Wan model.
pub(super) struct Sound {
    /// `trainable_cond_mask`: added to the video, reference and motion tokens.
    cond_mask: Tensor,
    /// `cond_encoder`: the control video's patch embedding.
    control: Conv,
    audio: AudioEncoder,
    injectors: Vec<Injector>,
    packer: FramePacker,
}

/// The audio a forward injects: per-frame AdaIN vectors and tokens, and the video's tokens.
pub(super) struct AudioTokens {
    global: Tensor,
    local: Tensor,
    video_tokens: i64,
}

impl Sound {
    pub(super) fn load(w: &Weights, dim: i64) -> Result<Self> {
        let mut injectors = Vec::new();
        while w.has(&format!(
            "audio_injector.injector.{}.q.weight",
            injectors.len()
        )) {
            let i = injectors.len();
            let Some(&after_block) = INJECT_AFTER.get(i) else {
                bail!("more audio injectors than ComfyUI's {}", INJECT_AFTER.len());
            };
            injectors.push(Injector {
                after_block,
                attention: AttentionLayers::load(w, &format!("audio_injector.injector.{i}"), dim)?,
                adain: w.linear(
                    &format!("audio_injector.injector_adain_layers.{i}.linear"),
                    (2 * dim, dim),
                )?,
            });
        }
        Ok(Self {
            cond_mask: w.tensor("trainable_cond_mask.weight")?,
            control: conv(w, "cond_encoder")?,
            audio: AudioEncoder::load(w, dim)?,
            injectors,
            packer: FramePacker {
                near: conv(w, "frame_packer.proj")?,
                mid: conv(w, "frame_packer.proj_2x")?,
                far: conv(w, "frame_packer.proj_4x")?,
            },
        })
    }

    /// The learned marker of the video (0), reference (1) or motion (2) tokens.
    pub(super) fn marker(&self, which: i64, kind: Kind) -> Tensor {
        self.cond_mask.get(which).to_kind(kind)
    }

    /// `cond_encoder` of the control latent `[b, 16, t, h, w]`, as `[b, tokens, dim]`.
    pub(super) fn control_tokens(&self, control: &Tensor) -> Tensor {
        let (weight, bias) = &self.control;
        control
            .conv3d(weight, Some(bias), PATCH, [0, 0, 0], [1, 1, 1], 1)
            .flatten(2, -1)
            .transpose(1, 2)
    }

    /// The motion tokens and their rotations.
    pub(super) fn motion_tokens(&self, motion: &Tensor, head_dim: i64) -> Result<(Tensor, Tensor)> {
        let (tokens, rotations) = self.packer.forward(motion, head_dim)?;
        Ok((tokens + self.marker(2, motion.kind()), rotations))
    }

    /// The audio of the latent's `frames` (4 feature frames each), for a video of
    /// `video_tokens` tokens.
    pub(super) fn audio_tokens(
        &self,
        features: &Tensor,
        frames: i64,
        video_tokens: i64,
    ) -> Result<AudioTokens> {
        let available = features.size()[3];
        let features = features.narrow(3, 0, (frames * 4).min(available));
        let (global, local) = self.audio.forward(&features)?;
        Ok(AudioTokens {
            global,
            local,
            video_tokens,
        })
    }

    /// Whether an injector runs after block `block`.
    pub(super) fn injects_after(&self, block: i64) -> bool {
        self.injectors.iter().any(|i| i.after_block == block)
    }

    /// `AudioInjector_WAN` after block `block`: each frame's video tokens attend to that frame's
    /// audio tokens, normalized and modulated by its AdaIN vector; the result is added.
    pub(super) fn inject(
        &self,
        block: i64,
        x: Tensor,
        audio: &AudioTokens,
        heads: i64,
    ) -> Result<Tensor> {
        let Some(injector) = self.injectors.iter().find(|i| i.after_block == block) else {
            return Ok(x);
        };
        let (b, dim) = (x.size()[0], x.size()[2]);
        let frames = audio.local.size()[1];
        let video = x.narrow(1, 0, audio.video_tokens);
        let per_frame = video.reshape([b * frames, -1, dim]);
        let vector = audio.global.reshape([b * frames, dim]);
        let shift_scale = injector.adain.forward(&vector.silu())?;
        let (shift, scale) = (
            shift_scale.narrow(1, 0, dim),
            shift_scale.narrow(1, dim, dim),
        );
        let normed =
            layer_norm(&per_frame, None, 1e-5) * (scale.unsqueeze(1) + 1.0) + shift.unsqueeze(1);
        let context = audio.local.reshape([b * frames, -1, dim]);
        let residual = injector.attention.cross(&normed, &context, heads)?;
        let added = video + residual.reshape([b, audio.video_tokens, dim]);
        let rest = x.narrow(1, audio.video_tokens, x.size()[1] - audio.video_tokens);
        Ok(Tensor::cat(&[added, rest], 1))
    }
}
