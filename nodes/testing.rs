//! Our port of the node pack ComfyUI's own execution tests use (`tests/execution/testing_nodes`),
//! registered with `--test-nodes`: stub sources, a lazy mixer, a sleeping node with progress,
//! list outputs and a custom validator. They let the engine be tested as ComfyUI tests its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tch::{Kind, Tensor};

use crate::engine::context::ExecContext;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeError, NodeOutput, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::Value;

fn node(name: &str, f: fn(&Inputs, &ExecContext) -> NodeResult) -> NodeDef {
    NodeDef::new(name, Style::V1, Arc::new(f))
        .category("Testing/Nodes")
        .module("custom_nodes.testing-pack")
}

fn stub_image(i: &Inputs, _: &ExecContext) -> NodeResult {
    let shape = [i.int("batch_size")?, i.int("height")?, i.int("width")?, 3];
    let opts = (Kind::Float, tch::Device::Cpu);
    let t = match i.string("content")?.as_str() {
        "WHITE" => Tensor::ones(shape, opts),
        "BLACK" => Tensor::zeros(shape, opts),
        _ => Tensor::rand(shape, opts),
    };
    Ok(NodeOutput::one(Value::tensor(t)))
}

fn stub_mask(i: &Inputs, _: &ExecContext) -> NodeResult {
    let shape = [i.int("batch_size")?, i.int("height")?, i.int("width")?];
    Ok(NodeOutput::one(Value::tensor(Tensor::full(
        shape,
        i.float("value")?,
        (Kind::Float, tch::Device::Cpu),
    ))))
}

fn passthrough(i: &Inputs, _: &ExecContext) -> NodeResult {
    Ok(NodeOutput::one(
        i.get("value")
            .cloned()
            .unwrap_or(Value::Json(serde_json::Value::Null)),
    ))
}

/// Needs image1 unless the mask is all 1, image2 unless it is all 0.
fn lazy_needs(i: &Inputs, _: &ExecContext) -> Vec<String> {
    let Ok(mask) = i.tensor("mask") else {
        return Vec::new();
    };
    let (min, max) = (mask.min().double_value(&[]), mask.max().double_value(&[]));
    let mut needed = Vec::new();
    if min != 1.0 && i.get("image1").is_none() {
        needed.push("image1".to_string());
    }
    if max != 0.0 && i.get("image2").is_none() {
        needed.push("image2".to_string());
    }
    needed
}

fn lazy_mix(i: &Inputs, _: &ExecContext) -> NodeResult {
    let mask = i.tensor("mask")?;
    let (min, max) = (mask.min().double_value(&[]), mask.max().double_value(&[]));
    if max == 0.0 {
        return Ok(NodeOutput::one(Value::tensor(
            i.tensor("image1")?.shallow_clone(),
        )));
    }
    if min == 1.0 {
        return Ok(NodeOutput::one(Value::tensor(
            i.tensor("image2")?.shallow_clone(),
        )));
    }
    let (a, b) = (i.tensor("image1")?, i.tensor("image2")?);
    let m = mask.unsqueeze(-1);
    let mixed = a.f_mul(&(1.0 - &m))?.f_add(&b.f_mul(&m)?)?;
    Ok(NodeOutput::one(Value::tensor(mixed)))
}

fn sleep(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let seconds = i.float("seconds")?;
    let start = Instant::now();
    let total = Duration::from_secs_f64(seconds.max(0.0));
    let steps = (seconds * 10.0).ceil().max(1.0) as u64;
    for step in 1..=steps {
        std::thread::sleep((total / steps as u32).min(total.saturating_sub(start.elapsed())));
        ctx.progress(step, steps)?;
    }
    Ok(NodeOutput::one(
        i.get("value")
            .cloned()
            .unwrap_or(Value::Json(serde_json::Value::Null)),
    ))
}

fn make_list(i: &Inputs, _: &ExecContext) -> NodeResult {
    let items: Vec<Value> = (1..10)
        .filter_map(|n| i.get(&format!("value{n}")).cloned())
        .collect();
    Ok(NodeOutput::one(Value::List(items)))
}

fn fail(i: &Inputs, _: &ExecContext) -> NodeResult {
    Err(NodeError::runtime(format!(
        "Intentional failure: {}",
        i.string("message")?
    )))
}

fn panic_node(i: &Inputs, _: &ExecContext) -> NodeResult {
    panic!("Intentional panic: {}", i.string("message")?)
}

fn validated_float(i: &Inputs, _: &ExecContext) -> NodeResult {
    Ok(NodeOutput::one(Value::Float(i.float("value")?)))
}

pub fn register(r: &mut Registry) {
    let dims = |d: NodeDef| {
        d.input(InputDef::int("height").default(512).min(1).max(1024 * 8))
            .input(InputDef::int("width").default(512).min(1).max(1024 * 8))
            .input(InputDef::int("batch_size").default(1).min(1).max(1024 * 8))
    };
    r.add(
        dims(
            node("StubImage", stub_image)
                .input(InputDef::combo("content", &["WHITE", "BLACK", "NOISE"])),
        )
        .output("IMAGE"),
    );
    r.add(
        dims(
            node("StubMask", stub_mask).input(
                InputDef::float("value")
                    .default_float(0.5)
                    .min_float(0.0)
                    .max_float(1.0),
            ),
        )
        .output("MASK"),
    );
    r.add(
        node("StubInt", passthrough)
            .input(InputDef::int("value").default(0))
            .output("INT"),
    );
    r.add(
        node("StubFloat", passthrough)
            .input(InputDef::float("value").default_float(0.0))
            .output("FLOAT"),
    );
    r.add(
        node("TestLazyMixImages", lazy_mix)
            .input(InputDef::new("image1", "IMAGE").lazy())
            .input(InputDef::new("image2", "IMAGE").lazy())
            .input(InputDef::new("mask", "MASK"))
            .output("IMAGE")
            .lazy_check(Arc::new(lazy_needs)),
    );
    r.add(
        node("TestSleep", sleep)
            .input(InputDef::new("value", "*"))
            .input(
                InputDef::float("seconds")
                    .default_float(2.0)
                    .min_float(0.0)
                    .max_float(9999.0)
                    .step_float(0.01),
            )
            .output("*"),
    );
    let mut list = node("TestMakeListNode", make_list).input(InputDef::new("value1", "*"));
    for n in 2..10 {
        list = list.input(InputDef::new(&format!("value{n}"), "*").optional());
    }
    r.add(list.output("*").list_output());
    register_toy_model(r);
    r.add(
        node("TestFail", fail)
            .input(InputDef::string("message").default("boom"))
            .input(InputDef::new("value", "*").optional())
            .output("*"),
    );
    r.add(
        node("TestPanic", panic_node)
            .input(InputDef::string("message").default("boom"))
            .output("*"),
    );
    r.add(
        node("TestCustomValidation", validated_float)
            .input(InputDef::float("value").default_float(0.0).max_float(1.0))
            .output("FLOAT")
            .validator(
                None,
                Arc::new(|i: &Inputs, _| match i.float("value") {
                    Ok(13.0) => {
                        panic!("a validator bug (exercises exception_during_validation)")
                    }
                    Ok(v) if v > 5.0 => {
                        Err(format!("value {} is above 5", crate::pyjson::float_repr(v)))
                    }
                    _ => Ok(()),
                }),
            ),
    );
}

/// A toy network with ComfyUI's model plumbing: `out = 0.5·xc + mean(context)·cos(t/1000)`.
struct ToyNet;

impl crate::sampling::model::DiffusionNet for ToyNet {
    fn forward(
        &self,
        xc: &Tensor,
        timestep: &Tensor,
        cond: &crate::sampling::model::CondEntry,
    ) -> anyhow::Result<Tensor> {
        // Per item, so batched conditionings stay apart.
        let mean = cond
            .context
            .flatten(1, -1)
            .mean_dim(1, false, Kind::Float)
            .to_kind(xc.kind())
            .view([-1, 1, 1, 1]);
        let wave = (timestep.to_kind(xc.kind()) / 1000.0)
            .cos()
            .view([-1, 1, 1, 1]);
        Ok(xc * 0.5 + wave * mean)
    }
    fn latent_rgb(&self) -> Option<crate::sampling::model::LatentRgb> {
        // SD1.x's factors, so previews of the toy model look like ComfyUI's for SD1.x.
        Some(crate::sampling::model::LatentRgb {
            factors: vec![
                [0.3512, 0.2297, 0.3227],
                [0.3250, 0.4974, 0.2350],
                [-0.2829, 0.1762, 0.2721],
                [-0.2120, -0.2616, -0.7177],
            ],
            bias: [0.0, 0.0, 0.0],
        })
    }
}

fn toy_model(i: &Inputs, _: &ExecContext) -> NodeResult {
    use crate::sampling::model_sampling::{ModelSampling, Prediction, Schedule};
    let sampling = match i.string("prediction")?.as_str() {
        "flow" => ModelSampling::new(
            Prediction::Flow,
            Schedule::Flow {
                shift: i.float("shift")?,
                multiplier: 1000.0,
            },
        ),
        "v" => ModelSampling::sd(Prediction::V),
        _ => ModelSampling::sd(Prediction::Eps),
    };
    let model = crate::sampling::model::Model::new(Arc::new(ToyNet), Arc::new(sampling));
    Ok(NodeOutput::one(Value::object(model)))
}

fn toy_conditioning(i: &Inputs, _: &ExecContext) -> NodeResult {
    let context = Tensor::full(
        [1, 1, 4],
        i.float("value")?,
        (Kind::Float, tch::Device::Cpu),
    );
    let cond =
        crate::sampling::model::Conditioning(vec![crate::sampling::model::CondEntry::new(context)]);
    Ok(NodeOutput::one(Value::object(cond)))
}

/// The toy model and conditioning, for sampling tests without weights.
pub fn register_toy_model(r: &mut Registry) {
    r.add(
        node("TestToyModel", toy_model)
            .input(InputDef::combo("prediction", &["eps", "v", "flow"]))
            .input(
                InputDef::float("shift")
                    .default_float(3.0)
                    .min_float(0.0)
                    .max_float(100.0),
            )
            .output("MODEL"),
    );
    r.add(
        node("TestToyConditioning", toy_conditioning)
            .input(
                InputDef::float("value")
                    .default_float(1.0)
                    .min_float(-10.0)
                    .max_float(10.0),
            )
            .output("CONDITIONING"),
    );
}
