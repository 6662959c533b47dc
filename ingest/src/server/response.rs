//! The answers: JSON errors, 503 with `Retry-After`, the 200 of a commit,
//! and refusing a body that was not read.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chronos_wire::Ack;
use futures_util::StreamExt as _;

use super::Shared;

pub(super) fn json_error(code: StatusCode, message: &str, index: Option<usize>) -> Response {
    let body = match index {
        Some(i) => serde_json::json!({ "error": message, "event_index": i }),
        None => serde_json::json!({ "error": message }),
    };
    (code, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body.to_string()).into_response()
}

/// Longest a refused body is read (and dropped) before the answer.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Answers `response` to a request whose body was not read. The body is
/// read and dropped first (nothing is kept): a server that answers and
/// closes while the client is still sending makes the kernel reset the
/// connection, and the client would see a reset instead of the 503 and
/// its Retry-After.
pub(super) async fn refuse_unread(body: Body, response: Response) -> Response {
    let mut stream = body.into_data_stream();
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async { while let Some(Ok(_)) = stream.next().await {} }).await;
    response
}

pub(super) fn unavailable(s: &Shared, message: &str) -> Response {
    let mut r = json_error(StatusCode::SERVICE_UNAVAILABLE, message, None);
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s.settings.retry_after_secs));
    r
}

pub(super) fn answer(ack: &Ack) -> Response {
    let body = serde_json::json!({
        "seq": ack.seq,
        "first_leaf": ack.first_leaf,
        "leaf_count": ack.leaf_count,
        "end_leaf": ack.first_leaf + ack.leaf_count,
    })
    .to_string();
    let mut r =
        (StatusCode::OK, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response();
    if ack.replay {
        r.headers_mut().insert("chronos-replay", HeaderValue::from_static("true"));
    }
    r
}
