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
use crate::error::ServeError;
use crate::metrics::RouteLabel;

impl IntoResponse for ServeError {
    fn into_response(self) -> Response {
        let status = match &self {
            ServeError::Rejected(_) => StatusCode::BAD_REQUEST,
            ServeError::NotFound(_) => StatusCode::NOT_FOUND,
            ServeError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ServeError::Corrupt(reason) => {
                tracing::error!(reason, "refused to serve data that failed a check");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let mut r = (status, axum::Json(serde_json::json!({ "error": self.to_string() }))).into_response();
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

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready once a checked checkpoint can be served.
async fn readyz(State(shared): State<Arc<Shared>>) -> Result<&'static str, ServeError> {
    match shared.follow.latest() {
        Some(_) => Ok("ready\n"),
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
        .layer(axum::middleware::from_fn_with_state(shared.clone(), count))
        .with_state(shared)
}

/// Serves until `quit`; open streams are closed with "going away".
pub(crate) async fn serve(shared: Arc<Shared>, listener: tokio::net::TcpListener, mut quit: watch::Receiver<bool>) {
    let app = router(shared);
    let shutdown = async move {
        let _ = quit.changed().await;
    };
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
        tracing::error!(error = %e, "bridge HTTP server failed");
    }
}
