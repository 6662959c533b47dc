//! Trusted time end to end: `chronos up` with three NTP sources on
//! loopback, one of them lying by 30 s; then two of them silenced.

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::pipeline::{Stack, body, wait_for};

/// An NTP server on a loopback port that answers with the host clock plus
/// `offset_ms` (a liar when not 0), or stays silent while `silent`.
pub(crate) struct FakeNtp {
    pub addr: String,
    pub offset_ms: Arc<AtomicI64>,
    pub silent: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

/// Unix ns as an NTP timestamp (era 0).
fn ntp_ts(unix_ns: i128) -> u64 {
    let secs = (unix_ns.div_euclid(1_000_000_000) + 2_208_988_800) as u64;
    let frac = ((unix_ns.rem_euclid(1_000_000_000) as u128) << 32) / 1_000_000_000;
    (secs << 32) | frac as u64
}

impl FakeNtp {
    pub(crate) fn start(offset_ms: i64) -> FakeNtp {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let addr = sock.local_addr().unwrap().to_string();
        let (offset, silent, stop) =
            (Arc::new(AtomicI64::new(offset_ms)), Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (o, q, s) = (offset.clone(), silent.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
                if n < 48 || buf[0] & 7 != 3 || q.load(Ordering::Relaxed) {
                    continue;
                }
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as i128
                    + i128::from(o.load(Ordering::Relaxed)) * 1_000_000;
                let mut r = [0u8; 48];
                r[0] = 0x24; // leap 0, version 4, mode 4 (server)
                r[1] = 2; // stratum
                r[2] = buf[2];
                r[3] = 0xEC; // precision 2^-20 s
                r[4..8].copy_from_slice(&0x0000_0010u32.to_be_bytes()); // root delay ~0.24 ms
                r[8..12].copy_from_slice(&0x0000_0010u32.to_be_bytes()); // root dispersion ~0.24 ms
                r[12..16].copy_from_slice(b"FAKE");
                r[16..24].copy_from_slice(&ntp_ts(now - 1_000_000_000).to_be_bytes()); // reference
                r[24..32].copy_from_slice(&buf[40..48]); // origin = the request's transmit
                r[32..40].copy_from_slice(&ntp_ts(now).to_be_bytes());
                r[40..48].copy_from_slice(&ntp_ts(now).to_be_bytes());
                let _ = sock.send_to(&r, from);
            }
        });
        FakeNtp { addr, offset_ms: offset, silent, stop }
    }
}

impl Drop for FakeNtp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64
}

/// Writes `[time]` with `servers` as sources (honest-a, honest-b, liar).
pub(crate) fn configure(s: &Stack, servers: &[FakeNtp], policy: &str) {
    let cfg = s.data().join("chronos.toml");
    let mut table: toml::Table = toml::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    let sources: Vec<toml::Value> = ["honest-a", "honest-b", "liar"]
        .iter()
        .zip(servers)
        .map(|(name, srv)| toml::Value::Table(toml::toml! { name = (*name) kind = "ntp" address = (srv.addr.clone()) }))
        .collect();
    let mut time = toml::toml! { policy = (policy) min_agreeing = 2 poll_ms = 300 timeout_ms = 200 };
    time.insert("source".into(), toml::Value::Array(sources));
    table.insert("time".into(), toml::Value::Table(time));
    std::fs::write(&cfg, toml::to_string(&table).unwrap()).unwrap();
}

#[test]
fn a_lying_source_is_named_and_outvoted_and_a_lost_quorum_refuses_writes_until_it_returns() {
    let servers = [FakeNtp::start(0), FakeNtp::start(0), FakeNtp::start(30_000)];
    assert_eq!(servers[2].offset_ms.load(Ordering::Relaxed), 30_000);
    let mut s = Stack::prepare();
    configure(&s, &servers, "refuse");
    s.launch(&[]);

    // Batches carry quorum time, within the honest sources' bound, not the liar's.
    let (b, _) = body("quorum", 5, true);
    let r = s.post(&b, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let client = s.client();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let row = rt
        .block_on(
            client.query_one("SELECT time_ns, uncertainty_ns, time_source FROM batches ORDER BY seq DESC LIMIT 1", &[]),
        )
        .unwrap();
    let (time, unc, source): (i64, i64, String) = (row.get(0), row.get(1), row.get(2));
    assert!(source.starts_with("quorum:2/3:"), "{source}");
    assert!(unc > 0 && unc < 100_000_000, "uncertainty {unc} ns: measured, and within the honest sources' bound");
    assert!((time - now_ns()).abs() < 2_000_000_000, "batch time {time} is the honest time, not 30 s off");

    // `chronos time` names the falseticker; an audit event records it.
    let d = s.data();
    let out = super::chronos(&["time", "--data-dir", d.to_str().unwrap(), "--database-url", &s.url, "--json"], &[]);
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    let state = |name: &str| {
        report["sources"].as_array().unwrap().iter().find(|x| x["name"] == name).map(|x| x["state"].clone())
    };
    assert_eq!(state("liar"), Some("falseticker".into()), "{report:#}");
    assert_eq!(state("honest-a"), Some("agreeing".into()), "{report:#}");
    let audited = rt
        .block_on(client.query_one(
            "SELECT count(*) FROM audit_events WHERE kind = 'time.falseticker' AND detail->>'source' = 'liar'",
            &[],
        ))
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(audited, 1, "one audit event for the falseticker (changes only)");
    // The time service's metrics: each source's state, the quorum, the uncertainty.
    let metrics_addr = std::fs::read_to_string(d.join("run").join("time.metrics")).unwrap();
    let metrics = super::pipeline::http(metrics_addr.trim(), "GET", "/metrics", &[], b"").unwrap().body;
    for line in [
        "chronos_time_source_state{source=\"liar\",state=\"falseticker\"} 1",
        "chronos_time_source_state{source=\"honest-a\",state=\"agreeing\"} 1",
        "chronos_time_sources_agreeing 2",
        "chronos_time_synchronized 1",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }

    // The time service killed: restarted by `up`, it restores its floor
    // from PostgreSQL and agrees again; stamps never go back.
    let floor: i64 = rt.block_on(client.query_one("SELECT floor_ns FROM time_floor", &[])).unwrap().get(0);
    assert!(floor > 0, "the floor is kept in PostgreSQL");
    let killed = s.pid("time");
    super::pipeline::sigkill(killed);
    wait_for(
        Duration::from_secs(20),
        "the time service restarted",
        || s.log(),
        || {
            std::fs::read_to_string(d.join("run").join("time.pid"))
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
                .filter(|p| *p != killed)
        },
    );
    let mut attempt = 0;
    wait_for(
        Duration::from_secs(20),
        "quorum time after the restart",
        || s.log(),
        || {
            attempt += 1;
            let r = s.post(&body(&format!("after-restart-{attempt}"), 1, true).0, &[]);
            (r.status == 200).then_some(())
        },
    );
    let times: Vec<i64> = rt
        .block_on(client.query("SELECT time_ns FROM batches ORDER BY seq", &[]))
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "batch times never go back: {times:?}");

    // Two sources silenced: one answer of three is no majority.
    servers[0].silent.store(true, Ordering::Relaxed);
    servers[1].silent.store(true, Ordering::Relaxed);
    let refused = wait_for(
        Duration::from_secs(20),
        "503 no time quorum",
        || s.log(),
        || {
            let r = s.post(&body("refused", 1, true).0, &[]);
            (r.status == 503).then_some(r)
        },
    );
    assert!(refused.body.contains("no time quorum"), "{}", refused.body);
    assert!(refused.headers.contains_key("retry-after"), "{:?}", refused.headers);
    // The refusal can come first: the time service publishes the clock
    // state, then stores the round and its audit event.
    let lost = wait_for(
        Duration::from_secs(20),
        "the audit event of the lost quorum",
        || s.log(),
        || {
            let n = rt
                .block_on(client.query_one("SELECT count(*) FROM audit_events WHERE kind = 'time.no_quorum'", &[]))
                .unwrap()
                .get::<_, i64>(0);
            (n > 0).then_some(n)
        },
    );
    assert_eq!(lost, 1, "losing the quorum is one audit event");

    // They return: writes are accepted again.
    servers[0].silent.store(false, Ordering::Relaxed);
    servers[1].silent.store(false, Ordering::Relaxed);
    let sent_at = now_ns();
    let back = wait_for(
        Duration::from_secs(20),
        "accepted again",
        || s.log(),
        || {
            let r = s.post(&body("back", 1, true).0, &[]);
            (r.status == 200).then_some(r)
        },
    );
    let leaf = super::pipeline::json_u64(&back.body, "first_leaf");
    s.stop();
    let report = s.verify();
    assert_eq!(report["status"], "intact", "{report:#}");
    assert!(report["summary"]["quorum_batches"].as_u64().unwrap_or(0) >= 2, "{report:#}");

    // When the last event was logged, proven offline from two signed checkpoints.
    let proof = s.dir.path().join("event.time-proof");
    let vkey = std::fs::read_to_string(d.join("log.vkey")).unwrap();
    let leaf_arg = leaf.to_string();
    let args = ["prove", "--database-url", &s.url, "--key", vkey.trim(), "--leaf", &leaf_arg, "-o", "/dev/null"];
    let out = super::chronos(&[&args[..], &["--time-out", proof.to_str().unwrap()]].concat(), &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = super::chronos(&["verify-proof", proof.to_str().unwrap(), "--key", vkey.trim()], &[]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && said.contains("logged between"), "{said}{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("time source quorum:2/3:"), "the checkpoints carry quorum time: {said}");
    let tp = chronos_ledger::TimeProof::parse(&std::fs::read(&proof).unwrap()).unwrap();
    let verifier = chronos_ledger::NoteVerifier::parse(vkey.trim()).unwrap();
    let proven = tp.verify(&verifier, None, None).unwrap();
    let (earliest, latest) = (proven.earliest_ns.unwrap() as i64, proven.latest_ns as i64);
    assert!(earliest <= sent_at + 1_000_000_000 && latest >= sent_at, "[{earliest}, {latest}] vs sent at {sent_at}");
    assert!(latest - earliest < 60_000_000_000, "a useful bound: [{earliest}, {latest}]");
    // Another leaf's place, or an altered earlier checkpoint: refused.
    let mut moved = tp.clone();
    moved.inclusion.index = 0;
    assert!(moved.verify(&verifier, None, None).is_err(), "leaf 0 is not at the proven place");
    let text = std::fs::read_to_string(&proof).unwrap().replacen("before ", "before AAAA", 1);
    std::fs::write(&proof, text).unwrap();
    let out = super::chronos(&["verify-proof", proof.to_str().unwrap(), "--key", vkey.trim()], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn under_the_accept_policy_batches_without_quorum_are_marked_untrusted_and_altered_evidence_is_caught() {
    let servers = [FakeNtp::start(0), FakeNtp::start(0), FakeNtp::start(30_000)];
    let mut s = Stack::prepare();
    configure(&s, &servers, "accept");
    s.launch(&[]);
    assert_eq!(s.post(&body("quorum", 3, true).0, &[]).status, 200);
    servers[0].silent.store(true, Ordering::Relaxed);
    servers[1].silent.store(true, Ordering::Relaxed);
    let client = s.client();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // Accepted all along, stamped `untrusted` once the quorum is gone.
    let mut attempt = 0;
    wait_for(
        Duration::from_secs(20),
        "a batch stamped untrusted",
        || s.log(),
        || {
            // A new body each time: the same one again would be answered as a duplicate.
            attempt += 1;
            let r = s.post(&body(&format!("untrusted-{attempt}"), 1, true).0, &[]);
            assert_eq!(r.status, 200, "the accept policy never refuses: {}", r.body);
            let source: String = rt
                .block_on(client.query_one("SELECT time_source FROM batches ORDER BY seq DESC LIMIT 1", &[]))
                .unwrap()
                .get(0);
            (source == "untrusted").then_some(())
        },
    );
    let unc: i64 = rt
        .block_on(client.query_one("SELECT uncertainty_ns FROM batches ORDER BY seq DESC LIMIT 1", &[]))
        .unwrap()
        .get(0);
    assert!(unc > 0, "an untrusted stamp carries the host clock's honest uncertainty, not 0");
    s.stop();
    let report = s.verify();
    assert_eq!(report["status"], "intact", "{report:#}");
    assert!(report["summary"]["quorum_batches"].as_u64().unwrap() >= 1, "{report:#}");

    // The evidence a quorum batch names, altered: verify says so.
    rt.block_on(client.execute(
        "UPDATE time_rounds SET evidence = replace(evidence, '\"falseticker\"', '\"agreeing\"') \
         WHERE digest IN (SELECT digest FROM time_rounds WHERE evidence LIKE '%falseticker%')",
        &[],
    ))
    .unwrap();
    let report = s.verify();
    assert_eq!(report["status"], "tampered", "{report:#}");
    assert_eq!(report["first"]["kind"], "time_unproven", "{report:#}");
}

/// A Roughtime server from roughenough (installed by `.ci/run`), stopped
/// when dropped (with its seed file, kept until then).
struct Roughenough(std::process::Child, #[allow(dead_code)] Option<tempfile::NamedTempFile>);

impl Drop for Roughenough {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn binary(path: &str, install: &str) -> &'static str {
    assert!(std::path::Path::new(path).exists(), "{path} is missing: install it with `{install}` (.ci/run does)");
    path.to_owned().leak()
}

/// roughenough 1.3 (Google's protocol and the IETF draft), key from `seed`.
fn roughenough_1(seed: [u8; 32], port: u16) -> Roughenough {
    let bin = binary(
        "/usr/local/bin/roughenough-server",
        "cargo install roughenough --version 1.3.0-draft14 --locked --root /usr/local",
    );
    let child = std::process::Command::new(bin)
        .arg("ENV")
        .env("ROUGHENOUGH_INTERFACE", "127.0.0.1")
        .env("ROUGHENOUGH_PORT", port.to_string())
        .env("ROUGHENOUGH_SEED", hex::encode(seed))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    Roughenough(child, None)
}

/// roughenough-server 2.2 (RFC version 1), its clock `offset_s` off.
fn roughenough_2(seed: [u8; 32], port: u16, offset_s: i32) -> Roughenough {
    let bin = binary(
        "/usr/local/bin/roughenough_server",
        "cargo install roughenough-server --version 2.2.0 --locked --root /usr/local",
    );
    let seed_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(seed_file.path(), format!("seed://{}", hex::encode(seed))).unwrap();
    let child = std::process::Command::new(bin)
        .args(["--interface", "127.0.0.1", "--num-threads", "1", "--port", &port.to_string()])
        .arg(format!("--fixed-offset={offset_s}"))
        .arg("--seed-file")
        .arg(seed_file.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    Roughenough(child, Some(seed_file))
}

#[test]
fn roughenough_servers_are_sources_and_one_set_back_is_caught_with_a_malfeasance_report() {
    use base64::Engine as _;
    let public = |seed: [u8; 32]| ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key().to_bytes();
    let (seed_1, seed_2, seed_liar) = ([0x11; 32], [0x22; 32], [0x33; 32]);
    let (port_1, port_2, port_liar) = (free_udp_port(), free_udp_port(), free_udp_port());
    let _servers =
        [roughenough_1(seed_1, port_1), roughenough_2(seed_2, port_2, 0), roughenough_2(seed_liar, port_liar, -600)];
    let ntp = FakeNtp::start(0);
    let mut s = Stack::prepare();
    let cfg = s.data().join("chronos.toml");
    let mut table: toml::Table = toml::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    let rt_source = |name: &str, port: u16, seed: [u8; 32]| {
        let key = base64::engine::general_purpose::STANDARD.encode(public(seed));
        toml::Value::Table(toml::toml! {
            name = (name) kind = "roughtime" address = (format!("127.0.0.1:{port}")) key = (key)
        })
    };
    let sources = vec![
        toml::Value::Table(toml::toml! { name = "ntp" kind = "ntp" address = (ntp.addr.clone()) }),
        rt_source("roughenough-1", port_1, seed_1),
        rt_source("roughenough-2", port_2, seed_2),
        // Last in the chain: its answer, ten minutes behind, contradicts the earlier ones.
        rt_source("set-back", port_liar, seed_liar),
    ];
    // Roughtime answers carry radii of seconds: above the 3 s default distance.
    let mut time = toml::toml! { min_agreeing = 3 poll_ms = 300 timeout_ms = 250 max_distance_ms = 15_000 };
    time.insert("source".into(), toml::Value::Array(sources));
    table.insert("time".into(), toml::Value::Table(time));
    std::fs::write(&cfg, toml::to_string(&table).unwrap()).unwrap();
    s.launch(&[]);

    let r = s.post(&body("roughtime", 2, true).0, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let client = s.client();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (time, source): (i64, String) = rt
        .block_on(client.query_one("SELECT time_ns, time_source FROM batches ORDER BY seq DESC LIMIT 1", &[]))
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert!(source.starts_with("quorum:3/4:"), "{source}");
    assert!((time - now_ns()).abs() < 5_000_000_000, "batch time {time} is the honest time");

    let d = s.data();
    let out = super::chronos(&["time", "--data-dir", d.to_str().unwrap(), "--database-url", &s.url, "--json"], &[]);
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let state = |name: &str| {
        report["sources"].as_array().unwrap().iter().find(|x| x["name"] == name).map(|x| x["state"].clone())
    };
    for honest in ["ntp", "roughenough-1", "roughenough-2"] {
        assert_eq!(state(honest), Some("agreeing".into()), "{report:#}");
    }
    assert_eq!(state("set-back"), Some("falseticker".into()), "{report:#}");
    assert_eq!(report["round"]["malfeasance_report"], true, "{report:#}");

    // The malfeasance report, kept in the audit trail, convinces a third
    // party holding the servers' public keys.
    let text: String = rt
        .block_on(client.query_one(
            "SELECT detail->>'report' FROM audit_events WHERE kind = 'time.malfeasance' ORDER BY id LIMIT 1",
            &[],
        ))
        .unwrap()
        .get(0);
    let report = chronos_quorum::roughtime::MalfeasanceReport::from_json(&text).unwrap();
    let keys = [public(seed_1), public(seed_2), public(seed_liar)];
    let contradiction = chronos_quorum::roughtime::check_report(&report, &keys).unwrap();
    assert_eq!(contradiction.later_key, public(seed_liar), "{contradiction:?}");
    s.stop();
    assert_eq!(s.verify()["status"], "intact");
}

#[test]
fn peers_are_a_group_of_their_own_that_needs_all_but_f_of_3f_plus_1() {
    use base64::Engine as _;
    let public = |seed: [u8; 32]| ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key().to_bytes();
    // Four peers (until the bridge serves Roughtime, peers are Roughtime
    // servers): three honest, one ten minutes behind. n = 4 = 3f + 1: f = 1.
    let seeds = [[0x41; 32], [0x42; 32], [0x43; 32], [0x44; 32]];
    let ports: Vec<u16> = (0..4).map(|_| free_udp_port()).collect();
    let _servers = [
        roughenough_1(seeds[0], ports[0]),
        roughenough_2(seeds[1], ports[1], 0),
        roughenough_2(seeds[2], ports[2], 0),
        roughenough_2(seeds[3], ports[3], -600),
    ];
    let mut s = Stack::prepare();
    let cfg = s.data().join("chronos.toml");
    let mut table: toml::Table = toml::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    let peers: Vec<toml::Value> = (0..4)
        .map(|i| {
            let key = base64::engine::general_purpose::STANDARD.encode(public(seeds[i]));
            toml::Value::Table(toml::toml! {
                name = (format!("peer-{i}")) kind = "peer" address = (format!("127.0.0.1:{}", ports[i])) key = (key)
            })
        })
        .collect();
    let mut time = toml::toml! { poll_ms = 300 timeout_ms = 250 max_distance_ms = 15_000 };
    time.insert("source".into(), toml::Value::Array(peers));
    table.insert("time".into(), toml::Value::Table(time));
    std::fs::write(&cfg, toml::to_string(&table).unwrap()).unwrap();
    s.launch(&[]);
    assert_eq!(s.post(&body("peers", 1, true).0, &[]).status, 200);
    let d = s.data();
    let out = super::chronos(&["time", "--data-dir", d.to_str().unwrap(), "--database-url", &s.url, "--json"], &[]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["round"]["peers_required"], 3, "{report:#}");
    let states: Vec<String> =
        report["sources"].as_array().unwrap().iter().map(|x| x["state"].as_str().unwrap().to_owned()).collect();
    assert_eq!(states, ["agreeing", "agreeing", "agreeing", "falseticker"], "{report:#}");
    let source: String = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(s.client().query_one("SELECT time_source FROM batches ORDER BY seq DESC LIMIT 1", &[]))
        .unwrap()
        .get(0);
    assert!(source.starts_with("quorum:3/4:"), "{source}");
    // One honest peer gone: 2 honest + the liar are 3 answers, but the liar
    // shares no instant with them, so 3 never agree: no quorum, refused.
    drop(_servers);
    let r = wait_for(
        Duration::from_secs(20),
        "no time quorum without the peers",
        || s.log(),
        || {
            let r = s.post(&body("gone", 1, true).0, &[]);
            (r.status == 503).then_some(r)
        },
    );
    assert!(r.body.contains("no time quorum"), "{}", r.body);
    s.stop();
    let report = s.verify();
    assert_eq!(report["status"], "intact", "{report:#}");
}
