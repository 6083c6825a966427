//! The tensor runtime: weight files as ComfyUI reads them, their storage formats, and what a
//! file holds (`videosdgx inspect`).

pub mod accel;
pub mod attention;
pub mod attention_sm90;
pub mod copy_ahead;
pub mod cuda_driver;
pub mod detect;
pub mod fused;
pub mod gemm_sm90;
pub mod gguf;
pub mod inspect;
pub mod int4;
pub mod int8;
pub mod linear;
pub mod lora;
pub mod manager;
pub mod nvrtc;
pub mod quant;
pub mod safetensors_file;
pub mod sm90;
