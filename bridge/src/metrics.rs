//! The bridge's metrics (`chronos_bridge_*`), served on its own metrics
//! address, never on the public HTTP port.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabel {
    pub method: String,
    pub code: String,
}

/// Cheap to clone: every metric is a shared handle.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    pub ntp_answers: Counter,
    pub ntp_unsynchronized: Counter,
    pub ntp_rate_limited: Counter,
    pub ntp_dropped: Family<ReasonLabel, Counter>,
    pub roughtime_answers: Counter,
    pub roughtime_batches: Counter,
    pub roughtime_dropped: Family<ReasonLabel, Counter>,
    pub requests: Family<RouteLabel, Counter>,
    pub grpc_requests: Family<GrpcLabel, Counter>,
    pub tls_handshake_failures: Counter,
    pub checkpoints_served: Counter,
    pub checkpoints_refused: Counter,
    pub stream_clients: Gauge,
    pub stream_closed_slow: Counter,
    /// 1 for the log's mode as its newest committed record says.
    pub log_mode: Family<ModeLabel, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabel {
    pub mode: String,
}

impl Metrics {
    pub fn register(&self, r: &mut Registry) {
        let r = r.sub_registry_with_prefix("chronos_bridge");
        r.register("ntp_answers", "NTP requests answered with time (synchronized or not)", self.ntp_answers.clone());
        r.register(
            "ntp_unsynchronized",
            "NTP answers that said unsynchronized (no quorum)",
            self.ntp_unsynchronized.clone(),
        );
        r.register("ntp_rate_limited", "NTP requests answered with kiss-o'-death RATE", self.ntp_rate_limited.clone());
        r.register("ntp_dropped", "NTP packets dropped unanswered, by reason", self.ntp_dropped.clone());
        r.register("roughtime_answers", "Roughtime requests answered", self.roughtime_answers.clone());
        r.register(
            "roughtime_batches",
            "Roughtime batches signed (one signature each)",
            self.roughtime_batches.clone(),
        );
        r.register(
            "roughtime_dropped",
            "Roughtime requests dropped unanswered, by reason",
            self.roughtime_dropped.clone(),
        );
        r.register("requests", "HTTP requests by route and status", self.requests.clone());
        r.register("grpc_requests", "gRPC calls by method and status code", self.grpc_requests.clone());
        r.register(
            "tls_handshake_failures",
            "TLS handshakes on the HTTP port that failed or timed out",
            self.tls_handshake_failures.clone(),
        );
        r.register("checkpoints_served", "Checkpoints checked and served", self.checkpoints_served.clone());
        r.register(
            "log_mode",
            "1 for the log's mode as its newest committed control record says (reads are served in every mode)",
            self.log_mode.clone(),
        );
        r.register(
            "checkpoints_refused",
            "Stored checkpoints that failed a check and were not served",
            self.checkpoints_refused.clone(),
        );
        r.register(
            "stream_clients",
            "Open streams: /v1/stream WebSockets and gRPC watches (bridge.stream_max_clients at most)",
            self.stream_clients.clone(),
        );
        r.register(
            "stream_closed_slow",
            "/v1/stream clients and gRPC checkpoint watchers closed for falling behind",
            self.stream_closed_slow.clone(),
        );
    }
}
