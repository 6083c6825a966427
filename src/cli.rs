//! Command-line flags, named as ComfyUI names them so launch scripts carry over.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "videosdgx",
    version,
    about = "A drop-in ComfyUI backend for the open video models"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address(es) to listen on, comma-separated; bare `--listen` means all interfaces.
    #[arg(long, global = true, num_args = 0..=1, default_value = "127.0.0.1", default_missing_value = "0.0.0.0,::")]
    pub listen: String,
    #[arg(long, global = true, default_value_t = 8188)]
    pub port: u16,
    /// Root for models/, input/, output/, temp/, user/ (default: the current directory).
    #[arg(long, global = true)]
    pub base_directory: Option<PathBuf>,
    #[arg(long, global = true)]
    pub output_directory: Option<PathBuf>,
    #[arg(long, global = true)]
    pub input_directory: Option<PathBuf>,
    #[arg(long, global = true)]
    pub temp_directory: Option<PathBuf>,
    #[arg(long, global = true)]
    pub user_directory: Option<PathBuf>,
    /// ComfyUI-format extra_model_paths.yaml files.
    #[arg(long, global = true, num_args = 1..)]
    pub extra_model_paths_config: Vec<PathBuf>,
    /// Run everything on the CPU.
    #[arg(long, global = true)]
    pub cpu: bool,
    /// GB of device memory to leave free for everything besides model weights (default 0.4).
    #[arg(long, global = true, value_name = "GB")]
    pub reserve_vram: Option<f64>,
    /// GB of device memory models may use, instead of what the device has free.
    #[arg(long, global = true, value_name = "GB")]
    pub vram_budget: Option<f64>,
    /// Load models that do not fit partially: the Wan and FLUX DiTs, the SDXL UNet, the T5/UMT5
    /// and CLIP text encoders and CLIP vision keep the blocks that fit on the device and stream
    /// the others from pinned host memory for each use; the VAEs load whole.
    #[arg(long, global = true)]
    pub lowvram: bool,
    /// Run the diffusion model in fp32 (default: ComfyUI's choice per model class, e.g. fp16
    /// for Wan and SDXL, bf16 for FLUX).
    #[arg(long = "fp32-unet", global = true, conflicts_with_all = ["bf16_unet", "fp16_unet"])]
    pub fp32_unet: bool,
    /// Run the diffusion model in bf16.
    #[arg(long = "bf16-unet", global = true, conflicts_with = "fp16_unet")]
    pub bf16_unet: bool,
    /// Run the diffusion model in fp16.
    #[arg(long = "fp16-unet", global = true)]
    pub fp16_unet: bool,
    /// Run the VAE in fp16 (default: ComfyUI's choice, bf16 on a GPU, fp32 on the CPU).
    #[arg(long = "fp16-vae", global = true, conflicts_with_all = ["fp32_vae", "bf16_vae"])]
    pub fp16_vae: bool,
    /// Run the VAE in full precision fp32.
    #[arg(long = "fp32-vae", global = true, conflicts_with = "bf16_vae")]
    pub fp32_vae: bool,
    /// Run the VAE in bf16.
    #[arg(long = "bf16-vae", global = true)]
    pub bf16_vae: bool,
    /// Run the VAE on the CPU (in fp32 unless a VAE precision flag says otherwise).
    #[arg(long = "cpu-vae", global = true)]
    pub cpu_vae: bool,
    /// Treat the GPU as sharing memory with the CPU (detected on DGX Spark / GB10 and other
    /// integrated or coherent GPUs): the page cache of a loaded weight file is dropped.
    #[arg(long, global = true)]
    pub unified_memory: bool,
    /// Keep up to N cached node results across prompts.
    #[arg(long, global = true, value_name = "N", conflicts_with_all = ["cache_none", "cache_classic"])]
    pub cache_lru: Option<usize>,
    /// Cache nothing between prompts.
    #[arg(long, global = true, conflicts_with = "cache_classic")]
    pub cache_none: bool,
    /// Keep only results the current prompt can reuse (the default behaviour).
    #[arg(long, global = true)]
    pub cache_classic: bool,
    #[arg(long, global = true, value_enum, default_value_t = PreviewMethod::None)]
    pub preview_method: PreviewMethod,
    /// Request body limit in MB.
    #[arg(long, global = true)]
    pub max_upload_size: Option<f64>,
    /// Send CORS headers (origin `*` when bare); disables the origin check.
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "*")]
    pub enable_cors_header: Option<String>,
    /// Serve the ComfyUI web frontend from this folder instead of PyPI's
    /// comfyui-frontend-package in the venv.
    #[arg(long, global = true, value_name = "DIR")]
    pub front_end_root: Option<PathBuf>,
    /// Require this token on every request: `Authorization: Bearer TOKEN`, `?token=TOKEN`
    /// (which also sets a cookie, so opening `/?token=TOKEN` once logs a browser in), or
    /// that cookie.
    #[arg(
        long,
        global = true,
        env = "VIDEOSDGX_AUTH_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub auth_token: Option<String>,
    /// Save no prompt/workflow metadata in files.
    #[arg(long, global = true)]
    pub disable_metadata: bool,
    /// Log level (bare: DEBUG).
    #[arg(long, global = true, num_args = 0..=1, default_value = "INFO", default_missing_value = "DEBUG")]
    pub verbose: String,
    /// Register the execution-test node pack (StubImage, TestSleep, …).
    #[arg(long, global = true, hide = true)]
    pub test_nodes: bool,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Execute a workflow file (API or UI format) without a server.
    Run { workflow: PathBuf },
    /// Print a UI-format workflow (nodes/links, subgraphs) as the API-format prompt it runs as.
    Convert { workflow: PathBuf },
    /// Print what a weight file holds (components, storage formats, quantized layers,
    /// metadata) as JSON.
    Inspect { file: PathBuf },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreviewMethod {
    None,
    Auto,
    Latent2rgb,
    Taesd,
}

impl Args {
    /// The diffusion-model dtype `--fp32-unet` / `--bf16-unet` / `--fp16-unet` force.
    pub fn unet_dtype(&self) -> Option<tch::Kind> {
        forced_dtype([
            (self.fp32_unet, tch::Kind::Float),
            (self.bf16_unet, tch::Kind::BFloat16),
            (self.fp16_unet, tch::Kind::Half),
        ])
    }

    /// The VAE dtype `--fp16-vae` / `--fp32-vae` / `--bf16-vae` force.
    pub fn vae_dtype(&self) -> Option<tch::Kind> {
        forced_dtype([
            (self.fp16_vae, tch::Kind::Half),
            (self.fp32_vae, tch::Kind::Float),
            (self.bf16_vae, tch::Kind::BFloat16),
        ])
    }

    pub fn max_upload_bytes(&self) -> usize {
        (self.max_upload_size.unwrap_or(100.0) * 1024.0 * 1024.0).round() as usize
    }
}

/// The dtype of the one precision flag that is set (clap keeps them exclusive), if any.
fn forced_dtype(flags: [(bool, tch::Kind); 3]) -> Option<tch::Kind> {
    flags
        .into_iter()
        .find_map(|(set, kind)| set.then_some(kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_precision_flags_force_one_dtype() {
        let parse = |flags: &[&str]| Args::try_parse_from([&["videosdgx"], flags].concat());
        let (unet, vae) = (Args::unet_dtype, Args::vae_dtype);
        let defaults = parse(&[]).unwrap();
        assert_eq!((unet(&defaults), vae(&defaults)), (None, None));
        for (flag, dtype, kind) in [
            ("--fp32-unet", unet as fn(&Args) -> _, tch::Kind::Float),
            ("--bf16-unet", unet, tch::Kind::BFloat16),
            ("--fp16-unet", unet, tch::Kind::Half),
            ("--fp16-vae", vae, tch::Kind::Half),
            ("--fp32-vae", vae, tch::Kind::Float),
            ("--bf16-vae", vae, tch::Kind::BFloat16),
        ] {
            assert_eq!(dtype(&parse(&[flag]).unwrap()), Some(kind), "{flag}");
        }
        for clash in [
            ["--bf16-unet", "--fp16-unet"],
            ["--fp16-unet", "--fp32-unet"],
            ["--fp16-vae", "--bf16-vae"],
            ["--fp32-vae", "--bf16-vae"],
        ] {
            assert!(parse(&clash).is_err(), "{clash:?}");
        }
        let cpu_vae = parse(&["--cpu-vae", "--fp16-vae", "--bf16-unet"]).unwrap();
        assert!(cpu_vae.cpu_vae && vae(&cpu_vae) == Some(tch::Kind::Half));
    }
}
