//! StyleModelLoader and StyleModelApply (`nodes.py`): FLUX.1 Redux's image tokens appended to a
//! prompt's text tokens.

use std::sync::Arc;

use serde_json::json;
use tch::{Device, Tensor};

use super::loaders::{files, model_file};
use crate::engine::context::ExecContext;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeError, NodeOutput, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::{SharedTensor, Value};
use crate::models::clip_vision::ClipVisionOutput;
use crate::models::flux::redux::Redux;
use crate::sampling::model::{repeat_to_batch, Conditioning};

fn style_model_loader(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let path = model_file(ctx, "style_models", &i.string("style_model_name")?)?;
    Ok(NodeOutput::one(Value::object(Arc::new(Redux::open(
        &path,
    )?))))
}

/// The images' tokens, flattened into one sequence (`flatten(0, 1)`), scaled by the strength
/// under `multiply` and appended to every entry's text. `attn_bias` at strength 1 appends them
/// unscaled and unmasked, as ComfyUI does; other strengths need an attention mask the models
/// here do not take yet.
fn style_model_apply(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let cond = i.object::<Conditioning>("conditioning")?;
    let redux = i.object::<Arc<Redux>>("style_model")?;
    let vision = i.object::<ClipVisionOutput>("clip_vision_output")?;
    let strength = i.float("strength")?;
    let multiply = i.string("strength_type")? == "multiply";
    if !multiply && strength != 1.0 {
        return Err(NodeError::value(
            "StyleModelApply: strength_type attn_bias with a strength other than 1 (an attention \
             mask on the image tokens) is not supported yet; use multiply",
        ));
    }
    if cond.0.iter().any(|e| e.extra("attention_mask").is_some()) {
        return Err(NodeError::value(
            "StyleModelApply: conditioning with an attention mask is not supported yet",
        ));
    }
    let tokens = redux
        .tokens(&vision.last_hidden_state, ctx.env.models.device())?
        .flatten(0, 1)
        .unsqueeze(0)
        .to_device(Device::Cpu);
    let tokens = if multiply { tokens * strength } else { tokens };
    let entries = cond
        .0
        .iter()
        .map(|entry| {
            let text = &entry.context;
            if text.size().last() != tokens.size().last() {
                return Err(NodeError::value(format!(
                    "StyleModelApply: the style model's tokens are {:?} wide and the prompt's \
                     {:?}; FLUX Redux goes with FLUX's T5-XXL prompts",
                    tokens.size().last(),
                    text.size().last()
                )));
            }
            let appended = repeat_to_batch(&tokens, text.size()[0]).to_kind(text.kind());
            let mut entry = entry.clone();
            entry.context = Arc::new(SharedTensor::new(Tensor::cat(
                &[text.to_device(Device::Cpu), appended],
                1,
            )));
            Ok(entry)
        })
        .collect::<Result<_, NodeError>>()?;
    Ok(NodeOutput::one(Value::object(Conditioning(entries))))
}

pub fn register(r: &mut Registry) {
    r.add(
        NodeDef::builtin(
            "StyleModelLoader",
            Style::V1,
            "Load Style Model",
            "model/loaders",
            style_model_loader,
        )
        .input(InputDef::combo_dynamic(
            "style_model_name",
            files("style_models"),
        ))
        .output("STYLE_MODEL"),
    );
    r.add(
        NodeDef::builtin(
            "StyleModelApply",
            Style::V1,
            "Apply Style Model",
            "model/conditioning",
            style_model_apply,
        )
        .aliases(&["style transfer"])
        .input(InputDef::new("conditioning", "CONDITIONING"))
        .input(InputDef::new("style_model", "STYLE_MODEL"))
        .input(InputDef::new("clip_vision_output", "CLIP_VISION_OUTPUT"))
        .input(
            InputDef::float("strength")
                .opt("default", json!(1.0))
                .opt("min", json!(0.0))
                .opt("max", json!(10.0))
                .opt("step", json!(0.001)),
        )
        .input(InputDef::combo("strength_type", &["multiply", "attn_bias"]))
        .output("CONDITIONING"),
    );
}
