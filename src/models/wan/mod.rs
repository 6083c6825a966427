//! Wan 2.1 / 2.2 (Alibaba): the diffusion transformer.

pub mod dit;
