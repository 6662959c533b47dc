//! The ingest service: Chronos's HTTP front door.
//!
//! * [`body`]: turning a `POST /ingest` request body, as Vector's `http`
//!   sink or any client sends it, into the exact bytes of each event (the
//!   ledger's leaf data), with every rejection naming what is wrong and where;
//! * [`server`]: the HTTP/1.1 server (axum routes on hyper). It writes each
//!   accepted body into a hasher's ring and answers only after the vault
//!   writer reports the batch committed, so a 200 always means "in
//!   PostgreSQL";
//! * [`limit`]: the listener that caps open connections.
//!
//! It does not hash, sequence or store anything, and it never
//! re-serializes an event: an event is the bytes the client sent.

pub mod body;
pub mod limit;
pub mod server;
