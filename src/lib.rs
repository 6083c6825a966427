//! VideosDGX: a drop-in ComfyUI backend.

// Early HTTP answers and validation errors travel as `Err` values; they are built once per
// request, so their size does not matter.
#![allow(clippy::result_large_err)]

pub mod canny;
pub mod color_transfer;
pub mod engine;
pub mod image_filters;
pub mod imageio;
pub mod paths;
pub mod pil_resample;
pub mod pyjson;
pub mod pystr;
pub mod upscale;
pub mod venv;

pub mod cli;
pub mod media;
pub mod models;
#[path = "../nodes/mod.rs"]
pub mod nodes;
pub mod queue;
pub mod run_cli;
pub mod runtime;
pub mod sampling;
pub mod server;
pub mod setup;
pub mod simple_eval;
pub mod system;
pub mod worker;
pub mod workflow_subgraph;
pub mod workflow_ui;
