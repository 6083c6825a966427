//! ComfyMathExpression (`comfy_extras/nodes_math.py`): a Python-style expression over the
//! numbers on its `values.a`, `values.b`, … inputs (and the list `values`), giving FLOAT, INT
//! and BOOL.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;

use crate::engine::context::ExecContext;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeError, NodeOutput, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::simple_eval::{evaluate, numeric_outputs, Val};

const NAMES: [&str; 26] = [
    "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r", "s",
    "t", "u", "v", "w", "x", "y", "z",
];

fn number(name: &str, v: &Value) -> Result<Val, NodeError> {
    Ok(match v {
        Value::Int(i) => Val::Int(*i),
        Value::Float(f) => Val::Float(*f),
        Value::Bool(b) => Val::Bool(*b),
        other => {
            return Err(NodeError::value(format!(
                "{name} must be a FLOAT, INT or BOOLEAN, got {other}"
            )))
        }
    })
}

fn math_expression(i: &Inputs, _: &ExecContext) -> NodeResult {
    let expression = i.string("expression")?;
    if expression.trim().is_empty() {
        return Err(NodeError::value("Expression cannot be empty."));
    }
    let mut names = BTreeMap::new();
    let mut values = Vec::new();
    for name in NAMES {
        if let Some(v) = i.get(&format!("values.{name}")) {
            let v = number(name, v)?;
            values.push(v.clone());
            names.insert(name.to_string(), v);
        }
    }
    names.insert("values".into(), Val::List(values));
    let (float, int, truth) = evaluate(&expression, &names)
        .and_then(|result| numeric_outputs(&expression, &result))
        .map_err(|e| NodeError::new(e.kind, e.message))?;
    Ok(NodeOutput::values(vec![
        Value::Float(float),
        Value::Int(int),
        Value::Bool(truth),
    ]))
}

pub fn register(r: &mut Registry) {
    let value = InputDef::new("value", "FLOAT,INT,BOOLEAN");
    r.add(
        NodeDef::new("ComfyMathExpression", Style::V3, Arc::new(math_expression))
            .display("Math Expression")
            .category("utilities")
            .module("comfy_extras.nodes_math")
            .aliases(&[
                "expression",
                "formula",
                "calculate",
                "calculator",
                "eval",
                "math",
            ])
            .input(
                InputDef::string("expression")
                    .default("a + b")
                    .opt("multiline", json!(true)),
            )
            .input(InputDef::autogrow("values", value, &NAMES, 1))
            .named_output("FLOAT", "FLOAT")
            .named_output("INT", "INT")
            .named_output("BOOLEAN", "BOOL"),
    );
}
