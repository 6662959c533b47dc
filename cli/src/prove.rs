//! `chronos prove`, `chronos verify-proof` and `chronos consistency`:
//! proofs about single events and between checkpoints.
//!
//! `prove` reads O(log n) tiles (one query) and the newest signed
//! checkpoint, builds a proof file (c2sp.org/tlog-proof@v1 for a sha256
//! log, under its own first line for the others: `chronos_ledger::proof`),
//! and checks it before writing it, so a damaged tile never leaves as a
//! proof. `verify-proof` needs no database at all: the proof file, the
//! verifier key and, optionally, the event's bytes.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use chronos_ledger::tree::{self, NodeId};
use chronos_ledger::{Checkpoint, Hash, HashAlg, NoteVerifier, ProofFile, TimeProof, TreeHasher};

use crate::database::{self, Source};
use crate::verify::{TAMPERED, stored_key};

/// Which leaf to prove.
#[derive(Debug, Clone)]
pub enum Leaf {
    Index(u64),
    Hash(Hash),
}

struct Log {
    client: tokio_postgres::Client,
    trusted: NoteVerifier,
    hasher: TreeHasher,
}

async fn open_log(url: &str, key: Option<&str>) -> anyhow::Result<Log> {
    let client = database::connect(url).await?;
    let trusted = match key {
        Some(k) => database::read_key(k)?,
        None => stored_key(&client).await?,
    };
    let alg: String = client
        .query_one("SELECT hash_alg FROM chronos_log WHERE id = 1", &[])
        .await
        .context("reading chronos_log")?
        .get(0);
    let alg = HashAlg::from_name(&alg).with_context(|| format!("chronos_log.hash_alg {alg:?} is unknown"))?;
    let hasher = TreeHasher::new(alg, database::hash_key()?.as_ref())?;
    Ok(Log { client, trusted, hasher })
}

/// The newest stored checkpoint, verified.
async fn newest_checkpoint(log: &Log) -> anyhow::Result<(Checkpoint, String)> {
    let note = database::newest_checkpoint_note(&log.client).await?.context("the log has no signed checkpoint yet")?;
    let (cp, _) = Checkpoint::open(note.as_bytes(), &log.trusted)
        .map_err(|e| Tampered(format!("the newest stored checkpoint does not verify with {}: {e}", log.trusted)))?;
    Ok((cp, note))
}

/// An error that means the data is not what it should be (exit 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Tampered(pub String);

/// Exit code for an error: 1 when it shows tampering, else 2.
pub fn exit_code(e: &anyhow::Error) -> ExitCode {
    if e.downcast_ref::<Tampered>().is_some() { ExitCode::from(TAMPERED) } else { ExitCode::from(2) }
}

/// `chronos prove`.
pub fn prove(
    source: &Source,
    key: Option<&str>,
    leaf: Leaf,
    out: Option<&Path>,
    event_out: Option<&Path>,
    time_out: Option<&Path>,
) -> anyhow::Result<()> {
    let db = source.open()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (proof, event, tiles, timed) = rt.block_on(async {
        let log = open_log(&db.url, key).await?;
        let (cp, note) = newest_checkpoint(&log).await?;
        let index = match leaf {
            Leaf::Index(i) => i,
            Leaf::Hash(h) => {
                // No index on leaf_hash (it would slow every insert): a scan.
                let row = log
                    .client
                    .query_opt("SELECT leaf_index FROM logs WHERE leaf_hash = $1 ORDER BY leaf_index LIMIT 1", &[&&h.0[..]])
                    .await?
                    .with_context(|| format!("no event in the log has leaf hash {h}"))?;
                u64::try_from(row.get::<_, i64>(0))?
            }
        };
        let end: i64 = log
            .client
            .query_one("SELECT coalesce(max(first_leaf + leaf_count), 0) FROM batches", &[])
            .await?
            .get(0);
        if index >= end as u64 {
            bail!("no such leaf: the log holds {end} leaves (0 to {})", end - 1);
        }
        if index >= cp.size {
            bail!(
                "leaf {index} is not covered by the newest signed checkpoint yet (tree size {}); try again after the next checkpoint",
                cp.size
            );
        }
        let plan = tree::inclusion_plan(index, cp.size)?;
        let mut ids = plan.node_ids().to_vec();
        ids.push(NodeId { level: 0, index });
        let set = chronos_vault::tiles::fetch(&log.client, &log.hasher, &ids).await?;
        let hashes = tree::NodeSource::nodes(&set, &ids).map_err(|e| Tampered(format!("the tiles table: {e}")))?;
        let (leaf_hash, path_nodes) = hashes.split_last().context("no leaf hash")?;
        let path = plan.assemble(&log.hasher, path_nodes)?;
        let proof = ProofFile { extra: Some(leaf_hash.0.to_vec()), index, path, checkpoint: note };
        let event: Option<Vec<u8>> = log
            .client
            .query_opt("SELECT event FROM logs WHERE leaf_index = $1", &[&i64::try_from(index)?])
            .await?
            .map(|r| r.get(0));
        // Check what we hand out, with the event if we have it.
        proof
            .verify(&log.trusted, database::hash_key()?.as_ref(), event.as_deref())
            .map_err(|e| Tampered(format!("the proof built from the stored tiles does not verify ({e}); run `chronos verify`")))?;
        let timed = match time_out {
            Some(_) => Some(time_proof(&log, index, leaf_hash, event.as_deref()).await?),
            None => None,
        };
        anyhow::Ok((proof, event, set.tiles_fetched(), timed))
    })?;
    drop(db);
    let text = proof.encode()?;
    match out {
        Some(p) => std::fs::write(p, &text).with_context(|| format!("writing {}", p.display()))?,
        #[allow(clippy::print_stdout)] // the command's output
        None => print!("{text}"),
    }
    if let (Some(p), Some((tp, proven))) = (time_out, &timed) {
        std::fs::write(p, tp.encode()?).with_context(|| format!("writing {}", p.display()))?;
        eprintln!("chronos: time proof of leaf {} written to {}: {}", proof.index, p.display(), describe(proven));
    }
    if let Some(p) = event_out {
        let ev = event.with_context(|| format!("leaf {} has no row in logs (is it being rebuilt?)", proof.index))?;
        std::fs::write(p, ev).with_context(|| format!("writing {}", p.display()))?;
    }
    eprintln!(
        "chronos: proof of leaf {} ({} hashes, from {tiles} tiles), checked against the signed checkpoint",
        proof.index,
        proof.path.len()
    );
    Ok(())
}

/// A checkpoint note of the log that `clause` selects, verified.
async fn checkpoint_where(log: &Log, clause: &str, index: u64) -> anyhow::Result<Option<(Checkpoint, String)>> {
    let row = log
        .client
        .query_opt(&format!("SELECT note FROM checkpoints WHERE {clause} LIMIT 1"), &[&i64::try_from(index)?])
        .await
        .context("reading checkpoints")?;
    let Some(row) = row else { return Ok(None) };
    let note: String = row.get(0);
    let (cp, _) = Checkpoint::open(note.as_bytes(), &log.trusted)
        .map_err(|e| Tampered(format!("a stored checkpoint does not verify with {}: {e}", log.trusted)))?;
    Ok(Some((cp, note)))
}

/// The time proof of leaf `index` (see `chronos_ledger::time_proof`),
/// checked before it is handed out.
async fn time_proof(
    log: &Log,
    index: u64,
    leaf: &Hash,
    event: Option<&[u8]>,
) -> anyhow::Result<(TimeProof, chronos_ledger::ProvenTime)> {
    let (after, after_note) = checkpoint_where(log, "tree_size > $1 ORDER BY tree_size, id", index)
        .await?
        .with_context(|| format!("no signed checkpoint covers leaf {index} yet"))?;
    let nodes = |ids: Vec<NodeId>| async move {
        let set = chronos_vault::tiles::fetch(&log.client, &log.hasher, &ids).await?;
        let hashes = tree::NodeSource::nodes(&set, &ids).map_err(|e| Tampered(format!("the tiles table: {e}")))?;
        anyhow::Ok(hashes)
    };
    let plan = tree::inclusion_plan(index, after.size)?;
    let path = plan.assemble(&log.hasher, &nodes(plan.node_ids().to_vec()).await?)?;
    let inclusion = ProofFile { extra: Some(leaf.0.to_vec()), index, path, checkpoint: after_note };
    let before = match checkpoint_where(log, "tree_size <= $1 ORDER BY tree_size DESC, id DESC", index).await? {
        None => None,
        Some((cp, note)) => {
            let plan = tree::consistency_plan(cp.size, after.size)?;
            let proof = plan.assemble(&log.hasher, &nodes(plan.node_ids().to_vec()).await?)?;
            Some((note, proof))
        }
    };
    let tp = TimeProof { before, inclusion };
    let proven = tp
        .verify(&log.trusted, database::hash_key()?.as_ref(), event)
        .map_err(|e| Tampered(format!("the time proof built from the stored checkpoints does not verify ({e})")))?;
    Ok((tp, proven))
}

/// A proven time interval in words.
fn describe(p: &chronos_ledger::ProvenTime) -> String {
    let after = &p.inclusion.checkpoint;
    let upper = format!(
        "before {} (the checkpoint of size {} signed at {} ± {} ns by time source {})",
        rfc3339(p.latest_ns),
        after.size,
        rfc3339(after.time.time.0),
        after.time.uncertainty_ns,
        after.time.source
    );
    match (&p.before, p.earliest_ns) {
        (Some(b), Some(e)) => format!(
            "logged between {} and {}: after {} (the checkpoint of size {} signed at {} ± {} ns by time source {}), {upper}",
            rfc3339(e),
            rfc3339(p.latest_ns),
            rfc3339(e),
            b.size,
            rfc3339(b.time.time.0),
            b.time.uncertainty_ns,
            b.time.source
        ),
        _ => format!("logged {upper}; no earlier checkpoint bounds it from below (it is in the log's first one)"),
    }
}

/// `chronos verify-proof`: offline.
pub fn verify_proof(file: &Path, key: &str, event: Option<&Path>) -> anyhow::Result<()> {
    let trusted = database::read_key(key)?;
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let event = event.map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display()))).transpose()?;
    if TimeProof::is_time_proof(&bytes) {
        let tp = TimeProof::parse(&bytes).map_err(|e| Tampered(format!("{}: {e}", file.display())))?;
        let proven = tp
            .verify(&trusted, database::hash_key()?.as_ref(), event.as_deref())
            .map_err(|e| Tampered(format!("{}: {e}", file.display())))?;
        #[allow(clippy::print_stdout)] // the command's output
        {
            println!(
                "OK: leaf {} (hash {}) of {} was {}{}",
                proven.inclusion.index,
                proven.inclusion.leaf,
                proven.inclusion.checkpoint.origin,
                describe(&proven),
                if event.is_some() { "; the event's bytes are that leaf" } else { "" }
            );
        }
        return Ok(());
    }
    let proof = ProofFile::parse(&bytes).map_err(|e| Tampered(format!("{}: {e}", file.display())))?;
    // A keyed log's proof cannot be checked without its key: that is "could
    // not check" (2), not "invalid" (1).
    let alg = proof.checkpoint.lines().find_map(|l| l.strip_prefix("hash ")).unwrap_or("");
    if ["blake3-keyed", "hmac-sha256"].contains(&alg) && database::hash_key()?.is_none() {
        bail!("{}: the log hashes with the secret-keyed {alg}: set CHRONOS_HMAC_KEY to its hash key", file.display());
    }
    let v = proof
        .verify(&trusted, database::hash_key()?.as_ref(), event.as_deref())
        .map_err(|e| Tampered(format!("{}: {e}", file.display())))?;
    #[allow(clippy::print_stdout)] // the command's output
    {
        println!(
            "OK: leaf {} (hash {}) is in {} at tree size {} (batch {}), signed at {} ± {} ns by time source {}{}",
            v.index,
            v.leaf,
            v.checkpoint.origin,
            v.checkpoint.size,
            v.checkpoint.chain_seq,
            rfc3339(v.checkpoint.time.time.0),
            v.checkpoint.time.uncertainty_ns,
            v.checkpoint.time.source,
            if event.is_some() { "; the event's bytes are that leaf" } else { "" }
        );
    }
    Ok(())
}

/// RFC 3339 in UTC with all nine fraction digits (`time`'s well-known
/// `Rfc3339` drops trailing zeros, so its width would vary).
const RFC3339_NANOS: &str = "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z";

/// Nanoseconds since the epoch as RFC 3339 UTC.
pub fn rfc3339(ns: u64) -> String {
    let format = time::format_description::parse_borrowed::<2>(RFC3339_NANOS).ok();
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .zip(format)
        .and_then(|(t, f)| t.format(&f).ok())
        // Unreachable: every u64 of nanoseconds is a date before 2600.
        .unwrap_or_else(|| format!("{ns} ns after 1970-01-01T00:00:00Z"))
}

fn read_checkpoint(path: &Path, trusted: &NoteVerifier) -> anyhow::Result<Checkpoint> {
    let note = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (cp, _) = Checkpoint::open(&note, trusted).map_err(|e| Tampered(format!("{}: {e}", path.display())))?;
    Ok(cp)
}

/// `chronos consistency`.
pub fn consistency(source: &Source, key: Option<&str>, old: &Path, new: &Path) -> anyhow::Result<()> {
    let db = source.open()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (o, n, proof) = rt.block_on(async {
        let log = open_log(&db.url, key).await?;
        let o = read_checkpoint(old, &log.trusted)?;
        let n = read_checkpoint(new, &log.trusted)?;
        if o.size > n.size {
            bail!("--old is the larger checkpoint ({} > {} leaves): swap --old and --new", o.size, n.size);
        }
        let plan = tree::consistency_plan(o.size, n.size)?;
        let set = chronos_vault::tiles::fetch(&log.client, &log.hasher, plan.node_ids()).await?;
        let hashes = tree::NodeSource::nodes(&set, plan.node_ids()).map_err(|e| {
            anyhow::anyhow!("the database's tree does not reach size {} yet ({e}): is it the same log?", n.size)
        })?;
        let proof = plan.assemble(&log.hasher, &hashes)?;
        tree::verify_consistency(&log.hasher, o.size, n.size, &o.root, &n.root, &proof).map_err(|e| {
            Tampered(format!(
                "the checkpoints are not consistent ({e}): the log forked or rolled back between them, or its tiles were altered"
            ))
        })?;
        anyhow::Ok((o, n, proof))
    })?;
    #[allow(clippy::print_stdout)] // the command's output
    {
        println!(
            "OK: the checkpoint of size {} extends the one of size {} (consistency proof of {} hashes)",
            n.size,
            o.size,
            proof.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_print_as_rfc3339() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(super::rfc3339(951_782_400_000_000_001), "2000-02-29T00:00:00.000000001Z");
        assert_eq!(super::rfc3339(1_795_252_798_468_834_313), "2026-11-21T09:19:58.468834313Z");
        // Trailing zeros are kept: the width never varies.
        assert_eq!(super::rfc3339(1_000_000_000_100_000_000), "2001-09-09T01:46:40.100000000Z");
        assert_eq!(super::rfc3339(u64::MAX), "2554-07-21T23:34:33.709551615Z");
    }
}
