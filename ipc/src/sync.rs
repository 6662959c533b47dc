//! Atomics and fences: std's, or loom's when the crate is built with
//! `RUSTFLAGS="--cfg loom"` so that the ring algorithm can be model-checked.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
