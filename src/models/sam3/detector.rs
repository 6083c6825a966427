//! SAM 3's open-vocabulary detector on a text prompt (`comfy/ldm/sam3/detector.py`): box
//! exemplars encoded by the geometry encoder and its class token join the prompt, a 6-layer
//! DETR encoder fuses the image with it, a 6-layer decoder refines learned anchor boxes
//! (box-relative position bias in the image cross-attention, a presence token beside the
//! queries), queries are scored against the pooled prompt, and a pixel decoder gives each query
//! a mask.

use anyhow::Result;
use tch::{Kind, Tensor};

use super::backbone::{sine_features, sine_position};
use super::parts::{f32, key_mask, linear, Attention, Conv, Mlp, Norm};
use super::roi_align::roi_align;
use crate::models::weights::Weights;
use crate::runtime::linear::Linear;

const HEADS: i64 = 8;

/// `cxcywh` → `xyxy` over the last dimension.
pub fn xyxy(boxes: &Tensor) -> Tensor {
    let parts = boxes.unbind(-1);
    let (cx, cy, w, h) = (&parts[0], &parts[1], &parts[2], &parts[3]);
    Tensor::stack(
        &[cx - w * 0.5, cy - h * 0.5, cx + w * 0.5, cy + h * 0.5],
        -1,
    )
}

fn inverse_sigmoid(x: &Tensor) -> Tensor {
    (x / (x.neg() + 1.0 + 1e-6) + 1e-6).log()
}

/// A pre-norm encoder layer: self-attention with positions on queries and keys, optional
/// cross-attention to the prompt, a ReLU feed-forward.
struct EncoderLayer {
    self_attn: Attention,
    cross_attn_image: Attention,
    norm1: Norm,
    norm2: Norm,
    norm3: Norm,
    linear1: Linear,
    linear2: Linear,
}

impl EncoderLayer {
    fn load(w: &Weights, p: &str) -> Result<Self> {
        Ok(Self {
            self_attn: Attention::load(w, &format!("{p}.self_attn"), HEADS)?,
            cross_attn_image: Attention::load(w, &format!("{p}.cross_attn_image"), HEADS)?,
            norm1: Norm::load(w, &format!("{p}.norm1"))?,
            norm2: Norm::load(w, &format!("{p}.norm2"))?,
            norm3: Norm::load(w, &format!("{p}.norm3"))?,
            linear1: linear(w, &format!("{p}.linear1"))?,
            linear2: linear(w, &format!("{p}.linear2"))?,
        })
    }

    fn feed_forward(&self, x: &Tensor) -> Result<Tensor> {
        let hidden = self.linear1.forward(&self.norm3.layer(x))?.relu();
        Ok(x + self.linear2.forward(&hidden)?)
    }

    fn forward(&self, x: &Tensor, pos: &Tensor, prompt: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let normed = self.norm1.layer(x);
        let qk = &normed + pos;
        let x = x + self.self_attn.forward(&qk, &qk, &normed, None)?;
        let x = &x
            + self
                .cross_attn_image
                .forward(&self.norm2.layer(&x), prompt, prompt, Some(mask))?;
        self.feed_forward(&x)
    }

    /// The geometry encoder's use of the layer: no positions on its tokens, and on the image
    /// keys the image positions (class token) or none (box tokens).
    fn geometry(&self, x: &Tensor, image: &Tensor, image_keys: &Tensor) -> Result<Tensor> {
        let x = x + self.self_attn.own(&self.norm1.layer(x))?;
        let x = &x
            + self
                .cross_attn_image
                .forward(&self.norm2.layer(&x), image_keys, image, None)?;
        self.feed_forward(&x)
    }
}

struct DecoderLayer {
    self_attn: Attention,
    cross_attn: Attention,
    ca_text: Attention,
    norm1: Norm,
    norm2: Norm,
    norm3: Norm,
    catext_norm: Norm,
    linear1: Linear,
    linear2: Linear,
}

impl DecoderLayer {
    fn load(w: &Weights, p: &str) -> Result<Self> {
        let attn = |n: &str| Attention::load(w, &format!("{p}.{n}"), HEADS);
        let norm = |n: &str| Norm::load(w, &format!("{p}.{n}"));
        Ok(Self {
            self_attn: attn("self_attn")?,
            cross_attn: attn("cross_attn")?,
            ca_text: attn("ca_text")?,
            norm1: norm("norm1")?,
            norm2: norm("norm2")?,
            norm3: norm("norm3")?,
            catext_norm: norm("catext_norm")?,
            linear1: linear(w, &format!("{p}.linear1"))?,
            linear2: linear(w, &format!("{p}.linear2"))?,
        })
    }

    /// Post-norm: self-attention, the prompt, the image (with the box bias), feed-forward.
    fn forward(
        &self,
        x: &Tensor,
        x_pos: &Tensor,
        image: &Image,
        prompt: &Prompt,
        bias: &Tensor,
    ) -> Result<Tensor> {
        let qk = x + x_pos;
        let x = self
            .norm2
            .layer(&(x + self.self_attn.forward(&qk, &qk, x, None)?));
        let text = self.ca_text.forward(
            &(&x + x_pos),
            &prompt.tokens,
            &prompt.tokens,
            Some(&prompt.mask),
        )?;
        let x = self.catext_norm.layer(&(&x + text));
        let seen =
            self.cross_attn
                .forward(&(&x + x_pos), &image.keys, &image.tokens, Some(bias))?;
        let x = self.norm1.layer(&(&x + seen));
        let hidden = self.linear1.forward(&x)?.relu();
        Ok(self.norm3.layer(&(&x + self.linear2.forward(&hidden)?)))
    }
}

/// The image as the transformer sees it: tokens `[B, HW, D]`, their positions, keys = both.
struct Image {
    tokens: Tensor,
    pos: Tensor,
    keys: Tensor,
    height: i64,
    width: i64,
}

/// The prompt tokens `[B, T, D]` and their keep-mask as SDPA's boolean `[B, 1, 1, T]`.
struct Prompt {
    tokens: Tensor,
    mask: Tensor,
    /// `[B, T, 1]` in the compute dtype, for the masked mean.
    weight: Tensor,
}

struct Decoder {
    layers: Vec<DecoderLayer>,
    norm: Norm,
    query_embed: Tensor,
    reference_points: Tensor,
    ref_point_head: Mlp,
    bbox_embed: Mlp,
    rpb_x: Mlp,
    rpb_y: Mlp,
    presence_token: Tensor,
}

impl Decoder {
    fn load(w: &Weights, p: &str) -> Result<Self> {
        let mut layers = Vec::new();
        while w.has(&format!("{p}.layers.{}.norm1.weight", layers.len())) {
            layers.push(DecoderLayer::load(
                w,
                &format!("{p}.layers.{}", layers.len()),
            )?);
        }
        Ok(Self {
            layers,
            norm: Norm::load(w, &format!("{p}.norm"))?,
            query_embed: w.tensor(&format!("{p}.query_embed.weight"))?,
            reference_points: w.tensor(&format!("{p}.reference_points.weight"))?,
            ref_point_head: Mlp::load(w, &format!("{p}.ref_point_head"))?,
            bbox_embed: Mlp::load(w, &format!("{p}.bbox_embed"))?,
            rpb_x: Mlp::load(w, &format!("{p}.boxRPB_embed_x"))?,
            rpb_y: Mlp::load(w, &format!("{p}.boxRPB_embed_y"))?,
            presence_token: w.tensor(&format!("{p}.presence_token.weight"))?,
        })
    }

    /// The box-relative position bias `[B, heads, 1 + Q, H·W]` (zero for the presence token):
    /// log-scaled offsets of each cell from the anchor's edges through two small MLPs.
    fn box_bias(&self, anchors: &Tensor, h: i64, w: i64) -> Result<Tensor> {
        let boxes = f32(&xyxy(anchors));
        let b = boxes.size()[0];
        let device = boxes.device();
        let coords = |n: i64| Tensor::arange(n, (Kind::Float, device)) / n as f64;
        let dx = coords(w).view([1, 1, -1, 1]) - boxes.slice(2, 0, 4, 2).unsqueeze(2);
        let dy = coords(h).view([1, 1, -1, 1]) - boxes.slice(2, 1, 4, 2).unsqueeze(2);
        let log_scale = |d: Tensor| {
            let d8 = d * 8.0;
            d8.sign() * (d8.abs() + 1.0).log2() / 8f64.log2()
        };
        let kind = anchors.kind();
        let rx = self.rpb_x.forward(&log_scale(dx).to_kind(kind))?;
        let ry = self.rpb_y.forward(&log_scale(dy).to_kind(kind))?;
        let bias = (ry.unsqueeze(3) + rx.unsqueeze(2))
            .flatten(2, 3)
            .permute([0, 3, 1, 2]);
        let heads = bias.size()[1];
        let presence = Tensor::zeros([b, heads, 1, h * w], (bias.kind(), device));
        Ok(Tensor::cat(&[presence, bias], 2))
    }

    /// Query states `[B, Q, D]` and boxes `[B, Q, 4]` (cxcywh in 0..1).
    fn forward(&self, image: &Image, prompt: &Prompt) -> Result<(Tensor, Tensor)> {
        let b = image.tokens.size()[0];
        let d = self.query_embed.size()[1];
        let expand = |t: &Tensor| t.unsqueeze(0).expand([b, -1, -1], false);
        let mut tgt = expand(&self.query_embed);
        let mut presence = expand(&self.presence_token);
        let mut anchors = expand(&self.reference_points).sigmoid();
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            let sine = sine_features(&f32(&anchors), d / 2)
                .flatten(2, 3)
                .to_kind(anchors.kind());
            let query_pos = self.ref_point_head.forward(&sine)?;
            let x = Tensor::cat(&[&presence, &tgt], 1);
            let x_pos = Tensor::cat(&[presence.zeros_like(), query_pos], 1);
            let bias = self.box_bias(&anchors, image.height, image.width)?;
            let x = layer.forward(&x, &x_pos, image, prompt, &bias)?;
            presence = x.narrow(1, 0, 1);
            tgt = x.narrow(1, 1, x.size()[1] - 1);
            if i < last {
                let delta = self.bbox_embed.forward(&self.norm.layer(&tgt))?;
                anchors = (inverse_sigmoid(&anchors) + delta).sigmoid();
            }
        }
        let queries = self.norm.layer(&tgt);
        let boxes = (inverse_sigmoid(&anchors) + self.bbox_embed.forward(&queries)?).sigmoid();
        Ok((queries, boxes))
    }
}

/// What the detector gives for one image: boxes `[B, Q, 4]` (xyxy in 0..1), score logits
/// `[B, Q]`, mask logits `[B, Q, h, w]` at the finest feature level.
pub struct Detections {
    pub boxes: Tensor,
    pub scores: Tensor,
    pub masks: Tensor,
}

pub struct Detector {
    resizer: Linear,
    geometry_cls: Tensor,
    geometry_final_proj: Linear,
    geometry_norm: Norm,
    geometry_layers: Vec<EncoderLayer>,
    geometry_encode_norm: Norm,
    geometry_boxes: Option<BoxEncoder>,
    encoder: Vec<EncoderLayer>,
    decoder: Decoder,
    hs_proj: Linear,
    prompt_proj: Linear,
    prompt_mlp: [Linear; 2],
    prompt_mlp_norm: Norm,
    cross_attend_prompt: Attention,
    cross_attn_norm: Norm,
    pixel_convs: Vec<Conv>,
    pixel_norms: Vec<Norm>,
    instance_seg_head: Conv,
    mask_embed: Mlp,
}

/// The geometry encoder's box exemplars (`_encode_boxes`): each box's coordinates, the image
/// features pooled inside it, its sine position and size, and the positive label's embedding.
struct BoxEncoder {
    direct: Linear,
    pool: Conv,
    position: Linear,
    positive: Tensor,
    image_norm: Norm,
}

impl BoxEncoder {
    fn load(w: &Weights, g: &str) -> Result<Option<Self>> {
        if !w.has(&format!("{g}.boxes_direct_project.weight")) {
            return Ok(None);
        }
        Ok(Some(Self {
            direct: linear(w, &format!("{g}.boxes_direct_project"))?,
            pool: Conv::load(w, &format!("{g}.boxes_pool_project"))?,
            position: linear(w, &format!("{g}.boxes_pos_enc_project"))?,
            positive: w.tensor(&format!("{g}.label_embed.weight"))?.get(1),
            image_norm: Norm::load(w, &format!("{g}.img_pre_norm"))?,
        }))
    }

    /// Tokens `[B, N, D]` for boxes `[B, N, 4]` (cxcywh in 0..1) over the image tokens.
    fn forward(&self, image: &Image, boxes: &Tensor) -> Result<Tensor> {
        let boxes = boxes.to_kind(image.tokens.kind());
        let (b, n, _) = boxes.size3()?;
        let (h, w) = (image.height, image.width);
        let d = image.tokens.size()[2];
        let map = self
            .image_norm
            .layer(&image.tokens)
            .permute([0, 2, 1])
            .reshape([b, d, h, w]);
        let scale = Tensor::from_slice(&[w as f64, h as f64, w as f64, h as f64]);
        let corners = (xyxy(&boxes)
            .to_kind(Kind::Double)
            .to_device(tch::Device::Cpu)
            * scale)
            .view([b, n, 4]);
        // As many bins per side as the pooling convolution's kernel (7).
        let bins = self.pool.kernel();
        let mut pooled = Vec::new();
        for i in 0..b {
            for j in 0..n {
                let c: Vec<f64> = Vec::try_from(corners.get(i).get(j))?;
                pooled.push(roi_align(&map.get(i), [c[0], c[1], c[2], c[3]], bins));
            }
        }
        let pooled = self
            .pool
            .forward(&Tensor::stack(&pooled, 0), 1, 0)
            .view([b, n, d]);
        let parts = boxes.unbind(-1);
        let (cx, cy, bw, bh) = (&parts[0], &parts[1], &parts[2], &parts[3]);
        let half = d / 2;
        let sine = |v: &Tensor| sine_features(&v.to_kind(Kind::Float), half);
        let position = Tensor::cat(
            &[
                sine(cy),
                sine(cx),
                bh.unsqueeze(-1).to_kind(Kind::Float),
                bw.unsqueeze(-1).to_kind(Kind::Float),
            ],
            -1,
        )
        .to_kind(boxes.kind());
        Ok(self.direct.forward(&boxes)?
            + pooled
            + self.position.forward(&position)?
            + self.positive.to_kind(boxes.kind()))
    }
}

/// The neck level the encoder reads: the trunk's own resolution (after 4× and 2×; SAM 3's ½×
/// level, which follows it, only reaches the pixel decoder).
const ENCODER_LEVEL: usize = 2;

fn layers_of(w: &Weights, prefix: &str) -> Result<Vec<EncoderLayer>> {
    let mut layers = Vec::new();
    while w.has(&format!("{prefix}.{}.norm1.weight", layers.len())) {
        layers.push(EncoderLayer::load(
            w,
            &format!("{prefix}.{}", layers.len()),
        )?);
    }
    Ok(layers)
}

impl Detector {
    pub fn load(w: &Weights) -> Result<Self> {
        let g = "detector.geometry_encoder";
        let s = "detector.dot_prod_scoring";
        let h = "detector.segmentation_head";
        let mut pixel_convs = Vec::new();
        let mut pixel_norms = Vec::new();
        while w.has(&format!(
            "{h}.pixel_decoder.conv_layers.{}.weight",
            pixel_convs.len()
        )) {
            let i = pixel_convs.len();
            pixel_convs.push(Conv::load(
                w,
                &format!("{h}.pixel_decoder.conv_layers.{i}"),
            )?);
            pixel_norms.push(Norm::load(w, &format!("{h}.pixel_decoder.norms.{i}"))?);
        }
        Ok(Self {
            resizer: linear(w, "detector.backbone.language_backbone.resizer")?,
            geometry_cls: w.tensor(&format!("{g}.cls_embed.weight"))?,
            geometry_final_proj: linear(w, &format!("{g}.final_proj"))?,
            geometry_norm: Norm::load(w, &format!("{g}.norm"))?,
            geometry_layers: layers_of(w, &format!("{g}.encode"))?,
            geometry_encode_norm: Norm::load(w, &format!("{g}.encode_norm"))?,
            geometry_boxes: BoxEncoder::load(w, g)?,
            encoder: layers_of(w, "detector.transformer.encoder.layers")?,
            decoder: Decoder::load(w, "detector.transformer.decoder")?,
            hs_proj: linear(w, &format!("{s}.hs_proj"))?,
            prompt_proj: linear(w, &format!("{s}.prompt_proj"))?,
            prompt_mlp: [
                linear(w, &format!("{s}.prompt_mlp.layers.0"))?,
                linear(w, &format!("{s}.prompt_mlp.layers.1"))?,
            ],
            prompt_mlp_norm: Norm::load(w, &format!("{s}.prompt_mlp.out_norm"))?,
            cross_attend_prompt: Attention::load(w, &format!("{h}.cross_attend_prompt"), HEADS)?,
            cross_attn_norm: Norm::load(w, &format!("{h}.cross_attn_norm"))?,
            pixel_convs,
            pixel_norms,
            instance_seg_head: Conv::load(w, &format!("{h}.instance_seg_head"))?,
            mask_embed: Mlp::load(w, &format!("{h}.mask_predictor.mask_embed"))?,
        })
    }

    /// The box exemplars' tokens `[B, N, D]`: encoded, then attended to the image (without its
    /// positions) by the geometry layers.
    fn box_tokens(&self, image: &Image, boxes: &Tensor) -> Result<Tensor> {
        let Some(encoder) = &self.geometry_boxes else {
            anyhow::bail!("this SAM 3 checkpoint has no geometry encoder for box prompts");
        };
        let mut tokens = self.geometry_norm.layer(&encoder.forward(image, boxes)?);
        for layer in &self.geometry_layers {
            tokens = layer.geometry(&tokens, &image.tokens, &image.tokens)?;
        }
        self.geometry_final_proj
            .forward(&self.geometry_encode_norm.layer(&tokens))
    }

    /// The prompt: the text states `[B, T, width]` resized to the model's width, the box
    /// exemplars' tokens, then the geometry encoder's class token (attended to the image),
    /// with its keep-mask.
    fn prompt(
        &self,
        image: &Image,
        text: &Tensor,
        text_mask: &Tensor,
        boxes: Option<&Tensor>,
    ) -> Result<Prompt> {
        let b = image.tokens.size()[0];
        let cls = self
            .geometry_cls
            .view([1, 1, -1])
            .expand([b, -1, -1], false);
        let mut cls = self
            .geometry_norm
            .layer(&self.geometry_final_proj.forward(&cls)?);
        for layer in &self.geometry_layers {
            cls = layer.geometry(&cls, &image.tokens, &image.keys)?;
        }
        let cls = self.geometry_encode_norm.layer(&cls);
        let text = self.resizer.forward(&text.to_kind(cls.kind()))?;
        let text = text.expand([b, -1, -1], false);
        let mut parts = vec![text];
        if let Some(boxes) = boxes {
            parts.push(self.box_tokens(image, &boxes.expand([b, -1, -1], false))?);
        }
        parts.push(cls);
        let tokens = Tensor::cat(&parts, 1);
        let added = tokens.size()[1] - text_mask.size()[1];
        let keep = Tensor::cat(
            &[
                text_mask.ne(0).expand([b, -1], false),
                Tensor::ones([b, added], (Kind::Bool, tokens.device())),
            ],
            1,
        );
        Ok(Prompt {
            weight: keep.to_kind(tokens.kind()).unsqueeze(-1),
            mask: key_mask(&keep),
            tokens,
        })
    }

    /// Score logits `[B, Q]`: queries against the masked mean of the prompt through its MLP.
    fn scores(&self, queries: &Tensor, prompt: &Prompt) -> Result<Tensor> {
        let x = &prompt.tokens;
        let hidden = self.prompt_mlp[0].forward(x)?.relu();
        let mlp = self
            .prompt_mlp_norm
            .layer(&(self.prompt_mlp[1].forward(&hidden)? + x));
        let pooled = (mlp * &prompt.weight).sum_dim_intlist(1, false, None)
            / prompt.weight.sum_dim_intlist(1, false, None).clamp_min(1.0);
        let projected = self.prompt_proj.forward(&pooled)?.unsqueeze(-1);
        let d = queries.size()[2] as f64;
        let scores = self.hs_proj.forward(queries)?.matmul(&projected) / d.sqrt();
        Ok(scores.clamp(-12.0, 12.0).squeeze_dim(-1))
    }

    /// Mask logits per query: the encoder's image states (after attending to the prompt) take
    /// the place of the coarsest level, the pixel decoder climbs to the finest.
    fn masks(
        &self,
        queries: &Tensor,
        levels: &[Tensor],
        memory: &Tensor,
        prompt: &Prompt,
    ) -> Result<Tensor> {
        let attended = self.cross_attend_prompt.forward(
            &self.cross_attn_norm.layer(memory),
            &prompt.tokens,
            &prompt.tokens,
            Some(&prompt.mask),
        )?;
        let memory = memory + attended;
        let coarsest = levels.last().expect("the neck has levels");
        let (b, d, h, w) = coarsest.size4()?;
        let mut prev = memory
            .narrow(1, 0, h * w)
            .permute([0, 2, 1])
            .reshape([b, d, h, w]);
        for (i, feat) in levels[..levels.len() - 1].iter().rev().enumerate() {
            let size = feat.size();
            let up = prev.upsample_nearest2d([size[2], size[3]], None, None);
            prev = self.pixel_norms[i]
                .group(&self.pixel_convs[i].same(&(feat + up)), 8)
                .relu();
        }
        let instance = self.instance_seg_head.forward(&prev, 1, 0);
        let embed = self.mask_embed.forward(queries)?;
        Ok(Tensor::einsum(
            "bqc,bchw->bqhw",
            &[embed, instance],
            None::<i64>,
        ))
    }

    /// Detections for a text prompt, with box exemplars `[B, N, 4]` (cxcywh in 0..1) if any,
    /// over the detector neck's `levels` (finest first).
    pub fn detect(
        &self,
        levels: &[Tensor],
        text: &Tensor,
        text_mask: &Tensor,
        boxes: Option<&Tensor>,
    ) -> Result<Detections> {
        let feat = &levels[ENCODER_LEVEL];
        let pos = sine_position(feat);
        let (_, _, height, width) = feat.size4()?;
        let flat = |t: &Tensor| t.flatten(2, 3).permute([0, 2, 1]);
        let (tokens, pos) = (flat(feat), flat(&pos));
        let image = Image {
            keys: &tokens + &pos,
            tokens,
            pos,
            height,
            width,
        };
        let prompt = self.prompt(&image, text, text_mask, boxes)?;
        let mut memory = image.tokens.shallow_clone();
        for layer in &self.encoder {
            memory = layer.forward(&memory, &image.pos, &prompt.tokens, &prompt.mask)?;
        }
        let image = Image {
            keys: &memory + &image.pos,
            tokens: memory.shallow_clone(),
            ..image
        };
        let (queries, boxes) = self.decoder.forward(&image, &prompt)?;
        Ok(Detections {
            boxes: xyxy(&boxes),
            scores: self.scores(&queries, &prompt)?,
            masks: self.masks(&queries, levels, &memory, &prompt)?,
        })
    }
}
