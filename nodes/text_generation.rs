//! Text generation (`comfy_extras/nodes_textgen.py`): TextGenerate continues a prompt with the
//! CLIP's language model, and TextGenerateLTX2Prompt asks it, in LTX-2's chat format with
//! Lightricks' system prompts, to expand a short prompt into an LTX-2 video prompt.

use std::sync::Arc;

use crate::engine::context::ExecContext;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeError, NodeOutput, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::models::text_encoder::TextEncoder;
use crate::models::text_generation::{Decoding, Sampling};
use crate::pystr;

use super::media_save::with_progress;
use super::sampling::seed_of;

/// Lightricks' system prompts for LTX-2 (Gemma 3), text-to-video and image-to-video.
const LTX2_T2V_SYSTEM_PROMPT: &str = include_str!("ltx2_prompts/t2v_system.txt");
const LTX2_I2V_SYSTEM_PROMPT: &str = include_str!("ltx2_prompts/i2v_system.txt");

/// The `sampling_mode` DynamicCombo: "on" samples with its settings, "off" takes the argmax.
fn decoding(i: &Inputs) -> Result<Decoding, NodeError> {
    if i.string("sampling_mode")? != "on" {
        return Ok(Decoding::Greedy);
    }
    Ok(Decoding::Sampled(Sampling {
        temperature: i.float("sampling_mode.temperature")?,
        top_k: i.int("sampling_mode.top_k")?,
        top_p: i.float("sampling_mode.top_p")?,
        min_p: i.float("sampling_mode.min_p")?,
        repetition_penalty: i.float("sampling_mode.repetition_penalty")?,
        presence_penalty: match i.get("sampling_mode.presence_penalty") {
            Some(_) => i.float("sampling_mode.presence_penalty")?,
            None => 0.0,
        },
        seed: seed_of(i, "sampling_mode.seed")?,
    }))
}

/// TextGenerate's generation of `prompt` as the node's output text. Gemma 3's tokenizer takes
/// the image and, as in ComfyUI, ignores video and audio.
fn generated_text(i: &Inputs, ctx: &ExecContext, prompt: &str) -> Result<String, NodeError> {
    let image = i.opt_tensor("image");
    let clip = i.object::<Arc<TextEncoder>>("clip")?;
    let template = match i.get("use_default_template") {
        Some(_) => i.boolean("use_default_template")?,
        None => true,
    };
    let max_length = i.int("max_length")?.max(1) as usize;
    let decoding = decoding(i)?;
    with_progress(ctx, |step| {
        clip.generate(prompt, image, template, max_length, &decoding, step)
    })
}

fn text_generate(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let text = generated_text(i, ctx, &i.string("prompt")?)?;
    Ok(NodeOutput::one(Value::Str(text)))
}

/// TextGenerateLTX2Prompt with Gemma 3: the prompt inside LTX-2's chat turns; reasoning
/// (`<think>…`) is dropped, and an empty answer gives the prompt back.
fn ltx2_prompt(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let prompt = i.string("prompt")?;
    let image = i.get("image").is_some();
    let (system, media) = if image {
        (LTX2_I2V_SYSTEM_PROMPT, "\n<image_soft_token>\n")
    } else {
        (LTX2_T2V_SYSTEM_PROMPT, "")
    };
    let formatted = format!(
        "<start_of_turn>system\n{system}<end_of_turn>\n<start_of_turn>user\n{media}\nUser Raw \
         Input Prompt: {prompt}.<end_of_turn>\n<start_of_turn>model\n"
    );
    let text = without_reasoning(&generated_text(i, ctx, &formatted)?);
    let text = pystr::strip(&text, true, true);
    let out = if text.is_empty() { prompt } else { text.into() };
    Ok(NodeOutput::one(Value::Str(out)))
}

/// `re.sub(r"<think>.*?(?:</think>|$)", "", text, flags=re.DOTALL)`: each reasoning block
/// removed, one left open by the length limit through the end.
fn without_reasoning(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("<think>") {
        out.push_str(&rest[..open]);
        let inside = &rest[open + "<think>".len()..];
        rest = match inside.find("</think>") {
            Some(close) => &inside[close + "</think>".len()..],
            // `$` also matches before a final newline, which the caller strips anyway.
            None => "",
        };
    }
    out.push_str(rest);
    out
}

/// TextGenerate's inputs, which TextGenerateLTX2Prompt shares.
fn with_inputs(def: NodeDef) -> NodeDef {
    let on = vec![
        InputDef::float("temperature")
            .default_float(0.7)
            .min_float(0.01)
            .max_float(2.0)
            .step_float(0.000001),
        InputDef::int("top_k").default(64).min(0).max(1000),
        InputDef::float("top_p")
            .default_float(0.95)
            .min_float(0.0)
            .max_float(1.0)
            .step_float(0.01),
        InputDef::float("min_p")
            .default_float(0.05)
            .min_float(0.0)
            .max_float(1.0)
            .step_float(0.01),
        InputDef::float("repetition_penalty")
            .default_float(1.05)
            .min_float(0.0)
            .max_float(5.0)
            .step_float(0.01),
        InputDef::int("seed").default(0).min(0).max(u64::MAX),
        InputDef::float("presence_penalty")
            .optional()
            .default_float(0.0)
            .min_float(0.0)
            .max_float(5.0)
            .step_float(0.01),
    ];
    def.category("text")
        .module("comfy_extras.nodes_textgen")
        .input(InputDef::new("clip", "CLIP"))
        .input(
            InputDef::string("prompt")
                .opt("multiline", serde_json::json!(true))
                .opt("dynamicPrompts", serde_json::json!(true))
                .default(""),
        )
        .input(InputDef::new("image", "IMAGE").optional())
        .input(InputDef::new("video", "IMAGE").optional().tooltip(
            "Video frames as image batch. Assumed to be 24 FPS; subsampled to 1 FPS \
                 internally.",
        ))
        .input(InputDef::new("audio", "AUDIO").optional())
        .input(InputDef::int("max_length").default(512).min(1).max(32768))
        .input(
            InputDef::dynamic_combo("sampling_mode", vec![("on", on), ("off", vec![])])
                .opt("display_name", serde_json::json!("Sampling Mode")),
        )
        .input(
            InputDef::boolean("thinking")
                .optional()
                .default(false)
                .tooltip("Operate in thinking mode if the model supports it."),
        )
        .input(
            InputDef::boolean("use_default_template")
                .optional()
                .default(true)
                .tooltip("Use the built in system prompt/template if the model has one.")
                .advanced(),
        )
        .named_output("STRING", "generated_text")
}

pub fn register(r: &mut Registry) {
    r.add(with_inputs(
        NodeDef::new("TextGenerate", Style::V3, Arc::new(text_generate))
            .display("Generate Text")
            .aliases(&["LLM", "gemma"]),
    ));
    r.add(with_inputs(
        NodeDef::new("TextGenerateLTX2Prompt", Style::V3, Arc::new(ltx2_prompt))
            .display("Generate LTX2 Prompt")
            .aliases(&["prompt enhance", "LLM", "gemma"]),
    ));
}

#[cfg(test)]
mod tests {
    use super::without_reasoning;

    #[test]
    fn reasoning_blocks_are_dropped_like_comfyuis_regex() {
        assert_eq!(without_reasoning("a<think>x</think>b"), "ab");
        assert_eq!(without_reasoning("<think>x\n</think>b<think>y"), "b");
        assert_eq!(without_reasoning("plain"), "plain");
        assert_eq!(without_reasoning("a</think>b"), "a</think>b");
    }
}
