//! Sampling nodes: KSampler, KSamplerAdvanced, SamplerCustom(Advanced) and their parts
//! (noise, guiders, sampler choice, schedulers, sigma tools, model sampling).

use std::sync::Arc;

use serde_json::json;
use tch::{Kind, Tensor};

use crate::engine::context::ExecContext;
use crate::engine::node::{
    InputDef, Inputs, NodeDef, NodeError, NodeFunction, NodeOutput, NodeResult, Style,
};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::sampling::guidance::Guider;
use crate::sampling::ksampler::{ksampler_sigmas, sample_latent_with, step_window};
use crate::sampling::model::{Conditioning, Latent, Model, NoiseSource, SamplerChoice, Sigmas};
use crate::sampling::model_sampling::{ModelSampling, Prediction, Schedule};
use crate::sampling::samplers::SAMPLER_NAMES;
use crate::sampling::schedulers::{self, beta_schedule, calculate_sigmas, SCHEDULER_NAMES};

const SEED_MAX: u64 = u64::MAX;

fn v1(name: &str, display: &str, category: &str, f: NodeFunction) -> NodeDef {
    NodeDef::builtin(name, Style::V1, display, category, f)
}

fn v3(name: &str, display: &str, category: &str, f: NodeFunction) -> NodeDef {
    NodeDef::builtin(name, Style::V3, display, category, f)
        .module("comfy_extras.nodes_custom_sampler")
}

fn seed_input(name: &str) -> InputDef {
    InputDef::int(name)
        .default(0)
        .min(0)
        .max(SEED_MAX)
        .opt("control_after_generate", json!(true))
}

pub(super) fn seed_of(i: &Inputs, name: &str) -> Result<u64, NodeError> {
    match i.get(name) {
        Some(Value::Int(v)) => {
            u64::try_from(*v).map_err(|_| NodeError::value(format!("{name} must be in 0..2^64")))
        }
        _ => Err(NodeError::value(format!("{name} must be an integer"))),
    }
}

pub(super) fn sigmas_out(s: Vec<f64>) -> Value {
    Value::object(Sigmas(s))
}

/// A float widget in `[min, max]` by `step` that the frontend does not round.
pub(super) fn unrounded_float(
    def: InputDef,
    default: f64,
    min: f64,
    max: f64,
    step: f64,
) -> InputDef {
    def.default_float(default)
        .min_float(min)
        .max_float(max)
        .step_float(step)
        .opt("round", json!(false))
}

/// The schedulers' `denoise` fraction.
pub(super) fn denoise_input() -> InputDef {
    InputDef::float("denoise")
        .default_float(1.0)
        .min_float(0.0)
        .max_float(1.0)
        .step_float(0.01)
}

/// `steps` and the advanced `sigma_max`/`sigma_min` of the schedules that need no model.
pub(super) fn sigma_range_inputs(d: NodeDef) -> NodeDef {
    let sigma = |name: &str, default: f64| {
        unrounded_float(InputDef::float(name).advanced(), default, 0.0, 5000.0, 0.01)
    };
    d.input(InputDef::int("steps").default(20).min(1).max(10000))
        .input(sigma("sigma_max", 14.614642))
        .input(sigma("sigma_min", 0.0291675))
}

fn latent_out(l: Latent) -> Value {
    Value::object(l)
}

/// Runs a guider over a latent with progress and interrupts; `(output, denoised_output)`.
fn run_sampling(
    ctx: &ExecContext,
    mut guider: Guider,
    sampler: &SamplerChoice,
    sigmas: &[f64],
    noise: &NoiseSource,
    latent: &Latent,
) -> Result<(Latent, Latent), NodeError> {
    let initial = noise.generate(latent);
    let total = sigmas.len().saturating_sub(1) as u64;
    let interrupted = std::cell::Cell::new(false);
    let previewer = if ctx.env.previews {
        guider.model().net.latent_rgb()
    } else {
        None
    };
    let mut callback = |i: usize, _x: &Tensor, denoised: &Tensor| -> anyhow::Result<()> {
        ctx.progress(i as u64 + 1, total).map_err(|e| {
            interrupted.set(matches!(e, NodeError::Interrupted));
            anyhow::anyhow!("{e:?}")
        })?;
        if let Some(p) = &previewer {
            ctx.preview(&p.preview(denoised));
        }
        Ok(())
    };
    let result = sample_latent_with(
        &mut guider,
        sampler,
        sigmas,
        &initial,
        latent,
        noise.seed(),
        &mut callback,
    );
    let sampled = match result {
        Ok(s) => s,
        Err(_) if interrupted.get() => return Err(NodeError::Interrupted),
        Err(e) => return Err(e.into()),
    };
    let mut out = latent.with_sampled(sampled.samples.shallow_clone());
    out.noise_mask = latent.noise_mask.clone();
    let denoised = latent.with_sampled(sampled.denoised.unwrap_or(sampled.samples));
    Ok((out, denoised))
}

/// ComfyUI's `common_ksampler`.
#[allow(clippy::too_many_arguments)]
fn common_ksampler(
    i: &Inputs,
    ctx: &ExecContext,
    seed: u64,
    disable_noise: bool,
    start: Option<usize>,
    last: Option<usize>,
    force_full: bool,
    denoise: f64,
) -> NodeResult {
    let model = i.object::<Model>("model")?.clone();
    let latent = i.object::<Latent>("latent_image")?;
    let sampler = i.string("sampler_name")?;
    let steps = i.int("steps")?.max(0) as usize;
    let sigmas = ksampler_sigmas(
        &model.sampling,
        &i.string("scheduler")?,
        &sampler,
        steps,
        denoise,
    )?;
    let Some(sigmas) = step_window(sigmas, start, last, force_full) else {
        return Ok(NodeOutput::one(latent_out(latent.clone())));
    };
    let guider = Guider::Cfg {
        model,
        positive: i.object::<Conditioning>("positive")?.clone(),
        negative: i.object::<Conditioning>("negative")?.clone(),
        cfg: i.float("cfg")?,
    };
    // Disabled initial noise still seeds the ancestral steps, as in ComfyUI.
    let noise = if disable_noise {
        NoiseSource::ZeroSeeded(seed)
    } else {
        NoiseSource::Seeded(seed)
    };
    let sampler = SamplerChoice::named(sampler);
    let (out, _) = run_sampling(ctx, guider, &sampler, &sigmas, &noise, latent)?;
    Ok(NodeOutput::one(latent_out(out)))
}

fn ksampler(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    common_ksampler(
        i,
        ctx,
        seed_of(i, "seed")?,
        false,
        None,
        None,
        false,
        i.float("denoise")?,
    )
}

fn ksampler_advanced(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let force_full = i.string("return_with_leftover_noise")? != "enable";
    let disable = i.string("add_noise")? == "disable";
    let (start, end) = (
        i.int("start_at_step")?.max(0) as usize,
        i.int("end_at_step")?.max(0) as usize,
    );
    common_ksampler(
        i,
        ctx,
        seed_of(i, "noise_seed")?,
        disable,
        Some(start),
        Some(end),
        force_full,
        1.0,
    )
}

fn sampler_custom(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let model = i.object::<Model>("model")?.clone();
    let latent = i.object::<Latent>("latent_image")?;
    let guider = Guider::Cfg {
        model,
        positive: i.object::<Conditioning>("positive")?.clone(),
        negative: i.object::<Conditioning>("negative")?.clone(),
        cfg: i.float("cfg")?,
    };
    let seed = seed_of(i, "noise_seed")?;
    let noise = if i.boolean("add_noise")? {
        NoiseSource::Seeded(seed)
    } else {
        NoiseSource::ZeroSeeded(seed)
    };
    let sampler = i.object::<SamplerChoice>("sampler")?;
    let sigmas = &i.object::<Sigmas>("sigmas")?.0;
    let (out, denoised) = run_sampling(ctx, guider, sampler, sigmas, &noise, latent)?;
    Ok(NodeOutput::values(vec![
        latent_out(out),
        latent_out(denoised),
    ]))
}

fn sampler_custom_advanced(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let noise = i.object::<NoiseSource>("noise")?;
    let guider = i.object::<Guider>("guider")?.clone();
    let sampler = i.object::<SamplerChoice>("sampler")?;
    let sigmas = &i.object::<Sigmas>("sigmas")?.0;
    let latent = i.object::<Latent>("latent_image")?;
    let (out, denoised) = run_sampling(ctx, guider, sampler, sigmas, noise, latent)?;
    Ok(NodeOutput::values(vec![
        latent_out(out),
        latent_out(denoised),
    ]))
}

fn random_noise(i: &Inputs, _: &ExecContext) -> NodeResult {
    Ok(NodeOutput::one(Value::object(NoiseSource::Seeded(
        seed_of(i, "noise_seed")?,
    ))))
}

/// AddNoise: the latent noised to the span of `sigmas` (`|first − last|`, or the only one) by
/// the model's noise scaling, in its latent space; an all-zero latent is taken as it is.
fn add_noise(i: &Inputs, _: &ExecContext) -> NodeResult {
    let latent = i.object::<Latent>("latent_image")?;
    let sigmas = &i.object::<Sigmas>("sigmas")?.0;
    let (Some(first), Some(last)) = (sigmas.first(), sigmas.last()) else {
        return Ok(NodeOutput::one(latent_out(latent.clone())));
    };
    let model = i.object::<Model>("model")?;
    let noise = i.object::<NoiseSource>("noise")?.generate(latent);
    let scale = if sigmas.len() > 1 {
        // In float32, as ComfyUI subtracts its SIGMAS tensor.
        ((*first as f32) - (*last as f32)).abs() as f64
    } else {
        *first
    };
    let format = model.net.latent_format();
    let samples = &latent.samples;
    let image = match format {
        Some(f) if samples.count_nonzero(None::<i64>).int64_value(&[]) > 0 => f.process_in(samples),
        _ => samples.shallow_clone(),
    };
    let sigma = Tensor::full([noise.size()[0]], scale, (noise.kind(), noise.device()));
    let noisy = model.sampling.noise_scaling(&sigma, &noise, &image, false);
    let noisy = format.map_or(noisy.shallow_clone(), |f| f.process_out(&noisy));
    let noisy = noisy.nan_to_num(0.0, 0.0, 0.0);
    Ok(NodeOutput::one(latent_out(latent.with_samples(noisy))))
}

fn disable_noise(_: &Inputs, _: &ExecContext) -> NodeResult {
    Ok(NodeOutput::one(Value::object(NoiseSource::Disabled)))
}

fn basic_guider(i: &Inputs, _: &ExecContext) -> NodeResult {
    let g = Guider::Basic {
        model: i.object::<Model>("model")?.clone(),
        cond: i.object::<Conditioning>("conditioning")?.clone(),
    };
    Ok(NodeOutput::one(Value::object(g)))
}

fn cfg_guider(i: &Inputs, _: &ExecContext) -> NodeResult {
    let g = Guider::Cfg {
        model: i.object::<Model>("model")?.clone(),
        positive: i.object::<Conditioning>("positive")?.clone(),
        negative: i.object::<Conditioning>("negative")?.clone(),
        cfg: i.float("cfg")?,
    };
    Ok(NodeOutput::one(Value::object(g)))
}

fn dual_cfg_guider(i: &Inputs, _: &ExecContext) -> NodeResult {
    let g = Guider::DualCfg {
        model: i.object::<Model>("model")?.clone(),
        cond1: i.object::<Conditioning>("cond1")?.clone(),
        cond2: i.object::<Conditioning>("cond2")?.clone(),
        negative: i.object::<Conditioning>("negative")?.clone(),
        cfg1: i.float("cfg_conds")?,
        cfg2: i.float("cfg_cond2_negative")?,
        nested: i.string("style")? == "nested",
    };
    Ok(NodeOutput::one(Value::object(g)))
}

fn sampler_select(i: &Inputs, _: &ExecContext) -> NodeResult {
    Ok(NodeOutput::one(Value::object(SamplerChoice::named(
        i.string("sampler_name")?,
    ))))
}

fn sigmas_vec(t: Tensor) -> Result<Vec<f64>, NodeError> {
    Vec::<f64>::try_from(&t.to_kind(Kind::Double)).map_err(|e| NodeError::runtime(e.to_string()))
}

fn basic_scheduler(i: &Inputs, _: &ExecContext) -> NodeResult {
    let model = i.object::<Model>("model")?;
    let steps = i.int("steps")?.max(0) as usize;
    let denoise = i.float("denoise")?;
    let mut total = steps;
    if denoise < 1.0 {
        if denoise <= 0.0 {
            return Ok(NodeOutput::one(sigmas_out(Vec::new())));
        }
        total = (steps as f64 / denoise) as usize;
    }
    let all = sigmas_vec(calculate_sigmas(
        &model.sampling,
        &i.string("scheduler")?,
        total,
    )?)?;
    Ok(NodeOutput::one(sigmas_out(
        all[all.len().saturating_sub(steps + 1)..].to_vec(),
    )))
}

/// SDTurboScheduler: `steps` of the ten timesteps 999, 899, …, 99, starting `denoise` of the
/// way down, then 0.
fn sd_turbo_scheduler(i: &Inputs, _: &ExecContext) -> NodeResult {
    let model = i.object::<Model>("model")?;
    let steps = i.int("steps")?.max(0) as usize;
    let start = 10 - (10.0 * i.float("denoise")?) as usize;
    let mut sigmas: Vec<f64> = (1..=10)
        .rev()
        .map(|k| f64::from(k * 100 - 1))
        .skip(start)
        .take(steps)
        .map(|t| model.sampling.sigma(t))
        .collect();
    sigmas.push(0.0);
    Ok(NodeOutput::one(sigmas_out(sigmas)))
}

/// A schedule that needs no model, from `steps` and `(sigma_min, sigma_max)`.
fn scheduler_from_range(i: &Inputs, schedule: impl Fn(usize, f64, f64) -> Vec<f64>) -> NodeResult {
    let steps = i.int("steps")?.max(0) as usize;
    let sigmas = schedule(steps, i.float("sigma_min")?, i.float("sigma_max")?);
    Ok(NodeOutput::one(sigmas_out(sigmas)))
}

fn karras_scheduler(i: &Inputs, _: &ExecContext) -> NodeResult {
    let rho = i.float("rho")?;
    scheduler_from_range(i, |n, min, max| schedulers::karras(n, min, max, rho))
}

fn exponential_scheduler(i: &Inputs, _: &ExecContext) -> NodeResult {
    scheduler_from_range(i, schedulers::exponential)
}

fn beta_scheduler(i: &Inputs, _: &ExecContext) -> NodeResult {
    let model = i.object::<Model>("model")?;
    let (alpha, beta) = (i.float("alpha")?, i.float("beta")?);
    if alpha <= 0.0 || beta <= 0.0 {
        // scipy's quantiles are NaN there, which ComfyUI then fails to round to a timestep.
        return Err(NodeError::value("cannot convert float NaN to integer"));
    }
    let steps = i.int("steps")?.max(0) as usize;
    Ok(NodeOutput::one(sigmas_out(beta_schedule(
        &model.sampling,
        steps,
        alpha,
        beta,
    ))))
}

fn split_sigmas(i: &Inputs, _: &ExecContext) -> NodeResult {
    let s = &i.object::<Sigmas>("sigmas")?.0;
    let step = (i.int("step")?.max(0) as usize).min(s.len());
    let high = s[..(step + 1).min(s.len())].to_vec();
    let low = s[step.min(s.len())..].to_vec();
    Ok(NodeOutput::values(vec![sigmas_out(high), sigmas_out(low)]))
}

fn split_sigmas_denoise(i: &Inputs, _: &ExecContext) -> NodeResult {
    let s = &i.object::<Sigmas>("sigmas")?.0;
    let steps = s.len().saturating_sub(1);
    let total = crate::upscale::py_round(steps as f64 * i.float("denoise")?).max(0) as usize;
    let high = s[..s.len().saturating_sub(total)].to_vec();
    let low = s[s.len().saturating_sub(total + 1)..].to_vec();
    Ok(NodeOutput::values(vec![sigmas_out(high), sigmas_out(low)]))
}

fn flip_sigmas(i: &Inputs, _: &ExecContext) -> NodeResult {
    let mut s = i.object::<Sigmas>("sigmas")?.0.clone();
    s.reverse();
    if s.first() == Some(&0.0) {
        s[0] = 0.0001;
    }
    Ok(NodeOutput::one(sigmas_out(s)))
}

/// The numbers upstream's `[-+]?(?:\d*\.*\d+)` finds: signed decimals without exponents
/// (`1e-3` reads as 1 and −3), each rounded to float32.
fn parse_manual_sigmas(text: &str) -> Result<Vec<f64>, NodeError> {
    static NUMBER: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"[-+]?(?:\d*\.*\d+)").expect("a valid pattern")
    });
    NUMBER
        .find_iter(text)
        .map(|m| {
            // Python's float() rejects what the pattern allows with two dots ("1..5").
            m.as_str()
                .parse::<f64>()
                .map(|v| v as f32 as f64)
                .map_err(|_| {
                    NodeError::value(format!(
                        "could not convert string to float: '{}'",
                        m.as_str()
                    ))
                })
        })
        .collect()
}

fn manual_sigmas(i: &Inputs, _: &ExecContext) -> NodeResult {
    let values = parse_manual_sigmas(&i.string("sigmas")?)?;
    Ok(NodeOutput::one(sigmas_out(values)))
}

pub(super) fn with_sampling(i: &Inputs, sampling: ModelSampling) -> NodeResult {
    let mut model = i.object::<Model>("model")?.clone();
    model.sampling = Arc::new(sampling);
    Ok(NodeOutput::one(Value::object(model)))
}

/// A flow-matching schedule with the node's `shift`; SD3 and AuraFlow differ only in how the
/// model scales σ into its timestep.
fn shifted_flow(i: &Inputs, multiplier: f64) -> NodeResult {
    let schedule = Schedule::Flow {
        shift: i.float("shift")?,
        multiplier,
    };
    with_sampling(i, ModelSampling::new(Prediction::Flow, schedule))
}

fn model_sampling_sd3(i: &Inputs, _: &ExecContext) -> NodeResult {
    shifted_flow(i, 1000.0)
}

fn model_sampling_aura_flow(i: &Inputs, _: &ExecContext) -> NodeResult {
    shifted_flow(i, 1.0)
}

fn model_sampling_flux(i: &Inputs, _: &ExecContext) -> NodeResult {
    let (max_shift, base_shift) = (i.float("max_shift")?, i.float("base_shift")?);
    let (w, h) = (i.int("width")? as f64, i.int("height")? as f64);
    let mm = (max_shift - base_shift) / (4096.0 - 256.0);
    let b = base_shift - mm * 256.0;
    let shift = w * h / (8.0 * 8.0 * 2.0 * 2.0) * mm + b;
    with_sampling(
        i,
        ModelSampling::new(Prediction::Flow, Schedule::Flux { shift }),
    )
}

fn model_sampling_discrete(i: &Inputs, _: &ExecContext) -> NodeResult {
    let prediction = match i.string("sampling")?.as_str() {
        "eps" => Prediction::Eps,
        "v_prediction" => Prediction::V,
        other => {
            return Err(NodeError::value(format!(
                "sampling {other:?} is not supported yet"
            )))
        }
    };
    if i.boolean("zsnr")? {
        return Err(NodeError::value("zsnr is not supported yet"));
    }
    with_sampling(i, ModelSampling::sd(prediction))
}

pub fn register(r: &mut Registry) {
    let model = || InputDef::new("model", "MODEL");
    let steps = || InputDef::int("steps").default(20).min(1).max(10000);
    let cfg = || {
        InputDef::float("cfg")
            .default_float(8.0)
            .min_float(0.0)
            .max_float(100.0)
            .step_float(0.1)
            .opt("round", json!(0.01))
    };
    let samplers = || InputDef::combo("sampler_name", SAMPLER_NAMES);
    let schedulers = || InputDef::combo("scheduler", SCHEDULER_NAMES);
    let conds = |d: NodeDef| {
        d.input(InputDef::new("positive", "CONDITIONING"))
            .input(InputDef::new("negative", "CONDITIONING"))
    };
    r.add(
        v1("KSampler", "KSampler", "model/sampling", ksampler)
            .description("Uses the provided model, positive and negative conditioning to denoise the latent image.")
            .aliases(&["sampler", "sample", "generate", "denoise", "diffuse", "txt2img", "img2img"])
            .input(model().tooltip("The model used for denoising the input latent."))
            .input(seed_input("seed").tooltip("The random seed used for creating the noise."))
            .input(steps().tooltip("The number of steps used in the denoising process."))
            .input(cfg().tooltip("The Classifier-Free Guidance scale balances creativity and adherence to the prompt. Higher values result in images more closely matching the prompt however too high values will negatively impact quality."))
            .input(samplers().tooltip("The algorithm used when sampling, this can affect the quality, speed, and style of the generated output."))
            .input(schedulers().tooltip("The scheduler controls how noise is gradually removed to form the image."))
            .input(InputDef::new("positive", "CONDITIONING").tooltip("The conditioning describing the attributes you want to include in the image."))
            .input(InputDef::new("negative", "CONDITIONING").tooltip("The conditioning describing the attributes you want to exclude from the image."))
            .input(InputDef::new("latent_image", "LATENT").tooltip("The latent image to denoise."))
            .input(InputDef::float("denoise").default_float(1.0).min_float(0.0).max_float(1.0).step_float(0.01).tooltip("The amount of denoising applied, lower values will maintain the structure of the initial image allowing for image to image sampling."))
            .output("LATENT")
        .output_tooltip("The denoised latent."),
    );
    r.add(
        conds(
            v1(
                "KSamplerAdvanced",
                "KSampler (Advanced)",
                "model/sampling",
                ksampler_advanced,
            )
            .input(model())
            .input(InputDef::combo("add_noise", &["enable", "disable"]).advanced())
            .input(seed_input("noise_seed"))
            .input(steps())
            .input(cfg())
            .input(samplers())
            .input(schedulers()),
        )
        .input(InputDef::new("latent_image", "LATENT"))
        .input(
            InputDef::int("start_at_step")
                .default(0)
                .min(0)
                .max(10000)
                .advanced(),
        )
        .input(
            InputDef::int("end_at_step")
                .default(10000)
                .min(0)
                .max(10000)
                .advanced(),
        )
        .input(InputDef::combo("return_with_leftover_noise", &["disable", "enable"]).advanced())
        .output("LATENT"),
    );
    r.add(
        conds(
            v3(
                "SamplerCustom",
                "SamplerCustom",
                "model/sampling/custom",
                sampler_custom,
            )
            .input(model())
            .input(InputDef::boolean("add_noise").advanced().default(true))
            .input(seed_input("noise_seed"))
            .input(cfg()),
        )
        .input(InputDef::new("sampler", "SAMPLER"))
        .input(InputDef::new("sigmas", "SIGMAS"))
        .input(InputDef::new("latent_image", "LATENT"))
        .named_output("LATENT", "output")
        .named_output("LATENT", "denoised_output"),
    );
    r.add(
        v3(
            "SamplerCustomAdvanced",
            "SamplerCustomAdvanced",
            "model/sampling/custom",
            sampler_custom_advanced,
        )
        .input(InputDef::new("noise", "NOISE"))
        .input(InputDef::new("guider", "GUIDER"))
        .input(InputDef::new("sampler", "SAMPLER"))
        .input(InputDef::new("sigmas", "SIGMAS"))
        .input(InputDef::new("latent_image", "LATENT"))
        .named_output("LATENT", "output")
        .named_output("LATENT", "denoised_output"),
    );
    r.add(
        v3(
            "RandomNoise",
            "RandomNoise",
            "model/sampling/noise",
            random_noise,
        )
        .input(seed_input("noise_seed"))
        .output("NOISE"),
    );
    let mut add = v3("AddNoise", "AddNoise", "model/sampling/noise", add_noise)
        .input(model())
        .input(InputDef::new("noise", "NOISE"))
        .input(InputDef::new("sigmas", "SIGMAS"))
        .input(InputDef::new("latent_image", "LATENT"))
        .output("LATENT");
    add.experimental = true;
    r.add(add);
    r.add(
        v3(
            "DisableNoise",
            "DisableNoise",
            "model/sampling/noise",
            disable_noise,
        )
        .aliases(&["zero noise"])
        .output("NOISE"),
    );
    r.add(
        v3(
            "BasicGuider",
            "Basic Guider",
            "model/sampling/guiders",
            basic_guider,
        )
        .input(model())
        .input(InputDef::new("conditioning", "CONDITIONING"))
        .output("GUIDER"),
    );
    r.add(
        conds(
            v3(
                "CFGGuider",
                "CFG Guider",
                "model/sampling/guiders",
                cfg_guider,
            )
            .input(model()),
        )
        .input(cfg())
        .output("GUIDER"),
    );
    let dual_cfg = |name: &str| {
        InputDef::float(name)
            .default_float(8.0)
            .min_float(0.0)
            .max_float(100.0)
            .step_float(0.1)
            .opt("round", json!(0.01))
    };
    r.add(
        v3(
            "DualCFGGuider",
            "Dual CFG Guider",
            "model/sampling/guiders",
            dual_cfg_guider,
        )
        .aliases(&["dual prompt guidance"])
        .input(model())
        .input(InputDef::new("cond1", "CONDITIONING"))
        .input(InputDef::new("cond2", "CONDITIONING"))
        .input(InputDef::new("negative", "CONDITIONING"))
        .input(dual_cfg("cfg_conds"))
        .input(dual_cfg("cfg_cond2_negative"))
        .input(InputDef::combo("style", &["regular", "nested"]))
        .output("GUIDER"),
    );
    r.add(
        v3(
            "KSamplerSelect",
            "KSamplerSelect",
            "model/sampling/samplers",
            sampler_select,
        )
        .input(samplers())
        .output("SAMPLER"),
    );
    r.add(
        v3(
            "BasicScheduler",
            "BasicScheduler",
            "model/sampling/schedulers",
            basic_scheduler,
        )
        .input(model())
        .input(schedulers())
        .input(InputDef::int("steps").default(20).min(1).max(10000))
        .input(denoise_input())
        .output("SIGMAS"),
    );
    r.add(
        v3(
            "SDTurboScheduler",
            "SDTurboScheduler",
            "model/sampling/schedulers",
            sd_turbo_scheduler,
        )
        .input(model())
        .input(InputDef::int("steps").default(1).min(1).max(10))
        // Upstream writes this one's minimum as an int.
        .input(denoise_input().min(0))
        .output("SIGMAS"),
    );
    r.add(
        sigma_range_inputs(v3(
            "KarrasScheduler",
            "KarrasScheduler",
            "model/sampling/schedulers",
            karras_scheduler,
        ))
        .input(unrounded_float(
            InputDef::float("rho").advanced(),
            7.0,
            0.0,
            100.0,
            0.01,
        ))
        .output("SIGMAS"),
    );
    r.add(
        sigma_range_inputs(v3(
            "ExponentialScheduler",
            "ExponentialScheduler",
            "model/sampling/schedulers",
            exponential_scheduler,
        ))
        .output("SIGMAS"),
    );
    r.add(
        v3(
            "BetaSamplingScheduler",
            "BetaSamplingScheduler",
            "model/sampling/schedulers",
            beta_scheduler,
        )
        .input(model())
        .input(InputDef::int("steps").default(20).min(1).max(10000))
        .input(
            InputDef::float("alpha")
                .advanced()
                .default_float(0.6)
                .min_float(0.0)
                .max_float(50.0)
                .step_float(0.01)
                .opt("round", json!(false)),
        )
        .input(
            InputDef::float("beta")
                .advanced()
                .default_float(0.6)
                .min_float(0.0)
                .max_float(50.0)
                .step_float(0.01)
                .opt("round", json!(false)),
        )
        .output("SIGMAS"),
    );
    let sigmas = || InputDef::new("sigmas", "SIGMAS");
    r.add(
        v3(
            "SplitSigmas",
            "SplitSigmas",
            "model/sampling/sigmas",
            split_sigmas,
        )
        .input(sigmas())
        .input(InputDef::int("step").default(0).min(0).max(10000))
        .named_output("SIGMAS", "high_sigmas")
        .named_output("SIGMAS", "low_sigmas"),
    );
    r.add(
        v3(
            "SplitSigmasDenoise",
            "SplitSigmasDenoise",
            "model/sampling/sigmas",
            split_sigmas_denoise,
        )
        .input(sigmas())
        .input(denoise_input())
        .named_output("SIGMAS", "high_sigmas")
        .named_output("SIGMAS", "low_sigmas"),
    );
    r.add(
        v3(
            "FlipSigmas",
            "FlipSigmas",
            "model/sampling/sigmas",
            flip_sigmas,
        )
        .input(sigmas())
        .output("SIGMAS"),
    );
    let mut manual = v3(
        "ManualSigmas",
        "ManualSigmas",
        "model/sampling/sigmas",
        manual_sigmas,
    )
    .aliases(&["custom noise schedule", "define sigmas"])
    .input(
        InputDef::string("sigmas")
            .default("1, 0.5")
            .opt("multiline", json!(false)),
    )
    .output("SIGMAS");
    manual.experimental = true;
    r.add(manual);
    let ms_node = |name: &str, category: &str, f: NodeFunction| {
        v1(name, name, category, f)
            .module("comfy_extras.nodes_model_advanced")
            .input(model())
    };
    r.add(
        ms_node(
            "ModelSamplingDiscrete",
            "model/patch",
            model_sampling_discrete,
        )
        .input(InputDef::combo(
            "sampling",
            &[
                "eps",
                "v_prediction",
                "lcm",
                "x0",
                "img_to_img",
                "img_to_img_flow",
            ],
        ))
        .input(InputDef::boolean("zsnr").default(false).advanced())
        .output("MODEL"),
    );
    r.add(
        ms_node(
            "ModelSamplingSD3",
            "model/patch/stable diffusion",
            model_sampling_sd3,
        )
        .input(
            InputDef::float("shift")
                .default_float(3.0)
                .min_float(0.0)
                .max_float(100.0)
                .step_float(0.01),
        )
        .output("MODEL"),
    );
    r.add(
        ms_node(
            "ModelSamplingAuraFlow",
            "model/patch",
            model_sampling_aura_flow,
        )
        .input(
            InputDef::float("shift")
                .default_float(1.73)
                .min_float(0.0)
                .max_float(100.0)
                .step_float(0.01),
        )
        .output("MODEL"),
    );
    r.add(
        ms_node("ModelSamplingFlux", "model/patch/flux", model_sampling_flux)
            .input(
                InputDef::float("max_shift")
                    .default_float(1.15)
                    .min_float(0.0)
                    .max_float(100.0)
                    .step_float(0.01)
                    .advanced(),
            )
            .input(
                InputDef::float("base_shift")
                    .default_float(0.5)
                    .min_float(0.0)
                    .max_float(100.0)
                    .step_float(0.01)
                    .advanced(),
            )
            .input(
                InputDef::int("width")
                    .default(1024)
                    .min(16)
                    .max(crate::engine::node::MAX_RESOLUTION)
                    .step(8),
            )
            .input(
                InputDef::int("height")
                    .default(1024)
                    .min(16)
                    .max(crate::engine::node::MAX_RESOLUTION)
                    .step(8),
            )
            .output("MODEL"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_sigmas_read_numbers_as_comfyui_does() {
        let read = |t: &str| parse_manual_sigmas(t).unwrap();
        assert_eq!(read("1, 0.5"), [1.0, 0.5]);
        assert_eq!(read("14.61 -2 +.5 x7"), [14.61f32 as f64, -2.0, 0.5, 7.0]);
        assert_eq!(read("1e-3"), [1.0, -3.0]);
        assert!(read("").is_empty());
        assert!(parse_manual_sigmas("1..5").is_err());
    }
}
