//! The metrics served on `/metrics`, and that route.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::Shared;
use super::budget::budget_kib;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct CodeLabel {
    pub(super) code: u16,
}

/// Metrics served on `/metrics`.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub(super) responses: Family<CodeLabel, Counter>,
    pub(super) events: Counter,
    pub(super) bytes: Counter,
    pub(super) ack_seconds: Histogram,
    inflight_bytes: Gauge,
    pub(super) tls_handshake_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            responses: Family::default(),
            events: Counter::default(),
            bytes: Counter::default(),
            ack_seconds: Histogram::new([0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]),
            inflight_bytes: Gauge::default(),
            tls_handshake_failures: Counter::default(),
        }
    }
}

impl Metrics {
    pub fn register(&self, r: &mut Registry) {
        r.register("chronos_ingest_responses", "POST /ingest answers by status code", self.responses.clone());
        r.register("chronos_ingest_events", "Events acknowledged (committed)", self.events.clone());
        r.register(
            "chronos_ingest_inflight_bytes",
            "Body memory reserved now (ingest.max_inflight_bytes is the most), KiB granularity",
            self.inflight_bytes.clone(),
        );
        r.register(
            "chronos_ingest_tls_handshake_failures",
            "TLS handshakes that failed or timed out (no certificate, an untrusted one, a stalled client)",
            self.tls_handshake_failures.clone(),
        );
        r.register("chronos_ingest_event_bytes", "Event bytes acknowledged", self.bytes.clone());
        r.register("chronos_ingest_ack_seconds", "Time from a body's arrival to its commit", self.ack_seconds.clone());
    }
}

pub(super) async fn metrics_text(State(s): State<Arc<Shared>>) -> Response {
    let total = budget_kib(s.settings.max_inflight_bytes);
    s.metrics.inflight_bytes.set((total.saturating_sub(s.budget.available_permits()) as i64) * 1024);
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &s.registry).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], out).into_response()
}
