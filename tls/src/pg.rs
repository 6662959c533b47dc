//! PostgreSQL connections with TLS (rustls), honouring libpq's `sslmode`
//! and `sslrootcert` in the connection string, so that a managed
//! PostgreSQL that requires TLS works and a man in the middle is caught
//! when asked for:
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `allow`, `prefer` (the default) | when the server offers it | not checked (as libpq) |
//! | `require` | always | not checked (as libpq without a root certificate) |
//! | `verify-ca` | always | signed by `sslrootcert` |
//! | `verify-full` | always | signed by `sslrootcert` and naming the host |
//!
//! tokio-postgres knows only `disable`, `prefer` and `require`: the
//! connection string is rewritten for it (the verifying modes become
//! `require` with a verifier of ours). Without `sslrootcert`, the
//! verifying modes use `~/.postgresql/root.crt` as libpq does. Client
//! certificates (`sslcert`, `sslkey`) are not supported: tokio-postgres
//! refuses such a string as an unknown option, so nothing is silently
//! ignored.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject as _;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(v: &str) -> Option<SslMode> {
        Some(match v {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    /// What tokio-postgres is told.
    fn for_tokio_postgres(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow | SslMode::Prefer => "prefer",
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => "require",
        }
    }
}

/// A connection string split into what tokio-postgres reads and the TLS
/// options it does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The string for tokio-postgres (`sslmode` rewritten, `sslrootcert` removed).
    pub conninfo: String,
    pub mode: SslMode,
    pub root_cert: Option<PathBuf>,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits the TLS options off a URL (`postgres://…?sslmode=…`) or a
/// key=value string (`host=… sslmode=…`). An unknown `sslmode` is an error.
pub fn target(conninfo: &str) -> Result<Target, String> {
    let mut mode = SslMode::Prefer;
    let mut root_cert = None;
    let mut take = |k: &str, v: &str| -> Result<bool, String> {
        match k {
            "sslmode" => {
                mode = SslMode::parse(v).ok_or_else(|| {
                    format!("sslmode={v}: not one of disable, allow, prefer, require, verify-ca, verify-full")
                })?;
                Ok(true)
            }
            "sslrootcert" => {
                root_cert = Some(PathBuf::from(v));
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let rebuilt = if conninfo.starts_with("postgres://") || conninfo.starts_with("postgresql://") {
        let (base, query) = conninfo.split_once('?').unwrap_or((conninfo, ""));
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if !take(k, &percent_decode(v))? {
                kept.push(pair.to_owned());
            }
        }
        kept.push(format!("sslmode={}", mode.for_tokio_postgres()));
        format!("{base}?{}", kept.join("&"))
    } else {
        let mut kept = Vec::new();
        for word in conninfo.split_whitespace() {
            let (k, v) = word.split_once('=').unwrap_or((word, ""));
            if !take(k.trim(), v.trim().trim_matches('\''))? {
                kept.push(word.to_owned());
            }
        }
        kept.push(format!("sslmode={}", mode.for_tokio_postgres()));
        kept.join(" ")
    };
    Ok(Target { conninfo: rebuilt, mode, root_cert })
}

/// Accepts any certificate (libpq's `prefer` and `require`): the
/// connection is encrypted, not authenticated. Handshake signatures are
/// still checked, so the peer holds the key of the certificate it sent.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to the root certificate; the name is
/// not checked.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::CertificateError as E;
        match self.0.verify_server_cert(end, intermediates, name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(E::NotValidForName | E::NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(m, c, d)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(m, c, d)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

fn client_config(t: &Target) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let verifying = matches!(t.mode, SslMode::VerifyCa | SslMode::VerifyFull);
    if !verifying {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
            .with_no_client_auth());
    }
    let path = match &t.root_cert {
        Some(p) => p.clone(),
        None => std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".postgresql/root.crt"))
            .ok_or("sslrootcert is not set and there is no HOME for ~/.postgresql/root.crt")?,
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("sslrootcert {}: holds no PEM certificate", path.display()));
    }
    for c in certs {
        roots.add(c).map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
    }
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
    let verifier: Arc<dyn ServerCertVerifier> =
        if t.mode == SslMode::VerifyFull { webpki } else { Arc::new(ChainOnly(webpki)) };
    Ok(builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth())
}

/// Why TLS could not be set up for a connection (a bad `sslrootcert`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PgTlsError(String);

/// tokio-postgres's TLS connector for one connection string; a TLS
/// configuration that cannot be built fails the connection with its
/// reason, as a TLS error.
#[derive(Clone)]
pub struct PgTls(Result<MakeRustlsConnect, Arc<str>>);

impl std::fmt::Debug for PgTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Ok(_) => f.write_str("PgTls(rustls)"),
            Err(why) => write!(f, "PgTls(unusable: {why})"),
        }
    }
}

impl<S> MakeTlsConnect<S> for PgTls
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    type Stream = <MakeRustlsConnect as MakeTlsConnect<S>>::Stream;
    type TlsConnect = <MakeRustlsConnect as MakeTlsConnect<S>>::TlsConnect;
    type Error = PgTlsError;

    fn make_tls_connect(&mut self, hostname: &str) -> Result<Self::TlsConnect, Self::Error> {
        match &mut self.0 {
            Ok(m) => match <MakeRustlsConnect as MakeTlsConnect<S>>::make_tls_connect(m, hostname) {
                Ok(c) => Ok(c),
                Err(never) => match never {},
            },
            Err(why) => Err(PgTlsError(why.to_string())),
        }
    }
}

/// A connection's driving future (spawn it).
pub type Connection = Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send>>;

/// Connects as `conninfo` asks, TLS included (see the module's table).
pub async fn connect(conninfo: &str) -> Result<(tokio_postgres::Client, Connection), tokio_postgres::Error> {
    let (conninfo, tls) = match target(conninfo) {
        Ok(t) => {
            let tls = client_config(&t).map(MakeRustlsConnect::new).map_err(Arc::from);
            (t.conninfo, PgTls(tls))
        }
        // An sslmode tokio-postgres cannot read either: let it say so.
        Err(_) => (conninfo.to_owned(), PgTls(Err(Arc::from("unreadable sslmode")))),
    };
    let (client, conn) = tokio_postgres::connect(&conninfo, tls).await?;
    Ok((client, Box::pin(conn)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tls_options_are_split_off_urls_and_key_value_strings() {
        let t = target(
            "postgres://u:p@db.example:5432/chronos?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(t.mode, SslMode::VerifyFull);
        assert_eq!(t.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(t.conninfo, "postgres://u:p@db.example:5432/chronos?application_name=x&sslmode=require");
        let t = target("host=db port=5432 sslmode='verify-ca' sslrootcert=/ca.pem user=chronos").unwrap();
        assert_eq!((t.mode, t.root_cert.clone()), (SslMode::VerifyCa, Some(PathBuf::from("/ca.pem"))));
        assert_eq!(t.conninfo, "host=db port=5432 user=chronos sslmode=require");
        let t = target("postgres://localhost/x").unwrap();
        assert_eq!((t.mode, t.conninfo.as_str()), (SslMode::Prefer, "postgres://localhost/x?sslmode=prefer"));
        assert_eq!(target("postgres://h/x?sslmode=disable").unwrap().conninfo, "postgres://h/x?sslmode=disable");
        assert!(target("postgres://h/x?sslmode=verify").unwrap_err().contains("sslmode=verify"));
    }

    #[test]
    fn a_verifying_mode_without_a_readable_root_certificate_says_which_file() {
        let t = target("postgres://h/x?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem").unwrap();
        let e = client_config(&t).unwrap_err();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
