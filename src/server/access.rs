//! Who may call: ComfyUI's anti-CSRF origin check, and the optional `--auth-token` that
//! ComfyUI lacks (Bearer header, `?token=`, or the cookie a `?token=` visit leaves behind so
//! the browser frontend, its assets and its WebSocket work unchanged).

use std::net::ToSocketAddrs;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::ServiceRequest;
use actix_web::http::header;

use super::http::url_query;

pub const TOKEN_COOKIE: &str = "videosdgx_token";

pub fn host_is_loopback(host: &str) -> bool {
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

/// ComfyUI's anti-CSRF rules: a browser's cross-site request is refused, and for a loopback
/// Host a browser Origin must name the same host.
pub fn origin_rejected(req: &ServiceRequest) -> bool {
    let headers = req.headers();
    if headers
        .get("Sec-Fetch-Site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
    {
        return true;
    }
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

/// How a request proved it knows the token.
#[derive(Debug, PartialEq, Eq)]
pub enum Credential {
    Missing,
    /// The Bearer header or the cookie.
    Carried,
    /// `?token=`: answered with the cookie so the page's later requests carry it.
    Query,
}

/// Which credential carries `token`, if any does.
pub fn credential(req: &ServiceRequest, token: &str) -> Credential {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = req.cookie(TOKEN_COOKIE);
    if bearer.is_some_and(|b| same_secret(b.trim(), token))
        || cookie.is_some_and(|c| same_secret(c.value(), token))
    {
        return Credential::Carried;
    }
    let in_query = url_query(req.query_string())
        .into_iter()
        .any(|(k, v)| k == "token" && same_secret(&v, token));
    if in_query {
        return Credential::Query;
    }
    Credential::Missing
}

/// The cookie set after a `?token=` request: never sent cross-site, unreadable to scripts.
pub fn token_cookie(token: &str) -> Cookie<'static> {
    Cookie::build(TOKEN_COOKIE, token.to_string())
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .finish()
}

/// Compares in time independent of where the strings differ.
fn same_secret(given: &str, token: &str) -> bool {
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether any `--listen` address reaches beyond this machine.
pub fn listens_beyond_loopback(listen: &str) -> bool {
    listen
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .any(|a| !host_is_loopback(a) && a != "localhost")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_listen_needs_no_token() {
        assert!(!listens_beyond_loopback("127.0.0.1"));
        assert!(!listens_beyond_loopback("127.0.0.1,::1"));
        assert!(listens_beyond_loopback("0.0.0.0,::"));
        assert!(listens_beyond_loopback("127.0.0.1,192.168.1.5"));
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abd", "abc"));
        assert!(!same_secret("ab", "abc"));
        assert!(!same_secret("", "abc"));
    }
}
