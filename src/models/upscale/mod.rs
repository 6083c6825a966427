//! Image upscale models (ComfyUI's `comfy_extras/nodes_upscale_model.py` over spandrel):
//! the UPSCALE_MODEL value, its architectures, and ImageUpscaleWithModel's tiled run.

mod compact;
mod esrgan;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use super::loading::{load_component, LoadTarget, Precision};
use super::tiled::{tiled_scale, Scale};
use crate::runtime::manager::{Loaded, ModelManager};
use crate::runtime::safetensors_file::SafetensorsFile;
use compact::{Compact, CompactConfig};
use esrgan::{Esrgan, EsrganConfig};

/// ImageUpscaleWithModel's first tile and overlap, in input pixels; the tile halves after an
/// out-of-memory error down to `MIN_TILE`.
pub const TILE: i64 = 512;
pub const OVERLAP: i64 = 32;
const MIN_TILE: i64 = 128;

#[derive(Clone, Debug, PartialEq)]
enum Architecture {
    Esrgan(EsrganConfig),
    Compact(CompactConfig),
}

enum Network {
    Esrgan(Esrgan),
    Compact(Compact),
}

/// The UPSCALE_MODEL value: a file whose architecture is known, loaded through the manager
/// when it runs.
pub struct UpscaleModel {
    manager: Arc<ModelManager>,
    path: PathBuf,
    architecture: Architecture,
}

impl UpscaleModel {
    /// Reads the file's keys to find its architecture (spandrel's detection order).
    pub fn open(manager: Arc<ModelManager>, path: &Path) -> Result<Self> {
        let file = SafetensorsFile::open(path)?;
        let architecture = if let Some(c) = EsrganConfig::detect(&file)? {
            Architecture::Esrgan(c)
        } else if let Some(c) = CompactConfig::detect(&file)? {
            Architecture::Compact(c)
        } else {
            bail!(
                "{} is not an upscale model this server runs: ESRGAN (ESRGAN, ESRGAN+, \
                 Real-ESRGAN, BSRGAN) and Real-ESRGAN Compact are supported",
                path.display()
            );
        };
        Ok(Self {
            manager,
            path: path.to_path_buf(),
            architecture,
        })
    }

    /// The output's size over the input's.
    pub fn scale(&self) -> i64 {
        match &self.architecture {
            Architecture::Esrgan(c) => c.scale(),
            Architecture::Compact(c) => c.scale,
        }
    }

    fn loaded(&self) -> Result<Arc<Loaded<Network>>> {
        let device = self.manager.device();
        let target = LoadTarget {
            kind: "upscale_model",
            path: &self.path,
            prefix: "",
            device,
            // spandrel builds the network in float32 and ComfyUI feeds it `image.float()`.
            precision: Precision {
                compute: Kind::Float,
                linears: Kind::Float,
            },
        };
        load_component(&self.manager, &target, None, |w| {
            Ok(match &self.architecture {
                Architecture::Esrgan(c) => Network::Esrgan(Esrgan::load(w, c)?),
                Architecture::Compact(c) => Network::Compact(Compact::load(w, c)?),
            })
        })
    }

    /// One tile `[1, C, h, w]` as spandrel's `ImageModelDescriptor` runs it: padded to the
    /// architecture's size requirement (reflect, then replicate), clamped to 0…1, cropped back.
    fn run_tile(&self, network: &Network, x: &Tensor) -> Tensor {
        let (h, w) = (x.size()[2], x.size()[3]);
        let (minimum, multiple) = match &self.architecture {
            Architecture::Esrgan(c) if c.shuffle.is_some() => (4, 4),
            Architecture::Esrgan(_) => (2, 1),
            Architecture::Compact(_) => (0, 1),
        };
        let padded_to = |n: i64| (n.max(minimum) + multiple - 1) / multiple * multiple;
        let (ph, pw) = (padded_to(h) - h, padded_to(w) - w);
        let x = if ph > 0 || pw > 0 {
            let (rh, rw) = (ph.min(h - 1), pw.min(w - 1));
            x.reflection_pad2d([0, rw, 0, rh])
                .replication_pad2d([0, pw - rw, 0, ph - rh])
        } else {
            x.shallow_clone()
        };
        let out = match network {
            Network::Esrgan(n) => n.forward(&x),
            Network::Compact(n) => n.forward(&x),
        }
        .clamp(0.0, 1.0);
        let scale = self.scale();
        out.narrow(2, 0, h * scale).narrow(3, 0, w * scale)
    }

    /// ImageUpscaleWithModel: images `[B, H, W, C]` in 0…1, tiled `tile`×`tile` with `OVERLAP`,
    /// to `[B, H·scale, W·scale, C]` float32 on the CPU. `on_tile` runs after each tile (for
    /// progress and interrupts).
    pub fn upscale(
        &self,
        images: &Tensor,
        tile: i64,
        on_tile: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Tensor> {
        let network = self.loaded()?;
        let device = self.manager.device();
        let pixels = images.permute([0, 3, 1, 2]).to_kind(Kind::Float);
        let mut run = |t: &Tensor| -> Result<Tensor> {
            let out = self.run_tile(&network, &t.to_device(device));
            on_tile()?;
            Ok(out)
        };
        let scale = Scale {
            factor: self.scale(),
            trim: 0,
        };
        let channels = images.size()[3];
        let out = tiled_scale(
            &pixels,
            &mut run,
            &[tile, tile],
            &[OVERLAP, OVERLAP],
            &[scale, scale],
            channels,
        )?;
        Ok(out.permute([0, 2, 3, 1]).clamp(0.0, 1.0).contiguous())
    }
}

/// The largest `N` of the keys `prefix N.…` (a layer index in a sequential model).
fn highest_index(file: &SafetensorsFile, prefix: &str) -> Option<usize> {
    file.names()
        .filter_map(|k| k.strip_prefix(prefix)?.split('.').next()?.parse().ok())
        .max()
}

/// ComfyUI's `get_tiled_scale_steps`: the tiles its progress bar counts for one image.
pub fn tiles_per_image(width: i64, height: i64, tile: i64) -> u64 {
    let per_axis = |n: i64| (n as f64 / (tile - OVERLAP) as f64).ceil() as u64;
    per_axis(width) * per_axis(height)
}

/// The next tile to try after running out of memory with `tile`, if any.
pub fn smaller_tile(tile: i64) -> Option<i64> {
    (tile / 2 >= MIN_TILE).then_some(tile / 2)
}
