//! ComfyUI's CLIP value for the text encoders we run: per encoder a tokenizer plus a key into
//! the `ModelManager` (each encoder loads on first use and may be evicted between prompts), and
//! the family's recipe for combining them (`comfy/sd1_clip.py`, `sdxl_clip.py`,
//! `text_encoders/flux.py`, `wan.py`):
//!
//! * Wan: UMT5-XXL, masked, padded outputs zeroed;
//! * FLUX: T5-XXL states (unmasked, ≥256 tokens) with CLIP-L's pooled output;
//! * SDXL: CLIP-L ⊕ CLIP-G penultimate states, CLIP-G's projected pooled output (the refiner:
//!   CLIP-G alone);
//! * LTX-2: Gemma 3's hidden states as LTX text features, projected by the LTX checkpoint's
//!   `text_embedding_projection` (`text_encoders/lt.py`).
//!
//! `encode` is `CLIPTextEncode`: prompt weights, textual-inversion embeddings, padding, weighted
//! tokens interpolated against the empty prompt (`ClipTokenWeightEncoder.encode_token_weights`).
//! LoraLoader's text-encoder LoRAs merge into each encoder as it loads, keyed as ComfyUI names
//! the CLIP value's weights (`clip_l.transformer.…`, `t5xxl.transformer.…`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use super::clip_text::{self, ClipLayer, ClipTextModel};
use super::clip_tokenizer::{self, ClipTokenizer, END_TOKEN, START_TOKEN};
use super::clip_vision::Activation;
use super::embeddings::EmbeddingTable;
use super::gemma3::{Gemma3Config, Gemma3Text};
use super::gemma3_vision::Gemma3Vision;
use super::loading::{component, load_component, stored_dtype, LoadTarget, LoraMerge, Precision};
use super::ltx::text_features::{FeatureProjection, PROJECTION_PREFIX};
use super::prompt_tokens::{tokenize_with_weights, Framing};
use super::sentencepiece::SentencePiece;
use super::t5::{T5Config, T5Encoder};
use super::text_generation::{generate, Decoding};
use crate::engine::value::SharedTensor;
use crate::runtime::detect::Detected;
use crate::runtime::lora::clip_key_map;
use crate::runtime::manager::{Loaded, ModelManager};
use crate::runtime::safetensors_file::SafetensorsFile;
use crate::sampling::model::CondEntry;

/// How the family combines its encoders' outputs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Recipe {
    Wan,
    Flux,
    Sdxl,
    /// The SDXL refiner: CLIP-G alone.
    SdxlRefiner,
    /// SAM 3's CLIP tower: the final-normed states with their attention mask, one entry per
    /// comma-separated prompt.
    Sam3,
    /// LTX-2: the projected Gemma 3 features, which the model's connectors take.
    LtxAv,
}

/// Which CLIP tower a part is (their defaults differ).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ClipRole {
    L,
    G,
    /// SAM 3's tower: CLIP-L's activation, 32-token rows padded with 0, no prompt weights, the
    /// padding masked out of the attention.
    Sam3,
}

enum Tokens {
    SentencePiece(Box<SentencePiece>),
    Clip(&'static ClipTokenizer),
}

/// One encoder of the CLIP value.
struct Part {
    path: PathBuf,
    found: Detected,
    tokens: Tokens,
    framing: Framing,
    model: PartModel,
    /// ComfyUI's name for this encoder in the CLIP value (`clip_l`, `clip_g`, `t5xxl`,
    /// `umt5xxl`): the key of its vectors in embedding files and its LoRA namespace.
    name: &'static str,
    /// The token vectors' width.
    width: i64,
    /// Tokens the tokenizer splits out of the text before encoding it (Gemma's).
    special: &'static [(&'static str, u32)],
    /// The weights a LoRA may patch, as ComfyUI names them under `<name>.transformer.`.
    lora_targets: Vec<String>,
}

enum PartModel {
    /// `masked`: attention stops after the end token and padded outputs are zeroed (Wan).
    /// `held`: what its Linear weights stay in on a GPU (ComfyUI's `dtype_t5`: the file's
    /// half or full precision; fp16 beside FP8 layers).
    T5 {
        masked: bool,
        held: Kind,
    },
    Clip {
        role: ClipRole,
        layer: ClipLayer,
    },
    /// Gemma 3, its hidden states made LTX-2 text features by the projection in the LTX
    /// checkpoint at `projection`.
    Gemma3Ltx {
        projection: PathBuf,
    },
}

/// One part's output for a prompt: states `[1, T, D]`, the pooled vector `[1, D]` and, for
/// towers run with their padding masked, the attention mask `[1, T]`.
struct Encoded {
    context: Tensor,
    pooled: Option<Tensor>,
    mask: Option<Tensor>,
}

#[derive(Clone)]
pub struct TextEncoder {
    manager: Arc<ModelManager>,
    device: Device,
    recipe: Recipe,
    parts: Arc<Vec<Part>>,
    /// CLIPSetLastLayer's choice, replacing each CLIP tower's default layer.
    last_layer: Option<ClipLayer>,
    /// LoraLoader's text-encoder LoRAs with their strengths.
    loras: Vec<(PathBuf, f64)>,
    /// Where `embedding:name` files are looked up.
    embedding_dirs: Arc<Vec<PathBuf>>,
}

/// The file's text encoder, or one at `prefix` of a checkpoint.
fn find(path: &Path, prefix: Option<&str>) -> Result<(SafetensorsFile, Detected)> {
    let file = SafetensorsFile::open(path)?;
    let found = match prefix {
        None => component(&file, "text_encoder")?,
        Some(prefix) => crate::runtime::detect::detect(&file)?
            .into_iter()
            .find(|d| d.component == "text_encoder" && d.prefix == prefix)
            .with_context(|| format!("{} has no text encoder at {prefix}", path.display()))?,
    };
    Ok((file, found))
}

impl Part {
    /// A T5/UMT5 encoder (`located` by `find`) whose SentencePiece model is in the file
    /// (`spiece_model`) or at `tokenizer` (T5-XXL files carry none).
    fn t5(
        path: &Path,
        located: (SafetensorsFile, Detected),
        name: &'static str,
        tokenizer: Option<&Path>,
        min_length: usize,
        masked: bool,
    ) -> Result<Self> {
        let (file, found) = located;
        if !matches!(found.architecture.as_str(), "umt5" | "t5") {
            bail!(
                "{} is a {} text encoder, not T5/UMT5",
                path.display(),
                found.architecture
            );
        }
        let spiece = format!("{}spiece_model", found.prefix);
        let tokens = match (file.bytes(&spiece), tokenizer) {
            (Ok(bytes), _) => SentencePiece::from_proto(bytes)?,
            (Err(_), Some(model)) if model.is_file() => SentencePiece::from_proto(
                &std::fs::read(model).with_context(|| format!("reading {}", model.display()))?,
            )?,
            _ => bail!(
                "{} carries no tokenizer. T5-XXL's SentencePiece model is not in the file: put \
                 `spiece.model` from Hugging Face google/t5-v1_1-xxl (Apache-2.0) at \
                 models/text_encoders/t5_tokenizer/spiece.model, or use a file with a \
                 spiece_model tensor",
                path.display()
            ),
        };
        let end = tokens
            .eos_id()
            .context("the SentencePiece model has no end-of-sequence token")?;
        let lora_targets = lora_targets(&file, &found.prefix);
        let held = match stored_dtype(&file, &found.prefix) {
            Some(kind @ (Kind::BFloat16 | Kind::Float)) => kind,
            _ => Kind::Half,
        };
        Ok(Self {
            path: path.to_path_buf(),
            width: config_dim(&found, "d_model")?,
            found,
            name,
            lora_targets,
            tokens: Tokens::SentencePiece(Box::new(tokens)),
            special: &[],
            framing: Framing {
                start: None,
                end: Some(end),
                pad: 0,
                max_length: 99_999_999,
                min_length: Some(min_length),
                pad_to_max_length: false,
                weights: true,
            },
            model: PartModel::T5 { masked, held },
        })
    }

    /// A CLIP text tower (`located` by `find` in a file or checkpoint) in 77-token chunks;
    /// CLIP-L pads with the end token, CLIP-G with 0.
    fn clip(
        path: &Path,
        located: (SafetensorsFile, Detected),
        role: ClipRole,
        layer: ClipLayer,
    ) -> Result<Self> {
        let (file, found) = located;
        if !found.architecture.starts_with("clip_") {
            bail!(
                "{} is a {} text encoder, not CLIP",
                path.display(),
                found.architecture
            );
        }
        let projection = ["text_projection.weight", "text_projection"]
            .iter()
            .any(|n| file.contains(&format!("{}{n}", found.prefix)));
        let layers = config_dim(&found, "num_layers")? as usize;
        Ok(Self {
            path: path.to_path_buf(),
            width: config_dim(&found, "hidden_size")?,
            found,
            name: match role {
                ClipRole::L => "clip_l",
                ClipRole::G => "clip_g",
                ClipRole::Sam3 => "sam3_clip",
            },
            lora_targets: clip_text::lora_targets(layers, projection),
            tokens: Tokens::Clip(clip_tokenizer::shared()?),
            special: &[],
            framing: Framing {
                start: Some(START_TOKEN),
                end: Some(END_TOKEN),
                pad: if role == ClipRole::L { END_TOKEN } else { 0 },
                max_length: if role == ClipRole::Sam3 { 32 } else { 77 },
                min_length: None,
                pad_to_max_length: true,
                weights: role != ClipRole::Sam3,
            },
            model: PartModel::Clip { role, layer },
        })
    }

    /// Gemma 3 (`located` by `find`) with its SentencePiece model from the file, for LTX-2: the
    /// prompt as written (no weights) after the start token, no end token and no padding
    /// (ComfyUI pads on the left and cuts the padding off again).
    fn gemma3_ltx(
        path: &Path,
        located: (SafetensorsFile, Detected),
        projection: &Path,
    ) -> Result<Self> {
        let (file, found) = located;
        if found.architecture != "gemma3" {
            bail!(
                "{} is a {} text encoder, not Gemma 3",
                path.display(),
                found.architecture
            );
        }
        let spiece = format!("{}spiece_model", found.prefix);
        let tokens = SentencePiece::from_proto(
            file.bytes(&spiece)
                .with_context(|| format!("{} carries no spiece_model", path.display()))?,
        )?;
        let lora_targets = lora_targets(&file, &found.prefix);
        Ok(Self {
            path: path.to_path_buf(),
            width: config_dim(&found, "hidden_size")?,
            found,
            name: "gemma3_12b",
            lora_targets,
            tokens: Tokens::SentencePiece(Box::new(tokens)),
            special: &GEMMA_SPECIAL,
            framing: Framing {
                start: Some(GEMMA_BOS),
                end: None,
                pad: 0,
                max_length: 99_999_999,
                min_length: None,
                pad_to_max_length: false,
                weights: false,
            },
            model: PartModel::Gemma3Ltx {
                projection: projection.to_path_buf(),
            },
        })
    }

    /// This encoder's load target on `device`, its Linear weights held in `held` on a GPU.
    fn target<'a>(&'a self, kind: &'a str, device: Device, held: Kind) -> LoadTarget<'a> {
        LoadTarget {
            kind,
            path: &self.path,
            prefix: &self.found.prefix,
            device,
            precision: Precision::encoder(device, held),
        }
    }

    /// The end token; Gemma has none, and the start token stands in.
    fn end(&self) -> u32 {
        self.framing
            .end
            .or(self.framing.start)
            .expect("every part has a start or an end token")
    }

    /// The prompt's token batches; the vectors of its embeddings are collected in `table`.
    fn tokenize(&self, text: &str, table: &mut EmbeddingTable) -> Vec<Vec<(u32, f64)>> {
        let words = |w: &str| match &self.tokens {
            Tokens::SentencePiece(sp) => encode_with_special(w, self.special, |t| sp.encode(t)),
            Tokens::Clip(clip) => clip.encode(w),
        };
        tokenize_with_weights(text, &self.framing, words, |name| table.ids(name))
    }

    /// Where this encoder's weights sit in ComfyUI's CLIP value.
    fn namespace(&self) -> String {
        format!("{}.transformer.", self.name)
    }

    /// `gen_empty_tokens`: start, end, then padding to `length`.
    fn empty_row(&self, length: usize) -> Vec<u32> {
        let mut row: Vec<u32> = self.framing.start.into_iter().collect();
        row.push(self.end());
        row.resize(length.max(row.len()), self.framing.pad);
        row
    }

    /// The rows through the encoder: states `[rows, T, D]` and pooled `[rows, D]`, float32 on
    /// the CPU.
    fn encode_rows(
        &self,
        how: &Encoding,
        rows: &[Vec<u32>],
        embeddings: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
        let device = how.device;
        let namespace = self.namespace();
        let key_map = self.own_lora_keys(how.lora_map);
        let loras = lora_merge(how, key_map.as_ref(), &namespace);
        let ids = |row: &[u32]| {
            let ids: Vec<i64> = row.iter().map(|&t| t as i64).collect();
            Tensor::from_slice(&ids).view([1, -1]).to_device(device)
        };
        let cpu = |t: Tensor| t.to_kind(Kind::Float).to_device(Device::Cpu);
        let kind = format!("text_encoder:{}", self.found.prefix);
        match &self.model {
            PartModel::T5 { masked, held } => {
                let config = &self.found.config;
                let encoder = load_component(
                    how.manager,
                    &self.target(&kind, device, *held),
                    loras.as_ref(),
                    |w| T5Encoder::load(w, T5Config::from_detected(config, w)?),
                )?;
                let mut out = Vec::new();
                for row in rows {
                    let mask = masked.then(|| self.through_end(std::slice::from_ref(row), device));
                    out.push(cpu(encoder.forward(
                        &ids(row),
                        mask.as_ref(),
                        embeddings,
                    )?));
                }
                Ok((Tensor::cat(&out, 0), None, None))
            }
            PartModel::Gemma3Ltx { projection } => {
                let model = self.gemma3(how, loras.as_ref())?;
                let feature_projection = load_component(
                    how.manager,
                    &LoadTarget {
                        kind: "ltx_text_projection",
                        path: projection,
                        prefix: PROJECTION_PREFIX,
                        device,
                        precision: gemma3_precision(device),
                    },
                    None,
                    FeatureProjection::load,
                )?;
                let mut out = Vec::new();
                for row in rows {
                    let states = model.hidden_states(&ids(row))?;
                    out.push(cpu(feature_projection.project(&states)?));
                }
                Ok((Tensor::cat(&out, 0), None, None))
            }
            PartModel::Clip { role, layer } => {
                let activation = match role {
                    ClipRole::L | ClipRole::Sam3 => Activation::QuickGelu,
                    ClipRole::G => Activation::Gelu,
                };
                // CLIP holds every weight in float32 (clip_text.rs).
                let model = load_component(
                    how.manager,
                    &self.target(&kind, device, Kind::Float),
                    loras.as_ref(),
                    |w| ClipTextModel::load(w, activation),
                )?;
                let batch: Vec<Tensor> = rows.iter().map(|r| ids(r)).collect();
                let layer = how.last_layer.unwrap_or(*layer);
                let ids = Tensor::cat(&batch, 0);
                // SDClipModel's attention mask: 1 through each row's first end token.
                let keep = (*role == ClipRole::Sam3).then(|| self.through_end(rows, device));
                let out = model.forward_masked(
                    &ids,
                    self.end() as i64,
                    layer,
                    embeddings,
                    keep.as_ref(),
                )?;
                let pooled = match role {
                    ClipRole::L | ClipRole::Sam3 => out.pooled,
                    ClipRole::G => out.projected.unwrap_or(out.pooled),
                };
                let keep = keep.map(|k| k.to_device(Device::Cpu));
                Ok((cpu(out.hidden), Some(cpu(pooled)), keep))
            }
        }
    }

    /// This part's share of the CLIP value's LoRA key map, so it reads only its own patches.
    fn own_lora_keys(
        &self,
        map: Option<&BTreeMap<String, String>>,
    ) -> Option<BTreeMap<String, String>> {
        let namespace = self.namespace();
        map.map(|map| {
            map.iter()
                .filter(|(_, target)| target.starts_with(&namespace))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }

    /// This part's Gemma 3, its LoRAs merged.
    fn gemma3(&self, how: &Encoding, loras: Option<&LoraMerge>) -> Result<Arc<Loaded<Gemma3Text>>> {
        let device = how.device;
        let kind = format!("text_encoder:{}", self.found.prefix);
        let precision = gemma3_precision(device);
        let target = LoadTarget {
            precision,
            ..self.target(&kind, device, precision.linears)
        };
        load_component(how.manager, &target, loras, |w| {
            Gemma3Text::load(w, Gemma3Config::from_weights(w)?)
        })
    }

    /// This part's Gemma 3 vision tower and projector, run in float32 as ComfyUI runs them.
    fn gemma3_vision(&self, how: &Encoding) -> Result<Arc<Loaded<Gemma3Vision>>> {
        let kind = format!("text_encoder_vision:{}", self.found.prefix);
        let target = self.target(&kind, how.device, Kind::BFloat16);
        load_component(how.manager, &target, None, Gemma3Vision::load)
    }

    /// `[rows, T]` int64: 1 through each row's first end token, 0 after it.
    fn through_end(&self, rows: &[Vec<u32>], device: Device) -> Tensor {
        let masks: Vec<Tensor> = rows
            .iter()
            .map(|row| {
                let end = row
                    .iter()
                    .position(|&t| t == self.end())
                    .map_or(row.len(), |i| i + 1);
                let mask: Vec<i64> = (0..row.len()).map(|i| i64::from(i < end)).collect();
                Tensor::from_slice(&mask)
            })
            .collect();
        Tensor::stack(&masks, 0).to_device(device)
    }

    /// `encode_token_weights`: the prompt's chunks encoded with the empty prompt when weights
    /// differ from 1, weighted tokens interpolated against it, chunks joined along tokens.
    fn encode(
        &self,
        how: &Encoding,
        batches: &[Vec<(u32, f64)>],
        embeddings: Option<&Tensor>,
    ) -> Result<Encoded> {
        let has_weights = batches.iter().flatten().any(|(_, w)| *w != 1.0);
        let longest = batches.iter().map(Vec::len).max().unwrap_or(0);
        let mut rows: Vec<Vec<u32>> = batches
            .iter()
            .map(|b| b.iter().map(|(t, _)| *t).collect())
            .collect();
        if has_weights || rows.is_empty() {
            rows.push(self.empty_row(longest));
        }
        let (out, pooled, keep) = self.encode_rows(how, &rows, embeddings)?;
        let pooled = pooled.map(|p| p.narrow(0, 0, 1));
        if batches.is_empty() {
            let context = out.narrow(0, out.size()[0] - 1, 1);
            let mask = keep.map(|k| k.narrow(0, k.size()[0] - 1, 1));
            return Ok(Encoded {
                context,
                pooled,
                mask,
            });
        }
        // The chunks' masks side by side, as the sections are.
        let sections = batches.len() as i64;
        let mask = keep.map(|k| k.narrow(0, 0, sections).reshape([1, -1]));
        let empty = out.get(out.size()[0] - 1);
        let sections: Vec<Tensor> = batches
            .iter()
            .enumerate()
            .map(|(k, batch)| {
                let z = out.narrow(0, k as i64, 1);
                if !has_weights {
                    return z;
                }
                let weights: Vec<f32> = batch.iter().map(|(_, w)| *w as f32).collect();
                let w = Tensor::from_slice(&weights).view([1, -1, 1]);
                let weighted = (&z - &empty) * &w + &empty;
                z.where_self(&w.eq(1.0), &weighted)
            })
            .collect();
        Ok(Encoded {
            context: Tensor::cat(&sections, 1),
            pooled,
            mask,
        })
    }
}

/// What every part's encoding shares: where it runs, CLIPSetLastLayer's choice, the LoRAs and
/// their key map over the whole CLIP value.
struct Encoding<'a> {
    manager: &'a ModelManager,
    device: Device,
    last_layer: Option<ClipLayer>,
    loras: &'a [(PathBuf, f64)],
    lora_map: Option<&'a BTreeMap<String, String>>,
}

/// The CLIP value's LoRAs as merged into one part: its share of the key map, its namespace.
fn lora_merge<'a>(
    how: &Encoding<'a>,
    key_map: Option<&'a BTreeMap<String, String>>,
    namespace: &'a str,
) -> Option<LoraMerge<'a>> {
    key_map.map(|key_map| LoraMerge {
        files: how.loras,
        key_map,
        namespace,
    })
}

/// `_parse_prompts`: parentheses dropped, comma-separated parts, each with the count of
/// detections to keep (`part:N`, rounded, at least 1; 1 without).
fn sam3_prompts(text: &str) -> Vec<(String, usize)> {
    let text = text.replace(['(', ')'], "");
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|part| {
            // ComfyUI's `^(.+?)\s*:\s*([\d.]+)\s*$`, then `float()` of the count.
            let counted = part.rsplit_once(':').and_then(|(name, n)| {
                let n = n.trim();
                if n.is_empty() || !n.chars().all(|c| c.is_ascii_digit() || c == '.') {
                    return None;
                }
                let value: f64 = n.parse().ok()?;
                let name = name.trim();
                (!name.is_empty()).then(|| {
                    (
                        name.to_string(),
                        (crate::upscale::py_round(value)).max(1) as usize,
                    )
                })
            });
            counted.unwrap_or_else(|| (part.to_string(), 1))
        })
        .collect()
}

/// Gemma's start token.
const GEMMA_BOS: u32 = 2;
/// Gemma's prompts are padded on the left to this many tokens.
const GEMMA_MIN_LENGTH: usize = 1024;
/// Gemma's `<end_of_turn>`, which ends generation.
const GEMMA_END_OF_TURN: u32 = 106;
/// Gemma's `<image_soft_token>`, where an image's embeddings go.
const GEMMA_IMAGE_TOKEN: u32 = 262_144;
/// The tokens ComfyUI's Gemma tokenizer splits out itself and leaves out of decoded text.
const GEMMA_SPECIAL: [(&str, u32); 2] = [
    ("<image_soft_token>", GEMMA_IMAGE_TOKEN),
    ("<end_of_turn>", GEMMA_END_OF_TURN),
];
/// `Gemma3_Tokenizer.llama_template`, around the prompt, when TextGenerate uses the default
/// template.
const GEMMA_TEMPLATE: (&str, &str) = (
    "<start_of_turn>system\nYou are a helpful assistant.<end_of_turn>\n<start_of_turn>user\n",
    "<end_of_turn>\n<start_of_turn>model\n",
);

/// `Gemma3_Tokenizer.llama_template_images`, the default template with an image.
const GEMMA_IMAGE_TEMPLATE: (&str, &str) = (
    "<start_of_turn>system\nYou are a helpful assistant.<end_of_turn>\n<start_of_turn>user\n\n<image_soft_token>",
    "<end_of_turn>\n\n<start_of_turn>model\n",
);

/// ComfyUI runs Gemma in its stored half precision on a GPU (`dtype_llama`), float32 on the
/// CPU; generation computes in the same dtype (`BaseGenerate`'s `execution_dtype`).
fn gemma3_precision(device: Device) -> Precision {
    let kind = if device == Device::Cpu {
        Kind::Float
    } else {
        Kind::BFloat16
    };
    Precision {
        compute: kind,
        linears: kind,
    }
}

/// `SPieceTokenizer.__call__` as `SDTokenizer` slices it: a text holding one of `special` is
/// encoded part by part without a start token, each special token as its id, and the slice
/// `[tokens_start:]` that drops the start token of a plain text drops the first token there.
fn encode_with_special(
    text: &str,
    special: &[(&str, u32)],
    encode: impl Fn(&str) -> Vec<u32>,
) -> Vec<u32> {
    let next_special = |rest: &str| {
        special
            .iter()
            .filter_map(|&(s, id)| rest.find(s).map(|at| (at, s.len(), id)))
            .min_by_key(|&(at, _, _)| at)
    };
    if next_special(text).is_none() {
        return encode(text);
    }
    let mut ids = Vec::new();
    let mut rest = text;
    while let Some((at, len, id)) = next_special(rest) {
        if at > 0 {
            ids.extend(encode(&rest[..at]));
        }
        ids.push(id);
        rest = &rest[at + len..];
    }
    if !rest.is_empty() {
        ids.extend(encode(rest));
    }
    ids.remove(0);
    ids
}

/// The weights under `prefix` a LoRA may patch (every `.weight`), prefix-stripped.
fn lora_targets(file: &SafetensorsFile, prefix: &str) -> Vec<String> {
    file.names()
        .filter_map(|n| n.strip_prefix(prefix))
        .filter(|n| n.ends_with(".weight"))
        .map(str::to_string)
        .collect()
}

/// A number from the detected config.
fn config_dim(found: &Detected, key: &str) -> Result<i64> {
    found.config[key]
        .as_i64()
        .with_context(|| format!("the detected {} has no {key}", found.architecture))
}

/// The padded length ComfyUI gives UMT5 prompts (Wan's text length).
const UMT5_MIN_LENGTH: usize = 512;
/// FLUX's T5 prompts are padded to at least this many tokens.
const FLUX_T5_MIN_LENGTH: usize = 256;
/// SDXL's CLIP towers give their penultimate layer, not final-normed.
const PENULTIMATE: ClipLayer = ClipLayer::Hidden {
    index: -2,
    final_norm: false,
};

impl TextEncoder {
    /// CLIPLoader with `type` `wan`: a UMT5-XXL file with its `spiece_model`; `cpu` keeps the
    /// encoder on the CPU (the node's `device` input).
    pub fn umt5(manager: Arc<ModelManager>, path: &Path, cpu: bool) -> Result<Self> {
        let located = find(path, None)?;
        let part = Part::t5(path, located, "umt5xxl", None, UMT5_MIN_LENGTH, true)?;
        Ok(Self::new(manager, cpu, Recipe::Wan, vec![part]))
    }

    /// LTXAVTextEncoderLoader: Gemma 3 from `gemma`, the text projection from the LTX-2
    /// checkpoint `checkpoint`; `cpu` keeps both on the CPU.
    pub fn ltxav(
        manager: Arc<ModelManager>,
        gemma: &Path,
        checkpoint: &Path,
        cpu: bool,
    ) -> Result<Self> {
        let part = Part::gemma3_ltx(gemma, find(gemma, None)?, checkpoint)?;
        Ok(Self::new(manager, cpu, Recipe::LtxAv, vec![part]))
    }

    /// DualCLIPLoader with `type` `flux`: CLIP-L and T5-XXL in either order; `t5_tokenizer` is
    /// where T5's SentencePiece model is when the file carries none.
    pub fn flux(
        manager: Arc<ModelManager>,
        paths: [&Path; 2],
        t5_tokenizer: Option<&Path>,
        cpu: bool,
    ) -> Result<Self> {
        let located = [(paths[0], None), (paths[1], None)];
        Self::flux_parts(manager, located, t5_tokenizer, cpu)
    }

    /// FLUX's CLIP-L and T5-XXL inside a checkpoint, at `prefixes` (either order).
    pub fn flux_checkpoint(
        manager: Arc<ModelManager>,
        path: &Path,
        prefixes: [&str; 2],
        t5_tokenizer: Option<&Path>,
    ) -> Result<Self> {
        let located = [(path, Some(prefixes[0])), (path, Some(prefixes[1]))];
        Self::flux_parts(manager, located, t5_tokenizer, false)
    }

    /// CLIP-L and T5-XXL from the two (file, prefix) places, in either order.
    fn flux_parts(
        manager: Arc<ModelManager>,
        places: [(&Path, Option<&str>); 2],
        t5_tokenizer: Option<&Path>,
        cpu: bool,
    ) -> Result<Self> {
        let mut clip = None;
        let mut t5 = None;
        for (path, prefix) in places {
            let located = find(path, prefix)?;
            if located.1.architecture.starts_with("clip_") {
                clip = Some(Part::clip(path, located, ClipRole::L, ClipLayer::Last)?);
            } else {
                t5 = Some(Part::t5(
                    path,
                    located,
                    "t5xxl",
                    t5_tokenizer,
                    FLUX_T5_MIN_LENGTH,
                    false,
                )?);
            }
        }
        let (Some(clip), Some(t5)) = (clip, t5) else {
            bail!("type flux needs one CLIP-L and one T5-XXL text encoder");
        };
        Ok(Self::new(manager, cpu, Recipe::Flux, vec![clip, t5]))
    }

    /// SDXL's towers inside a checkpoint: CLIP-L at `l_prefix`, OpenCLIP-G at `g_prefix`.
    pub fn sdxl(
        manager: Arc<ModelManager>,
        path: &Path,
        l_prefix: &str,
        g_prefix: &str,
    ) -> Result<Self> {
        let parts = vec![
            Part::clip(path, find(path, Some(l_prefix))?, ClipRole::L, PENULTIMATE)?,
            Part::clip(path, find(path, Some(g_prefix))?, ClipRole::G, PENULTIMATE)?,
        ];
        Ok(Self::new(manager, false, Recipe::Sdxl, parts))
    }

    /// The SDXL refiner's OpenCLIP-G inside its checkpoint.
    pub fn sdxl_refiner(manager: Arc<ModelManager>, path: &Path, g_prefix: &str) -> Result<Self> {
        let part = Part::clip(path, find(path, Some(g_prefix))?, ClipRole::G, PENULTIMATE)?;
        Ok(Self::new(manager, false, Recipe::SdxlRefiner, vec![part]))
    }

    fn new(manager: Arc<ModelManager>, cpu: bool, recipe: Recipe, parts: Vec<Part>) -> Self {
        Self {
            device: if cpu { Device::Cpu } else { manager.device() },
            manager,
            recipe,
            parts: Arc::new(parts),
            last_layer: None,
            loras: Vec::new(),
            embedding_dirs: Arc::new(Vec::new()),
        }
    }

    /// The same encoders reading `embedding:name` files from `dirs` (the embeddings folders).
    pub fn with_embedding_dirs(self, dirs: Vec<PathBuf>) -> Self {
        Self {
            embedding_dirs: Arc::new(dirs),
            ..self
        }
    }

    /// LoraLoader's text-encoder half: one more LoRA merged into the encoders it names.
    pub fn with_lora(&self, path: &Path, strength: f64) -> Self {
        let mut next = self.clone();
        next.loras.push((path.to_path_buf(), strength));
        next
    }

    /// CLIPSetLastLayer: CLIP towers give hidden layer `index` (negative from the end; −1 is
    /// the last layer), not final-normed for SDXL; T5 is left as it is.
    pub fn with_last_layer(&self, index: i64) -> Self {
        Self {
            last_layer: Some(ClipLayer::Hidden {
                index,
                final_norm: !matches!(self.recipe, Recipe::Sdxl | Recipe::SdxlRefiner),
            }),
            ..self.clone()
        }
    }

    /// `CLIPTextEncode`: the conditioning entry (float32 on the CPU) for one text per part
    /// (CLIPTextEncodeSDXL gives `text_l`, `text_g`); the last text serves the remaining parts.
    pub fn encode_parts(&self, texts: &[&str]) -> Result<CondEntry> {
        let mut tables: Vec<EmbeddingTable> = self
            .parts
            .iter()
            .map(|p| EmbeddingTable::new(&self.embedding_dirs, p.name, p.width))
            .collect();
        let mut tokens: Vec<Vec<Vec<(u32, f64)>>> = self
            .parts
            .iter()
            .zip(&mut tables)
            .enumerate()
            .map(|(i, (p, table))| p.tokenize(texts[i.min(texts.len() - 1)], table))
            .collect();
        if self.recipe == Recipe::Sdxl {
            // CLIPTextEncodeSDXL: the tower with fewer chunks gets empty-prompt chunks.
            let chunks = tokens.iter().map(Vec::len).max().unwrap_or(0);
            for ((part, table), batches) in self.parts.iter().zip(&mut tables).zip(&mut tokens) {
                while batches.len() < chunks {
                    batches.extend(part.tokenize("", table));
                }
            }
        }
        let lora_map = (!self.loras.is_empty()).then(|| clip_key_map(&self.weight_names()));
        let how = self.encoding(lora_map.as_ref());
        let out: Vec<Encoded> = self
            .parts
            .iter()
            .zip(&tokens)
            .zip(&tables)
            .map(|((p, batches), table)| p.encode(&how, batches, table.table().as_ref()))
            .collect::<Result<_>>()?;
        let shared = |t: Tensor| Arc::new(SharedTensor::new(t));
        let (context, pooled) = match self.recipe {
            Recipe::Wan | Recipe::LtxAv => (out[0].context.shallow_clone(), None),
            Recipe::SdxlRefiner | Recipe::Sam3 => (
                out[0].context.shallow_clone(),
                out[0].pooled.as_ref().map(Tensor::shallow_clone),
            ),
            Recipe::Flux => (
                out[1].context.shallow_clone(),
                out[0].pooled.as_ref().map(Tensor::shallow_clone),
            ),
            Recipe::Sdxl => {
                let cut = out[0].context.size()[1].min(out[1].context.size()[1]);
                let l = out[0].context.narrow(1, 0, cut);
                let g = out[1].context.narrow(1, 0, cut);
                (
                    Tensor::cat(&[l, g], 2),
                    out[1].pooled.as_ref().map(Tensor::shallow_clone),
                )
            }
        };
        let mut entry = CondEntry::new(context);
        entry.pooled = pooled.map(shared);
        if let Some(mask) = &out[0].mask {
            entry
                .extra
                .insert("attention_mask".into(), shared(mask.shallow_clone()));
        }
        Ok(entry)
    }

    /// SAM 3's CLIPTextEncode (`SAM3TokenizerWrapper`): a prompt with several comma-separated
    /// parts, or one part with a count (`cat:2`), encodes each part on its own (parentheses
    /// dropped); the first is the entry's context, every part sits in its extras as
    /// `sam3_prompt.N.{cond,attention_mask,max_detections}`.
    fn encode_sam3(&self, text: &str) -> Result<CondEntry> {
        let parts = sam3_prompts(text);
        if parts.len() <= 1 && parts.first().is_none_or(|p| p.1 == 1) {
            return self.encode_parts(&[text]);
        }
        let encoded: Vec<CondEntry> = parts
            .iter()
            .map(|(part, _)| self.encode_parts(&[part.as_str()]))
            .collect::<Result<_>>()?;
        let mut entry = encoded[0].clone();
        for (i, ((_, count), e)) in parts.iter().zip(&encoded).enumerate() {
            let key = |n: &str| format!("sam3_prompt.{i}.{n}");
            let count = Tensor::from_slice(&[*count as i64]);
            entry.extra.insert(key("cond"), e.context.clone());
            if let Some(mask) = e.extra.get("attention_mask") {
                entry.extra.insert(key("attention_mask"), mask.clone());
            }
            entry
                .extra
                .insert(key("max_detections"), Arc::new(SharedTensor::new(count)));
        }
        Ok(entry)
    }

    /// The weights LoRAs may patch across all parts, as ComfyUI's CLIP value names them.
    fn weight_names(&self) -> Vec<String> {
        self.parts
            .iter()
            .flat_map(|p| {
                let namespace = p.namespace();
                p.lora_targets
                    .iter()
                    .map(move |t| format!("{namespace}{t}"))
            })
            .collect()
    }

    /// TextGenerate: Gemma 3's continuation of `prompt` (inside ComfyUI's default chat template
    /// when `template` and the prompt does not open a turn itself), decoded without the
    /// special tokens. `image` `[B, H, W, C]` becomes soft tokens in place of the first
    /// `<image_soft_token>`. `step` hears each generated token.
    pub fn generate(
        &self,
        prompt: &str,
        image: Option<&Tensor>,
        template: bool,
        max_length: usize,
        decoding: &Decoding,
        step: &mut dyn FnMut(u64, u64) -> Result<()>,
    ) -> Result<String> {
        let part = match (self.recipe, self.parts.first()) {
            (Recipe::LtxAv, Some(part)) => part,
            _ => bail!(
                "this CLIP cannot generate text: TextGenerate takes Gemma 3 (LTX-2's text \
                 encoder from LTXAVTextEncoderLoader)"
            ),
        };
        let Tokens::SentencePiece(sp) = &part.tokens else {
            bail!("Gemma 3 has a SentencePiece tokenizer");
        };
        let text = if template && !prompt.starts_with("<start_of_turn>") {
            let (open, close) = if image.is_some() {
                GEMMA_IMAGE_TEMPLATE
            } else {
                GEMMA_TEMPLATE
            };
            format!("{open}{prompt}{close}")
        } else {
            prompt.to_string()
        };
        let mut table = EmbeddingTable::new(&self.embedding_dirs, part.name, part.width);
        let tokens = part.tokenize(&text, &mut table).concat();
        // The tokenizer does not pass TextGenerate's `min_length=1` on, so ComfyUI pads the
        // prompt on the left to 1024 tokens, and generation attends to the padding too.
        let padding = GEMMA_MIN_LENGTH.saturating_sub(tokens.len());
        let ids: Vec<i64> = std::iter::repeat_n(i64::from(part.framing.pad), padding)
            .chain(tokens.iter().map(|&(t, _)| i64::from(t)))
            .collect();
        if table.table().is_some() {
            bail!("TextGenerate does not take textual-inversion embeddings (embedding:…)");
        }
        let lora_map = (!self.loras.is_empty()).then(|| clip_key_map(&self.weight_names()));
        let how = self.encoding(lora_map.as_ref());
        let namespace = part.namespace();
        let key_map = part.own_lora_keys(how.lora_map);
        let model = part.gemma3(
            &how,
            lora_merge(&how, key_map.as_ref(), &namespace).as_ref(),
        )?;
        // ComfyUI scales the prompt's embeddings in float32.
        let text_rows =
            |ids: &[i64]| model.embed(&Tensor::from_slice(ids).view([1, -1]), Kind::Float);
        let image_at = ids.iter().position(|&t| t == i64::from(GEMMA_IMAGE_TOKEN));
        let embeds = match (image, image_at) {
            (Some(image), Some(at)) => {
                let vision = part.gemma3_vision(&how)?;
                let soft = vision.embed(image)?.unsqueeze(0).to_kind(model.dtype());
                let pieces: Vec<Tensor> = [text_rows(&ids[..at]), soft, text_rows(&ids[at + 1..])]
                    .into_iter()
                    .filter(|t| t.size()[1] > 0)
                    .collect();
                Tensor::cat(&pieces, 1)
            }
            _ => text_rows(&ids),
        };
        let tokens = generate(
            &model,
            &embeds,
            max_length,
            &[GEMMA_END_OF_TURN],
            decoding,
            step,
        )?;
        let kept: Vec<u32> = tokens
            .into_iter()
            .filter(|t| GEMMA_SPECIAL.iter().all(|&(_, id)| id != *t))
            .collect();
        sp.decode(&kept)
    }

    /// What encoding and generation share for this CLIP value.
    fn encoding<'a>(&'a self, lora_map: Option<&'a BTreeMap<String, String>>) -> Encoding<'a> {
        Encoding {
            manager: &self.manager,
            device: self.device,
            last_layer: self.last_layer,
            loras: &self.loras,
            lora_map,
        }
    }

    pub fn encode(&self, text: &str) -> Result<CondEntry> {
        if self.recipe == Recipe::Sam3 {
            return self.encode_sam3(text);
        }
        self.encode_parts(&[text])
    }

    /// The CLIP of a SAM 3 checkpoint: its text tower at `prefix`.
    pub fn sam3(manager: Arc<ModelManager>, path: &Path, prefix: &str) -> Result<Self> {
        let part = Part::clip(
            path,
            find(path, Some(prefix))?,
            ClipRole::Sam3,
            ClipLayer::Last,
        )?;
        Ok(Self::new(manager, false, Recipe::Sam3, vec![part]))
    }
}

#[cfg(test)]
mod tests {
    use super::sam3_prompts;

    #[test]
    fn sam3_prompts_split_like_comfyui() {
        let parts = |t: &str| sam3_prompts(t);
        assert_eq!(parts("cat"), vec![("cat".to_string(), 1)]);
        assert_eq!(
            parts(" (red car):2.5 , dog,, person : 0.2"),
            vec![
                ("red car".to_string(), 2),
                ("dog".to_string(), 1),
                ("person".to_string(), 1)
            ]
        );
        // A count that is not a number stays part of the text.
        assert_eq!(parts("time: noon"), vec![("time: noon".to_string(), 1)]);
        assert!(parts(" , ").is_empty());
    }
}
