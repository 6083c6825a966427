//! FLUX.1: the transformer and the MODEL handle around it.

pub mod dit;
pub mod net;
pub mod redux;
