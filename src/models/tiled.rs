//! ComfyUI's `tiled_scale_multidim`: run a decoder over overlapping tiles of a latent and blend
//! the outputs with linear feathering over the overlaps, so memory is bounded by the tile.

use anyhow::Result;
use tch::{Device, Kind, Tensor};

/// How one latent dimension maps to output: `n` cells decode to `n·factor − trim` (the video
/// VAEs' first frame stands alone: `4n − 3`), and cell `i` lands at `i·factor`.
#[derive(Clone, Copy)]
pub struct Scale {
    pub factor: i64,
    pub trim: i64,
}

impl Scale {
    fn size(&self, cells: i64) -> i64 {
        (cells * self.factor - self.trim).max(0)
    }
}

/// Decodes `samples` `[B, C, d…]` tile by tile (`tile`/`overlap` in latent cells per
/// dimension); the result `[B, out_channels, scaled d…]` is on the CPU in float32. The first
/// error `decode` returns (an interrupt, say) stops it.
pub fn tiled_scale(
    samples: &Tensor,
    decode: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    tile: &[i64],
    overlap: &[i64],
    scales: &[Scale],
    out_channels: i64,
) -> Result<Tensor> {
    let dims = tile.len();
    let size = samples.size();
    let out_size: Vec<i64> = (0..dims).map(|d| scales[d].size(size[d + 2])).collect();
    let cpu = (Kind::Float, Device::Cpu);
    let mut outputs = Vec::new();
    for b in 0..size[0] {
        let s = samples.narrow(0, b, 1);
        if (0..dims).all(|d| size[d + 2] <= tile[d]) {
            outputs.push(decode(&s)?.to_kind(Kind::Float).to_device(Device::Cpu));
            continue;
        }
        let mut shape = vec![1, out_channels];
        shape.extend(&out_size);
        let out = Tensor::zeros(shape.as_slice(), cpu);
        shape[1] = 1;
        let weight = Tensor::zeros(shape.as_slice(), cpu);
        let positions: Vec<Vec<i64>> = (0..dims)
            .map(|d| {
                if size[d + 2] > tile[d] {
                    (0..size[d + 2] - overlap[d])
                        .step_by((tile[d] - overlap[d]).max(1) as usize)
                        .collect()
                } else {
                    vec![0]
                }
            })
            .collect();
        for it in product(&positions) {
            let mut s_in = s.shallow_clone();
            let mut at = Vec::with_capacity(dims);
            for d in 0..dims {
                let pos = it[d].min(size[d + 2] - overlap[d]).max(0);
                let len = tile[d].min(size[d + 2] - pos);
                s_in = s_in.narrow(d as i64 + 2, pos, len);
                at.push(pos * scales[d].factor);
            }
            let ps = decode(&s_in)?.to_kind(Kind::Float).to_device(Device::Cpu);
            let mut mask_shape = vec![1, 1];
            mask_shape.extend(&ps.size()[2..]);
            let mut mask = Tensor::ones(mask_shape.as_slice(), cpu);
            for d in 0..dims {
                let feather = scales[d].size(overlap[d]);
                let len = mask_shape[d + 2];
                if feather >= len {
                    continue;
                }
                let mut ramp = vec![1f32; len as usize];
                for t in 0..feather as usize {
                    let a = (t + 1) as f32 / feather as f32;
                    ramp[t] *= a;
                    ramp[len as usize - 1 - t] *= a;
                }
                let mut view = vec![1i64; dims + 2];
                view[d + 2] = len;
                mask *= Tensor::from_slice(&ramp).view(view.as_slice());
            }
            let (mut o, mut w, mut p, mut m) =
                (out.shallow_clone(), weight.shallow_clone(), ps, mask);
            for (d, &start) in at.iter().enumerate() {
                let axis = d as i64 + 2;
                let len = p.size()[d + 2].min(o.size()[d + 2] - start);
                o = o.narrow(axis, start, len);
                w = w.narrow(axis, start, len);
                p = p.narrow(axis, 0, len);
                m = m.narrow(axis, 0, len);
            }
            let _ = o.g_add_(&(&p * &m));
            let _ = w.g_add_(&m);
        }
        outputs.push(out / weight);
    }
    Ok(Tensor::cat(&outputs, 0))
}

/// Every combination of one position per dimension, the last dimension fastest.
fn product(positions: &[Vec<i64>]) -> Vec<Vec<i64>> {
    positions.iter().fold(vec![Vec::new()], |acc, options| {
        acc.iter()
            .flat_map(|prefix| {
                options.iter().map(move |&p| {
                    let mut next = prefix.clone();
                    next.push(p);
                    next
                })
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_blend_back_to_the_untiled_result_for_a_pointwise_decoder() {
        // A decoder that upsamples ×2 by repetition is position-independent, so any tiling
        // must reproduce the whole-input result exactly.
        let x = Tensor::randn([1, 2, 9, 11], (Kind::Float, Device::Cpu));
        let mut up = |t: &Tensor| {
            Ok(t.repeat_interleave_self_int(2, 2, None)
                .repeat_interleave_self_int(2, 3, None))
        };
        let whole = up(&x).unwrap();
        let scale = Scale { factor: 2, trim: 0 };
        let tiled = tiled_scale(&x, &mut up, &[4, 5], &[1, 2], &[scale, scale], 2).unwrap();
        assert_eq!(tiled.size(), whole.size());
        let err = (tiled - whole).abs().max().double_value(&[]);
        assert!(err < 1e-5, "{err}");
    }
}
