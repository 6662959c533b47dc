//! `/v1/checkpoint`, `/v1/proof/inclusion`, `/v1/proof/consistency` and
//! `/v1/events/<N>`: the proofs `chronos prove` writes, as JSON, each
//! checked against the checkpoint it names before it is served.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chronos_ledger::tree::NodeId;
use chronos_ledger::{Checkpoint, Hash, ProofFile};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Shared;
use crate::error::ServeError;
use crate::follow::Served;

fn latest(shared: &Shared) -> Result<Arc<Served>, ServeError> {
    shared.follow.latest().ok_or_else(|| ServeError::Unavailable("no checked checkpoint yet".into()))
}

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
    let s = latest(&shared)?;
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
    let cp = latest(&shared)?;
    let client = shared.db.client().await?;
    let index = match (q.leaf, q.hash.as_deref()) {
        (Some(i), None) => i,
        (None, Some(h)) => {
            let h = Hash::from_hex(h).ok_or_else(|| ServeError::Rejected("hash: expected 64 hex digits".into()))?;
            chronos_vault::read::leaf_by_hash(&*client, &h)
                .await?
                .ok_or_else(|| ServeError::NotFound(format!("no leaf has hash {h} (on a replica, look leaves up by index)")))?
        }
        _ => return Err(ServeError::Rejected("give exactly one of leaf=N or hash=HEX".into())),
    };
    let size = cp.checkpoint.size;
    if index >= size {
        return Err(ServeError::NotFound(format!(
            "leaf {index} is not covered by the newest checkpoint (tree size {size}) yet"
        )));
    }
    let (leaf, path) = chronos_vault::read::inclusion(&*client, &shared.settings.hasher, index, size).await?;
    chronos_ledger::tree::verify_inclusion(&shared.settings.hasher, index, size, &leaf, &path, &cp.checkpoint.root)
        .map_err(|e| ServeError::Corrupt(format!("the inclusion proof of leaf {index} built from the tiles fails: {e}")))?;
    let file = ProofFile { extra: Some(leaf.0.to_vec()), index, path: path.clone(), checkpoint: cp.note.clone() };
    let text = file.encode().map_err(|e| ServeError::Corrupt(format!("encoding the proof: {e}")))?;
    Ok(Json(json!({
        "leaf_index": index,
        "leaf_hash": leaf.to_hex(),
        "tree_size": size,
        "root": cp.checkpoint.root.to_base64(),
        "path": b64(&path),
        "checkpoint": cp.note,
        "proof": text,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConsistencyQuery {
    old: u64,
    new: Option<u64>,
}

/// The stored checkpoint of exactly `size` leaves, verified.
async fn checkpoint_of(shared: &Shared, client: &tokio_postgres::Client, size: u64) -> Result<(Checkpoint, String), ServeError> {
    let size_i = i64::try_from(size).map_err(|_| ServeError::Rejected(format!("tree size {size} is too large")))?;
    let row = client
        .query_opt("SELECT note FROM checkpoints WHERE tree_size = $1 ORDER BY id DESC LIMIT 1", &[&size_i])
        .await
        .map_err(|e| ServeError::Unavailable(format!("the database cannot be read: {e}")))?
        .ok_or_else(|| ServeError::NotFound(format!("no checkpoint of tree size {size} was signed")))?;
    let note: String = row.get(0);
    let (cp, _) = Checkpoint::open(note.as_bytes(), &shared.settings.verifier)
        .map_err(|e| ServeError::Corrupt(format!("the stored checkpoint of size {size} does not verify: {e}")))?;
    Ok((cp, note))
}

pub(crate) async fn consistency(
    State(shared): State<Arc<Shared>>,
    q: Result<Query<ConsistencyQuery>, QueryRejection>,
) -> Result<Json<Value>, ServeError> {
    let Query(q) = q.map_err(|e| ServeError::Rejected(e.body_text()))?;
    let head = latest(&shared)?;
    let new = q.new.unwrap_or(head.checkpoint.size);
    if q.old > new {
        return Err(ServeError::Rejected(format!("old ({}) is larger than new ({new})", q.old)));
    }
    if new > head.checkpoint.size {
        return Err(ServeError::NotFound(format!("no checkpoint of tree size {new} yet (newest: {})", head.checkpoint.size)));
    }
    let client = shared.db.client().await?;
    let (new_cp, new_note) = if new == head.checkpoint.size {
        (head.checkpoint.clone(), head.note.clone())
    } else {
        checkpoint_of(&shared, &client, new).await?
    };
    let (old_root, old_note) = if q.old == 0 {
        (shared.settings.hasher.empty_root(), None)
    } else {
        let (cp, note) = checkpoint_of(&shared, &client, q.old).await?;
        (cp.root, Some(note))
    };
    let proof = chronos_vault::read::consistency(&*client, &shared.settings.hasher, q.old, new).await?;
    chronos_ledger::tree::verify_consistency(&shared.settings.hasher, q.old, new, &old_root, &new_cp.root, &proof)
        .map_err(|e| ServeError::Corrupt(format!("the consistency proof {} → {new} built from the tiles fails: {e}", q.old)))?;
    Ok(Json(json!({
        "old_size": q.old,
        "new_size": new,
        "old_root": old_root.to_base64(),
        "new_root": new_cp.root.to_base64(),
        "proof": b64(&proof),
        "old_checkpoint": old_note,
        "new_checkpoint": new_note,
    })))
}

/// The event's exact bytes (JSON, as ingested), with its leaf hash,
/// checked against the tiles, in `Chronos-Leaf-Hash`.
pub(crate) async fn event(State(shared): State<Arc<Shared>>, Path(leaf): Path<String>) -> Result<Response, ServeError> {
    let index: u64 = leaf.parse().map_err(|_| ServeError::Rejected(format!("leaf {leaf:?}: expected a number")))?;
    let size = latest(&shared)?.checkpoint.size;
    if index >= size {
        return Err(ServeError::NotFound(format!("leaf {index} is not covered by the newest checkpoint (tree size {size}) yet")));
    }
    let client = shared.db.client().await?;
    let stored = chronos_vault::read::nodes(&*client, &shared.settings.hasher, &[NodeId { level: 0, index }]).await?;
    let mut events = chronos_vault::read::events(&*client, index, 1, shared.settings.max_decoded)
        .await?
        .ok_or_else(|| ServeError::Corrupt(format!("leaf {index} is in the tree but in no batch")))?;
    let bytes = events.pop().unwrap_or_default();
    let hash = shared.settings.hasher.leaf(&bytes);
    if stored.first() != Some(&hash) {
        return Err(ServeError::Corrupt(format!("leaf {index}: its event does not hash to its leaf hash in the tiles")));
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
