//! CUDA C++ compiled at run time with NVRTC, the compiler PyTorch's own wheels ship
//! (`nvidia/cu13/lib/libnvrtc.so.13` beside torch). Kernels are built for the GPU in hand as PTX
//! of the newest virtual architecture NVRTC knows up to the device's, which the driver turns into
//! machine code, so the same source runs on H100 (sm_90) and GB10 (sm_121) with no CUDA toolkit
//! at build time. It needs no GPU: CI compiles every kernel to check it.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

type NvrtcResult = c_int;
type Program = *mut c_void;

struct Nvrtc {
    _libs: (libloading::Library, Vec<libloading::Library>),
    supported_count: unsafe extern "C" fn(*mut c_int) -> NvrtcResult,
    supported: unsafe extern "C" fn(*mut c_int) -> NvrtcResult,
    #[allow(clippy::type_complexity)]
    create: unsafe extern "C" fn(
        *mut Program,
        *const c_char,
        *const c_char,
        c_int,
        *const *const c_char,
        *const *const c_char,
    ) -> NvrtcResult,
    compile: unsafe extern "C" fn(Program, c_int, *const *const c_char) -> NvrtcResult,
    log_size: unsafe extern "C" fn(Program, *mut usize) -> NvrtcResult,
    log: unsafe extern "C" fn(Program, *mut c_char) -> NvrtcResult,
    ptx_size: unsafe extern "C" fn(Program, *mut usize) -> NvrtcResult,
    ptx: unsafe extern "C" fn(Program, *mut c_char) -> NvrtcResult,
    destroy: unsafe extern "C" fn(*mut Program) -> NvrtcResult,
}

fn nvrtc() -> Result<&'static Nvrtc> {
    static NVRTC: OnceLock<std::result::Result<Nvrtc, String>> = OnceLock::new();
    NVRTC
        .get_or_init(|| Nvrtc::load().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Where libnvrtc may be: already loaded or on the library path by its soname, else in the
/// NVIDIA wheels that sit beside the libtorch this process loaded.
fn candidates() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"]
        .iter()
        .map(PathBuf::from)
        .collect();
    if let Some(torch_lib) = loaded_torch_lib_dir() {
        let nvidia = torch_lib.join("../../nvidia");
        for sub in ["cu13/lib", "cuda_nvrtc/lib", "cu12/lib"] {
            let Ok(entries) = std::fs::read_dir(nvidia.join(sub)) else {
                continue;
            };
            let mut libs: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("libnvrtc.so"))
                })
                .collect();
            libs.sort();
            out.extend(libs);
        }
    }
    out
}

/// `libnvrtc-builtins` of `dir`, loaded.
fn builtins_in(dir: &Path) -> Vec<libloading::Library> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libnvrtc-builtins.so") && !n.contains(".alt."))
        })
        // SAFETY: as for libnvrtc itself.
        .filter_map(|p| unsafe { libloading::Library::new(p).ok() })
        .collect()
}

/// The folder of the `libtorch_cpu.so` mapped into this process.
fn loaded_torch_lib_dir() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
        .and_then(|p| Path::new(p).parent().map(Path::to_path_buf))
}

impl Nvrtc {
    fn load() -> Result<Self> {
        let mut companions = Vec::new();
        let lib = candidates()
            .into_iter()
            .find_map(|path| {
                // libnvrtc opens its builtins by soname: off the library path, load the one
                // beside it first so that lookup finds it already in the process.
                if let Some(dir) = path.parent().filter(|d| d.is_absolute()) {
                    companions.extend(builtins_in(dir));
                }
                // SAFETY: loading libnvrtc runs no initialisers with preconditions.
                unsafe { libloading::Library::new(&path).ok() }
            })
            .context("libnvrtc was not found (it comes with PyTorch's CUDA wheels)")?;
        // SAFETY: the symbols are NVRTC's, typed with the signatures its header declares; the
        // library is kept alive in `_lib`.
        unsafe {
            Ok(Self {
                supported_count: *lib.get(b"nvrtcGetNumSupportedArchs")?,
                supported: *lib.get(b"nvrtcGetSupportedArchs")?,
                create: *lib.get(b"nvrtcCreateProgram")?,
                compile: *lib.get(b"nvrtcCompileProgram")?,
                log_size: *lib.get(b"nvrtcGetProgramLogSize")?,
                log: *lib.get(b"nvrtcGetProgramLog")?,
                ptx_size: *lib.get(b"nvrtcGetPTXSize")?,
                ptx: *lib.get(b"nvrtcGetPTX")?,
                destroy: *lib.get(b"nvrtcDestroyProgram")?,
                _libs: (lib, companions),
            })
        }
    }
}

/// The architectures (`major·10 + minor`) this NVRTC compiles for.
pub fn supported_architectures() -> Result<Vec<i32>> {
    let n = nvrtc()?;
    let mut count = 0;
    // SAFETY: NVRTC writes `count` ints into a buffer of that size.
    unsafe {
        if (n.supported_count)(&mut count) != 0 {
            bail!("nvrtcGetNumSupportedArchs failed");
        }
        let mut archs = vec![0; count.max(0) as usize];
        if (n.supported)(archs.as_mut_ptr()) != 0 {
            bail!("nvrtcGetSupportedArchs failed");
        }
        Ok(archs)
    }
}

/// The virtual architecture to compile for a device of compute capability `cc`: the newest one
/// NVRTC has that the device can run (PTX runs on its own and later architectures).
pub fn architecture_for(cc: (i32, i32)) -> Result<i32> {
    let wanted = cc.0 * 10 + cc.1;
    supported_architectures()?
        .into_iter()
        .filter(|a| *a <= wanted)
        .max()
        .with_context(|| format!("NVRTC cannot compile for compute capability {wanted}"))
}

/// Compiles CUDA C++ `source` to PTX for virtual architecture `arch` (e.g. 90).
pub fn compile_ptx(source: &str, name: &str, arch: i32) -> Result<Vec<u8>> {
    let n = nvrtc()?;
    let source = CString::new(source)?;
    let name = CString::new(name)?;
    let options = [
        CString::new(format!("--gpu-architecture=compute_{arch}"))?,
        CString::new("--std=c++17")?,
    ];
    let option_ptrs: Vec<*const c_char> = options.iter().map(|o| o.as_ptr()).collect();
    let mut program: Program = std::ptr::null_mut();
    // SAFETY: every pointer handed over is a live NUL-terminated string or a buffer of the size
    // NVRTC reported; the program is destroyed on every path.
    unsafe {
        if (n.create)(
            &mut program,
            source.as_ptr(),
            name.as_ptr(),
            0,
            std::ptr::null(),
            std::ptr::null(),
        ) != 0
        {
            bail!("nvrtcCreateProgram failed");
        }
        let compiled = (n.compile)(program, option_ptrs.len() as c_int, option_ptrs.as_ptr());
        let result = if compiled == 0 {
            let mut size = 0;
            (n.ptx_size)(program, &mut size);
            let mut ptx = vec![0u8; size];
            (n.ptx)(program, ptx.as_mut_ptr().cast());
            Ok(ptx)
        } else {
            let mut size = 0;
            (n.log_size)(program, &mut size);
            let mut log = vec![0u8; size.max(1)];
            (n.log)(program, log.as_mut_ptr().cast());
            let log = CStr::from_bytes_until_nul(&log)
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            Err(anyhow::anyhow!(
                "NVRTC could not compile {}: {log}",
                name.to_string_lossy()
            ))
        };
        (n.destroy)(&mut program);
        result
    }
}
