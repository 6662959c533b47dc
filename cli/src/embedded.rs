//! The embedded default database: a private PostgreSQL cluster under
//! `DATA_DIR/pg`, created on first `chronos up` with the system's server
//! binaries, listening on 127.0.0.1 only, with a generated password.
//! PostgreSQL refuses to run as root, so when `chronos up` runs as root the
//! cluster belongs to, and runs as, the `postgres` user.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::unistd::{User, chown, geteuid};

const INSTALL_HINT: &str = "install PostgreSQL's server (Debian: `apt-get install postgresql-15`), \
     set CHRONOS_PG_BINDIR to its bin directory, or pass --database-url";

/// A prepared embedded cluster.
#[derive(Debug)]
pub struct Embedded {
    bindir: PathBuf,
    pgdata: PathBuf,
    log: PathBuf,
    port: u16,
    password: String,
    run_as: Option<User>,
}

fn find_bindir() -> anyhow::Result<PathBuf> {
    let has_server = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Some(d) = std::env::var_os("CHRONOS_PG_BINDIR") {
        let d = PathBuf::from(d);
        if has_server(&d) {
            return Ok(d);
        }
        bail!("CHRONOS_PG_BINDIR={} has no initdb and postgres; {INSTALL_HINT}", d.display());
    }
    let mut majors: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, d)| has_server(d))
        .collect();
    majors.sort();
    if let Some((_, d)) = majors.pop() {
        return Ok(d);
    }
    bail!("no PostgreSQL server binaries found; {INSTALL_HINT}")
}

impl Embedded {
    /// Finds the binaries and creates the cluster if it does not exist yet.
    pub fn prepare(data_dir: &Path, port: u16) -> anyhow::Result<Embedded> {
        Embedded::locate(data_dir, port, true)
    }

    /// An existing cluster only: for commands that read a log, where a
    /// missing cluster means there is nothing to read.
    pub fn existing(data_dir: &Path, port: u16) -> anyhow::Result<Embedded> {
        Embedded::locate(data_dir, port, false)
    }

    fn locate(data_dir: &Path, port: u16, create: bool) -> anyhow::Result<Embedded> {
        if port == 0 {
            bail!(
                "database.embedded_port is 0: set it in chronos.toml (chronos init picks one) or pass --database-url"
            );
        }
        let bindir = find_bindir()?;
        let run_as = if geteuid().is_root() {
            Some(User::from_name("postgres")?.context(
                "running as root, the embedded PostgreSQL needs the unprivileged user `postgres` (it comes with Debian's postgresql package)",
            )?)
        } else {
            None
        };
        let data_dir = data_dir.canonicalize().with_context(|| format!("{}", data_dir.display()))?;
        let pgdata = data_dir.join("pg");
        let pwpath = data_dir.join("pg.password");
        if run_as.is_some() {
            // The postgres user must pass through the data directory (0700
            // from `chronos init`) to reach pg/; it gets search permission
            // only, not listing: log.key stays 0600 and unreadable.
            let mode = fs::metadata(&data_dir)?.permissions().mode();
            if mode & 0o001 == 0 {
                fs::set_permissions(&data_dir, fs::Permissions::from_mode((mode & 0o7777) | 0o001))?;
            }
        }
        let e = Embedded { bindir, pgdata, log: data_dir.join("pg.log"), port, password: String::new(), run_as };
        if !e.pgdata.join("PG_VERSION").exists() {
            if !create {
                bail!(
                    "there is no embedded database in {}: run `chronos up --data-dir {}` first, or pass --database-url",
                    e.pgdata.display(),
                    data_dir.display()
                );
            }
            e.initdb(&pwpath)?;
        }
        let password = fs::read_to_string(&pwpath).with_context(|| format!("reading {}", pwpath.display()))?;
        Ok(Embedded { password: password.trim().to_owned(), ..e })
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(self.bindir.join(program));
        if let Some(u) = &self.run_as {
            c.uid(u.uid.as_raw()).gid(u.gid.as_raw());
        }
        c.env("LC_ALL", "C").env_remove("PGDATA");
        c
    }

    fn give(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(u) = &self.run_as {
            chown(path, Some(u.uid), Some(u.gid)).with_context(|| format!("chown {}", path.display()))?;
        }
        Ok(())
    }

    fn initdb(&self, pwpath: &Path) -> anyhow::Result<()> {
        eprintln!("chronos: creating the embedded PostgreSQL cluster in {}", self.pgdata.display());
        let mut pw = [0u8; 24];
        getrandom::fill(&mut pw).map_err(|e| anyhow::anyhow!("random password: {e}"))?;
        let password = hex::encode(pw);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(pwpath)
            .with_context(|| format!("writing {}", pwpath.display()))?;
        writeln!(f, "{password}")?;
        // initdb reads the password from a file its user can read; it is
        // deleted right after.
        let tmp_pw = self.pgdata.with_extension("initpw");
        fs::write(&tmp_pw, format!("{password}\n"))?;
        fs::set_permissions(&tmp_pw, fs::Permissions::from_mode(0o600))?;
        self.give(&tmp_pw)?;
        fs::create_dir_all(&self.pgdata)?;
        fs::set_permissions(&self.pgdata, fs::Permissions::from_mode(0o700))?;
        self.give(&self.pgdata)?;
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(&self.pgdata)
            .args(["-U", "chronos", "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-instructions"])
            .arg(format!("--pwfile={}", tmp_pw.display()))
            .output();
        let _ = fs::remove_file(&tmp_pw);
        let out = out.context("running initdb")?;
        if !out.status.success() {
            let _ = fs::remove_dir_all(&self.pgdata);
            let err = String::from_utf8_lossy(&out.stderr);
            let hint = if err.contains("Permission denied") && self.run_as.is_some() {
                "\nhint: as root, the cluster runs as `postgres`, which must be able to reach the data directory \
                 (for example, it cannot enter /root): use a data directory such as /var/lib/chronos, or pass --database-url"
            } else {
                ""
            };
            bail!("initdb failed:\n{err}{hint}");
        }
        Ok(())
    }

    /// The URL of the `chronos` database.
    pub fn url(&self) -> String {
        format!("postgres://chronos:{}@127.0.0.1:{}/chronos", self.password, self.port)
    }

    fn admin_url(&self) -> String {
        format!("postgres://chronos:{}@127.0.0.1:{}/postgres", self.password, self.port)
    }

    /// Starts the server as a child (stopped with us: parent-death signal).
    pub fn start(&self) -> anyhow::Result<Child> {
        self.stop_leftover();
        let log = fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut c = self.command("postgres");
        if Path::new("/usr/bin/setpriv").exists() {
            // setpriv sets the parent-death signal after the user switch
            // and keeps it across exec: postgres dies with `chronos up`.
            let postgres = self.bindir.join("postgres");
            c = Command::new("/usr/bin/setpriv");
            if let Some(u) = &self.run_as {
                c.uid(u.uid.as_raw()).gid(u.gid.as_raw());
            }
            c.env("LC_ALL", "C").env_remove("PGDATA").args(["--pdeathsig", "TERM", "--"]).arg(postgres);
        }
        // Its own process group: a terminal's Ctrl-C reaches `chronos up`
        // alone, which stops PostgreSQL last, after the services.
        c.process_group(0);
        let child = c
            .arg("-D")
            .arg(&self.pgdata)
            .args(["-p", &self.port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="])
            // A write-heavy ledger: with the default 1 GB of WAL between
            // checkpoints, one came every ~25 s at full load, each followed
            // by full-page images of every page touched again
            // (BENCHMARKS.md, "bench"). Crash recovery replays at most this.
            .args(["-c", "max_wal_size=4GB", "-c", "checkpoint_timeout=15min"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting postgres")?;
        Ok(child)
    }

    /// A server left running by a `chronos up` that was killed: stop it
    /// (fast shutdown) so ours can start.
    fn stop_leftover(&self) {
        let Ok(text) = fs::read_to_string(self.pgdata.join("postmaster.pid")) else { return };
        let Some(pid) = text.lines().next().and_then(|l| l.trim().parse::<i32>().ok()) else { return };
        let pid = nix::unistd::Pid::from_raw(pid);
        if nix::sys::signal::kill(pid, None).is_err() {
            return;
        }
        eprintln!("chronos: stopping the embedded PostgreSQL left running (pid {pid})");
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && nix::sys::signal::kill(pid, None).is_ok() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the server accepts connections, and creates the
    /// `chronos` database on first start.
    pub async fn ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let (client, conn) = loop {
            match tokio_postgres::connect(&self.admin_url(), tokio_postgres::NoTls).await {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "embedded PostgreSQL not ready yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    bail!("the embedded PostgreSQL did not start within {timeout:?}: {e}; see {}", self.log.display())
                }
            }
        };
        let task = tokio::spawn(conn);
        let exists = client.query_opt("SELECT 1 FROM pg_database WHERE datname = 'chronos'", &[]).await?.is_some();
        if !exists {
            client.batch_execute("CREATE DATABASE chronos").await?;
        }
        drop(client);
        let _ = task.await;
        Ok(())
    }
}
