//! `/view`, `/upload/image`, `/upload/mask`, `/view_metadata/{folder}`.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use actix_multipart::Multipart;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};

use super::http::{json_response, ok_json, param, query, text};
use super::state::AppState;
use crate::paths::{is_relative_inside, normpath, resolves_inside};

type State = web::Data<AppState>;

/// Types a browser may run or render with script in the page's origin (upstream's
/// `DANGEROUS_CONTENT_TYPES`; any XML dialect counts).
const DANGEROUS_TYPES: &[&str] = &[
    "text/html",
    "text/html-sandboxed",
    "application/xhtml+xml",
    "text/javascript",
    "application/javascript",
    "application/x-javascript",
    "application/ecmascript",
    "text/css",
    "image/svg+xml",
    "application/xml",
    "text/xml",
    "message/rfc822",
];

fn is_dangerous(essence: &str) -> bool {
    DANGEROUS_TYPES.contains(&essence) || essence.ends_with("+xml") || essence.ends_with("/xml")
}

pub async fn view(state: State, req: HttpRequest) -> HttpResponse {
    let Some(filename) = query(&req, "filename") else {
        return HttpResponse::NotFound().finish();
    };
    let kind = query(&req, "type").unwrap_or_else(|| "output".into());
    let (dir, name) = annotated(&state, &filename, &kind);
    if name.is_empty() {
        return HttpResponse::BadRequest().finish();
    }
    if name.starts_with('/') || name.contains("..") {
        return HttpResponse::BadRequest().finish();
    }
    let Some(dir) = dir else {
        return HttpResponse::BadRequest().finish();
    };
    let subfolder = query(&req, "subfolder").unwrap_or_default();
    let folder = crate::paths::absolute(&dir.join(&subfolder));
    if !folder.starts_with(&dir) || !resolves_inside(&dir, &folder) {
        return HttpResponse::Forbidden().finish();
    }
    let base = Path::new(&name)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file = folder.join(&base);
    if !file.is_file() || !resolves_inside(&dir, &file) {
        return HttpResponse::NotFound().finish();
    }
    // Quotes and backslashes escaped so a filename cannot break out of the header.
    let quoted = base.replace('\\', "\\\\").replace('"', "\\\"");
    let disposition = format!("filename=\"{quoted}\"");
    let channel = query(&req, "channel");
    if let Some(preview) = query(&req, "preview") {
        return transformed(&file, Some(&preview), channel.as_deref(), &disposition);
    }
    if matches!(channel.as_deref(), Some("rgb") | Some("a")) {
        return transformed(&file, None, channel.as_deref(), &disposition);
    }
    let guessed = mime_guess::from_path(&file).first_or_octet_stream();
    let named = match actix_files::NamedFile::open(&file) {
        Ok(f) => f.disable_content_disposition(),
        Err(_) => return HttpResponse::NotFound().finish(),
    };
    let dangerous = is_dangerous(guessed.essence_str());
    // An SVG inside an <img> runs no script; as a document it could (stored XSS).
    let as_image = req
        .headers()
        .get("Sec-Fetch-Dest")
        .is_some_and(|d| d == "image")
        && guessed.essence_str() == "image/svg+xml";
    let (mime, disposition) = if dangerous && !as_image {
        (
            mime_guess::mime::APPLICATION_OCTET_STREAM,
            format!("attachment; {disposition}"),
        )
    } else {
        (guessed, disposition)
    };
    let mut resp = named.set_content_type(mime).into_response(&req);
    let headers = resp.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if dangerous {
        // The answer depends on Sec-Fetch-Dest, so no cache may replay it elsewhere.
        headers.insert(header::VARY, HeaderValue::from_static("Sec-Fetch-Dest"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

/// `name [input]`-style annotations override `type`; an unknown `type` gives no folder.
fn annotated(state: &AppState, filename: &str, kind: &str) -> (Option<PathBuf>, String) {
    for k in ["output", "input", "temp"] {
        if let Some(stripped) = filename.strip_suffix(&format!(" [{k}]")) {
            return (
                state.paths.type_dir(k).map(Path::to_path_buf),
                stripped.to_string(),
            );
        }
    }
    (
        state.paths.type_dir(kind).map(Path::to_path_buf),
        filename.to_string(),
    )
}

/// `preview=fmt;quality` and `channel=rgb|a` re-encodings.
fn transformed(
    file: &Path,
    preview: Option<&str>,
    channel: Option<&str>,
    disposition: &str,
) -> HttpResponse {
    let Ok(img) = crate::imageio::open(file) else {
        return HttpResponse::BadRequest().finish();
    };
    // Only an explicit channel with alpha forces WEBP previews; the default is rgba.
    let forces_webp = channel.is_some_and(|c| c.contains('a'));
    let img = match channel.unwrap_or("rgba") {
        "rgb" => image::DynamicImage::ImageRgb8(img.to_rgb8()),
        "a" => {
            let mut rgba = img.to_rgba8();
            for p in rgba.pixels_mut() {
                let a = if img.color().has_alpha() { p.0[3] } else { 255 };
                p.0 = [0, 0, 0, a];
            }
            image::DynamicImage::ImageRgba8(rgba)
        }
        _ => img,
    };
    let mut out = std::io::Cursor::new(Vec::new());
    let content_type = match preview {
        Some(spec) => {
            let parts: Vec<&str> = spec.split(';').collect();
            let quality = parts
                .last()
                .and_then(|q| q.parse::<u8>().ok())
                .unwrap_or(90);
            let jpeg = parts[0] == "jpeg" && !forces_webp;
            if jpeg {
                let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
                if img.to_rgb8().write_with_encoder(enc).is_err() {
                    return HttpResponse::InternalServerError().finish();
                }
                "image/jpeg"
            } else {
                if img.write_to(&mut out, image::ImageFormat::WebP).is_err() {
                    return HttpResponse::InternalServerError().finish();
                }
                "image/webp"
            }
        }
        None => {
            if img.write_to(&mut out, image::ImageFormat::Png).is_err() {
                return HttpResponse::InternalServerError().finish();
            }
            "image/png"
        }
    };
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CONTENT_DISPOSITION, disposition.to_string()))
        .body(out.into_inner())
}

struct Form {
    fields: HashMap<String, String>,
    file: Option<(String, Vec<u8>)>,
}

async fn read_form(
    mut form: Multipart,
    limit: usize,
    file_field: &str,
) -> Result<Form, HttpResponse> {
    let mut out = Form {
        fields: HashMap::new(),
        file: None,
    };
    let mut total = 0usize;
    while let Some(field) = form.next().await {
        let mut field = field.map_err(|e| text(StatusCode::BAD_REQUEST, &e.to_string()))?;
        let name = field.name().unwrap_or_default().to_string();
        let filename = field
            .content_disposition()
            .and_then(|d| d.get_filename())
            .map(String::from);
        let mut data = Vec::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(|e| text(StatusCode::BAD_REQUEST, &e.to_string()))?;
            total += chunk.len();
            if total > limit {
                let msg =
                    format!("Maximum request body size {limit} exceeded, actual body size {total}");
                return Err(text(StatusCode::PAYLOAD_TOO_LARGE, &msg));
            }
            data.extend_from_slice(&chunk);
        }
        if name == file_field {
            out.file = filename.map(|f| (f, data));
        } else {
            out.fields
                .insert(name, String::from_utf8_lossy(&data).into_owned());
        }
    }
    Ok(out)
}

fn split_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    }
}

/// Picks the target path with ComfyUI's rules: reuse an identical file, else `name (N).ext`.
fn upload_target(
    state: &AppState,
    form: &Form,
    data: &[u8],
    original: &str,
) -> Result<(PathBuf, String, bool), HttpResponse> {
    let kind = form
        .fields
        .get("type")
        .map(String::as_str)
        .unwrap_or("input");
    let Some(dir) = state.paths.type_dir(kind) else {
        return Err(text(
            StatusCode::BAD_REQUEST,
            &format!("Invalid type: {kind}"),
        ));
    };
    let subfolder = form.fields.get("subfolder").cloned().unwrap_or_default();
    let sub = normpath(&subfolder);
    let rel = if sub.is_empty() {
        normpath(original)
    } else {
        normpath(&format!("{sub}/{original}"))
    };
    if !is_relative_inside(&rel) || !resolves_inside(dir, &dir.join(&rel)) {
        return Err(HttpResponse::BadRequest().finish());
    }
    let folder = dir.join(normpath(&subfolder));
    std::fs::create_dir_all(&folder).map_err(|e| text(StatusCode::BAD_REQUEST, &e.to_string()))?;
    let overwrite = matches!(
        form.fields.get("overwrite").map(String::as_str),
        Some("true") | Some("1")
    );
    let mut name = original.to_string();
    let mut path = folder.join(&name);
    if !overwrite {
        let digest = Sha256::digest(data);
        let (stem, ext) = split_ext(original);
        let mut i = 1;
        while path.exists() {
            if std::fs::read(&path).is_ok_and(|existing| Sha256::digest(existing) == digest) {
                return Ok((path, name, true));
            }
            name = format!("{stem} ({i}){ext}");
            path = folder.join(&name);
            i += 1;
        }
    }
    Ok((path, name, false))
}

fn upload_reply(form: &Form, name: &str) -> HttpResponse {
    let kind = form
        .fields
        .get("type")
        .cloned()
        .unwrap_or_else(|| "input".into());
    let subfolder = form.fields.get("subfolder").cloned().unwrap_or_default();
    ok_json(&json!({"name": name, "subfolder": subfolder, "type": kind}))
}

pub async fn upload_image(state: State, form: Multipart) -> HttpResponse {
    let form = match read_form(form, state.max_body, "image").await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let Some((original, data)) = form.file.as_ref().filter(|(n, _)| !n.is_empty()) else {
        return HttpResponse::BadRequest().finish();
    };
    let (path, name, duplicate) = match upload_target(&state, &form, data, original) {
        Ok(t) => t,
        Err(r) => return r,
    };
    if !duplicate {
        if let Err(e) = std::fs::write(&path, data) {
            return text(StatusCode::BAD_REQUEST, &e.to_string());
        }
    }
    upload_reply(&form, &name)
}

pub async fn upload_mask(state: State, form: Multipart) -> HttpResponse {
    let form = match read_form(form, state.max_body, "image").await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let Some((original, data)) = form.file.as_ref().filter(|(n, _)| !n.is_empty()) else {
        return HttpResponse::BadRequest().finish();
    };
    let Some(Ok(reference)) = form
        .fields
        .get("original_ref")
        .map(|r| serde_json::from_str::<Json>(r))
    else {
        return super::http::bad_json("original_ref must be a JSON object");
    };
    let (path, name, _) = match upload_target(&state, &form, data, original) {
        Ok(t) => t,
        Err(r) => return r,
    };
    // Invalid references are ignored silently, as ComfyUI does.
    if let Some(source) = mask_source(&state, &reference) {
        if let Err(e) = apply_mask(&source, data, &path) {
            log::warn!("mask upload: {e:#}");
        }
    }
    upload_reply(&form, &name)
}

fn mask_source(state: &AppState, reference: &Json) -> Option<PathBuf> {
    let filename = reference.get("filename")?.as_str()?;
    let kind = reference
        .get("type")
        .and_then(Json::as_str)
        .unwrap_or("output");
    let (dir, name) = annotated(state, filename, kind);
    let dir = dir?;
    if name.is_empty() || name.starts_with('/') || name.contains("..") {
        return None;
    }
    let sub = reference
        .get("subfolder")
        .and_then(Json::as_str)
        .unwrap_or("");
    let path = dir.join(sub).join(Path::new(&name).file_name()?);
    (resolves_inside(&dir, &path) && path.is_file()).then_some(path)
}

/// The original image with its alpha replaced by the mask's, text chunks kept.
fn apply_mask(source: &Path, mask_bytes: &[u8], target: &Path) -> anyhow::Result<()> {
    let mut original = crate::imageio::open(source)?.to_rgba8();
    let mask = image::load_from_memory(mask_bytes)?.to_rgba8();
    let mask = image::imageops::resize(
        &mask,
        original.width(),
        original.height(),
        image::imageops::FilterType::Nearest,
    );
    for (p, m) in original.pixels_mut().zip(mask.pixels()) {
        p.0[3] = m.0[3];
    }
    let text_chunks = png_text(source).unwrap_or_default();
    let file = std::io::BufWriter::new(std::fs::File::create(target)?);
    let mut enc = png::Encoder::new(file, original.width(), original.height());
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    for (k, v) in text_chunks {
        enc.add_text_chunk(k, v)?;
    }
    let mut w = enc.write_header()?;
    w.write_image_data(original.as_raw())?;
    w.finish()?;
    Ok(())
}

fn png_text(path: &Path) -> Option<Vec<(String, String)>> {
    let decoder = png::Decoder::new(std::fs::File::open(path).ok()?);
    let reader = decoder.read_info().ok()?;
    let info = reader.info();
    let mut out: Vec<(String, String)> = info
        .uncompressed_latin1_text
        .iter()
        .map(|t| (t.keyword.clone(), t.text.clone()))
        .collect();
    out.extend(
        info.utf8_text
            .iter()
            .filter_map(|t| Some((t.keyword.clone(), t.get_text().ok()?))),
    );
    Some(out)
}

pub async fn view_metadata(state: State, req: HttpRequest) -> HttpResponse {
    let folder = param(&req, "folder_name");
    let Some(filename) = query(&req, "filename").filter(|f| f.ends_with(".safetensors")) else {
        return HttpResponse::NotFound().finish();
    };
    let Some(path) = state.paths.full_path(&folder, &filename) else {
        return HttpResponse::NotFound().finish();
    };
    match safetensors_metadata(&path) {
        Some(meta) => json_response(StatusCode::OK, &meta),
        None => HttpResponse::NotFound().finish(),
    }
}

fn safetensors_metadata(path: &Path) -> Option<Json> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).ok()?;
    let len = u64::from_le_bytes(len);
    if len > 1024 * 1024 {
        return None;
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header).ok()?;
    let parsed: Json = serde_json::from_slice(&header).ok()?;
    parsed.get("__metadata__").cloned()
}
