//! `chronos bench-bridge`: the bridge's serving rates beside its peers,
//! with one load generator (`chronos_bench::serve`) in one run:
//!
//! * NTP: the bridge against chronyd serving NTP on the same machine;
//! * Roughtime: the bridge against roughenough-server 2.2 (RFC version 1),
//!   one request in flight per client and windows of 16 (batched);
//! * inclusion proofs over HTTP, from the tiles in PostgreSQL.
//!
//! Each server's CPU time comes from `/proc`, so "per core" is answers per
//! CPU-second of the server, whatever the generator took from the same
//! cores. The log has quorum time from three loopback NTP sources, as in
//! `chronos bench --time quorum`, and no NTP rate limit.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use chronos_bench::Launcher as _;
use chronos_bench::procs::{Members, Sampler};
use chronos_bench::serve::{self, CheckAnswer, MakeRequest, Served};
use chronos_quorum::roughtime::{Request, Version};

use crate::bench::{TimeArg, UpLauncher, configure_time, free_port, read_pid};

/// The flags of `chronos bench-bridge`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds measured per load.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Client threads of the load generator.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Events in the log before proofs are asked for.
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Write the Markdown report to this file too.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

/// A peer server, killed when dropped.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_udp() -> std::io::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// chronyd serving NTP on 127.0.0.1:`port` from its local clock (no rate limit).
fn chronyd(port: u16, dir: &Path) -> anyhow::Result<Peer> {
    std::fs::create_dir_all(dir)?;
    let conf = dir.join("chrony.conf");
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbindaddress 127.0.0.1\nallow 127.0.0.1\nlocal stratum 8\ncmdport 0\npidfile {}\n",
            dir.join("chronyd.pid").display()
        ),
    )?;
    let child = Command::new("/usr/sbin/chronyd")
        .args(["-d", "-x", "-u", "root", "-f"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("chronyd (Debian package chrony)")?;
    Ok(Peer(child))
}

/// roughenough-server 2.2 on 127.0.0.1:`port` with long-term key `seed`.
fn roughenough(port: u16, seed: [u8; 32], dir: &Path) -> anyhow::Result<Peer> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir)?;
    let file = dir.join("seed");
    std::fs::write(&file, format!("seed://{}", hex::encode(seed)))?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
    let child = Command::new("/usr/local/bin/roughenough_server")
        .args(["--interface", "127.0.0.1", "--num-threads", "1", "--port", &port.to_string(), "--seed-file"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("roughenough_server (cargo install roughenough-server --version 2.2.0)")?;
    Ok(Peer(child))
}

fn ntp_request() -> MakeRequest {
    Arc::new(|t, i| {
        let mut p = vec![0u8; 48];
        p[0] = 0x23; // version 4, client
        p[40..48].copy_from_slice(&((t as u64) << 32 | i as u64).to_be_bytes());
        p
    })
}

/// A time answer, not a kiss-o'-death (stratum 0) or an unsynchronized one.
fn ntp_answer() -> CheckAnswer {
    Arc::new(|a| a.len() >= 48 && a[1] != 0 && a[1] < 16)
}

fn roughtime_request(key: [u8; 32]) -> MakeRequest {
    Arc::new(move |t, i| {
        let mut nonce = [0u8; 32];
        nonce[..8].copy_from_slice(&(t as u64).to_le_bytes());
        nonce[8..16].copy_from_slice(&(i as u64).to_le_bytes());
        Request::new(&[Version::Rfc], &nonce, Some(&key)).map(|r| r.bytes().to_vec()).unwrap_or_default()
    })
}

fn any_answer() -> CheckAnswer {
    Arc::new(|a| !a.is_empty())
}

/// Runs `load` while sampling `pid`'s (and its children's) CPU time.
fn measured(server: Members, load: impl FnOnce() -> std::io::Result<Served>) -> anyhow::Result<(Served, f64)> {
    let sampler = Sampler::start(vec![("server".into(), server)]);
    let served = load()?;
    let cpu = sampler.finish().remove("server").map_or(0.0, |u| u.cpu_secs);
    Ok((served, cpu))
}

fn row(what: &str, server: &str, load: &str, s: &Served, cpu: f64) -> String {
    let per_core = if cpu > 0.0 { s.answered as f64 / cpu } else { f64::NAN };
    format!(
        "| {what} | {server} | {load} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {} |\n",
        s.per_sec(),
        per_core,
        cpu / s.elapsed.as_secs_f64(),
        s.latency_ms(50.0),
        s.latency_ms(99.0),
        s.sent - s.answered,
    )
}

fn wait<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A blocking HTTP exchange with `connection: close`: status and body.
fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/x-ndjson\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
}

fn json(addr: &str, path: &str) -> Option<serde_json::Value> {
    let (status, body) = http(addr, "GET", path, b"").ok()?;
    (status == 200).then(|| serde_json::from_str(&body).ok()).flatten()
}

pub fn bench_bridge(args: Args) -> anyhow::Result<()> {
    let data_dir = std::env::temp_dir().join(format!("chronos-bench-bridge-{}", std::process::id()));
    let result = run(&args, &data_dir);
    let _ = std::fs::remove_dir_all(&data_dir);
    if result.is_ok() {
        let _ = std::fs::remove_file(data_dir.with_extension("up.log"));
    }
    result
}

fn run(args: &Args, data: &Path) -> anyhow::Result<()> {
    let say = |s: &str| eprintln!("chronos bench-bridge: {s}");
    crate::init::init(data, "bench.invalid/chronos-bench-bridge", chronos_ledger::HashAlg::Sha256, None)?;
    let sources = (0..3).map(|_| crate::loopback_ntp::LoopbackNtp::start()).collect::<Result<Vec<_>, _>>()?;
    configure_time(data, TimeArg::Quorum, &sources)?;
    let mut up = UpLauncher {
        exe: std::env::current_exe()?,
        data_dir: data.to_owned(),
        database_url: None,
        listen: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
        log: data.with_extension("up.log"),
        child: None,
        // No NTP rate limit: the generator is one address.
        env: vec![("CHRONOS_BRIDGE_NTP_RATE".into(), "0".into())],
    };
    say(&format!("starting chronos up (log in {})", up.log.display()));
    let stack = up.start(1, 1)?;
    let run_dir = data.join("run");
    let addr = |name: &str| {
        wait(Duration::from_secs(60), &format!("run/{name}"), || std::fs::read_to_string(run_dir.join(name)).ok())
            .map(|a| a.trim().to_owned())
    };
    let (web, ntp, rough) = (addr("bridge.http")?, addr("bridge.ntp")?, addr("bridge.roughtime")?);
    let bridge_pid = wait(Duration::from_secs(10), "run/bridge.pid", || read_pid(&run_dir.join("bridge.pid")))?;
    say("waiting for quorum time");
    wait(Duration::from_secs(60), "quorum time on /v1/time", || {
        json(&web, "/v1/time").filter(|v| v["synchronized"] == true)
    })?;

    say(&format!("ingesting {} events for the proofs", args.events));
    let mut sent = 0u64;
    while sent < args.events {
        let n = (args.events - sent).min(1_000);
        let body: String =
            (0..n).map(|i| format!("{{\"message\":\"bench event {}\",\"host\":\"web-1\"}}\n", sent + i)).collect();
        let (status, text) = http(&stack.addr.to_string(), "POST", "/ingest", body.as_bytes())?;
        if status != 200 {
            bail!("ingest answered {status}: {text}");
        }
        sent += n;
    }
    let size = wait(Duration::from_secs(60), "the checkpoint of every event", || {
        json(&web, "/v1/checkpoint").and_then(|v| v["tree_size"].as_u64()).filter(|s| *s >= args.events)
    })?;

    let d = Duration::from_secs(args.duration);
    let t = args.threads;
    let mut table = String::from(
        "| what | server | load | answers/s | answers per server CPU-second | server cores busy | p50 ms | p99 ms | unanswered |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    let ntp_addr: SocketAddr = ntp.parse()?;
    let chrony_port = free_udp()?;
    let chronyd = chronyd(chrony_port, &data.join("peers/chronyd"))?;
    let chrony_addr = SocketAddr::from(([127, 0, 0, 1], chrony_port));
    wait(Duration::from_secs(30), "chronyd answering", || {
        serve::udp(chrony_addr, 1, 1, Duration::from_millis(200), ntp_request(), ntp_answer())
            .ok()
            .filter(|s| s.answered > 0)
    })?;
    let chrony_pid = chronyd.0.id() as i32;
    for window in [1usize, 16] {
        let load = format!("{t} clients × {window} in flight");
        for (name, target, pid) in [("Chronos bridge", ntp_addr, bridge_pid), ("chronyd 4.3", chrony_addr, chrony_pid)]
        {
            say(&format!("NTP: {name}, {load}"));
            let (s, cpu) =
                measured(Members::Pid(pid), || serve::udp(target, t, window, d, ntp_request(), ntp_answer()))?;
            table.push_str(&row("NTP", name, &load, &s, cpu));
        }
    }

    let key_b64 = std::fs::read_to_string(data.join("roughtime.key.pub"))?;
    let key: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(key_b64.trim())?
        .try_into()
        .map_err(|_| anyhow::anyhow!("roughtime.key.pub: not 32 bytes"))?;
    let peer_seed = [0x5a; 32];
    let peer_key = chronos_quorum::roughtime::server::long_term_public_key(&peer_seed);
    let peer_port = free_udp()?;
    let peer = roughenough(peer_port, peer_seed, &data.join("peers/roughenough"))?;
    let peer_addr = SocketAddr::from(([127, 0, 0, 1], peer_port));
    wait(Duration::from_secs(30), "roughenough answering", || {
        serve::udp(peer_addr, 1, 1, Duration::from_millis(300), roughtime_request(peer_key), any_answer())
            .ok()
            .filter(|s| s.answered > 0)
    })?;
    let rough_addr: SocketAddr = rough.parse()?;
    for window in [1usize, 16] {
        let load = format!("{t} clients × {window} in flight");
        for (name, target, pid, k) in [
            ("Chronos bridge", rough_addr, bridge_pid, key),
            ("roughenough-server 2.2 (1 thread)", peer_addr, peer.0.id() as i32, peer_key),
        ] {
            say(&format!("Roughtime: {name}, {load}"));
            let (s, cpu) =
                measured(Members::Pid(pid), || serve::udp(target, t, window, d, roughtime_request(k), any_answer()))?;
            table.push_str(&row("Roughtime (RFC)", name, &load, &s, cpu));
        }
    }

    say("inclusion proofs");
    let web_addr: SocketAddr = web.parse()?;
    let path = Arc::new(move |thread: usize, i: u64| {
        // A spread of leaves: a cheap mixing of (thread, i).
        let x = (thread as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        format!("/v1/proof/inclusion?leaf={}", x % size)
    });
    let (s, cpu) = measured(Members::Pid(bridge_pid), || serve::http_get(web_addr, t, d, path))?;
    let load = format!("{t} clients, 1 in flight, tree of {size}");
    table.push_str(&row("inclusion proof (HTTP)", "Chronos bridge", &load, &s, cpu));
    drop(peer);
    drop(chronyd);
    up.stop()?;

    let command = std::iter::once("chronos".to_owned()).chain(std::env::args().skip(1)).collect::<Vec<_>>().join(" ");
    let md = format!(
        "# Chronos bridge: serving rates\n\n`{command}`, {}, on {}.\n\n{table}\n\
         The load generator shares the machine with the servers; \"answers per server CPU-second\" is the \
         per-core rate (answers divided by the CPU time the server process used in the run). \
         Latency runs from the send of a window of requests to each answer. The proofs' per-core rate \
         counts the bridge's CPU only: each proof also reads tiles from PostgreSQL.\n",
        crate::bench::today(),
        crate::bench::machine()
    );
    #[allow(clippy::print_stdout)] // the command's output
    {
        print!("{md}");
    }
    if let Some(p) = &args.report {
        std::fs::write(p, &md).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
