//! Text nodes (`comfy_extras/nodes_string.py`): concatenate, substring, length, case, trim,
//! replace, contains, compare, and the regular-expression match, extract and replace, with
//! Python's string and `re` semantics (`crate::pystr`).

use std::sync::Arc;

use serde_json::json;

use crate::engine::context::ExecContext;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeError, NodeOutput, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::pystr::{self, Flags};

fn text(s: impl Into<String>) -> NodeResult {
    Ok(NodeOutput::one(Value::Str(s.into())))
}

fn flag(b: bool) -> NodeResult {
    Ok(NodeOutput::one(Value::Bool(b)))
}

fn concatenate(i: &Inputs, _: &ExecContext) -> NodeResult {
    let (a, b) = (i.string("string_a")?, i.string("string_b")?);
    text(format!("{a}{}{b}", i.string("delimiter")?))
}

fn substring(i: &Inputs, _: &ExecContext) -> NodeResult {
    text(pystr::slice(
        &i.string("string")?,
        i.int("start")?,
        i.int("end")?,
    ))
}

fn length(i: &Inputs, _: &ExecContext) -> NodeResult {
    Ok(NodeOutput::one(Value::Int(
        i.string("string")?.chars().count() as i128,
    )))
}

fn case(i: &Inputs, _: &ExecContext) -> NodeResult {
    let s = i.string("string")?;
    text(match i.string("mode")?.as_str() {
        "UPPERCASE" => s.to_uppercase(),
        "lowercase" => s.to_lowercase(),
        "Capitalize" => pystr::capitalize(&s),
        "Title Case" => pystr::title(&s),
        _ => s,
    })
}

fn trim(i: &Inputs, _: &ExecContext) -> NodeResult {
    let s = i.string("string")?;
    let (left, right) = match i.string("mode")?.as_str() {
        "Left" => (true, false),
        "Right" => (false, true),
        _ => (true, true),
    };
    text(pystr::strip(&s, left, right))
}

fn replace(i: &Inputs, _: &ExecContext) -> NodeResult {
    text(
        i.string("string")?
            .replace(&i.string("find")?, &i.string("replace")?),
    )
}

fn contains(i: &Inputs, _: &ExecContext) -> NodeResult {
    let (s, sub) = (i.string("string")?, i.string("substring")?);
    flag(if i.boolean("case_sensitive")? {
        s.contains(&sub)
    } else {
        s.to_lowercase().contains(&sub.to_lowercase())
    })
}

fn compare(i: &Inputs, _: &ExecContext) -> NodeResult {
    let (mut a, mut b) = (i.string("string_a")?, i.string("string_b")?);
    if !i.boolean("case_sensitive")? {
        (a, b) = (a.to_lowercase(), b.to_lowercase());
    }
    flag(match i.string("mode")?.as_str() {
        "Starts With" => a.starts_with(&b),
        "Ends With" => a.ends_with(&b),
        _ => a == b,
    })
}

/// The flags of the regex nodes (the replace node's are optional).
fn flags(i: &Inputs) -> Result<Flags, NodeError> {
    let get = |name: &str, default: bool| match i.get(name) {
        Some(_) => i.boolean(name),
        None => Ok(default),
    };
    Ok(Flags {
        ignore_case: get("case_insensitive", true)?,
        multiline: get("multiline", false)?,
        dot_all: get("dotall", false)?,
    })
}

/// `RegexMatch`: whether the pattern matches anywhere; false for a bad pattern.
fn regex_match(i: &Inputs, _: &ExecContext) -> NodeResult {
    let s = i.string("string")?;
    let found = pystr::compile(&i.string("regex_pattern")?, flags(i)?)
        .and_then(|re| re.is_match(&s).map_err(|e| e.to_string()));
    flag(found.unwrap_or(false))
}

/// `RegexExtract`: the first match, every match, the first match's group or every match's
/// group, joined by newlines; empty for a bad pattern.
fn regex_extract(i: &Inputs, _: &ExecContext) -> NodeResult {
    let s = i.string("string")?;
    let (mode, index) = (i.string("mode")?, i.int("group_index")? as usize);
    let result = pystr::compile(&i.string("regex_pattern")?, flags(i)?).and_then(|re| {
        Ok(match mode.as_str() {
            "First Match" => pystr::first_group(&re, &s, 0)?.unwrap_or_default(),
            "All Matches" => pystr::find_all(&re, &s)?.join("\n"),
            "First Group" => pystr::first_group(&re, &s, index)?.unwrap_or_default(),
            "All Groups" => pystr::all_groups(&re, &s, index)?.join("\n"),
            _ => String::new(),
        })
    });
    text(result.unwrap_or_default())
}

/// `RegexReplace`: `re.sub` with Python's replacement template; a bad pattern or template is
/// an error, as in ComfyUI.
fn regex_replace(i: &Inputs, _: &ExecContext) -> NodeResult {
    let count = match i.get("count") {
        Some(_) => i.int("count")?.max(0) as usize,
        None => 0,
    };
    let re = pystr::compile(&i.string("regex_pattern")?, flags(i)?)
        .map_err(|e| NodeError::new("error", e))?;
    let out = pystr::sub(&re, &i.string("replace")?, &i.string("string")?, count)
        .map_err(|e| NodeError::new("error", e))?;
    text(out)
}

pub fn register(r: &mut Registry) {
    let node = |name: &str, display: &str, f: fn(&Inputs, &ExecContext) -> NodeResult| {
        NodeDef::new(name, Style::V3, Arc::new(f))
            .display(display)
            .category("text")
            .module("comfy_extras.nodes_string")
    };
    let multiline = |name: &str| InputDef::string(name).opt("multiline", json!(true));
    let advanced = |name: &str, default: bool| InputDef::boolean(name).advanced().default(default);
    let regex_flags = |d: NodeDef| {
        d.input(advanced("case_insensitive", true))
            .input(advanced("multiline", false))
            .input(advanced("dotall", false))
    };
    r.add(
        node("StringConcatenate", "Concatenate Text", concatenate)
            .aliases(&[
                "concatenate",
                "text concat",
                "join text",
                "merge text",
                "combine strings",
                "string concat",
                "append text",
                "combine text",
            ])
            .input(multiline("string_a"))
            .input(multiline("string_b"))
            .input(
                InputDef::string("delimiter")
                    .default("")
                    .opt("multiline", json!(false)),
            )
            .output("STRING"),
    );
    r.add(
        node("StringSubstring", "Substring", substring)
            .aliases(&["substring", "extract text", "text portion"])
            .input(multiline("string"))
            .input(InputDef::int("start"))
            .input(InputDef::int("end"))
            .output("STRING"),
    );
    r.add(
        node("StringLength", "Text Length", length)
            .aliases(&["character count", "text size", "string length"])
            .input(multiline("string"))
            .named_output("INT", "length"),
    );
    r.add(
        node("CaseConverter", "Convert Text Case", case)
            .aliases(&[
                "case converter",
                "text case",
                "uppercase",
                "lowercase",
                "capitalize",
            ])
            .input(multiline("string"))
            .input(InputDef::combo(
                "mode",
                &["UPPERCASE", "lowercase", "Capitalize", "Title Case"],
            ))
            .output("STRING"),
    );
    r.add(
        node("StringTrim", "Trim Text", trim)
            .aliases(&[
                "trim",
                "clean whitespace",
                "remove whitespace",
                "remove spaces",
                "strip",
            ])
            .input(multiline("string"))
            .input(InputDef::combo("mode", &["Both", "Left", "Right"]))
            .output("STRING"),
    );
    r.add(
        node("StringReplace", "Replace Text", replace)
            .aliases(&["replace", "find and replace", "substitute", "swap text"])
            .input(multiline("string"))
            .input(multiline("find"))
            .input(multiline("replace"))
            .output("STRING"),
    );
    r.add(
        node("StringContains", "Contains Text", contains)
            .aliases(&["contains", "text includes", "string includes"])
            .input(multiline("string"))
            .input(multiline("substring"))
            .input(advanced("case_sensitive", true))
            .named_output("BOOLEAN", "contains"),
    );
    r.add(
        node("StringCompare", "Compare Text", compare)
            .aliases(&[
                "compare",
                "text match",
                "string equals",
                "starts with",
                "ends with",
            ])
            .input(multiline("string_a"))
            .input(multiline("string_b"))
            .input(InputDef::combo(
                "mode",
                &["Starts With", "Ends With", "Equal"],
            ))
            .input(advanced("case_sensitive", true))
            .output("BOOLEAN"),
    );
    r.add(
        regex_flags(
            node("RegexMatch", "Match Text", regex_match)
                .aliases(&[
                    "regex match",
                    "regex",
                    "pattern match",
                    "text contains",
                    "string match",
                ])
                .input(multiline("string"))
                .input(multiline("regex_pattern")),
        )
        .named_output("BOOLEAN", "matches"),
    );
    r.add(
        regex_flags(
            node("RegexExtract", "Extract Text", regex_extract)
                .aliases(&[
                    "regex extract",
                    "regex",
                    "pattern extract",
                    "text parser",
                    "parse text",
                ])
                .input(multiline("string"))
                .input(multiline("regex_pattern"))
                .input(InputDef::combo(
                    "mode",
                    &["First Match", "All Matches", "First Group", "All Groups"],
                )),
        )
        .input(
            InputDef::int("group_index")
                .advanced()
                .default(1)
                .min(0)
                .max(100),
        )
        .output("STRING"),
    );
    let optional_flag = |name: &str, default: bool| advanced(name, default).optional();
    r.add(
        node("RegexReplace", "Replace Text (Regex)", regex_replace)
            .aliases(&["regex replace", "regex", "pattern replace", "substitution"])
            .description("Find and replace text using regex patterns.")
            .input(multiline("string"))
            .input(multiline("regex_pattern"))
            .input(multiline("replace"))
            .input(optional_flag("case_insensitive", true))
            .input(optional_flag("multiline", false))
            .input(optional_flag("dotall", false).tooltip(
                "When enabled, the dot (.) character will match any character including \
                     newline characters. When disabled, dots won't match newlines.",
            ))
            .input(
                InputDef::int("count")
                    .optional()
                    .tooltip(
                        "Maximum number of replacements to make. Set to 0 to replace all \
                         occurrences (default). Set to 1 to replace only the first match, 2 for \
                         the first two matches, etc.",
                    )
                    .advanced()
                    .default(0)
                    .min(0)
                    .max(100),
            )
            .output("STRING"),
    );
}
