//! What the HTTP and gRPC surfaces both answer, without their formats:
//! the checked checkpoint, inclusion and consistency proofs (each
//! checked against its checkpoint before it is returned), and the time.

use std::sync::Arc;

use chronos_ledger::{Checkpoint, Hash, ProofFile};
use serde::Serialize;

use crate::Shared;
use crate::error::ServeError;
use crate::follow::Served;

/// The newest checked checkpoint.
pub(crate) fn latest(shared: &Shared) -> Result<Arc<Served>, ServeError> {
    shared.follow.latest().ok_or_else(|| ServeError::Unavailable("no checked checkpoint yet".into()))
}

/// Which leaf a proof is asked for.
pub(crate) enum Leaf {
    Index(u64),
    Hash(Hash),
}

pub(crate) struct Inclusion {
    pub index: u64,
    pub leaf: Hash,
    pub path: Vec<Hash>,
    pub checkpoint: Arc<Served>,
    /// The C2SP tlog-proof file `chronos prove` writes.
    pub file: String,
}

pub(crate) async fn inclusion(shared: &Shared, leaf: Leaf) -> Result<Inclusion, ServeError> {
    let cp = latest(shared)?;
    let client = shared.db.client().await?;
    let index = match leaf {
        Leaf::Index(i) => i,
        Leaf::Hash(h) => chronos_vault::read::leaf_by_hash(&*client, &h).await?.ok_or_else(|| {
            ServeError::NotFound(format!("no leaf has hash {h} (on a replica, look leaves up by index)"))
        })?,
    };
    let size = cp.checkpoint.size;
    if index >= size {
        return Err(ServeError::NotFound(format!(
            "leaf {index} is not covered by the newest checkpoint (tree size {size}) yet"
        )));
    }
    let (leaf, path) = chronos_vault::read::inclusion(&*client, &shared.settings.hasher, index, size).await?;
    chronos_ledger::tree::verify_inclusion(&shared.settings.hasher, index, size, &leaf, &path, &cp.checkpoint.root)
        .map_err(|e| {
            ServeError::Corrupt(format!("the inclusion proof of leaf {index} built from the tiles fails: {e}"))
        })?;
    let file = ProofFile { extra: Some(leaf.0.to_vec()), index, path: path.clone(), checkpoint: cp.note.clone() }
        .encode()
        .map_err(|e| ServeError::Corrupt(format!("encoding the proof: {e}")))?;
    Ok(Inclusion { index, leaf, path, checkpoint: cp, file })
}

pub(crate) struct Consistency {
    pub old_size: u64,
    pub new_size: u64,
    pub old_root: Hash,
    pub new_root: Hash,
    pub proof: Vec<Hash>,
    pub old_note: Option<String>,
    pub new_note: String,
}

/// The stored checkpoint of exactly `size` leaves, verified.
async fn checkpoint_of(
    shared: &Shared,
    client: &tokio_postgres::Client,
    size: u64,
) -> Result<(Checkpoint, String), ServeError> {
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

/// A proof that the tree of `old` leaves is a prefix of that of `new`
/// (the newest checkpoint's size when `None`), both signed sizes.
pub(crate) async fn consistency(shared: &Shared, old: u64, new: Option<u64>) -> Result<Consistency, ServeError> {
    let head = latest(shared)?;
    let new = new.unwrap_or(head.checkpoint.size);
    if old > new {
        return Err(ServeError::Rejected(format!("old ({old}) is larger than new ({new})")));
    }
    if new > head.checkpoint.size {
        return Err(ServeError::NotFound(format!(
            "no checkpoint of tree size {new} yet (newest: {})",
            head.checkpoint.size
        )));
    }
    let client = shared.db.client().await?;
    let (new_cp, new_note) = if new == head.checkpoint.size {
        (head.checkpoint.clone(), head.note.clone())
    } else {
        checkpoint_of(shared, &client, new).await?
    };
    let (old_root, old_note) = if old == 0 {
        (shared.settings.hasher.empty_root(), None)
    } else {
        let (cp, note) = checkpoint_of(shared, &client, old).await?;
        (cp.root, Some(note))
    };
    let proof = chronos_vault::read::consistency(&*client, &shared.settings.hasher, old, new).await?;
    chronos_ledger::tree::verify_consistency(&shared.settings.hasher, old, new, &old_root, &new_cp.root, &proof)
        .map_err(|e| {
            ServeError::Corrupt(format!("the consistency proof {old} → {new} built from the tiles fails: {e}"))
        })?;
    Ok(Consistency { old_size: old, new_size: new, old_root, new_root: new_cp.root, proof, old_note, new_note })
}

/// The body of `/v1/time` (spec/bridge/time.schema.json).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TimeView {
    /// Whether this is quorum time (the configured sources agree).
    pub synchronized: bool,
    pub earliest_ns: u64,
    pub latest_ns: u64,
    pub midpoint_ns: u64,
    /// Half the interval's width, ns.
    pub uncertainty_ns: u64,
    pub earliest: String,
    pub latest: String,
    pub midpoint: String,
    /// `quorum:K/N:<evidence digest>` when synchronized; otherwise the host
    /// clock's `host` or `host-unsynchronized` (batches are then refused or
    /// stamped `untrusted`, as the time policy says).
    pub source: String,
    /// Why it is not quorum time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The signed statement, when asked for (`?signed=true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn rfc3339(ns: u64) -> String {
    ::time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| t.format(&::time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// The time now: quorum time, or the host clock and why it is not.
pub(crate) fn view(reader: &chronos_time::TimeReader) -> TimeView {
    let (stamp, reason) = match reader.quorum_now() {
        Ok(s) => (s, None),
        Err(why) => (chronos_time::reader::host_stamp(), Some(why)),
    };
    let i = stamp.interval;
    TimeView {
        synchronized: reason.is_none(),
        earliest_ns: i.earliest,
        latest_ns: i.latest,
        midpoint_ns: i.midpoint(),
        uncertainty_ns: i.radius(),
        earliest: rfc3339(i.earliest),
        latest: rfc3339(i.latest),
        midpoint: rfc3339(i.midpoint()),
        source: stamp.source,
        reason,
        note: None,
    }
}

/// The text of a signed time statement (spec/bridge.md): its second line
/// begins `origin `, where a checkpoint's is a decimal tree size, so the
/// log's key never signs something that reads as both.
pub(crate) fn statement(origin: &str, v: &TimeView) -> String {
    format!(
        "chronos/time-statement@v1\norigin {origin}\nearliest {}\nlatest {}\nsource {}\nsynchronized {}\n",
        v.earliest_ns, v.latest_ns, v.source, v.synchronized
    )
}

/// The time now, signed as a statement when `signed` (and the bridge signs time).
pub(crate) fn time(shared: &Shared, signed: bool) -> Result<TimeView, ServeError> {
    let mut v = view(&shared.time);
    if signed {
        let signer =
            shared.settings.time_signer.as_ref().ok_or_else(|| {
                ServeError::Rejected("this bridge does not sign time (bridge.sign_time is off)".into())
            })?;
        let origin = shared.settings.verifier.name().to_owned();
        let note = signer.sign(&statement(&origin, &v)).map_err(|e| ServeError::Corrupt(format!("signing: {e}")))?;
        v.note = Some(note);
    }
    Ok(v)
}
