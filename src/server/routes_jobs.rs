//! `/api/jobs`, `/api/jobs/{job_id}` and the cancel routes (upstream registers them with the
//! literal `/api` prefix, so they also answer at `/api/api/jobs` and never bare).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value as Json};

use super::http::{json_response, ok_json, param, read_json, url_query};
use super::state::AppState;
use crate::queue::jobs::{self, SortBy};

type State = web::Data<AppState>;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/jobs").route(super::get().to(list)))
        .service(web::resource("/jobs/cancel").route(web::post().to(cancel_many)))
        .service(web::resource("/jobs/{job_id}").route(super::get().to(one)))
        .service(web::resource("/jobs/{job_id}/cancel").route(web::post().to(cancel_one)));
}

fn bad(message: String) -> HttpResponse {
    json_response(StatusCode::BAD_REQUEST, &json!({"error": message}))
}

/// The list query, checked as upstream checks it.
struct ListQuery {
    statuses: Vec<String>,
    workflow_id: Option<String>,
    sort_by: SortBy,
    descending: bool,
    limit: Option<usize>,
    offset: usize,
}

fn parse_list_query(req: &HttpRequest) -> Result<ListQuery, HttpResponse> {
    let pairs = url_query(req.query_string());
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let mut statuses: Vec<String> = jobs::ALL_STATUSES.iter().map(|s| s.to_string()).collect();
    if let Some(list) = get("status").filter(|s| !s.is_empty()) {
        statuses = list
            .split(',')
            .map(|s| s.trim().to_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        let invalid: Vec<&str> = statuses
            .iter()
            .map(String::as_str)
            .filter(|s| !jobs::ALL_STATUSES.contains(s))
            .collect();
        if !invalid.is_empty() {
            return Err(bad(format!(
                "Invalid status value(s): {}. Valid values: {}",
                invalid.join(", "),
                jobs::ALL_STATUSES.join(", ")
            )));
        }
    }
    let sort_by = match get("sort_by").unwrap_or_default().to_lowercase().as_str() {
        "" | "created_at" => SortBy::CreatedAt,
        "execution_duration" => SortBy::ExecutionDuration,
        _ => {
            return Err(bad(
                "sort_by must be 'created_at' or 'execution_duration'".into()
            ))
        }
    };
    let descending = match get("sort_order")
        .unwrap_or_default()
        .to_lowercase()
        .as_str()
    {
        "" | "desc" => true,
        "asc" => false,
        _ => return Err(bad("sort_order must be 'asc' or 'desc'".into())),
    };
    let limit = match get("limit") {
        None => None,
        Some(v) => match v.trim().parse::<i64>() {
            Ok(n) if n > 0 => Some(n as usize),
            Ok(_) => return Err(bad("limit must be a positive integer".into())),
            Err(_) => return Err(bad("limit must be an integer".into())),
        },
    };
    let offset = match get("offset") {
        None => 0,
        Some(v) => match v.trim().parse::<i64>() {
            Ok(n) => n.max(0) as usize,
            Err(_) => return Err(bad("offset must be an integer".into())),
        },
    };
    Ok(ListQuery {
        statuses,
        workflow_id: get("workflow_id").filter(|w| !w.is_empty()),
        sort_by,
        descending,
        limit,
        offset,
    })
}

pub async fn list(state: State, req: HttpRequest) -> HttpResponse {
    let q = match parse_list_query(&req) {
        Ok(q) => q,
        Err(resp) => return resp,
    };
    let wants = |s: &str| q.statuses.iter().any(|w| w == s);
    let mut all: Vec<Json> = state
        .queue
        .map_queue(|item, running| {
            let status = queue_status(running);
            wants(status).then(|| jobs::queue_job(item, status))
        })
        .into_iter()
        .flatten()
        .collect();
    if wants(jobs::COMPLETED) || wants(jobs::FAILED) || wants(jobs::CANCELLED) {
        let finished = state
            .queue
            .map_history(|id, entry| jobs::history_job(id, entry, false));
        all.extend(
            finished
                .into_iter()
                .filter(|j| j["status"].as_str().is_some_and(wants)),
        );
    }
    if let Some(w) = &q.workflow_id {
        all.retain(|j| j["workflow_id"].as_str() == Some(w));
    }
    jobs::sort(&mut all, q.sort_by, q.descending);
    let total = all.len();
    let page: Vec<Json> = all
        .into_iter()
        .skip(q.offset)
        .take(q.limit.unwrap_or(usize::MAX))
        .collect();
    let has_more = q.offset + page.len() < total;
    ok_json(&json!({
        "jobs": page,
        "pagination": {"offset": q.offset, "limit": q.limit, "total": total, "has_more": has_more},
    }))
}

pub async fn one(state: State, req: HttpRequest) -> HttpResponse {
    let id = param(&req, "job_id");
    if let Some(entry) = state.queue.history_entry(&id) {
        return ok_json(&jobs::history_job(&id, &entry, true));
    }
    let found = state.queue.map_queue(|item, running| {
        (item.prompt_id == id).then(|| jobs::queue_job(item, queue_status(running)))
    });
    match found.into_iter().flatten().next() {
        Some(job) => ok_json(&job),
        None => json_response(StatusCode::NOT_FOUND, &json!({"error": "Job not found"})),
    }
}

fn queue_status(running: bool) -> &'static str {
    if running {
        jobs::IN_PROGRESS
    } else {
        jobs::PENDING
    }
}

/// Interrupts the job if it is the one running, else takes it out of the queue; a finished
/// or unknown id is a no-op. Returns whether anything was cancelled.
fn cancel(state: &AppState, id: &str) -> bool {
    let interrupt = || {
        let running = state.queue.running_id().as_deref() == Some(id);
        if running {
            log::info!("Cancelling running prompt {id}");
            state.interrupt.set();
        }
        running
    };
    if interrupt() {
        return true;
    }
    match state.queue.delete_pending(&[id.to_string()]) {
        Ok(n) if n > 0 => {
            log::info!("Cancelling pending prompt {id}");
            state.broadcast_status();
            true
        }
        Ok(_) => interrupt(),
        Err(e) => {
            log::error!("cancelling {id}: {e:#}");
            false
        }
    }
}

pub async fn cancel_one(state: State, req: HttpRequest) -> HttpResponse {
    let id = param(&req, "job_id");
    ok_json(&json!({"cancelled": cancel(&state, &id)}))
}

pub async fn cancel_many(state: State, payload: web::Payload) -> HttpResponse {
    let body = match read_json(payload, state.max_body).await {
        Ok(b) => b,
        Err(_) => return bad("Request body must be valid JSON".into()),
    };
    let Some(ids) = body.get("job_ids").and_then(Json::as_array) else {
        return bad("job_ids must be a list".into());
    };
    let invalid: Vec<Json> = ids
        .iter()
        .filter(|id| !id.as_str().is_some_and(super::routes_queue::canonical_uuid))
        .map(|id| match id {
            Json::String(_) => id.clone(),
            other => json!(crate::pyjson::value_repr(other)),
        })
        .collect();
    if !invalid.is_empty() {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "job_ids contains invalid id(s)", "invalid_ids": invalid}),
        );
    }
    let mut cancelled = false;
    for id in ids.iter().filter_map(Json::as_str) {
        cancelled |= cancel(&state, id);
    }
    ok_json(&json!({"cancelled": cancelled}))
}
