//! Latent arithmetic (`comfy_extras/nodes_latent.py`): LatentAdd, LatentSubtract,
//! LatentMultiply, LatentInterpolate and LatentBatchSeedBehavior.

use serde_json::json;
use tch::Tensor;

use super::latent::{out, resized_like};
use crate::engine::context::ExecContext;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeError, NodeFunction};
use crate::engine::node::{NodeResult, Style};
use crate::engine::registry::Registry;
use crate::sampling::model::{repeat_to_batch, Latent};

/// ComfyUI's `reshape_latent_to`: `latent` resized to `target`'s frame size, then repeated to
/// its batch.
fn reshape_latent_to(target: &Tensor, latent: &Tensor) -> Result<Tensor, NodeError> {
    let resized = resized_like(target, latent)?;
    Ok(repeat_to_batch(&resized, target.size()[0]))
}

/// `samples1 op samples2`, the second reshaped to the first; the first's other keys kept.
fn combine(i: &Inputs, op: fn(&Tensor, &Tensor) -> Result<Tensor, tch::TchError>) -> NodeResult {
    let first = i.object::<Latent>("samples1")?;
    let second = reshape_latent_to(&first.samples, &i.object::<Latent>("samples2")?.samples)?;
    out(first.with_samples(op(&first.samples, &second)?))
}

fn latent_add(i: &Inputs, _: &ExecContext) -> NodeResult {
    combine(i, Tensor::f_add)
}

fn latent_subtract(i: &Inputs, _: &ExecContext) -> NodeResult {
    combine(i, Tensor::f_sub)
}

fn latent_multiply(i: &Inputs, _: &ExecContext) -> NodeResult {
    let latent = i.object::<Latent>("samples")?;
    let samples: &Tensor = &latent.samples;
    out(latent.with_samples(samples * i.float("multiplier")?))
}

/// Interpolates direction and magnitude apart: both latents normalised over the channels,
/// mixed by `ratio`, renormalised, then scaled by the mixed magnitudes. The norms drop the
/// channel axis and broadcast from the right, as in ComfyUI (so batches only line up when
/// there is one item).
fn latent_interpolate(i: &Inputs, _: &ExecContext) -> NodeResult {
    let first = i.object::<Latent>("samples1")?;
    let s1: &Tensor = &first.samples;
    let s2 = reshape_latent_to(s1, &i.object::<Latent>("samples2")?.samples)?;
    let ratio = i.float("ratio")?;
    let norm = |t: &Tensor| t.norm_scalaropt_dim(2, [1i64].as_slice(), false);
    let unit = |t: &Tensor, n: &Tensor| t.f_div(n).map(|u| u.nan_to_num(None, None, None));
    let (m1, m2) = (norm(s1), norm(&s2));
    let mixed = unit(s1, &m1)? * ratio + unit(&s2, &m2)? * (1.0 - ratio);
    let direction = unit(&mixed, &norm(&mixed))?;
    let magnitude = m1 * ratio + m2 * (1.0 - ratio);
    out(first.with_samples(direction.f_mul(&magnitude)?))
}

/// "fixed" gives every item the first item's seed index (0 without one), so each gets the
/// same noise; "random" drops the indices.
fn latent_batch_seed_behavior(i: &Inputs, _: &ExecContext) -> NodeResult {
    let latent = i.object::<Latent>("samples")?;
    let batch = latent.samples.size()[0];
    let batch_index = match i.string("seed_behavior")?.as_str() {
        "random" => None,
        _ => {
            let first = latent.batch_index.as_ref().map_or(0, |b| b[0]);
            Some(vec![first; batch.max(0) as usize])
        }
    };
    out(Latent {
        batch_index,
        ..latent.clone()
    })
}

pub fn register(r: &mut Registry) {
    let node = |name: &str, f: NodeFunction, aliases: &[&str]| {
        let def = NodeDef::builtin(name, Style::V3, name, "model/latent/advanced", f)
            .module("comfy_extras.nodes_latent");
        if aliases.is_empty() {
            def
        } else {
            def.aliases(aliases)
        }
    };
    let pair = |d: NodeDef| {
        d.input(InputDef::new("samples1", "LATENT"))
            .input(InputDef::new("samples2", "LATENT"))
    };
    r.add(
        pair(node(
            "LatentAdd",
            latent_add,
            &["combine latents", "sum latents"],
        ))
        .output("LATENT"),
    );
    r.add(
        pair(node(
            "LatentSubtract",
            latent_subtract,
            &["difference latent", "remove features"],
        ))
        .output("LATENT"),
    );
    r.add(
        node(
            "LatentMultiply",
            latent_multiply,
            &["scale latent", "amplify latent", "latent gain"],
        )
        .input(InputDef::new("samples", "LATENT"))
        .input(
            InputDef::float("multiplier")
                .default_float(1.0)
                .min_float(-10.0)
                .max_float(10.0)
                .step_float(0.01),
        )
        .output("LATENT"),
    );
    r.add(
        pair(node(
            "LatentInterpolate",
            latent_interpolate,
            &["blend latent", "mix latent", "lerp latent", "transition"],
        ))
        .input(
            InputDef::float("ratio")
                .default_float(1.0)
                .min_float(0.0)
                .max_float(1.0)
                .step_float(0.01),
        )
        .output("LATENT"),
    );
    r.add(
        node("LatentBatchSeedBehavior", latent_batch_seed_behavior, &[])
            .input(InputDef::new("samples", "LATENT"))
            .input(
                InputDef::combo("seed_behavior", &["random", "fixed"])
                    .opt("default", json!("fixed")),
            )
            .output("LATENT"),
    );
}
