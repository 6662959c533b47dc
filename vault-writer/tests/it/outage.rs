//! A connection lost in the middle of a commit is an outage, retried on a
//! new connection, never a refusal: the error is classified by SQLSTATE
//! (`VaultError::is_transient`).

use chronos_faults::Faults;
use chronos_ledger::ChainHead;

use crate::{Batch, Rig, Writer, hasher, wait_for};

#[test]
fn a_connection_killed_in_the_middle_of_a_commit_is_retried_and_the_batch_stored_once() {
    let mut rig = Rig::new("vw_outage");
    let w = Writer::start(rig.settings(0, Faults::none()));
    wait_for("the vault writer connected", || (w.metrics.db_up.get() == 1).then_some(()));

    // Hold the writer lease's row: the writer's commit, which share-locks it
    // to check its epoch, then waits inside its transaction.
    let holder = rig.sql.connect();
    rig.sql.rt.block_on(holder.batch_execute("BEGIN; SELECT * FROM writer_lease FOR UPDATE")).unwrap();
    let genesis = ChainHead::genesis(&hasher(), crate::ORIGIN);
    let first = Batch::after(&genesis, &[r#"{"n":1}"#, r#"{"n":2}"#], 1_000);
    rig.push_sequenced(&first, 1);
    let waiting = "SELECT coalesce(max(pid), 0)::bigint FROM pg_stat_activity \
                   WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%writer_lease%'";
    let pid = wait_for("the commit waits for the lease's row", || {
        let pid = rig.sql.i64(waiting);
        (pid != 0).then_some(pid)
    });
    // The writer's backend goes away mid-transaction (an administrator, an
    // out-of-memory kill, a failover).
    let killed = rig.sql.i64(&format!("SELECT pg_terminate_backend({pid}, 10000)::int::bigint"));
    assert_eq!(killed, 1);
    wait_for("the failed commit is counted", || (w.metrics.commit_failures.get() == 1).then_some(()));
    rig.sql.rt.block_on(holder.batch_execute("ROLLBACK")).unwrap();

    assert_eq!(rig.next_answer(), first.ack(1), "committed on a new connection, then answered");
    w.stop().unwrap();
    assert_eq!(rig.sql.chains(), vec![first.chain]);
    assert_eq!(rig.sql.audit("vault_writer_refused"), Vec::<serde_json::Value>::new());
}
