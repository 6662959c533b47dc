//! Trusted time for Chronos, the side that does I/O.
//!
//! * [`service`]: the time service process. Each poll it asks every
//!   configured source (NTP servers at once, Roughtime servers one after
//!   the other with chained nonces) for the time, carries their
//!   intervals to one instant, selects with `chronos-quorum`'s rules,
//!   stores the round's evidence and the clock's floor in PostgreSQL, and
//!   only then publishes the agreement on the shared clock page
//!   (`chronos_ipc::clock`). A change between synchronized and not is an
//!   audit event.
//! * [`reader`]: what the orchestrator, ingest and the CLI read time with:
//!   the published agreement carried to now (quorum time), or, when no
//!   source is configured, the host kernel's clock and its maximum error
//!   (host time, never called quorum time).
//! * [`config`]: the validated settings of both.
//!
//! What it does not do: decide anything about time itself (selection, the
//! clock's rules and the evidence's format are `chronos-quorum`'s, without
//! I/O) or write the ledger (the orchestrator stamps batches).

pub mod config;
pub mod metrics;
mod ntp_client;
pub mod reader;
mod roughtime_client;
pub mod round;
pub mod service;
mod store;

pub use config::{Policy, Settings, Source, SourceKind};
pub use reader::{NoQuorum, Stamp, TimeReader};
