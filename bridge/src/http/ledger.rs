//! `/v1/checkpoint`, `/v1/proof/inclusion`, `/v1/proof/consistency` and
//! `/v1/events/<N>`: the proofs `chronos prove` writes, as JSON, each
//! checked against the checkpoint it names before it is served.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chronos_ledger::Hash;
use chronos_ledger::tree::NodeId;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Shared;
use crate::error::ServeError;
use crate::follow::Served;
use crate::query::{self, Leaf};

fn b64(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(Hash::to_base64).collect()
}

fn checkpoint_json(s: &Served) -> Value {
    json!({
        "origin": s.checkpoint.origin,
        "tree_size": s.checkpoint.size,
        "root": s.checkpoint.root.to_base64(),
        "hash": s.checkpoint.hash.name(),
        "note": s.note,
    })
}

pub(crate) async fn checkpoint(State(shared): State<Arc<Shared>>) -> Result<Json<Value>, ServeError> {
    let s = query::latest(&shared)?;
    Ok(Json(checkpoint_json(&s)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InclusionQuery {
    leaf: Option<u64>,
    /// The leaf hash, 64 hex digits.
    hash: Option<String>,
}

pub(crate) async fn inclusion(
    State(shared): State<Arc<Shared>>,
    q: Result<Query<InclusionQuery>, QueryRejection>,
) -> Result<Json<Value>, ServeError> {
    let Query(q) = q.map_err(|e| ServeError::Rejected(e.body_text()))?;
    let leaf = match (q.leaf, q.hash.as_deref()) {
        (Some(i), None) => Leaf::Index(i),
        (None, Some(h)) => {
            Leaf::Hash(Hash::from_hex(h).ok_or_else(|| ServeError::Rejected("hash: expected 64 hex digits".into()))?)
        }
        _ => return Err(ServeError::Rejected("give exactly one of leaf=N or hash=HEX".into())),
    };
    let p = query::inclusion(&shared, leaf).await?;
    Ok(Json(json!({
        "leaf_index": p.index,
        "leaf_hash": p.leaf.to_hex(),
        "tree_size": p.checkpoint.checkpoint.size,
        "root": p.checkpoint.checkpoint.root.to_base64(),
        "path": b64(&p.path),
        "checkpoint": p.checkpoint.note,
        "proof": p.file,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConsistencyQuery {
    old: u64,
    new: Option<u64>,
}

pub(crate) async fn consistency(
    State(shared): State<Arc<Shared>>,
    q: Result<Query<ConsistencyQuery>, QueryRejection>,
) -> Result<Json<Value>, ServeError> {
    let Query(q) = q.map_err(|e| ServeError::Rejected(e.body_text()))?;
    let p = query::consistency(&shared, q.old, q.new).await?;
    Ok(Json(json!({
        "old_size": p.old_size,
        "new_size": p.new_size,
        "old_root": p.old_root.to_base64(),
        "new_root": p.new_root.to_base64(),
        "proof": b64(&p.proof),
        "old_checkpoint": p.old_note,
        "new_checkpoint": p.new_note,
    })))
}

/// The event's exact bytes (JSON, as ingested), with its leaf hash,
/// checked against the tiles, in `Chronos-Leaf-Hash`.
pub(crate) async fn event(State(shared): State<Arc<Shared>>, Path(leaf): Path<String>) -> Result<Response, ServeError> {
    let index: u64 = leaf.parse().map_err(|_| ServeError::Rejected(format!("leaf {leaf:?}: expected a number")))?;
    let size = query::latest(&shared)?.checkpoint.size;
    if index >= size {
        return Err(ServeError::NotFound(format!(
            "leaf {index} is not covered by the newest checkpoint (tree size {size}) yet"
        )));
    }
    let client = shared.db.client().await?;
    let stored = chronos_vault::read::nodes(&*client, &shared.settings.hasher, &[NodeId { level: 0, index }]).await?;
    let mut events = chronos_vault::read::events(&*client, index, 1, shared.settings.max_decoded)
        .await?
        .ok_or_else(|| ServeError::Corrupt(format!("leaf {index} is in the tree but in no batch")))?;
    let bytes = events.pop().unwrap_or_default();
    let hash = shared.settings.hasher.leaf(&bytes);
    if stored.first() != Some(&hash) {
        return Err(ServeError::Corrupt(format!(
            "leaf {index}: its event does not hash to its leaf hash in the tiles"
        )));
    }
    let mut r = bytes.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    if let Ok(v) = HeaderValue::from_str(&hash.to_hex()) {
        h.insert("chronos-leaf-hash", v);
    }
    Ok(r)
}
