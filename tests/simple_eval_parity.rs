//! ComfyMathExpression's evaluator against PyPI simpleeval with ComfyUI's function table
//! (tests/python/simple_eval_reference.py): the same FLOAT, INT and BOOL, or the same
//! exception class, for each expression.

mod reference;

use std::collections::BTreeMap;

use serde_json::{json, Value};
use videosdgx::simple_eval::{evaluate, numeric_outputs, Val};

/// The node's outputs, or the exception class (its result checks included).
fn ours(expression: &str, names: &BTreeMap<String, Val>) -> Value {
    match evaluate(expression, names).and_then(|r| numeric_outputs(expression, &r)) {
        Err(e) => json!(e.kind),
        Ok((float, int, truth)) => json!([float, int as i64, truth]),
    }
}

#[test]
fn expressions_evaluate_like_simpleeval() {
    let names = json!({"a": 5, "b": 16, "c": 2.5, "d": -3, "e": true, "f": 0.0});
    let expressions = [
        // The A14B templates' frame counts.
        "floor(a * b) + 1",
        "floor (a * b + 1)",
        "a + b",
        "a / b",
        "b / a",
        "a // b",
        "d // 2",
        "d % 2",
        "7 % -3",
        "c // 1",
        "-c // 1",
        "c % 1.5",
        "-7.5 % 2",
        "a ** 2",
        "2 ** -1",
        "2 ** 0.5",
        "(-8) ** 0.5",
        "-2 ** 2",
        "2 ** 3 ** 2",
        "10 ** 18",
        "5000000 ** 1",
        "a / 0",
        "a // 0",
        "c % 0",
        "1 < a < 10",
        "a < b < 4",
        "a == 5.0",
        "a != b",
        "e + 1",
        "e and a",
        "0 or c",
        "not a",
        "a if e else b",
        "a if f else b",
        "a & 3",
        "a | 8",
        "a ^ 1",
        "a << 3",
        "b >> 2",
        "~a",
        "e & True",
        "sum(values)",
        "sum(a, b, c)",
        "min(a, b, c)",
        "max(values)",
        "min(values) * 2",
        "values[1] - values[-1]",
        "values[10]",
        "abs(d)",
        "abs(-c)",
        "round(c)",
        "round(3.5)",
        "round(2.675, 2)",
        "round(1234.5678, -2)",
        "round(a, 1)",
        "pow(2, 10)",
        "pow(2, 5000)",
        "pow(2.0, -2)",
        "sqrt(b)",
        "sqrt(d)",
        "ceil(c)",
        "floor(-c)",
        "log(b)",
        "log(8, 2)",
        "log(0)",
        "log2(b)",
        "log10(1000)",
        "sin(0) + cos(0) + tan(0)",
        "int(c * 3)",
        "int(-c)",
        "float(a)",
        "a * 1e3",
        "1_000 + .5",
        "zz + 1",
        "nope(1)",
        "a +",
        "(a",
        "values",
        "1e308 * 10",
        "0.1 + 0.2",
        "(a + b) * c - d / 4",
    ];
    let cases: Vec<Value> = expressions.iter().map(|e| json!([e, names])).collect();
    let out = reference::run(
        "simple_eval_reference.py",
        &[],
        &serde_json::to_vec(&cases).unwrap(),
    );
    let expected: Vec<Value> = serde_json::from_slice(&out).unwrap();
    let vals: BTreeMap<String, Val> = names
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::Bool(b) => Val::Bool(*b),
                Value::Number(n) if n.is_i64() => Val::Int(n.as_i64().unwrap().into()),
                Value::Number(n) => Val::Float(n.as_f64().unwrap()),
                _ => unreachable!(),
            };
            (k.clone(), v)
        })
        .collect();
    let mut named = vals.clone();
    named.insert("values".into(), Val::List(vals.values().cloned().collect()));
    let mut wrong = Vec::new();
    for (expression, want) in expressions.iter().zip(expected) {
        let got = ours(expression, &named);
        let same = match (&got, &want) {
            (Value::Array(g), Value::Array(w)) => {
                let (gf, wf) = (g[0].as_f64().unwrap(), w[0].as_f64().unwrap());
                (gf - wf).abs() <= 1e-12 * wf.abs().max(1.0) && g[1..] == w[1..]
            }
            _ => got == want,
        };
        if !same {
            wrong.push(format!("{expression}: ours {got}, simpleeval {want}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // A deliberate difference: Python's ints are unbounded, ours stop at 128 bits.
    let big = evaluate("10 ** 40", &named).unwrap_err();
    assert_eq!(big.kind, "OverflowError");
}
