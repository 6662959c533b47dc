//! `chronos`: the composition root of Chronos. It is the only crate that
//! knows every other one; services never depend on each other.
//!
//! Commands: `init` creates a log (signing key, verifier key, hash
//! algorithm, configuration); `up` runs everything (see [`up`]). The
//! services `ingest`, `hasher`, `orchestrator` and `vault-writer` are
//! subcommands too, started by `up` (hidden from help). Exit codes: 0
//! success, 1 verification found tampering (for the verify commands), 2
//! could not do the job.

mod config;
mod embedded;
mod init;
mod services;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

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
        #[arg(long, value_enum, default_value_t = HashArg::Blake3)]
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

#[derive(Clone, Copy, Debug, ValueEnum)]
enum HashArg {
    /// BLAKE3: fastest.
    Blake3,
    /// SHA-256: checkpoints and proofs interoperate with C2SP tlog tools and witnesses.
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

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up { data_dir, database_url, listen, hashers, ingests } => {
            services::init_tracing("up");
            up::up(&data_dir, up::Overrides { database_url, listen, hashers, ingests })
        }
        Command::Ingest { data_dir, slot } => {
            services::init_tracing("ingest");
            services::ingest(&services::Plan::load(&data_dir)?, slot)
        }
        Command::Hasher { data_dir, index } => {
            services::init_tracing("hasher");
            services::hasher(&services::Plan::load(&data_dir)?, index)
        }
        Command::Orchestrator { data_dir } => {
            services::init_tracing("orchestrator");
            services::orchestrator(&services::Plan::load(&data_dir)?)
        }
        Command::VaultWriter { data_dir } => {
            services::init_tracing("vault-writer");
            services::vault_writer(&services::Plan::load(&data_dir)?)
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
                println!("  configuration {}", data_dir.join(config::CONFIG_FILE).display());
                println!("Give the verifier key to anyone who will check checkpoints or proofs of this log.");
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chronos: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
