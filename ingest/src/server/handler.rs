//! The `POST /ingest` handler: authenticate, reserve body memory, read the
//! body, hand it to a hasher ring and wait for its commit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt as _;

use super::auth::identity;
use super::budget::{kib, overloaded};
use super::fanout::{Prepared, RINGS_FULL, prepare, room_for};
use super::metrics::CodeLabel;
use super::readiness::not_serving;
use super::response::{answer, json_error, refuse_unread, unavailable};
use super::{Answer, Shared};
use crate::body::Encoding;

/// Longest a compressed body waits for room to inflate before 503.
const INFLATE_WAIT: Duration = Duration::from_secs(1);

/// Longest a body may take to arrive once its headers have.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) async fn post_ingest(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    let r = ingest(&s, headers, body).await;
    s.metrics.responses.get_or_create(&CodeLabel { code: r.status().as_u16() }).inc();
    r
}

async fn ingest(s: &Arc<Shared>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let Some(client) = identity(s, &headers) else {
        let mut r = json_error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token", None);
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    };
    let limits = s.settings.limits;
    let header_str = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let encoding = match Encoding::from_header(header_str(header::CONTENT_ENCODING).as_deref()) {
        Ok(e) => e,
        Err(e) => {
            return json_error(
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
                &e.to_string(),
                None,
            );
        }
    };
    let content_type = header_str(header::CONTENT_TYPE);
    // Memory is reserved before the body is read: with too many bodies in
    // flight the answer is 503 at once, not a growing heap.
    let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if length.is_some_and(|n| n > limits.max_body) {
        return refuse_unread(
            body,
            json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("body exceeds the limit of {} bytes", limits.max_body),
                None,
            ),
        )
        .await;
    }
    let declared = length.unwrap_or(limits.max_body);
    let Ok(mut permit) = s.budget.clone().try_acquire_many_owned(kib(declared)) else {
        return refuse_unread(body, overloaded(s)).await;
    };
    // Under overload, refuse before reading and parsing a body that cannot
    // fit any ring (its record is at least as long as the body); parsing
    // bodies only to refuse them took the CPU the pipeline needed. (A body
    // of unknown length is checked after it is split, as before.)
    if !room_for(s, length.unwrap_or(0)) {
        drop(permit);
        return refuse_unread(body, unavailable(s, RINGS_FULL)).await;
    }
    // A client that stops sending mid-body must not hold its share of the
    // budget for ever.
    let raw = match tokio::time::timeout(BODY_TIMEOUT, read_body(body, declared, limits.max_body)).await {
        Ok(Ok(b)) => b,
        Ok(Err(r)) => return r,
        Err(_) => {
            return json_error(
                StatusCode::REQUEST_TIMEOUT,
                &format!("the body did not arrive within {} s", BODY_TIMEOUT.as_secs()),
                None,
            );
        }
    };
    // A body sent without Content-Length holds only what it turned out to be.
    let surplus = kib(declared).saturating_sub(kib(raw.len()));
    if surplus > 0 {
        drop(permit.split(surplus as usize));
    }
    if encoding != Encoding::Identity {
        // Room for the inflated body too. Waiting is bounded: the budget
        // is held only while bodies are decoded and copied into a ring.
        // Polled, not queued: a queued acquire takes every permit as it is
        // freed and would refuse every other request meanwhile.
        let deadline = Instant::now() + INFLATE_WAIT;
        loop {
            if let Ok(more) = s.budget.clone().try_acquire_many_owned(kib(limits.max_decoded)) {
                permit.merge(more);
                break;
            }
            if Instant::now() >= deadline {
                return overloaded(s);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // Decompressing and splitting a large body takes milliseconds: off the reactor.
    let s2 = s.clone();
    let prepared =
        tokio::task::spawn_blocking(move || prepare(&s2, &client, &raw, encoding, content_type.as_deref(), permit))
            .await;
    let (request, rx) = match prepared {
        Ok(Ok(Prepared::Queued { request, rx })) => (request, rx),
        Ok(Ok(Prepared::Busy(msg))) => return unavailable(s, &msg),
        Ok(Err(e)) => {
            let code = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            return json_error(code, &e.to_string(), e.event_index());
        }
        Err(e) => return json_error(StatusCode::INTERNAL_SERVER_ERROR, &format!("request task failed: {e}"), None),
    };
    match tokio::time::timeout(s.settings.ack_timeout, rx).await {
        Ok(Ok(Answer::Refused(r))) => {
            // Refused after ingest accepted it (a stage, or a record that
            // did not decode): a retry cannot fix it, so no 503, unless the
            // refusal says it is for now.
            let code = StatusCode::from_u16(r.status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
            if code == StatusCode::SERVICE_UNAVAILABLE {
                // Refused for now (no time quorum): retrying later can work.
                return unavailable(s, &r.reason);
            }
            json_error(code, &r.reason, None)
        }
        Ok(Ok(Answer::Ack(ack))) => {
            s.metrics.ack_seconds.observe(started.elapsed().as_secs_f64());
            if !ack.replay {
                s.metrics.events.inc_by(ack.leaf_count);
            }
            answer(&ack)
        }
        Ok(Err(_)) | Err(_) => {
            if let Ok(mut w) = s.waiters.lock() {
                w.remove(&request);
            }
            unavailable(
                s,
                &format!(
                    "not committed within {} s; retry the same body (it is idempotent){}",
                    s.settings.ack_timeout.as_secs(),
                    not_serving(s).map(|r| format!(": {r}")).unwrap_or_default()
                ),
            )
        }
    }
}

/// Reads a body into one buffer of the declared size (collecting frames
/// and then joining them held the body twice), refusing it past `max`.
async fn read_body(body: Body, declared: usize, max: usize) -> Result<Vec<u8>, Response> {
    let mut stream = body.into_data_stream();
    let mut raw = Vec::with_capacity(declared);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| json_error(StatusCode::BAD_REQUEST, &format!("reading the body: {e}"), None))?;
        if raw.len() + chunk.len() > max {
            return Err(json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("body exceeds the limit of {max} bytes"),
                None,
            ));
        }
        raw.extend_from_slice(&chunk);
    }
    Ok(raw)
}
