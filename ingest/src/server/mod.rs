//! The HTTP server: `POST /ingest` and its neighbours.
//!
//! A request is answered 200 only after the vault writer reports its batch
//! committed. Until then the handler waits on a oneshot channel that the
//! ack thread (the consumer of this slot's ack ring) completes. Every other
//! outcome is an error the client can act on: 400/413/415 for bad bodies
//! (nothing stored), 422 with the reason for a body the pipeline refused
//! after accepting it (nothing stored; a retry cannot help), 401 without
//! a token, 408 for a body that does not
//! arrive within 30 s, 503 with `Retry-After` when the body-memory budget
//! or the rings are full, the pipeline is not ready or the commit did not
//! come within `ack_timeout` (the body may still be committed later; its
//! retry is answered from the idempotency window, so nothing is stored
//! twice).
//!
//! One file per job: `settings`, `metrics` (and `/metrics`), `auth` (the
//! bearer token and the client identity), `budget` (body memory), `handler`
//! (`POST /ingest`), `fanout` (into the hasher rings), `response` (the
//! answers), `readiness` (and `/readyz`) and `ack` (the ack thread). This
//! file holds the state they share, `bind` and `serve`.

mod ack;
mod auth;
mod budget;
mod fanout;
mod handler;
mod metrics;
mod readiness;
mod response;
mod settings;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use chronos_ipc::{Consumer, Producer, RingError, ring};
use chronos_wire::{Ack, Refused, Status};
use prometheus_client::registry::Registry;
use tokio::sync::{Semaphore, oneshot};

pub use metrics::Metrics;
pub use settings::{Settings, TimeGate};

use ack::ack_loop;
use budget::budget_kib;
use handler::post_ingest;
use metrics::metrics_text;
use readiness::readyz;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("ring: {0}")]
    Ring(#[from] RingError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

/// Binds `addr` for all the ingest processes of one instance: `chronos up`
/// binds it once and hands the socket to each of them (they all accept on
/// it). No `SO_REUSEPORT`: another program or another log's instance
/// cannot bind the same address, so one address never splits its clients
/// between two ledgers.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, ServerError> {
    let listen = |source| ServerError::Listen { addr, source };
    let socket =
        socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None).map_err(listen)?;
    socket.set_reuse_address(true).map_err(listen)?;
    socket.set_nonblocking(true).map_err(listen)?;
    socket.bind(&addr.into()).map_err(listen)?;
    socket.listen(1024).map_err(listen)?;
    Ok(socket.into())
}

struct Shared {
    settings: Settings,
    producers: Vec<Mutex<Producer>>,
    next_ring: AtomicUsize,
    next_request: AtomicU64,
    waiters: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    /// Body memory (received plus decompressed) in KiB: a permit is held
    /// from before a body is read until it is in a ring (`max_inflight_bytes`).
    budget: Arc<Semaphore>,
    /// Last heartbeat from the vault writer, and when it arrived.
    status: Mutex<Option<(Instant, Status)>>,
    hashers_alive: AtomicBool,
    orchestrator_ready: AtomicBool,
    /// Why a service refuses to go on, if one does.
    refusal: Mutex<Option<String>>,
    metrics: Metrics,
    registry: Registry,
}

/// What the vault writer answered for a request.
#[derive(Debug)]
enum Answer {
    Ack(Ack),
    Refused(Refused),
}

/// Serves on `listener` until `shutdown` completes, then finishes the
/// requests in flight. With `metrics_listener`, `/metrics` is served
/// there (plain HTTP) and not on `listener`.
pub async fn serve(
    settings: Settings,
    listener: std::net::TcpListener,
    metrics_listener: Option<std::net::TcpListener>,
    metrics: Metrics,
    mut registry: Registry,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let t = settings.topology;
    let g = t.ingest_ring();
    let mut producers = Vec::new();
    for h in 0..t.hashers {
        let name = settings.names.ingest(settings.slot, h);
        ring::open_or_create(&name, g.capacity, g.max_record)?;
        producers.push(Mutex::new(Producer::attach(&name)?));
    }
    let g = t.ack_ring();
    let ack_name = settings.names.ack(settings.slot);
    ring::open_or_create(&ack_name, g.capacity, g.max_record)?;
    let acks = Consumer::attach(&ack_name)?;
    metrics.register(&mut registry);
    // Request numbers start at a per-process random-ish point, so answers
    // meant for a predecessor in this slot never match a new request.
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
        ^ (u64::from(std::process::id()) << 40);
    let budget = Arc::new(Semaphore::new(budget_kib(settings.max_inflight_bytes)));
    let shared = Arc::new(Shared {
        settings,
        producers,
        next_ring: AtomicUsize::new(0),
        next_request: AtomicU64::new(seed),
        waiters: Mutex::new(HashMap::new()),
        budget,
        status: Mutex::new(None),
        hashers_alive: AtomicBool::new(false),
        orchestrator_ready: AtomicBool::new(false),
        refusal: Mutex::new(None),
        metrics,
        registry,
    });
    let stop = Arc::new(AtomicBool::new(false));
    let ack_thread = {
        let (s, stop) = (shared.clone(), stop.clone());
        std::thread::Builder::new().name("acks".into()).spawn(move || {
            if let Err(e) = ack_loop(&s, acks, &stop) {
                tracing::error!(error = %e, "ack ring failed; exiting so the supervisor restarts this process");
                std::process::exit(3);
            }
        })?
    };
    let app = Router::new()
        // Other methods get axum's 405, which names the allowed ones (Allow).
        .route("/ingest", axum::routing::head(|| async { StatusCode::OK }).post(post_ingest))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz));
    let app = match metrics_listener {
        None => app.route("/metrics", get(metrics_text)),
        Some(l) => {
            l.set_nonblocking(true)?;
            let l = tokio::net::TcpListener::from_std(l)?;
            tracing::info!(addr = %l.local_addr()?, "ingest metrics at /metrics (not on the ingest port)");
            let metrics_app = Router::new().route("/metrics", get(metrics_text)).with_state(shared.clone());
            tokio::spawn(async move {
                if let Err(e) = axum::serve(l, metrics_app).await {
                    tracing::warn!(error = %e, "ingest /metrics server failed");
                }
            });
            app
        }
    };
    let app = app.with_state(shared.clone());
    let mut listener =
        crate::limit::Limited::new(tokio::net::TcpListener::from_std(listener)?, shared.settings.max_connections);
    tracing::info!(addr = %listener.local_addr()?, slot = shared.settings.slot, tls = shared.settings.tls.is_some(), "ingest listening");
    // HTTP/1.1 (what Vector's http sink and HTTP clients send to a plain
    // http:// address; axum::serve also took HTTP/2 with prior knowledge),
    // with a smaller read buffer per connection (hyper's default grows to
    // 400 KiB, which held most of ingest's memory under overload) and a
    // header timeout that runs from the moment a connection could send,
    // so that neither a silent nor an idle connection keeps its slot.
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_buf_size(READ_BUFFER).timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(IDLE_TIMEOUT);
    // A client may shut down its sending side once its request is out: it
    // still gets its answer (the body may already be committed).
    http.half_close(true);
    let service = hyper_util::service::TowerToHyperService::new(app);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let tls = shared.settings.tls.clone().map(chronos_tls::TlsAcceptor::from);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            () = &mut shutdown => break,
        };
        let Some(tls) = &tls else {
            let c = graceful.watch(http.serve_connection(hyper_util::rt::TokioIo::new(conn), service.clone()));
            tokio::spawn(async move {
                if let Err(e) = c.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
            continue;
        };
        // The handshake runs in the connection's own task (with a
        // deadline), never in the accept loop.
        let (tls, http, service, watcher) = (tls.clone(), http.clone(), service.clone(), graceful.watcher());
        let metrics = shared.metrics.clone();
        tokio::spawn(async move {
            let conn = match chronos_tls::accept(&tls, conn).await {
                Ok(c) => c,
                Err(e) => {
                    metrics.tls_handshake_failures.inc();
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return;
                }
            };
            if let Err(e) = watcher.watch(http.serve_connection(hyper_util::rt::TokioIo::new(conn), service)).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    // Requests in flight finish (their answers wait for commits); idle
    // connections close at once.
    graceful.shutdown().await;
    stop.store(true, Ordering::Relaxed);
    let _ = ack_thread.join();
    Ok(())
}

/// Largest read buffer of one connection: bodies arrive in pieces of at
/// most this much (hyper's default is 400 KiB).
const READ_BUFFER: usize = 64 << 10;

/// A connection that sends no (complete) request headers for this long
/// is closed, idle or silent from the start.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
