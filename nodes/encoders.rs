//! Encoding and decoding through loaded models (`nodes.py`): CLIPTextEncode, CLIPVisionEncode,
//! VAEDecode, VAEEncode, VAEDecodeTiled, and the inpainting encoders VAEEncodeForInpaint and
//! InpaintModelConditioning.

use std::sync::Arc;

use serde_json::json;
use tch::{Kind, Tensor};

use super::wan::with_extras;
use crate::engine::context::ExecContext;
use crate::engine::node::{
    InputDef, Inputs, NodeDef, NodeError, NodeFunction, NodeOutput, NodeResult, Style,
};
use crate::engine::registry::Registry;
use crate::engine::value::{SharedTensor, Value};
use crate::models::clip_vision::ClipVision;
use crate::models::text_encoder::TextEncoder;
use crate::models::vae::Vae;
use crate::sampling::model::{Conditioning, Latent};

fn v1(name: &str, display: &str, category: &str, f: NodeFunction) -> NodeDef {
    NodeDef::builtin(name, Style::V1, display, category, f)
}

fn clip_text_encode(i: &Inputs, _: &ExecContext) -> NodeResult {
    let clip = i.object::<Arc<TextEncoder>>("clip")?;
    let entry = clip.encode(&i.string("text")?)?;
    Ok(NodeOutput::one(Value::object(Conditioning(vec![entry]))))
}

fn clip_vision_encode(i: &Inputs, _: &ExecContext) -> NodeResult {
    let clip = i.object::<Arc<ClipVision>>("clip_vision")?;
    let crop = i.string("crop")? == "center";
    let out = clip.encode(i.tensor("image")?, crop)?;
    Ok(NodeOutput::one(Value::object(out)))
}

fn vae_decode(i: &Inputs, _: &ExecContext) -> NodeResult {
    let vae = i.object::<Arc<Vae>>("vae")?;
    let latent = i.object::<Latent>("samples")?;
    Ok(NodeOutput::one(Value::tensor(vae.decode(&latent.samples)?)))
}

fn vae_encode(i: &Inputs, _: &ExecContext) -> NodeResult {
    let vae = i.object::<Arc<Vae>>("vae")?;
    let latent = vae.encode(i.tensor("pixels")?)?;
    Ok(NodeOutput::one(Value::object(Latent::new(latent))))
}

/// The pixels `[B, H, W, C]` cut to whole multiples of `ratio` around their centre, and the mask
/// resized (bilinear) to the pixels and cut alike, `[B, 1, h, w]`.
fn inpaint_inputs(pixels: &Tensor, mask: &Tensor, ratio: i64) -> (Tensor, Tensor) {
    let (h, w) = (pixels.size()[1], pixels.size()[2]);
    let m = mask.size();
    let mask = mask
        .reshape([-1, 1, m[m.len() - 2], m[m.len() - 1]])
        .to_kind(Kind::Float)
        .upsample_bilinear2d([h, w], false, None, None);
    let (ch, cw) = (h / ratio * ratio, w / ratio * ratio);
    let (oy, ox) = ((h % ratio) / 2, (w % ratio) / 2);
    (
        pixels.narrow(1, oy, ch).narrow(2, ox, cw),
        mask.narrow(2, oy, ch).narrow(3, ox, cw),
    )
}

/// The pixels with the masked part (mask ≥ ½) set to mid-grey, three channels.
fn grey_where_masked(pixels: &Tensor, mask: &Tensor) -> Tensor {
    let keep = (-mask.round() + 1.0).squeeze_dim(1).unsqueeze(-1);
    (pixels.narrow(3, 0, 3).to_kind(Kind::Float) - 0.5) * keep + 0.5
}

/// The mask `[B, 1, H, W]` rounded and grown by a `grow × grow` box (ComfyUI's padding of
/// ⌈(grow − 1)/2⌉, so an even box grows one pixel more down and right), 0/1.
fn grown_mask(mask: &Tensor, grow: i64) -> Tensor {
    if grow == 0 {
        return mask.round();
    }
    let kernel = Tensor::ones([1, 1, grow, grow], (Kind::Float, mask.device()));
    let padding = grow / 2;
    let (h, w) = (mask.size()[2], mask.size()[3]);
    mask.round()
        .conv2d(
            &kernel,
            None::<&Tensor>,
            [1, 1],
            [padding, padding],
            [1, 1],
            1,
        )
        .clamp(0.0, 1.0)
        .narrow(2, 0, h)
        .narrow(3, 0, w)
        .round()
}

/// `VAEEncodeForInpaint`: the pixels encoded with the masked part grey, and the mask grown by
/// `grow_mask_by` pixels (a box filter, ComfyUI's padding) as the noise mask.
fn vae_encode_for_inpaint(i: &Inputs, _: &ExecContext) -> NodeResult {
    let vae = i.object::<Arc<Vae>>("vae")?;
    let (pixels, mask) = inpaint_inputs(i.tensor("pixels")?, i.tensor("mask")?, vae.spatial_ratio);
    let noise_mask = grown_mask(&mask, i.int("grow_mask_by")?);
    let mut latent = Latent::new(vae.encode(&grey_where_masked(&pixels, &mask))?);
    latent.noise_mask = Some(Arc::new(SharedTensor::new(noise_mask)));
    Ok(NodeOutput::one(Value::object(latent)))
}

/// `InpaintModelConditioning`: the grey-masked pixels encoded as the concat image with the
/// mask on both conditionings, the original pixels' latent to sample from, the mask as its
/// noise mask unless turned off.
fn inpaint_model_conditioning(i: &Inputs, _: &ExecContext) -> NodeResult {
    let vae = i.object::<Arc<Vae>>("vae")?;
    let original = i.tensor("pixels")?;
    let (pixels, mask) = inpaint_inputs(original, i.tensor("mask")?, 8);
    let concat = vae.encode(&grey_where_masked(&pixels, &mask))?;
    let mut latent = Latent::new(vae.encode(&original.narrow(3, 0, 3))?);
    if i.boolean("noise_mask")? {
        latent.noise_mask = Some(Arc::new(SharedTensor::new(mask.shallow_clone())));
    }
    let extras = [("concat_latent_image", &concat), ("concat_mask", &mask)];
    let with =
        |name: &str| Ok::<_, NodeError>(with_extras(i.object::<Conditioning>(name)?, &extras));
    Ok(NodeOutput::values(vec![
        Value::object(with("positive")?),
        Value::object(with("negative")?),
        Value::object(latent),
    ]))
}

/// InstructPixToPixConditioning (also FLUX.1 Canny / Depth): the image, cut to whole latent
/// cells around its centre, encoded as both prompts' concat image; a zero latent of its size.
fn instruct_pix2pix_conditioning(i: &Inputs, _: &ExecContext) -> NodeResult {
    let vae = i.object::<Arc<Vae>>("vae")?;
    let pixels = i.tensor("pixels")?;
    let (h, w) = (pixels.size()[1], pixels.size()[2]);
    let (ch, cw) = (h / 8 * 8, w / 8 * 8);
    let pixels = pixels.narrow(1, (h % 8) / 2, ch).narrow(2, (w % 8) / 2, cw);
    let concat = vae.encode(&pixels)?;
    let extras = [("concat_latent_image", &concat)];
    let with =
        |name: &str| Ok::<_, NodeError>(with_extras(i.object::<Conditioning>(name)?, &extras));
    Ok(NodeOutput::values(vec![
        Value::object(with("positive")?),
        Value::object(with("negative")?),
        Value::object(Latent::new(concat.zeros_like())),
    ]))
}

/// `VAEDecodeTiled.decode`: pixel sizes turned into latent cells the way ComfyUI does.
fn vae_decode_tiled(i: &Inputs, _: &ExecContext) -> NodeResult {
    let vae = i.object::<Arc<Vae>>("vae")?;
    let latent = i.object::<Latent>("samples")?;
    let tile = i.int("tile_size")?;
    let mut overlap = i.int("overlap")?;
    let temporal = i.int("temporal_size")?;
    let mut temporal_overlap = i.int("temporal_overlap")?;
    if tile < overlap * 4 {
        overlap = tile / 4;
    }
    if temporal < temporal_overlap * 2 {
        temporal_overlap /= 2;
    }
    let tile_t = (temporal / vae.temporal_ratio).max(2);
    let overlap_t = (temporal_overlap / vae.temporal_ratio)
        .min(tile_t / 2)
        .max(1);
    let ratio = vae.spatial_ratio;
    let images = vae.decode_tiled(
        &latent.samples,
        tile / ratio,
        overlap / ratio,
        tile_t,
        overlap_t,
    )?;
    Ok(NodeOutput::one(Value::tensor(images)))
}

pub fn register(r: &mut Registry) {
    r.add(
        v1(
            "CLIPTextEncode",
            "CLIP Text Encode (Prompt)",
            "model/conditioning",
            clip_text_encode,
        )
        .description(
            "Encodes a text prompt using a CLIP model into an embedding that can be used to \
             guide the diffusion model towards generating specific images.",
        )
        .aliases(&[
            "text",
            "prompt",
            "text prompt",
            "positive prompt",
            "negative prompt",
            "encode text",
            "text encoder",
            "encode prompt",
        ])
        .input(
            InputDef::string("text")
                .opt("multiline", json!(true))
                .opt("dynamicPrompts", json!(true))
                .tooltip("The text to be encoded."),
        )
        .input(InputDef::new("clip", "CLIP").tooltip("The CLIP model used for encoding the text."))
        .output("CONDITIONING")
        .output_tooltip(
            "A conditioning containing the embedded text used to guide the diffusion model.",
        ),
    );
    r.add(
        v1(
            "CLIPVisionEncode",
            "CLIP Vision Encode",
            "model/conditioning",
            clip_vision_encode,
        )
        .input(InputDef::new("clip_vision", "CLIP_VISION"))
        .input(InputDef::new("image", "IMAGE"))
        .input(InputDef::combo("crop", &["center", "none"]))
        .output("CLIP_VISION_OUTPUT"),
    );
    r.add(
        v1("VAEDecode", "VAE Decode", "model/latent", vae_decode)
            .description("Decodes latent images back into pixel space images.")
            .aliases(&[
                "decode",
                "decode latent",
                "latent to image",
                "render latent",
            ])
            .input(InputDef::new("samples", "LATENT").tooltip("The latent to be decoded."))
            .input(
                InputDef::new("vae", "VAE").tooltip("The VAE model used for decoding the latent."),
            )
            .output("IMAGE")
            .output_tooltip("The decoded image."),
    );
    r.add(
        v1(
            "VAEEncodeForInpaint",
            "VAE Encode (for Inpainting)",
            "model/latent",
            vae_encode_for_inpaint,
        )
        .input(InputDef::new("pixels", "IMAGE"))
        .input(InputDef::new("vae", "VAE"))
        .input(InputDef::new("mask", "MASK"))
        .input(
            InputDef::int("grow_mask_by")
                .default(6)
                .min(0)
                .max(64)
                .step(1),
        )
        .output("LATENT"),
    );
    r.add(
        v1(
            "InpaintModelConditioning",
            "InpaintModelConditioning",
            "model/conditioning",
            inpaint_model_conditioning,
        )
        .input(InputDef::new("positive", "CONDITIONING"))
        .input(InputDef::new("negative", "CONDITIONING"))
        .input(InputDef::new("vae", "VAE"))
        .input(InputDef::new("pixels", "IMAGE"))
        .input(InputDef::new("mask", "MASK"))
        .input(InputDef::boolean("noise_mask").default(true).tooltip(
            "Add a noise mask to the latent so sampling will only happen within the mask. Might \
             improve results or completely break things depending on the model.",
        ))
        .named_output("CONDITIONING", "positive")
        .named_output("CONDITIONING", "negative")
        .named_output("LATENT", "latent"),
    );
    r.add(
        NodeDef::new(
            "InstructPixToPixConditioning",
            Style::V3,
            Arc::new(instruct_pix2pix_conditioning),
        )
        .category("model/conditioning/instructpix2pix")
        .module("comfy_extras.nodes_ip2p")
        .input(InputDef::new("positive", "CONDITIONING"))
        .input(InputDef::new("negative", "CONDITIONING"))
        .input(InputDef::new("vae", "VAE"))
        .input(InputDef::new("pixels", "IMAGE"))
        .named_output("CONDITIONING", "positive")
        .named_output("CONDITIONING", "negative")
        .named_output("LATENT", "latent"),
    );
    r.add(
        v1("VAEEncode", "VAE Encode", "model/latent", vae_encode)
            .aliases(&["encode", "encode image", "image to latent"])
            .input(InputDef::new("pixels", "IMAGE"))
            .input(InputDef::new("vae", "VAE"))
            .output("LATENT"),
    );
    let advanced_int = |name: &str, default: i64, min: i64, step: i64| {
        InputDef::int(name)
            .default(default)
            .min(min)
            .max(4096)
            .step(step)
            .advanced()
    };
    r.add(
        v1(
            "VAEDecodeTiled",
            "VAE Decode (Tiled)",
            "model/latent",
            vae_decode_tiled,
        )
        .input(InputDef::new("samples", "LATENT"))
        .input(InputDef::new("vae", "VAE"))
        .input(advanced_int("tile_size", 512, 64, 32))
        .input(advanced_int("overlap", 64, 0, 32))
        .input(
            advanced_int("temporal_size", 64, 8, 4)
                .tooltip("Only used for video VAEs: Amount of frames to decode at a time."),
        )
        .input(
            advanced_int("temporal_overlap", 8, 4, 4)
                .tooltip("Only used for video VAEs: Amount of frames to overlap."),
        )
        .output("IMAGE"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask_with(points: &[(i64, i64)], h: i64, w: i64) -> Tensor {
        let m = Tensor::zeros([1, 1, h, w], (Kind::Float, tch::Device::Cpu));
        for &(y, x) in points {
            let _ = m.narrow(2, y, 1).narrow(3, x, 1).fill_(0.9);
        }
        m
    }

    /// A box of 3 grows a pixel one cell each way; a box of 2 (padding 1, the extra row and
    /// column cut at the end) grows it down and right only.
    #[test]
    fn masks_grow_by_comfyuis_box() {
        let grown = grown_mask(&mask_with(&[(3, 3)], 8, 8), 3);
        assert_eq!(grown.sum(Kind::Float).double_value(&[]), 9.0);
        assert_eq!(grown.double_value(&[0, 0, 2, 4]), 1.0);
        let even = grown_mask(&mask_with(&[(3, 3)], 8, 8), 2);
        assert_eq!(even.sum(Kind::Float).double_value(&[]), 4.0);
        assert_eq!(even.double_value(&[0, 0, 4, 4]), 1.0);
        assert_eq!(even.double_value(&[0, 0, 2, 2]), 0.0);
        assert_eq!(
            grown_mask(&mask_with(&[(0, 0)], 4, 4), 0)
                .sum(Kind::Float)
                .double_value(&[]),
            1.0
        );
    }

    /// Sizes are cut to whole multiples of the ratio around the centre; masked pixels go grey.
    #[test]
    fn inpaint_inputs_are_cut_to_the_ratio_and_masked_pixels_greyed() {
        let pixels = Tensor::ones([1, 19, 21, 3], (Kind::Float, tch::Device::Cpu));
        let mask = mask_with(&[(9, 10)], 19, 21).squeeze_dim(1);
        let (cut, m) = inpaint_inputs(&pixels, &mask, 8);
        assert_eq!(
            (cut.size(), m.size()),
            (vec![1, 16, 16, 3], vec![1, 1, 16, 16])
        );
        let grey = grey_where_masked(&cut, &m);
        // The marked pixel sits at (9 − 1, 10 − 2) after the centred cut.
        assert_eq!(grey.double_value(&[0, 8, 8, 0]), 0.5);
        assert_eq!(grey.double_value(&[0, 0, 0, 2]), 1.0);
    }
}
