//! Python's string and `re` semantics where ComfyUI's text nodes rely on them: slicing by code
//! points with negative indices, `capitalize`, `title` and `strip`, and regular expressions with
//! Python's flags, `findall` grouping and `sub` replacement templates (through `fancy_regex`,
//! which has Python's look-around and back-references).

use fancy_regex::{Captures, Regex, RegexBuilder};

/// `s[start:end]`.
pub fn slice(s: &str, start: i64, end: i64) -> String {
    let chars: Vec<char> = s.chars().collect();
    let n = chars.len() as i64;
    let at = |i: i64| if i < 0 { (i + n).max(0) } else { i.min(n) } as usize;
    let (a, b) = (at(start), at(end));
    if a >= b {
        return String::new();
    }
    chars[a..b].iter().collect()
}

/// Whether Python counts `c` as whitespace (`str.isspace`, which adds the ASCII separators
/// U+001C…U+001F to Unicode's white space).
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `strip()`, `lstrip()` or `rstrip()`.
pub fn strip(s: &str, left: bool, right: bool) -> &str {
    let s = if left {
        s.trim_start_matches(is_py_space)
    } else {
        s
    };
    if right {
        s.trim_end_matches(is_py_space)
    } else {
        s
    }
}

fn is_cased(c: char) -> bool {
    c.is_lowercase() || c.is_uppercase()
}

/// `capitalize()`: the first character upper-cased, the rest lower-cased.
pub fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first
            .to_uppercase()
            .chain(chars.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}

/// `title()`: a cased character after an uncased one is upper-cased, the others lower-cased.
pub fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut previous_cased = false;
    for c in s.chars() {
        if previous_cased {
            out.extend(c.to_lowercase());
        } else {
            out.extend(c.to_uppercase());
        }
        previous_cased = is_cased(c);
    }
    out
}

/// Python's `re.IGNORECASE`, `re.MULTILINE` and `re.DOTALL`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Flags {
    pub ignore_case: bool,
    pub multiline: bool,
    pub dot_all: bool,
}

/// `re.compile(pattern, flags)`.
pub fn compile(pattern: &str, flags: Flags) -> Result<Regex, String> {
    let mut builder = RegexBuilder::new(pattern);
    builder
        .case_insensitive(flags.ignore_case)
        .multi_line(flags.multiline)
        .dot_matches_new_line(flags.dot_all);
    builder.build().map_err(|e| e.to_string())
}

fn group(c: &Captures<'_, str>, i: usize) -> String {
    c.get(i).map_or(String::new(), |m| m.as_str().to_string())
}

/// `re.findall`: the whole matches, or each match's first group when the pattern has groups
/// (ComfyUI keeps the first of several).
pub fn find_all(re: &Regex, s: &str) -> Result<Vec<String>, String> {
    let groups = re.captures_len() > 1;
    re.captures_iter(s)
        .map(|c| {
            let c = c.map_err(|e| e.to_string())?;
            Ok(group(&c, usize::from(groups)))
        })
        .collect()
}

/// `match.group(index)` of the first match, when the pattern has that many groups.
pub fn first_group(re: &Regex, s: &str, index: usize) -> Result<Option<String>, String> {
    let captures = re.captures(s).map_err(|e| e.to_string())?;
    Ok(captures
        .filter(|_| re.captures_len() > index)
        .map(|c| group(&c, index)))
}

/// Group `index` of every match, for patterns with at least one group and that many.
pub fn all_groups(re: &Regex, s: &str, index: usize) -> Result<Vec<String>, String> {
    if re.captures_len() <= 1 || re.captures_len() <= index {
        return Ok(Vec::new());
    }
    re.captures_iter(s)
        .map(|c| c.map(|c| group(&c, index)).map_err(|e| e.to_string()))
        .collect()
}

/// A piece of a `re.sub` replacement template.
enum Piece {
    Text(String),
    Group(String),
}

/// Python's replacement template: `\1`…`\99` and `\g<n>` / `\g<name>` refer to groups, the
/// usual escapes stand for their characters, other escapes of ASCII letters are errors.
fn template(repl: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = repl.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            text.push(c);
            continue;
        }
        let Some(next) = chars.next() else {
            return Err("bad escape (end of pattern)".into());
        };
        let escaped = match next {
            'n' => Some('\n'),
            't' => Some('\t'),
            'r' => Some('\r'),
            'f' => Some('\u{c}'),
            'v' => Some('\u{b}'),
            'a' => Some('\u{7}'),
            'b' => Some('\u{8}'),
            '0' => Some('\0'),
            '\\' => Some('\\'),
            _ => None,
        };
        if let Some(e) = escaped {
            text.push(e);
            continue;
        }
        let name = if next == 'g' {
            if chars.next() != Some('<') {
                return Err("missing <".into());
            }
            let name: String = chars.by_ref().take_while(|c| *c != '>').collect();
            if name.is_empty() {
                return Err("missing group name".into());
            }
            name
        } else if next.is_ascii_digit() {
            let mut digits = next.to_string();
            if let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                digits.push(*d);
                chars.next();
            }
            digits
        } else if next.is_ascii_alphabetic() {
            return Err(format!("bad escape \\{next}"));
        } else {
            text.push('\\');
            text.push(next);
            continue;
        };
        pieces.push(Piece::Text(std::mem::take(&mut text)));
        pieces.push(Piece::Group(name));
    }
    pieces.push(Piece::Text(text));
    Ok(pieces)
}

/// `re.sub(pattern, repl, s, count)` (`count` 0: every match).
pub fn sub(re: &Regex, repl: &str, s: &str, count: usize) -> Result<String, String> {
    let pieces = template(repl)?;
    for piece in &pieces {
        if let Piece::Group(name) = piece {
            let known = match name.parse::<usize>() {
                Ok(i) => i < re.captures_len(),
                Err(_) => re.capture_names().flatten().any(|n| n == name),
            };
            if !known {
                return Err(format!("invalid group reference {name}"));
            }
        }
    }
    let mut out = String::new();
    let mut last = 0;
    for (n, captures) in re.captures_iter(s).enumerate() {
        if count > 0 && n >= count {
            break;
        }
        let c = captures.map_err(|e| e.to_string())?;
        let whole = c.get(0).expect("group 0 always matches");
        out.push_str(&s[last..whole.start()]);
        for piece in &pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Group(name) => {
                    let m = match name.parse::<usize>() {
                        Ok(i) => c.get(i),
                        Err(_) => c.name(name),
                    };
                    out.push_str(m.map_or("", |m| m.as_str()));
                }
            }
        }
        last = whole.end();
    }
    out.push_str(&s[last..]);
    Ok(out)
}
