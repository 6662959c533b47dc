//! Signing checkpoints of the committed head.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chronos_ledger::{ChainHead, Checkpoint, Hash, NoteSigner, TreeHasher};
use chronos_vault::store::{Vault, VaultError};

use crate::{Metrics, Settings};

/// Heads of batches sequenced but not yet covered by a checkpoint: the
/// tree root after each, which the database does not store per batch.
#[derive(Debug)]
pub struct History {
    /// (seq, tree size, root, chain), ascending seq.
    entries: VecDeque<(u64, u64, Hash, Hash)>,
}

impl History {
    /// Starts from the restored head.
    pub fn new(head: ChainHead, root: Hash) -> History {
        History { entries: VecDeque::from([(head.seq, head.size, root, head.hash)]) }
    }

    pub fn push(&mut self, seq: u64, size: u64, root: Hash, chain: Hash) {
        self.entries.push_back((seq, size, root, chain));
    }

    /// The head after batch `seq`, dropping older entries.
    fn take_at(&mut self, seq: u64) -> Option<(u64, Hash, Hash)> {
        while self.entries.len() > 1 && self.entries.front().is_some_and(|e| e.0 < seq) {
            self.entries.pop_front();
        }
        self.entries.front().filter(|e| e.0 == seq).map(|e| (e.1, e.2, e.3))
    }
}

/// The checkpoint thread's state.
#[derive(Debug)]
pub struct Signer {
    origin: String,
    hasher: TreeHasher,
    signer: Arc<NoteSigner>,
    history: Arc<Mutex<History>>,
    metrics: Metrics,
    last: Option<(u64, u64)>,
    /// When the newest checkpoint was signed, ns since the epoch (0: none).
    signed_at: Arc<AtomicU64>,
    saved: std::path::PathBuf,
    epoch: u64,
    faults: chronos_faults::Faults,
    clock: Arc<chronos_time::TimeReader>,
    /// The newest checkpoint time signed (checkpoint times never go back).
    last_time: u64,
}

impl Signer {
    pub fn new(
        settings: &Settings,
        last: Option<(u64, u64)>,
        history: Arc<Mutex<History>>,
        metrics: Metrics,
        signed_at: Arc<AtomicU64>,
    ) -> Signer {
        Signer {
            origin: settings.origin.clone(),
            hasher: settings.hasher.clone(),
            signer: settings.signer.clone(),
            history,
            metrics,
            last,
            signed_at,
            saved: settings.checkpoint_file.clone(),
            epoch: settings.epoch,
            faults: settings.faults.clone(),
            clock: settings.clock.clone(),
            last_time: 0,
        }
    }

    /// Signs every `interval` until `stop`, then once more.
    pub async fn run(mut self, url: String, interval: Duration, stop: Arc<AtomicBool>) -> Result<(), VaultError> {
        let mut vault: Option<Vault> = None;
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            if vault.is_none() {
                match crate::restore::connect(&url, self.epoch).await {
                    Ok(v) => vault = Some(v),
                    Err(e) => tracing::warn!(error = %e, "checkpoint signer cannot reach the database"),
                }
            }
            if let Some(v) = vault.as_mut() {
                match self.sign_committed(v).await {
                    Ok(()) => {}
                    Err(e) if !e.is_transient() => {
                        let detail = serde_json::json!({ "reason": e.to_string() }).to_string();
                        let _ = v.audit("orchestrator", "checkpoint_refused", &detail).await;
                        tracing::error!(error = %e, "not signing; stopping the orchestrator");
                        return Err(e);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "checkpoint signing failed; retrying");
                        vault = None;
                    }
                }
            }
            if stopping {
                return Ok(());
            }
            let mut slept = Duration::ZERO;
            while slept < interval && !stop.load(Ordering::Relaxed) {
                let step = Duration::from_millis(50).min(interval - slept);
                tokio::time::sleep(step).await;
                slept += step;
            }
        }
    }

    async fn sign_committed(&mut self, vault: &mut Vault) -> Result<(), VaultError> {
        let (seq, chain, size) = match vault.head().await? {
            Some(h) => h,
            None => (0, chronos_ledger::chain::genesis(&self.hasher, &self.origin), 0),
        };
        if self.last == Some((size, seq)) {
            return Ok(());
        }
        let entry = self.history.lock().ok().and_then(|mut h| h.take_at(seq));
        let Some((h_size, root, h_chain)) = entry else {
            return Err(VaultError::Corrupt { seq, reason: "committed batch unknown to the sequencer".into() });
        };
        if (h_size, h_chain) != (size, chain) {
            return Err(VaultError::Corrupt {
                seq,
                reason: "committed chain or size differs from the sequenced one".into(),
            });
        }
        // Signed whatever the quorum (a final checkpoint must be): without
        // one it says so in its time source and uncertainty.
        let stamp = self.clock.stamp_always();
        let time = crate::stages::trusted(&stamp, &mut self.last_time)
            .map_err(|e| VaultError::Corrupt { seq, reason: e.to_string() })?;
        let now = crate::stages::now_ns();
        let cp = Checkpoint {
            origin: self.origin.clone(),
            size,
            root,
            hash: self.hasher.alg(),
            chain_seq: seq,
            chain_hash: chain,
            time,
        };
        let note = cp.sign(&self.signer).map_err(|e| VaultError::Corrupt { seq, reason: format!("signing: {e}") })?;
        // Outside the database first: a restore of the database to before
        // this checkpoint is then refused at start instead of forked.
        crate::saved::write(&self.saved, &note).map_err(|e| VaultError::Corrupt {
            seq,
            reason: format!("cannot save the checkpoint to {}: {e}", self.saved.display()),
        })?;
        if self.faults.check("checkpoint.before-store").is_err() {
            return Err(VaultError::Corrupt { seq, reason: "injected fault (checkpoint.before-store)".into() });
        }
        vault.store_checkpoint(size, seq, &note).await?;
        self.signed_at.store(now, Ordering::Relaxed);
        self.last = Some((size, seq));
        self.metrics.checkpoints.inc();
        tracing::debug!(seq, size, "checkpoint signed");
        Ok(())
    }
}
