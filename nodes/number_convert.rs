//! ComfyNumberConvert (`comfy_extras/nodes_number_convert.py`, "Convert Number"): an INT,
//! FLOAT, STRING or BOOLEAN as both a FLOAT and an INT, with Python's conversions.

use std::sync::Arc;

use serde_json::json;

use crate::engine::context::ExecContext;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeError, NodeOutput, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::Value;

/// Python's numeric literal grammar allows single underscores between digits.
fn without_digit_underscores(text: &str) -> Option<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    for (i, c) in chars.iter().enumerate() {
        if *c == '_' {
            let digit = |j: Option<&char>| j.is_some_and(|c| c.is_ascii_digit());
            if !(digit(i.checked_sub(1).and_then(|j| chars.get(j))) && digit(chars.get(i + 1))) {
                return None;
            }
        } else {
            out.push(*c);
        }
    }
    Some(out)
}

/// `float(text)` and `int(text)` (or `int(float(text))` when the text is no integer).
fn parse(value: &str) -> Result<(f64, i128), NodeError> {
    let text = value.trim();
    if text.is_empty() {
        return Err(NodeError::value("Cannot convert empty string to number."));
    }
    let bad = || NodeError::value(format!("Cannot convert string to number: {value:?}"));
    let plain = without_digit_underscores(text).ok_or_else(bad)?;
    let float: f64 = plain.to_ascii_lowercase().parse().map_err(|_| bad())?;
    if !float.is_finite() {
        return Err(NodeError::value(format!(
            "Cannot convert non-finite value to number: {float}"
        )));
    }
    let int = plain.parse::<i128>().unwrap_or(float.trunc() as i128);
    Ok((float, int))
}

fn number_convert(i: &Inputs, _: &ExecContext) -> NodeResult {
    let (float, int) = match i.get("value") {
        Some(Value::Bool(b)) => (f64::from(u8::from(*b)), i128::from(*b)),
        Some(Value::Int(n)) => (*n as f64, *n),
        Some(Value::Float(f)) => (*f, f.trunc() as i128),
        Some(Value::Str(s)) => parse(s)?,
        other => {
            let kind = other.map_or("NoneType".to_string(), |v| v.to_string());
            return Err(NodeError::new(
                "TypeError",
                format!("Unsupported input type: {kind}"),
            ));
        }
    };
    Ok(NodeOutput::values(vec![
        Value::Float(float),
        Value::Int(int),
    ]))
}

pub fn register(r: &mut Registry) {
    r.add(
        NodeDef::new("ComfyNumberConvert", Style::V3, Arc::new(number_convert))
            .display("Convert Number")
            .category("utilities")
            .module("comfy_extras.nodes_number_convert")
            .aliases(&[
                "int to float",
                "float to int",
                "number convert",
                "int2float",
                "float2int",
                "cast",
                "parse number",
                "string to number",
                "bool to int",
            ])
            .input(
                InputDef::new("value", "INT,FLOAT,STRING,BOOLEAN")
                    .opt("display_name", json!("value")),
            )
            .named_output("FLOAT", "FLOAT")
            .named_output("INT", "INT"),
    );
}

#[cfg(test)]
mod tests {
    use super::parse;

    /// Python's `float(text)` / `int(text)` on the same strings.
    #[test]
    fn strings_convert_as_python_converts_them() {
        assert_eq!(parse(" 12 ").unwrap(), (12.0, 12));
        assert_eq!(parse("1.9").unwrap(), (1.9, 1));
        assert_eq!(parse("-1.9").unwrap(), (-1.9, -1));
        assert_eq!(parse("1e3").unwrap(), (1000.0, 1000));
        assert_eq!(parse("1_000").unwrap(), (1000.0, 1000));
        assert!(parse("1__0").is_err());
        assert!(parse("").is_err());
        assert!(parse("inf").is_err());
        assert!(parse("abc").is_err());
    }
}
