//! LTX-2's audio-video transformer as ComfyUI runs it (`comfy/ldm/lightricks/av_model.py`:
//! `LTXAVModel`, `BasicAVTransformerBlock`). Two token streams, video (one token per latent
//! cell) and audio (one per latent frame), each with adaLN-modulated self-attention, text
//! cross-attention and a feed-forward; between them, in every block, audio-to-video and
//! video-to-audio attention over time-only RoPE. Timesteps may differ per latent frame or per
//! token (conditioning frames run at 0), so modulation is held per row of tokens.

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use super::av_config::AvConfig;
use super::av_layers::{rms_norm, AdaLnSingle, Attention, FeedForward, TextProjection, NORM_EPS};
use super::av_rope::{
    audio_positions, in_seconds, pixel_spans, reference_audio_positions, Rope, RopeGeometry,
};
use super::connector::Connector;
use super::guide_attention::GuideMask;
use crate::models::wan::dit::layer_norm;
use crate::models::weights::Weights;
use crate::runtime::fused::{self, Norm};
use crate::runtime::linear::Linear;
use crate::runtime::manager::{in_order, log_partial_load, resident_count, Movable, Streamed};
use crate::sampling::model::GuideAttention;

/// Audio latents are 8 channels of 16 mel bins; a token is one latent frame of both.
pub const AUDIO_CHANNELS: i64 = 8;
pub const AUDIO_BINS: i64 = 16;

/// `x` `[b, n, d]` seen as `[b, rows, n / rows, d]`.
fn by_rows(x: &Tensor, rows: i64) -> Tensor {
    let (b, n, d) = x.size3().expect("tokens are [b, n, d]");
    x.reshape([b, rows, n / rows, d])
}

/// `x · (1 + scale) + shift` with per-row `scale` and `shift` `[b, rows, 1, d]`.
fn scale_shift(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Tensor {
    (by_rows(x, shift.size()[1]) * (scale + 1.0) + shift).reshape(x.size())
}

/// RMSNorm, then [`scale_shift`]: one kernel on a CUDA device.
fn modulated(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    if x.device().is_cuda() {
        let (shift, scale) = (shift.squeeze_dim(2), scale.squeeze_dim(2));
        let norm = Norm::RmsModulate {
            shift: &shift,
            scale: &scale,
        };
        return fused::layer_norm(x, norm, NORM_EPS);
    }
    Ok(scale_shift(&rms_norm(x), shift, scale))
}

/// `x + out · gate` with a per-row `gate`, as one `addcmul` (ComfyUI's `addcmul_`: the product
/// is not rounded on its own).
fn gated(x: &Tensor, out: &Tensor, gate: &Tensor) -> Tensor {
    let rows = gate.size()[1];
    by_rows(x, rows)
        .addcmul(&by_rows(out, rows), gate)
        .reshape(x.size())
}

/// A block's table `[k, d]` plus the rows' modulation `[b, rows, k·d]`: `[b, rows, k, d]`.
fn ada(table: &Tensor, rows: &Tensor) -> Tensor {
    let (b, n, width) = rows.size3().expect("modulation is [b, rows, k·d]");
    let (k, d) = table.size2().expect("a table is [k, d]");
    debug_assert_eq!(k * d, width);
    table.view([1, 1, k, d]) + rows.view([b, n, k, d])
}

/// One of `ada`'s values, `[b, rows, 1, d]`.
fn part(values: &Tensor, i: i64) -> Tensor {
    values.narrow(2, i, 1)
}

struct AvBlock {
    attn1: Attention,
    attn2: Attention,
    audio_attn1: Attention,
    audio_attn2: Attention,
    audio_to_video: Attention,
    video_to_audio: Attention,
    ff: FeedForward,
    audio_ff: FeedForward,
    /// Shift, scale and gate for self-attention, then for the feed-forward: `[6, d]`.
    table: Tensor,
    audio_table: Tensor,
    /// Audio-to-video scale and shift, video-to-audio scale and shift, gate: `[5, d]`.
    cross_table: Tensor,
    audio_cross_table: Tensor,
    /// LTX-2.3's text modulation: the text's shift and scale `[2, d]` (the queries' shift,
    /// scale and gate are rows 6–8 of `table`).
    prompt_table: Option<Tensor>,
    audio_prompt_table: Option<Tensor>,
}

impl AvBlock {
    fn load(w: &Weights, n: i64, c: &AvConfig) -> Result<Self> {
        let p = format!("transformer_blocks.{n}");
        let (v, a) = (&c.video, &c.audio);
        let (dv, da) = (v.inner(), a.inner());
        let attention = |name: &str, dims, heads, head_dim| {
            let name = format!("{p}.{name}");
            Attention::load(w, &name, dims, (heads, head_dim), c.gated_attention)
        };
        let prompt_table = |name: &str| {
            c.prompt_modulation
                .then(|| w.tensor(&format!("{p}.{name}")))
                .transpose()
        };
        Ok(Self {
            attn1: attention("attn1", (dv, dv), v.heads, v.head_dim)?,
            attn2: attention("attn2", (dv, v.context_dim), v.heads, v.head_dim)?,
            audio_attn1: attention("audio_attn1", (da, da), a.heads, a.head_dim)?,
            audio_attn2: attention("audio_attn2", (da, a.context_dim), a.heads, a.head_dim)?,
            audio_to_video: attention("audio_to_video_attn", (dv, da), a.heads, a.head_dim)?,
            video_to_audio: attention("video_to_audio_attn", (da, dv), a.heads, a.head_dim)?,
            prompt_table: prompt_table("prompt_scale_shift_table")?,
            audio_prompt_table: prompt_table("audio_prompt_scale_shift_table")?,
            ff: FeedForward::load(w, &format!("{p}.ff"), dv)?,
            audio_ff: FeedForward::load(w, &format!("{p}.audio_ff"), da)?,
            table: w.tensor(&format!("{p}.scale_shift_table"))?,
            audio_table: w.tensor(&format!("{p}.audio_scale_shift_table"))?,
            cross_table: w.tensor(&format!("{p}.scale_shift_table_a2v_ca_video"))?,
            audio_cross_table: w.tensor(&format!("{p}.scale_shift_table_a2v_ca_audio"))?,
        })
    }

    /// One stream's self-attention and text cross-attention.
    fn attend(
        x: &Tensor,
        values: &Tensor,
        (attn1, attn2): (&Attention, &Attention),
        prompt_table: Option<&Tensor>,
        stream: &StreamInputs,
    ) -> Result<Tensor> {
        let h = attn1.guided_self_attention(
            &modulated(x, &part(values, 0), &part(values, 1))?,
            &stream.rope,
            stream.guides.as_ref(),
        )?;
        let x = gated(x, &h, &part(values, 2));
        let text = match (prompt_table, &stream.prompt_modulation) {
            // LTX-2.3 (`apply_cross_attention_adaln`): the queries modulated like the other
            // branches, the text by the prompt's own adaLN, the output gated (not fused with
            // the residual: ComfyUI adds the gated product).
            (Some(table), Some(prompt)) => {
                let kv = ada(table, prompt);
                let context = scale_shift(&stream.context, &part(&kv, 0), &part(&kv, 1));
                let queries = modulated(&x, &part(values, 6), &part(values, 7))?;
                let out = attn2.forward(&queries, Some(&context), None, None)?;
                let rows = values.size()[1];
                (by_rows(&out, rows) * part(values, 8)).reshape(x.size())
            }
            _ => attn2.forward(&rms_norm(&x), Some(&stream.context), None, None)?,
        };
        Ok(&x + text)
    }

    /// One stream's feed-forward.
    fn feed_forward(x: &Tensor, values: &Tensor, ff: &FeedForward) -> Result<Tensor> {
        let h = ff.forward(&modulated(x, &part(values, 3), &part(values, 4))?)?;
        Ok(gated(x, &h, &part(values, 5)))
    }

    fn forward(
        &self,
        vx: &Tensor,
        ax: Option<&Tensor>,
        video: &StreamInputs,
        audio: Option<&StreamInputs>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let v = ada(&self.table, &video.modulation);
        let mut vx = Self::attend(
            vx,
            &v,
            (&self.attn1, &self.attn2),
            self.prompt_table.as_ref(),
            video,
        )?;
        let (Some(ax), Some(audio)) = (ax, audio) else {
            return Ok((Self::feed_forward(&vx, &v, &self.ff)?, None));
        };
        let a = ada(&self.audio_table, &audio.modulation);
        let mut ax = Self::attend(
            ax,
            &a,
            (&self.audio_attn1, &self.audio_attn2),
            self.audio_prompt_table.as_ref(),
            audio,
        )?;

        let vc = ada(&self.cross_table.narrow(0, 0, 4), &video.cross_modulation);
        let ac = ada(
            &self.audio_cross_table.narrow(0, 0, 4),
            &audio.cross_modulation,
        );
        let ax_norm = rms_norm(&ax);
        let h = self.audio_to_video.forward(
            &modulated(&vx, &part(&vc, 1), &part(&vc, 0))?,
            Some(&scale_shift(&ax_norm, &part(&ac, 1), &part(&ac, 0))),
            Some(&video.cross_rope),
            Some(&audio.cross_rope),
        )?;
        let gate = ada(&self.cross_table.narrow(0, 4, 1), &video.cross_gate);
        vx = gated(&vx, &h, &gate);
        // ComfyUI's video-to-audio attention reads the video after the audio-to-video update
        // (diffusers and Lightricks' code read it before).
        let h = self.video_to_audio.forward(
            &scale_shift(&ax_norm, &part(&ac, 3), &part(&ac, 2)),
            Some(&modulated(&vx, &part(&vc, 3), &part(&vc, 2))?),
            Some(&audio.cross_rope),
            Some(&video.cross_rope),
        )?;
        let gate = ada(&self.audio_cross_table.narrow(0, 4, 1), &audio.cross_gate);
        ax = gated(&ax, &h, &gate);

        Ok((
            Self::feed_forward(&vx, &v, &self.ff)?,
            Some(Self::feed_forward(&ax, &a, &self.audio_ff)?),
        ))
    }
}

impl Movable for AvBlock {
    fn moved(&self, device: Device) -> Self {
        Self {
            attn1: self.attn1.moved(device),
            attn2: self.attn2.moved(device),
            audio_attn1: self.audio_attn1.moved(device),
            audio_attn2: self.audio_attn2.moved(device),
            audio_to_video: self.audio_to_video.moved(device),
            video_to_audio: self.video_to_audio.moved(device),
            ff: self.ff.moved(device),
            audio_ff: self.audio_ff.moved(device),
            table: self.table.moved(device),
            audio_table: self.audio_table.moved(device),
            cross_table: self.cross_table.moved(device),
            audio_cross_table: self.audio_cross_table.moved(device),
            prompt_table: self.prompt_table.as_ref().map(|t| t.moved(device)),
            audio_prompt_table: self.audio_prompt_table.as_ref().map(|t| t.moved(device)),
        }
    }

    fn bytes(&self) -> u64 {
        let attentions = [
            &self.attn1,
            &self.attn2,
            &self.audio_attn1,
            &self.audio_attn2,
            &self.audio_to_video,
            &self.video_to_audio,
        ];
        let tables = [
            Some(&self.table),
            Some(&self.audio_table),
            Some(&self.cross_table),
            Some(&self.audio_cross_table),
            self.prompt_table.as_ref(),
            self.audio_prompt_table.as_ref(),
        ];
        attentions.iter().map(|a| a.bytes()).sum::<u64>()
            + self.ff.bytes()
            + self.audio_ff.bytes()
            + tables.iter().flatten().map(|t| t.bytes()).sum::<u64>()
    }
}

/// What every block reads of one stream.
struct StreamInputs {
    /// `[b, rows, 6·d]`: each row covers `tokens / rows` consecutive tokens.
    modulation: Tensor,
    /// The audio-video attention's scales and shifts `[b, rows, 4·d]` and gate `[1, 1, d]`.
    cross_modulation: Tensor,
    cross_gate: Tensor,
    rope: Rope,
    cross_rope: Rope,
    /// The projected text `[b, tokens, context_dim]`.
    context: Tensor,
    /// LTX-2.3's prompt modulation `[b, 1, 2·d]`, from each sample's largest timestep.
    prompt_modulation: Option<Tensor>,
    /// LTXVAddGuide's attention weights on the video's self-attention.
    guides: Option<GuideMask>,
}

/// The inputs of one forward.
pub struct AvInputs<'a> {
    /// `[b, c, f, h, w]`.
    pub video: &'a Tensor,
    /// `[b, 8, frames, 16]`; `None` runs the video stream alone.
    pub audio: Option<&'a Tensor>,
    /// σ per sample `[b]` or per video token `[b, f·h·w]`.
    pub video_timestep: &'a Tensor,
    /// σ per sample `[b]` or per audio frame `[b, frames]`.
    pub audio_timestep: &'a Tensor,
    /// The connectors' output ([`LtxAvModel::encode_context`]): `[b, tokens, 2·caption_channels]`,
    /// or `[b, tokens, video + audio width]` when the text comes projected per stream.
    pub context: &'a Tensor,
    pub frame_rate: f64,
    /// The pixel spans `[3, tokens, 2]` of the guide frames LTXVAddGuide appended to the video,
    /// which take the place of the last tokens' own.
    pub keyframes: Option<&'a Tensor>,
    /// Those guides' attention weights.
    pub guides: &'a [GuideAttention],
    /// An ID-LoRA reference clip's audio latent as tokens `[b or 1, frames, 8·16]`
    /// (LTXVReferenceAudio): put before the audio at timestep 0 and earlier positions, and cut
    /// from the output.
    pub reference_audio: Option<&'a Tensor>,
}

pub struct LtxAvModel {
    patchify_proj: Linear,
    audio_patchify_proj: Linear,
    adaln_single: AdaLnSingle,
    audio_adaln_single: AdaLnSingle,
    video_cross_adaln: AdaLnSingle,
    audio_cross_adaln: AdaLnSingle,
    a2v_gate_adaln: AdaLnSingle,
    v2a_gate_adaln: AdaLnSingle,
    /// LTX-2.3's prompt modulation ([`AvConfig::prompt_modulation`]).
    prompt_adaln: Option<AdaLnSingle>,
    audio_prompt_adaln: Option<AdaLnSingle>,
    /// LTX-2's caption projections after the connectors; LTX-2.3's text needs none.
    caption_projection: Option<TextProjection>,
    audio_caption_projection: Option<TextProjection>,
    video_connector: Connector,
    audio_connector: Connector,
    /// Under `--lowvram` the blocks that do not fit are streamed from pinned host memory.
    blocks: Vec<Streamed<AvBlock>>,
    /// The output's shift and scale `[2, d]`.
    scale_shift_table: Tensor,
    audio_scale_shift_table: Tensor,
    proj_out: Linear,
    audio_proj_out: Linear,
    config: AvConfig,
    dtype: Kind,
}

impl LtxAvModel {
    pub fn load(w: &Weights, config: AvConfig) -> Result<Self> {
        if w.has("keyframes_abs_pos_embedding") {
            bail!("LTX transformers with keyframe position embeddings (LTX-2.5) are not supported yet");
        }
        let c = &config;
        let (v, a) = (&c.video, &c.audio);
        let (dv, da) = (v.inner(), a.inner());
        if a.in_channels != AUDIO_CHANNELS * AUDIO_BINS {
            bail!(
                "LTX audio tokens are {} wide, not {}",
                AUDIO_CHANNELS * AUDIO_BINS,
                a.in_channels
            );
        }
        let modulations = if c.prompt_modulation { 9 } else { 6 };
        let prompt_adaln = |name: &str, dim| {
            c.prompt_modulation
                .then(|| AdaLnSingle::load(w, name, dim, 2))
                .transpose()
        };
        let caption_projection = |name: &str, dim| {
            (!c.caption_proj_before_connector)
                .then(|| TextProjection::load(w, name, c.caption_channels, dim))
                .transpose()
        };
        let mut placer = w.placement.placer();
        let blocks = (0..c.layers)
            .map(|n| Ok(placer.place(AvBlock::load(w, n, c)?)))
            .collect::<Result<_>>()?;
        let model = Self {
            patchify_proj: w.linear("patchify_proj", (dv, v.in_channels))?,
            audio_patchify_proj: w.linear("audio_patchify_proj", (da, a.in_channels))?,
            adaln_single: AdaLnSingle::load(w, "adaln_single", dv, modulations)?,
            audio_adaln_single: AdaLnSingle::load(w, "audio_adaln_single", da, modulations)?,
            video_cross_adaln: AdaLnSingle::load(w, "av_ca_video_scale_shift_adaln_single", dv, 4)?,
            audio_cross_adaln: AdaLnSingle::load(w, "av_ca_audio_scale_shift_adaln_single", da, 4)?,
            a2v_gate_adaln: AdaLnSingle::load(w, "av_ca_a2v_gate_adaln_single", dv, 1)?,
            v2a_gate_adaln: AdaLnSingle::load(w, "av_ca_v2a_gate_adaln_single", da, 1)?,
            prompt_adaln: prompt_adaln("prompt_adaln_single", dv)?,
            audio_prompt_adaln: prompt_adaln("audio_prompt_adaln_single", da)?,
            caption_projection: caption_projection("caption_projection", dv)?,
            audio_caption_projection: caption_projection("audio_caption_projection", da)?,
            video_connector: Connector::load(w, "video_embeddings_connector", &c.video_connector)?,
            audio_connector: Connector::load(w, "audio_embeddings_connector", &c.audio_connector)?,
            blocks,
            scale_shift_table: w.tensor("scale_shift_table")?,
            audio_scale_shift_table: w.tensor("audio_scale_shift_table")?,
            proj_out: w.linear("proj_out", (v.in_channels, dv))?,
            audio_proj_out: w.linear("audio_proj_out", (a.in_channels, da))?,
            dtype: w.dtype,
            config,
        };
        log_partial_load(
            "LTX-2",
            (resident_count(&model.blocks), model.blocks.len()),
            "blocks",
            w.device,
        );
        Ok(model)
    }

    /// The transformer's context for the text encoder's projected features (ComfyUI's
    /// `preprocess_text_embeds`): the video and the audio connector's outputs side by side, in
    /// the model's dtype. LTX-2's features `[b, n, caption]` go to both connectors; LTX-2.3's
    /// `[b, n, video + audio width]` are one part for each.
    pub fn encode_context(&self, features: &Tensor) -> Result<Tensor> {
        let x = features.to_kind(self.dtype);
        let (video, audio) = (self.config.video.context_dim, self.config.audio.context_dim);
        let (video_text, audio_text) = if x.size()[2] == video + audio {
            (x.narrow(2, 0, video), x.narrow(2, video, audio))
        } else {
            (x.shallow_clone(), x)
        };
        Ok(Tensor::cat(
            &[
                self.video_connector.forward(&video_text)?,
                self.audio_connector.forward(&audio_text)?,
            ],
            2,
        ))
    }

    /// Whether `context` is the text encoder's output rather than the connectors': LTX-2's
    /// connectors double the width; LTX-2.3's keep it, and its text encoder's output always
    /// goes through them.
    pub fn needs_connectors(&self, context: &Tensor) -> bool {
        let c = &self.config;
        c.caption_proj_before_connector || context.size()[2] != 2 * c.caption_channels
    }

    /// The flow predictions for the video `[b, c, f, h, w]` and audio `[b, 8, frames, 16]`
    /// latents, in the model's dtype.
    pub fn forward(&self, inputs: &AvInputs) -> Result<(Tensor, Option<Tensor>)> {
        let c = &self.config;
        let kind = self.dtype;
        let (b, channels, f, h, w) = inputs.video.size5()?;
        let device = inputs.video.device();
        let vx = self
            .patchify_proj
            .forward(&inputs.video.to_kind(kind).flatten(2, 4).transpose(1, 2))?;
        let reference = match (inputs.audio, inputs.reference_audio) {
            (Some(_), Some(r)) => {
                let (rb, frames, width) = r.size3()?;
                if rb != 1 && rb != b {
                    bail!("{rb} reference audio clips for a batch of {b}");
                }
                Some(
                    r.to_device(device)
                        .to_kind(kind)
                        .expand([b, frames, width], false),
                )
            }
            _ => None,
        };
        let reference_frames = reference.as_ref().map_or(0, |r| r.size()[1]);
        let ax = inputs
            .audio
            .map(|audio| {
                let (_, _, frames, _) = audio.size4()?;
                let tokens = audio
                    .to_kind(kind)
                    .permute([0, 2, 1, 3])
                    .reshape([b, frames, -1]);
                let tokens = match &reference {
                    Some(r) => Tensor::cat(&[r, &tokens], 1),
                    None => tokens,
                };
                self.audio_patchify_proj.forward(&tokens)
            })
            .transpose()?;

        let v_time = video_rows(inputs.video_timestep, b, f, h * w) * c.timestep_scale;
        let a_time = inputs.audio_timestep.to_kind(Kind::Float).reshape([b, -1]) * c.timestep_scale;
        // The reference's tokens are clean: timestep 0 before the audio's own, one per token.
        let a_time = match (&ax, reference_frames) {
            (Some(ax), n) if n > 0 => {
                let target = ax.size()[1] - n;
                Tensor::cat(
                    &[
                        a_time.zeros_like().narrow(1, 0, 1).expand([b, n], false),
                        a_time.expand([b, target], false),
                    ],
                    1,
                )
            }
            _ => a_time,
        };
        let gate_scale = c.av_ca_timestep_scale / c.timestep_scale;
        let embed = |adaln: &AdaLnSingle, t: &Tensor| -> Result<(Tensor, Tensor)> {
            let (rows_b, rows) = t.size2()?;
            let (m, e) = adaln.forward(&t.reshape([-1]), kind)?;
            Ok((m.view([rows_b, rows, -1]), e.view([rows_b, rows, -1])))
        };
        // The audio-video gates run at the other stream's largest timestep, for every token.
        let gate = |adaln: &AdaLnSingle, other: &Tensor| -> Result<Tensor> {
            Ok(embed(adaln, &(other.max() * gate_scale).view([1, 1]))?.0)
        };

        // The prompt modulation runs at each sample's largest timestep.
        let prompt = |adaln: &Option<AdaLnSingle>, t: &Tensor| -> Result<Option<Tensor>> {
            adaln
                .as_ref()
                .map(|adaln| Ok(adaln.forward(&t.amax(1, false), kind)?.0.unsqueeze(1)))
                .transpose()
        };

        let (v_mod, v_embedded) = embed(&self.adaln_single, &v_time)?;
        let context = inputs.context.to_kind(kind);
        let (v_context, a_context) = self.stream_contexts(&context)?;
        let geometry = |dim, heads, middle| RopeGeometry {
            dim,
            heads,
            theta: c.theta,
            double_precision: c.double_precision_rope,
            middle,
        };
        let cross_max = [c.max_pos[0].max(c.audio_max_pos)];
        let cross_geometry = geometry(c.audio.context_dim, c.audio.heads, true);
        // The positions are made on the host; their rotation tables on the device.
        let v_positions = in_seconds(
            &video_spans((f, h, w), c.causal_temporal_positioning, inputs.keyframes)?,
            inputs.frame_rate,
        )
        .to_device(device);
        let guide_tokens = inputs.keyframes.map_or(0, |k| k.size()[1]);
        let guides = GuideMask::new(f * h * w, guide_tokens, inputs.guides, kind, device)?;
        let video = StreamInputs {
            modulation: v_mod,
            cross_modulation: embed(&self.video_cross_adaln, &v_time)?.0,
            cross_gate: gate(&self.a2v_gate_adaln, &a_time)?,
            rope: Rope::new(
                &v_positions,
                &c.max_pos,
                geometry(c.video.inner(), c.video.heads, c.use_middle_indices_grid),
            ),
            cross_rope: Rope::new(&v_positions.narrow(0, 0, 1), &cross_max, cross_geometry),
            context: v_context,
            prompt_modulation: prompt(&self.prompt_adaln, &v_time)?,
            guides,
        };
        let (audio, a_embedded) = match &ax {
            Some(ax) => {
                let (a_mod, a_embedded) = embed(&self.audio_adaln_single, &a_time)?;
                let own = audio_positions(ax.size()[1] - reference_frames);
                let positions = match reference_frames {
                    0 => own,
                    n => Tensor::cat(&[reference_audio_positions(n), own], 1),
                }
                .to_device(device);
                let audio = StreamInputs {
                    modulation: a_mod,
                    cross_modulation: embed(&self.audio_cross_adaln, &a_time)?.0,
                    cross_gate: gate(&self.v2a_gate_adaln, &v_time)?,
                    rope: Rope::new(
                        &positions,
                        &[c.audio_max_pos],
                        geometry(c.audio.inner(), c.audio.heads, c.use_middle_indices_grid),
                    ),
                    cross_rope: Rope::new(&positions, &cross_max, cross_geometry),
                    context: a_context,
                    prompt_modulation: prompt(&self.audio_prompt_adaln, &a_time)?,
                    guides: None,
                };
                (Some(audio), Some(a_embedded))
            }
            None => (None, None),
        };

        let (mut vx, mut ax) = (vx, ax);
        for block in in_order(&self.blocks) {
            (vx, ax) = block.forward(&vx, ax.as_ref(), &video, audio.as_ref())?;
        }

        let vx = self.output(&vx, &self.scale_shift_table, &v_embedded, &self.proj_out)?;
        let video_out = vx.transpose(1, 2).reshape([b, channels, f, h, w]);
        let audio_out = match (ax, a_embedded) {
            (Some(ax), Some(embedded)) => {
                let frames = ax.size()[1] - reference_frames;
                let ax = ax.narrow(1, reference_frames, frames);
                let embedded = match embedded.size()[1] {
                    1 => embedded,
                    _ => embedded.narrow(1, reference_frames, frames),
                };
                let ax = self.output(
                    &ax,
                    &self.audio_scale_shift_table,
                    &embedded,
                    &self.audio_proj_out,
                )?;
                Some(
                    ax.view([b, frames, AUDIO_CHANNELS, AUDIO_BINS])
                        .permute([0, 2, 1, 3]),
                )
            }
            _ => None,
        };
        Ok((video_out, audio_out))
    }

    /// The video and audio streams' text from the connectors' output: LTX-2's caption-wide
    /// halves through the caption projections, LTX-2.3's parts as they are.
    fn stream_contexts(&self, context: &Tensor) -> Result<(Tensor, Tensor)> {
        let c = &self.config;
        match (&self.caption_projection, &self.audio_caption_projection) {
            (Some(video), Some(audio)) => {
                let caption = c.caption_channels;
                Ok((
                    video.forward(&context.narrow(2, 0, caption))?,
                    audio.forward(&context.narrow(2, caption, caption))?,
                ))
            }
            _ => {
                let (dv, da) = (c.video.inner(), c.audio.inner());
                if context.size()[2] != dv + da {
                    bail!(
                        "the LTX context is {} wide, not the video and audio widths {dv} + {da}",
                        context.size()[2]
                    );
                }
                Ok((context.narrow(2, 0, dv), context.narrow(2, dv, da)))
            }
        }
    }

    /// The final LayerNorm, shifted and scaled by `table` `[2, d]` plus the embedded timestep
    /// rows `[b, rows, d]`, and the output projection.
    fn output(
        &self,
        x: &Tensor,
        table: &Tensor,
        embedded: &Tensor,
        proj: &Linear,
    ) -> Result<Tensor> {
        let values = table.unsqueeze(0).unsqueeze(0) + embedded.unsqueeze(2);
        let x = scale_shift(
            &layer_norm(x, None, NORM_EPS),
            &part(&values, 0),
            &part(&values, 1),
        );
        proj.forward(&x)
    }
}

/// The video tokens' pixel spans `[3, f·h·w, 2]`, the last tokens' replaced by `keyframes`'.
fn video_spans(
    (f, h, w): (i64, i64, i64),
    causal: bool,
    keyframes: Option<&Tensor>,
) -> Result<Tensor> {
    let spans = pixel_spans((f, h, w), causal);
    let Some(keyframes) = keyframes else {
        return Ok(spans);
    };
    let (n, per_frame) = (keyframes.size()[1], h * w);
    if n % per_frame != 0 || n > f * h * w {
        bail!(
            "the guides hold {n} tokens, not a whole number of {per_frame}-token latent frames \
             within the latent's {f}: crop the guides (LTXVCropGuides) before resizing the latent"
        );
    }
    spans
        .narrow(1, f * h * w - n, n)
        .copy_(&keyframes.to_device(Device::Cpu).to_kind(Kind::Float));
    Ok(spans)
}

/// The video timesteps as rows `[b, rows]` (float32): one per sample for a `[b]` σ; one per
/// latent frame when every token of a frame shares its timestep (ComfyUI's per-frame
/// compression); else one per token.
fn video_rows(t: &Tensor, b: i64, frames: i64, per_frame: i64) -> Tensor {
    let t = t.to_kind(Kind::Float).reshape([b, -1]);
    if t.size()[1] == 1 {
        return t;
    }
    let grid = t.view([b, frames, per_frame]);
    let uniform = grid.amax(2, false).equal(&grid.amin(2, false));
    if uniform {
        grid.select(2, 0)
    } else {
        t
    }
}
