//! The Chronos control plane's protocol core, without I/O: the log's
//! modes and the one table of their transitions ([`mode`]), and signed
//! control events with the operators' keys and roles ([`event`]), and the
//! circuit breaker around the vault's commits ([`breaker`]).
//!
//! What it does not do (yet): store the key registry or the events
//! (PostgreSQL, the ledger), submit events (`chronos control`), or drive
//! the services. The orchestrator will own the
//! [`mode::Machine`] of its log and apply to it the events it observes
//! (time quorum, the vault's circuit breaker) and the signed control
//! events it accepts; ingest, the bridge and `/readyz` will answer by the
//! mode. Until then no service reads it.

pub mod breaker;
pub mod event;
pub mod mode;

pub use mode::{Event, Machine, Mode, Outcome, transition};
