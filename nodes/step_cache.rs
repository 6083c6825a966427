//! EasyCache and LazyCache (`comfy_extras/nodes_easycache.py`): model calls skipped while the
//! output is predictable from the input (`sampling::step_cache`).

use std::sync::Arc;

use super::cfg_patches::patched;
use crate::engine::context::ExecContext;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::sampling::step_cache::{CacheKind, StepCache};

fn with_cache(i: &Inputs, kind: CacheKind) -> NodeResult {
    let cache = Arc::new(StepCache::new(
        kind,
        i.float("reuse_threshold")?,
        i.float("start_percent")?,
        i.float("end_percent")?,
        i.boolean("verbose")?,
    ));
    patched(i, |m| m.step_cache = Some(cache))
}

fn easy_cache(i: &Inputs, _: &ExecContext) -> NodeResult {
    with_cache(i, CacheKind::Easy)
}

fn lazy_cache(i: &Inputs, _: &ExecContext) -> NodeResult {
    with_cache(i, CacheKind::Lazy)
}

fn cache_node(
    name: &str,
    description: &str,
    f: fn(&Inputs, &ExecContext) -> NodeResult,
) -> NodeDef {
    let float = |input: &str, default: f64, max: f64, tooltip: &str| {
        InputDef::float(input)
            .tooltip(tooltip)
            .advanced()
            .default_float(default)
            .min_float(0.0)
            .max_float(max)
            .step_float(0.01)
    };
    NodeDef::builtin(name, Style::V3, name, "advanced/debug", f)
        .display(name)
        .module("comfy_extras.nodes_easycache")
        .description(description)
        .input(InputDef::new("model", "MODEL").tooltip(&format!("The model to add {name} to.")))
        .input(float(
            "reuse_threshold",
            0.2,
            3.0,
            "The threshold for reusing cached steps.",
        ))
        .input(float(
            "start_percent",
            0.15,
            1.0,
            &format!("The relative sampling step to begin use of {name}."),
        ))
        .input(float(
            "end_percent",
            0.95,
            1.0,
            &format!("The relative sampling step to end use of {name}."),
        ))
        .input(
            InputDef::boolean("verbose")
                .tooltip("Whether to log verbose information.")
                .advanced()
                .default(false),
        )
        .output("MODEL")
        .output_tooltip(&format!("The model with {name}."))
        .experimental()
}

pub fn register(r: &mut Registry) {
    r.add(cache_node(
        "EasyCache",
        "Native EasyCache implementation.",
        easy_cache,
    ));
    r.add(cache_node(
        "LazyCache",
        "A homebrew version of EasyCache - even 'easier' version of EasyCache to implement. \
         Overall works worse than EasyCache, but better in some rare cases AND universal \
         compatibility with everything in ComfyUI.",
        lazy_cache,
    ));
}
