//! Noise drawn exactly as ComfyUI draws it, so a seed gives the same image on both servers.
//!
//! ComfyUI seeds torch's default CPU generator with the workflow seed and draws the initial
//! noise there; ancestral/SDE steps draw from a generator seeded with the same seed on the
//! sampling device. libtorch's generators are the same code as PyTorch's, so seeding them the
//! same way reproduces ComfyUI's numbers bit for bit.

use std::sync::{Mutex, MutexGuard};

use tch::{Device, Kind, Tensor};

/// The default generators are process-wide; draws from them must not interleave.
static GENERATOR: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    GENERATOR.lock().unwrap_or_else(|e| e.into_inner())
}

fn seed_device(seed: u64, device: Device) {
    // torch.manual_seed takes the seed's 64 bits; tch passes them as i64.
    match device {
        Device::Cuda(_) => tch::Cuda::manual_seed(seed),
        _ => tch::manual_seed(seed as i64),
    }
}

/// ComfyUI's `prepare_noise`: `torch.manual_seed(seed)` then `randn(shape)` on the CPU; with
/// `batch_index`, one `[1, …]` draw per index up to the largest, keeping the named ones.
pub fn initial_noise(seed: u64, shape: &[i64], kind: Kind, batch_index: Option<&[i64]>) -> Tensor {
    let shapes = [shape.to_vec()];
    let mut parts = initial_noise_parts(seed, &shapes, kind, batch_index);
    parts.remove(0)
}

/// [`initial_noise`] for each of a nested latent's parts in turn, from one seeding.
pub fn initial_noise_parts(
    seed: u64,
    shapes: &[Vec<i64>],
    kind: Kind,
    batch_index: Option<&[i64]>,
) -> Vec<Tensor> {
    let _guard = lock();
    seed_device(seed, Device::Cpu);
    shapes
        .iter()
        .map(|shape| draw(shape, kind, batch_index))
        .collect()
}

/// `prepare_noise_inner` from the seeded CPU generator.
fn draw(shape: &[i64], kind: Kind, batch_index: Option<&[i64]>) -> Tensor {
    let Some(indices) = batch_index else {
        return Tensor::randn(shape, (kind, Device::Cpu));
    };
    let mut unique: Vec<i64> = indices.to_vec();
    unique.sort_unstable();
    unique.dedup();
    let mut one = shape.to_vec();
    one[0] = 1;
    let last = unique.last().copied().unwrap_or(-1);
    let mut kept = Vec::new();
    for i in 0..=last {
        let n = Tensor::randn(one.as_slice(), (kind, Device::Cpu));
        if unique.binary_search(&i).is_ok() {
            kept.push((i, n));
        }
    }
    let picked: Vec<Tensor> = indices
        .iter()
        .map(|i| {
            kept.iter()
                .find(|(k, _)| k == i)
                .map(|(_, t)| t.shallow_clone())
                .expect("every index was drawn")
        })
        .collect();
    Tensor::cat(&picked, 0)
}

/// `torch.manual_seed(seed)` then `randn(shape)` on `device` (the AR video sampler's fresh
/// noise per block and step).
pub fn seeded_randn(seed: u64, shape: &[i64], kind: Kind, device: Device) -> Tensor {
    let _guard = lock();
    seed_device(seed, device);
    Tensor::randn(shape, (kind, device))
}

/// `torch.Generator("cpu").manual_seed(seed)` then `randperm(n)` for each `n` in turn
/// (FreeNoise's frame shuffles).
pub fn seeded_permutations(seed: u64, sizes: &[i64]) -> Vec<Tensor> {
    let _guard = lock();
    seed_device(seed, Device::Cpu);
    sizes
        .iter()
        .map(|&n| Tensor::randperm(n, (Kind::Int64, Device::Cpu)))
        .collect()
}

/// The default generator of a device seeded and held: while it lives, the draws made there
/// (`multinomial`, …) are those of ComfyUI's `torch.Generator(device).manual_seed(seed)`.
pub struct SeededDraws {
    _guard: MutexGuard<'static, ()>,
}

impl SeededDraws {
    pub fn new(seed: u64, device: Device) -> Self {
        let guard = lock();
        seed_device(seed, device);
        SeededDraws { _guard: guard }
    }
}

/// Per-step noise for ancestral and SDE samplers: ComfyUI's `default_noise_sampler(x, seed)`,
/// a generator seeded with `seed` on `x`'s device, drawing `randn_like(x)` each step, and the
/// Brownian-tree sampler of the SDE samplers.
///
/// It holds the default generators for its whole life (one sampling run), so nothing else
/// draws in between and the sequence matches a dedicated generator's.
pub struct StepNoise {
    seed: Option<u64>,
    /// Grow Brownian trees on the latent's device (the `_gpu` samplers) rather than the CPU.
    pub tree_on_device: bool,
    _guard: MutexGuard<'static, ()>,
}

impl StepNoise {
    pub fn seeded(seed: u64, device: Device) -> Self {
        let guard = lock();
        seed_device(seed, device);
        StepNoise {
            seed: Some(seed),
            tree_on_device: false,
            _guard: guard,
        }
    }

    /// Unseeded: whatever the device's default generator holds (k-diffusion's `randn_like`).
    pub fn unseeded() -> Self {
        StepNoise {
            seed: None,
            tree_on_device: false,
            _guard: lock(),
        }
    }

    /// The next draw, shaped like `x`.
    pub fn next(&mut self, x: &Tensor) -> Tensor {
        Tensor::randn(x.size(), (x.kind(), x.device()))
    }

    /// ComfyUI's `BrownianTreeNoiseSampler` over `[sigma_min, sigma_max]` with this seed
    /// (a random one when unseeded, as ComfyUI does).
    pub fn brownian(
        &mut self,
        x: &Tensor,
        sigma_min: f64,
        sigma_max: f64,
    ) -> super::brownian::BrownianNoise {
        let seed = self.seed.unwrap_or_else(|| rand::random::<u32>() as u64);
        super::brownian::BrownianNoise::new(x, sigma_min, sigma_max, seed, self.tree_on_device)
    }
}
