//! The Python venvs VideosDGX runs beside: where the frontend, the templates and CLIP's BPE
//! vocabulary are installed (`make setup`), and our own built libraries (`.venv/videosdgx/`).

use std::path::{Path, PathBuf};

/// The venvs we may run beside: the active one, the one `make` points at, `./.venv`, and a
/// `.venv` above the binary (`target/release/videosdgx` in a checkout).
pub fn roots() -> Vec<PathBuf> {
    let mut venvs: Vec<PathBuf> = Vec::new();
    if let Some(v) = std::env::var_os("VIRTUAL_ENV") {
        venvs.push(v.into());
    }
    if let Some(py) = std::env::var_os("VIDEOSDGX_PYTHON") {
        if let Some(v) = Path::new(&py).parent().and_then(Path::parent) {
            venvs.push(v.to_path_buf());
        }
    }
    venvs.push(PathBuf::from(".venv"));
    if let Ok(exe) = std::env::current_exe() {
        venvs.extend(exe.ancestors().skip(1).map(|a| a.join(".venv")));
    }
    venvs
}

/// The `site-packages` folders of [`roots`], each once.
pub fn site_packages() -> Vec<PathBuf> {
    let mut sites = Vec::new();
    for venv in roots() {
        let Ok(libs) = std::fs::read_dir(venv.join("lib")) else {
            continue;
        };
        for lib in libs.filter_map(|e| e.ok()) {
            let site = lib.path().join("site-packages");
            let python = lib.file_name().to_string_lossy().starts_with("python3");
            if python && site.is_dir() {
                let site = site.canonicalize().unwrap_or(site);
                if !sites.contains(&site) {
                    sites.push(site);
                }
            }
        }
    }
    sites
}
