//! A safetensors file read through a memory map: the header, its `__metadata__`, and tensors made
//! straight from the mapped bytes.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};
use memmap2::{Mmap, UncheckedAdvice};
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

/// On unified memory the page cache and a device tensor are two copies in the same memory, so
/// the loader drops the page cache of what it copied (set once at start-up).
static DROP_PAGE_CACHE: AtomicBool = AtomicBool::new(false);

pub fn drop_page_cache_after_loading(enable: bool) {
    DROP_PAGE_CACHE.store(enable, Ordering::Relaxed);
}

/// Tensors above this size reach the device in slices of it, so the mapped pages in host
/// memory at any time stay bounded.
const CHUNK_BYTES: usize = 64 << 20;

pub struct SafetensorsFile {
    pub path: PathBuf,
    file: File,
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
            file,
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

    /// The tensor in its stored kind on `device`, copied once straight out of the mapping (no
    /// intermediate host copy on the way to a GPU), in slices for big tensors, releasing the
    /// mapped pages as it goes.
    pub fn tensor(&self, name: &str, device: Device) -> Result<Tensor> {
        self.tensor_in_chunks(name, device, CHUNK_BYTES)
    }

    fn tensor_in_chunks(&self, name: &str, device: Device, chunk_bytes: usize) -> Result<Tensor> {
        let e = self.lookup(name)?;
        let Some(kind) = kind_of(e.dtype) else {
            bail!(
                "{}: tensor {name:?} has dtype {:?}, which has no libtorch kind",
                self.path.display(),
                e.dtype
            );
        };
        let shape: Vec<i64> = e.shape.iter().map(|&d| d as i64).collect();
        let bytes = &self.mmap[e.start..e.end];
        let element = kind.elt_size_in_bytes();
        if bytes.is_empty() || !(bytes.as_ptr() as usize).is_multiple_of(element) {
            // Misaligned for its kind (files written by other tools): copy the bytes first.
            let t = Tensor::f_from_data_size(bytes, &shape, kind)?.to_device(device);
            self.release(e.start, e.end);
            return Ok(t);
        }
        let out = Tensor::empty(&shape, (kind, device));
        let flat = out.view([-1]);
        let numel = bytes.len() / element;
        let chunk = (chunk_bytes / element).max(1);
        for first in (0..numel).step_by(chunk) {
            let count = chunk.min(numel - first);
            let start = e.start + first * element;
            // SAFETY: the view covers `count` elements inside the mapping, which outlives it:
            // the copy below is synchronous and the view is dropped right after.
            let view = unsafe {
                Tensor::from_blob(
                    self.mmap.as_ptr().add(start),
                    &[count as i64],
                    &[1],
                    kind,
                    Device::Cpu,
                )
            };
            flat.narrow(0, first as i64, count as i64).copy_(&view);
            drop(view);
            self.release(start, start + count * element);
        }
        Ok(out)
    }

    /// Gives back the mapped pages of a copied byte range (and, on unified memory, their page
    /// cache); a later read faults them in again from the file.
    fn release(&self, start: usize, end: usize) {
        let page = 4096;
        let (first, last) = (start / page * page, end.div_ceil(page) * page);
        let len = last.min(self.mmap.len()) - first;
        // SAFETY: the mapping is read-only and file-backed: dropped pages read back from the
        // file, and no tensor points into this range any more.
        let _ = unsafe {
            self.mmap
                .unchecked_advise_range(UncheckedAdvice::DontNeed, first, len)
        };
        if DROP_PAGE_CACHE.load(Ordering::Relaxed) {
            use std::os::fd::AsRawFd;
            // SAFETY: plain advice on our own open descriptor.
            unsafe {
                libc::posix_fadvise(
                    self.file.as_raw_fd(),
                    first as i64,
                    len as i64,
                    libc::POSIX_FADV_DONTNEED,
                )
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_copies_rebuild_the_tensor_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let t = Tensor::randn([37, 29], (Kind::BFloat16, Device::Cpu));
        Tensor::write_safetensors(&[("t", &t)], &path).unwrap();
        let file = SafetensorsFile::open(&path).unwrap();
        for chunk in [2, 100, 1000, 1 << 20] {
            let loaded = file.tensor_in_chunks("t", Device::Cpu, chunk).unwrap();
            assert!(loaded.equal(&t), "chunk {chunk}");
        }
        if tch::Cuda::is_available() {
            let loaded = file.tensor_in_chunks("t", Device::Cuda(0), 100).unwrap();
            assert!(loaded.to_device(Device::Cpu).equal(&t));
        }
    }
}
