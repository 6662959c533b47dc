//! The control socket: where `chronos control` hands the running
//! orchestrator a signed control event, or asks for its status.
//!
//! A Unix socket in the run directory, mode 0600. One request per
//! connection: the client writes a verb line (`submit` followed by the
//! signed note, or `status`), shuts down its write half, and reads one JSON
//! object. The signature, not the socket's permissions, is what authorizes
//! a change: the socket only carries the note to the sequencing loop,
//! which checks it and sequences its records, and then answers once they
//! are committed in PostgreSQL (or says they are not yet).
//!
//! Every refusal leaves an audit event, at most [`AUDIT_PER_MINUTE`] a
//! minute (the next one says how many were left out), so that a flood of
//! forged events cannot fill `audit_events`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use chronos_control::event::Refusal;
use chronos_vault::audit::RateLimit;
use chronos_vault::store::Vault;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::plane::Snapshot;

/// Most audit events of refused control events written per minute.
pub const AUDIT_PER_MINUTE: u32 = 30;

/// The largest request read (a note with a few signatures is far smaller).
const MAX_REQUEST: usize = 64 << 10;

/// A signed event on its way to the sequencing loop.
#[derive(Debug)]
pub struct Request {
    pub note: String,
    pub answer: tokio::sync::oneshot::Sender<Answer>,
}

/// The sequencing loop's answer.
#[derive(Debug)]
pub enum Answer {
    /// Accepted; its records were handed on as batch `seq`.
    Sequenced {
        seq: u64,
        mode: &'static str,
    },
    Refused(Refusal),
    /// Not checked: the loop could not take it now.
    Unavailable(String),
}

/// Binds the socket (replacing a stale one left by a killed process).
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is served by a running process", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// What the socket needs besides its listener.
#[derive(Debug, Clone)]
pub struct Context {
    pub to_loop: mpsc::SyncSender<Request>,
    pub snapshot: Arc<Mutex<Snapshot>>,
    pub database_url: String,
    pub limit: Arc<Mutex<RateLimit>>,
}

/// Serves until `stop` is set.
pub async fn serve(listener: UnixListener, cx: Context, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        let Ok(accepted) = accepted else { continue };
        match accepted {
            Ok((stream, _)) => {
                let cx = cx.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, &cx).await {
                        tracing::warn!(error = %e, "control socket request failed");
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "control socket accept failed"),
        }
    }
}

async fn handle(mut stream: UnixStream, cx: &Context) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut limited = (&mut stream).take(MAX_REQUEST as u64 + 1);
    let read = tokio::time::timeout(Duration::from_secs(5), limited.read_to_end(&mut buf)).await;
    let answer = match read {
        Err(_) => json!({ "error": "the request was not complete within 5 s" }),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(_)) if buf.len() > MAX_REQUEST => json!({ "error": format!("the request exceeds {MAX_REQUEST} bytes") }),
        Ok(Ok(_)) => match std::str::from_utf8(&buf) {
            Err(_) => json!({ "error": "the request is not UTF-8" }),
            Ok(text) => match text.split_once('\n') {
                Some(("status", "")) => status(cx),
                Some(("submit", note)) => submit(note, cx).await,
                _ => json!({ "error": "the first line must be `status` or `submit`" }),
            },
        },
    };
    let mut out = answer.to_string();
    out.push('\n');
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

fn status(cx: &Context) -> serde_json::Value {
    let s = cx.snapshot.lock().map(|s| s.clone()).unwrap_or_default();
    let keys: Vec<serde_json::Value> =
        s.keys.iter().map(|(k, roles, revoked)| json!({ "key": k, "roles": roles, "revoked": revoked })).collect();
    json!({
        "mode": s.mode,
        "hold": s.hold.as_ref().map(|h| json!({ "reason": h.reason, "by": h.by })),
        "recovery_pending": s.recovering,
        "time_quorum": s.quorum,
        "vault_ok": s.vault_ok,
        "keys": keys,
        "keys_recorded_in_log": s.genesis_recorded,
    })
}

async fn submit(note: &str, cx: &Context) -> serde_json::Value {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let sent = cx.to_loop.try_send(Request { note: note.to_owned(), answer: tx });
    if sent.is_err() {
        return json!({ "error": "the orchestrator is busy with other control events; try again" });
    }
    // Waited for however long the loop takes (it may be waiting for room
    // in a full ring): an event it takes is applied and, if refused,
    // audited here, even after the client gave up waiting.
    let Ok(answer) = rx.await else {
        return json!({ "error": "the orchestrator stopped before it took the event; it was not applied" });
    };
    match answer {
        Answer::Unavailable(why) => json!({ "error": why }),
        Answer::Refused(r) => {
            audit_refusal(cx, &r, note).await;
            json!({ "accepted": false, "refusal": r.label(), "reason": r.to_string() })
        }
        Answer::Sequenced { seq, mode } => {
            let committed = wait_committed(&cx.database_url, seq).await;
            json!({ "accepted": true, "seq": seq, "mode": mode, "committed": committed.is_ok(),
                    "detail": committed.err() })
        }
    }
}

/// Waits until batch `seq` is in PostgreSQL (at most 10 s).
async fn wait_committed(url: &str, seq: u64) -> Result<(), String> {
    let (client, conn) = chronos_tls::pg::connect(url).await.map_err(|e| format!("cannot check the commit: {e}"))?;
    tokio::spawn(conn);
    let seq = i64::try_from(seq).map_err(|_| "seq out of range".to_owned())?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let row = client
            .query_one("SELECT EXISTS (SELECT 1 FROM batches WHERE seq = $1)", &[&seq])
            .await
            .map_err(|e| format!("cannot check the commit: {e}"))?;
        if row.get::<_, bool>(0) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err("sequenced, not committed within 10 s: the vault writer commits it when it can".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn audit_refusal(cx: &Context, r: &Refusal, note: &str) {
    let Some(skipped) = cx.limit.lock().ok().and_then(|mut l| l.admit()) else { return };
    let signers: Vec<String> = chronos_ledger::Note::parse(note.as_bytes())
        .map(|n| n.signatures().iter().map(|s| chronos_control::event::key_ref(&s.name, s.key_id)).collect())
        .unwrap_or_default();
    let detail = json!({
        "refusal": r.label(),
        "reason": r.to_string(),
        "signed_by": signers,
        "bytes": note.len(),
        "not_recorded_before": skipped,
    })
    .to_string();
    let written = async {
        let (client, conn) =
            chronos_tls::pg::connect(&cx.database_url).await.map_err(chronos_vault::store::VaultError::from)?;
        tokio::spawn(conn);
        Vault::new(client).audit("orchestrator", "control_event_refused", &detail).await
    };
    if let Err(e) = written.await {
        tracing::error!(error = %e, "could not record the audit event of a refused control event");
    }
}
