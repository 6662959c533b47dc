//! The Chronos vault: the ledger's storage layer in PostgreSQL.
//!
//! * [`schema`]: versioned migration files (`migrations/NNNN_name.sql`,
//!   embedded in the binary) and [`schema::migrate`], run at every start;
//! * [`store`]: committing batches in one transaction by binary COPY, and
//!   rebuilding `logs` after a PostgreSQL crash emptied it;
//! * [`tiles`]: the tree's hashes as C2SP tiles, and proofs from them;
//! * [`read`]: the read path (checkpoints, tiles, entry bundles, events,
//!   proofs) from logged tables only, for the bridge and `chronos prove`;
//! * [`lease`]: one writer per log (an advisory lock and a fencing epoch
//!   that every commit checks).
//!
//! Users: the vault-writer service (commits, rebuild, audit events), the
//! orchestrator (restoring the sequencer's state from batches, tiles and
//! checkpoints) and `chronos up` (migrations at start).
//!
//! It does not define what the stored bytes mean: that is the `ledger` crate
//! and spec/ledger.md. It never reads the ledger for verification: the
//! verifier reads PostgreSQL on its own, as an outsider would.

pub mod audit;
pub mod lease;
pub mod read;
pub mod schema;
pub mod store;
pub mod tiles;
