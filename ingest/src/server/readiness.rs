//! Readiness: whether the pipeline can commit now (vault writer heartbeat,
//! hashers, orchestrator, refusals), and the `/readyz` route.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::Shared;
use super::response::unavailable;

/// Why the pipeline cannot commit now.
pub(super) fn not_ready(s: &Shared) -> Option<String> {
    if let Some(reason) = s.refusal.lock().ok().and_then(|g| g.clone()) {
        return Some(format!("refusing to write: {reason}"));
    }
    let status = s.status.lock().ok().and_then(|g| *g);
    match status {
        None => return Some("no heartbeat from the vault writer yet".into()),
        Some((at, _)) if at.elapsed() > Duration::from_millis(1500) => {
            return Some(format!("no heartbeat from the vault writer for {:.1} s", at.elapsed().as_secs_f64()));
        }
        Some((_, st)) if !st.db_ok => return Some("PostgreSQL is unreachable".into()),
        Some((_, st)) if !st.upstream_ok => return Some("the orchestrator is not running".into()),
        Some(_) => {}
    }
    if !s.hashers_alive.load(Ordering::Relaxed) {
        return Some("no hasher is running".into());
    }
    if !s.orchestrator_ready.load(Ordering::Relaxed) {
        return Some("the orchestrator is not sequencing (starting, or refusing: see its log and audit_events)".into());
    }
    None
}

/// Why writes are refused now: the pipeline is not ready, or trusted
/// time is missing under the refuse policy.
pub(super) fn not_serving(s: &Shared) -> Option<String> {
    not_ready(s).or_else(|| s.settings.time_gate.as_ref().and_then(|g| g.check()))
}

pub(super) async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    match not_serving(&s) {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(reason) => unavailable(&s, &reason),
    }
}

/// Whether `file` names a live process (a file left by a killed process
/// names a dead pid).
pub(super) fn announced_alive(file: &std::path::Path) -> bool {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
}
