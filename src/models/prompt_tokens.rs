//! ComfyUI's prompt → weighted token lists (`comfy/sd1_clip.py`: `token_weights`,
//! `SDTokenizer.tokenize_with_weights`): `(text:1.2)` / `(text)` weights, `\(` escapes, words
//! kept whole across batch boundaries unless longer than 8 tokens, start/end/pad tokens,
//! textual-inversion embeddings.

use super::embeddings::DROPPED;

/// `token_weights(escape_important(text), 1.0)`: the text split into (segment, weight).
pub fn token_weights(text: &str) -> Vec<(String, f64)> {
    let escaped = text.replace("\\)", "\0\u{1}").replace("\\(", "\0\u{2}");
    weights_of(&escaped, 1.0)
        .into_iter()
        .map(|(s, w)| (s.replace("\0\u{1}", ")").replace("\0\u{2}", "("), w))
        .collect()
}

/// `parse_parentheses`: top-level groups `( … )` and the text between them.
fn parse_parentheses(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut depth = 0i32;
    for c in text.chars() {
        match c {
            '(' => {
                if depth == 0 && !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
                current.push('(');
                depth += 1;
            }
            ')' => {
                depth -= 1;
                if depth == 0 {
                    current.push(')');
                    out.push(std::mem::take(&mut current));
                } else {
                    current.push(')');
                }
            }
            _ => current.push(c),
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn weights_of(text: &str, weight: f64) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for group in parse_parentheses(text) {
        let inner = group
            .strip_prefix('(')
            .and_then(|g| g.strip_suffix(')'))
            .filter(|_| group.chars().count() >= 2);
        let Some(inner) = inner else {
            out.push((group, weight));
            continue;
        };
        let mut inner = inner;
        let mut w = weight * 1.1;
        if let Some(colon) = inner.rfind(':').filter(|&i| i > 0) {
            if let Some(explicit) = parse_python_float(&inner[colon + 1..]) {
                w = explicit;
                inner = &inner[..colon];
            }
        }
        out.extend(weights_of(inner, w));
    }
    out
}

/// Python's `float(s)`: surrounding whitespace allowed, `inf`/`nan` words, underscores between
/// digits.
fn parse_python_float(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() || t.starts_with('_') || t.ends_with('_') || t.contains("__") {
        return None;
    }
    let cleaned = t.replace('_', "");
    let lower = cleaned.to_ascii_lowercase();
    let unsigned = lower.trim_start_matches(['+', '-']);
    if matches!(unsigned, "inf" | "infinity" | "nan") {
        return lower.parse().ok();
    }
    if !unsigned
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | '+' | '-'))
    {
        return None;
    }
    cleaned.parse().ok()
}

/// How a family's tokenizer frames and pads its token lists (the `SDTokenizer` arguments).
#[derive(Clone, Debug)]
pub struct Framing {
    pub start: Option<u32>,
    pub end: Option<u32>,
    pub pad: u32,
    pub max_length: usize,
    pub min_length: Option<usize>,
    pub pad_to_max_length: bool,
    /// `(text:1.2)` weighting; SAM 3's tokenizer disables it and reads the text as written.
    pub weights: bool,
}

/// A word longer than this many tokens may be split across batches.
const MAX_WORD_LENGTH: usize = 8;
const EMBEDDING_IDENTIFIER: &str = "embedding:";

/// `tokenize_with_weights`: batches of (token, weight). `tokenize_word` turns a piece of text
/// into tokens without the start/end tokens the tokenizer adds; `embedding` gives the ids
/// standing for a textual-inversion embedding's vectors (`embedding:name`), `None` for a
/// missing one, which is dropped with a warning while the rest of its word is tokenized.
/// Vectors of the wrong width (`DROPPED`) hold their places while batching and then leave the
/// sequence, which is padded at the end; the weights stay by position, as in ComfyUI.
pub fn tokenize_with_weights(
    text: &str,
    framing: &Framing,
    tokenize_word: impl Fn(&str) -> Vec<u32>,
    mut embedding: impl FnMut(&str) -> Option<Vec<u32>>,
) -> Vec<Vec<(u32, f64)>> {
    let mut groups: Vec<Vec<(u32, f64)>> = Vec::new();
    let segments = if framing.weights {
        token_weights(text)
    } else {
        // `escape_important` then `unescape_important`: only the backslashes of `\(` go.
        vec![(text.replace("\\)", ")").replace("\\(", "("), 1.0)]
    };
    for (segment, weight) in segments {
        for word in split_embeddings(&segment) {
            let word = match word.strip_prefix(EMBEDDING_IDENTIFIER) {
                Some(name) => {
                    let (name, found, leftover) = find_embedding(name, &mut embedding);
                    match found {
                        Some(ids) => groups.push(ids.into_iter().map(|t| (t, weight)).collect()),
                        None => log::warn!("warning, embedding:{name} does not exist, ignoring"),
                    }
                    if leftover.is_empty() {
                        continue;
                    }
                    leftover
                }
                None => word,
            };
            groups.push(
                tokenize_word(&word)
                    .into_iter()
                    .map(|t| (t, weight))
                    .collect(),
            );
        }
    }
    batch_groups(groups, framing)
        .into_iter()
        .map(|batch| drop_mismatched(batch, framing.pad))
        .collect()
}

/// `SDTokenizer._try_get_embedding`: the name is the first word, cut at `<` or `[`; a name not
/// found is tried again without surrounding commas. Gives the name, the embedding's ids and
/// the text left to tokenize.
fn find_embedding(
    text: &str,
    embedding: &mut impl FnMut(&str) -> Option<Vec<u32>>,
) -> (String, Option<Vec<u32>>, String) {
    let text = text.trim_matches('\n');
    let mut words = text.split_whitespace();
    let mut name = words.next().unwrap_or("").to_string();
    let mut leftover = words.collect::<Vec<_>>().join(" ");
    if let Some(at) = name.find(['<', '[']) {
        leftover = if leftover.is_empty() {
            name[at..].to_string()
        } else {
            format!("{} {leftover}", &name[at..])
        };
        name.truncate(at);
    }
    let found = embedding(&name);
    if found.is_none() {
        let stripped = name.trim_matches(',');
        if stripped.len() < name.len() {
            let found = embedding(stripped);
            let rest = format!("{} {leftover}", &name[stripped.len()..]);
            return (name, found, rest);
        }
    }
    (name, found, leftover)
}

/// A batch without the vectors of mismatched embeddings, padded back to its length; the
/// weights keep their positions.
fn drop_mismatched(batch: Vec<(u32, f64)>, pad: u32) -> Vec<(u32, f64)> {
    if !batch.iter().any(|(t, _)| *t == DROPPED) {
        return batch;
    }
    let kept = batch.iter().map(|(t, _)| *t).filter(|&t| t != DROPPED);
    let ids = kept.chain(std::iter::repeat(pad));
    batch.iter().zip(ids).map(|((_, w), t)| (t, *w)).collect()
}

/// `re.split(r'(?<=\s)embedding:', text)` with the identifier put back on every part but the
/// first; empty parts dropped.
fn split_embeddings(text: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut search = 0;
    while let Some(found) = text[search..].find(EMBEDDING_IDENTIFIER) {
        let at = search + found;
        let after_space = text[..at]
            .chars()
            .next_back()
            .is_some_and(char::is_whitespace);
        if after_space {
            parts.push(text[start..at].to_string());
            start = at;
        }
        search = at + EMBEDDING_IDENTIFIER.len();
    }
    parts.push(text[start..].to_string());
    parts.retain(|p| !p.is_empty());
    parts
}

fn batch_groups(groups: Vec<Vec<(u32, f64)>>, f: &Framing) -> Vec<Vec<(u32, f64)>> {
    let new_batch = || f.start.map(|s| vec![(s, 1.0)]).unwrap_or_default();
    let reserved = usize::from(f.end.is_some());
    let mut batches = Vec::new();
    let mut batch = new_batch();
    for mut group in groups {
        let is_large = group.len() >= MAX_WORD_LENGTH;
        while !group.is_empty() {
            if group.len() + batch.len() > f.max_length - reserved {
                let remaining = f.max_length - batch.len() - reserved;
                if is_large {
                    let rest = group.split_off(remaining);
                    batch.append(&mut group);
                    group = rest;
                    batch.extend(f.end.map(|e| (e, 1.0)));
                } else {
                    batch.extend(f.end.map(|e| (e, 1.0)));
                    if f.pad_to_max_length {
                        batch.extend(std::iter::repeat_n((f.pad, 1.0), remaining));
                    }
                }
                batches.push(std::mem::replace(&mut batch, new_batch()));
            } else {
                batch.append(&mut group);
            }
        }
    }
    batch.extend(f.end.map(|e| (e, 1.0)));
    if f.pad_to_max_length && batch.len() < f.max_length {
        batch.extend(std::iter::repeat_n(
            (f.pad, 1.0),
            f.max_length - batch.len(),
        ));
    }
    if let Some(min) = f.min_length.filter(|&m| batch.len() < m) {
        batch.extend(std::iter::repeat_n((f.pad, 1.0), min - batch.len()));
    }
    batches.push(batch);
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(s: &str, w: f64) -> (String, f64) {
        (s.to_string(), w)
    }

    #[test]
    fn weights_follow_comfyui_syntax() {
        assert_eq!(
            token_weights("a (b:1.5) ((c)) \\(d\\) (e:x)"),
            vec![
                seg("a ", 1.0),
                seg("b", 1.5),
                seg(" ", 1.0),
                seg("c", 1.1 * 1.1),
                seg(" (d) ", 1.0),
                seg("e:x", 1.1),
            ]
        );
        // An unclosed group stays one segment at the outer weight.
        assert_eq!(token_weights("x (y"), vec![seg("x ", 1.0), seg("(y", 1.0)]);
    }

    #[test]
    fn batches_frame_and_pad_like_sdtokenizer() {
        let umt5 = Framing {
            start: None,
            end: Some(1),
            pad: 0,
            max_length: 99_999_999,
            min_length: Some(6),
            pad_to_max_length: false,
            weights: true,
        };
        let words = |w: &str| w.bytes().map(u32::from).collect::<Vec<_>>();
        let out = tokenize_with_weights("ab (c:2)", &umt5, words, |_| None);
        assert_eq!(
            out,
            vec![vec![
                (97, 1.0),
                (98, 1.0),
                (32, 1.0),
                (99, 2.0),
                (1, 1.0),
                (0, 1.0)
            ]]
        );
        // CLIP-style: a group that does not fit closes the batch (end token, padding) and
        // starts the next one with the start token.
        let clip = Framing {
            start: Some(9),
            end: Some(8),
            pad: 7,
            max_length: 8,
            min_length: None,
            pad_to_max_length: true,
            weights: true,
        };
        let out = tokenize_with_weights("abcde (fg:2)", &clip, words, |_| None);
        let ids: Vec<Vec<u32>> = out
            .iter()
            .map(|b| b.iter().map(|t| t.0).collect())
            .collect();
        assert_eq!(
            ids,
            vec![
                vec![9, 97, 98, 99, 100, 101, 32, 8],
                vec![9, 102, 103, 8, 7, 7, 7, 7]
            ]
        );
        assert_eq!(out[1][1].1, 2.0);
    }

    #[test]
    fn embeddings_stand_in_for_tokens_and_missing_ones_are_dropped() {
        assert_eq!(
            split_embeddings("a embedding:x b"),
            vec!["a ", "embedding:x b"]
        );
        let f = Framing {
            start: None,
            end: None,
            pad: 0,
            max_length: 100,
            min_length: None,
            pad_to_max_length: false,
            weights: true,
        };
        let len = |w: &str| vec![w.len() as u32];
        let out = tokenize_with_weights("a embedding:x b", &f, len, |_| None);
        assert_eq!(out, vec![vec![(2, 1.0), (1, 1.0)]]);
        // Found: its ids in place, at the segment's weight; `name,` is retried without the
        // comma, which is tokenized with what follows.
        let known = |n: &str| (n == "e").then(|| vec![70, 71]);
        let out = tokenize_with_weights("a (embedding:e, b:2)", &f, len, known);
        assert_eq!(out, vec![vec![(2, 1.0), (70, 2.0), (71, 2.0), (3, 2.0)]]);
        // A name is cut at `[`/`<`, the rest tokenized.
        let out = tokenize_with_weights("a embedding:e[x]", &f, len, known);
        assert_eq!(out, vec![vec![(2, 1.0), (70, 1.0), (71, 1.0), (3, 1.0)]]);
    }

    #[test]
    fn mismatched_embeddings_leave_and_pad_the_end() {
        let f = Framing {
            start: Some(9),
            end: Some(8),
            pad: 7,
            max_length: 8,
            min_length: None,
            pad_to_max_length: true,
            weights: true,
        };
        let len = |w: &str| vec![w.len() as u32];
        let wrong = |_: &str| Some(vec![DROPPED, DROPPED]);
        let out = tokenize_with_weights("a (embedding:w:2) bb", &f, len, wrong);
        assert_eq!(
            out,
            vec![vec![
                (9, 1.0),
                (2, 1.0),
                (3, 2.0),
                (8, 2.0),
                (7, 1.0),
                (7, 1.0),
                (7, 1.0),
                (7, 1.0)
            ]]
        );
    }
}
