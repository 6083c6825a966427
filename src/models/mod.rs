//! The model networks, one folder per family, built on `runtime` (weights, Linear, attention).

pub mod audio_encoder;
pub mod clip_text;
pub mod clip_tokenizer;
pub mod clip_vision;
pub mod diffusion_file;
pub mod embeddings;
pub mod flux;
pub mod frame_interp;
pub mod kl_vae;
pub mod layers;
pub mod loading;
pub mod ltx;
pub mod prompt_tokens;
pub mod rope;
pub mod sam3;
pub mod sdxl;
pub mod sentencepiece;
pub mod t5;
pub mod text_encoder;
pub mod tiled;
pub mod upscale;
pub mod vae;
pub mod wan;
pub mod wav2vec2;
pub mod weights;
pub mod whisper;
