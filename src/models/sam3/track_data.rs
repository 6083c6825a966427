//! SAM3_TRACK_DATA: what SAM3_VideoTrack hands to the nodes that read its tracks — each
//! frame's object masks at the tracker's resolution, bit-packed eight columns to a byte as
//! ComfyUI's `pack_masks` stores them.

use tch::{Kind, Tensor};

use crate::engine::value::SharedTensor;

/// Tracked objects over a video.
pub struct TrackData {
    /// `[frames, objects, H, W / 8]` uint8, or `None` when nothing was tracked.
    pub packed: Option<SharedTensor>,
    pub frames: i64,
    /// Each object's detection score (1 for objects given as masks).
    pub scores: Vec<f64>,
    /// The video's height and width.
    pub orig_size: (i64, i64),
}

impl TrackData {
    /// How many objects the tracks hold.
    pub fn objects(&self) -> i64 {
        self.packed.as_ref().map_or(0, |p| p.size()[1])
    }

    /// The tracks of the objects at `indices`, in that order.
    pub fn subset(&self, indices: &[i64]) -> TrackData {
        let packed = match &self.packed {
            Some(p) if !indices.is_empty() => {
                let index = Tensor::from_slice(indices).to_device(p.device());
                Some(SharedTensor::new(p.index_select(1, &index).contiguous()))
            }
            _ => None,
        };
        TrackData {
            packed,
            frames: self.frames,
            scores: indices
                .iter()
                .filter_map(|&i| self.scores.get(i as usize).copied())
                .collect(),
            orig_size: self.orig_size,
        }
    }
}

/// The objects a comma-separated `text` names (its whole numbers below `objects`, in order;
/// other parts are skipped), or all of them when it is blank.
pub fn object_indices(text: &str, objects: i64) -> Vec<i64> {
    if text.trim().is_empty() {
        return (0..objects).collect();
    }
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|s| s.parse().ok())
        .filter(|&k| k < objects)
        .collect()
}

/// Masks `[.., H, W]` (positive = inside; `W` a multiple of 8) bit-packed to `[.., H, W / 8]`.
pub fn pack_masks(masks: &Tensor) -> Tensor {
    let mut shape = masks.size();
    let w = shape.pop().expect("masks have a width");
    let bits = bit_values(masks.device()).to_kind(Kind::Int64);
    let grouped = masks
        .gt(0.0)
        .to_kind(Kind::Int64)
        .view([shape.clone(), vec![w / 8, 8]].concat().as_slice());
    (grouped * bits)
        .sum_dim_intlist(-1, false, Kind::Int64)
        .to_kind(Kind::Uint8)
}

/// Bit-packed masks `[.., H, W / 8]` back to booleans `[.., H, W]`.
pub fn unpack_masks(packed: &Tensor) -> Tensor {
    let mut shape = packed.size();
    let bytes = shape.pop().expect("packed masks have a width");
    shape.push(bytes * 8);
    packed
        .unsqueeze(-1)
        .bitwise_and_tensor(&bit_values(packed.device()))
        .ne(0)
        .view(shape.as_slice())
}

fn bit_values(device: tch::Device) -> Tensor {
    Tensor::from_slice(&[1u8, 2, 4, 8, 16, 32, 64, 128]).to_device(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_keeps_every_pixel_in_column_order() {
        let masks = Tensor::from_slice(&[
            1.0f32, -1.0, 0.0, 2.0, -3.0, 0.5, 0.0, 0.0, 7.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0,
            1.0,
        ])
        .view([1, 1, 16]);
        let packed = pack_masks(&masks);
        assert_eq!(
            Vec::<u8>::try_from(packed.flatten(0, -1)).unwrap(),
            [1 | 8 | 32, 1 | 128]
        );
        let unpacked = unpack_masks(&packed);
        assert!(unpacked.equal(&masks.gt(0.0)));
    }
}
