//! `chronos init`: create a data directory with a new log's identity.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::Path;

use anyhow::{Context as _, bail};
use chronos_ledger::{HashAlg, HashKey, NoteSigner, TreeHasher};

use crate::config::{CONFIG_FILE, Config, LogConfig};

/// A default origin that is unique without configuration: the host name and
/// eight random hex digits.
pub fn default_origin() -> anyhow::Result<String> {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| chronos_ledger::chain::validate_origin(h).is_ok())
        .unwrap_or_else(|| "localhost".to_owned());
    let mut r = [0u8; 4];
    getrandom::fill(&mut r).map_err(|e| anyhow::anyhow!("random source: {e}"))?;
    Ok(format!("{host}/chronos/{}", hex::encode(r)))
}

/// Creates `data_dir` (mode 0700) with a signing key (0600), its verifier
/// key and `chronos.toml`. Refuses to touch a directory that already holds a
/// log: a signing key is never overwritten.
pub fn init(data_dir: &Path, origin: &str, hash: HashAlg, hmac_key: Option<&str>) -> anyhow::Result<()> {
    chronos_ledger::chain::validate_origin(origin).context("--origin")?;
    let key_check = match (hash.is_keyed(), hmac_key) {
        (true, Some(k)) => {
            let key = HashKey::from_hex(k).context("CHRONOS_HMAC_KEY")?;
            TreeHasher::new(hash, Some(&key))?.key_check().map(hex::encode)
        }
        (true, None) => bail!(
            "--hash {hash} is keyed: set CHRONOS_HMAC_KEY to 64 hex digits (for example `openssl rand -hex 32`) \
             and keep it: verifying the log needs it"
        ),
        (false, _) => None,
    };
    let config_path = data_dir.join(CONFIG_FILE);
    let key_path = data_dir.join("log.key");
    if config_path.exists() || key_path.exists() {
        bail!("{} already holds a Chronos log; refusing to overwrite its key or configuration", data_dir.display());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;

    let signer = NoteSigner::generate(origin)?;
    write_new(&key_path, 0o600, format!("{}\n", signer.private_key_string().as_str()).as_bytes())?;
    write_new(&data_dir.join("log.vkey"), 0o644, format!("{}\n", signer.verifier()).as_bytes())?;
    let bridge = crate::bridge::BridgeConfig::default();
    crate::bridge::roughtime_seed(data_dir, &bridge.roughtime_key)?;
    let cfg = Config {
        log: LogConfig {
            origin: origin.to_owned(),
            hash: hash.name().to_owned(),
            key_check,
            signing_key: "log.key".into(),
            verifier_key: "log.vkey".into(),
        },
        ingest: Default::default(),
        pipeline: Default::default(),
        vault: Default::default(),
        database: crate::config::DatabaseConfig { url: String::new(), embedded_port: free_port()? },
        metrics: Default::default(),
        time: Default::default(),
        bridge,
        tls: Default::default(),
        control: Default::default(),
    };
    crate::control::keygen("operator", &data_dir.join(crate::control::OPERATOR_KEY))?;
    let text = format!(
        "# Chronos configuration, written by `chronos init`.\n\
         # The [log] section is the log's identity: changing it after logs are stored\n\
         # makes them unverifiable.\n\n{}",
        toml::to_string(&cfg)?
    );
    write_new(&config_path, 0o644, text.as_bytes())
}

/// A TCP port free on 127.0.0.1 now, for the embedded PostgreSQL.
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port for the embedded PostgreSQL")?;
    Ok(l.local_addr()?.port())
}

/// Writes a file that must not exist yet, with `mode` from the start (a
/// private key is never readable by others, not even briefly).
pub(crate) fn write_new(path: &Path, mode: u32, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).with_context(|| format!("writing {}", path.display()))
}
