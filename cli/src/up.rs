//! `chronos up`: the supervisor. It starts PostgreSQL (embedded, unless a
//! URL is given), applies migrations, then the services, each a child
//! process running this same binary: vault writer, orchestrator, hashers,
//! ingest. A child that dies is restarted with backoff (100 ms doubling to
//! 5 s, reset after 30 s of life). Ctrl-C or SIGTERM stops them in pipeline
//! order (ingest first, vault writer last, so everything accepted is
//! committed and covered by a final checkpoint), then PostgreSQL.
//!
//! Each child's pid is in `DATA_DIR/run/<name>.pid`, its metrics address in
//! `DATA_DIR/run/<name>.metrics`, the ingest address in `run/ingest-<slot>.addr`.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::embedded::Embedded;
use crate::services::Plan;

/// glibc's malloc tunable for the size from which blocks are mapped on
/// their own (a fixed value also stops the threshold from rising).
const MMAP_THRESHOLD_ENV: &str = "MALLOC_MMAP_THRESHOLD_";

/// Flags of `chronos up` that override the configuration.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub database_url: Option<String>,
    pub listen: Option<String>,
    pub hashers: Option<u16>,
    pub ingests: Option<u16>,
}

struct Proc {
    name: String,
    args: Vec<String>,
    child: Option<Child>,
    started: Instant,
    backoff: Duration,
    restart_at: Option<Instant>,
    restarts: u32,
    /// Gets the ingest listening socket.
    listens: bool,
}

/// The writer lease: the connection holding the log's advisory lock for
/// this instance's life, and the epoch its services commit under.
struct Lease {
    client: tokio_postgres::Client,
    epoch: u64,
    holder: String,
}

async fn lease_connection(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    // Bounded: the supervisor's loop waits on this, and must go on tending
    // its children (and hearing Ctrl-C) when the server is unreachable.
    let connect = chronos_tls::pg::connect(url);
    let (client, conn) = tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within 5 s"))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| format!("cannot connect to PostgreSQL at {}", crate::database::redact(url)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!(error = %e, "the writer lease's connection closed");
        }
    });
    Ok(client)
}

impl Lease {
    /// Takes the log's writer lease, or says who holds it.
    async fn take(url: &str, data_dir: &Path) -> anyhow::Result<Lease> {
        let client = lease_connection(url).await?;
        // A newcomer waits for commits under the old epoch, but not for ever.
        client.batch_execute("SET lock_timeout = '30s'").await?;
        let holder = chronos_vault::lease::describe_holder(data_dir);
        let epoch = chronos_vault::lease::acquire(&client, &holder).await?;
        tracing::info!(epoch, "writer lease taken: this instance is the log's only writer");
        Ok(Lease { client, epoch, holder })
    }

    /// Checks, on the lock's connection, that the epoch is still ours.
    /// `Ok(false)`: the connection is gone or does not answer (the caller
    /// renews it).
    async fn check(&self) -> anyhow::Result<bool> {
        let check = chronos_vault::lease::still_ours(&self.client, self.epoch);
        match tokio::time::timeout(Duration::from_secs(5), check).await {
            Ok(Ok(())) => Ok(true),
            Ok(Err(e @ chronos_vault::lease::LeaseError::Lost { .. })) => Err(e.into()),
            Ok(Err(_)) | Err(_) => Ok(false),
        }
    }

    /// After its connection closed (PostgreSQL restarted, or the backend
    /// was killed): takes the lock again under the same epoch. `Ok(false)`
    /// while PostgreSQL cannot be reached; an error if another instance
    /// took the log meanwhile (its services are fenced out already).
    async fn renew(&mut self, url: &str) -> anyhow::Result<bool> {
        let Ok(client) = lease_connection(url).await else { return Ok(false) };
        match chronos_vault::lease::reacquire(&client, self.epoch).await {
            Ok(true) => {
                tracing::info!(epoch = self.epoch, "writer lease taken again");
                self.client = client;
                Ok(true)
            }
            Ok(false) => {
                tracing::warn!(epoch = self.epoch, "the writer lock is still held (our old session?); retrying");
                Ok(false)
            }
            Err(chronos_vault::lease::LeaseError::Database(e)) => {
                tracing::warn!(error = %e, "cannot renew the writer lease yet");
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }
}

struct Supervisor {
    exe: PathBuf,
    data_dir: PathBuf,
    env: Vec<(String, String)>,
    run_dir: PathBuf,
    /// The ingest socket, bound once for every ingest process (closed once
    /// they stopped, so that new clients are refused, not left waiting).
    listener: Option<std::net::TcpListener>,
    /// Set when a child cannot start for a reason a restart cannot fix.
    fatal: Option<String>,
}

impl Supervisor {
    fn spawn(&self, p: &mut Proc) -> anyhow::Result<()> {
        // A refusal recorded by an earlier run no longer stands.
        let _ = std::fs::remove_file(self.run_dir.join(format!("{}.refused", p.name)));
        let mut c = Command::new(&self.exe);
        c.args(&p.args).arg("--data-dir").arg(&self.data_dir).stdin(Stdio::null()).env("CHRONOS_SUPERVISED", "1");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        // Its own process group: a terminal's Ctrl-C reaches the supervisor
        // alone, which then stops everything in order.
        c.process_group(0);
        if p.listens && std::env::var_os(MMAP_THRESHOLD_ENV).is_none() {
            // Ingest's bodies (up to 16 MiB each) get their own mappings,
            // returned to the system when freed. With glibc's default the
            // threshold rises to the largest block freed, so the next bodies
            // come from per-thread arenas that keep their memory: measured
            // at 432-445 MiB private against a 256 MiB body budget, and
            // 254 MiB with this setting (BENCHMARKS.md).
            c.env(MMAP_THRESHOLD_ENV, "1048576");
        }
        let child = if let (true, Some(listener)) = (p.listens, &self.listener) {
            // The socket crosses exec for this child only.
            use std::os::fd::AsRawFd as _;
            c.env(crate::services::LISTEN_FD_ENV, listener.as_raw_fd().to_string());
            set_cloexec(listener, false)?;
            let child = c.spawn();
            set_cloexec(listener, true)?;
            child
        } else {
            c.spawn()
        };
        let child = child.with_context(|| format!("starting {}", p.name))?;
        // Written aside and renamed, so a reader never sees a half-written file.
        let pid_file = self.run_dir.join(format!("{}.pid", p.name));
        let tmp = pid_file.with_extension("pid.tmp");
        std::fs::write(&tmp, format!("{}\n", child.id()))?;
        std::fs::rename(&tmp, &pid_file)?;
        tracing::info!(process = p.name, pid = child.id(), "started");
        p.child = Some(child);
        p.started = Instant::now();
        p.restart_at = None;
        Ok(())
    }

    /// Restarts dead children whose backoff elapsed.
    fn tend(&mut self, procs: &mut [Proc]) -> anyhow::Result<()> {
        for p in procs.iter_mut() {
            if let Some(child) = p.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                p.child = None;
                if status.code() == Some(i32::from(crate::services::EXIT_SETUP)) {
                    // It cannot start (configuration, environment): a
                    // restart would only fail again.
                    let reason = std::fs::read_to_string(self.run_dir.join(format!("{}.refused", p.name)))
                        .unwrap_or_else(|_| "see its error above".into());
                    self.fatal = Some(format!("{} cannot start: {}", p.name, reason.trim()));
                    p.restart_at = None;
                    continue;
                }
                if status.code() == Some(i32::from(crate::services::EXIT_REFUSED)) {
                    // Fail closed: a restart cannot fix what it found. Ingest
                    // answers 503 with the reason until an operator acts.
                    let reason =
                        std::fs::read_to_string(self.run_dir.join(format!("{}.refused", p.name))).unwrap_or_default();
                    tracing::error!(
                        process = p.name,
                        reason = reason.trim(),
                        "refuses to go on; not restarting it (fix the cause, then restart chronos up)"
                    );
                    p.restart_at = None;
                    continue;
                }
                if p.started.elapsed() > Duration::from_secs(30) {
                    p.backoff = Duration::from_millis(100);
                }
                tracing::warn!(process = p.name, %status, restart_in = ?p.backoff, "exited; restarting");
                p.restart_at = Some(Instant::now() + p.backoff);
                p.backoff = (p.backoff * 2).min(Duration::from_secs(5));
                p.restarts += 1;
            }
            if p.child.is_none() && p.restart_at.is_some_and(|t| Instant::now() >= t) {
                self.spawn(p)?;
            }
        }
        Ok(())
    }
}

fn proc(name: String, args: Vec<String>) -> Proc {
    Proc {
        listens: name.starts_with("ingest-"),
        name,
        args,
        child: None,
        started: Instant::now(),
        backoff: Duration::from_millis(100),
        restart_at: None,
        restarts: 0,
    }
}

fn set_cloexec(l: &std::net::TcpListener, on: bool) -> anyhow::Result<()> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    let flags = if on { FdFlag::FD_CLOEXEC } else { FdFlag::empty() };
    fcntl(l, FcntlArg::F_SETFD(flags)).context("setting close-on-exec on the ingest socket")?;
    Ok(())
}

/// SIGINT and SIGTERM, counted: the first stops everything in order, the
/// second says so and how to force it, the third forces it.
#[derive(Clone)]
struct Signals(Arc<AtomicU32>);

impl Signals {
    fn watch() -> anyhow::Result<Signals> {
        let count = Arc::new(AtomicU32::new(0));
        let c = count.clone();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (mut term, mut int) = rt.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            anyhow::Ok((signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?))
        })?;
        std::thread::Builder::new().name("signals".into()).spawn(move || {
            rt.block_on(async move {
                loop {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                    match c.fetch_add(1, Ordering::SeqCst) + 1 {
                        1 => eprintln!("chronos: stopping in order (bridge, ingest, hashers, orchestrator with the final checkpoint, vault writer, time service, PostgreSQL)"),
                        2 => eprintln!(
                            "chronos: already stopping in order; press Ctrl-C once more (or send SIGTERM again) to force an immediate stop: \
                             nothing acknowledged is lost, the next start resumes"
                        ),
                        _ => eprintln!("chronos: forcing the stop"),
                    }
                }
            });
        })?;
        Ok(Signals(count))
    }

    fn stop(&self) -> bool {
        self.0.load(Ordering::SeqCst) >= 1
    }

    fn force(&self) -> bool {
        self.0.load(Ordering::SeqCst) >= 3
    }
}

/// Stops children with SIGTERM, waiting up to `grace` (or until a third
/// signal forces the stop), then SIGKILL.
fn stop_all(procs: &mut [Proc], grace: Duration, signals: &Signals) {
    for p in procs.iter_mut() {
        if let Some(c) = &p.child {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + grace;
    for p in procs.iter_mut() {
        let Some(mut c) = p.child.take() else { continue };
        loop {
            match c.try_wait() {
                Ok(Some(status)) => {
                    tracing::info!(process = p.name, %status, "stopped");
                    break;
                }
                Ok(None) if Instant::now() < deadline && !signals.force() => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    tracing::warn!(process = p.name, "did not stop in time; killing it");
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
            }
        }
    }
}

/// How long `up` waits for a PostgreSQL server that is not answering yet
/// (a container starting beside it, a server restarting).
const DATABASE_WAIT: Duration = Duration::from_secs(120);

/// Connects to the log's database, waiting up to [`DATABASE_WAIT`] while
/// the server cannot be reached, does not answer within 5 s, or answers
/// that it is starting up (every 5 s it says so). Any other answer (a
/// refused password, a database that does not exist) is final and
/// returned at once, and so is Ctrl-C or SIGTERM during the wait.
async fn connect_waiting(
    url: &str,
    signals: &Signals,
) -> anyhow::Result<(tokio_postgres::Client, chronos_tls::pg::Connection)> {
    let started = Instant::now();
    let mut said = None::<Instant>;
    let fail =
        |why: anyhow::Error| why.context(format!("cannot connect to PostgreSQL at {}", crate::database::redact(url)));
    loop {
        let e = match tokio::time::timeout(Duration::from_secs(5), chronos_tls::pg::connect(url)).await {
            Ok(Ok(c)) => return Ok(c),
            Ok(Err(e)) => {
                let starting = e.code() == Some(&tokio_postgres::error::SqlState::CANNOT_CONNECT_NOW);
                if e.as_db_error().is_some() && !starting {
                    return Err(fail(e.into()));
                }
                anyhow::Error::new(e)
            }
            Err(_) => anyhow::anyhow!("no answer within 5 s"),
        };
        if started.elapsed() >= DATABASE_WAIT {
            return Err(fail(e.context(format!("still, after {} s", DATABASE_WAIT.as_secs()))));
        }
        if signals.stop() {
            return Err(fail(e.context("stopped while waiting")));
        }
        if said.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
            eprintln!(
                "chronos: waiting for PostgreSQL at {} ({e:#}; {:.0} s of {} s)",
                crate::database::redact(url),
                started.elapsed().as_secs_f64(),
                DATABASE_WAIT.as_secs()
            );
            said = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn migrate(url: &str, signals: &Signals) -> anyhow::Result<()> {
    let (mut client, conn) = connect_waiting(url, signals).await?;
    let task = tokio::spawn(conn);
    let report = chronos_vault::schema::migrate(&mut client).await?;
    tracing::info!(?report, "schema up to date");
    drop(client);
    let _ = task.await;
    Ok(())
}

pub fn up(data_dir: &Path, o: Overrides) -> anyhow::Result<()> {
    let (log, mut cfg) = crate::config::Config::load_all(data_dir)?;
    if let Some(u) = o.database_url {
        cfg.database.url = u;
    }
    if let Some(l) = o.listen {
        cfg.ingest.listen = l;
    }
    if let Some(h) = o.hashers {
        cfg.pipeline.hashers = h;
    }
    if let Some(i) = o.ingests {
        cfg.ingest.processes = i;
    }
    // Flags are checked like the file, and the children see the same values.
    let mut plan = Plan::validate(data_dir, log, cfg)?;
    crate::rings::fit_hashers(&mut plan)?;
    // A fault plan this binary cannot honour is refused here, once, rather
    // than by every service it starts.
    chronos_faults::Faults::from_env().map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    // One `up` per data directory, for its whole life.
    let mut owner = match crate::lock::try_lock(data_dir, "chronos up, starting")? {
        Ok(owner) => owner,
        Err(holder) => bail!(
            "{holder} already owns the data directory {}: one `chronos up` per data directory",
            data_dir.display()
        ),
    };
    // What a restart could never fix is refused now, before anything runs.
    plan.log
        .hasher(std::env::var("CHRONOS_HMAC_KEY").ok().as_deref())
        .with_context(|| format!("log.hash = {}", plan.log.hash))?;
    // Rings an earlier run left holding records that this topology would
    // not read (see `crate::rings`); the empty ones are removed here.
    let leftovers = crate::rings::leftovers(&plan)?;
    crate::rings::check_shared_memory(&plan)?;
    let listen: std::net::SocketAddr = plan.cfg.ingest.listen.parse()?;
    let listener = chronos_ingest::server::bind(listen)
        .with_context(|| format!("ingest.listen: another program or another Chronos log listens on {listen}"))?;
    let bound = listener.local_addr()?;
    owner.describe(&format!("chronos up, ingest at {bound}"))?;
    let signals = Signals::watch()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let run_dir = plan.run_dir();
    std::fs::create_dir_all(&run_dir)?;
    // Announcements of an earlier run must not pass for this one's.
    for stale in (0..plan.topology.ingests)
        .flat_map(|i| [run_dir.join(format!("ingest-{i}.addr")), run_dir.join(format!("ingest-{i}.ready"))])
        .chain([
            run_dir.join("orchestrator.ready"),
            run_dir.join("bridge.http"),
            run_dir.join("bridge.grpc"),
            run_dir.join("bridge.ntp"),
            run_dir.join("bridge.roughtime"),
        ])
    {
        let _ = std::fs::remove_file(stale);
    }

    let mut postgres: Option<(Embedded, Child)> = None;
    let url = if plan.cfg.database.url.is_empty() {
        let e = Embedded::prepare(data_dir, plan.cfg.database.embedded_port)?;
        let child = e.start()?;
        rt.block_on(e.ready(Duration::from_secs(60)))?;
        let url = e.url();
        tracing::info!(port = plan.cfg.database.embedded_port, "embedded PostgreSQL running");
        postgres = Some((e, child));
        url
    } else {
        plan.cfg.database.url.clone()
    };
    rt.block_on(migrate(&url, &signals))?;
    let mut lease = rt.block_on(Lease::take(&url, data_dir))?;
    let hashers = plan.topology.hashers;
    let env = vec![
        (crate::services::EPOCH_ENV.to_owned(), lease.epoch.to_string()),
        ("CHRONOS_DATABASE_URL".to_owned(), url.clone()),
        ("CHRONOS_INGEST_LISTEN".to_owned(), bound.to_string()),
        ("CHRONOS_INGEST_PROCESSES".to_owned(), plan.topology.ingests.to_string()),
        ("CHRONOS_PIPELINE_HASHERS".to_owned(), hashers.to_string()),
    ];
    let mut sup = Supervisor {
        exe: std::env::current_exe()?,
        data_dir: data_dir.to_path_buf(),
        env,
        run_dir: run_dir.clone(),
        listener: Some(listener),
        fatal: None,
    };
    if let crate::rings::Leftovers::Drain { topology, rings } = leftovers {
        drain(&mut sup, &plan, &topology, &rings, &signals, &mut postgres)?;
    }
    crate::rings::write_topology(&run_dir, &plan.topology)?;
    let (mut vault, mut orch, mut hash) = committers(hashers);
    // The time service, when [time] lists sources: first, so that its
    // first round can agree while the others start.
    let mut time: Vec<Proc> =
        if plan.time.sources.is_empty() { Vec::new() } else { vec![proc("time".into(), vec!["time-service".into()])] };
    let mut ingest: Vec<Proc> = (0..plan.topology.ingests)
        .map(|i| proc(format!("ingest-{i}"), vec!["ingest".into(), "--slot".into(), i.to_string()]))
        .collect();
    // The bridge reads PostgreSQL on its own and the clock page: nothing
    // waits for it, and it stops first.
    let mut bridge: Vec<Proc> =
        if plan.cfg.bridge.enabled() { vec![proc("bridge".into(), vec!["bridge".into()])] } else { Vec::new() };
    for group in [&mut time, &mut vault, &mut orch, &mut hash, &mut ingest, &mut bridge] {
        for p in group.iter_mut() {
            sup.spawn(p)?;
        }
    }
    let mut announced = false;
    let mut bridge_announced = false;
    // The refusing mode last reported (a held log starts held: say so).
    let mut mode_said = String::new();
    let mut pg_backoff = Duration::from_millis(100);
    let mut pg_started = Instant::now();
    let mut lease_retry = Instant::now();
    let mut lease_checked = Instant::now();
    let mut renew = false;
    let mut lost: Option<anyhow::Error> = None;
    while !signals.stop() {
        for group in [&mut time, &mut vault, &mut orch, &mut hash, &mut ingest, &mut bridge] {
            sup.tend(group)?;
        }
        if let Some(reason) = &sup.fatal {
            tracing::error!(reason, "stopping: a service cannot start");
            lost = Some(anyhow::anyhow!("{reason}"));
            break;
        }
        // Every few seconds, and at once when its connection closed: is
        // the log still ours? (A connection cut silently is noticed here.)
        if lease_checked.elapsed() >= Duration::from_secs(3) && !renew && !lease.client.is_closed() {
            lease_checked = Instant::now();
            match rt.block_on(lease.check()) {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!("the writer lease's connection does not answer; renewing it");
                    renew = true;
                }
                Err(e) => {
                    tracing::error!(error = %e, holder = lease.holder, "stopping: another instance writes this log now");
                    lost = Some(e);
                    break;
                }
            }
        }
        if (renew || lease.client.is_closed()) && lease_retry <= Instant::now() {
            match rt.block_on(lease.renew(&url)) {
                Ok(true) => renew = false,
                Ok(false) => lease_retry = Instant::now() + Duration::from_millis(500),
                Err(e) => {
                    tracing::error!(error = %e, holder = lease.holder, "stopping: another instance writes this log now");
                    lost = Some(e);
                    break;
                }
            }
        }
        if let Some((e, child)) = postgres.as_mut()
            && let Some(status) = child.try_wait()?
        {
            // Like the services' backoff: reset after a healthy period.
            if pg_started.elapsed() > Duration::from_secs(30) {
                pg_backoff = Duration::from_millis(100);
            }
            tracing::warn!(%status, restart_in = ?pg_backoff, "embedded PostgreSQL exited; restarting it");
            std::thread::sleep(pg_backoff);
            pg_backoff = (pg_backoff * 2).min(Duration::from_secs(5));
            *child = e.start()?;
            pg_started = Instant::now();
        }
        if !announced && serving(&run_dir, plan.topology.ingests) {
            announced = true;
            banner(&bound.to_string(), &plan, started);
        }
        if announced && !bridge_announced {
            bridge_announced = bridge_banner(&plan);
        }
        if let Some(why) = refusing_mode(&plan.mode_file())
            && why != mode_said
        {
            eprintln!("chronos: not accepting writes: {why} (see `chronos control status`)");
            mode_said = why;
        }
        std::thread::sleep(Duration::from_millis(50));
        rt.block_on(tokio::task::yield_now());
    }
    tracing::info!(
        "stopping: bridge, ingest, hashers, orchestrator (final checkpoint), vault writer, time service, PostgreSQL"
    );
    let ack_grace = Duration::from_millis(plan.cfg.ingest.ack_timeout_ms) + Duration::from_secs(5);
    stop_all(&mut bridge, Duration::from_secs(10), &signals);
    stop_all(&mut ingest, ack_grace, &signals);
    sup.listener = None;
    stop_all(&mut hash, Duration::from_secs(30), &signals);
    stop_all(&mut orch, Duration::from_secs(45), &signals);
    stop_all(&mut vault, Duration::from_secs(45), &signals);
    // Last: the final checkpoint was stamped with its time.
    stop_all(&mut time, Duration::from_secs(10), &signals);
    if let Some((_, mut child)) = postgres {
        // Fast shutdown; immediate (crash recovery at the next start) if forced.
        let sig = if signals.force() { Signal::SIGQUIT } else { Signal::SIGINT };
        let _ = kill(Pid::from_raw(child.id() as i32), sig);
        let _ = child.wait();
        tracing::info!("embedded PostgreSQL stopped");
    }
    crate::rings::remove_drained(&plan);
    match lost {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Why the log's mode, as the orchestrator published it, refuses writes.
fn refusing_mode(file: &Path) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let mut lines = text.lines();
    let (mode, writes, why) = (lines.next()?, lines.next()?, lines.next().unwrap_or_default());
    // Degraded and isolated come and go with their causes, which are
    // logged by the services; a person's hold or a recovery is announced.
    (writes == "refuses" && matches!(mode, "hold" | "recovery")).then(|| why.to_owned())
}

/// Whether every ingest process (alive) announced that the pipeline is
/// ready behind it: requests are committed from now on.
fn serving(run_dir: &Path, ingests: u16) -> bool {
    let alive = |file: String| {
        std::fs::read_to_string(run_dir.join(file))
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
    };
    (0..ingests).all(|i| alive(format!("ingest-{i}.ready")))
}

/// The services behind ingest: vault writer, orchestrator, hashers.
fn committers(hashers: u16) -> (Vec<Proc>, Vec<Proc>, Vec<Proc>) {
    let vault = vec![proc("vault-writer".into(), vec!["vault-writer".into()])];
    let orch = vec![proc("orchestrator".into(), vec!["orchestrator".into()])];
    let hash = (0..hashers)
        .map(|h| proc(format!("hasher-{h}"), vec!["hasher".into(), "--index".into(), h.to_string()]))
        .collect();
    (vault, orch, hash)
}

/// Commits what rings of an earlier run hold before this run changes the
/// topology: runs that run's vault writer, orchestrator and hashers (no
/// ingest: nothing new comes in) until its rings are empty, stops them in
/// order, then removes the rings this run does not reuse. Records are
/// committed once: the idempotency keys they carry answer a client that
/// sends the same body again afterwards.
fn drain(
    sup: &mut Supervisor,
    plan: &Plan,
    earlier: &chronos_wire::Topology,
    stranded: &[String],
    signals: &Signals,
    postgres: &mut Option<(Embedded, Child)>,
) -> anyhow::Result<()> {
    tracing::info!(
        rings = stranded.join(", "),
        hashers = earlier.hashers,
        ingest_processes = earlier.ingests,
        "rings of an earlier run hold records this topology would not read: committing them first, \
         with the topology that wrote them"
    );
    let configured = sup.env.clone();
    sup.env.extend(crate::rings::topology_env(earlier));
    let (mut vault, mut orch, mut hash) = committers(earlier.hashers);
    let drained = (|| {
        for group in [&mut vault, &mut orch, &mut hash] {
            for p in group.iter_mut() {
                sup.spawn(p)?;
            }
        }
        let mut told = Instant::now();
        loop {
            if signals.stop() {
                bail!("stopped before the rings of the earlier run were drained; they are kept for the next start");
            }
            for group in [&mut vault, &mut orch, &mut hash] {
                sup.tend(group)?;
                if let Some(p) = group.iter().find(|p| p.child.is_none() && p.restart_at.is_none()) {
                    let why = std::fs::read_to_string(sup.run_dir.join(format!("{}.refused", p.name)));
                    bail!(
                        "{} refused to run while draining the earlier run's rings: {}",
                        p.name,
                        why.unwrap_or_default().trim()
                    );
                }
            }
            if let Some(reason) = sup.fatal.take() {
                bail!("{reason}");
            }
            if let Some((_, child)) = postgres.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("the embedded PostgreSQL exited ({status}) while the earlier run's rings were drained");
            }
            let holding = crate::rings::pending(plan, earlier)?;
            if holding.is_empty() {
                return Ok(());
            }
            if told.elapsed() >= Duration::from_secs(5) {
                told = Instant::now();
                tracing::info!(rings = holding.join(", "), "still committing what these rings hold");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })();
    stop_all(&mut hash, Duration::from_secs(30), signals);
    stop_all(&mut orch, Duration::from_secs(45), signals);
    stop_all(&mut vault, Duration::from_secs(45), signals);
    sup.env = configured;
    drained?;
    crate::rings::remove_unused(plan, earlier)?;
    tracing::info!("the earlier run's rings are committed and removed; starting this topology");
    Ok(())
}

#[allow(clippy::print_stdout)] // the command's output
fn banner(addr: &str, plan: &Plan, started: Instant) {
    let data_dir = &plan.data_dir;
    let http = plan.cfg.tls.scheme();
    println!("Chronos is up ({:.1} s). Send logs to {http}://{addr}/ingest", started.elapsed().as_secs_f64());
    println!(
        "  curl -X POST {http}://{addr}/ingest -H 'content-type: application/x-ndjson' --data-binary @events.ndjson"
    );
    println!("  Vector: a sink of type \"http\" with uri = \"{http}://{addr}/ingest\" and encoding.codec = \"json\"");
    let metrics = if plan.cfg.ingest.metrics_on_ingest_port {
        format!("{http}://{addr}/metrics")
    } else {
        "see DATA_DIR/run/ingest-<i>.metrics".to_owned()
    };
    println!("  health: {http}://{addr}/healthz  ready: {http}://{addr}/readyz  metrics: {metrics}");
    let (d, vkey) = (data_dir.display(), data_dir.join("log.vkey"));
    println!("Verify: chronos verify --data-dir {d} --key {}", vkey.display());
    println!("Prove one event: chronos prove --data-dir {d} --leaf N -o event.tlog-proof (check it with verify-proof)");
    println!("Stop: Ctrl-C (everything accepted is committed and covered by a final signed checkpoint).");
}

/// Once the bridge has bound its surfaces, says where they are (from the
/// addresses it wrote under DATA_DIR/run). `false` until then.
#[allow(clippy::print_stdout)] // the command's output
fn bridge_banner(plan: &Plan) -> bool {
    let b = &plan.cfg.bridge;
    if !b.enabled() {
        return true;
    }
    let run = plan.run_dir();
    let mut parts = Vec::new();
    for (configured, file, shown) in [
        (&b.listen, "bridge.http", "HTTP"),
        (&b.grpc_listen, "bridge.grpc", "gRPC"),
        (&b.ntp_listen, "bridge.ntp", "NTP"),
        (&b.roughtime_listen, "bridge.roughtime", "Roughtime"),
    ] {
        if configured.is_empty() {
            continue;
        }
        let Ok(addr) = std::fs::read_to_string(run.join(file)) else { return false };
        parts.push((shown, addr.trim().to_owned()));
    }
    let http = plan.cfg.tls.scheme();
    for (shown, addr) in parts {
        match shown {
            "HTTP" => println!(
                "Read the log and its time: {http}://{addr}/checkpoint  {http}://{addr}/v1/time  (tiles, /v1 proofs, /v1/stream)"
            ),
            "Roughtime" => println!(
                "  Roughtime {addr} (long-term key: {})",
                plan.data_dir.join(format!("{}.pub", b.roughtime_key)).display()
            ),
            other => println!("  {other} {addr}"),
        }
    }
    true
}

#[cfg(test)]
mod tests {}
