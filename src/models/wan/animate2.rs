//! Wan Animate 2 (`comfy/ldm/wan/model_animate2.py`): Wan 2.1 I2V 14B weights driven by a pose
//! video. A pose branch runs the same blocks over the pose video's latents (timestep 1, its own
//! prompt and rotations) and hands each generation block its keys and values: frame j of the
//! video (frame 0 is the reference image's slot) attends to every video token plus pose frame
//! j − 1. WanAnimate2Cache keeps the pose branch's block inputs between steps, since the branch
//! does not depend on the step; stored as int8 they are rounded the way ComfyUI rounds them.

use std::sync::Mutex;

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use crate::runtime::attention::attention;
use crate::runtime::{int4, int8};

/// What a forward of Wan Animate 2 takes besides the video: the pose branch's inputs (absent
/// outside the node's pose window) and the reference frame's strength.
pub struct PoseInputs<'a> {
    /// Pose latents `[b, 16, frames − 1, h, w]`, normalized.
    pub latents: &'a Tensor,
    /// The pose branch's prompt (`[b, tokens, text_dim]`); the video's when absent.
    pub context: Option<&'a Tensor>,
    /// CLIP vision of the pose video; the video's when absent.
    pub clip: Option<&'a Tensor>,
    /// Scales the pose values (`pose_strength`).
    pub strength: f64,
    pub cache: Option<&'a Mutex<PoseCache>>,
}

/// One generation block's self-attention additions.
pub(super) struct PoseAttention {
    /// The pose branch's keys and values for this block, `[b, (frames − 1)·hw, dim]`.
    pub kv: Option<(Tensor, Tensor)>,
    /// Tokens per frame and frames of the video (the reference slot included).
    pub hw: i64,
    pub frames: i64,
    pub reference_strength: f64,
}

impl PoseAttention {
    /// `v` with the reference slot's (frame 0's) values scaled by the reference strength.
    pub fn scaled_values(&self, v: &Tensor) -> Tensor {
        if self.reference_strength == 1.0 {
            return v.shallow_clone();
        }
        let rest = v.size()[1] - self.hw;
        Tensor::cat(
            &[
                v.narrow(1, 0, self.hw) * self.reference_strength,
                v.narrow(1, self.hw, rest),
            ],
            1,
        )
    }

    /// The self-attention over `q`, `k`, `v` (`[b, s, dim]`): every frame attends to all of
    /// `k`/`v`, frames after the first also to their pose frame's keys and values.
    pub fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, heads: i64) -> Result<Tensor> {
        let v = self.scaled_values(v);
        let Some((k_pose, v_pose)) = &self.kv else {
            return Ok(attention(q, k, &v, heads, None));
        };
        let hw = self.hw;
        if k_pose.size()[1] != (self.frames - 1) * hw {
            bail!(
                "the pose branch has {} tokens, the video {} frames of {hw}",
                k_pose.size()[1],
                self.frames
            );
        }
        let frames: Vec<Tensor> = (0..self.frames)
            .map(|j| {
                let q = q.narrow(1, j * hw, hw);
                if j == 0 {
                    return attention(&q, k, &v, heads, None);
                }
                let keys = Tensor::cat(&[k, &k_pose.narrow(1, (j - 1) * hw, hw)], 1);
                let values = Tensor::cat(&[&v, &v_pose.narrow(1, (j - 1) * hw, hw)], 1);
                attention(&q, &keys, &values, heads, None)
            })
            .collect();
        Ok(Tensor::cat(&frames, 1))
    }
}

/// How the cache stores block inputs (WanAnimate2Cache's `dtype`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStorage {
    /// In the model's compute dtype: exact.
    Default,
    /// Per token int8 after a ConvRot rotation, as comfy-kitchen quantizes weights.
    Int8,
    /// Per token int4 after a ConvRot rotation, packed two to a byte (comfy-kitchen's ConvRot
    /// W4A4 weight storage).
    Int4,
}

/// ComfyUI's ConvRot group for the cache: 256, divided by 4 until it divides the width.
fn cache_group(width: i64) -> i64 {
    let mut g = 256;
    while g > 4 && width % g != 0 {
        g /= 4;
    }
    g
}

struct Slot {
    key: Tensor,
    blocks: Vec<Option<Stored>>,
}

enum Stored {
    Plain(Tensor),
    Int8 {
        q: Tensor,
        scale: Tensor,
        group: i64,
    },
    Int4 {
        packed: Tensor,
        scale: Tensor,
        group: i64,
    },
}

/// The pose branch's block inputs, one slot per pose sequence (keyed by batch item 0's pose
/// latents, as ComfyUI keys them), least recently used first.
pub struct PoseCache {
    pub device: Device,
    pub storage: CacheStorage,
    slots: Vec<Slot>,
    /// Slots kept at most; context windows need one per window.
    capacity: usize,
}

impl PoseCache {
    pub fn new(device: Device, storage: CacheStorage) -> Self {
        Self {
            device,
            storage,
            slots: Vec::new(),
            capacity: 64,
        }
    }

    /// Makes the slot for `latents` the current one (the last), creating it if needed.
    pub fn select(&mut self, latents: &Tensor, blocks: usize) {
        let key = latents.narrow(0, 0, 1);
        let found = self.slots.iter().position(|s| {
            s.key.size() == key.size() && s.key.equal(&key.to_device(s.key.device()))
        });
        let slot = match found {
            Some(i) => self.slots.remove(i),
            None => Slot {
                key: key.to_device(self.device).copy(),
                blocks: (0..blocks).map(|_| None).collect(),
            },
        };
        self.slots.push(slot);
        if self.slots.len() > self.capacity {
            self.slots.remove(0);
        }
    }

    fn current(&mut self) -> &mut Slot {
        self.slots.last_mut().expect("select runs first")
    }

    pub fn filled(&mut self) -> bool {
        self.current().blocks.iter().all(Option::is_some)
    }

    /// Stores block `i`'s input (batch item 0).
    pub fn put(&mut self, i: usize, x: &Tensor) -> Result<()> {
        let x = x.narrow(0, 0, 1);
        let stored = match self.storage {
            CacheStorage::Default => Stored::Plain(x.to_device(self.device).copy()),
            CacheStorage::Int8 => {
                let width = x.size()[2];
                let group = cache_group(width);
                let (q, scale) = int8::quantize_convrot(&x.reshape([-1, width]), group)?;
                Stored::Int8 {
                    q: q.to_device(self.device),
                    scale: scale.to_device(self.device),
                    group,
                }
            }
            CacheStorage::Int4 => {
                let width = x.size()[2];
                let group = cache_group(width);
                let (packed, scale) = int4::quantize_convrot(&x.reshape([-1, width]), group)?;
                Stored::Int4 {
                    packed: packed.to_device(self.device),
                    scale: scale.to_device(self.device),
                    group,
                }
            }
        };
        self.current().blocks[i] = Some(stored);
        Ok(())
    }

    /// Block `i`'s stored input on `device` in `dtype`, repeated to `batch` items.
    pub fn take(&mut self, i: usize, device: Device, dtype: Kind, batch: i64) -> Result<Tensor> {
        let Some(stored) = &self.current().blocks[i] else {
            bail!("the pose cache has no input for block {i}");
        };
        let x = match stored {
            Stored::Plain(x) => x.to_device(device).to_kind(dtype),
            Stored::Int8 { q, scale, group } => {
                let w = int8::dequantize(
                    &q.to_device(device),
                    &scale.to_device(device),
                    Some(*group),
                    Kind::Float,
                )?;
                w.unsqueeze(0).to_kind(dtype)
            }
            Stored::Int4 {
                packed,
                scale,
                group,
            } => {
                let w =
                    int4::dequantize(&packed.to_device(device), &scale.to_device(device), *group)?;
                w.unsqueeze(0).to_kind(dtype)
            }
        };
        Ok(x.repeat([batch, 1, 1]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_group_divides_the_width() {
        assert_eq!(cache_group(5120), 256);
        assert_eq!(cache_group(1536), 256);
        assert_eq!(cache_group(96), 16);
        assert_eq!(cache_group(40), 4);
    }

    #[test]
    fn a_pose_frame_extends_only_its_own_frames_keys() {
        tch::manual_seed(2);
        let opts = (Kind::Float, Device::Cpu);
        let (hw, frames, dim) = (3, 3, 8);
        let q = Tensor::randn([1, frames * hw, dim], opts);
        let k = Tensor::randn([1, frames * hw, dim], opts);
        let v = Tensor::randn([1, frames * hw, dim], opts);
        let kp = Tensor::randn([1, (frames - 1) * hw, dim], opts);
        let vp = Tensor::randn([1, (frames - 1) * hw, dim], opts);
        let pose = PoseAttention {
            kv: Some((kp.shallow_clone(), vp.shallow_clone())),
            hw,
            frames,
            reference_strength: 1.0,
        };
        let out = pose.attend(&q, &k, &v, 2).unwrap();
        // Frame 2 by hand: its queries over all video keys and pose frame 1.
        let keys = Tensor::cat(&[&k, &kp.narrow(1, hw, hw)], 1);
        let values = Tensor::cat(&[&v, &vp.narrow(1, hw, hw)], 1);
        let frame2 = attention(&q.narrow(1, 2 * hw, hw), &keys, &values, 2, None);
        assert!(out
            .narrow(1, 2 * hw, hw)
            .allclose(&frame2, 1e-6, 1e-6, false));
        // Frame 0 sees no pose frame.
        let frame0 = attention(&q.narrow(1, 0, hw), &k, &v, 2, None);
        assert!(out.narrow(1, 0, hw).allclose(&frame0, 1e-6, 1e-6, false));
    }
}
