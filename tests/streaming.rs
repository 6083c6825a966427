//! `--lowvram` streaming: parts kept on the host and copied over for each use, the next one's
//! copy queued ahead on a second stream (`runtime::copy_ahead`), give the resident model's output
//! bit for bit on every device present. On a GPU the layers are large enough (64 MB each) that a
//! missing wait would read a copy still in flight, or a buffer the next copy already reuses.
//! The values are small integers, so every sum is exact: equality cannot hinge on the order a
//! GEMM kernel sums in (a multithreaded CPU GEMM's order can depend on where its buffers lie).

mod devices;

use devices::devices;
use tch::{Kind, Tensor};
use videosdgx::runtime::linear::{Linear, LinearWeight};
use videosdgx::runtime::manager::{in_order, Movable, Streamed};

#[test]
fn streamed_parts_copied_ahead_give_the_resident_output_bit_for_bit() {
    let _guard = tch::no_grad_guard();
    tch::manual_seed(11);
    for device in devices() {
        let width = if device.is_cuda() { 4096 } else { 64 };
        let integers = |low: i64, high: i64, shape: &[i64]| {
            Tensor::randint_low(low, high + 1, shape, (Kind::Float, device))
        };
        let layers: Vec<Linear> = (0..8)
            .map(|_| {
                Linear::new(
                    LinearWeight::Dense(integers(-1, 1, &[width, width])),
                    Some(integers(-4, 4, &[width])),
                )
            })
            .collect();
        let x = integers(-8, 8, &[256, width]);
        // |sums| ≤ 8·4096 + 4 < 2²⁴; dividing by √width (a power of two) and rounding keeps each
        // layer's input exact and mostly inside the clamp to [−8, 8].
        let scale = (width as f64).sqrt();
        let run = |parts: &[Streamed<Linear>]| {
            in_order(parts).fold(x.shallow_clone(), |h, layer| {
                (layer.forward(&h).unwrap() / scale).round().clamp(-8, 8)
            })
        };
        let resident: Vec<_> = layers
            .iter()
            .map(|l| Streamed::new(l.moved(device), device, true))
            .collect();
        // Every third part resident: resident and streamed neighbours, two streamed in a row.
        let mixed: Vec<_> = layers
            .iter()
            .enumerate()
            .map(|(i, l)| Streamed::new(l.moved(device), device, i % 3 == 0))
            .collect();
        let streamed: Vec<_> = layers
            .iter()
            .map(|l| Streamed::new(l.moved(device), device, false))
            .collect();
        let expected = run(&resident);
        for (name, parts) in [("mixed", &mixed), ("all streamed", &streamed)] {
            for repeat in 0..3 {
                let out = run(parts);
                assert_eq!(out.device(), device);
                assert!(
                    out.equal(&expected),
                    "{device:?} {name}, run {repeat}: differs from the resident output"
                );
            }
        }
    }
}
