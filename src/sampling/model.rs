//! The MODEL, CONDITIONING and LATENT values the sampling nodes pass around.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Result;
use tch::Tensor;

use super::latent_format::LatentFormat;
use super::model_sampling::ModelSampling;
use super::post_cfg::{CfgFunction, PostCfg, UncondSkip};
use super::pre_cfg::PreCfg;
use super::sampler_options::SamplerOptions;
use super::step_cache::{CacheKind, EntryKey, StepCache};
use crate::engine::value::SharedTensor;

/// A diffusion network: `(xc, timestep, conditioning) → raw output` (eps, v or flow velocity).
pub trait DiffusionNet: Send + Sync {
    fn forward(&self, xc: &Tensor, timestep: &Tensor, cond: &CondEntry) -> Result<Tensor>;
    /// Latent channels the network expects (for `fix_empty_latent_channels`): its format's,
    /// else 4 like ComfyUI's base `LatentFormat`.
    fn latent_channels(&self) -> i64 {
        self.latent_format().map_or(4, |f| f.channels)
    }

    /// How the family's VAE latents map to the network's space (`process_latent_in/out`).
    fn latent_format(&self) -> Option<&LatentFormat> {
        None
    }

    /// The family's linear latent → RGB map for cheap previews, if it has one.
    fn latent_rgb(&self) -> Option<LatentRgb> {
        self.latent_format().and_then(|f| f.rgb.clone())
    }

    /// Where sampling runs (the network's compute device).
    fn device(&self) -> tch::Device {
        tch::Device::Cpu
    }

    /// The same network with a LoRA file merged at `strength` (LoraLoaderModelOnly), for
    /// families that take LoRAs.
    fn with_lora(&self, _path: &std::path::Path, _strength: f64) -> Option<Arc<dyn DiffusionNet>> {
        None
    }

    /// ComfyUI's `extra_conds` work that needs the sampler's seed, done once per sampling run
    /// on each entry (SDXL's unCLIP pooled vector).
    fn prepare_entry(&self, _entry: &mut CondEntry, _seed: u64) {}

    /// Whether the network's conditioning depends on the prompt being the negative one (the
    /// SDXL refiner's aesthetic score): entries then carry `prompt_negative` (`[1]`, 0 or 1).
    fn uses_prompt_type(&self) -> bool {
        false
    }

    /// Whether the kept region of an inpainting mask is fed as the clean latent rather than
    /// re-noised each step (ComfyUI's `scale_latent_inpaint` returning the latent: Wan 2.2).
    fn keeps_clean_latent(&self) -> bool {
        false
    }

    /// What the network does with the double blocks a conditioning entry lists under
    /// [`SKIP_DOUBLE_BLOCKS`] (ComfyUI's `dit` / `double_block` patch that returns its input).
    fn block_skip(&self) -> BlockSkip {
        BlockSkip::NotYet
    }

    /// The network with ScaleROPE's options; `None` for networks without rotary positions,
    /// which ignore them as ComfyUI's do.
    fn with_rope_options(
        &self,
        _options: crate::models::rope::RopeOptions,
    ) -> Option<Arc<dyn DiffusionNet>> {
        None
    }

    /// The network reading a latent packed from parts of these shapes (ComfyUI's
    /// `latent_shapes`: LTX-2's video and audio); `None` for networks that take one latent.
    fn with_latent_shapes(&self, _shapes: &[Vec<i64>]) -> Option<Arc<dyn DiffusionNet>> {
        None
    }

    /// The network's causal key/value cache, for autoregressive video models.
    fn causal(&self) -> Option<&dyn super::ar_video::CausalNet> {
        None
    }

    /// The network as its own type, for model patches that only one family takes.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

/// How a network meets SkipLayerGuidanceDiT's block patches.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BlockSkip {
    /// It skips the listed double blocks.
    Skips,
    /// ComfyUI's version of it has no `dit` block patches (a UNet), so they change nothing.
    Ignores,
    /// ComfyUI's version skips blocks and this one cannot yet.
    NotYet,
}

/// The extra key of the double-block indices a model call skips (SkipLayerGuidanceDiT), `[n]`
/// int64.
pub const SKIP_DOUBLE_BLOCKS: &str = "skip_double_blocks";

/// The extra of FluxKontextMultiReferenceLatentMethod's choice (its index in
/// `models::flux::dit::REFERENCE_METHODS`), `[1]` int64.
pub const REFERENCE_METHOD_KEY: &str = "reference_latents_method";

/// unCLIPConditioning's image embeddings `[k, D]` (every image of every node, in order) and
/// their `(strength, noise_augmentation)` rows `[k, 2]`; networks that read them turn them into
/// conditioning when a sampling run starts (`DiffusionNet::prepare_entry`), the rest drop them.
pub const UNCLIP_EMBEDS: &str = "unclip_embeds";
pub const UNCLIP_PARAMS: &str = "unclip_params";

/// The extra of ReferenceLatent's `i`-th latent (ComfyUI's `reference_latents` list; models
/// that read one take the last, kept as `reference_latent` too).
pub fn reference_latent_key(i: usize) -> String {
    format!("reference_latents.{i}")
}

/// Extras that are settings rather than data (Fun Control's mask position, VACE strengths, the
/// skipped blocks, the reference method, LTX guides' positions): they stay on the host when the conditioning moves to
/// the device.
pub const HOST_EXTRAS: [&str; 12] = [
    "concat_mask_index",
    UNCLIP_PARAMS,
    "vace_strength",
    SKIP_DOUBLE_BLOCKS,
    REFERENCE_METHOD_KEY,
    "pose_strength",
    "reference_strength",
    CONTEXT_WINDOW_KEY,
    "fps",
    "audio_inject_scale",
    "ref_mask_flag",
    KEYFRAME_IDXS,
];

/// Marks the entries of a context window's model call (see `sampling::context_windows`).
pub const CONTEXT_WINDOW_KEY: &str = "context_window";

/// ComfyUI's `latent_rgb_factors` (one RGB row per latent channel) and optional bias.
#[derive(Clone)]
pub struct LatentRgb {
    pub factors: Vec<[f64; 3]>,
    pub bias: [f64; 3],
}

impl LatentRgb {
    /// The first item's (first frame's) preview image `[H, W, 3]` in 0..1, as ComfyUI's
    /// Latent2RGB previewer computes it.
    pub fn preview(&self, x0: &Tensor) -> Tensor {
        let first = x0
            .get(0)
            .to_kind(tch::Kind::Float)
            .to_device(tch::Device::Cpu);
        let first = if first.dim() == 4 {
            first.select(1, 0)
        } else {
            first
        };
        let flat: Vec<f32> = self
            .factors
            .iter()
            .flat_map(|r| r.iter().map(|v| *v as f32))
            .collect();
        let factors = Tensor::from_slice(&flat).view([self.factors.len() as i64, 3]);
        let bias = Tensor::from_slice(&self.bias.map(|v| v as f32));
        let rgb = first.permute([1, 2, 0]).matmul(&factors) + bias;
        ((rgb + 1.0) / 2.0).clamp(0.0, 1.0)
    }
}

/// ComfyUI's MODEL: a network plus how its noise levels map to timesteps. Nodes like
/// ModelSamplingSD3 return a copy with other sampling, sharing the network.
#[derive(Clone)]
pub struct Model {
    pub net: Arc<dyn DiffusionNet>,
    pub sampling: Arc<ModelSampling>,
    /// ComfyUI's `sampler_pre_cfg_function`s, in the order the patch nodes added them.
    pub pre_cfg: Vec<PreCfg>,
    /// ComfyUI's `sampler_post_cfg_function`s, in the order the patch nodes added them.
    pub post_cfg: Vec<PostCfg>,
    /// SkipLayerGuidanceDiTSimple's `sampler_calc_cond_batch_function`: the unconditional
    /// estimate with blocks skipped.
    pub uncond_skip: Option<UncondSkip>,
    /// The `sampler_cfg_function` (CFGNorm's pre-CFG form, RescaleCFG).
    pub cfg_function: Option<CfgFunction>,
    /// EasyCache or LazyCache: model calls skipped while the output is predictable.
    pub step_cache: Option<Arc<StepCache>>,
    /// CFGOverride's sigma ranges, in the order the nodes added them.
    pub cfg_overrides: Vec<CfgOverride>,
    /// InfiniteTalk's wrappers around the model call and the sampling.
    pub fixed_start: Option<FixedStart>,
    /// ARVideoI2V's start image latent (VAE space), which the AR sampler caches first.
    pub ar_initial: Option<Arc<SharedTensor>>,
    /// DifferentialDiffusion's `denoise_mask_function`: its strength.
    pub differential: Option<f64>,
    /// ContextWindowsManual's handler: model calls on long latents run window by window.
    pub context_windows: Option<Arc<super::context_windows::ContextWindows>>,
    /// The safetensors metadata of the last LoRA loaded onto it (ComfyUI's `lora_metadata`
    /// attachment), which GetICLoRAParameters reads.
    pub lora_metadata: Option<Arc<BTreeMap<String, String>>>,
}

/// CFGOverride: a CFG guider's scale replaced by `cfg` while the sigma lies in
/// `[sigma_lo, sigma_hi]`.
#[derive(Clone, Debug, PartialEq)]
pub struct CfgOverride {
    pub cfg: f64,
    pub sigma_hi: f64,
    pub sigma_lo: f64,
}

/// InfiniteTalk's sampling wrappers: every model input starts with the clean `latent`'s frames
/// (`MultiTalkApplyModelWrapper`, which also makes the denoised estimate of those frames from
/// them), and when a video is being extended, the sampled latent's first frames are replaced by
/// them (`InfiniteTalkOuterSampleWrapper`).
#[derive(Clone)]
pub struct FixedStart {
    /// The motion frames' latent as the VAE gives it, `[1, channels, frames, h, w]`.
    pub latent: Arc<SharedTensor>,
    pub replaces_output: bool,
}

impl FixedStart {
    /// `x` with its first frames set to the latent, in the network's space.
    fn applied(&self, x: &Tensor, format: Option<&LatentFormat>) -> Tensor {
        let latent = self.latent.to_device(x.device()).to_kind(x.kind());
        let latent = format.map_or(latent.shallow_clone(), |f| f.process_in(&latent));
        let frames = latent.size()[2].min(x.size()[2]);
        let x = x.copy();
        x.narrow(2, 0, frames).copy_(&latent.narrow(2, 0, frames));
        x
    }

    /// The sampled latent (VAE space) with its first frames replaced, when extending.
    pub fn output(&self, samples: Tensor) -> Tensor {
        if !self.replaces_output {
            return samples;
        }
        let latent = self
            .latent
            .to_device(samples.device())
            .to_kind(samples.kind());
        let frames = latent.size()[2].min(samples.size()[2]);
        let latent = latent
            .narrow(2, 0, frames)
            .expand([samples.size()[0], -1, -1, -1, -1], false);
        let rest = samples.narrow(2, frames, samples.size()[2] - frames);
        Tensor::cat(&[latent, rest], 2)
    }
}

impl Model {
    pub fn new(net: Arc<dyn DiffusionNet>, sampling: Arc<ModelSampling>) -> Self {
        Model {
            net,
            sampling,
            pre_cfg: Vec::new(),
            post_cfg: Vec::new(),
            uncond_skip: None,
            cfg_function: None,
            step_cache: None,
            cfg_overrides: Vec::new(),
            fixed_start: None,
            ar_initial: None,
            differential: None,
            context_windows: None,
            lora_metadata: None,
        }
    }

    /// The CFG scale at `sigma`: `cfg`, or the override whose range holds it. ComfyUI's
    /// overrides wrap the guider in the order they were added, so where ranges overlap the last
    /// one (the node nearest the sampler) wins.
    pub fn cfg_at(&self, sigma: f64, cfg: f64) -> f64 {
        self.cfg_overrides
            .iter()
            .rfind(|o| o.sigma_lo <= sigma && sigma <= o.sigma_hi)
            .map_or(cfg, |o| o.cfg)
    }

    /// The denoised estimate for `x` at `sigma` under one conditioning (`BaseModel.apply_model`).
    pub fn apply(&self, x: &Tensor, sigma: f64, cond: &CondEntry) -> Result<Tensor> {
        self.apply_entries(x, sigma, cond, &[])
    }

    /// [`Model::apply`] for a batch made of the conditioning entries `keys`, one equal chunk
    /// each, which EasyCache tells apart.
    pub fn apply_entries(
        &self,
        x: &Tensor,
        sigma: f64,
        cond: &CondEntry,
        keys: &[EntryKey],
    ) -> Result<Tensor> {
        let fixed;
        let x = match &self.fixed_start {
            Some(start) => {
                fixed = start.applied(x, self.net.latent_format());
                &fixed
            }
            None => x,
        };
        let batch = x.size()[0];
        let sigma_t = Tensor::full([batch], sigma, (x.kind(), x.device()));
        let xc = self.sampling.calculate_input(&sigma_t, x);
        let t = Tensor::full(
            [batch],
            self.sampling.timestep(sigma),
            (tch::Kind::Float, x.device()),
        );
        let forward = || self.net.forward(&xc, &t, cond);
        let out = match &self.step_cache {
            Some(cache) if cache.kind == CacheKind::Easy => {
                let channels = self.net.latent_channels().min(xc.size()[1]);
                cache.easy_forward(&xc.narrow(1, 0, channels), sigma, keys, forward)?
            }
            _ => forward()?,
        }
        .to_kind(x.kind());
        Ok(self.sampling.calculate_denoised(&sigma_t, &out, x))
    }
}

/// The extra of the pixel spans LTXVAddGuide's appended latent frames take in an LTX model's
/// positions, `[b, 3, tokens, 2]` (ComfyUI's `keyframe_idxs`).
pub const KEYFRAME_IDXS: &str = "keyframe_idxs";

/// The extra of an ID-LoRA reference clip's audio tokens `[b, frames, 8·16]` that
/// LTXVReferenceAudio puts on LTX-2 conditioning (ComfyUI's `ref_audio`).
pub const REF_AUDIO: &str = "ref_audio";

/// One guide LTXVAddGuide appended: its token count, its strength in the self-attention, and an
/// optional pixel-space mask `[1, 1, frames, height, width]` over it, with the guide's latent
/// `(frames, height, width)` to bring that mask down to.
#[derive(Clone)]
pub struct GuideAttention {
    pub tokens: i64,
    pub strength: f64,
    pub pixel_mask: Option<Arc<SharedTensor>>,
    pub latent_shape: [i64; 3],
}

/// Guides compare as ComfyUI's constant conditioning does: equal values, the same mask.
impl PartialEq for GuideAttention {
    fn eq(&self, other: &Self) -> bool {
        let same_mask = match (&self.pixel_mask, &other.pixel_mask) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        self.tokens == other.tokens
            && self.strength == other.strength
            && self.latent_shape == other.latent_shape
            && same_mask
    }
}

/// One conditioning entry: the encoder output plus options ComfyUI keeps in its dict.
#[derive(Clone)]
pub struct CondEntry {
    pub context: Arc<SharedTensor>,
    pub pooled: Option<Arc<SharedTensor>>,
    pub strength: f64,
    /// `start_percent`/`end_percent` from ConditioningSetTimestepRange.
    pub start_percent: f64,
    pub end_percent: f64,
    /// The region it applies to (ConditioningSetArea…).
    pub area: Option<Area>,
    /// A weight map over the latent (ConditioningSetMask), `[B, H, W]`.
    pub mask: Option<Arc<SharedTensor>>,
    pub mask_strength: f64,
    /// Whether the area is the mask's bounding box ("mask bounds").
    pub set_area_to_bounds: bool,
    /// The video's frame rate, which LTX models place their positions by (LTXVConditioning).
    pub frame_rate: Option<f64>,
    /// The guides LTXVAddGuide appended to the latent, in order (ComfyUI's
    /// `guide_attention_entries`); their positions are the [`KEYFRAME_IDXS`] extra.
    pub guides: Vec<GuideAttention>,
    /// Model-specific tensors ComfyUI keeps under their own keys (`concat_latent_image`,
    /// `concat_mask`, `clip_vision_output`, and the sampler's `denoise_mask`); batched with the
    /// context when cond and uncond share a call.
    pub extra: BTreeMap<String, Arc<SharedTensor>>,
}

/// ComfyUI's `area` option: sizes then offsets in latent cells (`(h, w, y, x)` for images,
/// earlier dimensions first), or fractions of the latent not yet resolved.
#[derive(Clone, Debug, PartialEq)]
pub enum Area {
    Cells(Vec<i64>),
    Percentage(Vec<f64>),
}

impl CondEntry {
    pub fn new(context: Tensor) -> Self {
        CondEntry {
            context: Arc::new(SharedTensor::new(context)),
            pooled: None,
            strength: 1.0,
            start_percent: 0.0,
            end_percent: 1.0,
            area: None,
            mask: None,
            mask_strength: 1.0,
            set_area_to_bounds: false,
            frame_rate: None,
            guides: Vec::new(),
            extra: BTreeMap::new(),
        }
    }

    pub fn with_extra(mut self, key: &str, value: Tensor) -> Self {
        self.extra
            .insert(key.to_string(), Arc::new(SharedTensor::new(value)));
        self
    }

    pub fn extra(&self, key: &str) -> Option<&Tensor> {
        self.extra.get(key).map(|t| &***t)
    }

    /// The entry with `latent` appended to its reference latents (ComfyUI's
    /// `reference_latents` list), kept as `reference_latent` too: models that read one take
    /// the last.
    pub fn with_reference_latent(self, latent: &Tensor) -> Self {
        let n = (0..)
            .take_while(|k| self.extra.contains_key(&reference_latent_key(*k)))
            .count();
        self.with_extra(&reference_latent_key(n), latent.shallow_clone())
            .with_extra("reference_latent", latent.shallow_clone())
    }

    /// The entry with every tensor on `device`, but the [`HOST_EXTRAS`]: a net reads those
    /// numbers on the host, and reading them from the device would wait for its queued work.
    pub fn on_device(&self, device: tch::Device) -> CondEntry {
        let moved = |t: &Arc<SharedTensor>| Arc::new(SharedTensor::new(t.to_device(device)));
        CondEntry {
            context: moved(&self.context),
            pooled: self.pooled.as_ref().map(moved),
            mask: self.mask.as_ref().map(moved),
            extra: self
                .extra
                .iter()
                .map(|(k, t)| {
                    let kept = if HOST_EXTRAS.contains(&k.as_str()) {
                        t.clone()
                    } else {
                        moved(t)
                    };
                    (k.clone(), kept)
                })
                .collect(),
            ..self.clone()
        }
    }
}

/// ComfyUI's `repeat_to_batch_size`: whole copies along the batch, cut to `batch` items.
pub fn repeat_to_batch(t: &Tensor, batch: i64) -> Tensor {
    let have = t.size()[0];
    if have == batch {
        return t.shallow_clone();
    }
    let mut reps = vec![1i64; t.dim()];
    reps[0] = (batch + have - 1) / have;
    t.repeat(reps.as_slice()).narrow(0, 0, batch)
}

/// ComfyUI's CONDITIONING: a list of entries.
#[derive(Clone)]
pub struct Conditioning(pub Vec<CondEntry>);

/// ComfyUI's LATENT dict: `samples`, optional `batch_index` and `noise_mask`.
#[derive(Clone)]
pub struct Latent {
    pub samples: Arc<SharedTensor>,
    pub batch_index: Option<Vec<i64>>,
    pub noise_mask: Option<Arc<SharedTensor>>,
    /// A nested latent (ComfyUI's `NestedTensor`: LTX-2's video and audio), whose first part
    /// `samples` and `noise_mask` also are, as ComfyUI's nested `shape` is its first part's.
    pub nested: Option<Arc<Nested>>,
}

/// The parts of a nested latent and their noise masks (every part has one, or none has).
pub struct Nested {
    pub parts: Vec<SharedTensor>,
    pub masks: Option<Vec<SharedTensor>>,
}

impl Latent {
    pub fn new(samples: Tensor) -> Self {
        Latent {
            samples: Arc::new(SharedTensor::new(samples)),
            batch_index: None,
            noise_mask: None,
            nested: None,
        }
    }

    /// A nested latent of `parts` (at least one) with their noise masks.
    pub fn nested(parts: Vec<Tensor>, masks: Option<Vec<Tensor>>) -> Self {
        let first = |list: &[Tensor]| Arc::new(SharedTensor::new(list[0].shallow_clone()));
        Latent {
            samples: first(&parts),
            batch_index: None,
            noise_mask: masks.as_deref().map(first),
            nested: Some(Arc::new(Nested {
                parts: parts.into_iter().map(SharedTensor::new).collect(),
                masks: masks.map(|m| m.into_iter().map(SharedTensor::new).collect()),
            })),
        }
    }

    /// The same dict with other `samples`: a plain latent, even where this one is nested.
    pub fn with_samples(&self, samples: Tensor) -> Self {
        Latent {
            samples: Arc::new(SharedTensor::new(samples)),
            nested: None,
            ..self.clone()
        }
    }

    /// The sampler's output: `samples` as [`with_samples`](Self::with_samples), or for a nested
    /// latent its packed parts unpacked, masks kept.
    pub fn with_sampled(&self, samples: Tensor) -> Self {
        match &self.nested {
            Some(nested) => {
                let shapes: Vec<Vec<i64>> = nested.parts.iter().map(|p| p.size()).collect();
                let masks = nested
                    .masks
                    .as_ref()
                    .map(|m| m.iter().map(|t| t.shallow_clone()).collect());
                Latent {
                    batch_index: self.batch_index.clone(),
                    ..Latent::nested(super::nested::unpack(&samples, &shapes), masks)
                }
            }
            None => self.with_samples(samples),
        }
    }
}

/// ComfyUI's SIGMAS.
pub struct Sigmas(pub Vec<f64>);

/// ComfyUI's SAMPLER: a k-diffusion sampler by name with the options a Sampler* node set, or
/// SamplerARVideo's block-by-block loop.
#[derive(Clone, Debug, PartialEq)]
pub enum SamplerChoice {
    KSampler {
        name: String,
        options: Box<SamplerOptions>,
    },
    ArVideo {
        frames_per_block: i64,
    },
}

impl SamplerChoice {
    /// A sampler with its defaults, as KSamplerSelect and KSampler choose it.
    pub fn named(name: impl Into<String>) -> Self {
        SamplerChoice::KSampler {
            name: name.into(),
            options: Box::default(),
        }
    }
}

/// ComfyUI's NOISE: the initial noise, and the seed ancestral steps draw from.
pub enum NoiseSource {
    /// Noise from the seed (RandomNoise, KSampler).
    Seeded(u64),
    /// No initial noise, but seeded steps (KSampler with noise disabled, SamplerCustom).
    ZeroSeeded(u64),
    /// No noise and no seed (DisableNoise).
    Disabled,
}

impl NoiseSource {
    /// The initial noise; for a nested latent every part's in turn from one seed, packed
    /// (ComfyUI's `prepare_noise` then `pack_latents`).
    pub fn generate(&self, latent: &Latent) -> Tensor {
        let shapes: Vec<Vec<i64>> = match &latent.nested {
            Some(nested) => nested.parts.iter().map(|p| p.size()).collect(),
            None => vec![latent.samples.size()],
        };
        let kind = latent.samples.kind();
        let parts = match self {
            NoiseSource::Seeded(seed) => super::noise::initial_noise_parts(
                *seed,
                &shapes,
                kind,
                latent.batch_index.as_deref(),
            ),
            NoiseSource::ZeroSeeded(_) | NoiseSource::Disabled => shapes
                .iter()
                .map(|s| Tensor::zeros(s.as_slice(), (kind, tch::Device::Cpu)))
                .collect(),
        };
        match latent.nested {
            Some(_) => super::nested::pack(&parts),
            None => parts.into_iter().next().expect("one part"),
        }
    }
    pub fn seed(&self) -> Option<u64> {
        match self {
            NoiseSource::Seeded(s) | NoiseSource::ZeroSeeded(s) => Some(*s),
            NoiseSource::Disabled => None,
        }
    }
}
