//! SDXL: the UNet and the MODEL handle around it.

pub mod net;
pub mod unet;
