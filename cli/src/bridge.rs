//! `[bridge]` and the `chronos bridge` process: trusted time and the
//! ledger's read path for readers without database credentials (see the
//! `chronos-bridge` crate). `chronos up` starts it; it also runs on its
//! own (`chronos bridge --data-dir D --database-url URL`), for example on
//! another host against a PostgreSQL replica.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use serde::{Deserialize, Serialize};

use crate::services::Plan;

/// `[bridge]`: what the bridge serves and where. An empty address turns
/// that surface off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BridgeConfig {
    /// HTTP: the C2SP tlog-tiles read path (/checkpoint, /tile/...), /v1/time,
    /// /v1/checkpoint, /v1/proof/..., /v1/events/N and the /v1/stream WebSocket.
    pub listen: String,
    /// gRPC: chronos.time.v1.Time, chronos.ledger.v1.Ledger (proto/), health and reflection.
    pub grpc_listen: String,
    /// NTP server (UDP). Port 123 needs root or CAP_NET_BIND_SERVICE.
    pub ntp_listen: String,
    /// Roughtime server (UDP).
    pub roughtime_listen: String,
    /// The Roughtime long-term key's seed (64 hex digits, mode 0600), relative to the
    /// data directory; created with its public key (`<file>.pub`, base64) when missing.
    pub roughtime_key: String,
    /// NTP answers per second one client address may have on average (0 = no limit);
    /// beyond it, kiss-o'-death RATE.
    pub ntp_rate: u32,
    /// NTP requests one client may send in a burst.
    pub ntp_burst: u32,
    /// Client addresses the NTP rate limiter tracks at once.
    pub ntp_clients: u64,
    /// Bearer tokens (one per line), relative to the data directory; "" = no tokens, all
    /// open. With tokens, every group not in `public` needs one.
    pub token_file: String,
    /// Groups readable without a token: checkpoint, tiles, time, proofs, events, stream.
    /// Health, readiness, gRPC health and reflection, NTP and Roughtime are always public.
    pub public: Vec<String>,
    /// Sign /v1/time?signed=true answers with the log's signing key.
    pub sign_time: bool,
    /// Interval between time ticks on /v1/stream, ms.
    pub stream_tick_ms: u64,
    /// Messages a /v1/stream client may fall behind before it is closed as too slow.
    pub stream_queue: u64,
    /// Most open /v1/stream connections.
    pub stream_max_clients: u64,
    /// How often new checkpoints are looked for, ms.
    pub poll_ms: u64,
    /// Worker threads for HTTP and gRPC (the NTP and Roughtime servers have a thread each).
    pub threads: u64,
}

impl Default for BridgeConfig {
    fn default() -> BridgeConfig {
        BridgeConfig {
            listen: "127.0.0.1:5080".into(),
            grpc_listen: "127.0.0.1:5090".into(),
            ntp_listen: "127.0.0.1:5123".into(),
            roughtime_listen: "127.0.0.1:2002".into(),
            roughtime_key: "roughtime.key".into(),
            ntp_rate: 2,
            ntp_burst: 16,
            ntp_clients: 65_536,
            token_file: String::new(),
            public: ["checkpoint", "tiles", "time"].map(String::from).to_vec(),
            sign_time: false,
            stream_tick_ms: 1_000,
            stream_queue: 64,
            stream_max_clients: 1_024,
            poll_ms: 500,
            threads: 2,
        }
    }
}

fn addr(key: &str, v: &str) -> anyhow::Result<Option<SocketAddr>> {
    if v.is_empty() {
        return Ok(None);
    }
    Ok(Some(v.parse().with_context(|| format!("bridge.{key}: {v:?} is not host:port (or \"\" for off)"))?))
}

impl BridgeConfig {
    /// Checks every key (the addresses, the ranges).
    pub fn check(&self) -> anyhow::Result<()> {
        addr("listen", &self.listen)?;
        addr("grpc_listen", &self.grpc_listen)?;
        addr("ntp_listen", &self.ntp_listen)?;
        addr("roughtime_listen", &self.roughtime_listen)?;
        ensure!(
            !self.roughtime_key.is_empty(),
            "bridge.roughtime_key: empty (a file name, relative to the data directory)"
        );
        for (k, v, lo, hi) in [
            ("ntp_rate", u64::from(self.ntp_rate), 0, 1_000_000),
            ("ntp_burst", u64::from(self.ntp_burst), 1, 1_000_000),
            ("ntp_clients", self.ntp_clients, 1, 1 << 24),
            ("stream_tick_ms", self.stream_tick_ms, 10, 3_600_000),
            ("stream_queue", self.stream_queue, 1, 1 << 16),
            ("stream_max_clients", self.stream_max_clients, 1, 1 << 20),
            ("poll_ms", self.poll_ms, 10, 3_600_000),
            ("threads", self.threads, 1, 256),
        ] {
            ensure!((lo..=hi).contains(&v), "bridge.{k}: {v} is not in {lo}..={hi}");
        }
        Ok(())
    }

    fn public_groups(&self) -> anyhow::Result<Vec<chronos_bridge::access::Group>> {
        use chronos_bridge::access::Group;
        self.public
            .iter()
            .map(|g| {
                Group::parse(g).with_context(|| {
                    let names: Vec<&str> = Group::ALL.iter().map(|g| g.name()).collect();
                    format!("bridge.public: {g:?} is not one of {}", names.join(", "))
                })
            })
            .collect()
    }

    /// Whether anything is served (else `up` does not start a bridge).
    pub fn enabled(&self) -> bool {
        !self.listen.is_empty()
            || !self.grpc_listen.is_empty()
            || !self.ntp_listen.is_empty()
            || !self.roughtime_listen.is_empty()
    }
}

/// The Roughtime long-term key's seed from `file` (relative to
/// `data_dir`), created at random with its public key beside it
/// (`<file>.pub`, base64, what peers put in their `key`) when missing.
pub fn roughtime_seed(data_dir: &std::path::Path, file: &str) -> anyhow::Result<[u8; 32]> {
    use base64::Engine as _;
    let path = data_dir.join(file);
    let mut seed = [0u8; 32];
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            hex::decode_to_slice(text.trim(), &mut seed).with_context(|| {
                format!("{}: expected 64 hex digits (a Roughtime long-term key seed)", path.display())
            })?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("random source: {e}"))?;
            crate::init::write_new(&path, 0o600, format!("{}\n", hex::encode(seed)).as_bytes())?;
            tracing::info!(file = %path.display(), "Roughtime long-term key created");
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let public = chronos_quorum::roughtime::server::long_term_public_key(&seed);
    let pub_path = data_dir.join(format!("{file}.pub"));
    let text = format!("{}\n", base64::engine::general_purpose::STANDARD.encode(public));
    if std::fs::read_to_string(&pub_path).ok().as_deref() != Some(text.as_str()) {
        std::fs::write(&pub_path, text).with_context(|| format!("writing {}", pub_path.display()))?;
    }
    Ok(seed)
}

fn settings(plan: &Plan) -> anyhow::Result<chronos_bridge::Settings> {
    let b = &plan.cfg.bridge;
    let hasher = plan.log.hasher(std::env::var("CHRONOS_HMAC_KEY").ok().as_deref())?;
    Ok(chronos_bridge::Settings {
        http: addr("listen", &b.listen)?,
        grpc: addr("grpc_listen", &b.grpc_listen)?,
        ntp: addr("ntp_listen", &b.ntp_listen)?,
        roughtime: match addr("roughtime_listen", &b.roughtime_listen)? {
            Some(listen) => Some(chronos_bridge::settings::Roughtime {
                listen,
                long_term_seed: roughtime_seed(&plan.data_dir, &b.roughtime_key)?,
            }),
            None => None,
        },
        tls: plan.cfg.tls.files(&plan.data_dir),
        access: chronos_bridge::access::Access {
            tokens: chronos_tls::Tokens::new(crate::tls::read_tokens(
                &plan.data_dir,
                "bridge.token_file",
                &b.token_file,
            )?),
            public: b.public_groups()?,
        },
        database_url: plan.database_url()?,
        verifier: plan.log.verifier()?,
        hasher,
        time: plan.time.clone(),
        time_signer: if b.sign_time { Some(plan.log.signer()?) } else { None },
        ntp_rate: chronos_bridge::settings::RateLimit {
            per_second: b.ntp_rate,
            burst: b.ntp_burst,
            clients: b.ntp_clients as usize,
        },
        stream: chronos_bridge::settings::StreamLimits {
            tick: Duration::from_millis(b.stream_tick_ms),
            queue: b.stream_queue as usize,
            max_clients: b.stream_max_clients as usize,
        },
        poll: Duration::from_millis(b.poll_ms),
        max_decoded: plan.cfg.ingest.max_decoded_bytes as usize,
        threads: b.threads as usize,
    })
}

/// The `chronos bridge` process.
pub fn run(plan: &Plan) -> anyhow::Result<()> {
    let settings = crate::services::setup(plan, "bridge", settings(plan))?;
    let metrics = chronos_bridge::Metrics::default();
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    crate::services::serve_metrics(
        plan,
        "bridge",
        crate::services::metrics_addr(plan, 3 + plan.topology.hashers),
        registry,
    );
    let stop = crate::services::stop_flag(crate::services::supervised())?;
    let run_dir = plan.run_dir();
    let announce = move |b: chronos_bridge::Bound| {
        // Where tests and tools find the surfaces when a port was 0.
        for (name, a) in
            [("bridge.http", b.http), ("bridge.grpc", b.grpc), ("bridge.ntp", b.ntp), ("bridge.roughtime", b.roughtime)]
        {
            let file = run_dir.join(name);
            let _ = std::fs::create_dir_all(&run_dir);
            let r = match a {
                Some(a) => std::fs::write(&file, a.to_string()),
                None => std::fs::remove_file(&file).or(Ok(())),
            };
            if let Err(e) = r {
                tracing::warn!(file = %file.display(), error = %e, "cannot record the bridge's address");
            }
        }
    };
    chronos_bridge::run(settings, &stop, metrics, announce)
        .map_err(|e| crate::services::SetupFailed { service: "bridge".into(), reason: e.to_string() })?;
    Ok(())
}
