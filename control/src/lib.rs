//! The Chronos control plane's protocol core, without I/O: the log's
//! modes and the one table of their transitions ([`mode`]), signed
//! control events with the operators' keys and roles ([`event`]), the
//! records that write the log's operation into the log itself and their
//! replay ([`record`]), and the circuit breaker around the vault's
//! commits ([`breaker`]).
//!
//! What it does not do: any I/O. The orchestrator owns a
//! [`mode::Machine`], feeds it what it observes and the signed events it
//! is handed over its control socket, and sequences the [`record`]s;
//! `chronos verify` replays the records it reads from PostgreSQL.

pub mod breaker;
pub mod event;
pub mod mode;
pub mod record;

pub use mode::{Event, Machine, Mode, Outcome, transition};
