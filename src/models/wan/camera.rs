//! WanCameraEmbedding's camera embedding (`comfy_extras/nodes_camera_trajectory.py`, after
//! CameraCtrl): a preset camera motion as one pose per frame, and each pixel's ray as Plücker
//! coordinates `(o × d, d)`, folded four frames per latent frame for the Fun Camera models.

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

/// The motions WanCameraEmbedding offers, in its order.
pub const POSES: [&str; 9] = [
    "Static",
    "Pan Up",
    "Pan Down",
    "Pan Left",
    "Pan Right",
    "Zoom In",
    "Zoom Out",
    "Anti Clockwise (ACW)",
    "ClockWise (CW)",
];

/// A motion's full rotation (about x, y, z, in units of 60°) and translation (units of 1.5).
fn motion(pose: &str) -> Result<([f64; 3], [f64; 3])> {
    Ok(match pose {
        "Static" => ([0.0; 3], [0.0; 3]),
        "Pan Up" => ([0.0; 3], [0.0, -1.0, 0.0]),
        "Pan Down" => ([0.0; 3], [0.0, 1.0, 0.0]),
        "Pan Left" => ([0.0; 3], [-1.0, 0.0, 0.0]),
        "Pan Right" => ([0.0; 3], [1.0, 0.0, 0.0]),
        "Zoom In" => ([0.0; 3], [0.0, 0.0, 2.0]),
        "Zoom Out" => ([0.0; 3], [0.0, 0.0, -2.0]),
        "Anti Clockwise (ACW)" => ([0.0, 0.0, -1.0], [0.0; 3]),
        "ClockWise (CW)" => ([0.0, 0.0, 1.0], [0.0; 3]),
        other => bail!("unknown camera pose {other:?}"),
    })
}

type Matrix3 = [[f64; 3]; 3];

fn product(a: &Matrix3, b: &Matrix3) -> Matrix3 {
    std::array::from_fn(|r| std::array::from_fn(|c| (0..3).map(|k| a[r][k] * b[k][c]).sum()))
}

/// `Rz · Ry · Rx` for angles about x, y and z.
fn rotation([x, y, z]: [f64; 3]) -> Matrix3 {
    let rx = [
        [1.0, 0.0, 0.0],
        [0.0, x.cos(), -x.sin()],
        [0.0, x.sin(), x.cos()],
    ];
    let ry = [
        [y.cos(), 0.0, y.sin()],
        [0.0, 1.0, 0.0],
        [-y.sin(), 0.0, y.cos()],
    ];
    let rz = [
        [z.cos(), -z.sin(), 0.0],
        [z.sin(), z.cos(), 0.0],
        [0.0, 0.0, 1.0],
    ];
    product(&rz, &product(&ry, &rx))
}

/// Camera-to-world `[R | t]` of each of `length` frames, `[length, 3, 4]` in float32: frame `i`
/// has moved `i / length · speed` of the motion. The first pose is the identity, so these are
/// already relative to it (CameraCtrl's `get_relative_pose`).
fn poses(pose: &str, speed: f64, length: i64) -> Result<Tensor> {
    let (angle, translation) = motion(pose)?;
    let mut values = Vec::with_capacity(length as usize * 12);
    for i in 0..length {
        let progress = i as f64 / length as f64 * speed;
        let r = rotation(angle.map(|a| progress * std::f64::consts::FRAC_PI_3 * a));
        for (row, t) in r.iter().zip(translation) {
            values.extend(row.iter().map(|v| *v as f32));
            values.push((progress * 1.5 * t) as f32);
        }
    }
    Ok(Tensor::from_slice(&values).view([length, 3, 4]))
}

/// Pixel intrinsics `[fx·W, fy·H, cx·W, cy·H]` of the normalized ones, with the focal length
/// refitted from the poses' 1280×720 frame to `width × height` as ComfyUI does.
fn intrinsics(width: i64, height: i64, [fx, fy, cx, cy]: [f64; 4]) -> [f32; 4] {
    let (w, h) = (width as f64, height as f64);
    let pose_ratio = 1280.0 / 720.0;
    let (fx, fy) = if pose_ratio > w / h {
        (h * pose_ratio * fx / w, fy)
    } else {
        (fx, w / pose_ratio * fy / h)
    };
    [fx * w, fy * h, cx * w, cy * h].map(|v| v as f32)
}

/// The camera embedding `[1, 24, (length + 3) / 4, height, width]` in float32: per frame the
/// Plücker coordinates of each pixel's ray (6 channels), the first frame repeated to fill the
/// first latent frame, four frames per latent frame stacked channel-major.
pub fn camera_embedding(
    pose: &str,
    (width, height, length): (i64, i64, i64),
    speed: f64,
    focal_and_centre: [f64; 4],
) -> Result<Tensor> {
    let c2w = poses(pose, speed, length)?;
    let [fx, fy, cx, cy] = intrinsics(width, height, focal_and_centre);
    let cpu = (Kind::Float, Device::Cpu);
    let scalar = |v: f32| Tensor::from_slice(&[v]);
    let ys = Tensor::linspace(0.0, (height - 1) as f64, height, cpu);
    let xs = Tensor::linspace(0.0, (width - 1) as f64, width, cpu);
    let grid = Tensor::meshgrid_indexing(&[ys, xs], "ij");
    let (j, i) = (grid[0].reshape([-1]) + 0.5, grid[1].reshape([-1]) + 0.5);
    let x = (i - scalar(cx)) / scalar(fx);
    let y = (j - scalar(cy)) / scalar(fy);
    let directions = Tensor::stack(&[x, y.shallow_clone(), y.ones_like()], -1);
    let norm = directions.norm_scalaropt_dim(2, [-1i64].as_slice(), true);
    let directions = (directions / norm).unsqueeze(0);
    let rays_d = directions.matmul(&c2w.narrow(2, 0, 3).narrow(1, 0, 3).transpose(-1, -2));
    let rays_o = c2w.select(2, 3).unsqueeze(1).expand_as(&rays_d);
    let plucker = Tensor::cat(&[rays_o.cross(&rays_d, -1), rays_d], -1)
        .view([length, height, width, 6])
        .permute([3, 0, 1, 2])
        .unsqueeze(0);
    let first = plucker.narrow(2, 0, 1).repeat([1, 1, 4, 1, 1]);
    let frames = Tensor::cat(&[first, plucker.narrow(2, 1, length - 1)], 2).transpose(1, 2);
    let groups = (length + 3) / 4;
    Ok(frames
        .contiguous()
        .view([1, groups, 4, 6, height, width])
        .transpose(2, 3)
        .contiguous()
        .view([1, groups, 24, height, width])
        .transpose(1, 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The unit direction of pixel `(px, py)`'s ray for pixel intrinsics `(fx, fy, cx, cy)`.
    fn ray(px: i64, py: i64, (fx, fy, cx, cy): (f64, f64, f64, f64)) -> [f64; 3] {
        let d = [
            (px as f64 + 0.5 - cx) / fx,
            (py as f64 + 0.5 - cy) / fy,
            1.0,
        ];
        let n = d.iter().map(|v| v * v).sum::<f64>().sqrt();
        d.map(|v| v / n)
    }

    /// Zoom In moves the camera along z only: a frame's rays keep their directions, and their
    /// moment `o × d` is `t_z · (−d_y, d_x, 0)`. Checked against the formula for one pixel of
    /// each latent frame's channel groups (frame `4t + k − 3`, the first repeated).
    #[test]
    fn zoom_in_rays_move_along_z_and_frames_fold_four_per_latent_frame() {
        let (width, height, length) = (64, 32, 9);
        let e = camera_embedding("Zoom In", (width, height, length), 1.0, [0.5; 4]).unwrap();
        assert_eq!(e.size(), [1, 24, 3, height, width]);
        // A 2:1 frame is wider than 16:9: fy is refitted to 0.5625 (18 px), fx stays 32 px.
        let (px, py) = (5i64, 21i64);
        let d = ray(px, py, (32.0, 18.0, 32.0, 16.0));
        for t in 0..3 {
            for k in 0..4 {
                let frame = (4 * t + k - 3).max(0);
                let tz = frame as f64 / length as f64 * 1.5 * 2.0;
                let want = [-tz * d[1], tz * d[0], 0.0, d[0], d[1], d[2]];
                for (c, w) in want.iter().enumerate() {
                    let got = e.double_value(&[0, c as i64 * 4 + k, t, py, px]);
                    assert!(
                        (got - w).abs() < 1e-5,
                        "t {t} k {k} channel {c}: {got} vs {w}"
                    );
                }
            }
        }
    }

    /// A clockwise roll turns each frame's rays about z by `i / length · 60°` and keeps the
    /// camera at the origin.
    #[test]
    fn clockwise_rolls_the_rays_about_the_optical_axis() {
        let e = camera_embedding("ClockWise (CW)", (32, 32, 5), 2.0, [0.5; 4]).unwrap();
        let frame = 4; // latent frame 1, k = 3
        let angle = frame as f64 / 5.0 * 2.0 * std::f64::consts::FRAC_PI_3;
        // A square frame is narrower than 16:9: fx is refitted to 0.889 (28.4 px).
        let (px, py) = (3i64, 9i64);
        let d = ray(px, py, (32.0 * 16.0 / 18.0, 16.0, 16.0, 16.0));
        let rotated = [
            angle.cos() * d[0] - angle.sin() * d[1],
            angle.sin() * d[0] + angle.cos() * d[1],
            d[2],
        ];
        for c in 0..6 {
            let got = e.double_value(&[0, c * 4 + 3, 1, py, px]);
            let want = if c < 3 { 0.0 } else { rotated[c as usize - 3] };
            assert!((got - want).abs() < 1e-5, "channel {c}: {got} vs {want}");
        }
    }
}
