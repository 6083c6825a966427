//! Lotus-D (ComfyUI's `LotusD` config and `Lotus` model class): an SD 2 UNet (`unet.rs`, run as
//! a `SdxlNet`) that predicts a depth map's latent from an image's in one step. It takes the
//! latent unscaled and returns the result itself (`IMG_TO_IMG`), reads a 4-wide task embedding
//! as its ADM vector (depth: sin and cos of (1, 0)), and is always prompted with the empty
//! prompt, whose text states LotusConditioning gives.

use tch::Tensor;

/// OpenCLIP ViT-H's last hidden states for the empty prompt (2 tokens × 1024, float16 values),
/// as ComfyUI's LotusConditioning inlines them: Lotus was trained with that frozen prompt.
const NULL_PROMPT: &[u8] = include_bytes!("lotus_null_prompt.f16");

/// The text states LotusConditioning gives, float32 `[1, 2, 1024]`.
pub fn null_prompt() -> Tensor {
    let values: Vec<f32> = NULL_PROMPT
        .chunks_exact(2)
        .map(|b| half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
        .collect();
    Tensor::from_slice(&values).view([1, 2, 1024])
}

/// Lotus's task embedding for depth, `[1, 4]`: sin(1), sin(0), cos(1), cos(0).
pub fn depth_task() -> Tensor {
    let task = Tensor::from_slice(&[1.0f32, 0.0]);
    Tensor::cat(&[task.sin(), task.cos()], 0).unsqueeze(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_null_prompt_holds_comfyuis_values() {
        let p = null_prompt();
        assert_eq!(p.size(), [1, 2, 1024]);
        // Its first value, and the large activation of channel 457 in the first token.
        assert_eq!(p.double_value(&[0, 0, 0]), -0.3134765625);
        assert_eq!(p.abs().max().double_value(&[]), 13.0234375);
        assert_eq!(p.abs().argmax(None, false).int64_value(&[]), 457);
    }
}
