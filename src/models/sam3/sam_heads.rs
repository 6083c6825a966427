//! SAM's interactive heads as SAM 3's tracker keeps them (`comfy/ldm/sam3/tracker.py`
//! `SAMPromptEncoder`, `SAMMaskDecoder`, `forward_sam_heads`): points, a box or a coarse mask
//! become prompt embeddings; a two-way transformer between them and the image features gives
//! mask logits, upscaled 4× with the finer backbone levels, and the object score that decides
//! whether there is a mask at all.

use anyhow::Result;
use tch::{Kind, Tensor};

use super::parts::{f32, linear, present, Attention, Conv, Mlp, Norm};
use crate::models::weights::Weights;
use crate::runtime::linear::Linear;

const HEADS: i64 = 8;
/// The logit SAM gives every pixel when it sees no object.
const NO_OBJECT_SCORE: f64 = -1024.0;

/// What the heads are asked to segment, in the 1008-px input's pixel coordinates.
pub enum SegmentPrompt {
    /// Points `[N, 2]` with labels (1 positive, 0 negative).
    Points(Tensor, Vec<i64>),
    /// A box `[x1, y1, x2, y2]`.
    Box([f64; 4]),
    /// Coarse mask logits `[1, 1, h, w]`.
    Mask(Tensor),
}

struct PromptEncoder {
    gaussian: Tensor,
    point_embeddings: Vec<Tensor>,
    not_a_point: Tensor,
    no_mask: Tensor,
    down: [Conv; 3],
    down_norms: [Norm; 2],
}

/// Fourier features of 0..1 coordinates `[..., 2]` (float32): sines then cosines.
fn fourier(gaussian: &Tensor, coords: &Tensor) -> Tensor {
    let projected = (f32(coords) * 2.0 - 1.0).matmul(gaussian) * (2.0 * std::f64::consts::PI);
    Tensor::cat(&[projected.sin(), projected.cos()], -1)
}

/// `PositionEmbeddingRandom` over an `h × w` grid of cell centres, `[1, D, h, w]` in `kind`.
pub fn random_positions(gaussian: &Tensor, h: i64, w: i64, kind: Kind) -> Tensor {
    let device = gaussian.device();
    let x = (Tensor::arange(w, (Kind::Float, device)) + 0.5) / w as f64;
    let y = (Tensor::arange(h, (Kind::Float, device)) + 0.5) / h as f64;
    let grid = Tensor::stack(
        &[
            x.unsqueeze(0).expand([h, w], false),
            y.unsqueeze(1).expand([h, w], false),
        ],
        -1,
    );
    fourier(gaussian, &grid)
        .permute([2, 0, 1])
        .unsqueeze(0)
        .to_kind(kind)
}

impl PromptEncoder {
    fn load(w: &Weights, p: &str) -> Result<Self> {
        let point = |i: usize| w.tensor(&format!("{p}.point_embeddings.{i}.weight"));
        Ok(Self {
            gaussian: w.tensor_as(
                &format!("{p}.pe_layer.positional_encoding_gaussian_matrix"),
                Kind::Float,
            )?,
            point_embeddings: (0..4).map(point).collect::<Result<_>>()?,
            not_a_point: w.tensor(&format!("{p}.not_a_point_embed.weight"))?,
            no_mask: w.tensor(&format!("{p}.no_mask_embed.weight"))?,
            down: [
                Conv::load(w, &format!("{p}.mask_downscaling.0"))?,
                Conv::load(w, &format!("{p}.mask_downscaling.3"))?,
                Conv::load(w, &format!("{p}.mask_downscaling.6"))?,
            ],
            down_norms: [
                Norm::load(w, &format!("{p}.mask_downscaling.1"))?,
                Norm::load(w, &format!("{p}.mask_downscaling.4"))?,
            ],
        })
    }

    /// The dense positions of an `h × w` grid, `[1, D, h, w]` in `kind`.
    fn dense_positions(&self, h: i64, w: i64, kind: Kind) -> Tensor {
        random_positions(&self.gaussian, h, w, kind)
    }

    /// Sparse embeddings `[1, n, D]` of the points (padded with a not-a-point when there is no
    /// box, as ComfyUI pads) or of the box's corners after that not-a-point.
    fn sparse(&self, prompt: &SegmentPrompt, image_size: f64, kind: Kind) -> Tensor {
        let device = self.gaussian.device();
        let encode =
            |coords: &Tensor| fourier(&self.gaussian, &((coords + 0.5) / image_size)).to_kind(kind);
        let (points, labels) = match prompt {
            SegmentPrompt::Points(points, labels) => (points.to_device(device), labels.clone()),
            _ => (Tensor::zeros([1, 2], (Kind::Float, device)), vec![-1]),
        };
        let is_box = matches!(prompt, SegmentPrompt::Box(_));
        let (points, labels) = if is_box {
            (points, labels)
        } else {
            let pad = Tensor::zeros([1, 2], (Kind::Float, device));
            let mut labels = labels;
            labels.push(-1);
            (Tensor::cat(&[points.to_kind(Kind::Float), pad], 0), labels)
        };
        let pe = encode(&points.to_kind(Kind::Float));
        let rows: Vec<Tensor> = labels
            .iter()
            .enumerate()
            .map(|(i, &label)| match label {
                -1 => self.not_a_point.get(0),
                l => pe.get(i as i64) + self.point_embeddings[l as usize].get(0),
            })
            .collect();
        let mut sparse = Tensor::stack(&rows, 0);
        if let SegmentPrompt::Box([x1, y1, x2, y2]) = prompt {
            let corners = Tensor::from_slice(&[*x1 as f32, *y1 as f32, *x2 as f32, *y2 as f32])
                .view([2, 2])
                .to_device(device);
            let corners = encode(&corners);
            let tl = corners.get(0) + self.point_embeddings[2].get(0);
            let br = corners.get(1) + self.point_embeddings[3].get(0);
            sparse = Tensor::cat(&[sparse, tl.unsqueeze(0), br.unsqueeze(0)], 0);
        }
        sparse.unsqueeze(0)
    }

    /// Dense embeddings `[1, D, h, w]`: the mask downscaled 4× (first resized with antialiasing
    /// to 4h × 4w), or the learned no-mask vector everywhere.
    fn dense(&self, prompt: &SegmentPrompt, h: i64, w: i64, kind: Kind) -> Tensor {
        let SegmentPrompt::Mask(mask) = prompt else {
            return self
                .no_mask
                .view([1, -1, 1, 1])
                .expand([1, -1, h, w], false);
        };
        let size = mask.size();
        let mask = mask.to_kind(kind);
        let mask = if size[2] == 4 * h && size[3] == 4 * w {
            mask
        } else {
            mask.internal_upsample_bilinear2d_aa([4 * h, 4 * w], false, None, None)
        };
        let x = self.down_norms[0]
            .channels(&self.down[0].patches(&mask))
            .gelu("none");
        let x = self.down_norms[1]
            .channels(&self.down[1].patches(&x))
            .gelu("none");
        self.down[2].forward(&x, 1, 0)
    }
}

/// SAM's attention with its optional 2× narrower inner width.
struct TwoWayLayer {
    self_attn: Attention,
    token_to_image: Attention,
    image_to_token: Attention,
    mlp: [Linear; 2],
    norms: [Norm; 4],
}

pub struct MaskDecoder {
    layers: Vec<TwoWayLayer>,
    final_attn: Attention,
    norm_final: Norm,
    tokens: Tensor,
    upscale: [Conv; 2],
    upscale_norm: Norm,
    conv_s0: Conv,
    conv_s1: Conv,
    hypernetworks: Vec<Mlp>,
    iou_head: Mlp,
    object_score_head: Mlp,
}

impl MaskDecoder {
    pub(super) fn load(w: &Weights, p: &str) -> Result<Self> {
        let t = format!("{p}.transformer");
        let mut layers = Vec::new();
        while w.has(&format!("{t}.layers.{}.norm1.weight", layers.len())) {
            let l = format!("{t}.layers.{}", layers.len());
            let attn = |n: &str| Attention::load(w, &format!("{l}.{n}"), HEADS);
            // The release names the MLP `lin1`/`lin2`, ComfyUI's conversion `0`/`2`.
            let mlp_in = present(
                w,
                [format!("{l}.mlp.0"), format!("{l}.mlp.lin1")],
                ".weight",
            )?;
            let mlp_out = present(
                w,
                [format!("{l}.mlp.2"), format!("{l}.mlp.lin2")],
                ".weight",
            )?;
            let norm = |i: usize| Norm::load(w, &format!("{l}.norm{i}"));
            layers.push(TwoWayLayer {
                self_attn: attn("self_attn")?,
                token_to_image: attn("cross_attn_token_to_image")?,
                image_to_token: attn("cross_attn_image_to_token")?,
                mlp: [linear(w, &mlp_in)?, linear(w, &mlp_out)?],
                norms: [norm(1)?, norm(2)?, norm(3)?, norm(4)?],
            });
        }
        let norm_final = present(
            w,
            [format!("{t}.norm_final"), format!("{t}.norm_final_attn")],
            ".weight",
        )?;
        let tokens = Tensor::cat(
            &[
                w.tensor(&format!("{p}.obj_score_token.weight"))?,
                w.tensor(&format!("{p}.iou_token.weight"))?,
                w.tensor(&format!("{p}.mask_tokens.weight"))?,
            ],
            0,
        );
        let mut hypernetworks = Vec::new();
        while w.has(&format!(
            "{p}.output_hypernetworks_mlps.{}.layers.0.weight",
            hypernetworks.len()
        )) {
            hypernetworks.push(Mlp::load(
                w,
                &format!("{p}.output_hypernetworks_mlps.{}", hypernetworks.len()),
            )?);
        }
        Ok(Self {
            layers,
            final_attn: Attention::load(w, &format!("{t}.final_attn_token_to_image"), HEADS)?,
            norm_final: Norm::load(w, &norm_final)?,
            tokens,
            upscale: [
                Conv::load(w, &format!("{p}.output_upscaling.0"))?,
                Conv::load(w, &format!("{p}.output_upscaling.3"))?,
            ],
            upscale_norm: Norm::load(w, &format!("{p}.output_upscaling.1"))?,
            conv_s0: Conv::load(w, &format!("{p}.conv_s0"))?,
            conv_s1: Conv::load(w, &format!("{p}.conv_s1"))?,
            hypernetworks,
            iou_head: Mlp::load(w, &format!("{p}.iou_prediction_head"))?,
            object_score_head: Mlp::load(w, &format!("{p}.pred_obj_score_head"))?,
        })
    }

    /// The two-way transformer: (tokens, image) after the layers and the final attention.
    fn transformer(
        &self,
        tokens: &Tensor,
        image: &Tensor,
        image_pe: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let (mut queries, mut keys) = (tokens.shallow_clone(), image.shallow_clone());
        for (i, l) in self.layers.iter().enumerate() {
            queries = if i == 0 {
                l.norms[0].layer(&l.self_attn.own(&queries)?)
            } else {
                let q = &queries + tokens;
                l.norms[0].layer(&(&queries + l.self_attn.forward(&q, &q, &queries, None)?))
            };
            let (q, k) = (&queries + tokens, &keys + image_pe);
            queries =
                l.norms[1].layer(&(&queries + l.token_to_image.forward(&q, &k, &keys, None)?));
            let hidden = l.mlp[0].forward(&queries)?.relu();
            queries = l.norms[2].layer(&(&queries + l.mlp[1].forward(&hidden)?));
            let (q, k) = (&queries + tokens, &keys + image_pe);
            keys = l.norms[3].layer(&(&keys + l.image_to_token.forward(&k, &q, &queries, None)?));
        }
        let (q, k) = (&queries + tokens, &keys + image_pe);
        let queries = self
            .norm_final
            .layer(&(&queries + self.final_attn.forward(&q, &k, &keys, None)?));
        Ok((queries, keys))
    }

    /// The mask features `[B, C/8, 4h, 4w]`: the transformer's image side upscaled twice with
    /// the finer backbone levels added.
    fn upscaled(&self, keys: &Tensor, (c, h, w): (i64, i64, i64), fine: &[Tensor; 2]) -> Tensor {
        let b = keys.size()[0];
        let src = keys.permute([0, 2, 1]).reshape([b, c, h, w]);
        let up = self.upscale[0].up2(&src) + self.conv_s1.forward(&fine[1], 1, 0);
        let up = self.upscale_norm.channels(&up).gelu("none");
        (self.upscale[1].up2(&up) + self.conv_s0.forward(&fine[0], 1, 0)).gelu("none")
    }

    /// SAM 3.1's multiplex decoder (`MultiplexMaskDecoder`, no prompts): for each of the `M`
    /// object slots of each bucket, with `slot_embeddings` `[B, M, C]` added to its mask tokens,
    /// the three mask logits `[B, M, 3, 4h, 4w]`, their predicted IoUs `[B, M, 3]`, the object
    /// score logits `[B, M, 1]` and the first mask token `[B, M, C]`.
    pub fn multiplex(
        &self,
        image: &Tensor,
        image_pe: &Tensor,
        fine: &[Tensor; 2],
        slot_embeddings: &Tensor,
    ) -> Result<[Tensor; 4]> {
        let (b, m, c) = slot_embeddings.size3()?;
        let (_, _, h, w) = image.size4()?;
        let per_object = self.hypernetworks.len() as i64;
        let tokens = self.tokens.to_kind(image.kind());
        let others = tokens
            .narrow(0, 0, 2 * m)
            .unsqueeze(0)
            .expand([b, -1, -1], false);
        let masks = tokens
            .narrow(0, 2 * m, m * per_object)
            .view([1, m, per_object, c])
            + slot_embeddings.unsqueeze(2);
        let tokens = Tensor::cat(&[others, masks.flatten(1, 2)], 1);
        let flat = |t: &Tensor| t.flatten(2, 3).permute([0, 2, 1]);
        let src = flat(image).expand([b, -1, -1], false);
        let pe = flat(image_pe).expand([b, -1, -1], false);
        let (queries, keys) = self.transformer(&tokens, &src, &pe)?;
        let up = self.upscaled(&keys, (c, h, w), fine);
        let mask_tokens = queries
            .narrow(1, 2 * m, m * per_object)
            .view([b, m, per_object, c]);
        let hyper: Vec<Tensor> = self
            .hypernetworks
            .iter()
            .enumerate()
            .map(|(i, mlp)| mlp.forward(&mask_tokens.select(2, i as i64)))
            .collect::<Result<_>>()?;
        let (uh, uw) = (up.size()[2], up.size()[3]);
        let masks = Tensor::stack(&hyper, 2)
            .flatten(1, 2)
            .bmm(&up.flatten(2, 3))
            .view([b, m, per_object, uh, uw]);
        let iou = self.iou_head.forward(&queries.narrow(1, m, m))?;
        let scores = self.object_score_head.forward(&queries.narrow(1, 0, m))?;
        Ok([masks, iou, scores, mask_tokens.select(2, 0)])
    }
}

/// The interactive heads: prompt encoder, mask decoder, and the learned "no memory" vector the
/// tracker adds to the image features of a first frame.
pub struct SamHeads {
    prompt_encoder: PromptEncoder,
    decoder: MaskDecoder,
    no_memory: Tensor,
}

/// The backbone features the heads read: the coarsest level `[1, D, h, w]` and the two finer
/// ones (4× and 2×).
pub struct HeadFeatures {
    pub coarse: Tensor,
    pub fine: [Tensor; 2],
}

impl SamHeads {
    /// SAM 3.1 keeps them as the tracker's `interactive_*`, SAM 3 as its `sam_*`.
    pub fn load(w: &Weights, tracker: &str, multiplex: bool) -> Result<Self> {
        let (prompt, decoder, no_memory) = if multiplex {
            (
                "interactive_sam_prompt_encoder",
                "interactive_sam_mask_decoder",
                "interactivity_no_mem_embed",
            )
        } else {
            ("sam_prompt_encoder", "sam_mask_decoder", "no_mem_embed")
        };
        Ok(Self {
            prompt_encoder: PromptEncoder::load(w, &format!("{tracker}{prompt}"))?,
            decoder: MaskDecoder::load(w, &format!("{tracker}{decoder}"))?,
            no_memory: w.tensor(&format!("{tracker}{no_memory}"))?,
        })
    }

    /// The two-way transformer over the image features (with the no-memory vector) and the
    /// embeddings of `prompt`, for a batch of `n` prompts: (tokens, image side).
    fn decode(
        &self,
        features: &HeadFeatures,
        prompt: &SegmentPrompt,
        n: i64,
        size: f64,
    ) -> Result<(Tensor, Tensor)> {
        let (_, c, h, w) = features.coarse.size4()?;
        let kind = features.coarse.kind();
        let flat = |x: &Tensor| x.flatten(2, 3).permute([0, 2, 1]);
        let image = flat(&features.coarse) + self.no_memory.view([1, 1, c]);
        let pe = &self.prompt_encoder;
        let sparse = pe.sparse(prompt, size, kind).expand([n, -1, -1], false);
        let dense = pe.dense(prompt, h, w, kind);
        let image_pe = flat(&pe.dense_positions(h, w, kind)).expand([n, -1, -1], false);
        let d = &self.decoder;
        let tokens = Tensor::cat(
            &[d.tokens.unsqueeze(0).expand([n, -1, -1], false), sparse],
            1,
        );
        d.transformer(&tokens, &(image + flat(&dense)), &image_pe)
    }

    /// `forward_sam_heads` on coarse masks `[N, 1, h', w']` (one object each, no points): the
    /// single-mask output's token `[N, C]` and the object score logits `[N, 1]`.
    pub fn mask_tokens(&self, features: &HeadFeatures, masks: &Tensor) -> Result<(Tensor, Tensor)> {
        let prompt = SegmentPrompt::Mask(masks.shallow_clone());
        let (queries, _) = self.decode(features, &prompt, masks.size()[0], 1.0)?;
        let object = self
            .decoder
            .object_score_head
            .forward(&queries.select(1, 0))?;
        Ok((queries.select(1, 2), object))
    }

    /// The learned no-memory vector `[1, 1, C]` a first frame's features get.
    pub fn no_memory(&self) -> &Tensor {
        &self.no_memory
    }

    /// High-resolution mask logits `[1, 1, size, size]` for one prompt (`forward_sam_heads`):
    /// with a single point, the best of the three multimask outputs by predicted IoU.
    pub fn segment(
        &self,
        features: &HeadFeatures,
        prompt: &SegmentPrompt,
        size: i64,
    ) -> Result<Tensor> {
        let (_, c, h, w) = features.coarse.size4()?;
        let (queries, keys) = self.decode(features, prompt, 1, size as f64)?;
        let d = &self.decoder;
        let up = d.upscaled(&keys, (c, h, w), &features.fine);
        let hyper: Vec<Tensor> = d
            .hypernetworks
            .iter()
            .enumerate()
            .map(|(i, mlp)| mlp.forward(&queries.select(1, 2 + i as i64)))
            .collect::<Result<_>>()?;
        let (uh, uw) = (up.size()[2], up.size()[3]);
        let masks = Tensor::stack(&hyper, 1)
            .matmul(&up.flatten(2, 3))
            .view([1, -1, uh, uw]);
        let multimask = matches!(prompt, SegmentPrompt::Points(_, labels) if labels.len() == 1);
        let object = d.object_score_head.forward(&queries.select(1, 0))?;
        let masks = if multimask {
            let iou = d.iou_head.forward(&queries.select(1, 1))?;
            let count = masks.size()[1];
            let best = iou
                .narrow(1, 1, count - 1)
                .argmax(-1, false)
                .int64_value(&[0]);
            masks.narrow(1, 1 + best, 1)
        } else {
            masks.narrow(1, 0, 1)
        };
        let appearing = object.gt(0.0).view([1, 1, 1, 1]);
        let masks = masks.where_self(&appearing, &masks.full_like(NO_OBJECT_SCORE));
        Ok(masks.upsample_bilinear2d([size, size], false, None, None))
    }
}
