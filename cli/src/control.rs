//! `chronos control`: an operator's signed requests to a running log
//! (hold, release, recover, keys add and revoke), its status, and the
//! history of its operation as the log itself records it.
//!
//! Events are signed here, with the operator's key file, and handed to the
//! orchestrator over its control socket (`control.socket`, a Unix socket
//! in the data directory); the orchestrator checks them and records them
//! in the log. Nothing here changes the database directly.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use chronos_control::event::{Action, ControlEvent, Role};
use chronos_control::record::Record;
use chronos_ledger::{Note, NoteSigner};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::database::Source;

/// `[control]`: the control plane.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// The orchestrator's control socket, relative to the data directory
    /// (a Unix socket path must stay under 108 bytes).
    pub socket: String,
    /// The keys the log starts with. Recorded in the log with the first
    /// accepted control event; after that, keys change only through signed
    /// `keys add` and `keys revoke` events, and this list is not used
    /// (it is still read and checked at each start).
    pub keys: Vec<ControlKey>,
}

/// A first key: a verifier key file and its roles.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlKey {
    /// Relative to the data directory.
    pub file: String,
    /// Of `operator` (hold, release, recover), `admin` (keys add, revoke), `auditor`.
    pub roles: Vec<String>,
}

impl Default for ControlConfig {
    fn default() -> ControlConfig {
        ControlConfig {
            socket: "run/control.sock".into(),
            keys: vec![ControlKey { file: OPERATOR_PUB.into(), roles: vec!["admin".into(), "operator".into()] }],
        }
    }
}

/// The key `chronos init` makes for the log's first operator.
pub const OPERATOR_KEY: &str = "operator.key";
pub const OPERATOR_PUB: &str = "operator.pub";

impl ControlConfig {
    /// The first keys, read and checked. A missing file is skipped with a
    /// warning (a data directory made before the control plane has none;
    /// its log can be operated once one is added).
    pub fn genesis(&self, data_dir: &Path) -> anyhow::Result<Vec<(String, Vec<Role>)>> {
        let mut out = Vec::new();
        for (i, k) in self.keys.iter().enumerate() {
            let roles = k
                .roles
                .iter()
                .map(|r| {
                    Role::parse(r)
                        .with_context(|| format!("control.keys[{i}].roles: {r:?} is not operator, admin or auditor"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            if roles.is_empty() {
                bail!("control.keys[{i}].roles is empty");
            }
            let path = data_dir.join(&k.file);
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::warn!(file = %path.display(), "control.keys: no such file; this key is not registered");
                    continue;
                }
                Err(e) => return Err(e).with_context(|| format!("control.keys[{i}]: reading {}", path.display())),
            };
            let key = text.trim().to_owned();
            chronos_ledger::NoteVerifier::parse(&key)
                .with_context(|| format!("control.keys[{i}]: {} is not a verifier key", path.display()))?;
            out.push((key, roles));
        }
        Ok(out)
    }
}

/// Writes a new key pair: `out` (the private key, 0600) and `out` with
/// the extension `.pub` (the verifier key). Returns the verifier key.
pub fn keygen(name: &str, out: &Path) -> anyhow::Result<String> {
    let signer = NoteSigner::generate(name).with_context(|| format!("key name {name:?}"))?;
    crate::init::write_new(out, 0o600, format!("{}\n", signer.private_key_string().as_str()).as_bytes())?;
    let vkey = signer.verifier().to_string();
    crate::init::write_new(&out.with_extension("pub"), 0o644, format!("{vkey}\n").as_bytes())?;
    Ok(vkey)
}

/// A signed action's common options.
#[derive(Debug, clap::Args)]
pub struct Signing {
    /// The log's data directory (its configuration names the origin and the socket).
    #[arg(long, env = "CHRONOS_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The operator's private key file. Default: DATA_DIR/operator.key.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Seconds the signed event stays valid (at most a day).
    #[arg(long, default_value_t = 300)]
    pub valid_for: u64,
    /// Print the signed event instead of submitting it (`chronos control submit` sends it).
    #[arg(long)]
    pub sign_only: bool,
    /// Print the orchestrator's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Signs `action` with the operator's key; seq is the time in ns (beyond
/// every earlier one of the same key, without keeping a counter).
fn sign(s: &Signing, action: Action) -> anyhow::Result<String> {
    let (log, _) = crate::config::Config::load_all(&s.data_dir)?;
    let key_file = s.key.clone().unwrap_or_else(|| s.data_dir.join(OPERATOR_KEY));
    let text = std::fs::read_to_string(&key_file).with_context(|| format!("reading {}", key_file.display()))?;
    let signer = NoteSigner::from_private_key(text.trim())
        .with_context(|| format!("{} is not a private key", key_file.display()))?;
    if s.valid_for == 0 || s.valid_for > 86_400 {
        bail!("--valid-for must be between 1 and 86400 seconds");
    }
    let now = now_ns();
    let event = ControlEvent { origin: log.origin, action, seq: now, expires_ns: now + s.valid_for * 1_000_000_000 };
    Ok(signer.sign(&event.text())?)
}

/// Signs and submits (or prints) an action.
#[allow(clippy::print_stdout)] // the command's output
pub fn act(s: &Signing, action: Action) -> anyhow::Result<ExitCode> {
    let note = sign(s, action)?;
    if s.sign_only {
        print!("{note}");
        return Ok(ExitCode::SUCCESS);
    }
    submit(&s.data_dir, &note, s.json)
}

/// Submits a signed event; exit 0 accepted and committed, 1 refused, 2
/// not submitted or not committed.
#[allow(clippy::print_stdout)] // the command's output
pub fn submit(data_dir: &Path, note: &str, json_out: bool) -> anyhow::Result<ExitCode> {
    let answer = request(data_dir, &format!("submit\n{note}"))?;
    let text = |k: &str| answer[k].as_str().unwrap_or_default().to_owned();
    if json_out {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else if answer["accepted"] == false {
        println!("refused ({}): {}", text("refusal"), text("reason"));
    } else if answer["committed"] == true {
        println!("accepted: committed in batch {}; the log is in mode {}", answer["seq"], text("mode"));
    } else {
        println!("accepted: sequenced as batch {}, not committed yet: {}", answer["seq"], text("detail"));
    }
    Ok(match (answer["accepted"].as_bool(), answer["committed"].as_bool()) {
        (Some(true), Some(true)) => ExitCode::SUCCESS,
        (Some(false), _) => ExitCode::from(1),
        _ => ExitCode::from(2),
    })
}

/// The running orchestrator's status.
#[allow(clippy::print_stdout)] // the command's output
pub fn status(data_dir: &Path, json_out: bool) -> anyhow::Result<ExitCode> {
    let a = request(data_dir, "status\n")?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&a)?);
        return Ok(ExitCode::SUCCESS);
    }
    let yes = |v: &serde_json::Value| if v == true { "yes" } else { "no" };
    println!("mode              {}", a["mode"].as_str().unwrap_or_default());
    match a["hold"].as_object() {
        Some(h) => println!("hold              placed by {}: {}", h["by"].as_str().unwrap_or_default(), h["reason"]),
        None => println!("hold              none"),
    }
    println!("recovery pending  {}", yes(&a["recovery_pending"]));
    println!("time quorum       {}", yes(&a["time_quorum"]));
    println!("vault reachable   {}", yes(&a["vault_ok"]));
    let recorded =
        if a["keys_recorded_in_log"] == true { "recorded in the log" } else { "from chronos.toml, not yet recorded" };
    println!("keys              ({recorded})");
    for k in a["keys"].as_array().into_iter().flatten() {
        let roles: Vec<&str> = k["roles"].as_array().into_iter().flatten().filter_map(|r| r.as_str()).collect();
        let revoked = if k["revoked"] == true { "  REVOKED" } else { "" };
        println!("  {:<24} {}{revoked}", k["key"].as_str().unwrap_or_default(), roles.join(","));
    }
    Ok(ExitCode::SUCCESS)
}

fn socket_path(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let (_, cfg) = crate::config::Config::load_all(data_dir)?;
    Ok(data_dir.join(cfg.control.socket))
}

/// One request over the control socket.
fn request(data_dir: &Path, body: &str) -> anyhow::Result<serde_json::Value> {
    let path = socket_path(data_dir)?;
    let mut s = UnixStream::connect(&path).with_context(|| {
        format!("cannot reach the orchestrator's control socket {} (is `chronos up` running?)", path.display())
    })?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(body.as_bytes())?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut out = String::new();
    s.read_to_string(&mut out).context(
        "no answer from the orchestrator within 30 s; an event it takes later is still applied (see `chronos \
         control status` and `history`)",
    )?;
    let v: serde_json::Value =
        serde_json::from_str(&out).with_context(|| format!("an answer that is not JSON: {out:?}"))?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        bail!("the orchestrator did not take the request: {e}");
    }
    Ok(v)
}

/// The log's operation, from its control records.
#[allow(clippy::print_stdout)] // the command's output
pub fn history(source: &Source, json_out: bool) -> anyhow::Result<ExitCode> {
    let db = source.open()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let records = rt.block_on(async {
        let client = crate::database::connect(&db.url).await?;
        chronos_vault::store::control_records(&client).await.context("reading control_log (schema version 6 or later)")
    })?;
    let mut out = Vec::new();
    for (leaf, time_ns, bytes) in &records {
        let record = Record::parse(bytes).map_err(|e| anyhow::anyhow!("the control record at leaf {leaf}: {e}"))?;
        out.push(json!({ "leaf": leaf, "time_ns": time_ns, "time": rfc3339(*time_ns), "record": describe(&record) }));
    }
    if json_out {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if out.is_empty() {
        println!("no control records: this log was never operated");
    } else {
        for o in &out {
            println!(
                "{:>10}  {}  {}",
                o["leaf"].as_u64().unwrap_or_default(),
                o["time"].as_str().unwrap_or_default(),
                o["record"]["summary"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn rfc3339(ns: u64) -> String {
    ::time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| t.format(&::time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

fn describe(r: &Record) -> serde_json::Value {
    match r {
        Record::Genesis { keys } => {
            let keys: Vec<serde_json::Value> = keys
                .iter()
                .map(|(k, roles)| json!({ "key": k, "roles": roles.iter().map(|r| r.name()).collect::<Vec<_>>() }))
                .collect();
            json!({ "kind": "genesis", "keys": keys, "summary": format!("genesis: {} first key(s)", keys.len()) })
        }
        Record::Event { note } => {
            let parsed = Note::parse(note.as_bytes()).ok();
            let signers: Vec<String> = parsed
                .as_ref()
                .map(|n| n.signatures().iter().map(|s| chronos_control::event::key_ref(&s.name, s.key_id)).collect())
                .unwrap_or_default();
            let event = parsed.as_ref().and_then(|n| ControlEvent::parse(n.text_unverified()).ok());
            let (action, argument) = match event.as_ref().map(|e| &e.action) {
                Some(Action::Hold { reason }) => ("hold", reason.clone()),
                Some(Action::KeysAdd { key, roles }) => {
                    ("keys-add", format!("{key} as {}", roles.iter().map(|r| r.name()).collect::<Vec<_>>().join(",")))
                }
                Some(Action::KeysRevoke { key }) => ("keys-revoke", key.clone()),
                Some(a @ (Action::QuarantineRelease { id } | Action::QuarantineDrop { id })) => {
                    (a.name(), format!("#{id}"))
                }
                Some(a) => (a.name(), String::new()),
                None => ("?", String::new()),
            };
            let summary = if argument.is_empty() {
                format!("{action} (signed by {})", signers.join(", "))
            } else {
                format!("{action} {argument:?} (signed by {})", signers.join(", "))
            };
            json!({ "kind": "event", "action": action, "argument": argument, "signed_by": signers, "note": note,
                    "summary": summary })
        }
        Record::Transition { from, to, cause } => json!({
            "kind": "transition", "from": from.name(), "to": to.name(), "cause": cause.token(),
            "summary": format!("mode {} → {} ({})", from.name(), to.name(), cause.token()),
        }),
    }
}

/// What became of each quarantined body, from the log's control records:
/// (id → "released" or "dropped", the leaf of the event).
fn settled(records: &[(u64, u64, Vec<u8>)]) -> std::collections::BTreeMap<u64, (&'static str, u64)> {
    let mut out = std::collections::BTreeMap::new();
    for (leaf, _, bytes) in records {
        let Ok(Record::Event { note }) = Record::parse(bytes) else { continue };
        let Ok(n) = Note::parse(note.as_bytes()) else { continue };
        match ControlEvent::parse(n.text_unverified()).map(|e| e.action) {
            Ok(Action::QuarantineRelease { id }) => out.insert(id, ("released", *leaf)),
            Ok(Action::QuarantineDrop { id }) => out.insert(id, ("dropped", *leaf)),
            _ => None,
        };
    }
    out
}

/// `chronos control quarantine list`.
#[allow(clippy::print_stdout)] // the command's output
pub fn quarantine_list(source: &Source, json_out: bool) -> anyhow::Result<ExitCode> {
    let db = source.open()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (rows, records) = rt.block_on(async {
        let client = crate::database::connect(&db.url).await?;
        let rows = chronos_vault::store::quarantined(&client, None)
            .await
            .context("reading the quarantine (schema version 7 or later)")?;
        let records = chronos_vault::store::control_records(&client).await?;
        anyhow::Ok((rows, records))
    })?;
    let settled = settled(&records);
    let list: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let (status, leaf) = settled.get(&r.id).map_or(("pending", None), |(s, l)| (*s, Some(*l)));
            json!({
                "id": r.id,
                // Whole milliseconds: the float of seconds carries no more.
                "received_at": rfc3339((r.received_at * 1e3).round() as u64 * 1_000_000),
                "events": r.event_count,
                "digest": hex::encode(r.digest),
                "reason": r.reason,
                "status": status,
                "settled_by_leaf": leaf,
            })
        })
        .collect();
    if json_out {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else if list.is_empty() {
        println!("the quarantine is empty");
    } else {
        for q in &list {
            println!(
                "#{:<5} {}  {:>5} event(s)  {:<8}  {}",
                q["id"].as_u64().unwrap_or_default(),
                q["received_at"].as_str().unwrap_or_default(),
                q["events"].as_u64().unwrap_or_default(),
                q["status"].as_str().unwrap_or_default(),
                q["reason"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
