//! What the LTX video VAE's layers are, as ComfyUI decides it (`VideoVAE.__init__` in
//! `comfy/ldm/lightricks/vae/causal_video_autoencoder.py`): the checkpoint's `config.vae`
//! metadata when it has one (LTX-2 files do), else a built-in block list picked by tensor
//! shapes (`comfy/sd.py`). Channel widths are read from the weights, so the config only names
//! the blocks, their strides and the switches.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// The blocks of the layout LTX-Video 0.9.5 introduced and LTX-2 keeps; LTX-Video 0.9 and
/// 0.9.1's strided convolutions and width-changing residual blocks are refused.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Block {
    /// `res_x`: residual blocks at one width.
    Res,
    /// Encoder `compress_*_res`: space-to-depth with an averaged skip.
    SpaceToDepth { stride: [i64; 3] },
    /// Decoder `compress_*`: depth-to-space, with or without the repeated skip.
    DepthToSpace { stride: [i64; 3], residual: bool },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Padding {
    Zeros,
    Reflect,
}

#[derive(Clone, Debug, PartialEq)]
pub struct VaeConfig {
    pub encoder_blocks: Vec<Block>,
    pub decoder_blocks: Vec<Block>,
    /// Pixels per side folded into channels before the encoder.
    pub patch_size: i64,
    pub encoder_padding: Padding,
    pub decoder_padding: Padding,
    pub causal_decoder: bool,
    pub timestep_conditioning: bool,
    /// Decoding mixes this much noise into the latent and tells the decoder this timestep
    /// (timestep-conditioned decoders only).
    pub decode_noise_scale: f64,
    pub decode_timestep: f64,
}

impl VaeConfig {
    /// The metadata config (`None` when the file has none) or the default for `version`.
    pub fn new(metadata: Option<&Value>, version: u8) -> Result<Self> {
        let default;
        let config = match metadata {
            Some(m) if m.is_object() => m,
            _ => {
                default = default_config(version)?;
                &default
            }
        };
        Self::parse(config).context("the LTX VAE's config")
    }

    fn parse(c: &Value) -> Result<Self> {
        let norm = c.get("norm_layer").and_then(Value::as_str);
        if norm.unwrap_or("group_norm") != "pixel_norm" {
            bail!(
                "norm_layer {:?} is not supported (LTX VAEs use pixel_norm)",
                norm.unwrap_or("group_norm")
            );
        }
        let blocks = |key: &str| {
            c.get(key)
                .or_else(|| c.get("blocks"))
                .with_context(|| format!("no {key}"))
        };
        let padding = |default: Padding| match c.get("spatial_padding_mode").and_then(Value::as_str)
        {
            None => Ok(default),
            Some("zeros") => Ok(Padding::Zeros),
            Some("reflect") => Ok(Padding::Reflect),
            Some(other) => bail!("spatial_padding_mode {other:?} is not supported"),
        };
        let flag = |key: &str| c.get(key).and_then(Value::as_bool).unwrap_or(false);
        let number =
            |key: &str, default: f64| c.get(key).and_then(Value::as_f64).unwrap_or(default);
        Ok(Self {
            encoder_blocks: parse_blocks(blocks("encoder_blocks")?, false)?,
            decoder_blocks: parse_blocks(blocks("decoder_blocks")?, true)?,
            patch_size: c.get("patch_size").and_then(Value::as_i64).unwrap_or(1),
            encoder_padding: padding(Padding::Zeros)?,
            decoder_padding: padding(Padding::Reflect)?,
            causal_decoder: flag("causal_decoder"),
            timestep_conditioning: flag("timestep_conditioning"),
            decode_noise_scale: number("decode_noise_scale", 0.025),
            decode_timestep: number("decode_timestep", 0.05),
        })
    }

    /// Frames per latent frame after the first: 2 per temporal downsampling.
    pub fn temporal_ratio(&self) -> i64 {
        self.encoder_blocks
            .iter()
            .filter_map(|b| match b {
                Block::SpaceToDepth { stride } => Some(stride[0]),
                _ => None,
            })
            .product()
    }

    /// Pixels per latent cell along each side.
    pub fn spatial_ratio(&self) -> i64 {
        let strides: i64 = self
            .encoder_blocks
            .iter()
            .filter_map(|b| match b {
                Block::SpaceToDepth { stride } => Some(stride[1]),
                _ => None,
            })
            .product();
        strides * self.patch_size
    }
}

/// `[name, n]` or `[name, {params}]` pairs; `res_x` entries stand for as many residual blocks
/// as the weights hold.
fn parse_blocks(list: &Value, decoder: bool) -> Result<Vec<Block>> {
    let list = list.as_array().context("a block list is not a list")?;
    list.iter()
        .map(|entry| {
            let name = entry
                .get(0)
                .and_then(Value::as_str)
                .with_context(|| format!("block {entry} has no name"))?;
            let params = entry.get(1).cloned().unwrap_or(Value::Null);
            block(name, &params, decoder).with_context(|| format!("block {entry}"))
        })
        .collect()
}

fn block(name: &str, params: &Value, decoder: bool) -> Result<Block> {
    const OLD_LAYOUT: &str = "is an LTX-Video 0.9 / 0.9.1 VAE block, which is not supported \
                              (the 0.9.5 and LTX-2 layouts are)";
    let stride = match name.trim_end_matches("_res") {
        "res_x" => return Ok(Block::Res),
        "compress_time" => [2, 1, 1],
        "compress_space" => [1, 2, 2],
        "compress_all" => [2, 2, 2],
        "res_x_y" | "compress_all_x_y" => bail!("{name} {OLD_LAYOUT}"),
        other => bail!("unknown block {other:?}"),
    };
    if params.get("inject_noise").and_then(Value::as_bool) == Some(true) {
        bail!("decoder noise injection {OLD_LAYOUT}");
    }
    Ok(match (decoder, name.ends_with("_res")) {
        (true, false) => Block::DepthToSpace {
            stride,
            residual: params.get("residual").and_then(Value::as_bool) == Some(true),
        },
        (false, true) => Block::SpaceToDepth { stride },
        (true, true) => bail!("{name} is an encoder block"),
        (false, false) => bail!("{name} {OLD_LAYOUT}"),
    })
}

/// ComfyUI's `VideoVAE.get_default_config` for files without a config: 0 and 1 are LTX-Video
/// 0.9 / 0.9.1 (refused), 2 is 0.9.5 and later.
fn default_config(version: u8) -> Result<Value> {
    if version < 2 {
        bail!("LTX-Video 0.9 and 0.9.1 VAEs are not supported (0.9.5 and LTX-2 VAEs are)");
    }
    Ok(json!({
        "encoder_blocks": [["res_x", {"num_layers": 4}],
                           ["compress_space_res", {"multiplier": 2}],
                           ["res_x", {"num_layers": 6}],
                           ["compress_time_res", {"multiplier": 2}],
                           ["res_x", {"num_layers": 6}],
                           ["compress_all_res", {"multiplier": 2}],
                           ["res_x", {"num_layers": 2}],
                           ["compress_all_res", {"multiplier": 2}],
                           ["res_x", {"num_layers": 2}]],
        "decoder_blocks": [["res_x", {"num_layers": 5, "inject_noise": false}],
                           ["compress_all", {"residual": true, "multiplier": 2}],
                           ["res_x", {"num_layers": 5, "inject_noise": false}],
                           ["compress_all", {"residual": true, "multiplier": 2}],
                           ["res_x", {"num_layers": 5, "inject_noise": false}],
                           ["compress_all", {"residual": true, "multiplier": 2}],
                           ["res_x", {"num_layers": 5, "inject_noise": false}]],
        "norm_layer": "pixel_norm", "patch_size": 4, "latent_log_var": "uniform",
        "timestep_conditioning": true,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ltx2_layout_compresses_8x_in_time_and_32x_in_space() {
        let c = VaeConfig::new(None, 2).unwrap();
        assert_eq!((c.temporal_ratio(), c.spatial_ratio()), (8, 32));
        assert_eq!(
            c.encoder_blocks[1],
            Block::SpaceToDepth { stride: [1, 2, 2] }
        );
        assert_eq!(
            c.decoder_blocks[1],
            Block::DepthToSpace {
                stride: [2, 2, 2],
                residual: true
            }
        );
        assert_eq!(
            (c.encoder_padding, c.decoder_padding),
            (Padding::Zeros, Padding::Reflect)
        );
        assert!(c.timestep_conditioning && !c.causal_decoder);
    }

    #[test]
    fn metadata_replaces_the_default_and_bad_blocks_are_named() {
        let meta = json!({"encoder_blocks": [["res_x", 1], ["compress_time_res", {}]],
                          "decoder_blocks": [["compress_time", {}], ["res_x", 1]],
                          "patch_size": 2, "norm_layer": "pixel_norm",
                          "spatial_padding_mode": "zeros"});
        let c = VaeConfig::new(Some(&meta), 2).unwrap();
        assert_eq!(
            c.encoder_blocks[1],
            Block::SpaceToDepth { stride: [2, 1, 1] }
        );
        assert_eq!(
            c.decoder_blocks[0],
            Block::DepthToSpace {
                stride: [2, 1, 1],
                residual: false
            }
        );
        assert_eq!((c.temporal_ratio(), c.spatial_ratio()), (2, 2));
        assert_eq!(c.decoder_padding, Padding::Zeros);
        assert!(!c.timestep_conditioning);
        let error = |meta: Value| format!("{:#}", VaeConfig::new(Some(&meta), 2).unwrap_err());
        let err = error(json!({"blocks": [["attn", 1]], "norm_layer": "pixel_norm"}));
        assert!(err.contains("unknown block \"attn\""), "{err}");
        let err = error(json!({"blocks": [["res_x_y", 1]], "norm_layer": "pixel_norm"}));
        assert!(err.contains("LTX-Video 0.9 / 0.9.1"), "{err}");
        let err = format!("{:#}", VaeConfig::new(None, 1).unwrap_err());
        assert!(err.contains("0.9.1 VAEs are not supported"), "{err}");
    }
}
