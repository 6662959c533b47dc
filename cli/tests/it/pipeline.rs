//! The whole pipeline as real processes (`chronos up`) on a real
//! PostgreSQL: end to end, every error answer, SIGKILL of each service
//! under load, and a PostgreSQL crash under load.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chronos_pg_harness::PgCluster;

/// A minimal HTTP/1.1 client (one request per connection), so the tests
/// see exactly the status, headers and body the server sends.
pub struct Reply {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<Reply> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {head:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Reply { status, headers, body: body.to_owned() })
}

/// A running `chronos up` on a test cluster.
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub pg: PgCluster,
    pub url: String,
    pub up: Option<Child>,
    pub addr: String,
    pub stdout: PathBuf,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `f` every 20 ms until it returns `Some`, failing after `within`.
pub fn wait_for<T>(within: Duration, what: &str, log: impl Fn() -> String, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}; log:\n{}", log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `chronos up` a test started by hand: stopped (SIGTERM, then SIGKILL
/// after 30 s) when dropped, so that a failing test leaks no process tree.
pub struct Up(pub Child);

impl std::ops::Deref for Up {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Up {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_some() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `chronos up` on `data` with the tests' settings, its output to `log`.
pub fn up_command(
    data: &std::path::Path,
    url: &str,
    addr: &str,
    log: &std::path::Path,
    env: &[(&str, &str)],
) -> Command {
    let log = std::fs::File::create(log).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_chronos"));
    c.args(["up", "--data-dir", data.to_str().unwrap(), "--database-url", url, "--listen", addr]);
    // Two hashers unless the test sets them (a flag would override it).
    if !env.iter().any(|(k, _)| *k == "CHRONOS_PIPELINE_HASHERS") {
        c.args(["--hashers", "2"]);
    }
    c.env_remove("CHRONOS_DATA_DIR")
        .env_remove("CHRONOS_FAULTS")
        .env("CHRONOS_METRICS_LISTEN", "127.0.0.1:0")
        // Tests run side by side: the bridge on free ports (run/bridge.http, .grpc, .ntp, .roughtime).
        .env("CHRONOS_BRIDGE_LISTEN", "127.0.0.1:0")
        .env("CHRONOS_BRIDGE_NTP_LISTEN", "127.0.0.1:0")
        .env("CHRONOS_BRIDGE_ROUGHTIME_LISTEN", "127.0.0.1:0")
        .env("CHRONOS_BRIDGE_GRPC_LISTEN", "127.0.0.1:0")
        .env("CHRONOS_INGEST_ACK_TIMEOUT_MS", "5000")
        .env("RUST_LOG", "info,tokio_postgres=warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    // Its own process group, as a shell gives a foreground job: a test can
    // signal the group the way a terminal's Ctrl-C does.
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

impl Stack {
    pub fn start(env: &[(&str, &str)]) -> Stack {
        let mut s = Stack::prepare();
        s.launch(env);
        s
    }

    /// A log created (`chronos init`) on its own PostgreSQL, not yet up.
    pub fn prepare() -> Stack {
        let pg = PgCluster::start().unwrap();
        let url = pg.url("postgres");
        let dir = tempfile::Builder::new().prefix("chronos-it-").tempdir_in("/tmp").unwrap();
        let data = dir.path().join("data");
        let out =
            super::chronos(&["init", "--data-dir", data.to_str().unwrap(), "--origin", "test.example/pipeline"], &[]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let addr = format!("127.0.0.1:{}", free_port());
        let stdout = dir.path().join("up.log");
        Stack { dir, pg, url, up: None, addr, stdout }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn launch(&mut self, env: &[(&str, &str)]) {
        self.spawn_up(env);
        self.wait_ready(Duration::from_secs(60));
    }

    pub fn spawn_up(&mut self, env: &[(&str, &str)]) {
        self.up = Some(up_command(&self.data(), &self.url, &self.addr, &self.stdout, env).spawn().unwrap());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Waits until every ingest process is ready. Each process learns on
    /// its own that the pipeline is ready, and the kernel spreads
    /// connections over them (they accept on one socket), so one 200 from /readyz says
    /// little with several processes: 20 in a row, each on a new
    /// connection, leave one process unasked with odds below 1e-5.
    pub fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        let mut in_a_row = 0;
        loop {
            if let Some(status) = self.up.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("chronos up exited with {status}; log:\n{}", self.log());
            }
            match http(&self.addr, "GET", "/readyz", &[], b"") {
                Ok(r) if r.status == 200 => in_a_row += 1,
                _ => in_a_row = 0,
            }
            if in_a_row == 20 {
                return;
            }
            if in_a_row > 0 {
                continue;
            }
            assert!(Instant::now() < deadline, "not ready within {within:?}; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn post(&self, body: &[u8], headers: &[(&str, &str)]) -> Reply {
        http(&self.addr, "POST", "/ingest", headers, body).unwrap()
    }

    pub fn get(&self, path: &str) -> Reply {
        http(&self.addr, "GET", path, &[], b"").unwrap()
    }

    pub fn pid(&self, name: &str) -> i32 {
        std::fs::read_to_string(self.data().join("run").join(format!("{name}.pid"))).unwrap().trim().parse().unwrap()
    }

    /// SIGTERM to `chronos up`, and wait for it (everything stops in order).
    pub fn stop(&mut self) {
        let mut up = self.up.take().unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(up.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = up.wait().unwrap();
        assert!(status.success(), "chronos up exited with {status}; log:\n{}", self.log());
    }

    pub fn client(&self) -> tokio_postgres::Client {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let url = self.url.clone();
        let (client, conn) = rt.block_on(tokio_postgres::connect(&url, tokio_postgres::NoTls)).unwrap();
        std::thread::spawn(move || {
            let _ = rt.block_on(conn);
        });
        client
    }

    /// Checks the ledger with `chronos verify` (the oracle: every leaf hash,
    /// batch root, chain link, the global tree at every signed checkpoint,
    /// every signature against the key `init` wrote, and every `logs` row
    /// against the batches), requires the newest signed checkpoint to cover
    /// every leaf, and returns every event in leaf order.
    pub fn check_ledger(&self) -> Vec<Vec<u8>> {
        let report = self.verify();
        assert_eq!(report["status"], "intact", "chronos verify: {report:#}");
        assert_eq!(report["summary"]["unsigned_leaves"], 0, "the final checkpoint covers every leaf: {report:#}");
        self.events()
    }

    /// `chronos verify --json` with the log's own verifier key: the report.
    pub fn verify(&self) -> serde_json::Value {
        let vkey = std::fs::read_to_string(self.data().join("log.vkey")).unwrap();
        let out = super::chronos(&["verify", "--database-url", &self.url, "--key", vkey.trim(), "--json"], &[]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("verify printed no JSON ({e}), {}: {}", out.status, String::from_utf8_lossy(&out.stderr))
        })
    }

    /// Every stored event, in leaf order.
    pub fn events(&self) -> Vec<Vec<u8>> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let rows =
            rt.block_on(self.client().query("SELECT leaf_index, event FROM logs ORDER BY leaf_index", &[])).unwrap();
        rows.iter()
            .enumerate()
            .map(|(i, r)| {
                assert_eq!(r.get::<_, i64>(0), i as i64, "logs rows are dense");
                r.get(1)
            })
            .collect()
    }
}

impl Drop for Stack {
    /// After a failed test: stop `chronos up` (SIGTERM, SIGKILL after 60 s),
    /// then remove this instance's rings, which a killed run leaves behind.
    fn drop(&mut self) {
        if let Some(mut up) = self.up.take() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(up.id() as i32), nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(60);
            while up.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = up.kill();
            let _ = up.wait();
        }
        remove_rings(&self.data());
    }
}

/// Deletes the shared-memory rings of the instance in `data`.
pub fn remove_rings(data: &std::path::Path) {
    let instance = chronos_wire::instance_id(data);
    for e in std::fs::read_dir("/dev/shm").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("chronos-{instance}-")) || name == format!("chronos-clock-{instance}") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

pub fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// A body of `n` events with ids `tag-0..n`, some padded towards 64 KiB.
pub fn body(tag: &str, n: usize, ndjson: bool) -> (Vec<u8>, Vec<Vec<u8>>) {
    let events: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let pad = match i % 97 {
                0 => 60_000,
                1..=3 => 4_000,
                _ => (i * 37) % 300,
            };
            format!(
                "{{\"id\":\"{tag}-{i}\",\"timestamp\":\"2026-11-21T10:00:{:02}Z\",\"pad\":\"{}\"}}",
                i % 60,
                "x".repeat(pad)
            )
            .into_bytes()
        })
        .collect();
    let body = if ndjson {
        events.iter().flat_map(|e| e.iter().copied().chain([b'\n'])).collect()
    } else {
        let mut b = b"[".to_vec();
        for (i, e) in events.iter().enumerate() {
            if i > 0 {
                b.extend_from_slice(b",\n  ");
            }
            b.extend_from_slice(e);
        }
        b.push(b']');
        b
    };
    (body, events)
}

pub fn json_u64(body: &str, key: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{body:?}: {e}"));
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {body}"))
}

#[test]
fn events_are_committed_exactly_once_in_order_with_a_valid_chain_tree_and_checkpoint() {
    // Two ingest processes share the port; the kernel spreads connections.
    let mut s = Stack::start(&[("CHRONOS_INGEST_PROCESSES", "2")]);
    let mut expected: Vec<(u64, Vec<Vec<u8>>)> = Vec::new();
    for r in 0..30 {
        let (raw, events) = body(&format!("r{r}"), 50 + r * 7, r % 3 == 1);
        let (payload, mut headers) = match r % 3 {
            0 => (raw, vec![("content-type", "application/json")]),
            1 => (raw, vec![("content-type", "application/x-ndjson")]),
            _ => (gzip(&raw), vec![("content-type", "application/json"), ("content-encoding", "gzip")]),
        };
        if r == 5 {
            headers.retain(|(k, _)| *k != "content-type"); // sniffed
        }
        let reply = s.post(&payload, &headers);
        assert_eq!(reply.status, 200, "request {r}: {}", reply.body);
        assert_eq!(json_u64(&reply.body, "leaf_count"), events.len() as u64);
        expected.push((json_u64(&reply.body, "first_leaf"), events));
    }
    s.stop();
    let stored = s.check_ledger();
    let total: usize = expected.iter().map(|e| e.1.len()).sum();
    assert!(total > 2000, "{total} events");
    assert_eq!(stored.len(), total, "every event exactly once");
    for (first, events) in &expected {
        for (i, e) in events.iter().enumerate() {
            assert_eq!(&stored[*first as usize + i], e, "event {i} of the batch at {first}");
        }
    }
    assert!(s.log().contains("Chronos is up"), "{}", s.log());
}

#[test]
fn every_error_answer_names_the_problem_and_stores_nothing() {
    let mut s = Stack::start(&[("CHRONOS_INGEST_TOKEN", "s3cret"), ("CHRONOS_INGEST_MAX_BODY_BYTES", "100000")]);
    let auth = ("authorization", "Bearer s3cret");
    let json = ("content-type", "application/json");
    // Health checks as Vector does them.
    assert_eq!(http(&s.addr, "HEAD", "/ingest", &[], b"").unwrap().status, 200);
    assert_eq!(http(&s.addr, "GET", "/healthz", &[], b"").unwrap().status, 200);
    // 401 without or with a wrong token.
    let r = s.post(b"[{}]", &[json]);
    assert_eq!(r.status, 401);
    assert_eq!(r.headers.get("www-authenticate").map(String::as_str), Some("Bearer"));
    assert_eq!(s.post(b"[{}]", &[json, ("authorization", "Bearer nope!")]).status, 401);
    // 400 with the event's index.
    for (body, index, what) in [
        (&b"[{\"a\":1}, 5]"[..], Some(1), "not a JSON object"),
        (&b"[{\"a\":1}, {\"b\":"[..], Some(1), "event 1"),
        (&b"{\"a\":1}\n\n{\"b\":2}\n"[..], Some(1), "event 1"),
        (&b"[{\"a\":\"\xff\"}]"[..], Some(0), "event 0"),
        (&b"[]"[..], None, "no events"),
    ] {
        let ct = if body.starts_with(b"{") { ("content-type", "application/x-ndjson") } else { json };
        let r = s.post(body, &[auth, ct]);
        assert_eq!(r.status, 400, "{:?}: {}", String::from_utf8_lossy(body), r.body);
        assert!(r.body.contains(what), "{}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["event_index"].as_u64(), index.map(|i| i as u64), "{}", r.body);
    }
    // 413: a body over the limit, and a small gzip bomb.
    let (big, _) = body("big", 200, false);
    assert!(big.len() > 100_000);
    assert_eq!(s.post(&big, &[auth, json]).status, 413);
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(&vec![b' '; 20 << 20]).unwrap();
    let bomb = e.finish().unwrap();
    assert!(bomb.len() < 100_000);
    let r = s.post(&bomb, &[auth, json, ("content-encoding", "gzip")]);
    assert_eq!(r.status, 413, "{}", r.body);
    // 415.
    assert_eq!(s.post(b"[{}]", &[auth, json, ("content-encoding", "br")]).status, 415);
    // The same body twice: the first answer again, stored once.
    let (b, events) = body("dup", 10, true);
    let nd = ("content-type", "application/x-ndjson");
    let first = s.post(&b, &[auth, nd]);
    assert_eq!(first.status, 200, "{}", first.body);
    let again = s.post(&b, &[auth, nd]);
    assert_eq!(again.status, 200);
    assert_eq!(again.body, first.body);
    assert_eq!(again.headers.get("chronos-replay").map(String::as_str), Some("true"));
    let mut expected = events;
    // Other methods on /ingest: 405 naming the allowed ones.
    let r = http(&s.addr, "GET", "/ingest", &[], b"").unwrap();
    assert_eq!(r.status, 405);
    let allow = r.headers.get("allow").cloned().unwrap_or_default();
    assert!(allow.contains("POST") && allow.contains("HEAD"), "Allow: {allow:?}");
    // The auth scheme is case-insensitive; blank lines after the last
    // NDJSON event end the body.
    let (b, events) = body("upper", 3, true);
    let mut trailing = b.clone();
    trailing.extend_from_slice(b"\n\r\n  \n");
    let r = s.post(&trailing, &[("authorization", "BEARER s3cret"), nd]);
    assert_eq!(r.status, 200, "{}", r.body);
    expected.extend(events);
    // A client that shuts its sending side once the request is out still
    // gets the answer.
    let (b, events) = body("half-closed", 3, true);
    let mut c = TcpStream::connect(&s.addr).unwrap();
    let head = format!(
        "POST /ingest HTTP/1.1\r\nhost: x\r\nauthorization: Bearer s3cret\r\ncontent-type: application/x-ndjson\r\ncontent-length: {}\r\n\r\n",
        b.len()
    );
    c.write_all(head.as_bytes()).unwrap();
    c.write_all(&b).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).unwrap();
    assert!(raw.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&raw));
    expected.extend(events);
    s.stop();
    let stored = s.check_ledger();
    assert_eq!(stored, expected, "only the accepted bodies, once each");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let keys: i64 = rt.block_on(s.client().query_one("SELECT count(*) FROM ingest_keys", &[])).unwrap().get(0);
    assert_eq!(keys, 3);
}

/// Acknowledged bodies: the answered first leaf, and the body's events.
pub type Acked = Vec<(u64, Vec<Vec<u8>>)>;

/// Sends unique bodies from `threads` clients, retrying each (same bytes)
/// until it is acknowledged, as Vector does; records every answer.
pub struct Load {
    stop: Arc<AtomicBool>,
    /// Set: a body not acknowledged yet is given up (its instance is gone).
    give_up: Arc<AtomicBool>,
    acked: Arc<Mutex<Acked>>,
    unavailable: Arc<Mutex<u64>>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(addr: &str, threads: usize) -> Load {
        Load::named(addr, threads, "t")
    }

    /// As [`Load::start`], with body ids starting with `name` (unique
    /// across several loads).
    pub fn named(addr: &str, threads: usize, name: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let give_up = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let unavailable = Arc::new(Mutex::new(0));
        let handles = (0..threads)
            .map(|t| {
                let (stop, give_up, acked, unavailable, addr) =
                    (stop.clone(), give_up.clone(), acked.clone(), unavailable.clone(), addr.to_owned());
                let name = name.to_owned();
                std::thread::spawn(move || {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let ndjson = n % 2 == 0;
                        let (b, events) = body(&format!("{name}{t}-{n}"), 20 + (n % 5) * 10, ndjson);
                        let ct = if ndjson { "application/x-ndjson" } else { "application/json" };
                        n += 1;
                        let deadline = Instant::now() + Duration::from_secs(120);
                        while !give_up.load(Ordering::Relaxed) {
                            assert!(Instant::now() < deadline, "a body was not acknowledged within 120 s");
                            match http(&addr, "POST", "/ingest", &[("content-type", ct)], &b) {
                                Ok(r) if r.status == 200 => {
                                    acked.lock().unwrap().push((json_u64(&r.body, "first_leaf"), events));
                                    break;
                                }
                                Ok(r) if r.status == 503 => {
                                    assert!(r.headers.contains_key("retry-after"), "503 without Retry-After");
                                    *unavailable.lock().unwrap() += 1;
                                    std::thread::sleep(Duration::from_millis(50));
                                }
                                Ok(r) => panic!("unexpected answer {}: {}", r.status, r.body),
                                Err(_) => std::thread::sleep(Duration::from_millis(50)),
                            }
                        }
                    }
                })
            })
            .collect();
        Load { stop, give_up, acked, unavailable, handles }
    }

    pub fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until `n` more bodies are acknowledged.
    pub fn progress(&self, n: usize, within: Duration, log: impl Fn() -> String) {
        let want = self.acked() + n;
        let deadline = Instant::now() + within;
        while self.acked() < want {
            assert!(Instant::now() < deadline, "no progress within {within:?}; log:\n{}", log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops sending; bodies not acknowledged yet are given up.
    pub fn abandon(self) -> Acked {
        self.give_up.store(true, Ordering::Relaxed);
        self.finish().0
    }

    pub fn finish(self) -> (Acked, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            h.join().unwrap();
        }
        let acked = std::mem::take(&mut *self.acked.lock().unwrap());
        let unavailable = *self.unavailable.lock().unwrap();
        (acked, unavailable)
    }
}

/// Every acknowledged body is stored at its answered range, byte-exact,
/// and nothing else is stored (each body was retried until acknowledged).
pub fn check_acked(stored: &[Vec<u8>], acked: &[(u64, Vec<Vec<u8>>)]) {
    for (first, events) in acked {
        for (i, e) in events.iter().enumerate() {
            let at = *first as usize + i;
            assert!(at < stored.len(), "acknowledged leaf {at} is missing");
            assert_eq!(&stored[at], e, "leaf {at}");
        }
    }
    let total: usize = acked.iter().map(|a| a.1.len()).sum();
    // The log's own control records (mode changes during an outage, for
    // example) are leaves too; every other leaf was acknowledged.
    let events = stored.iter().filter(|e| !chronos_control::record::is_control(e)).count();
    assert_eq!(events, total, "stored events = acknowledged events (no duplicates, no strays)");
}

pub fn sigkill(pid: i32) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
}

#[test]
fn sigkill_of_each_service_under_load_loses_and_duplicates_nothing() {
    let mut s = Stack::start(&[]);
    let load = Load::start(&s.addr, 3);
    load.progress(20, Duration::from_secs(60), || s.log());
    for round in 0..3 {
        for name in ["vault-writer", "hasher-0", "orchestrator", "ingest-0"] {
            let old = s.pid(name);
            sigkill(old);
            // The supervisor restarts it; the load keeps going.
            let deadline = Instant::now() + Duration::from_secs(30);
            while s.pid(name) == old {
                assert!(Instant::now() < deadline, "{name} was not restarted; log:\n{}", s.log());
                std::thread::sleep(Duration::from_millis(20));
            }
            load.progress(10, Duration::from_secs(90), || s.log());
            eprintln!("round {round}: killed {name} (pid {old}); {} bodies acknowledged", load.acked());
        }
    }
    let (acked, _) = load.finish();
    s.stop();
    let stored = s.check_ledger();
    check_acked(&stored, &acked);
    assert!(s.log().matches("restarting").count() >= 12, "{}", s.log());
}

#[test]
fn a_postgres_crash_under_load_gets_503s_then_a_rebuilt_logs_table_and_nothing_lost() {
    let mut s = Stack::start(&[]);
    let load = Load::start(&s.addr, 3);
    load.progress(20, Duration::from_secs(60), || s.log());
    s.pg.crash().unwrap();
    // Once ingest has heard that the database is down, it says so at once.
    let deadline = Instant::now() + Duration::from_secs(30);
    let r = loop {
        let r = s.get("/readyz");
        if r.status == 503 && r.body.contains("PostgreSQL is unreachable") {
            break s.post(b"{\"during\":\"outage\"}\n", &[("content-type", "application/x-ndjson")]);
        }
        assert!(Instant::now() < deadline, "ingest never noticed the outage: {} {}", r.status, r.body);
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.headers.contains_key("retry-after"));
    s.pg.restart().unwrap();
    load.progress(20, Duration::from_secs(90), || s.log());
    let (acked, unavailable) = load.finish();
    assert!(unavailable > 0, "clients saw 503s during the outage");
    s.stop();
    assert!(s.log().contains("logs table rebuilt"), "{}", s.log());
    let stored = s.check_ledger();
    check_acked(&stored, &acked);
}

#[test]
fn up_runs_an_embedded_postgres_when_no_url_is_given() {
    let dir = tempfile::Builder::new().prefix("chronos-embedded-").tempdir_in("/tmp").unwrap();
    let data = dir.path().join("data");
    let out = super::chronos(&["init", "--data-dir", data.to_str().unwrap(), "--origin", "test.example/embedded"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let addr = format!("127.0.0.1:{}", free_port());
    let log_path = dir.path().join("up.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut up = Command::new(env!("CARGO_BIN_EXE_chronos"))
        .args(["up", "--data-dir", data.to_str().unwrap(), "--listen", &addr, "--hashers", "1"])
        .env("CHRONOS_METRICS_LISTEN", "127.0.0.1:0")
        // Tests run side by side: the bridge on free ports (run/bridge.http, .grpc, .ntp, .roughtime).
        .env("CHRONOS_BRIDGE_LISTEN", "127.0.0.1:0")
        .env("CHRONOS_BRIDGE_NTP_LISTEN", "127.0.0.1:0")
        .env("CHRONOS_BRIDGE_ROUGHTIME_LISTEN", "127.0.0.1:0")
        .env("CHRONOS_BRIDGE_GRPC_LISTEN", "127.0.0.1:0")
        .env_remove("CHRONOS_DATABASE_URL")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(90);
    while http(&addr, "GET", "/readyz", &[], b"").map(|r| r.status).ok() != Some(200) {
        assert!(Instant::now() < deadline, "not ready; log:\n{}", read_log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let r =
        http(&addr, "POST", "/ingest", &[("content-type", "application/x-ndjson")], b"{\"m\":1}\n{\"m\":2}\n").unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json_u64(&r.body, "end_leaf"), 2);
    let metrics = http(&addr, "GET", "/metrics", &[], b"").unwrap();
    assert!(metrics.body.contains("chronos_ingest_events_total 2"), "{}", metrics.body);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(up.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(up.wait().unwrap().success(), "{}", read_log());
    assert!(data.join("pg/PG_VERSION").exists());
    // Every process and the cluster are gone, and no ring is left behind.
    let instance = chronos_wire::instance_id(&data);
    let left: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(&instance))
        .collect();
    assert!(left.is_empty(), "rings left: {left:?}");
    assert!(!data.join("pg/postmaster.pid").exists(), "PostgreSQL still running");
}

#[test]
fn a_database_rolled_back_behind_its_signed_checkpoint_is_refused_with_an_audit_event() {
    let mut s = Stack::start(&[]);
    for r in 0..3 {
        let (b, _) = body(&format!("rb{r}"), 5, true);
        assert_eq!(s.post(&b, &[("content-type", "application/x-ndjson")]).status, 200);
    }
    s.stop();
    s.check_ledger();
    // Someone with database access drops the newest batch.
    s.pg.psql(
        "postgres",
        "DELETE FROM logs WHERE batch_seq = (SELECT max(seq) FROM batches); \
                           DELETE FROM batches WHERE seq = (SELECT max(seq) FROM batches)",
    )
    .unwrap();
    s.spawn_up(&[]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = s.client();
    let deadline = Instant::now() + Duration::from_secs(60);
    let detail: String = loop {
        let row = rt
            .block_on(
                client
                    .query_opt("SELECT detail::text FROM audit_events WHERE kind = 'checkpoint_mismatch' LIMIT 1", &[]),
            )
            .unwrap();
        if let Some(r) = row {
            break r.get(0);
        }
        assert!(Instant::now() < deadline, "no audit event; log:\n{}", s.log());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(detail.contains("rolled back"), "{detail}");
    // Nothing is accepted: ingest answers 503, naming the reason.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = s.post(b"{\"after\":1}\n", &[("content-type", "application/x-ndjson")]);
        assert_eq!(r.status, 503, "{}", r.body);
        if r.body.contains("refusing to write: the database was rolled back") {
            break;
        }
        assert!(Instant::now() < deadline, "{}", r.body);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(s.log().contains("refusing to sequence"), "{}", s.log());
}

#[test]
fn a_stalled_pipeline_answers_503_with_retry_after_and_loses_nothing() {
    // Small bodies make small rings (256 KiB), which a stalled hasher fills fast.
    let mut s = Stack::start(&[
        ("CHRONOS_INGEST_MAX_DECODED_BYTES", "65536"),
        ("CHRONOS_INGEST_MAX_EVENT_BYTES", "16384"),
        ("CHRONOS_INGEST_MAX_EVENTS", "1024"),
    ]);
    let hashers = [s.pid("hasher-0"), s.pid("hasher-1")];
    let signal = |sig| {
        for pid in hashers {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
        }
    };
    let ndjson =
        |events: &[Vec<u8>]| -> Vec<u8> { events.iter().flat_map(|e| e.iter().copied().chain([b'\n'])).collect() };
    signal(nix::sys::signal::Signal::SIGSTOP);
    // Every body sent, and the thread sending it (None for probes, sent inline).
    type Sent = Vec<(Option<std::thread::JoinHandle<Reply>>, Vec<Vec<u8>>)>;
    let mut sent: Sent = Vec::new();
    let mut overloaded = None;
    for r in 0..100 {
        let events: Vec<Vec<u8>> =
            (0..10).map(|i| format!("{{\"id\":\"o{r}-{i}\",\"pad\":\"{}\"}}", "y".repeat(3000)).into_bytes()).collect();
        let b = ndjson(&events);
        let addr = s.addr.clone();
        let h = std::thread::spawn(move || {
            http(&addr, "POST", "/ingest", &[("content-type", "application/x-ndjson")], &b).unwrap()
        });
        sent.push((Some(h), events));
        if r % 5 == 4 {
            // Let the accepted ones reach the ring before probing.
            std::thread::sleep(Duration::from_millis(50));
            // A probe as large as the others (a small one would still fit).
            let probe_events: Vec<Vec<u8>> = (0..3)
                .map(|i| format!("{{\"probe\":\"{r}-{i}\",\"pad\":\"{}\"}}", "z".repeat(10_000)).into_bytes())
                .collect();
            let probe = s.post(&ndjson(&probe_events), &[("content-type", "application/x-ndjson")]);
            sent.push((None, probe_events));
            if probe.status == 503 && probe.body.contains("overloaded") {
                overloaded = Some(probe);
                break;
            }
        }
    }
    let probe = overloaded.expect("the rings never filled");
    assert_eq!(probe.headers.get("retry-after").map(String::as_str), Some("1"));
    signal(nix::sys::signal::Signal::SIGCONT);
    // Each request got 200 or 503 with Retry-After. Retrying every body, as
    // Vector does, then gets each one acknowledged, and stored exactly once
    // (some of those answered 503 were committed once the hashers resumed).
    let mut acked = Vec::new();
    for (h, events) in sent {
        if let Some(h) = h {
            let r = h.join().unwrap();
            assert!(
                r.status == 200 || (r.status == 503 && r.headers.contains_key("retry-after")),
                "{}: {}",
                r.status,
                r.body
            );
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let answer = loop {
            let r = s.post(&ndjson(&events), &[("content-type", "application/x-ndjson")]);
            if r.status == 200 {
                break r;
            }
            assert_eq!(r.status, 503, "{}", r.body);
            assert!(Instant::now() < deadline, "not acknowledged after the stall: {}", r.body);
            std::thread::sleep(Duration::from_millis(50));
        };
        acked.push((json_u64(&answer.body, "first_leaf"), events));
    }
    s.stop();
    let stored = s.check_ledger();
    check_acked(&stored, &acked);
}

/// Sends a request's headers and the first `part` bytes of its body, and
/// leaves the rest for later: the server holds what it reserved meanwhile.
pub fn partial_post(addr: &str, body: &[u8], part: usize) -> TcpStream {
    let mut c = TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /ingest HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: application/x-ndjson\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).unwrap();
    c.write_all(&body[..part]).unwrap();
    c
}

pub fn finish_post(mut c: TcpStream, body: &[u8], part: usize) -> Reply {
    c.write_all(&body[part..]).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Reply { status, headers: HashMap::new(), body: text.split_once("\r\n\r\n").map_or("", |p| p.1).to_owned() }
}

fn metric(s: &Stack, name: &str) -> u64 {
    let m = s.get("/metrics");
    m.body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{}", m.body)) as u64
}

#[test]
fn ingest_memory_is_bounded_by_its_body_budget_and_connection_cap() {
    // The smallest budget allowed: one body of each kind, 128 KiB.
    let mut s = Stack::start(&[
        ("CHRONOS_INGEST_MAX_BODY_BYTES", "65536"),
        ("CHRONOS_INGEST_MAX_DECODED_BYTES", "65536"),
        ("CHRONOS_INGEST_MAX_EVENT_BYTES", "16384"),
        ("CHRONOS_INGEST_MAX_INFLIGHT_BYTES", "131072"),
        ("CHRONOS_INGEST_MAX_CONNECTIONS", "4"),
    ]);
    // Freed bodies go back to the system, not to glibc's arenas (which kept
    // 432-445 MiB private against a 256 MiB budget, BENCHMARKS.md).
    let environ = std::fs::read(format!("/proc/{}/environ", s.pid("ingest-0"))).unwrap();
    assert!(
        environ.split(|b| *b == 0).any(|kv| kv == b"MALLOC_MMAP_THRESHOLD_=1048576"),
        "ingest runs with a fixed mmap threshold"
    );
    let bodies: Vec<(Vec<u8>, Vec<Vec<u8>>)> = (0..3)
        .map(|b| {
            let events: Vec<Vec<u8>> = (0..5)
                .map(|i| format!("{{\"id\":\"b{b}-{i}\",\"pad\":\"{}\"}}", "p".repeat(11_900)).into_bytes())
                .collect();
            let body: Vec<u8> = events.iter().flat_map(|e| e.iter().copied().chain([b'\n'])).collect();
            assert!(body.len() > 50_000 && body.len() < 65_536);
            (body, events)
        })
        .collect();
    // Two bodies half sent: their declared sizes are reserved before they are read.
    let a = partial_post(&s.addr, &bodies[0].0, 1000);
    let b = partial_post(&s.addr, &bodies[1].0, 1000);
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&s, "chronos_ingest_inflight_bytes") < 2 * 59 * 1024 {
        assert!(Instant::now() < deadline, "the two bodies never reserved their room");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A third does not fit: refused with Retry-After, nothing of it kept.
    let c = s.post(&bodies[2].0, &[("content-type", "application/x-ndjson")]);
    assert_eq!(c.status, 503, "{}", c.body);
    assert!(c.body.contains("ingest.max_inflight_bytes"), "{}", c.body);
    assert_eq!(c.headers.get("retry-after").map(String::as_str), Some("1"));
    // The first two complete; then the third fits.
    let mut acked = Vec::new();
    for (conn, (body, events)) in [(a, &bodies[0]), (b, &bodies[1])] {
        let r = finish_post(conn, body, 1000);
        assert_eq!(r.status, 200, "{}", r.body);
        acked.push((json_u64(&r.body, "first_leaf"), events.clone()));
    }
    let c = s.post(&bodies[2].0, &[("content-type", "application/x-ndjson")]);
    assert_eq!(c.status, 200, "{}", c.body);
    acked.push((json_u64(&c.body, "first_leaf"), bodies[2].1.clone()));
    assert_eq!(metric(&s, "chronos_ingest_inflight_bytes"), 0);

    // Four idle connections take every slot: a fifth client connects (the
    // kernel's backlog) but is not served until one of them closes.
    let idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(&s.addr).unwrap()).collect();
    let mut fifth = TcpStream::connect(&s.addr).unwrap();
    fifth
        .write_all(format!("GET /healthz HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n", s.addr).as_bytes())
        .unwrap();
    fifth.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut buf = [0u8; 256];
    let early = fifth.read(&mut buf);
    assert!(
        early.is_err(),
        "served beyond the cap: {:?}",
        early.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    );
    drop(idle);
    fifth.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut raw = Vec::new();
    fifth.read_to_end(&mut raw).unwrap();
    assert!(String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&raw));

    s.stop();
    let stored = s.check_ledger();
    check_acked(&stored, &acked);
}
