//! Following the log: new checkpoints are read as they are stored,
//! checked (signature, origin, consistency with the one served before)
//! and only then served and announced on `/v1/stream`; time ticks too.

use std::sync::{Arc, RwLock};

use chronos_ledger::Checkpoint;
use tokio::sync::{broadcast, watch};

use crate::Shared;
use crate::error::ServeError;

/// A checkpoint that passed every check.
#[derive(Debug, Clone)]
pub(crate) struct Served {
    pub checkpoint: Checkpoint,
    pub note: String,
}

/// The newest checked checkpoint and the stream's channel.
#[derive(Debug)]
pub(crate) struct Follower {
    latest: RwLock<Option<Arc<Served>>>,
    /// The last `checkpoints.id` looked at (checked or refused).
    seen: RwLock<i64>,
    /// Messages for `/v1/stream` subscribers, as JSON text.
    pub stream: broadcast::Sender<Arc<str>>,
    /// Each newly checked checkpoint, for gRPC watchers.
    pub checkpoints: broadcast::Sender<Arc<Served>>,
    /// The log's mode, as its newest committed control record says.
    mode: RwLock<&'static str>,
}

impl Follower {
    pub fn new(settings: &crate::Settings) -> Follower {
        let (stream, _) = broadcast::channel(settings.stream.queue.max(1));
        let (checkpoints, _) = broadcast::channel(settings.stream.queue.max(1));
        Follower { latest: RwLock::new(None), seen: RwLock::new(0), stream, checkpoints, mode: RwLock::new("active") }
    }

    /// The log's mode, as its newest committed control record says.
    pub fn mode(&self) -> &'static str {
        *self.mode.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest checked checkpoint, if any.
    pub fn latest(&self) -> Option<Arc<Served>> {
        self.latest.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, s: Served) -> Arc<Served> {
        let s = Arc::new(s);
        *self.latest.write().unwrap_or_else(|p| p.into_inner()) = Some(s.clone());
        s
    }

    fn seen(&self) -> i64 {
        *self.seen.read().unwrap_or_else(|p| p.into_inner())
    }

    fn saw(&self, id: i64) {
        *self.seen.write().unwrap_or_else(|p| p.into_inner()) = id;
    }
}

/// The stream's checkpoint message.
pub(crate) fn checkpoint_message(s: &Served) -> String {
    serde_json::json!({
        "type": "checkpoint",
        "tree_size": s.checkpoint.size,
        "root": s.checkpoint.root.to_base64(),
        "note": s.note,
    })
    .to_string()
}

/// Looks for new checkpoints every `settings.poll` until `quit`.
pub(crate) async fn run(shared: Arc<Shared>, mut quit: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(shared.settings.poll);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = quit.changed() => return,
        }
        match step(&shared).await {
            Ok(()) => {
                if failing {
                    tracing::info!("reading checkpoints again");
                }
                failing = false;
            }
            // Logged once per outage, not at every poll.
            Err(e) if !failing => {
                tracing::warn!(error = %e, "cannot read new checkpoints");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

async fn step(shared: &Shared) -> Result<(), ServeError> {
    let client = shared.db.client().await?;
    let rows = if shared.follow.seen() == 0 {
        // At start: the newest one; later ones are checked against it.
        chronos_vault::read::newest_checkpoint(&*client).await?.into_iter().collect()
    } else {
        chronos_vault::read::checkpoints_after(&*client, shared.follow.seen(), 256).await?
    };
    if !rows.is_empty() {
        // Every change of mode is a leaf: it can only show with a new checkpoint.
        let mode = chronos_vault::read::recorded_mode(&*client).await?.unwrap_or("active");
        *shared.follow.mode.write().unwrap_or_else(|p| p.into_inner()) = mode;
        for m in chronos_control::Mode::ALL {
            let label = crate::metrics::ModeLabel { mode: m.name().into() };
            shared.metrics.log_mode.get_or_create(&label).set(i64::from(m.name() == mode));
        }
    }
    for row in rows {
        match check(shared, &client, &row).await {
            Ok(Some(served)) => {
                let msg: Arc<str> = checkpoint_message(&served).into();
                tracing::debug!(tree_size = served.checkpoint.size, "serving a new checkpoint");
                let served = shared.follow.set(served);
                shared.metrics.checkpoints_served.inc();
                // No subscriber is not an error.
                let _ = shared.follow.stream.send(msg);
                let _ = shared.follow.checkpoints.send(served);
            }
            Ok(None) => {}
            Err(ServeError::Corrupt(reason)) => {
                shared.metrics.checkpoints_refused.inc();
                tracing::error!(
                    id = row.id,
                    tree_size = row.tree_size,
                    reason,
                    "refusing to serve a stored checkpoint"
                );
            }
            Err(e) => return Err(e),
        }
        shared.follow.saw(row.id);
    }
    Ok(())
}

/// Checks a stored checkpoint against the verifier key and the one served
/// now. `Ok(None)`: nothing new to serve (an older or equal tree).
async fn check(
    shared: &Shared,
    client: &tokio_postgres::Client,
    row: &chronos_vault::read::StoredCheckpoint,
) -> Result<Option<Served>, ServeError> {
    let (cp, _) = Checkpoint::open(row.note.as_bytes(), &shared.settings.verifier)
        .map_err(|e| ServeError::Corrupt(format!("does not verify with {}: {e}", shared.settings.verifier)))?;
    if cp.size != row.tree_size {
        return Err(ServeError::Corrupt(format!("its note says size {}, its row {}", cp.size, row.tree_size)));
    }
    let served = Served { checkpoint: cp, note: row.note.clone() };
    let Some(prev) = shared.follow.latest() else { return Ok(Some(served)) };
    let (old, new) = (&prev.checkpoint, &served.checkpoint);
    if new.origin != old.origin {
        return Err(ServeError::Corrupt(format!("origin {:?}, not {:?}", new.origin, old.origin)));
    }
    if new.size < old.size || (new.size == old.size && new.root == old.root) {
        return Ok(None);
    }
    if new.size == old.size {
        return Err(ServeError::Corrupt(format!("a second root for tree size {}: the log forked", new.size)));
    }
    let proof = chronos_vault::read::consistency(client, &shared.settings.hasher, old.size, new.size).await?;
    chronos_ledger::tree::verify_consistency(&shared.settings.hasher, old.size, new.size, &old.root, &new.root, &proof)
        .map_err(|e| ServeError::Corrupt(format!("not consistent with the checkpoint of size {}: {e}", old.size)))?;
    Ok(Some(served))
}

/// Sends a time tick to the stream's subscribers every `stream.tick`.
pub(crate) async fn tick(shared: Arc<Shared>, mut quit: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(shared.settings.stream.tick);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = quit.changed() => return,
        }
        if shared.follow.stream.receiver_count() == 0 {
            continue;
        }
        let mut v = serde_json::to_value(crate::query::view(&shared.time)).unwrap_or_default();
        v["type"] = "time".into();
        let _ = shared.follow.stream.send(v.to_string().into());
    }
}
