//! TLS for Chronos's TCP surfaces (ingest, the bridge's HTTP and gRPC),
//! and the bearer-token check they share.
//!
//! * [`server_config`] builds a rustls server configuration (ring
//!   provider, TLS 1.2 and 1.3) from PEM files; given a client CA, every
//!   client must present a certificate it signed (mutual TLS).
//! * [`accept`] runs a handshake with a deadline, so a client that opens
//!   a connection and stalls cannot hold it.
//! * [`Tokens`] checks `Authorization: Bearer` values in constant time.
//! * [`pg::connect`] connects to PostgreSQL with TLS as the connection
//!   string's `sslmode` and `sslrootcert` ask (libpq's meanings).
//!
//! What it does not do: create certificates, reload them when the files
//! change (a restart does), decide which surface needs a token (the
//! services' settings do), or present client certificates to PostgreSQL.

pub mod pg;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};

/// The PEM files of a TLS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate this CA signed.
    pub client_ca: Option<PathBuf>,
}

/// Why a TLS configuration could not be built: the operator's files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File { path: path.to_owned(), reason: reason.to_string() }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// The ring provider, named explicitly: no process-wide default needed.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration from `files`, offering `alpn` protocols (for
/// example `h2` and `http/1.1`).
pub fn server_config(files: &ServerFiles, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| file_error(&files.key, e))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca)? {
                roots.add(c).map_err(|e| file_error(ca, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| file_error(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(format!("{} and {}: {e}", files.cert.display(), files.key.display())))?;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// How long a client may take to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Completes the server side of a handshake on `stream` within
/// [`HANDSHAKE_TIMEOUT`].
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: S,
) -> std::io::Result<tokio_rustls::server::TlsStream<S>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")),
    }
}

pub use tokio_rustls::TlsAcceptor;

/// Most handshakes in progress at once on one listener; more connections
/// wait in the kernel's backlog.
pub const MAX_HANDSHAKES: usize = 1024;

/// Accepts TCP connections on `listener` and completes their handshakes
/// concurrently (each with its deadline), so that a slow or silent client
/// never holds up the others; finished TLS connections come out of the
/// returned channel, in the order their handshakes end. A failed
/// handshake is passed to `failed` (to count it) and dropped. Stops when
/// the receiver is dropped.
pub fn spawn_acceptor(
    listener: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
    failed: impl Fn(std::io::Error) + Send + Sync + 'static,
) -> tokio::sync::mpsc::Receiver<(tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::net::SocketAddr)> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let failed = Arc::new(failed);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else { return };
            let (tcp, peer) = tokio::select! {
                a = listener.accept() => match a {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of descriptors, for example: pause, as axum does.
                        failed(e);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx, failed) = (acceptor.clone(), tx.clone(), failed.clone());
            tokio::spawn(async move {
                let _slot = slot;
                match accept(&acceptor, tcp).await {
                    Ok(tls) => {
                        let _ = tx.send((tls, peer)).await;
                    }
                    Err(e) => failed(e),
                }
            });
        }
    });
    rx
}
pub use {rustls, tokio_rustls};

/// Bearer tokens a surface accepts. Empty: no token is asked for.
#[derive(Clone, Default)]
pub struct Tokens(Arc<Vec<Vec<u8>>>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} redacted)", self.0.len())
    }
}

impl Tokens {
    pub fn new(tokens: Vec<String>) -> Tokens {
        Tokens(Arc::new(tokens.into_iter().map(String::into_bytes).collect()))
    }

    /// Whether no token is configured (everything is open).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Which token an `Authorization` header value carries, if any: the
    /// scheme is `Bearer` in any case (RFC 9110, 11.1). Every token is
    /// compared in constant time, so neither a token nor which one
    /// matched shows in the timing.
    pub fn matching(&self, authorization: Option<&str>) -> Option<usize> {
        let (scheme, given) = authorization?.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let given = given.trim_start().as_bytes();
        let mut matched = None;
        for (i, token) in self.0.iter().enumerate() {
            if bool::from(subtle::ConstantTimeEq::ct_eq(given, token.as_slice())) {
                matched = Some(i);
            }
        }
        matched
    }

    /// The token at `i` (what [`Tokens::matching`] returned).
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        self.0.get(i).map(Vec::as_slice)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_token_matches_only_as_a_bearer_value_in_full() {
        let t = Tokens::new(vec!["alpha".into(), "beta-2".into()]);
        assert_eq!(t.matching(Some("Bearer beta-2")), Some(1));
        assert_eq!(t.matching(Some("bearer   alpha")), Some(0));
        for bad in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Bearer alph"),
            Some("Bearer alphaX"),
            Some("Basic alpha"),
            Some("alpha"),
        ] {
            assert_eq!(t.matching(bad), None, "{bad:?}");
        }
        assert!(Tokens::default().is_empty());
    }

    #[test]
    fn missing_or_empty_files_are_named_in_the_error() {
        let dir = std::env::temp_dir().join(format!("chronos-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let files = ServerFiles { cert: empty.clone(), key: dir.join("missing.key"), client_ca: None };
        let e = server_config(&files, &[]).unwrap_err().to_string();
        assert!(e.contains("empty.pem") && e.contains("no PEM certificate"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
