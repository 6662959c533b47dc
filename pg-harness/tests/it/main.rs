//! The harness against the real PostgreSQL server binaries.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chronos_pg_harness::{PgCluster, TestDb};
use nix::sys::signal::kill;
use nix::unistd::Pid;

fn alive(pid: u32) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_ok()
}

/// Waits for `cond`, failing the test after a generous watchdog timeout
/// (never an assertion about speed).
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "watchdog: {what} did not happen within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn cluster_serves_queries_and_separate_databases() {
    let db = TestDb::new("first");
    assert!(db.cluster.psql("first", "SHOW server_version").unwrap().starts_with(|c: char| c.is_ascii_digit()));
    let second = db.cluster.create_database("second").unwrap();
    assert!(second.ends_with("/second"));
    db.cluster.psql("first", "CREATE TABLE t (x int); INSERT INTO t VALUES (42)").unwrap();
    assert_eq!(db.cluster.psql("first", "SELECT x FROM t").unwrap(), "42");
    // Databases are separate.
    assert!(db.cluster.psql("second", "SELECT x FROM t").is_err());
    // The server does not run as root, even when the tests do.
    let user = db.cluster.psql("first", "SELECT current_setting('data_directory')").unwrap();
    assert_eq!(PathBuf::from(user), db.cluster.data_dir());
    let pid = db.cluster.server_pid().unwrap();
    let uid = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .map(|l| l.split_whitespace().nth(1).unwrap().to_owned())
        .unwrap();
    assert_ne!(uid, "0", "postgres must not run as root");
}

#[test]
fn a_panicking_test_stops_and_removes_its_cluster() {
    let mut seen = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let c = PgCluster::start().unwrap();
        seen = Some((c.server_pid().unwrap(), c.data_dir()));
        panic!("the test fails while holding a cluster");
    }));
    assert!(result.is_err());
    let (pid, dir) = seen.unwrap();
    assert!(!alive(pid), "postmaster {pid} survived the panic");
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

#[test]
fn a_killed_test_process_takes_its_server_down() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pg-harness-hold")).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let mut parts = line.split_whitespace();
    let pid: u32 = parts.next().unwrap().parse().unwrap();
    let dir = PathBuf::from(parts.next().unwrap());
    assert!(alive(pid) && dir.exists());
    child.kill().unwrap(); // SIGKILL: no unwinding, no Drop.
    child.wait().unwrap();
    eventually("postmaster exit after its parent was killed", || !alive(pid));
    // The next harness start sweeps the directory of the dead process.
    let _c = PgCluster::start().unwrap();
    assert!(!dir.exists(), "{} was not swept", dir.display());
}

#[test]
fn missing_postgresql_fails_with_the_package_to_install() {
    let out = Command::new(env!("CARGO_BIN_EXE_pg-harness-hold"))
        .env("CHRONOS_PG_BINDIR", "/nonexistent/postgresql/bin")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("apt-get install postgresql-15"), "{err}");
}
