//! Code the GPU benches share.
#![allow(dead_code)]

pub mod timing;
pub mod wan_1_3b;
