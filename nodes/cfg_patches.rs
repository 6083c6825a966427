//! Model patches that change how the conditional and unconditional estimates combine:
//! RescaleCFG (`comfy_extras/nodes_model_advanced.py`), APG (`nodes_apg.py`), TCFG
//! (`nodes_tcfg.py`), FreSca (`nodes_fresca.py`), Mahiro (`nodes_mahiro.py`), and Epsilon
//! Scaling and TemporalScoreRescaling (`nodes_eps.py`), and CFGOverride
//! (`nodes_custom_sampler.py`). The math is in `sampling::pre_cfg` and `sampling::post_cfg`.

use serde_json::json;

use super::conditioning::percent;
use crate::engine::context::ExecContext;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeOutput, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::sampling::model::{CfgOverride, Model};
use crate::sampling::post_cfg::{CfgFunction, PostCfg};
use crate::sampling::pre_cfg::{Apg, PreCfg};

/// A copy of the input model with `patch` applied (every model-patch node's output).
pub(super) fn patched(i: &Inputs, patch: impl FnOnce(&mut Model)) -> NodeResult {
    let mut model = i.object::<Model>("model")?.clone();
    patch(&mut model);
    Ok(NodeOutput::one(Value::object(model)))
}

fn rescale_cfg(i: &Inputs, _: &ExecContext) -> NodeResult {
    let multiplier = i.float("multiplier")?;
    patched(i, |m| {
        m.cfg_function = Some(CfgFunction::Rescale { multiplier })
    })
}

fn apg(i: &Inputs, _: &ExecContext) -> NodeResult {
    let apg = Apg::new(
        i.float("eta")?,
        i.float("norm_threshold")?,
        i.float("momentum")?,
    );
    patched(i, |m| m.pre_cfg.push(PreCfg::Apg(apg)))
}

fn tcfg(i: &Inputs, _: &ExecContext) -> NodeResult {
    patched(i, |m| m.pre_cfg.push(PreCfg::Tangential))
}

fn fresca(i: &Inputs, _: &ExecContext) -> NodeResult {
    let patch = PreCfg::FreSca {
        scale_low: i.float("scale_low")?,
        scale_high: i.float("scale_high")?,
        freq_cutoff: i.int("freq_cutoff")?,
    };
    patched(i, |m| m.pre_cfg.push(patch))
}

fn mahiro(i: &Inputs, _: &ExecContext) -> NodeResult {
    patched(i, |m| m.post_cfg.push(PostCfg::Mahiro))
}

fn epsilon_scaling(i: &Inputs, _: &ExecContext) -> NodeResult {
    let factor = i.float("scaling_factor")?;
    patched(i, |m| m.post_cfg.push(PostCfg::EpsilonScaling { factor }))
}

fn temporal_score_rescaling(i: &Inputs, _: &ExecContext) -> NodeResult {
    let (k, sigma) = (i.float("tsr_k")?, i.float("tsr_sigma")?);
    patched(i, |m| {
        m.post_cfg.push(PostCfg::ScoreRescaling {
            k,
            variance: sigma * sigma,
        })
    })
}

fn cfg_override(i: &Inputs, _: &ExecContext) -> NodeResult {
    let model = i.object::<Model>("model")?;
    let sampling = &model.sampling;
    let ranged = CfgOverride {
        cfg: i.float("cfg")?,
        sigma_hi: sampling.percent_to_sigma(i.float("start_percent")?),
        sigma_lo: sampling.percent_to_sigma(i.float("end_percent")?),
    };
    patched(i, |m| m.cfg_overrides.push(ranged))
}

fn v3(
    name: &str,
    display: &str,
    category: &str,
    module: &str,
    f: fn(&Inputs, &ExecContext) -> NodeResult,
) -> NodeDef {
    NodeDef::builtin(name, Style::V3, display, category, f)
        .module(module)
        .input(InputDef::new("model", "MODEL"))
}

/// A FLOAT input with its range, advanced as these nodes mark them.
fn float(name: &str, default: f64, min: f64, max: f64, step: f64) -> InputDef {
    InputDef::float(name)
        .advanced()
        .default_float(default)
        .min_float(min)
        .max_float(max)
        .step_float(step)
}

/// FreSca's scales, whose range upstream writes as integers.
fn fresca_scale(name: &str, default: f64) -> InputDef {
    InputDef::float(name)
        .advanced()
        .default_float(default)
        .min(0)
        .max(10)
        .step_float(0.01)
}

pub fn register(r: &mut Registry) {
    r.add(
        NodeDef::builtin(
            "CFGOverride",
            Style::V3,
            "CFG Override",
            "model/sampling/guiders",
            cfg_override,
        )
        .module("comfy_extras.nodes_custom_sampler")
        .description(
            "Override cfg to a fixed value over a [start, end] percent (sigma) range. With \
             multiple overrides, the one nearest the sampler wins on overlap.",
        )
        .input(InputDef::new("model", "MODEL"))
        .input(
            InputDef::float("cfg")
                .default_float(1.0)
                .min_float(0.0)
                .max_float(100.0)
                .step_float(0.1)
                .opt("round", json!(0.01)),
        )
        .input(percent("start_percent", 0.0))
        .input(percent("end_percent", 1.0))
        .output("MODEL"),
    );
    r.add(
        NodeDef::builtin(
            "RescaleCFG",
            Style::V1,
            "RescaleCFG",
            "model/patch",
            rescale_cfg,
        )
        .module("comfy_extras.nodes_model_advanced")
        .input(InputDef::new("model", "MODEL"))
        .input(
            InputDef::float("multiplier")
                .default_float(0.7)
                .min_float(0.0)
                .max_float(1.0)
                .step_float(0.01),
        )
        .output("MODEL"),
    );
    r.add(
        v3(
            "APG",
            "Adaptive Projected Guidance",
            "model/sampling/custom",
            "comfy_extras.nodes_apg",
            apg,
        )
        .input(float("eta", 1.0, -10.0, 10.0, 0.01).tooltip(
            "Controls the scale of the parallel guidance vector. Default CFG behavior at a \
             setting of 1.",
        ))
        .input(float("norm_threshold", 5.0, 0.0, 50.0, 0.1).tooltip(
            "Normalize guidance vector to this value, normalization disable at a setting of 0.",
        ))
        .input(float("momentum", 0.0, -5.0, 1.0, 0.01).tooltip(
            "Controls a running average of guidance during diffusion, disabled at a setting \
             of 0.",
        ))
        .output("MODEL"),
    );
    r.add(
        v3(
            "TCFG",
            "Tangential Damping CFG",
            "advanced/guidance",
            "comfy_extras.nodes_tcfg",
            tcfg,
        )
        .description(
            "TCFG – Tangential Damping CFG (2503.18137)\n\nRefine the uncond (negative) to \
             align with the cond (positive) for improving quality.",
        )
        .named_output("MODEL", "patched_model"),
    );
    r.add(
        v3(
            "FreSca",
            "FreSca",
            "experimental",
            "comfy_extras.nodes_fresca",
            fresca,
        )
        .display("FreSca")
        .description("Applies frequency-dependent scaling to the guidance")
        .aliases(&["frequency guidance"])
        .input(
            fresca_scale("scale_low", 1.0).tooltip("Scaling factor for low-frequency components"),
        )
        .input(
            fresca_scale("scale_high", 1.25)
                .tooltip("Scaling factor for high-frequency components"),
        )
        .input(
            InputDef::int("freq_cutoff")
                .advanced()
                .default(20)
                .min(1)
                .max(10000)
                .step(1)
                .tooltip("Number of frequency indices around center to consider as low-frequency"),
        )
        .output("MODEL")
        .experimental(),
    );
    r.add(
        v3(
            "Mahiro",
            "Positive-Biased Guidance",
            "experimental",
            "comfy_extras.nodes_mahiro",
            mahiro,
        )
        .description(
            "Modify the guidance to scale more on the 'direction' of the positive prompt rather \
             than the difference between the negative prompt.",
        )
        .aliases(&[
            "mahiro",
            "mahiro cfg",
            "similarity-adaptive guidance",
            "positive-biased cfg",
        ])
        .named_output("MODEL", "patched_model")
        .experimental(),
    );
    r.add(
        v3(
            "Epsilon Scaling",
            "Epsilon Scaling",
            "model/patch/unet",
            "comfy_extras.nodes_eps",
            epsilon_scaling,
        )
        .input(float("scaling_factor", 1.005, 0.5, 1.5, 0.001).opt("display", json!("number")))
        .output("MODEL"),
    );
    let tsr_tooltips = [
        "Controls the rescaling strength.\nLower k produces more detailed results; higher k \
         produces smoother results in image generation. Setting k = 1 disables rescaling.",
        "Controls how early rescaling takes effect.\nLarger values take effect earlier.",
    ];
    r.add(
        v3(
            "TemporalScoreRescaling",
            "TSR - Temporal Score Rescaling",
            "model/patch/unet",
            "comfy_extras.nodes_eps",
            temporal_score_rescaling,
        )
        .description(
            "[Post-CFG Function]\nTSR - Temporal Score Rescaling (2510.01184)\n\nRescaling the \
             model's score or noise to steer the sampling diversity.\n",
        )
        .input(
            float("tsr_k", 0.95, 0.01, 100.0, 0.001)
                .tooltip(tsr_tooltips[0])
                .opt("display", json!("number")),
        )
        .input(
            float("tsr_sigma", 1.0, 0.01, 100.0, 0.001)
                .tooltip(tsr_tooltips[1])
                .opt("display", json!("number")),
        )
        .named_output("MODEL", "patched_model"),
    );
}
