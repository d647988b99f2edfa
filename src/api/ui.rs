//! The bundled SPA: files from `assets/` embedded at build time, `index.html` for every
//! other non-API path so client-side routes survive a reload.

use super::error::bytes_response;
use rust_embed::RustEmbed;
use warp::filters::BoxedFilter;
use warp::http::HeaderValue;
use warp::reply::Response;
use warp::Filter;

#[derive(RustEmbed)]
#[folder = "assets/"]
struct Assets;

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
        .map(|path: warp::path::FullPath| serve_asset(path.as_str()))
        .boxed()
}

fn serve_asset(path: &str) -> Response {
    let name = path.trim_start_matches('/');
    let (name, file) = match Assets::get(name).filter(|_| !name.is_empty()) {
        Some(file) => (name, file),
        None => match Assets::get("index.html") {
            Some(file) => ("index.html", file),
            None => return bytes_response(404, "text/plain", "no UI bundled".into()),
        },
    };
    let mime = mime_guess::from_path(name).first_or_octet_stream();
    let mut response = Response::new(file.data.into_owned().into());
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(mime.as_ref()) {
        headers.insert(warp::http::header::CONTENT_TYPE, value);
    }
    // Vite puts content-hashed files under assets/: they never change, so cache them for good.
    let cache = if name.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    headers.insert(warp::http::header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}
