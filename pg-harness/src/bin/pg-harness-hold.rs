//! Test helper: starts a private cluster, prints `<postmaster pid> <data dir>`
//! and waits to be killed. The harness's own tests use it to check that a
//! test process dying without unwinding still takes its server down, and
//! that a missing PostgreSQL installation is reported with the package name.
#![allow(clippy::print_stdout)]

use std::io::Write as _;

fn main() {
    match chronos_pg_harness::PgCluster::start() {
        Ok(cluster) => {
            let pid = cluster.server_pid().map_or(0, |p| p);
            println!("{pid} {}", cluster.data_dir().display());
            let _ = std::io::stdout().flush();
            std::thread::sleep(std::time::Duration::from_secs(600));
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    }
}
