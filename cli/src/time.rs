//! `chronos time`: the trusted clock as chronyc shows sources and
//! tracking: each source's state, offset and interval in the last round,
//! the agreed interval, the policy in force. From the last round's
//! evidence in the database and, on the host of the log, the published
//! clock.

use std::process::ExitCode;

use anyhow::Context as _;
use chronos_quorum::evidence::{Evidence, Outcome};
use serde_json::json;

use crate::database::Source;

/// The last stored round: its evidence and its age in seconds.
async fn last_round(url: &str) -> anyhow::Result<Option<(Evidence, f64)>> {
    let (client, conn) = chronos_tls::pg::connect(url)
        .await
        .with_context(|| format!("cannot connect to PostgreSQL at {}", crate::database::redact(url)))?;
    tokio::spawn(conn);
    let row = client
        .query_opt(
            "SELECT evidence, digest, extract(epoch FROM now() - recorded_at)::float8 FROM time_rounds ORDER BY round DESC LIMIT 1",
            &[],
        )
        .await
        .context("reading time_rounds (is the schema at version 5?)")?;
    let Some(row) = row else { return Ok(None) };
    let digest: Vec<u8> = row.get(1);
    let digest: [u8; 32] = digest.try_into().map_err(|_| anyhow::anyhow!("a time_rounds digest is not 32 bytes"))?;
    let evidence = Evidence::open(row.get(0), &digest).context("the last round's evidence")?;
    Ok(Some((evidence, row.get(2))))
}

#[allow(clippy::print_stdout)] // the command's output
pub fn time(source: &Source, json_out: bool) -> anyhow::Result<ExitCode> {
    let plan = match &source.data_dir {
        Some(dir) => Some(crate::services::Plan::load(dir)?),
        None => None,
    };
    let quorum = plan.as_ref().is_none_or(|p| !p.time.sources.is_empty());
    let reader = plan.as_ref().map(|p| chronos_time::TimeReader::new(&p.time));
    let now = reader.as_ref().map(|r| r.stamp_always());
    let served = reader.as_ref().map(|r| r.quorum_now());
    let last = if quorum {
        let db = source.open()?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(last_round(&db.url))?
    } else {
        None
    };
    let policy = plan.as_ref().map(|p| p.time.policy.as_str());
    let sources: Vec<serde_json::Value> = last.as_ref().map_or_else(Vec::new, |(e, _)| {
        e.sources
            .iter()
            .map(|s| match &s.outcome {
                Outcome::Measured { interval, verdict, offset_ns, delay_ns, .. } => json!({
                    "name": s.name, "kind": s.kind, "address": s.address,
                    "state": serde_json::to_value(verdict).unwrap_or_default(),
                    "offset_ns": offset_ns, "delay_ns": delay_ns,
                    "earliest_ns": interval.earliest, "latest_ns": interval.latest,
                }),
                Outcome::Unreachable { reason } => json!({
                    "name": s.name, "kind": s.kind, "address": s.address,
                    "state": "unreachable", "reason": reason,
                }),
            })
            .collect()
    });
    let synchronized = match (&served, quorum) {
        (Some(s), true) => s.is_ok(),
        (_, false) => true,
        (None, true) => last.as_ref().is_some_and(|(e, _)| e.agreed.is_some()),
    };
    let report = json!({
        "mode": if quorum { "quorum" } else { "host" },
        "policy": policy,
        "synchronized": synchronized,
        "reason": served.as_ref().and_then(|s| s.as_ref().err().cloned()),
        "now": now.as_ref().map(|s| json!({
            "earliest_ns": s.interval.earliest, "latest_ns": s.interval.latest, "source": s.source,
        })),
        "round": last.as_ref().map(|(e, age)| json!({
            "round": e.round, "age_s": age, "configured": e.configured,
            "malfeasance_report": e.malfeasance.is_some(),
            "required": e.rules().required(),
            "peers_required": (e.peer_rules().configured > 0).then(|| e.peer_rules().required()),
            "agreed": e.agreed.map(|a| json!({ "earliest_ns": a.earliest, "latest_ns": a.latest })),
        })),
        "sources": sources,
    });
    if json_out {
        println!("{report:#}");
    } else {
        print_text(&report);
    }
    Ok(if synchronized { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

#[allow(clippy::print_stdout)] // the command's output
fn print_text(r: &serde_json::Value) {
    let ms = |ns: f64| format!("{:.3} ms", ns / 1e6);
    match r["mode"].as_str() {
        Some("host") => println!("Time: host clock (no [time] source configured: no quorum is asked for)"),
        _ => println!(
            "Time: quorum, policy {} ({})",
            r["policy"].as_str().unwrap_or("?"),
            if r["synchronized"].as_bool() == Some(true) { "synchronized" } else { "NOT synchronized" }
        ),
    }
    if let Some(reason) = r["reason"].as_str() {
        println!("  no quorum: {reason}");
    }
    if let Some(now) = r["now"].as_object() {
        let (e, l) = (now["earliest_ns"].as_f64().unwrap_or(0.0), now["latest_ns"].as_f64().unwrap_or(0.0));
        println!(
            "  now: {} ± {}  source {}",
            crate::prove::rfc3339(((e + l) / 2.0) as u64),
            ms((l - e) / 2.0),
            now["source"]
        );
    }
    if let Some(round) = r["round"].as_object() {
        println!(
            "  last round {} ({:.1} s ago): {} sources configured, {} must agree",
            round["round"],
            round["age_s"].as_f64().unwrap_or(0.0),
            round["configured"],
            round["required"]
        );
    }
    let sources = r["sources"].as_array().cloned().unwrap_or_default();
    if !sources.is_empty() {
        println!(
            "  {:<16} {:<5} {:<24} {:<12} {:>14} {:>14}",
            "source", "kind", "address", "state", "offset", "± distance"
        );
        for s in sources {
            let half = (s["latest_ns"].as_f64().unwrap_or(0.0) - s["earliest_ns"].as_f64().unwrap_or(0.0)) / 2.0;
            let (off, dist) = match s["offset_ns"].as_f64() {
                Some(o) => (ms(o), ms(half)),
                None => (s["reason"].as_str().unwrap_or("").to_owned(), String::new()),
            };
            println!(
                "  {:<16} {:<5} {:<24} {:<12} {:>14} {:>14}",
                s["name"].as_str().unwrap_or(""),
                s["kind"].as_str().unwrap_or(""),
                s["address"].as_str().unwrap_or(""),
                s["state"].as_str().unwrap_or(""),
                off,
                dist
            );
        }
    }
}
