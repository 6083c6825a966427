//! The HTTP + WebSocket server: every API route twice (bare and under `/api`), ComfyUI's
//! middlewares (cache headers, CORS or the loopback origin check), and the prompt worker.

pub mod http;
pub mod hub;
mod routes_files;
mod routes_info;
mod routes_queue;
mod routes_user;
pub mod state;
mod ws;

use std::net::ToSocketAddrs;
use std::sync::Arc;

use actix_web::body::EitherBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::{guard, web, App, HttpResponse, HttpServer, Route};
use anyhow::{Context, Result};

use state::AppState;

/// GET routes also answer HEAD, as aiohttp's do.
fn get() -> Route {
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

fn host_is_loopback(host: &str) -> bool {
    let name = host
        .trim_start_matches('[')
        .split(']')
        .next()
        .unwrap_or(host);
    if let Ok(ip) = name.parse::<std::net::IpAddr>() {
        return ip.is_loopback();
    }
    match (name, 0).to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
        }
        Err(_) => false,
    }
}

fn split_host_port(s: &str) -> (String, Option<String>) {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, tail) = rest.split_once(']').unwrap_or((rest, ""));
        return (h.to_string(), tail.strip_prefix(':').map(String::from));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_string(), Some(p.to_string())),
        _ => (s.to_string(), None),
    }
}

/// ComfyUI's anti-CSRF rule: for a loopback Host, a browser Origin must name the same host.
fn origin_rejected(req: &ServiceRequest) -> bool {
    let headers = req.headers();
    let (Some(host), Some(origin)) = (headers.get(header::HOST), headers.get(header::ORIGIN))
    else {
        return false;
    };
    let (Ok(host), Ok(origin)) = (host.to_str(), origin.to_str()) else {
        return true;
    };
    let origin_host = origin.split_once("://").map(|(_, rest)| rest).unwrap_or("");
    let (o_name, o_port) = split_host_port(origin_host.trim_end_matches('/'));
    if o_name.is_empty() {
        return false;
    }
    let (h_name, h_port) = split_host_port(host);
    if !host_is_loopback(&h_name) {
        return false;
    }
    let ports_differ = match (o_port, h_port) {
        (Some(o), Some(h)) => o != h,
        _ => false,
    };
    o_name != h_name || ports_differ
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
    Ok(Arc::new(AppState {
        args,
        paths,
        env,
        registry,
        queue,
        hub: Arc::new(hub::Hub::default()),
        interrupt: Default::default(),
        max_body,
    }))
}

pub async fn serve(state: Arc<AppState>) -> Result<()> {
    let data = web::Data::from(state.clone());
    let cors = state.args.enable_cors_header.clone();
    let hub = state.hub.clone();
    actix_web::rt::spawn(async move { hub.deliver().await });
    crate::worker::spawn(state.clone(), crate::setup::cache_mode(&state.args));

    let server = HttpServer::new(move || {
        let cors = cors.clone();
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(usize::MAX))
            .wrap_fn(move |req, srv| {
                let path = req.path().to_string();
                let options = req.method() == Method::OPTIONS;
                let rejected = cors.is_none() && origin_rejected(&req);
                let cors = cors.clone();
                let early = if options {
                    Some(HttpResponse::Ok().finish())
                } else if rejected {
                    Some(HttpResponse::Forbidden().finish())
                } else {
                    None
                };
                let (early, fut) = match early {
                    Some(resp) => (Some(req.into_response(resp).map_into_right_body()), None),
                    None => (None, Some(srv.call(req))),
                };
                async move {
                    let mut res: ServiceResponse<EitherBody<_>> = match (early, fut) {
                        (Some(res), _) => res,
                        (None, Some(fut)) => fut.await?.map_into_left_body(),
                        (None, None) => unreachable!("one of the two is always set"),
                    };
                    let status = res.status().as_u16();
                    let headers = res.headers_mut();
                    if !headers.contains_key(header::CACHE_CONTROL) {
                        if let Some(v) = cache_header(&path, status) {
                            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(v));
                        }
                    }
                    if let Some(origin) = cors {
                        if let Ok(v) = HeaderValue::from_str(&origin) {
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
                    Ok(res)
                }
            })
            .service(
                web::scope("/api")
                    .configure(api_routes)
                    .service(web::resource("/").route(get().to(routes_info::index))),
            )
            .configure(api_routes)
            .configure(internal_routes)
            .service(web::resource("/").route(get().to(routes_info::index)))
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
