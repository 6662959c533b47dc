//! The bridge end to end, read by clients nobody here wrote: ntpdig
//! (ntpsec's sntp), ntpdate and chronyd for NTP; the `tlog_tiles` and
//! `signed_note` crates (Cloudflare's C2SP implementation) following the
//! log over HTTP; Python's `websockets` on `/v1/stream`.

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::pipeline::{Stack, body, http, wait_for};
use super::time::{FakeNtp, configure};

/// The bridge's HTTP address, once it has announced it.
pub(crate) fn bridge_http(s: &Stack) -> String {
    let file = s.data().join("run").join("bridge.http");
    wait_for(Duration::from_secs(30), "the bridge's address", || s.log(), || std::fs::read_to_string(&file).ok())
}

pub(crate) fn get_json(addr: &str, path: &str) -> (u16, serde_json::Value) {
    let r = http(addr, "GET", path, &[], b"").unwrap();
    let v = serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{path}: {e}: {}", r.body));
    (r.status, v)
}

/// `/v1/time` once it says `synchronized` is `want` (quorum gained or lost).
pub(crate) fn wait_time_synchronized(s: &Stack, web: &str, want: bool) -> serde_json::Value {
    let what = if want { "quorum time on /v1/time" } else { "quorum lost on /v1/time" };
    wait_for(
        Duration::from_secs(30),
        what,
        || s.log(),
        || {
            let (status, v) = get_json(web, "/v1/time");
            (status == 200 && v["synchronized"] == want).then_some(v)
        },
    )
}

/// A loopback address of its own for an NTP server on port 123, the only
/// port ntpdig and ntpdate ask (tests run side by side; 127/8 is all loopback).
fn loopback_123() -> String {
    let n = u64::from(std::process::id()) ^ SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos() as u64;
    format!("127.{}.{}.{}", 1 + n % 250, 1 + (n / 250) % 250, 1 + (n / 62_500) % 250)
}

pub(crate) fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// chronyd as a client that only measures (`-Q`): the offset it reports,
/// or `None` if it got no usable answer within 10 s.
fn chronyd_offset(server: &str, dir: &Path) -> (Option<f64>, String) {
    let (_, text) = run(Command::new("/usr/sbin/chronyd").args([
        "-Q",
        "-f",
        "/dev/null",
        "-t",
        "10",
        &format!("server {server} iburst maxsamples 4"),
        &format!("pidfile {}", dir.join("chronyd.pid").display()),
    ]));
    // "System clock wrong by -0.000012 seconds (ignored)"
    let offset = text.lines().find_map(|l| {
        let rest = l.split("System clock wrong by ").nth(1)?;
        rest.split_whitespace().next()?.parse::<f64>().ok()
    });
    (offset, text)
}

#[test]
fn ntp_clients_read_quorum_time_within_its_uncertainty_and_see_unsynchronized_without_quorum() {
    let servers = [FakeNtp::start(0), FakeNtp::start(0), FakeNtp::start(30_000)];
    let mut s = Stack::prepare();
    configure(&s, &servers, "accept");
    let ntp_ip = loopback_123();
    let ntp_addr = format!("{ntp_ip}:123");
    s.launch(&[("CHRONOS_BRIDGE_NTP_LISTEN", &ntp_addr), ("CHRONOS_BRIDGE_SIGN_TIME", "true")]);
    let web = bridge_http(&s);
    let served = wait_time_synchronized(&s, &web, true);
    assert!(served["source"].as_str().unwrap().starts_with("quorum:2/3:"), "{served:#}");
    super::spec::check("bridge/time", &served);
    let uncertainty_s = served["uncertainty_ns"].as_f64().unwrap() / 1e9;
    // The clients run on this host, whose clock the honest sources serve:
    // the offsets they measure are within the served uncertainty (plus
    // their own loopback round trip, well under 5 ms).
    let bound = uncertainty_s + 0.005;

    // ntpdig (ntpsec's SNTP client, installed as sntp too), JSON output.
    let (ok, text) = run(Command::new("ntpdig").args(["-j", "-t", "2", &ntp_ip]));
    assert!(ok, "ntpdig: {text}");
    let v: serde_json::Value = serde_json::from_str(text.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    assert_eq!(v["stratum"], 2, "{v}");
    assert_eq!(v["leap"], "no-leap", "{v}");
    assert!(v["offset"].as_f64().unwrap().abs() <= bound, "ntpdig offset {v} beyond ±{bound} s");

    // ntpdate -q: "... +0.000012 +/- 0.000345 127.x.y.z s2 no-leap".
    let (ok, text) = run(Command::new("ntpdate").args(["-q", "-t", "2", &ntp_ip]));
    assert!(ok, "ntpdate: {text}");
    let line = text.lines().find(|l| l.contains(" s2 no-leap")).unwrap_or_else(|| panic!("ntpdate: {text}"));
    let offset: f64 = line.split(") ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().parse().unwrap();
    assert!(offset.abs() <= bound, "ntpdate offset {offset} beyond ±{bound} s: {line}");

    // chronyd as a client.
    let (offset, text) = chronyd_offset(&ntp_ip, s.dir.path());
    let offset = offset.unwrap_or_else(|| panic!("chronyd measured nothing: {text}"));
    assert!(offset.abs() <= bound, "chronyd offset {offset} beyond ±{bound} s: {text}");

    // The statement /v1/time signs verifies with the log's key, checked by
    // an independent signed-note implementation.
    let (status, signed) = get_json(&web, "/v1/time?signed=true");
    assert_eq!(status, 200, "{signed:#}");
    super::spec::check("bridge/time", &signed);
    let vkey = std::fs::read_to_string(s.data().join("log.vkey")).unwrap();
    let verifier = signed_note::StandardVerifier::new(vkey.trim()).unwrap();
    let note = signed_note::Note::from_bytes(signed["note"].as_str().unwrap().as_bytes()).unwrap();
    note.verify(&signed_note::VerifierList::new(vec![Box::new(verifier.clone())])).expect("the signed time verifies");
    let text = String::from_utf8(note.text().to_vec()).unwrap();
    assert!(
        text.starts_with("chronos/time-statement@v1\n")
            && text.contains(&format!("earliest {}\n", signed["earliest_ns"])),
        "{text}"
    );
    // ... and a changed statement does not.
    let forged = signed["note"].as_str().unwrap().replace("earliest 1", "earliest 2");
    let forged = signed_note::Note::from_bytes(forged.as_bytes()).unwrap();
    assert!(forged.verify(&signed_note::VerifierList::new(vec![Box::new(verifier)])).is_err());

    // A client that asks too often is told RATE; malformed packets are dropped and counted.
    let sock = UdpSocket::bind(format!("{ntp_ip}:0")).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut request = [0u8; 48];
    request[0] = 0x23;
    let mut kisses = 0;
    for i in 0..40u64 {
        request[40..48].copy_from_slice(&(i + 1).to_be_bytes());
        sock.send_to(&request, &ntp_addr).unwrap();
        let mut buf = [0u8; 100];
        let (n, _) = sock.recv_from(&mut buf).unwrap();
        assert_eq!(n, 48, "answers are never longer than requests");
        assert_eq!(&buf[24..32], &(i + 1).to_be_bytes(), "the answer echoes the request");
        if buf[1] == 0 && &buf[12..16] == b"RATE" {
            kisses += 1;
        }
    }
    assert!(kisses >= 40 - 16 - 2, "a burst of 16 then about 2 a second: {kisses} of 40 kissed");
    sock.send_to(&[0x23; 20], &ntp_addr).unwrap();
    let metrics_addr = std::fs::read_to_string(s.data().join("run").join("bridge.metrics")).unwrap();
    wait_for(
        Duration::from_secs(10),
        "the short packet counted",
        || s.log(),
        || {
            let m = http(metrics_addr.trim(), "GET", "/metrics", &[], b"").unwrap().body;
            m.contains("chronos_bridge_ntp_dropped_total{reason=\"short\"} 1").then_some(())
        },
    );

    // Quorum lost: two of three sources silent. Every client sees
    // "unsynchronized" and takes no time from the bridge.
    servers[0].silent.store(true, Ordering::Relaxed);
    servers[1].silent.store(true, Ordering::Relaxed);
    let lost = wait_time_synchronized(&s, &web, false);
    assert!(lost["reason"].as_str().unwrap().contains("agree"), "{lost:#}");
    super::spec::check("bridge/time", &lost);
    std::thread::sleep(Duration::from_millis(100)); // let the loopback client's bucket refill a little
    // ntpdig checks the stratum (16: unsynchronized) before the leap indicator.
    let refused = |t: &str| {
        t.contains("no eligible servers") && (t.contains("stratum too high") || t.contains("leap not in sync"))
    };
    let (ok, text) = run(Command::new("ntpdig").args(["-j", "-t", "2", &ntp_ip]));
    assert!(!ok && refused(&text), "ntpdig without quorum: {text}");
    let (ok, text) = run(Command::new("ntpdate").args(["-q", "-t", "2", &ntp_ip]));
    assert!(!ok && refused(&text), "ntpdate without quorum: {text}");
    // What they refused: leap indicator 3 and stratum 16, read off the wire.
    let mut buf = [0u8; 48];
    request[40..48].copy_from_slice(&7u64.to_be_bytes());
    let fresh = UdpSocket::bind(format!("{ntp_ip}:0")).unwrap(); // a new client port, same address: still limited
    fresh.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let unsync = wait_for(
        Duration::from_secs(20),
        "an answer that is not a kiss",
        || s.log(),
        || {
            fresh.send_to(&request, &ntp_addr).unwrap();
            let (n, _) = fresh.recv_from(&mut buf).unwrap();
            (n == 48 && buf[1] != 0).then_some(buf)
        },
    );
    assert_eq!((unsync[0] >> 6, unsync[1]), (3, 16), "leap indicator 3, stratum 16");
    let (offset, text) = chronyd_offset(&ntp_ip, s.dir.path());
    assert!(
        offset.is_none() && (text.contains("No suitable source") || text.contains("Timeout reached")),
        "chronyd without quorum: {text}"
    );
    s.stop();
}

/// GET with the body as bytes (tiles are binary).
fn get_bytes(addr: &str, path: &str) -> (u16, String, Vec<u8>) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, raw[end + 4..].to_vec())
}

/// Tiles read over HTTP for the `tlog_tiles` client.
struct HttpTiles {
    addr: String,
}

impl tlog_tiles::TileReader for HttpTiles {
    fn height(&self) -> u8 {
        8
    }

    fn read_tiles(&self, tiles: &[tlog_tiles::Tile]) -> Result<Vec<Vec<u8>>, tlog_tiles::Error> {
        tiles
            .iter()
            .map(|t| {
                // tlog_tiles spells paths the Go sumdb way, tile/<H>/<L>/<N>;
                // C2SP tlog-tiles has no height element (it is always 8).
                let path = format!("/{}", t.path().replacen("tile/8/", "tile/", 1));
                let (status, head, body) = get_bytes(&self.addr, &path);
                assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
                assert!(head.contains("cache-control: public, max-age=31536000, immutable"), "{path}: {head}");
                Ok(body)
            })
            .collect()
    }

    fn save_tiles(&self, _: &[tlog_tiles::Tile], _: &[Vec<u8>]) {}
}

/// The log's checkpoint as an independent client reads it: the signed
/// note checked with `signed_note`, parsed with `tlog_tiles`.
fn follow_checkpoint(addr: &str, verifier: &signed_note::StandardVerifier) -> (tlog_tiles::Checkpoint, String) {
    let (status, head, body) = get_bytes(addr, "/checkpoint");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(head.contains("cache-control: no-cache"), "{head}");
    let note = signed_note::Note::from_bytes(&body).unwrap();
    note.verify(&signed_note::VerifierList::new(vec![Box::new(verifier.clone())])).expect("the checkpoint's signature");
    (tlog_tiles::Checkpoint::from_bytes(note.text()).unwrap(), String::from_utf8(body).unwrap())
}

/// Entries of bundle `n` (`width` of them), from their 16-bit length prefixes.
fn bundle(addr: &str, n: u64, width: u64) -> Vec<Vec<u8>> {
    let t = tlog_tiles::Tile::new(8, 0, n, width as u32, true);
    let path = format!("/{}", t.path().replacen("tile/8/data/", "tile/entries/", 1));
    let (status, _, body) = get_bytes(addr, &path);
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    let mut out = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let len = u16::from_be_bytes([body[at], body[at + 1]]) as usize;
        out.push(body[at + 2..at + 2 + len].to_vec());
        at += 2 + len;
    }
    assert_eq!(out.len() as u64, width, "{path}");
    out
}

#[test]
fn an_independent_c2sp_client_follows_the_log_over_tiles_and_a_websocket_client_gets_every_checkpoint() {
    let mut s = Stack::start(&[("CHRONOS_PIPELINE_CHECKPOINT_INTERVAL_MS", "200")]);
    let web = bridge_http(&s);
    wait_for(
        Duration::from_secs(30),
        "a first checkpoint served",
        || s.log(),
        || (http(&web, "GET", "/readyz", &[], b"").ok()?.status == 200).then_some(()),
    );
    let vkey_text = std::fs::read_to_string(s.data().join("log.vkey")).unwrap();
    let verifier = signed_note::StandardVerifier::new(vkey_text.trim()).unwrap();
    const ROUNDS: u64 = 7;
    const PER_ROUND: u64 = 100;

    // A WebSocket client (Python's websockets) that prints every message
    // until it has seen a time tick and the checkpoint of the whole log.
    let script = r#"
import json, sys
from websockets.sync.client import connect
seen_time = False
with connect(sys.argv[1], open_timeout=10) as ws:
    while True:
        m = json.loads(ws.recv(timeout=60))
        print(json.dumps(m), flush=True)
        seen_time = seen_time or m["type"] == "time"
        if seen_time and m["type"] == "checkpoint" and m["tree_size"] >= int(sys.argv[2]):
            break
"#;
    let ws_client = Command::new("python3")
        .args(["-c", script, &format!("ws://{web}/v1/stream"), &(ROUNDS * PER_ROUND).to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    let tiles = HttpTiles { addr: web.clone() };
    let mut prev: Option<tlog_tiles::Checkpoint> = None;
    let mut first_size = 0;
    for round in 1..=ROUNDS {
        let (b, _) = body(&format!("round-{round}"), PER_ROUND as usize, true);
        let ack = s.post(&b, &[]);
        assert_eq!(ack.status, 200);
        super::spec::check("ingest/ack", &serde_json::from_str(&ack.body).unwrap());
        let (cp, _) = wait_for(
            Duration::from_secs(30),
            "a checkpoint of every leaf",
            || s.log(),
            || {
                let (cp, note) = follow_checkpoint(&web, &verifier);
                (cp.size() == round * PER_ROUND).then_some((cp, note))
            },
        );
        // Each new checkpoint extends the last one: the consistency proof is
        // built from tiles by tlog_tiles (which authenticates every tile it
        // reads against the new tree's hash) and checked by it.
        if let Some(old) = &prev {
            let reader = tlog_tiles::TileHashReader::new(cp.size(), *cp.hash(), &tiles);
            let proof = tlog_tiles::prove_tree(cp.size(), old.size(), &reader).unwrap();
            tlog_tiles::check_tree(&proof, cp.size(), *cp.hash(), old.size(), *old.hash()).unwrap();
        } else {
            first_size = cp.size();
        }
        prev = Some(cp);
    }
    let refused = s.post(b"{\"a\":1}\nnot json\n", &[]);
    assert_eq!(refused.status, 400, "{}", refused.body);
    super::spec::check("ingest/error", &serde_json::from_str(&refused.body).unwrap());
    let head = prev.unwrap();
    let size = head.size();
    let reader = tlog_tiles::TileHashReader::new(size, *head.hash(), &tiles);

    // Every entry bundle holds the stored events, each hashing to its leaf.
    let stored = s.events();
    let mut entries = Vec::new();
    for n in 0..size.div_ceil(256) {
        entries.extend(bundle(&web, n, (size - n * 256).min(256)));
    }
    assert_eq!(entries, stored, "the entry bundles hold the log's events");
    let indexes: Vec<u64> = (0..size).map(|i| tlog_tiles::stored_hash_index(0, i)).collect();
    let leaf_hashes = tlog_tiles::HashReader::read_hashes(&reader, &indexes).unwrap();
    for (i, (e, h)) in entries.iter().zip(&leaf_hashes).enumerate() {
        assert_eq!(tlog_tiles::record_hash(e), *h, "leaf {i}");
    }
    // One inclusion proof, made and checked by tlog_tiles.
    let leaf = 300;
    let proof = tlog_tiles::prove_record(size, leaf, &reader).unwrap();
    tlog_tiles::check_record(&proof, size, *head.hash(), leaf, tlog_tiles::record_hash(&entries[leaf as usize]))
        .unwrap();

    // The bridge's own proofs: the inclusion proof file `chronos verify-proof`
    // accepts, and a consistency proof tlog_tiles accepts.
    let (status, inc) = get_json(&web, &format!("/v1/proof/inclusion?leaf={leaf}"));
    assert_eq!(status, 200, "{inc:#}");
    super::spec::check("bridge/inclusion", &inc);
    let (_, cp_json) = get_json(&web, "/v1/checkpoint");
    super::spec::check("bridge/checkpoint", &cp_json);
    let file = s.dir.path().join("leaf.tlog-proof");
    std::fs::write(&file, inc["proof"].as_str().unwrap()).unwrap();
    let event = s.dir.path().join("leaf.json");
    std::fs::write(&event, &entries[leaf as usize]).unwrap();
    let vkey = s.data().join("log.vkey");
    let out = super::chronos(
        &["verify-proof", file.to_str().unwrap(), "--key", vkey.to_str().unwrap(), "--event", event.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "verify-proof: {}", String::from_utf8_lossy(&out.stderr));
    let (status, cons) = get_json(&web, &format!("/v1/proof/consistency?old={first_size}"));
    assert_eq!(status, 200, "{cons:#}");
    super::spec::check("bridge/consistency", &cons);
    let (_, from_empty) = get_json(&web, "/v1/proof/consistency?old=0");
    super::spec::check("bridge/consistency", &from_empty);
    let hashes: Vec<tlog_tiles::Hash> = cons["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| tlog_tiles::Hash::parse_hash(h.as_str().unwrap()).unwrap())
        .collect();
    let old_root = tlog_tiles::Hash::parse_hash(cons["old_root"].as_str().unwrap()).unwrap();
    tlog_tiles::check_tree(&hashes, size, *head.hash(), first_size, old_root).unwrap();
    // The event itself, with its leaf hash.
    let r = http(&web, "GET", &format!("/v1/events/{leaf}"), &[], b"").unwrap();
    assert_eq!((r.status, r.body.as_bytes()), (200, &entries[leaf as usize][..]));
    assert_eq!(r.headers["chronos-leaf-hash"], hex::encode(leaf_hashes[leaf as usize].0));
    // Wrong requests say what is wrong.
    for (path, status) in [
        ("/v1/proof/inclusion?leaf=999999", 404),
        ("/v1/proof/inclusion?leaf=1&hash=00", 400),
        ("/v1/proof/consistency?old=5&new=3", 400),
        ("/tile/0/x000/001", 400),
        ("/tile/0/x999/000", 404),
        ("/v1/events/abc", 400),
    ] {
        let (got, v) = get_json(&web, path);
        assert_eq!(got, status, "{path}: {v}");
        super::spec::check("bridge/error", &v);
    }

    // The WebSocket client saw a time tick and every checkpoint it was
    // connected for, each verifying with the log's key, in order.
    let out = ws_client.wait_with_output().unwrap();
    assert!(out.status.success(), "websocket client: {}", String::from_utf8_lossy(&out.stderr));
    let messages: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut sizes = Vec::new();
    for m in &messages {
        super::spec::check("bridge/stream", m);
        match m["type"].as_str().unwrap() {
            "time" => assert!(m["earliest_ns"].as_u64().unwrap() <= m["latest_ns"].as_u64().unwrap(), "{m}"),
            "checkpoint" => {
                let note = signed_note::Note::from_bytes(m["note"].as_str().unwrap().as_bytes()).unwrap();
                note.verify(&signed_note::VerifierList::new(vec![Box::new(verifier.clone())])).unwrap();
                let cp = tlog_tiles::Checkpoint::from_bytes(note.text()).unwrap();
                assert_eq!(cp.size(), m["tree_size"].as_u64().unwrap());
                sizes.push(cp.size());
            }
            other => panic!("unexpected message type {other}: {m}"),
        }
    }
    assert!(sizes.windows(2).all(|w| w[0] < w[1]), "checkpoints in order, each once: {sizes:?}");
    for round in 1..=ROUNDS {
        assert!(
            sizes.contains(&(round * PER_ROUND)),
            "the checkpoint of size {} streamed: {sizes:?}",
            round * PER_ROUND
        );
    }
    // The bridge killed: `up` restarts it, and it serves the same log again
    // (it has no state of its own to lose).
    let pid = s.pid("bridge");
    super::pipeline::sigkill(pid);
    let again = wait_for(
        Duration::from_secs(30),
        "the bridge restarted and serving",
        || s.log(),
        || {
            let new_pid: i32 =
                std::fs::read_to_string(s.data().join("run").join("bridge.pid")).ok()?.trim().parse().ok()?;
            if new_pid == pid {
                return None;
            }
            let web = std::fs::read_to_string(s.data().join("run").join("bridge.http")).ok()?;
            let r = http(web.trim(), "GET", "/v1/checkpoint", &[], b"").ok()?;
            (r.status == 200).then(|| serde_json::from_str::<serde_json::Value>(&r.body).ok()).flatten()
        },
    );
    assert_eq!(again["tree_size"], size, "{again}");
    s.check_ledger();
    s.stop();
}
