//! Read-only facts: `/object_info`, `/system_stats`, `/features`, model listings,
//! `/extensions`, `/embeddings`, `/i18n`, `/workflow_templates` and `/internal/*`.

use std::time::UNIX_EPOCH;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value as Json};

use super::http::{json_response, ok_json, param};
use super::state::AppState;
use super::ws::feature_flags;

type State = web::Data<AppState>;

/// The ComfyUI release whose protocol we speak (its server routes, its pinned frontend and
/// templates); templates declare the lowest release they need against this.
pub const COMFYUI_VERSION: &str = "0.33.0";

pub async fn object_info(state: State) -> HttpResponse {
    let mut out = Map::new();
    for def in state.registry.iter() {
        out.insert(def.name.clone(), def.info(&state.env));
    }
    ok_json(&Json::Object(out))
}

pub async fn object_info_one(state: State, req: HttpRequest) -> HttpResponse {
    let name = param(&req, "node_class");
    let mut out = Map::new();
    if let Some(def) = state.registry.get(&name) {
        out.insert(def.name.clone(), def.info(&state.env));
    }
    ok_json(&Json::Object(out))
}

pub async fn system_stats(state: State) -> HttpResponse {
    let cpu = state.args.cpu;
    let devices = web::block(move || crate::system::devices(cpu))
        .await
        .unwrap_or_else(|_| json!([]));
    let (total, free) = crate::system::ram();
    let argv: Vec<String> = std::env::args().collect();
    ok_json(&json!({
        "system": {
            "os": std::env::consts::OS, "ram_total": total, "ram_free": free,
            "comfyui_version": COMFYUI_VERSION,
            "required_frontend_version": super::frontend::REQUIRED_FRONTEND_VERSION,
            "installed_templates_version": state.frontend.installed_version("comfyui-workflow-templates"),
            "required_templates_version": super::frontend::REQUIRED_TEMPLATES_VERSION,
            "comfy_package_versions": state.frontend.package_versions(),
            "python_version": concat!("videosdgx ", env!("CARGO_PKG_VERSION"), " (Rust)"),
            "pytorch_version": env!("VIDEOSDGX_TORCH_VERSION"),
            "embedded_python": false, "deploy_environment": "videosdgx", "argv": argv,
        },
        "devices": devices,
    }))
}

pub async fn features(state: State) -> HttpResponse {
    ok_json(&feature_flags(&state))
}

pub async fn embeddings(state: State) -> HttpResponse {
    let names: Vec<String> = state
        .paths
        .filename_list("embeddings")
        .unwrap_or_default()
        .into_iter()
        .map(|n| n.rsplit_once('.').map(|(s, _)| s.to_string()).unwrap_or(n))
        .collect();
    ok_json(&json!(names))
}

pub async fn models(state: State) -> HttpResponse {
    let keys: Vec<&String> = state.paths.models.keys().collect();
    ok_json(&json!(keys))
}

pub async fn models_in(state: State, req: HttpRequest) -> HttpResponse {
    let folder = param(&req, "folder");
    if !state.paths.models.contains_key(&folder) {
        return HttpResponse::NotFound().finish();
    }
    ok_json(&json!(state
        .paths
        .filename_list(&folder)
        .unwrap_or_default()))
}

pub async fn extensions(state: State) -> HttpResponse {
    ok_json(&json!(state.frontend.extension_scripts()))
}

pub async fn experiment_models(state: State) -> HttpResponse {
    let list: Vec<Json> = state
        .paths
        .models
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "configs" | "custom_nodes"))
        .map(|(k, f)| json!({"name": k, "folders": f.paths}))
        .collect();
    ok_json(&json!(list))
}

pub async fn experiment_models_in(state: State, req: HttpRequest) -> HttpResponse {
    let folder = param(&req, "folder");
    let Some(spec) = state.paths.models.get(&folder) else {
        return HttpResponse::NotFound().finish();
    };
    const EXTS: &[&str] = &[
        ".ckpt",
        ".pt",
        ".pt2",
        ".bin",
        ".pth",
        ".safetensors",
        ".pkl",
        ".sft",
    ];
    let mut out = Vec::new();
    for (index, root) in spec.paths.iter().enumerate() {
        let mut files = Vec::new();
        list_files(root, root, &mut files);
        for (rel, meta) in files {
            if !EXTS.iter().any(|e| rel.to_lowercase().ends_with(e)) {
                continue;
            }
            let secs = |t: std::io::Result<std::time::SystemTime>| {
                t.ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0.0, |d| d.as_secs_f64())
            };
            out.push(json!({"name": rel, "pathIndex": index, "modified": crate::pyjson::float_number(secs(meta.modified())),
                            "created": crate::pyjson::float_number(secs(meta.created())), "size": meta.len()}));
        }
    }
    ok_json(&json!(out))
}

fn list_files(
    root: &std::path::Path,
    dir: &std::path::Path,
    out: &mut Vec<(String, std::fs::Metadata)>,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = e.path();
        if path.is_dir() {
            list_files(root, &path, out);
        } else if let (Ok(meta), Ok(rel)) = (e.metadata(), path.strip_prefix(root)) {
            out.push((rel.to_string_lossy().into_owned(), meta));
        }
    }
}

pub async fn node_replacements() -> HttpResponse {
    ok_json(&crate::engine::replacements::table())
}

pub async fn empty_object() -> HttpResponse {
    ok_json(&json!({}))
}

/// What upstream answers for an id it does not know (`/global_subgraphs/{id}`).
pub async fn null() -> HttpResponse {
    ok_json(&Json::Null)
}

pub async fn internal_logs() -> HttpResponse {
    ok_json(&json!(""))
}

pub async fn internal_logs_raw() -> HttpResponse {
    ok_json(&json!({"entries": [], "size": {"cols": 80, "rows": 24}}))
}

pub async fn internal_subscribe() -> HttpResponse {
    HttpResponse::Ok().finish()
}

pub async fn internal_folder_paths(state: State) -> HttpResponse {
    let map: Map<String, Json> = state
        .paths
        .models
        .iter()
        .map(|(k, f)| (k.clone(), json!(f.paths)))
        .collect();
    ok_json(&Json::Object(map))
}

pub async fn internal_files(state: State, req: HttpRequest) -> HttpResponse {
    let kind = param(&req, "directory_type");
    let Some(dir) = state.paths.type_dir(&kind) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "Invalid directory type"}),
        );
    };
    let mut files: Vec<(std::time::SystemTime, String)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_file())
                .filter_map(|e| {
                    Some((
                        e.metadata().ok()?.modified().ok()?,
                        e.file_name().to_string_lossy().into_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    ok_json(&json!(files
        .into_iter()
        .map(|(_, n)| n)
        .collect::<Vec<_>>()))
}
