//! Wan 2.1 / 2.2 (Alibaba): the diffusion transformer.

pub mod animate;
pub mod animate2;
pub mod camera;
pub mod dancer;
pub mod dit;
pub mod humo;
pub mod infinite_talk;
pub mod net;
pub mod s2v;
pub mod scail;
pub mod sound_features;
pub mod track_overlay;
pub mod tracks;
pub mod vae;
pub mod vae_blocks;
pub mod wan_move;
