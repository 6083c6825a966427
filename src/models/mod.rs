//! The model networks, one folder per family, built on `runtime` (weights, Linear, attention).

pub mod prompt_tokens;
pub mod sentencepiece;
pub mod t5;
pub mod wan;
pub mod weights;
