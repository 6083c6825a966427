//! A safetensors file read through a memory map: the header, its `__metadata__`, and tensors made
//! straight from the mapped bytes.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use tch::{Device, Kind, Tensor};

/// One tensor's entry in the header.
#[derive(Clone, Debug)]
pub struct Entry {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Byte range inside the mapping.
    start: usize,
    end: usize,
}

impl Entry {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

pub struct SafetensorsFile {
    pub path: PathBuf,
    mmap: Mmap,
    entries: BTreeMap<String, Entry>,
    metadata: BTreeMap<String, String>,
}

/// The libtorch kind a safetensors dtype is stored as (`None`: no libtorch kind, e.g. F4).
pub fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::BOOL => Kind::Bool,
        Dtype::U8 => Kind::Uint8,
        Dtype::I8 => Kind::Int8,
        Dtype::I16 => Kind::Int16,
        Dtype::I32 => Kind::Int,
        Dtype::I64 => Kind::Int64,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F8_E4M3 => Kind::Float8e4m3fn,
        Dtype::F8_E5M2 => Kind::Float8e5m2,
        _ => return None,
    })
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: the mapping is read-only; a weight file changed underneath a running server is
        // outside what any loader can defend against (ComfyUI mmaps the same way).
        let mmap =
            unsafe { Mmap::map(&file) }.with_context(|| format!("mapping {}", path.display()))?;
        let (header_len, header) = SafeTensors::read_metadata(&mmap)
            .map_err(|e| anyhow::anyhow!("{}: not a safetensors file ({e})", path.display()))?;
        let base = 8 + header_len;
        let entries = header
            .tensors()
            .into_iter()
            .map(|(name, info)| {
                let entry = Entry {
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    start: base + info.data_offsets.0,
                    end: base + info.data_offsets.1,
                };
                (name, entry)
            })
            .collect();
        let metadata = header
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            mmap,
            entries,
            metadata,
        })
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.entries.keys()
    }

    pub fn entries(&self) -> &BTreeMap<String, Entry> {
        &self.entries
    }

    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The header's `__metadata__`.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The tensor's raw bytes in the mapping.
    pub fn bytes(&self, name: &str) -> Result<&[u8]> {
        let e = self.lookup(name)?;
        Ok(&self.mmap[e.start..e.end])
    }

    fn lookup(&self, name: &str) -> Result<&Entry> {
        self.entries
            .get(name)
            .with_context(|| format!("{}: no tensor {name:?}", self.path.display()))
    }

    /// The tensor in its stored kind on `device` (one copy out of the mapping).
    pub fn tensor(&self, name: &str, device: Device) -> Result<Tensor> {
        let e = self.lookup(name)?;
        let Some(kind) = kind_of(e.dtype) else {
            bail!(
                "{}: tensor {name:?} has dtype {:?}, which has no libtorch kind",
                self.path.display(),
                e.dtype
            );
        };
        let shape: Vec<i64> = e.shape.iter().map(|&d| d as i64).collect();
        let t = Tensor::f_from_data_size(&self.mmap[e.start..e.end], &shape, kind)?;
        Ok(if device == Device::Cpu {
            t
        } else {
            t.to_device(device)
        })
    }
}
