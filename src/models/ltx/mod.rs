//! LTX-Video and LTX-2 (Lightricks): the video VAE.

pub mod vae_blocks;
pub mod vae_config;
pub mod video_vae;
