//! Textual-inversion embeddings as ComfyUI reads them (`comfy/sd1_clip.py: load_embed`):
//! `embedding:name` in a prompt names a file in the embeddings folders whose vectors stand in
//! for tokens. In our token lists those vectors are ids from `EMBEDDING_ID_BASE` up, indexing
//! the prompt's table of them, so batching and weights treat them as tokens.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use crate::runtime::safetensors_file::SafetensorsFile;

/// The first id that stands for a row of the prompt's embedding table.
pub const EMBEDDING_ID_BASE: u32 = 1 << 31;
/// A vector of an embedding whose width is not the encoder's: ComfyUI leaves it out of the
/// sequence and pads the end instead.
pub const DROPPED: u32 = u32::MAX;

/// The embeddings one prompt uses for one encoder, collected while tokenizing.
pub struct EmbeddingTable<'a> {
    dirs: &'a [PathBuf],
    /// The file key for this encoder in multi-encoder files (`clip_l`, `clip_g`, `t5xxl`).
    key: &'a str,
    width: i64,
    rows: Vec<Tensor>,
}

impl<'a> EmbeddingTable<'a> {
    pub fn new(dirs: &'a [PathBuf], key: &'a str, width: i64) -> Self {
        Self {
            dirs,
            key,
            width,
            rows: Vec::new(),
        }
    }

    /// The ids standing for embedding `name`'s vectors; `None` when no readable file has that
    /// name (the prompt goes on without it, as in ComfyUI).
    pub fn ids(&mut self, name: &str) -> Option<Vec<u32>> {
        let path = find(self.dirs, name)?;
        let vectors = match read(&path, self.key) {
            Ok(v) => v,
            Err(e) => {
                log::warn!("error loading embedding, skipping loading: {name}: {e:#}");
                return None;
            }
        };
        let (count, width) = (vectors.size()[0], vectors.size()[1]);
        if width != self.width {
            log::warn!(
                "WARNING: shape mismatch when trying to apply embedding, embedding will be \
                 ignored {width} != {}",
                self.width
            );
            return Some(vec![DROPPED; count as usize]);
        }
        let first = self.rows.len() as u32;
        self.rows.extend((0..count).map(|i| vectors.get(i)));
        Some(
            (first..first + count as u32)
                .map(|i| EMBEDDING_ID_BASE + i)
                .collect(),
        )
    }

    /// The collected vectors `[n, width]` (float32), `None` when the prompt used none.
    pub fn table(&self) -> Option<Tensor> {
        (!self.rows.is_empty()).then(|| Tensor::stack(&self.rows, 0))
    }
}

/// `name` in the first folder that has it, as given or with `.safetensors`, `.pt` or `.bin`;
/// names that leave the folder are not looked up.
fn find(dirs: &[PathBuf], name: &str) -> Option<PathBuf> {
    if !crate::paths::is_relative_inside(name) {
        return None;
    }
    dirs.iter().find_map(|dir| {
        let path = dir.join(name);
        if path.is_file() {
            return Some(path);
        }
        [".safetensors", ".pt", ".bin"]
            .iter()
            .map(|ext| PathBuf::from(format!("{}{ext}", path.display())))
            .find(|p| p.is_file())
    })
}

/// The file's vectors `[n, width]` for the encoder keyed `key`: the tensor of that name, else
/// kohya's bundled `bundle_emb.*.string_to_param.*` or `bundle_emb.*.<key>`, else the file's
/// first tensor.
fn read(path: &Path, key: &str) -> Result<Tensor> {
    let is_safetensors = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    if !is_safetensors {
        bail!(
            "{} is a pickle; only .safetensors embeddings are read (convert it with \
             safetensors.torch.save_file)",
            path.display()
        );
    }
    let file = SafetensorsFile::open(path)?;
    let load = |names: Vec<&String>| -> Result<Option<Tensor>> {
        if names.is_empty() {
            return Ok(None);
        }
        let tensors = names
            .iter()
            .map(|n| Ok(flat(&file.tensor(n, Device::Cpu)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Tensor::cat(&tensors, 0)))
    };
    let bundled = |suffix: &str| {
        file.names()
            .filter(|n| n.starts_with("bundle_emb.") && n.ends_with(suffix))
            .collect::<Vec<_>>()
    };
    let exact: Vec<&String> = file.names().filter(|n| *n == key).collect();
    for names in [
        exact,
        bundled(".string_to_param.*"),
        bundled(&format!(".{key}")),
        file.names().take(1).collect(),
    ] {
        if let Some(vectors) = load(names)? {
            return Ok(vectors);
        }
    }
    bail!("{} holds no tensors", path.display())
}

/// One vector per row, float32.
fn flat(t: &Tensor) -> Tensor {
    let width = *t.size().last().unwrap_or(&1);
    t.to_kind(Kind::Float).reshape([-1, width])
}

/// Token ids `[B, T]` through the token table `[V, D]`, in `kind`; ids from
/// `EMBEDDING_ID_BASE` take the rows of `extra` instead. The rows are gathered in the table's
/// own dtype (a half-precision table stays half in memory) and widened after.
pub fn embed_ids(table: &Tensor, ids: &Tensor, extra: Option<&Tensor>, kind: Kind) -> Tensor {
    let Some(extra) = extra else {
        return Tensor::embedding(table, ids, -1, false, false).to_kind(kind);
    };
    let base = i64::from(EMBEDDING_ID_BASE);
    let is_extra = ids.ge(base);
    let tokens = Tensor::embedding(
        table,
        &ids.where_scalarother(&ids.lt(base), 0),
        -1,
        false,
        false,
    )
    .to_kind(kind);
    let extra = extra.to_device(table.device()).to_kind(kind);
    let rows = (ids - base).clamp(0, extra.size()[0] - 1);
    let vectors = Tensor::embedding(&extra, &rows, -1, false, false);
    vectors.where_self(&is_extra.unsqueeze(-1), &tokens)
}
