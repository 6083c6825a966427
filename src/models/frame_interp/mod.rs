//! Frame interpolation models (ComfyUI's `comfy_extras/nodes_frame_interpolation.py`): the
//! INTERP_MODEL value and FrameInterpolate's pass over a video's neighbouring frames.

mod rife;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use super::layers::pad_reflect_to_multiple;
use super::loading::{load_component, LoadTarget, Precision};
use crate::runtime::manager::{Loaded, ModelManager};
use crate::runtime::safetensors_file::SafetensorsFile;
use rife::{Rife, RifeConfig, PAD_ALIGN};

/// FILM's first key, which ComfyUI tries before RIFE.
const FILM_KEY: &str = "extract.extract_sublevels.convs.0.0.conv.weight";

#[derive(Clone, Debug, PartialEq)]
enum Architecture {
    Rife(RifeConfig),
}

enum Network {
    Rife(Rife),
}

/// The INTERP_MODEL value: a file whose architecture is known, loaded through the manager when
/// it runs.
pub struct InterpModel {
    manager: Arc<ModelManager>,
    path: PathBuf,
    architecture: Architecture,
}

impl InterpModel {
    pub fn open(manager: Arc<ModelManager>, path: &Path) -> Result<Self> {
        let file = SafetensorsFile::open(path)?;
        if file.contains(FILM_KEY) {
            bail!(
                "{} is a FILM model, which this server does not run yet; RIFE 4.x models \
                 (e.g. rife_v4.26.safetensors) are supported",
                path.display()
            );
        }
        let Some(config) = RifeConfig::detect(&file)? else {
            bail!("Unrecognized frame interpolation model format");
        };
        Ok(Self {
            manager,
            path: path.to_path_buf(),
            architecture: Architecture::Rife(config),
        })
    }

    /// ComfyUI runs these models in fp16 wherever it would use fp16, float32 on the CPU.
    fn dtype(&self) -> Kind {
        match self.manager.device() {
            Device::Cpu => Kind::Float,
            _ => Kind::Half,
        }
    }

    fn loaded(&self) -> Result<Arc<Loaded<Network>>> {
        let dtype = self.dtype();
        let Architecture::Rife(config) = &self.architecture;
        let target = LoadTarget {
            kind: "frame_interpolation",
            path: &self.path,
            prefix: &config.prefix,
            device: self.manager.device(),
            precision: Precision {
                compute: dtype,
                linears: dtype,
            },
        };
        load_component(&self.manager, &target, None, |w| {
            Ok(Network::Rife(Rife::load(w, config)?))
        })
    }

    /// FrameInterpolate: `multiplier − 1` frames between each neighbouring pair of `images`
    /// `[N, H, W, C]`, so `(N − 1)·multiplier + 1` frames, float32 on the CPU. The source frames
    /// pass through untouched. `progress(done, total)` runs after each pair.
    pub fn interpolate(
        &self,
        images: &Tensor,
        multiplier: i64,
        progress: &mut dyn FnMut(u64, u64) -> Result<()>,
    ) -> Result<Tensor> {
        let frames = images.size()[0];
        if frames < 2 || multiplier < 2 {
            return Ok(images.shallow_clone());
        }
        let network = self.loaded()?;
        let Network::Rife(rife) = &**network;
        let (device, dtype) = (self.manager.device(), self.dtype());
        let (h, w) = (images.size()[1], images.size()[2]);
        let pad = |n: i64| (PAD_ALIGN - n % PAD_ALIGN) % PAD_ALIGN;
        if pad(h) >= h || pad(w) >= w {
            bail!(
                "frames of {w}×{h} are too small to reflect-pad to a multiple of {PAD_ALIGN}                  (the padding must be smaller than the frame)"
            );
        }
        let prepare = |i: i64| {
            let frame = images
                .narrow(0, i, 1)
                .permute([0, 3, 1, 2])
                .to_device(device)
                .to_kind(dtype);
            pad_reflect_to_multiple(&frame, PAD_ALIGN)
        };
        let first = prepare(0);
        let (ph, pw) = (first.size()[2], first.size()[3]);
        let between = multiplier - 1;
        let timesteps: Vec<f64> = (1..multiplier)
            .map(|k| k as f64 / multiplier as f64)
            .collect();
        let timesteps = Tensor::from_slice(&timesteps)
            .to_kind(dtype)
            .to_device(device)
            .view([between, 1, 1, 1])
            .expand([between, 1, ph, pw], false);
        let mut out = vec![images.narrow(0, 0, 1).to_kind(Kind::Float)];
        let total = ((frames - 1) * between) as u64;
        let mut previous = (first, None::<Tensor>);
        for i in 0..frames - 1 {
            let (img0, f0) = previous;
            let f0 = f0.unwrap_or_else(|| rife.features(&img0));
            let img1 = prepare(i + 1);
            let f1 = rife.features(&img1);
            let mids = rife.forward((&img0, &f0), (&img1, &f1), &timesteps);
            out.push(
                mids.narrow(2, 0, h)
                    .narrow(3, 0, w)
                    .permute([0, 2, 3, 1])
                    .to_kind(Kind::Float)
                    .to_device(Device::Cpu),
            );
            out.push(images.narrow(0, i + 1, 1).to_kind(Kind::Float));
            progress((i + 1) as u64 * between as u64, total)?;
            previous = (img1, Some(f1));
        }
        Ok(Tensor::cat(&out, 0).clamp(0.0, 1.0))
    }
}
