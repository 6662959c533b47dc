//! Restoring the sequencer's state from PostgreSQL, checked against the
//! latest signed checkpoint before anything is accepted.

use chronos_ledger::{ChainHead, Checkpoint, CompactRange, Hash};
use chronos_vault::store::{LogIdentity, RecentKey, Vault};
use chronos_vault::{schema, tiles};
use tokio_postgres::NoTls;

use crate::stages::{Chain, Sequence, Timestamp, Tree, Validate};
use crate::{OrchestratorError, Settings, Spine};

/// What the database says the log is.
#[derive(Debug)]
pub struct Restored {
    pub head: ChainHead,
    pub root: Hash,
    pub range: CompactRange,
    pub keys: Vec<RecentKey>,
    /// (tree size, chain seq) of the latest signed checkpoint.
    pub last_signed: Option<(u64, u64)>,
    /// Time of the newest batch, ns.
    pub last_time: u64,
}

/// Connects, migrates and wraps a vault.
pub async fn connect(url: &str) -> Result<Vault, chronos_vault::store::VaultError> {
    let (mut client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "database connection closed");
        }
    });
    schema::migrate(&mut client)
        .await
        .map_err(|e| chronos_vault::store::VaultError::Corrupt { seq: 0, reason: format!("schema: {e}") })?;
    Ok(Vault::new(client))
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
    let mut vault = connect(&settings.database_url).await?;
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
    let last_signed = match vault.latest_checkpoint().await? {
        None => None,
        Some(note) => {
            let verifier = settings.signer.verifier();
            let cp = match Checkpoint::open(note.as_bytes(), &verifier) {
                Ok((cp, _)) => cp,
                Err(e) => {
                    return Err(refuse(&mut vault, "checkpoint_bad_signature", format!("latest checkpoint: {e}")).await);
                }
            };
            if let Err(reason) = check_against(&mut vault, settings, &cp, &head, &root, &genesis).await? {
                return Err(refuse(&mut vault, "checkpoint_mismatch", reason).await);
            }
            Some((cp.size, cp.chain_seq))
        }
    };
    let keys = vault.recent_keys(settings.key_window).await?;
    let last_time: Option<i64> = vault
        .client()
        .query_opt("SELECT time_ns FROM batches ORDER BY seq DESC LIMIT 1", &[])
        .await
        .map_err(chronos_vault::store::VaultError::from)?
        .map(|r| r.get(0));
    Ok(Restored { head, root, range, keys, last_signed, last_time: last_time.unwrap_or(0) as u64 })
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

/// The spine for a restored state.
pub fn spine(settings: &Settings, r: &Restored) -> Spine {
    let max_events = usize::try_from(settings.topology.max_events).unwrap_or(usize::MAX);
    Spine::new(vec![
        Box::new(Validate::new(settings.key_window, max_events, &r.keys)),
        Box::new(Sequence::new(&r.head)),
        Box::new(Timestamp::new(r.last_time)),
        Box::new(Chain::new(settings.hasher.clone(), r.head)),
        Box::new(Tree::new(settings.hasher.clone(), r.range.clone())),
    ])
}
