//! Frame interpolation models (ComfyUI's `comfy_extras/nodes_frame_interpolation.py`): the
//! INTERP_MODEL value and FrameInterpolate's pass over a video's neighbouring frames.

mod film;
mod rife;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use super::layers::pad_reflect_to_multiple;
use super::loading::{load_component, LoadTarget, Precision};
use crate::runtime::manager::{Loaded, ModelManager};
use crate::runtime::safetensors_file::SafetensorsFile;
use film::{Film, FramePyramids};
use rife::{Rife, RifeConfig};

/// FILM's first key, which ComfyUI tries before RIFE.
const FILM_KEY: &str = "extract.extract_sublevels.convs.0.0.conv.weight";

#[derive(Clone, Debug, PartialEq)]
enum Architecture {
    Rife(RifeConfig),
    Film,
}

enum Network {
    Rife(Rife),
    Film(Film),
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
        let architecture = if file.contains(FILM_KEY) {
            Architecture::Film
        } else if let Some(config) = RifeConfig::detect(&file)? {
            Architecture::Rife(config)
        } else {
            bail!("Unrecognized frame interpolation model format");
        };
        Ok(Self {
            manager,
            path: path.to_path_buf(),
            architecture,
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
        let prefix = match &self.architecture {
            Architecture::Rife(config) => config.prefix.as_str(),
            Architecture::Film => "",
        };
        let target = LoadTarget {
            kind: "frame_interpolation",
            path: &self.path,
            prefix,
            device: self.manager.device(),
            precision: Precision {
                compute: dtype,
                linears: dtype,
            },
        };
        load_component(&self.manager, &target, None, |w| {
            Ok(match &self.architecture {
                Architecture::Rife(config) => Network::Rife(Rife::load(w, config)?),
                Architecture::Film => Network::Film(Film::load(w)?),
            })
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
        let (device, dtype) = (self.manager.device(), self.dtype());
        let (h, w) = (images.size()[1], images.size()[2]);
        let align = network.pad_align();
        let pad = |n: i64| (align - n % align) % align;
        if pad(h) >= h || pad(w) >= w {
            bail!(
                "frames of {w}×{h} are too small to reflect-pad to a multiple of {align} (the \
                 padding must be smaller than the frame)"
            );
        }
        let smallest = network.min_size();
        if h < smallest || w < smallest {
            bail!("frames of {w}×{h} are too small for FILM's pyramid: at least {smallest}×{smallest}");
        }
        let prepare = |i: i64| {
            let frame = images
                .narrow(0, i, 1)
                .permute([0, 3, 1, 2])
                .to_device(device)
                .to_kind(dtype);
            pad_reflect_to_multiple(&frame, align)
        };
        let timesteps: Vec<f64> = (1..multiplier)
            .map(|k| k as f64 / multiplier as f64)
            .collect();
        let timesteps = Tensor::from_slice(&timesteps)
            .to_kind(dtype)
            .to_device(device);
        let mut out = vec![images.narrow(0, 0, 1).to_kind(Kind::Float)];
        let total = ((frames - 1) * (multiplier - 1)) as u64;
        let mut previous = None;
        for i in 0..frames - 1 {
            let first = previous
                .take()
                .unwrap_or_else(|| network.features(&prepare(i)));
            let second = network.features(&prepare(i + 1));
            let mids = network.between(&first, &second, &timesteps);
            out.push(
                mids.narrow(2, 0, h)
                    .narrow(3, 0, w)
                    .permute([0, 2, 3, 1])
                    .to_kind(Kind::Float)
                    .to_device(Device::Cpu),
            );
            out.push(images.narrow(0, i + 1, 1).to_kind(Kind::Float));
            progress((i + 1) as u64 * (multiplier - 1) as u64, total)?;
            previous = Some(second);
        }
        Ok(Tensor::cat(&out, 0).clamp(0.0, 1.0))
    }
}

/// A prepared frame and what the network computes from it alone, shared by the two pairs the
/// frame belongs to.
enum Frame {
    Rife { image: Tensor, features: Tensor },
    Film(FramePyramids),
}

impl Network {
    /// Frames are reflect-padded to a multiple of this.
    fn pad_align(&self) -> i64 {
        match self {
            Network::Rife(_) => rife::PAD_ALIGN,
            Network::Film(_) => 1,
        }
    }

    /// The smallest frame side the network takes (FILM halves the frame six times).
    fn min_size(&self) -> i64 {
        match self {
            Network::Rife(_) => 1,
            Network::Film(_) => film::MIN_SIZE,
        }
    }

    fn features(&self, image: &Tensor) -> Frame {
        match self {
            Network::Rife(net) => Frame::Rife {
                features: net.features(image),
                image: image.shallow_clone(),
            },
            Network::Film(net) => Frame::Film(net.pyramids(image)),
        }
    }

    /// The frames at `timesteps` (`[T]`, on the device in the frames' dtype) between two frames:
    /// `[T, 3, H, W]`.
    fn between(&self, first: &Frame, second: &Frame, timesteps: &Tensor) -> Tensor {
        match (self, first, second) {
            (
                Network::Rife(net),
                Frame::Rife {
                    image: img0,
                    features: f0,
                },
                Frame::Rife {
                    image: img1,
                    features: f1,
                },
            ) => {
                let (h, w) = (img0.size()[2], img0.size()[3]);
                let t = timesteps.size()[0];
                let timesteps = timesteps.view([t, 1, 1, 1]).expand([t, 1, h, w], false);
                net.forward((img0, f0), (img1, f1), &timesteps)
            }
            (Network::Film(net), Frame::Film(p0), Frame::Film(p1)) => {
                net.forward(p0, p1, timesteps)
            }
            _ => unreachable!("frames are prepared by the network that joins them"),
        }
    }
}
