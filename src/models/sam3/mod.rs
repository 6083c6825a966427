//! SAM 3 and SAM 3.1 (Segment Anything 3) for image segmentation as ComfyUI runs them
//! (`comfy/ldm/sam3/`): one checkpoint holds the backbone, the text detector, the tracker's
//! interactive SAM heads and the CLIP text tower. The MODEL that CheckpointLoaderSimple gives for
//! such a file is a [`Sam3`]; the text tower is its CLIP.
//!
//! Files come in the original release's layout (fused `in_proj` attention, SAM 3.1's tracker
//! under `tracker.model.`) or ComfyUI's converted one; both load.

pub mod backbone;
pub mod detector;
pub mod frame;
mod parts;
pub mod sam_heads;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use self::backbone::{sine_position, Neck, Trunk};
use self::detector::{Detections, Detector};
use self::sam_heads::{HeadFeatures, SamHeads, SegmentPrompt};
use super::loading::{component, load_component, LoadTarget, Precision};
use super::weights::Weights;
use crate::runtime::detect::Detected;
use crate::runtime::manager::{Loaded, ModelManager};

/// The square input the detector and the heads see.
pub const IMAGE_SIZE: i64 = 1008;

/// The network: the ViT trunk, the detector's FPN neck and the heads' neck, the detector and
/// the interactive heads.
pub struct Sam3Model {
    trunk: Trunk,
    detector_neck: Neck,
    heads_neck: Neck,
    detector: Detector,
    heads: SamHeads,
    /// SAM 3's necks have a ½× level that neither the encoder nor the heads use.
    scalp: bool,
    pub dtype: Kind,
}

/// The heads' features for one image, kept while a mask is refined several times.
pub struct SegmentFeatures(HeadFeatures);

impl Sam3Model {
    pub fn load(w: &Weights, multiplex: bool) -> Result<Self> {
        let vb = "detector.backbone.vision_backbone.";
        let tracker = if w.has("tracker.model.maskmem_tpos_enc")
            || w.file.names().any(|n| n.starts_with("tracker.model."))
        {
            "tracker.model."
        } else {
            "tracker."
        };
        let heads_neck = if multiplex {
            "interactive_convs."
        } else {
            "sam2_convs."
        };
        Ok(Self {
            trunk: Trunk::load(w, &format!("{vb}trunk."))?,
            detector_neck: Neck::load(w, &format!("{vb}convs."))?,
            heads_neck: Neck::load(w, &format!("{vb}{heads_neck}"))?,
            detector: Detector::load(w, !multiplex)?,
            heads: SamHeads::load(w, tracker, multiplex)?,
            scalp: !multiplex,
            dtype: w.dtype,
        })
    }

    /// `SAM3Detector.forward` on images `[B, 3, 1008, 1008]` (0..1) with a text prompt: the text
    /// tower's states `[1, T, width]` and their keep-mask `[1, T]`.
    pub fn detect(&self, images: &Tensor, text: &Tensor, text_mask: &Tensor) -> Result<Detections> {
        let trunk = self.trunk.forward(&images.to_kind(self.dtype))?;
        let levels = self.detector_neck.forward(&trunk);
        let positions: Vec<Tensor> = levels.iter().map(sine_position).collect();
        let device = trunk.device();
        self.detector.detect(
            &levels,
            &positions,
            &text.to_device(device),
            &text_mask.to_device(device),
        )
    }

    /// The heads' features for an image `[1, 3, 1008, 1008]`.
    pub fn segment_features(&self, image: &Tensor) -> Result<SegmentFeatures> {
        let trunk = self.trunk.forward(&image.to_kind(self.dtype))?;
        let mut levels = self.heads_neck.forward(&trunk);
        if self.scalp {
            levels.pop();
        }
        let coarse = levels.pop().expect("three levels");
        let mid = levels.pop().expect("three levels");
        let fine = levels.pop().expect("three levels");
        Ok(SegmentFeatures(HeadFeatures {
            coarse,
            fine: [fine, mid],
        }))
    }

    /// `forward_segment`: high-resolution mask logits `[1, 1, 1008, 1008]` for one prompt.
    pub fn segment(&self, features: &SegmentFeatures, prompt: &SegmentPrompt) -> Result<Tensor> {
        self.heads.segment(&features.0, prompt, IMAGE_SIZE)
    }
}

/// The MODEL of a SAM 3 checkpoint: its file, which release, and the manager that holds it.
#[derive(Clone)]
pub struct Sam3 {
    manager: Arc<ModelManager>,
    path: PathBuf,
    found: Detected,
}

impl Sam3 {
    pub fn open(manager: Arc<ModelManager>, path: &Path) -> Result<Self> {
        let file = crate::runtime::safetensors_file::SafetensorsFile::open(path)?;
        Ok(Self {
            manager,
            path: path.to_path_buf(),
            found: component(&file, "segmentation")?,
        })
    }

    /// Where it runs.
    pub fn device(&self) -> Device {
        self.manager.device()
    }

    pub fn is_multiplex(&self) -> bool {
        self.found.architecture == "SAM31"
    }

    /// ComfyUI's dtype for it: fp16 on a GPU (the first of its supported inference dtypes),
    /// float32 on the CPU.
    fn compute(device: Device) -> Kind {
        match device {
            Device::Cpu => Kind::Float,
            _ => Kind::Half,
        }
    }

    pub fn loaded(&self) -> Result<Arc<Loaded<Sam3Model>>> {
        let device = self.manager.device();
        let kind = Self::compute(device);
        let target = LoadTarget {
            kind: "sam3",
            path: &self.path,
            prefix: "",
            device,
            precision: Precision {
                compute: kind,
                linears: kind,
            },
        };
        let multiplex = self.is_multiplex();
        load_component(&self.manager, &target, None, |w| {
            Sam3Model::load(w, multiplex)
        })
    }
}
