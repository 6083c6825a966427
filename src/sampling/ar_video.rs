//! ComfyUI's `sample_ar_video` (SamplerARVideo): autoregressive video sampling for causal
//! models (Causal Forcing, Self-Forcing). The latent is denoised a block of frames at a time;
//! each model call appends the block's keys and values to the network's cache, which is rolled
//! back after every step but the block's clean pass at sigma 0, so later blocks attend to the
//! finished earlier ones. Between steps the estimate is re-noised with fresh noise from a seed
//! per block and step.

use anyhow::{bail, Result};
use tch::Tensor;

use super::model::DiffusionNet;
use super::noise::seeded_randn;
use super::samplers::{Denoiser, StepCallback};

/// A network with a causal key/value cache (`init_kv_caches` in ComfyUI).
pub trait CausalNet {
    /// Starts a session with an empty cache.
    fn begin(&self);
    /// The temporal position of the next block.
    fn set_start_frame(&self, frame: i64);
    /// Drops the last `tokens` cached positions.
    fn rollback(&self, tokens: i64);
    /// Ends the session, freeing the cache.
    fn end(&self);
}

/// Ends the session however sampling ends.
struct Session<'a>(&'a dyn CausalNet);

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// Samples `x` (noised, in the model's space, `[b, c, t, h, w]`) block by block.
/// `initial`: the I2V start latent (normalized), written first and cached at sigma 0.
#[allow(clippy::too_many_arguments)]
pub fn sample_ar_video(
    net: &dyn DiffusionNet,
    denoiser: &mut dyn Denoiser,
    x: &Tensor,
    sigmas: &[f64],
    frames_per_block: i64,
    initial: Option<&Tensor>,
    seed: u64,
    callback: &mut StepCallback,
) -> Result<Tensor> {
    let Some(causal) = net.causal() else {
        bail!(
            "the ar_video sampler needs an autoregressive (causal) video model such as Causal \
             Forcing; choose another sampler"
        );
    };
    if x.dim() != 5 {
        bail!(
            "the ar_video sampler needs 5-D video latents, got shape {:?}",
            x.size()
        );
    }
    let (_, _, frames, h, w) = x.size5()?;
    let frame_tokens = ((h + 1) / 2) * ((w + 1) / 2);
    causal.begin();
    let _session = Session(causal);
    let output = x.zeros_like();
    let mut start = 0;
    if let Some(initial) = initial {
        let initial = initial.to_device(x.device()).to_kind(x.kind());
        let n = initial.size()[2].min(frames);
        output.narrow(2, 0, n).copy_(&initial.narrow(2, 0, n));
        causal.set_start_frame(0);
        // A clean pass only fills the cache.
        let _ = denoiser.denoise(&initial.narrow(2, 0, n), 0.0)?;
        start = n;
    }
    let steps = sigmas.len().saturating_sub(1);
    let blocks = (frames - start + frames_per_block - 1) / frames_per_block;
    let total = (blocks as usize * steps).max(1);
    let mut count = 0;
    for block in 0..blocks {
        let n = frames_per_block.min(frames - start);
        let mut noisy = x.narrow(2, start, n);
        causal.set_start_frame(start);
        for i in 0..steps {
            let denoised = denoiser.denoise(&noisy, sigmas[i])?;
            callback(count * steps / total, &noisy, &denoised)?;
            let next = sigmas[i + 1];
            noisy = if next == 0.0 {
                denoised
            } else {
                causal.rollback(n * frame_tokens);
                let noise_seed = seed.wrapping_add(block as u64 * 1000 + i as u64);
                let fresh = seeded_randn(
                    noise_seed,
                    &denoised.size(),
                    denoised.kind(),
                    denoised.device(),
                );
                denoised * (1.0 - next) + fresh * next
            };
            count += 1;
        }
        output.narrow(2, start, n).copy_(&noisy);
        causal.rollback(n * frame_tokens);
        let _ = denoiser.denoise(&noisy, 0.0)?;
        start += n;
    }
    Ok(output)
}
