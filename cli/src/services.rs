//! Running one service process (`chronos ingest|hasher|orchestrator|vault-writer`):
//! validated settings from the configuration, structured logs, `/metrics`,
//! and a stop flag raised by SIGTERM/SIGINT or by the death of the
//! supervisor that started us.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use chronos_wire::{RingNames, Topology, instance_id};
use prometheus_client::registry::Registry;

use crate::config::{Config, LogSettings};

/// The variable through which `chronos up` hands its services the writer
/// lease's epoch.
pub const EPOCH_ENV: &str = "CHRONOS_WRITER_EPOCH";

/// The variable through which `chronos up` hands its ingest processes the
/// listening socket it bound (a descriptor number).
pub const LISTEN_FD_ENV: &str = "CHRONOS_LISTEN_FD";

/// Exit status of a service that refused to go on (fail closed): `up`
/// does not restart it, as a restart cannot fix what it found.
pub const EXIT_REFUSED: u8 = 4;

/// Exit status of a service that cannot start for a reason a restart
/// cannot fix (its configuration or environment): `up` stops, naming it.
pub const EXIT_SETUP: u8 = 3;

/// A service could not start (see [`EXIT_SETUP`]).
#[derive(Debug, thiserror::Error)]
#[error("{service} cannot start: {reason}")]
pub struct SetupFailed {
    pub service: String,
    pub reason: String,
}

/// Passes `r` through; an error becomes a [`SetupFailed`], recorded in the
/// refusal file for `up` to report.
pub(crate) fn setup<T>(plan: &Plan, service: &str, r: anyhow::Result<T>) -> anyhow::Result<T> {
    r.map_err(|e| {
        let reason = format!("{e:#}");
        let file = plan.refusal_file(service);
        let _ = std::fs::create_dir_all(plan.run_dir()).and_then(|()| std::fs::write(&file, format!("{reason}\n")));
        SetupFailed { service: service.to_owned(), reason }.into()
    })
}

/// A service's refusal to go on (see [`EXIT_REFUSED`]).
#[derive(Debug, thiserror::Error)]
#[error("{service} refuses to go on: {reason}")]
pub struct Refusal {
    pub service: &'static str,
    pub reason: String,
}

/// Records a refusal for ingest and `up` to report, and returns it.
fn refusal(plan: &Plan, service: &'static str, reason: String) -> anyhow::Error {
    let file = plan.refusal_file(service);
    if let Err(e) = std::fs::create_dir_all(plan.run_dir()).and_then(|()| std::fs::write(&file, format!("{reason}\n")))
    {
        tracing::error!(file = %file.display(), error = %e, "cannot record the refusal");
    }
    Refusal { service, reason }.into()
}

/// Everything a service needs, validated once.
#[derive(Debug)]
pub struct Plan {
    pub data_dir: PathBuf,
    pub log: LogSettings,
    pub cfg: Config,
    pub topology: Topology,
    pub names: RingNames,
    pub time: chronos_time::Settings,
}

impl Plan {
    pub fn load(data_dir: &Path) -> anyhow::Result<Plan> {
        let (log, cfg) = Config::load_all(data_dir)?;
        Plan::validate(data_dir, log, cfg)
    }

    /// [`Plan::load`] for a service: a configuration it cannot load is a
    /// [`SetupFailed`] (a restart cannot fix it).
    pub fn load_for(data_dir: &Path, service: &str) -> anyhow::Result<Plan> {
        Plan::load(data_dir).map_err(|e| SetupFailed { service: service.to_owned(), reason: format!("{e:#}") }.into())
    }

    /// Validates a configuration (after any overrides) into a plan.
    pub fn validate(data_dir: &Path, log: LogSettings, cfg: Config) -> anyhow::Result<Plan> {
        let i = &cfg.ingest;
        ensure!((1..=64).contains(&i.processes), "ingest.processes: {} is not in 1..=64", i.processes);
        ensure!(cfg.pipeline.hashers <= 256, "pipeline.hashers: {} is not in 0..=256", cfg.pipeline.hashers);
        for (k, v, max) in [
            ("ingest.max_body_bytes", i.max_body_bytes, 1u64 << 30),
            ("ingest.max_decoded_bytes", i.max_decoded_bytes, 1 << 30),
            ("ingest.max_event_bytes", i.max_event_bytes, 1 << 30),
            ("ingest.max_events", i.max_events, 1 << 24),
            ("ingest.ack_timeout_ms", i.ack_timeout_ms, 3_600_000),
            ("ingest.max_connections", i.max_connections, 65_536),
            ("vault.flush_max_batches", cfg.vault.flush_max_batches, 1 << 20),
            ("vault.flush_max_bytes", cfg.vault.flush_max_bytes, 1 << 32),
            ("pipeline.checkpoint_interval_ms", cfg.pipeline.checkpoint_interval_ms, 3_600_000),
            ("pipeline.key_window_secs", cfg.pipeline.key_window_secs, 30 * 86_400),
            ("pipeline.key_window_max_keys", cfg.pipeline.key_window_max_keys, 1 << 26),
        ] {
            ensure!((1..=max).contains(&v), "{k}: {v} is not in 1..={max}");
        }
        ensure!(i.max_event_bytes <= i.max_decoded_bytes, "ingest.max_event_bytes exceeds ingest.max_decoded_bytes");
        ensure!(
            i.max_inflight_bytes >= i.max_body_bytes + i.max_decoded_bytes && i.max_inflight_bytes <= 1 << 40,
            "ingest.max_inflight_bytes: {} is not in max_body_bytes + max_decoded_bytes ({}) ..= 1 TiB",
            i.max_inflight_bytes,
            i.max_body_bytes + i.max_decoded_bytes
        );
        ensure!(!cfg.pipeline.checkpoint_file.trim().is_empty(), "pipeline.checkpoint_file: empty");
        i.listen.parse::<SocketAddr>().with_context(|| format!("ingest.listen: {:?} is not host:port", i.listen))?;
        cfg.metrics
            .listen
            .parse::<SocketAddr>()
            .with_context(|| format!("metrics.listen: {:?} is not host:port", cfg.metrics.listen))?;
        let hashers = match cfg.pipeline.hashers {
            0 => cores().min(256) as u16,
            n => n,
        };
        let topology =
            Topology { ingests: i.processes, hashers, max_decoded: i.max_decoded_bytes, max_events: i.max_events };
        let instance = instance_id(data_dir);
        let names = RingNames::new(&instance);
        let time = cfg.time.validate(instance)?;
        cfg.bridge.check()?;
        cfg.tls.check()?;
        Ok(Plan { data_dir: data_dir.to_path_buf(), log, cfg, topology, names, time })
    }

    /// The database URL; the supervisor resolves the embedded one and
    /// passes it down as `CHRONOS_DATABASE_URL`.
    pub fn database_url(&self) -> anyhow::Result<String> {
        if self.cfg.database.url.is_empty() {
            bail!(
                "database.url is empty: start the services with `chronos up`, which runs the embedded PostgreSQL, or set CHRONOS_DATABASE_URL"
            );
        }
        Ok(self.cfg.database.url.clone())
    }

    pub fn run_dir(&self) -> PathBuf {
        self.data_dir.join("run")
    }

    /// Where a service that refuses to go on writes why (read by ingest
    /// for its 503s, by `up` for its log; removed when `up` restarts it).
    pub fn refusal_file(&self, service: &str) -> PathBuf {
        self.run_dir().join(format!("{service}.refused"))
    }

    /// Where the orchestrator publishes the log's mode (read by ingest).
    pub fn mode_file(&self) -> PathBuf {
        self.run_dir().join("mode")
    }

    /// Present while the vault writer's circuit breaker is open.
    pub fn breaker_file(&self) -> PathBuf {
        self.run_dir().join("vault.breaker")
    }

    /// The writer lease's epoch that `chronos up` took for this instance.
    fn epoch(&self) -> anyhow::Result<u64> {
        let v = std::env::var(EPOCH_ENV).map_err(|_| {
            anyhow::anyhow!(
                "{EPOCH_ENV} is not set: start the services with `chronos up`, which holds the log's writer lease"
            )
        })?;
        v.parse().with_context(|| format!("{EPOCH_ENV}: {v:?} is not a number"))
    }

    fn faults(&self) -> anyhow::Result<chronos_faults::Faults> {
        chronos_faults::Faults::from_env().map_err(anyhow::Error::msg)
    }

    fn hasher(&self) -> anyhow::Result<chronos_ledger::TreeHasher> {
        self.log.hasher(std::env::var("CHRONOS_HMAC_KEY").ok().as_deref())
    }

    fn limits(&self) -> chronos_ingest::body::Limits {
        let i = &self.cfg.ingest;
        chronos_ingest::body::Limits {
            max_body: i.max_body_bytes as usize,
            max_decoded: i.max_decoded_bytes as usize,
            max_event: i.max_event_bytes as usize,
            max_events: i.max_events as usize,
        }
    }
}

/// Structured logs on stderr: `RUST_LOG` filters (default info),
/// `CHRONOS_LOG_FORMAT=json` for JSON lines.
pub fn init_tracing(process: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,tokio_postgres=warn".into());
    // Colours only on a terminal: escape codes in a file or a pipe are noise
    // (and break every grep).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let res = if std::env::var("CHRONOS_LOG_FORMAT").is_ok_and(|v| v == "json") {
        builder.json().try_init()
    } else {
        builder.with_target(false).try_init()
    };
    let _ = res;
    tracing::debug!(process, "logging started");
}

/// A flag set by SIGTERM or SIGINT, or when the parent (the supervisor)
/// dies, so no service outlives `chronos up`.
pub fn stop_flag(watch_parent: bool) -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let parent = nix::unistd::getppid();
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
                return;
            };
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tokio::select! {
                    _ = term.recv() => {
                        tracing::info!(signal = "SIGTERM", "stop requested");
                        break;
                    }
                    _ = int.recv() => {
                        tracing::info!(signal = "SIGINT", "stop requested");
                        break;
                    }
                    _ = tick.tick() => {
                        if watch_parent && nix::unistd::getppid() != parent {
                            tracing::warn!("the supervisor died; stopping");
                            break;
                        }
                    }
                }
            }
            s.store(true, Ordering::Relaxed);
        });
    })?;
    Ok(stop)
}

/// Serves `registry` on `/metrics` at `addr` in a background thread, and
/// records the bound address in `DATA_DIR/run/<name>.metrics`. A port
/// already in use is logged, not fatal: metrics never stop the ledger.
pub fn serve_metrics(plan: &Plan, name: &str, addr: SocketAddr, registry: Registry) {
    let registry = Arc::new(registry);
    let file = plan.run_dir().join(format!("{name}.metrics"));
    let name = name.to_owned();
    let spawned = std::thread::Builder::new().name("metrics".into()).spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async move {
            let listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "cannot serve /metrics");
                    return;
                }
            };
            if let Ok(a) = listener.local_addr() {
                let _ = std::fs::write(&file, format!("{a}\n"));
                tracing::info!(process = name, addr = %a, "metrics at /metrics");
            }
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let registry = registry.clone();
                    async move {
                        let mut out = String::new();
                        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            out,
                        )
                    }
                }),
            );
            let _ = axum::serve(listener, app).await;
        });
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the metrics thread");
    }
}

pub(crate) fn metrics_addr(plan: &Plan, offset: u16) -> SocketAddr {
    let mut a: SocketAddr = plan.cfg.metrics.listen.parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
    if a.port() != 0 {
        a.set_port(a.port().saturating_add(offset));
    }
    a
}

pub(crate) fn supervised() -> bool {
    std::env::var_os("CHRONOS_SUPERVISED").is_some()
}

/// CPU cores this process may use.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub fn hasher(plan: &Plan, index: u16) -> anyhow::Result<()> {
    let settings = setup(
        plan,
        &format!("hasher-{index}"),
        (|| {
            ensure!(index < plan.topology.hashers, "--index {index}: there are {} hashers", plan.topology.hashers);
            Ok(chronos_hasher::Settings {
                names: plan.names.clone(),
                topology: plan.topology,
                index,
                hasher: plan.hasher()?,
                threads: (cores() / usize::from(plan.topology.hashers)).max(1),
            })
        })(),
    )?;
    let metrics = chronos_hasher::Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    serve_metrics(plan, &format!("hasher-{index}"), metrics_addr(plan, 2 + index), registry);
    let stop = stop_flag(supervised())?;
    chronos_hasher::run(&settings, &stop, &metrics)?;
    Ok(())
}

pub fn orchestrator(plan: &Plan) -> anyhow::Result<()> {
    let settings = setup(plan, "orchestrator", orchestrator_settings(plan))?;
    std::fs::create_dir_all(plan.run_dir())?;
    let metrics = chronos_orchestrator::Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    serve_metrics(plan, "orchestrator", metrics_addr(plan, 0), registry);
    let stop = stop_flag(supervised())?;
    match chronos_orchestrator::run(&settings, &stop, &metrics) {
        Err(chronos_orchestrator::OrchestratorError::Refused(reason)) => Err(refusal(plan, "orchestrator", reason)),
        other => Ok(other?),
    }
}

fn orchestrator_settings(plan: &Plan) -> anyhow::Result<chronos_orchestrator::Settings> {
    let key_text = std::fs::read_to_string(&plan.log.verifier_key)
        .with_context(|| format!("reading {}", plan.log.verifier_key.display()))?;
    Ok(chronos_orchestrator::Settings {
        names: plan.names.clone(),
        topology: plan.topology,
        hasher: plan.hasher()?,
        origin: plan.log.origin.clone(),
        signer: Arc::new(plan.log.signer()?),
        verifier_key: key_text.trim_end().to_owned(),
        key_check: plan.log.key_check,
        database_url: plan.database_url()?,
        checkpoint_interval: Duration::from_millis(plan.cfg.pipeline.checkpoint_interval_ms),
        key_window: Duration::from_secs(plan.cfg.pipeline.key_window_secs),
        key_limit: plan.cfg.pipeline.key_window_max_keys as usize,
        ready_file: plan.run_dir().join("orchestrator.ready"),
        checkpoint_file: plan.data_dir.join(&plan.cfg.pipeline.checkpoint_file),
        epoch: plan.epoch()?,
        faults: plan.faults()?,
        clock: Arc::new(chronos_time::TimeReader::new(&plan.time)),
        control: chronos_orchestrator::plane::ControlSettings {
            socket: plan.data_dir.join(&plan.cfg.control.socket),
            genesis: plan.cfg.control.genesis(&plan.data_dir)?,
            mode_file: plan.mode_file(),
            breaker_file: plan.breaker_file(),
            accept_without_quorum: plan.time.policy == chronos_time::config::Policy::Accept,
        },
        claimed_time: plan.cfg.pipeline.claimed_time(),
    })
}

/// The time service (`chronos time-service`, started by `up` when
/// `[time]` lists sources).
pub fn time_service(plan: &Plan) -> anyhow::Result<()> {
    let url = setup(
        plan,
        "time",
        (|| {
            ensure!(!plan.time.sources.is_empty(), "[time] lists no source: there is nothing to poll");
            plan.database_url()
        })(),
    )?;
    let metrics = chronos_time::metrics::Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    serve_metrics(plan, "time", metrics_addr(plan, 2 + plan.topology.hashers), registry);
    let stop = stop_flag(supervised())?;
    chronos_time::service::run(&plan.time, &url, &stop, &metrics)?;
    Ok(())
}

pub fn vault_writer(plan: &Plan) -> anyhow::Result<()> {
    let settings = setup(plan, "vault-writer", vault_writer_settings(plan))?;
    let metrics = chronos_vault_writer::Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    serve_metrics(plan, "vault-writer", metrics_addr(plan, 1), registry);
    let stop = stop_flag(supervised())?;
    match chronos_vault_writer::run(&settings, &stop, &metrics) {
        Err(chronos_vault_writer::VaultWriterError::Refused(reason)) => Err(refusal(plan, "vault-writer", reason)),
        other => Ok(other?),
    }
}

fn vault_writer_settings(plan: &Plan) -> anyhow::Result<chronos_vault_writer::Settings> {
    let v = &plan.cfg.vault;
    Ok(chronos_vault_writer::Settings {
        names: plan.names.clone(),
        topology: plan.topology,
        hasher: plan.hasher()?,
        origin: plan.log.origin.clone(),
        database_url: plan.database_url()?,
        flush: chronos_vault_writer::FlushLimits {
            max_batches: v.flush_max_batches as usize,
            max_bytes: v.flush_max_bytes as usize,
            max_age: Duration::from_millis(v.flush_max_age_ms),
        },
        key_window: Duration::from_secs(plan.cfg.pipeline.key_window_secs),
        epoch: plan.epoch()?,
        faults: plan.faults()?,
        breaker_file: Some(plan.breaker_file()),
    })
}

/// The bearer tokens: `CHRONOS_INGEST_TOKEN`, else `ingest.token_file`
/// (one per line; blank lines and lines starting with `#` are skipped).
fn tokens(plan: &Plan) -> anyhow::Result<Vec<String>> {
    if let Ok(t) = std::env::var("CHRONOS_INGEST_TOKEN") {
        ensure!(!t.trim().is_empty(), "CHRONOS_INGEST_TOKEN is set but empty");
        return Ok(vec![t.trim().to_owned()]);
    }
    crate::tls::read_tokens(&plan.data_dir, "ingest.token_file", &plan.cfg.ingest.token_file)
}

pub fn ingest(plan: &Plan, slot: u16) -> anyhow::Result<()> {
    let (settings, listener) = setup(plan, &format!("ingest-{slot}"), ingest_settings(plan, slot))?;
    let bound = listener.local_addr()?;
    std::fs::create_dir_all(plan.run_dir())?;
    let addr_file = plan.run_dir().join(format!("ingest-{slot}.addr"));
    std::fs::write(addr_file.with_extension("tmp"), format!("{bound}\n"))?;
    std::fs::rename(addr_file.with_extension("tmp"), &addr_file)?; // readers never see it half-written
    let stop = stop_flag(supervised())?;
    // Decoding and splitting bodies is CPU work on blocking threads: more
    // of them than cores only adds stacks and allocator arenas.
    let rt = tokio::runtime::Builder::new_multi_thread().max_blocking_threads(2 * cores() + 2).enable_all().build()?;
    let shutdown = async move {
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    // /metrics off the public port when asked: a listener of its own
    // (plain HTTP, loopback by default), bound before serving.
    let metrics_listener = if plan.cfg.ingest.metrics_on_ingest_port {
        None
    } else {
        let addr = metrics_addr(plan, 4 + plan.topology.hashers + slot);
        let l = std::net::TcpListener::bind(addr).with_context(|| format!("ingest /metrics at {addr}"))?;
        let file = plan.run_dir().join(format!("ingest-{slot}.metrics"));
        std::fs::write(&file, format!("{}\n", l.local_addr()?))?;
        Some(l)
    };
    rt.block_on(chronos_ingest::server::serve(
        settings,
        listener,
        metrics_listener,
        chronos_ingest::server::Metrics::default(),
        Registry::default(),
        shutdown,
    ))?;
    Ok(())
}

/// Under the refuse policy, ingest answers 503 "no time quorum" at the
/// door while the published clock has none (the orchestrator refuses a
/// batch that gets past in the meantime).
fn time_gate(plan: &Plan) -> Option<chronos_ingest::server::TimeGate> {
    let reader = chronos_time::TimeReader::new(&plan.time);
    reader
        .gates_writes()
        .then(|| chronos_ingest::server::TimeGate(Arc::new(move || reader.stamp().err().map(|e| e.to_string()))))
}

fn ingest_settings(
    plan: &Plan,
    slot: u16,
) -> anyhow::Result<(chronos_ingest::server::Settings, std::net::TcpListener)> {
    ensure!(slot < plan.topology.ingests, "--slot {slot}: there are {} ingest processes", plan.topology.ingests);
    let i = &plan.cfg.ingest;
    let settings = chronos_ingest::server::Settings {
        names: plan.names.clone(),
        topology: plan.topology,
        slot,
        limits: plan.limits(),
        tokens: chronos_tls::Tokens::new(tokens(plan)?),
        tls: plan.cfg.tls.http1(&plan.data_dir)?,
        ack_timeout: Duration::from_millis(i.ack_timeout_ms),
        retry_after_secs: i.retry_after_secs,
        max_inflight_bytes: i.max_inflight_bytes as usize,
        max_connections: i.max_connections as usize,
        orchestrator_ready: plan.run_dir().join("orchestrator.ready"),
        refusal_files: vec![plan.refusal_file("orchestrator"), plan.refusal_file("vault-writer")],
        mode_file: Some(plan.mode_file()),
        ready_file: Some(plan.run_dir().join(format!("ingest-{slot}.ready"))),
        time_gate: time_gate(plan),
    };
    // The socket `chronos up` bound for every ingest process of this
    // instance; alone (no supervisor), bind it here.
    let listener = match std::env::var(LISTEN_FD_ENV) {
        Ok(fd) => {
            let fd: i32 = fd.parse().with_context(|| format!("{LISTEN_FD_ENV}: {fd:?} is not a descriptor"))?;
            let l = chronos_ipc::inherit::listener(fd).with_context(|| format!("{LISTEN_FD_ENV}={fd}"))?;
            l.set_nonblocking(true)?;
            l
        }
        Err(_) => chronos_ingest::server::bind(i.listen.parse()?)?,
    };
    Ok((settings, listener))
}
