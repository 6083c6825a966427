//! Encoding and decoding through loaded models (`nodes.py`): CLIPTextEncode, CLIPVisionEncode,
//! VAEDecode, VAEEncode, VAEDecodeTiled.

use std::sync::Arc;

use serde_json::json;

use crate::engine::context::ExecContext;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeFunction, NodeOutput, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::models::clip_vision::ClipVision;
use crate::models::text_encoder::TextEncoder;
use crate::models::vae::{Vae, TEMPORAL_RATIO};
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
    let tile_t = (temporal / TEMPORAL_RATIO).max(2);
    let overlap_t = (temporal_overlap / TEMPORAL_RATIO).min(tile_t / 2).max(1);
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
            .opt("advanced", json!(true))
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
