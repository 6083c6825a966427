//! ComfyUI's CLIP value for the text encoders we run: the tokenizer plus a key into the
//! `ModelManager` (the encoder loads on first use and may be evicted between prompts).
//! `encode` is `CLIPTextEncode`: prompt weights, padding, attention mask, weighted tokens
//! interpolated against the empty prompt (`ClipTokenWeightEncoder.encode_token_weights`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use super::loading::{component, load_component};
use super::prompt_tokens::{tokenize_with_weights, Framing};
use super::sentencepiece::SentencePiece;
use super::t5::{T5Config, T5Encoder};
use crate::runtime::manager::{Loaded, ModelManager};
use crate::runtime::safetensors_file::SafetensorsFile;
use crate::sampling::model::CondEntry;

/// The padded length ComfyUI gives UMT5 prompts (Wan's text length).
const UMT5_MIN_LENGTH: usize = 512;

pub struct TextEncoder {
    manager: Arc<ModelManager>,
    path: PathBuf,
    prefix: String,
    /// The detected T5/UMT5 config.
    config: serde_json::Value,
    device: Device,
    tokenizer: SentencePiece,
    pad: u32,
    end: u32,
}

impl TextEncoder {
    /// CLIPLoader with `type` `wan`: a UMT5-XXL file with its `spiece_model`; `cpu` keeps the
    /// encoder on the CPU (the node's `device` input).
    pub fn umt5(manager: Arc<ModelManager>, path: &Path, cpu: bool) -> Result<Self> {
        let file = SafetensorsFile::open(path)?;
        let found = component(&file, "text_encoder")?;
        if !matches!(found.architecture.as_str(), "umt5" | "t5") {
            bail!(
                "{} is a {} text encoder; type wan needs UMT5-XXL",
                path.display(),
                found.architecture
            );
        }
        let spiece = format!("{}spiece_model", found.prefix);
        let bytes = file.bytes(&spiece).with_context(|| {
            format!(
                "{} has no spiece_model tensor (the SentencePiece model ComfyUI's \
                 umt5_xxl_*.safetensors files carry); use one of those files",
                path.display()
            )
        })?;
        let tokenizer = SentencePiece::from_proto(bytes)?;
        let end = tokenizer
            .eos_id()
            .context("the SentencePiece model has no end-of-sequence token")?;
        Ok(Self {
            device: if cpu { Device::Cpu } else { manager.device() },
            manager,
            path: path.to_path_buf(),
            prefix: found.prefix,
            config: found.config,
            tokenizer,
            pad: 0,
            end,
        })
    }

    fn framing(&self) -> Framing {
        Framing {
            start: None,
            end: Some(self.end),
            pad: self.pad,
            max_length: 99_999_999,
            min_length: Some(UMT5_MIN_LENGTH),
            pad_to_max_length: false,
        }
    }

    /// The prompt's token batches, `(id, weight)`.
    pub fn tokenize(&self, text: &str) -> Vec<Vec<(u32, f64)>> {
        tokenize_with_weights(text, &self.framing(), |w| self.tokenizer.encode(w))
    }

    fn encoder(&self) -> Result<Arc<Loaded<T5Encoder>>> {
        load_component(
            &self.manager,
            self.device,
            "text_encoder",
            &self.path,
            &self.prefix,
            |w| T5Encoder::load(w, T5Config::from_detected(&self.config, w)?),
        )
    }

    /// `CLIPTextEncode`: the conditioning entry for `text` (float32 on the CPU).
    pub fn encode(&self, text: &str) -> Result<CondEntry> {
        let batches = self.tokenize(text);
        let has_weights = batches.iter().flatten().any(|(_, w)| *w != 1.0);
        let longest = batches.iter().map(Vec::len).max().unwrap_or(0);
        let mut rows: Vec<Vec<u32>> = batches
            .iter()
            .map(|b| b.iter().map(|(t, _)| *t).collect())
            .collect();
        if has_weights {
            // `gen_empty_tokens`: end token, then padding.
            let mut empty = vec![self.end];
            empty.resize(longest, self.pad);
            rows.push(empty);
        }
        let encoder = self.encoder()?;
        let mut outputs = Vec::new();
        for row in &rows {
            outputs.push(self.encode_row(&encoder, row)?);
        }
        let sections: Vec<Tensor> = batches
            .iter()
            .zip(&outputs)
            .map(|(batch, z)| {
                if !has_weights {
                    return z.shallow_clone();
                }
                let empty = outputs.last().expect("empty row encoded");
                let weights: Vec<f32> = batch.iter().map(|(_, w)| *w as f32).collect();
                let w = Tensor::from_slice(&weights).view([1, -1, 1]);
                (z - empty) * w + empty
            })
            .collect();
        Ok(CondEntry::new(Tensor::cat(&sections, 1)))
    }

    /// One padded row through the encoder: attention up to and including the first end token
    /// (ComfyUI's mask), padded outputs zeroed.
    fn encode_row(&self, encoder: &T5Encoder, row: &[u32]) -> Result<Tensor> {
        let ids: Vec<i64> = row.iter().map(|&t| t as i64).collect();
        let end = row
            .iter()
            .position(|&t| t == self.end)
            .map_or(row.len(), |i| i + 1);
        let mask: Vec<i64> = (0..row.len()).map(|i| i64::from(i < end)).collect();
        let ids = Tensor::from_slice(&ids)
            .view([1, -1])
            .to_device(self.device);
        let mask = Tensor::from_slice(&mask)
            .view([1, -1])
            .to_device(self.device);
        let z = encoder.forward(&ids, Some(&mask))?;
        Ok(z.to_kind(Kind::Float).to_device(Device::Cpu))
    }
}
