//! The Chronos bridge: the log and its trusted time, served to readers
//! who hold no database credentials.
//!
//! * **Time.** An NTP server (RFC 5905 server mode over UDP, with
//!   per-client rate limiting answered by kiss-o'-death RATE), `GET
//!   /v1/time` (optionally signed with the log's key), and time ticks on
//!   the WebSocket `/v1/stream`. Time comes from the clock page the time
//!   service publishes ([`chronos_time::TimeReader`]), the same one
//!   batches are stamped with; without quorum the NTP answers say
//!   "unsynchronized" (leap indicator 3, stratum 16) and `/v1/time` says
//!   why.
//! * **Roughtime.** A Roughtime server (Google's protocol, the IETF
//!   draft 0x8000000c and RFC version 1) whose long-term key delegates
//!   an online key; what arrives together is answered as one batch under
//!   one signature. Peer Chronos nodes read each other's time this way.
//! * **Ledger.** The C2SP tlog-tiles read path (`/checkpoint`,
//!   `/tile/<L>/<N>[.p/<W>]`, `/tile/entries/<N>[.p/<W>]`), so that
//!   standard tooling and witnesses can follow the log; `GET
//!   /v1/checkpoint`, inclusion and consistency proofs and events as JSON;
//!   every new checkpoint on `/v1/stream`.
//! * **gRPC.** The same time and ledger answers as services generated
//!   from the top-level `proto/` (time now and watch; checkpoint,
//!   proofs and a checkpoint watch), with the standard health and
//!   reflection services.
//!
//! It reads the ledger through its own read-only PostgreSQL connection,
//! from logged tables only (`chronos_vault::read`), so it can run against
//! a physical replica; it never touches the writer's path. Every
//! checkpoint it serves was checked first: its signature against the
//! log's verifier key, and its consistency with the one served before
//! (a proof from the tiles; the first after a start has none before it);
//! every proof it serves is checked against the checkpoint it names, and
//! every event against its leaf hash. What fails a check is refused,
//! logged and counted, never served. Hash tiles are served as stored, for
//! clients to check. HTTP and gRPC can speak TLS (crate `chronos-tls`),
//! and groups of routes can need bearer tokens ([`access`]).
//!
//! What it does not do: write to PostgreSQL, sign checkpoints (it signs
//! only Roughtime answers, with its own key, and, when configured, time
//! statements), or decide time (the time service does).

pub mod access;
mod db;
mod error;
mod follow;
mod grpc;
mod http;
pub mod metrics;
mod ntp;
mod query;
pub mod rate;
mod roughtime;
pub mod settings;
pub mod tile_path;
mod udp;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use error::BridgeError;
pub use metrics::Metrics;
pub use settings::Settings;

/// Everything the surfaces share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub settings: Settings,
    pub db: db::Db,
    pub follow: follow::Follower,
    pub time: chronos_time::TimeReader,
    pub metrics: Metrics,
    /// Set once when the bridge stops (streams close with "going away").
    pub quit: tokio::sync::watch::Receiver<bool>,
}

/// The addresses the surfaces were bound to (port 0 picks a free one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    pub http: Option<std::net::SocketAddr>,
    pub grpc: Option<std::net::SocketAddr>,
    pub ntp: Option<std::net::SocketAddr>,
    pub roughtime: Option<std::net::SocketAddr>,
}

/// Runs the bridge until `stop` is set: binds every configured surface
/// first (an address in use is an error, returned before serving), tells
/// `bound` where, then serves them.
pub fn run(
    settings: Settings,
    stop: &Arc<AtomicBool>,
    metrics: Metrics,
    bound: impl FnOnce(Bound),
) -> Result<(), BridgeError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.threads.max(1))
        .thread_name("bridge")
        .enable_all()
        .build()
        .map_err(|e| BridgeError::Setup(format!("tokio runtime: {e}")))?;
    rt.block_on(async {
        let time = chronos_time::TimeReader::new(&settings.time);
        let db = db::Db::new(settings.database_url.clone());
        let follow = follow::Follower::new(&settings);
        // Bound before anything is served: an address in use stops the start.
        let tcp = |key: &str, addr: Option<std::net::SocketAddr>| {
            addr.map(|a| {
                std::net::TcpListener::bind(a)
                    .and_then(|l| l.set_nonblocking(true).and_then(|()| tokio::net::TcpListener::from_std(l)))
                    .map_err(|e| BridgeError::Setup(format!("bridge.{key} {a}: {e}")))
            })
            .transpose()
        };
        let udp = |key: &str, addr: Option<std::net::SocketAddr>| {
            addr.map(|a| {
                std::net::UdpSocket::bind(a).map_err(|e| BridgeError::Setup(format!("bridge.{key} {a}: {e}")))
            })
            .transpose()
        };
        let http = tcp("listen", settings.http)?;
        let grpc = tcp("grpc_listen", settings.grpc)?;
        let ntp = udp("ntp_listen", settings.ntp)?;
        let roughtime = udp("roughtime_listen", settings.roughtime.as_ref().map(|r| r.listen))?;
        let local = |r: std::io::Result<std::net::SocketAddr>| r.map_err(|e| BridgeError::Setup(e.to_string()));
        bound(Bound {
            http: http.as_ref().map(|l| local(l.local_addr())).transpose()?,
            grpc: grpc.as_ref().map(|l| local(l.local_addr())).transpose()?,
            ntp: ntp.as_ref().map(|s| local(s.local_addr())).transpose()?,
            roughtime: roughtime.as_ref().map(|s| local(s.local_addr())).transpose()?,
        });
        // TLS files are read once, here: a bad one stops the start.
        let http_tls = match &settings.tls {
            Some(files) => Some(
                chronos_tls::server_config(files, &[b"h2", b"http/1.1"]).map_err(|e| BridgeError::Setup(e.to_string()))?,
            ),
            None => None,
        };
        let grpc_tls = match &settings.tls {
            Some(files) => Some(grpc::tls(files)?),
            None => None,
        };
        let long_term = settings.roughtime.as_ref().map(|r| r.long_term_seed);
        let (quit_tx, quit_rx) = tokio::sync::watch::channel(false);
        let shared = Arc::new(Shared { settings, db, follow, time, metrics, quit: quit_rx.clone() });
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(follow::run(shared.clone(), quit_rx.clone())));
        tasks.push(tokio::spawn(follow::tick(shared.clone(), quit_rx.clone())));
        if let Some(l) = http {
            tracing::info!(addr = %l.local_addr().map_err(|e| BridgeError::Setup(e.to_string()))?, "bridge HTTP (tiles, /v1, /v1/stream)");
            tasks.push(tokio::spawn(http::serve(shared.clone(), l, http_tls, quit_rx.clone())));
        }
        if let Some(l) = grpc {
            tracing::info!(addr = %l.local_addr().map_err(|e| BridgeError::Setup(e.to_string()))?, "bridge gRPC (time, ledger, health, reflection)");
            tasks.push(tokio::spawn(grpc::serve(shared.clone(), l, grpc_tls, quit_rx.clone())));
        }
        let mut threads = Vec::new();
        if let Some(s) = ntp {
            tracing::info!(addr = %s.local_addr().map_err(|e| BridgeError::Setup(e.to_string()))?, "bridge NTP server");
            let (shared, stop) = (shared.clone(), stop.clone());
            let t = std::thread::Builder::new()
                .name("ntp".into())
                .spawn(move || ntp::serve(shared, s, stop))
                .map_err(|e| BridgeError::Setup(format!("NTP thread: {e}")))?;
            threads.push(t);
        }
        if let (Some(s), Some(seed)) = (roughtime, long_term) {
            tracing::info!(addr = %s.local_addr().map_err(|e| BridgeError::Setup(e.to_string()))?, "bridge Roughtime server");
            let (shared, stop) = (shared.clone(), stop.clone());
            let t = std::thread::Builder::new()
                .name("roughtime".into())
                .spawn(move || roughtime::serve(shared, s, seed, stop))
                .map_err(|e| BridgeError::Setup(format!("Roughtime thread: {e}")))?;
            threads.push(t);
        }
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::info!("bridge stopping");
        let _ = quit_tx.send(true);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        for t in threads {
            let _ = t.join();
        }
        Ok(())
    })
}
