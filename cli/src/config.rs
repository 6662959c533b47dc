//! `chronos.toml`: the configuration file in the data directory.
//!
//! Parsed strictly (unknown keys are errors) and validated once into
//! [`LogSettings`]; a bad value is reported with its key.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use chronos_ledger::HashAlg;
use serde::{Deserialize, Serialize};

/// Name of the configuration file inside the data directory.
pub const CONFIG_FILE: &str = "chronos.toml";

/// The file's contents.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The log's identity. Fixed when the log is created.
    pub log: LogConfig,
}

/// `[log]`: the log's identity. Changing any of these after logs are stored
/// makes the ledger unverifiable; `chronos init` writes them once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// The origin line of checkpoints and the signing key's name: a
    /// schema-less URL such as `example.com/chronos/prod`.
    pub origin: String,
    /// Hash algorithm: `blake3` (default), `sha256`, `blake3-keyed` or
    /// `hmac-sha256`. The keyed ones read the key from `CHRONOS_HMAC_KEY`.
    pub hash: String,
    /// For keyed algorithms: 16 hex digits fingerprinting the key, so that a
    /// wrong `CHRONOS_HMAC_KEY` is refused at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_check: Option<String>,
    /// The checkpoint signing key (Go note `PRIVATE+KEY+…` format, mode 0600),
    /// relative to the data directory.
    pub signing_key: PathBuf,
    /// The public verifier key (`name+keyid+key`), relative to the data directory.
    pub verifier_key: PathBuf,
}

/// `[log]`, validated.
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub origin: String,
    pub hash: HashAlg,
    pub key_check: Option<[u8; 8]>,
    pub signing_key: PathBuf,
    pub verifier_key: PathBuf,
}

impl Config {
    /// Reads and validates `DIR/chronos.toml`.
    pub fn load(data_dir: &Path) -> anyhow::Result<LogSettings> {
        let path = data_dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let cfg: Config = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        cfg.validate(data_dir).with_context(|| format!("in {}", path.display()))
    }

    fn validate(self, data_dir: &Path) -> anyhow::Result<LogSettings> {
        let l = self.log;
        chronos_ledger::chain::validate_origin(&l.origin).context("log.origin")?;
        let Some(hash) = HashAlg::from_name(&l.hash) else {
            bail!("log.hash: {:?} is not one of blake3, sha256, blake3-keyed, hmac-sha256", l.hash);
        };
        let key_check = match (&l.key_check, hash.is_keyed()) {
            (None, false) => None,
            (Some(k), true) => {
                let mut out = [0u8; 8];
                hex::decode_to_slice(k, &mut out).context("log.key_check: expected 16 hex digits")?;
                Some(out)
            }
            (None, true) => bail!("log.key_check: required for the keyed algorithm {hash}"),
            (Some(_), false) => bail!("log.key_check: only keyed algorithms have one, not {hash}"),
        };
        Ok(LogSettings {
            origin: l.origin,
            hash,
            key_check,
            signing_key: data_dir.join(l.signing_key),
            verifier_key: data_dir.join(l.verifier_key),
        })
    }
}

impl LogSettings {
    /// Loads the signing key; its name must be the origin.
    pub fn signer(&self) -> anyhow::Result<chronos_ledger::NoteSigner> {
        let path = &self.signing_key;
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let signer = chronos_ledger::NoteSigner::from_private_key(text.trim_end())
            .with_context(|| format!("parsing {}", path.display()))?;
        if signer.name() != self.origin {
            bail!("{}: key name {:?} is not the origin {:?}", path.display(), signer.name(), self.origin);
        }
        Ok(signer)
    }

    /// Loads the verifier key; its name must be the origin.
    pub fn verifier(&self) -> anyhow::Result<chronos_ledger::NoteVerifier> {
        let path = &self.verifier_key;
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let v = chronos_ledger::NoteVerifier::parse(text.trim_end()).with_context(|| format!("parsing {}", path.display()))?;
        if v.name() != self.origin {
            bail!("{}: key name {:?} is not the origin {:?}", path.display(), v.name(), self.origin);
        }
        Ok(v)
    }

    /// The log's hasher. Keyed logs take the key (hex, from
    /// `CHRONOS_HMAC_KEY`), which must match the recorded fingerprint.
    pub fn hasher(&self, hmac_key: Option<&str>) -> anyhow::Result<chronos_ledger::TreeHasher> {
        let key = match (self.hash.is_keyed(), hmac_key) {
            (true, Some(k)) => Some(chronos_ledger::HashKey::from_hex(k).context("CHRONOS_HMAC_KEY")?),
            _ => None,
        };
        let hasher = chronos_ledger::TreeHasher::new(self.hash, key.as_ref())?;
        if hasher.key_check() != self.key_check {
            bail!("CHRONOS_HMAC_KEY is not the key of this log (its fingerprint differs from log.key_check)");
        }
        Ok(hasher)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_hash_key_or_a_foreign_key_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        let key = "11".repeat(32);
        crate::init::init(&dir, "example.com/k", HashAlg::Blake3Keyed, Some(&key)).unwrap();
        let s = Config::load(&dir).unwrap();
        assert!(s.hasher(Some(&key)).is_ok());
        let e = s.hasher(Some(&"22".repeat(32))).unwrap_err().to_string();
        assert!(e.contains("not the key of this log"), "{e}");
        assert!(s.hasher(None).is_err());

        // A signing key for another origin dropped into the directory.
        let other = chronos_ledger::NoteSigner::from_seed("example.com/other", &[1; 32]).unwrap();
        std::fs::write(&s.signing_key, other.private_key_string().as_str()).unwrap();
        assert!(s.signer().unwrap_err().to_string().contains("is not the origin"));

        // Unknown keys in the file are errors, naming the file.
        let cfg = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&cfg).unwrap();
        std::fs::write(&cfg, format!("{text}\n[extra]\nx = 1\n")).unwrap();
        let e = format!("{:#}", Config::load(&dir).unwrap_err());
        assert!(e.contains("chronos.toml") && e.contains("unknown field"), "{e}");
    }
}
