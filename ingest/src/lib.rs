//! The ingest service: Chronos's HTTP front door.
//!
//! So far this crate holds [`body`]: turning a `POST /ingest` request body,
//! as Vector's `http` sink or any client sends it, into the exact bytes of
//! each event (the ledger's leaf data), with every rejection naming what is
//! wrong and where. The axum server that writes events into the rings and
//! answers only after the commit comes with the rest of the pipeline.
//!
//! It does not hash, sequence or store anything, and it never
//! re-serializes an event: an event is the bytes the client sent.

pub mod body;
