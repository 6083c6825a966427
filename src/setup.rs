//! Turns command-line flags into the folders, node registry and cache mode the server uses.

use anyhow::Result;

use crate::cli::Args;
use crate::engine::cache::CacheMode;
use crate::engine::registry::Registry;
use crate::paths::{absolute, Paths};
use crate::runtime::manager::{MemoryConfig, ModelManager};
use tch::Device;

pub fn paths_from_args(args: &Args) -> Result<Paths> {
    let base = args
        .base_directory
        .clone()
        .unwrap_or_else(|| std::env::current_dir().unwrap_or_default());
    let mut paths = Paths::new(&base);
    if let Some(d) = &args.output_directory {
        paths.output = absolute(d);
    }
    if let Some(d) = &args.input_directory {
        paths.input = absolute(d);
    }
    if let Some(d) = &args.temp_directory {
        paths.temp = absolute(&d.join("temp"));
    }
    if let Some(d) = &args.user_directory {
        paths.user = absolute(d);
    }
    for yaml in &args.extra_model_paths_config {
        paths.add_extra_model_paths(yaml)?;
    }
    // ComfyUI empties its temp folder at start: previews are throwaway.
    let _ = std::fs::remove_dir_all(&paths.temp);
    paths.create_dirs()?;
    Ok(paths)
}

pub fn registry(args: &Args) -> Registry {
    let mut registry = Registry::default();
    crate::nodes::register_builtin(&mut registry);
    if args.test_nodes {
        crate::nodes::testing::register(&mut registry);
    }
    registry
}

/// GB → bytes.
fn gigabytes(gb: f64) -> u64 {
    (gb.max(0.0) * (1u64 << 30) as f64) as u64
}

/// The compute device (`cuda:0` unless `--cpu` or no GPU) and the model manager for it.
pub fn model_manager(args: &Args) -> ModelManager {
    let device = if !args.cpu && tch::Cuda::is_available() {
        Device::Cuda(0)
    } else {
        Device::Cpu
    };
    let unified =
        args.unified_memory || (device != Device::Cpu && crate::system::unified_memory(0));
    if unified {
        crate::runtime::safetensors_file::drop_page_cache_after_loading(true);
    }
    let config = MemoryConfig {
        budget: args.vram_budget.map(gigabytes),
        // ComfyUI keeps 400 MB back on Linux unless told otherwise.
        reserve: gigabytes(args.reserve_vram.unwrap_or(0.4)),
        lowvram: args.lowvram,
        unet_dtype: args.unet_dtype(),
        vae_dtype: args.vae_dtype(),
        cpu_vae: args.cpu_vae,
    };
    let models = ModelManager::new(device, config);
    log::info!(
        "device {device:?}{}; models may use {} MB",
        if unified { " (unified memory)" } else { "" },
        models.budget() >> 20
    );
    models
}

pub fn cache_mode(args: &Args) -> CacheMode {
    match (args.cache_none, args.cache_lru) {
        (true, _) => CacheMode::None,
        (_, Some(n)) => CacheMode::Lru(n),
        _ => CacheMode::Classic,
    }
}
