//! Nested latents in the sampler (ComfyUI's `pack_latents` / `unpack_latents`): each part
//! `[b, …]` flattened to `[b, 1, n]` and laid side by side, so noise, masks and every sampler
//! step run on one tensor; the network unpacks it by the parts' shapes.

use tch::Tensor;

/// `[b, 1, Σ n]` from parts `[b, …]`.
pub fn pack(parts: &[Tensor]) -> Tensor {
    let flat: Vec<Tensor> = parts
        .iter()
        .map(|p| p.reshape([p.size()[0], 1, -1]))
        .collect();
    Tensor::cat(&flat, 2)
}

/// The parts of `packed` `[b, 1, Σ n]`, shaped as `shapes` (their batch dimension is `packed`'s,
/// so a batched call's cond and uncond unpack alike).
pub fn unpack(packed: &Tensor, shapes: &[Vec<i64>]) -> Vec<Tensor> {
    let b = packed.size()[0];
    let mut start = 0;
    shapes
        .iter()
        .map(|shape| {
            let n: i64 = shape[1..].iter().product();
            let mut full = vec![b];
            full.extend_from_slice(&shape[1..]);
            let part = packed.narrow(2, start, n).reshape(full.as_slice());
            start += n;
            part
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn packing_round_trips_parts_of_any_rank() {
        let video = Tensor::randn([2, 3, 2, 2, 2], (Kind::Float, Device::Cpu));
        let audio = Tensor::randn([2, 8, 5, 16], (Kind::Float, Device::Cpu));
        let packed = pack(&[video.shallow_clone(), audio.shallow_clone()]);
        assert_eq!(packed.size(), [2, 1, 24 + 640]);
        let parts = unpack(&packed, &[video.size(), audio.size()]);
        assert!(parts[0].equal(&video) && parts[1].equal(&audio));
        // A batched call (cond and uncond) unpacks with its own batch size.
        let doubled = Tensor::cat(&[&packed, &packed], 0);
        assert_eq!(
            unpack(&doubled, &[video.size(), audio.size()])[1].size(),
            [4, 8, 5, 16]
        );
    }
}
