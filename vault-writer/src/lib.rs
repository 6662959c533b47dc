//! The Chronos vault writer: everything that writes the ledger into PostgreSQL.
//!
//! Today this crate owns the database schema: versioned migration files
//! (`migrations/NNNN_name.sql`, embedded in the binary) and [`schema::migrate`],
//! which `chronos init` and every service run at start. The micro-batching
//! binary-COPY writer joins it in a later change.
//!
//! It does not define what the stored bytes mean: that is the `ledger` crate
//! and spec/ledger.md. It never reads the ledger for verification: the
//! verifier reads PostgreSQL on its own, as an outsider would.

pub mod schema;
