//! CLIP's byte-level BPE tokenizer (49408 tokens), encoding as the `CLIPTokenizer` ComfyUI
//! runs does: NFC, whitespace runs collapsed, lowercase, CLIP's split regex, bytes mapped to
//! printable characters, then merges by rank with `</w>` closing each word.
//!
//! The merges come from OpenAI's `bpe_simple_vocab_16e6.txt.gz`, which the PyPI package
//! `open-clip-torch` ships (`make setup` installs it into the venv): the vocabulary is the 256
//! byte characters, the same with `</w>`, one entry per merge, then the two special tokens.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use anyhow::{bail, Context, Result};
use regex::Regex;
use unicode_normalization::UnicodeNormalization;

pub const START_TOKEN: u32 = 49406;
pub const END_TOKEN: u32 = 49407;
const VOCAB_FILE: &str = "open_clip/bpe_simple_vocab_16e6.txt.gz";
/// OpenAI's tokenizer keeps the first 48894 merges (`49152 − 256 − 2`).
const MERGES: usize = 49152 - 256 - 2;
const SPECIALS: [(&str, u32); 2] = [
    ("<|startoftext|>", START_TOKEN),
    ("<|endoftext|>", END_TOKEN),
];
const SPLIT: &str = r"'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+";

pub struct ClipTokenizer {
    vocab: HashMap<String, u32>,
    ranks: HashMap<(String, String), usize>,
    byte_chars: [char; 256],
    split: Regex,
    whitespace: Regex,
    cache: Mutex<HashMap<String, Vec<u32>>>,
}

/// GPT-2's `bytes_to_unicode`: printable bytes map to themselves, the rest to 256 + n.
fn byte_chars() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        out[b as usize] = if printable {
            b as char
        } else {
            extra += 1;
            char::from_u32(255 + extra).expect("valid code point")
        };
    }
    out
}

/// The shared tokenizer, read once from the venv's `open_clip` package.
pub fn shared() -> Result<&'static ClipTokenizer> {
    static TOKENIZER: OnceLock<ClipTokenizer> = OnceLock::new();
    if let Some(t) = TOKENIZER.get() {
        return Ok(t);
    }
    let path = locate().with_context(|| {
        format!(
            "CLIP's BPE vocabulary ({VOCAB_FILE}) was not found in a venv beside VideosDGX; \
             run `make setup` or `pip install --no-deps open-clip-torch==3.3.0` into the venv \
             the server uses"
        )
    })?;
    let tokenizer = ClipTokenizer::from_gz(&path)?;
    Ok(TOKENIZER.get_or_init(|| tokenizer))
}

fn locate() -> Option<PathBuf> {
    crate::venv::site_packages()
        .into_iter()
        .map(|site| site.join(VOCAB_FILE))
        .find(|p| p.is_file())
}

impl ClipTokenizer {
    pub fn from_gz(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
        let mut text = String::new();
        flate2::read::GzDecoder::new(file)
            .read_to_string(&mut text)
            .with_context(|| format!("reading {}", path.display()))?;
        Self::from_merges(&text)
    }

    /// The tokenizer from the merges file's text (a version line, then one merge per line).
    pub fn from_merges(text: &str) -> Result<Self> {
        let merges: Vec<(String, String)> = text
            .lines()
            .skip(1)
            .take(MERGES)
            .map(|l| {
                let (a, b) = l.split_once(' ').context("a merge line without a space")?;
                Ok((a.to_string(), b.to_string()))
            })
            .collect::<Result<_>>()?;
        if merges.len() != MERGES {
            bail!("CLIP's BPE file has {} merges, not {MERGES}", merges.len());
        }
        let byte_chars = byte_chars();
        // `bytes_to_unicode` lists the printable bytes first, then the remapped ones.
        let mut order: Vec<char> = byte_chars.to_vec();
        order.sort_by_key(|c| (*c as u32 > 255, *c as u32));
        let mut entries: Vec<String> = order.iter().map(char::to_string).collect();
        entries.extend(order.iter().map(|c| format!("{c}</w>")));
        entries.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
        entries.extend(SPECIALS.iter().map(|(s, _)| s.to_string()));
        let vocab = entries
            .into_iter()
            .enumerate()
            .map(|(i, s)| (s, i as u32))
            .collect();
        let ranks = merges
            .into_iter()
            .enumerate()
            .map(|(i, m)| (m, i))
            .collect();
        Ok(Self {
            vocab,
            ranks,
            byte_chars,
            split: Regex::new(SPLIT).expect("CLIP split pattern"),
            whitespace: Regex::new(r"\s+").expect("whitespace pattern"),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The tokens of `text`, without start and end tokens; the special tokens written out
    /// literally map to themselves.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let next = SPECIALS
                .iter()
                .filter_map(|(s, id)| rest.find(s).map(|at| (at, *s, *id)))
                .min_by_key(|(at, _, _)| *at);
            let Some((at, special, id)) = next else {
                self.encode_plain(rest, &mut out);
                break;
            };
            self.encode_plain(&rest[..at], &mut out);
            out.push(id);
            rest = &rest[at + special.len()..];
        }
        out
    }

    fn encode_plain(&self, text: &str, out: &mut Vec<u32>) {
        let normalized: String = text.nfc().collect();
        let normalized = self.whitespace.replace_all(&normalized, " ").to_lowercase();
        for piece in self.split.find_iter(&normalized) {
            let word: String = piece
                .as_str()
                .bytes()
                .map(|b| self.byte_chars[b as usize])
                .collect();
            let mut cache = self.cache.lock().expect("tokenizer cache");
            let tokens = cache.entry(word).or_insert_with_key(|w| self.bpe(w));
            out.extend_from_slice(tokens);
        }
    }

    /// Merges the word's symbols pair by pair, lowest rank first.
    fn bpe(&self, word: &str) -> Vec<u32> {
        let mut symbols: Vec<String> = word.chars().map(String::from).collect();
        if let Some(last) = symbols.last_mut() {
            last.push_str("</w>");
        }
        loop {
            let best = symbols
                .windows(2)
                .filter_map(|p| {
                    self.ranks
                        .get(&(p[0].clone(), p[1].clone()))
                        .map(|r| (*r, p))
                })
                .min_by_key(|(r, _)| *r)
                .map(|(_, p)| (p[0].clone(), p[1].clone()));
            let Some((left, right)) = best else { break };
            let mut merged = Vec::with_capacity(symbols.len());
            let mut i = 0;
            while i < symbols.len() {
                if i + 1 < symbols.len() && symbols[i] == left && symbols[i + 1] == right {
                    merged.push(format!("{left}{right}"));
                    i += 2;
                } else {
                    merged.push(std::mem::take(&mut symbols[i]));
                    i += 1;
                }
            }
            symbols = merged;
        }
        symbols
            .iter()
            .map(|s| *self.vocab.get(s).unwrap_or(&END_TOKEN))
            .collect()
    }
}
