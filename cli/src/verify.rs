//! `chronos verify` and `chronos checkpoint`: the outsider's view of a log.
//! The checks themselves are in `chronos-verify`; this module picks the
//! database and the key, shows progress, and prints the report.
//!
//! Exit codes of `verify`: 0 intact, 1 tampering found, 2 could not check,
//! 3 intact but the `logs` table is incomplete: PostgreSQL's crash recovery
//! emptied it and the vault writer is restoring it from the batches (every
//! ledger check passed; rerun when the restore is done).

use std::process::ExitCode;

use anyhow::Context as _;
use chronos_verify::{Finding, LogsRebuild, Options, Progress, RebuildCause, Report, Status};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::database::{self, Source};

/// Exit code when tampering is found.
pub const TAMPERED: u8 = 1;
/// Exit code of `verify` when no tampering is found but `logs` lacks rows
/// that are being restored after a PostgreSQL crash. Deliberately neither
/// 0 nor 1: a `logs_rebuild` row can be written by anyone with database
/// access, so it may hide deleted rows, but never as far as "intact".
pub const LOGS_INCOMPLETE: u8 = 3;

struct Bar(ProgressBar);

impl Progress for Bar {
    fn start(&self, total_leaves: u64) {
        self.0.set_length(total_leaves);
    }
    fn advance(&self, leaves: u64, _bytes: u64) {
        self.0.inc(leaves);
    }
}

fn bar() -> Bar {
    // Drawn on a terminal only: indicatif hides itself when stderr is not one.
    let pb = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} leaves ({per_sec}, eta {eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    Bar(pb)
}

/// `chronos verify`.
pub fn verify(
    source: &Source,
    key: Option<&str>,
    from_checkpoint: Option<&std::path::Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let trusted_key = key.map(database::read_key).transpose()?;
    let saved_checkpoint = from_checkpoint
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display())))
        .transpose()?;
    let opts = Options { trusted_key, hash_key: database::hash_key()?, saved_checkpoint };
    let db = source.open()?;
    let bar = bar();
    let report = chronos_verify::verify_database(&db.url, &opts, &bar);
    bar.0.finish_and_clear();
    drop(db);
    let report = report?;
    #[allow(clippy::print_stdout)] // the command's output
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", human(&report));
    }
    Ok(match report.status {
        Status::Intact => ExitCode::SUCCESS,
        Status::IntactLogsIncomplete => ExitCode::from(LOGS_INCOMPLETE),
        Status::Tampered => ExitCode::from(TAMPERED),
    })
}

fn finding_lines(f: &Finding) -> String {
    let mut s = format!("  {:<14} {} ({}): {}\n", f.kind.name(), f.place(), f.table, f.detail);
    if let Some(h) = f.found {
        s.push_str(&format!("  {:<14}   found    {}\n", "", h.to_hex()));
    }
    if let Some(h) = f.expected {
        s.push_str(&format!("  {:<14}   expected {}\n", "", h.to_hex()));
    }
    s
}

/// What the pending rebuild of `logs` means, in words.
fn rebuild_words(l: &LogsRebuild) -> String {
    let why = match l.cause {
        RebuildCause::LogsRebuildRow => "are being restored from the batches after a PostgreSQL crash",
        RebuildCause::LogsEmpty => {
            "wait to be restored from the batches: PostgreSQL emptied the table in crash recovery and the \
             vault writer has not begun restoring it"
        }
    };
    format!("leaves {}..{} {why}", l.from_leaf, l.to_leaf)
}

/// The report for people.
pub fn human(r: &Report) -> String {
    let s = &r.summary;
    let mut out = format!("log {} (hash {}), key {}\n", r.origin, r.hash, r.key_source);
    match (&r.status, &r.first, &r.logs_rebuild) {
        (Status::IntactLogsIncomplete, _, l) => {
            let (what, missing) =
                l.as_ref().map_or(("rows are missing".into(), 0), |l| (rebuild_words(l), l.rows_missing));
            out.push_str(&format!("INTACT (logs table incomplete: {what}; rerun verify when done)\n"));
            out.push_str(&format!(
                "  every check of the batches, chain, tree and checkpoints passed, and every logs row present \
                 matches the batches; {missing} logs rows of those leaves are missing and could not be compared\n"
            ));
        }
        (Status::Tampered, Some(first), _) => {
            out.push_str(&format!(
                "TAMPERED: {} finding(s); the first is {} at {}\n",
                r.findings_total,
                first.kind.name(),
                first.place()
            ));
            for f in &r.findings {
                out.push_str(&finding_lines(f));
            }
            if r.findings_total > r.findings.len() as u64 {
                out.push_str(&format!("  … and {} more\n", r.findings_total - r.findings.len() as u64));
            }
        }
        _ => out.push_str("INTACT: every check passed\n"),
    }
    if let (Status::Tampered, Some(l)) = (&r.status, &r.logs_rebuild) {
        out.push_str(&format!(
            "note: {}; their {} missing logs rows are not counted as deleted\n",
            rebuild_words(l),
            l.rows_missing
        ));
    }
    for n in &r.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    out.push_str(&format!(
        "checked {} batches, {} logs, {:.1} MB, {} checkpoints, tree size {} ({} control records) in {:.2} s \
         ({:.0} logs/s, {:.1} MB/s)\n",
        s.batches,
        s.logs,
        s.bytes as f64 / 1e6,
        s.checkpoints,
        s.tree_size,
        s.control_records,
        s.seconds,
        s.logs_per_second,
        s.megabytes_per_second
    ));
    out
}

/// `chronos checkpoint`: the newest signed checkpoint, verified, on stdout.
pub fn checkpoint(source: &Source, key: Option<&str>) -> anyhow::Result<ExitCode> {
    let db = source.open()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (note, trusted) = rt.block_on(async {
        let client = database::connect(&db.url).await?;
        let trusted = match key {
            Some(k) => database::read_key(k)?,
            None => stored_key(&client).await?,
        };
        anyhow::Ok((database::newest_checkpoint_note(&client).await?, trusted))
    })?;
    let Some(note) = note else {
        anyhow::bail!("the log has no signed checkpoint yet (the orchestrator signs one once the log has grown)");
    };
    match chronos_ledger::Checkpoint::open(note.as_bytes(), &trusted) {
        Ok((cp, _)) => {
            eprintln!("chronos: checkpoint of tree size {} (batch {}), verified with {trusted}", cp.size, cp.chain_seq);
            #[allow(clippy::print_stdout)] // the command's output
            {
                print!("{note}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("chronos: the newest stored checkpoint does not verify with {trusted}: {e}");
            eprintln!("chronos: run `chronos verify` to see what was altered");
            Ok(ExitCode::from(TAMPERED))
        }
    }
}

/// The verifier key recorded with the log (when the user gives none).
pub async fn stored_key(client: &tokio_postgres::Client) -> anyhow::Result<chronos_ledger::NoteVerifier> {
    let text: String = client
        .query_opt("SELECT verifier_key FROM chronos_log WHERE id = 1", &[])
        .await
        .context("reading chronos_log")?
        .context("the database holds no Chronos log yet")?
        .get(0);
    eprintln!("chronos: using the verifier key recorded in the database; pass --key to use one you hold");
    chronos_ledger::NoteVerifier::parse(&text).context("chronos_log.verifier_key")
}
