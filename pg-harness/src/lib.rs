//! Private, throwaway PostgreSQL clusters for tests that need a real database.
//!
//! [`PgCluster::start`] creates a cluster from the system's PostgreSQL server
//! binaries in a fresh temporary directory, listening on a free port of
//! 127.0.0.1 (and a private Unix socket). [`TestDb::new`] adds a database for
//! the test. Nothing is shared between clusters, so tests can run in parallel.
//!
//! What it takes care of:
//! * **Root.** PostgreSQL refuses to run as root; when the tests do, the
//!   cluster runs as the `postgres` user (or `nobody`), which owns its files.
//! * **Speed.** `initdb` runs once per machine and PostgreSQL version into a
//!   template under the temporary directory (guarded by a file lock); each
//!   cluster starts from a copy.
//! * **Clean-up.** Dropping the cluster (also while a test panics) stops the
//!   server and deletes its directory. If the test process dies without
//!   unwinding (abort, SIGKILL), the server gets SIGQUIT from the kernel
//!   (parent-death signal, set with `setpriv`), and the next harness start
//!   deletes directories whose owner process is gone.
//! * **Missing PostgreSQL** is an error naming the package to install; tests
//!   fail with it, they never skip.
//!
//! What it does not do: tune PostgreSQL for production. Clusters run with
//! `fsync=off` (a test cluster never has to survive an OS crash; PostgreSQL's
//! own crash recovery after SIGKILL still works), and they are not meant to
//! outlive the test.
//!
//! Create a cluster on the test's own thread: the parent-death signal fires
//! when the thread that started the server exits.

use std::fs::{self, File};
use std::io::Read as _;
use std::net::TcpListener;
use std::os::unix::fs::{PermissionsExt as _, chown};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User, geteuid};

/// Superuser name of every test cluster (trust authentication, no password).
pub const SUPERUSER: &str = "postgres";
const INSTALL_HINT: &str = "install the PostgreSQL server binaries: `apt-get install postgresql-15` on Debian 12 \
     (or set CHRONOS_PG_BINDIR to the directory holding initdb and postgres)";
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a cluster could not be provided.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// PostgreSQL server binaries are not installed.
    #[error("PostgreSQL not found: {0}")]
    NotInstalled(String),
    /// Running as root, but there is no unprivileged user to run PostgreSQL as.
    #[error("tests run as root and neither the `postgres` nor the `nobody` user exists to run PostgreSQL")]
    NoUser,
    /// A filesystem operation failed.
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    /// A PostgreSQL program failed.
    #[error("{program} failed ({status}): {output}")]
    Command { program: String, status: String, output: String },
    /// The server did not become ready.
    #[error("PostgreSQL did not start: {reason}\n--- server log ---\n{log}")]
    Start { reason: String, log: String },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let context = context.into();
    move |source| HarnessError::Io { context, source }
}

/// Where the server binaries are, and whom to run them as.
#[derive(Debug, Clone)]
struct Install {
    bindir: PathBuf,
    version: String,
    /// `Some` when running as root: the user that owns and runs clusters.
    run_as: Option<User>,
}

impl Install {
    fn find() -> Result<Install, HarnessError> {
        let bindir = find_bindir()?;
        let out = Command::new(bindir.join("postgres"))
            .arg("--version")
            .output()
            .map_err(io(format!("running {}/postgres --version", bindir.display())))?;
        // "postgres (PostgreSQL) 15.18 (Debian ...)" -> "15"
        let text = String::from_utf8_lossy(&out.stdout);
        let version = text
            .split_whitespace()
            .nth(2)
            .and_then(|v| v.split('.').next())
            .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| HarnessError::NotInstalled(format!("unexpected `postgres --version` output {text:?}")))?
            .to_owned();
        let run_as = if geteuid().is_root() {
            let user = ["postgres", "nobody"]
                .iter()
                .find_map(|n| User::from_name(n).ok().flatten())
                .ok_or(HarnessError::NoUser)?;
            Some(user)
        } else {
            None
        };
        Ok(Install { bindir, version, run_as })
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(self.bindir.join(program));
        if let Some(u) = &self.run_as {
            c.uid(u.uid.as_raw()).gid(u.gid.as_raw());
        }
        c.env("LC_ALL", "C").env_remove("PGDATA");
        c
    }

    fn give(&self, path: &Path) -> Result<(), HarnessError> {
        if let Some(u) = &self.run_as {
            chown(path, Some(u.uid.as_raw()), Some(u.gid.as_raw())).map_err(io(format!("chown {}", path.display())))?;
        }
        Ok(())
    }

    fn owner_tag(&self) -> String {
        match &self.run_as {
            Some(u) => u.name.clone(),
            None => geteuid().to_string(),
        }
    }
}

fn find_bindir() -> Result<PathBuf, HarnessError> {
    let has_server = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Some(d) = std::env::var_os("CHRONOS_PG_BINDIR") {
        let d = PathBuf::from(d);
        return if has_server(&d) {
            Ok(d)
        } else {
            Err(HarnessError::NotInstalled(format!(
                "CHRONOS_PG_BINDIR={} has no initdb and postgres; {INSTALL_HINT}",
                d.display()
            )))
        };
    }
    // Debian and Ubuntu: /usr/lib/postgresql/<major>/bin; take the newest.
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
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if let Ok(real) = fs::canonicalize(dir.join("initdb"))
            && let Some(parent) = real.parent()
            && has_server(parent)
        {
            return Ok(parent.to_owned());
        }
    }
    Err(HarnessError::NotInstalled(INSTALL_HINT.to_owned()))
}

fn run(mut cmd: Command) -> Result<Output, HarnessError> {
    let program = format!("{:?}", cmd.get_program());
    let out = cmd.stdin(Stdio::null()).output().map_err(io(format!("starting {program}")))?;
    if !out.status.success() {
        return Err(HarnessError::Command {
            program,
            status: out.status.to_string(),
            output: format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        });
    }
    Ok(out)
}

/// The shared, initdb'd template for this PostgreSQL version and owner.
fn template(install: &Install) -> Result<PathBuf, HarnessError> {
    let root = std::env::temp_dir();
    let name = format!("chronos-pg-template-{}-{}", install.version, install.owner_tag());
    let dir = root.join(&name);
    let lock_path = root.join(format!("{name}.lock"));
    let lock = File::create(&lock_path).map_err(io(format!("creating {}", lock_path.display())))?;
    // Serialises template creation across concurrent test processes; released on drop.
    lock.lock().map_err(io(format!("locking {}", lock_path.display())))?;
    if dir.join("complete").is_file() {
        return Ok(dir);
    }
    let tmp = root.join(format!("{name}.tmp"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io(format!("removing {}", tmp.display())))?;
    }
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(io(format!("removing {}", dir.display())))?;
    }
    fs::create_dir(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700)).map_err(io("chmod template"))?;
    install.give(&tmp)?;
    let mut initdb = install.command("initdb");
    initdb.arg("-D").arg(&tmp).args([
        "-U",
        SUPERUSER,
        "-A",
        "trust",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
        "--no-instructions",
    ]);
    run(initdb)?;
    File::create(tmp.join("complete")).map_err(io("marking the template complete"))?;
    fs::rename(&tmp, &dir).map_err(io(format!("renaming {} to {}", tmp.display(), dir.display())))?;
    Ok(dir)
}

/// Removes cluster directories left by test processes that no longer exist.
fn sweep_stale() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with("chronos-pg-cluster-") {
            continue;
        }
        let owner = fs::read_to_string(e.path().join("owner.pid")).ok().and_then(|s| s.trim().parse::<i32>().ok());
        let Some(owner) = owner else { continue };
        if kill(Pid::from_raw(owner), None).is_ok() {
            continue; // still running
        }
        // Its postmaster should have died with it; make sure.
        if let Some(pm) = fs::read_to_string(e.path().join("data/postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
        {
            let _ = kill(Pid::from_raw(pm), Signal::SIGKILL);
        }
        let _ = fs::remove_dir_all(e.path());
    }
}

fn free_port() -> Result<u16, HarnessError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io("binding a free port"))?;
    Ok(l.local_addr().map_err(io("reading the bound port"))?.port())
}

/// A running private PostgreSQL cluster. Stopped and deleted on drop.
#[derive(Debug)]
pub struct PgCluster {
    install: Install,
    base: PathBuf,
    port: u16,
    server: Option<Child>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl PgCluster {
    /// Starts a new cluster (see the crate docs).
    pub fn start() -> Result<PgCluster, HarnessError> {
        let install = Install::find()?;
        sweep_stale();
        let template = template(&install)?;
        let base = std::env::temp_dir().join(format!(
            "chronos-pg-cluster-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        if base.exists() {
            fs::remove_dir_all(&base).map_err(io(format!("removing {}", base.display())))?;
        }
        fs::create_dir(&base).map_err(io(format!("creating {}", base.display())))?;
        fs::write(base.join("owner.pid"), std::process::id().to_string()).map_err(io("writing owner.pid"))?;
        let mut cluster = PgCluster { install, base, port: 0, server: None };
        let mut cp = Command::new("cp");
        cp.arg("-a").arg(&template).arg(cluster.data_dir());
        run(cp)?;
        let sock = cluster.socket_dir();
        fs::create_dir(&sock).map_err(io("creating the socket directory"))?;
        cluster.install.give(&sock)?;
        cluster.install.give(&cluster.base)?;
        let mut last = None;
        for _ in 0..5 {
            match cluster.launch(None) {
                Ok(()) => return Ok(cluster),
                // Another process took the port between our probe and bind.
                Err(HarnessError::Start { log, .. }) if log.contains("could not bind") => last = Some(log),
                Err(e) => return Err(e),
            }
        }
        Err(HarnessError::Start { reason: "no free port after 5 attempts".into(), log: last.unwrap_or_default() })
    }

    /// Starts the server, on `port` or a free one.
    fn launch(&mut self, port: Option<u16>) -> Result<(), HarnessError> {
        self.port = match port {
            Some(p) => p,
            None => free_port()?,
        };
        let log_path = self.base.join("postgres.log");
        let log =
            fs::OpenOptions::new().create(true).append(true).open(&log_path).map_err(io("opening postgres.log"))?;
        self.install.give(&log_path)?;
        let mut cmd = Command::new("setpriv");
        if let Some(u) = &self.install.run_as {
            cmd.arg(format!("--reuid={}", u.uid)).arg(format!("--regid={}", u.gid)).arg("--init-groups");
        }
        // The kernel sends SIGQUIT (immediate shutdown) to the server if the
        // thread that started it dies without stopping it.
        cmd.args(["--pdeathsig", "QUIT", "--"])
            .arg(self.install.bindir.join("postgres"))
            .arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.socket_dir())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=200", "-c", "log_min_messages=warning", "-c", "logging_collector=off"])
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io("duplicating the log handle"))?)
            .stderr(log);
        // New process group: a Ctrl-C on the test run is handled by the harness, not
        // delivered straight to the server.
        cmd.process_group(0);
        let child = cmd.spawn().map_err(io("starting setpriv/postgres (setpriv is in Debian's util-linux)"))?;
        self.server = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.server.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.server = None;
                return Err(HarnessError::Start { reason: format!("server exited with {status}"), log: self.log() });
            }
            let ready = self
                .install
                .command("pg_isready")
                .args(["-q", "-h", "127.0.0.1", "-U", SUPERUSER, "-p", &self.port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_err(io("running pg_isready"))?;
            if ready.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(HarnessError::Start {
                    reason: format!("not ready after {START_TIMEOUT:?}"),
                    log: self.log(),
                });
            }
            sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        let mut s = String::new();
        let _ = File::open(self.base.join("postgres.log")).and_then(|mut f| f.read_to_string(&mut s));
        s
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the server's Unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.base.join("sock")
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.base.join("data")
    }

    /// Process id of the postmaster, while it runs.
    pub fn server_pid(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
    }

    /// A connection URL for `dbname`, as the superuser over TCP.
    pub fn url(&self, dbname: &str) -> String {
        format!("postgresql://{SUPERUSER}@127.0.0.1:{}/{dbname}", self.port)
    }

    /// Runs SQL through `psql` against `dbname` and returns its unaligned output.
    pub fn psql(&self, dbname: &str, sql: &str) -> Result<String, HarnessError> {
        let mut cmd = self.install.command("psql");
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", SUPERUSER]).args([
            "-p",
            &self.port.to_string(),
            "-d",
            dbname,
            "-c",
            sql,
        ]);
        let out = run(cmd)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
    }

    /// Creates a database and returns its URL. Names are `[a-z0-9_]`.
    pub fn create_database(&self, name: &str) -> Result<String, HarnessError> {
        assert!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "database names in tests are [a-z0-9_]+, got {name:?}"
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(self.url(name))
    }

    /// Crashes the server the way a power cut looks to PostgreSQL:
    /// immediate shutdown (SIGQUIT), no checkpoint. The next start runs
    /// crash recovery, which empties every UNLOGGED table.
    pub fn crash(&mut self) -> Result<(), HarnessError> {
        let Some(mut child) = self.server.take() else { return Ok(()) };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGQUIT);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if child.try_wait().map_err(io("waiting for the crashed server"))?.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(());
            }
            sleep(Duration::from_millis(10));
        }
    }

    /// Starts the server again, on the same port, after [`PgCluster::crash`]
    /// (or stops it cleanly first if it runs).
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.stop();
        let port = self.port;
        let mut last = None;
        // The port was ours a moment ago; retry briefly if the kernel holds it.
        for _ in 0..50 {
            match self.launch(Some(port)) {
                Ok(()) => return Ok(()),
                Err(HarnessError::Start { log, .. }) if log.contains("could not bind") => {
                    last = Some(log);
                    sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
        Err(HarnessError::Start { reason: format!("port {port} stayed busy"), log: last.unwrap_or_default() })
    }

    /// Stops the server (fast shutdown, then SIGKILL after 30 s).
    fn stop(&mut self) {
        let Some(mut child) = self.server.take() else { return };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGINT);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.base);
    }
}

/// A cluster with one fresh database for one test.
#[derive(Debug)]
pub struct TestDb {
    /// The cluster (stopped when this is dropped).
    pub cluster: PgCluster,
    /// The database's name.
    pub name: String,
    /// Its connection URL.
    pub url: String,
}

impl TestDb {
    /// Starts a private cluster and creates database `name` in it. Panics
    /// with the reason (for example, which package to install) on failure:
    /// a test that needs a database fails without one, it never skips.
    pub fn new(name: &str) -> TestDb {
        let cluster = PgCluster::start().unwrap_or_else(|e| panic!("test database: {e}"));
        let url = cluster.create_database(name).unwrap_or_else(|e| panic!("test database: {e}"));
        TestDb { cluster, name: name.to_owned(), url }
    }
}
