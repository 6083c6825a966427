//! The HTTP + WebSocket server: every API route twice (bare and under `/api`), ComfyUI's
//! middlewares (cache headers, CORS or the loopback origin check), and the prompt worker.

mod access;
pub mod frontend;
pub mod http;
pub mod hub;
mod routes_files;
mod routes_info;
mod routes_jobs;
mod routes_queue;
mod routes_user;
pub mod state;
mod ws;

use std::sync::Arc;

use actix_web::body::EitherBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::{guard, web, App, HttpResponse, HttpServer, Route};
use anyhow::{Context, Result};

use state::AppState;

/// GET routes also answer HEAD, as aiohttp's do.
pub(crate) fn get() -> Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// The API routes; registered under `/api` and bare.
fn api_routes(cfg: &mut web::ServiceConfig) {
    use routes_files as f;
    use routes_info as i;
    use routes_queue as q;
    use routes_user as u;
    cfg.service(web::resource("/ws").route(get().to(ws::websocket)))
        .service(
            web::resource("/prompt")
                .route(get().to(q::get_prompt))
                .route(web::post().to(q::post_prompt)),
        )
        .service(
            web::resource("/queue")
                .route(get().to(q::get_queue))
                .route(web::post().to(q::post_queue)),
        )
        .service(
            web::resource("/history")
                .route(get().to(q::get_history))
                .route(web::post().to(q::post_history)),
        )
        .service(web::resource("/history/{prompt_id}").route(get().to(q::get_history_item)))
        .service(web::resource("/interrupt").route(web::post().to(q::post_interrupt)))
        .service(web::resource("/free").route(web::post().to(q::post_free)))
        .service(web::resource("/object_info").route(get().to(i::object_info)))
        .service(web::resource("/object_info/{node_class}").route(get().to(i::object_info_one)))
        .service(web::resource("/system_stats").route(get().to(i::system_stats)))
        .service(web::resource("/features").route(get().to(i::features)))
        .service(web::resource("/embeddings").route(get().to(i::embeddings)))
        .service(web::resource("/models").route(get().to(i::models)))
        .service(web::resource("/models/{folder}").route(get().to(i::models_in)))
        .service(web::resource("/extensions").route(get().to(i::extensions)))
        .service(web::resource("/experiment/models").route(get().to(i::experiment_models)))
        .service(
            web::resource("/experiment/models/{folder}").route(get().to(i::experiment_models_in)),
        )
        .service(web::resource("/workflow_templates").route(get().to(i::empty_object)))
        .service(web::resource("/global_subgraphs").route(get().to(i::empty_object)))
        .service(web::resource("/global_subgraphs/{id}").route(get().to(i::null)))
        .service(web::resource("/node_replacements").route(get().to(i::node_replacements)))
        .service(web::resource("/i18n").route(get().to(i::empty_object)))
        .service(web::resource("/view").route(get().to(f::view)))
        .service(web::resource("/view_metadata/{folder_name}").route(get().to(f::view_metadata)))
        .service(web::resource("/upload/image").route(web::post().to(f::upload_image)))
        .service(web::resource("/upload/mask").route(web::post().to(f::upload_mask)))
        .service(
            web::resource("/users")
                .route(get().to(u::get_users))
                .route(web::post().to(u::post_users)),
        )
        .service(
            web::resource("/settings")
                .route(get().to(u::get_settings))
                .route(web::post().to(u::post_settings)),
        )
        .service(
            web::resource("/settings/{id}")
                .route(get().to(u::get_setting))
                .route(web::post().to(u::post_setting)),
        )
        .service(web::resource("/userdata").route(get().to(u::list_userdata)))
        .service(web::resource("/v2/userdata").route(get().to(u::list_userdata_v2)))
        .service(
            web::resource("/userdata/{file}")
                .route(get().to(u::get_userdata))
                .route(web::post().to(u::post_userdata))
                .route(web::delete().to(u::delete_userdata)),
        )
        .service(
            web::resource("/userdata/{file}/move/{dest}").route(web::post().to(u::move_userdata)),
        );
}

fn internal_routes(cfg: &mut web::ServiceConfig) {
    use routes_info as i;
    cfg.service(web::resource("/internal/logs").route(get().to(i::internal_logs)))
        .service(web::resource("/internal/logs/raw").route(get().to(i::internal_logs_raw)))
        .service(
            web::resource("/internal/logs/subscribe").route(web::patch().to(i::internal_subscribe)),
        )
        .service(web::resource("/internal/folder_paths").route(get().to(i::internal_folder_paths)))
        .service(
            web::resource("/internal/files/{directory_type}").route(get().to(i::internal_files)),
        );
}

const IMAGE_EXTENSIONS: &[&str] = &[
    ".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp",
];

/// ComfyUI's `cache_control` middleware, applied after the handler.
fn cache_header(path: &str, status: u16) -> Option<&'static str> {
    let lower = path.to_lowercase();
    let last = lower.rsplit('/').next().unwrap_or("");
    if lower.ends_with(".js")
        || lower.ends_with(".css")
        || (last.starts_with("index") && last.ends_with(".json"))
    {
        return Some("no-cache");
    }
    if IMAGE_EXTENSIONS.iter().any(|e| lower.ends_with(e)) {
        return match status {
            404 => Some("public, max-age=3600"),
            200..=206 | 301 | 308 => Some("public, max-age=86400"),
            302 | 303 | 307 => Some("no-cache"),
            _ => None,
        };
    }
    None
}

/// Builds the application, shared by the real server and the tests.
pub fn build_state(args: crate::cli::Args) -> Result<Arc<AppState>> {
    let paths = Arc::new(crate::setup::paths_from_args(&args)?);
    let env = Arc::new(crate::engine::context::NodeEnv {
        paths: paths.clone(),
        disable_metadata: args.disable_metadata,
        previews: args.preview_method != crate::cli::PreviewMethod::None,
        models: Arc::new(crate::setup::model_manager(&args)),
    });
    let registry = Arc::new(crate::setup::registry(&args));
    let store = crate::queue::store::Store::open(&paths.user.join("videosdgx-queue.redb"))?;
    let queue = Arc::new(crate::queue::PromptQueue::open(store)?);
    let max_body = args.max_upload_bytes();
    let frontend = frontend::Frontend::locate(args.front_end_root.as_deref())?;
    routes_user::seed_user_folder(&paths.user)
        .with_context(|| format!("preparing {}", paths.user.display()))?;
    match &frontend.web_root {
        Some(root) => log::info!("Serving the web frontend from {}", root.display()),
        None => log::warn!(
            "The web frontend is not installed (PyPI comfyui-frontend-package, or --front-end-root)"
        ),
    }
    Ok(Arc::new(AppState {
        args,
        paths,
        env,
        registry,
        queue,
        hub: Arc::new(hub::Hub::default()),
        interrupt: Default::default(),
        max_body,
        frontend,
    }))
}

/// What the middleware answers before any handler (`Err`): CORS preflights, cross-site
/// browser requests (origin check) and, with `--auth-token`, requests without the token.
/// `Ok(true)` when the token came as `?token=`, so the response sets the cookie.
fn early_answer(
    req: &ServiceRequest,
    cors: bool,
    token: Option<&str>,
) -> Result<bool, HttpResponse> {
    if req.method() == Method::OPTIONS {
        return Err(HttpResponse::Ok().finish());
    }
    if !cors && access::origin_rejected(req) {
        return Err(HttpResponse::Forbidden().finish());
    }
    match token.map(|t| access::credential(req, t)) {
        None | Some(access::Credential::Carried) => Ok(false),
        Some(access::Credential::Query) => Ok(true),
        Some(access::Credential::Missing) => {
            let body =
                serde_json::json!({"error": "Unauthorized: this server needs its --auth-token"});
            Err(HttpResponse::Unauthorized()
                .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
                .content_type(http::JSON_TYPE)
                .body(crate::pyjson::dumps(&body)))
        }
    }
}

fn add_cors_headers(headers: &mut header::HeaderMap, origin: &str) {
    if let Ok(v) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, GET, DELETE, PUT, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type, Authorization"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
}

/// The static mounts, after every route so API paths win over files.
fn static_mounts(cfg: &mut web::ServiceConfig, frontend: &frontend::Frontend) {
    cfg.service(web::resource("/templates/{path:.*}").route(get().to(frontend::template)));
    if let Some(docs) = &frontend.docs_root {
        cfg.service(actix_files::Files::new("/docs", docs));
    }
    cfg.service(web::resource("/").route(get().to(frontend::index)))
        .service(web::resource("/user.css").route(get().to(frontend::user_css)));
    if let Some(root) = &frontend.web_root {
        cfg.service(actix_files::Files::new("/", root));
    }
}

pub async fn serve(state: Arc<AppState>) -> Result<()> {
    let data = web::Data::from(state.clone());
    let cors = state.args.enable_cors_header.clone();
    let token = state.args.auth_token.clone().filter(|t| !t.is_empty());
    if token.is_none() && access::listens_beyond_loopback(&state.args.listen) {
        log::warn!(
            "Listening on {} without --auth-token: anyone who can reach this port can queue \
             workflows and read every input and output file.",
            state.args.listen
        );
    }
    let hub = state.hub.clone();
    actix_web::rt::spawn(async move { hub.deliver().await });
    crate::worker::spawn(state.clone(), crate::setup::cache_mode(&state.args));

    let server = HttpServer::new(move || {
        let cors = cors.clone();
        let token = token.clone();
        let frontend_state = data.clone();
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(usize::MAX))
            .wrap_fn(move |req, srv| {
                let path = req.path().to_string();
                let answer = early_answer(&req, cors.is_some(), token.as_deref());
                let cors = cors.clone();
                let set_cookie = matches!(answer, Ok(true)).then(|| token.clone()).flatten();
                let (early, fut) = match answer {
                    Err(resp) => (Some(req.into_response(resp).map_into_right_body()), None),
                    Ok(_) => (None, Some(srv.call(req))),
                };
                async move {
                    let mut res: ServiceResponse<EitherBody<_>> = match (early, fut) {
                        (Some(res), _) => res,
                        (None, Some(fut)) => fut.await?.map_into_left_body(),
                        (None, None) => unreachable!("one of the two is always set"),
                    };
                    if let Some(token) = set_cookie {
                        let cookie = access::token_cookie(&token);
                        if let Ok(v) = HeaderValue::from_str(&cookie.to_string()) {
                            res.headers_mut().append(header::SET_COOKIE, v);
                        }
                    }
                    let status = res.status().as_u16();
                    let headers = res.headers_mut();
                    if !headers.contains_key(header::CACHE_CONTROL) {
                        if let Some(v) = cache_header(&path, status) {
                            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(v));
                        }
                    }
                    if let Some(origin) = cors {
                        add_cors_headers(headers, &origin);
                    }
                    Ok(res)
                }
            })
            .service(
                web::scope("/api")
                    .configure(api_routes)
                    .configure(routes_jobs::routes)
                    .service(web::scope("/api").configure(routes_jobs::routes))
                    .service(web::resource("/").route(get().to(frontend::index))),
            )
            .configure(api_routes)
            .configure(internal_routes)
            .configure(|cfg| static_mounts(cfg, &frontend_state.frontend))
    })
    .disable_signals();
    let mut server = server;
    for addr in state
        .args
        .listen
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        server = server
            .bind((addr, state.args.port))
            .with_context(|| format!("cannot listen on {addr}:{}", state.args.port))?;
    }
    log::info!(
        "To see the GUI go to: http://{}:{}",
        state.args.listen.split(',').next().unwrap_or("127.0.0.1"),
        state.args.port
    );
    server.run().await?;
    Ok(())
}
