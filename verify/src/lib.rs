//! Independent verification of a Chronos ledger stored in PostgreSQL.
//!
//! The verifier reads the tables with plain SQL (binary `COPY`) and checks
//! them with the ledger formats of `chronos-ledger` alone: it shares no code
//! with the services that wrote them, so it checks the data the way an
//! outsider would. It recomputes every leaf hash from the stored bytes,
//! every batch root, the chain, the global tree at every stored checkpoint
//! and every checkpoint signature; it checks the UNLOGGED `logs` table and
//! the canonical batch payloads against each other; and, given a checkpoint
//! saved earlier, that today's log extends it; and that every batch stamped
//! with quorum time is what its round's evidence (`time_rounds`, checked
//! with `chronos-quorum`'s evidence format) allows.
//!
//! It does not write to the database, repair anything, or trust anything
//! it reads except through the key it is given (or, failing that, the key
//! recorded with the log, which the report says). It does not check the
//! `tiles` table: proofs built from tiles are checked when they are made
//! (`chronos prove`) and by whoever receives them.
//!
//! Tampering is a finding in the [`Report`], with its kind and place; an
//! [`Error`] means the verification could not be done at all. `logs` rows
//! missing because PostgreSQL's crash recovery emptied the UNLOGGED table
//! and the vault writer is restoring it from the batches are not findings:
//! with no finding, the status is then [`Status::IntactLogsIncomplete`]
//! and the report says which leaves are pending ([`LogsRebuild`]).

mod copy;
pub mod engine;
pub mod report;
mod source;
mod time;

pub use copy::CopyError;
pub use engine::{
    BatchRow, CheckpointRow, Identity, LogRow, LogsRebuildRow, NoProgress, Options, Progress, Streams, run,
};
pub use report::{Finding, Kind, LogsRebuild, RebuildCause, Report, Status, Summary};
pub use source::{BATCHES_COPY, CHECKPOINTS_COPY, LOGS_COPY};

/// Why a verification could not be done (the command exits with 2).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// PostgreSQL cannot be reached.
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(#[source] tokio_postgres::Error),
    /// A query failed.
    #[error("reading {what}: {source}")]
    Database {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    /// A table's rows could not be read.
    #[error("reading {what}: {reason}")]
    Read { what: &'static str, reason: String },
    /// The database holds no log.
    #[error("the database holds no Chronos log: {0}")]
    NoLog(String),
    /// The log's identity row cannot be used.
    #[error("the log's identity: {0}")]
    Identity(String),
    /// No key to trust.
    #[error("no trusted key: {0}")]
    NoKey(String),
    /// The key is for another log.
    #[error("the database holds the log {found:?}, but the trusted key is for {expected:?}")]
    OtherLog { found: String, expected: String },
    /// The hash key of a keyed log is missing or wrong.
    #[error("hash key: {0}")]
    HashKey(String),
    /// The checkpoint given with `--from-checkpoint` cannot be trusted.
    #[error("the saved checkpoint: {0}")]
    SavedCheckpoint(String),
    /// PostgreSQL's binary COPY stream is malformed.
    #[error(transparent)]
    Copy(#[from] CopyError),
    /// The runtime could not start.
    #[error("starting the reader threads: {0}")]
    Runtime(#[from] std::io::Error),
}

/// Verifies the log in the database at `url`.
pub fn verify_database(url: &str, opts: &Options, progress: &dyn Progress) -> Result<Report, Error> {
    let (identity, streams) = source::open(url)?;
    let mut report = run(&identity, opts, streams, progress)?;
    let times = time::check(url, report.summary.batches)?;
    report.summary.quorum_batches = times.quorum_batches;
    if !times.findings.is_empty() {
        report.findings_total += times.findings.len() as u64;
        report.findings.extend(times.findings);
        report.findings.truncate(report::MAX_FINDINGS);
        report.first = report.first.or_else(|| report.findings.first().cloned());
        report.status = Status::Tampered;
    }
    Ok(report)
}
