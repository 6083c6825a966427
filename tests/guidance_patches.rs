//! The CFG patches (RescaleCFG, APG, TCFG, FreSca, Mahiro, Epsilon Scaling,
//! TemporalScoreRescaling) and the step caches (EasyCache, LazyCache) against upstream
//! ComfyUI's own functions. `tests/fixtures/guidance_reference.json` was recorded by
//! `scripts/record_guidance_reference.py` from ComfyUI's node code in float64: the patches on
//! random estimates, as `sampling_function` runs them after `calc_cond_batch`, and the caches'
//! wrappers around an analytic network in an Euler loop.

use std::sync::{Arc, OnceLock};

use anyhow::Result;
use serde_json::Value;
use tch::{Device, Kind, Tensor};
use videosdgx::sampling::guidance::guide;
use videosdgx::sampling::model::{CondEntry, Conditioning, DiffusionNet, Model};
use videosdgx::sampling::model_sampling::{ModelSampling, Prediction, Schedule};
use videosdgx::sampling::post_cfg::{CfgFunction, PostCfg};
use videosdgx::sampling::pre_cfg::{Apg, PreCfg};
use videosdgx::sampling::step_cache::{CacheKind, EntryKey, StepCache};

fn reference() -> &'static Value {
    static REF: OnceLock<Value> = OnceLock::new();
    REF.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/guidance_reference.json"
        );
        serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("fixture JSON")
    })
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn tensor(values: &Value, shape: &[i64]) -> Tensor {
    Tensor::from_slice(&floats(values)).view(shape)
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// The patches only read the model's sampling; the network is never called.
struct NoNet;

impl DiffusionNet for NoNet {
    fn forward(&self, _: &Tensor, _: &Tensor, _: &CondEntry) -> Result<Tensor> {
        anyhow::bail!("not called")
    }
}

fn flow(shift: f64) -> ModelSampling {
    ModelSampling::new(
        Prediction::Flow,
        Schedule::Flow {
            shift,
            multiplier: 1000.0,
        },
    )
}

fn sampling(case: &Value) -> ModelSampling {
    match case["sampling"].as_str().unwrap() {
        "flow" => flow(f(&case["shift"])),
        _ => ModelSampling::sd(Prediction::Eps),
    }
}

/// The model as the patch node with these inputs leaves it.
fn apply_node(model: &mut Model, node: &str, inputs: &Value) {
    let input = |name: &str| f(&inputs[name]);
    match node {
        "RescaleCFG" => {
            model.cfg_function = Some(CfgFunction::Rescale {
                multiplier: input("multiplier"),
            })
        }
        "APG" => model.pre_cfg.push(PreCfg::Apg(Apg::new(
            input("eta"),
            input("norm_threshold"),
            input("momentum"),
        ))),
        "TCFG" => model.pre_cfg.push(PreCfg::Tangential),
        "FreSca" => model.pre_cfg.push(PreCfg::FreSca {
            scale_low: input("scale_low"),
            scale_high: input("scale_high"),
            freq_cutoff: inputs["freq_cutoff"].as_i64().unwrap(),
        }),
        "Mahiro" => model.post_cfg.push(PostCfg::Mahiro),
        "Epsilon Scaling" => model.post_cfg.push(PostCfg::EpsilonScaling {
            factor: input("scaling_factor"),
        }),
        "TemporalScoreRescaling" => model.post_cfg.push(PostCfg::ScoreRescaling {
            k: input("tsr_k"),
            variance: input("tsr_sigma").powi(2),
        }),
        other => panic!("no patch {other}"),
    }
}

/// Every patch, alone and chained, on steps with and without an unconditional estimate (the
/// cfg 1 path), APG's momentum over a run whose sigma rises again. TCFG and FreSca compute in
/// float32 as ComfyUI does, so those cases agree to float32 rounding; the rest to float64's.
#[test]
fn cfg_patches_match_comfyui() {
    let positive = Conditioning(vec![CondEntry::new(Tensor::zeros(
        [1, 1, 1],
        (Kind::Double, Device::Cpu),
    ))]);
    for case in reference()["patches"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let shape: Vec<i64> = case["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        let mut model = Model::new(Arc::new(NoNet), Arc::new(sampling(case)));
        let mut float32 = false;
        for link in case["chain"].as_array().unwrap() {
            let node = link[0].as_str().unwrap();
            float32 |= matches!(node, "TCFG" | "FreSca");
            apply_node(&mut model, node, &link[1]);
        }
        for (n, step) in case["steps"].as_array().unwrap().iter().enumerate() {
            let x = tensor(&step["x"], &shape);
            let cond = tensor(&step["cond"], &shape);
            let has_uncond = !step["uncond"].is_null();
            let uncond = if has_uncond {
                tensor(&step["uncond"], &shape)
            } else {
                cond.zeros_like()
            };
            let (out, _) = guide(
                &model,
                &positive,
                &x,
                f(&step["sigma"]),
                [cond, uncond],
                has_uncond,
                f(&step["cfg"]),
            )
            .unwrap();
            let want = tensor(&step["out"], &shape);
            let scale = want.abs().max().double_value(&[]);
            let tolerance = if float32 { 2e-6 } else { 1e-12 } * scale.max(1.0);
            let diff = max_diff(&out, &want);
            assert!(
                diff <= tolerance,
                "{name} step {n}: off by {diff:e} (tolerance {tolerance:e})"
            );
        }
    }
}

/// The analytic network of the recording: per batch item a drift of its own, and a change
/// over the steps of its own, so that which entry decides for a step matters.
fn network(x: &Tensor, sigma: f64, items: &[f64]) -> Tensor {
    let mut shape = vec![1i64; x.dim()];
    shape[0] = -1;
    let item = Tensor::from_slice(items).view(shape.as_slice());
    x * 0.9
        + 0.3 * (7.0 * sigma).sin()
        + x.cos() * (&item + 1.0) * 0.1
        + item * (0.5 * (11.0 * sigma).sin())
}

fn check_call(call: &Value, ran: bool, out: &Tensor, what: &str) {
    assert_eq!(ran, call["ran"].as_bool().unwrap(), "{what}: ran");
    let (sum, abs) = (f(&call["out_sum"]), f(&call["out_abs"]));
    let got = (
        out.sum(Kind::Double).double_value(&[]),
        out.abs().sum(Kind::Double).double_value(&[]),
    );
    assert!(
        (got.0 - sum).abs() <= 1e-9 * abs && (got.1 - abs).abs() <= 1e-9 * abs,
        "{what}: output sums {got:?} against {sum}, {abs}"
    );
}

/// A cache with the case's settings, its sampling run begun.
fn started(kind: CacheKind, case: &Value, sampling: &ModelSampling) -> StepCache {
    let cache = StepCache::new(
        kind,
        f(&case["threshold"]),
        f(&case["start_percent"]),
        f(&case["end_percent"]),
        false,
    );
    cache.begin(sampling);
    cache
}

const COND: EntryKey = (0, 0);
const UNCOND: EntryKey = (1, 0);

/// EasyCache around each model call: batched cond + uncond (ComfyUI's first uuid is then the
/// unconditional entry), and the two called apart (then it is the conditional one, and the
/// unconditional call follows the decision made for it), at several thresholds and windows.
/// The skip pattern, every call's output and the final latent match.
#[test]
fn easycache_skips_the_calls_comfyui_skips() {
    let ms = flow(5.0);
    for (n, case) in reference()["easycache"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let cache = started(CacheKind::Easy, case, &ms);
        let shape = [1i64, 4, 2, 9, 10];
        let mut x = tensor(&case["x0"], &shape);
        let sigmas = floats(&case["sigmas"]);
        let batched = case["batched"].as_bool().unwrap();
        // Here a batch is [cond, uncond]; ComfyUI's is [uncond, cond], whose network drifts
        // by batch position, so each entry keeps its position there.
        let groups: Vec<Vec<(EntryKey, f64)>> = if batched {
            vec![vec![(COND, 1.0), (UNCOND, 0.0)]]
        } else {
            vec![vec![(COND, 0.0)], vec![(UNCOND, 0.0)]]
        };
        let mut calls = case["calls"].as_array().unwrap().iter();
        for (step, pair) in sigmas.windows(2).enumerate() {
            let (s, next) = (pair[0], pair[1]);
            cache.new_batch();
            let (mut cond, mut uncond) = (None, None);
            for group in &groups {
                let keys: Vec<EntryKey> = group.iter().map(|(k, _)| *k).collect();
                let items: Vec<f64> = group.iter().map(|(_, i)| *i).collect();
                let input = Tensor::cat(&vec![&x; keys.len()], 0);
                let mut ran = false;
                let out = cache
                    .easy_forward(&input, s, &keys, || {
                        ran = true;
                        Ok(network(&input, s, &items))
                    })
                    .unwrap();
                check_call(
                    calls.next().unwrap(),
                    ran,
                    &out,
                    &format!("case {n} step {step}"),
                );
                for (key, chunk) in keys.iter().zip(out.chunk(keys.len() as i64, 0)) {
                    if *key == COND {
                        cond = Some(chunk);
                    } else {
                        uncond = Some(chunk);
                    }
                }
            }
            let (cond, uncond) = (cond.unwrap(), uncond.unwrap());
            let v = &uncond + (&cond - &uncond) * 5.0;
            x += v * (next - s);
        }
        assert!(calls.next().is_none());
        assert!(
            max_diff(&x, &tensor(&case["x"], &shape)) < 1e-10,
            "case {n}: latent"
        );
        assert_eq!(
            cache.finish(sigmas.len() - 1),
            case["skipped"].as_u64().unwrap() as usize
        );
    }
}

/// LazyCache around the guided estimate of an Euler run, at several thresholds and windows.
#[test]
fn lazycache_skips_the_steps_comfyui_skips() {
    let ms = flow(3.0);
    for (n, case) in reference()["lazycache"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let cache = started(CacheKind::Lazy, case, &ms);
        let shape = [2i64, 4, 2, 9, 17];
        let mut x = tensor(&case["x0"], &shape);
        let sigmas = floats(&case["sigmas"]);
        let calls = case["calls"].as_array().unwrap();
        for (step, pair) in sigmas.windows(2).enumerate() {
            let (s, next) = (pair[0], pair[1]);
            let mut ran = false;
            let (denoised, _) = cache
                .lazy_denoise(&x, s, || {
                    ran = true;
                    let d = &x - network(&x, s, &[0.0, 1.0]) * s;
                    Ok((d.shallow_clone(), d))
                })
                .unwrap();
            check_call(
                &calls[step],
                ran,
                &denoised,
                &format!("case {n} step {step}"),
            );
            x = &x + (&x - &denoised) * (next - s) / s;
        }
        assert!(
            max_diff(&x, &tensor(&case["x"], &shape)) < 1e-10,
            "case {n}: latent"
        );
        assert_eq!(
            cache.finish(sigmas.len() - 1),
            case["skipped"].as_u64().unwrap() as usize
        );
    }
}
