//! Mask bookkeeping of the video tracker: connected components, mask overlap and mask NMS.

use tch::{Kind, Tensor};

/// For boolean masks `[N, 1, H, W]` (host), each set pixel's 4-connected component's area
/// (scipy's `ndimage.label` default), 0 elsewhere; int64.
pub fn connected_areas(masks: &Tensor) -> Tensor {
    let size = masks.size();
    let (n, h, w) = (size[0], size[2] as usize, size[3] as usize);
    let mut out = Vec::with_capacity((n as usize) * h * w);
    for i in 0..n {
        let set: Vec<bool> = Vec::try_from(masks.get(i).flatten(0, -1)).expect("mask pixels");
        out.extend(component_areas(&set, h, w));
    }
    Tensor::from_slice(&out).view(size.as_slice())
}

/// The area of the 4-connected component of each set pixel of an `h × w` grid.
fn component_areas(set: &[bool], h: usize, w: usize) -> Vec<i64> {
    let mut label = vec![usize::MAX; set.len()];
    let mut areas = Vec::new();
    let mut stack = Vec::new();
    for start in 0..set.len() {
        if !set[start] || label[start] != usize::MAX {
            continue;
        }
        let id = areas.len();
        let mut area = 0i64;
        label[start] = id;
        stack.push(start);
        while let Some(p) = stack.pop() {
            area += 1;
            let (y, x) = (p / w, p % w);
            let neighbours = [
                (y > 0).then(|| p - w),
                (y + 1 < h).then(|| p + w),
                (x > 0).then(|| p - 1),
                (x + 1 < w).then(|| p + 1),
            ];
            for q in neighbours.into_iter().flatten() {
                if set[q] && label[q] == usize::MAX {
                    label[q] = id;
                    stack.push(q);
                }
            }
        }
        areas.push(area);
    }
    label
        .iter()
        .map(|&l| if l == usize::MAX { 0 } else { areas[l] })
        .collect()
}

/// The larger of IoU and intersection over the smaller area between each mask of `a` `[A, ..]`
/// and each of `b` `[B, ..]` (positive = inside), `[A, B]` float32.
pub fn mask_overlap(a: &Tensor, b: &Tensor) -> Tensor {
    let a = a.gt(0.0).to_kind(Kind::Float).flatten(1, -1);
    let b = b.gt(0.0).to_kind(Kind::Float).flatten(1, -1);
    let intersection = a.matmul(&b.tr());
    let area_a = a.sum_dim_intlist(1, true, Kind::Float);
    let area_b = b.sum_dim_intlist(1, true, Kind::Float).tr();
    let iou = &intersection / (&area_a + &area_b - &intersection).clamp_min(1.0);
    let smaller = area_a.expand_as(&iou).minimum(&area_b.expand_as(&iou));
    let iom = &intersection / smaller.clamp_min(1.0);
    iou.maximum(&iom)
}

/// Greedy mask NMS, best score first: a mask overlapping a kept one by `threshold` or more
/// (see [`mask_overlap`]) is dropped. Returns the kept masks and scores, best first.
pub fn nms(masks: &Tensor, scores: &Tensor, threshold: f64) -> (Tensor, Vec<f64>) {
    let order = scores.argsort(0, true);
    let masks = masks.index_select(0, &order);
    let scores: Vec<f64> = Vec::try_from(
        scores
            .index_select(0, &order)
            .to_kind(Kind::Double)
            .to_device(tch::Device::Cpu),
    )
    .expect("scores");
    let overlap: Vec<f64> = Vec::try_from(
        mask_overlap(&masks, &masks)
            .to_kind(Kind::Double)
            .to_device(tch::Device::Cpu)
            .flatten(0, -1),
    )
    .expect("overlaps");
    let n = scores.len();
    let mut keep: Vec<usize> = Vec::new();
    for i in 0..n {
        if keep.iter().all(|&k| overlap[i * n + k] < threshold) {
            keep.push(i);
        }
    }
    let index: Vec<i64> = keep.iter().map(|&k| k as i64).collect();
    let index = Tensor::from_slice(&index).to_device(masks.device());
    (
        masks.index_select(0, &index),
        keep.iter().map(|&k| scores[k]).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_four_connected() {
        // Two diagonal pixels are two components; an L of four is one.
        let grid = [
            true, false, false, false, //
            false, true, false, true, //
            false, false, false, true, //
            false, false, true, true,
        ];
        let areas = component_areas(&grid, 4, 4);
        assert_eq!(areas, [1, 0, 0, 0, 0, 1, 0, 4, 0, 0, 0, 4, 0, 0, 4, 4]);
    }

    #[test]
    fn nms_drops_masks_inside_a_better_one() {
        let big = Tensor::ones([4, 4], (Kind::Float, tch::Device::Cpu));
        let small = Tensor::zeros([4, 4], (Kind::Float, tch::Device::Cpu));
        let _ = small.narrow(0, 0, 2).narrow(1, 0, 2).fill_(1.0);
        let apart = Tensor::zeros([4, 4], (Kind::Float, tch::Device::Cpu));
        let masks = Tensor::stack(&[small, big, apart - 1.0], 0);
        let scores = Tensor::from_slice(&[0.7f32, 0.9, 0.8]);
        let (kept, kept_scores) = nms(&masks, &scores, 0.5);
        assert_eq!(kept.size()[0], 2);
        assert_eq!(kept_scores.len(), 2);
        assert!((kept_scores[0] - 0.9).abs() < 1e-6 && (kept_scores[1] - 0.8).abs() < 1e-6);
    }
}
