//! Reading a log out of PostgreSQL: three connections that share one
//! snapshot (`pg_export_snapshot`, as pg_dump does for parallel dumps), so
//! `batches`, `logs` and `checkpoints` are read as of one instant even while
//! `chronos up` keeps writing. Each table is one binary `COPY ... TO STDOUT`
//! ordered by its key, parsed without copying and handed to the engine in
//! bounded chunks: memory does not grow with the log. The `logs_rebuild`
//! row, which says which `logs` rows are missing because they are being
//! restored after a crash, is read in the same snapshot.

use std::pin::pin;
use std::sync::{Arc, Barrier};

use futures_util::StreamExt as _;
use tokio::sync::mpsc;
use tokio_postgres::Client;

use crate::Error;
use crate::copy::{CopyError, Fields, RowReader};
use crate::engine::{BatchRow, CheckpointRow, Identity, LogRow, LogsRebuildRow, Streams};

const CHUNK_ROWS: usize = 2048;
const CHUNK_BYTES: usize = 4 << 20;
const CHANNEL_CHUNKS: usize = 4;

/// The three COPY statements. The verifier reads exactly these rows.
pub const BATCHES_COPY: &str = "COPY (SELECT seq, first_leaf, leaf_count, root, chain, time_ns, uncertainty_ns, \
     time_source, payload_codec, payload FROM batches ORDER BY seq) TO STDOUT (FORMAT binary)";
pub const LOGS_COPY: &str = "COPY (SELECT leaf_index, batch_seq, claimed_time, leaf_hash, event FROM logs \
     ORDER BY leaf_index) TO STDOUT (FORMAT binary)";
pub const CHECKPOINTS_COPY: &str =
    "COPY (SELECT id, tree_size, note FROM checkpoints ORDER BY tree_size, id) TO STDOUT (FORMAT binary)";

enum Msg<T> {
    Rows(Vec<T>),
    End,
    Failed(Error),
}

/// Rows from a reader task, as a blocking iterator for the engine's threads.
#[derive(Debug)]
pub struct Rows<T> {
    rx: mpsc::Receiver<Msg<T>>,
    current: std::vec::IntoIter<T>,
    what: &'static str,
    done: bool,
}

impl<T> std::fmt::Debug for Msg<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

impl<T> Iterator for Rows<T> {
    type Item = Result<T, Error>;

    fn next(&mut self) -> Option<Result<T, Error>> {
        loop {
            if let Some(row) = self.current.next() {
                return Some(Ok(row));
            }
            if self.done {
                return None;
            }
            match self.rx.blocking_recv() {
                Some(Msg::Rows(v)) => self.current = v.into_iter(),
                Some(Msg::End) => self.done = true,
                Some(Msg::Failed(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                None => {
                    self.done = true;
                    return Some(Err(Error::Read {
                        what: self.what,
                        reason: "the reader stopped before the end".into(),
                    }));
                }
            }
        }
    }
}

fn batch_row(f: &mut Fields<'_>) -> Result<BatchRow, CopyError> {
    Ok(BatchRow {
        seq: f.i64("seq")?,
        first_leaf: f.i64("first_leaf")?,
        leaf_count: f.i64("leaf_count")?,
        root: f.bytes("root")?,
        chain: f.bytes("chain")?,
        time_ns: f.i64("time_ns")?,
        uncertainty_ns: f.i64("uncertainty_ns")?,
        time_source: f.bytes("time_source")?,
        payload_codec: f.i16("payload_codec")?,
        payload: f.bytes("payload")?,
    })
}

fn log_row(f: &mut Fields<'_>) -> Result<LogRow, CopyError> {
    Ok(LogRow {
        leaf_index: f.i64("leaf_index")?,
        batch_seq: f.i64("batch_seq")?,
        claimed_time_pg_us: f.opt_i64("claimed_time")?,
        leaf_hash: f.bytes("leaf_hash")?,
        event: f.bytes("event")?,
    })
}

fn checkpoint_row(f: &mut Fields<'_>) -> Result<CheckpointRow, CopyError> {
    Ok(CheckpointRow { id: f.i64("id")?, tree_size: f.i64("tree_size")?, note: f.bytes("note")? })
}

fn size_of_batch(r: &BatchRow) -> usize {
    r.payload.len() + 128
}
fn size_of_log(r: &LogRow) -> usize {
    r.event.len() + 64
}
fn size_of_checkpoint(r: &CheckpointRow) -> usize {
    r.note.len()
}

/// Runs one COPY and forwards its rows in chunks.
async fn pump<T: Send + 'static>(
    client: Client,
    query: &'static str,
    what: &'static str,
    parse: fn(&mut Fields<'_>) -> Result<T, CopyError>,
    size: fn(&T) -> usize,
    tx: mpsc::Sender<Msg<T>>,
) {
    let db = |e: tokio_postgres::Error| Error::Database { what, source: e };
    let result = async {
        let mut stream = pin!(client.copy_out(query).await.map_err(db)?);
        let mut reader = RowReader::new();
        let mut chunk = Vec::with_capacity(CHUNK_ROWS);
        let mut bytes = 0;
        while let Some(msg) = stream.next().await {
            reader.feed::<Error>(msg.map_err(db)?, |f| {
                let row = parse(f).map_err(|e| Error::Read { what, reason: e.to_string() })?;
                bytes += size(&row);
                chunk.push(row);
                Ok(())
            })?;
            if chunk.len() >= CHUNK_ROWS || bytes >= CHUNK_BYTES {
                bytes = 0;
                if tx.send(Msg::Rows(std::mem::take(&mut chunk))).await.is_err() {
                    return Ok(()); // the engine stopped
                }
            }
        }
        if !reader.finished() {
            return Err(Error::Read { what, reason: "the COPY stream ended without its trailer".into() });
        }
        if !chunk.is_empty() && tx.send(Msg::Rows(chunk)).await.is_err() {
            return Ok(());
        }
        let _ = tx.send(Msg::End).await;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        let _ = tx.send(Msg::Failed(e)).await;
    }
}

async fn connect(url: &str) -> Result<Client, Error> {
    let (client, conn) = chronos_tls::pg::connect(url).await.map_err(Error::Connect)?;
    // A broken connection surfaces as the error of the query using it.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

fn rows<T>(rx: mpsc::Receiver<Msg<T>>, what: &'static str) -> Rows<T> {
    Rows { rx, current: Vec::new().into_iter(), what, done: false }
}

/// The three streams of a database.
pub(crate) type DbStreams = Streams<Rows<BatchRow>, Rows<LogRow>, Rows<CheckpointRow>>;

const BEGIN: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";

fn q(what: &'static str) -> impl Fn(tokio_postgres::Error) -> Error {
    move |e| Error::Database { what, source: e }
}

/// What the lead connection learns before streaming.
struct Lead {
    identity: Identity,
    total: Option<i64>,
    logs_rebuild: Option<LogsRebuildRow>,
    snapshot: String,
}

async fn lead(client: &Client) -> Result<Lead, Error> {
    client.batch_execute(BEGIN).await.map_err(q("a snapshot"))?;
    let snapshot: String = client.query_one("SELECT pg_export_snapshot()", &[]).await.map_err(q("a snapshot"))?.get(0);
    let has_log: bool = client
        .query_one("SELECT to_regclass('chronos_log') IS NOT NULL AND to_regclass('batches') IS NOT NULL", &[])
        .await
        .map_err(q("the schema"))?
        .get(0);
    if !has_log {
        return Err(Error::NoLog(
            "it has no chronos_log table: this is not a Chronos database, or `chronos up` never ran on it".into(),
        ));
    }
    let row = client
        .query_opt("SELECT origin, hash_alg, key_check, verifier_key, genesis FROM chronos_log WHERE id = 1", &[])
        .await
        .map_err(q("chronos_log"))?
        .ok_or_else(|| Error::NoLog("chronos_log is empty: no service has started on this database yet".into()))?;
    let identity = Identity {
        origin: row.get(0),
        hash_alg: row.get(1),
        key_check: row.get(2),
        verifier_key: row.get(3),
        genesis: row.get(4),
    };
    let total: Option<i64> = client
        .query_opt("SELECT first_leaf + leaf_count FROM batches ORDER BY seq DESC LIMIT 1", &[])
        .await
        .map_err(q("batches"))?
        .map(|r| r.get(0));
    Ok(Lead { identity, total, logs_rebuild: logs_rebuild(client).await?, snapshot })
}

/// The `logs_rebuild` row, in the lead's snapshot. A schema older than
/// version 4 has no such table: nothing is being rebuilt that it knows of.
async fn logs_rebuild(client: &Client) -> Result<Option<LogsRebuildRow>, Error> {
    let exists: bool =
        client.query_one("SELECT to_regclass('logs_rebuild') IS NOT NULL", &[]).await.map_err(q("the schema"))?.get(0);
    if !exists {
        return Ok(None);
    }
    Ok(client
        .query_opt("SELECT from_leaf, to_leaf FROM logs_rebuild WHERE id = 1", &[])
        .await
        .map_err(q("logs_rebuild"))?
        .map(|r| LogsRebuildRow { from_leaf: r.get(0), to_leaf: r.get(1) }))
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// The log's rows as of now: its identity and the three streams.
///
/// Each connection runs on its own thread with its own single-threaded
/// runtime, so a COPY's messages go from socket to parser without
/// crossing threads. The lead connection exports its snapshot and keeps
/// its transaction open until the two others have imported it (the
/// barrier); all three then stream.
pub(crate) fn open(url: &str) -> Result<(Identity, DbStreams), Error> {
    let barrier = Arc::new(Barrier::new(3));
    let (info_tx, info_rx) = std::sync::mpsc::sync_channel::<Result<Lead, Error>>(1);
    let (btx, brx) = mpsc::channel(CHANNEL_CHUNKS);
    let (ltx, lrx) = mpsc::channel(CHANNEL_CHUNKS);
    let (ctx, crx) = mpsc::channel(CHANNEL_CHUNKS);
    let rt = runtime()?;
    let (url0, b0) = (url.to_owned(), barrier.clone());
    std::thread::Builder::new().name("verify-batches".into()).spawn(move || {
        rt.block_on(async move {
            let client = match connect(&url0).await {
                Ok(c) => c,
                Err(e) => return drop(info_tx.send(Err(e))),
            };
            let led = lead(&client).await;
            let failed = led.is_err();
            let _ = info_tx.send(led);
            if failed {
                return;
            }
            b0.wait();
            pump(client, BATCHES_COPY, "batches", batch_row, size_of_batch, btx).await;
        })
    })?;
    let Lead { identity, total, logs_rebuild, snapshot } =
        info_rx.recv().map_err(|_| Error::Read { what: "the log", reason: "the lead reader stopped".into() })??;
    spawn_follower(url, &snapshot, barrier.clone(), "verify-logs", LOGS_COPY, "logs", log_row, size_of_log, ltx)?;
    spawn_follower(
        url,
        &snapshot,
        barrier,
        "verify-checkpoints",
        CHECKPOINTS_COPY,
        "checkpoints",
        checkpoint_row,
        size_of_checkpoint,
        ctx,
    )?;
    Ok((
        identity,
        Streams {
            batches: rows(brx, "batches"),
            logs: rows(lrx, "logs"),
            checkpoints: rows(crx, "checkpoints"),
            logs_rebuild,
            total_leaves: total.and_then(|t| u64::try_from(t).ok()).unwrap_or(0),
        },
    ))
}

/// A connection that joins the lead's snapshot, then streams one table.
#[allow(clippy::too_many_arguments)]
fn spawn_follower<T: Send + 'static>(
    url: &str,
    snapshot: &str,
    barrier: Arc<Barrier>,
    thread: &str,
    query: &'static str,
    what: &'static str,
    parse: fn(&mut Fields<'_>) -> Result<T, CopyError>,
    size: fn(&T) -> usize,
    tx: mpsc::Sender<Msg<T>>,
) -> Result<(), Error> {
    let rt = runtime()?;
    let (url, snapshot) = (url.to_owned(), snapshot.to_owned());
    std::thread::Builder::new().name(thread.into()).spawn(move || {
        rt.block_on(async move {
            let joined = async {
                let c = connect(&url).await?;
                c.batch_execute(&format!("{BEGIN}; SET TRANSACTION SNAPSHOT '{snapshot}'"))
                    .await
                    .map_err(q("a snapshot"))?;
                Ok::<_, Error>(c)
            }
            .await;
            // Always meet the others, even after a failure, so none waits forever.
            barrier.wait();
            match joined {
                Ok(c) => pump(c, query, what, parse, size, tx).await,
                Err(e) => drop(tx.send(Msg::Failed(e)).await),
            }
        })
    })?;
    Ok(())
}
