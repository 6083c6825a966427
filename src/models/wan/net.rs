//! The MODEL a Wan UNETLoader returns: a `DiffusionFile` (file, weight dtype, LoRAs; the DiT is
//! fetched from the `ModelManager` per call) and what ComfyUI's `WAN21`/`WAN22`/`WAN21_Vace`
//! model classes add around the DiT: the concat conditioning (mask + image latents, Fun
//! Control's control latents), CLIP-vision tokens, a reference image's latent, VACE controls,
//! Wan 2.2's per-frame timesteps from the inpainting mask, and S2V's audio, reference, motion
//! and control inputs.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use super::animate::AnimateInputs;
use super::animate2::{PoseCache, PoseInputs};
use super::dancer::DancerInputs;
use super::dit::{CausalCache, Conditions, WanConfig, WanModel};
use super::humo::{self, HumoInputs};
use super::infinite_talk::{TalkInputs, TalkPatchFile};
use super::s2v::SoundInputs;
use super::scail::{ScailInputs, ScailKind};
use crate::engine::value::SharedTensor;
use crate::models::diffusion_file::DiffusionFile;
use crate::models::rope::RopeOptions;
use crate::runtime::manager::Loaded;
use crate::sampling::ar_video::CausalNet;
use crate::sampling::latent_format::{process_in_blocks, LatentFormat};
use crate::sampling::model::{
    reference_latent_key, repeat_to_batch, BlockSkip, CondEntry, DiffusionNet, CONTEXT_WINDOW_KEY,
    SKIP_DOUBLE_BLOCKS,
};
use crate::upscale::common_upscale;

#[derive(Clone)]
pub struct WanNet {
    file: DiffusionFile,
    config: WanConfig,
    format: Arc<LatentFormat>,
    talk: Option<Arc<TalkSettings>>,
    rope: RopeOptions,
    /// Causal Forcing models' autoregressive cache (shared by the model's clones).
    causal: Option<Arc<Mutex<CausalCache>>>,
    /// Wan Animate 2's pose-branch cache (WanAnimate2Cache).
    pose_cache: Option<Arc<Mutex<PoseCache>>>,
}

/// WanInfiniteTalkToVideo's patch on the model: the InfiniteTalk blocks, the audio tokens of
/// the video's latent frames (host), their scale and two speakers' token masks.
pub struct TalkSettings {
    pub patch: Arc<TalkPatchFile>,
    pub audio: SharedTensor,
    pub scale: f64,
    pub speaker_masks: Option<SharedTensor>,
}

impl WanNet {
    /// Fails here (in the loader node) on files that are not Wan.
    pub fn open(file: DiffusionFile) -> Result<Self> {
        let found = &file.detected;
        if !found.architecture.starts_with("WAN") {
            bail!(
                "{} is a {} model, not Wan",
                file.path().display(),
                found.architecture
            );
        }
        let config = WanConfig::from_detected(&found.config)?;
        let format = if found.architecture == "WAN22_T2V" {
            LatentFormat::wan22()
        } else {
            LatentFormat::wan21()
        };
        let causal = (found.architecture == "WAN21_CausalAR_T2V")
            .then(|| Arc::new(Mutex::new(CausalCache::default())));
        Ok(Self {
            file,
            config,
            format: Arc::new(format),
            talk: None,
            rope: RopeOptions::default(),
            causal,
            pose_cache: None,
        })
    }

    /// The model keeping its pose branch's block inputs in `cache` (Wan Animate 2); `None` for
    /// other models.
    pub fn with_pose_cache(&self, cache: PoseCache) -> Option<Self> {
        self.config.animate2.then(|| Self {
            pose_cache: Some(Arc::new(Mutex::new(cache))),
            ..self.clone()
        })
    }

    /// The network with InfiniteTalk's audio cross-attention after every block.
    pub fn with_talk(&self, talk: TalkSettings) -> Self {
        Self {
            talk: Some(Arc::new(talk)),
            ..self.clone()
        }
    }

    /// ComfyUI's model class `WAN22_T2V` (TI2V 5B).
    fn is_wan22(&self) -> bool {
        self.file.detected.architecture == "WAN22_T2V"
    }

    /// ComfyUI's `image_to_video` flag, which only the `WAN21_I2V` class sets.
    fn image_to_video(&self) -> bool {
        matches!(
            self.file.detected.architecture.as_str(),
            "WAN21_I2V" | "WAN_Animate2" | "WAN22_WanDancer"
        )
    }

    fn loaded(&self) -> Result<Arc<Loaded<WanModel>>> {
        self.file.load(|w| WanModel::load(w, self.config.clone()))
    }

    /// `WAN21.concat_cond`: what goes beside the noisy latent on the channel axis, if the
    /// model takes more channels than the latent has.
    fn concat(&self, x: &Tensor, cond: &CondEntry) -> Option<Tensor> {
        let size = x.size();
        let extra = self.config.in_dim - size[1];
        if extra <= 0 {
            return None;
        }
        let (b, t, h, w) = (size[0], size[2], size[3], size[4]);
        if self.config.humo {
            return Some(humo::concat_latent(b, t, h, w, x.device()));
        }
        // SCAIL-2's four extra channels are the history mask alone (1 at kept frames).
        if self.config.scail == Some(ScailKind::Masked) && extra == 4 {
            return Some(kept_mask(cond, b, (t, h, w), x.device()));
        }
        let options = (Kind::Float, x.device());
        let image = match cond.extra("concat_latent_image") {
            None => Tensor::zeros([b, extra, t, h, w], options),
            Some(image) => {
                let image = image.to_device(x.device()).to_kind(Kind::Float);
                let image = upscale_frames(&image, h, w);
                repeat_to_batch(&process_in_blocks(&self.format, &image), b)
            }
        };
        let image_channels = image.size()[1];
        if extra != image_channels + 4 && (!self.image_to_video() || extra == image_channels) {
            return Some(image);
        }
        let image = image.narrow(1, 0, image_channels.min(extra - 4));
        let mask = kept_mask(cond, b, (t, h, w), x.device());
        // Fun Control puts the mask between the control latents and the start image's.
        let at = cond
            .extra("concat_mask_index")
            .map_or(0, |i| i.int64_value(&[0]))
            .clamp(0, image.size()[1]);
        let (before, after) = (
            image.narrow(1, 0, at),
            image.narrow(1, at, image.size()[1] - at),
        );
        Some(Tensor::cat(&[before, mask, after], 1))
    }

    /// `WAN21_Vace.extra_conds`: each control's latents (normalized per 16 channels) with its
    /// mask, `[b, n, 96, t, h, w]`, and the controls' strengths; one blank control (zero
    /// latents, all-ones mask) when the prompt gives none.
    fn vace_controls(&self, x: &Tensor, cond: &CondEntry) -> Option<(Tensor, Vec<f64>)> {
        self.config.vace?;
        let size = x.size();
        let (b, t, h, w) = (size[0], size[2], size[3], size[4]);
        let options = (Kind::Float, x.device());
        let frames = match cond.extra("vace_frames") {
            Some(f) => f.to_device(x.device()).to_kind(Kind::Float),
            None => Tensor::zeros([b, 1, 32, t, h, w], options),
        };
        let n = frames.size()[1];
        let mask = match cond.extra("vace_mask") {
            Some(m) => m.to_device(x.device()).to_kind(Kind::Float),
            None => Tensor::ones([b, n, 64, t, h, w], options),
        };
        let controls: Vec<Tensor> = (0..n)
            .map(|j| {
                let latents = process_in_blocks(&self.format, &frames.select(1, j));
                Tensor::cat(&[latents, mask.select(1, j)], 1)
            })
            .collect();
        let strengths = match cond.extra("vace_strength") {
            Some(s) => Vec::<f64>::try_from(s.get(0).to_kind(Kind::Double)).ok()?,
            None => vec![1.0; n as usize],
        };
        Some((repeat_to_batch(&Tensor::stack(&controls, 1), b), strengths))
    }

    /// The reference image's latent `[b, channels, h, w]` (`reference_latents`' last entry,
    /// normalized, its first frame).
    fn reference(&self, x: &Tensor, cond: &CondEntry) -> Option<Tensor> {
        let latent = cond.extra("reference_latent")?;
        let latent = latent.to_device(x.device()).to_kind(Kind::Float);
        let first = self.format.process_in(&latent).select(2, 0);
        Some(repeat_to_batch(&first, x.size()[0]))
    }

    /// `WAN22_S2V.extra_conds`' latents, normalized and on the device: the reference image
    /// (`reference_latents`' last entry), the motion frames and the control video.
    fn sound_latent(&self, x: &Tensor, cond: &CondEntry, key: &str) -> Option<Tensor> {
        if !self.config.sound {
            return None;
        }
        let latent = cond.extra(key)?.to_device(x.device()).to_kind(Kind::Float);
        Some(repeat_to_batch(
            &self.format.process_in(&latent),
            x.size()[0],
        ))
    }

    /// `WAN21_HuMo`'s reference latent (`reference_latents`' last entry), normalized, behind
    /// the zero noise and ones mask channels for models with concat inputs (17B).
    fn humo_reference(&self, x: &Tensor, cond: &CondEntry) -> Option<Tensor> {
        if !self.config.humo {
            return None;
        }
        let latent = cond.extra("reference_latent")?.to_device(x.device());
        let latent = self.format.process_in(&latent.to_kind(Kind::Float));
        let latent = if self.config.in_dim > latent.size()[1] {
            humo::full_reference(&latent)
        } else {
            latent
        };
        Some(repeat_to_batch(&latent, x.size()[0]))
    }

    /// Bernini's `context_latents`, normalized and on the device, in stream order.
    fn context_latents(&self, x: &Tensor, cond: &CondEntry) -> Vec<Tensor> {
        (0..)
            .map_while(|i| cond.extra(&context_latent_key(i)))
            .map(|latent| {
                let latent = latent.to_device(x.device()).to_kind(Kind::Float);
                repeat_to_batch(&self.format.process_in(&latent), x.size()[0])
            })
            .collect()
    }

    /// `WAN21_SCAIL.extra_conds`' latents, on the device and in the batch of `x`: the
    /// reference frames (the extra references, then the primary one, each normalized with four
    /// ones channels), the pose latents (the same), and SCAIL-2's identity masks `[b, 28, ...]`.
    fn scail_latents(&self, x: &Tensor, cond: &CondEntry) -> [Option<Tensor>; 4] {
        if self.config.scail.is_none() {
            return [None, None, None, None];
        }
        let b = x.size()[0];
        let with_ones = |latent: &Tensor| {
            let latent = self
                .format
                .process_in(&latent.to_device(x.device()).to_kind(Kind::Float));
            let ones = latent.narrow(1, 0, 4).ones_like();
            Tensor::cat(&[latent, ones], 1)
        };
        let mut references: Vec<Tensor> = (0..)
            .map_while(|i| cond.extra(&reference_latent_key(i)))
            .map(with_ones)
            .collect();
        if !references.is_empty() {
            references.rotate_left(1);
        }
        let reference = (!references.is_empty()).then(|| Tensor::cat(&references, 2));
        let pose = cond.extra("pose_video_latent").map(with_ones);
        // The masks come as `[1, T, 28, h, w]`.
        let mask = |key: &str| {
            cond.extra(key)
                .map(|m| m.to_device(x.device()).to_kind(Kind::Float).movedim(1, 2))
        };
        [
            reference,
            pose,
            mask("ref_mask_28ch"),
            mask("driving_mask_28ch"),
        ]
        .map(|t| t.map(|t| repeat_to_batch(&t, b)))
    }

    /// `WAN22.process_timestep`: each latent frame's timestep scaled by how much of it is
    /// denoised (0 for frames given as images).
    fn timesteps(&self, t: &Tensor, cond: &CondEntry) -> Tensor {
        match cond.extra("denoise_mask").filter(|_| self.is_wan22()) {
            Some(mask) => {
                let b = t.size()[0];
                let mask = mask.to_device(t.device()).to_kind(Kind::Float);
                (mask.mean_dim([1i64, 3, 4].as_slice(), true, Kind::Float)
                    * t.view([b, 1, 1, 1, 1]))
                .reshape([b, -1])
            }
            None => t.shallow_clone(),
        }
    }
}

impl WanNet {
    fn with_cache(&self, f: impl FnOnce(&mut CausalCache)) {
        if let Some(cache) = &self.causal {
            f(&mut cache.lock().unwrap_or_else(|e| e.into_inner()));
        }
    }
}

impl CausalNet for WanNet {
    fn begin(&self) {
        self.with_cache(CausalCache::begin);
    }

    fn set_start_frame(&self, frame: i64) {
        self.with_cache(|c| c.start_frame = frame);
    }

    fn rollback(&self, tokens: i64) {
        self.with_cache(|c| c.end = (c.end - tokens).max(0));
    }

    fn end(&self) {
        self.with_cache(|c| *c = CausalCache::default());
    }
}

/// The conditioning extra that holds Bernini's `i`-th in-context latent (ComfyUI's
/// `context_latents` list).
pub fn context_latent_key(i: usize) -> String {
    format!("context_latents.{i}")
}

/// The concat mask channels `[b, 4, t, h, w]` of `WAN21.concat_cond`: 1 where the
/// conditioning's `concat_mask` (or the sampler's `denoise_mask`) keeps the latent, zeros
/// without one.
fn kept_mask(cond: &CondEntry, b: i64, (t, h, w): (i64, i64, i64), device: Device) -> Tensor {
    let mask = cond
        .extra("concat_mask")
        .or_else(|| cond.extra("denoise_mask"));
    let Some(mask) = mask else {
        return Tensor::zeros([b, 4, t, h, w], (Kind::Float, device));
    };
    let mut m = mask.to_device(device).to_kind(Kind::Float);
    if m.size()[1] != 4 {
        m = m.mean_dim(1, true, Kind::Float);
    }
    let m = upscale_frames(&(1.0 - m), h, w);
    let frames = m.size()[2];
    let m = if frames < t {
        m.constant_pad_nd([0, 0, 0, 0, 0, t - frames])
    } else {
        m
    };
    let m = if m.size()[1] == 1 {
        m.repeat([1, 4, 1, 1, 1])
    } else {
        m
    };
    repeat_to_batch(&m, b)
}

/// Bilinear, center-cropped resize of every frame to `h × w` (ComfyUI's `common_upscale` on a
/// video latent); unchanged when the size already matches.
fn upscale_frames(x: &Tensor, h: i64, w: i64) -> Tensor {
    let s = x.size();
    if s[3] == h && s[4] == w {
        return x.shallow_clone();
    }
    let frames = x
        .permute([0, 2, 1, 3, 4])
        .reshape([s[0] * s[2], s[1], s[3], s[4]]);
    let up = common_upscale(&frames, w, h, "bilinear", "center").expect("bilinear is supported");
    up.reshape([s[0], s[2], s[1], h, w])
        .permute([0, 2, 1, 3, 4])
}

impl DiffusionNet for WanNet {
    fn forward(&self, xc: &Tensor, timestep: &Tensor, cond: &CondEntry) -> Result<Tensor> {
        let model = self.loaded()?;
        let device = self.file.manager.device();
        let x = xc.to_device(device).to_kind(Kind::Float);
        let batched = |key: &str| {
            cond.extra(key)
                .map(|t| repeat_to_batch(&t.to_device(device), x.size()[0]))
        };
        let t = self.timesteps(&timestep.to_device(device), cond);
        let context = cond.context.to_device(device);
        let clip = cond
            .extra("clip_vision_output")
            .map(|c| c.to_device(device));
        let vace = self.vace_controls(&x, cond);
        let reference = self.reference(&x, cond);
        let camera = batched("camera_conditions");
        // S2V's wav2vec2 features, HuMo's Whisper windows or Wan Dancer's music features: the
        // model reads them through the part it has.
        let audio = batched("audio_embed");
        let sound_reference = self.sound_latent(&x, cond, "reference_latent");
        let motion = self.sound_latent(&x, cond, "reference_motion");
        let control = self.sound_latent(&x, cond, "control_video");
        let context_latents = self.context_latents(&x, cond);
        let humo_reference = self.humo_reference(&x, cond);
        let [scail_reference, scail_pose, reference_mask, pose_mask] = self.scail_latents(&x, cond);
        // Wan Animate 2's pose branch and Wan 2.2 Animate's pose patches read the same latents.
        let pose_latents = cond
            .extra("pose_video_latent")
            .filter(|_| self.config.animate2 || self.config.animate)
            .map(|l| {
                let l = self
                    .format
                    .process_in(&l.to_device(device).to_kind(Kind::Float));
                repeat_to_batch(&l, x.size()[0])
            });
        let faces = batched("face_video_pixels").filter(|_| self.config.animate);
        let (pose_context, pose_clip) = (
            batched("cross_attn_pose"),
            batched("clip_vision_output_pose"),
        );
        let setting = |key: &str| cond.extra(key).map(|s| s.double_value(&[0]));
        let clip_reference = batched("clip_vision_output_ref").filter(|_| self.config.dancer);
        let x = match self.concat(&x, cond) {
            Some(extra) => Tensor::cat(&[x, extra], 1),
            None => x,
        };
        let skip_blocks: Vec<i64> = match cond.extra(SKIP_DOUBLE_BLOCKS) {
            Some(blocks) => Vec::try_from(blocks.to_kind(Kind::Int64).flatten(0, -1))?,
            None => Vec::new(),
        };
        let talk = match &self.talk {
            Some(t) => {
                let blocks = t.patch.blocks(model.dtype)?;
                let audio = t.audio.to_device(device).to_kind(model.dtype);
                let masks = t.speaker_masks.as_ref().map(|m| m.to_device(device));
                Some((blocks, audio, masks, t.scale))
            }
            None => None,
        };
        let conditions = Conditions {
            clip: clip.as_ref(),
            vace: vace.as_ref().map(|(c, s)| (c, s.as_slice())),
            reference: reference.as_ref(),
            skip_blocks: &skip_blocks,
            camera: camera.as_ref(),
            sound: SoundInputs {
                audio: audio.as_ref(),
                reference: sound_reference.as_ref(),
                motion: motion.as_ref(),
                control: control.as_ref(),
            },
            talk: talk
                .as_ref()
                .map(|(blocks, audio, masks, scale)| TalkInputs {
                    blocks: &blocks.blocks,
                    audio,
                    scale: *scale,
                    speaker_masks: masks.as_ref(),
                }),
            context_latents: &context_latents,
            rope: self.rope,
            humo: HumoInputs {
                audio: audio.as_ref(),
                reference: humo_reference.as_ref(),
            },
            causal: self.causal.as_deref(),
            pose: pose_latents
                .as_ref()
                .filter(|_| self.config.animate2)
                .map(|latents| PoseInputs {
                    latents,
                    context: pose_context.as_ref(),
                    clip: pose_clip.as_ref(),
                    strength: setting("pose_strength").unwrap_or(1.0),
                    cache: self.pose_cache.as_deref(),
                }),
            reference_strength: setting("reference_strength"),
            windowed: cond.extra(CONTEXT_WINDOW_KEY).is_some(),
            dancer: DancerInputs {
                music: audio.as_ref(),
                clip_reference: clip_reference.as_ref(),
                fps: setting("fps"),
                scale: setting("audio_inject_scale"),
            },
            animate: AnimateInputs {
                pose: pose_latents.as_ref().filter(|_| self.config.animate),
                faces: faces.as_ref(),
            },
            scail: ScailInputs {
                reference: scail_reference.as_ref(),
                pose: scail_pose.as_ref(),
                reference_mask: reference_mask.as_ref(),
                pose_mask: pose_mask.as_ref(),
                replacement: setting("ref_mask_flag") == Some(0.0),
            },
        };
        // Phantom's subject frames (`time_dim_concat`) follow the video along time; the output
        // keeps the video's frames.
        let frames = x.size()[2];
        let x = match cond.extra("time_dim_concat") {
            Some(subjects) => {
                let subjects = self
                    .format
                    .process_in(&subjects.to_device(device).to_kind(Kind::Float));
                Tensor::cat(&[&x, &repeat_to_batch(&subjects, x.size()[0])], 2)
            }
            None => x,
        };
        let out = model.forward_with(&x, &t, &context, &conditions)?;
        Ok(out.narrow(2, 0, frames).to_kind(Kind::Float))
    }

    fn latent_format(&self) -> Option<&LatentFormat> {
        Some(&self.format)
    }

    fn device(&self) -> Device {
        self.file.manager.device()
    }

    fn keeps_clean_latent(&self) -> bool {
        self.is_wan22() || self.config.scail == Some(ScailKind::Masked)
    }

    fn block_skip(&self) -> BlockSkip {
        BlockSkip::Skips
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn causal(&self) -> Option<&dyn CausalNet> {
        self.causal.as_ref().map(|_| self as &dyn CausalNet)
    }

    fn with_rope_options(&self, rope: RopeOptions) -> Option<Arc<dyn DiffusionNet>> {
        Some(Arc::new(WanNet {
            rope,
            ..self.clone()
        }))
    }

    fn with_lora(&self, path: &Path, strength: f64) -> Option<Arc<dyn DiffusionNet>> {
        Some(Arc::new(WanNet {
            file: self.file.with_lora(path, strength),
            ..self.clone()
        }))
    }
}
