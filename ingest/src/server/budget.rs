//! The body-memory budget (`max_inflight_bytes`): its unit, its size in
//! permits, and the answer when it is spent.

use axum::response::Response;

use super::Shared;
use super::response::unavailable;

/// KiB, rounded up: the unit of the body-memory budget.
pub(super) fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

/// Permits of the body-memory budget: two KiB more than the setting, as
/// each reservation rounds up to a KiB and the settings check promises
/// room for one body and its inflation.
pub(super) fn budget_kib(max_inflight_bytes: usize) -> usize {
    kib(max_inflight_bytes) as usize + 2
}

pub(super) fn overloaded(s: &Shared) -> Response {
    unavailable(
        s,
        &format!(
            "overloaded: {} MiB of request bodies are being read or decoded (ingest.max_inflight_bytes); retry",
            s.settings.max_inflight_bytes >> 20
        ),
    )
}
