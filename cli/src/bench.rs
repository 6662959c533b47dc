//! `chronos bench`: runs `chronos up` as a child on a log of its own (a
//! temporary data directory unless `--data-dir`), drives it with
//! `chronos-bench`, prints the report and optionally writes it to a file.
//!
//! The launcher here is the only part that knows how Chronos is started:
//! it spawns `chronos up` with the topology asked for, waits until every
//! ingest process is ready, and names the processes to sample (each
//! service from `run/<name>.pid`, the embedded PostgreSQL from its
//! `postmaster.pid` with its backends).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chronos_bench::procs::Members;
use chronos_bench::{BenchError, Launcher, Stack};

use crate::config::Config;
use crate::embedded::Embedded;

/// The flags of `chronos bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data directory of the benchmark's log (created if empty). Default: a temporary one.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Use this PostgreSQL instead of an embedded cluster (a log is written there).
    #[arg(long)]
    pub database_url: Option<String>,
    /// Hash algorithm of a new benchmark log.
    #[arg(long, value_enum, default_value_t = crate::HashArg::default())]
    pub hash: crate::HashArg,
    /// Hasher processes; a list measures each (the first is the baseline). Default: cores, then 1.
    #[arg(long, value_delimiter = ',')]
    pub hashers: Vec<u16>,
    /// Ingest processes; a list measures each.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub ingests: Vec<u16>,
    /// Events per request body; a list measures each.
    #[arg(long, value_delimiter = ',', default_value = "1000,100,5000")]
    pub batch: Vec<usize>,
    /// Concurrent connections; a list measures each. Default: found by doubling from 8 while
    /// throughput grows (as Vector's adaptive concurrency would).
    #[arg(long, value_delimiter = ',')]
    pub connections: Vec<usize>,
    /// Most connections the search for the maximum load tries.
    #[arg(long, default_value_t = 256)]
    pub max_connections: usize,
    /// Only the first value of each list (no scaling sweep).
    #[arg(long)]
    pub no_sweep: bool,
    /// Send JSON arrays instead of NDJSON.
    #[arg(long)]
    pub json_array: bool,
    /// Gzip every body (level 6, as Vector does), on the load generator's CPU.
    #[arg(long)]
    pub gzip: bool,
    /// Seconds measured per phase.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Seconds of warm-up before each phase's measurement.
    #[arg(long, default_value_t = 3)]
    pub warmup: u64,
    /// Connections of the overload phase (open loop at twice the max rate).
    #[arg(long, default_value_t = 1024)]
    pub overload_connections: usize,
    /// Repetitions of each limit measurement (the median is kept).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Write the Markdown report to this file too.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Where batches get their time: `host` (the kernel clock), `quorum` (three NTP servers on
    /// loopback ports answering with this host's clock, polled every second by the time
    /// service). A list measures the first fully, then the max-load phase of each other at the
    /// same load, and compares them.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "host")]
    pub time: Vec<TimeArg>,
}

/// `--time` of `bench`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TimeArg {
    Host,
    Quorum,
}

impl TimeArg {
    fn name(self) -> &'static str {
        match self {
            TimeArg::Host => "host clock",
            TimeArg::Quorum => "quorum time (3 loopback NTP sources)",
        }
    }
}

/// Writes `[time]` for `mode` into the log's configuration.
pub(crate) fn configure_time(
    data_dir: &Path,
    mode: TimeArg,
    sources: &[crate::loopback_ntp::LoopbackNtp],
) -> anyhow::Result<()> {
    let path = data_dir.join(crate::config::CONFIG_FILE);
    let mut table: toml::Table = toml::from_str(&std::fs::read_to_string(&path)?)?;
    let mut time = toml::Table::new();
    if mode == TimeArg::Quorum {
        time.insert("min_agreeing".into(), toml::Value::Integer(3));
        time.insert("poll_ms".into(), toml::Value::Integer(1_000));
        let list = sources
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut t = toml::Table::new();
                t.insert("name".into(), toml::Value::String(format!("loopback-{i}")));
                t.insert("kind".into(), toml::Value::String("ntp".into()));
                t.insert("address".into(), toml::Value::String(s.addr.clone()));
                toml::Value::Table(t)
            })
            .collect();
        time.insert("source".into(), toml::Value::Array(list));
    }
    table.insert("time".into(), toml::Value::Table(time));
    std::fs::write(&path, toml::to_string(&table)?)?;
    Ok(())
}

impl Args {
    /// Validated options; `hasher` is the log's.
    fn options(&self, hasher: chronos_ledger::TreeHasher) -> anyhow::Result<chronos_bench::Options> {
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get()) as u16;
        let mut hashers = if self.hashers.is_empty() { vec![cores, 1] } else { self.hashers.clone() };
        hashers.dedup();
        let search = self.connections.is_empty();
        let mut connections = if search { vec![8] } else { self.connections.clone() };
        let (mut ingests, mut batch) = (self.ingests.clone(), self.batch.clone());
        if self.no_sweep {
            hashers.truncate(1);
            ingests.truncate(1);
            batch.truncate(1);
            connections.truncate(1);
        }
        anyhow::ensure!(hashers.iter().all(|&h| (1..=64).contains(&h)), "--hashers: 1 to 64");
        anyhow::ensure!(ingests.iter().all(|&i| (1..=64).contains(&i)), "--ingests: 1 to 64");
        anyhow::ensure!(batch.iter().all(|&b| b >= 1), "--batch: at least 1 event per body");
        anyhow::ensure!(connections.iter().all(|&c| c >= 1), "--connections: at least 1");
        anyhow::ensure!(self.overload_connections >= 1, "--overload-connections: at least 1");
        anyhow::ensure!(self.duration >= 1, "--duration: at least 1 second");
        Ok(chronos_bench::Options {
            hasher,
            hashers,
            ingests,
            batch,
            connections,
            search,
            search_max: self.max_connections.max(8),
            framing: if self.json_array {
                chronos_bench::events::Framing::JsonArray
            } else {
                chronos_bench::events::Framing::Ndjson
            },
            gzip: self.gzip,
            warmup: Duration::from_secs(self.warmup),
            duration: Duration::from_secs(self.duration),
            overload_connections: self.overload_connections,
            reps: self.reps,
            retry_initial: Duration::from_millis(100),
        })
    }
}

pub(crate) struct UpLauncher {
    pub exe: PathBuf,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub listen: SocketAddr,
    pub log: PathBuf,
    pub child: Option<Child>,
    /// More environment for `chronos up` (configuration overrides).
    pub env: Vec<(String, String)>,
}

pub(crate) fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub(crate) fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.lines().next()?.trim().parse().ok()
}

impl UpLauncher {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn launch_err(&self, what: impl std::fmt::Display) -> BenchError {
        BenchError::Launch(format!("{what}; last lines of {}:\n{}", self.log.display(), self.log_tail()))
    }
}

impl Launcher for UpLauncher {
    fn start(&mut self, hashers: u16, ingests: u16) -> Result<Stack, BenchError> {
        self.stop()?;
        let run_dir = self.data_dir.join("run");
        for slot in 0..64 {
            let _ = std::fs::remove_file(run_dir.join(format!("ingest-{slot}.pid")));
            let _ = std::fs::remove_file(run_dir.join(format!("hasher-{slot}.pid")));
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut c = Command::new(&self.exe);
        c.arg("up")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen", &self.listen.to_string()])
            .args(["--hashers", &hashers.to_string(), "--ingests", &ingests.to_string()])
            .env("CHRONOS_METRICS_LISTEN", "127.0.0.1:0")
            // The bridge runs as in production, on free ports.
            .env("CHRONOS_BRIDGE_LISTEN", "127.0.0.1:0")
            .env("CHRONOS_BRIDGE_NTP_LISTEN", "127.0.0.1:0")
            .env("CHRONOS_BRIDGE_ROUGHTIME_LISTEN", "127.0.0.1:0")
            .env("CHRONOS_BRIDGE_GRPC_LISTEN", "127.0.0.1:0")
            .env_remove("CHRONOS_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(url) = &self.database_url {
            c.args(["--database-url", url]);
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        let child = c.spawn()?;
        let up_pid = child.id() as i32;
        self.child = Some(child);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let ready = rt.block_on(chronos_bench::load::wait_ready(self.listen, Duration::from_secs(120), 20));
        if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            return Err(self.launch_err(format!("chronos up exited with {status}")));
        }
        ready.map_err(|e| self.launch_err(e))?;

        let mut processes = vec![("up (supervisor)".to_owned(), Members::Pid(up_pid))];
        let mut names: Vec<String> = vec!["vault-writer".into(), "orchestrator".into()];
        names.extend((0..hashers).map(|h| format!("hasher-{h}")));
        names.extend((0..ingests).map(|i| format!("ingest-{i}")));
        for name in names {
            let pid = read_pid(&run_dir.join(format!("{name}.pid")))
                .ok_or_else(|| self.launch_err(format!("no pid file for {name}")))?;
            processes.push((name, Members::Pid(pid)));
        }
        let (_, cfg) = Config::load_all(&self.data_dir).map_err(|e| BenchError::Launch(format!("{e:#}")))?;
        let database_url = match &self.database_url {
            Some(url) => url.clone(),
            None => {
                let pg = read_pid(&self.data_dir.join("pg").join("postmaster.pid"))
                    .ok_or_else(|| self.launch_err("the embedded PostgreSQL wrote no postmaster.pid"))?;
                processes.push(("postgres (all processes)".into(), Members::WithChildren(pg)));
                Embedded::existing(&self.data_dir, cfg.database.embedded_port)
                    .map_err(|e| BenchError::Launch(format!("{e:#}")))?
                    .url()
            }
        };
        let token = std::env::var("CHRONOS_INGEST_TOKEN").ok();
        Ok(Stack { addr: self.listen, token, database_url, processes })
    }

    fn stop(&mut self) -> Result<(), BenchError> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    return Err(self.launch_err(format!("chronos up stopped with {status}")));
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(self.launch_err("chronos up did not stop within 120 s; killed"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for UpLauncher {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A description of this machine for the report.
pub(crate) fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_owned()))
        .unwrap_or_default();
    let kernel = nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
    format!("{model}, {cores} cores, {mem_gib:.0} GiB, {os}, Linux {kernel}")
}

/// The options of a comparison run: the first run's baseline topology and
/// the connections it found, max-load phase only worth reading.
fn comparison_options(o: &chronos_bench::Options, first: &chronos_bench::Results) -> chronos_bench::Options {
    let mut o = o.clone();
    o.hashers = vec![first.max.hashers];
    o.ingests = vec![first.max.ingests];
    o.batch = vec![first.max.shape.batch];
    o.connections = vec![first.max.shape.connections];
    o.search = false;
    o
}

/// The report's section comparing where time came from.
fn time_comparison(runs: &[(TimeArg, chronos_bench::Results)]) -> String {
    let base = runs[0].1.max.run.events_per_sec().max(1e-9);
    let mut out = String::from(
        "\n## Trusted time: where batches get their time\n\n\
         The max-load phase of each, same topology and load, in this run:\n\n\
         | time | logs/s | vs first | p99 latency |\n|---|---|---|---|\n",
    );
    for (mode, r) in runs {
        let rate = r.max.run.events_per_sec();
        out.push_str(&format!(
            "| {} | {rate:.0} | {:.3} | {:.1} ms |\n",
            mode.name(),
            rate / base,
            r.max.run.latency(99.0).as_secs_f64() * 1e3
        ));
    }
    out
}

pub(crate) fn today() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    chronos_bench::events::rfc3339(secs * 1_000_000_000)[..10].to_owned()
}

pub fn bench(args: Args) -> anyhow::Result<()> {
    let (data_dir, temporary) = match &args.data_dir {
        Some(d) => (d.clone(), false),
        None => (std::env::temp_dir().join(format!("chronos-bench-{}", std::process::id())), true),
    };
    let result = run(&args, &data_dir);
    if temporary {
        let _ = std::fs::remove_dir_all(&data_dir);
        if result.is_ok() {
            let _ = std::fs::remove_file(data_dir.with_extension("up.log"));
        }
    }
    result
}

fn run(args: &Args, data_dir: &Path) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the chronos executable")?;
    if !data_dir.join(crate::config::CONFIG_FILE).exists() {
        let hmac_key = std::env::var("CHRONOS_HMAC_KEY").ok();
        crate::init::init(data_dir, "bench.invalid/chronos-bench", args.hash.into(), hmac_key.as_deref())?;
    }
    let settings = Config::load(data_dir)?;
    let options = args.options(settings.hasher(std::env::var("CHRONOS_HMAC_KEY").ok().as_deref())?)?;
    let mut launcher = UpLauncher {
        exe,
        data_dir: data_dir.to_owned(),
        database_url: args.database_url.clone(),
        listen: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
        log: data_dir.with_extension("up.log"),
        child: None,
        env: Vec::new(),
    };
    eprintln!("chronos bench: log in {}, chronos up writes to {}", data_dir.display(), launcher.log.display());
    let say = |s: &str| eprintln!("chronos bench: {s}");
    let mut modes = args.time.clone();
    modes.dedup();
    let sources = if modes.contains(&TimeArg::Quorum) {
        (0..3).map(|_| crate::loopback_ntp::LoopbackNtp::start()).collect::<Result<Vec<_>, _>>()?
    } else {
        Vec::new()
    };
    let mut compared = Vec::new();
    let mut md = String::new();
    for (i, &mode) in modes.iter().enumerate() {
        configure_time(data_dir, mode, &sources)?;
        say(&format!("time: {}", mode.name()));
        let opts = match compared.first() {
            None => options.clone(),
            // The others at the first one's maximum load, baseline only.
            Some((_, first)) => comparison_options(&options, first),
        };
        let results = chronos_bench::run(&mut launcher, &opts, &say)?;
        if i == 0 {
            let command =
                std::iter::once("chronos".to_owned()).chain(std::env::args().skip(1)).collect::<Vec<_>>().join(" ");
            let cx = chronos_bench::report::Context {
                command,
                machine: machine(),
                date: today(),
                hash: settings.hash.name().to_owned(),
            };
            md = chronos_bench::report::markdown(&results, &cx);
            md.push_str(&format!("\nBatches were stamped with the {}.\n", mode.name()));
        }
        compared.push((mode, results));
    }
    if compared.len() > 1 {
        md.push_str(&time_comparison(&compared));
    }
    #[allow(clippy::print_stdout)] // the command's output
    {
        print!("{md}");
    }
    if let Some(path) = &args.report {
        std::fs::write(path, &md).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
