//! LTX-Video and LTX-2 (Lightricks): the video VAE and LTX-2's audio-video transformer with
//! its text connectors.

pub mod audio_vae;
pub mod av_config;
pub mod av_layers;
pub mod av_model;
pub mod av_net;
pub mod av_rope;
pub mod connector;
pub mod guide_attention;
pub mod latent_upsampler;
pub mod text_features;
pub mod vae_blocks;
pub mod vae_config;
pub mod video_vae;
pub mod vocoder;
