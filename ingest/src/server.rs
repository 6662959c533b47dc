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

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chronos_ipc::{Consumer, Producer, PushError, RingError, ring};
use chronos_wire::{Ack, EventMeta, Ingest, Refused, Reply, RingNames, Status, Topology, tag};
use futures_util::StreamExt as _;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::body::{self, BodyError, Encoding, Format, Limits};

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
    pub tokens: Vec<String>,
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
    /// Written (with our pid) the first time the pipeline is ready, so that
    /// `chronos up` says it is up only when requests can be committed.
    pub ready_file: Option<std::path::PathBuf>,
}

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: u16,
}

/// Metrics served on `/metrics`.
#[derive(Debug, Clone)]
pub struct Metrics {
    responses: Family<CodeLabel, Counter>,
    events: Counter,
    bytes: Counter,
    ack_seconds: Histogram,
    inflight_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            responses: Family::default(),
            events: Counter::default(),
            bytes: Counter::default(),
            ack_seconds: Histogram::new([0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]),
            inflight_bytes: Gauge::default(),
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
        r.register("chronos_ingest_event_bytes", "Event bytes acknowledged", self.bytes.clone());
        r.register("chronos_ingest_ack_seconds", "Time from a body's arrival to its commit", self.ack_seconds.clone());
    }
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

/// Why the pipeline cannot commit now.
fn not_ready(s: &Shared) -> Option<String> {
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

fn json_error(code: StatusCode, message: &str, index: Option<usize>) -> Response {
    let body = match index {
        Some(i) => serde_json::json!({ "error": message, "event_index": i }),
        None => serde_json::json!({ "error": message }),
    };
    (code, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body.to_string()).into_response()
}

const RINGS_FULL: &str = "overloaded: every hasher ring is full";

/// Whether some hasher ring may have room for `len` bytes (a ring being
/// written to right now counts as maybe).
fn room_for(s: &Shared, len: usize) -> bool {
    s.producers.iter().any(|m| m.try_lock().map_or(true, |p| p.free_bytes() >= len as u64))
}

/// KiB, rounded up: the unit of the body-memory budget.
fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

/// Permits of the body-memory budget: two KiB more than the setting, as
/// each reservation rounds up to a KiB and the settings check promises
/// room for one body and its inflation.
fn budget_kib(max_inflight_bytes: usize) -> usize {
    kib(max_inflight_bytes) as usize + 2
}

/// Longest a compressed body waits for room to inflate before 503.
const INFLATE_WAIT: Duration = Duration::from_secs(1);

/// Longest a body may take to arrive once its headers have.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest a refused body is read (and dropped) before the answer.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Answers `response` to a request whose body was not read. The body is
/// read and dropped first (nothing is kept): a server that answers and
/// closes while the client is still sending makes the kernel reset the
/// connection, and the client would see a reset instead of the 503 and
/// its Retry-After.
async fn refuse_unread(body: Body, response: Response) -> Response {
    let mut stream = body.into_data_stream();
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async { while let Some(Ok(_)) = stream.next().await {} }).await;
    response
}

fn overloaded(s: &Shared) -> Response {
    unavailable(
        s,
        &format!(
            "overloaded: {} MiB of request bodies are being read or decoded (ingest.max_inflight_bytes); retry",
            s.settings.max_inflight_bytes >> 20
        ),
    )
}

fn unavailable(s: &Shared, message: &str) -> Response {
    let mut r = json_error(StatusCode::SERVICE_UNAVAILABLE, message, None);
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s.settings.retry_after_secs));
    r
}

fn answer(ack: &Ack) -> Response {
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

/// The client's identity for the idempotency key, or `None` if a token is
/// required and the request has none of them. The identity is the token
/// presented (hashed into the key, never stored) and the `Chronos-Client`
/// header, which lets clients that share a token keep their bodies apart.
fn identity(s: &Shared, headers: &HeaderMap) -> Option<Vec<u8>> {
    let mut id = Vec::new();
    if !s.settings.tokens.is_empty() {
        let v = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())?;
        // The scheme is case-insensitive (RFC 9110, 11.1).
        let (scheme, given) = v.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let given = given.trim_start().as_bytes();
        // Constant-time comparison with every token: they are secrets, and
        // which one matched must not show in the timing either.
        let mut matched = None;
        for (i, token) in s.settings.tokens.iter().enumerate() {
            if bool::from(subtle::ConstantTimeEq::ct_eq(given, token.as_bytes())) {
                matched = Some(i);
            }
        }
        id.extend_from_slice(s.settings.tokens[matched?].as_bytes());
    }
    id.push(0);
    if let Some(client) = headers.get(CLIENT_HEADER) {
        id.extend_from_slice(client.as_bytes());
    }
    Some(id)
}

/// Optional request header naming the client (a host, a Vector instance),
/// part of the idempotency key.
const CLIENT_HEADER: &str = "chronos-client";

async fn post_ingest(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
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
            // did not decode): a retry cannot fix it, so no 503.
            let code = StatusCode::from_u16(r.status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
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
                    not_ready(s).map(|r| format!(": {r}")).unwrap_or_default()
                ),
            )
        }
    }
}

enum Prepared {
    Queued { request: u64, rx: oneshot::Receiver<Answer> },
    Busy(String),
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

/// Decodes and splits a body and copies it into a hasher ring. `_budget`
/// is the body's share of `max_inflight_bytes`, given back on return, when
/// `raw` and the decoded copy are gone.
fn prepare(
    s: &Shared,
    client: &[u8],
    raw: &[u8],
    encoding: Encoding,
    content_type: Option<&str>,
    _budget: OwnedSemaphorePermit,
) -> Result<Prepared, BodyError> {
    let limits = &s.settings.limits;
    let format = Format::from_content_type(content_type)?;
    let decoded = body::decode(encoding, raw, limits)?;
    let events = body::split(format, &decoded, limits)?;
    if let Some(reason) = not_ready(s) {
        return Ok(Prepared::Busy(format!("not ready: {reason}")));
    }
    let key = body::idempotency_key(client, &decoded);
    let metas: Vec<EventMeta<'_>> =
        events.iter().map(|e| EventMeta { bytes: e.bytes, claimed_time_ns: e.claimed_time_ns }).collect();
    let len = Ingest::encoded_len(&metas);
    let request = s.next_request.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = oneshot::channel();
    // Register before pushing: the answer can come back very fast.
    if let Ok(mut w) = s.waiters.lock() {
        w.insert(request, tx);
    }
    let reply = Reply { slot: s.settings.slot, request };
    let n = s.producers.len();
    let start = s.next_ring.fetch_add(1, Ordering::Relaxed);
    let mut pushed = false;
    // First pass: rings nobody is writing to. Second pass: wait for the
    // rings that were only busy (another request copying its body in, tens
    // of microseconds); a ring is "full" only if it has no room, never
    // because it was locked (that answered 503 under plain concurrency).
    for k in 0..2 * n {
        let m = &s.producers[(start + k) % n];
        let guard = if k < n { m.try_lock().ok() } else { m.lock().ok() };
        let Some(mut p) = guard else { continue };
        match p.try_reserve(tag::INGEST, len) {
            Ok(mut grant) => {
                Ingest::encode(grant.payload_mut(), reply, &key, &metas);
                grant.commit();
                pushed = true;
                break;
            }
            Err(PushError::Full) => continue,
            Err(e) => {
                tracing::error!(error = %e, "ingest ring refused a record");
                continue;
            }
        }
    }
    if !pushed {
        if let Ok(mut w) = s.waiters.lock() {
            w.remove(&request);
        }
        return Ok(Prepared::Busy(RINGS_FULL.into()));
    }
    s.metrics.bytes.inc_by(decoded.len() as u64);
    Ok(Prepared::Queued { request, rx })
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    match not_ready(&s) {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(reason) => unavailable(&s, &reason),
    }
}

async fn metrics_text(State(s): State<Arc<Shared>>) -> Response {
    let total = budget_kib(s.settings.max_inflight_bytes);
    s.metrics.inflight_bytes.set((total.saturating_sub(s.budget.available_permits()) as i64) * 1024);
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &s.registry).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], out).into_response()
}

/// Whether `file` names a live process (a file left by a killed process
/// names a dead pid).
fn announced_alive(file: &std::path::Path) -> bool {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
}

fn deliver(s: &Shared, request: u64, answer: Answer) {
    let waiter = s.waiters.lock().ok().and_then(|mut w| w.remove(&request));
    if let Some(tx) = waiter {
        let _ = tx.send(answer);
    }
}

/// The ack thread: delivers answers and heartbeats from the vault writer.
fn ack_loop(s: &Shared, mut acks: Consumer, stop: &AtomicBool) -> Result<(), RingError> {
    let mut last_check = Instant::now() - Duration::from_secs(1);
    let mut announced = s.settings.ready_file.is_none();
    while !stop.load(Ordering::Relaxed) {
        if !announced && not_ready(s).is_none() {
            announced = true;
            if let Some(f) = &s.settings.ready_file {
                let tmp = f.with_extension("tmp");
                let written =
                    std::fs::write(&tmp, format!("{}\n", std::process::id())).and_then(|()| std::fs::rename(&tmp, f));
                if let Err(e) = written {
                    tracing::warn!(file = %f.display(), error = %e, "cannot announce readiness");
                }
            }
        }
        if last_check.elapsed() >= Duration::from_millis(200) {
            let alive = (0..s.settings.topology.hashers)
                .any(|h| ring::inspect(&s.settings.names.ingest(s.settings.slot, h)).is_ok_and(|st| st.consumer_alive));
            s.hashers_alive.store(alive, Ordering::Relaxed);
            s.orchestrator_ready.store(announced_alive(&s.settings.orchestrator_ready), Ordering::Relaxed);
            let refusal = s.settings.refusal_files.iter().find_map(|f| std::fs::read_to_string(f).ok());
            if let Ok(mut g) = s.refusal.lock() {
                *g = refusal.map(|r| r.trim().to_owned());
            }
            last_check = Instant::now();
        }
        if !acks.wait(Some(Instant::now() + Duration::from_millis(100)))? {
            continue;
        }
        let batch = acks.poll(1024)?;
        for rec in batch.iter() {
            match rec.tag {
                tag::ACK => match Ack::decode(rec.tag, rec.payload) {
                    Ok(ack) => deliver(s, ack.request, Answer::Ack(ack)),
                    Err(e) => tracing::error!(error = %e, "undecodable ack"),
                },
                tag::REFUSED => match Refused::decode(rec.tag, rec.payload) {
                    Ok(r) => deliver(s, r.reply.request, Answer::Refused(r)),
                    Err(e) => tracing::error!(error = %e, "undecodable refusal"),
                },
                tag::STATUS => match Status::decode(rec.tag, rec.payload) {
                    Ok(st) => {
                        if let Ok(mut g) = s.status.lock() {
                            *g = Some((Instant::now(), st));
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "undecodable status"),
                },
                other => tracing::error!(tag = other, "unexpected record on the ack ring"),
            }
        }
        acks.release();
    }
    Ok(())
}

/// Serves on `listener` until `shutdown` completes, then finishes the
/// requests in flight.
pub async fn serve(
    settings: Settings,
    listener: std::net::TcpListener,
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
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(shared.clone());
    let mut listener =
        crate::limit::Limited::new(tokio::net::TcpListener::from_std(listener)?, shared.settings.max_connections);
    tracing::info!(addr = %listener.local_addr()?, slot = shared.settings.slot, "ingest listening");
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
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            () = &mut shutdown => break,
        };
        let c = http.serve_connection(hyper_util::rt::TokioIo::new(conn), service.clone());
        let c = graceful.watch(c);
        tokio::spawn(async move {
            if let Err(e) = c.await {
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
