//! The bridge's Roughtime server, read by roughenough's clients (1.3 for
//! Google's protocol and the IETF draft, 2.2 for RFC version 1) and by
//! another Chronos that takes it as a peer time source.

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

use super::bridge::{bridge_http, run, wait_time_synchronized};
use super::pipeline::{Stack, body, http, wait_for};
use super::time::{FakeNtp, configure};

fn now_s() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// `(midpoint in seconds, radius in seconds, verified, merkle index)` of
/// each answer roughenough-client 1.3 printed with `-v -f %s`:
/// `Received time from server: midpoint="1796..", radius=5, verified=Yes (merkle_index=0)`.
fn answers_1(text: &str, version: &str) -> Vec<(f64, f64, bool, u32)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.split("midpoint=\"").nth(1)?;
            let (mid, rest) = rest.split_once('"')?;
            let radius: f64 = rest.split("radius=").nth(1)?.split(',').next()?.parse().ok()?;
            let verified = rest.contains("verified=Yes");
            let index = rest.split("merkle_index=").nth(1)?.trim_end_matches(')').parse().ok()?;
            // Google's protocol counts the radius in microseconds, the draft in seconds.
            let radius = if version == "0" { radius / 1e6 } else { radius };
            Some((mid.parse().ok()?, radius, verified, index))
        })
        .collect()
}

#[test]
fn roughenough_clients_verify_the_bridge_and_another_chronos_takes_it_as_a_peer() {
    let servers = [FakeNtp::start(0), FakeNtp::start(0), FakeNtp::start(0)];
    let mut a = Stack::prepare();
    configure(&a, &servers, "accept");
    a.launch(&[]);
    let web = bridge_http(&a);
    wait_time_synchronized(&a, &web, true);
    let rt_addr = std::fs::read_to_string(a.data().join("run").join("bridge.roughtime")).unwrap();
    let (ip, port) = rt_addr.rsplit_once(':').unwrap();
    let key_b64 = std::fs::read_to_string(a.data().join("roughtime.key.pub")).unwrap().trim().to_owned();
    let key_hex = hex::encode(base64::engine::general_purpose::STANDARD.decode(&key_b64).unwrap());

    // roughenough 1.3: eight requests from eight ports, answers checked
    // against the pinned key (its SRV binds each request to it too).
    for version in ["0", "14"] {
        let (ok, text) = run(Command::new("/usr/local/bin/roughenough-client")
            .args(["-v", "-f", "%s", "-t", "5", "-n", "8", "-p", version, "-k", &key_hex, ip, port]));
        assert!(ok, "roughenough-client -p {version}: {text}");
        let got = answers_1(&text, version);
        assert_eq!(got.len(), 8, "-p {version}: {text}");
        let now = now_s();
        for (mid, radius, verified, index) in got {
            assert!(verified, "-p {version}: not verified: {text}");
            assert!(index < 8, "{text}");
            // The honest sources serve this host's clock: it lies within
            // the signed interval (plus the whole-second units printed).
            assert!((mid - now).abs() <= radius + 2.0, "-p {version}: {mid} ± {radius} vs now {now}: {text}");
        }
    }
    // A wrong key: the request names another server (SRV), so nothing answers.
    let (ok, text) = run(Command::new("/usr/local/bin/roughenough-client").args([
        "-t",
        "1",
        "-p",
        "14",
        "-k",
        &"00".repeat(32),
        ip,
        port,
    ]));
    assert!(!ok || text.contains("Timeout"), "a request for another key is not answered: {text}");

    // roughenough 2.2's client speaks RFC version 1 (and offers the
    // draft with `-P both`); with `-k` it authenticates every answer and
    // fails on one that does not verify. It prints each time in seconds.
    for offer in ["1", "both"] {
        let (ok, text) = run(Command::new("/usr/local/bin/roughenough_client")
            .env("NO_COLOR", "1")
            .args(["--epoch", "-t", "5", "-n", "4", "-P", offer, "-k", &key_b64, ip, port]));
        assert!(ok, "roughenough_client -P {offer}: {text}");
        let times: Vec<f64> =
            text.lines().filter_map(|l| l.split("roughenough_client: ").nth(1)?.trim().parse().ok()).collect();
        assert_eq!(times.len(), 4, "-P {offer}: {text}");
        let now = now_s();
        assert!(times.iter().all(|t| (t - now).abs() <= 3.0), "-P {offer}: {times:?} vs now {now}: {text}");
    }

    // Another Chronos takes this bridge as its one peer source.
    let mut b = Stack::prepare();
    let cfg = b.data().join("chronos.toml");
    let mut table: toml::Table = toml::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    let peer = toml::Value::Table(toml::toml! {
        name = "node-a" kind = "peer" address = (rt_addr.clone()) key = (key_b64.clone())
    });
    let mut time = toml::toml! { policy = "refuse" poll_ms = 300 timeout_ms = 250 max_distance_ms = 15_000 };
    time.insert("source".into(), toml::Value::Array(vec![peer]));
    table.insert("time".into(), toml::Value::Table(time));
    std::fs::write(&cfg, toml::to_string(&table).unwrap()).unwrap();
    b.launch(&[]);
    let r = b.post(&body("peer-time", 2, true).0, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let source: String = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(b.client().query_one("SELECT time_source FROM batches ORDER BY seq DESC LIMIT 1", &[]))
        .unwrap()
        .get(0);
    assert!(source.starts_with("quorum:"), "B's batch is stamped with the time A's bridge served: {source}");

    // A loses its quorum: its bridge answers no Roughtime request (no
    // signed time it cannot stand behind), counts the drops, and B,
    // whose only source it was, refuses writes.
    servers[0].silent.store(true, Ordering::Relaxed);
    servers[1].silent.store(true, Ordering::Relaxed);
    wait_time_synchronized(&a, &web, false);
    let (ok, text) =
        run(Command::new("/usr/local/bin/roughenough-client").args(["-t", "1", "-p", "14", "-k", &key_hex, ip, port]));
    assert!(!ok || text.contains("Timeout"), "no answer without quorum: {text}");
    let metrics = std::fs::read_to_string(a.data().join("run").join("bridge.metrics")).unwrap();
    let m = http(metrics.trim(), "GET", "/metrics", &[], b"").unwrap().body;
    assert!(m.contains("chronos_bridge_roughtime_dropped_total{reason=\"no_quorum\"}"), "{m}");
    assert!(m.contains("chronos_bridge_roughtime_dropped_total{reason=\"other_server\"} 1"), "{m}");
    wait_for(
        Duration::from_secs(30),
        "B refuses writes without its peer",
        || b.log(),
        || {
            let r = b.post(&body("no-peer", 1, true).0, &[]);
            (r.status == 503).then_some(())
        },
    );
    b.stop();
    a.stop();
    assert_eq!(b.verify()["status"], "intact");
}
