//! Inter-process communication for Chronos's pipeline, knowing nothing about
//! ledgers.
//!
//! * **Rings** ([`ring`]): single-producer single-consumer rings of
//!   variable-length records in POSIX shared memory. Payloads are written
//!   in place and read in place (borrowed slices, batched polls); a
//!   per-record commit marker means a reader never sees a torn record, even
//!   when the writer is killed mid-write; readers sleep on a futex and
//!   writers get backpressure when a ring is full. [`set`] combines rings
//!   into the pipeline's many-to-many topology.
//! * **The published clock** ([`clock`]): a seqlock page through which
//!   the time service publishes the trusted clock's state to every process
//!   of the host, and the kernel clock's own state (`adjtimex`).
//! * **Inherited sockets** ([`inherit`]): the listening socket a supervisor
//!   binds once and hands to the processes it starts.
//!
//! What it does not do: interpret payloads, persist anything beyond the
//! life of the host (segments live in /dev/shm), or remove segments
//! implicitly. All `unsafe` code of Chronos lives in this crate, in `sys`,
//! the record accessors of `ring` and `inherit`, each block with a
//! `// SAFETY:` comment; each atomic names the operation it pairs with.
//!
//! The ring algorithm (`core`) is written against a small memory trait so
//! that `RUSTFLAGS="--cfg loom" cargo test -p chronos-ipc --lib` checks it
//! under the loom model checker.

mod core;
pub mod error;
mod layout;
mod sync;

#[cfg(not(loom))]
pub mod clock;
#[cfg(not(loom))]
pub mod inherit;
#[cfg(not(loom))]
pub mod ring;
#[cfg(not(loom))]
pub mod set;
#[cfg(not(loom))]
mod sys;

#[cfg(all(test, loom))]
mod loom_tests;

pub use error::{PushError, RingError};
#[cfg(not(loom))]
pub use ring::{Consumer, Producer, Record};
#[cfg(not(loom))]
pub use set::{Distributor, RingSet};
