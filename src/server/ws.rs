//! `/ws`: the session id handshake, feature flags and reconnect handling.

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::{json, Value as Json};

use super::http::query;
use super::hub::{Client, Target};
use super::state::AppState;

/// The server's feature flags (`/features` and the WS reply).
pub fn feature_flags(state: &AppState) -> Json {
    let size = match state.args.max_upload_size {
        None => json!(state.max_body),
        Some(_) => crate::pyjson::float_number(state.max_body as f64),
    };
    json!({"supports_preview_metadata": true, "max_upload_size": size,
           "node_replacements": true, "assets": false})
}

pub async fn websocket(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Payload,
) -> actix_web::Result<HttpResponse> {
    let sid = query(&req, "clientId").unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let (response, session, mut stream) = actix_ws::handle(&req, body)?;
    let conn_id = state.hub.next_conn_id();
    let client = Client {
        conn_id,
        session,
        preview_metadata: false,
    };
    if let Some(old) = state.hub.clients.insert(sid.clone(), client) {
        // A reconnect with the same id replaces the old socket; close it so it stops listening.
        actix_web::rt::spawn(async move {
            let _ = old.session.close(None).await;
        });
    }
    let mut status = state.status_data();
    status["sid"] = json!(sid);
    state.hub.send("status", status, Target::Sid(sid.clone()));

    let state = state.clone();
    actix_web::rt::spawn(async move {
        let mut first_text = true;
        while let Some(Ok(msg)) = stream.next().await {
            match msg {
                actix_ws::Message::Text(text) if first_text => {
                    first_text = false;
                    handle_first_message(&state, &sid, &text);
                }
                actix_ws::Message::Ping(bytes) => {
                    if let Some(mut c) = state.hub.clients.get(&sid).map(|c| c.session.clone()) {
                        let _ = c.pong(&bytes).await;
                    }
                }
                actix_ws::Message::Close(_) => break,
                _ => {}
            }
        }
        // Only forget the socket if a reconnect has not replaced it meanwhile.
        state
            .hub
            .clients
            .remove_if(&sid, |_, c| c.conn_id == conn_id);
    });
    Ok(response)
}

fn handle_first_message(state: &AppState, sid: &str, text: &str) {
    let Ok(msg) = serde_json::from_str::<Json>(text) else {
        log::warn!("invalid JSON from websocket client {sid}");
        return;
    };
    if msg.get("type").and_then(Json::as_str) != Some("feature_flags") {
        return;
    }
    let wants_metadata = msg["data"]
        .get("supports_preview_metadata")
        .and_then(Json::as_bool)
        .unwrap_or(false);
    if let Some(mut c) = state.hub.clients.get_mut(sid) {
        c.preview_metadata = wants_metadata;
    }
    state.hub.send(
        "feature_flags",
        feature_flags(state),
        Target::Sid(sid.to_string()),
    );
}
