//! VideosDGX: a drop-in ComfyUI backend.

pub mod engine;
pub mod paths;
pub mod pyjson;
pub mod imageio;
pub mod upscale;

#[path = "../nodes/mod.rs"]
pub mod nodes;
pub mod queue;
pub mod cli;
pub mod run_cli;
pub mod server;
pub mod setup;
pub mod system;
pub mod worker;
pub mod workflow_ui;
