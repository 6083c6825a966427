//! `--lowvram` streaming: parts kept on the host and copied over for each use, the next one's
//! copy queued ahead on a second stream (`runtime::copy_ahead`), give the resident model's output
//! bit for bit on every device present. On a GPU the layers are large enough (64 MB each) that a
//! missing wait would read a copy still in flight, or a buffer the next copy already reuses.

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
        let layers: Vec<Linear> = (0..8)
            .map(|_| {
                let weight =
                    Tensor::randn([width, width], (Kind::Float, device)) / (width as f64).sqrt();
                Linear::new(
                    LinearWeight::Dense(weight),
                    Some(Tensor::randn([width], (Kind::Float, device))),
                )
            })
            .collect();
        let x = Tensor::randn([256, width], (Kind::Float, device));
        let run = |parts: &[Streamed<Linear>]| {
            in_order(parts).fold(x.shallow_clone(), |h, layer| {
                layer.forward(&h).unwrap().tanh()
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
