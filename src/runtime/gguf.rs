//! GGUF files (llama.cpp's format, as ComfyUI-GGUF loads them): the header, metadata, tensor
//! table, and dequantization of the block formats to float32.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use half::{bf16, f16};
use memmap2::Mmap;
use serde_json::{json, Value};
use tch::Tensor;

/// A tensor's storage type (ggml's type ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
    Other(u32),
}

impl GgmlType {
    fn from_id(id: u32) -> Self {
        match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            30 => Self::BF16,
            other => Self::Other(other),
        }
    }

    /// `(elements, bytes)` per block.
    fn block(self) -> Option<(usize, usize)> {
        Some(match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::BF16 => (1, 2),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 => (32, 20),
            Self::Q5_0 => (32, 22),
            Self::Q5_1 => (32, 24),
            Self::Q8_0 => (32, 34),
            Self::Q4K => (256, 144),
            Self::Q5K => (256, 176),
            Self::Q6K => (256, 210),
            Self::Other(_) => return None,
        })
    }
}

pub struct GgufTensor {
    pub ggml_type: GgmlType,
    /// Torch order (ggml's dimensions reversed).
    pub shape: Vec<i64>,
    start: usize,
}

pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: BTreeMap<String, GgufTensor>,
    mmap: Mmap,
}

/// A little-endian reader over the header.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.context("truncated GGUF header")?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into()?))
    }
    fn string(&mut self) -> Result<String> {
        let len = self.u64()? as usize;
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }

    /// A metadata value of GGUF type `kind`, as JSON.
    fn value(&mut self, kind: u32) -> Result<Value> {
        Ok(match kind {
            0 => json!(self.take(1)?[0]),
            1 => json!(self.take(1)?[0] as i8),
            2 => json!(u16::from_le_bytes(self.take(2)?.try_into()?)),
            3 => json!(i16::from_le_bytes(self.take(2)?.try_into()?)),
            4 => json!(self.u32()?),
            5 => json!(self.u32()? as i32),
            6 => json!(f32::from_le_bytes(self.take(4)?.try_into()?)),
            7 => json!(self.take(1)?[0] != 0),
            8 => json!(self.string()?),
            9 => {
                let (item, count) = (self.u32()?, self.u64()?);
                let items = (0..count)
                    .map(|_| self.value(item))
                    .collect::<Result<Vec<_>>>()?;
                Value::Array(items)
            }
            10 => json!(self.u64()?),
            11 => json!(self.u64()? as i64),
            12 => json!(f64::from_le_bytes(self.take(8)?.try_into()?)),
            other => bail!("unknown GGUF metadata type {other}"),
        })
    }
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: read-only mapping, as for safetensors.
        let mmap = unsafe { Mmap::map(&file) }?;
        let parsed = Self::parse(&mmap).with_context(|| format!("reading {}", path.display()))?;
        let (version, metadata, tensors) = parsed;
        Ok(Self {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            mmap,
        })
    }

    #[allow(clippy::type_complexity)]
    fn parse(bytes: &[u8]) -> Result<(u32, BTreeMap<String, Value>, BTreeMap<String, GgufTensor>)> {
        let mut c = Cursor { bytes, pos: 0 };
        ensure!(c.take(4)? == b"GGUF", "not a GGUF file");
        let version = c.u32()?;
        ensure!(version >= 2, "GGUF version {version} is not supported");
        let (tensor_count, kv_count) = (c.u64()?, c.u64()?);
        let mut metadata = BTreeMap::new();
        for _ in 0..kv_count {
            let key = c.string()?;
            let kind = c.u32()?;
            metadata.insert(key, c.value(kind)?);
        }
        let mut infos = Vec::new();
        for _ in 0..tensor_count {
            let name = c.string()?;
            let dims = c.u32()?;
            let mut shape = (0..dims)
                .map(|_| Ok(c.u64()? as i64))
                .collect::<Result<Vec<_>>>()?;
            shape.reverse();
            let (kind, offset) = (c.u32()?, c.u64()?);
            infos.push((name, GgmlType::from_id(kind), shape, offset as usize));
        }
        let alignment = metadata
            .get("general.alignment")
            .and_then(Value::as_u64)
            .unwrap_or(32) as usize;
        let data = c.pos.div_ceil(alignment) * alignment;
        let tensors = infos
            .into_iter()
            .map(|(name, ggml_type, shape, offset)| {
                let start = data + offset;
                (
                    name,
                    GgufTensor {
                        ggml_type,
                        shape,
                        start,
                    },
                )
            })
            .collect();
        Ok((version, metadata, tensors))
    }

    /// The tensor dequantized to float32 (CPU).
    pub fn dequantize(&self, name: &str) -> Result<Tensor> {
        let t = self
            .tensors
            .get(name)
            .with_context(|| format!("{}: no tensor {name:?}", self.path.display()))?;
        let Some((block_elems, block_bytes)) = t.ggml_type.block() else {
            bail!(
                "{}: {name} is stored as {:?}, which this build cannot dequantize yet",
                self.path.display(),
                t.ggml_type
            );
        };
        let numel: i64 = t.shape.iter().product();
        let numel = numel as usize;
        ensure!(
            numel.is_multiple_of(block_elems),
            "{name}: {numel} elements in blocks of {block_elems}"
        );
        let len = numel / block_elems * block_bytes;
        let bytes = self
            .mmap
            .get(t.start..t.start + len)
            .with_context(|| format!("{}: {name} runs past the end", self.path.display()))?;
        let values = decode(t.ggml_type, bytes, numel);
        Ok(Tensor::from_slice(&values).view(t.shape.as_slice()))
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// ggml's reference dequantization of `numel` elements.
fn decode(kind: GgmlType, bytes: &[u8], numel: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(numel);
    match kind {
        GgmlType::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap())),
        ),
        GgmlType::F16 => out.extend(bytes.chunks_exact(2).map(|b| f16_at(b, 0))),
        GgmlType::BF16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        GgmlType::Q8_0 => {
            for b in bytes.chunks_exact(34) {
                let d = f16_at(b, 0);
                out.extend(b[2..].iter().map(|&q| d * (q as i8) as f32));
            }
        }
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            let with_min = kind == GgmlType::Q4_1;
            for b in bytes.chunks_exact(if with_min { 20 } else { 18 }) {
                let d = f16_at(b, 0);
                let (m, qs) = if with_min {
                    (f16_at(b, 2), &b[4..])
                } else {
                    (0.0, &b[2..])
                };
                let offset = if with_min { 0.0 } else { -8.0 };
                let low = qs.iter().map(|&q| (q & 0xF) as f32 + offset);
                let high = qs.iter().map(|&q| (q >> 4) as f32 + offset);
                for q in low.chain(high) {
                    out.push(if with_min { d * q + m } else { d * q });
                }
            }
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let with_min = kind == GgmlType::Q5_1;
            for b in bytes.chunks_exact(if with_min { 24 } else { 22 }) {
                let d = f16_at(b, 0);
                let (m, rest) = if with_min {
                    (f16_at(b, 2), &b[4..])
                } else {
                    (0.0, &b[2..])
                };
                let qh = u32::from_le_bytes(rest[..4].try_into().unwrap());
                let qs = &rest[4..];
                let offset = if with_min { 0.0 } else { -16.0 };
                let bit = |j: u32| ((qh >> j) & 1) as u8;
                let low = (0..16).map(|j| (qs[j] & 0xF | bit(j as u32) << 4) as f32 + offset);
                let high = (0..16).map(|j| (qs[j] >> 4 | bit(j as u32 + 16) << 4) as f32 + offset);
                for q in low.chain(high) {
                    out.push(if with_min { d * q + m } else { d * q });
                }
            }
        }
        GgmlType::Q4K | GgmlType::Q5K => {
            let high_bits = kind == GgmlType::Q5K;
            for b in bytes.chunks_exact(if high_bits { 176 } else { 144 }) {
                decode_q45k(b, high_bits, &mut out);
            }
        }
        GgmlType::Q6K => {
            for b in bytes.chunks_exact(210) {
                decode_q6k(b, &mut out);
            }
        }
        GgmlType::Other(_) => unreachable!("checked by block()"),
    }
    out
}

/// The 6-bit scale and min of sub-block `j` in a K-quant's 12 packed scale bytes.
fn scale_min_k4(j: usize, q: &[u8]) -> (f32, f32) {
    if j < 4 {
        ((q[j] & 63) as f32, (q[j + 4] & 63) as f32)
    } else {
        let d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        let m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        (d as f32, m as f32)
    }
}

/// One Q4_K (or, with `high_bits`, Q5_K) super-block of 256: eight sub-blocks of 32 with 6-bit
/// scales and mins, `y = d·scale·q − dmin·min`.
fn decode_q45k(b: &[u8], high_bits: bool, out: &mut Vec<f32>) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let (qh, qs) = if high_bits {
        (&b[16..48], &b[48..])
    } else {
        (&b[0..0], &b[16..])
    };
    for chunk in 0..4 {
        let q = &qs[chunk * 32..chunk * 32 + 32];
        for half in 0..2 {
            let (sc, m) = scale_min_k4(chunk * 2 + half, scales);
            let (scale, min) = (d * sc, dmin * m);
            let bit = 1u8 << (chunk * 2 + half);
            for l in 0..32 {
                let low = if half == 0 { q[l] & 0xF } else { q[l] >> 4 };
                let high = if high_bits && qh[l] & bit != 0 { 16 } else { 0 };
                out.push(scale * (low + high) as f32 - min);
            }
        }
    }
}

/// One Q6_K super-block of 256: 4+2-bit codes, sixteen int8 scales, `y = d·scale·(q − 32)`.
fn decode_q6k(b: &[u8], out: &mut Vec<f32>) {
    let (ql, qh) = (&b[0..128], &b[128..192]);
    let scales = &b[192..208];
    let d = f16_at(b, 208);
    for n in 0..2 {
        let (ql, qh, sc) = (&ql[n * 64..], &qh[n * 32..], &scales[n * 8..]);
        let mut y = [0f32; 128];
        for l in 0..32 {
            let is = l / 16;
            let q = [
                (ql[l] & 0xF) | (qh[l] & 3) << 4,
                (ql[l + 32] & 0xF) | (qh[l] >> 2 & 3) << 4,
                (ql[l] >> 4) | (qh[l] >> 4 & 3) << 4,
                (ql[l + 32] >> 4) | (qh[l] >> 6 & 3) << 4,
            ];
            for (k, code) in q.into_iter().enumerate() {
                let scale = d * (sc[is + 2 * k] as i8) as f32;
                y[l + 32 * k] = scale * (code as i32 - 32) as f32;
            }
        }
        out.extend_from_slice(&y);
    }
}
