//! `GET /api/backup` (admin): streams a consistent snapshot of the database, the same file
//! `auxot backup` writes, for the UI's "Download backup" button.

use super::admin::{reply, require_admin};
use super::error::ApiError;
use crate::AppState;
use futures_util::stream;
use warp::filters::BoxedFilter;
use warp::http::{header, HeaderMap, HeaderValue};
use warp::reply::Response;
use warp::Filter;

const CHUNK: usize = 64 * 1024;

pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let with_state = warp::any().map(move || state.clone());
    warp::path!("api" / "backup")
        .and(warp::get())
        .and(with_state)
        .and(warp::header::headers_cloned())
        .then(|state, headers| reply(download(state, headers)))
        .boxed()
}

async fn download(state: AppState, headers: HeaderMap) -> Result<Response, ApiError> {
    require_admin(&state, &headers).await?;
    let (file, size) = state
        .backups
        .snapshot_file()
        .await
        .map_err(|e| ApiError::new(500, "backup_failed", e.to_string()))?;
    let chunks = stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buffer = vec![0u8; CHUNK];
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(n) => {
                buffer.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buffer)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    let mut response = super::body::streamed(chunks);
    let name = format!(
        "attachment; filename=\"auxot-backup-{}.redb\"",
        crate::clock::now_unix()
    );
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(value) = HeaderValue::from_str(&name) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
