//! Response and request helpers shared by the routes.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::{json, Value as Json};

use crate::pyjson;

pub const JSON_TYPE: &str = "application/json; charset=utf-8";

/// A JSON response serialised as Python's `json.dumps` would.
pub fn json_response(status: StatusCode, body: &Json) -> HttpResponse {
    HttpResponse::build(status)
        .content_type(JSON_TYPE)
        .body(pyjson::dumps(body))
}

pub fn ok_json(body: &Json) -> HttpResponse {
    json_response(StatusCode::OK, body)
}

pub fn empty_ok() -> HttpResponse {
    HttpResponse::Ok().finish()
}

pub fn text(status: StatusCode, body: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .body(body.to_string())
}

/// A 400 for a body that is not the JSON the route needs.
pub fn bad_json(message: &str) -> HttpResponse {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({"error": {"type": "invalid_json", "message": "Invalid request body", "details": message, "extra_info": {}}, "node_errors": {}}),
    )
}

/// Reads the whole body, answering 413 as aiohttp does past the limit.
pub async fn read_body(
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, HttpResponse> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| text(StatusCode::BAD_REQUEST, &e.to_string()))?;
        if body.len() + chunk.len() > limit {
            let msg = format!(
                "Maximum request body size {limit} exceeded, actual body size {}",
                body.len() + chunk.len()
            );
            return Err(text(StatusCode::PAYLOAD_TOO_LARGE, &msg));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Parses a JSON body whatever the Content-Type (the frontend sends text/plain).
pub async fn read_json(payload: web::Payload, limit: usize) -> Result<Json, HttpResponse> {
    let body = read_body(payload, limit).await?;
    serde_json::from_slice(&body).map_err(|e| bad_json(&format!("Invalid JSON: {e}")))
}

/// A path parameter: one raw segment, fully percent-decoded (`%2F` becomes `/`).
pub fn param(req: &HttpRequest, name: &str) -> String {
    let raw = req.match_info().get(name).unwrap_or("");
    percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned()
}

/// One query parameter, decoded.
pub fn query(req: &HttpRequest, name: &str) -> Option<String> {
    url_query(req.query_string())
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

pub fn url_query(qs: &str) -> Vec<(String, String)> {
    qs.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}
