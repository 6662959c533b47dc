//! `chronos up` as a user and an operator meet it (issue 13): one instance
//! per data directory, one log per address, reading commands that never
//! touch a database `up` started, an ordered stop on a terminal's Ctrl-C,
//! and setup errors that stop `up` at once with the reason.

use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::pipeline::{Stack, Up, body, finish_post, free_port, http, partial_post, up_command, wait_for};

const NDJSON: (&str, &str) = ("content-type", "application/x-ndjson");

fn exit_of(c: &mut std::process::Child, log: impl Fn() -> String) -> std::process::ExitStatus {
    wait_for(Duration::from_secs(120), "exit", log, || c.try_wait().unwrap())
}

#[test]
fn a_second_up_on_the_same_data_directory_is_refused_naming_the_first() {
    let s = Stack::start(&[]);
    let log2 = s.dir.path().join("up2.log");
    let read2 = || std::fs::read_to_string(&log2).unwrap_or_default();
    let other_addr = format!("127.0.0.1:{}", free_port());
    let mut second = Up(up_command(&s.data(), &s.url, &other_addr, &log2, &[]).spawn().unwrap());
    let status = exit_of(&mut second, read2);
    assert_eq!(status.code(), Some(2), "{}", read2());
    let first = s.up.as_ref().unwrap().id();
    assert!(read2().contains(&format!("pid {first} (chronos up, ingest at {})", s.addr)), "{}", read2());
    assert!(read2().contains("one `chronos up` per data directory"), "{}", read2());
    // The first one never noticed.
    let (b, _) = body("still", 3, true);
    assert_eq!(s.post(&b, &[NDJSON]).status, 200);
}

#[test]
fn two_logs_cannot_share_an_ingest_address() {
    let s = Stack::start(&[]);
    let dir = tempfile::Builder::new().prefix("chronos-other-").tempdir_in("/tmp").unwrap();
    let data = dir.path().join("data");
    let out = super::chronos(&["init", "--data-dir", data.to_str().unwrap(), "--origin", "test.example/other"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let url = s.pg.create_database("other").unwrap();
    let log = dir.path().join("up.log");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut other = Up(up_command(&data, &url, &s.addr, &log, &[]).spawn().unwrap());
    let status = exit_of(&mut other, read);
    assert_eq!(status.code(), Some(2), "{}", read());
    assert!(read().contains("another program or another Chronos log listens on"), "{}", read());
    // Every request to the address still reaches the first log.
    for r in 0..20 {
        let (b, _) = body(&format!("first{r}"), 2, true);
        assert_eq!(s.post(&b, &[NDJSON]).status, 200);
    }
    assert!(!read().contains("Chronos is up"), "{}", read());
}

#[test]
fn ctrl_c_from_a_terminal_stops_everything_in_order_with_a_final_checkpoint() {
    let mut s = Stack::start(&[("CHRONOS_PIPELINE_CHECKPOINT_INTERVAL_MS", "3600000")]);
    for r in 0..5 {
        let (b, _) = body(&format!("last{r}"), 4, true);
        assert_eq!(s.post(&b, &[NDJSON]).status, 200);
    }
    // A request still arriving holds the stop at ingest (it is finished,
    // not cut off), long enough for an impatient user's second Ctrl-C.
    let (last, _) = body("in-flight", 4, true);
    let half = partial_post(&s.addr, &last, 10);
    // A terminal sends SIGINT to the whole foreground process group.
    let mut up = s.up.take().unwrap();
    let group = Pid::from_raw(up.id() as i32);
    killpg(group, Signal::SIGINT).unwrap();
    wait_for(
        Duration::from_secs(30),
        "first Ctrl-C seen",
        || s.log(),
        || s.log().contains("chronos: stopping in order").then_some(()),
    );
    killpg(group, Signal::SIGINT).unwrap();
    wait_for(
        Duration::from_secs(30),
        "second Ctrl-C answered",
        || s.log(),
        || s.log().contains("already stopping in order; press Ctrl-C once more").then_some(()),
    );
    let reply = finish_post(half, &last, 10);
    assert_eq!(reply.status, 200, "the request in flight is answered: {}", reply.body);
    let status = exit_of(&mut up, || s.log());
    assert!(status.success(), "{status}: {}", s.log());
    let log = s.log();
    assert!(!log.contains('\x1b'), "no colour codes in a log file: {log}");
    // The terminal's SIGINT reached the supervisor alone; each service was
    // stopped by the supervisor's SIGTERM, in pipeline order.
    assert!(!log.contains("stop requested signal=\"SIGINT\""), "a service got the terminal's Ctrl-C: {log}");
    assert_eq!(log.matches("stop requested signal=\"SIGTERM\"").count(), 6, "{log}");
    let at = |name: &str| {
        log.find(&format!("stopped process=\"{name}\""))
            .or_else(|| log.find(&format!("process=\"{name}\" status=exit status: 0")))
            .unwrap_or_else(|| panic!("{name} not stopped cleanly: {log}"))
    };
    assert!(at("bridge") < at("ingest-0"), "the bridge stops first: {log}");
    assert!(at("ingest-0") < at("hasher-0") && at("hasher-1") < at("orchestrator"), "{log}");
    assert!(at("orchestrator") < at("vault-writer"), "{log}");
    // The final checkpoint covers everything acknowledged (the interval is
    // an hour: only the stop signed it).
    let stored = s.check_ledger();
    assert_eq!(stored.len(), 24);
}

#[test]
fn up_names_its_real_address_once_it_serves_and_a_setup_error_stops_it_with_status_2() {
    let s = Stack::start(&[]);
    let dir = tempfile::Builder::new().prefix("chronos-port0-").tempdir_in("/tmp").unwrap();
    let data = dir.path().join("data");
    let out = super::chronos(&["init", "--data-dir", data.to_str().unwrap(), "--origin", "test.example/port0"], &[]);
    assert!(out.status.success());
    let url = s.pg.create_database("port0").unwrap();
    let log = dir.path().join("up.log");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    // Port 0: the banner gives the port the kernel chose, after the start.
    let mut up = Up(up_command(&data, &url, "127.0.0.1:0", &log, &[]).spawn().unwrap());
    let addr = wait_for(Duration::from_secs(60), "banner", read, || {
        let text = read();
        let line = text.lines().find(|l| l.starts_with("Chronos is up ("))?;
        Some(line.split("http://").nth(1)?.trim_end_matches("/ingest").to_owned())
    });
    assert!(!addr.ends_with(":0"), "{addr}");
    let (b, _) = body("port0", 2, true);
    assert_eq!(http(&addr, "POST", "/ingest", &[NDJSON], &b).unwrap().status, 200, "{}", read());
    nix::sys::signal::kill(Pid::from_raw(up.id() as i32), Signal::SIGTERM).unwrap();
    assert!(exit_of(&mut up, read).success());

    // A service whose configuration cannot work: `up` stops with the reason
    // instead of restarting it every few seconds behind a banner.
    let log2 = dir.path().join("up2.log");
    let read2 = || std::fs::read_to_string(&log2).unwrap_or_default();
    let addr2 = format!("127.0.0.1:{}", free_port());
    let mut up = Up(up_command(&data, &url, &addr2, &log2, &[("CHRONOS_INGEST_TOKEN_FILE", "/nonexistent/tokens")])
        .spawn()
        .unwrap());
    let status = exit_of(&mut up, read2);
    assert_eq!(status.code(), Some(2), "{}", read2());
    assert!(read2().contains("ingest-0 cannot start") && read2().contains("/nonexistent/tokens"), "{}", read2());
    assert!(!read2().contains("Chronos is up"), "{}", read2());
    assert_eq!(read2().matches("exited; restarting").count(), 0, "{}", read2());
}

/// A database that does not answer yet (a container started beside
/// Chronos, a server restarting): `up` says that it waits, for whom, and
/// starts once the server answers. Before, it stopped at once with
/// "cannot connect", and Compose's restart policy had to try again.
#[test]
fn up_waits_for_a_database_that_is_not_up_yet_and_starts_when_it_answers() {
    let mut pg = chronos_pg_harness::PgCluster::start().unwrap();
    let url = pg.create_database("late").unwrap();
    pg.crash().unwrap();
    let dir = tempfile::Builder::new().prefix("chronos-late-").tempdir_in("/tmp").unwrap();
    let data = dir.path().join("data");
    let out = super::chronos(&["init", "--data-dir", data.to_str().unwrap(), "--origin", "test.example/late"], &[]);
    assert!(out.status.success());
    let waiting = |text: &str| {
        text.contains("waiting for PostgreSQL at postgres://")
            && text.contains(&format!("127.0.0.1:{}/late (", pg.port()))
    };
    let addr = format!("127.0.0.1:{}", free_port());

    // SIGTERM (or Ctrl-C) ends the wait at once.
    let log0 = dir.path().join("up0.log");
    let read0 = || std::fs::read_to_string(&log0).unwrap_or_default();
    let mut up = Up(up_command(&data, &url, &addr, &log0, &[]).spawn().unwrap());
    wait_for(Duration::from_secs(60), "the waiting message", read0, || waiting(&read0()).then_some(()));
    nix::sys::signal::kill(Pid::from_raw(up.id() as i32), Signal::SIGTERM).unwrap();
    let status = wait_for(Duration::from_secs(20), "the stop", read0, || up.try_wait().unwrap());
    assert!(!status.success() && read0().contains("stopped while waiting"), "{}", read0());

    let log = dir.path().join("up.log");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut up = Up(up_command(&data, &url, &addr, &log, &[]).spawn().unwrap());
    wait_for(Duration::from_secs(60), "the waiting message", read, || waiting(&read()).then_some(()));
    assert!(up.try_wait().unwrap().is_none(), "{}", read());
    assert!(!read().contains("Chronos is up"), "{}", read());
    pg.restart().unwrap();
    wait_for(Duration::from_secs(120), "ready", read, || {
        (http(&addr, "GET", "/readyz", &[], b"").ok()?.status == 200).then_some(())
    });
    let (b, _) = body("late", 2, true);
    assert_eq!(http(&addr, "POST", "/ingest", &[NDJSON], &b).unwrap().status, 200, "{}", read());
    nix::sys::signal::kill(Pid::from_raw(up.id() as i32), Signal::SIGTERM).unwrap();
    assert!(exit_of(&mut up, read).success(), "{}", read());
}

#[test]
fn a_keyed_log_without_its_key_is_refused_before_anything_starts() {
    let dir = tempfile::Builder::new().prefix("chronos-keyed-").tempdir_in("/tmp").unwrap();
    let data = dir.path().join("data");
    let key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let out = super::chronos(
        &["init", "--data-dir", data.to_str().unwrap(), "--origin", "test.example/keyed", "--hash", "hmac-sha256"],
        &[("CHRONOS_HMAC_KEY", key)],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(env!("CARGO_BIN_EXE_chronos"))
        .args(["up", "--data-dir", data.to_str().unwrap(), "--database-url", "postgres://nobody@127.0.0.1:1/none"])
        .env_remove("CHRONOS_HMAC_KEY")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CHRONOS_HMAC_KEY"), "{err}");
}

#[test]
fn a_reading_command_never_stops_the_database_up_started() {
    let dir = tempfile::Builder::new().prefix("chronos-reader-").tempdir_in("/tmp").unwrap();
    let data = dir.path().join("data");
    let out = super::chronos(&["init", "--data-dir", data.to_str().unwrap(), "--origin", "test.example/reader"], &[]);
    assert!(out.status.success());
    let addr = format!("127.0.0.1:{}", free_port());
    let log = dir.path().join("up.log");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut up = Command::new(env!("CARGO_BIN_EXE_chronos"));
    up.args(["up", "--data-dir", data.to_str().unwrap(), "--listen", &addr, "--hashers", "1"])
        .env("CHRONOS_METRICS_LISTEN", "127.0.0.1:0")
        .env_remove("CHRONOS_DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::OpenOptions::new().append(true).open(&log).unwrap());
    let mut up = Up(up.spawn().unwrap());
    wait_for(Duration::from_secs(90), "ready", read, || {
        (http(&addr, "GET", "/readyz", &[], b"").ok()?.status == 200).then_some(())
    });
    let (b, _) = body("reader", 3, true);
    assert_eq!(http(&addr, "POST", "/ingest", &[NDJSON], &b).unwrap().status, 200);
    let postmaster =
        || std::fs::read_to_string(data.join("pg/postmaster.pid")).unwrap().lines().next().unwrap().to_owned();
    let pg_pid = postmaster();
    // The database refuses the reader's connection (as when every
    // connection is taken): the reader reports it and touches nothing.
    let cfg = std::fs::read_to_string(data.join("chronos.toml")).unwrap();
    let port = cfg.lines().find_map(|l| l.strip_prefix("embedded_port = ")).unwrap().trim().to_owned();
    let password = std::fs::read_to_string(data.join("pg.password")).unwrap();
    let admin = format!("postgres://chronos:{}@127.0.0.1:{port}/postgres", password.trim());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (client, conn) = rt.block_on(tokio_postgres::connect(&admin, tokio_postgres::NoTls)).unwrap();
    rt.spawn(conn);
    rt.block_on(client.batch_execute("ALTER DATABASE chronos ALLOW_CONNECTIONS false")).unwrap();
    let out = super::chronos(&["verify", "--data-dir", data.to_str().unwrap()], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("chronos up, ingest at") && err.contains("refused this command's connection"), "{err}");
    assert_eq!(postmaster(), pg_pid, "the running PostgreSQL was not replaced");
    assert!(std::path::Path::new(&format!("/proc/{pg_pid}")).exists(), "the running PostgreSQL was stopped");
    rt.block_on(client.batch_execute("ALTER DATABASE chronos ALLOW_CONNECTIONS true")).unwrap();
    let out = super::chronos(&["verify", "--data-dir", data.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(postmaster(), pg_pid);
    assert_eq!(http(&addr, "POST", "/ingest", &[NDJSON], b"{\"after\":1}\n").unwrap().status, 200);
    drop(client);
    nix::sys::signal::kill(Pid::from_raw(up.id() as i32), Signal::SIGTERM).unwrap();
    assert!(exit_of(&mut up, read).success());
    // Without `up`, the reader starts the cluster for itself and stops it.
    let out = super::chronos(&["verify", "--data-dir", data.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!data.join("pg/postmaster.pid").exists());
}

#[test]
fn rings_that_dev_shm_cannot_hold_are_refused_at_start_with_the_size_and_the_settings() {
    // 1 GiB bodies and 16 hashers: about 200 GiB of rings once full, more
    // than any /dev/shm of this machine's kind (half or all of 24 GiB).
    let dir = tempfile::Builder::new().prefix("chronos-shm-").tempdir_in("/tmp").unwrap();
    let data = dir.path().join("data");
    let out = super::chronos(&["init", "--data-dir", data.to_str().unwrap(), "--origin", "test.example/shm"], &[]);
    assert!(out.status.success());
    let out = Command::new(env!("CARGO_BIN_EXE_chronos"))
        .args(["up", "--data-dir", data.to_str().unwrap(), "--database-url", "postgres://nobody@127.0.0.1:1/none"])
        .args(["--hashers", "16", "--listen", "127.0.0.1:0"])
        .env("CHRONOS_INGEST_MAX_DECODED_BYTES", "1073741824")
        .env("CHRONOS_INGEST_MAX_INFLIGHT_BYTES", "2147483648")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("/dev/shm has") && err.contains("MiB once full"), "{err}");
    assert!(err.contains("shm_size") && err.contains("pipeline.hashers"), "{err}");
    // Nothing was created.
    let instance = chronos_wire::instance_id(&data);
    let left =
        std::fs::read_dir("/dev/shm").unwrap().flatten().any(|e| e.file_name().to_string_lossy().contains(&instance));
    assert!(!left, "rings were created");
}

/// An unclean stop, then fewer hashers: what was queued for the removed
/// hasher is committed first, by the topology that queued it, before the
/// new one starts; a client that sends such a body again gets the same
/// answer. Before, those records stayed in rings nobody read, and a later
/// run with more hashers stored them a second time.
#[test]
fn records_queued_for_removed_hashers_are_committed_once_before_the_topology_changes() {
    let mut s = Stack::start(&[]);
    let data = s.data();
    let stranded_ring = chronos_wire::RingNames::new(&chronos_wire::instance_id(&data)).ingest(0, 1);
    // Hasher 1 stops reading: what ingest hands it stays in its ring.
    nix::sys::signal::kill(Pid::from_raw(s.pid("hasher-1")), Signal::SIGSTOP).unwrap();
    let bodies: Vec<(Vec<u8>, Vec<Vec<u8>>)> = (0..12).map(|i| body(&format!("q{i}"), 3 + i, true)).collect();
    let answers: Vec<u16> = std::thread::scope(|scope| {
        let sent: Vec<_> = bodies
            .iter()
            .map(|(b, _)| {
                let addr = s.addr.clone();
                scope.spawn(move || http(&addr, "POST", "/ingest", &[NDJSON], b).map_or(0, |r| r.status))
            })
            .collect();
        // Those handed to hasher 1 are answered 503 after the ack timeout.
        sent.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let queued: Vec<usize> = (0..bodies.len()).filter(|&i| answers[i] != 200).collect();
    assert!(!queued.is_empty() && queued.len() < bodies.len(), "answers: {answers:?}");
    assert!(chronos_ipc::ring::holds_records(&stranded_ring).unwrap(), "the stopped hasher's ring holds the bodies");
    crash(&mut s, &stranded_ring);
    // One hasher from now on.
    s.launch(&[("CHRONOS_PIPELINE_HASHERS", "1")]);
    assert!(s.log().contains("committing them first"), "{}", s.log());
    assert!(
        !std::path::Path::new(&chronos_ipc::ring::segment_path(&stranded_ring)).exists(),
        "the drained ring of the removed hasher is gone"
    );
    // Committed before any client sent anything again.
    let stored = s.events();
    for &i in &queued {
        for e in &bodies[i].1 {
            let n = stored.iter().filter(|x| *x == e).count();
            assert_eq!(n, 1, "body {i} is stored once before any retry; answers {answers:?}; log:\n{}", s.log());
        }
    }
    // Every body sent again (as a client does after a 503): the same answer.
    let mut acked = Vec::new();
    for (b, events) in &bodies {
        let r = s.post(b, &[NDJSON]);
        assert_eq!(r.status, 200, "{}", r.body);
        acked.push((super::pipeline::json_u64(&r.body, "first_leaf"), events.clone()));
    }
    s.stop();
    let stored = s.check_ledger();
    super::pipeline::check_acked(&stored, &acked);
}

/// Other body limits after an unclean stop: the rings left behind have
/// other sizes. They are replaced (here empty: removed), and `up` starts;
/// before, every service crash-looped on "ring … is not compatible".
#[test]
fn other_body_limits_after_an_unclean_stop_start_with_rings_of_the_new_size() {
    let mut s = Stack::start(&[]);
    let r = s.post(b"{\"before\":1}\n", &[NDJSON]);
    assert_eq!(r.status, 200, "{}", r.body);
    let seq = chronos_wire::RingNames::new(&chronos_wire::instance_id(&s.data())).sequenced();
    crash(&mut s, &seq);
    let old = chronos_ipc::ring::geometry(&seq).unwrap();
    s.launch(&[("CHRONOS_INGEST_MAX_DECODED_BYTES", "1048576")]);
    assert_ne!(chronos_ipc::ring::geometry(&seq).unwrap(), old, "the ring has the new limits' size");
    let r = s.post(b"{\"after\":1}\n", &[NDJSON]);
    assert_eq!(r.status, 200, "{}", r.body);
    s.stop();
    assert_eq!(s.check_ledger().len(), 2);
}

/// An unclean stop of everything: SIGKILL to the supervisor, then to each
/// service (two hashers); returns once nobody holds a role on `ring`.
fn crash(s: &mut Stack, ring: &str) {
    let mut up = s.up.take().unwrap();
    up.kill().unwrap();
    up.wait().unwrap();
    for name in ["ingest-0", "hasher-0", "hasher-1", "orchestrator", "vault-writer"] {
        let _ = nix::sys::signal::kill(Pid::from_raw(s.pid(name)), Signal::SIGKILL);
    }
    wait_for(
        Duration::from_secs(30),
        "the killed services to be gone",
        || s.log(),
        || {
            // Every ring the killed services held, not only the one the
            // test is about: the kernel releases a dead process's locks as
            // it tears it down, which can take a moment after the signal.
            let names = chronos_wire::RingNames::new(&chronos_wire::instance_id(&s.data()));
            let rings = [ring.to_owned(), names.sequenced(), names.hashed(0), names.hashed(1)];
            rings
                .iter()
                .all(|r| chronos_ipc::ring::inspect(r).is_ok_and(|h| !h.producer_alive && !h.consumer_alive))
                .then_some(())
        },
    );
}
