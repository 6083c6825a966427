//! The causal building blocks of the Wan VAEs (`comfy/ldm/wan/vae.py`, `vae2_2.py`), written to
//! stream over time: a video goes through in chunks of frames and every temporal layer keeps
//! what it needs of the previous chunk in a `Stream` slot. Any chunking gives the result of
//! running the whole sequence at once (causal zero padding; the first frame skips temporal
//! down/upsampling), which is what ComfyUI's feature cache computes; chunks bound the memory.

use anyhow::{Context, Result};
use tch::Tensor;

use crate::models::weights::Weights;
use crate::runtime::fused;

/// Per-layer state carried from chunk to chunk. Layers take slots in a fixed order, so `begin`
/// rewinds the cursor before each chunk.
#[derive(Default)]
pub struct Stream {
    slots: Vec<Option<Tensor>>,
    cursor: usize,
}

impl Stream {
    pub fn begin(&mut self) {
        self.cursor = 0;
    }

    fn slot(&mut self) -> &mut Option<Tensor> {
        if self.cursor == self.slots.len() {
            self.slots.push(None);
        }
        self.cursor += 1;
        &mut self.slots[self.cursor - 1]
    }
}

/// Frames `[from, to)` of `[B, C, T, H, W]`.
fn frames(x: &Tensor, from: i64, to: i64) -> Tensor {
    x.narrow(2, from, to - from)
}

/// A 3-D convolution, causal in time: each output frame sees only its own and earlier frames
/// (zeros before the start).
pub struct CausalConv3d {
    weight: Tensor,
    bias: Option<Tensor>,
    /// Frames of history the kernel needs (`kt − 1`, or 0 for the strided time convolution).
    history: i64,
    stride_t: i64,
    pad_hw: [i64; 2],
}

impl CausalConv3d {
    /// `name.weight`/`name.bias`; spatial padding keeps the size (`k / 2`).
    pub fn load(w: &Weights, name: &str) -> Result<Self> {
        let weight = w
            .tensor(&format!("{name}.weight"))
            .with_context(|| format!("VAE layer {name}"))?;
        let size = weight.size();
        let bias_name = format!("{name}.bias");
        Ok(Self {
            history: size[2] - 1,
            stride_t: 1,
            pad_hw: [size[3] / 2, size[4] / 2],
            bias: w.optional(&bias_name)?,
            weight,
        })
    }

    /// The downsampling time convolution: stride 2, no padding (its caller keeps history).
    fn strided(mut self) -> Self {
        self.history = 0;
        self.stride_t = 2;
        self
    }

    pub fn out_channels(&self) -> i64 {
        self.weight.size()[0]
    }

    fn conv(&self, x: &Tensor) -> Tensor {
        x.conv3d(
            &self.weight,
            self.bias.as_ref(),
            [self.stride_t, 1, 1],
            [0, self.pad_hw[0], self.pad_hw[1]],
            [1, 1, 1],
            1,
        )
    }

    /// The whole sequence at once.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.conv(&pad_front(x, self.history))
    }

    /// One chunk, with the history of the chunks before it.
    pub fn forward_stream(&self, x: &Tensor, stream: &mut Stream) -> Tensor {
        let slot = stream.slot();
        self.step(x, slot)
    }

    fn step(&self, x: &Tensor, slot: &mut Option<Tensor>) -> Tensor {
        if self.history == 0 {
            return self.conv(x);
        }
        let joined = match slot.take() {
            Some(prev) => Tensor::cat(&[prev, x.shallow_clone()], 2),
            None => x.shallow_clone(),
        };
        let t = joined.size()[2];
        *slot = Some(frames(&joined, (t - self.history).max(0), t));
        let input = pad_front(&joined, self.history + x.size()[2] - t);
        self.conv(&input)
    }
}

/// `x` with `n` zero frames in front.
fn pad_front(x: &Tensor, n: i64) -> Tensor {
    if n <= 0 {
        return x.shallow_clone();
    }
    let mut shape = x.size();
    shape[2] = n;
    Tensor::cat(
        &[
            Tensor::zeros(shape.as_slice(), (x.kind(), x.device())),
            x.shallow_clone(),
        ],
        2,
    )
}

/// `F.normalize(x, dim=1) · √C · γ`: RMS over channels (`fused::channel_rms_norm`).
pub struct RmsNorm {
    gamma: Tensor,
}

impl RmsNorm {
    pub fn load(w: &Weights, name: &str) -> Result<Self> {
        Ok(Self {
            gamma: w.tensor(&format!("{name}.gamma"))?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.apply(x, false)
    }

    /// The norm, then SiLU, as every residual stage and the head run them.
    pub fn forward_silu(&self, x: &Tensor) -> Tensor {
        self.apply(x, true)
    }

    fn apply(&self, x: &Tensor, silu: bool) -> Tensor {
        fused::channel_rms_norm(x, &self.gamma, silu)
    }
}

/// Two RMS-norm → SiLU → causal-conv stages plus a (1×1×1 conv) shortcut.
pub struct ResidualBlock {
    norm1: RmsNorm,
    conv1: CausalConv3d,
    norm2: RmsNorm,
    conv2: CausalConv3d,
    shortcut: Option<CausalConv3d>,
}

impl ResidualBlock {
    pub fn out_channels(&self) -> i64 {
        self.conv2.out_channels()
    }

    pub fn load(w: &Weights, name: &str) -> Result<Self> {
        let shortcut = format!("{name}.shortcut");
        Ok(Self {
            norm1: RmsNorm::load(w, &format!("{name}.residual.0"))?,
            conv1: CausalConv3d::load(w, &format!("{name}.residual.2"))?,
            norm2: RmsNorm::load(w, &format!("{name}.residual.3"))?,
            conv2: CausalConv3d::load(w, &format!("{name}.residual.6"))?,
            shortcut: if w.has(&format!("{shortcut}.weight")) {
                Some(CausalConv3d::load(w, &shortcut)?)
            } else {
                None
            },
        })
    }

    pub fn forward(&self, x: &Tensor, stream: &mut Stream) -> Tensor {
        let h = self
            .conv1
            .forward_stream(&self.norm1.forward_silu(x), stream);
        let h = self
            .conv2
            .forward_stream(&self.norm2.forward_silu(&h), stream);
        match &self.shortcut {
            Some(s) => h + s.forward(x),
            None => h + x,
        }
    }
}

/// Single-head self-attention over each frame's pixels.
pub struct AttentionBlock {
    norm: RmsNorm,
    to_qkv: (Tensor, Tensor),
    proj: (Tensor, Tensor),
}

impl AttentionBlock {
    pub fn load(w: &Weights, name: &str) -> Result<Self> {
        let pair = |n: &str| -> Result<(Tensor, Tensor)> {
            Ok((
                w.tensor(&format!("{name}.{n}.weight"))?,
                w.tensor(&format!("{name}.{n}.bias"))?,
            ))
        };
        Ok(Self {
            norm: RmsNorm::load(w, &format!("{name}.norm"))?,
            to_qkv: pair("to_qkv")?,
            proj: pair("proj")?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let [b, c, t, h, w] = x.size()[..] else {
            unreachable!("VAE activations are [B, C, T, H, W]")
        };
        let frames = x.permute([0, 2, 1, 3, 4]).reshape([b * t, c, h, w]);
        let normed = self.norm.forward(&frames);
        let qkv = normed.conv2d(
            &self.to_qkv.0,
            Some(&self.to_qkv.1),
            [1, 1],
            [0, 0],
            [1, 1],
            1,
        );
        let heads: Vec<Tensor> = qkv
            .chunk(3, 1)
            .iter()
            .map(|p| p.reshape([b * t, 1, c, h * w]).transpose(2, 3))
            .collect();
        let out = Tensor::scaled_dot_product_attention(
            &heads[0],
            &heads[1],
            &heads[2],
            None::<&Tensor>,
            0.0,
            false,
            None,
            false,
        );
        let out = out.transpose(2, 3).reshape([b * t, c, h, w]);
        let out = out.conv2d(&self.proj.0, Some(&self.proj.1), [1, 1], [0, 0], [1, 1], 1);
        out.reshape([b, t, c, h, w]).permute([0, 2, 1, 3, 4]) + x
    }
}

/// A 2-D op applied to every frame of `[B, C, T, H, W]`.
fn per_frame(x: &Tensor, f: impl Fn(&Tensor) -> Tensor) -> Tensor {
    let [b, c, t, h, w] = x.size()[..] else {
        unreachable!("VAE activations are [B, C, T, H, W]")
    };
    let out = f(&x.permute([0, 2, 1, 3, 4]).reshape([b * t, c, h, w]));
    let s = out.size();
    out.reshape([b, t, s[1], s[2], s[3]])
        .permute([0, 2, 1, 3, 4])
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ResampleMode {
    Upsample2d,
    Upsample3d,
    Downsample2d,
    Downsample3d,
}

/// Spatial ×2 (nearest + 3×3 conv) or ÷2 (pad right/bottom + strided 3×3 conv), with a causal
/// time convolution for the 3-D modes: upsampling doubles every frame but the first,
/// downsampling keeps the first and takes stride-2 windows of three frames after it.
pub struct Resample {
    mode: ResampleMode,
    conv: (Tensor, Tensor),
    time_conv: Option<CausalConv3d>,
}

impl Resample {
    pub fn load(w: &Weights, name: &str, mode: ResampleMode) -> Result<Self> {
        let time_conv = match mode {
            ResampleMode::Upsample3d => Some(CausalConv3d::load(w, &format!("{name}.time_conv"))?),
            ResampleMode::Downsample3d => {
                Some(CausalConv3d::load(w, &format!("{name}.time_conv"))?.strided())
            }
            _ => None,
        };
        Ok(Self {
            mode,
            conv: (
                w.tensor(&format!("{name}.resample.1.weight"))?,
                w.tensor(&format!("{name}.resample.1.bias"))?,
            ),
            time_conv,
        })
    }

    pub fn mode(&self) -> ResampleMode {
        self.mode
    }

    fn spatial(&self, x: &Tensor) -> Tensor {
        let (weight, bias) = (&self.conv.0, Some(&self.conv.1));
        per_frame(x, |f| match self.mode {
            ResampleMode::Upsample2d | ResampleMode::Upsample3d => {
                let s = f.size();
                f.upsample_nearest2d([s[2] * 2, s[3] * 2], None, None)
                    .conv2d(weight, bias, [1, 1], [1, 1], [1, 1], 1)
            }
            ResampleMode::Downsample2d | ResampleMode::Downsample3d => f
                .constant_pad_nd([0, 1, 0, 1])
                .conv2d(weight, bias, [2, 2], [0, 0], [1, 1], 1),
        })
    }

    pub fn forward(&self, x: &Tensor, stream: &mut Stream) -> Tensor {
        match (self.mode, &self.time_conv) {
            (ResampleMode::Upsample3d, Some(tc)) => {
                let x = self.upsample_time(tc, x, stream.slot());
                self.spatial(&x)
            }
            (ResampleMode::Downsample3d, Some(tc)) => {
                let x = self.spatial(x);
                Self::downsample_time(tc, &x, stream.slot())
            }
            _ => self.spatial(x),
        }
    }

    /// The slot holds the time convolution's history; `None` until the first frame went by.
    fn upsample_time(&self, tc: &CausalConv3d, x: &Tensor, slot: &mut Option<Tensor>) -> Tensor {
        let t = x.size()[2];
        let (first, rest) = if slot.is_none() {
            let mut empty = x.size();
            empty[2] = 0;
            *slot = Some(Tensor::zeros(empty.as_slice(), (x.kind(), x.device())));
            (Some(frames(x, 0, 1)), frames(x, 1, t))
        } else {
            (None, x.shallow_clone())
        };
        let mut parts: Vec<Tensor> = first.into_iter().collect();
        if rest.size()[2] > 0 {
            let mut history = slot.take().filter(|h| h.size()[2] > 0);
            let doubled = tc.step(&rest, &mut history);
            *slot = Some(history.expect("step keeps history"));
            let [b, c2, n, h, w] = doubled.size()[..] else {
                unreachable!()
            };
            let c = c2 / 2;
            // Channels [0, c) are the even output frames, [c, 2c) the odd ones.
            parts.push(
                doubled
                    .reshape([b, 2, c, n, h, w])
                    .permute([0, 2, 3, 1, 4, 5])
                    .reshape([b, c, n * 2, h, w]),
            );
        }
        Tensor::cat(&parts, 2)
    }

    /// The slot holds the frames not yet consumed by a window (the last one used, plus at most
    /// one more).
    fn downsample_time(tc: &CausalConv3d, x: &Tensor, slot: &mut Option<Tensor>) -> Tensor {
        let (first, buffer) = match slot.take() {
            None => (Some(frames(x, 0, 1)), x.shallow_clone()),
            Some(prev) => (None, Tensor::cat(&[prev, x.shallow_clone()], 2)),
        };
        let len = buffer.size()[2];
        let windows = if len >= 3 { (len - 3) / 2 + 1 } else { 0 };
        *slot = Some(frames(&buffer, 2 * windows, len));
        let mut parts: Vec<Tensor> = first.into_iter().collect();
        if windows > 0 {
            parts.push(tc.conv(&frames(&buffer, 0, 2 * windows + 1)));
        }
        if parts.is_empty() {
            let mut empty = x.size();
            empty[2] = 0;
            return Tensor::zeros(empty.as_slice(), (x.kind(), x.device()));
        }
        Tensor::cat(&parts, 2)
    }
}

/// Whether this is the stream's first chunk through the layer owning the next slot.
fn first_chunk(stream: &mut Stream, like: &Tensor) -> bool {
    let slot = stream.slot();
    let first = slot.is_none();
    if first {
        *slot = Some(Tensor::zeros([0], (like.kind(), like.device())));
    }
    first
}

/// Wan 2.2's parameter-free shortcut around a downsampling group: pixels of each
/// `ft × fs × fs` cell stacked into channels and averaged down to `out` channels; in time the
/// first frame is paired with a zero frame in front.
pub struct AvgDown3d {
    pub out: i64,
    pub factor_t: i64,
    pub factor_s: i64,
}

impl AvgDown3d {
    pub fn forward(&self, x: &Tensor, stream: &mut Stream) -> Tensor {
        let (ft, fs) = (self.factor_t, self.factor_s);
        let x = if first_chunk(stream, x) {
            pad_front(x, (ft - x.size()[2] % ft) % ft)
        } else {
            x.shallow_clone()
        };
        let [b, c, t, h, w] = x.size()[..] else {
            unreachable!()
        };
        let group = c * ft * fs * fs / self.out;
        x.view([b, c, t / ft, ft, h / fs, fs, w / fs, fs].as_slice())
            .permute([0, 1, 3, 5, 7, 2, 4, 6].as_slice())
            .reshape([b, self.out, group, t / ft, h / fs, w / fs].as_slice())
            .mean_dim(2, false, x.kind())
    }
}

/// Wan 2.2's parameter-free shortcut around an upsampling group: channels repeated and spread
/// over `ft × fs × fs` cells; the first chunk drops the frames before the first.
pub struct DupUp3d {
    pub out: i64,
    pub factor_t: i64,
    pub factor_s: i64,
}

impl DupUp3d {
    pub fn forward(&self, x: &Tensor, stream: &mut Stream) -> Tensor {
        let (ft, fs) = (self.factor_t, self.factor_s);
        let first = first_chunk(stream, x);
        let [b, c, t, h, w] = x.size()[..] else {
            unreachable!()
        };
        let repeats = self.out * ft * fs * fs / c;
        let up = x
            .repeat_interleave_self_int(repeats, 1, None)
            .view([b, self.out, ft, fs, fs, t, h, w].as_slice())
            .permute([0, 1, 5, 2, 6, 3, 7, 4].as_slice())
            .reshape([b, self.out, t * ft, h * fs, w * fs]);
        if first {
            up.narrow(2, ft - 1, t * ft - (ft - 1))
        } else {
            up
        }
    }
}
