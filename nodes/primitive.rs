//! Primitive value nodes (`comfy_extras/nodes_primitive.py`).

use std::sync::Arc;

use serde_json::json;

use crate::engine::node::{InputDef, NodeDef, NodeOutput, Style};
use crate::engine::registry::Registry;
use crate::engine::value::Value;

const PY_MAXSIZE: i64 = i64::MAX;

fn primitive(name: &str, display: &str, io_type: &str, input: InputDef) -> NodeDef {
    let f = Arc::new(
        |i: &crate::engine::node::Inputs, _: &crate::engine::context::ExecContext| {
            let v = i
                .get("value")
                .cloned()
                .unwrap_or(Value::Json(serde_json::Value::Null));
            Ok(NodeOutput::one(v))
        },
    );
    NodeDef::new(name, Style::V3, f)
        .display(display)
        .category("utilities/primitive")
        .module("comfy_extras.nodes_primitive")
        .input(input)
        .output(io_type)
}

pub fn register(r: &mut Registry) {
    r.add(
        primitive(
            "PrimitiveString",
            "Text",
            "STRING",
            InputDef::string("value").opt("multiline", json!(false)),
        )
        .aliases(&["text", "string", "text box", "prompt"]),
    );
    r.add(
        primitive(
            "PrimitiveStringMultiline",
            "Text (Multiline)",
            "STRING",
            InputDef::string("value").opt("multiline", json!(true)),
        )
        .essentials("Basics")
        .aliases(&[
            "text",
            "string",
            "text multiline",
            "string multiline",
            "text box",
            "prompt",
        ]),
    );
    r.add(primitive(
        "PrimitiveInt",
        "Int",
        "INT",
        InputDef::int("value")
            .min(-PY_MAXSIZE)
            .max(PY_MAXSIZE)
            .opt("control_after_generate", json!("fixed")),
    ));
    r.add(primitive(
        "PrimitiveFloat",
        "Float",
        "FLOAT",
        InputDef::float("value")
            .min(-PY_MAXSIZE)
            .max(PY_MAXSIZE)
            .step_float(0.1),
    ));
    r.add(primitive(
        "PrimitiveBoolean",
        "Boolean",
        "BOOLEAN",
        InputDef::boolean("value"),
    ));
}
