//! Model patches for guidance: CFGZeroStar (`comfy_extras/nodes_cfg.py`), SkipLayerGuidanceDiT
//! and SkipLayerGuidanceDiTSimple (`nodes_slg.py`), UNetTemporalAttentionMultiply
//! (`nodes_attention_multiply.py`) and DifferentialDiffusion (`nodes_differential_diffusion.py`).

use serde_json::json;

use super::cfg_patches::patched;
use crate::engine::context::ExecContext;
use crate::engine::node::{
    InputDef, Inputs, NodeDef, NodeError, NodeFunction, NodeOutput, NodeResult, Style,
};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::sampling::model::{BlockSkip, Model};
use crate::sampling::post_cfg::{CfgFunction, PostCfg, SkipLayers, UncondSkip};

fn node(name: &str, category: &str, module: &str, f: NodeFunction) -> NodeDef {
    NodeDef::builtin(name, Style::V3, name, category, f).module(module)
}

/// The model with one more post-CFG patch.
fn post_patched(i: &Inputs, patch: PostCfg) -> NodeResult {
    patched(i, |m| m.post_cfg.push(patch))
}

fn cfg_zero_star(i: &Inputs, _: &ExecContext) -> NodeResult {
    post_patched(i, PostCfg::ZeroStar)
}

/// `CFGNorm`: post-CFG, the guided estimate attenuated to the conditional one's norm; with
/// `pre_cfg`, the CFG combine itself rescaled (which can amplify).
fn cfg_norm(i: &Inputs, _: &ExecContext) -> NodeResult {
    let strength = i.float("strength")?;
    let pre = match i.get("pre_cfg") {
        Some(_) => i.boolean("pre_cfg")?,
        None => false,
    };
    if !pre {
        return post_patched(i, PostCfg::Norm { strength });
    }
    patched(i, |m| m.cfg_function = Some(CfgFunction::Norm { strength }))
}

/// The integers in a layer list ("9,10", "7, 8, 9"), as ComfyUI's `re.findall(r'\d+')` reads it.
fn layers(text: &str) -> Vec<i64> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

fn skip_layer_guidance(i: &Inputs, _: &ExecContext) -> NodeResult {
    let model = i.object::<Model>("model")?;
    let (double, single) = (
        layers(&i.string("double_layers")?),
        layers(&i.string("single_layers")?),
    );
    if double.is_empty() && single.is_empty() {
        return Ok(NodeOutput::one(Value::object(model.clone())));
    }
    let sampling = &model.sampling;
    post_patched(
        i,
        PostCfg::SkipLayers(SkipLayers {
            double,
            single,
            scale: i.float("scale")?,
            sigma_start: sampling.percent_to_sigma(i.float("start_percent")?),
            sigma_end: sampling.percent_to_sigma(i.float("end_percent")?),
            rescaling: i.float("rescaling_scale")?,
        }),
    )
}

/// SkipLayerGuidanceDiTSimple: the unconditional estimate made with the double blocks skipped
/// between the two percents (the single blocks are FLUX's, which cannot skip yet).
fn skip_layer_guidance_simple(i: &Inputs, _: &ExecContext) -> NodeResult {
    let mut model = i.object::<Model>("model")?.clone();
    let (double, single) = (
        layers(&i.string("double_layers")?),
        layers(&i.string("single_layers")?),
    );
    if double.is_empty() && single.is_empty() {
        return Ok(NodeOutput::one(Value::object(model)));
    }
    let sampling = &model.sampling;
    model.uncond_skip = Some(UncondSkip {
        double,
        sigma_start: sampling.percent_to_sigma(i.float("start_percent")?),
        sigma_end: sampling.percent_to_sigma(i.float("end_percent")?),
    });
    Ok(NodeOutput::one(Value::object(model)))
}

/// Scales the attention output weights of UNets (`attn1`/`attn2.to_out.0`, `time_stack` ones
/// apart). The DiTs have no such weights, so for them the model is unchanged, as in ComfyUI;
/// on a UNet only factors of 1 are supported yet.
fn unet_temporal_attention_multiply(i: &Inputs, _: &ExecContext) -> NodeResult {
    let model = i.object::<Model>("model")?;
    let names = [
        "self_structural",
        "self_temporal",
        "cross_structural",
        "cross_temporal",
    ];
    let scaled = names
        .iter()
        .map(|n| i.float(n))
        .collect::<Result<Vec<f64>, _>>()?
        .iter()
        .any(|f| *f != 1.0);
    if scaled && model.net.block_skip() == BlockSkip::Ignores {
        return Err(NodeError::value(
            "UNetTemporalAttentionMultiply: scaling a UNet's attention weights is not supported yet",
        ));
    }
    Ok(NodeOutput::one(Value::object(model.clone())))
}

/// DifferentialDiffusion: an inpainting mask's values become when each cell starts changing.
fn differential_diffusion(i: &Inputs, _: &ExecContext) -> NodeResult {
    let mut model = i.object::<Model>("model")?.clone();
    model.differential = Some(i.float("strength").unwrap_or(1.0));
    Ok(NodeOutput::one(Value::object(model)))
}

pub fn register(r: &mut Registry) {
    let model = || InputDef::new("model", "MODEL");
    // The skip-layer nodes' block lists.
    let layer_list = |name: &str| {
        InputDef::string(name)
            .advanced()
            .default("7, 8, 9")
            .opt("multiline", json!(false))
    };
    let float = |def: InputDef, default: f64, max: f64, step: f64| {
        def.default_float(default)
            .min_float(0.0)
            .max_float(max)
            .step_float(step)
    };
    let mut differential = NodeDef::builtin(
        "DifferentialDiffusion",
        Style::V3,
        "Differential Diffusion",
        "experimental",
        differential_diffusion,
    )
    .module("comfy_extras.nodes_differential_diffusion")
    .aliases(&["inpaint gradient", "variable denoise strength"])
    .input(model())
    .input(
        InputDef::float("strength")
            .optional()
            .default_float(1.0)
            .min_float(0.0)
            .max_float(1.0)
            .step_float(0.01),
    )
    .output("MODEL");
    differential.experimental = true;
    r.add(differential);
    r.add(
        node(
            "CFGZeroStar",
            "advanced/guidance",
            "comfy_extras.nodes_cfg",
            cfg_zero_star,
        )
        .input(model())
        .named_output("MODEL", "patched_model"),
    );
    let mut norm = node(
        "CFGNorm",
        "advanced/guidance",
        "comfy_extras.nodes_cfg",
        cfg_norm,
    )
    .input(model())
    .input(
        InputDef::float("strength")
            .default_float(1.0)
            .min_float(0.0)
            .max_float(100.0)
            .step_float(0.01),
    )
    .input(
        InputDef::boolean("pre_cfg")
            .optional()
            .tooltip(
                "If true, rescale the combined noise BEFORE the sampler's CFG combine, without \
                 clamping (can amplify). Matches the norm-scaled CFG used by models like Lens. \
                 Default false keeps the original post-CFG x0-space attenuate-only behavior.",
            )
            .default(false),
    )
    .named_output("MODEL", "patched_model");
    norm.experimental = true;
    r.add(norm);
    let mut slg = node(
        "SkipLayerGuidanceDiT",
        "advanced/guidance",
        "comfy_extras.nodes_slg",
        skip_layer_guidance,
    )
    .description("Generic version of SkipLayerGuidance node that can be used on every DiT model.")
    .input(model())
    .input(layer_list("double_layers"))
    .input(layer_list("single_layers"))
    .input(float(InputDef::float("scale"), 3.0, 10.0, 0.1))
    .input(float(
        InputDef::float("start_percent").advanced(),
        0.01,
        1.0,
        0.001,
    ))
    .input(float(
        InputDef::float("end_percent").advanced(),
        0.15,
        1.0,
        0.001,
    ))
    .input(float(InputDef::float("rescaling_scale"), 0.0, 10.0, 0.01))
    .output("MODEL");
    slg.experimental = true;
    r.add(slg);
    let mut simple = node(
        "SkipLayerGuidanceDiTSimple",
        "advanced/guidance",
        "comfy_extras.nodes_slg",
        skip_layer_guidance_simple,
    )
    .description(
        "Simple version of the SkipLayerGuidanceDiT node that only modifies the uncond pass.",
    )
    .input(model())
    .input(layer_list("double_layers"))
    .input(layer_list("single_layers"))
    .input(float(
        InputDef::float("start_percent").advanced(),
        0.0,
        1.0,
        0.001,
    ))
    .input(float(
        InputDef::float("end_percent").advanced(),
        1.0,
        1.0,
        0.001,
    ))
    .output("MODEL");
    simple.experimental = true;
    r.add(simple);
    let mut multiply = node(
        "UNetTemporalAttentionMultiply",
        "experimental/attention_experiments",
        "comfy_extras.nodes_attention_multiply",
        unet_temporal_attention_multiply,
    )
    .input(model());
    for name in [
        "self_structural",
        "self_temporal",
        "cross_structural",
        "cross_temporal",
    ] {
        multiply = multiply.input(float(InputDef::float(name).advanced(), 1.0, 10.0, 0.01));
    }
    multiply.experimental = true;
    r.add(multiply.output("MODEL"));
}

#[cfg(test)]
mod tests {
    use super::layers;

    #[test]
    fn layer_lists_read_every_integer() {
        assert_eq!(layers("9,10"), [9, 10]);
        assert_eq!(layers("7, 8, 9"), [7, 8, 9]);
        assert_eq!(layers(""), Vec::<i64>::new());
        assert_eq!(layers("a3b 12;"), [3, 12]);
    }
}
