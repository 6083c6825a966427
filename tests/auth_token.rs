//! `--auth-token`: every route answers 401 without the token and normally with it (Bearer
//! header, `?token=`, or the cookie a `?token=` visit sets); the WebSocket is refused without
//! it; browsers' cross-site requests are refused whatever the token.

mod common;

use std::time::Duration;

use common::{stub_save, Server};
use serde_json::json;
use tokio_tungstenite::tungstenite;

const TOKEN: &str = "s3cret-token";

/// `(method, path, body, status with the token)` over every kind of route: API (bare and
/// `/api`), jobs, internal, static frontend, templates and files.
fn routes() -> Vec<(&'static str, &'static str, Option<String>, u16)> {
    let prompt = json!({"prompt": stub_save("WHITE", "auth")}).to_string();
    let mut out = vec![
        ("POST", "/prompt", Some(prompt.clone()), 200),
        ("POST", "/api/prompt", Some(prompt), 200),
        ("POST", "/interrupt", Some("{}".into()), 200),
        ("POST", "/queue", Some("{}".into()), 200),
        ("POST", "/history", Some("{}".into()), 200),
        ("POST", "/free", Some("{}".into()), 200),
        ("POST", "/api/settings/Comfy.Foo", Some("1".into()), 200),
        (
            "POST",
            "/api/jobs/cancel",
            Some(r#"{"job_ids": []}"#.into()),
            200,
        ),
        ("GET", "/view?filename=auth_00001_.png", None, 200),
        ("GET", "/user.css", None, 200),
        ("GET", "/", None, 200),
        ("GET", "/api/", None, 200),
        ("GET", "/templates/nothing.json", None, 404),
    ];
    for path in [
        "/system_stats",
        "/api/system_stats",
        "/object_info",
        "/api/queue",
        "/history",
        "/prompt",
        "/features",
        "/embeddings",
        "/models",
        "/extensions",
        "/users",
        "/api/settings",
        "/api/userdata?dir=workflows",
        "/api/jobs",
        "/internal/logs",
        "/internal/folder_paths",
        "/internal/files/output",
    ] {
        out.push(("GET", path, None, 200));
    }
    out
}

/// Opens the WebSocket; 101 once its first `status` message came, else the refusal's status.
fn ws_connect(s: &Server, query: &str, bearer: bool) -> u16 {
    let url = format!("ws://127.0.0.1:{}/ws?clientId=c{query}", s.port);
    let mut req = tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    if bearer {
        req.headers_mut()
            .insert("Authorization", format!("Bearer {TOKEN}").parse().unwrap());
    }
    let mut socket = match tungstenite::connect(req) {
        Ok((socket, _)) => socket,
        Err(tungstenite::Error::Http(resp)) => return resp.status().as_u16(),
        Err(e) => panic!("WS connect: {e}"),
    };
    let first = socket.read().expect("a first message");
    let status: serde_json::Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
    assert_eq!(status["type"], "status");
    101
}

#[test]
fn every_route_needs_the_token_when_one_is_set() {
    let s = Server::start(&["--auth-token", TOKEN]);
    let bearer = format!("Bearer {TOKEN}");
    // A first prompt so /view has a file to serve.
    let r = s.request(
        "POST",
        "/prompt",
        &[("Authorization", &bearer)],
        Some(
            json!({"prompt": stub_save("WHITE", "auth")})
                .to_string()
                .into_bytes(),
        ),
    );
    let id = r.json()["prompt_id"].as_str().unwrap().to_string();
    let start = std::time::Instant::now();
    loop {
        let h = s.request(
            "GET",
            &format!("/history/{id}"),
            &[("Authorization", &bearer)],
            None,
        );
        if h.json().get(&id).is_some() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "prompt did not finish"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    for (method, path, body, status) in routes() {
        let body = || body.clone().map(String::into_bytes);
        let denied = s.request(method, path, &[], body());
        assert_eq!(denied.status, 401, "{method} {path} without the token");
        assert_eq!(denied.header("www-authenticate"), Some("Bearer"));
        let wrong = s.request(method, path, &[("Authorization", "Bearer nope")], body());
        assert_eq!(wrong.status, 401, "{method} {path} with a wrong token");
        let allowed = s.request(method, path, &[("Authorization", &bearer)], body());
        assert_eq!(
            allowed.status,
            status,
            "{method} {path} with the token: {}",
            allowed.text()
        );
    }

    // ?token= works too, and leaves a cookie that is enough afterwards (the browser case).
    let page = s.get(&format!("/?token={TOKEN}"));
    assert_eq!(page.status, 200);
    let cookie = page
        .header("set-cookie")
        .expect("a cookie for the browser")
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    assert_eq!(
        s.request("GET", "/api/object_info", &[("Cookie", pair)], None)
            .status,
        200
    );
    assert_eq!(
        s.request(
            "GET",
            "/api/object_info",
            &[("Cookie", "videosdgx_token=nope")],
            None
        )
        .status,
        401
    );
    assert_eq!(
        s.get("/view?filename=auth_00001_.png&token=nope").status,
        401
    );
    assert_eq!(
        s.get(&format!("/view?filename=auth_00001_.png&token={TOKEN}"))
            .status,
        200
    );

    // The WebSocket: refused without the token, open with it in the query or a header.
    assert_eq!(ws_connect(&s, "", false), 401, "WS without the token");
    assert_eq!(ws_connect(&s, &format!("&token={TOKEN}"), false), 101);
    assert_eq!(ws_connect(&s, "", true), 101, "WS with a Bearer header");
}

#[test]
fn no_token_means_open_routes_and_cross_site_browsers_are_refused() {
    let s = Server::start(&[]);
    assert_eq!(s.get("/api/object_info").status, 200);
    assert_eq!(ws_connect(&s, "", false), 101, "no token set, none needed");
    let cross = s.request(
        "POST",
        "/prompt",
        &[("Sec-Fetch-Site", "cross-site")],
        Some(b"{}".to_vec()),
    );
    assert_eq!(cross.status, 403);
    let same = s.request("GET", "/queue", &[("Sec-Fetch-Site", "same-origin")], None);
    assert_eq!(same.status, 200);
}

#[test]
fn listening_beyond_loopback_without_a_token_warns() {
    let open = Server::start(&["--listen", "0.0.0.0"]);
    assert_eq!(open.get("/system_stats").status, 200);
    assert!(
        open.log().contains("without --auth-token"),
        "{}",
        open.log()
    );
    let guarded = Server::start(&["--listen", "0.0.0.0", "--auth-token", TOKEN]);
    assert_eq!(guarded.get("/system_stats").status, 401);
    assert!(!guarded.log().contains("without --auth-token"));
}
