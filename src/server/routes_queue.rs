//! `/prompt`, `/queue`, `/history`, `/interrupt`, `/free`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value as Json};

use super::http::{bad_json, empty_ok, json_response, ok_json, param, query, read_json};
use super::state::AppState;
use crate::engine::validate::{validate_prompt, PromptError};
use crate::pyjson;
use crate::queue::{FreeFlags, QueueItem};

type State = web::Data<AppState>;

async fn body_object(
    payload: web::Payload,
    state: &AppState,
) -> Result<Map<String, Json>, HttpResponse> {
    match read_json(payload, state.max_body).await? {
        Json::Object(o) => Ok(o),
        _ => Err(bad_json("The body must be a JSON object")),
    }
}

pub async fn get_prompt(state: State) -> HttpResponse {
    ok_json(&json!({"exec_info": {"queue_remaining": state.queue.remaining()}}))
}

/// Upstream's rule for client-chosen ids: a UUID spelled exactly as `str(uuid.UUID(v))`.
pub fn canonical_uuid(v: &str) -> bool {
    uuid::Uuid::parse_str(v).is_ok_and(|u| u.hyphenated().to_string() == v)
}

pub async fn post_prompt(state: State, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    let body = match body_object(payload, &state).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let number = match body.get("number") {
        None => json!(state.queue.next_number(
            body.get("front")
                .is_some_and(|f| crate::engine::value::Value::from_json(f).truthy())
        )),
        Some(n) => match n
            .as_f64()
            .or_else(|| n.as_str().and_then(|s| s.trim().parse().ok()))
        {
            Some(f) => pyjson::float_number(f),
            None => return bad_json("number must be a number"),
        },
    };
    let reject = |e: PromptError| json_response(StatusCode::BAD_REQUEST, &e.body());
    let Some(prompt) = body.get("prompt") else {
        return reject(PromptError::new(
            "no_prompt",
            "No prompt provided",
            "No prompt provided",
        ));
    };
    let Json::Object(mut prompt) = prompt.clone() else {
        return reject(PromptError::new(
            "invalid_prompt",
            "The prompt must be an object keyed by node id",
            "",
        ));
    };
    let prompt_id = match body.get("prompt_id") {
        None | Some(Json::Null) => uuid::Uuid::new_v4().to_string(),
        Some(Json::String(v)) if canonical_uuid(v) => v.clone(),
        Some(_) => {
            return reject(PromptError::new(
                "invalid_prompt_id",
                "prompt_id must be a valid UUID",
                "prompt_id must be a UUID string in canonical lowercase hyphenated form; omit it to let the server generate one",
            ))
        }
    };
    if state.queue.contains(&prompt_id) {
        return json_response(
            StatusCode::CONFLICT,
            &json!({"error": "prompt_id already exists"}),
        );
    }
    let targets = match body.get("partial_execution_targets") {
        None | Some(Json::Null) => None,
        Some(Json::Array(a)) => Some(a.iter().map(pyjson::value_str).collect::<Vec<_>>()),
        Some(_) => return bad_json("partial_execution_targets must be a list of node ids"),
    };
    crate::engine::replacements::apply(&mut prompt, &state.registry);
    let accepted =
        match validate_prompt(&state.registry, &state.env, &mut prompt, targets.as_deref()) {
            Ok(a) => a,
            Err(e) => return reject(e),
        };
    let mut extra_data = match body.get("extra_data") {
        Some(Json::Object(o)) => o.clone(),
        _ => Map::new(),
    };
    if let Some(client_id) = body.get("client_id") {
        extra_data.insert("client_id".into(), client_id.clone());
    }
    if !extra_data.contains_key("comfy_usage_source") {
        let source = req.headers().get("Comfy-Usage-Source");
        if let Some(source) = source.and_then(|s| s.to_str().ok()) {
            extra_data.insert("comfy_usage_source".into(), json!(source));
        }
    }
    for key in crate::queue::SENSITIVE_EXTRA_DATA_KEYS {
        extra_data.remove(*key);
    }
    extra_data.insert(
        "create_time".into(),
        json!(crate::engine::executor::now_ms()),
    );
    let item = QueueItem {
        number: number.clone(),
        prompt_id: prompt_id.clone(),
        prompt: Json::Object(prompt),
        extra_data: Json::Object(extra_data),
        outputs: accepted.outputs,
    };
    if let Err(e) = state.queue.put(item) {
        return json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": format!("could not queue: {e:#}")}),
        );
    }
    state.broadcast_status();
    ok_json(&json!({"prompt_id": prompt_id, "number": number, "node_errors": accepted.node_errors}))
}

pub async fn get_queue(state: State) -> HttpResponse {
    let (running, pending) = state.queue.snapshot();
    ok_json(&json!({"queue_running": running, "queue_pending": pending}))
}

fn id_list(v: Option<&Json>) -> Option<Vec<String>> {
    v?.as_array()
        .map(|a| a.iter().map(pyjson::value_str).collect())
}

pub async fn post_queue(state: State, payload: web::Payload) -> HttpResponse {
    let body = match body_object(payload, &state).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if body
        .get("clear")
        .is_some_and(|c| crate::engine::value::Value::from_json(c).truthy())
    {
        if let Err(e) = state.queue.clear_pending() {
            log::error!("clearing the queue: {e:#}");
        }
    }
    if let Some(ids) = id_list(body.get("delete")) {
        if let Err(e) = state.queue.delete_pending(&ids) {
            log::error!("deleting queue items: {e:#}");
        }
    }
    state.broadcast_status();
    empty_ok()
}

fn int_query(req: &HttpRequest, name: &str) -> Result<Option<i64>, HttpResponse> {
    match query(req, name) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| bad_json(&format!("{name} must be an integer"))),
    }
}

pub async fn get_history(state: State, req: HttpRequest) -> HttpResponse {
    let (max_items, offset) = match (int_query(&req, "max_items"), int_query(&req, "offset")) {
        (Ok(m), Ok(o)) => (m, o),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    ok_json(&Json::Object(state.queue.history(max_items, offset)))
}

pub async fn get_history_item(state: State, req: HttpRequest) -> HttpResponse {
    let id = param(&req, "prompt_id");
    let mut out = Map::new();
    if let Some(entry) = state.queue.history_entry(&id) {
        out.insert(id, entry);
    }
    ok_json(&Json::Object(out))
}

pub async fn post_history(state: State, payload: web::Payload) -> HttpResponse {
    let body = match body_object(payload, &state).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let result = if body
        .get("clear")
        .is_some_and(|c| crate::engine::value::Value::from_json(c).truthy())
    {
        state.queue.delete_history(None)
    } else if let Some(ids) = id_list(body.get("delete")) {
        state.queue.delete_history(Some(&ids))
    } else {
        Ok(())
    };
    if let Err(e) = result {
        log::error!("changing history: {e:#}");
    }
    empty_ok()
}

pub async fn post_interrupt(state: State, payload: web::Payload) -> HttpResponse {
    let body = super::http::read_body(payload, state.max_body)
        .await
        .unwrap_or_default();
    let parsed: Json = serde_json::from_slice(&body).unwrap_or(json!({}));
    match parsed.get("prompt_id").and_then(Json::as_str) {
        Some(id) if state.queue.running_id().as_deref() == Some(id) => state.interrupt.set(),
        Some(id) => log::info!("Prompt {id} is not running; interrupt ignored"),
        None => state.interrupt.set(),
    }
    empty_ok()
}

pub async fn post_free(state: State, payload: web::Payload) -> HttpResponse {
    let body = match body_object(payload, &state).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let flag = |k: &str| body.get(k).and_then(Json::as_bool).unwrap_or(false);
    state.queue.request_free(FreeFlags {
        unload_models: flag("unload_models"),
        free_memory: flag("free_memory"),
    });
    empty_ok()
}
