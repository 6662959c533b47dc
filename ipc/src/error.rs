//! Errors, grouped by who is at fault.

use std::io;

/// Opening, attaching to or reading a ring failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// The operating system refused (permissions, limits, missing segment).
    /// Usually worth retrying or fixing the environment.
    #[error("{context}: {source}")]
    Os { context: String, source: io::Error },
    /// The segment exists already (on create).
    #[error("ring {name} already exists")]
    Exists { name: String },
    /// No such segment.
    #[error("ring {name} does not exist")]
    NotFound { name: String },
    /// Another live process holds this role on the ring.
    #[error("ring {name} already has a live {role}")]
    Busy { name: String, role: &'static str },
    /// The segment was never fully initialized: its creator died while
    /// writing the header. Remove it with `remove_stale`.
    #[error("ring {name} was never fully initialized (its creator died); remove it with remove_stale")]
    Uninitialized { name: String },
    /// The segment is not a Chronos ring, or a different layout version.
    #[error("ring {name} is not compatible: {reason}")]
    Incompatible { name: String, reason: String },
    /// The segment belongs to another user or others may open it: another
    /// local user could read every record or inject records. Never used.
    #[error("ring {path} cannot be trusted: {reason}; remove it (it was not made by this user's Chronos)")]
    Untrusted { path: String, reason: String },
    /// The segment's contents break the ring's invariants. Stop and alert:
    /// something other than the ring code wrote to it.
    #[error("ring is corrupt: {reason}")]
    Corrupt { reason: String },
    /// Bad parameters from the caller.
    #[error("invalid ring parameter: {0}")]
    Invalid(String),
}

impl RingError {
    pub(crate) fn corrupt(reason: String) -> RingError {
        RingError::Corrupt { reason }
    }

    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn os(context: impl Into<String>) -> impl FnOnce(nix::Error) -> RingError {
        let context = context.into();
        move |e| RingError::Os { context, source: io::Error::from(e) }
    }
}

/// A push that did not happen. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// No room until the consumer catches up: back off (the caller maps this
    /// to 503 Retry-After, never to a drop).
    #[error("ring is full")]
    Full,
    /// The deadline passed while the ring stayed full.
    #[error("ring stayed full until the deadline")]
    Timeout,
    /// The record is larger than the ring's maximum record size.
    #[error("record of {len} bytes exceeds the ring's maximum of {max}")]
    TooLarge { len: usize, max: usize },
    /// The ring's shared state breaks its invariants: stop and alert.
    #[error("ring is corrupt: {0}")]
    Corrupt(String),
}
