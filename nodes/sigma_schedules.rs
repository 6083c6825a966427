//! Schedules and sigma tools beyond BasicScheduler: Polyexponential, Laplace and VP schedules,
//! SetFirstSigma, ExtendIntermediateSigmas, SamplingPercentToSigma
//! (`comfy_extras/nodes_custom_sampler.py`), and the published-noise-level schedules of Align
//! Your Steps and OptimalSteps (`nodes_align_your_steps.py`, `nodes_optimalsteps.py`).

use super::sampling::{denoise_input, sigma_range_inputs, unrounded_float};
use crate::engine::context::ExecContext;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeError, NodeFunction, NodeOutput};
use crate::engine::node::{NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::sampling::model::{Model, Sigmas};
use crate::sampling::schedulers::{self, Spacing, ALIGN_YOUR_STEPS, OPTIMAL_STEPS};

fn sigmas_out(s: Vec<f64>) -> NodeResult {
    Ok(NodeOutput::one(super::sampling::sigmas_out(s)))
}

fn steps(i: &Inputs) -> Result<usize, NodeError> {
    Ok(i.int("steps")?.max(0) as usize)
}

fn polyexponential(i: &Inputs, _: &ExecContext) -> NodeResult {
    sigmas_out(schedulers::polyexponential(
        steps(i)?,
        i.float("sigma_min")?,
        i.float("sigma_max")?,
        i.float("rho")?,
    ))
}

fn laplace(i: &Inputs, _: &ExecContext) -> NodeResult {
    sigmas_out(schedulers::laplace(
        steps(i)?,
        i.float("sigma_min")?,
        i.float("sigma_max")?,
        i.float("mu")?,
        i.float("beta")?,
    ))
}

fn vp(i: &Inputs, _: &ExecContext) -> NodeResult {
    sigmas_out(schedulers::vp(
        steps(i)?,
        i.float("beta_d")?,
        i.float("beta_min")?,
        i.float("eps_s")?,
    ))
}

fn set_first_sigma(i: &Inputs, _: &ExecContext) -> NodeResult {
    let mut sigmas = i.object::<Sigmas>("sigmas")?.0.clone();
    let Some(first) = sigmas.first_mut() else {
        return Err(NodeError::new(
            "IndexError",
            "index 0 is out of bounds for dimension 0 with size 0",
        ));
    };
    *first = i.float("sigma")? as f32 as f64;
    sigmas_out(sigmas)
}

fn extend_intermediate(i: &Inputs, _: &ExecContext) -> NodeResult {
    let spacing = match i.string("spacing")?.as_str() {
        "cosine" => Spacing::Cosine,
        "sine" => Spacing::Sine,
        _ => Spacing::Linear,
    };
    sigmas_out(schedulers::extend_intermediate(
        &i.object::<Sigmas>("sigmas")?.0,
        steps(i)?,
        i.float("start_at_sigma")?,
        i.float("end_at_sigma")?,
        spacing,
    ))
}

fn sampling_percent_to_sigma(i: &Inputs, _: &ExecContext) -> NodeResult {
    let sampling = &i.object::<Model>("model")?.sampling;
    let percent = i.float("sampling_percent")?;
    let sigma = match (i.boolean("return_actual_sigma")?, percent) {
        (true, 0.0) => sampling.sigma_max(),
        (true, 1.0) => sampling.sigma_min(),
        _ => sampling.percent_to_sigma(percent),
    };
    Ok(NodeOutput::one(Value::Float(sigma)))
}

/// A schedule from a table of noise levels keyed by the `model_type` input.
fn from_levels(i: &Inputs, table: &[(&str, &[f64])]) -> NodeResult {
    let model_type = i.string("model_type")?;
    let Some((_, levels)) = table.iter().find(|(name, _)| *name == model_type) else {
        return Err(NodeError::new("KeyError", format!("'{model_type}'")));
    };
    sigmas_out(schedulers::from_noise_levels(
        levels,
        steps(i)?,
        i.float("denoise")?,
    ))
}

fn align_your_steps(i: &Inputs, _: &ExecContext) -> NodeResult {
    from_levels(i, &ALIGN_YOUR_STEPS)
}

fn optimal_steps(i: &Inputs, _: &ExecContext) -> NodeResult {
    from_levels(i, &OPTIMAL_STEPS)
}

pub fn register(r: &mut Registry) {
    let node = |name: &str, category: &str, f: NodeFunction| {
        NodeDef::builtin(name, Style::V3, name, category, f)
            .module("comfy_extras.nodes_custom_sampler")
    };
    let schedule = |name: &str, f: NodeFunction| node(name, "model/sampling/schedulers", f);
    r.add(
        sigma_range_inputs(schedule("PolyexponentialScheduler", polyexponential))
            .input(unrounded_float(
                InputDef::float("rho").advanced(),
                1.0,
                0.0,
                100.0,
                0.01,
            ))
            .output("SIGMAS"),
    );
    r.add(
        sigma_range_inputs(schedule("LaplaceScheduler", laplace))
            .input(unrounded_float(
                InputDef::float("mu").advanced(),
                0.0,
                -10.0,
                10.0,
                0.1,
            ))
            .input(unrounded_float(
                InputDef::float("beta").advanced(),
                0.5,
                0.0,
                10.0,
                0.1,
            ))
            .output("SIGMAS"),
    );
    r.add(
        schedule("VPScheduler", vp)
            .input(InputDef::int("steps").default(20).min(1).max(10000))
            .input(unrounded_float(
                InputDef::float("beta_d").advanced(),
                19.9,
                0.0,
                5000.0,
                0.01,
            ))
            .input(unrounded_float(
                InputDef::float("beta_min").advanced(),
                0.1,
                0.0,
                5000.0,
                0.01,
            ))
            .input(unrounded_float(
                InputDef::float("eps_s").advanced(),
                0.001,
                0.0,
                1.0,
                0.0001,
            ))
            .output("SIGMAS"),
    );
    let sigmas = || InputDef::new("sigmas", "SIGMAS");
    r.add(
        node("SetFirstSigma", "model/sampling/sigmas", set_first_sigma)
            .input(sigmas())
            .input(unrounded_float(
                InputDef::float("sigma"),
                136.0,
                0.0,
                20000.0,
                0.001,
            ))
            .output("SIGMAS"),
    );
    r.add(
        node(
            "ExtendIntermediateSigmas",
            "model/sampling/sigmas",
            extend_intermediate,
        )
        .aliases(&["interpolate sigmas"])
        .input(sigmas())
        .input(InputDef::int("steps").default(2).min(1).max(100))
        .input(unrounded_float(
            InputDef::float("start_at_sigma"),
            -1.0,
            -1.0,
            20000.0,
            0.01,
        ))
        .input(unrounded_float(
            InputDef::float("end_at_sigma"),
            12.0,
            0.0,
            20000.0,
            0.01,
        ))
        .input(InputDef::combo("spacing", &["linear", "cosine", "sine"]))
        .output("SIGMAS"),
    );
    r.add(
        node(
            "SamplingPercentToSigma",
            "model/sampling/sigmas",
            sampling_percent_to_sigma,
        )
        .input(InputDef::new("model", "MODEL"))
        .input(
            InputDef::float("sampling_percent")
                .default_float(0.0)
                .min_float(0.0)
                .max_float(1.0)
                .step_float(0.0001),
        )
        .input(
            InputDef::boolean("return_actual_sigma")
                .tooltip(
                    "Return the actual sigma value instead of the value used for interval \
                     checks.\nThis only affects results at 0.0 and 1.0.",
                )
                .default(false),
        )
        .named_output("FLOAT", "sigma_value"),
    );
    r.add(
        NodeDef::builtin(
            "AlignYourStepsScheduler",
            Style::V3,
            "AlignYourStepsScheduler",
            "model/sampling/schedulers",
            align_your_steps,
        )
        .module("comfy_extras.nodes_align_your_steps")
        .aliases(&["AYS scheduler"])
        .input(InputDef::combo("model_type", &["SD1", "SDXL", "SVD"]))
        .input(InputDef::int("steps").default(10).min(1).max(10000))
        .input(denoise_input())
        .output("SIGMAS"),
    );
    r.add(
        NodeDef::builtin(
            "OptimalStepsScheduler",
            Style::V3,
            "OptimalStepsScheduler",
            "model/sampling/schedulers",
            optimal_steps,
        )
        .module("comfy_extras.nodes_optimalsteps")
        .input(InputDef::combo("model_type", &["FLUX", "Wan", "Chroma"]))
        .input(InputDef::int("steps").default(20).min(3).max(1000))
        .input(denoise_input())
        .output("SIGMAS"),
    );
}
