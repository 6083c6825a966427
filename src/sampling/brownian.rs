//! The Brownian-tree noise of ComfyUI's SDE samplers (`BrownianTreeNoiseSampler`), reproducing
//! torchsde's `BrownianTree` (a halfway-split `BrownianInterval`, tol 1e-6, pool 24) and
//! numpy's `SeedSequence`, which seeds every node, so a seed gives the same noise as ComfyUI.

use std::collections::{HashMap, VecDeque};

use tch::{Device, Kind, Tensor};

/// numpy's `SeedSequence` (entropy + spawn key → well-mixed pool → `generate_state`).
pub struct SeedSequence {
    pool: Vec<u32>,
}

const INIT_A: u32 = 0x43b0_d7e5;
const MULT_A: u32 = 0x931e_8875;
const INIT_B: u32 = 0x8b51_f9dd;
const MULT_B: u32 = 0x58f3_8ded;
const MIX_MULT_L: u32 = 0xca01_f9dd;
const MIX_MULT_R: u32 = 0x4973_f715;
const XSHIFT: u32 = 16;

fn words(mut n: u128) -> Vec<u32> {
    if n == 0 {
        return vec![0];
    }
    let mut out = Vec::new();
    while n > 0 {
        out.push((n & 0xffff_ffff) as u32);
        n >>= 32;
    }
    out
}

fn hashmix(value: u32, hash_const: &mut u32) -> u32 {
    let mut v = value ^ *hash_const;
    *hash_const = hash_const.wrapping_mul(MULT_A);
    v = v.wrapping_mul(*hash_const);
    v ^ (v >> XSHIFT)
}

fn mix(x: u32, y: u32) -> u32 {
    let r = MIX_MULT_L
        .wrapping_mul(x)
        .wrapping_sub(MIX_MULT_R.wrapping_mul(y));
    r ^ (r >> XSHIFT)
}

impl SeedSequence {
    pub fn new(entropy: u128, spawn_key: &[u128], pool_size: usize) -> Self {
        let mut assembled = words(entropy);
        let spawn: Vec<u32> = spawn_key.iter().flat_map(|k| words(*k)).collect();
        if !spawn.is_empty() && assembled.len() < pool_size {
            assembled.resize(pool_size, 0);
        }
        assembled.extend(spawn);
        let mut pool = vec![0u32; pool_size];
        let mut hc = INIT_A;
        for (i, slot) in pool.iter_mut().enumerate() {
            *slot = hashmix(assembled.get(i).copied().unwrap_or(0), &mut hc);
        }
        for src in 0..pool_size {
            for dst in 0..pool_size {
                if src != dst {
                    let h = hashmix(pool[src], &mut hc);
                    pool[dst] = mix(pool[dst], h);
                }
            }
        }
        for &word in assembled.iter().skip(pool_size) {
            for slot in pool.iter_mut() {
                let h = hashmix(word, &mut hc);
                *slot = mix(*slot, h);
            }
        }
        SeedSequence { pool }
    }

    /// `generate_state(n)` as uint32 words.
    pub fn generate_state(&self, n: usize) -> Vec<u32> {
        let mut hc = INIT_B;
        (0..n)
            .map(|i| {
                let mut v = self.pool[i % self.pool.len()] ^ hc;
                hc = hc.wrapping_mul(MULT_B);
                v = v.wrapping_mul(hc);
                v ^ (v >> XSHIFT)
            })
            .collect()
    }
}

const POOL_SIZE: usize = 24;

/// Python's `round(x, 6)` (torchsde quantises times to its tolerance 1e-6).
fn round6(x: f64) -> f64 {
    format!("{x:.6}").parse().expect("a formatted float parses")
}

/// A node of the dyadic tree: its span, and once split, its midpoint and the seed of the
/// noise that splits its increment between the children.
struct Node {
    start: f64,
    end: f64,
    children: Option<(usize, usize, f64, u32)>,
    parent: Option<(usize, bool)>,
    spawn_key: u128,
    depth: u128,
}

/// torchsde's `BrownianTree(t0, zeros, t1, entropy)`: increments over sub-intervals, the
/// same whatever the order of the queries.
pub struct BrownianTree {
    entropy: u128,
    shape: Vec<i64>,
    kind: Kind,
    device: Device,
    nodes: Vec<Node>,
    root_w: Tensor,
    cache: HashMap<usize, Tensor>,
    recent: VecDeque<usize>,
}

/// Increments kept (torchsde's LRU size): values are recomputed identically when evicted.
const CACHE_SIZE: usize = 45;

/// `torch.Generator(device).manual_seed(seed); torch.randn(shape)` (torchsde's `_randn`):
/// libtorch's `manual_seed` resets every default generator to that seed at offset 0.
fn randn_seeded(seed: u32, shape: &[i64], kind: Kind, device: Device) -> Tensor {
    tch::manual_seed(seed as i64);
    Tensor::randn(shape, (kind, device))
}

impl BrownianTree {
    /// The caller must hold the process's generator lock (see `noise::StepNoise`).
    pub fn new(t0: f64, t1: f64, shape: &[i64], kind: Kind, device: Device, entropy: u64) -> Self {
        let seeds = SeedSequence::new(entropy as u128, &[], POOL_SIZE).generate_state(3);
        // torchsde scales the root increment by the exact span, then quantises the times.
        let root_w = randn_seeded(seeds[0], shape, kind, device) * (t1 - t0).sqrt();
        let (t0, t1) = (round6(t0), round6(t1));
        let root = Node {
            start: t0,
            end: t1,
            children: None,
            parent: None,
            spawn_key: 0,
            depth: 0,
        };
        BrownianTree {
            entropy: entropy as u128,
            shape: shape.to_vec(),
            kind,
            device,
            nodes: vec![root],
            root_w,
            cache: HashMap::new(),
            recent: VecDeque::new(),
        }
    }

    fn split_exact(&mut self, id: usize) {
        if self.nodes[id].children.is_some() {
            return;
        }
        let (start, end) = (self.nodes[id].start, self.nodes[id].end);
        let midway = round6(0.5 * (end + start));
        let (key, depth) = match self.nodes[id].parent {
            None => (0, 0),
            Some((p, is_left)) => (
                2 * self.nodes[p].spawn_key + u128::from(!is_left),
                self.nodes[p].depth + 1,
            ),
        };
        self.nodes[id].spawn_key = key;
        self.nodes[id].depth = depth;
        let w_seed = SeedSequence::new(self.entropy, &[key, depth], POOL_SIZE).generate_state(4)[0];
        let left = self.nodes.len();
        self.nodes.push(Node {
            start,
            end: midway,
            children: None,
            parent: Some((id, true)),
            spawn_key: 0,
            depth: 0,
        });
        self.nodes.push(Node {
            start: midway,
            end,
            children: None,
            parent: Some((id, false)),
            spawn_key: 0,
            depth: 0,
        });
        self.nodes[id].children = Some((left, left + 1, midway, w_seed));
    }

    /// Splits at halfway points down to `point` (torchsde's `halfway_tree` split).
    fn split_towards(&mut self, mut id: usize, point: f64) {
        loop {
            self.split_exact(id);
            let (l, r, mid, _) = self.nodes[id].children.expect("just split");
            if point > mid {
                id = r;
            } else if point < mid {
                id = l;
            } else {
                return;
            }
        }
    }

    /// The nodes exactly covering `[ta, tb]`, in order (torchsde's `_loc`).
    fn locate(&mut self, id: usize, ta: f64, tb: f64, out: &mut Vec<usize>) {
        let (start, end) = (self.nodes[id].start, self.nodes[id].end);
        if ta == start && tb == end {
            out.push(id);
            return;
        }
        if self.nodes[id].children.is_none() {
            // Split down to the edge that is not ours, then search the new children.
            self.split_towards(id, if ta == start { tb } else { ta });
            return self.locate(id, ta, tb, out);
        }
        let (l, r, mid, _) = self.nodes[id].children.expect("has children");
        if tb <= mid {
            self.locate(l, ta, tb, out)
        } else if ta >= mid {
            self.locate(r, ta, tb, out)
        } else {
            self.locate(l, ta, mid, out);
            self.locate(r, mid, tb, out)
        }
    }

    /// The Brownian increment over a node: its parent's, split by the parent's noise.
    fn increment(&mut self, id: usize) -> Tensor {
        if let Some(w) = self.cache.get(&id) {
            return w.shallow_clone();
        }
        let w = match self.nodes[id].parent {
            None => self.root_w.shallow_clone(),
            Some((p, is_left)) => {
                let parent_w = self.increment(p);
                let (pstart, pend) = (self.nodes[p].start, self.nodes[p].end);
                let (_, _, mid, seed) = self.nodes[p].children.expect("a parent has children");
                let h_recip = 1.0 / (pend - pstart);
                let (left_diff, right_diff) = (mid - pstart, pend - mid);
                let mean = &parent_w * (left_diff * h_recip);
                let var = left_diff * right_diff * h_recip;
                let left_w =
                    mean + randn_seeded(seed, &self.shape, self.kind, self.device) * var.sqrt();
                if is_left {
                    left_w
                } else {
                    parent_w - left_w
                }
            }
        };
        if self.recent.len() >= CACHE_SIZE {
            if let Some(old) = self.recent.pop_front() {
                self.cache.remove(&old);
            }
        }
        self.recent.push_back(id);
        self.cache.insert(id, w.shallow_clone());
        w
    }

    /// `W(tb) − W(ta)` for `ta ≤ tb` within the tree's span.
    pub fn increment_between(&mut self, ta: f64, tb: f64) -> Tensor {
        let (start, end) = (self.nodes[0].start, self.nodes[0].end);
        let (ta, tb) = (round6(ta.clamp(start, end)), round6(tb.clamp(start, end)));
        if ta == tb {
            return Tensor::zeros(self.shape.as_slice(), (self.kind, self.device));
        }
        let mut spans = Vec::new();
        self.locate(0, ta, tb, &mut spans);
        spans
            .into_iter()
            .map(|id| self.increment(id))
            .reduce(|a, b| a + b)
            .expect("at least one span")
    }
}

/// ComfyUI's `BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seed, cpu)`: unit-variance
/// noise for the step `sigma → sigma_next`, from a tree grown on the CPU (`cpu=True`) or on
/// `x`'s device (the `_gpu` samplers).
pub struct BrownianNoise {
    tree: BrownianTree,
    device: Device,
    kind: Kind,
}

impl BrownianNoise {
    pub fn new(x: &Tensor, sigma_min: f64, sigma_max: f64, seed: u64, on_device: bool) -> Self {
        let (t0, t1) = (sigma_min.min(sigma_max), sigma_min.max(sigma_max));
        let tree_device = if on_device { x.device() } else { Device::Cpu };
        BrownianNoise {
            tree: BrownianTree::new(t0, t1, &x.size(), x.kind(), tree_device, seed),
            device: x.device(),
            kind: x.kind(),
        }
    }

    pub fn sample(&mut self, sigma: f64, sigma_next: f64) -> Tensor {
        // ComfyUI queries the CPU tree with float32 times, and scales with the exact ones.
        let (a, b) = (sigma as f32 as f64, sigma_next as f32 as f64);
        let (lo, hi, sign) = if a < b { (a, b, 1.0) } else { (b, a, -1.0) };
        let w = self.tree.increment_between(lo, hi) * sign;
        (w / (sigma_next - sigma).abs().sqrt())
            .to_kind(self.kind)
            .to_device(self.device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Values from numpy: SeedSequence(entropy=…, spawn_key=…, pool_size=…).generate_state(4).
    #[test]
    fn seed_sequence_matches_numpy() {
        let cases: &[(u128, &[u128], usize, &[u32])] = &[
            (
                0,
                &[],
                4,
                &[0xb0f4_78be, 0xdb2c_d7e7, 0x2c71_ba49, 0xabf4_641a],
            ),
            (
                42,
                &[5, 3],
                24,
                &[0xb7d3_fda8, 0x1be8_688d, 0x0e7b_03da, 0x9df5_bf84],
            ),
            (
                u64::MAX as u128,
                &[0, 0],
                24,
                &[0xb068_acae, 0x902e_74df, 0x0cee_089b],
            ),
            (
                123_456_789,
                &[],
                24,
                &[0xe089_a417, 0x349e_8e5c, 0x9624_3a80],
            ),
        ];
        for (entropy, key, pool, expected) in cases {
            let got = SeedSequence::new(*entropy, key, *pool).generate_state(expected.len());
            assert_eq!(got, expected.to_vec(), "entropy {entropy} key {key:?}");
        }
    }
}
