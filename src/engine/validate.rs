//! Prompt validation with ComfyUI's error types and shapes (`execution.validate_prompt`).
//!
//! Validation also normalises the prompt in place: literals are coerced to their declared
//! type and `{"__value__": [...]}` wrappers are unwrapped, as ComfyUI does.

use std::collections::HashMap;

use indexmap::IndexMap;
use serde_json::{json, Map, Value as Json};

use super::context::NodeEnv;
use super::node::{Inputs, NodeDef, Section};
use super::registry::Registry;
use super::typematch::types_match;
use super::value::Value;
use crate::pyjson;

/// A rejected prompt: the 400 body's `error` and `node_errors`.
#[derive(Debug)]
pub struct PromptError {
    pub error: Json,
    pub node_errors: Json,
}

impl PromptError {
    pub fn new(kind: &str, message: &str, details: &str) -> Self {
        PromptError {
            error: json!({"type": kind, "message": message, "details": details, "extra_info": {}}),
            node_errors: json!({}),
        }
    }
    pub fn body(&self) -> Json {
        json!({"error": self.error, "node_errors": self.node_errors})
    }
}

/// An accepted prompt: the outputs that will run, and the errors of those that will not.
#[derive(Debug)]
pub struct Accepted {
    pub outputs: Vec<String>,
    pub node_errors: Json,
}

fn error(kind: &str, message: &str, details: impl Into<String>, extra_info: Json) -> Json {
    json!({"type": kind, "message": message, "details": details.into(), "extra_info": extra_info})
}

/// Validates `prompt` (an API-format graph) and picks the outputs to run.
pub fn validate_prompt(
    registry: &Registry,
    env: &NodeEnv,
    prompt: &mut Map<String, Json>,
    partial_targets: Option<&[String]>,
) -> Result<Accepted, PromptError> {
    let mut outputs = Vec::new();
    for (id, node) in prompt.iter() {
        let title = node.pointer("/_meta/title").and_then(Json::as_str);
        let missing = |message: String, class_type: Json, title: Option<&str>| {
            let extra_info = json!({"node_id": id, "class_type": class_type, "node_title": title});
            PromptError {
                error: error(
                    "missing_node_type",
                    &message,
                    format!("Node ID '#{id}'"),
                    extra_info,
                ),
                node_errors: json!({}),
            }
        };
        let Some(class_type) = node.get("class_type").and_then(Json::as_str) else {
            let name = title.map_or_else(|| format!("ID #{id}"), String::from);
            return Err(missing(
                format!("Node '{name}' has no class_type. The workflow may be corrupted or a custom node is missing."),
                Json::Null,
                title,
            ));
        };
        let Some(def) = registry.get(class_type) else {
            let title = title.unwrap_or(class_type);
            return Err(missing(
                format!("Node '{title}' not found. The custom node may not be installed."),
                json!(class_type),
                Some(title),
            ));
        };
        if node.get("inputs").is_some_and(|i| !i.is_object()) {
            return Err(PromptError::new(
                "invalid_prompt",
                "Cannot execute because a node's inputs are not an object.",
                &format!("Node ID '#{id}'"),
            ));
        }
        if def.output_node && partial_targets.is_none_or(|t| t.iter().any(|t| t == id)) {
            outputs.push(id.clone());
        }
    }
    if outputs.is_empty() {
        return Err(PromptError::new(
            "prompt_no_outputs",
            "Prompt has no outputs",
            "",
        ));
    }

    let mut v = Validator {
        registry,
        env,
        prompt,
        validated: IndexMap::new(),
        visiting: Vec::new(),
    };
    let mut good = Vec::new();
    let mut errors: Vec<(String, Vec<Json>)> = Vec::new();
    for o in &outputs {
        v.validate(o);
        let (ok, reasons) = v.validated.get(o).cloned().unwrap_or((false, Vec::new()));
        if ok {
            good.push(o.clone());
        } else {
            errors.push((o.clone(), reasons));
        }
    }

    let mut node_errors = Map::new();
    for (o, _) in &errors {
        for (node_id, (ok, reasons)) in &v.validated {
            if *ok || reasons.is_empty() {
                continue;
            }
            let entry = node_errors.entry(node_id.clone()).or_insert_with(|| {
                let class_type = v.prompt[node_id]["class_type"].clone();
                json!({"errors": reasons, "dependent_outputs": [], "class_type": class_type})
            });
            entry["dependent_outputs"]
                .as_array_mut()
                .expect("built above")
                .push(json!(o));
        }
    }
    if good.is_empty() {
        let details: Vec<String> = errors
            .iter()
            .flat_map(|(_, reasons)| reasons.iter())
            .map(|r| {
                format!(
                    "{}: {}",
                    r["message"].as_str().unwrap_or(""),
                    r["details"].as_str().unwrap_or("")
                )
            })
            .collect();
        return Err(PromptError {
            error: error(
                "prompt_outputs_failed_validation",
                "Prompt outputs failed validation",
                details.join("\n"),
                json!({}),
            ),
            node_errors: Json::Object(node_errors),
        });
    }
    Ok(Accepted {
        outputs: good,
        node_errors: Json::Object(node_errors),
    })
}

struct Validator<'a> {
    registry: &'a Registry,
    env: &'a NodeEnv,
    prompt: &'a mut Map<String, Json>,
    validated: IndexMap<String, (bool, Vec<Json>)>,
    visiting: Vec<String>,
}

impl Validator<'_> {
    fn class_of(&self, id: &str) -> Option<std::sync::Arc<NodeDef>> {
        let class_type = self.prompt.get(id)?.get("class_type")?.as_str()?;
        self.registry.get(class_type).cloned()
    }

    fn validate(&mut self, id: &str) {
        if self.validated.contains_key(id) {
            return;
        }
        if let Some(pos) = self.visiting.iter().position(|v| v == id) {
            self.mark_cycle(pos, id);
            return;
        }
        let def = self
            .class_of(id)
            .expect("validate_prompt checked every class");
        self.visiting.push(id.to_string());
        let result = self.validate_node(id, &def);
        self.visiting.pop();
        // A cycle found below may already have marked this node.
        self.validated.entry(id.to_string()).or_insert(result);
    }

    fn mark_cycle(&mut self, start: usize, id: &str) {
        let mut cycle: Vec<String> = self.visiting[start..].to_vec();
        cycle.push(id.to_string());
        let label = |n: &String| {
            let class = self.prompt[n]["class_type"]
                .as_str()
                .unwrap_or("")
                .to_string();
            format!("{n} ({class})")
        };
        let path: Vec<String> = cycle.iter().map(label).collect();
        let members = &cycle[..cycle.len() - 1];
        for node in members {
            let err = error(
                "dependency_cycle",
                "Dependency cycle detected",
                path.join(" -> "),
                json!({"node_id": node, "cycle_nodes": members}),
            );
            self.validated.insert(node.clone(), (false, vec![err]));
        }
    }

    fn validate_node(&mut self, id: &str, def: &NodeDef) -> (bool, Vec<Json>) {
        let mut errors = Vec::new();
        let mut valid = true;
        let consumed = |name: &str| {
            def.validator.as_ref().is_some_and(|v| {
                v.consumes
                    .as_ref()
                    .is_none_or(|c| c.iter().any(|n| n == name))
            })
        };
        let mut literals = IndexMap::new();
        let declared: Vec<_> = def
            .prompt_inputs()
            .filter(|i| i.section != Section::Hidden)
            .cloned()
            .collect();
        for input in &declared {
            let name = input.name.as_str();
            // A DynamicCombo option's input exists only while its option is chosen; behind a
            // selector that is not a literal it cannot be required.
            let mut required = input.section == Section::Required;
            let mut chosen_elsewhere = false;
            for (selector, key) in &input.only_when {
                match self.prompt[id].get("inputs").and_then(|i| i.get(selector)) {
                    Some(Json::String(chosen)) if chosen != key => chosen_elsewhere = true,
                    Some(Json::String(_)) => {}
                    _ => required = false,
                }
            }
            if chosen_elsewhere {
                continue;
            }
            let config = self.input_config(def, input);
            let value = self.prompt[id]
                .get("inputs")
                .and_then(|i| i.get(name))
                .cloned();
            let Some(value) = value else {
                if required {
                    // A DynamicCombo or Autogrow input reads by its last path segment.
                    let details = name.rsplit('.').next().unwrap_or(name);
                    errors.push(error(
                        "required_input_missing",
                        "Required input is missing",
                        details,
                        json!({"input_name": name}),
                    ));
                }
                continue;
            };
            if let Json::Array(link) = &value {
                if link.len() != 2 {
                    errors.push(error(
                        "bad_linked_input",
                        "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                        name,
                        json!({"input_name": name, "input_config": config, "received_value": value}),
                    ));
                    continue;
                }
                match self.link_source_type(link) {
                    Ok((source_id, received)) => {
                        let declared_type = if input.combo.is_some() {
                            "COMBO"
                        } else {
                            input.io_type.as_str()
                        };
                        if !types_match(&received, declared_type) {
                            errors.push(error(
                                "return_type_mismatch",
                                "Return type mismatch between linked nodes",
                                format!("{name}, received_type({received}) mismatch input_type({declared_type})"),
                                json!({"input_name": name, "input_config": config, "received_type": received, "linked_node": value}),
                            ));
                            continue;
                        }
                        self.validate(&source_id);
                        if !self.validated.get(&source_id).is_some_and(|r| r.0) {
                            valid = false;
                        }
                    }
                    Err((exception_type, message)) => {
                        errors.push(error(
                            "exception_during_inner_validation",
                            "Exception when validating inner node",
                            message.clone(),
                            json!({"input_name": name, "input_config": config, "exception_message": message,
                                   "exception_type": exception_type, "traceback": [], "linked_node": value}),
                        ));
                    }
                }
                continue;
            }
            let unwrapped = match &value {
                Json::Object(o) if o.contains_key("__value__") => o["__value__"].clone(),
                other => other.clone(),
            };
            let coerced = match coerce(&input.io_type, &unwrapped) {
                Ok(c) => c,
                Err(message) => {
                    errors.push(error(
                        "invalid_input_type",
                        &format!("Failed to convert an input value to a {} value", input.io_type),
                        format!("{name}, {}, {message}", pyjson::value_str(&unwrapped)),
                        json!({"input_name": name, "input_config": config, "received_value": unwrapped, "exception_message": message}),
                    ));
                    continue;
                }
            };
            self.prompt[id]["inputs"][name] = coerced.clone();
            literals.insert(name.to_string(), Value::from_json(&coerced));
            if consumed(name) {
                continue;
            }
            if let Some(err) = range_error(input.options.get("min"), &coerced, true) {
                errors.push(error(
                    "value_smaller_than_min",
                    &err,
                    name,
                    json!({"input_name": name, "input_config": config, "received_value": coerced}),
                ));
                continue;
            }
            if let Some(err) = range_error(input.options.get("max"), &coerced, false) {
                errors.push(error(
                    "value_bigger_than_max",
                    &err,
                    name,
                    json!({"input_name": name, "input_config": config, "received_value": coerced}),
                ));
                continue;
            }
            if let Some(choices) = &input.combo {
                let choices = choices.resolve(self.env);
                let found = coerced
                    .as_str()
                    .is_some_and(|s| choices.iter().any(|c| c == s));
                if !found {
                    let (list_info, config) = if choices.len() > 20 {
                        (format!("(list of length {})", choices.len()), Json::Null)
                    } else {
                        (pyjson::value_repr(&json!(choices)), config)
                    };
                    errors.push(error(
                        "value_not_in_list",
                        "Value not in list",
                        format!("{name}: '{}' not in {list_info}", pyjson::value_str(&coerced)),
                        json!({"input_name": name, "input_config": config, "received_value": coerced}),
                    ));
                }
            }
        }
        if let Some(validator) = &def.validator {
            let inputs = Inputs(literals);
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                (validator.check)(&inputs, self.env)
            }));
            let Ok(outcome) = outcome else {
                // A validator bug must not take the server down: report it as ComfyUI reports
                // an exception raised inside validation.
                errors.push(error(
                    "exception_during_validation",
                    "Exception when validating node",
                    "the node's input validator panicked",
                    json!({"exception_type": "PanicException", "traceback": []}),
                ));
                return (false, errors);
            };
            if let Err(reason) = outcome {
                let names: Vec<String> = match &validator.consumes {
                    Some(names) => names.clone(),
                    None => declared.iter().map(|i| i.name.clone()).collect(),
                };
                for name in names {
                    errors.push(error(
                        "custom_validation_failed",
                        "Custom validation failed for node",
                        format!("{name} - {reason}"),
                        json!({"input_name": name}),
                    ));
                }
            }
        }
        (valid && errors.is_empty(), errors)
    }

    fn input_config(&self, def: &NodeDef, input: &super::node::InputDef) -> Json {
        input.spec(def.style, self.env)
    }

    /// The source node id and output type of a link, or the Python exception it would raise.
    fn link_source_type(&self, link: &[Json]) -> Result<(String, String), (String, String)> {
        let source_id = match &link[0] {
            Json::String(s) => s.clone(),
            other => return Err(("KeyError".into(), pyjson::value_repr(other))),
        };
        let Some(def) = self.class_of(&source_id) else {
            return Err(("KeyError".into(), pyjson::str_repr(&source_id)));
        };
        let slot = match &link[1] {
            Json::Number(n) => pyjson::as_i128(n),
            _ => None,
        };
        let Some(slot) = slot else {
            return Err((
                "TypeError".into(),
                "tuple indices must be integers or slices, not float".into(),
            ));
        };
        let index = if slot < 0 {
            def.outputs.len() as i128 + slot
        } else {
            slot
        };
        match usize::try_from(index).ok().and_then(|i| def.outputs.get(i)) {
            Some(out) => Ok((source_id, out.io_type.clone())),
            None => Err(("IndexError".into(), "tuple index out of range".into())),
        }
    }
}

/// `min`/`max` checks; returns the message on failure.
fn range_error(limit: Option<&Json>, value: &Json, is_min: bool) -> Option<String> {
    let (Some(Json::Number(limit)), Json::Number(v)) = (limit, value) else {
        return None;
    };
    let out_of_range = match (pyjson::as_i128(v), pyjson::as_i128(limit)) {
        (Some(a), Some(b)) => {
            if is_min {
                a < b
            } else {
                a > b
            }
        }
        _ => {
            let (a, b) = (v.as_f64()?, limit.as_f64()?);
            if is_min {
                a < b
            } else {
                a > b
            }
        }
    };
    if !out_of_range {
        return None;
    }
    let (v, l) = (
        pyjson::value_repr(value),
        pyjson::value_repr(&Json::Number(limit.clone())),
    );
    Some(if is_min {
        format!("Value {v} smaller than min of {l}")
    } else {
        format!("Value {v} bigger than max of {l}")
    })
}

fn type_name(v: &Json) -> &'static str {
    match v {
        Json::Null => "NoneType",
        Json::Bool(_) => "bool",
        Json::Number(n) if pyjson::is_integer(n) => "int",
        Json::Number(_) => "float",
        Json::String(_) => "str",
        Json::Array(_) => "list",
        Json::Object(_) => "dict",
    }
}

/// Python's `int()`, `float()`, `str()` and `bool()` as validation applies them.
fn coerce(io_type: &str, v: &Json) -> Result<Json, String> {
    match io_type {
        "INT" => match v {
            Json::Number(n) => match pyjson::as_i128(n) {
                Some(i) => Ok(pyjson::int_number(i)),
                None => {
                    let f = n.as_f64().unwrap_or(f64::NAN);
                    if f.is_finite() {
                        Ok(pyjson::int_number(f.trunc() as i128))
                    } else {
                        Err("cannot convert float infinity to integer".into())
                    }
                }
            },
            Json::Bool(b) => Ok(json!(*b as i64)),
            Json::String(s) => parse_py_int(s).map(pyjson::int_number).ok_or_else(|| {
                format!(
                    "invalid literal for int() with base 10: {}",
                    pyjson::str_repr(s)
                )
            }),
            other => Err(format!(
                "int() argument must be a string, a bytes-like object or a real number, not '{}'",
                type_name(other)
            )),
        },
        "FLOAT" => match v {
            Json::Number(n) => Ok(pyjson::float_number(n.as_f64().unwrap_or(f64::NAN))),
            Json::Bool(b) => Ok(pyjson::float_number(*b as i64 as f64)),
            Json::String(s) => parse_py_float(s).map(pyjson::float_number).ok_or_else(|| {
                format!("could not convert string to float: {}", pyjson::str_repr(s))
            }),
            other => Err(format!(
                "float() argument must be a string or a real number, not '{}'",
                type_name(other)
            )),
        },
        "STRING" => Ok(Json::String(pyjson::value_str(v))),
        "BOOLEAN" => Ok(Json::Bool(Value::from_json(v).truthy())),
        _ => Ok(v.clone()),
    }
}

fn parse_py_int(s: &str) -> Option<i128> {
    let t = s.trim();
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    if !digits.chars().all(|c| c.is_ascii_digit() || c == '_') {
        return None;
    }
    t.replace('_', "").parse().ok()
}

fn parse_py_float(s: &str) -> Option<f64> {
    let t = s.trim().to_ascii_lowercase();
    let unsigned = t.strip_prefix(['+', '-']).unwrap_or(&t);
    if matches!(unsigned, "nan" | "inf" | "infinity") {
        return t.replace("infinity", "inf").parse().ok();
    }
    if unsigned.is_empty()
        || !unsigned
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | '+' | '-' | '_'))
    {
        return None;
    }
    t.replace('_', "").parse().ok()
}

/// The ids of every node an output depends on, the output included.
pub fn dependencies(prompt: &Map<String, Json>, outputs: &[String]) -> HashMap<String, ()> {
    let mut seen = HashMap::new();
    let mut stack: Vec<String> = outputs.to_vec();
    while let Some(id) = stack.pop() {
        if seen.insert(id.clone(), ()).is_some() {
            continue;
        }
        if let Some(inputs) = prompt
            .get(&id)
            .and_then(|n| n.get("inputs"))
            .and_then(Json::as_object)
        {
            for v in inputs.values() {
                if let Some(src) = super::graph::link_source(v) {
                    stack.push(src.0);
                }
            }
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coercion_follows_python() {
        assert_eq!(coerce("INT", &json!("20")).unwrap(), json!(20));
        assert_eq!(coerce("INT", &json!(5.7)).unwrap(), json!(5));
        assert!(coerce("INT", &json!("5.0"))
            .unwrap_err()
            .contains("invalid literal for int() with base 10: '5.0'"));
        assert!(coerce("INT", &Json::Null)
            .unwrap_err()
            .contains("not 'NoneType'"));
        assert_eq!(pyjson::dumps(&coerce("FLOAT", &json!(5)).unwrap()), "5.0");
        assert_eq!(
            pyjson::dumps(&coerce("FLOAT", &json!("1e3")).unwrap()),
            "1000.0"
        );
        assert_eq!(coerce("STRING", &Json::Null).unwrap(), json!("None"));
        assert_eq!(coerce("BOOLEAN", &json!("false")).unwrap(), json!(true));
        assert_eq!(coerce("BOOLEAN", &json!(0)).unwrap(), json!(false));
    }

    #[test]
    fn range_messages_print_python_numbers() {
        assert_eq!(
            range_error(Some(&json!(1.0)), &json!(7.0), false).unwrap(),
            "Value 7.0 bigger than max of 1.0"
        );
        assert_eq!(
            range_error(Some(&json!(1)), &json!(0), true).unwrap(),
            "Value 0 smaller than min of 1"
        );
        assert!(range_error(
            Some(&json!(18446744073709551615u64)),
            &json!(18446744073709551615u64),
            false
        )
        .is_none());
    }
}
