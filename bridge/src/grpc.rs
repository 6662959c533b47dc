//! The gRPC surface (tonic): `chronos.time.v1.Time` and
//! `chronos.ledger.v1.Ledger` from the top-level `proto/`, beside the
//! standard health service (`grpc.health.v1.Health`: the Time service is
//! NOT_SERVING while there is no quorum) and reflection (v1 and v1alpha),
//! so that grpcurl-like tools need no `.proto` files.
//!
//! The answers are the REST surface's (`crate::query`); only the format
//! differs. Streams are bounded: a checkpoint watcher that falls
//! `bridge.stream_queue` checkpoints behind is ended with
//! RESOURCE_EXHAUSTED, and every stream ends with UNAVAILABLE when the
//! bridge stops.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::Shared;
use crate::access::Group;
use crate::error::ServeError;
use crate::follow::Served;
use crate::metrics::GrpcLabel;
use crate::query::{self, Leaf, TimeView};

/// The generated messages and service traits.
pub mod pb {
    pub mod time {
        tonic::include_proto!("chronos.time.v1");
    }
    pub mod ledger {
        tonic::include_proto!("chronos.ledger.v1");
    }
    /// `proto/`'s descriptors, for reflection.
    pub const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/chronos_descriptor.bin"));
}

use pb::ledger::ledger_server::{Ledger, LedgerServer};
use pb::time::time_server::{Time, TimeServer};

/// Items a stream may hold before its producer waits for the client.
const STREAM_BUFFER: usize = 4;

impl From<ServeError> for Status {
    fn from(e: ServeError) -> Status {
        match e {
            ServeError::Rejected(m) => Status::invalid_argument(m),
            ServeError::Unauthorized(m) => Status::unauthenticated(m),
            ServeError::NotFound(m) => Status::not_found(m),
            ServeError::Unavailable(m) => Status::unavailable(m),
            ServeError::Corrupt(m) => {
                tracing::error!(reason = m, "refused to serve data that failed a check (gRPC)");
                Status::internal(m)
            }
        }
    }
}

fn count<T>(shared: &Shared, method: &'static str, r: &Result<T, Status>) {
    let code = match r {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    };
    shared.metrics.grpc_requests.get_or_create(&GrpcLabel { method: method.into(), code: format!("{code:?}") }).inc();
}

fn reading(v: TimeView) -> pb::time::TimeReading {
    pb::time::TimeReading {
        synchronized: v.synchronized,
        earliest_ns: v.earliest_ns,
        latest_ns: v.latest_ns,
        midpoint_ns: v.midpoint_ns,
        uncertainty_ns: v.uncertainty_ns,
        source: v.source,
        reason: v.reason.unwrap_or_default(),
        signed_note: v.note.unwrap_or_default(),
    }
}

fn checkpoint(s: &Served) -> pb::ledger::Checkpoint {
    pb::ledger::Checkpoint {
        origin: s.checkpoint.origin.clone(),
        tree_size: s.checkpoint.size,
        root_hash: s.checkpoint.root.0.to_vec(),
        hash: s.checkpoint.hash.name().to_owned(),
        note: s.note.clone(),
    }
}

/// Refuses a call of a group that is not public without one of the
/// bridge's tokens (`authorization: Bearer <token>` metadata).
fn authorize<T>(shared: &Shared, req: &Request<T>, group: Group) -> Result<(), Status> {
    let given = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
    if shared.settings.access.allows(Some(group), given) {
        Ok(())
    } else {
        Err(Status::unauthenticated(format!(
            "{} needs a bearer token here (authorization: Bearer <token>)",
            group.name()
        )))
    }
}

/// tonic's TLS configuration from the bridge's files.
pub(crate) fn tls(files: &chronos_tls::ServerFiles) -> Result<tonic::transport::ServerTlsConfig, crate::BridgeError> {
    let read =
        |p: &std::path::Path| std::fs::read(p).map_err(|e| crate::BridgeError::Setup(format!("{}: {e}", p.display())));
    let identity = tonic::transport::Identity::from_pem(read(&files.cert)?, read(&files.key)?);
    let mut cfg = tonic::transport::ServerTlsConfig::new().identity(identity).timeout(chronos_tls::HANDSHAKE_TIMEOUT);
    if let Some(ca) = &files.client_ca {
        cfg = cfg.client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?));
    }
    Ok(cfg)
}

/// A place among the bridge's open streams (WebSocket and gRPC share
/// `bridge.stream_max_clients`), given back when dropped.
struct StreamSlot(Arc<Shared>);

impl StreamSlot {
    fn take(shared: &Arc<Shared>) -> Result<StreamSlot, Status> {
        let max = shared.settings.stream.max_clients as i64;
        if shared.metrics.stream_clients.inc() >= max {
            shared.metrics.stream_clients.dec();
            return Err(Status::unavailable(format!("{max} streams are open, the most this bridge serves")));
        }
        Ok(StreamSlot(shared.clone()))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.metrics.stream_clients.dec();
    }
}

fn stopping() -> Status {
    Status::unavailable("the bridge is stopping")
}

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

struct TimeSvc(Arc<Shared>);

#[tonic::async_trait]
impl Time for TimeSvc {
    async fn now(&self, req: Request<pb::time::NowRequest>) -> Result<Response<pb::time::TimeReading>, Status> {
        let r = authorize(&self.0, &req, Group::Time)
            .and_then(|()| query::time(&self.0, req.into_inner().signed).map(reading).map_err(Status::from));
        count(&self.0, "Time/Now", &r);
        r.map(Response::new)
    }

    type WatchStream = Streamed<pb::time::TimeReading>;

    async fn watch(&self, req: Request<pb::time::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        if let Err(e) = authorize(&self.0, &req, Group::Time) {
            count::<()>(&self.0, "Time/Watch", &Err(e.clone()));
            return Err(e);
        }
        let ms = req.into_inner().interval_ms;
        let every = match ms {
            0 => self.0.settings.stream.tick,
            1..10 => {
                let e = Err(Status::invalid_argument(format!("interval_ms {ms}: below the 10 ms this bridge serves")));
                count(&self.0, "Time/Watch", &e);
                return e;
            }
            _ => Duration::from_millis(u64::from(ms)),
        };
        let slot = StreamSlot::take(&self.0);
        count(&self.0, "Time/Watch", &slot);
        let slot = slot?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let shared = self.0.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut quit = shared.quit.clone();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = quit.changed() => {
                        let _ = tx.send(Err(stopping())).await;
                        return;
                    }
                }
                if tx.send(Ok(reading(query::view(&shared.time)))).await.is_err() {
                    return; // the client went away
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

struct LedgerSvc(Arc<Shared>);

#[tonic::async_trait]
impl Ledger for LedgerSvc {
    async fn get_checkpoint(
        &self,
        req: Request<pb::ledger::GetCheckpointRequest>,
    ) -> Result<Response<pb::ledger::Checkpoint>, Status> {
        let r = authorize(&self.0, &req, Group::Checkpoint)
            .and_then(|()| query::latest(&self.0).map(|s| checkpoint(&s)).map_err(Status::from));
        count(&self.0, "Ledger/GetCheckpoint", &r);
        r.map(Response::new)
    }

    async fn get_inclusion_proof(
        &self,
        req: Request<pb::ledger::GetInclusionProofRequest>,
    ) -> Result<Response<pb::ledger::InclusionProof>, Status> {
        use pb::ledger::get_inclusion_proof_request::Leaf as Asked;
        let r = async {
            authorize(&self.0, &req, Group::Proofs)?;
            let leaf = match req.into_inner().leaf {
                Some(Asked::LeafIndex(i)) => Leaf::Index(i),
                Some(Asked::LeafHash(h)) => {
                    Leaf::Hash(chronos_ledger::Hash(h.as_slice().try_into().map_err(|_| {
                        Status::invalid_argument(format!("leaf_hash: {} bytes, not the 32 of a leaf hash", h.len()))
                    })?))
                }
                None => return Err(Status::invalid_argument("give leaf_index or leaf_hash")),
            };
            let p = query::inclusion(&self.0, leaf).await?;
            Ok(pb::ledger::InclusionProof {
                leaf_index: p.index,
                leaf_hash: p.leaf.0.to_vec(),
                tree_size: p.checkpoint.checkpoint.size,
                path: p.path.iter().map(|h| h.0.to_vec()).collect(),
                checkpoint: Some(checkpoint(&p.checkpoint)),
                proof_file: p.file,
            })
        }
        .await;
        count(&self.0, "Ledger/GetInclusionProof", &r);
        r.map(Response::new)
    }

    async fn get_consistency_proof(
        &self,
        req: Request<pb::ledger::GetConsistencyProofRequest>,
    ) -> Result<Response<pb::ledger::ConsistencyProof>, Status> {
        if let Err(e) = authorize(&self.0, &req, Group::Proofs) {
            count::<()>(&self.0, "Ledger/GetConsistencyProof", &Err(e.clone()));
            return Err(e);
        }
        let q = req.into_inner();
        let new = (q.new_size != 0).then_some(q.new_size);
        let r = query::consistency(&self.0, q.old_size, new)
            .await
            .map(|p| pb::ledger::ConsistencyProof {
                old_size: p.old_size,
                new_size: p.new_size,
                old_root: p.old_root.0.to_vec(),
                new_root: p.new_root.0.to_vec(),
                proof: p.proof.iter().map(|h| h.0.to_vec()).collect(),
                old_checkpoint: p.old_note.unwrap_or_default(),
                new_checkpoint: p.new_note,
            })
            .map_err(Status::from);
        count(&self.0, "Ledger/GetConsistencyProof", &r);
        r.map(Response::new)
    }

    type WatchCheckpointsStream = Streamed<pb::ledger::Checkpoint>;

    async fn watch_checkpoints(
        &self,
        req: Request<pb::ledger::WatchCheckpointsRequest>,
    ) -> Result<Response<Self::WatchCheckpointsStream>, Status> {
        let slot = authorize(&self.0, &req, Group::Checkpoint).and_then(|()| StreamSlot::take(&self.0));
        count(&self.0, "Ledger/WatchCheckpoints", &slot);
        let slot = slot?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let shared = self.0.clone();
        // Subscribed before the newest is read: nothing falls in between.
        let mut new = shared.follow.checkpoints.subscribe();
        tokio::spawn(async move {
            let _slot = slot;
            let mut quit = shared.quit.clone();
            let mut last = 0u64;
            if let Some(s) = shared.follow.latest() {
                last = s.checkpoint.size;
                if tx.send(Ok(checkpoint(&s))).await.is_err() {
                    return;
                }
            }
            loop {
                let item = tokio::select! {
                    m = new.recv() => match m {
                        Ok(s) if s.checkpoint.size <= last => continue,
                        Ok(s) => {
                            last = s.checkpoint.size;
                            Ok(checkpoint(&s))
                        }
                        Err(RecvError::Lagged(n)) => {
                            shared.metrics.stream_closed_slow.inc();
                            Err(Status::resource_exhausted(format!("too slow: fell {n} checkpoints behind")))
                        }
                        Err(RecvError::Closed) => Err(stopping()),
                    },
                    _ = quit.changed() => Err(stopping()),
                };
                let end = item.is_err();
                if tx.send(item).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Serves gRPC on `listener` until `quit`, over TLS when `tls` is given
/// (tonic's own rustls acceptor, with client certificates when a CA is).
pub(crate) async fn serve(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
    mut quit: tokio::sync::watch::Receiver<bool>,
) {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<LedgerServer<LedgerSvc>>().await;
    let reflection = |v1: bool| {
        let b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::DESCRIPTORS)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        if v1 { b.build_v1().map(|s| (Some(s), None)) } else { b.build_v1alpha().map(|s| (None, Some(s))) }
    };
    let (v1, v1alpha) = match (reflection(true), reflection(false)) {
        (Ok((v1, _)), Ok((_, alpha))) => (v1, alpha),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "gRPC reflection cannot be built; not serving gRPC");
            return;
        }
    };
    // The Time service's health follows the quorum.
    let watcher = {
        let (shared, health, mut quit) = (shared.clone(), health.clone(), quit.clone());
        tokio::spawn(async move {
            let mut was = None;
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = quit.changed() => return,
                }
                let now = shared.time.quorum_now().is_ok();
                if was != Some(now) {
                    was = Some(now);
                    if now {
                        health.set_serving::<TimeServer<TimeSvc>>().await;
                    } else {
                        health.set_not_serving::<TimeServer<TimeSvc>>().await;
                    }
                }
            }
        })
    };
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let mut server = tonic::transport::Server::builder();
    if let Some(cfg) = tls {
        server = match server.tls_config(cfg) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "gRPC TLS configuration refused; not serving gRPC");
                return;
            }
        };
    }
    let r = server
        .add_service(health_service)
        .add_optional_service(v1)
        .add_optional_service(v1alpha)
        .add_service(TimeServer::new(TimeSvc(shared.clone())))
        .add_service(LedgerServer::new(LedgerSvc(shared.clone())))
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = quit.changed().await;
        })
        .await;
    if let Err(e) = r {
        tracing::error!(error = %e, "gRPC server failed");
    }
    watcher.abort();
}
