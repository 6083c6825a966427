//! Wan 2.2 Animate (ComfyUI's `AnimateWanModel`, `comfy/ldm/wan/model_animate.py`): a Wan 2.1
//! I2V DiT with the pose video's latents added to the video's patches (from frame 1 on, behind
//! the reference slot) and the driving face fed to every fifth block. Each face frame goes
//! through a StyleGAN-style motion encoder (512×512 pixels to a 512-wide motion vector), the
//! vectors through a causal temporal encoder (four tokens per latent frame plus a learned
//! padding token), and a face block lets each latent frame's tokens attend to their frame's
//! five tokens.

use anyhow::{bail, Context, Result};
use tch::{Kind, Tensor};

use super::dit::{layer_norm, rms_norm, EPS};
use crate::models::layers::leaky_relu;
use crate::models::weights::Weights;
use crate::runtime::attention::attention;
use crate::runtime::linear::Linear;

/// The motion encoder's input size: ComfyUI's WanAnimateToVideo scales faces to 512×512.
pub const FACE_SIZE: i64 = 512;
/// Faces per motion-encoder call, as ComfyUI batches them.
const FACE_BATCH: i64 = 8;
/// The face encoder's tokens per frame (a learned padding token follows them).
const FACE_HEADS: i64 = 4;
/// A face block follows every this many DiT blocks.
const FACE_BLOCK_STRIDE: usize = 5;

/// What an Animate forward takes besides the video, in the model's batch.
#[derive(Default, Clone, Copy)]
pub struct AnimateInputs<'a> {
    /// The pose video's latents `[b, 16, frames, h, w]`, normalized; frame j is added to video
    /// frame j + 1.
    pub pose: Option<&'a Tensor>,
    /// The driving face's pixels `[b, 3, frames, 512, 512]` in −1…1.
    pub faces: Option<&'a Tensor>,
}

/// Where a convolution samples: every pixel with its kernel's half as padding, every pixel
/// without padding, or every second pixel after the blur (padded by the given amount).
#[derive(Clone, Copy)]
enum Sampling {
    Same,
    Valid,
    Down { blur_pad: i64 },
}

/// StyleGAN's equalized-learning-rate convolution: the weight scaled by 1/√fan-in at run time.
struct EqualConv {
    weight: Tensor,
    /// A FusedLeakyReLU's bias (the layers with an activation), `[1, out, 1, 1]`.
    activation_bias: Option<Tensor>,
    stride: i64,
    padding: i64,
    /// The [1, 3, 3, 1] blur in front of a downsampling convolution (its depthwise kernel,
    /// made once on the weight's device) and its padding.
    blur: Option<(Tensor, i64)>,
}

impl EqualConv {
    fn load(w: &Weights, conv: &str, bias: Option<&str>, sampling: Sampling) -> Result<Self> {
        let weight = w.tensor(&format!("{conv}.weight"))?;
        let (fan_in, kernel) = {
            let s = weight.size();
            (s[1] * s[2] * s[3], s[2])
        };
        let (stride, padding, blur) = match sampling {
            Sampling::Same => (1, kernel / 2, None),
            Sampling::Valid => (1, 0, None),
            Sampling::Down { blur_pad } => (2, 0, Some((blur_kernel(&weight), blur_pad))),
        };
        Ok(Self {
            weight: weight / (fan_in as f64).sqrt(),
            activation_bias: bias.map(|b| w.tensor(&format!("{b}.bias"))).transpose()?,
            stride,
            padding,
            blur,
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let x = match &self.blur {
            Some((kernel, pad)) => {
                let channels = kernel.size()[0];
                x.conv2d(
                    kernel,
                    None::<Tensor>,
                    [1, 1],
                    [*pad, *pad],
                    [1, 1],
                    channels,
                )
            }
            None => x.shallow_clone(),
        };
        let (s, p) = (self.stride, self.padding);
        let y = x.conv2d(&self.weight, None::<Tensor>, [s, s], [p, p], [1, 1], 1);
        match &self.activation_bias {
            Some(bias) => fused_leaky_relu(&(y + bias)),
            None => y,
        }
    }
}

/// `leaky_relu(x, 0.2) · √2` (StyleGAN's FusedLeakyReLU after its bias).
fn fused_leaky_relu(x: &Tensor) -> Tensor {
    leaky_relu(x, 0.2) * std::f64::consts::SQRT_2
}

/// upfirdn2d's kernel for the normalized outer product of [1, 3, 3, 1] without resampling, as a
/// depthwise convolution over the input channels of `weight` (the kernel is symmetric, so its
/// flip is itself): `[channels, 1, 4, 4]` in the weight's dtype and on its device.
fn blur_kernel(weight: &Tensor) -> Tensor {
    let channels = weight.size()[1];
    let taps = Tensor::from_slice(&[1.0f32, 3.0, 3.0, 1.0]);
    let kernel = (taps.unsqueeze(1) * taps.unsqueeze(0)) / 64.0;
    kernel
        .view([1, 1, 4, 4])
        .expand([channels, 1, 4, 4], false)
        .to_kind(weight.kind())
        .to_device(weight.device())
}

/// A residual stage: a 3×3 convolution, a blurred 3×3 downsampling one and a blurred 1×1 skip.
struct ResBlock {
    conv1: EqualConv,
    conv2: EqualConv,
    skip: EqualConv,
}

impl ResBlock {
    fn forward(&self, x: &Tensor) -> Tensor {
        let out = self.conv2.forward(&self.conv1.forward(x));
        (out + self.skip.forward(x)) / std::f64::consts::SQRT_2
    }
}

/// The motion encoder (`motion_encoder`, LIA's appearance encoder and linear motion
/// decomposition): a face `[n, 3, 512, 512]` to its motion vector `[n, 512]`.
struct MotionEncoder {
    stem: EqualConv,
    stages: Vec<ResBlock>,
    /// The 4×4 convolution that leaves one pixel.
    out: EqualConv,
    /// The equalized Linears (weight pre-scaled, bias).
    fc: Vec<(Tensor, Tensor)>,
    /// The orthonormal motion basis `[motion_dim, 512]` (Q of the direction weight, transposed).
    basis: Tensor,
}

impl MotionEncoder {
    fn load(w: &Weights) -> Result<Self> {
        let convs = "motion_encoder.enc.net_app.convs";
        let stages = (1..)
            .take_while(|i| w.has(&format!("{convs}.{i}.conv1.0.weight")))
            .map(|i| {
                let c = format!("{convs}.{i}");
                let down = |blur_pad| Sampling::Down { blur_pad };
                Ok(ResBlock {
                    conv1: EqualConv::load(
                        w,
                        &format!("{c}.conv1.0"),
                        Some(&format!("{c}.conv1.1")),
                        Sampling::Same,
                    )?,
                    conv2: EqualConv::load(
                        w,
                        &format!("{c}.conv2.1"),
                        Some(&format!("{c}.conv2.2")),
                        down(2),
                    )?,
                    skip: EqualConv::load(w, &format!("{c}.skip.1"), None, down(1))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let out_conv = format!("{convs}.{}", stages.len() + 1);
        let out = EqualConv::load(w, &out_conv, None, Sampling::Valid)?;
        let fc = (0..)
            .take_while(|i| w.has(&format!("motion_encoder.enc.fc.{i}.weight")))
            .map(|i| {
                let name = format!("motion_encoder.enc.fc.{i}");
                let weight = w.tensor(&format!("{name}.weight"))?;
                let fan_in = weight.size()[1];
                Ok((
                    weight / (fan_in as f64).sqrt(),
                    w.tensor(&format!("{name}.bias"))?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        // ComfyUI's `Direction`: QR of the weight plus 1e-8·I, in float32.
        let direction = w.tensor_as("motion_encoder.dec.direction.weight", Kind::Float)?;
        let (rows, columns) = (direction.size()[0], direction.size()[1]);
        let identity = Tensor::eye_m(rows, columns, (Kind::Float, direction.device()));
        let (q, _) = Tensor::linalg_qr(&(direction + identity * 1e-8), "reduced");
        Ok(Self {
            stem: EqualConv::load(
                w,
                &format!("{convs}.0.0"),
                Some(&format!("{convs}.0.1")),
                Sampling::Same,
            )?,
            stages,
            out,
            fc,
            basis: q.transpose(0, 1).to_kind(w.dtype),
        })
    }

    fn forward(&self, faces: &Tensor) -> Tensor {
        let mut h = self.stem.forward(faces);
        for stage in &self.stages {
            h = stage.forward(&h);
        }
        let mut feature = self.out.forward(&h).flatten(1, -1);
        for (weight, bias) in &self.fc {
            feature = feature.linear(weight, Some(bias));
        }
        feature.matmul(&self.basis)
    }
}

/// A temporal convolution padded on the past side with copies of the first frame.
struct CausalConv1d {
    weight: Tensor,
    bias: Tensor,
    stride: i64,
}

impl CausalConv1d {
    fn load(w: &Weights, name: &str, stride: i64) -> Result<Self> {
        Ok(Self {
            weight: w.tensor(&format!("{name}.conv.weight"))?,
            bias: w.tensor(&format!("{name}.conv.bias"))?,
            stride,
        })
    }

    /// `[b, c, t]` → `[b, out, t']`.
    fn forward(&self, x: &Tensor) -> Tensor {
        let kernel = self.weight.size()[2];
        let x = x.pad([kernel - 1, 0], "replicate", None);
        x.conv1d(&self.weight, Some(&self.bias), [self.stride], [0], [1], 1)
    }
}

/// The face encoder (`face_encoder`): motion vectors `[b, t, 512]` to `[b, t', 5, dim]`, four
/// tokens per (temporally 4× downsampled) frame and the learned padding token.
struct FaceEncoder {
    convs: [CausalConv1d; 3],
    out: Linear,
    padding: Tensor,
}

impl FaceEncoder {
    fn load(w: &Weights, dim: i64) -> Result<Self> {
        let convs = [
            CausalConv1d::load(w, "face_encoder.conv1_local", 1)?,
            CausalConv1d::load(w, "face_encoder.conv2", 2)?,
            CausalConv1d::load(w, "face_encoder.conv3", 2)?,
        ];
        let hidden = convs[1].weight.size()[0];
        Ok(Self {
            convs,
            out: w.linear("face_encoder.out_proj", (dim, hidden))?,
            padding: w.tensor("face_encoder.padding_tokens")?,
        })
    }

    fn forward(&self, motion: &Tensor) -> Result<Tensor> {
        let b = motion.size()[0];
        let norm_silu = |x: &Tensor| layer_norm(x, None, EPS).silu();
        // [b, c, t] → [b·heads, t, hidden]
        let x = self.convs[0].forward(&motion.transpose(1, 2));
        let (t, hidden) = (x.size()[2], x.size()[1] / FACE_HEADS);
        let mut x = norm_silu(
            &x.view([b, FACE_HEADS, hidden, t]).transpose(2, 3).reshape([
                b * FACE_HEADS,
                t,
                hidden,
            ]),
        );
        for conv in &self.convs[1..] {
            x = norm_silu(&conv.forward(&x.transpose(1, 2)).transpose(1, 2));
        }
        let x = self.out.forward(&x)?;
        let (frames, dim) = (x.size()[1], x.size()[2]);
        let x = x.view([b, FACE_HEADS, frames, dim]).transpose(1, 2);
        let padding = self
            .padding
            .to_kind(x.kind())
            .expand([b, frames, 1, dim], false);
        Ok(Tensor::cat(&[x, padding], 2))
    }
}

/// A face block (`face_adapter.fuser_blocks.N`): each latent frame's tokens attend to that
/// frame's face tokens.
struct FaceBlock {
    kv: Linear,
    q: Linear,
    out: Linear,
    q_norm: Tensor,
    k_norm: Tensor,
}

impl FaceBlock {
    fn load(w: &Weights, n: usize, dim: i64) -> Result<Self> {
        let name = |part: &str| format!("face_adapter.fuser_blocks.{n}.{part}");
        Ok(Self {
            kv: w.linear(&name("linear1_kv"), (2 * dim, dim))?,
            q: w.linear(&name("linear1_q"), (dim, dim))?,
            out: w.linear(&name("linear2"), (dim, dim))?,
            q_norm: w.tensor(&name("q_norm.weight"))?,
            k_norm: w.tensor(&name("k_norm.weight"))?,
        })
    }

    /// What the block adds to the stream `x` `[b, frames·hw, dim]` for the face tokens
    /// `faces` `[b, frames, n, dim]`.
    fn forward(&self, x: &Tensor, faces: &Tensor, heads: i64) -> Result<Tensor> {
        let (b, frames, n, dim) = faces.size4()?;
        let head_dim = dim / heads;
        let tokens = x.size()[1];
        if tokens % frames != 0 {
            bail!("the face tokens cover {frames} frames, which do not divide the video's {tokens} tokens");
        }
        let kv = self.kv.forward(&layer_norm(faces, None, EPS))?;
        let per_head = |t: Tensor, norm: Option<&Tensor>| {
            let t = t.reshape([b * frames, n, heads, head_dim]);
            let t = match norm {
                Some(weight) => rms_norm(&t, weight),
                None => t,
            };
            t.reshape([b * frames, n, dim])
        };
        let k = per_head(kv.narrow(3, 0, dim), Some(&self.k_norm));
        let v = per_head(kv.narrow(3, dim, dim), None);
        let q = self.q.forward(&layer_norm(x, None, EPS))?;
        let q = rms_norm(&q.view([b, tokens, heads, head_dim]), &self.q_norm).view([
            b * frames,
            tokens / frames,
            dim,
        ]);
        let attended = attention(&q, &k, &v, heads, None).view([b, tokens, dim]);
        self.out.forward(&attended)
    }
}

/// Animate's parts beside the Wan I2V DiT.
pub struct AnimateParts {
    /// `pose_patch_embedding`, a Conv3d whose stride is its kernel (float32).
    pub pose_patch: (Tensor, Tensor),
    motion: MotionEncoder,
    face_encoder: FaceEncoder,
    face_blocks: Vec<FaceBlock>,
}

impl AnimateParts {
    pub fn load(w: &Weights, dim: i64) -> Result<Self> {
        let face_blocks = (0..)
            .take_while(|n| w.has(&format!("face_adapter.fuser_blocks.{n}.linear1_q.weight")))
            .map(|n| FaceBlock::load(w, n, dim))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            pose_patch: (
                w.tensor_as("pose_patch_embedding.weight", Kind::Float)?,
                w.tensor_as("pose_patch_embedding.bias", Kind::Float)?,
            ),
            motion: MotionEncoder::load(w).context("Wan Animate's motion encoder")?,
            face_encoder: FaceEncoder::load(w, dim).context("Wan Animate's face encoder")?,
            face_blocks,
        })
    }

    /// The face tokens for a video of `frames` latent frames: the faces' motion vectors
    /// through the face encoder, behind an all-zero reference slot, cut or zero-padded to the
    /// video's frames. `[b, frames, 5, dim]`.
    pub fn face_tokens(&self, faces: &Tensor, frames: i64, dtype: Kind) -> Result<Tensor> {
        let (b, c, t, h, w) = faces.size5()?;
        if (c, h, w) != (3, FACE_SIZE, FACE_SIZE) {
            bail!(
                "Wan Animate's face video is {w}×{h} with {c} channels; the motion encoder takes {FACE_SIZE}×{FACE_SIZE} RGB"
            );
        }
        let flat = faces
            .to_kind(dtype)
            .permute([0, 2, 1, 3, 4])
            .reshape([b * t, c, h, w]);
        let vectors: Vec<Tensor> = flat
            .split(FACE_BATCH, 0)
            .iter()
            .map(|chunk| self.motion.forward(chunk))
            .collect();
        let motion = Tensor::cat(&vectors, 0).view([b, t, -1]);
        let tokens = self.face_encoder.forward(&motion)?;
        let tokens = Tensor::cat(&[tokens.narrow(1, 0, 1).zeros_like(), tokens], 1);
        let have = tokens.size()[1];
        Ok(if have >= frames {
            tokens.narrow(1, 0, frames)
        } else {
            tokens.constant_pad_nd([0, 0, 0, 0, 0, frames - have])
        })
    }

    /// The face block after DiT block `block`, if one follows it.
    pub fn face_after(&self, block: usize) -> Option<usize> {
        block
            .is_multiple_of(FACE_BLOCK_STRIDE)
            .then_some(block / FACE_BLOCK_STRIDE)
            .filter(|&n| n < self.face_blocks.len())
    }

    /// The stream `x` with face block `n`'s output added.
    pub fn add_face(&self, n: usize, x: &Tensor, faces: &Tensor, heads: i64) -> Result<Tensor> {
        Ok(x + self.face_blocks[n].forward(x, faces, heads)?)
    }

    /// The pose latents' tokens added to the video's from frame 1 on (`[b, frames·hw, dim]`,
    /// `pose_tokens` of the pose latents' grid, which covers at most the frames after 0).
    pub fn add_pose(tokens: &Tensor, pose_tokens: &Tensor, hw: i64) -> Result<Tensor> {
        let (video, pose) = (tokens.size()[1], pose_tokens.size()[1]);
        if pose % hw != 0 || pose_tokens.size()[0] != tokens.size()[0] {
            bail!(
                "the pose latents' patches ({pose} tokens) do not match the video's frames of {hw}"
            );
        }
        let n = pose.min(video - hw);
        let after = tokens.narrow(1, hw, n) + pose_tokens.narrow(1, 0, n);
        let rest = video - hw - n;
        Ok(Tensor::cat(
            &[
                tokens.narrow(1, 0, hw),
                after,
                tokens.narrow(1, hw + n, rest),
            ],
            1,
        ))
    }
}
