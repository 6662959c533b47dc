//! The Chronos ledger formats, as specified in `spec/ledger.md`.
//!
//! This crate defines what makes a Chronos log tamper-evident, and nothing
//! else:
//!
//! * the log's hash function `H` ([`hash`]): BLAKE3 or SHA-256, optionally
//!   keyed, with RFC 6962 leaf/node domain separation;
//! * the global Merkle tree ([`tree`]): RFC 6962 roots, the compact range the
//!   sequencer keeps, inclusion and consistency proofs and their checks;
//! * batches and the batch chain ([`chain`]), which bind each batch's
//!   position, root and trusted time to all history before it;
//! * C2SP signed notes with Ed25519 keys ([`note`]), checkpoints
//!   ([`checkpoint`]) and offline tlog-proof files ([`proof`]).
//!
//! It does no I/O and has no async runtime: no files, sockets or databases,
//! and no clock (times are given to it). Services, the CLI and the verifier
//! build on it; a verifier written from the spec alone must agree with it.

pub mod chain;
pub mod checkpoint;
pub mod error;
pub mod hash;
pub mod note;
pub mod payload;
pub mod proof;
pub mod spec;
pub mod time_proof;
pub mod tree;

pub use chain::{BatchHeader, ChainHead, TimeNs, TimeSource, TrustedTime};
pub use checkpoint::Checkpoint;
pub use error::{ChainError, FormatError, KeyError, RangeError, VerifyError};
pub use hash::{Hash, HashAlg, HashKey, TreeHasher};
pub use note::{Note, NoteSigner, NoteVerifier};
pub use proof::ProofFile;
pub use time_proof::{ProvenTime, TimeProof};
pub use tree::{CompactRange, MemTree, NodeId, NodeSource, Span};
