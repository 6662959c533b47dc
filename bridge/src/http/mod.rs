//! The HTTP surface: the tlog-tiles read path, `/v1` (time, checkpoint,
//! proofs, events) and the `/v1/stream` WebSocket. Errors are JSON
//! `{"error": "..."}` with a status that says who is at fault.

mod ledger;
mod stream;
mod tiles;
pub(crate) mod time;

use std::sync::Arc;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;

use crate::Shared;
use crate::access::Group;
use crate::error::ServeError;
use crate::metrics::RouteLabel;

impl IntoResponse for ServeError {
    fn into_response(self) -> Response {
        let status = match &self {
            ServeError::Rejected(_) => StatusCode::BAD_REQUEST,
            ServeError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ServeError::NotFound(_) => StatusCode::NOT_FOUND,
            ServeError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ServeError::Corrupt(reason) => {
                tracing::error!(reason, "refused to serve data that failed a check");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let mut r = (status, axum::Json(serde_json::json!({ "error": self.to_string() }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}

/// Counts every answer by route (the matched pattern, not the raw path,
/// so that the label set stays small) and status.
async fn count(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let r = next.run(req).await;
    shared.metrics.requests.get_or_create(&RouteLabel { route, status: r.status().as_u16() }).inc();
    r
}

/// Refuses a route of a group that is not public without one of the
/// bridge's tokens.
async fn authorize(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let group = Group::of_path(req.uri().path());
    let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if shared.settings.access.allows(group, given) {
        return next.run(req).await;
    }
    let name = group.map_or("", Group::name);
    ServeError::Unauthorized(format!("{name} needs a bearer token here (Authorization: Bearer <token>)"))
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready once a checked checkpoint can be served; says the log's mode
/// (the bridge serves reads in every mode: a held log is still readable).
async fn readyz(State(shared): State<Arc<Shared>>) -> Result<String, ServeError> {
    match shared.follow.latest() {
        Some(_) => Ok(format!("ready (log mode: {})\n", shared.follow.mode())),
        None => Err(ServeError::Unavailable(
            "no checked checkpoint yet (is the log empty, or PostgreSQL unreachable?)".into(),
        )),
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/checkpoint", get(tiles::checkpoint))
        .route("/tile/{*path}", get(tiles::tile))
        .route("/v1/time", get(time::time))
        .route("/v1/checkpoint", get(ledger::checkpoint))
        .route("/v1/proof/inclusion", get(ledger::inclusion))
        .route("/v1/proof/consistency", get(ledger::consistency))
        .route("/v1/events/{leaf}", get(ledger::event))
        .route("/v1/stream", get(stream::stream))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .layer(axum::middleware::from_fn_with_state(shared.clone(), authorize))
        .layer(axum::middleware::from_fn_with_state(shared.clone(), count))
        .with_state(shared)
}

/// Connections whose TLS handshakes are done, for `axum::serve`.
struct TlsIncoming {
    ready: tokio::sync::mpsc::Receiver<(
        chronos_tls::tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        std::net::SocketAddr,
    )>,
    local: std::net::SocketAddr,
}

impl axum::serve::Listener for TlsIncoming {
    type Io = chronos_tls::tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The acceptor task ended (it does not before shutdown).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Serves until `quit`, over TLS when `tls` is given; open streams are
/// closed with "going away".
pub(crate) async fn serve(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<chronos_tls::rustls::ServerConfig>>,
    mut quit: watch::Receiver<bool>,
) {
    let metrics = shared.metrics.clone();
    let app = router(shared);
    let shutdown = async move {
        let _ = quit.changed().await;
    };
    let r = match tls {
        None => axum::serve(listener, app).with_graceful_shutdown(shutdown).await,
        Some(cfg) => {
            let local = match listener.local_addr() {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(error = %e, "bridge HTTP listener has no address");
                    return;
                }
            };
            let ready = chronos_tls::spawn_acceptor(listener, chronos_tls::TlsAcceptor::from(cfg), move |e| {
                metrics.tls_handshake_failures.inc();
                tracing::debug!(error = %e, "TLS handshake failed");
            });
            axum::serve(TlsIncoming { ready, local }, app).with_graceful_shutdown(shutdown).await
        }
    };
    if let Err(e) = r {
        tracing::error!(error = %e, "bridge HTTP server failed");
    }
}
