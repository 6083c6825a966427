//! ComfyUI's `sampler_pre_cfg_function` patches, which rewrite the conditional and
//! unconditional estimates before the CFG combine: APG (`comfy_extras/nodes_apg.py`), TCFG
//! (`nodes_tcfg.py`) and FreSca (`nodes_fresca.py`).

use std::sync::{Arc, Mutex};

use tch::{Kind, Tensor};

/// One pre-CFG patch.
#[derive(Clone, Debug)]
pub enum PreCfg {
    Apg(Apg),
    /// TCFG: the unconditional noise keeps only its component along the first right singular
    /// vector of the (unconditional, conditional) noise pair.
    Tangential,
    /// FreSca: the guidance `cond − uncond` with its low and high spatial frequencies scaled.
    FreSca {
        scale_low: f64,
        scale_high: f64,
        freq_cutoff: i64,
    },
}

/// Adaptive Projected Guidance: the guidance (optionally a running average of it, and capped
/// in norm) split into its parts parallel and orthogonal to the conditional estimate, the
/// parallel one scaled by `eta`.
#[derive(Clone, Debug)]
pub struct Apg {
    pub eta: f64,
    pub norm_threshold: f64,
    pub momentum: f64,
    /// The running average and the last sigma. As in ComfyUI it lives with the patched model,
    /// across sampling runs, and restarts whenever the sigma rises.
    state: Arc<Mutex<ApgState>>,
}

#[derive(Debug, Default)]
struct ApgState {
    running_avg: Option<Tensor>,
    prev_sigma: Option<f64>,
}

impl Apg {
    pub fn new(eta: f64, norm_threshold: f64, momentum: f64) -> Self {
        Apg {
            eta,
            norm_threshold,
            momentum,
            state: Arc::default(),
        }
    }

    fn apply(&self, cond: &Tensor, uncond: &Tensor, sigma: f64, cond_scale: f64) -> Tensor {
        let dims = [-1i64, -2, -3];
        let mut guidance = cond - uncond;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.prev_sigma.is_some_and(|prev| sigma > prev) {
            state.running_avg = None;
        }
        state.prev_sigma = Some(sigma);
        if self.momentum != 0.0 {
            // ComfyUI would fail on an average of another shape; a new shape starts anew.
            let avg = match state.running_avg.take() {
                Some(avg) if avg.size() == guidance.size() => avg * self.momentum + &guidance,
                _ => guidance,
            };
            guidance = avg.shallow_clone();
            state.running_avg = Some(avg);
        }
        drop(state);
        // Out of place: `guidance` may share its storage with the running average.
        let guidance = if self.norm_threshold > 0.0 {
            let norm = guidance.norm_scalaropt_dim(2, dims.as_slice(), true);
            &guidance * (norm.full_like(self.norm_threshold) / &norm).clamp_max(1.0)
        } else {
            guidance
        };
        let unit = normalize(cond, &dims);
        let parallel = (&guidance * &unit).sum_dim_intlist(dims.as_slice(), true, None) * &unit;
        let orthogonal = &guidance - &parallel;
        let modified = orthogonal + parallel * self.eta;
        (uncond + modified) + (cond - uncond) / cond_scale
    }
}

/// `F.normalize` over `dims`: `v / max(‖v‖, 1e-12)`.
fn normalize(v: &Tensor, dims: &[i64]) -> Tensor {
    v / v.norm_scalaropt_dim(2, dims, true).clamp_min(1e-12)
}

/// TCFG's `score_tangential_damping` on noise estimates, in float32 like ComfyUI.
fn tangential_damping(cond_score: &Tensor, uncond_score: &Tensor) -> Tensor {
    let b = cond_score.size()[0];
    let flat = |t: &Tensor| t.reshape([b, 1, -1]).to_kind(Kind::Float);
    let (cond_flat, uncond_flat) = (flat(cond_score), flat(uncond_score));
    let scores = Tensor::cat(&[&uncond_flat, &cond_flat], 1);
    // `svd` gives V rather than Vᴴ; its first column is the first right singular vector.
    // (tch's `linalg_svd` always passes a driver name, which the CPU refuses.)
    let (_, _, v) = scores.svd(true, true);
    let v1 = v.narrow(2, 0, 1);
    let damped = uncond_flat.matmul(&v1) * v1.transpose(-2, -1);
    damped
        .reshape(uncond_score.size())
        .to_kind(uncond_score.kind())
}

/// FreSca's `Fourier_filter` over the last two dimensions, computed in float32: frequencies
/// within `freq_cutoff` of the centre (after the shift) scaled by `scale_low`, the rest by
/// `scale_high`.
fn fourier_filter(x: &Tensor, scale_low: f64, scale_high: f64, freq_cutoff: i64) -> Tensor {
    let dims = [-2i64, -1];
    let kind = x.kind();
    let freq = x
        .to_kind(Kind::Float)
        .fft_fftn(None::<&[i64]>, dims.as_slice(), "backward")
        .fft_fftshift(dims.as_slice());
    let size = x.size();
    let (h, w) = (size[size.len() - 2], size[size.len() - 1]);
    let mask = Tensor::ones([h, w], (Kind::Float, x.device())) * scale_high;
    let (ch, cw) = (h / 2, w / 2);
    let (fh, fw) = (freq_cutoff.min(ch), freq_cutoff.min(cw));
    let _ = mask
        .narrow(0, ch - fh, 2 * fh)
        .narrow(1, cw - fw, 2 * fw)
        .fill_(scale_low);
    // ComfyUI's mask is float32 ones times the scale, so the scales are float32 too.
    let scaled = (freq * mask).fft_ifftshift(dims.as_slice());
    scaled
        .fft_ifftn(None::<&[i64]>, dims.as_slice(), "backward")
        .real()
        .to_kind(kind)
}

impl PreCfg {
    /// The patched `[cond, uncond]` denoised estimates. `has_uncond` is false on ComfyUI's
    /// cfg 1 path, where the unconditional estimate is zeros and no negative was run.
    pub fn apply(
        &self,
        outs: [Tensor; 2],
        x: &Tensor,
        sigma: f64,
        cond_scale: f64,
        has_uncond: bool,
    ) -> [Tensor; 2] {
        let [cond, uncond] = outs;
        match self {
            PreCfg::Apg(apg) => {
                let modified = apg.apply(&cond, &uncond, sigma, cond_scale);
                [modified, uncond]
            }
            PreCfg::Tangential | PreCfg::FreSca { .. } if !has_uncond => [cond, uncond],
            PreCfg::Tangential => {
                let damped = tangential_damping(&(x - &cond), &(x - &uncond));
                [cond, x - damped]
            }
            PreCfg::FreSca {
                scale_low,
                scale_high,
                freq_cutoff,
            } => {
                let filtered =
                    fourier_filter(&(&cond - &uncond), *scale_low, *scale_high, *freq_cutoff);
                [filtered + &uncond, uncond]
            }
        }
    }
}
