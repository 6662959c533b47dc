//! `chronos`: the composition root of Chronos. It is the only crate that
//! knows every other one; services never depend on each other.
//!
//! Commands so far: `init` creates a log (signing key, verifier key, hash
//! algorithm, configuration). Exit codes: 0 success, 1 verification found
//! tampering (for the verify commands), 2 could not do the job.

mod config;
mod init;

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
