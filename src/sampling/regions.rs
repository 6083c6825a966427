//! Regional conditioning as ComfyUI applies it: areas (in latent cells or fractions), masks,
//! strengths, feathered area edges, and the matching-area copies it adds to the other
//! conditionings so every region has a counterpart (`comfy/samplers.py`).

use std::sync::Arc;

use tch::{Kind, Tensor};

use super::model::{Area, CondEntry, Conditioning};
use crate::engine::value::SharedTensor;
use crate::upscale::py_round;

/// The size ComfyUI gives a dimension an area leaves out (`add_area_dims`).
const WHOLE: i64 = 2_147_483_648;

/// Pads an area with leading whole dimensions until it covers `dims` of them.
fn with_dims(area: &[i64], dims: usize) -> Vec<i64> {
    let mut a = area.to_vec();
    while a.len() / 2 < dims {
        let half = a.len() / 2;
        a = [&[WHOLE][..], &a[..half], &[0], &a[half..]].concat();
    }
    a
}

/// Fractions of the trailing latent dimensions → latent cells.
fn cells_of(fractions: &[f64], dims: &[i64]) -> Vec<i64> {
    let half = fractions.len() / 2;
    let dims = &dims[dims.len().saturating_sub(half)..];
    let sizes = (0..dims.len()).map(|d| py_round(fractions[d] * dims[d] as f64).max(1));
    let offsets = (0..dims.len()).map(|d| py_round(fractions[d + half] * dims[d] as f64));
    sizes.chain(offsets).collect()
}

/// The bounding box `(h, w, y, x)` of a mask's non-zero cells over its batch, at least 8×8;
/// `(8, 8, 0, 0)` for an empty mask.
fn mask_bounds(mask: &Tensor) -> Vec<i64> {
    let bounds = mask.abs().amax([0i64].as_slice(), false);
    let nonzero = bounds.ne(0.0).nonzero();
    if nonzero.size()[0] == 0 {
        return vec![8, 8, 0, 0];
    }
    let (ys, xs) = (nonzero.select(1, 0), nonzero.select(1, 1));
    let (y0, y1) = (ys.min().int64_value(&[]), ys.max().int64_value(&[]));
    let (x0, x1) = (xs.min().int64_value(&[]), xs.max().int64_value(&[]));
    vec![(y1 - y0 + 1).max(8), (x1 - x0 + 1).max(8), y0, x0]
}

/// Resolves one entry against the latent's spatial dimensions before sampling: percentage
/// areas to cells, masks resized (bilinear) to the latent, "mask bounds" areas.
fn resolve_entry(entry: &CondEntry, dims: &[i64]) -> CondEntry {
    let mut e = entry.clone();
    if let Some(Area::Percentage(fractions)) = &e.area {
        e.area = Some(Area::Cells(cells_of(fractions, dims)));
    }
    if let Some(mask) = &entry.mask {
        let mut m = mask.to_kind(Kind::Float);
        if m.dim() == dims.len() {
            m = m.unsqueeze(0);
        }
        if m.size()[1..] != *dims {
            let (h, w) = (dims[dims.len() - 2], dims[dims.len() - 1]);
            m = if m.dim() < 4 {
                m.unsqueeze(1)
                    .upsample_bilinear2d([h, w], false, None, None)
                    .squeeze_dim(1)
            } else {
                m.upsample_bilinear2d([h, w], false, None, None)
            };
        }
        if e.set_area_to_bounds {
            e.area = Some(Area::Cells(mask_bounds(&m)));
        }
        e.mask = Some(Arc::new(SharedTensor::new(m)));
    }
    e
}

/// Whether area `a` lies inside `outer` (ComfyUI's `area_inside`).
fn area_inside(a: &[i64], outer: &[i64]) -> bool {
    let a = with_dims(a, outer.len() / 2);
    let outer = with_dims(outer, a.len() / 2);
    let (la, lo) = (a.len() / 2, outer.len() / 2);
    let n = la.min(lo);
    (0..n).all(|i| a[la + i] >= outer[lo + i])
        && (0..n).all(|i| a[i] + a[la + i] <= outer[i] + outer[lo + i])
}

fn cells(entry: &CondEntry) -> Option<&Vec<i64>> {
    match &entry.area {
        Some(Area::Cells(a)) => Some(a),
        _ => None,
    }
}

/// Adds to `conds` a copy of the regional entry `c` carrying the text of the smallest entry of
/// `conds` that covers its area, unless one with exactly that area exists.
fn add_matching_area(conds: &mut Conditioning, c: &CondEntry) {
    let Some(c_area) = cells(c) else {
        return;
    };
    let mut smallest: Option<&CondEntry> = None;
    for x in &conds.0 {
        match cells(x) {
            Some(a) if area_inside(c_area, a) => {
                let better = match smallest.and_then(cells) {
                    None => true,
                    Some(s) => {
                        let size = |v: &Vec<i64>| v[..v.len() / 2].iter().product::<i64>();
                        size(s) > size(a)
                    }
                };
                if better {
                    smallest = Some(x);
                }
            }
            Some(_) => {}
            None if smallest.is_none() => smallest = Some(x),
            None => {}
        }
    }
    let Some(smallest) = smallest else {
        return;
    };
    if cells(smallest) == Some(c_area) {
        return;
    }
    let copy = CondEntry {
        context: smallest.context.clone(),
        pooled: smallest.pooled.clone(),
        ..c.clone()
    };
    conds.0.push(copy);
}

/// ComfyUI's `process_conds` area handling for a guider's conditionings (in its order).
pub fn prepare(conds: &mut [Conditioning], dims: &[i64]) {
    for cond in conds.iter_mut() {
        cond.0 = cond.0.iter().map(|e| resolve_entry(e, dims)).collect();
    }
    for k in 0..conds.len() {
        let regional: Vec<CondEntry> = conds[k].0.clone();
        for c in &regional {
            for (kk, other) in conds.iter_mut().enumerate() {
                if kk != k {
                    add_matching_area(other, c);
                }
            }
        }
    }
}

/// What one entry sees of `x` and how much its output counts where: the cropped input, the
/// weight map (mask × strength, edges feathered for plain areas) and the crop.
pub struct Region {
    pub input: Tensor,
    pub mult: Tensor,
    pub crop: Option<Vec<i64>>,
}

pub fn region(entry: &CondEntry, x: &Tensor) -> Region {
    let shape = x.size();
    let dims = shape.len() - 2;
    let mut crop = cells(entry).map(|a| {
        let a = with_dims(a, dims);
        let half = a.len() / 2;
        [&a[..dims], &a[half..half + dims]].concat()
    });
    let mut input = x.shallow_clone();
    if let Some(a) = crop.as_mut() {
        for i in 0..dims {
            a[i] = a[i].min(shape[i + 2] - a[dims + i]);
            input = input.narrow(i as i64 + 2, a[dims + i], a[i]);
        }
    }
    let mult = match &entry.mask {
        Some(mask) => {
            let batch = input.size()[0];
            let mut m = mask
                .to_device(x.device())
                .narrow(0, 0, mask.size()[0].min(batch));
            if let Some(a) = &crop {
                for i in 0..dims {
                    m = m.narrow(i as i64 + 1, a[dims + i], a[i]);
                }
            }
            let m = (m * entry.mask_strength).unsqueeze(1);
            let mut reps = vec![batch / m.size()[0], input.size()[1]];
            reps.extend(std::iter::repeat_n(1, m.dim() - 2));
            m.repeat(reps.as_slice()).to_kind(x.kind())
        }
        None => input.ones_like(),
    } * entry.strength;
    if let (None, Some(a)) = (&entry.mask, &crop) {
        for i in 0..dims {
            let dim = i as i64 + 2;
            let rr = 8.min(mult.size()[i + 2] / 4);
            for t in 0..rr {
                let weight = (1.0 / rr as f64) * (t + 1) as f64;
                if a[dims + i] != 0 {
                    let mut edge = mult.narrow(dim, t, 1);
                    edge *= weight;
                }
                if a[i] + a[dims + i] < shape[i + 2] {
                    let mut edge = mult.narrow(dim, a[i] - 1 - t, 1);
                    edge *= weight;
                }
            }
        }
    }
    Region { input, mult, crop }
}

/// `target[crop] += value` (the whole tensor without a crop).
pub fn add_into(target: &Tensor, crop: Option<&Vec<i64>>, value: &Tensor) {
    let mut view = target.shallow_clone();
    if let Some(a) = crop {
        let dims = a.len() / 2;
        for i in 0..dims {
            view = view.narrow(i as i64 + 2, a[dims + i], a[i]);
        }
    }
    view += value;
}
