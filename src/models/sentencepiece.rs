//! A SentencePiece tokenizer read from a serialized `ModelProto` (the bytes ComfyUI keeps in a
//! text encoder's `spiece_model` tensor), encoding exactly as the C++ library does: the
//! normalizer (precompiled character map, dummy prefix, extra-whitespace removal, `▁` escaping,
//! user-defined symbols passed through), then for unigram models (T5/UMT5) Viterbi over piece
//! scores with the unknown penalty, runs of unknown characters merged; for BPE models (Gemma)
//! the highest-scoring adjacent pair merged first, leftmost on ties, user-defined symbols never
//! merged. Unknown pieces become `<0xXX>` pieces where the model has byte fallback.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use anyhow::{bail, Context, Result};

const SPACE_SYMBOL: &str = "\u{2581}";
/// sentencepiece's `kUnkPenalty`: an unknown character scores this much below the worst piece.
const UNK_PENALTY: f32 = 10.0;
/// User-defined symbols always win: `length · max_score − 0.1`.
const USER_DEFINED_PENALTY: f32 = 0.1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PieceType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl PieceType {
    fn from_proto(v: u64) -> Self {
        match v {
            2 => PieceType::Unknown,
            3 => PieceType::Control,
            4 => PieceType::UserDefined,
            5 => PieceType::Unused,
            6 => PieceType::Byte,
            _ => PieceType::Normal,
        }
    }
}

struct Piece {
    text: String,
    score: f32,
    kind: PieceType,
}

/// The normalizer's settings (`NormalizerSpec`).
struct NormalizerSpec {
    charsmap: Option<CharsMap>,
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    escape_whitespaces: bool,
}

pub struct SentencePiece {
    pieces: Vec<Piece>,
    /// Pieces the lattice may use (normal and user-defined), by text.
    vocab: HashMap<String, u32>,
    user_defined: Vec<String>,
    /// `<0xXX>` pieces by byte, for byte fallback.
    byte_pieces: HashMap<u8, u32>,
    max_piece_bytes: usize,
    min_score: f32,
    max_score: f32,
    unk_id: u32,
    eos_id: Option<u32>,
    byte_fallback: bool,
    treat_whitespace_as_suffix: bool,
    normalizer: NormalizerSpec,
    bpe: bool,
    /// What an unknown piece decodes to (`TrainerSpec.unk_surface`).
    unk_surface: String,
}

/// `TrainerSpec.model_type`'s values this reader encodes.
const UNIGRAM: u64 = 1;
const BPE: u64 = 2;

impl SentencePiece {
    pub fn from_proto(bytes: &[u8]) -> Result<Self> {
        let mut pieces = Vec::new();
        let mut trainer = TrainerSpec::default();
        let mut normalizer = None;
        for field in Fields::new(bytes) {
            let (number, value) = field.context("sentencepiece model: malformed protobuf")?;
            match (number, value) {
                (1, FieldValue::Bytes(b)) => pieces.push(parse_piece(b)?),
                (2, FieldValue::Bytes(b)) => trainer = parse_trainer(b)?,
                (3, FieldValue::Bytes(b)) => normalizer = Some(parse_normalizer(b)?),
                _ => {}
            }
        }
        if pieces.is_empty() {
            bail!("sentencepiece model has no pieces");
        }
        if ![UNIGRAM, BPE].contains(&trainer.model_type) {
            bail!(
                "sentencepiece model type {} is neither unigram nor BPE",
                trainer.model_type
            );
        }
        let normalizer = normalizer.unwrap_or(NormalizerSpec {
            charsmap: None,
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        });
        let mut vocab = HashMap::new();
        let mut user_defined = Vec::new();
        let (mut min_score, mut max_score) = (f32::MAX, f32::MIN);
        for (id, p) in pieces.iter().enumerate() {
            match p.kind {
                PieceType::Normal => {
                    min_score = min_score.min(p.score);
                    max_score = max_score.max(p.score);
                    vocab.insert(p.text.clone(), id as u32);
                }
                PieceType::UserDefined => {
                    user_defined.push(p.text.clone());
                    vocab.insert(p.text.clone(), id as u32);
                }
                _ => {}
            }
        }
        let unk_id = u32::try_from(trainer.unk_id).context("sentencepiece model has no unk")?;
        if pieces.get(unk_id as usize).map(|p| p.kind) != Some(PieceType::Unknown) {
            bail!("sentencepiece model: unk_id {unk_id} is not the unknown piece");
        }
        let byte_pieces = pieces
            .iter()
            .enumerate()
            .filter(|(_, p)| p.kind == PieceType::Byte)
            .filter_map(|(id, p)| Some((byte_of(&p.text)?, id as u32)))
            .collect();
        let eos_id = u32::try_from(trainer.eos_id)
            .ok()
            .filter(|id| (*id as usize) < pieces.len());
        Ok(Self {
            max_piece_bytes: vocab.keys().map(String::len).max().unwrap_or(1),
            pieces,
            vocab,
            user_defined,
            byte_pieces,
            min_score,
            max_score,
            unk_id,
            eos_id,
            byte_fallback: trainer.byte_fallback,
            treat_whitespace_as_suffix: trainer.treat_whitespace_as_suffix,
            normalizer,
            bpe: trainer.model_type == BPE,
            unk_surface: trainer.unk_surface,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    pub fn piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(|p| p.text.as_str())
    }

    /// Token ids of `text`, without BOS/EOS (`encode(text, add_bos=False, add_eos=False)`).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let normalized = self.normalize(text);
        let pieces = if self.bpe {
            self.bpe_merge(&normalized)
        } else {
            self.viterbi(&normalized)
        };
        let mut ids = Vec::new();
        let mut prev_unknown = false;
        for (piece, id) in pieces {
            let unknown = id == self.unk_id;
            if unknown && self.byte_fallback {
                ids.extend(piece.bytes().map(|b| self.byte_piece(b)));
            } else if !(unknown && prev_unknown && !self.bpe) {
                // Unigram merges a run of unknown characters into one unknown piece.
                ids.push(id);
            }
            prev_unknown = unknown;
        }
        ids
    }

    /// The BPE segmentation of `normalized` (`bpe::Model::SampleEncode` without sampling):
    /// symbols are characters or whole user-defined symbols (frozen); the adjacent pair whose
    /// concatenation is a piece with the highest score merges first, the leftmost on ties.
    fn bpe_merge<'a>(&self, normalized: &'a str) -> Vec<(&'a str, u32)> {
        // (start, end) byte spans; an empty span is a symbol merged into its left neighbour.
        let mut spans: Vec<(usize, usize, bool)> = Vec::new();
        let mut at = 0;
        while at < normalized.len() {
            let rest = &normalized[at..];
            let user = self
                .user_defined
                .iter()
                .filter(|s| rest.starts_with(s.as_str()))
                .map(String::len)
                .max();
            let len = user.unwrap_or_else(|| rest.chars().next().map_or(1, char::len_utf8));
            spans.push((at, at + len, user.is_some()));
            at += len;
        }
        let n = spans.len();
        let mut prev: Vec<Option<usize>> = (0..n).map(|i| i.checked_sub(1)).collect();
        let mut next: Vec<Option<usize>> = (0..n).map(|i| (i + 1 < n).then_some(i + 1)).collect();
        let mut agenda = BinaryHeap::new();
        let candidate = |spans: &[(usize, usize, bool)], left: usize, right: usize| {
            let ((start, _, frozen_l), (_, end, frozen_r)) = (spans[left], spans[right]);
            if frozen_l || frozen_r {
                return None;
            }
            let id = *self.vocab.get(&normalized[start..end])?;
            let piece = &self.pieces[id as usize];
            (piece.kind == PieceType::Normal).then_some(Pair {
                score: piece.score,
                left,
                right,
                size: end - start,
            })
        };
        for i in 1..n {
            agenda.extend(candidate(&spans, i - 1, i));
        }
        while let Some(top) = agenda.pop() {
            let (l, r) = (spans[top.left], spans[top.right]);
            // Stale: one side was merged away or grew since the pair was queued.
            if l.0 == l.1
                || r.0 == r.1
                || r.1 - l.0 != top.size
                || next[top.left] != Some(top.right)
            {
                continue;
            }
            spans[top.left].1 = r.1;
            spans[top.right].1 = r.0;
            next[top.left] = next[top.right];
            if let Some(after) = next[top.right] {
                prev[after] = Some(top.left);
            }
            if let Some(before) = prev[top.left] {
                agenda.extend(candidate(&spans, before, top.left));
            }
            if let Some(after) = next[top.left] {
                agenda.extend(candidate(&spans, top.left, after));
            }
        }
        let mut out = Vec::new();
        let mut index = (n > 0).then_some(0);
        while let Some(i) = index {
            let piece = &normalized[spans[i].0..spans[i].1];
            out.push((piece, self.vocab.get(piece).copied().unwrap_or(self.unk_id)));
            index = next[i];
        }
        out
    }

    /// `SentencePieceProcessor::DecodeIds`: control pieces vanish, an unknown piece becomes the
    /// unknown surface, runs of byte pieces become UTF-8 (U+FFFD per invalid byte), `▁` becomes
    /// a space, and where the model adds a dummy prefix or removes extra whitespace the first
    /// piece's leading `▁` goes. Ids outside the vocabulary are an error, as in the library.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let mut text = String::new();
        let mut bytes: Vec<u8> = Vec::new();
        let strip_first_space =
            self.normalizer.add_dummy_prefix || self.normalizer.remove_extra_whitespaces;
        let (mut is_bos_ws, mut bos_ws_seen) = (true, false);
        for &id in ids {
            let piece = self
                .pieces
                .get(id as usize)
                .with_context(|| format!("token id {id} is outside the vocabulary"))?;
            if piece.kind == PieceType::Byte {
                if let Some(byte) = byte_of(&piece.text) {
                    bytes.push(byte);
                    continue;
                }
            }
            push_utf8_lossy(&mut text, &mut bytes);
            if bos_ws_seen || !text.is_empty() {
                is_bos_ws = false;
            }
            bos_ws_seen = false;
            match piece.kind {
                PieceType::Control => {}
                PieceType::Unknown => text.push_str(&self.unk_surface),
                _ => {
                    let mut surface = piece.text.as_str();
                    if is_bos_ws && strip_first_space {
                        if let Some(rest) = surface.strip_prefix(SPACE_SYMBOL) {
                            surface = rest;
                            bos_ws_seen = !self.normalizer.remove_extra_whitespaces;
                        }
                    }
                    text.push_str(&surface.replace(SPACE_SYMBOL, " "));
                }
            }
        }
        push_utf8_lossy(&mut text, &mut bytes);
        Ok(text)
    }

    fn byte_piece(&self, byte: u8) -> u32 {
        self.byte_pieces.get(&byte).copied().unwrap_or(self.unk_id)
    }

    /// `Normalizer::Normalize`.
    fn normalize(&self, input: &str) -> String {
        let spec = &self.normalizer;
        let mut input = input;
        if spec.remove_extra_whitespaces {
            while !input.is_empty() {
                let (out, used) = self.normalize_prefix(input);
                if out != " " {
                    break;
                }
                input = &input[used..];
            }
        }
        let mut normalized = String::with_capacity(input.len() * 3);
        if input.is_empty() {
            return normalized;
        }
        let space = if spec.escape_whitespaces {
            SPACE_SYMBOL
        } else {
            " "
        };
        let dummy = spec.add_dummy_prefix;
        if dummy && !self.treat_whitespace_as_suffix {
            normalized.push_str(space);
        }
        let mut prev_space = spec.remove_extra_whitespaces;
        while !input.is_empty() {
            let (out, used) = self.normalize_prefix(input);
            let mut out = out;
            while prev_space && out.starts_with(' ') {
                out = &out[1..];
            }
            if !out.is_empty() {
                for c in out.chars() {
                    if c == ' ' {
                        normalized.push_str(space);
                    } else {
                        normalized.push(c);
                    }
                }
                prev_space = out.ends_with(' ');
            }
            input = &input[used..];
            if !spec.remove_extra_whitespaces {
                prev_space = false;
            }
        }
        if spec.remove_extra_whitespaces {
            while normalized.ends_with(space) {
                normalized.truncate(normalized.len() - space.len());
            }
        }
        if dummy && self.treat_whitespace_as_suffix {
            normalized.push_str(space);
        }
        normalized
    }

    /// The normalized form of `input`'s first unit and how many bytes it consumed: a
    /// user-defined symbol as is, else the character map's longest rule, else one character.
    fn normalize_prefix<'a>(&'a self, input: &'a str) -> (&'a str, usize) {
        let user = self
            .user_defined
            .iter()
            .filter(|s| input.starts_with(s.as_str()))
            .map(String::len)
            .max();
        if let Some(len) = user {
            return (&input[..len], len);
        }
        if let Some((out, used)) = self
            .normalizer
            .charsmap
            .as_ref()
            .and_then(|m| m.longest_rule(input.as_bytes()))
        {
            return (out, used);
        }
        let len = input.chars().next().map_or(0, char::len_utf8);
        (&input[..len], len)
    }

    /// The best segmentation of `normalized` (`unigram::Model::Encode`): maximal total score;
    /// on ties the path whose last piece starts earliest.
    fn viterbi<'a>(&self, normalized: &'a str) -> Vec<(&'a str, u32)> {
        let len = normalized.len();
        // best[end] = (score, start, id) of the best path ending at byte `end`.
        let mut best: Vec<Option<(f32, usize, u32)>> = vec![None; len + 1];
        best[0] = Some((0.0, 0, 0));
        let unk_score = self.min_score - UNK_PENALTY;
        let starts: Vec<usize> = normalized.char_indices().map(|(i, _)| i).collect();
        for &start in &starts {
            let Some((base, _, _)) = best[start] else {
                continue;
            };
            let mut relax = |end: usize, score: f32, id: u32| {
                let total = base + score;
                if best[end].is_none_or(|(s, _, _)| total > s) {
                    best[end] = Some((total, start, id));
                }
            };
            let rest = &normalized[start..];
            let first_char = rest.chars().next().map_or(0, char::len_utf8);
            let mut has_single_char = false;
            for (offset, c) in rest.char_indices() {
                let end = offset + c.len_utf8();
                if end > self.max_piece_bytes {
                    break;
                }
                let Some(&id) = self.vocab.get(&rest[..end]) else {
                    continue;
                };
                let piece = &self.pieces[id as usize];
                let score = if piece.kind == PieceType::UserDefined {
                    rest[..end].chars().count() as f32 * self.max_score - USER_DEFINED_PENALTY
                } else {
                    piece.score
                };
                has_single_char |= end == first_char;
                relax(start + end, score, id);
            }
            if !has_single_char {
                relax(start + first_char, unk_score, self.unk_id);
            }
        }
        let mut path = Vec::new();
        let mut end = len;
        while end > 0 {
            let (_, start, id) = best[end].expect("every character has at least the unknown node");
            path.push((&normalized[start..end], id));
            end = start;
        }
        path.reverse();
        path
    }
}

/// A mergeable pair of adjacent BPE symbols: higher scores first, then the leftmost.
struct Pair {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl Ord for Pair {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Pair {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Pair {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Pair {}

/// The precompiled character map: a Darts-clone double-array trie over UTF-8 byte strings whose
/// values point into a block of NUL-terminated replacement strings.
struct CharsMap {
    units: Vec<u32>,
    normalized: Vec<u8>,
}

impl CharsMap {
    fn parse(blob: &[u8]) -> Result<Self> {
        if blob.len() <= 4 {
            bail!("sentencepiece charsmap is broken");
        }
        let trie_size = u32::from_le_bytes(blob[..4].try_into().expect("4 bytes")) as usize;
        if trie_size + 4 > blob.len() || !trie_size.is_multiple_of(4) {
            bail!("sentencepiece charsmap: trie size {trie_size} exceeds the blob");
        }
        let units = blob[4..4 + trie_size]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        Ok(Self {
            units,
            normalized: blob[4 + trie_size..].to_vec(),
        })
    }

    fn unit(&self, pos: usize) -> Option<u32> {
        self.units.get(pos).copied()
    }

    /// Darts `commonPrefixSearch`, keeping the longest match: (replacement, bytes matched).
    fn longest_rule(&self, key: &[u8]) -> Option<(&str, usize)> {
        let offset = |u: u32| ((u >> 10) << ((u & (1 << 9)) >> 6)) as usize;
        let has_leaf = |u: u32| (u >> 8) & 1 == 1;
        let label = |u: u32| u & ((1 << 31) | 0xff);
        let value = |u: u32| (u & ((1 << 31) - 1)) as usize;
        let mut found = None;
        let mut unit = self.unit(0)?;
        let mut pos = offset(unit);
        for (i, &byte) in key.iter().enumerate() {
            pos ^= byte as usize;
            unit = self.unit(pos)?;
            if label(unit) != byte as u32 {
                break;
            }
            pos ^= offset(unit);
            if has_leaf(unit) {
                found = Some((value(self.unit(pos)?), i + 1));
            }
        }
        let (start, used) = found?;
        let tail = self.normalized.get(start..)?;
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        Some((std::str::from_utf8(&tail[..end]).ok()?, used))
    }
}

/// The byte a `<0xXX>` piece stands for.
fn byte_of(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

/// Appends `bytes` as UTF-8, one character at a time, each structurally invalid byte as
/// U+FFFD (sentencepiece's `ProcessBytePieces`), and empties them.
fn push_utf8_lossy(text: &mut String, bytes: &mut Vec<u8>) {
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        let width = match rest[0] {
            0x00..=0x7f => 1,
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => 0,
        };
        match rest.get(..width).map(std::str::from_utf8) {
            Some(Ok(c)) if width > 0 => {
                text.push_str(c);
                rest = &rest[width..];
            }
            _ => {
                text.push(char::REPLACEMENT_CHARACTER);
                rest = &rest[1..];
            }
        }
    }
    bytes.clear();
}

#[derive(Default)]
struct TrainerSpec {
    model_type: u64,
    unk_id: i64,
    eos_id: i64,
    byte_fallback: bool,
    treat_whitespace_as_suffix: bool,
    unk_surface: String,
}

/// sentencepiece's `kDefaultUnknownSymbol`.
const DEFAULT_UNK_SURFACE: &str = " \u{2047} ";

fn parse_piece(bytes: &[u8]) -> Result<Piece> {
    let mut piece = Piece {
        text: String::new(),
        score: 0.0,
        kind: PieceType::Normal,
    };
    for field in Fields::new(bytes) {
        match field? {
            (1, FieldValue::Bytes(b)) => {
                piece.text = String::from_utf8(b.to_vec()).context("piece is not UTF-8")?
            }
            (2, FieldValue::Fixed32(v)) => piece.score = f32::from_bits(v),
            (3, FieldValue::Varint(v)) => piece.kind = PieceType::from_proto(v),
            _ => {}
        }
    }
    Ok(piece)
}

fn parse_trainer(bytes: &[u8]) -> Result<TrainerSpec> {
    // Proto defaults: unigram, unk 0, eos 2.
    let mut spec = TrainerSpec {
        model_type: 1,
        unk_id: 0,
        eos_id: 2,
        unk_surface: DEFAULT_UNK_SURFACE.into(),
        ..TrainerSpec::default()
    };
    for field in Fields::new(bytes) {
        match field? {
            (3, FieldValue::Varint(v)) => spec.model_type = v,
            (24, FieldValue::Varint(v)) => spec.treat_whitespace_as_suffix = v != 0,
            (35, FieldValue::Varint(v)) => spec.byte_fallback = v != 0,
            (40, FieldValue::Varint(v)) => spec.unk_id = v as i32 as i64,
            (42, FieldValue::Varint(v)) => spec.eos_id = v as i32 as i64,
            (44, FieldValue::Bytes(b)) => spec.unk_surface = String::from_utf8_lossy(b).into(),
            _ => {}
        }
    }
    Ok(spec)
}

fn parse_normalizer(bytes: &[u8]) -> Result<NormalizerSpec> {
    let mut spec = NormalizerSpec {
        charsmap: None,
        add_dummy_prefix: true,
        remove_extra_whitespaces: true,
        escape_whitespaces: true,
    };
    for field in Fields::new(bytes) {
        match field? {
            (2, FieldValue::Bytes(b)) if !b.is_empty() => spec.charsmap = Some(CharsMap::parse(b)?),
            (3, FieldValue::Varint(v)) => spec.add_dummy_prefix = v != 0,
            (4, FieldValue::Varint(v)) => spec.remove_extra_whitespaces = v != 0,
            (5, FieldValue::Varint(v)) => spec.escape_whitespaces = v != 0,
            _ => {}
        }
    }
    Ok(spec)
}

enum FieldValue<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// The fields of one protobuf message, in wire order.
struct Fields<'a> {
    data: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.data.split_first().context("truncated varint")?;
            self.data = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        bail!("varint longer than 10 bytes")
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.data.len() {
            bail!("truncated field");
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }

    fn field(&mut self) -> Result<(u64, FieldValue<'a>)> {
        let key = self.varint()?;
        let value = match key & 7 {
            0 => FieldValue::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                FieldValue::Fixed64
            }
            2 => {
                let n = self.varint()? as usize;
                FieldValue::Bytes(self.take(n)?)
            }
            5 => FieldValue::Fixed32(u32::from_le_bytes(
                self.take(4)?.try_into().expect("4 bytes"),
            )),
            wire => bail!("unsupported protobuf wire type {wire}"),
        };
        Ok((key >> 3, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, FieldValue<'a>)>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.data.is_empty() {
            return None;
        }
        let item = self.field();
        if item.is_err() {
            self.data = &[];
        }
        Some(item)
    }
}
