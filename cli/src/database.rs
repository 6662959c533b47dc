//! Finding the database of a log for the commands that read it (`verify`,
//! `checkpoint`, `prove`, `consistency`): `--database-url`, else
//! `database.url` from the data directory's configuration, else the
//! embedded cluster under `DATA_DIR/pg`. When `chronos up` owns the data
//! directory ([`crate::lock`]) its running cluster is used and never
//! touched: a failed connection is reported, not "fixed". Otherwise the
//! command takes the directory's lock itself, starts the cluster for the
//! command and stops it after.

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::config::Config;
use crate::embedded::Embedded;

/// Where to read a log from, as given on the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct Source {
    /// The log's data directory (its database is found from its configuration).
    #[arg(long, env = "CHRONOS_DATA_DIR")]
    pub data_dir: Option<std::path::PathBuf>,
    /// The log's PostgreSQL database, instead of the data directory's.
    #[arg(long, env = "CHRONOS_DATABASE_URL")]
    pub database_url: Option<String>,
}

/// A database URL, and the embedded server started for it, if any.
#[derive(Debug)]
pub struct Database {
    pub url: String,
    server: Option<Child>,
    /// Held while this command runs the embedded server (released after
    /// the server stopped: fields drop after `Drop::drop`).
    _owner: Option<crate::lock::OwnerLock>,
}

impl Drop for Database {
    /// Stops a server this command started (fast shutdown: it only read).
    fn drop(&mut self) {
        let Some(child) = &mut self.server else { return };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let _ = child.wait();
    }
}

impl Source {
    /// Resolves the database, starting the embedded one if needed.
    pub fn open(&self) -> anyhow::Result<Database> {
        if let Some(url) = &self.database_url {
            return Ok(Database { url: url.clone(), server: None, _owner: None });
        }
        let Some(dir) = &self.data_dir else {
            bail!("say which log: --data-dir DIR or --database-url URL");
        };
        let (_, cfg) = Config::load_all(dir)?;
        if !cfg.database.url.is_empty() {
            return Ok(Database { url: cfg.database.url, server: None, _owner: None });
        }
        let embedded = Embedded::existing(dir, cfg.database.embedded_port)?;
        let url = embedded.url();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let probe = || {
            rt.block_on(async {
                let probe = chronos_tls::pg::connect(&url);
                match tokio::time::timeout(Duration::from_secs(5), probe).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("no answer within 5 s".to_owned()),
                }
            })
        };
        let owner = match crate::lock::try_lock(dir, "a chronos command reading the log")? {
            Ok(owner) => owner,
            // Someone else owns the directory and runs its server: use it,
            // and if it does not answer, say so; never stop or start it.
            Err(holder) => {
                if let Err(e) = probe() {
                    bail!(
                        "{holder} owns {} and runs its embedded PostgreSQL, which refused this command's connection: {e}",
                        dir.display()
                    );
                }
                return Ok(Database { url, server: None, _owner: None });
            }
        };
        if probe().is_ok() {
            return Ok(Database { url, server: None, _owner: Some(owner) });
        }
        eprintln!("chronos: starting the embedded PostgreSQL of {} for this command", dir.display());
        let child = embedded.start()?;
        let db = Database { url, server: Some(child), _owner: Some(owner) };
        rt.block_on(embedded.ready(Duration::from_secs(60))).context("starting the embedded PostgreSQL")?;
        Ok(db)
    }
}

/// Connects, with the connection driven on the current runtime.
pub async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = chronos_tls::pg::connect(url)
        .await
        .with_context(|| format!("cannot connect to PostgreSQL at {}", redact(url)))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The newest stored checkpoint note, not yet verified.
pub async fn newest_checkpoint_note(client: &tokio_postgres::Client) -> anyhow::Result<Option<String>> {
    Ok(client
        .query_opt("SELECT note FROM checkpoints ORDER BY tree_size DESC, id DESC LIMIT 1", &[])
        .await
        .context("reading checkpoints")?
        .map(|r| r.get(0)))
}

/// Reads a verifier key given as a file or as the key string itself.
pub fn read_key(arg: &str) -> anyhow::Result<chronos_ledger::NoteVerifier> {
    let path = Path::new(arg);
    let text = if path.exists() {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    } else if arg.contains('+') {
        arg.to_owned()
    } else {
        bail!("--key {arg}: no such file (give the verifier key file, such as DATA_DIR/log.vkey, or the key itself)");
    };
    chronos_ledger::NoteVerifier::parse(text.trim()).with_context(|| format!("--key {arg}: not a verifier key"))
}

/// The hash key of a keyed log, from `CHRONOS_HMAC_KEY`.
pub fn hash_key() -> anyhow::Result<Option<chronos_ledger::HashKey>> {
    match std::env::var("CHRONOS_HMAC_KEY") {
        Ok(k) => Ok(Some(chronos_ledger::HashKey::from_hex(&k).context("CHRONOS_HMAC_KEY")?)),
        Err(_) => Ok(None),
    }
}

/// A database URL (or key=value connection string) for messages: user,
/// hosts, ports and database name, with any password shown as `***`.
pub fn redact(url: &str) -> String {
    use tokio_postgres::config::Host;
    let Ok(c) = url.parse::<tokio_postgres::Config>() else {
        return "(a database URL that does not parse)".to_owned();
    };
    let ports = c.get_ports();
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(dir) => dir.display().to_string(),
            };
            match ports.get(i).or(if ports.len() == 1 { ports.first() } else { None }) {
                Some(p) => format!("{host}:{p}"),
                None => host,
            }
        })
        .collect();
    let user = match (c.get_user(), c.get_password()) {
        (Some(u), Some(_)) => format!("{u}:***@"),
        (Some(u), None) => format!("{u}@"),
        (None, Some(_)) => ":***@".to_owned(),
        (None, None) => String::new(),
    };
    format!("postgres://{user}{}/{}", hosts.join(","), c.get_dbname().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_redacted_in_urls_and_key_value_strings() {
        assert_eq!(redact("postgres://u:secret@h:5/db"), "postgres://u:***@h:5/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h:5432/db");
        assert_eq!(redact("host=h port=5 user=u password=secret dbname=db"), "postgres://u:***@h:5/db");
        assert_eq!(redact("postgresql://u:s%40cret@a:1,b:2/db?sslmode=require"), "postgres://u:***@a:1,b:2/db");
        assert!(!redact("host=/run/postgresql password='x y'").contains("x y"));
        assert_eq!(redact("postgres://u:pw@h:5/db?password=also"), "postgres://u:***@h:5/db");
        assert_eq!(redact("not a url password=p"), "(a database URL that does not parse)");
    }
}
