//! Versioned, forward-only schema migrations.
//!
//! Migrations are SQL files compiled into the binary and applied in order,
//! all pending ones in one transaction under an advisory lock, so concurrent
//! starts are safe and a failed migration leaves the database unchanged. Each
//! applied migration is recorded with the SHA-256 of its text; a recorded
//! migration whose text has since changed, or a database newer than this
//! binary, stops the start with an error instead of guessing. Migrations
//! never drop or truncate (a unit test enforces it).

use sha2::{Digest as _, Sha256};
use tokio_postgres::Client;

/// One migration file.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Version, from 1, consecutive.
    pub version: i32,
    /// Short name (the file name after the number).
    pub name: &'static str,
    /// The SQL.
    pub sql: &'static str,
}

impl Migration {
    fn checksum(&self) -> Vec<u8> {
        Sha256::digest(self.sql.as_bytes()).to_vec()
    }
}

/// Every migration this binary knows, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "ledger", sql: include_str!("../migrations/0001_ledger.sql") },
    Migration { version: 2, name: "ingest_keys", sql: include_str!("../migrations/0002_ingest_keys.sql") },
    Migration {
        version: 3,
        name: "uncompressed_storage",
        sql: include_str!("../migrations/0003_uncompressed_storage.sql"),
    },
    Migration {
        version: 4,
        name: "writer_lease_and_logs_rebuild",
        sql: include_str!("../migrations/0004_writer_lease_and_logs_rebuild.sql"),
    },
    Migration { version: 5, name: "time_evidence", sql: include_str!("../migrations/0005_time_evidence.sql") },
    Migration { version: 6, name: "control_log", sql: include_str!("../migrations/0006_control_log.sql") },
    Migration { version: 7, name: "quarantine", sql: include_str!("../migrations/0007_quarantine.sql") },
];

/// The schema version this binary writes.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

// Arbitrary constant naming the migration lock among advisory locks ("chronosm").
const LOCK_KEY: i64 = 0x6368_726f_6e6f_736d;

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The database failed or could not be reached; retry later.
    #[error("database error while migrating: {0}")]
    Database(#[from] tokio_postgres::Error),
    /// The database was migrated by a newer Chronos; refuse to touch it.
    #[error("database schema version {found} is newer than this binary supports ({supported}); upgrade chronos")]
    NewerSchema { found: i32, supported: i32 },
    /// An applied migration's text differs from this binary's: the schema in
    /// the database is not the one this binary was built for.
    #[error(
        "migration {version} ({name}) was applied with different contents; the database does not match this binary's schema"
    )]
    Changed { version: i32, name: String },
}

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions applied by this call, in order (empty when up to date).
    pub applied: Vec<i32>,
    /// Schema version afterwards.
    pub version: i32,
}

/// Brings the schema up to date (see the module docs).
pub async fn migrate(client: &mut Client) -> Result<MigrationReport, SchemaError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS chronos_schema_migrations (
            version    integer     PRIMARY KEY,
            name       text        NOT NULL,
            sha256     bytea       NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let rows = tx.query("SELECT version, name, sha256 FROM chronos_schema_migrations ORDER BY version", &[]).await?;
    let mut current = 0;
    for row in rows {
        let (version, name, sum): (i32, String, Vec<u8>) = (row.get(0), row.get(1), row.get(2));
        let Some(known) = MIGRATIONS.iter().find(|m| m.version == version) else {
            return Err(SchemaError::NewerSchema { found: version, supported: latest_version() });
        };
        if known.checksum() != sum {
            return Err(SchemaError::Changed { version, name });
        }
        current = current.max(version);
    }
    let mut applied = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        tx.batch_execute(m.sql).await?;
        tx.execute(
            "INSERT INTO chronos_schema_migrations (version, name, sha256) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &m.checksum()],
        )
        .await?;
        applied.push(m.version);
    }
    // If we crash before this commit, nothing above happened: DDL is
    // transactional in PostgreSQL, and the next start applies it all again.
    tx.commit().await?;
    Ok(MigrationReport { applied, version: latest_version().max(current) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1, "{}", m.name);
        }
    }

    #[test]
    fn migrations_are_never_destructive() {
        for m in MIGRATIONS {
            let upper = m.sql.to_uppercase();
            let code: String = upper.lines().map(|l| l.split("--").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
            for word in ["DROP ", "TRUNCATE", "DELETE "] {
                assert!(!code.contains(word), "migration {} contains {word:?}", m.version);
            }
        }
    }
}
