//! PreviewAny (`comfy_extras/nodes_preview_any.py`, "Preview as Text"): any value shown in the
//! frontend as text and passed on as a STRING.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value as Json;

use super::media_save::ui;
use crate::engine::context::ExecContext;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeOutput, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::Value;

/// `json.dumps(value, indent=4, ensure_ascii=False)`.
fn indented_json(value: &Json) -> String {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    value
        .serialize(&mut serializer)
        .expect("serialising to memory cannot fail");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// PreviewAny's text: strings as they are, numbers and booleans as Python's `str`, JSON values
/// indented as `json.dumps` writes them, and anything else (tensors, models) as its description.
fn preview_text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Json(Json::Null)) => "None".into(),
        Some(Value::Json(json)) => indented_json(json),
        Some(other) => other.to_string(),
    }
}

fn preview_any(i: &Inputs, _: &ExecContext) -> NodeResult {
    let text = preview_text(i.get("source"));
    Ok(NodeOutput {
        values: vec![Value::Str(text.clone())],
        ui: Some(ui("text", vec![Json::String(text)])),
    })
}

pub fn register(r: &mut Registry) {
    r.add(
        NodeDef::new("PreviewAny", Style::V1, Arc::new(preview_any))
            .display("Preview as Text")
            .category("utilities")
            .description("Preview any input value as text.")
            .aliases(&[
                "show output",
                "inspect",
                "debug",
                "print value",
                "show text",
            ])
            .module("comfy_extras.nodes_preview_any")
            .input(InputDef::new("source", "*").empty_options_shown())
            .output("STRING")
            .output_node(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_as_python_prints_them() {
        assert_eq!(preview_text(Some(&Value::Str("hi".into()))), "hi");
        assert_eq!(preview_text(Some(&Value::Float(2.0))), "2.0");
        assert_eq!(preview_text(Some(&Value::Bool(true))), "True");
        assert_eq!(preview_text(None), "None");
        let json = Value::Json(serde_json::json!({"a": [1, "é"]}));
        assert_eq!(
            preview_text(Some(&json)),
            "{\n    \"a\": [\n        1,\n        \"é\"\n    ]\n}"
        );
    }
}
