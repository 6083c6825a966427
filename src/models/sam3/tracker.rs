//! SAM 3.1's multiplex video tracker as SAM3_VideoTrack runs it (`SAM31Tracker` in
//! `comfy/ldm/sam3/tracker.py`): objects (given as first-frame masks or found by the text
//! detector) share 16-slot buckets; each frame's features attend to the memories of the last
//! seven frames and of the conditioning frames, and one decoder pass predicts every slot's
//! mask. New detections that match no track join it; confident ones refresh the track they
//! match.

use std::collections::BTreeMap;

use anyhow::Result;
use tch::{Kind, Tensor};

use super::backbone::{sine_position, Neck};
use super::components::{connected_areas, mask_overlap, nms};
use super::memory::{sine_1d, Memory, MemoryAttention, MemoryEncoder, MASK_SIZE};
use super::parts::{linear, Conv, Mlp};
use super::sam_heads::{random_positions, MaskDecoder};
use crate::models::weights::Weights;
use crate::runtime::linear::Linear;

/// The frames of memory a frame attends to (besides the conditioning frames).
const MEMORY_FRAMES: i64 = 7;
/// The most past frames whose object pointers a frame reads.
const MAX_POINTER_FRAMES: i64 = 16;
/// SAM's logit for "no object here".
pub const NO_OBJECT_SCORE: f64 = -1024.0;
/// The ceiling on tracked objects (`max_objects` 0 means this).
pub const MAX_OBJECTS: i64 = 64;

/// The tracker's own parts (the trunk, the heads and the detector are the model's).
pub struct Tracker {
    neck: Neck,
    attention: MemoryAttention,
    decoder: MaskDecoder,
    encoder: MemoryEncoder,
    /// `maskmem_tpos_enc` `[7, 1, 1, C]`: a memory's place in time.
    time_positions: Tensor,
    no_object_spatial: Tensor,
    pointer_proj: Mlp,
    pointer_time_proj: Linear,
    no_object_pointer: Linear,
    pub(super) interactive_pointer_proj: Mlp,
    pub(super) interactive_mask_down: Conv,
    valid_embed: Tensor,
    invalid_embed: Tensor,
    image_gaussian: Tensor,
    slots: i64,
}

/// A tracked frame's outputs: its memory `[buckets, C, h, w]`, raw features and positions,
/// object pointers `[buckets, M, C]`, and the objects' masks at 288 and 1008 px.
pub struct FrameOutput {
    pub memory: Tensor,
    pub image: Tensor,
    pub image_pos: Tensor,
    pub pointers: Tensor,
    pub low: Tensor,
    pub high: Tensor,
}

/// One frame's propagation features: the coarse level `[1, HW, C]` with its positions, the two
/// finer levels and the coarse grid's side.
pub struct FrameFeatures {
    pub coarse: Tensor,
    pub coarse_pos: Tensor,
    pub fine: [Tensor; 2],
    pub grid: (i64, i64),
}

impl FrameFeatures {
    /// The coarse level as a map `[1, C, h, w]`.
    pub fn coarse_map(&self) -> Tensor {
        spatial(&self.coarse, self.grid)
    }
}

/// `[B, HW, C]` → `[B, C, h, w]`.
pub fn spatial(x: &Tensor, (h, w): (i64, i64)) -> Tensor {
    let b = x.size()[0];
    x.view([b, h, w, -1]).permute([0, 3, 1, 2])
}

/// Which objects' masks the memory encoder is told are clean (given or detected).
pub enum Clean<'a> {
    All,
    None,
    Some(&'a [bool]),
}

impl Tracker {
    pub fn load(w: &Weights, tracker: &str, neck: &str) -> Result<Self> {
        let t = |n: &str| format!("{tracker}{n}");
        let valid_embed = w.tensor(&t("output_valid_embed"))?;
        Ok(Self {
            neck: Neck::load(w, neck)?,
            attention: MemoryAttention::load(w, &t("transformer.encoder"))?,
            decoder: MaskDecoder::load(w, &t("sam_mask_decoder"))?,
            encoder: MemoryEncoder::load(w, &t("maskmem_backbone"))?,
            time_positions: w.tensor(&t("maskmem_tpos_enc"))?,
            no_object_spatial: w.tensor(&t("no_obj_embed_spatial"))?,
            pointer_proj: Mlp::load(w, &t("obj_ptr_proj"))?,
            pointer_time_proj: linear(w, &t("obj_ptr_tpos_proj"))?,
            no_object_pointer: linear(w, &t("no_obj_ptr_linear"))?,
            interactive_pointer_proj: Mlp::load(w, &t("interactive_obj_ptr_proj"))?,
            interactive_mask_down: Conv::load(w, &t("interactive_mask_downsample"))?,
            invalid_embed: w.tensor(&t("output_invalid_embed"))?,
            image_gaussian: w.tensor_as(
                &t("image_pe_layer.positional_encoding_gaussian_matrix"),
                Kind::Float,
            )?,
            slots: valid_embed.size()[0],
            valid_embed,
        })
    }

    /// Where its weights are.
    pub fn device(&self) -> tch::Device {
        self.time_positions.device()
    }

    /// `_no_obj_blend`: the pointer where the object is `present` (`[N, 1]` bool), its
    /// no-object projection elsewhere.
    pub fn blend_pointer(&self, pointer: &Tensor, present: &Tensor) -> Result<Tensor> {
        let fallback = self.no_object_pointer.forward(pointer)?;
        Ok(pointer.where_self(present, &fallback))
    }

    /// The propagation neck's features of a frame's trunk output.
    pub fn features(&self, trunk: &Tensor) -> FrameFeatures {
        let mut levels = self.neck.forward(trunk).into_iter();
        let fine = levels.next().expect("three levels");
        let mid = levels.next().expect("three levels");
        let coarse = levels.next().expect("three levels");
        let (h, w) = (coarse.size()[2], coarse.size()[3]);
        let flat = |x: &Tensor| x.flatten(2, 3).permute([0, 2, 1]);
        FrameFeatures {
            coarse_pos: flat(&sine_position(&coarse)),
            coarse: flat(&coarse),
            fine: [fine, mid],
            grid: (h, w),
        }
    }

    /// How many buckets `objects` fill.
    fn buckets(&self, objects: i64) -> i64 {
        (objects + self.slots - 1) / self.slots
    }

    /// Per-object rows `[N, ...]` into their slots, `[buckets, M, ...]` (object `i` is slot `i`).
    pub(super) fn mux(&self, x: &Tensor) -> Tensor {
        let buckets = self.buckets(x.size()[0]);
        let mut out = vec![buckets, self.slots];
        out.extend_from_slice(&x.size()[1..]);
        Self::padded(x, buckets * self.slots).view(out.as_slice())
    }

    /// Slots `[buckets, M, ...]` back to the first `n` objects `[n, ...]`.
    fn demux(&self, x: &Tensor, n: i64) -> Tensor {
        x.flatten(0, 1).narrow(0, 0, n)
    }

    /// `[rows', ...]` padded with zero rows to `rows`.
    fn padded(x: &Tensor, rows: i64) -> Tensor {
        let have = x.size()[0];
        if have >= rows {
            return x.shallow_clone();
        }
        let mut shape = x.size();
        shape[0] = rows - have;
        Tensor::cat(
            &[
                x.shallow_clone(),
                x.new_zeros(shape.as_slice(), (x.kind(), x.device())),
            ],
            0,
        )
    }

    /// `_encode_new_memory`: the memory features of a frame whose objects have mask logits
    /// `masks` `[N, 1, S, S]` and object scores `[N, 1]` (its positions go unread: SAM 3.1's
    /// memory attention places memories by the raw image features' positions).
    pub fn encode_memory(
        &self,
        pixels: &Tensor,
        masks: &Tensor,
        object_scores: &Tensor,
        clean: Clean,
    ) -> Result<Tensor> {
        let n = masks.size()[0];
        let kind = pixels.kind();
        let for_memory = masks.to_kind(Kind::Float).sigmoid() * 2.0 - 1.0;
        let slots = self.mux(&for_memory.select(1, 0));
        let flags: Vec<f32> = match clean {
            Clean::All => vec![1.0; n as usize],
            Clean::None => vec![0.0; n as usize],
            Clean::Some(flags) => flags.iter().map(|&f| f32::from(u8::from(f))).collect(),
        };
        let (s1, s2) = (masks.size()[2], masks.size()[3]);
        let clean = Tensor::from_slice(&flags)
            .to_device(masks.device())
            .view([n, 1, 1])
            .expand([n, s1, s2], false);
        let input = Tensor::cat(&[slots, self.mux(&clean)], 1);
        let features = self.encoder.forward(pixels, &input)?;
        let present = self.mux(&object_scores.gt(0.0).to_kind(kind));
        let absent = (present.neg() + 1.0).unsqueeze(-1).unsqueeze(-1);
        let no_object = self
            .no_object_spatial
            .to_kind(kind)
            .view([1, self.slots, -1, 1, 1]);
        let per_bucket = (absent * no_object).sum_dim_intlist(1, false, kind);
        Ok(features + per_bucket)
    }

    /// `_prepare_memory_conditioned_features` for frame `index` of `frames` with `objects`
    /// objects: the frame's coarse features after attending to the stored memories.
    pub fn with_memory(
        &self,
        index: i64,
        frames: i64,
        features: &FrameFeatures,
        (conditioning, propagated): (&[(i64, FrameOutput)], &BTreeMap<i64, FrameOutput>),
        objects: i64,
        no_memory: &Tensor,
    ) -> Result<Tensor> {
        let buckets = self.buckets(objects);
        let (mut tokens, mut images, mut image_pos) = (vec![], vec![], vec![]);
        let mut add = |out: &FrameOutput, slot: i64| {
            let time = self.time_positions.get(slot).to_kind(out.memory.kind());
            let memory = Self::padded(&out.memory, buckets);
            tokens.push(memory.flatten(2, 3).permute([0, 2, 1]));
            images.push(out.image.shallow_clone());
            image_pos.push(&out.image_pos + &time);
        };
        for (t, out) in conditioning {
            let distance = index - t;
            let slot = if 0 < distance && distance < MEMORY_FRAMES {
                MEMORY_FRAMES - distance - 1
            } else {
                MEMORY_FRAMES - 1
            };
            add(out, slot);
        }
        for distance in (1..MEMORY_FRAMES).rev() {
            if let Some(out) = propagated.get(&(index - distance)) {
                add(out, distance - 1);
            }
        }
        let max_pointers = frames.min(MAX_POINTER_FRAMES);
        let mut pointers: Vec<(i64, Tensor)> = conditioning
            .iter()
            .filter(|(t, _)| *t <= index)
            .map(|(t, out)| (index - t, Self::padded(&out.pointers, buckets)))
            .collect();
        for distance in 1..max_pointers {
            let t = index - distance;
            if t < 0 {
                break;
            }
            if let Some(out) = propagated.get(&t) {
                pointers.push((distance, Self::padded(&out.pointers, buckets)));
            }
        }
        if tokens.is_empty() && pointers.is_empty() {
            let kind = features.coarse.kind();
            let x = &features.coarse + no_memory.to_kind(kind);
            return Ok(spatial(&x, features.grid));
        }
        let x = features.coarse.expand([buckets, -1, -1], false);
        let x_pos = features.coarse_pos.expand([buckets, -1, -1], false);
        let kind = x.kind();
        let image = Tensor::cat(&images, 1)
            .to_kind(kind)
            .expand([buckets, -1, -1], false);
        let image_pos = Tensor::cat(&image_pos, 1)
            .to_kind(kind)
            .expand([buckets, -1, -1], false);
        // The pointers follow the memories; the raw image features have zeros in their place
        // and the pointers' time positions.
        let (image, image_pos, pointer_count) = if pointers.is_empty() {
            (image, image_pos, 0)
        } else {
            let distances: Vec<f32> = pointers.iter().map(|(d, _)| *d as f32).collect();
            let stacked: Vec<Tensor> = pointers.into_iter().map(|(_, p)| p).collect();
            let stacked = Tensor::stack(&stacked, 1);
            let (b, np, m, c) = stacked.size4()?;
            let scale = ((max_pointers - 1).max(1)) as f64;
            let times = Tensor::from_slice(&distances).to_device(x.device()) / scale;
            let pos = self
                .pointer_time_proj
                .forward(&sine_1d(&times, c).to_kind(kind))?
                .unsqueeze(0)
                .unsqueeze(2)
                .expand([b, np, m, c], false)
                .reshape([b, np * m, c]);
            let pointer_tokens = stacked.reshape([b, np * m, c]);
            let image = Tensor::cat(&[image, pointer_tokens.zeros_like()], 1);
            tokens.push(pointer_tokens);
            (image, Tensor::cat(&[image_pos, pos], 1), np * m)
        };
        let memory_tokens = Tensor::cat(&tokens, 1).to_kind(kind);
        let memory = Memory {
            tokens: memory_tokens,
            image,
            image_pos,
            pointers: pointer_count,
        };
        let out = self.attention.forward(&x, &x_pos, &memory)?;
        Ok(spatial(&out, features.grid))
    }

    /// `_forward_propagation`: masks `[N, 1, 288, 288]` and `[N, 1, 1008, 1008]` (float32),
    /// muxed pointers and object scores `[N, 1]` of `objects` objects from the memory-read
    /// features `[buckets, C, h, w]`.
    pub fn propagate(
        &self,
        image: &Tensor,
        fine: &[Tensor; 2],
        objects: i64,
        size: i64,
    ) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        let kind = image.kind();
        let (b, _, h, w) = image.size4()?;
        let valid = Tensor::arange(b * self.slots, (Kind::Int64, image.device()))
            .lt(objects)
            .to_kind(kind)
            .view([b, self.slots, 1]);
        let slot_embeddings = &valid * self.valid_embed.to_kind(kind).unsqueeze(0)
            + (valid.neg() + 1.0) * self.invalid_embed.to_kind(kind).unsqueeze(0);
        let pe = random_positions(&self.image_gaussian, h, w, kind);
        let [masks, iou, scores, tokens] =
            self.decoder.multiplex(image, &pe, fine, &slot_embeddings)?;
        let masks = self.demux(&masks, objects);
        let iou = self.demux(&iou, objects);
        let scores = self.demux(&scores, objects);
        let tokens = self.demux(&tokens, objects);
        let best = iou.argmax(-1, false);
        let rows = Tensor::arange(objects, (Kind::Int64, image.device()));
        let low = masks.index(&[Some(rows), Some(best)]).unsqueeze(1);
        let present = scores.gt(0.0);
        let low = low.where_self(
            &present.view([objects, 1, 1, 1]),
            &low.full_like(NO_OBJECT_SCORE),
        );
        let high = low
            .to_kind(Kind::Float)
            .upsample_bilinear2d([size, size], false, None, None);
        let pointer = self.pointer_proj.forward(&tokens)?;
        let pointer = self.blend_pointer(&pointer, &present)?;
        Ok((low, high, self.mux(&pointer), scores))
    }

    /// `_deferred_memory_encode`: the memory of a propagated frame from its low-resolution
    /// masks (each object's pixels kept only where it is the strongest, unless that would
    /// shrink it below 30 %).
    pub fn memory_of(&self, low: &Tensor, pixels: &Tensor, clean: Clean) -> Result<Tensor> {
        let n = low.size()[0];
        let masks = if n > 1 {
            let lr = low.select(1, 0);
            let strongest = lr.argmax(0, true);
            let ids = Tensor::arange(n, (Kind::Int64, low.device())).view([n, 1, 1]);
            let capped = lr.clamp_max(-10.0);
            let exclusive = lr.where_self(&strongest.eq_tensor(&ids), &capped);
            let dims = [-1i64, -2].as_slice();
            let before = lr
                .gt(0.0)
                .sum_dim_intlist(dims, false, Kind::Float)
                .clamp_min(1.0);
            let after = exclusive.gt(0.0).sum_dim_intlist(dims, false, Kind::Float);
            let keep = (after / before).ge(0.3).view([n, 1, 1, 1]);
            low.where_self(&keep, &low.clamp_max(-10.0))
        } else {
            low.shallow_clone()
        };
        let masks = masks.upsample_bilinear2d([MASK_SIZE, MASK_SIZE], false, None, None);
        // ±10: whether any pixel of the object is left.
        let any = masks.gt(0.0).flatten(1, -1).any_dim(1, true);
        let scores = any.to_kind(Kind::Float) * 20.0 - 10.0;
        self.encode_memory(pixels, &masks, &scores, clean)
    }
}

/// `fill_holes_in_mask_scores` with scipy's 4-connected components: background islands of at
/// most `max_area` pixels become 0.1, then foreground specks of at most min(`max_area`, half
/// the object's area) become −0.1.
pub fn fill_holes(masks: &Tensor, max_area: i64) -> Tensor {
    let device = masks.device();
    let kind = masks.kind();
    let host = masks.to_kind(Kind::Float).to_device(tch::Device::Cpu);
    let background = host.le(0.0);
    let small = background.logical_and(&connected_areas(&background).le(max_area));
    let host = host.where_self(&small.logical_not(), &host.full_like(0.1));
    let foreground = host.gt(0.0);
    let limit = foreground
        .sum_dim_intlist([2i64, 3].as_slice(), true, Kind::Int64)
        .floor_divide_scalar(2)
        .clamp_max(max_area);
    let specks = foreground.logical_and(&connected_areas(&foreground).le_tensor(&limit));
    host.where_self(&specks.logical_not(), &host.full_like(-0.1))
        .to_kind(kind)
        .to_device(device)
}

/// `_suppress_recently_occluded`: where two objects' masks overlap (≥ 0.3), the one occluded
/// more recently is blanked; objects empty or blanked now are marked occluded at `frame`.
pub fn suppress_recently_occluded(low: &Tensor, last_occluded: &mut [i64], frame: i64) -> Tensor {
    let n = low.size()[0];
    let masks = low.select(1, 0);
    let overlap = mask_overlap(&masks, &masks);
    let overlap: Vec<f64> =
        Vec::try_from(overlap.to_kind(Kind::Double).flatten(0, -1)).expect("overlaps");
    let empty: Vec<bool> =
        Vec::try_from(masks.gt(0.0).flatten(1, -1).any_dim(1, false).logical_not()).expect("flags");
    let nu = n as usize;
    let mut suppress = vec![false; nu];
    for i in 0..nu {
        for j in i + 1..nu {
            if overlap[i * nu + j] < 0.3 {
                continue;
            }
            let (a, b) = (last_occluded[i], last_occluded[j]);
            if a > b && b > -1 {
                suppress[i] = true;
            }
            if b > a && a > -1 {
                suppress[j] = true;
            }
        }
    }
    for i in 0..nu {
        if empty[i] || suppress[i] {
            last_occluded[i] = frame;
        }
    }
    let flags = Tensor::from_slice(&suppress)
        .to_device(low.device())
        .view([n, 1, 1, 1]);
    low.where_self(&flags.logical_not(), &low.full_like(-10.0))
}

/// Detections `(masks [K, h, w], scores)` above `threshold` after mask NMS.
pub fn kept_detections(
    masks: &Tensor,
    probabilities: &Tensor,
    threshold: f64,
) -> (Tensor, Vec<f64>) {
    let keep = probabilities.gt(threshold).nonzero().squeeze_dim(1);
    nms(
        &masks.index_select(0, &keep),
        &probabilities.index_select(0, &keep),
        0.5,
    )
}
