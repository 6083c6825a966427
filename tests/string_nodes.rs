//! The text nodes' Python semantics (`videosdgx::pystr`) against Python itself
//! (tests/python/pystr_reference.py): slicing, capitalize, title, strip, and `re`'s search,
//! findall and sub with flags, look-around, back-references and replacement templates; then
//! the nodes through the server.

mod common;
mod reference;

use std::time::Duration;

use common::Server;
use serde_json::{json, Value};
use videosdgx::pystr::{self, Flags};

fn flags(f: &Value) -> Flags {
    Flags {
        ignore_case: f[0] == true,
        multiline: f[1] == true,
        dot_all: f[2] == true,
    }
}

/// Our answer for one case, as the reference script gives it (null for an error or no value).
fn ours(case: &Value) -> Value {
    let a = case.as_array().unwrap();
    let s = |i: usize| a[i].as_str().unwrap();
    let n = |i: usize| a[i].as_i64().unwrap();
    let re = |pattern: &str, f: &Value| pystr::compile(pattern, flags(f));
    let or_null = |r: Result<Value, String>| r.unwrap_or(Value::Null);
    match s(0) {
        "slice" => json!(pystr::slice(s(1), n(2), n(3))),
        "capitalize" => json!(pystr::capitalize(s(1))),
        "title" => json!(pystr::title(s(1))),
        "strip" => json!(pystr::strip(s(1), a[2] == true, a[3] == true)),
        "find_all" => or_null(
            re(s(1), &a[3])
                .and_then(|r| pystr::find_all(&r, s(2)))
                .map(|v| json!(v)),
        ),
        "first_group" => or_null(
            re(s(1), &a[4])
                .and_then(|r| pystr::first_group(&r, s(2), n(3) as usize))
                .map(|v| json!(v)),
        ),
        "all_groups" => or_null(
            re(s(1), &a[4])
                .and_then(|r| pystr::all_groups(&r, s(2), n(3) as usize))
                .map(|v| json!(v)),
        ),
        "sub" => or_null(
            re(s(1), &a[5])
                .and_then(|r| pystr::sub(&r, s(2), s(3), n(4) as usize))
                .map(|v| json!(v)),
        ),
        other => panic!("{other}"),
    }
}

#[test]
fn string_and_regex_semantics_match_python() {
    let none = json!([false, false, false]);
    let icase = json!([true, false, false]);
    let cases = json!([
        ["slice", "héllo wörld", 2, -3],
        ["slice", "héllo", -100, 100],
        ["slice", "héllo", 4, 2],
        ["slice", "", 0, 1],
        ["slice", "abcdef", -2, 0],
        ["capitalize", "hELLO wORLD"],
        ["capitalize", "123abc DEF"],
        ["capitalize", ""],
        ["title", "they're bill's friends from the UK"],
        ["title", "hello_world-foo 3rd x2y"],
        ["strip", "\u{1c}  hi there \t\n", true, true],
        ["strip", "  hi  ", true, false],
        ["strip", "  hi  ", false, true],
        ["find_all", "\\d+", "a1b22c333", none],
        ["find_all", "(\\d)(\\d)?", "a1b22", none],
        ["find_all", "(?<=a)b", "ab cb ab", none],
        ["find_all", "(x)|y", "xyxy", none],
        ["find_all", "^b", "a\nb\nb", json!([false, true, false])],
        ["find_all", "A", "aAa", icase],
        ["find_all", "(", "x", none],
        ["first_group", "(\\w+)@(\\w+)", "mail: bob@host", 2, none],
        ["first_group", "(\\w+)@(\\w+)", "mail: bob@host", 0, none],
        ["first_group", "(\\w+)@(\\w+)", "mail: bob@host", 3, none],
        ["first_group", "(\\w+)@(\\w+)", "no mail", 1, none],
        ["first_group", "a.b", "a\nb", 0, json!([false, false, true])],
        ["all_groups", "(\\w)(\\d)", "a1 b2 c", 2, none],
        ["all_groups", "\\w\\d", "a1 b2", 1, none],
        [
            "sub",
            "(\\w+) (\\w+)",
            "\\2 \\1",
            "hello world foo bar",
            0,
            none
        ],
        [
            "sub",
            "(\\w+) (\\w+)",
            "\\g<2>-\\g<1>",
            "hello world foo bar",
            1,
            none
        ],
        ["sub", "(?P<a>\\w)", "[\\g<a>]", "ab", 0, none],
        ["sub", "o", "$5\\n", "foo", 0, none],
        ["sub", "(\\w)\\1", "X", "aabbcd", 0, none],
        ["sub", "x*", "-", "abc", 0, none],
        ["sub", "O", "0", "foo", 0, icase],
        ["sub", "o", "\\d", "foo", 0, none],
        ["sub", "o", "\\3", "foo", 0, none],
    ]);
    let expected: Value = serde_json::from_slice(&reference::run(
        "pystr_reference.py",
        &[],
        cases.to_string().as_bytes(),
    ))
    .unwrap();
    for (case, want) in cases
        .as_array()
        .unwrap()
        .iter()
        .zip(expected.as_array().unwrap())
    {
        assert_eq!(&ours(case), want, "{case}");
    }
}

#[test]
fn text_nodes_run_through_the_server() {
    let s = Server::start(&[]);
    let prompt = json!({
        "a": {"class_type": "StringConcatenate", "inputs": {"string_a": "Order 66", "string_b": "shipped 3 days ago", "delimiter": ": "}},
        "b": {"class_type": "RegexExtract", "inputs": {"string": ["a", 0], "regex_pattern": "(\\d+)", "mode": "All Matches",
              "case_insensitive": true, "multiline": false, "dotall": false, "group_index": 1}},
        "c": {"class_type": "RegexReplace", "inputs": {"string": ["a", 0], "regex_pattern": "(\\w+) (\\d+)", "replace": "\\2-\\1"}},
        "d": {"class_type": "CaseConverter", "inputs": {"string": ["c", 0], "mode": "Title Case"}},
        "e": {"class_type": "StringLength", "inputs": {"string": ["a", 0]}},
        "f": {"class_type": "StringCompare", "inputs": {"string_a": ["a", 0], "string_b": "ORDER", "mode": "Starts With", "case_sensitive": false}},
        "pb": {"class_type": "PreviewAny", "inputs": {"source": ["b", 0]}},
        "pd": {"class_type": "PreviewAny", "inputs": {"source": ["d", 0]}},
        "pe": {"class_type": "PreviewAny", "inputs": {"source": ["e", 0]}},
        "pf": {"class_type": "PreviewAny", "inputs": {"source": ["f", 0]}},
    });
    let entry = s.run_ok(&prompt, Duration::from_secs(60));
    let text = |node: &str| entry["outputs"][node]["text"][0].clone();
    assert_eq!(text("pb"), json!("66\n3"));
    assert_eq!(text("pd"), json!("66-Order: 3-Shipped Days Ago"));
    assert_eq!(text("pe"), json!("28"));
    assert_eq!(text("pf"), json!("True"));
}
