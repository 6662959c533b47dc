//! Restoring the sequencer's state from PostgreSQL, checked against the
//! latest signed checkpoint before anything is accepted.

use chronos_ledger::{ChainHead, Checkpoint, CompactRange, Hash};
use chronos_vault::store::{LogIdentity, RecentKey, Vault};
use chronos_vault::{schema, tiles};

use crate::stages::{Chain, Sequence, Timestamp, Tree, Validate};
use crate::{OrchestratorError, Settings, Spine};

/// What the database says the log is.
#[derive(Debug)]
pub struct Restored {
    pub head: ChainHead,
    pub root: Hash,
    pub range: CompactRange,
    pub keys: Vec<RecentKey>,
    /// The latest signed checkpoint stored in the database.
    pub last_signed: Option<LastSigned>,
    /// Time of the newest batch, ns.
    pub last_time: u64,
    /// The log's control records (leaf, batch time, bytes), in order.
    pub control: Vec<(u64, u64, Vec<u8>)>,
}

/// The newest checkpoint known at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastSigned {
    pub size: u64,
    pub seq: u64,
    /// Its time, ns since the epoch.
    pub time_ns: u64,
}

/// Connects, migrates and wraps a vault whose commits are fenced by `epoch`.
pub async fn connect(url: &str, epoch: u64) -> Result<Vault, chronos_vault::store::VaultError> {
    let (mut client, conn) = chronos_tls::pg::connect(url).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "database connection closed");
        }
    });
    schema::migrate(&mut client)
        .await
        .map_err(|e| chronos_vault::store::VaultError::Corrupt { seq: 0, reason: format!("schema: {e}") })?;
    Ok(Vault::new(client).fenced(epoch))
}

async fn refuse(vault: &mut Vault, kind: &str, reason: String) -> OrchestratorError {
    let detail = serde_json::json!({ "reason": reason }).to_string();
    if let Err(e) = vault.audit("orchestrator", kind, &detail).await {
        tracing::error!(error = %e, "could not record the audit event");
    }
    tracing::error!(kind, reason, "refusing to sequence");
    OrchestratorError::Refused(reason)
}

/// Reads the head, tree and idempotency keys, and checks them against the
/// latest signed checkpoint (signature, and that the stored log is that
/// checkpoint or extends it).
pub async fn restore(settings: &Settings) -> Result<Restored, OrchestratorError> {
    let mut vault = connect(&settings.database_url, settings.epoch).await?;
    if let Err(e) = chronos_vault::lease::check(vault.client(), settings.epoch).await {
        return Err(match e {
            e @ chronos_vault::store::VaultError::Fenced { .. } => refuse(&mut vault, "fenced", e.to_string()).await,
            e => e.into(),
        });
    }
    let hasher = &settings.hasher;
    let genesis = ChainHead::genesis(hasher, &settings.origin);
    vault
        .ensure_identity(&LogIdentity {
            origin: &settings.origin,
            hash_alg: hasher.alg().name(),
            key_check: settings.key_check,
            verifier_key: &settings.verifier_key,
            genesis: genesis.hash,
        })
        .await?;
    let head = match vault.head().await? {
        Some((seq, hash, size)) => ChainHead { seq, hash, size },
        None => genesis,
    };
    let range = tiles::compact_range(vault.client(), hasher, head.size).await?;
    let root = range.root(hasher);
    let verifier = settings.signer.verifier();
    let stored = match vault.latest_checkpoint().await? {
        None => None,
        Some(note) => {
            let cp = match Checkpoint::open(note.as_bytes(), &verifier) {
                Ok((cp, _)) => cp,
                Err(e) => {
                    return Err(refuse(&mut vault, "checkpoint_bad_signature", format!("latest checkpoint: {e}")).await);
                }
            };
            if let Err(reason) = check_against(&mut vault, settings, &cp, &head, &root, &genesis).await? {
                return Err(refuse(&mut vault, "checkpoint_mismatch", reason).await);
            }
            Some((cp, note))
        }
    };
    // The checkpoint saved outside the database: the database must extend
    // it, or it was restored from a backup older than what was signed.
    let file = &settings.checkpoint_file;
    let saved = match crate::saved::read(file) {
        Ok(s) => s,
        Err(e) => {
            let reason = format!("cannot read the saved checkpoint {}: {e}", file.display());
            return Err(refuse(&mut vault, "saved_checkpoint_unreadable", reason).await);
        }
    };
    let saved = match saved {
        None => None,
        // The key's name is the log's origin: a checkpoint of another log
        // (a data directory of another log) fails here too.
        Some(note) => match Checkpoint::open(note.as_bytes(), &verifier) {
            Ok((cp, _)) => Some(cp),
            Err(e) => {
                let reason = format!(
                    "the saved checkpoint {} does not verify with this log's key (altered, or of another log): {e}",
                    file.display()
                );
                return Err(refuse(&mut vault, "saved_checkpoint_unreadable", reason).await);
            }
        },
    };
    if let Some(cp) = &saved
        && let Err(reason) = extends_saved(&mut vault, settings, cp, &head, &root).await?
    {
        return Err(refuse(&mut vault, "database_behind_saved_checkpoint", reason).await);
    }
    // Keep the file at least as new as the database's newest checkpoint
    // (a new data directory, or a file lost with an old disk).
    if let Some((cp, note)) = &stored
        && saved.as_ref().is_none_or(|s| s.size < cp.size)
        && let Err(e) = crate::saved::write(file, note)
    {
        let reason = format!("cannot save the checkpoint to {}: {e}", file.display());
        return Err(refuse(&mut vault, "saved_checkpoint_unwritable", reason).await);
    }
    // The signer goes on from what the database holds, not from the file: a
    // checkpoint only saved (its signer died before storing it) is signed
    // again, else the head it covers stays without a stored checkpoint (and
    // its batches unprovable) until the log grows.
    let last_signed = stored.map(|(cp, _)| LastSigned { size: cp.size, seq: cp.chain_seq, time_ns: cp.time.time.0 });
    let keys = vault.recent_keys(settings.key_window).await?;
    let last_time: Option<i64> = vault
        .client()
        .query_opt("SELECT time_ns FROM batches ORDER BY seq DESC LIMIT 1", &[])
        .await
        .map_err(chronos_vault::store::VaultError::from)?
        .map(|r| r.get(0));
    let control = chronos_vault::store::control_records(vault.client()).await?;
    // `control_log` is a copy: each record must be the leaf the tree holds
    // (an edited copy would otherwise change the registry or lift a hold
    // at this start). A deleted copy is found by `chronos verify`, which
    // reads every batch.
    let ids: Vec<chronos_ledger::tree::NodeId> =
        control.iter().map(|(leaf, _, _)| chronos_ledger::tree::NodeId { level: 0, index: *leaf }).collect();
    let stored = chronos_vault::read::nodes(vault.client(), hasher, &ids).await?;
    for ((leaf, _, bytes), want) in control.iter().zip(&stored) {
        if hasher.leaf(bytes) != *want {
            let reason = format!("control_log's record at leaf {leaf} is not the leaf the log holds there");
            return Err(refuse(&mut vault, "control_log_altered", reason).await);
        }
    }
    Ok(Restored { head, root, range, keys, last_signed, last_time: last_time.unwrap_or(0) as u64, control })
}

/// `Ok(Err(reason))` when the stored log is not `cp` or an extension of it.
async fn check_against(
    vault: &mut Vault,
    settings: &Settings,
    cp: &Checkpoint,
    head: &ChainHead,
    root: &Hash,
    genesis: &ChainHead,
) -> Result<Result<(), String>, OrchestratorError> {
    if cp.hash != settings.hasher.alg() {
        return Ok(Err(format!(
            "the latest checkpoint uses {}, the log {}",
            cp.hash.name(),
            settings.hasher.alg().name()
        )));
    }
    if cp.chain_seq > head.seq || cp.size > head.size {
        return Ok(Err(format!(
            "the database was rolled back: the latest signed checkpoint has seq {} and size {}, the database only seq {} and size {}",
            cp.chain_seq, cp.size, head.seq, head.size
        )));
    }
    let (chain, size, cp_root) = if cp.chain_seq == head.seq {
        (head.hash, head.size, *root)
    } else if cp.chain_seq == 0 {
        (genesis.hash, 0, settings.hasher.empty_root())
    } else {
        let Some((chain, size)) = vault.batch_chain(cp.chain_seq).await? else {
            return Ok(Err(format!("batch {} of the latest checkpoint is missing", cp.chain_seq)));
        };
        let r = tiles::compact_range(vault.client(), &settings.hasher, size).await?.root(&settings.hasher);
        (chain, size, r)
    };
    if chain != cp.chain_hash || size != cp.size || cp_root != cp.root {
        return Ok(Err(format!(
            "the stored log differs from the latest signed checkpoint at seq {} (chain {}, size {}, root {})",
            cp.chain_seq,
            if chain == cp.chain_hash { "same" } else { "differs" },
            if size == cp.size { "same" } else { "differs" },
            if cp_root == cp.root { "same" } else { "differs" },
        )));
    }
    Ok(Ok(()))
}

/// `Ok(Err(reason))` unless the stored log extends the saved checkpoint
/// `cp`: its batch `cp.chain_seq` has `cp`'s chain value, and a
/// consistency proof from the tiles leads from `cp`'s root to the stored
/// head's.
async fn extends_saved(
    vault: &mut Vault,
    settings: &Settings,
    cp: &Checkpoint,
    head: &ChainHead,
    root: &Hash,
) -> Result<Result<(), String>, OrchestratorError> {
    let file = settings.checkpoint_file.display();
    if cp.hash != settings.hasher.alg() {
        return Ok(Err(format!(
            "the saved checkpoint {file} uses {}, the log {}",
            cp.hash.name(),
            settings.hasher.alg().name()
        )));
    }
    if cp.chain_seq > head.seq || cp.size > head.size {
        return Ok(Err(format!(
            "the database is behind the checkpoint saved outside it ({file}: tree size {}, batch {}; the database holds \
             tree size {}, batch {}): it was restored from an older backup or rolled back. Signing now would fork the \
             log (re-use leaf indices already answered). See README \"When the database is behind the saved checkpoint\"",
            cp.size, cp.chain_seq, head.size, head.seq
        )));
    }
    let chain = if cp.chain_seq == 0 {
        Some(ChainHead::genesis(&settings.hasher, &settings.origin).hash)
    } else {
        vault.batch_chain(cp.chain_seq).await?.map(|(c, _)| c)
    };
    if chain != Some(cp.chain_hash) {
        return Ok(Err(format!(
            "batch {} differs from the one the checkpoint saved in {file} signed: the database holds another history",
            cp.chain_seq
        )));
    }
    let h = &settings.hasher;
    let consistent = if cp.size == 0 {
        true
    } else {
        let plan = chronos_ledger::tree::consistency_plan(cp.size, head.size)
            .map_err(|e| OrchestratorError::Refused(format!("consistency plan: {e}")))?;
        let set = tiles::fetch(vault.client(), h, plan.node_ids()).await?;
        let proof = chronos_ledger::tree::NodeSource::nodes(&set, plan.node_ids())
            .ok()
            .and_then(|nodes| plan.assemble(h, &nodes).ok());
        proof.is_some_and(|p| {
            chronos_ledger::tree::verify_consistency(h, cp.size, head.size, &cp.root, root, &p).is_ok()
        })
    };
    if !consistent {
        return Ok(Err(format!(
            "the stored tree (size {}) does not extend the checkpoint saved in {file} (size {}): no consistency proof",
            head.size, cp.size
        )));
    }
    Ok(Ok(()))
}

/// The spine for a restored state.
pub fn spine(settings: &Settings, r: &Restored, metrics: &crate::Metrics) -> Spine {
    let max_events = usize::try_from(settings.topology.max_events).unwrap_or(usize::MAX);
    Spine::new(vec![
        Box::new(Validate::new(settings.key_window, settings.key_limit, max_events, &r.keys, metrics.clone())),
        Box::new(Timestamp::new(settings.clock.clone(), r.last_time)),
        Box::new(settings.claimed_time),
        Box::new(Sequence::new(&r.head)),
        Box::new(Chain::new(settings.hasher.clone(), r.head)),
        Box::new(Tree::new(settings.hasher.clone(), r.range.clone())),
    ])
}
