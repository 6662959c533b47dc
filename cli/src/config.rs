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

/// The file's contents. Every section but `[log]` is optional; each key
/// can be overridden by the environment variable `CHRONOS_<SECTION>_<KEY>`
/// (upper case, for example `CHRONOS_INGEST_LISTEN=0.0.0.0:5000`), and
/// some by flags of `chronos up`. Precedence: flag, environment, file, default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The log's identity. Fixed when the log is created.
    pub log: LogConfig,
    #[serde(default)]
    pub ingest: IngestConfig,
    #[serde(default)]
    pub pipeline: PipelineConfig,
    #[serde(default)]
    pub vault: VaultConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub time: TimeConfig,
    #[serde(default)]
    pub bridge: crate::bridge::BridgeConfig,
    #[serde(default)]
    pub tls: crate::tls::TlsConfig,
    #[serde(default)]
    pub control: crate::control::ControlConfig,
}

/// `[ingest]`: the HTTP front door.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Address to listen on (all ingest processes share it).
    pub listen: String,
    /// Ingest processes (1..=64).
    pub processes: u16,
    /// File holding the bearer tokens accepted on POST /ingest, one per
    /// line ("" = no auth); give each client (each Vector instance) its own,
    /// as the token is part of its identity for idempotency. A single token
    /// can also come from CHRONOS_INGEST_TOKEN.
    pub token_file: String,
    /// Largest request body as received, bytes.
    pub max_body_bytes: u64,
    /// Largest body after decompression, bytes (sizes the rings: about 4
    /// times this much shared memory per ring).
    pub max_decoded_bytes: u64,
    /// Largest single event, bytes.
    pub max_event_bytes: u64,
    /// Most events in one body.
    pub max_events: u64,
    /// How long a request waits for its commit before answering 503, ms.
    pub ack_timeout_ms: u64,
    /// Retry-After on 503 answers, seconds.
    pub retry_after_secs: u32,
    /// Most request-body memory (received plus decompressed) one ingest
    /// process holds at once, bytes; a body that does not fit is answered
    /// 503 with Retry-After and not kept. Keeps memory bounded however
    /// many bodies arrive. At least max_body_bytes + max_decoded_bytes.
    pub max_inflight_bytes: u64,
    /// Most client connections one ingest process keeps open; further
    /// clients wait in the listen backlog until one closes (connections
    /// silent or idle for 30 s are closed).
    pub max_connections: u64,
    /// Serve /metrics on the ingest port (true, the default) or only on a
    /// metrics address of its own (false): ingest slot i at `[metrics] listen`'s
    /// port + 4 + hashers + i, written to DATA_DIR/run/ingest-<i>.metrics.
    pub metrics_on_ingest_port: bool,
}

impl Default for IngestConfig {
    fn default() -> IngestConfig {
        let l = chronos_ingest::body::Limits::default();
        IngestConfig {
            listen: "127.0.0.1:5000".into(),
            processes: 1,
            token_file: String::new(),
            max_body_bytes: l.max_body as u64,
            max_decoded_bytes: l.max_decoded as u64,
            max_event_bytes: l.max_event as u64,
            max_events: l.max_events as u64,
            ack_timeout_ms: 30_000,
            retry_after_secs: 1,
            max_inflight_bytes: 256 << 20,
            max_connections: 512,
            metrics_on_ingest_port: true,
        }
    }
}

/// `[pipeline]`: hashers and the sequencer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Hasher processes; 0 = one per core.
    pub hashers: u16,
    /// How long a body's idempotency key is remembered (a retry within
    /// this window gets the first answer and is stored once; after it, a
    /// retry is stored again), seconds.
    pub key_window_secs: u64,
    /// Most idempotency keys remembered at once (about 120 bytes of the
    /// orchestrator's memory each); when more bodies arrive within the
    /// window, the oldest keys are forgotten early (counted in
    /// chronos_orchestrator_idempotency_keys_evicted).
    pub key_window_max_keys: u64,
    /// Where the newest signed checkpoint is kept outside the database
    /// (relative to the data directory). Written before each checkpoint is
    /// stored; at start the database must extend it, or nothing is signed.
    pub checkpoint_file: String,
    /// Interval between checkpoints (signed when the log grew), ms.
    pub checkpoint_interval_ms: u64,
    /// A body with an event whose `timestamp` is more than this ahead of
    /// the log's trusted time goes to the quarantine instead of the log
    /// (422 with its id; `chronos control quarantine`), seconds; 0: no limit.
    pub claimed_time_max_ahead_secs: u64,
    /// The same, for a `timestamp` this far behind; 0: no limit.
    pub claimed_time_max_behind_secs: u64,
}

impl PipelineConfig {
    /// The quarantine's claimed-time window.
    pub fn claimed_time(&self) -> chronos_orchestrator::stages::ClaimedTime {
        let secs = |s: u64| (s > 0).then(|| std::time::Duration::from_secs(s));
        chronos_orchestrator::stages::ClaimedTime {
            max_ahead: secs(self.claimed_time_max_ahead_secs),
            max_behind: secs(self.claimed_time_max_behind_secs),
        }
    }
}

impl Default for PipelineConfig {
    fn default() -> PipelineConfig {
        PipelineConfig {
            hashers: 0,
            key_window_secs: 900,
            key_window_max_keys: 1 << 20,
            checkpoint_file: "latest.checkpoint".into(),
            checkpoint_interval_ms: 1000,
            claimed_time_max_ahead_secs: 0,
            claimed_time_max_behind_secs: 0,
        }
    }
}

/// `[vault]`: how the vault writer groups batches into transactions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VaultConfig {
    /// Most batches per transaction.
    pub flush_max_batches: u64,
    /// Flush once this many bytes are gathered.
    pub flush_max_bytes: u64,
    /// Flush once the oldest gathered batch waited this long, ms.
    pub flush_max_age_ms: u64,
}

impl Default for VaultConfig {
    fn default() -> VaultConfig {
        VaultConfig { flush_max_batches: 1024, flush_max_bytes: 16 << 20, flush_max_age_ms: 5 }
    }
}

/// `[database]`: where the ledger lives.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// PostgreSQL URL (`postgres://user:password@host:port/db`); "" = the
    /// embedded cluster under DATA_DIR/pg.
    pub url: String,
    /// TCP port of the embedded cluster on 127.0.0.1 (chosen by `chronos init`).
    pub embedded_port: u16,
}

/// `[metrics]`: Prometheus endpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Base address for /metrics of the processes without an HTTP port:
    /// orchestrator at this port, vault writer at +1, hasher i at +2+i.
    /// Port 0 lets each pick a free port. Ingest serves /metrics on its own
    /// listener. Each process writes its address to DATA_DIR/run/<name>.metrics.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> MetricsConfig {
        MetricsConfig { listen: "127.0.0.1:9640".into() }
    }
}

/// `[time]`: trusted time. Without sources, batches carry the host clock
/// and the kernel's maximum error, marked `host` (no quorum is asked for,
/// so none can be lost). With sources, the time service polls them and
/// batches carry quorum time.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeConfig {
    /// Without a quorum: `refuse` writes (503 "no time quorum", the
    /// default) or `accept` them stamped `untrusted`.
    pub policy: String,
    /// The fewest sources that must agree, whatever the majority.
    pub min_agreeing: u64,
    /// A source whose interval's half-width (root distance) exceeds this is unusable.
    pub max_distance_ms: u64,
    /// The most the local clock's rate may be off between rounds.
    pub max_drift_ppm: u64,
    /// Time between rounds.
    pub poll_ms: u64,
    /// How long a source has to answer in a round.
    pub timeout_ms: u64,
    /// `[[time.source]]` tables: `name`, `kind` (`ntp` or `roughtime`), `address`
    /// (`host:port`); a Roughtime source also has `key` (its long-term Ed25519 public
    /// key, base64) and may set `version` (`ietf`, the default: the IETF draft's
    /// and RFC's versions offered; or `google`).
    #[serde(rename = "source", skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<TimeSourceConfig>,
}

impl Default for TimeConfig {
    fn default() -> TimeConfig {
        TimeConfig {
            policy: "refuse".into(),
            min_agreeing: 3,
            max_distance_ms: 3_000,
            max_drift_ppm: 100,
            poll_ms: 16_000,
            timeout_ms: 1_000,
            sources: Vec::new(),
        }
    }
}

/// One `[[time.source]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeSourceConfig {
    pub name: String,
    pub kind: String,
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl TimeConfig {
    /// Validated settings; `page` names the clock page.
    pub fn validate(&self, page: String) -> anyhow::Result<chronos_time::Settings> {
        let policy = match self.policy.as_str() {
            "refuse" => chronos_time::Policy::Refuse,
            "accept" => chronos_time::Policy::Accept,
            other => bail!("time.policy: {other:?} is not refuse or accept"),
        };
        let n = self.sources.len();
        anyhow::ensure!(n <= 64, "time.source: {n} sources, at most 64");
        let mut sources = Vec::with_capacity(n);
        for (i, s) in self.sources.iter().enumerate() {
            let at = format!("time.source[{i}]");
            anyhow::ensure!(
                !s.name.is_empty()
                    && s.name.len() <= 32
                    && s.name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')),
                "{at}.name: {:?} must be 1..=32 of [A-Za-z0-9._-]",
                s.name
            );
            anyhow::ensure!(
                !self.sources[..i].iter().any(|o| o.name == s.name),
                "{at}.name: {:?} names another source too",
                s.name
            );
            let kind = match s.kind.as_str() {
                "ntp" => {
                    anyhow::ensure!(
                        s.key.is_none() && s.version.is_none(),
                        "{at}: `key` and `version` are for roughtime sources"
                    );
                    chronos_time::SourceKind::Ntp
                }
                "roughtime" | "peer" => {
                    use base64::Engine as _;
                    use chronos_quorum::roughtime::Version;
                    let key = s.key.as_deref().with_context(|| {
                        format!("{at}.key: a roughtime source needs its long-term public key (base64)")
                    })?;
                    let key: [u8; 32] = base64::engine::general_purpose::STANDARD
                        .decode(key.trim())
                        .ok()
                        .and_then(|k| k.try_into().ok())
                        .with_context(|| {
                            format!("{at}.key: {key:?} is not the base64 of a 32-byte Ed25519 public key")
                        })?;
                    let versions = match s.version.as_deref().unwrap_or("ietf") {
                        "ietf" => vec![Version::IetfDraft, Version::Rfc],
                        "google" => vec![Version::Google],
                        other => bail!("{at}.version: {other:?} is not ietf or google"),
                    };
                    if s.kind == "peer" {
                        chronos_time::SourceKind::Peer { key, versions }
                    } else {
                        chronos_time::SourceKind::Roughtime { key, versions }
                    }
                }
                other => bail!("{at}.kind: {other:?} is not ntp, roughtime or peer"),
            };
            let port = s.address.rsplit_once(':').and_then(|(host, p)| (!host.is_empty()).then_some(p));
            anyhow::ensure!(
                port.is_some_and(|p| p.parse::<u16>().is_ok_and(|p| p != 0)),
                "{at}.address: {:?} is not host:port",
                s.address
            );
            sources.push(chronos_time::Source { name: s.name.clone(), kind, address: s.address.clone() });
        }
        let external = self.sources.iter().filter(|s| s.kind != "peer").count() as u64;
        if external > 0 {
            anyhow::ensure!(
                (1..=external).contains(&self.min_agreeing),
                "time.min_agreeing: {} is not in 1..={external} (the ntp and roughtime sources configured): \
                 no quorum could ever be reached",
                self.min_agreeing
            );
        }
        for (k, v, lo, hi) in [
            ("time.max_distance_ms", self.max_distance_ms, 1, 60_000),
            ("time.max_drift_ppm", self.max_drift_ppm, 1, 10_000),
            ("time.poll_ms", self.poll_ms, 100, 3_600_000),
            ("time.timeout_ms", self.timeout_ms, 10, self.poll_ms.max(10)),
        ] {
            anyhow::ensure!((lo..=hi).contains(&v), "{k}: {v} is not in {lo}..={hi}");
        }
        Ok(chronos_time::Settings {
            sources,
            min_agreeing: self.min_agreeing as usize,
            max_distance: std::time::Duration::from_millis(self.max_distance_ms),
            max_drift_ppm: self.max_drift_ppm,
            poll: std::time::Duration::from_millis(self.poll_ms),
            timeout: std::time::Duration::from_millis(self.timeout_ms),
            policy,
            page,
        })
    }
}

/// `[log]`: the log's identity. Changing any of these after logs are stored
/// makes the ledger unverifiable; `chronos init` writes them once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// The origin line of checkpoints and the signing key's name: a
    /// schema-less URL such as `example.com/chronos/prod`.
    pub origin: String,
    /// Hash algorithm: `sha256` (default), `blake3`, `blake3-keyed` or
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
    /// Reads and validates `DIR/chronos.toml`'s `[log]`.
    pub fn load(data_dir: &Path) -> anyhow::Result<LogSettings> {
        Ok(Config::load_all(data_dir)?.0)
    }

    /// Reads `DIR/chronos.toml` with `CHRONOS_*` overrides applied, and
    /// validates `[log]`.
    pub fn load_all(data_dir: &Path) -> anyhow::Result<(LogSettings, Config)> {
        let path = data_dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut table: toml::Table = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        apply_env(&mut table, std::env::vars())?;
        let cfg: Config =
            table.try_into().with_context(|| format!("in {} (with CHRONOS_* overrides)", path.display()))?;
        let log = cfg.clone().validate(data_dir).with_context(|| format!("in {}", path.display()))?;
        Ok((log, cfg))
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

/// Sections whose keys the environment may override (not `[log]`: the
/// log's identity comes from the file only).
const ENV_SECTIONS: [&str; 8] = ["ingest", "pipeline", "vault", "database", "metrics", "time", "bridge", "tls"];

/// Applies `CHRONOS_<SECTION>_<KEY>` variables. The value is read as a TOML
/// value when it parses as one (numbers, booleans), else as a string. An
/// unknown key under a known section is an error, like in the file.
fn apply_env(table: &mut toml::Table, vars: impl Iterator<Item = (String, String)>) -> anyhow::Result<()> {
    for (name, value) in vars {
        let Some(rest) = name.strip_prefix("CHRONOS_") else { continue };
        let rest = rest.to_ascii_lowercase();
        let Some(section) = ENV_SECTIONS.iter().find(|s| rest.starts_with(&format!("{s}_"))) else { continue };
        let key = &rest[section.len() + 1..];
        if *section == "ingest" && key == "token" {
            continue; // read directly by ingest; never written into the table
        }
        let parsed: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        let entry = table.entry(section.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(t) = entry else { bail!("[{section}] in the file is not a table") };
        t.insert(key.to_owned(), parsed);
    }
    Ok(())
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
        let v = chronos_ledger::NoteVerifier::parse(text.trim_end())
            .with_context(|| format!("parsing {}", path.display()))?;
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
