//! SDXL and Lotus-D (an SD 2 UNet): the UNet and the MODEL handles around it.

pub mod lotus;
pub mod net;
pub mod unclip;
pub mod unet;
