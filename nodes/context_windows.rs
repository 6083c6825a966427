//! Context-window nodes (`comfy_extras/nodes_context_windows.py`): ContextWindowsManual and
//! its Wan and LTXV forms, which take lengths in video frames.

use std::sync::Arc;

use serde_json::json;

use crate::engine::context::ExecContext;
use crate::engine::node::{
    InputDef, Inputs, NodeDef, NodeError, NodeOutput, NodeResult, Style, MAX_RESOLUTION,
};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::sampling::context_windows::fuse::Fuse;
use crate::sampling::context_windows::schedules::{Layout, Schedule};
use crate::sampling::context_windows::{parse_indices, ContextWindows};
use crate::sampling::model::Model;

/// ContextWindowsManual's settings, in latent frames.
struct Settings {
    length: i64,
    overlap: i64,
    dim: i64,
    cond_retain: String,
    latent_retain: String,
    causal_fix: bool,
}

/// The model with a context-window handler (ContextWindowsManualNode.execute).
fn with_windows(i: &Inputs, s: Settings) -> NodeResult {
    let value = |e: anyhow::Error| NodeError::value(e.to_string());
    let layout = Layout {
        schedule: Schedule::parse(&i.string("context_schedule")?).map_err(value)?,
        length: s.length,
        overlap: s.overlap,
        stride: i.int("context_stride")?,
        closed_loop: i.boolean("closed_loop")?,
    };
    let windows = ContextWindows::new(
        layout,
        Fuse::parse(&i.string("fuse_method")?).map_err(value)?,
        s.dim,
        i.boolean("freenoise")?,
        parse_indices(&s.cond_retain).map_err(value)?,
        parse_indices(&s.latent_retain).map_err(value)?,
        optional_flag(i, "split_conds_to_windows", false)?,
        s.causal_fix,
    );
    let mut model = i.object::<Model>("model")?.clone();
    model.context_windows = Some(Arc::new(windows));
    Ok(NodeOutput::one(Value::object(model)))
}

fn optional_flag(i: &Inputs, name: &str, default: bool) -> Result<bool, NodeError> {
    match i.get(name) {
        Some(_) => i.boolean(name),
        None => Ok(default),
    }
}

fn optional_text(i: &Inputs, name: &str) -> Result<String, NodeError> {
    match i.get(name) {
        Some(_) => i.string(name),
        None => Ok(String::new()),
    }
}

fn manual(i: &Inputs, _: &ExecContext) -> NodeResult {
    with_windows(
        i,
        Settings {
            length: i.int("context_length")?,
            overlap: i.int("context_overlap")?,
            dim: i.int("dim")?,
            cond_retain: optional_text(i, "cond_retain_index_list")?,
            latent_retain: optional_text(i, "latent_retain_index_list")?,
            causal_fix: optional_flag(i, "causal_window_fix", true)?,
        },
    )
}

/// The Wan and LTXV forms: video frames to latent frames (`frames_per_latent` of them per
/// latent frame after the first), windows along dim 2, "retain_first_frame" as index 0.
fn video_form(i: &Inputs, frames_per_latent: i64, retain_latent_too: bool) -> NodeResult {
    let retain = if optional_flag(i, "retain_first_frame", false)? {
        "0".to_string()
    } else {
        String::new()
    };
    with_windows(
        i,
        Settings {
            length: ((i.int("context_length")? - 1).div_euclid(frames_per_latent) + 1).max(1),
            overlap: i
                .int("context_overlap")?
                .div_euclid(frames_per_latent)
                .max(0),
            dim: 2,
            latent_retain: if retain_latent_too {
                retain.clone()
            } else {
                String::new()
            },
            cond_retain: retain,
            causal_fix: true,
        },
    )
}

fn wan(i: &Inputs, _: &ExecContext) -> NodeResult {
    video_form(i, 4, false)
}

fn ltxv(i: &Inputs, _: &ExecContext) -> NodeResult {
    video_form(i, 8, true)
}

pub fn register(r: &mut Registry) {
    // V3's key order: tooltip, advanced, then the widget's own options.
    let input = |def: InputDef, tip: &str, advanced: bool| {
        let def = def.tooltip(tip);
        if advanced {
            def.advanced()
        } else {
            def
        }
    };
    let model = || {
        InputDef::new("model", "MODEL")
            .tooltip("The model to apply context windows to during sampling.")
    };
    let schedule = |default: &str| {
        input(
            InputDef::combo("context_schedule", &Schedule::NAMES),
            "Step-dependent scheduling algorithm for context windows.",
            false,
        )
        .default(default)
    };
    let stride = |advanced: bool| {
        input(
            InputDef::int("context_stride"),
            "The stride of the context window; only applicable to uniform schedules.",
            advanced,
        )
        .default(1)
        .min(1)
    };
    let closed_loop = |advanced: bool| {
        input(
            InputDef::boolean("closed_loop"),
            "Whether to close the context window loop; only applicable to looped schedules.",
            advanced,
        )
        .default(false)
    };
    let fuse = || {
        input(
            InputDef::combo("fuse_method", &Fuse::NAMES),
            "The method to use to fuse the context windows.",
            false,
        )
        .default("pyramid")
    };
    let freenoise = |default: bool, advanced: bool| {
        input(
            InputDef::boolean("freenoise"),
            "Whether to apply FreeNoise noise shuffling, improves window blending.",
            advanced,
        )
        .default(default)
    };
    let split = |advanced: bool| {
        input(
            InputDef::boolean("split_conds_to_windows"),
            "Whether to split multiple conditionings (created by ConditionCombine) to each window based on region index.",
            advanced,
        )
        .default(false)
    };
    let text = |name: &str, tip: &str| {
        input(InputDef::string(name), tip, false)
            .default("")
            .opt("multiline", json!(false))
    };
    let int = |name: &str, tip: &str| input(InputDef::int(name), tip, false);
    let retain_first = |what: &str| {
        input(
            InputDef::boolean("retain_first_frame"),
            &format!("Retain the first {what} frame in every context window (may help retain initial reference)."),
            false,
        )
        .default(false)
    };
    let output = "The model with context windows applied during sampling.";
    let node = |id: &str, display: &str, category: &str, f| {
        let mut def = NodeDef::builtin(id, Style::V3, display, category, f)
            .module("comfy_extras.nodes_context_windows");
        def.experimental = true;
        def
    };

    r.add(
        node("ContextWindowsManual", "Context Windows (Manual)", "model/patch", manual)
            .description("Manually set context windows.")
            .input(model())
            .input(int("context_length", "The length of the context window.").default(16).min(1))
            .input(int("context_overlap", "The overlap of the context window.").default(4).min(0))
            .input(schedule("standard_static"))
            .input(stride(false))
            .input(closed_loop(false))
            .input(fuse())
            .input(int("dim", "The dimension to apply the context windows to.").default(0).min(0).max(5))
            .input(freenoise(false, false))
            .input(text("cond_retain_index_list", "List of latent indices to retain in the conditioning tensors for each window. For concat-style I2V models (e.g. Wan I2V, HunyuanVideo I2V, Cosmos I2V, SVD) the encoded start image lives in the c_concat conditioning channels; setting this to '0' will retain that start image content at sub-pos 0 of every window."))
            .input(split(false))
            .input(text("latent_retain_index_list", "List of latent indices to retain in the noise latent itself for each window. Use for workflows where reference content (e.g. a start image) lives directly in the noise latent rather than in separate conditioning channels (e.g. inplace-style I2V like LTXV, AnimateDiff). Independent of cond_retain_index_list."))
            .input(input(InputDef::boolean("causal_window_fix"), "Whether to add a causal fix frame to non-0-indexed context windows.", false).default(true))
            .output("MODEL")
            .output_tooltip(output),
    );
    r.add(
        node(
            "WanContextWindowsManual",
            "Wan Context Windows",
            "model/patch/wan",
            wan,
        )
        .description("Set context windows for Wan-like models.")
        .input(model())
        .input(
            int(
                "context_length",
                "The length of the context window in real frames. Must be 4*n + 1.",
            )
            .default(81)
            .min(1)
            .max(MAX_RESOLUTION)
            .step(4),
        )
        .input(
            int(
                "context_overlap",
                "The overlap of the context window in real frames.",
            )
            .default(30)
            .min(0),
        )
        .input(schedule("standard_uniform"))
        .input(stride(true))
        .input(closed_loop(true))
        .input(fuse())
        .input(freenoise(true, true))
        .input(retain_first("I2V"))
        .input(split(true))
        .output("MODEL")
        .output_tooltip(output),
    );
    r.add(
        node(
            "LTXVContextWindows",
            "LTXV Context Windows",
            "model/patch",
            ltxv,
        )
        .description("Set context windows for LTXV-like models.")
        .input(model())
        .input(
            int(
                "context_length",
                "The length of the context window in real frames. Must be 8*n + 1.",
            )
            .default(145)
            .min(1)
            .max(MAX_RESOLUTION)
            .step(8),
        )
        .input(
            int(
                "context_overlap",
                "The overlap of the context window in real frames.",
            )
            .default(40)
            .min(0)
            .step(8),
        )
        .input(schedule("standard_uniform"))
        .input(stride(true))
        .input(closed_loop(true))
        .input(fuse())
        .input(freenoise(true, true))
        .input(retain_first("latent"))
        .input(split(true))
        .output("MODEL")
        .output_tooltip(output),
    );
}
