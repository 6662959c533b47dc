//! `GET /v1/time`: the trusted interval now, optionally as a statement
//! signed with the log's key that a client can keep as evidence.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};

use crate::Shared;
use crate::error::ServeError;

/// The body of `/v1/time` (spec/bridge/time.schema.json).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TimeView {
    /// Whether this is quorum time (the configured sources agree).
    pub synchronized: bool,
    pub earliest_ns: u64,
    pub latest_ns: u64,
    pub midpoint_ns: u64,
    /// Half the interval's width, ns.
    pub uncertainty_ns: u64,
    pub earliest: String,
    pub latest: String,
    pub midpoint: String,
    /// What batches would be stamped with: `quorum:K/N:<evidence digest>`,
    /// `host` or `host-unsynchronized`.
    pub source: String,
    /// Why it is not quorum time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The signed statement, when asked for (`?signed=true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn rfc3339(ns: u64) -> String {
    ::time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| t.format(&::time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// The time now: quorum time, or the host clock and why it is not.
pub(crate) fn view(reader: &chronos_time::TimeReader) -> TimeView {
    let (stamp, reason) = match reader.quorum_now() {
        Ok(s) => (s, None),
        Err(why) => (chronos_time::reader::host_stamp(), Some(why)),
    };
    let i = stamp.interval;
    TimeView {
        synchronized: reason.is_none(),
        earliest_ns: i.earliest,
        latest_ns: i.latest,
        midpoint_ns: i.midpoint(),
        uncertainty_ns: i.radius(),
        earliest: rfc3339(i.earliest),
        latest: rfc3339(i.latest),
        midpoint: rfc3339(i.midpoint()),
        source: stamp.source,
        reason,
        note: None,
    }
}

/// The text of a signed time statement (spec/bridge.md): a first line no
/// checkpoint can have (a checkpoint's second line is a tree size), so
/// that the log's key never signs something that reads as both.
pub(crate) fn statement(origin: &str, v: &TimeView) -> String {
    format!(
        "chronos/time-statement@v1\norigin {origin}\nearliest {}\nlatest {}\nsource {}\nsynchronized {}\n",
        v.earliest_ns, v.latest_ns, v.source, v.synchronized
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TimeQuery {
    #[serde(default)]
    signed: bool,
}

pub(crate) async fn time(
    State(shared): State<Arc<Shared>>,
    q: Result<Query<TimeQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<TimeView>, ServeError> {
    let Query(q) = q.map_err(|e| ServeError::Rejected(e.body_text()))?;
    let mut v = view(&shared.time);
    if q.signed {
        let signer = shared.settings.time_signer.as_ref().ok_or_else(|| {
            ServeError::Rejected("this bridge does not sign time (bridge.sign_time is off)".into())
        })?;
        let origin = shared.settings.verifier.name().to_owned();
        let note = signer.sign(&statement(&origin, &v)).map_err(|e| ServeError::Corrupt(format!("signing: {e}")))?;
        v.note = Some(note);
    }
    Ok(Json(v))
}
