//! The Chronos vault writer: everything that writes the ledger into PostgreSQL.
//!
//! * [`schema`]: versioned migration files (`migrations/NNNN_name.sql`,
//!   embedded in the binary) and [`schema::migrate`], run at every start;
//! * [`payload`]: the canonical, compressed payload of a batch, from which
//!   the UNLOGGED `logs` table can always be rebuilt;
//! * [`store`]: committing batches in one transaction by binary COPY, and
//!   rebuilding `logs` after a PostgreSQL crash emptied it;
//! * [`tiles`]: the tree's hashes as C2SP tiles, and proofs from them.
//!
//! The micro-batching service loop around `store` comes with the pipeline.
//!
//! It does not define what the stored bytes mean: that is the `ledger` crate
//! and spec/ledger.md. It never reads the ledger for verification: the
//! verifier reads PostgreSQL on its own, as an outsider would.

pub mod payload;
pub mod schema;
pub mod store;
pub mod tiles;
