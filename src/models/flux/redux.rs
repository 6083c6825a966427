//! FLUX.1 Redux's image projector (`comfy/ldm/flux/redux.py`, ComfyUI's STYLE_MODEL for it):
//! SigLIP's last hidden states through `redux_down(silu(redux_up(x)))` into T5's width, tokens
//! StyleModelApply appends to the prompt's.

use std::path::Path;

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use crate::engine::value::SharedTensor;
use crate::runtime::safetensors_file::SafetensorsFile;

pub struct Redux {
    up: (SharedTensor, SharedTensor),
    down: (SharedTensor, SharedTensor),
}

impl Redux {
    /// `load_style_model`: a Redux file (`redux_up`, `redux_down`), held in float32 on the host
    /// as ComfyUI holds it.
    pub fn open(path: &Path) -> Result<Self> {
        let file = SafetensorsFile::open(path)?;
        if file.contains("style_embedding") {
            bail!(
                "{}: T2I-Adapter style models are not supported yet (FLUX Redux is)",
                path.display()
            );
        }
        if !file.contains("redux_down.weight") {
            bail!("invalid style model {}", path.display());
        }
        let get = |name: &str| -> Result<SharedTensor> {
            let tensor = file.tensor(name, Device::Cpu)?.to_kind(Kind::Float);
            Ok(SharedTensor::new(tensor))
        };
        Ok(Self {
            up: (get("redux_up.weight")?, get("redux_up.bias")?),
            down: (get("redux_down.weight")?, get("redux_down.bias")?),
        })
    }

    /// The tokens `[B, N, text width]` (float32) of image states `[B, N, vision width]`,
    /// computed on `device`; states of another width (another vision tower's) are an error.
    pub fn tokens(&self, states: &Tensor, device: Device) -> Result<Tensor> {
        let width = self.up.0.size()[1];
        if states.size().last() != Some(&width) {
            bail!(
                "FLUX Redux takes {width}-wide image states (SigLIP's), not {:?}: load \
                 sigclip_vision_patch14_384 in CLIPVisionLoader",
                states.size()
            );
        }
        let linear = |x: &Tensor, (w, b): &(SharedTensor, SharedTensor)| {
            x.linear(&w.to_device(device), Some(&b.to_device(device)))
        };
        let states = states.to_device(device).to_kind(Kind::Float);
        Ok(linear(&linear(&states, &self.up).silu(), &self.down))
    }
}
