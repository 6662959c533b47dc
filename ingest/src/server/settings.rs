//! The validated settings of one ingest process.

use std::sync::Arc;
use std::time::Duration;

use chronos_wire::{RingNames, Topology};

use crate::body::Limits;

/// Validated settings of one ingest process.
#[derive(Debug, Clone)]
pub struct Settings {
    pub names: RingNames,
    pub topology: Topology,
    /// This process's slot, `0..topology.ingests`.
    pub slot: u16,
    pub limits: Limits,
    /// Bearer tokens accepted on `POST /ingest` (none: no authentication).
    /// Each is one client identity for the idempotency key.
    pub tokens: chronos_tls::Tokens,
    /// TLS (with client certificates when its configuration asks for
    /// them); `None`: plain HTTP.
    pub tls: Option<Arc<chronos_tls::rustls::ServerConfig>>,
    /// How long a request waits for its commit before answering 503.
    pub ack_timeout: Duration,
    /// `Retry-After` seconds on 503.
    pub retry_after_secs: u32,
    /// Most body memory (as received plus decompressed) held at once;
    /// a body that does not fit is answered 503 and not kept.
    pub max_inflight_bytes: usize,
    /// Most connections open at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// The file in which the orchestrator announces (with its pid) that it
    /// restored and checked the log and is sequencing.
    pub orchestrator_ready: std::path::PathBuf,
    /// Files in which a service that refused to go on (fail closed: a
    /// database behind the saved checkpoint, a fenced writer) writes why;
    /// their text is the reason given in every 503.
    pub refusal_files: Vec<std::path::PathBuf>,
    /// Where the orchestrator publishes the log's mode: its name, `writes`
    /// or `refuses`, and why (hold, recovery, isolated, degraded under the
    /// refuse policy). A refusing mode is the reason given in every 503.
    pub mode_file: Option<std::path::PathBuf>,
    /// Written (with our pid) the first time the pipeline is ready, so that
    /// `chronos up` says it is up only when requests can be committed.
    pub ready_file: Option<std::path::PathBuf>,
    /// Why writes are refused for now for want of trusted time (no time
    /// quorum under the refuse policy); `None` when time never refuses.
    pub time_gate: Option<TimeGate>,
}

/// A check that says why trusted time is missing (see [`Settings::time_gate`]).
#[derive(Clone)]
pub struct TimeGate(pub Arc<dyn Fn() -> Option<String> + Send + Sync>);

impl TimeGate {
    pub fn check(&self) -> Option<String> {
        (self.0)()
    }
}

impl std::fmt::Debug for TimeGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TimeGate")
    }
}
