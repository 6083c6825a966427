//! Users, settings and user data (`app/user_manager.py`, `app/app_settings.py`), single-user.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value as Json};

use super::http::{ok_json, param, query, read_body, read_json, text};
use super::state::AppState;
use crate::paths::{is_relative_inside, resolves_inside};
use crate::pyjson;

type State = web::Data<AppState>;

/// The single user's folder under `--user-directory`.
fn default_user_root(user_dir: &Path) -> PathBuf {
    user_dir.join("default")
}

fn user_root(state: &AppState) -> PathBuf {
    default_user_root(&state.paths.user)
}

/// Gives a new user folder what the frontend reads at start (saved workflows and subgraphs,
/// custom CSS, legacy node templates), so a fresh install answers those reads with empty
/// values instead of 404s that the browser logs as errors.
pub fn seed_user_folder(user_dir: &Path) -> std::io::Result<()> {
    let root = default_user_root(user_dir);
    for dir in ["workflows", "subgraphs"] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    for (file, empty) in [("user.css", ""), ("comfy.templates.json", "[]")] {
        let path = root.join(file);
        if !path.exists() {
            std::fs::write(path, empty)?;
        }
    }
    Ok(())
}

/// A path under the user's folder, or `None` when it would leave it.
fn user_path(state: &AppState, rel: &str) -> Option<PathBuf> {
    let mut rel = rel.to_string();
    if rel.contains('%') {
        rel = percent_encoding::percent_decode_str(&rel)
            .decode_utf8_lossy()
            .into_owned();
    }
    let root = user_root(state);
    let path = root.join(&rel);
    (is_relative_inside(&rel) && resolves_inside(&root, &path)).then_some(path)
}

pub async fn get_users(state: State) -> HttpResponse {
    ok_json(&json!({"storage": "server", "migrated": user_root(&state).exists()}))
}

pub async fn post_users(state: State, payload: web::Payload) -> HttpResponse {
    let body = match read_json(payload, state.max_body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(name) = body
        .get("username")
        .and_then(Json::as_str)
        .map(str::trim)
        .filter(|n| !n.is_empty())
    else {
        return super::http::bad_json("username is required");
    };
    let users_file = state.paths.user.join("users.json");
    let mut users: Map<String, Json> = std::fs::read(&users_file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if users.values().any(|v| v.as_str() == Some(name)) {
        return super::http::json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "Duplicate username."}),
        );
    }
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let id = format!("{safe}_{}", uuid::Uuid::new_v4());
    users.insert(id.clone(), json!(name));
    if let Err(e) = std::fs::write(&users_file, pyjson::dumps(&Json::Object(users))) {
        return text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
    }
    ok_json(&json!(id))
}

fn settings_file(state: &AppState) -> PathBuf {
    user_root(state).join("comfy.settings.json")
}

fn load_settings(state: &AppState) -> Map<String, Json> {
    std::fs::read(settings_file(state))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save_settings(state: &AppState, settings: Map<String, Json>) -> HttpResponse {
    let file = settings_file(state);
    let _ = std::fs::create_dir_all(file.parent().unwrap_or(Path::new(".")));
    match serde_json::to_string_pretty(&Json::Object(settings)).map(|s| std::fs::write(&file, s)) {
        Ok(Ok(())) => HttpResponse::Ok().finish(),
        _ => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not write settings",
        ),
    }
}

pub async fn get_settings(state: State) -> HttpResponse {
    ok_json(&Json::Object(load_settings(&state)))
}

pub async fn get_setting(state: State, req: HttpRequest) -> HttpResponse {
    ok_json(
        load_settings(&state)
            .get(&param(&req, "id"))
            .unwrap_or(&Json::Null),
    )
}

pub async fn post_settings(state: State, payload: web::Payload) -> HttpResponse {
    let Json::Object(update) = (match read_json(payload, state.max_body).await {
        Ok(b) => b,
        Err(r) => return r,
    }) else {
        return super::http::bad_json("settings must be an object");
    };
    let mut settings = load_settings(&state);
    settings.extend(update);
    save_settings(&state, settings)
}

pub async fn post_setting(state: State, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    let value = match read_json(payload, state.max_body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut settings = load_settings(&state);
    settings.insert(param(&req, "id"), value);
    save_settings(&state, settings)
}

fn epoch(t: std::io::Result<std::time::SystemTime>) -> Json {
    let secs = t
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64());
    pyjson::float_number(secs)
}

fn walk(dir: &Path, recurse: bool, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(|e| e.ok()) {
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let p = e.path();
        if p.is_dir() {
            if recurse {
                walk(&p, recurse, out);
            }
        } else {
            out.push(p);
        }
    }
}

pub async fn list_userdata(state: State, req: HttpRequest) -> HttpResponse {
    let Some(dir) = query(&req, "dir").filter(|d| !d.is_empty()) else {
        return text(StatusCode::BAD_REQUEST, "Directory not provided");
    };
    let Some(path) = user_path(&state, &dir) else {
        return text(StatusCode::FORBIDDEN, "Invalid directory");
    };
    if !path.is_dir() {
        return text(StatusCode::NOT_FOUND, "Directory not found");
    }
    let flag = |name: &str| query(&req, name).is_some_and(|v| v == "true");
    let mut files = Vec::new();
    walk(&path, flag("recurse"), &mut files);
    files.sort();
    let rel = |p: &PathBuf| {
        p.strip_prefix(&path)
            .map(|r| r.to_string_lossy().replace('\\', "/"))
            .unwrap_or_default()
    };
    let list: Vec<Json> = files
        .iter()
        .map(|p| {
            if flag("full_info") {
                let meta = std::fs::metadata(p).ok();
                json!({"path": rel(p), "size": meta.as_ref().map_or(0, |m| m.len()),
                       "modified": epoch(meta.as_ref().map(|m| m.modified()).unwrap_or(Err(std::io::ErrorKind::Other.into()))),
                       "created": epoch(meta.as_ref().map(|m| m.created()).unwrap_or(Err(std::io::ErrorKind::Other.into())))})
            } else if flag("split") {
                let r = rel(p);
                let mut parts = vec![json!(r)];
                parts.extend(r.split('/').map(|s| json!(s)));
                Json::Array(parts)
            } else {
                json!(rel(p))
            }
        })
        .collect();
    ok_json(&json!(list))
}

pub async fn list_userdata_v2(state: State, req: HttpRequest) -> HttpResponse {
    let rel = query(&req, "path").unwrap_or_default();
    let Some(path) = user_path(&state, &rel) else {
        return text(StatusCode::BAD_REQUEST, "Invalid path");
    };
    let root = user_root(&state);
    if !root.exists() {
        return ok_json(&json!([]));
    }
    if !path.is_dir() {
        return text(StatusCode::NOT_FOUND, "Path not found");
    }
    let mut entries = Vec::new();
    collect_v2(&root, &path, &mut entries);
    entries.sort_by(|a, b| {
        let key = |e: &Json| {
            (
                e["type"] != "directory",
                e["name"].as_str().unwrap_or("").to_lowercase(),
            )
        };
        key(a).cmp(&key(b))
    });
    ok_json(&json!(entries))
}

fn collect_v2(root: &Path, dir: &Path, out: &mut Vec<Json>) {
    let Ok(items) = std::fs::read_dir(dir) else {
        return;
    };
    for e in items.filter_map(|e| e.ok()) {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = p
            .strip_prefix(root)
            .map(|r| r.to_string_lossy().into_owned())
            .unwrap_or_default();
        if p.is_dir() {
            out.push(json!({"name": name, "path": rel, "type": "directory"}));
            collect_v2(root, &p, out);
        } else if let Ok(meta) = e.metadata() {
            out.push(json!({"name": name, "path": rel, "type": "file", "size": meta.len(), "modified": epoch(meta.modified())}));
        }
    }
}

fn file_param(state: &AppState, req: &HttpRequest, name: &str) -> Result<PathBuf, HttpResponse> {
    let file = param(req, name);
    if file.is_empty() {
        return Err(text(StatusCode::BAD_REQUEST, "Invalid file"));
    }
    user_path(state, &file).ok_or_else(|| text(StatusCode::FORBIDDEN, "Invalid file path"))
}

pub async fn get_userdata(state: State, req: HttpRequest) -> HttpResponse {
    let path = match file_param(&state, &req, "file") {
        Ok(p) => p,
        Err(r) => return r,
    };
    match actix_files::NamedFile::open(&path) {
        Ok(f) if path.is_file() => f.into_response(&req),
        _ => text(StatusCode::NOT_FOUND, "File not found"),
    }
}

fn file_reply(state: &AppState, req: &HttpRequest, path: &Path) -> HttpResponse {
    let rel = path
        .strip_prefix(user_root(state))
        .map(|r| r.to_string_lossy().into_owned())
        .unwrap_or_default();
    if query(req, "full_info").is_some_and(|v| v == "true") {
        let meta = std::fs::metadata(path).ok();
        return ok_json(
            &json!({"path": rel, "size": meta.as_ref().map_or(0, |m| m.len()),
                               "modified": epoch(meta.as_ref().map(|m| m.modified()).unwrap_or(Err(std::io::ErrorKind::Other.into())))}),
        );
    }
    ok_json(&json!(rel))
}

pub async fn post_userdata(state: State, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    let path = match file_param(&state, &req, "file") {
        Ok(p) => p,
        Err(r) => return r,
    };
    let body = match read_body(payload, state.max_body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if query(&req, "overwrite").is_some_and(|v| v == "false") && path.exists() {
        return text(StatusCode::CONFLICT, "File already exists");
    }
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|_| std::fs::write(&path, &body));
    if let Err(e) = written {
        return text(StatusCode::BAD_REQUEST, &format!("Invalid filename: {e}"));
    }
    file_reply(&state, &req, &path)
}

pub async fn delete_userdata(state: State, req: HttpRequest) -> HttpResponse {
    let path = match file_param(&state, &req, "file") {
        Ok(p) => p,
        Err(r) => return r,
    };
    match std::fs::remove_file(&path) {
        Ok(()) => HttpResponse::NoContent().finish(),
        Err(_) => text(StatusCode::NOT_FOUND, "File not found"),
    }
}

pub async fn move_userdata(state: State, req: HttpRequest) -> HttpResponse {
    let (source, dest) = match (
        file_param(&state, &req, "file"),
        file_param(&state, &req, "dest"),
    ) {
        (Ok(s), Ok(d)) => (s, d),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    if !source.is_file() {
        return text(StatusCode::NOT_FOUND, "File not found");
    }
    if query(&req, "overwrite").is_some_and(|v| v == "false") && dest.exists() {
        return text(StatusCode::CONFLICT, "File already exists");
    }
    let moved = dest
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|_| std::fs::rename(&source, &dest));
    if let Err(e) = moved {
        return text(StatusCode::BAD_REQUEST, &e.to_string());
    }
    file_reply(&state, &req, &dest)
}
