//! The FLUX.1 transformer as ComfyUI runs it (`comfy/ldm/flux/model.py`, `layers.py`): 2×2
//! patches packed into tokens, time/guidance/pooled-text embeddings summed into one modulation
//! vector, double-stream blocks (separate image and text weights, joint attention), single-stream
//! blocks (fused qkv + MLP), RoPE over (0, row, col) positions with text at 0, and the modulated
//! final layer.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

use crate::models::layers;
use crate::models::rope::{apply_rope, rope_axis, RopeOptions};
use crate::models::wan::dit::{layer_norm, rms_norm};
use crate::models::weights::Weights;
use crate::runtime::attention::attention;
use crate::runtime::linear::Linear;
use crate::runtime::manager::{in_order, log_partial_load, resident_count, Movable, Streamed};

pub const PATCH: i64 = 2;
/// The latent's channels, which the model predicts (Fill and Canny models take more in).
const OUT_CHANNELS: i64 = 16;
const THETA: f64 = 10000.0;
const NORM_EPS: f64 = 1e-6;
/// The width of the sinusoidal time and guidance features.
const FREQ_DIM: i64 = 256;

#[derive(Clone, Debug, PartialEq)]
pub struct FluxConfig {
    pub hidden: i64,
    pub in_channels: i64,
    pub context_in: i64,
    pub vec_in: Option<i64>,
    pub heads: i64,
    pub axes: Vec<i64>,
    pub depth: i64,
    pub depth_single: i64,
    pub guidance_embed: bool,
}

impl FluxConfig {
    /// From `runtime::detect`'s config for a FLUX.1 model.
    pub fn from_detected(config: &Value) -> Result<Self> {
        let int = |key: &str| {
            config[key]
                .as_i64()
                .with_context(|| format!("FLUX config has no {key}"))
        };
        let axes = config["axes_dim"]
            .as_array()
            .context("FLUX config has no axes_dim")?
            .iter()
            .filter_map(Value::as_i64)
            .collect();
        Ok(Self {
            hidden: int("hidden_size")?,
            in_channels: int("in_channels")?,
            context_in: int("context_in_dim")?,
            vec_in: config["vec_in_dim"].as_i64(),
            heads: int("num_heads")?,
            axes,
            depth: int("depth")?,
            depth_single: int("depth_single_blocks")?,
            guidance_embed: config["guidance_embed"].as_bool().unwrap_or(false),
        })
    }
}

/// `MLPEmbedder`: in_layer → SiLU → out_layer.
struct Embedder {
    fc_in: Linear,
    fc_out: Linear,
}

impl Embedder {
    fn load(w: &Weights, p: &str, input: i64, hidden: i64) -> Result<Self> {
        Ok(Self {
            fc_in: w.linear(&format!("{p}.in_layer"), (hidden, input))?,
            fc_out: w.linear(&format!("{p}.out_layer"), (hidden, hidden))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc_out.forward(&self.fc_in.forward(x)?.silu())
    }
}

/// One stream's half of a double block.
struct Stream {
    modulation: Linear,
    qkv: Linear,
    norm_q: Tensor,
    norm_k: Tensor,
    proj: Linear,
    mlp_in: Linear,
    mlp_out: Linear,
}

impl Stream {
    fn load(w: &Weights, p: &str, h: i64) -> Result<Self> {
        Ok(Self {
            modulation: w.linear(&format!("{p}_mod.lin"), (6 * h, h))?,
            qkv: w.linear(&format!("{p}_attn.qkv"), (3 * h, h))?,
            norm_q: norm_gain(w, &format!("{p}_attn.norm.query_norm"))?,
            norm_k: norm_gain(w, &format!("{p}_attn.norm.key_norm"))?,
            proj: w.linear(&format!("{p}_attn.proj"), (h, h))?,
            mlp_in: w.linear(&format!("{p}_mlp.0"), (4 * h, h))?,
            mlp_out: w.linear(&format!("{p}_mlp.2"), (h, 4 * h))?,
        })
    }
}

impl Movable for Stream {
    fn moved(&self, device: Device) -> Self {
        Self {
            modulation: self.modulation.moved(device),
            qkv: self.qkv.moved(device),
            norm_q: self.norm_q.moved(device),
            norm_k: self.norm_k.moved(device),
            proj: self.proj.moved(device),
            mlp_in: self.mlp_in.moved(device),
            mlp_out: self.mlp_out.moved(device),
        }
    }

    fn bytes(&self) -> u64 {
        let linears = [
            &self.modulation,
            &self.qkv,
            &self.proj,
            &self.mlp_in,
            &self.mlp_out,
        ];
        linears.iter().map(|l| l.bytes()).sum::<u64>() + self.norm_q.bytes() + self.norm_k.bytes()
    }
}

/// `(1 + scale) · LayerNorm(x) + shift`, the norm without affine weights.
/// An RMSNorm gain (`<module>.scale` in the file), with the LoRA patches ComfyUI names it by
/// (`<module>.weight`: BFL's control LoRAs replace it).
fn norm_gain(w: &Weights, module: &str) -> Result<Tensor> {
    w.patched(module, w.tensor(&format!("{module}.scale"))?)
}

fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Tensor {
    layer_norm(x, None, NORM_EPS) * (scale + 1.0) + shift
}

/// The six (or three) modulation vectors `[b, 1, h]` of `vec` through `lin`.
fn modulation(lin: &Linear, vec: &Tensor, parts: i64) -> Result<Vec<Tensor>> {
    Ok(lin.forward(&vec.silu())?.unsqueeze(1).chunk(parts, -1))
}

/// `[b, s, 3h]` → q, k, v as `[b, s, heads, d]`, q and k RMS-normed.
fn split_qkv(
    qkv: &Tensor,
    heads: i64,
    norm_q: &Tensor,
    norm_k: &Tensor,
) -> (Tensor, Tensor, Tensor) {
    let (b, s, _) = qkv.size3().expect("qkv is [b, s, 3h]");
    let parts = qkv.view([b, s, 3, heads, -1]).unbind(2);
    (
        rms_norm(&parts[0], norm_q),
        rms_norm(&parts[1], norm_k),
        parts[2].shallow_clone(),
    )
}

/// Rotates q and k and attends; `[b, s, heads, d]` in, `[b, s, heads·d]` out.
fn rope_attention(q: &Tensor, k: &Tensor, v: &Tensor, freqs: &Tensor) -> Tensor {
    let (b, s, heads, d) = q.size4().expect("q is [b, s, heads, d]");
    let flat = |t: &Tensor| t.reshape([b, s, heads * d]);
    attention(
        &flat(&apply_rope(q, freqs)),
        &flat(&apply_rope(k, freqs)),
        &flat(v),
        heads,
        None,
    )
}

struct DoubleBlock {
    img: Stream,
    txt: Stream,
}

impl DoubleBlock {
    fn forward(
        &self,
        img: &Tensor,
        txt: &Tensor,
        vec: &Tensor,
        freqs: &Tensor,
        heads: i64,
    ) -> Result<(Tensor, Tensor)> {
        let im = modulation(&self.img.modulation, vec, 6)?;
        let tm = modulation(&self.txt.modulation, vec, 6)?;
        let img_qkv = self.img.qkv.forward(&modulate(img, &im[0], &im[1]))?;
        let txt_qkv = self.txt.qkv.forward(&modulate(txt, &tm[0], &tm[1]))?;
        let (iq, ik, iv) = split_qkv(&img_qkv, heads, &self.img.norm_q, &self.img.norm_k);
        let (tq, tk, tv) = split_qkv(&txt_qkv, heads, &self.txt.norm_q, &self.txt.norm_k);
        let joint = |a: &Tensor, b: &Tensor| Tensor::cat(&[a, b], 1);
        let attn = rope_attention(&joint(&tq, &iq), &joint(&tk, &ik), &joint(&tv, &iv), freqs);
        let txt_len = txt.size()[1];
        let txt_attn = attn.narrow(1, 0, txt_len);
        let img_attn = attn.narrow(1, txt_len, attn.size()[1] - txt_len);

        let stream = |x: &Tensor, m: &[Tensor], s: &Stream, a: &Tensor| -> Result<Tensor> {
            let x = x + &m[2] * s.proj.forward(a)?;
            let h = s.mlp_in.forward_gelu_tanh(&modulate(&x, &m[3], &m[4]))?;
            Ok(&x + &m[5] * s.mlp_out.forward(&h)?)
        };
        Ok((
            stream(img, &im, &self.img, &img_attn)?,
            stream(txt, &tm, &self.txt, &txt_attn)?,
        ))
    }
}

impl Movable for DoubleBlock {
    fn moved(&self, device: Device) -> Self {
        Self {
            img: self.img.moved(device),
            txt: self.txt.moved(device),
        }
    }

    fn bytes(&self) -> u64 {
        self.img.bytes() + self.txt.bytes()
    }
}

struct SingleBlock {
    modulation: Linear,
    linear1: Linear,
    linear2: Linear,
    norm_q: Tensor,
    norm_k: Tensor,
}

impl SingleBlock {
    fn load(w: &Weights, n: i64, h: i64) -> Result<Self> {
        let p = format!("single_blocks.{n}");
        Ok(Self {
            modulation: w.linear(&format!("{p}.modulation.lin"), (3 * h, h))?,
            linear1: w.linear(&format!("{p}.linear1"), (7 * h, h))?,
            linear2: w.linear(&format!("{p}.linear2"), (h, 5 * h))?,
            norm_q: norm_gain(w, &format!("{p}.norm.query_norm"))?,
            norm_k: norm_gain(w, &format!("{p}.norm.key_norm"))?,
        })
    }

    fn forward(&self, x: &Tensor, vec: &Tensor, freqs: &Tensor, heads: i64) -> Result<Tensor> {
        let m = modulation(&self.modulation, vec, 3)?;
        let h = x.size()[2];
        let fused = self.linear1.forward(&modulate(x, &m[0], &m[1]))?;
        let qkv = fused.narrow(2, 0, 3 * h);
        let mlp = fused.narrow(2, 3 * h, fused.size()[2] - 3 * h);
        let (q, k, v) = split_qkv(&qkv, heads, &self.norm_q, &self.norm_k);
        let attn = rope_attention(&q, &k, &v, freqs);
        let out = self
            .linear2
            .forward(&Tensor::cat(&[attn, mlp.gelu("tanh")], 2))?;
        Ok(x + &m[2] * out)
    }
}

impl Movable for SingleBlock {
    fn moved(&self, device: Device) -> Self {
        Self {
            modulation: self.modulation.moved(device),
            linear1: self.linear1.moved(device),
            linear2: self.linear2.moved(device),
            norm_q: self.norm_q.moved(device),
            norm_k: self.norm_k.moved(device),
        }
    }

    fn bytes(&self) -> u64 {
        let linears = [&self.modulation, &self.linear1, &self.linear2];
        linears.iter().map(|l| l.bytes()).sum::<u64>() + self.norm_q.bytes() + self.norm_k.bytes()
    }
}

/// How Kontext's reference latents are placed (ComfyUI's `reference_latents_method`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReferenceMethod {
    /// At index 1, each beside or below the earlier ones (FLUX.1's default).
    #[default]
    Offset,
    /// Each at the next index, all from the origin.
    Index,
    /// At index 0, diagonally past the image and the earlier references (UNO / USO).
    Uxo,
}

impl ReferenceMethod {
    /// From the code [`REFERENCE_METHODS`] gives FluxKontextMultiReferenceLatentMethod's
    /// choice (its `index_timestep_zero` is not supported yet).
    pub fn from_code(code: i64) -> Result<Self> {
        match REFERENCE_METHODS.get(code as usize).copied() {
            Some("offset") => Ok(Self::Offset),
            Some("index") => Ok(Self::Index),
            Some("uxo/uno") => Ok(Self::Uxo),
            Some(other) => bail!("reference latents method {other} is not supported yet"),
            None => bail!("unknown reference latents method {code}"),
        }
    }
}

/// FluxKontextMultiReferenceLatentMethod's choices, in order (their index is the code the
/// conditioning carries).
pub const REFERENCE_METHODS: [&str; 4] = ["offset", "index", "uxo/uno", "index_timestep_zero"];

/// What a FLUX forward takes besides the latent, timestep and text.
#[derive(Default)]
pub struct FluxInputs<'a> {
    /// CLIP-L's pooled output `[b, vec_in]`.
    pub y: Option<&'a Tensor>,
    /// The distilled guidance `[b]` (dev).
    pub guidance: Option<&'a Tensor>,
    pub rope: RopeOptions,
    /// Kontext's reference latents, normalized, each `[b, c, h, w]`.
    pub references: &'a [Tensor],
    pub reference_method: ReferenceMethod,
}

/// A grid of image tokens and where its positions start (in patches).
#[derive(Clone, Copy, Debug)]
struct TokenGrid {
    index: i64,
    row_offset: i64,
    col_offset: i64,
    h: i64,
    w: i64,
}

/// Where each reference latent's tokens sit, as ComfyUI's `Flux._forward` places them (sizes
/// in latent cells, offsets rounded to patches); `grid`: the image's patch grid.
fn reference_grids(
    references: &[Tensor],
    method: ReferenceMethod,
    grid: (i64, i64),
) -> Result<Vec<TokenGrid>> {
    let to_patches = |cells: i64| (cells + PATCH / 2) / PATCH;
    let (mut h, mut w, mut index) = (0, 0, 0);
    references
        .iter()
        .map(|reference| {
            let (_, _, rh, rw) = reference.size4()?;
            let (row, col) = match method {
                ReferenceMethod::Index => {
                    index += 1;
                    (0, 0)
                }
                ReferenceMethod::Uxo => {
                    index = 0;
                    let offsets = (grid.0 * PATCH + h, grid.1 * PATCH + w);
                    h += rh;
                    w += rw;
                    offsets
                }
                ReferenceMethod::Offset => {
                    index = 1;
                    let offsets = if rh + h > rw + w { (0, w) } else { (h, 0) };
                    h = h.max(rh + offsets.0);
                    w = w.max(rw + offsets.1);
                    offsets
                }
            };
            Ok(TokenGrid {
                index,
                row_offset: to_patches(row),
                col_offset: to_patches(col),
                h: 0,
                w: 0,
            })
        })
        .collect()
}

pub struct FluxModel {
    img_in: Linear,
    txt_in: Linear,
    time_in: Embedder,
    vector_in: Option<Embedder>,
    guidance_in: Option<Embedder>,
    /// Under `--lowvram` the blocks that do not fit (in use order) are streamed from pinned
    /// host memory.
    double: Vec<Streamed<DoubleBlock>>,
    single: Vec<Streamed<SingleBlock>>,
    final_modulation: Linear,
    final_linear: Linear,
    config: FluxConfig,
    dtype: Kind,
}

/// BFL's `timestep_embedding`: LDM's features of `t·1000`.
fn timestep_embedding(t: &Tensor) -> Tensor {
    layers::timestep_embedding(&(t.to_kind(Kind::Float) * 1000.0), FREQ_DIM)
}

impl FluxModel {
    pub fn load(w: &Weights, config: FluxConfig) -> Result<Self> {
        let c = &config;
        let h = c.hidden;
        let patch_dim = c.in_channels * PATCH * PATCH;
        let optional = |name: &str, input: i64| -> Result<Option<Embedder>> {
            if w.has(&format!("{name}.in_layer.weight")) {
                Ok(Some(Embedder::load(w, name, input, h)?))
            } else {
                Ok(None)
            }
        };
        let mut placer = w.placement.placer();
        let double = (0..c.depth)
            .map(|n| {
                let p = format!("double_blocks.{n}");
                Ok(placer.place(DoubleBlock {
                    img: Stream::load(w, &format!("{p}.img"), h)?,
                    txt: Stream::load(w, &format!("{p}.txt"), h)?,
                }))
            })
            .collect::<Result<_>>()?;
        let single = (0..c.depth_single)
            .map(|n| Ok(placer.place(SingleBlock::load(w, n, h)?)))
            .collect::<Result<_>>()?;
        let model = Self {
            img_in: w.linear("img_in", (h, patch_dim))?,
            txt_in: w.linear("txt_in", (h, c.context_in))?,
            time_in: Embedder::load(w, "time_in", FREQ_DIM, h)?,
            vector_in: match c.vec_in {
                Some(v) => optional("vector_in", v)?,
                None => None,
            },
            guidance_in: if c.guidance_embed {
                optional("guidance_in", FREQ_DIM)?
            } else {
                None
            },
            double,
            single,
            final_modulation: w.linear("final_layer.adaLN_modulation.1", (2 * h, h))?,
            final_linear: w.linear("final_layer.linear", (OUT_CHANNELS * PATCH * PATCH, h))?,
            dtype: w.dtype,
            config,
        };
        log_partial_load("FLUX", model.resident_blocks(), "blocks", w.device);
        Ok(model)
    }

    /// (resident, all) blocks: the rest are streamed under `--lowvram`.
    pub fn resident_blocks(&self) -> (usize, usize) {
        let resident = resident_count(&self.double) + resident_count(&self.single);
        (resident, self.double.len() + self.single.len())
    }

    /// Rotations for `txt_len` text tokens at position 0 followed by each token grid at its
    /// (index, row offset, column offset), where ScaleROPE's `options` space and shift it:
    /// `[1, txt_len + Σ h·w, 1, head_dim/2]` complex.
    fn rope(
        &self,
        txt_len: i64,
        grids: &[TokenGrid],
        device: Device,
        options: &RopeOptions,
    ) -> Tensor {
        let zeros = |n: i64| Tensor::zeros([n], (Kind::Float, Device::Cpu));
        let mut axes = [
            vec![zeros(txt_len)],
            vec![zeros(txt_len)],
            vec![zeros(txt_len)],
        ];
        for g in grids {
            let rows = options
                .positions(1, g.row_offset as f64, g.h, Kind::Float)
                .view([g.h, 1])
                .expand([g.h, g.w], false)
                .reshape([-1]);
            let cols = options
                .positions(2, g.col_offset as f64, g.w, Kind::Float)
                .view([1, g.w])
                .expand([g.h, g.w], false)
                .reshape([-1]);
            axes[0].push(zeros(g.h * g.w) + (g.index as f64 + options.shift[0]));
            axes[1].push(rows);
            axes[2].push(cols);
        }
        let parts: Vec<Tensor> = axes
            .iter()
            .zip(&self.config.axes)
            .map(|(pos, d)| rope_axis(&Tensor::cat(pos, 0), *d, THETA))
            .collect();
        let head_half: i64 = self.config.axes.iter().sum::<i64>() / 2;
        let tokens = txt_len + grids.iter().map(|g| g.h * g.w).sum::<i64>();
        Tensor::cat(&parts, 1)
            .view([1, tokens, 1, head_half])
            .to_device(device)
    }

    /// Latents `[b, c, H, W]` padded to whole patches and packed: `[b, h·w, c·4]`, (h, w).
    fn pack(&self, x: &Tensor) -> (Tensor, i64, i64) {
        let (b, c, height, width) = x.size4().expect("[b, c, H, W]");
        let pad_h = (PATCH - height % PATCH) % PATCH;
        let pad_w = (PATCH - width % PATCH) % PATCH;
        let x = x.to_kind(self.dtype);
        let x = if pad_h + pad_w > 0 {
            x.pad([0, pad_w, 0, pad_h], "circular", None)
        } else {
            x
        };
        let (gh, gw) = ((height + pad_h) / PATCH, (width + pad_w) / PATCH);
        let packed = x
            .view([b, c, gh, PATCH, gw, PATCH])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([b, gh * gw, c * PATCH * PATCH]);
        (packed, gh, gw)
    }

    /// The flow prediction for latents `x` `[b, c, H, W]` at `timestep` (σ, `[b]`), T5 states
    /// `context` `[b, n, context_in]`, CLIP-L pooled `y` `[b, vec_in]` and the distilled
    /// `guidance` `[b]` (dev). Computed in the model's dtype; returns `[b, c, H, W]`.
    pub fn forward(
        &self,
        x: &Tensor,
        timestep: &Tensor,
        context: &Tensor,
        y: Option<&Tensor>,
        guidance: Option<&Tensor>,
    ) -> Result<Tensor> {
        let inputs = FluxInputs {
            y,
            guidance,
            ..FluxInputs::default()
        };
        self.forward_with(x, timestep, context, &inputs)
    }

    /// [`forward`](Self::forward) with every input ComfyUI's `Flux` takes: ScaleROPE's options
    /// and Kontext's reference latents, whose tokens follow the image's.
    pub fn forward_with(
        &self,
        x: &Tensor,
        timestep: &Tensor,
        context: &Tensor,
        inputs: &FluxInputs,
    ) -> Result<Tensor> {
        let (y, guidance, rope) = (inputs.y, inputs.guidance, &inputs.rope);
        let (b, _, height, width) = x.size4()?;
        let (img, gh, gw) = self.pack(x);
        let mut grids = vec![TokenGrid {
            index: 0,
            row_offset: 0,
            col_offset: 0,
            h: gh,
            w: gw,
        }];
        let mut packed = vec![img];
        for (reference, grid) in inputs.references.iter().zip(reference_grids(
            inputs.references,
            inputs.reference_method,
            (gh, gw),
        )?) {
            let (tokens, rh, rw) = self.pack(reference);
            grids.push(TokenGrid {
                h: rh,
                w: rw,
                ..grid
            });
            packed.push(tokens);
        }
        let mut img = self.img_in.forward(&Tensor::cat(&packed, 1))?;

        let mut vec = self
            .time_in
            .forward(&timestep_embedding(timestep).to_kind(self.dtype))?;
        if let Some(embed) = &self.guidance_in {
            let g = guidance.context("this FLUX model needs a guidance value")?;
            vec += embed.forward(&timestep_embedding(g).to_kind(self.dtype))?;
        }
        if let Some(embed) = &self.vector_in {
            let y = y.context("this FLUX model needs CLIP-L's pooled output")?;
            let width = self.config.vec_in.unwrap_or(y.size()[1]);
            vec += embed.forward(&y.narrow(1, 0, width).to_kind(self.dtype))?;
        }
        let mut txt = self.txt_in.forward(&context.to_kind(self.dtype))?;
        let txt_len = txt.size()[1];
        let freqs = self.rope(txt_len, &grids, x.device(), rope);

        let heads = self.config.heads;
        for block in in_order(&self.double) {
            (img, txt) = block.forward(&img, &txt, &vec, &freqs, heads)?;
        }
        let mut joint = Tensor::cat(&[&txt, &img], 1);
        for block in in_order(&self.single) {
            joint = block.forward(&joint, &vec, &freqs, heads)?;
        }
        let img = joint.narrow(1, txt_len, gh * gw);

        let m = self.final_modulation.forward(&vec.silu())?.chunk(2, 1);
        let img = modulate(&img, &m[0].unsqueeze(1), &m[1].unsqueeze(1));
        let out = self.final_linear.forward(&img)?;
        // The output has the latent's channels (the input may carry concat channels too).
        let out_channels = out.size()[2] / (PATCH * PATCH);
        let out = out
            .view([b, gh, gw, out_channels, PATCH, PATCH])
            .permute([0, 3, 1, 4, 2, 5])
            .reshape([b, out_channels, gh * PATCH, gw * PATCH]);
        Ok(out.narrow(2, 0, height).narrow(3, 0, width))
    }
}
