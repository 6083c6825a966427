//! Conditioning nodes: ConditioningZeroOut, ConditioningCombine, ConditioningAverage,
//! ConditioningConcat, ConditioningSetTimestepRange and the regional ones (ConditioningSetArea,
//! …Percentage, …Strength, ConditioningSetMask) and unCLIPConditioning.

use std::sync::Arc;

use tch::{Device, Kind, Tensor};

use crate::engine::context::ExecContext;
use crate::engine::node::{
    InputDef, Inputs, NodeDef, NodeError, NodeOutput, NodeResult, Style, MAX_RESOLUTION,
};
use crate::engine::registry::Registry;
use crate::engine::value::{SharedTensor, Value};
use crate::models::clip_vision::ClipVisionOutput;
use crate::sampling::model::{Area, CondEntry, Conditioning, UNCLIP_EMBEDS, UNCLIP_PARAMS};

fn node(
    name: &str,
    style: Style,
    category: &str,
    f: fn(&Inputs, &ExecContext) -> NodeResult,
) -> NodeDef {
    NodeDef::new(name, style, Arc::new(f)).category(category)
}

fn zero_out(i: &Inputs, _: &ExecContext) -> NodeResult {
    let cond = i.object::<Conditioning>("conditioning")?;
    let zeroed = cond
        .0
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.context = Arc::new(SharedTensor::new(e.context.zeros_like()));
            e.pooled = e
                .pooled
                .as_ref()
                .map(|p| Arc::new(SharedTensor::new(p.zeros_like())));
            e
        })
        .collect();
    Ok(NodeOutput::one(Value::object(Conditioning(zeroed))))
}

fn combine(i: &Inputs, _: &ExecContext) -> NodeResult {
    let (a, b) = (
        i.object::<Conditioning>("conditioning_1")?,
        i.object::<Conditioning>("conditioning_2")?,
    );
    Ok(NodeOutput::one(Value::object(Conditioning(
        [a.0.clone(), b.0.clone()].concat(),
    ))))
}

/// The first entry of `conditioning_from` (ComfyUI uses only that one, with a warning).
fn first_from(i: &Inputs) -> Result<CondEntry, NodeError> {
    let from = i.object::<Conditioning>("conditioning_from")?;
    if from.0.len() > 1 {
        log::warn!(
            "conditioning_from contains more than 1 cond, only the first one will actually be \
             applied to conditioning_to"
        );
    }
    from.0
        .first()
        .cloned()
        .ok_or_else(|| NodeError::new("IndexError", "list index out of range"))
}

/// `ConditioningAverage`: each entry's tokens `to · s + from · (1 − s)`, the source cut or
/// zero-padded to its length; pooled outputs mixed alike (or the source's taken).
fn average(i: &Inputs, _: &ExecContext) -> NodeResult {
    let from = first_from(i)?;
    let strength = i.float("conditioning_to_strength")?;
    let entries = i
        .object::<Conditioning>("conditioning_to")?
        .0
        .iter()
        .map(|e| {
            let (t1, t0) = (&**e.context, &**from.context);
            let n = t1.size()[1];
            let t0 = t0.narrow(1, 0, n.min(t0.size()[1]));
            let t0 = if t0.size()[1] < n {
                t0.constant_pad_nd([0, 0, 0, n - t0.size()[1]])
            } else {
                t0
            };
            if t0.size()[2] != t1.size()[2] {
                return Err(NodeError::runtime(format!(
                    "cannot average conditionings of widths {} and {}",
                    t1.size()[2],
                    t0.size()[2]
                )));
            }
            let mut out = e.clone();
            out.context = Arc::new(SharedTensor::new(t1 * strength + t0 * (1.0 - strength)));
            let pooled_to = e.pooled.as_ref().or(from.pooled.as_ref());
            out.pooled = match (&from.pooled, pooled_to) {
                (Some(p_from), Some(p_to)) => {
                    if p_from.size() != p_to.size() {
                        return Err(NodeError::runtime("the pooled outputs' shapes differ"));
                    }
                    let mixed = &***p_to * strength + &***p_from * (1.0 - strength);
                    Some(Arc::new(SharedTensor::new(mixed)))
                }
                _ => e.pooled.clone(),
            };
            Ok(out)
        })
        .collect::<Result<Vec<_>, NodeError>>()?;
    Ok(NodeOutput::one(Value::object(Conditioning(entries))))
}

/// `ConditioningConcat`: the source's tokens after each entry's.
fn concat(i: &Inputs, _: &ExecContext) -> NodeResult {
    let from = first_from(i)?;
    let entries = i
        .object::<Conditioning>("conditioning_to")?
        .0
        .iter()
        .map(|e| {
            let joined = Tensor::f_cat(&[&**e.context, &**from.context], 1)
                .map_err(|_| NodeError::runtime("the conditionings' batch or width differ"))?;
            let mut out = e.clone();
            out.context = Arc::new(SharedTensor::new(joined));
            Ok(out)
        })
        .collect::<Result<Vec<_>, NodeError>>()?;
    Ok(NodeOutput::one(Value::object(Conditioning(entries))))
}

fn timestep_range(i: &Inputs, _: &ExecContext) -> NodeResult {
    let (start, end) = (i.float("start")?, i.float("end")?);
    let entries = i
        .object::<Conditioning>("conditioning")?
        .0
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.start_percent = start;
            e.end_percent = end;
            e
        })
        .collect();
    Ok(NodeOutput::one(Value::object(Conditioning(entries))))
}

/// Every entry with `set` applied (ComfyUI's `conditioning_set_values`).
pub(super) fn set_values(i: &Inputs, set: impl Fn(&mut CondEntry)) -> NodeResult {
    let entries = i
        .object::<Conditioning>("conditioning")?
        .0
        .iter()
        .map(|e| {
            let mut e = e.clone();
            set(&mut e);
            e
        })
        .collect();
    Ok(NodeOutput::one(Value::object(Conditioning(entries))))
}

fn set_area(i: &Inputs, _: &ExecContext) -> NodeResult {
    let cell = |name: &str| -> Result<i64, crate::engine::node::NodeError> { Ok(i.int(name)? / 8) };
    let area = vec![cell("height")?, cell("width")?, cell("y")?, cell("x")?];
    let strength = i.float("strength")?;
    set_values(i, |e| {
        e.area = Some(Area::Cells(area.clone()));
        e.strength = strength;
        e.set_area_to_bounds = false;
    })
}

fn set_area_percentage(i: &Inputs, _: &ExecContext) -> NodeResult {
    let fractions = vec![
        i.float("height")?,
        i.float("width")?,
        i.float("y")?,
        i.float("x")?,
    ];
    let strength = i.float("strength")?;
    set_values(i, |e| {
        e.area = Some(Area::Percentage(fractions.clone()));
        e.strength = strength;
        e.set_area_to_bounds = false;
    })
}

fn set_area_strength(i: &Inputs, _: &ExecContext) -> NodeResult {
    let strength = i.float("strength")?;
    set_values(i, |e| e.strength = strength)
}

fn set_mask(i: &Inputs, _: &ExecContext) -> NodeResult {
    let mask = i.tensor("mask")?;
    let mask = Arc::new(SharedTensor::new(if mask.dim() < 3 {
        mask.unsqueeze(0)
    } else {
        mask.shallow_clone()
    }));
    let bounds = i.string("set_cond_area")? != "default";
    let strength = i.float("strength")?;
    set_values(i, |e| {
        e.mask = Some(mask.clone());
        e.set_area_to_bounds = bounds;
        e.mask_strength = strength;
    })
}

fn register_regional(r: &mut Registry) {
    let cond = || InputDef::new("conditioning", "CONDITIONING");
    let strength = || {
        InputDef::float("strength")
            .default_float(1.0)
            .min_float(0.0)
            .max_float(10.0)
            .step_float(0.01)
    };
    let transform = "model/conditioning/transform";
    let pixels = |name: &str, default: i64, min: i64| {
        InputDef::int(name)
            .default(default)
            .min(min)
            .max(MAX_RESOLUTION)
            .step(8)
    };
    r.add(
        node("ConditioningSetArea", Style::V1, transform, set_area)
            .display("Conditioning (Set Area)")
            .aliases(&[
                "regional prompt",
                "area prompt",
                "spatial conditioning",
                "localized prompt",
            ])
            .input(cond())
            .input(pixels("width", 64, 64))
            .input(pixels("height", 64, 64))
            .input(pixels("x", 0, 0))
            .input(pixels("y", 0, 0))
            .input(strength())
            .output("CONDITIONING"),
    );
    // Upstream writes the minimum (and the offsets' default) as ints.
    let fraction = |name: &str, default: serde_json::Value| {
        InputDef::float(name)
            .default(default)
            .min(0)
            .max_float(1.0)
            .step_float(0.01)
    };
    r.add(
        node(
            "ConditioningSetAreaPercentage",
            Style::V1,
            transform,
            set_area_percentage,
        )
        .display("Conditioning (Set Area with Percentage)")
        .input(cond())
        .input(fraction("width", crate::pyjson::float_number(1.0)))
        .input(fraction("height", crate::pyjson::float_number(1.0)))
        .input(fraction("x", 0.into()))
        .input(fraction("y", 0.into()))
        .input(strength())
        .output("CONDITIONING"),
    );
    r.add(
        node(
            "ConditioningSetAreaStrength",
            Style::V1,
            transform,
            set_area_strength,
        )
        .display("Conditioning (Set Area Strength)")
        .input(cond())
        .input(strength())
        .output("CONDITIONING"),
    );
    r.add(
        node("ConditioningSetMask", Style::V1, transform, set_mask)
            .display("Conditioning (Set Mask)")
            .aliases(&[
                "masked prompt",
                "regional inpaint conditioning",
                "mask conditioning",
            ])
            .input(cond())
            .input(InputDef::new("mask", "MASK"))
            .input(strength())
            .input(InputDef::combo(
                "set_cond_area",
                &["default", "mask bounds"],
            ))
            .output("CONDITIONING"),
    );
}

/// A start or end percent of the sampling, as ComfyUI's range nodes take it.
pub(super) fn percent(name: &str, default: f64) -> InputDef {
    InputDef::float(name)
        .default_float(default)
        .min_float(0.0)
        .max_float(1.0)
        .step_float(0.001)
}

/// unCLIPConditioning: the images' embeddings (`image_embeds`, one row each) with the strength
/// and noise augmentation appended to every entry's unCLIP list; strength 0 leaves the
/// conditioning as it is.
fn unclip_conditioning(i: &Inputs, _: &ExecContext) -> NodeResult {
    let cond = i.object::<Conditioning>("conditioning")?;
    let strength = i.float("strength")?;
    if strength == 0.0 {
        return Ok(NodeOutput::one(Value::object(cond.clone())));
    }
    let vision = i.object::<ClipVisionOutput>("clip_vision_output")?;
    let embeds = vision.image_embeds.to_kind(Kind::Float);
    let embeds = embeds.reshape([-1, *embeds.size().last().unwrap_or(&1)]);
    let rows = embeds.size()[0];
    let params = Tensor::from_slice(&[strength as f32, i.float("noise_augmentation")? as f32])
        .view([1, 2])
        .repeat([rows, 1]);
    let appended = cond
        .0
        .iter()
        .map(|entry| {
            let joined = |key: &str, new: &Tensor| match entry.extra(key) {
                Some(old) => Tensor::cat(&[old.to_device(Device::Cpu), new.shallow_clone()], 0),
                None => new.shallow_clone(),
            };
            let (embeds, params) = (
                joined(UNCLIP_EMBEDS, &embeds),
                joined(UNCLIP_PARAMS, &params),
            );
            entry
                .clone()
                .with_extra(UNCLIP_EMBEDS, embeds)
                .with_extra(UNCLIP_PARAMS, params)
        })
        .collect();
    Ok(NodeOutput::one(Value::object(Conditioning(appended))))
}

pub fn register(r: &mut Registry) {
    register_regional(r);
    r.add(
        node(
            "unCLIPConditioning",
            Style::V1,
            "model/conditioning",
            unclip_conditioning,
        )
        .input(InputDef::new("conditioning", "CONDITIONING"))
        .input(InputDef::new("clip_vision_output", "CLIP_VISION_OUTPUT"))
        .input(
            InputDef::float("strength")
                .default_float(1.0)
                .min_float(-10.0)
                .max_float(10.0)
                .step_float(0.01),
        )
        .input(
            InputDef::float("noise_augmentation")
                .default_float(0.0)
                .min_float(0.0)
                .max_float(1.0)
                .step_float(0.01),
        )
        .output("CONDITIONING"),
    );
    let cond = |name: &str| InputDef::new(name, "CONDITIONING");
    r.add(
        node(
            "ConditioningZeroOut",
            Style::V1,
            "model/conditioning/transform",
            zero_out,
        )
        .display("Conditioning Zero Out")
        .aliases(&["null conditioning", "clear conditioning"])
        .input(cond("conditioning"))
        .output("CONDITIONING"),
    );
    r.add(
        node(
            "ConditioningAverage",
            Style::V1,
            "model/conditioning/transform",
            average,
        )
        .display("Conditioning (Average)")
        .aliases(&[
            "blend prompts",
            "interpolate conditioning",
            "mix prompts",
            "style fusion",
            "weighted blend",
        ])
        .input(cond("conditioning_to"))
        .input(cond("conditioning_from"))
        .input(
            InputDef::float("conditioning_to_strength")
                .default_float(1.0)
                .min_float(0.0)
                .max_float(1.0)
                .step_float(0.01),
        )
        .output("CONDITIONING"),
    );
    r.add(
        node(
            "ConditioningConcat",
            Style::V1,
            "model/conditioning/transform",
            concat,
        )
        .display("Conditioning (Concat)")
        .input(cond("conditioning_to"))
        .input(cond("conditioning_from"))
        .output("CONDITIONING"),
    );
    r.add(
        node(
            "ConditioningCombine",
            Style::V1,
            "model/conditioning/transform",
            combine,
        )
        .display("Conditioning (Combine)")
        .essentials("Image Generation")
        .aliases(&[
            "combine",
            "merge conditioning",
            "combine prompts",
            "merge prompts",
            "mix prompts",
            "add prompt",
        ])
        .input(cond("conditioning_1"))
        .input(cond("conditioning_2"))
        .output("CONDITIONING"),
    );
    r.add(
        node(
            "ConditioningSetTimestepRange",
            Style::V1,
            "model/conditioning/transform",
            timestep_range,
        )
        .input(cond("conditioning"))
        .input(percent("start", 0.0))
        .input(percent("end", 1.0))
        .output("CONDITIONING"),
    );
}
