//! Declarative node definitions: one value per node class from which `/object_info`,
//! validation and execution all derive.

use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::{json, Map, Value as Json};

use super::context::{ExecContext, NodeEnv};
use super::value::Value;
use crate::pyjson;

/// ComfyUI's `MAX_RESOLUTION`.
pub const MAX_RESOLUTION: i64 = 16384;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Section {
    Required,
    Optional,
    Hidden,
}

impl Section {
    pub fn key(self) -> &'static str {
        match self {
            Section::Required => "required",
            Section::Optional => "optional",
            Section::Hidden => "hidden",
        }
    }
}

/// Which of ComfyUI's two node APIs a built-in node mirrors; it decides the `/object_info` shape.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Style {
    /// Classic `nodes.py` classes (`INPUT_TYPES`, `RETURN_TYPES`).
    V1,
    /// `comfy_api.latest.io.ComfyNode` schemas.
    V3,
}

pub type ComboFn = Arc<dyn Fn(&NodeEnv) -> Vec<String> + Send + Sync>;

#[derive(Clone)]
pub enum ComboChoices {
    Static(Vec<String>),
    Dynamic(ComboFn),
}

impl ComboChoices {
    pub fn resolve(&self, env: &NodeEnv) -> Vec<String> {
        match self {
            ComboChoices::Static(v) => v.clone(),
            ComboChoices::Dynamic(f) => f(env),
        }
    }
}

/// One declared input.
#[derive(Clone)]
pub struct InputDef {
    pub name: String,
    pub section: Section,
    /// `INT`, `FLOAT`, `STRING`, `BOOLEAN`, `COMBO`, `IMAGE`, … (for hidden inputs: `PROMPT`, …).
    pub io_type: String,
    /// The options object in ComfyUI's key order, without combo choices.
    pub options: Map<String, Json>,
    pub combo: Option<ComboChoices>,
    /// An Autogrow input's concrete inputs (`values.a`, `values.b`, …), or a DynamicCombo's
    /// selector and every option's inputs (`resize_type`, `resize_type.width`, …): what prompts
    /// name, validation checks and nodes read; the container itself only shows in
    /// `/object_info`.
    pub grown: Vec<InputDef>,
    /// A DynamicCombo's options: each key with its inputs (unprefixed, as `/object_info` and the
    /// UI's widget order show them).
    pub dynamic: Vec<(String, Vec<InputDef>)>,
    /// A DynamicCombo option's input: the selectors and the keys under which it exists (one
    /// per level of nesting; all must be chosen).
    pub only_when: Vec<(String, String)>,
    /// A V1 input written with an empty options dict (`("*", {})`), shown as such.
    pub empty_options_shown: bool,
}

impl InputDef {
    pub fn new(name: &str, io_type: &str) -> Self {
        InputDef {
            name: name.into(),
            section: Section::Required,
            io_type: io_type.into(),
            options: Map::new(),
            combo: None,
            grown: Vec::new(),
            dynamic: Vec::new(),
            only_when: Vec::new(),
            empty_options_shown: false,
        }
    }

    /// Shows the options dict even when empty, as a V1 class that writes `(type, {})` does.
    pub fn empty_options_shown(mut self) -> Self {
        self.empty_options_shown = true;
        self
    }

    /// A V3 `DynamicCombo.Input`: a choice among `options`, each bringing its own inputs, which
    /// prompts name `<name>.<input>` and which exist only while their option is chosen. An
    /// option's input may itself be a DynamicCombo (`<name>.<input>.<its input>`).
    pub fn dynamic_combo(name: &str, options: Vec<(&str, Vec<InputDef>)>) -> Self {
        let keys: Vec<&str> = options.iter().map(|(k, _)| *k).collect();
        let mut grown = vec![Self::combo(name, &keys)];
        for (key, inputs) in &options {
            for input in inputs {
                let members = if input.dynamic.is_empty() {
                    std::slice::from_ref(input)
                } else {
                    input.grown.as_slice()
                };
                for member in members {
                    let mut def = member.clone();
                    def.name = format!("{name}.{}", member.name);
                    def.only_when = std::iter::once((name.to_string(), key.to_string()))
                        .chain(
                            member
                                .only_when
                                .iter()
                                .map(|(selector, k)| (format!("{name}.{selector}"), k.clone())),
                        )
                        .collect();
                    grown.push(def);
                }
            }
        }
        let mut def = Self::new(name, DYNAMIC_COMBO);
        def.grown = grown;
        def.dynamic = options
            .into_iter()
            .map(|(k, inputs)| (k.to_string(), inputs))
            .collect();
        def
    }

    /// The DynamicCombo option inputs chosen by `key`.
    pub fn dynamic_inputs(&self, key: &str) -> &[InputDef] {
        self.dynamic
            .iter()
            .find(|(k, _)| k == key)
            .map_or(&[], |(_, inputs)| inputs.as_slice())
    }

    /// A V3 `Autogrow.Input` with `TemplateNames`: inputs `<name>.<n>` for each of `names`,
    /// shaped like `template` (as a socket), the first `min` required.
    pub fn autogrow(name: &str, template: InputDef, names: &[&str], min: usize) -> Self {
        let spec = json!({"names": names, "min": min});
        Self::grow(name, template, names, min, spec)
    }

    /// A V3 `Autogrow.Input` with `TemplatePrefix`: inputs `<name>.<prefix><i>` for `i` below
    /// `max`, the first `min` required.
    pub fn autogrow_prefix(
        name: &str,
        template: InputDef,
        prefix: &str,
        min: usize,
        max: usize,
    ) -> Self {
        let names: Vec<String> = (0..max).map(|i| format!("{prefix}{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let spec = json!({"prefix": prefix, "min": min, "max": max});
        Self::grow(name, template, &names, min, spec)
    }

    /// The Autogrow container: `template`'s spec first, then the template kind's `fields`.
    fn grow(name: &str, template: InputDef, names: &[&str], min: usize, fields: Json) -> Self {
        // Widget templates become sockets (`forceInput`), as upstream's template does.
        let template = if template.is_widget() {
            template.opt("forceInput", Json::Bool(true))
        } else {
            template
        };
        let mut inputs = Map::new();
        inputs.insert(
            template.name.clone(),
            json!([template.io_type, template.options]),
        );
        let grown = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let mut def = template.clone();
                def.name = format!("{name}.{n}");
                if i >= min {
                    def.section = Section::Optional;
                }
                def
            })
            .collect();
        let mut spec = Map::new();
        spec.insert("input".into(), json!({"required": inputs}));
        if let Json::Object(fields) = fields {
            spec.extend(fields);
        }
        let mut def = Self::new(name, "COMFY_AUTOGROW_V3").opt("template", Json::Object(spec));
        def.grown = grown;
        def
    }

    /// A V3 `MatchType.Input` of template `template_id` accepting any type (`lazy` comes
    /// before the template in upstream's options).
    pub fn match_type(name: &str, template_id: &str, lazy: bool) -> Self {
        let def = Self::new(name, MATCH_TYPE);
        let def = if lazy { def.lazy() } else { def };
        def.opt(
            "template",
            json!({"template_id": template_id, "allowed_types": "*"}),
        )
    }

    /// A V3 `MatchType.Input` of template `template_id` accepting `allowed` (e.g.
    /// `IMAGE,MASK`).
    pub fn match_type_of(name: &str, template_id: &str, allowed: &str) -> Self {
        Self::new(name, MATCH_TYPE).opt(
            "template",
            json!({"template_id": template_id, "allowed_types": allowed}),
        )
    }
    pub fn int(name: &str) -> Self {
        Self::new(name, "INT")
    }
    pub fn float(name: &str) -> Self {
        Self::new(name, "FLOAT")
    }
    pub fn string(name: &str) -> Self {
        Self::new(name, "STRING")
    }
    pub fn boolean(name: &str) -> Self {
        Self::new(name, "BOOLEAN")
    }
    pub fn combo(name: &str, choices: &[&str]) -> Self {
        let mut def = Self::new(name, "COMBO");
        def.combo = Some(ComboChoices::Static(
            choices.iter().map(|s| s.to_string()).collect(),
        ));
        def
    }
    pub fn combo_dynamic(name: &str, choices: ComboFn) -> Self {
        let mut def = Self::new(name, "COMBO");
        def.combo = Some(ComboChoices::Dynamic(choices));
        def
    }
    pub fn hidden(name: &str, kind: &str) -> Self {
        let mut def = Self::new(name, kind);
        def.section = Section::Hidden;
        def
    }
    pub fn optional(mut self) -> Self {
        self.section = Section::Optional;
        // An optional DynamicCombo's selector is optional too.
        if !self.dynamic.is_empty() {
            if let Some(selector) = self.grown.first_mut() {
                selector.section = Section::Optional;
            }
        }
        self
    }
    pub fn opt(mut self, key: &str, value: Json) -> Self {
        self.options.insert(key.into(), value);
        self
    }
    /// Marks the input as one of the node's advanced inputs. Upstream writes the flag after the
    /// tooltip and before the default, so call it before the widget's range.
    pub fn advanced(self) -> Self {
        self.opt("advanced", Json::Bool(true))
    }
    pub fn default(self, v: impl Into<Json>) -> Self {
        self.opt("default", v.into())
    }
    pub fn default_float(self, v: f64) -> Self {
        self.opt("default", pyjson::float_number(v))
    }
    pub fn min(self, v: impl Into<Json>) -> Self {
        self.opt("min", v.into())
    }
    pub fn max(self, v: impl Into<Json>) -> Self {
        self.opt("max", v.into())
    }
    pub fn min_float(self, v: f64) -> Self {
        self.opt("min", pyjson::float_number(v))
    }
    pub fn max_float(self, v: f64) -> Self {
        self.opt("max", pyjson::float_number(v))
    }
    pub fn step(self, v: impl Into<Json>) -> Self {
        self.opt("step", v.into())
    }
    pub fn step_float(self, v: f64) -> Self {
        self.opt("step", pyjson::float_number(v))
    }
    pub fn tooltip(self, text: &str) -> Self {
        self.opt("tooltip", Json::String(text.into()))
    }
    pub fn lazy(self) -> Self {
        self.opt("lazy", Json::Bool(true))
    }

    /// Whether the frontend draws the input as a widget (a combo, including one whose choices
    /// the frontend fetches, or a primitive value).
    pub fn is_widget(&self) -> bool {
        // A multi-type input (`FLOAT,INT`) with a widget names it in `widgetType`.
        self.combo.is_some()
            || self.options.contains_key("widgetType")
            || matches!(
                self.io_type.as_str(),
                "INT"
                    | "FLOAT"
                    | "STRING"
                    | "BOOLEAN"
                    | "COMBO"
                    | "COLOR"
                    | "IMAGECOMPARE"
                    | "AUDIO_RECORD"
            )
    }

    pub fn is_lazy(&self) -> bool {
        self.options.get("lazy") == Some(&Json::Bool(true))
    }

    /// The `[type, options]` pair as `/object_info` and `input_config` show it.
    pub fn spec(&self, style: Style, env: &NodeEnv) -> Json {
        if !self.dynamic.is_empty() {
            let options: Vec<Json> = self
                .dynamic
                .iter()
                .map(|(key, inputs)| {
                    let mut sections = Map::new();
                    sections.insert("required".into(), Json::Object(Map::new()));
                    for input in inputs {
                        let section = sections
                            .entry(input.section.key())
                            .or_insert_with(|| Json::Object(Map::new()));
                        section
                            .as_object_mut()
                            .expect("a section is an object")
                            .insert(input.name.clone(), input.spec(Style::V3, env));
                    }
                    json!({"key": key, "inputs": sections})
                })
                .collect();
            let mut opts = self.options.clone();
            opts.insert("options".into(), Json::Array(options));
            return json!([self.io_type, opts]);
        }
        if self.section == Section::Hidden {
            return match style {
                Style::V1 => Json::String(self.io_type.clone()),
                Style::V3 => json!([self.io_type]),
            };
        }
        match (&self.combo, style) {
            (Some(choices), Style::V1) => {
                let list = choices.resolve(env);
                if self.options.is_empty() {
                    json!([list])
                } else {
                    json!([list, self.options])
                }
            }
            (Some(choices), Style::V3) => {
                // V3 combos put `multiselect`/`options` after the generic keys.
                const GENERIC: [&str; 7] = [
                    "display_name",
                    "tooltip",
                    "lazy",
                    "rawLink",
                    "advanced",
                    "default",
                    "socketless",
                ];
                let mut opts = Map::new();
                for (k, v) in self
                    .options
                    .iter()
                    .filter(|(k, _)| GENERIC.contains(&k.as_str()))
                {
                    opts.insert(k.clone(), v.clone());
                }
                opts.insert("multiselect".into(), Json::Bool(false));
                opts.insert("options".into(), json!(choices.resolve(env)));
                for (k, v) in self
                    .options
                    .iter()
                    .filter(|(k, _)| !GENERIC.contains(&k.as_str()))
                {
                    opts.insert(k.clone(), v.clone());
                }
                json!(["COMBO", opts])
            }
            (None, Style::V1) if self.options.is_empty() && !self.empty_options_shown => {
                json!([self.io_type])
            }
            (None, Style::V3)
                if self.io_type == "STRING" && !self.options.contains_key("multiline") =>
            {
                // V3's String.Input always states `multiline` (False unless set), last.
                let mut opts = self.options.clone();
                opts.insert("multiline".into(), Json::Bool(false));
                json!([self.io_type, opts])
            }
            (None, _) => json!([self.io_type, self.options]),
        }
    }
}

/// The io type of V3 DynamicCombo inputs.
pub const DYNAMIC_COMBO: &str = "COMFY_DYNAMICCOMBO_V3";

/// The io type of V3 MatchType inputs and outputs.
pub const MATCH_TYPE: &str = "COMFY_MATCHTYPE_V3";

#[derive(Clone)]
pub struct OutputDef {
    pub io_type: String,
    pub name: String,
    pub is_list: bool,
    pub tooltip: Option<String>,
    /// The MatchType template this output follows (`output_matchtypes`).
    pub matchtype: Option<String>,
}

/// What a node function returns: one value per output slot (a `Value::List` for list slots)
/// and an optional UI dict of lists.
pub struct NodeOutput {
    pub values: Vec<Value>,
    pub ui: Option<Map<String, Json>>,
}

impl NodeOutput {
    pub fn values(values: Vec<Value>) -> Self {
        NodeOutput { values, ui: None }
    }
    pub fn one(value: Value) -> Self {
        Self::values(vec![value])
    }
}

/// A failure inside a node, reported like a Python exception.
#[derive(Debug)]
pub enum NodeError {
    Interrupted,
    Failed {
        exception_type: String,
        message: String,
    },
}

impl NodeError {
    pub fn new(exception_type: &str, message: impl Into<String>) -> Self {
        NodeError::Failed {
            exception_type: exception_type.into(),
            message: message.into(),
        }
    }
    pub fn value(message: impl Into<String>) -> Self {
        Self::new("ValueError", message)
    }
    pub fn runtime(message: impl Into<String>) -> Self {
        Self::new("RuntimeError", message)
    }
}

/// c10's message without the C++ backtrace it appends.
fn without_backtrace(message: &str) -> &str {
    message
        .split("\nException raised from")
        .next()
        .unwrap_or_default()
        .trim_end()
}

impl From<tch::TchError> for NodeError {
    /// libtorch's failures as PyTorch raises them: a RuntimeError with c10's message, without
    /// tch's prefix or the C++ backtrace c10 appends.
    fn from(e: tch::TchError) -> Self {
        match e {
            tch::TchError::Torch(message) => NodeError::runtime(without_backtrace(&message)),
            other => NodeError::runtime(other.to_string()),
        }
    }
}

impl NodeError {
    /// A panic inside a node as the error it reports. tch's infallible ops panic with
    /// ``called `Result::unwrap()` on an `Err` value: Torch("…")``; that reads as PyTorch's
    /// RuntimeError, like a returned `TchError`.
    pub fn from_panic(message: &str) -> Self {
        let torch = message
            .strip_prefix("called `Result::unwrap()` on an `Err` value: Torch(\"")
            .and_then(|rest| rest.strip_suffix("\")"));
        match torch {
            Some(escaped) => NodeError::runtime(without_backtrace(&unescape_debug(escaped))),
            None => NodeError::runtime(message),
        }
    }
}

/// Undoes `{:?}`'s escapes of a string (quotes, backslashes, newlines, tabs).
fn unescape_debug(escaped: &str) -> String {
    let mut out = String::with_capacity(escaped.len());
    let mut chars = escaped.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

impl From<std::io::Error> for NodeError {
    fn from(e: std::io::Error) -> Self {
        NodeError::new("OSError", e.to_string())
    }
}

impl From<anyhow::Error> for NodeError {
    fn from(e: anyhow::Error) -> Self {
        NodeError::runtime(format!("{e:#}"))
    }
}

pub type NodeResult = Result<NodeOutput, NodeError>;

/// The inputs one call of a node receives, by name.
pub struct Inputs(pub IndexMap<String, Value>);

impl Inputs {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }
    fn required(&self, name: &str) -> Result<&Value, NodeError> {
        self.get(name).ok_or_else(|| {
            NodeError::new("TypeError", format!("missing required argument: '{name}'"))
        })
    }
    pub fn int(&self, name: &str) -> Result<i64, NodeError> {
        match self.required(name)? {
            Value::Int(i) => i64::try_from(*i)
                .map_err(|_| NodeError::new("OverflowError", format!("{name} is out of range"))),
            Value::Float(f) => Ok(*f as i64),
            Value::Bool(b) => Ok(*b as i64),
            other => Err(NodeError::new(
                "TypeError",
                format!("{name}: expected an int, got {other}"),
            )),
        }
    }
    pub fn float(&self, name: &str) -> Result<f64, NodeError> {
        match self.required(name)? {
            Value::Int(i) => Ok(*i as f64),
            Value::Float(f) => Ok(*f),
            other => Err(NodeError::new(
                "TypeError",
                format!("{name}: expected a float, got {other}"),
            )),
        }
    }
    pub fn string(&self, name: &str) -> Result<String, NodeError> {
        match self.required(name)? {
            Value::Str(s) => Ok(s.clone()),
            other => Ok(other.to_string()),
        }
    }
    pub fn boolean(&self, name: &str) -> Result<bool, NodeError> {
        Ok(self.required(name)?.truthy())
    }
    pub fn tensor(&self, name: &str) -> Result<&tch::Tensor, NodeError> {
        let v = self.required(name)?;
        v.as_tensor().ok_or_else(|| {
            NodeError::new("TypeError", format!("{name}: expected a tensor, got {v}"))
        })
    }
    /// An opaque input (VIDEO, AUDIO, …) of the expected Rust type.
    pub fn object<T: std::any::Any>(&self, name: &str) -> Result<&T, NodeError> {
        let v = self.required(name)?;
        v.as_object::<T>().ok_or_else(|| {
            NodeError::new(
                "TypeError",
                format!("{name}: expected {}, got {v}", std::any::type_name::<T>()),
            )
        })
    }
    pub fn opt_object<T: std::any::Any>(&self, name: &str) -> Option<&T> {
        self.get(name).and_then(Value::as_object::<T>)
    }
    pub fn opt_tensor(&self, name: &str) -> Option<&tch::Tensor> {
        self.get(name).and_then(Value::as_tensor)
    }
}

pub type NodeFn = Arc<dyn Fn(&Inputs, &ExecContext) -> NodeResult + Send + Sync>;
/// A node implemented by a plain function.
pub type NodeFunction = fn(&Inputs, &ExecContext) -> NodeResult;
pub type LazyFn = Arc<dyn Fn(&Inputs, &ExecContext) -> Vec<String> + Send + Sync>;
pub type IsChangedFn = Arc<dyn Fn(&Inputs, &NodeEnv) -> Option<Json> + Send + Sync>;
pub type ValidateFn = Arc<dyn Fn(&Inputs, &NodeEnv) -> Result<(), String> + Send + Sync>;

/// A custom input validator (ComfyUI's `VALIDATE_INPUTS`).
#[derive(Clone)]
pub struct Validator {
    /// The inputs it takes; their min/max/choice checks are skipped. `None` = `**kwargs`.
    pub consumes: Option<Vec<String>>,
    pub check: ValidateFn,
}

/// A node class.
#[derive(Clone)]
pub struct NodeDef {
    pub name: String,
    /// Upstream's display name; without one, V1 nodes show their name and V3 nodes `null`.
    pub display_name: Option<String>,
    pub category: String,
    pub description: String,
    pub python_module: String,
    pub style: Style,
    pub inputs: Vec<InputDef>,
    pub outputs: Vec<OutputDef>,
    pub output_node: bool,
    pub input_is_list: bool,
    pub not_idempotent: bool,
    pub deprecated: bool,
    pub experimental: bool,
    /// V3's `has_intermediate_output`: the frontend keeps the node's UI results like an
    /// output node's.
    pub has_intermediate_output: bool,
    pub search_aliases: Vec<String>,
    /// A V1 class's `OUTPUT_TOOLTIPS` where it is not one per output (a subclass inheriting
    /// its parent's list); otherwise the outputs' own tooltips are shown.
    pub inherited_output_tooltips: Option<Vec<String>>,
    /// The V3 schema's `essentials_category` (the frontend's essentials panel).
    pub essentials_category: Option<String>,
    pub function: NodeFn,
    pub check_lazy: Option<LazyFn>,
    pub is_changed: Option<IsChangedFn>,
    pub validator: Option<Validator>,
    /// V3 `accept_all_inputs`: literals the schema does not declare reach the function too.
    pub accept_all_inputs: bool,
}

impl NodeDef {
    /// A built-in node running a plain function, with its display name and category. A
    /// display name equal to the node's name stands for none (V3 schemas without one show
    /// `null`); the rare schema that repeats its id calls `display` itself.
    pub fn builtin(
        name: &str,
        style: Style,
        display: &str,
        category: &str,
        f: NodeFunction,
    ) -> Self {
        let def = NodeDef::new(name, style, Arc::new(f)).category(category);
        if display == name {
            def
        } else {
            def.display(display)
        }
    }

    /// The name the UI shows.
    pub fn shown_name(&self) -> &str {
        self.display_name.as_deref().unwrap_or(&self.name)
    }

    pub fn new(name: &str, style: Style, function: NodeFn) -> Self {
        NodeDef {
            name: name.into(),
            display_name: None,
            category: "sd".into(),
            description: String::new(),
            python_module: match style {
                Style::V1 => "nodes".into(),
                Style::V3 => "comfy_extras".into(),
            },
            style,
            inputs: Vec::new(),
            outputs: Vec::new(),
            output_node: false,
            input_is_list: false,
            not_idempotent: false,
            deprecated: false,
            experimental: false,
            has_intermediate_output: false,
            search_aliases: Vec::new(),
            inherited_output_tooltips: None,
            essentials_category: None,
            function,
            check_lazy: None,
            is_changed: None,
            validator: None,
            accept_all_inputs: false,
        }
    }
    pub fn display(mut self, name: &str) -> Self {
        self.display_name = Some(name.into());
        self
    }
    pub fn category(mut self, c: &str) -> Self {
        self.category = c.into();
        self
    }
    pub fn description(mut self, d: &str) -> Self {
        self.description = d.into();
        self
    }
    pub fn module(mut self, m: &str) -> Self {
        self.python_module = m.into();
        self
    }
    pub fn input(mut self, i: InputDef) -> Self {
        self.inputs.push(i);
        self
    }
    pub fn output(self, io_type: &str) -> Self {
        self.named_output(io_type, io_type)
    }
    pub fn named_output(mut self, io_type: &str, name: &str) -> Self {
        self.outputs.push(OutputDef {
            io_type: io_type.into(),
            name: name.into(),
            is_list: false,
            tooltip: None,
            matchtype: None,
        });
        self
    }
    /// A V3 `MatchType.Output` following template `template_id`.
    pub fn match_type_output(mut self, template_id: &str, name: &str) -> Self {
        self = self.named_output(MATCH_TYPE, name);
        if let Some(o) = self.outputs.last_mut() {
            o.matchtype = Some(template_id.into());
        }
        self
    }
    pub fn output_tooltip(mut self, tip: &str) -> Self {
        if let Some(o) = self.outputs.last_mut() {
            o.tooltip = Some(tip.into());
        }
        self
    }
    /// A V1 `OUTPUT_TOOLTIPS` inherited from a parent class, shown as it is.
    pub fn inherited_output_tooltips(mut self, tips: &[&str]) -> Self {
        self.inherited_output_tooltips = Some(tips.iter().map(|t| t.to_string()).collect());
        self
    }
    pub fn list_output(mut self) -> Self {
        if let Some(o) = self.outputs.last_mut() {
            o.is_list = true;
        }
        self
    }
    pub fn deprecated(mut self) -> Self {
        self.deprecated = true;
        self
    }
    pub fn experimental(mut self) -> Self {
        self.experimental = true;
        self
    }
    pub fn output_node(mut self) -> Self {
        self.output_node = true;
        self
    }
    pub fn input_is_list(mut self) -> Self {
        self.input_is_list = true;
        self
    }
    pub fn essentials(mut self, category: &str) -> Self {
        self.essentials_category = Some(category.into());
        self
    }
    pub fn aliases(mut self, a: &[&str]) -> Self {
        self.search_aliases = a.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn lazy_check(mut self, f: LazyFn) -> Self {
        self.check_lazy = Some(f);
        self
    }
    pub fn is_changed(mut self, f: IsChangedFn) -> Self {
        self.is_changed = Some(f);
        self
    }
    pub fn validator(mut self, consumes: Option<&[&str]>, check: ValidateFn) -> Self {
        self.validator = Some(Validator {
            consumes: consumes.map(|c| c.iter().map(|s| s.to_string()).collect()),
            check,
        });
        self
    }

    /// What V3's `Schema.finalize` adds: an output node's hidden `prompt` and `extra_pnginfo`.
    pub fn finalized(mut self) -> Self {
        if self.style == Style::V3 && self.output_node {
            for (name, kind) in [("prompt", "PROMPT"), ("extra_pnginfo", "EXTRA_PNGINFO")] {
                let declared = self
                    .inputs
                    .iter()
                    .any(|i| i.section == Section::Hidden && i.io_type == kind);
                if !declared {
                    self.inputs.push(InputDef::hidden(name, kind));
                }
            }
        }
        self
    }

    /// A declared input by the name prompts use (Autogrow inputs by their grown names).
    pub fn input_def(&self, name: &str) -> Option<&InputDef> {
        self.inputs
            .iter()
            .flat_map(|i| std::iter::once(i).chain(&i.grown))
            .find(|i| i.name == name)
    }

    /// The inputs a prompt gives, Autogrow containers replaced by their grown inputs.
    pub fn prompt_inputs(&self) -> impl Iterator<Item = &InputDef> {
        self.inputs.iter().flat_map(|i| {
            if i.grown.is_empty() {
                std::slice::from_ref(i)
            } else {
                i.grown.as_slice()
            }
        })
    }

    /// Whether the cache key must include the node id (ComfyUI: `NOT_IDEMPOTENT` or a
    /// V1 hidden `UNIQUE_ID`).
    pub fn keyed_by_id(&self) -> bool {
        self.not_idempotent
            || (self.style == Style::V1
                && self
                    .inputs
                    .iter()
                    .any(|i| i.section == Section::Hidden && i.io_type == "UNIQUE_ID"))
    }

    /// The `/object_info` entry.
    pub fn info(&self, env: &NodeEnv) -> Json {
        let mut input = Map::new();
        let mut order = Map::new();
        if self.style == Style::V3 {
            input.insert("required".into(), Json::Object(Map::new()));
        }
        for section in [Section::Required, Section::Optional, Section::Hidden] {
            let defs: Vec<&InputDef> = self
                .inputs
                .iter()
                .filter(|i| i.section == section)
                .collect();
            if defs.is_empty() {
                continue;
            }
            let entry = input
                .entry(section.key())
                .or_insert_with(|| Json::Object(Map::new()))
                .as_object_mut()
                .expect("sections are objects");
            for d in &defs {
                entry.insert(d.name.clone(), d.spec(self.style, env));
            }
        }
        for (k, v) in &input {
            let names: Vec<Json> = v
                .as_object()
                .map(|m| m.keys().map(|k| json!(k)).collect())
                .unwrap_or_default();
            order.insert(k.clone(), Json::Array(names));
        }
        let outputs: Vec<&str> = self.outputs.iter().map(|o| o.io_type.as_str()).collect();
        let is_list: Vec<bool> = self.outputs.iter().map(|o| o.is_list).collect();
        let names: Vec<&str> = self.outputs.iter().map(|o| o.name.as_str()).collect();
        let tooltips: Vec<Option<&str>> =
            self.outputs.iter().map(|o| o.tooltip.as_deref()).collect();
        let mut info = Map::new();
        info.insert("input".into(), Json::Object(input));
        info.insert("input_order".into(), Json::Object(order));
        info.insert("is_input_list".into(), json!(self.input_is_list));
        info.insert("output".into(), json!(outputs));
        info.insert("output_is_list".into(), json!(is_list));
        info.insert("output_name".into(), json!(names));
        match self.style {
            Style::V3 => {
                info.insert("output_tooltips".into(), json!(tooltips));
                let matchtypes: Vec<Option<&str>> = self
                    .outputs
                    .iter()
                    .map(|o| o.matchtype.as_deref())
                    .collect();
                let matchtypes = if matchtypes.iter().any(Option::is_some) {
                    json!(matchtypes)
                } else {
                    Json::Null
                };
                info.insert("output_matchtypes".into(), matchtypes);
                info.insert("name".into(), json!(self.name));
                info.insert("display_name".into(), json!(self.display_name));
                info.insert("description".into(), json!(self.description));
                info.insert("python_module".into(), json!(self.python_module));
                info.insert("category".into(), json!(self.category));
                info.insert("output_node".into(), json!(self.output_node));
                info.insert("deprecated".into(), json!(self.deprecated));
                info.insert("experimental".into(), json!(self.experimental));
                info.insert("dev_only".into(), json!(false));
                info.insert("api_node".into(), json!(false));
                info.insert("price_badge".into(), Json::Null);
                let aliases = if self.search_aliases.is_empty() {
                    Json::Null
                } else {
                    json!(self.search_aliases)
                };
                info.insert("search_aliases".into(), aliases);
                info.insert(
                    "essentials_category".into(),
                    json!(self.essentials_category),
                );
                info.insert(
                    "has_intermediate_output".into(),
                    json!(self.has_intermediate_output),
                );
            }
            Style::V1 => {
                info.insert("name".into(), json!(self.name));
                info.insert("display_name".into(), json!(self.shown_name()));
                info.insert("description".into(), json!(self.description));
                info.insert("python_module".into(), json!(self.python_module));
                info.insert("category".into(), json!(self.category));
                info.insert("output_node".into(), json!(self.output_node));
                info.insert(
                    "has_intermediate_output".into(),
                    json!(self.has_intermediate_output),
                );
                if let Some(tips) = &self.inherited_output_tooltips {
                    info.insert("output_tooltips".into(), json!(tips));
                } else if tooltips.iter().any(Option::is_some) {
                    let tips: Vec<&str> = tooltips.iter().map(|t| t.unwrap_or("")).collect();
                    info.insert("output_tooltips".into(), json!(tips));
                }
                if self.deprecated {
                    info.insert("deprecated".into(), json!(true));
                }
                if self.experimental {
                    info.insert("experimental".into(), json!(true));
                }
                info.insert("search_aliases".into(), json!(self.search_aliases));
                if let Some(category) = &self.essentials_category {
                    info.insert("essentials_category".into(), json!(category));
                }
            }
        }
        Json::Object(info)
    }
}

#[cfg(test)]
mod tests {
    use super::NodeError;

    fn message(e: NodeError) -> (String, String) {
        match e {
            NodeError::Failed {
                exception_type,
                message,
            } => (exception_type, message),
            NodeError::Interrupted => panic!("interrupted"),
        }
    }

    #[test]
    fn libtorch_panics_read_as_pytorchs_runtime_error() {
        let panic = std::panic::catch_unwind(|| {
            tch::Tensor::zeros([3], tch::kind::FLOAT_CPU).narrow(0, -4, 2)
        })
        .expect_err("narrow out of range panics");
        let text = panic
            .downcast_ref::<String>()
            .cloned()
            .expect("a formatted panic");
        let (kind, text) = message(NodeError::from_panic(&text));
        assert_eq!(kind, "RuntimeError");
        assert_eq!(
            text,
            "start out of range (expected to be in range of [-3, 3], but got -4)"
        );
        let (_, plain) = message(NodeError::from_panic("index out of bounds"));
        assert_eq!(plain, "index out of bounds");
    }
}
