//! `chronos`: the composition root of Chronos. It is the only crate that
//! knows every other one; services never depend on each other.
//!
//! Commands: `init` creates a log (signing key, verifier key, hash
//! algorithm, configuration); `up` runs everything (see [`up`]); `verify`,
//! `checkpoint`, `prove`, `verify-proof` and `consistency` check a log
//! the way an outsider would (see [`verify`] and [`prove`]). The
//! services `ingest`, `hasher`, `orchestrator` and `vault-writer` are
//! subcommands too, started by `up` (hidden from help). Exit codes: 0
//! success, 1 verification found tampering (for the verify commands), 2
//! could not do the job, 3 `verify` found the ledger intact but the `logs`
//! table incomplete (a restore after a PostgreSQL crash is under way), or a
//! service cannot start for a reason a restart cannot fix (`up` stops), 4 a
//! service refused to go on (fail closed; `up` does not restart it).

mod bench;
mod bench_bridge;
mod bridge;
mod config;
mod control;
mod database;
mod embedded;
mod init;
mod lock;
mod loopback_ntp;
mod prove;
mod rings;
mod services;
mod time;
mod tls;
mod up;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use chronos_ledger::HashAlg;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(name = "chronos", version, about = "Tamper-evident log ledger on PostgreSQL")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a new log in a data directory: signing key, verifier key and chronos.toml.
    Init {
        /// Directory to create (mode 0700). Must not hold a log already.
        #[arg(long, env = "CHRONOS_DATA_DIR")]
        data_dir: PathBuf,
        /// The log's origin: a schema-less URL naming it, such as example.com/chronos/prod.
        /// Default: <hostname>/chronos/<8 random hex digits>.
        #[arg(long)]
        origin: Option<String>,
        /// Hash algorithm of the log, fixed for its lifetime.
        #[arg(long, value_enum, default_value_t = HashArg::default())]
        hash: HashArg,
    },
    /// Run Chronos: PostgreSQL (embedded unless --database-url), vault writer,
    /// orchestrator, hashers and ingest, restarting any that dies. Ctrl-C stops.
    Up {
        #[arg(long, env = "CHRONOS_DATA_DIR")]
        data_dir: PathBuf,
        /// Use this PostgreSQL instead of the embedded cluster.
        #[arg(long)]
        database_url: Option<String>,
        /// Address for POST /ingest (default 127.0.0.1:5000, or ingest.listen).
        #[arg(long)]
        listen: Option<String>,
        /// Hasher processes (default: one per core, or pipeline.hashers).
        #[arg(long)]
        hashers: Option<u16>,
        /// Ingest processes sharing the listen port (default 1, or ingest.processes).
        #[arg(long)]
        ingests: Option<u16>,
    },
    /// Measure this machine: run `chronos up` on a log of its own, send it realistic logs like
    /// Vector's http sink at max load, 50% and overload, and compare with raw binary COPY,
    /// hashing, ring and memcpy measured in the same run. Prints a Markdown report.
    Bench {
        #[command(flatten)]
        args: bench::Args,
    },
    /// Measure the bridge: NTP answers beside chronyd, Roughtime answers beside roughenough-server
    /// (one load generator, one run), inclusion proofs over HTTP. Prints a Markdown report.
    BenchBridge {
        #[command(flatten)]
        args: bench_bridge::Args,
    },
    /// Check a log the way an outsider would: every event, batch root, chain link,
    /// tree and checkpoint signature. Exit 0 intact, 1 tampering found, 2 could not check,
    /// 3 intact but the logs table is incomplete (being restored after a PostgreSQL crash;
    /// rerun when done).
    Verify {
        #[command(flatten)]
        source: database::Source,
        /// The log's verifier key (a file such as DATA_DIR/log.vkey, or the key string).
        /// Default: the key recorded in the database, which an intruder could have replaced.
        #[arg(long, value_name = "VKEY")]
        key: Option<String>,
        /// A checkpoint saved earlier (`chronos checkpoint > FILE`): the log must extend it,
        /// which catches a rollback or fork even by someone with full database access.
        #[arg(long, value_name = "FILE")]
        from_checkpoint: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the newest signed checkpoint (verified) to save it: `chronos checkpoint > FILE`.
    Checkpoint {
        #[command(flatten)]
        source: database::Source,
        /// The log's verifier key (file or string); default: the one recorded in the database.
        #[arg(long, value_name = "VKEY")]
        key: Option<String>,
    },
    /// Write an offline proof that one event is in the log (c2sp.org/tlog-proof@v1 for sha256
    /// logs; the same layout under a chronos/tlog-proof-<hash>@v1 first line for the others).
    #[command(group(clap::ArgGroup::new("which").required(true).args(["leaf", "event_hash"])))]
    Prove {
        #[command(flatten)]
        source: database::Source,
        /// The leaf index of the event (ingest answers `first_leaf`; event i of a body is first_leaf + i).
        #[arg(long)]
        leaf: Option<u64>,
        /// The event's leaf hash, in hex (scans the logs table).
        #[arg(long, value_name = "HEX")]
        event_hash: Option<String>,
        /// The log's verifier key (file or string); default: the one recorded in the database.
        #[arg(long, value_name = "VKEY")]
        key: Option<String>,
        /// Write the proof here instead of to stdout.
        #[arg(long, short, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Also write the event's exact bytes here, for `verify-proof --event`.
        #[arg(long, value_name = "FILE")]
        event_out: Option<PathBuf>,
        /// Also write a proof of when the event was logged here (chronos/time-proof@v1: the
        /// signed checkpoints just before and just after it, with their trusted times);
        /// `verify-proof` prints the interval.
        #[arg(long, value_name = "FILE")]
        time_out: Option<PathBuf>,
    },
    /// Check a proof file offline, with only the log's verifier key. Exit 0 valid, 1 invalid.
    VerifyProof {
        /// The proof file.
        file: PathBuf,
        /// The log's verifier key (file or string).
        #[arg(long, value_name = "VKEY")]
        key: String,
        /// The event's bytes: check that they are the proven leaf.
        #[arg(long, value_name = "FILE")]
        event: Option<PathBuf>,
    },
    /// Check that a newer checkpoint extends an older one, with a consistency proof from the log.
    Consistency {
        #[command(flatten)]
        source: database::Source,
        /// The older checkpoint file.
        #[arg(long, value_name = "FILE")]
        old: PathBuf,
        /// The newer checkpoint file.
        #[arg(long, value_name = "FILE")]
        new: PathBuf,
        /// The log's verifier key (file or string); default: the one recorded in the database.
        #[arg(long, value_name = "VKEY")]
        key: Option<String>,
    },
    /// Show trusted time like chronyc's sources and tracking: each source's state (agreeing,
    /// falseticker, too far, unreachable), offset and interval in the last round, the agreed
    /// interval, the policy. Exit 0 synchronized (or host time), 1 no time quorum.
    Time {
        #[command(flatten)]
        source: database::Source,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve trusted time (NTP, /v1/time, /v1/stream) and the log's read path (C2SP tiles,
    /// checkpoints, proofs, events) per `[bridge]`. `chronos up` runs it; run it yourself to
    /// serve from another host, for example against a PostgreSQL replica.
    Bridge {
        #[arg(long, env = "CHRONOS_DATA_DIR")]
        data_dir: PathBuf,
        /// PostgreSQL to read (a replica will do); default: database.url of the configuration.
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Operate a running log with signed events: hold and release it, begin a recovery, add and
    /// revoke operators' keys; show its mode and the history of its operation.
    #[command(subcommand)]
    Control(ControlCommand),
    #[command(hide = true)]
    TimeService {
        #[arg(long, env = "CHRONOS_DATA_DIR")]
        data_dir: PathBuf,
    },
    #[command(hide = true)]
    Ingest {
        #[arg(long, env = "CHRONOS_DATA_DIR")]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 0)]
        slot: u16,
    },
    #[command(hide = true)]
    Hasher {
        #[arg(long, env = "CHRONOS_DATA_DIR")]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 0)]
        index: u16,
    },
    #[command(hide = true)]
    Orchestrator {
        #[arg(long, env = "CHRONOS_DATA_DIR")]
        data_dir: PathBuf,
    },
    #[command(hide = true)]
    VaultWriter {
        #[arg(long, env = "CHRONOS_DATA_DIR")]
        data_dir: PathBuf,
    },
}

/// `chronos control …`.
#[derive(Debug, Subcommand)]
enum ControlCommand {
    /// Make an operator's key pair: FILE (private, 0600) and FILE with `.pub` (its verifier key,
    /// which an admin adds with `keys add`).
    Keygen {
        /// The key's name (it appears in signatures and in the log's history).
        #[arg(long)]
        name: String,
        /// The private key file to create.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Stop the log: writes are refused (503 naming the hold) until a signed release.
    Hold {
        #[command(flatten)]
        signing: control::Signing,
        /// Why (recorded in the log).
        #[arg(long)]
        reason: String,
    },
    /// Lift a hold.
    Release {
        #[command(flatten)]
        signing: control::Signing,
    },
    /// Begin a recovery: writes are refused until the stored state verifies against the last
    /// signed checkpoint and the one kept outside the database.
    Recover {
        #[command(flatten)]
        signing: control::Signing,
    },
    /// Add or revoke an operator's key (admin role).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Bodies refused for a policy reason (a claimed time outside the window): list them,
    /// release one into the log as a new batch, or drop it (operator role).
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
    /// Submit a control event signed elsewhere (`--sign-only`), from FILE.
    Submit {
        #[arg(long, env = "CHRONOS_DATA_DIR")]
        data_dir: PathBuf,
        file: PathBuf,
        /// Print the orchestrator's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The running log's mode, hold, keys.
    Status {
        #[arg(long, env = "CHRONOS_DATA_DIR")]
        data_dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The log's operation as the log records it: keys, events, mode changes.
    History {
        #[command(flatten)]
        source: database::Source,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum QuarantineCommand {
    /// Every quarantined body: id, when, events, pending/released/dropped, why.
    List {
        #[command(flatten)]
        source: database::Source,
        #[arg(long)]
        json: bool,
    },
    /// Write a quarantined body into the log, as a new batch (its client was answered already).
    Release {
        #[command(flatten)]
        signing: control::Signing,
        /// The body's id (`quarantine list`).
        id: u64,
    },
    /// Keep a quarantined body out of the log for good (it stays in the table as evidence).
    Drop {
        #[command(flatten)]
        signing: control::Signing,
        /// The body's id (`quarantine list`).
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Register a key with roles.
    Add {
        #[command(flatten)]
        signing: control::Signing,
        /// The verifier key (a `.pub` file, or the key string).
        #[arg(long, value_name = "VKEY")]
        verifier_key: String,
        /// Comma-separated: operator, admin, auditor.
        #[arg(long, value_delimiter = ',', required = true)]
        roles: Vec<String>,
    },
    /// Revoke a key: it signs nothing more that is accepted.
    Revoke {
        #[command(flatten)]
        signing: control::Signing,
        /// The key to revoke, as `name+keyid` (see `chronos control status`).
        #[arg(value_name = "NAME+KEYID")]
        revoked: String,
    },
}

fn control(cmd: ControlCommand) -> anyhow::Result<ExitCode> {
    use chronos_control::event::{Action, Role};
    match cmd {
        ControlCommand::Keygen { name, out } => {
            let vkey = control::keygen(&name, &out)?;
            #[allow(clippy::print_stdout)] // the command's output
            {
                println!("{vkey}");
            }
            Ok(ExitCode::SUCCESS)
        }
        ControlCommand::Hold { signing, reason } => control::act(&signing, Action::Hold { reason }),
        ControlCommand::Release { signing } => control::act(&signing, Action::Release),
        ControlCommand::Recover { signing } => control::act(&signing, Action::Recover),
        ControlCommand::Keys(KeysCommand::Add { signing, verifier_key, roles }) => {
            let key = database::read_key(&verifier_key)?.to_string();
            let roles = roles
                .iter()
                .map(|r| {
                    Role::parse(r).ok_or_else(|| anyhow::anyhow!("--roles: {r:?} is not operator, admin or auditor"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            control::act(&signing, Action::KeysAdd { key, roles })
        }
        ControlCommand::Keys(KeysCommand::Revoke { signing, revoked }) => {
            control::act(&signing, Action::KeysRevoke { key: revoked })
        }
        ControlCommand::Quarantine(QuarantineCommand::List { source, json }) => control::quarantine_list(&source, json),
        ControlCommand::Quarantine(QuarantineCommand::Release { signing, id }) => {
            control::act(&signing, Action::QuarantineRelease { id })
        }
        ControlCommand::Quarantine(QuarantineCommand::Drop { signing, id }) => {
            control::act(&signing, Action::QuarantineDrop { id })
        }
        ControlCommand::Submit { data_dir, file, json } => {
            let note = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            control::submit(&data_dir, &note, json)
        }
        ControlCommand::Status { data_dir, json } => control::status(&data_dir, json),
        ControlCommand::History { source, json } => control::history(&source, json),
    }
}

/// `--hash` of `init` and `bench`. The default is SHA-256, so that every
/// log is verifiable by standard tooling unless its creator chose otherwise.
#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub(crate) enum HashArg {
    /// BLAKE3: fastest on processors without SHA extensions; C2SP tools cannot check its proofs.
    Blake3,
    /// SHA-256: checkpoints and proofs interoperate with C2SP tlog tools and witnesses.
    #[default]
    Sha256,
    /// Keyed BLAKE3; the key comes from CHRONOS_HMAC_KEY and verifiers need it.
    Blake3Keyed,
    /// HMAC-SHA-256; the key comes from CHRONOS_HMAC_KEY and verifiers need it.
    HmacSha256,
}

impl From<HashArg> for HashAlg {
    fn from(a: HashArg) -> HashAlg {
        match a {
            HashArg::Blake3 => HashAlg::Blake3,
            HashArg::Sha256 => HashAlg::Sha256,
            HashArg::Blake3Keyed => HashAlg::Blake3Keyed,
            HashArg::HmacSha256 => HashAlg::HmacSha256,
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Verify { source, key, from_checkpoint, json } => {
            return verify::verify(&source, key.as_deref(), from_checkpoint.as_deref(), json);
        }
        Command::Checkpoint { source, key } => return verify::checkpoint(&source, key.as_deref()),
        Command::Prove { source, leaf, event_hash, key, out, event_out, time_out } => {
            let leaf = match (leaf, event_hash) {
                (Some(i), _) => prove::Leaf::Index(i),
                (None, Some(h)) => prove::Leaf::Hash(
                    chronos_ledger::Hash::from_hex(&h).context("--event-hash: expected 64 hex digits")?,
                ),
                (None, None) => anyhow::bail!("give --leaf N or --event-hash HEX"),
            };
            prove::prove(&source, key.as_deref(), leaf, out.as_deref(), event_out.as_deref(), time_out.as_deref())?;
        }
        Command::VerifyProof { file, key, event } => prove::verify_proof(&file, &key, event.as_deref())?,
        Command::Consistency { source, old, new, key } => prove::consistency(&source, key.as_deref(), &old, &new)?,
        Command::Bench { args } => bench::bench(args)?,
        Command::BenchBridge { args } => bench_bridge::bench_bridge(args)?,
        Command::Time { source, json } => return time::time(&source, json),
        Command::Control(cmd) => return control(cmd),
        Command::Bridge { data_dir, database_url } => {
            services::init_tracing("bridge");
            let mut plan = services::Plan::load_for(&data_dir, "bridge")?;
            if let Some(u) = database_url {
                plan.cfg.database.url = u;
            }
            bridge::run(&plan)?;
        }
        Command::TimeService { data_dir } => {
            services::init_tracing("time");
            services::time_service(&services::Plan::load_for(&data_dir, "time")?)?;
        }
        Command::Up { data_dir, database_url, listen, hashers, ingests } => {
            services::init_tracing("up");
            up::up(&data_dir, up::Overrides { database_url, listen, hashers, ingests })?;
        }
        Command::Ingest { data_dir, slot } => {
            services::init_tracing("ingest");
            services::ingest(&services::Plan::load_for(&data_dir, "ingest")?, slot)?;
        }
        Command::Hasher { data_dir, index } => {
            services::init_tracing("hasher");
            services::hasher(&services::Plan::load_for(&data_dir, "hasher")?, index)?;
        }
        Command::Orchestrator { data_dir } => {
            services::init_tracing("orchestrator");
            services::orchestrator(&services::Plan::load_for(&data_dir, "orchestrator")?)?;
        }
        Command::VaultWriter { data_dir } => {
            services::init_tracing("vault-writer");
            services::vault_writer(&services::Plan::load_for(&data_dir, "vault-writer")?)?;
        }
        Command::Init { data_dir, origin, hash } => {
            let origin = match origin {
                Some(o) => o,
                None => init::default_origin()?,
            };
            let hmac_key = std::env::var("CHRONOS_HMAC_KEY").ok();
            init::init(&data_dir, &origin, hash.into(), hmac_key.as_deref())?;
            // Read everything back through the validating loaders: what init
            // wrote must be what `up` and `verify` will load.
            let settings = config::Config::load(&data_dir)?;
            let verifier = settings.verifier()?;
            anyhow::ensure!(settings.signer()?.verifier() == verifier, "the written key pair does not match");
            settings.hasher(hmac_key.as_deref())?;
            #[allow(clippy::print_stdout)] // the command's output
            {
                println!("Created a Chronos log in {}", data_dir.display());
                println!("  origin        {}", settings.origin);
                println!("  hash          {}", settings.hash);
                println!("  signing key   {} (keep it secret)", settings.signing_key.display());
                println!("  verifier key  {verifier}");
                println!(
                    "  operator key  {} (roles admin, operator: `chronos control`; keep it secret)",
                    data_dir.join(control::OPERATOR_KEY).display()
                );
                println!("  configuration {}", data_dir.join(config::CONFIG_FILE).display());
                println!("Give the verifier key to anyone who will check checkpoints or proofs of this log.");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("chronos: error: {e:#}");
            if e.downcast_ref::<services::Refusal>().is_some() {
                return ExitCode::from(services::EXIT_REFUSED);
            }
            if e.downcast_ref::<services::SetupFailed>().is_some() {
                return ExitCode::from(services::EXIT_SETUP);
            }
            prove::exit_code(&e)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// Every subcommand's arguments are well formed (clap checks names,
    /// groups and conflicts only when a command is built).
    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
