//! The model-agnostic sampling stack: noise, model sampling, schedules and samplers.

pub mod ar_video;
pub mod brownian;
pub mod context_windows;
pub mod deis;
pub mod dpm_solver;
pub mod guidance;
pub mod ksampler;
pub mod latent_format;
pub mod model;
pub mod model_sampling;
pub mod nested;
pub mod noise;
pub mod post_cfg;
pub mod pre_cfg;
pub mod regions;
pub mod sa_solver;
pub mod sampler_options;
pub mod samplers;
pub mod schedulers;
pub mod seeds;
pub mod step_cache;
pub mod uni_pc;
