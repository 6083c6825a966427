//! InfiniteTalk (MultiTalk), the model patch ComfyUI loads with ModelPatchLoader
//! (`comfy/ldm/wan/model_multitalk.py`): wav2vec2 features of each video frame's audio window
//! projected into 32 audio tokens per latent frame, and after every block's cross-attention an
//! audio cross-attention of each latent frame's tokens to its frame's audio tokens. With two
//! speakers, each token's query is rotated by how much its block's self-attention looks at
//! each speaker's region of the first frame, so it listens to the speaker it belongs to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use super::dit::layer_norm;
use crate::models::loading::{load_component, LoadTarget, Precision};
use crate::models::weights::Weights;
use crate::runtime::attention::attention;
use crate::runtime::linear::Linear;
use crate::runtime::manager::{
    log_partial_load, resident_count, Loaded, ModelManager, Movable, Streamed,
};
use crate::runtime::safetensors_file::{Entry, SafetensorsFile};

/// The audio window around each video frame (`audio_window`), and its half.
const WINDOW: i64 = 5;
const HALF_WINDOW: i64 = WINDOW / 2;
/// Video frames per latent frame after the first (`vae_scale`).
const FRAMES_PER_LATENT: i64 = 4;
/// The windows of a latent frame's four video frames, cut to `WINDOW + 3` features.
const LATENT_WINDOW: i64 = WINDOW + FRAMES_PER_LATENT - 1;
/// ComfyUI's norms here are `nn.LayerNorm`s with torch's default epsilon.
const NORM_EPS: f64 = 1e-5;
/// The rotary buckets of `SingleStreamMultiAttention` (`class_range` 24, `class_interval` 4):
/// speaker 1's tokens take positions in 0..4, speaker 2's in 20..24, and each speaker's audio
/// tokens the middle of its bucket.
const SPEAKER_BUCKETS: [(f64, f64); 2] = [(0.0, 4.0), (20.0, 24.0)];

/// The patch file's shapes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TalkConfig {
    /// The DiT width the blocks attend from.
    pub dim: i64,
    /// Width of the audio tokens (`out_dim`).
    pub audio_dim: i64,
    /// Audio tokens per latent frame (`context_tokens`).
    pub tokens: i64,
    /// One video frame's wav2vec2 features, layers × width (12 × 768 for the base model).
    pub features: i64,
    pub intermediate: i64,
    pub blocks: i64,
}

impl TalkConfig {
    /// The shapes of an InfiniteTalk patch (the file has `audio_proj.proj1.weight`), as
    /// ComfyUI's ModelPatchLoader reads them.
    pub fn from_entries(entries: &BTreeMap<String, Entry>) -> Result<Self> {
        let shape = |name: &str| -> Result<Vec<i64>> {
            let entry = entries
                .get(name)
                .with_context(|| format!("the InfiniteTalk patch has no {name}"))?;
            Ok(entry.shape.iter().map(|&d| d as i64).collect())
        };
        let proj1 = shape("audio_proj.proj1.weight")?;
        let audio_dim = shape("audio_proj.norm.weight")?[0];
        let blocks = (0..)
            .take_while(|n| entries.contains_key(&format!("blocks.{n}.norm_x.weight")))
            .count() as i64;
        if proj1[1] % WINDOW != 0 || blocks == 0 {
            bail!(
                "not an InfiniteTalk patch: audio_proj.proj1 takes {} inputs",
                proj1[1]
            );
        }
        Ok(Self {
            dim: shape("blocks.0.audio_cross_attn.proj.weight")?[0],
            audio_dim,
            tokens: shape("audio_proj.proj3.weight")?[0] / audio_dim,
            features: proj1[1] / WINDOW,
            intermediate: proj1[0],
            blocks,
        })
    }
}

/// `MultiTalkAudioProjModel`: one window of features per frame to the frame's audio tokens.
pub struct AudioProjection {
    first: Linear,
    latent: Linear,
    middle: Linear,
    out: Linear,
    norm: (Tensor, Tensor),
    config: TalkConfig,
}

impl AudioProjection {
    pub fn load(w: &Weights, config: TalkConfig) -> Result<Self> {
        let c = config;
        Ok(Self {
            first: w.linear("audio_proj.proj1", (c.intermediate, WINDOW * c.features))?,
            latent: w.linear(
                "audio_proj.proj1_vf",
                (c.intermediate, LATENT_WINDOW * c.features),
            )?,
            middle: w.linear("audio_proj.proj2", (c.intermediate, c.intermediate))?,
            out: w.linear("audio_proj.proj3", (c.tokens * c.audio_dim, c.intermediate))?,
            norm: (
                w.tensor("audio_proj.norm.weight")?,
                w.tensor("audio_proj.norm.bias")?,
            ),
            config,
        })
    }

    /// `project_audio_features`: each speaker's features `[frames, layers, width]` (all the
    /// same length) for video frames `start..end` (`end − start` = 4k + 1) to the audio tokens
    /// of the `k + 1` latent frames, the speakers' side by side:
    /// `[k + 1, speakers · tokens, audio_dim]`.
    pub fn project(&self, speakers: &[Tensor], start: i64, end: i64) -> Result<Tensor> {
        let frames = end - start;
        if frames < 1 || (frames - 1) % FRAMES_PER_LATENT != 0 {
            bail!("InfiniteTalk needs 4k + 1 video frames, not {frames}");
        }
        let windows = audio_windows(speakers, start, end)?;
        let (n, c) = (speakers.len() as i64, self.config);
        let groups = (frames - 1) / FRAMES_PER_LATENT;
        let first = windows.narrow(1, 0, 1);
        let later = windows.narrow(1, 1, frames - 1).view(
            &[n, groups, FRAMES_PER_LATENT, WINDOW, -1][..], // the features stay flattened
        );
        // A latent frame's windows: the first frame's up to its centre, the middle frames'
        // centres, the last frame's from its centre.
        let latent = Tensor::cat(
            &[
                later.narrow(2, 0, 1).narrow(3, 0, HALF_WINDOW + 1),
                later
                    .narrow(2, 1, FRAMES_PER_LATENT - 2)
                    .narrow(3, HALF_WINDOW, 1),
                later.narrow(2, FRAMES_PER_LATENT - 1, 1).narrow(
                    3,
                    HALF_WINDOW,
                    WINDOW - HALF_WINDOW,
                ),
            ]
            .map(|t| t.reshape([n, groups, -1, c.features])),
            2,
        );
        let first = self
            .first
            .forward(&first.reshape([n, 1, WINDOW * c.features]))?
            .relu();
        let latent = self
            .latent
            .forward(&latent.reshape([n, groups, LATENT_WINDOW * c.features]))?
            .relu();
        let hidden = self
            .middle
            .forward(&Tensor::cat(&[first, latent], 1))?
            .relu();
        let tokens = self
            .out
            .forward(&hidden)?
            .view([n, groups + 1, c.tokens, c.audio_dim]);
        let tokens = layer_norm(&tokens, Some((&self.norm.0, &self.norm.1)), NORM_EPS);
        // Speakers side by side: `[latent frames, speakers · tokens, audio_dim]`.
        Ok(tokens
            .permute([1, 0, 2, 3])
            .reshape([groups + 1, -1, c.audio_dim]))
    }
}

/// `get_audio_embeds`: for each video frame of `start..end`, the features of the five frames
/// around it (clamped to the audio; past its end, each speaker's first frame, which is most
/// likely silence): `[speakers, end − start, 5, layers, width]`.
fn audio_windows(speakers: &[Tensor], start: i64, end: i64) -> Result<Tensor> {
    let first = speakers.first().context("no audio for InfiniteTalk")?;
    let have = first.size()[0];
    let windows = speakers.iter().map(|features| {
        let features = if end > have {
            let pad = features
                .narrow(0, 0, 1)
                .expand([&[end - have][..], &features.size()[1..]].concat(), false);
            Tensor::cat(&[features, &pad], 0)
        } else {
            features.shallow_clone()
        };
        let last = features.size()[0] - 1;
        let centres = Tensor::arange_start(start, end, (Kind::Int64, Device::Cpu)).unsqueeze(1);
        let offsets =
            Tensor::arange_start(-HALF_WINDOW, HALF_WINDOW + 1, (Kind::Int64, Device::Cpu));
        let index = (centres + offsets.unsqueeze(0)).clamp(0, last);
        features
            .index_select(0, &index.flatten(0, 1).to_device(features.device()))
            .view(
                [&[end - start, WINDOW][..], &features.size()[1..]]
                    .concat()
                    .as_slice(),
            )
    });
    Ok(Tensor::stack(&windows.collect::<Vec<_>>(), 0))
}

/// What a forward takes from an InfiniteTalk patch.
pub struct TalkInputs<'a> {
    /// The patch's blocks, one per DiT block (`--lowvram` streams them beside the DiT's).
    pub blocks: &'a [Streamed<TalkBlock>],
    /// The audio tokens of every latent frame, `[frames, speakers · tokens, audio_dim]`.
    pub audio: &'a Tensor,
    pub scale: f64,
    /// Two speakers' regions of a latent frame's tokens, `[2, frame_tokens]` (0/1).
    pub speaker_masks: Option<&'a Tensor>,
}

/// [`TalkInputs`] during one forward, with the patch grid: latent frames and tokens per frame.
pub struct TalkStep<'a> {
    pub audio: &'a Tensor,
    pub scale: f64,
    pub speaker_masks: Option<&'a Tensor>,
    pub grid: (i64, i64),
}

/// One block's `norm_x` and `audio_cross_attn`.
pub struct TalkBlock {
    norm: (Tensor, Tensor),
    q: Linear,
    kv: Linear,
    proj: Linear,
}

impl TalkBlock {
    pub fn load(w: &Weights, n: i64, c: &TalkConfig) -> Result<Self> {
        let p = format!("blocks.{n}");
        let a = format!("{p}.audio_cross_attn");
        Ok(Self {
            norm: (
                w.tensor(&format!("{p}.norm_x.weight"))?,
                w.tensor(&format!("{p}.norm_x.bias"))?,
            ),
            q: w.linear(&format!("{a}.q_linear"), (c.dim, c.dim))?,
            kv: w.linear(&format!("{a}.kv_linear"), (2 * c.dim, c.audio_dim))?,
            proj: w.linear(&format!("{a}.proj"), (c.dim, c.dim))?,
        })
    }

    /// The audio cross-attention's output for the stream `x` `[b, tokens, dim]`, whose first
    /// `frames · frame_tokens` tokens are the video's (later tokens get none, as in ComfyUI),
    /// given the audio tokens `[frames, audio_tokens, audio_dim]` of every batch item. With
    /// `positions` (`[b, frames · frame_tokens]`, two speakers) queries and keys are rotated.
    pub fn forward(
        &self,
        x: &Tensor,
        audio: &Tensor,
        (frames, frame_tokens): (i64, i64),
        heads: i64,
        positions: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, tokens, dim) = x.size3()?;
        let video = frames * frame_tokens;
        let normed = layer_norm(
            &x.narrow(1, 0, video),
            Some((&self.norm.0, &self.norm.1)),
            NORM_EPS,
        );
        let q = self.q.forward(&normed)?;
        let kv = self.kv.forward(&audio.to_kind(x.kind()))?;
        let audio_tokens = kv.size()[1];
        let (k, v) = (kv.narrow(2, 0, dim), kv.narrow(2, dim, dim));
        let (q, k) = match positions {
            Some(positions) => {
                let head_dim = dim / heads;
                let half = audio_tokens / 2;
                let centre = |(lo, hi): (f64, f64)| (lo + hi) / 2.0;
                let key_positions = Tensor::cat(
                    &[
                        Tensor::full(
                            [half],
                            centre(SPEAKER_BUCKETS[0]),
                            (Kind::Float, x.device()),
                        ),
                        Tensor::full(
                            [audio_tokens - half],
                            centre(SPEAKER_BUCKETS[1]),
                            (Kind::Float, x.device()),
                        ),
                    ],
                    0,
                );
                (
                    rotate(&q, positions, heads, head_dim),
                    rotate(&k, &key_positions.unsqueeze(0), heads, head_dim),
                )
            }
            None => (q, k),
        };
        // Each latent frame's tokens attend to that frame's audio tokens, in every batch item.
        let per_frame = |t: &Tensor, n: i64| t.reshape([b * frames, n, dim]);
        let repeat = |t: &Tensor| t.unsqueeze(0).expand([b, frames, audio_tokens, dim], false);
        let out = attention(
            &per_frame(&q, frame_tokens),
            &per_frame(&repeat(&k), audio_tokens),
            &per_frame(&repeat(&v), audio_tokens),
            heads,
            None,
        );
        let out = self.proj.forward(&out)?.reshape([b, video, dim]);
        if tokens == video {
            return Ok(out);
        }
        Ok(Tensor::cat(
            &[out, x.narrow(1, video, tokens - video).zeros_like()],
            1,
        ))
    }
}

impl Movable for TalkBlock {
    fn moved(&self, device: Device) -> Self {
        Self {
            norm: self.norm.moved(device),
            q: self.q.moved(device),
            kv: self.kv.moved(device),
            proj: self.proj.moved(device),
        }
    }

    fn bytes(&self) -> u64 {
        self.norm.bytes() + self.q.bytes() + self.kv.bytes() + self.proj.bytes()
    }
}

/// `RotaryPositionalEmbedding1D` at float `positions` (`[b or 1, tokens]`) over `x`
/// `[b, tokens, heads · head_dim]`: interleaved pairs, angles in float32.
fn rotate(x: &Tensor, positions: &Tensor, heads: i64, head_dim: i64) -> Tensor {
    let (b, tokens, _) = x.size3().expect("[b, tokens, width]");
    let device = x.device();
    let exponents =
        Tensor::arange_start_step(0, head_dim, 2, (Kind::Float, device)) / head_dim as f64;
    let freqs = Tensor::pow_scalar(10000f64, &(-exponents));
    let angles = positions.to_kind(Kind::Float).unsqueeze(-1) * freqs;
    let angles = angles.unsqueeze(2); // [b, tokens, 1, head_dim / 2]
    let pairs = x
        .to_kind(Kind::Float)
        .view([b, tokens, heads, head_dim / 2, 2]);
    let (even, odd) = (pairs.select(4, 0), pairs.select(4, 1));
    let (cos, sin) = (angles.cos(), angles.sin());
    let rotated = Tensor::stack(&[&even * &cos - &odd * &sin, &odd * &cos + &even * &sin], 4);
    rotated
        .view([b, tokens, heads * head_dim])
        .to_kind(x.kind())
}

/// `get_attn_map_with_target` and the speaker choice of `SingleStreamMultiAttention`: for every
/// video token, how much its self-attention query (`q`, after RoPE, `[b, tokens, width]`)
/// attends to each speaker's region (`masks`, `[speakers, frame_tokens]`, 0/1) of the first
/// latent frame's keys (`k`), averaged over the heads; then each speaker's map scaled into its
/// rotary bucket over the sequence, and each token given the bucket position of the speaker it
/// attends to most. `[b, video tokens]` float32. The softmax runs in float32, where ComfyUI
/// stays in the model's half precision.
pub fn speaker_positions(
    q: &Tensor,
    k: &Tensor,
    masks: &Tensor,
    heads: i64,
    video_tokens: i64,
) -> Tensor {
    let (b, _, width) = q.size3().expect("[b, tokens, width]");
    let head_dim = width / heads;
    let frame_tokens = masks.size()[1];
    let split = |t: &Tensor, n: i64| {
        t.narrow(1, 0, n)
            .view([b, n, heads, head_dim])
            .transpose(1, 2)
    };
    let q = split(q, video_tokens) * (1.0 / (head_dim as f64).sqrt());
    let k = split(k, frame_tokens);
    let masks = masks.to_device(q.device()).to_kind(Kind::Float);
    let counts = masks.sum_dim_intlist(1, false, Kind::Float) + 1e-8;
    // Scores in chunks of the sequence, so that a chunk's probabilities stay near 256 MB.
    let chunk = (64 << 20) / (heads * frame_tokens).max(1);
    let maps: Vec<Tensor> = (0..video_tokens)
        .step_by(chunk.max(1) as usize)
        .map(|start| {
            let n = chunk.min(video_tokens - start);
            let scores = q.narrow(2, start, n).matmul(&k.transpose(2, 3));
            let probs = scores.to_kind(Kind::Float).softmax(-1, Kind::Float);
            // [b, heads, n, speakers] → mean over heads.
            (probs.matmul(&masks.transpose(0, 1)) / &counts).mean_dim(1, false, Kind::Float)
        })
        .collect();
    let maps = Tensor::cat(&maps, 1); // [b, video tokens, speakers]
    let (lo, hi) = (
        maps.amin([1].as_slice(), true),
        maps.amax([1].as_slice(), true),
    );
    let bucket = |i: usize| SPEAKER_BUCKETS[i];
    let starts = Tensor::from_slice(&[bucket(0).0, bucket(1).0]).to_kind(Kind::Float);
    let widths = Tensor::from_slice(&[bucket(0).1 - bucket(0).0, bucket(1).1 - bucket(1).0])
        .to_kind(Kind::Float);
    let (starts, widths) = (starts.to_device(q.device()), widths.to_device(q.device()));
    let scaled = (&maps - &lo) / (&hi - &lo + 1e-8) * widths + starts;
    let speaker = maps.argmax(-1, true);
    scaled.gather(2, &speaker, false).squeeze_dim(2)
}

/// The patch's blocks on the compute device (those that fit under `--lowvram`).
pub struct TalkPatch {
    pub blocks: Vec<Streamed<TalkBlock>>,
}

impl TalkPatch {
    pub fn load(w: &Weights, config: &TalkConfig) -> Result<Self> {
        let mut placer = w.placement.placer();
        let blocks = (0..config.blocks)
            .map(|n| Ok(placer.place(TalkBlock::load(w, n, config)?)))
            .collect::<Result<Vec<_>>>()?;
        let resident = (resident_count(&blocks), blocks.len());
        log_partial_load("InfiniteTalk patch", resident, "blocks", w.device);
        Ok(Self { blocks })
    }
}

/// ModelPatchLoader's MODEL_PATCH for an InfiniteTalk file: read when used, its audio
/// projection on the host in float32 (where ComfyUI runs the offloaded patch), its blocks
/// through the model manager in the DiT's dtype.
pub struct TalkPatchFile {
    manager: Arc<ModelManager>,
    path: PathBuf,
    pub config: TalkConfig,
}

impl TalkPatchFile {
    /// Fails unless the file is an InfiniteTalk patch.
    pub fn open(manager: Arc<ModelManager>, path: &Path) -> Result<Self> {
        let file = SafetensorsFile::open(path)?;
        Ok(Self {
            manager,
            path: path.to_path_buf(),
            config: TalkConfig::from_entries(file.entries())?,
        })
    }

    fn target(&self, device: Device, dtype: Kind) -> LoadTarget<'_> {
        LoadTarget {
            kind: "model_patch",
            path: &self.path,
            prefix: "",
            device,
            precision: Precision {
                compute: dtype,
                linears: dtype,
            },
        }
    }

    pub fn projection(&self) -> Result<Arc<Loaded<AudioProjection>>> {
        let target = self.target(Device::Cpu, Kind::Float);
        load_component(&self.manager, &target, None, |w| {
            AudioProjection::load(w, self.config)
        })
    }

    /// The blocks for a DiT computing in `dtype` on the manager's device.
    pub fn blocks(&self, dtype: Kind) -> Result<Arc<Loaded<TalkPatch>>> {
        let target = self.target(self.manager.device(), dtype);
        load_component(&self.manager, &target, None, |w| {
            TalkPatch::load(w, &self.config)
        })
    }
}
