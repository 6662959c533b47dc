//! The records that travel the shared-memory rings of one Chronos host,
//! and the names and sizes of those rings.
//!
//! ```text
//! ingest[i] --in.i.h--> hasher[h] --hashed.h--> orchestrator --sequenced--> vault-writer
//!    ^                                                                          |
//!    +------------------------------ ack.i --------------------------------------+
//! ```
//!
//! Each record type has an encoder that writes into a caller-provided
//! buffer (a ring grant, so nothing is copied twice) and a decoder that
//! borrows from the ring. Decoders are strict: every length is checked
//! against the record's size, and an error names the field and offset.
//! A record that fails to decode was written by a buggy or foreign
//! process; the reader rejects it, logs it and leaves an audit event.
//!
//! What this crate does not do: any I/O, hashing of events, or ledger
//! rules (those live in `chronos-ledger`). Integers are little-endian:
//! records never leave the host.

mod codec;
mod records;
mod rings;

pub use codec::WireError;
pub use records::{
    Ack, Duplicate, EventMeta, Hashed, HashedRef, Ingest, IngestRef, Quarantined, Refused, Reply, Sequenced,
    SequencedRef, Status, TileNode, peek_reply, tag,
};
pub use rings::{Geometry, RingNames, Topology, instance_id};
