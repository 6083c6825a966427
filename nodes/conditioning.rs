//! Conditioning nodes: ConditioningZeroOut, ConditioningCombine, ConditioningSetTimestepRange.

use std::sync::Arc;

use crate::engine::context::ExecContext;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeOutput, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::{SharedTensor, Value};
use crate::sampling::model::Conditioning;

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

pub fn register(r: &mut Registry) {
    let cond = |name: &str| InputDef::new(name, "CONDITIONING");
    r.add(
        node(
            "ConditioningZeroOut",
            Style::V1,
            "advanced/conditioning",
            zero_out,
        )
        .input(cond("conditioning"))
        .output("CONDITIONING"),
    );
    r.add(
        node("ConditioningCombine", Style::V1, "conditioning", combine)
            .display("Conditioning (Combine)")
            .input(cond("conditioning_1"))
            .input(cond("conditioning_2"))
            .output("CONDITIONING"),
    );
    let percent = |name: &str, default: f64| {
        InputDef::float(name)
            .default_float(default)
            .min_float(0.0)
            .max_float(1.0)
            .step_float(0.001)
    };
    r.add(
        node(
            "ConditioningSetTimestepRange",
            Style::V1,
            "advanced/conditioning",
            timestep_range,
        )
        .input(cond("conditioning"))
        .input(percent("start", 0.0))
        .input(percent("end", 1.0))
        .output("CONDITIONING"),
    );
}
