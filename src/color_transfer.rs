//! Color transfer as ComfyUI's ColorTransfer node does it (`comfy_extras/nodes_post_processing.py`):
//! the target images' colors matched to the reference's — Reinhard's mean/deviation match or
//! the Monge-Kantorovich linear map in CIE Lab (kornia's conversions, D65), or per-channel
//! histogram matching in RGB; per frame, pooled over the frames, or from one chosen frame.

use tch::{Device, Kind, Tensor};

const EPS: f64 = 1e-6;
const BINS: i64 = 256;
/// D65's reference white in XYZ.
const WHITE: [f32; 3] = [0.95047, 1.0, 1.08883];
const RGB_TO_XYZ: [f32; 9] = [
    0.412453, 0.357580, 0.180423, 0.212671, 0.715160, 0.072169, 0.019334, 0.119193, 0.950227,
];
const XYZ_TO_RGB: [f64; 9] = [
    3.2404813432005266,
    -1.5371515162713185,
    -0.4985363261688878,
    -0.9692549499965682,
    1.8759900014898907,
    0.0415559265582928,
    0.0556466391351772,
    -0.2040413383665112,
    1.0573110696453443,
];

/// `[3, 3]` `matrix` applied to the channels of `x` `[3, N]`.
fn mix(matrix: &Tensor, x: &Tensor) -> Tensor {
    matrix.to_kind(x.kind()).matmul(x)
}

fn column(values: &[f32; 3]) -> Tensor {
    Tensor::from_slice(values).view([3, 1])
}

/// sRGB `[3, N]` in 0..1 to CIE Lab (kornia's `rgb_to_lab`).
fn rgb_to_lab(rgb: &Tensor) -> Tensor {
    let linear = ((rgb + 0.055).clamp_min(0.0) / 1.055)
        .pow_tensor_scalar(2.4)
        .where_self(&rgb.gt(0.04045), &(rgb / 12.92));
    let xyz = mix(&Tensor::from_slice(&RGB_TO_XYZ).view([3, 3]), &linear) / column(&WHITE);
    let threshold = 0.008856;
    let f = xyz
        .clamp_min(threshold)
        .pow_tensor_scalar(1.0 / 3.0)
        .where_self(&xyz.gt(threshold), &(&xyz * 7.787 + 4.0 / 29.0));
    let (x, y, z) = (f.get(0), f.get(1), f.get(2));
    Tensor::stack(
        &[&y * 116.0 - 16.0, (&x - &y) * 500.0, (&y - &z) * 200.0],
        0,
    )
}

/// CIE Lab `[3, N]` to sRGB clipped to 0..1 (kornia's `lab_to_rgb`).
fn lab_to_rgb(lab: &Tensor) -> Tensor {
    let fy = (lab.get(0) + 16.0) / 116.0;
    let fx = lab.get(1) / 500.0 + &fy;
    let fz = (&fy - lab.get(2) / 200.0).clamp_min(0.0);
    let f = Tensor::stack(&[fx, fy, fz], 0);
    let xyz = f
        .pow_tensor_scalar(3.0)
        .where_self(&f.gt(0.2068966), &((&f - 4.0 / 29.0) / 7.787));
    let linear = mix(
        &Tensor::from_slice(&XYZ_TO_RGB).view([3, 3]),
        &(xyz * column(&WHITE)),
    );
    let threshold = 0.0031308;
    let rgb = (linear.clamp_min(threshold).pow_tensor_scalar(1.0 / 2.4) * 1.055 - 0.055)
        .where_self(&linear.gt(threshold), &(&linear * 12.92));
    rgb.clamp(0.0, 1.0)
}

/// Frame `i` of `[B, H, W, C]` images as float32 channels `[C, H·W]`.
fn channels(images: &Tensor, i: i64) -> Tensor {
    images
        .get(i)
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .permute([2, 0, 1])
        .flatten(1, 2)
}

fn lab_frame(images: &Tensor, i: i64) -> Tensor {
    rgb_to_lab(&channels(images, i))
}

/// The mean `[C, 1]` and the deviation `[C, 1]` (Reinhard) or covariance `[C, C]` (MKL).
type Stats = (Tensor, Tensor);

fn frame_stats(flat: &Tensor, reinhard: bool) -> Stats {
    let mean = flat.mean_dim(-1, true, Kind::Float);
    if reinhard {
        let std = flat.std_correction(-1, 0, true).clamp_min(EPS);
        return (mean, std);
    }
    let centered = flat - &mean;
    let cov = centered.matmul(&centered.tr()) / flat.size()[1] as f64;
    (mean, cov)
}

/// Stats pooled over all frames: the mean of the frames' means, then the mean of the
/// frames' squared deviations (or covariances) from it.
fn pooled_stats(images: &Tensor, reinhard: bool) -> Stats {
    let n = images.size()[0];
    let labs: Vec<Tensor> = (0..n).map(|i| lab_frame(images, i)).collect();
    let mean = labs
        .iter()
        .map(|l| l.mean_dim(-1, true, Kind::Float))
        .fold(Tensor::zeros([3, 1], (Kind::Float, Device::Cpu)), |a, m| {
            a + m
        })
        / n as f64;
    let spread = labs.iter().fold(None::<Tensor>, |acc, lab| {
        let centered = lab - &mean;
        let s = if reinhard {
            (&centered * &centered).mean_dim(-1, true, Kind::Float)
        } else {
            centered.matmul(&centered.tr()) / lab.size()[1] as f64
        };
        Some(acc.map_or_else(|| s.shallow_clone(), |a| a + &s))
    });
    let spread = spread.expect("at least one frame") / n as f64;
    if reinhard {
        (mean, spread.sqrt().clamp_min(EPS))
    } else {
        (mean, spread)
    }
}

/// The MKL map from the source covariance to the reference's.
fn mkl_matrix(cov_s: &Tensor, cov_r: &Tensor) -> Tensor {
    let (val_s, vec_s) = cov_s.linalg_eigh("L");
    let sqrt_s = val_s.clamp_min(0.0).sqrt().clamp_min(EPS);
    let scaled = &vec_s * sqrt_s.unsqueeze(0);
    let mid = scaled.tr().matmul(cov_r).matmul(&scaled);
    let (val_m, vec_m) = mid.linalg_eigh("L");
    let sqrt_m = val_m.clamp_min(0.0).sqrt();
    let inv_scaled = &vec_s * sqrt_s.reciprocal().unsqueeze(0);
    let half = (&vec_m * sqrt_m.unsqueeze(0)).matmul(&vec_m.tr());
    inv_scaled.matmul(&half).matmul(&inv_scaled.tr())
}

/// An affine Lab map from one set of stats to another: source mean, gain (Reinhard's
/// per-channel scale `[3, 1]` or the MKL matrix `[3, 3]`), reference mean.
struct LabMap {
    from_mean: Tensor,
    gain: Tensor,
    to_mean: Tensor,
    reinhard: bool,
}

impl LabMap {
    fn new(from: &Stats, to: &Stats, reinhard: bool) -> Self {
        let gain = if reinhard {
            &to.1 / &from.1
        } else {
            mkl_matrix(&from.1, &to.1)
        };
        Self {
            from_mean: from.0.shallow_clone(),
            gain,
            to_mean: to.0.shallow_clone(),
            reinhard,
        }
    }

    /// The map applied to Lab channels `[3, N]`.
    fn apply(&self, src: &Tensor) -> Tensor {
        let centered = src - &self.from_mean;
        let mapped = if self.reinhard {
            centered * &self.gain
        } else {
            self.gain.matmul(&centered)
        };
        mapped + &self.to_mean
    }
}

/// The Lab methods: each frame's Lab channels mapped by the source stats (the frame's own,
/// pooled, or one frame's) onto the reference's (pooled, or the matching frame's when the
/// reference is a video and the mode is per frame), blended by `strength`.
fn lab_transfer(
    target: &Tensor,
    reference: &Tensor,
    stats: SourceStats,
    reinhard: bool,
    strength: f64,
) -> Tensor {
    let (b, b_ref) = (target.size()[0], reference.size()[0]);
    let pooled_reference =
        (b_ref == 1 || stats != SourceStats::PerFrame).then(|| pooled_stats(reference, reinhard));
    let source = match stats {
        SourceStats::Uniform => Some(pooled_stats(target, reinhard)),
        SourceStats::TargetFrame(index) => {
            Some(frame_stats(&lab_frame(target, index.min(b - 1)), reinhard))
        }
        SourceStats::PerFrame => None,
    };
    // A shared source (which implies a pooled reference) makes one map for every frame.
    let shared = source
        .zip(pooled_reference.as_ref())
        .map(|(from, to)| LabMap::new(&from, to, reinhard));
    let frames: Vec<Tensor> = (0..b)
        .map(|i| {
            let src = lab_frame(target, i);
            let corrected = match &shared {
                Some(map) => map.apply(&src),
                None => {
                    let from = frame_stats(&src, reinhard);
                    let own;
                    let to = match &pooled_reference {
                        Some(to) => to,
                        None => {
                            own = frame_stats(&lab_frame(reference, i.min(b_ref - 1)), reinhard);
                            &own
                        }
                    };
                    LabMap::new(&from, to, reinhard).apply(&src)
                }
            };
            let blended = if strength == 1.0 {
                corrected
            } else {
                src.lerp(&corrected, strength)
            };
            lab_to_rgb(&blended)
        })
        .collect();
    Tensor::stack(&frames, 0)
}

/// The normalized cumulative histogram `[C, BINS]` of channels `[C, N]` in 0..1.
fn cdf(flat: &Tensor) -> Tensor {
    let bins = (flat * (BINS - 1) as f64)
        .to_kind(Kind::Int64)
        .clamp(0, BINS - 1);
    let hist = Tensor::zeros([flat.size()[0], BINS], (Kind::Float, Device::Cpu)).scatter_add(
        1,
        &bins,
        &flat.ones_like(),
    );
    let cdf = hist.cumsum(1, Kind::Float);
    &cdf / cdf.narrow(1, BINS - 1, 1)
}

fn lookup(source_cdf: &Tensor, reference_cdf: &Tensor) -> Tensor {
    source_cdf
        .searchsorted(reference_cdf, false, false, "left", None::<Tensor>)
        .clamp_max(BINS - 1)
        .to_kind(Kind::Float)
        / (BINS - 1) as f64
}

fn pooled_cdf(images: &Tensor) -> Tensor {
    let n = images.size()[0];
    let flat = Tensor::cat(&(0..n).map(|i| channels(images, i)).collect::<Vec<_>>(), 1);
    cdf(&flat)
}

/// Histogram matching: each channel's values mapped through the lookup from the source's
/// cumulative histogram (the frame's own, pooled, or one frame's) to the reference's (the
/// matching frame's per frame, else pooled).
fn histogram_transfer(
    target: &Tensor,
    reference: &Tensor,
    stats: SourceStats,
    strength: f64,
) -> Tensor {
    let (b, b_ref) = (target.size()[0], reference.size()[0]);
    let source = match stats {
        SourceStats::PerFrame => None,
        SourceStats::Uniform => Some(pooled_cdf(target)),
        SourceStats::TargetFrame(index) => Some(pooled_cdf(&target.narrow(0, index.min(b - 1), 1))),
    };
    let shared = source.map(|source| lookup(&source, &pooled_cdf(reference)));
    let frames: Vec<Tensor> = (0..b)
        .map(|i| {
            let src = channels(target, i);
            let table = shared.as_ref().map_or_else(
                || lookup(&cdf(&src), &cdf(&channels(reference, i.min(b_ref - 1)))),
                Tensor::shallow_clone,
            );
            let bins = (&src * 255.0).to_kind(Kind::Int64).clamp(0, BINS - 1);
            let matched = table.gather(1, &bins, false);
            let blended = if strength == 1.0 {
                matched
            } else {
                src.lerp(&matched, strength)
            };
            blended.clamp(0.0, 1.0)
        })
        .collect();
    Tensor::stack(&frames, 0)
}

/// How the colors are matched.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    Reinhard,
    Mkl,
    Histogram,
}

/// Where the source statistics come from: each frame, all frames pooled, or one frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SourceStats {
    PerFrame,
    Uniform,
    TargetFrame(i64),
}

/// `target` `[B, H, W, C]` (0..1) with its colors matched to `reference`'s, blended by
/// `strength`: `[B, H, W, C]` float32.
pub fn transfer(
    target: &Tensor,
    reference: &Tensor,
    method: Method,
    stats: SourceStats,
    strength: f64,
) -> Tensor {
    let (b, h, w) = (target.size()[0], target.size()[1], target.size()[2]);
    let out = match method {
        Method::Histogram => histogram_transfer(target, reference, stats, strength),
        _ => lab_transfer(
            target,
            reference,
            stats,
            method == Method::Reinhard,
            strength,
        ),
    };
    out.view([b, -1, h, w]).permute([0, 2, 3, 1]).contiguous()
}
