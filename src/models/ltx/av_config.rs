//! What an LTX-2 audio-video transformer's layers are: ComfyUI's `LTXAVModel` defaults,
//! overridden by `runtime::detect`'s config (the shapes it reads and the checkpoint's
//! `config.transformer` metadata, as `comfy/model_detection.py` merges them).

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// One stream's widths (video or audio).
#[derive(Clone, Debug, PartialEq)]
pub struct StreamConfig {
    pub heads: i64,
    pub head_dim: i64,
    /// Latent channels per token.
    pub in_channels: i64,
    /// The width of the text the stream's cross-attention reads (after its caption projection).
    pub context_dim: i64,
}

impl StreamConfig {
    pub fn inner(&self) -> i64 {
        self.heads * self.head_dim
    }
}

/// A text connector's attention shape.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectorConfig {
    pub heads: i64,
    pub head_dim: i64,
    pub layers: i64,
    /// Each attention's output scaled per head by `2·sigmoid(to_gate_logits(x))` (LTX-2.3).
    pub gated_attention: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AvConfig {
    pub video: StreamConfig,
    pub audio: StreamConfig,
    /// The width of the text features both connectors take and give.
    pub caption_channels: i64,
    pub layers: i64,
    pub theta: f64,
    /// RoPE's largest (time in seconds, height, width in pixels) for video; time for audio.
    pub max_pos: [f64; 3],
    pub audio_max_pos: f64,
    /// The first latent frame stands for one pixel frame, not eight (LTX-2's causal VAE).
    pub causal_temporal_positioning: bool,
    /// Positions at the middle of each token's span instead of its start.
    pub use_middle_indices_grid: bool,
    pub timestep_scale: f64,
    /// The audio-video gates' timestep scale (the file's metadata says 1000 for LTX-2; ComfyUI's
    /// default is 1).
    pub av_ca_timestep_scale: f64,
    /// RoPE frequencies in float64 (`frequencies_precision`), else float32.
    pub double_precision_rope: bool,
    pub video_connector: ConnectorConfig,
    pub audio_connector: ConnectorConfig,
    /// Gated attention in the transformer's blocks ([`ConnectorConfig::gated_attention`]).
    pub gated_attention: bool,
    /// The text cross-attention modulated by the timestep, queries and keys both
    /// (`cross_attention_adaln`, LTX-2.3): nine rows per block table, and a prompt adaLN.
    pub prompt_modulation: bool,
    /// The text comes projected per stream (LTX-2.3's text encoder): the connectors take the
    /// video and audio parts of the features and no caption projection follows.
    pub caption_proj_before_connector: bool,
}

impl AvConfig {
    /// From `runtime::detect`'s config for an `LTXAV` model.
    pub fn from_detected(c: &Value) -> Result<Self> {
        let int = |key: &str, default: i64| c.get(key).and_then(Value::as_i64).unwrap_or(default);
        let float = |key: &str, default: f64| c.get(key).and_then(Value::as_f64).unwrap_or(default);
        let flag = |key: &str| c.get(key).and_then(Value::as_bool).unwrap_or(false);
        let prompt_modulation = flag("cross_attention_adaln");
        if prompt_modulation
            && c.get("use_prompt_adaln_single").and_then(Value::as_bool) == Some(false)
        {
            bail!("LTX transformers with a timestep-independent prompt modulation (LTX-2.5) are not supported yet");
        }
        let caption_proj_before_connector = flag("caption_proj_before_connector");
        // ComfyUI's default builds a normed linear projection before the connectors; LTX-2.3's
        // files turn it off (the text encoder's per-stream projections take its place).
        if caption_proj_before_connector
            && c.get("caption_projection_first_linear")
                .and_then(Value::as_bool)
                != Some(false)
        {
            bail!("LTX transformers with a caption projection before the connectors are not supported yet");
        }
        for key in ["ff_bias", "audio_ff_bias"] {
            if c.get(key).and_then(Value::as_bool) == Some(false) {
                bail!("LTX transformers without feed-forward biases ({key}) are not supported yet");
            }
        }
        match c
            .get("rope_type")
            .and_then(Value::as_str)
            .unwrap_or("interleaved")
        {
            "split" => {}
            other => bail!("LTX transformers with {other} RoPE are not supported yet"),
        }
        let max_pos = positions(
            c.get("positional_embedding_max_pos"),
            &[20.0, 2048.0, 2048.0],
        )?;
        let audio_max_pos = positions(c.get("audio_positional_embedding_max_pos"), &[20.0])?;
        let video_connector = ConnectorConfig {
            heads: int("connector_num_attention_heads", 30),
            head_dim: int("connector_attention_head_dim", 128),
            layers: int("connector_num_layers", 2),
            gated_attention: flag("connector_apply_gated_attention"),
        };
        let audio_connector = ConnectorConfig {
            heads: int("audio_connector_num_attention_heads", video_connector.heads),
            head_dim: int(
                "audio_connector_attention_head_dim",
                video_connector.head_dim,
            ),
            layers: video_connector.layers,
            gated_attention: video_connector.gated_attention,
        };
        Ok(Self {
            video: StreamConfig {
                heads: int("num_attention_heads", 32),
                head_dim: int("attention_head_dim", 128),
                in_channels: int("in_channels", 128),
                context_dim: int("cross_attention_dim", 4096),
            },
            audio: StreamConfig {
                heads: int("audio_num_attention_heads", 32),
                head_dim: int("audio_attention_head_dim", 64),
                in_channels: int("audio_in_channels", 128),
                context_dim: int("audio_cross_attention_dim", 2048),
            },
            caption_channels: int("caption_channels", 3840),
            layers: c
                .get("num_layers")
                .and_then(Value::as_i64)
                .context("the LTX config has no num_layers")?,
            theta: float("positional_embedding_theta", 10000.0),
            max_pos: [max_pos[0], max_pos[1], max_pos[2]],
            audio_max_pos: audio_max_pos[0],
            causal_temporal_positioning: flag("causal_temporal_positioning"),
            use_middle_indices_grid: flag("use_middle_indices_grid"),
            timestep_scale: float("timestep_scale_multiplier", 1000.0),
            av_ca_timestep_scale: float("av_ca_timestep_scale_multiplier", 1.0),
            double_precision_rope: c.get("frequencies_precision").and_then(Value::as_str)
                == Some("float64"),
            video_connector,
            audio_connector,
            gated_attention: flag("apply_gated_attention"),
            prompt_modulation,
            caption_proj_before_connector,
        })
    }
}

/// A `*_max_pos` list, which must have as many entries as `default`.
fn positions(value: Option<&Value>, default: &[f64]) -> Result<Vec<f64>> {
    let Some(list) = value else {
        return Ok(default.to_vec());
    };
    let parsed: Vec<f64> = list
        .as_array()
        .context("a max_pos entry is not a list")?
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    if parsed.len() != default.len() {
        bail!("expected {} max_pos entries, got {list}", default.len());
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metadata_overrides_comfyui_defaults() {
        let c = AvConfig::from_detected(&json!({
            "num_layers": 48, "attention_head_dim": 128, "cross_attention_dim": 4096,
            "rope_type": "split", "frequencies_precision": "float64",
            "av_ca_timestep_scale_multiplier": 1000, "use_middle_indices_grid": true,
        }))
        .unwrap();
        assert_eq!(c.video.inner(), 4096);
        assert_eq!(c.audio.inner(), 2048);
        assert_eq!(c.av_ca_timestep_scale, 1000.0);
        assert!(c.double_precision_rope && c.use_middle_indices_grid);
        assert!(!c.causal_temporal_positioning);
        assert_eq!(c.video_connector.heads * c.video_connector.head_dim, 3840);
    }

    #[test]
    fn ltx_2_3_switches_are_read() {
        let c = AvConfig::from_detected(&json!({
            "num_layers": 48, "rope_type": "split", "cross_attention_adaln": true,
            "apply_gated_attention": true, "connector_apply_gated_attention": true,
            "caption_proj_before_connector": true, "caption_projection_first_linear": false,
            "connector_num_attention_heads": 32, "connector_num_layers": 8,
            "audio_connector_attention_head_dim": 64, "audio_connector_num_attention_heads": 32,
        }))
        .unwrap();
        assert!(c.gated_attention && c.prompt_modulation && c.caption_proj_before_connector);
        assert!(c.video_connector.gated_attention && c.audio_connector.gated_attention);
        assert_eq!(
            c.video_connector.heads * c.video_connector.head_dim,
            c.video.inner()
        );
        assert_eq!(
            c.audio_connector.heads * c.audio_connector.head_dim,
            c.audio.inner()
        );
        assert_eq!(c.audio_connector.layers, 8);
    }

    #[test]
    fn later_layouts_are_refused() {
        let err = AvConfig::from_detected(&json!({
            "num_layers": 48, "rope_type": "split", "cross_attention_adaln": true,
            "use_prompt_adaln_single": false,
        }))
        .unwrap_err();
        assert!(err.to_string().contains("LTX-2.5"), "{err}");
        let err = AvConfig::from_detected(&json!({
            "num_layers": 48, "rope_type": "split", "caption_proj_before_connector": true,
        }))
        .unwrap_err();
        assert!(err.to_string().contains("caption projection"), "{err}");
        let err = AvConfig::from_detected(&json!({"num_layers": 2})).unwrap_err();
        assert!(err.to_string().contains("interleaved"), "{err}");
    }
}
