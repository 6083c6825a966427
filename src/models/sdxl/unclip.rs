//! unCLIP image conditioning as SDXL reads it (`model_base.sdxl_pooled`, `unclip_adm`,
//! `CLIPEmbeddingNoiseAugmentation`): each image embedding is noised to its level on a
//! 1000-step squared-cosine schedule and weighted by its strength; several are summed and noised
//! again at level 0. SDXL keeps the first embedding-width values as its pooled vector (the
//! noise-level embedding beside them is cut).
//!
//! The noise is ComfyUI's: every image's is `torch.manual_seed(seed − 10)` then one CPU draw
//! (the same for each image), and the merge's the next draw of the default generator of the
//! device it runs on, which that call seeded too: the CPU stream goes on, a GPU's starts afresh.

use tch::{Device, Kind, Tensor};

use crate::sampling::noise::SeededDraws;
use crate::upscale::py_round;

const MAX_NOISE_LEVEL: i64 = 1000;

/// `(√ᾱ, √(1 − ᾱ))` at `level` on `betas_for_alpha_bar`'s squared-cosine schedule, in float64
/// as numpy computes it.
fn signal_and_noise(level: i64) -> (f64, f64) {
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
            .cos()
            .powi(2)
    };
    let steps = MAX_NOISE_LEVEL as f64;
    let alphas_cumprod = (0..=level).fold(1.0, |product, i| {
        let beta =
            (1.0 - alpha_bar((i + 1) as f64 / steps) / alpha_bar(i as f64 / steps)).min(0.999);
        product * (1.0 - beta)
    });
    // The buffers are float32 tensors of the float64 square roots.
    let f32_of = |x: f64| f64::from(x as f32);
    (
        f32_of(alphas_cumprod.sqrt()),
        f32_of((1.0 - alphas_cumprod).sqrt()),
    )
}

fn noised(x: &Tensor, level: i64, noise: &Tensor) -> Tensor {
    let (signal, sigma) = signal_and_noise(level);
    x * signal + noise * sigma
}

/// The pooled vector `[1, D]` (float32, on `device`) of image embeddings `[k, D]` with their
/// `(strength, noise_augmentation)` rows `[k, 2]`, for a sampling run with `seed`.
pub fn unclip_pooled(embeds: &Tensor, params: &Tensor, seed: u64, device: Device) -> Tensor {
    let (k, width) = (embeds.size()[0], embeds.size()[1]);
    let level = |augmentation: f64| py_round((MAX_NOISE_LEVEL - 1) as f64 * augmentation);
    let seed = seed.wrapping_sub(10);
    let draws = SeededDraws::new(seed, Device::Cpu);
    let noise = Tensor::randn([1, width], (Kind::Float, Device::Cpu)).to_device(device);
    let embeds = embeds.to_device(device).to_kind(Kind::Float);
    let mut sum = Tensor::zeros([1, width], (Kind::Float, device));
    for i in 0..k {
        let (strength, augmentation) = (params.double_value(&[i, 0]), params.double_value(&[i, 1]));
        let image = embeds.narrow(0, i, 1);
        sum += noised(&image, level(augmentation), &noise) * strength;
    }
    if k == 1 {
        return sum;
    }
    let merge_noise = match device {
        Device::Cpu => Tensor::randn([1, width], (Kind::Float, Device::Cpu)),
        _ => {
            drop(draws);
            let _draws = SeededDraws::new(seed, device);
            Tensor::randn([1, width], (Kind::Float, device))
        }
    };
    noised(&sum, level(0.0), &merge_noise.to_device(device))
}
