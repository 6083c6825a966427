//! The Sampler* nodes (`comfy_extras/nodes_custom_sampler.py`, `nodes_advanced_samplers.py`):
//! each picks a k-diffusion sampler and sets its options for SamplerCustom(Advanced).

use super::sampling::unrounded_float;
use crate::engine::context::ExecContext;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeError, NodeFunction, NodeOutput};
use crate::engine::node::{NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::sampling::model::{Model, SamplerChoice};
use crate::sampling::sampler_options::{
    DpmAdaptiveOptions, ErSdeOptions, LcmNoise, NoiseScaler, SaSolverOptions, SamplerOptions,
    TauInterval,
};
use crate::sampling::samplers::EULER_CFG_PP_ALTERNATIVE;
use crate::sampling::seeds::Phi;

fn sampler(name: &str, options: SamplerOptions) -> NodeResult {
    Ok(NodeOutput::one(Value::object(SamplerChoice::KSampler {
        name: name.to_string(),
        options: Box::new(options),
    })))
}

/// `eta` and `s_noise`, the options most of these nodes set.
fn noise_options(i: &Inputs) -> Result<SamplerOptions, NodeError> {
    Ok(SamplerOptions {
        eta: Some(i.float("eta")?),
        s_noise: Some(i.float("s_noise")?),
        ..SamplerOptions::default()
    })
}

/// The `_gpu` variant grows its Brownian tree on the sampling device.
fn on_noise_device(name: &str, i: &Inputs) -> Result<String, NodeError> {
    Ok(match i.string("noise_device")?.as_str() {
        "cpu" => name.to_string(),
        _ => format!("{name}_gpu"),
    })
}

fn euler_ancestral(i: &Inputs, _: &ExecContext) -> NodeResult {
    sampler("euler_ancestral", noise_options(i)?)
}

fn euler_ancestral_cfg_pp(i: &Inputs, _: &ExecContext) -> NodeResult {
    sampler("euler_ancestral_cfg_pp", noise_options(i)?)
}

fn lms(i: &Inputs, _: &ExecContext) -> NodeResult {
    let options = SamplerOptions {
        order: Some(i.int("order")?.max(1) as usize),
        ..SamplerOptions::default()
    };
    sampler("lms", options)
}

fn dpmpp_3m_sde(i: &Inputs, _: &ExecContext) -> NodeResult {
    sampler(&on_noise_device("dpmpp_3m_sde", i)?, noise_options(i)?)
}

fn dpmpp_2m_sde(i: &Inputs, _: &ExecContext) -> NodeResult {
    let options = SamplerOptions {
        heun: Some(i.string("solver_type")? == "heun"),
        ..noise_options(i)?
    };
    sampler(&on_noise_device("dpmpp_2m_sde", i)?, options)
}

fn dpmpp_sde(i: &Inputs, _: &ExecContext) -> NodeResult {
    let options = SamplerOptions {
        r: Some(i.float("r")?),
        ..noise_options(i)?
    };
    sampler(&on_noise_device("dpmpp_sde", i)?, options)
}

fn dpmpp_2s_ancestral(i: &Inputs, _: &ExecContext) -> NodeResult {
    sampler("dpmpp_2s_ancestral", noise_options(i)?)
}

fn dpm_adaptive(i: &Inputs, _: &ExecContext) -> NodeResult {
    let options = SamplerOptions {
        dpm_adaptive: Some(DpmAdaptiveOptions {
            order: i.int("order")?.clamp(2, 3) as usize,
            rtol: i.float("rtol")?,
            atol: i.float("atol")?,
            h_init: i.float("h_init")?,
            pcoeff: i.float("pcoeff")?,
            icoeff: i.float("icoeff")?,
            dcoeff: i.float("dcoeff")?,
            accept_safety: i.float("accept_safety")?,
        }),
        ..noise_options(i)?
    };
    sampler("dpm_adaptive", options)
}

fn er_sde(i: &Inputs, _: &ExecContext) -> NodeResult {
    let (eta, mut s_noise) = (i.float("eta")?, i.float("s_noise")?);
    let scaler = match i.string("solver_type")?.as_str() {
        _ if eta == 0.0 => NoiseScaler::Ode,
        "ER-SDE" => NoiseScaler::ErSde { eta },
        "Reverse-time SDE" => NoiseScaler::ReverseTime { eta },
        _ => NoiseScaler::Ode,
    };
    // The ODE injects no noise at all.
    if scaler == NoiseScaler::Ode {
        s_noise = 0.0;
    }
    let options = SamplerOptions {
        s_noise: Some(s_noise),
        er_sde: Some(ErSdeOptions {
            scaler,
            max_stage: i.int("max_stage")?.clamp(1, 3) as usize,
        }),
        ..SamplerOptions::default()
    };
    sampler("er_sde", options)
}

fn sa_solver(i: &Inputs, _: &ExecContext) -> NodeResult {
    let model = i.object::<Model>("model")?;
    let tau = TauInterval {
        start_sigma: model
            .sampling
            .percent_to_sigma(i.float("sde_start_percent")?),
        end_sigma: model.sampling.percent_to_sigma(i.float("sde_end_percent")?),
        eta: i.float("eta")?,
    };
    let options = SamplerOptions {
        s_noise: Some(i.float("s_noise")?),
        sa_solver: Some(SaSolverOptions {
            tau: Some(tau),
            predictor_order: i.int("predictor_order")?.clamp(1, 6) as usize,
            corrector_order: i.int("corrector_order")?.clamp(0, 6) as usize,
            pece: i.boolean("use_pece")?,
            simple_order_2: i.boolean("simple_order_2")?,
        }),
        ..SamplerOptions::default()
    };
    sampler("sa_solver", options)
}

fn seeds_2(i: &Inputs, _: &ExecContext) -> NodeResult {
    let options = SamplerOptions {
        r: Some(i.float("r")?),
        phi: Some(match i.string("solver_type")?.as_str() {
            "phi_2" => Phi::Two,
            _ => Phi::One,
        }),
        ..noise_options(i)?
    };
    sampler("seeds_2", options)
}

fn lcm(i: &Inputs, _: &ExecContext) -> NodeResult {
    let options = SamplerOptions {
        s_noise: Some(i.float("s_noise")?),
        lcm: Some(LcmNoise {
            s_noise_end: i.float("s_noise_end")?,
            noise_clip_std: i.float("noise_clip_std")?,
        }),
        ..SamplerOptions::default()
    };
    sampler("lcm", options)
}

fn euler_cfg_pp(i: &Inputs, _: &ExecContext) -> NodeResult {
    let name = match i.string("version")?.as_str() {
        "alternative" => EULER_CFG_PP_ALTERNATIVE,
        _ => "euler_cfg_pp",
    };
    sampler(name, SamplerOptions::default())
}

/// These nodes' float widgets: step 0.01, not rounded.
fn float_in(def: InputDef, default: f64, min: f64, max: f64) -> InputDef {
    unrounded_float(def, default, min, max, 0.01)
}

fn advanced_float(name: &str, default: f64, min: f64, max: f64) -> InputDef {
    float_in(InputDef::float(name).advanced(), default, min, max)
}

fn noise_device() -> InputDef {
    InputDef::combo("noise_device", &["gpu", "cpu"]).advanced()
}

pub fn register(r: &mut Registry) {
    let node = |name: &str, f: NodeFunction| {
        NodeDef::builtin(name, Style::V3, name, "model/sampling/samplers", f)
            .module("comfy_extras.nodes_custom_sampler")
    };
    let eta = || advanced_float("eta", 1.0, 0.0, 100.0);
    let s_noise = || advanced_float("s_noise", 1.0, 0.0, 100.0);
    r.add(
        node("SamplerEulerAncestral", euler_ancestral)
            .input(eta())
            .input(s_noise())
            .output("SAMPLER"),
    );
    r.add(
        node("SamplerEulerAncestralCFGPP", euler_ancestral_cfg_pp)
            .display("SamplerEulerAncestralCFG++")
            .input(float_in(InputDef::float("eta"), 1.0, 0.0, 1.0))
            .input(float_in(InputDef::float("s_noise"), 1.0, 0.0, 10.0))
            .output("SAMPLER"),
    );
    r.add(
        node("SamplerLMS", lms)
            .input(InputDef::int("order").advanced().default(4).min(1).max(100))
            .output("SAMPLER"),
    );
    r.add(
        node("SamplerDPMPP_3M_SDE", dpmpp_3m_sde)
            .input(eta())
            .input(s_noise())
            .input(noise_device())
            .output("SAMPLER"),
    );
    r.add(
        node("SamplerDPMPP_2M_SDE", dpmpp_2m_sde)
            .input(InputDef::combo("solver_type", &["midpoint", "heun"]))
            .input(eta())
            .input(s_noise())
            .input(noise_device())
            .output("SAMPLER"),
    );
    r.add(
        node("SamplerDPMPP_SDE", dpmpp_sde)
            .input(eta())
            .input(s_noise())
            .input(advanced_float("r", 0.5, 0.0, 100.0))
            .input(noise_device())
            .output("SAMPLER"),
    );
    r.add(
        node("SamplerDPMPP_2S_Ancestral", dpmpp_2s_ancestral)
            .input(float_in(InputDef::float("eta"), 1.0, 0.0, 100.0))
            .input(float_in(InputDef::float("s_noise"), 1.0, 0.0, 100.0))
            .output("SAMPLER"),
    );
    r.add(
        node("SamplerDPMAdaptative", dpm_adaptive)
            .input(InputDef::int("order").advanced().default(3).min(2).max(3))
            .input(advanced_float("rtol", 0.05, 0.0, 100.0))
            .input(advanced_float("atol", 0.0078, 0.0, 100.0))
            .input(advanced_float("h_init", 0.05, 0.0, 100.0))
            .input(advanced_float("pcoeff", 0.0, 0.0, 100.0))
            .input(advanced_float("icoeff", 1.0, 0.0, 100.0))
            .input(advanced_float("dcoeff", 0.0, 0.0, 100.0))
            .input(advanced_float("accept_safety", 0.81, 0.0, 100.0))
            .input(advanced_float("eta", 0.0, 0.0, 100.0))
            .input(s_noise())
            .output("SAMPLER"),
    );
    r.add(
        node("SamplerER_SDE", er_sde)
            .input(InputDef::combo(
                "solver_type",
                &["ER-SDE", "Reverse-time SDE", "ODE"],
            ))
            .input(
                InputDef::int("max_stage").advanced()
                    .default(3)
                    .min(1)
                    .max(3),
            )
            .input(float_in(
                InputDef::float("eta").tooltip(
                    "Stochastic strength of SDEs.\nWhen eta=0, they reduce to deterministic ODE.\n\
                     Large eta may cause invalid outputs. If this occurs, try decreasing this \
                     value.",
                ).advanced(),
                1.0,
                0.0,
                10.0,
            ))
            .input(s_noise())
            .output("SAMPLER"),
    );
    let percent = |name: &str, default: f64| {
        InputDef::float(name)
            .advanced()
            .default_float(default)
            .min_float(0.0)
            .max_float(1.0)
            .step_float(0.001)
    };
    r.add(
        node("SamplerSASolver", sa_solver)
            .aliases(&["sde"])
            .input(InputDef::new("model", "MODEL"))
            .input(advanced_float("eta", 1.0, 0.0, 10.0))
            .input(percent("sde_start_percent", 0.2))
            .input(percent("sde_end_percent", 0.8))
            .input(s_noise())
            .input(
                InputDef::int("predictor_order")
                    .advanced()
                    .default(3)
                    .min(1)
                    .max(6),
            )
            .input(
                InputDef::int("corrector_order")
                    .advanced()
                    .default(4)
                    .min(0)
                    .max(6),
            )
            .input(InputDef::boolean("use_pece").advanced())
            .input(InputDef::boolean("simple_order_2").advanced())
            .output("SAMPLER"),
    );
    r.add(
        node("SamplerSEEDS2", seeds_2)
            .aliases(&["sde", "exp heun"])
            .description(
                "This sampler node can represent multiple samplers:\n\nseeds_2\n- default \
                 setting\n\nexp_heun_2_x0\n- solver_type=phi_2, r=1.0, eta=0.0\n\n\
                 exp_heun_2_x0_sde\n- solver_type=phi_2, r=1.0, eta=1.0, s_noise=1.0",
            )
            .input(InputDef::combo("solver_type", &["phi_1", "phi_2"]))
            .input(float_in(
                InputDef::float("eta")
                    .tooltip("Stochastic strength")
                    .advanced(),
                1.0,
                0.0,
                100.0,
            ))
            .input(float_in(
                InputDef::float("s_noise")
                    .tooltip("SDE noise multiplier")
                    .advanced(),
                1.0,
                0.0,
                100.0,
            ))
            .input(float_in(
                InputDef::float("r")
                    .tooltip("Relative step size for the intermediate stage (c2 node)")
                    .advanced(),
                0.5,
                0.01,
                1.0,
            ))
            .output("SAMPLER"),
    );
    let advanced_node = |name: &str, f: NodeFunction| {
        NodeDef::builtin(name, Style::V3, name, "model/sampling/samplers", f)
            .module("comfy_extras.nodes_advanced_samplers")
    };
    let lcm_noise = |name: &str, default: f64, max: f64, tooltip: &str| {
        InputDef::float(name)
            .tooltip(tooltip)
            .default_float(default)
            .min_float(0.0)
            .max_float(max)
            .step_float(0.01)
    };
    r.add(
        advanced_node("SamplerLCM", lcm)
            .description(
                "LCM sampler with tunable per-step noise. s_noise is a multiplier on the \
                 model's training noise scale",
            )
            .input(lcm_noise(
                "s_noise",
                1.0,
                64.0,
                "Per-step noise multiplier at the first step (1.0 = match training).",
            ))
            .input(lcm_noise(
                "s_noise_end",
                1.0,
                64.0,
                "Per-step noise multiplier at the last step. Set equal to s_noise for a \
                 constant schedule.",
            ))
            .input(lcm_noise(
                "noise_clip_std",
                0.0,
                10.0,
                "Clamp per-step noise to +/- N*std. 0 disables.",
            ))
            .output("SAMPLER"),
    );
    let mut cfg_pp = advanced_node("SamplerEulerCFGpp", euler_cfg_pp)
        .display("SamplerEulerCFG++")
        .category("experimental")
        .input(InputDef::combo("version", &["regular", "alternative"]).advanced())
        .output("SAMPLER");
    cfg_pp.experimental = true;
    r.add(cfg_pp);
}
