//! The Hopper kernel library: `scripts/build_sm90_kernels.sh` compiles `attention_sm90.cu`
//! (flash attention) and `gemm_sm90.cu` (the MLP's GEMM with bias + GELU) into
//! `.venv/videosdgx/libvdgx_sm90.so`, loaded here at first use. Its kernels run on compute
//! capability 9.0 only; every other GPU (GB10 included), or no library, keeps libtorch's ops.
//! `VIDEOSDGX_SM90_KERNELS` names another build of the library, or `off`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use tch::Device;

use super::attention_sm90::AttentionArgs;
use super::gemm_sm90::GemmArgs;

pub const LIBRARY_NAME: &str = "libvdgx_sm90.so";
const ENV: &str = "VIDEOSDGX_SM90_KERNELS";
/// `vdgx_sm90_abi()` of the library this code speaks to.
const ABI: i32 = 3;

/// The loaded library's entries; each takes a dtype (0 bf16, 1 fp16) and its arguments, and
/// returns 0 or a `cudaError_t` (the GEMM also -1 for a problem it cannot take).
pub struct Sm90Kernels {
    _lib: libloading::Library,
    pub(super) attention: unsafe extern "C" fn(i32, *const AttentionArgs) -> i32,
    pub(super) linear_gelu_tanh: unsafe extern "C" fn(i32, *const GemmArgs) -> i32,
}

impl Sm90Kernels {
    /// Opens a build of the library and checks it speaks this ABI.
    pub fn load(path: &Path) -> Result<Self> {
        // SAFETY: the symbols are attention_sm90.cu's and gemm_sm90.cu's, with the signatures
        // written there; the library stays loaded as long as the pointers (it is kept in `_lib`).
        unsafe {
            let lib = libloading::Library::new(path)
                .with_context(|| format!("loading {}", path.display()))?;
            let abi: libloading::Symbol<unsafe extern "C" fn() -> i32> = lib
                .get(b"vdgx_sm90_abi")
                .with_context(|| format!("{} is a stale build", path.display()))?;
            let abi = abi();
            if abi != ABI {
                bail!("{} is a stale build (ABI {abi} ≠ {ABI})", path.display());
            }
            let attention = *lib.get(b"vdgx_sm90_attention")?;
            let linear_gelu_tanh = *lib.get(b"vdgx_sm90_linear_gelu_tanh")?;
            Ok(Self {
                _lib: lib,
                attention,
                linear_gelu_tanh,
            })
        }
    }
}

/// Where the library may be, given `VIDEOSDGX_SM90_KERNELS`: the file it names, else
/// `videosdgx/` in the venvs we run beside. `None` when it says `off`.
fn candidates(setting: Option<OsString>) -> Option<Vec<PathBuf>> {
    match setting {
        Some(v) if v == "off" || v == "0" => None,
        Some(v) => Some(vec![PathBuf::from(v)]),
        None => Some(
            crate::venv::roots()
                .into_iter()
                .map(|venv| venv.join("videosdgx").join(LIBRARY_NAME))
                .collect(),
        ),
    }
}

/// The library, loaded on first use; `None` where there is none (said once in the log).
pub fn library() -> Option<&'static Sm90Kernels> {
    static LIBRARY: OnceLock<Option<Sm90Kernels>> = OnceLock::new();
    LIBRARY
        .get_or_init(|| {
            let Some(paths) = candidates(std::env::var_os(ENV)) else {
                log::info!("Hopper kernels: off ({ENV}=off); cuDNN attention, cuBLAS GEMMs");
                return None;
            };
            let Some(path) = paths.into_iter().find(|p| p.is_file()) else {
                log::info!(
                    "Hopper kernels: none (no {LIBRARY_NAME}; scripts/build_sm90_kernels.sh builds it)"
                );
                return None;
            };
            match Sm90Kernels::load(&path) {
                Ok(lib) => {
                    log::info!("Hopper kernels from {}", path.display());
                    Some(lib)
                }
                Err(e) => {
                    log::warn!("Hopper kernels: none ({e:#})");
                    None
                }
            }
        })
        .as_ref()
}

/// Whether `device` runs the library's sm_90a code.
fn is_hopper(device: Device) -> bool {
    crate::system::device_capability(device) == Some((9, 0))
}

/// Whether one of the library's kernels may run: on by default, off after its first failed
/// launch (so one failure costs one fallback, not one per call) or while a bench compares it
/// with libtorch in one process.
pub struct KernelSwitch {
    healthy: AtomicBool,
    enabled: AtomicBool,
}

impl KernelSwitch {
    pub const fn new() -> Self {
        Self {
            healthy: AtomicBool::new(true),
            enabled: AtomicBool::new(true),
        }
    }

    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// Whether the kernel may run on `device` (the library aside).
    pub fn usable(&self, device: Device) -> bool {
        self.healthy.load(Ordering::Relaxed)
            && self.enabled.load(Ordering::Relaxed)
            && is_hopper(device)
    }

    /// Whether the kernel runs on `device` (for the benches' reports).
    pub fn in_use(&self, device: Device) -> bool {
        self.usable(device) && library().is_some()
    }

    /// After a failed launch: libtorch answers from now on.
    pub fn failed(&self) {
        self.healthy.store(false, Ordering::Relaxed);
    }
}

impl Default for KernelSwitch {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_or_a_named_file_decides_where_the_library_is_looked_for() {
        assert_eq!(candidates(Some("off".into())), None);
        assert_eq!(
            candidates(Some("/opt/lib.so".into())),
            Some(vec![PathBuf::from("/opt/lib.so")])
        );
        let venvs = candidates(None).unwrap();
        assert!(!venvs.is_empty());
        assert!(venvs
            .iter()
            .all(|p| p.ends_with(Path::new("videosdgx").join(LIBRARY_NAME))));
    }
}
