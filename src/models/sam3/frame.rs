//! SAM3_Detect's work on one frame (`comfy_extras/nodes_sam3.py`): text prompts through the
//! detector, each kept detection's mask refined by the SAM heads on a crop around its box;
//! point and box prompts straight through the heads, their mask refined on the whole frame.

use std::cell::OnceCell;

use anyhow::Result;
use tch::{Kind, Tensor};

use super::sam_heads::SegmentPrompt;
use super::{Sam3Model, SegmentFeatures, IMAGE_SIZE};

/// One text prompt: the text tower's states `[1, T, width]`, their keep-mask `[1, T]`, and how
/// many detections of it to keep (`cat:2` in the prompt).
pub struct TextPrompt {
    pub states: Tensor,
    pub mask: Tensor,
    pub max_detections: usize,
}

/// A kept detection: its box in pixels (x1, y1, x2, y2), its probability and its mask `[H, W]`
/// (0/1, float32).
pub struct Detection {
    pub bbox: [f64; 4],
    pub score: f64,
    pub mask: Tensor,
}

/// `common_upscale(…, 1008, 1008, "bilinear", crop="disabled")` of `[H, W, C]` pixels to the
/// model's `[1, 3, 1008, 1008]`.
fn model_input(pixels: &Tensor) -> Tensor {
    pixels
        .narrow(2, 0, 3)
        .permute([2, 0, 1])
        .unsqueeze(0)
        .upsample_bilinear2d([IMAGE_SIZE, IMAGE_SIZE], false, None, None)
}

fn resize(x: &Tensor, h: i64, w: i64) -> Tensor {
    x.upsample_bilinear2d([h, w], false, None, None)
}

/// One frame `[H, W, C]` (0..1) with its trunk features, computed once for all its prompts
/// (ComfyUI runs the backbone again for each).
pub struct Frame<'a> {
    model: &'a Sam3Model,
    pixels: Tensor,
    trunk: Tensor,
    heads: OnceCell<SegmentFeatures>,
}

impl<'a> Frame<'a> {
    pub fn new(model: &'a Sam3Model, pixels: Tensor) -> Result<Self> {
        let trunk = model.trunk(&model_input(&pixels))?;
        Ok(Self {
            model,
            pixels,
            trunk,
            heads: OnceCell::new(),
        })
    }

    fn size(&self) -> (i64, i64) {
        (self.pixels.size()[0], self.pixels.size()[1])
    }

    fn heads(&self) -> &SegmentFeatures {
        self.heads
            .get_or_init(|| self.model.segment_features(&self.trunk))
    }

    /// The binary mask `[H, W]` of point prompts or a box, the heads' result fed back as a mask
    /// prompt `passes − 1` more times (ComfyUI's point and box path).
    pub fn segment(&self, prompt: PixelPrompt, passes: i64) -> Result<Tensor> {
        let (h, w) = self.size();
        let (sx, sy) = (IMAGE_SIZE as f64 / w as f64, IMAGE_SIZE as f64 / h as f64);
        let prompt = match prompt {
            PixelPrompt::Points(points) => {
                let coords: Vec<f32> = points
                    .iter()
                    .flat_map(|(x, y, _)| [(x * sx) as f32, (y * sy) as f32])
                    .collect();
                let labels = points.iter().map(|p| p.2).collect();
                SegmentPrompt::Points(Tensor::from_slice(&coords).view([-1, 2]), labels)
            }
            PixelPrompt::Box([x1, y1, x2, y2]) => {
                SegmentPrompt::Box([x1 * sx, y1 * sy, x2 * sx, y2 * sy])
            }
        };
        let mut logits = self.model.segment(self.heads(), &prompt)?;
        for _ in 1..passes {
            logits = self
                .model
                .segment(self.heads(), &SegmentPrompt::Mask(logits))?;
        }
        Ok(resize(&logits, h, w)
            .get(0)
            .get(0)
            .gt(0.0)
            .to_kind(Kind::Float))
    }
}

/// Prompts in the frame's pixels.
pub enum PixelPrompt {
    /// (x, y, label) with label 1 positive, 0 negative.
    Points(Vec<(f64, f64, i64)>),
    Box([f64; 4]),
}

/// Python's `int()` of a float: toward zero.
fn int(x: f64) -> i64 {
    x.trunc() as i64
}

impl Frame<'_> {
    /// `_refine_mask`: the detection's coarse logits `[H, W]` refined by the heads `passes` times on
    /// the box's crop (10 % margin), pasted back and joined with the coarse mask.
    fn refine(&self, coarse: &Tensor, bbox: [f64; 4], passes: i64) -> Result<Tensor> {
        let (h, w) = self.size();
        let model = self.model;
        let coarse_mask = || coarse.gt(0.0).to_kind(Kind::Float);
        if passes <= 0 {
            return Ok(coarse_mask());
        }
        let [x1, y1, x2, y2] = bbox;
        let (bw, bh) = (x2 - x1, y2 - y1);
        let cx1 = int(x1 - bw * 0.1).max(0);
        let cy1 = int(y1 - bh * 0.1).max(0);
        let cx2 = int(x2 + bw * 0.1).min(w);
        let cy2 = int(y2 + bh * 0.1).min(h);
        if cx2 <= cx1 || cy2 <= cy1 {
            return Ok(coarse_mask());
        }
        // The mask's window is computed through fractions of the frame, as ComfyUI does (the
        // float product can land one pixel short).
        let (mh, mw) = (coarse.size()[0], coarse.size()[1]);
        let scaled = |c: i64, of: i64, to: i64| int(c as f64 / of as f64 * to as f64);
        let (mx1, my1) = (scaled(cx1, w, mw), scaled(cy1, h, mh));
        let (mx2, my2) = (scaled(cx2, w, mw), scaled(cy2, h, mh));
        if mx2 <= mx1 || my2 <= my1 {
            return Ok(coarse_mask());
        }
        let (ch, cw) = (cy2 - cy1, cx2 - cx1);
        // The crop is a new image: its own trunk, kept over the passes.
        let crop = self.pixels.narrow(0, cy1, ch).narrow(1, cx1, cw);
        let features = model.segment_features(&model.trunk(&model_input(&crop))?);
        let mut logits = coarse
            .narrow(0, my1, my2 - my1)
            .narrow(1, mx1, mx2 - mx1)
            .view([1, 1, my2 - my1, mx2 - mx1]);
        for _ in 0..passes {
            let prompt = SegmentPrompt::Mask(resize(&logits, IMAGE_SIZE, IMAGE_SIZE));
            logits = model.segment(&features, &prompt)?;
        }
        let refined = resize(&logits, ch, cw).get(0).get(0).to_kind(Kind::Float);
        let full = Tensor::zeros([h, w], (Kind::Float, self.pixels.device()));
        full.narrow(0, cy1, ch).narrow(1, cx1, cw).copy_(&refined);
        Ok(full
            .gt(0.0)
            .logical_or(&coarse.gt(0.0))
            .to_kind(Kind::Float))
    }

    /// The detections of each text prompt in a frame `[H, W, C]` (0..1), with the box
    /// exemplars `exemplars` (pixels, x1 y1 x2 y2) beside it: those whose probability passes
    /// `threshold`, best first, at most the prompt's count, masks refined `passes` times.
    pub fn detect_text(
        &self,
        prompts: &[TextPrompt],
        exemplars: &[[f64; 4]],
        threshold: f64,
        passes: i64,
    ) -> Result<Vec<Detection>> {
        let (h, w) = self.size();
        let features = self.model.detector_features(&self.trunk);
        let boxes = (!exemplars.is_empty()).then(|| {
            let (w, h) = (w as f64, h as f64);
            let cxcywh: Vec<f64> = exemplars
                .iter()
                .flat_map(|[x1, y1, x2, y2]| {
                    let (bw, bh) = (x2 - x1, y2 - y1);
                    [(x1 + bw / 2.0) / w, (y1 + bh / 2.0) / h, bw / w, bh / h]
                })
                .collect();
            Tensor::from_slice(&cxcywh)
                .view([1, -1, 4])
                .to_kind(Kind::Float)
        });
        let mut found = Vec::new();
        for prompt in prompts {
            let det = self
                .model
                .detect(&features, &prompt.states, &prompt.mask, boxes.as_ref())?;
            let probs = det
                .scores
                .get(0)
                .to_kind(Kind::Float)
                .sigmoid()
                .to_device(tch::Device::Cpu);
            let probs: Vec<f64> = Vec::<f64>::try_from(probs.to_kind(Kind::Double))?;
            let mut kept: Vec<usize> = (0..probs.len()).filter(|&q| probs[q] > threshold).collect();
            // A stable descending sort keeps ties in query order, as torch's argsort does on the CPU.
            kept.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
            kept.truncate(prompt.max_detections);
            let boxes = det
                .boxes
                .get(0)
                .to_kind(Kind::Double)
                .to_device(tch::Device::Cpu);
            for q in kept {
                let b: Vec<f64> = Vec::try_from(boxes.get(q as i64))?;
                let bbox = [
                    b[0] * w as f64,
                    b[1] * h as f64,
                    b[2] * w as f64,
                    b[3] * h as f64,
                ];
                let coarse = resize(&det.masks.narrow(1, q as i64, 1), h, w)
                    .get(0)
                    .get(0)
                    .to_kind(Kind::Float);
                let mask = self.refine(&coarse, bbox, passes)?;
                found.push(Detection {
                    bbox,
                    score: probs[q],
                    mask,
                });
            }
        }
        Ok(found)
    }
}
