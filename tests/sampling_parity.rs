//! Sampling against the references: initial noise against torch (bit for bit), schedules and
//! model sampling against ComfyUI's formulas and k-diffusion, sampler trajectories against
//! PyPI k-diffusion in fp64 with an analytic denoiser. The references come from
//! `tests/python/sampling_reference.py`, run with the project's venv.

mod reference;

use std::sync::OnceLock;

use anyhow::Result;
use serde_json::Value;
use tch::{Device, Kind, Tensor};
use videosdgx::sampling::context_windows::fuse::Fuse;
use videosdgx::sampling::context_windows::schedules::{Layout, Schedule as WindowSchedule};
use videosdgx::sampling::context_windows::ContextWindows;
use videosdgx::sampling::model_sampling::{ModelSampling, Prediction, Schedule};
use videosdgx::sampling::noise::{initial_noise, StepNoise};
use videosdgx::sampling::sampler_options::{
    DpmAdaptiveOptions, ErSdeOptions, LcmNoise, NoiseScaler, SaSolverOptions, SamplerOptions,
    TauInterval,
};
use videosdgx::sampling::samplers::{sample, Denoiser, SAMPLER_NAMES};
use videosdgx::sampling::schedulers::{self, calculate_sigmas, Spacing, SCHEDULER_NAMES};
use videosdgx::sampling::seeds::Phi;

fn reference() -> &'static Value {
    static REF: OnceLock<Value> = OnceLock::new();
    REF.get_or_init(|| {
        let out = reference::run("sampling_reference.py", &[], b"");
        serde_json::from_slice(&out).expect("reference JSON")
    })
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn to_vec(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(&t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

#[test]
fn initial_noise_matches_torch_bit_for_bit() {
    for case in reference()["noise"].as_array().unwrap() {
        let seed: u64 = case["seed"].as_str().unwrap().parse().unwrap();
        let shape = ints(&case["shape"]);
        let inds: Option<Vec<i64>> = case["batch_index"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_i64().unwrap()).collect());
        let ours = initial_noise(seed, &shape, Kind::Float, inds.as_deref());
        assert_eq!(
            ours.size(),
            if let Some(i) = &inds {
                [vec![i.len() as i64], shape[1..].to_vec()].concat()
            } else {
                shape.clone()
            }
        );
        let expected = floats(&case["values"]);
        let got = to_vec(&ours);
        assert!(got == expected, "seed {seed}: noise differs from torch's");
    }
}

#[test]
fn freenoise_shuffles_frames_as_comfyui_does() {
    for case in reference()["freenoise"].as_array().unwrap() {
        let shape = ints(&case["shape"]);
        let noise = Tensor::from_slice(&floats(&case["noise"]))
            .to_kind(Kind::Float)
            .view(shape.as_slice());
        let layout = Layout {
            schedule: WindowSchedule::StaticStandard,
            length: case["length"].as_i64().unwrap(),
            overlap: case["overlap"].as_i64().unwrap(),
            stride: 1,
            closed_loop: false,
        };
        let windows =
            ContextWindows::new(layout, Fuse::Pyramid, 2, true, vec![], vec![], false, true);
        let shuffled = windows.freenoise(&noise, case["seed"].as_u64().unwrap());
        assert_eq!(
            to_vec(&shuffled),
            floats(&case["shuffled"]),
            "seed {}",
            case["seed"]
        );
        // The first window's frames keep their noise; later ones are repeats of earlier frames.
        let first = case["length"].as_i64().unwrap();
        assert!(shuffled
            .narrow(2, 0, first)
            .equal(&noise.narrow(2, 0, first)));
        assert!(!shuffled.equal(&noise));
    }
}

fn max_rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ: {a:?} vs {b:?}");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f64::max)
}

#[test]
fn model_sampling_tables_and_conversions() {
    let r = &reference()["conversions"];
    let disc = ModelSampling::sd(Prediction::Eps);
    assert_eq!(to_vec(&disc.sigmas), floats(&r["discrete_sigmas"]));
    let flow = ModelSampling::new(
        Prediction::Flow,
        Schedule::Flow {
            shift: 3.0,
            multiplier: 1000.0,
        },
    );
    assert!(max_rel_err(&to_vec(&flow.sigmas), &floats(&r["flow_sigmas"])) < 1e-7);
    let ts: Vec<f64> = [0.05, 1.0, 7.5, 14.6]
        .iter()
        .map(|s| disc.timestep(*s))
        .collect();
    assert_eq!(ts, floats(&r["discrete_timestep"]));
    let sig: Vec<f64> = [0.0, 10.5, 500.25, 999.0]
        .iter()
        .map(|t| disc.sigma(*t))
        .collect();
    assert!(max_rel_err(&sig, &floats(&r["discrete_sigma"])) < 1e-6);
}

#[test]
fn every_scheduler_matches_comfyui() {
    let schedules = reference()["schedules"].as_object().unwrap();
    let models = [
        ("discrete", ModelSampling::sd(Prediction::Eps)),
        (
            "flow3",
            ModelSampling::new(
                Prediction::Flow,
                Schedule::Flow {
                    shift: 3.0,
                    multiplier: 1000.0,
                },
            ),
        ),
    ];
    for (label, ms) in &models {
        for name in SCHEDULER_NAMES {
            for steps in [1usize, 4, 20] {
                let key = format!("{label}/{name}/{steps}");
                if !schedules.contains_key(&key) {
                    continue; // kl_optimal with one step divides 0 by 0, in ComfyUI as here
                }
                let ours = to_vec(&calculate_sigmas(ms, name, steps).unwrap());
                let err = max_rel_err(&ours, &floats(&schedules[&key]));
                assert!(
                    err < 1e-5,
                    "{key}: error {err}\n ours {ours:?}\n ref  {:?}",
                    schedules[&key]
                );
            }
        }
    }
}

/// The analytic optimal denoiser for data ~ N(0.3, 0.8²); `flow` marks a rectified-flow model.
struct Toy {
    flow: bool,
    /// Guided: CFG 2.5 between means 0.3 (cond) and −0.2 (uncond), for the CFG++ samplers.
    guided: bool,
}

fn optimal(x: &Tensor, sigma: f64, mu: f64) -> Tensor {
    let std = 0.8f64;
    (x * (std * std) + sigma * sigma * mu) / (std * std + sigma * sigma)
}

impl Denoiser for Toy {
    fn denoise(&mut self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        Ok(self.denoise_with_uncond(x, sigma)?.0)
    }
    fn denoise_with_uncond(&mut self, x: &Tensor, sigma: f64) -> Result<(Tensor, Tensor)> {
        if !self.guided {
            let d = optimal(x, sigma, 0.3);
            return Ok((d.shallow_clone(), d));
        }
        let (cond, uncond) = (optimal(x, sigma, 0.3), optimal(x, sigma, -0.2));
        Ok((&uncond + (cond - &uncond) * 2.5, uncond))
    }
    fn is_flow(&self) -> bool {
        self.flow
    }
    /// The eps toy follows SD's discrete schedule; the flow toy keeps `1 − percent`.
    fn percent_to_sigma(&self, percent: f64) -> f64 {
        if self.flow {
            1.0 - percent
        } else {
            ModelSampling::sd(Prediction::Eps).percent_to_sigma(percent)
        }
    }
}

fn check_trajectories(cases: &serde_json::Map<String, Value>, flow: bool, guided: bool) -> usize {
    let mut checked = 0;
    for (key, case) in cases {
        let (sampler, scheduler) = key.split_once('/').unwrap();
        let sigmas = floats(&case["sigmas"]);
        let x = Tensor::linspace(-1.0, 1.0, 36, (Kind::Double, Device::Cpu)).view([1, 4, 3, 3])
            * sigmas[0];
        let mut noise = StepNoise::seeded(7, Device::Cpu);
        let out = sample(
            sampler,
            &SamplerOptions::default(),
            &mut Toy { flow, guided },
            x,
            &sigmas,
            &mut noise,
            &mut |_, _, _| Ok(()),
        )
        .unwrap();
        drop(noise);
        let err = to_vec(&out)
            .iter()
            .zip(floats(&case["x"]))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        // k-diffusion's DPM-Solver steps in float32-rounded log-sigma time and divides by
        // tiny sigmas; elsewhere fp64 agrees to round-off.
        let tolerance = if sampler.starts_with("dpm_fast") || sampler.starts_with("dpm_adaptive") {
            1e-5
        } else {
            1e-7
        };
        assert!(
            err <= tolerance,
            "{sampler}/{scheduler} (flow: {flow}): max abs error {err}"
        );
        checked += 1;
    }
    checked
}

#[test]
fn every_sampler_and_scheduler_reproduces_k_diffusion_in_fp64() {
    let cases = reference()["trajectories"].as_object().unwrap();
    let plain = SAMPLER_NAMES
        .iter()
        .filter(|s| !s.ends_with("_cfg_pp"))
        .count();
    assert_eq!(
        check_trajectories(cases, false, false),
        plain * SCHEDULER_NAMES.len()
    );
}

#[test]
fn ancestral_samplers_take_their_rectified_flow_forms_on_flow_models() {
    let cases = reference()["flow_trajectories"].as_object().unwrap();
    assert_eq!(
        check_trajectories(cases, true, false),
        14 * SCHEDULER_NAMES.len()
    );
}

#[test]
fn cfg_pp_samplers_step_along_the_unconditional_estimate() {
    let cases = reference()["cfg_pp_trajectories"].as_object().unwrap();
    let cfg_pp = SAMPLER_NAMES
        .iter()
        .filter(|s| s.ends_with("_cfg_pp"))
        .count();
    assert_eq!(
        check_trajectories(cases, false, true),
        cfg_pp * SCHEDULER_NAMES.len()
    );
}

/// Checks a tree grown from the reference's `t0`, `t1`, `seed` on `device` against the
/// reference's increments.
fn check_brownian(r: &Value, shape: &[i64], kind: Kind, device: Device, tolerance: f64) {
    let _hold = StepNoise::unseeded();
    let mut tree = videosdgx::sampling::brownian::BrownianTree::new(
        r["t0"].as_f64().unwrap(),
        r["t1"].as_f64().unwrap(),
        shape,
        kind,
        device,
        r["seed"].as_u64().unwrap(),
    );
    for (q, w) in r["queries"]
        .as_array()
        .unwrap()
        .iter()
        .zip(r["w"].as_array().unwrap())
    {
        let (a, b) = (q[0].as_f64().unwrap(), q[1].as_f64().unwrap());
        let got = to_vec(
            &tree
                .increment_between(a.min(b), a.max(b))
                .to_device(Device::Cpu),
        );
        let err = got
            .iter()
            .zip(floats(w))
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        assert!(
            err < tolerance,
            "{device:?}: increment over [{a}, {b}] differs by {err}"
        );
    }
}

#[test]
fn brownian_tree_matches_torchsde() {
    check_brownian(
        &reference()["brownian"],
        &[2, 3],
        Kind::Double,
        Device::Cpu,
        1e-12,
    );
}

/// The `_gpu` SDE samplers grow their tree on the GPU like ComfyUI's (torchsde on CUDA). Runs
/// where CUDA is available (the lent GPU); elsewhere the `_gpu` names run the CPU tree, which
/// the trajectory tests above check.
#[test]
fn brownian_tree_on_cuda_matches_torchsde_on_cuda() {
    if !tch::Cuda::is_available() {
        eprintln!("no CUDA device: the GPU tree is checked on the lent GPU");
        return;
    }
    let out = reference::run("brownian_reference.py", &["cuda".as_ref()], b"");
    let r: Value = serde_json::from_slice(&out).unwrap();
    check_brownian(&r, &[2, 3, 40], Kind::Float, Device::Cuda(0), 1e-5);
}

/// The options a Sampler* node sets, read from the reference's JSON.
fn tuned_options(o: &Value) -> SamplerOptions {
    let f = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64);
    let n = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).map(|n| n as usize);
    SamplerOptions {
        eta: f(o, "eta"),
        s_noise: f(o, "s_noise"),
        r: f(o, "r"),
        order: n(o, "order"),
        heun: o.get("heun").and_then(Value::as_bool),
        phi: o.get("phi").map(|p| match p.as_str() {
            Some("phi_2") => Phi::Two,
            _ => Phi::One,
        }),
        er_sde: o.get("er_sde").map(|e| {
            let eta = f(e, "eta").unwrap();
            ErSdeOptions {
                scaler: match e["scaler"].as_str().unwrap() {
                    "ER-SDE" => NoiseScaler::ErSde { eta },
                    "Reverse-time SDE" => NoiseScaler::ReverseTime { eta },
                    _ => NoiseScaler::Ode,
                },
                max_stage: n(e, "max_stage").unwrap(),
            }
        }),
        sa_solver: o.get("sa_solver").map(|a| {
            let tau = floats(&a["tau"]);
            SaSolverOptions {
                tau: Some(TauInterval {
                    start_sigma: tau[0],
                    end_sigma: tau[1],
                    eta: tau[2],
                }),
                predictor_order: n(a, "predictor_order").unwrap(),
                corrector_order: n(a, "corrector_order").unwrap(),
                pece: a["pece"].as_bool().unwrap(),
                simple_order_2: a["simple_order_2"].as_bool().unwrap(),
            }
        }),
        dpm_adaptive: o.get("dpm_adaptive").map(|d| DpmAdaptiveOptions {
            order: n(d, "order").unwrap(),
            rtol: f(d, "rtol").unwrap(),
            atol: f(d, "atol").unwrap(),
            h_init: f(d, "h_init").unwrap(),
            pcoeff: f(d, "pcoeff").unwrap(),
            icoeff: f(d, "icoeff").unwrap(),
            dcoeff: f(d, "dcoeff").unwrap(),
            accept_safety: f(d, "accept_safety").unwrap(),
        }),
        lcm: o.get("lcm").map(|l| LcmNoise {
            s_noise_end: f(l, "s_noise_end").unwrap(),
            noise_clip_std: f(l, "noise_clip_std").unwrap(),
        }),
    }
}

/// The Sampler* nodes' options (eta, s_noise, r, orders, solver types, ER-SDE's scalers,
/// SA-Solver's interval and orders, DPM-adaptive's controller, LCM's noise ramp) against the
/// same samplers in the reference, each option away from its default.
#[test]
fn sampler_options_reproduce_comfyui_in_fp64() {
    let cases = reference()["tuned_trajectories"].as_object().unwrap();
    assert_eq!(cases.len(), 23);
    for (key, case) in cases {
        let sigmas = floats(&case["sigmas"]);
        let x = Tensor::linspace(-1.0, 1.0, 36, (Kind::Double, Device::Cpu)).view([1, 4, 3, 3])
            * sigmas[0];
        let mut noise = StepNoise::seeded(7, Device::Cpu);
        let toy = &mut Toy {
            flow: case["flow"].as_bool().unwrap(),
            guided: case["guided"].as_bool().unwrap(),
        };
        let name = case["sampler"].as_str().unwrap();
        let options = tuned_options(&case["options"]);
        let out = sample(
            name,
            &options,
            toy,
            x,
            &sigmas,
            &mut noise,
            &mut |_, _, _| Ok(()),
        );
        drop(noise);
        let err = to_vec(&out.unwrap())
            .iter()
            .zip(floats(&case["x"]))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        let tolerance = if name == "dpm_adaptive" { 1e-5 } else { 1e-7 };
        assert!(err <= tolerance, "{key}: max abs error {err}");
    }
}

/// The SIGMAS a scheduler node of the reference's `SCHEDULE_NODE_CASES` gives, from the
/// library's schedules.
fn node_sigmas(spec: &Value) -> Vec<f64> {
    let a = &spec["inputs"];
    let f = |k: &str| a[k].as_f64().unwrap();
    let steps = a["steps"].as_u64().unwrap_or(0) as usize;
    let levels = |table: &[(&str, &[f64])]| {
        let name = a["model_type"].as_str().unwrap();
        table.iter().find(|(n, _)| *n == name).unwrap().1.to_vec()
    };
    match spec["class"].as_str().unwrap() {
        "PolyexponentialScheduler" => {
            schedulers::polyexponential(steps, f("sigma_min"), f("sigma_max"), f("rho"))
        }
        "VPScheduler" => schedulers::vp(steps, f("beta_d"), f("beta_min"), f("eps_s")),
        "LaplaceScheduler" => {
            schedulers::laplace(steps, f("sigma_min"), f("sigma_max"), f("mu"), f("beta"))
        }
        "AlignYourStepsScheduler" => schedulers::from_noise_levels(
            &levels(&schedulers::ALIGN_YOUR_STEPS),
            steps,
            f("denoise"),
        ),
        "OptimalStepsScheduler" => {
            schedulers::from_noise_levels(&levels(&schedulers::OPTIMAL_STEPS), steps, f("denoise"))
        }
        "ExtendIntermediateSigmas" => schedulers::extend_intermediate(
            &node_sigmas(&a["sigmas"]),
            steps,
            f("start_at_sigma"),
            f("end_at_sigma"),
            match a["spacing"].as_str().unwrap() {
                "cosine" => Spacing::Cosine,
                "sine" => Spacing::Sine,
                _ => Spacing::Linear,
            },
        ),
        "SetFirstSigma" => {
            let mut s = node_sigmas(&a["sigmas"]);
            s[0] = f("sigma") as f32 as f64;
            s
        }
        "BetaSamplingScheduler" => schedulers::beta_schedule(
            &ModelSampling::sd(Prediction::Eps),
            steps,
            f("alpha"),
            f("beta"),
        ),
        other => panic!("no schedule {other}"),
    }
}

/// Polyexponential, VP and Laplace schedules, Align Your Steps and OptimalSteps (resampled
/// and cut by denoise), ExtendIntermediateSigmas, SetFirstSigma and the Beta schedule at
/// other shapes, against ComfyUI's formulas.
#[test]
fn scheduler_nodes_match_comfyui() {
    let cases = reference()["schedule_nodes"].as_array().unwrap();
    assert_eq!(cases.len(), 13);
    for case in cases {
        let ours = node_sigmas(&case["spec"]);
        let theirs = floats(&case["sigmas"]);
        assert_eq!(ours.len(), theirs.len(), "{}", case["spec"]);
        let err = max_rel_err(&ours, &theirs);
        assert!(
            err < 1e-6,
            "{}: error {err}\n ours {ours:?}\n ref  {theirs:?}",
            case["spec"]
        );
    }
}
