//! SAM 3 and SAM 3.1 (Segment Anything 3) for image segmentation as ComfyUI runs them
//! (`comfy/ldm/sam3/`): one checkpoint holds the backbone, the text detector, the tracker's
//! interactive SAM heads and the CLIP text tower. The MODEL that CheckpointLoaderSimple gives for
//! such a file is a [`Sam3`]; the text tower is its CLIP.
//!
//! Files come in the original release's layout (fused `in_proj` attention, SAM 3.1's tracker
//! under `tracker.model.`) or ComfyUI's converted one; both load.

pub mod backbone;
mod components;
pub mod detector;
pub mod frame;
pub mod memory;
mod parts;
mod roi_align;
pub mod sam_heads;
pub mod track_data;
pub mod track_preview;
pub mod tracker;
pub mod video;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use self::backbone::{Neck, Trunk};
use self::detector::{Detections, Detector};
use self::sam_heads::{HeadFeatures, SamHeads, SegmentPrompt};
use self::tracker::Tracker;
use super::loading::{load_component, LoadTarget, Precision};
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
    /// SAM 3.1's video tracker.
    tracker: Option<Tracker>,
    pub dtype: Kind,
}

/// The detector neck's levels for one image, shared by all its text prompts.
pub struct DetectorFeatures(Vec<Tensor>);

/// The heads' features for one image, shared by its prompts and refinement passes.
pub struct SegmentFeatures(HeadFeatures);

impl Sam3Model {
    pub fn load(w: &Weights, multiplex: bool) -> Result<Self> {
        let vb = "detector.backbone.vision_backbone.";
        // The release keeps SAM 3.1's tracker under `tracker.model.`, ComfyUI's conversion not.
        let tracker = if w.file.names().any(|n| n.starts_with("tracker.model.")) {
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
            trunk: Trunk::load(w, &format!("{vb}trunk."), IMAGE_SIZE)?,
            detector_neck: Neck::load(w, &format!("{vb}convs."))?,
            heads_neck: Neck::load(w, &format!("{vb}{heads_neck}"))?,
            detector: Detector::load(w)?,
            heads: SamHeads::load(w, tracker, multiplex)?,
            tracker: if multiplex {
                Some(Tracker::load(
                    w,
                    tracker,
                    &format!("{vb}propagation_convs."),
                )?)
            } else {
                None
            },
            dtype: w.dtype,
        })
    }

    /// The ViT trunk's features of images `[B, 3, 1008, 1008]` (0..1), which both necks read.
    pub fn trunk(&self, images: &Tensor) -> Result<Tensor> {
        self.trunk.forward(&images.to_kind(self.dtype))
    }

    pub fn detector_features(&self, trunk: &Tensor) -> DetectorFeatures {
        DetectorFeatures(self.detector_neck.forward(trunk))
    }

    /// `SAM3Detector.forward` with a text prompt: the text tower's states `[1, T, width]` and
    /// their keep-mask `[1, T]`, and box exemplars `[1, N, 4]` (cxcywh in 0..1) if any.
    pub fn detect(
        &self,
        features: &DetectorFeatures,
        text: &Tensor,
        text_mask: &Tensor,
        boxes: Option<&Tensor>,
    ) -> Result<Detections> {
        let device = features.0[0].device();
        self.detector.detect(
            &features.0,
            &text.to_device(device),
            &text_mask.to_device(device),
            boxes.map(|b| b.to_device(device)).as_ref(),
        )
    }

    /// The heads' features: the first three levels of their neck (SAM 3's ½× level is unused).
    pub fn segment_features(&self, trunk: &Tensor) -> SegmentFeatures {
        let mut levels = self.heads_neck.forward(trunk).into_iter();
        let (fine, mid, coarse) = (
            levels.next().expect("three levels"),
            levels.next().expect("three levels"),
            levels.next().expect("three levels"),
        );
        SegmentFeatures(HeadFeatures {
            coarse,
            fine: [fine, mid],
        })
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
    /// The checkpoint at `path`, whose `segmentation` component `detect` found as `found`.
    pub fn new(manager: Arc<ModelManager>, path: &Path, found: Detected) -> Self {
        Self {
            manager,
            path: path.to_path_buf(),
            found,
        }
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
