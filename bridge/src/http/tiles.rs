//! The C2SP tlog-tiles read path: `/checkpoint`, hash tiles and entry
//! bundles. A tile's URL names immutable bytes (a partial tile's too: it
//! names a width), so every tile is served as cacheable forever; the
//! checkpoint is not cached.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::Shared;
use crate::error::ServeError;
use crate::tile_path::TilePath;

/// Largest entry an entry bundle can carry (a 16-bit length prefix).
pub(crate) const MAX_BUNDLE_ENTRY: usize = 65_535;

pub(crate) async fn checkpoint(State(shared): State<Arc<Shared>>) -> Result<Response, ServeError> {
    let latest = shared.follow.latest().ok_or_else(|| ServeError::Unavailable("no checked checkpoint yet".into()))?;
    let mut r = latest.note.clone().into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(r)
}

fn immutable(bytes: Vec<u8>) -> Response {
    let mut r = bytes.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    r
}

pub(crate) async fn tile(State(shared): State<Arc<Shared>>, Path(path): Path<String>) -> Result<Response, ServeError> {
    let t = TilePath::parse(&path).map_err(|e| ServeError::Rejected(e.to_string()))?;
    let client = shared.db.client().await?;
    let level = match t.level {
        Some(l) if l > 7 => {
            return Err(ServeError::NotFound(format!("no tile at level {l}: the tree is at most 8 tile levels high")));
        }
        Some(l) => l,
        None => return entries(&shared, &client, t).await,
    };
    match chronos_vault::read::tile(&*client, level, t.index, t.width).await? {
        Some(bytes) => Ok(immutable(bytes)),
        None => Err(ServeError::NotFound(format!("tile/{} does not exist yet", t.encode()))),
    }
}

/// An entry bundle: each entry as a big-endian 16-bit length and its
/// bytes. Each entry's leaf hash is checked against the level-0 tile
/// before the bundle is served.
async fn entries(shared: &Shared, client: &tokio_postgres::Client, t: TilePath) -> Result<Response, ServeError> {
    let first = t.index.checked_mul(256).ok_or_else(|| ServeError::Rejected("bundle index too large".into()))?;
    let width = u64::from(t.width);
    let hashes = chronos_vault::read::tile(client, 0, t.index, t.width)
        .await?
        .ok_or_else(|| ServeError::NotFound(format!("tile/{} does not exist yet", t.encode())))?;
    let events = chronos_vault::read::events(client, first, width, shared.settings.max_decoded)
        .await?
        .ok_or_else(|| ServeError::NotFound(format!("tile/{} does not exist yet", t.encode())))?;
    let mut out = Vec::with_capacity(events.iter().map(|e| e.len() + 2).sum());
    for (i, (e, h)) in events.iter().zip(hashes.chunks_exact(32)).enumerate() {
        let leaf = first + i as u64;
        if shared.settings.hasher.leaf(e).0[..] != *h {
            return Err(ServeError::Corrupt(format!(
                "leaf {leaf}: its event does not hash to its leaf hash in the tiles"
            )));
        }
        let len = u16::try_from(e.len()).map_err(|_| {
            ServeError::NotFound(format!(
                "leaf {leaf} is {} bytes, more than an entry bundle can hold ({MAX_BUNDLE_ENTRY}); read it at /v1/events/{leaf}",
                e.len()
            ))
        })?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(e);
    }
    Ok(immutable(out))
}
