//! The web frontend and what ships beside it on PyPI: `comfyui-frontend-package` (or
//! `--front-end-root`), the workflow-template packages and the embedded node docs, found in
//! the project's venv as ComfyUI finds them through `importlib`.

use std::path::{Component, Path, PathBuf};

use actix_web::{web, HttpRequest, HttpResponse};

use super::state::AppState;

/// The frontend release upstream ComfyUI pins in its `requirements.txt`.
pub const REQUIRED_FRONTEND_VERSION: &str = "1.49.6";
pub const REQUIRED_TEMPLATES_VERSION: &str = "0.11.44";

/// Upstream's `comfy*` pins (PyPI name, distribution folder prefix, version), reported by
/// `/system_stats` beside what is installed.
const PINNED_PACKAGES: [(&str, &str, &str); 3] = [
    (
        "comfyui-frontend-package",
        "comfyui_frontend_package",
        REQUIRED_FRONTEND_VERSION,
    ),
    (
        "comfyui-workflow-templates",
        "comfyui_workflow_templates",
        REQUIRED_TEMPLATES_VERSION,
    ),
    ("comfyui-embedded-docs", "comfyui_embedded_docs", "0.5.10"),
];

#[derive(Debug, Default)]
pub struct Frontend {
    pub web_root: Option<PathBuf>,
    /// Every `templates/` folder of the installed template packages; asset names are unique
    /// across them (upstream's manifest maps each name to one bundle).
    template_dirs: Vec<PathBuf>,
    pub docs_root: Option<PathBuf>,
    /// `(PyPI name, installed version)` of each pinned package.
    installed: Vec<(&'static str, Option<String>)>,
}

impl Frontend {
    /// `--front-end-root` wins; otherwise the packages installed in a venv we can see.
    pub fn locate(front_end_root: Option<&Path>) -> anyhow::Result<Frontend> {
        let sites = crate::venv::site_packages();
        let mut found = Frontend::default();
        if let Some(root) = front_end_root {
            anyhow::ensure!(
                root.join("index.html").is_file(),
                "--front-end-root {} has no index.html",
                root.display()
            );
            found.web_root = Some(root.to_path_buf());
        }
        found.installed = PINNED_PACKAGES
            .iter()
            .map(|(name, dist, _)| (*name, sites.iter().find_map(|s| dist_version(s, dist))))
            .collect();
        for site in &sites {
            let packaged = site.join("comfyui_frontend_package").join("static");
            if found.web_root.is_none() && packaged.join("index.html").is_file() {
                found.web_root = Some(packaged);
            }
            if found.docs_root.is_none() {
                let docs = site.join("comfyui_embedded_docs").join("docs");
                found.docs_root = docs.is_dir().then_some(docs);
            }
            let Ok(entries) = std::fs::read_dir(site) else {
                continue;
            };
            let mut dirs: Vec<PathBuf> = entries
                .filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("comfyui_workflow_templates")
                })
                .map(|e| e.path().join("templates"))
                .filter(|d| d.is_dir())
                .collect();
            dirs.sort();
            found.template_dirs.extend(dirs);
        }
        Ok(found)
    }

    /// The installed version of a pinned package, by PyPI name.
    pub fn installed_version(&self, name: &str) -> Option<&str> {
        self.installed
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// `/system_stats`' `comfy_package_versions`.
    pub fn package_versions(&self) -> serde_json::Value {
        let list: Vec<serde_json::Value> = PINNED_PACKAGES
            .iter()
            .map(|(name, _, required)| {
                serde_json::json!({"name": name, "installed": self.installed_version(name), "required": required})
            })
            .collect();
        serde_json::Value::Array(list)
    }

    /// A template asset by its flat name (`index.json`, `<id>.json`, `<id>-1.webp`, …).
    pub fn template_file(&self, name: &str) -> Option<PathBuf> {
        let rel = Path::new(name);
        if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return None;
        }
        self.template_dirs
            .iter()
            .map(|d| d.join(rel))
            .find(|p| p.is_file())
    }

    /// `/extensions`: every `.js` under the web root's `extensions/` as a URL path.
    pub fn extension_scripts(&self) -> Vec<String> {
        let Some(root) = &self.web_root else {
            return Vec::new();
        };
        let mut out = Vec::new();
        collect_js(&root.join("extensions"), root, &mut out);
        out.sort();
        out
    }
}

fn collect_js(dir: &Path, root: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let path = e.path();
        if path.is_dir() {
            collect_js(&path, root, out);
        } else if path.extension().is_some_and(|x| x == "js") {
            if let Ok(rel) = path.strip_prefix(root) {
                out.push(format!("/{}", rel.to_string_lossy().replace('\\', "/")));
            }
        }
    }
}

/// The installed version from `<name>-<version>.dist-info`.
fn dist_version(site: &Path, name: &str) -> Option<String> {
    let prefix = format!("{name}-");
    std::fs::read_dir(site).ok()?.find_map(|e| {
        let file = e.ok()?.file_name().to_string_lossy().into_owned();
        let version = file.strip_prefix(&prefix)?.strip_suffix(".dist-info")?;
        Some(version.to_string())
    })
}

/// `GET /` (and `/api/`): the frontend's index.html, never cached.
pub async fn index(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let Some(root) = &state.frontend.web_root else {
        return HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .insert_header(("Cache-Control", "no-store, must-revalidate"))
            .body(concat!(
                "<!doctype html><title>VideosDGX</title><p>VideosDGX is running. The web ",
                "frontend is not installed: <code>make setup</code> installs PyPI's ",
                "comfyui-frontend-package, or pass <code>--front-end-root DIR</code>.</p>"
            ));
    };
    match actix_files::NamedFile::open(root.join("index.html")) {
        Ok(file) => {
            let mut resp = file.disable_content_disposition().into_response(&req);
            let headers = resp.headers_mut();
            use actix_web::http::header::{HeaderName, HeaderValue, CACHE_CONTROL, EXPIRES};
            headers.insert(
                CACHE_CONTROL,
                HeaderValue::from_static("no-store, must-revalidate"),
            );
            headers.insert(
                HeaderName::from_static("pragma"),
                HeaderValue::from_static("no-cache"),
            );
            headers.insert(EXPIRES, HeaderValue::from_static("0"));
            resp
        }
        Err(_) => HttpResponse::NotFound().finish(),
    }
}

/// `GET /templates/{path}`: one asset of the installed template packages.
pub async fn template(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let name = req.match_info().get("path").unwrap_or("");
    let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
    match state.frontend.template_file(&name) {
        Some(path) => match actix_files::NamedFile::open(path) {
            Ok(f) => f.into_response(&req),
            Err(_) => HttpResponse::NotFound().finish(),
        },
        None => HttpResponse::NotFound().finish(),
    }
}

/// `GET /user.css`: index.html links it beside the user's own `api/userdata/user.css`; the
/// packaged frontend has none, so an empty sheet stands in.
pub async fn user_css(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let file = state.frontend.web_root.as_ref().map(|r| r.join("user.css"));
    match file.and_then(|f| actix_files::NamedFile::open(f).ok()) {
        Some(f) => f.into_response(&req),
        None => HttpResponse::Ok().content_type("text/css").finish(),
    }
}
