//! The bundled SPA: files from `assets/` embedded at build time, `index.html` for every
//! other non-API path so client-side routes survive a reload. Text files are gzipped for
//! clients that accept it (once per file: they never change inside a binary).

use super::error::bytes_response;
use bytes::Bytes;
use rust_embed::RustEmbed;
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Mutex, OnceLock};
use warp::filters::BoxedFilter;
use warp::http::HeaderValue;
use warp::reply::Response;
use warp::Filter;

#[derive(RustEmbed)]
#[folder = "assets/"]
struct Assets;

/// Smaller files gain nothing from compression.
const MIN_COMPRESS: usize = 1024;

pub fn routes() -> BoxedFilter<(Response,)> {
    warp::path::full()
        .and_then(|path: warp::path::FullPath| async move {
            // API paths never fall back to the SPA: an unknown one is a JSON 404.
            let p = path.as_str();
            if p == "/api" || p.starts_with("/api/") || p == "/v1" || p.starts_with("/v1/") {
                Err(warp::reject::not_found())
            } else {
                Ok(path)
            }
        })
        .and(warp::get())
        .and(warp::header::optional::<String>("accept-encoding"))
        .map(|path: warp::path::FullPath, encoding: Option<String>| {
            let gzip = encoding.is_some_and(|e| e.split(',').any(|part| part.trim().starts_with("gzip")));
            serve_asset(path.as_str(), gzip)
        })
        .boxed()
}

fn serve_asset(path: &str, gzip_ok: bool) -> Response {
    let name = path.trim_start_matches('/');
    let (name, file) = match Assets::get(name).filter(|_| !name.is_empty()) {
        Some(file) => (name, file),
        // A hashed file that is not there is a stale page asking for an old build: a
        // 404 says so, where index.html would fail as a script.
        None if name.starts_with("assets/") => {
            return bytes_response(404, "text/plain; charset=utf-8", Bytes::from_static(b"not found"))
        }
        None => match Assets::get("index.html") {
            Some(file) => ("index.html", file),
            None => return bytes_response(404, "text/plain", "no UI bundled".into()),
        },
    };
    let mime = mime_guess::from_path(name).first_or_octet_stream();
    let compressible =
        matches!(mime.type_().as_str(), "text") || ["javascript", "json", "svg+xml"].contains(&mime.subtype().as_str());
    let body = if gzip_ok && compressible && file.data.len() >= MIN_COMPRESS {
        gzipped(name, &file.data)
    } else {
        None
    };
    let gzipped = body.is_some();
    let mut response = Response::new(body.unwrap_or_else(|| Bytes::from(file.data.into_owned())).into());
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(mime.as_ref()) {
        headers.insert(warp::http::header::CONTENT_TYPE, value);
    }
    if gzipped {
        headers.insert(warp::http::header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    if compressible {
        headers.insert(warp::http::header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    // Vite puts content-hashed files under assets/: they never change, so cache them for good.
    let cache = if name.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    headers.insert(warp::http::header::CACHE_CONTROL, HeaderValue::from_static(cache));
    super::filters::ui_security_headers(headers);
    response
}

fn gzipped(name: &str, data: &[u8]) -> Option<Bytes> {
    static CACHE: OnceLock<Mutex<HashMap<String, Bytes>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(hit) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(name) {
        return Some(hit.clone());
    }
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data).ok()?;
    let compressed = Bytes::from(encoder.finish().ok()?);
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(name.to_string(), compressed.clone());
    Some(compressed)
}
