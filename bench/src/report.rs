//! The run's report, in Markdown: the limits and end-to-end figures in one
//! table, the ratios against the targets, CPU and memory per process, and
//! the scaling sweep.

use std::fmt::Write as _;

use crate::{Phase, Results};

/// Where and how the run was made, for the report's head.
#[derive(Debug, Clone)]
pub struct Context {
    pub command: String,
    pub machine: String,
    pub date: String,
    pub hash: String,
}

fn mb(bytes_per_sec: f64) -> String {
    format!("{:.1}", bytes_per_sec / 1e6)
}

fn rate(events_per_sec: f64) -> String {
    if events_per_sec >= 1e6 {
        format!("{:.2} M", events_per_sec / 1e6)
    } else if events_per_sec >= 1e3 {
        format!("{:.1} k", events_per_sec / 1e3)
    } else {
        format!("{events_per_sec:.0}")
    }
}

fn ms(d: std::time::Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

/// A one-line description of a phase's traffic.
fn traffic(p: &Phase) -> String {
    let offered = p.offered.map(|r| format!(", open loop {:.0} bodies/s offered", r)).unwrap_or_default();
    format!("{} events/body, {} connections{offered}", p.shape.batch, p.shape.connections)
}

fn phase_row(out: &mut String, name: &str, p: &Phase) {
    let r = &p.run;
    let _ = writeln!(
        out,
        "| {name} ({}) | {} | {} | p50 {} / p95 {} / p99 {} ms; {} × 503, {} retried, {} replays |",
        traffic(p),
        rate(r.events_per_sec()),
        mb(r.bytes_per_sec()),
        ms(r.latency(50.0)),
        ms(r.latency(95.0)),
        ms(r.latency(99.0)),
        r.status_503,
        r.retries(),
        r.replays(),
    );
}

/// Events per CPU-second of the hasher processes during the max phase.
pub fn hasher_rate(p: &Phase) -> f64 {
    let cores = p.cores("hasher-");
    if cores > 0.0 { p.run.events_per_sec() / cores } else { 0.0 }
}

/// Peak private memory of all Chronos processes (not PostgreSQL, not the
/// load generator), MiB.
fn chronos_private_mib(p: &Phase) -> f64 {
    p.usage
        .iter()
        .filter(|(k, _)| !k.starts_with("postgres") && k.as_str() != crate::LOAD_GENERATOR)
        .map(|(_, u)| u.peak.private_kb as f64 / 1024.0)
        .sum()
}

pub fn markdown(r: &Results, cx: &Context) -> String {
    let mut o = String::new();
    let max = &r.max;
    let _ = writeln!(o, "Command: `{}`\n", cx.command);
    let _ = writeln!(
        o,
        "Machine: {}; PostgreSQL {} (embedded cluster unless a URL was given), Chronos and the load generator all \
         on it. Run on {}. Log hash: {}. Traffic: {}{}, events of 150–400 bytes.\n",
        cx.machine,
        r.postgres_version,
        cx.date,
        cx.hash,
        match max.shape.framing {
            crate::events::Framing::Ndjson => "NDJSON",
            crate::events::Framing::JsonArray => "JSON arrays",
        },
        if max.shape.gzip { ", gzip" } else { "" },
    );
    let _ = writeln!(o, "| measurement | logs/s | MB/s | notes |\n|---|---|---|---|");
    let c = &r.copy;
    let _ = writeln!(
        o,
        "| raw binary COPY into `logs` (1 client, no hashing) | {} | {} | the {} rows of the max-load window, one transaction, best of 3 |",
        rate(c.logs.events),
        mb(c.logs.bytes),
        c.rows
    );
    let _ = writeln!(
        o,
        "| raw binary COPY into `logs` + `batches` | {} | {} | and their {} batch rows (logged: payloads go to the WAL) |",
        rate(c.logs_and_batches.events),
        mb(c.logs_and_batches.bytes),
        c.batches
    );
    let h = &r.hashing;
    let _ =
        writeln!(o, "| leaf hashes + batch roots, 1 core | {} | {} | |", rate(h.one_core.events), mb(h.one_core.bytes));
    let _ = writeln!(
        o,
        "| leaf hashes + batch roots, all {} cores | {} | {} | |",
        h.cores,
        rate(h.all_cores.events),
        mb(h.all_cores.bytes)
    );
    let _ = writeln!(
        o,
        "| leaf hashes + roots + canonical payload (zstd), 1 core | {} | {} | all a hasher computes |",
        rate(h.one_core_with_payload.events),
        mb(h.one_core_with_payload.bytes)
    );
    let _ = writeln!(
        o,
        "| ring, 1 producer → 1 consumer thread | {} | {} | records of one body's events |",
        rate(r.ring.events),
        mb(r.ring.bytes)
    );
    let _ = writeln!(o, "| memcpy, 1 core | | {} | 64 MiB |", mb(r.memcpy));
    phase_row(&mut o, "**end-to-end, max load**", max);
    phase_row(&mut o, "end-to-end, 50% load", &r.half);
    phase_row(&mut o, "overload, 2× max offered", &r.overload);

    let e2e = max.run.events_per_sec();
    let p99_half = r.half.run.latency(99.0);
    let hr = hasher_rate(max);
    let _ = writeln!(o, "\n| ratio | value | target | |\n|---|---|---|---|");
    let vs_copy = e2e / c.logs.events;
    let _ = writeln!(
        o,
        "| end-to-end / raw COPY into `logs` | **{}** | ≥ 50% | {}; median of {} back-to-back pairs: {} |",
        pct(vs_copy),
        verdict(vs_copy >= 0.5),
        r.ratios.len(),
        r.ratios.iter().map(|&x| pct(x)).collect::<Vec<_>>().join(", ")
    );
    let _ =
        writeln!(o, "| end-to-end / raw COPY into `logs` + `batches` | {} | | |", pct(e2e / c.logs_and_batches.events));
    let _ = writeln!(
        o,
        "| p99 ack latency at 50% load | **{} ms** | ≤ 200 ms | {} |",
        ms(p99_half),
        verdict(p99_half.as_secs_f64() <= 0.2)
    );
    let vs_hash = hr / h.one_core.events;
    let _ = writeln!(
        o,
        "| hasher processes: events per CPU-second / leaf hashes + roots, 1 core | **{}** | ≥ 80% | {}: a hasher also makes the zstd payload |",
        pct(vs_hash),
        verdict(vs_hash >= 0.8)
    );
    let _ = writeln!(
        o,
        "| hasher processes: events per CPU-second / the same work in-process, 1 core | **{}** | ≥ 80% | {} |",
        pct(hr / h.one_core_with_payload.events),
        verdict(hr / h.one_core_with_payload.events >= 0.8)
    );
    let _ = writeln!(o, "| end-to-end / hashing on all cores | {} | | |", pct(e2e / h.all_cores.events));
    let _ = writeln!(o, "| end-to-end / ring | {} | | |", pct(e2e / r.ring.events));
    let (m_max, m_over) = (chronos_private_mib(max), chronos_private_mib(&r.overload));
    let _ = writeln!(
        o,
        "| Chronos private memory, overload / max load | {:.0} / {:.0} MiB | bounded | {} × 503 in overload |",
        m_over, m_max, r.overload.run.status_503
    );

    let _ = writeln!(
        o,
        "\nCPU (cores: CPU-seconds per second of the window) and peak memory (RSS / private, MiB) per process:\n"
    );
    let phases = [("max load", max), ("50% load", &r.half), ("overload", &r.overload)];
    let _ = write!(o, "| process |");
    for (n, _) in &phases {
        let _ = write!(o, " {n}: CPU | {n}: memory |");
    }
    let _ = writeln!(o, "\n|---|{}", "---|---|".repeat(phases.len()));
    for name in max.usage.keys() {
        let _ = write!(o, "| {name} |");
        for (_, p) in &phases {
            match p.usage.get(name) {
                Some(u) => {
                    let _ = write!(
                        o,
                        " {:.2} | {:.0} / {:.0} |",
                        u.cpu_secs / p.run.window_secs(),
                        u.peak.rss_kb as f64 / 1024.0,
                        u.peak.private_kb as f64 / 1024.0
                    );
                }
                None => {
                    let _ = write!(o, " | |");
                }
            }
        }
        let _ = writeln!(o);
    }
    let _ = write!(o, "| all |");
    for (_, p) in &phases {
        let _ = write!(o, " {:.2} | |", p.cores(""));
    }
    let _ = writeln!(o);

    if !r.search.is_empty() {
        let _ = writeln!(
            o,
            "\nFinding the maximum load (closed loop; connections doubled until two steps in a row did not beat the best by 5%):\n\n\
             | connections | logs/s | MB/s | p50 / p99 ms | 503s | CPU cores used |\n|---|---|---|---|---|---|"
        );
        for p in &r.search {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} / {} | {} | {:.2} |",
                p.shape.connections,
                rate(p.run.events_per_sec()),
                mb(p.run.bytes_per_sec()),
                ms(p.run.latency(50.0)),
                ms(p.run.latency(99.0)),
                p.run.status_503,
                p.cores(""),
            );
        }
    }
    if !r.sweep.is_empty() {
        let _ = writeln!(
            o,
            "\nScaling (max load; each point changes one thing from the first row):\n\n\
             | point | hashers | ingest processes | events/body | connections | logs/s | MB/s | vs first row | p50 / p99 ms | 503s | CPU cores used |\n\
             |---|---|---|---|---|---|---|---|---|---|---|"
        );
        for p in std::iter::once(max).chain(&r.sweep) {
            let label = if std::ptr::eq(p, max) { "baseline (max load above)" } else { p.label.as_str() };
            let _ = writeln!(
                o,
                "| {label} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {:.2} |",
                p.hashers,
                p.ingests,
                p.shape.batch,
                p.shape.connections,
                rate(p.run.events_per_sec()),
                mb(p.run.bytes_per_sec()),
                pct(p.run.events_per_sec() / e2e),
                ms(p.run.latency(50.0)),
                ms(p.run.latency(99.0)),
                p.run.status_503,
                p.cores(""),
            );
        }
    }
    let st = &r.storage;
    let per = |b: u64| crate::Storage::per_event(b, st.events);
    let e2e = r.max.run.events_per_sec();
    let _ = writeln!(
        o,
        "\nWhat a stored event costs PostgreSQL (growth over the whole run, {} events; for sizing):\n\n\
         | per event | bytes | at max load ({} logs/s) |\n|---|---|---|\n\
         | `logs` (UNLOGGED: rows, index) | {:.0} | {} |\n\
         | logged tables (`batches` with payloads, `tiles`, `checkpoints`, `ingest_keys`, `control_log`) | {:.0} | {} |\n\
         | WAL | {:.0} | {} |",
        st.events,
        rate(e2e),
        per(st.logs),
        mbs(per(st.logs) * e2e),
        per(st.logged),
        mbs(per(st.logged) * e2e),
        per(st.wal),
        mbs(per(st.wal) * e2e),
    );
    let _ = writeln!(
        o,
        "\nNothing lost: {} events acknowledged over the run, {} rows added to `logs`, no leaf given to two bodies.",
        r.acked, r.stored
    );
    o
}

/// Bytes per second as MB/s (growth at a rate).
fn mbs(bytes_per_sec: f64) -> String {
    format!("{} MB/s", mb(bytes_per_sec))
}
