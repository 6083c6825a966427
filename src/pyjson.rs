//! JSON and value formatting the way ComfyUI's Python produces it.
//!
//! Clients compare text produced by `json.dumps` (", " and ": " separators, ASCII-only
//! strings) and error messages that embed Python `repr` of values (`'a'`, `7.0`, `True`).

use serde::Serialize;
use serde_json::ser::Formatter;
use serde_json::{Number, Value};
use std::io;

/// `json.dumps(value)` with Python's default separators and `ensure_ascii=True`.
pub fn dumps<T: Serialize + ?Sized>(value: &T) -> String {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    value
        .serialize(&mut ser)
        .expect("serialising to memory cannot fail");
    String::from_utf8(out).expect("formatter writes ASCII only")
}

struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        if fragment.is_ascii() {
            return w.write_all(fragment.as_bytes());
        }
        let mut units = [0u16; 2];
        for ch in fragment.chars() {
            if ch.is_ascii() {
                w.write_all(&[ch as u8])?;
            } else {
                for unit in ch.encode_utf16(&mut units) {
                    write!(w, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

/// Python's `repr(float)`: shortest round-trip digits, exponent outside 1e-4..1e16.
pub fn float_repr(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    let exp = v.abs().log10().floor() as i32;
    if (-4..16).contains(&exp) {
        let s = format!("{v}");
        if s.contains('.') {
            s
        } else {
            format!("{s}.0")
        }
    } else {
        let s = format!("{v:e}");
        let (mantissa, e) = s.split_once('e').expect("{:e} always has an exponent");
        let e: i32 = e.parse().expect("exponent is an integer");
        let sign = if e < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", e.abs())
    }
}

/// A JSON number holding a float, printed as Python prints it (`5.0`, `1e+20`).
pub fn float_number(v: f64) -> Value {
    if !v.is_finite() {
        // Python's json.dumps emits bare NaN/Infinity tokens; JSON parsers reject them.
        return Value::Null;
    }
    float_repr(v)
        .parse::<Number>()
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// Python's `repr(str)`: single quotes unless the text holds a single quote and no double quote.
pub fn str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c)
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `repr()` of a JSON value as the `json` module would have loaded it.
pub fn value_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => number_repr(n),
        Value::String(s) => str_repr(s),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(value_repr).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", str_repr(k), value_repr(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

/// `str()` of a JSON value: strings bare, everything else as `repr`.
pub fn value_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => value_repr(other),
    }
}

fn number_repr(n: &Number) -> String {
    if is_integer(n) {
        n.to_string()
    } else {
        float_repr(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// Whether Python's json module would load this number as an `int`.
pub fn is_integer(n: &Number) -> bool {
    let text = n.to_string();
    !text.contains(['.', 'e', 'E'])
}

/// The exact integer value of a JSON integer (ComfyUI seeds reach 2^64 - 1).
pub fn as_i128(n: &Number) -> Option<i128> {
    if is_integer(n) {
        n.to_string().parse().ok()
    } else {
        None
    }
}

/// A JSON number from an exact integer.
pub fn int_number(v: i128) -> Value {
    Value::Number(
        v.to_string()
            .parse()
            .expect("an integer is a valid JSON number"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dumps_matches_python_separators_and_ascii() {
        let v = json!({"a": [1, 2], "b": "é✓", "c": {"d": null}});
        assert_eq!(
            dumps(&v),
            r#"{"a": [1, 2], "b": "\u00e9\u2713", "c": {"d": null}}"#
        );
    }

    #[test]
    fn float_repr_matches_python() {
        assert_eq!(float_repr(5.0), "5.0");
        assert_eq!(float_repr(0.1), "0.1");
        assert_eq!(float_repr(1e16), "1e+16");
        assert_eq!(float_repr(1e15), "1000000000000000.0");
        assert_eq!(float_repr(0.0001), "0.0001");
        assert_eq!(float_repr(0.00001), "1e-05");
        assert_eq!(float_repr(-2.5e-7), "-2.5e-07");
        assert_eq!(float_repr(f64::NAN), "nan");
    }

    #[test]
    fn reprs_match_python() {
        assert_eq!(str_repr("it's"), "\"it's\"");
        assert_eq!(str_repr("a'b\"c"), "'a\\'b\"c'");
        assert_eq!(
            value_repr(&json!([1, 2.0, "x", true, null])),
            "[1, 2.0, 'x', True, None]"
        );
        assert_eq!(value_repr(&json!({"k": 1})), "{'k': 1}");
    }

    #[test]
    fn big_integers_survive() {
        let v: Value = serde_json::from_str("18446744073709551615").unwrap();
        let Value::Number(n) = &v else { panic!() };
        assert_eq!(as_i128(n), Some(18446744073709551615));
        assert_eq!(dumps(&v), "18446744073709551615");
        assert_eq!(dumps(&float_number(5.0)), "5.0");
    }
}
