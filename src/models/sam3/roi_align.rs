//! torchvision's `roi_align` as SAM 3's geometry encoder calls it (`spatial_scale` 1,
//! `sampling_ratio` −1, `aligned` False): each output bin averages a grid of bilinear samples,
//! ⌈box side / bins⌉ per side. The samples of a box form a grid, and bilinear weights factor
//! into a row and a column part, so the pooling is two small matrix products.

use tch::Tensor;

/// Bilinear weights `[bins·grid, size]` of the sample positions along one axis of a box that
/// starts at `start` and spans `length` feature cells, with the grid size per bin.
fn axis_weights(start: f64, length: f64, bins: i64, size: i64) -> (Tensor, i64) {
    let length = length.max(1.0);
    let bin = length / bins as f64;
    let grid = (length / bins as f64).ceil().max(1.0) as i64;
    let samples = bins * grid;
    let mut weights = vec![0f32; (samples * size) as usize];
    for s in 0..samples {
        let (b, g) = (s / grid, s % grid);
        let mut y = start + b as f64 * bin + (g as f64 + 0.5) * bin / grid as f64;
        // Samples more than a cell outside the map read nothing.
        if y < -1.0 || y > size as f64 {
            continue;
        }
        y = y.max(0.0);
        let mut low = y.floor() as i64;
        let high = if low >= size - 1 {
            low = size - 1;
            y = low as f64;
            low
        } else {
            low + 1
        };
        let frac = (y - low as f64) as f32;
        let row = (s * size) as usize;
        weights[row + low as usize] += 1.0 - frac;
        weights[row + high as usize] += frac;
    }
    (Tensor::from_slice(&weights).view([samples, size]), grid)
}

/// The `bins × bins` pooled features `[C, bins, bins]` of a feature map `[C, H, W]` inside the
/// box `[x1, y1, x2, y2]` (feature cells).
pub fn roi_align(features: &Tensor, xyxy: [f64; 4], bins: i64) -> Tensor {
    let (c, h, w) = features.size3().expect("a [C, H, W] feature map");
    let [x1, y1, x2, y2] = xyxy;
    let (rows, grid_y) = axis_weights(y1, y2 - y1, bins, h);
    let (cols, grid_x) = axis_weights(x1, x2 - x1, bins, w);
    let to = |t: Tensor| t.to_device(features.device()).to_kind(features.kind());
    let (rows, cols) = (to(rows), to(cols));
    let samples = rows.matmul(features).matmul(&cols.transpose(0, 1));
    samples
        .view([c, bins, grid_y, bins, grid_x])
        .sum_dim_intlist([2, 4].as_slice(), false, None)
        / (grid_y * grid_x) as f64
}
