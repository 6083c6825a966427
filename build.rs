//! Makes the binary find libtorch without environment variables and keeps CUDA visible.
//!
//! torch-sys links `torch_cuda`, but the linker's default `--as-needed` drops it because no
//! symbol of ours refers to it; libtorch then never registers its CUDA backend. Linking it with
//! `--no-as-needed` keeps it. The rpath points at the libtorch that torch-sys built against.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:rustc-env=VIDEOSDGX_TORCH_VERSION=unknown");
        return;
    };
    println!(
        "cargo:rustc-env=VIDEOSDGX_TORCH_VERSION={}",
        torch_version(&lib_dir)
    );
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    let has_cuda = std::path::Path::new(&lib_dir)
        .join("libtorch_cuda.so")
        .exists();
    if has_cuda {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
    build_shim(&lib_dir);
}

/// Compiles `src/runtime/cuda_shim.cpp` against the libtorch headers.
fn build_shim(lib_dir: &str) {
    let shim = "src/runtime/cuda_shim.cpp";
    println!("cargo:rerun-if-changed={shim}");
    cc::Build::new()
        .cpp(true)
        .file(shim)
        .std("c++17")
        .include(std::path::Path::new(lib_dir).join("../include"))
        .flag_if_supported("-w")
        .compile("vdgx_cuda_shim");
}

/// The version string PyTorch records next to its libraries (`torch/version.py`).
fn torch_version(lib_dir: &str) -> String {
    let version_py = std::path::Path::new(lib_dir).join("../version.py");
    let text = std::fs::read_to_string(version_py).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("__version__ = "))
        .map(|v| v.trim().trim_matches(['\'', '"']).to_string())
        .unwrap_or_else(|| "unknown".into())
}
