//! One writer per log, enforced by PostgreSQL.
//!
//! Two mechanisms, because either alone leaves a hole:
//!
//! * a **session advisory lock** (`pg_try_advisory_lock`), taken by
//!   `chronos up` on a connection it keeps for its whole life. A second
//!   instance pointed at the same database cannot take it and refuses to
//!   start, naming the holder recorded in `writer_lease`;
//! * an **epoch** (a fencing token) in `writer_lease`, incremented by each
//!   instance that takes the lock and handed to its services. Every commit
//!   of batches and checkpoints re-reads the row `FOR SHARE` inside its own
//!   transaction ([`check`]) and refuses to commit under another epoch. A
//!   session lock vanishes with its connection (a network cut, a killed
//!   backend); if another instance took over meanwhile, the first one's
//!   writers are fenced out of every later commit rather than trusting that
//!   they noticed in time. An instance that took the lock waits, in its
//!   `UPDATE`, for commits already running under the old epoch to finish.
//!
//! This module does not decide what an instance does once fenced: the
//! callers stop (the vault writer and the checkpoint signer refuse, `up`
//! stops its services).

use tokio_postgres::GenericClient;

use crate::store::VaultError;

// Arbitrary constant naming the writer lock among advisory locks ("chronosw").
// Advisory locks are per database, as a log is.
const LOCK_KEY: i64 = 0x6368_726f_6e6f_7377;

/// Why the lease could not be taken or kept.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// Another instance holds the lock now.
    #[error(
        "another Chronos instance is writing this log: {holder} (since {since}); stop it first, or point this one at another database"
    )]
    Held { holder: String, since: String },
    /// The lock was lost (its connection closed) and another instance took
    /// the log meanwhile: this instance must stop writing.
    #[error("this instance lost the log's writer lease (epoch {ours}) to {holder} (epoch {found}); stopping")]
    Lost { ours: u64, found: u64, holder: String },
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
}

/// Who an instance is, as `writer_lease.holder` records it.
pub fn describe_holder(data_dir: &std::path::Path) -> String {
    let host = hostname();
    format!("pid {} on host {host}, data directory {}", std::process::id(), data_dir.display())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map_or_else(|_| "?".into(), |h| h.trim().to_owned())
}

async fn holder(client: &impl GenericClient) -> Result<(u64, String, String), tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT epoch, holder, to_char(acquired_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
             FROM writer_lease WHERE id = 1",
            &[],
        )
        .await?;
    Ok((row.get::<_, i64>(0) as u64, row.get(1), row.get(2)))
}

/// Takes the log's lock on `client` (held until that connection closes)
/// and a new epoch, recording `who`. Returns the epoch.
pub async fn acquire(client: &impl GenericClient, who: &str) -> Result<u64, LeaseError> {
    let got: bool = client.query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY]).await?.get(0);
    if !got {
        let (_, holder, since) = holder(client).await?;
        return Err(LeaseError::Held { holder, since });
    }
    // Waits for commits running under the previous epoch (they hold the row
    // FOR SHARE); every later one sees the new epoch and refuses.
    let row = client
        .query_one(
            "UPDATE writer_lease SET epoch = epoch + 1, holder = $1, acquired_at = now() WHERE id = 1 RETURNING epoch",
            &[&who],
        )
        .await?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// After the lock's connection was lost: takes the lock again on a new
/// connection, keeping `epoch` if nobody took the log meanwhile.
/// `Ok(false)`: the epoch is still ours but the lock is still held, most
/// likely by our own old session that the server has not reaped yet; try
/// again (if another instance really holds it, it changed the epoch, and
/// the next try says so).
pub async fn reacquire(client: &impl GenericClient, epoch: u64) -> Result<bool, LeaseError> {
    let got: bool = client.query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY]).await?.get(0);
    let (found, holder, _) = holder(client).await?;
    if found != epoch {
        if got {
            client.execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY]).await?;
        }
        return Err(LeaseError::Lost { ours: epoch, found, holder });
    }
    Ok(got)
}

/// On the lock's own connection: fails with [`LeaseError::Lost`] if
/// another instance took the log (a connection that died silently, and
/// whose lock the server released, is caught this way too).
pub async fn still_ours(client: &impl GenericClient, epoch: u64) -> Result<(), LeaseError> {
    let (found, holder, _) = holder(client).await?;
    if found != epoch {
        return Err(LeaseError::Lost { ours: epoch, found, holder });
    }
    Ok(())
}

/// Inside a transaction that is about to commit ledger rows: refuses
/// unless the lease is still at `epoch`. The row stays share-locked until
/// the transaction ends, so no new holder can slip in before the commit.
pub async fn check(tx: &impl GenericClient, epoch: u64) -> Result<(), VaultError> {
    let row = tx.query_one("SELECT epoch, holder FROM writer_lease WHERE id = 1 FOR SHARE", &[]).await?;
    let found = row.get::<_, i64>(0) as u64;
    if found != epoch {
        return Err(VaultError::Fenced { ours: epoch, found, holder: row.get(1) });
    }
    Ok(())
}
