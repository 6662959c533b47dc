//! `[tls]`: one certificate for every TCP surface of this node (ingest,
//! the bridge's HTTP and gRPC ports), and bearer-token files.
//! `/metrics` stays plain HTTP on its own addresses (`[metrics]`,
//! loopback by default), off the public ports.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, ensure};
use serde::{Deserialize, Serialize};

/// `[tls]`. Paths are relative to the data directory; empty = unset.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain (leaf first). Set with `key_file` to serve TLS.
    pub cert_file: String,
    /// PEM private key of the certificate.
    pub key_file: String,
    /// PEM CA certificates: when set, every client must present a certificate one of them signed (mTLS).
    pub client_ca_file: String,
}

impl TlsConfig {
    pub fn check(&self) -> anyhow::Result<()> {
        ensure!(
            self.cert_file.is_empty() == self.key_file.is_empty(),
            "tls.cert_file and tls.key_file: set both (TLS on) or neither (plain)"
        );
        ensure!(
            self.client_ca_file.is_empty() || !self.cert_file.is_empty(),
            "tls.client_ca_file: client certificates need TLS (set tls.cert_file and tls.key_file)"
        );
        Ok(())
    }

    /// The files, resolved against `data_dir`; `None` when TLS is off.
    pub fn files(&self, data_dir: &Path) -> Option<chronos_tls::ServerFiles> {
        if self.cert_file.is_empty() {
            return None;
        }
        Some(chronos_tls::ServerFiles {
            cert: data_dir.join(&self.cert_file),
            key: data_dir.join(&self.key_file),
            client_ca: (!self.client_ca_file.is_empty()).then(|| data_dir.join(&self.client_ca_file)),
        })
    }

    /// The rustls configuration for an HTTP/1.1 surface (ingest).
    pub fn http1(&self, data_dir: &Path) -> anyhow::Result<Option<Arc<chronos_tls::rustls::ServerConfig>>> {
        self.files(data_dir).map(|f| chronos_tls::server_config(&f, &[b"http/1.1"]).context("[tls]")).transpose()
    }

    /// `http` or `https`, for the addresses `up` prints.
    pub fn scheme(&self) -> &'static str {
        if self.cert_file.is_empty() { "http" } else { "https" }
    }
}

/// Bearer tokens from `file` (relative to `data_dir`; one per line, blank
/// lines and `#` comments skipped), for the setting named `setting`.
pub fn read_tokens(data_dir: &Path, setting: &str, file: &str) -> anyhow::Result<Vec<String>> {
    if file.is_empty() {
        return Ok(Vec::new());
    }
    let path = data_dir.join(file);
    let t = std::fs::read_to_string(&path).with_context(|| format!("{setting}: reading {}", path.display()))?;
    let tokens: Vec<String> =
        t.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect();
    ensure!(!tokens.is_empty(), "{setting}: {} holds no token", path.display());
    for (i, tok) in tokens.iter().enumerate() {
        ensure!(
            tok.bytes().all(|b| b.is_ascii_graphic()),
            "{setting}: {} line {}: a token is printable ASCII without spaces",
            path.display(),
            i + 1
        );
    }
    Ok(tokens)
}
