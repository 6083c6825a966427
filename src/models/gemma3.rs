//! Gemma 3's text decoder as ComfyUI runs it for encoding (`comfy/text_encoders/llama.py`:
//! `Llama2_` with `TransformerBlockGemma2`, `Gemma3_12B_Config`): embeddings scaled by √hidden;
//! per layer a pre- and post-normed attention (grouped-query, RMS-normed queries and keys per head,
//! RoPE θ 1e6 with positions ÷ 8 on every sixth layer, θ 1e4 within a 1024-token sliding window on
//! the others) and a pre- and post-normed GELU(tanh)-gated MLP; RMSNorms scale by `1 + weight`.
//! It returns every hidden state: the embeddings, each layer's input, and the normed output.

use anyhow::{Context, Result};
use tch::{Device, Kind, Tensor};

use super::weights::Weights;
use crate::runtime::attention::grouped_attention;
use crate::runtime::linear::Linear;
use crate::runtime::manager::{in_order, log_partial_load, resident_count, Movable, Streamed};

const NORM_EPS: f64 = 1e-6;
/// Every `GLOBAL_EVERY`-th layer attends globally; the others within `SLIDING_WINDOW` tokens.
const GLOBAL_EVERY: i64 = 6;
const SLIDING_WINDOW: i64 = 1024;
/// (θ, position divisor) of the global and the sliding layers' RoPE.
const GLOBAL_ROPE: (f64, f64) = (1_000_000.0, 8.0);
const LOCAL_ROPE: (f64, f64) = (10_000.0, 1.0);

#[derive(Clone, Debug, PartialEq)]
pub struct Gemma3Config {
    pub layers: i64,
    pub hidden: i64,
    pub heads: i64,
    pub kv_heads: i64,
    pub head_dim: i64,
    pub intermediate: i64,
}

impl Gemma3Config {
    /// From the weights' shapes under `w`'s prefix (`model.…`).
    pub fn from_weights(w: &Weights) -> Result<Self> {
        let shape = |name: &str| -> Result<Vec<i64>> {
            let key = w.key(name);
            let entry = w.file.entry(&key).with_context(|| format!("no {key}"))?;
            Ok(entry.shape.iter().map(|&d| d as i64).collect())
        };
        let head_dim = shape("model.layers.0.self_attn.q_norm.weight")?[0];
        let layers = (0..)
            .take_while(|n| w.has(&format!("model.layers.{n}.input_layernorm.weight")))
            .count() as i64;
        Ok(Self {
            layers,
            hidden: shape("model.embed_tokens.weight")?[1],
            heads: shape("model.layers.0.self_attn.q_proj.weight")?[0] / head_dim,
            kv_heads: shape("model.layers.0.self_attn.k_proj.weight")?[0] / head_dim,
            head_dim,
            intermediate: shape("model.layers.0.mlp.gate_proj.weight")?[0],
        })
    }
}

/// Gemma's RMSNorm: `x · rsqrt(mean(x²) + ε) · (1 + weight)`, the weight kept as `1 + weight`.
struct Norm(Tensor);

impl Norm {
    fn load(w: &Weights, name: &str) -> Result<Self> {
        Ok(Self(w.tensor(&format!("{name}.weight"))? + 1.0))
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let dim = x.size()[x.dim() - 1];
        x.rms_norm([dim], Some(&self.0), NORM_EPS)
    }
}

impl Movable for Norm {
    fn moved(&self, device: Device) -> Self {
        Self(self.0.moved(device))
    }

    fn bytes(&self) -> u64 {
        self.0.bytes()
    }
}

struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: Norm,
    k_norm: Norm,
    gate: Linear,
    up: Linear,
    down: Linear,
    input_norm: Norm,
    post_attention_norm: Norm,
    pre_feedforward_norm: Norm,
    post_feedforward_norm: Norm,
}

impl Layer {
    fn load(w: &Weights, n: i64, c: &Gemma3Config) -> Result<Self> {
        let p = format!("model.layers.{n}");
        let linear = |name: &str, shape| w.linear(&format!("{p}.{name}"), shape);
        let norm = |name: &str| Norm::load(w, &format!("{p}.{name}"));
        let (q, kv) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
        Ok(Self {
            q: linear("self_attn.q_proj", (q, c.hidden))?,
            k: linear("self_attn.k_proj", (kv, c.hidden))?,
            v: linear("self_attn.v_proj", (kv, c.hidden))?,
            o: linear("self_attn.o_proj", (c.hidden, q))?,
            q_norm: norm("self_attn.q_norm")?,
            k_norm: norm("self_attn.k_norm")?,
            gate: linear("mlp.gate_proj", (c.intermediate, c.hidden))?,
            up: linear("mlp.up_proj", (c.intermediate, c.hidden))?,
            down: linear("mlp.down_proj", (c.hidden, c.intermediate))?,
            input_norm: norm("input_layernorm")?,
            post_attention_norm: norm("post_attention_layernorm")?,
            pre_feedforward_norm: norm("pre_feedforward_layernorm")?,
            post_feedforward_norm: norm("post_feedforward_layernorm")?,
        })
    }

    /// The layer over `x` `[b, t, hidden]`. With a cache, the new keys and values are stored
    /// after the cached ones and the queries attend to all of them; a single query on a
    /// sliding layer sees only the last `window` keys.
    fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        mask: Option<&Tensor>,
        c: &Gemma3Config,
        cached: Option<(&mut LayerCache, Option<i64>)>,
    ) -> Result<Tensor> {
        let (b, t, _) = x.size3()?;
        let h = self.input_norm.forward(x);
        let heads = |y: Tensor, n: i64| y.view([b, t, n, c.head_dim]);
        let q = rope.apply(&self.q_norm.forward(&heads(self.q.forward(&h)?, c.heads)));
        let mut k = rope.apply(&self.k_norm.forward(&heads(self.k.forward(&h)?, c.kv_heads)));
        let mut v = heads(self.v.forward(&h)?, c.kv_heads);
        if let Some((cache, window)) = cached {
            (k, v) = cache.append(&k, &v);
            let keys = k.size()[1];
            if let Some(window) = window.filter(|&w| t == 1 && keys > w) {
                k = k.narrow(1, keys - window, window);
                v = v.narrow(1, keys - window, window);
            }
        }
        let attended = grouped_attention(&q, &k, &v, mask);
        let x = x + self
            .post_attention_norm
            .forward(&self.o.forward(&attended)?);
        let h = self.pre_feedforward_norm.forward(&x);
        let gated = self.gate.forward(&h)?.gelu("tanh") * self.up.forward(&h)?;
        Ok(&x
            + self
                .post_feedforward_norm
                .forward(&self.down.forward(&gated)?))
    }
}

impl Movable for Layer {
    fn moved(&self, device: Device) -> Self {
        Self {
            q: self.q.moved(device),
            k: self.k.moved(device),
            v: self.v.moved(device),
            o: self.o.moved(device),
            q_norm: self.q_norm.moved(device),
            k_norm: self.k_norm.moved(device),
            gate: self.gate.moved(device),
            up: self.up.moved(device),
            down: self.down.moved(device),
            input_norm: self.input_norm.moved(device),
            post_attention_norm: self.post_attention_norm.moved(device),
            pre_feedforward_norm: self.pre_feedforward_norm.moved(device),
            post_feedforward_norm: self.post_feedforward_norm.moved(device),
        }
    }

    fn bytes(&self) -> u64 {
        let linears = [
            &self.q, &self.k, &self.v, &self.o, &self.gate, &self.up, &self.down,
        ];
        let norms = [
            &self.q_norm,
            &self.k_norm,
            &self.input_norm,
            &self.post_attention_norm,
            &self.pre_feedforward_norm,
            &self.post_feedforward_norm,
        ];
        linears.iter().map(|l| l.bytes()).sum::<u64>()
            + norms.iter().map(|n| n.bytes()).sum::<u64>()
    }
}

/// One layer's keys and values so far, `[b, capacity, kv_heads, head_dim]`, filled to `len`.
struct LayerCache {
    keys: Tensor,
    values: Tensor,
    len: i64,
}

impl LayerCache {
    /// Stores `k`, `v` `[b, t, kv_heads, head_dim]` after the cached tokens and gives every
    /// cached key and value.
    fn append(&mut self, k: &Tensor, v: &Tensor) -> (Tensor, Tensor) {
        let t = k.size()[1];
        self.keys.narrow(1, self.len, t).copy_(k);
        self.values.narrow(1, self.len, t).copy_(v);
        self.len += t;
        (
            self.keys.narrow(1, 0, self.len),
            self.values.narrow(1, 0, self.len),
        )
    }
}

/// Every layer's keys and values for text generation (ComfyUI's `init_kv_cache`): a prompt
/// is run once, then each new token alone.
pub struct KvCache {
    layers: Vec<LayerCache>,
}

impl KvCache {
    /// Tokens cached so far.
    pub fn len(&self) -> i64 {
        self.layers.first().map_or(0, |l| l.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Rotate-half RoPE tables for positions `start..start + t`: cos and sin `[1, t, 1, head_dim]`
/// in float32.
struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    fn new(
        (start, t): (i64, i64),
        head_dim: i64,
        (theta, divisor): (f64, f64),
        device: Device,
    ) -> Self {
        let float = (Kind::Float, device);
        let exponents = Tensor::arange_start_step(0, head_dim, 2, float) / head_dim as f64;
        let inv_freq = Tensor::from(theta as f32)
            .to_device(device)
            .pow(&exponents)
            .reciprocal()
            / divisor;
        let positions = Tensor::arange_start(start, start + t, float);
        let angles = positions.unsqueeze(1) * inv_freq.unsqueeze(0);
        let angles = Tensor::cat(&[&angles, &angles], 1).view([1, t, 1, head_dim]);
        Self {
            cos: angles.cos(),
            sin: angles.sin(),
        }
    }

    /// `x · cos + rotate_half(x) · sin` over `[b, t, heads, head_dim]`, in float32.
    fn apply(&self, x: &Tensor) -> Tensor {
        let half = x.size()[3] / 2;
        let xf = x.to_kind(Kind::Float);
        let rotated = Tensor::cat(&[xf.narrow(3, half, half).neg(), xf.narrow(3, 0, half)], 3);
        (xf * &self.cos + rotated * &self.sin).to_kind(x.kind())
    }
}

pub struct Gemma3Text {
    pub config: Gemma3Config,
    dtype: Kind,
    embed_tokens: Tensor,
    /// Under `--lowvram` the layers that do not fit are streamed from pinned host memory.
    layers: Vec<Streamed<Layer>>,
    norm: Norm,
}

impl Gemma3Text {
    pub fn load(w: &Weights, config: Gemma3Config) -> Result<Self> {
        let mut placer = w.placement.placer();
        let layers: Vec<Streamed<Layer>> = (0..config.layers)
            .map(|n| Ok(placer.place(Layer::load(w, n, &config)?)))
            .collect::<Result<_>>()?;
        log_partial_load(
            "Gemma 3",
            (resident_count(&layers), layers.len()),
            "layers",
            w.device,
        );
        Ok(Self {
            dtype: w.dtype,
            embed_tokens: w.tensor_as("model.embed_tokens.weight", w.linear_dtype)?,
            layers,
            norm: Norm::load(w, "model.norm")?,
            config,
        })
    }

    /// Every hidden state for token ids `[b, t]`, `layers + 1` of `[b, t, hidden]`: the scaled
    /// embeddings, the input of each later layer, and the last layer's output normed.
    pub fn hidden_states(&self, ids: &Tensor) -> Result<Vec<Tensor>> {
        let x = self.embed(ids, self.dtype);
        let mut states = Vec::with_capacity(self.layers.len() + 1);
        let last = self.run_layers(x, None, |x| states.push(x.shallow_clone()))?;
        states.push(last);
        Ok(states)
    }

    /// The token embeddings `[b, t, hidden]` looked up and scaled by √hidden in `kind`, then
    /// in the compute dtype. ComfyUI scales a prompt's embeddings in float32 and each generated
    /// token's in the table's dtype.
    pub fn embed(&self, ids: &Tensor, kind: Kind) -> Tensor {
        let hidden = self.config.hidden;
        let ids = ids.to_device(self.embed_tokens.device());
        let (b, t) = ids.size2().expect("token ids are [batch, tokens]");
        let rows = self
            .embed_tokens
            .index_select(0, &ids.reshape([-1]))
            .view([b, t, hidden]);
        (rows.to_kind(kind) * (hidden as f64).sqrt()).to_kind(self.dtype)
    }

    /// The embedding table's dtype.
    pub fn embedding_kind(&self) -> Kind {
        self.embed_tokens.kind()
    }

    /// The compute dtype, which generation runs in.
    pub fn dtype(&self) -> Kind {
        self.dtype
    }

    /// An empty cache for `batch` sequences of up to `capacity` tokens.
    pub fn kv_cache(&self, batch: i64, capacity: i64) -> KvCache {
        let c = &self.config;
        let options = (self.dtype, self.embed_tokens.device());
        let empty = || Tensor::zeros([batch, capacity, c.kv_heads, c.head_dim], options);
        KvCache {
            layers: (0..c.layers)
                .map(|_| LayerCache {
                    keys: empty(),
                    values: empty(),
                    len: 0,
                })
                .collect(),
        }
    }

    /// The normed last states `[b, t, hidden]` of embeddings `x` that follow the cached tokens,
    /// which join the cache. A prompt (an empty cache) attends causally; after it, one token
    /// at a time.
    pub fn forward_cached(&self, x: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let t = x.size()[1];
        if !cache.is_empty() && t != 1 {
            anyhow::bail!("after the prompt, Gemma 3 takes one token at a time");
        }
        self.run_layers(x.shallow_clone(), Some(cache), |_| {})
    }

    /// The vocabulary's logits `[b, vocab]` of the last state of `x`, through the tied
    /// embedding table in `x`'s dtype.
    pub fn logits(&self, x: &Tensor) -> Tensor {
        let last = x.select(1, x.size()[1] - 1);
        last.matmul(&self.embed_tokens.to_kind(x.kind()).tr())
    }

    /// Every layer over `x`, `each` seeing each layer's input, then the final norm. With a
    /// cache the positions continue after its tokens.
    fn run_layers(
        &self,
        mut x: Tensor,
        mut cache: Option<&mut KvCache>,
        mut each: impl FnMut(&Tensor),
    ) -> Result<Tensor> {
        let c = &self.config;
        let device = x.device();
        let t = x.size()[1];
        let start = cache.as_ref().map_or(0, |c| c.len());
        let span = (start, t);
        let (global, local) = (
            Rope::new(span, c.head_dim, GLOBAL_ROPE, device),
            Rope::new(span, c.head_dim, LOCAL_ROPE, device),
        );
        // Query i sees keys j ≤ i; within the window, j > i − 1024 too (ComfyUI applies the
        // window only to prompts longer than it). A single new token sees every cached key.
        let masks = (t > 1).then(|| {
            let i = Tensor::arange(t, (Kind::Int64, device)).unsqueeze(1);
            let j = Tensor::arange(t, (Kind::Int64, device)).unsqueeze(0);
            let causal = j.le_tensor(&i);
            let windowed = causal.logical_and(&j.gt_tensor(&(&i - SLIDING_WINDOW)));
            (causal, windowed)
        });
        for (n, layer) in in_order(&self.layers).enumerate() {
            each(&x);
            let is_global = (n as i64 + 1) % GLOBAL_EVERY == 0;
            let (rope, mask, window) = if is_global {
                (&global, masks.as_ref().map(|m| &m.0), None)
            } else {
                (&local, masks.as_ref().map(|m| &m.1), Some(SLIDING_WINDOW))
            };
            let cached = cache.as_mut().map(|c| (&mut c.layers[n], window));
            x = layer.forward(&x, rope, mask, c, cached)?;
        }
        Ok(self.norm.forward(&x))
    }
}
